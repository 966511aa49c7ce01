//! br against the real kernel, as root: every port a tap in a namespace of its own, hosts being
//! those namespaces' network stacks, and what crosses the bridge seen independently of it (the
//! stacks' sockets, `ip -j`, AF_PACKET captures on the taps inside their namespaces).
//!
//! The kernel selftests' bridge checks (`net/forwarding`: ping, learning, flooding) and the
//! bounds of a userspace bridge: ARP/ND and datagrams between every pair, through an uplink
//! into a Linux bridge too; broadcast, unknown unicast and unregistered multicast flooded;
//! learned unicast on its port alone; MAC moves and ageing; a MAC flood of a million sources
//! against a bounded table; invalid sources and link-local destinations dropped and counted;
//! VLAN tags untouched; TCP with TSO whole, and split into valid segments for a port without
//! vnet_hdr; a port deleted from outside or moved to another namespace.

#[path = "../../tunctl/tests/common/mod.rs"]
mod common;

use std::ffi::CString;
use std::io::{ErrorKind, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::RwLockWriteGuard;
use std::time::{Duration, Instant};

use common::{ip_json, ip_link, ip_ok, unique, TestNs};
use serde_json::Value;
use tunctl::Namespace;
use tunctl_br::{Bridge, Mac, Options, PortSpec};

/// IEEE 802 local experimental EtherType: the stacks ignore it.
const TEST_TYPE: u16 = 0x88b5;
const SOL_PACKET: libc::c_int = 263;
const PACKET_AUXDATA: libc::c_int = 8;
const PACKET_OUTGOING: u8 = 4;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
const ETH_P_ALL: u16 = 3;
const UDP_SEGMENT: libc::c_int = 103;

// ---------------------------------------------------------------------------------------
// Hosts and the bridge between them.

/// A host: a namespace and the interface carrying its addresses, 10.99.0.N/24 and
/// fd00:99::N/64 (a bridge port, or a veth behind the Linux bridge of the uplink).
struct Host {
    ns: TestNs,
    dev: String,
    n: u8,
}

impl Host {
    fn v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, 0, self.n)
    }

    fn v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, u16::from(self.n))
    }

    fn ip(&self, v6: bool) -> IpAddr {
        if v6 {
            self.v6().into()
        } else {
            self.v4().into()
        }
    }

    fn name(&self) -> &str {
        &self.ns.name
    }

    fn spec(&self) -> PortSpec {
        PortSpec {
            name: self.dev.clone(),
            namespace: self.ns.ns.clone(),
        }
    }

    /// Addresses (IPv6 without DAD, usable at once) and up.
    fn configure(&self) {
        let (v4, v6) = (format!("{}/24", self.v4()), format!("{}/64", self.v6()));
        ip_ok(self.name(), &["addr", "add", &v4, "dev", &self.dev]);
        ip_ok(
            self.name(),
            &["addr", "add", &v6, "dev", &self.dev, "nodad"],
        );
        ip_ok(self.name(), &["link", "set", &self.dev, "up"]);
    }

    /// The interface's MAC address, as `ip` sees it.
    fn mac(&self) -> Mac {
        let link = ip_link(Some(self.name()), &self.dev)
            .unwrap_or_else(|| panic!("{} exists in {}", self.dev, self.name()));
        link["address"].as_str().unwrap().parse().unwrap()
    }

    /// An AF_PACKET socket on the interface, inside the host's namespace.
    fn raw(&self) -> Raw {
        Raw::open(&self.ns.ns, &self.dev)
    }
}

/// The bridge and its hosts. Fields drop in order: the bridge first (its ports go), then the
/// namespaces, then the exclusive hold of a test that measures.
struct Lab {
    bridge: Option<Bridge>,
    hosts: Vec<Host>,
    extra: Vec<TestNs>,
    _exclusive: Option<RwLockWriteGuard<'static, ()>>,
}

impl Lab {
    /// `n` hosts, each a namespace whose port (a tap br creates) is its interface; the
    /// bridge's options as `tweak` leaves them. `None`: skipped (not privileged, outside CI).
    fn simple(n: usize, tweak: impl FnOnce(&mut Options)) -> Option<Lab> {
        let (first, ()) = common::privileged_ns()?;
        Some(Lab::hosts_on_ports(first, None, n, tweak))
    }

    /// As [`simple`](Lab::simple), holding the tests' lock exclusively (nothing else runs in
    /// this process while it measures).
    fn exclusive(n: usize, tweak: impl FnOnce(&mut Options)) -> Option<Lab> {
        if !common::privileged() {
            return None;
        }
        let hold = common::exclusive();
        Some(Lab::hosts_on_ports(TestNs::new(), Some(hold), n, tweak))
    }

    fn hosts_on_ports(
        first: TestNs,
        hold: Option<RwLockWriteGuard<'static, ()>>,
        n: usize,
        tweak: impl FnOnce(&mut Options),
    ) -> Lab {
        let mut spaces = vec![first];
        spaces.extend((1..n).map(|_| TestNs::new()));
        let hosts: Vec<Host> = spaces
            .into_iter()
            .enumerate()
            .map(|(i, ns)| Host {
                ns,
                dev: unique(&format!("p{i}")),
                n: i as u8 + 1,
            })
            .collect();
        let mut opts = Options::new(&unique("br"), hosts.iter().map(Host::spec).collect());
        tweak(&mut opts);
        Lab::start(hosts, Vec::new(), hold, opts)
    }

    /// Brings the bridge up with `opts`, then configures every host.
    fn start(
        hosts: Vec<Host>,
        extra: Vec<TestNs>,
        hold: Option<RwLockWriteGuard<'static, ()>>,
        opts: Options,
    ) -> Lab {
        let mut lab = Lab {
            bridge: None,
            hosts,
            extra,
            _exclusive: hold,
        };
        lab.bridge = Some(Bridge::up(opts).expect("bridge up"));
        for h in &lab.hosts {
            h.configure();
        }
        lab
    }

