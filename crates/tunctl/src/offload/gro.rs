//! GRO coalesce: consecutive TCP segments (and equal-sized UDP datagrams) of one flow,
//! merged into one super-packet with a GSO virtio-net header, so a `vnet_hdr` device takes
//! a batch in few writes. The rules follow the kernel's own GRO (tcp_gro_receive,
//! udp_gro_receive): same addresses, ports, IP TOS/TTL/DF (IPv6: traffic class, flow
//! label, hop limit), TCP options and ACK; in-order sequence numbers; only ACK/PSH flags; all
//! segments the size of the first but the last; at most 64 KiB.

use super::checksum::checksum;
use super::wire::VirtioNetHdr;
use super::wire::{
    IpPacket, IpVersion, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket, IPV4_HEADER_LEN,
    IPV6_HEADER_LEN, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_CHECKSUM_OFFSET, TCP_PSH,
    UDP_CHECKSUM_OFFSET, UDP_HEADER_LEN,
};
use super::{offload_ip, OffloadError};

/// Flows tracked per batch; past this, packets go out unmerged.
const MAX_FLOWS: usize = 128;
/// Segments per super-packet: the kernel's own GRO limit, and what a batch can split again.
pub const MAX_SEGMENTS: usize = 64;
/// IPv4 total length and IPv6 payload length are 16-bit.
const MAX_LEN: usize = 65535;

/// The reusable state of [`GroTable::coalesce`]: allocate once, use for every batch.
#[derive(Debug)]
pub struct GroTable {
    items: Vec<Item>,
    tcp: bool,
    udp: bool,
}

#[derive(Debug, Clone, Copy)]
struct Item {
    key: Key,
    head: usize,
    l4: usize,
    l4_len: usize,
    gso_size: usize,
    segs: usize,
    next_seq: u32,
    closed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    version: IpVersion,
    proto: u8,
    addrs: [u8; 32],
    ports: (u16, u16),
}

/// What coalescing needs to know of one packet: views into it, checked.
struct Seg<'a> {
    key: Key,
    ip: IpPacket<&'a [u8]>,
    /// The transport header, for TCP.
    tcp: Option<TcpPacket<&'a [u8]>>,
    l4_len: usize,
    /// The transport payload.
    data: &'a [u8],
    seq: u32,
    /// Whether it may start or join a super-packet (flags, checksum, fragments).
    mergeable: bool,
    psh: bool,
}

fn parse(p: &[u8], udp: bool, trusted: bool) -> Option<Seg<'_>> {
    let ip = offload_ip(p).ok()?;
    let mut addrs = [0u8; 32];
    let a = ip.addrs();
    addrs[..a.len()].copy_from_slice(a);
    let (version, proto) = (ip.version(), ip.protocol());
    let key = move |ports| Key {
        version,
        proto,
        addrs,
        ports,
    };
    match proto {
        PROTO_TCP => {
            let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
            let flags = tcp.flags();
            let data = tcp.payload();
            let mergeable = mergeable_ip(p, &ip, trusted)
                && !data.is_empty()
                && flags & !(TCP_ACK | TCP_PSH) == 0;
            Some(Seg {
                key: key((tcp.src_port(), tcp.dst_port())),
                ip,
                tcp: Some(tcp),
                l4_len: tcp.header_len(),
                data,
                seq: tcp.seq_number(),
                mergeable,
                psh: flags & TCP_PSH != 0,
            })
        }
        PROTO_UDP if udp => {
            let udp = UdpPacket::new_checked(ip.payload()).ok()?;
            let data = udp.payload();
            let mergeable = mergeable_ip(p, &ip, trusted)
                && !data.is_empty()
                && usize::from(udp.length()) == ip.payload().len()
                && udp.checksum() != 0;
            Some(Seg {
                key: key((udp.src_port(), udp.dst_port())),
                ip,
                tcp: None,
                l4_len: UDP_HEADER_LEN,
                data,
                seq: 0,
                mergeable,
                psh: false,
            })
        }
        _ => None,
    }
}

