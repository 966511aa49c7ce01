//! Devices against the real kernel: creation, flags, the TUN ioctls, packets in and out,
//! lifetime, bad input, fd hygiene. Each test works in namespaces it creates and removes.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use common::{ip_flags, ip_link, privileged, TestNs};
use tunctl::{Address, Device, ErrorKind, Flags, Kind, MacAddr, Namespace, Offload, PacketInfo};

fn tun_in(t: &TestNs) -> Device {
    Device::builder()
        .tun()
        .name("tun%d")
        .namespace(t.ns.clone())
        .create()
        .expect("create tun")
}

/// A tun with `local` peer `peer` (/32), up.
fn p2p_tun(t: &TestNs, local: Ipv4Addr, peer: Ipv4Addr) -> Device {
    let dev = tun_in(t);
    dev.link()
        .unwrap()
        .add(&Address::point_to_point(local.into(), peer.into()))
        .unwrap();
    dev.up().unwrap();
    dev
}

/// Receives until a packet matching `want` arrives, for at most 5 s.
fn recv_matching(dev: &Device, want: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        if let Some(n) = dev
            .recv_timeout(&mut buf, Duration::from_millis(200))
            .unwrap()
        {
            if want(&buf[..n]) {
                return buf[..n].to_vec();
            }
        }
    }
    panic!("no matching packet on {} within 5 s", dev.name());
}

fn is_udp_to(pkt: &[u8], dst: Ipv4Addr, port: u16) -> bool {
    pkt.len() >= 28
        && pkt[0] >> 4 == 4
        && pkt[9] == 17
        && pkt[16..20] == dst.octets()
        && pkt[22..24] == port.to_be_bytes()
}

#[test]
fn seed_default_is_a_kernel_named_tap_without_pi() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let dev = Device::builder().namespace(t.ns.clone()).create().unwrap();
    assert_eq!(dev.name(), "tap0", "a fresh namespace's first tap");
    assert_eq!(dev.kind(), Kind::Tap);
    assert_eq!(dev.flags().unwrap(), Flags::TAP | Flags::NO_PI);
    let link = ip_link(Some(&t.name), "tap0").expect("ip sees tap0");
    assert_eq!(link["linkinfo"]["info_data"]["type"], "tap");
    assert_eq!(link["linkinfo"]["info_data"]["pi"], false);
    assert_eq!(link["linkinfo"]["info_data"]["persist"], false);
    let second = Device::builder().namespace(t.ns.clone()).create().unwrap();
    assert_eq!(second.name(), "tap1");
    // The seed's original test case "create": tun, no_pi, passive, then destroy.
    let tun = Device::builder()
        .tun()
        .name("tuncer")
        .namespace(t.ns.clone())
        .create()
        .unwrap();
    assert_eq!(tun.flags().unwrap(), Flags::TUN | Flags::NO_PI);
    tun.destroy().unwrap();
    assert!(ip_link(Some(&t.name), "tuncer").is_none());
}

#[test]
fn templates_and_flags_read_back_from_the_kernel() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let a = Device::builder()
        .tun()
        .name("lab%d")
        .namespace(t.ns.clone())
        .create()
        .unwrap();
    let b = Device::builder()
        .tun()
        .name("lab%d")
        .namespace(t.ns.clone())
        .create()
        .unwrap();
    assert_eq!((a.name(), b.name()), ("lab0", "lab1"));
    let pi = Device::builder()
        .tap()
        .name("pi0")
        .packet_info(true)
        .vnet_hdr(true)
        .one_queue(true)
        .namespace(t.ns.clone())
        .create()
        .unwrap();
    let flags = pi.flags().unwrap();
    assert!(flags.contains(Flags::TAP | Flags::VNET_HDR));
    assert!(!flags.contains(Flags::NO_PI));
    let link = ip_link(Some(&t.name), "pi0").unwrap();
    assert_eq!(link["linkinfo"]["info_data"]["pi"], true);
    assert_eq!(link["linkinfo"]["info_data"]["vnet_hdr"], true);
    let features = pi.features().unwrap();
    assert!(features
        .contains(Flags::TUN | Flags::TAP | Flags::NO_PI | Flags::MULTI_QUEUE | Flags::VNET_HDR));
    assert_eq!(tunctl::kernel_features().unwrap(), features);
}

