//! The `tunctl` command end to end: the demo, every verb, JSON output, exit codes, and that a
//! failed command leaves nothing behind. Checked against `ip -j`.

#[path = "../../tunctl/tests/common/mod.rs"]
mod common;

use std::process::{Command, Output};

use common::{ip_addrs, ip_flags, ip_link, privileged};
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
    let prefix = format!("tunctl-demo-{}-", child.id());
    let _guard = ChildGuard {
        child: None,
        prefix: prefix.clone(),
    };
    let out = child.wait_with_output().unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("3/3 replies"), "{text}");
    assert!(text.contains("Gbit/s"), "{text}");
    assert!(text.contains("cleaned up"), "{text}");
    let left: Vec<String> = tunctl::Namespace::list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "demo left namespaces behind: {left:?}");
}

#[test]
fn demo_cleans_up_on_ctrl_c() {
    if !privileged() {
        return;
    }
    let child = Command::new(env!("CARGO_BIN_EXE_tunctl"))
        .args(["demo", "--seconds", "20"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let prefix = format!("tunctl-demo-{}-", child.id());
    let pid = child.id();
    let mut guard = ChildGuard {
        child: Some(child),
        prefix: prefix.clone(),
    };
    // Wait (bounded) until the demo has built its namespaces, then interrupt it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !tunctl::Namespace::list()
        .unwrap()
        .iter()
        .any(|n| n.starts_with(&prefix))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "demo never created its namespaces"
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
    let left: Vec<String> = tunctl::Namespace::list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
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
