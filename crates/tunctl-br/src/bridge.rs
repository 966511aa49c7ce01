//! A running bridge: tap ports (each in its own namespace if asked), one thread per port
//! reading its frames and writing each to where the table says, a housekeeping thread
//! (ageing sweep, the control socket), counters per port and per cause.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tunctl::offload::{gso_split, VirtioNetHdr, MAX_SEGMENTS};
use tunctl::{Device, Error, ErrorKind, Link, Namespace, Offload};

use crate::fdb::{Fdb, Learned};
use crate::frame::{self, Refusal};

/// A line on standard error that never panics (a closed pipe must not take a port down).
fn say(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{args}");
}

/// How long a port's read waits before it looks at the stop flag.
const TICK: Duration = Duration::from_millis(100);
/// The largest frame read: a 64 KiB GSO frame and its Ethernet header.
const FRAME_ROOM: usize = 65536 + 64;

/// A port to make or attach: a tap's name, and the namespace it is in (or is born in).
#[derive(Debug, Clone)]
pub struct PortSpec {
    /// The tap's name.
    pub name: String,
    /// Its namespace.
    pub namespace: Namespace,
}

impl std::str::FromStr for PortSpec {
    type Err = Error;

    /// `NAME` or `NAME@NS`, NS a name under /run/netns or a path.
    fn from_str(s: &str) -> Result<PortSpec, Error> {
        let (name, ns) = match s.split_once('@') {
            Some((n, ns)) => (n, Namespace::from_arg(ns)?),
            None => (s, Namespace::current()),
        };
        tunctl::name::validate(name, false)?;
        Ok(PortSpec {
            name: name.to_string(),
            namespace: ns,
        })
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// The bridge's name: its control socket is `/run/tunctl/br/NAME.sock`.
    pub name: String,
    /// The ports, at least two.
    pub ports: Vec<PortSpec>,
    /// The port (by name, one of `ports`) to enslave to `master`, if any.
    pub uplink: Option<String>,
    /// A Linux bridge, and its namespace, to enslave the uplink to (`ip link set UPLINK
    /// master BR`); released when the bridge stops.
    pub master: Option<(String, Namespace)>,
    /// How long an idle address stays learned (the Linux bridge's 300 s by default);
    /// zero floods every frame (the Erlang original's hub).
    pub ageing: Duration,
    /// The most addresses learned (the table's capacity).
    pub max_macs: usize,
    /// Print every frame to standard error (the Erlang original logged each one).
    pub trace: bool,
    /// One thread polling every port, instead of one thread per port.
    pub one_thread: bool,
}

impl Options {
    /// Defaults: ageing 300 s, 8192 addresses, no trace, no uplink.
    pub fn new(name: &str, ports: Vec<PortSpec>) -> Options {
        Options {
            name: name.to_string(),
            ports,
            uplink: None,
            master: None,
            ageing: Duration::from_secs(300),
            max_macs: 8192,
            trace: false,
            one_thread: false,
        }
    }
}

/// Per-port counters (ingress figures count frames read from the port).
#[derive(Debug, Default)]
struct PortStats {
    rx_frames: AtomicU64,
    rx_bytes: AtomicU64,
    tx_frames: AtomicU64,
    tx_bytes: AtomicU64,
    forwarded: AtomicU64,
    flooded: AtomicU64,
    drop_runt: AtomicU64,
    drop_invalid_source: AtomicU64,
    drop_link_local: AtomicU64,
    drop_oversize: AtomicU64,
    drop_same_port: AtomicU64,
    drop_write: AtomicU64,
    drop_malformed_gso: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// One port.
struct Port {
    name: String,
    namespace: String,
    device: Device,
    vnet: bool,
    /// Made by the bridge (removed when it stops), not attached.
    created: bool,
    alive: AtomicBool,
    /// Largest frame without GSO: the MTU plus the Ethernet header and two VLAN tags.
    max_frame: usize,
    stats: PortStats,
    /// The Linux bridge it was enslaved to (the uplink), to release.
    master: Option<Link>,
}

struct Shared {
    name: String,
    ports: Vec<Port>,
    fdb: Mutex<Fdb>,
    uplink: Option<usize>,
    ageing: Duration,
    start: Instant,
    stop: AtomicBool,
    /// Set after the ports are gone: the housekeeping thread (and with it the control
    /// socket, which `br down` waits on) ends last.
    stop_house: AtomicBool,
    trace: bool,
}

impl Shared {
    fn fdb(&self) -> MutexGuard<'_, Fdb> {
        self.fdb.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// A port is gone (deleted from outside): no more frames to or from it, its addresses
    /// forgotten.
    fn lose(&self, i: usize) {
        if self.ports[i].alive.swap(false, Ordering::AcqRel) {
            self.fdb().flush_port(i);
            say(format_args!(
                "br {}: port {} is gone; its addresses are flushed",
                self.name, self.ports[i].name
            ));
        }
    }
}

/// A running bridge. Dropping it (or [`down`](Bridge::down)) stops it, removes the ports it
/// created (in every namespace) and releases the uplink.
pub struct Bridge {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// The last of `threads` is the housekeeping one.
    house: bool,
    stopped: bool,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("name", &self.shared.name)
            .finish()
    }
}

/// The offloads a port asks for: the kernel then hands over GSO frames, which cross the
/// bridge whole.
const PORT_OFFLOAD: Offload = Offload::TSO4
    .union(Offload::TSO6)
    .union(Offload::TSO_ECN)
    .union(Offload::USO4)
    .union(Offload::USO6);

/// A namespace as `NAME@NS` takes it: its name, its path, or empty for the current one.
fn ns_label(ns: &Namespace) -> String {
    match ns {
        Namespace::Current => String::new(),
        Namespace::Named(name) => name.clone(),
        Namespace::Path(path) => path.display().to_string(),
    }
}

fn open_port(spec: &PortSpec) -> Result<Port, Error> {
    let existed = Link::by_name(&spec.namespace, &spec.name).is_ok();
    let plain = || {
        Device::builder()
            .tap()
            .name(&spec.name)
            .namespace(spec.namespace.clone())
    };
    let device = match plain().offload(PORT_OFFLOAD).create() {
        // A persistent tap made without vnet_hdr: used as it is (its frames get split).
        Err(e) if e.kind() == ErrorKind::FlagMismatch => plain().create()?,
        other => other?,
    };
    if existed && !device.is_persistent().unwrap_or(false) {
        return Err(Error::from_kind(
            ErrorKind::Busy,
            "br port",
            "the name belongs to a device in use that is not a persistent tap",
        )
        .with_subject(spec.name.clone()));
    }
    let link = device.link()?;
    link.up()?;
    let mtu = link.mtu()? as usize;
    Ok(Port {
        name: device.name().to_string(),
        namespace: ns_label(&spec.namespace),
        vnet: device
            .flags()
            .is_ok_and(|f| f.contains(tunctl::Flags::VNET_HDR)),
        created: !existed,
        alive: AtomicBool::new(true),
        max_frame: mtu + 22,
        stats: PortStats::default(),
        master: None,
        device,
    })
}

impl Bridge {
    /// Creates (or attaches) the ports, enslaves the uplink, and starts forwarding.
    ///
    /// # Errors
    ///
    /// Fewer than two ports, a port named twice, an uplink that is not a port or without a
    /// master (or the reverse), a port's or the master's error; nothing is left behind.
    pub fn up(opts: Options) -> Result<Bridge, Error> {
        let bad = |why: String| Error::from_kind(ErrorKind::InvalidInput, "br up", why);
        tunctl::name::validate(&opts.name, false)
            .map_err(|e| bad(format!("bridge name: {}", e.detail())))?;
        // One bridge per name: its control socket is how `show` and `down` find it.
        let control = match crate::control::Socket::bind(&opts.name) {
            Ok(c) => Some(c),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(Error::from_kind(
                    ErrorKind::AlreadyExists,
                    "br up",
                    format!("a bridge named {} runs already", opts.name),
                ))
            }
            // Not root: no socket, the bridge runs all the same.
            Err(_) => None,
        };
        if opts.ports.len() < 2 {
            return Err(bad("a bridge needs at least two ports".into()));
        }
        for (i, p) in opts.ports.iter().enumerate() {
            if opts.ports[..i]
                .iter()
                .any(|q| q.name == p.name && q.namespace.describe() == p.namespace.describe())
            {
                return Err(bad(format!("port {} given twice", p.name)));
            }
        }
        let uplink = match (&opts.uplink, &opts.master) {
            (None, None) => None,
            (Some(u), Some(_)) => {
                let named: Vec<usize> = (0..opts.ports.len())
                    .filter(|&i| &opts.ports[i].name == u)
                    .collect();
                match named[..] {
                    [i] => Some(i),
                    [] => return Err(bad(format!("the uplink {u} is not one of the ports"))),
                    _ => {
                        return Err(bad(format!(
                            "the uplink {u} names several ports (in different namespaces)"
                        )))
                    }
                }
            }
            (Some(_), None) => return Err(bad("--uplink needs --master".into())),
            (None, Some(_)) => return Err(bad("--master needs --uplink".into())),
        };
        let mut ports = Vec::with_capacity(opts.ports.len());
        for spec in &opts.ports {
            // A port that fails takes the ports made before it along (their Drop).
            ports.push(open_port(spec)?);
        }
        if let (Some(u), Some((master, ns))) = (uplink, &opts.master) {
            let bridge = Link::by_name(ns, master)
                .map_err(|e| e.add_detail(&format!("the master bridge {master}")))?;
            let link = Link::by_name(ns, &ports[u].name).map_err(|e| {
                e.add_detail(&format!(
                    "the uplink must be in the master's namespace ({})",
                    ns.describe()
                ))
            })?;
            link.set_master(Some(bridge.index()))?;
            ports[u].master = Some(link);
        }
        let ageing_ms = opts.ageing.as_millis() as u64;
        let shared = Arc::new(Shared {
            name: opts.name.clone(),
            fdb: Mutex::new(Fdb::new(opts.max_macs, ageing_ms, ports.len(), uplink)),
            ports,
            uplink,
            ageing: opts.ageing,
            start: Instant::now(),
            stop: AtomicBool::new(false),
            stop_house: AtomicBool::new(false),
            trace: opts.trace,
        });
        let mut bridge = Bridge {
            shared: Arc::clone(&shared),
            threads: Vec::new(),
            house: false,
            stopped: false,
        };
        if opts.one_thread {
            let s = Arc::clone(&shared);
            let t = std::thread::Builder::new()
                .name("br-ports".into())
                .spawn(move || event_loop(&s))
                .map_err(Error::from)?;
            bridge.threads.push(t);
        } else {
            for i in 0..shared.ports.len() {
                let s = Arc::clone(&shared);
                let t = std::thread::Builder::new()
                    .name(format!("br-{}", shared.ports[i].name))
                    .spawn(move || port_loop(&s, i))
                    .map_err(Error::from)?;
                bridge.threads.push(t);
            }
        }
        let s = Arc::clone(&shared);
        let t = std::thread::Builder::new()
            .name("br-house".into())
            .spawn(move || housekeeping(&s, control))
            .map_err(Error::from)?;
        bridge.threads.push(t);
        bridge.house = true;
        Ok(bridge)
    }

