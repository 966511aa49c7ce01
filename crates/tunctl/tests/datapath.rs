//! The data path against the real kernel: active mode (delivery, flow control, bounded
//! memory, hand-over, owner going away, vanishing devices), multi-queue attach/detach, and
//! no heap allocation per packet in steady state (counted by this binary's allocator).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{ip_link, TestNs};
use tunctl::{Active, Address, Device, ErrorKind, Event, Packet, Packets};

/// Counts every allocation of the process.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 55, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 55, 0, 2);

/// A point-to-point tun (LOCAL peer PEER), up, and a UDP socket on LOCAL in its namespace.
fn p2p(t: &TestNs, builder: tunctl::Builder) -> (Device, UdpSocket) {
    let dev = builder.tun().namespace(t.ns.clone()).create().unwrap();
    let spec = Address::point_to_point(LOCAL.into(), PEER.into());
    dev.link().unwrap().add(&spec).unwrap();
    dev.up().unwrap();
    let sock = t.ns.run(|| UdpSocket::bind((LOCAL, 0))).unwrap().unwrap();
    (dev, sock)
}

/// UDP datagrams to PEER:port carrying `seq` as 4 bytes; the kernel routes them into the tun.
fn send_seq(sock: &UdpSocket, port: u16, seqs: std::ops::Range<u32>) {
    for seq in seqs {
        sock.send_to(&seq.to_be_bytes(), (PEER, port)).unwrap();
    }
}

fn udp_seq(pkt: &[u8], port: u16) -> Option<u32> {
    if pkt.len() == 32 && pkt[0] >> 4 == 4 && pkt[9] == 17 && pkt[22..24] == port.to_be_bytes() {
        Some(u32::from_be_bytes([pkt[28], pkt[29], pkt[30], pkt[31]]))
    } else {
        None
    }
}

/// Receives events until `n` test packets (UDP to `port`) arrived or `wait` passed without
/// one; returns their sequence numbers. Other packets (kernel chatter) are skipped.
fn owner_gets(packets: &Packets, port: u16, n: usize, wait: Duration) -> Vec<u32> {
    let mut got = Vec::new();
    while got.len() < n {
        match packets.recv_timeout(wait).unwrap() {
            Some(Event::Packet(p)) => {
                assert_eq!(p.device(), packets.device());
                if let Some(seq) = udp_seq(&p, port) {
                    got.push(seq);
                }
            }
            Some(Event::Error(e)) => panic!("unexpected error event: {e}"),
            None => break,
        }
    }
    got
}

/// Passive reads of test packets until `wait` passes without one.
fn passive_gets(dev: &Device, port: u16, wait: Duration) -> Vec<u32> {
    let mut buf = [0u8; 2048];
    let mut got = Vec::new();
    while let Some(n) = dev.recv_timeout(&mut buf, wait).unwrap() {
        if let Some(seq) = udp_seq(&buf[..n], port) {
            got.push(seq);
        }
    }
    got
}

/// Passive reads of test packets from every queue until each is quiet for `wait`.
fn passive_gets_all(dev: &Device, port: u16, wait: Duration) -> Vec<u32> {
    let mut buf = [0u8; 2048];
    let mut got = Vec::new();
    for q in dev.queues() {
        while let Some(n) = q.recv_timeout(&mut buf, wait).unwrap() {
            if let Some(seq) = udp_seq(&buf[..n], port) {
                got.push(seq);
            }
        }
    }
    got
}

fn stats(ns: &str, dev: &str) -> serde_json::Value {
    common::ip_json(Some(ns), &["-s", "link", "show", "dev", dev])[0]["stats64"].clone()
}

#[test]
fn active_mode_delivers_every_packet_in_order_and_refuses_passive_reads() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let (dev, sock) = p2p(&t, Device::builder().name("act%d"));
    let packets = dev.activate(64).unwrap();
    let mut buf = [0u8; 100];
    let err = dev
        .recv_timeout(&mut buf, Duration::from_millis(10))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Active, "{err}");
    assert_eq!(
        dev.queues()[0].try_recv(&mut buf).unwrap_err().kind(),
        ErrorKind::Active
    );
    send_seq(&sock, 7000, 0..300);
    let got = owner_gets(&packets, 7000, 300, Duration::from_secs(2));
    assert_eq!(
        got,
        (0..300).collect::<Vec<_>>(),
        "all, in order, none refused to the owner"
    );
    assert_eq!(dev.activate(4).unwrap_err().kind(), ErrorKind::Busy);
}

