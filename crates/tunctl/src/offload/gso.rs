//! GSO split: one super-packet (as a `vnet_hdr` device hands it over) into packets no
//! larger than the MTU, with correct IP lengths, IDs, TCP sequence numbers and flags, and
//! complete checksums.

use super::checksum::checksum;
use super::wire::{
    field, IpPacket, IpVersion, TcpPacket, UdpPacket, PROTO_TCP, PROTO_UDP, TCP_CWR, TCP_FIN,
    TCP_PSH, UDP_CHECKSUM_OFFSET, UDP_HEADER_LEN,
};
use super::wire::{GsoType, VirtioNetHdr};
use super::{offload_ip, OffloadError};

/// Splits `packet` (what follows the virtio-net header `hdr` in one read from a device) into
/// segments written to `out[i][offset..]`, their lengths to `sizes[i]`; returns how many.
///
/// A packet that is not a GSO super-packet is copied as one segment, its checksum completed
/// if the header says `NEEDS_CSUM`.
///
/// # Errors
///
/// [`OffloadError::NoRoom`] when `out` or `sizes` has too few entries or a buffer is too
/// small; [`OffloadError::Unsupported`] for UFO, an IPv4 fragment or a GSO type that does not
/// match the packet; [`OffloadError::Truncated`] or [`OffloadError::BadHeader`] for malformed
/// headers.
pub fn gso_split<B: AsMut<[u8]>>(
    packet: &[u8],
    hdr: VirtioNetHdr,
    out: &mut [B],
    sizes: &mut [usize],
    offset: usize,
) -> Result<usize, OffloadError> {
    let gso = hdr.gso()?;
    if gso == GsoType::None {
        let (Some(dst), Some(size)) = (out.first_mut(), sizes.first_mut()) else {
            return Err(OffloadError::NoRoom);
        };
        let dst = dst
            .as_mut()
            .get_mut(offset..)
            .and_then(|d| d.get_mut(..packet.len()))
            .ok_or(OffloadError::NoRoom)?;
        dst.copy_from_slice(packet);
        if hdr.flags & VirtioNetHdr::NEEDS_CSUM != 0 {
            complete_checksum(
                dst,
                usize::from(hdr.csum_start),
                usize::from(hdr.csum_offset),
            )?;
        }
        *size = packet.len();
        return Ok(1);
    }
    let ip = offload_ip(packet)?;
    let l4 = ip.header_len();
    let proto = ip.protocol();
    match (gso, ip.version(), proto) {
        (GsoType::TcpV4, IpVersion::V4, PROTO_TCP)
        | (GsoType::TcpV6, IpVersion::V6, PROTO_TCP)
        | (GsoType::UdpL4, _, PROTO_UDP) => {}
        _ => return Err(OffloadError::Unsupported),
    }
    if usize::from(hdr.csum_start) != l4 {
        return Err(OffloadError::BadHeader);
    }
    let tcp = if proto == PROTO_TCP {
        Some(tcp_header(&ip)?)
    } else {
        None
    };
    let l4_len = tcp.map_or(UDP_HEADER_LEN, |t| t.header_len());
    let headers = l4 + l4_len;
    let end = ip.total_len();
    if headers >= end {
        return Err(OffloadError::BadHeader);
    }
    let gso_size = usize::from(hdr.gso_size);
    if gso_size == 0 {
        return Err(OffloadError::BadHeader);
    }
    let payload = &ip.payload()[l4_len..];
    let count = payload.len().div_ceil(gso_size);
    if count > out.len() || count > sizes.len() {
        return Err(OffloadError::NoRoom);
    }
    let ip_id = match ip {
        IpPacket::V4(v4) => v4.ident(),
        IpPacket::V6(_) => 0,
    };
    for (i, chunk) in payload.chunks(gso_size).enumerate() {
        let seg_len = headers + chunk.len();
        let seg = out[i]
            .as_mut()
            .get_mut(offset..)
            .and_then(|d| d.get_mut(..seg_len))
            .ok_or(OffloadError::NoRoom)?;
        seg[..headers].copy_from_slice(&packet[..headers]);
        seg[headers..].copy_from_slice(chunk);
        // The headers are the checked packet's; only the lengths change, to the segment's.
        let mut seg_ip = IpPacket::new_unchecked(ip.version(), &mut *seg);
        if let IpPacket::V4(v4) = &mut seg_ip {
            v4.set_ident(ip_id.wrapping_add(i as u16));
        }
        seg_ip.set_total_len(seg_len);
        let pseudo = seg_ip.pseudo_header_sum();
        match tcp {
            Some(first) => {
                let mut t = TcpPacket::new_unchecked(&mut seg[l4..]);
                t.set_seq_number(first.seq_number().wrapping_add((i * gso_size) as u32));
                let mut flags = t.flags();
                if i + 1 != count {
                    flags &= !(TCP_FIN | TCP_PSH);
                }
                if i != 0 {
                    flags &= !TCP_CWR;
                }
                t.set_flags(flags);
                t.fill_checksum(pseudo);
            }
            None => {
                let mut u = UdpPacket::new_unchecked(&mut seg[l4..]);
                u.set_length((seg_len - l4) as u16);
                u.fill_checksum(pseudo);
            }
        }
        sizes[i] = seg_len;
    }
    Ok(count)
}

