//! What `up` does to the host's routing, as wg-quick does it, through rtnetlink, and how it
//! is undone (on exit, on SIGTERM, on a failed `up`).
//!
//! The peers' allowed IPs are routed to the device (in the main table, or the one
//! `Table = N` names; `Table = off`: none). A default route among them (`0.0.0.0/0`, `::/0`:
//! a full tunnel) would also capture the tunnel's own datagrams to its peers' endpoints, so
//! it goes in a table of its own instead, the first free one from 51820, and the tunnel's
//! socket gets a firewall mark of that number (or the configured `FwMark`); two rules per
//! family, `not fwmark M lookup T` and `lookup main suppress_prefixlength 0`, then send all
//! unmarked traffic through the tunnel, while the tunnel's own datagrams, marked, still
//! leave by the host's real default route, and the main table's more specific routes
//! (the local networks) still apply.
//!
//! Where vpwn differs from wg-quick, it is to fail closed and to clean up exactly:
//! - Table T also holds an unreachable default route behind the tunnel's (metric
//!   4294967295): when the kernel removes the tunnel's route (its link went down, or an
//!   IPv6 MTU below 1280), traffic is refused instead of leaving by the real default route
//!   in clear text, until the route is put back (the timers thread does, when the link
//!   comes up again).
//! - The rules of table T sit at priorities of their own ([`rule_priorities`]), so each
//!   tunnel deletes exactly its own rules, never another tunnel's identical one.
//! - Table T is held by a lock file for the tunnel's life (`/run/tunctl/vpwn-routes/`,
//!   named by namespace and table): two tunnels starting at once never take one table, and
//!   rules and routes tagged [`PROTOCOL`] whose table nobody holds are a killed tunnel's,
//!   removed by the next `up` (also when its device was persistent and kept its routes).
//!
//! Nothing is left to chance: a route or rule that cannot be added fails `up` with the
//! reason and undoes the rest; a full tunnel never falls back to routing in clear text.

use std::path::Path;
use std::time::Duration;

use tunctl::service::NameLock;
use tunctl::{
    Address, Cidr, Error, ErrorKind, Link, LinkEvent, Netlink, RouteKind, RouteSpec, Rule, Watch,
    RT_TABLE_MAIN,
};

use crate::config::{Config, Table};

/// The `rtm_protocol` / `FRA_PROTOCOL` that marks vpwn's routes and rules (`proto 87` in
/// `ip route` and `ip rule`).
pub const PROTOCOL: u8 = 87;
/// Where a full tunnel's table and mark numbers start (as wg-quick's).
const FIRST_TABLE: u32 = 51820;
/// How many tables from [`FIRST_TABLE`] a full tunnel may take.
const TABLES: u32 = 4096;
/// The priority of the rule to the first table ([`rule_priorities`]).
const RULE_PRIORITY: u32 = 32000;
/// Where the lock files that hold tables live.
const LOCK_DIR: &str = "/run/tunctl/vpwn-routes";
/// The metric of the unreachable route behind a full tunnel's own: the last of all.
const LAST_METRIC: u32 = u32::MAX;

/// The priorities of the rules of table `table` (51820 or more): the main table
/// without its default route first, then the rule to `table`. Each table's pair is its
/// own (`ip rule`: 31999 and 32000 for 51820, 31997 and 31998 for 51821, ...), before the
/// main table's rule (32766).
pub fn rule_priorities(table: u32) -> (u32, u32) {
    let to_table = RULE_PRIORITY - 2 * (table - FIRST_TABLE);
    (to_table - 1, to_table)
}

/// The full-tunnel table whose rule sits at `priority`, if one does.
fn table_at(priority: u32) -> Option<u32> {
    let below = RULE_PRIORITY.checked_sub(priority)?;
    let table = FIRST_TABLE + below / 2;
    (table < FIRST_TABLE + TABLES).then_some(table)
}

/// The routing `up` set up, undone on drop unless [`keep`](Routing::keep) is called.
pub(crate) struct Routing {
    netlink: Netlink,
    routes: Vec<RouteSpec>,
    rules: Vec<Rule>,
    /// The firewall mark the tunnel's socket must carry (a full tunnel), if any.
    pub(crate) fwmark: Option<u32>,
    /// The full tunnel's table, if any.
    pub(crate) table: Option<u32>,
    /// Holds the full tunnel's table; released after the rules and routes are gone.
    lock: Option<NameLock>,
    /// The device's index, and its IPv6 addresses (the kernel removes those when the link
    /// goes down, unless `keep_addr_on_down`; its IPv4 ones stay).
    index: u32,
    addresses_v6: Vec<Cidr>,
    /// The namespace's link events, opened before the first route: a device brought down
    /// and up again between two looks is seen all the same.
    watch: Option<Watch>,
}

