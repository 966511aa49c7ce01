//! `tunctl vpwn`: keys in wg's formats, and a tunnel that speaks WireGuard in the
//! foreground until SIGINT/SIGTERM (or `tunctl vpwn down`).

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use tunctl::{Cidr, Error, ErrorKind, Namespace};
use tunctl_vpwn::uapi::{PeerInfo, TunnelInfo, VpwnStatus};
use tunctl_vpwn::{Config, Options, Peer, PublicKey, SecretKey, Table, Tunnel};
use zeroize::Zeroizing;

use crate::out;

/// The `vpwn` subcommands.
#[derive(Subcommand, Debug)]
pub enum VpwnCommand {
    /// Print a new private key (as `wg genkey`).
    Genkey,
    /// Read a private key on standard input and print its public key (as `wg pubkey`).
    Pubkey,
    /// Print a new preshared key (as `wg genpsk`).
    Genpsk,
    /// Show running tunnels (vpwn's, or any userspace WireGuard's) through their UAPI
    /// sockets: each one's namespace, port and peers (endpoint, allowed IPs, latest
    /// handshake, transfer), and for vpwn's, drops by cause and peers still waiting for a
    /// handshake. With -n NS, only the tunnels whose device is in NS.
    Show {
        /// Only this tunnel.
        name: Option<String>,
        /// Print JSON: an array, one object per tunnel: {name, namespace (its device's
        /// namespace under /run/netns, or null), public_key, listen_port, fwmark, peers:
        /// [{public_key, endpoint, allowed_ips, latest_handshake (seconds since the epoch,
        /// or null), rx_bytes, tx_bytes, persistent_keepalive, preshared_key (bool),
        /// handshake_pending (seconds waited, or null), auth_failures}], drops ({cause:
        /// count}: auth, replay, malformed, oversized, not_allowed, no_session, no_route,
        /// handshake_queue, handshake_rate), tx_packets, rx_packets} (drops and the counts
        /// null for other implementations).
        #[arg(long)]
        json: bool,
    },
    /// Stop the tunnel NAME that `tunctl vpwn up` or `tunctl-vpwn` runs (only that tunnel,
    /// whatever else its process runs; another implementation's process gets SIGTERM):
    /// its routes and rules, and its device (unless persistent: then as it was before
    /// `up`), go. Waits up to 5 s for it to be gone.
    Down {
        /// The tunnel's device name.
        name: String,
    },
    /// Remove what full tunnels killed before they could clean up (SIGKILL, a crash) left
    /// in this namespace (-n): their routing rules and tables. Until then the namespace's
    /// traffic is refused rather than sent in clear text (a full tunnel fails closed); the
    /// next `vpwn up` there removes them too. Running tunnels are left alone.
    Clean,
    /// Bring a tunnel up and run it in the foreground until SIGINT or SIGTERM (or `vpwn
    /// down`, or its device being deleted); then what `up` set up goes again.
    ///
    /// The peers' allowed IPs are routed to the device. A default route among them
    /// (0.0.0.0/0, ::/0: a full tunnel) goes in a routing table of its own (the first free
    /// one from 51820), the tunnel's socket gets a firewall mark of that number, and two
    /// rules per family send all other traffic through the tunnel while its own datagrams
    /// still leave by the real default route (as wg-quick does; needs CAP_NET_ADMIN).
    /// Unlike wg-quick it fails closed: while the device is down, or after vpwn was killed
    /// (until `vpwn clean` or the next `up`), that traffic is refused, never sent in clear
    /// text.
    Up(Box<UpArgs>),
}

