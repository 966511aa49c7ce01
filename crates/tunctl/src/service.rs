//! Unix sockets through which a running program is reached: vpwn's WireGuard UAPI socket
//! (`/var/run/wireguard/NAME.sock`), br's control socket (`/run/tunctl/br/NAME.sock`).
//! Bound safely (a live socket is never taken over, a stale one is replaced, mode 0600),
//! listed by name, and traced to the process serving them.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// A listening socket `DIR/NAME.sock`, non-blocking; removed when dropped.
#[derive(Debug)]
pub struct ServiceSocket {
    listener: UnixListener,
    path: PathBuf,
    /// The socket file's inode: only ours is removed on drop.
    inode: u64,
}

/// `DIR/NAME.sock`, with NAME checked as an interface name is (no `/`, at most 15
/// bytes), so a name can never lead out of `dir`.
///
/// # Errors
///
/// [`io::ErrorKind::InvalidInput`] for a bad name.
pub fn socket_path(dir: &Path, name: &str) -> io::Result<PathBuf> {
    crate::name::validate(name, false)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    Ok(dir.join(format!("{name}.sock")))
}

impl ServiceSocket {
    /// Binds `DIR/NAME.sock` (creating `dir`), mode 0600: the socket may hand out secrets
    /// or stop the program. A socket someone answers on is an error; one nobody answers on
    /// (left by a program that died) is replaced.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::AddrInUse`] when another program serves the name; a bad name; the
    /// directory or the socket cannot be made (not root).
    pub fn bind(dir: &Path, name: &str) -> io::Result<ServiceSocket> {
        use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
        let path = socket_path(dir, name)?;
        std::fs::create_dir_all(dir)?;
        match UnixStream::connect(&path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is served by another program", path.display()),
                ))
            }
            // Left by a program that died: nobody listens.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(&path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // The mode is the socket's before bind: the file is born 0600 (never, even for a
        // moment, open to others whatever the umask), not chmod-ed after.
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )?;
        rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(0o600))?;
        rustix::net::bind(&fd, &SocketAddrUnix::new(&path)?)?;
        rustix::net::listen(&fd, 64)?;
        let listener = UnixListener::from(fd);
        listener.set_nonblocking(true)?;
        let inode = std::fs::metadata(&path).map(|m| m.ino()).unwrap_or(0);
        Ok(ServiceSocket {
            listener,
            path,
            inode,
        })
    }

    /// The connections waiting now (the listener never blocks).
    pub fn pending(&self) -> impl Iterator<Item = UnixStream> + '_ {
        std::iter::from_fn(move || self.listener.accept().ok().map(|(c, _)| c))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ServiceSocket {
    fn drop(&mut self) {
        // Another program may have replaced a socket it found stale: leave its file alone.
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The names of the sockets in `dir` (`NAME.sock`), sorted; none if `dir` is missing.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".sock").map(str::to_string)
            })
            .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The process serving the socket at `path`, as the kernel reports it (`SO_PEERCRED`).
///
/// # Errors
///
/// No socket ([`io::ErrorKind::NotFound`]), nobody serving it
/// ([`io::ErrorKind::ConnectionRefused`]).
pub fn server_pid(path: &Path) -> io::Result<u32> {
    let conn = UnixStream::connect(path)?;
    let cred = rustix::net::sockopt::socket_peercred(&conn)?;
    Ok(cred.pid.as_raw_nonzero().get() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn born_0600_live_refused_stale_replaced_names_checked() {
        let dir = std::env::temp_dir().join(format!("tunctl-service-{}", std::process::id()));
        let s = ServiceSocket::bind(&dir, "svc0").unwrap();
        let mode = std::fs::metadata(s.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(names(&dir), vec!["svc0".to_string()]);
        assert_eq!(server_pid(s.path()).unwrap(), std::process::id());
        let e = ServiceSocket::bind(&dir, "svc0").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        // A socket nobody listens on any more is replaced; the old owner's drop leaves the
        // new one alone.
        let path = s.path().to_path_buf();
        let stale = std::os::unix::net::UnixListener::bind(dir.join("svc1.sock")).unwrap();
        drop(stale);
        let s1 = ServiceSocket::bind(&dir, "svc1").unwrap();
        assert!(s1.path().exists());
        drop(s);
        assert!(!path.exists());
        for bad in ["../x", "a/b", "", "sixteen-bytes-xx"] {
            let e = ServiceSocket::bind(&dir, bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        drop(s1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
