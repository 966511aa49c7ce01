//! The `tunctl` command end to end: the demo, every verb, JSON output, exit codes, and that a
//! failed command leaves nothing behind. Checked against `ip -j`.

#[path = "../../tunctl/tests/common/mod.rs"]
mod common;
#[path = "cli/harden.rs"]
mod harden;
#[path = "cli/vpwn_dropin.rs"]
mod vpwn_dropin;
#[path = "cli/vpwn_routing.rs"]
mod vpwn_routing;
#[path = "cli/vpwn_user.rs"]
mod vpwn_user;

#[path = "cli/br.rs"]
mod br;

use std::process::{Command, Output};
use std::time::Duration;

use common::{bind_in, ip_addrs, ip_flags, ip_link, privileged, TestNs};
use serde_json::Value;

fn tunctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tunctl"))
        .args(args)
        .output()
        .expect("run tunctl")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Kills a still-running child and deletes namespaces with `prefix` left by it, on drop.
struct ChildGuard {
    child: Option<std::process::Child>,
    prefix: String,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        for name in tunctl::Namespace::list().unwrap_or_default() {
            if name.starts_with(&self.prefix) {
                let _ = tunctl::Namespace::delete(&name);
            }
        }
    }
}

#[track_caller]
fn ok(args: &[&str]) -> String {
    let out = tunctl(args);
    assert!(
        out.status.success(),
        "tunctl {args:?} failed: {}",
        stderr(&out)
    );
    stdout(&out)
}

#[track_caller]
fn fails(args: &[&str], code: i32) -> String {
    let out = tunctl(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "tunctl {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stderr(&out)
}

/// The public key of the WireGuard private key `private` (base64, as `vpwn genkey` prints
/// it; surrounding whitespace is ignored).
fn public_of(private: &str) -> String {
    private
        .trim()
        .parse::<tunctl_vpwn::SecretKey>()
        .unwrap()
        .public()
        .to_string()
}

/// A UDP datagram sent from `from` in namespace `a` reaches `to` in namespace `b`, through
/// a tunnel (retried for up to 8 s: the first ones may wait for the handshake).
fn crosses(a: &TestNs, b: &TestNs, from: &str, to: &str) -> bool {
    let rx = bind_in(b, to);
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let tx = bind_in(a, from);
    let mut buf = [0u8; 64];
    for _ in 0..40 {
        let _ = tx.send_to(b"through the tunnel", to);
        if rx
            .recv_from(&mut buf)
            .is_ok_and(|(n, _)| &buf[..n] == b"through the tunnel")
        {
            return true;
        }
    }
    false
}

/// Namespaces, UAPI sockets (`/var/run/wireguard/vpwn-PID-a.sock`) and the bridge's control
/// socket (`/run/tunctl/br/br-PID.sock`) the demo with `pid` left behind.
fn demo_leftovers(pid: u32) -> Vec<String> {
    let prefix = format!("tunctl-demo-{pid}-");
    let mut left: Vec<String> = tunctl::Namespace::list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    let tag = format!("-{pid}-");
    if let Ok(dir) = std::fs::read_dir("/var/run/wireguard") {
        left.extend(
            dir.filter_map(|e| e.ok())
                .map(|e| e.path().display().to_string())
                .filter(|p| p.contains(&tag)),
        );
    }
    let bridge = format!("br-{pid}.sock");
    if let Ok(dir) = std::fs::read_dir("/run/tunctl/br") {
        left.extend(
            dir.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_str() == Some(bridge.as_str()))
                .map(|e| e.path().display().to_string()),
        );
    }
    left
}

