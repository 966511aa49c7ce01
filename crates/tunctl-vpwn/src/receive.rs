//! Network → device, one datagram at a time: the pipeline the receive thread runs on every
//! buffer it reads (and the fuzz target on every input).
//!
//! A buffer holds one datagram, or many of one flow coalesced by UDP GRO. Each is sorted by
//! its type: a data message goes to the peer its receiver index names, is decrypted
//! straight into a batch slot, and kept only if its inner source is in that peer's allowed
//! IPs (cryptokey routing); a handshake message is queued for the handshake thread
//! ([`crate::handshake`]), so that no flood of them delays data; anything else is dropped.
//! What authenticates tells where its peer is now (roaming) and proves its session.

use std::sync::atomic::Ordering;

use tunctl::{Batch, Device};

use crate::device::{Shared, MAX_DATAGRAM};

use crate::cookie::{COOKIE_REPLY, DATA, INITIATION, RESPONSE};
use crate::engine::{Out, Refusal};
use crate::handshake::Msg;
use crate::peer::EngineGuard;
use crate::stats::Stats;
use crate::table::Table;
use crate::udp::Endpoint;

/// The smallest data message: header (16) and tag (16), no payload (a keepalive).
const MIN_DATA: usize = 32;

/// What one buffer delivered: packets (and their bytes) committed to the batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub(crate) packets: usize,
    pub(crate) bytes: usize,
}

/// The message type of a datagram, if it is one (the three reserved bytes are zero).
fn kind(datagram: &[u8]) -> Option<u8> {
    match datagram {
        [t, 0, 0, 0, ..] => Some(*t),
        _ => None,
    }
}

/// The datagrams of a received buffer: `segment` bytes each (0: the buffer is one
/// datagram), the last possibly shorter, as UDP GRO coalesces them. An empty buffer is one
/// empty datagram (malformed, and counted so).
pub(crate) fn datagrams(buf: &[u8], segment: usize) -> impl Iterator<Item = &[u8]> {
    let size = if segment == 0 { buf.len() } else { segment };
    buf.chunks(size.max(1)).chain(buf.is_empty().then_some(buf))
}

/// The datagrams of one received buffer from `from` (its address, and our local address it
/// came to; see [`datagrams`]). Decrypted packets go into `batch` (`flush` writes a full one
/// out and must leave it empty); handshake messages are added to `handshakes`, for the
/// caller to queue.
pub(crate) fn buffer<'b>(
    table: &Table,
    stats: &Stats,
    from: Endpoint,
    datagrams: impl Iterator<Item = &'b [u8]>,
    batch: &mut Batch,
    handshakes: &mut Vec<Msg>,
    flush: &mut dyn FnMut(&mut Batch),
) -> Delivered {
    let mut delivered = Delivered::default();
    if table.gate.is_none() {
        // No private key: nothing is ours to read.
        Stats::add(&stats.drop_auth, datagrams.count());
        return delivered;
    }
    // The peer whose datagrams these are, the engine of theirs held across a run of them
    // (its own, or the one it is retiring), and the bytes it authenticated.
    let mut held: Option<(usize, EngineGuard<'_>)> = None;
    let mut heard = 0usize;
    for datagram in datagrams {
        match kind(datagram) {
            Some(DATA) if datagram.len() >= MIN_DATA => {}
            Some(INITIATION | RESPONSE | COOKIE_REPLY) => {
                match Msg::new(from, datagram) {
                    Some(m) => handshakes.push(m),
                    None => Stats::add(&stats.drop_malformed, 1),
                }
                continue;
            }
            _ => {
                Stats::add(&stats.drop_malformed, 1);
                continue;
            }
        }
        let receiver = u32::from_le_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]);
        let Some(p) = table.by_index(receiver >> 8) else {
            // A session of no peer of ours (an old one, or forged).
            Stats::add(&stats.drop_auth, 1);
            continue;
        };
        let state = &table.peers[p];
        let retiring = receiver >> 8 != state.index;
        if held
            .as_ref()
            .is_none_or(|(q, g)| *q != p || g.retiring() != retiring)
        {
            if let Some((q, _)) = held.take() {
                settle(table, q, from, heard);
                heard = 0;
            }
            held = Some((p, state.engine_for(receiver)));
        }
        let Some(engine) = held.as_mut().and_then(|(_, g)| g.get()) else {
            Stats::add(&stats.drop_auth, 1);
            continue;
        };
        if batch.spare().is_none() {
            flush(batch);
        }
        let Some(slot) = batch.spare() else {
            Stats::add(&stats.drop_no_session, 1);
            continue;
        };
        match engine.decapsulate(Some(from.addr.ip()), datagram, slot) {
            Out::Tunnel(packet, src) => {
                table.peers[p].confirm(receiver);
                heard += datagram.len();
                let len = packet.len();
                if table.route(src) != Some(p) {
                    Stats::add(&stats.drop_not_allowed, 1);
                } else if batch.commit(len, true).is_ok() {
                    delivered.packets += 1;
                    delivered.bytes += len;
                }
            }
            // A keepalive: the session works, the peer is there.
            Out::Done => {
                table.peers[p].confirm(receiver);
                heard += datagram.len();
            }
            Out::Dropped(why) => {
                if why == Refusal::Auth {
                    Stats::add(&table.peers[p].auth_failures, 1);
                }
                stats.dropped(why)
            }
            // A data message never asks for an answer.
            Out::Network(_) => {}
        }
    }
    if let Some((q, _)) = held.take() {
        settle(table, q, from, heard);
    }
    delivered
}

/// After `heard` authenticated bytes from `from`: the peer is there (roaming; answered from
/// where it sent to), and its received bytes grow.
fn settle(table: &Table, peer: usize, from: Endpoint, heard: usize) {
    if heard > 0 {
        if let Some(p) = table.peers.get(peer) {
            p.set_path(from);
            Stats::add(&p.rx_bytes, heard);
        }
    }
}

/// Network → device. `recvmmsg` takes many buffers at once, each possibly many datagrams of
/// one flow (UDP GRO), and each goes through the receive pipeline ([`crate::receive`]):
/// decrypted straight into a batch slot, which is written to the device, consecutive
/// segments of a TCP flow coalesced into super-packets (trusted: they were authenticated).
/// Handshake messages go to the handshake thread's queue, in one hand-over per read.
pub(crate) fn to_device(device: &Device, shared: &Shared) {
    let Some(queue) = device.queues().first() else {
        return;
    };
    const BUFFERS: usize = crate::udp::RECV_AT_ONCE;
    let mut bufs = vec![vec![0u8; MAX_DATAGRAM + 1]; BUFFERS];
    let mut got = [crate::udp::Received {
        len: 0,
        from: None,
        local: None,
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
        let mut delivered = Delivered::default();
        for (r, buf) in got[..n].iter().zip(&bufs) {
            let Some(addr) = r.from else { continue };
            let from = Endpoint { addr, src: r.local };
            if r.truncated {
                Stats::add(&stats.drop_oversized, 1);
                continue;
            }
            let d = buffer(
                &table,
                stats,
                from,
                datagrams(&buf[..r.len], r.segment),
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
