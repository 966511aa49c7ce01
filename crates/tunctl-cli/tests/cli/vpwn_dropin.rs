//! `tunctl-vpwn`, the drop-in for wireguard-go: wg-quick brings a tunnel up and down with
//! it (WG_QUICK_USERSPACE_IMPLEMENTATION), `wg setconf`/`wg set` configure it through the
//! UAPI socket, a bad `set` changes nothing, it exits when its device is deleted, and
//! `tunctl vpwn down` stops it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{self, bind_in, TestNs};
use super::{crosses, ok, public_of};

const DROPIN: &str = env!("CARGO_BIN_EXE_tunctl-vpwn");

fn socket(name: &str) -> std::path::PathBuf {
    Path::new("/var/run/wireguard").join(format!("{name}.sock"))
}

/// The pid serving a tunnel's socket, if it is our drop-in.
fn server(name: &str) -> Option<u32> {
    let pid = tunctl_vpwn::uapi::server_pid(name).ok()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    exe.ends_with("tunctl-vpwn").then_some(pid)
}

fn gone(pid: u32) -> bool {
    // A zombie is gone for our purpose (its parent, wg-quick's shell, has left).
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
        .unwrap_or(true)
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn exec(ns: &str, cmd: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .env("WG_QUICK_USERSPACE_IMPLEMENTATION", DROPIN)
        .output()
        .expect("ip netns exec")
}

#[track_caller]
fn exec_ok(ns: &str, cmd: &[&str]) -> String {
    let out = exec(ns, cmd);
    assert!(
        out.status.success(),
        "{cmd:?} in {ns}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sends one raw UAPI request and returns the answer.
fn uapi(name: &str, request: &str) -> String {
    let mut c = UnixStream::connect(socket(name)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    c.write_all(request.as_bytes()).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    answer
}

#[test]
fn wg_quick_brings_the_drop_in_up_and_down() {
    let Some((a, _)) = common::privileged_ns() else {
        return;
    };
    let b = TestNs::new();
    assert!(
        !Path::new("/sys/module/wireguard").exists(),
        "the WireGuard kernel module is loaded: wg-quick would use it, not tunctl-vpwn"
    );
    common::veth_between(&a, &b, "10.213.0");
    let dir = std::env::temp_dir().join(format!("tunctl-dropin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ka, kb) = (ok(&["vpwn", "genkey"]), ok(&["vpwn", "genkey"]));
    let (pa, pb) = (public_of(&ka), public_of(&kb));
    let (wa, wb) = (common::unique("wa"), common::unique("wb"));

    // End a: wg-quick up with a wg-quick file; the drop-in goes to the background.
    let conf = dir.join(format!("{wa}.conf"));
    std::fs::write(
        &conf,
        format!(
            "[Interface]\nPrivateKey = {}\nListenPort = 51931\nAddress = 10.214.0.1/24\n\n[Peer]\nPublicKey = {pb}\nEndpoint = 10.213.0.2:51932\nAllowedIPs = 10.214.0.2/32\n",
            ka.trim()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let started = Instant::now();
    exec_ok(&a.name, &["wg-quick", "up", conf.to_str().unwrap()]);
    let up_time = started.elapsed();
    let pid_a = server(&wa).expect("wg-quick started tunctl-vpwn (it serves the socket)");

    // End b: in the foreground (WG_PROCESS_FOREGROUND), configured by wg set and ip.
    let mut fg = Command::new("ip")
        .args(["netns", "exec", &b.name, DROPIN, &wb])
        .env("WG_PROCESS_FOREGROUND", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the foreground drop-in serves its socket", 5, || {
        server(&wb).is_some()
    });
    assert!(fg.try_wait().unwrap().is_none(), "stays in the foreground");
    std::fs::write(dir.join("b.key"), &kb).unwrap();
    exec_ok(
        &b.name,
        &[
            "wg",
            "set",
            &wb,
            "private-key",
            dir.join("b.key").to_str().unwrap(),
            "listen-port",
            "51932",
            "peer",
            &pa,
            "endpoint",
            "10.213.0.1:51931",
            "allowed-ips",
            "10.214.0.1/32",
        ],
    );
    common::ip_ok(&b.name, &["addr", "add", "10.214.0.2/24", "dev", &wb]);
    common::ip_ok(&b.name, &["link", "set", &wb, "up"]);

    assert!(crosses(&a, &b, "10.214.0.1:0", "10.214.0.2:7031"), "a → b");
    assert!(crosses(&b, &a, "10.214.0.2:0", "10.214.0.1:7032"), "b → a");
    // wg show (wireguard-tools) on both: a handshake and bytes.
    for (ns, name, peer) in [(&a.name, &wa, &pb), (&b.name, &wb, &pa)] {
        let dump = exec_ok(ns, &["wg", "show", name, "dump"]);
        let line = dump.lines().nth(1).expect("a peer line");
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f[0], peer.as_str(), "{dump}");
        assert!(f[4].parse::<u64>().unwrap() > 0, "handshake: {dump}");
        assert!(
            f[5].parse::<u64>().unwrap() > 0 && f[6].parse::<u64>().unwrap() > 0,
            "{dump}"
        );
    }
    // wg showconf gives back what wg-quick set.
    let showconf = exec_ok(&a.name, &["wg", "showconf", &wa]);
    assert!(showconf.contains("ListenPort = 51931"), "{showconf}");
    assert!(
        showconf.contains("AllowedIPs = 10.214.0.2/32"),
        "{showconf}"
    );

    // A bad set is refused whole (errno), and changes nothing.
    let before = uapi(&wa, "get=1\n\n");
    let answer = uapi(
        &wa,
        &format!(
            "set=1\nlisten_port=51999\npublic_key={}\nallowed_ip=10.9.9.0/33\n\n",
            "11".repeat(32)
        ),
    );
    assert_eq!(answer, "errno=-22\n\n");
    let after = uapi(&wa, "get=1\n\n");
    let stable = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with("last_handshake") && !l.contains("x_bytes="))
            .map(String::from)
            .collect()
    };
    assert_eq!(stable(&before), stable(&after));
    // A port in use is refused with EADDRINUSE.
    let _busy = bind_in(&a, "[::]:51998");
    assert_eq!(
        uapi(&wa, "set=1\nlisten_port=51998\n\n"),
        format!("errno={}\n\n", -libc::EADDRINUSE)
    );
    // Our drops by cause, through `tunctl vpwn show`.
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&["vpwn", "show", &wa, "--json"])).unwrap();
    assert!(shown[0]["drops"]["auth"].is_u64(), "{shown}");
    assert_eq!(
        shown[0]["peers"].as_array().map(Vec::len),
        Some(1),
        "{shown}"
    );

    // wg-quick down deletes the device: the drop-in sees it and exits, socket removed.
    exec_ok(&a.name, &["wg-quick", "down", conf.to_str().unwrap()]);
    wait_until("the drop-in exits after wg-quick down", 5, || gone(pid_a));
    assert!(!socket(&wa).exists(), "socket removed");
    assert!(common::ip_link(Some(&a.name), &wa).is_none());

    // tunctl vpwn down stops the foreground one: it exits 0, device and socket gone.
    let said = ok(&["vpwn", "down", &wb]);
    assert!(said.is_empty(), "{said}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = fg.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the foreground drop-in exits");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    fg.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("down (told to stop: vpwn down)"), "{err}");
    assert!(!socket(&wb).exists());
    assert!(common::ip_link(Some(&b.name), &wb).is_none());
    // Nothing to stop any more: a clear error.
    let out = super::tunctl(&["vpwn", "down", &wb]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        super::stderr(&out).contains("no such tunnel"),
        "{}",
        super::stderr(&out)
    );
    eprintln!("wg-quick up with tunctl-vpwn took {up_time:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A foreground drop-in `name` in `ns`, stopped (SIGTERM, then SIGKILL) on drop.
struct Foreground(std::process::Child);

impl Foreground {
    fn start(ns: &TestNs, name: &str) -> Foreground {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, DROPIN, name])
            .env("WG_PROCESS_FOREGROUND", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let fg = Foreground(child);
        wait_until("the drop-in serves its socket", 5, || {
            server(name).is_some()
        });
        fg
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `wg showconf` as (section, key, value) lines, each list value sorted: two equal
/// configurations compare equal whatever their order.
fn normalized(conf: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut peer = String::new();
    let mut lines = Vec::new();
    for line in conf.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        if k == "PublicKey" {
            peer = v.clone();
        }
        let mut values: Vec<&str> = v.split(',').map(str::trim).collect();
        values.sort();
        let at = if section == "[Peer]" {
            peer.clone()
        } else {
            section.clone()
        };
        lines.push((at, k, values.join(",")));
    }
    lines.sort();
    lines
}

/// The wg tools on a tunnel of three peers: `setconf` then `showconf` give back the file;
/// `addconf` adds a fourth; `syncconf` takes it away again; `set listen-port 0` binds a new
/// random port.
#[test]
fn setconf_showconf_addconf_syncconf_with_three_peers() {
    let Some((a, _)) = common::privileged_ns() else {
        return;
    };
    let name = common::unique("wp");
    let _fg = Foreground::start(&a, &name);
    let dir = std::env::temp_dir().join(format!("tunctl-dropin3-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let key = |_: u8| ok(&["vpwn", "genkey"]).trim().to_string();
    let psk = ok(&["vpwn", "genpsk"]).trim().to_string();
    let peers: Vec<String> = (0..4).map(key).collect();
    let conf3 = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = 51941\n\n\
         [Peer]\nPublicKey = {}\nPresharedKey = {psk}\nAllowedIPs = 10.220.0.2/32, fd00:220::2/128\nEndpoint = 10.219.0.2:51942\nPersistentKeepalive = 25\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 10.221.0.0/24\nEndpoint = [fd00:219::3]:51943\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 0.0.0.0/0\n",
        key(0),
        public_of(&peers[0]),
        public_of(&peers[1]),
        public_of(&peers[2])
    );
    let file = dir.join("three.conf");
    std::fs::write(&file, &conf3).unwrap();
    exec_ok(&a.name, &["wg", "setconf", &name, file.to_str().unwrap()]);
    let shown = exec_ok(&a.name, &["wg", "showconf", &name]);
    assert_eq!(normalized(&shown), normalized(&conf3), "{shown}");
    // addconf: a fourth peer.
    let extra = dir.join("extra.conf");
    std::fs::write(
        &extra,
        format!(
            "[Peer]\nPublicKey = {}\nAllowedIPs = 10.222.0.0/16\n",
            public_of(&peers[3])
        ),
    )
    .unwrap();
    exec_ok(&a.name, &["wg", "addconf", &name, extra.to_str().unwrap()]);
    let dump = exec_ok(&a.name, &["wg", "show", &name, "peers"]);
    assert_eq!(dump.lines().count(), 4, "{dump}");
    // syncconf back to the three.
    exec_ok(&a.name, &["wg", "syncconf", &name, file.to_str().unwrap()]);
    let shown = exec_ok(&a.name, &["wg", "showconf", &name]);
    assert_eq!(normalized(&shown), normalized(&conf3), "{shown}");
    // listen-port 0: a new random port.
    exec_ok(&a.name, &["wg", "set", &name, "listen-port", "0"]);
    let port: u16 = exec_ok(&a.name, &["wg", "show", &name, "listen-port"])
        .trim()
        .parse()
        .unwrap();
    assert!(port != 0 && port != 51941, "port {port}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A thousand peers with a hundred networks each, through the socket as `wg addconf` sends
/// them (one request of 101,000 lines): all taken, then `wg syncconf` takes them away again.
#[test]
fn a_thousand_peers_with_a_hundred_thousand_networks() {
    let Some((a, _)) = common::privileged_ns() else {
        return;
    };
    let name = common::unique("wk");
    let _fg = Foreground::start(&a, &name);
    let dir = std::env::temp_dir().join(format!("tunctl-dropin-many-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let base = dir.join("base.conf");
    std::fs::write(
        &base,
        format!(
            "[Interface]\nPrivateKey = {}\nListenPort = 51951\n",
            ok(&["vpwn", "genkey"]).trim()
        ),
    )
    .unwrap();
    exec_ok(&a.name, &["wg", "setconf", &name, base.to_str().unwrap()]);
    let mut many = String::new();
    for p in 0..1000u32 {
        let mut k = [7u8; 32];
        k[..4].copy_from_slice(&p.to_be_bytes());
        many.push_str(&format!(
            "[Peer]\nPublicKey = {}\nAllowedIPs = ",
            tunctl_vpwn::PublicKey(k)
        ));
        let nets: Vec<String> = (0..100u32)
            .map(|n| {
                let at = 0x6440_0000u32 + (p * 100 + n) * 4;
                format!("{}/30", std::net::Ipv4Addr::from(at))
            })
            .collect();
        many.push_str(&nets.join(", "));
        many.push('\n');
    }
    let file = dir.join("many.conf");
    std::fs::write(&file, many).unwrap();
    let start = Instant::now();
    exec_ok(&a.name, &["wg", "addconf", &name, file.to_str().unwrap()]);
    eprintln!(
        "wg addconf of 1,000 peers and 100,000 networks took {:?}",
        start.elapsed()
    );
    let shown = exec_ok(&a.name, &["wg", "show", &name, "allowed-ips"]);
    let networks: usize = shown
        .lines()
        .map(|l| l.split_whitespace().skip(1).count())
        .sum();
    assert_eq!((shown.lines().count(), networks), (1000, 100_000));
    exec_ok(&a.name, &["wg", "syncconf", &name, base.to_str().unwrap()]);
    assert_eq!(exec_ok(&a.name, &["wg", "show", &name, "peers"]).trim(), "");
    let _ = std::fs::remove_dir_all(&dir);
}

/// IPv4 fragments the namespace's stack made (`Ip: FragCreates` in /proc/net/snmp).
fn fragments_created(ns: &TestNs) -> u64 {
    let snmp = ns
        .ns
        .run(|| std::fs::read_to_string("/proc/net/snmp"))
        .unwrap()
        .unwrap();
    let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip.next().unwrap(), ip.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|n| n == "FragCreates")
        .unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// wg-quick sets the MTU after the drop-in started (MTU = 1412, the underlay's 1472 less
/// 60): padding and segments follow the MTU as it is now, so no datagram is larger than the
/// underlay takes (none is fragmented), and TCP crosses.
#[test]
fn padding_follows_the_mtu_wg_quick_sets_after_start() {
    let Some((a, _)) = common::privileged_ns() else {
        return;
    };
    let b = TestNs::new();
    let (va, vb) = common::veth_between(&a, &b, "10.218.0");
    common::ip_ok(&a.name, &["link", "set", &va, "mtu", "1472"]);
    common::ip_ok(&b.name, &["link", "set", &vb, "mtu", "1472"]);
    let dir = std::env::temp_dir().join(format!("tunctl-dropin-mtu-{}", common::unique("")));
    std::fs::create_dir_all(&dir).unwrap();
    let (ka, kb) = (ok(&["vpwn", "genkey"]), ok(&["vpwn", "genkey"]));
    let (wa, wb) = (common::unique("ma"), common::unique("mb"));
    let conf = |key: &str, port: u16, addr: &str, peer: &str, endpoint: &str, allowed: &str| {
        format!(
            "[Interface]\nPrivateKey = {}\nListenPort = {port}\nAddress = {addr}\nMTU = 1412\n\n[Peer]\nPublicKey = {peer}\nEndpoint = {endpoint}\nAllowedIPs = {allowed}\n",
            key.trim()
        )
    };
    /// `wg-quick down` on drop, also when the test fails.
    struct Down(String, std::path::PathBuf);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = exec(
                &self.0,
                &["wg-quick", "down", self.1.to_str().unwrap_or("")],
            );
            let _ = std::fs::remove_file(&self.1);
        }
    }
    let mut downs = Vec::new();
    for (ns, name, text) in [
        (
            &a,
            &wa,
            conf(
                &ka,
                51951,
                "10.219.0.1/24",
                &public_of(&kb),
                "10.218.0.2:51952",
                "10.219.0.2/32",
            ),
        ),
        (
            &b,
            &wb,
            conf(
                &kb,
                51952,
                "10.219.0.2/24",
                &public_of(&ka),
                "10.218.0.1:51951",
                "10.219.0.1/32",
            ),
        ),
    ] {
        let file = dir.join(format!("{name}.conf"));
        std::fs::write(&file, text).unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        exec_ok(&ns.name, &["wg-quick", "up", file.to_str().unwrap()]);
        downs.push(Down(ns.name.clone(), file));
        assert_eq!(common::ip_link(Some(&ns.name), name).unwrap()["mtu"], 1412);
    }
    // Let the drop-ins see the new MTU (they read it once a second).
    std::thread::sleep(Duration::from_millis(1500));
    let before = (fragments_created(&a), fragments_created(&b));
    assert!(crosses(&a, &b, "10.219.0.1:0", "10.219.0.2:7501"));
    // A TCP stream of full-size segments, and a datagram of exactly the MTU.
    let listener =
        b.ns.run(|| std::net::TcpListener::bind("10.219.0.2:7502"))
            .unwrap()
            .unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        all.len()
    });
    let mut s =
        a.ns.run(|| std::net::TcpStream::connect("10.219.0.2:7502"))
            .unwrap()
            .unwrap();
    // Bounded: full segments that do not fit would stall the stream, not the test.
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let sent = s.write_all(&vec![7u8; 4 << 20]);
    drop(s);
    assert_eq!(reader.join().unwrap(), 4 << 20, "the stream: {sent:?}");
    let rx = bind_in(&b, "10.219.0.2:7503");
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let tx = bind_in(&a, "10.219.0.1:0");
    tx.send_to(&[1u8; 1412 - 28], "10.219.0.2:7503").unwrap();
    let mut buf = [0u8; 2048];
    assert_eq!(
        rx.recv(&mut buf).unwrap(),
        1412 - 28,
        "a packet of exactly the MTU"
    );
    assert_eq!(
        (fragments_created(&a), fragments_created(&b)),
        before,
        "no datagram bigger than the underlay's MTU"
    );
    drop(downs);
    for (ns, name) in [(&a, &wa), (&b, &wb)] {
        assert!(
            common::ip_link(Some(&ns.name), name).is_none(),
            "wg-quick down"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
