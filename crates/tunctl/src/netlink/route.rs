//! Routes and rules (RTM_*ROUTE, RTM_*RULE): what `ip route` and `ip rule` show and change,
//! in any table, so that a program can route through its device (a VPN's full tunnel: a
//! table and a firewall mark of its own) without running `ip`.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Netlink, Route, RouteKind};
use crate::addr::Cidr;
use crate::error::{Error, ErrorKind, Result};

/// The main routing table.
pub const RT_TABLE_MAIN: u32 = 254;
/// `rtm_protocol` of a route (and `FRA_PROTOCOL` of a rule) added by an administrator:
/// what `ip route add` and `ip rule add` mark theirs with.
pub const RTPROT_STATIC: u8 = 4;

/// A route to add or remove: `ip route add DST dev LINK [via GATEWAY] [table T] [metric M]
/// [proto P]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteSpec {
    /// The destination network.
    pub dst: Cidr,
    /// The link it goes out of.
    pub index: u32,
    /// The next hop, if any (else the destination is on the link).
    pub gateway: Option<IpAddr>,
    /// The table ([`RT_TABLE_MAIN`] unless said).
    pub table: u32,
    /// The metric (`None`: the kernel's default, 0 for IPv4 and 1024 for IPv6).
    pub metric: Option<u32>,
    /// Who makes it (`rtm_protocol`; [`RTPROT_STATIC`] unless said): a program can tag its
    /// routes and find them again.
    pub protocol: u8,
    /// What it does with what it matches: out of its link, or refuse.
    pub kind: RouteKind,
}

impl RouteSpec {
    /// A route to `dst` out of link `index`, in the main table.
    pub fn new(dst: Cidr, index: u32) -> RouteSpec {
        RouteSpec {
            dst,
            index,
            gateway: None,
            table: RT_TABLE_MAIN,
            metric: None,
            protocol: RTPROT_STATIC,
            kind: RouteKind::Unicast,
        }
    }

    /// An unreachable route to `dst` (`ip route add unreachable DST`): packets it matches
    /// are refused (`ENETUNREACH`), whatever links come and go. Behind a tunnel's own route
    /// (with a higher metric), it keeps the table failing closed when the kernel removes
    /// the tunnel's route (its link went down).
    pub fn unreachable(dst: Cidr) -> RouteSpec {
        RouteSpec {
            kind: RouteKind::Unreachable,
            ..RouteSpec::new(dst, 0)
        }
    }

    /// In table `table`.
    pub fn in_table(mut self, table: u32) -> RouteSpec {
        self.table = table;
        self
    }

    fn message(&self) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(self.dst.addr().is_ipv6());
        msg.header.destination_prefix_length = self.dst.prefix();
        match u8::try_from(self.table) {
            Ok(t) => msg.header.table = t,
            Err(_) => {
                msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
                msg.attributes.push(RouteAttribute::Table(self.table));
            }
        }
        msg.header.protocol = RouteProtocol::from(self.protocol);
        msg.header.scope = if self.gateway.is_some() || self.kind == RouteKind::Unreachable {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        msg.header.kind = match self.kind {
            RouteKind::Unicast => RouteType::Unicast,
            RouteKind::Unreachable => RouteType::Unreachable,
            RouteKind::Other(t) => RouteType::from(t),
        };
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                self.dst.network(),
            )));
        if self.kind != RouteKind::Unreachable {
            msg.attributes.push(RouteAttribute::Oif(self.index));
        }
        if let Some(gw) = self.gateway {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        if let Some(m) = self.metric {
            msg.attributes.push(RouteAttribute::Priority(m));
        }
        msg
    }
}

fn family(v6: bool) -> AddressFamily {
    if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    }
}

/// A routing policy rule (`ip rule`): packets it matches are looked up in its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    /// IPv6 (else IPv4) packets.
    pub v6: bool,
    /// Its place (`pref`; lower first). `None` when adding: the kernel puts it just before
    /// the last rule it placed, as `ip rule add` does.
    pub priority: Option<u32>,
    /// Matches packets with this firewall mark (`fwmark M`), under `fwmask` if given.
    pub fwmark: Option<u32>,
    /// The mask the mark is compared under (`fwmark M/MASK`).
    pub fwmask: Option<u32>,
    /// Matches what the selectors do not (`not`).
    pub invert: bool,
    /// The table to look in.
    pub table: u32,
    /// Ignores routes of this prefix length or shorter from the table
    /// (`suppress_prefixlength N`: 0 ignores the table's default route).
    pub suppress_prefixlength: Option<u32>,
    /// Who made it (`FRA_PROTOCOL`, kernel 4.17 and later): a program can tag its rules and
    /// find them again.
    pub protocol: u8,
}