#[test]
fn multi_queue_has_one_fd_per_queue_and_queues_can_be_disabled() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let dev = Device::builder()
        .tun()
        .name("mq0")
        .multi_queue(3)
        .namespace(t.ns.clone())
        .create()
        .unwrap();
    assert_eq!(dev.queues().len(), 3);
    let fds: Vec<i32> = dev.queues().iter().map(|q| q.as_raw_fd()).collect();
    assert!(fds[0] != fds[1] && fds[1] != fds[2]);
    let data = |t: &TestNs| ip_link(Some(&t.name), "mq0").unwrap()["linkinfo"]["info_data"].clone();
    assert_eq!(data(&t)["multi_queue"], true);
    assert_eq!(data(&t)["numqueues"], 3);
    dev.queues()[2].set_enabled(false).unwrap();
    assert_eq!(data(&t)["numqueues"], 2);
    assert_eq!(data(&t)["numdisabled"], 1);
    let info = dev.info().unwrap().tun.unwrap();
    assert_eq!((info.queues, info.disabled_queues), (Some(2), Some(1)));
    dev.queues()[2].set_enabled(true).unwrap();
    assert_eq!(data(&t)["numqueues"], 3);
    // A second process-side attach joins the same device; a single-queue open would not.
    let more = Device::builder()
        .tun()
        .name("mq0")
        .multi_queue(1)
        .namespace(t.ns.clone())
        .open()
        .unwrap();
    assert_eq!(data(&t)["numqueues"], 4);
    let err = Device::builder()
        .tun()
        .name("mq0")
        .namespace(t.ns.clone())
        .open()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FlagMismatch, "{err}");
    drop(more);
    for bad in [0, tunctl::MAX_QUEUES + 1] {
        let err = Device::builder()
            .tun()
            .multi_queue(bad)
            .namespace(t.ns.clone())
            .create()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
    // A queue already in that state is the kernel's EINVAL; a device deleted from outside
    // is Gone, either way.
    let err = dev.queues()[1].set_enabled(true).unwrap_err();
    assert_eq!(
        (err.kind(), err.raw_os_error()),
        (ErrorKind::Os, Some(libc::EINVAL)),
        "{err}"
    );
    common::ip_ok(&t.name, &["link", "del", "mq0"]);
    for enable in [false, true] {
        let err = dev.queues()[0].set_enabled(enable).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Gone, "{err}");
    }
}

#[test]
fn owner_and_group_are_set_by_value() {
    if !privileged() {
        return;
    }
    let _g = common::shared();
    // In the root namespace, to read /sys/class/net (no address is ever put on it).
    let name = common::unique("own");
    let _cleanup = common::RootDev(name.clone());
    let dev = Device::builder().tun().name(&name).create().unwrap();
    dev.set_owner(1000).unwrap();
    dev.set_group(2345).unwrap();
    let sys = |f: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{name}/{f}"))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(sys("owner"), "1000");
    assert_eq!(sys("group"), "2345");
    let tun = dev.info().unwrap().tun.unwrap();
    assert_eq!((tun.owner, tun.group), (Some(1000), Some(2345)));
    let link = ip_link(None, &name).unwrap();
    assert_eq!(link["linkinfo"]["info_data"]["group"], 2345);
    // The tun_flags file says what the kernel holds: 0x1001 = TUN | NO_PI.
    assert_eq!(sys("tun_flags"), "0x1001");
    dev.set_persist(true).unwrap();
    assert_eq!(sys("tun_flags"), "0x1801");
    dev.destroy().unwrap();
    assert!(!std::path::Path::new(&format!("/sys/class/net/{name}")).exists());
}

#[test]
fn persistent_device_stays_up_with_addresses_until_destroyed() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let dev = Device::builder()
        .tap()
        .name("keep0")
        .namespace(t.ns.clone())
        .create()
        .unwrap();
    dev.set_persist(true).unwrap();
    assert!(dev.is_persistent().unwrap());
    dev.add_address("10.44.0.1/24".parse().unwrap()).unwrap();
    dev.up().unwrap();
    drop(dev);
    let link = ip_link(Some(&t.name), "keep0").expect("persistent device outlives its fd");
    assert!(ip_flags(&link).contains(&"UP".to_string()));
    assert!(ip_flags(&link).contains(&"NO-CARRIER".to_string()));
    assert_eq!(
        common::ip_addrs(Some(&t.name), "keep0")[0]["local"],
        "10.44.0.1"
    );
    // Reopen it (same flags), then destroy: gone although persistent.
    let again = Device::builder()
        .tap()
        .name("keep0")
        .namespace(t.ns.clone())
        .open()
        .unwrap();
    assert!(again.is_persistent().unwrap());
    again.destroy().unwrap();
    assert!(ip_link(Some(&t.name), "keep0").is_none());
    // Dropping a non-persistent device removes it.
    let temp = Device::builder()
        .tap()
        .name("temp0")
        .namespace(t.ns.clone())
        .create()
        .unwrap();
    assert!(ip_link(Some(&t.name), "temp0").is_some());
    drop(temp);
    assert!(ip_link(Some(&t.name), "temp0").is_none());
}

