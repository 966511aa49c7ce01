//! The only home of system calls and `unsafe` in the crate, one file per concern: TUN
//! ioctls ([`tun`]), packet I/O and waiting ([`io`]), namespaces and mounts ([`netns`]),
//! sockets and messages ([`socket`]), users, groups and privilege ([`users`]), and io_uring
//! rings ([`uring`], feature `io-uring`).
//!
//! System calls go through [`rustix`] wherever it has them; what it lacks is hand-written
//! with `libc` and says so. Each function does one system call (or a tight, documented
//! sequence) and returns the `errno` as an [`std::io::Error`]. Callers add the device name and
//! operation.

mod io;
mod netns;
mod socket;
mod tun;
#[cfg(feature = "io-uring")]
pub mod uring;
mod users;

pub use self::io::*;
pub use netns::*;
pub use socket::*;
pub use tun::*;
pub use users::*;

/// `EINVAL`, for arguments refused before any system call.
pub(crate) fn einval() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

    #[test]
    fn fds_pass_close_on_exec_and_truncation_is_reported() {
        let (a, b) = seqpacket_pair().unwrap();
        let fds: Vec<OwnedFd> = (0..3).map(|_| eventfd().unwrap()).collect();
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
        let mut buf = [0u8; 16];

        send_with_fds(a.as_fd(), b"hello", &borrowed[..2]).unwrap();
        let (n, trunc, got) = recv_with_fds(b.as_fd(), &mut buf, 2).unwrap();
        assert_eq!((&buf[..n], got.len()), (&b"hello"[..], 2));
        assert_eq!(
            trunc,
            Truncation {
                data: false,
                control: false
            }
        );
        assert!(got.iter().all(|f| is_cloexec(f.as_fd()).unwrap()));

        // Room for two: the third is dropped by the kernel and reported.
        send_with_fds(a.as_fd(), b"x", &borrowed).unwrap();
        let (_, trunc, got) = recv_with_fds(b.as_fd(), &mut buf, 2).unwrap();
        assert_eq!((got.len(), trunc.control, trunc.data), (2, true, false));

        send_with_fds(a.as_fd(), b"y", &borrowed[..1]).unwrap();
        let (_, trunc, got) = recv_with_fds(b.as_fd(), &mut buf, 0).unwrap();
        assert_eq!((got.len(), trunc.control), (0, true));

        send_with_fds(a.as_fd(), b"a longer message", &[]).unwrap();
        let (n, trunc, got) = recv_with_fds(b.as_fd(), &mut buf[..4], 2).unwrap();
        assert_eq!(
            (n, trunc.data, trunc.control, got.len()),
            (4, true, false, 0)
        );
    }

    #[test]
    fn poll_reports_wake_io_and_timeout() {
        let (a, b) = seqpacket_pair().unwrap();
        let wake = eventfd().unwrap();
        assert_eq!(
            poll(a.as_fd(), Interest::Read, &[wake.as_fd()], 10).unwrap(),
            Ready::Timeout
        );
        assert_eq!(
            poll(a.as_fd(), Interest::Write, &[wake.as_fd()], -1).unwrap(),
            Ready::Io
        );
        send_with_fds(b.as_fd(), b"x", &[]).unwrap();
        eventfd_signal(wake.as_fd()).unwrap();
        let other = eventfd().unwrap();
        assert_eq!(
            poll(a.as_fd(), Interest::Read, &[other.as_fd(), wake.as_fd()], 0).unwrap(),
            Ready::Wake(1)
        );
    }

    #[test]
    fn cloexec_is_set_and_read_back() {
        let (a, _b) = seqpacket_pair().unwrap();
        let dup = rustix::io::dup(&a).unwrap();
        assert!(!is_cloexec(dup.as_fd()).unwrap());
        set_cloexec(dup.as_fd()).unwrap();
        assert!(is_cloexec(dup.as_fd()).unwrap());
    }
}
