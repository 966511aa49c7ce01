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
    /// The bytes of its packets before encryption (what `tx_bytes` counts).
    inner: usize,
    closed: bool,
}

impl Run {
    /// Whether a datagram of `size` bytes for `peer` can join this run.
    fn takes(&self, peer: usize, size: usize) -> bool {
        self.peer == peer
            && !self.closed
            && size <= self.segment
            && self.count < crate::udp::MAX_GSO_SEGMENTS
            && self.used + size <= crate::udp::MAX_GSO_BYTES
    }
}

/// What a batch became: the packets sent and their bytes (those waiting for a handshake
/// count when they leave).
#[derive(Default)]
struct Sent {
    packets: usize,
    bytes: usize,
}

/// One batch on its way out: the send buffer, the run waiting in it, and the engine of the
/// peer being encrypted for (held across that peer's packets, let go before any send).
struct Sender<'a> {
    table: &'a Table,
    sock: &'a Sock,
    stats: &'a Stats,
    out: &'a mut [u8],
    run: Option<Run>,
    engine: Option<(
        usize,
        std::sync::MutexGuard<'a, Box<dyn crate::engine::Engine>>,
    )>,
    sent: Sent,
}

/// What to do next with a batch.
enum Next {
    Go,
    /// The path does not drain (a send waited its second for room), or the tunnel stops:
    /// the rest of the batch is lost rather than waited for, packet by packet.
    Stop,
}

impl<'a> Sender<'a> {
    /// Sends the waiting run, if any. False when the socket had no room for it within its
    /// send timeout.
    fn flush(&mut self) -> bool {
        let Some(r) = self.run.take() else {
            return true;
        };
        let sent = self.sock.io.send(
            &self.sock.udp,
            &self.out[..r.used],
            r.segment,
            r.to.addr,
            r.to.src,
        );
        // Counted as sent only once sent: a run the socket refused is lost, not sent.
        match sent {
            Ok(_) => {
                self.sent.packets += r.count;
                self.sent.bytes += r.inner;
                if let Some(peer) = self.table.peers.get(r.peer) {
                    Stats::add(&peer.tx_bytes, r.used);
                    peer.sent();
                }
                true
            }
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }

    /// One packet of `n` bytes (padded to `padded` in place) for peer `p`: encrypted into
    /// the run, or sent as the handshake it starts, or queued behind one.
    fn packet(&mut self, p: usize, packet: &[u8], n: usize) -> Next {
        let peer = &self.table.peers[p];
        let size = packet.len() + OVERHEAD;
        // A new peer, or a full or closed run: send what is waiting, the engine's lock let
        // go first (a send may wait for room in the socket; nothing may wait behind it for
        // this peer's engine).
        if self.run.as_ref().is_some_and(|r| !r.takes(p, size)) {
            self.engine = None;
            if !self.flush() {
                return Next::Stop;
            }
        }
        if self.engine.as_ref().is_none_or(|(q, _)| *q != p) {
            self.engine = Some((p, peer.engine()));
        }
        let Some((_, engine)) = self.engine.as_mut() else {
            return Next::Go;
        };
        let at = self.run.as_ref().map_or(0, |r| r.used);
        match engine.encapsulate(packet, &mut self.out[at..]) {
            // Data (by its type, not its length: at an MTU of 116 a data packet is as long
            // as an initiation).
            Out::Network(datagram) if datagram.first() == Some(&crate::cookie::DATA) => {
                let Some(to) = self.run.as_ref().map(|r| r.to).or_else(|| peer.path()) else {
                    Stats::add(&self.stats.drop_no_session, 1);
                    return Next::Go;
                };
                let r = self.run.get_or_insert(Run {
                    peer: p,
                    to,
                    used: 0,
                    segment: size,
                    count: 0,
                    inner: 0,
                    closed: false,
                });
                r.used += size;
                r.count += 1;
                r.inner += n;
                r.closed = size < r.segment;
            }
            // A handshake initiation: the packet waits in the engine's queue, and leaves (and
            // counts as sent) when the handshake completes.
            Out::Network(datagram) => {
                let len = datagram.len();
                self.engine = None;
                peer.queue(n);
                peer.initiated();
                match peer.path() {
                    Some(to) => {
                        let datagram = &self.out[at..at + len];
                        // Never waits for room in the socket (as the timers and handshake
                        // threads): a full socket drops it, and the handshake is retried.
                        let _ = self
                            .sock
                            .io
                            .try_send(&self.sock.udp, datagram, to.addr, to.src);
                        Stats::add(&peer.tx_bytes, len);
                        peer.sent();
                    }
                    None => Stats::add(&self.stats.drop_no_session, 1),
                }
            }
            // Queued behind a handshake under way: counted when it leaves.
            Out::Done => peer.queue(n),
            Out::Dropped(why) => self.stats.dropped(why),
            Out::Tunnel(..) => {}
        }
        Next::Go
    }
}

/// The peer a packet goes to (cryptokey routing by its destination), or why none.
fn route(table: &Table, stats: &Stats, packet: &[u8]) -> Option<usize> {
    let dst = destination(packet);
    let p = dst.and_then(|d| table.route(d));
    // Multicast with no peer for it (the kernel's own router solicitations and MLD reports
    // on a fresh device): WireGuard carries it only where an allowed IP says so, and its
    // absence is no fault.
    if p.is_none() && !dst.is_some_and(|d| d.is_multicast()) {
        Stats::add(&stats.drop_no_route, 1);
    }
    p
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
        let mut sender = Sender {
            table: &table,
            sock: &sock,
            stats,
            out: &mut out,
            run: None,
            engine: None,
            sent: Sent::default(),
        };
        for i in 0..batch.len() {
            let n = batch.packet(i).len();
            let Some(p) = route(&table, stats, batch.packet(i)) else {
                continue;
            };
            let padded = (n.div_ceil(16) * 16).min(mtu.max(n));
            let next = sender.packet(p, batch.pad_to(i, padded), n);
            if matches!(next, Next::Stop) || shared.stop.load(Ordering::Acquire) {
                break;
            }
        }
        sender.engine = None;
        let _ = sender.flush();
        Stats::add(&stats.tx_packets, sender.sent.packets);
        Stats::add(&stats.tx_bytes, sender.sent.bytes);
    }
}
