//! Packet builders and checkers for the offload tests.

use super::checksum::{checksum, internet_checksum, pseudo_header_sum};
use super::offload_ip;
use super::wire::{IpPacket, Ipv4Packet};

pub const ACK: u8 = 0x10;

/// A flow: addresses and ports.
#[derive(Clone, Copy)]
pub struct Flow {
    pub v6: bool,
    pub sport: u16,
    pub dport: u16,
}

impl Flow {
    pub fn v4(sport: u16, dport: u16) -> Flow {
        Flow {
            v6: false,
            sport,
            dport,
        }
    }

    pub fn v6(sport: u16, dport: u16) -> Flow {
        Flow {
            v6: true,
            sport,
            dport,
        }
    }

    fn ip(&self, proto: u8, l4_len: usize) -> Vec<u8> {
        if self.v6 {
            let mut p = vec![0x60, 0, 0, 0];
            p.extend_from_slice(&(l4_len as u16).to_be_bytes());
            p.extend_from_slice(&[proto, 64]);
            p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            p
        } else {
            let mut p = vec![
                0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
            ];
            let total = (20 + l4_len) as u16;
            p[2..4].copy_from_slice(&total.to_be_bytes());
            let sum = internet_checksum(&p);
            p[10..12].copy_from_slice(&sum.to_be_bytes());
            p
        }
    }

    /// A TCP segment; with `partial`, the checksum field holds only the pseudo-header sum
    /// (as a `NEEDS_CSUM` packet from the kernel does), else the full checksum.
    pub fn tcp(&self, seq: u32, flags: u8, payload: &[u8], partial: bool) -> Vec<u8> {
        let mut p = self.ip(6, 20 + payload.len());
        let l4 = p.len();
        p.extend_from_slice(&self.sport.to_be_bytes());
        p.extend_from_slice(&self.dport.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&99u32.to_be_bytes());
        p.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        p.extend_from_slice(payload);
        finish(&mut p, l4, 16, partial);
        p
    }

    /// A TCP segment with `opts` (a multiple of 4 bytes) after the fixed header.
    pub fn tcp_opts(&self, seq: u32, flags: u8, opts: &[u8], payload: &[u8]) -> Vec<u8> {
        let thl = 20 + opts.len();
        let mut p = self.ip(6, thl + payload.len());
        let l4 = p.len();
        p.extend_from_slice(&self.sport.to_be_bytes());
        p.extend_from_slice(&self.dport.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&99u32.to_be_bytes());
        p.extend_from_slice(&[((thl / 4) as u8) << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
        p.extend_from_slice(opts);
        p.extend_from_slice(payload);
        finish(&mut p, l4, 16, false);
        p
    }

    /// Re-finishes a packet after its IP header was edited: IPv4 header checksum, then the
    /// transport checksum.
    pub fn refinish(p: &mut [u8]) {
        let ip = offload_ip(p).expect("test packet");
        let (v4, proto, l4) = (
            matches!(ip, IpPacket::V4(_)),
            ip.protocol(),
            ip.header_len(),
        );
        if v4 {
            Ipv4Packet::new_unchecked(&mut *p).fill_checksum();
        }
        let field = if proto == 6 { 16 } else { 6 };
        p[l4 + field..l4 + field + 2].fill(0);
        finish(p, l4, field, false);
    }

    /// A UDP datagram, checksummed like [`Flow::tcp`].
    pub fn udp(&self, payload: &[u8], partial: bool) -> Vec<u8> {
        let mut p = self.ip(17, 8 + payload.len());
        let l4 = p.len();
        p.extend_from_slice(&self.sport.to_be_bytes());
        p.extend_from_slice(&self.dport.to_be_bytes());
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        finish(&mut p, l4, 6, partial);
        p
    }
}

fn finish(p: &mut [u8], l4: usize, field: usize, partial: bool) {
    let ip = offload_ip(p).expect("test packet");
    let pseudo = pseudo_header_sum(ip.addrs(), ip.protocol(), p.len() - l4);
    let value = if partial {
        pseudo
    } else {
        !checksum(&p[l4..], u32::from(pseudo))
    };
    p[l4 + field..l4 + field + 2].copy_from_slice(&value.to_be_bytes());
}

/// Whether the IPv4 header checksum and the transport checksum verify.
pub fn valid(p: &[u8]) -> bool {
    let Ok(ip) = offload_ip(p) else { return false };
    if let IpPacket::V4(v4) = &ip {
        if !v4.verify_checksum() {
            return false;
        }
    }
    checksum(ip.payload(), u32::from(ip.pseudo_header_sum())) == 0xffff
}
