//! A running tunnel: a tun device, a UDP socket, the peers' protocol engines, and its
//! threads (device → network in `send`, network → device in `receive`, handshakes, timers,
//! UAPI); its set-up (device, addresses, routing), configuration and life.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tunctl::{Device, Error, ErrorKind, Link, LinkConfig, Namespace, Offload, Plan};
use zeroize::Zeroizing;

use crate::config::{Config, Table as RouteTable, DEFAULT_MTU};
use crate::keys::PublicKey;
use crate::routing::Routing;
use crate::stats::{Counters, Stats};
use crate::table::Table;
use crate::uapi::{SetError, TunnelInfo};
use crate::udp::{set_mark, Sock};

/// The largest UDP datagram taken from the network: a WireGuard message is at most the
/// largest packet plus 32 bytes of overhead; anything longer is dropped and counted.
pub(crate) const MAX_DATAGRAM: usize = 65535;
/// How often the protocol's timers run, and how long a thread waits before it looks at
/// `stop` again.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// `CAP_NET_ADMIN`: routes, rules, firewall marks, forced socket buffers.
const CAP_NET_ADMIN: u32 = 12;

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// The tun device's name or template (`vpwn%d`).
    pub name: String,
    /// Where the UDP socket lives, and the device unless `device_namespace` says otherwise.
    pub namespace: Namespace,
    /// Where the device is made, if elsewhere (a container's namespace): its traffic is
    /// encrypted and leaves through the socket, which stays in `namespace`, so the
    /// container needs no other way out, as with a kernel WireGuard device moved into it.
    pub device_namespace: Option<Namespace>,
    /// Keys, peers, addresses, routing.
    pub config: Config,
}

impl Options {
    /// A tunnel `name` in `namespace` (device and socket) with `config`.
    pub fn new(name: impl Into<String>, namespace: Namespace, config: Config) -> Options {
        Options {
            name: name.into(),
            namespace,
            device_namespace: None,
            config,
        }
    }
}

/// What the data path may use; all on by default, each falling back by itself where the
/// kernel lacks it. Turning one off measures what it buys, and tests the fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastPath {
    /// A `vnet_hdr` tun with TSO/USO: TCP super-packets from the device (split here) and to
    /// it (coalesced here). Off: one packet per read and write.
    pub tun_offload: bool,
    /// UDP GSO: one `sendmsg` per run of datagrams to one peer. Off: `sendmmsg`.
    pub udp_gso: bool,
    /// UDP GRO: a flow's datagrams arrive coalesced. Off: `recvmmsg` of single datagrams.
    pub udp_gro: bool,
}

impl Default for FastPath {
    fn default() -> FastPath {
        FastPath {
            tun_offload: true,
            udp_gso: true,
            udp_gro: true,
        }
    }
}

/// What the threads share.
pub(crate) struct Shared {
    /// The live configuration; the data path takes a reference per batch.
    table: RwLock<Arc<Table>>,
    /// Serialises configuration changes (a `set` reads, then swaps, the table).
    configuring: Mutex<()>,
    socket: RwLock<Arc<Sock>>,
    port: AtomicU16,
    fast: FastPath,
    /// Where the socket lives.
    namespace: Namespace,
    /// Where the device lives, by its name under /run/netns ("" for none).
    device_namespace: String,
    /// The device's MTU now (wg-quick sets it after the tunnel starts): the most a padded
    /// packet may grow to. Kept current by the timers thread.
    pub(crate) mtu: AtomicUsize,
    /// The firewall mark the routing needs on the socket (a full tunnel), which a `set`
    /// must not take away.
    routing_mark: Option<u32>,
    /// The routes and rules `up` made; put back when the kernel removes the routes (the
    /// device went down and up), removed when the tunnel stops.
    routing: Mutex<Option<Routing>>,
    pub(crate) stats: Stats,
    pub(crate) stop: AtomicBool,
    /// The device went away (deleted from outside): the tunnel ends.
    pub(crate) closed: AtomicBool,
    /// The next session index to give a peer's engine.
    indexes: AtomicU32,
    /// Handshake messages from the receive thread to the handshake thread.
    pub(crate) handshakes: crate::handshake::Queue,
}

