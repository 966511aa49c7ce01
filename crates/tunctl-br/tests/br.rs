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
use tunctl::Namespace;
use tunctl_br::status::{PortStatus, Status};
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
const PACKET_VNET_HDR: libc::c_int = 15;

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

    fn status(&self) -> Status {
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

fn port<'a>(st: &'a Status, port: &str) -> &'a PortStatus {
    st.ports.iter().find(|p| p.name == port).unwrap_or_else(|| {
        let names: Vec<&str> = st.ports.iter().map(|p| p.name.as_str()).collect();
        panic!("port {port} in {names:?}")
    })
}

/// A status without its table (which may run to thousands of lines), for messages.
fn brief(st: &Status) -> String {
    let mut short = st.clone();
    short.fdb.clear();
    short.to_string()
}

/// The port the table has `mac` on (untagged).
fn fdb_port(st: &Status, mac: Mac) -> Option<String> {
    fdb_port_in(st, mac, 0)
}

/// The port the table has `mac` on in `vlan`.
fn fdb_port_in(st: &Status, mac: Mac, vlan: u16) -> Option<String> {
    st.fdb
        .iter()
        .find(|e| e.mac == mac && e.vlan == vlan)
        .map(|e| e.port.clone())
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
    /// With PACKET_VNET_HDR: a virtio-net header before every frame sent and received.
    vnet: bool,
}

impl Raw {
    fn open(ns: &Namespace, dev: &str) -> Raw {
        Raw::open_with(ns, dev, false)
    }

