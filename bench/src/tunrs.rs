//! The tun-rs forwarders: the peer library (tun-rs 2.8.16), its sync API driven the way its
//! authors' own benchmark (tun-rs/tun-benchmark2, `tun-rs-sync-normal` and
//! `tun-rs-sync-gso`) drives it, so that the comparison is honest, and its tokio
//! `AsyncDevice` ([`forward_async`]) in the role of our `tunctl-tokio`.
//!
//! - Plain (`offload == false`): `SyncDevice::recv` into one 64 KiB buffer, `send` of the
//!   same bytes; one packet per system call each way.
//! - Offload (`offload == true`): the device is opened with `offload(true)` (tun-rs sets
//!   IFF_VNET_HDR and TUNSETOFFLOAD with TCP, and where the kernel has them UDP, offloads).
//!   `recv_multiple` reads one (possibly GSO) frame and splits it into up to
//!   `IDEAL_BATCH_SIZE` segments; `send_multiple` re-coalesces them through a `GROTable`
//!   and writes the result with virtio-net headers.
//!
//! Stopping: the devices are put in non-blocking mode and read directly; only when a read
//! would block does the thread wait, in tun-rs's `wait_readable_intr_timeout` (a `poll` on
//! the device and an [`InterruptEvent`] pipe) for at most [`IDLE_WAIT`], then it looks at
//! `stop` again. A busy forwarder therefore costs one `read` per frame, as with blocking
//! I/O; the event is triggered only to wake the other direction when one fails.
//!
//! - Async ([`forward_async`]): the same attach, then each device wrapped in tun-rs's tokio
//!   `AsyncDevice` (shared through an `Arc`, as its documentation suggests instead of a
//!   split), one task per direction `recv().await` then `send().await`, on a two-worker
//!   multi-thread runtime: exactly the shape of `tunctl-tokio` (`ours.rs`, `Mode::Tokio`).
//!   It runs until the process is killed.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::ScopedJoinHandle;
use std::time::Duration;

use tun_rs::{
    AsyncDevice, DeviceBuilder, GROTable, InterruptEvent, Layer, SyncDevice, IDEAL_BATCH_SIZE,
    VIRTIO_NET_HDR_LEN,
};

use crate::Side;

/// The longest an idle forwarding thread sleeps before it looks at `stop` again.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// The largest IP packet (and so the largest GSO frame the kernel hands out), without the
/// virtio-net header.
const MAX_PACKET: usize = 65535;

/// Forwards packets between `a` and `b` with tun-rs until `stop` is set.
pub fn forward(a: &Side, b: &Side, offload: bool, stop: &AtomicBool) -> Result<(), String> {
    let (dev_a, mtu_a) = attach(a, offload)?;
    let (dev_b, mtu_b) = attach(b, offload)?;
    let event = InterruptEvent::new().map_err(|e| format!("tun-rs InterruptEvent::new: {e}"))?;
    let failed = AtomicBool::new(false);
    let ctx = Ctx {
        stop,
        failed: &failed,
        event: &event,
    };
    let ab = Direction {
        src: &dev_a,
        dst: &dev_b,
        seg_len: segment_len(mtu_a),
        name: format!("{} -> {}", a.dev, b.dev),
    };
    let ba = Direction {
        src: &dev_b,
        dst: &dev_a,
        seg_len: segment_len(mtu_b),
        name: format!("{} -> {}", b.dev, a.dev),
    };
    let (r_ab, r_ba) = std::thread::scope(|scope| {
        let h_ab = scope.spawn(|| ab.run(&ctx, offload));
        let h_ba = scope.spawn(|| ba.run(&ctx, offload));
        (joined(h_ab), joined(h_ba))
    });
    r_ab.and(r_ba)
}

