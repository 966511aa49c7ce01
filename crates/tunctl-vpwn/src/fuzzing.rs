//! Entry points for the fuzz targets (`fuzz/fuzz_targets/vpwn_wire.rs`); not a stable API.
//!
//! What comes from outside the host reaches vpwn two ways: datagrams from the network, and
//! requests on the UAPI socket. This module runs both without a device or a UDP socket:
//!
//! - a receive pipeline, as the rx thread runs it ([`Gate::dispatch`], the peer's engine,
//!   the allowed-IPs check, the received buffer split by its UDP GRO segment size), set up
//!   once with a fixed private key and two peers whose sessions are established by real
//!   handshakes with two in-process remote ends;
//! - the UAPI: [`apply_set`](crate::uapi::apply_set) from a configured [`DeviceConf`], and
//!   the connection-serving code over a socket pair.
//!
//! Each function checks what must hold whatever the input (see each one) and panics when it
//! does not, which is what a fuzzer reports.
//!
//! [`Gate::dispatch`]: crate::engine::Gate::dispatch

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use tunctl::offload::{gso_split, GroTable, VirtioNetHdr};
use tunctl::{Batch, Cidr};

use crate::engine::{Dispatch, Drop, Engine, Out};
use crate::keys::Key;
use crate::table::Table;
use crate::uapi::{DeviceConf, Handler, PeerConf, SetError};

/// The largest datagram the rx thread takes (its receive buffers are one byte longer, so a
/// longer one shows as truncated and is dropped).
const MAX_DATAGRAM: usize = 65535;
/// The session index of this end's first peer ([`peer_index`]).
const FIRST_INDEX: u32 = 0x00_0100;
/// The configured peers (each with a remote end in [`Rx`]).
const PEERS: usize = 2;
/// Where the remote ends' datagrams come from.
const FROM_V4: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 51820);
const FROM_V6: SocketAddr = SocketAddr::new(
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
    51820,
);

fn our_private() -> Key {
    Key([0x11; 32])
}

fn remote_private(peer: usize) -> Key {
    Key([0x21 + peer as u8; 32])
}

fn preshared(peer: usize) -> Option<Key> {
    (peer == 1).then_some(Key([0x5a; 32]))
}

fn cidrs(list: &[&str]) -> Vec<Cidr> {
    list.iter()
        .map(|c| c.parse().expect("a fixed allowed IP"))
        .collect()
}

/// This end's configuration: a private key, two peers with overlapping allowed IPs (the
/// longest prefix decides), one with a preshared key, an endpoint and a keepalive.
pub fn base_conf() -> &'static DeviceConf {
    static CONF: OnceLock<DeviceConf> = OnceLock::new();
    CONF.get_or_init(|| DeviceConf {
        private_key: Some(our_private()),
        listen_port: 51820,
        fwmark: 0,
        peers: vec![
            PeerConf {
                public_key: remote_private(0).public(),
                preshared_key: preshared(0),
                endpoint: Some("192.0.2.1:51820".parse().expect("a fixed endpoint")),
                keepalive: 25,
                allowed_ips: cidrs(&["10.0.0.0/24", "fd00::/64", "192.0.2.0/24"]),
            },
            PeerConf {
                public_key: remote_private(1).public(),
                preshared_key: preshared(1),
                endpoint: None,
                keepalive: 0,
                allowed_ips: cidrs(&["10.0.0.128/25", "0.0.0.0/0", "fd00::1/128", "2001:db8::/32"]),
            },
        ],
    })
}

/// This end's public key: what a handshake's mac1 is keyed with.
pub fn public_key() -> Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    *KEY.get_or_init(|| our_private().public())
}

/// The index the sessions of configured peer `peer` carry (in the top 24 bits of a message's
/// receiver index), in every pipeline of this module.
pub fn peer_index(peer: usize) -> u32 {
    FIRST_INDEX + (peer % PEERS) as u32
}

