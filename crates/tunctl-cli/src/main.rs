//! `tunctl`: create, inspect and configure TUN/TAP devices, and run the demo.
//!
//! Exit codes: 0 success, 1 a failed operation (one line `tunctl: DEVICE: OPERATION: cause`),
//! 2 a usage error.

mod br;
mod demo;
mod output;
mod vpwn;

use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use std::os::fd::AsFd;

use tunctl::{Cidr, Device, Error, ErrorKind, Kind, Link, LinkConfig, MacAddr, Namespace, Step};

/// Create, inspect and configure Linux TUN/TAP devices, over ioctls and rtnetlink (never by
/// running `ip`). Needs root or CAP_NET_ADMIN (CAP_SYS_ADMIN too for --netns).
#[derive(Parser, Debug)]
#[command(name = "tunctl", version, about, long_about = None, max_term_width = 100)]
struct Cli {
    /// Show what tunctl-helper logs about a request made through it (its decision; it also
    /// goes to the system log).
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(flatten)]
    ns: NsArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a persistent TUN/TAP device, configure it, and print its name.
    ///
    /// The device outlives this command (like `ip tuntap add`) until `tunctl del`. It is
    /// owned by the user running this command unless --owner, --group or --no-owner says
    /// otherwise (the kernel lets any user open a device with neither). If anything fails,
    /// a device this command created is removed again. On an existing persistent device of
    /// the same kind and flags, the configuration is applied (addresses it has already are
    /// kept), so running the same command twice succeeds.
    Add(AddArgs),
    /// Delete a TUN/TAP device, persistent or not.
    Del {
        /// Interface name.
        #[arg(value_parser = parse_ifname)]
        name: String,
    },
    /// List every TUN/TAP device with the kernel's view of it.
    List {
        /// Print JSON (an array of the objects `show --json` prints).
        #[arg(long)]
        json: bool,
    },
    /// Show one TUN/TAP device: kind, flags, owner, queues, MTU, state, addresses.
    Show {
        /// Interface name.
        #[arg(value_parser = parse_ifname)]
        name: String,
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
    /// Two namespaces, a tun device in each, packets forwarded between them by this process;
    /// then two more joined by a veth, with a vpwn (WireGuard) tunnel between them; then
    /// three more, a tap in each, all ports of a br learning bridge in this process. Pings
    /// and a 3-second TCP stream cross each; prints a report (the bridge's learned table and
    /// per-port counts too) and removes everything.
    Demo(demo::DemoArgs),
    /// A tunnel that speaks WireGuard: keys, `up`, `show`, `down` (and the `tunctl-vpwn`
    /// command, a drop-in for wireguard-go).
    Vpwn {
        #[command(subcommand)]
        action: vpwn::VpwnCommand,
    },
    /// A userspace learning bridge of tap devices (`up`, `show`, `port`, `fdb`, `down`):
    /// ports in any namespace, added and removed while it runs, an uplink into a Linux
    /// bridge, a bounded table shared fairly, static entries, GSO frames whole.
    Br {
        #[command(subcommand)]
        action: br::BrCommand,
    },
    /// Print a completion script for a shell, e.g.
    /// `tunctl completions bash > /etc/bash_completion.d/tunctl`. In bash, -n/--netns
    /// completes the names under /run/netns.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print a manual page (roff), or write them all: tunctl(8), one per subcommand
    /// (tunctl-add(8), tunctl-vpwn-up(8), ...), tunctl-vpwn(8) (which also covers the
    /// `tunctl-vpwn` command) and tunctl-helper(8). E.g.
    /// `sudo tunctl man --dir /usr/local/share/man/man8`, then `man tunctl-add`.
    Man {
        /// The page to print: `tunctl` (the default), or a subcommand's (`add`,
        /// `vpwn-up`, ...), or `tunctl-helper`.
        page: Option<String>,
        /// Write every page into this directory (as NAME.8) instead of printing one.
        #[arg(long, value_name = "DIR", conflicts_with = "page")]
        dir: Option<std::path::PathBuf>,
    },
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
    /// Network namespace to work in: a name under /run/netns, or a path such as
    /// /proc/PID/ns/net (as `ip -n`; before or after the command).
    #[arg(
        short = 'n',
        long,
        visible_alias = "namespace",
        value_name = "NS",
        value_parser = parse_netns,
        global = true
    )]
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
    #[arg(long, conflicts_with_all = ["tap", "mode"])]
    tun: bool,
    /// A tap device (Ethernet frames): the default.
    #[arg(long, conflicts_with = "mode")]
    tap: bool,
    /// tun or tap, as `ip tuntap add mode tun` says it.
    #[arg(long, value_name = "tun|tap", value_parser = parse_mode)]
    mode: Option<Kind>,
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
    /// Leave a new device without owner and group: then ANY local user may open it, read
    /// its traffic and send as it (the kernel's rule). Without this, it is owned by you.
    #[arg(long, conflicts_with_all = ["owner", "group"])]
    no_owner: bool,
    #[command(flatten)]
    config: ConfigArgs,
    /// Bring the device up.
    #[arg(long)]
    up: bool,
}

