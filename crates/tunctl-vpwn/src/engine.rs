//! The WireGuard protocol engine behind one small interface, so it can be swapped (today
//! boringtun's sans-IO `noise` module; see README.md, "vpwn", for why).

use std::net::IpAddr;
use std::time::Duration;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Tunn, TunnResult};

use crate::keys::Key;

/// Why a datagram or packet went nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
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
    Dropped(Drop),
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
    /// Time since the last completed handshake, if any.
    fn since_handshake(&self) -> Option<Duration>;
}

/// boringtun's `Tunn`.
pub struct Boringtun(Tunn);

impl Boringtun {
    /// An engine for one peer.
    pub fn new(private: &Key, peer: &Key, psk: Option<&Key>, keepalive: Option<u16>) -> Boringtun {
        let index = u32::from_ne_bytes(
            Key::generate_preshared()
                .map(|k| [k.0[0], k.0[1], k.0[2], 0])
                .unwrap_or([1, 0, 0, 0]),
        ) >> 8;
        Boringtun(Tunn::new(
            boringtun::x25519::StaticSecret::from(private.0),
            boringtun::x25519::PublicKey::from(peer.0),
            psk.map(|k| k.0),
            keepalive,
            index,
            None,
        ))
    }
}

fn out(result: TunnResult<'_>) -> Out<'_> {
    match result {
        TunnResult::Done => Out::Done,
        TunnResult::WriteToNetwork(p) => Out::Network(p),
        TunnResult::WriteToTunnelV4(p, src) => Out::Tunnel(p, IpAddr::V4(src)),
        TunnResult::WriteToTunnelV6(p, src) => Out::Tunnel(p, IpAddr::V6(src)),
        TunnResult::Err(e) => Out::Dropped(match e {
            WireGuardError::InvalidAeadTag
            | WireGuardError::InvalidMac
            | WireGuardError::WrongKey => Drop::Auth,
            WireGuardError::InvalidCounter | WireGuardError::DuplicateCounter => Drop::Replay,
            WireGuardError::NoCurrentSession => Drop::NoSession,
            WireGuardError::ConnectionExpired => Drop::Expired,
            WireGuardError::UnderLoad => Drop::UnderLoad,
            _ => Drop::Malformed,
        }),
    }
}

impl Engine for Boringtun {
    fn encapsulate<'a>(&mut self, packet: &[u8], buf: &'a mut [u8]) -> Out<'a> {
        out(self.0.encapsulate(packet, buf))
    }

    fn decapsulate<'a>(
        &mut self,
        from: Option<IpAddr>,
        datagram: &[u8],
        buf: &'a mut [u8],
    ) -> Out<'a> {
        out(self.0.decapsulate(from, datagram, buf))
    }

    fn tick<'a>(&mut self, buf: &'a mut [u8]) -> Out<'a> {
        out(self.0.update_timers(buf))
    }

    fn since_handshake(&self) -> Option<Duration> {
        self.0.time_since_last_handshake()
    }
}
