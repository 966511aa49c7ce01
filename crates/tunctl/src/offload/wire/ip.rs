//! An IP packet of either version, for code that handles both.

use super::*;

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
