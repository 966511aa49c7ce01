//! vpwn end to end, in two namespaces joined by a veth (the underlay, 10.201.0.0/24): the
//! tunnel between them (10.204.0.0/24), vpwn on both ends and vpwn against Debian's
//! wireguard-go, with traffic both ways, PSK, a wrong key, the allowed-IPs check and garbage
//! on the port. Every check of traffic is a real UDP datagram crossing the tunnel.

#[path = "../../tunctl/tests/common/mod.rs"]
mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ip_ok, privileged, TestNs};
use tunctl_vpwn::{Config, Key, Options, Tunnel};

/// Two namespaces with a veth between them: A is 10.201.0.1, B is 10.201.0.2.
fn underlay() -> Option<(TestNs, TestNs)> {
    if !privileged() {
        return None;
    }
    let (a, b) = (TestNs::new(), TestNs::new());
    let (va, vb) = (common::unique("va"), common::unique("vb"));
    ip_ok(
        &a.name,
        &[
            "link", "add", &va, "type", "veth", "peer", "name", &vb, "netns", &b.name,
        ],
    );
    for (ns, dev, addr) in [(&a, &va, "10.201.0.1/24"), (&b, &vb, "10.201.0.2/24")] {
        ip_ok(&ns.name, &["addr", "add", addr, "dev", dev]);
        ip_ok(&ns.name, &["link", "set", dev, "up"]);
        ip_ok(&ns.name, &["link", "set", "lo", "up"]);
    }
    Some((a, b))
}

fn config(
    private: Key,
    address: &str,
    peer: Key,
    endpoint: Option<&str>,
    allowed: &str,
    port: u16,
    psk: Option<Key>,
) -> Config {
    let mut text = format!(
        "[Interface]\nPrivateKey = {private}\nListenPort = {port}\nAddress = {address}\n[Peer]\nPublicKey = {peer}\nAllowedIPs = {allowed}\n"
    );
    if let Some(e) = endpoint {
        text.push_str(&format!("Endpoint = {e}\n"));
    }
    if let Some(k) = psk {
        text.push_str(&format!("PresharedKey = {k}\n"));
    }
    Config::parse(&text).unwrap()
}

/// Sends from `from` (in `ns_from`) to `to` (in `ns_to`) until one datagram arrives, for at
/// most 5 s (the first one waits for the handshake).
fn crosses(ns_from: &TestNs, from: &str, ns_to: &TestNs, to: &str, port: u16) -> bool {
    let rx = ns_to
        .ns
        .run(|| UdpSocket::bind((to.parse::<Ipv4Addr>().unwrap(), port)))
        .unwrap()
        .unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let tx = ns_from
        .ns
        .run(|| UdpSocket::bind((from.parse::<Ipv4Addr>().unwrap(), 0)))
        .unwrap()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        let _ = tx.send_to(
            b"through the tunnel",
            (to.parse::<Ipv4Addr>().unwrap(), port),
        );
        if let Ok((n, src)) = rx.recv_from(&mut buf) {
            if &buf[..n] == b"through the tunnel" && src.ip().to_string() == from {
                return true;
            }
        }
    }
    false
}

struct Pair {
    a: Tunnel,
    b: Tunnel,
}

fn pair(na: &TestNs, nb: &TestNs, psk_a: Option<Key>, psk_b: Option<Key>) -> Pair {
    let (ka, kb) = (
        Key::generate_private().unwrap(),
        Key::generate_private().unwrap(),
    );
    let a = Tunnel::up(Options {
        name: common::unique("a"),
        namespace: na.ns.clone(),
        config: config(
            ka,
            "10.204.0.1/24",
            kb.public(),
            Some("10.201.0.2:51902"),
            "10.204.0.2/32",
            51901,
            psk_a,
        ),
    })
    .unwrap();
    let b = Tunnel::up(Options {
        name: common::unique("b"),
        namespace: nb.ns.clone(),
        config: config(
            kb,
            "10.204.0.2/24",
            ka.public(),
            None,
            "10.204.0.1/32",
            51902,
            psk_b,
        ),
    })
    .unwrap();
    Pair { a, b }
}