/// What became of one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    /// Decrypted: an inner packet from `src`, accepted iff `allowed` (cryptokey routing).
    Packet {
        peer: usize,
        src: IpAddr,
        allowed: bool,
        packet: Vec<u8>,
    },
    /// The peer's engine answered (a handshake response), or sent what it had queued.
    Answer { peer: usize, datagram: Vec<u8> },
    /// Authenticated, nothing to deliver (a keepalive, a completed handshake).
    Heard { peer: usize },
    /// The gate is under load: a cookie reply goes back, nothing else.
    Cookie(Vec<u8>),
    /// Dropped by the gate or the engine.
    Dropped(Drop),
    /// A valid message for no peer of ours.
    NoPeer,
    /// Longer than any datagram.
    Oversized,
}

/// The source address in an IP packet's header, read here independently of the engine.
fn header_source(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => <[u8; 4]>::try_from(packet.get(12..16)?)
            .ok()
            .map(IpAddr::from),
        6 => <[u8; 16]>::try_from(packet.get(8..24)?)
            .ok()
            .map(IpAddr::from),
        _ => None,
    }
}

/// The peer whose allowed IPs hold `addr`, by brute force over the configuration (the
/// longest prefix among the networks that contain it).
fn owner(conf: &DeviceConf, addr: IpAddr) -> Option<usize> {
    let host = Cidr::new(addr, if addr.is_ipv4() { 32 } else { 128 }).expect("a host prefix");
    conf.peers
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.allowed_ips.iter().map(move |c| (i, c)))
        .filter(|(_, c)| c.contains(&host))
        .max_by_key(|(_, c)| c.prefix())
        .map(|(i, _)| i)
}

