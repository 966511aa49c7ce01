//! The harness: groups of contenders (registered by `main.rs`; the harness knows none of
//! them), their runs interleaved round-robin across contenders, min/median/max of each
//! figure, ratios of medians, BENCHMARKS.md; and what several groups measure with: the
//! two-namespace topology (namespaces A and B, a tun device in each, a forwarder or a veth
//! pair between them), iperf3 from A to B, a process's CPU time and system calls.

use std::io::Read;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tunctl::{Address, Device, Link, Namespace};

const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
/// The tun device of each side of the two-namespace topology.
pub(crate) const DEV: &str = "fwd0";

/// Says whether a name belongs to a harness run that is gone ([`Group::sweep`]).
pub(crate) type Stale<'a> = &'a dyn Fn(&str) -> bool;

/// A group of contenders measured in one topology: its runs are interleaved among its own
/// contenders; groups run one after the other. The harness knows no group: `main.rs`
/// registers them.
pub(crate) struct Group {
    /// The name on the command line and in BENCHMARKS.md's `## NAME:` heading.
    pub name: &'static str,
    /// In report order and in the order each round takes them.
    pub contenders: &'static [&'static str],
    /// (metric, unit), in report order; `measure` gets one figure per metric, in this order.
    pub metrics: &'static [(&'static str, &'static str)],
    /// One run of one contender: everything set up, measured into the figures, removed.
    pub measure: fn(&str, &Options, &mut [Figure]) -> Result<(), String>,
    /// The Markdown table and its notes (smoke warnings included).
    pub report: fn(&[Figure], &[String], &Options) -> String,
    /// The BENCHMARKS.md section: heading, what was measured, the machine, the table.
    pub section: fn(&str, &str) -> String,
    /// The harness pid in a name this group's runs give a namespace, socket or scratch
    /// directory, `None` for a name not of this group's making.
    pub owner: fn(&str) -> Option<u32>,
    /// Removes the group's leftover files (sockets, scratch directories) whose names
    /// `stale` says belong to a harness that is gone; namespaces are swept by the harness.
    pub sweep: fn(Stale<'_>),
}

/// Default runs per contender: at least 3, so that a median and a spread mean something.
const DEFAULT_REPS: usize = 3;
const DEFAULT_SECONDS: u32 = 5;
/// `--quick`: one short run per contender, a smoke run.
const QUICK_REPS: usize = 1;
const QUICK_SECONDS: u32 = 2;

/// What a smoke run's output says about itself (stderr at the start, the report's head).
pub(crate) const SMOKE_WARNING: &str =
    "SMOKE RUN, NOT A VERDICT: it only shows that each contender \
runs. Too few or too short runs: on a 2-core machine such runs swing by up to 35% (plain \
forwarding read 0.64x C in one --quick run and 1.04x in a 3-run one). For figures to \
compare, run without --quick, with 3 or more runs (the default).";

pub(crate) struct Options {
    pub quick: bool,
    pub json: bool,
    pub reps: usize,
    pub seconds: u32,
    pub only: Vec<String>,
    /// The groups to run, in registration order.
    pub groups: Vec<&'static str>,
}

impl Options {
    /// `--quick`, or fewer than 3 runs per contender: good for checking that everything runs,
    /// not for comparing.
    pub fn smoke(&self) -> bool {
        self.quick || self.reps < DEFAULT_REPS
    }
}

/// One run's measurement of one figure.
pub(crate) struct Sample {
    pub value: f64,
    pub cpu: Option<f64>,
    pub retransmits: Option<u64>,
}

impl Sample {
    /// A figure without CPU time or retransmits (a latency, a memory size).
    pub fn plain(value: f64) -> Sample {
        Sample {
            value,
            cpu: None,
            retransmits: None,
        }
    }
}

/// One figure (a contender's metric) and its samples, one per run, in run order.
pub(crate) struct Figure {
    pub contender: &'static str,
    pub metric: &'static str,
    pub unit: &'static str,
    pub values: Vec<f64>,
    pub cpus: Vec<f64>,
    pub retransmits: Vec<f64>,
}

impl Figure {
    pub fn new(contender: &'static str, metric: &'static str, unit: &'static str) -> Self {
        Figure {
            contender,
            metric,
            unit,
            values: Vec::new(),
            cpus: Vec::new(),
            retransmits: Vec::new(),
        }
    }

