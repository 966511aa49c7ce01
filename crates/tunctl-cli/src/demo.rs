//! `tunctl demo`: two namespaces, one tun device in each, and this process forwarding
//! packets between the two devices. Pings and a TCP stream cross from namespace A to B;
//! a report follows; everything is removed at the end, on failure and on Ctrl-C too.
//!
//! Traffic stays inside the two namespaces the demo creates (10.77.0.1 ⇄ 10.77.0.2).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tunctl::{Address, Device, Error, ErrorKind, Link, Namespace};

const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const TCP_PORT: u16 = 5201;

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

/// Runs the demo and prints its report. Fails unless pings and TCP data really crossed.
pub fn run(args: DemoArgs) -> Result<(), Error> {
    // SIGINT, SIGTERM and SIGHUP all end the demo through its cleanup. A second handler
    // cannot be set in the same process; the first one is as good.
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::Relaxed));
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

    let replies: Vec<Duration> = rtts.iter().flatten().copied().collect();
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    if replies.is_empty() {
        println!("  ping: 0/{} replies", rtts.len());
    } else {
        let min = replies.iter().map(ms).fold(f64::MAX, f64::min);
        let max = replies.iter().map(ms).fold(0.0, f64::max);
        let avg = replies.iter().map(ms).sum::<f64>() / replies.len() as f64;
        println!(
            "  ping {ADDR_A} -> {ADDR_B}: {}/{} replies, rtt min/avg/max {min:.3}/{avg:.3}/{max:.3} ms",
            replies.len(),
            rtts.len()
        );
    }
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
    if replies.is_empty() || tcp_bytes == 0 {
        return Err(Error::from_kind(
            ErrorKind::Os,
            "demo",
            "no traffic crossed the forwarder",
        ));
    }
    Ok(())
}
