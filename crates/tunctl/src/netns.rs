//! Network namespaces: by name (`/run/netns/NAME`, as `ip netns` keeps them), by path or by
//! pid; created and deleted natively; and code run inside one without moving the process.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// Where `ip netns` (and this crate) keep named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// A network namespace: the caller's own, or one identified by name, path or process.
///
/// Entering a namespace ([`Namespace::run`]) happens on a short-lived helper thread, so the
/// calling thread and the rest of the process stay where they are. Sockets and tun fds
/// opened in there stay bound to that namespace wherever they are used afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Namespace {
    /// The namespace of the calling thread.
    #[default]
    Current,
    /// A named namespace, `/run/netns/NAME`.
    Named(String),
    /// A namespace file: a bind mount such as `/run/netns/NAME` or `/proc/PID/ns/net`.
    Path(PathBuf),
}

impl Namespace {
    /// The caller's own namespace.
    pub fn current() -> Namespace {
        Namespace::Current
    }

    /// A named namespace (`/run/netns/NAME`); the name is checked, not its existence.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a name that is empty, `.`, `..`, longer than 255
    /// bytes, or holds `/` or NUL.
    pub fn named(name: &str) -> Result<Namespace> {
        validate_name(name)?;
        Ok(Namespace::Named(name.to_string()))
    }

    /// A namespace given by the path of a namespace file.
    pub fn path(path: impl Into<PathBuf>) -> Namespace {
        Namespace::Path(path.into())
    }

    /// The namespace of process `pid` (`/proc/PID/ns/net`).
    pub fn pid(pid: u32) -> Namespace {
        Namespace::Path(PathBuf::from(format!("/proc/{pid}/ns/net")))
    }

    /// Reads a command-line argument the way `tunctl --netns` does: anything containing a
    /// `/` is a path, anything else a name under `/run/netns`.
    ///
    /// # Errors
    ///
    /// As [`named`](Namespace::named) for a name; a path is not checked.
    pub fn from_arg(arg: &str) -> Result<Namespace> {
        if arg.contains('/') {
            Ok(Namespace::path(arg))
        } else {
            Namespace::named(arg)
        }
    }

    /// The namespace file, or `None` for [`Namespace::Current`].
    pub fn file(&self) -> Option<PathBuf> {
        match self {
            Namespace::Current => None,
            Namespace::Named(name) => Some(Path::new(NETNS_RUN_DIR).join(name)),
            Namespace::Path(path) => Some(path.clone()),
        }
    }

    /// A short description for messages: `netns blue`, `netns /proc/1/ns/net`, or
    /// `current netns`.
    pub fn describe(&self) -> String {
        match self {
            Namespace::Current => "current netns".to_string(),
            Namespace::Named(name) => format!("netns {name}"),
            Namespace::Path(path) => format!("netns {}", path.display()),
        }
    }

    /// Opens the namespace file (close-on-exec). `None` for the current namespace.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] when the namespace does not exist,
    /// [`ErrorKind::PermissionDenied`] if its file cannot be opened.
    pub fn open(&self) -> Result<Option<OwnedFd>> {
        let Some(path) = self.file() else {
            return Ok(None);
        };
        let fd = sys::open_readonly(&path).map_err(|e| {
            let missing = e.raw_os_error() == Some(libc::ENOENT);
            let err = Error::os("open namespace", e).on(self.describe());
            if missing {
                err.with_detail(format!("{} does not exist", path.display()))
            } else {
                err
            }
        })?;
        Ok(Some(fd))
    }

