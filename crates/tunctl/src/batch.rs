//! [`Batch`]: many packets at once, each with headroom in front (room for a tunnel's own
//! header, so it is written without a copy), received with [`Queue::recv_batch`] and sent
//! with [`Queue::send_batch`]. On a device with offload ([`Builder::offload`]), a received
//! super-packet is split into MTU-sized packets (GSO), and a sent batch is coalesced into
//! super-packets (GRO) before it reaches the kernel; if the kernel ever refuses a GSO write
//! (EINVAL, as some vendor kernels do), that packet is split in userspace and later batches
//! skip coalescing.
//!
//! All buffers are allocated when the batch is made: the steady state allocates nothing.
//!
//! [`Builder::offload`]: crate::Builder::offload

#[cfg(feature = "io-uring")]
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::flags::{Flags, Offload};
use crate::offload::{gso_split, GroTable, OffloadError, VirtioNetHdr};
use crate::queue::{Queue, Take};

/// Room for the largest packet a device hands over.
const PACKET_ROOM: usize = 65536;
/// A super-packet needs this many free slots before a batch reads it: the most segments the
/// kernel puts in one (an offload device's `gso_max_segs` is set to it).
const SPLIT_RESERVE: usize = crate::offload::MAX_SEGMENTS;

/// A reusable set of packet buffers with headroom.
#[derive(Debug)]
pub struct Batch {
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
    /// Whether packet `i`'s checksum was computed here (a GSO split), so GRO need not check it.
    verified: Vec<bool>,
    count: usize,
    headroom: usize,
    /// Where packets start in each buffer: the headroom, and at least a virtio-net header.
    offset: usize,
    read: Vec<u8>,
    gro: GroTable,
    order: Vec<usize>,
    fallback: Vec<Vec<u8>>,
    fallback_lens: Vec<usize>,
    /// An error met after some packets were already read: returned by the next call.
    pending: Option<Error>,
    /// Packets of the batch the last `send_batch` sent.
    sent: usize,
}

impl Batch {
    /// A batch of `capacity` packets (1 to 1024), each with `headroom` bytes in front.
    /// A device with offload needs a capacity of at least 64 to take a split super-packet.
    pub fn new(capacity: usize, headroom: usize) -> Batch {
        let capacity = capacity.clamp(1, 1024);
        let offset = headroom.max(VirtioNetHdr::LEN);
        Batch {
            bufs: (0..capacity)
                .map(|_| vec![0u8; offset + PACKET_ROOM])
                .collect(),
            lens: vec![0; capacity],
            verified: vec![false; capacity],
            count: 0,
            headroom,
            offset,
            read: vec![0u8; VirtioNetHdr::LEN + PACKET_ROOM],
            gro: GroTable::new(false),
            order: Vec::with_capacity(capacity),
            fallback: Vec::new(),
            fallback_lens: Vec::new(),
            pending: None,
            sent: 0,
        }
    }

