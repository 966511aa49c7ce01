//! Unix sockets through which a running program is reached: vpwn's WireGuard UAPI socket
//! (`/var/run/wireguard/NAME.sock`), br's control socket (`/run/tunctl/br/NAME.sock`).
//! Bound safely (a live socket is never taken over, a stale one is replaced, mode 0600, in
//! a directory nobody else can write, the name held by a lock for the program's life),
//! listed by name, traced to the process serving them, and served with a deadline per
//! client ([`Client`]).

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A listening socket `DIR/NAME.sock`, non-blocking; removed when dropped.
#[derive(Debug)]
pub struct ServiceSocket {
    listener: UnixListener,
    path: PathBuf,
    /// The socket file's inode: only ours is removed on drop.
    inode: u64,
    /// `DIR/NAME.lock`, held for as long as this socket lives: the name is ours, whoever
    /// else starts with it. Declared last: released after the socket file is removed.
    _name: NameLock,
}

/// A name taken for the life of a program: `DIR/NAME.lock`, locked (`flock`) exclusively
/// while this lives, removed (still locked) when it goes. A program killed before it could
/// remove it leaves a file nobody holds, which the next taker simply locks: the kernel
/// releases a lock with its holder, so a name is never held by the dead.
#[derive(Debug)]
pub struct NameLock {
    fd: OwnedFd,
    path: PathBuf,
}