#[test]
fn demo_moves_real_traffic_and_cleans_up() {
    if !privileged() {
        return;
    }
    let child = Command::new(env!("CARGO_BIN_EXE_tunctl"))
        .args(["demo", "--seconds", "1", "--pings", "3"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _guard = ChildGuard {
        child: None,
        prefix: format!("tunctl-demo-{pid}-"),
    };
    let out = child.wait_with_output().unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    // The forwarder stage.
    assert!(
        text.contains("ping 10.77.0.1 -> 10.77.0.2: 3/3 replies"),
        "{text}"
    );
    assert!(text.contains("Gbit/s"), "{text}");
    assert!(
        text.contains("cleaned up: both devices and both namespaces removed"),
        "{text}"
    );
    // The tunnel stage: traffic through the encrypted tunnel, a handshake on both ends,
    // nothing forged or malformed on the wire.
    assert!(text.contains("tunctl demo: tunnel: "), "{text}");
    assert!(
        text.contains("ping 10.79.0.1 -> 10.79.0.2: 3/3 replies"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("through the tunnel:") && l.ends_with("Mbit/s")),
        "{text}"
    );
    for end in ["a", "b"] {
        let name = format!("vpwn vpwn-{pid}-{end}");
        assert!(
            text.lines()
                .any(|l| l.contains(&format!("{name}: latest handshake "))),
            "{text}"
        );
        let drops = text
            .lines()
            .find(|l| l.contains(&format!("{name} dropped: ")))
            .unwrap_or_else(|| panic!("no drop line for {name}: {text}"));
        assert!(
            ["auth", "replay", "malformed", "oversized"]
                .iter()
                .all(|cause| !drops.contains(cause)),
            "{drops}"
        );
    }
    assert!(
        text.contains("cleaned up: both tunnels, the veth and both namespaces removed"),
        "{text}"
    );
    // The bridge stage: pings between every pair of its three namespaces, TCP through it,
    // each tap's address learned on its own port, and nothing left.
    assert!(
        text.contains(&format!(
            "tunctl demo: bridge: br-{pid} in this process, learning, its ports \
             tunctl-demo-{pid}-br-a tap-a (10.80.0.1), tunctl-demo-{pid}-br-b tap-b (10.80.0.2), \
             tunctl-demo-{pid}-br-c tap-c (10.80.0.3)"
        )),
        "{text}"
    );
    for (from, to) in [(1, 2), (2, 3), (3, 1)] {
        assert!(
            text.contains(&format!("ping 10.80.0.{from} -> 10.80.0.{to}: 3/3 replies")),
            "{text}"
        );
    }
    assert!(
        text.lines().any(
            |l| l.contains("tcp 10.80.0.1 -> 10.80.0.2:5201 through the bridge:")
                && l.ends_with("Gbit/s")
        ),
        "{text}"
    );
    assert!(
        text.contains("learned table (bridge fdb show): 3 of 8192 addresses"),
        "{text}"
    );
    for port in ["tap-a", "tap-b", "tap-c"] {
        // `MAC dev PORT master BRIDGE`, once per port.
        let fdb: Vec<&str> = text
            .lines()
            .filter(|l| l.ends_with(&format!(" dev {port} master br-{pid}")))
            .collect();
        assert_eq!(fdb.len(), 1, "{text}");
        let mac = fdb[0].trim().split(' ').next().unwrap();
        assert!(
            mac.len() == 17 && mac.split(':').count() == 6,
            "{mac}: {text}"
        );
        // Every port forwarded (to one port) and flooded (ARP): the counts are there.
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("  port {port}: in ")))
            .unwrap_or_else(|| panic!("no line for {port}: {text}"));
        let count = |what: &str| -> u64 {
            line.split(&format!("{what} "))
                .nth(1)
                .and_then(|r| r.split([',', ';']).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no {what} count: {line}"))
        };
        assert!(count("forwarded") > 0, "{line}");
        assert!(count("flooded") > 0, "{line}");
        assert_eq!(count("learned"), 1, "{line}");
    }
    assert!(
        text.contains(
            "cleaned up: the bridge, its control socket, the three taps and the three namespaces removed"
        ),
        "{text}"
    );
    let left = demo_leftovers(pid);
    assert!(left.is_empty(), "demo left behind: {left:?}");
}

#[test]
fn demo_skips_the_stages_asked_to() {
    if !privileged() {
        return;
    }
    let child = Command::new(env!("CARGO_BIN_EXE_tunctl"))
        .args([
            "demo",
            "--seconds",
            "0.5",
            "--pings",
            "1",
            "--no-tunnel",
            "--no-bridge",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _guard = ChildGuard {
        child: None,
        prefix: format!("tunctl-demo-{pid}-"),
    };
    let out = child.wait_with_output().unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(
        text.contains("cleaned up: both devices and both namespaces removed"),
        "{text}"
    );
    assert!(!text.contains("tunnel"), "{text}");
    assert!(!text.contains("bridge"), "{text}");
    let left = demo_leftovers(pid);
    assert!(left.is_empty(), "demo left behind: {left:?}");
}

/// Runs the demo with `args`, waits (bounded) until a namespace `tunctl-demo-PID-{stage}`
/// appears, interrupts it 1.5 s later, and checks that it fails and leaves nothing.
fn interrupt_demo(args: &[&str], stage: &str) {
    let child = Command::new(env!("CARGO_BIN_EXE_tunctl"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let prefix = format!("tunctl-demo-{pid}-");
    let mut guard = ChildGuard {
        child: Some(child),
        prefix: prefix.clone(),
    };
    let stage = format!("{prefix}{stage}");
    // Wait (bounded) until the demo has built the stage's namespaces, then interrupt it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !tunctl::Namespace::list()
        .unwrap()
        .iter()
        .any(|n| n.starts_with(&stage))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "demo never created its namespaces ({stage})"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: plain kill(2) to our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGINT) }, 0);
    let out = guard.child.take().unwrap().wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "interrupted demo fails: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    let left = demo_leftovers(pid);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn demo_cleans_up_on_ctrl_c() {
    if !privileged() {
        return;
    }
    // In the forwarder stage, then in the tunnel stage (its TCP stream through the tunnel),
    // then in the bridge stage (its TCP stream through the bridge): namespaces, taps and the
    // bridge's control socket all go.
    interrupt_demo(&["demo", "--seconds", "20"], "");
    interrupt_demo(&["demo", "--seconds", "3", "--pings", "1"], "vpwn-");
    interrupt_demo(
        &["demo", "--seconds", "3", "--pings", "1", "--no-tunnel"],
        "br-",
    );
}

#[test]
fn add_show_set_list_del_round_trip() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let ns = t.name.as_str();
    let name = ok(&[
        "add",
        "lab%d",
        "--tun",
        "--netns",
        ns,
        "--owner",
        "4321",
        "--group",
        "root",
        "--mtu",
        "1400",
        "--addr",
        "10.70.0.1/24",
        "--addr",
        "fd00:70::1/64",
        "--peer",
        "10.70.0.2",
        "--up",
    ]);
    assert_eq!(name.trim(), "lab0");
    let link = ip_link(Some(ns), "lab0").unwrap();
    assert_eq!(link["linkinfo"]["info_data"]["persist"], true);
    assert_eq!(link["linkinfo"]["info_data"]["type"], "tun");
    assert_eq!(link["mtu"], 1400);
    assert!(ip_flags(&link).contains(&"UP".to_string()));
    let addrs = ip_addrs(Some(ns), "lab0");
    assert!(addrs
        .iter()
        .any(|a| a["local"] == "10.70.0.1" && a["address"] == "10.70.0.2"));
    assert!(addrs
        .iter()
        .any(|a| a["local"] == "fd00:70::1" && a["prefixlen"] == 64));

    let show: Value =
        serde_json::from_str(&ok(&["show", "lab0", "--netns", ns, "--json"])).unwrap();
    assert_eq!(show["name"], "lab0");
    assert_eq!(show["kind"], "tun");
    assert_eq!(show["persist"], true);
    assert_eq!(show["owner"], 4321);
    assert_eq!(show["group"], 0);
    assert_eq!(show["multi_queue"], false);
    assert_eq!(show["mtu"], 1400);
    assert_eq!(show["up"], true);
    assert!(show["flags"]
        .as_array()
        .unwrap()
        .contains(&Value::from("POINTOPOINT")));
    assert!(show["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["address"] == "10.70.0.1" && a["peer"] == "10.70.0.2"));
    for key in [
        "state",
        "queues",
        "tun_flags",
        "txqueuelen",
        "carrier",
        "mac",
        "pi",
        "vnet_hdr",
        "index",
    ] {
        assert!(show.get(key).is_some(), "show --json lacks {key}");
    }

    let tap = ok(&[
        "add",
        "--netns",
        ns,
        "--multi-queue",
        "--mac",
        "02:00:00:00:70:01",
        "--addr",
        "10.71.0.1/24",
        "--broadcast",
        "10.71.0.9",
    ]);
    assert_eq!(tap.trim(), "tap0");
    let list: Value = serde_json::from_str(&ok(&["list", "--netns", ns, "--json"])).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lab0", "tap0"]);
    assert_eq!(list[1]["multi_queue"], true);
    assert_eq!(list[1]["mac"], "02:00:00:00:70:01");
    assert!(ok(&["list", "--netns", ns]).contains("inet 10.71.0.1/24 brd 10.71.0.9"));

    ok(&[
        "set",
        "lab0",
        "--netns",
        ns,
        "--down",
        "--mtu",
        "1300",
        "--del-addr",
        "10.70.0.1/24",
        "--carrier",
        "off",
        "--owner",
        "54321",
    ]);
    let link = ip_link(Some(ns), "lab0").unwrap();
    assert!(!ip_flags(&link).contains(&"UP".to_string()));
    assert_eq!(link["mtu"], 1300);
    assert_eq!(
        link["linkinfo"]["info_data"]["user"], 54321,
        "a uid with no user name"
    );
    assert!(!ip_addrs(Some(ns), "lab0")
        .iter()
        .any(|a| a["local"] == "10.70.0.1"));
    // Carrier on needs an attached process: a clear refusal for a device nobody holds.
    let err = fails(&["set", "lab0", "--netns", ns, "--carrier", "on"], 1);
    assert!(err.contains("needs a process attached"), "{err}");
    ok(&[
        "set",
        "lab0",
        "--netns",
        ns,
        "--up",
        "--addr",
        "10.72.0.1/24",
    ]);
    assert!(ip_flags(&ip_link(Some(ns), "lab0").unwrap()).contains(&"UP".to_string()));

    ok(&["del", "lab0", "--netns", ns]);
    ok(&["del", "tap0", "--netns", ns]);
    assert!(ip_link(Some(ns), "lab0").is_none() && ip_link(Some(ns), "tap0").is_none());
    assert_eq!(ok(&["list", "--netns", ns, "--json"]).trim(), "[]");
}

#[test]
fn exit_codes_and_one_line_errors_and_nothing_left_behind() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let ns = t.name.as_str();
    // Usage errors: 2. Each names the test's namespace, so a regression that let one through
    // could not leave a persistent device in the root namespace.
    for args in [
        vec!["add", "abcdefghijklmnop"],
        vec!["add", "a/b"],
        vec!["add", "x0", "--addr", "10.0.0.1/33"],
        vec!["add", "x0", "--addr", "fd00::1/129"],
        vec!["add", "x0", "--addr", "300.1.1.1"],
        vec!["add", "x0", "--mac", "zz:00:00:00:00:00"],
        vec!["add", "--tun", "--tap"],
        vec!["set", "x0", "--carrier", "maybe"],
        vec!["netns", "add", "a/b"],
        vec!["del"],
        vec!["frobnicate"],
    ] {
        let mut args = args;
        if matches!(args.first(), Some(&"add") | Some(&"set")) {
            args.extend(["--netns", ns]);
        }
        fails(&args, 2);
    }
    assert_eq!(common::links(Some(ns)), vec!["lo".to_string()]);
    // Failed operations: 1, one line "tunctl: DEVICE: OPERATION: cause".
    let err = fails(&["del", "nothere0", "--netns", ns], 1);
    assert_eq!(
        err.trim(),
        format!("tunctl: nothere0: RTM_GETLINK: no device nothere0 in netns {ns}")
    );
    assert_eq!(err.lines().count(), 1);
    let err = fails(&["del", "lo", "--netns", ns], 1);
    assert!(err.starts_with("tunctl: lo: "), "{err}");
    let err = fails(&["list", "--netns", "tunctl-no-such-ns"], 1);
    assert!(err.contains("does not exist"), "{err}");
    let err = fails(
        &["add", "u0", "--netns", ns, "--owner", "no-such-user-x"],
        1,
    );
    assert!(err.contains("no user named"), "{err}");
    // A failure half-way removes the device it created.
    let err = fails(
        &["add", "half0", "--tun", "--netns", ns, "--mtu", "70000"],
        1,
    );
    assert!(err.starts_with("tunctl: half0: set mtu: "), "{err}");
    let err = fails(
        &[
            "add",
            "half1",
            "--tun",
            "--netns",
            ns,
            "--mtu",
            "1000",
            "--addr",
            "fd00::1/64",
        ],
        1,
    );
    assert!(err.contains("1280"), "{err}");
    assert_eq!(
        common::links(Some(ns)),
        vec!["lo".to_string()],
        "nothing left behind"
    );
    // A name taken by another kind.
    ok(&["add", "kind0", "--tap", "--netns", ns]);
    let err = fails(&["add", "kind0", "--tun", "--netns", ns], 1);
    assert!(err.contains("exists as a tap device"), "{err}");
    let err = fails(&["add", "kind0", "--tap", "--exclusive", "--netns", ns], 1);
    assert!(err.contains("exclusive"), "{err}");
    ok(&["add", "kind0", "--tap", "--netns", ns, "--mtu", "1500"]);
    // `set` checks everything before changing anything.
    for (args, why) in [
        (vec!["--mtu", "1000", "--addr", "fd00::1/64"], "1280"),
        (
            vec!["--mtu", "1400", "--del-addr", "10.9.9.9/24"],
            "not assigned",
        ),
        (
            vec!["--mtu", "1400", "--peer", "10.0.0.2"],
            "no IPv4 address",
        ),
        (
            vec!["--txqueuelen", "5", "--mac", "01:00:00:00:00:01"],
            "multicast",
        ),
    ] {
        let mut full = vec!["set", "kind0", "--netns", ns];
        full.extend(args);
        let err = fails(&full, 1);
        assert!(err.contains(why), "{err}");
    }
    let link = ip_link(Some(ns), "kind0").unwrap();
    assert_eq!(
        (link["mtu"].as_u64(), link["txqlen"].as_u64()),
        (Some(1500), Some(1000)),
        "nothing changed"
    );
    ok(&["set", "kind0", "--netns", ns, "--txqueuelen", "77"]);
    assert_eq!(ip_link(Some(ns), "kind0").unwrap()["txqlen"], 77);
    ok(&["del", "kind0", "--netns", ns]);
}

#[test]
fn netns_verbs_and_help() {
    if !privileged() {
        return;
    }
    let name = format!("tunctl-test-{}", common::unique("cli"));
    let _guard = ChildGuard {
        child: None,
        prefix: name.clone(),
    };
    ok(&["netns", "add", &name]);
    assert!(ok(&["netns", "list"]).lines().any(|l| l == name));
    fails(&["netns", "add", &name], 1);
    ok(&["netns", "del", &name]);
    fails(&["netns", "del", &name], 1);
    let help = ok(&["--help"]);
    for verb in ["add", "del", "list", "show", "set", "netns", "demo"] {
        assert!(help.contains(verb), "--help lacks {verb}");
    }
    assert!(ok(&["add", "--help"]).contains("--multi-queue"));
}

/// `tunctl man --dir` writes every page tunctl(8) and the others cite (none missing), and
/// one page prints by name; bash completes -n with the namespaces of /run/netns.
#[test]
fn manual_pages_and_completion() {
    let dir = std::env::temp_dir().join(format!("tunctl-test-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ok(&["man", "--dir", dir.to_str().unwrap()]);
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for want in [
        "tunctl.8",
        "tunctl-add.8",
        "tunctl-vpwn.8",
        "tunctl-vpwn-up.8",
        "tunctl-br-up.8",
        "tunctl-helper.8",
    ] {
        assert!(pages.iter().any(|p| p == want), "{want} in {pages:?}");
    }
    for page in &pages {
        let text = std::fs::read_to_string(dir.join(page)).unwrap();
        // Every cited page exists: `name(8)` in roff is `name\-sub(8)`.
        for cited in text
            .split(|c: char| c.is_whitespace())
            .filter(|w| w.starts_with("tunctl\\-") && w.ends_with("(8)"))
        {
            let file = format!("{}.8", cited.trim_end_matches("(8)").replace("\\-", "-"));
            assert!(
                pages.contains(&file),
                "{page} cites {cited}, which is not written"
            );
        }
    }
    let vpwn = std::fs::read_to_string(dir.join("tunctl-vpwn.8")).unwrap();
    assert!(
        vpwn.contains("WG_QUICK_USERSPACE_IMPLEMENTATION"),
        "the drop-in command is covered"
    );
    // Written again into a directory where links were planted (as root, in a directory
    // others could write): the links are replaced, what they point at is left alone.
    let victim = dir.join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    std::fs::remove_file(dir.join("tunctl.8")).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("tunctl.8")).unwrap();
    std::fs::remove_file(dir.join("tunctl-add.8")).unwrap();
    std::fs::hard_link(&victim, dir.join("tunctl-add.8")).unwrap();
    ok(&["man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    assert!(!std::fs::symlink_metadata(dir.join("tunctl.8"))
        .unwrap()
        .file_type()
        .is_symlink());
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        ok(&["man", "add"]).contains("TUNCTL\\-ADD")
            || ok(&["man", "add"]).contains("tunctl\\-add")
    );
    assert!(ok(&["man", "tunctl-helper"]).contains("helper.toml"));
    fails(&["man", "no-such-page"], 1);
    let bash = ok(&["completions", "bash"]);
    assert!(
        bash.contains("compgen -W \"$(ls /run/netns 2>/dev/null)\""),
        "-n completes namespaces"
    );
}

/// The MTU of `dev` in `ns`, as `ip -j` lists it.
#[track_caller]
fn ip_mtu(ns: &str, dev: &str) -> u64 {
    ip_link(Some(ns), dev).expect("device exists")["mtu"]
        .as_u64()
        .expect("mtu is a number")
}

/// The entries of `ip -j addr` on `dev` whose local address is `local`.
fn ip_addrs_of(ns: &str, dev: &str, local: &str) -> Vec<Value> {
    ip_addrs(Some(ns), dev)
        .into_iter()
        .filter(|a| a["local"] == local)
        .collect()
}

#[test]
fn set_with_an_address_given_twice_changes_nothing() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let ns = t.name.as_str();
    ok(&["add", "twice0", "--tun", "--netns", ns]);
    let before = ip_mtu(ns, "twice0");
    assert_ne!(before, 1300);
    let err = fails(
        &[
            "set",
            "twice0",
            "--netns",
            ns,
            "--mtu",
            "1300",
            "--addr",
            "10.60.0.1/24",
            "--addr",
            "10.60.0.1/24",
        ],
        1,
    );
    assert!(err.contains("given twice"), "{err}");
    assert_eq!(ip_mtu(ns, "twice0"), before, "MTU unchanged");
    assert!(
        ip_addrs_of(ns, "twice0", "10.60.0.1").is_empty(),
        "address absent"
    );
}

#[test]
fn set_with_ipv6_disabled_changes_nothing() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let ns = t.name.as_str();
    ok(&[
        "add",
        "nov6",
        "--tun",
        "--netns",
        ns,
        "--addr",
        "10.65.0.1/24",
    ]);
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c"])
        .arg("echo 1 > /proc/sys/net/ipv6/conf/nov6/disable_ipv6")
        .output()
        .expect("run ip netns exec");
    assert!(out.status.success(), "disable_ipv6: {}", stderr(&out));
    let before = ip_mtu(ns, "nov6");
    assert_ne!(before, 1400);
    let err = fails(
        &[
            "set",
            "nov6",
            "--netns",
            ns,
            "--mtu",
            "1400",
            "--del-addr",
            "10.65.0.1/24",
            "--addr",
            "fd00::1/64",
        ],
        1,
    );
    assert!(err.contains("disable_ipv6"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(ip_mtu(ns, "nov6"), before, "MTU unchanged");
    let kept = ip_addrs_of(ns, "nov6", "10.65.0.1");
    assert_eq!(kept.len(), 1, "address kept: {kept:?}");
    assert_eq!(kept[0]["prefixlen"], 24);
    assert!(ip_addrs_of(ns, "nov6", "fd00::1").is_empty());
}

#[test]
fn set_undoes_what_it_did_when_the_kernel_refuses_mid_way() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let ns = t.name.as_str();
    // Persistent, and no process holds it open: carrier on is refused (EPERM) by the kernel,
    // not by the plan, so MTU and address are applied first and must be put back.
    ok(&["add", "undo0", "--tun", "--netns", ns]);
    let link = ip_link(Some(ns), "undo0").unwrap();
    assert_eq!(link["linkinfo"]["info_data"]["persist"], true);
    let before = ip_mtu(ns, "undo0");
    assert_ne!(before, 1400);
    let err = fails(
        &[
            "set",
            "undo0",
            "--netns",
            ns,
            "--mtu",
            "1400",
            "--addr",
            "10.61.0.1/24",
            "--carrier",
            "on",
        ],
        1,
    );
    assert!(err.starts_with("tunctl: undo0: "), "{err}");
    assert!(err.contains("needs a process attached"), "{err}");
    assert!(err.contains("undone"), "{err}");
    assert!(
        err.contains("10.61.0.1/24") && err.contains("MTU 1400"),
        "says what was undone: {err}"
    );
    assert!(!err.contains("could not undo"), "{err}");
    assert_eq!(ip_mtu(ns, "undo0"), before, "MTU put back");
    assert!(
        ip_addrs_of(ns, "undo0", "10.61.0.1").is_empty(),
        "address removed again"
    );
}

#[test]
fn add_twice_is_idempotent() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let ns = t.name.as_str();
    let args = [
        "add",
        "idem0",
        "--tun",
        "--netns",
        ns,
        "--addr",
        "10.62.0.1/24",
        "--mtu",
        "1400",
        "--up",
    ];
    assert_eq!(ok(&args).trim(), "idem0");
    assert_eq!(ok(&args).trim(), "idem0", "the second run succeeds too");
    let link = ip_link(Some(ns), "idem0").unwrap();
    assert_eq!(link["mtu"], 1400);
    assert!(ip_flags(&link).contains(&"UP".to_string()));
    assert_eq!(link["linkinfo"]["info_data"]["persist"], true);
    let found = ip_addrs_of(ns, "idem0", "10.62.0.1");
    assert_eq!(found.len(), 1, "the address exactly once: {found:?}");
    assert_eq!(found[0]["prefixlen"], 24);
    assert_eq!(common::links(Some(ns)), ["lo", "idem0"]);
}

#[test]
fn add_attaches_only_to_persistent_devices() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let ns = t.name.as_str();
    // Another program's device: not persistent, held open by this test.
    let dev = tunctl::Device::builder()
        .tun()
        .name("np0")
        .namespace(t.ns.clone())
        .create()
        .expect("create a non-persistent device");
    let link = ip_link(Some(ns), "np0").unwrap();
    assert_eq!(link["linkinfo"]["info_data"]["persist"], false);
    let err = fails(&["add", "np0", "--tun", "--netns", ns], 1);
    assert!(err.contains("not persistent"), "{err}");
    let link = ip_link(Some(ns), "np0").expect("the device is still there");
    assert_eq!(
        link["linkinfo"]["info_data"]["persist"], false,
        "still not persistent"
    );
    assert!(
        link["linkinfo"]["info_data"].get("user").is_none(),
        "no owner given to it: {link}"
    );
    drop(dev);
    assert!(
        ip_link(Some(ns), "np0").is_none(),
        "gone with its only holder"
    );
}