impl Shared {
    pub(crate) fn table(&self) -> Arc<Table> {
        Arc::clone(&self.table.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn socket(&self) -> Arc<Sock> {
        Arc::clone(&self.socket.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Applies a configuration (with the configuration lock held): a new listen port or
    /// firewall mark first (either can fail, and then nothing changed), then the peers.
    fn apply(&self, applied: crate::uapi::Applied) -> Result<(), SetError> {
        let old = self.table();
        let conf = applied.config;
        let port = self.port.load(Ordering::Relaxed);
        // A port given is bound again when it differs, and always for 0 (a new random one).
        let rebind = applied.listen_port && (conf.listen_port == 0 || conf.listen_port != port);
        let socket = if rebind {
            Arc::new(
                // wireguard-go answers EADDRINUSE for any failure to bind.
                Sock::bind(&self.namespace, conf.listen_port, self.fast).map_err(|e| SetError {
                    errno: -libc::EADDRINUSE,
                    message: e.to_string(),
                })?,
            )
        } else {
            self.socket()
        };
        // The full tunnel's mark stays, or the tunnel's datagrams would be routed into it: a
        // `set` of another one is refused (the same one, as `wg showconf` shows it, is fine).
        if let Some(m) = self.routing_mark.filter(|m| *m != conf.fwmark) {
            return Err(SetError {
                errno: -libc::EINVAL,
                message: format!(
                    "fwmark={}: the full tunnel's routing rules need the mark {m} on the tunnel's socket",
                    conf.fwmark
                ),
            });
        }
        let mark = conf.fwmark;
        if rebind || mark != old.conf.fwmark {
            // wireguard-go answers EADDRINUSE for any failure to set the mark.
            set_mark(&socket.udp, mark).map_err(|e| SetError {
                errno: -libc::EADDRINUSE,
                message: format!("fwmark {mark}: {e}"),
            })?;
        }
        let table = Table::build(conf, Some(&old), &self.indexes, &applied.endpoints);
        if rebind {
            let port = socket.udp.local_addr().map(|a| a.port()).unwrap_or(0);
            *self.socket.write().unwrap_or_else(|p| p.into_inner()) = socket;
            self.port.store(port, Ordering::Relaxed);
        }
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
        Ok(())
    }
}

impl crate::uapi::Handler for Shared {
    fn get(&self) -> Zeroizing<String> {
        let t = self.table();
        crate::uapi::get_response(&t.conf, self.port.load(Ordering::Relaxed), &t.status())
    }

    fn set(&self, lines: &[Zeroizing<String>]) -> Result<(), SetError> {
        // Read, change and apply under one lock: a concurrent change is never lost.
        let _one = self.configuring.lock().unwrap_or_else(|p| p.into_inner());
        // A client served while the tunnel stopped changes nothing (it would bind a socket
        // for a tunnel that is gone).
        if self.stop.load(Ordering::Acquire) {
            return Err(SetError {
                errno: libc::ESHUTDOWN,
                message: "the tunnel has stopped".into(),
            });
        }
        let applied = crate::uapi::apply_set(&self.table().conf, lines.iter().map(|l| l.as_str()))?;
        self.apply(applied)
    }

    fn counters(&self) -> String {
        let mut out = format!("device_namespace={}\n", self.device_namespace);
        out += &self
            .stats
            .snapshot()
            .all()
            .into_iter()
            .filter(|(name, _, _)| name.starts_with("drop_") || name.ends_with("_packets"))
            .map(|(name, _, v)| format!("{name}={v}\n"))
            .collect::<String>();
        let t = self.table();
        for (p, state) in t.conf.peers.iter().zip(&t.peers) {
            out.push_str(&format!("peer={}\n", p.public_key.to_hex()));
            out.push_str(&format!(
                "drop_auth={}\n",
                state.auth_failures.load(Ordering::Relaxed)
            ));
            if let Some(s) = state.handshake_pending() {
                out.push_str(&format!("handshake_pending_sec={}\n", s.as_secs()));
            }
        }
        out
    }

    fn down(&self) -> bool {
        self.stop.store(true, Ordering::Release);
        true
    }
}

/// The tun device in `ns`: with `vnet_hdr` and TSO/USO when `fast` allows, its
/// `gso_max_segs` sized so that one TCP super-packet leaves in one UDP GSO send.
fn make_device(name: &str, ns: &Namespace, mtu: u32, fast: FastPath) -> Result<Device, Error> {
    let plain = || Device::builder().tun().name(name).namespace(ns.clone());
    let device = if fast.tun_offload {
        match plain()
            .offload(Offload::TSO4 | Offload::TSO6 | Offload::USO4 | Offload::USO6)
            .create()
        {
            // A persistent device made without vnet_hdr (`tunctl add` without --vnet-hdr):
            // use it as it is, one packet per read (`warnings` says so).
            Err(e) if e.kind() == ErrorKind::FlagMismatch => plain().create()?,
            other => other?,
        }
    } else {
        plain().create()?
    };
    size_gso(&device, mtu);
    Ok(device)
}

/// `gso_max_segs` for packets of `mtu`: one TCP super-packet fits one UDP GSO send.
fn size_gso(device: &Device, mtu: u32) {
    if device.offload().contains(Offload::TSO4) {
        let per_send = crate::udp::MAX_GSO_BYTES / (mtu as usize + crate::send::OVERHEAD + 15);
        let segs = per_send.clamp(1, crate::udp::MAX_GSO_SEGMENTS) as u32;
        let _ = device.link().and_then(|l| l.set_gso_max_segs(segs));
    }
}

/// What `up` changed on a device it did not create (a persistent one): put back on exit or
/// on a failed `up`, so the device is left as it was found.
struct Changed {
    link: Link,
    plan: Plan,
}

/// Why a tunnel stopped passing traffic on its own ([`Tunnel::ended`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Its device was deleted from outside (`ip link del`, `wg-quick down`).
    DeviceGone,
    /// It was told to stop (`tunctl vpwn down`, [`uapi::down`](crate::uapi::down)).
    Told,
    /// One of its threads ended, which is a bug (the tunnel cannot go on without it): the
    /// thread's name.
    ThreadFailed(String),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::DeviceGone => f.write_str("its device was deleted"),
            Ended::Told => f.write_str("told to stop: vpwn down"),
            Ended::ThreadFailed(t) => write!(f, "its thread {t} failed (a bug: please report it)"),
        }
    }
}

/// A running tunnel. Dropping it (or [`down`](Tunnel::down)) stops the threads, removes
/// the routes and rules it added, and removes the device (a persistent one stays, as it
/// was before `up`), and its UAPI socket.
pub struct Tunnel {
    device: Arc<Device>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    changed: Option<Changed>,
    uapi_error: Option<String>,
    notes: Vec<String>,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("device", &self.device.name())
            .field("port", &self.port())
            .finish()
    }
}

