//! A device given to another user is hardened before that user can hold it: router
//! advertisements the user writes into it change nothing in the namespace. With
//! `--no-harden` the same advertisement installs a default route, an on-link /64 and an
//! address: the control that shows the injection is real.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use super::common::{self, inject_as, ipv6_routes_and_addrs, router_advertisement};
use super::ok;

const USER: &str = "tunctl-test";

/// What the namespace learned on `dev` from one router advertisement for `prefix::/64`,
/// written by USER (who holds the device meanwhile): routes and global addresses, after
/// waiting up to 3 s for them (or 1.5 s when none are expected).
fn advertise(ns: &str, dev: &str, prefix: &str, expect: bool) -> (Vec<String>, Vec<String>) {
    let ra = router_advertisement(prefix.parse().unwrap());
    let mut child = inject_as(USER, ns, dev, 4000, &[ra]);
    let deadline = Instant::now() + Duration::from_millis(if expect { 3000 } else { 1500 });
    let mut seen = ipv6_routes_and_addrs(ns, dev);
    while Instant::now() < deadline {
        seen = ipv6_routes_and_addrs(ns, dev);
        let learned = seen.0.iter().any(|r| r == "default") && !seen.1.is_empty();
        if expect && learned {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 packet(s) written"),
        "inject as {USER}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    seen
}

fn sysctl(ns: &str, key: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "cat"])
        .arg(format!("/proc/sys/net/{key}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_device_given_to_a_user_ignores_the_router_advertisements_it_writes() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    common::system_user(USER);
    let mode = std::fs::metadata("/dev/net/tun")
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        mode, 0o666,
        "/dev/net/tun must be 0666 for users (CI sets it)"
    );
    common::ip_ok(&t.name, &["link", "set", "lo", "up"]);

    // The control: not hardened, the advertisement takes effect.
    let open = common::unique("ow");
    ok(&[
        "-n",
        &t.name,
        "add",
        &open,
        "--tun",
        "--owner",
        USER,
        "--mtu",
        "1400",
        "--up",
        "--no-harden",
    ]);
    assert_eq!(sysctl(&t.name, &format!("ipv6/conf/{open}/accept_ra")), "1");
    let (routes, addrs) = advertise(&t.name, &open, "2001:db8:51::", true);
    assert!(
        routes.iter().any(|r| r == "default") && routes.iter().any(|r| r == "2001:db8:51::/64"),
        "the control: a default route and the prefix from the advertisement, got {routes:?}"
    );
    assert!(
        addrs.iter().any(|a| a.starts_with("2001:db8:51:")),
        "the control: an address from the prefix, got {addrs:?}"
    );
    ok(&["-n", &t.name, "del", &open]);

    // `add --owner`: hardened by default.
    let owned = common::unique("ow");
    ok(&[
        "-n", &t.name, "add", &owned, "--tun", "--owner", USER, "--mtu", "1400", "--up",
    ]);
    for (key, want) in [
        ("ipv6/conf/{}/accept_ra", "0"),
        ("ipv6/conf/{}/autoconf", "0"),
        ("ipv6/conf/{}/accept_redirects", "0"),
        ("ipv4/conf/{}/rp_filter", "1"),
        ("ipv4/conf/{}/accept_redirects", "0"),
        ("ipv4/conf/{}/accept_source_route", "0"),
    ] {
        assert_eq!(sysctl(&t.name, &key.replace("{}", &owned)), want, "{key}");
    }
    let (routes, addrs) = advertise(&t.name, &owned, "2001:db8:52::", false);
    assert!(
        !routes
            .iter()
            .any(|r| r == "default" || r.starts_with("2001:db8:52:")),
        "nothing routed by the owner's advertisement: {routes:?}"
    );
    assert!(addrs.is_empty(), "no address from it: {addrs:?}");
    ok(&["-n", &t.name, "del", &owned]);

    // `set --owner` on a root's device: hardened before the new owner can attach.
    let handed = common::unique("ow");
    ok(&[
        "-n", &t.name, "add", &handed, "--tun", "--mtu", "1400", "--up",
    ]);
    assert_eq!(
        sysctl(&t.name, &format!("ipv6/conf/{handed}/accept_ra")),
        "1"
    );
    ok(&["-n", &t.name, "set", &handed, "--owner", USER]);
    let (routes, addrs) = advertise(&t.name, &handed, "2001:db8:53::", false);
    assert!(
        !routes
            .iter()
            .any(|r| r == "default" || r.starts_with("2001:db8:53:")),
        "{routes:?}"
    );
    assert!(addrs.is_empty(), "{addrs:?}");
    ok(&["-n", &t.name, "del", &handed]);
}