/// Whether a packet may take part in a merge at all: no trailing bytes past the IP length,
/// no IPv4 options, DF set on IPv4 (without it the kernel would demand consecutive IDs), and a
/// transport checksum that verifies (the merged packet's is recomputed by the kernel, so a
/// corrupt segment must not slip in).
///
/// `trusted`: the checksum is known to be valid (this code computed it, in `gso_split`).
fn mergeable_ip(p: &[u8], ip: &IpPacket<&[u8]>, trusted: bool) -> bool {
    if p.len() != ip.total_len() {
        return false;
    }
    if let IpPacket::V4(v4) = ip {
        if v4.header_len() != IPV4_HEADER_LEN || !v4.dont_frag() {
            return false;
        }
    }
    trusted || checksum(ip.payload(), u32::from(ip.pseudo_header_sum())) == 0xffff
}

/// Whether the IP headers of two packets of one flow agree where GRO requires it. `head`
/// was checked when it began its super-packet, as the same IP version.
fn same_ip(head: &[u8], ip: &IpPacket<&[u8]>) -> bool {
    match ip {
        IpPacket::V4(p) => {
            let h = Ipv4Packet::new_unchecked(head);
            h.tos() == p.tos() && h.ttl() == p.ttl() && h.dont_frag() == p.dont_frag()
        }
        IpPacket::V6(p) => {
            let h = Ipv6Packet::new_unchecked(head);
            h.traffic_class() == p.traffic_class()
                && h.flow_label() == p.flow_label()
                && h.hop_limit() == p.hop_limit()
        }
    }
}

impl Default for GroTable {
    fn default() -> GroTable {
        GroTable::new(true)
    }
}

impl GroTable {
    /// A table; with `udp`, UDP datagrams are coalesced too (the device must have accepted
    /// USO: `Offload::USO4`/`USO6`).
    pub fn new(udp: bool) -> GroTable {
        GroTable {
            items: Vec::with_capacity(MAX_FLOWS),
            tcp: true,
            udp,
        }
    }

    /// Chooses what to coalesce: TCP needs `Offload::TSO4 | TSO6` accepted by the device, UDP
    /// needs `USO4 | USO6`. With neither, every packet passes through with an empty header.
    pub fn set_protocols(&mut self, tcp: bool, udp: bool) {
        self.tcp = tcp;
        self.udp = udp;
    }

    /// Coalesces a batch in place. Packet `i` is `bufs[i][offset..offset + lens[i]]`, and
    /// `offset` leaves room for a virtio-net header in front of it. Merged packets are
    /// appended to the first of their flow (its buffer must have room: 64 KiB plus `offset`
    /// is always enough); every packet left to write gets its header at
    /// `bufs[i][offset - 10..offset]`, and its index goes to `out`, in order.
    ///
    /// Packets that cannot be merged (other protocols, garbage) are passed through with an
    /// empty header.
    ///
    /// # Errors
    ///
    /// Only [`OffloadError::NoRoom`]: `offset` below 10, or a `lens[i]` beyond its buffer
    /// (checked before anything is changed).
    pub fn coalesce<B: AsMut<[u8]>>(
        &mut self,
        bufs: &mut [B],
        lens: &mut [usize],
        offset: usize,
        out: &mut Vec<usize>,
    ) -> Result<(), OffloadError> {
        self.coalesce_trusted(bufs, lens, &[], offset, out)
    }

