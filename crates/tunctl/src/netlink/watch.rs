//! Link, address and route events: the kernel's rtnetlink announcements (multicast groups
//! `RTNLGRP_LINK`, `RTNLGRP_IPV4_IFADDR`, `RTNLGRP_IPV6_IFADDR`, `RTNLGRP_IPV4_ROUTE`,
//! `RTNLGRP_IPV6_ROUTE`), typed: a device created, renamed, deleted or moved to another
//! namespace, its carrier or administrative state changed, an address or route added or
//! removed.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::{Address, LinkInfo, Netlink, Route};
#[cfg(doc)]
use crate::error::ErrorKind;
use crate::error::{Error, Result};
use crate::netns::Namespace;
use crate::sys::{self, Interest, Ready};

/// `RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR |
/// RTMGRP_IPV6_ROUTE`: the groups a [`Watch`] joins.
const GROUPS: u32 = 0x1 | 0x10 | 0x40 | 0x100 | 0x400;
/// `RTMGRP_LINK` alone: the group of [`Watch::links`].
const LINK_GROUP: u32 = 0x1;

/// `IFF_UP` and `IFF_LOWER_UP` (carrier).
const IFF_UP: u32 = libc::IFF_UP as u32;
const IFF_LOWER_UP: u32 = 0x10000;

/// One change the kernel announced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkEvent {
    /// A link appeared: created here, or moved in from another namespace.
    Created(LinkInfo),
    /// A link was renamed; `from` is its former name.
    Renamed {
        /// The name it had.
        from: String,
        /// The link as it is now.
        link: LinkInfo,
    },
    /// A link was deleted.
    Deleted {
        /// Its index.
        index: u32,
        /// Its name.
        name: String,
    },
    /// A link left for another namespace: it no longer exists here.
    MovedAway {
        /// Its index here.
        index: u32,
        /// Its name here.
        name: String,
        /// The other namespace's id as this one knows it (`IFLA_NEW_NETNSID`), if given.
        netnsid: Option<i32>,
    },
    /// The carrier came (`true`) or went (`IFF_LOWER_UP`): for a TUN/TAP device, a
    /// queue was attached or the last one closed.
    Carrier {
        /// The link as it is now.
        link: LinkInfo,
        /// Whether it has carrier now.
        carrier: bool,
    },
    /// The link was brought up (`true`) or down (`IFF_UP`). When its carrier changed in
    /// the same announcement (a TUN/TAP device with a queue loses it when brought down and
    /// gets it back when brought up), this is the event: `link.carrier` says the rest.
    Admin {
        /// The link as it is now.
        link: LinkInfo,
        /// Whether it is up now.
        up: bool,
    },
    /// Any other change of a link (MTU, MAC, alias, flags, ...).
    Changed(LinkInfo),
    /// An address was added.
    AddressAdded(Address),
    /// An address was removed.
    AddressRemoved(Address),
    /// A route was added (any table).
    RouteAdded(Route),
    /// A route was removed.
    RouteRemoved(Route),
    /// The kernel dropped announcements (the socket's buffer overflowed, ENOBUFS): changes
    /// in between are lost. The watch has read every link anew, so later events are
    /// classified against the current state.
    Lost,
}

impl LinkEvent {
    /// The index of the link the event is about (for an address or route, the link it is
    /// on; 0 for [`LinkEvent::Lost`] and routes without one).
    pub fn index(&self) -> u32 {
        match self {
            LinkEvent::Created(l) | LinkEvent::Changed(l) => l.index,
            LinkEvent::Renamed { link, .. }
            | LinkEvent::Carrier { link, .. }
            | LinkEvent::Admin { link, .. } => link.index,
            LinkEvent::Deleted { index, .. } | LinkEvent::MovedAway { index, .. } => *index,
            LinkEvent::AddressAdded(a) | LinkEvent::AddressRemoved(a) => a.index,
            LinkEvent::RouteAdded(r) | LinkEvent::RouteRemoved(r) => r.index,
            LinkEvent::Lost => 0,
        }
    }
}

/// What a watch remembers of a link, to tell a rename or a carrier change from the rest.
#[derive(Debug, Clone)]
struct Known {
    name: String,
    flags: u32,
}

