//! A tunnel's life beyond two ends of a veth: its device in a container's namespace with
//! the socket outside, an endpoint given as a scoped link-local address, a stop that stops
//! only the tunnel asked, and a failed `up` that leaves a persistent device as it was.

use std::time::{Duration, Instant};

use super::common::{self, TestNs};
use super::{config, crosses, keys, start, start_with, udp_in, underlay_links, A, B};
use tunctl::{Device, Namespace};
use tunctl_vpwn::{Config, Options, Tunnel};

/// The device in a namespace with nothing but `lo` (a container), its UDP socket where vpwn
/// runs (A, on the veth): the container reaches the peer through the tunnel alone.
#[test]
fn the_device_in_a_container_and_the_socket_outside() {
    let Some(u) = underlay_links() else {
        return;
    };
    let container = TestNs::new();
    common::ip_ok(&container.name, &["link", "set", "lo", "up"]);
    let (ka, kb) = keys();
    let _tb = start(&u.b, &kb, ka.public(), B);
    let ta = Tunnel::up(Options {
        name: common::unique("ct"),
        namespace: u.a.ns.clone(),
        device_namespace: Some(container.ns.clone()),
        config: config(
            &ka,
            "10.204.0.1/24",
            kb.public(),
            Some("10.201.0.2:51902"),
            "10.204.0.2/32",
            51901,
            None,
        ),
    })
    .unwrap();
    let mut links = common::links(Some(&container.name));
    links.sort();
    let mut want = vec!["lo".to_string(), ta.name().to_string()];
    want.sort();
    assert_eq!(links, want, "the container has the tunnel and nothing else");
    assert!(
        common::ip_link(Some(&u.a.name), ta.name()).is_none(),
        "the device is not where the socket is"
    );
    assert!(crosses(&container, "10.204.0.1", &u.b, "10.204.0.2", 7401));
    assert!(crosses(&u.b, "10.204.0.2", &container, "10.204.0.1", 7402));
    let shown = tunctl_vpwn::uapi::vpwn_status(ta.name()).unwrap();
    assert_eq!(
        shown.device_namespace.as_deref(),
        Some(container.name.as_str())
    );
}

/// An endpoint given as `[fe80::...%IFACE]:PORT` (the peer's link-local address on the
/// veth): the interface is resolved in the tunnel's namespace, and traffic crosses.
#[test]
fn a_link_local_endpoint_with_its_interface() {
    let Some(u) = underlay_links() else {
        return;
    };
    let ll = common::ip_addrs(Some(&u.b.name), &u.vb)
        .iter()
        .find(|a| a["family"] == "inet6" && a["scope"] == "link")
        .and_then(|a| a["local"].as_str().map(String::from))
        .expect("B's link-local address");
    let (ka, kb) = keys();
    let _tb = start(&u.b, &kb, ka.public(), B);
    let text = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = 51901\nAddress = 10.204.0.1/24\n[Peer]\nPublicKey = {}\nEndpoint = [{ll}%{}]:51902\nAllowedIPs = 10.204.0.2/32\n",
        ka.to_base64().as_str(),
        kb.public(),
        u.va
    );
    let conf = Config::parse(&text).unwrap();
    assert!(
        conf.peers[0].endpoint.is_none(),
        "resolved at up, where the interface is"
    );
    let ta = Tunnel::up(Options::new(common::unique("ll"), u.a.ns.clone(), conf)).unwrap();
    match ta.endpoint() {
        Some(std::net::SocketAddr::V6(a)) => {
            assert_eq!(a.ip().to_string(), ll);
            assert_ne!(a.scope_id(), 0, "with its interface");
        }
        other => panic!("endpoint {other:?}"),
    }
    assert!(crosses(&u.a, "10.204.0.1", &u.b, "10.204.0.2", 7403));
}

