//! The WireGuard cross-platform userspace API (<https://www.wireguard.com/xplatform/>):
//! `/var/run/wireguard/NAME.sock` answers `get=1` with the tunnel's state and applies
//! `set=1`, so `wg show`, `wg showconf`, `wg set` and `wg setconf` from wireguard-tools (and
//! any control plane that drives wireguard-go this way) work on a vpwn tunnel unchanged.
//!
//! The configuration is a [`DeviceConf`]; [`apply_set`] turns one `set=1` request into a new
//! one, or into an error that changes nothing (wireguard-go applies a request line by line
//! and keeps what came before a bad line; vpwn applies a request whole or not at all).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tunctl::addr::parse_decimal;
use tunctl::Cidr;

use crate::keys::Key;

/// Where the sockets live, as wireguard-go and wg agree.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// The longest request line taken; a longer one ends the connection.
const MAX_LINE: usize = 256;
/// The most lines in one request (a peer with thousands of allowed IPs fits).
const MAX_LINES: usize = 100_000;

/// One peer's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConf {
    /// The peer's public key: who it is.
    pub public_key: Key,
    /// The preshared key, if any.
    pub preshared_key: Option<Key>,
    /// Where to send until the peer is heard from.
    pub endpoint: Option<SocketAddr>,
    /// Keepalive interval in seconds (0: off).
    pub keepalive: u16,
    /// The inner source addresses accepted from the peer, and routed to it: networks (host
    /// bits zero), each belonging to one peer only.
    pub allowed_ips: Vec<Cidr>,
}

/// A tunnel's whole configuration, as the UAPI sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceConf {
    /// This end's private key; without one, no handshake is made or answered.
    pub private_key: Option<Key>,
    /// The UDP port (0: the kernel picks one).
    pub listen_port: u16,
    /// The firewall mark put on the tunnel's own datagrams (0: none).
    pub fwmark: u32,
    /// The peers, in the order they were added.
    pub peers: Vec<PeerConf>,
}

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
    /// `-EINVAL` for a bad request, `-EADDRINUSE` for a port in use, `-EPROTO` for a
    /// protocol version other than 1.
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

fn hex(key: &Key) -> String {
    key.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// A key in the UAPI's form: 64 hexadecimal digits.
///
/// # Errors
///
/// Anything else.
pub fn parse_hex_key(s: &str) -> Result<Key, String> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return Err(format!("a key is 64 hex digits, not {}", b.len()));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut key = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => key[i] = h << 4 | l,
            _ => return Err("not a hex key".into()),
        }
    }
    Ok(Key(key))
}

/// A key, or none when it is all zeros (how the UAPI removes one).
fn parse_optional_key(s: &str) -> Result<Option<Key>, String> {
    let k = parse_hex_key(s)?;
    Ok((k.0 != [0; 32]).then_some(k))
}

fn only_true(line: &str, v: &str) -> Result<(), SetError> {
    match v {
        "true" => Ok(()),
        _ => Err(invalid(line, "the only value is true")),
    }
}

fn parse_bool(line: &str, v: &str) -> Result<bool, SetError> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(line, "expected true or false")),
    }
}

/// The network of an allowed IP: `10.0.0.7/24` is `10.0.0.0/24`, as the kernel and
/// wireguard-go store it.
fn network_of(c: Cidr) -> Cidr {
    Cidr::new(c.network(), c.prefix()).unwrap_or(c)
}

