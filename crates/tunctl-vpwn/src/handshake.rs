//! Handshake messages (initiations, responses, cookie replies) on a thread of their own,
//! behind a bounded queue, so that no amount of them slows the data path: the receive
//! thread only sorts datagrams by type and queues these (a full queue drops them, never
//! data); this thread checks their MACs and cookies ([`crate::cookie`]) before any
//! Diffie-Hellman, and hands the survivors to their peer's engine.
//!
//! "Under load", as wireguard-go decides it: the queue holds an eighth of its capacity or
//! more, and for a second after it last did. Then every initiation and response needs a
//! valid mac2 (else it gets a cookie reply), and each source address its share.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use std::sync::atomic::Ordering;

use crate::cookie::{Cookies, Verdict, COOKIE_REPLY, COOKIE_REPLY_LEN, INITIATION, RESPONSE};
use crate::device::{Shared, TICK};
use crate::engine::{Out, Refusal};
use crate::keys::PublicKey;
use crate::stats::Stats;
use crate::table::Table;
use crate::udp::{Endpoint, Source};

/// The most handshake messages waiting (wireguard-go's `QueueHandshakeSize`).
pub(crate) const CAPACITY: usize = 1024;
/// Under load from this backlog on.
const LOAD_BACKLOG: usize = CAPACITY / 8;
/// How long "under load" lasts after the backlog was last that long.
const LOAD_HOLD: Duration = Duration::from_secs(1);
/// The longest handshake message (an initiation).
pub(crate) const MAX_LEN: usize = crate::cookie::INITIATION_LEN;

/// One queued handshake message.
#[derive(Clone, Copy)]
pub(crate) struct Msg {
    /// Who sent it, and our local address it came to (answers leave from there).
    pub(crate) from: Endpoint,
    pub(crate) len: usize,
    pub(crate) buf: [u8; MAX_LEN],
}

