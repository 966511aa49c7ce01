//! The WireGuard cross-platform userspace API (<https://www.wireguard.com/xplatform/>), the
//! `get` half: `/var/run/wireguard/NAME.sock` answers `get=1` with the tunnel's state, so
//! `wg show NAME` from wireguard-tools works on a vpwn tunnel. `set=1` is refused (errno) for
//! now: configure vpwn with its options or a wg-quick file.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tunctl::Cidr;

use crate::keys::Key;

/// Where the sockets live, as wireguard-go and wg agree.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// What `get=1` reports.
#[derive(Debug, Clone)]
pub struct State {
    /// This end's private key.
    pub private_key: Key,
    /// The UDP port.
    pub listen_port: u16,
    /// The peer's public key.
    pub public_key: Key,
    /// The preshared key, if any.
    pub preshared_key: Option<Key>,
    /// Where the peer is.
    pub endpoint: Option<SocketAddr>,
    /// When the last handshake completed.
    pub last_handshake: Option<SystemTime>,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Keepalive interval in seconds (0: off).
    pub keepalive: u16,
    /// The peer's allowed IPs.
    pub allowed_ips: Vec<Cidr>,
}

fn hex(key: &Key) -> String {
    key.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// The answer to `get=1`, ending with `errno=0` and a blank line.
pub fn get_response(s: &State) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "private_key={}", hex(&s.private_key));
    let _ = writeln!(out, "listen_port={}", s.listen_port);
    let _ = writeln!(out, "public_key={}", hex(&s.public_key));
    if let Some(psk) = &s.preshared_key {
        let _ = writeln!(out, "preshared_key={}", hex(psk));
    }
    if let Some(e) = s.endpoint {
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
    let _ = writeln!(out, "persistent_keepalive_interval={}", s.keepalive);
    for a in &s.allowed_ips {
        let _ = writeln!(out, "allowed_ip={a}");
    }
    out.push_str("protocol_version=1\nerrno=0\n\n");
    out
}

/// A listening UAPI socket; removed when dropped.
#[derive(Debug)]
pub struct Socket {
    listener: UnixListener,
    path: PathBuf,
}

impl Socket {
    /// Binds `/var/run/wireguard/NAME.sock` (mode 0600: `get` reveals the private key). A
    /// stale socket nobody answers on is replaced; a live one is an error.
    ///
    /// # Errors
    ///
    /// The directory or the socket cannot be made (not root), or another program serves
    /// the name.
    pub fn bind(name: &str) -> std::io::Result<Socket> {
        std::fs::create_dir_all(SOCKET_DIR)?;
        let path = Path::new(SOCKET_DIR).join(format!("{name}.sock"));
        if path.exists() {
            if UnixStream::connect(&path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is served by another program", path.display()),
                ));
            }
            std::fs::remove_file(&path)?;
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(Socket { listener, path })
    }

    /// Answers the connections waiting now (each one request), with `state` for `get=1`.
    /// Returns without waiting when none is.
    pub fn serve_pending(&self, state: &dyn Fn() -> State) {
        while let Ok((conn, _)) = self.listener.accept() {
            let _ = conn.set_nonblocking(false);
            let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = answer(conn, state);
        }
    }
}

fn answer(conn: UnixStream, state: &dyn Fn() -> State) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    // Read the rest of the request, up to the blank line, bounded.
    let mut line = String::new();
    for _ in 0..1024 {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
    }
    let mut conn = conn;
    match first.trim() {
        "get=1" => conn.write_all(get_response(&state()).as_bytes()),
        // EPERM: this vpwn takes its configuration from options or a file.
        _ => conn.write_all(b"errno=1\n\n"),
    }
}

/// Asks the tunnel `name` (vpwn's or any userspace WireGuard's) for its state: the
/// `key=value` pairs of its `get=1` answer, in order.
///
/// # Errors
///
/// No socket for `name`, nobody answering, or an answer with a non-zero `errno`.
pub fn get(name: &str) -> std::io::Result<Vec<(String, String)>> {
    let path = Path::new(SOCKET_DIR).join(format!("{name}.sock"));
    let mut conn = UnixStream::connect(&path)?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.write_all(b"get=1\n\n")?;
    let mut pairs = Vec::new();
    for line in BufReader::new(conn).lines() {
        let line = line?;
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once('=') {
            pairs.push((k.to_string(), v.to_string()));
        }
    }
    match pairs.iter().find(|(k, _)| k == "errno") {
        Some((_, e)) if e != "0" => Err(std::io::Error::other(format!("{name}: errno={e}"))),
        _ => Ok(pairs),
    }
}

/// The names of the tunnels with a UAPI socket.
pub fn names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(SOCKET_DIR)
        .map(|d| {
            d.filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".sock").map(str::to_string)
            })
            .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

impl std::ops::Drop for Socket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_speaks_the_uapi_format() {
        let k = Key([1; 32]);
        let s = State {
            private_key: k,
            listen_port: 51820,
            public_key: Key([0xab; 32]),
            preshared_key: None,
            endpoint: Some("10.201.0.2:51820".parse().unwrap()),
            last_handshake: Some(SystemTime::UNIX_EPOCH + Duration::new(5, 7)),
            tx_bytes: 10,
            rx_bytes: 20,
            keepalive: 0,
            allowed_ips: vec!["10.204.0.2/32".parse().unwrap()],
        };
        let r = get_response(&s);
        assert!(r.starts_with(&format!("private_key={}\n", "01".repeat(32))));
        for want in [
            "listen_port=51820\n",
            &format!("public_key={}\n", "ab".repeat(32)),
            "endpoint=10.201.0.2:51820\n",
            "last_handshake_time_sec=5\nlast_handshake_time_nsec=7\n",
            "tx_bytes=10\nrx_bytes=20\n",
            "allowed_ip=10.204.0.2/32\n",
        ] {
            assert!(r.contains(want), "{want:?} in {r}");
        }
        assert!(r.ends_with("errno=0\n\n"));
    }
}