/// Whether `a` and `b` are the same network namespace (however each is named); when that
/// cannot be told, they are taken to be the same (the safer guess: the socket is marked).
fn same_namespace(a: &Namespace, b: &Namespace) -> bool {
    match (a.id().ok(), b.id().ok()) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    }
}

/// Whether this thread has CAP_NET_ADMIN.
fn net_admin() -> bool {
    rustix::thread::capabilities(None)
        .is_ok_and(|sets| sets.effective.bits() & (1u64 << CAP_NET_ADMIN) != 0)
}

impl Tunnel {
    /// Creates (or opens, if persistent and ours) the tun device, configures its addresses
    /// and MTU, routes the peers' allowed IPs to it (a full tunnel with a table, a mark and
    /// rules of its own: see the crate docs), binds the UDP socket, and starts the
    /// threads. Endpoints given by name are resolved in `namespace`. The first packet to a
    /// peer starts the handshake.
    ///
    /// # Errors
    ///
    /// The device's, the socket's and the routing's errors (a port in use is
    /// [`ErrorKind::AlreadyExists`]), each naming the step; a full tunnel without
    /// CAP_NET_ADMIN is refused before anything is done. Nothing is left behind, and a
    /// persistent device is left exactly as it was.
    pub fn up(opts: Options) -> Result<Tunnel, Error> {
        Tunnel::up_with(opts, FastPath::default())
    }

