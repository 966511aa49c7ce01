//! Link and address configuration over rtnetlink (synchronous), and the kernel's view of
//! TUN/TAP devices (`IFLA_TUN_*`), including devices this process did not open.
//!
//! Messages are built and parsed with the rust-netlink crates (`netlink-packet-route`,
//! `netlink-sys`); nothing runs `ip`, `ifconfig` or `sudo`. A [`Netlink`] socket is bound to
//! the namespace it was opened in, so a [`Link`] configures a device in another namespace
//! without moving the process.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla, NlasIterator, NLM_F_ACK,
    NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::addr::{Cidr, MacAddr};
use crate::error::{Error, ErrorKind, Result};
use crate::flags::Kind;
use crate::name;
use crate::netns::Namespace;

/// A synchronous rtnetlink socket, bound to the namespace it was opened in.
///
/// Requests are serialised by an internal mutex, so a `Netlink` can be shared between threads.
#[derive(Debug)]
pub struct Netlink {
    inner: Mutex<Conn>,
    namespace: Namespace,
}

#[derive(Debug)]
struct Conn {
    socket: Socket,
    seq: u32,
}

impl Conn {
    /// One request/response exchange. Returns the replies and whether a dump was
    /// interrupted.
    fn exchange(
        &mut self,
        op: &str,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(Vec<RouteNetlinkMessage>, bool)> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(|e| Error::os(op, e))?;

        let mut replies = Vec::new();
        let mut interrupted = false;
        // Bounded: a dump ends with DONE, a request with one ACK or error; stop after a
        // generous number of datagrams rather than spin.
        for _ in 0..100_000 {
            let (data, _) = self.socket.recv_from_full().map_err(|e| Error::os(op, e))?;
            let mut offset = 0;
            while let Ok(raw) = NetlinkBuffer::new_checked(&data[offset..]) {
                let len = raw.length() as usize;
                let (msg_seq, msg_flags) = (raw.sequence_number(), raw.flags());
                let chunk = &data[offset..offset + len];
                offset += (len + 3) & !3;
                if msg_seq != seq {
                    continue;
                }
                interrupted |= msg_flags & NLM_F_DUMP_INTR != 0;
                // A message this crate cannot decode (a newer kernel's attribute layout) is
                // skipped in a dump rather than failing the whole listing.
                let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(chunk) else {
                    continue;
                };
                match msg.payload {
                    NetlinkPayload::Done(done) if done.code < 0 => {
                        return Err(Error::os(op, std::io::Error::from_raw_os_error(-done.code)));
                    }
                    NetlinkPayload::Done(_) => return Ok((replies, interrupted)),
                    NetlinkPayload::Error(err) => {
                        if err.code.is_none() {
                            return Ok((replies, interrupted));
                        }
                        let os = Error::os(op, err.to_io());
                        return Err(match ext_ack_message(&err.header, msg_flags) {
                            Some(text) => {
                                let base = os.to_string();
                                let cause = base.rsplit(": ").next().unwrap_or(&base).to_string();
                                os.with_detail(format!("{text} ({cause})"))
                            }
                            None => os,
                        });
                    }
                    NetlinkPayload::InnerMessage(inner) => {
                        replies.push(inner);
                        if flags & NLM_F_DUMP == 0 && flags & NLM_F_ACK == 0 {
                            return Ok((replies, interrupted));
                        }
                    }
                    _ => {}
                }
                if offset >= data.len() {
                    break;
                }
            }
        }
        Err(Error::new(ErrorKind::Os, op, "netlink reply never ended"))
    }
}

impl Netlink {
    /// Opens a close-on-exec rtnetlink socket in the caller's namespace.
    pub fn open() -> Result<Netlink> {
        Netlink::open_in(&Namespace::Current)
    }

    /// Opens an rtnetlink socket inside `ns` (on a helper thread; see [`Namespace::run`]).
    pub fn open_in(ns: &Namespace) -> Result<Netlink> {
        ns.run(|| Netlink::open_here(ns.clone()))?
    }

