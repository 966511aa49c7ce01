//! What br reads of an Ethernet frame: the two addresses, the VLAN it belongs to, the tags it
//! skips to find the length of the header, and what makes a frame one a bridge must not
//! forward. Pure functions over bytes: nothing here trusts a length it has not checked.

use std::fmt;

/// The shortest frame taken: two addresses and an EtherType.
pub const MIN_FRAME: usize = 14;

/// A MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The broadcast address.
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// Group bit set: multicast or broadcast.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// All zeros.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    /// What may be learned as a source: a unicast address other than zero (as the Linux
    /// bridge's `is_valid_ether_addr`).
    pub fn is_valid_source(&self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }

    /// IEEE 802.1D link-local, 01:80:C2:00:00:00 to 0F (STP, pause, LACP, 802.1X, LLDP).
    pub fn is_link_local(&self) -> bool {
        self.0[..5] == [0x01, 0x80, 0xc2, 0x00, 0x00] && self.0[5] & 0xf0 == 0
    }

    /// The Bridge Group Address, 01:80:C2:00:00:00, where spanning-tree BPDUs go. A bridge
    /// that runs no STP forwards them (as the Linux bridge with STP off does), so that the
    /// bridges around it still see a loop through it.
    pub fn is_stp(&self) -> bool {
        self.0 == [0x01, 0x80, 0xc2, 0x00, 0x00, 0x00]
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a frame is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Shorter than an Ethernet header.
    Runt,
    /// Its source is multicast, broadcast or zero.
    InvalidSource,
    /// Its destination is IEEE link-local (01:80:C2:00:00:01 to 0F: pause, LACP, 802.1X,
    /// LLDP, ...): kept local, as by the Linux bridge's default `group_fwd_mask`; br has no
    /// local stack, so it is dropped.
    LinkLocal,
}

/// The parts of a frame br uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Destination address.
    pub dst: Mac,
    /// Source address.
    pub src: Mac,
    /// Bytes before the payload: 14, plus 4 per 802.1Q/802.1ad tag (at most two are
    /// skipped; a frame cut inside its tags counts what it has).
    pub len: usize,
    /// The EtherType after the tags (0 if the frame ends inside them).
    pub ethertype: u16,
    /// The VLAN ID of the outer tag (802.1Q or 802.1ad), 0 for an untagged or
    /// priority-tagged frame: the table learns and looks addresses up per VLAN.
    pub vlan: u16,
}

const TPID_8021Q: u16 = 0x8100;
const TPID_8021AD: u16 = 0x88a8;

/// Reads a frame's header, or says why the frame must not be forwarded.
///
/// # Errors
///
/// [`Refusal`]: a runt, an invalid source, a link-local destination other than the Bridge
/// Group Address (STP BPDUs are forwarded: br runs no STP).
pub fn parse(frame: &[u8]) -> Result<Header, Refusal> {
    if frame.len() < MIN_FRAME {
        return Err(Refusal::Runt);
    }
    let mac = |at: usize| {
        let mut m = [0u8; 6];
        m.copy_from_slice(&frame[at..at + 6]);
        Mac(m)
    };
    let (dst, src) = (mac(0), mac(6));
    if !src.is_valid_source() {
        return Err(Refusal::InvalidSource);
    }
    if dst.is_link_local() && !dst.is_stp() {
        return Err(Refusal::LinkLocal);
    }
    let mut len = 14;
    let mut ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let mut vlan = 0;
    for tag in 0..2 {
        if ethertype != TPID_8021Q && ethertype != TPID_8021AD {
            break;
        }
        match frame.get(len..len + 4) {
            Some(t) => {
                if tag == 0 {
                    vlan = u16::from_be_bytes([t[0], t[1]]) & 0x0fff;
                }
                ethertype = u16::from_be_bytes([t[2], t[3]]);
                len += 4;
            }
            None => {
                ethertype = 0;
                break;
            }
        }
    }
    Ok(Header {
        dst,
        src,
        len,
        ethertype,
        vlan,
    })
}

/// As its text, `aa:bb:cc:dd:ee:ff`.
impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
impl std::str::FromStr for Mac {
    type Err = String;

    fn from_str(s: &str) -> Result<Mac, String> {
        let mut m = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut m {
            let p = parts
                .next()
                .ok_or_else(|| format!("{s:?}: not a MAC address"))?;
            if p.len() != 2 {
                return Err(format!("{s:?}: not a MAC address"));
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| format!("{s:?}: not a MAC address"))?;
        }
        if parts.next().is_some() {
            return Err(format!("{s:?}: not a MAC address"));
        }
        Ok(Mac(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: [u8; 6], src: [u8; 6], rest: &[u8]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(rest);
        f
    }

    #[test]
    fn headers_tags_and_refusals() {
        let a = [2, 0, 0, 0, 0, 1];
        let h = parse(&frame([0xff; 6], a, &[0x08, 0x06, 0, 1])).unwrap();
        assert_eq!(
            (h.dst, h.src, h.len, h.ethertype),
            (Mac::BROADCAST, Mac(a), 14, 0x0806)
        );
        assert_eq!(h.vlan, 0);
        // Priority 7, VLAN 5.
        let tagged = frame([2; 6], a, &[0x81, 0x00, 0xe0, 0x05, 0x08, 0x00, 0x45]);
        let t = parse(&tagged).unwrap();
        assert_eq!((t.len, t.ethertype, t.vlan), (18, 0x0800, 5));
        // Priority-tagged (VLAN 0): untagged for the table.
        let prio = frame([2; 6], a, &[0x81, 0x00, 0xa0, 0x00, 0x08, 0x00]);
        assert_eq!(parse(&prio).unwrap().vlan, 0);
        // QinQ: the outer (service) tag's VLAN.
        let qinq = frame([2; 6], a, &[0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x86, 0xdd]);
        let q = parse(&qinq).unwrap();
        assert_eq!((q.len, q.ethertype, q.vlan), (22, 0x86dd, 1));
        let cut = frame([2; 6], a, &[0x81, 0x00, 0x00]);
        assert_eq!(parse(&cut).unwrap().ethertype, 0);
        assert_eq!(parse(&[0u8; 13]), Err(Refusal::Runt));
        assert_eq!(
            parse(&frame([2; 6], [0; 6], &[0, 0])),
            Err(Refusal::InvalidSource)
        );
        assert_eq!(
            parse(&frame([2; 6], [1, 0, 0, 0, 0, 1], &[0, 0])),
            Err(Refusal::InvalidSource)
        );
        assert_eq!(
            parse(&frame([0x01, 0x80, 0xc2, 0, 0, 0x0e], a, &[0, 0])),
            Err(Refusal::LinkLocal)
        );
        // STP BPDUs (the Bridge Group Address) are forwarded: br runs no STP.
        let bpdu = parse(&frame([0x01, 0x80, 0xc2, 0, 0, 0], a, &[0, 0x26])).unwrap();
        assert!(bpdu.dst.is_stp() && bpdu.dst.is_multicast());
        // 01:80:C2:00:00:10 is not link-local.
        assert!(parse(&frame([0x01, 0x80, 0xc2, 0, 0, 0x10], a, &[0, 0])).is_ok());
        assert_eq!("02:00:00:00:00:01".parse::<Mac>().unwrap(), Mac(a));
        assert!("02:00:00:00:00".parse::<Mac>().is_err());
    }
}
