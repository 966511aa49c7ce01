//! Network namespaces and mounts: opening namespace files, `setns`, `unshare`, the bind
//! mounts that keep a named namespace alive.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use super::einval;

/// `open(path, O_RDONLY | O_CLOEXEC)`.
pub fn open_readonly(path: &Path) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// `setns(fd, CLONE_NEWNET)`: moves the *calling thread* into the network namespace.
pub fn setns_net(fd: BorrowedFd<'_>) -> io::Result<()> {
    use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
    Ok(move_into_link_name_space(
        fd,
        Some(LinkNameSpaceType::Network),
    )?)
}

/// `unshare(CLONE_NEWNET)`: gives the *calling thread* a new network namespace.
pub fn unshare_net() -> io::Result<()> {
    // SAFETY: the hazard rustix guards against is CLONE_FILES (a private fd table);
    // CLONE_NEWNET only changes the network namespace of this thread.
    Ok(unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }?)
}

/// `mount(source, target, NULL, flags, NULL)`.
pub fn mount(source: &Path, target: &Path, flags: libc::c_ulong) -> io::Result<()> {
    use rustix::mount::{MountFlags, MountPropagationFlags};
    const PROPAGATION: libc::c_ulong =
        libc::MS_SHARED | libc::MS_PRIVATE | libc::MS_SLAVE | libc::MS_UNBINDABLE;
    // Every MS_* flag fits in 32 bits, rustix's width.
    let bits = libc::c_uint::try_from(flags).map_err(|_| einval())?;
    let done = if flags & PROPAGATION != 0 {
        // A propagation change: the kernel ignores the source (rustix passes NULL).
        rustix::mount::mount_change(target, MountPropagationFlags::from_bits_retain(bits))
    } else if flags == libc::MS_BIND {
        rustix::mount::mount_bind(source, target)
    } else if flags == libc::MS_BIND | libc::MS_REC {
        rustix::mount::mount_bind_recursive(source, target)
    } else {
        // rustix's general mount wants a file system type: "" where the kernel reads none
        // (bind, move, remount); a new mount, which needs one, fails as before (ENODEV
        // instead of EINVAL).
        rustix::mount::mount(
            source,
            target,
            c"",
            MountFlags::from_bits_retain(bits),
            None::<&std::ffi::CStr>,
        )
    };
    Ok(done?)
}

/// `umount2(target, MNT_DETACH)`.
pub fn umount_detach(target: &Path) -> io::Result<()> {
    Ok(rustix::mount::unmount(
        target,
        rustix::mount::UnmountFlags::DETACH,
    )?)
}