/// One received buffer through `table`, as the rx thread takes it: split into datagrams of
/// `segment` bytes (0: one datagram), each dispatched to its peer (by the static key of an
/// initiation, or by its receiver index), decrypted into a batch slot, checked against the
/// peer's allowed IPs, the session it authenticated under confirmed; an engine's answer to
/// a handshake is followed by what it queued.
fn receive(
    table: &Table,
    batch: &mut Batch,
    scratch: &mut [u8],
    from: SocketAddr,
    buf: &[u8],
    segment: usize,
) -> Vec<Event> {
    batch.clear();
    let mut events = Vec::new();
    if buf.len() > MAX_DATAGRAM {
        events.push(Event::Oversized);
        return events;
    }
    let Some(gate) = &table.gate else {
        events.push(Event::Dropped(Drop::Auth));
        return events;
    };
    let segment = if segment == 0 {
        buf.len().max(1)
    } else {
        segment
    };
    let mut held: Option<(usize, MutexGuard<'_, Box<dyn Engine>>)> = None;
    let mut heard = 0usize;
    for datagram in buf.chunks(segment) {
        let p = match gate.dispatch(from.ip(), datagram, scratch) {
            Dispatch::Initiation(key) => table.by_key(&key),
            Dispatch::Index(i) => table.by_index(i),
            Dispatch::Reply(cookie) => {
                events.push(Event::Cookie(cookie.to_vec()));
                continue;
            }
            Dispatch::Dropped(why) => {
                events.push(Event::Dropped(why));
                continue;
            }
        };
        let Some(p) = p else {
            events.push(Event::NoPeer);
            continue;
        };
        assert!(p < table.peers.len(), "peer {p} of {}", table.peers.len());
        if held.as_ref().is_none_or(|(q, _)| *q != p) {
            if let Some((q, _)) = held.take() {
                settle(table, q, from, heard);
                heard = 0;
            }
            held = Some((p, table.peers[p].engine()));
        }
        let Some((_, engine)) = held.as_mut() else {
            continue;
        };
        if batch.spare().is_none() {
            // The rx thread writes the batch to the device here.
            batch.clear();
        }
        let Some(slot) = batch.spare() else {
            panic!("an empty batch has no spare slot");
        };
        let session = proven_session(datagram);
        let confirm = |i: u32| {
            // Only a session of this peer's: the index that found it.
            assert_eq!(i >> 8, table.peers[p].index, "session {i:#x} for peer {p}");
            table.peers[p].confirm(i);
            assert!(table.peers[p].since_handshake().is_some());
        };
        match engine.decapsulate(Some(from.ip()), datagram, slot) {
            Out::Tunnel(packet, src) => {
                if let Some(i) = session {
                    confirm(i);
                }
                heard += datagram.len();
                // The engine's word on the source is what cryptokey routing trusts: it must
                // be the packet's own.
                assert_eq!(header_source(packet), Some(src), "the source of {packet:?}");
                assert!(
                    packet.len() + 32 <= datagram.len(),
                    "a packet longer than sent"
                );
                let packet = packet.to_vec();
                let allowed = table.route(src) == Some(p);
                assert_eq!(
                    table.route(src),
                    owner(&table.conf, src),
                    "the route of {src}"
                );
                if allowed {
                    batch
                        .commit(packet.len(), true)
                        .expect("a decrypted packet fits its slot");
                    assert_eq!(batch.packet(batch.len() - 1), packet.as_slice());
                }
                events.push(Event::Packet {
                    peer: p,
                    src,
                    allowed,
                    packet,
                });
            }
            Out::Network(reply) => {
                if datagram.first() == Some(&2) {
                    if let Some(i) = session {
                        confirm(i);
                    }
                }
                heard += datagram.len();
                events.push(Event::Answer {
                    peer: p,
                    datagram: reply.to_vec(),
                });
                for _ in 0..1024 {
                    match engine.decapsulate(None, &[], scratch) {
                        Out::Network(queued) => events.push(Event::Answer {
                            peer: p,
                            datagram: queued.to_vec(),
                        }),
                        _ => break,
                    }
                }
            }
            Out::Done => {
                if let Some(i) = session {
                    confirm(i);
                }
                heard += datagram.len();
                events.push(Event::Heard { peer: p });
            }
            Out::Dropped(why) => events.push(Event::Dropped(why)),
        }
    }
    if let Some((q, _)) = held.take() {
        settle(table, q, from, heard);
    }
    events
}

/// The receiver index of a handshake response or a data message: the session of ours it
/// proves once it authenticates (the rx thread confirms it then).
fn proven_session(datagram: &[u8]) -> Option<u32> {
    let at = match datagram.first()? {
        2 => 8,
        4 => 4,
        _ => return None,
    };
    let b: [u8; 4] = datagram.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// As the rx thread does after a buffer: the peer is where it was heard from.
fn settle(table: &Table, peer: usize, from: SocketAddr, heard: usize) {
    if heard > 0 {
        let p = &table.peers[peer];
        p.set_endpoint(from);
        p.rx_bytes.fetch_add(heard as u64, Ordering::Relaxed);
        assert_eq!(p.endpoint(), Some(from));
    }
}

/// The persistent receive pipeline and the remote ends of its two peers.
struct Rx {
    table: Table,
    /// Remote end `k` is configured peer `k`: it seals what the fuzzer sends.
    remotes: Vec<Tunn>,
    batch: Batch,
    scratch: Vec<u8>,
    /// Room to split a coalesced super-packet again.
    segments: Vec<Vec<u8>>,
}

impl Rx {
    fn new() -> Rx {
        let indexes = AtomicU32::new(FIRST_INDEX);
        let table = Table::build(base_conf().clone(), None, &indexes);
        let our = boringtun::x25519::PublicKey::from(public_key().0);
        let remotes = (0..PEERS)
            .map(|k| {
                let secret = boringtun::x25519::StaticSecret::from(remote_private(k).0);
                let public = boringtun::x25519::PublicKey::from(&secret);
                // Never under load: only this end's gate is under test.
                let limiter = Arc::new(RateLimiter::new(&public, u64::MAX));
                Tunn::new(
                    secret,
                    our,
                    preshared(k).map(|k| k.0),
                    None,
                    0x00ab_0000 + k as u32,
                    Some(limiter),
                )
            })
            .collect();
        let mut rx = Rx {
            table,
            remotes,
            batch: Batch::new(64, 0),
            scratch: vec![0u8; 65536 + 64],
            segments: vec![vec![0u8; 65536 + 64]; 64],
        };
        for k in 0..PEERS {
            rx.handshake(k, FROM_V4);
        }
        rx
    }

    fn receive(&mut self, from: SocketAddr, buf: &[u8], segment: usize) -> Vec<Event> {
        receive(
            &self.table,
            &mut self.batch,
            &mut self.scratch,
            from,
            buf,
            segment,
        )
    }

    /// Remote end `k` makes a new session with this end, through the pipeline (answering a
    /// cookie first when the gate is under load).
    fn handshake(&mut self, k: usize, from: SocketAddr) {
        let mut out = vec![0u8; 256];
        for _ in 0..4 {
            let init = match self.remotes[k].format_handshake_initiation(&mut out, true) {
                TunnResult::WriteToNetwork(d) => d.to_vec(),
                other => panic!("remote {k} made no initiation: {other:?}"),
            };
            let events = self.receive(from, &init, 0);
            match events.as_slice() {
                [Event::Answer { peer, datagram }] if *peer == k => {
                    let keepalive = match self.remotes[k].decapsulate(None, datagram, &mut out) {
                        TunnResult::WriteToNetwork(d) => d.to_vec(),
                        other => panic!("remote {k} took no response: {other:?}"),
                    };
                    let events = self.receive(from, &keepalive, 0);
                    assert_eq!(events, [Event::Heard { peer: k }], "keepalive of {k}");
                    // The peer's first datagram under the new session confirmed it.
                    let since = self.table.peers[k].since_handshake();
                    assert!(since.is_some_and(|d| d < Duration::from_secs(60)));
                    return;
                }
                [Event::Cookie(cookie)] => {
                    match self.remotes[k].decapsulate(None, cookie, &mut out) {
                        TunnResult::Done => continue,
                        other => panic!("remote {k} took no cookie: {other:?}"),
                    }
                }
                other => panic!("the initiation of remote {k}: {other:?}"),
            }
        }
        panic!("no handshake with remote {k} after a cookie");
    }

    /// Remote end `k` encrypts `packet` in its current session.
    fn seal(&mut self, k: usize, packet: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; packet.len() + 32 + 148];
        match self.remotes[k].encapsulate(packet, &mut out) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            other => panic!("remote {k} has no session: {other:?}"),
        }
    }
}