    /// The bridge's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Where its control socket is (for `tunctl br show`).
    pub fn control_path(&self) -> PathBuf {
        crate::control::socket_path(&self.shared.name)
    }

    /// The state as JSON: ports with their namespaces and counters, the table.
    pub fn status(&self) -> serde_json::Value {
        status(&self.shared)
    }

    /// Stops forwarding, removes the ports it created and releases the uplink.
    pub fn down(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        self.shared.stop.store(true, Ordering::Release);
        // The port threads (all but the last, the housekeeping one), then the ports, then
        // housekeeping: the control socket goes last, once the ports are gone.
        let house = if self.house { self.threads.pop() } else { None };
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for p in &self.shared.ports {
            if let Some(link) = &p.master {
                let _ = link.set_master(None);
            }
            if p.created {
                let _ = p.device.destroy();
            }
        }
        self.shared.stop_house.store(true, Ordering::Release);
        if let Some(t) = house {
            let _ = t.join();
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The state as JSON.
fn status(s: &Shared) -> serde_json::Value {
    let now = s.now();
    let fdb = s.fdb();
    let figures = fdb.figures().to_vec();
    let entries = fdb.entries(now);
    let (len, cap) = (fdb.len(), fdb.capacity());
    drop(fdb);
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let ports: Vec<serde_json::Value> = s
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let f = figures.get(i).copied().unwrap_or_default();
            let st = &p.stats;
            serde_json::json!({
                "name": p.name,
                "namespace": p.namespace,
                "vnet_hdr": p.vnet,
                "alive": p.alive.load(Ordering::Relaxed),
                "uplink": s.uplink == Some(i),
                "created": p.created,
                "rx_frames": g(&st.rx_frames),
                "rx_bytes": g(&st.rx_bytes),
                "tx_frames": g(&st.tx_frames),
                "tx_bytes": g(&st.tx_bytes),
                "forwarded": g(&st.forwarded),
                "flooded": g(&st.flooded),
                "entries": f.entries,
                "learned": f.learned,
                "moved": f.moved,
                "aged": f.aged,
                "evicted": f.evicted,
                "dropped": {
                    "runt": g(&st.drop_runt),
                    "invalid_source": g(&st.drop_invalid_source),
                    "link_local": g(&st.drop_link_local),
                    "oversize": g(&st.drop_oversize),
                    "same_port": g(&st.drop_same_port),
                    "malformed_gso": g(&st.drop_malformed_gso),
                    "write": g(&st.drop_write),
                },
            })
        })
        .collect();
    let fdb: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "mac": e.mac.to_string(),
                "port": s.ports.get(e.port).map(|p| p.name.as_str()),
                "idle_ms": e.idle_ms,
            })
        })
        .collect();
    serde_json::json!({
        "name": s.name,
        "pid": std::process::id(),
        "ageing_s": s.ageing.as_secs_f64(),
        "flood": s.ageing.is_zero(),
        "max_macs": cap,
        "entries": len,
        "ports": ports,
        "fdb": fdb,
    })
}

