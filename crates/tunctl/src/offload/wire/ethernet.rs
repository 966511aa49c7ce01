//! Ethernet II frames (RFC 894).

use super::*;

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