impl NameLock {
    /// Takes `NAME` in `dir` without waiting. `dir` is made 0755 if missing and must be
    /// writable by nobody but this user (or root), as for [`ServiceSocket::bind`].
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::AddrInUse`] when a running program holds the name;
    /// [`io::ErrorKind::InvalidInput`] for a name that is empty, starts with a dot or holds
    /// a `/`; [`io::ErrorKind::PermissionDenied`] for a directory others can write; the
    /// directory or the file cannot be made.
    pub fn take(dir: &Path, name: &str) -> io::Result<NameLock> {
        if name.is_empty() || name.starts_with('.') || name.contains('/') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a lock name"),
            ));
        }
        secure_dir(dir)?;
        let (fd, path) = lock_name(dir, name)?;
        Ok(NameLock { fd, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for NameLock {
    fn drop(&mut self) {
        // Ours, while still locked (the fd closes after this): one replaced meanwhile is
        // another taker's.
        if still_at(&self.fd, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Makes `dir` (and any missing parent) mode 0755 whatever the umask, as wireguard-go
/// makes `/var/run/wireguard`, and checks it: a real directory (not a symbolic link),
/// owned by this user or root, writable by nobody else. Anyone who could write it could
/// replace a socket in it with their own and catch what clients send (`wg set` sends
/// private keys).
fn secure_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            secure_dir(parent)?;
        }
    }
    match std::fs::DirBuilder::new().mode(0o755).create(dir) {
        // Made now: its mode is 0755 minus the umask, so set it.
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    let me = rustix::process::geteuid().as_raw();
    let unsafe_because = if !meta.file_type().is_dir() {
        Some("is not a directory".to_string())
    } else if meta.uid() != me && meta.uid() != 0 {
        Some(format!(
            "belongs to uid {}, not to this user or root",
            meta.uid()
        ))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "can be written by others (mode {:04o}): a socket in it could be replaced; chmod 755 it",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match unsafe_because {
        Some(why) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{}: {why}", dir.display()),
        )),
        None => Ok(()),
    }
}

/// Takes `DIR/NAME.lock` (created 0600, never a link), locked exclusively without waiting.
/// The lock file is removed again when the socket goes (while still locked), so a lock won
/// on a file that was removed meanwhile is worth nothing: the file locked must still be
/// the one at the path, else it is tried again.
fn lock_name(dir: &Path, name: &str) -> io::Result<(OwnedFd, PathBuf)> {
    use rustix::fs::{FlockOperation, Mode, OFlags};
    let path = dir.join(format!("{name}.lock"));
    // A sweeper (another program's `bind`) holds a stale lock for a moment: a lock held
    // for longer than these tries is a running program's.
    let mut busy = 0;
    for _ in 0..32 {
        let fd = rustix::fs::open(
            &path,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK && busy < 20 => {
                busy += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
                continue;
            }
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{name} is taken by another running program ({} is locked)",
                        path.display()
                    ),
                ))
            }
            Err(e) => return Err(e.into()),
        }
        if still_at(&fd, &path) {
            return Ok((fd, path));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("{name}: its lock file keeps changing under us"),
    ))
}

/// Whether the file open at `fd` is the one at `path` (same device and inode, not a link).
fn still_at(fd: &OwnedFd, path: &Path) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|held| {
        std::fs::symlink_metadata(path)
            .is_ok_and(|m| m.ino() == held.st_ino && m.dev() == held.st_dev)
    })
}

/// Removes what programs killed before they could clean up left in `dir`: for each lock
/// file whose lock nobody holds, its socket (if nobody answers on it) and the lock file
/// itself (removed while locked, so a program racing for the name retries). Names without
/// a lock file (another program's sockets) are left alone.
fn sweep_stale(dir: &Path, except: &str) {
    use rustix::fs::{FlockOperation, Mode, OFlags};
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".lock")) else {
            continue;
        };
        if name == except || crate::name::validate(name, false).is_err() {
            continue;
        }
        let lock_path = dir.join(format!("{name}.lock"));
        let Ok(fd) = rustix::fs::open(
            &lock_path,
            OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        if rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_err() {
            // Held: its program runs.
            continue;
        }
        // A lock won on a file removed meanwhile (its program ended cleanly, and maybe a
        // new one took the name since, and is binding its socket now) says nothing of the
        // socket: only the lock file at the path counts.
        if !still_at(&fd, &lock_path) {
            continue;
        }
        let sock = dir.join(format!("{name}.sock"));
        if UnixStream::connect(&sock).is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused) {
            let _ = std::fs::remove_file(&sock);
        }
        let _ = std::fs::remove_file(&lock_path);
    }
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
    /// Binds `DIR/NAME.sock`, mode 0600: the socket may hand out secrets or stop the
    /// program. `dir` is made 0755 if missing and must be writable by nobody but this user
    /// (or root). The name is taken first by locking `DIR/NAME.lock` for the life of the
    /// socket, so two programs started at once with one name never both run. A socket
    /// someone answers on is an error; one nobody answers on (left by a program that
    /// died) is replaced.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::AddrInUse`] when another program serves or holds the name; a bad
    /// name; [`io::ErrorKind::PermissionDenied`] for a directory others can write; the
    /// directory or the socket cannot be made (not root).
    pub fn bind(dir: &Path, name: &str) -> io::Result<ServiceSocket> {
        use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
        let path = socket_path(dir, name)?;
        let name_lock = NameLock::take(dir, name)?;
        sweep_stale(dir, name);
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
            _name: name_lock,
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
        // The name's lock file goes with `_name`, after this.
    }
}

/// One client of a service socket, served under a deadline for the whole conversation: a
/// client that sends slowly (one byte a second keeps any per-read timeout alive) is cut
/// off when its time is up, so it can hold a server's thread no longer than that.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    deadline: Instant,
}

impl Client {
    /// `stream` (made blocking), to be served within `within` from now.
    ///
    /// # Errors
    ///
    /// The socket's, setting it blocking.
    pub fn new(stream: UnixStream, within: Duration) -> io::Result<Client> {
        stream.set_nonblocking(false)?;
        Ok(Client {
            stream,
            deadline: Instant::now() + within,
        })
    }

    /// The time left, as the socket's timeout for the next read or write; an error once
    /// none is left.
    fn arm(&self) -> io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client's time is up",
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.set_write_timeout(Some(left))
    }

    /// The connection itself (e.g. for `SO_PEERCRED`).
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }
}

impl io::Read for Client {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm()?;
        self.stream.read(buf)
    }
}

impl io::Write for Client {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm()?;
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
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

