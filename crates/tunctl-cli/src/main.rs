//! `tunctl`: create, inspect and configure TUN/TAP devices, and run the demo.
//!
//! Exit codes: 0 success, 1 a failed operation (one line `tunctl: DEVICE: OPERATION: cause`),
//! 2 a usage error.

mod demo;
mod output;

use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tunctl::{Cidr, Device, Error, ErrorKind, Kind, Link, MacAddr, Namespace};

/// Create, inspect and configure Linux TUN/TAP devices, over ioctls and rtnetlink (never by
/// running `ip`). Needs root or CAP_NET_ADMIN (CAP_SYS_ADMIN too for --netns).
#[derive(Parser, Debug)]
#[command(name = "tunctl", version, about, long_about = None, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a persistent TUN/TAP device, configure it, and print its name.
    ///
    /// The device outlives this command (like `ip tuntap add`) until `tunctl del`. If
    /// anything fails, a device this command created is removed again.
    Add(AddArgs),
    /// Delete a TUN/TAP device, persistent or not.
    Del {
        /// Interface name.
        #[arg(value_parser = parse_ifname)]
        name: String,
        #[command(flatten)]
        ns: NsArg,
    },
    /// List every TUN/TAP device with the kernel's view of it.
    List {
        #[command(flatten)]
        ns: NsArg,
        /// Print JSON (an array of the objects `show --json` prints).
        #[arg(long)]
        json: bool,
    },
    /// Show one TUN/TAP device: kind, flags, owner, queues, MTU, state, addresses.
    Show {
        /// Interface name.
        #[arg(value_parser = parse_ifname)]
        name: String,
        #[command(flatten)]
        ns: NsArg,
        /// Print JSON: name, index, kind, flags, tun_flags, persist, owner, group, pi,
        /// vnet_hdr, multi_queue, queues, disabled_queues, mtu, txqueuelen, mac, carrier, up,
        /// state, addresses[{family, address, prefix, peer, broadcast}].
        #[arg(long)]
        json: bool,
    },
    /// Change an existing TUN/TAP device.
    Set(SetArgs),
    /// Add, delete or list named network namespaces (/run/netns, as `ip netns`).
    Netns {
        #[command(subcommand)]
        action: NetnsCommand,
    },
    /// Two namespaces, a tun device in each, packets forwarded between them by this process:
    /// pings and a 3-second TCP stream cross it; prints a report and removes everything.
    Demo(demo::DemoArgs),
}

#[derive(Subcommand, Debug)]
enum NetnsCommand {
    /// Create a named namespace.
    Add {
        /// Namespace name (a file name under /run/netns).
        #[arg(value_parser = parse_netns_name)]
        name: String,
    },
    /// Delete a named namespace.
    Del {
        /// Namespace name.
        #[arg(value_parser = parse_netns_name)]
        name: String,
    },
    /// List the named namespaces.
    List,
}

#[derive(Args, Debug, Clone)]
struct NsArg {
    /// Network namespace: a name under /run/netns, or a path (e.g. /proc/PID/ns/net).
    #[arg(long, value_name = "NS", value_parser = parse_netns)]
    netns: Option<Namespace>,
}

impl NsArg {
    fn ns(&self) -> Namespace {
        self.netns.clone().unwrap_or_default()
    }
}

#[derive(Args, Debug)]
struct AddArgs {
    /// Interface name, or a template such as "lab%d"; default: the kernel picks tunN/tapN.
    #[arg(value_parser = parse_template)]
    name: Option<String>,
    /// A tun device (IP packets).
    #[arg(long, conflicts_with = "tap")]
    tun: bool,
    /// A tap device (Ethernet frames): the default.
    #[arg(long)]
    tap: bool,
    /// Keep the 4-byte packet-information header (default: no_pi).
    #[arg(long)]
    pi: bool,
    /// Prefix packets with a virtio-net header (IFF_VNET_HDR).
    #[arg(long)]
    vnet_hdr: bool,
    /// A multi-queue device (IFF_MULTI_QUEUE).
    #[arg(long)]
    multi_queue: bool,
    /// Fail if the device exists already (IFF_TUN_EXCL); without it, an existing persistent
    /// device of the same kind and flags is reconfigured.
    #[arg(long)]
    exclusive: bool,
    #[command(flatten)]
    ns: NsArg,
    #[command(flatten)]
    config: ConfigArgs,
    /// Bring the device up.
    #[arg(long)]
    up: bool,
}