/// Link events read from the watch per look, at most (the rest wait for the next look, or
/// overflow into `Lost`, which counts as a change).
const EVENTS_PER_LOOK: usize = 4096;

impl std::fmt::Debug for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routing")
            .field("routes", &self.routes)
            .field("rules", &self.rules)
            .field("fwmark", &self.fwmark)
            .finish()
    }
}

impl Routing {
    /// Routes `config`'s allowed IPs through `link` as its `table` says. `set_mark` is
    /// called with the firewall mark the tunnel's socket must carry before any rule exists
    /// (so that no datagram of the tunnel's is ever routed into it); `None` asks for no
    /// mark at all (the socket is in another namespace than the device: the rules cannot
    /// capture its datagrams).
    ///
    /// # Errors
    ///
    /// A route or rule the kernel refuses (named); no CAP_NET_ADMIN for what needs it; a
    /// mark the socket cannot take. What was done is undone.
    pub(crate) fn set_up(
        link: &Link,
        config: &Config,
        set_mark: Option<&mut dyn FnMut(u32) -> std::io::Result<()>>,
    ) -> Result<Routing, Error> {
        let netlink = Netlink::open_in(link.netlink().namespace())?;
        let mut r = Routing {
            watch: Watch::links(netlink.namespace()).ok(),
            netlink,
            routes: Vec::new(),
            rules: Vec::new(),
            fwmark: None,
            table: None,
            lock: None,
            index: link.index(),
            addresses_v6: config
                .addresses
                .iter()
                .filter(|a| a.addr().is_ipv6())
                .copied()
                .collect(),
        };
        if config.table == Table::Off {
            return Ok(r);
        }
        r.remove_stale(link)?;
        let own: Vec<Cidr> = config.addresses.iter().map(Cidr::masked).collect();
        let present: Vec<tunctl::Route> = r.netlink.routes(Some(link.index()))?;
        let main_table = match config.table {
            Table::Id(t) => t,
            _ => RT_TABLE_MAIN,
        };
        let mut full = Vec::new();
        for net in config.peers.iter().flat_map(|p| &p.allowed_ips) {
            let net = net.masked();
            if net.prefix() == 0 && config.table == Table::Auto {
                full.push(net);
                continue;
            }
            // An address's own route, or one already through the device (a persistent
            // device configured before), is there already.
            if own.iter().any(|o| o.contains(&net))
                || present
                    .iter()
                    .any(|p| p.dst == net && main_table == RT_TABLE_MAIN)
            {
                continue;
            }
            r.add_route(RouteSpec {
                protocol: PROTOCOL,
                ..RouteSpec::new(net, link.index()).in_table(main_table)
            })?;
        }
        if !full.is_empty() {
            r.full_tunnel(link, config, &full, set_mark)?;
        }
        Ok(r)
    }

    /// The default routes `full` in a table of their own (each with an unreachable route
    /// behind it), the socket's mark, and the rules.
    fn full_tunnel(
        &mut self,
        link: &Link,
        config: &Config,
        full: &[Cidr],
        set_mark: Option<&mut dyn FnMut(u32) -> std::io::Result<()>>,
    ) -> Result<(), Error> {
        let (table, lock) = self.claim_table()?;
        self.lock = Some(lock);
        self.table = Some(table);
        let mark = if config.fwmark != 0 {
            config.fwmark
        } else {
            table
        };
        if let Some(set_mark) = set_mark {
            set_mark(mark).map_err(|e| {
                Error::os("SO_MARK", e).add_detail(&format!(
                    "firewall mark {mark} on the tunnel's socket, which a full tunnel needs so that its own datagrams do not enter it"
                ))
            })?;
            self.fwmark = Some(mark);
        }
        for net in full {
            self.add_route(RouteSpec {
                protocol: PROTOCOL,
                metric: Some(LAST_METRIC),
                ..RouteSpec::unreachable(*net).in_table(table)
            })?;
            self.add_route(RouteSpec {
                protocol: PROTOCOL,
                ..RouteSpec::new(*net, link.index()).in_table(table)
            })?;
        }
        let (suppress_at, table_at) = rule_priorities(table);
        for v6 in [false, true] {
            if !full.iter().any(|n| n.addr().is_ipv6() == v6) {
                continue;
            }
            if !v6 {
                // As wg-quick: reverse-path filtering takes the mark into account, so the
                // tunnel's answers from its peers are not dropped as spoofed.
                let _ = self
                    .netlink
                    .namespace()
                    .run(|| std::fs::write("/proc/sys/net/ipv4/conf/all/src_valid_mark", "1"));
            }
            self.add_rule(Rule {
                priority: Some(table_at),
                fwmark: Some(mark),
                invert: true,
                protocol: PROTOCOL,
                ..Rule::to_table(v6, table)
            })?;
            self.add_rule(Rule {
                priority: Some(suppress_at),
                suppress_prefixlength: Some(0),
                protocol: PROTOCOL,
                ..Rule::to_table(v6, RT_TABLE_MAIN)
            })?;
        }
        Ok(())
    }

