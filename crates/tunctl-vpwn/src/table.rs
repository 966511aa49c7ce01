//! The live configuration of a running tunnel: its identity, each peer's state, the
//! allowed IPs (cryptokey routing, [`AllowedIps`]) and the session-index and key maps. A
//! [`Table`] is immutable; a new configuration builds a new one that keeps the state of
//! the peers it keeps, and the data path swaps it in between batches.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::allowedips::AllowedIps;
use crate::config::{Config, Peer};
use crate::engine::{Engine, Gate};
use crate::keys::PublicKey;
use crate::peer::PeerState;
use crate::uapi::PeerStatus;

/// A configuration, made live.
pub(crate) struct Table {
    pub(crate) conf: Config,
    /// This end's identity; `None` without a private key (nothing is sent or accepted).
    pub(crate) gate: Option<Arc<Gate>>,
    /// Parallel to `conf.peers`.
    pub(crate) peers: Vec<Arc<PeerState>>,
    allowed: AllowedIps,
    by_index: HashMap<u32, usize>,
    by_key: HashMap<PublicKey, usize>,
}

impl Table {
    /// The table of `conf`, keeping the live state of `old`'s peers where their key, our
    /// private key, their preshared key and keepalive are unchanged. A peer whose
    /// `endpoint` was just set (`endpoints`: by the request that made `conf`) goes there
    /// even if it has roamed elsewhere since; others keep where they were last heard.
    pub(crate) fn build(
        conf: Config,
        old: Option<&Table>,
        indexes: &AtomicU32,
        endpoints: &[PublicKey],
    ) -> Table {
        let same_identity = old.is_some_and(|o| o.conf.private_key == conf.private_key);
        let gate = match old {
            Some(o) if same_identity => o.gate.clone(),
            _ => conf.private_key.as_ref().map(|k| Arc::new(Gate::new(k))),
        };
        let mut peers = Vec::with_capacity(conf.peers.len());
        for p in &conf.peers {
            let prev = old.and_then(|o| {
                let i = *o.by_key.get(&p.public_key)?;
                Some((&o.peers[i], &o.conf.peers[i]))
            });
            // The same peer, the same keys: the same engine, whatever else changed (a new
            // keepalive takes effect at once).
            let kept = prev.filter(|(_, q)| same_identity && q.preshared_key == p.preshared_key);
            let state = match kept {
                Some((state, _)) => Arc::clone(state),
                // A new peer, or one whose engine must start again: counters and a roamed
                // endpoint carry over, and for a new preshared key, the old engine stays to
                // decrypt its sessions' last datagrams.
                None => Arc::new(new_peer(
                    gate.as_deref(),
                    p,
                    prev.map(|(s, _)| s).filter(|_| same_identity),
                    indexes,
                )),
            };
            state.keepalive.store(p.keepalive, Ordering::Relaxed);
            if let Some(e) = p.endpoint.filter(|_| endpoints.contains(&p.public_key)) {
                state.set_endpoint(e);
            }
            peers.push(state);
        }
        let allowed = AllowedIps::new(
            conf.peers
                .iter()
                .enumerate()
                .flat_map(|(i, p)| p.allowed_ips.iter().map(move |net| (net, i))),
        );
        let mut by_index: HashMap<u32, usize> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.index, i))
            .collect();
        for (i, p) in peers.iter().enumerate() {
            if let Some(r) = p
                .retiring
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                by_index.entry(r.index).or_insert(i);
            }
        }
        let by_key = conf
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.public_key, i))
            .collect();
        Table {
            allowed,
            by_index,
            by_key,
            gate,
            peers,
            conf,
        }
    }

    /// The peer whose allowed IPs hold `addr` (longest prefix).
    pub(crate) fn route(&self, addr: IpAddr) -> Option<usize> {
        self.allowed.lookup(addr)
    }

    /// The peer whose sessions carry `index`.
    pub(crate) fn by_index(&self, index: u32) -> Option<usize> {
        self.by_index.get(&index).copied()
    }

    /// The peer with this public key.
    pub(crate) fn by_key(&self, key: &PublicKey) -> Option<usize> {
        self.by_key.get(key).copied()
    }

    /// Each peer's status, in configuration order.
    pub(crate) fn status(&self) -> Vec<PeerStatus> {
        self.peers.iter().map(|p| p.status()).collect()
    }
}