    /// Runs `f` on a helper thread that has entered this namespace, and returns its result.
    /// For [`Namespace::Current`] `f` runs on the calling thread. Costs a thread spawn and a
    /// `setns(2)` (CAP_SYS_ADMIN is needed to enter another namespace).
    ///
    /// # Errors
    ///
    /// As [`open`](Namespace::open); [`ErrorKind::PermissionDenied`] without CAP_SYS_ADMIN,
    /// EINVAL ([`ErrorKind::Os`]) for a file that is not a network namespace. `f`'s own
    /// result is returned inside `Ok`.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let Some(fd) = self.open()? else {
            return Ok(f());
        };
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    sys::setns_net(fd.as_fd()).map_err(|e| {
                        Error::os("setns", e)
                            .on(self.describe())
                            .needs("CAP_SYS_ADMIN", "entering another network namespace")
                    })?;
                    drop(fd);
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Creates the named namespace `/run/netns/NAME`, as `ip netns add NAME` does: a new
    /// network namespace, kept alive by a bind mount. The returned guard deletes it again
    /// when dropped (an early return, a panic, a handled Ctrl-C), unless
    /// [`keep`](CreatedNamespace::keep) says it should outlive the program; it derefs to
    /// the [`Namespace`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::AlreadyExists`] if the name is taken, [`ErrorKind::InvalidInput`] for a
    /// bad name, [`ErrorKind::PermissionDenied`] without CAP_SYS_ADMIN.
    pub fn create(name: &str) -> Result<CreatedNamespace> {
        validate_name(name)?;
        let ns = Namespace::Named(name.to_string());
        let run_dir = Path::new(NETNS_RUN_DIR);
        fs::create_dir_all(run_dir).map_err(|e| {
            Error::os("mkdir /run/netns", e).needs("root", "/run/netns belongs to root")
        })?;
        ensure_shared_mount(run_dir)?;
        let path = run_dir.join(name);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::new(
                        ErrorKind::AlreadyExists,
                        "create namespace",
                        format!("{} exists already", path.display()),
                    )
                } else {
                    Error::os("create namespace", e)
                }
                .on(ns.describe())
            })?;
        let bound = in_new_namespace(|| {
            sys::mount(Path::new("/proc/thread-self/ns/net"), &path, libc::MS_BIND).map_err(|e| {
                Error::os("bind mount", e)
                    .needs("CAP_SYS_ADMIN", "keeping a namespace by a bind mount")
            })
        });
        if let Err(err) = bound {
            let _ = fs::remove_file(&path);
            return Err(err.on(ns.describe()));
        }
        Ok(CreatedNamespace {
            ns,
            name: name.to_string(),
            keep: false,
        })
    }

    /// A new network namespace that only this process holds, by an fd: nothing names it in
    /// `/run/netns`, and it goes away (with its devices, once their fds close) when the
    /// returned value is dropped **or the process ends, however it ends** (Ctrl-C, a kill,
    /// a crash): nothing is left behind to clash with the next run. What examples and tests
    /// want; [`create`](Namespace::create) for one that others can enter by name.
    ///
    /// Derefs to a [`Namespace::Path`] (`/proc/self/fd/N`) valid while the value lives: use it
    /// as any other ([`Builder::namespace`](crate::Builder::namespace), [`Namespace::run`]).
    /// Another process enters it through `/proc/PID/fd/N` (`nsenter --net=...`).
    ///
    /// `unshare(CLONE_NEWNET)` on a helper thread, which keeps an fd of its namespace.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::PermissionDenied`] without CAP_SYS_ADMIN.
    pub fn private() -> Result<PrivateNamespace> {
        let fd = in_new_namespace(|| {
            sys::open_readonly(Path::new("/proc/thread-self/ns/net"))
                .map_err(|e| Error::os("open namespace", e))
        })?;
        use std::os::fd::AsRawFd;
        let ns = Namespace::Path(PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())));
        Ok(PrivateNamespace { ns, _fd: fd })
    }

    /// Deletes the named namespace, as `ip netns del NAME` does: unmounts and removes
    /// `/run/netns/NAME`. The namespace itself goes away once no process, socket or device fd
    /// keeps it alive. The counterpart of [`create`](Namespace::create) for a namespace
    /// made elsewhere or kept; a [`CreatedNamespace`] has [`delete`](CreatedNamespace::delete).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] if there is no such namespace.
    pub fn delete(name: &str) -> Result<()> {
        validate_name(name)?;
        let ns = Namespace::Named(name.to_string());
        let path = Path::new(NETNS_RUN_DIR).join(name);
        if !path.exists() {
            return Err(Error::new(
                ErrorKind::NotFound,
                "delete namespace",
                format!("{} does not exist", path.display()),
            )
            .on(ns.describe()));
        }
        // EINVAL: not a mount point (a stale file): removing it is all that is left to do.
        if let Err(e) = sys::umount_detach(&path) {
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(Error::os("umount", e).on(ns.describe()));
            }
        }
        fs::remove_file(&path).map_err(|e| Error::os("remove", e).on(ns.describe()))
    }

    /// The names of the namespaces under `/run/netns`, sorted.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::PermissionDenied`] or [`ErrorKind::Os`] if `/run/netns` cannot be read;
    /// a missing `/run/netns` is an empty list, not an error.
    pub fn list() -> Result<Vec<String>> {
        let entries = match fs::read_dir(NETNS_RUN_DIR) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::os("read /run/netns", e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The name under `/run/netns` this namespace is known by, if any (the first whose file
    /// is the same namespace): what to call a namespace given by path or by process. `None`
    /// for one with no name there (the host's own, usually).
    ///
    /// # Errors
    ///
    /// As [`open`](Namespace::open).
    pub fn name_in_run_dir(&self) -> Result<Option<String>> {
        let here = self.id()?;
        Ok(Namespace::list()?
            .into_iter()
            .find(|n| Namespace::Named(n.clone()).id().is_ok_and(|id| id == here)))
    }

    /// What this namespace is, however it is named: the device and inode of its file (for
    /// [`Namespace::Current`], the calling thread's). Two namespaces are one exactly when
    /// their ids are equal. Read without entering the namespace (no privilege needed).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] (or another kind) when the file cannot be read.
    pub fn id(&self) -> Result<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let path = self
            .file()
            .unwrap_or_else(|| PathBuf::from("/proc/thread-self/ns/net"));
        fs::metadata(&path)
            .map(|m| (m.dev(), m.ino()))
            .map_err(|e| Error::os("stat namespace", e).on(self.describe()))
    }

    /// Whether the namespace file exists (always true for the current namespace).
    pub fn exists(&self) -> bool {
        self.file().is_none_or(|path| path.exists())
    }
}

/// Makes `/run/netns` a shared mount point (bind-mounting it onto itself first if it is not
/// a mount point), so namespace mounts made here are seen from other mount namespaces: what
/// `ip netns add` does.
/// Why namespace mounts need privilege.
const MOUNT: &str =
    "named namespaces live as mounts under /run/netns, as `ip netns add` makes them";

fn ensure_shared_mount(dir: &Path) -> Result<()> {
    let shared = libc::MS_SHARED | libc::MS_REC;
    match sys::mount(Path::new("none"), dir, shared) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            sys::mount(dir, dir, libc::MS_BIND | libc::MS_REC)
                .map_err(|e| Error::os("bind mount /run/netns", e).needs("CAP_SYS_ADMIN", MOUNT))?;
            sys::mount(Path::new("none"), dir, shared)
                .map_err(|e| Error::os("make /run/netns shared", e).needs("CAP_SYS_ADMIN", MOUNT))
        }
        Err(e) => Err(Error::os("make /run/netns shared", e).needs("CAP_SYS_ADMIN", MOUNT)),
    }
}

