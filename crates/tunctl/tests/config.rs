//! Configuration over rtnetlink and namespaces, checked against `ip -j` (an independent
//! view). Every device lives in a namespace the test creates; the root namespace never gets
//! an address.

mod common;

use std::net::IpAddr;
use std::os::linux::fs::MetadataExt;
use std::process::Command;

use common::{ip_addrs, ip_flags, ip_link, privileged, TestNs};
use tunctl::{Cidr, Device, ErrorKind, Link, Namespace, Netlink};

fn tun(t: &TestNs, name: &str) -> Device {
    Device::builder()
        .tun()
        .name(name)
        .namespace(t.ns.clone())
        .create()
        .unwrap()
}

fn tap(t: &TestNs, name: &str) -> Device {
    Device::builder()
        .tap()
        .name(name)
        .namespace(t.ns.clone())
        .create()
        .unwrap()
}

fn find_addr<'a>(addrs: &'a [serde_json::Value], local: &str) -> Option<&'a serde_json::Value> {
    addrs.iter().find(|a| a["local"] == local)
}

#[test]
fn addresses_of_any_valid_prefix_are_added_listed_and_removed() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let dev = tun(&t, "addr0");
    let cidrs = [
        "10.60.0.1/8",
        "10.61.0.1/24",
        "10.62.0.1/31",
        "10.63.0.1/32",
        "10.64.0.1/1",
        "fd00:60::1/64",
        "fd00:61::1/128",
        "fd00:62::1/1",
        "fd00:63::1/127",
    ];
    for c in cidrs {
        dev.add_address(c.parse().unwrap())
            .unwrap_or_else(|e| panic!("{c}: {e}"));
    }
    let seen = ip_addrs(Some(&t.name), "addr0");
    for c in cidrs {
        let cidr: Cidr = c.parse().unwrap();
        let a =
            find_addr(&seen, &cidr.addr().to_string()).unwrap_or_else(|| panic!("ip lacks {c}"));
        assert_eq!(a["prefixlen"], cidr.prefix(), "{c}");
    }
    // Our own listing agrees, with the default broadcast for IPv4 up to /30.
    let ours = dev.addresses().unwrap();
    let v4 = ours
        .iter()
        .find(|a| a.addr.to_string() == "10.61.0.1")
        .unwrap();
    assert_eq!(v4.broadcast.unwrap().to_string(), "10.61.0.255");
    assert_eq!(
        find_addr(&seen, "10.61.0.1").unwrap()["broadcast"],
        "10.61.0.255"
    );
    assert!(ours
        .iter()
        .find(|a| a.addr.to_string() == "10.63.0.1")
        .unwrap()
        .broadcast
        .is_none());
    // Duplicate, then removal, then removal of what is not there.
    let err = dev
        .add_address("10.61.0.1/24".parse().unwrap())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    dev.del_address("10.61.0.1/24".parse().unwrap()).unwrap();
    dev.del_address("fd00:61::1/128".parse().unwrap()).unwrap();
    let seen = ip_addrs(Some(&t.name), "addr0");
    assert!(find_addr(&seen, "10.61.0.1").is_none());
    assert!(find_addr(&seen, "fd00:61::1").is_none());
    let err = dev
        .del_address("10.61.0.1/24".parse().unwrap())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().starts_with("addr0: "), "{err}");
    // Two IPv4 addresses side by side: netlink adds, it does not replace (the seed's
    // SIOCSIFADDR replaced the primary address).
    assert!(find_addr(&seen, "10.60.0.1").is_some() && find_addr(&seen, "10.62.0.1").is_some());
}

