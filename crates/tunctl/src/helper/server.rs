//! The privileged side (feature `helper-server`, used by the `tunctl-helper` binary): read
//! one request from standard input, decide with the policy in [`POLICY_PATH`], act, answer,
//! log one line. See the crate README for the policy format.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use super::{Netns, Op, Reply, Request, MAX_REQUEST};
use crate::addr::Cidr;
use crate::config::LinkConfig;
use crate::device::Device;
use crate::flags::Kind;
use crate::netlink::{Link, Netlink};
use crate::netns::Namespace;
use crate::sys;

pub use super::POLICY_PATH;

/// Who asks: the helper's real ids (the caller's, since the caller spawned it).
#[derive(Debug, Clone)]
pub struct Caller {
    /// Real uid.
    pub uid: u32,
    /// User name, if the user database knows it.
    pub name: Option<String>,
    /// Real gid and supplementary groups.
    pub groups: Vec<u32>,
}

impl Caller {
    fn describe(&self) -> String {
        format!("uid={}({})", self.uid, self.name.as_deref().unwrap_or("?"))
    }
}

/// One `[[allow]]` table.
#[derive(Debug, Clone, Default)]
struct Rule {
    users: Vec<String>,
    groups: Vec<String>,
    names: Vec<String>,
    kinds: Vec<Kind>,
    namespaces: Vec<String>,
    addresses: Vec<Cidr>,
    mtu: (u32, u32),
    flags: Vec<String>,
    max_devices: Option<usize>,
}

/// The parsed policy: a list of rules; a request is allowed if one rule allows all of it.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// `*` and `?` globs.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The alias that marks a device the helper created for `uid` (changing an alias needs
/// CAP_NET_ADMIN, so a device's holder cannot forge or remove it).
fn tag(uid: u32) -> String {
    format!("tunctl-helper uid={uid}")
}

impl Policy {
    /// Reads and checks the policy file: a regular file (not a link), owned by root and not
    /// writable by group or others, in a directory with the same properties, at most 64 KiB.
    pub fn load(path: &Path) -> Result<Policy, String> {
        use std::os::unix::fs::MetadataExt;
        let trusted = |p: &Path, what: &str| -> Result<std::fs::Metadata, String> {
            let m =
                std::fs::symlink_metadata(p).map_err(|e| format!("{what} {}: {e}", p.display()))?;
            if m.file_type().is_symlink() {
                return Err(format!("{what} {} is a symbolic link", p.display()));
            }
            if m.uid() != 0 || m.mode() & 0o022 != 0 {
                return Err(format!(
                    "{what} {} must be owned by root and writable only by root",
                    p.display()
                ));
            }
            Ok(m)
        };
        if let Some(dir) = path.parent() {
            trusted(dir, "policy directory")?;
        }
        let meta = trusted(path, "policy")?;
        if !meta.is_file() || meta.len() > 64 * 1024 {
            return Err(format!(
                "policy {} is not a regular file of at most 64 KiB",
                path.display()
            ));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("policy {}: {e}", path.display()))?;
        Policy::parse(&text)
    }

    /// Parses the TOML text of a policy (strict: unknown keys are errors).
    pub fn parse(text: &str) -> Result<Policy, String> {
        let table: toml::Table = text
            .parse()
            .map_err(|e| format!("policy is not valid TOML: {e}"))?;
        let mut policy = Policy::default();
        for (key, value) in &table {
            if key != "allow" {
                return Err(format!("unknown policy key {key:?}"));
            }
            let rules = value
                .as_array()
                .ok_or("allow must be an array of tables ([[allow]])")?;
            for (n, rule) in rules.iter().enumerate() {
                let rule = rule
                    .as_table()
                    .ok_or("allow must be an array of tables ([[allow]])")?;
                policy
                    .rules
                    .push(Rule::parse(rule).map_err(|e| format!("rule {}: {e}", n + 1))?);
            }
        }
        Ok(policy)
    }