/// A subscription to the link, address and route events of one namespace: a blocking
/// [`Iterator`] of [`LinkEvent`]s ([`next_timeout`](Watch::next_timeout) bounds the wait),
/// and with the `tokio` feature a `Stream` (`tunctl::tokio::AsyncWatch`).
///
/// Made by [`Netlink::watch`] or [`Watch::open`]: an rtnetlink socket of its own, bound to
/// the multicast groups in the namespace (opening it in another namespace needs
/// CAP_SYS_ADMIN to enter it; listening needs no privilege). Events arrive as the kernel
/// announces them, in order; a consumer that falls behind by more than the socket's buffer
/// gets [`LinkEvent::Lost`].
pub struct Watch {
    socket: Socket,
    /// A request socket of the same namespace, to read the links anew after a loss.
    netlink: Netlink,
    namespace: Namespace,
    known: HashMap<u32, Known>,
    pending: VecDeque<LinkEvent>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("namespace", &self.namespace)
            .field("links", &self.known.len())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Netlink {
    /// A [`Watch`] of this socket's namespace: its link, address and route events.
    ///
    /// # Errors
    ///
    /// As [`Watch::open`].
    pub fn watch(&self) -> Result<Watch> {
        Watch::open(self.namespace())
    }
}

impl Watch {
    /// Subscribes to the events of namespace `ns`: a socket bound to the rtnetlink
    /// multicast groups there (opened on a thread inside it, see [`Namespace::run`]), and
    /// one dump of its links (RTM_GETLINK) to know them.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] for a missing namespace, [`ErrorKind::PermissionDenied`]
    /// without CAP_SYS_ADMIN to enter another one; [`ErrorKind::Os`] if the socket cannot
    /// be made.
    pub fn open(ns: &Namespace) -> Result<Watch> {
        Watch::open_groups(ns, GROUPS)
    }

    /// As [`open`](Watch::open), for link events only (no address or route events): for a
    /// program that follows its devices on a host whose routes change by the thousand,
    /// which would otherwise fill its socket.
    ///
    /// # Errors
    ///
    /// As [`open`](Watch::open).
    pub fn links(ns: &Namespace) -> Result<Watch> {
        Watch::open_groups(ns, LINK_GROUP)
    }

    fn open_groups(ns: &Namespace, groups: u32) -> Result<Watch> {
        // Both sockets are made inside the namespace (a netlink socket stays with the
        // namespace it was made in): the watch never enters it again. Close-on-exec both
        // (netlink-sys makes its sockets with SOCK_CLOEXEC).
        let (socket, netlink, links) =
            ns.run(|| -> Result<(Socket, Netlink, Vec<LinkInfo>)> {
                let mut socket =
                    Socket::new(NETLINK_ROUTE).map_err(|e| Error::os("netlink socket", e))?;
                // Subscribed before the dump: a change during it is announced, never missed.
                socket
                    .bind(&SocketAddr::new(0, groups))
                    .map_err(|e| Error::os("netlink bind", e))?;
                let netlink = Netlink::open_here(Namespace::Current)?;
                let links = netlink.links()?;
                Ok((socket, netlink, links))
            })??;
        Ok(Watch {
            socket,
            netlink,
            namespace: ns.clone(),
            known: links.into_iter().map(|l| (l.index, known(&l))).collect(),
            pending: VecDeque::new(),
            buf: vec![0u8; 64 * 1024],
        })
    }

