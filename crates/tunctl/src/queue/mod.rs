//! [`Queue`]: one fd of a device, and the state every queue of a device shares (name,
//! link handle, flags, the wake-up eventfd, the active-mode gate). The lowest room of the
//! device: the `Device`, the builder and active mode build on it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::flags::{Flags, Offload};
use crate::gate::Control;
use crate::netlink::Link;
use crate::sys::{self, Interest, Ready};

mod uring;
pub(crate) use uring::{turned_on as io_uring_turned_on, Take};
pub use uring::{IoPath, IO_URING_ENV};

/// A packet read: blocking or `RWF_NOWAIT`.
type ReadFn = fn(BorrowedFd<'_>, &mut [u8]) -> std::io::Result<(usize, bool)>;

/// The most queues the kernel gives one multi-queue device (`MAX_TAP_QUEUES`).
pub const MAX_QUEUES: usize = 256;

/// The flags TUNGETIFF reports faithfully, compared after every attach.
pub(crate) const ATTACH_FLAGS: Flags = Flags::from_bits_retain(
    Flags::TUN.bits() | Flags::TAP.bits() | Flags::VNET_HDR.bits() | Flags::MULTI_QUEUE.bits(),
);

/// State shared by a device, its queues and its active-mode readers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: String,
    closed: AtomicBool,
    /// Set while `destroy` deletes the link: I/O errors then mean "closed", not "gone".
    destroying: AtomicBool,
    /// Readable once the device is destroyed: wakes readers and writers blocked in `poll`.
    pub(crate) wake: OwnedFd,
    /// The rtnetlink handle, bound to the device's namespace.
    pub(crate) link: Link,
    /// Active-mode state.
    pub(crate) control: Control,
    /// The TUNSETIFF flags every queue of this device is attached with.
    flags: Flags,
    /// The smallest read buffer the kernel accepts: the vnet and packet-information headers.
    min_read: usize,
    /// The offload mask the kernel accepted (TUNSETOFFLOAD).
    pub(crate) offload: std::sync::atomic::AtomicU32,
    /// Set once the kernel refused a GSO write: later batches are split in userspace.
    pub(crate) gso_refused: AtomicBool,
    /// The virtio-net header size (TUNGETVNETHDRSZ), kept current by `set_vnet_hdr_size`.
    vnet_hdr_sz: std::sync::atomic::AtomicUsize,
    /// Keeps a namespace given by fd (`Device::from_fd`) reachable as `/proc/self/fd/N`.
    _netns: Option<OwnedFd>,
}

impl Shared {
    /// The state of a device attached with `flags`, configured through `link`; `first` is
    /// its first queue (to read the vnet header size), `netns` keeps a namespace given by
    /// fd reachable.
    pub(crate) fn new(
        link: Link,
        flags: Flags,
        first: Option<&OwnedFd>,
        netns: Option<OwnedFd>,
    ) -> Result<Shared> {
        let name = link.name().to_string();
        let vnet_len = match first {
            Some(fd) if flags.contains(Flags::VNET_HDR) => {
                sys::tun_get_vnet_hdr_sz(fd.as_fd()).map_or(10, |n| n.max(0) as usize)
            }
            _ => 0,
        };
        Ok(Shared {
            wake: sys::eventfd().map_err(|e| Error::os("eventfd", e).on(&name))?,
            control: Control::new().map_err(|e| Error::os("eventfd", e).on(&name))?,
            name,
            closed: AtomicBool::new(false),
            destroying: AtomicBool::new(false),
            link,
            flags,
            min_read: usize::from(!flags.contains(Flags::NO_PI) && flags.kind().is_some()) * 4
                + usize::from(flags.contains(Flags::VNET_HDR)) * 10,
            offload: std::sync::atomic::AtomicU32::new(0),
            gso_refused: AtomicBool::new(false),
            vnet_hdr_sz: std::sync::atomic::AtomicUsize::new(vnet_len),
            _netns: netns,
        })
    }