/// Applies one `set=1` request (its lines, without `set=1` and the blank line) to `conf`.
///
/// An allowed IP given to one peer is taken from any other (cryptokey routing: one network,
/// one peer). The result is checked whole; on an error `conf` is untouched.
///
/// # Errors
///
/// A [`SetError`] naming the first bad line: an unknown key, a malformed value, a peer key
/// before `public_key`, a protocol version other than 1.
pub fn apply_set<'a>(
    conf: &DeviceConf,
    lines: impl IntoIterator<Item = &'a str>,
) -> Result<DeviceConf, SetError> {
    let mut next = conf.clone();
    // The peer being edited: an index into `next.peers`, or `None` when it is skipped
    // (`update_only` on an unknown peer, or removed).
    let mut current: Option<Option<usize>> = None;
    // Peers this request created (or created again after replace_peers): what update_only
    // undoes.
    let mut fresh: Vec<Key> = Vec::new();
    for line in lines {
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| invalid(line, "not key=value"))?;
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
            let peer = &mut next.peers[i];
            match key {
                // Only `true` is meaningful (wireguard-go refuses anything else).
                "remove" => {
                    only_true(line, value)?;
                    next.peers.remove(i);
                    current = Some(None);
                }
                "update_only" => {
                    // Undoes the creation of a peer this request made.
                    only_true(line, value)?;
                    if fresh.contains(&peer.public_key) {
                        next.peers.remove(i);
                        current = Some(None);
                    }
                }
                "preshared_key" => {
                    peer.preshared_key = parse_optional_key(value).map_err(|e| invalid(line, e))?
                }
                "endpoint" => {
                    peer.endpoint = Some(
                        value
                            .parse::<SocketAddr>()
                            .map_err(|_| invalid(line, "expected IP:port or [IPv6]:port"))?,
                    )
                }
                "persistent_keepalive_interval" => {
                    peer.keepalive = parse_decimal::<u16>(value)
                        .ok_or_else(|| invalid(line, "expected 0 to 65535"))?
                }
                "replace_allowed_ips" => {
                    if parse_bool(line, value)? {
                        peer.allowed_ips.clear();
                    }
                }
                "allowed_ip" => {
                    // A prefix is required (as wireguard-go does): `fd00::1` alone would
                    // otherwise read as a whole /64.
                    if !value.contains('/') {
                        return Err(invalid(line, "an allowed IP needs its prefix length"));
                    }
                    let net = network_of(
                        value
                            .parse::<Cidr>()
                            .map_err(|e| invalid(line, e.detail()))?,
                    );
                    if !peer.allowed_ips.contains(&net) {
                        peer.allowed_ips.push(net);
                    }
                    for (j, other) in next.peers.iter_mut().enumerate() {
                        if j != i {
                            other.allowed_ips.retain(|a| *a != net);
                        }
                    }
                }
                _ => {
                    if value != "1" {
                        return Err(SetError {
                            errno: -libc::EPROTO,
                            message: format!("{line:?}: only protocol version 1 is known"),
                        });
                    }
                }
            }
            continue;
        }
        match key {
            "private_key" => {
                if current.is_some() {
                    return Err(invalid(line, "a device setting after public_key"));
                }
                next.private_key = parse_optional_key(value).map_err(|e| invalid(line, e))?
            }
            "listen_port" => {
                if current.is_some() {
                    return Err(invalid(line, "a device setting after public_key"));
                }
                next.listen_port = parse_decimal::<u16>(value)
                    .ok_or_else(|| invalid(line, "expected 0 to 65535"))?
            }
            "fwmark" => {
                if current.is_some() {
                    return Err(invalid(line, "a device setting after public_key"));
                }
                next.fwmark = parse_decimal::<u32>(value)
                    .ok_or_else(|| invalid(line, "expected 0 to 4294967295"))?
            }
            "replace_peers" => {
                if current.is_some() {
                    return Err(invalid(line, "a device setting after public_key"));
                }
                if parse_bool(line, value)? {
                    next.peers.clear();
                }
            }
            "public_key" => {
                let key = parse_hex_key(value).map_err(|e| invalid(line, e))?;
                // Our own key as a peer is ignored, as wireguard-go does.
                if next.private_key.is_some_and(|k| k.public() == key) {
                    current = Some(None);
                    continue;
                }
                let i = match next.peers.iter().position(|p| p.public_key == key) {
                    Some(i) => i,
                    None => {
                        next.peers.push(PeerConf {
                            public_key: key,
                            preshared_key: None,
                            endpoint: None,
                            keepalive: 0,
                            allowed_ips: Vec::new(),
                        });
                        fresh.push(key);
                        next.peers.len() - 1
                    }
                };
                current = Some(Some(i));
            }
            _ => return Err(invalid(line, "unknown key")),
        }
    }
    Ok(next)
}

