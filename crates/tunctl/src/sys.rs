//! The only home of system calls and `unsafe` in the crate.
//!
//! Each function does one system call (or a tight, documented sequence) and returns
//! `io::Error::last_os_error()` on failure. Callers add the device name and operation.
//! Arguments that the kernel reads *by value* (TUNSETPERSIST, TUNSETOWNER, TUNSETGROUP,
//! TUNSETLINK, TUNSETOFFLOAD) go through [`ioctl_value`]; arguments it reads or writes
//! *through a pointer* go through [`ioctl_ptr`]. The type of the helper says which, so the
//! owner-by-pointer bug of other TUN libraries cannot be written here.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

/// `IFNAMSIZ`: interface names are at most 15 bytes plus a NUL.
pub const IFNAMSIZ: usize = libc::IFNAMSIZ;

/// `struct ifreq` as TUNSETIFF/TUNGETIFF/TUNSETQUEUE use it: a name and a short of flags.
#[repr(C)]
pub struct IfReq {
    pub name: [u8; IFNAMSIZ],
    pub flags: libc::c_short,
    _pad: [u8; 22],
}

// At least as large as the kernel's `struct ifreq` (40 bytes on 64-bit, 32 on 32-bit).
const _: () = assert!(std::mem::size_of::<IfReq>() >= std::mem::size_of::<libc::ifreq>());

impl IfReq {
    pub fn new(name: &[u8], flags: u16) -> IfReq {
        let mut req = IfReq {
            name: [0; IFNAMSIZ],
            flags: flags as libc::c_short,
            _pad: [0; 22],
        };
        let n = name.len().min(IFNAMSIZ - 1);
        req.name[..n].copy_from_slice(&name[..n]);
        req
    }