    fn bridge(&self) -> &Bridge {
        self.bridge.as_ref().expect("the bridge is up")
    }

    fn status(&self) -> Value {
        self.bridge().status()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Explicit, whatever the field order: ports first, then their namespaces.
        drop(self.bridge.take());
        self.hosts.clear();
        self.extra.clear();
    }
}

// ---------------------------------------------------------------------------------------
// The bridge's status.

fn port_status<'a>(st: &'a Value, port: &str) -> &'a Value {
    st["ports"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == port))
        .unwrap_or_else(|| panic!("port {port} in {st}"))
}

/// A port's counter; `dropped.CAUSE` for a drop counter.
fn count(st: &Value, port: &str, key: &str) -> u64 {
    let p = port_status(st, port);
    let v = match key.split_once('.') {
        Some((outer, inner)) => &p[outer][inner],
        None => &p[key],
    };
    v.as_u64()
        .unwrap_or_else(|| panic!("counter {key} of {port}: {v}"))
}

/// The port the table has `mac` on.
fn fdb_port(st: &Value, mac: Mac) -> Option<String> {
    let mac = mac.to_string();
    st["fdb"]
        .as_array()?
        .iter()
        .find(|e| e["mac"] == mac.as_str())
        .map(|e| e["port"].as_str().unwrap_or("?").to_string())
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

#[track_caller]
fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "no {what} within {within:?}");
        std::thread::sleep(ms(20));
    }
}

// ---------------------------------------------------------------------------------------
// Frames and captures.

