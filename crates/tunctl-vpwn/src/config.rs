//! A tunnel's configuration, from options or from a file in the wg-quick format that
//! WireGuard users already have:
//!
//! ```text
//! [Interface]
//! PrivateKey = <base64>
//! ListenPort = 51820
//! Address = 10.204.0.1/24, fd00:204::1/64
//! MTU = 1420
//!
//! [Peer]
//! PublicKey = <base64>
//! PresharedKey = <base64>
//! Endpoint = 10.201.0.2:51820
//! AllowedIPs = 10.204.0.2/32
//! PersistentKeepalive = 25
//! ```
//!
//! vpwn is point-to-point: exactly one `[Peer]`. Keys wg-quick uses that vpwn does not
//! (`DNS`, `Table`, `SaveConfig`, `FwMark`) are reported as ignored; hooks that run commands
//! (`PreUp`, `PostUp`, `PreDown`, `PostDown`) are refused, not silently skipped.

use std::net::{SocketAddr, ToSocketAddrs};

use tunctl::addr::parse_decimal;
use tunctl::Cidr;

use crate::keys::Key;

/// The default MTU: a 1500-byte underlay minus the largest WireGuard overhead (IPv6 outer
/// header 40 + UDP 8 + WireGuard 32), as wg-quick chooses.
pub const DEFAULT_MTU: u32 = 1420;

/// This end of the tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// This end's private key.
    pub private_key: Key,
    /// The UDP port to listen on; `None` lets the kernel pick one.
    pub listen_port: Option<u16>,
    /// Addresses of the tunnel device.
    pub addresses: Vec<Cidr>,
    /// The tunnel device's MTU ([`DEFAULT_MTU`] when not given).
    pub mtu: Option<u32>,
}

/// The other end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's public key.
    pub public_key: Key,
    /// The preshared key both ends hold (the Erlang original's cookie, as a real secret).
    pub preshared_key: Option<Key>,
    /// Where to send until the peer is heard from (it then follows the peer: roaming).
    pub endpoint: Option<SocketAddr>,
    /// The inner source addresses accepted from the peer, and routed to it.
    pub allowed_ips: Vec<Cidr>,
    /// Send a keepalive after this many idle seconds (for NAT), if set.
    pub persistent_keepalive: Option<u16>,
}

/// A whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This end.
    pub interface: Interface,
    /// The one peer.
    pub peer: Peer,
    /// wg-quick keys that were read and ignored, for a warning.
    pub ignored: Vec<String>,
}

impl Config {
    /// Parses the wg-quick format (see the module docs). Errors name the line.
    ///
    /// # Errors
    ///
    /// A message naming the line and what is wrong: unknown section or key, a bad value,
    /// a missing `PrivateKey` or `PublicKey`, more than one `[Peer]`, a hook.
    pub fn parse(text: &str) -> Result<Config, String> {
        #[derive(PartialEq)]
        enum Section {
            None,
            Interface,
            Peer,
        }
        let mut section = Section::None;
        let mut peers = 0;
        let (mut private_key, mut listen_port, mut addresses, mut mtu) = (None, None, vec![], None);
        let (mut public_key, mut psk, mut endpoint, mut allowed, mut keepalive) =
            (None, None, None, vec![], None);
        let mut ignored = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let at = |why: String| format!("line {}: {why}", n + 1);
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if line.starts_with('[') {
                section = match line.to_ascii_lowercase().as_str() {
                    "[interface]" => Section::Interface,
                    "[peer]" => {
                        peers += 1;
                        if peers > 1 {
                            return Err(at(
                                "a second [Peer]: vpwn is point-to-point (one peer)".into()
                            ));
                        }
                        Section::Peer
                    }
                    other => return Err(at(format!("unknown section {other}"))),
                };
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| at(format!("{line:?} is not \"Key = value\"")))?;
            let lower = key.to_ascii_lowercase();
            let bad = |what: &str, e: String| at(format!("{key}: {what}: {e}"));
            match (&section, lower.as_str()) {
                (Section::None, _) => return Err(at(format!("{key} outside a section"))),
                (_, "preup" | "postup" | "predown" | "postdown") => {
                    return Err(at(format!(
                        "{key}: vpwn runs no commands; configure the host yourself"
                    )))
                }
                (_, "dns" | "table" | "saveconfig" | "fwmark") => ignored.push(key.to_string()),
                (Section::Interface, "privatekey") => {
                    private_key = Some(value.parse::<Key>().map_err(|e| bad("key", e))?)
                }
                (Section::Interface, "listenport") => {
                    listen_port = Some(
                        parse_decimal::<u16>(value)
                            .ok_or_else(|| bad("port", format!("{value:?} is not 0 to 65535")))?,
                    )
                }
                (Section::Interface, "address") => {
                    for a in value.split(',') {
                        addresses.push(
                            a.trim()
                                .parse::<Cidr>()
                                .map_err(|e| bad("address", e.detail()))?,
                        );
                    }
                }
                (Section::Interface, "mtu") => {
                    mtu = Some(
                        parse_decimal::<u32>(value)
                            .ok_or_else(|| bad("MTU", format!("{value:?} is not a number")))?,
                    )
                }
                (Section::Peer, "publickey") => {
                    public_key = Some(value.parse::<Key>().map_err(|e| bad("key", e))?)
                }
                (Section::Peer, "presharedkey") => {
                    psk = Some(value.parse::<Key>().map_err(|e| bad("key", e))?)
                }
                (Section::Peer, "endpoint") => {
                    endpoint = Some(parse_endpoint(value).map_err(|e| bad("endpoint", e))?)
                }
                (Section::Peer, "allowedips") => {
                    for a in value.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                        allowed.push(a.parse::<Cidr>().map_err(|e| bad("network", e.detail()))?);
                    }
                }
                (Section::Peer, "persistentkeepalive") => {
                    keepalive = match value {
                        "off" => None,
                        v => Some(parse_decimal::<u16>(v).ok_or_else(|| {
                            bad("seconds", format!("{v:?} is not 0 to 65535 or off"))
                        })?),
                    }
                }
                (_, _) => return Err(at(format!("unknown key {key}"))),
            }
        }
        let interface = Interface {
            private_key: private_key.ok_or("[Interface] has no PrivateKey")?,
            listen_port,
            addresses,
            mtu,
        };
        if peers == 0 {
            return Err("no [Peer]".into());
        }
        let peer = Peer {
            public_key: public_key.ok_or("[Peer] has no PublicKey")?,
            preshared_key: psk,
            endpoint,
            allowed_ips: allowed,
            persistent_keepalive: keepalive.filter(|k| *k > 0),
        };
        Ok(Config {
            interface,
            peer,
            ignored,
        })
    }
}

