//! The `erlang` group: one Erlang forwarder (`bench/erlang/erl_forward.erl`, written once
//! against the `tuncer` API) run on the Erlang original (`erl-original`: tunctl and procket
//! from `../shared/peers`, built offline by `bench/run`) and on ours (`erl-tunctl`, and
//! `erl-tunctl-offload` with vnet_hdr and TSO, super-packets crossing whole). The topology is
//! the `forward` group's: namespaces A and B, a persistent tun `fwd0` in each (vnet_hdr for
//! the offload contender), iperf3 from A to B; the forwarder is a BEAM that attaches to both
//! in active mode and sends each packet out of the other. The CPU figure is the BEAM's.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tunctl::{Link, Namespace};

use crate::harness::{
    bench_dir, cell, die_with_harness, figure_row, interrupted, iperf_server, median_of,
    report_head, report_tail, setup, traffic, verdict, Figure, Kill, Options,
};

/// The contenders, in report order and in the order each round takes them.
pub const CONTENDERS: [&str; 3] = ["erl-original", "erl-tunctl", "erl-tunctl-offload"];

/// (metric, unit), in report order.
pub const METRICS: [(&str, &str); 2] = [("tcp1", "Gbit/s"), ("udp64", "kpps")];

/// The targets of issue 17: (metric, ours, at least this ratio of medians to the original).
const TARGETS: [(&str, &str, f64); 3] = [
    ("tcp1", "erl-tunctl", 5.0),
    ("udp64", "erl-tunctl", 5.0),
    ("tcp1", "erl-tunctl-offload", 20.0),
];

/// Code paths for `erl -pa`: the forwarder and the contender's application.
fn code_paths(contender: &str) -> Vec<PathBuf> {
    let t = bench_dir().join("target");
    let mut paths = vec![t.join("erl-forward")];
    if contender == "erl-original" {
        let b = t.join("erl-original/tunctl/_build/default");
        paths.push(b.join("lib/tunctl/ebin"));
        paths.push(b.join("checkouts/procket/ebin"));
    } else {
        paths.push(t.join("erl-tunctl/default/lib/tunctl/ebin"));
    }
    paths
}