/// An Ethernet frame (padded to the 60-byte minimum).
fn eth(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(64 + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// Bytes found in no other frame: what a capture looks for.
fn marker(tag: &str) -> Vec<u8> {
    format!("BRTEST:{}:", unique(tag)).into_bytes()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

const BROADCAST: Mac = Mac::BROADCAST;

/// `tpacket_auxdata`: what the kernel says about a captured frame (the VLAN tag it took out).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct AuxData {
    status: u32,
    len: u32,
    snaplen: u32,
    mac: u16,
    net: u16,
    vlan_tci: u16,
    vlan_tpid: u16,
}

fn setsockopt_int(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, v: libc::c_int) -> bool {
    // SAFETY: an int option on our own socket.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// An AF_PACKET socket bound to one interface: sends frames out of it (into the bridge, when
/// it is a port) and captures the frames that come in on it.
struct Raw {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl Raw {
    fn open(ns: &Namespace, dev: &str) -> Raw {
        let cdev = CString::new(dev).unwrap();
        let fd = ns
            .run(move || -> std::io::Result<OwnedFd> {
                // Protocol 0 until bound: nothing from other interfaces is queued.
                // SAFETY: socket(2); the fd is owned at once.
                let raw = unsafe {
                    libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0)
                };
                if raw < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: a fresh fd nobody else owns.
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                // SAFETY: a NUL-terminated name.
                let ifindex = unsafe { libc::if_nametoindex(cdev.as_ptr()) };
                if ifindex == 0 {
                    return Err(std::io::Error::last_os_error());
                }
                setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20);
                if !setsockopt_int(&fd, SOL_PACKET, PACKET_AUXDATA, 1) {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: zeroed sockaddr_ll is valid.
                let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = ETH_P_ALL.to_be();
                sll.sll_ifindex = ifindex as i32;
                // SAFETY: bind(2) with a sockaddr_ll of its size.
                let r = unsafe {
                    libc::bind(
                        fd.as_raw_fd(),
                        (&sll as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                    )
                };
                if r != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(fd)
            })
            .expect("enter the namespace")
            .unwrap_or_else(|e| panic!("AF_PACKET socket on {dev}: {e}"));
        Raw {
            fd,
            buf: vec![0u8; 70_000],
        }
    }

    /// Sends `frame` out of the interface; false if the kernel refused it (ENOBUFS when its
    /// queue is full).
    fn send(&self, frame: &[u8]) -> bool {
        // SAFETY: send(2) of a borrowed buffer on a bound socket.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        n == frame.len() as isize
    }

    /// The next frame that came in on the interface within `timeout` (frames going out are
    /// skipped), with the VLAN tag the kernel took out of it put back where it was.
    fn recv(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let wait = left.as_millis().min(10_000) as libc::c_int;
            // SAFETY: poll(2) on one pollfd.
            if unsafe { libc::poll(&mut pfd, 1, wait) } <= 0 {
                return None;
            }
            // SAFETY: zeroed sockaddr_ll and msghdr are valid; the pointers set below live
            // across the call.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut control = [0u64; 32];
            let mut iov = libc::iovec {
                iov_base: self.buf.as_mut_ptr().cast(),
                iov_len: self.buf.len(),
            };
            // SAFETY: as above.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&mut sll as *mut libc::sockaddr_ll).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control);
            // SAFETY: recvmsg(2) into the buffers above.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
            if n < 0 || sll.sll_pkttype == PACKET_OUTGOING {
                if Instant::now() >= deadline {
                    return None;
                }
                continue;
            }
            let mut frame = self.buf[..n as usize].to_vec();
            // SAFETY: walking the control messages recvmsg wrote.
            let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
            while !c.is_null() {
                // SAFETY: a control message header within `control`.
                let h = unsafe { &*c };
                if h.cmsg_level == SOL_PACKET && h.cmsg_type == PACKET_AUXDATA {
                    // SAFETY: the kernel wrote a tpacket_auxdata there.
                    let aux: AuxData =
                        unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast()) };
                    if aux.status & TP_STATUS_VLAN_VALID != 0 && frame.len() >= 12 {
                        let tpid = if aux.status & TP_STATUS_VLAN_TPID_VALID != 0 {
                            aux.vlan_tpid
                        } else {
                            0x8100
                        };
                        let mut tag = tpid.to_be_bytes().to_vec();
                        tag.extend_from_slice(&aux.vlan_tci.to_be_bytes());
                        frame.splice(12..12, tag);
                    }
                }
                // SAFETY: the next header of the same message.
                c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
            }
            return Some(frame);
        }
    }

    /// The frames carrying `marker` that come in within `wait` (returns as soon as there are
    /// `enough`).
    fn frames_with(&mut self, marker: &[u8], enough: usize, wait: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        while got.len() < enough {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.recv(left) {
                Some(f) if contains(&f, marker) => got.push(f),
                Some(_) => {}
                None => break,
            }
        }
        got
    }
}

/// `frame` (carrying `m`) comes in on `raw` once: within 2 s, and no copy 100 ms later.
#[track_caller]
fn once(raw: &mut Raw, m: &[u8], frame: &[u8]) {
    let got = raw.frames_with(m, 1, secs(2));
    assert_eq!(got, vec![frame.to_vec()], "the frame arrives");
    assert!(
        raw.frames_with(m, 1, ms(100)).is_empty(),
        "the frame arrives once"
    );
}

// ---------------------------------------------------------------------------------------
// Traffic between the hosts' stacks.

fn bind_udp(ns: &Namespace, addr: SocketAddr) -> UdpSocket {
    ns.run(|| UdpSocket::bind(addr))
        .expect("enter the namespace")
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"))
}

/// A datagram from `a` reaches `b` with `a`'s address as its source (ARP or ND on the way):
/// tries for 5 s.
#[track_caller]
fn udp_reaches(a: &Host, b: &Host, v6: bool) {
    let (src, dst) = (a.ip(v6), b.ip(v6));
    let rx = bind_udp(&b.ns.ns, SocketAddr::new(dst, 0));
    rx.set_read_timeout(Some(ms(100))).unwrap();
    let to = SocketAddr::new(dst, rx.local_addr().unwrap().port());
    let tx = bind_udp(&a.ns.ns, SocketAddr::new(src, 0));
    let msg = format!("{src} to {dst}");
    let deadline = Instant::now() + secs(5);
    let mut buf = [0u8; 256];
    loop {
        let _ = tx.send_to(msg.as_bytes(), to);
        if let Ok((n, from)) = rx.recv_from(&mut buf) {
            if &buf[..n] == msg.as_bytes() && from.ip() == src {
                return;
            }
        }
        assert!(Instant::now() < deadline, "no datagram {msg} within 5 s");
    }
}

/// The byte at offset `i` of a test stream.
fn pattern(i: usize) -> u8 {
    let word = (i as u64 / 8).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5bd1_e995;
    (word >> ((i % 8) * 8)) as u8
}

/// `bytes` of the pattern over TCP from `a` to `b`, checked byte for byte on arrival (the
/// receiving kernel drops a segment with a bad checksum: a stream that completes had none).
#[track_caller]
fn tcp_stream(a: &Host, b: &Host, bytes: usize) {
    let listener =
        b.ns.ns
            .run(|| TcpListener::bind((b.v4(), 0)))
            .unwrap()
            .unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || -> Result<usize, String> {
        let deadline = Instant::now() + secs(30);
        let mut conn = loop {
            match listener.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(ms(5))
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(secs(10))).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut at = 0;
        loop {
            let n = conn
                .read(&mut buf)
                .map_err(|e| format!("read after {at} bytes: {e}"))?;
            if n == 0 {
                return Ok(at);
            }
            if let Some(k) = (0..n).find(|&k| buf[k] != pattern(at + k)) {
                return Err(format!("byte {} differs", at + k));
            }
            at += n;
            if Instant::now() > deadline {
                return Err(format!("only {at} bytes in 30 s"));
            }
        }
    });
    let mut c =
        a.ns.ns
            .run(|| TcpStream::connect_timeout(&addr, secs(5)))
            .unwrap()
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    c.set_write_timeout(Some(secs(10))).unwrap();
    let mut chunk = vec![0u8; 1 << 16];
    let mut at = 0;
    while at < bytes {
        let n = chunk.len().min(bytes - at);
        for (k, x) in chunk[..n].iter_mut().enumerate() {
            *x = pattern(at + k);
        }
        c.write_all(&chunk[..n])
            .unwrap_or_else(|e| panic!("write after {at} bytes: {e}"));
        at += n;
    }
    c.shutdown(Shutdown::Write).unwrap();
    let got = server.join().expect("the receiver does not panic");
    assert_eq!(got, Ok(bytes), "TCP {} to {}", a.v4(), b.v4());
}

/// This process's resident memory, in KiB.
fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

// ---------------------------------------------------------------------------------------
// The tests.

