//! Unprivileged use through `tunctl-helper`, a small privileged program that creates and
//! configures devices on behalf of users a policy names, and hands over the device's fd.
//!
//! The client ([`create`], [`run`]) spawns the helper on a Unix socket pair (the helper's
//! standard input), sends one [`Request`], and receives one [`Reply`] with, for a creation,
//! two fds over SCM_RIGHTS: the tun queue and an rtnetlink socket opened in the device's
//! namespace (so the device can be inspected there without entering it). The helper is found
//! through `TUNCTL_HELPER`, else next to the running program, else in
//! `/usr/local/libexec/tunctl/` or `/usr/libexec/tunctl/`.
//!
//! The wire format is lines of ASCII, `key value`, at most [`MAX_REQUEST`] bytes, starting
//! with `tunctl-helper 1` and ending with `end`; [`Request::parse`] is strict (unknown or
//! repeated keys, bad values, truncation are errors) and fuzzed.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::addr::Cidr;
use crate::device::Device;
use crate::error::{Error, ErrorKind, Result};
use crate::flags::Kind;
use crate::name;
use crate::netns::Namespace;
use crate::sys;

pub use crate::sys::Truncation;

/// The largest request or reply, in bytes.
pub const MAX_REQUEST: usize = 4096;
/// The first line of every request.
pub const PROTOCOL: &str = "tunctl-helper 1";
/// At most this many addresses in one request.
pub const MAX_ADDRESSES: usize = 16;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Create a device (never attach to an existing one), owned by the caller.
    Create,
    /// Change a device the helper created for the caller.
    Set,
    /// Delete a device the helper created for the caller.
    Delete,
}

/// Where the device lives: the caller's own namespace, or a named one (`/run/netns/NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Netns {
    /// The caller's namespace (which the helper, its child, shares).
    Own,
    /// `/run/netns/NAME`.
    Named(String),
}

impl TryFrom<&Namespace> for Netns {
    type Error = Error;

    /// The namespace as a request names it: the caller's own, or one under `/run/netns`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unsupported`] for a namespace given by path: the helper, another
    /// program, takes named namespaces only.
    fn try_from(ns: &Namespace) -> Result<Netns> {
        match ns {
            Namespace::Current => Ok(Netns::Own),
            Namespace::Named(n) => Ok(Netns::Named(n.clone())),
            Namespace::Path(p) => Err(Error::new(
                ErrorKind::Unsupported,
                "tunctl-helper",
                format!(
                    "the helper takes named namespaces only, not {}",
                    p.display()
                ),
            )),
        }
    }
}

/// One request to the helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub op: Op,
    /// Device name, or a template such as `tun%d` for [`Op::Create`].
    pub name: String,
    /// tun or tap (create only).
    pub kind: Kind,
    /// Keep the packet-information header.
    pub pi: bool,
    /// `IFF_VNET_HDR`.
    pub vnet_hdr: bool,
    /// `IFF_MULTI_QUEUE`.
    pub multi_queue: bool,
    /// Keep the device after the caller's fd closes.
    pub persist: bool,
    /// The namespace.
    pub netns: Netns,
    /// Addresses to add.
    pub addrs: Vec<Cidr>,
    /// Addresses to remove (set only).
    pub del_addrs: Vec<Cidr>,
    /// Point-to-point peer.
    pub peer: Option<IpAddr>,
    /// MTU.
    pub mtu: Option<u32>,
    /// Bring the device up.
    pub up: bool,
    /// Bring the device down (set only).
    pub down: bool,
}

impl Request {
    /// A request of `op` for `name`, everything else at its default (tun, no flags, the
    /// caller's namespace, no configuration).
    pub fn new(op: Op, name: &str) -> Request {
        Request {
            op,
            name: name.to_string(),
            kind: Kind::Tun,
            pi: false,
            vnet_hdr: false,
            multi_queue: false,
            persist: false,
            netns: Netns::Own,
            addrs: Vec::new(),
            del_addrs: Vec::new(),
            peer: None,
            mtu: None,
            up: false,
            down: false,
        }
    }