    /// The name up to the first NUL.
    pub fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// An ioctl whose argument the kernel takes as the integer value itself.
fn ioctl_value(fd: BorrowedFd<'_>, request: libc::Ioctl, value: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the request takes an integer argument, not a pointer; nothing is dereferenced.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), request, value) }).map(drop)
}

/// An ioctl whose argument is a pointer to `T`, read and/or written by the kernel.
fn ioctl_ptr<T>(fd: BorrowedFd<'_>, request: libc::Ioctl, arg: &mut T) -> io::Result<libc::c_int> {
    // SAFETY: `arg` is a valid, exclusively borrowed `T` of the size the request expects.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), request, arg as *mut T) })
}

/// `open("/dev/net/tun", O_RDWR | O_CLOEXEC)`. The file is bound to the calling thread's
/// network namespace. It is blocking: a blocking receive is one `readv(2)`, and the calls
/// that must not wait use `RWF_NOWAIT` ([`read_packet_nowait`], [`write_nowait`]).
pub fn open_tun() -> io::Result<OwnedFd> {
    // SAFETY: a valid NUL-terminated path; the returned fd is owned by us alone.
    let fd = cvt(unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// TUNSETIFF: create or attach; returns the kernel's name.
pub fn tun_set_iff(fd: BorrowedFd<'_>, name: &[u8], flags: u16) -> io::Result<String> {
    let mut req = IfReq::new(name, flags);
    ioctl_ptr(fd, libc::TUNSETIFF, &mut req)?;
    Ok(req.name())
}

/// TUNGETIFF: the name and flags of the device this fd is attached to.
pub fn tun_get_iff(fd: BorrowedFd<'_>) -> io::Result<(String, u16)> {
    let mut req = IfReq::new(b"", 0);
    ioctl_ptr(fd, libc::TUNGETIFF, &mut req)?;
    Ok((req.name(), req.flags as u16))
}

/// TUNGETFEATURES: the TUNSETIFF flags this kernel supports.
pub fn tun_get_features(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut features: libc::c_uint = 0;
    ioctl_ptr(fd, libc::TUNGETFEATURES, &mut features)?;
    Ok(features)
}

/// TUNSETPERSIST (by value).
pub fn tun_set_persist(fd: BorrowedFd<'_>, persist: bool) -> io::Result<()> {
    ioctl_value(fd, libc::TUNSETPERSIST, persist as libc::c_ulong)
}

/// TUNSETOWNER (by value: the uid itself).
pub fn tun_set_owner(fd: BorrowedFd<'_>, uid: u32) -> io::Result<()> {
    ioctl_value(fd, libc::TUNSETOWNER, uid as libc::c_ulong)
}

/// TUNSETGROUP (by value: the gid itself).
pub fn tun_set_group(fd: BorrowedFd<'_>, gid: u32) -> io::Result<()> {
    ioctl_value(fd, libc::TUNSETGROUP, gid as libc::c_ulong)
}

/// TUNSETLINK (by value: an ARPHRD_* link type; the device must be down).
pub fn tun_set_link(fd: BorrowedFd<'_>, link_type: u16) -> io::Result<()> {
    ioctl_value(fd, libc::TUNSETLINK, link_type as libc::c_ulong)
}

/// TUNSETOFFLOAD (by value: TUN_F_* bits).
pub fn tun_set_offload(fd: BorrowedFd<'_>, offload: u32) -> io::Result<()> {
    ioctl_value(fd, libc::TUNSETOFFLOAD, offload as libc::c_ulong)
}

/// TUNSETTXFILTER: `struct tun_filter { u16 flags; u16 count; u8 addr[count][6]; }`.
pub fn tun_set_tx_filter(
    fd: BorrowedFd<'_>,
    all_multicast: bool,
    macs: &[[u8; 6]],
) -> io::Result<()> {
    let count =
        u16::try_from(macs.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut buf = Vec::with_capacity(4 + 6 * macs.len());
    buf.extend_from_slice(&(all_multicast as u16).to_ne_bytes());
    buf.extend_from_slice(&count.to_ne_bytes());
    for mac in macs {
        buf.extend_from_slice(mac);
    }
    // SAFETY: the buffer holds a complete tun_filter header followed by `count` addresses.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETTXFILTER, buf.as_ptr()) }).map(drop)
}

/// TUNSETCARRIER (pointer to int).
pub fn tun_set_carrier(fd: BorrowedFd<'_>, carrier: bool) -> io::Result<()> {
    let mut value = carrier as libc::c_int;
    ioctl_ptr(fd, libc::TUNSETCARRIER, &mut value).map(drop)
}

/// TUNGETSNDBUF (pointer to int).
pub fn tun_get_sndbuf(fd: BorrowedFd<'_>) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    ioctl_ptr(fd, libc::TUNGETSNDBUF, &mut value)?;
    Ok(value)
}

/// TUNSETSNDBUF (pointer to int).
pub fn tun_set_sndbuf(fd: BorrowedFd<'_>, size: i32) -> io::Result<()> {
    let mut value: libc::c_int = size;
    ioctl_ptr(fd, libc::TUNSETSNDBUF, &mut value).map(drop)
}

/// TUNGETVNETHDRSZ (pointer to int).
pub fn tun_get_vnet_hdr_sz(fd: BorrowedFd<'_>) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    ioctl_ptr(fd, libc::TUNGETVNETHDRSZ, &mut value)?;
    Ok(value)
}

/// TUNSETVNETHDRSZ (pointer to int).
pub fn tun_set_vnet_hdr_sz(fd: BorrowedFd<'_>, size: i32) -> io::Result<()> {
    let mut value: libc::c_int = size;
    ioctl_ptr(fd, libc::TUNSETVNETHDRSZ, &mut value).map(drop)
}

/// TUNSETQUEUE with IFF_ATTACH_QUEUE or IFF_DETACH_QUEUE.
pub fn tun_set_queue(fd: BorrowedFd<'_>, attach: bool) -> io::Result<()> {
    let flag = if attach {
        libc::IFF_ATTACH_QUEUE
    } else {
        libc::IFF_DETACH_QUEUE
    };
    let mut req = IfReq::new(b"", flag as u16);
    ioctl_ptr(fd, libc::TUNSETQUEUE, &mut req).map(drop)
}

/// TUNGETDEVNETNS: a new close-on-exec fd for the device's network namespace.
pub fn tun_get_dev_netns(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: the request takes no argument and returns a new fd that we own.
    let ns = cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETDEVNETNS) })?;
    // SAFETY: `ns` is a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(ns) })
}

/// `readv` into `buf` plus one spare byte: returns the length read and whether the packet was
/// longer than `buf` (the tun driver copies what fits and drops the rest of a packet). Waits
/// if the fd is blocking and no packet is queued.
pub fn read_packet(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    read_packet_flags(fd, buf, None)
}

/// Like [`read_packet`], never waiting: `preadv2(RWF_NOWAIT)` (EAGAIN when nothing is queued),
/// whatever the fd's blocking mode.
pub fn read_packet_nowait(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    read_packet_flags(fd, buf, Some(libc::RWF_NOWAIT))
}

fn read_packet_flags(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: Option<libc::c_int>,
) -> io::Result<(usize, bool)> {
    let mut spare = [0u8; 1];
    let iov = [
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        },
        libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: 1,
        },
    ];
    // SAFETY: both iovecs point at live, writable buffers of the stated lengths.
    let n = cvt_size(unsafe {
        match flags {
            None => libc::readv(fd.as_raw_fd(), iov.as_ptr(), 2),
            Some(f) => libc::preadv2(fd.as_raw_fd(), iov.as_ptr(), 2, -1, f),
        }
    })?;
    Ok((n.min(buf.len()), n > buf.len()))
}