#[test]
fn passive_read_of_a_kernel_packet_after_up_and_send_it_back() {
    // The seed's README "passive mode" session, step by step: create() gives tap0,
    // up(Ref, "192.168.123.4"), FD = getfd(Ref), read(FD, 1500) returns a frame the kernel
    // sent after up (IPv6 router solicitation / MLD), destroy(Ref). Also its "recvsend" and
    // "readwrite" test cases: the frame read is written back.
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let dev = Device::builder().namespace(t.ns.clone()).create().unwrap();
    assert_eq!(dev.name(), "tap0");
    dev.add_address("192.168.123.4".parse().unwrap()).unwrap();
    dev.up().unwrap();
    assert_eq!(
        common::ip_addrs(Some(&t.name), "tap0")[0]["prefixlen"],
        32,
        "the seed's /32"
    );
    // getfd + read: the raw fd works with plain read(2), outside our API.
    let fd = dev.as_raw_fd();
    let mut buf = [0u8; 1500];
    let deadline = Instant::now() + Duration::from_secs(5);
    let frame = loop {
        assert!(Instant::now() < deadline, "no frame within 5 s");
        // SAFETY: `fd` is open for the life of `dev`; `buf` is a valid writable buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 14 && buf[12..14] == [0x86, 0xdd] {
            break buf[..n as usize].to_vec();
        }
        if n < 0 {
            let err = std::io::Error::last_os_error();
            assert_eq!(
                err.raw_os_error(),
                Some(libc::EAGAIN),
                "non-blocking fd: {err}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert_eq!(
        &frame[0..2],
        &[0x33, 0x33],
        "IPv6 multicast destination MAC"
    );
    assert_eq!(dev.send(&frame).unwrap(), frame.len());
    // recv through the API sees kernel frames too.
    let again = recv_matching(&dev, |f| f.len() >= 14 && f[12..14] == [0x86, 0xdd]);
    assert_eq!(&again[0..2], &[0x33, 0x33]);
    dev.destroy().unwrap();
    assert!(ip_link(Some(&t.name), "tap0").is_none());
}

#[test]
fn tun_packets_cross_in_both_directions() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let (local, peer) = (Ipv4Addr::new(10, 45, 0, 1), Ipv4Addr::new(10, 45, 0, 2));
    let dev = p2p_tun(&t, local, peer);
    let sock =
        t.ns.run(|| UdpSocket::bind((local, 4000)))
            .unwrap()
            .unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    // Out: the kernel routes to the peer through the tun; we read the datagram.
    sock.send_to(b"hello tun", (peer, 5000)).unwrap();
    let pkt = recv_matching(&dev, |p| is_udp_to(p, peer, 5000));
    assert_eq!(&pkt[28..], b"hello tun");
    // In: we write a datagram from the peer; the socket in the namespace receives it.
    let reply = common::udp_packet(peer, local, 5000, 4000, b"hello back");
    assert_eq!(dev.send(&reply).unwrap(), reply.len());
    let mut buf = [0u8; 64];
    let (n, from) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello back");
    assert_eq!(from, (peer, 5000).into());
    // N sends are N packets: the kernel counts each write as one received packet.
    let stats = |t: &TestNs| ip_json_stats(&t.name, dev.name());
    let before = stats(&t);
    for _ in 0..100 {
        dev.send(&reply).unwrap();
    }
    assert_eq!(stats(&t) - before, 100);
}

fn ip_json_stats(ns: &str, name: &str) -> u64 {
    let v = common::ip_json(Some(ns), &["-s", "link", "show", "dev", name]);
    v[0]["stats64"]["rx"]["packets"].as_u64().unwrap()
}

#[test]
fn packet_info_header_is_decoded_in_network_order() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let (local, peer) = (Ipv4Addr::new(10, 46, 0, 1), Ipv4Addr::new(10, 46, 0, 2));
    let dev = Device::builder()
        .tun()
        .name("pi%d")
        .packet_info(true)
        .namespace(t.ns.clone())
        .create()
        .unwrap();
    dev.link()
        .unwrap()
        .add(&Address::point_to_point(local.into(), peer.into()))
        .unwrap();
    dev.up().unwrap();
    let sock = t.ns.run(|| UdpSocket::bind((local, 0))).unwrap().unwrap();
    sock.send_to(b"pi", (peer, 5001)).unwrap();
    let pkt = recv_matching(&dev, |p| p.len() > 4 && is_udp_to(&p[4..], peer, 5001));
    let (pi, payload) = PacketInfo::parse(&pkt).unwrap();
    assert_eq!(pi.proto, PacketInfo::IPV4);
    assert_eq!(pi.flags, 0);
    assert_eq!(payload[0] >> 4, 4);
    // Writing needs the header too.
    let mut out = PacketInfo::new(PacketInfo::IPV4).to_bytes().to_vec();
    out.extend_from_slice(&common::udp_packet(peer, local, 1, 2, b"x"));
    dev.send(&out).unwrap();
}

