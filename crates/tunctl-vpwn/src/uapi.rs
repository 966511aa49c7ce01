//! The WireGuard cross-platform userspace API (<https://www.wireguard.com/xplatform/>):
//! `/var/run/wireguard/NAME.sock` answers `get=1` with the tunnel's state and applies
//! `set=1`, so `wg show`, `wg showconf`, `wg set` and `wg setconf` from wireguard-tools (and
//! any control plane that drives wireguard-go this way) work on a vpwn tunnel unchanged.
//!
//! The configuration is a [`Config`]; [`apply_set`] turns one `set=1` request into a new
//! one, or into an error that changes nothing (wireguard-go applies a request line by line
//! and keeps what came before a bad line; vpwn applies a request whole or not at all).
//! Private and preshared keys cross this socket in both directions: every string that holds
//! one (a request's lines, an answer) is wiped when it is dropped.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tunctl::addr::parse_decimal;
use tunctl::Cidr;
use zeroize::Zeroizing;

use crate::config::{Config, Peer};
use crate::keys::{from_hex, PublicKey, SecretKey};

/// Where the sockets live, as wireguard-go and wg agree.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// The longest request line taken; a longer one ends the connection.
const MAX_LINE: usize = 256;
/// The most lines in one request: a `wg setconf` of 1,000 peers with 1,000 networks each
/// fits (a request is held whole, to be applied whole or not at all: about 60 bytes a line).
const MAX_LINES: usize = 1_000_000;

/// What a running tunnel knows of a peer beyond its configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerStatus {
    /// Where the peer is now (it follows the peer's authenticated datagrams).
    pub endpoint: Option<SocketAddr>,
    /// When the last handshake completed.
    pub last_handshake: Option<SystemTime>,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
}

/// A refused `set=1`: the errno to answer (negative, as wireguard-go writes it) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetError {
    /// As wireguard-go answers: `-EPROTO` for a line that is not `key=value`, `-EINVAL`
    /// for a bad key or value (a protocol version other than 1 too), `-EADDRINUSE` for a
    /// port that cannot be bound or a firewall mark that cannot be set.
    pub errno: i32,
    /// What was wrong, naming the line.
    pub message: String,
}

impl std::fmt::Display for SetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (errno {})", self.message, self.errno)
    }
}

impl std::error::Error for SetError {}

fn invalid(line: &str, why: impl std::fmt::Display) -> SetError {
    SetError {
        errno: -libc::EINVAL,
        message: format!("{line:?}: {why}"),
    }
}

/// A public key in the UAPI's form: 64 hexadecimal digits.
///
/// # Errors
///
/// Anything else.
pub fn parse_hex_key(s: &str) -> Result<PublicKey, String> {
    from_hex(s).map(PublicKey)
}

/// A secret key, or none when it is all zeros (how the UAPI removes one).
fn parse_optional_secret(s: &str) -> Result<Option<SecretKey>, String> {
    let k = SecretKey::from_bytes(from_hex(s)?);
    Ok((*k.bytes() != [0; 32]).then_some(k))
}

fn only_true(line: &str, v: &str) -> Result<(), SetError> {
    match v {
        "true" => Ok(()),
        _ => Err(invalid(line, "the only value is true")),
    }
}

/// The network of an allowed IP: `10.0.0.7/24` is `10.0.0.0/24`, as the kernel and
/// wireguard-go store it.
fn network_of(c: Cidr) -> Cidr {
    c.masked()
}

/// What one `set=1` request made of a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The configuration after it.
    pub config: Config,
    /// The peers whose endpoint the request gave: that endpoint applies now, even where
    /// the peer has roamed elsewhere since (so `wg syncconf` can move a peer back).
    pub endpoints: Vec<PublicKey>,
    /// Whether the request gave a listen port: the socket is bound again (a new random
    /// port for 0), as wireguard-go does.
    pub listen_port: bool,
}

