//! The `tunnel` group: two namespaces A and B joined by a veth (the underlay), one WireGuard
//! end in each (ours, wireguard-go old and new, boringtun, gotatun), iperf3 and ping from A to B
//! through the tunnel; the veth alone (`kernel`) and the C pass-through forwarder
//! (`c-offload`) as ceilings. Everything a run starts (namespaces, processes, UAPI sockets,
//! key files) is removed at its end, also when it fails or the harness is interrupted.
//!
//! Each contender starts one end through a small function (`start_end`). The userspace
//! WireGuards configured over their UAPI socket (wireguard-go, boringtun, gotatun) share `wg_style`:
//! start the daemon in the namespace, `wg set`, `ip address`, `ip link set up`. vpwn is started
//! by its own CLI (`tunctl vpwn up`), or, with `TUNCTL_VPWN_DROPIN=PATH`, as a wireguard-go
//! drop-in (`PATH -f NAME`, then the same `wg set`).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tunctl::{Device, Link, Namespace};

use crate::harness::{
    against_each, bench_dir, figure_row, interrupted, iperf_server, median_of, report_head,
    report_tail, run_bounded, run_bounded_input, run_ok, spread, start_forwarder, traffic, Figure,
    Options, Sample,
};

/// The tunnel contenders, in report order and in the order each round takes them.
pub const CONTENDERS: [&str; 15] = [
    "vpwn",
    // vpwn without one part of its fast path each (`vpwn up --without`), and without all
    // three: what each part buys.
    "vpwn-no-tso",
    "vpwn-no-gso",
    "vpwn-no-gro",
    "vpwn-plain",
    // vpwn with 999 more peers and 99,900 more allowed networks on each end (`wg addconf`):
    // whether the allowed-IPs lookup grows with the table.
    "vpwn-many",
    // Both ends pinned to one core (`taskset -c 0`), against the unpinned runs: how each
    // scales with cores.
    "vpwn-1cpu",
    "wireguard-go-new",
    "wireguard-go-new-1cpu",
    "wireguard-go",
    "boringtun",
    "boringtun-t1",
    "gotatun",
    "kernel",
    "c-offload",
];

/// (metric, unit), in report order. `rtt`, `up` and the memory figures are better when lower.
pub const METRICS: [(&str, &str); 7] = [
    ("tcp1", "Gbit/s"),
    ("tcp4", "Gbit/s"),
    ("udp64", "kpps"),
    ("rtt", "ms"),
    ("up", "ms"),
    ("rss-a", "MiB"),
    ("rss-b", "MiB"),
];

/// Where userspace WireGuards (and vpwn) put their UAPI sockets: one directory for every
/// namespace, so device names are unique per host (`tw<pid>n<run><a|b>`).
pub const UAPI_DIR: &str = "/var/run/wireguard";

/// A run's scratch directory (its key files) is `temp_dir()/SCRATCH_PREFIX<stem>`.
pub const SCRATCH_PREFIX: &str = "tunctl-bench-";

/// The underlay (veth `ua` in A, `ub` in B) and the tunnel addresses.
const UNDER_A: &str = "10.203.0.1";
const UNDER_B: &str = "10.203.0.2";
const TUN_A: &str = "10.204.0.1";
const TUN_B: &str = "10.204.0.2";
/// Both ends listen on this port, each in its own namespace.
const PORT: u16 = 51820;
/// WireGuard's default, used by every tunnel (and by `c-offload`'s tun devices).
const MTU: &str = "1420";
/// The tun devices of `c-offload`.
const C_DEV: &str = "ctun0";

/// `vpwn-many`'s extra peers on each end, and the allowed networks of each: 99,900 networks.
const MANY_PEERS: usize = 999;
const NETWORKS_PER_PEER: usize = 100;

/// How long an end may take to come up, and a first ping to come back.
const START_LIMIT: Duration = Duration::from_secs(10);
const UP_LIMIT: Duration = Duration::from_secs(15);

/// Runs of this harness so far: part of every name, so no two runs share one.
static RUNS: AtomicUsize = AtomicUsize::new(0);

