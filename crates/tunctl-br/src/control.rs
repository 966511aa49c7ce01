//! The bridge's control socket, `/run/tunctl/br/NAME.sock` (mode 0600): one request line
//! (`show`), one answer, the bridge's state as a line of JSON. `tunctl br show` and `tunctl br
//! down` find running bridges there.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the sockets live.
pub const SOCKET_DIR: &str = "/run/tunctl/br";

/// The socket of bridge `name`.
pub fn socket_path(name: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{name}.sock"))
}

/// A listening control socket; removed when dropped.
#[derive(Debug)]
pub struct Socket {
    listener: UnixListener,
    path: PathBuf,
}

impl Socket {
    /// Binds the socket of bridge `name`. A stale socket is replaced; a live one (another
    /// bridge of that name) is an error.
    ///
    /// # Errors
    ///
    /// Not root (the directory), or the name is served.
    pub fn bind(name: &str) -> std::io::Result<Socket> {
        std::fs::create_dir_all(SOCKET_DIR)?;
        let path = socket_path(name);
        if path.exists() {
            if UnixStream::connect(&path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is served by another bridge", path.display()),
                ));
            }
            std::fs::remove_file(&path)?;
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(Socket { listener, path })
    }

    /// Answers the connections waiting now.
    pub fn serve_pending(&self, state: &dyn Fn() -> serde_json::Value) {
        while let Ok((conn, _)) = self.listener.accept() {
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

impl Drop for Socket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
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