    /// Decides a request: the index of the allowing rule, or the reason for denial.
    /// `owned` counts the caller's devices in a namespace (for `max_devices`); `routes` are
    /// the networks the request makes the kernel route to the device
    /// ([`LinkConfig::routed_networks`](crate::LinkConfig::routed_networks): each address's
    /// network and each peer's, paired exactly as the configuration will pair it).
    pub fn decide(
        &self,
        caller: &Caller,
        req: &Request,
        owned: &dyn Fn(&Netns) -> Result<usize, String>,
        routes: &[Cidr],
    ) -> Result<usize, String> {
        let mine: Vec<(usize, &Rule)> = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.names_caller(caller))
            .collect();
        if mine.is_empty() {
            return Err(format!("no rule allows {}", caller.describe()));
        }
        let mut first_reason = None;
        for (i, rule) in mine {
            match rule.allows(req, owned, routes) {
                Ok(()) => return Ok(i),
                Err(why) => {
                    first_reason.get_or_insert(why);
                }
            }
        }
        Err(first_reason.unwrap_or_default())
    }

    /// Whether `name` (a kernel-chosen name after a template) matches the allowing rule.
    pub fn name_allowed(&self, rule: usize, name: &str) -> bool {
        self.rules
            .get(rule)
            .is_some_and(|r| r.names.iter().any(|p| glob(p, name)))
    }
}

impl Rule {
    fn parse(t: &toml::Table) -> Result<Rule, String> {
        let strings = |key: &str| -> Result<Vec<String>, String> {
            match t.get(key) {
                None => Ok(Vec::new()),
                Some(v) => v
                    .as_array()
                    .ok_or(format!("{key} must be a list of strings"))?
                    .iter()
                    .map(|s| {
                        s.as_str()
                            .map(str::to_string)
                            .ok_or(format!("{key} must be a list of strings"))
                    })
                    .collect(),
            }
        };
        for key in t.keys() {
            if ![
                "users",
                "groups",
                "names",
                "kinds",
                "namespaces",
                "addresses",
                "mtu",
                "flags",
                "max_devices",
            ]
            .contains(&key.as_str())
            {
                return Err(format!("unknown key {key:?}"));
            }
        }
        let kinds = strings("kinds")?
            .iter()
            .map(|k| match k.as_str() {
                "tun" => Ok(Kind::Tun),
                "tap" => Ok(Kind::Tap),
                _ => Err(format!("kind {k:?} is neither tun nor tap")),
            })
            .collect::<Result<_, _>>()?;
        let addresses = strings("addresses")?
            .iter()
            .map(|a| a.parse::<Cidr>().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        let mtu = match t.get("mtu") {
            None => (68, 65535),
            Some(v) => {
                let pair = v
                    .as_array()
                    .filter(|a| a.len() == 2)
                    .ok_or("mtu must be [min, max]")?;
                let n = |i: usize| {
                    pair[i]
                        .as_integer()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or("mtu must be [min, max]")
                };
                (n(0)?, n(1)?)
            }
        };
        let flags = strings("flags")?;
        if let Some(f) = flags
            .iter()
            .find(|f| !["pi", "vnet_hdr", "multi_queue", "persist"].contains(&f.as_str()))
        {
            return Err(format!("unknown flag {f:?}"));
        }
        let max_devices = match t.get("max_devices") {
            None => None,
            Some(v) => Some(
                v.as_integer()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or("max_devices must be a number")?,
            ),
        };
        Ok(Rule {
            users: strings("users")?,
            groups: strings("groups")?,
            names: strings("names")?,
            kinds,
            namespaces: strings("namespaces")?,
            addresses,
            mtu,
            flags,
            max_devices,
        })
    }

    /// Whether every network lies inside one of the rule's address ranges.
    fn within_ranges<'a>(&self, nets: impl IntoIterator<Item = &'a Cidr>) -> Result<(), String> {
        for c in nets {
            if !self.addresses.iter().any(|net| net.contains(c)) {
                return Err(format!("{c} is outside the allowed ranges"));
            }
        }
        Ok(())
    }

