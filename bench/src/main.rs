//! `tunctl-bench`: the forwarders under test and the harness that measures them side by side.
//! See bench/README.md.
//!
//! - `tunctl-bench run [forward|tunnel|bridge|erlang|all] [--quick] [--json] [--reps N] [--seconds S]
//!   [--only a,b]`
//! - `tunctl-bench forward CONTENDER NS_A DEV_A NS_B DEV_B` (started by the harness)

mod bridge;
mod erlang;
mod harness;
mod ours;
mod tunnel;
mod tunrs;

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use tunctl::Namespace;

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
        Some("run") => harness::run(&args[1..]),
        Some("-h") | Some("--help") | None => {
            println!("usage: tunctl-bench run [forward|tunnel|bridge|erlang|all] [--quick] [--json] [--reps N] [--seconds S] [--only a,b]");
            for g in &harness::GROUPS {
                println!("{} contenders: {}", g.name, g.contenders.join(", "));
            }
            ExitCode::SUCCESS
        }
        Some(_) => harness::run(&args),
    }
}