    /// The TUNSETIFF flags every queue is attached with.
    pub(crate) fn flags(&self) -> Flags {
        self.flags
    }

    /// Records the virtio-net header size after TUNSETVNETHDRSZ.
    pub(crate) fn set_vnet_hdr_len(&self, len: usize) {
        self.vnet_hdr_sz.store(len, Ordering::Relaxed);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// See [`Device::destroy`].
    pub(crate) fn destroy(&self) -> Result<()> {
        self.destroy_with(|| {})
    }

    /// [`destroy`](Shared::destroy), running `first` once the device is marked as being
    /// destroyed (so readers it wakes report Closed) and before the link is deleted.
    pub(crate) fn destroy_with(&self, first: impl FnOnce()) -> Result<()> {
        self.check_open("destroy")?;
        if self.destroying.swap(true, Ordering::AcqRel) {
            return Err(Error::new(
                ErrorKind::Busy,
                "destroy",
                "another thread is destroying the device",
            )
            .on(&self.name));
        }
        first();
        // A reader woken by the kernel's detach sees `destroying` and reports Closed, not Gone.
        match self.link.delete() {
            Ok(()) => {}
            // Gone already, or moved to another namespace: with persist cleared (by
            // Device::destroy) it disappears when its fds close.
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                self.destroying.store(false, Ordering::Release);
                return Err(if e.kind() == ErrorKind::PermissionDenied {
                    e.with_detail(
                        "deleting the link needs CAP_NET_ADMIN; it is no longer persistent and disappears when this Device is dropped (EPERM)",
                    )
                } else {
                    e
                });
            }
        }
        self.closed.store(true, Ordering::Release);
        self.control.stop();
        let _ = sys::eventfd_signal(self.wake.as_fd());
        Ok(())
    }

    /// A path naming the namespace the link handle configures.
    pub(crate) fn netns_path(&self) -> String {
        match self.link.netlink().namespace().file() {
            Some(path) => path.display().to_string(),
            None => "/proc/thread-self/ns/net".to_string(),
        }
    }

    /// The virtio-net header size in force (0 without `vnet_hdr`).
    pub(crate) fn vnet_hdr_len(&self) -> usize {
        self.vnet_hdr_sz.load(Ordering::Relaxed)
    }

    /// Whether the device's queues were attached with `flags`.
    pub(crate) fn flags_have(&self, flags: Flags) -> bool {
        self.flags.contains(flags)
    }

    /// The offloads the kernel accepted.
    pub(crate) fn offload(&self) -> Offload {
        Offload::from_bits_retain(self.offload.load(Ordering::Acquire))
    }

    pub(crate) fn check_open(&self, op: &str) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::closed(op).on(&self.name))
        } else {
            Ok(())
        }
    }

    /// Maps an I/O error, telling "destroyed here" from "deleted from outside".
    pub(crate) fn io_error(&self, op: &str, err: std::io::Error) -> Error {
        if self.closed.load(Ordering::Acquire) || self.destroying.load(Ordering::Acquire) {
            return Error::closed(op).on(&self.name);
        }
        let gone = err.raw_os_error() == Some(libc::EBADFD);
        let err = Error::os(op, err).on(&self.name);
        if gone {
            err.with_detail("the device no longer exists (deleted from outside?) (EBADFD)")
        } else {
            err
        }
    }
}

