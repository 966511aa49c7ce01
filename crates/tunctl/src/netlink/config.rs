//! [`LinkConfig`]: one change-set for a link, checked against the kernel's view before
//! anything is touched, applied in a fixed order, and undone if the kernel refuses mid-way.
//!
//! The `tunctl` command, `tunctl-helper` and library users all configure links through it,
//! so "what may change, in which order, and how it is put back" is known in one place.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::BorrowedFd;

use super::{Address, Link, LinkInfo, TunInfo};
use crate::addr::{Cidr, MacAddr};
use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// `CAP_NET_ADMIN`, which every rtnetlink change needs.
const CAP_NET_ADMIN: u32 = 12;

/// What to change on a link. Every field is optional; [`LinkConfig::plan`] checks them all
/// against the kernel's current view, [`Plan::apply`] makes the changes.
///
/// ```no_run
/// use tunctl::{Link, LinkConfig, Namespace};
///
/// # fn main() -> Result<(), tunctl::Error> {
/// let link = Link::by_name(&Namespace::current(), "tun0")?;
/// let config = LinkConfig {
///     mtu: Some(1400),
///     addrs: vec!["10.0.0.1/24".parse()?],
///     peer: Some("10.0.0.2".parse()?), // pairs with 10.0.0.1/24
///     up: Some(true),
///     ..LinkConfig::default()
/// };
/// config.plan(&link)?.apply(&link, None)?; // all of it, or nothing
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkConfig {
    /// New MTU (`IFLA_MTU`), within the device's range.
    pub mtu: Option<u32>,
    /// New MAC address (tap devices only).
    pub mac: Option<MacAddr>,
    /// New transmit queue length.
    pub txqueuelen: Option<u32>,
    /// Addresses to remove (address and prefix must match one on the link).
    pub del_addrs: Vec<Cidr>,
    /// Addresses to add.
    pub addrs: Vec<Cidr>,
    /// Point-to-point peer. It pairs with the one address of its family in
    /// [`addrs`](LinkConfig::addrs); without one there, with the link's only address of
    /// that family. More than one candidate is an error: the peer's route (its network,
    /// with the prefix of the address it pairs with) must never be a guess.
    pub peer: Option<IpAddr>,
    /// IPv4 broadcast address, paired like [`peer`](LinkConfig::peer).
    pub broadcast: Option<Ipv4Addr>,
    /// Carrier on or off.
    pub carrier: Option<bool>,
    /// Administratively up (`true`) or down.
    pub up: Option<bool>,
    /// Owner of a TUN/TAP device (TUNSETOWNER; needs the device's fd in [`Plan::apply`]).
    pub owner: Option<u32>,
    /// Group of a TUN/TAP device (TUNSETGROUP; needs the device's fd).
    pub group: Option<u32>,
    /// Whether to [`harden`](Link::harden) the link (IPv6 kept on) before a new owner or
    /// group can attach. `None`, the default: when this configuration gives the device to
    /// an owner or group other than root, as [`Builder::harden`](crate::Builder::harden)
    /// does for a new device. `Some(false)` never, `Some(true)` always.
    pub harden: Option<bool>,
    /// An address to add that the link has already (same prefix) is skipped instead of
    /// refused: running the same configuration twice succeeds (what scripts want).
    pub existing_ok: bool,
}

/// One change, with the value it replaces (to undo it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// MTU from, to.
    Mtu(u32, u32),
    /// MAC address from, to.
    Mac(MacAddr, MacAddr),
    /// Transmit queue length from, to.
    TxQueueLen(u32, u32),
    /// Remove this address (with its attributes, to put it back).
    DelAddress(Address),
    /// Add this address (with its peer or broadcast, if any).
    AddAddress(Address),
    /// Replace an address with the same one plus a peer or broadcast.
    Replace(Address, Address),
    /// Carrier from (if known), to.
    Carrier(Option<bool>, bool),
    /// Up from, to.
    Up(bool, bool),
    /// Owner from, to.
    Owner(Option<u32>, u32),
    /// Group from, to.
    Group(Option<u32>, u32),
    /// [`Link::harden`] (IPv6 kept on), before an owner or group step; not undone (the
    /// hardened settings are the safe ones).
    Harden,
}