/// The TCP header of a super-packet, checked against its IP length: a header that does not
/// fit is [`OffloadError::BadHeader`] (a length field contradicts another), or
/// [`OffloadError::Truncated`] if the buffer ends before the data offset that gives its
/// length.
fn tcp_header<'a>(ip: &IpPacket<&'a [u8]>) -> Result<TcpPacket<&'a [u8]>, OffloadError> {
    TcpPacket::new_checked(ip.payload()).map_err(|_| {
        if ip.as_ref().len() <= ip.header_len() + field::tcp::DATA_OFF {
            OffloadError::Truncated
        } else {
            OffloadError::BadHeader
        }
    })
}

/// Completes a partial checksum (`NEEDS_CSUM`): the field at `start + offset` holds the
/// pseudo-header sum; the checksum covers everything from `start` to the end.
fn complete_checksum(pkt: &mut [u8], start: usize, offset: usize) -> Result<(), OffloadError> {
    let at = start.checked_add(offset).ok_or(OffloadError::BadHeader)?;
    if at + 2 > pkt.len() {
        return Err(OffloadError::BadHeader);
    }
    let mut sum = !checksum(&pkt[start..], 0);
    // A UDP checksum of zero means "none"; send it as all ones (RFC 768).
    if sum == 0 && offset == UDP_CHECKSUM_OFFSET {
        sum = 0xffff;
    }
    pkt[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::testpkt::{self, Flow};

    fn split(pkt: &[u8], hdr: VirtioNetHdr) -> Result<Vec<Vec<u8>>, OffloadError> {
        let mut out = vec![vec![0u8; 2000]; 64];
        let mut sizes = vec![0usize; 64];
        let n = gso_split(pkt, hdr, &mut out, &mut sizes, 4)?;
        Ok(out
            .into_iter()
            .zip(sizes)
            .take(n)
            .map(|(b, s)| b[4..4 + s].to_vec())
            .collect())
    }

    fn gso_hdr(
        gso_type: u8,
        l4: usize,
        l4_len: usize,
        gso_size: u16,
        csum_offset: u16,
    ) -> VirtioNetHdr {
        VirtioNetHdr {
            flags: VirtioNetHdr::NEEDS_CSUM,
            gso_type,
            hdr_len: (l4 + l4_len) as u16,
            gso_size,
            csum_start: l4 as u16,
            csum_offset,
        }
    }

    #[test]
    fn tcp4_super_packet_becomes_mtu_sized_segments() {
        let payload: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
        let flow = Flow::v4(1000, 2000);
        let pkt = flow.tcp(
            0xffff_f000,
            testpkt::ACK | TCP_PSH | TCP_FIN | TCP_CWR,
            &payload,
            true,
        );
        let segs = split(&pkt, gso_hdr(1, 20, 20, 1460, 16)).unwrap();
        assert_eq!(segs.len(), 3);
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert!(testpkt::valid(s), "segment {i} checksums");
            let want = if i < 2 { 1460 } else { 4000 - 2920 };
            assert_eq!(s.len(), 40 + want);
            assert_eq!(
                u16::from_be_bytes([s[2], s[3]]) as usize,
                s.len(),
                "IPv4 total length"
            );
            assert_eq!(
                u16::from_be_bytes([s[4], s[5]]),
                0x1234 + i as u16,
                "IPv4 id increments"
            );
            let seq = u32::from_be_bytes([s[24], s[25], s[26], s[27]]);
            assert_eq!(
                seq,
                0xffff_f000u32.wrapping_add(1460 * i as u32),
                "sequence wraps"
            );
            let flags = s[33];
            assert_eq!(
                flags & (TCP_PSH | TCP_FIN) != 0,
                i == 2,
                "PSH/FIN only on the last"
            );
            assert_eq!(flags & TCP_CWR != 0, i == 0, "CWR only on the first");
            joined.extend_from_slice(&s[40..]);
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn tcp6_and_udp_l4_split() {
        let payload = vec![0xabu8; 3000];
        let flow = Flow::v6(1, 2);
        let pkt = flow.tcp(7, testpkt::ACK, &payload, true);
        let segs = split(&pkt, gso_hdr(4, 40, 20, 1000, 16)).unwrap();
        assert_eq!(segs.len(), 3);
        for s in &segs {
            assert!(testpkt::valid(s));
            assert_eq!(
                u16::from_be_bytes([s[4], s[5]]),
                1020,
                "IPv6 payload length"
            );
        }
        for flow in [Flow::v4(5, 6), Flow::v6(5, 6)] {
            let pkt = flow.udp(&vec![1u8; 2500], true);
            let l4 = if flow.v6 { 40 } else { 20 };
            let segs = split(&pkt, gso_hdr(5, l4, 8, 1200, 6)).unwrap();
            assert_eq!(
                segs.iter().map(|s| s.len() - l4 - 8).collect::<Vec<_>>(),
                vec![1200, 1200, 100]
            );
            for s in &segs {
                assert!(testpkt::valid(s));
                assert_eq!(
                    u16::from_be_bytes([s[l4 + 4], s[l4 + 5]]) as usize,
                    s.len() - l4,
                    "UDP length"
                );
            }
        }
    }

    #[test]
    fn non_gso_packet_gets_its_checksum_completed() {
        let flow = Flow::v4(9, 10);
        let pkt = flow.tcp(1, testpkt::ACK, b"hello", true);
        let hdr = VirtioNetHdr {
            flags: VirtioNetHdr::NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 16,
            ..Default::default()
        };
        let segs = split(&pkt, hdr).unwrap();
        assert_eq!(segs.len(), 1);
        assert!(testpkt::valid(&segs[0]));
        // Without NEEDS_CSUM the packet is copied untouched.
        let plain = flow.tcp(1, testpkt::ACK, b"hello", false);
        assert_eq!(
            split(&plain, VirtioNetHdr::default()).unwrap(),
            vec![plain.clone()]
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        let flow = Flow::v4(1, 2);
        let pkt = flow.tcp(1, testpkt::ACK, &[0u8; 3000], true);
        let ok = gso_hdr(1, 20, 20, 1000, 16);
        let cases: Vec<(&str, &[u8], VirtioNetHdr, OffloadError)> = vec![
            ("empty", &[], ok, OffloadError::Truncated),
            ("short ip", &pkt[..10], ok, OffloadError::Truncated),
            ("cut payload", &pkt[..100], ok, OffloadError::BadHeader),
            (
                "gso_size 0",
                &pkt,
                VirtioNetHdr { gso_size: 0, ..ok },
                OffloadError::BadHeader,
            ),
            (
                "csum_start",
                &pkt,
                VirtioNetHdr {
                    csum_start: 24,
                    ..ok
                },
                OffloadError::BadHeader,
            ),
            (
                "v6 type on v4",
                &pkt,
                VirtioNetHdr { gso_type: 4, ..ok },
                OffloadError::Unsupported,
            ),
            (
                "udp type on tcp",
                &pkt,
                VirtioNetHdr { gso_type: 5, ..ok },
                OffloadError::Unsupported,
            ),
            (
                "ufo",
                &pkt,
                VirtioNetHdr { gso_type: 3, ..ok },
                OffloadError::Unsupported,
            ),
            (
                "unknown",
                &pkt,
                VirtioNetHdr { gso_type: 9, ..ok },
                OffloadError::Unsupported,
            ),
            (
                "too many segments",
                &pkt,
                VirtioNetHdr { gso_size: 1, ..ok },
                OffloadError::NoRoom,
            ),
        ];
        for (what, input, hdr, want) in cases {
            assert_eq!(split(input, hdr).unwrap_err(), want, "{what}");
        }
        let bad_csum = VirtioNetHdr {
            flags: 1,
            csum_start: 60000,
            csum_offset: 16,
            ..Default::default()
        };
        let small = flow.tcp(1, testpkt::ACK, &[0u8; 100], true);
        assert_eq!(
            split(&small, bad_csum).unwrap_err(),
            OffloadError::BadHeader
        );
        let mut tiny = vec![vec![0u8; 100]; 8];
        let mut sizes = [0usize; 8];
        assert_eq!(
            gso_split(&pkt, ok, &mut tiny, &mut sizes, 0),
            Err(OffloadError::NoRoom)
        );
    }
}
