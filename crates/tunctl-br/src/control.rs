//! The bridge's control socket, `/run/tunctl/br/NAME.sock` (mode 0600): one request line
//! (`show`), one answer, the bridge's state as a line of JSON. `tunctl br show` and `tunctl br
//! down` find running bridges there.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tunctl::service::ServiceSocket;

/// Where the sockets live.
pub const SOCKET_DIR: &str = "/run/tunctl/br";

/// The socket of bridge `name` (a name that is not an interface-like name gets a path that
/// cannot exist, so no lookup leaves the directory).
pub fn socket_path(name: &str) -> PathBuf {
    tunctl::service::socket_path(Path::new(SOCKET_DIR), name)
        .unwrap_or_else(|_| Path::new(SOCKET_DIR).join(".not-a-bridge-name"))
}

/// A listening control socket; removed when dropped.
#[derive(Debug)]
pub struct Socket(ServiceSocket);

impl Socket {
    /// Binds the socket of bridge `name` (a name as an interface's: at most 15 bytes, no
    /// `/`). A stale socket is replaced; a live one (another bridge of that name) is an
    /// error.
    ///
    /// # Errors
    ///
    /// Not root (the directory), a bad name, or the name is served.
    pub fn bind(name: &str) -> std::io::Result<Socket> {
        ServiceSocket::bind(Path::new(SOCKET_DIR), name).map(Socket)
    }

    /// Answers the connections waiting now.
    pub fn serve_pending(&self, state: &dyn Fn() -> serde_json::Value) {
        for conn in self.0.pending() {
            let _ = conn.set_nonblocking(false);
            let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
            let mut line = String::new();
            let mut reader = BufReader::new(conn.take(256));
            if reader.read_line(&mut line).is_ok() && line.trim() == "show" {
                let mut conn = reader.into_inner().into_inner();
                let _ = writeln!(conn, "{}", state());
            }
        }
    }
}

/// Asks bridge `name` for its state.
///
/// # Errors
///
/// No such bridge, nobody answering, or an answer that is not JSON.
pub fn show(name: &str) -> std::io::Result<serde_json::Value> {
    let mut conn = UnixStream::connect(socket_path(name))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.write_all(b"show\n")?;
    let mut answer = String::new();
    conn.take(64 << 20).read_to_string(&mut answer)?;
    serde_json::from_str(&answer)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The names of the bridges with a control socket.
pub fn names() -> Vec<String> {
    tunctl::service::names(Path::new(SOCKET_DIR))
}
