//! `tunctl vpwn`: keys in wg's formats, and a tunnel that speaks WireGuard in the
//! foreground until SIGINT/SIGTERM.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use tunctl::{Cidr, Error, ErrorKind, Namespace};
use tunctl_vpwn::{Config, Interface, Key, Options, Peer, Tunnel};

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
    /// sockets: peer, endpoint, allowed IPs, latest handshake, transfer, and (vpwn's) drops
    /// by cause.
    Show {
        /// Only this tunnel.
        name: Option<String>,
        /// Print JSON: an array of {name, public_key, listen_port, peer, endpoint,
        /// allowed_ips, latest_handshake (seconds since the epoch, or null), rx_bytes,
        /// tx_bytes, persistent_keepalive, drops ({cause: count}: auth, replay, malformed,
        /// oversized, not_allowed, no_session, no_route; null for other implementations)}.
        #[arg(long)]
        json: bool,
    },
    /// Stop the tunnel NAME that `tunctl vpwn up` or `tunctl-vpwn` (or wireguard-go) runs:
    /// the process serving its UAPI socket gets SIGTERM and removes the device (unless
    /// persistent), its routes and the socket. Waits up to 5 s for it to be gone.
    Down {
        /// The tunnel's device name.
        name: String,
    },
    /// Bring a tunnel up and run it in the foreground until SIGINT or SIGTERM; then the
    /// device (unless persistent) and its routes are removed.
    ///
    /// Prints this end's public key and the command that brings up the other end.
    Up(Box<UpArgs>),
}

/// `tunctl vpwn up`.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// Device name or template.
    #[arg(default_value = "vpwn%d")]
    name: String,
    /// A configuration in the wg-quick format ([Interface] PrivateKey, ListenPort, Address,
    /// MTU; [Peer] PublicKey, PresharedKey, Endpoint, AllowedIPs, PersistentKeepalive).
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
    /// Where the other end is, HOST:PORT (without it, this end waits to be contacted).
    #[arg(long, value_name = "HOST:PORT")]
    peer: Option<String>,
    /// The other end's public key.
    #[arg(long, value_name = "KEY", required_unless_present = "config")]
    peer_key: Option<String>,
    /// Networks the other end may send from, and that are routed to it (comma-separated).
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
    /// Run without parts of the fast path, to measure what each buys or to avoid a kernel
    /// feature: tun-offload (TSO super-packets on the device), udp-gso, udp-gro.
    #[arg(long, value_name = "PART,...", value_delimiter = ',', value_parser = ["tun-offload", "udp-gso", "udp-gro"])]
    without: Vec<String>,
}

/// Reads a file holding a secret, checking the very file it reads (one open; the mode
/// and owner come from that open file, so nothing can be swapped in between): a regular
/// file, owned by this user or root, that nobody else may read or write (a key others can
/// read is no longer a secret). A symbolic link is followed: the file it leads to is the
/// one checked.
fn read_secret(path: &PathBuf) -> Result<String, Error> {
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
    let mut text = String::new();
    // A key or a configuration is small: anything past 1 MiB is not one.
    file.take(1 << 20)
        .read_to_string(&mut text)
        .map_err(named)?;
    Ok(text)
}

fn read_key(path: &PathBuf) -> Result<Key, Error> {
    let text = read_secret(path)?;
    text.parse().map_err(|why: String| {
        Error::from_kind(ErrorKind::InvalidInput, "read key", why)
            .with_subject(path.display().to_string())
    })
}

fn bad(why: impl Into<String>) -> Error {
    Error::from_kind(ErrorKind::InvalidInput, "vpwn", why)
}

/// Runs a `vpwn` subcommand.
pub fn run(command: VpwnCommand, ns: Namespace) -> Result<(), Error> {
    match command {
        VpwnCommand::Genkey => {
            out(format_args!("{}", Key::generate_private().map_err(bad)?));
            Ok(())
        }
        VpwnCommand::Genpsk => {
            out(format_args!("{}", Key::generate_preshared().map_err(bad)?));
            Ok(())
        }
        VpwnCommand::Pubkey => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            let key: Key = text.parse().map_err(bad)?;
            out(format_args!("{}", key.public()));
            Ok(())
        }
        VpwnCommand::Up(args) => up(*args, ns),
        VpwnCommand::Show { name, json } => show(name, json),
        VpwnCommand::Down { name } => crate::stop_server(
            "vpwn down",
            &name,
            &tunctl_vpwn::uapi::socket_path(&name),
            "no such tunnel (no UAPI socket)",
        ),
    }
}