#[test]
fn add_owner_defaults_to_the_caller_and_can_be_chosen() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let ns = t.name.as_str();
    let data =
        |dev: &str| ip_link(Some(ns), dev).expect("device exists")["linkinfo"]["info_data"].clone();
    // Default: the invoking user (root here).
    ok(&["add", "own0", "--tun", "--netns", ns]);
    let d = data("own0");
    assert!(d["user"] == "root" || d["user"] == 0, "owner root: {d}");
    assert!(d.get("group").is_none(), "{d}");
    // --no-owner: neither owner nor group.
    ok(&["add", "own1", "--tun", "--netns", ns, "--no-owner"]);
    let d = data("own1");
    assert!(d.get("user").is_none() && d.get("group").is_none(), "{d}");
    // --owner.
    ok(&["add", "own2", "--tun", "--netns", ns, "--owner", "4242"]);
    let d = data("own2");
    assert_eq!(d["user"], 4242, "{d}");
    assert!(d.get("group").is_none(), "{d}");
    // --group alone: that group, and no owner.
    ok(&["add", "own3", "--tun", "--netns", ns, "--group", "4243"]);
    let d = data("own3");
    assert_eq!(d["group"], 4243, "{d}");
    assert!(d.get("user").is_none(), "{d}");
    // --no-owner with --owner: a usage error, nothing created.
    fails(
        &[
            "add",
            "own4",
            "--tun",
            "--netns",
            ns,
            "--no-owner",
            "--owner",
            "1",
        ],
        2,
    );
    assert!(ip_link(Some(ns), "own4").is_none());
    // Multi-queue (made in a private namespace and moved in): the owner, and no alias.
    ok(&[
        "add",
        "ownmq0",
        "--tun",
        "--multi-queue",
        "--owner",
        "4242",
        "--netns",
        ns,
    ]);
    let link = ip_link(Some(ns), "ownmq0").unwrap();
    let d = &link["linkinfo"]["info_data"];
    assert_eq!(d["user"], 4242, "{d}");
    assert_eq!(d["multi_queue"], true, "{d}");
    assert_eq!(d["persist"], true, "{d}");
    assert!(link.get("ifalias").is_none(), "alias unset: {link}");
    assert_eq!(
        common::links(Some(ns)),
        ["lo", "own0", "own1", "own2", "own3", "ownmq0"]
    );
}