/// `pwritev2(RWF_NOWAIT)`: one packet, never waiting (EAGAIN if the device cannot take it).
pub fn write_nowait(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the iovec points at a live buffer the kernel only reads.
    cvt_size(unsafe { libc::pwritev2(fd.as_raw_fd(), &iov, 1, -1, libc::RWF_NOWAIT) })
}

/// Readiness a [`poll2`] call waits for on the first fd.
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
    let events = match interest {
        Interest::Read => libc::POLLIN,
        Interest::Write => libc::POLLOUT,
    };
    let entry = |fd: BorrowedFd<'_>, events| libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    let mut fds = [entry(io_fd, events), entry(io_fd, 0), entry(io_fd, 0)];
    let n = 1 + wake.len().min(2);
    for (slot, fd) in fds[1..n].iter_mut().zip(wake) {
        *slot = entry(*fd, libc::POLLIN);
    }
    // SAFETY: `fds[..n]` is a valid array of pollfd structures.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, timeout_ms) };
    if ret < 0 {
        let err = io::Error::last_os_error();
        return if err.raw_os_error() == Some(libc::EINTR) {
            Ok(Ready::Timeout)
        } else {
            Err(err)
        };
    }
    if let Some(i) = fds[1..n].iter().position(|f| f.revents != 0) {
        Ok(Ready::Wake(i))
    } else if fds[0].revents != 0 {
        Ok(Ready::Io)
    } else {
        Ok(Ready::Timeout)
    }
}

/// A close-on-exec, non-blocking eventfd used to wake blocked readers.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the returned fd is owned by us alone.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Make an eventfd readable (it stays readable: nobody drains it).
pub fn eventfd_signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writes the 8 bytes of `one`.
    cvt_size(unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) }).map(drop)
}

/// Sets FD_CLOEXEC on an fd adopted from elsewhere. Its blocking mode is left alone (it is a
/// property of the open file, shared with its other holders); every call copes with both.
pub fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD take and return plain integers.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags | libc::FD_CLOEXEC) }).map(drop)
}

/// `fcntl(F_GETFD)`: whether the fd has FD_CLOEXEC set.
pub fn is_cloexec(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: F_GETFD takes no argument.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) })?;
    Ok(flags & libc::FD_CLOEXEC != 0)
}

