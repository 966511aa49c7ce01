//! `tunctl demo`, in three stages, each in namespaces of its own:
//!
//! 1. Two namespaces, one tun device in each, and this process forwarding packets between
//!    the two devices (10.77.0.1 ⇄ 10.77.0.2).
//! 2. Unless `--no-tunnel`: two more namespaces joined by a veth (the underlay, 10.78.0.1 ⇄
//!    10.78.0.2) and a vpwn tunnel between them, WireGuard-encrypted (10.79.0.1 ⇄ 10.79.0.2).
//! 3. Unless `--no-bridge`: three more namespaces, one tap in each, all of them ports of a
//!    br learning bridge in this process (10.80.0.1, .2, .3 on one Ethernet segment).
//!
//! In each stage pings and a TCP stream cross from namespace A to B (and in the bridge stage
//! between every pair) and a report follows; everything is removed at the end of each stage,
//! on failure and on Ctrl-C too. Traffic stays inside the namespaces the demo creates; the
//! root namespace's interfaces are not touched.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tunctl::{Address, Cidr, Device, Error, ErrorKind, Link, LinkConfig, Namespace, Netlink};
use tunctl_br::{Bridge, PortSpec};
use tunctl_vpwn::{Config, Options, Peer, PublicKey, SecretKey, Tunnel};

const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const TCP_PORT: u16 = 5201;

/// The tunnel stage's underlay (on the veth) and tunnel addresses.
const UNDER_A: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
const UNDER_B: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
const TUN_A: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 1);
const TUN_B: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 2);
/// The veth's ends; each lives in its own (new) namespace only.
const VETH_A: &str = "veth-a";
const VETH_B: &str = "veth-b";

