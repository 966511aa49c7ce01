//! UDP datagrams (RFC 768).

use super::*;

/// A UDP datagram (RFC 768): the buffer is the whole datagram, header and data (an IP
/// [`payload`](IpPacket::payload)). [`new_checked`](UdpPacket::new_checked) checks only that
/// the 8-byte header is there: the Length field is left for the caller to judge (GRO compares
/// it with the IP length; GSO rewrites it), and no accessor relies on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T> {
    buffer: T,
}

view_common!(UdpPacket);

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps `buffer` after checking it.
    ///
    /// # Errors
    ///
    /// [`OffloadError::Truncated`] if it is shorter than 8 bytes.
    pub fn new_checked(buffer: T) -> Result<UdpPacket<T>, OffloadError> {
        if buffer.as_ref().len() < UDP_HEADER_LEN {
            return Err(OffloadError::Truncated);
        }
        Ok(UdpPacket { buffer })
    }

    /// Source port (RFC 768).
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::udp::SRC_PORT)
    }

    /// Destination port (RFC 768).
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::udp::DST_PORT)
    }

    /// Length: header and data, in bytes, as the header claims it (RFC 768).
    pub fn length(&self) -> u16 {
        be16(self.buffer.as_ref(), field::udp::LENGTH)
    }

    /// Checksum field; zero means "no checksum", allowed over IPv4 only (RFC 768, RFC 8200
    /// §8.1).
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::udp::CHECKSUM)
    }

    /// Whether the checksum verifies over the whole datagram, given the enclosing packet's
    /// pseudo-header sum ([`IpPacket::pseudo_header_sum`]; RFC 768). A zero field ("no
    /// checksum") does not verify: test [`checksum`](UdpPacket::checksum) first.
    pub fn verify_checksum(&self, pseudo_header: u16) -> bool {
        checksum(self.buffer.as_ref(), u32::from(pseudo_header)) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> UdpPacket<&'a T> {
    /// The data: everything after the 8-byte header (RFC 768).
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes()[UDP_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port (RFC 768).
    pub fn set_src_port(&mut self, port: u16) {
        set_be16(self.buffer.as_mut(), field::udp::SRC_PORT, port);
    }

    /// Sets the destination port (RFC 768).
    pub fn set_dst_port(&mut self, port: u16) {
        set_be16(self.buffer.as_mut(), field::udp::DST_PORT, port);
    }

    /// Sets the length field (RFC 768).
    pub fn set_length(&mut self, len: u16) {
        set_be16(self.buffer.as_mut(), field::udp::LENGTH, len);
    }

    /// Sets the checksum field (RFC 768): the full checksum, or the pseudo-header sum alone
    /// for a device to complete (`NEEDS_CSUM`).
    pub fn set_checksum(&mut self, sum: u16) {
        set_be16(self.buffer.as_mut(), field::udp::CHECKSUM, sum);
    }

    /// Computes the checksum over the whole datagram as it now is, given the enclosing
    /// packet's pseudo-header sum ([`IpPacket::pseudo_header_sum`]), and stores it; a computed
    /// zero is sent as all ones, zero meaning "none" (RFC 768). Call it after the last change
    /// to the datagram.
    pub fn fill_checksum(&mut self, pseudo_header: u16) {
        self.set_checksum(0);
        let sum = match !checksum(self.buffer.as_ref(), u32::from(pseudo_header)) {
            0 => 0xffff,
            sum => sum,
        };
        self.set_checksum(sum);
    }

    /// The data, writable (RFC 768).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[UDP_HEADER_LEN..]
    }
}