/// `tunctl vpwn up`.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// Device name or template.
    #[arg(default_value = "vpwn%d")]
    name: String,
    /// A configuration in the wg-quick format: [Interface] PrivateKey, ListenPort,
    /// Address, MTU, Table, FwMark; any number of [Peer] with PublicKey, PresharedKey,
    /// Endpoint (an address or a host name), AllowedIPs, PersistentKeepalive. DNS and
    /// SaveConfig are reported and ignored; PreUp/PostUp/PreDown/PostDown are refused.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["key_file", "peer_key"])]
    config: Option<PathBuf>,
    /// This end's private key, a file as `wg genkey` writes it.
    #[arg(long, value_name = "FILE", required_unless_present = "config")]
    key_file: Option<PathBuf>,
    /// A preshared key file (as `wg genpsk` writes it), the same on both ends.
    #[arg(long, value_name = "FILE")]
    psk_file: Option<PathBuf>,
    /// UDP port to listen on (default: one the kernel picks).
    #[arg(long, value_name = "PORT")]
    listen: Option<u16>,
    /// Where the other end is, HOST:PORT or [IPv6]:PORT (without it, this end waits to be
    /// contacted).
    #[arg(long, value_name = "HOST:PORT")]
    peer: Option<String>,
    /// The other end's public key.
    #[arg(long, value_name = "KEY", required_unless_present = "config")]
    peer_key: Option<String>,
    /// Networks the other end may send from, and that are routed to it (comma-separated;
    /// 0.0.0.0/0 or ::/0 make a full tunnel).
    #[arg(long, value_name = "CIDR,...", value_delimiter = ',')]
    allowed_ips: Vec<Cidr>,
    /// Address of this end's device (repeatable).
    #[arg(long, value_name = "CIDR")]
    address: Vec<Cidr>,
    /// MTU of the device (default 1420).
    #[arg(long, value_name = "N")]
    mtu: Option<u32>,
    /// Send a keepalive after this many idle seconds (for NAT).
    #[arg(long, value_name = "SECONDS")]
    keepalive: Option<u16>,
    /// Where the allowed IPs are routed: auto (the main table; a full tunnel in a table of
    /// its own), off (no routes: route yourself), or a table number. Overrides the file's
    /// Table.
    #[arg(long, value_name = "auto|off|N", value_parser = parse_table)]
    table: Option<Table>,
    /// The firewall mark on the tunnel's own datagrams (default: none, or the full
    /// tunnel's table number). Overrides the file's FwMark.
    #[arg(long, value_name = "MARK")]
    fwmark: Option<u32>,
    /// Make the device in this namespace (a container's) while the UDP socket stays in the
    /// namespace vpwn runs in (-n): the container gets an encrypted interface and needs no
    /// other way out, as with kernel WireGuard.
    #[arg(long, value_name = "NS", value_parser = crate::parse_netns)]
    device_netns: Option<Namespace>,
    /// Run without parts of the fast path, to measure what each buys or to avoid a kernel
    /// feature: tun-offload (TSO super-packets on the device), udp-gso, udp-gro.
    #[arg(long, value_name = "PART,...", value_delimiter = ',', value_parser = ["tun-offload", "udp-gso", "udp-gro"])]
    without: Vec<String>,
}

fn parse_table(s: &str) -> Result<Table, String> {
    let cfg = format!(
        "[Interface]\nPrivateKey = {}\nTable = {s}\n",
        "A".repeat(43) + "="
    );
    Config::parse(&cfg).map(|c| c.table).map_err(|e| {
        e.split_once("table: ")
            .map_or(e.clone(), |(_, why)| why.to_string())
    })
}

/// Reads a file holding a secret, checking the very file it reads (one open; the mode
/// and owner come from that open file, so nothing can be swapped in between): a regular
/// file, owned by this user or root, that nobody else may read or write (a key others can
/// read is no longer a secret). A symbolic link is followed: the file it leads to is the
/// one checked.
fn read_secret(path: &PathBuf) -> Result<Zeroizing<String>, Error> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let named = |e: std::io::Error| Error::from(e).add_detail(&path.display().to_string());
    let refuse = |why: String| {
        Err(
            Error::from_kind(ErrorKind::PermissionDenied, "read key", why)
                .with_subject(path.display().to_string()),
        )
    };
    // O_NONBLOCK: a FIFO planted in its place does not hang the open.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(named)?;
    let meta = file.metadata().map_err(named)?;
    let mode = meta.mode() & 0o7777;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_file() {
        return refuse("not a regular file".into());
    }
    if meta.uid() != me && meta.uid() != 0 {
        return refuse(format!(
            "it belongs to uid {}, not to you or root: a secret is kept by its user",
            meta.uid()
        ));
    }
    if mode & 0o077 != 0 {
        return refuse(format!(
            "it holds a secret but others may read or write it (mode {mode:04o}): chmod 600 {}",
            path.display()
        ));
    }
    // A key or a configuration is small: anything past 1 MiB is not one. Room for all of
    // it from the start: a string that grew would leave copies of the secret behind.
    const MOST: u64 = 1 << 20;
    let mut text = Zeroizing::new(String::with_capacity(
        usize::try_from(meta.len().min(MOST)).unwrap_or(0) + 1,
    ));
    file.take(MOST).read_to_string(&mut text).map_err(named)?;
    Ok(text)
}