    /// Made 0755 under any umask; a directory others can write is refused; a name held by a
    /// live socket's lock is refused even when its socket file is gone.
    #[test]
    fn the_directory_is_0755_and_others_writable_ones_are_refused() {
        let base = std::env::temp_dir().join(format!("tunctl-service-dir-{}", std::process::id()));
        let dir = base.join("run/sub");
        let old = rustix::process::umask(rustix::fs::Mode::empty());
        let s = ServiceSocket::bind(&dir, "svc0");
        rustix::process::umask(old);
        let s = s.unwrap();
        for d in [&dir, &base.join("run")] {
            let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o755, "{}", d.display());
        }
        // The socket file removed by someone: the lock still holds the name.
        std::fs::remove_file(s.path()).unwrap();
        let e = ServiceSocket::bind(&dir, "svc0").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        drop(s);
        // Released with the socket, and nothing left behind.
        drop(ServiceSocket::bind(&dir, "svc0").unwrap());
        assert!(!dir.join("svc0.lock").exists() && !dir.join("svc0.sock").exists());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ServiceSocket::bind(&dir, "svc1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("can be written by others"), "{e}");
        let _ = std::fs::remove_dir_all(&base);
    }

    /// Two programs starting at once with one name and a stale socket present: exactly one
    /// gets it, every time (before the lock, 2 in 50 rounds both ran).
    #[test]
    fn two_binders_racing_over_a_stale_socket_one_wins() {
        let dir = std::env::temp_dir().join(format!("tunctl-service-race-{}", std::process::id()));
        for round in 0..50 {
            let stale = UnixListener::bind(dir.join("race0.sock"))
                .or_else(|_| {
                    secure_dir(&dir)?;
                    UnixListener::bind(dir.join("race0.sock"))
                })
                .unwrap();
            drop(stale);
            let barrier = std::sync::Barrier::new(2);
            let won: Vec<Option<ServiceSocket>> = std::thread::scope(|s| {
                let racers: Vec<_> = (0..2)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            ServiceSocket::bind(&dir, "race0").ok()
                        })
                    })
                    .collect();
                racers.into_iter().map(|r| r.join().unwrap()).collect()
            });
            let live: Vec<&ServiceSocket> = won.iter().flatten().collect();
            assert_eq!(live.len(), 1, "round {round}");
            assert_eq!(server_pid(live[0].path()).unwrap(), std::process::id());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// What a killed program left (its socket, its lock file, nobody holding the lock) is
    /// removed when another name is bound; a live program's are not, nor a socket without
    /// a lock file (another program's).
    #[test]
    fn a_killed_programs_leftovers_are_swept() {
        let dir = std::env::temp_dir().join(format!("tunctl-service-sweep-{}", std::process::id()));
        let live = ServiceSocket::bind(&dir, "live0").unwrap();
        drop(UnixListener::bind(dir.join("dead0.sock")).unwrap());
        std::fs::write(dir.join("dead0.lock"), b"").unwrap();
        drop(UnixListener::bind(dir.join("other0.sock")).unwrap());
        let fresh = ServiceSocket::bind(&dir, "fresh0").unwrap();
        assert!(!dir.join("dead0.sock").exists() && !dir.join("dead0.lock").exists());
        assert!(dir.join("live0.sock").exists() && dir.join("live0.lock").exists());
        assert!(
            dir.join("other0.sock").exists(),
            "no lock file: not ours to judge"
        );
        drop((live, fresh));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A client that sends one byte at a time is cut off at its deadline, not kept alive
    /// by each byte.
    #[test]
    fn a_slow_client_is_cut_off_at_its_deadline() {
        use std::io::Read;
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut client = Client::new(a, Duration::from_millis(300)).unwrap();
        let writer = std::thread::spawn(move || {
            for _ in 0..20 {
                if std::io::Write::write_all(&mut b, b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let start = Instant::now();
        let mut buf = [0u8; 1];
        let mut got = 0;
        let err = loop {
            match client.read(&mut buf) {
                Ok(0) => panic!("closed"),
                Ok(_) => got += 1,
                Err(e) => break e,
            }
        };
        assert!(got > 0);
        assert!(
            start.elapsed() < Duration::from_millis(600),
            "{:?}",
            start.elapsed()
        );
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            "{err}"
        );
        drop(client);
        let _ = writer.join();
    }
}