/// Scratch for splitting a GSO frame for a port without vnet_hdr.
struct Split {
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
}

impl Split {
    fn new() -> Split {
        Split {
            bufs: (0..MAX_SEGMENTS).map(|_| vec![0u8; FRAME_ROOM]).collect(),
            sizes: vec![0; MAX_SEGMENTS],
        }
    }
}

/// Where a frame goes.
enum Out {
    One(usize),
    Flood,
}

/// One port's reader: read a frame, learn its source, forward or flood it.
fn port_loop(s: &Shared, i: usize) {
    let me = &s.ports[i];
    // [virtio-net header][frame]; a port without vnet_hdr reads after an empty header, so
    // every frame is handled the same way.
    let mut buf = vec![0u8; VirtioNetHdr::LEN + FRAME_ROOM];
    let mut split: Option<Split> = None;
    while !s.stop.load(Ordering::Acquire) && me.alive.load(Ordering::Acquire) {
        let start = if me.vnet { 0 } else { VirtioNetHdr::LEN };
        // A read first; the wait (a poll, with a timeout to see the stop flag) only when
        // nothing is queued: one system call per frame under load.
        let n = match me.device.recv_timeout(&mut buf[start..], TICK) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) if e.kind() == ErrorKind::Truncated => {
                add(&me.stats.drop_oversize, 1);
                continue;
            }
            Err(_) => {
                s.lose(i);
                break;
            }
        };
        handle(s, i, &mut buf, start + n, &mut split);
    }
}

