//! `tunctl br`: a userspace learning bridge of tap devices, in the foreground until
//! SIGINT/SIGTERM; `show`, `port`, `fdb` and `down` reach a running one through its control
//! socket. `-n NS` is the namespace of every port (and of the uplink's master) that names
//! none.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use tunctl::{Error, ErrorKind, Namespace};
use tunctl_br::control::{Answer, Request};
use tunctl_br::{Bridge, Mac, Master, Options, PortRef, PortSpec, StaticEntry, Status};

use crate::out;

/// The `br` subcommands.
#[derive(Subcommand, Debug)]
pub enum BrCommand {
    /// Bring a bridge up and run it in the foreground until SIGINT or SIGTERM; then every
    /// port it created is removed (in every namespace) and the uplink released.
    ///
    /// Ports are taps: created (with vnet_hdr, so GSO frames cross whole), in the namespace
    /// after `@` if given, else in -n's (else in this one), or attached if a persistent tap
    /// of that name exists there.
    Up(Box<UpArgs>),
    /// Show running bridges: ports with their namespaces and counters (forwarded, flooded,
    /// learned, moved, aged, evicted, dropped by cause), then the table as `bridge fdb
    /// show` prints a Linux bridge's: `MAC dev PORT [vlan VID] master BRIDGE [static]`.
    Show {
        /// Only this bridge.
        name: Option<String>,
        /// Print JSON: an array of {name, pid, ageing_s, flood, max_macs, entries, statics,
        /// ports[{name, namespace (as given after @, empty for the bridge's own), vnet_hdr,
        /// queues, alive, uplink, created, mtu, weight, share, rx_frames, rx_bytes, tx_frames,
        /// tx_bytes, forwarded, flooded, entries, statics, learned, moved, aged, evicted,
        /// dropped{runt, invalid_source, link_local, oversize, same_port, malformed_gso,
        /// write, static_source, egress_mtu}}], fdb[{mac, vlan, port, namespace, idle_ms,
        /// static}]}.
        #[arg(long)]
        json: bool,
    },
    /// Add or remove ports of a running bridge: a container starts or stops, the others'
    /// sessions go on.
    Port {
        #[command(subcommand)]
        action: PortCommand,
    },
    /// Static entries of a running bridge (and its table).
    Fdb {
        #[command(subcommand)]
        action: FdbCommand,
    },
    /// Stop the bridge NAME (SIGTERM to the process serving its control socket), and wait
    /// up to 5 s for it to have removed its ports.
    Down {
        /// The bridge's name.
        name: String,
    },
}

/// `tunctl br port`.
#[derive(Subcommand, Debug)]
pub enum PortCommand {
    /// Make (or attach) a tap and forward through it from now on.
    Add {
        /// The bridge's name.
        bridge: String,
        /// The tap, NAME or NAME@NETNS (born in that namespace, or -n's).
        #[arg(value_name = "PORT[@NS]")]
        port: String,
    },
    /// Remove a port: its addresses forgotten (static ones too), a tap the bridge made
    /// deleted, an attached one left in place, an uplink released.
    Del {
        /// The bridge's name.
        bridge: String,
        /// The port: NAME@NETNS, or NAME (in -n's namespace if -n is given, else the one
        /// port of that name).
        #[arg(value_name = "PORT[@NS]", value_parser = parse_ref)]
        port: PortRef,
    },
}

/// `tunctl br fdb`.
#[derive(Subcommand, Debug)]
pub enum FdbCommand {
    /// A static entry: MAC is on PORT and nowhere else. It never ages and never moves; a
    /// frame from MAC on another port is dropped (counted as static_source), so no
    /// container can take, say, the gateway's address. Replaces what the table had.
    Add {
        /// The bridge's name.
        bridge: String,
        /// The address.
        #[arg(value_parser = parse_mac)]
        mac: Mac,
        /// The port: NAME@NETNS, or NAME (in -n's namespace if -n is given, else the one
        /// port of that name).
        #[arg(value_name = "PORT[@NS]", value_parser = parse_ref)]
        port: PortRef,
        /// The VLAN the entry is for (0: untagged frames).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=4094))]
        vlan: u16,
    },
    /// Remove the entry for MAC, static or learned.
    Del {
        /// The bridge's name.
        bridge: String,
        /// The address.
        #[arg(value_parser = parse_mac)]
        mac: Mac,
        /// The VLAN of the entry (0: untagged).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=4094))]
        vlan: u16,
    },
    /// Print the table as `bridge fdb show` prints a Linux bridge's.
    Show {
        /// Only this bridge.
        bridge: Option<String>,
    },
}