#[test]
fn peer_sets_pointopoint_address_not_notrailers() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    // The seed's dstaddr test case: up 127.241.173.1, dstaddr 127.241.173.2 (in a namespace).
    for (dev, name) in [(tun(&t, "p2p0"), "p2p0"), (tap(&t, "p2p1"), "p2p1")] {
        dev.add_address("127.241.173.1/32".parse().unwrap())
            .unwrap();
        dev.up().unwrap();
        dev.set_peer(ip("127.241.173.1"), ip("127.241.173.2"))
            .unwrap();
        let a = find_addr(&ip_addrs(Some(&t.name), name), "127.241.173.1")
            .cloned()
            .unwrap();
        assert_eq!(a["address"], "127.241.173.2", "{name}: ip shows the peer");
        let flags = ip_flags(&ip_link(Some(&t.name), name).unwrap());
        assert!(
            !flags.contains(&"NOTRAILERS".to_string()),
            "{name}: {flags:?}"
        );
        if name == "p2p0" {
            assert!(flags.contains(&"POINTOPOINT".to_string()), "{flags:?}");
            assert!(dev.info().unwrap().is_pointopoint());
        }
        let ours = dev.addresses().unwrap();
        assert_eq!(
            ours.iter().find(|a| a.peer.is_some()).unwrap().peer,
            Some("127.241.173.2".parse::<IpAddr>().unwrap())
        );
    }
    // Setting the peer replaces the primary address: its secondaries survive.
    let sec = tun(&t, "p2p5");
    sec.add_address("10.71.0.1/24".parse().unwrap()).unwrap();
    sec.add_address("10.71.0.7/24".parse().unwrap()).unwrap();
    sec.set_peer(ip("10.71.0.1"), ip("10.71.0.2")).unwrap();
    let seen = ip_addrs(Some(&t.name), "p2p5");
    assert_eq!(
        find_addr(&seen, "10.71.0.1").unwrap()["address"],
        "10.71.0.2"
    );
    assert!(
        find_addr(&seen, "10.71.0.7").is_some(),
        "secondary kept: {seen:?}"
    );
    // IPv6 peer too (the original could not).
    let dev = tun(&t, "p2p6");
    dev.add_address("fd00:70::1/128".parse().unwrap()).unwrap();
    dev.set_peer(ip("fd00:70::1"), ip("fd00:70::2")).unwrap();
    let a = find_addr(&ip_addrs(Some(&t.name), "p2p6"), "fd00:70::1")
        .cloned()
        .unwrap();
    assert_eq!(a["address"], "fd00:70::2");
    // The peer pairs with the address named, never with "the first one": a secondary
    // /32 gets the peer, and the /16 primary keeps routing only its own network.
    let pair = tun(&t, "p2p8");
    pair.add_address("10.72.0.1/16".parse().unwrap()).unwrap();
    pair.add_address("10.72.5.5/32".parse().unwrap()).unwrap();
    pair.set_peer(ip("10.72.5.5"), ip("10.73.0.1")).unwrap();
    let seen = ip_addrs(Some(&t.name), "p2p8");
    assert_eq!(
        find_addr(&seen, "10.72.5.5").unwrap()["address"],
        "10.73.0.1"
    );
    assert_eq!(find_addr(&seen, "10.72.0.1").unwrap()["prefixlen"], 16);
    assert!(find_addr(&seen, "10.72.0.1")
        .unwrap()
        .get("address")
        .is_none());
    // An address the link does not have, or a family mismatch, is a clear error.
    let bare = tun(&t, "p2p7");
    let err = bare.set_peer(ip("10.0.0.1"), ip("10.0.0.2")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.to_string().contains("not an address of this link"),
        "{err}"
    );
    let err = pair.set_peer(ip("10.72.0.1"), ip("fd00::2")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn broadcast_mtu_mac_txqueuelen_carrier_and_updown() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    // The seed's broadcast test case: up 127.241.174.1, broadcast 127.241.174.3.
    let dev = tap(&t, "cfg0");
    dev.add_address("127.241.174.1/24".parse().unwrap())
        .unwrap();
    dev.set_broadcast(
        "127.241.174.1".parse().unwrap(),
        "127.241.174.3".parse().unwrap(),
    )
    .unwrap();
    let a = find_addr(&ip_addrs(Some(&t.name), "cfg0"), "127.241.174.1")
        .cloned()
        .unwrap();
    assert_eq!(a["broadcast"], "127.241.174.3");

    dev.set_mtu(9000).unwrap();
    assert_eq!(ip_link(Some(&t.name), "cfg0").unwrap()["mtu"], 9000);
    assert_eq!(dev.mtu().unwrap(), 9000);
    for bad in [67, 65536, 0] {
        let err = dev.set_mtu(bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}: {err}");
    }
    assert_eq!(
        ip_link(Some(&t.name), "cfg0").unwrap()["mtu"],
        9000,
        "unchanged after refusals"
    );
    dev.set_mtu(1000).unwrap();
    let err = dev
        .add_address("fd00:80::1/64".parse().unwrap())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("1280"), "{err}");

    dev.set_mac("02:00:00:00:80:01".parse().unwrap()).unwrap();
    assert_eq!(
        ip_link(Some(&t.name), "cfg0").unwrap()["address"],
        "02:00:00:00:80:01"
    );
    assert_eq!(
        dev.set_mac("01:00:00:00:00:01".parse().unwrap())
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    let tun_dev = tun(&t, "cfg1");
    assert_eq!(
        tun_dev
            .set_mac("02:00:00:00:80:02".parse().unwrap())
            .unwrap_err()
            .kind(),
        ErrorKind::Unsupported
    );

    dev.set_txqueuelen(77).unwrap();
    assert_eq!(ip_link(Some(&t.name), "cfg0").unwrap()["txqlen"], 77);

    dev.up().unwrap();
    assert!(ip_flags(&ip_link(Some(&t.name), "cfg0").unwrap()).contains(&"UP".to_string()));
    let link = dev.link().unwrap();
    link.set_carrier(false).unwrap();
    assert!(ip_flags(&ip_link(Some(&t.name), "cfg0").unwrap()).contains(&"NO-CARRIER".to_string()));
    link.set_carrier(true).unwrap();
    assert!(!ip_flags(&ip_link(Some(&t.name), "cfg0").unwrap()).contains(&"NO-CARRIER".to_string()));
    dev.set_mtu(1500).unwrap();
    dev.add_address("fd00:74::1/64".parse().unwrap()).unwrap();
    dev.down().unwrap();
    let flags = ip_flags(&ip_link(Some(&t.name), "cfg0").unwrap());
    assert!(!flags.contains(&"UP".to_string()));
    // Down keeps the addresses of both families (the Erlang original's down/1 promised it
    // for IPv4; the kernel drops IPv6 ones unless keep_addr_on_down is set).
    for addr in ["127.241.174.1", "fd00:74::1"] {
        assert!(
            find_addr(&ip_addrs(Some(&t.name), "cfg0"), addr).is_some(),
            "{addr} kept over down"
        );
    }
    dev.up().unwrap();
    for addr in ["127.241.174.1", "fd00:74::1"] {
        assert!(
            find_addr(&ip_addrs(Some(&t.name), "cfg0"), addr).is_some(),
            "{addr} back after up"
        );
    }
}