/// One thread for every port: a poll over all of them, then each ready port drained (up to
/// 64 frames without waiting). One wake-up serves both directions of a flow.
fn event_loop(s: &Shared) {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut buf = vec![0u8; VirtioNetHdr::LEN + FRAME_ROOM];
    let mut split: Option<Split> = None;
    let mut live: Vec<usize> = Vec::with_capacity(s.ports.len());
    let timeout = Timespec {
        tv_sec: 0,
        tv_nsec: TICK.as_nanos() as _,
    };
    while !s.stop.load(Ordering::Acquire) {
        live.clear();
        live.extend((0..s.ports.len()).filter(|&i| s.ports[i].alive.load(Ordering::Acquire)));
        let mut fds: Vec<PollFd<'_>> = live
            .iter()
            .map(|&i| PollFd::new(&s.ports[i].device, PollFlags::IN))
            .collect();
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break,
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        for (k, &i) in live.iter().enumerate() {
            if !ready[k] {
                continue;
            }
            let me = &s.ports[i];
            for _ in 0..64 {
                let start = if me.vnet { 0 } else { VirtioNetHdr::LEN };
                match me.device.try_recv(&mut buf[start..]) {
                    Ok(Some(n)) => handle(s, i, &mut buf, start + n, &mut split),
                    Ok(None) => break,
                    Err(e) if e.kind() == ErrorKind::Truncated => {
                        add(&me.stats.drop_oversize, 1);
                    }
                    Err(_) => {
                        s.lose(i);
                        break;
                    }
                }
            }
        }
    }
}