#[test]
fn receive_modes_truncation_and_bad_packets() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let (local, peer) = (Ipv4Addr::new(10, 47, 0, 1), Ipv4Addr::new(10, 47, 0, 2));
    let dev = p2p_tun(&t, local, peer);
    let mut buf = [0u8; 2048];
    // Drain what the kernel sent on up, then: non-blocking and timed receive see nothing.
    while dev
        .recv_timeout(&mut buf, Duration::from_millis(300))
        .unwrap()
        .is_some()
    {}
    assert_eq!(dev.try_recv(&mut buf).unwrap(), None);
    let start = Instant::now();
    assert_eq!(
        dev.recv_timeout(&mut buf, Duration::from_millis(200))
            .unwrap(),
        None
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(190) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    // A short buffer reports truncation instead of silently dropping the tail.
    let sock = t.ns.run(|| UdpSocket::bind((local, 0))).unwrap().unwrap();
    sock.send_to(&[7u8; 500], (peer, 5002)).unwrap();
    let mut small = [0u8; 100];
    let deadline = Instant::now() + Duration::from_secs(5);
    let err = loop {
        assert!(Instant::now() < deadline, "no packet");
        match dev.recv_timeout(&mut small, Duration::from_millis(200)) {
            Err(e) => break e,
            Ok(_) => continue,
        }
    };
    assert_eq!(err.kind(), ErrorKind::Truncated, "{err}");
    assert!(err.to_string().contains("100-byte buffer"), "{err}");
    // Garbage and empty writes fail for that call only; the device lives on.
    let err = dev.send(&[0xffu8; 20]).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    assert_eq!(dev.send(&[]).unwrap_err().kind(), ErrorKind::InvalidInput);
    let ok = common::udp_packet(peer, local, 1, 2, b"still alive");
    assert_eq!(dev.send(&ok).unwrap(), ok.len());
}

#[test]
fn destroy_wakes_blocked_reader_and_closes_every_operation() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let dev = tun_in(&t);
    let name = dev.name().to_string();
    let woke = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut buf = [0u8; 1500];
            // Blocks until destroyed: no packet comes to a down device.
            dev.recv(&mut buf)
        });
        std::thread::sleep(Duration::from_millis(200));
        let start = Instant::now();
        dev.destroy().unwrap();
        let res = reader.join().unwrap();
        (res, start.elapsed())
    });
    assert_eq!(woke.0.unwrap_err().kind(), ErrorKind::Closed);
    assert!(woke.1 < Duration::from_secs(3), "{:?}", woke.1);
    assert!(ip_link(Some(&t.name), &name).is_none());
    let mut buf = [0u8; 10];
    let closed = |r: tunctl::Result<()>| assert_eq!(r.unwrap_err().kind(), ErrorKind::Closed);
    closed(dev.destroy());
    closed(dev.up());
    closed(dev.set_persist(true));
    closed(dev.set_mtu(1400));
    closed(dev.recv(&mut buf).map(drop));
    closed(dev.send(&[0x45; 20]).map(drop));
    closed(dev.flags().map(drop));
    assert!(dev
        .destroy()
        .unwrap_err()
        .to_string()
        .starts_with(&format!("{name}: destroy: ")));
}

#[test]
fn destroy_of_a_device_moved_away_still_wakes_readers() {
    // The kernel does not detach a device that moved to another namespace, so only the
    // device's own wake-up eventfd can end a blocked read.
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let elsewhere = TestNs::new();
    let dev = tun_in(&t);
    common::ip_ok(
        &t.name,
        &["link", "set", "dev", dev.name(), "netns", &elsewhere.name],
    );
    let res = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut buf = [0u8; 1500];
            dev.recv(&mut buf)
        });
        std::thread::sleep(Duration::from_millis(200));
        dev.destroy().unwrap();
        reader.join().unwrap()
    });
    assert_eq!(res.unwrap_err().kind(), ErrorKind::Closed);
    // It was no longer persistent, so dropping the fds removes it from where it went.
    let name = dev.name().to_string();
    drop(dev);
    assert!(ip_link(Some(&elsewhere.name), &name).is_none());
}

