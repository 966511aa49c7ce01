//! The 4-byte packet-information header (`struct tun_pi`) that precedes each packet on a
//! device created without `IFF_NO_PI`.

use crate::error::{Error, ErrorKind, Result};

/// `struct tun_pi { __u16 flags; __be16 proto; }`: the original's `header/1`.
///
/// `flags` is in host byte order; `proto` is the EtherType in network byte order on the wire
/// and is decoded here to its numeric value (0x0800 for IPv4, 0x86DD for IPv6). The Erlang
/// original decoded it byte-swapped (IPv4 came out as 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketInfo {
    /// `TUN_PKT_STRIP` (1) when the kernel had to truncate the packet to fit the read buffer.
    pub flags: u16,
    /// The EtherType of the packet (`ETH_P_*`).
    pub proto: u16,
}

impl PacketInfo {
    /// Length of the header in bytes.
    pub const LEN: usize = 4;
    /// `TUN_PKT_STRIP`: the packet was truncated.
    pub const STRIP: u16 = 1;
    /// EtherType of IPv4.
    pub const IPV4: u16 = 0x0800;
    /// EtherType of IPv6.
    pub const IPV6: u16 = 0x86DD;

    /// A header for a packet of EtherType `proto`, with no flags.
    pub const fn new(proto: u16) -> PacketInfo {
        PacketInfo { flags: 0, proto }
    }

    /// Splits `packet` into its header and payload.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] when `packet` is shorter than 4 bytes.
    pub fn parse(packet: &[u8]) -> Result<(PacketInfo, &[u8])> {
        match packet {
            [f0, f1, p0, p1, rest @ ..] => Ok((
                PacketInfo {
                    flags: u16::from_ne_bytes([*f0, *f1]),
                    proto: u16::from_be_bytes([*p0, *p1]),
                },
                rest,
            )),
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                "packet information header",
                format!(
                    "packet of {} bytes is shorter than the 4-byte header",
                    packet.len()
                ),
            )),
        }
    }

    /// The header as the kernel expects it in front of a packet written to the device.
    pub fn to_bytes(self) -> [u8; 4] {
        let f = self.flags.to_ne_bytes();
        let p = self.proto.to_be_bytes();
        [f[0], f[1], p[0], p[1]]
    }

    /// The header for an IP packet, chosen from its version nibble; `None` if `ip` is empty or
    /// neither IPv4 nor IPv6.
    pub fn for_ip(ip: &[u8]) -> Option<PacketInfo> {
        match ip.first()? >> 4 {
            4 => Some(PacketInfo::new(PacketInfo::IPV4)),
            6 => Some(PacketInfo::new(PacketInfo::IPV6)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_is_network_order() {
        let wire = [0, 0, 0x08, 0x00, 0x45, 0];
        let (pi, rest) = PacketInfo::parse(&wire).unwrap();
        assert_eq!(pi.proto, 0x0800);
        assert_eq!(pi.flags, 0);
        assert_eq!(rest, &[0x45, 0]);
        assert_eq!(PacketInfo::new(0x86DD).to_bytes()[2..], [0x86, 0xDD]);
    }

    #[test]
    fn short_input_is_an_error() {
        for len in 0..4 {
            assert!(PacketInfo::parse(&[0u8; 4][..len]).is_err());
        }
        assert!(PacketInfo::parse(&[0u8; 4]).is_ok());
    }
}
