//! Keys as WireGuard users write them: 32 bytes in standard base64 (44 characters), as
//! `wg genkey`, `wg pubkey` and `wg genpsk` print them.
//!
//! A [`PublicKey`] is a name: copied freely, printed in full. A [`SecretKey`] (a private or
//! a preshared key) is a secret: never `Copy`, its bytes wiped when it is dropped, `Debug`
//! and `Display` never print it, and turning it into text gives a [`Zeroizing`] string
//! that is wiped in turn.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use zeroize::{Zeroize, Zeroizing};

/// A Curve25519 public key: who a peer is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

/// A private key or a preshared key: 32 secret bytes, wiped on drop.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// A key of these bytes (the caller wipes its own copy).
    pub fn from_bytes(bytes: [u8; 32]) -> SecretKey {
        SecretKey(bytes)
    }

    /// The bytes, for the protocol engine.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A new private key from the operating system's random source, clamped as Curve25519
    /// (and `wg genkey`) expects.
    ///
    /// # Errors
    ///
    /// The random source failing (`getrandom`), which does not happen on Linux ≥ 3.17.
    pub fn generate_private() -> Result<SecretKey, String> {
        let mut k = SecretKey::random()?;
        k.0[0] &= 248;
        k.0[31] &= 127;
        k.0[31] |= 64;
        Ok(k)
    }

    /// A new preshared key: 32 random bytes (`wg genpsk`).
    ///
    /// # Errors
    ///
    /// As [`generate_private`](SecretKey::generate_private).
    pub fn generate_preshared() -> Result<SecretKey, String> {
        SecretKey::random()
    }

    fn random() -> Result<SecretKey, String> {
        let mut k = SecretKey([0; 32]);
        getrandom::getrandom(&mut k.0).map_err(|e| format!("random source: {e}"))?;
        Ok(k)
    }

    /// The public key of this private key (`wg pubkey`).
    pub fn public(&self) -> PublicKey {
        let secret = boringtun::x25519::StaticSecret::from(self.0);
        PublicKey(*boringtun::x25519::PublicKey::from(&secret).as_bytes())
    }

    /// The key in base64, as `wg genkey` prints it, in a string wiped when dropped.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0))
    }

    /// The key in hexadecimal, as the UAPI writes it, in a string wiped when dropped.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex(&self.0))
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl PartialEq for SecretKey {
    /// In constant time.
    fn eq(&self, other: &SecretKey) -> bool {
        subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]).into()
    }
}

impl Eq for SecretKey {}

/// 32 bytes from base64 (surrounding whitespace allowed, as in key files); the decoded
/// bytes are wiped.
fn from_base64(s: &str) -> Result<[u8; 32], String> {
    let bytes = Zeroizing::new(STANDARD.decode(s.trim()).map_err(|_| {
        "not a key: expected 44 characters of base64 (as wg genkey prints)".to_string()
    })?);
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("not a key: {} bytes, a key has 32", bytes.len()))
}

impl FromStr for SecretKey {
    type Err = String;

    /// Parses base64 of exactly 32 bytes.
    fn from_str(s: &str) -> Result<SecretKey, String> {
        from_base64(s).map(SecretKey)
    }
}

impl FromStr for PublicKey {
    type Err = String;

    /// Parses base64 of exactly 32 bytes.
    fn from_str(s: &str) -> Result<PublicKey, String> {
        from_base64(s).map(PublicKey)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl PublicKey {
    /// The key in hexadecimal, as the UAPI writes it.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// 32 bytes from 64 hexadecimal digits (the UAPI's form).
///
/// # Errors
///
/// Anything else.
pub(crate) fn from_hex(s: &str) -> Result<[u8; 32], String> {
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
            _ => {
                key.zeroize();
                return Err("not a hex key".into());
            }
        }
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_derive() {
        // RFC 7748 section 6.1: Alice's private key and public key.
        let private = SecretKey(
            *b"\x77\x07\x6d\x0a\x73\x18\xa5\x7d\x3c\x16\xc1\x72\x51\xb2\x66\x45\xdf\x4c\x2f\x87\xeb\xc0\x99\x2a\xb1\x77\xfb\xa5\x1d\xb9\x2c\x2a",
        );
        let public = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";
        assert_eq!(private.public().to_string(), public);
        let parsed: SecretKey = format!("  {}\n", *private.to_base64()).parse().unwrap();
        assert_eq!(parsed, private);
        let hexed = private.to_hex();
        assert_eq!(from_hex(&hexed).unwrap(), *private.bytes());
        assert_eq!(public.parse::<PublicKey>().unwrap(), private.public());
        for bad in [
            "",
            "abc",
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTm==",
            "%%%",
        ] {
            assert!(bad.parse::<SecretKey>().is_err(), "{bad:?}");
        }
        let k = SecretKey::generate_private().unwrap();
        assert_eq!(k.0[0] & 7, 0);
        assert_eq!(k.0[31] & 0xc0, 0x40);
        assert_ne!(
            SecretKey::generate_preshared().unwrap(),
            SecretKey::generate_preshared().unwrap()
        );
        assert_eq!(format!("{k:?}"), "SecretKey(..)");
        assert!(format!("{:?}", k.public()).starts_with("PublicKey("));
    }

    /// A secret's bytes are wiped when it is dropped (read through a pointer into the
    /// storage it occupied, which stays ours: a `ManuallyDrop` runs the drop in place).
    #[test]
    fn a_secret_is_wiped_when_dropped() {
        let mut slot = std::mem::ManuallyDrop::new(SecretKey([0x5a; 32]));
        let bytes: *const [u8; 32] = &slot.0;
        // SAFETY: the value is dropped once, in place; its storage is still ours after.
        unsafe { std::mem::ManuallyDrop::drop(&mut slot) };
        // SAFETY: the storage of `slot` outlives this read (it is a local).
        assert_eq!(unsafe { std::ptr::read_volatile(bytes) }, [0u8; 32]);
    }
}