/// Handles the frame read from port `i` into `buf[..end]` (a virtio-net header first,
/// zeroed for a port without vnet_hdr): learn, then forward or flood.
fn handle(s: &Shared, i: usize, buf: &mut [u8], end: usize, split: &mut Option<Split>) {
    let me = &s.ports[i];
    let hdr_len = VirtioNetHdr::LEN;
    if !me.vnet {
        buf[..hdr_len].fill(0);
    }
    if end < hdr_len {
        add(&me.stats.drop_runt, 1);
        return;
    }
    add(&me.stats.rx_frames, 1);
    add(&me.stats.rx_bytes, (end - hdr_len) as u64);
    let Ok(vh) = VirtioNetHdr::parse(&buf[..hdr_len]) else {
        add(&me.stats.drop_malformed_gso, 1);
        return;
    };
    let gso = vh.gso_type != 0;
    let frame = &buf[hdr_len..end];
    let h = match frame::parse(frame) {
        Ok(h) => h,
        Err(why) => {
            add(
                match why {
                    Refusal::Runt => &me.stats.drop_runt,
                    Refusal::InvalidSource => &me.stats.drop_invalid_source,
                    Refusal::LinkLocal => &me.stats.drop_link_local,
                },
                1,
            );
            if s.trace {
                say(format_args!(
                    "br {}: {} in: {} bytes dropped: {why:?}",
                    s.name,
                    me.name,
                    frame.len()
                ));
            }
            return;
        }
    };
    if !gso && frame.len() > me.max_frame {
        add(&me.stats.drop_oversize, 1);
        return;
    }
    let now = s.now();
    let out = {
        let mut fdb = s.fdb();
        let _: Learned = fdb.learn(h.src, i, now);
        if h.dst.is_multicast() {
            Out::Flood
        } else {
            match fdb.lookup(&h.dst, now) {
                Some(d) => Out::One(d),
                None => Out::Flood,
            }
        }
    };
    if s.trace {
        let to = match out {
            Out::One(d) => s.ports.get(d).map_or("?".to_string(), |p| p.name.clone()),
            Out::Flood => "flood".to_string(),
        };
        say(format_args!(
            "br {}: {} in: {} > {} type {:04x} {} bytes{} -> {to}",
            s.name,
            me.name,
            h.src,
            h.dst,
            h.ethertype,
            frame.len(),
            if gso { " (GSO)" } else { "" }
        ));
    }
    match out {
        Out::One(d) if d == i => add(&me.stats.drop_same_port, 1),
        Out::One(d) => {
            if s.ports[d].alive.load(Ordering::Acquire) {
                add(&me.stats.forwarded, 1);
                if !deliver(s, d, &buf[..end], vh, h.len, split) {
                    add(&me.stats.drop_malformed_gso, 1);
                }
            } else {
                add(&me.stats.drop_write, 1);
            }
        }
        Out::Flood => {
            add(&me.stats.flooded, 1);
            let mut malformed = false;
            for d in 0..s.ports.len() {
                if d != i && s.ports[d].alive.load(Ordering::Acquire) {
                    malformed |= !deliver(s, d, &buf[..end], vh, h.len, split);
                }
            }
            if malformed {
                add(&me.stats.drop_malformed_gso, 1);
            }
        }
    }
}