fn up(args: UpArgs, ns: Namespace) -> Result<(), Error> {
    let config = match &args.config {
        Some(path) => {
            let text = read_secret(path)?;
            let c =
                Config::parse(&text).map_err(|why| bad(format!("{}: {why}", path.display())))?;
            if !c.ignored.is_empty() {
                eprintln!(
                    "tunctl: vpwn: ignored (wg-quick only): {}",
                    c.ignored.join(", ")
                );
            }
            c
        }
        None => {
            let (Some(key_file), Some(peer_key)) = (&args.key_file, &args.peer_key) else {
                return Err(bad("--key-file and --peer-key, or --config"));
            };
            Config {
                interface: Interface {
                    private_key: read_key(key_file)?,
                    listen_port: args.listen,
                    addresses: args.address.clone(),
                    mtu: args.mtu,
                },
                peer: Peer {
                    public_key: peer_key.parse().map_err(bad)?,
                    preshared_key: args.psk_file.as_ref().map(read_key).transpose()?,
                    endpoint: args
                        .peer
                        .as_deref()
                        .map(tunctl_vpwn::config::parse_endpoint)
                        .transpose()
                        .map_err(bad)?,
                    allowed_ips: args.allowed_ips.clone(),
                    persistent_keepalive: args.keepalive.filter(|k| *k > 0),
                },
                ignored: Vec::new(),
            }
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    let fast = tunctl_vpwn::FastPath {
        tun_offload: !args.without.iter().any(|w| w == "tun-offload"),
        udp_gso: !args.without.iter().any(|w| w == "udp-gso"),
        udp_gro: !args.without.iter().any(|w| w == "udp-gro"),
    };
    let tunnel = Tunnel::up_with(
        Options {
            name: args.name.clone(),
            namespace: ns,
            config: config.clone(),
        },
        fast,
    )?;
    for w in tunnel.warnings() {
        eprintln!("tunctl: vpwn: warning: {w}");
    }
    let mine: Vec<String> = config
        .interface
        .addresses
        .iter()
        .map(|a| a.to_string())
        .collect();
    let host = |c: &Cidr| {
        Cidr::new(c.addr(), if c.addr().is_ipv4() { 32 } else { 128 }).map(|h| h.to_string())
    };
    let theirs: Vec<String> = config
        .interface
        .addresses
        .iter()
        .filter_map(|c| host(c).ok())
        .collect();
    eprintln!(
        "tunctl: vpwn {}: up, listening on UDP {}, public key {}",
        tunnel.name(),
        tunnel.port(),
        tunnel.public_key()
    );
    eprintln!(
        "tunctl: vpwn: on the other host: tunctl vpwn up --key-file THEIR.key --peer THIS_HOST:{} --peer-key {} --allowed-ips {} --address ADDRESS",
        tunnel.port(),
        tunnel.public_key(),
        if theirs.is_empty() { "CIDR".to_string() } else { theirs.join(",") },
    );
    match tunnel.uapi_error() {
        None => eprintln!("tunctl: vpwn: `wg show {}` shows it", tunnel.name()),
        Some(why) => eprintln!("tunctl: vpwn: no UAPI socket for wg show: {why}"),
    }
    if mine.is_empty() {
        eprintln!("tunctl: vpwn: the device has no address: give one with --address");
    }
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let c = tunnel.counters();
    eprintln!(
        "tunctl: vpwn {}: down; sent {} packets ({} bytes), received {} ({} bytes); dropped: {}",
        tunnel.name(),
        c.tx_packets,
        c.tx_bytes,
        c.rx_packets,
        c.rx_bytes,
        c.drops_text()
    );
    tunnel.down();
    Ok(())
}

/// One peer's part of a `get=1` answer, as JSON.
fn peer_json(pairs: &[(String, String)]) -> serde_json::Value {
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let num = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let allowed: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "allowed_ip")
        .map(|(_, v)| v.clone())
        .collect();
    serde_json::json!({
        "public_key": get("public_key").and_then(|h| tunctl_vpwn::uapi::parse_hex_key(&h).ok()).map(|k| k.to_string()),
        "endpoint": get("endpoint"),
        "allowed_ips": allowed,
        "latest_handshake": get("last_handshake_time_sec")
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|s| *s > 0),
        "rx_bytes": num("rx_bytes"),
        "tx_bytes": num("tx_bytes"),
        "persistent_keepalive": num("persistent_keepalive_interval"),
    })
}

