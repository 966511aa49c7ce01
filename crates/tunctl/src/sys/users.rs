//! Users, groups and privilege: the system's user and group databases (libc's NSS), the
//! caller's ids, capabilities and secure mode.

use std::ffi::CString;
use std::io;

// rustix has no getpwnam_r/getgrnam_r (the user and group databases are libc's NSS).
/// Calls a `get*nam_r` function, growing the buffer on ERANGE (large LDAP groups).
fn lookup_r(
    name: &str,
    mut call: impl FnMut(&std::ffi::CStr, &mut [u8]) -> (libc::c_int, Option<u32>),
) -> io::Result<Option<u32>> {
    let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut size = 16 * 1024;
    loop {
        let mut buf = vec![0u8; size];
        match call(&c, &mut buf) {
            (0, id) => return Ok(id),
            (libc::ERANGE, _) if size < 64 << 20 => size *= 4,
            (rc, _) => return Err(io::Error::from_raw_os_error(rc)),
        }
    }
}

/// The uid of a user name, from the system's user database (`getpwnam_r`).
pub fn user_id(name: &str) -> io::Result<Option<u32>> {
    lookup_r(name, |c, buf| {
        // SAFETY: zeroed passwd is a valid out-parameter.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the stated sizes.
        let rc = unsafe {
            libc::getpwnam_r(
                c.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        (rc, (!result.is_null()).then_some(pwd.pw_uid))
    })
}

/// The name of a uid, from the system's user database (`getpwuid_r`).
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: a zeroed passwd is a valid out-parameter.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the stated size; the strings land in `buf`.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// The name of a gid, from the system's group database (`getgrgid_r`).
pub fn group_name(gid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: a zeroed group is a valid out-parameter.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the stated size; the strings land in `buf`.
    let rc = unsafe {
        libc::getgrgid_r(
            gid,
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: gr_name points into `buf`, NUL-terminated by getgrgid_r.
    let name = unsafe { std::ffi::CStr::from_ptr(grp.gr_name) };
    Some(name.to_string_lossy().into_owned())
}

/// The gid of a group name, from the system's group database (`getgrnam_r`).
pub fn group_id(name: &str) -> io::Result<Option<u32>> {
    lookup_r(name, |c, buf| {
        // SAFETY: zeroed group is a valid out-parameter.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the stated sizes.
        let rc = unsafe {
            libc::getgrnam_r(
                c.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        (rc, (!result.is_null()).then_some(grp.gr_gid))
    })
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The real uid: the user who ran this process.
pub fn real_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Whether this thread has `cap` (a `CAP_*` number) in its effective set (capget).
pub fn has_capability(cap: u32) -> bool {
    cap < 64
        && rustix::thread::capabilities(None)
            .is_ok_and(|sets| sets.effective.bits() & (1u64 << cap) != 0)
}

/// Whether this process runs in "secure" mode (setuid, setgid or file capabilities:
/// `getauxval(AT_SECURE)`), where the environment must not choose what it runs.
pub fn secure_mode() -> bool {
    // rustix has no public AT_SECURE.
    // SAFETY: getauxval only reads the auxiliary vector.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}
