//! Shared helpers of the integration tests: namespaces that clean up after themselves, the
//! privilege gate, and independent views of the kernel (`ip -j`, `/sys`, `/proc/self/fd`).
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::Value;
use tunctl::Namespace;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Tests that count fds or devices take this exclusively; the others share it.
static FD_LOCK: RwLock<()> = RwLock::new(());

/// A shared hold: tests that only need "no leak test is counting right now".
pub fn shared() -> RwLockReadGuard<'static, ()> {
    FD_LOCK.read().unwrap_or_else(|e| e.into_inner())
}

/// An exclusive hold, for tests that compare fd counts or device lists before and after.
///
/// Once it is held, the test harness may still be printing the last result and starting the
/// next test (which allocates and opens files before it blocks on this lock): a short pause
/// lets that settle before anything is counted.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    let guard = FD_LOCK.write().unwrap_or_else(|e| e.into_inner());
    std::thread::sleep(std::time::Duration::from_millis(200));
    guard
}

/// Whether the privileged tests can run: CAP_NET_ADMIN and CAP_SYS_ADMIN in the effective
/// set and /dev/net/tun present. Under CI=true a missing privilege fails the test loudly.
pub fn privileged() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let net_admin = cap_eff & (1 << 12) != 0;
    let sys_admin = cap_eff & (1 << 21) != 0;
    let tun = Path::new("/dev/net/tun").exists();
    if net_admin && sys_admin && tun {
        return true;
    }
    let why = format!(
        "needs CAP_NET_ADMIN ({net_admin}), CAP_SYS_ADMIN ({sys_admin}) and /dev/net/tun ({tun})"
    );
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("privileged test cannot run under CI: {why}");
    }
    eprintln!("SKIPPED (not privileged): {why}");
    false
}

/// The usual start of a privileged test: the privilege gate, a shared hold on the fd lock,
/// and a fresh namespace. `None` means "skip" (outside CI only).
/// The hold lives inside the `TestNs` and ends after its namespace is deleted, so a test
/// that counts (fds, allocations, CPU) never sees another test's teardown.
pub fn privileged_ns() -> Option<(TestNs, ())> {
    if !privileged() {
        return None;
    }
    let hold = shared();
    let mut t = TestNs::new();
    t.hold = Some(hold);
    Some((t, ()))
}

/// A unique name for this process and test: `t<pid>x<n><tag>`, at most 15 bytes so it can be
/// an interface name too.
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = format!("t{}x{n}{tag}", std::process::id() % 100_000);
    name.truncate(15);
    name
}

/// A named namespace made for one test, deleted on drop (also when the test panics).
pub struct TestNs {
    pub name: String,
    pub ns: Namespace,
    /// A shared hold on the fd lock, released after the namespace is deleted.
    hold: Option<RwLockReadGuard<'static, ()>>,
}

impl TestNs {
    pub fn new() -> TestNs {
        let name = format!("tunctl-test-{}", unique(""));
        // TestNs deletes it (after the devices in it are gone): keep the guard's hands off.
        let ns = Namespace::create(&name)
            .expect("create test namespace")
            .keep();
        TestNs {
            name,
            ns,
            hold: None,
        }
    }

    /// Takes charge of a namespace created elsewhere: deleted on drop.
    pub fn adopt(name: String, ns: Namespace) -> TestNs {
        TestNs {
            name,
            ns,
            hold: None,
        }
    }

    /// Gives up the shared hold, for a test about to take the exclusive one.
    pub fn release(&mut self) {
        self.hold = None;
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Namespace::delete(&self.name);
    }
}

/// Deletes a device of the root namespace on drop (for the few tests that need `/sys`).
pub struct RootDev(pub String);