/// Forwards packets between `a` and `b` with tun-rs's tokio `AsyncDevice`: one task per
/// direction on a two-worker runtime, as `tunctl-tokio` does with ours. Prints "ready" once
/// both devices are attached; never returns unless a direction fails.
pub fn forward_async(a: &Side, b: &Side) -> Result<(), String> {
    let (sync_a, _) = attach(a, false)?;
    let (sync_b, _) = attach(b, false)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        // Registered with this runtime's reactor, so built inside it.
        let wrap = |dev: SyncDevice, side: &Side| {
            AsyncDevice::new(dev)
                .map(Arc::new)
                .map_err(|e| format!("tun-rs: AsyncDevice::new on {}: {e}", side.dev))
        };
        let (da, db) = (wrap(sync_a, a)?, wrap(sync_b, b)?);
        println!("ready");
        let t1 = tokio::spawn(async_pump(
            Arc::clone(&da),
            Arc::clone(&db),
            format!("{} -> {}", a.dev, b.dev),
        ));
        let t2 = tokio::spawn(async_pump(db, da, format!("{} -> {}", b.dev, a.dev)));
        // The first direction to fail ends the forwarder (the harness sees it exit).
        let joined = |t: tokio::task::JoinHandle<Result<(), String>>| async move {
            t.await
                .unwrap_or_else(|e| Err(format!("tun-rs forwarding task: {e}")))
        };
        tokio::try_join!(joined(t1), joined(t2)).map(|_| ())
    })
}

/// One direction of [`forward_async`]: one packet per `recv` / `send`, like
/// `tunctl-tokio`'s `async_pump`; a failed write drops the packet unless the device is gone.
async fn async_pump(
    from: Arc<AsyncDevice>,
    to: Arc<AsyncDevice>,
    name: String,
) -> Result<(), String> {
    let mut buf = vec![0u8; MAX_PACKET + 1];
    loop {
        let n = match from.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("tun-rs forwarding {name}: {e}")),
        };
        if n == 0 {
            continue;
        }
        if let Err(e) = to.send(&buf[..n]).await {
            send_error(e).map_err(|e| format!("tun-rs forwarding {name}: {e}"))?;
        }
    }
}

/// Attaches to the existing tun device `side.dev` from inside `side.ns` and returns it in
/// non-blocking mode, with its MTU (read in the namespace, where the device is).
///
/// TUNSETIFF with the name of an existing device attaches to it; the builder is given no
/// address, no MTU and `inherit_enable_state()` (its default is `enable(true)`, which would
/// set IFF_UP), so nothing about the device's configuration is changed.
fn attach(side: &Side, offload: bool) -> Result<(SyncDevice, u16), String> {
    let opened = side
        .ns
        .run(|| -> io::Result<(SyncDevice, u16)> {
            let dev = DeviceBuilder::new()
                .name(side.dev.as_str())
                .layer(Layer::L3)
                .inherit_enable_state()
                .with(|opt| {
                    opt.packet_information(false).offload(offload);
                })
                .build_sync()?;
            let mtu = dev.mtu()?;
            Ok((dev, mtu))
        })
        .map_err(|e| format!("tun-rs: entering the namespace of {}: {e}", side.dev))?;
    let (dev, mtu) = opened.map_err(|e| format!("tun-rs: attaching to {}: {e}", side.dev))?;
    if offload && !dev.tcp_gso() {
        return Err(format!("tun-rs: offload not enabled on {}", side.dev));
    }
    dev.set_nonblocking(true)
        .map_err(|e| format!("tun-rs: set_nonblocking on {}: {e}", side.dev))?;
    Ok((dev, mtu))
}

/// The length of each `recv_multiple` output buffer: the virtio-net header room in front
/// plus one MTU-sized segment (tun-benchmark2 uses `VIRTIO_NET_HDR_LEN + 1500` for its
/// 1500-byte MTU). Never below 1500, so a misreported MTU cannot drop ordinary packets.
fn segment_len(mtu: u16) -> usize {
    VIRTIO_NET_HDR_LEN + usize::from(mtu).clamp(1500, MAX_PACKET)
}

/// Joins a forwarding thread, turning a panic into an error.
fn joined(handle: ScopedJoinHandle<'_, Result<(), String>>) -> Result<(), String> {
    handle
        .join()
        .unwrap_or_else(|_| Err("tun-rs forwarding thread panicked".into()))
}

/// What both forwarding threads share.
struct Ctx<'a> {
    /// Set by the caller to end forwarding.
    stop: &'a AtomicBool,
    /// Set by a thread that failed, so that the other one ends too.
    failed: &'a AtomicBool,
    /// Triggered with `failed`, to wake the other thread from its idle wait at once.
    event: &'a InterruptEvent,
}

