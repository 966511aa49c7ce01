//! Carrying out an allowed request: create (born complete in a private namespace, see
//! `tunctl::Builder::owner`), change or delete a device the helper made for the caller.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use tunctl::helper::{Netns, Op, Reply, Request};
use tunctl::{Device, Link, LinkConfig, Namespace, Netlink};

use crate::policy::{tag, Caller, Policy};
use crate::sys;

/// The namespace a request names, with the fd that keeps it reachable.
pub(crate) fn open_ns(ns: &Netns) -> Result<(Namespace, Option<OwnedFd>), String> {
    match ns {
        Netns::Own => Ok((Namespace::Current, None)),
        Netns::Named(name) => {
            let path = Path::new(tunctl::NETNS_RUN_DIR).join(name);
            let fd = sys::open_netns_file(&path).map_err(|e| format!("namespace {name}: {e}"))?;
            Ok((
                Namespace::path(format!("/proc/self/fd/{}", fd.as_raw_fd())),
                Some(fd),
            ))
        }
    }
}

/// The link configuration a request asks for.
pub(crate) fn link_config(req: &Request) -> LinkConfig {
    LinkConfig {
        mtu: req.mtu,
        del_addrs: req.del_addrs.clone(),
        addrs: req.addrs.clone(),
        peer: req.peer,
        up: if req.up {
            Some(true)
        } else if req.down {
            Some(false)
        } else {
            None
        },
        ..LinkConfig::default()
    }
}

/// The devices in a namespace that the helper created for `uid`.
pub(crate) fn count_tagged(netlink: &Netlink, uid: u32) -> Result<usize, String> {
    let want = tag(uid);
    netlink
        .tun_links()
        .map(|links| {
            links
                .iter()
                .filter(|l| l.alias.as_deref() == Some(want.as_str()))
                .count()
        })
        .map_err(|e| e.to_string())
}

/// For set and delete: the device, if the helper created it for the caller.
fn tagged_link(caller: &Caller, ns: &Namespace, req: &Request) -> Result<Link, Reply> {
    let link = Link::by_name(ns, &req.name).map_err(|e| Reply::from_error(&e))?;
    match link.info() {
        Ok(info)
            if info.tun.is_some() && info.alias.as_deref() == Some(tag(caller.uid).as_str()) =>
        {
            Ok(link)
        }
        Ok(_) => Err(Reply::Denied(format!(
            "{} was not created for {}",
            req.name,
            caller.describe()
        ))),
        Err(e) => Err(Reply::from_error(&e)),
    }
}

/// The plan for a change, made from one snapshot of the device, with the networks it routes
/// checked against the rule.
fn plan_checked(
    policy: &Policy,
    rule: usize,
    link: &Link,
    req: &Request,
) -> Result<tunctl::Plan, Reply> {
    let plan = link
        .info()
        .and_then(|info| Ok((info, link.addresses()?)))
        .and_then(|(info, addrs)| link_config(req).plan_for(&info, &addrs))
        .map_err(|e| Reply::from_error(&e))?;
    let routes = plan.routed_networks().map_err(|e| Reply::from_error(&e))?;
    match policy.rules.get(rule) {
        Some(r) => r.within_ranges(&routes).map_err(Reply::Denied)?,
        None => return Err(Reply::Denied("no such rule".into())),
    }
    Ok(plan)
}

/// What a device's holder must not be able to do through packets it writes (see
/// [`Link::harden`]), set after the device arrived in its namespace (a move resets it);
/// with no IPv6 range in the rule, IPv6 is off on the device altogether.
fn harden(link: &Link, policy: &Policy, rule: usize) -> tunctl::Result<()> {
    let v6_allowed = policy
        .rules
        .get(rule)
        .is_some_and(|r| r.addresses.iter().any(|c| c.addr().is_ipv6()));
    link.harden(v6_allowed)
}

