//! The peers of a running tunnel: each one's engine, endpoint and counters, the
//! allowed-IPs routes (cryptokey routing) and the session-index map. A [`Table`] is
//! immutable; a new configuration builds a new one that keeps the state of the peers it
//! keeps, and the data path swaps it in between packets.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tunctl::Cidr;

use crate::engine::{Engine, Gate};
use crate::keys::Key;
use crate::uapi::{DeviceConf, PeerConf, PeerStatus};

/// One peer's live state.
pub(crate) struct PeerState {
    engine: Mutex<Box<dyn Engine>>,
    endpoint: Mutex<Option<SocketAddr>>,
    /// The index its sessions carry (see [`Gate::engine`]).
    pub(crate) index: u32,
    pub(crate) tx_bytes: AtomicU64,
    pub(crate) rx_bytes: AtomicU64,
    /// The local index of the last session known to work (0: none yet), and when it was
    /// confirmed: by an accepted handshake response (we initiated), or by the first
    /// datagram decrypted under it (the peer initiated). boringtun's own clock starts when
    /// a responder answers, before the initiator proves it holds the keys (a wrong
    /// preshared key would look like a handshake).
    session: AtomicU32,
    confirmed: Mutex<Option<Instant>>,
}

impl PeerState {
    pub(crate) fn engine(&self) -> MutexGuard<'_, Box<dyn Engine>> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn endpoint(&self) -> Option<SocketAddr> {
        *self.endpoint.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_endpoint(&self, to: SocketAddr) {
        let mut e = self.endpoint.lock().unwrap_or_else(|p| p.into_inner());
        if *e != Some(to) {
            *e = Some(to);
        }
    }

    /// Records that the session with local index `index` works (see `session`).
    pub(crate) fn confirm(&self, index: u32) {
        if self.session.load(Ordering::Relaxed) != index {
            self.session.store(index, Ordering::Relaxed);
            *self.confirmed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
    }

    /// Time since the last confirmed handshake.
    pub(crate) fn since_handshake(&self) -> Option<Duration> {
        self.confirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }

    pub(crate) fn status(&self) -> PeerStatus {
        PeerStatus {
            endpoint: self.endpoint(),
            last_handshake: self
                .since_handshake()
                .and_then(|d| SystemTime::now().checked_sub(d)),
            tx_bytes: self.tx_bytes.load(Ordering::Relaxed),
            rx_bytes: self.rx_bytes.load(Ordering::Relaxed),
        }
    }
}

/// An allowed-IPs route: a network as a masked 128-bit number (IPv4 in the low 32 bits).
#[derive(Debug, Clone, Copy)]
struct Route {
    v6: bool,
    net: u128,
    mask: u128,
    peer: usize,
}

fn bits(addr: IpAddr) -> (bool, u128) {
    match addr {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

impl Route {
    fn new(net: &Cidr, peer: usize) -> Route {
        let (v6, n) = bits(net.network());
        let width = if v6 { 128 } else { 32 };
        let host = width - u32::from(net.prefix());
        let full = if v6 { u128::MAX } else { u128::from(u32::MAX) };
        let mask = if host >= 128 {
            0
        } else {
            (full >> host) << host
        };
        Route {
            v6,
            net: n & mask,
            mask,
            peer,
        }
    }
}

/// A configuration, made live.
pub(crate) struct Table {
    pub(crate) conf: DeviceConf,
    /// This end's identity; `None` without a private key (nothing is sent or accepted).
    pub(crate) gate: Option<Arc<Gate>>,
    /// Parallel to `conf.peers`.
    pub(crate) peers: Vec<Arc<PeerState>>,
    /// Longest prefix first.
    routes: Vec<Route>,
    by_index: HashMap<u32, usize>,
}

impl Table {
    /// The table of `conf`, keeping the live state of `old`'s peers where their key, private
    /// key, preshared key and keepalive are unchanged; an endpoint `conf` sets wins over a
    /// roamed one.
    pub(crate) fn build(conf: DeviceConf, old: Option<&Table>, indexes: &AtomicU32) -> Table {
        let same_identity = old.is_some_and(|o| o.conf.private_key == conf.private_key);
        let gate = match old {
            Some(o) if same_identity => o.gate.clone(),
            _ => conf.private_key.as_ref().map(|k| Arc::new(Gate::new(k))),
        };
        let mut peers = Vec::with_capacity(conf.peers.len());
        for p in &conf.peers {
            let kept = old.filter(|_| same_identity).and_then(|o| {
                let i = o
                    .conf
                    .peers
                    .iter()
                    .position(|q| q.public_key == p.public_key)?;
                let q = &o.conf.peers[i];
                (q.preshared_key == p.preshared_key && q.keepalive == p.keepalive)
                    .then(|| (Arc::clone(&o.peers[i]), q))
            });
            let state = match kept {
                Some((state, q)) => {
                    if p.endpoint.is_some() && p.endpoint != q.endpoint {
                        if let Some(e) = p.endpoint {
                            state.set_endpoint(e);
                        }
                    }
                    state
                }
                None => {
                    // A new peer, or one whose engine must start again: counters and a
                    // roamed endpoint carry over.
                    let prev = old.and_then(|o| {
                        let i = o
                            .conf
                            .peers
                            .iter()
                            .position(|q| q.public_key == p.public_key)?;
                        Some(&o.peers[i])
                    });
                    Arc::new(new_peer(gate.as_deref(), p, prev, indexes))
                }
            };
            peers.push(state);
        }
        let mut routes: Vec<(u8, Route)> = conf
            .peers
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                p.allowed_ips
                    .iter()
                    .map(move |net| (net.prefix(), Route::new(net, i)))
            })
            .collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.0));
        let by_index = peers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.index, i))
            .collect();
        Table {
            routes: routes.into_iter().map(|(_, r)| r).collect(),
            by_index,
            gate,
            peers,
            conf,
        }
    }

    /// The peer whose allowed IPs hold `addr` (longest prefix).
    pub(crate) fn route(&self, addr: IpAddr) -> Option<usize> {
        let (v6, a) = bits(addr);
        self.routes
            .iter()
            .find(|r| r.v6 == v6 && a & r.mask == r.net)
            .map(|r| r.peer)
    }

    /// The peer whose sessions carry `index`.
    pub(crate) fn by_index(&self, index: u32) -> Option<usize> {
        self.by_index.get(&index).copied()
    }

    /// The peer with this public key.
    pub(crate) fn by_key(&self, key: &Key) -> Option<usize> {
        self.conf.peers.iter().position(|p| p.public_key == *key)
    }

    /// Each peer's status, in configuration order.
    pub(crate) fn status(&self) -> Vec<PeerStatus> {
        self.peers.iter().map(|p| p.status()).collect()
    }
}