fn new_peer(
    gate: Option<&Gate>,
    p: &Peer,
    prev: Option<&Arc<PeerState>>,
    indexes: &AtomicU32,
) -> PeerState {
    let index = indexes.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
    let engine: Box<dyn Engine> = match gate {
        Some(g) => g.engine(&p.public_key, p.preshared_key.as_ref(), index),
        None => Box::new(crate::engine::Inert),
    };
    // The engine it replaces (a new preshared key): kept to decrypt what is still in flight.
    // It is taken when first needed, so the table before keeps it until this one is live.
    let retiring = prev.map(crate::peer::Retiring::of);
    let load = |f: fn(&PeerState) -> &AtomicU64| prev.map_or(0, |s| f(s).load(Ordering::Relaxed));
    PeerState {
        engine: Mutex::new(engine),
        endpoint: Mutex::new(
            prev.and_then(|s| s.path())
                .or(p.endpoint.map(crate::udp::Endpoint::new)),
        ),
        index,
        tx_bytes: AtomicU64::new(load(|s| &s.tx_bytes)),
        rx_bytes: AtomicU64::new(load(|s| &s.rx_bytes)),
        session: AtomicU32::new(0),
        confirmed: Mutex::new(
            prev.and_then(|s| *s.confirmed.lock().unwrap_or_else(|p| p.into_inner())),
        ),
        pending_since: Mutex::new(None),
        auth_failures: AtomicU64::new(load(|s| &s.auth_failures)),
        queued: Mutex::new(std::collections::VecDeque::new()),
        keepalive: AtomicU16::new(p.keepalive),
        last_sent: AtomicU64::new(0),
        retiring: Mutex::new(retiring),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    fn conf(peers: &[(&str, u8)]) -> Config {
        Config {
            private_key: Some(SecretKey::from_bytes([7; 32])),
            peers: peers
                .iter()
                .map(|(nets, k)| Peer {
                    allowed_ips: nets.split(',').map(|n| n.parse().unwrap()).collect(),
                    ..Peer::new(PublicKey([*k; 32]))
                })
                .collect(),
            ..Config::default()
        }
    }

    #[test]
    fn peers_keep_their_state_and_routes_follow_the_configuration() {
        let idx = AtomicU32::new(1);
        let t = Table::build(
            conf(&[("10.0.0.0/8,::/0", 1), ("10.1.0.0/16", 2), ("0.0.0.0/0", 3)]),
            None,
            &idx,
            &[],
        );
        let r = |a: &str| t.route(a.parse().unwrap());
        assert_eq!(r("10.1.2.3"), Some(1));
        assert_eq!(r("10.2.2.3"), Some(0));
        assert_eq!(r("192.0.2.1"), Some(2));
        assert_eq!(r("2001:db8::1"), Some(0));
        let t2 = Table::build(conf(&[("10.1.0.0/16", 2)]), Some(&t), &idx, &[]);
        assert_eq!(t2.route("10.2.0.1".parse().unwrap()), None);
        // The kept peer kept its state (same index).
        assert_eq!(t2.peers[0].index, t.peers[1].index);
        assert_eq!(t2.by_index(t.peers[1].index), Some(0));
        assert_eq!(t2.by_key(&PublicKey([2; 32])), Some(0));
        // An endpoint set again applies even where the peer has roamed.
        let home: std::net::SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let mut c = conf(&[("10.1.0.0/16", 2)]);
        c.peers[0].endpoint = Some(home);
        let t3 = Table::build(c.clone(), Some(&t2), &idx, &[PublicKey([2; 32])]);
        assert_eq!(t3.peers[0].endpoint(), Some(home));
        t3.peers[0].set_endpoint("198.51.100.9:4000".parse().unwrap());
        let t4 = Table::build(c.clone(), Some(&t3), &idx, &[]);
        assert_ne!(
            t4.peers[0].endpoint(),
            Some(home),
            "a set without it leaves the roamed one"
        );
        let t5 = Table::build(c, Some(&t4), &idx, &[PublicKey([2; 32])]);
        assert_eq!(
            t5.peers[0].endpoint(),
            Some(home),
            "wg syncconf moves it back"
        );
    }
}
