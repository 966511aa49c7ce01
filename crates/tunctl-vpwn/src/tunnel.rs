//! A running tunnel: a tun device, a UDP socket, the peers' protocol engines, and four
//! threads (tun → network, network → tun, timers, UAPI), all in the device's namespace.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tunctl::{Batch, Cidr, Device, Error, ErrorKind, Link, LinkConfig, Namespace, Offload};

use crate::config::{Config, DEFAULT_MTU};
use crate::engine::Out;
use crate::handshake::Msg;
use crate::keys::Key;
pub use crate::stats::{Counters, Stats};
use crate::table::Table;
use crate::uapi::{DeviceConf, PeerConf, SetError};

/// The largest UDP datagram taken from the network: a WireGuard message is at most the
/// largest packet plus 32 bytes of overhead; anything longer is dropped and counted.
const MAX_DATAGRAM: usize = 65535;
/// How often the protocol's timers run.
const TICK: Duration = Duration::from_millis(100);

/// What to start: a device name (or template), its namespace, and the configuration.
#[derive(Debug, Clone)]
pub struct Options {
    /// The tun device's name or template (`vpwn%d`).
    pub name: String,
    /// Where the device and the UDP socket live.
    pub namespace: Namespace,
    /// Keys, addresses, peer.
    pub config: Config,
}

/// What the threads share.
struct Shared {
    /// The live configuration; the data path takes a reference per packet.
    table: RwLock<Arc<Table>>,
    /// Serialises configuration changes (a `set` reads, then swaps, the table).
    configuring: Mutex<()>,
    socket: RwLock<Arc<Sock>>,
    port: AtomicU16,
    fast: FastPath,
    namespace: Namespace,
    mtu: usize,
    stats: Stats,
    stop: AtomicBool,
    /// The device went away (deleted from outside): the tunnel ends.
    closed: AtomicBool,
    /// The next session index to give a peer's engine.
    indexes: AtomicU32,
    /// Handshake messages from the receive thread to the handshake thread.
    handshakes: crate::handshake::Queue,
}

