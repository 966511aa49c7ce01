//! Zero-copy views of the headers the data path reads and writes: Ethernet II, IPv4, IPv6,
//! TCP, UDP and the virtio-net header, in the manner of smoltcp's `wire` module.
//!
//! A view wraps a buffer `T: AsRef<[u8]>` that starts with its header (a `&[u8]`, a
//! `&mut [u8]`, a `Vec<u8>`...) and reads its fields in place through named accessors; with
//! `T: AsMut<[u8]>` too, it writes them through setters. Nothing is copied or allocated. The
//! accessors that return parts of the buffer (payload, options, addresses) are on views of
//! borrowed buffers, `&[u8]` and the like, and the parts live as long as the borrow; views of
//! `&mut [u8]` have `payload_mut` instead.
//!
//! **Lengths are checked once**, in `new_checked`: that the fixed header is in the buffer, and
//! that every length field an accessor relies on (IPv4 header and total length, IPv6 payload
//! length, TCP data offset) fits the buffer and agrees with the others. After that no accessor
//! of the view panics. `new_unchecked` skips the check, for a buffer known to be good (a
//! segment built from a checked packet, a super-packet that was checked when it began): its
//! accessors panic where the buffer is too short for what they read. Setters write what they
//! are given and check nothing: a length set beyond the buffer makes `payload` panic later.
//!
//! Multi-byte fields are big-endian (network byte order), except in the virtio-net header,
//! which the tun driver keeps little-endian (unless `TUNSETVNETBE`).
//!
//! ```
//! use tunctl::offload::wire::{IpPacket, TcpPacket, PROTO_TCP, TCP_ACK};
//!
//! // IPv4 10.0.0.1 -> 10.0.0.2, TCP 1000 -> 2000, seq 7, ACK, no payload.
//! let mut pkt = [0u8; 40];
//! pkt[..20].copy_from_slice(&[
//!     0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
//! ]);
//! pkt[20..34].copy_from_slice(&[0x03, 0xe8, 0x07, 0xd0, 0, 0, 0, 7, 0, 0, 0, 0, 0x50, 0x10]);
//!
//! let ip = IpPacket::new_checked(&pkt[..]).unwrap();
//! assert_eq!((ip.header_len(), ip.total_len(), ip.protocol()), (20, 40, PROTO_TCP));
//! let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
//! assert_eq!((tcp.src_port(), tcp.dst_port(), tcp.seq_number()), (1000, 2000, 7));
//! assert_eq!(tcp.flags(), TCP_ACK);
//!
//! // Fill in both checksums in place.
//! let pseudo = ip.pseudo_header_sum();
//! TcpPacket::new_unchecked(&mut pkt[20..]).fill_checksum(pseudo);
//! if let IpPacket::V4(mut v4) = IpPacket::new_checked(&mut pkt[..]).unwrap() {
//!     v4.fill_checksum();
//!     assert!(v4.verify_checksum());
//! }
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use super::checksum::{checksum, internet_checksum, pseudo_header_sum};
use super::hdr::VirtioNetHdr;
use super::OffloadError;

/// Length of an Ethernet II header: destination, source, EtherType (RFC 894).
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Length of an IPv4 header without options (RFC 791 §3.1).
pub const IPV4_HEADER_LEN: usize = 20;
/// Length of the fixed IPv6 header (RFC 8200 §3).
pub const IPV6_HEADER_LEN: usize = 40;
/// Length of a TCP header without options (RFC 9293 §3.1).
pub const TCP_HEADER_LEN: usize = 20;
/// Length of the UDP header (RFC 768).
pub const UDP_HEADER_LEN: usize = 8;
/// Where the checksum field lies in a TCP header (RFC 9293 §3.1): the virtio-net
/// `csum_offset` of a TCP packet.
pub const TCP_CHECKSUM_OFFSET: usize = field::tcp::CHECKSUM.start;
/// Where the checksum field lies in a UDP header (RFC 768): the virtio-net `csum_offset` of
/// a UDP packet.
pub const UDP_CHECKSUM_OFFSET: usize = field::udp::CHECKSUM.start;

/// EtherType of IPv4 (RFC 894).
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP (RFC 826).
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv6 (RFC 2464 §3).
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// IP protocol number of TCP (IANA "Assigned Internet Protocol Numbers").
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP (IANA "Assigned Internet Protocol Numbers").
pub const PROTO_UDP: u8 = 17;

