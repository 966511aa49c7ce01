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