    fn names_caller(&self, caller: &Caller) -> bool {
        let user = self
            .users
            .iter()
            .any(|u| Some(u.as_str()) == caller.name.as_deref() || *u == caller.uid.to_string());
        let group = self.groups.iter().any(|g| {
            let gid = g
                .parse::<u32>()
                .ok()
                .or_else(|| sys::group_id(g).ok().flatten());
            gid.is_some_and(|gid| caller.groups.contains(&gid))
        });
        user || group
    }

    fn allows(
        &self,
        req: &Request,
        owned: &dyn Fn(&Netns) -> Result<usize, String>,
        routes: &[Cidr],
    ) -> Result<(), String> {
        if !self.names.iter().any(|p| glob(p, &req.name)) {
            return Err(format!("name {:?} matches no allowed pattern", req.name));
        }
        let ns_ok = match &req.netns {
            Netns::Own => self.namespaces.iter().any(|n| n == "own"),
            Netns::Named(name) => self.namespaces.iter().any(|p| p != "own" && glob(p, name)),
        };
        if !ns_ok {
            return Err(format!(
                "namespace {:?} is not allowed",
                ns_label(&req.netns)
            ));
        }
        if req.op == Op::Create {
            if !self.kinds.contains(&req.kind) {
                return Err(format!("kind {} is not allowed", req.kind));
            }
            for (flag, on) in [
                ("pi", req.pi),
                ("vnet_hdr", req.vnet_hdr),
                ("multi_queue", req.multi_queue),
                ("persist", req.persist),
            ] {
                if on && !self.flags.iter().any(|f| f == flag) {
                    return Err(format!("flag {flag} is not allowed"));
                }
            }
            if let Some(max) = self.max_devices {
                let have = owned(&req.netns)?;
                if have >= max {
                    return Err(format!("{have} devices already, the limit is {max}"));
                }
            }
        }
        // Every network the kernel will route to the device must lie in an allowed range:
        // 10.88.0.1/5 would route 8.0.0.0/5 to it, and a peer routes its own network (with
        // the prefix of the address it pairs with). Removed addresses must be the caller's.
        self.within_ranges(routes.iter().chain(&req.del_addrs))?;
        if let Some(mtu) = req.mtu {
            if mtu < self.mtu.0 || mtu > self.mtu.1 {
                return Err(format!(
                    "MTU {mtu} is outside {} to {}",
                    self.mtu.0, self.mtu.1
                ));
            }
        }
        Ok(())
    }
}

fn ns_label(ns: &Netns) -> &str {
    match ns {
        Netns::Own => "own",
        Netns::Named(n) => n,
    }
}

/// The namespace a request names, with the fd that keeps it reachable.
fn open_ns(ns: &Netns) -> Result<(Namespace, Option<OwnedFd>), String> {
    match ns {
        Netns::Own => Ok((Namespace::Current, None)),
        Netns::Named(name) => {
            let path = Path::new(crate::netns::NETNS_RUN_DIR).join(name);
            let fd = sys::open_netns_file(&path).map_err(|e| format!("namespace {name}: {e}"))?;
            Ok((
                Namespace::path(format!("/proc/self/fd/{}", fd.as_raw_fd())),
                Some(fd),
            ))
        }
    }
}

/// The link configuration a request asks for.
fn link_config(req: &Request) -> LinkConfig {
    LinkConfig {
        mtu: req.mtu,
        del_addrs: req.del_addrs.clone(),
        addrs: req.addrs.clone(),
        peer: req.peer,
        up: if req.up {
            Some(true)
        } else if req.down {
            Some(false)
        } else {
            None
        },
        ..LinkConfig::default()
    }
}

