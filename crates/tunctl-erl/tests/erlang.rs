//! The Erlang application (`bindings/erlang`) against the real kernel, as root, each run in
//! network namespaces of its own:
//!
//! - the Erlang original's own suite, `tuncer_SUITE.erl`, unchanged (copied byte for byte from
//!   `../shared/peers/tunctl-erlang/test/`, checked), with rebar3's common test: "All 6 tests
//!   passed";
//! - our suite, `bindings/erlang/test/tunctl_SUITE.erl`;
//! - the original's examples, unchanged: `br.erl` bridging three taps moved into three
//!   namespaces (pings across), and `vpwn.erl` and `vpwn_active.erl` between two Erlang nodes,
//!   each in a namespace of its own, joined by a veth that carries the distribution (pings and
//!   a TCP stream through the tunnel; nothing in the root namespace).
//!
//! They need `erl`, `rebar3` and `erlc` (Debian: erlang-nox erlang-dev erlang-common-test
//! rebar3), `ip` and `ping`. Without them, or without root, a test says SKIPPED, and fails
//! under `CI=true`. The NIF is the one cargo built for this test run (`deps/libtunctl_erl.so`
//! beside this binary), handed to rebar3's hook through `TUNCTL_ERL_NIF`: a `cargo build`
//! inside `cargo test` would wait for the build directory that `cargo test` holds.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tunctl::Namespace;

/// What every test needs, or why it cannot run.
struct Setup {
    /// The NIF cargo built for this run.
    nif: PathBuf,
    /// `bindings/erlang`.
    app: PathBuf,
    /// The Erlang original: `../shared/peers/tunctl-erlang`.
    original: PathBuf,
}

fn setup(test: &str) -> Option<Setup> {
    let missing = |why: String| -> Option<Setup> {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: cannot run under CI=true: {why}");
        }
        eprintln!("SKIPPED {test}: {why}");
        None
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return missing("needs root (namespaces, devices)".into());
    }
    for tool in ["erl", "erlc", "rebar3", "ip", "ping", "ct_run"] {
        if !on_path(tool) {
            return missing(format!(
                "`{tool}` is not installed (apt-get install erlang-nox erlang-dev erlang-common-test rebar3 iproute2 iputils-ping)"
            ));
        }
    }
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps directory");
    let nif = deps.join("libtunctl_erl.so");
    if !nif.exists() {
        return missing(format!("{} was not built", nif.display()));
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    let original = std::env::var_os("TUNCTL_ERLANG_ORIGINAL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/peers/tunctl-erlang"));
    if !original.join("test/tuncer_SUITE.erl").exists() {
        return missing(format!(
            "the Erlang original is not at {} (set TUNCTL_ERLANG_ORIGINAL)",
            original.display()
        ));
    }
    Some(Setup {
        nif,
        app: root.join("bindings/erlang"),
        original,
    })
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A name no other test (or test run) uses: `erl<pid>x<n><suffix>`.
fn unique(suffix: &str) -> String {
    format!(
        "erl{}x{}{suffix}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace made for one test; on drop, the processes still in it (Erlang nodes,
/// epmd) are killed and it is deleted.
struct Netns(String);

impl Netns {
    fn new(suffix: &str) -> Netns {
        let name = unique(suffix);
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) -> String {
        run(Command::new("ip").args(["-n", &self.0]).args(args))
    }

    fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }

    fn namespace(&self) -> Namespace {
        Namespace::named(&self.0).expect("valid namespace name")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.0]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: kill has no memory preconditions; these are processes this test
                    // started inside its own namespace.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs `cmd` to completion; panics with its output unless it succeeds.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd` for at most `limit`, killing it after that.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: o.join().unwrap_or_default(),
        stderr: e.join().unwrap_or_default(),
    }
}

/// A scratch directory under `bindings/erlang/_build/` (rebar3 takes test directories
/// inside the project only), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(app: &Path) -> Scratch {
        let dir = app.join("_build/tests").join(unique(""));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `rebar3 ct` of the suite `suite` in `dir` (relative to the project), inside `ns`, with its
/// own build directory: the common test output.
fn rebar3_ct(s: &Setup, scratch: &Scratch, ns: &Netns, dir: &str, suite: &str) -> String {
    let mut cmd = ns.exec("rebar3");
    cmd.args(["ct", "--dir", dir, "--suite", suite])
        .current_dir(&s.app)
        .env("REBAR_BASE_DIR", scratch.0.join("base"))
        .env("TUNCTL_ERL_NIF", &s.nif)
        .env("REBAR_COLOR", "none")
        .env("QUIET", "1");
    let out = run_bounded(&mut cmd, Duration::from_secs(600));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "rebar3 ct {suite} failed: {text}");
    text
}

