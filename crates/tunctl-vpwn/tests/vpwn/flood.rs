//! A handshake flood from a third host does not stall a tunnel.
//!
//! Three namespaces: the server S, its real client C (a veth each way), and an attacker A
//! on a veth of its own to S. A floods S's port with handshake initiations whose mac1 is
//! valid (it knows S's public key): from spoofed source addresses (a raw socket), or from
//! its own address with a valid mac2 too (it first gets a cookie from S, as anyone whose
//! address is real can). Meanwhile C sends a UDP probe through the tunnel every 20 ms and
//! S's end echoes it: the loss and round trips are what C's user would see. Targets (the
//! security issue's): loss ≤ 5 % under the spoofed flood, ≤ 10 % under the cookie-holding
//! one, and a restarted C gets its handshake through within 2 × REKEY_TIMEOUT (10 s).
//!
//! The flood rate is `VPWN_FLOOD_RATE` messages per second (default 40 000, about what one
//! Python process sends); the figures are printed.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blake2::digest::{KeyInit, Mac};
use blake2::{Blake2s256, Blake2sMac, Digest};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::common::{self, ip_ok, TestNs};
use super::{config, crosses_within, udp_in};
use tunctl_vpwn::{Options, PublicKey, SecretKey, Tunnel};

type Mac16 = Blake2sMac<blake2::digest::consts::U16>;

const S_PORT: u16 = 51910;
const S_ADDR: &str = "10.221.1.1";
const S_ON_A: &str = "10.221.2.1";
const A_ADDR: &str = "10.221.2.2";

fn hash(label: &[u8], key: &[u8; 32]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    h.update(label);
    h.update(key);
    h.finalize().into()
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut m = <Mac16 as KeyInit>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// A cheap deterministic generator: the flood's bytes need not be good randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let r = self.next().to_le_bytes();
            c.copy_from_slice(&r[..c.len()]);
        }
    }
}

/// Handshake initiations for S: random contents (so they decrypt to nothing), a valid
/// mac1, and a valid mac2 once a cookie is known.
struct Forger {
    mac1_key: [u8; 32],
    cookie_key: [u8; 32],
    cookie: Option<[u8; 16]>,
    rng: Rng,
    next_index: u32,
}

impl Forger {
    fn new(server: &PublicKey) -> Forger {
        Forger {
            mac1_key: hash(b"mac1----", &server.0),
            cookie_key: hash(b"cookie--", &server.0),
            cookie: None,
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            next_index: 1,
        }
    }

    /// One initiation; its sender index and mac1.
    fn initiation(&mut self, msg: &mut [u8; 148]) -> (u32, [u8; 16]) {
        self.rng.fill(&mut msg[8..116]);
        msg[..4].copy_from_slice(&[1, 0, 0, 0]);
        let index = self.next_index;
        self.next_index = self.next_index.wrapping_add(1);
        msg[4..8].copy_from_slice(&index.to_le_bytes());
        let mac1 = mac(&self.mac1_key, &[&msg[..116]]);
        msg[116..132].copy_from_slice(&mac1);
        let mac2 = self.cookie.map_or([0; 16], |c| mac(&c, &[&msg[..132]]));
        msg[132..148].copy_from_slice(&mac2);
        (index, mac1)
    }

    /// Takes the cookie out of S's cookie reply to a message whose mac1 was `mac1`.
    fn take_cookie(&mut self, reply: &[u8], mac1: &[u8; 16]) -> bool {
        if reply.len() != 64 || reply[0] != 3 {
            return false;
        }
        let mut cookie = [0u8; 16];
        cookie.copy_from_slice(&reply[32..48]);
        let aead = XChaCha20Poly1305::new((&self.cookie_key).into());
        let ok = aead
            .decrypt_in_place_detached(
                XNonce::from_slice(&reply[8..32]),
                mac1,
                &mut cookie,
                reply[48..64].into(),
            )
            .is_ok();
        if ok {
            self.cookie = Some(cookie);
        }
        ok
    }
}