/// One run's namespaces (and its scratch directory with the keys), removed on drop. Declared
/// first in a run, so dropped last: after the ends that live in it have stopped.
struct Topology {
    a: String,
    b: String,
    /// `tw<pid>n<run>`: namespace and device names are this plus `a` or `b`.
    stem: String,
    dir: PathBuf,
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Namespace::delete(&self.a);
        let _ = Namespace::delete(&self.b);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The namespaces of one run, each with `lo` up, joined by a veth: `ua` 10.203.0.1/24 in A,
/// `ub` 10.203.0.2/24 in B. Nothing is added to the root namespace.
fn setup() -> Result<Topology, String> {
    let stem = format!(
        "tw{}n{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::SeqCst)
    );
    let topo = Topology {
        a: format!("{stem}a"),
        b: format!("{stem}b"),
        dir: std::env::temp_dir().join(format!("{SCRATCH_PREFIX}{stem}")),
        stem,
    };
    // Kept: the topology's own drop deletes them (also after a failure below).
    Namespace::create(&topo.a)
        .map_err(|e| e.to_string())?
        .keep();
    Namespace::create(&topo.b)
        .map_err(|e| e.to_string())?
        .keep();
    let ip = |args: &[&str]| run_ok(Command::new("ip").args(args));
    ip(&[
        "-n", &topo.a, "link", "add", "ua", "type", "veth", "peer", "name", "ub", "netns", &topo.b,
    ])?;
    for (ns, dev, addr) in [(&topo.a, "ua", UNDER_A), (&topo.b, "ub", UNDER_B)] {
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            ns,
            "address",
            "add",
            &format!("{addr}/24"),
            "dev",
            dev,
        ])?;
        ip(&["-n", ns, "link", "set", dev, "up"])?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&topo.dir)
        .map_err(|e| format!("{}: {e}", topo.dir.display()))?;
    Ok(topo)
}

