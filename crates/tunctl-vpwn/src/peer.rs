//! One peer's live state: its protocol engine, where it is, what it sent and received, and
//! the session last proven to work.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
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
    /// Persistent keepalive, in seconds (0: off): kept here, not in the engine, so that a
    /// change takes effect at once and keeps the session.
    pub(crate) keepalive: AtomicU16,
    /// When we last sent the peer anything (ms since [`epoch`]).
    pub(crate) last_sent: AtomicU64,
    /// The engine this peer had before its preshared key changed: it still decrypts what the
    /// peer sends under the old session, until the new engine's first session is proven or
    /// [`RETIRE_AFTER`] passes (no burst of authentication failures).
    pub(crate) retiring: Mutex<Option<Retiring>>,
}

/// An engine kept only to decrypt its sessions' last datagrams.
pub(crate) struct Retiring {
    /// The engine, once taken from the peer state it served.
    engine: Option<Box<dyn Engine>>,
    /// The peer state of the table before, whose engine this is until it is first needed
    /// here: the table before goes on using it until the new one is in place.
    from: Option<Arc<PeerState>>,
    /// The index its sessions carry.
    pub(crate) index: u32,
    pub(crate) since: Instant,
}

impl Retiring {
    /// The engine of `from` (a peer state of the table before), to retire.
    pub(crate) fn of(from: &Arc<PeerState>) -> Retiring {
        Retiring {
            engine: None,
            from: Some(Arc::clone(from)),
            index: from.index,
            since: Instant::now(),
        }
    }

    /// The engine: on first use, taken from the peer state of the table before (which
    /// nothing reaches any more but a batch still in flight).
    pub(crate) fn engine(&mut self) -> &mut Box<dyn Engine> {
        let engine = match self.from.take() {
            Some(from) => std::mem::replace(&mut *from.engine(), Box::new(crate::engine::Inert)),
            None => self
                .engine
                .take()
                .unwrap_or_else(|| Box::new(crate::engine::Inert)),
        };
        self.engine.insert(engine)
    }
}

/// How long a retiring engine is kept at most (the protocol's REJECT_AFTER_TIME: no session
/// of it is valid longer).
pub(crate) const RETIRE_AFTER: Duration = Duration::from_secs(180);

/// The clock `last_sent` counts from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The engine a session index names, locked: the peer's own, or the one it is retiring.
pub(crate) enum EngineGuard<'a> {
    /// The peer's engine.
    Own(MutexGuard<'a, Box<dyn Engine>>),
    /// Its retiring engine (gone if it retired meanwhile).
    Retiring(MutexGuard<'a, Option<Retiring>>),
}

impl EngineGuard<'_> {
    /// The engine, if it is still there.
    pub(crate) fn get(&mut self) -> Option<&mut Box<dyn Engine>> {
        match self {
            EngineGuard::Own(e) => Some(&mut **e),
            EngineGuard::Retiring(r) => r.as_mut().map(Retiring::engine),
        }
    }

    /// Whether it is the retiring engine.
    pub(crate) fn retiring(&self) -> bool {
        matches!(self, EngineGuard::Retiring(_))
    }
}

impl PeerState {
    /// The engine whose sessions carry `index` (a receiver index's top 24 bits): the
    /// retiring one for its own index, else the peer's.
    pub(crate) fn engine_for(&self, index: u32) -> EngineGuard<'_> {
        if index >> 8 != self.index {
            let r = self.retiring.lock().unwrap_or_else(|p| p.into_inner());
            if r.as_ref().is_some_and(|r| r.index == index >> 8) {
                return EngineGuard::Retiring(r);
            }
        }
        EngineGuard::Own(self.engine())
    }

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

    /// Records that the session with local index `index` works (see `session`). A session
    /// of the current engine retires the one before it.
    pub(crate) fn confirm(&self, index: u32) {
        if self.session.load(Ordering::Relaxed) != index {
            self.session.store(index, Ordering::Relaxed);
            *self.confirmed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            *self.pending_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
            if index >> 8 == self.index {
                *self.retiring.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
        }
    }

    /// Something was just sent to the peer.
    pub(crate) fn sent(&self) {
        let ms = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_sent.store(ms, Ordering::Relaxed);
    }

    /// Whether a persistent keepalive is due: one is set, and nothing was sent for that long.
    pub(crate) fn keepalive_due(&self) -> bool {
        let every = u64::from(self.keepalive.load(Ordering::Relaxed)) * 1000;
        let now = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX);
        every > 0 && now.saturating_sub(self.last_sent.load(Ordering::Relaxed)) >= every
    }

    /// Drops a retiring engine kept longer than [`RETIRE_AFTER`].
    pub(crate) fn expire_retiring(&self) {
        let mut r = self.retiring.lock().unwrap_or_else(|p| p.into_inner());
        if r.as_ref()
            .is_some_and(|r| r.since.elapsed() >= RETIRE_AFTER)
        {
            *r = None;
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
