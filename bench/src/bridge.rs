//! The `bridge` group: three end namespaces A, B and C, each with one port of a bridge (a tap
//! of the userspace bridges, a veth end for the kernel's and Open vSwitch's), iperf3 from A
//! to B; C is the port that should see nothing once the bridge has learned (and everything
//! when it floods). Contenders: the Linux bridge in a namespace of its own (`kernel`), the C
//! learning bridge (`c/bridge.c`: `c-learn`, and `c-learn-offload` with vnet_hdr/TSO
//! pass-through), Open vSwitch's userspace datapath in a namespace of its own (`ovs`, and
//! `ovs-tso` with `userspace-tso-enable`), and ours (`tunctl br up`: `br`, `br-1t` with
//! `--one-thread`, and `br-flood` with `--flood`). Besides throughput, each run probes system
//! calls and wake-ups per frame of the bridge's process(es). Everything a run starts
//! (namespaces, processes, the taps they made, OVS's database and sockets) is removed at its
//! end, also when it fails or the harness is interrupted.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tunctl::{Link, Namespace};

use crate::harness::{
    against_each, bench_dir, cell, die_with_harness, figure_row, interrupted, iperf_server,
    median_of, report_head, report_tail, run_bounded, run_ok, traffic, verdict, Figure, Options,
    Sample,
};
use crate::tunnel::{first_reply, program, End, SCRATCH_PREFIX};

/// The bridge contenders, in report order and in the order each round takes them.
pub const CONTENDERS: [&str; 9] = [
    "kernel",
    "c-learn",
    "c-learn-offload",
    "ovs",
    "ovs-tso",
    "br",
    "br-1t",
    "br-mq2",
    "br-flood",
];

/// (metric, unit), in report order. Only the three traffic figures are better when higher.
/// The `-sys` and `-wake` figures are a short probe of their traffic test: the bridge's
/// system calls (every thread of its process(es)) and its wake-ups (voluntary context
/// switches: each is a sleep ended by a wake-up), per frame handed to the bridge by the end
/// ports (a GSO frame counts one).
pub const METRICS: [(&str, &str); 8] = [
    ("tcp1", "Gbit/s"),
    ("tcp4", "Gbit/s"),
    ("udp64", "kpps"),
    ("rss", "MiB"),
    ("tcp1-sys", "syscalls/frame"),
    ("tcp1-wake", "wake-ups/frame"),
    ("udp64-sys", "syscalls/frame"),
    ("udp64-wake", "wake-ups/frame"),
];

/// How long each probe runs.
const PROBE_SECONDS: u32 = 2;

/// Names of a run: `tg<pid>n<run>` (the bridge's name for `tunctl br`, its control socket
/// `/run/tunctl/br/<stem>.sock`, OVS's scratch directory `$TMPDIR/tunctl-bench-<stem>`), plus
/// `a`, `b`, `c` (end namespaces) or `x` (the kernel bridge's or Open vSwitch's namespace).
pub const PREFIX: &str = "tg";

/// The end namespaces' suffixes and addresses (one /24, one broadcast domain); iperf3 runs
/// from the first to the second.
const ENDS: [(&str, &str); 3] = [
    ("a", "10.205.0.1"),
    ("b", "10.205.0.2"),
    ("c", "10.205.0.3"),
];
/// The port device in every end namespace: the bridge's tap, or the kernel bridge's veth end.
const PORT: &str = "bp0";

/// How long a bridge may take to create its ports, and the first pings to come back.
const START_LIMIT: Duration = Duration::from_secs(10);

/// The targets the README states for `br` (learning, vnet_hdr/TSO): (metric, against, at
/// least this ratio of medians).
const TARGETS: [(&str, &str, f64); 5] = [
    ("tcp1", "kernel", 0.9),
    ("tcp1", "c-learn-offload", 1.0),
    ("udp64", "c-learn", 1.0),
    ("tcp1", "ovs", 2.0),
    ("udp64", "ovs", 1.5),
];

/// Runs of this group so far: part of every name, so no two runs share one.
static RUNS: AtomicUsize = AtomicUsize::new(0);

/// One run's namespaces, removed on drop. Declared first in a run, so dropped last: after
/// the bridge process (whose taps live in them) has stopped.
struct Topology {
    stem: String,
    namespaces: Vec<String>,
}

