//! Packets in and out of a queue fd (`readv`, `preadv2`/`pwritev2` with `RWF_NOWAIT`),
//! waiting (`poll(2)` with wake-up eventfds), and fd flags.

use std::io::{self, IoSlice, IoSliceMut};
#[cfg(feature = "tokio")]
use std::os::fd::AsRawFd;
use std::os::fd::{BorrowedFd, OwnedFd};

/// `readv` into `buf` plus one spare byte: returns the length read and whether the packet was
/// longer than `buf` (the tun driver copies what fits and drops the rest of a packet). Waits
/// if the fd is blocking and no packet is queued.
pub fn read_packet(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    read_packet_flags(fd, buf, None)
}

/// Like [`read_packet`], never waiting: `preadv2(RWF_NOWAIT)` (EAGAIN when nothing is queued),
/// whatever the fd's blocking mode.
pub fn read_packet_nowait(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    read_packet_flags(fd, buf, Some(rustix::io::ReadWriteFlags::NOWAIT))
}

/// The offset `-1` of `preadv2`/`pwritev2`: the file's own position (a tun file has none).
const CURRENT_POSITION: u64 = u64::MAX;

fn read_packet_flags(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: Option<rustix::io::ReadWriteFlags>,
) -> io::Result<(usize, bool)> {
    let len = buf.len();
    let mut spare = [0u8; 1];
    let mut iov = [IoSliceMut::new(buf), IoSliceMut::new(&mut spare)];
    let n = match flags {
        None => rustix::io::readv(fd, &mut iov)?,
        Some(f) => rustix::io::preadv2(fd, &mut iov, CURRENT_POSITION, f)?,
    };
    Ok((n.min(len), n > len))
}

/// `pwritev2(RWF_NOWAIT)`: one packet, never waiting (EAGAIN if the device cannot take it).
pub fn write_nowait(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    let iov = [IoSlice::new(buf)];
    Ok(rustix::io::pwritev2(
        fd,
        &iov,
        CURRENT_POSITION,
        rustix::io::ReadWriteFlags::NOWAIT,
    )?)
}

/// `write(2)`: one packet, waiting for room only if the fd is blocking.
#[cfg(feature = "tokio")]
pub fn write_packet(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    Ok(rustix::io::write(fd, buf)?)
}

/// Sets `O_NONBLOCK` on the open file `fd` refers to (`fcntl(F_SETFL)`): every fd sharing
/// that open file (its duplicates) is affected.
#[cfg(feature = "tokio")]
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    Ok(rustix::fs::fcntl_setfl(
        fd,
        flags | rustix::fs::OFlags::NONBLOCK,
    )?)
}

/// Readiness a [`poll`] call waits for on the first fd.
#[derive(Clone, Copy)]
pub enum Interest {
    Read,
    Write,
}

/// What [`poll`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Ready {
    /// The I/O fd is ready (or has an error/hang-up to report on the next call).
    Io,
    /// Wake-up fd number `i` (an eventfd) is readable; it takes precedence over `Io`.
    Wake(usize),
    /// The timeout passed.
    Timeout,
}

/// `poll(2)` on an I/O fd and up to two wake-up fds; `timeout_ms < 0` waits forever. EINTR
/// is reported as `Timeout`, so callers simply loop on their deadline.
pub fn poll(
    io_fd: BorrowedFd<'_>,
    interest: Interest,
    wake: &[BorrowedFd<'_>],
    timeout_ms: i32,
) -> io::Result<Ready> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let events = match interest {
        Interest::Read => PollFlags::IN,
        Interest::Write => PollFlags::OUT,
    };
    let mut fds = [
        PollFd::from_borrowed_fd(io_fd, events),
        PollFd::from_borrowed_fd(io_fd, PollFlags::empty()),
        PollFd::from_borrowed_fd(io_fd, PollFlags::empty()),
    ];
    let n = 1 + wake.len().min(2);
    for (slot, fd) in fds[1..n].iter_mut().zip(wake) {
        *slot = PollFd::from_borrowed_fd(*fd, PollFlags::IN);
    }
    // rustix's poll is ppoll, which takes a timespec (None: forever) instead of milliseconds.
    let timeout = (timeout_ms >= 0).then(|| Timespec {
        tv_sec: (timeout_ms / 1000).into(),
        tv_nsec: (timeout_ms % 1000 * 1_000_000).into(),
    });
    match rustix::event::poll(&mut fds[..n], timeout.as_ref()) {
        Ok(_) => {}
        Err(rustix::io::Errno::INTR) => return Ok(Ready::Timeout),
        Err(e) => return Err(e.into()),
    }
    if let Some(i) = fds[1..n].iter().position(|f| !f.revents().is_empty()) {
        Ok(Ready::Wake(i))
    } else if !fds[0].revents().is_empty() {
        Ok(Ready::Io)
    } else {
        Ok(Ready::Timeout)
    }
}

/// A close-on-exec, non-blocking eventfd used to wake blocked readers.
pub fn eventfd() -> io::Result<OwnedFd> {
    use rustix::event::EventfdFlags;
    Ok(rustix::event::eventfd(
        0,
        EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
    )?)
}

/// Make an eventfd readable (it stays readable: nobody drains it).
pub fn eventfd_signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    rustix::io::write(fd, &1u64.to_ne_bytes())?;
    Ok(())
}

/// Sets FD_CLOEXEC on an fd adopted from elsewhere. Its blocking mode is left alone (it is a
/// property of the open file, shared with its other holders); every call copes with both.
pub fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = rustix::io::fcntl_getfd(fd)?;
    Ok(rustix::io::fcntl_setfd(
        fd,
        flags | rustix::io::FdFlags::CLOEXEC,
    )?)
}

#[cfg(test)]
/// `fcntl(F_GETFD)`: whether the fd has FD_CLOEXEC set.
pub fn is_cloexec(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(rustix::io::fcntl_getfd(fd)?.contains(rustix::io::FdFlags::CLOEXEC))
}

/// Registers a value that owns its fd with the current tokio runtime.
#[cfg(feature = "tokio")]
pub fn register_async<T: AsRawFd>(
    inner: T,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<T>> {
    // SAFETY: callers pass a value that owns its fd (a `Queue` holds an `OwnedFd` it never
    // replaces), so the fd stays open and the same for the whole life of the AsyncFd.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(inner, interest) }
        .map_err(io::Error::from)
}
