//! A tunnel's configuration, one model for everything that sets it: the wg-quick file that
//! `vpwn up --config` reads (any number of peers), the options of `vpwn up`, and the UAPI
//! (`wg setconf`, `wg set`, `wg showconf`), which sets and shows its WireGuard part.
//!
//! ```text
//! [Interface]
//! PrivateKey = <base64>
//! ListenPort = 51820
//! Address = 10.204.0.1/24, fd00:204::1/64
//! MTU = 1420
//! Table = auto              # off, auto, or a table number
//! FwMark = 0x5182           # or off
//!
//! [Peer]
//! PublicKey = <base64>
//! PresharedKey = <base64>
//! Endpoint = vpn.example.org:51820    # a host name, [v6]:port, or [fe80::1%eth0]:port
//! AllowedIPs = 0.0.0.0/0, ::/0
//! PersistentKeepalive = 25
//!
//! [Peer]
//! ...
//! ```
//!
//! wg-quick keys vpwn does not apply (`DNS`, `SaveConfig`) are reported as ignored; hooks
//! that run commands (`PreUp`, `PostUp`, `PreDown`, `PostDown`) are refused, not skipped.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6, ToSocketAddrs};

use tunctl::addr::parse_decimal;
use tunctl::Cidr;

use crate::keys::{PublicKey, SecretKey};

/// The default MTU: a 1500-byte underlay minus the largest WireGuard overhead (IPv6 outer
/// header 40 + UDP 8 + WireGuard 32), as wg-quick chooses.
pub const DEFAULT_MTU: u32 = 1420;
/// The MTUs a tunnel takes: IPv4's least, and the most whose packets, sealed (32 bytes more)
/// in a UDP datagram over IPv4 or IPv6, still fit a datagram's 65,535 bytes.
pub const MTUS: std::ops::RangeInclusive<u32> = 68..=65455;

/// Which routing table `up` puts the peers' allowed IPs in (wg-quick's `Table`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Table {
    /// The main table; a default route (`0.0.0.0/0` or `::/0` among the allowed IPs)
    /// instead goes in a table of its own, with a firewall mark and two rules, so that the
    /// tunnel's own datagrams still leave by the real default route (a full tunnel).
    #[default]
    Auto,
    /// No routes at all: the user routes.
    Off,
    /// This table, for every allowed IP, with no rules.
    Id(u32),
}

/// One peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's public key: who it is.
    pub public_key: PublicKey,
    /// The preshared key both ends hold (the Erlang original's cookie, as a real secret).
    pub preshared_key: Option<SecretKey>,
    /// Where to send until the peer is heard from (it then follows the peer: roaming).
    pub endpoint: Option<SocketAddr>,
    /// The endpoint as written, when it must be resolved (a host name, or an IPv6
    /// link-local address with its interface): resolved by [`Config::resolve`] at `up`, and
    /// again when a handshake has not completed for 2 minutes (the peer's address may have
    /// changed, as wireguard-tools' reresolve-dns assumes).
    pub endpoint_name: Option<String>,
    /// Keepalive interval in seconds (0: off).
    pub keepalive: u16,
    /// The inner source addresses accepted from the peer, and routed to it: networks (host
    /// bits zero), each belonging to one peer only.
    pub allowed_ips: Vec<Cidr>,
}

impl Peer {
    /// A peer with this key and nothing else.
    pub fn new(public_key: PublicKey) -> Peer {
        Peer {
            public_key,
            preshared_key: None,
            endpoint: None,
            endpoint_name: None,
            keepalive: 0,
            allowed_ips: Vec::new(),
        }
    }
}

/// A whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// This end's private key; without one, no handshake is made or answered.
    pub private_key: Option<SecretKey>,
    /// The UDP port (0: the kernel picks a free one).
    pub listen_port: u16,
    /// The firewall mark put on the tunnel's own datagrams (0: none, or one `up` picks for
    /// a full tunnel).
    pub fwmark: u32,
    /// The peers, in the order they were added.
    pub peers: Vec<Peer>,
    /// Addresses of the tunnel device (applied by `up`; not part of the UAPI).
    pub addresses: Vec<Cidr>,
    /// The tunnel device's MTU ([`DEFAULT_MTU`] when not given).
    pub mtu: Option<u32>,
    /// Where the allowed IPs are routed.
    pub table: Table,
    /// wg-quick keys that were read and not applied (`DNS`, `SaveConfig`), for a warning.
    pub ignored: Vec<String>,
}

