//! IPv6 packets (RFC 8200).

use super::*;

/// An IPv6 packet (RFC 8200 §3): the fixed 40-byte header; extension headers, if any, are the
/// start of the [`payload`](Ipv6Packet::payload) ([`next_header`](Ipv6Packet::next_header)
/// says which). [`new_checked`](Ipv6Packet::new_checked) checks the version and the payload
/// length against the buffer; bytes past the payload length are left out of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T> {
    buffer: T,
}

view_common!(Ipv6Packet);

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps `buffer` after checking it.
    ///
    /// # Errors
    ///
    /// [`OffloadError::Truncated`] if it is shorter than 40 bytes,
    /// [`OffloadError::Unsupported`] if the version is not 6, [`OffloadError::BadHeader`] if
    /// the payload length reaches past the buffer.
    pub fn new_checked(buffer: T) -> Result<Ipv6Packet<T>, OffloadError> {
        if buffer.as_ref().len() < IPV6_HEADER_LEN {
            return Err(OffloadError::Truncated);
        }
        let packet = Ipv6Packet { buffer };
        if packet.version() != 6 {
            return Err(OffloadError::Unsupported);
        }
        if IPV6_HEADER_LEN + usize::from(packet.payload_len()) > packet.buffer.as_ref().len() {
            return Err(OffloadError::BadHeader);
        }
        Ok(packet)
    }

    /// Version: 6 (RFC 8200 §3).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::ipv6::VER_TC_FLOW.start] >> 4
    }

    /// Traffic class: DSCP and ECN (RFC 8200 §7, RFC 2474 §3, RFC 3168 §5).
    pub fn traffic_class(&self) -> u8 {
        ((be16(self.buffer.as_ref(), 0..2) >> 4) & 0xff) as u8
    }

    /// Flow label, 20 bits (RFC 8200 §6, RFC 6437).
    pub fn flow_label(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ipv6::VER_TC_FLOW) & 0x000f_ffff
    }

    /// Payload length: the bytes after the fixed header, extension headers included (RFC 8200
    /// §3).
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ipv6::LENGTH)
    }

    /// Next header: the first extension header or the transport protocol (RFC 8200 §3, §4).
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::ipv6::NXT_HDR]
    }

    /// Hop limit (RFC 8200 §3).
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::ipv6::HOP_LIMIT]
    }

    /// Source address (RFC 8200 §3).
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::ipv6::SRC]);
        Ipv6Addr::from(a)
    }

    /// Destination address (RFC 8200 §3).
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::ipv6::DST]);
        Ipv6Addr::from(a)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv6Packet<&'a T> {
    /// Source and destination address, the 32 bytes an upper-layer pseudo-header sums (RFC
    /// 8200 §8.1).
    pub fn addrs(&self) -> &'a [u8] {
        &self.bytes()[field::ipv6::SRC.start..field::ipv6::DST.end]
    }

    /// The payload: the payload length's worth of bytes after the fixed header (RFC 8200 §3).
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes()[IPV6_HEADER_LEN..IPV6_HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets the traffic class (RFC 8200 §7).
    pub fn set_traffic_class(&mut self, class: u8) {
        let b = self.buffer.as_mut();
        let v = be16(b, 0..2) & 0xf00f | u16::from(class) << 4;
        set_be16(b, 0..2, v);
    }

    /// Sets the flow label; bits above the low 20 are ignored (RFC 8200 §6, RFC 6437).
    pub fn set_flow_label(&mut self, label: u32) {
        let b = self.buffer.as_mut();
        let v = be32(b, field::ipv6::VER_TC_FLOW) & 0xfff0_0000 | label & 0x000f_ffff;
        set_be32(b, field::ipv6::VER_TC_FLOW, v);
    }

    /// Sets the payload length (RFC 8200 §3). Not checked: keep it within the buffer.
    pub fn set_payload_len(&mut self, len: u16) {
        set_be16(self.buffer.as_mut(), field::ipv6::LENGTH, len);
    }

    /// Sets the next header (RFC 8200 §3).
    pub fn set_next_header(&mut self, next: u8) {
        self.buffer.as_mut()[field::ipv6::NXT_HDR] = next;
    }

    /// Sets the hop limit (RFC 8200 §3).
    pub fn set_hop_limit(&mut self, hops: u8) {
        self.buffer.as_mut()[field::ipv6::HOP_LIMIT] = hops;
    }

    /// Sets the source address (RFC 8200 §3).
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::ipv6::SRC].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address (RFC 8200 §3).
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::ipv6::DST].copy_from_slice(&addr.octets());
    }

    /// The payload, writable (RFC 8200 §3).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = IPV6_HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[IPV6_HEADER_LEN..end]
    }
}
