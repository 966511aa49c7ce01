//! The MACs of handshake messages and the cookies that defend them (WireGuard whitepaper
//! §5.4.4 and §5.4.7), checked before any Diffie-Hellman is spent on a message.
//!
//! Every handshake message ends in `mac1`, keyed with a hash of our public key (the sender
//! knows whom it talks to), and `mac2`, keyed with a cookie we gave the sender's address (it
//! receives there). Under load, a message without a valid `mac2` is answered with a cookie
//! reply instead of being processed; one with a valid `mac2` passes a token bucket of its
//! source address (20 per second, 5 at once, as wireguard-go), so an address that proved it
//! is real still cannot take more than its share of the handshake thread.
//!
//! Our cookie is a MAC of the source address *and port* (the whitepaper's "IP address and
//! UDP port"), under a secret that changes every two minutes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use blake2::digest::{KeyInit, Mac};
use blake2::{Blake2s256, Blake2sMac, Digest};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::keys::PublicKey;

/// `Blake2sMac` with a 16-byte output: the protocol's `MAC`.
type Mac16 = Blake2sMac<blake2::digest::consts::U16>;

/// Message types.
pub(crate) const INITIATION: u8 = 1;
pub(crate) const RESPONSE: u8 = 2;
pub(crate) const COOKIE_REPLY: u8 = 3;
pub(crate) const DATA: u8 = 4;
/// Sizes of the handshake messages.
pub(crate) const INITIATION_LEN: usize = 148;
pub(crate) const RESPONSE_LEN: usize = 92;
pub(crate) const COOKIE_REPLY_LEN: usize = 64;

const LABEL_MAC1: &[u8] = b"mac1----";
const LABEL_COOKIE: &[u8] = b"cookie--";
/// How long a cookie secret lives (the protocol's `COOKIE_SECRET_MAX_AGE`).
const SECRET_AGE: Duration = Duration::from_secs(120);
/// The token bucket of one source address: messages per second, and how many at once.
const PER_SECOND: u64 = 20;
const BURST: u64 = 5;
/// Sources remembered at most; a new one beyond is refused until old ones expire (only
/// addresses that proved themselves with a cookie get this far).
const MAX_SOURCES: usize = 1 << 16;

/// `HASH(label || key)`.
fn hash(label: &[u8], key: &[u8; 32]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    h.update(label);
    h.update(key);
    h.finalize().into()
}

