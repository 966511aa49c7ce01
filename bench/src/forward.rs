//! The `forward` group: two tun devices, one in each of namespaces A and B, joined by the
//! contender (`kernel`: a veth pair, no forwarder); iperf3 from A to B; the forwarder's CPU
//! time and its system calls per packet.

use std::process::Child;

use crate::harness::{
    count_syscalls, figure_row, iperf_server, median_of, offloaded, report_head, report_tail,
    setup, spread, start_forwarder, traffic, tx_packets, Figure, Kill, Options, Sample, Topology,
    DEV,
};

/// The `forward` group's contenders, in report order and in the order each round of runs
/// takes them.
pub const CONTENDERS: [&str; 14] = [
    "kernel",
    "c",
    "c-offload",
    "tun-rs",
    "tun-rs-offload",
    "tun-rs-async",
    "tunctl",
    "tunctl-offload",
    "tunctl-gro",
    "tunctl-uring",
    "tunctl-uring-offload",
    "tunctl-active",
    "tunctl-tokio",
    "tunctl-mq2",
];

/// The throughput tests, then the system calls the forwarder makes per packet it reads,
/// under `tcp1`'s and `udp64`'s load ([`syscalls_per_packet`]).
pub const METRICS: [(&str, &str); 5] = [
    ("tcp1", "Gbit/s"),
    ("tcp4", "Gbit/s"),
    ("udp64", "kpps"),
    ("tcp1-sys", "syscalls/packet"),
    ("udp64-sys", "syscalls/packet"),
];

/// How long each system-call probe runs.
const PROBE_SECONDS: u32 = 2;

/// One run of `contender`: its own topology and forwarder, each metric measured once into
/// `figures` (one per metric, in `METRICS` order), everything removed again. A metric that
/// fails ends the run; the metrics measured before it keep their samples.
pub(crate) fn measure_once(
    contender: &str,
    opts: &Options,
    figures: &mut [Figure],
) -> Result<(), String> {
    let topo = setup(contender)?;
    let fwd = start_forwarder(contender, &topo.a, &topo.b, DEV)?;
    let pids: Vec<u32> = fwd.iter().map(Child::id).collect();
    let children = Kill(fwd.into_iter().collect());
    let server = iperf_server(&topo.b, "10.201.0.2")?;
    for ((metric, _), figure) in METRICS.iter().zip(figures.iter_mut()) {
        let sample = match metric.strip_suffix("-sys") {
            // The kernel path has no forwarder to count.
            Some(_) if pids.is_empty() => continue,
            Some(load) => Sample::plain(syscalls_per_packet(&topo, load, &pids)?),
            None => traffic(&topo.a, "10.201.0.2", metric, opts.seconds, &pids)?,
        };
        figure.push(sample);
    }
    drop(server);
    drop(children);
    drop(topo);
    Ok(())
}

/// System calls per packet the forwarder read from either device, under `load` (`tcp1` or
/// `udp64`) for [`PROBE_SECONDS`]: `raw_syscalls:sys_enter` events of every thread of the
/// forwarder (perf stat) over the packets both tun devices handed to userspace (their
/// `tx_packets`; a GSO super-packet counts once). The `kernel` contender has no forwarder.
fn syscalls_per_packet(topo: &Topology, load: &str, pids: &[u32]) -> Result<f64, String> {
    let Some(&pid) = pids.first() else {
        return Err("no forwarder process to count system calls of".into());
    };
    let read = || -> Result<u64, String> {
        [&topo.a, &topo.b]
            .into_iter()
            .map(|ns| tx_packets(ns, DEV))
            .sum()
    };
    let before = read()?;
    let (calls, _) = count_syscalls(pid, || {
        traffic(&topo.a, "10.201.0.2", load, PROBE_SECONDS, pids)
    })?;
    let packets = read()? - before;
    if packets == 0 {
        return Err(format!("{load}: no packet crossed during the probe"));
    }
    Ok(calls as f64 / packets as f64)
}

/// The contender a figure is compared with: the C forwarder and tun-rs of the same class
/// (plain, offload or async); the kernel path against both plain ones. C has no async
/// forwarder, so the async class is compared with plain C.
pub(crate) fn baseline(contender: &str, peer: &str) -> String {
    if offloaded(contender) {
        format!("{peer}-offload")
    } else if peer == "tun-rs" && asynchronous(contender) {
        "tun-rs-async".to_string()
    } else {
        peer.to_string()
    }
}