#[test]
fn set_refuses_numbers_not_written_plainly() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let ns = t.name.as_str();
    ok(&["add", "num0", "--tun", "--netns", ns]);
    let before = ip_mtu(ns, "num0");
    assert_ne!(before, 1400);
    for args in [
        vec!["--mtu", "+1400"],
        vec!["--mtu", "01400"],
        vec!["--mtu", "1400", "--addr", "10.0.0.1/024"],
    ] {
        let mut full = vec!["set", "num0", "--netns", ns];
        full.extend(args);
        let err = fails(&full, 2);
        assert!(err.contains("plain decimal"), "{err}");
    }
    assert_eq!(ip_mtu(ns, "num0"), before, "MTU unchanged");
    assert!(ip_addrs_of(ns, "num0", "10.0.0.1").is_empty(), "no address");
}

#[test]
fn set_with_nothing_to_change_says_so() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let ns = t.name.as_str();
    ok(&["add", "same0", "--tun", "--netns", ns, "--mtu", "1400"]);
    let out = tunctl(&["set", "same0", "--netns", ns, "--mtu", "1400", "--down"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing to change"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");
    let link = ip_link(Some(ns), "same0").unwrap();
    assert_eq!(link["mtu"], 1400);
    assert!(!ip_flags(&link).contains(&"UP".to_string()));
}