/// TCP control bit FIN: no more data from the sender (RFC 9293 §3.1).
pub const TCP_FIN: u8 = 0x01;
/// TCP control bit SYN: synchronize sequence numbers (RFC 9293 §3.1).
pub const TCP_SYN: u8 = 0x02;
/// TCP control bit RST: reset the connection (RFC 9293 §3.1).
pub const TCP_RST: u8 = 0x04;
/// TCP control bit PSH: push function (RFC 9293 §3.1).
pub const TCP_PSH: u8 = 0x08;
/// TCP control bit ACK: the acknowledgment number is significant (RFC 9293 §3.1).
pub const TCP_ACK: u8 = 0x10;
/// TCP control bit URG: the urgent pointer is significant (RFC 9293 §3.1).
pub const TCP_URG: u8 = 0x20;
/// TCP control bit ECE: ECN-Echo (RFC 3168 §6.1).
pub const TCP_ECE: u8 = 0x40;
/// TCP control bit CWR: congestion window reduced (RFC 3168 §6.1).
pub const TCP_CWR: u8 = 0x80;

/// Byte positions of the header fields.
pub(crate) mod field {
    use std::ops::Range;

    /// Ethernet II (RFC 894).
    pub mod ethernet {
        use super::Range;
        pub const DST: Range<usize> = 0..6;
        pub const SRC: Range<usize> = 6..12;
        pub const ETHERTYPE: Range<usize> = 12..14;
    }

    /// IPv4 (RFC 791 §3.1).
    pub mod ipv4 {
        use super::Range;
        pub const VER_IHL: usize = 0;
        pub const TOS: usize = 1;
        pub const LENGTH: Range<usize> = 2..4;
        pub const IDENT: Range<usize> = 4..6;
        pub const FLG_OFF: Range<usize> = 6..8;
        pub const TTL: usize = 8;
        pub const PROTOCOL: usize = 9;
        pub const CHECKSUM: Range<usize> = 10..12;
        pub const SRC: Range<usize> = 12..16;
        pub const DST: Range<usize> = 16..20;
    }

    /// IPv6 (RFC 8200 §3).
    pub mod ipv6 {
        use super::Range;
        pub const VER_TC_FLOW: Range<usize> = 0..4;
        pub const LENGTH: Range<usize> = 4..6;
        pub const NXT_HDR: usize = 6;
        pub const HOP_LIMIT: usize = 7;
        pub const SRC: Range<usize> = 8..24;
        pub const DST: Range<usize> = 24..40;
    }

    /// TCP (RFC 9293 §3.1).
    pub mod tcp {
        use super::Range;
        pub const SRC_PORT: Range<usize> = 0..2;
        pub const DST_PORT: Range<usize> = 2..4;
        pub const SEQ: Range<usize> = 4..8;
        pub const ACK: Range<usize> = 8..12;
        pub const DATA_OFF: usize = 12;
        pub const FLAGS: usize = 13;
        pub const WINDOW: Range<usize> = 14..16;
        pub const CHECKSUM: Range<usize> = 16..18;
        pub const URGENT: Range<usize> = 18..20;
    }

    /// UDP (RFC 768).
    pub mod udp {
        use super::Range;
        pub const SRC_PORT: Range<usize> = 0..2;
        pub const DST_PORT: Range<usize> = 2..4;
        pub const LENGTH: Range<usize> = 4..6;
        pub const CHECKSUM: Range<usize> = 6..8;
    }

    /// `struct virtio_net_hdr` (VIRTIO 1.2 §5.1.6), little-endian.
    pub mod virtio {
        use super::Range;
        pub const FLAGS: usize = 0;
        pub const GSO_TYPE: usize = 1;
        pub const HDR_LEN: Range<usize> = 2..4;
        pub const GSO_SIZE: Range<usize> = 4..6;
        pub const CSUM_START: Range<usize> = 6..8;
        pub const CSUM_OFFSET: Range<usize> = 8..10;
    }
}

fn be16(b: &[u8], at: Range<usize>) -> u16 {
    u16::from_be_bytes([b[at.start], b[at.start + 1]])
}

