//! What the fuzz target `fuzz/fuzz_targets/vpwn_wire.rs` drives: the tunnel's own receive
//! pipeline (the receive thread's), handshake handling (the handshake thread's) and UAPI
//! connection serving, without a device or a socket. Not a stable API; the checks (the
//! remote ends, the model of what must come out) live with the target.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use tunctl::Batch;

use crate::config::Config;
use crate::cookie::Cookies;
use crate::handshake::Msg;
use crate::keys::PublicKey;
use crate::stats::{Counters, Stats};
use crate::table::Table;
use crate::uapi::Handler;

/// What one buffer did.
#[derive(Debug, Default)]
pub struct Output {
    /// The packets committed for the device, in order.
    pub delivered: Vec<Vec<u8>>,
    /// The datagrams sent, in order: bytes, destination, and the peer whose engine made
    /// it (`None`: a cookie reply of ours).
    pub sent: Vec<(Vec<u8>, SocketAddr, Option<usize>)>,
    /// Handshake messages handed to the handshake thread (handled here in order).
    pub handshakes: usize,
}

/// A tunnel's receive side: a live table, its counters, the handshake checks.
pub struct Pipeline {
    table: Table,
    stats: Stats,
    cookies: Option<Cookies>,
    batch: Batch,
    indexes: AtomicU32,
    out: Vec<u8>,
}

impl Pipeline {
    /// The pipeline of `conf`, its peers' session indexes counted from `first_index`.
    pub fn new(conf: Config, first_index: u32) -> Pipeline {
        let indexes = AtomicU32::new(first_index);
        let table = Table::build(conf, None, &indexes, &[]);
        let cookies = table.gate.as_ref().map(|g| Cookies::new(&g.public()));
        Pipeline {
            table,
            stats: Stats::default(),
            cookies,
            batch: Batch::new(64, 0),
            indexes,
            out: vec![0u8; 2048],
        }
    }

    /// A new configuration, as a `set` applies it (`endpoints`: the peers whose endpoint it
    /// gave): peers that stay keep their state. Returns, for each new peer, the old peer
    /// whose state it kept, if any.
    pub fn configure(&mut self, conf: Config, endpoints: &[PublicKey]) -> Vec<Option<usize>> {
        let same_key = self.table.conf.private_key == conf.private_key;
        let next = Table::build(conf, Some(&self.table), &self.indexes, endpoints);
        let kept = next
            .peers
            .iter()
            .map(|p| {
                self.table
                    .peers
                    .iter()
                    .position(|q| std::sync::Arc::ptr_eq(p, q))
            })
            .collect();
        self.table = next;
        if !same_key {
            self.cookies = self.table.gate.as_ref().map(|g| Cookies::new(&g.public()));
        }
        kept
    }

    /// One received buffer from `from` (datagrams of `segment` bytes; 0: one), as the
    /// receive thread takes it, then its handshake messages as the handshake thread takes
    /// them, under load or not.
    pub fn receive(
        &mut self,
        from: SocketAddr,
        buf: &[u8],
        segment: usize,
        under_load: bool,
    ) -> Output {
        let mut output = Output::default();
        let mut handshakes: Vec<Msg> = Vec::new();
        self.batch.clear();
        let mut flush = |b: &mut Batch| {
            output
                .delivered
                .extend((0..b.len()).map(|i| b.packet(i).to_vec()));
            b.clear();
        };
        crate::receive::buffer(
            &self.table,
            &self.stats,
            crate::udp::Endpoint::new(from),
            crate::receive::datagrams(buf, segment),
            &mut self.batch,
            &mut handshakes,
            &mut flush,
        );
        flush(&mut self.batch);
        output.handshakes = handshakes.len();
        for msg in &handshakes {
            let Some(cookies) = self.cookies.as_mut() else {
                break;
            };
            crate::handshake::handle(
                &self.table,
                &self.stats,
                cookies,
                under_load,
                msg,
                &mut self.out,
                &mut |d: &[u8], to: crate::udp::Endpoint, peer: Option<usize>| {
                    output.sent.push((d.to_vec(), to.addr, peer))
                },
            );
        }
        output
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        self.stats.snapshot()
    }

    /// The configuration.
    pub fn conf(&self) -> &Config {
        &self.table.conf
    }

    /// The peer whose allowed IPs hold `addr`.
    pub fn route(&self, addr: IpAddr) -> Option<usize> {
        self.table.route(addr)
    }

    /// The peer with this public key.
    pub fn by_key(&self, key: &PublicKey) -> Option<usize> {
        self.table.by_key(key)
    }

    /// The peer whose sessions carry this index.
    pub fn by_index(&self, index: u32) -> Option<usize> {
        self.table.by_index(index)
    }

    /// The index peer `p`'s sessions carry (in the top 24 bits of a receiver index).
    pub fn peer_index(&self, p: usize) -> Option<u32> {
        self.table.peers.get(p).map(|s| s.index)
    }

    /// Where peer `p` is now.
    pub fn endpoint(&self, p: usize) -> Option<SocketAddr> {
        self.table.peers.get(p).and_then(|s| s.endpoint())
    }

    /// Time since peer `p`'s last confirmed handshake.
    pub fn since_handshake(&self, p: usize) -> Option<Duration> {
        self.table.peers.get(p).and_then(|s| s.since_handshake())
    }

    /// Bytes received from peer `p` (authenticated ones).
    pub fn rx_bytes(&self, p: usize) -> u64 {
        self.table
            .peers
            .get(p)
            .map_or(0, |s| s.rx_bytes.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// Serves one UAPI connection with the server's own code (requests until the client
/// closes it).
///
/// # Errors
///
/// The connection's.
pub fn serve_uapi(conn: UnixStream, handler: &dyn Handler) -> std::io::Result<()> {
    crate::uapi::serve(
        tunctl::service::Client::new(conn, crate::uapi::CLIENT_TIME)?,
        handler,
    )
}