#[test]
fn timeouts_and_buffers_at_the_edges() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let (local, peer) = (Ipv4Addr::new(10, 49, 0, 1), Ipv4Addr::new(10, 49, 0, 2));
    let dev = p2p_tun(&t, local, peer);
    // Duration::MAX means "no limit", not a panic.
    let pkt = common::udp_packet(peer, local, 1, 2, b"x");
    assert_eq!(
        dev.queues()[0].send_timeout(&pkt, Duration::MAX).unwrap(),
        Some(pkt.len())
    );
    let sock = t.ns.run(|| UdpSocket::bind((local, 0))).unwrap().unwrap();
    sock.send_to(b"edge", (peer, 5009)).unwrap();
    let mut buf = [0u8; 2048];
    let n = loop {
        let n = dev.recv_timeout(&mut buf, Duration::MAX).unwrap().unwrap();
        if is_udp_to(&buf[..n], peer, 5009) {
            break n;
        }
    };
    assert_eq!(&buf[28..n], b"edge");
    // A vnet_hdr device needs room for its header: a clear error, nothing consumed.
    let vnet = Device::builder()
        .tap()
        .vnet_hdr(true)
        .namespace(t.ns.clone())
        .create()
        .unwrap();
    let err = vnet.try_recv(&mut [0u8; 4]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    // More than 8 unicast MACs would silently disable the kernel's filter: refused.
    let macs: Vec<MacAddr> = (1..=9).map(|i| MacAddr([2, 0, 0, 0, 0, i])).collect();
    assert_eq!(
        vnet.set_mac_filter(false, &macs).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    vnet.set_mac_filter(false, &macs[..8]).unwrap();
}

#[test]
fn every_fd_a_device_opens_is_close_on_exec() {
    let Some((mut t, _g)) = common::privileged_ns() else {
        return;
    };
    t.release();
    let _x = common::exclusive();
    let before: Vec<String> = common::open_fds().into_iter().map(|(fd, _)| fd).collect();
    let dev = Device::builder()
        .tun()
        .multi_queue(2)
        .namespace(t.ns.clone())
        .create()
        .unwrap();
    let ns_fd = dev.namespace_fd().unwrap();
    let packets = dev.activate(2).unwrap();
    let new: Vec<(String, String)> = common::open_fds()
        .into_iter()
        .filter(|(fd, _)| !before.contains(fd))
        .collect();
    assert!(
        new.len() >= 6,
        "queues, eventfds, netlink socket, namespace fd, reader dups: {new:?}"
    );
    for (fd, target) in &new {
        let Ok(fd) = fd.parse::<i32>() else { continue };
        if !std::path::Path::new(&format!("/proc/self/fdinfo/{fd}")).exists() {
            continue; // closed meanwhile (read_dir's own fd)
        }
        let flags = common::fdinfo_flags(fd);
        assert_ne!(
            flags & 0o2000000,
            0,
            "fd {fd} ({target}) lacks O_CLOEXEC: flags {flags:o}"
        );
    }
    drop((packets, ns_fd, dev));
}

#[test]
fn device_deleted_from_outside_is_reported_as_gone() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let dev = tun_in(&t);
    common::ip_ok(&t.name, &["link", "del", dev.name()]);
    let mut buf = [0u8; 100];
    let err = dev
        .recv_timeout(&mut buf, Duration::from_millis(100))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Gone, "{err}");
    assert_eq!(dev.send(&[0x45; 20]).unwrap_err().kind(), ErrorKind::Gone);
    // destroy() of a device already gone succeeds, once.
    dev.destroy().unwrap();
}