fn be32(b: &[u8], at: Range<usize>) -> u32 {
    let i = at.start;
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn le16(b: &[u8], at: Range<usize>) -> u16 {
    u16::from_le_bytes([b[at.start], b[at.start + 1]])
}

fn set_be16(b: &mut [u8], at: Range<usize>, value: u16) {
    b[at].copy_from_slice(&value.to_be_bytes());
}

fn set_be32(b: &mut [u8], at: Range<usize>, value: u32) {
    b[at].copy_from_slice(&value.to_be_bytes());
}

fn set_le16(b: &mut [u8], at: Range<usize>, value: u16) {
    b[at].copy_from_slice(&value.to_le_bytes());
}

/// What every view has: the unchecked constructor, the buffer back, and `AsRef<[u8]>`.
macro_rules! view_common {
    ($view:ident) => {
        impl<T> $view<T> {
            /// Wraps `buffer` without checking it, for a buffer known to hold this header
            /// (see the [module documentation](crate::offload::wire)). The accessors panic
            /// where it is too short.
            pub const fn new_unchecked(buffer: T) -> $view<T> {
                $view { buffer }
            }

            /// The buffer back.
            pub fn into_inner(self) -> T {
                self.buffer
            }
        }

        impl<'a, T: AsRef<[u8]> + ?Sized> $view<&'a T> {
            /// The borrowed buffer, for as long as it is borrowed.
            fn bytes(&self) -> &'a [u8] {
                <T as AsRef<[u8]>>::as_ref(self.buffer)
            }
        }

        impl<T: AsRef<[u8]>> AsRef<[u8]> for $view<T> {
            /// The whole buffer, header first.
            fn as_ref(&self) -> &[u8] {
                self.buffer.as_ref()
            }
        }
    };
}

// ---------------------------------------------------------------------------------------
// Ethernet II

/// An Ethernet II frame (RFC 894; IEEE 802.3 §3.2): destination and source MAC addresses,
/// EtherType, payload. No 802.1Q tag awareness: a tagged frame shows EtherType 0x8100 and the
/// tag at the start of its payload. No frame check sequence: TAP devices carry none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T> {
    buffer: T,
}