    /// With `vnet`, frames go and come with a virtio-net header in front (GSO frames
    /// whole).
    fn open_with(ns: &Namespace, dev: &str, vnet: bool) -> Raw {
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
                if vnet && !setsockopt_int(&fd, SOL_PACKET, PACKET_VNET_HDR, 1) {
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
            vnet,
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
                    let at = if self.vnet { 10 + 12 } else { 12 };
                    if aux.status & TP_STATUS_VLAN_VALID != 0 && frame.len() >= at {
                        let tpid = if aux.status & TP_STATUS_VLAN_TPID_VALID != 0 {
                            aux.vlan_tpid
                        } else {
                            0x8100
                        };
                        let mut tag = tpid.to_be_bytes().to_vec();
                        tag.extend_from_slice(&aux.vlan_tci.to_be_bytes());
                        frame.splice(at..at, tag);
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

/// A receiver in `b`: accepts one connection (within 30 s), checks the pattern byte for
/// byte as it comes, and returns how many bytes came (the receiving kernel drops a segment
/// with a bad checksum: a stream that completes had none).
fn pattern_sink(b: &Host) -> (SocketAddr, std::thread::JoinHandle<Result<usize, String>>) {
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
    (addr, server)
}

/// A connection from `a` to `addr`.
fn connect(a: &Host, addr: SocketAddr) -> TcpStream {
    let c =
        a.ns.ns
            .run(|| TcpStream::connect_timeout(&addr, secs(5)))
            .unwrap()
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    c.set_write_timeout(Some(secs(10))).unwrap();
    c
}

/// `bytes` of the pattern from offset `at` over `conn`, in 64 KiB writes.
fn send_pattern(mut conn: &TcpStream, mut at: usize, bytes: usize) {
    let end = at + bytes;
    let mut chunk = vec![0u8; 1 << 16];
    while at < end {
        let n = chunk.len().min(end - at);
        for (k, x) in chunk[..n].iter_mut().enumerate() {
            *x = pattern(at + k);
        }
        conn.write_all(&chunk[..n])
            .unwrap_or_else(|e| panic!("write after {at} bytes: {e}"));
        at += n;
    }
}

/// `bytes` of the pattern over TCP from `a` to `b`, checked byte for byte on arrival.
#[track_caller]
fn tcp_stream(a: &Host, b: &Host, bytes: usize) {
    let (addr, server) = pattern_sink(b);
    let c = connect(a, addr);
    send_pattern(&c, 0, bytes);
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
    opts.uplink = Some(uplink.parse().unwrap());
    opts.master = Some(format!("{lbr}@{}", up_ns.name).parse().unwrap());
    let up_name = up_ns.name.clone();
    let lab = Lab::start(hosts, vec![up_ns], None, opts);

    let link = ip_link(Some(&up_name), &uplink).expect("the uplink exists");
    assert_eq!(
        link["master"],
        lbr.as_str(),
        "the uplink is enslaved: {link}"
    );
    let st = lab.status();
    assert!(port(&st, &uplink).uplink);

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
    for p in &st.ports {
        assert!(p.alive, "{p:?}");
        assert!(p.rx_frames > 0, "{p:?}");
        assert!(p.tx_frames > 0, "{p:?}");
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
        |st: &Status, p: &str, f: fn(&PortStatus) -> u64| f(port(st, p)) - f(port(&before, p));
    wait_for("the forwarded frames counted", secs(2), || {
        let st = lab.status();
        delta(&st, &b.dev, |p| p.tx_frames) >= 200 && delta(&st, &a.dev, |p| p.forwarded) >= 200
    });
    let after = lab.status();
    // The stacks' own multicast (IPv6 router solicitations, MLD) may flood now and then.
    assert!(
        delta(&after, &c.dev, |p| p.tx_frames) < 20,
        "c got a's unicast: {after:?}"
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
        port(&after, &a.dev).flooded >= port(&before, &a.dev).flooded + 3,
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
    assert!(port(&lab.status(), &hosts[0].dev).learned >= 1);

    for (to, from) in [(1, 0), (0, 1)] {
        // x speaks from the new port: its one frame moves the entry.
        let before = lab.status();
        assert!(raws[to].send(&eth(BROADCAST, x, TEST_TYPE, &marker("mv"))));
        wait_for("x moved", secs(2), || is_on(to));
        let st = lab.status();
        assert_eq!(
            port(&st, &hosts[to].dev).moved,
            port(&before, &hosts[to].dev).moved + 1,
            "{st}"
        );
        assert_eq!(port(&st, &hosts[from].dev).aged, 0, "{st}");
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
    assert_eq!(lab.status().ageing_s, 2.0);
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
        port(&lab.status(), &a.dev).aged >= 1
    });
    // Unknown again: flooded.
    let before = lab.status();
    let m = marker("age2");
    let frame = eth(x, y, TEST_TYPE, &m);
    assert!(rb.send(&frame));
    once(&mut ra, &m, &frame);
    once(&mut rc, &m, &frame);
    assert!(port(&lab.status(), &b.dev).flooded > port(&before, &b.dev).flooded);
}

/// `n` frames from distinct locally administered sources (`base`, `base + 1`, ...) to `dst`,
/// sent out of `h`'s interface (a port) through `raw`, in chunks the bridge reads before the
/// next is sent (a tap's queue drops what does not fit); the sources.
fn many_sources(lab: &Lab, h: &Host, raw: &Raw, dst: Mac, base: u32, n: u32) -> Vec<Mac> {
    let mut frame = eth(dst, dst, TEST_TYPE, b"sources");
    let mut sources = Vec::with_capacity(n as usize);
    let start = port(&lab.status(), &h.dev).rx_frames;
    for i in 0..n {
        let b = (base + i).to_be_bytes();
        let src = Mac([0x06, 0x5e, b[0], b[1], b[2], b[3]]);
        frame[6..12].copy_from_slice(&src.0);
        assert!(raw.send(&frame), "send {i}");
        sources.push(src);
        if i % 100 == 99 || i + 1 == n {
            let want = start + u64::from(i) + 1;
            wait_for("the bridge to read a chunk", secs(5), || {
                port(&lab.status(), &h.dev).rx_frames >= want
            });
        }
    }
    sources
}

/// A million random source addresses from one port, with `--max-macs 4096` and four ports
/// (a share of 1024 each): another port's 3,000 addresses, learned while the table had
/// room, all stay (the flooder fills the free room, past its share, then recycles its
/// own); the table stays at its bound, traffic between the others and to them goes on, and
/// memory stays flat.
#[test]
fn a_mac_flood_keeps_the_table_bounded_memory_flat_and_others_in_place() {
    const MAX: usize = 4096;
    const FLOOD: usize = 1_000_000;
    const CHUNK: usize = 500;
    let Some(lab) = Lab::exclusive(4, |o| o.max_macs = MAX) else {
        return;
    };
    let [a, b, c, d] = &lab.hosts[..] else {
        unreachable!()
    };
    let (mb, mc) = (b.mac(), c.mac());
    udp_reaches(b, c, false);
    udp_reaches(c, b, false);
    udp_reaches(d, c, false);
    // b's 3,000: frames from them to b's own address (learned, never forwarded).
    let rb = b.raw();
    let kept = many_sources(&lab, b, &rb, mb, 0x0100_0000, 3000);
    wait_for("b's 3,000 learned", secs(10), || {
        port(&lab.status(), &b.dev).entries >= 3000
    });
    let ra = a.raw();
    let start = Instant::now();
    let deadline = start + secs(90);
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
            assert!(
                st.entries <= MAX,
                "{} entries after {sent} frames",
                st.entries
            );
            if port(&st, &a.dev).rx_frames + (2 * CHUNK as u64) >= sent || Instant::now() >= pace {
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
        assert!(Instant::now() < deadline, "{sent} frames in 90 s: too slow");
    }
    wait_for("the bridge to read the flood", secs(5), || {
        port(&lab.status(), &a.dev).rx_frames + 1000 >= sent
    });
    let elapsed = start.elapsed();
    udp_reaches(b, c, false);
    udp_reaches(c, b, false);
    let st = lab.status();
    let rss = vm_rss_kib();
    let warm = warm.unwrap();
    let (pa, pb) = (port(&st, &a.dev), port(&st, &b.dev));
    eprintln!(
        "MAC flood: {sent} frames sent in {elapsed:?}; port a: {} read, {} learned, {} evicted, {} entries of a share of {}; b: {} entries; table {} of {}; RSS {warm} KiB after 100k, {rss} KiB at the end",
        pa.rx_frames, pa.learned, pa.evicted, pa.entries, pa.share, pb.entries, st.entries, st.max_macs
    );
    assert!(sent >= FLOOD as u64 * 9 / 10, "{sent} sent");
    assert_eq!(st.max_macs, MAX);
    assert_eq!(st.entries, MAX, "the table is full, never over");
    assert_eq!(pa.share, MAX / 4);
    assert!(
        pa.learned >= sent * 9 / 10,
        "{} learned of {sent}",
        pa.learned
    );
    assert!(pa.evicted >= pa.learned - MAX as u64);
    // a filled the free room (past its share) and recycled its own from then on.
    assert!(pa.entries > pa.share, "{pa:?}");
    // The others' entries in place, never evicted: b's 3,000 every one.
    for p in [b, c, d] {
        assert_eq!(port(&st, &p.dev).evicted, 0, "{}", p.dev);
    }
    for mac in &kept {
        assert_eq!(
            fdb_port(&st, *mac).as_deref(),
            Some(b.dev.as_str()),
            "{mac}"
        );
    }
    assert_eq!(
        fdb_port(&st, mc).as_deref(),
        Some(c.dev.as_str()),
        "c's entry"
    );
    // Forwarded to b alone, never flooded to c.
    assert!(pa.forwarded >= sent * 9 / 10);
    assert!(port(&st, &c.dev).tx_frames < 10_000, "the flood reached c");
    // 1 M entries would be tens of MiB.
    assert!(
        rss <= warm + 4096,
        "RSS grew from {warm} to {rss} KiB during the flood"
    );
}

/// A port under its share gets its share, from the port furthest over its own: with
/// `--max-macs 1024` and four ports (256 each), a port that filled the whole table gives
/// 256 entries to a port that comes later, which then recycles its own; the other two lose
/// nothing.
#[test]
fn a_port_under_its_share_gets_it_from_the_one_furthest_over() {
    let Some(lab) = Lab::simple(4, |o| o.max_macs = 1024) else {
        return;
    };
    let [a, b, c, d] = &lab.hosts[..] else {
        unreachable!()
    };
    let (ma, mb) = (a.mac(), b.mac());
    // c and d each have their stack's address learned (and keep them).
    udp_reaches(c, d, false);
    udp_reaches(d, c, false);
    let st = lab.status();
    let held = st.entries;
    // a fills the table: every free entry is a's.
    let ra = a.raw();
    let sources = many_sources(&lab, a, &ra, ma, 0x0200_0000, 1024);
    wait_for("a's sources read", secs(10), || {
        port(&lab.status(), &a.dev).learned >= 1024
    });
    let st = lab.status();
    assert_eq!(st.entries, 1024, "{}", brief(&st));
    let a_had = port(&st, &a.dev).entries;
    assert!(a_had + held >= 1024, "{}", brief(&st));
    // b comes along with 300 addresses: its share is 256. (Its stack's own address may be
    // learned already.)
    let (b_had, a_evicted) = (port(&st, &b.dev).entries, port(&st, &a.dev).evicted);
    let rb = b.raw();
    let b_sources = many_sources(&lab, b, &rb, mb, 0x0300_0000, 300);
    wait_for("b's sources read", secs(10), || {
        port(&lab.status(), &b.dev).learned >= 300
    });
    let st = lab.status();
    let (pa, pb) = (port(&st, &a.dev), port(&st, &b.dev));
    assert_eq!(pb.share, 256, "{}", brief(&st));
    assert_eq!(pb.entries, 256, "b got its share: {}", brief(&st));
    assert_eq!(
        pb.evicted as usize,
        b_had + 300 - 256,
        "then recycled its own: {}",
        brief(&st)
    );
    assert_eq!(
        (pa.evicted - a_evicted) as usize,
        256 - b_had,
        "taken from a, the port furthest over: {}",
        brief(&st)
    );
    for p in [c, d] {
        assert_eq!(port(&st, &p.dev).evicted, 0, "{}", p.dev);
    }
    assert_eq!(
        fdb_port(&st, c.mac()).as_deref(),
        Some(c.dev.as_str()),
        "c's entry"
    );
    // What b kept are its latest addresses; what a lost are its oldest.
    assert!(b_sources[300 - 256 + b_had..]
        .iter()
        .all(|m| fdb_port(&st, *m).as_deref() == Some(b.dev.as_str())));
    assert_eq!(fdb_port(&st, sources[0]), None, "a's oldest went first");
    assert_eq!(
        fdb_port(&st, sources[1023]).as_deref(),
        Some(a.dev.as_str())
    );
}

/// Frames with a zero or multicast source and frames to an IEEE link-local group other
/// than STP's reach no other port, are counted by cause, and teach the table nothing. An
/// STP BPDU (to 01:80:C2:00:00:00) is forwarded to every other port, as by a Linux bridge
/// with STP off.
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
    let delta =
        |st: &Status, f: fn(&PortStatus) -> u64| f(port(st, &a.dev)) - f(port(&before, &a.dev));
    wait_for("the drops counted", secs(3), || {
        let st = lab.status();
        delta(&st, |p| p.dropped.invalid_source) >= 100
            && delta(&st, |p| p.dropped.link_local) >= 40
    });
    std::thread::sleep(ms(100));
    let st = lab.status();
    assert_eq!(delta(&st, |p| p.dropped.invalid_source), 100, "{st}");
    assert_eq!(delta(&st, |p| p.dropped.link_local), 40, "{st}");
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
    assert_eq!(delta(&st, |p| p.forwarded), 0, "{st}");
    // A configuration BPDU (802.3 length, LLC 42 42 03): to every other port, once.
    let stp: Mac = "01:80:c2:00:00:00".parse().unwrap();
    let mut bpdu = vec![0x42, 0x42, 0x03, 0, 0, 0, 0];
    let m = marker("bpdu");
    bpdu.extend_from_slice(&m);
    let frame = eth(stp, ma, (bpdu.len()) as u16, &bpdu);
    assert!(ra.send(&frame));
    once(&mut rb, &m, &frame);
    once(&mut rc, &m, &frame);
    assert_eq!(
        port(&lab.status(), &a.dev).dropped.link_local,
        port(&st, &a.dev).dropped.link_local
    );
}

/// A loop through br: two of its ports enslaved to one Linux bridge with STP on. br runs no
/// STP but forwards BPDUs, so the Linux bridge hears its own BPDUs come back on the other
/// port and blocks one of the two: the loop is broken (were BPDUs dropped, both ports
/// would go on to forwarding and the loop would stay).
#[test]
fn a_loop_through_br_is_broken_by_the_spanning_tree_around_it() {
    let Some((lns, ())) = common::privileged_ns() else {
        return;
    };
    let other = TestNs::new();
    let lb = unique("lb");
    // Forward delay 2 s, hello 1 s (in hundredths of a second).
    ip_ok(
        &lns.name,
        &[
            "link",
            "add",
            &lb,
            "type",
            "bridge",
            "stp_state",
            "1",
            "forward_delay",
            "200",
            "hello_time",
            "100",
        ],
    );
    let (l1, l2, p3) = (unique("l1"), unique("l2"), unique("p3"));
    let ports = vec![
        PortSpec {
            name: l1.clone(),
            namespace: lns.ns.clone(),
        },
        PortSpec {
            name: l2.clone(),
            namespace: lns.ns.clone(),
        },
        PortSpec {
            name: p3.clone(),
            namespace: other.ns.clone(),
        },
    ];
    let name = lns.name.clone();
    let lab = Lab::start(
        Vec::new(),
        vec![lns, other],
        None,
        Options::new(&unique("br"), ports),
    );
    for dev in [&l1, &l2] {
        ip_ok(&name, &["link", "set", dev, "master", &lb]);
        ip_ok(&name, &["link", "set", dev, "up"]);
    }
    ip_ok(&name, &["link", "set", &lb, "up"]);
    let state = |dev: &str| -> String {
        let v = ip_json(Some(&name), &["-d", "link", "show", "dev", dev]);
        v[0]["linkinfo"]["info_slave_data"]["state"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    };
    wait_for("one of the loop's two ports blocking", secs(10), || {
        state(&l1) == "blocking" || state(&l2) == "blocking"
    });
    let st = lab.status();
    assert!(
        port(&st, &l1).flooded + port(&st, &l2).flooded > 0,
        "the BPDUs went through br: {}",
        brief(&st)
    );
}

/// An Ethernet frame from `src` to `dst` under `tags` ((TPID, TCI), outer first), carrying
/// `m` and some padding.
fn tagged(dst: Mac, src: Mac, tags: &[(u16, u16)], m: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    let mut types: Vec<u16> = tags.iter().map(|t| t.0).collect();
    types.push(TEST_TYPE);
    for (i, (_, tci)) in tags.iter().enumerate() {
        payload.extend_from_slice(&tci.to_be_bytes());
        payload.extend_from_slice(&types[i + 1].to_be_bytes());
    }
    payload.extend_from_slice(m);
    payload.extend_from_slice(&[0x5a; 100]);
    eth(dst, src, types[0], &payload)
}

/// 802.1Q and 802.1ad (QinQ) tagged frames cross byte for byte: flooded while their
/// destination is unknown in their VLAN (the outer tag's), to its port alone once it has
/// spoken in that VLAN.
#[test]
fn vlan_tagged_frames_cross_untouched() {
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
    // Priority 5, VLAN 100; QinQ: service VLAN 200 over customer VLAN 300 (priority 3).
    let single = [(0x8100, (5 << 13) | 100)];
    let qinq = [(0x88a8, 200), (0x8100, (3 << 13) | 300)];
    for (tags, vlan) in [(&single[..], 100), (&qinq[..], 200)] {
        // b is known untagged, not in this VLAN: flooded.
        let m = marker("vl0");
        let frame = tagged(mb, ma, tags, &m);
        assert!(ra.send(&frame));
        once(&mut rb, &m, &frame);
        once(&mut rc, &m, &frame);
        // b speaks in the VLAN (a broadcast, flooded): learned there.
        let m = marker("vlb");
        let frame = tagged(BROADCAST, mb, tags, &m);
        assert!(rb.send(&frame));
        once(&mut ra, &m, &frame);
        once(&mut rc, &m, &frame);
        wait_for("b learned in its VLAN", secs(2), || {
            fdb_port_in(&lab.status(), mb, vlan).as_deref() == Some(b.dev.as_str())
        });
        let m = marker("vl");
        let frame = tagged(mb, ma, tags, &m);
        assert!(ra.send(&frame));
        once(&mut rb, &m, &frame);
        assert!(
            rc.frames_with(&m, 1, ms(200)).is_empty(),
            "learned: not to c"
        );
    }
    let st = lab.status();
    assert!(
        st.fdb_lines()
            .contains(&format!("{mb} dev {} vlan 100 master {}", b.dev, st.name)),
        "{:?}",
        st.fdb_lines()
    );
}

/// One address in two VLANs on two ports (a host's two VLAN interfaces behind two ports,
/// as two tagged flows): two entries that each stay on their port, no move back and forth,
/// and frames to the address in each VLAN reach its port alone.
#[test]
fn one_address_in_two_vlans_is_learned_per_vlan_and_does_not_flap() {
    let Some(lab) = Lab::simple(3, |_| {}) else {
        return;
    };
    let [a, b, c] = &lab.hosts[..] else {
        unreachable!()
    };
    let (ra, rb, rc) = (a.raw(), b.raw(), c.raw());
    let mc = c.mac();
    let x: Mac = "02:aa:bb:cc:00:10".parse().unwrap();
    let (v10, v20) = ([(0x8100, 10)], [(0x8100, 20)]);
    // Two flows, interleaved: x in VLAN 10 from a, x in VLAN 20 from b.
    for _ in 0..50 {
        assert!(ra.send(&tagged(mc, x, &v10, &marker("f10"))));
        assert!(rb.send(&tagged(mc, x, &v20, &marker("f20"))));
    }
    wait_for("x learned in both VLANs", secs(3), || {
        let st = lab.status();
        fdb_port_in(&st, x, 10).as_deref() == Some(a.dev.as_str())
            && fdb_port_in(&st, x, 20).as_deref() == Some(b.dev.as_str())
    });
    let st = lab.status();
    for h in [a, b] {
        assert_eq!(port(&st, &h.dev).moved, 0, "x flapped: {st}");
    }
    assert_eq!(fdb_port(&st, x), None, "x is not learned untagged");
    // From c, to x in each VLAN: on that VLAN's port alone.
    let mut raws = [ra, rb];
    for (tags, to) in [(&v10, 0), (&v20, 1)] {
        let m = marker("tox");
        let frame = tagged(x, mc, tags, &m);
        assert!(rc.send(&frame));
        once(&mut raws[to], &m, &frame);
        assert!(
            raws[1 - to].frames_with(&m, 1, ms(200)).is_empty(),
            "flooded"
        );
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
    assert!(port(&st, &a.dev).vnet_hdr);
    let before = lab.status();
    tcp_stream(a, b, 16 << 20);
    let st = lab.status();
    let frames = port(&st, &a.dev).rx_frames - port(&before, &a.dev).rx_frames;
    let bytes = port(&st, &a.dev).rx_bytes - port(&before, &a.dev).rx_bytes;
    eprintln!("TSO: {bytes} bytes in {frames} frames from a");
    assert!(bytes >= 16 << 20, "{st}");
    assert!(
        bytes / frames > 3 * 1514,
        "{frames} frames of {bytes} bytes: no super-frames"
    );
    let out = port(&st, &b.dev).tx_frames - port(&before, &b.dev).tx_frames;
    assert!(
        out <= frames + 100,
        "b got {out} frames for {frames}: split on the way"
    );
    assert_eq!(port(&st, &a.dev).dropped.malformed_gso, 0);
    assert_eq!(port(&st, &b.dev).dropped.write, 0);
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
    assert!(
        !port(&st, &d.dev).vnet_hdr,
        "br takes a tap without vnet_hdr for one with: {st}"
    );
    assert!(!port(&st, &d.dev).created, "{st}");
    assert!(port(&st, &a.dev).vnet_hdr, "{st}");
    udp_reaches(a, d, false);
    udp_reaches(d, a, true);

    let before = lab.status();
    tcp_stream(a, d, 8 << 20);
    let st = lab.status();
    let frames = port(&st, &a.dev).rx_frames - port(&before, &a.dev).rx_frames;
    let bytes = port(&st, &a.dev).rx_bytes - port(&before, &a.dev).rx_bytes;
    let segs = port(&st, &d.dev).tx_frames - port(&before, &d.dev).tx_frames;
    eprintln!("no vnet_hdr: {bytes} bytes in {frames} frames from a, {segs} segments to d");
    assert!(bytes / frames > 3 * 1514, "super-frames from a");
    assert!(segs >= (8 << 20) / 1448, "{segs} segments");
    assert_eq!(port(&st, &a.dev).dropped.malformed_gso, 0, "{st}");
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
    assert_eq!(port(&st, &a.dev).dropped.malformed_gso, 0, "{st}");
    assert_eq!(port(&st, &d.dev).dropped.write, 0, "{st}");
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
            !port(&lab.status(), &c.dev).alive
        });
        let st = lab.status();
        assert_eq!(port(&st, &c.dev).entries, 0, "{st}");
        assert!(
            st.fdb.iter().all(|e| e.port != c.dev),
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
    assert!(port(&st, &moved.dev).alive, "{st}");
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

/// A TCP/IPv4 frame from `src` (10.99.0.`from`) to `dst` (10.99.0.`to`) carrying `payload`,
/// behind a virtio-net header that makes it a GSO frame of `gso_size` segments (partial
/// checksum): what a TSO stack hands a vnet_hdr device.
fn tcp_gso_frame(src: Mac, dst: Mac, from: u8, to: u8, payload: &[u8], gso_size: u16) -> Vec<u8> {
    use tunctl::offload::{checksum, pseudo_header_sum, VirtioNetHdr};
    let (s, d) = ([10, 99, 0, from], [10, 99, 0, to]);
    let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0];
    ip[2..4].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&s);
    ip.extend_from_slice(&d);
    let sum = !checksum(&ip, 0);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&9u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&1_000_000u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x18; // ACK, PSH
    tcp[14..16].copy_from_slice(&1024u16.to_be_bytes());
    let addrs = [s, d].concat();
    let partial = pseudo_header_sum(&addrs, 6, 20 + payload.len());
    tcp[16..18].copy_from_slice(&partial.to_be_bytes());
    let hdr = VirtioNetHdr {
        flags: VirtioNetHdr::NEEDS_CSUM,
        gso_type: 1,
        hdr_len: 54,
        gso_size,
        csum_start: 34,
        csum_offset: 16,
    };
    let mut f = vec![0u8; VirtioNetHdr::LEN];
    hdr.write(&mut f).unwrap();
    f.extend_from_slice(&eth(
        dst,
        src,
        0x0800,
        &[ip, tcp, payload.to_vec()].concat(),
    ));
    f
}

/// Each port's MTU holds on the way out: with c (a vnet_hdr port) and d (a tap without
/// vnet_hdr) at MTU 1280, a 1400-byte frame from a reaches b (MTU 1500) and is dropped
/// and counted at c and d; a TCP GSO frame of 1448-byte segments reaches c cut to 1240
/// (its header says so, as an AF_PACKET capture with PACKET_VNET_HDR shows) and d in
/// segments of at most 1280 bytes, the data whole; a UDP GSO frame whose datagrams do not
/// fit is dropped at c and counted.
#[test]
fn each_ports_mtu_holds_on_the_way_out() {
    let Some((first, ())) = common::privileged_ns() else {
        return;
    };
    let (nb, nc, nd) = (TestNs::new(), TestNs::new(), TestNs::new());
    let plain = unique("pl");
    ip_ok(&nd.name, &["tuntap", "add", "dev", &plain, "mode", "tap"]);
    let hosts: Vec<Host> = [first, nb, nc]
        .into_iter()
        .enumerate()
        .map(|(i, ns)| Host {
            ns,
            dev: unique(&format!("p{i}")),
            n: i as u8 + 1,
        })
        .chain([Host {
            ns: nd,
            dev: plain,
            n: 4,
        }])
        .collect();
    let opts = Options::new(&unique("br"), hosts.iter().map(Host::spec).collect());
    let lab = Lab::start(hosts, Vec::new(), None, opts);
    let [a, b, c, d] = &lab.hosts[..] else {
        unreachable!()
    };
    for h in [c, d] {
        ip_ok(h.name(), &["link", "set", "dev", &h.dev, "mtu", "1280"]);
    }
    wait_for("br to see the MTUs", secs(3), || {
        let st = lab.status();
        port(&st, &c.dev).mtu == 1280 && port(&st, &d.dev).mtu == 1280
    });
    assert!(!port(&lab.status(), &d.dev).vnet_hdr);
    for h in [b, c, d] {
        udp_reaches(a, h, false);
        udp_reaches(h, a, false);
    }
    let (ma, mc, md) = (a.mac(), c.mac(), d.mac());
    let (ra, mut rb, mut rc, mut rd) = (a.raw(), b.raw(), c.raw(), d.raw());

    // Not GSO: 1400 bytes of payload is over c's and d's MTU, 1200 is not.
    let before = lab.status();
    let m = marker("big");
    let big = eth(
        BROADCAST,
        ma,
        TEST_TYPE,
        &[&m[..], &[0x33; 1400]].concat()[..1400],
    );
    assert!(ra.send(&big));
    once(&mut rb, &m, &big);
    assert!(
        rc.frames_with(&m, 1, ms(200)).is_empty(),
        "c got a frame over its MTU"
    );
    assert!(
        rd.frames_with(&m, 1, ms(100)).is_empty(),
        "d got a frame over its MTU"
    );
    let m = marker("fits");
    let fits = eth(
        BROADCAST,
        ma,
        TEST_TYPE,
        &[&m[..], &[0x33; 1200]].concat()[..1200],
    );
    assert!(ra.send(&fits));
    for r in [&mut rb, &mut rc, &mut rd] {
        once(r, &m, &fits);
    }
    let st = lab.status();
    for h in [c, d] {
        let (now, then) = (port(&st, &h.dev), port(&before, &h.dev));
        assert_eq!(
            now.dropped.egress_mtu - then.dropped.egress_mtu,
            1,
            "{}",
            brief(&st)
        );
    }
    assert_eq!(port(&st, &b.dev).dropped.egress_mtu, 0);
    assert_eq!(port(&st, &a.dev).dropped.oversize, 0);

    // TCP GSO, 8 segments of 1448: cut to 1240 (1280 - 40 bytes of IP and TCP headers).
    let payload: Vec<u8> = (0..8 * 1448).map(pattern).collect();
    let rva = Raw::open_with(&a.ns.ns, &a.dev, true);
    let mut rvc = Raw::open_with(&c.ns.ns, &c.dev, true);
    let gso = tcp_gso_frame(ma, mc, 1, 3, &payload, 1448);
    assert!(rva.send(&gso), "a GSO frame out of a");
    let got = rvc.frames_with(&payload[..64], 1, secs(2));
    assert_eq!(got.len(), 1, "the GSO frame reaches c whole");
    let hdr = tunctl::offload::VirtioNetHdr::parse(&got[0]).unwrap();
    assert_eq!(hdr.gso_size, 1240, "{hdr:?}");
    assert_eq!(&got[0][10 + 54..], &payload[..], "the data");
    // To d, without vnet_hdr: segments that fit.
    let gso = tcp_gso_frame(ma, md, 1, 4, &payload, 1448);
    assert!(rva.send(&gso));
    let deadline = Instant::now() + secs(3);
    let mut data = Vec::new();
    while data.len() < payload.len() && Instant::now() < deadline {
        let Some(f) = rd.recv(ms(500)) else {
            continue;
        };
        if f.len() > 54 && f[12..14] == [0x08, 0x00] && f[23] == 6 && f[36..38] == [0, 9] {
            assert!(f.len() <= 14 + 1280, "a {}-byte segment for d", f.len());
            data.extend_from_slice(&f[54..]);
        }
    }
    assert_eq!(data, payload, "d got every byte in segments");

    // UDP GSO of 1400-byte datagrams: they cannot be cut; dropped at c.
    let before = lab.status();
    let mut udp = tcp_gso_frame(ma, mc, 1, 3, &payload[..4 * 1400], 1400);
    // Into UDP: protocol 17, an 8-byte header (the rest of the 20 bytes is payload), USO.
    let (vh, ipo) = (10, 10 + 14);
    udp[ipo + 9] = 17;
    udp[ipo + 10..ipo + 12].copy_from_slice(&[0, 0]);
    let sum = tunctl::offload::internet_checksum(&udp[ipo..ipo + 20]);
    udp[ipo + 10..ipo + 12].copy_from_slice(&sum.to_be_bytes());
    let udp_len = (udp.len() - ipo - 20) as u16;
    udp[ipo + 24..ipo + 26].copy_from_slice(&udp_len.to_be_bytes());
    let partial = tunctl::offload::pseudo_header_sum(&udp[ipo + 12..ipo + 20], 17, udp_len.into());
    udp[ipo + 26..ipo + 28].copy_from_slice(&partial.to_be_bytes());
    udp[vh - 10 + 1] = 5;
    udp[vh - 10 + 8..vh - 10 + 10].copy_from_slice(&6u16.to_le_bytes());
    assert!(rva.send(&udp));
    wait_for("the UDP GSO frame dropped at c", secs(2), || {
        let st = lab.status();
        port(&st, &c.dev).dropped.egress_mtu > port(&before, &c.dev).dropped.egress_mtu
    });
    assert_eq!(port(&lab.status(), &a.dev).dropped.malformed_gso, 0);
}

/// Static entries: the gateway's address, given at start (`--static`), and b's, added
/// while running over what was learned. Frames from them on another port are dropped and
/// counted (`dropped.static_source`), never forwarded, and move nothing; frames to them go
/// to their port though they never spoke; they outlive the ageing time; the table and
/// `fdb_lines` mark them; removed, the address is learned as any other.
#[test]
fn static_entries_pin_an_address_to_its_port() {
    let gw: Mac = "02:aa:bb:cc:00:99".parse().unwrap();
    let Some(lab) = Lab::simple(3, |o| {
        o.ageing = secs(2);
        o.statics = vec![tunctl_br::StaticEntry {
            mac: gw,
            vlan: 0,
            port: tunctl_br::PortRef {
                name: o.ports[0].name.clone(),
                namespace: None,
            },
        }];
    }) else {
        return;
    };
    let [a, b, c] = &lab.hosts[..] else {
        unreachable!()
    };
    let (mb, mc) = (b.mac(), c.mac());
    let (mut ra, mut rb, rc) = (a.raw(), b.raw(), c.raw());
    udp_reaches(b, c, false);
    udp_reaches(c, b, false);
    let bridge = lab.bridge();
    let b_ref: tunctl_br::PortRef = b.dev.parse().unwrap();
    let done = bridge
        .add_static(mb, 0, &b_ref)
        .expect("b's address static");
    assert!(done.contains("replaced"), "{done}");
    let st = lab.status();
    assert_eq!(st.statics, 2, "{}", brief(&st));
    assert_eq!(port(&st, &a.dev).statics, 1);
    // c claims the gateway's address, and b's: dropped and counted, no move.
    let before = lab.status();
    for spoofed in [gw, mb] {
        let m = marker("spoof");
        assert!(rc.send(&eth(BROADCAST, spoofed, TEST_TYPE, &m)));
        assert!(
            ra.frames_with(&m, 1, ms(300)).is_empty(),
            "{spoofed} from c"
        );
        assert!(rb.frames_with(&m, 1, ms(50)).is_empty(), "{spoofed} from c");
    }
    let st = lab.status();
    assert_eq!(
        port(&st, &c.dev).dropped.static_source - port(&before, &c.dev).dropped.static_source,
        2
    );
    assert_eq!(fdb_port(&st, gw).as_deref(), Some(a.dev.as_str()));
    assert_eq!(fdb_port(&st, mb).as_deref(), Some(b.dev.as_str()));
    assert_eq!(port(&st, &c.dev).moved, 0);
    // To the gateway, which never spoke: a alone.
    let m = marker("togw");
    let frame = eth(gw, mc, TEST_TYPE, &m);
    assert!(rc.send(&frame));
    once(&mut ra, &m, &frame);
    assert!(rb.frames_with(&m, 1, ms(200)).is_empty(), "flooded");
    // Past the ageing time: still there (an address learned then is not).
    let x: Mac = "02:aa:bb:cc:00:98".parse().unwrap();
    assert!(rc.send(&eth(BROADCAST, x, TEST_TYPE, &marker("x"))));
    wait_for("x learned", secs(2), || {
        fdb_port(&lab.status(), x).is_some()
    });
    std::thread::sleep(secs(3));
    let st = lab.status();
    assert_eq!(fdb_port(&st, gw).as_deref(), Some(a.dev.as_str()));
    assert_eq!(fdb_port(&st, mb).as_deref(), Some(b.dev.as_str()));
    assert_eq!(fdb_port(&st, x), None, "x aged");
    let lines = st.fdb_lines();
    let want = format!("{gw} dev {} master {} static", a.dev, st.name);
    assert!(lines.contains(&want), "{lines:?}");
    // Bad ones refused, nothing changed.
    let multicast: Mac = "01:00:5e:00:00:01".parse().unwrap();
    assert!(bridge.add_static(multicast, 0, &b_ref).is_err());
    assert!(bridge.add_static(gw, 4095, &b_ref).is_err());
    let nowhere: tunctl_br::PortRef = "nosuchport".parse().unwrap();
    let e = bridge.add_static(gw, 0, &nowhere).unwrap_err();
    assert_eq!(e.kind(), tunctl::ErrorKind::NotFound, "{e}");
    assert_eq!(lab.status().statics, 2);
    // Removed: the address is learned where it shows up.
    bridge.remove_entry(gw, 0).expect("removed");
    assert!(bridge.remove_entry(gw, 0).is_err(), "removed twice");
    assert!(rc.send(&eth(BROADCAST, gw, TEST_TYPE, &marker("free"))));
    wait_for("the gateway's address learned on c", secs(2), || {
        fdb_port(&lab.status(), gw).as_deref() == Some(c.dev.as_str())
    });
}

/// Ports added and removed while the bridge runs, the others' TCP session going on
/// throughout: a new port (born in its namespace) forwards at once; a persistent tap made
/// beforehand is attached, and left in place when removed; a removed port's tap is deleted
/// and its entries flushed; a name can come back; two ports of one name in two namespaces
/// are told apart by NAME@NS.
#[test]
fn ports_come_and_go_while_it_runs() {
    ports_come_and_go(false);
}

/// The same with `--one-thread`.
#[test]
fn one_thread_takes_ports_that_come_and_go() {
    ports_come_and_go(true);
}

fn ports_come_and_go(one_thread: bool) {
    let Some(lab) = Lab::simple(2, |o| o.one_thread = one_thread) else {
        return;
    };
    let [a, b] = &lab.hosts[..] else {
        unreachable!()
    };
    let bridge = lab.bridge();
    udp_reaches(a, b, false);
    // A session between a and b, open across every change below.
    let (addr, server) = pattern_sink(b);
    let conn = connect(a, addr);
    let mut sent = 0;
    send_pattern(&conn, sent, 1 << 20);
    sent += 1 << 20;

    // c comes: a tap born in its namespace.
    let c = Host {
        ns: TestNs::new(),
        dev: unique("pc"),
        n: 3,
    };
    let done = bridge.add_port(&c.spec()).expect("port add");
    assert!(done.contains(&c.dev), "{done}");
    c.configure();
    assert!(ip_link(Some(c.name()), &c.dev).is_some());
    for h in [a, b] {
        udp_reaches(h, &c, false);
        udp_reaches(&c, h, true);
    }
    let st = lab.status();
    let names: Vec<&str> = st.ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, [a.dev.as_str(), b.dev.as_str(), c.dev.as_str()]);
    assert!(port(&st, &c.dev).created);
    let e = bridge.add_port(&c.spec()).unwrap_err();
    assert_eq!(e.kind(), tunctl::ErrorKind::AlreadyExists, "{e}");
    send_pattern(&conn, sent, 1 << 20);
    sent += 1 << 20;

    // d: a persistent tap made beforehand, attached; removed, it stays.
    let d = Host {
        ns: TestNs::new(),
        dev: unique("pd"),
        n: 4,
    };
    ip_ok(
        d.name(),
        &["tuntap", "add", "dev", &d.dev, "mode", "tap", "vnet_hdr"],
    );
    bridge.add_port(&d.spec()).expect("attach d");
    d.configure();
    udp_reaches(&d, a, false);
    assert!(!port(&lab.status(), &d.dev).created);
    bridge
        .remove_port(&d.dev.parse().unwrap())
        .expect("port del d");
    assert!(
        ip_link(Some(d.name()), &d.dev).is_some(),
        "an attached tap stays"
    );

    // c goes: its tap deleted, its entries flushed, the others go on.
    let mc = c.mac();
    bridge
        .remove_port(&c.dev.parse().unwrap())
        .expect("port del c");
    assert!(ip_link(Some(c.name()), &c.dev).is_none(), "c's tap deleted");
    let st = lab.status();
    assert!(st.ports.iter().all(|p| p.name != c.dev), "{}", brief(&st));
    assert_eq!(fdb_port(&st, mc), None, "c's entries flushed");
    let e = bridge.remove_port(&c.dev.parse().unwrap()).unwrap_err();
    assert_eq!(e.kind(), tunctl::ErrorKind::NotFound, "{e}");
    udp_reaches(a, b, false);
    send_pattern(&conn, sent, 1 << 20);
    sent += 1 << 20;

    // c comes back (the same name), and a twin of it in another namespace.
    bridge.add_port(&c.spec()).expect("c again");
    c.configure();
    udp_reaches(&c, a, false);
    let twin = Host {
        ns: TestNs::new(),
        dev: c.dev.clone(),
        n: 5,
    };
    bridge.add_port(&twin.spec()).expect("c's twin");
    twin.configure();
    udp_reaches(&twin, b, false);
    let lines = lab.status().fdb_lines();
    let twin_mac = twin.mac();
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "{twin_mac} dev {}@{} ",
            twin.dev,
            twin.name()
        ))),
        "{lines:?}"
    );
    let e = bridge.remove_port(&c.dev.parse().unwrap()).unwrap_err();
    assert_eq!(e.kind(), tunctl::ErrorKind::InvalidInput, "{e}");
    let twin_ref = format!("{}@{}", twin.dev, twin.name());
    bridge
        .remove_port(&twin_ref.parse().unwrap())
        .expect("the twin goes");
    assert!(ip_link(Some(twin.name()), &twin.dev).is_none());
    assert!(ip_link(Some(c.name()), &c.dev).is_some(), "c stays");
    udp_reaches(&c, b, false);

    send_pattern(&conn, sent, 1 << 20);
    sent += 1 << 20;
    conn.shutdown(Shutdown::Write).unwrap();
    assert_eq!(server.join().unwrap(), Ok(sent), "the session went on");
    // Down: c's tap (made at run time) goes too.
    let c_name = c.name().to_string();
    drop(lab);
    assert!(ip_link(Some(&c_name), &c.dev).is_none(), "c's tap left");
}

