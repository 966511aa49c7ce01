//! The kernel's view: links (`LinkInfo`), TUN/TAP attributes (`TunInfo`), addresses
//! (`Address`), parsed from rtnetlink messages.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::Nla;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
};

use crate::addr::{Cidr, MacAddr};
use crate::flags::{Flags, Kind};

/// The kernel's view of a TUN/TAP device: the `IFLA_TUN_*` attributes of `ip -d link`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunInfo {
    /// tun or tap (`IFLA_TUN_TYPE`).
    pub kind: Kind,
    /// Whether packets carry the 4-byte packet-information header (`IFLA_TUN_PI`).
    pub pi: bool,
    /// Whether packets carry a virtio-net header (`IFLA_TUN_VNET_HDR`).
    pub vnet_hdr: bool,
    /// Whether the device outlives its fds (`IFLA_TUN_PERSIST`).
    pub persist: bool,
    /// Whether the device takes several queues (`IFLA_TUN_MULTI_QUEUE`).
    pub multi_queue: bool,
    /// Attached queues of a multi-queue device (`IFLA_TUN_NUM_QUEUES`); `None` for a
    /// single-queue device, for which the kernel does not report it.
    pub queues: Option<u32>,
    /// Detached queues of a multi-queue device (`IFLA_TUN_NUM_DISABLED_QUEUES`).
    pub disabled_queues: Option<u32>,
    /// The uid allowed to attach without CAP_NET_ADMIN (`IFLA_TUN_OWNER`), if set.
    pub owner: Option<u32>,
    /// The gid allowed to attach without CAP_NET_ADMIN (`IFLA_TUN_GROUP`), if set.
    pub group: Option<u32>,
}

impl TunInfo {
    /// The TUNSETIFF flags of the device as the kernel describes it: `TUN` or `TAP`,
    /// `NO_PI` unless packets carry the header, `VNET_HDR`, `MULTI_QUEUE`, and `PERSIST`.
    /// The one place the `IFLA_TUN_*` view becomes flags (TUNGETIFF cannot say `NO_PI`: it
    /// reports that bit as `IFF_NOFILTER`).
    pub fn flags(&self) -> Flags {
        let mut flags = self.kind.flag();
        for (on, flag) in [
            (!self.pi, Flags::NO_PI),
            (self.vnet_hdr, Flags::VNET_HDR),
            (self.multi_queue, Flags::MULTI_QUEUE),
            (self.persist, Flags::PERSIST),
        ] {
            if on {
                flags |= flag;
            }
        }
        flags
    }

    fn parse(nlas: &[netlink_packet_route::link::InfoTun]) -> Option<TunInfo> {
        let mut info = TunInfo {
            kind: Kind::Tun,
            pi: false,
            vnet_hdr: false,
            persist: false,
            multi_queue: false,
            queues: None,
            disabled_queues: None,
            owner: None,
            group: None,
        };
        let mut have_type = false;
        for nla in nlas {
            let mut value = vec![0u8; nla.value_len()];
            nla.emit_value(&mut value);
            let byte = value.first().copied().unwrap_or(0);
            let word = value
                .get(..4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
            match nla.kind() {
                1 => info.owner = word,
                2 => info.group = word,
                3 => {
                    have_type = true;
                    info.kind = if u16::from(byte) == Kind::Tap.flag().bits() {
                        Kind::Tap
                    } else {
                        Kind::Tun
                    };
                }
                4 => info.pi = byte != 0,
                5 => info.vnet_hdr = byte != 0,
                6 => info.persist = byte != 0,
                7 => info.multi_queue = byte != 0,
                8 => info.queues = word,
                9 => info.disabled_queues = word,
                _ => {}
            }
        }
        have_type.then_some(info)
    }
}

/// The kernel's view of a network link (RTM_GETLINK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// `IFF_*` interface flags (`UP`, `POINTOPOINT`, `LOWER_UP`, ...).
    pub flags: u32,
    /// MTU.
    pub mtu: u32,
    /// Smallest MTU the device accepts (`IFLA_MIN_MTU`), if reported.
    pub min_mtu: Option<u32>,
    /// Largest MTU the device accepts (`IFLA_MAX_MTU`), if reported.
    pub max_mtu: Option<u32>,
    /// Transmit queue length.
    pub txqueuelen: u32,
    /// The link-layer address (a tap's MAC), if the device has one.
    pub mac: Option<MacAddr>,
    /// Carrier (`IFLA_CARRIER`).
    pub carrier: Option<bool>,
    /// Operational state as the kernel names it (`UP`, `DOWN`, `UNKNOWN`, ...).
    pub operstate: String,
    /// The link kind (`IFLA_INFO_KIND`), e.g. `tun` (for tun and tap), `veth`.
    pub link_kind: Option<String>,
    /// The TUN/TAP attributes, for TUN/TAP devices.
    pub tun: Option<TunInfo>,
    /// The interface alias (`IFLA_IFALIAS`), if set.
    pub alias: Option<String>,
    /// The master device's index (`IFLA_MASTER`), e.g. the bridge this link is a port of.
    pub master: Option<u32>,
    /// Whether IPv6 works on the link: `Some(false)` when `disable_ipv6` is set for it,
    /// `None` when the kernel reports no IPv6 state (IPv6 off in the whole kernel).
    pub ipv6: Option<bool>,
}

