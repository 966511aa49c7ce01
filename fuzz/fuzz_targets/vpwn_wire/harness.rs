//! The checks of `vpwn_wire`: vpwn's own receive pipeline and handshake handling
//! (`tunctl_vpwn::fuzzing::Pipeline`), set up with a fixed private key and two peers whose
//! sessions are made by real handshakes with two in-process remote ends (boringtun), and
//! its UAPI code; each function panics when what must hold does not.

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
use tunctl::Cidr;
use tunctl_vpwn::fuzzing::{Output, Pipeline};
use tunctl_vpwn::uapi::{Handler, SetError};
use tunctl_vpwn::{Config as DeviceConf, Counters, Peer, PublicKey, SecretKey};
use zeroize::Zeroizing;

/// The session index of this end's first peer.
const FIRST_INDEX: u32 = 0x00_0100;
/// The configured peers (each with a remote end).
const PEERS: usize = 2;
/// Where the remote ends' datagrams come from.
const FROM_V4: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 51820);
const FROM_V6: SocketAddr = SocketAddr::new(
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
    51820,
);

fn our_private() -> SecretKey {
    SecretKey::from_bytes([0x11; 32])
}

fn remote_private(peer: usize) -> SecretKey {
    SecretKey::from_bytes([0x21 + peer as u8; 32])
}

fn preshared(peer: usize) -> Option<SecretKey> {
    (peer == 1).then(|| SecretKey::from_bytes([0x5a; 32]))
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
        peers: vec![
            Peer {
                preshared_key: preshared(0),
                endpoint: Some("192.0.2.1:51820".parse().expect("a fixed endpoint")),
                keepalive: 25,
                allowed_ips: cidrs(&["10.0.0.0/24", "fd00::/64", "192.0.2.0/24"]),
                ..Peer::new(remote_private(0).public())
            },
            Peer {
                preshared_key: preshared(1),
                allowed_ips: cidrs(&["10.0.0.128/25", "0.0.0.0/0", "fd00::1/128", "2001:db8::/32"]),
                ..Peer::new(remote_private(1).public())
            },
        ],
        ..DeviceConf::default()
    })
}

/// This end's public key: what a handshake's mac1 is keyed with.
pub fn public_key() -> PublicKey {
    static KEY: OnceLock<PublicKey> = OnceLock::new();
    *KEY.get_or_init(|| our_private().public())
}