/// A namespace name must be a plain file name: non-empty, at most 255 bytes, not `.`/`..`,
/// no `/` or NUL.
fn validate_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::new(
            ErrorKind::InvalidInput,
            "invalid namespace name",
            format!("{name:?}: {why}"),
        ))
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 255 {
        return bad("longer than 255 bytes");
    }
    if name == "." || name == ".." {
        return bad("\".\" and \"..\" are not namespace names");
    }
    if name.contains('/') || name.contains('\0') {
        return bad("contains '/' or NUL");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(Namespace::named("blue").is_ok());
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert_eq!(
                Namespace::named(bad).unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
        }
        assert_eq!(
            Namespace::from_arg("/proc/1/ns/net").unwrap(),
            Namespace::path("/proc/1/ns/net")
        );
        assert_eq!(
            Namespace::from_arg("blue").unwrap(),
            Namespace::Named("blue".into())
        );
    }
}

/// Runs `then` on a helper thread that has just moved into a new network namespace
/// (`unshare(CLONE_NEWNET)`): what keeps the namespace alive (a bind mount, an fd) is
/// `then`'s to make, or it goes with the thread.
fn in_new_namespace<T: Send>(then: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                sys::unshare_net().map_err(|e| {
                    Error::os("unshare(CLONE_NEWNET)", e)
                        .needs("CAP_SYS_ADMIN", "creating a network namespace")
                })?;
                then()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Other,
                    "create namespace",
                    "helper thread panicked",
                ))
            })
    })
}

/// A namespace only this process holds ([`Namespace::private`]): gone when dropped or when
/// the process ends. Derefs to the [`Namespace`] (a path valid while this value lives).
#[derive(Debug)]
pub struct PrivateNamespace {
    ns: Namespace,
    _fd: OwnedFd,
}

impl std::ops::Deref for PrivateNamespace {
    type Target = Namespace;

    fn deref(&self) -> &Namespace {
        &self.ns
    }
}

/// A namespace this program created with [`Namespace::create`]: deleted when dropped,
/// unless kept. Derefs to the [`Namespace`].
#[derive(Debug)]
pub struct CreatedNamespace {
    ns: Namespace,
    name: String,
    keep: bool,
}

impl CreatedNamespace {
    /// Lets the namespace outlive this value (and this program), as `ip netns add` does;
    /// returns it.
    pub fn keep(mut self) -> Namespace {
        self.keep = true;
        self.ns.clone()
    }

    /// Deletes the namespace now, reporting any failure (dropping deletes it quietly).
    ///
    /// # Errors
    ///
    /// As [`Namespace::delete`].
    pub fn delete(mut self) -> Result<()> {
        self.keep = true;
        Namespace::delete(&self.name)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::ops::Deref for CreatedNamespace {
    type Target = Namespace;

    fn deref(&self) -> &Namespace {
        &self.ns
    }
}

impl From<&CreatedNamespace> for Namespace {
    fn from(created: &CreatedNamespace) -> Namespace {
        created.ns.clone()
    }
}

impl Drop for CreatedNamespace {
    fn drop(&mut self) {
        if !self.keep {
            let _ = Namespace::delete(&self.name);
        }
    }
}