#[test]
fn original_suite_passes_unchanged() {
    let Some(s) = setup("original_suite_passes_unchanged") else {
        return;
    };
    let scratch = Scratch::new(&s.app);
    let suites = scratch.0.join("original");
    std::fs::create_dir_all(&suites).expect("suite directory");
    let from = s.original.join("test/tuncer_SUITE.erl");
    let to = suites.join("tuncer_SUITE.erl");
    std::fs::copy(&from, &to).expect("copy the suite");
    assert_eq!(
        std::fs::read(&from).expect("read"),
        std::fs::read(&to).expect("read"),
        "the suite must run unchanged"
    );
    let ns = Netns::new("o");
    let rel = to
        .parent()
        .and_then(|d| d.strip_prefix(&s.app).ok())
        .expect("inside the project")
        .to_string_lossy()
        .into_owned();
    let out = rebar3_ct(&s, &scratch, &ns, &rel, "tuncer_SUITE");
    assert!(out.contains("All 6 tests passed."), "{out}");
    // Nothing left behind in the namespace but lo.
    let links = ns.ip(&["-o", "link", "show"]);
    assert_eq!(links.lines().count(), 1, "{links}");
}

#[test]
fn our_suite_passes() {
    let Some(s) = setup("our_suite_passes") else {
        return;
    };
    let scratch = Scratch::new(&s.app);
    let ns = Netns::new("s");
    let out = rebar3_ct(&s, &scratch, &ns, "test", "tunctl_SUITE");
    assert!(
        out.contains("tests passed.") && !out.contains("Failed"),
        "{out}"
    );
    let links = ns.ip(&["-o", "link", "show"]);
    assert_eq!(links.lines().count(), 1, "{links}");
}

/// The application and the original's examples, compiled into `scratch/ebin`: the paths to
/// give `erl -pa`.
fn compile_examples(s: &Setup, scratch: &Scratch) -> Vec<PathBuf> {
    let base = scratch.0.join("base");
    run(Command::new("rebar3")
        .arg("compile")
        .current_dir(&s.app)
        .env("REBAR_BASE_DIR", &base)
        .env("TUNCTL_ERL_NIF", &s.nif)
        .env("REBAR_COLOR", "none"));
    let ebin = scratch.0.join("ebin");
    std::fs::create_dir_all(&ebin).expect("ebin");
    let mut erlc = Command::new("erlc");
    erlc.arg("-o").arg(&ebin);
    for ex in ["br.erl", "vpwn.erl", "vpwn_active.erl"] {
        erlc.arg(s.original.join("examples").join(ex));
    }
    run(&mut erlc);
    vec![base.join("default/lib/tunctl/ebin"), ebin]
}

/// An Erlang node started with `args`, killed on drop.
struct Node(Child);

