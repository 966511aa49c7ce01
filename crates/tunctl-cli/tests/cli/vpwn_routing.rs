//! Full and split tunnels as WireGuard clients run them: `tunctl vpwn up --config` on a
//! client whose server is reached only through its default route (metric 100, as a
//! laptop's DHCP route), against Debian's wireguard-go on the server.
//!
//! Hosts: the client C (uplink `ua`), a router R, the server S (wireguard-go). C reaches S
//! (10.240.0.2, fd00:240::2) only through R. A full tunnel must route everything of C's
//! through the tunnel except the tunnel's own datagrams (marked), which still leave by
//! `ua`; and must leave nothing behind, also after a SIGKILL (the next `up` removes what the
//! killed one left).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{self, bind_in, ip_ok, TestNs};
use super::{crosses, ok, public_of};

/// The router's addresses on each side, the client's and the server's.
const C4: &str = "10.231.0.1";
const R4C: &str = "10.231.0.2";
const R4S: &str = "10.240.0.1";
const S4: &str = "10.240.0.2";
const C6: &str = "fd00:231::1";
const R6C: &str = "fd00:231::2";
const R6S: &str = "fd00:240::1";
const S6: &str = "fd00:240::2";

/// C – R – S, forwarding in R, default routes in C (metric `metric`) and S.
struct Hosts {
    c: TestNs,
    r: TestNs,
    s: TestNs,
    ua: String,
}

fn veth(a: &TestNs, an: &str, b: &TestNs, bn: &str) {
    ip_ok(
        &a.name,
        &[
            "link", "add", an, "type", "veth", "peer", "name", bn, "netns", &b.name,
        ],
    );
}

fn hosts(metric: Option<u32>) -> Hosts {
    let (c, r, s) = (TestNs::new(), TestNs::new(), TestNs::new());
    let (ua, rc, rs, sr) = (
        common::unique("ua"),
        common::unique("rc"),
        common::unique("rs"),
        common::unique("sr"),
    );
    veth(&c, &ua, &r, &rc);
    veth(&r, &rs, &s, &sr);
    for (ns, dev, v4, v6) in [
        (&c, &ua, C4, C6),
        (&r, &rc, R4C, R6C),
        (&r, &rs, R4S, R6S),
        (&s, &sr, S4, S6),
    ] {
        ip_ok(&ns.name, &["addr", "add", &format!("{v4}/24"), "dev", dev]);
        ip_ok(
            &ns.name,
            &["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"],
        );
        ip_ok(&ns.name, &["link", "set", dev, "up"]);
        ip_ok(&ns.name, &["link", "set", "lo", "up"]);
    }
    r.ns.run(|| {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
        std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")
    })
    .unwrap()
    .unwrap();
    let metric: Vec<String> = metric
        .map(|m| vec!["metric".into(), m.to_string()])
        .unwrap_or_default();
    let metric: Vec<&str> = metric.iter().map(String::as_str).collect();
    ip_ok(
        &c.name,
        &[
            &["route", "add", "default", "via", R4C, "dev", &ua][..],
            &metric,
        ]
        .concat(),
    );
    ip_ok(
        &c.name,
        &[
            &["-6", "route", "add", "default", "via", R6C, "dev", &ua][..],
            &metric,
        ]
        .concat(),
    );
    ip_ok(&s.name, &["route", "add", "default", "via", R4S]);
    ip_ok(&s.name, &["-6", "route", "add", "default", "via", R6S]);
    Hosts { c, r, s, ua }
}

/// A process stopped on drop if still running: SIGTERM (it cleans up), SIGKILL after 3 s.
struct Proc(Option<Child>);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(3);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Debian's wireguard-go in S: its tunnel 10.232.0.2/24 and fd00:232::2/64, listening on
/// 51820, the client's key allowed from its tunnel addresses.
struct Server {
    name: String,
    public: String,
    dir: PathBuf,
    _proc: Proc,
}

