//! The helper's life as a process: sanitize, identify the caller, read one request, decide,
//! act, answer, log (syslog AUTHPRIV and standard error).

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use tunctl::helper::{Netns, Op, Reply, Request, MAX_REQUEST, POLICY_PATH};
use tunctl::{Cidr, Link, Netlink};

use crate::execute::{count_tagged, execute, link_config, open_ns};
use crate::policy::{ns_label, Caller, Policy};
use crate::sys;

/// Where every decision goes: the system log (AUTHPRIV, which the caller cannot redirect)
/// or, without one, a file only root can read and write ([`LOG_FILE`]); and standard error
/// (which the caller controls, so a full or closed one is ignored).
struct Log {
    who: String,
    syslog: Option<std::os::unix::net::UnixDatagram>,
    file: Option<std::fs::File>,
}

/// Syslog severities.
const LOG_ERR: u8 = 3;
const LOG_WARNING: u8 = 4;
const LOG_INFO: u8 = 6;
/// The AUTHPRIV facility (security messages, kept from ordinary users).
const LOG_AUTHPRIV: u8 = 10 << 3;

/// The record kept where there is no system log: root's alone (mode 0600). A helper
/// installed with file capabilities runs as its caller and cannot write it: it then
/// carries out nothing without a system log; a setuid-root helper opens it before it
/// becomes the caller.
pub const LOG_FILE: &str = "/var/log/tunctl-helper.log";

/// [`LOG_FILE`], opened for appending (created 0600, never through a link), if it is a
/// regular file of root's that nobody else may read or write.
fn open_log_file() -> Option<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(LOG_FILE)
        .ok()?;
    let meta = file.metadata().ok()?;
    // Root's alone, and no second name (a hard link to another root file, where
    // protected_hardlinks is off, would have us append to that file).
    (meta.is_file() && meta.uid() == 0 && meta.mode() & 0o077 == 0 && meta.nlink() == 1)
        .then_some(file)
}

/// Now, as `YYYY-MM-DDTHH:MM:SSZ`.
fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = ((secs / 86400) as i64, secs % 86400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

impl Log {
    fn new(who: String) -> Log {
        // A logger that does not keep up holds us at most a second per line; a decision that
        // cannot be logged is not carried out (see `decision`).
        let syslog = std::os::unix::net::UnixDatagram::unbound()
            .ok()
            .filter(|s| {
                s.connect(SYSLOG_PATH).is_ok()
                    && s.set_write_timeout(Some(std::time::Duration::from_secs(1)))
                        .is_ok()
            });
        let file = if syslog.is_none() {
            open_log_file()
        } else {
            None
        };
        Log { who, syslog, file }
    }

    /// One line; attacker-chosen text is escaped here, once. Returns whether the record was
    /// kept (by the system log, or else the root-only file).
    fn line(&self, severity: u8, text: &str) -> bool {
        use std::io::Write;
        let text: String = text.escape_debug().collect();
        let logged = match (&self.syslog, &self.file) {
            (Some(sock), _) => {
                let msg = format!(
                    "<{}>tunctl-helper[{}]: {} {text}",
                    LOG_AUTHPRIV | severity,
                    std::process::id(),
                    self.who
                );
                sock.send(msg.as_bytes()).is_ok()
            }
            (None, Some(file)) => {
                // One write of the whole line (O_APPEND): records never interleave.
                let line = format!(
                    "{} tunctl-helper[{}]: {} {text}\n",
                    timestamp(),
                    std::process::id(),
                    self.who
                );
                (&*file)
                    .write(line.as_bytes())
                    .is_ok_and(|n| n == line.len())
            }
            (None, None) => false,
        };
        let _ = writeln!(std::io::stderr(), "tunctl-helper: {} {text}", self.who);
        logged
    }
}

/// The system log's socket.
pub const SYSLOG_PATH: &str = "/dev/log";

/// What a request asks for, in one line for the log.
fn describe(req: &Request) -> String {
    let list = |v: &[Cidr]| {
        v.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut s = format!(
        "{:?} name={} kind={} netns={}",
        req.op,
        req.name,
        req.kind,
        ns_label(&req.netns)
    );
    for (key, on) in [
        ("pi", req.pi),
        ("vnet_hdr", req.vnet_hdr),
        ("multi_queue", req.multi_queue),
        ("persist", req.persist),
        ("up", req.up),
        ("down", req.down),
    ] {
        if on {
            s.push(' ');
            s.push_str(key);
        }
    }
    if !req.addrs.is_empty() {
        s.push_str(&format!(" addrs={}", list(&req.addrs)));
    }
    if !req.del_addrs.is_empty() {
        s.push_str(&format!(" del_addrs={}", list(&req.del_addrs)));
    }
    if let Some(p) = req.peer {
        s.push_str(&format!(" peer={p}"));
    }
    if let Some(m) = req.mtu {
        s.push_str(&format!(" mtu={m}"));
    }
    s
}

/// Why `/dev/net/tun` cannot serve the caller, if it cannot: the helper runs as the caller
/// (with CAP_NET_ADMIN, not with the right to open any file).
fn tun_node_problem() -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(_) => None,
        Err(e) => {
            let mode = std::fs::metadata("/dev/net/tun")
                .map(|m| format!("mode {:04o}", m.permissions().mode() & 0o7777))
                .unwrap_or_else(|_| "missing".into());
            Some(format!(
                "/dev/net/tun ({mode}) cannot be opened by you ({e}); the helper opens it as you, so it needs read and write for you: chmod 0666 /dev/net/tun, its usual mode (creating a device still needs CAP_NET_ADMIN, which the helper has)"
            ))
        }
    }
}