#[test]
fn tun_ioctls_take_effect() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let tap = Device::builder()
        .tap()
        .name("io0")
        .vnet_hdr(true)
        .namespace(t.ns.clone())
        .create()
        .unwrap();
    // TUNSETSNDBUF / TUNGETSNDBUF
    tap.set_sndbuf(123_456).unwrap();
    assert_eq!(tap.sndbuf().unwrap(), 123_456);
    assert_eq!(
        tap.set_sndbuf(0).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    // TUNSETVNETHDRSZ / TUNGETVNETHDRSZ
    assert_eq!(tap.vnet_hdr_size().unwrap(), 10);
    tap.set_vnet_hdr_size(12).unwrap();
    assert_eq!(tap.vnet_hdr_size().unwrap(), 12);
    assert!(
        tap.set_vnet_hdr_size(4).is_err(),
        "below sizeof(virtio_net_hdr)"
    );
    // TUNSETOFFLOAD (by value)
    tap.set_offload(Offload::CSUM | Offload::TSO4 | Offload::TSO6)
        .unwrap();
    assert!(tap
        .set_offload(Offload::from_bits_retain(0x8000_0000))
        .is_err());
    // TUNSETCARRIER
    tap.set_carrier(false).unwrap();
    assert_eq!(tap.info().unwrap().carrier, Some(false));
    tap.set_carrier(true).unwrap();
    assert_eq!(tap.info().unwrap().carrier, Some(true));
    // TUNSETLINK: only while down; ARPHRD_NONE shows as link/none.
    tap.set_link_type(0xfffe).unwrap();
    assert_eq!(ip_link(Some(&t.name), "io0").unwrap()["link_type"], "none");
    tap.set_link_type(1).unwrap();
    tap.up().unwrap();
    assert_eq!(
        tap.set_link_type(0xfffe).unwrap_err().kind(),
        ErrorKind::Busy
    );
    // TUNGETDEVNETNS: the device's namespace is the test's namespace.
    use std::os::linux::fs::MetadataExt;
    let nsfd = tap.namespace_fd().unwrap();
    let via_fd = std::fs::metadata(format!("/proc/self/fd/{}", nsfd.as_raw_fd()))
        .unwrap()
        .st_ino();
    let via_name = std::fs::metadata(format!("/run/netns/{}", t.name))
        .unwrap()
        .st_ino();
    assert_eq!(via_fd, via_name);
}

#[test]
fn mac_filter_drops_frames_not_addressed_to_the_reader() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let dev = Device::builder()
        .tap()
        .name("flt0")
        .namespace(t.ns.clone())
        .create()
        .unwrap();
    dev.add_address("10.48.0.1/24".parse().unwrap()).unwrap();
    dev.up().unwrap();
    let sock =
        t.ns.run(|| UdpSocket::bind((Ipv4Addr::new(10, 48, 0, 1), 0)))
            .unwrap()
            .unwrap();
    sock.set_broadcast(true).unwrap();
    let is_probe = |f: &[u8]| {
        f.len() >= 42
            && f[0..6] == [0xff; 6]
            && f[12..14] == [8, 0]
            && f[36..38] == 6000u16.to_be_bytes()
    };
    let mut buf = [0u8; 2048];
    let saw_probe = |dev: &Device, buf: &mut [u8]| {
        sock.send_to(b"probe", (Ipv4Addr::new(10, 48, 0, 255), 6000))
            .unwrap();
        let deadline = Instant::now() + Duration::from_millis(800);
        while Instant::now() < deadline {
            if let Some(n) = dev.recv_timeout(buf, Duration::from_millis(100)).unwrap() {
                if is_probe(&buf[..n]) {
                    return true;
                }
            }
        }
        false
    };
    assert!(
        saw_probe(&dev, &mut buf),
        "broadcast reaches an unfiltered tap"
    );
    let me: MacAddr = "02:00:00:00:48:01".parse().unwrap();
    dev.set_mac_filter(false, &[me]).unwrap();
    assert!(
        !saw_probe(&dev, &mut buf),
        "filtered: only frames to 02:00:00:00:48:01"
    );
    dev.set_mac_filter(true, &[me]).unwrap();
    assert!(
        saw_probe(&dev, &mut buf),
        "all_multicast lets broadcast through"
    );
    dev.set_mac_filter(false, &[]).unwrap();
    assert!(saw_probe(&dev, &mut buf), "filter removed");
    // A tun device has no MAC filter.
    let tun = tun_in(&t);
    assert!(tun.set_mac_filter(false, &[me]).is_err());
}

