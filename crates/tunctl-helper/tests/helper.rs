//! `tunctl-helper` end to end: installed with `setcap cap_net_admin,cap_sys_admin+ep` in a
//! temporary directory, a policy in /etc/tunctl/helper.toml, and an unprivileged user
//! (`tunctl-test`, created if missing) running `tunctl` and a library program through it.
//! Every refusal the issue lists is checked, with nothing created or left behind.

#[path = "../../tunctl/tests/common/mod.rs"]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use common::{ip_addrs, ip_link, privileged, TestNs};
use tunctl::helper::{self, Reply};

const USER: &str = "tunctl-test";

/// The tests share the policy file: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The installed helper, the CLI and the example, copied where the test user may run them.
struct Install {
    dir: PathBuf,
    saved_policy: Option<Vec<u8>>,
    made_etc_dir: bool,
    tun_mode: u32,
}

impl Install {
    fn new(policy: &str) -> Install {
        // Unprivileged users open /dev/net/tun itself: it is 0666 on most distributions (the
        // kernel checks CAP_NET_ADMIN or device ownership at TUNSETIFF, not at open). Where
        // it is not, it is for the duration of the test.
        let tun_mode = std::fs::metadata("/dev/net/tun")
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0o666);
        if tun_mode != 0o666 {
            std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(0o666))
                .unwrap();
        }
        tunctl::user_id(USER).unwrap_or_else(|_| {
            let out = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    USER,
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "useradd: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            tunctl::user_id(USER).unwrap()
        });
        // A trusted place (root's, writable by no one else, up to /): clients refuse a
        // helper anywhere else, so not under the world-writable /tmp.
        let dir = Path::new("/run").join(format!("tunctl-helper-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bins = Path::new(env!("CARGO_BIN_EXE_tunctl-helper"))
            .parent()
            .unwrap()
            .to_path_buf();
        for (from, to) in [
            (
                PathBuf::from(env!("CARGO_BIN_EXE_tunctl-helper")),
                "tunctl-helper",
            ),
            (bins.join("tunctl"), "tunctl"),
            (bins.join("examples/helper_ping"), "helper_ping"),
        ] {
            assert!(
                from.exists(),
                "{} is missing: run `cargo test --workspace --all-features`",
                from.display()
            );
            std::fs::copy(&from, dir.join(to)).unwrap();
            std::fs::set_permissions(dir.join(to), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let out = Command::new("setcap")
            .args(["cap_net_admin,cap_sys_admin+ep"])
            .arg(dir.join("tunctl-helper"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "setcap: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let made_etc_dir = !Path::new("/etc/tunctl").exists();
        std::fs::create_dir_all("/etc/tunctl").unwrap();
        let saved_policy = std::fs::read(tunctl::helper::POLICY_PATH).ok();
        let install = Install {
            dir,
            saved_policy,
            made_etc_dir,
            tun_mode,
        };
        install.policy(policy);
        install
    }

    fn policy(&self, text: &str) {
        std::fs::write("/etc/tunctl/helper.toml", text).unwrap();
        std::fs::set_permissions(
            "/etc/tunctl/helper.toml",
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }

    /// Runs one of the installed programs as `user` (no capabilities), with TUNCTL_HELPER set.
    fn run_as(&self, user: &str, program: &str, args: &[&str]) -> Output {
        let group = if user == "nobody" { "65534" } else { user };
        Command::new("setpriv")
            .args([
                "--reuid",
                user,
                "--regid",
                group,
                "--clear-groups",
                "--inh-caps=-all",
                "--",
            ])
            .arg(self.dir.join(program))
            .args(args)
            .env("TUNCTL_HELPER", self.dir.join("tunctl-helper"))
            .output()
            .unwrap()
    }

    /// `tunctl --verbose ARGS` as the test user: the helper's log lines are shown.
    fn tunctl(&self, args: &[&str]) -> Output {
        let mut all = vec!["--verbose"];
        all.extend_from_slice(args);
        self.run_as(USER, "tunctl", &all)
    }
}

impl Drop for Install {
    fn drop(&mut self) {
        match &self.saved_policy {
            Some(text) => {
                let _ = std::fs::write("/etc/tunctl/helper.toml", text);
            }
            None => {
                let _ = std::fs::remove_file("/etc/tunctl/helper.toml");
            }
        }
        if self.tun_mode != 0o666 {
            let _ = std::fs::set_permissions(
                "/dev/net/tun",
                std::fs::Permissions::from_mode(self.tun_mode),
            );
        }
        if self.made_etc_dir {
            let _ = std::fs::remove_dir("/etc/tunctl");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn policy(ns_pattern: &str, max: usize) -> String {
    format!(
        r#"
[[allow]]
users = ["{USER}"]
names = ["ht*"]
kinds = ["tun", "tap"]
namespaces = ["{ns_pattern}"]
addresses = ["10.88.0.0/16", "fd00:88::/32"]
mtu = [1280, 9000]
flags = ["persist"]
max_devices = {max}
"#
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The start of every test: the privilege gate, the serial lock, the helper installed with
/// a policy (namespaces `ns_pattern`, `max` devices), and a namespace that policy allows.
fn setup(
    ns_pattern: &str,
    max: usize,
) -> Option<(std::sync::MutexGuard<'static, ()>, Install, TestNs)> {
    if !privileged() {
        return None;
    }
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let install = Install::new(&policy(ns_pattern, max));
    Some((serial, install, allowed_ns()))
}

/// A namespace whose name the policy allows (`tunctl-ht-*`).
fn allowed_ns() -> TestNs {
    let name = format!("tunctl-ht-{}", common::unique(""));
    let ns = tunctl::Namespace::create(&name).unwrap();
    TestNs::adopt(name, ns)
}

#[test]
fn unprivileged_user_adds_configures_and_deletes_through_the_helper() {
    let Some((_s, install, t)) = setup("tunctl-ht-*", 4) else {
        return;
    };
    // The user really has no capability.
    let caps = install.run_as(USER, "tunctl", &["--version"]);
    assert!(caps.status.success());
    let status = Command::new("setpriv")
        .args([
            "--reuid",
            USER,
            "--regid",
            USER,
            "--clear-groups",
            "--",
            "grep",
            "CapEff",
            "/proc/self/status",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("0000000000000000"),
        "{}",
        text(&status)
    );

    let out = install.tunctl(&[
        "add",
        "ht%d",
        "--tun",
        "--netns",
        &t.name,
        "--addr",
        "10.88.0.1/24",
        "--mtu",
        "1400",
        "--up",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ht0");
    assert!(
        text(&out).contains("allowed by rule 1"),
        "the decision is logged: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("done -> ht0"),
        "and its outcome: {}",
        text(&out)
    );
    let link = ip_link(Some(&t.name), "ht0").expect("created in the namespace");
    let info = &link["linkinfo"]["info_data"];
    assert_eq!(info["persist"], true);
    assert_eq!(info["user"], USER, "owned by the requesting user");
    assert_eq!(link["mtu"], 1400);
    assert!(ip_addrs(Some(&t.name), "ht0")
        .iter()
        .any(|a| a["local"] == "10.88.0.1"));

    let out = install.tunctl(&[
        "set",
        "ht0",
        "--netns",
        &t.name,
        "--addr",
        "10.88.1.1/24",
        "--mtu",
        "1300",
        "--down",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(ip_addrs(Some(&t.name), "ht0")
        .iter()
        .any(|a| a["local"] == "10.88.1.1"));
    let link = ip_link(Some(&t.name), "ht0").unwrap();
    assert_eq!(link["mtu"], 1300);
    assert!(!common::ip_flags(&link).contains(&"UP".to_string()));
    // File descriptors the caller leaves open (not close-on-exec) are closed by the helper
    // before it reads anything. The baseline is what this test process passes on anyway
    // (cargo's jobserver pipes); one more leaked fd must show as one more closed.
    let closed = |out: &Output| -> usize {
        text(out)
            .lines()
            .find_map(|l| l.split_once(") closed ")?.1.split(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let baseline = install.tunctl(&["set", "ht0", "--netns", &t.name, "--up"]);
    assert!(baseline.status.success(), "{}", text(&baseline));
    let leak = std::fs::File::open("/etc/hostname").unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: F_SETFD on an fd we own, clearing FD_CLOEXEC so that children inherit it.
    assert_eq!(
        unsafe { libc::fcntl(leak.as_raw_fd(), libc::F_SETFD, 0) },
        0
    );
    let with_leak = install.tunctl(&["set", "ht0", "--netns", &t.name, "--down"]);
    drop(leak);
    assert!(with_leak.status.success(), "{}", text(&with_leak));
    assert_eq!(
        closed(&with_leak),
        closed(&baseline) + 1,
        "{}",
        text(&with_leak)
    );

    let out = install.tunctl(&["del", "ht0", "--netns", &t.name]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(ip_link(Some(&t.name), "ht0").is_none());
}

#[test]
fn a_library_program_moves_packets_through_a_helper_made_device() {
    let Some((_s, install, t)) = setup("tunctl-ht-*", 4) else {
        return;
    };
    let out = install.run_as(USER, "helper_ping", &[&t.name]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "reply");
    assert_eq!(
        common::links(Some(&t.name)),
        vec!["lo".to_string()],
        "destroyed by the program"
    );
}

#[test]
fn every_refusal_creates_nothing() {
    let Some((_s, install, t)) = setup("tunctl-ht-*", 2) else {
        return;
    };
    let other = TestNs::new(); // named tunctl-test-*: not allowed
                               // A device root made: not the user's to touch.
    let root_dev = tunctl::Device::builder()
        .tun()
        .name("ht9")
        .namespace(t.ns.clone())
        .create()
        .unwrap();
    root_dev.set_persist(true).unwrap();
    drop(root_dev);
    // A symlink posing as a namespace.
    let link_name = format!("tunctl-ht-{}link", common::unique(""));
    let link_path = Path::new("/run/netns").join(&link_name);
    std::os::unix::fs::symlink("/proc/1/ns/net", &link_path).unwrap();
    let _unlink = RemoveOnDrop(link_path.clone());
    let before = (common::links(Some(&t.name)), common::links(None));

    let refusals: Vec<(&str, Vec<&str>, &str)> = vec![
        ("user not in policy", vec!["nobody"], "no rule allows"),
        (
            "name outside patterns",
            vec!["add", "zz0", "--tun", "--netns", &t.name],
            "matches no allowed pattern",
        ),
        (
            "namespace not allowed",
            vec!["add", "ht%d", "--tun", "--netns", &other.name],
            "is not allowed",
        ),
        (
            "symlinked namespace",
            vec!["add", "ht%d", "--tun", "--netns", &link_name],
            "symbolic links",
        ),
        (
            "address outside policy",
            vec![
                "add",
                "ht%d",
                "--tun",
                "--netns",
                &t.name,
                "--addr",
                "192.0.2.1/24",
            ],
            "outside the allowed ranges",
        ),
        (
            "prefix hijacking routes",
            vec![
                "add",
                "ht%d",
                "--tun",
                "--netns",
                &t.name,
                "--addr",
                "10.88.0.1/5",
            ],
            "outside the allowed ranges",
        ),
        (
            "peer outside policy",
            vec![
                "add",
                "ht%d",
                "--tun",
                "--netns",
                &t.name,
                "--addr",
                "10.88.0.1/32",
                "--peer",
                "10.99.0.1",
            ],
            "outside",
        ),
        (
            "MTU outside policy",
            vec!["add", "ht%d", "--tun", "--netns", &t.name, "--mtu", "576"],
            "MTU",
        ),
        (
            "flag not allowed",
            vec!["add", "ht%d", "--tun", "--vnet-hdr", "--netns", &t.name],
            "vnet_hdr",
        ),
        (
            "someone else's device",
            vec!["del", "ht9", "--netns", &t.name],
            "was not created for",
        ),
        (
            "someone else's device (set)",
            vec!["set", "ht9", "--netns", &t.name, "--mtu", "1400"],
            "was not created for",
        ),
    ];
    for (what, args, why) in refusals {
        let out = if args[0] == "nobody" {
            install.run_as(
                "nobody",
                "tunctl",
                &["add", "ht%d", "--tun", "--netns", &t.name],
            )
        } else {
            install.tunctl(&args)
        };
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
        assert!(text(&out).contains(why), "{what}: {}", text(&out));
    }
    // Bad names never reach the helper: the CLI refuses them as usage errors.
    for bad in ["abcdefghijklmnop", "a/b", ".."] {
        assert_eq!(
            install
                .tunctl(&["add", bad, "--netns", &t.name])
                .status
                .code(),
            Some(2),
            "{bad}"
        );
    }
    assert_eq!(
        (common::links(Some(&t.name)), common::links(None)),
        before,
        "nothing created"
    );
    assert!(
        ip_link(Some(&t.name), "ht9").is_some(),
        "root's device untouched"
    );

    // max_devices: two allowed, the third refused.
    for _ in 0..2 {
        let out = install.tunctl(&["add", "ht%d", "--tun", "--netns", &t.name]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = install.tunctl(&["add", "ht%d", "--tun", "--netns", &t.name]);
    assert!(text(&out).contains("the limit is 2"), "{}", text(&out));

    // A policy writable by others, or missing, denies everything.
    std::fs::set_permissions(
        "/etc/tunctl/helper.toml",
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let out = install.tunctl(&["add", "ht%d", "--tun", "--netns", &t.name]);
    assert!(
        text(&out).contains("writable only by root"),
        "{}",
        text(&out)
    );
    std::fs::remove_file("/etc/tunctl/helper.toml").unwrap();
    let out = install.tunctl(&["add", "ht%d", "--tun", "--netns", &t.name]);
    assert!(text(&out).contains("needs CAP_NET_ADMIN"), "{}", text(&out));
}

/// Removes a file on drop (also when the test fails).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn malformed_requests_are_refused_and_leak_nothing() {
    let Some((_s, install, _t)) = setup("own", 4) else {
        return;
    };
    std::env::set_var("TUNCTL_HELPER", install.dir.join("tunctl-helper"));
    let before = (common::links(None), common::open_fds().len());
    let good = helper::Request::new(helper::Op::Create, "ht%d").encode();
    let cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        good.as_bytes()[..good.len() / 2].to_vec(),
        vec![0xff; 100],
        "x".repeat(5000).into_bytes(),
        good.replace("kind tun", "kind tan").into_bytes(),
        good.replace("end\n", "owner 0\nend\n").into_bytes(),
    ];
    for bytes in cases {
        let (reply, fds) = helper::exchange(&bytes).unwrap();
        assert!(matches!(reply, Reply::Denied(_)), "{reply:?}");
        assert!(fds.is_empty());
    }
    // Root is not in the policy either: a well-formed request from root is denied too.
    let (reply, _) = helper::exchange(good.as_bytes()).unwrap();
    assert!(
        matches!(reply, Reply::Denied(ref why) if why.contains("no rule allows")),
        "{reply:?}"
    );
    std::env::remove_var("TUNCTL_HELPER");
    assert_eq!(
        (common::links(None), common::open_fds().len()),
        before,
        "no device, no fd left behind"
    );
}
