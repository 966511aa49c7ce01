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

mod ethernet;
mod ip;
mod ipv4;
mod ipv6;
mod tcp;
mod udp;
mod virtio;

pub use ethernet::EthernetFrame;
pub use ip::{IpPacket, IpVersion};
pub use ipv4::Ipv4Packet;
pub use ipv6::Ipv6Packet;
pub use tcp::TcpPacket;
pub use udp::UdpPacket;
pub use virtio::{GsoType, VirtioNetHdr, VirtioNetPacket};

#[cfg(test)]
mod tests;