#[derive(Args, Debug)]
struct SetArgs {
    /// Interface name.
    #[arg(value_parser = parse_ifname)]
    name: String,
    #[command(flatten)]
    ns: NsArg,
    /// Bring the device up.
    #[arg(long, conflicts_with = "down")]
    up: bool,
    /// Bring the device down (addresses stay).
    #[arg(long)]
    down: bool,
    #[command(flatten)]
    config: ConfigArgs,
    /// Remove an address (repeatable).
    #[arg(long = "del-addr", value_name = "CIDR", value_parser = parse_cidr)]
    del_addr: Vec<Cidr>,
    /// Carrier on or off.
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    carrier: Option<bool>,
}

#[derive(Args, Debug)]
struct ConfigArgs {
    /// User allowed to use the device without CAP_NET_ADMIN (name or uid).
    #[arg(long, value_name = "USER|UID")]
    owner: Option<String>,
    /// Group allowed to use the device without CAP_NET_ADMIN (name or gid).
    #[arg(long, value_name = "GROUP|GID")]
    group: Option<String>,
    /// Add an address, e.g. 10.0.0.1/24 or fd00::1/64 (repeatable; bare IPv4 = /32, IPv6 = /64).
    #[arg(long = "addr", value_name = "CIDR", value_parser = parse_cidr)]
    addr: Vec<Cidr>,
    /// Point-to-point peer of the first address of its family (the seed's dstaddr).
    #[arg(long, value_name = "ADDR", value_parser = parse_ip)]
    peer: Option<IpAddr>,
    /// IPv4 broadcast address of the first IPv4 address.
    #[arg(long, value_name = "ADDR", value_parser = parse_ipv4)]
    broadcast: Option<Ipv4Addr>,
    /// MTU (the device's range, usually 68-65535; IPv6 needs 1280 or more).
    #[arg(long, value_name = "N")]
    mtu: Option<u32>,
    /// MAC address of a tap device, e.g. 02:00:00:00:00:01.
    #[arg(long, value_name = "MAC", value_parser = parse_mac)]
    mac: Option<MacAddr>,
    /// Transmit queue length (packets the kernel queues for a slow reader).
    #[arg(long, value_name = "N")]
    txqueuelen: Option<u32>,
}

fn parse_ifname(s: &str) -> Result<String, String> {
    tunctl::validate_name(s, false)
        .map(|()| s.to_string())
        .map_err(|e| detail(&e))
}

fn parse_template(s: &str) -> Result<String, String> {
    tunctl::validate_name(s, true)
        .map(|()| s.to_string())
        .map_err(|e| detail(&e))
}

fn parse_netns(s: &str) -> Result<Namespace, String> {
    Namespace::from_arg(s).map_err(|e| detail(&e))
}

fn parse_netns_name(s: &str) -> Result<String, String> {
    Namespace::named(s)
        .map(|_| s.to_string())
        .map_err(|e| detail(&e))
}

fn parse_cidr(s: &str) -> Result<Cidr, String> {
    s.parse().map_err(|e: Error| detail(&e))
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    tunctl::parse_ip(s).map_err(|e| detail(&e))
}

fn parse_ipv4(s: &str) -> Result<Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address"))
}

fn parse_mac(s: &str) -> Result<MacAddr, String> {
    s.parse().map_err(|e: Error| detail(&e))
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: expected on or off")),
    }
}

/// The error's message without its "operation:" prefix, for clap's usage errors.
fn detail(err: &Error) -> String {
    let text = err.to_string();
    match text.split_once(": ") {
        Some((_, rest)) => rest.to_string(),
        None => text,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tunctl: {err}");
            ExitCode::from(1)
        }
    }
}

/// Whether a failure is a lack of privilege that the helper may overcome.
fn unprivileged(err: &Error) -> bool {
    err.kind() == ErrorKind::PermissionDenied && tunctl::helper::find().is_some()
}

