//! Keys as WireGuard users write them: 32 bytes in standard base64 (44 characters), as
//! `wg genkey`, `wg pubkey` and `wg genpsk` print them.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// A 32-byte key: a Curve25519 private or public key, or a preshared key.
///
/// `Debug` never prints the key itself (it may be secret); `Display` prints base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub [u8; 32]);

impl Key {
    /// A new private key from the operating system's random source, clamped as Curve25519
    /// (and `wg genkey`) expects.
    ///
    /// # Errors
    ///
    /// The random source failing (`getrandom`), which does not happen on Linux ≥ 3.17.
    pub fn generate_private() -> Result<Key, String> {
        let mut k = Key::random()?;
        k.0[0] &= 248;
        k.0[31] &= 127;
        k.0[31] |= 64;
        Ok(k)
    }

    /// A new preshared key: 32 random bytes (`wg genpsk`).
    ///
    /// # Errors
    ///
    /// As [`generate_private`](Key::generate_private).
    pub fn generate_preshared() -> Result<Key, String> {
        Key::random()
    }

    fn random() -> Result<Key, String> {
        let mut b = [0u8; 32];
        getrandom::getrandom(&mut b).map_err(|e| format!("random source: {e}"))?;
        Ok(Key(b))
    }

    /// The public key of this private key (`wg pubkey`).
    pub fn public(&self) -> Key {
        let secret = boringtun::x25519::StaticSecret::from(self.0);
        Key(*boringtun::x25519::PublicKey::from(&secret).as_bytes())
    }
}

impl FromStr for Key {
    type Err = String;

    /// Parses base64 of exactly 32 bytes (surrounding whitespace allowed, as in key files).
    fn from_str(s: &str) -> Result<Key, String> {
        let s = s.trim();
        let bytes = STANDARD.decode(s).map_err(|_| {
            "not a key: expected 44 characters of base64 (as wg genkey prints)".to_string()
        })?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("not a key: {} bytes, a key has 32", b.len()))?;
        Ok(Key(key))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_derive() {
        // RFC 7748 section 6.1: Alice's private key and public key.
        let private = Key(
            *b"\x77\x07\x6d\x0a\x73\x18\xa5\x7d\x3c\x16\xc1\x72\x51\xb2\x66\x45\xdf\x4c\x2f\x87\xeb\xc0\x99\x2a\xb1\x77\xfb\xa5\x1d\xb9\x2c\x2a",
        );
        let public = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";
        assert_eq!(private.public().to_string(), public);
        let parsed: Key = format!("  {}\n", private).parse().unwrap();
        assert_eq!(parsed, private);
        for bad in [
            "",
            "abc",
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTm==",
            "%%%",
        ] {
            assert!(bad.parse::<Key>().is_err(), "{bad:?}");
        }
        let k = Key::generate_private().unwrap();
        assert_eq!(k.0[0] & 7, 0);
        assert_eq!(k.0[31] & 0xc0, 0x40);
        assert_ne!(
            Key::generate_preshared().unwrap(),
            Key::generate_preshared().unwrap()
        );
        assert_eq!(format!("{k:?}"), "Key(..)");
    }
}
