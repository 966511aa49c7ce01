//! `tunctl vpwn up` without root: on a persistent device a user owns, configured by root
//! beforehand (`tunctl add --owner`), a user runs the tunnel on a port ≥ 1024; it warns
//! about what it lacks (socket buffers, the UAPI socket), carries traffic, and leaves the
//! device in place when it stops.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{self, TestNs};
use super::{ok, public_of};

const USER: &str = "tunctl-test";

#[test]
fn a_user_runs_vpwn_on_a_device_it_owns() {
    let Some((a, _)) = common::privileged_ns() else {
        return;
    };
    let b = TestNs::new();
    let uid = common::system_user(USER);
    let tun_mode = std::fs::metadata("/dev/net/tun")
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        tun_mode, 0o666,
        "/dev/net/tun must be 0666 for users (CI sets it)"
    );
    common::veth_between(&a, &b, "10.216.0");
    // Root prepares the device: persistent, owned by the user, addressed and up.
    let dev = common::unique("vu");
    ok(&[
        "-n",
        &a.name,
        "add",
        &dev,
        "--tun",
        "--owner",
        USER,
        "--mtu",
        "1420",
        "--addr",
        "10.217.0.1/24",
        "--up",
    ]);
    // The user's key, readable by the user alone.
    let dir = std::env::temp_dir().join(format!("tunctl-vpwn-user-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ka, kb) = (ok(&["vpwn", "genkey"]), ok(&["vpwn", "genkey"]));
    let key = dir.join("user.key");
    std::fs::write(&key, &ka).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&key, Some(uid), None).unwrap();
    std::fs::write(dir.join("root.key"), &kb).unwrap();
    std::fs::set_permissions(dir.join("root.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let (pa, pb) = (public_of(&ka), public_of(&kb));

    // The user's end: no capability at all, in namespace a.
    let mut user = common::as_user_in(&a.name, USER)
        .arg(env!("CARGO_BIN_EXE_tunctl"))
        .args(["vpwn", "up", &dev, "--key-file"])
        .arg(&key)
        .args([
            "--listen",
            "51941",
            "--peer",
            "10.216.0.2:51942",
            "--peer-key",
            &pb,
        ])
        .args([
            "--address",
            "10.217.0.1/24",
            "--allowed-ips",
            "10.217.0.2/32",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _kill_user = KillOnDrop(user.id());
    // Root's end, in namespace b.
    let rootdev = common::unique("vr");
    let root = Command::new(env!("CARGO_BIN_EXE_tunctl"))
        .args(["-n", &b.name, "vpwn", "up", &rootdev, "--key-file"])
        .arg(dir.join("root.key"))
        .args([
            "--listen",
            "51942",
            "--peer",
            "10.216.0.1:51941",
            "--peer-key",
            &pa,
        ])
        .args([
            "--address",
            "10.217.0.2/24",
            "--allowed-ips",
            "10.217.0.1/32",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _root = Reap(root);

    // Traffic, bounded: once both ends' addresses exist.
    let deadline = Instant::now() + Duration::from_secs(10);
    let bind = |ns: &TestNs, addr: &str| loop {
        if let Ok(s) = ns.ns.run(|| std::net::UdpSocket::bind(addr)).unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "{addr} is usable within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    let rx = bind(&b, "10.217.0.2:7041");
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let tx = bind(&a, "10.217.0.1:0");
    let mut buf = [0u8; 32];
    let mut got = false;
    while !got && Instant::now() < deadline {
        assert!(
            user.try_wait().unwrap().is_none(),
            "the user's vpwn keeps running"
        );
        let _ = tx.send_to(b"from a user", "10.217.0.2:7041");
        got = rx
            .recv_from(&mut buf)
            .is_ok_and(|(n, _)| &buf[..n] == b"from a user");
    }
    assert!(got, "a datagram crossed from the user's tunnel");

    // SIGTERM: the user's vpwn stops; the persistent device stays, still the user's.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(user.id() as i32, libc::SIGTERM) };
    let status = user.wait().unwrap();
    let mut err = String::new();
    user.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("warning: socket buffers capped"), "{err}");
    assert!(err.contains("no UAPI socket"), "{err}");
    let link = common::ip_link(Some(&a.name), &dev).expect("the persistent device stays");
    assert_eq!(link["linkinfo"]["info_data"]["user"], USER, "{link}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `tunctl ARGS` as the unprivileged test user, with no capability at all.
fn as_user(args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid", USER, "--regid", USER, "--clear-groups"])
        .args(["--inh-caps=-all", "--bounding-set=-all", "--"])
        .arg(env!("CARGO_BIN_EXE_tunctl"))
        .args(args)
        .output()
        .expect("run setpriv")
}

/// Attack: another local user goes for a running tunnel's and bridge's control sockets,
/// which root's programs serve. The UAPI's `get=1` would hand out the private key, `set=1`
/// would reroute the peer, and `down` would stop either: all are refused by the socket's
/// mode (0600, root's, born so), and both keep running.
#[test]
fn another_user_cannot_read_reconfigure_or_stop_root_tunnels_and_bridges() {
    let Some((a, _)) = common::privileged_ns() else {
        return;
    };
    let b = TestNs::new();
    common::system_user(USER);
    let dir = std::env::temp_dir().join(format!("tunctl-vpwn-attack-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("root.key");
    std::fs::write(&key, ok(&["vpwn", "genkey"])).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let peer = ok(&["vpwn", "genkey"]);
    let peer_pub = public_of(&peer);
    let (tun, bridge) = (common::unique("vt"), common::unique("bt"));
    let vpwn = Command::new(env!("CARGO_BIN_EXE_tunctl"))
        .args(["-n", &a.name, "vpwn", "up", &tun, "--key-file"])
        .arg(&key)
        .args(["--listen", "51961", "--peer-key", &peer_pub])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _vpwn = Reap(vpwn);
    let (pa, pb) = (
        format!("{}@{}", common::unique("p"), a.name),
        format!("{}@{}", common::unique("p"), b.name),
    );
    let br = Command::new(env!("CARGO_BIN_EXE_tunctl"))
        .args(["br", "up", &bridge, &pa, &pb])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _br = Reap(br);
    let uapi = tunctl_vpwn::uapi::socket_path(&tun);
    let control = tunctl_br::control::socket_path(&bridge);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(uapi.exists() && control.exists()) {
        assert!(Instant::now() < deadline, "both sockets within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    for path in [&uapi, &control] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let secret = std::fs::read_to_string(&key)
        .unwrap()
        .trim()
        .parse::<tunctl_vpwn::SecretKey>()
        .unwrap();
    let private_hex: String = secret.to_hex().to_string();
    for args in [
        vec!["vpwn", "show", tun.as_str(), "--json"],
        vec!["vpwn", "down", tun.as_str()],
        vec!["br", "show", bridge.as_str(), "--json"],
        vec!["br", "down", bridge.as_str()],
        // Changing a running bridge: a port of the user's, a static entry stealing one.
        vec!["br", "port", "add", bridge.as_str(), "evil0"],
        vec!["br", "port", "del", bridge.as_str(), pa.as_str()],
        vec![
            "br",
            "fdb",
            "add",
            bridge.as_str(),
            "02:00:00:00:00:66",
            pa.as_str(),
        ],
        vec!["br", "fdb", "del", bridge.as_str(), "02:00:00:00:00:66"],
    ] {
        let out = as_user(&args);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?} as {USER}: {stdout}{stderr}"
        );
        assert!(stderr.contains("ermission denied"), "{args:?}: {stderr}");
        assert!(!stdout.contains(&private_hex) && !stderr.contains(&private_hex));
    }
    // Listing as the user shows nothing it may not read, and no key.
    let out = as_user(&["vpwn", "show", "--json"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&private_hex));
    // Both still run, for root.
    assert_eq!(
        tunctl_vpwn::uapi::get(&tun).unwrap().public_key,
        Some(secret.public())
    );
    let st = tunctl_br::control::show(&bridge).expect("the bridge still answers");
    assert_eq!(st.ports.len(), 2, "its ports as they were");
    assert!(
        st.fdb.iter().all(|e| !e.is_static),
        "no entry of the user's"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Stops a child on drop: SIGTERM (so it removes its device and UAPI socket), SIGKILL if it
/// is still there after 3 s; then reaps it.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SIGKILLs a process on drop, if it still runs.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2); a pid that is gone gives ESRCH, ignored.
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}
