//! The harness: namespaces A and B, a forwarder (or a veth pair) between them, iperf3 from A
//! to B, the forwarder's CPU time, medians, ratios, BENCHMARKS.md.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tunctl::{Address, Device, Link, Namespace};

const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
const DEV: &str = "fwd0";

/// Every contender, in report order.
pub const CONTENDERS: [&str; 11] = [
    "kernel",
    "c",
    "c-offload",
    "tun-rs",
    "tun-rs-offload",
    "tunctl",
    "tunctl-offload",
    "tunctl-gro",
    "tunctl-active",
    "tunctl-tokio",
    "tunctl-mq2",
];

const METRICS: [(&str, &str); 3] = [("tcp1", "Gbit/s"), ("tcp4", "Gbit/s"), ("udp64", "kpps")];

struct Options {
    quick: bool,
    json: bool,
    reps: usize,
    seconds: u32,
    only: Vec<String>,
}

/// One measured figure (a median).
struct Row {
    contender: String,
    metric: &'static str,
    unit: &'static str,
    value: f64,
    cpu: Option<f64>,
    retransmits: Option<u64>,
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
    let na = Namespace::create(&topo.a).map_err(|e| e.to_string())?;
    let nb = Namespace::create(&topo.b).map_err(|e| e.to_string())?;
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
    let child = cmd.spawn().map_err(|e| format!("start {contender}: {e}"))?;
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
        if Instant::now() > deadline {
            return Err(format!("{contender}: forwarder did not attach within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Some(child))
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

fn measure(contender: &str, opts: &Options) -> Result<Vec<Row>, String> {
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
    let mut rows = Vec::new();
    for (metric, unit) in METRICS {
        let (mut values, mut cpus, mut retrs) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..opts.reps {
            let cpu0 = pid.and_then(cpu_seconds);
            let v = iperf(&topo, metric, opts.seconds)?;
            let cpu1 = pid.and_then(cpu_seconds);
            let (value, seconds) = if metric == "udp64" {
                // The receiver's own count where iperf3 reports it, else sent minus lost.
                let s = if v["end"]["sum_received"].is_object() {
                    &v["end"]["sum_received"]
                } else {
                    &v["end"]["sum"]
                };
                let packets = s["packets"].as_f64().unwrap_or(0.0)
                    - s["lost_packets"].as_f64().unwrap_or(0.0);
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
                retrs.extend(v["end"]["sum_sent"]["retransmits"].as_u64());
                (r["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9, secs)
            };
            values.push(value);
            // CPU over the test's own duration, not iperf3's start-up.
            if let (Some(a), Some(b)) = (cpu0, cpu1) {
                cpus.push((b - a) / seconds * 100.0);
            }
        }
        retrs.sort_unstable();
        rows.push(Row {
            contender: contender.to_string(),
            metric,
            unit,
            value: median(&mut values).unwrap_or(0.0),
            cpu: median(&mut cpus),
            retransmits: retrs.get(retrs.len() / 2).copied(),
        });
    }
    drop(children);
    drop(topo);
    Ok(rows)
}

/// The median of one figure's samples, each figure on its own.
fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// The contender a figure is compared with: the C forwarder and tun-rs of the same class
/// (plain or offload); the kernel path against both plain ones.
fn baseline(contender: &str, peer: &str) -> String {
    if offloaded(contender) {
        format!("{peer}-offload")
    } else {
        peer.to_string()
    }
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

fn report(rows: &[Row], opts: &Options) -> String {
    let find = |c: &str, m: &str| {
        rows.iter()
            .find(|r| r.contender == c && r.metric == m)
            .map(|r| r.value)
    };
    let mut out = String::new();
    out.push_str("| contender | metric | value | vs C | vs tun-rs | forwarder CPU | TCP retransmits |\n|---|---|---|---|---|---|---|\n");
    for r in rows {
        let ratio = |peer: &str| match find(&baseline(&r.contender, peer), r.metric) {
            Some(b) if b > 0.0 => format!("{:.2}×", r.value / b),
            _ => "–".into(),
        };
        out.push_str(&format!(
            "| {} | {} | {:.2} {} | {} | {} | {} | {} |\n",
            r.contender,
            r.metric,
            r.value,
            r.unit,
            ratio("c"),
            ratio("tun-rs"),
            r.cpu
                .map(|c| format!("{c:.0}%"))
                .unwrap_or_else(|| "–".into()),
            r.retransmits
                .map(|n| n.to_string())
                .unwrap_or_else(|| "–".into()),
        ));
    }
    out.push_str(&format!(
        "\n{} run{} of {} s each, median; `vs C` and `vs tun-rs` compare with the contender of the same class (plain or offload).\n",
        opts.reps,
        if opts.reps == 1 { "" } else { "s" },
        opts.seconds
    ));
    out
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut opts = Options {
        quick: false,
        json: false,
        reps: 3,
        seconds: 5,
        only: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "forward" | "all" => {}
            "--quick" => opts.quick = true,
            "--json" => opts.json = true,
            "--reps" => {
                opts.reps = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| (1..=9).contains(n))
                    .ok_or("--reps takes 1 to 9")?
            }
            "--seconds" => {
                opts.seconds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| (1..=60).contains(n))
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
        opts.reps = 1;
        opts.seconds = 2;
    }
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
    let mut rows = Vec::new();
    for contender in CONTENDERS {
        if !opts.only.is_empty() && !opts.only.iter().any(|c| c == contender) {
            continue;
        }
        eprintln!("tunctl-bench: {contender}...");
        match measure(contender, &opts) {
            Ok(r) => {
                for row in &r {
                    if opts.json {
                        println!(
                            "{}",
                            json!({"scenario": "forward", "contender": row.contender, "metric": row.metric, "value": (row.value * 1000.0).round() / 1000.0, "unit": row.unit,
                                   "cpu_percent": row.cpu.map(|c| c.round()), "retransmits": row.retransmits})
                        );
                    }
                }
                rows.extend(r);
            }
            Err(e) => eprintln!("tunctl-bench: {contender}: {e}"),
        }
    }
    let table = report(&rows, &opts);
    if !opts.json {
        println!("{table}");
    }
    if !opts.quick && opts.only.is_empty() {
        let doc = format!(
            "# Benchmarks\n\nProduced by `bench/run` (see bench/README.md) on {} — {}.\n\n## forward: namespace A ⇄ forwarder ⇄ namespace B\n\nTwo tun devices, one in each namespace, joined by the contender (`kernel`: a veth pair, no forwarder). iperf3 from A to B: `tcp1` one TCP stream, `tcp4` four, `udp64` 64-byte UDP datagrams (thousands received per second). MTU 1500. On a 2-core machine iperf3's client and server and the forwarder share the cores: runs of the same contender differ by up to about 25%, so compare ratios within one run.\n\n{}",
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