/// Clients of the control socket that connect and say nothing (ten at once, renewed as
/// they are cut off) delay neither `show` by more than a client's deadline nor the ageing
/// of the table.
#[test]
fn silent_control_clients_delay_neither_show_nor_ageing() {
    use std::os::unix::net::UnixStream;
    let Some(lab) = Lab::simple(2, |o| o.ageing = secs(1)) else {
        return;
    };
    let a = &lab.hosts[0];
    let name = lab.bridge().name().to_string();
    let path = lab.bridge().control_path();
    let x: Mac = "02:aa:bb:cc:00:21".parse().unwrap();
    assert!(a.raw().send(&eth(BROADCAST, x, TEST_TYPE, &marker("age"))));
    wait_for("x learned", secs(2), || {
        fdb_port(&lab.status(), x).is_some()
    });
    let learned = Instant::now();
    let silent: Vec<UnixStream> = (0..10)
        .map(|_| UnixStream::connect(&path).expect("connect"))
        .collect();
    let t = Instant::now();
    let st = tunctl_br::control::show(&name).expect("show answers");
    assert!(t.elapsed() < secs(3), "show took {:?}", t.elapsed());
    assert_eq!(st.name, name);
    // More silent clients as the first are cut off: the entry still ages on time.
    let mut more = Vec::new();
    let aged = loop {
        more.push(UnixStream::connect(&path).expect("connect"));
        if port(&lab.status(), &a.dev).aged >= 1 {
            break learned.elapsed();
        }
        assert!(learned.elapsed() < secs(5), "x not aged after 5 s");
        std::thread::sleep(ms(100));
    };
    assert!(aged < secs(3), "aged after {aged:?}");
    drop(silent);
}