#[test]
fn kernel_view_of_devices_we_did_not_open() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    // Created by iproute2, not by us.
    common::ip_ok(
        &t.name,
        &[
            "tuntap",
            "add",
            "dev",
            "ext0",
            "mode",
            "tap",
            "multi_queue",
            "vnet_hdr",
            "user",
            "1234",
            "group",
            "5678",
        ],
    );
    common::ip_ok(
        &t.name,
        &["tuntap", "add", "dev", "ext1", "mode", "tun", "pi"],
    );
    let netlink = Netlink::open_in(&t.ns).unwrap();
    let links = netlink.tun_links().unwrap();
    let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["ext0", "ext1"], "lo is not a tun device");
    let ext0 = links[0].tun.as_ref().unwrap();
    assert_eq!(ext0.kind, tunctl::Kind::Tap);
    assert!(ext0.multi_queue && ext0.vnet_hdr && ext0.persist && !ext0.pi);
    assert_eq!((ext0.owner, ext0.group), (Some(1234), Some(5678)));
    assert_eq!((ext0.queues, ext0.disabled_queues), (Some(0), Some(0)));
    let ext1 = links[1].tun.as_ref().unwrap();
    assert_eq!(ext1.kind, tunctl::Kind::Tun);
    assert!(ext1.pi && !ext1.multi_queue && ext1.owner.is_none());
    // Attach to the iproute2 device with matching flags, then delete it through netlink.
    let dev = Device::builder()
        .tap()
        .name("ext0")
        .multi_queue(2)
        .vnet_hdr(true)
        .namespace(t.ns.clone())
        .open()
        .unwrap();
    assert_eq!(dev.info().unwrap().tun.unwrap().queues, Some(2));
    let link = Link::by_name(&t.ns, "ext1").unwrap();
    link.delete().unwrap();
    assert!(ip_link(Some(&t.name), "ext1").is_none());
}

