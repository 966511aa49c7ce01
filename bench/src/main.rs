//! `tunctl-bench`: the forwarders under test and the harness that measures them side by side.
//! See bench/README.md.
//!
//! - `tunctl-bench run [forward|tunnel|bridge|erlang|all] [--quick] [--json] [--reps N] [--seconds S]
//!   [--only a,b]`
//! - `tunctl-bench forward CONTENDER NS_A DEV_A NS_B DEV_B` (started by the harness)

mod bridge;
mod erlang;
mod forward;
mod harness;
mod ours;
mod tunnel;
mod tunrs;

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use tunctl::Namespace;

use harness::{run_name_owner, Group, Stale};

/// Every group, in the order `bench/run` (or `all`) runs them. The harness knows none of
/// them: each registers here, with the names its runs give what they leave behind.
pub(crate) const GROUPS: [Group; 4] = [
    Group {
        name: "forward",
        contenders: &forward::CONTENDERS,
        metrics: &forward::METRICS,
        measure: forward::measure_once,
        report: forward::report,
        section: forward::forward_section,
        // The two-namespace topology's names are the harness's own.
        owner: |_| None,
        sweep: |_| {},
    },
    Group {
        name: "tunnel",
        contenders: &tunnel::CONTENDERS,
        metrics: &tunnel::METRICS,
        measure: tunnel::measure_once,
        report: tunnel::report,
        section: tunnel::section,
        // tw<pid>n<run>a|b: namespaces, devices, UAPI sockets; tw<pid>n<run>: scratch.
        owner: |name| run_name_owner(name, "tw", &['a', 'b']),
        sweep: sweep_tunnel,
    },
    Group {
        name: "bridge",
        contenders: &bridge::CONTENDERS,
        metrics: &bridge::METRICS,
        measure: bridge::measure_once,
        report: bridge::report,
        section: bridge::section,
        // tg<pid>n<run>a|b|c|x: namespaces; tg<pid>n<run>.sock: control sockets.
        owner: |name| run_name_owner(name, bridge::PREFIX, &['a', 'b', 'c', 'x']),
        sweep: sweep_bridge,
    },
    Group {
        name: "erlang",
        contenders: &erlang::CONTENDERS,
        metrics: &erlang::METRICS,
        measure: erlang::measure_once,
        report: erlang::report,
        section: erlang::section,
        // Runs in the two-namespace topology.
        owner: |_| None,
        sweep: |_| {},
    },
];

/// Removes, with `remove`, each entry of `dir` (if it can be read) that `stale_entry` says,
/// from its name and path, is a stale leftover.
fn sweep_dir(
    dir: impl AsRef<Path>,
    stale_entry: impl Fn(&str, &Path) -> bool,
    remove: fn(PathBuf) -> io::Result<()>,
) {
    let Ok(dir) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let path = entry.path();
        if stale_entry(&name, &path) {
            let _ = remove(path);
        }
    }
}

/// A killed tunnel run's UAPI sockets and scratch directory.
fn sweep_tunnel(stale: Stale<'_>) {
    sweep_dir(
        tunnel::UAPI_DIR,
        |name, _| name.starts_with("tw") && name.ends_with(".sock") && stale(name),
        std::fs::remove_file,
    );
    sweep_dir(
        std::env::temp_dir(),
        |name, _| {
            name.strip_prefix(tunnel::SCRATCH_PREFIX)
                .is_some_and(|n| n.starts_with("tw") && stale(n))
        },
        std::fs::remove_dir_all,
    );
}

/// A `tunctl br` control socket nobody serves any more (the bridge gets SIGTERM when its
/// harness dies and removes its own; this is for one killed outright too), and a bridge
/// run's scratch directory.
fn sweep_bridge(stale: Stale<'_>) {
    sweep_dir(
        std::env::temp_dir(),
        |name, _| {
            name.strip_prefix(tunnel::SCRATCH_PREFIX)
                .is_some_and(|n| n.starts_with(bridge::PREFIX) && stale(n))
        },
        std::fs::remove_dir_all,
    );
    sweep_dir(
        bridge::CONTROL_DIR,
        |name, path| {
            name.starts_with(bridge::PREFIX)
                && name.ends_with(".sock")
                && stale(name)
                && std::os::unix::net::UnixStream::connect(path).is_err()
        },
        std::fs::remove_file,
    );
}

/// One side of a forwarder: an existing persistent tun device `dev` in namespace `ns`,
/// created and configured by the harness; the forwarder only attaches to it.
#[derive(Debug, Clone)]
pub struct Side {
    /// The namespace the device lives in.
    pub ns: Namespace,
    /// The device name.
    pub dev: String,
}

fn forward(args: &[String]) -> Result<(), String> {
    let [contender, ns_a, dev_a, ns_b, dev_b] = args else {
        return Err("usage: tunctl-bench forward CONTENDER NS_A DEV_A NS_B DEV_B".into());
    };
    let side = |ns: &str, dev: &str| -> Result<Side, String> {
        Ok(Side {
            ns: Namespace::named(ns).map_err(|e| e.to_string())?,
            dev: dev.to_string(),
        })
    };
    let (a, b) = (side(ns_a, dev_a)?, side(ns_b, dev_b)?);
    let never = AtomicBool::new(false);
    match contender.as_str() {
        "tun-rs" => tunrs::forward(&a, &b, false, &never),
        "tun-rs-offload" => tunrs::forward(&a, &b, true, &never),
        "tun-rs-async" => tunrs::forward_async(&a, &b),
        "tunctl" => ours::forward(&a, &b, ours::Mode::Passive),
        "tunctl-offload" => ours::forward(&a, &b, ours::Mode::Offload),
        "tunctl-active" => ours::forward(&a, &b, ours::Mode::Active),
        "tunctl-tokio" => ours::forward(&a, &b, ours::Mode::Tokio),
        "tunctl-mq2" => ours::forward(&a, &b, ours::Mode::MultiQueue),
        "tunctl-gro" => ours::forward(&a, &b, ours::Mode::Gro),
        "tunctl-uring" => ours::forward(&a, &b, ours::Mode::Uring),
        "tunctl-uring-offload" => ours::forward(&a, &b, ours::Mode::UringOffload),
        other => Err(format!("unknown forwarder {other:?}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("forward") => match forward(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tunctl-bench forward: {e}");
                ExitCode::FAILURE
            }
        },
        Some("run") => harness::run(&args[1..], &GROUPS),
        Some("-h") | Some("--help") | None => {
            println!("usage: tunctl-bench run [forward|tunnel|bridge|erlang|all] [--quick] [--json] [--reps N] [--seconds S] [--only a,b]");
            for g in &GROUPS {
                println!("{} contenders: {}", g.name, g.contenders.join(", "));
            }
            ExitCode::SUCCESS
        }
        Some(_) => harness::run(&args, &GROUPS),
    }
}