#[test]
fn pause_keeps_packets_in_the_kernel_queue_and_count_delivers_exactly_n() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let (dev, sock) = p2p(&t, Device::builder().name("flow%d"));
    let packets = dev.activate(16).unwrap();
    dev.set_active(Active::On).unwrap(); // setting the current mode again: no-op
    dev.set_active(Active::Off).unwrap();
    send_seq(&sock, 7001, 0..5);
    assert!(
        owner_gets(&packets, 7001, 1, Duration::from_millis(300)).is_empty(),
        "paused"
    );
    assert_eq!(
        passive_gets(&dev, 7001, Duration::from_millis(300)),
        vec![0, 1, 2, 3, 4],
        "passive reads see them"
    );
    dev.set_active(Active::On).unwrap();
    send_seq(&sock, 7001, 5..8);
    assert_eq!(
        owner_gets(&packets, 7001, 3, Duration::from_secs(2)),
        vec![5, 6, 7]
    );
    // Count(3): exactly three, then paused.
    dev.set_active(Active::Off).unwrap();
    dev.set_active(Active::Count(3)).unwrap();
    send_seq(&sock, 7001, 10..20);
    assert_eq!(
        owner_gets(&packets, 7001, 10, Duration::from_millis(500)),
        vec![10, 11, 12]
    );
    assert_eq!(
        passive_gets(&dev, 7001, Duration::from_millis(300)),
        (13..20).collect::<Vec<_>>()
    );
    // Once: one.
    packets.set_active(Active::Once).unwrap();
    send_seq(&sock, 7001, 30..33);
    assert_eq!(
        owner_gets(&packets, 7001, 3, Duration::from_millis(500)),
        vec![30]
    );
    assert_eq!(
        passive_gets(&dev, 7001, Duration::from_millis(300)),
        vec![31, 32]
    );
    // Not active at all: set_active is an error.
    let other = Device::builder()
        .tun()
        .namespace(t.ns.clone())
        .create()
        .unwrap();
    assert_eq!(
        other.set_active(Active::On).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

/// CPU seconds this process has used (utime + stime).
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

#[test]
fn multi_queue_pause_is_idle_and_once_delivers_exactly_one() {
    let Some((mut t, _g)) = common::privileged_ns() else {
        return;
    };
    t.release();
    let _x = common::exclusive(); // CPU time is process-wide
    let (dev, _sock) = p2p(&t, Device::builder().name("mqo%d").multi_queue(4));
    let packets = dev.activate_with(8, Active::Off).unwrap();
    let before = process_cpu();
    std::thread::sleep(Duration::from_millis(600));
    let used = process_cpu() - before;
    assert!(
        used < 0.2,
        "four paused readers used {used:.2} s of CPU in 0.6 s"
    );
    // Once: exactly one packet, whichever queue it arrives on (drain kernel chatter first).
    passive_gets_all(&dev, 0, Duration::from_millis(300));
    dev.set_active(Active::Once).unwrap();
    let socks: Vec<UdpSocket> = (0..8)
        .map(|_| t.ns.run(|| UdpSocket::bind((LOCAL, 0))).unwrap().unwrap())
        .collect();
    for s in &socks {
        send_seq(s, 7020, 0..1);
    }
    assert_eq!(
        owner_gets(&packets, 7020, 8, Duration::from_millis(500)).len(),
        1
    );
    assert_eq!(
        passive_gets_all(&dev, 7020, Duration::from_millis(300)).len(),
        7,
        "the rest stayed for passive reads"
    );
}

#[test]
fn a_consumer_that_does_not_consume_costs_bounded_memory() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let (dev, sock) = p2p(&t, Device::builder().name("bnd%d"));
    let packets = dev.activate(4).unwrap();
    send_seq(&sock, 7002, 0..2000);
    std::thread::sleep(Duration::from_millis(300));
    // Hold every delivered packet: the reader has no buffer left, so at most 4 come.
    let mut held: Vec<Packet> = Vec::new();
    while let Some(Event::Packet(p)) = packets.recv_timeout(Duration::from_millis(300)).unwrap() {
        held.push(p);
    }
    assert!(
        held.len() <= 4,
        "{} packets delivered with 4 buffers",
        held.len()
    );
    // The rest waited in the kernel's queue (txqueuelen 500) and the excess was dropped there.
    let s = stats(&t.name, dev.name());
    assert!(
        s["tx"]["dropped"].as_u64().unwrap() > 0,
        "kernel drops what does not fit: {s}"
    );
    // Releasing the buffers lets delivery go on.
    held.clear();
    let more = owner_gets(&packets, 7002, 50, Duration::from_secs(1));
    assert_eq!(more.len(), 50);
}

#[test]
fn hand_over_loses_and_duplicates_nothing() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let (dev, sock) = p2p(&t, Device::builder().name("own%d"));
    let packets = dev.activate(64).unwrap();
    send_seq(&sock, 7003, 0..100);
    let first = owner_gets(&packets, 7003, 40, Duration::from_secs(2));
    // Hand the inbox to another thread (the seed's controlling_process): what is queued moves.
    let handle = std::thread::spawn(move || {
        let rest = owner_gets(&packets, 7003, 60, Duration::from_secs(2));
        (rest, packets)
    });
    let (rest, packets) = handle.join().unwrap();
    let all: Vec<u32> = first.into_iter().chain(rest).collect();
    assert_eq!(all, (0..100).collect::<Vec<_>>());
    // The last owner goes away: the non-persistent device goes with it.
    // The inbox and the Device are both owners. Dropping the inbox while the Device exists
    // returns the device to passive mode: a passive read sees what arrives next.
    let name = dev.name().to_string();
    drop(packets);
    assert!(
        ip_link(Some(&t.name), &name).is_some(),
        "the Device still owns it"
    );
    send_seq(&sock, 7003, 100..101);
    let mut buf = [0u8; 2048];
    assert!(dev
        .recv_timeout(&mut buf, Duration::from_secs(2))
        .unwrap()
        .is_some());
    // Dropping the Device while a new inbox exists keeps delivery going...
    let packets = dev.activate(64).unwrap();
    drop(dev);
    send_seq(&sock, 7003, 101..111);
    assert_eq!(
        owner_gets(&packets, 7003, 10, Duration::from_secs(2)),
        (101..111).collect::<Vec<_>>()
    );
    assert!(ip_link(Some(&t.name), &name).is_some());
    // ...and when the last owner goes, the non-persistent device goes with it.
    drop(packets);
    assert!(
        ip_link(Some(&t.name), &name).is_none(),
        "device destroyed with its last owner"
    );
}