    pub fn push(&mut self, s: Sample) {
        self.values.push(s.value);
        self.cpus.extend(s.cpu);
        self.retransmits.extend(s.retransmits.map(|n| n as f64));
    }
}

/// Minimum, median and maximum of one figure's samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

/// The spread of `samples`; `None` if there are none. The median of an even count is the
/// mean of the middle two.
pub(crate) fn spread(samples: &[f64]) -> Option<Spread> {
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

/// Set by SIGINT, SIGTERM or SIGHUP: every wait and every round checks it, so that an
/// interrupted run still stops its processes and removes its namespaces and sockets.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether the harness was asked to stop (Ctrl-C, SIGTERM, SIGHUP).
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// Runs `cmd` to completion with its output captured, for at most `limit`: killed (and an
/// error) when the limit passes or the harness is interrupted (SIGTERM if it dies). stdout and stderr are read on
/// their own threads, so a child that writes much (iperf3 -J) never blocks on a full pipe.
pub(crate) fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    run_bounded_input(cmd, Stdio::null(), limit)
}

/// `run_bounded` with `stdin` as the child's standard input.
pub(crate) fn run_bounded_input(
    cmd: &mut Command,
    stdin: Stdio,
    limit: Duration,
) -> Result<Output, String> {
    let what = format!("{:?}", cmd);
    let mut child = die_with_harness(cmd)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if interrupted() => break Err("interrupted".to_string()),
            Ok(None) if Instant::now() > deadline => {
                break Err(format!("did not finish within {} s", limit.as_secs()))
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => break Err(e.to_string()),
        }
    };
    let status = match status {
        Ok(s) => s,
        Err(why) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(if interrupted() {
                why
            } else {
                format!("{what}: {why}")
            });
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Namespaces of one contender's run, deleted on drop.
pub(crate) struct Topology {
    pub a: String,
    pub b: String,
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Namespace::delete(&self.a);
        let _ = Namespace::delete(&self.b);
    }
}