/// `tunctl br up`.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// The bridge's name (for `show`, `port`, `fdb` and `down`).
    name: String,
    /// Ports: tap names, each NAME or NAME@NETNS (born in that namespace; without @, in
    /// -n's); more can be added later with `br port add`.
    #[arg(required = true, num_args = 1.., value_name = "PORT[@NS]")]
    ports: Vec<String>,
    /// The port to enslave to a Linux bridge (with --master): NAME@NETNS, or NAME (in -n's
    /// namespace if -n is given, else the one port of that name).
    #[arg(long, value_name = "PORT[@NS]", requires = "master", value_parser = parse_ref)]
    uplink: Option<PortRef>,
    /// The Linux bridge the uplink joins, in the uplink's namespace (BRIDGE@NETNS must name
    /// that one); released when the bridge stops.
    #[arg(long, value_name = "BRIDGE[@NS]", requires = "uplink", value_parser = parse_master)]
    master: Option<Master>,
    /// The uplink's weight in sharing the table (every other port weighs 1; by default it
    /// weighs as much as all the others together: half the table is its share).
    #[arg(long, value_name = "N", requires = "uplink",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    uplink_weight: Option<u32>,
    /// A static entry, MAC@PORT or MAC@PORT@NETNS (untagged); repeat for more.
    #[arg(long = "static", value_name = "MAC@PORT", value_parser = parse_static)]
    statics: Vec<StaticEntry>,
    /// Seconds an idle address stays learned (0: flood everything, as --flood).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(0..=1_000_000)
    )]
    ageing: u64,
    /// The most addresses learned. Each port's share is this × its weight ÷ the ports'
    /// total weight; when the table is full, a port at or over its share recycles its own
    /// least recently used address, and a port under its share takes one from the port
    /// furthest over its share.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 8192,
        value_parser = clap::value_parser!(u64).range(16..=1_048_576)
    )]
    max_macs: u64,
    /// Flood every frame to every other port (no learning; static entries still hold): the
    /// Erlang original's hub.
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
    /// Queues per port: multi-queue taps over whose queues the kernel spreads flows by
    /// their hash, each queue read by a thread of its own (several TCP streams on several
    /// cores). An attached tap keeps its own.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=tunctl_br::MAX_QUEUES as i64))]
    queues: u16,
}

fn parse_ref(s: &str) -> Result<PortRef, String> {
    s.parse::<PortRef>().map_err(|e| e.to_string())
}

fn parse_master(s: &str) -> Result<Master, String> {
    s.parse::<Master>().map_err(|e| e.to_string())
}

fn parse_static(s: &str) -> Result<StaticEntry, String> {
    s.parse::<StaticEntry>().map_err(|e| e.to_string())
}

fn parse_mac(s: &str) -> Result<Mac, String> {
    s.parse::<Mac>()
}

/// Runs a `br` subcommand; `ns` is `-n`'s namespace, if given.
pub fn run(command: BrCommand, ns: Option<Namespace>) -> Result<(), Error> {
    // `-n` completes every port reference that names no namespace, as it places every
    // port: without `-n`, a bare name is the one port of that name, wherever it is.
    let complete = |r: &mut PortRef| {
        if r.namespace.is_none() {
            r.namespace.clone_from(&ns);
        }
    };
    let default = ns.clone().unwrap_or_default();
    match command {
        BrCommand::Up(mut args) => {
            args.uplink.iter_mut().for_each(complete);
            args.statics.iter_mut().for_each(|s| complete(&mut s.port));
            up(*args, &default)
        }
        BrCommand::Show { name, json } => show(name, json),
        BrCommand::Port { action } => match action {
            PortCommand::Add { bridge, port } => {
                let spec = PortSpec::parse_in(&port, &default)?;
                ask(
                    "br port add",
                    &bridge,
                    &Request::PortAdd {
                        port: spec.to_string(),
                    },
                )
            }
            PortCommand::Del { bridge, mut port } => {
                complete(&mut port);
                ask(
                    "br port del",
                    &bridge,
                    &Request::PortDel {
                        port: port.to_string(),
                    },
                )
            }
        },
        BrCommand::Fdb { action } => match action {
            FdbCommand::Add {
                bridge,
                mac,
                mut port,
                vlan,
            } => {
                complete(&mut port);
                ask(
                    "br fdb add",
                    &bridge,
                    &Request::FdbAdd {
                        mac,
                        vlan,
                        port: port.to_string(),
                    },
                )
            }
            FdbCommand::Del { bridge, mac, vlan } => {
                ask("br fdb del", &bridge, &Request::FdbDel { mac, vlan })
            }
            FdbCommand::Show { bridge } => {
                for b in statuses(bridge)? {
                    for line in b.fdb_lines() {
                        out(format_args!("{line}"));
                    }
                }
                Ok(())
            }
        },
        BrCommand::Down { name } => crate::stop_server(
            "br down",
            &name,
            &tunctl_br::control::socket_path(&name),
            "no such bridge (no control socket)",
        ),
    }
}

/// A bridge that does not answer, as an error.
fn unreachable_bridge(op: &str, name: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::from_kind(
            ErrorKind::NotFound,
            op,
            "no such bridge (no control socket)",
        )
        .with_subject(name)
    } else {
        Error::from(e).add_detail(&format!("bridge {name}"))
    }
}