impl Step {
    /// Whether the step goes through rtnetlink (and so needs CAP_NET_ADMIN).
    fn is_netlink(&self) -> bool {
        !matches!(self, Step::Owner(..) | Step::Group(..))
    }

    fn describe(&self) -> String {
        match self {
            Step::Mtu(_, to) => format!("MTU {to}"),
            Step::Mac(_, to) => format!("MAC {to}"),
            Step::TxQueueLen(_, to) => format!("txqueuelen {to}"),
            Step::DelAddress(a) => format!("removal of {}", a.cidr()),
            Step::AddAddress(a) => format!("address {a}"),
            Step::Replace(_, to) => format!("address {to}"),
            Step::Carrier(_, to) => format!("carrier {}", if *to { "on" } else { "off" }),
            Step::Up(_, to) => (if *to { "up" } else { "down" }).to_string(),
            Step::Owner(_, to) => format!("owner {to}"),
            Step::Group(_, to) => format!("group {to}"),
            Step::Harden => "hardening".to_string(),
        }
    }
}

/// The changes a [`LinkConfig`] makes on one link, checked and in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    steps: Vec<Step>,
}

impl LinkConfig {
    /// Whether nothing is asked for.
    pub fn is_empty(&self) -> bool {
        let LinkConfig {
            mtu,
            mac,
            txqueuelen,
            del_addrs,
            addrs,
            peer,
            broadcast,
            carrier,
            up,
            owner,
            group,
            harden,
            existing_ok: _,
        } = self;
        mtu.is_none()
            && mac.is_none()
            && txqueuelen.is_none()
            && del_addrs.is_empty()
            && addrs.is_empty()
            && peer.is_none()
            && broadcast.is_none()
            && carrier.is_none()
            && up.is_none()
            && owner.is_none()
            && group.is_none()
            && harden != &Some(true)
    }

    /// Checks every change against the kernel's current view of `link` (two netlink
    /// round trips) and returns the steps that change something, in the order
    /// [`Plan::apply`] takes: MTU, MAC, txqueuelen, removals, additions, peer and
    /// broadcast, carrier, up/down, owner, group; hardening, when it applies, comes first.
    /// Nothing is changed.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`]: an address or MAC given twice, an MTU outside the
    /// device's range, IPv6 with an MTU below 1280 or with IPv6 disabled on the link, a
    /// MAC for a tun device, a peer or broadcast with no address (or several) to pair with.
    /// [`ErrorKind::AlreadyExists`] / [`ErrorKind::NotFound`]: an address to add is there
    /// already, one to remove is not. [`ErrorKind::PermissionDenied`]: a netlink change
    /// without CAP_NET_ADMIN.
    pub fn plan(&self, link: &Link) -> Result<Plan> {
        let info = link.info()?;
        let addrs = link.addresses()?;
        self.plan_for(&info, &addrs)
            .map_err(|e| e.on_default(link.name()))
    }