#[test]
fn persistent_device_returns_to_passive_when_its_owner_goes() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let (dev, sock) = p2p(&t, Device::builder().name("per%d"));
    dev.set_persist(true).unwrap();
    let packets = dev.activate(8).unwrap();
    drop(packets);
    assert!(ip_link(Some(&t.name), dev.name()).is_some());
    send_seq(&sock, 7004, 0..3);
    assert_eq!(
        passive_gets(&dev, 7004, Duration::from_millis(300)),
        vec![0, 1, 2]
    );
    let again = dev.activate(8).unwrap();
    send_seq(&sock, 7004, 3..4);
    assert_eq!(owner_gets(&again, 7004, 1, Duration::from_secs(2)), vec![3]);
    dev.destroy().unwrap();
}

#[test]
fn writes_keep_boundaries_and_a_bad_packet_does_not_kill_an_active_device() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let (dev, sock) = p2p(&t, Device::builder().name("wr%d"));
    let packets = dev.activate(64).unwrap();
    let before = stats(&t.name, dev.name())["rx"]["packets"]
        .as_u64()
        .unwrap();
    let pkt = common::udp_packet(PEER, LOCAL, 7000, 7001, &[1, 2, 3, 4]);
    for _ in 0..500 {
        dev.send(&pkt).unwrap();
    }
    assert_eq!(
        stats(&t.name, dev.name())["rx"]["packets"]
            .as_u64()
            .unwrap()
            - before,
        500,
        "500 sends, 500 packets"
    );
    assert!(
        dev.send(&[0xff; 20]).is_err(),
        "garbage refused to that send"
    );
    send_seq(&sock, 7005, 0..3);
    assert_eq!(
        owner_gets(&packets, 7005, 3, Duration::from_secs(2)),
        vec![0, 1, 2],
        "still delivering"
    );
}

#[test]
fn device_deleted_from_outside_is_reported_to_the_owner() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let (dev, _sock) = p2p(&t, Device::builder().name("gone%d"));
    let packets = dev.activate(8).unwrap();
    common::ip_ok(&t.name, &["link", "del", dev.name()]);
    let deadline = Instant::now() + Duration::from_secs(3);
    let err = loop {
        assert!(Instant::now() < deadline, "no error event");
        match packets.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(Event::Error(e))) => break e,
            Ok(_) => {}
            Err(e) => panic!("inbox closed without an error event: {e}"),
        }
    };
    assert_eq!(err.kind(), ErrorKind::Gone, "{err}");
}

#[test]
fn multi_queue_active_and_run_time_attach_detach() {
    let Some((t, _g)) = common::privileged_ns() else {
        return;
    };
    let (dev, sock) = p2p(&t, Device::builder().name("mqa%d").multi_queue(2));
    let numqueues = || {
        ip_link(Some(&t.name), dev.name()).unwrap()["linkinfo"]["info_data"]["numqueues"].clone()
    };
    assert_eq!(numqueues(), 2);
    let extra = dev.attach_queue().unwrap();
    assert_eq!(numqueues(), 3);
    extra.set_enabled(false).unwrap();
    assert_eq!(numqueues(), 2);
    extra.set_enabled(true).unwrap();
    drop(extra);
    assert_eq!(numqueues(), 2, "dropping a queue detaches it");
    let single = Device::builder()
        .tun()
        .namespace(t.ns.clone())
        .create()
        .unwrap();
    assert_eq!(
        single.attach_queue().unwrap_err().kind(),
        ErrorKind::Unsupported
    );

    let packets = dev.activate(32).unwrap();
    // Many source ports spread flows over both queues.
    let socks: Vec<UdpSocket> = (0..16)
        .map(|_| t.ns.run(|| UdpSocket::bind((LOCAL, 0))).unwrap().unwrap())
        .collect();
    for s in &socks {
        send_seq(s, 7006, 0..10);
    }
    let mut queues = [0usize; 2];
    let mut n = 0;
    while n < 160 {
        match packets.recv_timeout(Duration::from_secs(2)).unwrap() {
            Some(Event::Packet(p)) => {
                if udp_seq(&p, 7006).is_some() {
                    queues[p.queue()] += 1;
                    n += 1;
                }
            }
            Some(Event::Error(e)) => panic!("{e}"),
            None => panic!("only {n} of 160 packets"),
        }
    }
    assert_eq!(queues[0] + queues[1], 160);
    let _ = sock;
}

#[test]
fn no_heap_allocation_per_packet_in_steady_state() {
    let Some((mut t, _g)) = common::privileged_ns() else {
        return;
    };
    // Exclusive: the count is process-wide.
    t.release();
    let _x = common::exclusive();
    let (dev, sock) = p2p(&t, Device::builder().name("alloc%d"));
    let reply = common::udp_packet(PEER, LOCAL, 7000, 7001, &[9, 9, 9, 9]);
    let mut buf = vec![0u8; 2048];
    // Passive: recv + send.
    let passive_round = |count: u32, buf: &mut [u8]| {
        for seq in 0..count {
            sock.send_to(&seq.to_be_bytes(), (PEER, 7007)).unwrap();
            loop {
                let n = dev
                    .recv_timeout(buf, Duration::from_secs(2))
                    .unwrap()
                    .expect("packet");
                if udp_seq(&buf[..n], 7007).is_some() {
                    break;
                }
            }
            dev.send(&reply).unwrap();
        }
    };
    passive_round(100, &mut buf);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    passive_round(2000, &mut buf);
    let passive = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(passive, 0, "allocations in 2000 passive recv/send rounds");

    // Active: delivery through the pool.
    let packets = dev.activate(16).unwrap();
    let active_round = |count: u32| {
        for seq in 0..count {
            sock.send_to(&seq.to_be_bytes(), (PEER, 7008)).unwrap();
            loop {
                match packets.recv_timeout(Duration::from_secs(2)).unwrap() {
                    Some(Event::Packet(p)) if udp_seq(&p, 7008).is_some() => break,
                    Some(_) => {}
                    None => panic!("no packet"),
                }
            }
        }
    };
    active_round(100);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    active_round(2000);
    let active = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(active, 0, "allocations in 2000 active deliveries");
}