    /// Wraps a socket opened elsewhere (by the privileged helper) in `ns`.
    pub(crate) fn from_socket(socket: Socket, ns: Namespace) -> Netlink {
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        Netlink {
            inner: Mutex::new(Conn { socket, seq: 0 }),
            namespace: ns,
        }
    }

    /// A duplicate of the socket's fd (close-on-exec), to hand to another process.
    pub fn socket_fd(&self) -> Result<OwnedFd> {
        let conn = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        conn.socket
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::os("dup", e))
    }

    /// Opens the socket on the calling thread, which must already be in `ns`.
    pub(crate) fn open_here(ns: Namespace) -> Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| Error::os("netlink socket", e))?;
        socket
            .bind_auto()
            .map_err(|e| Error::os("netlink bind", e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| Error::os("netlink connect", e))?;
        // Error messages from the kernel ("mtu greater than device maximum") are worth having.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        Ok(Netlink {
            inner: Mutex::new(Conn { socket, seq: 0 }),
            namespace: ns,
        })
    }

    /// The namespace this socket configures.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// Sends one request and collects the replies until ACK or DONE. `op` names the request
    /// in errors.
    /// Sends one request and collects the replies until ACK or DONE; a dump the kernel
    /// marks interrupted (NLM_F_DUMP_INTR: the table changed meanwhile) is retried, up to
    /// three times. `op` names the request in errors.
    fn request(
        &self,
        op: &str,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let mut conn = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for _ in 0..3 {
            match conn.exchange(op, message.clone(), flags)? {
                (replies, false) => return Ok(replies),
                (_, true) => continue,
            }
        }
        Err(Error::new(
            ErrorKind::Os,
            op,
            "the kernel kept interrupting the dump (the table changes too fast)",
        ))
    }

    fn links_matching(&self, request: LinkMessage, dump: bool) -> Result<Vec<LinkInfo>> {
        let flags = if dump { NLM_F_DUMP } else { 0 };
        let replies = self.request("RTM_GETLINK", RouteNetlinkMessage::GetLink(request), flags)?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => Some(LinkInfo::from_message(&link)),
                _ => None,
            })
            .collect())
    }

    /// Every link in the namespace (RTM_GETLINK dump).
    pub fn links(&self) -> Result<Vec<LinkInfo>> {
        self.links_matching(LinkMessage::default(), true)
    }

    /// Every TUN/TAP device in the namespace, with its `IFLA_TUN_*` attributes.
    pub fn tun_links(&self) -> Result<Vec<LinkInfo>> {
        Ok(self
            .links()?
            .into_iter()
            .filter(|l| l.tun.is_some())
            .collect())
    }

    /// One link by name. [`ErrorKind::NotFound`] if there is none.
    pub fn link_by_name(&self, name: &str) -> Result<LinkInfo> {
        name::validate_existing(name)?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.links_matching(msg, false)
            .and_then(|mut v| {
                v.pop().ok_or_else(|| {
                    Error::os(
                        "RTM_GETLINK",
                        std::io::Error::from_raw_os_error(libc::ENODEV),
                    )
                })
            })
            .map_err(|e| {
                not_found_detail(
                    e,
                    &format!("no device {name} in {}", self.namespace.describe()),
                )
                .on_default(name)
            })
    }

    /// One link by index. [`ErrorKind::NotFound`] if there is none.
    pub fn link_by_index(&self, index: u32) -> Result<LinkInfo> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.links_matching(msg, false)
            .and_then(|mut v| {
                v.pop().ok_or_else(|| {
                    Error::os(
                        "RTM_GETLINK",
                        std::io::Error::from_raw_os_error(libc::ENODEV),
                    )
                })
            })
            .map_err(|e| {
                not_found_detail(
                    e,
                    &format!(
                        "no device with index {index} in {}",
                        self.namespace.describe()
                    ),
                )
            })
    }

    fn set_link(&self, op: &str, index: u32, edit: impl FnOnce(&mut LinkMessage)) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        edit(&mut msg);
        self.request(op, RouteNetlinkMessage::SetLink(msg), NLM_F_ACK)
            .map(drop)
    }

    /// Moves a link into the namespace `target` (RTM_SETLINK with `IFLA_NET_NS_FD`) and
    /// names it `name` there, which may be a template (`tun%d`): the kernel then picks the
    /// first free name in `target`. The kernel brings the link down and drops its addresses
    /// on the way. `EEXIST` if `name` is taken there.
    pub fn move_link(&self, index: u32, target: BorrowedFd<'_>, name: &str) -> Result<()> {
        use std::os::fd::AsRawFd;
        self.set_link("move to namespace", index, |m| {
            m.attributes
                .push(LinkAttribute::NetNsFd(target.as_raw_fd()));
            m.attributes.push(LinkAttribute::IfName(name.to_string()));
        })
    }

    /// Deletes a link (RTM_DELLINK). Works for TUN/TAP devices, persistent or not.
    pub fn delete_link(&self, index: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request("RTM_DELLINK", RouteNetlinkMessage::DelLink(msg), NLM_F_ACK)
            .map(drop)
    }

    /// The addresses of one link (`index`), or of every link (`None`).
    pub fn addresses(&self, index: Option<u32>) -> Result<Vec<Address>> {
        let replies = self.request(
            "RTM_GETADDR",
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => Address::from_message(&a),
                _ => None,
            })
            .filter(|a| index.is_none_or(|i| a.index == i))
            .collect())
    }

    fn address_message(index: u32, spec: &Address) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = spec.prefix;
        msg.header.scope = AddressScope::Universe;
        match spec.addr {
            IpAddr::V4(_) => {
                msg.header.family = AddressFamily::Inet;
                msg.attributes.push(AddressAttribute::Local(spec.addr));
                msg.attributes
                    .push(AddressAttribute::Address(spec.peer.unwrap_or(spec.addr)));
                if let Some(brd) = spec.broadcast {
                    msg.attributes.push(AddressAttribute::Broadcast(brd));
                }
            }
            IpAddr::V6(_) => {
                msg.header.family = AddressFamily::Inet6;
                match spec.peer {
                    Some(peer) => {
                        msg.attributes.push(AddressAttribute::Local(spec.addr));
                        msg.attributes.push(AddressAttribute::Address(peer));
                    }
                    None => msg.attributes.push(AddressAttribute::Address(spec.addr)),
                }
            }
        }
        msg
    }

    /// Adds an address (RTM_NEWADDR with NLM_F_EXCL): [`ErrorKind::AlreadyExists`] if present.
    pub fn add_address(&self, index: u32, spec: &Address) -> Result<()> {
        let msg = Netlink::address_message(index, spec);
        self.request(
            "RTM_NEWADDR",
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
        .map_err(|e| {
            if e.kind() == ErrorKind::AlreadyExists {
                e.with_detail(format!("{} is already assigned", spec.cidr()))
            } else {
                e
            }
        })
    }

    /// Removes an address (RTM_DELADDR).
    pub fn del_address(&self, index: u32, spec: &Address) -> Result<()> {
        let msg = Netlink::address_message(index, spec);
        self.request(
            "RTM_DELADDR",
            RouteNetlinkMessage::DelAddress(msg),
            NLM_F_ACK,
        )
        .map(drop)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
                Error::new(
                    ErrorKind::NotFound,
                    "RTM_DELADDR",
                    format!("{} is not assigned", spec.cidr()),
                )
            } else {
                e
            }
        })
    }
}