/// The answer to `get=1` (without the final `errno=0` and blank line).
pub fn get_response(conf: &DeviceConf, port: u16, status: &[PeerStatus]) -> String {
    let mut out = String::new();
    if let Some(k) = &conf.private_key {
        let _ = writeln!(out, "private_key={}", hex(k));
    }
    let _ = writeln!(out, "listen_port={port}");
    if conf.fwmark != 0 {
        let _ = writeln!(out, "fwmark={}", conf.fwmark);
    }
    for (i, p) in conf.peers.iter().enumerate() {
        let s = status.get(i).copied().unwrap_or_default();
        let _ = writeln!(out, "public_key={}", hex(&p.public_key));
        if let Some(psk) = &p.preshared_key {
            let _ = writeln!(out, "preshared_key={}", hex(psk));
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
    fn get(&self) -> String;
    /// Applies a `set=1` request's lines.
    ///
    /// # Errors
    ///
    /// Why nothing was changed.
    fn set(&self, lines: &[String]) -> Result<(), SetError>;
    /// vpwn's extension, `get=vpwn-counters`: `key=value` lines of drop counters. Other
    /// implementations answer it with an error, which clients take as "no counters".
    fn counters(&self) -> String;
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

/// Reads one line of at most [`MAX_LINE`] bytes, without its newline; `None` at the end.
fn read_line(reader: &mut impl BufRead) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = reader
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "request line too long or unterminated",
        ));
    }
    buf.pop();
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
}