    /// The first table from 51820 that no running tunnel holds, with no route in it and
    /// no rule pointing at it (wg-quick's, another program's), taken by its lock.
    fn claim_table(&self) -> Result<(u32, NameLock), Error> {
        let in_use = |t: u32| -> Result<bool, Error> {
            let (suppress_at, table_at) = rule_priorities(t);
            Ok(self.netlink.rules()?.iter().any(|r| {
                r.table == t
                    || (r.protocol == PROTOCOL
                        && (r.priority == Some(suppress_at) || r.priority == Some(table_at)))
            }) || !self.netlink.table_routes(t)?.is_empty())
        };
        for t in FIRST_TABLE..FIRST_TABLE + TABLES {
            if in_use(t)? {
                continue;
            }
            let lock = match NameLock::take(Path::new(LOCK_DIR), &lock_name(&self.netlink, t)?) {
                Ok(lock) => lock,
                // Another tunnel is setting it up right now.
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(Error::os("full tunnel", e).add_detail(LOCK_DIR)),
            };
            // Checked again under the lock: someone may have taken it meanwhile.
            if !in_use(t)? {
                return Ok((t, lock));
            }
        }
        Err(Error::from_kind(
            ErrorKind::Other,
            "full tunnel",
            "no free routing table from 51820 to 55915",
        ))
    }

    /// Removes what tunnels killed before they could clean up left (see
    /// [`remove_leftovers`]), and vpwn's routes through `link` in any table (the tunnel
    /// about to serve it is this one; a killed one may have left them on a persistent
    /// device).
    fn remove_stale(&self, link: &Link) -> Result<(), Error> {
        stale_tables(&self.netlink)?;
        for route in self.netlink.all_routes()? {
            if route.protocol == PROTOCOL
                && route.index == link.index()
                && route.kind == RouteKind::Unicast
            {
                let _ = self.netlink.del_route_spec(&spec_of(&route));
            }
        }
        Ok(())
    }

    /// The table of a rule that has the exact shape and priority of a vpwn full-tunnel
    /// rule (`not fwmark M lookup T` at T's priority, `lookup main suppress_prefixlength 0`
    /// at the one before), or `None` for any other rule.
    fn full_tunnel_rule(rule: &Rule) -> Option<u32> {
        if rule.protocol != PROTOCOL {
            return None;
        }
        let table = table_at(rule.priority?)?;
        let (suppress_at, table_at) = rule_priorities(table);
        let to_table = rule.priority == Some(table_at)
            && rule.table == table
            && rule.invert
            && rule.fwmark.is_some()
            && rule.suppress_prefixlength.is_none();
        let suppress = rule.priority == Some(suppress_at)
            && rule.table == RT_TABLE_MAIN
            && !rule.invert
            && rule.fwmark.is_none()
            && rule.suppress_prefixlength == Some(0);
        (to_table || suppress).then_some(table)
    }

    fn add_route(&mut self, spec: RouteSpec) -> Result<(), Error> {
        self.netlink.add_route_spec(&spec).map_err(|e| {
            let e = e.add_detail(&format!("route {} through the tunnel", spec.dst));
            if e.kind() == ErrorKind::PermissionDenied {
                e.add_detail("routing the peers' allowed IPs needs CAP_NET_ADMIN (or Table = off)")
            } else {
                e
            }
        })?;
        self.routes.push(spec);
        Ok(())
    }

    fn add_rule(&mut self, rule: Rule) -> Result<(), Error> {
        self.netlink.add_rule(&rule).map_err(|e| {
            e.add_detail(&format!(
                "the full tunnel's rule at priority {}",
                rule.priority.unwrap_or(0)
            ))
        })?;
        self.rules.push(rule);
        Ok(())
    }

    /// Puts back the routes the kernel removed: it removes a link's routes when the link
    /// goes down (and its IPv6 routes when its MTU drops below 1280), and never restores
    /// them. Meanwhile a full tunnel's table refuses traffic (its unreachable route); after
    /// this it flows again. Routes that are there are left alone; those the kernel refuses
    /// now (the link still down) are tried again at the next call.
    pub(crate) fn restore(&self) {
        for cidr in &self.addresses_v6 {
            let _ = self.netlink.add_address(self.index, &Address::new(*cidr));
        }
        for spec in &self.routes {
            let _ = self.netlink.add_route_spec(spec);
        }
    }

