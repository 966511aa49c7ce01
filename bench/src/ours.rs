//! Our forwarders, one per contender. Each attaches to the two existing devices and moves
//! packets both ways until the process is killed.

use std::sync::Arc;

use tunctl::{Device, Event, Offload};

use crate::Side;

/// How a contender uses the library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Blocking `recv`/`send`, one thread per direction.
    Passive,
    /// vnet_hdr with TSO/USO: GSO super-packets pass through, header and all.
    Offload,
    /// Active mode: the reader threads deliver to `Packets`; the owner sends on.
    Active,
    /// tokio `AsyncDevice`, one task per direction on a two-thread runtime.
    Tokio,
    /// Two queues per device, one thread per queue and direction.
    MultiQueue,
    /// vnet_hdr with TSO/USO, through `Batch`: super-packets split on receive (GSO) and
    /// coalesced again on send (GRO), the same work tun-rs's offload path does.
    Gro,
    /// `Batch` on io_uring queues: packets read ahead by a multishot read, a batch written
    /// with one `io_uring_enter`.
    Uring,
    /// `Gro` on io_uring queues.
    UringOffload,
}

fn open(side: &Side, mode: Mode) -> Result<Device, String> {
    let mut b = Device::builder()
        .tun()
        .name(&side.dev)
        .namespace(side.ns.clone());
    b = match mode {
        Mode::Offload | Mode::Gro | Mode::UringOffload => {
            b.offload(Offload::CSUM | Offload::TSO4 | Offload::TSO6 | Offload::USO4 | Offload::USO6)
        }
        Mode::MultiQueue => b.multi_queue(2),
        _ => b,
    };
    let dev = b.open().map_err(|e| e.to_string())?;
    if matches!(mode, Mode::Uring | Mode::UringOffload) {
        // Fail the run rather than measure the system-call path under this name.
        for q in dev.queues() {
            q.use_io_uring().map_err(|e| e.to_string())?;
        }
    }
    Ok(dev)
}

fn pump(from: &tunctl::Queue, to: &tunctl::Queue) {
    let mut buf = vec![0u8; 65536 + 64];
    loop {
        match from.recv(&mut buf) {
            Ok(n) => {
                let _ = to.send(&buf[..n]);
            }
            Err(e) => {
                eprintln!("forwarder: {e}");
                return;
            }
        }
    }
}

/// Runs the forwarder; prints "ready" once both devices are attached. Never returns on success.
pub fn forward(a: &Side, b: &Side, mode: Mode) -> Result<(), String> {
    let (da, db) = (open(a, mode)?, open(b, mode)?);
    match mode {
        Mode::Passive | Mode::Offload | Mode::MultiQueue => {
            println!("ready");
            std::thread::scope(|s| {
                for (qa, qb) in da.queues().iter().zip(db.queues()) {
                    s.spawn(move || pump(qa, qb));
                    s.spawn(move || pump(qb, qa));
                }
            });
        }
        Mode::Gro | Mode::Uring | Mode::UringOffload => {
            // A split super-packet needs 64 slots; io_uring reads ahead up to 128 packets.
            let capacity = match mode {
                Mode::Gro => tunctl::offload::MAX_SEGMENTS,
                Mode::Uring => 128,
                _ => 256,
            };
            println!("ready");
            std::thread::scope(|s| {
                s.spawn(|| batch_pump(&da.queues()[0], &db.queues()[0], capacity));
                s.spawn(|| batch_pump(&db.queues()[0], &da.queues()[0], capacity));
            });
        }
        Mode::Active => {
            let (pa, pb) = (
                da.activate(256).map_err(|e| e.to_string())?,
                db.activate(256).map_err(|e| e.to_string())?,
            );
            println!("ready");
            let (ra, rb) = (&da, &db);
            std::thread::scope(|s| {
                // Each inbox moves to the thread that owns it (hand-over by move).
                s.spawn(move || relay(&pa, rb));
                s.spawn(move || relay(&pb, ra));
            });
        }
        Mode::Tokio => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let (aa, ab) = (
                    Arc::new(tunctl::tokio::AsyncDevice::new(da).map_err(|e| e.to_string())?),
                    Arc::new(tunctl::tokio::AsyncDevice::new(db).map_err(|e| e.to_string())?),
                );
                println!("ready");
                let t1 = tokio::spawn(async_pump(Arc::clone(&aa), Arc::clone(&ab)));
                let t2 = tokio::spawn(async_pump(ab, aa));
                let _ = tokio::join!(t1, t2);
                Ok::<(), String>(())
            })?;
        }
    }
    Ok(())
}

fn batch_pump(from: &tunctl::Queue, to: &tunctl::Queue, capacity: usize) {
    let mut batch = tunctl::Batch::new(capacity, 0);
    loop {
        if let Err(e) = from.recv_batch(&mut batch) {
            eprintln!("forwarder: {e}");
            return;
        }
        if let Err(e) = to.send_batch(&mut batch) {
            eprintln!("forwarder: {e}");
        }
    }
}

fn relay(from: &tunctl::Packets, to: &Device) {
    while let Ok(event) = from.recv() {
        match event {
            Event::Packet(p) => {
                let _ = to.send(&p);
            }
            Event::Error(e) => {
                eprintln!("forwarder: {e}");
                return;
            }
        }
    }
}

async fn async_pump(from: Arc<tunctl::tokio::AsyncDevice>, to: Arc<tunctl::tokio::AsyncDevice>) {
    let mut buf = vec![0u8; 65536 + 64];
    loop {
        match from.recv(&mut buf).await {
            Ok(n) => {
                let _ = to.send(&buf[..n]).await;
            }
            Err(e) => {
                eprintln!("forwarder: {e}");
                return;
            }
        }
    }
}