/// Three hosts on ports, and an uplink enslaved to a Linux bridge in a fourth namespace with a
/// veth to a fifth: every ordered pair exchanges datagrams over IPv4 (ARP) and IPv6 (ND), each
/// neighbour resolved to the right address; a broadcast from each reaches every other host
/// and never comes back.
#[test]
fn every_pair_talks_v4_and_v6_through_ports_and_uplink_and_broadcast_reaches_all() {
    let Some((first, ())) = common::privileged_ns() else {
        return;
    };
    let (up_ns, behind) = (TestNs::new(), TestNs::new());
    let (lbr, veth_up, veth_behind) = (unique("lbr"), unique("vu"), unique("vv"));
    ip_ok(
        &up_ns.name,
        &["link", "add", &lbr, "type", "bridge", "mcast_snooping", "0"],
    );
    ip_ok(
        &up_ns.name,
        &[
            "link",
            "add",
            &veth_up,
            "type",
            "veth",
            "peer",
            "name",
            &veth_behind,
            "netns",
            &behind.name,
        ],
    );
    ip_ok(&up_ns.name, &["link", "set", &veth_up, "master", &lbr]);
    ip_ok(&up_ns.name, &["link", "set", &veth_up, "up"]);
    ip_ok(&up_ns.name, &["link", "set", &lbr, "up"]);
    let mut hosts: Vec<Host> = [first, TestNs::new(), TestNs::new()]
        .into_iter()
        .enumerate()
        .map(|(i, ns)| Host {
            ns,
            dev: unique(&format!("p{i}")),
            n: i as u8 + 1,
        })
        .collect();
    let uplink = unique("up");
    let mut ports: Vec<PortSpec> = hosts.iter().map(Host::spec).collect();
    ports.push(PortSpec {
        name: uplink.clone(),
        namespace: up_ns.ns.clone(),
    });
    hosts.push(Host {
        ns: behind,
        dev: veth_behind,
        n: 4,
    });
    let mut opts = Options::new(&unique("br"), ports);
    opts.uplink = Some(uplink.clone());
    opts.master = Some((lbr.clone(), up_ns.ns.clone()));
    let up_name = up_ns.name.clone();
    let lab = Lab::start(hosts, vec![up_ns], None, opts);

    let link = ip_link(Some(&up_name), &uplink).expect("the uplink exists");
    assert_eq!(
        link["master"],
        lbr.as_str(),
        "the uplink is enslaved: {link}"
    );
    let st = lab.status();
    assert_eq!(port_status(&st, &uplink)["uplink"], true);

    for v6 in [false, true] {
        for a in &lab.hosts {
            for b in &lab.hosts {
                if a.n != b.n {
                    udp_reaches(a, b, v6);
                }
            }
        }
    }
    // ARP and ND resolved every neighbour to its interface's address.
    let macs: Vec<Mac> = lab.hosts.iter().map(Host::mac).collect();
    for a in &lab.hosts {
        let neigh = ip_json(Some(a.name()), &["neigh", "show", "dev", &a.dev]);
        for (b, mac) in lab.hosts.iter().zip(&macs) {
            if a.n == b.n {
                continue;
            }
            for ip in [b.ip(false), b.ip(true)] {
                let entry = neigh
                    .as_array()
                    .and_then(|n| n.iter().find(|e| e["dst"] == ip.to_string().as_str()))
                    .unwrap_or_else(|| panic!("{} has a neighbour {ip}: {neigh}", a.name()));
                assert_eq!(entry["lladdr"], mac.to_string().as_str(), "{entry}");
            }
        }
    }

    // A broadcast from each host: once on every other host, never back on its own.
    let mut raws: Vec<Raw> = lab.hosts.iter().map(Host::raw).collect();
    for i in 0..raws.len() {
        let m = marker("bc");
        let frame = eth(BROADCAST, macs[i], TEST_TYPE, &m);
        assert!(raws[i].send(&frame));
        for (j, r) in raws.iter_mut().enumerate() {
            if j != i {
                once(r, &m, &frame);
            }
        }
        assert!(
            raws[i].frames_with(&m, 1, ms(200)).is_empty(),
            "a broadcast does not come back to host {i}"
        );
    }
    let st = lab.status();
    for p in st["ports"].as_array().unwrap() {
        assert_eq!(p["alive"], true, "{p}");
        assert!(p["rx_frames"].as_u64().unwrap() > 0, "{p}");
        assert!(p["tx_frames"].as_u64().unwrap() > 0, "{p}");
    }
}

/// After two hosts talk, unicast to one of them appears on its port alone (counters, and a
/// capture on the third port); unknown unicast, unregistered multicast and broadcast go to
/// every other port.
#[test]
fn learned_unicast_goes_to_its_port_alone_and_unknown_and_multicast_flood() {
    let Some(lab) = Lab::simple(3, |_| {}) else {
        return;
    };
    let [a, b, c] = &lab.hosts[..] else {
        unreachable!()
    };
    let (ma, mb) = (a.mac(), b.mac());
    let (mut ra, mut rb, mut rc) = (a.raw(), b.raw(), c.raw());
    udp_reaches(a, b, false);
    udp_reaches(b, a, false);
    let st = lab.status();
    assert_eq!(fdb_port(&st, ma).as_deref(), Some(a.dev.as_str()), "{st}");
    assert_eq!(fdb_port(&st, mb).as_deref(), Some(b.dev.as_str()), "{st}");

    // 200 datagrams a -> b, one at a time: on b's port alone.
    let m = marker("uc");
    let rx = bind_udp(&b.ns.ns, SocketAddr::new(b.v4().into(), 0));
    rx.set_read_timeout(Some(ms(500))).unwrap();
    let to = rx.local_addr().unwrap();
    let tx = bind_udp(&a.ns.ns, SocketAddr::new(a.v4().into(), 0));
    let before = lab.status();
    let mut buf = [0u8; 256];
    for k in 0..200 {
        tx.send_to(&m, to).unwrap();
        let (n, _) = rx
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {k}: {e}"));
        assert_eq!(&buf[..n], &m[..]);
    }
    // (The bridge counts a frame once it has written it: the datagram may be read first.)
    let delta =
        |st: &Value, port: &str, key: &str| count(st, port, key) - count(&before, port, key);
    wait_for("the forwarded frames counted", secs(2), || {
        let st = lab.status();
        delta(&st, &b.dev, "tx_frames") >= 200 && delta(&st, &a.dev, "forwarded") >= 200
    });
    let after = lab.status();
    let delta = |port: &str, key: &str| delta(&after, port, key);
    // The stacks' own multicast (IPv6 router solicitations, MLD) may flood now and then.
    assert!(
        delta(&c.dev, "tx_frames") < 20,
        "c got a's unicast: {after}"
    );
    assert!(
        rc.frames_with(&m, 1, ms(300)).is_empty(),
        "c captured a's unicast"
    );

    // An injected frame to b's address: on b, not on c.
    let m = marker("uc2");
    let frame = eth(mb, ma, TEST_TYPE, &m);
    assert!(ra.send(&frame));
    once(&mut rb, &m, &frame);
    assert!(rc.frames_with(&m, 1, ms(200)).is_empty());

    // Unknown unicast, unregistered multicast, broadcast: on b and c, not back on a.
    let before = lab.status();
    let dsts = [
        "de:ad:be:ef:13:37".parse::<Mac>().unwrap(),
        "01:00:5e:00:00:01".parse().unwrap(),
        BROADCAST,
    ];
    for dst in dsts {
        let m = marker("fl");
        let frame = eth(dst, ma, TEST_TYPE, &m);
        assert!(ra.send(&frame));
        once(&mut rb, &m, &frame);
        once(&mut rc, &m, &frame);
        assert!(ra.frames_with(&m, 1, ms(200)).is_empty(), "{dst} back on a");
    }
    let after = lab.status();
    assert!(
        count(&after, &a.dev, "flooded") >= count(&before, &a.dev, "flooded") + 3,
        "{after}"
    );
    assert_eq!(
        fdb_port(&after, dsts[0]),
        None,
        "a destination is not learned"
    );
}