    /// How many packets the batch holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// How many packets it can hold.
    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }

    /// Empties the batch (keeps its buffers).
    pub fn clear(&mut self) {
        self.count = 0;
    }

    /// Packet `i`. Panics if `i >= len()`, like slice indexing: the slots past the last
    /// packet hold no packet, whatever bytes an earlier use left in them.
    pub fn packet(&self, i: usize) -> &[u8] {
        self.check(i);
        &self.bufs[i][self.offset..self.offset + self.lens[i]]
    }

    /// Packet `i`, or `None` if `i >= len()`.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        (i < self.count).then(|| self.packet(i))
    }

    /// Packet `i`, mutable. Panics if `i >= len()`.
    pub fn packet_mut(&mut self, i: usize) -> &mut [u8] {
        self.check(i);
        self.verified[i] = false;
        &mut self.bufs[i][self.offset..self.offset + self.lens[i]]
    }

    /// Packet `i` with the headroom in front of it: write a tunnel header into the first
    /// `headroom` bytes and send the whole slice. Panics if `i >= len()`.
    pub fn with_headroom(&mut self, i: usize) -> &mut [u8] {
        self.check(i);
        let start = self.offset - self.headroom;
        self.verified[i] = false;
        &mut self.bufs[i][start..self.offset + self.lens[i]]
    }

    /// Panics unless packet `i` exists.
    fn check(&self, i: usize) {
        assert!(
            i < self.count,
            "batch packet {i} of {}: index out of range",
            self.count
        );
    }

    /// The packets, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.count).map(move |i| self.packet(i))
    }

    /// Appends a copy of `packet`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] if the batch is full or the packet longer than 64 KiB.
    pub fn push(&mut self, packet: &[u8]) -> Result<()> {
        let i = self.count;
        if i == self.bufs.len() || packet.len() > PACKET_ROOM {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "batch push",
                format!(
                    "batch full ({} packets) or packet of {} bytes over 64 KiB",
                    self.bufs.len(),
                    packet.len()
                ),
            ));
        }
        self.bufs[i][self.offset..self.offset + packet.len()].copy_from_slice(packet);
        self.verified[i] = false;
        self.lens[i] = packet.len();
        self.count += 1;
        Ok(())
    }

    /// Extends packet `i` with zeros to `len` bytes (a tunnel's padding), in place; a
    /// `len` at or below the packet's length, or past 64 KiB, changes nothing. Returns the
    /// packet. Panics if `i >= len()`, like slice indexing.
    pub fn pad_to(&mut self, i: usize, len: usize) -> &[u8] {
        self.check(i);
        let off = self.offset;
        if len > self.lens[i] && len <= PACKET_ROOM {
            self.bufs[i][off + self.lens[i]..off + len].fill(0);
            self.lens[i] = len;
            self.verified[i] = false;
        }
        &self.bufs[i][off..off + self.lens[i]]
    }

    /// The next free slot (64 KiB), to write a packet into in place, for example by
    /// decrypting into it; [`commit`](Batch::commit) then appends it. `None` when the batch
    /// is full.
    pub fn spare(&mut self) -> Option<&mut [u8]> {
        let off = self.offset;
        self.bufs
            .get_mut(self.count)
            .map(|b| &mut b[off..off + PACKET_ROOM])
    }

    /// Appends the packet of `len` bytes written into [`spare`](Batch::spare). With
    /// `trusted`, [`Queue::send_batch`] coalesces it without checking its checksum: for
    /// packets whose integrity is already established (authenticated and decrypted ones).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] if the batch is full or `len` is over 64 KiB.
    pub fn commit(&mut self, len: usize, trusted: bool) -> Result<()> {
        let i = self.count;
        if i == self.bufs.len() || len > PACKET_ROOM {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "batch commit",
                format!("batch full or {len} bytes over 64 KiB"),
            ));
        }
        self.lens[i] = len;
        self.verified[i] = trusted;
        self.count += 1;
        Ok(())
    }

    /// How many packets the last [`Queue::send_batch`] of this batch sent: all of them,
    /// unless the kernel refused some or the device went away.
    pub fn sent(&self) -> usize {
        self.sent
    }

    /// Frame `k` as `send_batch` writes it: packet `k`, or on a `vnet_hdr` device the `k`th
    /// coalesced frame with its virtio-net header.
    fn frame(&self, k: usize, vnet: bool) -> &[u8] {
        let off = self.offset;
        if vnet {
            let i = self.order[k];
            &self.bufs[i][off - VirtioNetHdr::LEN..off + self.lens[i]]
        } else {
            &self.bufs[k][off..off + self.lens[k]]
        }
    }

    /// How many of the batch's packets frame `k` carries (a coalesced one, several).
    fn frame_packets(&self, k: usize, vnet: bool) -> usize {
        if !vnet {
            return 1;
        }
        let frame = self.frame(k, true);
        match VirtioNetHdr::parse(frame) {
            Ok(h) if h.gso_type != 0 && h.gso_size > 0 => {
                let payload =
                    (frame.len() - VirtioNetHdr::LEN).saturating_sub(usize::from(h.hdr_len));
                payload.div_ceil(usize::from(h.gso_size)).max(1)
            }
            _ => 1,
        }
    }

    /// Appends packet `i` of `other` (a forwarder moving packets between devices).
    ///
    /// # Errors
    ///
    /// As [`push`](Batch::push).
    pub fn push_from(&mut self, other: &Batch, i: usize) -> Result<()> {
        self.push(other.packet(i))
    }
}

