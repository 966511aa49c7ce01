//! `tunctl br`: a userspace learning bridge of tap devices, in the foreground until
//! SIGINT/SIGTERM; `show` and `down` reach a running one through its control socket.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use tunctl::{Error, ErrorKind, Namespace};
use tunctl_br::{Bridge, Options, PortSpec};

use crate::out;

/// The `br` subcommands.
#[derive(Subcommand, Debug)]
pub enum BrCommand {
    /// Bring a bridge up and run it in the foreground until SIGINT or SIGTERM; then every
    /// port it created is removed (in every namespace) and the uplink released.
    ///
    /// Ports are taps: created (with vnet_hdr, so GSO frames cross whole), in the namespace
    /// after `@` if given, or attached if a persistent tap of that name exists.
    Up(Box<UpArgs>),
    /// Show running bridges: ports with their namespaces and counters (forwarded, flooded,
    /// learned, moved, aged, evicted, dropped by cause), and the learned addresses.
    Show {
        /// Only this bridge.
        name: Option<String>,
        /// Print JSON: an array of {name, pid, ageing_s, flood, max_macs, entries,
        /// ports[{name, namespace (as given after @, empty for the current one), vnet_hdr,
        /// alive, uplink, created, rx_frames, rx_bytes, tx_frames, tx_bytes, forwarded, flooded, entries, learned, moved, aged, evicted,
        /// dropped{runt, invalid_source, link_local, oversize, same_port, malformed_gso,
        /// write}}], fdb[{mac, port, idle_ms}]}.
        #[arg(long)]
        json: bool,
    },
    /// Stop the bridge NAME (SIGTERM to the process serving its control socket), and wait
    /// up to 5 s for it to have removed its ports.
    Down {
        /// The bridge's name.
        name: String,
    },
}

/// `tunctl br up`.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// The bridge's name (for `show` and `down`).
    name: String,
    /// Ports: tap names, each NAME or NAME@NETNS (born in that namespace); two or more.
    #[arg(required = true, num_args = 2.., value_name = "PORT[@NS]", value_parser = parse_port)]
    ports: Vec<PortSpec>,
    /// The port to enslave to a Linux bridge (with --master).
    #[arg(long, value_name = "PORT", requires = "master")]
    uplink: Option<String>,
    /// The Linux bridge the uplink joins, BRIDGE or BRIDGE@NETNS (the uplink must be in the
    /// same namespace); released when the bridge stops.
    #[arg(long, value_name = "BRIDGE[@NS]", requires = "uplink", value_parser = parse_master)]
    master: Option<(String, Namespace)>,
    /// Seconds an idle address stays learned (0: flood everything, as --flood).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(0..=1_000_000)
    )]
    ageing: u64,
    /// The most addresses learned; when full, the port holding the most gives up its least
    /// recently used one.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 8192,
        value_parser = clap::value_parser!(u64).range(16..=1_048_576)
    )]
    max_macs: u64,
    /// Flood every frame to every other port (no learning): the Erlang original's hub.
    #[arg(long)]
    flood: bool,
    /// Print every frame to standard error (off by default: the Erlang original logged
    /// each one, and moved 8-12 Mbit/s).
    #[arg(long)]
    trace: bool,
    /// One thread polling every port (as a C bridge would), instead of one thread per
    /// port.
    #[arg(long)]
    one_thread: bool,
}

fn parse_port(s: &str) -> Result<PortSpec, String> {
    s.parse::<PortSpec>().map_err(|e| e.to_string())
}

fn parse_master(s: &str) -> Result<(String, Namespace), String> {
    let (name, ns) = match s.split_once('@') {
        Some((n, ns)) => (n, Namespace::from_arg(ns).map_err(|e| e.to_string())?),
        None => (s, Namespace::current()),
    };
    tunctl::name::validate(name, false).map_err(|e| e.to_string())?;
    Ok((name.to_string(), ns))
}

/// Runs a `br` subcommand.
pub fn run(command: BrCommand) -> Result<(), Error> {
    match command {
        BrCommand::Up(args) => up(*args),
        BrCommand::Show { name, json } => show(name, json),
        BrCommand::Down { name } => crate::stop_server(
            "br down",
            &name,
            &tunctl_br::control::socket_path(&name),
            "no such bridge (no control socket)",
        ),
    }
}