mod async_tokio {
    use super::*;
    use std::future::poll_fn;
    use std::pin::Pin;
    use std::sync::Arc;

    use futures_core::Stream;
    use futures_sink::Sink;
    use tunctl::tokio::AsyncDevice;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A task receiving until `recv` fails; it returns the error.
    fn spawn_until_error(adev: &Arc<AsyncDevice>) -> tokio::task::JoinHandle<tunctl::Error> {
        let adev = Arc::clone(adev);
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            loop {
                if let Err(e) = adev.recv(&mut buf).await {
                    return e;
                }
            }
        })
    }

    async fn next_seq(dev: &AsyncDevice, port: u16) -> u32 {
        let mut buf = [0u8; 2048];
        loop {
            let n = dev.recv(&mut buf).await.unwrap();
            if let Some(seq) = udp_seq(&buf[..n], port) {
                return seq;
            }
        }
    }

    #[test]
    fn recv_and_send_on_shared_refs_stream_sink_and_wake_on_destroy() {
        let Some((t, _g)) = common::privileged_ns() else {
            return;
        };
        let (dev, sock) = p2p(&t, Device::builder().name("tok%d"));
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let name = dev.name().to_string();
        let rt = runtime();
        rt.block_on(async {
            let adev = Arc::new(AsyncDevice::new(dev).unwrap());
            // One task receives while this one sends, both through &AsyncDevice.
            let reader = {
                let adev = Arc::clone(&adev);
                tokio::spawn(async move { next_seq(&adev, 7010).await })
            };
            send_seq(&sock, 7010, 41..42);
            let reply = common::udp_packet(
                PEER,
                LOCAL,
                7010,
                sock.local_addr().unwrap().port(),
                b"async",
            );
            assert_eq!(adev.send(&reply).await.unwrap(), reply.len());
            assert_eq!(
                tokio::time::timeout(Duration::from_secs(3), reader)
                    .await
                    .unwrap()
                    .unwrap(),
                41
            );
            let mut got = [0u8; 16];
            let (n, _) = sock.recv_from(&mut got).unwrap();
            assert_eq!(&got[..n], b"async");

            // Stream: one item per packet, in order.
            let mut packets = adev.packets().unwrap();
            send_seq(&sock, 7011, 0..20);
            let mut seqs = Vec::new();
            while seqs.len() < 20 {
                let item = tokio::time::timeout(
                    Duration::from_secs(3),
                    poll_fn(|cx| Pin::new(&mut packets).poll_next(cx)),
                )
                .await
                .expect("stream item within 3 s")
                .expect("stream open")
                .unwrap();
                if let Some(seq) = udp_seq(&item, 7011) {
                    seqs.push(seq);
                }
            }
            assert_eq!(seqs, (0..20).collect::<Vec<_>>());
            // Sink: one packet per item.
            let before = stats(&t.name, &name)["rx"]["packets"].as_u64().unwrap();
            for _ in 0..50 {
                poll_fn(|cx| Pin::new(&mut packets).poll_ready(cx))
                    .await
                    .unwrap();
                Pin::new(&mut packets)
                    .start_send(bytes::Bytes::from(reply.clone()))
                    .unwrap();
            }
            poll_fn(|cx| Pin::new(&mut packets).poll_flush(cx))
                .await
                .unwrap();
            assert_eq!(
                stats(&t.name, &name)["rx"]["packets"].as_u64().unwrap() - before,
                50
            );

            // A task blocked in recv wakes with Closed when the device is destroyed.
            let blocked = spawn_until_error(&adev);
            tokio::time::sleep(Duration::from_millis(100)).await;
            adev.device().destroy().unwrap();
            let err = tokio::time::timeout(Duration::from_secs(2), blocked)
                .await
                .expect("woken")
                .unwrap();
            assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
            // The stream ends.
            let end = poll_fn(|cx| Pin::new(&mut packets).poll_next(cx)).await;
            assert!(end.is_none());
        });
        assert!(ip_link(Some(&t.name), &name).is_none());
    }

    #[test]
    fn async_recv_wakes_when_the_device_is_deleted_from_outside() {
        let Some((t, _g)) = common::privileged_ns() else {
            return;
        };
        let (dev, _sock) = p2p(&t, Device::builder().name("tgone%d"));
        let name = dev.name().to_string();
        runtime().block_on(async {
            let adev = Arc::new(AsyncDevice::new(dev).unwrap());
            // The packet stream ends with one Gone item, then None.
            let mut stream = adev.packets().unwrap();
            let ended = tokio::spawn(async move {
                let mut items = Vec::new();
                while let Some(item) =
                    std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_next(cx)).await
                {
                    items.push(item);
                }
                items
            });
            let blocked = spawn_until_error(&adev);
            tokio::time::sleep(Duration::from_millis(100)).await;
            common::ip_ok(&t.name, &["link", "del", &name]);
            let err = tokio::time::timeout(Duration::from_secs(2), blocked)
                .await
                .expect("woken")
                .unwrap();
            assert_eq!(err.kind(), ErrorKind::Gone, "{err}");
            let items = tokio::time::timeout(Duration::from_secs(2), ended)
                .await
                .expect("the stream ended")
                .unwrap();
            let last = items.last().expect("an item before the end");
            let err = last.as_ref().expect_err("the last item is the error");
            assert_eq!(err.kind(), ErrorKind::Gone, "{err}");
            assert!(items[..items.len() - 1].iter().all(|i| i.is_ok()));
        });
    }

    /// AsyncQueue sets O_NONBLOCK on the open file it shares with the Device's queue: the
    /// blocking calls there still block until a packet comes.
    #[test]
    fn the_blocking_queue_beside_an_async_one_still_blocks() {
        let Some((t, _g)) = common::privileged_ns() else {
            return;
        };
        let (dev, sock) = p2p(&t, Device::builder().name("tnb%d"));
        runtime().block_on(async {
            let adev = AsyncDevice::new(dev).unwrap();
            std::thread::scope(|s| {
                s.spawn(|| {
                    std::thread::sleep(Duration::from_millis(150));
                    send_seq(&sock, 7300, 0..1);
                });
                let mut buf = [0u8; 2048];
                let t0 = Instant::now();
                loop {
                    let n = adev.device().recv(&mut buf).unwrap();
                    if udp_seq(&buf[..n], 7300) == Some(0) {
                        break;
                    }
                }
                assert!(t0.elapsed() >= Duration::from_millis(100), "it waited");
            });
        });
    }

    #[test]
    fn link_events_as_a_stream() {
        use tunctl::tokio::AsyncWatch;
        use tunctl::LinkEvent;
        let Some((t, _g)) = common::privileged_ns() else {
            return;
        };
        runtime().block_on(async {
            let mut events = AsyncWatch::new(tunctl::Watch::open(&t.ns).unwrap()).unwrap();
            async fn next(events: &mut AsyncWatch) -> Option<tunctl::Result<LinkEvent>> {
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut *events).poll_next(cx)).await
            }
            let dev = Device::builder()
                .tun()
                .name("tev0")
                .namespace(t.ns.clone())
                .create()
                .unwrap();
            let index = dev.index();
            let created = tokio::time::timeout(Duration::from_secs(3), async {
                loop {
                    match next(&mut events).await.unwrap().unwrap() {
                        LinkEvent::Created(l) if l.index == index => return l,
                        _ => {}
                    }
                }
            })
            .await
            .expect("created");
            assert_eq!(created.name, "tev0");
            common::ip_ok(&t.name, &["link", "del", "tev0"]);
            tokio::time::timeout(Duration::from_secs(3), async {
                loop {
                    if let LinkEvent::Deleted { index: i, .. } =
                        next(&mut events).await.unwrap().unwrap()
                    {
                        if i == index {
                            return;
                        }
                    }
                }
            })
            .await
            .expect("deleted");
            drop(dev);
        });
    }

    /// How many times `op` completes before a task spawned just ahead of the loop gets its
    /// first turn (at most `limit`): a loop that never has to wait must still yield now and
    /// then (tokio's cooperative budget), or it starves every other task on its worker,
    /// the I/O driver included. One `op` runs first, so that its readiness is known and the
    /// loop never waits.
    async fn turns_before_a_spawned_task_runs<F: std::future::Future>(
        limit: usize,
        mut op: impl FnMut() -> F,
    ) -> usize {
        op().await;
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let other = tokio::spawn(async move { flag.store(true, Ordering::Relaxed) });
        let mut done = 0;
        while done < limit && !ran.load(Ordering::Relaxed) {
            op().await;
            done += 1;
        }
        other.await.unwrap();
        done
    }

    #[test]
    fn recv_and_send_loops_that_never_wait_still_yield() {
        let Some((t, _g)) = common::privileged_ns() else {
            return;
        };
        let (dev, sock) = p2p(&t, Device::builder().name("tcoop%d"));
        let port = sock.local_addr().unwrap().port();
        // Queued before the runtime starts: every recv below finds a packet waiting.
        send_seq(&sock, 7020, 0..301);
        runtime().block_on(async {
            let adev = AsyncDevice::new(dev).unwrap();
            let received = turns_before_a_spawned_task_runs(300, || async {
                let mut buf = [0u8; 2048];
                adev.recv(&mut buf).await.unwrap();
            })
            .await;
            assert!(
                received < 300,
                "{received} packets received without a yield"
            );
            let reply = common::udp_packet(PEER, LOCAL, 7020, port, b"coop");
            let sent = turns_before_a_spawned_task_runs(1000, || async {
                adev.send(&reply).await.unwrap();
            })
            .await;
            assert!(sent < 1000, "{sent} packets sent without a yield");
        });
    }

    #[test]
    fn outside_a_runtime_is_an_error_not_a_panic() {
        let Some((t, _g)) = common::privileged_ns() else {
            return;
        };
        let dev = Device::builder()
            .tun()
            .namespace(t.ns.clone())
            .create()
            .unwrap();
        let err = AsyncDevice::new(dev).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
    }
}