/// A batch as the taker of packets from a queue's reading ring.
#[cfg_attr(not(feature = "io-uring"), allow(dead_code))]
struct Filling<'a> {
    queue: &'a Queue,
    batch: &'a mut Batch,
    vnet: bool,
    /// Free slots a packet may need (a split super-packet: 64).
    reserve: usize,
}

impl Take for Filling<'_> {
    fn room(&self) -> bool {
        self.batch.count + self.reserve <= self.batch.capacity()
    }

    fn take(&mut self, packet: &[u8]) -> Result<()> {
        self.queue.place(self.batch, packet, self.vnet)
    }
}

/// What the writes of a batch came to, frame by frame.
#[derive(Default)]
struct Outcome {
    /// The frames refused, with why, in frame order.
    failures: Vec<(usize, Error)>,
    /// The frame at which sending stopped (the device went away).
    stopped_at: Option<usize>,
    /// Raw OS errors of the ring, mapped once the writes are done.
    raw: Vec<(usize, std::io::Error)>,
}

impl Outcome {
    fn refused(&mut self, k: usize, e: Error) {
        self.failures.push((k, e));
    }

    #[cfg_attr(not(feature = "io-uring"), allow(dead_code))]
    fn failed(&mut self, k: usize, e: std::io::Error) {
        self.raw.push((k, e));
    }

    #[cfg_attr(not(feature = "io-uring"), allow(dead_code))]
    fn map_os_errors(&mut self, queue: &Queue) {
        let mut raw = std::mem::take(&mut self.raw);
        raw.sort_by_key(|(k, _)| *k);
        for (k, e) in raw {
            self.failures.push((k, queue.shared.io_error("send", e)));
        }
    }
}

fn offload_error(op: &str, err: OffloadError) -> Error {
    Error::new(ErrorKind::InvalidInput, op, err.to_string())
}

impl Queue {
    /// Whether packets carry a virtio-net header; refuses what a batch cannot parse.
    fn batch_vnet(&self, op: &str) -> Result<bool> {
        if !self.shared.flags_have(Flags::VNET_HDR) {
            return Ok(false);
        }
        let why = if !self.shared.flags_have(Flags::TUN) {
            Some("offload batches need a tun device (a tap's packets are Ethernet frames)")
        } else if !self.shared.flags_have(Flags::NO_PI) {
            Some("offload batches need a device without packet information")
        } else if self.shared.vnet_hdr_len() != VirtioNetHdr::LEN {
            Some("offload batches need the 10-byte virtio-net header (TUNSETVNETHDRSZ 10)")
        } else {
            None
        };
        match why {
            Some(why) => Err(Error::new(ErrorKind::Unsupported, op, why).on(self.device())),
            None => Ok(true),
        }
    }

    /// Reads one packet into the batch without waiting; `Ok(false)` if none is queued.
    fn take_one(&self, batch: &mut Batch, vnet: bool) -> Result<bool> {
        if !vnet {
            // Straight into the slot: no copy.
            let (i, off) = (batch.count, batch.offset);
            return Ok(match self.read_now(&mut batch.bufs[i][off..])? {
                Some(n) => {
                    batch.lens[i] = n;
                    batch.verified[i] = false;
                    batch.count += 1;
                    true
                }
                None => false,
            });
        }
        let mut read = std::mem::take(&mut batch.read);
        let got = self.read_now(&mut read);
        let placed = match got {
            Ok(Some(n)) => self.place(batch, &read[..n], true).map(|()| true),
            Ok(None) => Ok(false),
            Err(e) => Err(e),
        };
        batch.read = read;
        placed
    }