/// `MAC(key, parts...)`: keyed BLAKE2s, 16 bytes.
fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    // Keys here are 16 or 32 bytes, which BLAKE2s always takes.
    let Ok(mut m) = <Mac16 as KeyInit>::new_from_slice(key) else {
        return [0; 16];
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Constant-time comparison of two MACs.
fn same(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

/// What to do with a handshake message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Process it (its MACs are good, and its source within its share).
    Pass,
    /// Under load without a valid mac2: send this cookie reply back instead (`len` bytes of
    /// the buffer given).
    Cookie(usize),
    /// Not a handshake message of ours (bad mac1, wrong size).
    Forged,
    /// Its source is over its share; dropped unanswered.
    Limited,
}

/// The cookie secret, renewed every [`SECRET_AGE`].
struct Secret {
    key: [u8; 32],
    born: Instant,
}

/// One source's token bucket: tokens are nanoseconds of allowance.
struct Bucket {
    tokens: u64,
    last: Instant,
}

/// The checks of one identity (our public key): mac1, cookies, per-source limits. Owned by
/// the handshake thread alone: `&mut self`, no lock.
pub(crate) struct Cookies {
    mac1_key: [u8; 32],
    cookie_key: [u8; 32],
    secret: Secret,
    buckets: HashMap<IpAddr, Bucket>,
    swept: Instant,
}

impl Cookies {
    /// The checks for messages to the holder of `public`.
    pub(crate) fn new(public: &PublicKey) -> Cookies {
        Cookies {
            mac1_key: hash(LABEL_MAC1, &public.0),
            cookie_key: hash(LABEL_COOKIE, &public.0),
            secret: Secret {
                key: random(),
                born: Instant::now(),
            },
            buckets: HashMap::new(),
            swept: Instant::now(),
        }
    }

    /// The cookie of a source address and port, under the current secret.
    fn cookie(&mut self, from: SocketAddr) -> [u8; 16] {
        if self.secret.born.elapsed() >= SECRET_AGE {
            self.secret = Secret {
                key: random(),
                born: Instant::now(),
            };
        }
        // No allocation: this runs for every handshake message under a flood.
        let (v4, v6);
        let ip: &[u8] = match from.ip() {
            IpAddr::V4(a) => {
                v4 = a.octets();
                &v4
            }
            IpAddr::V6(a) => {
                v6 = a.octets();
                &v6
            }
        };
        mac(&self.secret.key, &[ip, &from.port().to_le_bytes()])
    }

    /// Checks a handshake message (initiation or response) from `from`: mac1 always; under
    /// load mac2 too, and the source's token bucket. A cookie reply goes into `out` (at least
    /// [`COOKIE_REPLY_LEN`] bytes).
    pub(crate) fn check(
        &mut self,
        msg: &[u8],
        from: SocketAddr,
        under_load: bool,
        out: &mut [u8],
    ) -> Verdict {
        let right_size = match msg.first() {
            Some(&INITIATION) => msg.len() == INITIATION_LEN,
            Some(&RESPONSE) => msg.len() == RESPONSE_LEN,
            _ => false,
        };
        if !right_size {
            return Verdict::Forged;
        }
        let (alpha, macs) = msg.split_at(msg.len() - 32);
        let (mac1, mac2) = macs.split_at(16);
        if !same(&mac(&self.mac1_key, &[alpha]), mac1) {
            return Verdict::Forged;
        }
        if !under_load {
            return Verdict::Pass;
        }
        let cookie = self.cookie(from);
        if !same(&mac(&cookie, &[alpha, mac1]), mac2) {
            return match self.reply(msg, mac1, &cookie, out) {
                Some(n) => Verdict::Cookie(n),
                None => Verdict::Forged,
            };
        }
        if self.allow(from.ip()) {
            Verdict::Pass
        } else {
            Verdict::Limited
        }
    }

    /// The cookie reply to `msg`: its sender's index, a random nonce, and the cookie
    /// encrypted with XChaCha20-Poly1305 under `HASH("cookie--" || our public key)` with
    /// the message's mac1 as associated data.
    fn reply(&self, msg: &[u8], mac1: &[u8], cookie: &[u8; 16], out: &mut [u8]) -> Option<usize> {
        let out = out.get_mut(..COOKIE_REPLY_LEN)?;
        let nonce: [u8; 24] = random();
        out[..4].copy_from_slice(&[COOKIE_REPLY, 0, 0, 0]);
        out[4..8].copy_from_slice(msg.get(4..8)?);
        out[8..32].copy_from_slice(&nonce);
        out[32..48].copy_from_slice(cookie);
        let aead = XChaCha20Poly1305::new((&self.cookie_key).into());
        let tag = aead
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), mac1, &mut out[32..48])
            .ok()?;
        out[48..64].copy_from_slice(&tag);
        Some(COOKIE_REPLY_LEN)
    }

    /// Takes one message from `ip`'s bucket (an IPv6 source by its /64, as wireguard-go).
    fn allow(&mut self, ip: IpAddr) -> bool {
        let key = match ip {
            IpAddr::V6(a) => {
                let mut o = a.octets();
                o[8..].fill(0);
                IpAddr::from(o)
            }
            v4 => v4,
        };
        let now = Instant::now();
        const COST: u64 = 1_000_000_000 / PER_SECOND;
        if now.duration_since(self.swept) >= Duration::from_secs(1) {
            self.buckets
                .retain(|_, b| now.duration_since(b.last) < Duration::from_secs(1));
            self.swept = now;
        }
        if !self.buckets.contains_key(&key) && self.buckets.len() >= MAX_SOURCES {
            return false;
        }
        let b = self.buckets.entry(key).or_insert(Bucket {
            tokens: COST * BURST,
            last: now,
        });
        let earned = u64::try_from(now.duration_since(b.last).as_nanos()).unwrap_or(u64::MAX);
        b.tokens = b.tokens.saturating_add(earned).min(COST * BURST);
        b.last = now;
        if b.tokens >= COST {
            b.tokens -= COST;
            true
        } else {
            false
        }
    }
}