/// The usual set-up: the hosts (the client's default route at metric 100), a client key,
/// and wireguard-go serving that client; `None` where the test cannot run (said, and a
/// failure under CI).
fn client_and_server() -> Option<(TestNs, Hosts, String, Server)> {
    let (guard, _) = common::privileged_ns()?;
    let h = hosts(Some(100));
    let private = ok(&["vpwn", "genkey"]);
    let srv = server(&h, &public_of(&private))?;
    Some((guard, h, private, srv))
}

fn server(h: &Hosts, client_public: &str) -> Option<Server> {
    let Some(program) = which("wireguard-go") else {
        assert!(
            !ci(),
            "wireguard-go is missing under CI: .ci/run installs it"
        );
        eprintln!("SKIPPED: wireguard-go not installed");
        return None;
    };
    let name = common::unique("ws");
    let dir = std::env::temp_dir().join(format!("vpwn-routing-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &h.s.name])
        .arg(program)
        .args(["-f", &name])
        .env("WG_PROCESS_FOREGROUND", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(Some(child));
    let sock = PathBuf::from(format!("/var/run/wireguard/{name}.sock"));
    wait("wireguard-go's socket", 5, || {
        sock.exists() && common::ip_link(Some(&h.s.name), &name).is_some()
    });
    let private = ok(&["vpwn", "genkey"]);
    let key = dir.join("s.key");
    std::fs::write(&key, &private).unwrap();
    let wg = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &h.s.name, "wg"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "wg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    wg(&[
        "set",
        &name,
        "private-key",
        key.to_str().unwrap(),
        "listen-port",
        "51820",
        "peer",
        client_public,
        "allowed-ips",
        "10.232.0.1/32,fd00:232::1/128",
    ]);
    ip_ok(&h.s.name, &["addr", "add", "10.232.0.2/24", "dev", &name]);
    ip_ok(
        &h.s.name,
        &["addr", "add", "fd00:232::2/64", "dev", &name, "nodad"],
    );
    ip_ok(&h.s.name, &["link", "set", &name, "up"]);
    let public = public_of(&private);
    Some(Server {
        name,
        public,
        dir,
        _proc: proc,
    })
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.name));
    }
}

fn ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `tunctl -n C vpwn up NAME --config FILE` (the file written 0600 with `body`): the
/// running process, once its device is up (or its exit, if it failed).
fn client_up(h: &Hosts, name: &str, body: &str) -> Result<Proc, String> {
    up_in(&h.c, name, body)
}

