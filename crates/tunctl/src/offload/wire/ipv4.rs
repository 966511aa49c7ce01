//! IPv4 packets (RFC 791).

use super::*;

/// An IPv4 packet (RFC 791 §3.1). [`new_checked`](Ipv4Packet::new_checked) checks the
/// version, the header length (IHL) and the total length against the buffer; bytes past the
/// total length (link-layer padding) are left out of [`payload`](Ipv4Packet::payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T> {
    buffer: T,
}

view_common!(Ipv4Packet);

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` after checking it.
    ///
    /// # Errors
    ///
    /// [`OffloadError::Truncated`] if it is shorter than 20 bytes,
    /// [`OffloadError::Unsupported`] if the version is not 4, [`OffloadError::BadHeader`] if
    /// the header length is under 20 bytes or over the total length, or the total length
    /// over the buffer.
    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>, OffloadError> {
        let b = buffer.as_ref();
        if b.len() < IPV4_HEADER_LEN {
            return Err(OffloadError::Truncated);
        }
        let packet = Ipv4Packet { buffer };
        if packet.version() != 4 {
            return Err(OffloadError::Unsupported);
        }
        let (header_len, total_len) = (packet.header_len(), usize::from(packet.total_len()));
        if header_len < IPV4_HEADER_LEN
            || total_len < header_len
            || total_len > packet.buffer.as_ref().len()
        {
            return Err(OffloadError::BadHeader);
        }
        Ok(packet)
    }

    /// Version: 4 (RFC 791 §3.1).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::ipv4::VER_IHL] >> 4
    }

    /// Header length in bytes, options included: IHL × 4 (RFC 791 §3.1).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::ipv4::VER_IHL] & 0x0f) * 4
    }

    /// The type-of-service octet: DSCP in the upper six bits (RFC 2474 §3), ECN in the lower
    /// two (RFC 3168 §5).
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::ipv4::TOS]
    }

    /// Total length: header and data, in bytes (RFC 791 §3.1).
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ipv4::LENGTH)
    }

    /// Identification, for reassembly (RFC 791 §3.1).
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ipv4::IDENT)
    }

    /// The Don't Fragment flag (RFC 791 §3.1).
    pub fn dont_frag(&self) -> bool {
        be16(self.buffer.as_ref(), field::ipv4::FLG_OFF) & 0x4000 != 0
    }

    /// The More Fragments flag (RFC 791 §3.1).
    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), field::ipv4::FLG_OFF) & 0x2000 != 0
    }

    /// Fragment offset, in units of 8 bytes (RFC 791 §3.1).
    pub fn frag_offset(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ipv4::FLG_OFF) & 0x1fff
    }

    /// Whether this is a fragment: More Fragments set or a non-zero offset (RFC 791 §3.2).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to live (RFC 791 §3.1).
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::ipv4::TTL]
    }

    /// Protocol of the payload: [`PROTO_TCP`], [`PROTO_UDP`]... (RFC 791 §3.1).
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::ipv4::PROTOCOL]
    }

    /// Header checksum field (RFC 791 §3.1).
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ipv4::CHECKSUM)
    }

    /// Whether the header checksum verifies (RFC 791 §3.1, RFC 1071).
    pub fn verify_checksum(&self) -> bool {
        checksum(&self.buffer.as_ref()[..self.header_len()], 0) == 0xffff
    }

    /// Source address (RFC 791 §3.1).
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.buffer.as_ref(), field::ipv4::SRC))
    }

    /// Destination address (RFC 791 §3.1).
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.buffer.as_ref(), field::ipv4::DST))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv4Packet<&'a T> {
    /// Source and destination address, the 8 bytes a TCP or UDP pseudo-header sums (RFC 9293
    /// §3.1, RFC 768).
    pub fn addrs(&self) -> &'a [u8] {
        &self.bytes()[field::ipv4::SRC.start..field::ipv4::DST.end]
    }

    /// The whole header, options included (RFC 791 §3.1).
    pub fn header(&self) -> &'a [u8] {
        &self.bytes()[..self.header_len()]
    }

    /// Options: what lies between the fixed header and the data (RFC 791 §3.1).
    pub fn options(&self) -> &'a [u8] {
        &self.bytes()[IPV4_HEADER_LEN..self.header_len()]
    }

    /// The data: from the end of the header to the total length (RFC 791 §3.1).
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the type-of-service octet (RFC 2474 §3, RFC 3168 §5).
    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[field::ipv4::TOS] = tos;
    }

    /// Sets the total length (RFC 791 §3.1). Not checked: keep it within the buffer.
    pub fn set_total_len(&mut self, len: u16) {
        set_be16(self.buffer.as_mut(), field::ipv4::LENGTH, len);
    }

    /// Sets the identification (RFC 791 §3.1).
    pub fn set_ident(&mut self, ident: u16) {
        set_be16(self.buffer.as_mut(), field::ipv4::IDENT, ident);
    }

    /// Sets or clears Don't Fragment (RFC 791 §3.1).
    pub fn set_dont_frag(&mut self, df: bool) {
        let b = self.buffer.as_mut();
        let v = be16(b, field::ipv4::FLG_OFF) & !0x4000 | if df { 0x4000 } else { 0 };
        set_be16(b, field::ipv4::FLG_OFF, v);
    }

    /// Sets the time to live (RFC 791 §3.1).
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::ipv4::TTL] = ttl;
    }

    /// Sets the protocol of the payload (RFC 791 §3.1).
    pub fn set_protocol(&mut self, protocol: u8) {
        self.buffer.as_mut()[field::ipv4::PROTOCOL] = protocol;
    }

    /// Sets the header checksum field (RFC 791 §3.1).
    pub fn set_checksum(&mut self, sum: u16) {
        set_be16(self.buffer.as_mut(), field::ipv4::CHECKSUM, sum);
    }

    /// Computes the header checksum over the header as it now is, and stores it (RFC 791
    /// §3.1, RFC 1071). Call it after the last change to the header.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header_len = self.header_len();
        let sum = internet_checksum(&self.buffer.as_ref()[..header_len]);
        self.set_checksum(sum);
    }

    /// Sets the source address (RFC 791 §3.1).
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::ipv4::SRC].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address (RFC 791 §3.1).
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::ipv4::DST].copy_from_slice(&addr.octets());
    }

    /// The data, writable (RFC 791 §3.1).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}
