//! A running tunnel: a tun device, a UDP socket, the protocol engine, and three threads
//! (tun → network, network → tun, timers), all in the device's namespace.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tunctl::{Cidr, Device, Error, ErrorKind, Link, Namespace};

use crate::config::{Config, DEFAULT_MTU};
use crate::engine::{Boringtun, Drop, Engine, Out};
use crate::keys::Key;

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

/// Counters of a running tunnel.
#[derive(Debug, Default)]
pub struct Stats {
    /// Packets sent through the tunnel (from the device).
    pub tx_packets: AtomicU64,
    /// Bytes of those packets.
    pub tx_bytes: AtomicU64,
    /// Packets received through the tunnel (to the device).
    pub rx_packets: AtomicU64,
    /// Bytes of those packets.
    pub rx_bytes: AtomicU64,
    /// Datagrams that failed authentication (wrong key or PSK, forged).
    pub drop_auth: AtomicU64,
    /// Replayed or too old datagrams.
    pub drop_replay: AtomicU64,
    /// Datagrams that are not (valid) WireGuard messages.
    pub drop_malformed: AtomicU64,
    /// Datagrams too long to be a WireGuard message.
    pub drop_oversized: AtomicU64,
    /// Decrypted packets whose inner source is outside the peer's allowed IPs.
    pub drop_not_allowed: AtomicU64,
    /// Packets with nowhere to go: no peer endpoint known yet, or no session.
    pub drop_no_session: AtomicU64,
}

/// A plain copy of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// See [`Stats::tx_packets`].
    pub tx_packets: u64,
    /// See [`Stats::tx_bytes`].
    pub tx_bytes: u64,
    /// See [`Stats::rx_packets`].
    pub rx_packets: u64,
    /// See [`Stats::rx_bytes`].
    pub rx_bytes: u64,
    /// See [`Stats::drop_auth`].
    pub drop_auth: u64,
    /// See [`Stats::drop_replay`].
    pub drop_replay: u64,
    /// See [`Stats::drop_malformed`].
    pub drop_malformed: u64,
    /// See [`Stats::drop_oversized`].
    pub drop_oversized: u64,
    /// See [`Stats::drop_not_allowed`].
    pub drop_not_allowed: u64,
    /// See [`Stats::drop_no_session`].
    pub drop_no_session: u64,
}

impl Stats {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn dropped(&self, why: Drop) {
        let c = match why {
            Drop::Auth => &self.drop_auth,
            Drop::Replay => &self.drop_replay,
            Drop::Malformed => &self.drop_malformed,
            Drop::NoSession | Drop::Expired | Drop::UnderLoad => &self.drop_no_session,
        };
        Stats::add(c, 1);
    }

    fn snapshot(&self) -> Counters {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            tx_packets: g(&self.tx_packets),
            tx_bytes: g(&self.tx_bytes),
            rx_packets: g(&self.rx_packets),
            rx_bytes: g(&self.rx_bytes),
            drop_auth: g(&self.drop_auth),
            drop_replay: g(&self.drop_replay),
            drop_malformed: g(&self.drop_malformed),
            drop_oversized: g(&self.drop_oversized),
            drop_not_allowed: g(&self.drop_not_allowed),
            drop_no_session: g(&self.drop_no_session),
        }
    }
}

/// What the three threads share.
struct Shared {
    engine: Mutex<Box<dyn Engine>>,
    socket: UdpSocket,
    /// Where the peer is: from the configuration, then wherever an authenticated datagram
    /// came from (roaming).
    endpoint: Mutex<Option<SocketAddr>>,
    allowed: Vec<Cidr>,
    mtu: usize,
    stats: Stats,
    stop: AtomicBool,
    /// What the UAPI reports that does not change.
    config: Config,
    port: u16,
}

impl Shared {
    fn engine(&self) -> MutexGuard<'_, Box<dyn Engine>> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn endpoint(&self) -> Option<SocketAddr> {
        *self.endpoint.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, datagram: &[u8], to: SocketAddr) {
        let _ = self.socket.send_to(datagram, wire(to));
    }

    fn allowed(&self, src: IpAddr) -> bool {
        self.allowed.iter().any(|net| {
            Cidr::new(src, if src.is_ipv4() { 32 } else { 128 })
                .is_ok_and(|host| net.contains(&host))
        })
    }
}

/// A dual-stack socket speaks IPv6: IPv4 peers as v4-mapped addresses.
fn wire(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        v6 => v6,
    }
}