    /// The request on the wire.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        let b = |v: bool| u8::from(v);
        let _ = writeln!(s, "{PROTOCOL}");
        let op = match self.op {
            Op::Create => "create",
            Op::Set => "set",
            Op::Delete => "delete",
        };
        let _ = writeln!(s, "op {op}\nname {}\nkind {}", self.name, self.kind);
        let _ = writeln!(
            s,
            "pi {}\nvnet_hdr {}\nmulti_queue {}\npersist {}",
            b(self.pi),
            b(self.vnet_hdr),
            b(self.multi_queue),
            b(self.persist)
        );
        match &self.netns {
            Netns::Own => s.push_str("netns own\n"),
            Netns::Named(n) => {
                let _ = writeln!(s, "netns {n}");
            }
        }
        for a in &self.addrs {
            let _ = writeln!(s, "addr {a}");
        }
        for a in &self.del_addrs {
            let _ = writeln!(s, "del_addr {a}");
        }
        if let Some(p) = self.peer {
            let _ = writeln!(s, "peer {p}");
        }
        if let Some(m) = self.mtu {
            let _ = writeln!(s, "mtu {m}");
        }
        let _ = writeln!(s, "up {}\ndown {}\nend", b(self.up), b(self.down));
        s
    }

    /// Parses a request.
    ///
    /// # Errors
    ///
    /// Every deviation is an [`ErrorKind::InvalidInput`] error naming it: oversized, not
    /// ASCII, missing header or `end`, unknown or repeated key, bad value, invalid interface
    /// or namespace name, too many addresses.
    pub fn parse(bytes: &[u8]) -> Result<Request> {
        let bad = |why: String| Error::new(ErrorKind::InvalidInput, "helper request", why);
        if bytes.len() > MAX_REQUEST {
            return Err(bad(format!(
                "{} bytes, more than {MAX_REQUEST}",
                bytes.len()
            )));
        }
        let text = std::str::from_utf8(bytes)
            .ok()
            .filter(|t| t.is_ascii())
            .ok_or_else(|| bad("not ASCII text".into()))?;
        let mut lines = text.lines();
        if lines.next() != Some(PROTOCOL) {
            return Err(bad(format!("does not start with {PROTOCOL:?}")));
        }
        let mut req = Request::new(Op::Create, "");
        let mut seen: Vec<&str> = Vec::new();
        let mut ended = false;
        for line in lines {
            if ended {
                return Err(bad("text after end".into()));
            }
            if line == "end" {
                ended = true;
                continue;
            }
            let (key, value) = line
                .split_once(' ')
                .ok_or_else(|| bad(format!("line {line:?} is not \"key value\"")))?;
            if key != "addr" && key != "del_addr" {
                if seen.contains(&key) {
                    return Err(bad(format!("{key} given twice")));
                }
                seen.push(key);
            }
            let flag = || match value {
                "0" => Ok(false),
                "1" => Ok(true),
                _ => Err(bad(format!("{key} must be 0 or 1, not {value:?}"))),
            };
            match key {
                "op" => {
                    req.op = match value {
                        "create" => Op::Create,
                        "set" => Op::Set,
                        "delete" => Op::Delete,
                        _ => return Err(bad(format!("unknown op {value:?}"))),
                    }
                }
                "name" => req.name = value.to_string(),
                "kind" => {
                    req.kind = match value {
                        "tun" => Kind::Tun,
                        "tap" => Kind::Tap,
                        _ => return Err(bad(format!("kind must be tun or tap, not {value:?}"))),
                    }
                }
                "pi" => req.pi = flag()?,
                "vnet_hdr" => req.vnet_hdr = flag()?,
                "multi_queue" => req.multi_queue = flag()?,
                "persist" => req.persist = flag()?,
                "up" => req.up = flag()?,
                "down" => req.down = flag()?,
                "netns" => {
                    req.netns = if value == "own" {
                        Netns::Own
                    } else {
                        Namespace::named(value).map_err(|e| bad(e.to_string()))?;
                        Netns::Named(value.to_string())
                    }
                }
                "addr" | "del_addr" => {
                    let cidr: Cidr = value.parse().map_err(|e: Error| bad(e.to_string()))?;
                    let list = if key == "addr" {
                        &mut req.addrs
                    } else {
                        &mut req.del_addrs
                    };
                    if list.len() == MAX_ADDRESSES {
                        return Err(bad(format!("more than {MAX_ADDRESSES} addresses")));
                    }
                    list.push(cidr);
                }
                "peer" => {
                    req.peer = Some(crate::addr::parse_ip(value).map_err(|e| bad(e.to_string()))?)
                }
                "mtu" => {
                    req.mtu = Some(crate::addr::parse_decimal(value).ok_or_else(|| {
                        bad(format!("mtu {value:?} is not a plain decimal number"))
                    })?)
                }
                _ => return Err(bad(format!("unknown key {key:?}"))),
            }
        }
        if !ended {
            return Err(bad("truncated: no end line".into()));
        }
        if !seen.contains(&"op") || !seen.contains(&"name") {
            return Err(bad("op and name are required".into()));
        }
        if req.up && req.down {
            return Err(bad("up and down together".into()));
        }
        name::validate(&req.name, req.op == Op::Create).map_err(|e| bad(e.to_string()))?;
        // Names reach logs and administrators' terminals: letters, digits, `.`, `_`, `-` (and
        // the template's `%d`) only.
        if let Some(c) = req
            .name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '%')))
        {
            return Err(bad(format!(
                "name {:?} contains {c:?}; use letters, digits, '.', '_', '-'",
                req.name
            )));
        }
        if let Netns::Named(n) = &req.netns {
            if let Some(c) = n
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            {
                return Err(bad(format!(
                    "namespace {n:?} contains {c:?}; use letters, digits, '.', '_', '-'"
                )));
            }
        }
        Ok(req)
    }
}

