//! io_uring rings of a queue (feature `io-uring`, the `io-uring` crate): one ring that reads
//! the queue with a multishot read (`IORING_OP_READ_MULTISHOT`, Linux 6.7) into a ring of
//! provided buffers (`IORING_REGISTER_PBUF_RING`, 5.19), and one that writes a batch of
//! packets with one `IORING_OP_WRITE` each and one `io_uring_enter(2)` for all of them.
//!
//! Both rings are set up with `IORING_SETUP_COOP_TASKRUN`: the kernel does not interrupt the
//! thread to run a read that a packet made possible; it runs it when the thread next enters
//! the kernel (any system call), so a forwarder that writes a batch on one ring finds the next
//! batch read on the other when it returns, without a system call of its own.
//!
//! Kernel memory safety rests on two rules kept here: the provided buffers and the buffer
//! ring live until the multishot read has ended (it is cancelled, and its last completion
//! awaited, before they are freed), and a batch of writes is awaited whole before the call
//! that borrowed its packets returns.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::types::{BufRingEntry, Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, IoUring};

/// Room for the largest packet a device hands over (a 64 KiB GSO packet plus the virtio-net
/// and packet-information headers), plus one byte to tell a longer one.
pub const BUFFER_SIZE: usize = 65536 + 64 + 1;
/// Provided buffers per read ring (a power of two): the most packets read ahead.
pub const BUFFERS: u16 = 128;
/// The buffer group of the read ring's buffers.
const GROUP: u16 = 0;
/// `user_data` of the multishot read, and of its cancellation.
const READ: u64 = 1;
const CANCEL: u64 = 2;
/// Submission entries of the write ring: the most writes one `io_uring_enter` submits.
pub const WRITE_ENTRIES: u32 = 256;
/// A wait for packets returns once this many are read, or ...
const GATHER: usize = 32;
/// ... once this long has passed and at least one is (IORING_FEAT_MIN_TIMEOUT).
const GATHER_WAIT_USEC: u32 = 20;
/// How long dropping a ring waits for its multishot read to end before it gives up (and
/// leaks the buffers rather than free memory the kernel may still write).
const CANCEL_WAIT: Duration = Duration::from_secs(2);

/// A ring set up for packet I/O: cooperative task running where the kernel has it (5.19),
/// a plain ring elsewhere.
fn new_ring(entries: u32, cq: u32) -> io::Result<IoUring> {
    match IoUring::builder()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .setup_cqsize(cq)
        .build(entries)
    {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            IoUring::builder().setup_cqsize(cq).build(entries)
        }
        other => other,
    }
}

/// Whether the kernel knows every opcode of `codes` (`IORING_REGISTER_PROBE`, 5.6).
fn supports(ring: &IoUring, codes: &[u8]) -> io::Result<()> {
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    if codes.iter().all(|&c| probe.is_supported(c)) {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }
}

/// Page-aligned, zeroed memory the kernel reads from or writes into; freed on drop unless
/// leaked.
struct Region {
    ptr: *mut u8,
    layout: Layout,
}

impl Region {
    fn new(size: usize) -> io::Result<Region> {
        let layout = Layout::from_size_align(size, 4096)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: `layout` has a non-zero size (every caller asks for at least one page).
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        Ok(Region { ptr, layout })
    }
}

impl Region {
    /// No memory (what a leaked region leaves in its place).
    fn none() -> Region {
        Region {
            ptr: std::ptr::null_mut(),
            layout: Layout::new::<u8>(),
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: allocated in `new` with this layout, freed once.
            unsafe { dealloc(self.ptr, self.layout) }
        }
    }
}

/// One completed read of the multishot request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// A packet of `len` bytes in buffer `buffer` (see [`ReadRing::packet`]); give the buffer
    /// back with [`ReadRing::recycle`] once done with it.
    Packet {
        /// The provided buffer holding it.
        buffer: u16,
        /// Its length as the driver reported it (more than [`BUFFER_SIZE`] - 1: truncated).
        len: usize,
    },
    /// The read failed with this errno; the multishot request has ended.
    Error(i32),
}

/// The reading ring of one queue fd: a multishot read into [`BUFFERS`] provided buffers.
pub struct ReadRing {
    /// `None` only while dropping.
    ring: Option<IoUring>,
    /// The queue's fd: the queue owns it and drops this ring first.
    fd: RawFd,
    buffers: Region,
    entries: Region,
    /// Our copy of the buffer ring's tail.
    tail: u16,
    /// Whether the multishot read is submitted (or queued for submission) and not ended.
    armed: bool,
}

