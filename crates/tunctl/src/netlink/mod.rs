//! Link and address configuration over rtnetlink (synchronous), and the kernel's view of
//! TUN/TAP devices (`IFLA_TUN_*`), including devices this process did not open.
//!
//! Messages are built and parsed with the rust-netlink crates (`netlink-packet-route`,
//! `netlink-sys`); nothing runs `ip`, `ifconfig` or `sudo`. A [`Netlink`] socket is bound to
//! the namespace it was opened in, so a [`Link`] configures a device in another namespace
//! without moving the process.

use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, NLM_F_ACK,
    NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

mod config;
mod link;
mod model;
mod route;
mod watch;

use crate::error::{Error, ErrorKind, Result};
use crate::name;
use crate::netns::Namespace;
pub(crate) use config::{hardens, owner_changes};
pub use config::{LinkConfig, Plan, Step};
pub use link::Link;
pub use model::{Address, LinkInfo, Route, RouteKind, TunInfo};
pub use route::{RouteSpec, Rule, RTPROT_STATIC, RT_TABLE_MAIN};
pub use watch::{LinkEvent, Watch};

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
                        let os = match ext_ack_message(&err.header, msg_flags) {
                            Some(text) => {
                                let base = os.to_string();
                                let cause = base.rsplit(": ").next().unwrap_or(&base).to_string();
                                os.with_detail(format!("{text} ({cause})"))
                            }
                            None => os,
                        };
                        return Err(os.needs(
                            "CAP_NET_ADMIN",
                            "changing links and addresses takes it in the device's namespace (owning a TUN/TAP device only lets you open it)",
                        ));
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
        Err(Error::new(
            ErrorKind::Other,
            op,
            "netlink reply never ended",
        ))
    }
}

impl Netlink {
    /// Opens a close-on-exec rtnetlink socket in the caller's namespace.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Os`] if the socket cannot be made or bound (e.g. EMFILE).
    pub fn open() -> Result<Netlink> {
        Netlink::open_in(&Namespace::Current)
    }

