//! TCP segments (RFC 9293).

use super::*;

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