#[test]
fn two_vpwn_ends_carry_traffic_both_ways_with_and_without_psk() {
    let Some((na, nb)) = underlay() else {
        return;
    };
    for psk in [None, Some(Key::generate_preshared().unwrap())] {
        let p = pair(&na, &nb, psk, psk);
        assert!(
            crosses(&na, "10.204.0.1", &nb, "10.204.0.2", 7001),
            "A to B (psk {})",
            psk.is_some()
        );
        assert!(
            crosses(&nb, "10.204.0.2", &na, "10.204.0.1", 7002),
            "B to A"
        );
        assert!(p.a.since_handshake().is_some() && p.b.since_handshake().is_some());
        let (ca, cb) = (p.a.counters(), p.b.counters());
        assert!(ca.rx_packets >= 1 && cb.rx_packets >= 1, "{ca:?} {cb:?}");
        // B learned where A is from A's authenticated packets (it had no endpoint).
        assert_eq!(
            p.b.endpoint(),
            Some("10.201.0.1:51901".parse::<SocketAddr>().unwrap())
        );
        // The device and its address, seen by ip.
        let addrs = common::ip_addrs(Some(&na.name), p.a.name());
        assert!(
            addrs.iter().any(|x| x["local"] == "10.204.0.1"),
            "{addrs:?}"
        );
        let (name_a, name_b) = (p.a.name().to_string(), p.b.name().to_string());
        p.a.down();
        p.b.down();
        assert!(
            common::ip_link(Some(&na.name), &name_a).is_none(),
            "removed on down"
        );
        assert!(common::ip_link(Some(&nb.name), &name_b).is_none());
    }
}

#[test]
fn a_wrong_psk_passes_nothing_and_garbage_is_dropped_and_counted() {
    let Some((na, nb)) = underlay() else {
        return;
    };
    let p = pair(
        &na,
        &nb,
        Some(Key::generate_preshared().unwrap()),
        Some(Key::generate_preshared().unwrap()),
    );
    assert!(
        !crosses(&na, "10.204.0.1", &nb, "10.204.0.2", 7003),
        "no handshake, nothing passes"
    );
    assert!(p.a.since_handshake().is_none());
    drop(p);
    // Garbage, truncated and oversized datagrams at the port: counted, and the tunnel works.
    let p = pair(&na, &nb, None, None);
    let junk = na
        .ns
        .run(|| UdpSocket::bind(("10.201.0.1", 0)))
        .unwrap()
        .unwrap();
    for d in [
        &[1u8, 0, 0, 0][..],
        &[4u8; 32][..],
        &[0xffu8; 1200][..],
        &[1u8; 148][..],
    ] {
        junk.send_to(d, ("10.201.0.2", 51902)).unwrap();
    }
    assert!(
        crosses(&na, "10.204.0.1", &nb, "10.204.0.2", 7004),
        "still carries traffic"
    );
    let c = p.b.counters();
    assert!(c.drop_malformed + c.drop_auth >= 3, "{c:?}");
}

#[test]
fn a_packet_from_outside_the_peers_allowed_ips_is_dropped() {
    let Some((na, nb)) = underlay() else {
        return;
    };
    let p = pair(&na, &nb, None, None);
    assert!(crosses(&na, "10.204.0.1", &nb, "10.204.0.2", 7005));
    // B also has 10.204.0.9, which A does not allow from B.
    ip_ok(
        &nb.name,
        &["addr", "add", "10.204.0.9/24", "dev", p.b.name()],
    );
    assert!(!crosses(&nb, "10.204.0.9", &na, "10.204.0.1", 7006));
    assert!(p.a.counters().drop_not_allowed >= 1, "{:?}", p.a.counters());
}