impl Config {
    /// Parses the wg-quick format (see the module docs): one `[Interface]`, any number of
    /// `[Peer]`s. Host names are kept to be resolved by [`resolve`](Config::resolve).
    ///
    /// # Errors
    ///
    /// A message naming the line and what is wrong: unknown section or key, a bad value,
    /// a missing `PrivateKey` or `PublicKey`, the same peer twice, a hook.
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut p = Parser::default();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            p.line(n + 1, line)?;
        }
        p.finish()
    }

    /// Resolves the endpoints given by name (host names, scoped link-local addresses), in
    /// the calling thread's namespace (interface names are looked up there). A name that
    /// does not resolve leaves the peer without an endpoint (it can still be reached by it)
    /// and is reported.
    pub fn resolve(&mut self) -> Vec<String> {
        let mut unresolved = Vec::new();
        for p in &mut self.peers {
            if let Some(name) = &p.endpoint_name {
                match resolve_endpoint(name) {
                    Ok(a) => p.endpoint = Some(a),
                    Err(e) => {
                        unresolved.push(format!("peer {}: endpoint {name}: {e}", p.public_key))
                    }
                }
            }
        }
        unresolved
    }

    /// Whether any peer's allowed IPs hold a default route of this family (`0.0.0.0/0`,
    /// `::/0`): a full tunnel.
    pub fn default_route(&self, v6: bool) -> bool {
        self.peers
            .iter()
            .flat_map(|p| &p.allowed_ips)
            .any(|c| c.prefix() == 0 && c.addr().is_ipv6() == v6)
    }
}

/// Where [`Config::parse`] is in the file.
#[derive(Default)]
enum Section {
    #[default]
    None,
    Interface,
    /// A `[Peer]` being read, and the line it began on.
    Peer(Box<Peer>, usize),
}

/// The state of [`Config::parse`]: the configuration so far and the open section.
#[derive(Default)]
struct Parser {
    config: Config,
    section: Section,
    interfaces: usize,
}

/// `text` of the file as an error may show it: a key or section name (short, of letters,
/// digits and `[]_-`), else not at all. The file may hold secrets, and may be a file the
/// caller could not read (`sudo tunctl vpwn up --config` a link to a root file).
fn shown(text: &str) -> String {
    if text.len() <= 32
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '[' | ']' | '_' | '-'))
    {
        text.to_string()
    } else {
        "(not shown: not a key name)".to_string()
    }
}

impl Parser {
    /// Line `n`, neither empty nor a comment. Errors name the line they are about.
    fn line(&mut self, n: usize, line: &str) -> Result<(), String> {
        let at = |why: String| format!("line {n}: {why}");
        if line.starts_with('[') {
            self.end_peer()?;
            return self.begin(n, line).map_err(at);
        }
        self.entry(line).map_err(at)
    }

    /// A `Key = value` line of the open section.
    fn entry(&mut self, line: &str) -> Result<(), String> {
        let (key, value) = line
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or_else(|| "it is not \"Key = value\"".to_string())?;
        let lower = key.to_ascii_lowercase();
        if matches!(lower.as_str(), "preup" | "postup" | "predown" | "postdown") {
            return Err(format!(
                "{key}: vpwn runs no commands; configure the host yourself"
            ));
        }
        let known = match &mut self.section {
            Section::None => return Err(format!("{} outside a section", shown(key))),
            Section::Interface => interface_key(&mut self.config, key, &lower, value)?,
            Section::Peer(p, _) => peer_key(p, key, &lower, value)?,
        };
        if known {
            Ok(())
        } else {
            Err(format!("unknown key {}", shown(key)))
        }
    }

    /// A section header on line `n`.
    fn begin(&mut self, n: usize, header: &str) -> Result<(), String> {
        self.section = match header.to_ascii_lowercase().as_str() {
            "[interface]" => {
                self.interfaces += 1;
                if self.interfaces > 1 {
                    return Err("a second [Interface]".into());
                }
                Section::Interface
            }
            "[peer]" => Section::Peer(Box::new(Peer::new(PublicKey([0; 32]))), n),
            other => return Err(format!("unknown section {}", shown(other))),
        };
        Ok(())
    }