/// Turns an ENODEV/ENOENT from a lookup into a readable "not found" message.
fn not_found_detail(err: Error, detail: &str) -> Error {
    if err.kind() == ErrorKind::NotFound {
        err.with_detail(detail.to_string())
    } else {
        err
    }
}

/// The `NLMSGERR_ATTR_MSG` text of an extended ACK, if the kernel sent one. `payload` is what
/// follows the error code: the original request (only its header when NLM_F_CAPPED), then
/// the TLVs (present when NLM_F_ACK_TLVS).
fn ext_ack_message(payload: &[u8], flags: u16) -> Option<String> {
    const NLMSG_HDRLEN: usize = 16;
    const NLMSGERR_ATTR_MSG: u16 = 1;
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let skip = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        let len = payload.get(..4)?;
        (u32::from_ne_bytes([len[0], len[1], len[2], len[3]]) as usize + 3) & !3
    };
    let tlvs = payload.get(skip..)?;
    NlasIterator::new(tlvs)
        .filter_map(|nla| nla.ok())
        .find_map(|nla| {
            (nla.kind() == NLMSGERR_ATTR_MSG).then(|| {
                let value = nla.value();
                let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
                String::from_utf8_lossy(&value[..end]).into_owned()
            })
        })
}

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
    fn from_message(msg: &LinkMessage) -> LinkInfo {
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
    pub fn flag_names(&self) -> Vec<&'static str> {
        IFF_NAMES
            .iter()
            .filter(|(bit, _)| self.flags & bit != 0)
            .map(|(_, n)| *n)
            .collect()
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
    /// Point-to-point peer (the seed's `dstaddr`).
    pub peer: Option<IpAddr>,
    /// IPv4 broadcast address.
    pub broadcast: Option<Ipv4Addr>,
}