/// An IPv4/UDP packet from `src:sport` to `dst:dport` (the kernel fills the IP checksum;
/// a UDP checksum of 0 is none).
fn spoofed(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

fn flood_rate() -> u64 {
    std::env::var("VPWN_FLOOD_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40_000)
}

/// Paces a loop to `rate` per second: how many to send now.
struct Pace {
    start: Instant,
    sent: u64,
    rate: u64,
}

impl Pace {
    fn due(&mut self) -> u64 {
        let want = (self.start.elapsed().as_secs_f64() * self.rate as f64) as u64;
        let n = want.saturating_sub(self.sent).min(256);
        self.sent += n;
        n
    }
}

/// A flood running on its own thread until dropped; `sent` counts its messages.
struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flood {
    /// Initiations with a valid mac1 from random spoofed sources (10.223.0.0/16, random
    /// ports), through a raw socket in A.
    fn spoofed(a: &TestNs, server: &PublicKey) -> Flood {
        let raw =
            a.ns.run(|| {
                let s = socket2::Socket::new(
                    socket2::Domain::IPV4,
                    socket2::Type::RAW,
                    Some(socket2::Protocol::UDP),
                )?;
                s.set_header_included_v4(true)?;
                Ok::<_, std::io::Error>(s)
            })
            .unwrap()
            .expect("a raw socket in A");
        let mut forger = Forger::new(server);
        let dst: Ipv4Addr = S_ON_A.parse().unwrap();
        Flood::run(move |sent| {
            let mut msg = [0u8; 148];
            forger.initiation(&mut msg);
            let r = forger.rng.next();
            let src = Ipv4Addr::new(10, 223, (r >> 8) as u8, r as u8);
            let packet = spoofed(src, 1024 + (r >> 16) as u16 % 60000, dst, S_PORT, &msg);
            let to = SocketAddr::from((dst, 0));
            if raw.send_to(&packet, &to.into()).is_ok() {
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    }

    /// Initiations with a valid mac1 and mac2 from A's own address: first a burst that puts
    /// S under load, until S's cookie reply gives A a cookie; then the flood.
    fn with_cookie(a: &TestNs, server: &PublicKey) -> Flood {
        let sock = udp_in(a, A_ADDR, 40000);
        sock.set_read_timeout(Some(Duration::from_millis(2)))
            .unwrap();
        let to: SocketAddr = format!("{S_ON_A}:{S_PORT}").parse().unwrap();
        let mut forger = Forger::new(server);
        let mut macs: HashMap<u32, [u8; 16]> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut reply = [0u8; 128];
        while forger.cookie.is_none() {
            assert!(Instant::now() < deadline, "no cookie from S in 10 s");
            for _ in 0..200 {
                let mut msg = [0u8; 148];
                let (index, mac1) = forger.initiation(&mut msg);
                macs.insert(index, mac1);
                let _ = sock.send_to(&msg, to);
            }
            while let Ok(n) = sock.recv(&mut reply) {
                let index = u32::from_le_bytes([reply[4], reply[5], reply[6], reply[7]]);
                if let Some(mac1) = macs.get(&index) {
                    if forger.take_cookie(&reply[..n], mac1) {
                        break;
                    }
                }
            }
        }
        Flood::run(move |sent| {
            let mut msg = [0u8; 148];
            forger.initiation(&mut msg);
            if sock.send_to(&msg, to).is_ok() {
                sent.fetch_add(1, Ordering::Relaxed);
            }
            // Whatever S answers is not read: the socket's buffer takes it or drops it.
        })
    }

    fn run(mut one: impl FnMut(&AtomicU64) + Send + 'static) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (s, n) = (Arc::clone(&stop), Arc::clone(&sent));
        let rate = flood_rate();
        let thread = std::thread::spawn(move || {
            let mut pace = Pace {
                start: Instant::now(),
                sent: 0,
                rate,
            };
            // Bounded: stopped by the test, and never past a minute.
            while !s.load(Ordering::Relaxed) && pace.start.elapsed() < Duration::from_secs(60) {
                let due = pace.due();
                if due == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
                for _ in 0..due {
                    one(&n);
                }
            }
        });
        Flood {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// S, C and A: veths S–C (10.221.1.0/24) and S–A (10.221.2.0/24). S routes everything else
/// (the spoofed sources) towards A, and takes spoofed sources (rp_filter off), as a server
/// on the internet does.
struct Hosts {
    s: TestNs,
    c: TestNs,
    a: TestNs,
}

fn hosts() -> Option<Hosts> {
    if !common::privileged() {
        return None;
    }
    let (s, c, a) = (TestNs::new(), TestNs::new(), TestNs::new());
    for (other, net) in [(&c, "10.221.1"), (&a, "10.221.2")] {
        let (vs, vo) = (common::unique("fs"), common::unique("fo"));
        ip_ok(
            &s.name,
            &[
                "link",
                "add",
                &vs,
                "type",
                "veth",
                "peer",
                "name",
                &vo,
                "netns",
                &other.name,
            ],
        );
        ip_ok(
            &s.name,
            &["addr", "add", &format!("{net}.1/24"), "dev", &vs],
        );
        ip_ok(
            &other.name,
            &["addr", "add", &format!("{net}.2/24"), "dev", &vo],
        );
        ip_ok(&s.name, &["link", "set", &vs, "up"]);
        ip_ok(&other.name, &["link", "set", &vo, "up"]);
        ip_ok(&other.name, &["link", "set", "lo", "up"]);
    }
    ip_ok(&s.name, &["link", "set", "lo", "up"]);
    ip_ok(&s.name, &["route", "add", "default", "via", A_ADDR]);
    s.ns.run(|| {
        for key in ["all", "default"] {
            std::fs::write(format!("/proc/sys/net/ipv4/conf/{key}/rp_filter"), "0")?;
        }
        for dev in std::fs::read_dir("/proc/sys/net/ipv4/conf")? {
            let path = dev?.path().join("rp_filter");
            std::fs::write(path, "0")?;
        }
        Ok::<_, std::io::Error>(())
    })
    .unwrap()
    .unwrap();
    Some(Hosts { s, c, a })
}

/// C's end: 10.222.0.2, S's endpoint behind the veth.
fn client(h: &Hosts, kc: &SecretKey, ks: &SecretKey, port: u16) -> Tunnel {
    Tunnel::up(Options {
        name: common::unique("fc"),
        namespace: h.c.ns.clone(),
        device_namespace: None,
        config: config(
            kc,
            "10.222.0.2/24",
            ks.public(),
            Some(&format!("{S_ADDR}:{S_PORT}")),
            "10.222.0.1/32",
            port,
            None,
        ),
    })
    .unwrap()
}

/// What C's user sees: probes every 20 ms through the tunnel for `for_`, echoed by S.
struct Seen {
    sent: usize,
    lost: usize,
    rtt_avg: Duration,
    rtt_max: Duration,
}

impl Seen {
    fn loss(&self) -> f64 {
        self.lost as f64 / self.sent.max(1) as f64
    }
}

fn probe(h: &Hosts, port: u16, for_: Duration) -> Seen {
    let echo = udp_in(&h.s, "10.222.0.1", port);
    echo.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let d = Arc::clone(&done);
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !d.load(Ordering::Relaxed) {
            if let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        }
    });
    let sock = udp_in(&h.c, "10.222.0.2", 0);
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let to: SocketAddr = format!("10.222.0.1:{port}").parse().unwrap();
    let mut sent_at: HashMap<u64, Instant> = HashMap::new();
    let mut rtts = Vec::new();
    let start = Instant::now();
    let mut seq = 0u64;
    let mut buf = [0u8; 64];
    // Sending stops at `for_`; replies are waited for one more second.
    while start.elapsed() < for_ + Duration::from_secs(1) {
        if start.elapsed() < for_ && start.elapsed() >= Duration::from_millis(20 * seq) {
            let _ = sock.send_to(&seq.to_le_bytes(), to);
            sent_at.insert(seq, Instant::now());
            seq += 1;
        }
        if let Ok(n) = sock.recv(&mut buf) {
            if n == 8 {
                let s = u64::from_le_bytes(buf[..8].try_into().unwrap());
                if let Some(t) = sent_at.remove(&s) {
                    if t.elapsed() < Duration::from_secs(1) {
                        rtts.push(t.elapsed());
                    }
                }
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = server.join();
    let sent = seq as usize;
    Seen {
        sent,
        lost: sent - rtts.len(),
        rtt_avg: rtts.iter().sum::<Duration>() / rtts.len().max(1) as u32,
        rtt_max: rtts.iter().max().copied().unwrap_or_default(),
    }
}

#[test]
fn a_handshake_flood_does_not_stall_the_tunnel() {
    let Some(h) = hosts() else {
        return;
    };
    let (ks, kc) = (
        SecretKey::generate_private().unwrap(),
        SecretKey::generate_private().unwrap(),
    );
    let server = Tunnel::up(Options {
        name: common::unique("fs"),
        namespace: h.s.ns.clone(),
        device_namespace: None,
        config: config(
            &ks,
            "10.222.0.1/24",
            kc.public(),
            None,
            "10.222.0.2/32",
            S_PORT,
            None,
        ),
    })
    .unwrap();
    let c = client(&h, &kc, &ks, 51911);
    assert!(crosses_within(
        &h.c,
        "10.222.0.2",
        &h.s,
        "10.222.0.1",
        7201,
        Duration::from_secs(5)
    ));
    let quiet = probe(&h, 7202, Duration::from_secs(2));
    eprintln!(
        "no flood: {}/{} probes lost, rtt avg {:?} max {:?}",
        quiet.lost, quiet.sent, quiet.rtt_avg, quiet.rtt_max
    );

    let flood = Flood::spoofed(&h.a, &ks.public());
    let seen = probe(&h, 7203, Duration::from_secs(4));
    let sent = flood.sent();
    drop(flood);
    let counters = server.counters();
    eprintln!(
        "spoofed mac1 flood ({sent} initiations): {}/{} probes lost ({:.1} %), rtt avg {:?} max {:?}; server dropped {}",
        seen.lost,
        seen.sent,
        seen.loss() * 100.0,
        seen.rtt_avg,
        seen.rtt_max,
        counters.drops_text()
    );
    assert!(sent > 20_000, "the flood ran ({sent} sent)");
    assert!(seen.loss() <= 0.05, "loss under the spoofed flood");

    let flood = Flood::with_cookie(&h.a, &ks.public());
    let seen = probe(&h, 7204, Duration::from_secs(4));
    let before = server.counters();
    eprintln!(
        "flood with a valid mac2 ({} initiations): {}/{} probes lost ({:.1} %), rtt avg {:?} max {:?}; server dropped {}",
        flood.sent(),
        seen.lost,
        seen.sent,
        seen.loss() * 100.0,
        seen.rtt_avg,
        seen.rtt_max,
        before.drops_text()
    );
    assert!(
        seen.loss() <= 0.10,
        "loss under the flood with a valid mac2"
    );

    // C restarts (a new session, another port) while the flood goes on.
    c.down();
    let restarted = Instant::now();
    let _c = client(&h, &kc, &ks, 51912);
    let through = crosses_within(
        &h.c,
        "10.222.0.2",
        &h.s,
        "10.222.0.1",
        7205,
        Duration::from_secs(10),
    );
    let took = restarted.elapsed();
    eprintln!(
        "a restarted client under the flood: {} after {took:?} ({} initiations so far)",
        if through { "through" } else { "not through" },
        flood.sent()
    );
    drop(flood);
    assert!(
        through,
        "a restarted client gets a handshake within 2 x REKEY_TIMEOUT"
    );
}