/// Writes `whole` ([virtio-net header][frame]) to port `d`: as it is to a vnet_hdr port;
/// to a port without, the frame alone, a GSO frame split into segments and a partial
/// checksum completed. False if the frame's GSO header cannot be split (malformed).
fn deliver(
    s: &Shared,
    d: usize,
    whole: &[u8],
    vh: VirtioNetHdr,
    eth_len: usize,
    split: &mut Option<Split>,
) -> bool {
    let port = &s.ports[d];
    let hdr_len = VirtioNetHdr::LEN;
    let frame = &whole[hdr_len..];
    let needs_work = vh.gso_type != 0 || vh.flags & VirtioNetHdr::NEEDS_CSUM != 0;
    let result = if port.vnet {
        port.device.send(whole).map(|_| (1, frame.len()))
    } else if !needs_work {
        port.device.send(frame).map(|_| (1, frame.len()))
    } else {
        let sp = split.get_or_insert_with(Split::new);
        let mut h = vh;
        let Some(start) = usize::from(h.csum_start).checked_sub(eth_len) else {
            return false;
        };
        h.csum_start = start as u16;
        match gso_split(&frame[eth_len..], h, &mut sp.bufs, &mut sp.sizes, eth_len) {
            Ok(k) => {
                let mut sent = Ok((0, 0));
                for j in 0..k {
                    sp.bufs[j][..eth_len].copy_from_slice(&frame[..eth_len]);
                    let seg = &sp.bufs[j][..eth_len + sp.sizes[j]];
                    match port.device.send(seg) {
                        Ok(_) => {
                            if let Ok((f, b)) = &mut sent {
                                *f += 1;
                                *b += seg.len();
                            }
                        }
                        Err(e) => {
                            sent = Err(e);
                            break;
                        }
                    }
                }
                sent
            }
            Err(_) => return false,
        }
    };
    match result {
        Ok((frames, bytes)) => {
            add(&port.stats.tx_frames, frames);
            add(&port.stats.tx_bytes, bytes as u64);
        }
        Err(e) if matches!(e.kind(), ErrorKind::Gone | ErrorKind::Closed) => s.lose(d),
        Err(_) => add(&port.stats.drop_write, 1),
    }
    true
}

/// The ageing sweep (every quarter of the ageing time, at most every second) and the
/// control socket.
fn housekeeping(s: &Shared, control: Option<crate::control::Socket>) {
    let every = (s.ageing / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut last = Instant::now();
    while !s.stop_house.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50));
        if last.elapsed() >= every {
            last = Instant::now();
            let now = s.now();
            s.fdb().sweep(now);
        }
        if let Some(c) = &control {
            c.serve_pending(&|| status(s));
        }
    }
}