impl Topology {
    fn ns(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.stem)
    }

    /// Creates namespace `<stem><suffix>` with `lo` up; removed with the topology.
    fn add(&mut self, suffix: &str) -> Result<String, String> {
        let name = self.ns(suffix);
        // Kept: the topology's own drop deletes it (also after a failure below).
        Namespace::create(&name).map_err(|e| e.to_string())?.keep();
        self.namespaces.push(name.clone());
        run_ok(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]))?;
        Ok(name)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Namespace::delete(ns);
        }
    }
}

fn ip(ns: &str, args: &[&str]) -> Result<(), String> {
    run_ok(Command::new("ip").args(["-n", ns]).args(args))
}

/// Namespace `x` with a veth from it (`x<suffix>`, up) to each end namespace (`bp0` there):
/// the kernel bridge's and Open vSwitch's ports. Returns `x`'s name.
fn veths_to_ends(topo: &mut Topology) -> Result<String, String> {
    let x = topo.add("x")?;
    for (suffix, _) in ENDS {
        let (end, port) = (topo.ns(suffix), format!("x{suffix}"));
        ip(
            &x,
            &[
                "link", "add", &port, "type", "veth", "peer", "name", PORT, "netns", &end,
            ],
        )?;
        ip(&x, &["link", "set", &port, "up"])?;
    }
    Ok(x)
}

/// `kernel`: a Linux bridge `br0` in namespace `x` (no address), a veth from it to each end
/// namespace (`bp0` there).
fn kernel_bridge(topo: &mut Topology) -> Result<(), String> {
    let x = veths_to_ends(topo)?;
    ip(&x, &["link", "add", "br0", "type", "bridge"])?;
    for (suffix, _) in ENDS {
        ip(&x, &["link", "set", &format!("x{suffix}"), "master", "br0"])?;
    }
    ip(&x, &["link", "set", "br0", "up"])
}

/// Open vSwitch's files for one run (its database, sockets, pid files and logs), removed on
/// drop, after its daemons have stopped.
struct OvsDir(std::path::PathBuf);

