//! `tunctl br`: a bridge of ports in three namespaces, its uplink enslaved to a Linux bridge,
//! run in the foreground; `br show` (text and JSON) while it runs; SIGTERM, and `br down`,
//! remove every port it created in every namespace, release the uplink from its master and
//! remove the control socket.

use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::{self, ip_json, ip_link, ip_ok, unique, TestNs};
use super::{ok, tunctl};

/// A running `tunctl br up`: killed, and its socket removed, if the test ends first.
struct BrChild {
    child: Option<Child>,
    socket: PathBuf,
}

impl BrChild {
    /// Starts `tunctl br up NAME ARGS...` and waits (bounded) until `br show NAME` answers.
    fn up(name: &str, args: &[&str]) -> BrChild {
        let child = Command::new(env!("CARGO_BIN_EXE_tunctl"))
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

    let shown: Value = serde_json::from_str(&ok(&["br", "show", &name, "--json"])).unwrap();
    let bridge = &shown[0];
    assert_eq!(bridge["name"], name.as_str(), "{shown}");
    assert_eq!(bridge["pid"], br.pid(), "{shown}");
    assert_eq!(bridge["max_macs"], 1024, "{shown}");
    let port = |dev: &str| {
        bridge["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == dev)
            .unwrap_or_else(|| panic!("port {dev} in {bridge}"))
            .clone()
    };
    for (ns, dev) in [(&a, &pa), (&b, &pb), (&u, &pu)] {
        let p = port(dev);
        assert!(p["namespace"].as_str().unwrap().contains(&ns.name), "{p}");
        assert_eq!(p["alive"], true, "{p}");
        assert_eq!(p["created"], true, "{p}");
        assert_eq!(p["uplink"], *dev == pu, "{p}");
    }
    assert!(port(&pa)["rx_frames"].as_u64().unwrap() > 0);
    assert!(
        bridge["fdb"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["mac"] == mac_a.as_str() && e["port"] == pa.as_str()),
        "a's address learned: {bridge}"
    );
    let all: Value = serde_json::from_str(&ok(&["br", "show", "--json"])).unwrap();
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|b| b["name"] == name.as_str()),
        "{all}"
    );
    let text = ok(&["br", "show", &name]);
    assert!(text.contains(&format!("bridge {name}: pid")), "{text}");
    assert!(text.contains(&format!("port {pu}@")), "{text}");
    assert!(text.contains("(uplink)"), "{text}");
    assert!(
        text.contains(&format!("{mac_a} dev {pa} master {name}")),
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
    let mut br = BrChild::up(
        &name,
        &[
            &ports[0], &ports[1], &ports[2], "--uplink", &pu, "--master", &master,
        ],
    );
    let up = ip_link(Some(&u.name), &pu).unwrap();
    assert_eq!(up["master"], lbr.as_str(), "the uplink is enslaved: {up}");
    let shown: Value = serde_json::from_str(&ok(&["br", "show", &name, "--json"])).unwrap();
    let uplink = shown[0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pu.as_str())
        .cloned()
        .unwrap();
    assert_eq!(uplink["created"], false, "{uplink}");
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