    /// Adds the open peer, if any, to the configuration: it is whole at the next section
    /// or the end. Its errors name the line of its `[Peer]`.
    fn end_peer(&mut self) -> Result<(), String> {
        let Section::Peer(p, line) = std::mem::take(&mut self.section) else {
            return Ok(());
        };
        let c = &mut self.config;
        if p.public_key.0 == [0; 32] {
            return Err(format!("line {line}: [Peer] has no PublicKey"));
        }
        if c.peers.iter().any(|q| q.public_key == p.public_key) {
            return Err(format!(
                "line {line}: the peer {} is given twice",
                p.public_key
            ));
        }
        c.peers.push(*p);
        Ok(())
    }

    /// The end of the file: the last peer, the required keys, one owner per network.
    fn finish(mut self) -> Result<Config, String> {
        self.end_peer()?;
        let mut c = self.config;
        if c.private_key.is_none() {
            return Err("[Interface] has no PrivateKey".into());
        }
        // One network, one peer (cryptokey routing): a later peer's takes it, as `wg
        // setconf` would apply the file; each once.
        let mut owner = std::collections::HashMap::new();
        for (i, p) in c.peers.iter().enumerate() {
            for net in &p.allowed_ips {
                owner.insert(*net, i);
            }
        }
        for (i, p) in c.peers.iter_mut().enumerate() {
            let mut seen = std::collections::HashSet::new();
            p.allowed_ips
                .retain(|n| owner.get(n) == Some(&i) && seen.insert(*n));
        }
        Ok(c)
    }
}