mod offload {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::AtomicBool;
    use tunctl::{Batch, Offload};

    const A: Ipv4Addr = Ipv4Addr::new(10, 56, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 56, 0, 2);

    fn side(t: &TestNs, local: Ipv4Addr, peer: Ipv4Addr, offload: Option<Offload>) -> Device {
        let mut b = Device::builder()
            .tun()
            .name("off%d")
            .namespace(t.ns.clone());
        if let Some(o) = offload {
            b = b.offload(o);
        }
        let dev = b.create().unwrap();
        let spec = Address::point_to_point(local.into(), peer.into());
        dev.link().unwrap().add(&spec).unwrap();
        dev.up().unwrap();
        dev
    }

    /// Forwards with recv_batch/send_batch until `stop`; returns the largest batch one read
    /// produced (above 1: a super-packet was split).
    pub(super) fn forward(from: &Device, to: &Device, stop: &AtomicBool) -> usize {
        let mut batch = Batch::new(64, 16);
        let mut largest = 0;
        while !stop.load(Ordering::Relaxed) {
            match from.queues()[0].recv_batch_timeout(&mut batch, Some(Duration::from_millis(50))) {
                Ok(0) => continue,
                Ok(n) => largest = largest.max(n),
                Err(e) => panic!("recv_batch: {e}"),
            }
            to.queues()[0].send_batch(&mut batch).unwrap();
        }
        largest
    }