impl AddArgs {
    fn kind(&self) -> Kind {
        match (self.mode, self.tun) {
            (Some(kind), _) => kind,
            (None, true) => Kind::Tun,
            (None, false) => Kind::Tap,
        }
    }
}

#[derive(Args, Debug)]
struct SetArgs {
    /// Interface name.
    #[arg(value_parser = parse_ifname)]
    name: String,
    /// Bring the device up.
    #[arg(long, conflicts_with = "down")]
    up: bool,
    /// Bring the device down (addresses stay).
    #[arg(long)]
    down: bool,
    #[command(flatten)]
    config: ConfigArgs,
    /// Remove an address (repeatable): CIDR, or a bare address when the device has it with
    /// one prefix only.
    #[arg(long = "del-addr", value_name = "CIDR|ADDR", value_parser = parse_del_addr)]
    del_addr: Vec<DelAddr>,
    /// Carrier on or off.
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    carrier: Option<bool>,
}

#[derive(Args, Debug)]
struct ConfigArgs {
    /// User allowed to open the device without CAP_NET_ADMIN (name or uid).
    #[arg(long, visible_alias = "user", value_name = "USER|UID")]
    owner: Option<String>,
    /// Group allowed to open the device without CAP_NET_ADMIN (name or gid). With an owner
    /// too, a user must match both.
    #[arg(long, value_name = "GROUP|GID")]
    group: Option<String>,
    /// Add an address, e.g. 10.0.0.1/24 or fd00::1/64 (repeatable; bare IPv4 = /32, IPv6 = /64).
    #[arg(long = "addr", value_name = "CIDR", value_parser = parse_cidr)]
    addr: Vec<Cidr>,
    /// Point-to-point peer (the Erlang original's dstaddr) of the --addr of its family in
    /// this command; without one, of the device's only address of that family. The kernel
    /// routes the peer's network (with that address's prefix) to the device.
    #[arg(long, value_name = "ADDR", value_parser = parse_ip)]
    peer: Option<IpAddr>,
    /// IPv4 broadcast address, paired like --peer.
    #[arg(long, value_name = "ADDR", value_parser = parse_ipv4)]
    broadcast: Option<Ipv4Addr>,
    /// MTU: 68 to 65521 for a new TUN/TAP device (`show` gives a device's range); IPv6
    /// needs 1280 or more.
    #[arg(long, value_name = "N", value_parser = parse_number)]
    mtu: Option<u32>,
    /// MAC address of a tap device, e.g. 02:00:00:00:00:01.
    #[arg(long, value_name = "MAC", value_parser = parse_mac)]
    mac: Option<MacAddr>,
    /// Transmit queue length (packets the kernel queues for a slow reader).
    #[arg(long, value_name = "N", value_parser = parse_number)]
    txqueuelen: Option<u32>,
    /// Leave a device given to another --owner or --group as the kernel makes it. By
    /// default it is hardened first (router advertisements, redirects and source routes
    /// ignored, spoofed IPv4 sources dropped), so that its holder cannot change the
    /// namespace's routing with packets it writes into the device.
    #[arg(long)]
    no_harden: bool,
}