/// The helper's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Done; for a creation, the kernel's name and the interface index.
    Ok {
        /// The device name.
        name: String,
        /// The interface index (0 when not a creation).
        index: u32,
    },
    /// The policy refused; the reason.
    Denied(String),
    /// The helper has no usable policy (missing, unreadable or untrusted), or cannot work
    /// here (e.g. `/dev/net/tun` closed to the caller): nothing is allowed; the reason.
    Unconfigured(String),
    /// The kernel refused, or the request could not be read; the reason.
    Error(String),
}

impl Reply {
    /// The reply to a refusal the helper met carrying out a request: the error's text,
    /// led by its errno's name when it has one (`error errno=EBUSY tun0: TUNSETIFF: ...`),
    /// which [`create`] and [`run`] turn back into the error's kind and errno.
    pub fn from_error(e: &Error) -> Reply {
        match e.raw_os_error().and_then(crate::error::errno_name) {
            Some(name) => Reply::Error(format!("errno={name} {e}")),
            None => Reply::Error(e.to_string()),
        }
    }

    /// The reply on the wire.
    pub fn encode(&self) -> String {
        match self {
            Reply::Ok { name, index } => format!("ok {name} {index}\n"),
            Reply::Denied(why) => format!("denied {why}\n"),
            Reply::Unconfigured(why) => format!("unconfigured {why}\n"),
            Reply::Error(why) => format!("error {why}\n"),
        }
    }