    /// The namespace watched.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The next event, waiting at most `timeout`; `Ok(None)` if none came.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Os`] if the socket fails.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<LinkEvent>> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            if self.receive(true)? {
                continue;
            }
            let left = deadline.map_or(-1, |d| {
                let left = d.saturating_duration_since(Instant::now());
                i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
            });
            if left == 0 {
                return Ok(None);
            }
            match sys::poll(self.socket.as_fd(), Interest::Read, &[], left) {
                Ok(Ready::Io) => {}
                Ok(_) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(Error::os("poll", e)),
            }
        }
    }

    /// Whether the link of `index` exists, as far as the events received so far tell.
    #[cfg(feature = "tokio")]
    pub(crate) fn knows(&self, index: u32) -> bool {
        self.known.contains_key(&index)
    }

    /// An event already received, without reading the socket.
    #[cfg(feature = "tokio")]
    pub(crate) fn pop(&mut self) -> Option<LinkEvent> {
        self.pending.pop_front()
    }

    /// Reads one datagram of announcements if one is waiting (`nowait`) or when it comes,
    /// and queues its events: `Ok(false)` if none was waiting.
    pub(crate) fn receive(&mut self, nowait: bool) -> Result<bool> {
        let flags = if nowait { libc::MSG_DONTWAIT } else { 0 };
        let n = {
            let mut into = &mut self.buf[..];
            match self.socket.recv(&mut into, flags) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(false),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.resync()?;
                    self.pending.push_back(LinkEvent::Lost);
                    return Ok(true);
                }
                Err(e) => return Err(Error::os("netlink recv", e)),
            }
        };
        let mut offset = 0;
        while let Ok(raw) = NetlinkBuffer::new_checked(&self.buf[offset..n]) {
            // new_checked refuses a length below the header's: never 0, never past n.
            let len = raw.length() as usize;
            let chunk = &self.buf[offset..offset + len];
            offset += (len + 3) & !3;
            // An announcement this crate cannot decode (a newer kernel's layout) is skipped.
            if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(chunk) {
                if let NetlinkPayload::InnerMessage(inner) = msg.payload {
                    let event = self.classify(inner);
                    self.pending.extend(event);
                }
            }
            if offset >= n {
                break;
            }
        }
        Ok(true)
    }

    /// Reads every link anew after lost announcements.
    fn resync(&mut self) -> Result<()> {
        let links = self.netlink.links()?;
        self.known = links.into_iter().map(|l| (l.index, known(&l))).collect();
        Ok(())
    }

    /// The event an announcement stands for, updating what the watch knows.
    fn classify(&mut self, msg: RouteNetlinkMessage) -> Option<LinkEvent> {
        Some(match msg {
            RouteNetlinkMessage::NewLink(m) => {
                let link = LinkInfo::from_message(&m);
                let now = known(&link);
                match self.known.insert(link.index, now.clone()) {
                    None => LinkEvent::Created(link),
                    Some(was) if was.name != now.name => LinkEvent::Renamed {
                        from: was.name,
                        link,
                    },
                    // Brought down, a link loses its carrier in the same announcement, and
                    // brought up gets it back in one: the cause is what is reported.
                    Some(was) if (was.flags ^ now.flags) & IFF_UP != 0 => {
                        let up = now.flags & IFF_UP != 0;
                        LinkEvent::Admin { link, up }
                    }
                    Some(was) if (was.flags ^ now.flags) & IFF_LOWER_UP != 0 => {
                        let carrier = now.flags & IFF_LOWER_UP != 0;
                        LinkEvent::Carrier { link, carrier }
                    }
                    Some(_) => LinkEvent::Changed(link),
                }
            }
            RouteNetlinkMessage::DelLink(m) => {
                let index = m.header.index;
                let mut name = self.known.remove(&index).map(|k| k.name);
                let mut netnsid = None;
                let mut moved = false;
                for attr in &m.attributes {
                    match attr {
                        LinkAttribute::IfName(n) => name = Some(n.clone()),
                        LinkAttribute::NewNetnsId(id) => {
                            moved = true;
                            netnsid = (*id >= 0).then_some(*id);
                        }
                        LinkAttribute::NewIfIndex(_) => moved = true,
                        _ => {}
                    }
                }
                let name = name.unwrap_or_default();
                if moved {
                    LinkEvent::MovedAway {
                        index,
                        name,
                        netnsid,
                    }
                } else {
                    LinkEvent::Deleted { index, name }
                }
            }
            RouteNetlinkMessage::NewAddress(a) => {
                LinkEvent::AddressAdded(Address::from_message(&a)?)
            }
            RouteNetlinkMessage::DelAddress(a) => {
                LinkEvent::AddressRemoved(Address::from_message(&a)?)
            }
            RouteNetlinkMessage::NewRoute(r) => LinkEvent::RouteAdded(Route::from_message(&r)?),
            RouteNetlinkMessage::DelRoute(r) => LinkEvent::RouteRemoved(Route::from_message(&r)?),
            _ => return None,
        })
    }

    /// Puts the socket in non-blocking mode (for a readiness-driven reader).
    #[cfg(feature = "tokio")]
    pub(crate) fn set_nonblocking(&self) -> Result<()> {
        self.socket
            .set_non_blocking(true)
            .map_err(|e| Error::os("netlink socket", e))
    }
}

/// What a watch keeps of a link.
fn known(link: &LinkInfo) -> Known {
    Known {
        name: link.name.clone(),
        flags: link.flags,
    }
}

impl Iterator for Watch {
    type Item = Result<LinkEvent>;

    /// The next event, waiting as long as it takes.
    fn next(&mut self) -> Option<Result<LinkEvent>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if let Err(e) = self.receive(false) {
                return Some(Err(e));
            }
        }
    }
}

impl AsFd for Watch {
    /// The socket, to wait for events in an event loop ([`Watch::next_timeout`] with a zero
    /// timeout then takes them).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsRawFd for Watch {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}