fn parse_ifname(s: &str) -> Result<String, String> {
    tunctl::name::validate(s, false)
        .map(|()| s.to_string())
        .map_err(|e| detail(&e))
}

fn parse_template(s: &str) -> Result<String, String> {
    tunctl::name::validate(s, true)
        .map(|()| s.to_string())
        .map_err(|e| detail(&e))
}

pub(crate) fn parse_netns(s: &str) -> Result<Namespace, String> {
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
    tunctl::addr::parse_ip(s).map_err(|e| detail(&e))
}

fn parse_ipv4(s: &str) -> Result<Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address"))
}

fn parse_mac(s: &str) -> Result<MacAddr, String> {
    s.parse().map_err(|e: Error| detail(&e))
}

/// An address to remove: with its prefix, or bare (the device's one address of that value).
#[derive(Debug, Clone, Copy)]
enum DelAddr {
    Cidr(Cidr),
    Bare(IpAddr),
}

fn parse_del_addr(s: &str) -> Result<DelAddr, String> {
    if s.contains('/') {
        parse_cidr(s).map(DelAddr::Cidr)
    } else {
        parse_ip(s).map(DelAddr::Bare)
    }
}

/// The addresses of `del`, all given with their prefixes.
fn resolve_del_prefixed(del: &[DelAddr]) -> Vec<Cidr> {
    del.iter()
        .filter_map(|d| match d {
            DelAddr::Cidr(c) => Some(*c),
            DelAddr::Bare(_) => None,
        })
        .collect()
}

/// The prefixed addresses `del` names on `link`: a bare address must be there with exactly
/// one prefix.
fn resolve_del(link: &Link, del: &[DelAddr]) -> Result<Vec<Cidr>, Error> {
    let have = if del.iter().any(|d| matches!(d, DelAddr::Bare(_))) {
        link.addresses()?
    } else {
        Vec::new()
    };
    del.iter()
        .map(|d| match *d {
            DelAddr::Cidr(c) => Ok(c),
            DelAddr::Bare(ip) => {
                let found: Vec<Cidr> = have
                    .iter()
                    .filter(|a| a.addr == ip)
                    .map(|a| a.cidr())
                    .collect();
                match found.as_slice() {
                    [one] => Ok(*one),
                    [] => Err(Error::from_kind(
                        ErrorKind::NotFound,
                        "delete address",
                        format!("{ip} is not assigned"),
                    )
                    .with_subject(link.name())),
                    several => Err(Error::from_kind(
                        ErrorKind::InvalidInput,
                        "delete address",
                        format!(
                            "{ip} is assigned with several prefixes ({}): name one",
                            several
                                .iter()
                                .map(|c| c.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                    .with_subject(link.name())),
                }
            }
        })
        .collect()
}

fn parse_mode(s: &str) -> Result<Kind, String> {
    match s {
        "tun" => Ok(Kind::Tun),
        "tap" => Ok(Kind::Tap),
        _ => Err(format!("{s:?}: expected tun or tap")),
    }
}

fn parse_number(s: &str) -> Result<u32, String> {
    tunctl::addr::parse_decimal(s).ok_or_else(|| {
        format!("{s:?} is not a plain decimal number (digits only, no sign, no leading zero)")
    })
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: expected on or off")),
    }
}

/// The error's cause without its operation, for clap's usage errors.
fn detail(err: &Error) -> String {
    err.detail()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tunctl::helper::show_log(cli.verbose);
    match run(cli.command, &cli.ns) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tunctl: {err}");
            ExitCode::from(1)
        }
    }
}