/// Random bytes from the kernel (zeros only if it has none, which it always has).
fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let _ = getrandom::getrandom(&mut b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use boringtun::noise::{Tunn, TunnResult};

    use crate::keys::SecretKey;

    fn tunn(ours: &SecretKey, theirs: &SecretKey) -> Tunn {
        Tunn::new(
            boringtun::x25519::StaticSecret::from(*ours.bytes()),
            boringtun::x25519::PublicKey::from(theirs.public().0),
            None,
            None,
            7,
            None,
        )
    }

    /// Another implementation's messages pass our mac1 check; under load it gets our cookie
    /// reply, accepts it, and its next initiation carries a mac2 we accept; a forged mac1,
    /// another source port, or another size are refused.
    #[test]
    fn boringtun_passes_our_checks_and_takes_our_cookies() {
        let (server, client) = (
            SecretKey::from_bytes([0x31; 32]),
            SecretKey::from_bytes([0x42; 32]),
        );
        let mut them = tunn(&client, &server);
        let mut cookies = Cookies::new(&server.public());
        let from: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let mut buf = vec![0u8; 2048];
        let mut out = [0u8; 64];
        let TunnResult::WriteToNetwork(init) = them.format_handshake_initiation(&mut buf, false)
        else {
            panic!("no initiation")
        };
        let init = init.to_vec();
        assert_eq!(cookies.check(&init, from, false, &mut out), Verdict::Pass);
        let mut forged = init.clone();
        forged[120] ^= 1;
        assert_eq!(
            cookies.check(&forged, from, false, &mut out),
            Verdict::Forged
        );
        assert_eq!(
            cookies.check(&init[..100], from, false, &mut out),
            Verdict::Forged
        );
        // Under load: a cookie reply, which boringtun takes.
        let Verdict::Cookie(n) = cookies.check(&init, from, true, &mut out) else {
            panic!("no cookie reply under load")
        };
        assert!(matches!(
            them.decapsulate(None, &out[..n], &mut buf),
            TunnResult::Done
        ));
        let TunnResult::WriteToNetwork(again) = them.format_handshake_initiation(&mut buf, true)
        else {
            panic!("no second initiation")
        };
        let again = again.to_vec();
        assert_eq!(cookies.check(&again, from, true, &mut out), Verdict::Pass);
        // The cookie is the address's and the port's.
        let other_port: SocketAddr = "192.0.2.7:40001".parse().unwrap();
        assert!(matches!(
            cookies.check(&again, other_port, true, &mut out),
            Verdict::Cookie(_)
        ));
    }

    /// A source with a valid mac2 gets its burst, then 20 per second.
    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let mut cookies = Cookies::new(&PublicKey([1; 32]));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let passed = (0..50).filter(|_| cookies.allow(a)).count();
        assert_eq!(passed, BURST as usize);
        // Another address has its own bucket; an IPv6 /64 is one source.
        assert!(cookies.allow("192.0.2.2".parse().unwrap()));
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        let six = (0..10)
            .filter(|i| cookies.allow(v6(&format!("2001:db8::{i}"))))
            .count();
        assert_eq!(six, BURST as usize);
        std::thread::sleep(Duration::from_millis(120));
        assert!(cookies.allow(a), "50 ms earns one message");
    }
}