impl Address {
    /// An address with no peer and, for IPv4 prefixes up to /30, the network's broadcast
    /// address (the seed's "default netmask and broadcast").
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
    /// (what `ip addr add LOCAL peer PEER` makes, and what the seed's `dstaddr` meant).
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

    fn from_message(msg: &AddressMessage) -> Option<Address> {
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

/// One network interface, identified by index inside a namespace, configured over rtnetlink.
///
/// Every method is one or two netlink round trips; errors name the interface.
#[derive(Debug)]
pub struct Link {
    netlink: Netlink,
    index: u32,
    name: String,
}

impl Link {
    /// Finds the interface `name` in namespace `ns`.
    pub fn by_name(ns: &Namespace, name: &str) -> Result<Link> {
        name::validate_existing(name)?;
        let netlink = Netlink::open_in(ns).map_err(|e| e.on_default(name))?;
        let info = netlink.link_by_name(name)?;
        Ok(Link {
            netlink,
            index: info.index,
            name: info.name,
        })
    }

    /// A link handle over an open netlink socket.
    pub fn from_index(netlink: Netlink, index: u32, name: String) -> Link {
        Link {
            netlink,
            index,
            name,
        }
    }

    /// The interface index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The interface name as known when the handle was made.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The netlink socket (and so the namespace) this link is configured through.
    pub fn netlink(&self) -> &Netlink {
        &self.netlink
    }

    fn named(&self, err: Error) -> Error {
        err.on_default(&self.name)
    }

    /// The kernel's current view of the link.
    pub fn info(&self) -> Result<LinkInfo> {
        self.netlink
            .link_by_index(self.index)
            .map_err(|e| self.named(e))
    }

    /// Sets `IFF_UP` (RTM_SETLINK).
    pub fn up(&self) -> Result<()> {
        self.netlink
            .set_link("set up", self.index, |m| {
                m.header.flags = LinkFlags::Up;
                m.header.change_mask = LinkFlags::Up;
            })
            .map_err(|e| self.named(e))
    }

    /// Clears `IFF_UP` (RTM_SETLINK); addresses stay.
    pub fn down(&self) -> Result<()> {
        self.netlink
            .set_link("set down", self.index, |m| {
                m.header.flags = LinkFlags::empty();
                m.header.change_mask = LinkFlags::Up;
            })
            .map_err(|e| self.named(e))
    }

    /// The current MTU.
    pub fn mtu(&self) -> Result<u32> {
        Ok(self.info()?.mtu)
    }

    /// Sets the MTU (`IFLA_MTU`), after checking it against the device's own range.
    pub fn set_mtu(&self, mtu: u32) -> Result<()> {
        let info = self.info()?;
        let (min, max) = (info.min_mtu.unwrap_or(68), info.max_mtu.unwrap_or(65535));
        if mtu < min || mtu > max {
            return Err(self.named(Error::new(
                ErrorKind::InvalidInput,
                "set mtu",
                format!("MTU {mtu} is outside the device's range {min}..={max}"),
            )));
        }
        self.netlink
            .set_link("set mtu", self.index, |m| {
                m.attributes.push(LinkAttribute::Mtu(mtu))
            })
            .map_err(|e| self.named(e))
    }

    /// Sets the link-layer (MAC) address of a tap device (`IFLA_ADDRESS`).
    pub fn set_mac(&self, mac: MacAddr) -> Result<()> {
        if !mac.is_valid_unicast() {
            return Err(self.named(Error::new(
                ErrorKind::InvalidInput,
                "set mac",
                format!("{mac} is a multicast or all-zero address"),
            )));
        }
        let info = self.info()?;
        if info.mac.is_none() {
            return Err(self.named(Error::new(
                ErrorKind::Unsupported,
                "set mac",
                "the device has no link-layer address (a tun device; only tap devices have a MAC)",
            )));
        }
        self.netlink
            .set_link("set mac", self.index, |m| {
                m.attributes.push(LinkAttribute::Address(mac.0.to_vec()))
            })
            .map_err(|e| self.named(e))
    }

    /// Sets the transmit queue length (`IFLA_TXQLEN`).
    pub fn set_txqueuelen(&self, len: u32) -> Result<()> {
        self.netlink
            .set_link("set txqueuelen", self.index, |m| {
                m.attributes.push(LinkAttribute::TxQueueLen(len))
            })
            .map_err(|e| self.named(e))
    }

    /// Sets the interface alias (`IFLA_IFALIAS`; changing it needs CAP_NET_ADMIN).
    pub fn set_alias(&self, alias: &str) -> Result<()> {
        self.netlink
            .set_link("set alias", self.index, |m| {
                m.attributes.push(LinkAttribute::IfAlias(alias.to_string()))
            })
            .map_err(|e| self.named(e))
    }

    /// Sets the most segments the kernel puts in one GSO packet for this device
    /// (`IFLA_GSO_MAX_SEGS`).
    pub fn set_gso_max_segs(&self, segs: u32) -> Result<()> {
        self.netlink
            .set_link("set gso_max_segs", self.index, |m| {
                m.attributes.push(LinkAttribute::GsoMaxSegs(segs))
            })
            .map_err(|e| self.named(e))
    }

    /// Sets the carrier (`IFLA_CARRIER`; the tun driver implements it like TUNSETCARRIER).
    /// The kernel turns the carrier of a TUN/TAP device on only while some process has it
    /// open (a queue attached); otherwise this fails with [`ErrorKind::PermissionDenied`].
    pub fn set_carrier(&self, carrier: bool) -> Result<()> {
        self.netlink
            .set_link("set carrier", self.index, |m| {
                m.attributes.push(LinkAttribute::Carrier(carrier as u8))
            })
            .map_err(|e| {
                if carrier && e.raw_os_error() == Some(libc::EPERM) {
                    e.with_detail(
                        "carrier on needs a process attached to the device, and none is (EPERM)",
                    )
                } else {
                    e
                }
            })
            .map_err(|e| self.named(e))
    }

    /// Every address on the link.
    pub fn addresses(&self) -> Result<Vec<Address>> {
        self.netlink
            .addresses(Some(self.index))
            .map_err(|e| self.named(e))
    }

    /// Adds an address with its network's default broadcast (IPv4 up to /30). IPv6 needs an
    /// MTU of at least 1280, which is checked first.
    pub fn add_address(&self, cidr: Cidr) -> Result<()> {
        self.add(&Address::new(cidr))
    }

    /// Adds an address with every attribute of `spec` (peer, broadcast).
    pub fn add(&self, spec: &Address) -> Result<()> {
        if spec.addr.is_ipv6() {
            let mtu = self.mtu()?;
            if mtu < 1280 {
                return Err(self.named(Error::new(
                    ErrorKind::InvalidInput,
                    "add address",
                    format!("IPv6 needs an MTU of at least 1280; the device has {mtu}"),
                )));
            }
        }
        self.netlink
            .add_address(self.index, spec)
            .map_err(|e| self.named(e))
    }

    /// Removes an address (matched by address and prefix).
    pub fn del_address(&self, cidr: Cidr) -> Result<()> {
        let found = self
            .addresses()?
            .into_iter()
            .find(|a| a.addr == cidr.addr() && a.prefix == cidr.prefix())
            .ok_or_else(|| {
                self.named(Error::new(
                    ErrorKind::NotFound,
                    "delete address",
                    format!("{cidr} is not assigned"),
                ))
            })?;
        self.netlink
            .del_address(self.index, &found)
            .map_err(|e| self.named(e))
    }

    /// The address `local` on this link, with its prefix and attributes.
    fn local_address(&self, local: IpAddr, op: &str) -> Result<Address> {
        self.addresses()?
            .into_iter()
            .find(|a| a.addr == local)
            .ok_or_else(|| {
                self.named(Error::new(
                    ErrorKind::NotFound,
                    op.to_string(),
                    format!("{local} is not an address of this link; add it first"),
                ))
            })
    }

    /// Replaces the address `old` with `new` (delete, then add), e.g. to give it a peer.
    /// Deleting a primary IPv4 address also deletes its secondaries (unless
    /// `promote_secondaries` is set): those are put back. If the kernel refuses `new`, the
    /// old address is restored.
    ///
    /// # Errors
    ///
    /// The kernel's refusal, saying what could not be restored if anything.
    pub fn replace_address(&self, old: &Address, new: &Address) -> Result<()> {
        let before = self.addresses()?;
        self.netlink
            .del_address(self.index, old)
            .map_err(|e| self.named(e))?;
        let added = self.netlink.add_address(self.index, new);
        let now = self.addresses()?;
        let mut lost: Vec<&Address> = before
            .iter()
            .filter(|a| *a != old && !now.iter().any(|n| n.addr == a.addr && n.prefix == a.prefix))
            .collect();
        if added.is_err() {
            lost.insert(0, old);
        }
        let mut restore_failed = Vec::new();
        for a in lost {
            if self.netlink.add_address(self.index, a).is_err() {
                restore_failed.push(a.cidr().to_string());
            }
        }
        match (added, restore_failed.is_empty()) {
            (Ok(()), true) => Ok(()),
            (Ok(()), false) => Err(self.named(Error::new(
                ErrorKind::Os,
                "replace address",
                format!(
                    "{} set, but could not restore {}",
                    new.cidr(),
                    restore_failed.join(", ")
                ),
            ))),
            (Err(e), true) => Err(self.named(e)),
            (Err(e), false) => Err(self.named(e.with_detail(format!(
                "refused, and could not restore {}",
                restore_failed.join(", ")
            )))),
        }
    }

    /// Sets the point-to-point peer (the Erlang original's `dstaddr`) of the address `local`,
    /// which must be on the link; it keeps its prefix. The kernel then routes the peer's
    /// network (`peer` with `local`'s prefix, for IPv4; the peer itself for IPv6) to this
    /// link. On a tun device the link is `POINTOPOINT`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] if `local` and `peer` are of different families,
    /// [`ErrorKind::NotFound`] if `local` is not on the link; the kernel's refusal
    /// otherwise, with the old address restored.
    pub fn set_peer(&self, local: IpAddr, peer: IpAddr) -> Result<()> {
        if local.is_ipv4() != peer.is_ipv4() {
            return Err(self.named(Error::new(
                ErrorKind::InvalidInput,
                "set peer",
                format!("{peer} and {local} are of different families"),
            )));
        }
        let old = self.local_address(local, "set peer")?;
        let new = Address {
            peer: Some(peer),
            ..old
        };
        self.replace_address(&old, &new)
    }

    /// Sets the broadcast address of the IPv4 address `local`, which must be on the link.
    ///
    /// # Errors
    ///
    /// As [`set_peer`](Link::set_peer).
    pub fn set_broadcast(&self, local: Ipv4Addr, broadcast: Ipv4Addr) -> Result<()> {
        let old = self.local_address(IpAddr::V4(local), "set broadcast")?;
        let new = Address {
            broadcast: Some(broadcast),
            ..old
        };
        self.replace_address(&old, &new)
    }

    /// Deletes the link (RTM_DELLINK).
    pub fn delete(&self) -> Result<()> {
        self.netlink
            .delete_link(self.index)
            .map_err(|e| self.named(e))
    }
}