impl Drop for OvsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `ovs` and `ovs-tso`: Open vSwitch's userspace datapath as deployed for containers.
/// `ovsdb-server` and `ovs-vswitchd` run in namespace `x` of their own (every file in the
/// run's scratch directory, nothing under /var/run/openvswitch), a bridge `br0` with
/// `datapath_type=netdev` and its default flow (`NORMAL`: MAC learning, ageing 300 s), one
/// port per end namespace: a veth to it, read and written with AF_PACKET. `ovs-tso` sets
/// `other_config:userspace-tso-enable=true` (vnet headers on those sockets: GSO frames
/// cross whole); without it the ends' veths send no partial checksum (`ethtool -K bp0 tx
/// off`, as OVS's documentation asks for a userspace datapath), so frames are MTU-sized.
/// Returns the daemons, `ovs-vswitchd` first.
fn ovs(topo: &mut Topology, tso: bool) -> Result<(Vec<End>, OvsDir), String> {
    let x = veths_to_ends(topo)?;
    let dir = OvsDir(std::env::temp_dir().join(format!("{SCRATCH_PREFIX}{}", topo.stem)));
    std::fs::create_dir_all(&dir.0).map_err(|e| format!("{}: {e}", dir.0.display()))?;
    let path = |f: &str| dir.0.join(f).display().to_string();
    let db = format!("unix:{}", path("db.sock"));
    let with_env = |cmd: &mut Command| {
        for var in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"] {
            cmd.env(var, &dir.0);
        }
    };
    let vsctl = |args: &[&str]| {
        let mut cmd = Command::new("ovs-vsctl");
        with_env(&mut cmd);
        run_ok(cmd.arg(format!("--db={db}")).arg("--timeout=10").args(args))
    };
    run_ok(Command::new("ovsdb-tool").args([
        "create",
        &path("conf.db"),
        "/usr/share/openvswitch/vswitch.ovsschema",
    ]))?;
    let daemon = |label: &str, args: &[String]| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &x]).args(args);
        with_env(&mut cmd);
        die_with_harness(&mut cmd);
        End::spawn(label, cmd, None)
    };
    let mut dbd = daemon(
        "ovsdb-server",
        &[
            "ovsdb-server".into(),
            path("conf.db"),
            format!("--remote=punix:{}", path("db.sock")),
            format!("--unixctl={}", path("ovsdb.ctl")),
            format!("--pidfile={}", path("ovsdb.pid")),
        ],
    )?;
    let deadline = Instant::now() + START_LIMIT;
    while !dir.0.join("db.sock").exists() {
        dbd.alive()?;
        if Instant::now() > deadline || interrupted() {
            return Err("ovsdb-server: no socket within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    vsctl(&["--no-wait", "init"])?;
    if tso {
        vsctl(&[
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            "other_config:userspace-tso-enable=true",
        ])?;
    }
    let vswitchd = daemon(
        "ovs-vswitchd",
        &[
            "ovs-vswitchd".into(),
            db.clone(),
            format!("--unixctl={}", path("vswitchd.ctl")),
            format!("--pidfile={}", path("vswitchd.pid")),
        ],
    )?;
    let mut daemons = vec![vswitchd, dbd];
    vsctl(&[
        "add-br",
        "br0",
        "--",
        "set",
        "bridge",
        "br0",
        "datapath_type=netdev",
    ])?;
    for (suffix, _) in ENDS {
        vsctl(&["add-port", "br0", &format!("x{suffix}")])?;
        if !tso {
            run_ok(Command::new("ip").args([
                "netns",
                "exec",
                &topo.ns(suffix),
                "ethtool",
                "-K",
                PORT,
                "tx",
                "off",
            ]))?;
        }
    }
    for d in &mut daemons {
        d.alive()?;
    }
    Ok((daemons, dir))
}

/// Starts a userspace bridge with a port (tap `bp0`) in each end namespace, and waits (at most
/// 10 s) until every port exists with carrier (the sign that the bridge holds its queue).
fn start_bridge(contender: &str, topo: &Topology) -> Result<End, String> {
    let ports: Vec<String> = ENDS
        .iter()
        .map(|(s, _)| format!("{PORT}@{}", topo.ns(s)))
        .collect();
    let mut cmd = match contender {
        "c-learn" | "c-learn-offload" => {
            let mut c = Command::new(program(
                "BRIDGE_C",
                bench_dir().join("target/bridge-c"),
                "bench/run builds it from c/bridge.c",
            )?);
            c.arg("-l");
            if contender == "c-learn-offload" {
                c.arg("-v");
            }
            c
        }
        "br" | "br-1t" | "br-mq2" | "br-flood" => {
            let mut c = Command::new(program(
                "TUNCTL_BIN",
                bench_dir().join("../target/release/tunctl"),
                "bench/run builds it: cargo build --release -p tunctl-cli",
            )?);
            c.args(["br", "up", &topo.stem]);
            if contender == "br-flood" {
                c.arg("--flood");
            }
            // One thread polling every port instead of one per port.
            if contender == "br-1t" {
                c.arg("--one-thread");
            }
            // Two queues per port, a thread per queue.
            if contender == "br-mq2" {
                c.args(["--queues", "2"]);
            }
            c
        }
        other => return Err(format!("no bridge {other:?}")),
    };
    cmd.args(&ports);
    // A bridge outlives no harness killed outright.
    die_with_harness(&mut cmd);
    let mut bridge = End::spawn(contender, cmd, None)?;
    let deadline = Instant::now() + START_LIMIT;
    let carrier = |suffix: &str| {
        Namespace::named(&topo.ns(suffix))
            .and_then(|ns| Link::by_name(&ns, PORT))
            .and_then(|l| l.info())
            .is_ok_and(|i| i.carrier == Some(true))
    };
    while !ENDS.iter().all(|(s, _)| carrier(s)) {
        bridge.alive()?;
        if interrupted() {
            return Err("interrupted".into());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{contender}: its ports did not all appear within {} s",
                START_LIMIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(bridge)
}

fn figure<'f>(figures: &'f mut [Figure], metric: &str) -> &'f mut Figure {
    let i = figures
        .iter()
        .position(|f| f.metric == metric)
        .expect("every bridge metric has a figure");
    &mut figures[i]
}

/// The frames the end ports have handed to the bridge so far (their transmitted packets; a
/// GSO frame counts one).
fn frames_in(topo: &Topology) -> Result<u64, String> {
    let mut total = 0;
    for (suffix, _) in ENDS {
        let out = run_bounded(
            Command::new("ip").args([
                "-n",
                &topo.ns(suffix),
                "-s",
                "-j",
                "link",
                "show",
                "dev",
                PORT,
            ]),
            Duration::from_secs(10),
        )?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("ip -s -j link show {PORT}: {e}"))?;
        total += v[0]["stats64"]["tx"]["packets"]
            .as_u64()
            .ok_or("ip -s -j: no tx packets")?;
    }
    Ok(total)
}

/// Voluntary context switches of every thread of `pids` so far: each is a sleep that a
/// wake-up ended.
fn wakeups(pids: &[u32]) -> u64 {
    let mut total = 0;
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            total += status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// A probe of `metric` (tcp1 or udp64) for `PROBE_SECONDS`: the system calls (`perf stat`'s
/// count of `raw_syscalls:sys_enter` over every thread of `pids`) and wake-ups of the bridge
/// per frame handed to it. (syscalls/frame, wake-ups/frame).
fn probe(
    topo: &Topology,
    a: &str,
    target: &str,
    metric: &str,
    pids: &[u32],
) -> Result<(f64, f64), String> {
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    let out = std::env::temp_dir().join(format!("{SCRATCH_PREFIX}{}-perf", topo.stem));
    let mut cmd = Command::new("perf");
    cmd.args(["stat", "-e", "raw_syscalls:sys_enter", "-x", ","])
        .arg("-o")
        .arg(&out)
        .args(["-p", &list.join(",")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut perf = die_with_harness(&mut cmd)
        .spawn()
        .map_err(|e| format!("perf stat (install linux-perf): {e}"))?;
    // perf attaches in a moment; the figures are per frame, so a frame or two either side is
    // noise.
    std::thread::sleep(Duration::from_millis(300));
    let (frames0, wakes0) = (frames_in(topo)?, wakeups(pids));
    let traffic = traffic(a, target, metric, PROBE_SECONDS, &[]);
    let (frames1, wakes1) = (frames_in(topo)?, wakeups(pids));
    // SAFETY: kill(2) to our own child, not yet reaped.
    unsafe {
        libc::kill(perf.id() as libc::pid_t, libc::SIGINT);
    }
    let _ = perf.wait();
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    traffic?;
    let calls: f64 = text
        .lines()
        .find(|l| l.contains("raw_syscalls:sys_enter"))
        .and_then(|l| l.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("perf stat counted nothing: {}", text.trim()))?;
    let frames = frames1.saturating_sub(frames0).max(1) as f64;
    Ok((
        calls / frames,
        wakes1.saturating_sub(wakes0) as f64 / frames,
    ))
}

/// One run of `contender`: fresh namespaces, the bridge and its ports, each end's address and
/// link up (`ip -n`), A's first ping to B and to C answered (ARP across the bridge, which
/// learns all three), then `tcp1`, `tcp4`, `udp64` from A to B with the bridge process's CPU
/// time, its peak RSS, and probes of tcp1 and udp64 for system calls and wake-ups per frame;
/// everything stopped and removed. A metric that fails ends the run; the metrics measured
/// before it keep their samples.
pub fn measure_once(contender: &str, opts: &Options, figures: &mut [Figure]) -> Result<(), String> {
    // Dropped in reverse order: the iperf3 server and the bridge before OVS's files and the
    // namespaces.
    let stem = format!(
        "{PREFIX}{}n{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::SeqCst)
    );
    let mut topo = Topology {
        stem,
        namespaces: Vec::new(),
    };
    for (suffix, _) in ENDS {
        topo.add(suffix)?;
    }
    let mut _ovs_dir = None;
    let mut bridge: Vec<End> = match contender {
        "kernel" => {
            kernel_bridge(&mut topo)?;
            Vec::new()
        }
        "ovs" | "ovs-tso" => {
            let (daemons, dir) = ovs(&mut topo, contender == "ovs-tso")?;
            _ovs_dir = Some(dir);
            daemons
        }
        _ => vec![start_bridge(contender, &topo)?],
    };
    for (suffix, addr) in ENDS {
        let ns = topo.ns(suffix);
        ip(&ns, &["address", "add", &format!("{addr}/24"), "dev", PORT])?;
        ip(&ns, &["link", "set", "dev", PORT, "up"])?;
    }
    let (a, (b, target)) = (topo.ns(ENDS[0].0), (topo.ns(ENDS[1].0), ENDS[1].1));
    for (_, addr) in &ENDS[1..] {
        first_reply(&a, addr, Instant::now())?;
    }
    let server = iperf_server(&b, target)?;
    let pids: Vec<u32> = bridge.iter().map(End::pid).collect();
    let alive = |bridge: &mut Vec<End>| -> Result<(), String> {
        bridge.iter_mut().try_for_each(End::alive)
    };
    let mut measure = || -> Result<(), String> {
        for metric in ["tcp1", "tcp4", "udp64"] {
            alive(&mut bridge)?;
            let sample = traffic(&a, target, metric, opts.seconds, &pids)?;
            // A bridge that died during the test makes the figure meaningless.
            alive(&mut bridge)?;
            figure(figures, metric).push(sample);
        }
        if pids.is_empty() {
            return Ok(());
        }
        for metric in ["tcp1", "udp64"] {
            let (calls, wakes) = probe(&topo, &a, target, metric, &pids)?;
            alive(&mut bridge)?;
            figure(figures, &format!("{metric}-sys")).push(Sample::plain(calls));
            figure(figures, &format!("{metric}-wake")).push(Sample::plain(wakes));
        }
        Ok(())
    };
    let result = measure();
    // Peak RSS, read before the bridge is stopped (also after a failed test: the peak so far
    // is still the bridge's). For OVS, ovs-vswitchd's (the datapath).
    if let Some(rss) = bridge.first().and_then(End::peak_rss) {
        figure(figures, "rss").push(Sample::plain(rss));
    }
    drop(server);
    drop(bridge);
    drop(_ovs_dir);
    drop(topo);
    result
}

/// `kernel` runs no process: no CPU, no memory, no system calls.
fn applies(contender: &str, metric: &str) -> bool {
    contender != "kernel" || higher_is_better(metric)
}

fn higher_is_better(metric: &str) -> bool {
    matches!(metric, "tcp1" | "tcp4" | "udp64")
}

/// The table of every figure (min/median/max, br's median over this one's, the bridge
/// process's CPU, retransmits), br against each contender per metric, and br against its
/// targets.
pub fn report(figures: &[Figure], failures: &[String], opts: &Options) -> String {
    let quotient = |c: &str, m: &str, cpu: bool| match (
        median_of(figures, "br", m, cpu),
        median_of(figures, c, m, cpu),
    ) {
        (Some(v), Some(b)) if b > 0.0 => Some(v / b),
        _ => None,
    };
    let ratio = |c: &str, m: &str, cpu: bool| cell(quotient(c, m, cpu), 2, "×");
    let mut out = report_head(opts, &["br ÷ this"]);
    for f in figures.iter().filter(|f| applies(f.contender, f.metric)) {
        let d = match f.metric {
            "rss" => 1,
            m if higher_is_better(m) => 2,
            // Per frame: wake-ups are often well under one in a hundred.
            _ => 3,
        };
        out.push_str(&figure_row(f, d, &[ratio(f.contender, f.metric, false)]));
    }
    let mut others: Vec<&str> = Vec::new();
    for f in figures {
        if f.contender != "br" && !others.contains(&f.contender) {
            others.push(f.contender);
        }
    }
    let has_br = figures.iter().any(|f| f.contender == "br");
    out.push_str(&against_each(
        figures,
        "br",
        &METRICS,
        higher_is_better,
        &ratio,
    ));
    if has_br && TARGETS.iter().any(|(_, c, _)| others.contains(c)) {
        out.push_str(&format!(
            "\nbr against its targets{}:\n\n| target | br ÷ baseline | |\n|---|---|---|\n",
            if opts.smoke() {
                " (a smoke run: no verdict)"
            } else {
                ""
            }
        ));
        for (m, c, at_least) in TARGETS {
            let q = quotient(c, m, false);
            out.push_str(&format!(
                "| {m} ≥ {at_least:.1}× {c} | {} | {} |\n",
                cell(q, 2, "×"),
                verdict(q, at_least, opts)
            ));
        }
    }
    out.push_str(&report_tail(
        opts,
        failures,
        &format!(
            " (every contender's first run, then every contender's second, ...). `runs` counts \
             the runs that produced the figure; min, median and max are over those runs (the \
             median of an even count is the mean of the middle two). `br ÷ this` is br's median \
             over this contender's: above 1× br is ahead in tcp1/tcp4/udp64, below 1× it is \
             ahead in rss, CPU, system calls and wake-ups. CPU is the bridge process's (all its \
             threads; for OVS both daemons) over the test's duration, 100% = one core; the \
             kernel bridge runs in softirq, which is nobody's (`kernel`: no CPU, rss, system \
             calls or wake-ups). `rss`: the bridge process's peak resident memory (VmHWM; for \
             OVS ovs-vswitchd's), read after the traffic. `-sys` and `-wake`: per frame handed \
             to the bridge, from a {PROBE_SECONDS}-second probe of that test after the others."
        ),
    ));
    out
}

/// The `bridge` section of BENCHMARKS.md around its `table`, measured `on` (machine, date).
pub fn section(on: &str, table: &str) -> String {
    format!(
        "## bridge: namespaces A, B, C ⇄ one port each of a bridge\n\n\
         Produced by `bench/run bridge` (see bench/README.md) on {on}.\n\n\
         {INTRO}\n\n{table}\n{NOTES}\n"
    )
}

/// What the figures say, for BENCHMARKS.md (after the table): what a frame costs each
/// bridge, from the probes and from profiles taken beside them.
pub const NOTES: &str = "What a frame costs. Every tap bridge (`c-learn*`, `br*`) pays two \
system calls per frame (a read and a write; `-sys` is 2.0 for small frames; `strace -c` of \
`br` on tcp1 counts per frame one `pwritev2`, 1.2 `preadv2` of which 0.2 find the port empty, \
and 0.2 `ppoll`, on udp64 one of each and hardly a `ppoll`) and two copies of it, which a tap \
cannot avoid: in a `perf record -a` of `br` on tcp1, `_copy_to_iter` (the \
read) and `_copy_from_iter` (the write) are a third of br's CPU; the rest is the receiving \
end's stack, which runs inside br's write as it runs inside the kernel bridge's softirq. The \
kernel bridge makes neither copy: that is the gap to `kernel` on tcp1 and tcp4. What \
separates the tap bridges on TCP is wake-ups (`tcp1-wake`): a thread per port sleeps as soon \
as its own port is empty, so data and acknowledgements each wake a thread (about 0.25 \
wake-ups per frame); one thread for all ports (`br-1t`, the C bridge) is woken only when \
every port is empty (under 0.1), at less CPU. On udp64 the sender is never held back (a tap, \
like a veth, drops what does not fit rather than stopping its queue) and takes a core of its \
own; every userspace bridge shares the other with the receiver, whose stack runs inside the \
bridge's write, so they all land near one another (Open vSwitch's udp64 swings widely from \
run to run), while the kernel bridge does that work in the sender's own time and leaves the \
receiver a core. `--flood` writes each frame to two ports: \
three system calls per frame. Open vSwitch batches (a pass of its main loop, per `strace -c`: one \
`poll`, a `recvmmsg` of up to 32 packets per port, a `sendmmsg` per output batch, and a dozen \
calls that find nothing: netlink, its control sockets, `getrusage`; 0.2 system calls per \
small frame) yet does more per packet than br: a `malloc` and a `free` of a packet buffer (a sixth \
of its CPU in a profile of `ovs-vswitchd`), a flow key extracted from every header and \
looked up in its caches and classifier (the `NORMAL` action, its MAC learning, runs in the \
slow path, and revalidator threads re-check the flows), and, without userspace TSO, frames \
no bigger than the MTU: the sending stack segments and checksums 64 KB into 45 frames in \
software, which is most of the difference between `ovs` and `ovs-tso` on TCP. With TSO it \
copies each frame in and out through AF_PACKET as a tap bridge does, at 3 to 4 system calls \
per frame.";

/// What the group measures, for BENCHMARKS.md.
pub const INTRO: &str = "Three namespaces A, B, C (10.205.0.1–3/24), each with one port of \
the bridge: `kernel` a Linux bridge in a namespace of its own with a veth to each; `c-learn` \
and `c-learn-offload` the C learning bridge (`bench/c/bridge.c`: one thread, poll() over its \
taps, a hashed learning table with ageing; `-offload`: vnet_hdr taps with TSO, GSO frames passed \
through); `ovs` and `ovs-tso` Open vSwitch's userspace datapath (Debian's 3.1: `ovsdb-server` \
and `ovs-vswitchd` in a namespace of their own, a bridge with `datapath_type=netdev` and its \
`NORMAL` learning flow, a veth to each end read and written through AF_PACKET; `-tso`: \
`other_config:userspace-tso-enable=true`, vnet headers on those sockets, GSO frames whole; \
without it the ends send no partial checksums, `ethtool -K bp0 tx off`, as OVS asks); `br` \
ours (`tunctl br up`, vnet_hdr taps with TSO, learning, a thread per port), `br-1t` \
(`--one-thread`: one thread polls every port), `br-mq2` (`--queues 2`: multi-queue taps, a \
thread per queue) and `br-flood` (`--flood`: every frame to every other port). iperf3 from A to B: `tcp1`, `tcp4` (Gbit/s received), `udp64` (64-byte \
datagrams, thousands received per second); C only sees what the bridge floods. MTU 1500. \
Then a 2-second probe of tcp1 and of udp64 each: `-sys`, the bridge's system calls (every \
thread of its process, both OVS daemons; `perf stat -e raw_syscalls:sys_enter`) and `-wake`, \
its wake-ups (voluntary context switches: each a sleep that a wake-up ended), per frame the \
end ports handed to the bridge (their transmitted packets: a GSO frame counts one; in `ovs` \
frames are MTU-sized). Targets for `br`: tcp1 ≥ 0.9× `kernel`, ≥ 1.0× `c-learn-offload` and \
≥ 2× `ovs`; udp64 ≥ 1.0× `c-learn` and ≥ 1.5× `ovs`. Bridge figures are noisy on 2 shared \
cores: compare within this run only.";

/// Where `tunctl br` keeps its control sockets (`<bridge>.sock`): stale ones of this group's
/// bridges are swept like the tunnel group's UAPI sockets.
pub const CONTROL_DIR: &str = "/run/tunctl/br";

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(reps: usize) -> Options {
        Options {
            quick: false,
            json: false,
            reps,
            seconds: 5,
            only: Vec::new(),
            groups: vec!["bridge"],
        }
    }

    #[test]
    fn report_has_br_ratios_and_targets() {
        let mut figures = Vec::new();
        for (c, v) in [("kernel", 2.0), ("c-learn", 1.0), ("br", 1.9)] {
            for (m, u) in METRICS {
                let mut f = Figure::new(c, m, u);
                f.push(Sample {
                    value: v,
                    cpu: (c != "kernel").then_some(v * 50.0),
                    retransmits: None,
                });
                figures.push(f);
            }
        }
        let r = report(&figures, &[], &opts(3));
        assert!(r.contains("| c-learn | tcp1 (Gbit/s) | 1 | 1.00 | 1.00 | 1.00 | 1.90× |"));
        assert!(!r.contains("| kernel | rss"));
        assert!(r.contains("| tcp1 (higher is better) | 0.95× | 1.90× |"));
        assert!(r.contains("| tcp1 CPU (lower is better) | – | 1.90× |"));
        assert!(r.contains("| tcp1 ≥ 0.9× kernel | 0.95× | met |"));
        assert!(r.contains("| tcp1 ≥ 1.0× c-learn-offload | – | – |"));
        assert!(r.contains("| udp64 ≥ 1.0× c-learn | 1.90× | met |"));
        assert!(!r.contains("SMOKE"));
        let smoke = report(&figures, &[], &opts(1));
        assert!(smoke.contains("| udp64 ≥ 1.0× c-learn | 1.90× | smoke |"));
        assert!(smoke.starts_with("> **SMOKE RUN"));
    }

    #[test]
    fn names_fit() {
        // The bridge's name (tunctl br: an interface-like name) with the largest pid.
        let longest = format!("{PREFIX}{}n{}", 4_194_304, 999);
        assert!(longest.len() <= 15);
    }
}