/// Sends `request` to bridge `name` and prints what it did, or fails with why it refused.
fn ask(op: &str, name: &str, request: &Request) -> Result<(), Error> {
    match tunctl_br::control::request(name, request) {
        Ok(Answer::Ok(done)) => {
            eprintln!("tunctl: br {name}: {done}");
            Ok(())
        }
        Ok(Answer::Error(why)) => {
            Err(Error::from_kind(ErrorKind::InvalidInput, op, why).with_subject(name))
        }
        Err(e) => Err(unreachable_bridge(op, name, e)),
    }
}

fn up(args: UpArgs, default: &Namespace) -> Result<(), Error> {
    let ports = args
        .ports
        .iter()
        .map(|p| PortSpec::parse_in(p, default))
        .collect::<Result<Vec<_>, _>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    let mut opts = Options::new(&args.name, ports);
    opts.uplink = args.uplink;
    opts.master = args.master;
    opts.uplink_weight = args.uplink_weight;
    opts.statics = args.statics;
    opts.ageing = if args.flood {
        Duration::ZERO
    } else {
        Duration::from_secs(args.ageing)
    };
    opts.max_macs = args.max_macs as usize;
    opts.trace = args.trace;
    opts.one_thread = args.one_thread;
    opts.queues = usize::from(args.queues);
    let bridge = Bridge::up(opts)?;
    let st = bridge.status();
    let ports: Vec<String> = st
        .ports
        .iter()
        .map(|p| {
            format!(
                "{}{}{}",
                port_label(&p.name, &p.namespace),
                if p.uplink { " (uplink)" } else { "" },
                if p.vnet_hdr { "" } else { " (no vnet_hdr)" }
            )
        })
        .collect();
    eprintln!(
        "tunctl: br {}: up, ports {}; {}",
        bridge.name(),
        ports.join(", "),
        if st.flood {
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
    let (frames, forwarded, flooded) = st.totals();
    eprintln!(
        "tunctl: br {}: down; {frames} frames in, {forwarded} forwarded, {flooded} flooded; ports it created removed",
        st.name
    );
    Ok(())
}

/// A port as `up` takes it: NAME, or NAME@NS.
fn port_label(name: &str, namespace: &str) -> String {
    if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{name}@{namespace}")
    }
}

/// The state of bridge `name`, or of every running bridge.
fn statuses(name: Option<String>) -> Result<Vec<Status>, Error> {
    let (names, only) = match name {
        Some(n) => (vec![n], true),
        None => (tunctl_br::control::names(), false),
    };
    let mut all = Vec::new();
    for n in names {
        match tunctl_br::control::show(&n) {
            Ok(st) => all.push(st),
            // Listing all: a bridge that stopped meanwhile (socket gone, refused, or closed
            // without an answer) is not one.
            Err(_) if !only => continue,
            Err(e) => return Err(unreachable_bridge("br show", &n, e)),
        }
    }
    Ok(all)
}

fn show(name: Option<String>, json: bool) -> Result<(), Error> {
    let all = statuses(name)?;
    if json {
        let text = serde_json::to_string(&all)
            .map_err(|e| Error::from_kind(ErrorKind::Os, "br show", format!("JSON: {e}")))?;
        out(format_args!("{text}"));
        return Ok(());
    }
    for b in all {
        out(format_args!(
            "bridge {}: pid {}, {}, {} of {} addresses learned, {} static",
            b.name,
            b.pid,
            if b.flood {
                "flooding".to_string()
            } else {
                format!("ageing {} s", b.ageing_s)
            },
            b.entries,
            b.max_macs,
            b.statics
        ));
        for p in &b.ports {
            let dropped: Vec<String> = p
                .dropped
                .causes()
                .iter()
                .filter(|(_, n)| *n != 0)
                .map(|(cause, n)| format!("{n} {}", cause.replace('_', " ")))
                .collect();
            out(format_args!(
                "  port {}{}{}: mtu {}{}, holds {} (+{} static) of a share of {} (weight {}); in {} frames ({} B), out {} ({} B); forwarded {}, flooded {}; learned {}, moved {}, aged {}, evicted {}; dropped: {}",
                port_label(&p.name, &p.namespace),
                if p.uplink { " (uplink)" } else { "" },
                if p.alive { "" } else { " (gone)" },
                p.mtu,
                if p.queues > 1 { format!(", {} queues", p.queues) } else { String::new() },
                p.entries,
                p.statics,
                p.share,
                p.weight,
                p.rx_frames,
                p.rx_bytes,
                p.tx_frames,
                p.tx_bytes,
                p.forwarded,
                p.flooded,
                p.learned,
                p.moved,
                p.aged,
                p.evicted,
                if dropped.is_empty() { "nothing".to_string() } else { dropped.join(", ") }
            ));
        }
        for line in b.fdb_lines() {
            out(format_args!("{line}"));
        }
    }
    Ok(())
}