    /// [`plan`](LinkConfig::plan) against a view already read.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`], [`ErrorKind::AlreadyExists`] and
    /// [`ErrorKind::PermissionDenied`] as for [`plan`](LinkConfig::plan); [`ErrorKind::NotFound`]
    /// for an address to remove that is not there, or a peer or broadcast with no address to
    /// pair with; [`ErrorKind::Unsupported`] for IPv6 on a kernel without it.
    pub fn plan_for(&self, info: &LinkInfo, current: &[Address]) -> Result<Plan> {
        let fail = |kind, op: &str, why: String| Err(Error::new(kind, op, why).on(&info.name));
        let mut steps = Vec::new();
        let (min, max) = (info.min_mtu.unwrap_or(68), info.max_mtu.unwrap_or(65535));
        let mtu = self.mtu.unwrap_or(info.mtu);
        if let Some(want) = self.mtu {
            if !(min..=max).contains(&want) {
                return fail(
                    ErrorKind::InvalidInput,
                    "set mtu",
                    format!("MTU {want} is outside the device's range, {min} to {max}"),
                );
            }
            if want != info.mtu {
                steps.push(Step::Mtu(info.mtu, want));
            }
        }
        if let Some(mac) = self.mac {
            let Some(old) = info.mac else {
                return fail(
                    ErrorKind::InvalidInput,
                    "set mac",
                    "the device has no link-layer address (a tun device; only tap devices have a MAC)"
                        .into(),
                );
            };
            if !mac.is_valid_unicast() {
                return fail(
                    ErrorKind::InvalidInput,
                    "set mac",
                    format!("{mac} is a multicast or all-zero address"),
                );
            }
            if mac != old {
                steps.push(Step::Mac(old, mac));
            }
        }
        if let Some(len) = self.txqueuelen {
            if len != info.txqueuelen {
                steps.push(Step::TxQueueLen(info.txqueuelen, len));
            }
        }
        let same = |a: &Address, c: &Cidr| a.addr == c.addr() && a.prefix == c.prefix();
        for (i, c) in self.del_addrs.iter().enumerate() {
            if self.del_addrs[..i].contains(c) {
                return fail(
                    ErrorKind::InvalidInput,
                    "delete address",
                    format!("{c} is given twice"),
                );
            }
            match current.iter().find(|a| same(a, c)) {
                Some(a) => steps.push(Step::DelAddress(*a)),
                None => {
                    let hint = current
                        .iter()
                        .find(|a| a.addr == c.addr())
                        .map(|a| format!(" (it has {})", a.cidr()))
                        .unwrap_or_default();
                    return fail(
                        ErrorKind::NotFound,
                        "delete address",
                        format!("{c} is not assigned{hint}"),
                    );
                }
            }
        }
        // What the link will have once removals are done: additions are checked against it.
        let remaining: Vec<&Address> = current
            .iter()
            .filter(|a| !self.del_addrs.iter().any(|c| same(a, c)))
            .collect();
        let mut adds: Vec<Address> = Vec::new();
        for (i, c) in self.addrs.iter().enumerate() {
            if self.addrs[..i].contains(c) {
                return fail(
                    ErrorKind::InvalidInput,
                    "add address",
                    format!("{c} is given twice"),
                );
            }
            if c.addr().is_ipv6() {
                match info.ipv6 {
                    Some(true) => {}
                    Some(false) => {
                        return fail(
                            ErrorKind::InvalidInput,
                            "add address",
                            format!(
                            "IPv6 is disabled on this device (net.ipv6.conf.{}.disable_ipv6 = 1)",
                            info.name
                        ),
                        )
                    }
                    None => {
                        return fail(
                            ErrorKind::Unsupported,
                            "add address",
                            "IPv6 is off in this kernel".into(),
                        )
                    }
                }
                if mtu < 1280 {
                    return fail(
                        ErrorKind::InvalidInput,
                        "add address",
                        format!("IPv6 needs an MTU of at least 1280; the device would have {mtu}"),
                    );
                }
            }
            if remaining.iter().any(|a| same(a, c)) {
                if self.existing_ok {
                    continue;
                }
                return fail(
                    ErrorKind::AlreadyExists,
                    "add address",
                    format!("{c} is already assigned"),
                );
            }
            adds.push(Address::new(*c));
        }
        let (adds, replace) = self.pair(adds, &remaining)?;
        steps.extend(adds.into_iter().map(Step::AddAddress));
        steps.extend(replace.into_iter().map(|(a, b)| Step::Replace(a, b)));
        if let Some(c) = self.carrier {
            if info.carrier != Some(c) {
                steps.push(Step::Carrier(info.carrier, c));
            }
        }
        if let Some(up) = self.up {
            if info.is_up() != up {
                steps.push(Step::Up(info.is_up(), up));
            }
        }
        if self.owner.is_some() || self.group.is_some() {
            let Some(tun) = &info.tun else {
                return fail(
                    ErrorKind::InvalidInput,
                    "set owner",
                    "not a TUN/TAP device".into(),
                );
            };
            let (owner, group) = owner_changes(tun, self.owner, self.group);
            // Hardened before anyone else can attach.
            if hardens(self.harden, owner, group) {
                // First of all: also before the device goes up.
                steps.insert(0, Step::Harden);
            }
            if let Some(uid) = owner {
                steps.push(Step::Owner(tun.owner, uid));
            }
            if let Some(gid) = group {
                steps.push(Step::Group(tun.group, gid));
            }
        } else if self.harden == Some(true) {
            steps.insert(0, Step::Harden);
        }
        if steps.iter().any(Step::is_netlink) && !sys::has_capability(CAP_NET_ADMIN) {
            return fail(
                ErrorKind::PermissionDenied,
                "configure",
                format!(
                    "{} needs CAP_NET_ADMIN, which this process does not have",
                    steps
                        .iter()
                        .filter(|s| s.is_netlink())
                        .map(Step::describe)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        Ok(Plan { steps })
    }
}

impl LinkConfig {
    /// The networks the kernel will route to the link once this configuration is applied
    /// to a link that has `current`: each added address's network, and for a peer, the
    /// peer's network (the peer with the prefix of the address it pairs with). This is
    /// what a policy must check: the same pairing [`plan`](LinkConfig::plan) uses.
    ///
    /// # Errors
    ///
    /// A peer or broadcast with no address, or several, to pair with.
    pub fn routed_networks(&self, current: &[Address]) -> Result<Vec<Cidr>> {
        let same = |a: &Address, c: &Cidr| a.addr == c.addr() && a.prefix == c.prefix();
        let remaining: Vec<&Address> = current
            .iter()
            .filter(|a| !self.del_addrs.iter().any(|c| same(a, c)))
            .collect();
        let adds = self.addrs.iter().map(|c| Address::new(*c)).collect();
        let (adds, replace) = self.pair(adds, &remaining)?;
        networks_of(adds.iter().chain(replace.iter().map(|(_, to)| to)))
    }

    /// Gives the peer and broadcast to the one address they pair with: one being added,
    /// else the link's only one of the family (`remaining`, after removals).
    #[allow(clippy::type_complexity)]
    fn pair(
        &self,
        mut adds: Vec<Address>,
        remaining: &[&Address],
    ) -> Result<(Vec<Address>, Vec<(Address, Address)>)> {
        let fail = |kind, op: &str, why: String| Err(Error::new(kind, op, why));
        let mut replace: Vec<(Address, Address)> = Vec::new();
        let pairs = [
            self.peer.map(|p| ("set peer", p)),
            self.broadcast.map(|b| ("set broadcast", IpAddr::V4(b))),
        ];
        for (op, other) in pairs.into_iter().flatten() {
            let v4 = other.is_ipv4();
            let fam = if v4 { "IPv4" } else { "IPv6" };
            let set = |a: &mut Address| {
                if op == "set peer" {
                    a.peer = Some(other);
                } else if let IpAddr::V4(b) = other {
                    a.broadcast = Some(b);
                }
            };
            let new: Vec<usize> = (0..adds.len())
                .filter(|&i| adds[i].addr.is_ipv4() == v4 && !adds[i].is_link_local())
                .collect();
            match new.as_slice() {
                [i] => {
                    set(&mut adds[*i]);
                    continue;
                }
                [] => {}
                _ => {
                    return fail(
                        ErrorKind::InvalidInput,
                        op,
                        format!(
                            "several {fam} addresses are added; it pairs with one: add the others in another command"
                        ),
                    )
                }
            }
            let old: Vec<&&Address> = remaining
                .iter()
                .filter(|a| a.addr.is_ipv4() == v4 && !a.is_link_local())
                .collect();
            match old.as_slice() {
                [a] => {
                    let base = replace
                        .iter()
                        .position(|(from, _)| from == **a)
                        .map(|i| replace.remove(i));
                    let (from, mut to) = base.unwrap_or((***a, ***a));
                    set(&mut to);
                    if from != to {
                        replace.push((from, to));
                    }
                }
                [] => {
                    return fail(
                        ErrorKind::NotFound,
                        op,
                        format!(
                            "no {fam} address to pair {other} with; add one in the same command"
                        ),
                    )
                }
                several => {
                    let list: Vec<String> = several.iter().map(|a| a.cidr().to_string()).collect();
                    return fail(
                        ErrorKind::InvalidInput,
                        op,
                        format!(
                            "the device has several {fam} addresses ({}); name the one to pair {other} with by removing and adding it in the same command",
                            list.join(", ")
                        ),
                    );
                }
            }
        }
        Ok((adds, replace))
    }
}

/// The networks the kernel routes to a link for these addresses: each one's own, and a
/// peer's (the peer with the prefix of the address it pairs with).
fn networks_of<'a>(addrs: impl Iterator<Item = &'a Address>) -> Result<Vec<Cidr>> {
    let mut nets = Vec::new();
    for a in addrs {
        nets.push(a.cidr());
        if let Some(peer) = a.peer {
            nets.push(Cidr::new(peer, a.prefix)?);
        }
    }
    Ok(nets)
}

impl Plan {
    /// The networks this plan makes the kernel route to the link (added or changed
    /// addresses, and their peers): exactly what [`apply`](Plan::apply) will tell it, for
    /// a policy to check against the same plan it then applies.
    ///
    /// # Errors
    ///
    /// Never in practice (a peer's prefix always fits its family).
    pub fn routed_networks(&self) -> Result<Vec<Cidr>> {
        networks_of(self.steps.iter().filter_map(|s| match s {
            Step::AddAddress(a) | Step::Replace(_, a) => Some(a),
            _ => None,
        }))
    }

    /// The steps, in the order they are applied.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Whether the configuration changes nothing.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Makes the changes in order. If the kernel refuses one, the changes made before it
    /// are undone in reverse order, and the error says what was undone (and what could
    /// not be). `tun` is an fd attached to the device, needed for owner and group steps.
    ///
    /// # Errors
    ///
    /// The kernel's refusal, after the undo; [`ErrorKind::InvalidInput`] before anything
    /// is changed if the plan sets an owner or group and `tun` is `None`.
    pub fn apply(&self, link: &Link, tun: Option<BorrowedFd<'_>>) -> Result<()> {
        if tun.is_none() && self.steps.iter().any(|s| !s.is_netlink()) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "set owner",
                "owner and group are set through the device's fd, and none was given",
            )
            .on(link.name()));
        }
        for (i, step) in self.steps.iter().enumerate() {
            if let Err(err) = run(link, tun, step, false) {
                let mut undone = Vec::new();
                let mut kept = Vec::new();
                for done in self.steps[..i].iter().rev() {
                    match run(link, tun, done, true) {
                        Ok(()) => undone.push(done.describe()),
                        Err(e) => kept.push(format!("{} ({})", done.describe(), e.operation())),
                    }
                }
                let mut note = Vec::new();
                if !undone.is_empty() {
                    note.push(format!("undone: {}", undone.join(", ")));
                }
                if !kept.is_empty() {
                    note.push(format!("could not undo: {}", kept.join(", ")));
                }
                let err = err.on_default(link.name());
                return Err(if note.is_empty() {
                    err
                } else {
                    err.and_then_detail(&note.join("; "))
                });
            }
        }
        Ok(())
    }
}