fn read_key(path: &PathBuf) -> Result<SecretKey, Error> {
    let text = read_secret(path)?;
    text.parse().map_err(|why: String| {
        Error::from_kind(ErrorKind::InvalidInput, "read key", why)
            .with_subject(path.display().to_string())
    })
}

fn bad(why: impl Into<String>) -> Error {
    Error::from_kind(ErrorKind::InvalidInput, "vpwn", why)
}

/// Runs a `vpwn` subcommand; `ns` is `-n`, if given.
pub fn run(command: VpwnCommand, ns: Option<Namespace>) -> Result<(), Error> {
    match command {
        VpwnCommand::Genkey => {
            let key = SecretKey::generate_private().map_err(bad)?;
            out(format_args!("{}", key.to_base64().as_str()));
            Ok(())
        }
        VpwnCommand::Genpsk => {
            let key = SecretKey::generate_preshared().map_err(bad)?;
            out(format_args!("{}", key.to_base64().as_str()));
            Ok(())
        }
        VpwnCommand::Pubkey => {
            let mut text = Zeroizing::new(String::new());
            std::io::stdin().take(4096).read_to_string(&mut text)?;
            let key: SecretKey = text.parse().map_err(bad)?;
            out(format_args!("{}", key.public()));
            Ok(())
        }
        VpwnCommand::Up(args) => up(*args, ns.unwrap_or_default()),
        VpwnCommand::Show { name, json } => show(name, json, ns),
        VpwnCommand::Down { name } => down(&name),
        VpwnCommand::Clean => {
            let n = tunctl_vpwn::routing::remove_leftovers(&ns.unwrap_or_default())?;
            eprintln!(
                "tunctl: vpwn clean: {}",
                match n {
                    0 => "nothing left by killed tunnels".to_string(),
                    1 => "removed the rules and routes of 1 killed full tunnel".to_string(),
                    n => format!("removed the rules and routes of {n} killed full tunnels"),
                }
            );
            Ok(())
        }
    }
}

/// The configuration `up` was asked for: the file, or the options for one peer.
fn config_of(args: &UpArgs) -> Result<Config, Error> {
    let mut config = match &args.config {
        Some(path) => {
            let text = read_secret(path).map_err(|e| {
                if e.subject().is_none() {
                    e.with_subject(format!("--config {}", path.display()))
                } else {
                    e
                }
            })?;
            Config::parse(&text)
                .map_err(|why| bad(format!("--config {}: {why}", path.display())))?
        }
        None => {
            let (Some(key_file), Some(peer_key)) = (&args.key_file, &args.peer_key) else {
                return Err(bad("--key-file and --peer-key, or --config"));
            };
            let public: PublicKey = peer_key
                .parse()
                .map_err(|e| bad(format!("--peer-key: {e}")))?;
            let mut peer = Peer::new(public);
            peer.preshared_key = args.psk_file.as_ref().map(read_key).transpose()?;
            peer.allowed_ips = args.allowed_ips.iter().map(Cidr::masked).collect();
            peer.keepalive = args.keepalive.unwrap_or(0);
            if let Some(e) = &args.peer {
                match e.parse() {
                    Ok(addr) => peer.endpoint = Some(addr),
                    Err(_) => peer.endpoint_name = Some(e.clone()),
                }
            }
            Config {
                private_key: Some(read_key(key_file)?),
                listen_port: args.listen.unwrap_or(0),
                peers: vec![peer],
                addresses: args.address.clone(),
                mtu: args.mtu,
                ..Config::default()
            }
        }
    };
    if let Some(t) = args.table {
        config.table = t;
    }
    if let Some(m) = args.fwmark {
        config.fwmark = m;
    }
    Ok(config)
}

