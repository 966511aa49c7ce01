//! The helper's own system calls: rustix where it has them. `unsafe` is left only where
//! neither rustix nor std has the call (named at each place).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::net::sockopt;
use rustix::thread::{CapabilitySet, CapabilitySets};

/// The socket the request arrives on: standard input, as the library spawns us.
pub fn request_socket() -> BorrowedFd<'static> {
    // Standard input stays open for the process's life; nothing else here reads it.
    let stdin: &'static io::Stdin = Box::leak(Box::new(io::stdin()));
    stdin.as_fd()
}

/// Whether `fd` is a `SOCK_SEQPACKET` socket.
pub fn is_seqpacket(fd: BorrowedFd<'_>) -> bool {
    sockopt::socket_type(fd).is_ok_and(|t| t == rustix::net::SocketType::SEQPACKET)
}

/// The uid of the peer of a Unix socket (SO_PEERCRED).
pub fn peer_uid(sock: BorrowedFd<'_>) -> io::Result<u32> {
    Ok(sockopt::socket_peercred(sock)?.uid.as_raw())
}

/// A receive timeout on a socket (SO_RCVTIMEO).
pub fn set_recv_timeout(sock: BorrowedFd<'_>, timeout: std::time::Duration) -> io::Result<()> {
    Ok(sockopt::set_socket_timeout(
        sock,
        sockopt::Timeout::Recv,
        Some(timeout),
    )?)
}

/// Real uid, effective uid, real gid and supplementary groups.
pub fn ids() -> (u32, u32, u32, Vec<u32>) {
    let groups = rustix::process::getgroups()
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default();
    (
        rustix::process::getuid().as_raw(),
        rustix::process::geteuid().as_raw(),
        rustix::process::getgid().as_raw(),
        groups,
    )
}

/// Opens a network namespace file without following a symbolic link, checked to be one
/// (`fstatfs` reports nsfs): no other kind of file passes.
pub fn open_netns_file(path: &Path) -> io::Result<OwnedFd> {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    if rustix::fs::fstatfs(&fd)?.f_type as i64 != NSFS_MAGIC {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(fd)
}

/// For a setuid-root helper: become the real user, keeping only CAP_NET_ADMIN and
/// CAP_SYS_ADMIN (permitted and effective), before reading any request. Runs while the
/// process has one thread, so the thread-level calls change the whole process.
pub fn drop_to_net_admin(uid: u32, gid: u32) -> io::Result<()> {
    use rustix::process::{Gid, Uid};
    let keep = CapabilitySet::NET_ADMIN | CapabilitySet::SYS_ADMIN;
    rustix::thread::set_keep_capabilities(true)?;
    let gid = Gid::from_raw(gid);
    let uid = Uid::from_raw(uid);
    rustix::thread::set_thread_res_gid(gid, gid, gid)?;
    rustix::thread::set_thread_res_uid(uid, uid, uid)?;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: keep,
            permitted: keep,
            inheritable: CapabilitySet::empty(),
        },
    )?;
    rustix::thread::set_keep_capabilities(false)?;
    Ok(())
}

/// Closes every fd from 3 up (`close_range(2)`; before Linux 5.9, each fd listed in
/// `/proc/self/fd`). Returns how many were open.
pub fn close_inherited() -> usize {
    let open: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|fd| *fd > 2)
                .collect()
        })
        .unwrap_or_default();
    // rustix has no close_range: the raw syscall.
    // SAFETY: closing fds this process does not use; nothing holds them yet.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if rc != 0 {
        for fd in &open {
            // SAFETY: as above (the directory's own fd is closed already: EBADF, harmless).
            unsafe { libc::close(*fd) };
        }
    }
    // One of them was the directory listing's own fd.
    open.len().saturating_sub(1)
}

/// Makes sure fds 1 and 2 are open (on `/dev/null` if the caller closed them), so that
/// nothing opened later lands on them and receives log lines.
pub fn ensure_std_fds() {
    use std::os::fd::IntoRawFd;
    for fd in [1, 2] {
        if std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_err() {
            // open(2) returns the lowest free fd: this one. Kept for the process's life.
            if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                let _ = null.into_raw_fd();
            }
        }
    }
}

/// Ignores SIGXFSZ: writing past the caller's RLIMIT_FSIZE then fails with EFBIG instead of
/// killing the process.
pub fn ignore_sigxfsz() {
    // rustix offers no safe signal disposition call: libc's signal(2).
    // SAFETY: SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
}