    /// [`up`](Tunnel::up) with parts of the fast path turned off (to measure what each
    /// buys, or to avoid a kernel feature).
    ///
    /// # Errors
    ///
    /// As [`up`](Tunnel::up).
    pub fn up_with(opts: Options, fast: FastPath) -> Result<Tunnel, Error> {
        let mut config = opts.config;
        let full = config.table == RouteTable::Auto
            && (config.default_route(false) || config.default_route(true));
        if full && !net_admin() {
            return Err(Error::from_kind(
                ErrorKind::PermissionDenied,
                "full tunnel",
                "a default route among the allowed IPs makes a full tunnel (a routing table, rules and a firewall mark of its own), which needs CAP_NET_ADMIN: run it as root, or with Table = off and route yourself",
            ));
        }
        let mtu = config.mtu.unwrap_or(DEFAULT_MTU);
        if !crate::config::MTUS.contains(&mtu) {
            return Err(Error::from_kind(
                ErrorKind::InvalidInput,
                "MTU",
                format!(
                    "{mtu} is not {} to {}",
                    crate::config::MTUS.start(),
                    crate::config::MTUS.end()
                ),
            ));
        }
        let mut notes = opts.namespace.run(|| config.resolve())?;
        let device_ns = opts
            .device_namespace
            .clone()
            .unwrap_or(opts.namespace.clone());
        let existed = tunctl::Netlink::open_in(&device_ns)?
            .link_by_name(&opts.name)
            .is_ok();
        let device = make_device(&opts.name, &device_ns, mtu, fast)?;
        // From here on, a failure takes back what was done: the device if it is ours, the
        // changes to it if it is not.
        let set_up = (|| -> Result<(Option<Changed>, Sock, Option<Routing>), Error> {
            // Only what differs is changed, so a persistent device configured beforehand
            // (by `tunctl add` or tunctl-helper) needs no privilege here.
            let link = Link::by_name(&device_ns, device.name())?;
            let plan = LinkConfig {
                mtu: Some(mtu),
                addrs: config.addresses.clone(),
                up: Some(true),
                existing_ok: true,
                ..LinkConfig::default()
            }
            .plan(&link)?;
            // The handle that undoes the changes of a device not ours is made before them:
            // nothing can fail between the changes and their record.
            let record = if existed {
                Some(Link::by_name(&device_ns, device.name())?)
            } else {
                None
            };
            plan.apply(&link, None)?;
            let changed = record.map(|link| Changed { link, plan });
            let restore = |c: &Option<Changed>| {
                if let Some(c) = c {
                    let _ = c.plan.undo(&c.link, None);
                }
            };
            let socket = match Sock::bind(&opts.namespace, config.listen_port, fast) {
                Ok(s) => s,
                Err(e) => {
                    restore(&changed);
                    return Err(e);
                }
            };
            // With the socket in another namespace than the device (a container's), the
            // device's rules cannot capture the tunnel's datagrams: no mark unless asked.
            let mut mark = |mark| set_mark(&socket.udp, mark);
            let needs_mark = config.fwmark != 0 || same_namespace(&opts.namespace, &device_ns);
            let routing = match Routing::set_up(
                &link,
                &config,
                needs_mark.then_some(&mut mark as &mut dyn FnMut(u32) -> std::io::Result<()>),
            ) {
                Ok(r) => r,
                Err(e) => {
                    restore(&changed);
                    return Err(e);
                }
            };
            Ok((changed, socket, Some(routing)))
        })();
        // Errors from here on are the device's, by its real name (not a `vpwn%d` template).
        let named = |e: Error| {
            if e.subject().is_none() {
                e.with_subject(device.name())
            } else {
                e
            }
        };
        let (changed, socket, routing) = match set_up {
            Ok(v) => v,
            Err(e) => {
                let e = named(e);
                if !existed {
                    let _ = device.destroy();
                }
                return Err(e);
            }
        };
        if let Some(m) = routing.as_ref().and_then(|r| r.fwmark) {
            config.fwmark = m;
        }
        let name = device.name().to_string();
        let mut tunnel =
            match Tunnel::start(device, opts.namespace, socket, config, routing, false, fast) {
                Ok(t) => t,
                Err(e) => {
                    // The routing went with the failed start; the device's changes are
                    // undone here (a device of ours went with it too).
                    if let Some(c) = &changed {
                        let _ = c.plan.undo(&c.link, None);
                    }
                    return Err(e.with_subject(name));
                }
            };
        tunnel.changed = changed;
        tunnel.notes.append(&mut notes);
        Ok(tunnel)
    }