#[test]
fn peer_pairs_with_the_address_of_the_same_command() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let ns = t.name.as_str();
    ok(&[
        "add",
        "peer0",
        "--tun",
        "--netns",
        ns,
        "--addr",
        "10.63.0.1/16",
    ]);
    ok(&[
        "set",
        "peer0",
        "--netns",
        ns,
        "--addr",
        "10.63.5.5/32",
        "--peer",
        "10.64.0.1",
    ]);
    let check = || {
        let new = ip_addrs_of(ns, "peer0", "10.63.5.5");
        assert_eq!(new.len(), 1, "{new:?}");
        assert_eq!(new[0]["address"], "10.64.0.1", "the peer is on 10.63.5.5");
        assert_eq!(new[0]["prefixlen"], 32);
        let old = ip_addrs_of(ns, "peer0", "10.63.0.1");
        assert_eq!(old.len(), 1, "{old:?}");
        assert_eq!(old[0]["prefixlen"], 16, "keeps its prefix");
        assert!(old[0].get("address").is_none(), "and no peer: {old:?}");
    };
    check();
    // Alone, the peer has two IPv4 addresses to choose from: refused, nothing changed.
    let err = fails(&["set", "peer0", "--netns", ns, "--peer", "10.64.0.9"], 1);
    assert!(err.contains("several IPv4 addresses"), "{err}");
    check();
}