    /// Parses a reply.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Other`] for a malformed reply: not UTF-8, an unknown first word, or `ok`
    /// without a name and a decimal index.
    pub fn parse(bytes: &[u8]) -> Result<Reply> {
        let bad = || {
            Error::new(
                ErrorKind::Other,
                "helper reply",
                "malformed reply from tunctl-helper",
            )
        };
        let text = std::str::from_utf8(bytes).map_err(|_| bad())?.trim_end();
        let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
        match word {
            "ok" => {
                let mut parts = rest.split(' ');
                let name = parts
                    .next()
                    .filter(|n| !n.is_empty())
                    .ok_or_else(bad)?
                    .to_string();
                let index = parts.next().and_then(|i| i.parse().ok()).ok_or_else(bad)?;
                Ok(Reply::Ok { name, index })
            }
            "denied" => Ok(Reply::Denied(rest.to_string())),
            "unconfigured" => Ok(Reply::Unconfigured(rest.to_string())),
            "error" => Ok(Reply::Error(rest.to_string())),
            _ => Err(bad()),
        }
    }
}

/// The places searched for the helper after `TUNCTL_HELPER` and the program's own directory.
pub const INSTALL_PATHS: [&str; 2] = [
    "/usr/local/libexec/tunctl/tunctl-helper",
    "/usr/libexec/tunctl/tunctl-helper",
];

/// Where the helper is: `TUNCTL_HELPER`, else `tunctl-helper` next to the running program,
/// else one of [`INSTALL_PATHS`]; the first that exists and is trusted.
///
/// A helper is trusted only when the file (symbolic links resolved) and every directory
/// above it are owned by root or by the user running this program, and writable by no one
/// else: whoever can replace a privileged program can run code as every user who starts it.
/// `TUNCTL_HELPER` naming an untrusted file is an error, not a reason to look elsewhere.
///
/// A program that itself runs setuid, setgid or with file capabilities ignores
/// `TUNCTL_HELPER` and its own directory: its caller must not choose what it runs.
///
/// # Errors
///
/// Why no helper can be used: none installed, or the one found is not trusted (and why).
pub fn find() -> std::result::Result<PathBuf, String> {
    let secure = sys::secure_mode();
    if let Some(path) = std::env::var_os("TUNCTL_HELPER").filter(|_| !secure) {
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err(format!(
                "TUNCTL_HELPER must be an absolute path, not {}",
                path.display()
            ));
        }
        return trusted(&path);
    }
    let beside = std::env::current_exe()
        .ok()
        .filter(|_| !secure)
        .and_then(|exe| exe.parent().map(|d| d.join("tunctl-helper")));
    let mut refused = None;
    for path in beside.into_iter().chain(INSTALL_PATHS.map(PathBuf::from)) {
        if !path.exists() {
            continue;
        }
        match trusted(&path) {
            Ok(real) => return Ok(real),
            Err(why) => {
                refused.get_or_insert(why);
            }
        }
    }
    Err(refused.unwrap_or_else(|| "tunctl-helper is not installed".to_string()))
}

/// The file `path` resolves to, if it may be run as a privileged program; see [`find`]. The
/// caller runs the resolved path, the one checked, never the name it started from.
fn trusted(path: &std::path::Path) -> std::result::Result<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let real = std::fs::canonicalize(path)
        .map_err(|e| format!("tunctl-helper {}: {e}", path.display()))?;
    let me = sys::real_uid();
    let meta =
        std::fs::metadata(&real).map_err(|e| format!("tunctl-helper {}: {e}", real.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "tunctl-helper {} is not a regular file",
            real.display()
        ));
    }
    let mut at = Some(real.as_path());
    while let Some(p) = at {
        let m = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if m.uid() != 0 && m.uid() != me {
            return Err(format!(
                "refusing tunctl-helper {}: {} belongs to uid {}, not to root or you",
                real.display(),
                p.display(),
                m.uid()
            ));
        }
        if m.mode() & 0o022 != 0 {
            return Err(format!(
                "refusing tunctl-helper {}: {} is writable by {} (mode {:o})",
                real.display(),
                p.display(),
                if m.mode() & 0o002 != 0 {
                    "everyone"
                } else {
                    "its group"
                },
                m.mode() & 0o7777
            ));
        }
        at = p.parent();
    }
    Ok(real)
}

