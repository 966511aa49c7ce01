//! A running bridge: tap ports (each in its own namespace if asked) that come and go, one
//! thread per port (or one for all) reading frames and writing each where the table says
//! (the `datapath` module), a housekeeping thread (ageing sweep, the ports' MTUs), a control
//! thread (the socket), counters per port and per cause.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tunctl::{Device, Error, ErrorKind, Link, Offload};

use crate::control::{Answer, Peer, Reply, Request};
use crate::fdb::{Fdb, Key, StaticError};
use crate::frame::Mac;
use crate::spec::{ns_id, ns_label, same_ns, Master, PortRef, PortSpec, StaticEntry};
use crate::status::{Dropped, FdbEntry, PortStatus, Status};

/// A line on standard error that never panics (a closed pipe must not take a port down).
pub(crate) fn say(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{args}");
}

/// The most ports a bridge takes.
pub const MAX_PORTS: usize = 1024;

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// The bridge's name: its control socket is `/run/tunctl/br/NAME.sock`.
    pub name: String,
    /// The ports, at least one (more can be added while it runs).
    pub ports: Vec<PortSpec>,
    /// The port (one of `ports`) to enslave to `master`, if any.
    pub uplink: Option<PortRef>,
    /// The Linux bridge to enslave the uplink to (`ip link set UPLINK master BR`), in the
    /// uplink's namespace; released when the bridge stops.
    pub master: Option<Master>,
    /// The uplink's weight in the table's fair sharing (every other port weighs 1); `None`:
    /// as much as all the other ports together, so it may hold half the table.
    pub uplink_weight: Option<u32>,
    /// Static entries to add once the ports are up.
    pub statics: Vec<StaticEntry>,
    /// How long an idle address stays learned (the Linux bridge's 300 s by default);
    /// zero floods every frame (the Erlang original's hub).
    pub ageing: Duration,
    /// The most addresses learned (the table's capacity).
    pub max_macs: usize,
    /// Print every frame to standard error (the Erlang original logged each one).
    pub trace: bool,
    /// One thread polling every port, instead of one thread per port.
    pub one_thread: bool,
    /// Queues per port (1 to [`MAX_QUEUES`]): more make multi-queue taps, over which the
    /// kernel spreads flows by their hash, each queue read by a thread of its own.
    pub queues: usize,
}

/// The most queues a port takes.
pub const MAX_QUEUES: usize = 16;

impl Options {
    /// Defaults: ageing 300 s, 8192 addresses, no trace, no uplink, no static entry.
    pub fn new(name: &str, ports: Vec<PortSpec>) -> Options {
        Options {
            name: name.to_string(),
            ports,
            uplink: None,
            master: None,
            uplink_weight: None,
            statics: Vec::new(),
            ageing: Duration::from_secs(300),
            max_macs: 8192,
            trace: false,
            one_thread: false,
            queues: 1,
        }
    }
}

/// Per-port counters.
#[derive(Debug, Default)]
pub(crate) struct PortStats {
    pub(crate) rx_frames: AtomicU64,
    pub(crate) rx_bytes: AtomicU64,
    pub(crate) tx_frames: AtomicU64,
    pub(crate) tx_bytes: AtomicU64,
    pub(crate) forwarded: AtomicU64,
    pub(crate) flooded: AtomicU64,
    pub(crate) drop_runt: AtomicU64,
    pub(crate) drop_invalid_source: AtomicU64,
    pub(crate) drop_link_local: AtomicU64,
    pub(crate) drop_oversize: AtomicU64,
    pub(crate) drop_same_port: AtomicU64,
    pub(crate) drop_write: AtomicU64,
    pub(crate) drop_malformed_gso: AtomicU64,
    pub(crate) drop_static_source: AtomicU64,
    pub(crate) drop_egress_mtu: AtomicU64,
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// One port.
pub(crate) struct Port {
    /// Its number in the table (reused after it is removed).
    pub(crate) slot: usize,
    /// When it was added, for `show`'s order.
    seq: u64,
    pub(crate) name: String,
    /// Its namespace as given after `@`.
    namespace: String,
    /// What that namespace is (its file's device and inode).
    ns: Option<(u64, u64)>,
    pub(crate) device: Device,
    pub(crate) vnet: bool,
    /// Made by the bridge (removed when it stops or the port is), not attached.
    created: bool,
    /// False once deleted from outside, or removed.
    pub(crate) alive: AtomicBool,
    /// Its MTU (kept current by the housekeeping thread).
    pub(crate) mtu: AtomicU32,
    pub(crate) stats: PortStats,
    /// The Linux bridge it was enslaved to (the uplink), to release.
    master: Option<Link>,
}

impl Port {
    /// NAME, or NAME@NS (as `up` takes it).
    fn label(&self) -> String {
        if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}@{}", self.name, self.namespace)
        }
    }

    fn matches(&self, r: &PortRef) -> bool {
        self.name == r.name
            && r.namespace
                .as_ref()
                .is_none_or(|ns| match (ns_id(ns), self.ns) {
                    (Some(a), Some(b)) => a == b,
                    _ => ns_label(ns) == self.namespace,
                })
    }

    /// Stops using it: releases the uplink, deletes a tap the bridge made.
    fn close(&self) {
        if let Some(link) = &self.master {
            let _ = link.set_master(None);
        }
        if self.created {
            let _ = self.device.destroy();
        }
    }
}