/// One file descriptor of a device: a queue of a multi-queue device, or the only fd of a
/// single-queue one. Reads and writes take `&self`: one thread may receive while another
/// sends, with no lock.
///
/// The fd is close-on-exec and **blocking**: a blocking [`recv`](Queue::recv) is a single
/// `readv(2)`, woken by the kernel when the device is destroyed. The non-blocking and timed
/// forms never change the fd's mode: they read and write with `preadv2`/`pwritev2` and
/// `RWF_NOWAIT`, or wait in `poll(2)` together with the device's wake-up eventfd, so
/// [`Device::destroy`](crate::Device::destroy) wakes them with [`ErrorKind::Closed`]. Every
/// call copes with an fd made non-blocking elsewhere (the `tokio` module's, or an adopted
/// one): a blocking receive then waits in `poll(2)`. [`use_io_uring`](Queue::use_io_uring)
/// moves a queue's receives and batches onto io_uring.
///
/// A program that puts the raw fd ([`AsFd`]) in its own epoll, mio or `AsyncFd` loop must
/// not read it with a plain blocking `read(2)` after a readiness report that another reader
/// may have consumed: either set `O_NONBLOCK` on it (each queue fd is its own open file, so
/// no other queue is affected) or read with `RWF_NOWAIT`, as [`try_recv`](Queue::try_recv)
/// does. The `tokio` module does the former, for the open file it registers.
///
/// `&Queue` implements [`std::io::Read`] and [`std::io::Write`], one packet per call (a
/// packet longer than the buffer is an error, never silently cut).
#[derive(Debug)]
pub struct Queue {
    /// The io_uring rings, once [`use_io_uring`](Queue::use_io_uring) made them. Declared
    /// before `fd`: dropped (the multishot read ended) while the fd is still open.
    #[cfg(feature = "io-uring")]
    uring: std::sync::OnceLock<uring::Rings>,
    fd: OwnedFd,
    pub(crate) shared: Arc<Shared>,
}

/// One caller's buffer as the taker of one packet from the reading ring.
struct One<'a> {
    buf: &'a mut [u8],
    /// The packet's length, or the truncation of one longer than `buf`.
    got: Option<Result<usize>>,
}

impl Take for One<'_> {
    fn room(&self) -> bool {
        self.got.is_none()
    }

    fn take(&mut self, packet: &[u8]) -> Result<()> {
        let n = packet.len().min(self.buf.len());
        self.buf[..n].copy_from_slice(&packet[..n]);
        self.got = Some(Ok(n));
        if packet.len() > self.buf.len() {
            return Err(Error::new(
                ErrorKind::Truncated,
                "recv",
                format!("packet longer than the {n}-byte buffer: its first {n} bytes are in the buffer, the rest is dropped"),
            ));
        }
        Ok(())
    }
}

/// Milliseconds left until `deadline` for `poll(2)`: -1 for none, rounded up, capped.
fn poll_timeout(deadline: Option<Instant>) -> Option<i32> {
    match deadline {
        None => Some(-1),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                None
            } else {
                let ms = left.as_micros().div_ceil(1000);
                Some(i32::try_from(ms).unwrap_or(i32::MAX))
            }
        }
    }
}

impl Queue {
    /// A queue of the device whose state is `shared`.
    pub(crate) fn new(fd: OwnedFd, shared: Arc<Shared>) -> Queue {
        Queue {
            #[cfg(feature = "io-uring")]
            uring: std::sync::OnceLock::new(),
            fd,
            shared,
        }
    }

    fn wait(&self, interest: Interest, deadline: Option<Instant>, op: &str) -> Result<bool> {
        let Some(timeout) = poll_timeout(deadline) else {
            return Ok(false);
        };
        match sys::poll(
            self.fd.as_fd(),
            interest,
            &[self.shared.wake.as_fd()],
            timeout,
        ) {
            Ok(Ready::Wake(_)) => Err(Error::closed(op).on(&self.shared.name)),
            Ok(_) => Ok(true),
            Err(e) => Err(self.shared.io_error("poll", e)),
        }
    }

    /// One non-blocking read: `Ok(None)` when no packet is queued.
    pub(crate) fn read_now(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        self.read_with(buf, sys::read_packet_nowait)
    }