/// The helper's view of a `--netns` argument: own, or a name under /run/netns.
fn helper_ns(ns: &Option<Namespace>) -> Result<tunctl::helper::Netns, Error> {
    match ns {
        None => Ok(tunctl::helper::Netns::Own),
        Some(Namespace::Named(n)) => Ok(tunctl::helper::Netns::Named(n.clone())),
        Some(other) => Err(Error::from_kind(
            ErrorKind::InvalidInput,
            "tunctl-helper",
            format!(
                "without privilege only named namespaces work, not {}",
                other.describe()
            ),
        )),
    }
}

fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Add(args) => add(args),
        Command::Del { name, ns } => match tun_link(&ns.ns(), &name).and_then(|link| link.delete())
        {
            Err(e) if unprivileged(&e) => {
                let mut req = tunctl::helper::Request::new(tunctl::helper::Op::Delete, &name);
                req.netns = helper_ns(&ns.netns)?;
                tunctl::helper::run(&req)
            }
            other => other,
        },
        Command::List { ns, json } => {
            let netlink = tunctl::Netlink::open_in(&ns.ns())?;
            let links = netlink.tun_links()?;
            let addrs = netlink.addresses(None)?;
            output::print_links(&links, &addrs, json);
            Ok(())
        }
        Command::Show { name, ns, json } => {
            let link = tun_link(&ns.ns(), &name)?;
            let info = link.info()?;
            let addrs = link.addresses()?;
            output::print_link(&info, &addrs, json);
            Ok(())
        }
        Command::Set(args) => set(args),
        Command::Netns { action } => match action {
            NetnsCommand::Add { name } => Namespace::create(&name).map(drop),
            NetnsCommand::Del { name } => Namespace::delete(&name),
            NetnsCommand::List => {
                for name in Namespace::list()? {
                    out(format_args!("{name}"));
                }
                Ok(())
            }
        },
        Command::Demo(args) => demo::run(args),
    }
}

/// The link `name` in `ns`, refusing anything that is not TUN/TAP.
fn tun_link(ns: &Namespace, name: &str) -> Result<Link, Error> {
    let link = Link::by_name(ns, name)?;
    let info = link.info()?;
    if info.tun.is_none() {
        let kind = info.link_kind.as_deref().unwrap_or("no link kind");
        return Err(Error::from_kind(
            ErrorKind::InvalidInput,
            "check kind",
            format!("not a TUN/TAP device ({kind})"),
        )
        .with_subject(name));
    }
    Ok(link)
}

/// Owner and group, resolved before anything is created.
fn resolve_ids(config: &ConfigArgs) -> Result<(Option<u32>, Option<u32>), Error> {
    let owner = config.owner.as_deref().map(tunctl::user_id).transpose()?;
    let group = config.group.as_deref().map(tunctl::group_id).transpose()?;
    Ok((owner, group))
}