    /// Appends one packet as the device handed it over: on a `vnet_hdr` device, split into
    /// MTU-sized packets (GSO) after its virtio-net header.
    fn place(&self, batch: &mut Batch, frame: &[u8], vnet: bool) -> Result<()> {
        let i = batch.count;
        if !vnet {
            let off = batch.offset;
            // The ring's buffers hold a little more than a slot (a packet with packet
            // information at the largest MTU): refused as the readv path refuses it.
            let Some(slot) = batch.bufs[i].get_mut(off..off + frame.len()) else {
                return Err(Error::new(
                    ErrorKind::Truncated,
                    "recv_batch",
                    format!(
                        "a packet of {} bytes, longer than a slot's {}: dropped",
                        frame.len(),
                        batch.bufs[i].len().saturating_sub(off)
                    ),
                )
                .on(self.device()));
            };
            slot.copy_from_slice(frame);
            batch.lens[i] = frame.len();
            batch.verified[i] = false;
            batch.count += 1;
            return Ok(());
        }
        let hdr = VirtioNetHdr::parse(frame)
            .map_err(|e| offload_error("recv_batch", e).on(self.device()))?;
        let k = gso_split(
            &frame[VirtioNetHdr::LEN..],
            hdr,
            &mut batch.bufs[i..],
            &mut batch.lens[i..],
            batch.offset,
        )
        .map_err(|e| offload_error("recv_batch: GSO split", e).on(self.device()))?;
        // A split computes every segment's checksum (a super-packet always needs it, and so does
        // NEEDS_CSUM): those need no check before coalescing again.
        let computed = hdr.gso_type != 0 || hdr.flags & VirtioNetHdr::NEEDS_CSUM != 0;
        batch.verified[i..i + k].fill(computed);
        batch.count += k;
        Ok(())
    }

