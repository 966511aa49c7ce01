//! One error type for the whole crate: it names the device (or namespace), the operation and
//! the cause, e.g. `tap0: TUNSETIFF: Device or resource busy (EBUSY)`.

use std::fmt;
use std::io;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A name, address, prefix, MTU or other argument is not valid. Nothing was changed.
    InvalidInput,
    /// The device, namespace, address, user or group does not exist.
    NotFound,
    /// The device, namespace or address exists already.
    AlreadyExists,
    /// The device is in use (attached by another process, or `exclusive` was asked for).
    Busy,
    /// The caller lacks the privilege (usually CAP_NET_ADMIN) or is not the device's owner.
    PermissionDenied,
    /// The [`Device`](crate::Device) was destroyed or closed by this process.
    Closed,
    /// The kernel device went away underneath an open handle (e.g. `ip link del`).
    Gone,
    /// A received packet was longer than the buffer; its tail was dropped by the kernel.
    Truncated,
    /// The kernel attached with flags other than those asked for.
    FlagMismatch,
    /// The kernel or device does not support the operation.
    Unsupported,
    /// A passive receive on a device in active mode (the original's `einval`): nothing was read.
    Active,
    /// Any other operating-system error; see [`Error::raw_os_error`].
    Os,
    /// Something else went wrong without an OS error: an unexpected or malformed answer
    /// from the kernel or the helper, or a result that is not what was asked for.
    Other,
}

/// An error from a device, namespace or netlink operation.
pub struct Error {
    kind: ErrorKind,
    subject: Option<String>,
    op: String,
    detail: Option<String>,
    source: Option<io::Error>,
}

impl Error {
    /// A new error of `kind` for operation `op`, with a human-readable detail.
    pub(crate) fn new(kind: ErrorKind, op: impl Into<String>, detail: impl Into<String>) -> Error {
        Error {
            kind,
            subject: None,
            op: op.into(),
            detail: Some(detail.into()),
            source: None,
        }
    }

    /// Wraps an OS error from operation `op` (what a program built on this crate failed to
    /// do, e.g. `SO_MARK`); the kind follows the errno.
    pub fn os(op: impl Into<String>, err: io::Error) -> Error {
        let kind = match err.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => ErrorKind::PermissionDenied,
            Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => ErrorKind::NotFound,
            Some(libc::EEXIST) => ErrorKind::AlreadyExists,
            Some(libc::EBUSY) => ErrorKind::Busy,
            Some(libc::EBADFD) => ErrorKind::Gone,
            Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY) => ErrorKind::Unsupported,
            _ => ErrorKind::Os,
        };
        Error {
            kind,
            subject: None,
            op: op.into(),
            detail: None,
            source: Some(err),
        }
    }

    /// The "device was closed" error for operation `op`.
    pub(crate) fn closed(op: impl Into<String>) -> Error {
        Error::new(
            ErrorKind::Closed,
            op,
            "device is closed (destroyed by this process)",
        )
    }

    /// Sets the device or namespace this error is about.
    pub(crate) fn on(mut self, subject: impl Into<String>) -> Error {
        self.subject = Some(subject.into());
        self
    }

    /// Sets the subject only if none is set yet.
    pub(crate) fn on_default(self, subject: &str) -> Error {
        if self.subject.is_some() {
            self
        } else {
            self.on(subject)
        }
    }

    /// Adds `more` to the detail (after "; "), keeping the kind and the OS cause's text:
    /// for a caller that knows what the operation was for, or what would overcome it.
    pub fn add_detail(self, more: &str) -> Error {
        self.and_then_detail(more)
    }

    /// The human-readable cause: the message without its subject and operation.
    pub fn detail(&self) -> String {
        let now = self.to_string();
        let prefix_len = self.subject.as_ref().map_or(0, |s| s.len() + 2) + self.op.len() + 2;
        now.get(prefix_len..).unwrap_or("").to_string()
    }

    /// For a refusal for lack of privilege (EPERM/EACCES): says which capability the
    /// operation needs and why, so the message names what is missing.
    pub(crate) fn needs(self, capability: &str, why: &str) -> Error {
        if self.kind == ErrorKind::PermissionDenied {
            self.and_then_detail(&format!("needs {capability}: {why}"))
        } else {
            self
        }
    }

    /// Adds `more` to the detail (after "; "), keeping the OS cause's text.
    pub(crate) fn and_then_detail(mut self, more: &str) -> Error {
        let current = self.detail();
        self.detail = Some(format!("{current}; {more}"));
        self
    }

    /// Replaces the human-readable detail, keeping kind and OS cause.
    pub(crate) fn with_detail(mut self, detail: impl Into<String>) -> Error {
        self.detail = Some(detail.into());
        self
    }

    /// An error of `kind` for operation `op` with a human-readable detail: for programs built
    /// on this crate that want their own failures in the same shape.
    pub fn from_kind(kind: ErrorKind, op: impl Into<String>, detail: impl Into<String>) -> Error {
        Error::new(kind, op, detail)
    }

    /// The same error about `subject` (a device or namespace name).
    pub fn with_subject(self, subject: impl Into<String>) -> Error {
        self.on(subject)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The device or namespace the error is about, if any.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// The operation that failed (an ioctl name, a netlink message type, `open`, ...).
    pub fn operation(&self) -> &str {
        &self.op
    }

    /// The errno behind the error, if it came from the kernel.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.source.as_ref().and_then(io::Error::raw_os_error)
    }
}

