//! `tunctl-vpwn`: vpwn as a drop-in for `wireguard-go`.
//!
//! It takes wireguard-go's arguments (`[-f|--foreground] INTERFACE-NAME`, and
//! `WG_PROCESS_FOREGROUND=1`), creates the tun device, serves the WireGuard UAPI socket
//! (`/var/run/wireguard/NAME.sock`) so `wg setconf`/`wg set`/`wg show` configure and read
//! it, and exits when the device is deleted (as `wg-quick down` does) or on SIGINT/SIGTERM.
//! So `WG_QUICK_USERSPACE_IMPLEMENTATION=tunctl-vpwn wg-quick up wg0` runs a vpwn tunnel,
//! and so does any control plane that drives wireguard-go through its UAPI.

use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tunctl::Namespace;
use tunctl_vpwn::Tunnel;

/// Set in the environment of the process that runs in the background.
const DAEMON_ENV: &str = "TUNCTL_VPWN_DAEMON";

/// vpwn as a drop-in for wireguard-go: create the tun device NAME, serve its WireGuard
/// UAPI socket (/var/run/wireguard/NAME.sock) for `wg setconf`, `wg set` and `wg show`,
/// and run until the device is deleted or SIGINT/SIGTERM.
///
/// Without --foreground (or WG_PROCESS_FOREGROUND=1) it goes to the background once the
/// socket answers, as wireguard-go does; `wg-quick` relies on that:
/// `WG_QUICK_USERSPACE_IMPLEMENTATION=tunctl-vpwn wg-quick up wg0`.
#[derive(Parser, Debug)]
#[command(name = "tunctl-vpwn", version, max_term_width = 100)]
struct Args {
    /// Stay in the foreground (logs on standard error).
    #[arg(short, long)]
    foreground: bool,
    /// The interface to create (in the current network namespace).
    #[arg(value_name = "INTERFACE-NAME")]
    name: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let foreground = args.foreground
        || std::env::var_os("WG_PROCESS_FOREGROUND").is_some_and(|v| v == "1")
        || std::env::var_os(DAEMON_ENV).is_some();
    if !foreground {
        return daemonize(&args.name);
    }
    if std::env::var_os(DAEMON_ENV).is_some() {
        // A session of its own, without the caller's terminal: a shell that started it may
        // go away (it is no process group leader, so setsid succeeds).
        let _ = rustix::process::setsid();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    let tunnel = match Tunnel::serve(&args.name, Namespace::current()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tunctl-vpwn: {}: {e}", args.name);
            return ExitCode::FAILURE;
        }
    };
    if std::env::var_os(DAEMON_ENV).is_some() {
        quiet();
    }
    eprintln!(
        "tunctl-vpwn: {}: up; configure it with `wg setconf {} FILE`",
        tunnel.name(),
        tunnel.name()
    );
    while !stop.load(Ordering::SeqCst) && tunnel.is_running() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let ended = tunnel.ended();
    let why = match &ended {
        Some(e) => e.to_string(),
        None => "signal".to_string(),
    };
    eprintln!("tunctl-vpwn: {}: down ({why})", tunnel.name());
    tunnel.down();
    if matches!(ended, Some(tunctl_vpwn::Ended::ThreadFailed(_))) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Starts this program again in the background and returns once its UAPI socket answers
/// (success) or it exits (its exit status, its error on our standard error).
fn daemonize(name: &str) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("tunctl-vpwn: cannot find this program to start it again: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut child = match Command::new(exe)
        .arg("--foreground")
        .arg("--")
        .arg(name)
        .env(DAEMON_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tunctl-vpwn: cannot start in the background: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        match child.try_wait() {
            Ok(Some(status)) => {
                if let Some(mut err) = child.stderr.take() {
                    let _ = std::io::copy(&mut err, &mut std::io::stderr());
                }
                return ExitCode::from(status.code().map_or(1, |c| c.clamp(1, 255) as u8));
            }
            Ok(None) => {}
            Err(_) => break,
        }
        // Ready when *its* socket answers (another program serving the name is not it).
        if tunctl_vpwn::uapi::server_pid(name).is_ok_and(|pid| pid == child.id())
            && tunctl_vpwn::uapi::get(name).is_ok()
        {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    eprintln!("tunctl-vpwn: {name}: the background process did not come up within 10 s");
    ExitCode::FAILURE
}

/// In the background, once up: standard error goes to /dev/null (the starter, which read it
/// until now, is gone).
fn quiet() {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: both fds are open; dup2 replaces fd 2 atomically.
        unsafe {
            libc::dup2(null.as_raw_fd(), 2);
        }
    }
}