/// Children killed on drop.
pub(crate) struct Kill(pub Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Offload contenders, whose devices [`setup`] makes with `vnet_hdr`: every `*-offload`
/// (`tunctl-offload` passes super-packets through like `c-offload`), and `tunctl-gro`, which
/// splits and coalesces them like `tun-rs-offload`.
pub(crate) fn offloaded(contender: &str) -> bool {
    contender.ends_with("offload") || contender == "tunctl-gro"
}

/// Namespaces A and B with a persistent tun `fwd0` each (vnet_hdr for offload contenders),
/// addressed point to point: the `forward` group's topology, also the `erlang` group's.
pub(crate) fn setup(contender: &str) -> Result<Topology, String> {
    let pid = std::process::id();
    let topo = Topology {
        a: format!("tb{pid}a"),
        b: format!("tb{pid}b"),
    };
    // Kept: the topology's own cleanup deletes them.
    let na = Namespace::create(&topo.a)
        .map_err(|e| e.to_string())?
        .keep();
    let nb = Namespace::create(&topo.b)
        .map_err(|e| e.to_string())?
        .keep();
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

/// Runs `cmd` (at most 20 s) and fails with its stderr unless it succeeds.
pub(crate) fn run_ok(cmd: &mut Command) -> Result<(), String> {
    let out = run_bounded(cmd, Duration::from_secs(20))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub(crate) fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Starts a forwarder between the existing tun devices `dev` in namespaces `a` and `b`
/// (`None` for `kernel`, which has none) and waits until it has attached to both.
pub(crate) fn start_forwarder(
    contender: &str,
    a: &str,
    b: &str,
    dev: &str,
) -> Result<Option<Child>, String> {
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
    cmd.args([a, dev, b, dev])
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
            .and_then(|ns| Link::by_name(&ns, dev))
            .and_then(|l| l.info())
            .map(|i| i.carrier == Some(true))
            .unwrap_or(false)
    };
    while !(carrier(a) && carrier(b)) {
        if let Ok(Some(status)) = child.0[0].try_wait() {
            return Err(format!(
                "{contender}: forwarder exited ({status}) before attaching"
            ));
        }
        if interrupted() {
            return Err("interrupted".into());
        }
        if Instant::now() > deadline {
            return Err(format!("{contender}: forwarder did not attach within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child.0.pop())
}

/// The packets the tun device `dev` of namespace `ns` handed to userspace readers so far
/// (its `tx_packets`, `ip -s -j link`).
pub(crate) fn tx_packets(ns: &str, dev: &str) -> Result<u64, String> {
    let out = run_bounded(
        Command::new("ip").args(["-n", ns, "-s", "-j", "link", "show", "dev", dev]),
        Duration::from_secs(5),
    )?;
    let v: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("ip -s -j link: {e}"))?;
    v[0]["stats64"]["tx"]["packets"]
        .as_u64()
        .ok_or_else(|| format!("no tx packet count for {dev} in {ns}"))
}

/// The system calls every thread of process `pid` makes while `during` runs: perf stat's
/// count of `raw_syscalls:sys_enter` (one per system call entered), with `during`'s result.
pub(crate) fn count_syscalls<T>(
    pid: u32,
    during: impl FnOnce() -> Result<T, String>,
) -> Result<(u64, T), String> {
    let out = std::env::temp_dir().join(format!("tunctl-bench-perf-{}-{pid}", std::process::id()));
    let mut perf = Command::new("perf");
    perf.args(["stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-p"])
        .arg(pid.to_string())
        .arg("-o")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = Kill(vec![die_with_harness(&mut perf)
        .spawn()
        .map_err(|e| format!("perf stat (linux-perf): {e}"))?]);
    // Attached once perf has opened its counters; it counts until SIGINT.
    std::thread::sleep(Duration::from_millis(200));
    let result = during();
    let perf_pid = child.0[0].id() as libc::pid_t;
    // SAFETY: a signal to our own child, which has not been waited for (its pid is ours).
    unsafe { libc::kill(perf_pid, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while matches!(child.0[0].try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    let result = result?;
    let calls = text
        .lines()
        .find(|l| l.contains("raw_syscalls:sys_enter"))
        .and_then(|l| l.split(',').next())
        .and_then(|n| n.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            format!(
                "perf stat counted no system calls of {pid}: {}",
                text.trim()
            )
        })?;
    Ok((calls, result))
}

/// utime + stime of a process (all its threads), in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks / hz)
}

/// `cmd`, set to get SIGTERM when the harness dies (the thread that starts it: the main one),
/// so that a harness killed outright (SIGKILL) leaves no server or bridge running. Kept
/// across `ip netns exec`, which execs its command.
pub(crate) fn die_with_harness(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe, as a pre_exec hook must be.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Starts an iperf3 server in namespace `ns` on `addr`; killed with the returned guard.
pub(crate) fn iperf_server(ns: &str, addr: &str) -> Result<Kill, String> {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns", "exec", ns, "iperf3", "-s", "-p", "5201", "-B", addr,
    ]);
    let server = die_with_harness(&mut cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("iperf3 server: {e}"))?;
    let guard = Kill(vec![server]);
    std::thread::sleep(Duration::from_millis(300));
    Ok(guard)
}

/// iperf3's JSON report of `metric` from namespace `ns` to `target`: up to 5 tries (the
/// server may not listen yet), each bounded in time.
fn iperf(ns: &str, target: &str, metric: &str, seconds: u32) -> Result<Value, String> {
    let secs = seconds.to_string();
    let mut args = vec![
        "netns",
        "exec",
        ns,
        "iperf3",
        "-c",
        target,
        "-p",
        "5201",
        "-J",
        "-t",
        &secs,
        // A path that passes nothing fails in 5 s instead of TCP's two minutes.
        "--connect-timeout",
        "5000",
    ];
    match metric {
        "tcp4" => args.extend(["-P", "4"]),
        "udp64" => args.extend(["-u", "-b", "0", "-l", "64"]),
        _ => {}
    }
    let mut last = String::new();
    for _ in 0..5 {
        let limit = Duration::from_secs(u64::from(seconds) + 20);
        let out = run_bounded(Command::new("ip").args(&args), limit)
            .map_err(|e| format!("iperf3 {metric}: {e}"))?;
        if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
            if v.get("error").is_none() {
                return Ok(v);
            }
            last = v["error"].to_string();
        }
        if interrupted() {
            return Err("interrupted".into());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err(format!("iperf3 {metric}: {last}"))
}

/// One iperf3 test (`tcp1`, `tcp4` or `udp64`) from namespace `ns` to `target`: the figure
/// (Gbit/s received, or thousands of datagrams received per second), the CPU time of `pids`
/// together over the test's duration (`None` without pids), and TCP retransmits.
pub(crate) fn traffic(
    ns: &str,
    target: &str,
    metric: &str,
    seconds: u32,
    pids: &[u32],
) -> Result<Sample, String> {
    let cpu = || -> Option<f64> {
        if pids.is_empty() {
            return None;
        }
        pids.iter().map(|&p| cpu_seconds(p)).sum()
    };
    let cpu0 = cpu();
    let v = iperf(ns, target, metric, seconds)?;
    let cpu1 = cpu();
    let mut retransmits = None;
    let (value, seconds) = if metric == "udp64" {
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
    Ok(Sample {
        value,
        // CPU over the test's own duration, not iperf3's start-up.
        cpu: cpu0.zip(cpu1).map(|(a, b)| (b - a) / seconds * 100.0),
        retransmits,
    })
}

pub(crate) fn machine() -> String {
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
pub(crate) fn cell(x: Option<f64>, digits: usize, suffix: &str) -> String {
    x.map(|x| format!("{x:.digits$}{suffix}"))
        .unwrap_or_else(|| "–".into())
}

/// The median of `contender`'s `metric` (of its CPU figures with `cpu`), `None` when that
/// figure has no samples or did not run.
pub(crate) fn median_of(
    figures: &[Figure],
    contender: &str,
    metric: &str,
    cpu: bool,
) -> Option<f64> {
    figures
        .iter()
        .find(|f| f.contender == contender && f.metric == metric)
        .and_then(|f| spread(if cpu { &f.cpus } else { &f.values }))
        .map(|s| s.median)
}

/// A report's head: the smoke warning (on a smoke run), then the header of its table, with
/// the group's `ratio_cols` between the figure's spread and its CPU.
pub(crate) fn report_head(opts: &Options, ratio_cols: &[&str]) -> String {
    let mut out = String::new();
    if opts.smoke() {
        out.push_str(&format!("> **{SMOKE_WARNING}**\n\n"));
    }
    out.push_str("| contender | metric | runs | min | median | max |");
    for c in ratio_cols {
        out.push_str(&format!(" {c} |"));
    }
    out.push_str(" CPU min | CPU median | CPU max | retr. min | retr. median | retr. max |\n|");
    out.push_str(&"---|".repeat(12 + ratio_cols.len()));
    out.push('\n');
    out
}

/// A figure's row of the table [`report_head`] begins: contender, metric (unit), runs, the
/// figure's min/median/max with `digits` decimals, the `ratios` cells, CPU min/median/max
/// (%), retransmits min/median/max.
pub(crate) fn figure_row(f: &Figure, digits: usize, ratios: &[String]) -> String {
    let (v, cpu, retr) = (spread(&f.values), spread(&f.cpus), spread(&f.retransmits));
    let mut row = format!(
        "| {} | {} ({}) | {} | {} | {} | {} |",
        f.contender,
        f.metric,
        f.unit,
        f.values.len(),
        cell(v.map(|s| s.min), digits, ""),
        cell(v.map(|s| s.median), digits, ""),
        cell(v.map(|s| s.max), digits, ""),
    );
    for r in ratios {
        row.push_str(&format!(" {r} |"));
    }
    row.push_str(&format!(
        " {} | {} | {} | {} | {} | {} |\n",
        cell(cpu.map(|s| s.min), 0, "%"),
        cell(cpu.map(|s| s.median), 0, "%"),
        cell(cpu.map(|s| s.max), 0, "%"),
        cell(retr.map(|s| s.min), 0, ""),
        cell(retr.map(|s| s.median), 0, ""),
        cell(retr.map(|s| s.max), 0, ""),
    ));
    row
}

/// A report's tail: how it was measured ("N runs of S s per contender, interleaved
/// round-robin" followed by the group's `method`, which ends the paragraph), the failed runs,
/// and the smoke warning again on a smoke run.
pub(crate) fn report_tail(opts: &Options, failures: &[String], method: &str) -> String {
    let mut out = format!(
        "\n{} run{} of {} s per contender, interleaved round-robin{method}\n",
        opts.reps,
        if opts.reps == 1 { "" } else { "s" },
        opts.seconds
    );
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

/// The verdict on a target of at least `at_least` for the ratio `q`: "–" without one, "smoke"
/// on a smoke run, else "met" or "missed".
pub(crate) fn verdict(q: Option<f64>, at_least: f64, opts: &Options) -> &'static str {
    match q {
        None => "–",
        Some(_) if opts.smoke() => "smoke",
        Some(q) if q >= at_least => "met",
        Some(_) => "missed",
    }
}

/// The options of `args`, with every registered group (for tests).
#[cfg(test)]
pub(crate) fn parse_for_tests(args: &[&str]) -> Options {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    parse(&args, &crate::GROUPS).expect("valid test arguments")
}

fn parse(args: &[String], groups: &[Group]) -> Result<Options, String> {
    let mut opts = Options {
        quick: false,
        json: false,
        reps: DEFAULT_REPS,
        seconds: DEFAULT_SECONDS,
        only: Vec::new(),
        groups: Vec::new(),
    };
    // An explicit --reps or --seconds wins over --quick's, in any order.
    let (mut reps, mut seconds) = (None, None);
    let mut all = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "all" => all = true,
            g if groups.iter().any(|x| x.name == g) => opts
                .groups
                .extend(groups.iter().map(|x| x.name).filter(|n| *n == g)),
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
    // No group named, or `all`: every group, in registration order (each named group once).
    if all || opts.groups.is_empty() {
        opts.groups = groups.iter().map(|g| g.name).collect();
    } else {
        opts.groups = groups
            .iter()
            .map(|g| g.name)
            .filter(|n| opts.groups.contains(n))
            .collect();
    }
    if opts.quick {
        opts.reps = QUICK_REPS;
        opts.seconds = QUICK_SECONDS;
    }
    opts.reps = reps.unwrap_or(opts.reps);
    opts.seconds = seconds.unwrap_or(opts.seconds);
    let known: Vec<&str> = groups
        .iter()
        .filter(|g| opts.groups.contains(&g.name))
        .flat_map(|g| g.contenders.iter().copied())
        .collect();
    if let Some(bad) = opts.only.iter().find(|c| !known.contains(&c.as_str())) {
        return Err(format!(
            "unknown contender {bad:?} in {}; one of {}",
            opts.groups.join(", "),
            known.join(", ")
        ));
    }
    Ok(opts)
}

/// The runs of one group: every selected contender `opts.reps` times, round-robin. Returns its
/// figures (report order) and its failed runs.
fn run_group(group: &Group, opts: &Options) -> (Vec<Figure>, Vec<String>) {
    let selected: Vec<&'static str> = group
        .contenders
        .iter()
        .copied()
        .filter(|c| opts.only.is_empty() || opts.only.iter().any(|o| o == c))
        .collect();
    let m = group.metrics.len();
    // One figure per contender and metric, in report order; figures[i * m + j] is contender
    // i's metric j.
    let mut figures: Vec<Figure> = selected
        .iter()
        .flat_map(|&c| {
            group
                .metrics
                .iter()
                .map(move |&(me, u)| Figure::new(c, me, u))
        })
        .collect();
    let mut failures = Vec::new();
    let name = group.name;
    // Round-robin: run r of every contender before run r + 1 of any, so that the machine's
    // drift (other load, clocks, caches) falls on all of them alike.
    'rounds: for rep in 1..=opts.reps {
        eprintln!(
            "tunctl-bench: {name} run {rep}/{}, order: {}",
            opts.reps,
            selected.join(" ")
        );
        for (i, &contender) in selected.iter().enumerate() {
            if interrupted() {
                break 'rounds;
            }
            let mine = &mut figures[i * m..(i + 1) * m];
            let before: Vec<usize> = mine.iter().map(|f| f.values.len()).collect();
            let result = (group.measure)(contender, opts, mine);
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
                "tunctl-bench: {name} run {rep}/{} {contender}: {}",
                opts.reps,
                if got.is_empty() {
                    "-".into()
                } else {
                    got.join(", ")
                }
            );
            if let Err(e) = result {
                eprintln!(
                    "tunctl-bench: {name} run {rep}/{} {contender}: {e}",
                    opts.reps
                );
                failures.push(format!("run {rep} of {contender}: {e}"));
            }
        }
    }
    (figures, failures)
}

/// BENCHMARKS.md with `sections` ((group, text) pairs) put in place of the sections of the
/// same groups (`## GROUP:` up to the next `## `), or appended; other sections are kept as
/// they are. The line before the first section names the machine of the old single-group
/// file; it goes once the `forward` section, which carries its own, is rewritten.
fn merge_sections(old: &str, sections: &[(&str, String)]) -> String {
    const PREAMBLE: &str = "# Benchmarks\n\nWritten by `bench/run` (see bench/README.md): a full run of a group (every contender, at least 3 runs, no `--quick`) rewrites its section, which names the machine and the date. Compare figures only within one section.\n\n";
    // Split into the preamble and (group, text) sections.
    let mut starts: Vec<usize> = old.match_indices("\n## ").map(|(i, _)| i + 1).collect();
    if old.starts_with("## ") {
        starts.insert(0, 0);
    }
    let preamble = &old[..starts.first().copied().unwrap_or(old.len())];
    let mut kept: Vec<(String, String)> = starts
        .iter()
        .enumerate()
        .map(|(k, &at)| {
            let end = starts.get(k + 1).copied().unwrap_or(old.len());
            let text = &old[at..end];
            let group = text[3..]
                .split(|c: char| c == ':' || c.is_whitespace())
                .next()
                .unwrap_or("")
                .to_string();
            (group, text.trim_end().to_string() + "\n")
        })
        .collect();
    for (group, text) in sections {
        let text = text.trim_end().to_string() + "\n";
        match kept.iter_mut().find(|(g, _)| g == group) {
            Some(slot) => slot.1 = text,
            None => kept.push((group.to_string(), text)),
        }
    }
    let rewrites_forward = sections.iter().any(|(g, _)| *g == "forward");
    let mut out = if preamble.trim().is_empty() || rewrites_forward {
        PREAMBLE.to_string()
    } else {
        preamble.to_string()
    };
    let body: Vec<String> = kept.into_iter().map(|(_, t)| t).collect();
    out.push_str(&body.join("\n"));
    out
}

/// The harness pid in a name of the two-namespace topology ([`setup`]): `tb<pid>a|b`; or in
/// a name one of `groups` makes (see [`Group::owner`]); `None` for any other name.
fn owner(name: &str, groups: &[Group]) -> Option<u32> {
    let topology = name.strip_prefix("tb").and_then(|rest| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        matches!(&rest[digits.len()..], "a" | "b")
            .then(|| digits.parse().ok())
            .flatten()
    });
    topology.or_else(|| groups.iter().find_map(|g| (g.owner)(name)))
}

/// The harness pid in a name of the shape `PREFIX<pid>n<run>[SUFFIX][.sock]`, where the
/// suffix is one of `suffixes` (the usual shape of a group's names, for [`Group::owner`]).
pub(crate) fn run_name_owner(name: &str, prefix: &str, suffixes: &[char]) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let tail = &rest[digits.len()..];
    let tail = tail.strip_suffix(".sock").unwrap_or(tail);
    let run = |k: &str| !k.is_empty() && k.chars().all(|c| c.is_ascii_digit());
    let ours = tail
        .strip_prefix('n')
        .is_some_and(|t| run(t) || t.strip_suffix(suffixes).is_some_and(run));
    if ours {
        digits.parse().ok()
    } else {
        None
    }
}

/// Whether `pid` is a running harness (not gone, not a zombie, not another program that got
/// the pid since).
fn harness_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, s)| s.split_whitespace().next());
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    state != Some("Z") && comm.trim() == "tunctl-bench"
}

/// Stale leftovers of harness runs that were killed outright (SIGKILL, a crash): namespaces,
/// and each group's sockets and scratch directories ([`Group::sweep`]), named after a harness
/// process that is gone. A live harness's are never touched; processes are never touched.
fn sweep_stale(groups: &[Group]) {
    let stale = |name: &str| owner(name, groups).is_some_and(|pid| !harness_alive(pid));
    for ns in Namespace::list().unwrap_or_default() {
        if stale(&ns) {
            eprintln!("tunctl-bench: removing namespace {ns} left by an earlier run");
            let _ = Namespace::delete(&ns);
        }
    }
    for g in groups {
        (g.sweep)(&stale);
    }
}

/// `tunctl-bench run [forward|tunnel|bridge|erlang|all] [--quick] [--json] [--reps N] [--seconds S]
/// [--only a,b]`.
pub fn run(args: &[String], groups: &[Group]) -> ExitCode {
    let opts = match parse(args, groups) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tunctl-bench: {e}");
            return ExitCode::from(2);
        }
    };
    catch_signals();
    sweep_stale(groups);
    if opts.smoke() {
        eprintln!("tunctl-bench: {SMOKE_WARNING}");
    }
    let mut sections: Vec<(&str, String)> = Vec::new();
    for group in groups.iter().filter(|g| opts.groups.contains(&g.name)) {
        if !group
            .contenders
            .iter()
            .any(|c| opts.only.is_empty() || opts.only.iter().any(|o| o == c))
        {
            continue;
        }
        if interrupted() {
            break;
        }
        let (figures, failures) = run_group(group, &opts);
        if opts.json {
            for f in &figures {
                let (v, cpu, retr) = (spread(&f.values), spread(&f.cpus), spread(&f.retransmits));
                let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
                println!(
                    "{}",
                    json!({"scenario": group.name, "contender": f.contender, "metric": f.metric,
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
        let table = (group.report)(&figures, &failures, &opts);
        if !opts.json {
            if opts.groups.len() > 1 {
                println!("## {}\n", group.name);
            }
            println!("{table}");
        }
        // Only a full, non-smoke, uninterrupted run of every contender is a result worth
        // writing down.
        if !opts.smoke() && opts.only.is_empty() && !interrupted() {
            let date = run_bounded(Command::new("date").arg("-u"), Duration::from_secs(5))
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
            let on = format!("{} — {date}", machine());
            sections.push((group.name, (group.section)(&on, &table)));
        }
    }
    if opts.json && opts.smoke() {
        eprintln!("tunctl-bench: {SMOKE_WARNING}");
    }
    if interrupted() {
        eprintln!("tunctl-bench: interrupted; everything started was stopped and removed");
        return ExitCode::from(130);
    }
    if !sections.is_empty() {
        let path = bench_dir().join("../BENCHMARKS.md");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, merge_sections(&old, &sections)) {
            eprintln!("tunctl-bench: write {}: {e}", path.display());
        }
    }
    ExitCode::SUCCESS
}

/// `ours` against every other contender that ran, as a table: one row per metric (and the
/// CPU of the throughput tests), one column per contender, each cell `ratio(contender,
/// metric, cpu)`. Empty when `ours` or the others did not run.
pub(crate) fn against_each(
    figures: &[Figure],
    ours: &str,
    metrics: &[(&str, &str)],
    higher_is_better: fn(&str) -> bool,
    ratio: &dyn Fn(&str, &str, bool) -> String,
) -> String {
    let mut others: Vec<&str> = Vec::new();
    for f in figures {
        if f.contender != ours && !others.contains(&f.contender) {
            others.push(f.contender);
        }
    }
    if !figures.iter().any(|f| f.contender == ours) || others.is_empty() {
        return String::new();
    }
    let mut out = format!("\n{ours} against each ({ours}'s median ÷ theirs):\n\n| metric |");
    for c in &others {
        out.push_str(&format!(" {c} |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(others.len()));
    out.push('\n');
    let mut rows: Vec<(String, &str, bool)> = metrics
        .iter()
        .map(|(m, _)| {
            let better = if higher_is_better(m) {
                "higher"
            } else {
                "lower"
            };
            (format!("{m} ({better} is better)"), *m, false)
        })
        .collect();
    for m in ["tcp1", "tcp4", "udp64"] {
        rows.push((format!("{m} CPU (lower is better)"), m, true));
    }
    for (label, m, cpu) in rows {
        out.push_str(&format!("| {label} |"));
        for c in &others {
            out.push_str(&format!(" {} |", ratio(c, m, cpu)));
        }
        out.push('\n');
    }
    out
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
    fn owners_of_leftovers() {
        assert_eq!(owner("tb123a", &crate::GROUPS), Some(123));
        assert_eq!(owner("tw123n4b", &crate::GROUPS), Some(123));
        assert_eq!(owner("tw123n45a.sock", &crate::GROUPS), Some(123));
        assert_eq!(owner("tw123n45", &crate::GROUPS), Some(123));
        assert_eq!(owner("tg123n4c", &crate::GROUPS), Some(123));
        assert_eq!(owner("tg123n4x", &crate::GROUPS), Some(123));
        assert_eq!(owner("tg123n45.sock", &crate::GROUPS), Some(123));
        for other in [
            "tb123",
            "tb123n4a",
            "tw123a",
            "tw123n",
            "tw123nxa",
            "wgt30070",
            "tunctl-test-t1x2",
            "tg123n4d",
            "tg123c",
            "tw123n4c",
        ] {
            assert_eq!(owner(other, &crate::GROUPS), None, "{other}");
        }
        assert!(harness_alive(std::process::id()));
    }

    #[test]
    fn sections_replaced_or_appended() {
        let old = "# Benchmarks\n\nProduced by `bench/run` on X.\n\n## forward: f\n\nold f\n\n## other: o\n\nkeep\n";
        let new = merge_sections(old, &[("tunnel", "## tunnel: t\n\nfigures".into())]);
        assert!(new.starts_with(
            "# Benchmarks\n\nProduced by `bench/run` on X.\n\n## forward: f\n\nold f\n"
        ));
        assert!(new.contains("## other: o\n\nkeep\n"));
        assert!(new.ends_with("## tunnel: t\n\nfigures\n"));
        let again = merge_sections(&new, &[("tunnel", "## tunnel: t\n\nnew".into())]);
        assert!(again.ends_with("## tunnel: t\n\nnew\n") && !again.contains("figures"));
        let f = merge_sections(&again, &[("forward", "## forward: f\n\nnew f".into())]);
        assert!(!f.contains("Produced by `bench/run` on X.") && f.contains("new f\n\n## other"));
        assert!(merge_sections("", &[("tunnel", "## tunnel: t".into())])
            .starts_with("# Benchmarks\n\nWritten by"));
    }

    #[test]
    fn groups_and_only() {
        assert_eq!(
            parse(&args(&[]), &crate::GROUPS).unwrap().groups,
            ["forward", "tunnel", "bridge", "erlang"]
        );
        assert_eq!(
            parse(&args(&["erlang"]), &crate::GROUPS).unwrap().groups,
            ["erlang"]
        );
        assert!(parse(
            &args(&["erlang", "--only", "erl-original,erl-tunctl"]),
            &crate::GROUPS
        )
        .is_ok());
        assert_eq!(
            parse(&args(&["bridge"]), &crate::GROUPS).unwrap().groups,
            ["bridge"]
        );
        assert!(parse(
            &args(&["bridge", "--only", "br,c-learn-offload,kernel"]),
            &crate::GROUPS
        )
        .is_ok());
        assert!(parse(&args(&["tunnel", "--only", "br"]), &crate::GROUPS).is_err());
        assert_eq!(
            parse(&args(&["tunnel"]), &crate::GROUPS).unwrap().groups,
            ["tunnel"]
        );
        assert_eq!(
            parse(&args(&["tunnel", "forward"]), &crate::GROUPS)
                .unwrap()
                .groups,
            ["forward", "tunnel"]
        );
        assert!(parse(
            &args(&["tunnel", "--only", "vpwn,c-offload"]),
            &crate::GROUPS
        )
        .is_ok());
        assert!(parse(&args(&["forward", "--only", "vpwn"]), &crate::GROUPS).is_err());
        assert!(parse(&args(&["--only", "tunctl,vpwn"]), &crate::GROUPS).is_ok());
    }

    #[test]
    fn defaults_quick_and_overrides() {
        let o = parse(&args(&[]), &crate::GROUPS).unwrap();
        assert!(o.reps >= 3 && !o.smoke());
        let o = parse(&args(&["--quick"]), &crate::GROUPS).unwrap();
        assert_eq!((o.reps, o.seconds), (QUICK_REPS, QUICK_SECONDS));
        assert!(o.smoke());
        let o = parse(
            &args(&["--reps", "2", "--quick", "--seconds", "1"]),
            &crate::GROUPS,
        )
        .unwrap();
        assert_eq!((o.reps, o.seconds), (2, 1));
        assert!(o.smoke());
        assert!(parse(&args(&["--reps", "1"]), &crate::GROUPS)
            .unwrap()
            .smoke());
        assert!(parse(&args(&["--only", "tun-rs-async"]), &crate::GROUPS).is_ok());
    }
}