/// Two tunnels in one process: `set=vpwn-down` (what `tunctl vpwn down` sends) stops the
/// one asked, and the other goes on.
#[test]
fn down_stops_only_the_tunnel_asked() {
    let Some(u) = underlay_links() else {
        return;
    };
    let (ka, kb) = keys();
    let tb = start(&u.b, &kb, ka.public(), B);
    let ta = start(&u.a, &ka, kb.public(), A);
    assert!(crosses(&u.a, "10.204.0.1", &u.b, "10.204.0.2", 7404));
    assert!(tunctl_vpwn::uapi::down(ta.name()).expect("vpwn answers set=vpwn-down"));
    let deadline = Instant::now() + Duration::from_secs(2);
    while ta.is_running() {
        assert!(Instant::now() < deadline, "the tunnel asked stops");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!ta.is_device_gone());
    assert!(tb.is_running(), "the other tunnel of the process goes on");
    let socket = tunctl_vpwn::uapi::socket_path(ta.name());
    let deadline = Instant::now() + Duration::from_secs(2);
    while socket.exists() {
        assert!(Instant::now() < deadline, "its UAPI socket goes");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(tunctl_vpwn::uapi::get(tb.name()).is_ok());
}

/// A persistent device with its own address, MTU and state; `up` on it fails after it
/// configured the device (the port is taken): the device is exactly as it was.
#[test]
fn a_failed_up_leaves_a_persistent_device_as_it_was() {
    let Some((ns, _)) = common::privileged_ns() else {
        return;
    };
    common::ip_ok(&ns.name, &["link", "set", "lo", "up"]);
    let name = common::unique("pd");
    let dev = Device::builder()
        .tun()
        .name(&name)
        .namespace(ns.ns.clone())
        .persist(true)
        .create()
        .unwrap();
    dev.add_address("10.205.0.1/24".parse().unwrap()).unwrap();
    dev.set_mtu(1400).unwrap();
    drop(dev);
    let before = (
        common::ip_addrs(Some(&ns.name), &name),
        common::ip_link(Some(&ns.name), &name).unwrap()["mtu"].clone(),
        common::ip_flags(&common::ip_link(Some(&ns.name), &name).unwrap()),
    );
    let _taken = udp_in(&ns, "0.0.0.0", 51990);
    let (ka, kb) = keys();
    let err = Tunnel::up(Options::new(
        name.clone(),
        ns.ns.clone(),
        config(
            &ka,
            "10.206.0.1/24",
            kb.public(),
            None,
            "10.206.0.2/32",
            51990,
            None,
        ),
    ))
    .unwrap_err();
    assert_eq!(err.kind(), tunctl::ErrorKind::AlreadyExists, "{err}");
    let after = (
        common::ip_addrs(Some(&ns.name), &name),
        common::ip_link(Some(&ns.name), &name).unwrap()["mtu"].clone(),
        common::ip_flags(&common::ip_link(Some(&ns.name), &name).unwrap()),
    );
    assert_eq!(after, before, "addresses, MTU and state as before");
    let _ = tunctl::Netlink::open_in(&Namespace::Named(ns.name.clone()))
        .and_then(|n| n.delete_link_by_name(&name));
}

/// A's path to B stops draining (a token bucket of 8 kbit/s on A's side of the veth, with
/// room for 128 MB), and A sends B more than its socket's buffer holds (7 MiB, which the
/// kernel doubles): A's sending thread waits for room. Meanwhile B's datagrams to A are
/// still decrypted and delivered at once, each within 300 ms (no send ever holds the peer's
/// engine), and the tunnel goes down at once (a send waits at most a second).
#[test]
fn a_stuck_send_never_holds_up_receiving() {
    let Some(u) = underlay_links() else {
        return;
    };
    let (ka, kb) = keys();
    let tb = start(&u.b, &kb, ka.public(), B);
    let ta = start(&u.a, &ka, kb.public(), A);
    assert!(crosses(&u.a, "10.204.0.1", &u.b, "10.204.0.2", 7405));
    let tc = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &u.a.name, "tc"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    tc(&[
        "qdisc", "add", "dev", &u.va, "root", "tbf", "rate", "8kbit", "burst", "2000", "limit",
        "128mb",
    ]);
    // 40 MB into the tunnel towards B, as fast as the device takes it, and on while B
    // sends (bounded: 3 s).
    let flood = udp_in(&u.a, "10.204.0.1", 0);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = std::sync::Arc::clone(&stop);
    let flooding = std::thread::spawn(move || {
        let payload = [0x5au8; 1400];
        let started = Instant::now();
        let mut n = 0u64;
        while !s.load(std::sync::atomic::Ordering::Relaxed)
            && started.elapsed() < Duration::from_secs(3)
        {
            if flood.send_to(&payload, ("10.204.0.2", 7406)).is_ok() {
                n += 1;
            }
        }
        n
    });
    std::thread::sleep(Duration::from_millis(1000));
    // B to A: every datagram through within the second.
    let rx = udp_in(&u.a, "10.204.0.1", 7407);
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let tx = udp_in(&u.b, "10.204.0.2", 0);
    let mut buf = [0u8; 64];
    let mut got = 0;
    for i in 0..20u8 {
        tx.send_to(&[i], ("10.204.0.1", 7407)).unwrap();
        if rx.recv(&mut buf).is_ok() {
            got += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flooded = flooding.join().unwrap();
    assert!(flooded > 20_000, "the flood ran: {flooded}");
    assert_eq!(
        got, 20,
        "B's traffic reaches A while A's sends to B are stuck"
    );
    let stopping = Instant::now();
    ta.down();
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "down took {:?}",
        stopping.elapsed()
    );
    drop(tb);
}

/// A new persistent keepalive takes effect at once and keeps the session: the idle peer
/// starts hearing from A every second, and no new handshake is made.
#[test]
fn a_new_keepalive_keeps_the_session() {
    let Some(u) = underlay_links() else {
        return;
    };
    let (ka, kb) = keys();
    let tb = start(&u.b, &kb, ka.public(), B);
    let ta = start(&u.a, &ka, kb.public(), A);
    assert!(crosses(&u.a, "10.204.0.1", &u.b, "10.204.0.2", 7410));
    let handshake = ta.since_handshake().unwrap();
    let heard = tb.info().peers[0].rx_bytes;
    let peer = format!("public_key={}", kb.public().to_hex());
    tunctl_vpwn::uapi::set(ta.name(), &[&peer, "persistent_keepalive_interval=1"]).unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    let keepalives = (tb.info().peers[0].rx_bytes - heard) / 32;
    // One a second: not fewer, and not one every tick either.
    assert!(
        (2..=5).contains(&keepalives),
        "{keepalives} keepalives in 3.5 s"
    );
    assert!(
        ta.since_handshake().unwrap() > handshake,
        "the same session (no new handshake)"
    );
    assert_eq!(ta.counters().drop_auth + tb.counters().drop_auth, 0);
}

/// Both ends change their preshared key (B, then A, while A sends to B): what was in flight
/// under the old session is still decrypted (the old engine retires, it is not thrown away),
/// the new key applies from the next handshake, traffic goes on, and authentication fails at
/// most for the one handshake tried while only one end had the new key.
#[test]
fn a_new_preshared_key_applies_from_the_next_handshake_without_a_burst() {
    let Some(u) = underlay_links() else {
        return;
    };
    let (ka, kb) = keys();
    let tb = start(&u.b, &kb, ka.public(), B);
    let ta = start(&u.a, &ka, kb.public(), A);
    assert!(crosses(&u.a, "10.204.0.1", &u.b, "10.204.0.2", 7411));
    let psk = tunctl_vpwn::SecretKey::generate_preshared().unwrap();
    let line = format!("preshared_key={}", psk.to_hex().as_str());
    // A sends to B all along (bounded: 4 s).
    let rx = udp_in(&u.b, "10.204.0.2", 7412);
    rx.set_nonblocking(true).unwrap();
    let tx = udp_in(&u.a, "10.204.0.1", 0);
    let (mut sent, mut got, mut last_got) = (0u32, 0u32, 0u32);
    let started = Instant::now();
    let mut changed = 0;
    let mut buf = [0u8; 64];
    while started.elapsed() < Duration::from_secs(4) {
        let _ = tx.send_to(&sent.to_le_bytes(), ("10.204.0.2", 7412));
        sent += 1;
        while let Ok(n) = rx.recv(&mut buf) {
            if n == 4 {
                got += 1;
                last_got = u32::from_le_bytes(buf[..4].try_into().unwrap());
            }
        }
        let t = started.elapsed();
        if changed == 0 && t > Duration::from_millis(500) {
            let peer = format!("public_key={}", ka.public().to_hex());
            tunctl_vpwn::uapi::set(tb.name(), &[&peer, &line]).unwrap();
            changed = 1;
        } else if changed == 1 && t > Duration::from_millis(700) {
            let peer = format!("public_key={}", kb.public().to_hex());
            tunctl_vpwn::uapi::set(ta.name(), &[&peer, &line]).unwrap();
            changed = 2;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(200));
    while let Ok(n) = rx.recv(&mut buf) {
        if n == 4 {
            got += 1;
            last_got = u32::from_le_bytes(buf[..4].try_into().unwrap());
        }
    }
    let failures = ta.counters().drop_auth + tb.counters().drop_auth;
    assert!(failures <= 2, "{failures} authentication failures");
    assert!(got * 10 >= sent * 7, "{got} of {sent} arrived");
    assert!(
        last_got + 50 >= sent,
        "traffic went on: the last to arrive was {last_got} of {sent}"
    );
    let shown = tunctl_vpwn::uapi::get(ta.name()).unwrap();
    assert!(shown.peers[0].preshared_key);
}

/// Jumbo frames (MTU 9000 on the tunnel, 9100 on the underlay): the first packet, 8,000
/// bytes, waits for the handshake it starts and then arrives whole, and so do the next ones
/// both ways.
#[test]
fn a_jumbo_first_packet_waits_for_the_handshake_and_arrives_whole() {
    let Some(u) = underlay_links() else {
        return;
    };
    for (ns, dev) in [(&u.a, &u.va), (&u.b, &u.vb)] {
        common::ip_ok(&ns.name, &["link", "set", dev, "mtu", "9100"]);
    }
    let (ka, kb) = keys();
    let tb = start_with(&u.b, &kb, ka.public(), B, |c| c.mtu = Some(9000));
    let ta = start_with(&u.a, &ka, kb.public(), A, |c| c.mtu = Some(9000));
    assert_eq!(
        common::ip_link(Some(&u.a.name), ta.name()).unwrap()["mtu"],
        9000
    );
    let rx = udp_in(&u.b, "10.204.0.2", 7420);
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let tx = udp_in(&u.a, "10.204.0.1", 7421);
    let payload: Vec<u8> = (0..8000u32).map(|i| (i % 251) as u8).collect();
    tx.send_to(&payload, ("10.204.0.2", 7420)).unwrap();
    let mut buf = vec![0u8; 9000];
    let (n, from) = rx
        .recv_from(&mut buf)
        .expect("the first packet, after the handshake");
    assert_eq!((&buf[..n], from.port()), (&payload[..], 7421));
    // And back, and again: the session carries them both ways.
    tx.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    for _ in 0..3 {
        rx.send_to(&payload, ("10.204.0.1", 7421)).unwrap();
        let (n, _) = tx.recv_from(&mut buf).expect("a jumbo packet back");
        assert_eq!(&buf[..n], &payload[..]);
    }
    assert_eq!(
        ta.counters().drop_oversized + tb.counters().drop_oversized,
        0
    );
}