/// `host:port` or `[v6]:port`; a host name is resolved once, now.
///
/// # Errors
///
/// A bad port, or a name that does not resolve.
pub fn parse_endpoint(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
    let port =
        parse_decimal::<u16>(port).ok_or_else(|| format!("port {port:?} is not 0 to 65535"))?;
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

    #[test]
    fn wg_quick_files_parse() {
        let text = format!(
            "# a comment\n[Interface]\nPrivateKey = {A}\nListenPort = 51820\nAddress = 10.204.0.1/24, fd00:204::1/64\nMTU = 1420\nDNS = 1.1.1.1\n\n[Peer]\nPublicKey = {B}\nPresharedKey = {A}\nEndpoint = 10.201.0.2:51820\nAllowedIPs = 10.204.0.2/32, fd00:204::2/128\nPersistentKeepalive = 25\n"
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.interface.listen_port, Some(51820));
        assert_eq!(c.interface.addresses.len(), 2);
        assert_eq!(c.interface.mtu, Some(1420));
        assert_eq!(c.peer.endpoint, Some("10.201.0.2:51820".parse().unwrap()));
        assert_eq!(c.peer.allowed_ips.len(), 2);
        assert_eq!(c.peer.persistent_keepalive, Some(25));
        assert_eq!(c.ignored, vec!["DNS".to_string()]);
        assert_eq!(c.peer.public_key.to_string(), B);
        let v6 = parse_endpoint("[fd00::2]:51820").unwrap();
        assert_eq!(v6.port(), 51820);
    }

    #[test]
    fn bad_files_name_the_line() {
        let base = format!("[Interface]\nPrivateKey = {A}\n[Peer]\nPublicKey = {B}\n");
        assert!(Config::parse(&base).is_ok());
        for (bad, why) in [
            (format!("{base}PostUp = rm -rf /\n"), "runs no commands"),
            (format!("{base}[Peer]\nPublicKey = {A}\n"), "point-to-point"),
            (format!("{base}Endpoint = nowhere\n"), "HOST:PORT"),
            (format!("{base}AllowedIPs = 10.0.0.1/33\n"), "line 5"),
            (format!("{base}Color = blue\n"), "unknown key"),
            (format!("{base}PersistentKeepalive = +5\n"), "seconds"),
            (base.replace("ListenPort", "x").replace(B, "short"), "key"),
            (format!("[Interface]\nPrivateKey = {A}\n"), "no [Peer]"),
            (
                "[Interface]\nListenPort = 1\n[Peer]\n".to_string(),
                "PrivateKey",
            ),
            ("PrivateKey = x\n".to_string(), "outside a section"),
            (format!("{base}[Wat]\n"), "unknown section"),
        ] {
            let err = Config::parse(&bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }
}