/// The helper's whole life: sanitize, identify the caller, read one request, decide, act,
/// answer, log. Returns the process exit status.
pub fn serve() -> i32 {
    // Nothing from the caller's environment is read (RUST_MIN_STACK, RUST_BACKTRACE, ...):
    // clear it before anything could consult it. No other thread runs yet.
    for (key, _) in std::env::vars_os() {
        std::env::remove_var(key);
    }
    // A caller's RLIMIT_FSIZE must not kill us through a stderr file (EPIPE is already
    // ignored: Rust ignores SIGPIPE).
    sys::ignore_sigxfsz();
    sys::ensure_std_fds();
    // Nothing the caller left open survives (fd 0 is the request socket; 1 and 2 stay).
    let inherited = sys::close_inherited();
    let (uid, euid, gid, mut groups) = sys::ids();
    groups.push(gid);
    let caller = Caller {
        uid,
        name: tunctl::user_name(uid),
        groups,
    };
    let log = Log::new(caller.describe());
    if inherited > 0 {
        log.line(
            LOG_INFO,
            &format!("closed {inherited} file descriptor(s) left open by the caller"),
        );
    }
    let sock = sys::request_socket();
    if !sys::is_seqpacket(sock) {
        log.line(
            LOG_ERR,
            "standard input is not a request socket; this program is run by the tunctl library",
        );
        return 2;
    }
    let answer = |reply: Reply, fds: &[OwnedFd]| {
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        let _ = tunctl::helper::send_message(sock, reply.encode().as_bytes(), &borrowed);
    };
    let deny = |what: &str, reply: Reply| {
        let verdict = match &reply {
            Reply::Unconfigured(why) => format!("denied: {why}"),
            Reply::Denied(why) => format!("denied: {why}"),
            Reply::Error(why) => format!("failed: {why}"),
            Reply::Ok { .. } => "done".to_string(),
        };
        log.line(LOG_WARNING, &format!("{what}: {verdict}"));
        answer(reply, &[]);
        1
    };
    // In a user namespace the caller controls, ids, the policy file and /run/netns could all
    // be the caller's: run only in the initial one.
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    if uid_map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"] {
        return deny(
            "request",
            Reply::Denied("tunctl-helper runs only in the initial user namespace".into()),
        );
    }
    let _ = sys::set_recv_timeout(sock, std::time::Duration::from_secs(5));
    match sys::peer_uid(sock) {
        Ok(peer_uid) if peer_uid == uid => {}
        _ => {
            return deny(
                "request",
                Reply::Denied("the socket's peer is not the user who ran the helper".into()),
            )
        }
    }
    if euid == 0 && uid != 0 {
        if let Err(e) = sys::drop_to_net_admin(uid, gid) {
            return deny(
                "request",
                Reply::Error(format!("cannot drop privileges: {e}")),
            );
        }
    }
    let mut buf = vec![0u8; MAX_REQUEST + 1];
    // Room for a few fds, so that a request carrying some is seen for what it is (they are
    // closed unread).
    let request = match tunctl::helper::recv_message(sock, &mut buf, 4) {
        Ok((_, _, fds)) if !fds.is_empty() => Err(format!(
            "the request carries {} file descriptor(s); requests carry none",
            fds.len()
        )),
        Ok((_, trunc, _)) if trunc.control => {
            Err("the request carries file descriptors; requests carry none".to_string())
        }
        Ok((n, trunc, _)) if !trunc.data && n <= MAX_REQUEST => {
            Request::parse(&buf[..n]).map_err(|e| e.to_string())
        }
        Ok(_) => Err(format!("request larger than {MAX_REQUEST} bytes")),
        Err(e) => Err(format!("cannot read the request: {e}")),
    };
    let req = match request {
        Ok(r) => r,
        Err(why) => return deny("request", Reply::Denied(why)),
    };
    let what = describe(&req);
    let policy = match Policy::load(Path::new(POLICY_PATH)) {
        Ok(p) => p,
        Err(why) => return deny(&what, Reply::Unconfigured(why)),
    };
    if req.op == Op::Create {
        if let Some(why) = tun_node_problem() {
            return deny(&what, Reply::Unconfigured(why));
        }
    }
    let owned = |ns: &Netns| -> Result<usize, String> {
        let (ns, _keep) = open_ns(ns)?;
        count_tagged(&Netlink::open_in(&ns).map_err(|e| e.to_string())?, uid)
    };
    // The networks the kernel will route to the device, paired exactly as the configuration
    // will pair them: against the device's current addresses for a change.
    let current = match req.op {
        Op::Set => open_ns(&req.netns)
            .and_then(|(ns, _keep)| {
                Link::by_name(&ns, &req.name)
                    .and_then(|l| l.addresses())
                    .map_err(|e| e.to_string())
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let routes = match link_config(&req).routed_networks(&current) {
        Ok(r) => r,
        Err(e) => return deny(&what, Reply::Denied(e.to_string())),
    };
    let rule = match policy.decide(&caller, &req, &owned, &routes) {
        Ok(rule) => rule,
        Err(why) => return deny(&what, Reply::Denied(why)),
    };
    // The decision is logged before anything is done.
    if !log.line(LOG_INFO, &format!("{what}: allowed by rule {}", rule + 1)) {
        // An allowed action must leave its record: a flooded system log, or none at all
        // and no root-only file to write, stops the helper.
        let why = if log.syslog.is_some() {
            "the system log does not take the decision's record; nothing done".to_string()
        } else {
            format!(
                "no system log ({SYSLOG_PATH}) and {LOG_FILE} cannot be written by the helper, so the decision cannot be recorded; nothing done (run a system logger, or install the helper setuid root)"
            )
        };
        answer(Reply::Error(why), &[]);
        return 1;
    }
    let (reply, fds) = execute(&caller, &policy, rule, &req);
    let _ = match &reply {
        Reply::Ok { name, .. } => log.line(LOG_INFO, &format!("{what}: done -> {name}")),
        Reply::Denied(why) | Reply::Unconfigured(why) => {
            log.line(LOG_WARNING, &format!("{what}: denied: {why}"))
        }
        Reply::Error(why) => log.line(LOG_ERR, &format!("{what}: failed: {why}")),
    };
    answer(reply.clone(), &fds);
    i32::from(!matches!(reply, Reply::Ok { .. }))
}