// SAFETY: the raw pointers are to memory this value owns; the ring is used by one thread at a
// time (the queue keeps it behind a mutex).
unsafe impl Send for ReadRing {}

impl ReadRing {
    /// A ring reading `fd` (which must outlive it), its buffers provided. Fails with the
    /// kernel's refusal: `EPERM` or `ENOSYS` where io_uring is blocked or disabled
    /// (seccomp, `kernel.io_uring_disabled`), `EOPNOTSUPP` before Linux 6.7 (no multishot
    /// read), `EINVAL` before 5.19 (no buffer rings).
    pub fn new(fd: BorrowedFd<'_>) -> io::Result<ReadRing> {
        let ring = new_ring(8, 2 * u32::from(BUFFERS))?;
        supports(&ring, &[opcode::ReadMulti::CODE, opcode::AsyncCancel::CODE])?;
        let buffers = Region::new(usize::from(BUFFERS) * BUFFER_SIZE)?;
        let entries = Region::new(usize::from(BUFFERS) * std::mem::size_of::<BufRingEntry>())?;
        // SAFETY: `entries` is page-aligned, holds BUFFERS entries and lives as long as the
        // ring (see Drop, which ends the read and drops the ring before freeing it).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries.ptr as u64, BUFFERS, GROUP, 0)?;
        }
        let mut this = ReadRing {
            ring: Some(ring),
            fd: fd.as_raw_fd(),
            buffers,
            entries,
            tail: 0,
            armed: false,
        };
        for buffer in 0..BUFFERS {
            this.provide(buffer);
        }
        this.publish();
        Ok(this)
    }

    fn ring(&mut self) -> &mut IoUring {
        self.ring.as_mut().expect("the ring exists until drop")
    }

    /// Puts `buffer` at the tail of the buffer ring (published by [`publish`](Self::publish)).
    fn provide(&mut self, buffer: u16) {
        let slot = usize::from(self.tail & (BUFFERS - 1));
        // SAFETY: `slot` < BUFFERS, inside `entries`; the kernel reads entries only between
        // its head and the published tail, and this one is past the tail.
        let entry = unsafe { &mut *(self.entries.ptr as *mut BufRingEntry).add(slot) };
        // SAFETY: `buffer` < BUFFERS: the address is inside `buffers`.
        entry.set_addr(unsafe { self.buffers.ptr.add(usize::from(buffer) * BUFFER_SIZE) } as u64);
        entry.set_len(BUFFER_SIZE as u32);
        entry.set_bid(buffer);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the buffers provided so far visible to the kernel (a release store of the tail).
    fn publish(&mut self) {
        // SAFETY: the tail field lies in the first entry of the page-aligned ring, which is
        // ours; the kernel only reads it.
        let tail = unsafe { BufRingEntry::tail(self.entries.ptr as *const BufRingEntry) };
        // SAFETY: as above; an atomic view of an aligned u16.
        let tail = unsafe { &*(tail as *const std::sync::atomic::AtomicU16) };
        tail.store(self.tail, std::sync::atomic::Ordering::Release);
    }

    /// The bytes of a packet that [`next`](Self::next) reported, up to its length (at most
    /// the buffer). Valid until the buffer is recycled.
    pub fn packet(&self, buffer: u16, len: usize) -> &[u8] {
        let len = len.min(BUFFER_SIZE);
        // SAFETY: the kernel wrote this buffer, posted its completion and does not touch it
        // again until it is provided anew (`recycle`, which takes `&mut self`).
        unsafe {
            std::slice::from_raw_parts(
                self.buffers
                    .ptr
                    .add(usize::from(buffer % BUFFERS) * BUFFER_SIZE),
                len,
            )
        }
    }

    /// Gives a buffer back to the kernel.
    pub fn recycle(&mut self, buffer: u16) {
        self.provide(buffer % BUFFERS);
        self.publish();
    }

    /// Queues the multishot read unless it is armed (submitted by the next wait).
    fn arm(&mut self) {
        if self.armed {
            return;
        }
        let fd = self.fd;
        // Length 0: each read takes a whole provided buffer (the kernel refuses any other).
        let read = opcode::ReadMulti::new(Fd(fd), 0, GROUP)
            .build()
            .user_data(READ);
        // SAFETY: the read writes only into provided buffers, which live until it has ended.
        let pushed = unsafe { self.ring().submission().push(&read) };
        // The submission queue holds 8 entries and this is the only one queued.
        self.armed = pushed.is_ok();
    }

    /// The next completed read, if one is waiting (no system call).
    pub fn next(&mut self) -> Option<Read> {
        loop {
            let cqe = self.ring().completion().next()?;
            if cqe.user_data() != READ {
                continue;
            }
            if !cqueue::more(cqe.flags()) {
                self.armed = false;
            }
            let res = cqe.result();
            return Some(match cqueue::buffer_select(cqe.flags()) {
                Some(buffer) if res >= 0 => Read::Packet {
                    buffer,
                    len: res as usize,
                },
                // An end without data (a buffer may still have been picked): give it back.
                other => {
                    if let Some(buffer) = other {
                        self.recycle(buffer);
                    }
                    match res {
                        // The buffers ran out (the caller held them all) or the request was
                        // cancelled with its thread: armed again by the next wait.
                        r if r == -libc::ENOBUFS || r == -libc::ECANCELED || r >= 0 => continue,
                        r => Read::Error(-r),
                    }
                }
            });
        }
    }

    /// Waits until a read completes or `deadline` passes, arming the multishot read first
    /// if it is not. `Ok(false)` on timeout or a signal (callers loop on their deadline).
    /// Without a deadline, waits as long as it takes.
    ///
    /// One `io_uring_enter(2)` (`IORING_ENTER_GETEVENTS`, with a timeout through
    /// `IORING_ENTER_EXT_ARG`), none when a completion is already waiting.
    pub fn wait(&mut self, deadline: Option<Instant>) -> io::Result<bool> {
        self.arm();
        if !self.ring().completion().is_empty() {
            return Ok(true);
        }
        // Where the kernel can (6.12, IORING_FEAT_MIN_TIMEOUT), wait a little for a batch:
        // up to GATHER packets or GATHER_WAIT, then return at the first completion. A lone
        // packet waits at most GATHER_WAIT more; a stream wakes the thread once per batch
        // instead of once per packet.
        let gather = self.ring().params().is_feature_min_timeout();
        let want = if gather { GATHER } else { 1 };
        let ts = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            Timespec::new()
                .sec(left.as_secs())
                .nsec(left.subsec_nanos())
        });
        let done = match (&ts, gather) {
            (None, false) => self.ring().submitter().submit_and_wait(1),
            (None, true) => {
                let args = SubmitArgs::new().min_wait_usec(GATHER_WAIT_USEC);
                self.ring().submitter().submit_with_args(want, &args)
            }
            (Some(ts), _) => {
                let args = SubmitArgs::new()
                    .min_wait_usec(if gather { GATHER_WAIT_USEC } else { 0 })
                    .timespec(ts);
                self.ring().submitter().submit_with_args(want, &args)
            }
        };
        match done {
            Ok(_) => Ok(!self.ring().completion().is_empty()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) => {
                Ok(!self.ring().completion().is_empty())
            }
            Err(e) => Err(e),
        }
    }

    /// Runs reads the kernel has pending for this thread (their completions then wait in the
    /// ring), and submits the multishot read if it is not armed: one `io_uring_enter(2)` only
    /// when there is such work, none otherwise.
    pub fn poll(&mut self) -> io::Result<()> {
        self.arm();
        let pending = {
            let sq = self.ring().submission();
            sq.taskrun() || !sq.is_empty()
        };
        if pending {
            match self.ring().submitter().submit_and_wait(0) {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    /// Ends the multishot read and waits for its last completion: `false` if it did not end
    /// within [`CANCEL_WAIT`].
    fn cancel(&mut self) -> bool {
        if !self.armed {
            return true;
        }
        let cancel = opcode::AsyncCancel::new(READ).build().user_data(CANCEL);
        // SAFETY: a cancellation refers to no memory.
        if unsafe { self.ring().submission().push(&cancel) }.is_err() {
            return false;
        }
        let deadline = Instant::now() + CANCEL_WAIT;
        while self.armed && Instant::now() < deadline {
            let _ = self.wait(Some(
                deadline.min(Instant::now() + Duration::from_millis(100)),
            ));
            loop {
                let Some(cqe) = self.ring().completion().next() else {
                    break;
                };
                if cqe.user_data() == READ && !cqueue::more(cqe.flags()) {
                    self.armed = false;
                }
            }
        }
        !self.armed
    }
}

impl Drop for ReadRing {
    fn drop(&mut self) {
        let ended = self.cancel();
        // Closing the ring unregisters the buffer ring.
        drop(self.ring.take());
        if !ended {
            // The kernel may still read buffer addresses from the entries and write into
            // the buffers: never hand either back.
            std::mem::forget(std::mem::replace(&mut self.buffers, Region::none()));
            std::mem::forget(std::mem::replace(&mut self.entries, Region::none()));
        }
    }
}

/// The writing ring of a queue: a batch of packets with one `IORING_OP_WRITE` each.
pub struct WriteRing {
    /// `None` once a failed submission made the ring unusable (closing it discarded the
    /// entries the kernel never took).
    ring: Option<IoUring>,
}

impl WriteRing {
    /// A ring for batches of writes. Fails as [`ReadRing::new`] where io_uring is blocked.
    pub fn new() -> io::Result<WriteRing> {
        let ring = new_ring(WRITE_ENTRIES, 2 * WRITE_ENTRIES)?;
        supports(&ring, &[opcode::Write::CODE])?;
        Ok(WriteRing { ring: Some(ring) })
    }

    /// Writes `count` packets to `fd` in order, `packet(i)` giving packet `i`, each with its
    /// own `IORING_OP_WRITE` (one packet per write, as `write(2)`), with one
    /// `io_uring_enter(2)` per [`WRITE_ENTRIES`] packets that submits them and waits for all;
    /// `done(i, result)` gets each one's result. Returns once every write has completed.
    ///
    /// # Errors
    ///
    /// The error of `io_uring_enter(2)` itself, when it submitted nothing (the packets not
    /// yet reported to `done` were not written): the ring is closed then, and every later
    /// call fails with `EBADF` (callers write with `pwritev2(2)` instead).
    pub fn write<'a>(
        &mut self,
        fd: BorrowedFd<'_>,
        count: usize,
        mut packet: impl FnMut(usize) -> &'a [u8],
        mut done: impl FnMut(usize, io::Result<usize>),
    ) -> io::Result<()> {
        let fd = Fd(fd.as_raw_fd());
        let Some(ring) = self.ring.as_mut() else {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        };
        let mut next = 0;
        while next < count {
            let mut pushed = 0;
            {
                let mut sq = ring.submission();
                for i in next..count.min(next + WRITE_ENTRIES as usize) {
                    let p = packet(i);
                    let write = opcode::Write::new(fd, p.as_ptr(), p.len() as u32)
                        .offset(u64::MAX)
                        .build()
                        .user_data(i as u64);
                    // SAFETY: `p` is borrowed for 'a, past this call, and this call waits
                    // for the write's completion before it returns.
                    if unsafe { sq.push(&write) }.is_err() {
                        break;
                    }
                    pushed += 1;
                }
            }
            let mut outstanding = pushed;
            let mut submitted = false;
            while outstanding > 0 {
                match ring.submitter().submit_and_wait(outstanding) {
                    Ok(_) => submitted = true,
                    Err(e) if !submitted && ring.submission().len() == pushed => {
                        if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN)) {
                            continue;
                        }
                        // Nothing reached the kernel. The queued entries point at packets
                        // that are ours only until we return, and cannot be withdrawn:
                        // closing the ring discards them unread.
                        self.ring = None;
                        return Err(e);
                    }
                    // Submitted, and the wait was cut short (a signal, a full completion
                    // queue): wait again. The writes in flight borrow the packets, so this
                    // call cannot return before they complete; on our own ring fd nothing
                    // else fails.
                    Err(_) => submitted = true,
                }
                for cqe in ring.completion() {
                    let i = cqe.user_data() as usize;
                    let res = cqe.result();
                    outstanding = outstanding.saturating_sub(1);
                    done(
                        i,
                        if res < 0 {
                            Err(io::Error::from_raw_os_error(-res))
                        } else {
                            Ok(res as usize)
                        },
                    );
                }
            }
            next += pushed.max(1);
        }
        Ok(())
    }
}