    /// Receives a batch: waits for the first packet (at most `timeout`; `None`: no limit), then
    /// takes whatever else is queued, without waiting, while the batch has room. On an offload
    /// device each super-packet arrives split into MTU-sized packets. Returns the number of
    /// packets (0 on timeout).
    ///
    /// # Errors
    ///
    /// As [`Queue::recv`]; on a `vnet_hdr` device, [`ErrorKind::Unsupported`] for a tap, packet
    /// information or a header size other than 10, [`ErrorKind::InvalidInput`] for a batch
    /// under 64 packets or a malformed super-packet. An error met after some packets were
    /// read is returned by the next call.
    pub fn recv_batch_timeout(
        &self,
        batch: &mut Batch,
        timeout: Option<Duration>,
    ) -> Result<usize> {
        batch.clear();
        if let Some(err) = batch.pending.take() {
            return Err(err);
        }
        let vnet = self.batch_vnet("recv_batch")?;
        let reserve = if vnet { SPLIT_RESERVE } else { 1 };
        if batch.capacity() < reserve {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "recv_batch",
                format!(
                    "a batch of {} cannot take a split super-packet: use {reserve} or more",
                    batch.capacity()
                ),
            )
            .on(self.device()));
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut into = Filling {
            queue: self,
            batch: &mut *batch,
            vnet,
            reserve,
        };
        if let Some(taken) = self.ring_recv(&mut into, deadline) {
            return taken.map(|_| batch.count);
        }
        while !self.take_one(batch, vnet)? {
            if !self.wait_readable(deadline)? {
                return Ok(0);
            }
        }
        // Packets already read are never lost to a later failure: that waits for the next call.
        while batch.count + reserve <= batch.capacity() {
            match self.take_one(batch, vnet) {
                Ok(true) => {}
                Ok(false) => break,
                Err(err) => {
                    batch.pending = Some(err);
                    break;
                }
            }
        }
        Ok(batch.count)
    }

    /// [`recv_batch_timeout`](Queue::recv_batch_timeout) with no time limit.
    ///
    /// # Errors
    ///
    /// As [`recv_batch_timeout`](Queue::recv_batch_timeout).
    pub fn recv_batch(&self, batch: &mut Batch) -> Result<usize> {
        self.recv_batch_timeout(batch, None)
    }

    /// Sends every packet of the batch, in order (one write per packet, or per super-packet:
    /// on an offload device consecutive segments of a flow are coalesced first). A packet
    /// the kernel refuses does not stop the others: every other packet is still sent. On
    /// the io_uring path ([`Queue::use_io_uring`]) the writes go out with one
    /// `io_uring_enter(2)`; otherwise each is one `pwritev2(2)`. Returns the number of
    /// packets of the batch sent (also [`Batch::sent`]). The batch is left coalesced: clear
    /// it after.
    ///
    /// # Errors
    ///
    /// The first refusal, when the kernel refused some packets (e.g. EINVAL for a malformed
    /// one): its detail says how many of the batch were sent nonetheless, and
    /// [`Batch::sent`] tells the number. [`ErrorKind::Closed`] or [`ErrorKind::Gone`] once
    /// the device is destroyed or deleted (what was sent before counts in [`Batch::sent`]);
    /// [`ErrorKind::Unsupported`] on a `vnet_hdr` device as for
    /// [`recv_batch_timeout`](Queue::recv_batch_timeout); [`ErrorKind::InvalidInput`] for
    /// an empty packet in it.
    pub fn send_batch(&self, batch: &mut Batch) -> Result<usize> {
        batch.sent = 0;
        let vnet = self.batch_vnet("send_batch")?;
        self.shared.check_open("send")?;
        let (off, n) = (batch.offset, batch.count);
        if let Some(i) = (0..n).find(|&i| batch.lens[i] == 0) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "send_batch",
                format!("packet {i} of the batch is empty; nothing sent"),
            )
            .on(self.device()));
        }
        let frames = if vnet {
            let offload = self.shared.offload();
            let tcp = offload.contains(Offload::TSO4 | Offload::TSO6);
            let udp = offload.contains(Offload::USO4 | Offload::USO6);
            let refused = self.shared.gso_refused.load(Ordering::Relaxed);
            batch.gro.set_protocols(tcp && !refused, udp && !refused);
            batch
                .gro
                .coalesce_trusted(
                    &mut batch.bufs[..n],
                    &mut batch.lens[..n],
                    &batch.verified[..n],
                    off,
                    &mut batch.order,
                )
                .map_err(|e| offload_error("send_batch: GRO", e).on(self.device()))?;
            batch.order.len()
        } else {
            n
        };
        let mut outcome = Outcome::default();
        // Frames from here on go out with system calls: all of them without a ring, the
        // rest of them if the ring failed to submit (it is closed then).
        #[cfg_attr(not(feature = "io-uring"), allow(unused_mut))]
        let mut from = 0;
        #[cfg(feature = "io-uring")]
        if let Some(rings) = self.rings() {
            let b: &Batch = batch;
            let mut reported = 0;
            let written = rings.writer().write(
                self.as_fd(),
                frames,
                |k| b.frame(k, vnet),
                |k, res| {
                    reported = reported.max(k + 1);
                    if let Err(e) = res {
                        outcome.failed(k, e);
                    }
                },
            );
            from = if written.is_ok() { frames } else { reported };
            outcome.map_os_errors(self);
        }
        let ring_end = from;
        for k in from..frames {
            let Err(e) = self.send(batch.frame(k, vnet)) else {
                continue;
            };
            // A GSO write the kernel refuses is split here and now, in its place (the
            // batch stays in order), and coalescing stops.
            let e = if Self::gso_refusal(batch, k, vnet, &e) {
                self.shared.gso_refused.store(true, Ordering::Relaxed);
                let i = batch.order[k];
                match self.send_split(batch, i) {
                    Ok(()) => continue,
                    Err(e) => e,
                }
            } else {
                e
            };
            let stop = matches!(e.kind(), ErrorKind::Closed | ErrorKind::Gone);
            outcome.refused(k, e);
            if stop {
                outcome.stopped_at = Some(k);
                break;
            }
        }
        self.settle(batch, vnet, frames, ring_end, outcome)
    }

    /// Whether `e`, for frame `k`, is the kernel refusing a GSO write (EINVAL).
    fn gso_refusal(batch: &Batch, k: usize, vnet: bool, e: &Error) -> bool {
        vnet && batch.frame(k, true)[1] != 0 && e.raw_os_error() == Some(libc::EINVAL)
    }

    /// Counts what was sent and reports the first refusal; a GSO frame the ring's write
    /// had refused (one of the first `ring_end`) is split and sent as plain packets now,
    /// after the rest of the batch (a ring's writes are not retried one by one).
    fn settle(
        &self,
        batch: &mut Batch,
        vnet: bool,
        frames: usize,
        ring_end: usize,
        outcome: Outcome,
    ) -> Result<usize> {
        let total = batch.count;
        // All went: nothing to look at per frame.
        if outcome.failures.is_empty() && outcome.stopped_at.is_none() {
            batch.sent = total;
            return Ok(total);
        }
        let mut first: Option<Error> = None;
        let mut lost = 0;
        let end = outcome.stopped_at.map_or(frames, |k| k + 1);
        let mut failures = outcome.failures.into_iter().peekable();
        for k in 0..frames {
            let failure = match failures.peek() {
                Some((j, _)) if *j == k => failures.next().map(|(_, e)| e),
                _ => None,
            };
            let failure = match failure {
                None if k < end => continue,
                None => Error::new(
                    ErrorKind::Closed,
                    "send_batch",
                    "not sent: the device went away",
                )
                .on(self.device()),
                Some(e) => e,
            };
            let failure = if k < ring_end && Self::gso_refusal(batch, k, vnet, &failure) {
                self.shared.gso_refused.store(true, Ordering::Relaxed);
                let i = batch.order[k];
                match self.send_split(batch, i) {
                    Ok(()) => continue,
                    Err(e) => e,
                }
            } else {
                failure
            };
            lost += batch.frame_packets(k, vnet);
            first.get_or_insert(failure);
        }
        let sent = total.saturating_sub(lost);
        batch.sent = sent;
        match first {
            None => Ok(sent),
            Some(e) => Err(e.and_then_detail(&format!(
                "{sent} of the batch's {} packets were sent, {lost} were not",
                sent + lost
            ))),
        }
    }

    /// Splits the super-packet in `batch` slot `i` and sends its segments one by one.
    fn send_split(&self, batch: &mut Batch, i: usize) -> Result<()> {
        let off = batch.offset;
        if batch.fallback.is_empty() {
            batch.fallback = (0..SPLIT_RESERVE)
                .map(|_| vec![0u8; VirtioNetHdr::LEN + PACKET_ROOM])
                .collect();
            batch.fallback_lens = vec![0; SPLIT_RESERVE];
        }
        let frame = &batch.bufs[i][off - VirtioNetHdr::LEN..off + batch.lens[i]];
        let hdr = VirtioNetHdr::parse(frame)
            .map_err(|e| offload_error("send_batch", e).on(self.device()))?;
        let k = gso_split(
            &frame[VirtioNetHdr::LEN..],
            hdr,
            &mut batch.fallback,
            &mut batch.fallback_lens,
            VirtioNetHdr::LEN,
        )
        .map_err(|e| offload_error("send_batch: GSO split", e).on(self.device()))?;
        for j in 0..k {
            let seg = &mut batch.fallback[j][..VirtioNetHdr::LEN + batch.fallback_lens[j]];
            seg[..VirtioNetHdr::LEN].fill(0);
            self.send(seg)?;
        }
        Ok(())
    }
}