impl Plan {
    /// Puts back what [`apply`](Plan::apply) changed, in reverse order (a program that
    /// configured a device it did not create leaves it as it found it). The hardening step
    /// stays, and an owner or group cannot go back to none.
    ///
    /// # Errors
    ///
    /// The first step that could not be undone; the others are still tried.
    pub fn undo(&self, link: &Link, tun: Option<BorrowedFd<'_>>) -> Result<()> {
        let mut first = None;
        for step in self.steps.iter().rev() {
            if let Err(e) = run(link, tun, step, true) {
                first.get_or_insert(e.on_default(link.name()));
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Applies one step, or its reverse.
fn run(link: &Link, tun: Option<BorrowedFd<'_>>, step: &Step, undo: bool) -> Result<()> {
    fn pick<T>(undo: bool, from: T, to: T) -> T {
        if undo {
            from
        } else {
            to
        }
    }
    match step {
        Step::Mtu(from, to) => link.set_mtu(pick(undo, *from, *to)),
        Step::Mac(from, to) => link.set_mac(pick(undo, *from, *to)),
        Step::TxQueueLen(from, to) => link.set_txqueuelen(pick(undo, *from, *to)),
        Step::DelAddress(a) if undo => link.add(a),
        Step::DelAddress(a) => link.del_address(a.cidr()),
        Step::AddAddress(a) if undo => link.del_address(a.cidr()),
        Step::AddAddress(a) => link.add(a),
        Step::Replace(from, to) if undo => link.replace_address(to, from),
        Step::Replace(from, to) => link.replace_address(from, to),
        Step::Carrier(from, to) => match (undo, from) {
            (true, None) => Ok(()),
            (true, Some(c)) => link.set_carrier(*c),
            (false, _) => link.set_carrier(*to),
        },
        Step::Up(from, to) => {
            if pick(undo, *from, *to) {
                link.up()
            } else {
                link.down()
            }
        }
        Step::Owner(from, to) => set_id(tun, "TUNSETOWNER", *from, *to, undo, sys::tun_set_owner),
        Step::Group(from, to) => set_id(tun, "TUNSETGROUP", *from, *to, undo, sys::tun_set_group),
        Step::Harden if undo => Ok(()),
        Step::Harden => link.harden(true),
    }
}

/// An owner or group step (`set` is the ioctl), or its reverse: the kernel can set an id
/// but never reset one to "none".
fn set_id(
    tun: Option<BorrowedFd<'_>>,
    op: &str,
    from: Option<u32>,
    to: u32,
    undo: bool,
    set: fn(BorrowedFd<'_>, u32) -> std::io::Result<()>,
) -> Result<()> {
    let fd = tun.ok_or_else(|| Error::new(ErrorKind::InvalidInput, op, "no fd"))?;
    let id = match (undo, from) {
        (false, _) => to,
        (true, Some(id)) => id,
        (true, None) => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                op,
                "the kernel cannot reset an owner or group to none",
            ))
        }
    };
    set(fd, id).map_err(|e| Error::os(op, e))
}

/// The owner and group among `owner` and `group` that differ from the device's now.
pub(crate) fn owner_changes(
    tun: &TunInfo,
    owner: Option<u32>,
    group: Option<u32>,
) -> (Option<u32>, Option<u32>) {
    (
        owner.filter(|u| tun.owner != Some(*u)),
        group.filter(|g| tun.group != Some(*g)),
    )
}

/// Whether a device is hardened ([`Link::harden`]) before it changes hands: as asked
/// (`harden`), else when it goes to a new owner or group other than root. The one rule of
/// [`LinkConfig`] and the `Builder`.
pub(crate) fn hardens(
    harden: Option<bool>,
    new_owner: Option<u32>,
    new_group: Option<u32>,
) -> bool {
    harden.unwrap_or(new_owner.is_some_and(|u| u != 0) || new_group.is_some_and(|g| g != 0))
}
