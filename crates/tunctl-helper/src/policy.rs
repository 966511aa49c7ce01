//! The policy: who may create and change which devices (`/etc/tunctl/helper.toml`), as pure
//! functions of the caller, the request and the networks it would route. No system call
//! here except loading the file and resolving group names.

use std::path::Path;

use tunctl::helper::{Netns, Op, Request};
use tunctl::{Cidr, Kind};

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
    /// `uid=N(name)`, for the log.
    pub fn describe(&self) -> String {
        format!("uid={}({})", self.uid, self.name.as_deref().unwrap_or("?"))
    }
}

/// One `[[allow]]` table.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rule {
    users: Vec<String>,
    groups: Vec<String>,
    names: Vec<String>,
    kinds: Vec<Kind>,
    namespaces: Vec<String>,
    pub(crate) addresses: Vec<Cidr>,
    mtu: (u32, u32),
    flags: Vec<String>,
    pub(crate) max_devices: Option<usize>,
}

/// The parsed policy: a list of rules; a request is allowed if one rule allows all of it.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub(crate) rules: Vec<Rule>,
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
pub(crate) fn tag(uid: u32) -> String {
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
    /// ([`LinkConfig::routed_networks`](tunctl::LinkConfig::routed_networks): each address's
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
    pub(crate) fn within_ranges<'a>(
        &self,
        nets: impl IntoIterator<Item = &'a Cidr>,
    ) -> Result<(), String> {
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
            let gid = g.parse::<u32>().ok().or_else(|| tunctl::group_id(g).ok());
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

pub(crate) fn ns_label(ns: &Netns) -> &str {
    match ns {
        Netns::Own => "own",
        Netns::Named(n) => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execute::link_config;

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
        let have = |cidr: &str| vec![tunctl::Address::new(cidr.parse().unwrap())];
        let decide = |r: &Request, current: &[tunctl::Address]| {
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