/// Whether a failure is a lack of privilege that the helper may overcome: never for root
/// (the kernel's refusal is the answer), and only with a trusted helper installed. Without
/// one, the error gains the ways to get the privilege.
fn unprivileged(err: Error) -> Result<(), Error> {
    if err.kind() != ErrorKind::PermissionDenied || is_root() {
        return Err(err);
    }
    match tunctl::helper::find() {
        Ok(_) => Ok(()),
        Err(why) => {
            let hint = tunctl::helper::privilege_hint(&why);
            Err(err.add_detail(&hint))
        }
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The helper's view of a `--netns` argument: own, or a name under /run/netns.
fn helper_ns(ns: &Option<Namespace>) -> Result<tunctl::helper::Netns, Error> {
    tunctl::helper::Netns::try_from(ns.as_ref().unwrap_or(&Namespace::Current))
}

fn run(command: Command, ns: &NsArg) -> Result<(), Error> {
    match command {
        Command::Add(args) => add(args, ns),
        Command::Del { name } => match tun_link(&ns.ns(), &name).and_then(|link| link.delete()) {
            Err(e) => {
                unprivileged(e)?;
                let mut req = tunctl::helper::Request::new(tunctl::helper::Op::Delete, &name);
                req.netns = helper_ns(&ns.netns)?;
                tunctl::helper::run(&req)
            }
            Ok(()) => Ok(()),
        },
        Command::List { json } => {
            let netlink = tunctl::Netlink::open_in(&ns.ns()).map_err(|e| cannot_look(e, ns))?;
            let links = netlink.tun_links()?;
            let addrs = netlink.addresses(None)?;
            output::print_links(&links, &addrs, json);
            Ok(())
        }
        Command::Show { name, json } => {
            let link = tun_link(&ns.ns(), &name).map_err(|e| cannot_look(e, ns))?;
            let info = link.info()?;
            let addrs = link.addresses()?;
            output::print_link(&info, &addrs, json);
            Ok(())
        }
        Command::Set(args) => set(args, ns),
        Command::Netns { action } => match action {
            NetnsCommand::Add { name } => Namespace::create(&name).map(|ns| drop(ns.keep())),
            NetnsCommand::Del { name } => Namespace::delete(&name),
            NetnsCommand::List => {
                for name in Namespace::list()? {
                    out(format_args!("{name}"));
                }
                Ok(())
            }
        },
        Command::Demo(args) => demo::run(args),
        Command::Vpwn { action } => vpwn::run(action, ns.netns.clone()),
        Command::Br { action } => br::run(action, ns.netns.clone()),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "tunctl", &mut script);
            let mut script = String::from_utf8_lossy(&script).into_owned();
            if shell == clap_complete::Shell::Bash {
                script = complete_namespaces(&script);
            }
            use std::io::Write;
            let _ = std::io::stdout().write_all(script.as_bytes());
            Ok(())
        }
        Command::Man { page, dir } => man(page.as_deref(), dir.as_deref()),
    }
}

/// In a bash completion script, `-n`, `--netns` and `--namespace` complete the names of
/// /run/netns (a path, begun with `/`, completes as a file).
fn complete_namespaces(script: &str) -> String {
    let generic = "COMPREPLY=($(compgen -f \"${cur}\"))";
    let names = "if [[ ${cur} == /* ]]; then COMPREPLY=($(compgen -f \"${cur}\")); else COMPREPLY=($(compgen -W \"$(ls /run/netns 2>/dev/null)\" -- \"${cur}\")); fi";
    let mut out = String::with_capacity(script.len());
    let mut lines = script.lines().peekable();
    while let Some(line) = lines.next() {
        out.push_str(line);
        out.push('\n');
        let option = line.trim();
        if matches!(option, "-n)" | "--netns)" | "--namespace)") {
            if let Some(next) = lines.peek() {
                if next.trim() == generic {
                    let indent = &next[..next.len() - next.trim_start().len()];
                    out.push_str(indent);
                    out.push_str(names);
                    out.push('\n');
                    lines.next();
                }
            }
        }
    }
    out
}