    /// Like [`coalesce`](GroTable::coalesce), skipping the checksum check of packet `i` when
    /// `trusted[i]` says its checksum is known to be valid (because [`gso_split`] computed
    /// it). Missing entries count as untrusted.
    ///
    /// # Errors
    ///
    /// As [`coalesce`](GroTable::coalesce).
    ///
    /// [`gso_split`]: crate::offload::gso_split
    pub fn coalesce_trusted<B: AsMut<[u8]>>(
        &mut self,
        bufs: &mut [B],
        lens: &mut [usize],
        trusted: &[bool],
        offset: usize,
        out: &mut Vec<usize>,
    ) -> Result<(), OffloadError> {
        if offset < VirtioNetHdr::LEN {
            return Err(OffloadError::NoRoom);
        }
        let n = bufs.len().min(lens.len());
        if (0..n).any(|i| bufs[i].as_mut().len() < offset + lens[i]) {
            return Err(OffloadError::NoRoom);
        }
        self.items.clear();
        out.clear();
        for i in 0..n {
            let (before, rest) = bufs.split_at_mut(i);
            let pkt = &rest[0].as_mut()[offset..offset + lens[i]];
            let known_good = trusted.get(i).copied().unwrap_or(false);
            let Some(seg) =
                parse(pkt, self.udp, known_good).filter(|s| self.tcp || s.key.proto != PROTO_TCP)
            else {
                out.push(i);
                continue;
            };
            let open = self
                .items
                .iter()
                .position(|it| !it.closed && it.key == seg.key);
            if let Some(j) = open {
                let item = &mut self.items[j];
                let head = before[item.head].as_mut();
                if seg.mergeable && merge(item, head, &mut lens[item.head], offset, &seg) {
                    continue;
                }
                // Anything else of this flow ends its super-packet, keeping the order.
                item.closed = true;
            }
            out.push(i);
            if seg.mergeable && self.items.len() < MAX_FLOWS {
                self.items.push(Item {
                    key: seg.key,
                    head: i,
                    l4: seg.ip.header_len(),
                    l4_len: seg.l4_len,
                    gso_size: seg.data.len(),
                    segs: 1,
                    next_seq: seg.seq.wrapping_add(seg.data.len() as u32),
                    closed: seg.psh,
                });
            }
        }
        for &i in out.iter() {
            let buf = bufs[i].as_mut();
            let item = self.items.iter().find(|it| it.head == i && it.segs > 1);
            let hdr = match item {
                Some(it) => finish(it, &mut buf[offset..offset + lens[i]]),
                None => VirtioNetHdr::default(),
            };
            hdr.write(&mut buf[offset - VirtioNetHdr::LEN..offset])?;
        }
        Ok(())
    }
}

/// Appends `seg`'s payload to the super-packet `head` if the GRO rules allow.
fn merge(
    item: &mut Item,
    head: &mut [u8],
    head_len: &mut usize,
    offset: usize,
    seg: &Seg<'_>,
) -> bool {
    let (l4, thl) = (item.l4, item.l4_len);
    let n = seg.data.len();
    if seg.l4_len != thl || n > item.gso_size || item.segs >= MAX_SEGMENTS {
        return false;
    }
    let new_len = *head_len + n;
    let fixed = match seg.key.version {
        IpVersion::V4 => 0,
        IpVersion::V6 => IPV6_HEADER_LEN,
    };
    if new_len - fixed > MAX_LEN || offset + new_len > head.len() {
        return false;
    }
    // The head was checked when it began the super-packet; since then it has only grown.
    let h = &head[offset..offset + *head_len];
    if !same_ip(h, &seg.ip) {
        return false;
    }
    if let Some(tcp) = &seg.tcp {
        // Same ACK number and options; in order.
        let head_tcp = TcpPacket::new_unchecked(&h[l4..]);
        if head_tcp.ack_number() != tcp.ack_number() || head_tcp.options() != tcp.options() {
            return false;
        }
        if seg.seq != item.next_seq {
            return false;
        }
    }
    head[offset + *head_len..offset + new_len].copy_from_slice(seg.data);
    *head_len = new_len;
    item.segs += 1;
    item.next_seq = item.next_seq.wrapping_add(n as u32);
    if n < item.gso_size {
        item.closed = true;
    }
    if seg.psh {
        let mut head_tcp = TcpPacket::new_unchecked(&mut head[offset + l4..offset + new_len]);
        head_tcp.set_flags(head_tcp.flags() | TCP_PSH);
        item.closed = true;
    }
    true
}