/// Applies one `set=1` request (its lines, without `set=1` and the blank line) to `conf`.
///
/// An allowed IP given to one peer is taken from any other (cryptokey routing: one network,
/// one peer). A private key equal to a peer's public key removes that peer (a tunnel is not
/// its own peer), as wireguard-go does. The result is checked whole; on an error `conf` is
/// untouched.
///
/// # Errors
///
/// A [`SetError`] naming the first bad line: an unknown key, a malformed value, a peer key
/// before `public_key`, a protocol version other than 1.
pub fn apply_set<'a>(
    conf: &Config,
    lines: impl IntoIterator<Item = &'a str>,
) -> Result<Applied, SetError> {
    let mut next = conf.clone();
    let mut endpoints = Vec::new();
    let mut listen_port = false;
    // Who holds each network (one network, one peer): the last to be given it. Lists are
    // settled against it once, at the end, so that no line searches the others.
    let mut owner: HashMap<Cidr, PublicKey> = next
        .peers
        .iter()
        .flat_map(|p| p.allowed_ips.iter().map(move |n| (*n, p.public_key)))
        .collect();
    // The peer being edited: an index into `next.peers`, or `None` when it is skipped
    // (`update_only` on an unknown peer, or removed).
    let mut current: Option<Option<usize>> = None;
    // Our own public key, derived once (an X25519 multiplication), not per peer line.
    let mut own = next.private_key.as_ref().map(SecretKey::public);
    // Peers this request created (or created again after replace_peers): what update_only
    // undoes.
    let mut fresh: Vec<PublicKey> = Vec::new();
    for line in lines {
        // A line that is not key=value is a protocol error (EPROTO), as wireguard-go says.
        let (key, value) = line.split_once('=').ok_or_else(|| SetError {
            errno: -libc::EPROTO,
            message: format!("{line:?}: not key=value"),
        })?;
        let peer_key = matches!(
            key,
            "remove"
                | "update_only"
                | "preshared_key"
                | "endpoint"
                | "persistent_keepalive_interval"
                | "replace_allowed_ips"
                | "allowed_ip"
                | "protocol_version"
        );
        if peer_key {
            let Some(at) = current else {
                return Err(invalid(line, "a peer setting before public_key"));
            };
            let Some(i) = at else { continue };
            let edit = PeerEdit {
                fresh: &fresh,
                current: &mut current,
                endpoints: &mut endpoints,
                owner: &mut owner,
            };
            apply_peer_line(&mut next, i, line, key, value, edit)?;
            continue;
        }
        if current.is_some() && key != "public_key" {
            return Err(invalid(line, "a device setting after public_key"));
        }
        match key {
            "private_key" => {
                next.private_key = parse_optional_secret(value).map_err(|e| invalid(key, e))?;
                own = next.private_key.as_ref().map(SecretKey::public);
                // A tunnel is not its own peer.
                if let Some(own) = own {
                    next.peers.retain(|p| p.public_key != own);
                }
            }
            "listen_port" => {
                next.listen_port = parse_decimal::<u16>(value)
                    .ok_or_else(|| invalid(line, "expected 0 to 65535"))?;
                listen_port = true;
            }
            "fwmark" => {
                next.fwmark = parse_decimal::<u32>(value)
                    .ok_or_else(|| invalid(line, "expected 0 to 4294967295"))?
            }
            "replace_peers" => {
                only_true(line, value)?;
                next.peers.clear();
            }
            "public_key" => {
                let key = parse_hex_key(value).map_err(|e| invalid(line, e))?;
                // Our own key as a peer is ignored, as wireguard-go does.
                if own == Some(key) {
                    current = Some(None);
                    continue;
                }
                let i = match next.peers.iter().position(|p| p.public_key == key) {
                    Some(i) => i,
                    None => {
                        next.peers.push(Peer::new(key));
                        fresh.push(key);
                        next.peers.len() - 1
                    }
                };
                current = Some(Some(i));
            }
            _ => return Err(invalid(line, "unknown key")),
        }
    }
    endpoints.retain(|k| next.peers.iter().any(|p| p.public_key == *k));
    for p in &mut next.peers {
        let mut seen = HashSet::new();
        p.allowed_ips
            .retain(|n| owner.get(n) == Some(&p.public_key) && seen.insert(*n));
    }
    Ok(Applied {
        config: next,
        endpoints,
        listen_port,
    })
}

/// What a request's peer lines share while it is applied.
struct PeerEdit<'a> {
    /// Peers this request created.
    fresh: &'a [PublicKey],
    /// The peer being edited (see `apply_set`).
    current: &'a mut Option<Option<usize>>,
    /// Peers whose endpoint was given.
    endpoints: &'a mut Vec<PublicKey>,
    /// Who holds each network.
    owner: &'a mut HashMap<Cidr, PublicKey>,
}

