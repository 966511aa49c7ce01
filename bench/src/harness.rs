//! The harness: namespaces A and B, a forwarder (or a veth pair) between them, iperf3 from A
//! to B, the forwarder's CPU time; repeats interleaved round-robin across contenders;
//! min/median/max of each figure, ratios of medians, BENCHMARKS.md.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tunctl::{Address, Device, Link, Namespace};

const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
const DEV: &str = "fwd0";

/// Every contender, in report order and in the order each round of runs takes them.
pub const CONTENDERS: [&str; 12] = [
    "kernel",
    "c",
    "c-offload",
    "tun-rs",
    "tun-rs-offload",
    "tun-rs-async",
    "tunctl",
    "tunctl-offload",
    "tunctl-gro",
    "tunctl-active",
    "tunctl-tokio",
    "tunctl-mq2",
];

const METRICS: [(&str, &str); 3] = [("tcp1", "Gbit/s"), ("tcp4", "Gbit/s"), ("udp64", "kpps")];

/// Default runs per contender: at least 3, so that a median and a spread mean something.
const DEFAULT_REPS: usize = 3;
const DEFAULT_SECONDS: u32 = 5;
/// `--quick`: one short run per contender, a smoke run.
const QUICK_REPS: usize = 1;
const QUICK_SECONDS: u32 = 2;

/// What a smoke run's output says about itself (stderr at the start, the report's head).
const SMOKE_WARNING: &str = "SMOKE RUN, NOT A VERDICT: it only shows that each contender \
runs. Too few or too short runs: on a 2-core machine such runs swing by up to 35% (plain \
forwarding read 0.64x C in one --quick run and 1.04x in a 3-run one). For figures to \
compare, run without --quick, with 3 or more runs (the default).";

struct Options {
    quick: bool,
    json: bool,
    reps: usize,
    seconds: u32,
    only: Vec<String>,
}

impl Options {
    /// `--quick`, or fewer than 3 runs per contender: good for checking that everything runs,
    /// not for comparing.
    fn smoke(&self) -> bool {
        self.quick || self.reps < DEFAULT_REPS
    }
}

/// One run's measurement of one figure.
struct Sample {
    value: f64,
    cpu: Option<f64>,
    retransmits: Option<u64>,
}

/// One figure (a contender's metric) and its samples, one per run, in run order.
struct Figure {
    contender: &'static str,
    metric: &'static str,
    unit: &'static str,
    values: Vec<f64>,
    cpus: Vec<f64>,
    retransmits: Vec<f64>,
}

impl Figure {
    fn new(contender: &'static str, metric: &'static str, unit: &'static str) -> Self {
        Figure {
            contender,
            metric,
            unit,
            values: Vec::new(),
            cpus: Vec::new(),
            retransmits: Vec::new(),
        }
    }

    fn push(&mut self, s: Sample) {
        self.values.push(s.value);
        self.cpus.extend(s.cpu);
        self.retransmits.extend(s.retransmits.map(|n| n as f64));
    }
}

/// Minimum, median and maximum of one figure's samples.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Spread {
    min: f64,
    median: f64,
    max: f64,
}

/// The spread of `samples`; `None` if there are none. The median of an even count is the
/// mean of the middle two.
fn spread(samples: &[f64]) -> Option<Spread> {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = match n {
        0 => return None,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    Some(Spread {
        min: v[0],
        median,
        max: v[n - 1],
    })
}

/// Namespaces of one contender's run, deleted on drop.
struct Topology {
    a: String,
    b: String,
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Namespace::delete(&self.a);
        let _ = Namespace::delete(&self.b);
    }
}

/// Children killed on drop.
struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Offload contenders: `tunctl-offload` passes super-packets through like `c-offload`;
/// `tunctl-gro` splits and coalesces them like `tun-rs-offload`.
fn offloaded(contender: &str) -> bool {
    contender.ends_with("offload") || contender == "tunctl-gro"
}