/// The index the sessions of peer `peer` carry, in every pipeline made here.
pub fn peer_index(peer: usize) -> u32 {
    FIRST_INDEX + (peer % PEERS) as u32
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

/// Every drop counter added up.
fn drops(c: &Counters) -> u64 {
    c.drops().iter().map(|(_, _, v)| v).sum()
}

/// What a pipeline knows of its peers that only authentic input may change.
fn peer_marks(p: &Pipeline) -> Vec<(Option<SocketAddr>, u64)> {
    (0..p.conf().peers.len())
        .map(|k| (p.endpoint(k), p.rx_bytes(k)))
        .collect()
}

/// The persistent pipeline and the remote ends of its two peers.
struct Rx {
    pipe: Pipeline,
    /// Remote end `k` is configured peer `k`: it seals what the fuzzer sends.
    remotes: Vec<Tunn>,
    /// Room to split a coalesced super-packet again.
    segments: Vec<Vec<u8>>,
}

impl Rx {
    fn new() -> Rx {
        let pipe = Pipeline::new(base_conf().clone(), FIRST_INDEX);
        let our = boringtun::x25519::PublicKey::from(public_key().0);
        let remotes = (0..PEERS)
            .map(|k| {
                let secret = boringtun::x25519::StaticSecret::from(*remote_private(k).bytes());
                let public = boringtun::x25519::PublicKey::from(&secret);
                // Never under load: only this end is under test.
                let limiter = Arc::new(RateLimiter::new(&public, u64::MAX));
                Tunn::new(
                    secret,
                    our,
                    preshared(k).map(|k| *k.bytes()),
                    None,
                    0x00ab_0000 + k as u32,
                    Some(limiter),
                )
            })
            .collect();
        let mut rx = Rx {
            pipe,
            remotes,
            segments: vec![vec![0u8; 65536 + 64]; 64],
        };
        for k in 0..PEERS {
            rx.handshake(k, FROM_V4, false);
        }
        rx
    }

    /// Remote end `k` makes a new session with this end, through the pipeline (taking a
    /// cookie first when it is under load).
    fn handshake(&mut self, k: usize, from: SocketAddr, under_load: bool) {
        let mut out = vec![0u8; 256];
        for _ in 0..4 {
            let init = match self.remotes[k].format_handshake_initiation(&mut out, true) {
                TunnResult::WriteToNetwork(d) => d.to_vec(),
                other => panic!("remote {k} made no initiation: {other:?}"),
            };
            let shed = self.pipe.counters().drop_handshake_rate;
            let got = self.pipe.receive(from, &init, 0, under_load);
            assert!(got.delivered.is_empty(), "an initiation delivered a packet");
            if got.sent.is_empty() && under_load && self.pipe.counters().drop_handshake_rate == shed + 1
            {
                // Its source is over its share of handshakes under load (20 a second): the
                // remote end tries again later; the session it had stays.
                return;
            }
            match got.sent.as_slice() {
                [(response, to, Some(p))] if *p == k && *to == from => {
                    let keepalive = match self.remotes[k].decapsulate(None, response, &mut out) {
                        TunnResult::WriteToNetwork(d) => d.to_vec(),
                        other => panic!("remote {k} took no response: {other:?}"),
                    };
                    let before = (self.pipe.rx_bytes(k), drops(&self.pipe.counters()));
                    let got = self.pipe.receive(from, &keepalive, 0, false);
                    assert!(got.delivered.is_empty() && got.sent.is_empty(), "a keepalive");
                    assert_eq!(
                        (self.pipe.rx_bytes(k), drops(&self.pipe.counters())),
                        (before.0 + keepalive.len() as u64, before.1),
                        "the keepalive of {k} is heard"
                    );
                    assert_eq!(self.pipe.endpoint(k), Some(from));
                    // The peer's first datagram under the new session confirmed it.
                    let since = self.pipe.since_handshake(k);
                    assert!(since.is_some_and(|d| d < Duration::from_secs(60)));
                    return;
                }
                [(cookie, to, None)] if *to == from => {
                    assert!(under_load, "a cookie reply when not under load");
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

/// Nothing a stranger sends is delivered or answered (when not under load), nothing moves
/// a peer or counts as heard from it, and every datagram is dropped and counted once.
fn assert_unauthenticated(pipe: &Pipeline, before: (u64, Vec<(Option<SocketAddr>, u64)>), got: &Output, datagrams: usize) {
    assert!(got.delivered.is_empty(), "forged input delivered: {:?}", got.delivered);
    assert!(got.sent.is_empty(), "forged input answered: {:?}", got.sent);
    assert_eq!(peer_marks(pipe), before.1, "forged input moved a peer");
    assert_eq!(
        drops(&pipe.counters()) - before.0,
        datagrams as u64,
        "one drop per datagram"
    );
}

/// `data` as one received buffer of datagrams of `segment` bytes (UDP GRO; 0: a single
/// datagram). Nothing in it can be authenticated.
pub fn gro_buffer(segment: usize, data: &[u8], from_v6: bool) {
    let mut rx = rx();
    let before = (drops(&rx.pipe.counters()), peer_marks(&rx.pipe));
    let got = rx.pipe.receive(sender(from_v6), data, segment, false);
    // An empty buffer is one (empty) datagram.
    let count = data
        .chunks(if segment == 0 { data.len().max(1) } else { segment })
        .count()
        .max(1);
    assert_unauthenticated(&rx.pipe, before, &got, count);
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
/// Checked: with the buffer split at the datagrams' own boundaries, exactly the untampered
/// packets the model says are delivered, in order, each peer's received bytes grow by its
/// authenticated datagrams, and the drops are counted by cause. Whatever the split, nothing
/// is delivered that was not sent, nothing twice, and data is never answered.
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
    if buf.is_empty() || buf.len() > 65535 {
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
    let conf = rx.pipe.conf().clone();
    let before = rx.pipe.counters();
    let heard_before: Vec<u64> = (0..PEERS).map(|k| rx.pipe.rx_bytes(k)).collect();
    let got = rx.pipe.receive(from, &buf, segment, false);
    assert!(got.sent.is_empty(), "data answered: {:?}", got.sent);
    // Split at the datagrams' own boundaries, only a tampered type byte makes a handshake
    // message of a data message.
    assert!(
        !exact || got.handshakes <= usize::from(tampered.is_some()),
        "data taken for a handshake"
    );
    let after = rx.pipe.counters();
    let mut want = Vec::new();
    let (mut not_allowed, mut malformed) = (0u64, 0u64);
    let mut heard = vec![0u64; PEERS];
    for (i, (k, plain)) in plains.iter().enumerate() {
        if tampered == Some(i) {
            continue;
        }
        match expected_plain(plain) {
            Ok(None) => heard[*k] += bounds[i].len() as u64,
            Ok(Some((src, packet))) => {
                heard[*k] += bounds[i].len() as u64;
                if owner(&conf, src) == Some(*k) {
                    want.push(packet.to_vec());
                } else {
                    not_allowed += 1;
                }
            }
            Err(()) => malformed += 1,
        }
    }
    if exact {
        assert_eq!(got.delivered, want, "the packets delivered");
        assert_eq!(after.drop_not_allowed - before.drop_not_allowed, not_allowed);
        // A tampered datagram may have lost its shape rather than its tag.
        let malformed_seen = after.drop_malformed - before.drop_malformed;
        assert!(
            malformed_seen == malformed
                || (tampered.is_some() && malformed_seen == malformed + 1),
            "{malformed_seen} malformed, {malformed} expected"
        );
        assert_eq!(
            drops(&after) - drops(&before),
            not_allowed + malformed + u64::from(tampered.is_some()),
            "one drop per datagram not delivered"
        );
        for k in 0..PEERS {
            assert_eq!(rx.pipe.rx_bytes(k) - heard_before[k], heard[k], "heard from {k}");
            if heard[k] > 0 {
                assert_eq!(rx.pipe.endpoint(k), Some(from), "peer {k} is where it was heard");
            }
        }
    } else {
        let mut unseen = want.clone();
        for p in &got.delivered {
            let Some(i) = unseen.iter().position(|x| x == p) else {
                panic!("delivered what was not sent, or twice: {p:?}");
            };
            unseen.swap_remove(i);
        }
    }
    let delivered: Vec<&[u8]> = got.delivered.iter().map(Vec::as_slice).collect();
    coalesce(&delivered, &mut rx.segments);
    if replay {
        let before = (drops(&rx.pipe.counters()), peer_marks(&rx.pipe));
        let again = rx.pipe.receive(from, &buf, segment, false);
        let count = buf
            .chunks(if segment == 0 { buf.len() } else { segment })
            .count();
        assert_unauthenticated(&rx.pipe, before, &again, count);
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

/// Remote end `peer` makes a new session with this end (with a cookie round when under
/// load); the pipeline must answer it and take its keepalive.
pub fn rehandshake(peer: usize, from_v6: bool, under_load: bool) {
    let mut rx = rx();
    rx.handshake(peer % PEERS, sender(from_v6), under_load);
}

/// `messages` through a pipeline with no session (same keys and peers), deterministic
/// whatever came before, under load or not: handshake-shaped messages, their mac1 perhaps
/// valid, but nothing in them can be authenticated. Only cookie replies may come back
/// (under load, to a message with a valid mac1), and nothing else changes.
pub fn fresh(messages: &[&[u8]], from_v6: bool, under_load: bool) {
    let mut pipe = Pipeline::new(base_conf().clone(), FIRST_INDEX);
    let from = sender(from_v6);
    for m in messages {
        let before = (drops(&pipe.counters()), peer_marks(&pipe));
        let got = pipe.receive(from, m, 0, under_load);
        assert!(got.delivered.is_empty(), "a handshake message delivered a packet");
        assert_eq!(peer_marks(&pipe), before.1, "forged input moved a peer");
        match got.sent.as_slice() {
            [] => assert_eq!(drops(&pipe.counters()) - before.0, 1, "dropped once"),
            [(c, to, None)] => {
                assert!(under_load, "a cookie reply when not under load");
                assert_eq!(*to, from);
                assert_eq!(c.len(), 64, "a cookie reply: {c:?}");
                assert_eq!(c[..4], 3u32.to_le_bytes(), "a cookie reply: {c:?}");
                assert_eq!(c[4..8], m[4..8], "to the message's sender index");
            }
            other => panic!("forged input answered: {other:?}"),
        }
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

/// `conf` without its private key: a pipeline of it needs no Diffie-Hellman.
fn keyless(conf: &DeviceConf) -> DeviceConf {
    let mut conf = conf.clone();
    conf.private_key = None;
    conf
}

/// The routes of a pipeline configured with `conf` (after the base one) agree with a
/// brute-force longest-prefix match, at each allowed network's first and last address and
/// at a few fixed ones; peers kept from the base keep their state.
fn check_table(conf: &DeviceConf) {
    let mut pipe = Pipeline::new(keyless(base_conf()), FIRST_INDEX + 0x1000);
    let kept = pipe.configure(keyless(conf), &[]);
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
        assert_eq!(pipe.route(a), owner(conf, a), "the route of {a}");
    }
    assert_eq!(kept.len(), conf.peers.len());
    let base = base_conf();
    for (i, p) in conf.peers.iter().enumerate() {
        assert_eq!(pipe.by_key(&p.public_key), Some(i));
        let index = pipe.peer_index(i).expect("a peer's index");
        assert_eq!(pipe.by_index(index), Some(i));
        let same = base.peers.iter().position(|q| {
            q.public_key == p.public_key
                && q.preshared_key == p.preshared_key
                && q.keepalive == p.keepalive
        });
        if let Some(j) = same {
            assert_eq!(kept[i], Some(j), "peer {i} not kept");
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
    match tunctl_vpwn::uapi::apply_set(base, text.split('\n')) {
        Err(SetError { errno, .. }) => {
            assert!(
                errno == -libc::EINVAL || errno == -libc::EPROTO,
                "errno {errno}"
            );
        }
        Ok(applied) => {
            let next = applied.config;
            check_conf(&next);
            check_table(&next);
            let shown = tunctl_vpwn::uapi::get_response(&next, next.listen_port, &[]);
            let again = tunctl_vpwn::uapi::apply_set(
                &DeviceConf::default(),
                shown.lines().filter(|l| !read_only(l)),
            );
            assert_eq!(
                again.as_ref().map(|a| &a.config),
                Ok(&next),
                "set again from:\n{}",
                shown.as_str()
            );
        }
    }
}

/// The UAPI server's state for [`uapi_conn`]: a configuration, live.
struct ConnHandler {
    pipe: Mutex<Pipeline>,
}

impl Handler for ConnHandler {
    fn get(&self) -> Zeroizing<String> {
        let p = self.pipe.lock().unwrap_or_else(|p| p.into_inner());
        tunctl_vpwn::uapi::get_response(p.conf(), p.conf().listen_port, &[])
    }

    fn set(&self, lines: &[Zeroizing<String>]) -> Result<(), SetError> {
        let mut p = self.pipe.lock().unwrap_or_else(|p| p.into_inner());
        let applied =
            tunctl_vpwn::uapi::apply_set(p.conf(), lines.iter().map(|l| l.as_str()))?;
        check_conf(&applied.config);
        p.configure(keyless(&applied.config), &applied.endpoints);
        Ok(())
    }

    fn counters(&self) -> String {
        "drop_auth=0\n".into()
    }
}

/// `bytes` as what a client sends on one UAPI connection, served by the server's own
/// connection code over a socket pair, with a handler that applies `set=1` to a live
/// pipeline. The client sends everything, then closes its side, and reads the answers to
/// the end.
///
/// Checked: the server ends (its reads are bounded); every answer ends with an `errno`
/// line and a blank line; there are no more answers than the server takes requests.
pub fn uapi_conn(bytes: &[u8]) {
    static INDEX: AtomicU32 = AtomicU32::new(FIRST_INDEX + 0x4000);
    let first = INDEX.fetch_add(0x100, Ordering::Relaxed) & 0x00ff_ffff;
    let handler = ConnHandler {
        pipe: Mutex::new(Pipeline::new(keyless(base_conf()), first)),
    };
    let (client, server) = UnixStream::pair().expect("a socket pair");
    // As the UAPI socket sets them for each client.
    let _ = server.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = server.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = client.set_read_timeout(Some(Duration::from_secs(10)));
    let mut answers = Vec::new();
    std::thread::scope(|s| {
        let handler = &handler;
        let serving = s.spawn(move || {
            let _ = tunctl_vpwn::fuzzing::serve_uapi(server, handler);
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