    /// One read with `read`: `Ok(None)` when it would block.
    fn read_with(&self, buf: &mut [u8], read: ReadFn) -> Result<Option<usize>> {
        self.shared.check_open("recv")?;
        self.check_buffer(buf)?;
        self.check_passive("recv")?;
        loop {
            return match read(self.fd.as_fd(), buf) {
                Ok((n, false)) => Ok(Some(n)),
                Ok((n, true)) => Err(Error::new(
                    ErrorKind::Truncated,
                    "recv",
                    format!("packet longer than the {n}-byte buffer: its first {n} bytes are in the buffer, the kernel dropped the rest"),
                )
                .on(&self.shared.name)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(self.shared.io_error("recv", e)),
            };
        }
    }

    /// Refuses a buffer too small for the device's packet headers.
    fn check_buffer(&self, buf: &[u8]) -> Result<()> {
        if buf.len() < self.shared.min_read {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "recv",
                format!(
                    "a {}-byte buffer cannot hold the device's packet headers ({} bytes)",
                    buf.len(),
                    self.shared.min_read
                ),
            )
            .on(&self.shared.name));
        }
        Ok(())
    }

    /// Refuses a passive read while active mode delivers.
    fn check_passive(&self, op: &str) -> Result<()> {
        if self.shared.control.delivering() {
            return Err(Error::new(
                ErrorKind::Active,
                op,
                "the device is in active mode: its packets go to the owner (pause with Active::Off to read passively)",
            )
            .on(&self.shared.name));
        }
        Ok(())
    }

    /// One read on an fd set `O_NONBLOCK` ([`set_nonblocking`](Queue::set_nonblocking)):
    /// a plain `readv(2)`, cheaper than `preadv2(RWF_NOWAIT)`. `Ok(None)` when no packet
    /// is queued.
    #[cfg(feature = "tokio")]
    pub(crate) fn read_nonblocking(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        self.read_with(buf, sys::read_packet)
    }

    /// One write on an fd set `O_NONBLOCK`: a plain `write(2)`. `Ok(None)` when the device
    /// cannot take it now.
    #[cfg(feature = "tokio")]
    pub(crate) fn write_nonblocking(&self, packet: &[u8]) -> Result<Option<usize>> {
        self.write_with(packet, sys::write_packet)
    }

    /// Sets `O_NONBLOCK` on the queue's open file (shared with its duplicates).
    #[cfg(feature = "tokio")]
    pub(crate) fn set_nonblocking(&self) -> Result<()> {
        sys::set_nonblocking(self.fd.as_fd())
            .map_err(|e| Error::os("fcntl O_NONBLOCK", e).on(&self.shared.name))
    }

    /// One non-blocking write: `Ok(None)` when the device cannot take it now.
    pub(crate) fn write_now(&self, packet: &[u8]) -> Result<Option<usize>> {
        self.write_with(packet, sys::write_nowait)
    }

    /// One write with `write`: `Ok(None)` when it would block.
    fn write_with(
        &self,
        packet: &[u8],
        write: fn(BorrowedFd<'_>, &[u8]) -> std::io::Result<usize>,
    ) -> Result<Option<usize>> {
        if packet.is_empty() {
            return Err(
                Error::new(ErrorKind::InvalidInput, "send", "empty packet").on(&self.shared.name)
            );
        }
        self.shared.check_open("send")?;
        loop {
            return match write(self.fd.as_fd(), packet) {
                Ok(n) => Ok(Some(n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(self.shared.io_error("send", e)),
            };
        }
    }

    /// Waits until the queue is readable or `deadline` passes (`Ok(false)`).
    pub(crate) fn wait_readable(&self, deadline: Option<Instant>) -> Result<bool> {
        self.wait(Interest::Read, deadline, "recv")
    }

    fn recv_until(&self, buf: &mut [u8], deadline: Option<Instant>) -> Result<Option<usize>> {
        self.check_buffer(buf)?;
        let mut one = One { buf, got: None };
        if let Some(taken) = self.ring_recv(&mut one, deadline) {
            return match (taken?, one.got) {
                (0, _) => Ok(None),
                (_, Some(Ok(n))) => Ok(Some(n)),
                (_, Some(Err(e))) => Err(e),
                (_, None) => Ok(None),
            };
        }
        let buf = one.buf;
        // No deadline: one blocking `readv`, woken by the kernel if the device is destroyed
        // (an adopted non-blocking fd falls back to poll below).
        let read = if deadline.is_none() {
            sys::read_packet
        } else {
            sys::read_packet_nowait
        };
        loop {
            if let Some(n) = self.read_with(buf, read)? {
                return Ok(Some(n));
            }
            if !self.wait(Interest::Read, deadline, "recv")? {
                return Ok(None);
            }
        }
    }

    fn send_until(&self, packet: &[u8], deadline: Option<Instant>) -> Result<Option<usize>> {
        loop {
            if let Some(n) = self.write_now(packet)? {
                return Ok(Some(n));
            }
            if !self.wait(Interest::Write, deadline, "send")? {
                return Ok(None);
            }
        }
    }

    /// The device's name.
    pub fn device(&self) -> &str {
        &self.shared.name
    }

    /// Another handle on the same queue (`dup(2)`, close-on-exec): both read from and write
    /// to the same queue; the queue detaches when the last handle closes.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Os`] if `dup(2)` fails (e.g. EMFILE). A destroyed device's queue is
    /// cloned all the same; its I/O then gives [`ErrorKind::Closed`].
    pub fn try_clone(&self) -> Result<Queue> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| Error::os("dup", e).on(&self.shared.name))?;
        Ok(Queue::new(fd, Arc::clone(&self.shared)))
    }

    /// Receives one packet, waiting as long as it takes. Returns its length.
    ///
    /// One `readv(2)` when a packet is queued, plus a `poll(2)` when none is.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Truncated`] for a packet longer than `buf` (its head is in `buf`),
    /// [`ErrorKind::InvalidInput`] for a `buf` too small for the packet headers,
    /// [`ErrorKind::Active`] while active mode delivers, [`ErrorKind::Closed`] once the device
    /// is destroyed (a blocked call wakes), [`ErrorKind::Gone`] if deleted from outside.
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        self.recv_until(buf, None).map(|n| n.unwrap_or(0))
    }

    /// Receives one packet if one is queued; `Ok(None)` if not. Never waits.
    ///
    /// # Errors
    ///
    /// As [`recv`](Queue::recv).
    pub fn try_recv(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        self.recv_until(buf, Some(Instant::now()))
    }

    /// Receives one packet, waiting at most `timeout` (`Duration::MAX`: no limit); `Ok(None)`
    /// if none came.
    ///
    /// # Errors
    ///
    /// As [`recv`](Queue::recv).
    pub fn recv_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<usize>> {
        self.recv_until(buf, Instant::now().checked_add(timeout))
    }

    /// Sends one packet (one `write(2)` is one packet), waiting if the device's send buffer
    /// is full. An invalid packet gives an error for this call only; the device lives on.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an empty packet (before any system call),
    /// [`ErrorKind::Closed`] once the device is destroyed, [`ErrorKind::Gone`] if deleted from
    /// outside; the kernel's refusal of a malformed packet ([`ErrorKind::Os`], EINVAL).
    pub fn send(&self, packet: &[u8]) -> Result<usize> {
        self.send_until(packet, None).map(|n| n.unwrap_or(0))
    }

    /// Sends one packet if it can be sent without waiting; `Ok(None)` if not.
    ///
    /// # Errors
    ///
    /// As [`send`](Queue::send).
    pub fn try_send(&self, packet: &[u8]) -> Result<Option<usize>> {
        self.send_until(packet, Some(Instant::now()))
    }

    /// Sends one packet, waiting at most `timeout` for room; `Ok(None)` on timeout.
    ///
    /// # Errors
    ///
    /// As [`send`](Queue::send).
    pub fn send_timeout(&self, packet: &[u8], timeout: Duration) -> Result<Option<usize>> {
        self.send_until(packet, Instant::now().checked_add(timeout))
    }

    /// Enables (attaches) or disables (detaches) this queue of a multi-queue device
    /// (TUNSETQUEUE with IFF_ATTACH_QUEUE / IFF_DETACH_QUEUE). A disabled queue gets no
    /// packets and cannot send.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy, [`ErrorKind::Gone`] once the device is deleted
    /// from outside; the kernel's refusal otherwise, EINVAL ([`ErrorKind::Os`]) on a
    /// single-queue device or for a queue already in that state.
    pub fn set_enabled(&self, enabled: bool) -> Result<()> {
        self.shared.check_open("TUNSETQUEUE")?;
        sys::tun_set_queue(self.fd.as_fd(), enabled).map_err(|e| {
            // The driver answers EINVAL for a deleted device as for a queue already in that
            // state: the device's index tells them apart.
            let gone = e.raw_os_error() == Some(libc::EINVAL)
                && self
                    .shared
                    .link
                    .info()
                    .is_err_and(|e| e.kind() == ErrorKind::NotFound);
            let err = self.shared.io_error("TUNSETQUEUE", e);
            if gone && err.kind() != ErrorKind::Closed {
                Error::new(
                    ErrorKind::Gone,
                    "TUNSETQUEUE",
                    "the device no longer exists (deleted from outside?)",
                )
                .on(&self.shared.name)
            } else {
                err
            }
        })
    }
}

