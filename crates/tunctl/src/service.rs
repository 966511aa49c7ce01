//! Unix sockets through which a running program is reached: vpwn's WireGuard UAPI socket
//! (`/var/run/wireguard/NAME.sock`), br's control socket (`/run/tunctl/br/NAME.sock`).
//! Bound safely (a live socket is never taken over, a stale one is replaced, mode 0600),
//! listed by name, and traced to the process serving them.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// A listening socket `DIR/NAME.sock`, non-blocking; removed when dropped.
#[derive(Debug)]
pub struct ServiceSocket {
    listener: UnixListener,
    path: PathBuf,
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
        let path = socket_path(dir, name)?;
        std::fs::create_dir_all(dir)?;
        if path.exists() {
            if UnixStream::connect(&path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is served by another program", path.display()),
                ));
            }
            std::fs::remove_file(&path)?;
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(ServiceSocket { listener, path })
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
        let _ = std::fs::remove_file(&self.path);
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