/// One `[Interface]` key: `Ok(false)` when it is not one.
fn interface_key(c: &mut Config, key: &str, lower: &str, value: &str) -> Result<bool, String> {
    let bad = |what: &str, e: String| format!("{key}: {what}: {e}");
    match lower {
        "dns" | "saveconfig" => c.ignored.push(key.to_string()),
        "privatekey" => c.private_key = Some(value.parse().map_err(|e| bad("key", e))?),
        "listenport" => {
            c.listen_port = parse_decimal::<u16>(value)
                .ok_or_else(|| bad("port", format!("{value:?} is not 0 to 65535")))?
        }
        "fwmark" => c.fwmark = parse_fwmark(value).map_err(|e| bad("mark", e))?,
        "table" => c.table = parse_table(value).map_err(|e| bad("table", e))?,
        "address" => {
            for a in list(value) {
                c.addresses
                    .push(a.parse::<Cidr>().map_err(|e| bad("address", e.detail()))?);
            }
        }
        "mtu" => {
            c.mtu = Some(
                parse_decimal::<u32>(value)
                    .filter(|m| MTUS.contains(m))
                    .ok_or_else(|| {
                        bad(
                            "MTU",
                            format!("{value:?} is not {} to {}", MTUS.start(), MTUS.end()),
                        )
                    })?,
            )
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// One `[Peer]` key: `Ok(false)` when it is not one.
fn peer_key(p: &mut Peer, key: &str, lower: &str, value: &str) -> Result<bool, String> {
    let bad = |what: &str, e: String| format!("{key}: {what}: {e}");
    match lower {
        "publickey" => p.public_key = value.parse().map_err(|e| bad("key", e))?,
        "presharedkey" => p.preshared_key = Some(value.parse().map_err(|e| bad("key", e))?),
        "endpoint" => {
            check_endpoint(value).map_err(|e| bad("endpoint", e))?;
            match value.parse::<SocketAddr>() {
                Ok(addr) => p.endpoint = Some(addr),
                Err(_) => p.endpoint_name = Some(value.to_string()),
            }
        }
        "allowedips" => {
            for a in list(value) {
                let net = a.parse::<Cidr>().map_err(|e| bad("network", e.detail()))?;
                p.allowed_ips.push(net.masked());
            }
        }
        "persistentkeepalive" => {
            p.keepalive = match value {
                "off" => 0,
                v => parse_decimal::<u16>(v)
                    .ok_or_else(|| bad("seconds", format!("{v:?} is not 0 to 65535 or off")))?,
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The items of a comma-separated list, trimmed, empty ones skipped.
fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|a| !a.is_empty())
}

/// `off`, or a mark in decimal or `0x` hexadecimal (as `wg` takes it).
fn parse_fwmark(value: &str) -> Result<u32, String> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    let n = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) if !hex.is_empty() && hex.len() <= 8 => u32::from_str_radix(hex, 16).ok(),
        Some(_) => None,
        None => parse_decimal::<u32>(value),
    };
    n.ok_or_else(|| format!("{value:?} is not off, a number or 0x followed by hex digits"))
}

/// `off`, `auto`, or a table number (1 to 2^32-1; not 253 to 255, the kernel's own
/// default, main and local).
fn parse_table(value: &str) -> Result<Table, String> {
    match value.to_ascii_lowercase().as_str() {
        "off" => Ok(Table::Off),
        "auto" => Ok(Table::Auto),
        "main" => Ok(Table::Id(254)),
        v => match parse_decimal::<u32>(v) {
            Some(n) if n > 0 && !(253..=255).contains(&n) => Ok(Table::Id(n)),
            Some(254) => Ok(Table::Id(254)),
            _ => Err(format!(
                "{value:?} is not off, auto, main or a table number (not 0, 253 or 255)"
            )),
        },
    }
}

/// Checks the form `HOST:PORT`, `[V6]:PORT` or `[V6%IFACE]:PORT` (no lookup).
fn check_endpoint(s: &str) -> Result<(), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
    parse_decimal::<u16>(port).ok_or_else(|| format!("port {port:?} is not 0 to 65535"))?;
    if host.is_empty() || (host.contains(':') && !host.starts_with('[')) {
        return Err(format!(
            "{s:?}: an IPv6 address goes in brackets, [addr]:port"
        ));
    }
    Ok(())
}

/// `HOST:PORT` or `[V6]:PORT` or `[V6%IFACE]:PORT` to an address: a literal as it is, a
/// scope by interface name (in this thread's namespace), a host name through the system's
/// resolver (the first address it gives).
///
/// # Errors
///
/// A bad form or port, an unknown interface, a name that does not resolve.
pub fn resolve_endpoint(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    check_endpoint(s)?;
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
    let port = parse_decimal::<u16>(port).ok_or_else(|| format!("port {port:?}"))?;
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let (addr, scope) = inner.split_once('%').unwrap_or((inner, ""));
        let addr: Ipv6Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv6 address"))?;
        let scope_id = if scope.is_empty() {
            0
        } else if let Some(n) = parse_decimal::<u32>(scope) {
            n
        } else {
            let c =
                std::ffi::CString::new(scope).map_err(|_| "a bad interface name".to_string())?;
            // SAFETY: a valid C string.
            match unsafe { libc::if_nametoindex(c.as_ptr()) } {
                0 => return Err(format!("no interface {scope} here")),
                n => n,
            }
        };
        return Ok(SocketAddr::V6(SocketAddrV6::new(addr, port, 0, scope_id)));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const B: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
    const C: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";

    #[test]
    fn wg_quick_files_parse_with_many_peers() {
        let text = format!(
            "# a comment\n[Interface]\nPrivateKey = {A}\nListenPort = 51820\nAddress = 10.204.0.1/24, fd00:204::1/64\nAddress = 10.205.0.1/24\nMTU = 1420\nDNS = 1.1.1.1\nTable = 1234\nFwMark = 0x10\n\n[Peer]\nPublicKey = {B}\nPresharedKey = {A}\nEndpoint = 10.201.0.2:51820\nAllowedIPs = 10.204.0.2/32, fd00:204::2/128\nAllowedIPs = 10.9.0.7/24\nPersistentKeepalive = 25\n[Peer]\nPublicKey = {C}\nEndpoint = localhost:51821\nAllowedIPs = 10.9.0.0/24, 0.0.0.0/0\n"
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.listen_port, 51820);
        assert_eq!(c.addresses.len(), 3);
        assert_eq!(c.mtu, Some(1420));
        assert_eq!((c.table, c.fwmark), (Table::Id(1234), 16));
        assert_eq!(c.ignored, vec!["DNS".to_string()]);
        assert_eq!(c.peers.len(), 2);
        let (p, q) = (&c.peers[0], &c.peers[1]);
        assert_eq!(p.endpoint, Some("10.201.0.2:51820".parse().unwrap()));
        assert_eq!(p.keepalive, 25);
        assert!(p.preshared_key.is_some());
        assert_eq!(p.public_key.to_string(), B);
        // The /24 is the later peer's, stored as its network.
        assert_eq!(p.allowed_ips.len(), 2);
        assert_eq!(
            q.allowed_ips,
            vec!["10.9.0.0/24".parse().unwrap(), "0.0.0.0/0".parse().unwrap()]
        );
        assert_eq!(
            (q.endpoint, q.endpoint_name.as_deref()),
            (None, Some("localhost:51821"))
        );
        assert!(c.default_route(false) && !c.default_route(true));
        let mut r = c.clone();
        assert!(r.resolve().is_empty());
        assert_eq!(r.peers[1].endpoint.map(|e| e.port()), Some(51821));
        let v6 = resolve_endpoint("[fd00::2]:51820").unwrap();
        assert_eq!(v6.port(), 51820);
        let scoped = resolve_endpoint("[fe80::1%lo]:51820").unwrap();
        match scoped {
            SocketAddr::V6(a) => assert_ne!(a.scope_id(), 0),
            _ => panic!("{scoped}"),
        }
        assert!(resolve_endpoint("[fe80::1%nosuchif0]:1").is_err());
        for (t, want) in [
            ("off", Table::Off),
            ("auto", Table::Auto),
            ("main", Table::Id(254)),
        ] {
            assert_eq!(parse_table(t), Ok(want));
        }
        assert!(parse_table("0").is_err() && parse_table("255").is_err());
        assert_eq!(parse_fwmark("off"), Ok(0));
        assert_eq!(parse_fwmark("51820"), Ok(51820));
        assert!(parse_fwmark("0x").is_err() && parse_fwmark("+1").is_err());
    }

    #[test]
    fn bad_files_name_the_line() {
        let base = format!("[Interface]\nPrivateKey = {A}\n[Peer]\nPublicKey = {B}\n");
        assert!(Config::parse(&base).is_ok());
        for (bad, why) in [
            (format!("{base}PostUp = rm -rf /\n"), "runs no commands"),
            (format!("{base}[Peer]\nPublicKey = {B}\n"), "given twice"),
            (
                format!("{base}[Peer]\nEndpoint = 1.2.3.4:5\n"),
                "no PublicKey",
            ),
            (format!("{base}Endpoint = nowhere\n"), "HOST:PORT"),
            (format!("{base}Endpoint = fd00::1:51820\n"), "brackets"),
            (format!("{base}AllowedIPs = 10.0.0.1/33\n"), "line 5"),
            (format!("{base}Color = blue\n"), "unknown key"),
            (format!("{base}PersistentKeepalive = +5\n"), "seconds"),
            (
                format!("[Interface]\nPrivateKey = {A}\nMTU = 65456\n"),
                "68 to 65455",
            ),
            (format!("{base}[Interface]\n"), "second [Interface]"),
            (base.replace(B, "short"), "key"),
            (
                "[Interface]\nListenPort = 1\n[Peer]\n".to_string(),
                "no PublicKey",
            ),
            ("[Interface]\nListenPort = 1\n".to_string(), "PrivateKey"),
            ("PrivateKey = x\n".to_string(), "outside a section"),
            (format!("{base}[Wat]\n"), "unknown section"),
            (
                format!("[Interface]\nPrivateKey = {A}\nTable = 0\n"),
                "table",
            ),
        ] {
            let err = Config::parse(&bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    /// A file that is no configuration (say /etc/shadow behind a link given to `sudo
    /// tunctl vpwn up --config`) is refused without a word of what it holds.
    #[test]
    fn errors_never_show_what_a_file_holds() {
        for (text, secret) in [
            (
                "root:$6$salt$hash:19000:0:99999:7:::
",
                "$6$salt$hash",
            ),
            (
                "token=s3cr3t-value-of-some-length-here = x
",
                "s3cr3t",
            ),
            (
                "[s3cr3t stuff in a header]
",
                "s3cr3t",
            ),
        ] {
            let err = Config::parse(text).unwrap_err();
            assert!(!err.contains(secret), "{err}");
            assert!(err.contains("line 1"), "{err}");
        }
    }
}
