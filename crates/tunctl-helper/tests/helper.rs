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

use common::{ip_addrs, ip_json, ip_link, privileged, TestNs};
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
    /// A system log for the helper's records when the machine runs none (a container, CI):
    /// without one, the helper carries out nothing.
    _syslog: Option<BackgroundLog>,
}

/// A stand-in system logger at /dev/log that takes and discards every record, for as long
/// as it lives; removed on drop.
struct BackgroundLog {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundLog {
    /// One, if nothing answers at /dev/log.
    fn if_missing() -> Option<BackgroundLog> {
        let probe = std::os::unix::net::UnixDatagram::unbound().unwrap();
        if probe.connect(tunctl_helper::SYSLOG_PATH).is_ok() {
            return None;
        }
        let _ = std::fs::remove_file(tunctl_helper::SYSLOG_PATH);
        let sock = std::os::unix::net::UnixDatagram::bind(tunctl_helper::SYSLOG_PATH).unwrap();
        std::fs::set_permissions(
            tunctl_helper::SYSLOG_PATH,
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_millis(100)))
            .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = sock.recv(&mut buf);
            }
        });
        Some(BackgroundLog {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for BackgroundLog {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(tunctl_helper::SYSLOG_PATH);
    }
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
        common::system_user(USER);
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
            (bins.join("examples/race_attach"), "race_attach"),
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
            _syslog: BackgroundLog::if_missing(),
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
        as_user(user)
            .arg(self.dir.join(program))
            .args(args)
            .env("TUNCTL_HELPER", self.dir.join("tunctl-helper"))
            .output()
            .unwrap()
    }

    /// `program ARGS` as `user` (or root, with `None`) inside the namespace `ns`, entered
    /// with nsenter before privileges are dropped.
    fn command_in(&self, ns: &str, user: Option<&str>, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{ns}")).arg("--");
        if let Some(user) = user {
            cmd.arg("setpriv").args(user_args(user));
        }
        cmd.arg(self.dir.join(program))
            .args(args)
            .env("TUNCTL_HELPER", self.dir.join("tunctl-helper"));
        cmd
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
flags = ["persist", "multi_queue"]
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
    setup_with(&policy(ns_pattern, max))
}

/// [`setup`] with the helper installed with `policy` (which must allow `tunctl-ht-*`).
fn setup_with(policy: &str) -> Option<(std::sync::MutexGuard<'static, ()>, Install, TestNs)> {
    if !privileged() {
        return None;
    }
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let install = Install::new(policy);
    Some((serial, install, allowed_ns()))
}

/// A namespace whose name the policy allows (`tunctl-ht-*`).
fn allowed_ns() -> TestNs {
    let name = format!("tunctl-ht-{}", common::unique(""));
    let ns = tunctl::Namespace::create(&name).unwrap().keep();
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
    // The holder cannot route through packets it writes: no router advertisements, no
    // redirects, no spoofed sources (read back from /proc/sys inside the namespace).
    for (conf, want) in [
        ("ipv6/conf/ht0/accept_ra", "0"),
        ("ipv6/conf/ht0/autoconf", "0"),
        ("ipv6/conf/ht0/accept_redirects", "0"),
        ("ipv4/conf/ht0/rp_filter", "1"),
        ("ipv4/conf/ht0/accept_redirects", "0"),
        ("ipv4/conf/ht0/accept_source_route", "0"),
    ] {
        let got = Command::new("ip")
            .args(["netns", "exec", &t.name, "cat"])
            .arg(format!("/proc/sys/net/{conf}"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), want, "{conf}");
    }
    assert_eq!(link["mtu"], 1400);
    assert!(ip_addrs(Some(&t.name), "ht0")
        .iter()
        .any(|a| a["local"] == "10.88.0.1"));
    // And they hold: a router advertisement the user writes into the device (which it
    // holds meanwhile, so the link has its carrier) installs no route and no address.
    let ra = common::router_advertisement("fd00:88:1::".parse().unwrap());
    let mut holder = common::inject_as(USER, &t.name, "ht0", 2000, &[ra]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (routes, addrs) = common::ipv6_routes_and_addrs(&t.name, "ht0");
    let _ = holder.kill();
    let held = holder.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&held.stdout).contains("1 packet(s) written"),
        "{}",
        String::from_utf8_lossy(&held.stderr)
    );
    assert!(
        !routes
            .iter()
            .any(|r| r == "default" || r.starts_with("fd00:88:1:")),
        "nothing routed by the user's advertisement: {routes:?}"
    );
    assert!(addrs.is_empty(), "no address from it: {addrs:?}");

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

/// The common policy: IPv4 ranges only. The helper turns IPv6 off on the devices it makes
/// for it (`disable_ipv6`), and everything else works as with IPv6.
#[test]
fn an_ipv4_only_rule_creates_configures_and_deletes_with_ipv6_off() {
    let Some((_s, install, t)) = setup_with(&format!(
        r#"
[[allow]]
users = ["{USER}"]
names = ["ht*"]
kinds = ["tun", "tap"]
namespaces = ["tunctl-ht-*"]
addresses = ["10.88.0.0/16"]
mtu = [1280, 9000]
flags = ["persist"]
max_devices = 2
"#
    )) else {
        return;
    };
    let out = install.tunctl(&[
        "add",
        "ht%d",
        "--tun",
        "--netns",
        &t.name,
        "--addr",
        "10.88.0.1/24",
        "--up",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let off = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.name,
            "cat",
            "/proc/sys/net/ipv6/conf/ht0/disable_ipv6",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&off.stdout).trim(), "1");
    assert!(
        ip_addrs(Some(&t.name), "ht0")
            .iter()
            .all(|a| a["family"] != "inet6"),
        "not even a link-local address: {:?}",
        ip_addrs(Some(&t.name), "ht0")
    );
    let out = install.tunctl(&[
        "set",
        "ht0",
        "--netns",
        &t.name,
        "--addr",
        "10.88.1.1/24",
        "--mtu",
        "1300",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(ip_addrs(Some(&t.name), "ht0")
        .iter()
        .any(|a| a["local"] == "10.88.1.1"));
    assert_eq!(ip_link(Some(&t.name), "ht0").unwrap()["mtu"], 1300);
    // IPv6 is refused by the policy before the kernel is asked.
    let out = install.tunctl(&["set", "ht0", "--netns", &t.name, "--addr", "fd00:88::1/64"]);
    assert!(!out.status.success(), "{}", text(&out));
    let out = install.tunctl(&["del", "ht0", "--netns", &t.name]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(ip_link(Some(&t.name), "ht0").is_none());
}

/// A user asking the helper for an unhardened device (`--no-harden`, which is root's
/// choice for a device root hands over) gets a hardened one: the request has no way to ask.
#[test]
fn no_harden_through_the_helper_still_hardens() {
    let Some((_s, install, t)) = setup("tunctl-ht-*", 4) else {
        return;
    };
    let out = install.tunctl(&["add", "ht%d", "--tun", "--netns", &t.name, "--no-harden"]);
    if out.status.success() {
        let sysctl = |key: &str| {
            let out = Command::new("ip")
                .args(["netns", "exec", &t.name, "cat"])
                .arg(format!("/proc/sys/net/ipv6/conf/ht0/{key}"))
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(
            (sysctl("accept_ra"), sysctl("autoconf")),
            ("0".to_string(), "0".to_string()),
            "{}",
            text(&out)
        );
        let out = install.tunctl(&["del", "ht0", "--netns", &t.name]);
        assert!(out.status.success(), "{}", text(&out));
    } else {
        // Or refused outright: then nothing was made.
        assert!(ip_link(Some(&t.name), "ht0").is_none(), "{}", text(&out));
    }
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
    // The same through Device::builder().helper(true) with a named namespace, addresses
    // and up: the builder falls back to the helper at setns and carries them along; a
    // direct change afterwards names the calls that work.
    let out = install.run_as(USER, "helper_ping", &["--builder", &t.name]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hint\nreply");
    assert_eq!(common::links(Some(&t.name)), vec!["lo".to_string()]);
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

/// Removes a file or a directory tree on drop (also when the test fails).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if std::fs::remove_file(&self.0).is_err() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `setpriv` that runs what follows as `user` (its own group, no supplementary groups, no
/// inheritable capabilities): an unprivileged local user.
fn as_user(user: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(user_args(user));
    cmd
}

/// The arguments of [`as_user`]'s `setpriv`.
fn user_args(user: &str) -> [&str; 7] {
    let group = if user == "nobody" { "65534" } else { user };
    [
        "--reuid",
        user,
        "--regid",
        group,
        "--clear-groups",
        "--inh-caps=-all",
        "--",
    ]
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

/// A small xorshift generator: random kill points and loads without a dependency.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Busy threads on every core until dropped: the race is tried under CPU load.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn new(threads: usize) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed)
                        && std::time::Instant::now() < deadline
                    {
                        for i in 0..10_000u64 {
                            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
                        }
                        std::hint::black_box(x);
                    }
                })
            })
            .collect();
        Load { stop, threads }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Kills a child on drop (also when the test fails).
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Issue: another local user looping on TUNSETIFF(IFF_MULTI_QUEUE) attached a queue to a
/// device the helper was creating, before its owner was set, and read its traffic. Now the
/// device is born in a private namespace with owner and tag and moved in complete: 200
/// creations through the helper (half multi-queue) and 40 by root with `--owner`, under
/// CPU load, and the attacker never attaches.
#[test]
fn another_user_never_attaches_to_a_device_being_created() {
    let Some((_s, install, t)) = setup("own", 4) else {
        return;
    };
    let stop_file = Path::new("/run").join("race_attach.stop.ht0");
    let _ = std::fs::remove_file(&stop_file);
    let _unstop = RemoveOnDrop(stop_file.clone());
    let attacker = install
        .command_in(&t.name, Some("nobody"), "race_attach", &["ht0", "100"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut attacker = KillOnDrop(Some(attacker));
    let load = Load::new(2);
    let started = std::time::Instant::now();
    let mut made = 0;
    for i in 0..240 {
        if started.elapsed() > std::time::Duration::from_secs(80) {
            break;
        }
        let mq = i % 2 == 0;
        let (user, extra): (Option<&str>, &[&str]) = if i < 200 {
            (Some(USER), &[])
        } else {
            (None, &["--owner", USER])
        };
        let mut args = vec!["add", "ht0", "--tun"];
        if mq {
            args.push("--multi-queue");
        }
        args.extend_from_slice(extra);
        let out = install
            .command_in(&t.name, user, "tunctl", &args)
            .output()
            .unwrap();
        assert!(out.status.success(), "creation {i}: {}", text(&out));
        made += 1;
        let link = ip_link(Some(&t.name), "ht0").expect("created");
        assert_eq!(link["linkinfo"]["info_data"]["user"], USER, "creation {i}");
        if mq {
            assert_eq!(
                link["linkinfo"]["info_data"]["numqueues"], 0,
                "creation {i}: a queue is attached after the creator let go"
            );
        }
        let out = install
            .command_in(&t.name, user, "tunctl", &["del", "ht0"])
            .output()
            .unwrap();
        assert!(out.status.success(), "deletion {i}: {}", text(&out));
    }
    drop(load);
    std::fs::write(&stop_file, b"").unwrap();
    let out = attacker.0.take().unwrap().wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{made} creations; attacker: {report}");
    let attempts: u64 = report
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(made >= 120, "only {made} creations in time");
    assert!(attempts > 1000, "the attacker barely ran: {report}");
    assert!(
        report.trim_end().ends_with("attached 0"),
        "the attacker attached: {report} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The pids of running `tunctl-helper` processes of `uid`.
fn helper_pids(uid: u32) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let owner = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok());
        if comm.trim() == "tunctl-helper" && owner == Some(uid) {
            pids.push(pid);
        }
    }
    pids
}

/// Issue: a helper killed by its own caller between creating the device and tagging it
/// left an untagged device that `max_devices` no longer counted. Killed at random points,
/// it now leaves no device, or one that is complete (owner and tag).
#[test]
fn a_helper_killed_anywhere_leaves_nothing_or_a_complete_device() {
    let Some((_s, install, t)) = setup("tunctl-ht-*", 100) else {
        return;
    };
    let uid = tunctl::user_id(USER).unwrap();
    let add = ["add", "ht%d", "--tun", "--multi-queue", "--netns", &t.name];
    let timed = std::time::Instant::now();
    let out = install.tunctl(&add);
    assert!(out.status.success(), "{}", text(&out));
    let span = timed.elapsed().as_micros() as u64;
    let mut rng = Rng::new();
    let (mut none, mut whole) = (0, 0);
    for i in 0..40 {
        let before = common::links(Some(&t.name)).len();
        let mut cmd = as_user(USER);
        cmd.arg(install.dir.join("tunctl"))
            .args(add)
            .env("TUNCTL_HELPER", install.dir.join("tunctl-helper"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = KillOnDrop(Some(cmd.spawn().unwrap()));
        std::thread::sleep(std::time::Duration::from_micros(rng.below(span)));
        for pid in helper_pids(uid) {
            // SAFETY: kill(2) on a pid we just read; at worst it has exited (ESRCH).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = child.0.take().unwrap().wait();
        // The private namespace of a killed helper dies with it; give the kernel a moment.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let after = common::links(Some(&t.name)).len();
        if after == before {
            none += 1;
        } else {
            whole += 1;
        }
        for link in ip_json(Some(&t.name), &["-d", "link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["linkinfo"]["info_kind"] == "tun")
        {
            assert_eq!(
                link["ifalias"],
                format!("tunctl-helper uid={uid}"),
                "kill {i}: an untagged device: {link}"
            );
            assert_eq!(
                link["linkinfo"]["info_data"]["user"], USER,
                "kill {i}: {link}"
            );
        }
    }
    eprintln!("killed helpers: {none} left nothing, {whole} a complete device");
}

/// The caller races its own helper: it tries to attach a queue to the multi-queue device
/// the helper is making, and kills the helper the moment it holds one. Before the fix, the
/// device was its caller's from birth, so the caller could attach as soon as it arrived in
/// the namespace, kill the helper before it hardened the device, and keep a tagged device
/// that accepts router advertisements (then `tunctl set --up` through the helper). Now the
/// caller becomes the owner only after hardening: whatever survives is hardened.
#[test]
fn a_caller_racing_its_helper_never_holds_an_unhardened_device() {
    const ATTACKER: &str = r#"
import fcntl, os, signal, struct, subprocess, sys, time
tunctl, helper, ns, name = sys.argv[1:5]
flags = 0x0001 | 0x1000 | 0x0100  # IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE
p = subprocess.Popen([tunctl, "add", name, "--tun", "--multi-queue", "--netns", ns],
                     env=dict(os.environ, TUNCTL_HELPER=helper),
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
held, deadline = None, time.time() + 3
while held is None and time.time() < deadline and p.poll() is None:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", name.encode(), flags))
        held = fd
    except OSError:
        os.close(fd)
if held is not None:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = open(f"/proc/{pid}/comm").read().strip()
            ruid = int(open(f"/proc/{pid}/status").read().split("Uid:")[1].split()[0])
            if comm == "tunctl-helper" and ruid == os.getuid():
                os.kill(int(pid), signal.SIGKILL)
        except (OSError, IndexError, ValueError):
            pass
p.wait()
print("attached" if held is not None else "not attached", flush=True)
sys.stdin.read()
"#;
    let Some((_s, install, t)) = setup("tunctl-ht-*", 100) else {
        return;
    };
    let name = "htrace0";
    let sysctl = |key: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", &t.name, "cat"])
            .arg(format!("/proc/sys/net/ipv6/conf/{name}/{key}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let mut attached = 0;
    for round in 0..20 {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &t.name, "setpriv"])
            .args(user_args(USER))
            .args(["/usr/bin/python3", "-c", ATTACKER])
            .arg(install.dir.join("tunctl"))
            .arg(install.dir.join("tunctl-helper"))
            .args([t.name.as_str(), name])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = KillOnDrop(Some(cmd.spawn().unwrap()));
        let mut said = String::new();
        {
            use std::io::BufRead;
            let out = child.0.as_mut().unwrap().stdout.take().unwrap();
            std::io::BufReader::new(out).read_line(&mut said).unwrap();
        }
        if said.trim() == "attached" {
            attached += 1;
        }
        if ip_link(Some(&t.name), name).is_some() {
            assert!(
                sysctl("accept_ra") == "0" || sysctl("disable_ipv6") == "1",
                "round {round}: the caller holds an unhardened device (accept_ra {}; {said}; {})",
                sysctl("accept_ra"),
                ip_json(Some(&t.name), &["-d", "link", "show", name])
            );
        }
        // The attacker lets go; a persistent device left by a helper that finished goes.
        drop(child.0.as_mut().unwrap().stdin.take());
        let _ = child.0.take().unwrap().wait();
        let _ = Command::new("ip")
            .args(["-n", &t.name, "link", "del", name])
            .output();
    }
    assert!(
        attached > 0,
        "the attacker never attached: the race was not run"
    );
    eprintln!("{attached} of 20 rounds attached a queue and killed the helper");
}

/// Issue: with two allowed ranges of different sizes, a peer checked with one prefix was
/// set with another, and the namespace routed 10.99.0.0/16 into the user's device. Every
/// route the helper lets the kernel install now lies inside the policy (IPv4 and IPv6).
#[test]
fn a_peer_never_routes_outside_the_policy() {
    let Some((_s, install, t)) = setup("tunctl-ht-*", 4) else {
        return;
    };
    install.policy(&format!(
        r#"
[[allow]]
users = ["{USER}"]
names = ["ht*"]
kinds = ["tun"]
namespaces = ["tunctl-ht-*"]
addresses = ["10.88.0.0/16", "10.99.0.0/24", "fd00:88::/32", "fd00:99::/64"]
flags = ["persist"]
"#
    ));
    let ns = t.name.as_str();
    let run = |args: &[&str]| install.tunctl(args);
    let out = run(&[
        "add",
        "ht0",
        "--tun",
        "--netns",
        ns,
        "--addr",
        "10.88.0.1/16",
        "--addr",
        "fd00:88::1/32",
        "--up",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // The reported attack, pairing now explicit: the peer goes on 10.88.5.5/32 (a /32 route).
    let out = run(&[
        "set",
        "ht0",
        "--netns",
        ns,
        "--addr",
        "10.88.5.5/32",
        "--peer",
        "10.99.0.1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let addrs = ip_addrs(Some(ns), "ht0");
    let paired = addrs.iter().find(|a| a["local"] == "10.88.5.5").unwrap();
    assert_eq!(paired["address"], "10.99.0.1");
    // A peer that would take a wider prefix is refused, in either family.
    for (peer, net) in [
        ("10.99.0.2", "10.99.0.2/16"),
        ("fd00:99::2", "fd00:99::2/32"),
    ] {
        let out = run(&[
            "set",
            "ht0",
            "--netns",
            ns,
            "--del-addr",
            "10.88.5.5/32",
            "--peer",
            peer,
        ]);
        assert_eq!(out.status.code(), Some(1), "{peer}: {}", text(&out));
        assert!(
            text(&out).contains(&format!("{net} is outside")),
            "{peer}: {}",
            text(&out)
        );
    }
    // IPv6 twin through an address of its own.
    let out = run(&[
        "set",
        "ht0",
        "--netns",
        ns,
        "--addr",
        "fd00:88::5/64",
        "--peer",
        "fd00:99::1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // The independent view: every route through ht0 lies inside the policy's ranges, and
    // 10.99.200.1 (outside 10.99.0.0/24) is not routed to it.
    let allowed: Vec<tunctl::Cidr> = [
        "10.88.0.0/16",
        "10.99.0.0/24",
        "fd00:88::/32",
        "fd00:99::/64",
    ]
    .iter()
    .map(|c| c.parse().unwrap())
    .collect();
    for family in ["-4", "-6"] {
        for route in ip_json(Some(ns), &[family, "route", "show", "dev", "ht0"])
            .as_array()
            .unwrap()
        {
            let dst = route["dst"].as_str().unwrap();
            if dst.starts_with("fe80:") || dst.starts_with("ff00:") || dst.starts_with("multicast")
            {
                continue;
            }
            // A host route prints without a prefix.
            let dst: tunctl::Cidr = match dst.contains('/') {
                true => dst.parse().unwrap(),
                false if dst.contains(':') => format!("{dst}/128").parse().unwrap(),
                false => format!("{dst}/32").parse().unwrap(),
            };
            assert!(
                allowed.iter().any(|net| net.prefix() <= dst.prefix()
                    && tunctl::Cidr::new(dst.addr(), net.prefix())
                        .unwrap()
                        .network()
                        == net.network()),
                "route {dst} through ht0 is outside the policy"
            );
        }
    }
    let get = Command::new("ip")
        .args(["-n", ns, "route", "get", "10.99.200.1"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&get.stdout).contains("dev ht0"),
        "{}",
        text(&get)
    );
}

/// Issue: a `tunctl` copied to a world-writable directory ran an attacker's
/// `tunctl-helper` from beside it. Helpers in untrusted places are refused (and never run),
/// whether found beside the program or named by TUNCTL_HELPER.
#[test]
fn a_helper_in_an_untrusted_place_is_never_run() {
    let Some((_s, install, t)) = setup("tunctl-ht-*", 4) else {
        return;
    };
    let evil = Path::new("/run").join(format!("tunctl-evil-{}", std::process::id()));
    std::fs::create_dir_all(&evil).unwrap();
    let _cleanup = RemoveOnDrop(evil.clone());
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::copy(install.dir.join("tunctl"), evil.join("tunctl")).unwrap();
    let marker = evil.join("ran");
    std::fs::write(
        evil.join("tunctl-helper"),
        format!("#!/bin/sh\ntouch {}\n", marker.display()),
    )
    .unwrap();
    for f in ["tunctl", "tunctl-helper"] {
        std::fs::set_permissions(evil.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let attempt = |env_helper: Option<&Path>| {
        let mut cmd = as_user(USER);
        cmd.arg(evil.join("tunctl"))
            .args(["add", "ht%d", "--tun", "--netns", &t.name])
            .env_remove("TUNCTL_HELPER");
        if let Some(h) = env_helper {
            cmd.env("TUNCTL_HELPER", h);
        }
        cmd.output().unwrap()
    };
    for how in [None, Some(evil.join("tunctl-helper"))] {
        let out = attempt(how.as_deref());
        assert_eq!(out.status.code(), Some(1), "{how:?}: {}", text(&out));
        assert!(
            text(&out).contains("is writable by everyone"),
            "{how:?}: {}",
            text(&out)
        );
        assert_eq!(text(&out).lines().count(), 1, "one line: {}", text(&out));
        assert!(!marker.exists(), "{how:?}: the untrusted helper ran");
    }
    // A helper owned by another (non-root) user is refused too.
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o755)).unwrap();
    let nobody = tunctl::user_id("nobody").unwrap();
    std::os::unix::fs::chown(evil.join("tunctl-helper"), Some(nobody), None).unwrap();
    let out = attempt(Some(&evil.join("tunctl-helper")));
    assert!(text(&out).contains("belongs to uid"), "{}", text(&out));
    assert!(!marker.exists());
    // A relative TUNCTL_HELPER would be checked in one directory and run from the search
    // path: refused, whatever the working directory holds.
    let out = as_user(USER)
        .arg(evil.join("tunctl"))
        .args(["add", "ht%d", "--tun", "--netns", &t.name])
        .env("TUNCTL_HELPER", "tunctl-helper")
        .current_dir(&evil)
        .output()
        .unwrap();
    assert!(text(&out).contains("absolute path"), "{}", text(&out));
    assert!(!marker.exists());
    assert_eq!(common::links(Some(&t.name)), vec!["lo".to_string()]);
}

/// Issue: without privilege and without a policy, `tunctl add` printed the helper's
/// internals. Now one line says what is missing and the ways to get it; root never falls
/// back to the helper (the kernel's refusal is the answer).
#[test]
fn without_privilege_one_line_says_what_is_missing() {
    let Some((_s, install, t)) = setup("tunctl-ht-*", 4) else {
        return;
    };
    let one_line = |out: &Output, what: &str| {
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(out));
        let t = text(out);
        assert_eq!(t.lines().count(), 1, "{what}: one line: {t}");
        for needed in [
            "needs CAP_NET_ADMIN",
            "root",
            "setcap",
            "tunctl-helper",
            "Unprivileged use",
        ] {
            assert!(t.contains(needed), "{what}: no {needed:?} in {t}");
        }
        assert!(!t.contains("closed"), "{what}: helper internals in {t}");
    };
    // A helper, but no policy.
    std::fs::remove_file("/etc/tunctl/helper.toml").unwrap();
    let out = install.run_as(
        USER,
        "tunctl",
        &["add", "foo0", "--tun", "--netns", &t.name],
    );
    one_line(&out, "no policy");
    assert!(text(&out).contains("helper.toml"), "{}", text(&out));
    // No helper at all (TUNCTL_HELPER names nothing; none beside, none installed).
    let out = as_user(USER)
        .arg(install.dir.join("tunctl"))
        .args(["add", "foo0", "--tun", "--netns", &t.name])
        .env("TUNCTL_HELPER", "/nonexistent/tunctl-helper")
        .output()
        .unwrap();
    one_line(&out, "no helper");
    // Root without capabilities: the kernel's refusal, never the helper's.
    install.policy(&policy("tunctl-ht-*", 4));
    let out = Command::new("setpriv")
        .args(["--inh-caps=-all", "--bounding-set=-all", "--"])
        .arg(install.dir.join("tunctl"))
        .args(["--verbose", "add", "ht%d", "--tun", "--netns", &t.name])
        .env("TUNCTL_HELPER", install.dir.join("tunctl-helper"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!text(&out).contains("tunctl-helper"), "{}", text(&out));
    assert!(text(&out).contains("EPERM"), "{}", text(&out));
    assert_eq!(common::links(Some(&t.name)), vec!["lo".to_string()]);
}

/// A socket pair and the helper on its far end, started as the test user with `env`.
fn raw_helper(install: &Install, env: &[(&str, &str)]) -> (std::os::fd::OwnedFd, KillOnDrop) {
    use std::os::fd::FromRawFd;
    // The helper checks that its socket's peer is the user who ran it: make the pair on a
    // thread that has taken the user's effective ids (the raw syscalls change only this
    // thread's credentials, which SO_PEERCRED records at socketpair time).
    let uid = tunctl::user_id(USER).unwrap();
    let gid = tunctl::group_id(USER).unwrap();
    let fds = std::thread::spawn(move || {
        let mut fds = [0; 2];
        // SAFETY: plain syscalls on this thread's own credentials; socketpair writes two
        // fds into `fds`.
        unsafe {
            assert_eq!(libc::syscall(libc::SYS_setresgid, -1, gid, -1), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, -1, uid, -1), 0);
            let rc = libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            );
            assert_eq!(rc, 0);
        }
        fds
    })
    .join()
    .unwrap();
    // SAFETY: fresh fds owned by nobody else.
    let (ours, theirs) = unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    // Bounded: a helper that never answers fails the test instead of hanging it.
    let timeout = libc::timeval {
        tv_sec: 10,
        tv_usec: 0,
    };
    // SAFETY: setsockopt reads a timeval of the stated size.
    unsafe {
        libc::setsockopt(
            fds[0],
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    let mut cmd = as_user(USER);
    cmd.arg(install.dir.join("tunctl-helper"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::from(theirs))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let child = cmd.spawn().unwrap();
    (ours, KillOnDrop(Some(child)))
}

/// Sends `data` (with `fds` attached) and returns the reply text and how many fds came back.
fn raw_exchange(sock: &std::os::fd::OwnedFd, data: &[u8], fds: &[i32]) -> (String, usize) {
    use std::os::fd::AsRawFd;
    let mut cmsg = vec![0u8; 256];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: a zeroed msghdr is valid; the buffers outlive the call.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            let payload = std::mem::size_of_val(fds);
            msg.msg_control = cmsg.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(payload as u32) as _;
            let hdr = libc::CMSG_FIRSTHDR(&msg);
            (*hdr).cmsg_level = libc::SOL_SOCKET;
            (*hdr).cmsg_type = libc::SCM_RIGHTS;
            (*hdr).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(hdr), payload);
        }
        assert!(libc::sendmsg(sock.as_raw_fd(), &msg, 0) >= 0);
        let mut buf = vec![0u8; 4096];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr().cast();
        msg.msg_controllen = cmsg.len() as _;
        let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        let mut got = 0;
        let mut hdr = libc::CMSG_FIRSTHDR(&msg);
        while !hdr.is_null() {
            if (*hdr).cmsg_type == libc::SCM_RIGHTS {
                let len = (*hdr).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                got += len / 4;
                for i in 0..len / 4 {
                    libc::close(std::ptr::read_unaligned(
                        libc::CMSG_DATA(hdr).cast::<i32>().add(i),
                    ));
                }
            }
            hdr = libc::CMSG_NXTHDR(&msg, hdr);
        }
        (
            String::from_utf8_lossy(&buf[..n.max(0) as usize]).into_owned(),
            got,
        )
    }
}

/// Moves /dev/log aside (if a system logger has it) and listens there; puts it back on drop.
struct SyslogTap {
    sock: std::os::unix::net::UnixDatagram,
    saved: Option<PathBuf>,
}

impl SyslogTap {
    fn new() -> SyslogTap {
        let path = Path::new(tunctl_helper::SYSLOG_PATH);
        let saved = path.exists().then(|| {
            let aside = PathBuf::from(format!("/dev/log.tunctl-test-{}", std::process::id()));
            std::fs::rename(path, &aside).unwrap();
            aside
        });
        let sock = std::os::unix::net::UnixDatagram::bind(path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        SyslogTap { sock, saved }
    }

    /// Every message received within a short while.
    fn messages(&self) -> Vec<String> {
        let mut all = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = self.sock.recv(&mut buf) {
            all.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            self.sock
                .set_read_timeout(Some(std::time::Duration::from_millis(300)))
                .unwrap();
        }
        all
    }
}

impl Drop for SyslogTap {
    fn drop(&mut self) {
        let path = Path::new(tunctl_helper::SYSLOG_PATH);
        let _ = std::fs::remove_file(path);
        if let Some(aside) = &self.saved {
            let _ = std::fs::rename(aside, path);
        }
    }
}

/// The helper's hygiene: every decision goes to syslog (AUTHPRIV) as well as stderr; a
/// full or closed stderr does not stop it; it reads nothing from its environment; a closed
/// /dev/net/tun is named as such; numbers are strict; a request carrying fds is refused as
/// such.
#[test]
fn the_helper_logs_to_syslog_and_shrugs_off_a_hostile_caller() {
    let Some((_s, install, t)) = setup("tunctl-ht-*", 20) else {
        return;
    };
    let tap = SyslogTap::new();
    let out = install.tunctl(&["add", "ht%d", "--tun", "--netns", &t.name]);
    assert!(out.status.success(), "{}", text(&out));
    let logged = tap.messages();
    let decision = logged
        .iter()
        .find(|m| m.contains("allowed by rule 1"))
        .unwrap_or_else(|| panic!("no decision in syslog: {logged:?}"));
    // <PRI>: facility AUTHPRIV (10) times 8, plus the severity.
    let pri: u32 = decision[1..decision.find('>').unwrap()].parse().unwrap();
    assert_eq!(pri / 8, 10, "{decision}");
    assert!(decision.contains("tunctl-helper["), "{decision}");
    assert!(
        logged.iter().any(|m| m.contains("done -> ht")),
        "{logged:?}"
    );

    // stderr a file the caller may not grow (RLIMIT_FSIZE 0), or closed: the helper works.
    let sh = |script: &str| {
        as_user(USER)
            .args(["sh", "-c", script])
            .env("TUNCTL_HELPER", install.dir.join("tunctl-helper"))
            .env("T", install.dir.join("tunctl"))
            .env("NS", &t.name)
            .output()
            .unwrap()
    };
    let log = Path::new("/run").join(format!("tunctl-test-fsize-{}", std::process::id()));
    let _rm = RemoveOnDrop(log.clone());
    std::fs::write(&log, b"").unwrap();
    std::os::unix::fs::chown(&log, Some(tunctl::user_id(USER).unwrap()), None).unwrap();
    let out = sh(&format!(
        "prlimit --fsize=0 -- \"$T\" --verbose add ht%d --tun --netns \"$NS\" 2>{}",
        log.display()
    ));
    assert!(out.status.success(), "RLIMIT_FSIZE 0: {}", text(&out));
    let out = sh("\"$T\" --verbose add ht%d --tun --netns \"$NS\" 2>&-");
    assert!(out.status.success(), "closed stderr: {}", text(&out));

    // A hostile environment is ignored (RUST_MIN_STACK=1 used to crash it).
    let good = helper::Request::new(helper::Op::Create, "ht%d");
    let mut req = good.clone();
    req.netns = helper::Netns::Named(t.name.clone());
    let (sock, _child) = raw_helper(
        &install,
        &[
            ("RUST_MIN_STACK", "1"),
            ("RUST_BACKTRACE", "full"),
            ("MALLOC_PERTURB_", "165"),
        ],
    );
    let (reply, fds) = raw_exchange(&sock, req.encode().as_bytes(), &[]);
    assert!(reply.starts_with("ok ht"), "{reply}");
    assert_eq!(fds, 2);

    // A request carrying fds is refused for that.
    let file = std::fs::File::open("/etc/hostname").unwrap();
    use std::os::fd::AsRawFd;
    let (sock, _child) = raw_helper(&install, &[]);
    let (reply, fds) = raw_exchange(&sock, req.encode().as_bytes(), &[file.as_raw_fd()]);
    assert!(reply.contains("carries 1 file descriptor"), "{reply}");
    assert_eq!(fds, 0);

    // Numbers are strict.
    for (what, bad) in [
        ("mtu +1400", "mtu +1400\nend\n"),
        ("mtu 01400", "mtu 01400\nend\n"),
        ("prefix /024", "addr 10.88.0.1/024\nend\n"),
    ] {
        let (sock, _child) = raw_helper(&install, &[]);
        let text = req.encode().replace("end\n", bad);
        let (reply, _) = raw_exchange(&sock, text.as_bytes(), &[]);
        assert!(
            reply.starts_with("denied") && reply.contains("decimal"),
            "{what}: {reply}"
        );
    }

    // A flooded system log (any local user can fill /dev/log's queue): an allowed request
    // whose record the log does not take is not carried out; once the log drains, it is.
    tap.messages();
    let flooder = std::os::unix::net::UnixDatagram::unbound().unwrap();
    flooder.set_nonblocking(true).unwrap();
    while flooder
        .send_to(b"<13>flood", tunctl_helper::SYSLOG_PATH)
        .is_ok()
    {}
    let before = common::links(Some(&t.name));
    let out = install.tunctl(&["add", "ht%d", "--tun", "--netns", &t.name]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("system log does not take"),
        "{}",
        text(&out)
    );
    assert_eq!(common::links(Some(&t.name)), before, "nothing done");
    tap.messages();
    let out = install.tunctl(&["add", "ht%d", "--tun", "--netns", &t.name]);
    assert!(
        out.status.success(),
        "after the log drained: {}",
        text(&out)
    );

    // /dev/net/tun closed to the caller (mode 0600): said exactly, with the mode it needs.
    std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = install.tunctl(&["add", "ht%d", "--tun", "--netns", &t.name]);
    std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("/dev/net/tun (mode 0600)") && text(&out).contains("chmod 0666"),
        "{}",
        text(&out)
    );
}

/// Two helpers creating the same fixed name at once: one gets it, the other is refused, and
/// nothing else is left (no half-made device under another name, no untagged one).
#[test]
fn racing_creations_of_one_name_leave_one_complete_device() {
    let Some((_s, install, t)) = setup("tunctl-ht-*", 100) else {
        return;
    };
    let uid = tunctl::user_id(USER).unwrap();
    for round in 0..10 {
        let spawn = || {
            as_user(USER)
                .arg(install.dir.join("tunctl"))
                .args(["add", "ht7", "--tun", "--netns", &t.name])
                .env("TUNCTL_HELPER", install.dir.join("tunctl-helper"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let ok = [a, b]
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .filter(|o| o.status.success())
            .count();
        assert_eq!(ok, 1, "round {round}: exactly one of them gets the name");
        let tuns: Vec<_> = ip_json(Some(&t.name), &["-d", "link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["linkinfo"]["info_kind"] == "tun")
            .cloned()
            .collect();
        assert_eq!(tuns.len(), 1, "round {round}: exactly one device: {tuns:?}");
        assert_eq!(tuns[0]["ifname"], "ht7");
        assert_eq!(tuns[0]["ifalias"], format!("tunctl-helper uid={uid}"));
        let out = install.tunctl(&["del", "ht7", "--netns", &t.name]);
        assert!(out.status.success(), "{}", text(&out));
    }
}

/// Moves whatever answers at /dev/log aside for as long as it lives (puts it back on drop):
/// the machine has no system log.
struct NoSyslog(Option<PathBuf>);

impl NoSyslog {
    fn new() -> NoSyslog {
        let path = Path::new(tunctl_helper::SYSLOG_PATH);
        NoSyslog(path.exists().then(|| {
            let aside = PathBuf::from(format!("/dev/log.tunctl-nolog-{}", std::process::id()));
            std::fs::rename(path, &aside).unwrap();
            aside
        }))
    }
}

impl Drop for NoSyslog {
    fn drop(&mut self) {
        if let Some(aside) = &self.0 {
            let _ = std::fs::rename(aside, tunctl_helper::SYSLOG_PATH);
        }
    }
}

/// Without a system log, nothing is done unrecorded: a helper installed with file
/// capabilities runs as its caller and cannot write the root-only record, so it refuses
/// and says why (before, it went ahead with the decision on the caller's stderr alone); a
/// setuid-root helper opens /var/log/tunctl-helper.log (0600, root's) before it becomes
/// the caller, keeps the record there, and proceeds.
#[test]
fn without_a_system_log_nothing_is_done_unrecorded() {
    let Some((_s, install, t)) = setup("tunctl-ht-*", 4) else {
        return;
    };
    let _quiet = NoSyslog::new();
    let log = Path::new(tunctl_helper::LOG_FILE);
    let saved = std::fs::read(log).ok();
    let _ = std::fs::remove_file(log);
    struct Restore(Option<Vec<u8>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let log = Path::new(tunctl_helper::LOG_FILE);
            match &self.0 {
                Some(text) => {
                    let _ = std::fs::write(log, text);
                }
                None => {
                    let _ = std::fs::remove_file(log);
                }
            }
        }
    }
    let _restore = Restore(saved);

    let before = common::links(Some(&t.name));
    let out = install.tunctl(&["add", "ht%d", "--tun", "--netns", &t.name]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no system log"), "{}", text(&out));
    assert!(text(&out).contains("nothing done"), "{}", text(&out));
    assert_eq!(common::links(Some(&t.name)), before, "nothing done");
    assert!(!log.exists(), "the caller could not make the record file");

    // Setuid root instead of file capabilities.
    let suid = install.dir.join("tunctl-helper-suid");
    std::fs::copy(install.dir.join("tunctl-helper"), &suid).unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let run = |args: &[&str]| {
        as_user(USER)
            .arg(install.dir.join("tunctl"))
            .arg("--verbose")
            .args(args)
            .env("TUNCTL_HELPER", &suid)
            .output()
            .unwrap()
    };
    let out = run(&["add", "ht%d", "--tun", "--netns", &t.name]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(ip_link(Some(&t.name), "ht0").is_some());
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(log).expect("the record file");
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o600));
    let record = std::fs::read_to_string(log).unwrap();
    assert!(record.contains("allowed by rule 1"), "{record}");
    assert!(record.contains("done -> ht0"), "{record}");
    assert!(record.contains("uid="), "{record}");
    let out = run(&["del", "ht0", "--netns", &t.name]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(ip_link(Some(&t.name), "ht0").is_none());

    // A hostile record file (the setuid helper writes it as root): a hard link to another
    // root file (possible where protected_hardlinks is off), a symbolic link, a file of the
    // user's, one others may read. Each time nothing is done, and the target is untouched.
    let victim = install.dir.join("victim");
    std::fs::write(&victim, "root's own\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let uid = tunctl::user_id(USER).unwrap();
    let plants: [(&str, &dyn Fn()); 4] = [
        ("a hard link", &|| std::fs::hard_link(&victim, log).unwrap()),
        ("a symbolic link", &|| {
            std::os::unix::fs::symlink(&victim, log).unwrap()
        }),
        ("the user's file", &|| {
            std::fs::write(log, "").unwrap();
            std::os::unix::fs::chown(log, Some(uid), None).unwrap();
            std::fs::set_permissions(log, std::fs::Permissions::from_mode(0o600)).unwrap();
        }),
        ("a file others may read", &|| {
            std::fs::write(log, "").unwrap();
            std::fs::set_permissions(log, std::fs::Permissions::from_mode(0o644)).unwrap();
        }),
    ];
    for (what, plant) in plants {
        let _ = std::fs::remove_file(log);
        plant();
        let out = run(&["add", "ht%d", "--tun", "--netns", &t.name]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
        assert!(
            text(&out).contains("nothing done"),
            "{what}: {}",
            text(&out)
        );
        assert!(
            ip_link(Some(&t.name), "ht0").is_none(),
            "{what}: nothing done"
        );
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "root's own\n",
            "{what}"
        );
    }
    let _ = std::fs::remove_file(log);
}