impl Rule {
    /// Every packet of the family, to `table`.
    pub fn to_table(v6: bool, table: u32) -> Rule {
        Rule {
            v6,
            priority: None,
            fwmark: None,
            fwmask: None,
            invert: false,
            table,
            suppress_prefixlength: None,
            protocol: RTPROT_STATIC,
        }
    }

    fn message(&self) -> RuleMessage {
        let mut msg = RuleMessage::default();
        msg.header.family = family(self.v6);
        msg.header.action = RuleAction::ToTable;
        if self.invert {
            msg.header.flags = RuleFlags::Invert;
        }
        match u8::try_from(self.table) {
            Ok(t) => msg.header.table = t,
            Err(_) => msg.header.table = 0,
        }
        msg.attributes.push(RuleAttribute::Table(self.table));
        if let Some(p) = self.priority {
            msg.attributes.push(RuleAttribute::Priority(p));
        }
        if let Some(m) = self.fwmark {
            msg.attributes.push(RuleAttribute::FwMark(m));
        }
        if let Some(m) = self.fwmask {
            msg.attributes.push(RuleAttribute::FwMask(m));
        }
        if let Some(n) = self.suppress_prefixlength {
            msg.attributes.push(RuleAttribute::SuppressPrefixLen(n));
        }
        msg.attributes
            .push(RuleAttribute::Protocol(RouteProtocol::from(self.protocol)));
        msg
    }

    fn from_message(msg: &RuleMessage) -> Option<Rule> {
        let v6 = match msg.header.family {
            AddressFamily::Inet => false,
            AddressFamily::Inet6 => true,
            _ => return None,
        };
        let mut rule = Rule {
            v6,
            priority: None,
            fwmark: None,
            fwmask: None,
            invert: msg.header.flags.contains(RuleFlags::Invert),
            table: u32::from(msg.header.table),
            suppress_prefixlength: None,
            protocol: 0,
        };
        for attr in &msg.attributes {
            match attr {
                RuleAttribute::Priority(p) => rule.priority = Some(*p),
                RuleAttribute::FwMark(m) => rule.fwmark = Some(*m),
                RuleAttribute::FwMask(m) => rule.fwmask = Some(*m),
                RuleAttribute::Table(t) => rule.table = *t,
                // The kernel reports "none" as all ones.
                RuleAttribute::SuppressPrefixLen(n) if *n != u32::MAX => {
                    rule.suppress_prefixlength = Some(*n)
                }
                RuleAttribute::Protocol(p) => rule.protocol = u8::from(*p),
                _ => {}
            }
        }
        Some(rule)
    }

    /// Whether `self` (as asked for) is `other` (as the kernel lists it): the same
    /// selectors and table; a priority asked for must match, none matches any.
    pub fn matches(&self, other: &Rule) -> bool {
        self.v6 == other.v6
            && self.priority.is_none_or(|p| other.priority == Some(p))
            && self.fwmark == other.fwmark.filter(|m| *m != 0)
            && self.fwmask.is_none_or(|m| other.fwmask == Some(m))
            && self.invert == other.invert
            && self.table == other.table
            && self.suppress_prefixlength == other.suppress_prefixlength
    }
}

impl Netlink {
    /// The routes of the main table (IPv4 and IPv6) through link `index`, or through every
    /// link (`None`), as `ip route show` lists them (RTM_GETROUTE dump).
    ///
    /// # Errors
    ///
    /// As [`links`](Netlink::links); an unknown `index` gives an empty list, not an error.
    pub fn routes(&self, index: Option<u32>) -> Result<Vec<Route>> {
        Ok(self
            .table_routes(RT_TABLE_MAIN)?
            .into_iter()
            .filter(|r| index.is_none_or(|i| r.index == i))
            .collect())
    }

    /// The routes of table `table`, IPv4 and IPv6 (`ip route show table T`).
    ///
    /// # Errors
    ///
    /// As [`links`](Netlink::links).
    pub fn table_routes(&self, table: u32) -> Result<Vec<Route>> {
        Ok(self
            .all_routes()?
            .into_iter()
            .filter(|r| r.table == table)
            .collect())
    }