/// Names of the `IFF_*` interface flags, in the order `ip link` prints them.
const IFF_NAMES: [(u32, &str); 13] = [
    (libc::IFF_LOOPBACK as u32, "LOOPBACK"),
    (libc::IFF_BROADCAST as u32, "BROADCAST"),
    (libc::IFF_POINTOPOINT as u32, "POINTOPOINT"),
    (libc::IFF_MULTICAST as u32, "MULTICAST"),
    (libc::IFF_NOARP as u32, "NOARP"),
    (libc::IFF_NOTRAILERS as u32, "NOTRAILERS"),
    (libc::IFF_PROMISC as u32, "PROMISC"),
    (libc::IFF_ALLMULTI as u32, "ALLMULTI"),
    (libc::IFF_DYNAMIC as u32, "DYNAMIC"),
    (libc::IFF_UP as u32, "UP"),
    (libc::IFF_RUNNING as u32, "RUNNING"),
    (0x10000, "LOWER_UP"),
    (0x20000, "DORMANT"),
];

impl LinkInfo {
    pub(super) fn from_message(msg: &LinkMessage) -> LinkInfo {
        let mut info = LinkInfo {
            index: msg.header.index,
            name: String::new(),
            flags: msg.header.flags.bits(),
            mtu: 0,
            min_mtu: None,
            max_mtu: None,
            txqueuelen: 0,
            mac: None,
            carrier: None,
            operstate: String::from("UNKNOWN"),
            link_kind: None,
            tun: None,
            alias: None,
            master: None,
            ipv6: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => info.name = n.clone(),
                LinkAttribute::Mtu(m) => info.mtu = *m,
                LinkAttribute::MinMtu(m) => info.min_mtu = Some(*m),
                LinkAttribute::MaxMtu(m) => info.max_mtu = Some(*m),
                LinkAttribute::TxQueueLen(q) => info.txqueuelen = *q,
                LinkAttribute::Address(a) => {
                    if let Ok(mac) = <[u8; 6]>::try_from(a.as_slice()) {
                        info.mac = Some(MacAddr(mac));
                    }
                }
                LinkAttribute::Carrier(c) => info.carrier = Some(*c != 0),
                LinkAttribute::IfAlias(a) => info.alias = Some(a.clone()),
                LinkAttribute::Controller(m) => info.master = Some(*m),
                LinkAttribute::AfSpecUnspec(specs) => {
                    use netlink_packet_route::link::{AfSpecInet6, AfSpecUnspec};
                    for spec in specs {
                        if let AfSpecUnspec::Inet6(items) = spec {
                            for item in items {
                                if let AfSpecInet6::DevConf(conf) = item {
                                    info.ipv6 = Some(conf.disable_ipv6 == 0);
                                }
                            }
                        }
                    }
                }
                LinkAttribute::OperState(s) => info.operstate = s.to_string().to_uppercase(),
                LinkAttribute::LinkInfo(infos) => {
                    for item in infos {
                        match item {
                            NlLinkInfo::Kind(kind) => info.link_kind = Some(kind.to_string()),
                            NlLinkInfo::Data(InfoData::Tun(nlas)) => {
                                info.tun = TunInfo::parse(nlas)
                            }
                            _ => {}
                        }
                    }
                    if infos
                        .iter()
                        .any(|i| matches!(i, NlLinkInfo::Kind(InfoKind::Tun)))
                        && info.tun.is_none()
                    {
                        // Old kernels send no IFLA_INFO_DATA; the kind alone still says "tun".
                        info.link_kind = Some("tun".to_string());
                    }
                }
                _ => {}
            }
        }
        info
    }

    /// Whether the interface is administratively up (`IFF_UP`).
    pub fn is_up(&self) -> bool {
        self.flags & LinkFlags::Up.bits() != 0
    }

    /// Whether the interface is point-to-point (`IFF_POINTOPOINT`).
    pub fn is_pointopoint(&self) -> bool {
        self.flags & LinkFlags::Pointopoint.bits() != 0
    }

    /// The names of the set interface flags, as `ip link` prints them.
    ///
    /// As `ip link` does, an UP link without carrier also shows `NO-CARRIER`.
    pub fn flag_names(&self) -> Vec<&'static str> {
        let up = libc::IFF_UP as u32;
        let lower_up = 0x10000;
        let mut names: Vec<&'static str> = Vec::new();
        if self.flags & up != 0 && self.flags & lower_up == 0 {
            names.push("NO-CARRIER");
        }
        names.extend(
            IFF_NAMES
                .iter()
                .filter(|(bit, _)| self.flags & bit != 0)
                .map(|(_, n)| *n),
        );
        names
    }
}