/// Carries out an allowed request.
pub(crate) fn execute(
    caller: &Caller,
    policy: &Policy,
    rule: usize,
    req: &Request,
) -> (Reply, Vec<OwnedFd>) {
    let err = |r: Reply| (r, Vec::new());
    let (ns, _keep) = match open_ns(&req.netns) {
        Ok(v) => v,
        Err(e) => return err(Reply::Error(e)),
    };
    if req.op != Op::Create {
        let link = match tagged_link(caller, &ns, req) {
            Ok(l) => l,
            Err(reply) => return (reply, Vec::new()),
        };
        let done = if req.op == Op::Delete {
            link.delete()
        } else {
            // One snapshot of the device, one plan from it: the networks checked are those
            // of the very plan applied (another request of the same user may change the
            // addresses meanwhile; then a step of this plan fails instead of routing what
            // the policy never saw).
            match plan_checked(policy, rule, &link, req) {
                Ok(plan) => plan.apply(&link, None),
                Err(reply) => return (reply, Vec::new()),
            }
        };
        return match done {
            Ok(()) => (
                Reply::Ok {
                    name: req.name.clone(),
                    index: link.index(),
                },
                Vec::new(),
            ),
            Err(e) => err(Reply::from_error(&e)),
        };
    }
    // Born in a private namespace with its tag, then moved into the target: nobody can see
    // it untagged (see Builder::alias). Root owns it at first (with no owner at all the
    // kernel lets anyone attach), so only CAP_NET_ADMIN can attach: the caller becomes its
    // owner once it is hardened and configured, never before (a caller attaching a queue
    // and killing this helper in between would keep an unhardened device). Persistent only
    // as the last step, after every check: a helper killed before then leaves nothing.
    let mut b = Device::builder()
        .name(&req.name)
        .kind(req.kind)
        .packet_info(req.pi)
        .vnet_hdr(req.vnet_hdr)
        .exclusive(true)
        .namespace(ns)
        .owner(0)
        .alias(tag(caller.uid))
        // Hardened below, where the rule decides whether IPv6 stays on.
        .harden(false);
    if req.multi_queue {
        b = b.multi_queue(1);
    }
    let dev = match b.create() {
        Ok(d) => d,
        Err(e) => return err(Reply::from_error(&e)),
    };
    // The kernel's refusals keep their errno on the wire; the policy's stay denials.
    let kernel = |e: tunctl::Error| Reply::from_error(&e);
    let setup = (|| -> Result<(OwnedFd, OwnedFd), Reply> {
        if !policy.name_allowed(rule, dev.name()) {
            return Err(Reply::Denied(format!(
                "the kernel chose {}, which no allowed pattern matches",
                dev.name()
            )));
        }
        let link = dev.link().map_err(kernel)?;
        // Helpers running side by side may each have seen room for one more: count again.
        if let Some(max) = policy.rules.get(rule).and_then(|r| r.max_devices) {
            let mine = count_tagged(link.netlink(), caller.uid).map_err(Reply::Error)?;
            if mine > max {
                return Err(Reply::Denied(format!(
                    "{mine} devices with this one, the limit is {max}"
                )));
            }
        }
        harden(link, policy, rule).map_err(kernel)?;
        let plan = plan_checked(policy, rule, link, req)?;
        plan.apply(link, None).map_err(kernel)?;
        dev.set_owner(caller.uid).map_err(kernel)?;
        if req.persist {
            dev.set_persist(true).map_err(kernel)?;
        }
        let tun = dev.queues()[0]
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| kernel(e.into()))?;
        let nl = link.netlink().socket_fd().map_err(kernel)?;
        Ok((tun, nl))
    })();
    match setup {
        Ok((tun, nl)) => (
            Reply::Ok {
                name: dev.name().to_string(),
                index: dev.index(),
            },
            vec![tun, nl],
        ),
        Err(e) => {
            let _ = dev.destroy();
            err(e)
        }
    }
}