/// `tunctl -n NS vpwn up NAME --config FILE` in any namespace (see [`client_up`]).
fn up_in(ns: &TestNs, name: &str, body: &str) -> Result<Proc, String> {
    let file = std::env::temp_dir().join(format!("{name}.conf"));
    std::fs::write(&file, body).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tunctl"))
        .args(["-n", &ns.name, "vpwn", "up", name, "--config"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            let _ = std::fs::remove_file(&file);
            return Err(format!("exited {status}: {err}"));
        }
        // The UAPI socket is made once the device, its addresses and the routing are.
        if std::path::Path::new(&format!("/var/run/wireguard/{name}.sock")).exists() {
            let _ = std::fs::remove_file(&file);
            return Ok(Proc(Some(child)));
        }
        assert!(Instant::now() < deadline, "vpwn up {name} within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, then the process's stderr once it exited.
fn stop(mut p: Proc) -> String {
    let child = p.0.take().unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The rules of namespace `ns` for a family, as `ip -j [-6] rule` lists them.
fn rules(ns: &str, v6: bool) -> Vec<serde_json::Value> {
    let args: &[&str] = if v6 { &["-6", "rule"] } else { &["rule"] };
    common::ip_json(Some(ns), args)
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// vpwn's rules (`proto 87`) in `ns`, both families.
fn vpwn_rules(ns: &str) -> Vec<serde_json::Value> {
    [false, true]
        .into_iter()
        .flat_map(|v6| rules(ns, v6))
        .filter(|r| r["protocol"] == "87" || r["protocol"] == 87)
        .collect()
}

/// The device `ip route get DST [mark M]` picks in `ns`.
fn route_dev(ns: &str, dst: &str, mark: Option<u32>) -> String {
    let mut args = vec!["route", "get", dst];
    let m = mark.map(|m| m.to_string());
    if let Some(m) = &m {
        args.extend(["mark", m]);
    }
    let v = common::ip_json(Some(ns), &args);
    v[0]["dev"].as_str().unwrap_or("").to_string()
}

/// The mark of vpwn's full-tunnel rule (`not fwmark M lookup M`).
fn full_mark(ns: &str) -> Option<u32> {
    vpwn_rules(ns).iter().find_map(|r| {
        let m = r["fwmark"].as_str()?;
        u32::from_str_radix(m.trim_start_matches("0x"), 16).ok()
    })
}

/// Whether `ip route get DST` in `ns` is refused as unreachable (no route out at all).
fn unreachable(ns: &str, dst: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", ns, "route", "get", dst])
        .output()
        .unwrap();
    // An unreachable route answers EHOSTUNREACH ("No route to host"); no route at all,
    // ENETUNREACH ("Network is unreachable").
    let said = String::from_utf8_lossy(&out.stderr);
    !out.status.success() && (said.contains("unreachable") || said.contains("No route to host"))
}

/// vpwn's routes (`proto 87`) in every table of `ns`.
fn vpwn_table_routes(ns: &str) -> Vec<serde_json::Value> {
    [false, true]
        .into_iter()
        .flat_map(|v6| {
            let args: &[&str] = if v6 {
                &["-6", "route", "show", "table", "all"]
            } else {
                &["route", "show", "table", "all"]
            };
            common::ip_json(Some(ns), args)
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|r| r["protocol"] == "87" || r["protocol"] == 87)
        .collect()
}

fn client_conf(private: &str, server: &str, endpoint: &str, allowed: &str, extra: &str) -> String {
    format!(
        "[Interface]\nPrivateKey = {}\nAddress = 10.232.0.1/24, fd00:232::1/64\n{extra}\n[Peer]\nPublicKey = {server}\nEndpoint = {endpoint}\nAllowedIPs = {allowed}\n",
        private.trim()
    )
}

/// The client: a full tunnel (IPv4, IPv6, both) with the endpoint behind a
/// metric-100 default route, against wireguard-go: traffic crosses, the endpoint is routed
/// into the tunnel for everyone but the tunnel's own (marked) datagrams, the local network
/// stays local, and SIGTERM removes every rule and route.
#[test]
fn a_full_tunnel_keeps_its_own_datagrams_out_and_cleans_up() {
    let Some((_g, h, private, srv)) = client_and_server() else {
        return;
    };
    for (allowed, endpoint, v4, v6) in [
        ("0.0.0.0/0", format!("{S4}:51820"), true, false),
        ("::/0", format!("[{S6}]:51820"), false, true),
        ("0.0.0.0/0, ::/0", format!("{S4}:51820"), true, true),
    ] {
        let name = common::unique("wga");
        let body = client_conf(&private, &srv.public, &endpoint, allowed, "");
        let p = client_up(&h, &name, &body).unwrap_or_else(|e| panic!("{allowed}: {e}"));
        let mark = full_mark(&h.c.name)
            .unwrap_or_else(|| panic!("{allowed}: no vpwn rule: {:?}", rules(&h.c.name, false)));
        // Two rules per family, for the families of the default routes.
        let ours = vpwn_rules(&h.c.name);
        assert_eq!(
            ours.len(),
            2 * (usize::from(v4) + usize::from(v6)),
            "{ours:?}"
        );
        for (on, endpoint_ip, local) in [(v4, S4, R4C), (v6, S6, R6C)] {
            if !on {
                continue;
            }
            assert_eq!(
                route_dev(&h.c.name, endpoint_ip, None),
                name,
                "{allowed}: everyone's traffic to the endpoint goes into the tunnel"
            );
            assert_eq!(
                route_dev(&h.c.name, endpoint_ip, Some(mark)),
                h.ua,
                "{allowed}: the tunnel's own datagrams leave by the real default route"
            );
            assert_eq!(
                route_dev(&h.c.name, local, None),
                h.ua,
                "{allowed}: the local network stays local (suppress_prefixlength 0)"
            );
        }
        if v4 {
            assert!(
                crosses(&h.c, &h.s, "10.232.0.1:0", "10.232.0.2:7301"),
                "{allowed}: IPv4 through"
            );
        }
        if v6 {
            assert!(
                crosses(&h.c, &h.s, "[fd00:232::1]:0", "[fd00:232::2]:7302"),
                "{allowed}: IPv6 through"
            );
        }
        // The main table's default routes are untouched.
        let main = common::ip_json(Some(&h.c.name), &["route", "show", "default"]);
        assert_eq!(main[0]["dev"], h.ua.as_str(), "{main}");
        let said = stop(p);
        assert!(said.contains("full tunnel"), "{said}");
        assert!(vpwn_rules(&h.c.name).is_empty(), "{allowed}: rules removed");
        assert!(common::ip_link(Some(&h.c.name), &name).is_none());
        let table = common::ip_json(Some(&h.c.name), &["route", "show", "table", "all"]);
        assert!(
            !table.to_string().contains(&format!("\"{name}\"")),
            "{allowed}: no route through the device left: {table}"
        );
    }
}

/// With a default route of metric 0 already there (the case where vpwn once swallowed
/// EEXIST and sent the host's traffic in clear text), the full tunnel still takes the
/// traffic; split tunnels and `Table = off` route as they say; a tunnel killed with SIGKILL
/// leaves its rules, and the next `up` removes them.
#[test]
fn split_off_and_killed_tunnels_route_as_they_say() {
    let Some((_g, _)) = common::privileged_ns() else {
        return;
    };
    let h = hosts(None);
    let private = ok(&["vpwn", "genkey"]);
    let Some(srv) = server(&h, &public_of(&private)) else {
        return;
    };
    let endpoint = format!("{S4}:51820");
    // Metric 0 in the main table, and a full tunnel.
    let name = common::unique("wgm");
    let p = client_up(
        &h,
        &name,
        &client_conf(&private, &srv.public, &endpoint, "0.0.0.0/0", ""),
    )
    .unwrap();
    assert_eq!(
        route_dev(&h.c.name, "10.99.0.1", None),
        name,
        "never in clear text"
    );
    assert!(crosses(&h.c, &h.s, "10.232.0.1:0", "10.232.0.2:7311"));
    stop(p);

    // Split: only the server's tunnel network, in the main table; no rules.
    let name = common::unique("wgs");
    let p = client_up(
        &h,
        &name,
        &client_conf(
            &private,
            &srv.public,
            &endpoint,
            "10.232.0.0/24, 10.233.0.0/16",
            "",
        ),
    )
    .unwrap();
    assert!(vpwn_rules(&h.c.name).is_empty());
    assert_eq!(route_dev(&h.c.name, "10.233.1.1", None), name);
    assert_eq!(
        route_dev(&h.c.name, "10.99.0.1", None),
        h.ua,
        "the rest as before"
    );
    assert!(crosses(&h.c, &h.s, "10.232.0.1:0", "10.232.0.2:7312"));
    stop(p);
    assert!(
        common::ip_json(Some(&h.c.name), &["route", "show", "10.233.0.0/16"])
            .as_array()
            .is_none_or(|a| a.is_empty())
    );

    // Table = off: no route, no rule, whatever the allowed IPs.
    let name = common::unique("wgo");
    let p = client_up(
        &h,
        &name,
        &client_conf(&private, &srv.public, &endpoint, "0.0.0.0/0", "Table = off"),
    )
    .unwrap();
    assert!(vpwn_rules(&h.c.name).is_empty());
    assert_eq!(route_dev(&h.c.name, "10.99.0.1", None), h.ua);
    stop(p);

    // SIGKILL: the device goes with the process, its rules stay, and its table refuses
    // traffic (fails closed); `vpwn clean` removes them, and so does the next up (which
    // adds its own), whose exit leaves none.
    let body = client_conf(&private, &srv.public, &endpoint, "0.0.0.0/0", "");
    for clean in [true, false] {
        // A name of its own each time: the killed one leaves its UAPI socket behind.
        let name = common::unique("wgk");
        let mut p = client_up(&h, &name, &body).unwrap();
        if let Some(mut c) = p.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        wait("the killed tunnel's device to go", 5, || {
            common::ip_link(Some(&h.c.name), &name).is_none()
        });
        assert_eq!(
            vpwn_rules(&h.c.name).len(),
            2,
            "a killed tunnel leaves its rules"
        );
        assert!(
            unreachable(&h.c.name, "10.99.0.1"),
            "after a crash, refused: not in clear text"
        );
        if clean {
            ok(&["-n", &h.c.name, "vpwn", "clean"]);
            assert!(vpwn_rules(&h.c.name).is_empty(), "vpwn clean removes them");
            assert_eq!(route_dev(&h.c.name, "10.99.0.1", None), h.ua);
            assert!(vpwn_table_routes(&h.c.name).is_empty());
        }
    }
    let again = common::unique("wgk");
    let p = client_up(&h, &again, &body).unwrap();
    assert_eq!(
        vpwn_rules(&h.c.name).len(),
        2,
        "the stale ones removed, ours added"
    );
    assert!(crosses(&h.c, &h.s, "10.232.0.1:0", "10.232.0.2:7313"));
    stop(p);
    assert!(vpwn_rules(&h.c.name).is_empty());
    drop(srv);
}

/// Without CAP_NET_ADMIN, a full tunnel is refused up front with the reason, and nothing is
/// made.
#[test]
fn a_full_tunnel_without_privilege_is_refused_not_half_made() {
    let Some((_g, _)) = common::privileged_ns() else {
        return;
    };
    let h = hosts(Some(100));
    let user = "tunctl-test";
    let uid = common::system_user(user);
    let private = ok(&["vpwn", "genkey"]);
    let file = std::env::temp_dir().join(format!("{}.conf", common::unique("wgu")));
    std::fs::write(
        &file,
        client_conf(
            &private,
            &public_of(&private),
            &format!("{S4}:51820"),
            "0.0.0.0/0",
            "",
        ),
    )
    .unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&file, Some(uid), None).unwrap();
    let name = common::unique("wgu");
    let out = common::as_user_in(&h.c.name, user)
        .arg(env!("CARGO_BIN_EXE_tunctl"))
        .args(["vpwn", "up", &name, "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("full tunnel") && err.contains("CAP_NET_ADMIN"),
        "{err}"
    );
    assert!(common::ip_link(Some(&h.c.name), &name).is_none());
    assert!(vpwn_rules(&h.c.name).is_empty());

    // The rules a killed tunnel left (which refuse the namespace's traffic) are root's to
    // clear: the user's `vpwn clean` is refused and removes nothing.
    let body = client_conf(
        &private,
        &public_of(&private),
        &format!("{S4}:51820"),
        "0.0.0.0/0",
        "",
    );
    let mut p = client_up(&h, &common::unique("wgk"), &body).unwrap();
    if let Some(mut c) = p.0.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert_eq!(vpwn_rules(&h.c.name).len(), 2);
    let out = common::as_user_in(&h.c.name, user)
        .arg(env!("CARGO_BIN_EXE_tunctl"))
        .args(["vpwn", "clean"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(vpwn_rules(&h.c.name).len(), 2, "the user removed nothing");
    ok(&["-n", &h.c.name, "vpwn", "clean"]);
    assert!(vpwn_rules(&h.c.name).is_empty());
    drop(h.r);
}

/// A server with several addresses answers from the one the client sent to (its service
/// address on `lo`, IPv4; a second address on its interface, IPv6), so a client behind a
/// stateful firewall (nftables: only established traffic comes in) gets every answer.
#[test]
fn a_server_answers_from_the_address_it_was_reached_on() {
    let Some((_g, _)) = common::privileged_ns() else {
        return;
    };
    if which("nft").is_none() {
        assert!(!ci(), "nft is missing under CI: .ci/run installs nftables");
        eprintln!("SKIPPED: nft not installed");
        return;
    }
    let h = hosts(Some(100));
    // The server's service addresses: 10.250.0.1 on lo, fd00:240::9 beside fd00:240::2.
    let sr = common::links(Some(&h.s.name))
        .into_iter()
        .find(|l| l != "lo")
        .unwrap();
    ip_ok(&h.s.name, &["addr", "add", "10.250.0.1/32", "dev", "lo"]);
    ip_ok(
        &h.s.name,
        &["addr", "add", "fd00:240::9/64", "dev", &sr, "nodad"],
    );
    ip_ok(&h.r.name, &["route", "add", "10.250.0.1/32", "via", S4]);
    // The client's firewall: answers to what it sent (and IPv6 neighbour discovery),
    // nothing else.
    let nft = Command::new("ip")
        .args(["netns", "exec", &h.c.name, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(
                b"table inet stateful {\n chain input {\n  type filter hook input priority 0; policy drop;\n  ct state established,related accept\n  iif lo accept\n  meta l4proto ipv6-icmp accept\n }\n}\n",
            )?;
            c.wait()
        })
        .unwrap();
    assert!(nft.success(), "nft");
    let (ks, kc) = (ok(&["vpwn", "genkey"]), ok(&["vpwn", "genkey"]));
    let server = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = 51820\nAddress = 10.232.0.2/24, fd00:232::2/64\n[Peer]\nPublicKey = {}\nAllowedIPs = 10.232.0.1/32, fd00:232::1/128\n",
        ks.trim(),
        public_of(&kc)
    );
    let _srv = up_in(&h.s, &common::unique("vs"), &server).unwrap();
    for (endpoint, from, to) in [
        ("10.250.0.1:51820", "10.232.0.1:0", "10.232.0.2:7321"),
        (
            "[fd00:240::9]:51820",
            "[fd00:232::1]:0",
            "[fd00:232::2]:7322",
        ),
    ] {
        let name = common::unique("vc");
        let body = client_conf(
            &kc,
            &public_of(&ks),
            endpoint,
            "10.232.0.0/24, fd00:232::/64",
            "",
        );
        let p = client_up(&h, &name, &body).unwrap();
        // 20 datagrams each way, each answered through the firewall.
        let rx = bind_in(&h.s, to);
        rx.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let tx = bind_in(&h.c, from);
        tx.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 64];
        // Once the handshake is made (and a new IPv6 address is no longer tentative).
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(tx.send_to(&[99], to).is_ok() && rx.recv_from(&mut buf).is_ok()) {
            assert!(
                Instant::now() < deadline,
                "{endpoint}: nothing crossed in 5 s"
            );
        }
        let mut back = 0;
        for i in 0..20u8 {
            let _ = tx.send_to(&[i], to);
            if let Ok((_, peer)) = rx.recv_from(&mut buf) {
                let _ = rx.send_to(&[i], peer);
                if tx.recv_from(&mut buf).is_ok() {
                    back += 1;
                }
            }
        }
        assert_eq!(
            back, 20,
            "{endpoint}: answers through the client's firewall"
        );
        let shown = ok(&["vpwn", "show", &name, "--json"]);
        assert!(
            shown.contains(endpoint),
            "the endpoint did not move: {shown}"
        );
        stop(p);
    }
}

/// A handshake that never completes is said, not only counted: `up` names the peer and its
/// endpoint after three tries (15 s), and `show` marks the peer.
#[test]
fn a_handshake_that_never_completes_is_said() {
    let Some((_g, _)) = common::privileged_ns() else {
        return;
    };
    let h = hosts(Some(100));
    let (private, nobody) = (ok(&["vpwn", "genkey"]), ok(&["vpwn", "genkey"]));
    let name = common::unique("wgn");
    // Nothing listens at the endpoint.
    let body = client_conf(
        &private,
        &public_of(&nobody),
        &format!("{S4}:51899"),
        "10.232.0.0/24",
        "",
    );
    let mut p = client_up(&h, &name, &body).unwrap();
    // A packet for the peer starts the handshake.
    let tx = bind_in(&h.c, "10.232.0.1:0");
    let _ = tx.send_to(b"anyone?", "10.232.0.2:7330");
    std::thread::sleep(Duration::from_secs(17));
    let shown = ok(&["vpwn", "show", &name]);
    assert!(shown.contains("! no handshake after"), "{shown}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["vpwn", "show", &name, "--json"])).unwrap();
    assert!(
        json[0]["peers"][0]["handshake_pending"]
            .as_u64()
            .is_some_and(|s| s >= 15),
        "{json}"
    );
    let said = stop(Proc(p.0.take()));
    assert!(
        said.contains(&format!("no handshake with {} after", public_of(&nobody)))
            && said.contains(&format!("nothing answers at {S4}:51899")),
        "{said}"
    );
}

/// The kernel removes a link's routes when it goes down, and wg-quick's full tunnel then
/// sends everything by the real default route, in clear text. vpwn's refuses it while the
/// device is down (its table's unreachable route), and puts its route back when the device
/// comes up again: traffic goes through the tunnel again, with no restart.
#[test]
fn a_full_tunnel_fails_closed_while_its_device_is_down() {
    let Some((_g, h, private, srv)) = client_and_server() else {
        return;
    };
    let name = common::unique("wgd");
    let body = client_conf(
        &private,
        &srv.public,
        &format!("{S4}:51820"),
        "0.0.0.0/0, ::/0",
        "",
    );
    let p = client_up(&h, &name, &body).unwrap();
    assert!(crosses(&h.c, &h.s, "10.232.0.1:0", "10.232.0.2:7321"));
    ip_ok(&h.c.name, &["link", "set", &name, "down"]);
    for dst in ["10.99.0.1", S4, "fd00:99::1", S6] {
        assert!(
            unreachable(&h.c.name, dst),
            "{dst}: refused while the device is down, not sent by {}",
            h.ua
        );
    }
    // Nothing leaves by the underlay either: a datagram is refused at once.
    let tx = bind_in(&h.c, "0.0.0.0:0");
    assert!(tx.send_to(b"clear text?", (S4, 9)).is_err());
    ip_ok(&h.c.name, &["link", "set", &name, "up"]);
    wait("the tunnel's routes put back", 5, || {
        !unreachable(&h.c.name, "10.99.0.1")
            && !unreachable(&h.c.name, "fd00:99::1")
            && route_dev(&h.c.name, "10.99.0.1", None) == name
            && route_dev(&h.c.name, "fd00:99::1", None) == name
    });
    // The kernel took the IPv6 address with the link; it is back too.
    let addrs = common::ip_json(Some(&h.c.name), &["-6", "addr", "show", "dev", &name]);
    assert!(
        addrs.to_string().contains("fd00:232::1"),
        "IPv6 address put back: {addrs}"
    );
    let mark = full_mark(&h.c.name).unwrap();
    assert_eq!(route_dev(&h.c.name, S4, Some(mark)), h.ua);
    assert!(
        crosses(&h.c, &h.s, "10.232.0.1:0", "10.232.0.2:7322"),
        "through the tunnel again"
    );
    stop(p);
    assert!(vpwn_rules(&h.c.name).is_empty());
    // `vpwn down` on the tunnel wireguard-go serves: it refuses `set=vpwn-down`, so it gets
    // SIGTERM (as wg-quick sends it) and its socket goes.
    let said = ok(&["vpwn", "down", &srv.name]);
    assert!(said.is_empty(), "{said}");
    assert!(!PathBuf::from(format!("/var/run/wireguard/{}.sock", srv.name)).exists());
    assert!(vpwn_table_routes(&h.c.name).is_empty());
}

/// Two full tunnels in one namespace, started at the same moment: each takes a table of
/// its own (51820, 51821) with rules at priorities of its own; the one stopped first takes
/// exactly its own rules with it (the other's identical `suppress_prefixlength 0` rule
/// stays), and a tunnel killed on a persistent device (which keeps its routes) is cleaned
/// up by the next `up` all the same.
#[test]
fn full_tunnels_side_by_side_remove_only_their_own() {
    let Some((_g, h, private, srv)) = client_and_server() else {
        return;
    };
    let endpoint = format!("{S4}:51820");
    let (a, b) = (common::unique("wga"), common::unique("wgb"));
    let conf = |addr: &str| {
        format!(
            "[Interface]\nPrivateKey = {}\nAddress = {addr}\n[Peer]\nPublicKey = {}\nEndpoint = {endpoint}\nAllowedIPs = 0.0.0.0/0\n",
            private.trim(),
            srv.public
        )
    };
    // Both at once.
    let (body_a, body_b) = (conf("10.232.0.1/24"), conf("10.234.0.1/24"));
    let (pa, pb) = std::thread::scope(|s| {
        let ta = s.spawn(|| client_up(&h, &a, &body_a));
        let tb = s.spawn(|| client_up(&h, &b, &body_b));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    let (pa, pb) = (pa.unwrap(), pb.unwrap());
    let ours = vpwn_rules(&h.c.name);
    let prefs: std::collections::BTreeSet<u64> =
        ours.iter().filter_map(|r| r["priority"].as_u64()).collect();
    assert_eq!(
        prefs,
        [31997, 31998, 31999, 32000].into_iter().collect(),
        "{ours:?}"
    );
    let tables: std::collections::BTreeSet<String> = ours
        .iter()
        .filter(|r| r["fwmark"].is_string())
        .map(|r| r["table"].to_string())
        .collect();
    assert_eq!(tables.len(), 2, "a table each: {ours:?}");
    // The first stops: the other's two rules stay, exactly.
    // Whichever rule set comes first routes; both are full tunnels. Stop that one.
    let (survivor, p) = if route_dev(&h.c.name, "10.99.0.1", None) == a {
        stop(pa);
        (b.clone(), pb)
    } else {
        stop(pb);
        (a.clone(), pa)
    };
    let left = vpwn_rules(&h.c.name);
    assert_eq!(left.len(), 2, "{left:?}");
    assert_eq!(
        route_dev(&h.c.name, "10.99.0.1", None),
        survivor,
        "the other tunnel still takes the traffic"
    );
    assert_eq!(route_dev(&h.c.name, R4C, None), h.ua, "local stays local");
    stop(p);
    assert!(vpwn_rules(&h.c.name).is_empty());

    // A persistent device keeps its routes when its tunnel is killed: still stale.
    let pers = common::unique("wgp");
    ok(&["-n", &h.c.name, "add", "--tun", &pers]);
    let mut p = client_up(&h, &pers, &conf("10.232.0.1/24")).unwrap();
    if let Some(mut c) = p.0.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = std::fs::remove_file(format!("/var/run/wireguard/{pers}.sock"));
    assert_eq!(vpwn_rules(&h.c.name).len(), 2);
    assert!(!vpwn_table_routes(&h.c.name).is_empty());
    let p = client_up(&h, &pers, &conf("10.232.0.1/24")).unwrap();
    assert_eq!(vpwn_rules(&h.c.name).len(), 2, "the stale ones replaced");
    assert!(crosses(&h.c, &h.s, "10.232.0.1:0", "10.232.0.2:7331"));
    stop(p);
    assert!(vpwn_rules(&h.c.name).is_empty());
    assert!(
        vpwn_table_routes(&h.c.name).is_empty(),
        "{:?}",
        vpwn_table_routes(&h.c.name)
    );
    ok(&["-n", &h.c.name, "del", &pers]);
}
