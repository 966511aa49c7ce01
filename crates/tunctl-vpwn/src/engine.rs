//! The WireGuard protocol engine behind one small interface, so it can be swapped (today
//! boringtun's sans-IO `noise` module; see README.md, "vpwn", for why).

use std::net::IpAddr;

use std::sync::Arc;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};

use crate::keys::{PublicKey, SecretKey};

/// Why the engine refused a datagram or a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Failed authentication: wrong key, bad MAC or AEAD tag.
    Auth,
    /// A replayed or too old counter.
    Replay,
    /// Not a WireGuard message, or a malformed one.
    Malformed,
    /// No session yet (a handshake is under way; the packet is queued or lost).
    NoSession,
    /// The session expired without a new handshake.
    Expired,
    /// Under load: answered with a cookie.
    UnderLoad,
}

/// What the engine asks the caller to do.
pub enum Out<'a> {
    /// Send this datagram to the peer.
    Network(&'a mut [u8]),
    /// Write this packet to the tunnel device; it came from this inner source address.
    Tunnel(&'a mut [u8], IpAddr),
    /// Nothing to do.
    Done,
    /// Dropped, for this reason.
    Dropped(Refusal),
}

/// The protocol engine of one peer: `&mut self` for everything (callers hold one lock per
/// batch, not per packet).
pub trait Engine: Send {
    /// Encrypts one packet for the peer (or starts a handshake and queues it).
    fn encapsulate<'a>(&mut self, packet: &[u8], out: &'a mut [u8]) -> Out<'a>;
    /// Handles one datagram from `from`; an empty datagram flushes what a handshake queued.
    fn decapsulate<'a>(
        &mut self,
        from: Option<IpAddr>,
        datagram: &[u8],
        out: &'a mut [u8],
    ) -> Out<'a>;
    /// Runs the protocol's timers (rekey, keepalive, retries): call every ~100 ms.
    fn tick<'a>(&mut self, out: &'a mut [u8]) -> Out<'a>;
}

/// This end's identity, shared by every peer's engine: the private key, and the rate
/// limiter every engine checks handshakes' mac1 with. That limiter never asks for cookies:
/// the handshake thread does, once per message, before an engine sees it (`crate::cookie`).
pub struct Gate {
    secret: boringtun::x25519::StaticSecret,
    public: boringtun::x25519::PublicKey,
    limiter: Arc<RateLimiter>,
}

impl Gate {
    /// The gate of a tunnel with this private key.
    pub fn new(private: &SecretKey) -> Gate {
        let secret = boringtun::x25519::StaticSecret::from(*private.bytes());
        let public = boringtun::x25519::PublicKey::from(&secret);
        Gate {
            limiter: Arc::new(RateLimiter::new(&public, u64::MAX)),
            secret,
            public,
        }
    }

    /// This end's public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(*self.public.as_bytes())
    }

    /// The static key of the initiator inside a handshake initiation, decrypted with our
    /// private key (one Diffie-Hellman); `None` if it is not one for us. Proves nothing
    /// about the sender: the peer's engine checks that it holds the key.
    pub fn initiator(&self, initiation: &[u8]) -> Option<PublicKey> {
        match Tunn::parse_incoming_packet(initiation) {
            Ok(Packet::HandshakeInit(init)) => {
                parse_handshake_anon(&self.secret, &self.public, &init)
                    .ok()
                    .map(|half| PublicKey(half.peer_static_public))
            }
            _ => None,
        }
    }

    /// An engine for one peer. `index` (below 2^24) tells its sessions apart from other
    /// peers' (a message's receiver index carries it in its top 24 bits). Persistent
    /// keepalives are the timers thread's, not the engine's (so a change keeps the session).
    pub fn engine(&self, peer: &PublicKey, psk: Option<&SecretKey>, index: u32) -> Box<dyn Engine> {
        Box::new(Boringtun(Tunn::new(
            self.secret.clone(),
            boringtun::x25519::PublicKey::from(peer.0),
            psk.map(|k| *k.bytes()),
            None,
            index & 0x00ff_ffff,
            Some(Arc::clone(&self.limiter)),
        )))
    }
}

/// boringtun's `Tunn`.
pub struct Boringtun(Tunn);