    /// The routes of every table, IPv4 and IPv6 (`ip route show table all`).
    ///
    /// # Errors
    ///
    /// As [`links`](Netlink::links).
    pub fn all_routes(&self) -> Result<Vec<Route>> {
        let mut all = Vec::new();
        for v6 in [false, true] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = family(v6);
            let replies = self.request(
                "RTM_GETROUTE",
                RouteNetlinkMessage::GetRoute(msg),
                NLM_F_DUMP,
            )?;
            all.extend(replies.into_iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => Route::from_message(&r),
                _ => None,
            }));
        }
        Ok(all)
    }

    /// Adds a route to `dst` through link `index` in the main table (RTM_NEWROUTE, as
    /// `ip route add DST dev LINK [via GATEWAY]`): a link-scope route without a gateway.
    ///
    /// # Errors
    ///
    /// As [`add_route_spec`](Netlink::add_route_spec).
    pub fn add_route(&self, index: u32, dst: Cidr, gateway: Option<IpAddr>) -> Result<()> {
        self.add_route_spec(&RouteSpec {
            gateway,
            ..RouteSpec::new(dst, index)
        })
    }

    /// Adds a route (RTM_NEWROUTE with NLM_F_EXCL): never replaces one.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::AlreadyExists`] if a route to the same destination with the same
    /// metric is in the table (whatever its link), [`ErrorKind::NotFound`] for an unknown
    /// link, [`ErrorKind::PermissionDenied`] without CAP_NET_ADMIN; the kernel's other
    /// refusals (an unreachable gateway) as [`ErrorKind::Os`].
    pub fn add_route_spec(&self, spec: &RouteSpec) -> Result<()> {
        self.request(
            "RTM_NEWROUTE",
            RouteNetlinkMessage::NewRoute(spec.message()),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
        .map_err(|e| {
            if e.kind() == ErrorKind::AlreadyExists {
                e.with_detail(format!(
                    "a route to {} is in table {} already",
                    spec.dst, spec.table
                ))
            } else {
                e
            }
        })
    }

    /// Deletes the route to `dst` through link `index` from the main table (RTM_DELROUTE).
    ///
    /// # Errors
    ///
    /// As [`del_route_spec`](Netlink::del_route_spec).
    pub fn del_route(&self, index: u32, dst: Cidr) -> Result<()> {
        self.del_route_spec(&RouteSpec::new(dst, index))
    }

    /// Deletes a route (RTM_DELROUTE): the one of that destination, link and table (and
    /// metric, if given).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] if there is none, [`ErrorKind::PermissionDenied`] without
    /// CAP_NET_ADMIN.
    pub fn del_route_spec(&self, spec: &RouteSpec) -> Result<()> {
        self.request(
            "RTM_DELROUTE",
            RouteNetlinkMessage::DelRoute(spec.message()),
            NLM_F_ACK,
        )
        .map(drop)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ESRCH) {
                Error::new(
                    ErrorKind::NotFound,
                    "RTM_DELROUTE",
                    format!("no route to {} in table {}", spec.dst, spec.table),
                )
            } else {
                e
            }
        })
    }

    /// The rules, IPv4 and IPv6 (`ip rule show`, `ip -6 rule show`), in priority order
    /// (IPv4 first where two share a priority).
    ///
    /// # Errors
    ///
    /// As [`links`](Netlink::links).
    pub fn rules(&self) -> Result<Vec<Rule>> {
        let mut all = Vec::new();
        for v6 in [false, true] {
            let mut msg = RuleMessage::default();
            msg.header.family = family(v6);
            let replies =
                self.request("RTM_GETRULE", RouteNetlinkMessage::GetRule(msg), NLM_F_DUMP)?;
            all.extend(replies.into_iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewRule(r) => Rule::from_message(&r),
                _ => None,
            }));
        }
        // Stable: each family's dump comes in priority order already.
        all.sort_by_key(|r| r.priority.unwrap_or(0));
        Ok(all)
    }

    /// Adds a rule (RTM_NEWRULE with NLM_F_EXCL: an identical rule is not added twice).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::AlreadyExists`] if the same rule is there, [`ErrorKind::PermissionDenied`]
    /// without CAP_NET_ADMIN; [`ErrorKind::Unsupported`] for IPv6 rules on a kernel without
    /// IPv6.
    pub fn add_rule(&self, rule: &Rule) -> Result<()> {
        self.request(
            "RTM_NEWRULE",
            RouteNetlinkMessage::NewRule(rule.message()),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EAFNOSUPPORT) {
                Error::new(
                    ErrorKind::Unsupported,
                    "RTM_NEWRULE",
                    "IPv6 is off in this kernel",
                )
            } else {
                e
            }
        })
    }

    /// Deletes the first rule that matches `rule`'s selectors and table (RTM_DELRULE).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] if none does, [`ErrorKind::PermissionDenied`] without
    /// CAP_NET_ADMIN.
    pub fn del_rule(&self, rule: &Rule) -> Result<()> {
        self.request(
            "RTM_DELRULE",
            RouteNetlinkMessage::DelRule(rule.message()),
            NLM_F_ACK,
        )
        .map(drop)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOENT) {
                Error::new(ErrorKind::NotFound, "RTM_DELRULE", "no such rule")
            } else {
                e
            }
        })
    }
}