    /// Whether the device was brought up again since the last call (however briefly it
    /// was down), or announcements were lost: the link events waiting on the watch. False
    /// without a watch (the caller's look at the flags still sees the slower changes).
    pub(crate) fn came_up(&mut self) -> bool {
        let Some(watch) = self.watch.as_mut() else {
            return false;
        };
        let mut came_up = false;
        for _ in 0..EVENTS_PER_LOOK {
            match watch.next_timeout(Duration::ZERO) {
                Ok(Some(LinkEvent::Admin { link, up: true })) if link.index == self.index => {
                    came_up = true
                }
                Ok(Some(LinkEvent::Lost)) => came_up = true,
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    self.watch = None;
                    break;
                }
            }
        }
        came_up
    }

    /// Removes every route and rule this made, rules first (so that traffic never meets a
    /// rule into an empty table mid-way), then lets the table go.
    pub(crate) fn undo(&mut self) {
        for rule in self.rules.drain(..).rev() {
            let _ = self.netlink.del_rule(&rule);
        }
        for spec in self.routes.drain(..).rev() {
            let _ = self.netlink.del_route_spec(&spec);
        }
        self.lock = None;
    }
}

/// The lock-file name of `table` in `netlink`'s namespace: the namespace's inode and the
/// table (tables are per namespace; the lock directory is the host's).
fn lock_name(netlink: &Netlink, table: u32) -> Result<String, Error> {
    let (_, ino) = netlink.namespace().id()?;
    Ok(format!("{ino}-{table}"))
}

/// Removes the full tunnels' rules whose table no running tunnel holds, and vpwn's routes
/// in those tables; returns how many tables it freed.
fn stale_tables(netlink: &Netlink) -> Result<usize, Error> {
    let mut stale: Vec<u32> = Vec::new();
    for rule in netlink.rules()? {
        let Some(table) = Routing::full_tunnel_rule(&rule) else {
            continue;
        };
        if stale.contains(&table) {
            let _ = netlink.del_rule(&rule);
            continue;
        }
        // Held: its tunnel runs. Free: taken here for a moment, and let go once the rules
        // and routes are removed.
        let _held = match NameLock::take(Path::new(LOCK_DIR), &lock_name(netlink, table)?) {
            Ok(lock) => lock,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(Error::os("leftovers", e).add_detail(LOCK_DIR)),
        };
        match netlink.del_rule(&rule) {
            Err(e) if e.kind() == ErrorKind::PermissionDenied => return Err(e),
            _ => {}
        }
        for other in netlink.rules()? {
            if Routing::full_tunnel_rule(&other) == Some(table) {
                let _ = netlink.del_rule(&other);
            }
        }
        for route in netlink.table_routes(table)? {
            if route.protocol == PROTOCOL {
                let _ = netlink.del_route_spec(&spec_of(&route));
            }
        }
        stale.push(table);
    }
    Ok(stale.len())
}

/// Removes what full tunnels killed before they could clean up (SIGKILL, a crash, a power
/// cut without a reboot of the namespace) left in namespace `ns`: their rules, which while
/// they stay send traffic to a table that refuses it (a full tunnel fails closed), and
/// their tables' routes. Tunnels that run are left alone. Every `up` does this first;
/// `tunctl vpwn clean` does it alone. Returns how many full tunnels' leftovers went.
///
/// # Errors
///
/// No CAP_NET_ADMIN; the namespace cannot be entered; the lock directory
/// (`/run/tunctl/vpwn-routes`) cannot be made or others can write it.
pub fn remove_leftovers(ns: &tunctl::Namespace) -> Result<usize, Error> {
    stale_tables(&Netlink::open_in(ns)?)
}

/// What deletes `route` (exactly it: its table, link or kind, metric and protocol).
fn spec_of(route: &tunctl::Route) -> RouteSpec {
    let base = match route.kind {
        RouteKind::Unreachable => RouteSpec::unreachable(route.dst),
        _ => RouteSpec::new(route.dst, route.index),
    };
    RouteSpec {
        gateway: route.gateway,
        metric: Some(route.metric),
        protocol: route.protocol,
        ..base.in_table(route.table)
    }
}

impl Drop for Routing {
    fn drop(&mut self) {
        self.undo();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_table_has_its_own_rule_priorities() {
        assert_eq!(rule_priorities(51820), (31999, 32000));
        assert_eq!(rule_priorities(51821), (31997, 31998));
        for t in [51820, 51821, 53000, FIRST_TABLE + TABLES - 1] {
            let (a, b) = rule_priorities(t);
            assert_eq!((table_at(a), table_at(b)), (Some(t), Some(t)));
            assert!(a > 0 && b < 32766);
        }
        assert_eq!(table_at(32001), None);
        assert_eq!(table_at(32766), None);
        assert_eq!(table_at(RULE_PRIORITY - 2 * TABLES), None);
    }
}
