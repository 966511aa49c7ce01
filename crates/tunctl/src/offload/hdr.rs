//! `struct virtio_net_hdr` (include/uapi/linux/virtio_net.h), as the tun driver reads and
//! writes it in front of each packet on an `IFF_VNET_HDR` device. Fields are in the
//! device's byte order, which for tun is little-endian unless TUNSETVNETBE was used.

use super::wire::VirtioNetPacket;
use super::OffloadError;

/// `VIRTIO_NET_HDR_GSO_*`: what kind of super-packet follows the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoType {
    /// `GSO_NONE` (0): a single packet.
    None,
    /// `GSO_TCPV4` (1).
    TcpV4,
    /// `GSO_UDP` (3): UFO, obsolete; not produced or split here.
    Ufo,
    /// `GSO_TCPV6` (4).
    TcpV6,
    /// `GSO_UDP_L4` (5): UDP segmentation (USO), IPv4 or IPv6.
    UdpL4,
}

/// A parsed `virtio_net_hdr`: the value of what [`VirtioNetPacket`] views in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VirtioNetHdr {
    /// `VIRTIO_NET_HDR_F_*`: [`VirtioNetHdr::NEEDS_CSUM`], [`VirtioNetHdr::DATA_VALID`].
    pub flags: u8,
    /// The raw `gso_type`, [`VirtioNetHdr::GSO_ECN`] bit included; see [`VirtioNetHdr::gso`].
    pub gso_type: u8,
    /// Length of the headers (IP + transport) in front of the payload.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (the transport header).
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum field lies (16 for TCP, 6 for UDP).
    pub csum_offset: u16,
}

impl VirtioNetHdr {
    /// Size of the header (without `num_buffers`).
    pub const LEN: usize = 10;
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the transport checksum is partial (pseudo-header only).
    pub const NEEDS_CSUM: u8 = 1;
    /// `VIRTIO_NET_HDR_F_DATA_VALID`: checksums were verified.
    pub const DATA_VALID: u8 = 2;
    /// `VIRTIO_NET_HDR_GSO_ECN`: the super-packet has CWR set.
    pub const GSO_ECN: u8 = 0x80;

    /// Decodes the first 10 bytes of `buf` (through [`VirtioNetPacket`]).
    ///
    /// # Errors
    ///
    /// [`OffloadError::Truncated`] if `buf` is shorter than 10 bytes.
    pub fn parse(buf: &[u8]) -> Result<VirtioNetHdr, OffloadError> {
        Ok(VirtioNetPacket::new_checked(buf)?.header())
    }

    /// Encodes into the first 10 bytes of `buf` (through [`VirtioNetPacket`]).
    ///
    /// # Errors
    ///
    /// [`OffloadError::NoRoom`] if `buf` is shorter than 10 bytes.
    pub fn write(&self, buf: &mut [u8]) -> Result<(), OffloadError> {
        let mut view = VirtioNetPacket::new_checked(buf).map_err(|_| OffloadError::NoRoom)?;
        view.set_header(self);
        Ok(())
    }

    /// The GSO type, without the ECN bit.
    ///
    /// # Errors
    ///
    /// [`OffloadError::Unsupported`] for a type other than 0 (none), 1 (TCPv4), 3 (UDP),
    /// 4 (TCPv6) and 5 (UDP_L4).
    pub fn gso(&self) -> Result<GsoType, OffloadError> {
        match self.gso_type & !Self::GSO_ECN {
            0 => Ok(GsoType::None),
            1 => Ok(GsoType::TcpV4),
            3 => Ok(GsoType::Ufo),
            4 => Ok(GsoType::TcpV6),
            5 => Ok(GsoType::UdpL4),
            _ => Err(OffloadError::Unsupported),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_short_input() {
        let h = VirtioNetHdr {
            flags: 1,
            gso_type: 4,
            hdr_len: 72,
            gso_size: 1428,
            csum_start: 40,
            csum_offset: 16,
        };
        let mut buf = [0u8; 12];
        h.write(&mut buf).unwrap();
        assert_eq!(buf[..10], [1, 4, 72, 0, 0x94, 0x05, 40, 0, 16, 0]);
        assert_eq!(VirtioNetHdr::parse(&buf).unwrap(), h);
        assert_eq!(h.gso().unwrap(), GsoType::TcpV6);
        assert_eq!(VirtioNetHdr::parse(&buf[..9]), Err(OffloadError::Truncated));
        assert_eq!(h.write(&mut buf[..9]), Err(OffloadError::NoRoom));
        let odd = VirtioNetHdr { gso_type: 2, ..h };
        assert_eq!(odd.gso(), Err(OffloadError::Unsupported));
        let ecn = VirtioNetHdr {
            gso_type: 1 | 0x80,
            ..h
        };
        assert_eq!(ecn.gso().unwrap(), GsoType::TcpV4);
    }
}