/// Engines need a private key; a peer configured before one is given gets an engine that
/// refuses everything until it is (the table is rebuilt then).
struct Inert;

impl Engine for Inert {
    fn encapsulate<'a>(&mut self, _: &[u8], _: &'a mut [u8]) -> crate::engine::Out<'a> {
        crate::engine::Out::Dropped(crate::engine::Drop::NoSession)
    }
    fn decapsulate<'a>(
        &mut self,
        _: Option<IpAddr>,
        _: &[u8],
        _: &'a mut [u8],
    ) -> crate::engine::Out<'a> {
        crate::engine::Out::Dropped(crate::engine::Drop::Auth)
    }
    fn tick<'a>(&mut self, _: &'a mut [u8]) -> crate::engine::Out<'a> {
        crate::engine::Out::Done
    }
}

fn new_peer(
    gate: Option<&Gate>,
    p: &PeerConf,
    prev: Option<&Arc<PeerState>>,
    indexes: &AtomicU32,
) -> PeerState {
    let index = indexes.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
    let engine: Box<dyn Engine> = match gate {
        Some(g) => g.engine(
            &p.public_key,
            p.preshared_key.as_ref(),
            (p.keepalive > 0).then_some(p.keepalive),
            index,
        ),
        None => Box::new(Inert),
    };
    let load = |f: fn(&PeerState) -> &AtomicU64| prev.map_or(0, |s| f(s).load(Ordering::Relaxed));
    PeerState {
        engine: Mutex::new(engine),
        endpoint: Mutex::new(p.endpoint.or_else(|| prev.and_then(|s| s.endpoint()))),
        index,
        tx_bytes: AtomicU64::new(load(|s| &s.tx_bytes)),
        rx_bytes: AtomicU64::new(load(|s| &s.rx_bytes)),
        session: AtomicU32::new(0),
        confirmed: Mutex::new(
            prev.and_then(|s| *s.confirmed.lock().unwrap_or_else(|p| p.into_inner())),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(peers: &[(&str, u8)]) -> DeviceConf {
        DeviceConf {
            private_key: Some(Key([7; 32])),
            listen_port: 0,
            fwmark: 0,
            peers: peers
                .iter()
                .map(|(nets, k)| PeerConf {
                    public_key: Key([*k; 32]),
                    preshared_key: None,
                    endpoint: None,
                    keepalive: 0,
                    allowed_ips: nets.split(',').map(|n| n.parse().unwrap()).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn longest_prefix_wins_and_families_stay_apart() {
        let idx = AtomicU32::new(1);
        let t = Table::build(
            conf(&[("10.0.0.0/8,::/0", 1), ("10.1.0.0/16", 2), ("0.0.0.0/0", 3)]),
            None,
            &idx,
        );
        let r = |a: &str| t.route(a.parse().unwrap());
        assert_eq!(r("10.1.2.3"), Some(1));
        assert_eq!(r("10.2.2.3"), Some(0));
        assert_eq!(r("192.0.2.1"), Some(2));
        assert_eq!(r("2001:db8::1"), Some(0));
        let t2 = Table::build(conf(&[("10.1.0.0/16", 2)]), Some(&t), &idx);
        assert_eq!(t2.route("10.2.0.1".parse().unwrap()), None);
        // The kept peer kept its state (same index).
        assert_eq!(t2.peers[0].index, t.peers[1].index);
        assert_eq!(t2.by_index(t.peers[1].index), Some(0));
        assert_eq!(t2.by_key(&Key([2; 32])), Some(0));
    }
}