/// Fixes the lengths of a finished super-packet, puts the pseudo-header sum in its checksum
/// field (the kernel completes it: NEEDS_CSUM) and returns its virtio-net header.
fn finish(item: &Item, p: &mut [u8]) -> VirtioNetHdr {
    let total = p.len();
    let l4 = item.l4;
    // The head was checked when it began; its length fields now take in what was appended.
    let mut ip = IpPacket::new_unchecked(item.key.version, &mut *p);
    ip.set_total_len(total);
    let pseudo = ip.pseudo_header_sum();
    // VIRTIO_NET_HDR_GSO_TCPV4, _TCPV6, _UDP_L4.
    let (gso_type, csum_offset) = match (item.key.proto, item.key.version) {
        (PROTO_TCP, version) => {
            TcpPacket::new_unchecked(&mut p[l4..]).set_checksum(pseudo);
            let gso_type = if version == IpVersion::V4 { 1 } else { 4 };
            (gso_type, TCP_CHECKSUM_OFFSET)
        }
        _ => {
            let mut udp = UdpPacket::new_unchecked(&mut p[l4..]);
            udp.set_length((total - l4) as u16);
            udp.set_checksum(pseudo);
            (5, UDP_CHECKSUM_OFFSET)
        }
    };
    VirtioNetHdr {
        flags: VirtioNetHdr::NEEDS_CSUM,
        gso_type,
        hdr_len: (l4 + item.l4_len) as u16,
        gso_size: item.gso_size as u16,
        csum_start: l4 as u16,
        csum_offset: csum_offset as u16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::testpkt::{self, Flow, ACK};
    use crate::offload::{checksum, gso_split};

    const OFF: usize = 12;

    /// Runs a batch through the table; returns (header, packet) of each packet to write.
    fn gro(pkts: &[Vec<u8>], udp: bool) -> Vec<(VirtioNetHdr, Vec<u8>)> {
        let mut bufs: Vec<Vec<u8>> = pkts
            .iter()
            .map(|p| {
                let mut b = vec![0u8; OFF + 65536];
                b[OFF..OFF + p.len()].copy_from_slice(p);
                b
            })
            .collect();
        let mut lens: Vec<usize> = pkts.iter().map(Vec::len).collect();
        let mut out = Vec::new();
        GroTable::new(udp)
            .coalesce(&mut bufs, &mut lens, OFF, &mut out)
            .unwrap();
        out.iter()
            .map(|&i| {
                (
                    VirtioNetHdr::parse(&bufs[i][OFF - 10..]).unwrap(),
                    bufs[i][OFF..OFF + lens[i]].to_vec(),
                )
            })
            .collect()
    }

    /// IPv4 ID and header checksum zeroed: segmentation gives each segment its own ID.
    fn normalize(pkts: &[Vec<u8>]) -> Vec<Vec<u8>> {
        pkts.iter()
            .map(|p| {
                let mut p = p.clone();
                if p[0] >> 4 == 4 {
                    p[4..6].fill(0);
                    p[10..12].fill(0);
                }
                p
            })
            .collect()
    }

    /// Whether the written batch, split again, is exactly `want` (checksums valid).
    fn same_after_split(written: &[(VirtioNetHdr, Vec<u8>)], want: &[Vec<u8>]) -> bool {
        let got = resplit(written);
        got.iter().all(|p| testpkt::valid(p)) && normalize(&got) == normalize(want)
    }

    /// Splits every written packet back into what the kernel would see.
    fn resplit(written: &[(VirtioNetHdr, Vec<u8>)]) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        for (hdr, p) in written {
            let mut out = vec![vec![0u8; 2000]; 64];
            let mut sizes = vec![0; 64];
            let n = gso_split(p, *hdr, &mut out, &mut sizes, 0).unwrap();
            all.extend(
                out.into_iter()
                    .zip(sizes)
                    .take(n)
                    .map(|(b, s)| b[..s].to_vec()),
            );
        }
        all
    }

    fn tcp_run(flow: Flow, seq: u32, sizes: &[usize]) -> Vec<Vec<u8>> {
        let mut seq = seq;
        sizes
            .iter()
            .map(|&n| {
                let p = flow.tcp(seq, ACK, &vec![(seq % 251) as u8; n], false);
                seq = seq.wrapping_add(n as u32);
                p
            })
            .collect()
    }

    #[test]
    fn consecutive_tcp_segments_become_one_super_packet_and_split_back() {
        for flow in [Flow::v4(1, 2), Flow::v6(1, 2)] {
            let pkts = tcp_run(flow, u32::MAX - 1000, &[1000, 1000, 1000, 400]);
            let written = gro(&pkts, false);
            assert_eq!(written.len(), 1);
            let (hdr, p) = &written[0];
            assert_eq!(hdr.gso_type, if flow.v6 { 4 } else { 1 });
            assert_eq!((hdr.gso_size, hdr.flags), (1000, VirtioNetHdr::NEEDS_CSUM));
            assert_eq!(p.len(), pkts[0].len() + 2400);
            assert!(same_after_split(&written, &pkts), "split(coalesce(x)) == x");
        }
    }

    #[test]
    fn what_must_not_merge_does_not() {
        let f = Flow::v4(1, 2);
        let g = Flow::v4(3, 4);
        // A gap in sequence numbers.
        let mut gap = tcp_run(f, 0, &[100, 100]);
        gap.push(f.tcp(500, ACK, &[1; 100], false));
        assert_eq!(gro(&gap, false).len(), 2);
        // Two flows interleaved: each merges with its own.
        let (a, b) = (tcp_run(f, 0, &[100, 100]), tcp_run(g, 0, &[100, 100]));
        let mixed = vec![a[0].clone(), b[0].clone(), a[1].clone(), b[1].clone()];
        let w = gro(&mixed, false);
        assert_eq!(w.len(), 2);
        assert!(same_after_split(
            &w,
            &[a[0].clone(), a[1].clone(), b[0].clone(), b[1].clone()]
        ));
        // PSH closes a super-packet; SYN, FIN, CWR never join one.
        let mut psh = tcp_run(f, 0, &[100]);
        psh.push(f.tcp(100, ACK | 0x08, &[1; 100], false));
        psh.push(f.tcp(200, ACK, &[1; 100], false));
        assert_eq!(gro(&psh, false).len(), 2);
        for flags in [0x02, ACK | 0x01, ACK | 0x80, ACK | 0x40] {
            let mut odd = tcp_run(f, 0, &[100]);
            odd.push(f.tcp(100, flags, &[1; 100], false));
            assert_eq!(gro(&odd, false).len(), 2, "flags {flags:#x}");
        }
        // A bigger segment after a smaller one starts over.
        assert_eq!(gro(&tcp_run(f, 0, &[100, 50, 100]), false).len(), 2);
        // A different ACK number.
        let mut ack = tcp_run(f, 0, &[100]);
        let mut other = f.tcp(100, ACK, &[1; 100], false);
        other[28] ^= 1;
        ack.push(other);
        assert_eq!(gro(&ack, false).len(), 2);
        // No more than 64 segments, and no more than 64 KiB, in one super-packet.
        let many = tcp_run(f, 0, &[100; 70]);
        assert_eq!(gro(&many, false).len(), 2);
        // Trailing bytes past the IP length, a bad checksum, or no DF: not merged.
        let mut padded = tcp_run(f, 0, &[100, 100]);
        padded[1].extend_from_slice(&[0, 0]);
        assert_eq!(gro(&padded, false).len(), 2);
        let mut corrupt = tcp_run(f, 0, &[100, 100]);
        corrupt[1][50] ^= 0xff;
        assert_eq!(gro(&corrupt, false).len(), 2);
        // Trusted (checksum computed by gso_split): merged without a second pass.
        let mut bufs: Vec<Vec<u8>> = corrupt
            .iter()
            .map(|p| {
                let mut b = vec![0u8; OFF + 65536];
                b[OFF..OFF + p.len()].copy_from_slice(p);
                b
            })
            .collect();
        let mut lens: Vec<usize> = corrupt.iter().map(Vec::len).collect();
        let mut out = Vec::new();
        GroTable::new(false)
            .coalesce_trusted(&mut bufs, &mut lens, &[true, true], OFF, &mut out)
            .unwrap();
        assert_eq!(out.len(), 1);
        let mut no_df = tcp_run(f, 0, &[100, 100]);
        for p in &mut no_df {
            p[6] = 0;
            p[10..12].fill(0);
            let sum = !checksum(&p[..20], 0);
            p[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        assert_eq!(gro(&no_df, false).len(), 2);
        let big = tcp_run(f, 0, &[1400; 60]);
        let w = gro(&big, false);
        assert!(w.len() >= 2 && w.iter().all(|(_, p)| p.len() <= 65535));
        assert!(same_after_split(&w, &big));
    }

    #[test]
    fn ip_and_tcp_header_differences_break_a_run() {
        // Each case edits the second of two consecutive segments; Linux GRO flushes on each.
        type Edit = fn(&mut Vec<u8>);
        let v4_cases: [(&str, Edit); 3] = [
            ("TOS", |p| p[1] = 0x10),
            ("TTL", |p| p[8] = 7),
            ("ACK number", |p| p[31] ^= 1),
        ];
        for (what, edit) in v4_cases {
            let mut pkts = tcp_run(Flow::v4(1, 2), 0, &[100, 100]);
            edit(&mut pkts[1]);
            Flow::refinish(&mut pkts[1]);
            assert_eq!(gro(&pkts, false).len(), 2, "IPv4 {what}");
        }
        let v6_cases: [(&str, Edit); 3] = [
            ("traffic class", |p| p[1] |= 0x30),
            ("flow label", |p| p[3] = 0x42),
            ("hop limit", |p| p[7] = 9),
        ];
        for (what, edit) in v6_cases {
            let mut pkts = tcp_run(Flow::v6(1, 2), 0, &[100, 100]);
            edit(&mut pkts[1]);
            Flow::refinish(&mut pkts[1]);
            assert_eq!(gro(&pkts, false).len(), 2, "IPv6 {what}");
        }
        // Same options merge; different options (or a different header length) do not.
        let f = Flow::v4(1, 2);
        let ts = |v: u8| [1u8, 1, 8, 10, 0, 0, 0, v, 0, 0, 0, 0];
        let same = vec![
            f.tcp_opts(0, ACK, &ts(1), &[5; 100]),
            f.tcp_opts(100, ACK, &ts(1), &[5; 100]),
        ];
        let w = gro(&same, false);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].0.hdr_len, 20 + 32, "header length with options");
        assert!(same_after_split(&w, &same));
        let differ = vec![
            f.tcp_opts(0, ACK, &ts(1), &[5; 100]),
            f.tcp_opts(100, ACK, &ts(2), &[5; 100]),
        ];
        assert_eq!(gro(&differ, false).len(), 2);
        let longer = vec![
            f.tcp(0, ACK, &[5; 100], false),
            f.tcp_opts(100, ACK, &ts(1), &[5; 100]),
        ];
        assert_eq!(gro(&longer, false).len(), 2);
    }

    #[test]
    fn udp_datagrams_merge_only_when_asked() {
        for flow in [Flow::v4(7, 8), Flow::v6(7, 8)] {
            let pkts: Vec<Vec<u8>> = [1200, 1200, 700]
                .iter()
                .map(|&n| flow.udp(&vec![3; n], false))
                .collect();
            assert_eq!(gro(&pkts, false).len(), 3);
            let w = gro(&pkts, true);
            assert_eq!(w.len(), 1);
            assert_eq!(w[0].0.gso_type, 5);
            assert!(same_after_split(&w, &pkts));
        }
    }

    #[test]
    fn garbage_passes_through_and_bad_arguments_are_errors() {
        let junk = vec![
            vec![],
            vec![0x45],
            vec![0xff; 60],
            vec![0x60; 39],
            testpkt::Flow::v4(1, 2).tcp(0, ACK, &[], false),
        ];
        let w = gro(&junk, true);
        assert_eq!(w.len(), junk.len());
        assert!(w.iter().all(|(h, _)| *h == VirtioNetHdr::default()));
        let mut bufs = vec![vec![0u8; 100]];
        let mut out = Vec::new();
        assert_eq!(
            GroTable::default().coalesce(&mut bufs, &mut [10], 4, &mut out),
            Err(OffloadError::NoRoom)
        );
        assert_eq!(
            GroTable::default().coalesce(&mut bufs, &mut [95], 12, &mut out),
            Err(OffloadError::NoRoom)
        );
    }
}
