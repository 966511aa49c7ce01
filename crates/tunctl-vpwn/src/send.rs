//! Device → network: a batch of packets read from the device (a TSO super-packet arrives
//! split into MTU-sized packets), each routed to its peer by destination (cryptokey
//! routing), padded to 16 bytes within the MTU, and encrypted into one contiguous buffer;
//! each run of datagrams to one peer leaves in one `sendmsg` with `UDP_SEGMENT` (or one
//! `sendmmsg`).

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use tunctl::{Batch, Device, ErrorKind};

use crate::device::{Shared, TICK};
use crate::engine::Out;
use crate::stats::Stats;
use crate::table::Table;
use crate::udp::{Endpoint, Sock};

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
pub(crate) const OVERHEAD: usize = 32;

/// Datagrams of one peer waiting in the send buffer, to leave in one UDP GSO send: all of
/// `segment` bytes but the last, which may be shorter (and then ends the run).
struct Run {
    peer: usize,
    to: Endpoint,
    used: usize,
    segment: usize,
    count: usize,
    closed: bool,
}

/// Device → network. A batch of packets from the device (a TSO super-packet arrives split
/// into MTU-sized packets), each routed to its peer by destination (cryptokey routing),
/// padded to 16 bytes within the MTU, and encrypted into one contiguous buffer; each run of
/// datagrams to one peer leaves in one `sendmsg` with `UDP_SEGMENT` (or one `sendmmsg`).
pub(crate) fn to_network(device: &Device, shared: &Shared) {
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
        let mtu = shared.mtu.load(Ordering::Relaxed);
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
            // A new peer, or a full or closed run: send what is waiting, the engine's lock
            // let go first (a send may wait for room in the socket; nothing else may wait
            // behind it for this peer's engine).
            let padded = (n.div_ceil(16) * 16).min(mtu.max(n));
            let size = padded + OVERHEAD;
            let full = run.as_ref().is_some_and(|r| {
                r.peer != p
                    || r.closed
                    || size > r.segment
                    || r.count == crate::udp::MAX_GSO_SEGMENTS
                    || r.used + size > crate::udp::MAX_GSO_BYTES
            });
            if full {
                drop(engine_of.take());
                // A path that does not drain (the send waited its second for room): the rest
                // of this batch is lost rather than waited for, packet by packet.
                if !flush(&sock, &out, &mut run, &table) || shared.stop.load(Ordering::Acquire) {
                    break;
                }
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
                        None => peer.path(),
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
                // (and counts as sent) when the handshake completes.
                Out::Network(datagram) => {
                    let len = datagram.len();
                    drop(engine_of.take());
                    peer.queue(n);
                    peer.initiated();
                    match peer.path() {
                        Some(to) => {
                            let at = run.as_ref().map_or(0, |r| r.used);
                            let datagram = &out[at..at + len];
                            let _ = sock.io.send(&sock.udp, datagram, 0, to.addr, to.src);
                            peer.sent();
                            Stats::add(&peer.tx_bytes, len);
                        }
                        None => Stats::add(&stats.drop_no_session, 1),
                    }
                }
                // Queued behind a handshake under way: counted when it leaves.
                Out::Done => peer.queue(n),
                Out::Dropped(why) => stats.dropped(why),
                Out::Tunnel(..) => {}
            }
        }
        drop(engine_of);
        let _ = flush(&sock, &out, &mut run, &table);
        Stats::add(&stats.tx_packets, packets as usize);
        Stats::add(&stats.tx_bytes, bytes as usize);
    }
}

/// Sends the waiting run, if any. False when the socket had no room for it within its send
/// timeout.
fn flush(sock: &Sock, out: &[u8], run: &mut Option<Run>, table: &Table) -> bool {
    let Some(r) = run.take() else {
        return true;
    };
    let sent = sock
        .io
        .send(&sock.udp, &out[..r.used], r.segment, r.to.addr, r.to.src);
    if let Some(peer) = table.peers.get(r.peer) {
        Stats::add(&peer.tx_bytes, r.used);
        peer.sent();
    }
    !sent.is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock)
}