/// Writes `path` as a new file (a fresh name made with O_EXCL, then renamed over `path`):
/// never through a symbolic or hard link planted there, as a plain write would when this
/// runs as root in a directory others can write.
fn write_anew(path: &std::path::Path, text: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let fresh = path.with_file_name(format!(".{name}.{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&fresh)
        .and_then(|mut f| f.write_all(text))
        .and_then(|()| std::fs::rename(&fresh, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&fresh);
    }
    written
}
/// Every manual page: tunctl(8), then one per subcommand, depth first, named as clap_mangen
/// names them in SEE ALSO (`tunctl-vpwn-up`), and tunctl-helper(8).
fn man_pages() -> Vec<(String, clap::Command)> {
    fn walk(cmd: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
        let name = cmd
            .get_display_name()
            .unwrap_or_else(|| cmd.get_name())
            .to_string();
        let page = if name == "tunctl-vpwn" {
            cmd.clone().after_long_help(VPWN_COMMAND)
        } else {
            cmd.clone()
        };
        out.push((name, page));
        for sub in cmd.get_subcommands().filter(|c| c.get_name() != "help") {
            walk(sub, out);
        }
    }
    /// No `help` subcommands in the pages (`--help` is the same): SEE ALSO would cite
    /// pages of them.
    fn without_help(cmd: clap::Command) -> clap::Command {
        let names: Vec<String> = cmd
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        let mut cmd = cmd.disable_help_subcommand(true);
        for name in names {
            cmd = cmd.mut_subcommand(name, without_help);
        }
        cmd
    }
    let mut cmd = without_help(<Cli as clap::CommandFactory>::command());
    // Gives every subcommand its display name (tunctl-vpwn-up), as SEE ALSO cites it.
    cmd.build();
    let mut pages = Vec::new();
    walk(&cmd, &mut pages);
    pages.push(("tunctl-helper".to_string(), helper_page()));
    pages
}

/// What tunctl-vpwn(8) says of the `tunctl-vpwn` command (a program of its own).
const VPWN_COMMAND: &str = "THE tunctl-vpwn COMMAND: `tunctl-vpwn [-f|--foreground] INTERFACE-NAME` is vpwn as a drop-in for wireguard-go: it creates the tun device, serves the WireGuard UAPI socket /var/run/wireguard/NAME.sock for `wg setconf`, `wg set` and `wg show`, and runs until the device is deleted or SIGINT/SIGTERM. Without --foreground (or WG_PROCESS_FOREGROUND=1) it goes to the background once the socket answers, as wireguard-go does, which wg-quick relies on: `WG_QUICK_USERSPACE_IMPLEMENTATION=tunctl-vpwn wg-quick up wg0`. Install both commands on PATH with `cargo install --path crates/tunctl-cli`.";

/// tunctl-helper(8): the privileged helper has no options; its page says what it is, where
/// it is found, its policy and its log.
fn helper_page() -> clap::Command {
    clap::Command::new("tunctl-helper")
        .version(env!("CARGO_PKG_VERSION"))
        .about("the privileged helper that creates and configures TUN/TAP devices for the users a policy names")
        .long_about(
            "tunctl-helper creates a TUN/TAP device (born complete in a private namespace, owned by the caller and tagged as the helper's), configures it (addresses, peer, MTU, up), changes or deletes devices it made for the same user, and hands the device's fd back over a Unix socket. It is not run by hand: the tunctl library starts it on a socket pair (its standard input) when a program asks (Builder::helper(true); the tunctl command asks), sends one request and reads one answer.\n\n\
Install it with file capabilities in a directory only root can write: `install -D -m 0755 target/release/tunctl-helper /usr/local/libexec/tunctl/tunctl-helper` and `setcap cap_net_admin,cap_sys_admin+ep` on it (or setuid root: it then keeps only those two capabilities and becomes the caller). Clients find it through TUNCTL_HELPER (an absolute path), else next to their own executable, else in /usr/local/libexec/tunctl/ or /usr/libexec/tunctl/, and run it only if the file and every directory above it belong to root or the caller and are writable by no one else.\n\n\
The policy is /etc/tunctl/helper.toml: [[allow]] rules with users or groups, names (globs), kinds, namespaces (\"own\" or /run/netns names), addresses (the networks a device may route), and max_devices. Missing, unreadable, a symbolic link or writable by anyone but root, it allows nothing. Every decision is logged to the system log (or, without one, to /var/log/tunctl-helper.log when the helper can write it; otherwise it does nothing). The helper reads nothing from its environment, refuses requests that carry fds, waits at most 5 s for a request, and runs only in the initial user namespace. See README.md, \"Unprivileged use\".",
        )
}

/// `tunctl man`: one page printed, or every page written into `dir`.
fn man(page: Option<&str>, dir: Option<&std::path::Path>) -> Result<(), Error> {
    let render = |cmd: clap::Command| -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd)
            .section("8")
            .render(&mut out)
            .map_err(Error::from)?;
        Ok(out)
    };
    let pages = man_pages();
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::from(e).with_subject(dir.display().to_string()))?;
        for (name, cmd) in pages {
            let path = dir.join(format!("{name}.8"));
            let text = render(cmd)?;
            write_anew(&path, &text)
                .map_err(|e| Error::from(e).with_subject(path.display().to_string()))?;
            out(format_args!("{}", path.display()));
        }
        return Ok(());
    }
    let want = match page {
        None | Some("tunctl") => "tunctl".to_string(),
        Some(p) if p.starts_with("tunctl-") => p.to_string(),
        Some(p) => format!("tunctl-{p}"),
    };
    let Some((_, cmd)) = pages.into_iter().find(|(name, _)| *name == want) else {
        return Err(Error::from_kind(
            ErrorKind::InvalidInput,
            "man",
            format!("no page {want}: `tunctl man --dir DIR` writes them all, tunctl(8) lists them"),
        ));
    };
    use std::io::Write;
    let _ = std::io::stdout().write_all(&render(cmd)?);
    Ok(())
}

