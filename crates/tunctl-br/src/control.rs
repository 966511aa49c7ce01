//! The bridge's control socket, `/run/tunctl/br/NAME.sock` (mode 0600, so root's alone): one
//! request, one answer, each a line. A request is `show` or a [`Request`] as JSON; the answer
//! to `show` is the bridge's [`Status`] as JSON, to the others an [`Answer`]. `tunctl br
//! show`, `br fdb`, `br port` and `br down` find running bridges there.
//!
//! A client gets a deadline (a second to send its request, five to take the answer) and a
//! thread of its own, at most [`AT_ONCE`] at a time, apart from the threads that forward
//! and age: a client that stalls delays other clients by its deadline at most, and never
//! the ageing of the table nor the frames.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tunctl::service::ServiceSocket;

use crate::frame::Mac;
use crate::status::Status;

/// Where the sockets live.
pub const SOCKET_DIR: &str = "/run/tunctl/br";

/// The most clients served at a time (as vpwn's UAPI socket takes 8 a pass).
pub const AT_ONCE: usize = 8;

/// The longest request taken.
const MAX_REQUEST: u64 = 4096;
/// A client's time to send its request.
const READ_DEADLINE: Duration = Duration::from_secs(1);
/// A client's time to take the answer.
const WRITE_DEADLINE: Duration = Duration::from_secs(5);

/// A request to a running bridge.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Its state ([`Status`]).
    Show,
    /// A static entry: `mac` (in `vlan`) on `port` (`NAME` or `NAME@NS`).
    FdbAdd {
        /// The address.
        mac: Mac,
        /// Its VLAN, 0 for untagged.
        #[serde(default)]
        vlan: u16,
        /// The port.
        port: String,
    },
    /// Removes the entry for `mac` in `vlan`, static or learned.
    FdbDel {
        /// The address.
        mac: Mac,
        /// Its VLAN, 0 for untagged.
        #[serde(default)]
        vlan: u16,
    },
    /// A port made (or attached) now: `NAME` or `NAME@NS`. Without `@NS`, the bridge's own
    /// namespace, and only for a client in that namespace too (for another, NAME alone is
    /// ambiguous and refused).
    PortAdd {
        /// The port.
        port: String,
    },
    /// A port removed now (its entries flushed, a tap the bridge made deleted, an uplink
    /// released): `NAME` or `NAME@NS`.
    PortDel {
        /// The port.
        port: String,
    },
}

/// The answer to a request other than `show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// Done; what was done.
    Ok(String),
    /// Refused; why.
    Error(String),
}

/// The socket of bridge `name` (a name that is not an interface-like name gets a path that
/// cannot exist, so no lookup leaves the directory).
pub fn socket_path(name: &str) -> PathBuf {
    tunctl::service::socket_path(Path::new(SOCKET_DIR), name)
        .unwrap_or_else(|_| Path::new(SOCKET_DIR).join(".not-a-bridge-name"))
}

/// A listening control socket; removed when dropped.
#[derive(Debug)]
pub struct Socket(ServiceSocket);

/// What a request is answered with.
pub enum Reply {
    /// The bridge's state.
    Status(Box<Status>),
    /// Done, or refused.
    Answer(Answer),
}

/// Where a request came from: the process (SO_PEERCRED), to tell whether it runs in the
/// bridge's namespace.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// Its pid, if the kernel gave one.
    pub pid: Option<u32>,
}

impl Peer {
    /// Whether the client runs in the same network namespace as this process (unknown:
    /// false).
    pub fn shares_namespace(&self) -> bool {
        let Some(pid) = self.pid else {
            return false;
        };
        let theirs = crate::spec::ns_id(&tunctl::Namespace::pid(pid));
        theirs.is_some() && theirs == crate::spec::ns_id(&tunctl::Namespace::Current)
    }
}

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

    /// The next connection waiting, if any (never blocks).
    pub fn accept(&self) -> Option<UnixStream> {
        self.0.pending().next()
    }
}

/// Serves one connection: reads its request, answers it with `answer`, each within the
/// client's deadline (one for the whole request, however slowly it comes, one for the
/// whole answer).
pub fn serve_connection(conn: UnixStream, answer: &dyn Fn(Request, Peer) -> Reply) {
    use tunctl::service::Client;
    let peer = Peer {
        pid: rustix::net::sockopt::socket_peercred(&conn)
            .ok()
            .map(|c| c.pid.as_raw_nonzero().get() as u32),
    };
    let Ok(writer) = conn.try_clone() else {
        return;
    };
    let Some(request) = Client::new(conn, READ_DEADLINE).ok().and_then(read_request) else {
        return;
    };
    let line = match answer(request, peer) {
        Reply::Status(st) => serde_json::to_string(&st),
        Reply::Answer(a) => serde_json::to_string(&a),
    };
    if let (Ok(mut line), Ok(mut writer)) = (line, Client::new(writer, WRITE_DEADLINE)) {
        line.push('\n');
        let _ = writer.write_all(line.as_bytes());
    }
}

/// Reads one request line (at most [`MAX_REQUEST`] bytes): `show`, or a [`Request`] as
/// JSON. `None`: no request in time, or not one.
fn read_request(client: tunctl::service::Client) -> Option<Request> {
    let mut reader = BufReader::new(client.take(MAX_REQUEST));
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    match line.trim() {
        "show" => Some(Request::Show),
        text => serde_json::from_str(text).ok(),
    }
}

/// Sends `request` to bridge `name` and reads the answer's line.
fn ask(name: &str, request: &str, wait: Duration) -> std::io::Result<String> {
    let mut conn = UnixStream::connect(socket_path(name))?;
    conn.set_read_timeout(Some(wait))?;
    conn.set_write_timeout(Some(wait))?;
    conn.write_all(request.as_bytes())?;
    conn.write_all(b"\n")?;
    let mut answer = String::new();
    // A table of a million entries is about 100 MB of JSON.
    conn.take(256 << 20).read_to_string(&mut answer)?;
    Ok(answer)
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

/// Asks bridge `name` for its state.
///
/// # Errors
///
/// No such bridge, nobody answering, or an answer that is not a bridge's state.
pub fn show(name: &str) -> std::io::Result<Status> {
    let answer = ask(name, "show", Duration::from_secs(5))?;
    serde_json::from_str(&answer).map_err(invalid)
}

/// Sends `request` (not `show`) to bridge `name`: its [`Answer`].
///
/// # Errors
///
/// No such bridge, nobody answering (port additions get 30 s), or an answer that is not
/// one.
pub fn request(name: &str, request: &Request) -> std::io::Result<Answer> {
    let text = serde_json::to_string(request).map_err(invalid)?;
    let answer = ask(name, &text, Duration::from_secs(30))?;
    serde_json::from_str(&answer).map_err(invalid)
}

/// The names of the bridges with a control socket.
pub fn names() -> Vec<String> {
    tunctl::service::names(Path::new(SOCKET_DIR))
}