fn setup(contender: &str) -> Result<Topology, String> {
    let pid = std::process::id();
    let topo = Topology {
        a: format!("tb{pid}a"),
        b: format!("tb{pid}b"),
    };
    // Kept: the topology's own cleanup deletes them.
    let na = Namespace::create(&topo.a).map_err(|e| e.to_string())?.keep();
    let nb = Namespace::create(&topo.b).map_err(|e| e.to_string())?.keep();
    for ns in [&na, &nb] {
        Link::by_name(ns, "lo")
            .and_then(|l| l.up())
            .map_err(|e| e.to_string())?;
    }
    if contender == "kernel" {
        // The reference path: a veth pair, the kernel forwarding nothing in userspace.
        run_ok(Command::new("ip").args([
            "-n", &topo.a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns",
            &topo.b,
        ]))?;
        for (ns, dev, local, peer) in [(&na, "va", ADDR_A, ADDR_B), (&nb, "vb", ADDR_B, ADDR_A)] {
            let link = Link::by_name(ns, dev).map_err(|e| e.to_string())?;
            p2p(&link, local, peer)?;
        }
        return Ok(topo);
    }
    for (ns, local, peer) in [(&na, ADDR_A, ADDR_B), (&nb, ADDR_B, ADDR_A)] {
        let mut b = Device::builder().tun().name(DEV).namespace(ns.clone());
        if offloaded(contender) {
            b = b.vnet_hdr(true);
        }
        if contender == "tunctl-mq2" {
            b = b.multi_queue(1);
        }
        let dev = b.create().map_err(|e| e.to_string())?;
        dev.set_persist(true).map_err(|e| e.to_string())?;
        p2p(dev.link().map_err(|e| e.to_string())?, local, peer)?;
    }
    Ok(topo)
}

fn p2p(link: &Link, local: Ipv4Addr, peer: Ipv4Addr) -> Result<(), String> {
    link.add(&Address::point_to_point(local.into(), peer.into()))
        .and_then(|_| link.up())
        .map_err(|e| e.to_string())
}