/// An address from the socket, v4-mapped ones as IPv4.
fn unwire(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => SocketAddr::V6(v6),
        },
        v4 => v4,
    }
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
/// the device (unless it is persistent) with its routes.
pub struct Tunnel {
    device: Arc<Device>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    port: u16,
    public_key: Key,
    uapi_error: Option<String>,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("device", &self.device.name())
            .field("port", &self.port)
            .finish()
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
        let config = &opts.config;
        let mtu = config.interface.mtu.unwrap_or(DEFAULT_MTU);
        let device = Device::builder()
            .tun()
            .name(&opts.name)
            .namespace(opts.namespace.clone())
            .create()?;
        device.set_mtu(mtu)?;
        for a in &config.interface.addresses {
            match device.add_address(*a) {
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                other => other?,
            }
        }
        device.up()?;
        // The peer's networks go to the device, unless an address's own route covers them.
        let own: Vec<Cidr> = config
            .interface
            .addresses
            .iter()
            .map(|a| Cidr::new(a.network(), a.prefix()))
            .collect::<Result<_, _>>()?;
        // Routes this call adds go again if a later step fails (on a persistent device they
        // would outlive it; a device made here takes its routes along when it goes).
        let mut undo = UndoRoutes(Link::by_name(&opts.namespace, device.name())?, Vec::new());
        for net in &config.peer.allowed_ips {
            if own.iter().any(|o| o.contains(net)) {
                continue;
            }
            match undo.0.add_route(*net, None) {
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
                Ok(()) => undo.1.push(*net),
            }
        }
        let port = config.interface.listen_port.unwrap_or(0);
        let socket = opts
            .namespace
            .run(|| {
                UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port))
                    .or_else(|_| UdpSocket::bind(("0.0.0.0", port)))
            })?
            .map_err(|e| {
                let kind = e.kind();
                let err = Error::from(e).add_detail(&format!("UDP port {port}"));
                if kind == std::io::ErrorKind::AddrInUse {
                    Error::from_kind(ErrorKind::AlreadyExists, "bind", err.detail())
                } else {
                    err
                }
            })?;
        socket.set_read_timeout(Some(TICK))?;
        let port = socket.local_addr()?.port();
        let engine: Box<dyn Engine> = Box::new(Boringtun::new(
            &config.interface.private_key,
            &config.peer.public_key,
            config.peer.preshared_key.as_ref(),
            config.peer.persistent_keepalive,
        ));
        let shared = Arc::new(Shared {
            engine: Mutex::new(engine),
            socket,
            endpoint: Mutex::new(config.peer.endpoint),
            allowed: config.peer.allowed_ips.clone(),
            mtu: mtu as usize,
            stats: Stats::default(),
            stop: AtomicBool::new(false),
            config: config.clone(),
            port,
        });
        let device = Arc::new(device);
        let mut threads = Vec::new();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(format!("vpwn-{name}"))
                .spawn(f)
                .map_err(Error::from)
        };
        let (d, s) = (Arc::clone(&device), Arc::clone(&shared));
        threads.push(spawn("tx", Box::new(move || to_network(&d, &s)))?);
        let (d, s) = (Arc::clone(&device), Arc::clone(&shared));
        threads.push(spawn("rx", Box::new(move || to_device(&d, &s)))?);
        // `wg show NAME` works on the tunnel through the UAPI socket; without it (not root,
        // or the name served elsewhere) the tunnel runs all the same.
        let (uapi, uapi_error) = match crate::uapi::Socket::bind(device.name()) {
            Ok(sock) => (Some(sock), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let s = Arc::clone(&shared);
        threads.push(spawn("timers", Box::new(move || timers(&s, uapi)))?);
        undo.1.clear();
        Ok(Tunnel {
            uapi_error,
            public_key: config.interface.private_key.public(),
            device,
            shared,
            threads,
            port,
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        self.device.name()
    }

    /// The UDP port this end listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// This end's public key, for the peer's configuration.
    pub fn public_key(&self) -> Key {
        self.public_key
    }

    /// Where the peer is now (it follows the peer when it roams).
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.shared.endpoint()
    }

    /// Time since the last completed handshake.
    pub fn since_handshake(&self) -> Option<Duration> {
        self.shared.engine().since_handshake()
    }

    /// Why the UAPI socket (`/var/run/wireguard/NAME.sock`, for `wg show`) is not served,
    /// if it is not.
    pub fn uapi_error(&self) -> Option<&str> {
        self.uapi_error.as_deref()
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.shared.stats.snapshot()
    }

    /// Stops the threads and removes the device (a persistent one stays, with its
    /// routes removed).
    pub fn down(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let persistent = self.device.is_persistent().unwrap_or(false);
        if persistent {
            if let Ok(link) = self.device.link() {
                for net in &self.shared.allowed {
                    let _ = link.del_route(*net);
                }
            }
            // Wake the reader without removing the device: it reads with a timeout below.
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

/// Device → network: read a packet, pad it to 16 bytes (within the MTU), encrypt, send.
fn to_network(device: &Device, shared: &Shared) {
    let mut packet = vec![0u8; 65536];
    let mut out = vec![0u8; 65536 + 64];
    while !shared.stop.load(Ordering::Acquire) {
        let n = match device.recv_timeout(&mut packet, TICK) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) if e.kind() == ErrorKind::Truncated => continue,
            Err(_) => break,
        };
        let padded = (n.div_ceil(16) * 16).min(shared.mtu.max(n));
        packet[n..padded].fill(0);
        let mut engine = shared.engine();
        match engine.encapsulate(&packet[..padded], &mut out) {
            Out::Network(datagram) => match shared.endpoint() {
                Some(to) => {
                    shared.send(datagram, to);
                    Stats::add(&shared.stats.tx_packets, 1);
                    Stats::add(&shared.stats.tx_bytes, n);
                }
                None => Stats::add(&shared.stats.drop_no_session, 1),
            },
            Out::Dropped(why) => shared.stats.dropped(why),
            Out::Done | Out::Tunnel(..) => {}
        }
    }
}

/// Network → device: receive a datagram, decrypt, check the inner source against the
/// peer's allowed IPs, write it to the device; answer handshakes; follow the peer's address.
fn to_device(device: &Device, shared: &Shared) {
    let mut datagram = vec![0u8; MAX_DATAGRAM + 1];
    let mut out = vec![0u8; 65536 + 64];
    while !shared.stop.load(Ordering::Acquire) {
        let (n, from) = match shared.socket.recv_from(&mut datagram) {
            Ok((n, from)) => (n, unwire(from)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        if n > MAX_DATAGRAM {
            Stats::add(&shared.stats.drop_oversized, 1);
            continue;
        }
        let mut engine = shared.engine();
        let mut first = true;
        loop {
            let result = if first {
                engine.decapsulate(Some(from.ip()), &datagram[..n], &mut out)
            } else {
                engine.decapsulate(None, &[], &mut out)
            };
            first = false;
            match result {
                // A handshake answer, a cookie, or queued packets after a handshake.
                Out::Network(reply) => {
                    shared.send(reply, from);
                    *shared.endpoint.lock().unwrap_or_else(|p| p.into_inner()) = Some(from);
                }
                Out::Tunnel(packet, src) => {
                    // Authenticated: the peer is where this came from (roaming).
                    *shared.endpoint.lock().unwrap_or_else(|p| p.into_inner()) = Some(from);
                    if !shared.allowed(src) {
                        Stats::add(&shared.stats.drop_not_allowed, 1);
                    } else if device.send(packet).is_ok() {
                        Stats::add(&shared.stats.rx_packets, 1);
                        Stats::add(&shared.stats.rx_bytes, packet.len());
                    }
                    break;
                }
                Out::Done => break,
                Out::Dropped(why) => {
                    shared.stats.dropped(why);
                    break;
                }
            }
        }
    }
}

/// The protocol's timers (handshake retries, rekeying, keepalives), and the UAPI socket's
/// requests between ticks.
fn timers(shared: &Shared, uapi: Option<crate::uapi::Socket>) {
    let mut out = vec![0u8; 256];
    let state = || {
        let since = shared.engine().since_handshake();
        let c = shared.stats.snapshot();
        crate::uapi::State {
            private_key: shared.config.interface.private_key,
            listen_port: shared.port,
            public_key: shared.config.peer.public_key,
            preshared_key: shared.config.peer.preshared_key,
            endpoint: shared.endpoint(),
            last_handshake: since.and_then(|d| std::time::SystemTime::now().checked_sub(d)),
            tx_bytes: c.tx_bytes,
            rx_bytes: c.rx_bytes,
            keepalive: shared.config.peer.persistent_keepalive.unwrap_or(0),
            allowed_ips: shared.config.peer.allowed_ips.clone(),
        }
    };
    while !shared.stop.load(Ordering::Acquire) {
        std::thread::sleep(TICK);
        {
            let mut engine = shared.engine();
            if let Out::Network(datagram) = engine.tick(&mut out) {
                if let Some(to) = shared.endpoint() {
                    shared.send(datagram, to);
                }
            }
        }
        if let Some(sock) = &uapi {
            sock.serve_pending(&state);
        }
    }
}