/// The devices in a namespace that the helper created for `uid`.
fn count_tagged(netlink: &Netlink, uid: u32) -> Result<usize, String> {
    let want = tag(uid);
    netlink
        .tun_links()
        .map(|links| {
            links
                .iter()
                .filter(|l| l.alias.as_deref() == Some(want.as_str()))
                .count()
        })
        .map_err(|e| e.to_string())
}

/// For set and delete: the device, if the helper created it for the caller.
fn tagged_link(caller: &Caller, ns: &Namespace, req: &Request) -> Result<Link, Reply> {
    let link = Link::by_name(ns, &req.name).map_err(|e| Reply::Error(e.to_string()))?;
    match link.info() {
        Ok(info)
            if info.tun.is_some() && info.alias.as_deref() == Some(tag(caller.uid).as_str()) =>
        {
            Ok(link)
        }
        Ok(_) => Err(Reply::Denied(format!(
            "{} was not created for {}",
            req.name,
            caller.describe()
        ))),
        Err(e) => Err(Reply::Error(e.to_string())),
    }
}

/// Carries out an allowed request.
fn execute(caller: &Caller, policy: &Policy, rule: usize, req: &Request) -> (Reply, Vec<OwnedFd>) {
    let err = |e: String| (Reply::Error(e), Vec::new());
    let (ns, _keep) = match open_ns(&req.netns) {
        Ok(v) => v,
        Err(e) => return err(e),
    };
    if req.op != Op::Create {
        let link = match tagged_link(caller, &ns, req) {
            Ok(l) => l,
            Err(reply) => return (reply, Vec::new()),
        };
        let done = if req.op == Op::Delete {
            link.delete()
        } else {
            // The pairing is decided again on the device as it is now (another request of
            // the same user may have changed its addresses since the decision), and checked
            // again: what the kernel is told is what the policy saw.
            let config = link_config(req);
            let recheck = link
                .addresses()
                .and_then(|now| config.routed_networks(&now))
                .map_err(|e| e.to_string())
                .and_then(|routes| match policy.rules.get(rule) {
                    Some(r) => r.within_ranges(&routes),
                    None => Err("no such rule".into()),
                });
            if let Err(why) = recheck {
                return (Reply::Denied(why), Vec::new());
            }
            config.plan(&link).and_then(|plan| plan.apply(&link, None))
        };
        return match done {
            Ok(()) => (
                Reply::Ok {
                    name: req.name.clone(),
                    index: link.index(),
                },
                Vec::new(),
            ),
            Err(e) => err(e.to_string()),
        };
    }
    // Born in a private namespace with its owner, tag and persist flag, then moved into the
    // target: nobody can see it untagged or attach to it there (see Builder::owner).
    let mut b = Device::builder()
        .name(&req.name)
        .kind(req.kind)
        .packet_info(req.pi)
        .vnet_hdr(req.vnet_hdr)
        .exclusive(true)
        .namespace(ns)
        .owner(caller.uid)
        .alias(tag(caller.uid))
        .persist(req.persist);
    if req.multi_queue {
        b = b.multi_queue(1);
    }
    let dev = match b.create() {
        Ok(d) => d,
        Err(e) => return err(e.to_string()),
    };
    let setup = (|| -> Result<(OwnedFd, OwnedFd), String> {
        if !policy.name_allowed(rule, dev.name()) {
            return Err(format!(
                "the kernel chose {}, which no allowed pattern matches",
                dev.name()
            ));
        }
        let link = dev.link().map_err(|e| e.to_string())?;
        // Helpers running side by side may each have seen room for one more: count again.
        if let Some(max) = policy.rules.get(rule).and_then(|r| r.max_devices) {
            let mine = count_tagged(link.netlink(), caller.uid)?;
            if mine > max {
                return Err(format!("{mine} devices with this one, the limit is {max}"));
            }
        }
        link_config(req)
            .plan(link)
            .and_then(|plan| plan.apply(link, None))
            .map_err(|e| e.to_string())?;
        let tun = dev.queues()[0]
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| e.to_string())?;
        let nl = link.netlink().socket_fd().map_err(|e| e.to_string())?;
        Ok((tun, nl))
    })();
    match setup {
        Ok((tun, nl)) => (
            Reply::Ok {
                name: dev.name().to_string(),
                index: dev.index(),
            },
            vec![tun, nl],
        ),
        Err(e) => {
            let _ = dev.destroy();
            err(e)
        }
    }
}