    /// 32 MiB over TCP from namespace a to b through the forwarder; checks every byte.
    fn transfer(ta: &TestNs, tb: &TestNs, da: &Device, db: &Device) -> (usize, usize) {
        transfer_with(ta, tb, (da, db), (B, 5300), forward)
    }

    /// `TOTAL` bytes over TCP from namespace a to `to` in b through two `forward` threads;
    /// checks every byte. Returns what each forwarder returned (a -> b, b -> a).
    pub(super) fn transfer_with(
        ta: &TestNs,
        tb: &TestNs,
        (da, db): (&Device, &Device),
        to: (Ipv4Addr, u16),
        forward: fn(&Device, &Device, &AtomicBool) -> usize,
    ) -> (usize, usize) {
        const TOTAL: usize = 32 << 20;
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let ab = s.spawn(|| forward(da, db, &stop));
            let ba = s.spawn(|| forward(db, da, &stop));
            let listener = tb.ns.run(|| TcpListener::bind(to)).unwrap().unwrap();
            let server = s.spawn(move || {
                let (mut conn, _) = listener.accept().unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut buf = vec![0u8; 1 << 16];
                let mut got = 0usize;
                loop {
                    let n = conn.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    for (k, b) in buf[..n].iter().enumerate() {
                        assert_eq!(*b, ((got + k) % 251) as u8, "byte {}", got + k);
                    }
                    got += n;
                }
                got
            });
            let mut conn = ta
                .ns
                .run(|| TcpStream::connect_timeout(&to.into(), Duration::from_secs(3)))
                .unwrap()
                .unwrap();
            conn.set_write_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let data: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
            conn.write_all(&data).unwrap();
            drop(conn);
            let got = server.join().unwrap();
            stop.store(true, Ordering::Relaxed);
            assert_eq!(got, TOTAL);
            (ab.join().unwrap(), ba.join().unwrap())
        })
    }

    #[test]
    fn tcp_through_a_gso_gro_forwarder_arrives_intact() {
        let Some((ta, _g)) = common::privileged_ns() else {
            return;
        };
        let tb = TestNs::new();
        let all = Offload::CSUM | Offload::TSO4 | Offload::TSO6 | Offload::USO4 | Offload::USO6;
        let da = side(&ta, A, B, Some(all));
        let db = side(&tb, B, A, Some(all));
        assert!(
            da.offload()
                .contains(Offload::CSUM | Offload::TSO4 | Offload::TSO6),
            "{:?}",
            da.offload()
        );
        let link = common::ip_link(Some(&ta.name), da.name()).unwrap();
        assert_eq!(link["gso_max_segs"], 64, "super-packets fit a batch");
        let (largest, _) = transfer(&ta, &tb, &da, &db);
        assert!(
            largest > 1,
            "the kernel handed over super-packets, split into {largest}"
        );
    }

    #[test]
    fn opting_out_of_offload_and_resetting_a_stale_mask() {
        let Some((ta, _g)) = common::privileged_ns() else {
            return;
        };
        let tb = TestNs::new();
        // A persistent device left with TSO on by an earlier user...
        let stale = side(&ta, A, B, Some(Offload::CSUM | Offload::TSO4));
        stale.set_persist(true).unwrap();
        let name = stale.name().to_string();
        drop(stale);
        // ...is reset by the next user who opts out: plain packets, nothing to split.
        let da = Device::builder()
            .tun()
            .name(&name)
            .offload(Offload::empty())
            .namespace(ta.ns.clone())
            .open()
            .unwrap();
        assert_eq!(da.offload(), Offload::empty());
        let db = side(&tb, B, A, Some(Offload::empty()));
        let (largest_ab, largest_ba) = transfer(&ta, &tb, &da, &db);
        // Without offload a read is one packet; batches fill only from queued packets.
        assert!(largest_ab >= 1 && largest_ba >= 1);
        da.destroy().unwrap();
    }
}

/// Batches and single packets on the io_uring path, and the fall-back to system calls where
/// io_uring is blocked (a seccomp filter, as container runtimes install).
#[cfg(feature = "io-uring")]
mod uring {
    use super::*;
    use tunctl::{Batch, IoPath, Offload};

    const A: Ipv4Addr = Ipv4Addr::new(10, 57, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 57, 0, 2);

    fn side(t: &TestNs, local: Ipv4Addr, peer: Ipv4Addr, offload: bool) -> Device {
        let mut b = Device::builder()
            .tun()
            .name("ur%d")
            .io_uring(true)
            .namespace(t.ns.clone());
        if offload {
            b = b.offload(Offload::CSUM | Offload::TSO4 | Offload::TSO6 | Offload::USO4);
        }
        let dev = b.create().unwrap();
        assert_eq!(
            dev.queues()[0].io_path(),
            IoPath::IoUring,
            "io_uring works here"
        );
        let spec = Address::point_to_point(local.into(), peer.into());
        dev.link().unwrap().add(&spec).unwrap();
        dev.up().unwrap();
        dev
    }

    /// 32 MiB over TCP from a to b through a forwarder of two io_uring queues, byte for byte;
    /// returns the largest batch one read a -> b produced.
    fn transfer(ta: &TestNs, tb: &TestNs, da: &Device, db: &Device, port: u16) -> usize {
        offload::transfer_with(ta, tb, (da, db), (B, port), offload::forward).0
    }

    #[test]
    fn tcp_crosses_io_uring_forwarders_plain_and_with_offload() {
        let Some((ta, _g)) = common::privileged_ns() else {
            return;
        };
        let tb = TestNs::new();
        let (da, db) = (side(&ta, A, B, false), side(&tb, B, A, false));
        transfer(&ta, &tb, &da, &db, 5401);
        drop((da, db));
        let (da, db) = (side(&ta, A, B, true), side(&tb, B, A, true));
        let largest = transfer(&ta, &tb, &da, &db, 5402);
        assert!(
            largest > 1,
            "super-packets arrived and were split: {largest}"
        );
    }