fn cpath(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `open(path, O_RDONLY | O_CLOEXEC)`.
pub fn open_readonly(path: &Path) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    // SAFETY: valid C string; fresh fd.
    let fd = cvt(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setns(fd, CLONE_NEWNET)`: moves the *calling thread* into the network namespace.
pub fn setns_net(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain syscall on a borrowed fd.
    cvt(unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) }).map(drop)
}

/// `unshare(CLONE_NEWNET)`: gives the *calling thread* a new network namespace.
pub fn unshare_net() -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::unshare(libc::CLONE_NEWNET) }).map(drop)
}

/// `mount(source, target, NULL, flags, NULL)`.
pub fn mount(source: &Path, target: &Path, flags: libc::c_ulong) -> io::Result<()> {
    let s = cpath(source)?;
    let t = cpath(target)?;
    // SAFETY: valid C strings; no data argument.
    cvt(unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    })
    .map(drop)
}

/// `umount2(target, MNT_DETACH)`.
pub fn umount_detach(target: &Path) -> io::Result<()> {
    let t = cpath(target)?;
    // SAFETY: valid C string.
    cvt(unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

/// Calls a `get*nam_r` function, growing the buffer on ERANGE (large LDAP groups).
fn lookup_r(
    name: &str,
    mut call: impl FnMut(&std::ffi::CStr, &mut [u8]) -> (libc::c_int, Option<u32>),
) -> io::Result<Option<u32>> {
    let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut size = 16 * 1024;
    loop {
        let mut buf = vec![0u8; size];
        match call(&c, &mut buf) {
            (0, id) => return Ok(id),
            (libc::ERANGE, _) if size < 64 << 20 => size *= 4,
            (rc, _) => return Err(io::Error::from_raw_os_error(rc)),
        }
    }
}

/// The uid of a user name, from the system's user database (`getpwnam_r`).
pub fn user_id(name: &str) -> io::Result<Option<u32>> {
    lookup_r(name, |c, buf| {
        // SAFETY: zeroed passwd is a valid out-parameter.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the stated sizes.
        let rc = unsafe {
            libc::getpwnam_r(
                c.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        (rc, (!result.is_null()).then_some(pwd.pw_uid))
    })
}

/// The gid of a group name, from the system's group database (`getgrnam_r`).
pub fn group_id(name: &str) -> io::Result<Option<u32>> {
    lookup_r(name, |c, buf| {
        // SAFETY: zeroed group is a valid out-parameter.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the stated sizes.
        let rc = unsafe {
            libc::getgrnam_r(
                c.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        (rc, (!result.is_null()).then_some(grp.gr_gid))
    })
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

/// A connected pair of close-on-exec `SOCK_SEQPACKET` Unix sockets (message boundaries kept).
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two fds socketpair writes.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: both fds are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends one message with `fds` attached (SCM_RIGHTS).
pub fn send_with_fds(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    let raw: Vec<libc::c_int> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let payload = std::mem::size_of_val(raw.as_slice());
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(payload as u32) } as usize;
    let mut cmsg_buf = vec![0u8; space.max(1)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: a zeroed msghdr is valid; fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        msg.msg_control = cmsg_buf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `space` bytes, enough for one header and the fds.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
            std::ptr::copy_nonoverlapping(
                raw.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                payload,
            );
        }
    }
    // SAFETY: `msg` describes live buffers.
    cvt_size(unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) })
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
    let payload = max_fds * std::mem::size_of::<libc::c_int>();
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(payload as u32) } as usize;
    let mut cmsg_buf = vec![0u8; space.max(1)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: a zeroed msghdr is valid; fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if max_fds > 0 {
        msg.msg_control = cmsg_buf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
    }
    // SAFETY: `msg` describes live, writable buffers.
    let n = cvt_size(unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) })?;
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into `cmsg_buf`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let len = ((*cmsg).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                let count = len / std::mem::size_of::<libc::c_int>();
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let truncated = Truncation {
        data: msg.msg_flags & libc::MSG_TRUNC != 0,
        control: msg.msg_flags & libc::MSG_CTRUNC != 0,
    };
    Ok((n, truncated, fds))
}

/// The uid, gid and pid of the peer of a Unix socket (SO_PEERCRED).
#[cfg(feature = "helper-server")]
pub fn peer_credentials(sock: BorrowedFd<'_>) -> io::Result<(u32, u32, i32)> {
    // SAFETY: a zeroed ucred is a valid out-parameter of the stated size.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writing.
    cvt(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok((cred.uid, cred.gid, cred.pid))
}

/// Whether fd is a `SOCK_SEQPACKET` socket.
#[cfg(feature = "helper-server")]
pub fn is_seqpacket(fd: BorrowedFd<'_>) -> bool {
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `ty` and `len` are valid for writing.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == 0 && ty == libc::SOCK_SEQPACKET
}

/// Makes sure fds 1 and 2 are open (on `/dev/null` if the caller closed them), so that
/// nothing the helper opens later lands on them and receives its log lines.
#[cfg(feature = "helper-server")]
pub fn ensure_std_fds() {
    use std::os::fd::IntoRawFd;
    for fd in [1, 2] {
        // SAFETY: F_GETFD only queries the fd.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            // open(2) returns the lowest free fd: this one. Kept open for the process's life.
            if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                let _ = null.into_raw_fd();
            }
        }
    }
}

/// Ignores SIGXFSZ: writing past the caller's RLIMIT_FSIZE then fails with EFBIG instead
/// of killing the process.
#[cfg(feature = "helper-server")]
pub fn ignore_sigxfsz() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
}

/// Takes ownership of standard input (fd 0): the helper's request socket.
#[cfg(feature = "helper-server")]
pub fn take_stdin() -> OwnedFd {
    // SAFETY: fd 0 is open for the life of the process; taking it makes us its only owner
    // (nothing else in the helper reads standard input).
    unsafe { OwnedFd::from_raw_fd(0) }
}

/// Closes every fd from `first` up (`close_range(2)`; before Linux 5.9, each fd listed in
/// `/proc/self/fd`).
#[cfg(feature = "helper-server")]
pub fn close_from(first: u32) {
    // SAFETY: closing fds we do not use; nothing in this process holds them yet.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) };
    if rc != 0 {
        let fds: Vec<libc::c_int> = std::fs::read_dir("/proc/self/fd")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        for fd in fds.into_iter().filter(|fd| *fd >= first as libc::c_int) {
            // SAFETY: as above (the directory's own fd is closed already: EBADF, harmless).
            unsafe { libc::close(fd) };
        }
    }
}

/// Sets a receive timeout on a socket (SO_RCVTIMEO).
#[cfg(feature = "helper-server")]
pub fn set_recv_timeout(sock: BorrowedFd<'_>, secs: i64) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: secs as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: `tv` is a valid timeval of the stated size.
    cvt(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid never fails.
    unsafe { libc::geteuid() == 0 }
}

/// The real uid: the user who ran this process.
pub fn real_uid() -> u32 {
    // SAFETY: getuid never fails.
    unsafe { libc::getuid() }
}

/// Whether this thread has `cap` (a `CAP_*` number) in its effective set (capget).
pub fn has_capability(cap: u32) -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut hdr = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: `hdr` and `data` (two elements, as version 3 needs) are valid for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut Header, data.as_mut_ptr()) };
    let (word, bit) = ((cap / 32) as usize, cap % 32);
    rc == 0 && word < 2 && data[word].effective & (1 << bit) != 0
}

/// Whether this process runs in "secure" mode (setuid, setgid or file capabilities:
/// `getauxval(AT_SECURE)`), where the environment must not choose what it runs.
pub fn secure_mode() -> bool {
    // SAFETY: getauxval only reads the auxiliary vector.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// Real and effective uid, real gid, and supplementary groups of this process.
#[cfg(feature = "helper-server")]
pub fn ids() -> (u32, u32, u32, Vec<u32>) {
    // SAFETY: these never fail.
    let (uid, euid, gid) = unsafe { (libc::getuid(), libc::geteuid(), libc::getgid()) };
    let mut groups = vec![0 as libc::gid_t; 256];
    // SAFETY: `groups` has room for 256 gids.
    let n = unsafe { libc::getgroups(groups.len() as libc::c_int, groups.as_mut_ptr()) };
    groups.truncate(n.max(0) as usize);
    (uid, euid, gid, groups)
}

/// The name of a uid from the user database (`getpwuid_r`).
#[cfg(feature = "helper-server")]
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: zeroed passwd is a valid out-parameter.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the stated sizes.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: pw_name points into `buf`, NUL-terminated.
    Some(
        unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// `open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)` of a network namespace file, checked to be
/// one (`fstatfs` reports nsfs): no symlink, no other kind of file.
#[cfg(feature = "helper-server")]
pub fn open_netns_file(path: &Path) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    // SAFETY: valid C string; fresh fd.
    let fd = cvt(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    })?;
    // SAFETY: fresh fd owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid for writing.
    cvt(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) })?;
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    if st.f_type as i64 != NSFS_MAGIC {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(fd)
}

/// For a setuid-root helper: become the real user, keeping only CAP_NET_ADMIN and
/// CAP_SYS_ADMIN (permitted and effective), before reading any request.
#[cfg(feature = "helper-server")]
pub fn drop_to_net_admin(uid: u32, gid: u32) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const CAP_V3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    let keep: u32 = (1 << CAP_NET_ADMIN) | (1 << CAP_SYS_ADMIN);
    // SAFETY: plain syscalls with valid arguments.
    unsafe {
        cvt(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0))?;
        cvt(libc::setresgid(gid, gid, gid))?;
        cvt(libc::setresuid(uid, uid, uid))?;
        let mut hdr = Header {
            version: CAP_V3,
            pid: 0,
        };
        let data = [
            Data {
                effective: keep,
                permitted: keep,
                inheritable: 0,
            },
            Data {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            },
        ];
        if libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        cvt(libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0))?;
    }
    Ok(())
}

/// Wraps an fd received from elsewhere (the privileged helper) as a netlink socket.
pub fn netlink_socket_from(fd: OwnedFd) -> netlink_sys::Socket {
    use std::os::fd::IntoRawFd;
    // SAFETY: ownership of the fd moves into the socket, which closes it on drop.
    unsafe { <netlink_sys::Socket as FromRawFd>::from_raw_fd(fd.into_raw_fd()) }
}
