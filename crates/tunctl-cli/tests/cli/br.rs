//! `tunctl br`: a bridge of ports in three namespaces, its uplink enslaved to a Linux bridge,
//! run in the foreground; `br show` (text and JSON) while it runs; SIGTERM, and `br down`,
//! remove every port it created in every namespace, release the uplink from its master and
//! remove the control socket. `-n` and `NAME@NS` spelled every way the README allows; the
//! master looked up where the uplink is; `br port` and `br fdb` on a running bridge.

use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tunctl_br::Status;

use super::common::{self, ip_json, ip_link, ip_ok, unique, TestNs};
use super::{fails, ok, tunctl};

/// A running `tunctl br up`: killed, and its socket removed, if the test ends first.
struct BrChild {
    child: Option<Child>,
    socket: PathBuf,
}

impl BrChild {
    /// Starts `tunctl br up NAME ARGS...` and waits (bounded) until `br show NAME` answers.
    fn up(name: &str, args: &[&str]) -> BrChild {
        BrChild::up_with(&[], name, args)
    }

    /// Starts `tunctl GLOBAL... br up NAME ARGS...` (GLOBAL: `-n NS`) and waits (bounded)
    /// until `br show NAME` answers.
    fn up_with(global: &[&str], name: &str, args: &[&str]) -> BrChild {
        let child = Command::new(env!("CARGO_BIN_EXE_tunctl"))
            .args(global)
            .args(["br", "up", name])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tunctl br up");
        let mut br = BrChild {
            child: Some(child),
            socket: Path::new("/run/tunctl/br").join(format!("{name}.sock")),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !tunctl(&["br", "show", name, "--json"]).status.success() {
            if let Some(status) = br.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("tunctl br up exited ({status}): {}", br.stderr());
            }
            assert!(Instant::now() < deadline, "br {name} not up within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        br
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(e) = self.child.as_mut().and_then(|c| c.stderr.as_mut()) {
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    /// Waits (bounded) for the process to end; its stderr.
    fn wait(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let err = self.stderr();
                assert!(status.success(), "tunctl br up: {status}: {err}");
                self.child = None;
                return err;
            }
            assert!(
                Instant::now() < deadline,
                "tunctl br up still running after 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BrChild {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

/// Addresses 10.98.0.N/24 on `dev` in `ns`, up.
fn address(ns: &TestNs, dev: &str, n: u8) {
    ip_ok(
        &ns.name,
        &["addr", "add", &format!("10.98.0.{n}/24"), "dev", dev],
    );
    ip_ok(&ns.name, &["link", "set", dev, "up"]);
}

/// A datagram from 10.98.0.FROM in `a` to 10.98.0.TO in `b`, tried for 5 s.
fn datagram(a: &TestNs, from: u8, b: &TestNs, to: u8) {
    let bind = |ns: &TestNs, addr: String| {
        let addr: SocketAddr = addr.parse().unwrap();
        ns.ns.run(|| UdpSocket::bind(addr)).unwrap().unwrap()
    };
    let rx = bind(b, format!("10.98.0.{to}:0"));
    rx.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let dst = rx.local_addr().unwrap();
    let tx = bind(a, format!("10.98.0.{from}:0"));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 64];
    loop {
        let _ = tx.send_to(b"through br", dst);
        if rx
            .recv_from(&mut buf)
            .is_ok_and(|(n, _)| &buf[..n] == b"through br")
        {
            return;
        }
        assert!(Instant::now() < deadline, "no datagram to {dst} within 5 s");
    }
}

/// The Linux bridge's ports.
fn slaves(ns: &str, master: &str) -> Vec<Value> {
    ip_json(Some(ns), &["link", "show", "master", master])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn br_up_show_sigterm_and_down_leave_nothing_behind() {
    let Some((a, ())) = common::privileged_ns() else {
        return;
    };
    let (b, u) = (TestNs::new(), TestNs::new());
    let lbr = unique("lbr");
    ip_ok(&u.name, &["link", "add", &lbr, "type", "bridge"]);
    ip_ok(&u.name, &["link", "set", &lbr, "up"]);
    let master = format!("{lbr}@{}", u.name);

    // Run 1: every port made by br, the uplink too; stopped with SIGTERM.
    let (pa, pb, pu) = (unique("pa"), unique("pb"), unique("pu"));
    let name = unique("br");
    let ports = [
        format!("{pa}@{}", a.name),
        format!("{pb}@{}", b.name),
        format!("{pu}@{}", u.name),
    ];
    let mut br = BrChild::up(
        &name,
        &[
            &ports[0],
            &ports[1],
            &ports[2],
            "--uplink",
            &pu,
            "--master",
            &master,
            "--max-macs",
            "1024",
        ],
    );
    assert!(br.socket.exists());
    for (ns, dev) in [(&a, &pa), (&b, &pb), (&u, &pu)] {
        assert!(
            ip_link(Some(&ns.name), dev).is_some(),
            "{dev} in {}",
            ns.name
        );
    }
    let up = ip_link(Some(&u.name), &pu).unwrap();
    assert_eq!(up["master"], lbr.as_str(), "the uplink is enslaved: {up}");
    address(&a, &pa, 1);
    address(&b, &pb, 2);
    datagram(&a, 1, &b, 2);
    datagram(&b, 2, &a, 1);
    let mac_a = ip_link(Some(&a.name), &pa).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();

    let shown: Vec<Status> = serde_json::from_str(&ok(&["br", "show", &name, "--json"])).unwrap();
    let bridge = &shown[0];
    assert_eq!(bridge.name, name, "{bridge}");
    assert_eq!(bridge.pid, br.pid(), "{bridge}");
    assert_eq!(bridge.max_macs, 1024, "{bridge}");
    let port = |dev: &str| {
        bridge
            .ports
            .iter()
            .find(|p| p.name == dev)
            .unwrap_or_else(|| panic!("port {dev} in {bridge}"))
            .clone()
    };
    for (ns, dev) in [(&a, &pa), (&b, &pb), (&u, &pu)] {
        let p = port(dev);
        assert_eq!(p.namespace, ns.name, "{p:?}");
        assert!(p.alive && p.created, "{p:?}");
        assert_eq!(p.uplink, *dev == pu, "{p:?}");
    }
    // The uplink weighs as much as the two other ports: half the table.
    assert_eq!((port(&pu).weight, port(&pu).share), (2, 512));
    assert_eq!((port(&pa).weight, port(&pa).share), (1, 256));
    assert!(port(&pa).rx_frames > 0);
    assert!(
        bridge
            .fdb
            .iter()
            .any(|e| e.mac.to_string() == mac_a && e.port == pa),
        "a's address learned: {bridge}"
    );
    let all: Vec<Status> = serde_json::from_str(&ok(&["br", "show", "--json"])).unwrap();
    assert!(all.iter().any(|b| b.name == name), "{all:?}");
    let text = ok(&["br", "show", &name]);
    assert!(text.contains(&format!("bridge {name}: pid")), "{text}");
    assert!(text.contains(&format!("port {pu}@{}", u.name)), "{text}");
    assert!(text.contains("(uplink)"), "{text}");
    // The table exactly as `bridge fdb show` prints a Linux bridge's.
    assert!(
        text.lines()
            .any(|l| l == format!("{mac_a} dev {pa} master {name}")),
        "{text}"
    );

    // SAFETY: kill(2) to our own child.
    assert_eq!(unsafe { libc::kill(br.pid() as i32, libc::SIGTERM) }, 0);
    let err = br.wait();
    assert!(err.contains("down"), "{err}");
    for (ns, dev) in [(&a, &pa), (&b, &pb), (&u, &pu)] {
        assert!(
            ip_link(Some(&ns.name), dev).is_none(),
            "{dev} left in {}",
            ns.name
        );
    }
    assert!(slaves(&u.name, &lbr).is_empty(), "{lbr} keeps a port");
    assert!(!br.socket.exists(), "the control socket is left");
    assert!(!tunctl(&["br", "show", &name]).status.success());

    // Run 2: the uplink a persistent tap made beforehand (attached, not created); stopped
    // with `br down`: released from its master, left in place; the rest gone.
    let (pa, pb, pu) = (unique("pa"), unique("pb"), unique("pu"));
    ip_ok(
        &u.name,
        &["tuntap", "add", "dev", &pu, "mode", "tap", "vnet_hdr"],
    );
    let name = unique("br");
    let ports = [
        format!("{pa}@{}", a.name),
        format!("{pb}@{}", b.name),
        format!("{pu}@{}", u.name),
    ];
    // The uplink as it is written among the ports, its master by name alone (the uplink's
    // namespace is the only one it can be in).
    let mut br = BrChild::up(
        &name,
        &[
            &ports[0], &ports[1], &ports[2], "--uplink", &ports[2], "--master", &lbr,
        ],
    );
    let up = ip_link(Some(&u.name), &pu).unwrap();
    assert_eq!(up["master"], lbr.as_str(), "the uplink is enslaved: {up}");
    let shown: Vec<Status> = serde_json::from_str(&ok(&["br", "show", &name, "--json"])).unwrap();
    let uplink = shown[0].ports.iter().find(|p| p.name == pu).unwrap();
    assert!(!uplink.created, "{uplink:?}");
    ok(&["br", "down", &name]);
    let err = br.wait();
    assert!(err.contains("down"), "{err}");
    assert!(ip_link(Some(&a.name), &pa).is_none(), "{pa} left");
    assert!(ip_link(Some(&b.name), &pb).is_none(), "{pb} left");
    let up = ip_link(Some(&u.name), &pu).expect("the attached uplink stays");
    assert!(up.get("master").is_none(), "the uplink is released: {up}");
    assert!(slaves(&u.name, &lbr).is_empty(), "{lbr} keeps a port");
    assert!(!br.socket.exists(), "the control socket is left");
}

/// The links of namespace `ns` (None: this one) whose names are among `names`.
fn present(ns: Option<&str>, names: &[&String]) -> Vec<String> {
    names
        .iter()
        .filter(|n| ip_link(ns, n).is_some())
        .map(|n| n.to_string())
        .collect()
}

/// `tunctl -n NS br up`: ports without @NS are born in NS (none in this namespace), the
/// start line names it (`q0@NS`), the uplink given without @ is NS's and its master is
/// looked up there; a port with @ goes where it says.
#[test]
fn br_up_takes_n_as_the_namespace_of_ports_and_master() {
    let Some((h, ())) = common::privileged_ns() else {
        return;
    };
    let other = TestNs::new();
    let lbr = unique("lbr");
    ip_ok(&h.name, &["link", "add", &lbr, "type", "bridge"]);
    let (q0, q1, up) = (unique("q0"), unique("q1"), unique("up"));
    let name = unique("br");
    let q1_there = format!("{q1}@{}", other.name);
    let mut br = BrChild::up_with(
        &["-n", &h.name],
        &name,
        &[&q0, &q1_there, &up, "--uplink", &up, "--master", &lbr],
    );
    assert_eq!(present(Some(&h.name), &[&q0, &up]).len(), 2);
    assert!(
        present(None, &[&q0, &q1, &up]).is_empty(),
        "taps on the host"
    );
    assert!(ip_link(Some(&other.name), &q1).is_some());
    assert_eq!(ip_link(Some(&h.name), &up).unwrap()["master"], lbr.as_str());
    let shown: Vec<Status> = serde_json::from_str(&ok(&["br", "show", &name, "--json"])).unwrap();
    let spaces: Vec<(&str, &str)> = shown[0]
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.namespace.as_str()))
        .collect();
    assert_eq!(
        spaces,
        [
            (q0.as_str(), h.name.as_str()),
            (q1.as_str(), other.name.as_str()),
            (up.as_str(), h.name.as_str())
        ]
    );
    ok(&["br", "down", &name]);
    let err = br.wait();
    assert!(
        err.contains(&format!(
            "ports {q0}@{}, {q1}@{}, {up}@{} (uplink)",
            h.name, other.name, h.name
        )),
        "{err}"
    );
    assert!(present(Some(&h.name), &[&q0, &up]).is_empty());
    assert!(slaves(&h.name, &lbr).is_empty());
}

/// A master that is not a bridge, one that is not in the uplink's namespace, one that does
/// not exist: each refused with what is wrong (and where it looked), nothing left behind.
#[test]
fn br_up_says_what_is_wrong_with_the_master_and_leaves_nothing() {
    let Some((h, ())) = common::privileged_ns() else {
        return;
    };
    let other = TestNs::new();
    let (lbr, veth, peer) = (unique("lbr"), unique("ve"), unique("vp"));
    ip_ok(&h.name, &["link", "add", &lbr, "type", "bridge"]);
    ip_ok(&other.name, &["link", "add", &lbr, "type", "bridge"]);
    ip_ok(
        &h.name,
        &["link", "add", &veth, "type", "veth", "peer", "name", &peer],
    );
    let (p0, up) = (unique("p0"), unique("up"));
    let name = unique("br");
    let (p0_at, up_at) = (format!("{p0}@{}", other.name), format!("{up}@{}", h.name));
    let try_master = |master: &str| {
        fails(
            &[
                "br", "up", &name, &p0_at, &up_at, "--uplink", &up, "--master", master,
            ],
            1,
        )
    };
    let err = try_master(&veth);
    assert!(err.contains("not a bridge"), "{err}");
    let err = try_master("nosuchbr");
    assert!(err.contains(&format!("netns {}", h.name)), "{err}");
    let err = try_master(&format!("{lbr}@{}", other.name));
    assert!(err.contains("share one namespace"), "{err}");
    // The uplink by NAME@NS that no port is.
    let err = fails(
        &[
            "br",
            "up",
            &name,
            &p0_at,
            &up_at,
            "--uplink",
            &format!("{up}@{}", other.name),
            "--master",
            &lbr,
        ],
        1,
    );
    assert!(err.contains("is not one of the ports"), "{err}");
    assert!(ip_link(Some(&other.name), &p0).is_none());
    assert!(ip_link(Some(&h.name), &up).is_none());
    assert!(slaves(&h.name, &lbr).is_empty());
    assert!(!Path::new("/run/tunctl/br")
        .join(format!("{name}.sock"))
        .exists());
}

/// A running bridge changed from outside: `--static` at start, `br port add` (with @NS and
/// with -n), `br fdb add|del|show`, `br port del`; each refusal said, the bridge unharmed.
#[test]
fn br_port_and_fdb_change_a_running_bridge() {
    let Some((a, ())) = common::privileged_ns() else {
        return;
    };
    let (b, c, d) = (TestNs::new(), TestNs::new(), TestNs::new());
    let (pa, pb, pc, pd) = (unique("pa"), unique("pb"), unique("pc"), unique("pd"));
    let name = unique("br");
    let gw = "02:aa:bb:cc:dd:01";
    let (pa_at, pb_at) = (format!("{pa}@{}", a.name), format!("{pb}@{}", b.name));
    let mut br = BrChild::up(&name, &[&pa_at, &pb_at, "--static", &format!("{gw}@{pa}")]);
    let table = || ok(&["br", "fdb", "show", &name]);
    assert!(
        table()
            .lines()
            .any(|l| l == format!("{gw} dev {pa} master {name} static")),
        "{}",
        table()
    );
    // Ports added: by NAME@NS, and by NAME with -n.
    ok(&["br", "port", "add", &name, &format!("{pc}@{}", c.name)]);
    ok(&["-n", &d.name, "br", "port", "add", &name, &pd]);
    assert!(ip_link(Some(&c.name), &pc).is_some());
    assert!(ip_link(Some(&d.name), &pd).is_some());
    assert!(ip_link(None, &pd).is_none(), "-n ignored");
    // From another namespace, a name alone is ambiguous: refused.
    let out = Command::new("ip")
        .args(["netns", "exec", &c.name, env!("CARGO_BIN_EXE_tunctl")])
        .args(["br", "port", "add", &name, "nowhere0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another namespace"), "{err}");
    address(&c, &pc, 3);
    address(&d, &pd, 4);
    datagram(&c, 3, &d, 4);
    let err = fails(
        &["br", "port", "add", &name, &format!("{pc}@{}", c.name)],
        1,
    );
    assert!(err.contains("already"), "{err}");
    // Static entries added and removed.
    let mac = "02:aa:bb:cc:dd:02";
    ok(&["br", "fdb", "add", &name, mac, &pc, "--vlan", "7"]);
    assert!(
        table()
            .lines()
            .any(|l| l == format!("{mac} dev {pc} vlan 7 master {name} static")),
        "{}",
        table()
    );
    let err = fails(&["br", "fdb", "add", &name, "01:00:5e:00:00:01", &pc], 1);
    assert!(err.contains("not a unicast address"), "{err}");
    let err = fails(&["br", "fdb", "add", &name, mac, "nosuch0"], 1);
    assert!(err.contains("no port nosuch0"), "{err}");
    fails(&["br", "fdb", "del", &name, mac], 1);
    ok(&["br", "fdb", "del", &name, mac, "--vlan", "7"]);
    assert!(!table().contains(mac), "{}", table());
    // Two containers' ports of one name: a bare name is ambiguous, -n says which (as it
    // says where a port is born), for fdb add and port del alike.
    ok(&["br", "port", "add", &name, &format!("{pd}@{}", c.name)]);
    let err = fails(&["br", "fdb", "add", &name, mac, &pd], 1);
    assert!(err.contains("several ports"), "{err}");
    ok(&["-n", &d.name, "br", "fdb", "add", &name, mac, &pd]);
    assert!(
        table()
            .lines()
            .any(|l| l == format!("{mac} dev {pd}@{} master {name} static", d.name)),
        "{}",
        table()
    );
    ok(&["br", "fdb", "del", &name, mac]);
    let err = fails(&["br", "port", "del", &name, &pd], 1);
    assert!(err.contains("several ports"), "{err}");
    ok(&["-n", &c.name, "br", "port", "del", &name, &pd]);
    assert!(ip_link(Some(&c.name), &pd).is_none(), "c's port removed");
    assert!(ip_link(Some(&d.name), &pd).is_some(), "d's port kept");
    // A port removed: its tap gone, its addresses with it, the others going on.
    ok(&["br", "port", "del", &name, &pc]);
    assert!(ip_link(Some(&c.name), &pc).is_none());
    fails(&["br", "port", "del", &name, &pc], 1);
    let shown: Vec<Status> = serde_json::from_str(&ok(&["br", "show", &name, "--json"])).unwrap();
    assert!(shown[0].ports.iter().all(|p| p.name != pc));
    assert!(shown[0].fdb.iter().all(|e| e.port != pc));
    fails(&["br", "port", "add", "nosuchbridge", &pc], 1);
    ok(&["br", "down", &name]);
    br.wait();
    assert!(
        ip_link(Some(&d.name), &pd).is_none(),
        "a port added at run time is left"
    );
    assert!(ip_link(Some(&a.name), &pa).is_none());
}