/// Where every decision goes: the system log (AUTHPRIV, which the caller cannot redirect)
/// and standard error (which the caller controls, so a full or closed one is ignored).
struct Log {
    who: String,
    syslog: Option<std::os::unix::net::UnixDatagram>,
}

/// Syslog severities.
const LOG_ERR: u8 = 3;
const LOG_WARNING: u8 = 4;
const LOG_INFO: u8 = 6;
/// The AUTHPRIV facility (security messages, kept from ordinary users).
const LOG_AUTHPRIV: u8 = 10 << 3;

impl Log {
    fn new(who: String) -> Log {
        // Non-blocking: a logger that does not keep up loses lines; it never stalls us.
        let syslog = std::os::unix::net::UnixDatagram::unbound()
            .ok()
            .filter(|s| s.connect(SYSLOG_PATH).is_ok() && s.set_nonblocking(true).is_ok());
        Log { who, syslog }
    }

    /// One line; attacker-chosen text is escaped here, once.
    fn line(&self, severity: u8, text: &str) {
        use std::io::Write;
        let text: String = text.escape_debug().collect();
        if let Some(sock) = &self.syslog {
            let msg = format!(
                "<{}>tunctl-helper[{}]: {} {text}",
                LOG_AUTHPRIV | severity,
                std::process::id(),
                self.who
            );
            let _ = sock.send(msg.as_bytes());
        }
        let _ = writeln!(std::io::stderr(), "tunctl-helper: {} {text}", self.who);
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
    let inherited = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter(|fd| *fd > 2)
                .count()
        })
        .unwrap_or(1)
        .saturating_sub(1); // the directory's own fd
    sys::close_from(3);
    let (uid, euid, gid, mut groups) = sys::ids();
    groups.push(gid);
    let caller = Caller {
        uid,
        name: sys::user_name(uid),
        groups,
    };
    let log = Log::new(caller.describe());
    if inherited > 0 {
        log.line(
            LOG_INFO,
            &format!("closed {inherited} file descriptor(s) left open by the caller"),
        );
    }
    let sock = sys::take_stdin();
    if !sys::is_seqpacket(sock.as_fd()) {
        log.line(
            LOG_ERR,
            "standard input is not a request socket; this program is run by the tunctl library",
        );
        return 2;
    }
    let answer = |reply: Reply, fds: &[OwnedFd]| {
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        let _ = sys::send_with_fds(sock.as_fd(), reply.encode().as_bytes(), &borrowed);
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
    let _ = sys::set_recv_timeout(sock.as_fd(), 5);
    match sys::peer_credentials(sock.as_fd()) {
        Ok((peer_uid, _, _)) if peer_uid == uid => {}
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
    let request = match sys::recv_with_fds(sock.as_fd(), &mut buf, 4) {
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
    log.line(LOG_INFO, &format!("{what}: allowed by rule {}", rule + 1));
    let (reply, fds) = execute(&caller, &policy, rule, &req);
    match &reply {
        Reply::Ok { name, .. } => log.line(LOG_INFO, &format!("{what}: done -> {name}")),
        Reply::Denied(why) | Reply::Unconfigured(why) => {
            log.line(LOG_WARNING, &format!("{what}: denied: {why}"))
        }
        Reply::Error(why) => log.line(LOG_ERR, &format!("{what}: failed: {why}")),
    }
    answer(reply.clone(), &fds);
    i32::from(!matches!(reply, Reply::Ok { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(name: &str, uid: u32) -> Caller {
        Caller {
            uid,
            name: Some(name.into()),
            groups: vec![100],
        }
    }

    const POLICY: &str = r#"
        [[allow]]
        users = ["alice"]
        groups = ["100"]
        names = ["tun*", "lab*"]
        kinds = ["tun"]
        namespaces = ["own", "lab*"]
        addresses = ["10.88.0.0/16", "fd00:88::/32"]
        mtu = [1280, 9000]
        flags = ["persist"]
        max_devices = 2
    "#;

    #[test]
    fn globs_and_ranges() {
        assert!(
            glob("tun*", "tun%d") && glob("tun*", "tun0") && glob("l?b*", "lab1") && glob("*", "")
        );
        assert!(!glob("tun*", "tap0") && !glob("lab", "lab1"));
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        let net = c("10.88.0.0/16");
        assert!(net.contains(&c("10.88.200.1/32")) && net.contains(&c("10.88.0.0/16")));
        assert!(!net.contains(&c("10.89.0.1/32")) && !net.contains(&c("10.88.0.1/15")));
        assert!(!net.contains(&c("fd00:88::1/128")));
        let v6 = c("fd00:88::/32");
        assert!(v6.contains(&c("fd00:88:1::1/64")));
        assert!(!v6.contains(&c("fd00:89::1/128")) && !v6.contains(&c("fd00:88::/31")));
        assert!(c("0.0.0.0/0").contains(&c("10.0.0.1/8")));
    }

    /// What the server passes as `routes` for a new device.
    fn routes(r: &Request) -> Vec<Cidr> {
        link_config(r).routed_networks(&[]).unwrap_or_default()
    }

    #[test]
    fn decisions() {
        let p = Policy::parse(POLICY).unwrap();
        let none = |_: &Netns| Ok(0);
        let mut req = Request::new(Op::Create, "tun%d");
        req.addrs = vec!["10.88.0.1/24".parse().unwrap()];
        assert_eq!(
            p.decide(&caller("alice", 1001), &req, &none, &routes(&req)),
            Ok(0)
        );
        assert_eq!(
            p.decide(&caller("bob", 1002), &req, &none, &routes(&req)),
            Ok(0),
            "by group 100"
        );
        let stranger = Caller {
            uid: 1003,
            name: Some("carol".into()),
            groups: vec![],
        };
        assert!(p
            .decide(&stranger, &req, &none, &routes(&req))
            .unwrap_err()
            .contains("no rule"));
        let deny = |r: &Request| {
            p.decide(&caller("alice", 1001), r, &none, &routes(r))
                .unwrap_err()
        };
        let with = |f: &dyn Fn(&mut Request)| {
            let mut r = req.clone();
            f(&mut r);
            r
        };
        assert!(deny(&with(&|r| r.name = "eth%d".into())).contains("name"));
        assert!(deny(&with(&|r| r.kind = Kind::Tap)).contains("kind"));
        assert!(deny(&with(&|r| r.netns = Netns::Named("prod".into()))).contains("namespace"));
        assert!(
            deny(&with(&|r| r.addrs = vec!["192.0.2.1/24".parse().unwrap()])).contains("outside")
        );
        assert!(deny(&with(&|r| r.peer = Some("10.99.0.1".parse().unwrap()))).contains("outside"));
        let lone_peer = with(&|r| {
            r.peer = Some("10.88.0.2".parse().unwrap());
            r.addrs.clear();
        });
        assert!(link_config(&lone_peer)
            .routed_networks(&[])
            .unwrap_err()
            .to_string()
            .contains("no IPv4 address to pair"));
        assert!(deny(&with(&|r| r.mtu = Some(576))).contains("MTU"));
        assert!(deny(&with(&|r| r.vnet_hdr = true)).contains("vnet_hdr"));
        assert!(p
            .decide(&caller("alice", 1001), &req, &|_| Ok(2), &routes(&req))
            .unwrap_err()
            .contains("limit is 2"));
        assert!(p
            .decide(
                &caller("alice", 1001),
                &with(&|r| r.persist = true),
                &none,
                &routes(&req)
            )
            .is_ok());
        // A prefix shorter than the allowed range's would route outside it to the device.
        for hijack in [
            "10.88.0.1/5",
            "10.88.0.1/15",
            "10.88.0.1/0",
            "fd00:88::1/8",
            "fd00:88::1/31",
        ] {
            assert!(
                deny(&with(&|r| r.addrs = vec![hijack.parse().unwrap()])).contains("outside"),
                "{hijack}"
            );
        }
        for fine in [
            "10.88.0.1/16",
            "10.88.7.1/32",
            "fd00:88::1/64",
            "fd00:88::1/32",
        ] {
            let r = with(&|r| r.addrs = vec![fine.parse().unwrap()]);
            assert!(
                p.decide(&caller("alice", 1001), &r, &none, &routes(&r))
                    .is_ok(),
                "{fine}"
            );
        }
    }

    /// The reported attack: with ranges of different sizes, a peer must be checked with the
    /// prefix of the address it will really pair with (IPv4 and IPv6).
    #[test]
    fn a_peer_is_checked_with_the_prefix_it_gets() {
        let p = Policy::parse(
            r#"
            [[allow]]
            users = ["alice"]
            names = ["tun*"]
            kinds = ["tun"]
            namespaces = ["own"]
            addresses = ["10.88.0.0/16", "10.99.0.0/24", "fd00:88::/32", "fd00:99::/64"]
        "#,
        )
        .unwrap();
        let none = |_: &Netns| Ok(0);
        let alice = caller("alice", 1001);
        let have = |cidr: &str| vec![crate::netlink::Address::new(cidr.parse().unwrap())];
        let decide = |r: &Request, current: &[crate::netlink::Address]| {
            let routes = link_config(r)
                .routed_networks(current)
                .map_err(|e| e.to_string())?;
            p.decide(&alice, r, &none, &routes)
        };
        // The peer pairs with the /32 in the request: 10.99.0.1/32 is inside 10.99.0.0/24.
        let mut r = Request::new(Op::Set, "tun0");
        r.addrs = vec!["10.88.5.5/32".parse().unwrap()];
        r.peer = Some("10.99.0.1".parse().unwrap());
        assert_eq!(decide(&r, &have("10.88.0.1/16")), Ok(0));
        // Alone, it pairs with the device's /16: 10.99.0.0/16 is outside.
        r.addrs.clear();
        assert!(decide(&r, &have("10.88.0.1/16"))
            .unwrap_err()
            .contains("10.99.0.1/16 is outside"));
        // Two candidates are never guessed between.
        let mut two = have("10.88.0.1/16");
        two.extend(have("10.88.1.1/24"));
        assert!(decide(&r, &two).unwrap_err().contains("several IPv4"));
        // IPv6: the peer takes the /32 of fd00:88::1, outside fd00:99::/64.
        r.peer = Some("fd00:99::1".parse().unwrap());
        assert!(decide(&r, &have("fd00:88::1/32"))
            .unwrap_err()
            .contains("fd00:99::1/32 is outside"));
        r.addrs = vec!["fd00:88::5/64".parse().unwrap()];
        assert_eq!(decide(&r, &have("fd00:88::1/32")), Ok(0));
    }

    #[test]
    fn bad_policies_are_errors() {
        for bad in [
            "[[allow]]\nusers = \"alice\"",
            "[[allow]]\nfoo = 1",
            "deny = 1",
            "[[allow]]\nkinds = [\"tan\"]",
            "[[allow]]\nmtu = [1]",
            "not toml [",
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
        assert!(Policy::load(Path::new("/nonexistent/helper.toml")).is_err());
    }
}