fn show(name: Option<String>, json: bool) -> Result<(), Error> {
    let (names, only) = match name {
        Some(n) => (vec![n], true),
        None => (tunctl_vpwn::uapi::names(), false),
    };
    let mut all = Vec::new();
    for n in names {
        let pairs = match tunctl_vpwn::uapi::get(&n) {
            Ok(p) => p,
            // A socket left by a program that is gone: not a tunnel.
            Err(e) if !only && e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(Error::from(e).add_detail(&format!("tunnel {n}"))),
        };
        // The device's lines, then one section per peer, each starting at public_key.
        let split = pairs
            .iter()
            .position(|(k, _)| k == "public_key")
            .unwrap_or(pairs.len());
        let (device, rest) = pairs.split_at(split);
        let mut peers = Vec::new();
        let mut start = 0;
        for i in 1..=rest.len() {
            if i == rest.len() || rest[i].0 == "public_key" {
                peers.push(peer_json(&rest[start..i]));
                start = i;
            }
        }
        let get = |k: &str| {
            device
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        // vpwn's drops by cause; other implementations do not have them.
        let drops = tunctl_vpwn::uapi::counters(&n).ok().map(|pairs| {
            let map: serde_json::Map<String, serde_json::Value> = pairs
                .into_iter()
                .filter_map(|(k, v)| {
                    let cause = k.strip_prefix("drop_")?.to_string();
                    Some((cause, v.parse::<u64>().ok()?.into()))
                })
                .collect();
            serde_json::Value::Object(map)
        });
        // The first peer's fields also at the top: a point-to-point tunnel reads simply.
        let first = peers.first().cloned().unwrap_or(serde_json::json!({}));
        all.push(serde_json::json!({
            "name": n,
            "public_key": get("private_key")
                .and_then(|h| tunctl_vpwn::uapi::parse_hex_key(&h).ok())
                .map(|k| k.public().to_string()),
            "listen_port": get("listen_port").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
            "peer": first["public_key"],
            "endpoint": first["endpoint"],
            "allowed_ips": first.get("allowed_ips").cloned().unwrap_or(serde_json::json!([])),
            "latest_handshake": first["latest_handshake"],
            "rx_bytes": first.get("rx_bytes").cloned().unwrap_or(0.into()),
            "tx_bytes": first.get("tx_bytes").cloned().unwrap_or(0.into()),
            "persistent_keepalive": first.get("persistent_keepalive").cloned().unwrap_or(0.into()),
            "peers": peers,
            "drops": drops,
        }));
    }
    if json {
        out(format_args!("{}", serde_json::Value::Array(all)));
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for t in all {
        let s = |v: &serde_json::Value| v.as_str().unwrap_or("(none)").to_string();
        out(format_args!("tunnel: {}", s(&t["name"])));
        out(format_args!("  public key: {}", s(&t["public_key"])));
        out(format_args!("  listening port: {}", t["listen_port"]));
        for p in t["peers"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            out(format_args!("  peer: {}", s(&p["public_key"])));
            out(format_args!("    endpoint: {}", s(&p["endpoint"])));
            let allowed: Vec<&str> = p["allowed_ips"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            out(format_args!("    allowed ips: {}", allowed.join(", ")));
            match p["latest_handshake"].as_u64() {
                Some(at) => out(format_args!(
                    "    latest handshake: {} seconds ago",
                    now.saturating_sub(at)
                )),
                None => out(format_args!("    latest handshake: none yet")),
            }
            out(format_args!(
                "    transfer: {} B received, {} B sent",
                p["rx_bytes"], p["tx_bytes"]
            ));
        }
        if let Some(d) = t["drops"].as_object() {
            let list: Vec<String> = d
                .iter()
                .filter(|(_, v)| v.as_u64() != Some(0))
                .map(|(k, v)| format!("{} {}", v, k.replace('_', " ")))
                .collect();
            out(format_args!(
                "  dropped: {}",
                if list.is_empty() {
                    "nothing".to_string()
                } else {
                    list.join(", ")
                }
            ));
        }
    }
    Ok(())
}