/// The bridge stage's ports (one tap per namespace) and their addresses, one /24.
const BR_PORTS: [(&str, &str, Ipv4Addr); 3] = [
    ("a", "tap-a", Ipv4Addr::new(10, 80, 0, 1)),
    ("b", "tap-b", Ipv4Addr::new(10, 80, 0, 2)),
    ("c", "tap-c", Ipv4Addr::new(10, 80, 0, 3)),
];

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Options of `tunctl demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Length of the TCP stream, in seconds (0.5 to 60).
    #[arg(long, default_value_t = 3.0, value_parser = parse_seconds)]
    seconds: f64,
    /// Number of pings (1 to 100).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pings: u32,
    /// Skip the second stage: a WireGuard tunnel (vpwn) between two more namespaces over a
    /// veth, with the same pings and TCP stream through it.
    #[arg(long)]
    no_tunnel: bool,
    /// Skip the third stage: a br learning bridge in this process with one tap port in
    /// each of three more namespaces, pings between every pair and a TCP stream through it.
    #[arg(long)]
    no_bridge: bool,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.5..=60.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: a number of seconds from 0.5 to 60")),
    }
}

fn io_err(op: &str, err: std::io::Error) -> Error {
    Error::from_kind(ErrorKind::Os, op, err.to_string())
}

fn check_interrupted() -> Result<(), Error> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        Err(Error::from_kind(
            ErrorKind::Os,
            "demo",
            "interrupted; cleaning up",
        ))
    } else {
        Ok(())
    }
}

/// A namespace the demo created; deleted on drop, whatever happened.
struct NsGuard(Namespace, String);

impl NsGuard {
    fn create(name: String) -> Result<NsGuard, Error> {
        let ns = Namespace::create(&name).map_err(|e| {
            if e.kind() == ErrorKind::PermissionDenied {
                e.with_subject(format!(
                    "{name} (tunctl demo needs root, or CAP_NET_ADMIN and CAP_SYS_ADMIN)"
                ))
            } else {
                e
            }
        })?;
        // NsGuard deletes it, reporting a failure.
        Ok(NsGuard(ns.keep(), name))
    }
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        if let Err(e) = Namespace::delete(&self.1) {
            eprintln!("tunctl: demo cleanup: {e}");
        }
    }
}

#[derive(Default)]
struct Counters {
    packets: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

/// Moves packets from one device to the other until a device is destroyed: a blocking
/// `recv` (one `readv` per packet) that `destroy` wakes with `ErrorKind::Closed`.
fn forward(from: &Device, to: &Device, counters: &Counters) {
    let mut buf = vec![0u8; 65536];
    loop {
        match from.recv(&mut buf) {
            Ok(n) => match to.send(&buf[..n]) {
                Ok(_) => {
                    counters.packets.fetch_add(1, Ordering::Relaxed);
                    counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::Closed => return,
                Err(_) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            },
            Err(e) if e.kind() == ErrorKind::Truncated => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => return,
        }
    }
}

/// Sends `count` ICMP echo requests from inside `ns` to `dst` over a raw socket and returns
/// the round-trip time of each reply (`None` for a lost one).
fn ping(ns: &Namespace, dst: Ipv4Addr, count: u32) -> Result<Vec<Option<Duration>>, Error> {
    let sock = ns
        .run(|| Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)))?
        .map_err(|e| io_err("raw ICMP socket", e))?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| io_err("set timeout", e))?;
    let ident = (std::process::id() & 0xffff) as u16;
    let target = SockAddr::from(SocketAddrV4::new(dst, 0));
    let mut rtts = Vec::new();
    let mut reply = [0u8; 1500];
    for seq in 1..=count as u16 {
        check_interrupted()?;
        let mut pkt = vec![8u8, 0, 0, 0];
        pkt.extend_from_slice(&ident.to_be_bytes());
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend(std::iter::repeat_n(0xa5, 56));
        let sum = tunctl::offload::internet_checksum(&pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
        let sent = Instant::now();
        sock.send_to(&pkt, &target)
            .map_err(|e| io_err("send ICMP echo", e))?;
        let mut rtt = None;
        // One second per ping at most, in 100 ms reads.
        while rtt.is_none() && sent.elapsed() < Duration::from_secs(1) {
            let n = match (&sock).read(&mut reply) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(io_err("receive ICMP", e)),
            };
            let Some(ihl) = reply.first().map(|b| usize::from(b & 0x0f) * 4) else {
                continue;
            };
            let Some(icmp) = reply.get(ihl..n) else {
                continue;
            };
            if icmp.len() >= 8
                && icmp[0] == 0
                && icmp[4..6] == ident.to_be_bytes()
                && icmp[6..8] == seq.to_be_bytes()
            {
                rtt = Some(sent.elapsed());
            }
        }
        rtts.push(rtt);
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(rtts)
}

/// A TCP stream from `ns_a` to `dst` in `ns_b` for `seconds`; returns the bytes the server
/// received and the time from the first write to the server seeing the end.
fn tcp_stream(
    ns_a: &Namespace,
    ns_b: &Namespace,
    dst: Ipv4Addr,
    seconds: f64,
) -> Result<(u64, Duration), Error> {
    let listener = ns_b
        .run(|| TcpListener::bind((dst, TCP_PORT)))?
        .map_err(|e| io_err("TCP listen", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| io_err("TCP listen", e))?;
    let limit = Duration::from_secs_f64(seconds);
    std::thread::scope(|scope| {
        let server = scope.spawn(|| -> Result<u64, Error> {
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut conn = loop {
                match listener.accept() {
                    Ok((conn, _)) => break conn,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(io_err("TCP accept", e)),
                }
            };
            conn.set_nonblocking(false).map_err(|e| io_err("TCP", e))?;
            conn.set_read_timeout(Some(Duration::from_secs(2)))
                .map_err(|e| io_err("TCP", e))?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            let end = Instant::now() + limit + Duration::from_secs(5);
            while Instant::now() < end {
                match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io_err("TCP receive", e)),
                }
            }
            Ok(total)
        });
        let addr = SocketAddr::V4(SocketAddrV4::new(dst, TCP_PORT));
        let client = ns_a
            .run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(2)))?
            .map_err(|e| io_err("TCP connect", e));
        let started = Instant::now();
        let sent = client.and_then(|mut stream| {
            stream
                .set_write_timeout(Some(Duration::from_secs(1)))
                .map_err(|e| io_err("TCP", e))?;
            let chunk = vec![0x5au8; 128 * 1024];
            while started.elapsed() < limit {
                check_interrupted()?;
                stream
                    .write_all(&chunk)
                    .map_err(|e| io_err("TCP send", e))?;
            }
            stream
                .shutdown(std::net::Shutdown::Write)
                .map_err(|e| io_err("TCP shutdown", e))
        });
        let received = server.join().unwrap_or_else(|_| {
            Err(Error::from_kind(
                ErrorKind::Os,
                "TCP server",
                "thread panicked",
            ))
        });
        sent?;
        Ok((received?, started.elapsed()))
    })
}

fn add_p2p(dev: &Device, local: Ipv4Addr, peer: Ipv4Addr) -> Result<(), Error> {
    dev.link()?
        .add(&Address::point_to_point(local.into(), peer.into()))?;
    dev.up()
}

/// Prints the ping line of a report; returns whether any reply came.
fn report_ping(from: Ipv4Addr, to: Ipv4Addr, rtts: &[Option<Duration>]) -> bool {
    let replies: Vec<Duration> = rtts.iter().flatten().copied().collect();
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    if replies.is_empty() {
        println!("  ping: 0/{} replies", rtts.len());
        return false;
    }
    let min = replies.iter().map(ms).fold(f64::MAX, f64::min);
    let max = replies.iter().map(ms).fold(0.0, f64::max);
    let avg = replies.iter().map(ms).sum::<f64>() / replies.len() as f64;
    println!(
        "  ping {from} -> {to}: {}/{} replies, rtt min/avg/max {min:.3}/{avg:.3}/{max:.3} ms",
        replies.len(),
        rtts.len()
    );
    true
}

/// Runs the demo and prints its report: the forwarder stage, then (unless `--no-tunnel`)
/// the tunnel stage, then (unless `--no-bridge`) the bridge stage. Fails unless pings and
/// TCP data really crossed in every stage run.
pub fn run(args: DemoArgs) -> Result<(), Error> {
    // SIGINT, SIGTERM and SIGHUP all end the demo through its cleanup. A second handler
    // cannot be set in the same process; the first one is as good.
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::Relaxed));
    forwarder_stage(&args)?;
    if !args.no_tunnel {
        check_interrupted()?;
        tunnel_stage(&args)?;
    }
    if !args.no_bridge {
        check_interrupted()?;
        bridge_stage(&args)?;
    }
    Ok(())
}

/// Stage 1: two tun devices, this process forwarding between them.
fn forwarder_stage(args: &DemoArgs) -> Result<(), Error> {
    let pid = std::process::id();
    // Guards are declared first so they drop last: devices go, then namespaces.
    let guard_a = NsGuard::create(format!("tunctl-demo-{pid}-a"))?;
    let guard_b = NsGuard::create(format!("tunctl-demo-{pid}-b"))?;
    let (ns_a, ns_b) = (&guard_a.0, &guard_b.0);
    let dev_a = Device::builder()
        .tun()
        .name("demo%d")
        .namespace(ns_a.clone())
        .create()?;
    let dev_b = Device::builder()
        .tun()
        .name("demo%d")
        .namespace(ns_b.clone())
        .create()?;
    add_p2p(&dev_a, ADDR_A, ADDR_B)?;
    add_p2p(&dev_b, ADDR_B, ADDR_A)?;
    Link::by_name(ns_a, "lo")?.up()?;
    Link::by_name(ns_b, "lo")?.up()?;
    println!(
        "tunctl demo: {} {} ({ADDR_A}) <-> this process <-> {} {} ({ADDR_B})",
        guard_a.1,
        dev_a.name(),
        guard_b.1,
        dev_b.name()
    );

    let (a_to_b, b_to_a) = (Counters::default(), Counters::default());
    let traffic = std::thread::scope(|scope| {
        scope.spawn(|| forward(&dev_a, &dev_b, &a_to_b));
        scope.spawn(|| forward(&dev_b, &dev_a, &b_to_a));
        // Destroying the devices ends the forwarders, however this closure ends (a panic
        // included), so the scope always finishes.
        struct DestroyOnDrop<'a>(&'a Device, &'a Device);
        impl Drop for DestroyOnDrop<'_> {
            fn drop(&mut self) {
                let _ = self.0.destroy();
                let _ = self.1.destroy();
            }
        }
        let _destroy = DestroyOnDrop(&dev_a, &dev_b);
        ping(ns_a, ADDR_B, args.pings)
            .and_then(|rtts| tcp_stream(ns_a, ns_b, ADDR_B, args.seconds).map(|tcp| (rtts, tcp)))
    });
    let (rtts, (tcp_bytes, tcp_time)) = traffic?;

    let replied = report_ping(ADDR_A, ADDR_B, &rtts);
    let secs = tcp_time.as_secs_f64();
    println!(
        "  tcp {ADDR_A} -> {ADDR_B}:{TCP_PORT}: {:.1} MB in {secs:.2} s = {:.2} Gbit/s",
        tcp_bytes as f64 / 1e6,
        tcp_bytes as f64 * 8.0 / secs / 1e9
    );
    for (dir, c) in [("A->B", &a_to_b), ("B->A", &b_to_a)] {
        println!(
            "  forwarder {dir}: {} packets, {:.1} MB, {} errors",
            c.packets.load(Ordering::Relaxed),
            c.bytes.load(Ordering::Relaxed) as f64 / 1e6,
            c.errors.load(Ordering::Relaxed)
        );
    }
    drop((guard_b, guard_a));
    println!("  cleaned up: both devices and both namespaces removed");
    if !replied || tcp_bytes == 0 {
        return Err(Error::from_kind(
            ErrorKind::Os,
            "demo",
            "no traffic crossed the forwarder",
        ));
    }
    Ok(())
}

/// A vpwn configuration: this end at `addr`/24, the peer at `peer_addr` (its only allowed
/// source), a port the kernel picks.
fn tunnel_config(
    private_key: SecretKey,
    peer_key: PublicKey,
    addr: Ipv4Addr,
    peer_addr: Ipv4Addr,
    endpoint: Option<SocketAddr>,
) -> Result<Config, Error> {
    Ok(Config {
        private_key: Some(private_key),
        addresses: vec![Cidr::new(addr.into(), 24)?],
        peers: vec![Peer {
            endpoint,
            allowed_ips: vec![Cidr::new(peer_addr.into(), 32)?],
            ..Peer::new(peer_key)
        }],
        ..Config::default()
    })
}

/// The `tunctl vpwn show` figures of one end: handshake age, transfer, drops.
fn report_tunnel(tunnel: &Tunnel) {
    let c = tunnel.counters();
    let handshake = match tunnel.since_handshake() {
        Some(age) => format!("latest handshake {:.2} s ago", age.as_secs_f64()),
        None => "no handshake".to_string(),
    };
    println!(
        "  vpwn {}: {handshake}; received {} packets ({:.1} MB), sent {} packets ({:.1} MB)",
        tunnel.name(),
        c.rx_packets,
        c.rx_bytes as f64 / 1e6,
        c.tx_packets,
        c.tx_bytes as f64 / 1e6
    );
    println!("  vpwn {} dropped: {}", tunnel.name(), c.drops_text());
}

/// Sends a datagram into the tunnel from `ns` (to the discard port of `dst`, once a second)
/// until `tunnel` has completed a handshake, for at most 5 s; returns how long it took, or
/// `None` (the pings and the counters then tell what went wrong).
fn handshake(ns: &Namespace, dst: Ipv4Addr, tunnel: &Tunnel) -> Result<Option<Duration>, Error> {
    let sock = ns
        .run(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))?
        .map_err(|e| io_err("UDP socket", e))?;
    let started = Instant::now();
    let mut sent: Option<Instant> = None;
    while started.elapsed() < Duration::from_secs(5) {
        check_interrupted()?;
        if tunnel.since_handshake().is_some() {
            return Ok(Some(started.elapsed()));
        }
        if sent.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            sock.send_to(b"handshake, please", (dst, 9))
                .map_err(|e| io_err("UDP send", e))?;
            sent = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(None)
}

/// Stage 2: two more namespaces joined by a veth, a vpwn (WireGuard) tunnel between them,
/// pings and a TCP stream through it.
fn tunnel_stage(args: &DemoArgs) -> Result<(), Error> {
    let pid = std::process::id();
    let key_err = |e: String| Error::from_kind(ErrorKind::Os, "generate key", e);
    // Guards are declared first so they drop last: tunnels and the veth's handles go, then
    // the namespaces (and the veth with them, on an early return).
    let guard_a = NsGuard::create(format!("tunctl-demo-{pid}-vpwn-a"))?;
    let guard_b = NsGuard::create(format!("tunctl-demo-{pid}-vpwn-b"))?;
    let (ns_a, ns_b) = (&guard_a.0, &guard_b.0);
    // One RTM_NEWLINK makes both ends, B's born in B: neither is ever in this process's
    // namespace.
    let (veth_a, veth_b) = Netlink::open_in(ns_a)?.add_veth(VETH_A, VETH_B, ns_b)?;
    for (link, addr) in [(&veth_a, UNDER_A), (&veth_b, UNDER_B)] {
        link.add_address(Cidr::new(addr.into(), 24)?)?;
        link.up()?;
    }
    for ns in [ns_a, ns_b] {
        Link::by_name(ns, "lo")?.up()?;
    }
    check_interrupted()?;
    let key_a = SecretKey::generate_private().map_err(key_err)?;
    let key_b = SecretKey::generate_private().map_err(key_err)?;
    let (public_a, public_b) = (key_a.public(), key_b.public());
    // Device names are unique on the host: a tunnel's UAPI socket
    // (/var/run/wireguard/NAME.sock) is not per namespace.
    let tunnel_b = Tunnel::up(Options::new(
        format!("vpwn-{pid}-b"),
        ns_b.clone(),
        tunnel_config(key_b, public_a, TUN_B, TUN_A, None)?,
    ))?;
    // A knows where B listens; B learns A's address from the handshake.
    let endpoint = SocketAddr::V4(SocketAddrV4::new(UNDER_B, tunnel_b.port()));
    let tunnel_a = Tunnel::up(Options::new(
        format!("vpwn-{pid}-a"),
        ns_a.clone(),
        tunnel_config(key_a, public_b, TUN_A, TUN_B, Some(endpoint))?,
    ))?;
    println!(
        "tunctl demo: tunnel: {} {} ({TUN_A}) <-> WireGuard over veth {UNDER_A} <-> {endpoint} <-> {} {} ({TUN_B})",
        guard_a.1,
        tunnel_a.name(),
        guard_b.1,
        tunnel_b.name()
    );
    // The first packet starts the handshake; the pings then time the tunnel itself.
    let took = handshake(ns_a, TUN_B, &tunnel_a)?;
    let rtts = ping(ns_a, TUN_B, args.pings)?;
    let (tcp_bytes, tcp_time) = tcp_stream(ns_a, ns_b, TUN_B, args.seconds)?;

    match took {
        Some(t) => println!(
            "  handshake {TUN_A} -> {TUN_B}: {:.3} ms from the first packet to a session",
            t.as_secs_f64() * 1e3
        ),
        None => println!("  handshake {TUN_A} -> {TUN_B}: none within 5 s"),
    }
    let replied = report_ping(TUN_A, TUN_B, &rtts);
    let secs = tcp_time.as_secs_f64();
    println!(
        "  tcp {TUN_A} -> {TUN_B}:{TCP_PORT} through the tunnel: {:.1} MB in {secs:.2} s = {:.1} Mbit/s",
        tcp_bytes as f64 / 1e6,
        tcp_bytes as f64 * 8.0 / secs / 1e6
    );
    report_tunnel(&tunnel_a);
    report_tunnel(&tunnel_b);
    // Stops the threads, removes the devices and the UAPI sockets.
    tunnel_a.down();
    tunnel_b.down();
    // Deleting one end takes the other; the namespaces would take both anyway.
    if let Err(e) = veth_a.delete() {
        eprintln!("tunctl: demo cleanup: {e}");
    }
    drop((veth_a, veth_b));
    drop((guard_b, guard_a));
    println!("  cleaned up: both tunnels, the veth and both namespaces removed");
    if !replied || tcp_bytes == 0 {
        return Err(Error::from_kind(
            ErrorKind::Os,
            "demo",
            "no traffic crossed the tunnel",
        ));
    }
    Ok(())
}

/// Stage 3: three more namespaces, one tap in each, all ports of one br learning bridge in
/// this process; pings between every pair, a TCP stream from A to B, the learned table and
/// each port's figures.
fn bridge_stage(args: &DemoArgs) -> Result<(), Error> {
    let pid = std::process::id();
    // Guards are declared first so they drop last: the bridge (its threads, its ports, its
    // control socket) goes, then the namespaces, however this function ends.
    let mut guards = Vec::with_capacity(BR_PORTS.len());
    for (tag, _, _) in BR_PORTS {
        guards.push(NsGuard::create(format!("tunctl-demo-{pid}-br-{tag}"))?);
    }
    let ports: Vec<PortSpec> = guards
        .iter()
        .zip(BR_PORTS)
        .map(|(guard, (_, name, _))| PortSpec {
            name: name.to_string(),
            namespace: guard.0.clone(),
        })
        .collect();
    // Its control socket (/run/tunctl/br/NAME.sock) is not per namespace: a unique name.
    let bridge = Bridge::up(tunctl_br::Options::new(&format!("br-{pid}"), ports))?;
    // Each tap is born in its namespace and set up there: an address, lo up; its MAC is
    // what the bridge should learn on its port.
    let mut macs = Vec::with_capacity(BR_PORTS.len());
    for (guard, (_, name, addr)) in guards.iter().zip(BR_PORTS) {
        let ns = &guard.0;
        let link = Link::by_name(ns, name)?;
        let config = LinkConfig {
            addrs: vec![Cidr::new(addr.into(), 24)?],
            up: Some(true),
            ..LinkConfig::default()
        };
        config.plan(&link)?.apply(&link, None)?;
        macs.push(link.info()?.mac.map(|m| m.to_string()));
        Link::by_name(ns, "lo")?.up()?;
    }
    let ends: Vec<String> = guards
        .iter()
        .zip(BR_PORTS)
        .map(|(guard, (_, name, addr))| format!("{} {name} ({addr})", guard.1))
        .collect();
    println!(
        "tunctl demo: bridge: {} in this process, learning, its ports {}",
        bridge.name(),
        ends.join(", ")
    );
    check_interrupted()?;
    // Every pair, each way round the ring: A -> B, B -> C, C -> A.
    let mut pings = Vec::with_capacity(BR_PORTS.len());
    for i in 0..BR_PORTS.len() {
        let j = (i + 1) % BR_PORTS.len();
        let rtts = ping(&guards[i].0, BR_PORTS[j].2, args.pings)?;
        pings.push((BR_PORTS[i].2, BR_PORTS[j].2, rtts));
    }
    let (addr_a, addr_b) = (BR_PORTS[0].2, BR_PORTS[1].2);
    let (tcp_bytes, tcp_time) = tcp_stream(&guards[0].0, &guards[1].0, addr_b, args.seconds)?;
    let status = bridge.status();

    let mut replied = true;
    for (from, to, rtts) in &pings {
        replied &= report_ping(*from, *to, rtts);
    }
    let secs = tcp_time.as_secs_f64();
    println!(
        "  tcp {addr_a} -> {addr_b}:{TCP_PORT} through the bridge: {:.1} MB in {secs:.2} s = {:.2} Gbit/s",
        tcp_bytes as f64 / 1e6,
        tcp_bytes as f64 * 8.0 / secs / 1e9
    );
    let learned_right = report_bridge(&status, &macs);
    // Stops the port threads, removes the taps (in their namespaces) and the control socket.
    bridge.down();
    drop(guards);
    println!("  cleaned up: the bridge, its control socket, the three taps and the three namespaces removed");
    if !replied || tcp_bytes == 0 {
        return Err(Error::from_kind(
            ErrorKind::Os,
            "demo",
            "no traffic crossed the bridge",
        ));
    }
    if !learned_right {
        return Err(Error::from_kind(
            ErrorKind::Os,
            "demo",
            "the bridge did not learn each tap's address on its port",
        ));
    }
    Ok(())
}

/// Prints the bridge's learned table (as `bridge fdb show` does) and each port's figures
/// from its `status()`; returns whether each tap's MAC (`macs`, in port order) was learned
/// on its own port.
fn report_bridge(status: &tunctl_br::Status, macs: &[Option<String>]) -> bool {
    println!(
        "  learned table (bridge fdb show): {} of {} addresses",
        status.entries, status.max_macs
    );
    for line in status.fdb_lines() {
        println!("    {line}");
    }
    for p in &status.ports {
        println!(
            "  port {}: in {} frames ({:.1} MB), out {} frames ({:.1} MB); forwarded {}, flooded {}; learned {}",
            p.name,
            p.rx_frames,
            p.rx_bytes as f64 / 1e6,
            p.tx_frames,
            p.tx_bytes as f64 / 1e6,
            p.forwarded,
            p.flooded,
            p.learned
        );
    }
    status.ports.len() == macs.len()
        && status.ports.iter().zip(macs).all(|(p, mac)| {
            mac.as_ref().is_some_and(|mac| {
                status
                    .fdb
                    .iter()
                    .any(|e| e.mac.to_string() == *mac && e.port == p.name)
            })
        })
}