/// One peer line of a `set=1` request, for peer `i` of `next`.
fn apply_peer_line(
    next: &mut Config,
    i: usize,
    line: &str,
    key: &str,
    value: &str,
    edit: PeerEdit<'_>,
) -> Result<(), SetError> {
    let PeerEdit {
        fresh,
        current,
        endpoints,
        owner,
    } = edit;
    let peer = &mut next.peers[i];
    match key {
        // Only `true` is meaningful (wireguard-go refuses anything else).
        "remove" => {
            only_true(line, value)?;
            next.peers.remove(i);
            *current = Some(None);
        }
        "update_only" => {
            // Undoes the creation of a peer this request made.
            only_true(line, value)?;
            if fresh.contains(&peer.public_key) {
                next.peers.remove(i);
                *current = Some(None);
            }
        }
        "preshared_key" => {
            peer.preshared_key = parse_optional_secret(value).map_err(|e| invalid(key, e))?
        }
        "endpoint" => {
            peer.endpoint = Some(
                value
                    .parse::<SocketAddr>()
                    .map_err(|_| invalid(line, "expected IP:port or [IPv6]:port"))?,
            );
            peer.endpoint_name = None;
            if !endpoints.contains(&peer.public_key) {
                endpoints.push(peer.public_key);
            }
        }
        "persistent_keepalive_interval" => {
            peer.keepalive =
                parse_decimal::<u16>(value).ok_or_else(|| invalid(line, "expected 0 to 65535"))?
        }
        "replace_allowed_ips" => {
            only_true(line, value)?;
            peer.allowed_ips.clear();
        }
        "allowed_ip" => {
            // A prefix is required (as wireguard-go does): `fd00::1` alone would otherwise
            // read as a whole /64.
            if !value.contains('/') {
                return Err(invalid(line, "an allowed IP needs its prefix length"));
            }
            let net = network_of(
                value
                    .parse::<Cidr>()
                    .map_err(|e| invalid(line, e.detail()))?,
            );
            // Taken from any other peer (settled at the end of the request).
            peer.allowed_ips.push(net);
            owner.insert(net, peer.public_key);
        }
        _ => {
            if value != "1" {
                return Err(invalid(line, "only protocol version 1 is known"));
            }
        }
    }
    Ok(())
}

/// The answer to `get=1` (without the final `errno=0` and blank line), in a string wiped
/// when dropped (it holds the private key).
pub fn get_response(conf: &Config, port: u16, status: &[PeerStatus]) -> Zeroizing<String> {
    // Room for all of it from the start: a string that grew would leave copies of the
    // private key in memory it gave back.
    let networks: usize = conf.peers.iter().map(|p| p.allowed_ips.len()).sum();
    let mut out = Zeroizing::new(String::with_capacity(
        256 + 512 * conf.peers.len() + 64 * networks,
    ));
    if let Some(k) = &conf.private_key {
        out.push_str("private_key=");
        out.push_str(&k.to_hex());
        out.push('\n');
    }
    let _ = writeln!(out, "listen_port={port}");
    if conf.fwmark != 0 {
        let _ = writeln!(out, "fwmark={}", conf.fwmark);
    }
    for (i, p) in conf.peers.iter().enumerate() {
        let s = status.get(i).copied().unwrap_or_default();
        let _ = writeln!(out, "public_key={}", p.public_key.to_hex());
        if let Some(psk) = &p.preshared_key {
            out.push_str("preshared_key=");
            out.push_str(&psk.to_hex());
            out.push('\n');
        }
        out.push_str("protocol_version=1\n");
        if let Some(e) = s.endpoint.or(p.endpoint) {
            let _ = writeln!(out, "endpoint={e}");
        }
        let since = s
            .last_handshake
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .unwrap_or(Duration::ZERO);
        let _ = writeln!(out, "last_handshake_time_sec={}", since.as_secs());
        let _ = writeln!(out, "last_handshake_time_nsec={}", since.subsec_nanos());
        let _ = writeln!(out, "tx_bytes={}", s.tx_bytes);
        let _ = writeln!(out, "rx_bytes={}", s.rx_bytes);
        let _ = writeln!(out, "persistent_keepalive_interval={}", p.keepalive);
        for a in &p.allowed_ips {
            let _ = writeln!(out, "allowed_ip={a}");
        }
    }
    out
}

/// What a UAPI server does with requests.
pub trait Handler {
    /// The answer to `get=1`, without `errno`.
    fn get(&self) -> Zeroizing<String>;
    /// Applies a `set=1` request's lines.
    ///
    /// # Errors
    ///
    /// Why nothing was changed.
    fn set(&self, lines: &[Zeroizing<String>]) -> Result<(), SetError>;
    /// vpwn's extension, `get=vpwn`: `key=value` lines of what `get=1` does not carry
    /// (the device's namespace, the counters, then per peer, after `peer=KEY`, its
    /// authentication failures and how long a handshake has been waited for). Other
    /// implementations answer it with an error, which clients take as "not vpwn".
    fn counters(&self) -> String;
    /// vpwn's extension, `set=vpwn-down`: stops this tunnel (only it, whatever else the
    /// process serving it runs). Returns whether it will; by default it does not.
    fn down(&self) -> bool {
        false
    }
}