    /// Opens an rtnetlink socket inside `ns` (on a helper thread; see [`Namespace::run`]).
    ///
    /// # Errors
    ///
    /// As [`Namespace::run`] ([`ErrorKind::NotFound`] for a missing namespace,
    /// [`ErrorKind::PermissionDenied`] without CAP_SYS_ADMIN), then as [`open`](Netlink::open).
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
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Os`] if `dup(2)` fails (e.g. EMFILE).
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
            ErrorKind::Other,
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
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Os`] if the socket fails; [`ErrorKind::Other`] if the reply never ends
    /// or the kernel keeps interrupting the dump.
    pub fn links(&self) -> Result<Vec<LinkInfo>> {
        self.links_matching(LinkMessage::default(), true)
    }

    /// Every TUN/TAP device in the namespace, with its `IFLA_TUN_*` attributes.
    ///
    /// # Errors
    ///
    /// As [`links`](Netlink::links).
    pub fn tun_links(&self) -> Result<Vec<LinkInfo>> {
        Ok(self
            .links()?
            .into_iter()
            .filter(|l| l.tun.is_some())
            .collect())
    }

    /// One link by name.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an invalid name (a template included, before any
    /// system call), [`ErrorKind::NotFound`] if there is none; otherwise as
    /// [`links`](Netlink::links).
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

    /// One link by index.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] if there is none; otherwise as [`links`](Netlink::links).
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
    /// on the way.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::AlreadyExists`] if `name` is taken in `target`, [`ErrorKind::NotFound`]
    /// for an unknown `index`, [`ErrorKind::PermissionDenied`] without CAP_NET_ADMIN in both
    /// namespaces; EINVAL ([`ErrorKind::Os`]) for an invalid `name` (it is not checked here).
    pub fn move_link(&self, index: u32, target: BorrowedFd<'_>, name: &str) -> Result<()> {
        use std::os::fd::AsRawFd;
        self.set_link("move to namespace", index, |m| {
            m.attributes
                .push(LinkAttribute::NetNsFd(target.as_raw_fd()));
            m.attributes.push(LinkAttribute::IfName(name.to_string()));
        })
    }

    /// Deletes a link (RTM_DELLINK). Works for TUN/TAP devices, persistent or not.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] for an unknown `index`, [`ErrorKind::PermissionDenied`]
    /// without CAP_NET_ADMIN, [`ErrorKind::Unsupported`] for a link the kernel cannot delete
    /// (e.g. `lo`).
    pub fn delete_link(&self, index: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request("RTM_DELLINK", RouteNetlinkMessage::DelLink(msg), NLM_F_ACK)
            .map(drop)
    }

    /// Deletes the link named `name` (RTM_DELLINK with `IFLA_IFNAME`: one request, no
    /// lookup first). Deleting either end of a veth deletes both.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an invalid name (before any system call),
    /// [`ErrorKind::NotFound`] if there is no such link here; otherwise as
    /// [`delete_link`](Netlink::delete_link).
    pub fn delete_link_by_name(&self, name: &str) -> Result<()> {
        name::validate_existing(name)?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.request("RTM_DELLINK", RouteNetlinkMessage::DelLink(msg), NLM_F_ACK)
            .map(drop)
            .map_err(|e| {
                not_found_detail(
                    e,
                    &format!("no device {name} in {}", self.namespace.describe()),
                )
                .on_default(name)
            })
    }

    /// Creates a veth pair: `name` in this socket's namespace, its peer `peer_name` in
    /// `peer_namespace`, both in one RTM_NEWLINK (`IFLA_LINKINFO` kind `veth`, the peer in
    /// `VETH_INFO_PEER` with `IFLA_NET_NS_FD`), so the peer never exists anywhere else.
    /// [`Namespace::Current`] is the caller's namespace. Both ends are down and have no
    /// addresses; the returned [`Link`]s (this end, then the peer) configure them, each over
    /// a socket of its own in the end's namespace. Deleting either end
    /// ([`Link::delete`], [`delete_link_by_name`](Netlink::delete_link_by_name)) deletes
    /// both, and so does deleting the namespace of either.
    ///
    /// ```no_run
    /// use tunctl::{Namespace, Netlink};
    ///
    /// # fn main() -> Result<(), tunctl::Error> {
    /// let blue = Namespace::create("blue")?;
    /// let red = Namespace::create("red")?;
    /// let (b, r) = Netlink::open_in(&blue)?.add_veth("to-red", "to-blue", &red)?;
    /// b.add_address("10.0.0.1/24".parse()?)?;
    /// r.add_address("10.0.0.2/24".parse()?)?;
    /// b.up()?;
    /// r.up()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an invalid name (a template included) or for two ends
    /// of the same name in the same namespace, before anything is sent;
    /// [`ErrorKind::NotFound`] for a missing `peer_namespace`;
    /// [`ErrorKind::AlreadyExists`] if `name` is taken here or `peer_name` there (the error
    /// says which); [`ErrorKind::PermissionDenied`] without CAP_NET_ADMIN in both namespaces
    /// (or CAP_SYS_ADMIN to open sockets in them); the kernel's other refusals as
    /// [`ErrorKind::Os`], with its message. On any error no link is left behind.
    pub fn add_veth(
        &self,
        name: &str,
        peer_name: &str,
        peer_namespace: &Namespace,
    ) -> Result<(Link, Link)> {
        use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkInfo as NlLinkInfo};
        use std::os::fd::AsRawFd;
        const OP: &str = "create veth";
        // Fixed names only: with a template the kernel's choice would have to be guessed.
        let check = |n: &str, end: &str| {
            name::validate_existing(n).map_err(|e| {
                let e = if n.contains('%') {
                    e.with_detail(format!("{n:?}: a veth takes fixed names, not templates"))
                } else {
                    e
                };
                e.and_then_detail(&format!("for {end}"))
            })
        };
        check(name, "this end")?;
        check(peer_name, "the peer")?;
        let peer_fd = namespace_fd(peer_namespace)?;
        if name == peer_name && same_namespace(&namespace_fd(&self.namespace)?, &peer_fd)? {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                OP,
                format!(
                    "both ends are named {name} in {}: one namespace cannot hold two",
                    self.namespace.describe()
                ),
            )
            .on(name));
        }
        // Both sockets first: failing to open one leaves nothing behind.
        let here = Netlink::open_in(&self.namespace).map_err(|e| e.on_default(name))?;
        let there = Netlink::open_in(peer_namespace).map_err(|e| e.on_default(peer_name))?;

        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(peer_name.to_string()));
        peer.attributes
            .push(LinkAttribute::NetNsFd(peer_fd.as_raw_fd()));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::Kind(InfoKind::Veth),
            NlLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        let created = self.request(
            OP,
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        );
        drop(peer_fd);
        if let Err(e) = created {
            return Err(self.explain_veth_refusal(e, name, &there, peer_name));
        }

        // Find both ends where they now live; if either cannot be found (deleted or renamed
        // by someone else meanwhile), remove the pair rather than leave half of it.
        let vanished = |e: Error, subject: &str| {
            Error::new(
                ErrorKind::Other,
                OP,
                format!("created, then not found ({e}); the pair is removed"),
            )
            .on(subject)
        };
        match (self.link_by_name(name), there.link_by_name(peer_name)) {
            (Ok(l), Ok(r)) => Ok((
                Link::from_index(here, l.index, l.name),
                Link::from_index(there, r.index, r.name),
            )),
            (Ok(l), Err(e)) => {
                let _ = self.delete_link(l.index);
                Err(vanished(e, peer_name))
            }
            (Err(e), Ok(r)) => {
                let _ = there.delete_link(r.index);
                Err(vanished(e, name))
            }
            (Err(e), Err(_)) => Err(vanished(e, name)),
        }
    }

    /// Says which end's name is taken when the kernel refuses a veth with EEXIST.
    fn explain_veth_refusal(&self, err: Error, name: &str, there: &Netlink, peer: &str) -> Error {
        if err.kind() != ErrorKind::AlreadyExists {
            return err.on_default(name);
        }
        let (subject, ns) = if self.link_by_name(name).is_ok() {
            (name, &self.namespace)
        } else if there.link_by_name(peer).is_ok() {
            (peer, &there.namespace)
        } else {
            return err.on_default(name);
        };
        err.with_detail(format!(
            "a device named {subject} exists already in {}",
            ns.describe()
        ))
        .on(subject)
    }

    /// The addresses of one link (`index`), or of every link (`None`).
    ///
    /// # Errors
    ///
    /// As [`links`](Netlink::links); an unknown `index` gives an empty list, not an error.
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

    /// Adds an address (RTM_NEWADDR with NLM_F_EXCL).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::AlreadyExists`] if present, [`ErrorKind::NotFound`] for an unknown
    /// `index`, [`ErrorKind::PermissionDenied`] without CAP_NET_ADMIN; the kernel's other
    /// refusals as [`ErrorKind::Os`], with its message.
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
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] if the address is not assigned (or `index` is unknown),
    /// [`ErrorKind::PermissionDenied`] without CAP_NET_ADMIN.
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

/// An fd of `ns`'s namespace file; for [`Namespace::Current`], the calling thread's.
fn namespace_fd(ns: &Namespace) -> Result<OwnedFd> {
    match ns.open()? {
        Some(fd) => Ok(fd),
        None => crate::sys::open_readonly(std::path::Path::new("/proc/thread-self/ns/net"))
            .map_err(|e| Error::os("open namespace", e).on(ns.describe())),
    }
}

/// Whether two namespace fds are the same namespace (same nsfs inode).
fn same_namespace(a: &OwnedFd, b: &OwnedFd) -> Result<bool> {
    let stat = |fd: &OwnedFd| {
        rustix::fs::fstat(fd)
            .map(|s| (s.st_dev, s.st_ino))
            .map_err(|e| Error::os("fstat namespace", e.into()))
    };
    Ok(stat(a)? == stat(b)?)
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
