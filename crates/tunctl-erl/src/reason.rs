//! The library's errors as the POSIX atoms (`eperm`, `ebusy`, `einval`, ...) that the Erlang
//! original returned in `{error, Reason}` and that Erlang programs match on.

use std::borrow::Cow;

use rustler::{Atom, Encoder, Env, Term};
use tunctl::{Error, ErrorKind};

/// The atom for `err`: its errno's name when it came from the kernel, else one that says the
/// same of its kind (`einval` for bad input, `ebadf` for a closed device, `ebadfd` for one
/// deleted from outside, ...).
pub fn name(err: &Error) -> Cow<'static, str> {
    // The library's errno names, as the original's lower-case atoms.
    if let Some(name) = err.raw_os_error().and_then(tunctl::errno_name) {
        return Cow::Owned(name.to_ascii_lowercase());
    }
    Cow::Borrowed(match err.kind() {
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
    })
}

/// `{error, Reason}` for `err`.
pub fn error<'a>(env: Env<'a>, err: &Error) -> Term<'a> {
    (crate::atoms::error(), atom_of(env, &name(err))).encode(env)
}

/// `{error, Reason}` for an atom name.
pub fn error_atom<'a>(env: Env<'a>, reason: &str) -> Term<'a> {
    (crate::atoms::error(), atom_of(env, reason)).encode(env)
}

/// The atom `name` (names come from the library's errno table and the kinds above, never
/// from a user).
pub fn atom_of<'a>(env: Env<'a>, name: &str) -> Term<'a> {
    Atom::from_str(env, name)
        .map(|a| a.encode(env))
        .unwrap_or_else(|_| crate::atoms::error().encode(env))
}