impl Shared {
    fn table(&self) -> Arc<Table> {
        Arc::clone(&self.table.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn socket(&self) -> Arc<Sock> {
        Arc::clone(&self.socket.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Applies a whole new configuration: a new listen port or firewall mark first (either
    /// can fail, and then nothing changed), then the peers.
    fn configure(&self, conf: DeviceConf) -> Result<(), SetError> {
        let _one = self.configuring.lock().unwrap_or_else(|p| p.into_inner());
        self.configure_locked(conf)
    }

    /// [`configure`](Shared::configure) with the configuration lock held.
    fn configure_locked(&self, conf: DeviceConf) -> Result<(), SetError> {
        let old = self.table();
        let port = self.port.load(Ordering::Relaxed);
        let rebind = conf.listen_port != 0 && conf.listen_port != port;
        let socket = if rebind {
            Arc::new(
                Sock::bind(&self.namespace, conf.listen_port, self.fast).map_err(|e| SetError {
                    errno: if e.kind() == ErrorKind::AlreadyExists {
                        -libc::EADDRINUSE
                    } else {
                        -libc::EIO
                    },
                    message: e.to_string(),
                })?,
            )
        } else {
            self.socket()
        };
        if rebind || conf.fwmark != old.conf.fwmark {
            set_mark(&socket.udp, conf.fwmark).map_err(|e| SetError {
                errno: -e.raw_os_error().unwrap_or(libc::EIO),
                message: format!("fwmark {}: {e}", conf.fwmark),
            })?;
        }
        let table = Table::build(conf, Some(&old), &self.indexes);
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
    fn get(&self) -> String {
        let t = self.table();
        crate::uapi::get_response(&t.conf, self.port.load(Ordering::Relaxed), &t.status())
    }

    fn set(&self, lines: &[String]) -> Result<(), SetError> {
        // Read, change and apply under one lock: a concurrent change is never lost.
        let _one = self.configuring.lock().unwrap_or_else(|p| p.into_inner());
        let conf = crate::uapi::apply_set(&self.table().conf, lines.iter().map(String::as_str))?;
        self.configure_locked(conf)
    }

    fn counters(&self) -> String {
        self.stats
            .snapshot()
            .all()
            .into_iter()
            .filter(|(name, _, _)| name.starts_with("drop_") || name.ends_with("_packets"))
            .map(|(name, _, v)| format!("{name}={v}\n"))
            .collect()
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

/// The UDP socket and how to batch on it.
struct Sock {
    udp: UdpSocket,
    io: crate::udp::Io,
    /// Why the socket buffers are smaller than asked, if they are.
    warning: Option<String>,
}

impl Sock {
    /// The UDP socket, dual-stack where IPv6 is on, in the tunnel's namespace, with large
    /// buffers and UDP GRO/GSO as `fast` allows.
    fn bind(namespace: &Namespace, port: u16, fast: FastPath) -> Result<Sock, Error> {
        let udp = namespace
            .run(|| dual_stack(port).or_else(|_| UdpSocket::bind(("0.0.0.0", port))))?
            .map_err(|e| {
                let kind = e.kind();
                let err = Error::from(e).add_detail(&format!("UDP port {port}"));
                if kind == std::io::ErrorKind::AddrInUse {
                    Error::from_kind(ErrorKind::AlreadyExists, "bind", err.detail())
                } else {
                    err
                }
            })?;
        udp.set_read_timeout(Some(TICK))?;
        let warning = crate::udp::size_buffers(&udp);
        let io = crate::udp::Io::new(&udp, fast.udp_gso, fast.udp_gro);
        Ok(Sock { udp, io, warning })
    }
}

/// A UDP socket on `[::]:port` that takes IPv4 too (v4-mapped), whatever
/// `net.ipv6.bindv6only` says.
fn dual_stack(port: u16) -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::IPV6,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    s.set_only_v6(false)?;
    s.bind(&std::net::SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    Ok(s.into())
}

/// `SO_MARK` on the tunnel's socket (CAP_NET_ADMIN); 0 on a socket without a mark is a
/// no-op.
fn set_mark(socket: &UdpSocket, mark: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket, and a u32 option value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc == 0 || mark == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The tun device: with `vnet_hdr` and TSO/USO when `fast` allows, its `gso_max_segs`
/// sized so that one TCP super-packet leaves in one UDP GSO send.
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
    if device.offload().contains(Offload::TSO4) {
        let per_send = crate::udp::MAX_GSO_BYTES / (mtu as usize + OVERHEAD + 15);
        let segs = per_send.clamp(1, crate::udp::MAX_GSO_SEGMENTS) as u32;
        let _ = device.link().and_then(|l| l.set_gso_max_segs(segs));
    }
    Ok(device)
}

/// Routes to delete through a link, when dropped with any left.
struct UndoRoutes(Link, Vec<Cidr>);

impl std::ops::Drop for UndoRoutes {
    fn drop(&mut self) {
        for net in &self.1 {
            let _ = self.0.del_route(*net);
        }
    }
}

/// A running tunnel. Dropping it (or [`down`](Tunnel::down)) stops the threads and removes
/// the device (unless it is persistent), the routes it added, and its UAPI socket.
pub struct Tunnel {
    device: Arc<Device>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    routes: Vec<Cidr>,
    uapi_error: Option<String>,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("device", &self.device.name())
            .field("port", &self.port())
            .finish()
    }
}

impl From<&Config> for DeviceConf {
    fn from(c: &Config) -> DeviceConf {
        DeviceConf {
            private_key: Some(c.interface.private_key),
            listen_port: c.interface.listen_port.unwrap_or(0),
            fwmark: 0,
            peers: vec![PeerConf {
                public_key: c.peer.public_key,
                preshared_key: c.peer.preshared_key,
                endpoint: c.peer.endpoint,
                keepalive: c.peer.persistent_keepalive.unwrap_or(0),
                allowed_ips: c.peer.allowed_ips.clone(),
            }],
        }
    }
}

impl Tunnel {
    /// Creates (or opens, if persistent and ours) the tun device, configures its addresses
    /// and MTU, routes the peer's allowed IPs to it, binds the UDP socket, and starts the
    /// threads. The first packet to the peer starts the handshake.
    ///
    /// # Errors
    ///
    /// The device's or the socket's errors (a port in use is [`ErrorKind::AlreadyExists`]),
    /// each naming the step; nothing is left behind.
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
        let config = &opts.config;
        let mtu = config.interface.mtu.unwrap_or(DEFAULT_MTU);
        let device = make_device(&opts.name, &opts.namespace, mtu, fast)?;
        // Only what differs is changed, so a persistent device configured beforehand (by
        // `tunctl add` or tunctl-helper) needs no privilege here; a change that needs one
        // says so, and what was done before it is undone.
        let link = Link::by_name(&opts.namespace, device.name())?;
        LinkConfig {
            mtu: Some(mtu),
            addrs: config.interface.addresses.clone(),
            up: Some(true),
            existing_ok: true,
            ..LinkConfig::default()
        }
        .plan(&link)?
        .apply(&link, None)?;
        // The peer's networks go to the device, unless an address's own route covers them.
        let own: Vec<Cidr> = config
            .interface
            .addresses
            .iter()
            .map(|a| Cidr::new(a.network(), a.prefix()))
            .collect::<Result<_, _>>()?;
        // Routes this call adds go again if a later step fails (on a persistent device they
        // would outlive it; a device made here takes its routes along when it goes).
        let present: Vec<Cidr> = link.routes()?.iter().map(|r| r.dst).collect();
        let mut undo = UndoRoutes(link, Vec::new());
        for net in &config.peer.allowed_ips {
            let net = Cidr::new(net.network(), net.prefix())?;
            if own.iter().any(|o| o.contains(&net)) || present.contains(&net) {
                continue;
            }
            match undo.0.add_route(net, None) {
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
                Ok(()) => undo.1.push(net),
            }
        }
        let mut tunnel = Tunnel::start(
            device,
            opts.namespace,
            DeviceConf::from(config),
            mtu,
            false,
            fast,
        )?;
        tunnel.routes = std::mem::take(&mut undo.1);
        Ok(tunnel)
    }

    /// What wireguard-go does: creates the tun device `name` (MTU 1420, down, no address)
    /// and a tunnel with no key and no peer, to be configured through its UAPI socket
    /// (`wg setconf`, `wg set`, [`configure`](Tunnel::configure)).
    ///
    /// # Errors
    ///
    /// The device's or the socket's errors; the UAPI socket cannot be served (it is the
    /// only way in).
    pub fn serve(name: &str, namespace: Namespace) -> Result<Tunnel, Error> {
        let fast = FastPath::default();
        let device = make_device(name, &namespace, DEFAULT_MTU, fast)?;
        device.set_mtu(DEFAULT_MTU)?;
        Tunnel::start(
            device,
            namespace,
            DeviceConf::default(),
            DEFAULT_MTU,
            true,
            fast,
        )
    }

    fn start(
        device: Device,
        namespace: Namespace,
        conf: DeviceConf,
        mtu: u32,
        need_uapi: bool,
        fast: FastPath,
    ) -> Result<Tunnel, Error> {
        let socket = Sock::bind(&namespace, conf.listen_port, fast)?;
        let port = socket.udp.local_addr()?.port();
        let mut seed = [0u8; 4];
        let _ = getrandom::getrandom(&mut seed);
        let indexes = AtomicU32::new(u32::from_ne_bytes(seed) & 0x00ff_ffff);
        let table = Table::build(conf, None, &indexes);
        let shared = Arc::new(Shared {
            table: RwLock::new(Arc::new(table)),
            configuring: Mutex::new(()),
            socket: RwLock::new(Arc::new(socket)),
            port: AtomicU16::new(port),
            fast,
            namespace,
            mtu: mtu as usize,
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
            routes: Vec::new(),
            uapi_error,
        };
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(format!("vpwn-{name}"))
                .spawn(f)
                .map_err(Error::from)
        };
        let (d, s) = (Arc::clone(&device), Arc::clone(&shared));
        tunnel
            .threads
            .push(spawn("tx", Box::new(move || to_network(&d, &s)))?);
        let (d, s) = (Arc::clone(&device), Arc::clone(&shared));
        tunnel
            .threads
            .push(spawn("rx", Box::new(move || to_device(&d, &s)))?);
        let s = Arc::clone(&shared);
        tunnel
            .threads
            .push(spawn("handshake", Box::new(move || handshakes(&s)))?);
        let s = Arc::clone(&shared);
        tunnel
            .threads
            .push(spawn("timers", Box::new(move || timers(&s)))?);
        if let Some(sock) = uapi {
            let s = Arc::clone(&shared);
            tunnel
                .threads
                .push(spawn("uapi", Box::new(move || serve_uapi(s, sock)))?);
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

    /// This end's public key, for the peer's configuration (all zeros while the tunnel has
    /// no private key).
    pub fn public_key(&self) -> Key {
        self.shared
            .table()
            .conf
            .private_key
            .map_or(Key([0; 32]), |k| k.public())
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

    /// The configuration now (what `wg showconf` shows).
    pub fn conf(&self) -> DeviceConf {
        self.shared.table().conf.clone()
    }

    /// Replaces the configuration, as a `set=1` with `replace_peers` would: peers that stay
    /// (same public key) keep their sessions, unless their preshared key or keepalive
    /// changed.
    ///
    /// # Errors
    ///
    /// The new port is in use, or the firewall mark cannot be set; nothing changed.
    pub fn configure(&self, conf: DeviceConf) -> Result<(), SetError> {
        self.shared.configure(conf)
    }

    /// Why the UAPI socket (`/var/run/wireguard/NAME.sock`, for `wg show`) is not served,
    /// if it is not.
    pub fn uapi_error(&self) -> Option<&str> {
        self.uapi_error.as_deref()
    }

    /// What the tunnel runs without that it would want: socket buffers capped below 7 MiB
    /// (no CAP_NET_ADMIN), no offload on the device, no UDP GSO or GRO in the kernel.
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
        w
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.shared.stats.snapshot()
    }

    /// False once the device is gone (deleted from outside, as `ip link del` or
    /// `wg-quick down` do); the tunnel has then stopped passing traffic.
    pub fn is_running(&self) -> bool {
        !self.shared.closed.load(Ordering::Acquire)
    }

    /// Stops the threads and removes the device (a persistent one stays, with the routes
    /// this tunnel added removed).
    pub fn down(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let persistent = self.device.is_persistent().unwrap_or(false);
        if persistent {
            if let Ok(link) = self.device.link() {
                for net in &self.routes {
                    let _ = link.del_route(*net);
                }
            }
            // The reader wakes on its own: it reads with a timeout.
        } else {
            let _ = self.device.destroy();
        }
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

/// The destination address of an IP packet.
fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let b: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        6 => {
            let b: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

/// The WireGuard data message overhead: type, receiver index, counter (16) and tag (16).
const OVERHEAD: usize = 32;

/// Datagrams of one peer waiting in the send buffer, to leave in one UDP GSO send: all of
/// `segment` bytes but the last, which may be shorter (and then ends the run).
struct Run {
    peer: usize,
    to: SocketAddr,
    used: usize,
    segment: usize,
    count: usize,
    closed: bool,
}

/// Device → network. A batch of packets from the device (a TSO super-packet arrives split
/// into MTU-sized packets), each routed to its peer by destination (cryptokey routing),
/// padded to 16 bytes within the MTU, and encrypted into one contiguous buffer; each run of
/// datagrams to one peer leaves in one `sendmsg` with `UDP_SEGMENT` (or one `sendmmsg`).
fn to_network(device: &Device, shared: &Shared) {
    let Some(queue) = device.queues().first() else {
        return;
    };
    // 128 slots: a read needs 64 free (a super-packet splits into up to 64), so the batch
    // keeps draining small packets until it holds 64 or more (one send for all of them).
    let mut batch = Batch::new(128, 0);
    // Room for a full GSO send plus one more datagram of any size.
    let mut out = vec![0u8; crate::udp::MAX_GSO_BYTES + 65536 + 256];
    let stats = &shared.stats;
    while !shared.stop.load(Ordering::Acquire) {
        match queue.recv_batch_timeout(&mut batch, Some(TICK)) {
            Ok(0) => continue,
            Ok(_) => {}
            // A malformed super-packet or an oversized read: that packet is lost, not the
            // tunnel.
            Err(e) if matches!(e.kind(), ErrorKind::Truncated | ErrorKind::InvalidInput) => {
                continue
            }
            Err(_) => {
                shared.closed.store(true, Ordering::Release);
                break;
            }
        }
        let table = shared.table();
        let sock = shared.socket();
        let mut run: Option<Run> = None;
        let (mut packets, mut bytes) = (0u64, 0u64);
        let mut engine_of: Option<(
            usize,
            std::sync::MutexGuard<'_, Box<dyn crate::engine::Engine>>,
        )> = None;
        for i in 0..batch.len() {
            let n = batch.packet(i).len();
            let dst = destination(batch.packet(i));
            let Some(p) = dst.and_then(|d| table.route(d)) else {
                // Multicast with no peer for it (the kernel's own router solicitations and
                // MLD reports on a fresh device): WireGuard carries it only where an
                // allowed IP says so, and its absence is no fault.
                if !dst.is_some_and(|d| d.is_multicast()) {
                    Stats::add(&stats.drop_no_route, 1);
                }
                continue;
            };
            let peer = &table.peers[p];
            // A new peer, or a full or closed run: send what is waiting.
            let padded = (n.div_ceil(16) * 16).min(shared.mtu.max(n));
            let size = padded + OVERHEAD;
            let full = run.as_ref().is_some_and(|r| {
                r.peer != p
                    || r.closed
                    || size > r.segment
                    || r.count == crate::udp::MAX_GSO_SEGMENTS
                    || r.used + size > crate::udp::MAX_GSO_BYTES
            });
            if full {
                flush(&sock, &out, &mut run, &table);
            }
            if engine_of.as_ref().is_none_or(|(q, _)| *q != p) {
                drop(engine_of.take());
                engine_of = Some((p, peer.engine()));
            }
            let Some((_, engine)) = engine_of.as_mut() else {
                continue;
            };
            let packet = batch.pad_to(i, padded);
            let at = run.as_ref().map_or(0, |r| r.used);
            match engine.encapsulate(packet, &mut out[at..]) {
                Out::Network(datagram) if datagram.len() == size => {
                    let to = match &run {
                        Some(r) => Some(r.to),
                        None => peer.endpoint(),
                    };
                    let Some(to) = to else {
                        Stats::add(&stats.drop_no_session, 1);
                        continue;
                    };
                    let r = run.get_or_insert(Run {
                        peer: p,
                        to,
                        used: 0,
                        segment: size,
                        count: 0,
                        closed: false,
                    });
                    r.used += size;
                    r.count += 1;
                    r.closed = size < r.segment;
                    packets += 1;
                    bytes += n as u64;
                }
                // A handshake initiation: the packet waits in the engine's queue, and leaves
                // when the handshake completes.
                Out::Network(datagram) => {
                    if let Some(to) = peer.endpoint() {
                        let _ = sock.io.send(&sock.udp, datagram, 0, to);
                        Stats::add(&peer.tx_bytes, datagram.len());
                        packets += 1;
                        bytes += n as u64;
                    } else {
                        Stats::add(&stats.drop_no_session, 1);
                    }
                }
                // Queued behind a handshake under way.
                Out::Done => {
                    packets += 1;
                    bytes += n as u64;
                }
                Out::Dropped(why) => stats.dropped(why),
                Out::Tunnel(..) => {}
            }
        }
        drop(engine_of);
        flush(&sock, &out, &mut run, &table);
        Stats::add(&stats.tx_packets, packets as usize);
        Stats::add(&stats.tx_bytes, bytes as usize);
    }
}

/// Sends the waiting run, if any.
fn flush(sock: &Sock, out: &[u8], run: &mut Option<Run>, table: &Table) {
    if let Some(r) = run.take() {
        let _ = sock.io.send(&sock.udp, &out[..r.used], r.segment, r.to);
        if let Some(peer) = table.peers.get(r.peer) {
            Stats::add(&peer.tx_bytes, r.used);
        }
    }
}

/// Network → device. `recvmmsg` takes many buffers at once, each possibly many datagrams of
/// one flow (UDP GRO), and each goes through the receive pipeline ([`crate::receive`]):
/// decrypted straight into a batch slot, which is written to the device, consecutive
/// segments of a TCP flow coalesced into super-packets (trusted: they were authenticated).
/// Handshake messages go to the handshake thread's queue, in one hand-over per read.
fn to_device(device: &Device, shared: &Shared) {
    let Some(queue) = device.queues().first() else {
        return;
    };
    const BUFFERS: usize = 8;
    let mut bufs = vec![vec![0u8; MAX_DATAGRAM + 1]; BUFFERS];
    let mut got = [crate::udp::Received {
        len: 0,
        from: None,
        segment: 0,
        truncated: false,
    }; BUFFERS];
    let mut batch = Batch::new(64, 0);
    let mut handshakes: Vec<Msg> = Vec::with_capacity(64);
    let stats = &shared.stats;
    let mut flush = |batch: &mut Batch| {
        let _ = queue.send_batch(batch);
        batch.clear();
    };
    while !shared.stop.load(Ordering::Acquire) {
        let sock = shared.socket();
        let n = match sock.io.recv(&sock.udp, &mut bufs, &mut got) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(_) => {
                shared.closed.store(true, Ordering::Release);
                break;
            }
        };
        let table = shared.table();
        let mut delivered = crate::receive::Delivered::default();
        for (r, buf) in got[..n].iter().zip(&bufs) {
            let Some(from) = r.from else { continue };
            if r.truncated {
                Stats::add(&stats.drop_oversized, 1);
                continue;
            }
            let d = crate::receive::buffer(
                &table,
                stats,
                from,
                crate::receive::datagrams(&buf[..r.len], r.segment),
                &mut batch,
                &mut handshakes,
                &mut flush,
            );
            delivered.packets += d.packets;
            delivered.bytes += d.bytes;
        }
        if !batch.is_empty() {
            flush(&mut batch);
        }
        let shed = shared.handshakes.push_all(&mut handshakes);
        Stats::add(&stats.drop_handshake_queue, shed);
        Stats::add(&stats.rx_packets, delivered.packets);
        Stats::add(&stats.rx_bytes, delivered.bytes);
    }
}

/// The handshake thread: handshake messages from the queue, a batch at a time, through the
/// cookie checks to their peer's engine ([`crate::handshake::handle`]); what they answer
/// leaves in one `sendmmsg` per batch.
fn handshakes(shared: &Shared) {
    let mut cookies: Option<(Key, crate::cookie::Cookies)> = None;
    let mut load = crate::handshake::Load::new();
    let mut out = vec![0u8; 2048];
    let mut batch = Vec::with_capacity(64);
    let mut outbox = crate::handshake::Outbox::default();
    while !shared.stop.load(Ordering::Acquire) {
        let backlog = shared.handshakes.pop_some(&mut batch, 64, TICK);
        if batch.is_empty() {
            continue;
        }
        let under_load = load.update(backlog);
        let table = shared.table();
        let Some(public) = table.gate.as_ref().map(|g| g.public()) else {
            Stats::add(&shared.stats.drop_auth, batch.len());
            batch.clear();
            continue;
        };
        // The checks of this identity (a new private key makes new ones).
        let checks = match &mut cookies {
            Some((k, c)) if *k == public => c,
            slot => {
                &mut slot
                    .insert((public, crate::cookie::Cookies::new(&public)))
                    .1
            }
        };
        let mut send = |datagram: &[u8], to: SocketAddr, peer: Option<usize>| {
            outbox.push(datagram, to);
            if let Some(p) = peer.and_then(|p| table.peers.get(p)) {
                Stats::add(&p.tx_bytes, datagram.len());
            }
        };
        for msg in batch.drain(..) {
            crate::handshake::handle(
                &table,
                &shared.stats,
                checks,
                under_load,
                &msg,
                &mut out,
                &mut send,
            );
        }
        let sock = shared.socket();
        sock.io.send_each(&sock.udp, &outbox.datagrams());
        outbox.clear();
    }
}

/// The protocol's timers (handshake retries, rekeying, keepalives) of every peer.
fn timers(shared: &Shared) {
    let mut out = vec![0u8; 256];
    while !shared.stop.load(Ordering::Acquire) {
        std::thread::sleep(TICK);
        let table = shared.table();
        if let Some(gate) = &table.gate {
            gate.tick();
        }
        for peer in &table.peers {
            let mut engine = peer.engine();
            if let Out::Network(datagram) = engine.tick(&mut out) {
                if let Some(to) = peer.endpoint() {
                    let sock = shared.socket();
                    let _ = sock.io.send(&sock.udp, datagram, 0, to);
                    Stats::add(&peer.tx_bytes, datagram.len());
                }
            }
        }
    }
}

/// The UAPI socket's clients, each served on a thread of its own (see
/// [`crate::uapi::Socket::serve_pending`]).
fn serve_uapi(shared: Arc<Shared>, socket: crate::uapi::Socket) {
    let handler: Arc<dyn crate::uapi::Handler + Send + Sync> = Arc::clone(&shared) as _;
    while !shared.stop.load(Ordering::Acquire) {
        socket.serve_pending(&handler);
        std::thread::sleep(Duration::from_millis(20));
    }
}