/// A route (RTM_GETROUTE): destination, the link it goes out of, an optional gateway, its
/// table, metric and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// The destination network.
    pub dst: Cidr,
    /// The outgoing link's index (0 if the kernel names none, e.g. a multipath route).
    pub index: u32,
    /// The next hop, if the route has one.
    pub gateway: Option<IpAddr>,
    /// The routing table (254 is main).
    pub table: u32,
    /// The metric (`RTA_PRIORITY`; 0 when none is given).
    pub metric: u32,
    /// Who made it (`rtm_protocol`: 2 the kernel, 3 boot, 4 static, ...).
    pub protocol: u8,
    /// What it does with what it matches.
    pub kind: RouteKind,
}

/// What a route does with the packets it matches (`rtm_type`; the kinds this crate makes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RouteKind {
    /// Sends them out of its link (`ip route add DST dev LINK`).
    #[default]
    Unicast,
    /// Refuses them with "network unreachable" (`ip route add unreachable DST`).
    Unreachable,
    /// Any other type (local, broadcast, blackhole, ...), as listed.
    Other(u8),
}

impl Route {
    pub(super) fn from_message(msg: &netlink_packet_route::route::RouteMessage) -> Option<Route> {
        use netlink_packet_route::route::{RouteAddress, RouteAttribute};
        let ip = |a: &RouteAddress| match a {
            RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
            RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
            _ => None,
        };
        let mut dst = None;
        let mut route = Route {
            dst: Cidr::host_default(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            index: 0,
            gateway: None,
            table: u32::from(msg.header.table),
            metric: 0,
            protocol: u8::from(msg.header.protocol),
            kind: match msg.header.kind {
                netlink_packet_route::route::RouteType::Unicast => RouteKind::Unicast,
                netlink_packet_route::route::RouteType::Unreachable => RouteKind::Unreachable,
                other => RouteKind::Other(u8::from(other)),
            },
        };
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(a) => dst = ip(a),
                RouteAttribute::Oif(i) => route.index = *i,
                RouteAttribute::Gateway(a) => route.gateway = ip(a),
                RouteAttribute::Table(t) => route.table = *t,
                RouteAttribute::Priority(p) => route.metric = *p,
                _ => {}
            }
        }
        let unspecified = match msg.header.address_family {
            netlink_packet_route::AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            netlink_packet_route::AddressFamily::Inet6 => {
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            }
            _ => return None,
        };
        route.dst = Cidr::new(
            dst.unwrap_or(unspecified),
            msg.header.destination_prefix_length,
        )
        .ok()?;
        Some(route)
    }
}

/// An address on a link, with its optional point-to-point peer and IPv4 broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address {
    /// Interface index the address is on (0 in a request: filled in by the caller).
    pub index: u32,
    /// The local address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
    /// Point-to-point peer (the original's `dstaddr`).
    pub peer: Option<IpAddr>,
    /// IPv4 broadcast address.
    pub broadcast: Option<Ipv4Addr>,
}

impl Address {
    /// An address with no peer and, for IPv4 prefixes up to /30, the network's broadcast
    /// address (the original's "default netmask and broadcast").
    pub fn new(cidr: Cidr) -> Address {
        Address {
            index: 0,
            addr: cidr.addr(),
            prefix: cidr.prefix(),
            peer: None,
            broadcast: cidr.broadcast(),
        }
    }

    /// A point-to-point address: `local` as a host address (/32 or /128) paired with `peer`
    /// (what `ip addr add LOCAL peer PEER` makes, and what the original's `dstaddr` meant).
    pub fn point_to_point(local: IpAddr, peer: IpAddr) -> Address {
        Address {
            index: 0,
            addr: local,
            prefix: if local.is_ipv4() { 32 } else { 128 },
            peer: Some(peer),
            broadcast: None,
        }
    }

    /// The local address with its prefix.
    pub fn cidr(&self) -> Cidr {
        Cidr::new(self.addr, self.prefix).unwrap_or_else(|_| Cidr::host_default(self.addr))
    }

    /// Whether this is an IPv6 link-local address (fe80::/10), which the kernel manages.
    pub fn is_link_local(&self) -> bool {
        matches!(self.addr, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
    }

    pub(super) fn from_message(msg: &AddressMessage) -> Option<Address> {
        let mut local = None;
        let mut address = None;
        let mut broadcast = None;
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(a) => local = Some(*a),
                AddressAttribute::Address(a) => address = Some(*a),
                AddressAttribute::Broadcast(b) => broadcast = Some(*b),
                _ => {}
            }
        }
        let (addr, peer) = match (local, address) {
            (Some(l), Some(a)) if l != a => (l, Some(a)),
            (Some(l), _) => (l, None),
            (None, Some(a)) => (a, None),
            (None, None) => return None,
        };
        Some(Address {
            index: msg.header.index,
            addr,
            prefix: msg.header.prefix_len,
            peer,
            broadcast,
        })
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.peer {
            Some(peer) => write!(f, "{} peer {}/{}", self.addr, peer, self.prefix)?,
            None => write!(f, "{}/{}", self.addr, self.prefix)?,
        }
        if let Some(brd) = self.broadcast {
            write!(f, " brd {brd}")?;
        }
        Ok(())
    }
}