/// The async class: tokio forwarders, compared with each other.
fn asynchronous(contender: &str) -> bool {
    matches!(contender, "tunctl-tokio" | "tun-rs-async")
}

/// The Markdown report: one row per figure with its min/median/max (value, forwarder CPU,
/// TCP retransmits) and the ratios of its median to the baselines' medians.
pub(crate) fn report(figures: &[Figure], failures: &[String], opts: &Options) -> String {
    let mut out = report_head(opts, &["vs C", "vs tun-rs"]);
    for f in figures {
        let v = spread(&f.values);
        let ratio = |peer: &str| match (
            v,
            median_of(figures, &baseline(f.contender, peer), f.metric, false),
        ) {
            (Some(v), Some(b)) if b > 0.0 => format!("{:.2}×", v.median / b),
            _ => "–".into(),
        };
        // System calls per packet need more than two decimals (0.03 against 2.00).
        let digits = if f.metric.ends_with("-sys") { 3 } else { 2 };
        out.push_str(&figure_row(f, digits, &[ratio("c"), ratio("tun-rs")]));
    }
    out.push_str(&report_tail(
        opts,
        failures,
        " (every contender's first run, then every contender's second, ...) so that the \
         machine's drift falls on all of them alike. `runs` counts the runs that produced the \
         figure; min, median and max are over those runs (the median of an even count is the \
         mean of the middle two). `vs C` and `vs tun-rs` are ratios of medians, against the \
         contender of the same class: plain, offload, or async (`tunctl-tokio` against \
         `tun-rs-async`; C has no async forwarder, so async contenders are compared with plain \
         `c`).",
    ));
    out
}

/// The `forward` section of BENCHMARKS.md around its `table`, measured `on` (machine and date).
pub(crate) fn forward_section(on: &str, table: &str) -> String {
    format!(
        "## forward: namespace A ⇄ forwarder ⇄ namespace B\n\nProduced by `bench/run forward` (see bench/README.md) on {on}.\n\nTwo tun devices, one in each namespace, joined by the contender (`kernel`: a veth pair, no forwarder). iperf3 from A to B: `tcp1` one TCP stream, `tcp4` four, `udp64` 64-byte UDP datagrams (thousands received per second). MTU 1500. `tcp1-sys` and `udp64-sys`: system calls the forwarder makes per packet it reads (perf stat's `raw_syscalls:sys_enter` of every forwarder thread over both tun devices' `tx_packets`, under 2 s of `tcp1` or `udp64` load). On a 2-core machine iperf3's client and server and the forwarder share the cores: runs of the same contender differ by up to about 25%, so the runs are interleaved across contenders, each figure is given as min / median / max, and ratios (of medians) are to be compared within one run.\n\n{table}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_by_class() {
        assert_eq!(baseline("tunctl", "c"), "c");
        assert_eq!(baseline("tunctl-gro", "tun-rs"), "tun-rs-offload");
        assert_eq!(baseline("tunctl-tokio", "tun-rs"), "tun-rs-async");
        assert_eq!(baseline("tunctl-tokio", "c"), "c");
        assert_eq!(baseline("tun-rs-async", "tun-rs"), "tun-rs-async");
        assert!(!offloaded("tun-rs-async"));
    }

    #[test]
    fn report_marks_smoke_runs_and_has_spread_columns() {
        let mut f = Figure::new("c", "tcp1", "Gbit/s");
        for v in [1.0, 3.0, 2.0] {
            f.push(Sample {
                value: v,
                cpu: Some(v * 10.0),
                retransmits: Some(5),
            });
        }
        let full = crate::harness::parse_for_tests(&[]);
        let r = report(std::slice::from_ref(&f), &[], &full);
        assert!(!r.contains("SMOKE"));
        assert!(r.contains("| min | median | max |"));
        assert!(r.contains("| c | tcp1 (Gbit/s) | 3 | 1.00 | 2.00 | 3.00 | 1.00× | – | 10% | 20% | 30% | 5 | 5 | 5 |"));
        let quick = crate::harness::parse_for_tests(&["--quick"]);
        assert!(report(&[f], &[], &quick).starts_with("> **SMOKE RUN, NOT A VERDICT"));
    }
}