fn run_ok(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn start_forwarder(contender: &str, topo: &Topology) -> Result<Option<Child>, String> {
    let mut cmd = match contender {
        "kernel" => return Ok(None),
        "c" | "c-offload" => {
            let mut c = Command::new(bench_dir().join("target/forward-c"));
            if contender == "c-offload" {
                c.arg("--vnet");
            }
            c
        }
        _ => {
            let mut c = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
            c.args(["forward", contender]);
            c
        }
    };
    cmd.args([&topo.a, DEV, &topo.b, DEV])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // Killed unless it attaches: a stray forwarder must not outlive its run and load the next.
    let mut child = Kill(vec![cmd
        .spawn()
        .map_err(|e| format!("start {contender}: {e}"))?]);
    // Attached once both devices have carrier (the kernel's own sign of an open queue).
    let deadline = Instant::now() + Duration::from_secs(10);
    let carrier = |ns: &str| {
        Namespace::named(ns)
            .and_then(|ns| Link::by_name(&ns, DEV))
            .and_then(|l| l.info())
            .map(|i| i.carrier == Some(true))
            .unwrap_or(false)
    };
    while !(carrier(&topo.a) && carrier(&topo.b)) {
        if let Ok(Some(status)) = child.0[0].try_wait() {
            return Err(format!(
                "{contender}: forwarder exited ({status}) before attaching"
            ));
        }
        if Instant::now() > deadline {
            return Err(format!("{contender}: forwarder did not attach within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child.0.pop())
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks / hz)
}

fn iperf(topo: &Topology, metric: &str, seconds: u32) -> Result<Value, String> {
    let secs = seconds.to_string();
    let mut args = vec![
        "netns",
        "exec",
        &topo.a,
        "iperf3",
        "-c",
        "10.201.0.2",
        "-p",
        "5201",
        "-J",
        "-t",
        &secs,
    ];
    match metric {
        "tcp4" => args.extend(["-P", "4"]),
        "udp64" => args.extend(["-u", "-b", "0", "-l", "64"]),
        _ => {}
    }
    let mut last = String::new();
    for _ in 0..5 {
        let out = Command::new("ip")
            .args(&args)
            .output()
            .map_err(|e| format!("iperf3: {e}"))?;
        if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
            if v.get("error").is_none() {
                return Ok(v);
            }
            last = v["error"].to_string();
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err(format!("iperf3 {metric}: {last}"))
}

/// One run of `contender`: its own topology and forwarder, each metric measured once into
/// `figures` (one per metric, in `METRICS` order), everything removed again. A metric that
/// fails ends the run; the metrics measured before it keep their samples.
fn measure_once(contender: &str, opts: &Options, figures: &mut [Figure]) -> Result<(), String> {
    let topo = setup(contender)?;
    let fwd = start_forwarder(contender, &topo)?;
    let pid = fwd.as_ref().map(Child::id);
    let mut children = Kill(fwd.into_iter().collect());
    let server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.b,
            "iperf3",
            "-s",
            "-p",
            "5201",
            "-B",
            "10.201.0.2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("iperf3 server: {e}"))?;
    children.0.push(server);
    std::thread::sleep(Duration::from_millis(300));
    for ((metric, _), figure) in METRICS.iter().zip(figures.iter_mut()) {
        let cpu0 = pid.and_then(cpu_seconds);
        let v = iperf(&topo, metric, opts.seconds)?;
        let cpu1 = pid.and_then(cpu_seconds);
        let mut retransmits = None;
        let (value, seconds) = if *metric == "udp64" {
            // The receiver's own count where iperf3 reports it, else sent minus lost.
            let s = if v["end"]["sum_received"].is_object() {
                &v["end"]["sum_received"]
            } else {
                &v["end"]["sum"]
            };
            let packets =
                s["packets"].as_f64().unwrap_or(0.0) - s["lost_packets"].as_f64().unwrap_or(0.0);
            let secs = s["seconds"]
                .as_f64()
                .filter(|s| *s > 0.0)
                .ok_or("iperf3 reported no duration")?;
            (packets / secs / 1e3, secs)
        } else {
            let r = &v["end"]["sum_received"];
            let secs = r["seconds"]
                .as_f64()
                .filter(|s| *s > 0.0)
                .ok_or("iperf3 reported no duration")?;
            retransmits = v["end"]["sum_sent"]["retransmits"].as_u64();
            (r["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9, secs)
        };
        figure.push(Sample {
            value,
            // CPU over the test's own duration, not iperf3's start-up.
            cpu: cpu0.zip(cpu1).map(|(a, b)| (b - a) / seconds * 100.0),
            retransmits,
        });
    }
    drop(children);
    drop(topo);
    Ok(())
}

/// The contender a figure is compared with: the C forwarder and tun-rs of the same class
/// (plain, offload or async); the kernel path against both plain ones. C has no async
/// forwarder, so the async class is compared with plain C.
fn baseline(contender: &str, peer: &str) -> String {
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

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

/// `x` with `digits` decimals followed by `suffix`, or "–".
fn cell(x: Option<f64>, digits: usize, suffix: &str) -> String {
    x.map(|x| format!("{x:.digits$}{suffix}"))
        .unwrap_or_else(|| "–".into())
}

/// The Markdown report: one row per figure with its min/median/max (value, forwarder CPU,
/// TCP retransmits) and the ratios of its median to the baselines' medians.
fn report(figures: &[Figure], failures: &[String], opts: &Options) -> String {
    let median = |c: &str, m: &str| {
        figures
            .iter()
            .find(|f| f.contender == c && f.metric == m)
            .and_then(|f| spread(&f.values))
            .map(|s| s.median)
    };
    let mut out = String::new();
    if opts.smoke() {
        out.push_str(&format!("> **{SMOKE_WARNING}**\n\n"));
    }
    out.push_str(
        "| contender | metric | runs | min | median | max | vs C | vs tun-rs \
         | CPU min | CPU median | CPU max | retr. min | retr. median | retr. max |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for f in figures {
        let (v, cpu, retr) = (spread(&f.values), spread(&f.cpus), spread(&f.retransmits));
        let ratio = |peer: &str| match (v, median(&baseline(f.contender, peer), f.metric)) {
            (Some(v), Some(b)) if b > 0.0 => format!("{:.2}×", v.median / b),
            _ => "–".into(),
        };
        out.push_str(&format!(
            "| {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            f.contender,
            f.metric,
            f.unit,
            f.values.len(),
            cell(v.map(|s| s.min), 2, ""),
            cell(v.map(|s| s.median), 2, ""),
            cell(v.map(|s| s.max), 2, ""),
            ratio("c"),
            ratio("tun-rs"),
            cell(cpu.map(|s| s.min), 0, "%"),
            cell(cpu.map(|s| s.median), 0, "%"),
            cell(cpu.map(|s| s.max), 0, "%"),
            cell(retr.map(|s| s.min), 0, ""),
            cell(retr.map(|s| s.median), 0, ""),
            cell(retr.map(|s| s.max), 0, ""),
        ));
    }
    out.push_str(&format!(
        "\n{} run{} of {} s per contender, interleaved round-robin (every contender's first run, \
         then every contender's second, ...) so that the machine's drift falls on all of them \
         alike. `runs` counts the runs that produced the figure; min, median and max are over \
         those runs (the median of an even count is the mean of the middle two). `vs C` and \
         `vs tun-rs` are ratios of medians, against the contender of the same class: plain, \
         offload, or async (`tunctl-tokio` against `tun-rs-async`; C has no async forwarder, \
         so async contenders are compared with plain `c`).\n",
        opts.reps,
        if opts.reps == 1 { "" } else { "s" },
        opts.seconds
    ));
    if !failures.is_empty() {
        out.push_str("\nFailed runs:\n\n");
        for f in failures {
            out.push_str(&format!("- {f}\n"));
        }
    }
    if opts.smoke() {
        out.push_str(&format!("\n**{SMOKE_WARNING}**\n"));
    }
    out
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut opts = Options {
        quick: false,
        json: false,
        reps: DEFAULT_REPS,
        seconds: DEFAULT_SECONDS,
        only: Vec::new(),
    };
    // An explicit --reps or --seconds wins over --quick's, in any order.
    let (mut reps, mut seconds) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "forward" | "all" => {}
            "--quick" => opts.quick = true,
            "--json" => opts.json = true,
            "--reps" => {
                reps = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| (1..=9).contains(n))
                    .map(Some)
                    .ok_or("--reps takes 1 to 9")?
            }
            "--seconds" => {
                seconds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| (1..=60).contains(n))
                    .map(Some)
                    .ok_or("--seconds takes 1 to 60")?
            }
            "--only" => {
                opts.only = it
                    .next()
                    .ok_or("--only takes a comma-separated list")?
                    .split(',')
                    .map(str::to_string)
                    .collect()
            }
            other => return Err(format!("unknown argument {other:?}; see bench/README.md")),
        }
    }
    if opts.quick {
        opts.reps = QUICK_REPS;
        opts.seconds = QUICK_SECONDS;
    }
    opts.reps = reps.unwrap_or(opts.reps);
    opts.seconds = seconds.unwrap_or(opts.seconds);
    if let Some(bad) = opts.only.iter().find(|c| !CONTENDERS.contains(&c.as_str())) {
        return Err(format!(
            "unknown contender {bad:?}; one of {}",
            CONTENDERS.join(", ")
        ));
    }
    Ok(opts)
}

/// `tunctl-bench run [forward|all] [--quick] [--json] [--reps N] [--seconds S] [--only a,b]`.
pub fn run(args: &[String]) -> ExitCode {
    let opts = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tunctl-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let selected: Vec<&'static str> = CONTENDERS
        .into_iter()
        .filter(|c| opts.only.is_empty() || opts.only.iter().any(|o| o == c))
        .collect();
    if opts.smoke() {
        eprintln!("tunctl-bench: {SMOKE_WARNING}");
    }
    // One figure per contender and metric, in report order; figures[i * M + j] is contender
    // i's metric j.
    let mut figures: Vec<Figure> = selected
        .iter()
        .flat_map(|&c| METRICS.iter().map(move |&(m, u)| Figure::new(c, m, u)))
        .collect();
    let mut failures = Vec::new();
    // Round-robin: run r of every contender before run r + 1 of any, so that the machine's
    // drift (other load, clocks, caches) falls on all of them alike.
    for rep in 1..=opts.reps {
        eprintln!(
            "tunctl-bench: run {rep}/{}, order: {}",
            opts.reps,
            selected.join(" ")
        );
        for (i, &contender) in selected.iter().enumerate() {
            let mine = &mut figures[i * METRICS.len()..(i + 1) * METRICS.len()];
            let before: Vec<usize> = mine.iter().map(|f| f.values.len()).collect();
            let result = measure_once(contender, &opts, mine);
            let got: Vec<String> = mine
                .iter()
                .zip(before)
                .filter(|(f, n)| f.values.len() > *n)
                .map(|(f, _)| {
                    let cpu = f.cpus.last().filter(|_| f.cpus.len() == f.values.len());
                    format!(
                        "{} {:.2} {}{}",
                        f.metric,
                        f.values.last().copied().unwrap_or(0.0),
                        f.unit,
                        cpu.map(|c| format!(" ({c:.0}% CPU)")).unwrap_or_default()
                    )
                })
                .collect();
            eprintln!(
                "tunctl-bench: run {rep}/{} {contender}: {}",
                opts.reps,
                if got.is_empty() {
                    "-".into()
                } else {
                    got.join(", ")
                }
            );
            if let Err(e) = result {
                eprintln!("tunctl-bench: run {rep}/{} {contender}: {e}", opts.reps);
                failures.push(format!("run {rep} of {contender}: {e}"));
            }
        }
    }
    if opts.json {
        for f in &figures {
            let (v, cpu, retr) = (spread(&f.values), spread(&f.cpus), spread(&f.retransmits));
            let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
            println!(
                "{}",
                json!({"scenario": "forward", "contender": f.contender, "metric": f.metric,
                       "unit": f.unit, "runs": f.values.len(), "smoke": opts.smoke(),
                       "value": v.map(|s| r3(s.median)),
                       "min": v.map(|s| r3(s.min)), "max": v.map(|s| r3(s.max)),
                       "samples": f.values.iter().map(|&x| r3(x)).collect::<Vec<_>>(),
                       "cpu_percent": cpu.map(|s| s.median.round()),
                       "cpu_percent_min": cpu.map(|s| s.min.round()),
                       "cpu_percent_max": cpu.map(|s| s.max.round()),
                       // Counts, as integers (a median of two may end in .5: rounded).
                       "retransmits": retr.map(|s| s.median.round() as u64),
                       "retransmits_min": retr.map(|s| s.min as u64),
                       "retransmits_max": retr.map(|s| s.max as u64)})
            );
        }
    }
    let table = report(&figures, &failures, &opts);
    if !opts.json {
        println!("{table}");
    } else if opts.smoke() {
        eprintln!("tunctl-bench: {SMOKE_WARNING}");
    }
    // Only a full, non-smoke run of every contender is a result worth writing down.
    if !opts.smoke() && opts.only.is_empty() {
        let doc = format!(
            "# Benchmarks\n\nProduced by `bench/run` (see bench/README.md) on {} — {}.\n\n## forward: namespace A ⇄ forwarder ⇄ namespace B\n\nTwo tun devices, one in each namespace, joined by the contender (`kernel`: a veth pair, no forwarder). iperf3 from A to B: `tcp1` one TCP stream, `tcp4` four, `udp64` 64-byte UDP datagrams (thousands received per second). MTU 1500. On a 2-core machine iperf3's client and server and the forwarder share the cores: runs of the same contender differ by up to about 25%, so the runs are interleaved across contenders, each figure is given as min / median / max, and ratios (of medians) are to be compared within one run.\n\n{}",
            machine(),
            std::process::Command::new("date").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default(),
            table
        );
        let path = bench_dir().join("../BENCHMARKS.md");
        if let Err(e) = std::fs::write(&path, doc) {
            eprintln!("tunctl-bench: write {}: {e}", path.display());
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn spread_of_odd_and_even_counts() {
        assert_eq!(spread(&[]), None);
        let s = spread(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        let s = spread(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 4.0));
    }

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
    fn defaults_quick_and_overrides() {
        let o = parse(&args(&[])).unwrap();
        assert!(o.reps >= 3 && !o.smoke());
        let o = parse(&args(&["--quick"])).unwrap();
        assert_eq!((o.reps, o.seconds), (QUICK_REPS, QUICK_SECONDS));
        assert!(o.smoke());
        let o = parse(&args(&["--reps", "2", "--quick", "--seconds", "1"])).unwrap();
        assert_eq!((o.reps, o.seconds), (2, 1));
        assert!(o.smoke());
        assert!(parse(&args(&["--reps", "1"])).unwrap().smoke());
        assert!(parse(&args(&["--only", "tun-rs-async"])).is_ok());
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
        let full = parse(&args(&[])).unwrap();
        let r = report(std::slice::from_ref(&f), &[], &full);
        assert!(!r.contains("SMOKE"));
        assert!(r.contains("| min | median | max |"));
        assert!(r.contains("| c | tcp1 (Gbit/s) | 3 | 1.00 | 2.00 | 3.00 | 1.00× | – | 10% | 20% | 30% | 5 | 5 | 5 |"));
        let quick = parse(&args(&["--quick"])).unwrap();
        assert!(report(&[f], &[], &quick).starts_with("> **SMOKE RUN, NOT A VERDICT"));
    }
}