/// Checks every link-level change against the kernel's current view of the device before
/// any is made, so that bad input changes nothing.
fn validate(link: &Link, config: &ConfigArgs, del: &[Cidr]) -> Result<(), Error> {
    let info = link.info()?;
    let addrs = link.addresses()?;
    let fail = |op: &str, why: String| {
        Err(Error::from_kind(ErrorKind::InvalidInput, op, why).with_subject(link.name()))
    };
    let (min, max) = (info.min_mtu.unwrap_or(68), info.max_mtu.unwrap_or(65535));
    let mtu = config.mtu.unwrap_or(info.mtu);
    if !(min..=max).contains(&mtu) {
        return fail(
            "set mtu",
            format!("MTU {mtu} is outside the device's range {min}..={max}"),
        );
    }
    if let Some(mac) = config.mac {
        if info.mac.is_none() {
            return fail(
                "set mac",
                "the device has no link-layer address (a tun device; only tap devices have a MAC)"
                    .into(),
            );
        }
        if !mac.is_valid_unicast() {
            return fail(
                "set mac",
                format!("{mac} is a multicast or all-zero address"),
            );
        }
    }
    if mtu < 1280 && config.addr.iter().any(|c| c.addr().is_ipv6()) {
        return fail(
            "add address",
            format!("IPv6 needs an MTU of at least 1280; the device would have {mtu}"),
        );
    }
    for cidr in &config.addr {
        if addrs
            .iter()
            .any(|a| a.addr == cidr.addr() && a.prefix == cidr.prefix())
        {
            return Err(Error::from_kind(
                ErrorKind::AlreadyExists,
                "add address",
                format!("{cidr} is already assigned"),
            )
            .with_subject(link.name()));
        }
    }
    for cidr in del {
        if !addrs
            .iter()
            .any(|a| a.addr == cidr.addr() && a.prefix == cidr.prefix())
        {
            return Err(Error::from_kind(
                ErrorKind::NotFound,
                "delete address",
                format!("{cidr} is not assigned"),
            )
            .with_subject(link.name()));
        }
    }
    let has_family = |v4: bool| {
        addrs.iter().any(|a| {
            a.addr.is_ipv4() == v4 && !a.is_link_local() && !del.iter().any(|d| d.addr() == a.addr)
        }) || config.addr.iter().any(|c| c.addr().is_ipv4() == v4)
    };
    if let Some(peer) = config.peer {
        if !has_family(peer.is_ipv4()) {
            return fail(
                "set peer",
                format!(
                    "no {} address to set the peer {peer} on; add one with --addr",
                    if peer.is_ipv4() { "IPv4" } else { "IPv6" }
                ),
            );
        }
    }
    if config.broadcast.is_some() && !has_family(true) {
        return fail(
            "set broadcast",
            "no IPv4 address to set a broadcast on; add one with --addr".into(),
        );
    }
    Ok(())
}

/// Applies the link-level settings shared by `add` and `set`, in an order the kernel accepts
/// (MTU before IPv6 addresses, addresses before their peer and broadcast).
fn configure(link: &Link, config: &ConfigArgs, del: &[Cidr]) -> Result<(), Error> {
    if let Some(mtu) = config.mtu {
        link.set_mtu(mtu)?;
    }
    if let Some(mac) = config.mac {
        link.set_mac(mac)?;
    }
    if let Some(len) = config.txqueuelen {
        link.set_txqueuelen(len)?;
    }
    for cidr in del {
        link.del_address(*cidr)?;
    }
    for cidr in &config.addr {
        link.add_address(*cidr)?;
    }
    if let Some(peer) = config.peer {
        link.set_peer(peer)?;
    }
    if let Some(brd) = config.broadcast {
        link.set_broadcast(brd)?;
    }
    Ok(())
}

/// `add` through the privileged helper: the device is created for (and owned by) the caller.
fn add_via_helper(args: &AddArgs) -> Result<(), Error> {
    use tunctl::helper::{Op, Request};
    if args.config.owner.is_some()
        || args.config.group.is_some()
        || args.config.mac.is_some()
        || args.config.txqueuelen.is_some()
        || args.config.broadcast.is_some()
    {
        return Err(Error::from_kind(
            ErrorKind::PermissionDenied,
            "tunctl-helper",
            "without privilege --owner, --group, --mac, --txqueuelen and --broadcast are not available (the helper makes you the owner)",
        ));
    }
    let kind = if args.tun { Kind::Tun } else { Kind::Tap };
    let default = if kind == Kind::Tun { "tun%d" } else { "tap%d" };
    let mut req = Request::new(Op::Create, args.name.as_deref().unwrap_or(default));
    req.kind = kind;
    req.pi = args.pi;
    req.vnet_hdr = args.vnet_hdr;
    req.multi_queue = args.multi_queue;
    req.persist = true;
    req.netns = helper_ns(&args.ns.netns)?;
    req.addrs = args.config.addr.clone();
    req.peer = args.config.peer;
    req.mtu = args.config.mtu;
    req.up = args.up;
    let dev = tunctl::helper::create(&req)?;
    out(format_args!("{}", dev.name()));
    Ok(())
}

fn add(args: AddArgs) -> Result<(), Error> {
    match add_privileged(&args) {
        Err(e) if unprivileged(&e) => add_via_helper(&args),
        other => other,
    }
}

