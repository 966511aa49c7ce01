//! One peer's live state: its protocol engine, where it is, what it sent and received, and
//! the session last proven to work.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::engine::Engine;
use crate::uapi::PeerStatus;
use crate::udp::Endpoint;

/// One peer's live state.
pub(crate) struct PeerState {
    pub(crate) engine: Mutex<Box<dyn Engine>>,
    pub(crate) endpoint: Mutex<Option<Endpoint>>,
    /// The index its sessions carry (see [`Gate::engine`]).
    pub(crate) index: u32,
    pub(crate) tx_bytes: AtomicU64,
    pub(crate) rx_bytes: AtomicU64,
    /// The local index of the last session known to work (0: none yet), and when it was
    /// confirmed: by an accepted handshake response (we initiated), or by the first
    /// datagram decrypted under it (the peer initiated). boringtun's own clock starts when
    /// a responder answers, before the initiator proves it holds the keys (a wrong
    /// preshared key would look like a handshake).
    pub(crate) session: AtomicU32,
    pub(crate) confirmed: Mutex<Option<Instant>>,
    /// Since when we have been waiting for an answer to an initiation of ours (none when
    /// a session is confirmed): what `show` and `up` report as a stalled handshake.
    pub(crate) pending_since: Mutex<Option<Instant>>,
    /// Datagrams for this peer's sessions (or in its name) that failed authentication: a
    /// wrong preshared key, or someone else's key.
    pub(crate) auth_failures: AtomicU64,
    /// The lengths of the packets waiting in the engine for a handshake (as many as it
    /// keeps): counted as sent when they leave.
    pub(crate) queued: Mutex<std::collections::VecDeque<u16>>,
}

impl PeerState {
    pub(crate) fn engine(&self) -> MutexGuard<'_, Box<dyn Engine>> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the peer is (its address only).
    pub(crate) fn endpoint(&self) -> Option<SocketAddr> {
        self.path().map(|e| e.addr)
    }

    /// Where the peer is, and which local address our datagrams to it leave from.
    pub(crate) fn path(&self) -> Option<Endpoint> {
        *self.endpoint.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The peer was heard from `to`, on our local address `src` (roaming, sticky source).
    pub(crate) fn set_path(&self, to: Endpoint) {
        let mut e = self.endpoint.lock().unwrap_or_else(|p| p.into_inner());
        if *e != Some(to) {
            *e = Some(to);
        }
    }

    /// The peer is at `to` (configured: the local address is routing's choice again).
    pub(crate) fn set_endpoint(&self, to: SocketAddr) {
        self.set_path(Endpoint::new(to));
    }

    /// Records that the session with local index `index` works (see `session`).
    pub(crate) fn confirm(&self, index: u32) {
        if self.session.load(Ordering::Relaxed) != index {
            self.session.store(index, Ordering::Relaxed);
            *self.confirmed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            *self.pending_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// Records that an initiation of ours went out (the first one unanswered starts the
    /// wait).
    pub(crate) fn initiated(&self) {
        let mut p = self.pending_since.lock().unwrap_or_else(|p| p.into_inner());
        if p.is_none() {
            *p = Some(Instant::now());
        }
    }

    /// A packet of `len` bytes waits in the engine for a handshake.
    pub(crate) fn queue(&self, len: usize) {
        let mut q = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        // The engine keeps 256 and drops what comes after.
        if q.len() < 256 {
            q.push_back(u16::try_from(len).unwrap_or(u16::MAX));
        }
    }

    /// The length of the packet that left after a handshake (the oldest waiting).
    pub(crate) fn dequeue(&self) -> Option<usize> {
        self.queued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
            .map(usize::from)
    }

    /// How long we have been waiting for an answer to our initiations, if we are.
    pub(crate) fn handshake_pending(&self) -> Option<Duration> {
        self.pending_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
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