/// `tunctl vpwn`: keys in wg's formats (checked against `wg pubkey` where it is installed),
/// and two `vpwn up` ends in two namespaces over a veth carrying a datagram, then removing
/// their devices on SIGTERM.
#[test]
fn vpwn_keys_and_a_tunnel_from_the_command_line() {
    let Some((a, _g)) = common::privileged_ns() else {
        return;
    };
    let b = common::TestNs::new();
    let private = ok(&["vpwn", "genkey"]).trim().to_string();
    assert_eq!(private.len(), 44);
    let public = |key: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tunctl"))
            .args(["vpwn", "pubkey"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(key.as_bytes())
            .unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string()
    };
    if std::path::Path::new("/usr/bin/wg").exists() {
        let mut wg = Command::new("wg")
            .arg("pubkey")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        wg.stdin
            .take()
            .unwrap()
            .write_all(private.as_bytes())
            .unwrap();
        let theirs = String::from_utf8(wg.wait_with_output().unwrap().stdout).unwrap();
        assert_eq!(
            public(&private),
            theirs.trim(),
            "same public key as wg pubkey"
        );
    }
    assert_eq!(ok(&["vpwn", "genpsk"]).trim().len(), 44);
    assert_eq!(
        fails(
            &[
                "vpwn",
                "up",
                "--key-file",
                "/nonexistent",
                "--peer-key",
                "x"
            ],
            1
        )
        .lines()
        .count(),
        1
    );

    // Two ends over a veth.
    common::veth_between(&a, &b, "10.211.0");
    let dir = std::env::temp_dir().join(format!("tunctl-cli-vpwn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ka, kb) = (ok(&["vpwn", "genkey"]), ok(&["vpwn", "genkey"]));
    std::fs::write(dir.join("a.key"), &ka).unwrap();
    std::fs::write(dir.join("b.key"), &kb).unwrap();
    // A key file others may read is refused, naming the file and the fix.
    use std::os::unix::fs::PermissionsExt;
    let key_path = dir.join("a.key");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = fails(
        &[
            "vpwn",
            "up",
            "vpwnrefused",
            "--key-file",
            key_path.to_str().unwrap(),
            "--peer-key",
            ka.trim(),
        ],
        1,
    );
    assert!(
        err.contains("others may read or write it (mode 0644): chmod 600"),
        "{err}"
    );
    assert!(common::ip_link(None, "vpwnrefused").is_none());
    // The file checked is the file read: another user's key (mode 0600) and a FIFO in a
    // key's place are refused too, each saying why, and nothing waits on the FIFO.
    let theirs = dir.join("theirs.key");
    std::fs::write(&theirs, &ka).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(common::system_user("tunctl-test")), None).unwrap();
    let fifo = dir.join("fifo.key");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for (path, why) in [(&theirs, "belongs to uid"), (&fifo, "not a regular file")] {
        let err = fails(
            &[
                "vpwn",
                "up",
                "vpwnrefused",
                "--key-file",
                path.to_str().unwrap(),
                "--peer-key",
                ka.trim(),
            ],
            1,
        );
        assert!(err.contains(why), "{err}");
    }
    for k in ["a.key", "b.key"] {
        std::fs::set_permissions(dir.join(k), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (pa, pb) = (public(&ka), public(&kb));
    // Names are unique: the UAPI socket directory is not per namespace.
    let start =
        |ns: &str, key: &str, port: &str, peer: &str, peer_key: &str, addr: &str, allowed: &str| {
            let name = common::unique(key.trim_end_matches(".key"));
            Command::new(env!("CARGO_BIN_EXE_tunctl"))
                .args(["-n", ns, "vpwn", "up", &name, "--key-file"])
                .arg(dir.join(key))
                .args([
                    "--listen",
                    port,
                    "--peer",
                    peer,
                    "--peer-key",
                    peer_key,
                    "--address",
                    addr,
                ])
                .args(["--allowed-ips", allowed])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
    let ea = start(
        &a.name,
        "a.key",
        "51921",
        "10.211.0.2:51922",
        &pb,
        "10.212.0.1/24",
        "10.212.0.2/32",
    );
    let eb = start(
        &b.name,
        "b.key",
        "51922",
        "10.211.0.1:51921",
        &pa,
        "10.212.0.2/24",
        "10.212.0.1/32",
    );
    let mut guards = vec![
        ChildGuard {
            child: Some(ea),
            prefix: "never".into(),
        },
        ChildGuard {
            child: Some(eb),
            prefix: "never".into(),
        },
    ];
    // Up: each device has its address (the last thing `up` does before its threads).
    let has = |ns: &str, addr: &str| {
        common::ip_json(Some(ns), &["addr"])
            .to_string()
            .contains(&format!("\"{addr}\""))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !(has(&a.name, "10.212.0.1") && has(&b.name, "10.212.0.2"))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let rx = bind_in(&b, "10.212.0.2:7021");
    rx.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let tx = bind_in(&a, "10.212.0.1:0");
    let mut got = false;
    let mut buf = [0u8; 32];
    while !got && std::time::Instant::now() < deadline + std::time::Duration::from_secs(5) {
        let _ = tx.send_to(b"hello", "10.212.0.2:7021");
        got = rx
            .recv_from(&mut buf)
            .is_ok_and(|(n, _)| &buf[..n] == b"hello");
    }
    assert!(got, "a datagram crossed the tunnel");
    // `tunctl vpwn show`, through the UAPI socket: both ends, with a handshake.
    let shown: serde_json::Value = serde_json::from_str(&ok(&["vpwn", "show", "--json"])).unwrap();
    let ours: Vec<&Value> = shown
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            let peer = &t["peers"][0]["public_key"];
            *peer == pa.as_str() || *peer == pb.as_str()
        })
        .collect();
    assert_eq!(ours.len(), 2, "{shown}");
    for t in ours {
        // One shape: the tunnel, its namespace, its peers; nothing repeated at the top.
        assert!(
            t.get("peer").is_none() && t.get("endpoint").is_none(),
            "{t}"
        );
        assert!(
            t["namespace"] == a.name.as_str() || t["namespace"] == b.name.as_str(),
            "{t}"
        );
        let p = &t["peers"][0];
        assert!(p["latest_handshake"].as_u64().is_some(), "{t}");
        assert!(
            p["rx_bytes"].as_u64().unwrap() > 0 || p["tx_bytes"].as_u64().unwrap() > 0,
            "{t}"
        );
    }
    // -n NS shows the tunnels of that namespace only.
    let in_a: Value =
        serde_json::from_str(&ok(&["-n", &a.name, "vpwn", "show", "--json"])).unwrap();
    assert_eq!(in_a.as_array().map(Vec::len), Some(1), "{in_a}");
    assert_eq!(in_a[0]["namespace"], a.name.as_str(), "{in_a}");
    // A tunnel that is not there is named as such.
    let err = fails(&["vpwn", "show", "nosuchvpwn0"], 1);
    assert!(
        err.starts_with("tunctl: nosuchvpwn0: vpwn show: no such tunnel"),
        "{err}"
    );
    let err = fails(
        &["vpwn", "up", "x0", "--config", "/nonexistent/wg0.conf"],
        1,
    );
    assert!(err.contains("--config /nonexistent/wg0.conf"), "{err}");
    // SIGTERM: each end reports its counters and removes its device.
    for g in &mut guards {
        let child = g.child.as_mut().unwrap();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    for g in &mut guards {
        let out = g.child.take().unwrap().wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains("public key") && err.contains("down (signal); sent"),
            "{err}"
        );
    }
    assert_eq!(
        common::links(Some(&a.name)).len(),
        2,
        "device removed: {:?}",
        common::links(Some(&a.name))
    );
    let _ = std::fs::remove_dir_all(&dir);
}