    /// What wireguard-go does: creates the tun device `name` (MTU 1420, down, no address)
    /// and a tunnel with no key and no peer, to be configured through its UAPI socket
    /// (`wg setconf`, `wg set`, [`configure`](Tunnel::configure)). Routing is left to its
    /// caller (wg-quick does it).
    ///
    /// # Errors
    ///
    /// The device's or the socket's errors; the UAPI socket cannot be served (it is the
    /// only way in).
    pub fn serve(name: &str, namespace: Namespace) -> Result<Tunnel, Error> {
        let fast = FastPath::default();
        let device = make_device(name, &namespace, DEFAULT_MTU, fast)?;
        device.set_mtu(DEFAULT_MTU)?;
        let socket = Sock::bind(&namespace, 0, fast)?;
        Tunnel::start(
            device,
            namespace,
            socket,
            Config::default(),
            None,
            true,
            fast,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        device: Device,
        namespace: Namespace,
        socket: Sock,
        conf: Config,
        routing: Option<Routing>,
        need_uapi: bool,
        fast: FastPath,
    ) -> Result<Tunnel, Error> {
        let routing_mark = routing.as_ref().and_then(|r| r.fwmark);
        let port = socket.udp.local_addr()?.port();
        let mut seed = [0u8; 4];
        let _ = getrandom::getrandom(&mut seed);
        let indexes = AtomicU32::new(u32::from_ne_bytes(seed) & 0x00ff_ffff);
        let mtu = device.mtu().unwrap_or(DEFAULT_MTU) as usize;
        let device_namespace = match device.namespace() {
            Namespace::Path(p) => Namespace::Path(p.clone())
                .name_in_run_dir()
                .ok()
                .flatten()
                .unwrap_or_else(|| p.display().to_string()),
            ns => ns.name_in_run_dir().ok().flatten().unwrap_or_default(),
        };
        let table = Table::build(conf, None, &indexes, &[]);
        let shared = Arc::new(Shared {
            table: RwLock::new(Arc::new(table)),
            configuring: Mutex::new(()),
            socket: RwLock::new(Arc::new(socket)),
            port: AtomicU16::new(port),
            fast,
            namespace,
            device_namespace,
            mtu: AtomicUsize::new(mtu),
            routing_mark,
            routing: Mutex::new(routing),
            stats: Stats::default(),
            stop: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            indexes,
            handshakes: crate::handshake::Queue::default(),
        });
        // `wg show NAME` works on the tunnel through the UAPI socket; without it (not root,
        // or the name served elsewhere) a configured tunnel runs all the same.
        let (uapi, uapi_error) = match crate::uapi::Socket::bind(device.name()) {
            Ok(sock) => (Some(sock), None),
            Err(e) if need_uapi => {
                return Err(Error::from(e).add_detail(&format!(
                    "UAPI socket {}",
                    crate::uapi::socket_path(device.name()).display()
                )))
            }
            Err(e) => (None, Some(e.to_string())),
        };
        let device = Arc::new(device);
        let mut tunnel = Tunnel {
            device: Arc::clone(&device),
            shared: Arc::clone(&shared),
            threads: Vec::new(),
            changed: None,
            uapi_error,
            notes: Vec::new(),
        };
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(format!("vpwn-{name}"))
                .spawn(f)
                .map_err(Error::from)
        };
        let (d, s) = (Arc::clone(&device), Arc::clone(&shared));
        tunnel.threads.push(spawn(
            "tx",
            Box::new(move || crate::send::to_network(&d, &s)),
        )?);
        let (d, s) = (Arc::clone(&device), Arc::clone(&shared));
        tunnel.threads.push(spawn(
            "rx",
            Box::new(move || crate::receive::to_device(&d, &s)),
        )?);
        let s = Arc::clone(&shared);
        tunnel.threads.push(spawn(
            "handshake",
            Box::new(move || crate::handshake::thread(&s)),
        )?);
        let (d, s) = (Arc::clone(&device), Arc::clone(&shared));
        tunnel.threads.push(spawn(
            "timers",
            Box::new(move || crate::timers::thread(&d, &s)),
        )?);
        if let Some(sock) = uapi {
            let s = Arc::clone(&shared);
            tunnel.threads.push(spawn(
                "uapi",
                Box::new(move || crate::uapi::thread(s, sock)),
            )?);
        }
        if shared
            .table()
            .conf
            .peers
            .iter()
            .any(|p| p.endpoint_name.is_some())
        {
            let s = Arc::clone(&shared);
            tunnel
                .threads
                .push(spawn("resolve", Box::new(move || reresolve(&s)))?);
        }
        Ok(tunnel)
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        self.device.name()
    }