    /// With packet information and MTU 65535, the kernel hands over 65,539 bytes: more than
    /// a batch slot holds. `recv_batch` says Truncated (as on the readv path), and goes on.
    #[test]
    fn a_packet_longer_than_a_slot_is_truncated_not_a_panic() {
        let Some((t, _g)) = common::privileged_ns() else {
            return;
        };
        let (dev, sock) = p2p(
            &t,
            Device::builder()
                .name("urp%d")
                .packet_info(true)
                .io_uring(true),
        );
        let q = &dev.queues()[0];
        assert_eq!(q.io_path(), IoPath::IoUring);
        dev.set_mtu(65535).unwrap();
        // 65,507 bytes of UDP payload: the largest IPv4 datagram, 65,535 bytes.
        sock.send_to(&vec![7u8; 65507], (PEER, 7101)).unwrap();
        let mut batch = Batch::new(4, 0);
        let deadline = Instant::now() + Duration::from_secs(3);
        let err = loop {
            assert!(Instant::now() < deadline, "the long packet never came");
            match q.recv_batch_timeout(&mut batch, Some(Duration::from_millis(200))) {
                Ok(_) => continue, // kernel chatter first
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), ErrorKind::Truncated, "{err}");
        send_seq(&sock, 7101, 0..1);
        let mut got = Vec::new();
        while got.is_empty() && Instant::now() < deadline {
            if q.recv_batch_timeout(&mut batch, Some(Duration::from_millis(200)))
                .unwrap()
                > 0
            {
                got.extend(batch.iter().filter_map(|p| udp_seq(&p[4..], 7101)));
            }
        }
        assert_eq!(got, [0], "the queue goes on after it");
    }

    /// A thread blocked in `recv` on the ring does not hold up another's `try_recv` (which
    /// never waits) or `recv_timeout` (which waits its own time, no longer).
    #[test]
    fn a_blocked_receive_holds_up_no_timed_one() {
        let Some((t, _g)) = common::privileged_ns() else {
            return;
        };
        let (dev, sock) = p2p(&t, Device::builder().name("urb%d").io_uring(true));
        let q = &dev.queues()[0];
        assert_eq!(q.io_path(), IoPath::IoUring);
        let mut buf = [0u8; 2048];
        while q.try_recv(&mut buf).unwrap().is_some() {}
        std::thread::scope(|s| {
            let blocked = s.spawn(|| {
                let mut buf = [0u8; 2048];
                // Wakes at the datagram sent below.
                loop {
                    let n = q.recv(&mut buf).unwrap();
                    if udp_seq(&buf[..n], 7102).is_some() {
                        break;
                    }
                }
            });
            // Bounds the test whatever happens: the blocked receive ends after 1.5 s.
            let waker = s.spawn(|| {
                std::thread::sleep(Duration::from_millis(1500));
                send_seq(&sock, 7102, 0..1);
            });
            std::thread::sleep(Duration::from_millis(100));
            let mut mine = [0u8; 2048];
            let t0 = Instant::now();
            let _ = q.try_recv(&mut mine).unwrap();
            let tried = t0.elapsed();
            let t0 = Instant::now();
            let _ = q
                .recv_timeout(&mut mine, Duration::from_millis(100))
                .unwrap();
            let timed = t0.elapsed();
            waker.join().unwrap();
            blocked.join().unwrap();
            assert!(
                tried < Duration::from_millis(50),
                "try_recv waited {tried:?}"
            );
            assert!(
                timed < Duration::from_millis(400),
                "recv_timeout took {timed:?}"
            );
        });
    }

    #[test]
    fn single_receives_read_the_ring_and_errors_end_a_wait() {
        let Some((t, _g)) = common::privileged_ns() else {
            return;
        };
        let (dev, sock) = p2p(&t, Device::builder().name("urs%d").io_uring(true));
        let q = &dev.queues()[0];
        assert_eq!(q.io_path(), IoPath::IoUring);
        // Single receives and batches take the same packets, in order, none twice.
        send_seq(&sock, 7100, 0..40);
        let mut got = passive_gets(&dev, 7100, Duration::from_millis(300));
        assert_eq!(got, (0..40).collect::<Vec<_>>());
        send_seq(&sock, 7100, 40..80);
        let mut batch = Batch::new(16, 0);
        let deadline = Instant::now() + Duration::from_secs(3);
        while got.len() < 80 && Instant::now() < deadline {
            if q.recv_batch_timeout(&mut batch, Some(Duration::from_millis(200)))
                .unwrap()
                > 0
            {
                assert!(batch.len() <= 16);
                got.extend(batch.iter().filter_map(|p| udp_seq(p, 7100)));
            }
        }
        assert_eq!(got, (0..80).collect::<Vec<_>>());
        // A packet longer than the buffer: its head, and Truncated.
        send_seq(&sock, 7100, 80..81);
        let mut small = [0u8; 20];
        let err = loop {
            match q.recv_timeout(&mut small, Duration::from_secs(2)) {
                Ok(Some(_)) => continue, // kernel chatter shorter than 20 bytes: none expected
                Ok(None) => panic!("the packet never came"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), ErrorKind::Truncated, "{err}");
        assert_eq!(small[0] >> 4, 4);
        // Nothing queued: try_recv returns at once, a timed receive after its time.
        let mut buf = [0u8; 2048];
        while q.try_recv(&mut buf).unwrap().is_some() {}
        let t0 = Instant::now();
        assert_eq!(
            q.recv_timeout(&mut buf, Duration::from_millis(150))
                .unwrap(),
            None
        );
        assert!(t0.elapsed() >= Duration::from_millis(140));
        // Active mode reads the fds itself: refused while a queue is on io_uring.
        assert_eq!(dev.activate(4).unwrap_err().kind(), ErrorKind::Busy);
        // A batch blocked in the ring wakes when the device is deleted from outside: Gone.
        std::thread::scope(|s| {
            let waiter = s.spawn(|| q.recv_batch(&mut batch));
            std::thread::sleep(Duration::from_millis(100));
            common::ip_ok(&t.name, &["link", "del", dev.name()]);
            let err = waiter.join().unwrap().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Gone, "{err}");
        });
    }