impl Msg {
    /// A message of at most [`MAX_LEN`] bytes; `None` for a longer one.
    pub(crate) fn new(from: Endpoint, datagram: &[u8]) -> Option<Msg> {
        let mut buf = [0u8; MAX_LEN];
        buf.get_mut(..datagram.len())?.copy_from_slice(datagram);
        Some(Msg {
            from,
            len: datagram.len(),
            buf,
        })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The bounded queue between the receive thread and the handshake thread.
#[derive(Default)]
pub(crate) struct Queue {
    waiting: Mutex<VecDeque<Msg>>,
    ready: Condvar,
}

impl Queue {
    /// Queues what fits of `msgs` (emptied), in one lock and one wake-up; returns how many
    /// did not fit (dropped).
    pub(crate) fn push_all(&self, msgs: &mut Vec<Msg>) -> usize {
        if msgs.is_empty() {
            return 0;
        }
        let mut q = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let room = CAPACITY.saturating_sub(q.len());
        let dropped = msgs.len().saturating_sub(room);
        q.extend(msgs.drain(..).take(room));
        drop(q);
        self.ready.notify_one();
        dropped
    }

    /// Moves up to `max` waiting messages into `into`, waiting up to `timeout` for the
    /// first; returns the backlog there was (those taken and those left).
    pub(crate) fn pop_some(&self, into: &mut Vec<Msg>, max: usize, timeout: Duration) -> usize {
        let q = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let (mut q, _) = self
            .ready
            .wait_timeout_while(q, timeout, |q| q.is_empty())
            .unwrap_or_else(|p| p.into_inner());
        let backlog = q.len();
        let n = backlog.min(max);
        into.extend(q.drain(..n));
        backlog
    }
}

/// What the handshake thread sends, gathered for one `sendmmsg`: datagrams, each to its
/// own destination, from the local address its message came to.
#[derive(Default)]
pub(crate) struct Outbox {
    bytes: Vec<u8>,
    msgs: Vec<(std::ops::Range<usize>, Endpoint)>,
}

impl Outbox {
    pub(crate) fn push(&mut self, datagram: &[u8], to: Endpoint) {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(datagram);
        self.msgs.push((at..self.bytes.len(), to));
    }

    /// The datagrams, in order; emptied by [`clear`](Outbox::clear).
    pub(crate) fn datagrams(&self) -> Vec<(&[u8], SocketAddr, Option<Source>)> {
        self.msgs
            .iter()
            .map(|(r, to)| (&self.bytes[r.clone()], to.addr, to.src))
            .collect()
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.msgs.clear();
    }
}

/// Whether the handshake thread is under load (see the module docs).
pub(crate) struct Load {
    until: Option<Instant>,
}

impl Load {
    pub(crate) fn new() -> Load {
        Load { until: None }
    }

    /// Under load with this backlog, now?
    pub(crate) fn update(&mut self, backlog: usize) -> bool {
        let now = Instant::now();
        if backlog >= LOAD_BACKLOG {
            self.until = Some(now + LOAD_HOLD);
        }
        self.until.is_some_and(|t| now < t)
    }
}

/// Where the handshake thread's answers go: `(datagram, to, peer)`, the peer whose
/// engine produced it (`None` for a cookie reply, which is ours).
pub(crate) type Send<'a> = dyn FnMut(&[u8], Endpoint, Option<usize>) + 'a;

/// One handshake message: its MACs and cookie checked (`cookies` must be the table's
/// identity's), then its peer's engine; an accepted one also moves the peer's endpoint to
/// where it came from, and the engine's answer (and the packets it queued behind the
/// handshake) go out through `send`. `out` is scratch room for a datagram.
pub(crate) fn handle(
    table: &Table,
    stats: &Stats,
    cookies: &mut Cookies,
    under_load: bool,
    msg: &Msg,
    out: &mut [u8],
    send: &mut Send<'_>,
) {
    let datagram = msg.bytes();
    let Some(gate) = &table.gate else {
        Stats::add(&stats.drop_auth, 1);
        return;
    };
    let receiver = |at: usize| {
        datagram
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let peer = match datagram.first() {
        Some(&COOKIE_REPLY) if datagram.len() == COOKIE_REPLY_LEN => {
            receiver(4).and_then(|i| table.by_index(i >> 8))
        }
        Some(&INITIATION | &RESPONSE) => {
            match cookies.check(datagram, msg.from.addr, under_load, out) {
                Verdict::Pass => {}
                Verdict::Cookie(n) => {
                    send(&out[..n], msg.from, None);
                    return;
                }
                Verdict::Forged => {
                    Stats::add(&stats.drop_auth, 1);
                    return;
                }
                Verdict::Limited => {
                    Stats::add(&stats.drop_handshake_rate, 1);
                    return;
                }
            }
            if datagram[0] == INITIATION {
                gate.initiator(datagram).and_then(|k| table.by_key(&k))
            } else {
                receiver(8).and_then(|i| table.by_index(i >> 8))
            }
        }
        _ => {
            Stats::add(&stats.drop_malformed, 1);
            return;
        }
    };
    let Some(p) = peer else {
        // A well-formed message for no peer of ours: an unknown key or a stale session.
        Stats::add(&stats.drop_auth, 1);
        return;
    };
    let state = &table.peers[p];
    // An answer to a handshake of the engine the peer is retiring goes to that engine.
    let mut guard = match (
        datagram[0],
        receiver(if datagram[0] == RESPONSE { 8 } else { 4 }),
    ) {
        (RESPONSE | COOKIE_REPLY, Some(index)) => state.engine_for(index),
        _ => crate::peer::EngineGuard::Own(state.engine()),
    };
    let Some(engine) = guard.get() else {
        Stats::add(&stats.drop_auth, 1);
        return;
    };
    let result = engine.decapsulate(Some(msg.from.addr.ip()), datagram, out);
    let accepted = match &result {
        Out::Network(_) => true,
        // A cookie reply proves nothing about where the peer is.
        Out::Done => datagram[0] != COOKIE_REPLY,
        Out::Dropped(_) | Out::Tunnel(..) => false,
    };
    if accepted {
        // A response to a handshake of ours proves that session.
        if datagram[0] == RESPONSE {
            if let Some(i) = receiver(8) {
                state.confirm(i);
            }
        }
        state.set_path(msg.from);
        Stats::add(&state.rx_bytes, datagram.len());
    }
    match result {
        Out::Network(reply) => {
            send(reply, msg.from, Some(p));
            // Then what waited for the handshake: sent now, and counted as sent.
            for _ in 0..1024 {
                match engine.decapsulate(None, &[], out) {
                    Out::Network(queued) => {
                        send(queued, msg.from, Some(p));
                        Stats::add(&stats.tx_packets, 1);
                        let len = state.dequeue().unwrap_or(queued.len().saturating_sub(32));
                        Stats::add(&stats.tx_bytes, len);
                    }
                    _ => break,
                }
            }
        }
        Out::Dropped(why) => {
            // In this peer's name, or for its session: said in `show`.
            if why == Refusal::Auth {
                Stats::add(&state.auth_failures, 1);
            }
            stats.dropped(why)
        }
        Out::Done | Out::Tunnel(..) => {}
    }
}

/// The handshake thread: handshake messages from the queue, a batch at a time, through the
/// cookie checks to their peer's engine ([`crate::handshake::handle`]); what they answer
/// leaves in one `sendmmsg` per batch.
pub(crate) fn thread(shared: &Shared) {
    let mut cookies: Option<(PublicKey, Cookies)> = None;
    let mut load = Load::new();
    // Room for any datagram: after a handshake, the packets queued behind it (up to the
    // MTU, which may be 9000 or more) are sealed into this.
    let mut out = vec![0u8; crate::device::MAX_DATAGRAM];
    let mut batch = Vec::with_capacity(64);
    let mut outbox = Outbox::default();
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
            slot => &mut slot.insert((public, Cookies::new(&public))).1,
        };
        let mut send = |datagram: &[u8], to: Endpoint, peer: Option<usize>| {
            outbox.push(datagram, to);
            if let Some(p) = peer.and_then(|p| table.peers.get(p)) {
                Stats::add(&p.tx_bytes, datagram.len());
                p.sent();
            }
        };
        for msg in batch.drain(..) {
            handle(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_bounded_and_load_lingers() {
        let q = Queue::default();
        let from = Endpoint::new("192.0.2.1:1".parse().unwrap());
        let one = Msg::new(from, &[1; 148]).unwrap();
        assert!(Msg::new(from, &[1; 149]).is_none());
        let mut msgs = vec![one; CAPACITY + 10];
        assert_eq!(q.push_all(&mut msgs), 10);
        assert!(msgs.is_empty());
        let mut more = vec![one];
        assert_eq!(q.push_all(&mut more), 1);
        let mut taken = Vec::new();
        let backlog = q.pop_some(&mut taken, 64, Duration::ZERO);
        assert_eq!((backlog, taken.len()), (CAPACITY, 64));
        let mut load = Load::new();
        assert!(load.update(backlog));
        assert!(load.update(0), "load lingers for a second");
        load.until = Some(Instant::now());
        assert!(!load.update(0));
    }
}