fn out_of(result: TunnResult<'_>) -> Out<'_> {
    match result {
        TunnResult::Done => Out::Done,
        TunnResult::WriteToNetwork(p) => Out::Network(p),
        TunnResult::WriteToTunnelV4(p, src) if p.len() >= 20 => Out::Tunnel(p, IpAddr::V4(src)),
        TunnResult::WriteToTunnelV6(p, src) if p.len() >= 40 => Out::Tunnel(p, IpAddr::V6(src)),
        // boringtun cuts a packet to the length in its header, even below the header itself
        // (an IPv4 total length under 20, down to an empty packet, which the device refuses
        // and with it the rest of the batch): not a packet, and its source is not in it.
        TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) => {
            Out::Dropped(Refusal::Malformed)
        }
        TunnResult::Err(e) => Out::Dropped(match e {
            WireGuardError::InvalidAeadTag
            | WireGuardError::InvalidMac
            | WireGuardError::WrongKey => Refusal::Auth,
            WireGuardError::InvalidCounter | WireGuardError::DuplicateCounter => Refusal::Replay,
            WireGuardError::NoCurrentSession => Refusal::NoSession,
            WireGuardError::ConnectionExpired => Refusal::Expired,
            WireGuardError::UnderLoad => Refusal::UnderLoad,
            _ => Refusal::Malformed,
        }),
    }
}

impl Engine for Boringtun {
    fn encapsulate<'a>(&mut self, packet: &[u8], buf: &'a mut [u8]) -> Out<'a> {
        out_of(self.0.encapsulate(packet, buf))
    }

    fn decapsulate<'a>(
        &mut self,
        from: Option<IpAddr>,
        datagram: &[u8],
        buf: &'a mut [u8],
    ) -> Out<'a> {
        out_of(self.0.decapsulate(from, datagram, buf))
    }

    fn tick<'a>(&mut self, buf: &'a mut [u8]) -> Out<'a> {
        out_of(self.0.update_timers(buf))
    }
}

/// Engines need a private key; a peer configured before one is given gets an engine that
/// refuses everything until it is (the table is rebuilt then). Also what a retired engine
/// leaves behind.
pub(crate) struct Inert;

impl Engine for Inert {
    fn encapsulate<'a>(&mut self, _: &[u8], _: &'a mut [u8]) -> Out<'a> {
        Out::Dropped(Refusal::NoSession)
    }
    fn decapsulate<'a>(&mut self, _: Option<IpAddr>, _: &[u8], _: &'a mut [u8]) -> Out<'a> {
        Out::Dropped(Refusal::Auth)
    }
    fn tick<'a>(&mut self, _: &'a mut [u8]) -> Out<'a> {
        Out::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer's packet whose IPv4 total length is under a header is dropped, not delivered
    /// cut to that length (found by fuzz/fuzz_targets/vpwn_wire.rs).
    #[test]
    fn a_packet_shorter_than_its_header_is_malformed() {
        let ours = SecretKey::from_bytes([0x11; 32]);
        let theirs = SecretKey::from_bytes([0x21; 32]);
        let gate = Gate::new(&ours);
        let mut engine = gate.engine(&theirs.public(), None, 1);
        let mut remote = Tunn::new(
            boringtun::x25519::StaticSecret::from(*theirs.bytes()),
            boringtun::x25519::PublicKey::from(ours.public().0),
            None,
            None,
            2,
            None,
        );
        let from = Some(IpAddr::from([192, 0, 2, 1]));
        let (mut a, mut b) = (vec![0u8; 2048], vec![0u8; 2048]);
        let TunnResult::WriteToNetwork(init) = remote.format_handshake_initiation(&mut a, false)
        else {
            panic!("no initiation");
        };
        let Out::Network(response) = engine.decapsulate(from, init, &mut b) else {
            panic!("no response");
        };
        let TunnResult::WriteToNetwork(keepalive) = remote.decapsulate(None, response, &mut a)
        else {
            panic!("no keepalive");
        };
        assert!(matches!(
            engine.decapsulate(from, keepalive, &mut b),
            Out::Done
        ));
        let mut packet = [0u8; 20];
        packet[0] = 0x45;
        packet[12..16].copy_from_slice(&[10, 0, 0, 2]);
        for (total, delivered) in [(0u16, false), (19, false), (20, true)] {
            packet[2..4].copy_from_slice(&total.to_be_bytes());
            let TunnResult::WriteToNetwork(datagram) = remote.encapsulate(&packet, &mut a) else {
                panic!("no datagram");
            };
            match engine.decapsulate(from, datagram, &mut b) {
                Out::Tunnel(p, src) => {
                    assert!(delivered, "total length {total} delivered");
                    assert_eq!((p.len(), src), (20, IpAddr::from([10, 0, 0, 2])));
                }
                Out::Dropped(Refusal::Malformed) => assert!(!delivered, "total length {total}"),
                _ => panic!("total length {total}: neither delivered nor malformed"),
            }
        }
    }
}