impl Ctx<'_> {
    #[inline]
    fn done(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.failed.load(Ordering::Relaxed)
    }

    /// Deals with an error from a read on `src`: waits (bounded) if it would block, passes
    /// over one malformed frame, and returns the error if the device itself failed.
    fn recv_error(&self, src: &SyncDevice, e: io::Error) -> io::Result<()> {
        match e.kind() {
            io::ErrorKind::WouldBlock => {
                match src.wait_readable_intr_timeout(self.event, Some(IDLE_WAIT)) {
                    Ok(()) => Ok(()),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                        ) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            io::ErrorKind::Interrupted => Ok(()),
            // recv_multiple's own checks of the virtio-net header / GSO split: a frame it
            // could not parse, dropped.
            _ if e.raw_os_error().is_none() => Ok(()),
            _ => Err(e),
        }
    }
}

/// Deals with an error from a write to `dst`: the packet (or, from `send_multiple`, the
/// batch's last failing write) is dropped, unless the descriptor itself is gone.
fn send_error(e: io::Error) -> io::Result<()> {
    match e.raw_os_error() {
        Some(code) if code == EBADFD || code == EBADF => Err(e),
        _ => Ok(()),
    }
}

/// `EBADFD` and `EBADF` on Linux (the tun driver returns EBADFD once detached).
const EBADFD: i32 = 77;
const EBADF: i32 = 9;

/// One direction of forwarding.
struct Direction<'a> {
    src: &'a SyncDevice,
    dst: &'a SyncDevice,
    /// Output buffer length for `recv_multiple` (offload only).
    seg_len: usize,
    name: String,
}

impl Direction<'_> {
    fn run(&self, ctx: &Ctx<'_>, offload: bool) -> Result<(), String> {
        let result = if offload {
            self.forward_offload(ctx)
        } else {
            self.forward_plain(ctx)
        };
        result.map_err(|e| {
            ctx.failed.store(true, Ordering::Relaxed);
            let _ = ctx.event.trigger();
            format!("tun-rs forwarding {}: {e}", self.name)
        })
    }

    /// One packet per `recv` / `send`, as tun-benchmark2's `tun-rs-sync-normal`.
    fn forward_plain(&self, ctx: &Ctx<'_>) -> io::Result<()> {
        let mut buf = vec![0u8; MAX_PACKET + 1];
        while !ctx.done() {
            let n = match self.src.recv(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    ctx.recv_error(self.src, e)?;
                    continue;
                }
            };
            if n == 0 {
                continue;
            }
            if let Err(e) = self.dst.send(&buf[..n]) {
                send_error(e)?;
            }
        }
        Ok(())
    }

    /// GSO split on receive, GRO coalescing on send, as tun-benchmark2's `tun-rs-sync-gso`:
    /// a `VIRTIO_NET_HDR_LEN + 65535` receive buffer, `IDEAL_BATCH_SIZE` output buffers
    /// of capacity `VIRTIO_NET_HDR_LEN + 65535` (room for `send_multiple` to coalesce into),
    /// packets placed at offset `VIRTIO_NET_HDR_LEN` so the header can be written in front.
    fn forward_offload(&self, ctx: &Ctx<'_>) -> io::Result<()> {
        let cap = VIRTIO_NET_HDR_LEN + MAX_PACKET;
        let mut original = vec![0u8; cap];
        let mut bufs: Vec<Vec<u8>> = (0..IDEAL_BATCH_SIZE)
            .map(|_| {
                let mut b = Vec::with_capacity(cap);
                b.resize(self.seg_len, 0);
                b
            })
            .collect();
        let mut sizes = vec![0usize; IDEAL_BATCH_SIZE];
        let mut gro = GROTable::default();
        // How many of `bufs` the last batch truncated, coalesced into or swapped around;
        // the rest still have length `seg_len`.
        let mut dirty = 0;
        while !ctx.done() {
            for b in &mut bufs[..dirty] {
                b.resize(self.seg_len, 0);
            }
            dirty = 0;
            let num = match self.src.recv_multiple(
                &mut original,
                &mut bufs,
                &mut sizes,
                VIRTIO_NET_HDR_LEN,
            ) {
                Ok(num) => num,
                Err(e) => {
                    ctx.recv_error(self.src, e)?;
                    continue;
                }
            };
            if num == 0 {
                continue;
            }
            for (b, &size) in bufs[..num].iter_mut().zip(&sizes[..num]) {
                b.truncate(VIRTIO_NET_HDR_LEN + size);
            }
            dirty = num;
            if let Err(e) = self
                .dst
                .send_multiple(&mut gro, &mut bufs[..num], VIRTIO_NET_HDR_LEN)
            {
                send_error(e)?;
            }
        }
        Ok(())
    }
}
