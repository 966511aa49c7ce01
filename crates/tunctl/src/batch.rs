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

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::flags::{Flags, Offload};
use crate::offload::{gso_split, GroTable, OffloadError, VirtioNetHdr};
use crate::queue::Queue;

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

    /// Packet `i`. Panics if `i >= len()`, like slice indexing.
    pub fn packet(&self, i: usize) -> &[u8] {
        &self.bufs[i][self.offset..self.offset + self.lens[i]]
    }

    /// Packet `i`, mutable.
    pub fn packet_mut(&mut self, i: usize) -> &mut [u8] {
        self.verified[i] = false;
        &mut self.bufs[i][self.offset..self.offset + self.lens[i]]
    }

    /// Packet `i` with the headroom in front of it: write a tunnel header into the first
    /// `headroom` bytes and send the whole slice.
    pub fn with_headroom(&mut self, i: usize) -> &mut [u8] {
        let start = self.offset - self.headroom;
        self.verified[i] = false;
        &mut self.bufs[i][start..self.offset + self.lens[i]]
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
        assert!(i < self.count, "batch packet {i} of {}", self.count);
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

    /// Appends packet `i` of `other` (a forwarder moving packets between devices).
    ///
    /// # Errors
    ///
    /// As [`push`](Batch::push).
    pub fn push_from(&mut self, other: &Batch, i: usize) -> Result<()> {
        self.push(other.packet(i))
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
        let i = batch.count;
        if !vnet {
            let off = batch.offset;
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
        let Some(n) = self.read_now(&mut batch.read)? else {
            return Ok(false);
        };
        let frame = &batch.read[..n];
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
        Ok(true)
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
    /// on an offload device consecutive segments of a flow are coalesced first). Returns the
    /// number of packets of the batch sent. The batch is left coalesced: clear it after.
    ///
    /// # Errors
    ///
    /// As [`Queue::send`], at the first packet refused (those before it were sent, and the
    /// error does not say how many); [`ErrorKind::Unsupported`] on a `vnet_hdr` device as
    /// for [`recv_batch_timeout`](Queue::recv_batch_timeout).
    pub fn send_batch(&self, batch: &mut Batch) -> Result<usize> {
        if !self.batch_vnet("send_batch")? {
            for i in 0..batch.count {
                self.send(batch.packet(i))?;
            }
            return Ok(batch.count);
        }
        let offload = self.shared.offload();
        let tcp = offload.contains(Offload::TSO4 | Offload::TSO6);
        let udp = offload.contains(Offload::USO4 | Offload::USO6);
        let refused = self.shared.gso_refused.load(Ordering::Relaxed);
        let (off, n) = (batch.offset, batch.count);
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
        for k in 0..batch.order.len() {
            let i = batch.order[k];
            let frame = &batch.bufs[i][off - VirtioNetHdr::LEN..off + batch.lens[i]];
            match self.send(frame) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && frame[1] != 0 => {
                    // The kernel refused a GSO write: split it here and stop coalescing.
                    self.shared.gso_refused.store(true, Ordering::Relaxed);
                    self.send_split(batch, i)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(n)
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
