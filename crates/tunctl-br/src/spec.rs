//! How ports, the uplink's master and static entries are named: `NAME@NS` with a namespace
//! by name (under `/run/netns`) or by path, parsed, printed back as given, and compared by
//! what they are (two spellings of one namespace are one namespace).

use std::fmt;
use std::str::FromStr;

use tunctl::{Error, ErrorKind, Namespace};

use crate::frame::Mac;

/// A namespace as `NAME@NS` takes it: its name, its path, or empty for the current one.
pub fn ns_label(ns: &Namespace) -> String {
    match ns {
        Namespace::Current => String::new(),
        Namespace::Named(name) => name.clone(),
        Namespace::Path(path) => path.display().to_string(),
    }
}

/// What a namespace is: the device and inode of its file (the caller's own for
/// [`Namespace::Current`]); `None` if it cannot be read.
pub fn ns_id(ns: &Namespace) -> Option<(u64, u64)> {
    ns.id().ok()
}

/// Whether `a` and `b` are one namespace (by their files; by how they are written if a file
/// cannot be read).
pub fn same_ns(a: &Namespace, b: &Namespace) -> bool {
    match (ns_id(a), ns_id(b)) {
        (Some(x), Some(y)) => x == y,
        _ => ns_label(a) == ns_label(b),
    }
}

fn bad(what: &str, why: String) -> Error {
    Error::from_kind(ErrorKind::InvalidInput, what, why)
}

/// `NAME` or `NAME@NS`: the name checked as an interface name, the namespace as
/// `Namespace::from_arg` reads it (a path if it holds a `/`).
fn split_at_ns(s: &str, what: &str) -> Result<(String, Option<Namespace>), Error> {
    let (name, ns) = match s.split_once('@') {
        Some((_, "")) => return Err(bad(what, format!("{s:?}: nothing after @"))),
        Some((n, ns)) => (n, Some(Namespace::from_arg(ns)?)),
        None => (s, None),
    };
    tunctl::name::validate(name, false).map_err(|e| bad(what, format!("{s:?}: {}", e.detail())))?;
    Ok((name.to_string(), ns))
}

/// A port to make or attach: a tap's name, and the namespace it is in (or is born in).
#[derive(Debug, Clone)]
pub struct PortSpec {
    /// The tap's name.
    pub name: String,
    /// Its namespace.
    pub namespace: Namespace,
}

impl PortSpec {
    /// `NAME` or `NAME@NS`; a port without `@NS` is in `default` (as `tunctl -n NS` makes
    /// NS the namespace of every port that names none).
    ///
    /// # Errors
    ///
    /// A bad interface name, a bad namespace name, nothing after `@`.
    pub fn parse_in(s: &str, default: &Namespace) -> Result<PortSpec, Error> {
        let (name, ns) = split_at_ns(s, "br port")?;
        Ok(PortSpec {
            name,
            namespace: ns.unwrap_or_else(|| default.clone()),
        })
    }
}

impl FromStr for PortSpec {
    type Err = Error;

    /// `NAME` or `NAME@NS`, NS a name under /run/netns or a path; without `@NS`, the
    /// current namespace.
    fn from_str(s: &str) -> Result<PortSpec, Error> {
        PortSpec::parse_in(s, &Namespace::Current)
    }
}

/// `NAME`, or `NAME@NS` for a port in another namespace than the current one.
impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match ns_label(&self.namespace) {
            ns if ns.is_empty() => f.write_str(&self.name),
            ns => write!(f, "{}@{ns}", self.name),
        }
    }
}

/// A port of a running bridge: its name, and its namespace when the name alone is
/// ambiguous (two ports called `eth0`, each in its container's namespace).
#[derive(Debug, Clone)]
pub struct PortRef {
    /// The port's name.
    pub name: String,
    /// Its namespace, if given: then only a port in that namespace matches.
    pub namespace: Option<Namespace>,
}

impl FromStr for PortRef {
    type Err = Error;