/// Starts the forwarder between `fwd0` in namespaces `a` and `b` and waits (at most 20 s)
/// until it has attached to both (carrier on both devices).
fn start(contender: &str, a: &str, b: &str) -> Result<Child, String> {
    let paths = code_paths(contender);
    if let Some(missing) = paths.iter().find(|p| !p.is_dir()) {
        return Err(format!(
            "{contender}: {} is missing (bench/run builds it)",
            missing.display()
        ));
    }
    let mut cmd = Command::new("erl");
    cmd.arg("-noshell").arg("-pa").args(&paths).args([
        "-s",
        "erl_forward",
        "main",
        &format!("/var/run/netns/{a}"),
        "fwd0",
        &format!("/var/run/netns/{b}"),
        "fwd0",
    ]);
    if contender == "erl-tunctl-offload" {
        cmd.arg("offload");
    }
    cmd.current_dir(bench_dir().join("target"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    die_with_harness(&mut cmd);
    let mut child = Kill(vec![cmd
        .spawn()
        .map_err(|e| format!("start {contender}: {e}"))?]);
    // "ready" once both are created; carrier once both queues are attached.
    let stdout = child.0[0].stdout.take().ok_or("no stdout")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("erl_forward: {line}");
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let carrier = |ns: &str| {
        Namespace::named(ns)
            .and_then(|ns| Link::by_name(&ns, "fwd0"))
            .and_then(|l| l.info())
            .is_ok_and(|i| i.carrier == Some(true))
    };
    while !(carrier(a) && carrier(b)) {
        if let Ok(Some(status)) = child.0[0].try_wait() {
            return Err(format!(
                "{contender}: the BEAM exited ({status}) before attaching"
            ));
        }
        if interrupted() {
            return Err("interrupted".into());
        }
        if Instant::now() > deadline {
            return Err(format!("{contender}: did not attach within 20 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.0.pop().ok_or_else(|| "no forwarder".to_string())
}

/// One run of `contender`: fresh namespaces and devices, the forwarder, tcp1 and udp64 with
/// the BEAM's CPU, everything removed.
pub fn measure_once(contender: &str, opts: &Options, figures: &mut [Figure]) -> Result<(), String> {
    // The forward group's topology; vnet_hdr devices for the offload contender.
    let topo = setup(contender)?;
    let fwd = start(contender, &topo.a, &topo.b)?;
    let pids = [fwd.id()];
    let mut children = Kill(vec![fwd]);
    let server = iperf_server(&topo.b, "10.201.0.2")?;
    for ((metric, _), figure) in METRICS.iter().zip(figures.iter_mut()) {
        let sample = traffic(&topo.a, "10.201.0.2", metric, opts.seconds, &pids)?;
        if let Ok(Some(status)) = children.0[0].try_wait() {
            return Err(format!(
                "{contender}: the BEAM exited ({status}) during {metric}"
            ));
        }
        figure.push(sample);
    }
    drop(server);
    drop(children);
    drop(topo);
    Ok(())
}

/// The table (min/median/max, ours over the original, the BEAM's CPU, retransmits) and the
/// targets.
pub fn report(figures: &[Figure], failures: &[String], opts: &Options) -> String {
    let over_original = |c: &str, m: &str| match (
        median_of(figures, c, m, false),
        median_of(figures, "erl-original", m, false),
    ) {
        (Some(v), Some(b)) if b > 0.0 => Some(v / b),
        _ => None,
    };
    let mut out = report_head(opts, &["÷ erl-original"]);
    for f in figures {
        let ratio = cell(over_original(f.contender, f.metric), 1, "×");
        out.push_str(&figure_row(f, 3, &[ratio]));
    }
    if figures.iter().any(|f| f.contender == "erl-original") {
        out.push_str(&format!(
            "\nTargets (ratios of medians to `erl-original`){}:\n\n| target | ratio | |\n|---|---|---|\n",
            if opts.smoke() { " (a smoke run: no verdict)" } else { "" }
        ));
        for (m, c, at_least) in TARGETS {
            let q = over_original(c, m);
            out.push_str(&format!(
                "| {c} {m} ≥ {at_least:.0}× erl-original | {} | {} |\n",
                cell(q, 1, "×"),
                verdict(q, at_least, opts)
            ));
        }
    }
    out.push_str(&report_tail(
        opts,
        failures,
        ". `÷ erl-original` is the contender's median over the original's. CPU is the \
         forwarder BEAM's (all its threads: schedulers, and for ours the NIF's reader threads) \
         over the test's duration, 100% = one core. Retransmits are the iperf3 sender's.",
    ));
    out
}

/// The `erlang` section of BENCHMARKS.md around its `table`, measured `on`.
pub fn section(on: &str, table: &str) -> String {
    format!(
        "## erlang: one Erlang forwarder, on the original and on ours\n\n\
         Produced by `bench/run erlang` (see bench/README.md) on {on}.\n\n{INTRO}\n\n{table}"
    )
}

/// What the group measures, for BENCHMARKS.md.
pub const INTRO: &str = "The `forward` group's topology (namespaces A and B, a tun `fwd0` \
in each, 10.201.0.1 ⇄ 10.201.0.2, MTU 1500), forwarded by one Erlang program, \
`bench/erlang/erl_forward.erl`: both devices opened with `tuncer:create(Dev, [tun, no_pi, \
{active, true}, {namespace, Path}])`, each `{tuntap, Dev, Packet}` sent out of the other with \
`tuncer:send/2`. The same module runs on the Erlang original (`erl-original`: tunctl c273c00 \
and procket from `../shared/peers`, built offline; its active mode is an Erlang port) and on \
ours (`erl-tunctl`; `erl-tunctl-offload` opens vnet_hdr devices with `{offload, [csum, tso4, \
tso6]}`, so TCP crosses as 64 KiB super-packets). iperf3 from A to B: `tcp1` one TCP stream \
(Gbit/s received), `udp64` 64-byte datagrams (thousands received per second). Targets: ours \
≥ 5× the original on tcp1 and udp64, ≥ 20× with offload on tcp1.";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::Sample;

    #[test]
    fn report_has_ratios_and_targets() {
        let mut figures = Vec::new();
        for (c, v) in [
            ("erl-original", 0.1),
            ("erl-tunctl", 1.0),
            ("erl-tunctl-offload", 1.5),
        ] {
            for (m, u) in METRICS {
                let mut f = Figure::new(c, m, u);
                f.push(Sample {
                    value: v,
                    cpu: Some(100.0),
                    retransmits: None,
                });
                figures.push(f);
            }
        }
        let opts = Options {
            quick: false,
            json: false,
            reps: 3,
            seconds: 5,
            only: Vec::new(),
            groups: vec!["erlang"],
        };
        let r = report(&figures, &[], &opts);
        assert!(r.contains("| erl-tunctl | tcp1 (Gbit/s) | 1 |"), "{r}");
        assert!(r.contains("10.0×"), "{r}");
        assert!(
            r.contains("| erl-tunctl tcp1 ≥ 5× erl-original | 10.0× | met |"),
            "{r}"
        );
        assert!(
            r.contains("| erl-tunctl-offload tcp1 ≥ 20× erl-original | 15.0× | missed |"),
            "{r}"
        );
    }
}