/// A refusal to look inside another namespace, with what would see it: entering one needs
/// CAP_SYS_ADMIN (`ip -n` needs it too), also for a device tunctl-helper made there for you.
fn cannot_look(err: Error, ns: &NsArg) -> Error {
    match &ns.netns {
        Some(netns) if err.kind() == ErrorKind::PermissionDenied && !is_root() => err.add_detail(&format!(
            "reading the links of namespace {} means entering it, which takes CAP_SYS_ADMIN (as `ip -n` does), also for a device tunctl-helper made there for you; run it with sudo, or keep the Device the helper returned (its netlink socket reads it: Device::info, Device::addresses)",
            netns.describe()
        )),
        _ => err,
    }
}

/// The link `name` in `ns`, refusing anything that is not TUN/TAP.
fn tun_link(ns: &Namespace, name: &str) -> Result<Link, Error> {
    let link = Link::by_name(ns, name).map_err(|e| elsewhere(e, ns, name))?;
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

/// A "no such device" error gains where the device is, when it is in another named
/// namespace (as people forget `-n`).
fn elsewhere(err: Error, ns: &Namespace, name: &str) -> Error {
    if err.kind() != ErrorKind::NotFound {
        return err;
    }
    let found: Vec<String> = Namespace::list()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| Namespace::Named(n.clone()) != *ns)
        .filter(|n| {
            Namespace::named(n)
                .and_then(|other| Link::by_name(&other, name))
                .is_ok()
        })
        .take(3)
        .collect();
    let here_is_root = *ns == Namespace::Current;
    let in_root = !here_is_root && Link::by_name(&Namespace::Current, name).is_ok();
    match (found.first(), in_root) {
        (Some(other), _) => err.add_detail(&format!(
            "{name} exists in namespace {other}: add -n {other}"
        )),
        (None, true) => err.add_detail(&format!(
            "{name} exists in this process's namespace: drop -n"
        )),
        (None, false) => err,
    }
}

/// Owner and group, resolved before anything is created.
fn resolve_ids(config: &ConfigArgs) -> Result<(Option<u32>, Option<u32>), Error> {
    let owner = config.owner.as_deref().map(tunctl::user_id).transpose()?;
    let group = config.group.as_deref().map(tunctl::group_id).transpose()?;
    Ok((owner, group))
}

/// The link changes `add` and `set` share.
fn link_config(config: &ConfigArgs) -> LinkConfig {
    LinkConfig {
        mtu: config.mtu,
        mac: config.mac,
        txqueuelen: config.txqueuelen,
        addrs: config.addr.clone(),
        peer: config.peer,
        broadcast: config.broadcast,
        harden: config.no_harden.then_some(false),
        ..LinkConfig::default()
    }
}