    /// `NAME` or `NAME@NS`.
    fn from_str(s: &str) -> Result<PortRef, Error> {
        let (name, namespace) = split_at_ns(s, "br port")?;
        Ok(PortRef { name, namespace })
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}@{}", self.name, ns_label(ns)),
            None => f.write_str(&self.name),
        }
    }
}

/// The Linux bridge the uplink joins: `BRIDGE`, looked up in the uplink's namespace (the
/// only one it can be in), or `BRIDGE@NS`, which must be that namespace.
#[derive(Debug, Clone)]
pub struct Master {
    /// The bridge's name.
    pub name: String,
    /// Its namespace if given; `None`: the uplink's.
    pub namespace: Option<Namespace>,
}

impl FromStr for Master {
    type Err = Error;

    /// `BRIDGE` or `BRIDGE@NS`.
    fn from_str(s: &str) -> Result<Master, Error> {
        let (name, namespace) = split_at_ns(s, "br master")?;
        Ok(Master { name, namespace })
    }
}

/// A static entry: an address (in a VLAN, 0 for untagged) that is on one port and nowhere
/// else, whatever the frames say.
#[derive(Debug, Clone)]
pub struct StaticEntry {
    /// The address.
    pub mac: Mac,
    /// Its VLAN (0: untagged).
    pub vlan: u16,
    /// The port it is on.
    pub port: PortRef,
}

impl FromStr for StaticEntry {
    type Err = Error;

    /// `MAC@PORT` or `MAC@PORT@NS` (untagged).
    fn from_str(s: &str) -> Result<StaticEntry, Error> {
        let Some((mac, port)) = s.split_once('@') else {
            return Err(bad("br static", format!("{s:?}: not MAC@PORT")));
        };
        let mac: Mac = mac.parse().map_err(|e: String| bad("br static", e))?;
        if !mac.is_valid_source() {
            return Err(bad(
                "br static",
                format!("{mac} is not a unicast address: no frame comes from it"),
            ));
        }
        Ok(StaticEntry {
            mac,
            vlan: 0,
            port: port.parse()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_refs_masters_and_statics() {
        let p: PortSpec = "tap0@blue".parse().unwrap();
        assert_eq!(p.namespace, Namespace::Named("blue".into()));
        assert_eq!(p.to_string(), "tap0@blue");
        let q = PortSpec::parse_in("q0", &Namespace::Named("red".into())).unwrap();
        assert_eq!(q.to_string(), "q0@red");
        let r = PortSpec::parse_in("q0@/proc/1/ns/net", &Namespace::Named("red".into())).unwrap();
        assert_eq!(r.to_string(), "q0@/proc/1/ns/net");
        assert_eq!("q0".parse::<PortSpec>().unwrap().to_string(), "q0");
        for bad in ["", "@x", "q0@", "sixteen-bytes-xx", "a/b@x", "q0@.."] {
            assert!(bad.parse::<PortSpec>().is_err(), "{bad:?}");
        }
        let u: PortRef = "up0@hub".parse().unwrap();
        assert_eq!((u.name.as_str(), u.to_string()), ("up0", "up0@hub".into()));
        assert!("up0".parse::<PortRef>().unwrap().namespace.is_none());
        let m: Master = "br0".parse().unwrap();
        assert!(m.namespace.is_none());
        let s: StaticEntry = "02:00:00:00:00:01@eth0@c1".parse().unwrap();
        assert_eq!(s.port.to_string(), "eth0@c1");
        assert!("01:00:00:00:00:01@eth0".parse::<StaticEntry>().is_err());
        assert!("02:00:00:00:00:01".parse::<StaticEntry>().is_err());
        assert!(same_ns(
            &Namespace::Current,
            &Namespace::path("/proc/self/ns/net")
        ));
        assert!(!same_ns(
            &Namespace::Current,
            &Namespace::Named("no-such-ns-x".into())
        ));
    }
}