    #[test]
    fn destroy_wakes_a_receive_blocked_in_the_ring() {
        let Some((t, _g)) = common::privileged_ns() else {
            return;
        };
        let (dev, _sock) = p2p(&t, Device::builder().name("urd%d").io_uring(true));
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let mut buf = [0u8; 2048];
                loop {
                    // Skip kernel chatter (router solicitations) until the device goes.
                    if let Err(e) = dev.recv(&mut buf) {
                        return e;
                    }
                }
            });
            std::thread::sleep(Duration::from_millis(100));
            dev.destroy().unwrap();
            let err = waiter.join().unwrap();
            assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
        });
    }

    /// A batch whose middle packet the kernel refuses (not IP: EINVAL): the others are sent,
    /// on both paths, and the error says how many.
    #[test]
    fn a_refused_packet_does_not_lose_the_rest_of_its_batch() {
        let Some((t, _g)) = common::privileged_ns() else {
            return;
        };
        for uring in [false, true] {
            let (dev, sock) = p2p(&t, Device::builder().name("urb%d").io_uring(uring));
            let port = sock.local_addr().unwrap().port();
            sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let to_sock = |seq: u32| common::udp_packet(PEER, LOCAL, 9, port, &seq.to_be_bytes());
            let mut batch = Batch::new(8, 0);
            batch.push(&to_sock(1)).unwrap();
            batch.push(&[0u8; 28]).unwrap();
            batch.push(&to_sock(2)).unwrap();
            let err = dev.queues()[0].send_batch(&mut batch).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
            assert!(
                err.to_string()
                    .contains("2 of the batch's 3 packets were sent"),
                "{err}"
            );
            assert_eq!(batch.sent(), 2);
            let mut buf = [0u8; 64];
            for want in [1u32, 2] {
                let n = sock
                    .recv(&mut buf)
                    .expect("the packet after the refused one arrives");
                assert_eq!(&buf[..n], &want.to_be_bytes(), "uring {uring}");
            }
            // And a batch that goes whole says so.
            batch.clear();
            batch.push(&to_sock(3)).unwrap();
            assert_eq!(dev.queues()[0].send_batch(&mut batch).unwrap(), 1);
            assert_eq!(batch.sent(), 1);
            // Past the last packet there is nothing to read.
            assert!(batch.get(1).is_none());
            let b = std::panic::AssertUnwindSafe(&batch);
            assert!(std::panic::catch_unwind(|| b.packet(1).len()).is_err());
        }
    }

    /// Blocks `io_uring_setup(2)` for the calling thread only, as a container's seccomp
    /// profile does (EPERM).
    fn block_io_uring_on_this_thread() {
        use libc::{sock_filter, sock_fprog};
        const RET_ALLOW: u32 = 0x7fff_0000;
        const RET_ERRNO: u32 = 0x0005_0000;
        let stmt = |code: u16, k: u32| sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        };
        let jeq = |k: u32, jt: u8, jf: u8| sock_filter {
            code: 0x15,
            jt,
            jf,
            k,
        };
        let program = [
            stmt(0x20, 0), // ld [nr]
            jeq(libc::SYS_io_uring_setup as u32, 0, 1),
            stmt(0x06, RET_ERRNO | libc::EPERM as u32),
            stmt(0x06, RET_ALLOW),
        ];
        let prog = sock_fprog {
            len: program.len() as u16,
            filter: program.as_ptr() as *mut sock_filter,
        };
        // SAFETY: prctl with a valid program, for this thread only (no TSYNC).
        unsafe {
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
            assert_eq!(
                libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog),
                0,
                "seccomp: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    #[test]
    fn where_io_uring_is_blocked_queues_fall_back_to_system_calls() {
        let Some((t, _g)) = common::privileged_ns() else {
            return;
        };
        // The filter dies with this thread.
        std::thread::scope(|s| {
            s.spawn(|| {
                block_io_uring_on_this_thread();
                let (dev, sock) = p2p(&t, Device::builder().name("urf%d").io_uring(true));
                let q = &dev.queues()[0];
                assert_eq!(q.io_path(), IoPath::Syscalls);
                let err = q.use_io_uring().unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
                assert!(err.to_string().contains("EPERM"), "{err}");
                // Everything works the old way.
                send_seq(&sock, 7200, 0..20);
                let mut batch = Batch::new(64, 0);
                let mut got = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(3);
                while got.len() < 20 && Instant::now() < deadline {
                    q.recv_batch_timeout(&mut batch, Some(Duration::from_millis(200)))
                        .unwrap();
                    got.extend(batch.iter().filter_map(|p| udp_seq(p, 7200)));
                }
                assert_eq!(got, (0..20).collect::<Vec<_>>());
            })
            .join()
            .unwrap();
        });
        // Another thread, unfiltered, gets io_uring as before.
        let (dev, _sock) = p2p(&t, Device::builder().name("urf%d").io_uring(true));
        assert_eq!(dev.queues()[0].io_path(), IoPath::IoUring);
    }
}