/// An address that shows up on another port moves there with its first frame; the next frame
/// to it goes to the new port alone. And back.
#[test]
fn a_mac_move_follows_at_once() {
    let Some(lab) = Lab::simple(3, |_| {}) else {
        return;
    };
    let hosts: Vec<&Host> = lab.hosts.iter().collect();
    let x: Mac = "02:aa:bb:cc:00:01".parse().unwrap();
    let mc = hosts[2].mac();
    let mut raws: Vec<Raw> = hosts.iter().map(|h| h.raw()).collect();
    let is_on = |i: usize| fdb_port(&lab.status(), x).as_deref() == Some(hosts[i].dev.as_str());

    assert!(raws[0].send(&eth(BROADCAST, x, TEST_TYPE, &marker("mv"))));
    wait_for("x learned on a", secs(3), || is_on(0));
    assert!(count(&lab.status(), &hosts[0].dev, "learned") >= 1);

    for (to, from) in [(1, 0), (0, 1)] {
        // x speaks from the new port: its one frame moves the entry.
        let before = lab.status();
        assert!(raws[to].send(&eth(BROADCAST, x, TEST_TYPE, &marker("mv"))));
        wait_for("x moved", secs(2), || is_on(to));
        let st = lab.status();
        assert_eq!(
            count(&st, &hosts[to].dev, "moved"),
            count(&before, &hosts[to].dev, "moved") + 1,
            "{st}"
        );
        assert_eq!(count(&st, &hosts[from].dev, "aged"), 0, "{st}");
        // c's frame to x: on the new port alone.
        let m = marker("to-x");
        let frame = eth(x, mc, TEST_TYPE, &m);
        assert!(raws[2].send(&frame));
        once(&mut raws[to], &m, &frame);
        assert!(
            raws[from].frames_with(&m, 1, ms(200)).is_empty(),
            "x's old port"
        );
    }
}

/// With a 2 s ageing time an idle address is forgotten after 2 s (aged, counted) and frames
/// to it flood again.
#[test]
fn an_idle_entry_ages_out_and_flooding_resumes() {
    let Some(lab) = Lab::simple(3, |o| o.ageing = secs(2)) else {
        return;
    };
    let [a, b, c] = &lab.hosts[..] else {
        unreachable!()
    };
    let (x, y): (Mac, Mac) = (
        "02:aa:bb:cc:00:02".parse().unwrap(),
        "02:aa:bb:cc:00:03".parse().unwrap(),
    );
    let (mut ra, rb, mut rc) = (a.raw(), b.raw(), c.raw());
    assert!(ra.send(&eth(BROADCAST, x, TEST_TYPE, &marker("age"))));
    wait_for("x learned on a", secs(3), || {
        fdb_port(&lab.status(), x).as_deref() == Some(a.dev.as_str())
    });
    let learned = Instant::now();
    assert_eq!(lab.status()["ageing_s"], 2.0);
    // Known: to a alone.
    let m = marker("age1");
    let frame = eth(x, y, TEST_TYPE, &m);
    assert!(rb.send(&frame));
    once(&mut ra, &m, &frame);
    assert!(rc.frames_with(&m, 1, ms(200)).is_empty(), "x is known");
    // Idle: gone after the ageing time, not before; the sweep counts it.
    wait_for("x aged out", secs(5), || {
        fdb_port(&lab.status(), x).is_none()
    });
    assert!(
        learned.elapsed() >= ms(1500),
        "aged after {:?}",
        learned.elapsed()
    );
    wait_for("the sweep", secs(3), || {
        count(&lab.status(), &a.dev, "aged") >= 1
    });
    // Unknown again: flooded.
    let before = lab.status();
    let m = marker("age2");
    let frame = eth(x, y, TEST_TYPE, &m);
    assert!(rb.send(&frame));
    once(&mut ra, &m, &frame);
    once(&mut rc, &m, &frame);
    assert!(count(&lab.status(), &b.dev, "flooded") > count(&before, &b.dev, "flooded"));
}

