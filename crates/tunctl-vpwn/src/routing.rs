//! What `up` does to the host's routing, as wg-quick does it, through rtnetlink, and how it
//! is undone (on exit, on SIGTERM, on a failed `up`).
//!
//! The peers' allowed IPs are routed to the device (in the main table, or the one
//! `Table = N` names; `Table = off`: none). A default route among them (`0.0.0.0/0`, `::/0`:
//! a full tunnel) would also capture the tunnel's own datagrams to its peers' endpoints, so
//! it goes in a table of its own instead, the first free one from 51820, and the tunnel's
//! socket gets a firewall mark of that number (or the configured `FwMark`); two rules per
//! family, `not fwmark M lookup M` and `lookup main suppress_prefixlength 0`, then send all
//! unmarked traffic through the tunnel, while the tunnel's own datagrams, marked, still
//! leave by the host's real default route, and the main table's more specific routes
//! (the local networks) still apply. Routes and rules are tagged with [`PROTOCOL`], so that
//! those of a tunnel killed before it could remove them are found and removed the next time.
//!
//! Nothing is left to chance: a route or rule that cannot be added fails `up` with the
//! reason and undoes the rest; a full tunnel never falls back to routing in clear text.

use tunctl::{Cidr, Error, ErrorKind, Link, Netlink, RouteSpec, Rule, RT_TABLE_MAIN};

use crate::config::{Config, Table};

/// The `rtm_protocol` / `FRA_PROTOCOL` that marks vpwn's routes and rules (`proto 87` in
/// `ip route` and `ip rule`).
pub const PROTOCOL: u8 = 87;
/// Where a full tunnel's table and mark numbers start (as wg-quick's).
const FIRST_TABLE: u32 = 51820;

/// The routing `up` set up, undone on drop unless [`keep`](Routing::keep) is called.
pub(crate) struct Routing {
    netlink: Netlink,
    routes: Vec<RouteSpec>,
    rules: Vec<Rule>,
    /// The firewall mark the tunnel's socket must carry (a full tunnel), if any.
    pub(crate) fwmark: Option<u32>,
    /// The full tunnel's table, if any.
    pub(crate) table: Option<u32>,
}

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
    /// (so that no datagram of the tunnel's is ever routed into it).
    ///
    /// # Errors
    ///
    /// A route or rule the kernel refuses (named); no CAP_NET_ADMIN for what needs it; a
    /// mark the socket cannot take. What was done is undone.
    pub(crate) fn set_up(
        link: &Link,
        config: &Config,
        set_mark: &mut dyn FnMut(u32) -> std::io::Result<()>,
    ) -> Result<Routing, Error> {
        let netlink = Netlink::open_in(link.netlink().namespace())?;
        let mut r = Routing {
            netlink,
            routes: Vec::new(),
            rules: Vec::new(),
            fwmark: None,
            table: None,
        };
        if config.table == Table::Off {
            return Ok(r);
        }
        r.remove_stale()?;
        let own: Vec<Cidr> = config
            .addresses
            .iter()
            .filter_map(|a| Cidr::new(a.network(), a.prefix()).ok())
            .collect();
        let present: Vec<tunctl::Route> = r.netlink.routes(Some(link.index()))?;
        let main_table = match config.table {
            Table::Id(t) => t,
            _ => RT_TABLE_MAIN,
        };
        let mut full = Vec::new();
        for net in config.peers.iter().flat_map(|p| &p.allowed_ips) {
            let net = Cidr::new(net.network(), net.prefix())?;
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

    /// The default routes `full` in a table of their own, the socket's mark, and the rules.
    fn full_tunnel(
        &mut self,
        link: &Link,
        config: &Config,
        full: &[Cidr],
        set_mark: &mut dyn FnMut(u32) -> std::io::Result<()>,
    ) -> Result<(), Error> {
        let table = self.free_table()?;
        let mark = if config.fwmark != 0 {
            config.fwmark
        } else {
            table
        };
        set_mark(mark).map_err(|e| {
            Error::from(e).add_detail(&format!(
                "firewall mark {mark} on the tunnel's socket, which a full tunnel needs so that its own datagrams do not enter it"
            ))
        })?;
        self.fwmark = Some(mark);
        self.table = Some(table);
        for net in full {
            self.add_route(RouteSpec {
                protocol: PROTOCOL,
                ..RouteSpec::new(*net, link.index()).in_table(table)
            })?;
        }
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
                fwmark: Some(mark),
                invert: true,
                protocol: crate::routing::PROTOCOL,
                ..Rule::to_table(v6, table)
            })?;
            self.add_rule(Rule {
                suppress_prefixlength: Some(0),
                protocol: crate::routing::PROTOCOL,
                ..Rule::to_table(v6, RT_TABLE_MAIN)
            })?;
        }
        Ok(())
    }

    /// The first table from 51820 with no route in it and no rule pointing at it.
    fn free_table(&self) -> Result<u32, Error> {
        let rules = self.netlink.rules()?;
        for t in FIRST_TABLE..FIRST_TABLE + 4096 {
            if rules.iter().all(|r| r.table != t) && self.netlink.table_routes(t)?.is_empty() {
                return Ok(t);
            }
        }
        Err(Error::from_kind(
            ErrorKind::Other,
            "full tunnel",
            "no free routing table from 51820 to 55915",
        ))
    }

    /// Removes what a tunnel killed before it could clean up left: vpwn's rules pointing at
    /// a table no route is in any more (its device went with its routes).
    fn remove_stale(&self) -> Result<(), Error> {
        for rule in self.netlink.rules()? {
            let target = if rule.suppress_prefixlength.is_some() {
                None
            } else {
                Some(rule.table)
            };
            if rule.protocol != PROTOCOL {
                continue;
            }
            let orphan = match target {
                Some(t) => self.netlink.table_routes(t)?.is_empty(),
                // A suppress rule is orphaned when no vpwn full-tunnel rule of its family
                // is left with routes.
                None => !self.netlink.rules()?.iter().any(|o| {
                    o.protocol == PROTOCOL
                        && o.v6 == rule.v6
                        && o.suppress_prefixlength.is_none()
                        && self
                            .netlink
                            .table_routes(o.table)
                            .is_ok_and(|r| !r.is_empty())
                }),
            };
            if orphan {
                let _ = self.netlink.del_rule(&rule);
            }
        }
        Ok(())
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
        match self.netlink.add_rule(&rule) {
            Ok(()) => {}
            // The same rule, left by another tunnel of this host that routes the same way:
            // it is theirs to remove; ours works through it.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => {
                return Err(e.add_detail(&format!("the full tunnel's rule to table {}", rule.table)))
            }
        }
        self.rules.push(rule);
        Ok(())
    }

    /// Removes every route and rule this made, rules first (so that traffic never meets a
    /// rule into an empty table mid-way).
    pub(crate) fn undo(&mut self) {
        for rule in self.rules.drain(..).rev() {
            let _ = self.netlink.del_rule(&rule);
        }
        for spec in self.routes.drain(..).rev() {
            let _ = self.netlink.del_route_spec(&spec);
        }
    }
}

impl Drop for Routing {
    fn drop(&mut self) {
        self.undo();
    }
}