fn add_privileged(args: &AddArgs) -> Result<(), Error> {
    let (owner, group) = resolve_ids(&args.config)?;
    let ns = args.ns.ns();
    // Whether the device exists decides what a failure may undo: only what we created.
    let existed = match args.name.as_deref().filter(|n| !n.contains('%')) {
        Some(name) => match tunctl::Netlink::open_in(&ns)?.link_by_name(name) {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        },
        None => false,
    };
    let mut builder = Device::builder()
        .kind(if args.tun { Kind::Tun } else { Kind::Tap })
        .packet_info(args.pi)
        .vnet_hdr(args.vnet_hdr)
        .exclusive(args.exclusive)
        .namespace(ns);
    if let Some(name) = &args.name {
        builder = builder.name(name);
    }
    if args.multi_queue {
        builder = builder.multi_queue(1);
    }
    let dev = builder.helper(false).create()?;
    let result = (|| {
        validate(dev.link()?, &args.config, &[])?;
        // Owner and group go before persist: a device must never be left persistent with
        // an owner other than the one asked for.
        if let Some(uid) = owner {
            dev.set_owner(uid)?;
        }
        if let Some(gid) = group {
            dev.set_group(gid)?;
        }
        dev.set_persist(true)?;
        configure(dev.link()?, &args.config, &[])?;
        if args.up {
            dev.up()?;
        }
        Ok(())
    })();
    if let Err(err) = result {
        if !existed {
            let _ = dev.destroy();
        }
        return Err(err);
    }
    out(format_args!("{}", dev.name()));
    Ok(())
}

fn set(args: SetArgs) -> Result<(), Error> {
    match set_privileged(&args) {
        Err(e) if unprivileged(&e) => {
            use tunctl::helper::{Op, Request};
            let c = &args.config;
            if c.owner.is_some()
                || c.group.is_some()
                || c.mac.is_some()
                || c.txqueuelen.is_some()
                || c.broadcast.is_some()
                || args.carrier.is_some()
            {
                return Err(e);
            }
            let mut req = Request::new(Op::Set, &args.name);
            req.netns = helper_ns(&args.ns.netns)?;
            req.addrs = c.addr.clone();
            req.del_addrs = args.del_addr.clone();
            req.peer = c.peer;
            req.mtu = c.mtu;
            req.up = args.up;
            req.down = args.down;
            tunctl::helper::run(&req)
        }
        other => other,
    }
}

fn set_privileged(args: &SetArgs) -> Result<(), Error> {
    let (owner, group) = resolve_ids(&args.config)?;
    let ns = args.ns.ns();
    let link = tun_link(&ns, &args.name)?;
    validate(&link, &args.config, &args.del_addr)?;
    // The steps most likely to be refused go first, before anything else changes.
    if owner.is_some() || group.is_some() {
        // TUNSETOWNER/GROUP need an fd attached to the device: attach with its own flags.
        let tun = link.info()?.tun.ok_or_else(|| {
            Error::from_kind(ErrorKind::NotFound, "attach", "the device went away")
                .with_subject(&args.name)
        })?;
        let mut builder = Device::builder()
            .name(&args.name)
            .kind(tun.kind)
            .packet_info(tun.pi)
            .vnet_hdr(tun.vnet_hdr)
            .namespace(ns.clone());
        if tun.multi_queue {
            builder = builder.multi_queue(1);
        }
        let dev = builder.open()?;
        if let Some(uid) = owner {
            dev.set_owner(uid)?;
        }
        if let Some(gid) = group {
            dev.set_group(gid)?;
        }
    }
    if let Some(carrier) = args.carrier {
        link.set_carrier(carrier)?;
    }
    configure(&link, &args.config, &args.del_addr)?;
    if args.up {
        link.up()?;
    }
    if args.down {
        link.down()?;
    }
    Ok(())
}

/// Prints one line on stdout; a closed pipe (`tunctl list | head -0`) is not an error.
pub(crate) fn out(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{line}") {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("tunctl: stdout: {e}");
            std::process::exit(1);
        }
    }
}