/// A million random source addresses from one port: the table stays at its bound (the
/// flooding port gives up its own entries), the other ports' entries stay, traffic between
/// them and to them goes on, and memory stays flat.
#[test]
fn a_mac_flood_keeps_the_table_bounded_memory_flat_and_others_in_place() {
    const MAX: usize = 1024;
    const FLOOD: usize = 1_000_000;
    const CHUNK: usize = 500;
    let Some(lab) = Lab::exclusive(3, |o| o.max_macs = MAX) else {
        return;
    };
    let [a, b, c] = &lab.hosts[..] else {
        unreachable!()
    };
    let (mb, mc) = (b.mac(), c.mac());
    udp_reaches(b, c, false);
    udp_reaches(c, b, false);
    let ra = a.raw();
    let start = Instant::now();
    let deadline = start + secs(60);
    // Each frame from a random source to b's address (b's stack ignores its EtherType).
    let mut frame = eth(mb, mb, TEST_TYPE, b"flood");
    let mut rng: u64 = 0x243f_6a88_85a3_08d3 ^ u64::from(std::process::id());
    let mut sent = 0u64;
    let mut warm = None;
    for chunk in 0..FLOOD / CHUNK {
        for _ in 0..CHUNK {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let r = rng.to_be_bytes();
            // A locally administered unicast address.
            frame[6] = (r[0] & 0xfc) | 0x02;
            frame[7..12].copy_from_slice(&r[1..6]);
            if ra.send(&frame) {
                sent += 1;
            }
        }
        // Keep the bridge's queue from overflowing: wait (briefly) for it to catch up. The
        // table never holds more than its bound meanwhile.
        let pace = Instant::now() + ms(500);
        loop {
            let st = lab.status();
            let entries = st["entries"].as_u64().unwrap();
            assert!(
                entries <= MAX as u64,
                "{entries} entries after {sent} frames"
            );
            if count(&st, &a.dev, "rx_frames") + (2 * CHUNK as u64) >= sent
                || Instant::now() >= pace
            {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        // b and c go on talking, their entries in place.
        if chunk % 200 == 0 {
            udp_reaches(b, c, false);
            udp_reaches(c, b, false);
            let st = lab.status();
            assert_eq!(fdb_port(&st, mb).as_deref(), Some(b.dev.as_str()));
            assert_eq!(fdb_port(&st, mc).as_deref(), Some(c.dev.as_str()));
        }
        if chunk == 200 {
            warm = Some(vm_rss_kib());
        }
        assert!(Instant::now() < deadline, "{sent} frames in 60 s: too slow");
    }
    wait_for("the bridge to read the flood", secs(5), || {
        count(&lab.status(), &a.dev, "rx_frames") + 1000 >= sent
    });
    let elapsed = start.elapsed();
    udp_reaches(b, c, false);
    udp_reaches(c, b, false);
    let st = lab.status();
    let rss = vm_rss_kib();
    let warm = warm.unwrap();
    eprintln!(
        "MAC flood: {sent} frames sent in {elapsed:?}; port a: {} read, {} learned, {} evicted; table {} of {}; RSS {warm} KiB after 100k, {rss} KiB at the end",
        count(&st, &a.dev, "rx_frames"),
        count(&st, &a.dev, "learned"),
        count(&st, &a.dev, "evicted"),
        st["entries"],
        st["max_macs"]
    );
    assert!(sent >= FLOOD as u64 * 9 / 10, "{sent} sent");
    assert_eq!(st["max_macs"], MAX);
    assert_eq!(st["entries"], MAX, "the table is full, never over");
    let learned = count(&st, &a.dev, "learned");
    assert!(learned >= sent * 9 / 10, "{learned} learned of {sent}");
    assert!(count(&st, &a.dev, "evicted") >= learned - MAX as u64);
    // The others' entries in place, never evicted.
    assert_eq!(
        fdb_port(&st, mb).as_deref(),
        Some(b.dev.as_str()),
        "b's entry"
    );
    assert_eq!(
        fdb_port(&st, mc).as_deref(),
        Some(c.dev.as_str()),
        "c's entry"
    );
    for p in [b, c] {
        assert_eq!(count(&st, &p.dev, "evicted"), 0, "{}", p.dev);
    }
    // Forwarded to b alone, never flooded to c.
    assert!(count(&st, &a.dev, "forwarded") >= sent * 9 / 10);
    assert!(
        count(&st, &c.dev, "tx_frames") < 10_000,
        "the flood reached c"
    );
    // 1 M entries would be tens of MiB.
    assert!(
        rss <= warm + 4096,
        "RSS grew from {warm} to {rss} KiB during the flood"
    );
}

/// Frames with a zero or multicast source and frames to an IEEE link-local address reach no
/// other port, are counted by cause, and teach the table nothing.
#[test]
fn invalid_sources_and_link_local_destinations_are_dropped_and_counted() {
    let Some(lab) = Lab::simple(3, |_| {}) else {
        return;
    };
    let [a, b, c] = &lab.hosts[..] else {
        unreachable!()
    };
    let (ma, mb) = (a.mac(), b.mac());
    let (ra, mut rb, mut rc) = (a.raw(), b.raw(), c.raw());
    udp_reaches(b, a, false);
    let zero = Mac([0; 6]);
    let multicast: Mac = "01:02:03:04:05:06".parse().unwrap();
    let lldp_like: Mac = "01:80:c2:00:00:0e".parse().unwrap();
    let pause: Mac = "01:80:c2:00:00:01".parse().unwrap();
    let m = marker("bad");
    let before = lab.status();
    let frames = [
        eth(BROADCAST, zero, TEST_TYPE, &m),
        eth(mb, zero, TEST_TYPE, &m),
        eth(BROADCAST, multicast, TEST_TYPE, &m),
        eth(mb, multicast, TEST_TYPE, &m),
        eth(BROADCAST, BROADCAST, TEST_TYPE, &m),
        eth(lldp_like, ma, 0x88cc, &m),
        eth(pause, ma, 0x8808, &m),
    ];
    for _ in 0..20 {
        for f in &frames {
            assert!(ra.send(f));
        }
    }
    let delta = |st: &Value, key: &str| count(st, &a.dev, key) - count(&before, &a.dev, key);
    wait_for("the drops counted", secs(3), || {
        let st = lab.status();
        delta(&st, "dropped.invalid_source") >= 100 && delta(&st, "dropped.link_local") >= 40
    });
    std::thread::sleep(ms(100));
    let st = lab.status();
    let delta = |key: &str| delta(&st, key);
    assert_eq!(delta("dropped.invalid_source"), 100, "{st}");
    assert_eq!(delta("dropped.link_local"), 40, "{st}");
    assert!(
        rb.frames_with(&m, 1, ms(300)).is_empty(),
        "b got a refused frame"
    );
    assert!(
        rc.frames_with(&m, 1, ms(100)).is_empty(),
        "c got a refused frame"
    );
    for mac in [zero, multicast, BROADCAST] {
        assert_eq!(fdb_port(&st, mac), None, "{mac} learned");
    }
    assert_eq!(delta("forwarded"), 0, "{st}");
}

/// 802.1Q and 802.1ad (QinQ) tagged frames cross the VLAN-unaware bridge byte for byte, to a
/// learned port alone or flooded.
#[test]
fn vlan_tagged_frames_cross_untouched() {
    let Some(lab) = Lab::simple(3, |_| {}) else {
        return;
    };
    let [a, b, c] = &lab.hosts[..] else {
        unreachable!()
    };
    let (ma, mb) = (a.mac(), b.mac());
    let (ra, mut rb, mut rc) = (a.raw(), b.raw(), c.raw());
    udp_reaches(a, b, false);
    udp_reaches(b, a, false);
    let tagged = |dst: Mac, tags: &[(u16, u16)], m: &[u8]| {
        let mut payload = Vec::new();
        let mut types: Vec<u16> = tags.iter().map(|t| t.0).collect();
        types.push(TEST_TYPE);
        for (i, (_, tci)) in tags.iter().enumerate() {
            payload.extend_from_slice(&tci.to_be_bytes());
            payload.extend_from_slice(&types[i + 1].to_be_bytes());
        }
        payload.extend_from_slice(m);
        payload.extend_from_slice(&[0x5a; 100]);
        eth(dst, ma, types[0], &payload)
    };
    // Priority 5, VLAN 100; QinQ: service VLAN 200 over customer VLAN 300 (priority 3).
    let single = [(0x8100, (5 << 13) | 100)];
    let qinq = [(0x88a8, 200), (0x8100, (3 << 13) | 300)];
    for tags in [&single[..], &qinq[..]] {
        let m = marker("vl");
        let frame = tagged(mb, tags, &m);
        assert!(ra.send(&frame));
        once(&mut rb, &m, &frame);
        assert!(
            rc.frames_with(&m, 1, ms(200)).is_empty(),
            "learned: not to c"
        );
        let m = marker("vlb");
        let frame = tagged(BROADCAST, tags, &m);
        assert!(ra.send(&frame));
        once(&mut rb, &m, &frame);
        once(&mut rc, &m, &frame);
    }
}

/// A multi-MB TCP stream between two vnet_hdr ports: whole GSO super-frames cross (the
/// ingress port reads frames far larger than the MTU), and the data arrives intact.
#[test]
fn tcp_with_tso_crosses_in_super_frames() {
    tso_crosses(false);
}

/// The same with `--one-thread`.
#[test]
fn one_thread_carries_tcp_in_super_frames() {
    tso_crosses(true);
}

fn tso_crosses(one_thread: bool) {
    let Some(lab) = Lab::simple(2, |o| o.one_thread = one_thread) else {
        return;
    };
    let [a, b] = &lab.hosts[..] else {
        unreachable!()
    };
    udp_reaches(a, b, false);
    udp_reaches(b, a, false);
    let st = lab.status();
    assert_eq!(port_status(&st, &a.dev)["vnet_hdr"], true);
    let before = lab.status();
    tcp_stream(a, b, 16 << 20);
    let st = lab.status();
    let frames = count(&st, &a.dev, "rx_frames") - count(&before, &a.dev, "rx_frames");
    let bytes = count(&st, &a.dev, "rx_bytes") - count(&before, &a.dev, "rx_bytes");
    eprintln!("TSO: {bytes} bytes in {frames} frames from a");
    assert!(bytes >= 16 << 20, "{st}");
    assert!(
        bytes / frames > 3 * 1514,
        "{frames} frames of {bytes} bytes: no super-frames"
    );
    let out = count(&st, &b.dev, "tx_frames") - count(&before, &b.dev, "tx_frames");
    assert!(
        out <= frames + 100,
        "b got {out} frames for {frames}: split on the way"
    );
    assert_eq!(count(&st, &a.dev, "dropped.malformed_gso"), 0);
    assert_eq!(count(&st, &b.dev, "dropped.write"), 0);
}

/// A persistent tap made beforehand without vnet_hdr, attached as a port: GSO frames from a
/// vnet_hdr port reach it split into valid segments (TCP byte for byte both ways, a UDP
/// datagram with a partial checksum, a UDP GSO send), the receiving kernel checking every
/// checksum.
#[test]
fn a_port_without_vnet_hdr_gets_valid_segments() {
    let Some((first, ())) = common::privileged_ns() else {
        return;
    };
    let plain_ns = TestNs::new();
    let plain_dev = unique("pl");
    ip_ok(
        &plain_ns.name,
        &["tuntap", "add", "dev", &plain_dev, "mode", "tap"],
    );
    let a = Host {
        ns: first,
        dev: unique("p0"),
        n: 1,
    };
    let d = Host {
        ns: plain_ns,
        dev: plain_dev,
        n: 2,
    };
    let opts = Options::new(&unique("br"), vec![a.spec(), d.spec()]);
    let lab = Lab::start(vec![a, d], Vec::new(), None, opts);
    let [a, d] = &lab.hosts[..] else {
        unreachable!()
    };
    // Attached as it is: the kernel still has it without vnet_hdr, and so must br.
    let info = &ip_link(Some(d.name()), &d.dev).unwrap()["linkinfo"]["info_data"];
    assert_eq!(info["vnet_hdr"], false, "{info}");
    let st = lab.status();
    assert_eq!(
        port_status(&st, &d.dev)["vnet_hdr"],
        false,
        "br takes a tap without vnet_hdr for one with: {st}"
    );
    assert_eq!(port_status(&st, &d.dev)["created"], false, "{st}");
    assert_eq!(port_status(&st, &a.dev)["vnet_hdr"], true, "{st}");
    udp_reaches(a, d, false);
    udp_reaches(d, a, true);

    let before = lab.status();
    tcp_stream(a, d, 8 << 20);
    let st = lab.status();
    let frames = count(&st, &a.dev, "rx_frames") - count(&before, &a.dev, "rx_frames");
    let bytes = count(&st, &a.dev, "rx_bytes") - count(&before, &a.dev, "rx_bytes");
    let segs = count(&st, &d.dev, "tx_frames") - count(&before, &d.dev, "tx_frames");
    eprintln!("no vnet_hdr: {bytes} bytes in {frames} frames from a, {segs} segments to d");
    assert!(bytes / frames > 3 * 1514, "super-frames from a");
    assert!(segs >= (8 << 20) / 1448, "{segs} segments");
    assert_eq!(count(&st, &a.dev, "dropped.malformed_gso"), 0, "{st}");
    // The other way: d's stack segments, a gets plain frames.
    tcp_stream(d, a, 1 << 20);

    // UDP with a checksum left to offload, and a UDP GSO send of 8 segments.
    let rx = bind_udp(&d.ns.ns, SocketAddr::new(d.v4().into(), 0));
    rx.set_read_timeout(Some(ms(500))).unwrap();
    let to = rx.local_addr().unwrap();
    let tx = bind_udp(&a.ns.ns, SocketAddr::new(a.v4().into(), 0));
    let big: Vec<u8> = (0..1400).map(pattern).collect();
    tx.send_to(&big, to).unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, _) = rx.recv_from(&mut buf).expect("a checksummed datagram");
    assert_eq!(&buf[..n], &big[..]);
    assert!(setsockopt_int_udp(&tx, 1000), "UDP_SEGMENT");
    let gso: Vec<u8> = (0..8000).map(|i| pattern(i + 7)).collect();
    tx.send_to(&gso, to).unwrap();
    for k in 0..8 {
        let (n, _) = rx
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("UDP segment {k}: {e}"));
        assert_eq!(&buf[..n], &gso[k * 1000..(k + 1) * 1000], "segment {k}");
    }
    let st = lab.status();
    assert_eq!(count(&st, &a.dev, "dropped.malformed_gso"), 0, "{st}");
    assert_eq!(count(&st, &d.dev, "dropped.write"), 0, "{st}");
}