impl Drop for RootDev {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// Runs `ip -n NS ARGS` (an independent tool changing the kernel's state behind our back)
/// and fails the test, with ip's message, if it fails.
pub fn ip_ok(ns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip -n {ns} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `ip [-n NS] -j ARGS` and parses its JSON.
pub fn ip_json(ns: Option<&str>, args: &[&str]) -> Value {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    cmd.arg("-j").args(args);
    let out = cmd.output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// `ip -j -d link show dev NAME` in `ns`: the device object, or `None` if it does not exist.
pub fn ip_link(ns: Option<&str>, name: &str) -> Option<Value> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    let out = cmd
        .args(["-j", "-d", "link", "show", "dev", name])
        .output()
        .expect("run ip");
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.as_array()?.first().cloned()
}

/// The addresses `ip -j addr show dev NAME` lists in `ns`.
pub fn ip_addrs(ns: Option<&str>, name: &str) -> Vec<Value> {
    let v = ip_json(ns, &["addr", "show", "dev", name]);
    v[0]["addr_info"].as_array().cloned().unwrap_or_default()
}

/// The flags of a link as `ip -j` lists them.
pub fn ip_flags(link: &Value) -> Vec<String> {
    link["flags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Names of the links in `ns` (`ip -j link`).
pub fn links(ns: Option<&str>) -> Vec<String> {
    let v = ip_json(ns, &["link", "show"]);
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["ifname"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The open fds of this process, with what they point at.
pub fn open_fds() -> Vec<(String, String)> {
    let mut fds: Vec<(String, String)> = std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .filter_map(|e| e.ok())
        .map(|e| {
            let target = std::fs::read_link(e.path())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), target)
        })
        .collect();
    fds.sort();
    fds
}

/// The `flags:` field of `/proc/self/fdinfo/FD` (octal open flags; 02000000 is O_CLOEXEC).
pub fn fdinfo_flags(fd: i32) -> u32 {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).expect("read fdinfo");
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .expect("flags line");
    u32::from_str_radix(flags.trim(), 8).expect("octal flags")
}

/// An IPv4/UDP datagram (UDP checksum 0: allowed for IPv4).
pub fn udp_packet(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let sum = tunctl::offload::internet_checksum(&p);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// A UDP socket bound to `addr` in namespace `ns`; fails the test if it cannot be.
pub fn bind_in(ns: &TestNs, addr: &str) -> std::net::UdpSocket {
    ns.ns
        .run(|| std::net::UdpSocket::bind(addr))
        .unwrap()
        .unwrap()
}

/// A veth from namespace `a` to namespace `b` (made with `ip`, the tests' independent tool),
/// with `NET.1/24` on `a`'s end and `NET.2/24` on `b`'s, both up. Returns the two names;
/// the ends go with their namespaces.
pub fn veth_between(a: &TestNs, b: &TestNs, net: &str) -> (String, String) {
    let (va, vb) = (unique("va"), unique("vb"));
    ip_ok(
        &a.name,
        &[
            "link", "add", &va, "type", "veth", "peer", "name", &vb, "netns", &b.name,
        ],
    );
    for (ns, dev, host) in [(&a.name, &va, 1), (&b.name, &vb, 2)] {
        ip_ok(
            ns,
            &["addr", "add", &format!("{net}.{host}/24"), "dev", dev],
        );
        ip_ok(ns, &["link", "set", dev, "up"]);
    }
    (va, vb)
}

/// The uid of `user`, a system user without a home or a shell, created if missing (the
/// unprivileged side of the tests that run something as another user).
pub fn system_user(user: &str) -> u32 {
    tunctl::user_id(user).unwrap_or_else(|_| {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                user,
            ])
            .output()
            .expect("run useradd");
        assert!(
            out.status.success(),
            "useradd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tunctl::user_id(user).expect("the user just made")
    })
}

/// An ICMPv6 router advertisement from `fe80::1` to all nodes, as a router on the link
/// would send it: a default router for 1800 s, and the prefix `PREFIX::/64` on-link and for
/// address autoconfiguration. Written into a device, it is what its holder could use to
/// route the namespace's traffic.
pub fn router_advertisement(prefix: std::net::Ipv6Addr) -> Vec<u8> {
    let src: std::net::Ipv6Addr = "fe80::1".parse().unwrap();
    let dst: std::net::Ipv6Addr = "ff02::1".parse().unwrap();
    let mut icmp = vec![134u8, 0, 0, 0, 64, 0];
    icmp.extend_from_slice(&1800u16.to_be_bytes()); // router lifetime
    icmp.extend_from_slice(&[0; 8]); // reachable time, retransmission timer
                                     // Prefix information: on-link (L) and autonomous (A).
    icmp.extend_from_slice(&[3, 4, 64, 0xc0]);
    icmp.extend_from_slice(&86400u32.to_be_bytes());
    icmp.extend_from_slice(&14400u32.to_be_bytes());
    icmp.extend_from_slice(&[0; 4]);
    icmp.extend_from_slice(&prefix.octets());
    // Checksum over the pseudo-header and the message.
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&icmp);
    let sum = tunctl::offload::internet_checksum(&pseudo);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    p.extend_from_slice(&[58, 255]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&icmp);
    p
}

/// `ip netns exec NS setpriv --reuid USER --regid USER --clear-groups --inh-caps=-all
/// --bounding-set=-all --`: the program and arguments added to it run in namespace `ns` as
/// `user`, without any group or capability.
pub fn as_user_in(ns: &str, user: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns", "exec", ns, "setpriv", "--reuid", user, "--regid", user,
    ])
    .args([
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
    ]);
    cmd
}

/// `packets` written into the device `dev` of namespace `ns` by `user` (no capability), with
/// the `inject` example, which holds the device `hold_ms` more (keeping its carrier) while
/// this returns; wait on the child to see it succeed.
pub fn inject_as(
    user: &str,
    ns: &str,
    dev: &str,
    hold_ms: u64,
    packets: &[Vec<u8>],
) -> std::process::Child {
    // target/debug/deps/TEST -> target/debug/examples/inject
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/debug")
        .join("examples/inject");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test --workspace --all-features`",
        bin.display()
    );
    let hex: Vec<String> = packets
        .iter()
        .map(|p| p.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    as_user_in(ns, user)
        .arg(&bin)
        .args(["--hold", &hold_ms.to_string(), dev])
        .args(&hex)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run inject")
}

/// The IPv6 routes and global addresses of `dev` in `ns` (`ip -j -6 route`, `ip -j -6 addr`),
/// as `dst` and `local/prefixlen` strings: what a router advertisement would add.
pub fn ipv6_routes_and_addrs(ns: &str, dev: &str) -> (Vec<String>, Vec<String>) {
    let routes = ip_json(Some(ns), &["-6", "route", "show", "dev", dev]);
    let routes = routes
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["dst"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let addrs = ip_addrs(Some(ns), dev)
        .iter()
        .filter(|a| a["family"] == "inet6" && a["scope"] == "global")
        .filter_map(|a| Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"])))
        .collect();
    (routes, addrs)
}
