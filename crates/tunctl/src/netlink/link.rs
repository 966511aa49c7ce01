//! [`Link`]: the operations on one interface, over a [`Netlink`] socket.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::link::{LinkAttribute, LinkFlags};

use super::{Address, LinkInfo, Netlink};
use crate::addr::{Cidr, MacAddr};
use crate::error::{Error, ErrorKind, Result};
use crate::name;
use crate::netns::Namespace;

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
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an invalid name, [`ErrorKind::NotFound`] if the
    /// namespace or the interface does not exist, [`ErrorKind::PermissionDenied`] without
    /// CAP_SYS_ADMIN to enter another namespace.
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
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] if the link no longer exists here (deleted, or moved to
    /// another namespace).
    pub fn info(&self) -> Result<LinkInfo> {
        self.netlink
            .link_by_index(self.index)
            .map_err(|e| self.named(e))
    }

    /// Sets `IFF_UP` (RTM_SETLINK).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::PermissionDenied`] without CAP_NET_ADMIN, [`ErrorKind::NotFound`] if the
    /// link no longer exists.
    pub fn up(&self) -> Result<()> {
        self.netlink
            .set_link("set up", self.index, |m| {
                m.header.flags = LinkFlags::Up;
                m.header.change_mask = LinkFlags::Up;
            })
            .map_err(|e| self.named(e))
    }

    /// Clears `IFF_UP` (RTM_SETLINK); addresses stay, IPv6 ones too: the kernel drops IPv6
    /// addresses of a link going down unless its `keep_addr_on_down` is set, so this sets
    /// it for the link first (`net.ipv6.conf.NAME.keep_addr_on_down`, written in the
    /// link's namespace; skipped where the link has no IPv6).
    ///
    /// # Errors
    ///
    /// The kernel's refusal ([`ErrorKind::PermissionDenied`] without CAP_NET_ADMIN), or
    /// failing to keep the IPv6 addresses of a link that has some.
    pub fn down(&self) -> Result<()> {
        self.keep_addresses_on_down()?;
        self.netlink
            .set_link("set down", self.index, |m| {
                m.header.flags = LinkFlags::empty();
                m.header.change_mask = LinkFlags::Up;
            })
            .map_err(|e| self.named(e))
    }

    /// Sets `keep_addr_on_down` for this link, if it has IPv6 addresses to keep.
    fn keep_addresses_on_down(&self) -> Result<()> {
        let has_v6 = self
            .addresses()?
            .iter()
            .any(|a| a.addr.is_ipv6() && !a.is_link_local());
        if !has_v6 {
            return Ok(());
        }
        self.set_conf("ipv6", "keep_addr_on_down", "1")
    }

    /// Sets one per-link sysctl, `net.FAMILY.conf.NAME.KEY` (`ipv4` or `ipv6`), in the
    /// link's namespace, e.g. `set_conf("ipv6", "accept_ra", "0")`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for another family or a key that is not a plain sysctl
    /// name; [`ErrorKind::NotFound`] for a key the kernel does not have (or IPv6 off);
    /// [`ErrorKind::PermissionDenied`] without CAP_NET_ADMIN.
    pub fn set_conf(&self, family: &str, key: &str, value: &str) -> Result<()> {
        self.set_confs(&[(family, key, value)], false)
    }

    /// Writes per-link sysctls (`(family, key, value)`, as [`set_conf`](Link::set_conf)
    /// takes them) in order, all from one visit to the link's namespace; `skip_missing_v6`
    /// passes over IPv6 keys the kernel lacks (IPv6 off in it). Every name is checked
    /// before anything is written.
    fn set_confs(&self, writes: &[(&str, &str, &str)], skip_missing_v6: bool) -> Result<()> {
        // Kernel per-link sysctl names are lowercase words with underscores and digits
        // (`disable_ipv6`, `accept_ra_rt_info_max_plen`); nothing that could leave the
        // directory (no `/`, no `.`).
        let plain = |s: &str| {
            s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if let Some((family, key, _)) = writes
            .iter()
            .find(|(family, key, _)| !matches!(*family, "ipv4" | "ipv6") || !plain(key))
        {
            return Err(self.named(Error::new(
                ErrorKind::InvalidInput,
                "set sysctl",
                format!("net.{family}.conf.*.{key} is not a per-link sysctl name"),
            )));
        }
        // /proc/sys/net is the opener's namespace's: open it from inside the link's.
        let failed = self.netlink.namespace().run(|| {
            for &(family, key, value) in writes {
                let path = format!("/proc/sys/net/{family}/conf/{}/{key}", self.name);
                match std::fs::write(&path, value.as_bytes()) {
                    Ok(()) => {}
                    Err(e)
                        if skip_missing_v6
                            && family == "ipv6"
                            && e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Some((family, key, e)),
                }
            }
            None
        })?;
        match failed {
            None => Ok(()),
            Some((family, key, e)) => Err(self.named(
                Error::os(format!("set net.{family}.conf.{}.{key}", self.name), e).needs(
                    "CAP_NET_ADMIN",
                    "per-link sysctls take it in the link's namespace",
                ),
            )),
        }
    }

    /// Makes the link ignore what whoever holds its file descriptor could use to change
    /// the namespace's routing through packets it writes: IPv6 router advertisements
    /// (`accept_ra=0`, `autoconf=0`: no default route, no prefix, no address from them),
    /// ICMP redirects (`accept_redirects=0`, IPv4 and IPv6), source-routed packets
    /// (`accept_source_route=0`), and spoofed IPv4 sources (`rp_filter=1`, strict). With
    /// `ipv6: false`, IPv6 is turned off on the link altogether (`disable_ipv6=1`) instead.
    ///
    /// Per-link sysctls (`net.ipv4.conf.NAME.*`, `net.ipv6.conf.NAME.*`), written in the
    /// link's namespace: one `/proc/sys` write each. A move to another namespace resets
    /// them. Two limits the kernel sets: IPv4 redirects are still accepted while the
    /// namespace's `net.ipv4.conf.all.accept_redirects` is 1 on a host that does not
    /// forward (the kernel ORs the two), and `rp_filter` is the larger of the link's and
    /// `all`'s; neither is changed here, since they belong to the whole namespace.
    ///
    /// # Errors
    ///
    /// As [`set_conf`](Link::set_conf); a kernel without IPv6 skips the IPv6 keys.
    pub fn harden(&self, ipv6: bool) -> Result<()> {
        let v4 = [
            ("ipv4", "rp_filter", "1"),
            ("ipv4", "accept_redirects", "0"),
            ("ipv4", "accept_source_route", "0"),
        ];
        let v6: &[(&str, &str, &str)] = if ipv6 {
            &[
                ("ipv6", "accept_ra", "0"),
                ("ipv6", "autoconf", "0"),
                ("ipv6", "accept_redirects", "0"),
                ("ipv6", "accept_source_route", "0"),
            ]
        } else {
            &[("ipv6", "disable_ipv6", "1")]
        };
        // One visit to the namespace for all of them; a kernel without IPv6 skips those.
        let all: Vec<(&str, &str, &str)> = v4.iter().chain(v6).copied().collect();
        self.set_confs(&all, true)
    }

    /// The current MTU.
    ///
    /// # Errors
    ///
    /// As [`info`](Link::info).
    pub fn mtu(&self) -> Result<u32> {
        Ok(self.info()?.mtu)
    }

    /// Sets the MTU (`IFLA_MTU`), after checking it against the device's own range.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an MTU outside the device's range (read first,
    /// nothing changed); otherwise as [`up`](Link::up).
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
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a multicast or all-zero MAC (before any system call),
    /// [`ErrorKind::Unsupported`] for a device without one (tun); otherwise as [`up`](Link::up).
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
    ///
    /// # Errors
    ///
    /// As [`up`](Link::up).
    pub fn set_txqueuelen(&self, len: u32) -> Result<()> {
        self.netlink
            .set_link("set txqueuelen", self.index, |m| {
                m.attributes.push(LinkAttribute::TxQueueLen(len))
            })
            .map_err(|e| self.named(e))
    }

    /// Sets the interface alias (`IFLA_IFALIAS`; changing it needs CAP_NET_ADMIN).
    ///
    /// # Errors
    ///
    /// As [`up`](Link::up); the kernel refuses an alias over 255 bytes ([`ErrorKind::Os`]).
    pub fn set_alias(&self, alias: &str) -> Result<()> {
        self.netlink
            .set_link("set alias", self.index, |m| {
                m.attributes.push(LinkAttribute::IfAlias(alias.to_string()))
            })
            .map_err(|e| self.named(e))
    }

    /// Sets the most segments the kernel puts in one GSO packet for this device
    /// (`IFLA_GSO_MAX_SEGS`).
    ///
    /// # Errors
    ///
    /// As [`up`](Link::up); the kernel refuses a value over 65535 ([`ErrorKind::Os`]).
    pub fn set_gso_max_segs(&self, segs: u32) -> Result<()> {
        self.netlink
            .set_link("set gso_max_segs", self.index, |m| {
                m.attributes.push(LinkAttribute::GsoMaxSegs(segs))
            })
            .map_err(|e| self.named(e))
    }

    /// Sets the carrier (`IFLA_CARRIER`; the tun driver implements it like TUNSETCARRIER).
    /// The kernel turns the carrier of a TUN/TAP device on only while some process has it
    /// open (a queue attached).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::PermissionDenied`] without CAP_NET_ADMIN, or turning the carrier on with
    /// no queue attached; [`ErrorKind::NotFound`] if the link no longer exists.
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
    ///
    /// # Errors
    ///
    /// As [`Netlink::links`]; a link that no longer exists has no addresses (not an error).
    pub fn addresses(&self) -> Result<Vec<Address>> {
        self.netlink
            .addresses(Some(self.index))
            .map_err(|e| self.named(e))
    }

    /// Adds an address with its network's default broadcast (IPv4 up to /30). IPv6 needs an
    /// MTU of at least 1280, which is checked first.
    ///
    /// # Errors
    ///
    /// As [`add`](Link::add).
    pub fn add_address(&self, cidr: Cidr) -> Result<()> {
        self.add(&Address::new(cidr))
    }

    /// Adds an address with every attribute of `spec` (peer, broadcast).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for IPv6 on a link with an MTU below 1280,
    /// [`ErrorKind::AlreadyExists`] if the address is there; otherwise as
    /// [`Netlink::add_address`].
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
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] if no address of that address and prefix is on the link;
    /// [`ErrorKind::PermissionDenied`] without CAP_NET_ADMIN.
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
                ErrorKind::Other,
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

    /// Adds a route to `dst` through this link (`ip route add DST dev LINK [via GW]`), in
    /// the link's namespace.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::AlreadyExists`] if it is there; [`ErrorKind::PermissionDenied`]
    /// without CAP_NET_ADMIN; the kernel's refusal otherwise (e.g. a gateway it cannot
    /// reach, ENETUNREACH).
    pub fn add_route(&self, dst: Cidr, gateway: Option<IpAddr>) -> Result<()> {
        self.netlink
            .add_route(self.index, dst, gateway)
            .map_err(|e| self.named(e))
    }

    /// Deletes the route to `dst` through this link.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] if there is none; [`ErrorKind::PermissionDenied`] without
    /// CAP_NET_ADMIN.
    pub fn del_route(&self, dst: Cidr) -> Result<()> {
        self.netlink
            .del_route(self.index, dst)
            .map_err(|e| self.named(e))
    }

    /// The routes of the main table through this link.
    ///
    /// # Errors
    ///
    /// The kernel's refusal of the dump (rare).
    pub fn routes(&self) -> Result<Vec<super::Route>> {
        self.netlink
            .routes(Some(self.index))
            .map_err(|e| self.named(e))
    }

    /// Enslaves the link to the bridge (or other master device) with index `master`
    /// (`IFLA_MASTER`, as `ip link set LINK master BR`), or releases it with `None`
    /// (`nomaster`). Both must be in the same namespace.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] if `master` does not exist; [`ErrorKind::PermissionDenied`]
    /// without CAP_NET_ADMIN; the kernel's refusal otherwise (e.g. a master that takes no
    /// ports).
    pub fn set_master(&self, master: Option<u32>) -> Result<()> {
        self.netlink
            .set_link("set master", self.index, |m| {
                m.attributes
                    .push(LinkAttribute::Controller(master.unwrap_or(0)))
            })
            .map_err(|e| self.named(e))
    }

    /// Deletes the link (RTM_DELLINK).
    ///
    /// # Errors
    ///
    /// As [`Netlink::delete_link`].
    pub fn delete(&self) -> Result<()> {
        self.netlink
            .delete_link(self.index)
            .map_err(|e| self.named(e))
    }
}