/// A private key file (`wg genkey`, mode 0600) in `dir`, and its public key (`wg pubkey`).
fn keypair(dir: &Path, name: &str) -> Result<(PathBuf, String), String> {
    let out = run_bounded(Command::new("wg").arg("genkey"), Duration::from_secs(5))?;
    if !out.status.success() {
        return Err(format!(
            "wg genkey: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    std::io::Write::write_all(&mut file, &out.stdout).map_err(|e| e.to_string())?;
    let key = std::fs::File::open(&path).map_err(|e| e.to_string())?;
    let out = run_bounded_input(
        Command::new("wg").arg("pubkey"),
        key.into(),
        Duration::from_secs(5),
    )?;
    let public = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || public.len() != 44 {
        return Err(format!(
            "wg pubkey: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok((path, public))
}

/// What one end of a tunnel needs to know.
#[derive(Clone)]
struct EndConfig<'a> {
    ns: &'a str,
    /// The device name, unique on the host (its UAPI socket is `UAPI_DIR/<dev>.sock`).
    dev: String,
    key: &'a Path,
    /// This end's tunnel address with its prefix (`10.204.0.1/24`).
    address: String,
    peer_key: &'a str,
    /// The other end's underlay address and port.
    peer: String,
    /// The other end's tunnel address (`10.204.0.2/32`).
    allowed: String,
    /// Whether the end runs on the first core only (`-1cpu` contenders).
    pin: bool,
}

/// A running process of a run (a tunnel end, the C forwarder, a bridge of the `bridge` group):
/// its output kept (the last lines, for the error when it fails); on drop SIGTERM, up to 3 s to
/// exit, then SIGKILL, and its UAPI socket removed if it left one.
pub(crate) struct End {
    label: String,
    child: Child,
    /// The device, for the UAPI socket; `None` for the C forwarder.
    dev: Option<String>,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl End {
    pub(crate) fn spawn(label: &str, mut cmd: Command, dev: Option<String>) -> Result<End, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start {label}: {cmd:?}: {e}"))?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let pipes: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ];
        for pipe in pipes.into_iter().flatten() {
            let log = Arc::clone(&log);
            // Ends when the process (the pipe's only writer) exits.
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
                    if l.len() == 12 {
                        l.pop_front();
                    }
                    l.push_back(line);
                }
            });
        }
        Ok(End {
            label: label.to_string(),
            child,
            dev,
            log,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Err` (with its last output) if the process has exited.
    pub(crate) fn alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                // Give the reader threads a moment to take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
                let tail: Vec<&str> = log.iter().map(String::as_str).collect();
                Err(format!(
                    "{} exited ({status}): {}",
                    self.label,
                    if tail.is_empty() {
                        "no output".to_string()
                    } else {
                        tail.join(" / ")
                    }
                ))
            }
            Err(e) => Err(format!("{}: {e}", self.label)),
        }
    }

    /// Peak resident set (VmHWM) in MiB, while the process runs.
    pub(crate) fn peak_rss(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }
}

impl Drop for End {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own child's pid, which is not reaped yet (so not reused).
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if let Ok(None) = self.child.try_wait() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if let Some(dev) = &self.dev {
            let _ = std::fs::remove_file(socket(dev));
        }
    }
}

fn socket(dev: &str) -> PathBuf {
    Path::new(UAPI_DIR).join(format!("{dev}.sock"))
}

/// A program the harness runs: `$VAR` if set, else `default`; an error naming what builds it
/// when it is missing.
pub(crate) fn program(var: &str, default: PathBuf, built_by: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or(default);
    if path.as_os_str().is_empty() || !path.is_file() {
        return Err(format!("{} not found (${var}; {built_by})", path.display()));
    }
    Ok(path)
}

fn peers_dir() -> PathBuf {
    bench_dir().join("target/peers")
}

/// Starts one end of `contender`'s tunnel and returns once it is configured and up. A
/// `-1cpu` contender is its base one with the end pinned to the first core.
fn start_end(contender: &str, end: &EndConfig) -> Result<End, String> {
    let (base, pin) = match contender.strip_suffix("-1cpu") {
        Some(base) => (base, true),
        None => (contender, false),
    };
    let end = &EndConfig { pin, ..end.clone() };
    let boringtun = || {
        program(
            "BORINGTUN",
            peers_dir().join("bin/boringtun-cli"),
            "bench/run installs boringtun-cli 0.7.1 into bench/target/peers",
        )
    };
    match base {
        "vpwn" => vpwn(contender, end, None),
        "vpwn-no-tso" => vpwn(contender, end, Some("tun-offload")),
        "vpwn-no-gso" => vpwn(contender, end, Some("udp-gso")),
        "vpwn-no-gro" => vpwn(contender, end, Some("udp-gro")),
        "vpwn-plain" => vpwn(contender, end, Some("tun-offload,udp-gso,udp-gro")),
        "vpwn-many" => {
            let e = vpwn(contender, end, None)?;
            add_many_peers(end)?;
            Ok(e)
        }
        "wireguard-go-new" => wg_style(
            contender,
            &program(
                "WIREGUARD_GO_NEW",
                peers_dir().join("wireguard-go-new"),
                "bench/run builds it from shared/peers/wireguard-go",
            )?,
            &["-f"],
            end,
        ),
        "wireguard-go" => wg_style(
            contender,
            &program(
                "WIREGUARD_GO",
                PathBuf::from("/usr/bin/wireguard-go"),
                "Debian's wireguard-go package",
            )?,
            &["-f"],
            end,
        ),
        "boringtun" => wg_style(
            contender,
            &boringtun()?,
            &["-f", "--disable-drop-privileges"],
            end,
        ),
        "boringtun-t1" => wg_style(
            contender,
            &boringtun()?,
            &["-f", "--disable-drop-privileges", "--threads", "1"],
            end,
        ),
        // gotatun-cli takes boringtun-cli's options.
        "gotatun" => wg_style(
            contender,
            &program(
                "GOTATUN",
                peers_dir().join("bin/gotatun"),
                "bench/run installs gotatun-cli into bench/target/peers",
            )?,
            &["-f", "--disable-drop-privileges"],
            end,
        ),
        other => Err(format!("no tunnel end for {other:?}")),
    }
}

/// vpwn: `tunctl vpwn up` with every setting on its command line; it creates, addresses and
/// raises the device itself. With `TUNCTL_VPWN_DROPIN=PATH`, a wireguard-go drop-in started and
/// configured as wireguard-go is.
fn vpwn(label: &str, end: &EndConfig, without: Option<&str>) -> Result<End, String> {
    if let Some(dropin) = std::env::var_os("TUNCTL_VPWN_DROPIN") {
        let path = program(
            "TUNCTL_VPWN_DROPIN",
            PathBuf::from(&dropin),
            "a tunctl-vpwn binary",
        )?;
        return wg_style("vpwn (drop-in)", &path, &["-f"], end);
    }
    let tunctl = program(
        "TUNCTL_BIN",
        bench_dir().join("../target/release/tunctl"),
        "bench/run builds it: cargo build --release -p tunctl-cli",
    )?;
    let _ = std::fs::remove_file(socket(&end.dev));
    let port = PORT.to_string();
    let mut cmd = launcher(end.pin, &tunctl);
    cmd.args(["vpwn", "up", &end.dev, "--netns", end.ns, "--key-file"])
        .arg(end.key)
        .args([
            "--listen",
            &port,
            "--peer",
            &end.peer,
            "--peer-key",
            end.peer_key,
        ])
        .args([
            "--allowed-ips",
            &end.allowed,
            "--address",
            &end.address,
            "--mtu",
            MTU,
        ]);
    if let Some(w) = without {
        cmd.args(["--without", w]);
    }
    let mut e = End::spawn(label, cmd, Some(end.dev.clone()))?;
    wait_ready(&mut e, end)?;
    Ok(e)
}

/// `program`, or `taskset -c 0 program` when `pin`: the process and all it starts run on the
/// first core only (Go's runtime then uses one processor, as it reads the affinity).
fn launcher(pin: bool, program: &Path) -> Command {
    if pin {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "0"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// Extra peers for `end`'s running tunnel, through `wg addconf` (so through the UAPI):
/// `MANY_PEERS` peers without endpoints, each with `NETWORKS_PER_PEER` /30 networks from
/// 100.64.0.0/10, none of which overlaps the tunnel's addresses. Their keys are arbitrary
/// 32-byte values (any is a valid X25519 public key); no handshake is ever made with them.
fn add_many_peers(end: &EndConfig) -> Result<(), String> {
    use base64::Engine as _;
    let mut conf = String::with_capacity(MANY_PEERS * (60 + NETWORKS_PER_PEER * 20));
    for p in 0..MANY_PEERS {
        let mut key = [0x5a_u8; 32];
        key[..8].copy_from_slice(&(p as u64 + 1).to_be_bytes());
        let key = base64::engine::general_purpose::STANDARD.encode(key);
        conf.push_str(&format!("[Peer]\nPublicKey = {key}\nAllowedIPs = "));
        for n in 0..NETWORKS_PER_PEER {
            let net = 0x6440_0000_u32 + ((p * NETWORKS_PER_PEER + n) as u32) * 4;
            if n > 0 {
                conf.push_str(", ");
            }
            conf.push_str(&format!("{}/30", std::net::Ipv4Addr::from(net)));
        }
        conf.push('\n');
    }
    let path = end.key.with_file_name(format!("{}-many.conf", end.dev));
    std::fs::write(&path, conf).map_err(|e| format!("{}: {e}", path.display()))?;
    let out = run_bounded(
        Command::new("ip")
            .args(["netns", "exec", end.ns, "wg", "addconf", &end.dev])
            .arg(&path),
        Duration::from_secs(30),
    )?;
    let _ = std::fs::remove_file(&path);
    if !out.status.success() {
        return Err(format!(
            "wg addconf {}: {}",
            end.dev,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// A userspace WireGuard that serves the UAPI: `PROGRAM ARGS DEV` started in the namespace
/// (in the foreground), then `wg set` (key, port, peer), address, MTU and up with `ip`.
fn wg_style(label: &str, program: &Path, args: &[&str], end: &EndConfig) -> Result<End, String> {
    let sock = socket(&end.dev);
    // A socket of that name can only be a stale one (names are unique per harness run).
    let _ = std::fs::remove_file(&sock);
    let mut cmd = launcher(end.pin, Path::new("ip"));
    cmd.args(["netns", "exec", end.ns])
        .arg(program)
        .args(args)
        .arg(&end.dev)
        // wireguard-go's foreground switch; boringtun reads its options from WG_* too: none
        // inherited from the caller's environment.
        .env("WG_PROCESS_FOREGROUND", "1")
        .env_remove("WG_THREADS")
        .env_remove("WG_LOG_LEVEL")
        .env_remove("WG_TUN_FD")
        .env_remove("WG_UAPI_FD")
        .env_remove("LOG_LEVEL");
    let mut e = End::spawn(label, cmd, Some(end.dev.clone()))?;
    let deadline = Instant::now() + START_LIMIT;
    while !sock.exists() {
        e.alive()?;
        if interrupted() {
            return Err("interrupted".into());
        }
        if Instant::now() > deadline {
            return Err(format!("{label}: no {} within 10 s", sock.display()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let port = PORT.to_string();
    let mut wg = Command::new("ip");
    wg.args([
        "netns",
        "exec",
        end.ns,
        "wg",
        "set",
        &end.dev,
        "private-key",
    ])
    .arg(end.key)
    .args([
        "listen-port",
        &port,
        "peer",
        end.peer_key,
        "endpoint",
        &end.peer,
    ])
    .args(["allowed-ips", &end.allowed]);
    // The socket file exists a moment before it accepts: a few tries.
    let mut tries = 0;
    while let Err(why) = run_ok(&mut wg) {
        tries += 1;
        e.alive()?;
        if tries == 20 || interrupted() {
            return Err(format!("{label}: {why}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ip = |args: &[&str]| run_ok(Command::new("ip").args(["-n", end.ns]).args(args));
    ip(&["address", "add", &end.address, "dev", &end.dev])?;
    ip(&["link", "set", "dev", &end.dev, "mtu", MTU, "up"])?;
    wait_ready(&mut e, end)?;
    Ok(e)
}

/// Waits (at most 10 s) until the end's device is up and its UDP port bound in its namespace.
fn wait_ready(e: &mut End, end: &EndConfig) -> Result<(), String> {
    let deadline = Instant::now() + START_LIMIT;
    let ns = Namespace::named(end.ns).map_err(|x| x.to_string())?;
    let up = || {
        Link::by_name(&ns, &end.dev)
            .and_then(|l| l.info())
            .is_ok_and(|i| i.flags & libc::IFF_UP as u32 != 0)
    };
    while !(up() && udp_bound(&ns, PORT)) {
        e.alive()?;
        if interrupted() {
            return Err("interrupted".into());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{}: device {} not up with UDP port {PORT} bound within 10 s",
                e.label, end.dev
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Whether a UDP socket (v4 or v6) is bound to `port` in namespace `ns`.
fn udp_bound(ns: &Namespace, port: u16) -> bool {
    let hex = format!(":{port:04X}");
    ns.run(|| {
        // thread-self: the namespace of this thread (the one `run` moved), not the process's.
        ["/proc/thread-self/net/udp", "/proc/thread-self/net/udp6"]
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .any(|t| {
                t.lines()
                    .skip(1)
                    .filter_map(|l| l.split_whitespace().nth(1))
                    .any(|local| local.ends_with(&hex))
            })
    })
    .unwrap_or(false)
}

/// `c-offload` over this topology: a vnet_hdr tun device in each namespace (10.204.0.1 ⇄
/// 10.204.0.2, MTU 1420), joined by the C pass-through forwarder. No encryption, no UDP, no
/// veth: the ceiling of a userspace hop between the two namespaces.
fn start_c_offload(topo: &Topology) -> Result<End, String> {
    for (ns, local, peer) in [(&topo.a, TUN_A, TUN_B), (&topo.b, TUN_B, TUN_A)] {
        let namespace = Namespace::named(ns).map_err(|e| e.to_string())?;
        let dev = Device::builder()
            .tun()
            .name(C_DEV)
            .namespace(namespace)
            .vnet_hdr(true)
            .create()
            .map_err(|e| e.to_string())?;
        dev.set_persist(true).map_err(|e| e.to_string())?;
        drop(dev);
        let ip = |args: &[&str]| run_ok(Command::new("ip").args(["-n", ns]).args(args));
        ip(&[
            "address",
            "add",
            local,
            "peer",
            &format!("{peer}/32"),
            "dev",
            C_DEV,
        ])?;
        ip(&["link", "set", "dev", C_DEV, "mtu", MTU, "up"])?;
    }
    let child =
        start_forwarder("c-offload", &topo.a, &topo.b, C_DEV)?.ok_or("c-offload: no forwarder")?;
    let log = Arc::new(Mutex::new(VecDeque::new()));
    Ok(End {
        label: "c-offload".into(),
        child,
        dev: None,
        log,
    })
}

/// Milliseconds from `since` until a ping from namespace `ns` to `target` is answered:
/// pings every 5 ms until a reply, retried (every 5 ms) while the path does not exist yet.
pub(crate) fn first_reply(ns: &str, target: &str, since: Instant) -> Result<f64, String> {
    let deadline = since + UP_LIMIT;
    // Bounded in count too: each try lasts at least a few ms.
    for _ in 0..3000 {
        if interrupted() {
            return Err("interrupted".into());
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        let wait = left.as_secs().max(1).to_string();
        let out = run_bounded(
            Command::new("ip").args([
                "netns", "exec", ns, "ping", "-n", "-q", "-c", "1", "-i", "0.005", "-w", &wait,
                target,
            ]),
            left + Duration::from_secs(2),
        )?;
        if out.status.success() {
            return Ok(since.elapsed().as_secs_f64() * 1e3);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(format!(
        "no ping reply from {target} within {} s of starting",
        UP_LIMIT.as_secs()
    ))
}

/// The median round trip in ms of 20 pings (20 ms apart) from namespace `ns` to `target`.
fn ping_rtt(ns: &str, target: &str) -> Result<f64, String> {
    let out = run_bounded(
        Command::new("ip").args([
            "netns", "exec", ns, "ping", "-n", "-c", "20", "-i", "0.02", "-w", "10", target,
        ]),
        Duration::from_secs(15),
    )?;
    let times: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    spread(&times)
        .map(|s| s.median)
        .ok_or_else(|| format!("ping {target}: no reply"))
}

fn figure<'f>(figures: &'f mut [Figure], metric: &str) -> &'f mut Figure {
    let i = figures
        .iter()
        .position(|f| f.metric == metric)
        .expect("every tunnel metric has a figure");
    &mut figures[i]
}

/// One run of `contender`: fresh namespaces and veth, fresh keys, end B then end A started
/// (each waited for), the first ping through (`up`), then `rtt`, `tcp1`, `tcp4`, `udp64`, the
/// ends' peak RSS; everything stopped and removed. A metric that fails ends the run; the
/// metrics measured before it keep their samples.
pub fn measure_once(contender: &str, opts: &Options, figures: &mut [Figure]) -> Result<(), String> {
    // Dropped in reverse order: the ends and the iperf3 server before the namespaces.
    let topo = setup()?;
    let mut ends: Vec<End> = Vec::new();
    let mut a_end = None;
    let mut b_end = None;
    let since;
    let target = match contender {
        "kernel" => {
            since = Instant::now();
            UNDER_B
        }
        "c-offload" => {
            since = Instant::now();
            ends.push(start_c_offload(&topo)?);
            TUN_B
        }
        _ => {
            let (key_a, pub_a) = keypair(&topo.dir, "a.key")?;
            let (key_b, pub_b) = keypair(&topo.dir, "b.key")?;
            let config_a = EndConfig {
                ns: &topo.a,
                dev: format!("{}a", topo.stem),
                key: &key_a,
                address: format!("{TUN_A}/24"),
                peer_key: &pub_b,
                peer: format!("{UNDER_B}:{PORT}"),
                allowed: format!("{TUN_B}/32"),
                pin: false,
            };
            let config_b = EndConfig {
                ns: &topo.b,
                dev: format!("{}b", topo.stem),
                key: &key_b,
                address: format!("{TUN_B}/24"),
                peer_key: &pub_a,
                peer: format!("{UNDER_A}:{PORT}"),
                allowed: format!("{TUN_A}/32"),
                pin: false,
            };
            // B first, so that A's first handshake finds B listening; timed from B's start.
            since = Instant::now();
            ends.push(start_end(contender, &config_b)?);
            b_end = Some(0);
            ends.push(start_end(contender, &config_a)?);
            a_end = Some(1);
            TUN_B
        }
    };
    let up = first_reply(&topo.a, target, since)?;
    figure(figures, "up").push(Sample::plain(up));
    let server = iperf_server(&topo.b, target)?;
    let pids: Vec<u32> = ends.iter().map(End::pid).collect();
    let mut measure = || -> Result<(), String> {
        let rtt = ping_rtt(&topo.a, target)?;
        figure(figures, "rtt").push(Sample::plain(rtt));
        for metric in ["tcp1", "tcp4", "udp64"] {
            for e in &mut ends {
                e.alive()?;
            }
            let sample = traffic(&topo.a, target, metric, opts.seconds, &pids)?;
            // An end that died during the test makes the figure meaningless.
            for e in &mut ends {
                e.alive()?;
            }
            figure(figures, metric).push(sample);
        }
        Ok(())
    };
    let result = measure();
    // Peak RSS of each end, read before it is stopped (also after a failed test: the peak so
    // far is still the end's).
    for (metric, which) in [("rss-a", a_end), ("rss-b", b_end)] {
        if let Some(rss) = which.and_then(|i: usize| ends[i].peak_rss()) {
            figure(figures, metric).push(Sample::plain(rss));
        }
    }
    drop(server);
    drop(ends);
    drop(topo);
    result
}

/// Decimals for a metric's figures.
fn digits(metric: &str) -> usize {
    match metric {
        "rtt" => 3,
        "up" => 0,
        "rss-a" | "rss-b" => 1,
        _ => 2,
    }
}

/// Whether `contender` has a figure for `metric`: `kernel` runs no process, and `c-offload`'s
/// one forwarder is no tunnel end, so neither has the ends' memory.
fn applies(contender: &str, metric: &str) -> bool {
    !(matches!(contender, "kernel" | "c-offload") && metric.starts_with("rss"))
}

/// Higher is better for throughput; lower for latency, time to first packet and memory.
fn higher_is_better(metric: &str) -> bool {
    matches!(metric, "tcp1" | "tcp4" | "udp64")
}

/// The table of every figure (min/median/max, vpwn's median over this one's, CPU of both
/// ends, retransmits), then vpwn against each contender per metric.
pub fn report(figures: &[Figure], failures: &[String], opts: &Options) -> String {
    let ratio = |c: &str, m: &str, cpu: bool| match (
        median_of(figures, "vpwn", m, cpu),
        median_of(figures, c, m, cpu),
    ) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.2}×", v / b),
        _ => "–".into(),
    };
    let mut out = report_head(opts, &["vpwn ÷ this"]);
    for f in figures.iter().filter(|f| applies(f.contender, f.metric)) {
        let ratios = [ratio(f.contender, f.metric, false)];
        out.push_str(&figure_row(f, digits(f.metric), &ratios));
    }
    // vpwn against each other contender that ran.
    out.push_str(&against_each(
        figures,
        "vpwn",
        &METRICS,
        higher_is_better,
        &ratio,
    ));
    out.push_str(&scaling(figures));
    out.push_str(&report_tail(
        opts,
        failures,
        " (every contender's first run, then every contender's second, ...). `runs` counts the \
         runs that produced the figure; min, median and max are over those runs (the median of \
         an even count is the mean of the middle two). `vpwn ÷ this` is vpwn's median over this \
         contender's: above 1× vpwn is ahead in tcp1/tcp4/udp64, below 1× it is ahead in rtt, \
         up and rss. CPU is both ends' processes together (`c-offload`: its forwarder; \
         `kernel`: none) over the test's duration, 100% = one core. `up`: from starting end B \
         until the first ping from A is answered through the tunnel (ends started one after the \
         other, each configured and up before the next; for the `wg`-configured ones that \
         includes the harness's `wg set` and `ip`); for `kernel` it is the floor of the \
         measurement. `rss-a`/`rss-b`: peak resident memory (VmHWM) of the end in A (the \
         sender) and in B.",
    ));
    out
}

/// For each contender that also ran pinned to one core (`X-1cpu`): its medians on two cores
/// over those on one, per throughput metric. Empty when none did.
fn scaling(figures: &[Figure]) -> String {
    let mut rows = String::new();
    for c in CONTENDERS.iter().filter_map(|c| c.strip_suffix("-1cpu")) {
        let cells: Vec<String> = ["tcp1", "tcp4", "udp64"]
            .iter()
            .map(|m| {
                match (
                    median_of(figures, c, m, false),
                    median_of(figures, &format!("{c}-1cpu"), m, false),
                ) {
                    (Some(two), Some(one)) if one > 0.0 => format!("{:.2}×", two / one),
                    _ => "–".into(),
                }
            })
            .collect();
        if cells.iter().any(|x| x != "–") {
            rows.push_str(&format!("| {c} | {} |\n", cells.join(" | ")));
        }
    }
    if rows.is_empty() {
        return rows;
    }
    format!(
        "\nScaling: each end on two cores (unpinned) over each end on one (`-1cpu`), medians:\n\n\
         | contender | tcp1 | tcp4 | udp64 |\n|---|---|---|---|\n{rows}"
    )
}

/// The `tunnel` section of BENCHMARKS.md around its `table`, measured `on` (machine, date).
pub fn section(on: &str, table: &str) -> String {
    format!(
        "## tunnel: namespace A ⇄ tunnel end ⇄ veth ⇄ tunnel end ⇄ namespace B\n\n\
         Produced by `bench/run tunnel` (see bench/README.md) on {on}.\n\n\
         Two namespaces joined by a veth (10.203.0.1 ⇄ 10.203.0.2, MTU 1500), one WireGuard end \
         in each (tunnel 10.204.0.1 ⇄ 10.204.0.2, MTU 1420): `vpwn` (ours, `tunctl vpwn up`), \
         `wireguard-go-new` (0.0.20250522, built with Go 1.19), `wireguard-go` (Debian's \
         0.0.20220316), `boringtun` and `boringtun-t1` (boringtun-cli 0.7.1, default threads \
         and `--threads 1`), `gotatun` (Mullvad's fork of boringtun, gotatun-cli 0.10.2, run as \
         boringtun is); `vpwn-no-tso`, `-no-gso`, `-no-gro` and `-plain` are vpwn without one \
         part of its fast path and without all three; `vpwn-many` has 999 more peers and 99,900 \
         more allowed networks on each end (added with `wg addconf` before the first ping, so \
         its `up` includes them); `-1cpu` runs both ends on the first core only (`taskset -c \
         0`; iperf3 and the kernel's softirqs still use both). `kernel` is the veth alone, `c-offload` the C pass-through \
         forwarder between a tun device in each namespace (no crypto, no UDP: the ceiling of \
         a userspace hop). iperf3 from A to B: `tcp1`, `tcp4` (Gbit/s received), `udp64` \
         (64-byte datagrams, thousands received per second); `rtt` the median of 20 pings, \
         `up` the time to the first ping answered. Everything shares the machine's cores: \
         compare within this run only.\n\n{table}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_has_vpwn_ratios() {
        let mut figures = Vec::new();
        for (c, v) in [("vpwn", 2.0), ("wireguard-go", 1.0), ("vpwn-1cpu", 1.6)] {
            for (m, u) in METRICS {
                let mut f = Figure::new(c, m, u);
                f.push(Sample {
                    value: v,
                    cpu: Some(v * 50.0),
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
            groups: vec!["tunnel"],
        };
        let r = report(&figures, &[], &opts);
        assert!(r.contains("| wireguard-go | tcp1 (Gbit/s) | 1 | 1.00 | 1.00 | 1.00 | 2.00× |"));
        assert!(r.contains("| tcp1 (higher is better) | 2.00× |"));
        assert!(r.contains("| rtt (lower is better) | 2.00× |"));
        assert!(r.contains("| tcp1 CPU (lower is better) | 2.00× |"));
        assert!(r.contains("| vpwn | 1.25× | 1.25× | 1.25× |"), "{r}");
        assert!(!r.contains("| wireguard-go-new |"));
        assert!(!r.contains("SMOKE"));
    }

    #[test]
    fn names_fit_ifnamsiz() {
        // tw + the largest pid (pid_max 4194304) + n + a run number + a/b, within 15 bytes.
        let longest = format!("tw{}n{}a", 4_194_304, 999);
        assert!(longest.len() <= 15);
    }
}