fn rx() -> MutexGuard<'static, Rx> {
    static RX: OnceLock<Mutex<Rx>> = OnceLock::new();
    RX.get_or_init(|| Mutex::new(Rx::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn sender(v6: bool) -> SocketAddr {
    if v6 {
        FROM_V6
    } else {
        FROM_V4
    }
}

/// Nothing a stranger sends is delivered or answered but a cookie under load: no packet,
/// no handshake answer, no keepalive heard.
fn assert_unauthenticated(events: &[Event]) {
    for e in events {
        assert!(
            matches!(e, Event::Dropped(_) | Event::NoPeer | Event::Oversized),
            "forged input got through: {e:?}"
        );
    }
}

/// `data` as one datagram from the network, through the persistent pipeline (sessions with
/// both peers established). Nothing in it can be authenticated.
pub fn datagram(data: &[u8], from_v6: bool) {
    gro_buffer(0, data, from_v6);
}

/// `data` as one received buffer of datagrams of `segment` bytes (UDP GRO; 0: a single
/// datagram), split as the rx thread splits it.
pub fn gro_buffer(segment: usize, data: &[u8], from_v6: bool) {
    let mut rx = rx();
    let events = rx.receive(sender(from_v6), data, segment);
    let datagrams = if data.len() > MAX_DATAGRAM {
        1
    } else {
        data.chunks(if segment == 0 {
            data.len().max(1)
        } else {
            segment
        })
        .count()
    };
    assert_eq!(events.len(), datagrams, "one outcome per datagram");
    assert_unauthenticated(&events);
}

/// What the engine makes of a decrypted `plain`: a keepalive, an IP packet (cut to the length
/// its header gives, which holds at least the header) from its source, or a malformed one.
/// An independent model.
fn expected_plain(plain: &[u8]) -> Result<Option<(IpAddr, &[u8])>, ()> {
    if plain.is_empty() {
        return Ok(None);
    }
    let (len, header) = match plain[0] >> 4 {
        4 if plain.len() >= 20 => (usize::from(u16::from_be_bytes([plain[2], plain[3]])), 20),
        6 if plain.len() >= 40 => (
            usize::from(u16::from_be_bytes([plain[4], plain[5]])) + 40,
            40,
        ),
        _ => return Err(()),
    };
    // A length past the data, or short of the header (whose source it would not hold).
    if len > plain.len() || len < header {
        return Err(());
    }
    let src = header_source(plain).ok_or(())?;
    Ok(Some((src, &plain[..len])))
}

/// Authentic traffic: each of `packets` (peer, inner packet) is sealed by that peer's
/// remote end, the datagrams are put in one buffer, and the buffer goes through the
/// pipeline split by `segment` (`None`: by the first datagram's size, as UDP GRO does).
/// `tamper` XORs one byte of the buffer first (position modulo the length, a non-zero mask);
/// `replay` sends the buffer a second time.
///
/// Checked: with the buffer split at the datagrams' own boundaries, each untampered datagram
/// is delivered (or heard, or dropped as malformed) exactly as an independent model of the
/// engine says, to the right peer, with the allowed-IPs verdict of the configuration; a
/// tampered one is dropped. Whatever the split, nothing is delivered that was not sent, and
/// nothing is delivered twice.
pub fn sealed(
    packets: &[(usize, &[u8])],
    segment: Option<usize>,
    tamper: Option<(usize, u8)>,
    replay: bool,
    from_v6: bool,
) {
    let mut rx = rx();
    let from = sender(from_v6);
    let mut buf = Vec::new();
    let mut bounds = Vec::new();
    let mut plains = Vec::new();
    for (peer, packet) in packets {
        let k = peer % PEERS;
        let d = rx.seal(k, packet);
        bounds.push(buf.len()..buf.len() + d.len());
        buf.extend_from_slice(&d);
        plains.push((k, *packet));
    }
    if buf.is_empty() || buf.len() > MAX_DATAGRAM {
        return;
    }
    let first = bounds[0].len();
    let gro_shaped = bounds
        .split_last()
        .is_some_and(|(last, rest)| rest.iter().all(|b| b.len() == first) && last.len() <= first);
    let exact = match segment {
        None => gro_shaped,
        Some(s) => (s == first || (s == 0 && bounds.len() == 1)) && gro_shaped,
    };
    let segment = segment.unwrap_or(first);
    let mut tampered = None;
    if let Some((at, mask)) = tamper.filter(|t| t.1 != 0) {
        let at = at % buf.len();
        buf[at] ^= mask;
        tampered = bounds.iter().position(|b| b.contains(&at));
    }
    let conf = rx.table.conf.clone();
    let events = rx.receive(from, &buf, segment);
    let expected: Vec<Option<Event>> = plains
        .iter()
        .map(|(k, plain)| match expected_plain(plain) {
            Ok(None) => Some(Event::Heard { peer: *k }),
            Ok(Some((src, packet))) => Some(Event::Packet {
                peer: *k,
                src,
                allowed: owner(&conf, src) == Some(*k),
                packet: packet.to_vec(),
            }),
            Err(()) => None,
        })
        .collect();
    if exact {
        assert_eq!(events.len(), plains.len(), "one outcome per datagram");
        for (i, e) in events.iter().enumerate() {
            if tampered == Some(i) {
                assert!(
                    matches!(e, Event::Dropped(_) | Event::NoPeer),
                    "tampered datagram {i}: {e:?}"
                );
            } else {
                match &expected[i] {
                    Some(want) => assert_eq!(e, want, "datagram {i}"),
                    None => assert_eq!(e, &Event::Dropped(Drop::Malformed), "datagram {i}"),
                }
            }
        }
    } else {
        let mut unseen: Vec<Event> = expected.into_iter().flatten().collect();
        for e in &events {
            match e {
                Event::Packet { .. } | Event::Heard { .. } => {
                    let Some(i) = unseen.iter().position(|x| x == e) else {
                        panic!("delivered what was not sent, or twice: {e:?}");
                    };
                    unseen.swap_remove(i);
                }
                Event::Answer { .. } | Event::Cookie(_) => panic!("answered data: {e:?}"),
                _ => {}
            }
        }
    }
    let delivered: Vec<&[u8]> = events
        .iter()
        .filter_map(|e| match e {
            Event::Packet {
                allowed: true,
                packet,
                ..
            } => Some(packet.as_slice()),
            _ => None,
        })
        .collect();
    coalesce(&delivered, &mut rx.segments);
    if replay {
        let again = rx.receive(from, &buf, segment);
        assert_unauthenticated(&again);
    }
}

/// What the device is given of `packets` (decrypted, allowed): coalesced as trusted, as
/// `Queue::send_batch` does on an offload device (TCP and UDP). Whatever a peer sent, this
/// has room, and every super-packet made splits again.
fn coalesce(packets: &[&[u8]], segments: &mut [Vec<u8>]) {
    // A batch's packets start past a virtio-net header.
    const OFF: usize = VirtioNetHdr::LEN;
    let mut bufs: Vec<Vec<u8>> = packets
        .iter()
        .map(|p| {
            let mut b = vec![0u8; OFF + 65536];
            b[OFF..OFF + p.len()].copy_from_slice(p);
            b
        })
        .collect();
    let mut lens: Vec<usize> = packets.iter().map(|p| p.len()).collect();
    let mut gro = GroTable::new(true);
    gro.set_protocols(true, true);
    let mut out = Vec::new();
    gro.coalesce_trusted(
        &mut bufs,
        &mut lens,
        &vec![true; packets.len()],
        OFF,
        &mut out,
    )
    .expect("a batch's buffers have room");
    let mut sizes = vec![0usize; segments.len()];
    for &i in &out {
        assert!(lens[i] <= 65535 + 40, "a super-packet of {} bytes", lens[i]);
        let hdr = VirtioNetHdr::parse(&bufs[i]).expect("a header written");
        if hdr.gso_type != 0 {
            let n = gso_split(&bufs[i][OFF..OFF + lens[i]], hdr, segments, &mut sizes, 0)
                .expect("a coalesced packet splits again");
            assert!(n >= 2, "a super-packet of {n} segment");
        }
    }
}

/// Remote end `peer` makes a new session with this end (with a cookie round when the gate
/// is under load); the pipeline must answer it and take its keepalive.
pub fn rehandshake(peer: usize, from_v6: bool) {
    let mut rx = rx();
    if let Some(gate) = &rx.table.gate {
        gate.tick();
    }
    rx.handshake(peer % PEERS, sender(from_v6));
}

/// A pipeline with no session, for [`fresh`].
struct Fresh {
    /// The table, and how many single messages it has taken.
    table: Option<(Table, usize)>,
    batch: Batch,
    scratch: Vec<u8>,
}

/// `messages` through a pipeline with no session (same keys and peers) and a rate limiter of
/// its own: deterministic whatever came before, so a run of handshake messages with a valid
/// mac1 can put its gate under load. Nothing in them can be authenticated: only cookie
/// replies come back.
pub fn fresh(messages: &[&[u8]], from_v6: bool) {
    static FRESH: OnceLock<Mutex<Fresh>> = OnceLock::new();
    let mut f = FRESH
        .get_or_init(|| {
            Mutex::new(Fresh {
                table: None,
                batch: Batch::new(4, 0),
                scratch: vec![0u8; 65536 + 64],
            })
        })
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let f = &mut *f;
    // One message counts at most twice towards the limiter's 100 (the gate's mac1 check and
    // the engine's), and moves no engine (no handshake of ours is under way to answer, no
    // session to decrypt in): 40 of them see the table as new. A run of them gets a new one.
    let reuse = messages.len() == 1 && f.table.as_ref().is_some_and(|(_, n)| *n < 40);
    if !reuse {
        let indexes = AtomicU32::new(FIRST_INDEX);
        f.table = Some((Table::build(base_conf().clone(), None, &indexes), 0));
    }
    let Some((table, uses)) = f.table.as_mut() else {
        return;
    };
    *uses += 1;
    let from = sender(from_v6);
    for m in messages {
        let events = receive(table, &mut f.batch, &mut f.scratch, from, m, 0);
        for e in &events {
            match e {
                // From the gate, or from an engine that found the limiter over its limit
                // after the gate did not.
                Event::Cookie(c) | Event::Answer { datagram: c, .. } => {
                    assert_eq!(c.len(), 64, "a cookie reply: {e:?}");
                    assert_eq!(c[..4], 3u32.to_le_bytes(), "a cookie reply: {e:?}");
                }
                e => assert_unauthenticated(std::slice::from_ref(e)),
            }
        }
    }
    if !reuse && messages.len() > 1 {
        // Perhaps under load now: not for the next input.
        f.table = None;
    }
}

/// The UAPI keys `get=1` answers with that `set=1` does not take.
fn read_only(line: &str) -> bool {
    let key = line.split_once('=').map_or(line, |(k, _)| k);
    matches!(
        key,
        "last_handshake_time_sec" | "last_handshake_time_nsec" | "tx_bytes" | "rx_bytes"
    )
}

/// What must hold of any configuration a `set=1` produced.
fn check_conf(conf: &DeviceConf) {
    for (i, p) in conf.peers.iter().enumerate() {
        assert!(
            !conf.peers[..i].iter().any(|q| q.public_key == p.public_key),
            "peer {i}'s key twice"
        );
        for (j, net) in p.allowed_ips.iter().enumerate() {
            assert_eq!(
                Cidr::new(net.network(), net.prefix()).ok(),
                Some(*net),
                "{net} is not a network"
            );
            assert!(!p.allowed_ips[..j].contains(net), "{net} twice in peer {i}");
            for (k, q) in conf.peers.iter().enumerate() {
                assert!(k == i || !q.allowed_ips.contains(net), "{net} in two peers");
            }
        }
    }
}

/// A keyless table of `conf` (no Diffie-Hellman to build it), from `old`, its new peers'
/// session indexes counted from `first` (past those of `old`, as a tunnel counts them).
fn keyless(conf: &DeviceConf, old: Option<&Table>, first: u32) -> Table {
    let mut conf = conf.clone();
    conf.private_key = None;
    Table::build(conf, old, &AtomicU32::new(first))
}

/// The routes of a table built from `conf` agree with a brute-force longest-prefix match,
/// at each allowed network's first and last address and at a few fixed ones; peers kept
/// from `old` keep their state.
fn check_table(conf: &DeviceConf) {
    static BASE: OnceLock<Table> = OnceLock::new();
    let old = BASE.get_or_init(|| keyless(base_conf(), None, FIRST_INDEX + 0x1000));
    let table = keyless(conf, Some(old), FIRST_INDEX + 0x2000);
    let mut probes: Vec<IpAddr> = vec![
        Ipv4Addr::UNSPECIFIED.into(),
        Ipv4Addr::BROADCAST.into(),
        Ipv4Addr::new(10, 0, 0, 200).into(),
        Ipv6Addr::UNSPECIFIED.into(),
        Ipv6Addr::from(u128::MAX).into(),
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).into(),
    ];
    for net in conf.peers.iter().flat_map(|p| &p.allowed_ips) {
        probes.push(net.network());
        let host = u32::from(if net.addr().is_ipv4() { 32u8 } else { 128 } - net.prefix());
        probes.push(match net.network() {
            IpAddr::V4(a) => {
                Ipv4Addr::from(u32::from(a) | u32::MAX.checked_shr(32 - host).unwrap_or(0)).into()
            }
            IpAddr::V6(a) => {
                Ipv6Addr::from(u128::from(a) | u128::MAX.checked_shr(128 - host).unwrap_or(0))
                    .into()
            }
        });
    }
    for a in probes {
        assert_eq!(table.route(a), owner(conf, a), "the route of {a}");
    }
    assert_eq!(table.peers.len(), conf.peers.len());
    for (i, p) in conf.peers.iter().enumerate() {
        assert_eq!(table.by_key(&p.public_key), Some(i));
        assert_eq!(table.by_index(table.peers[i].index), Some(i));
        let kept = old.conf.peers.iter().position(|q| {
            q.public_key == p.public_key
                && q.preshared_key == p.preshared_key
                && q.keepalive == p.keepalive
        });
        if let Some(j) = kept {
            assert!(
                Arc::ptr_eq(&table.peers[i], &old.peers[j]),
                "peer {i} not kept"
            );
        }
    }
}

/// `text` as the lines of a `set=1` request (split at `\n`, as the server reads them),
/// applied to [`base_conf`].
///
/// Checked: a refusal is `-EINVAL` or `-EPROTO`; an accepted configuration has each
/// public key and each allowed network once, networks with no host bits, and routes that
/// agree with the configuration; and what `get=1` answers of it, set on an empty device,
/// gives it back (`wg showconf | wg setconf`).
pub fn uapi_set(text: &str) {
    let base = base_conf();
    match crate::uapi::apply_set(base, text.split('\n')) {
        Err(SetError { errno, .. }) => {
            assert!(
                errno == -libc::EINVAL || errno == -libc::EPROTO,
                "errno {errno}"
            );
        }
        Ok(next) => {
            check_conf(&next);
            check_table(&next);
            let shown = crate::uapi::get_response(&next, next.listen_port, &[]);
            let again = crate::uapi::apply_set(
                &DeviceConf::default(),
                shown.lines().filter(|l| !read_only(l)),
            );
            assert_eq!(again.as_ref(), Ok(&next), "set again from:\n{shown}");
        }
    }
}

/// The UAPI server's state for [`uapi_conn`]: a configuration and its live table.
struct ConnHandler {
    table: Mutex<Table>,
    indexes: AtomicU32,
}

impl Handler for ConnHandler {
    fn get(&self) -> String {
        let t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        crate::uapi::get_response(&t.conf, t.conf.listen_port, &t.status())
    }

    fn set(&self, lines: &[String]) -> Result<(), SetError> {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let next = crate::uapi::apply_set(&t.conf, lines.iter().map(String::as_str))?;
        check_conf(&next);
        *t = Table::build(next, Some(&*t), &self.indexes);
        Ok(())
    }

    fn counters(&self) -> String {
        "drop_auth=0\n".into()
    }
}

/// `bytes` as what a client sends on one UAPI connection, served by the server's own
/// connection code over a socket pair, with a handler that applies `set=1` to a live table
/// (from [`base_conf`]). The client sends everything, then closes its side, and reads the
/// answers to the end.
///
/// Checked: the server ends (its reads are bounded); every answer ends with an `errno`
/// line and a blank line; there are no more answers than the server takes requests.
pub fn uapi_conn(bytes: &[u8]) {
    static KEYED: OnceLock<Table> = OnceLock::new();
    let keyed = KEYED.get_or_init(|| {
        Table::build(
            base_conf().clone(),
            None,
            &AtomicU32::new(FIRST_INDEX + 0x3000),
        )
    });
    let indexes = AtomicU32::new(FIRST_INDEX + 0x4000);
    // Shares the keyed table's gate and engines: no Diffie-Hellman per input.
    let table = Table::build(base_conf().clone(), Some(keyed), &indexes);
    let handler = ConnHandler {
        table: Mutex::new(table),
        indexes,
    };
    let (client, server) = UnixStream::pair().expect("a socket pair");
    // As Socket::serve_pending sets them.
    let _ = server.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = server.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = client.set_read_timeout(Some(Duration::from_secs(10)));
    let mut answers = Vec::new();
    std::thread::scope(|s| {
        let handler = &handler;
        let serving = s.spawn(move || {
            let _ = crate::uapi::serve(server, handler);
        });
        let client = &client;
        let sending = s.spawn(move || {
            let mut sent = 0;
            while sent < bytes.len() {
                // SAFETY: a live socket and a buffer of the length given. MSG_NOSIGNAL: the
                // server may close first, which must not raise SIGPIPE.
                let n = unsafe {
                    libc::send(
                        client.as_raw_fd(),
                        bytes[sent..].as_ptr().cast(),
                        bytes.len() - sent,
                        libc::MSG_NOSIGNAL,
                    )
                };
                if n <= 0 {
                    break;
                }
                sent += n as usize;
            }
            let _ = client.shutdown(std::net::Shutdown::Write);
        });
        let mut reader = client;
        let _ = reader.read_to_end(&mut answers);
        // Joined one by one: the threads are gone, their thread-locals freed, before the
        // fuzzer looks for leaks (the scope's own wait ends before that).
        for t in [serving, sending] {
            if let Err(p) = t.join() {
                std::panic::resume_unwind(p);
            }
        }
    });
    let text = String::from_utf8(answers).expect("answers in UTF-8");
    let blocks: Vec<&str> = text.split_terminator("\n\n").collect();
    assert!(
        blocks.len() <= 64,
        "{} answers on one connection",
        blocks.len()
    );
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "an unfinished answer"
    );
    for b in blocks {
        let last = b.lines().last().unwrap_or("");
        assert!(last.starts_with("errno="), "an answer without errno: {b:?}");
    }
}