/// The symbolic name of an errno (`"EBUSY"`), for messages an operator can search for and
/// for bindings that report errnos by name (the Erlang one's `ebusy`); `None` for one not
/// listed (the errnos TUN/TAP, netlink, sockets and namespaces give).
pub fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::EBADFD => "EBADFD",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EPROTO => "EPROTO",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ENOBUFS => "ENOBUFS",
        libc::ESHUTDOWN => "ESHUTDOWN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        _ => return None,
    })
}

/// The errno a symbolic name of [`errno_name`] stands for (`"EBUSY"` -> `EBUSY`): how an
/// error that crossed a process boundary as text (the helper's reply) gets its cause back.
pub(crate) fn errno_from_name(name: &str) -> Option<i32> {
    (1..=libc::EHWPOISON).find(|&e| errno_name(e) == Some(name))
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(subject) = &self.subject {
            write!(f, "{subject}: ")?;
        }
        write!(f, "{}: ", self.op)?;
        match (&self.detail, &self.source) {
            (Some(detail), _) => f.write_str(detail)?,
            (None, Some(err)) => {
                // io::Error prints "Message (os error N)"; print "Message (ENAME)" instead.
                match err.raw_os_error() {
                    Some(errno) => {
                        let msg = io::Error::from_raw_os_error(errno).to_string();
                        let msg = msg.split(" (os error").next().unwrap_or(&msg);
                        match errno_name(errno) {
                            Some(name) => write!(f, "{msg} ({name})")?,
                            None => write!(f, "{msg} (errno {errno})")?,
                        }
                    }
                    None => write!(f, "{err}")?,
                }
            }
            (None, None) => f.write_str("failed")?,
        }
        Ok(())
    }
}

/// Shows the readable message (as `io::Error` and `anyhow` do), so that
/// `fn main() -> Result<(), tunctl::Error>` prints something an operator can act on.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An I/O error from the caller's own code (e.g. reading a packet file) joins this error
/// type, so that `?` works in functions returning [`Result`].
impl From<io::Error> for Error {
    fn from(err: io::Error) -> Error {
        Error::os("I/O", err)
    }
}

/// `"10.0.0.2".parse()?` in a function returning [`Result`]: an
/// [`ErrorKind::InvalidInput`] error.
impl From<std::net::AddrParseError> for Error {
    fn from(err: std::net::AddrParseError) -> Error {
        Error::new(ErrorKind::InvalidInput, "invalid address", err.to_string())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        let kind = match err.kind {
            ErrorKind::InvalidInput | ErrorKind::FlagMismatch | ErrorKind::Active => {
                io::ErrorKind::InvalidInput
            }
            ErrorKind::NotFound | ErrorKind::Gone => io::ErrorKind::NotFound,
            ErrorKind::AlreadyExists => io::ErrorKind::AlreadyExists,
            ErrorKind::Busy => io::ErrorKind::ResourceBusy,
            ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
            ErrorKind::Closed => io::ErrorKind::NotConnected,
            ErrorKind::Truncated => io::ErrorKind::InvalidData,
            ErrorKind::Unsupported => io::ErrorKind::Unsupported,
            ErrorKind::Other => io::ErrorKind::Other,
            ErrorKind::Os => match err.raw_os_error() {
                Some(errno) => {
                    return io::Error::new(io::Error::from_raw_os_error(errno).kind(), err)
                }
                None => io::ErrorKind::Other,
            },
        };
        io::Error::new(kind, err)
    }
}