/// Classic BPF on a tap (TUNATTACHFILTER): a program that passes only IPv4 UDP keeps ICMP
/// from the reader while UDP still arrives; detaching restores everything. The Erlang
/// original's TODO "tun filtering".
#[test]
fn a_classic_filter_passes_only_what_it_accepts() {
    use tunctl::filter::{Instruction as I, *};
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let dev = Device::builder()
        .tap()
        .name("bpf0")
        .namespace(t.ns.clone())
        .create()
        .unwrap();
    dev.add_address("10.49.0.1/24".parse().unwrap()).unwrap();
    dev.up().unwrap();
    let udp =
        t.ns.run(|| UdpSocket::bind((Ipv4Addr::new(10, 49, 0, 1), 0)))
            .unwrap()
            .unwrap();
    udp.set_broadcast(true).unwrap();
    // A raw ICMP socket in the namespace: echo requests to the broadcast address need no ARP.
    let icmp =
        t.ns.run(|| {
            // SAFETY: plain socket calls on a fresh fd that OwnedFd then owns.
            unsafe {
                let fd = libc::socket(
                    libc::AF_INET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::IPPROTO_ICMP,
                );
                assert!(fd >= 0);
                let on: libc::c_int = 1;
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_BROADCAST,
                    (&on as *const libc::c_int).cast(),
                    4,
                );
                <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
            }
        })
        .unwrap();
    let send_icmp = || {
        let mut echo = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
        let sum = tunctl::offload::internet_checksum(&echo);
        echo[2..4].copy_from_slice(&sum.to_be_bytes());
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(Ipv4Addr::new(10, 49, 0, 255)).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sendto reads `echo` and `to` of the stated sizes.
        let n = unsafe {
            libc::sendto(
                icmp.as_raw_fd(),
                echo.as_ptr().cast(),
                echo.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(n, 8);
    };
    let ipv4_proto = |f: &[u8], proto: u8| f.len() >= 34 && f[12..14] == [8, 0] && f[23] == proto;
    // Sends one probe and reports whether the reader saw a frame of that IP protocol.
    let saw = |proto: u8| {
        if proto == 17 {
            udp.send_to(b"probe", (Ipv4Addr::new(10, 49, 0, 255), 6001))
                .unwrap();
        } else {
            send_icmp();
        }
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + Duration::from_millis(800);
        while Instant::now() < deadline {
            if let Some(n) = dev
                .recv_timeout(&mut buf, Duration::from_millis(100))
                .unwrap()
            {
                if ipv4_proto(&buf[..n], proto) {
                    return true;
                }
            }
        }
        false
    };
    assert!(saw(1) && saw(17), "both reach an unfiltered tap");
    let udp_only = [
        I::stmt(BPF_LD | BPF_H | BPF_ABS, 12),
        I::jump(BPF_JMP | BPF_JEQ | BPF_K, 0x0800, 0, 3),
        I::stmt(BPF_LD | BPF_B | BPF_ABS, 23),
        I::jump(BPF_JMP | BPF_JEQ | BPF_K, 17, 0, 1),
        I::stmt(BPF_RET | BPF_K, u32::MAX),
        I::stmt(BPF_RET | BPF_K, 0),
    ];
    dev.attach_filter(&udp_only).unwrap();
    assert!(!saw(1), "ICMP never reaches the reader through the filter");
    assert!(saw(17), "UDP still arrives");
    dev.detach_filter().unwrap();
    assert!(saw(1) && saw(17), "detached: everything arrives again");
    // Bad input is refused before the kernel sees it; eBPF by fd, detaching with None.
    assert_eq!(
        dev.attach_filter(&[]).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let tun = tun_in(&t);
    assert_eq!(
        tun.attach_filter(&udp_only).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    tun.set_filter_ebpf(None).unwrap();
    tun.set_steering_ebpf(None).unwrap();
    let not_bpf = std::fs::File::open("/dev/null").unwrap();
    assert!(tun.set_filter_ebpf(Some(not_bpf.as_fd())).is_err());
}

#[test]
fn fds_are_close_on_exec_and_from_fd_adopts_them() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let dev = Device::builder()
        .tun()
        .name("fd%d")
        .multi_queue(2)
        .namespace(t.ns.clone())
        .create()
        .unwrap();
    for q in dev.queues() {
        let flags = common::fdinfo_flags(q.as_raw_fd());
        assert_ne!(flags & 0o2000000, 0, "O_CLOEXEC in fdinfo flags {flags:o}");
        assert_eq!(
            flags & 0o4000,
            0,
            "blocking file (non-blocking calls use RWF_NOWAIT): {flags:o}"
        );
    }
    assert_eq!(dev.as_raw_fd(), dev.queues()[0].as_raw_fd());
    let copy = dev.queues()[1].as_fd().try_clone_to_owned().unwrap();
    let adopted = Device::from_fd(copy).unwrap();
    assert_eq!(adopted.name(), dev.name());
    assert_eq!(adopted.index(), dev.index());
    assert!(adopted
        .flags()
        .unwrap()
        .contains(Flags::TUN | Flags::MULTI_QUEUE));
    adopted.set_mtu(1300).unwrap();
    assert_eq!(
        dev.mtu().unwrap(),
        1300,
        "configured in the device's namespace"
    );
    let not_tun = std::fs::File::open("/dev/null").unwrap();
    let err = Device::from_fd(not_tun.into()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
}

#[test]
fn bad_input_is_refused_before_anything_is_created() {
    if !privileged() {
        return;
    }
    let _g = common::exclusive();
    let t = TestNs::new();
    let busy = tun_in(&t);
    let keep = Device::builder()
        .tap()
        .name("keep0")
        .namespace(t.ns.clone())
        .create()
        .unwrap();
    keep.set_persist(true).unwrap();
    drop(keep);
    let before_fds = common::open_fds();
    let before_links = common::links(Some(&t.name));
    let b = || Device::builder().namespace(t.ns.clone());
    let cases: Vec<(&str, tunctl::Result<Device>, ErrorKind)> = vec![
        (
            "too long",
            b().name("abcdefghijklmnop").create(),
            ErrorKind::InvalidInput,
        ),
        ("slash", b().name("a/b").create(), ErrorKind::InvalidInput),
        ("space", b().name("a b").create(), ErrorKind::InvalidInput),
        ("nul", b().name("a\0b").create(), ErrorKind::InvalidInput),
        ("dot", b().name(".").create(), ErrorKind::InvalidInput),
        ("dotdot", b().name("..").create(), ErrorKind::InvalidInput),
        (
            "bad template",
            b().name("x%s").create(),
            ErrorKind::InvalidInput,
        ),
        (
            "open template",
            b().name("x%d").open(),
            ErrorKind::InvalidInput,
        ),
        ("open nameless", b().open(), ErrorKind::InvalidInput),
        ("loopback", b().name("lo").create(), ErrorKind::FlagMismatch),
        (
            "other kind",
            b().tun().name("keep0").create(),
            ErrorKind::FlagMismatch,
        ),
        (
            "other pi",
            b().tap().name("keep0").packet_info(true).open(),
            ErrorKind::FlagMismatch,
        ),
        (
            "busy",
            b().tun().name(busy.name()).create(),
            ErrorKind::Busy,
        ),
        (
            "exclusive",
            b().tap().name("keep0").exclusive(true).create(),
            ErrorKind::Busy,
        ),
        ("missing", b().name("nothere0").open(), ErrorKind::NotFound),
        (
            "missing namespace",
            Device::builder()
                .namespace(Namespace::named("tunctl-no-such-ns").unwrap())
                .create(),
            ErrorKind::NotFound,
        ),
    ];
    for (what, result, kind) in cases {
        let err = result.expect_err(what);
        assert_eq!(err.kind(), kind, "{what}: {err}");
        assert!(!err.to_string().is_empty());
    }
    assert_eq!(
        common::open_fds(),
        before_fds,
        "no fd leaked by a refused request"
    );
    assert_eq!(
        common::links(Some(&t.name)),
        before_links,
        "nothing created or removed"
    );
    let msg = Device::builder()
        .name("abcdefghijklmnop")
        .create()
        .unwrap_err()
        .to_string();
    assert!(msg.contains("16 bytes long, the limit is 15"), "{msg}");
}

#[test]
fn hundreds_of_cycles_leak_no_fd_and_no_device() {
    if !privileged() {
        return;
    }
    let _g = common::exclusive();
    let t = TestNs::new();
    let other = TestNs::new();
    let before_fds = common::open_fds();
    let before_root = common::links(None);
    for i in 0..300u32 {
        let ns = if i % 2 == 0 { &t.ns } else { &other.ns };
        let kind = if i % 3 == 0 { Kind::Tun } else { Kind::Tap };
        let mut b = Device::builder()
            .kind(kind)
            .name(format!("cy{i}"))
            .namespace(ns.clone());
        if i % 5 == 0 {
            b = b.multi_queue(2);
        }
        let dev = b.create().unwrap();
        dev.set_mtu(1280 + i).unwrap();
        dev.add_address(format!("10.50.{}.1/24", i % 200).parse().unwrap())
            .unwrap();
        dev.up().unwrap();
        // Failure paths along the way.
        assert!(dev.set_mtu(10).is_err());
        assert!(Device::builder()
            .kind(kind)
            .name(dev.name())
            .namespace(ns.clone())
            .create()
            .is_err());
        assert!(Device::builder()
            .name("no/pe")
            .namespace(ns.clone())
            .create()
            .is_err());
        match i % 3 {
            0 => dev.destroy().unwrap(),
            1 => drop(dev),
            _ => {
                dev.set_persist(true).unwrap();
                dev.destroy().unwrap();
                assert!(dev.destroy().is_err());
            }
        }
    }
    assert_eq!(
        common::open_fds(),
        before_fds,
        "fd table unchanged after 300 cycles"
    );
    assert_eq!(common::links(Some(&t.name)), vec!["lo".to_string()]);
    assert_eq!(common::links(Some(&other.name)), vec!["lo".to_string()]);
    assert_eq!(common::links(None), before_root);
}
