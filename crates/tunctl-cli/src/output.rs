//! Text and JSON views of TUN/TAP links for `list` and `show`.

use serde_json::{json, Value};
use tunctl::{Address, LinkInfo};

/// The stable JSON object of one device (documented in README.md).
pub fn link_json(info: &LinkInfo, addrs: &[Address]) -> Value {
    let tun = info.tun.as_ref();
    let tun_flags: Vec<String> = tun.map(|t| t.flags().names()).unwrap_or_default();
    let addresses: Vec<Value> = addrs
        .iter()
        .filter(|a| a.index == info.index)
        .map(|a| {
            json!({
                "family": if a.addr.is_ipv4() { "inet" } else { "inet6" },
                "address": a.addr.to_string(),
                "prefix": a.prefix,
                "peer": a.peer.map(|p| p.to_string()),
                "broadcast": a.broadcast.map(|b| b.to_string()),
            })
        })
        .collect();
    json!({
        "name": info.name,
        "index": info.index,
        "kind": tun.map(|t| t.kind.as_str()),
        "flags": info.flag_names(),
        "tun_flags": tun_flags,
        "persist": tun.map(|t| t.persist),
        "owner": tun.and_then(|t| t.owner),
        "group": tun.and_then(|t| t.group),
        "pi": tun.map(|t| t.pi),
        "vnet_hdr": tun.map(|t| t.vnet_hdr),
        "multi_queue": tun.map(|t| t.multi_queue),
        "queues": tun.and_then(|t| t.queues),
        "disabled_queues": tun.and_then(|t| t.disabled_queues),
        "mtu": info.mtu,
        "txqueuelen": info.txqueuelen,
        "mac": info.mac.map(|m| m.to_string()),
        "carrier": info.carrier,
        "up": info.is_up(),
        "state": info.operstate,
        "addresses": addresses,
    })
}

fn link_text(info: &LinkInfo, addrs: &[Address]) -> String {
    let mut out = String::new();
    let kind = info.tun.as_ref().map_or("?", |t| t.kind.as_str());
    out.push_str(&format!(
        "{}: {} <{}> mtu {} state {}",
        info.name,
        kind,
        info.flag_names().join(","),
        info.mtu,
        info.operstate
    ));
    if let Some(t) = &info.tun {
        let mut extra = Vec::new();
        if t.persist {
            extra.push("persist".to_string());
        }
        if t.pi {
            extra.push("pi".to_string());
        }
        if t.vnet_hdr {
            extra.push("vnet_hdr".to_string());
        }
        if t.multi_queue {
            extra.push(format!("multi_queue queues {}", t.queues.unwrap_or(0)));
        }
        if let Some(uid) = t.owner {
            let name = tunctl::user_name(uid).unwrap_or_else(|| uid.to_string());
            extra.push(format!("user {name}"));
        }
        if let Some(gid) = t.group {
            let name = tunctl::group_name(gid).unwrap_or_else(|| gid.to_string());
            extra.push(format!("group {name}"));
        }
        if !extra.is_empty() {
            out.push_str(&format!("\n    {}", extra.join(" ")));
        }
    }
    if let Some(mac) = info.mac {
        out.push_str(&format!("\n    link/ether {mac}"));
    }
    for a in addrs.iter().filter(|a| a.index == info.index) {
        let fam = if a.addr.is_ipv4() { "inet" } else { "inet6" };
        out.push_str(&format!("\n    {fam} {a}"));
    }
    out
}

/// Prints every link (`list`).
pub fn print_links(links: &[LinkInfo], addrs: &[Address], json: bool) {
    if json {
        let all: Vec<Value> = links.iter().map(|l| link_json(l, addrs)).collect();
        crate::out(format_args!("{}", Value::Array(all)));
    } else {
        for link in links {
            crate::out(format_args!("{}", link_text(link, addrs)));
        }
    }
}

/// Prints one link (`show`).
pub fn print_link(info: &LinkInfo, addrs: &[Address], json: bool) {
    if json {
        crate::out(format_args!("{}", link_json(info, addrs)));
    } else {
        crate::out(format_args!("{}", link_text(info, addrs)));
    }
}
