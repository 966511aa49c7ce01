//! The privileged side (feature `helper-server`, used by the `tunctl-helper` binary): read
//! one request from standard input, decide with the policy in [`POLICY_PATH`], act, answer,
//! log one line. See the crate README for the policy format.

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use super::{Netns, Op, Reply, Request, MAX_REQUEST};
use crate::addr::Cidr;
use crate::device::Device;
use crate::flags::Kind;
use crate::netlink::{Address, Link, Netlink};
use crate::netns::Namespace;
use crate::sys;

/// Where the policy lives. Missing, unreadable, or writable by anyone but root: every request
/// is denied.
pub const POLICY_PATH: &str = "/etc/tunctl/helper.toml";

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

/// Whether the whole network of `c` (address and prefix: what the kernel routes to the
/// device) lies inside `net`.
fn contains_net(net: &Cidr, c: &Cidr) -> bool {
    c.prefix() >= net.prefix() && contains(net, c.addr())
}

/// The alias that marks a device the helper created for `uid` (changing an alias needs
/// CAP_NET_ADMIN, so a device's holder cannot forge or remove it).
fn tag(uid: u32) -> String {
    format!("tunctl-helper uid={uid}")
}

fn contains(net: &Cidr, addr: IpAddr) -> bool {
    // Both as 128-bit numbers, IPv4 in the top 32 bits, so one mask serves both families.
    let bits = |a: IpAddr| -> u128 {
        match a {
            IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
            IpAddr::V6(v) => u128::from(v),
        }
    };
    if net.addr().is_ipv4() != addr.is_ipv4() {
        return false;
    }
    let mask = u128::MAX
        .checked_shl(128 - u32::from(net.prefix()))
        .unwrap_or(0);
    bits(net.addr()) & mask == bits(addr) & mask
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
    /// `owned` counts the caller's devices in a namespace (for `max_devices`).
    pub fn decide(
        &self,
        caller: &Caller,
        req: &Request,
        owned: &dyn Fn(&Netns) -> Result<usize, String>,
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
            match rule.allows(req, owned) {
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
        // Each address's whole network (the route the kernel installs for it) must lie in an
        // allowed range: 10.88.0.1/5 would route 8.0.0.0/5 to the device.
        for c in req.addrs.iter().chain(&req.del_addrs) {
            if !self.addresses.iter().any(|net| contains_net(net, c)) {
                return Err(format!("address {c} is outside the allowed ranges"));
            }
        }
        if let Some(peer) = req.peer {
            // The peer pairs with the request's address of its family, whose prefix it takes.
            let Some(local) = req
                .addrs
                .iter()
                .find(|c| c.addr().is_ipv4() == peer.is_ipv4())
            else {
                return Err(format!(
                    "peer {peer} needs an address of its family in the same request"
                ));
            };
            let peer_net = Cidr::new(peer, local.prefix()).map_err(|e| e.to_string())?;
            if !self
                .addresses
                .iter()
                .any(|net| contains_net(net, &peer_net))
            {
                return Err(format!("peer {peer_net} is outside the allowed ranges"));
            }
        }
        if let Some(mtu) = req.mtu {
            if mtu < self.mtu.0 || mtu > self.mtu.1 {
                return Err(format!(
                    "MTU {mtu} is outside {}..={}",
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

fn configure(link: &Link, req: &Request) -> crate::Result<()> {
    if let Some(mtu) = req.mtu {
        link.set_mtu(mtu)?;
    }
    for c in &req.del_addrs {
        link.del_address(*c)?;
    }
    for c in &req.addrs {
        link.add(&Address::new(*c))?;
    }
    if let Some(peer) = req.peer {
        link.set_peer(peer)?;
    }
    if req.up {
        link.up()?;
    }
    if req.down {
        link.down()?;
    }
    Ok(())
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

/// Carries out an allowed request.
fn execute(caller: &Caller, policy: &Policy, rule: usize, req: &Request) -> (Reply, Vec<OwnedFd>) {
    let err = |e: String| (Reply::Error(e), Vec::new());
    let (ns, _keep) = match open_ns(&req.netns) {
        Ok(v) => v,
        Err(e) => return err(e),
    };
    if req.op != Op::Create {
        let link = match Link::by_name(&ns, &req.name) {
            Ok(l) => l,
            Err(e) => return err(e.to_string()),
        };
        match link.info() {
            Ok(info)
                if info.tun.is_some()
                    && info.alias.as_deref() == Some(tag(caller.uid).as_str()) => {}
            Ok(_) => {
                return (
                    Reply::Denied(format!(
                        "{} was not created for {}",
                        req.name,
                        caller.describe()
                    )),
                    Vec::new(),
                )
            }
            Err(e) => return err(e.to_string()),
        }
        let done = if req.op == Op::Delete {
            link.delete()
        } else {
            configure(&link, req)
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
    let mut b = Device::builder()
        .name(&req.name)
        .kind(req.kind)
        .packet_info(req.pi)
        .vnet_hdr(req.vnet_hdr)
        .exclusive(true)
        .namespace(ns)
        .helper(false);
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
        dev.set_owner(caller.uid).map_err(|e| e.to_string())?;
        let link = dev.link().map_err(|e| e.to_string())?;
        link.set_alias(&tag(caller.uid))
            .map_err(|e| e.to_string())?;
        // Helpers running side by side may each have seen room for one more: count again.
        if let Some(max) = policy.rules.get(rule).and_then(|r| r.max_devices) {
            let mine = count_tagged(link.netlink(), caller.uid)?;
            if mine > max {
                return Err(format!("{mine} devices with this one, the limit is {max}"));
            }
        }
        if req.persist {
            dev.set_persist(true).map_err(|e| e.to_string())?;
        }
        configure(dev.link().map_err(|e| e.to_string())?, req).map_err(|e| e.to_string())?;
        let tun = dev.queues()[0]
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| e.to_string())?;
        let nl = dev
            .link()
            .map_err(|e| e.to_string())?
            .netlink()
            .socket_fd()
            .map_err(|e| e.to_string())?;
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

/// The helper's whole life: sanitize, identify the caller, read one request, decide, act,
/// answer, log. Returns the process exit status.
pub fn serve() -> i32 {
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
    if inherited > 0 {
        eprintln!("tunctl-helper: closed {inherited} file descriptor(s) left open by the caller");
    }
    let sock = sys::take_stdin();
    if !sys::is_seqpacket(sock.as_fd()) {
        eprintln!("tunctl-helper: standard input is not a request socket; this program is run by the tunctl library");
        return 2;
    }
    // In a user namespace the caller controls, ids, the policy file and /run/netns could all
    // be the caller's: run only in the initial one.
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    if uid_map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"] {
        let denial = Reply::Denied("tunctl-helper runs only in the initial user namespace".into());
        let _ = sys::send_with_fds(sock.as_fd(), denial.encode().as_bytes(), &[]);
        return 1;
    }
    let _ = sys::set_recv_timeout(sock.as_fd(), 5);
    let (uid, euid, gid, mut groups) = sys::ids();
    groups.push(gid);
    let caller = Caller {
        uid,
        name: sys::user_name(uid),
        groups,
    };
    let answer = |reply: Reply, fds: &[OwnedFd]| {
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        let _ = sys::send_with_fds(sock.as_fd(), reply.encode().as_bytes(), &borrowed);
    };
    // Never panics (a closed stderr is no reason to stop); attacker-chosen text is escaped.
    let log = |what: &str, verdict: &str| {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "tunctl-helper: {} {what}: {}",
            caller.describe(),
            verdict.escape_debug()
        );
    };
    match sys::peer_credentials(sock.as_fd()) {
        Ok((peer_uid, _, _)) if peer_uid == uid => {}
        _ => {
            log(
                "request",
                "denied: the socket's peer is not the user who ran the helper",
            );
            answer(
                Reply::Denied("the socket's peer is not the user who ran the helper".into()),
                &[],
            );
            return 1;
        }
    }
    if euid == 0 && uid != 0 {
        if let Err(e) = sys::drop_to_net_admin(uid, gid) {
            log("request", &format!("error: cannot drop privileges: {e}"));
            answer(Reply::Error(format!("cannot drop privileges: {e}")), &[]);
            return 1;
        }
    }
    let mut buf = vec![0u8; MAX_REQUEST + 1];
    let request = match sys::recv_with_fds(sock.as_fd(), &mut buf, 0) {
        Ok((n, false, _)) if n <= MAX_REQUEST => {
            Request::parse(&buf[..n]).map_err(|e| e.to_string())
        }
        Ok(_) => Err(format!("request larger than {MAX_REQUEST} bytes")),
        Err(e) => Err(format!("cannot read the request: {e}")),
    };
    let req = match request {
        Ok(r) => r,
        Err(why) => {
            log("request", &format!("denied: {why}"));
            answer(Reply::Denied(why), &[]);
            return 1;
        }
    };
    let what = format!(
        "{:?} name={:?} kind={} netns={:?} addrs={:?} del_addrs={:?} peer={:?} mtu={:?} up={} down={} persist={}",
        req.op,
        req.name,
        req.kind,
        ns_label(&req.netns),
        req.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        req.del_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        req.peer,
        req.mtu,
        req.up,
        req.down,
        req.persist
    );
    let policy = match Policy::load(Path::new(POLICY_PATH)) {
        Ok(p) => p,
        Err(why) => {
            log(&what, &format!("denied: {why}"));
            answer(Reply::Denied(why), &[]);
            return 1;
        }
    };
    let owned = |ns: &Netns| -> Result<usize, String> {
        let (ns, _keep) = open_ns(ns)?;
        count_tagged(&Netlink::open_in(&ns).map_err(|e| e.to_string())?, uid)
    };
    let rule = match policy.decide(&caller, &req, &owned) {
        Ok(rule) => rule,
        Err(why) => {
            log(&what, &format!("denied: {why}"));
            answer(Reply::Denied(why), &[]);
            return 1;
        }
    };
    // The decision is logged before anything is done.
    log(&what, &format!("allowed by rule {}", rule + 1));
    let (reply, fds) = execute(&caller, &policy, rule, &req);
    match &reply {
        Reply::Ok { name, .. } => log(&what, &format!("done -> {name}")),
        Reply::Denied(why) => log(&what, &format!("denied: {why}")),
        Reply::Error(why) => log(&what, &format!("failed: {why}")),
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
        let net: Cidr = "10.88.0.0/16".parse().unwrap();
        assert!(contains(&net, "10.88.200.1".parse().unwrap()));
        assert!(!contains(&net, "10.89.0.1".parse().unwrap()));
        assert!(!contains(&net, "fd00:88::1".parse().unwrap()));
        let v6: Cidr = "fd00:88::/32".parse().unwrap();
        assert!(contains(&v6, "fd00:88:1::1".parse().unwrap()));
        assert!(!contains(&v6, "fd00:89::1".parse().unwrap()));
    }

    #[test]
    fn decisions() {
        let p = Policy::parse(POLICY).unwrap();
        let none = |_: &Netns| Ok(0);
        let mut req = Request::new(Op::Create, "tun%d");
        req.addrs = vec!["10.88.0.1/24".parse().unwrap()];
        assert_eq!(p.decide(&caller("alice", 1001), &req, &none), Ok(0));
        assert_eq!(
            p.decide(&caller("bob", 1002), &req, &none),
            Ok(0),
            "by group 100"
        );
        let stranger = Caller {
            uid: 1003,
            name: Some("carol".into()),
            groups: vec![],
        };
        assert!(p
            .decide(&stranger, &req, &none)
            .unwrap_err()
            .contains("no rule"));
        let deny = |r: &Request| p.decide(&caller("alice", 1001), r, &none).unwrap_err();
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
        assert!(deny(&with(&|r| {
            r.peer = Some("10.88.0.2".parse().unwrap());
            r.addrs.clear();
        }))
        .contains("needs an address"));
        assert!(deny(&with(&|r| r.mtu = Some(576))).contains("MTU"));
        assert!(deny(&with(&|r| r.vnet_hdr = true)).contains("vnet_hdr"));
        assert!(p
            .decide(&caller("alice", 1001), &req, &|_| Ok(2))
            .unwrap_err()
            .contains("limit is 2"));
        assert!(p
            .decide(&caller("alice", 1001), &with(&|r| r.persist = true), &none)
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
                p.decide(&caller("alice", 1001), &r, &none).is_ok(),
                "{fine}"
            );
        }
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