/// A listening UAPI socket; removed when dropped.
#[derive(Debug)]
pub struct Socket(tunctl::service::ServiceSocket);

impl Socket {
    /// Binds `/var/run/wireguard/NAME.sock` (mode 0600: `get` reveals the private key). A
    /// stale socket nobody answers on is replaced; a live one is an error.
    ///
    /// # Errors
    ///
    /// The directory or the socket cannot be made (not root), or another program serves
    /// the name.
    pub fn bind(name: &str) -> std::io::Result<Socket> {
        tunctl::service::ServiceSocket::bind(Path::new(SOCKET_DIR), name).map(Socket)
    }

    /// Answers the connections waiting now, each on a thread of its own with
    /// [`CLIENT_TIME`] for its whole conversation, at most [`MAX_CLIENTS`] at once (one
    /// more is closed unanswered); returns without waiting. A slow client holds only its
    /// own thread: `wg show` from another, the timers and `vpwn down` never wait for it.
    pub fn serve_pending(&self, handler: &std::sync::Arc<dyn Handler + Send + Sync>) {
        use std::sync::atomic::Ordering;
        static ACTIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        for conn in self.0.pending().take(MAX_CLIENTS) {
            if ACTIVE.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                ACTIVE.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            let handler = std::sync::Arc::clone(handler);
            let spawned = std::thread::Builder::new()
                .name("vpwn-uapi-client".into())
                .spawn(move || {
                    if let Ok(client) = tunctl::service::Client::new(conn, CLIENT_TIME) {
                        let _ = serve(client, &*handler);
                    }
                    ACTIVE.fetch_sub(1, Ordering::AcqRel);
                });
            if spawned.is_err() {
                ACTIVE.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// How long one UAPI client may take for its whole conversation (a `wg setconf` of
/// 100,000 lines takes well under a second).
pub const CLIENT_TIME: Duration = Duration::from_secs(10);
/// The most UAPI clients served at once, across the process.
pub const MAX_CLIENTS: usize = 8;

/// A connection's request lines, read through a buffer that is wiped when dropped (the
/// requests carry keys).
struct Lines<R> {
    conn: R,
    buf: Zeroizing<Vec<u8>>,
    start: usize,
    end: usize,
}

impl<R: Read> Lines<R> {
    fn new(conn: R) -> Lines<R> {
        Lines {
            conn,
            buf: Zeroizing::new(vec![0u8; 4096]),
            start: 0,
            end: 0,
        }
    }

    /// The next line of at most [`MAX_LINE`] bytes, without its newline; `None` at the end.
    fn next(&mut self) -> std::io::Result<Option<Zeroizing<String>>> {
        let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
        loop {
            if let Some(at) = self.buf[self.start..self.end]
                .iter()
                .position(|b| *b == b'\n')
            {
                if at > MAX_LINE {
                    return Err(bad("request line too long"));
                }
                let line = std::str::from_utf8(&self.buf[self.start..self.start + at])
                    .map_err(|_| bad("not UTF-8"))?;
                let line = Zeroizing::new(line.to_string());
                self.start += at + 1;
                return Ok(Some(line));
            }
            if self.end - self.start > MAX_LINE {
                return Err(bad("request line too long"));
            }
            // Room at the end: what is left moves to the front (and the old bytes are
            // overwritten as the buffer fills; all are wiped when it goes).
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            let n = self.conn.read(&mut self.buf[self.end..])?;
            if n == 0 {
                return if self.end == 0 {
                    Ok(None)
                } else {
                    Err(bad("request line unterminated"))
                };
            }
            self.end += n;
        }
    }
}

/// Serves one connection: requests until the client closes it (as wireguard-go does), or
/// its time is up.
pub(crate) fn serve(conn: tunctl::service::Client, handler: &dyn Handler) -> std::io::Result<()> {
    let mut lines = Lines::new(conn);
    for _ in 0..64 {
        let Some(op) = lines.next()? else {
            return Ok(());
        };
        match op.as_str() {
            "get=1" | "get=vpwn" => {
                if lines.next()?.as_deref().map(String::as_str) != Some("") {
                    lines
                        .conn
                        .write_all(format!("errno={}\n\n", -libc::EINVAL).as_bytes())?;
                    return Ok(());
                }
                let mut body = if op.as_str() == "get=1" {
                    handler.get()
                } else {
                    Zeroizing::new(handler.counters())
                };
                body.push_str("errno=0\n\n");
                lines.conn.write_all(body.as_bytes())?;
            }
            "set=vpwn-down" => {
                let errno = if lines.next()?.as_deref().map(String::as_str) != Some("") {
                    -libc::EINVAL
                } else if handler.down() {
                    0
                } else {
                    -libc::ENOTSUP
                };
                lines
                    .conn
                    .write_all(format!("errno={errno}\n\n").as_bytes())?;
                return Ok(());
            }
            "set=1" => {
                let mut request: Vec<Zeroizing<String>> = Vec::new();
                loop {
                    match lines.next()? {
                        None => return Ok(()),
                        Some(l) if l.is_empty() => break,
                        Some(_) if request.len() >= MAX_LINES => {
                            lines
                                .conn
                                .write_all(format!("errno={}\n\n", -libc::E2BIG).as_bytes())?;
                            return Ok(());
                        }
                        Some(l) => request.push(l),
                    }
                }
                let errno = match handler.set(&request) {
                    Ok(()) => 0,
                    Err(e) => e.errno,
                };
                lines
                    .conn
                    .write_all(format!("errno={errno}\n\n").as_bytes())?;
            }
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// The socket of tunnel `name` (a name that is not an interface name gets a path that
/// cannot exist, so no lookup leaves the directory).
pub fn socket_path(name: &str) -> PathBuf {
    tunctl::service::socket_path(Path::new(SOCKET_DIR), name)
        .unwrap_or_else(|_| Path::new(SOCKET_DIR).join(".not-a-tunnel-name"))
}

/// Sends `req` to tunnel `name` and hands each `key=value` of the answer to `each`,
/// through buffers that are wiped (an answer to `get=1` holds the private key).
fn request(name: &str, req: &str, mut each: impl FnMut(&str, &str)) -> std::io::Result<()> {
    let mut conn = UnixStream::connect(socket_path(name))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.write_all(req.as_bytes())?;
    let mut reader = Lines::new(conn);
    let mut errno = None;
    for _ in 0..MAX_LINES {
        let Some(line) = reader.next()? else {
            break;
        };
        if line.is_empty() {
            break;
        }
        match line.split_once('=') {
            Some(("errno", e)) => errno = Some(e.to_string()),
            Some((k, v)) => each(k, v),
            None => {}
        }
    }
    match errno.as_deref() {
        Some("0") => Ok(()),
        Some(e) => Err(std::io::Error::other(format!("{name}: errno={e}"))),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{name}: answer without errno"),
        )),
    }
}

/// One peer, as a tunnel shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Who it is.
    pub public_key: PublicKey,
    /// Whether a preshared key is set (the key itself is not kept here).
    pub preshared_key: bool,
    /// Where it is now.
    pub endpoint: Option<SocketAddr>,
    /// When the last handshake with it completed.
    pub last_handshake: Option<SystemTime>,
    /// Bytes received from it.
    pub rx_bytes: u64,
    /// Bytes sent to it.
    pub tx_bytes: u64,
    /// Its keepalive interval in seconds (0: off).
    pub keepalive: u16,
    /// Its allowed IPs.
    pub allowed_ips: Vec<Cidr>,
}

/// A tunnel as it shows itself through its UAPI socket (`get=1`), secrets left out: the
/// private key is read only to give its public key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TunnelInfo {
    /// This end's public key (none without a private key).
    pub public_key: Option<PublicKey>,
    /// Its UDP port.
    pub listen_port: u16,
    /// The firewall mark on its datagrams (0: none).
    pub fwmark: u32,
    /// Its peers.
    pub peers: Vec<PeerInfo>,
}

/// Asks the tunnel `name` (vpwn's or any userspace WireGuard's) for its state (`get=1`).
///
/// # Errors
///
/// No socket for `name`, nobody answering, or an answer with a non-zero `errno`.
pub fn get(name: &str) -> std::io::Result<TunnelInfo> {
    let mut info = TunnelInfo::default();
    let mut handshake = (0u64, 0u32);
    request(name, "get=1\n\n", |k, v| {
        let num = || v.parse::<u64>().unwrap_or(0);
        let peer = info.peers.last_mut();
        match (k, peer) {
            ("private_key", _) => {
                info.public_key = from_hex(v).ok().map(|b| SecretKey::from_bytes(b).public())
            }
            ("listen_port", _) => info.listen_port = u16::try_from(num()).unwrap_or(0),
            ("fwmark", _) => info.fwmark = u32::try_from(num()).unwrap_or(0),
            ("public_key", _) => {
                if let Ok(key) = parse_hex_key(v) {
                    handshake = (0, 0);
                    info.peers.push(PeerInfo {
                        public_key: key,
                        preshared_key: false,
                        endpoint: None,
                        last_handshake: None,
                        rx_bytes: 0,
                        tx_bytes: 0,
                        keepalive: 0,
                        allowed_ips: Vec::new(),
                    })
                }
            }
            ("preshared_key", Some(p)) => p.preshared_key = v.bytes().any(|b| b != b'0'),
            ("endpoint", Some(p)) => p.endpoint = v.parse().ok(),
            ("last_handshake_time_sec", Some(p)) => {
                handshake.0 = num();
                p.last_handshake = (handshake.0 > 0)
                    .then(|| {
                        SystemTime::UNIX_EPOCH.checked_add(Duration::new(handshake.0, handshake.1))
                    })
                    .flatten();
            }
            ("last_handshake_time_nsec", Some(p)) => {
                handshake.1 = u32::try_from(num()).unwrap_or(0).min(999_999_999);
                p.last_handshake = (handshake.0 > 0)
                    .then(|| {
                        SystemTime::UNIX_EPOCH.checked_add(Duration::new(handshake.0, handshake.1))
                    })
                    .flatten();
            }
            ("rx_bytes", Some(p)) => p.rx_bytes = num(),
            ("tx_bytes", Some(p)) => p.tx_bytes = num(),
            ("persistent_keepalive_interval", Some(p)) => {
                p.keepalive = u16::try_from(num()).unwrap_or(0)
            }
            ("allowed_ip", Some(p)) => p.allowed_ips.extend(v.parse::<Cidr>().ok()),
            _ => {}
        }
    })?;
    Ok(info)
}

/// What vpwn tells of a peer beyond `get=1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerExtra {
    /// Which peer.
    pub public_key: PublicKey,
    /// Datagrams in its name that failed authentication (a wrong preshared key, or another
    /// key).
    pub auth_failures: u64,
    /// How long we have been waiting for it to answer our handshake, if we are.
    pub handshake_pending: Option<Duration>,
}

/// What vpwn tells of a tunnel beyond `get=1` (its `get=vpwn` extension).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VpwnStatus {
    /// The namespace its device is in, by its name under `/run/netns` (none: the host's
    /// own, or one without a name there).
    pub device_namespace: Option<String>,
    /// Its counters, by name (`tx_packets`, `drop_auth`, ...).
    pub counters: Vec<(String, u64)>,
    /// Its peers.
    pub peers: Vec<PeerExtra>,
}

/// Asks a vpwn tunnel for what `get=1` does not carry; other implementations do not have
/// it (an error).
///
/// # Errors
///
/// As [`get`].
pub fn vpwn_status(name: &str) -> std::io::Result<VpwnStatus> {
    let mut out = VpwnStatus::default();
    request(name, "get=vpwn\n\n", |k, v| {
        match (k, out.peers.last_mut()) {
            ("device_namespace", _) => {
                out.device_namespace = (!v.is_empty()).then(|| v.to_string())
            }
            ("peer", _) => {
                if let Ok(key) = parse_hex_key(v) {
                    out.peers.push(PeerExtra {
                        public_key: key,
                        auth_failures: 0,
                        handshake_pending: None,
                    })
                }
            }
            ("drop_auth", Some(p)) => p.auth_failures = v.parse().unwrap_or(0),
            ("handshake_pending_sec", Some(p)) => {
                p.handshake_pending = v.parse().ok().map(Duration::from_secs)
            }
            (k, None) => {
                if let Ok(n) = v.parse() {
                    out.counters.push((k.to_string(), n));
                }
            }
            _ => {}
        }
    })?;
    Ok(out)
}

/// Asks a vpwn tunnel to stop (`set=vpwn-down`): only that tunnel stops, whatever else
/// the process serving it runs. `Ok(false)` when the server is another implementation:
/// it refused the request (an errno), or hung up without an answer (wireguard-go does, on
/// an operation it does not know).
///
/// # Errors
///
/// As [`get`], for a tunnel that cannot be reached.
pub fn down(name: &str) -> std::io::Result<bool> {
    match request(name, "set=vpwn-down\n\n", |_, _| {}) {
        Ok(()) => Ok(true),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::Other | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Sends `set=1` with these lines to tunnel `name`.
///
/// # Errors
///
/// As [`get`]; a refused request is an error naming its errno.
pub fn set(name: &str, lines: &[&str]) -> std::io::Result<()> {
    let mut req = Zeroizing::new(String::from("set=1\n"));
    for l in lines {
        req.push_str(l);
        req.push('\n');
    }
    req.push('\n');
    request(name, &req, |_, _| {})
}

/// The process serving tunnel `name`'s socket (the kernel's word: `SO_PEERCRED`).
///
/// # Errors
///
/// No socket, or nobody serving it.
pub fn server_pid(name: &str) -> std::io::Result<u32> {
    tunctl::service::server_pid(&socket_path(name))
}

/// The names of the tunnels with a UAPI socket.
pub fn names() -> Vec<String> {
    tunctl::service::names(Path::new(SOCKET_DIR))
}

/// The UAPI socket's clients, each served on a thread of its own (see
/// [`Socket::serve_pending`]).
pub(crate) fn thread(shared: std::sync::Arc<crate::device::Shared>, socket: Socket) {
    let handler: std::sync::Arc<dyn Handler + Send + Sync> = std::sync::Arc::clone(&shared) as _;
    while !shared.stop.load(std::sync::atomic::Ordering::Acquire) {
        socket.serve_pending(&handler);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    fn lines(text: &str) -> Applied {
        apply_set(&Config::default(), text.lines()).unwrap()
    }

    #[test]
    fn get_speaks_the_uapi_format() {
        let conf = Config {
            private_key: Some(SecretKey::from_bytes([1; 32])),
            listen_port: 51820,
            peers: vec![Peer {
                allowed_ips: vec!["10.204.0.2/32".parse().unwrap()],
                ..Peer::new(key(0xab))
            }],
            ..Config::default()
        };
        let status = [PeerStatus {
            endpoint: Some("10.201.0.2:51820".parse().unwrap()),
            last_handshake: Some(SystemTime::UNIX_EPOCH + Duration::new(5, 7)),
            tx_bytes: 10,
            rx_bytes: 20,
        }];
        let r = get_response(&conf, 51820, &status);
        assert!(r.starts_with(&format!("private_key={}\n", "01".repeat(32))));
        for want in [
            "listen_port=51820\n",
            &format!("public_key={}\nprotocol_version=1\n", "ab".repeat(32)),
            "endpoint=10.201.0.2:51820\n",
            "last_handshake_time_sec=5\nlast_handshake_time_nsec=7\n",
            "tx_bytes=10\nrx_bytes=20\n",
            "allowed_ip=10.204.0.2/32\n",
        ] {
            assert!(r.contains(want), "{want:?} in {}", r.as_str());
        }
    }

    #[test]
    fn set_builds_and_edits_peers() {
        let a = "aa".repeat(32);
        let b = "bb".repeat(32);
        let req = format!(
            "private_key={}\nlisten_port=51820\nreplace_peers=true\npublic_key={a}\nendpoint=[fd00::1]:1\nallowed_ip=10.0.0.7/24\nallowed_ip=fd00::/64\npublic_key={b}\npersistent_keepalive_interval=25\nallowed_ip=10.0.0.0/24",
            "01".repeat(32)
        );
        let applied = lines(&req);
        let c = &applied.config;
        assert_eq!(c.private_key, Some(SecretKey::from_bytes([1; 32])));
        assert_eq!(c.listen_port, 51820);
        assert!(applied.listen_port);
        assert_eq!(applied.endpoints, vec![key(0xaa)]);
        assert_eq!(c.peers.len(), 2);
        // The /24 moved to the second peer; the first keeps its IPv6 network.
        assert_eq!(c.peers[0].allowed_ips, vec!["fd00::/64".parse().unwrap()]);
        assert_eq!(c.peers[1].allowed_ips, vec!["10.0.0.0/24".parse().unwrap()]);
        assert_eq!(c.peers[1].keepalive, 25);
        // Remove one, update_only on an unknown one adds nothing.
        let c2 = apply_set(
            c,
            [
                format!("public_key={a}").as_str(),
                "remove=true",
                &format!("public_key={}", "cc".repeat(32)),
                "update_only=true",
                "allowed_ip=10.9.0.0/16",
            ],
        )
        .unwrap()
        .config;
        assert_eq!(c2.peers.len(), 1);
        assert_eq!(c2.peers[0].public_key, key(0xbb));
        // A zero key removes the private key.
        let c3 = apply_set(&c2, [format!("private_key={}", "00".repeat(32)).as_str()])
            .unwrap()
            .config;
        assert_eq!(c3.private_key, None);
    }

    #[test]
    fn set_follows_wireguard_go_on_the_corner_cases() {
        let a = format!("public_key={}", "aa".repeat(32));
        let base = apply_set(&Config::default(), [a.as_str()]).unwrap().config;
        // After replace_peers every peer is new: update_only drops it.
        let c = apply_set(
            &base,
            ["replace_peers=true", a.as_str(), "update_only=true"],
        )
        .unwrap()
        .config;
        assert!(c.peers.is_empty());
        // Without replace_peers an existing peer stays.
        let c = apply_set(&base, [a.as_str(), "update_only=true"])
            .unwrap()
            .config;
        assert_eq!(c.peers.len(), 1);
        // Only `true` is a value for remove and update_only.
        for v in ["remove=false", "update_only=false", "remove=1"] {
            assert_eq!(
                apply_set(&base, [a.as_str(), v]).unwrap_err().errno,
                -libc::EINVAL
            );
        }
        // Our own public key as a peer is ignored, its settings with it.
        let own = SecretKey::from_bytes([9; 32]);
        let me = format!("private_key={}", own.to_hex().as_str());
        let pk = format!("public_key={}", own.public().to_hex());
        let c = apply_set(
            &Config::default(),
            [me.as_str(), pk.as_str(), "allowed_ip=10.0.0.0/8"],
        )
        .unwrap()
        .config;
        assert!(c.peers.is_empty());
        // A private key equal to a peer's public key removes that peer.
        let with_peer = apply_set(&Config::default(), [pk.as_str(), "allowed_ip=10.0.0.0/8"])
            .unwrap()
            .config;
        assert_eq!(with_peer.peers.len(), 1);
        let c = apply_set(&with_peer, [me.as_str()]).unwrap().config;
        assert!(c.peers.is_empty(), "the tunnel is not its own peer");
        // listen_port=0 is given (a new random port), and no port line is not.
        assert!(apply_set(&base, ["listen_port=0"]).unwrap().listen_port);
        assert!(!apply_set(&base, ["fwmark=1"]).unwrap().listen_port);
    }

    #[test]
    fn bad_sets_change_nothing_and_never_echo_a_key() {
        let base = Config::default();
        for (req, errno) in [
            ("listen_port=65536", -libc::EINVAL),
            ("listen_port=+1", -libc::EINVAL),
            ("endpoint=1.2.3.4:5", -libc::EINVAL),
            ("private_key=zz", -libc::EINVAL),
            ("bogus=1", -libc::EINVAL),
            ("replace_peers=false", -libc::EINVAL),
            ("nothing", -libc::EPROTO),
        ] {
            let e = apply_set(&base, [req]).unwrap_err();
            assert_eq!(e.errno, errno, "{req}");
        }
        let secretish = format!("private_key={}g", "ab".repeat(31));
        let e = apply_set(&base, [secretish.as_str()]).unwrap_err();
        assert!(!e.message.contains("abab"), "{}", e.message);
        let pk = format!("public_key={}", "aa".repeat(32));
        let e = apply_set(&base, [pk.as_str(), "protocol_version=2"]).unwrap_err();
        assert_eq!(e.errno, -libc::EINVAL);
        let e = apply_set(&base, [pk.as_str(), "replace_allowed_ips=false"]).unwrap_err();
        assert_eq!(e.errno, -libc::EINVAL);
        let e = apply_set(&base, [pk.as_str(), "allowed_ip=10.0.0.0/33"]).unwrap_err();
        assert_eq!(e.errno, -libc::EINVAL);
        let e = apply_set(&base, [pk.as_str(), "allowed_ip=fd00::1"]).unwrap_err();
        assert_eq!(e.errno, -libc::EINVAL);
        let e = apply_set(&base, [pk.as_str(), "listen_port=1"]).unwrap_err();
        assert_eq!(e.errno, -libc::EINVAL);
    }

    /// 100,000 allowed-IP lines (a thousand peers with a hundred networks each) are applied
    /// in well under a second: no search grows with the networks already given.
    #[test]
    fn a_set_of_a_hundred_thousand_lines_is_quick() {
        let mut req: Vec<String> = Vec::new();
        for p in 0..1000u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&p.to_le_bytes());
            k[31] = 1;
            req.push(format!("public_key={}", PublicKey(k).to_hex()));
            for n in 0..100u32 {
                let i = p * 100 + n;
                req.push(format!("allowed_ip=10.{}.{}.0/24", i >> 8 & 0xff, i & 0xff));
            }
        }
        let start = std::time::Instant::now();
        let applied = apply_set(&Config::default(), req.iter().map(String::as_str)).unwrap();
        let took = start.elapsed();
        assert_eq!(applied.config.peers.len(), 1000);
        // 100,000 /24s of 10.0.0.0/8 wrap around 65,536: later ones take earlier ones.
        let total: usize = applied
            .config
            .peers
            .iter()
            .map(|p| p.allowed_ips.len())
            .sum();
        assert_eq!(total, 65_536);
        assert!(took < std::time::Duration::from_secs(1), "{took:?}");
    }
}