/// The ways to get the privilege a device operation lacks, in one line, with why the
/// helper could not be used (`why`) when that is more than its absence.
pub fn privilege_hint(why: &str) -> String {
    let helper = if why == "tunctl-helper is not installed" {
        String::new()
    } else {
        format!(" ({why})")
    };
    format!(
        "needs CAP_NET_ADMIN: run as root, give the program the capability (setcap cap_net_admin,cap_sys_admin+ep), or install tunctl-helper with a policy in {POLICY_PATH}{helper}; README.md, \"Unprivileged use\", explains each"
    )
}

/// Where the helper's policy lives.
pub const POLICY_PATH: &str = "/etc/tunctl/helper.toml";

static SHOW_LOG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the helper's log lines (its decision, also sent to the system log) are shown on
/// this program's standard error. Off by default; `tunctl --verbose` turns it on.
pub fn show_log(on: bool) {
    SHOW_LOG.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Sends one message of the wire format on a `SOCK_SEQPACKET` socket with `fds` attached
/// (SCM_RIGHTS): how the client sends a request and the helper its reply.
///
/// # Errors
///
/// The OS error of `sendmsg(2)`.
pub fn send_message(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<usize> {
    sys::send_with_fds(sock, data, fds)
}

/// Receives one message into `buf` with up to `max_fds` attached fds (owned,
/// close-on-exec): the length, what did not fit, and the fds. More fds than `max_fds` are
/// closed by the kernel and reported as [`Truncation::control`].
///
/// # Errors
///
/// The OS error of `recvmsg(2)` (`EAGAIN` after a receive timeout).
pub fn recv_message(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
) -> std::io::Result<(usize, Truncation, Vec<OwnedFd>)> {
    sys::recv_with_fds(sock, buf, max_fds)
}

/// Sends `request` to a freshly spawned helper and returns its reply and fds.
///
/// # Errors
///
/// As [`exchange`].
pub fn call(request: &Request) -> Result<(Reply, Vec<OwnedFd>)> {
    exchange(request.encode().as_bytes())
}

/// Sends raw bytes as the request (for tests and tools that probe the helper) and returns
/// its reply and fds.
///
/// # Errors
///
/// [`ErrorKind::NotFound`] if no trusted helper is installed ([`find`]); the OS error if it
/// cannot be started or talked to; [`ErrorKind::Other`] if it exits without answering or
/// answers something malformed. A refusal is a [`Reply`], not an error.
pub fn exchange(request: &[u8]) -> Result<(Reply, Vec<OwnedFd>)> {
    let helper = find().map_err(|why| Error::new(ErrorKind::NotFound, "tunctl-helper", why))?;
    let (ours, theirs) = sys::seqpacket_pair().map_err(|e| Error::os("socketpair", e))?;
    let log = if SHOW_LOG.load(std::sync::atomic::Ordering::Relaxed) {
        Stdio::inherit()
    } else {
        Stdio::null()
    };
    let mut child = Command::new(&helper)
        .stdin(Stdio::from(theirs))
        .stdout(Stdio::null())
        .stderr(log)
        .env_clear()
        .spawn()
        .map_err(|e| Error::os(format!("run {}", helper.display()), e))?;
    let sent = sys::send_with_fds(ours.as_fd(), request, &[]);
    let mut buf = vec![0u8; MAX_REQUEST];
    let received = sent.and_then(|_| sys::recv_with_fds(ours.as_fd(), &mut buf, 2));
    let _ = child.wait();
    let (n, _, fds) = received.map_err(|e| Error::os("tunctl-helper", e))?;
    if n == 0 {
        return Err(Error::new(
            ErrorKind::Other,
            "tunctl-helper",
            "the helper exited without answering (not installed with its capabilities?)",
        ));
    }
    Ok((Reply::parse(&buf[..n])?, fds))
}

fn refused(request: &Request, reply: Reply) -> Error {
    let (kind, why) = match reply {
        Reply::Denied(why) => (
            ErrorKind::PermissionDenied,
            format!("denied by policy: {why}"),
        ),
        Reply::Unconfigured(why) => (ErrorKind::PermissionDenied, privilege_hint(&why)),
        Reply::Error(why) => return kernel_refusal(why).on(&request.name),
        Reply::Ok { .. } => (ErrorKind::Other, "unexpected reply".to_string()),
    };
    Error::new(kind, "tunctl-helper", why).on(&request.name)
}

/// The helper's error text as an error of the kind its cause calls for: led by
/// `errno=NAME` when the kernel refused ([`Reply::from_error`]), which gives the kind
/// (`Busy` for EBUSY) and [`Error::raw_os_error`]; [`ErrorKind::Other`] without.
fn kernel_refusal(why: String) -> Error {
    let coded = why.strip_prefix("errno=").and_then(|rest| {
        let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
        Some((crate::error::errno_from_name(name)?, text.to_string()))
    });
    match coded {
        Some((errno, text)) => {
            Error::os("tunctl-helper", std::io::Error::from_raw_os_error(errno)).with_detail(text)
        }
        None => Error::new(ErrorKind::Other, "tunctl-helper", why),
    }
}

/// Creates a device through the helper: the [`Device`] behaves like one created directly
/// (reads, writes, ioctls on the fd; inspection over the namespace's netlink socket).
///
/// # Errors
///
/// [`ErrorKind::InvalidInput`] for a request that is not [`Op::Create`]; as [`exchange`];
/// [`ErrorKind::PermissionDenied`] if the policy denies it or the helper is unconfigured;
/// the kernel's refusal as the helper reports it, with its kind and errno
/// ([`ErrorKind::Busy`] for a name in use, [`ErrorKind::AlreadyExists`], ...;
/// [`ErrorKind::Other`] for a failure without an errno); [`ErrorKind::Other`] for a reply
/// without the two fds; as [`Device::from_parts`] for the fds received.
pub fn create(request: &Request) -> Result<Device> {
    if request.op != Op::Create {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "tunctl-helper",
            "create needs a create request",
        ));
    }
    let (reply, mut fds) = call(request)?;
    let Reply::Ok { name, index } = reply else {
        return Err(refused(request, reply));
    };
    if fds.len() != 2 {
        return Err(Error::new(
            ErrorKind::Other,
            "tunctl-helper",
            "the helper sent no device fd",
        )
        .on(&name));
    }
    let netlink = fds.pop();
    let tun = fds.pop();
    let ns = match &request.netns {
        Netns::Own => Namespace::Current,
        Netns::Named(n) => Namespace::Named(n.clone()),
    };
    match (tun, netlink) {
        (Some(tun), Some(netlink)) => {
            Device::from_parts(tun, netlink, name, index, ns).map(Device::made_by_helper)
        }
        _ => Err(Error::new(
            ErrorKind::Other,
            "tunctl-helper",
            "the helper sent no device fd",
        )),
    }
}