/// `add` through the privileged helper: the device is created for (and owned by) the caller.
fn add_via_helper(args: &AddArgs, ns: &NsArg) -> Result<(), Error> {
    use tunctl::helper::{Op, Request};
    if args.config.owner.is_some()
        || args.config.group.is_some()
        || args.config.mac.is_some()
        || args.config.txqueuelen.is_some()
        || args.config.broadcast.is_some()
        || args.no_owner
    {
        return Err(Error::from_kind(
            ErrorKind::PermissionDenied,
            "tunctl-helper",
            "without privilege --owner, --group, --no-owner, --mac, --txqueuelen and --broadcast are not available (the helper makes you the owner)",
        ));
    }
    let kind = args.kind();
    let default = if kind == Kind::Tun { "tun%d" } else { "tap%d" };
    let mut req = Request::new(Op::Create, args.name.as_deref().unwrap_or(default));
    req.kind = kind;
    req.pi = args.pi;
    req.vnet_hdr = args.vnet_hdr;
    req.multi_queue = args.multi_queue;
    req.persist = true;
    req.netns = helper_ns(&ns.netns)?;
    req.addrs = args.config.addr.clone();
    req.peer = args.config.peer;
    req.mtu = args.config.mtu;
    req.up = args.up;
    let dev = tunctl::helper::create(&req)?;
    out(format_args!("{}", dev.name()));
    Ok(())
}

fn add(args: AddArgs, ns: &NsArg) -> Result<(), Error> {
    match add_privileged(&args, ns) {
        Err(e) => {
            unprivileged(e)?;
            add_via_helper(&args, ns)
        }
        Ok(()) => Ok(()),
    }
}

fn add_privileged(args: &AddArgs, ns: &NsArg) -> Result<(), Error> {
    let (owner, group) = resolve_ids(&args.config)?;
    let ns = ns.ns();
    let kind = args.kind();
    // Whether the device exists decides the path: an existing one is only reconfigured
    // (and only if persistent); a new one is born complete, and removed again on failure.
    let existing = match args.name.as_deref().filter(|n| !n.contains('%')) {
        Some(name) => match tunctl::Netlink::open_in(&ns)?.link_by_name(name) {
            Ok(info) => Some(info),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        },
        None => None,
    };
    let mut builder = Device::builder()
        .kind(kind)
        .packet_info(args.pi)
        .vnet_hdr(args.vnet_hdr)
        .namespace(ns);
    if let Some(name) = &args.name {
        builder = builder.name(name);
    }
    if args.multi_queue {
        builder = builder.multi_queue(1);
    }
    let mut config = link_config(&args.config);
    config.up = args.up.then_some(true);
    config.existing_ok = true;
    if let Some(info) = existing {
        let name = info.name.clone();
        let fail = |kind, why: String| Err(Error::from_kind(kind, "add", why).with_subject(&name));
        match &info.tun {
            None => {
                return fail(
                    ErrorKind::FlagMismatch,
                    "the name is taken by a device that is not TUN/TAP".into(),
                )
            }
            Some(_) if args.exclusive => {
                return fail(
                    ErrorKind::Busy,
                    "exists already and --exclusive was given".into(),
                )
            }
            Some(tun) if !tun.persist => {
                return fail(
                    ErrorKind::Busy,
                    "exists and is not persistent: another program's device, which `add` does not touch (use `set`)".into(),
                )
            }
            Some(_) => {}
        }
        // Owner and group change only when asked for, as the last steps.
        config.owner = owner;
        config.group = group;
        let dev = builder.open()?;
        let plan = config.plan(dev.link()?)?;
        plan.apply(dev.link()?, Some(dev.as_fd()))?;
        out(format_args!("{}", dev.name()));
        return Ok(());
    }
    // A new device: born persistent with its owner and group, before anyone can see it.
    builder = builder.exclusive(true).persist(true);
    match (owner, group, args.no_owner) {
        (None, None, false) => builder = builder.owner(rustix::process::getuid().as_raw()),
        (o, g, _) => {
            if let Some(uid) = o {
                builder = builder.owner(uid);
            }
            if let Some(gid) = g {
                builder = builder.group(gid);
            }
        }
    }
    if args.config.no_harden {
        builder = builder.harden(false);
    }
    let dev = builder.create()?;
    let result = config
        .plan(dev.link()?)
        .and_then(|plan| plan.apply(dev.link()?, None));
    if let Err(err) = result {
        let _ = dev.destroy();
        return Err(err);
    }
    out(format_args!("{}", dev.name()));
    Ok(())
}