#[test]
fn namespaces_are_created_listed_used_and_deleted_natively() {
    if !privileged() {
        return;
    }
    let name = format!("tunctl-test-{}", common::unique("ns"));
    let created = Namespace::create(&name).unwrap();
    let ns: Namespace = (&created).into();
    assert!(Namespace::list().unwrap().contains(&name));
    let seen = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&seen.stdout).contains(&name),
        "ip netns list sees it"
    );
    assert_eq!(
        Namespace::create(&name).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    // A device born and configured in there, while this process stays in its namespace.
    let own_ns = std::fs::metadata("/proc/self/ns/net").unwrap().st_ino();
    let dev = Device::builder()
        .tun()
        .name("nsdev0")
        .namespace(ns.clone())
        .create()
        .unwrap();
    dev.add_address("10.90.0.1/24".parse().unwrap()).unwrap();
    dev.up().unwrap();
    assert_eq!(
        std::fs::metadata("/proc/self/ns/net").unwrap().st_ino(),
        own_ns
    );
    assert!(
        !std::path::Path::new("/sys/class/net/nsdev0").exists(),
        "not in our namespace"
    );
    assert!(find_addr(&ip_addrs(Some(&name), "nsdev0"), "10.90.0.1").is_some());
    // The same namespace by path and by pid.
    let by_path = Namespace::path(format!("/run/netns/{name}"));
    assert!(Link::by_name(&by_path, "nsdev0").is_ok());
    let mut child = Command::new("ip")
        .args(["netns", "exec", &name, "sleep", "10"])
        .spawn()
        .unwrap();
    let by_pid = Namespace::pid(child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let found = loop {
        // `ip netns exec` enters the namespace right after fork: wait for it, bounded.
        if Link::by_name(&by_pid, "nsdev0").is_ok() {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "namespace by pid");
    drop(dev);
    created.delete().unwrap();
    assert!(!Namespace::list().unwrap().contains(&name));
    assert_eq!(
        Namespace::delete(&name).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // Invalid names and missing namespaces.
    for bad in ["", "a/b", "..", "."] {
        assert_eq!(
            Namespace::create(bad).unwrap_err().kind(),
            ErrorKind::InvalidInput,
            "{bad:?}"
        );
    }
    let missing = Namespace::named("tunctl-never-there").unwrap();
    let err = Netlink::open_in(&missing).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.to_string()
            .contains("/run/netns/tunctl-never-there does not exist"),
        "{err}"
    );
}

#[test]
fn lookups_fail_clearly() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let err = Link::by_name(&t.ns, "nothere0").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        err.to_string(),
        format!(
            "nothere0: RTM_GETLINK: no device nothere0 in netns {}",
            t.name
        )
    );
    assert_eq!(
        Link::by_name(&t.ns, "bad name").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(tunctl::user_id("root").unwrap(), 0);
    assert_eq!(tunctl::user_id("4242").unwrap(), 4242);
    assert_eq!(
        tunctl::user_id("no-such-user-x").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(tunctl::group_id("root").unwrap(), 0);
    assert_eq!(
        tunctl::group_id("no-such-group-x").unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

/// Routes over rtnetlink in the device's namespace (what a tunnel adds for its allowed IPs),
/// both families, checked with `ip -j route`; and a tap enslaved to a Linux bridge and
/// released (IFLA_MASTER, what a bridge's uplink needs).
#[test]
fn routes_and_bridge_ports_in_the_devices_namespace() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let dev = tun(&t, "rt0");
    dev.add_address("10.76.0.1/24".parse().unwrap()).unwrap();
    dev.add_address("fd00:76::1/64".parse().unwrap()).unwrap();
    dev.up().unwrap();
    let link = dev.link().unwrap();
    let v4: Cidr = "10.77.0.0/16".parse().unwrap();
    let v6: Cidr = "fd00:77::/48".parse().unwrap();
    link.add_route(v4, None).unwrap();
    link.add_route(v6, None).unwrap();
    let shown = |family: &str| {
        common::ip_json(Some(&t.name), &[family, "route", "show", "dev", "rt0"])
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["dst"].as_str().map(str::to_string))
            .collect::<Vec<_>>()
    };
    assert!(
        shown("-4").contains(&"10.77.0.0/16".to_string()),
        "{:?}",
        shown("-4")
    );
    assert!(
        shown("-6").contains(&"fd00:77::/48".to_string()),
        "{:?}",
        shown("-6")
    );
    let ours: Vec<Cidr> = link.routes().unwrap().iter().map(|r| r.dst).collect();
    assert!(ours.contains(&v4) && ours.contains(&v6), "{ours:?}");
    assert_eq!(
        link.add_route(v4, None).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    link.del_route(v4).unwrap();
    link.del_route(v6).unwrap();
    assert!(!shown("-4").contains(&"10.77.0.0/16".to_string()));
    assert!(!shown("-6").contains(&"fd00:77::/48".to_string()));
    assert_eq!(link.del_route(v4).unwrap_err().kind(), ErrorKind::NotFound);

    // A tap as a port of a Linux bridge, and released again.
    common::ip_ok(&t.name, &["link", "add", "rtbr0", "type", "bridge"]);
    let bridge = Link::by_name(&t.ns, "rtbr0").unwrap();
    let port = tap(&t, "rtp0");
    port.link()
        .unwrap()
        .set_master(Some(bridge.index()))
        .unwrap();
    assert_eq!(ip_link(Some(&t.name), "rtp0").unwrap()["master"], "rtbr0");
    assert_eq!(port.info().unwrap().master, Some(bridge.index()));
    port.link().unwrap().set_master(None).unwrap();
    assert!(ip_link(Some(&t.name), "rtp0")
        .unwrap()
        .get("master")
        .is_none());
    assert_eq!(port.info().unwrap().master, None);
    assert!(port.link().unwrap().set_master(Some(999_999)).is_err());
}

/// `ip -n NS -j -d link show dev NAME`, which must exist.
fn shown(ns: &str, name: &str) -> serde_json::Value {
    ip_link(Some(ns), name).unwrap_or_else(|| panic!("ip sees no {name} in {ns}"))
}

/// The name `ip -n NS netns list-id` gives the namespace of `nsid` (as seen from `ns`).
fn nsid_name(ns: &str, nsid: &serde_json::Value) -> Option<String> {
    common::ip_json(Some(ns), &["netns", "list-id"])
        .as_array()?
        .iter()
        .find(|e| &e["nsid"] == nsid)
        .and_then(|e| e["name"].as_str().map(str::to_string))
}

/// Veth pairs made over rtnetlink (one RTM_NEWLINK, the peer born in its namespace):
/// checked with `ip -j` in both namespaces (kind, each end's peer index, the peer's
/// namespace); bad names, a taken name and a missing namespace refused with nothing left
/// behind; deletion of either end, by handle or by name, takes both.
#[test]
fn veth_pairs_across_namespaces_are_created_refused_and_deleted() {
    let Some((a, _g)) = common::privileged_ns() else {
        return;
    };
    let b = TestNs::new();
    let netlink = Netlink::open_in(&a.ns).unwrap();
    let names = |t: &TestNs| common::links(Some(&t.name));
    let lo_only = vec!["lo".to_string()];

    // Refused before anything is sent: bad names on either end, and one name for both ends
    // in one namespace (named, or by path: the same namespace all the same).
    let long = "a234567890123456";
    for (name, peer) in [
        ("", "vok0"),
        ("vok0", ""),
        (long, "vok0"),
        ("vok0", long),
        ("a b", "vok0"),
        ("vok0", "a/b"),
        ("vok%d", "vok1"),
        ("vok0", "vok%d"),
        (".", "vok0"),
        ("vok0", "a:1"),
    ] {
        let err = netlink.add_veth(name, peer, &b.ns).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidInput,
            "{name:?} {peer:?}: {err}"
        );
        assert!(err.to_string().contains("invalid interface name"), "{err}");
    }
    for same in [
        a.ns.clone(),
        Namespace::path(format!("/run/netns/{}", a.name)),
    ] {
        let err = netlink.add_veth("vdup0", "vdup0", &same).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(
            err.to_string().contains("both ends are named vdup0"),
            "{err}"
        );
    }
    let missing = Namespace::named("tunctl-never-there").unwrap();
    let err = netlink.add_veth("vok0", "vok1", &missing).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(names(&a), lo_only, "nothing created");
    assert_eq!(names(&b), lo_only, "nothing created");

    // Both ends in one namespace (the caller's, from a thread inside it: Current).
    let (s0, s1) =
        a.ns.run(|| {
            Netlink::open()
                .unwrap()
                .add_veth("vsame0", "vsame1", &Namespace::Current)
        })
        .unwrap()
        .unwrap();
    assert_eq!((s0.name(), s1.name()), ("vsame0", "vsame1"));
    let (j0, j1) = (shown(&a.name, "vsame0"), shown(&a.name, "vsame1"));
    assert_eq!(j0["linkinfo"]["info_kind"], "veth");
    assert_eq!(j0["ifindex"], s0.index());
    assert_eq!(j1["ifindex"], s1.index());
    // In one namespace, ip names each end's peer (IFLA_LINK) instead of giving its index.
    assert_eq!(j0["link"], "vsame1", "{j0}");
    assert_eq!(j1["link"], "vsame0", "{j1}");
    assert!(j0.get("link_netnsid").is_none(), "same namespace: {j0}");

    // Across namespaces: A's end here, B's end born in B.
    let (va, vb) = (common::unique("va"), common::unique("vb"));
    let (la, lb) = netlink.add_veth(&va, &vb, &b.ns).unwrap();
    assert_eq!((la.name(), lb.name()), (va.as_str(), vb.as_str()));
    assert_eq!(la.netlink().namespace(), &a.ns);
    assert_eq!(lb.netlink().namespace(), &b.ns);
    let (ja, jb) = (shown(&a.name, &va), shown(&b.name, &vb));
    for (j, ours) in [(&ja, &la), (&jb, &lb)] {
        assert_eq!(j["linkinfo"]["info_kind"], "veth", "{j}");
        assert_eq!(j["ifindex"], ours.index(), "{j}");
    }
    assert_eq!(ja["link_index"], lb.index(), "A's end points at B's: {ja}");
    assert_eq!(jb["link_index"], la.index(), "B's end points at A's: {jb}");
    assert_eq!(
        nsid_name(&a.name, &ja["link_netnsid"]),
        Some(b.name.clone())
    );
    assert_eq!(
        nsid_name(&b.name, &jb["link_netnsid"]),
        Some(a.name.clone())
    );
    assert!(
        ip_link(Some(&a.name), &vb).is_none(),
        "the peer is only in B"
    );
    assert!(
        ip_link(None, &va).is_none() && ip_link(None, &vb).is_none(),
        "not in root"
    );
    assert_eq!(la.info().unwrap().link_kind.as_deref(), Some("veth"));
    // The handles configure their ends, each in its namespace.
    la.up().unwrap();
    lb.up().unwrap();
    assert!(ip_flags(&shown(&a.name, &va)).contains(&"UP".to_string()));
    assert!(ip_flags(&shown(&b.name, &vb)).contains(&"LOWER_UP".to_string()));

    // A name taken on either side: AlreadyExists naming it, and nothing left behind.
    let before = (names(&a), names(&b));
    let err = netlink.add_veth(&va, "vnew1", &b.ns).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(err.subject(), Some(va.as_str()), "{err}");
    assert!(
        err.to_string().contains(&format!("netns {}", a.name)),
        "{err}"
    );
    let err = netlink.add_veth("vnew0", &vb, &b.ns).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(err.subject(), Some(vb.as_str()), "{err}");
    assert!(
        err.to_string().contains(&format!("netns {}", b.name)),
        "{err}"
    );
    assert_eq!((names(&a), names(&b)), before, "nothing left behind");

    // Deleting one end deletes both: by handle across namespaces, by name in one.
    la.delete().unwrap();
    assert!(ip_link(Some(&a.name), &va).is_none());
    assert!(ip_link(Some(&b.name), &vb).is_none(), "the peer went too");
    assert_eq!(lb.info().unwrap_err().kind(), ErrorKind::NotFound);
    netlink.delete_link_by_name("vsame1").unwrap();
    assert_eq!(names(&a), lo_only);
    let err = netlink.delete_link_by_name("vsame1").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(
        err.to_string(),
        format!("vsame1: RTM_DELLINK: no device vsame1 in netns {}", a.name)
    );
    assert_eq!(
        netlink.delete_link_by_name("bad name").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(names(&b), lo_only);
}

/// Consumes events until one matches `want` (at most 3 s), failing with what came instead.
fn expect_event(
    watch: &mut tunctl::Watch,
    what: &str,
    want: impl Fn(&tunctl::LinkEvent) -> bool,
) -> tunctl::LinkEvent {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut seen = Vec::new();
    while std::time::Instant::now() < deadline {
        match watch
            .next_timeout(std::time::Duration::from_millis(200))
            .unwrap()
        {
            Some(e) if want(&e) => return e,
            Some(e) => seen.push(format!("{e:?}")),
            None => {}
        }
    }
    panic!("no {what} event; came instead: {seen:#?}");
}

#[test]
fn link_address_and_route_events_of_changes_made_from_outside() {
    use tunctl::LinkEvent as E;
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let other = TestNs::new();
    let mut watch = Netlink::open_in(&t.ns).unwrap().watch().unwrap();
    let mut links_only = tunctl::Watch::links(&t.ns).unwrap();
    let mut there = tunctl::Watch::open(&other.ns).unwrap();
    common::ip_ok(
        &t.name,
        &["link", "add", "wa0", "type", "veth", "peer", "name", "wb0"],
    );
    let created = expect_event(
        &mut watch,
        "created",
        |e| matches!(e, E::Created(l) if l.name == "wa0"),
    );
    let index = created.index();
    assert_eq!(ip_link(Some(&t.name), "wa0").unwrap()["ifindex"], index);
    common::ip_ok(&t.name, &["link", "set", "wa0", "name", "wa1"]);
    expect_event(
        &mut watch,
        "renamed",
        |e| matches!(e, E::Renamed { from, link } if from == "wa0" && link.name == "wa1" && link.index == index),
    );
    common::ip_ok(&t.name, &["link", "set", "wa1", "up"]);
    expect_event(
        &mut watch,
        "admin up",
        |e| matches!(e, E::Admin { link, up: true } if link.index == index),
    );
    common::ip_ok(&t.name, &["link", "set", "wb0", "up"]);
    expect_event(
        &mut watch,
        "carrier",
        |e| matches!(e, E::Carrier { link, carrier: true } if link.index == index),
    );
    common::ip_ok(&t.name, &["addr", "add", "10.58.0.1/24", "dev", "wa1"]);
    let added = expect_event(
        &mut watch,
        "address added",
        |e| matches!(e, E::AddressAdded(a) if a.addr.to_string() == "10.58.0.1"),
    );
    assert_eq!(
        (added.index(), "10.58.0.1/24"),
        (
            index,
            {
                let E::AddressAdded(a) = &added else {
                    unreachable!()
                };
                a.cidr().to_string()
            }
            .as_str()
        )
    );
    expect_event(
        &mut watch,
        "route added",
        |e| matches!(e, E::RouteAdded(r) if r.dst.to_string() == "10.58.0.0/24" && r.index == index),
    );
    common::ip_ok(&t.name, &["addr", "del", "10.58.0.1/24", "dev", "wa1"]);
    expect_event(
        &mut watch,
        "address removed",
        |e| matches!(e, E::AddressRemoved(a) if a.addr.to_string() == "10.58.0.1"),
    );
    // A TUN device: its carrier follows its queue.
    let dev = Device::builder()
        .tun()
        .name("wt0")
        .namespace(t.ns.clone())
        .create()
        .unwrap();
    dev.set_persist(true).unwrap();
    dev.up().unwrap();
    let tun_index = dev.index();
    expect_event(
        &mut watch,
        "tun created",
        |e| matches!(e, E::Created(l) if l.index == tun_index && l.tun.is_some()),
    );
    // Down and up again with a queue attached: its carrier goes and comes in the same
    // announcements, which say why.
    common::ip_ok(&t.name, &["link", "set", "wt0", "down"]);
    expect_event(
        &mut watch,
        "tun down",
        |e| matches!(e, E::Admin { link, up: false } if link.index == tun_index),
    );
    common::ip_ok(&t.name, &["link", "set", "wt0", "up"]);
    expect_event(
        &mut watch,
        "tun up",
        |e| matches!(e, E::Admin { link, up: true } if link.index == tun_index && link.carrier == Some(true)),
    );
    drop(dev);
    expect_event(
        &mut watch,
        "tun carrier lost",
        |e| matches!(e, E::Carrier { link, carrier: false } if link.index == tun_index),
    );
    common::ip_ok(&t.name, &["link", "del", "wt0"]);
    expect_event(
        &mut watch,
        "tun deleted",
        |e| matches!(e, E::Deleted { index, name } if *index == tun_index && name == "wt0"),
    );
    // Moved to another namespace: gone from here, created there.
    common::ip_ok(&t.name, &["link", "set", "wa1", "netns", &other.name]);
    expect_event(
        &mut watch,
        "moved away",
        |e| matches!(e, E::MovedAway { index: i, name, .. } if *i == index && name == "wa1"),
    );
    expect_event(
        &mut there,
        "moved in",
        |e| matches!(e, E::Created(l) if l.name == "wa1"),
    );
    // Deleting one end of the veth deletes the other, here.
    common::ip_ok(&other.name, &["link", "del", "wa1"]);
    expect_event(
        &mut watch,
        "peer deleted",
        |e| matches!(e, E::Deleted { name, .. } if name == "wb0"),
    );
    // A watch of links alone saw the same link events, and no address or route.
    let mut seen = Vec::new();
    while let Some(e) = links_only.next_timeout(std::time::Duration::ZERO).unwrap() {
        seen.push(e);
    }
    assert!(
        seen.iter().any(|e| matches!(e, E::Admin { up: true, .. })),
        "{seen:#?}"
    );
    assert!(
        !seen.iter().any(|e| matches!(
            e,
            E::AddressAdded(_) | E::AddressRemoved(_) | E::RouteAdded(_) | E::RouteRemoved(_)
        )),
        "{seen:#?}"
    );
    // The namespace of a watch must exist.
    let err =
        tunctl::Watch::open(&Namespace::named("tunctl-test-no-such-ns").unwrap()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

/// A private namespace: devices live in it, another process sees them through
/// /proc/PID/fd/N, and nothing of it is left once it is dropped (nor in /run/netns ever).
#[test]
fn a_private_namespace_holds_devices_and_leaves_nothing() {
    if !privileged() {
        return;
    }
    let _g = common::shared();
    let ns = Namespace::private().unwrap();
    let path = ns.file().unwrap();
    let dev = Device::builder()
        .tun()
        .name("pv0")
        .namespace((*ns).clone())
        .create()
        .unwrap();
    dev.add_address("10.59.0.1/24".parse().unwrap()).unwrap();
    let proc_path = path
        .to_string_lossy()
        .replace("/proc/self/", &format!("/proc/{}/", std::process::id()));
    let out = Command::new("nsenter")
        .arg(format!("--net={proc_path}"))
        .args(["ip", "-j", "addr", "show", "dev", "pv0"])
        .output()
        .expect("run nsenter");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("10.59.0.1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No name in /run/netns is this namespace (other tests add names meanwhile).
    let ino = std::fs::metadata(&path).unwrap().st_ino();
    for name in Namespace::list().unwrap() {
        let named = std::fs::metadata(format!("/run/netns/{name}")).map(|m| m.st_ino());
        assert_ne!(named.ok(), Some(ino), "{name} names the private namespace");
    }
    drop(dev);
    drop(ns);
    assert!(!path.exists() || Netlink::open_in(&Namespace::path(&path)).is_err());

    // A device outlives the guard of its namespace: it holds the namespace itself, and
    // goes on configuring it even when the guard's fd number names another namespace now.
    let ns = Namespace::private().unwrap();
    let dev = Device::builder()
        .tun()
        .name("pv1")
        .multi_queue(1)
        .namespace((*ns).clone())
        .create()
        .unwrap();
    drop(ns);
    let other = Namespace::private().unwrap();
    let q = dev.attach_queue().unwrap();
    assert!(
        Netlink::open_in(&other)
            .unwrap()
            .link_by_name("pv1")
            .is_err(),
        "a queue attached in the namespace that took the fd's number"
    );
    assert_eq!(dev.info().unwrap().tun.unwrap().queues, Some(2));
    drop(q);
}
