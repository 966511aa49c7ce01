//! Address types: an IP address with prefix length ([`Cidr`]) and a MAC address ([`MacAddr`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use crate::error::{Error, ErrorKind};

/// An IP address with a prefix length, as `10.0.0.1/24` or `fd00::1/64`.
///
/// Parsing is strict: dotted-quad IPv4 only (no octal, hex or short forms, which the Erlang
/// original accepted), prefixes 0–32 for IPv4 and 0–128 for IPv6. A bare address gets the
/// original's defaults: /32 for IPv4, /64 for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `addr/prefix`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] if the prefix is longer than the address (over 32 for
    /// IPv4, over 128 for IPv6).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, Error> {
        let max = Cidr::max_prefix(addr);
        if prefix > max {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "invalid prefix",
                format!(
                    "{addr}/{prefix}: the prefix of an {} address is 0 to {max}",
                    family(addr)
                ),
            ));
        }
        Ok(Cidr { addr, prefix })
    }

    /// The address with the original's default prefix (/32 for IPv4, /64 for IPv6).
    pub fn host_default(addr: IpAddr) -> Cidr {
        let prefix = if addr.is_ipv4() { 32 } else { 64 };
        Cidr { addr, prefix }
    }

    fn max_prefix(addr: IpAddr) -> u8 {
        if addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    /// The address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The network address: the address with the host bits cleared (`10.0.0.0` for
    /// `10.0.0.1/24`).
    pub fn network(&self) -> IpAddr {
        let keep = |bits: u32| u128::MAX.checked_shl(bits).unwrap_or(0);
        match self.addr {
            IpAddr::V4(v) => {
                let mask = keep(32 - u32::from(self.prefix)) as u32;
                IpAddr::V4(Ipv4Addr::from(u32::from(v) & mask))
            }
            IpAddr::V6(v) => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v) & keep(128 - u32::from(self.prefix)),
            )),
        }
    }

    /// The network as a CIDR of its own: `10.0.0.0/24` for `10.0.0.1/24` (what a route
    /// to it, or an allowed IP, holds).
    pub fn masked(&self) -> Cidr {
        Cidr {
            addr: self.network(),
            prefix: self.prefix,
        }
    }

    /// Whether the whole network of `other` lies inside this network (same family, a
    /// prefix at least as long, and the same network bits): what a route to `other`
    /// covers stays inside `self`.
    pub fn contains(&self, other: &Cidr) -> bool {
        self.addr.is_ipv4() == other.addr.is_ipv4()
            && other.prefix >= self.prefix
            && Cidr {
                addr: other.addr,
                prefix: self.prefix,
            }
            .network()
                == self.network()
    }

    /// The IPv4 broadcast address of the network (`None` for IPv6 and for /31 and /32,
    /// which have none).
    pub fn broadcast(&self) -> Option<Ipv4Addr> {
        match self.addr {
            IpAddr::V4(v4) if self.prefix <= 30 => {
                let host_mask = u32::MAX.checked_shr(u32::from(self.prefix)).unwrap_or(0);
                Some(Ipv4Addr::from(u32::from(v4) | host_mask))
            }
            _ => None,
        }
    }
}

fn family(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Cidr, Error> {
        let bad = |why: String| Error::new(ErrorKind::InvalidInput, "invalid address", why);
        let (addr_part, prefix_part) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_part.parse().map_err(|_| {
            bad(format!(
                "{s:?} is not an IPv4 or IPv6 address (e.g. 10.0.0.1/24, fd00::1/64)"
            ))
        })?;
        match prefix_part {
            None => Ok(Cidr::host_default(addr)),
            Some(p) => {
                let prefix: u8 = parse_decimal(p).ok_or_else(|| {
                    bad(format!(
                        "{s:?}: prefix {p:?} is not a plain decimal number (no sign, no leading zero)"
                    ))
                })?;
                Cidr::new(addr, prefix)
            }
        }
    }
}

/// A number written the one plain way: decimal digits only, no sign, no leading zero (so
/// `+1400`, `01400`, ` 1400` and `024` are refused, which `str::parse` would accept or
/// read differently than a reader of the text expects).
pub fn parse_decimal<T: FromStr>(s: &str) -> Option<T> {
    let plain =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if plain {
        s.parse().ok()
    } else {
        None
    }
}

/// Parses a plain IP address (no prefix) with a clear error.
///
/// # Errors
///
/// [`ErrorKind::InvalidInput`] for anything but an IPv4 or IPv6 address.
pub fn parse_ip(s: &str) -> Result<IpAddr, Error> {
    s.parse().map_err(|_| {
        Error::new(
            ErrorKind::InvalidInput,
            "invalid address",
            format!("{s:?} is not an IPv4 or IPv6 address"),
        )
    })
}

/// A 48-bit Ethernet (MAC) address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Whether this is a unicast address (the group bit is clear) and not all zeros: the only
    /// kind a device may take as its own.
    pub fn is_valid_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = Error;

    fn from_str(s: &str) -> Result<MacAddr, Error> {
        let bad = || {
            Error::new(
                ErrorKind::InvalidInput,
                "invalid MAC address",
                format!("{s:?} is not six hex bytes separated by ':' (e.g. 02:00:00:00:00:01)"),
            )
        };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let part = parts.next().ok_or_else(bad)?;
            if part.is_empty() || part.len() > 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cidrs() {
        let c: Cidr = "10.1.2.3/24".parse().unwrap();
        assert_eq!(c.prefix(), 24);
        assert_eq!(c.broadcast(), Some(Ipv4Addr::new(10, 1, 2, 255)));
        assert_eq!("10.0.0.1".parse::<Cidr>().unwrap().prefix(), 32);
        assert_eq!("fd00::1".parse::<Cidr>().unwrap().prefix(), 64);
        assert_eq!("fd00::1/128".parse::<Cidr>().unwrap().prefix(), 128);
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().unwrap().broadcast(),
            Some(Ipv4Addr::BROADCAST)
        );
        assert_eq!("10.0.0.1/31".parse::<Cidr>().unwrap().broadcast(), None);
    }

    #[test]
    fn rejects_bad_cidrs() {
        for bad in [
            "",
            "10.0.0.1/33",
            "fd00::1/129",
            "10.0.0.1/",
            "10.0.0.1/-1",
            "10.0.0.1/+8",
            "300.1.1.1",
            "10.1",
            "010.0.0.1",
            "0x0a.0.0.1",
            "foo",
            "fe80::1%eth0",
            "10.0.0.1/24/1",
            "10.0.0.1/999",
        ] {
            let err = bad.parse::<Cidr>().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn parses_macs() {
        let m: MacAddr = "02:00:5e:10:00:0a".parse().unwrap();
        assert_eq!(m.to_string(), "02:00:5e:10:00:0a");
        assert!(m.is_valid_unicast());
        assert!(!"01:00:5e:00:00:01"
            .parse::<MacAddr>()
            .unwrap()
            .is_valid_unicast());
        for bad in [
            "",
            "02:00:5e:10:00",
            "02:00:5e:10:00:0a:0b",
            "02:00:5e:10:00:zz",
            "020:0:5e:10:00:0a",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?}");
        }
    }
}