/// The ports by slot, as the forwarding threads see them.
pub(crate) type Ports = Vec<Option<Arc<Port>>>;

/// A forwarding thread's copy of the port table, refreshed when it changes (one atomic
/// load per frame; no lock on the way of a frame).
pub(crate) struct View {
    pub(crate) ports: Arc<Ports>,
    version: u64,
}

impl View {
    pub(crate) fn new(s: &Shared) -> View {
        let version = s.version.load(Ordering::Acquire);
        View {
            ports: s.ports(),
            version,
        }
    }

    /// Whether the table changed since; if so, takes the new one.
    pub(crate) fn refresh(&mut self, s: &Shared) -> bool {
        let version = s.version.load(Ordering::Acquire);
        if version == self.version {
            return false;
        }
        self.ports = s.ports();
        self.version = version;
        true
    }
}

/// What port additions and removals share: one at a time.
struct Admin {
    /// The bridge is stopping: no port is added any more.
    closing: bool,
    /// The forwarding threads: one per port (slot), or one for all (`None`).
    threads: Vec<(Option<usize>, JoinHandle<()>)>,
    /// Ports added so far.
    added: u64,
}

pub(crate) struct Shared {
    pub(crate) name: String,
    table: Mutex<Arc<Ports>>,
    /// Bumped whenever `table` changes.
    version: AtomicU64,
    fdb: Mutex<Fdb>,
    admin: Mutex<Admin>,
    uplink_weight: Option<u32>,
    ageing: Duration,
    /// [`coarse_ms`] when the bridge started.
    start: u64,
    pub(crate) stop: AtomicBool,
    /// Set after the ports are gone: the housekeeping and control threads (and with them
    /// the control socket, which `br down` waits on) end last.
    stop_house: AtomicBool,
    pub(crate) trace: bool,
    one_thread: bool,
    /// Queues per port.
    queues: usize,
}

