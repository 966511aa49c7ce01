//! The `vnet_hdr` data path as pure functions over byte buffers: the virtio-net header
//! ([`VirtioNetHdr`]), Internet checksums, GSO split ([`gso_split`]: one super-packet read from
//! a device into MTU-sized packets) and GRO coalesce ([`GroTable`]: many packets into few
//! super-packets to write to a device), for TCP and UDP over IPv4 and IPv6.
//!
//! Nothing here allocates or panics: every length is checked before it is trusted, and bad
//! input is an [`OffloadError`]. The functions take caller-owned buffers with an `offset`,
//! so a tunnel can keep room (headroom) for its own header in front of each packet. Headers
//! are read and written through the zero-copy views of [`wire`], which check a packet's
//! lengths once, when the view is made.

mod checksum;
mod gro;
mod gso;
pub mod wire;

pub use checksum::{checksum, internet_checksum, pseudo_header_sum};
pub use gro::{GroTable, MAX_SEGMENTS};
pub use gso::gso_split;
pub use wire::{GsoType, VirtioNetHdr};

use wire::IpPacket;

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

/// The IP packet GSO and GRO work on: IPv4 (options allowed) or IPv6 (no extension
/// headers: its next header is taken as the transport), checked, and not a fragment
/// (fragments cannot be segmented or merged: [`OffloadError::Unsupported`]).
pub(crate) fn offload_ip(packet: &[u8]) -> Result<IpPacket<&[u8]>, OffloadError> {
    let ip = IpPacket::new_checked(packet)?;
    if let IpPacket::V4(v4) = &ip {
        if v4.is_fragment() {
            return Err(OffloadError::Unsupported);
        }
    }
    Ok(ip)
}

#[cfg(test)]
pub(crate) mod testpkt;
