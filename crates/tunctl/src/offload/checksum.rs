//! The Internet checksum (RFC 1071) and the TCP/UDP pseudo-header sums (RFC 793, RFC 8200
//! §8.1).

/// Adds `data` to the running one's-complement sum `initial` and returns the folded 16-bit
/// sum (not complemented: complement it to get a checksum field value).
pub fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = u64::from(initial);
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        // Summing 32-bit big-endian halves of 8 bytes; carries are folded at the end.
        sum += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        sum += u64::from(u32::from_be_bytes([c[4], c[5], c[6], c[7]]));
    }
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        sum += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum of `data` (RFC 1071 §1): the one's complement of its one's-complement
/// sum, ready to store in a checksum field (an IPv4 header's, an ICMP message's). Compute it
/// with the field zeroed; over data whose field holds it, it gives zero. TCP and UDP also
/// cover a pseudo-header: use [`checksum`] with [`pseudo_header_sum`] as `initial` for them.
pub fn internet_checksum(data: &[u8]) -> u16 {
    !checksum(data, 0)
}

/// The pseudo-header sum for a transport segment of `len` bytes of protocol `proto` between
/// the addresses in `addrs` (source then destination: 8 bytes for IPv4, 32 for IPv6).
pub fn pseudo_header_sum(addrs: &[u8], proto: u8, len: usize) -> u16 {
    let mut sum = u32::from(checksum(addrs, 0));
    sum += u32::from(proto);
    sum += (len as u32) >> 16;
    sum += (len as u32) & 0xffff;
    checksum(&[], sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7], 0),
            0xddf2
        );
        // Odd length: the last byte is padded with zero.
        assert_eq!(checksum(&[0x01], 0), 0x0100);
        assert_eq!(checksum(&[], 0x1_0001), 0x0002);
        assert_eq!(internet_checksum(&[0x00, 0x01, 0xf2, 0x03]), !0xf204);
        // RFC 1071 §1: a header with its checksum in place sums to all ones.
        let mut hdr = [
            0x45u8, 0, 0, 20, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let sum = internet_checksum(&hdr);
        hdr[10..12].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(internet_checksum(&hdr), 0);
    }

    #[test]
    fn matches_a_naive_sum() {
        let data: Vec<u8> = (0..1001u32).map(|i| (i * 7 + 3) as u8).collect();
        let naive = {
            let mut s: u32 = 0;
            for c in data.chunks(2) {
                s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
            while s >> 16 != 0 {
                s = (s & 0xffff) + (s >> 16);
            }
            s as u16
        };
        for cut in [0, 1, 7, 8, 9, 1000, 1001] {
            let (a, b) = data.split_at(cut);
            // Summing in two parts only works on an even split.
            if cut % 2 == 0 {
                assert_eq!(checksum(b, u32::from(checksum(a, 0))), naive, "cut {cut}");
            }
        }
        assert_eq!(checksum(&data, 0), naive);
    }
}
