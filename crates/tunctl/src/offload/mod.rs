//! The `vnet_hdr` data path as pure functions over byte buffers: the virtio-net header
//! ([`VirtioNetHdr`]), Internet checksums, GSO split ([`gso_split`]: one super-packet read from
//! a device into MTU-sized packets) and GRO coalesce ([`GroTable`]: many packets into few
//! super-packets to write to a device), for TCP and UDP over IPv4 and IPv6.
//!
//! Nothing here allocates or panics: every length is checked before it is trusted, and bad
//! input is an [`OffloadError`]. The functions take caller-owned buffers with an `offset`,
//! so a tunnel can keep room (headroom) for its own header in front of each packet.

mod checksum;
mod gro;
mod gso;
mod hdr;

pub use checksum::{checksum, pseudo_header_sum};
pub use gro::{GroTable, MAX_SEGMENTS};
pub use gso::gso_split;
pub use hdr::{GsoType, VirtioNetHdr};

/// Why a packet could not be split, coalesced or parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OffloadError {
    /// Shorter than the header it must carry.
    Truncated,
    /// A length or offset field points outside the packet or contradicts another.
    BadHeader,
    /// Not IPv4/IPv6 carrying TCP/UDP, or a GSO type this code does not handle.
    Unsupported,
    /// More segments than output buffers, or an output buffer too small.
    NoRoom,
}

impl std::fmt::Display for OffloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OffloadError::Truncated => "packet shorter than its headers",
            OffloadError::BadHeader => "inconsistent virtio-net, IP or transport header",
            OffloadError::Unsupported => {
                "not a TCP or UDP packet over IPv4 or IPv6 that can be offloaded"
            }
            OffloadError::NoRoom => "not enough output buffers, or a buffer too small",
        })
    }
}

impl std::error::Error for OffloadError {}

/// IP protocol numbers used here.
pub(crate) const PROTO_TCP: u8 = 6;
pub(crate) const PROTO_UDP: u8 = 17;

/// The layer-3 facts of an IP packet that segmentation and coalescing need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ip {
    pub v6: bool,
    /// Length of the IP header (IPv4 with options, or the fixed IPv6 header).
    pub header_len: usize,
    /// Transport protocol.
    pub proto: u8,
    /// Total length the IP header claims (header + payload).
    pub total_len: usize,
}

impl Ip {
    /// Parses an IPv4 header (any options) or a fixed IPv6 header with no extension headers.
    pub fn parse(packet: &[u8]) -> Result<Ip, OffloadError> {
        let first = *packet.first().ok_or(OffloadError::Truncated)?;
        match first >> 4 {
            4 => {
                if packet.len() < 20 {
                    return Err(OffloadError::Truncated);
                }
                let header_len = usize::from(first & 0x0f) * 4;
                let total_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
                if header_len < 20 || total_len < header_len || total_len > packet.len() {
                    return Err(OffloadError::BadHeader);
                }
                // Fragments cannot be segmented or merged.
                let frag = u16::from_be_bytes([packet[6], packet[7]]);
                if frag & 0x3fff != 0 {
                    return Err(OffloadError::Unsupported);
                }
                Ok(Ip {
                    v6: false,
                    header_len,
                    proto: packet[9],
                    total_len,
                })
            }
            6 => {
                if packet.len() < 40 {
                    return Err(OffloadError::Truncated);
                }
                let payload = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
                let total_len = 40 + payload;
                if total_len > packet.len() {
                    return Err(OffloadError::BadHeader);
                }
                Ok(Ip {
                    v6: true,
                    header_len: 40,
                    proto: packet[6],
                    total_len,
                })
            }
            _ => Err(OffloadError::Unsupported),
        }
    }

    /// The addresses, as the slice the pseudo-header checksum covers.
    pub fn addrs(self, packet: &[u8]) -> &[u8] {
        if self.v6 {
            &packet[8..40]
        } else {
            &packet[12..20]
        }
    }

    /// Writes the total length (IPv4) or payload length (IPv6) and, for IPv4, the header
    /// checksum. `packet` starts with this header.
    pub fn set_len(self, packet: &mut [u8], total_len: usize) {
        if self.v6 {
            let payload = (total_len - 40) as u16;
            packet[4..6].copy_from_slice(&payload.to_be_bytes());
        } else {
            packet[2..4].copy_from_slice(&(total_len as u16).to_be_bytes());
            packet[10..12].copy_from_slice(&[0, 0]);
            let sum = !checksum(&packet[..self.header_len], 0);
            packet[10..12].copy_from_slice(&sum.to_be_bytes());
        }
    }
}

#[cfg(test)]
pub(crate) mod testpkt;