fn up(args: UpArgs, ns: Namespace) -> Result<(), Error> {
    let config = config_of(&args)?;
    if !config.ignored.is_empty() {
        eprintln!(
            "tunctl: vpwn: ignored (vpwn does not set them): {}",
            config.ignored.join(", ")
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    let fast = tunctl_vpwn::FastPath {
        tun_offload: !args.without.iter().any(|w| w == "tun-offload"),
        udp_gso: !args.without.iter().any(|w| w == "udp-gso"),
        udp_gro: !args.without.iter().any(|w| w == "udp-gro"),
    };
    let addresses = config.addresses.clone();
    let tunnel = Tunnel::up_with(
        Options {
            name: args.name.clone(),
            namespace: ns,
            device_namespace: args.device_netns.clone(),
            config,
        },
        fast,
    )
    .map_err(|e| {
        if e.subject().is_some() {
            e
        } else if args.name.contains('%') {
            // No device yet: a template is no name.
            e.with_subject("vpwn")
        } else {
            e.with_subject(&args.name)
        }
    })?;
    report_up(&tunnel, &addresses);
    let mut told: Vec<PublicKey> = Vec::new();
    let mut ticks = 0u64;
    while !stop.load(Ordering::SeqCst) && tunnel.is_running() {
        std::thread::sleep(Duration::from_millis(100));
        ticks += 1;
        if ticks % 10 == 0 {
            tell_stalled(&tunnel, &mut told);
        }
    }
    let c = tunnel.counters();
    let ended = tunnel.ended();
    let why = match &ended {
        Some(e) => e.to_string(),
        None => "signal".to_string(),
    };
    eprintln!(
        "tunctl: vpwn {}: down ({why}); sent {} packets ({} bytes), received {} ({} bytes); dropped: {}",
        tunnel.name(),
        c.tx_packets,
        c.tx_bytes,
        c.rx_packets,
        c.rx_bytes,
        c.drops_text()
    );
    let name = tunnel.name().to_string();
    tunnel.down();
    match ended {
        Some(e @ tunctl_vpwn::Ended::ThreadFailed(_)) => {
            Err(Error::from_kind(ErrorKind::Other, "vpwn up", e.to_string()).with_subject(name))
        }
        _ => Ok(()),
    }
}

/// What `up` says once the tunnel runs.
fn report_up(tunnel: &Tunnel, addresses: &[Cidr]) {
    let public = tunnel
        .public_key()
        .map_or("(none)".to_string(), |k| k.to_string());
    eprintln!(
        "tunctl: vpwn {}: up, listening on UDP {}, public key {public}",
        tunnel.name(),
        tunnel.port(),
    );
    for w in tunnel.warnings() {
        eprintln!("tunctl: vpwn: warning: {w}");
    }
    if let Some((table, mark)) = tunnel.full_tunnel() {
        eprintln!(
            "tunctl: vpwn: full tunnel: default route in table {table}, this tunnel's datagrams marked {mark} (rules: not fwmark {mark} lookup {table}; lookup main suppress_prefixlength 0); removed on exit"
        );
    }
    let info = tunnel.info();
    if info.peers.len() == 1 {
        let hosts: Vec<String> = addresses
            .iter()
            .filter_map(|c| Cidr::new(c.addr(), if c.addr().is_ipv4() { 32 } else { 128 }).ok())
            .map(|h| h.to_string())
            .collect();
        eprintln!(
            "tunctl: vpwn: on the other host: tunctl vpwn up --key-file THEIR.key --peer THIS_HOST:{} --peer-key {public} --allowed-ips {} --address ADDRESS",
            tunnel.port(),
            if hosts.is_empty() { "CIDR".to_string() } else { hosts.join(",") },
        );
    } else {
        eprintln!("tunctl: vpwn: {} peers", info.peers.len());
    }
    match tunnel.uapi_error() {
        None => eprintln!("tunctl: vpwn: `wg show {}` shows it", tunnel.name()),
        Some(why) => eprintln!("tunctl: vpwn: no UAPI socket for wg show: {why}"),
    }
    if addresses.is_empty() {
        eprintln!("tunctl: vpwn: the device has no address: give one with --address");
    }
}

/// How long an unanswered handshake is waited for before `up` says so: three tries.
const STALLED: Duration = Duration::from_secs(15);

/// Says, once per wait, which peers have not answered our handshakes.
fn tell_stalled(tunnel: &Tunnel, told: &mut Vec<PublicKey>) {
    let stalled = tunnel.stalled(STALLED);
    told.retain(|k| stalled.iter().any(|(s, _, _)| s == k));
    for (key, endpoint, waited) in stalled {
        if told.contains(&key) {
            continue;
        }
        let at = endpoint.map_or("its endpoint (none known yet)".to_string(), |e| {
            e.to_string()
        });
        eprintln!(
            "tunctl: vpwn {}: no handshake with {key} after {} s (wrong key, or nothing answers at {at})",
            tunnel.name(),
            waited.as_secs()
        );
        told.push(key);
    }
}

/// One tunnel as `show` reads it.
struct Shown {
    name: String,
    namespace: Option<String>,
    info: TunnelInfo,
    extra: Option<VpwnStatus>,
}

/// The namespace a (non-vpwn) tunnel's device is in, as far as its process tells: the one
/// it runs in.
fn process_namespace(name: &str) -> Option<String> {
    let pid = tunctl_vpwn::uapi::server_pid(name).ok()?;
    Namespace::pid(pid).name_in_run_dir().ok().flatten()
}

fn show(name: Option<String>, json: bool, ns: Option<Namespace>) -> Result<(), Error> {
    let only = name.is_some();
    let names = match name {
        Some(n) => vec![n],
        None => tunctl_vpwn::uapi::names(),
    };
    let wanted = ns
        .as_ref()
        .map(|n| n.name_in_run_dir().map(|found| found.unwrap_or_default()))
        .transpose()?;
    let mut all = Vec::new();
    for n in names {
        let info = match tunctl_vpwn::uapi::get(&n) {
            Ok(i) => i,
            Err(e) if only => {
                let why = match e.kind() {
                    std::io::ErrorKind::NotFound => format!(
                        "no such tunnel (no UAPI socket {})",
                        tunctl_vpwn::uapi::socket_path(&n).display()
                    ),
                    std::io::ErrorKind::ConnectionRefused => {
                        "its UAPI socket is stale: nothing runs it".to_string()
                    }
                    _ => e.to_string(),
                };
                return Err(
                    Error::from_kind(ErrorKind::NotFound, "vpwn show", why).with_subject(&n)
                );
            }
            // A socket left by a program that is gone: not a tunnel.
            Err(_) => continue,
        };
        let extra = tunctl_vpwn::uapi::vpwn_status(&n).ok();
        let namespace = match &extra {
            Some(x) => x.device_namespace.clone(),
            None => process_namespace(&n),
        };
        if let Some(w) = &wanted {
            if namespace.as_deref().unwrap_or("") != w {
                continue;
            }
        }
        all.push(Shown {
            name: n,
            namespace,
            info,
            extra,
        });
    }
    if json {
        let list: Vec<serde_json::Value> = all.iter().map(shown_json).collect();
        out(format_args!("{}", serde_json::Value::Array(list)));
        return Ok(());
    }
    let now = SystemTime::now();
    for t in &all {
        out(format_args!(
            "tunnel: {}{}",
            t.name,
            t.namespace
                .as_deref()
                .map_or(String::new(), |n| format!(" (netns {n})"))
        ));
        out(format_args!(
            "  public key: {}",
            t.info
                .public_key
                .map_or("(none)".to_string(), |k| k.to_string())
        ));
        out(format_args!("  listening port: {}", t.info.listen_port));
        if t.info.fwmark != 0 {
            out(format_args!("  fwmark: {:#x}", t.info.fwmark));
        }
        for p in &t.info.peers {
            show_peer(p, t.extra.as_ref(), now);
        }
        if let Some(x) = &t.extra {
            out(format_args!("  dropped: {}", drops_text(x)));
        }
    }
    Ok(())
}

fn show_peer(p: &PeerInfo, extra: Option<&VpwnStatus>, now: SystemTime) {
    out(format_args!("  peer: {}", p.public_key));
    out(format_args!(
        "    endpoint: {}",
        p.endpoint.map_or("(none)".to_string(), |e| e.to_string())
    ));
    let allowed: Vec<String> = p.allowed_ips.iter().map(|c| c.to_string()).collect();
    out(format_args!("    allowed ips: {}", allowed.join(", ")));
    match p.last_handshake {
        Some(at) => out(format_args!(
            "    latest handshake: {} seconds ago",
            now.duration_since(at).map_or(0, |d| d.as_secs())
        )),
        None => out(format_args!("    latest handshake: none yet")),
    }
    out(format_args!(
        "    transfer: {} B received, {} B sent",
        p.rx_bytes, p.tx_bytes
    ));
    if p.keepalive > 0 {
        out(format_args!(
            "    persistent keepalive: every {} seconds",
            p.keepalive
        ));
    }
    let x = extra.and_then(|x| x.peers.iter().find(|e| e.public_key == p.public_key));
    if let Some(x) = x {
        if let Some(w) = x.handshake_pending.filter(|w| *w >= STALLED) {
            out(format_args!(
                "    ! no handshake after {} s (wrong key, or nothing answers at the endpoint)",
                w.as_secs()
            ));
        }
        if x.auth_failures > 0 {
            out(format_args!(
                "    ! {} datagrams in its name failed authentication (a wrong preshared key?)",
                x.auth_failures
            ));
        }
    }
}

/// The drops in words, as `Counters::drops_text` words them.
fn drops_text(x: &VpwnStatus) -> String {
    let counts: std::collections::HashMap<&str, u64> =
        x.counters.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let named: Vec<String> = tunctl_vpwn::Counters::default()
        .drops()
        .into_iter()
        .filter_map(|(cause, label, _)| {
            let v = *counts.get(format!("drop_{cause}").as_str())?;
            (v > 0).then(|| format!("{v} {label}"))
        })
        .collect();
    if named.is_empty() {
        "nothing".into()
    } else {
        named.join(", ")
    }
}

fn shown_json(t: &Shown) -> serde_json::Value {
    let extra = t.extra.as_ref();
    let peers: Vec<serde_json::Value> = t
        .info
        .peers
        .iter()
        .map(|p| {
            let x = extra.and_then(|x| x.peers.iter().find(|e| e.public_key == p.public_key));
            serde_json::json!({
                "public_key": p.public_key.to_string(),
                "endpoint": p.endpoint.map(|e| e.to_string()),
                "allowed_ips": p.allowed_ips.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                "latest_handshake": p.last_handshake
                    .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs()),
                "rx_bytes": p.rx_bytes,
                "tx_bytes": p.tx_bytes,
                "persistent_keepalive": p.keepalive,
                "preshared_key": p.preshared_key,
                "handshake_pending": x.and_then(|x| x.handshake_pending).map(|d| d.as_secs()),
                "auth_failures": x.map(|x| x.auth_failures),
            })
        })
        .collect();
    let count = |k: &str| {
        extra.map(|x| {
            x.counters
                .iter()
                .find(|(n, _)| n == k)
                .map_or(0, |(_, v)| *v)
        })
    };
    let drops = extra.map(|x| {
        serde_json::Value::Object(
            x.counters
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("drop_")?.to_string(), (*v).into())))
                .collect(),
        )
    });
    serde_json::json!({
        "name": t.name,
        "namespace": t.namespace,
        "public_key": t.info.public_key.map(|k| k.to_string()),
        "listen_port": t.info.listen_port,
        "fwmark": t.info.fwmark,
        "peers": peers,
        "drops": drops,
        "tx_packets": count("tx_packets"),
        "rx_packets": count("rx_packets"),
    })
}

/// `vpwn down NAME`: vpwn's own stop (only that tunnel); another implementation's process
/// gets SIGTERM.
fn down(name: &str) -> Result<(), Error> {
    let path = tunctl_vpwn::uapi::socket_path(name);
    match tunctl_vpwn::uapi::down(name) {
        Ok(true) => {
            let started = std::time::Instant::now();
            while started.elapsed() < Duration::from_secs(5) {
                if !path.exists() {
                    eprintln!("tunctl: {name}: down");
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(Error::from_kind(
                ErrorKind::Os,
                "vpwn down",
                "told to stop, but its UAPI socket is still there after 5 s",
            )
            .with_subject(name))
        }
        // Not vpwn (it refused the request, or hung up): its process stops.
        Ok(false) => {
            crate::stop_server("vpwn down", name, &path, "no such tunnel (no UAPI socket)")
        }
        Err(e) => {
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => {
                    format!("no such tunnel (no UAPI socket {})", path.display())
                }
                std::io::ErrorKind::ConnectionRefused => {
                    "its UAPI socket is stale: nothing runs it".to_string()
                }
                _ => e.to_string(),
            };
            Err(Error::from_kind(ErrorKind::NotFound, "vpwn down", why).with_subject(name))
        }
    }
}