fn set(args: SetArgs, ns: &NsArg) -> Result<(), Error> {
    match set_privileged(&args, ns) {
        Err(e) => {
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
            unprivileged(e)?;
            let mut req = Request::new(Op::Set, &args.name);
            req.netns = helper_ns(&ns.netns)?;
            req.addrs = c.addr.clone();
            req.del_addrs = if args.del_addr.iter().any(|d| matches!(d, DelAddr::Bare(_))) {
                resolve_del(&tun_link(&ns.ns(), &args.name)?, &args.del_addr)?
            } else {
                resolve_del_prefixed(&args.del_addr)
            };
            req.peer = c.peer;
            req.mtu = c.mtu;
            req.up = args.up;
            req.down = args.down;
            tunctl::helper::run(&req)
        }
        Ok(()) => Ok(()),
    }
}

fn set_privileged(args: &SetArgs, ns: &NsArg) -> Result<(), Error> {
    let (owner, group) = resolve_ids(&args.config)?;
    let ns = ns.ns();
    let link = tun_link(&ns, &args.name)?;
    let mut config = link_config(&args.config);
    config.del_addrs = resolve_del(&link, &args.del_addr)?;
    config.carrier = args.carrier;
    config.up = match (args.up, args.down) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    config.owner = owner;
    config.group = group;
    // Everything is checked (privileges included) before the first change.
    let plan = config.plan(&link)?;
    if plan.is_empty() {
        eprintln!("tunctl: {}: nothing to change", args.name);
        return Ok(());
    }
    if plan
        .steps()
        .iter()
        .any(|s| matches!(s, Step::Owner(..) | Step::Group(..)))
    {
        // TUNSETOWNER/GROUP need an fd attached to the device: attach with its own flags.
        let tun = link.info()?.tun.ok_or_else(|| {
            Error::from_kind(ErrorKind::NotFound, "attach", "the device went away")
                .with_subject(&args.name)
        })?;
        let dev = Device::builder()
            .name(&args.name)
            .like(&tun)
            .namespace(ns.clone())
            .open()?;
        plan.apply(&link, Some(dev.as_fd()))
    } else {
        plan.apply(&link, None)
    }
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

/// Stops the program serving the control socket `path` of `name` (SIGTERM), and waits up
/// to 5 s for it to remove the socket (the last thing it does).
fn stop_server(op: &str, name: &str, path: &std::path::Path, missing: &str) -> Result<(), Error> {
    let pid = tunctl::service::server_pid(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => missing.to_string(),
            std::io::ErrorKind::ConnectionRefused => {
                "its socket is stale: nothing runs it".to_string()
            }
            _ => e.to_string(),
        };
        Error::from_kind(ErrorKind::NotFound, op, why).with_subject(name)
    })?;
    let target = rustix::process::Pid::from_raw(pid as i32).ok_or_else(|| {
        Error::from_kind(ErrorKind::Os, op, "no process behind the socket").with_subject(name)
    })?;
    rustix::process::kill_process(target, rustix::process::Signal::TERM).map_err(|e| {
        Error::from(std::io::Error::from(e)).add_detail(&format!("signal pid {pid}"))
    })?;
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(5) {
        if !path.exists() {
            eprintln!("tunctl: {name}: down (pid {pid})");
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(Error::from_kind(
        ErrorKind::Os,
        op,
        format!(
            "pid {pid} got SIGTERM but still serves {} after 5 s",
            path.display()
        ),
    )
    .with_subject(name))
}