/// Runs a command, returning its stdout; panics with its stderr on failure.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stops a child process on drop: SIGTERM (so wireguard-go removes its UAPI socket), then,
/// after a second, SIGKILL.
struct Child(std::process::Child, Option<std::path::PathBuf>);

impl std::ops::Drop for Child {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        if let Some(sock) = &self.1 {
            let _ = std::fs::remove_file(sock);
        }
    }
}

/// vpwn against Debian's wireguard-go, configured with `wg` exactly as a WireGuard user
/// would: the handshake completes, traffic crosses both ways, and `wg show` on the other
/// side reports the handshake and the bytes.
#[test]
fn vpwn_interoperates_with_wireguard_go() {
    let Some((na, nb)) = underlay() else {
        return;
    };
    let installed =
        Path::new("/usr/bin/wireguard-go").exists() && Path::new("/usr/bin/wg").exists();
    if !installed {
        assert!(
            std::env::var("CI").is_err(),
            "wireguard-go and wg are missing under CI: .ci/run installs them"
        );
        eprintln!("SKIPPED: wireguard-go or wg not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("vpwn-wg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ka, kb) = (
        Key::generate_private().unwrap(),
        Key::generate_private().unwrap(),
    );
    let psk = Key::generate_preshared().unwrap();
    std::fs::write(dir.join("b.key"), kb.to_string()).unwrap();
    std::fs::write(dir.join("ab.psk"), psk.to_string()).unwrap();
    // Interface names are global to the UAPI socket directory: unique per test run.
    let wg = format!("wgt{}", std::process::id() % 100_000);
    let daemon = Command::new("ip")
        .args(["netns", "exec", &nb.name, "wireguard-go", "-f", &wg])
        .env("WG_PROCESS_FOREGROUND", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = Child(
        daemon,
        Some(Path::new(tunctl_vpwn::uapi::SOCKET_DIR).join(format!("{wg}.sock"))),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while common::ip_link(Some(&nb.name), &wg).is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    run(Command::new("ip")
        .args(["netns", "exec", &nb.name, "wg", "set", &wg, "private-key"])
        .arg(dir.join("b.key"))
        .args([
            "listen-port",
            "51912",
            "peer",
            &ka.public().to_string(),
            "preshared-key",
        ])
        .arg(dir.join("ab.psk"))
        .args([
            "endpoint",
            "10.201.0.1:51911",
            "allowed-ips",
            "10.204.0.1/32",
        ]));
    ip_ok(&nb.name, &["addr", "add", "10.204.0.2/24", "dev", &wg]);
    ip_ok(&nb.name, &["link", "set", &wg, "mtu", "1420", "up"]);
    let a = Tunnel::up(Options {
        name: "vpg%d".into(),
        namespace: na.ns.clone(),
        config: config(
            ka,
            "10.204.0.1/24",
            kb.public(),
            Some("10.201.0.2:51912"),
            "10.204.0.2/32",
            51911,
            Some(psk),
        ),
    })
    .unwrap();
    assert!(
        crosses(&na, "10.204.0.1", &nb, "10.204.0.2", 7011),
        "vpwn to wireguard-go"
    );
    assert!(
        crosses(&nb, "10.204.0.2", &na, "10.204.0.1", 7012),
        "wireguard-go to vpwn"
    );
    let handshakes = run(Command::new("ip").args([
        "netns",
        "exec",
        &nb.name,
        "wg",
        "show",
        &wg,
        "latest-handshakes",
    ]));
    let when: u64 = handshakes
        .split_whitespace()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    assert!(when > 0, "wg show: {handshakes}");
    let transfer =
        run(Command::new("ip").args(["netns", "exec", &nb.name, "wg", "show", &wg, "transfer"]));
    let fields: Vec<u64> = transfer
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    assert!(
        fields.len() == 2 && fields[0] > 0 && fields[1] > 0,
        "wg show transfer: {transfer}"
    );
    drop(a);
    let _ = std::fs::remove_dir_all(&dir);
}