/// `--queues 2`: each port a multi-queue tap with two queues (as `ip -d` sees it), each read
/// by a thread of its own; four TCP streams at once cross intact, in both thread modes.
#[test]
fn multi_queue_ports_carry_parallel_streams() {
    for one_thread in [false, true] {
        let Some(lab) = Lab::simple(2, |o| {
            o.queues = 2;
            o.one_thread = one_thread;
        }) else {
            return;
        };
        let [a, b] = &lab.hosts[..] else {
            unreachable!()
        };
        for h in [a, b] {
            let info = &ip_json(Some(h.name()), &["-d", "link", "show", "dev", &h.dev])[0]
                ["linkinfo"]["info_data"];
            assert_eq!(info["multi_queue"], true, "{info}");
            assert_eq!(info["numqueues"], 2, "{info}");
        }
        assert_eq!(port(&lab.status(), &a.dev).queues, 2);
        udp_reaches(a, b, false);
        udp_reaches(b, a, false);
        let streams: Vec<_> = (0..4)
            .map(|_| {
                let (addr, server) = pattern_sink(b);
                (connect(a, addr), server)
            })
            .collect();
        std::thread::scope(|s| {
            for (conn, _) in &streams {
                s.spawn(move || {
                    send_pattern(conn, 0, 4 << 20);
                    conn.shutdown(Shutdown::Write).unwrap();
                });
            }
        });
        for (_, server) in streams {
            assert_eq!(
                server.join().unwrap(),
                Ok(4 << 20),
                "one_thread {one_thread}"
            );
        }
    }
}