/// Serves one connection: requests until the client closes it (as wireguard-go does), or
/// its time is up.
pub(crate) fn serve(conn: tunctl::service::Client, handler: &dyn Handler) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn);
    for _ in 0..64 {
        let Some(op) = read_line(&mut reader)? else {
            return Ok(());
        };
        match op.as_str() {
            "get=1" | "get=vpwn-counters" => {
                if read_line(&mut reader)?.as_deref() != Some("") {
                    reader
                        .get_mut()
                        .write_all(format!("errno={}\n\n", -libc::EINVAL).as_bytes())?;
                    return Ok(());
                }
                let body = if op == "get=1" {
                    handler.get()
                } else {
                    handler.counters()
                };
                reader
                    .get_mut()
                    .write_all(format!("{body}errno=0\n\n").as_bytes())?;
            }
            "set=1" => {
                let mut lines = Vec::new();
                loop {
                    match read_line(&mut reader)? {
                        None => return Ok(()),
                        Some(l) if l.is_empty() => break,
                        Some(_) if lines.len() >= MAX_LINES => {
                            reader
                                .get_mut()
                                .write_all(format!("errno={}\n\n", -libc::E2BIG).as_bytes())?;
                            return Ok(());
                        }
                        Some(l) => lines.push(l),
                    }
                }
                let errno = match handler.set(&lines) {
                    Ok(()) => 0,
                    Err(e) => e.errno,
                };
                reader
                    .get_mut()
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

fn request(name: &str, req: &str) -> std::io::Result<Vec<(String, String)>> {
    let mut conn = UnixStream::connect(socket_path(name))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.write_all(req.as_bytes())?;
    let mut pairs = Vec::new();
    let mut reader = BufReader::new(conn);
    for _ in 0..MAX_LINES {
        let Some(line) = read_line(&mut reader)? else {
            break;
        };
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once('=') {
            pairs.push((k.to_string(), v.to_string()));
        }
    }
    match pairs.iter().find(|(k, _)| k == "errno") {
        Some((_, e)) if e != "0" => Err(std::io::Error::other(format!("{name}: errno={e}"))),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{name}: answer without errno"),
        )),
        _ => Ok(pairs),
    }
}

/// Asks the tunnel `name` (vpwn's or any userspace WireGuard's) for its state: the
/// `key=value` pairs of its `get=1` answer, in order.
///
/// # Errors
///
/// No socket for `name`, nobody answering, or an answer with a non-zero `errno`.
pub fn get(name: &str) -> std::io::Result<Vec<(String, String)>> {
    request(name, "get=1\n\n")
}

/// Asks a vpwn tunnel for its drop counters by cause (`drop_auth`, `drop_replay`, ...);
/// other implementations do not have them (an error).
///
/// # Errors
///
/// As [`get`].
pub fn counters(name: &str) -> std::io::Result<Vec<(String, String)>> {
    request(name, "get=vpwn-counters\n\n")
}

/// Sends `set=1` with these lines to tunnel `name`.
///
/// # Errors
///
/// As [`get`]; a refused request is an error naming its errno.
pub fn set(name: &str, lines: &[&str]) -> std::io::Result<()> {
    let mut req = String::from("set=1\n");
    for l in lines {
        req.push_str(l);
        req.push('\n');
    }
    req.push('\n');
    request(name, &req).map(|_| ())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Key {
        Key([b; 32])
    }

    #[test]
    fn get_speaks_the_uapi_format() {
        let conf = DeviceConf {
            private_key: Some(key(1)),
            listen_port: 51820,
            fwmark: 0,
            peers: vec![PeerConf {
                public_key: key(0xab),
                preshared_key: None,
                endpoint: None,
                keepalive: 0,
                allowed_ips: vec!["10.204.0.2/32".parse().unwrap()],
            }],
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
            assert!(r.contains(want), "{want:?} in {r}");
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
        let c = apply_set(&DeviceConf::default(), req.lines()).unwrap();
        assert_eq!(c.private_key, Some(key(1)));
        assert_eq!(c.listen_port, 51820);
        assert_eq!(c.peers.len(), 2);
        // The /24 moved to the second peer; the first keeps its IPv6 network.
        assert_eq!(c.peers[0].allowed_ips, vec!["fd00::/64".parse().unwrap()]);
        assert_eq!(c.peers[1].allowed_ips, vec!["10.0.0.0/24".parse().unwrap()]);
        assert_eq!(c.peers[1].keepalive, 25);
        // Remove one, update_only on an unknown one adds nothing.
        let c2 = apply_set(
            &c,
            [
                format!("public_key={a}").as_str(),
                "remove=true",
                &format!("public_key={}", "cc".repeat(32)),
                "update_only=true",
                "allowed_ip=10.9.0.0/16",
            ],
        )
        .unwrap();
        assert_eq!(c2.peers.len(), 1);
        assert_eq!(c2.peers[0].public_key, key(0xbb));
        // A zero key removes the private key.
        let c3 = apply_set(&c2, [format!("private_key={}", "00".repeat(32)).as_str()]).unwrap();
        assert_eq!(c3.private_key, None);
    }

    #[test]
    fn set_follows_wireguard_go_on_the_corner_cases() {
        let a = format!("public_key={}", "aa".repeat(32));
        let base = apply_set(&DeviceConf::default(), [a.as_str()]).unwrap();
        // After replace_peers every peer is new: update_only drops it.
        let c = apply_set(
            &base,
            ["replace_peers=true", a.as_str(), "update_only=true"],
        )
        .unwrap();
        assert!(c.peers.is_empty());
        // Without replace_peers an existing peer stays.
        let c = apply_set(&base, [a.as_str(), "update_only=true"]).unwrap();
        assert_eq!(c.peers.len(), 1);
        // Only `true` is a value for remove and update_only.
        for v in ["remove=false", "update_only=false", "remove=1"] {
            assert_eq!(
                apply_set(&base, [a.as_str(), v]).unwrap_err().errno,
                -libc::EINVAL
            );
        }
        // Our own public key as a peer is ignored, its settings with it.
        let own = Key([9; 32]);
        let me = format!("private_key={}", hex(&own));
        let pk = format!("public_key={}", hex(&own.public()));
        let c = apply_set(
            &DeviceConf::default(),
            [me.as_str(), pk.as_str(), "allowed_ip=10.0.0.0/8"],
        )
        .unwrap();
        assert!(c.peers.is_empty());
    }

    #[test]
    fn bad_sets_change_nothing() {
        let base = DeviceConf::default();
        for (req, errno) in [
            ("listen_port=65536", -libc::EINVAL),
            ("listen_port=+1", -libc::EINVAL),
            ("endpoint=1.2.3.4:5", -libc::EINVAL),
            ("private_key=zz", -libc::EINVAL),
            ("bogus=1", -libc::EINVAL),
            ("nothing", -libc::EINVAL),
        ] {
            let e = apply_set(&base, [req]).unwrap_err();
            assert_eq!(e.errno, errno, "{req}");
        }
        let pk = format!("public_key={}", "aa".repeat(32));
        let e = apply_set(&base, [pk.as_str(), "protocol_version=2"]).unwrap_err();
        assert_eq!(e.errno, -libc::EPROTO);
        let e = apply_set(&base, [pk.as_str(), "allowed_ip=10.0.0.0/33"]).unwrap_err();
        assert_eq!(e.errno, -libc::EINVAL);
        let e = apply_set(&base, [pk.as_str(), "allowed_ip=fd00::1"]).unwrap_err();
        assert_eq!(e.errno, -libc::EINVAL);
        let e = apply_set(&base, [pk.as_str(), "listen_port=1"]).unwrap_err();
        assert_eq!(e.errno, -libc::EINVAL);
    }
}