    /// The UDP port this end listens on.
    pub fn port(&self) -> u16 {
        self.shared.port.load(Ordering::Relaxed)
    }

    /// This end's public key, for the peers' configuration (none while the tunnel has no
    /// private key).
    pub fn public_key(&self) -> Option<PublicKey> {
        self.shared
            .table()
            .conf
            .private_key
            .as_ref()
            .map(|k| k.public())
    }

    /// Where the (first) peer is now: it follows the peer when it roams.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.shared.table().peers.first().and_then(|p| p.endpoint())
    }

    /// Time since the (first) peer's last completed handshake.
    pub fn since_handshake(&self) -> Option<Duration> {
        self.shared
            .table()
            .peers
            .first()
            .and_then(|p| p.since_handshake())
    }

    /// Every peer as `show` shows it: key, endpoint, latest handshake, transfer, allowed
    /// IPs (no secret).
    pub fn info(&self) -> TunnelInfo {
        let t = self.shared.table();
        TunnelInfo {
            public_key: self.public_key(),
            listen_port: self.port(),
            fwmark: t.conf.fwmark,
            peers: t
                .conf
                .peers
                .iter()
                .zip(t.status())
                .map(|(p, s)| crate::uapi::PeerInfo {
                    public_key: p.public_key,
                    preshared_key: p.preshared_key.is_some(),
                    endpoint: s.endpoint.or(p.endpoint),
                    last_handshake: s.last_handshake,
                    rx_bytes: s.rx_bytes,
                    tx_bytes: s.tx_bytes,
                    keepalive: p.keepalive,
                    allowed_ips: p.allowed_ips.clone(),
                })
                .collect(),
        }
    }

    /// The peers that have been waiting for a handshake for `at_least` (we sent initiations
    /// and none was answered), with how long: a wrong key, or nothing answers at their
    /// endpoint.
    pub fn stalled(&self, at_least: Duration) -> Vec<(PublicKey, Option<SocketAddr>, Duration)> {
        let t = self.shared.table();
        t.conf
            .peers
            .iter()
            .zip(&t.peers)
            .filter_map(|(p, s)| {
                let waited = s.handshake_pending()?;
                (waited >= at_least).then(|| (p.public_key, s.endpoint(), waited))
            })
            .collect()
    }

    /// The configuration now (what `wg showconf` shows).
    pub fn config(&self) -> Config {
        self.shared.table().conf.clone()
    }

    /// Replaces the configuration, as a `set=1` with `replace_peers` would: peers that stay
    /// (same public key) keep their sessions, unless their preshared key or keepalive
    /// changed; each peer's endpoint applies.
    ///
    /// # Errors
    ///
    /// The new port is in use, or the firewall mark cannot be set; nothing changed.
    pub fn configure(&self, mut conf: Config) -> Result<(), SetError> {
        // A configuration without a mark keeps the full tunnel's.
        if conf.fwmark == 0 {
            conf.fwmark = self.shared.routing_mark.unwrap_or(0);
        }
        let _one = self
            .shared
            .configuring
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let endpoints = conf.peers.iter().map(|p| p.public_key).collect();
        self.shared.apply(crate::uapi::Applied {
            listen_port: conf.listen_port != self.port(),
            config: conf,
            endpoints,
        })
    }

    /// Why the UAPI socket (`/var/run/wireguard/NAME.sock`, for `wg show`) is not served,
    /// if it is not.
    pub fn uapi_error(&self) -> Option<&str> {
        self.uapi_error.as_deref()
    }

    /// The routing `up` set up for a full tunnel: its table and firewall mark.
    pub fn full_tunnel(&self) -> Option<(u32, u32)> {
        let r = self
            .shared
            .routing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let r = r.as_ref()?;
        Some((r.table?, r.fwmark?))
    }

    /// What the tunnel runs without that it would want: socket buffers capped below 7 MiB
    /// (no CAP_NET_ADMIN), no offload on the device, no UDP GSO or GRO in the kernel, an
    /// endpoint name that did not resolve.
    pub fn warnings(&self) -> Vec<String> {
        let sock = self.shared.socket();
        let mut w: Vec<String> = sock.warning.iter().cloned().collect();
        let fast = self.shared.fast;
        if fast.tun_offload && !self.device.offload().contains(Offload::TSO4) {
            w.push(if self.device.flags().is_ok_and(|f| f.contains(tunctl::Flags::VNET_HDR)) {
                "the device has no TSO (an older kernel, or no CAP_NET_ADMIN to set gso_max_segs): one packet per read".into()
            } else {
                "the device has no vnet_hdr (create it with `tunctl add --vnet-hdr` for TSO): one packet per read".into()
            });
        }
        if fast.udp_gro && !sock.io.gro() {
            w.push("no UDP GRO in this kernel: one datagram per buffer".into());
        }
        if fast.udp_gso && !sock.io.gso() {
            w.push("no UDP GSO in this kernel: sendmmsg instead".into());
        }
        w.extend(self.notes.iter().cloned());
        w
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.shared.stats.snapshot()
    }

    /// False once the tunnel has stopped passing traffic: its device is gone (deleted from
    /// outside, as `ip link del` or `wg-quick down` do; see [`is_device_gone`]), or it was
    /// told to stop (`tunctl vpwn down`).
    ///
    /// [`is_device_gone`]: Tunnel::is_device_gone
    pub fn is_running(&self) -> bool {
        self.ended().is_none()
    }

    /// Why the tunnel stopped passing traffic, once it has (`None` while it runs).
    pub fn ended(&self) -> Option<Ended> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Some(Ended::DeviceGone);
        }
        if self.shared.stop.load(Ordering::Acquire) {
            return Some(Ended::Told);
        }
        // Every thread runs until the tunnel stops: one that ended is a bug.
        self.threads
            .iter()
            .find(|t| t.is_finished())
            .map(|t| Ended::ThreadFailed(t.thread().name().unwrap_or("?").to_string()))
    }

    /// Whether the device was deleted from outside.
    pub fn is_device_gone(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Stops the threads, removes the routes and rules `up` added, and removes the device
    /// (a persistent one is put back as it was before `up`).
    pub fn down(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Rules first: traffic never meets a rule into a table whose routes are gone.
        drop(
            self.shared
                .routing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        match self.changed.take() {
            // Not ours: as it was before.
            Some(c) => {
                let _ = c.plan.undo(&c.link, None);
            }
            None => {
                if !self.device.is_persistent().unwrap_or(false) {
                    let _ = self.device.destroy();
                }
            }
        }
        // The readers wake on their own: they read with a timeout.
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl std::ops::Drop for Tunnel {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
        }
    }
}

/// How long a peer given by name may go without a handshake before its name is looked up
/// again (as wireguard-tools' reresolve-dns: its address may have changed).
const RERESOLVE_AFTER: Duration = Duration::from_secs(120);

/// Whether a peer's name is due for another lookup: no handshake for
/// [`RERESOLVE_AFTER`] (or none at all, with the tunnel up that long).
fn reresolve_due(since_handshake: Option<Duration>, up_for: Duration) -> bool {
    since_handshake.unwrap_or(up_for) >= RERESOLVE_AFTER
}

/// Looks the names of peers given by name up again when they are due (on a thread of its
/// own: a lookup may take seconds), in the socket's namespace, and moves them to the new
/// address.
fn reresolve(shared: &Shared) {
    let started = std::time::Instant::now();
    let mut last = std::time::Instant::now();
    while !shared.stop.load(Ordering::Acquire) {
        std::thread::sleep(TICK);
        if last.elapsed() < Duration::from_secs(10) {
            continue;
        }
        last = std::time::Instant::now();
        let table = shared.table();
        for (p, state) in table.conf.peers.iter().zip(&table.peers) {
            let Some(name) = &p.endpoint_name else {
                continue;
            };
            if !reresolve_due(state.since_handshake(), started.elapsed()) {
                continue;
            }
            let name = name.clone();
            let found = shared
                .namespace
                .run(move || crate::config::resolve_endpoint(&name))
                .ok()
                .and_then(Result::ok);
            if let Some(addr) = found.filter(|a| state.endpoint() != Some(*a)) {
                state.set_endpoint(addr);
            }
        }
    }
}

/// What the timers thread last saw of the device.
#[derive(Debug, Default)]
pub(crate) struct Follow {
    up: bool,
    mtu: usize,
    seen: bool,
}

/// Once a second, the device as it is now (cheap: one netlink round trip). Its MTU, for
/// the threads (wg-quick sets it after the tunnel starts; padding and segment sizes follow
/// it), and `gso_max_segs` along with it. When it came up again (seen in its flags, or
/// announced since the last look, however briefly it was down) or its MTU changed, the
/// routes and IPv6 addresses the kernel removed meanwhile (all of a link's go when it goes
/// down; IPv6 ones below an MTU of 1280) are put back.
pub(crate) fn follow_link(device: &Device, shared: &Shared, follow: &mut Follow) {
    let mut routing = shared.routing.lock().unwrap_or_else(|p| p.into_inner());
    // The events first: a change after the flags are read is announced, never missed.
    let came_up = routing.as_mut().is_some_and(Routing::came_up);
    let changed = follow_flags(device, shared, follow);
    if let Some(routing) = routing
        .as_ref()
        .filter(|_| changed || (came_up && follow.up))
    {
        routing.restore();
    }
}

/// Reads the device's flags and MTU; true when it came up again or its MTU changed since
/// the last look.
fn follow_flags(device: &Device, shared: &Shared, follow: &mut Follow) -> bool {
    let Ok(info) = device.link().and_then(|l| l.info()) else {
        return false;
    };
    let (up, mtu) = (info.flags & libc::IFF_UP as u32 != 0, info.mtu as usize);
    if shared.mtu.swap(mtu, Ordering::Relaxed) != mtu {
        size_gso(device, info.mtu);
    }
    let changed = follow.seen && up && (!follow.up || follow.mtu != mtu);
    (follow.up, follow.mtu, follow.seen) = (up, mtu, true);
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_looked_up_again_after_two_minutes_without_a_handshake() {
        let m = |s| Duration::from_secs(s);
        assert!(!reresolve_due(Some(m(30)), m(600)));
        assert!(reresolve_due(Some(m(121)), m(600)));
        assert!(
            !reresolve_due(None, m(60)),
            "a fresh tunnel waits for its first try"
        );
        assert!(reresolve_due(None, m(130)));
    }
}