/// CLOCK_MONOTONIC_COARSE in milliseconds.
fn coarse_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    (t.tv_sec as u64) * 1000 + (t.tv_nsec as u64) / 1_000_000
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn fdb(&self) -> MutexGuard<'_, Fdb> {
        lock(&self.fdb)
    }

    /// Milliseconds since the bridge started, on the coarse monotonic clock (the tick's
    /// resolution is plenty for ageing; the precise clock cost 2% of a thread's CPU at a
    /// frame each).
    pub(crate) fn now(&self) -> u64 {
        coarse_ms().saturating_sub(self.start)
    }

    pub(crate) fn ports(&self) -> Arc<Ports> {
        Arc::clone(&lock(&self.table))
    }

    /// Publishes a new port table.
    fn publish(&self, ports: Ports) {
        *lock(&self.table) = Arc::new(ports);
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Gives every port still alive its weight in the table: 1, the uplink its own (by
    /// default as much as all the others). Under the table's lock, from the latest port
    /// table: every change of the ports ends with one.
    fn reweigh(&self, fdb: &mut Fdb) {
        let ports = self.ports();
        let alive: Vec<&Arc<Port>> = ports
            .iter()
            .flatten()
            .filter(|p| p.alive.load(Ordering::Acquire))
            .collect();
        let others = alive.len().saturating_sub(1).max(1) as u32;
        for p in &alive {
            let weight = if p.master.is_some() {
                self.uplink_weight.unwrap_or(others)
            } else {
                1
            };
            fdb.set_port(p.slot, weight);
        }
    }

    /// A port is gone (deleted from outside): no more frames to or from it, its addresses
    /// forgotten, its share given to the others.
    pub(crate) fn lose(&self, port: &Port) {
        if port.alive.swap(false, Ordering::AcqRel) {
            let mut fdb = self.fdb();
            fdb.remove_port(port.slot);
            self.reweigh(&mut fdb);
            drop(fdb);
            say(format_args!(
                "br {}: port {} is gone; its addresses are flushed",
                self.name,
                port.label()
            ));
        }
    }

    /// The one port `r` names, alive or not (`op` for errors).
    fn find(&self, ports: &Ports, r: &PortRef, op: &str) -> Result<Arc<Port>, Error> {
        let found: Vec<&Arc<Port>> = ports.iter().flatten().filter(|p| p.matches(r)).collect();
        match found[..] {
            [p] => Ok(Arc::clone(p)),
            [] => Err(Error::from_kind(
                ErrorKind::NotFound,
                op,
                format!("bridge {} has no port {r}", self.name),
            )),
            _ => Err(Error::from_kind(
                ErrorKind::InvalidInput,
                op,
                format!(
                    "{r} names several ports of bridge {} (in different namespaces): say which, NAME@NS",
                    self.name
                ),
            )),
        }
    }

    /// The state (the table copied under its lock, sorted after).
    pub(crate) fn status(&self) -> Status {
        let now = self.now();
        let ports = self.ports();
        let fdb = self.fdb();
        let figures = fdb.figures();
        let mut entries = fdb.entries(now);
        let (len, statics, cap) = (fdb.len(), fdb.statics(), fdb.capacity());
        drop(fdb);
        let mut listed: Vec<&Arc<Port>> = ports.iter().flatten().collect();
        listed.sort_by_key(|p| p.seq);
        // Slot -> position in `listed`, to sort the table by port as listed.
        let mut order = vec![usize::MAX; ports.len()];
        for (k, p) in listed.iter().enumerate() {
            order[p.slot] = k;
        }
        entries.retain(|e| order.get(e.port).is_some_and(|&k| k != usize::MAX));
        entries.sort_unstable_by_key(|e| (order[e.port], e.key.vlan, e.key.mac));
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let port_status = |p: &Arc<Port>| {
            let f = figures.get(p.slot).copied().unwrap_or_default();
            let st = &p.stats;
            PortStatus {
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                vnet_hdr: p.vnet,
                queues: p.device.queues().len(),
                alive: p.alive.load(Ordering::Relaxed),
                uplink: p.master.is_some(),
                created: p.created,
                mtu: p.mtu.load(Ordering::Relaxed),
                weight: f.weight,
                share: f.share,
                rx_frames: g(&st.rx_frames),
                rx_bytes: g(&st.rx_bytes),
                tx_frames: g(&st.tx_frames),
                tx_bytes: g(&st.tx_bytes),
                forwarded: g(&st.forwarded),
                flooded: g(&st.flooded),
                entries: f.entries,
                statics: f.statics,
                learned: f.learned,
                moved: f.moved,
                aged: f.aged,
                evicted: f.evicted,
                dropped: Dropped {
                    runt: g(&st.drop_runt),
                    invalid_source: g(&st.drop_invalid_source),
                    link_local: g(&st.drop_link_local),
                    oversize: g(&st.drop_oversize),
                    same_port: g(&st.drop_same_port),
                    malformed_gso: g(&st.drop_malformed_gso),
                    write: g(&st.drop_write),
                    static_source: g(&st.drop_static_source),
                    egress_mtu: g(&st.drop_egress_mtu),
                },
            }
        };
        Status {
            name: self.name.clone(),
            pid: std::process::id(),
            ageing_s: self.ageing.as_secs_f64(),
            flood: self.ageing.is_zero(),
            max_macs: cap,
            entries: len,
            statics,
            ports: listed.iter().map(|p| port_status(p)).collect(),
            fdb: entries
                .iter()
                .map(|e| {
                    let p = listed[order[e.port]];
                    FdbEntry {
                        mac: e.key.mac,
                        vlan: e.key.vlan,
                        port: p.name.clone(),
                        namespace: p.namespace.clone(),
                        idle_ms: e.idle_ms,
                        is_static: e.fixed,
                    }
                })
                .collect(),
        }
    }

    /// Makes (or attaches) a port and starts forwarding through it.
    fn add_port(self: &Arc<Self>, spec: &PortSpec) -> Result<String, Error> {
        let mut admin = lock(&self.admin);
        if admin.closing {
            return Err(Error::from_kind(
                ErrorKind::Closed,
                "br port add",
                "the bridge is stopping",
            ));
        }
        let ports = self.ports();
        let twin = ports.iter().flatten().find(|p| {
            p.name == spec.name
                && match (ns_id(&spec.namespace), p.ns) {
                    (Some(a), Some(b)) => a == b,
                    _ => ns_label(&spec.namespace) == p.namespace,
                }
        });
        // A port of that name that was deleted from outside is replaced; a live one is not.
        let stale = match twin {
            Some(p) if p.alive.load(Ordering::Acquire) => {
                return Err(Error::from_kind(
                    ErrorKind::AlreadyExists,
                    "br port add",
                    format!("{} is a port of bridge {} already", p.label(), self.name),
                ))
            }
            Some(p) => Some(p.slot),
            None => None,
        };
        if let Some(slot) = stale {
            self.retire(&mut admin, slot);
        }
        let ports = self.ports();
        let slot = match ports.iter().position(Option::is_none) {
            Some(free) => free,
            None if ports.len() < MAX_PORTS => ports.len(),
            None => {
                return Err(Error::from_kind(
                    ErrorKind::InvalidInput,
                    "br port add",
                    format!("a bridge takes at most {MAX_PORTS} ports"),
                ))
            }
        };
        admin.added += 1;
        let port = Arc::new(open_port(
            spec,
            slot,
            admin.added,
            self.queues,
            self.one_thread,
        )?);
        let label = port.label();
        let mut table = (*ports).clone();
        if table.len() <= slot {
            table.resize(slot + 1, None);
        }
        table[slot] = Some(Arc::clone(&port));
        self.publish(table);
        {
            let mut fdb = self.fdb();
            fdb.set_port(slot, 1);
            self.reweigh(&mut fdb);
        }
        if !self.one_thread {
            if let Err(e) = spawn_port(self, &port, &mut admin) {
                self.retire(&mut admin, slot);
                return Err(e);
            }
        }
        Ok(format!("port {label} added to bridge {}", self.name))
    }

    /// Removes the port `r` names.
    fn remove_port(&self, r: &PortRef) -> Result<String, Error> {
        let mut admin = lock(&self.admin);
        let port = self.find(&self.ports(), r, "br port del")?;
        let label = port.label();
        self.retire(&mut admin, port.slot);
        Ok(format!("port {label} removed from bridge {}", self.name))
    }

    /// Takes the port in `slot` out: no frame to or from it any more, its thread ended, its
    /// entries flushed, the port closed.
    fn retire(&self, admin: &mut Admin, slot: usize) {
        let ports = self.ports();
        let Some(port) = ports.get(slot).cloned().flatten() else {
            return;
        };
        // Frames read from it from now on teach the table nothing (checked under its lock).
        port.alive.store(false, Ordering::Release);
        while let Some(k) = admin.threads.iter().position(|(s, _)| *s == Some(slot)) {
            let (_, t) = admin.threads.swap_remove(k);
            let _ = t.join();
        }
        let mut table = (*ports).clone();
        table[slot] = None;
        while table.last().is_some_and(Option::is_none) {
            table.pop();
        }
        self.publish(table);
        {
            let mut fdb = self.fdb();
            fdb.remove_port(slot);
            self.reweigh(&mut fdb);
        }
        port.close();
    }

    /// Adds a static entry (or replaces an entry).
    fn add_static(&self, mac: Mac, vlan: u16, r: &PortRef) -> Result<String, Error> {
        let _admin = lock(&self.admin);
        let bad = |why: String| Error::from_kind(ErrorKind::InvalidInput, "br fdb add", why);
        if !mac.is_valid_source() {
            return Err(bad(format!(
                "{mac} is not a unicast address: no frame comes from it"
            )));
        }
        if vlan > 4094 {
            return Err(bad(format!("VLAN {vlan}: a VLAN ID is 0 to 4094")));
        }
        let port = self.find(&self.ports(), r, "br fdb add")?;
        if !port.alive.load(Ordering::Acquire) {
            return Err(bad(format!("port {} is gone", port.label())));
        }
        let replaced = self
            .fdb()
            .add_static(Key::new(mac, vlan), port.slot)
            .map_err(|e| match e {
                StaticError::NoPort => bad(format!("port {} is gone", port.label())),
                StaticError::TooMany => {
                    bad("as many static entries as --max-macs already".to_string())
                }
            })?;
        Ok(format!(
            "{mac}{} static on {}{}",
            vlan_text(vlan),
            port.label(),
            if replaced { " (replaced)" } else { "" }
        ))
    }

    /// Removes the entry for `mac` in `vlan`.
    fn remove_entry(&self, mac: Mac, vlan: u16) -> Result<String, Error> {
        match self.fdb().remove(&Key::new(mac, vlan)) {
            Some((_, fixed)) => Ok(format!(
                "{} entry {mac}{} removed",
                if fixed { "static" } else { "learned" },
                vlan_text(vlan)
            )),
            None => Err(Error::from_kind(
                ErrorKind::NotFound,
                "br fdb del",
                format!("bridge {} has no entry {mac}{}", self.name, vlan_text(vlan)),
            )),
        }
    }

    /// Answers a control request.
    fn answer(self: &Arc<Self>, request: Request, peer: Peer) -> Reply {
        let (op, result) = match request {
            Request::Show => return Reply::Status(Box::new(self.status())),
            Request::FdbAdd { mac, vlan, port } => (
                "br fdb add",
                port.parse::<PortRef>()
                    .and_then(|r| self.add_static(mac, vlan, &r)),
            ),
            Request::FdbDel { mac, vlan } => ("br fdb del", self.remove_entry(mac, vlan)),
            Request::PortAdd { port } => (
                "br port add",
                port.parse::<PortSpec>().and_then(|spec| {
                    if !port.contains('@') && !peer.shares_namespace() {
                        return Err(Error::from_kind(
                            ErrorKind::InvalidInput,
                            "br port add",
                            format!(
                                "{port}: you run in another namespace than bridge {}: name the port's, {port}@NS (or -n NS)",
                                self.name
                            ),
                        ));
                    }
                    self.add_port(&spec)
                }),
            ),
            Request::PortDel { port } => (
                "br port del",
                port.parse::<PortRef>().and_then(|r| self.remove_port(&r)),
            ),
        };
        Reply::Answer(match result {
            Ok(done) => Answer::Ok(done),
            // The client names the operation: only what is not it.
            Err(e) if e.operation() == op && e.subject().is_none() => Answer::Error(e.detail()),
            Err(e) => Answer::Error(e.to_string()),
        })
    }
}

fn vlan_text(vlan: u16) -> String {
    if vlan == 0 {
        String::new()
    } else {
        format!(" vlan {vlan}")
    }
}

/// A running bridge. Dropping it (or [`down`](Bridge::down)) stops it, removes the ports it
/// created (in every namespace) and releases the uplink.
pub struct Bridge {
    shared: Arc<Shared>,
    /// The housekeeping and control threads.
    house: Vec<JoinHandle<()>>,
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

/// `polled`: the one-thread loop waits for its queues with poll(2) on their fds, which a
/// queue on io_uring (`TUNCTL_IO_URING=1`) leaves unreadable while its ring holds frames:
/// such ports stay on system calls.
fn open_port(
    spec: &PortSpec,
    slot: usize,
    seq: u64,
    queues: usize,
    polled: bool,
) -> Result<Port, Error> {
    let existed = Link::by_name(&spec.namespace, &spec.name).is_ok();
    let builder = |offload: bool, queues: usize| {
        let b = Device::builder()
            .tap()
            .name(&spec.name)
            .namespace(spec.namespace.clone());
        let b = if polled { b.io_uring(false) } else { b };
        let b = if offload { b.offload(PORT_OFFLOAD) } else { b };
        if queues > 1 {
            b.multi_queue(queues)
        } else {
            b
        }
    };
    // A persistent tap made by someone else is used with its own flags: without vnet_hdr
    // (its frames get split), with one queue.
    let mut fallbacks = vec![(false, queues)];
    if queues > 1 {
        fallbacks.extend([(true, 1), (false, 1)]);
    }
    let mut made = builder(true, queues).create();
    for (offload, queues) in fallbacks {
        match &made {
            Err(e) if e.kind() == ErrorKind::FlagMismatch => {
                made = builder(offload, queues).create()
            }
            _ => break,
        }
    }
    let device = made?;
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
    let mtu = link.mtu()?;
    Ok(Port {
        slot,
        seq,
        name: device.name().to_string(),
        namespace: ns_label(&spec.namespace),
        ns: ns_id(&spec.namespace),
        vnet: device
            .flags()
            .is_ok_and(|f| f.contains(tunctl::Flags::VNET_HDR)),
        created: !existed,
        alive: AtomicBool::new(true),
        mtu: AtomicU32::new(mtu),
        stats: PortStats::default(),
        master: None,
        device,
    })
}

/// Enslaves `port` (the uplink) to the Linux bridge `master` in the uplink's namespace.
fn enslave(port: &mut Port, spec: &PortSpec, master: &Master) -> Result<(), Error> {
    let bad = |why: String| Error::from_kind(ErrorKind::InvalidInput, "br up", why);
    let ns = match &master.namespace {
        Some(ns) if !same_ns(ns, &spec.namespace) => {
            return Err(bad(format!(
                "the uplink {spec} is in {} and its master {} in {}: an uplink and its master share one namespace",
                spec.namespace.describe(),
                master.name,
                ns.describe()
            )))
        }
        _ => &spec.namespace,
    };
    let bridge = Link::by_name(ns, &master.name).map_err(|e| {
        e.add_detail(&format!(
            "the master bridge {}, looked up in the uplink's namespace ({})",
            master.name,
            ns.describe()
        ))
    })?;
    let kind = bridge.info()?.link_kind;
    if kind.as_deref() != Some("bridge") {
        return Err(bad(format!(
            "{} in {} is not a bridge ({}): --master names a Linux bridge",
            master.name,
            ns.describe(),
            kind.map_or("no link kind".to_string(), |k| format!("a {k}"))
        )));
    }
    let link = Link::by_name(ns, &port.name)?;
    link.set_master(Some(bridge.index()))?;
    port.master = Some(link);
    Ok(())
}

/// The one spec `r` names among `specs`.
fn find_spec(specs: &[PortSpec], r: &PortRef, what: &str) -> Result<usize, Error> {
    let named: Vec<usize> = (0..specs.len())
        .filter(|&i| {
            specs[i].name == r.name
                && r.namespace
                    .as_ref()
                    .is_none_or(|ns| same_ns(ns, &specs[i].namespace))
        })
        .collect();
    let bad = |why: String| Error::from_kind(ErrorKind::InvalidInput, "br up", why);
    match named[..] {
        [i] => Ok(i),
        [] => Err(bad(format!("the {what} {r} is not one of the ports"))),
        _ => Err(bad(format!(
            "the {what} {r} names several ports (in different namespaces): say which, NAME@NS"
        ))),
    }
}

/// Starts a thread per queue of `port`, kept in `admin`.
fn spawn_port(s: &Arc<Shared>, port: &Arc<Port>, admin: &mut Admin) -> Result<(), Error> {
    for q in 0..port.device.queues().len() {
        let (shared, me) = (Arc::clone(s), Arc::clone(port));
        let t = std::thread::Builder::new()
            .name(format!("br-{}", port.name))
            .spawn(move || crate::datapath::port_loop(&shared, &me, q))
            .map_err(Error::from)?;
        admin.threads.push((Some(port.slot), t));
    }
    Ok(())
}

impl Bridge {
    /// Creates (or attaches) the ports, enslaves the uplink, adds the static entries, and
    /// starts forwarding.
    ///
    /// # Errors
    ///
    /// No port, a port named twice, an uplink that is not a port or without a master (or
    /// the reverse), a master that is not a bridge or not in the uplink's namespace, a
    /// static entry on no port, a port's error; nothing is left behind.
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
        if opts.ports.is_empty() {
            return Err(bad("a bridge needs a port".into()));
        }
        if !(1..=MAX_QUEUES).contains(&opts.queues) {
            return Err(bad(format!("queues: 1 to {MAX_QUEUES}")));
        }
        if opts.ports.len() > MAX_PORTS {
            return Err(bad(format!("a bridge takes at most {MAX_PORTS} ports")));
        }
        for (i, p) in opts.ports.iter().enumerate() {
            if opts.ports[..i]
                .iter()
                .any(|q| q.name == p.name && same_ns(&q.namespace, &p.namespace))
            {
                return Err(bad(format!("port {p} given twice")));
            }
        }
        let uplink = match (&opts.uplink, &opts.master) {
            (None, None) => None,
            (Some(u), Some(_)) => Some(find_spec(&opts.ports, u, "uplink")?),
            (Some(_), None) => return Err(bad("--uplink needs --master".into())),
            (None, Some(_)) => return Err(bad("--master needs --uplink".into())),
        };
        let statics: Vec<(usize, &StaticEntry)> = opts
            .statics
            .iter()
            .map(|st| find_spec(&opts.ports, &st.port, "port of static entry").map(|i| (i, st)))
            .collect::<Result<_, _>>()?;
        let mut ports = Vec::with_capacity(opts.ports.len());
        for (i, spec) in opts.ports.iter().enumerate() {
            // A port that fails takes the ports made before it along (their Drop).
            ports.push(open_port(
                spec,
                i,
                i as u64 + 1,
                opts.queues,
                opts.one_thread,
            )?);
        }
        if let (Some(u), Some(master)) = (uplink, &opts.master) {
            if let Err(e) = enslave(&mut ports[u], &opts.ports[u], master) {
                for p in &ports {
                    p.close();
                }
                return Err(e);
            }
        }
        let mut fdb = Fdb::new(opts.max_macs, opts.ageing.as_millis() as u64);
        for port in &ports {
            fdb.set_port(port.slot, 1);
        }
        for (i, st) in &statics {
            let _ = fdb.add_static(Key::new(st.mac, st.vlan), *i);
        }
        let n = ports.len() as u64;
        let table: Ports = ports.into_iter().map(|p| Some(Arc::new(p))).collect();
        let shared = Arc::new(Shared {
            name: opts.name.clone(),
            table: Mutex::new(Arc::new(table)),
            version: AtomicU64::new(0),
            fdb: Mutex::new(fdb),
            admin: Mutex::new(Admin {
                closing: false,
                threads: Vec::new(),
                added: n,
            }),
            uplink_weight: opts.uplink_weight,
            ageing: opts.ageing,
            start: coarse_ms(),
            stop: AtomicBool::new(false),
            stop_house: AtomicBool::new(false),
            trace: opts.trace,
            one_thread: opts.one_thread,
            queues: opts.queues,
        });
        shared.reweigh(&mut shared.fdb());
        let mut bridge = Bridge {
            shared: Arc::clone(&shared),
            house: Vec::new(),
            stopped: false,
        };
        {
            let mut admin = lock(&shared.admin);
            if opts.one_thread {
                let s = Arc::clone(&shared);
                let t = std::thread::Builder::new()
                    .name("br-ports".into())
                    .spawn(move || crate::datapath::event_loop(&s))
                    .map_err(Error::from)?;
                admin.threads.push((None, t));
            } else {
                for port in shared.ports().iter().flatten() {
                    spawn_port(&shared, port, &mut admin)?;
                }
            }
        }
        let s = Arc::clone(&shared);
        bridge.house.push(
            std::thread::Builder::new()
                .name("br-house".into())
                .spawn(move || housekeeping(&s))
                .map_err(Error::from)?,
        );
        if let Some(control) = control {
            let s = Arc::clone(&shared);
            bridge.house.push(
                std::thread::Builder::new()
                    .name("br-control".into())
                    .spawn(move || serve(&s, control))
                    .map_err(Error::from)?,
            );
        }
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

    /// The state: ports with their namespaces and counters, the table.
    pub fn status(&self) -> Status {
        self.shared.status()
    }

    /// Makes (or attaches) a port and forwards through it from now on; what was done.
    ///
    /// # Errors
    ///
    /// A port of that name in that namespace already, [`MAX_PORTS`] ports, the port's
    /// error (as [`up`](Bridge::up)'s).
    pub fn add_port(&self, spec: &PortSpec) -> Result<String, Error> {
        self.shared.add_port(spec)
    }

    /// Removes a port: its entries flushed (static ones too), a tap the bridge made
    /// deleted, the uplink released; what was done.
    ///
    /// # Errors
    ///
    /// No such port, or a name that several ports have (give `NAME@NS`).
    pub fn remove_port(&self, port: &PortRef) -> Result<String, Error> {
        self.shared.remove_port(port)
    }

    /// Adds a static entry, `mac` in `vlan` (0: untagged) on `port`, replacing what the
    /// table had for it: it never ages, never moves, and a frame from `mac` on another port
    /// is dropped (`dropped.static_source`).
    ///
    /// # Errors
    ///
    /// No such port, not a unicast address, a VLAN over 4094, as many static entries as
    /// the capacity.
    pub fn add_static(&self, mac: Mac, vlan: u16, port: &PortRef) -> Result<String, Error> {
        self.shared.add_static(mac, vlan, port)
    }

    /// Removes the entry for `mac` in `vlan`, static or learned.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] when there is none.
    pub fn remove_entry(&self, mac: Mac, vlan: u16) -> Result<String, Error> {
        self.shared.remove_entry(mac, vlan)
    }

    /// Stops forwarding, removes the ports it created and releases the uplink.
    pub fn down(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        let s = &self.shared;
        s.stop.store(true, Ordering::Release);
        // The forwarding threads, then the ports, then housekeeping and control: the
        // control socket goes last, once the ports are gone.
        let threads = {
            let mut admin = lock(&s.admin);
            admin.closing = true;
            std::mem::take(&mut admin.threads)
        };
        for (_, t) in threads {
            let _ = t.join();
        }
        for p in s.ports().iter().flatten() {
            p.close();
        }
        s.stop_house.store(true, Ordering::Release);
        for t in self.house.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The ageing sweep (every quarter of the ageing time, at most every second) and the ports'
/// MTUs (every second).
fn housekeeping(s: &Shared) {
    let every = (s.ageing / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let (mut swept, mut measured) = (Instant::now(), Instant::now());
    while !s.stop_house.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(100));
        if swept.elapsed() >= every {
            swept = Instant::now();
            let now = s.now();
            s.fdb().sweep(now);
        }
        if measured.elapsed() >= Duration::from_secs(1) {
            measured = Instant::now();
            for p in s.ports().iter().flatten() {
                if p.alive.load(Ordering::Acquire) {
                    // A port moved to another namespace is not found here: its MTU stays.
                    if let Ok(mtu) = p.device.mtu() {
                        p.mtu.store(mtu, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// The control socket: each client on a thread of its own, at most
/// [`AT_ONCE`](crate::control::AT_ONCE) at a time (the others wait in the listen queue), each
/// within its deadline; at the end, the clients still being served are waited for.
fn serve(s: &Arc<Shared>, control: crate::control::Socket) {
    let busy = Arc::new(AtomicUsize::new(0));
    while !s.stop_house.load(Ordering::Acquire) {
        if busy.load(Ordering::Acquire) >= crate::control::AT_ONCE {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let Some(conn) = control.accept() else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        busy.fetch_add(1, Ordering::AcqRel);
        let (shared, done) = (Arc::clone(s), Arc::clone(&busy));
        let client = std::thread::Builder::new()
            .name("br-client".into())
            .spawn(move || {
                crate::control::serve_connection(conn, &|request, peer| {
                    shared.answer(request, peer)
                });
                done.fetch_sub(1, Ordering::AcqRel);
            });
        if client.is_err() {
            busy.fetch_sub(1, Ordering::AcqRel);
        }
    }
    // The socket goes now (`br down` waits for that); the clients being served finish, as
    // their deadlines bound (a port addition refuses once the bridge stops).
    drop(control);
    let until = Instant::now() + Duration::from_secs(10);
    while busy.load(Ordering::Acquire) > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
}
