//! The virtio-net header the tun driver puts in front of each packet of an `IFF_VNET_HDR`
//! device: its value ([`VirtioNetHdr`], [`GsoType`]) and its zero-copy view
//! ([`VirtioNetPacket`]).

use super::*;

/// A buffer that starts with a `struct virtio_net_hdr` (VIRTIO 1.2 §5.1.6; the 10-byte form,
/// without `num_buffers`), as a `vnet_hdr` tun device reads and writes it in front of each
/// packet; the packet is the [`payload`](VirtioNetPacket::payload). Fields are little-endian.
/// [`new_checked`](VirtioNetPacket::new_checked) checks only that the header is there: the
/// offsets it carries describe the packet and are for the offload code to judge.
/// [`VirtioNetHdr`] is the same header decoded into a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioNetPacket<T> {
    buffer: T,
}

view_common!(VirtioNetPacket);

impl<T: AsRef<[u8]>> VirtioNetPacket<T> {
    /// Wraps `buffer` after checking it.
    ///
    /// # Errors
    ///
    /// [`OffloadError::Truncated`] if it is shorter than the 10-byte header.
    pub fn new_checked(buffer: T) -> Result<VirtioNetPacket<T>, OffloadError> {
        if buffer.as_ref().len() < VirtioNetHdr::LEN {
            return Err(OffloadError::Truncated);
        }
        Ok(VirtioNetPacket { buffer })
    }

    /// `flags`: [`VirtioNetHdr::NEEDS_CSUM`], [`VirtioNetHdr::DATA_VALID`] (VIRTIO 1.2
    /// §5.1.6).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::virtio::FLAGS]
    }

    /// `gso_type`, raw: `VIRTIO_NET_HDR_GSO_*` and the [`VirtioNetHdr::GSO_ECN`] bit (VIRTIO
    /// 1.2 §5.1.6).
    pub fn gso_type(&self) -> u8 {
        self.buffer.as_ref()[field::virtio::GSO_TYPE]
    }

    /// `hdr_len`: length of the headers in front of the payload (VIRTIO 1.2 §5.1.6).
    pub fn hdr_len(&self) -> u16 {
        le16(self.buffer.as_ref(), field::virtio::HDR_LEN)
    }

    /// `gso_size`: payload bytes per segment (VIRTIO 1.2 §5.1.6).
    pub fn gso_size(&self) -> u16 {
        le16(self.buffer.as_ref(), field::virtio::GSO_SIZE)
    }

    /// `csum_start`: where checksumming starts (VIRTIO 1.2 §5.1.6).
    pub fn csum_start(&self) -> u16 {
        le16(self.buffer.as_ref(), field::virtio::CSUM_START)
    }

    /// `csum_offset`: where, from `csum_start`, the checksum is stored (VIRTIO 1.2 §5.1.6).
    pub fn csum_offset(&self) -> u16 {
        le16(self.buffer.as_ref(), field::virtio::CSUM_OFFSET)
    }

    /// The whole header, decoded.
    pub fn header(&self) -> VirtioNetHdr {
        VirtioNetHdr {
            flags: self.flags(),
            gso_type: self.gso_type(),
            hdr_len: self.hdr_len(),
            gso_size: self.gso_size(),
            csum_start: self.csum_start(),
            csum_offset: self.csum_offset(),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> VirtioNetPacket<&'a T> {
    /// The packet after the header.
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes()[VirtioNetHdr::LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VirtioNetPacket<T> {
    /// Sets `flags` (VIRTIO 1.2 §5.1.6).
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::virtio::FLAGS] = flags;
    }

    /// Sets `gso_type`, raw (VIRTIO 1.2 §5.1.6).
    pub fn set_gso_type(&mut self, gso_type: u8) {
        self.buffer.as_mut()[field::virtio::GSO_TYPE] = gso_type;
    }

    /// Sets `hdr_len` (VIRTIO 1.2 §5.1.6).
    pub fn set_hdr_len(&mut self, len: u16) {
        set_le16(self.buffer.as_mut(), field::virtio::HDR_LEN, len);
    }

    /// Sets `gso_size` (VIRTIO 1.2 §5.1.6).
    pub fn set_gso_size(&mut self, size: u16) {
        set_le16(self.buffer.as_mut(), field::virtio::GSO_SIZE, size);
    }

    /// Sets `csum_start` (VIRTIO 1.2 §5.1.6).
    pub fn set_csum_start(&mut self, start: u16) {
        set_le16(self.buffer.as_mut(), field::virtio::CSUM_START, start);
    }

    /// Sets `csum_offset` (VIRTIO 1.2 §5.1.6).
    pub fn set_csum_offset(&mut self, offset: u16) {
        set_le16(self.buffer.as_mut(), field::virtio::CSUM_OFFSET, offset);
    }

    /// Writes the whole header.
    pub fn set_header(&mut self, hdr: &VirtioNetHdr) {
        self.set_flags(hdr.flags);
        self.set_gso_type(hdr.gso_type);
        self.set_hdr_len(hdr.hdr_len);
        self.set_gso_size(hdr.gso_size);
        self.set_csum_start(hdr.csum_start);
        self.set_csum_offset(hdr.csum_offset);
    }

    /// The packet after the header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[VirtioNetHdr::LEN..]
    }
}

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
