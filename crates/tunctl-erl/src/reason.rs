//! The library's errors as the POSIX atoms (`eperm`, `ebusy`, `einval`, ...) that the Erlang
//! original returned in `{error, Reason}` and that Erlang programs match on.

use rustler::{Atom, Encoder, Env, Term};
use tunctl::{Error, ErrorKind};

/// The lower-case name of `errno` (`"ebusy"`), or `None` for one not listed here.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "eperm",
        libc::ENOENT => "enoent",
        libc::ESRCH => "esrch",
        libc::EINTR => "eintr",
        libc::EIO => "eio",
        libc::ENXIO => "enxio",
        libc::E2BIG => "e2big",
        libc::EBADF => "ebadf",
        libc::EAGAIN => "eagain",
        libc::ENOMEM => "enomem",
        libc::EACCES => "eacces",
        libc::EFAULT => "efault",
        libc::EBUSY => "ebusy",
        libc::EEXIST => "eexist",
        libc::ENODEV => "enodev",
        libc::ENOTDIR => "enotdir",
        libc::EINVAL => "einval",
        libc::ENFILE => "enfile",
        libc::EMFILE => "emfile",
        libc::ENOTTY => "enotty",
        libc::ENOSPC => "enospc",
        libc::ERANGE => "erange",
        libc::ENAMETOOLONG => "enametoolong",
        libc::ENOSYS => "enosys",
        libc::EBADFD => "ebadfd",
        libc::EMSGSIZE => "emsgsize",
        libc::EPROTONOSUPPORT => "eprotonosupport",
        libc::EOPNOTSUPP => "eopnotsupp",
        libc::EAFNOSUPPORT => "eafnosupport",
        libc::EADDRINUSE => "eaddrinuse",
        libc::EADDRNOTAVAIL => "eaddrnotavail",
        libc::ENETDOWN => "enetdown",
        libc::ENETUNREACH => "enetunreach",
        libc::ENOBUFS => "enobufs",
        libc::ETIMEDOUT => "etimedout",
        _ => return None,
    })
}

/// The atom for `err`: its errno's name when it came from the kernel, else one that says the
/// same of its kind (`einval` for bad input, `ebadf` for a closed device, `ebadfd` for one
/// deleted from outside, ...).
pub fn name(err: &Error) -> &'static str {
    if let Some(name) = err.raw_os_error().and_then(errno_name) {
        return name;
    }
    match err.kind() {
        ErrorKind::InvalidInput | ErrorKind::FlagMismatch | ErrorKind::Active => "einval",
        ErrorKind::NotFound => "enoent",
        ErrorKind::AlreadyExists => "eexist",
        ErrorKind::Busy => "ebusy",
        ErrorKind::PermissionDenied => "eperm",
        ErrorKind::Closed => "ebadf",
        ErrorKind::Gone => "ebadfd",
        ErrorKind::Truncated => "emsgsize",
        ErrorKind::Unsupported => "eopnotsupp",
        _ => "eio",
    }
}

/// `{error, Reason}` for `err`.
pub fn error<'a>(env: Env<'a>, err: &Error) -> Term<'a> {
    (crate::atoms::error(), atom_of(env, name(err))).encode(env)
}

/// `{error, Reason}` for an atom name.
pub fn error_atom<'a>(env: Env<'a>, reason: &str) -> Term<'a> {
    (crate::atoms::error(), atom_of(env, reason)).encode(env)
}

/// The atom `name` (names come from the fixed tables above, never from a user).
pub fn atom_of<'a>(env: Env<'a>, name: &str) -> Term<'a> {
    Atom::from_str(env, name)
        .map(|a| a.encode(env))
        .unwrap_or_else(|_| crate::atoms::error().encode(env))
}