fn up(args: UpArgs) -> Result<(), Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    let mut opts = Options::new(&args.name, args.ports);
    opts.uplink = args.uplink;
    opts.master = args.master;
    opts.ageing = if args.flood {
        Duration::ZERO
    } else {
        Duration::from_secs(args.ageing)
    };
    opts.max_macs = args.max_macs as usize;
    opts.trace = args.trace;
    opts.one_thread = args.one_thread;
    let bridge = Bridge::up(opts)?;
    let st = bridge.status();
    let ports: Vec<String> = st["ports"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    format!(
                        "{}@{}{}",
                        p["name"].as_str().unwrap_or("?"),
                        p["namespace"].as_str().unwrap_or("?"),
                        if p["vnet_hdr"] == true {
                            ""
                        } else {
                            " (no vnet_hdr)"
                        }
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    eprintln!(
        "tunctl: br {}: up, ports {}; {}",
        bridge.name(),
        ports.join(", "),
        if args.flood || args.ageing == 0 {
            "flooding every frame".to_string()
        } else {
            format!("learning, ageing {} s", args.ageing)
        }
    );
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = bridge.status();
    bridge.down();
    let total = |k: &str| -> u64 {
        st["ports"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p[k].as_u64()).sum())
            .unwrap_or(0)
    };
    eprintln!(
        "tunctl: br {}: down; {} frames in, {} forwarded, {} flooded; ports it created removed",
        st["name"].as_str().unwrap_or("?"),
        total("rx_frames"),
        total("forwarded"),
        total("flooded")
    );
    Ok(())
}

/// A port as `up` takes it: NAME, or NAME@NS.
fn port_label(p: &serde_json::Value) -> String {
    let name = p["name"].as_str().unwrap_or("?");
    match p["namespace"].as_str() {
        Some("") | None => name.to_string(),
        Some(ns) => format!("{name}@{ns}"),
    }
}

fn show(name: Option<String>, json: bool) -> Result<(), Error> {
    let (names, only) = match name {
        Some(n) => (vec![n], true),
        None => (tunctl_br::control::names(), false),
    };
    let mut all = Vec::new();
    for n in names {
        match tunctl_br::control::show(&n) {
            Ok(v) => all.push(v),
            // Listing all: a bridge that stopped meanwhile (socket gone, refused, or closed
            // without an answer) is not one.
            Err(_) if !only => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::from_kind(
                    ErrorKind::NotFound,
                    "br show",
                    "no such bridge (no control socket)",
                )
                .with_subject(n))
            }
            Err(e) => return Err(Error::from(e).add_detail(&format!("bridge {n}"))),
        }
    }
    if json {
        out(format_args!("{}", serde_json::Value::Array(all)));
        return Ok(());
    }
    for b in all {
        let s = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_string();
        out(format_args!(
            "bridge {}: pid {}, {}, {} of {} addresses",
            s(&b["name"]),
            b["pid"],
            if b["flood"] == true {
                "flooding".to_string()
            } else {
                format!("ageing {} s", b["ageing_s"])
            },
            b["entries"],
            b["max_macs"]
        ));
        for p in b["ports"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let dropped: Vec<String> = p["dropped"]
                .as_object()
                .map(|d| {
                    d.iter()
                        .filter(|(_, v)| v.as_u64() != Some(0))
                        .map(|(k, v)| format!("{v} {}", k.replace('_', " ")))
                        .collect()
                })
                .unwrap_or_default();
            out(format_args!(
                "  port {}{}{}: in {} frames ({} B), out {} ({} B); forwarded {}, flooded {}; learned {}, moved {}, aged {}, evicted {}; dropped: {}",
                port_label(p),
                if p["uplink"] == true { " (uplink)" } else { "" },
                if p["alive"] == true { "" } else { " (gone)" },
                p["rx_frames"],
                p["rx_bytes"],
                p["tx_frames"],
                p["tx_bytes"],
                p["forwarded"],
                p["flooded"],
                p["learned"],
                p["moved"],
                p["aged"],
                p["evicted"],
                if dropped.is_empty() { "nothing".to_string() } else { dropped.join(", ") }
            ));
        }
        // As `bridge fdb show`.
        for e in b["fdb"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            out(format_args!(
                "{} dev {} master {} idle {:.1} s",
                s(&e["mac"]),
                s(&e["port"]),
                s(&b["name"]),
                e["idle_ms"].as_u64().unwrap_or(0) as f64 / 1000.0
            ));
        }
    }
    Ok(())
}