view_common!(EthernetFrame);

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer`, which must hold the 14-byte header.
    ///
    /// # Errors
    ///
    /// [`OffloadError::Truncated`] if it is shorter than 14 bytes.
    pub fn new_checked(buffer: T) -> Result<EthernetFrame<T>, OffloadError> {
        if buffer.as_ref().len() < ETHERNET_HEADER_LEN {
            return Err(OffloadError::Truncated);
        }
        Ok(EthernetFrame { buffer })
    }

    /// Destination MAC address (RFC 894).
    pub fn dst_addr(&self) -> [u8; 6] {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::ethernet::DST]);
        a
    }

    /// Source MAC address (RFC 894).
    pub fn src_addr(&self) -> [u8; 6] {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::ethernet::SRC]);
        a
    }

    /// EtherType (RFC 894; IEEE 802.3 §3.2.6): [`ETHERTYPE_IPV4`], [`ETHERTYPE_IPV6`]...
    /// Values below 0x0600 are 802.3 lengths, not types; the view does not tell them apart.
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ethernet::ETHERTYPE)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> EthernetFrame<&'a T> {
    /// Everything after the header (RFC 894): the frame has no length field of its own.
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes()[ETHERNET_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC address (RFC 894).
    pub fn set_dst_addr(&mut self, addr: [u8; 6]) {
        self.buffer.as_mut()[field::ethernet::DST].copy_from_slice(&addr);
    }

    /// Sets the source MAC address (RFC 894).
    pub fn set_src_addr(&mut self, addr: [u8; 6]) {
        self.buffer.as_mut()[field::ethernet::SRC].copy_from_slice(&addr);
    }

    /// Sets the EtherType (RFC 894).
    pub fn set_ethertype(&mut self, ethertype: u16) {
        set_be16(self.buffer.as_mut(), field::ethernet::ETHERTYPE, ethertype);
    }

    /// Everything after the header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[ETHERNET_HEADER_LEN..]
    }
}

// ---------------------------------------------------------------------------------------
// IPv4

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

// ---------------------------------------------------------------------------------------
// IPv6

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

// ---------------------------------------------------------------------------------------
// IPv4 or IPv6

/// An IP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpVersion {
    /// IPv4 (RFC 791).
    V4,
    /// IPv6 (RFC 8200).
    V6,
}

/// An IPv4 or IPv6 packet, told apart by the version in its first four bits (RFC 791 §3.1,
/// RFC 8200 §3), seen as what a transport needs: header length, protocol, addresses and
/// payload. For IPv6 the transport is taken to follow the fixed header: extension headers
/// are not walked, so their type shows as the [`protocol`](IpPacket::protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpPacket<T> {
    /// An IPv4 packet.
    V4(Ipv4Packet<T>),
    /// An IPv6 packet.
    V6(Ipv6Packet<T>),
}

impl<T> IpPacket<T> {
    /// Wraps `buffer` as a packet of `version` without checking it (see the [module
    /// documentation](crate::offload::wire)).
    pub const fn new_unchecked(version: IpVersion, buffer: T) -> IpPacket<T> {
        match version {
            IpVersion::V4 => IpPacket::V4(Ipv4Packet::new_unchecked(buffer)),
            IpVersion::V6 => IpPacket::V6(Ipv6Packet::new_unchecked(buffer)),
        }
    }

    /// The version.
    pub fn version(&self) -> IpVersion {
        match self {
            IpPacket::V4(_) => IpVersion::V4,
            IpPacket::V6(_) => IpVersion::V6,
        }
    }

    /// The buffer back.
    pub fn into_inner(self) -> T {
        match self {
            IpPacket::V4(p) => p.into_inner(),
            IpPacket::V6(p) => p.into_inner(),
        }
    }
}

impl<T: AsRef<[u8]>> IpPacket<T> {
    /// Wraps `buffer` after checking it as [`Ipv4Packet::new_checked`] or
    /// [`Ipv6Packet::new_checked`] does, by its version.
    ///
    /// # Errors
    ///
    /// [`OffloadError::Truncated`] if it is empty, [`OffloadError::Unsupported`] if the
    /// version is neither 4 nor 6; otherwise those of the version's own `new_checked`.
    pub fn new_checked(buffer: T) -> Result<IpPacket<T>, OffloadError> {
        match buffer.as_ref().first().map(|b| b >> 4) {
            None => Err(OffloadError::Truncated),
            Some(4) => Ipv4Packet::new_checked(buffer).map(IpPacket::V4),
            Some(6) => Ipv6Packet::new_checked(buffer).map(IpPacket::V6),
            Some(_) => Err(OffloadError::Unsupported),
        }
    }

    /// Length of the IP header: IHL × 4 for IPv4 (RFC 791 §3.1), 40 for IPv6 (RFC 8200 §3).
    pub fn header_len(&self) -> usize {
        match self {
            IpPacket::V4(p) => p.header_len(),
            IpPacket::V6(_) => IPV6_HEADER_LEN,
        }
    }

    /// Length of the packet, header and payload: the IPv4 total length (RFC 791 §3.1), or 40
    /// plus the IPv6 payload length (RFC 8200 §3).
    pub fn total_len(&self) -> usize {
        match self {
            IpPacket::V4(p) => usize::from(p.total_len()),
            IpPacket::V6(p) => IPV6_HEADER_LEN + usize::from(p.payload_len()),
        }
    }

    /// The IPv4 protocol (RFC 791 §3.1) or IPv6 next header (RFC 8200 §3).
    pub fn protocol(&self) -> u8 {
        match self {
            IpPacket::V4(p) => p.protocol(),
            IpPacket::V6(p) => p.next_header(),
        }
    }

    /// The TCP/UDP pseudo-header sum for the payload as the header describes it (addresses,
    /// protocol, payload length; RFC 9293 §3.1, RFC 768, RFC 8200 §8.1), not complemented: the
    /// `initial` of a [`checksum`] over the transport segment, or the partial checksum a
    /// `NEEDS_CSUM` packet carries.
    ///
    /// [`checksum`]: crate::offload::checksum
    pub fn pseudo_header_sum(&self) -> u16 {
        let addrs = match self {
            IpPacket::V4(_) => field::ipv4::SRC.start..field::ipv4::DST.end,
            IpPacket::V6(_) => field::ipv6::SRC.start..field::ipv6::DST.end,
        };
        let len = self.total_len() - self.header_len();
        pseudo_header_sum(&self.as_ref()[addrs], self.protocol(), len)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> IpPacket<&'a T> {
    /// Source then destination address, as a pseudo-header sums them: 8 bytes for IPv4
    /// (RFC 9293 §3.1), 32 for IPv6 (RFC 8200 §8.1).
    pub fn addrs(&self) -> &'a [u8] {
        match self {
            IpPacket::V4(p) => p.addrs(),
            IpPacket::V6(p) => p.addrs(),
        }
    }

    /// The payload: from the end of the header to the total length.
    pub fn payload(&self) -> &'a [u8] {
        match self {
            IpPacket::V4(p) => p.payload(),
            IpPacket::V6(p) => p.payload(),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IpPacket<T> {
    /// Sets the length of the packet, header included: the IPv4 total length, after which the
    /// IPv4 header checksum is recomputed (RFC 791 §3.1), or the IPv6 payload length,
    /// `len - 40` (RFC 8200 §3). Truncated to 16 bits, and not checked: keep it within the
    /// buffer.
    pub fn set_total_len(&mut self, len: usize) {
        match self {
            IpPacket::V4(p) => {
                p.set_total_len(len as u16);
                p.fill_checksum();
            }
            IpPacket::V6(p) => p.set_payload_len(len.saturating_sub(IPV6_HEADER_LEN) as u16),
        }
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for IpPacket<T> {
    /// The whole buffer, header first.
    fn as_ref(&self) -> &[u8] {
        match self {
            IpPacket::V4(p) => p.as_ref(),
            IpPacket::V6(p) => p.as_ref(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// TCP

/// A TCP segment (RFC 9293 §3.1): the buffer is the whole segment, header and data (an IP
/// [`payload`](IpPacket::payload)). [`new_checked`](TcpPacket::new_checked) checks the data
/// offset against the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T> {
    buffer: T,
}

view_common!(TcpPacket);

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps `buffer` after checking it.
    ///
    /// # Errors
    ///
    /// [`OffloadError::Truncated`] if it is shorter than 20 bytes, [`OffloadError::BadHeader`]
    /// if the data offset says less than 20 bytes or more than the buffer holds.
    pub fn new_checked(buffer: T) -> Result<TcpPacket<T>, OffloadError> {
        if buffer.as_ref().len() < TCP_HEADER_LEN {
            return Err(OffloadError::Truncated);
        }
        let packet = TcpPacket { buffer };
        let header_len = packet.header_len();
        if header_len < TCP_HEADER_LEN || header_len > packet.buffer.as_ref().len() {
            return Err(OffloadError::BadHeader);
        }
        Ok(packet)
    }

    /// Source port (RFC 9293 §3.1).
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::tcp::SRC_PORT)
    }

    /// Destination port (RFC 9293 §3.1).
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::tcp::DST_PORT)
    }

    /// Sequence number (RFC 9293 §3.1).
    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::tcp::SEQ)
    }

    /// Acknowledgment number (RFC 9293 §3.1).
    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::tcp::ACK)
    }

    /// Header length in bytes, options included: data offset × 4 (RFC 9293 §3.1).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::tcp::DATA_OFF] >> 4) * 4
    }

    /// The control bits, [`TCP_FIN`] to [`TCP_CWR`] (RFC 9293 §3.1, RFC 3168 §6.1).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::tcp::FLAGS]
    }

    /// Window (RFC 9293 §3.1).
    pub fn window_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::tcp::WINDOW)
    }

    /// Checksum field (RFC 9293 §3.1).
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::tcp::CHECKSUM)
    }

    /// Whether the checksum verifies over the whole segment, given the enclosing packet's
    /// pseudo-header sum ([`IpPacket::pseudo_header_sum`]; RFC 9293 §3.1).
    pub fn verify_checksum(&self, pseudo_header: u16) -> bool {
        checksum(self.buffer.as_ref(), u32::from(pseudo_header)) == 0xffff
    }

    /// Urgent pointer (RFC 9293 §3.1).
    pub fn urgent_at(&self) -> u16 {
        be16(self.buffer.as_ref(), field::tcp::URGENT)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> TcpPacket<&'a T> {
    /// Options: the bytes between the fixed header and the data (RFC 9293 §3.1, §3.2).
    pub fn options(&self) -> &'a [u8] {
        &self.bytes()[TCP_HEADER_LEN..self.header_len()]
    }

    /// The data: everything after the header (RFC 9293 §3.1).
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the source port (RFC 9293 §3.1).
    pub fn set_src_port(&mut self, port: u16) {
        set_be16(self.buffer.as_mut(), field::tcp::SRC_PORT, port);
    }

    /// Sets the destination port (RFC 9293 §3.1).
    pub fn set_dst_port(&mut self, port: u16) {
        set_be16(self.buffer.as_mut(), field::tcp::DST_PORT, port);
    }

    /// Sets the sequence number (RFC 9293 §3.1).
    pub fn set_seq_number(&mut self, seq: u32) {
        set_be32(self.buffer.as_mut(), field::tcp::SEQ, seq);
    }

    /// Sets the acknowledgment number (RFC 9293 §3.1).
    pub fn set_ack_number(&mut self, ack: u32) {
        set_be32(self.buffer.as_mut(), field::tcp::ACK, ack);
    }

    /// Sets the control bits (RFC 9293 §3.1, RFC 3168 §6.1).
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::tcp::FLAGS] = flags;
    }

    /// Sets the window (RFC 9293 §3.1).
    pub fn set_window_len(&mut self, window: u16) {
        set_be16(self.buffer.as_mut(), field::tcp::WINDOW, window);
    }

    /// Sets the checksum field (RFC 9293 §3.1): the full checksum, or the pseudo-header sum
    /// alone for a device to complete (`NEEDS_CSUM`).
    pub fn set_checksum(&mut self, sum: u16) {
        set_be16(self.buffer.as_mut(), field::tcp::CHECKSUM, sum);
    }

    /// Computes the checksum over the whole segment as it now is, given the enclosing
    /// packet's pseudo-header sum ([`IpPacket::pseudo_header_sum`]), and stores it (RFC 9293
    /// §3.1). Call it after the last change to the segment.
    pub fn fill_checksum(&mut self, pseudo_header: u16) {
        self.set_checksum(0);
        let sum = !checksum(self.buffer.as_ref(), u32::from(pseudo_header));
        self.set_checksum(sum);
    }

    /// Sets the urgent pointer (RFC 9293 §3.1).
    pub fn set_urgent_at(&mut self, urgent: u16) {
        set_be16(self.buffer.as_mut(), field::tcp::URGENT, urgent);
    }

    /// The data, writable (RFC 9293 §3.1).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

// ---------------------------------------------------------------------------------------
// UDP

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

// ---------------------------------------------------------------------------------------
// virtio-net header

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::testpkt::{Flow, ACK};

    #[test]
    fn ethernet_fields_round_trip() {
        let mut buf = [0u8; 20];
        assert_eq!(
            EthernetFrame::new_checked(&buf[..13]),
            Err(OffloadError::Truncated)
        );
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        f.set_dst_addr([1, 2, 3, 4, 5, 6]);
        f.set_src_addr([7, 8, 9, 10, 11, 12]);
        f.set_ethertype(ETHERTYPE_IPV6);
        f.payload_mut().copy_from_slice(&[0xaa; 6]);
        assert_eq!(
            buf[..14],
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x86, 0xdd]
        );
        let f = EthernetFrame::new_checked(&buf[..]).unwrap();
        assert_eq!(f.dst_addr(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(f.src_addr(), [7, 8, 9, 10, 11, 12]);
        assert_eq!(f.ethertype(), ETHERTYPE_IPV6);
        assert_eq!(f.payload(), &[0xaa; 6]);
        assert_eq!(f.as_ref().len(), 20);
    }

    #[test]
    fn ipv4_fields_and_checks() {
        let mut p = Flow::v4(1000, 2000).tcp(7, ACK, b"hi", false);
        let v4 = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert_eq!((v4.version(), v4.header_len(), v4.total_len()), (4, 20, 42));
        assert_eq!(
            (v4.tos(), v4.ident(), v4.ttl(), v4.protocol()),
            (0, 0x1234, 64, 6)
        );
        assert!(v4.dont_frag() && !v4.more_frags() && !v4.is_fragment());
        assert_eq!(v4.frag_offset(), 0);
        assert_eq!(v4.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(v4.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(v4.addrs(), &[10, 0, 0, 1, 10, 0, 0, 2]);
        assert!(v4.options().is_empty());
        assert_eq!(v4.payload().len(), 22);
        assert!(v4.verify_checksum());

        let mut v4 = Ipv4Packet::new_unchecked(&mut p[..]);
        v4.set_tos(0x10);
        v4.set_ttl(9);
        v4.set_ident(0xbeef);
        v4.set_dont_frag(false);
        v4.set_src_addr(Ipv4Addr::new(192, 0, 2, 1));
        v4.set_dst_addr(Ipv4Addr::new(192, 0, 2, 2));
        assert!(!v4.verify_checksum());
        v4.fill_checksum();
        assert!(v4.verify_checksum());
        assert_eq!(p[1], 0x10);
        assert_eq!(p[4..9], [0xbe, 0xef, 0, 0, 9]);
        assert_eq!(p[12..20], [192, 0, 2, 1, 192, 0, 2, 2]);

        // Trailing bytes past the total length are not payload.
        let mut padded = p.clone();
        padded.extend_from_slice(&[0, 0]);
        assert_eq!(
            Ipv4Packet::new_checked(&padded[..])
                .unwrap()
                .payload()
                .len(),
            22
        );
        // Options count in the header length.
        let mut opts = p[..20].to_vec();
        opts[0] = 0x46;
        opts.extend_from_slice(&[1, 1, 1, 0]);
        opts.extend_from_slice(&p[20..]);
        opts[2..4].copy_from_slice(&46u16.to_be_bytes());
        let v4 = Ipv4Packet::new_checked(&opts[..]).unwrap();
        assert_eq!((v4.header_len(), v4.options()), (24, &[1u8, 1, 1, 0][..]));

        let bad = |edit: fn(&mut [u8])| {
            let mut q = p.clone();
            edit(&mut q);
            Ipv4Packet::new_checked(&q[..]).unwrap_err()
        };
        assert_eq!(bad(|q| q[0] = 0x44), OffloadError::BadHeader, "IHL 4");
        assert_eq!(
            bad(|q| q[0] = 0x4f),
            OffloadError::BadHeader,
            "IHL past total"
        );
        assert_eq!(
            bad(|q| q[3] = 19),
            OffloadError::BadHeader,
            "total < header"
        );
        assert_eq!(
            bad(|q| q[3] = 43),
            OffloadError::BadHeader,
            "total > buffer"
        );
        assert_eq!(bad(|q| q[0] = 0x65), OffloadError::Unsupported, "version 6");
        assert_eq!(
            Ipv4Packet::new_checked(&p[..19]),
            Err(OffloadError::Truncated)
        );
    }

    #[test]
    fn ipv6_fields_and_checks() {
        let mut p = Flow::v6(1, 2).udp(b"abc", false);
        let v6 = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(
            (v6.version(), v6.payload_len(), v6.next_header()),
            (6, 11, 17)
        );
        assert_eq!(
            (v6.traffic_class(), v6.flow_label(), v6.hop_limit()),
            (0, 0, 64)
        );
        assert_eq!(v6.src_addr(), "fd00::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(v6.dst_addr(), "fd00::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(v6.addrs().len(), 32);
        assert_eq!(v6.payload().len(), 11);

        let mut v6 = Ipv6Packet::new_unchecked(&mut p[..]);
        v6.set_traffic_class(0xb8);
        v6.set_flow_label(0xfff_12345);
        v6.set_hop_limit(3);
        assert_eq!(p[..4], [0x6b, 0x81, 0x23, 0x45]);
        let v6 = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!((v6.traffic_class(), v6.flow_label()), (0xb8, 0x1_2345));
        assert_eq!(v6.hop_limit(), 3);

        assert_eq!(
            Ipv6Packet::new_checked(&p[..39]),
            Err(OffloadError::Truncated)
        );
        assert_eq!(
            Ipv6Packet::new_checked(&p[..50]),
            Err(OffloadError::BadHeader)
        );
        let mut v4 = p.clone();
        v4[0] = 0x45;
        assert_eq!(
            Ipv6Packet::new_checked(&v4[..]),
            Err(OffloadError::Unsupported)
        );
    }

    #[test]
    fn ip_packet_dispatches_on_the_version() {
        for flow in [Flow::v4(1, 2), Flow::v6(1, 2)] {
            let mut p = flow.udp(b"xyz", false);
            let ip = IpPacket::new_checked(&p[..]).unwrap();
            let l4 = if flow.v6 { 40 } else { 20 };
            let version = if flow.v6 {
                IpVersion::V6
            } else {
                IpVersion::V4
            };
            assert_eq!(ip.version(), version);
            assert_eq!((ip.header_len(), ip.total_len()), (l4, l4 + 11));
            assert_eq!(ip.protocol(), PROTO_UDP);
            assert_eq!(ip.payload(), &p[l4..]);
            let udp = UdpPacket::new_checked(ip.payload()).unwrap();
            assert!(udp.verify_checksum(ip.pseudo_header_sum()));
            p.extend_from_slice(&[0; 5]);
            let mut ip = IpPacket::new_unchecked(version, &mut p[..]);
            ip.set_total_len(l4 + 16);
            assert_eq!(ip.total_len(), l4 + 16);
            if let IpPacket::V4(v4) = &ip {
                assert!(v4.verify_checksum());
            }
            assert_eq!(ip.into_inner().len(), l4 + 16);
        }
        assert_eq!(IpPacket::new_checked(&[][..]), Err(OffloadError::Truncated));
        assert_eq!(
            IpPacket::new_checked(&[0x50; 60][..]),
            Err(OffloadError::Unsupported)
        );
    }

    #[test]
    fn tcp_fields_checks_and_checksum() {
        let f = Flow::v4(1000, 2000);
        let opts = [1u8, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0];
        let mut p = f.tcp_opts(0xdead_beef, ACK, &opts, b"data");
        let ip = IpPacket::new_checked(&p[..]).unwrap();
        let pseudo = ip.pseudo_header_sum();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((tcp.src_port(), tcp.dst_port()), (1000, 2000));
        assert_eq!((tcp.seq_number(), tcp.ack_number()), (0xdead_beef, 99));
        assert_eq!((tcp.header_len(), tcp.flags()), (32, ACK));
        assert_eq!((tcp.window_len(), tcp.urgent_at()), (0xffff, 0));
        assert_eq!(tcp.options(), &opts);
        assert_eq!(tcp.payload(), b"data");
        assert!(tcp.verify_checksum(pseudo));

        let mut tcp = TcpPacket::new_unchecked(&mut p[20..]);
        tcp.set_seq_number(1);
        tcp.set_ack_number(2);
        tcp.set_flags(TCP_ACK | TCP_PSH | TCP_FIN);
        tcp.set_window_len(3);
        tcp.set_urgent_at(4);
        tcp.set_src_port(5);
        tcp.set_dst_port(6);
        tcp.payload_mut().copy_from_slice(b"DATA");
        assert!(!tcp.verify_checksum(pseudo));
        tcp.fill_checksum(pseudo);
        assert!(tcp.verify_checksum(pseudo));
        assert_eq!(
            p[20..40],
            [0, 5, 0, 6, 0, 0, 0, 1, 0, 0, 0, 2, 0x80, 0x19, 0, 3, p[36], p[37], 0, 4]
        );

        let seg = &p[20..];
        assert_eq!(
            TcpPacket::new_checked(&seg[..19]),
            Err(OffloadError::Truncated)
        );
        assert_eq!(
            TcpPacket::new_checked(&seg[..31]),
            Err(OffloadError::BadHeader)
        );
        let mut short = seg.to_vec();
        short[12] = 0x40;
        assert_eq!(
            TcpPacket::new_checked(&short[..]),
            Err(OffloadError::BadHeader)
        );
    }

    #[test]
    fn udp_fields_and_zero_checksum() {
        let mut p = Flow::v4(53, 5353).udp(b"q", false);
        let udp = UdpPacket::new_checked(&p[20..]).unwrap();
        assert_eq!(
            (udp.src_port(), udp.dst_port(), udp.length()),
            (53, 5353, 9)
        );
        assert_eq!(udp.payload(), b"q");
        assert_eq!(
            UdpPacket::new_checked(&p[20..27]),
            Err(OffloadError::Truncated)
        );
        // Whatever the Length field says, the view is the buffer.
        let mut u = UdpPacket::new_unchecked(&mut p[20..]);
        u.set_length(500);
        assert_eq!(UdpPacket::new_checked(&p[20..]).unwrap().payload(), b"q");

        // A datagram whose checksum computes to zero carries all ones instead (RFC 768): find
        // the payload word that makes the sum come out at zero.
        let mut d = [0u8; 10];
        let mut u = UdpPacket::new_unchecked(&mut d[..]);
        u.set_length(10);
        let pseudo = 0x1234;
        u.fill_checksum(pseudo);
        let fix = u.checksum();
        u.payload_mut().copy_from_slice(&fix.to_be_bytes());
        u.fill_checksum(pseudo);
        assert_eq!(u.checksum(), 0xffff);
        assert!(u.verify_checksum(pseudo));
    }

    #[test]
    fn virtio_view_matches_the_decoded_header() {
        let h = VirtioNetHdr {
            flags: VirtioNetHdr::NEEDS_CSUM,
            gso_type: 4 | VirtioNetHdr::GSO_ECN,
            hdr_len: 72,
            gso_size: 1428,
            csum_start: 40,
            csum_offset: 16,
        };
        let mut buf = [0u8; 14];
        let mut v = VirtioNetPacket::new_checked(&mut buf[..]).unwrap();
        v.set_header(&h);
        v.payload_mut().copy_from_slice(&[9; 4]);
        assert_eq!(buf[..10], [1, 0x84, 72, 0, 0x94, 0x05, 40, 0, 16, 0]);
        let v = VirtioNetPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(v.header(), h);
        assert_eq!((v.hdr_len(), v.gso_size()), (72, 1428));
        assert_eq!((v.csum_start(), v.csum_offset()), (40, 16));
        assert_eq!(v.payload(), &[9; 4]);
        assert_eq!(
            VirtioNetPacket::new_checked(&buf[..9]),
            Err(OffloadError::Truncated)
        );
    }
}
