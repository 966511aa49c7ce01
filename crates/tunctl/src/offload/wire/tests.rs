use super::*;
use crate::offload::testpkt::{Flow, ACK};

#[test]
fn ethernet_fields_round_trip() {
    let mut buf = [0u8; 20];
    assert_eq!(
        EthernetFrame::new_checked(&buf[..13]),
        Err(OffloadError::Truncated)
    );
    let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
    f.set_dst_addr([1, 2, 3, 4, 5, 6]);
    f.set_src_addr([7, 8, 9, 10, 11, 12]);
    f.set_ethertype(ETHERTYPE_IPV6);
    f.payload_mut().copy_from_slice(&[0xaa; 6]);
    assert_eq!(
        buf[..14],
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x86, 0xdd]
    );
    let f = EthernetFrame::new_checked(&buf[..]).unwrap();
    assert_eq!(f.dst_addr(), [1, 2, 3, 4, 5, 6]);
    assert_eq!(f.src_addr(), [7, 8, 9, 10, 11, 12]);
    assert_eq!(f.ethertype(), ETHERTYPE_IPV6);
    assert_eq!(f.payload(), &[0xaa; 6]);
    assert_eq!(f.as_ref().len(), 20);
}

#[test]
fn ipv4_fields_and_checks() {
    let mut p = Flow::v4(1000, 2000).tcp(7, ACK, b"hi", false);
    let v4 = Ipv4Packet::new_checked(&p[..]).unwrap();
    assert_eq!((v4.version(), v4.header_len(), v4.total_len()), (4, 20, 42));
    assert_eq!(
        (v4.tos(), v4.ident(), v4.ttl(), v4.protocol()),
        (0, 0x1234, 64, 6)
    );
    assert!(v4.dont_frag() && !v4.more_frags() && !v4.is_fragment());
    assert_eq!(v4.frag_offset(), 0);
    assert_eq!(v4.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(v4.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
    assert_eq!(v4.addrs(), &[10, 0, 0, 1, 10, 0, 0, 2]);
    assert!(v4.options().is_empty());
    assert_eq!(v4.payload().len(), 22);
    assert!(v4.verify_checksum());

    let mut v4 = Ipv4Packet::new_unchecked(&mut p[..]);
    v4.set_tos(0x10);
    v4.set_ttl(9);
    v4.set_ident(0xbeef);
    v4.set_dont_frag(false);
    v4.set_src_addr(Ipv4Addr::new(192, 0, 2, 1));
    v4.set_dst_addr(Ipv4Addr::new(192, 0, 2, 2));
    assert!(!v4.verify_checksum());
    v4.fill_checksum();
    assert!(v4.verify_checksum());
    assert_eq!(p[1], 0x10);
    assert_eq!(p[4..9], [0xbe, 0xef, 0, 0, 9]);
    assert_eq!(p[12..20], [192, 0, 2, 1, 192, 0, 2, 2]);

    // Trailing bytes past the total length are not payload.
    let mut padded = p.clone();
    padded.extend_from_slice(&[0, 0]);
    assert_eq!(
        Ipv4Packet::new_checked(&padded[..])
            .unwrap()
            .payload()
            .len(),
        22
    );
    // Options count in the header length.
    let mut opts = p[..20].to_vec();
    opts[0] = 0x46;
    opts.extend_from_slice(&[1, 1, 1, 0]);
    opts.extend_from_slice(&p[20..]);
    opts[2..4].copy_from_slice(&46u16.to_be_bytes());
    let v4 = Ipv4Packet::new_checked(&opts[..]).unwrap();
    assert_eq!((v4.header_len(), v4.options()), (24, &[1u8, 1, 1, 0][..]));

    let bad = |edit: fn(&mut [u8])| {
        let mut q = p.clone();
        edit(&mut q);
        Ipv4Packet::new_checked(&q[..]).unwrap_err()
    };
    assert_eq!(bad(|q| q[0] = 0x44), OffloadError::BadHeader, "IHL 4");
    assert_eq!(
        bad(|q| q[0] = 0x4f),
        OffloadError::BadHeader,
        "IHL past total"
    );
    assert_eq!(
        bad(|q| q[3] = 19),
        OffloadError::BadHeader,
        "total < header"
    );
    assert_eq!(
        bad(|q| q[3] = 43),
        OffloadError::BadHeader,
        "total > buffer"
    );
    assert_eq!(bad(|q| q[0] = 0x65), OffloadError::Unsupported, "version 6");
    assert_eq!(
        Ipv4Packet::new_checked(&p[..19]),
        Err(OffloadError::Truncated)
    );
}

#[test]
fn ipv6_fields_and_checks() {
    let mut p = Flow::v6(1, 2).udp(b"abc", false);
    let v6 = Ipv6Packet::new_checked(&p[..]).unwrap();
    assert_eq!(
        (v6.version(), v6.payload_len(), v6.next_header()),
        (6, 11, 17)
    );
    assert_eq!(
        (v6.traffic_class(), v6.flow_label(), v6.hop_limit()),
        (0, 0, 64)
    );
    assert_eq!(v6.src_addr(), "fd00::1".parse::<Ipv6Addr>().unwrap());
    assert_eq!(v6.dst_addr(), "fd00::2".parse::<Ipv6Addr>().unwrap());
    assert_eq!(v6.addrs().len(), 32);
    assert_eq!(v6.payload().len(), 11);

    let mut v6 = Ipv6Packet::new_unchecked(&mut p[..]);
    v6.set_traffic_class(0xb8);
    v6.set_flow_label(0xfff_12345);
    v6.set_hop_limit(3);
    assert_eq!(p[..4], [0x6b, 0x81, 0x23, 0x45]);
    let v6 = Ipv6Packet::new_checked(&p[..]).unwrap();
    assert_eq!((v6.traffic_class(), v6.flow_label()), (0xb8, 0x1_2345));
    assert_eq!(v6.hop_limit(), 3);

    assert_eq!(
        Ipv6Packet::new_checked(&p[..39]),
        Err(OffloadError::Truncated)
    );
    assert_eq!(
        Ipv6Packet::new_checked(&p[..50]),
        Err(OffloadError::BadHeader)
    );
    let mut v4 = p.clone();
    v4[0] = 0x45;
    assert_eq!(
        Ipv6Packet::new_checked(&v4[..]),
        Err(OffloadError::Unsupported)
    );
}

#[test]
fn ip_packet_dispatches_on_the_version() {
    for flow in [Flow::v4(1, 2), Flow::v6(1, 2)] {
        let mut p = flow.udp(b"xyz", false);
        let ip = IpPacket::new_checked(&p[..]).unwrap();
        let l4 = if flow.v6 { 40 } else { 20 };
        let version = if flow.v6 {
            IpVersion::V6
        } else {
            IpVersion::V4
        };
        assert_eq!(ip.version(), version);
        assert_eq!((ip.header_len(), ip.total_len()), (l4, l4 + 11));
        assert_eq!(ip.protocol(), PROTO_UDP);
        assert_eq!(ip.payload(), &p[l4..]);
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(ip.pseudo_header_sum()));
        p.extend_from_slice(&[0; 5]);
        let mut ip = IpPacket::new_unchecked(version, &mut p[..]);
        ip.set_total_len(l4 + 16);
        assert_eq!(ip.total_len(), l4 + 16);
        if let IpPacket::V4(v4) = &ip {
            assert!(v4.verify_checksum());
        }
        assert_eq!(ip.into_inner().len(), l4 + 16);
    }
    assert_eq!(IpPacket::new_checked(&[][..]), Err(OffloadError::Truncated));
    assert_eq!(
        IpPacket::new_checked(&[0x50; 60][..]),
        Err(OffloadError::Unsupported)
    );
}

#[test]
fn tcp_fields_checks_and_checksum() {
    let f = Flow::v4(1000, 2000);
    let opts = [1u8, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0];
    let mut p = f.tcp_opts(0xdead_beef, ACK, &opts, b"data");
    let ip = IpPacket::new_checked(&p[..]).unwrap();
    let pseudo = ip.pseudo_header_sum();
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!((tcp.src_port(), tcp.dst_port()), (1000, 2000));
    assert_eq!((tcp.seq_number(), tcp.ack_number()), (0xdead_beef, 99));
    assert_eq!((tcp.header_len(), tcp.flags()), (32, ACK));
    assert_eq!((tcp.window_len(), tcp.urgent_at()), (0xffff, 0));
    assert_eq!(tcp.options(), &opts);
    assert_eq!(tcp.payload(), b"data");
    assert!(tcp.verify_checksum(pseudo));

    let mut tcp = TcpPacket::new_unchecked(&mut p[20..]);
    tcp.set_seq_number(1);
    tcp.set_ack_number(2);
    tcp.set_flags(TCP_ACK | TCP_PSH | TCP_FIN);
    tcp.set_window_len(3);
    tcp.set_urgent_at(4);
    tcp.set_src_port(5);
    tcp.set_dst_port(6);
    tcp.payload_mut().copy_from_slice(b"DATA");
    assert!(!tcp.verify_checksum(pseudo));
    tcp.fill_checksum(pseudo);
    assert!(tcp.verify_checksum(pseudo));
    assert_eq!(
        p[20..40],
        [0, 5, 0, 6, 0, 0, 0, 1, 0, 0, 0, 2, 0x80, 0x19, 0, 3, p[36], p[37], 0, 4]
    );

    let seg = &p[20..];
    assert_eq!(
        TcpPacket::new_checked(&seg[..19]),
        Err(OffloadError::Truncated)
    );
    assert_eq!(
        TcpPacket::new_checked(&seg[..31]),
        Err(OffloadError::BadHeader)
    );
    let mut short = seg.to_vec();
    short[12] = 0x40;
    assert_eq!(
        TcpPacket::new_checked(&short[..]),
        Err(OffloadError::BadHeader)
    );
}

#[test]
fn udp_fields_and_zero_checksum() {
    let mut p = Flow::v4(53, 5353).udp(b"q", false);
    let udp = UdpPacket::new_checked(&p[20..]).unwrap();
    assert_eq!(
        (udp.src_port(), udp.dst_port(), udp.length()),
        (53, 5353, 9)
    );
    assert_eq!(udp.payload(), b"q");
    assert_eq!(
        UdpPacket::new_checked(&p[20..27]),
        Err(OffloadError::Truncated)
    );
    // Whatever the Length field says, the view is the buffer.
    let mut u = UdpPacket::new_unchecked(&mut p[20..]);
    u.set_length(500);
    assert_eq!(UdpPacket::new_checked(&p[20..]).unwrap().payload(), b"q");

    // A datagram whose checksum computes to zero carries all ones instead (RFC 768): find
    // the payload word that makes the sum come out at zero.
    let mut d = [0u8; 10];
    let mut u = UdpPacket::new_unchecked(&mut d[..]);
    u.set_length(10);
    let pseudo = 0x1234;
    u.fill_checksum(pseudo);
    let fix = u.checksum();
    u.payload_mut().copy_from_slice(&fix.to_be_bytes());
    u.fill_checksum(pseudo);
    assert_eq!(u.checksum(), 0xffff);
    assert!(u.verify_checksum(pseudo));
}

#[test]
fn virtio_view_matches_the_decoded_header() {
    let h = VirtioNetHdr {
        flags: VirtioNetHdr::NEEDS_CSUM,
        gso_type: 4 | VirtioNetHdr::GSO_ECN,
        hdr_len: 72,
        gso_size: 1428,
        csum_start: 40,
        csum_offset: 16,
    };
    let mut buf = [0u8; 14];
    let mut v = VirtioNetPacket::new_checked(&mut buf[..]).unwrap();
    v.set_header(&h);
    v.payload_mut().copy_from_slice(&[9; 4]);
    assert_eq!(buf[..10], [1, 0x84, 72, 0, 0x94, 0x05, 40, 0, 16, 0]);
    let v = VirtioNetPacket::new_checked(&buf[..]).unwrap();
    assert_eq!(v.header(), h);
    assert_eq!((v.hdr_len(), v.gso_size()), (72, 1428));
    assert_eq!((v.csum_start(), v.csum_offset()), (40, 16));
    assert_eq!(v.payload(), &[9; 4]);
    assert_eq!(
        VirtioNetPacket::new_checked(&buf[..9]),
        Err(OffloadError::Truncated)
    );
}