impl AsFd for Queue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Queue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The queue's fd, detached from the device's handle: closing it detaches the queue.
impl From<Queue> for OwnedFd {
    fn from(queue: Queue) -> OwnedFd {
        queue.fd
    }
}

/// One packet per call, blocking ([`Queue::recv`]); a packet longer than `buf` is an
/// [`std::io::ErrorKind::InvalidData`] error ([`ErrorKind::Truncated`]).
impl std::io::Read for &Queue {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        Ok(self.recv(buf)?)
    }
}

/// One packet per call, blocking ([`Queue::send`]); `flush` does nothing (the kernel takes
/// each packet whole).
impl std::io::Write for &Queue {
    fn write(&mut self, packet: &[u8]) -> std::io::Result<usize> {
        Ok(self.send(packet)?)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Opens `/dev/net/tun`, attaches it with TUNSETIFF, and verifies with TUNGETIFF that the
/// kernel applied `expect`. On any failure the fd is closed (dropped) before returning.
pub(crate) fn attach(name: &str, flags: Flags, expect: Flags) -> Result<(OwnedFd, String)> {
    let fd = sys::open_tun().map_err(|e| {
        let err = Error::os("open /dev/net/tun", e).on(name);
        if err.kind() == ErrorKind::NotFound {
            err.with_detail("/dev/net/tun is missing: load the tun module (modprobe tun)")
        } else {
            err
        }
    })?;
    let kname = sys::tun_set_iff(fd.as_fd(), name.as_bytes(), flags.bits()).map_err(|e| {
        let errno = e.raw_os_error();
        let err = Error::os("TUNSETIFF", e).on(name);
        match errno {
            Some(libc::EPERM) => err.with_detail("operation not permitted: needs CAP_NET_ADMIN, or the device's owner or group (EPERM)"),
            Some(libc::EBUSY) => err.with_detail("device is busy: a single-queue device takes one fd and one is attached already (by this process or another; a Device dropped by this process frees it), or it exists and exclusive was asked for (EBUSY)"),
            _ => err,
        }
    })?;
    let (_, actual) =
        sys::tun_get_iff(fd.as_fd()).map_err(|e| Error::os("TUNGETIFF", e).on(&kname))?;
    // NO_PI is not comparable here: TUNGETIFF reports bit 0x1000 as IFF_NOFILTER ("no socket
    // filter attached"), the same bit. An existing device's packet-information setting is
    // checked over netlink before attaching (check_compatible).
    let mask = ATTACH_FLAGS;
    let actual = Flags::from_bits_retain(actual);
    if actual & mask != expect & mask {
        return Err(Error::new(
            ErrorKind::FlagMismatch,
            "TUNGETIFF",
            format!(
                "kernel attached with {} instead of {}",
                actual & mask,
                expect & mask
            ),
        )
        .on(kname));
    }
    Ok((fd, kname))
}