fn setsockopt_int_udp(s: &UdpSocket, segment: libc::c_int) -> bool {
    // SAFETY: an int option on a socket we own.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_UDP,
            UDP_SEGMENT,
            (&segment as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// A port deleted from outside: the bridge goes on without it (alive false, its entries
/// flushed). A port moved to another namespace keeps working through its fd, and is removed
/// there when the bridge stops.
#[test]
fn a_port_deleted_from_outside_or_moved_to_another_namespace() {
    deleted_and_moved(false);
}

/// The same with `--one-thread`: one poll over every port.
#[test]
fn one_thread_drops_a_deleted_port_and_follows_a_moved_one() {
    deleted_and_moved(true);
}

fn deleted_and_moved(one_thread: bool) {
    let Some(mut lab) = Lab::simple(4, |o| o.one_thread = one_thread) else {
        return;
    };
    let elsewhere = TestNs::new();
    {
        let [a, b, c, d] = &lab.hosts[..] else {
            unreachable!()
        };
        let mc = c.mac();
        for p in [b, c, d] {
            udp_reaches(a, p, false);
            udp_reaches(p, a, false);
        }
        let st = lab.status();
        assert_eq!(fdb_port(&st, mc).as_deref(), Some(c.dev.as_str()), "{st}");

        ip_ok(c.name(), &["link", "del", &c.dev]);
        wait_for("c's port dropped", secs(3), || {
            port_status(&lab.status(), &c.dev)["alive"] == false
        });
        let st = lab.status();
        assert_eq!(count(&st, &c.dev, "entries"), 0, "{st}");
        assert!(
            st["fdb"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["port"] != c.dev.as_str()),
            "c's entries flushed: {st}"
        );
        // The others go on, flooding included.
        udp_reaches(a, b, false);
        udp_reaches(b, a, true);
        let m = marker("gone");
        let mut rb = b.raw();
        let frame = eth(BROADCAST, a.mac(), TEST_TYPE, &m);
        assert!(a.raw().send(&frame));
        once(&mut rb, &m, &frame);

        ip_ok(d.name(), &["link", "set", &d.dev, "netns", &elsewhere.name]);
    }
    // d's tap, with d's addresses, in the other namespace.
    let d = lab.hosts.pop().unwrap();
    let moved = Host {
        ns: elsewhere,
        dev: d.dev.clone(),
        n: d.n,
    };
    lab.extra.push(d.ns);
    moved.configure();
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    for v6 in [false, true] {
        udp_reaches(a, &moved, v6);
        udp_reaches(&moved, b, v6);
    }
    let st = lab.status();
    assert_eq!(port_status(&st, &moved.dev)["alive"], true, "{st}");
    assert_eq!(
        fdb_port(&st, moved.mac()).as_deref(),
        Some(moved.dev.as_str())
    );
    // Down: every port it created is gone, wherever it is now.
    let (a_name, a_dev) = (a.name().to_string(), a.dev.clone());
    lab.bridge.take().unwrap().down();
    assert!(
        ip_link(Some(&moved.ns.name), &moved.dev).is_none(),
        "moved port left"
    );
    assert!(ip_link(Some(&a_name), &a_dev).is_none(), "a's port left");
    drop(moved);
}
