//! Sockets and messages: Unix socket pairs, fds passed with SCM_RIGHTS, netlink sockets
//! received from elsewhere.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};

use super::einval;

/// A connected pair of close-on-exec `SOCK_SEQPACKET` Unix sockets (message boundaries kept).
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// `CMSG_SPACE(len)`, which rustix does not export: a `cmsghdr` and `len` bytes, each
/// rounded up to a multiple of `size_t`.
const fn cmsg_space(len: usize) -> usize {
    const fn align(n: usize) -> usize {
        let a = std::mem::size_of::<usize>();
        (n + a - 1) & !(a - 1)
    }
    align(std::mem::size_of::<libc::cmsghdr>()) + align(len)
}

/// A control buffer of exactly `CMSG_SPACE(fds * sizeof(int))` bytes, aligned for a
/// `cmsghdr`, out of `storage` (so that rustix's own alignment leaves its length alone: the
/// length decides how many fds the kernel may deliver).
fn cmsg_buffer(storage: &mut Vec<MaybeUninit<u8>>, fds: usize) -> &mut [MaybeUninit<u8>] {
    if fds == 0 {
        return &mut [];
    }
    let space = cmsg_space(fds * std::mem::size_of::<libc::c_int>());
    let align = std::mem::align_of::<libc::cmsghdr>();
    storage.resize(space + align - 1, MaybeUninit::new(0));
    let start = storage.as_ptr().align_offset(align);
    &mut storage[start..start + space]
}

/// Sends one message with `fds` attached (SCM_RIGHTS).
pub fn send_with_fds(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut storage = Vec::new();
    let mut control = SendAncillaryBuffer::new(cmsg_buffer(&mut storage, fds.len()));
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(einval());
    }
    Ok(rustix::net::sendmsg(
        sock,
        &[IoSlice::new(data)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?)
}

/// What of a received message did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// The data was longer than the buffer (MSG_TRUNC).
    pub data: bool,
    /// More control data (fds) came than there was room for (MSG_CTRUNC).
    pub control: bool,
}

/// Receives one message into `buf` with up to `max_fds` attached fds (made close-on-exec).
/// Returns the length, what was truncated, and the fds.
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<(usize, Truncation, Vec<OwnedFd>)> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
    let mut storage = Vec::new();
    // Owns every fd received: those not taken below are closed when it is dropped.
    let mut control = RecvAncillaryBuffer::new(cmsg_buffer(&mut storage, max_fds));
    let msg = rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    let truncated = Truncation {
        data: msg.flags.contains(ReturnFlags::TRUNC),
        control: msg.flags.contains(ReturnFlags::CTRUNC),
    };
    Ok((msg.bytes, truncated, fds))
}

/// Wraps an fd received from elsewhere (the privileged helper) as a netlink socket.
pub fn netlink_socket_from(fd: OwnedFd) -> netlink_sys::Socket {
    use std::os::fd::IntoRawFd;
    // netlink-sys has no `From<OwnedFd>`.
    // SAFETY: ownership of the fd moves into the socket, which closes it on drop.
    unsafe { <netlink_sys::Socket as FromRawFd>::from_raw_fd(fd.into_raw_fd()) }
}