impl Node {
    fn start(ns: &Netns, scratch: &Scratch, paths: &[PathBuf], args: &[&str]) -> Node {
        let mut cmd = ns.exec("erl");
        // A crash dump, if any, lands in the scratch directory.
        cmd.current_dir(&scratch.0).arg("-noshell").arg("-pa");
        cmd.args(paths);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        Node(cmd.spawn().expect("start erl"))
    }

    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (at most `limit`) until `ok()`.
fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn has_link(ns: &Netns, dev: &str) -> bool {
    Command::new("ip")
        .args(["-n", &ns.0, "link", "show", dev])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ping(ns: &Netns, target: &str) -> bool {
    // The first ping may wait for ARP through the example: a few tries.
    (0..10).any(|_| {
        ns.exec("ping")
            .args(["-c", "1", "-W", "2", target])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// A TCP stream of `bytes` from `from` to `to:port`, checked byte for byte.
fn tcp_stream(from: &Netns, to: &Netns, addr: &str, bytes: usize) {
    let target = format!("{addr}:5301");
    let listener = to
        .namespace()
        .run(|| TcpListener::bind(&target))
        .expect("enter namespace")
        .expect("listen");
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut got = Vec::new();
        conn.read_to_end(&mut got).expect("read");
        got
    });
    let t = target.clone();
    let mut conn = from
        .namespace()
        .run(move || {
            TcpStream::connect_timeout(&t.parse().expect("address"), Duration::from_secs(10))
        })
        .expect("enter namespace")
        .expect("connect");
    conn.set_write_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    let start = Instant::now();
    conn.write_all(&data).expect("write");
    drop(conn);
    let got = server.join().expect("server");
    println!(
        "tcp {bytes} bytes through the tunnel in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    assert!(
        got == data,
        "the stream arrived changed ({} bytes)",
        got.len()
    );
}

#[test]
fn example_br_bridges_three_namespaces() {
    let Some(s) = setup("example_br_bridges_three_namespaces") else {
        return;
    };
    let scratch = Scratch::new(&s.app);
    let paths = compile_examples(&s, &scratch);
    // The bridge's VM in a namespace of its own; its taps go to three others, as LXC's
    // `lxc.network.type = phys` moved them into containers.
    let host = Netns::new("h");
    let ends: Vec<Netns> = ["a", "b", "c"].iter().map(|x| Netns::new(x)).collect();
    // No IPv6 chatter: br.erl ends at the first frame it cannot flood (a port still down is
    // EIO), so nothing may talk before all three ports are up.
    for ns in ends.iter().chain([&host]) {
        run(ns
            .exec("sysctl")
            .args(["-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"]));
    }
    let mut node = Node::start(
        &host,
        &scratch,
        &paths,
        &[
            // br.erl logs every frame at info level: not here.
            "-kernel",
            "logger_level",
            "warning",
            "-eval",
            "br:start([\"erlbr0\", \"erlbr1\", \"erlbr2\"])",
        ],
    );
    for i in 0..3 {
        let dev = format!("erlbr{i}");
        wait_for(&dev, Duration::from_secs(20), || has_link(&host, &dev));
    }
    for (i, end) in ends.iter().enumerate() {
        let dev = format!("erlbr{i}");
        host.ip(&["link", "set", &dev, "netns", &end.0]);
        end.ip(&["addr", "add", &format!("10.93.0.{}/24", i + 1), "dev", &dev]);
    }
    for (i, end) in ends.iter().enumerate() {
        end.ip(&["link", "set", &format!("erlbr{i}"), "up"]);
    }
    for (from, to) in [(0, 1), (1, 2), (2, 0)] {
        let target = format!("10.93.0.{}", to + 1);
        assert!(
            ping(&ends[from], &target),
            "ping {from} -> {target} through br"
        );
    }
    tcp_stream(&ends[0], &ends[1], "10.93.0.2", 2_000_000);
    assert!(node.alive(), "br ended");
}

/// vpwn between two nodes, each in a namespace of its own, joined by a veth that carries
/// the Erlang distribution; `module` is `vpwn` or `vpwn_active`, `dev` the tap it makes.
fn vpwn_between_namespaces(test: &str, module: &str, dev: &str) {
    let Some(s) = setup(test) else {
        return;
    };
    let scratch = Scratch::new(&s.app);
    let paths = compile_examples(&s, &scratch);
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    let veth_a = unique("v");
    run(Command::new("ip").args([
        "-n", &a.0, "link", "add", &veth_a, "type", "veth", "peer", "name", "erlveth", "netns",
        &b.0,
    ]));
    a.ip(&["addr", "add", "10.94.0.1/24", "dev", &veth_a]);
    a.ip(&["link", "set", &veth_a, "up"]);
    b.ip(&["addr", "add", "10.94.0.2/24", "dev", "erlveth"]);
    b.ip(&["link", "set", "erlveth", "up"]);
    let cookie = unique("cookie");
    let mut node_b = Node::start(
        &b,
        &scratch,
        &paths,
        &["-name", "vpwnb@10.94.0.2", "-setcookie", &cookie],
    );
    // node b's distribution must be up before a calls it.
    std::thread::sleep(Duration::from_secs(2));
    let start = format!("{module}:start('vpwnb@10.94.0.2', \"10.10.10.1\", \"10.10.10.2\")");
    let mut node_a = Node::start(
        &a,
        &scratch,
        &paths,
        &[
            "-name",
            "vpwna@10.94.0.1",
            "-setcookie",
            &cookie,
            "-eval",
            &start,
        ],
    );
    wait_for("the taps", Duration::from_secs(30), || {
        has_link(&a, dev) && has_link(&b, dev)
    });
    // As the original's README says: its /32 addresses need a route to the other end.
    a.ip(&["route", "add", "10.10.10.2/32", "dev", dev]);
    b.ip(&["route", "add", "10.10.10.1/32", "dev", dev]);
    assert!(ping(&a, "10.10.10.2"), "ping a -> b through {module}");
    assert!(ping(&b, "10.10.10.1"), "ping b -> a through {module}");
    tcp_stream(&a, &b, "10.10.10.2", 1_000_000);
    assert!(node_a.alive() && node_b.alive(), "a node ended");
}

#[test]
fn example_vpwn_between_two_nodes() {
    vpwn_between_namespaces("example_vpwn_between_two_nodes", "vpwn", "tap0");
}

#[test]
fn example_vpwn_active_between_two_nodes() {
    vpwn_between_namespaces(
        "example_vpwn_active_between_two_nodes",
        "vpwn_active",
        "vpwn",
    );
}