/// Runs a set or delete request through the helper.
///
/// # Errors
///
/// As [`exchange`]; [`ErrorKind::PermissionDenied`] if the policy denies it or the helper
/// is unconfigured; the kernel's refusal with its kind and errno, as for [`create`].
pub fn run(request: &Request) -> Result<()> {
    match call(request)?.0 {
        Reply::Ok { .. } => Ok(()),
        other => Err(refused(request, other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut r = Request::new(Op::Create, "lab%d");
        r.kind = Kind::Tap;
        r.netns = Netns::Named("lab1".into());
        r.addrs = vec![
            "10.88.0.1/24".parse().unwrap(),
            "fd00:88::1/64".parse().unwrap(),
        ];
        r.peer = Some("10.88.0.2".parse().unwrap());
        r.mtu = Some(1400);
        r.up = true;
        r.persist = true;
        assert_eq!(Request::parse(r.encode().as_bytes()).unwrap(), r);
        for reply in [
            Reply::Ok {
                name: "lab0".into(),
                index: 7,
            },
            Reply::Denied("no".into()),
            Reply::Unconfigured("no policy".into()),
            Reply::Error("x y".into()),
        ] {
            assert_eq!(Reply::parse(reply.encode().as_bytes()).unwrap(), reply);
        }
    }

    #[test]
    fn kernel_refusals_keep_their_kind_and_malformed_replies_are_other() {
        let os = |op: &str, errno: i32| Error::os(op, std::io::Error::from_raw_os_error(errno));
        let busy = refused(
            &Request::new(Op::Create, "tun0"),
            Reply::from_error(&os("TUNSETIFF", libc::EBUSY).on("tun0")),
        );
        assert_eq!(
            (busy.kind(), busy.raw_os_error()),
            (ErrorKind::Busy, Some(libc::EBUSY))
        );
        assert!(busy.to_string().contains("TUNSETIFF"), "{busy}");
        // A detail replaces the errno's name in the text: the kind survives all the same.
        let exists = refused(
            &Request::new(Op::Create, "tun0"),
            Reply::from_error(
                &os("RTM_NEWADDR", libc::EEXIST).with_detail("10.0.0.1/24 is already assigned"),
            ),
        );
        assert_eq!(exists.kind(), ErrorKind::AlreadyExists);
        assert!(exists.to_string().contains("already assigned"), "{exists}");
        // Text that merely ends like an errno (a name the caller chose) is no errno.
        for text in [
            "the kernel chose tun7, which no allowed pattern matches",
            "no device x(EPERM)",
        ] {
            let plain = refused(&Request::new(Op::Create, "tun0"), Reply::Error(text.into()));
            assert_eq!(
                (plain.kind(), plain.raw_os_error()),
                (ErrorKind::Other, None),
                "{text}"
            );
        }
        for bad in [&b"ok"[..], b"ok tun0 x", b"hello", b"\xff"] {
            assert_eq!(Reply::parse(bad).unwrap_err().kind(), ErrorKind::Other);
        }
    }

    #[test]
    fn malformed_requests_are_refused() {
        let good = Request::new(Op::Create, "tun%d").encode();
        let cases: Vec<(&str, String)> = vec![
            ("empty", String::new()),
            ("no header", good.replacen(PROTOCOL, "tunctl-helper 2", 1)),
            ("truncated", good.replace("end\n", "")),
            ("after end", format!("{good}op create\n")),
            ("unknown key", good.replace("end\n", "owner 0\nend\n")),
            ("repeated", good.replace("end\n", "mtu 1\nmtu 2\nend\n")),
            ("bad flag", good.replace("pi 0", "pi yes")),
            ("bad kind", good.replace("kind tun", "kind tan")),
            (
                "traversal",
                good.replace("netns own", "netns ../../proc/1/ns/net"),
            ),
            ("path", good.replace("netns own", "netns /proc/1/ns/net")),
            (
                "long name",
                good.replace("name tun%d", "name abcdefghijklmnop"),
            ),
            ("slash name", good.replace("name tun%d", "name a/b")),
            ("bad addr", good.replace("end\n", "addr 10.0.0.1/33\nend\n")),
            ("signed mtu", good.replace("end\n", "mtu +1400\nend\n")),
            ("zero-led mtu", good.replace("end\n", "mtu 01400\nend\n")),
            (
                "zero-led prefix",
                good.replace("end\n", "addr 10.0.0.1/024\nend\n"),
            ),
            ("up and down", good.replace("up 0\ndown 0", "up 1\ndown 1")),
            ("no colon", good.replace("end\n", "garbage\nend\n")),
            ("oversized", format!("{good}{}", "x".repeat(MAX_REQUEST))),
            ("binary", format!("{good}\u{e9}")),
            (
                "too many",
                good.replace(
                    "end\n",
                    &format!("{}end\n", "addr 10.0.0.1/32\n".repeat(MAX_ADDRESSES + 1)),
                ),
            ),
        ];
        for (what, text) in cases {
            assert_eq!(
                Request::parse(text.as_bytes()).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{what}"
            );
        }
        assert!(Request::parse(good.as_bytes()).is_ok());
    }
}
