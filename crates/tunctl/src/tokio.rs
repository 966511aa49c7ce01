//! Async I/O under tokio (feature `tokio`): [`AsyncDevice`] with `recv`/`send` on `&self`
//! through one `AsyncFd` per queue (no lock, no `split()`), a [`Stream`]/[`Sink`] of
//! packets ([`PacketStream`]), and link events as a [`Stream`] ([`AsyncWatch`]).
//!
//! A task blocked in `recv` wakes with [`ErrorKind::Closed`] when the device is destroyed,
//! and with [`ErrorKind::Gone`] when it is deleted from outside; a [`PacketStream`] ends
//! likewise.

use std::future::poll_fn;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use ::tokio::io::unix::AsyncFd;
use ::tokio::io::Interest;
use ::tokio::task::coop;
use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use futures_sink::Sink;

use crate::device::Device;
use crate::error::{Error, ErrorKind, Result};
use crate::netlink::{LinkEvent, Watch};
use crate::queue::Queue;
use crate::sys;

/// What `recv` and `readable` wait for. ERROR too: a detached tun fd (destroyed or deleted
/// device) polls as EPOLLERR only.
const READ_INTEREST: Interest = Interest::READABLE.add(Interest::ERROR);
/// What `send` and `writable` wait for.
const WRITE_INTEREST: Interest = Interest::WRITABLE.add(Interest::ERROR);

/// One queue of a device, driven by tokio. It owns the [`Queue`] it registered, so the fd
/// stays open for as long as the registration lasts.
#[derive(Debug)]
pub struct AsyncQueue {
    io: AsyncFd<Queue>,
}

impl AsyncQueue {
    /// Registers a queue with the current tokio runtime (must be called inside one), and
    /// sets `O_NONBLOCK` on its open file: each packet is then one `readv(2)` or `write(2)`.
    /// A blocking [`Queue`] that shares the open file (a duplicate made with
    /// [`Queue::try_clone`], as [`AsyncDevice`] makes) keeps blocking: it waits in
    /// `poll(2)` instead of `read(2)`. Fails with [`ErrorKind::Unsupported`] outside a
    /// runtime.
    pub fn new(queue: Queue) -> Result<AsyncQueue> {
        if ::tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "register with tokio",
                "not inside a tokio runtime",
            )
            .on(queue.device()));
        }
        let name = queue.device().to_string();
        // Non-blocking, so that each packet is one plain readv(2) or write(2): preadv2 and
        // pwritev2 with RWF_NOWAIT on a blocking fd cost about 110 ns more per call. The
        // flag is the open file's: a blocking `Queue` sharing it (the `Device`'s own queue,
        // of which `AsyncDevice` registers a duplicate) still blocks, in poll(2) instead of
        // read(2).
        queue.set_nonblocking()?;
        let io = sys::register_async(queue, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| Error::os("register with tokio", e).on(name))?;
        Ok(AsyncQueue { io })
    }

    /// Receives one packet, waiting (asynchronously) as long as it takes. Errors as
    /// [`Queue::recv`]: [`ErrorKind::Truncated`], [`ErrorKind::Closed`], [`ErrorKind::Gone`].
    ///
    /// While packets are queued, each costs one `readv` and one unit of the task's
    /// cooperative budget: no readiness future, no lock, no `poll`, because the readiness
    /// tokio last reported stands until a read finds the queue empty. A task that receives
    /// in a loop still yields to the runtime now and then when the queue never runs dry, so
    /// other tasks and the I/O driver get their turn.
    pub async fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        loop {
            {
                let coop = poll_fn(coop::poll_proceed).await;
                if let Some(done) = self.read_if_ready(buf) {
                    coop.made_progress();
                    return done;
                }
            }
            // Nothing known to be queued: wait for a packet, or for the error readiness of a
            // destroyed or deleted device, which the read then reports.
            let mut guard = self
                .io
                .ready(READ_INTEREST)
                .await
                .map_err(|e| Error::os("poll", e))?;
            if let Some(done) = self.io.get_ref().read_nonblocking(buf).transpose() {
                return done;
            }
            guard.clear_ready();
        }
    }

    /// One read if tokio last saw the queue readable (one atomic load, no lock): `None` if it
    /// did not, or if the queue turned out to be empty (the readiness is then cleared, so
    /// the next wait is a real one).
    fn read_if_ready(&self, buf: &mut [u8]) -> Option<Result<usize>> {
        // READABLE alone: `try_io` needs a single interest. The error readiness of a detached
        // fd is the slow path's business (`ready(READ_INTEREST)` in `recv`).
        self.io
            .try_io(Interest::READABLE, |queue| {
                queue
                    .read_nonblocking(buf)
                    .transpose()
                    .ok_or_else(|| std::io::ErrorKind::WouldBlock.into())
            })
            .ok()
    }

    /// Sends one packet (one packet per write), waiting for room if needed. Like `recv`, it
    /// costs one unit of the task's cooperative budget.
    pub async fn send(&self, packet: &[u8]) -> Result<usize> {
        loop {
            {
                let coop = poll_fn(coop::poll_proceed).await;
                if let Some(done) = self.io.get_ref().write_nonblocking(packet).transpose() {
                    coop.made_progress();
                    return done;
                }
            }
            let mut guard = self
                .io
                .ready(WRITE_INTEREST)
                .await
                .map_err(|e| Error::os("poll", e))?;
            guard.clear_ready();
        }
    }

    /// Waits until the queue has a packet to read (or an error to report: a destroyed or
    /// deleted device). A following [`poll_recv`](AsyncQueue::poll_recv) or `recv` may still
    /// find nothing if another task took the packet.
    pub async fn readable(&self) -> Result<()> {
        let guard = self
            .io
            .ready(READ_INTEREST)
            .await
            .map_err(|e| Error::os("poll", e).on(self.queue().device()))?;
        drop(guard);
        Ok(())
    }

    /// Waits until the queue can take a packet.
    pub async fn writable(&self) -> Result<()> {
        let guard = self
            .io
            .ready(WRITE_INTEREST)
            .await
            .map_err(|e| Error::os("poll", e).on(self.queue().device()))?;
        drop(guard);
        Ok(())
    }

    /// Polls for one packet: `Ready(Ok(n))` with the packet in `buf[..n]`, or `Pending`
    /// with `cx`'s waker registered for the queue's readiness. For hand-written futures and
    /// `Stream`s; errors as [`recv`](AsyncQueue::recv).
    pub fn poll_recv(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize>> {
        loop {
            let mut guard =
                ready!(self.io.poll_read_ready(cx)).map_err(|e| Error::os("poll", e))?;
            match self.io.get_ref().read_nonblocking(buf) {
                Ok(Some(n)) => return Poll::Ready(Ok(n)),
                Ok(None) => guard.clear_ready(),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Polls to send one packet: `Ready(Ok(n))` once the kernel took it, or `Pending` with
    /// `cx`'s waker registered for room (or for a turn, once the task's cooperative budget
    /// is spent). Errors as [`send`](AsyncQueue::send).
    pub fn poll_send(&self, cx: &mut Context<'_>, packet: &[u8]) -> Poll<Result<usize>> {
        let coop = ready!(coop::poll_proceed(cx));
        loop {
            if let Some(done) = self.io.get_ref().write_nonblocking(packet).transpose() {
                coop.made_progress();
                return Poll::Ready(done);
            }
            let mut guard =
                ready!(self.io.poll_write_ready(cx)).map_err(|e| Error::os("poll", e))?;
            guard.clear_ready();
        }
    }

    /// The blocking queue underneath.
    pub fn queue(&self) -> &Queue {
        self.io.get_ref()
    }
}

/// A [`Device`] driven by tokio: every queue has its own `AsyncFd`, so one task can receive
/// while another sends, and each queue can have its own reader task.
#[derive(Debug)]
pub struct AsyncDevice {
    queues: Vec<AsyncQueue>,
    device: Device,
}

impl AsyncDevice {
    /// Registers every queue of `device` with the current tokio runtime (must be called
    /// inside one). Each queue's fd is duplicated (close-on-exec) so the `Device` keeps its
    /// own.
    pub fn new(device: Device) -> Result<AsyncDevice> {
        let queues = device
            .queues()
            .iter()
            .map(|q| q.try_clone().and_then(AsyncQueue::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(AsyncDevice { queues, device })
    }

    /// The device underneath: name, configuration, ioctls, `destroy`.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The queues.
    pub fn queues(&self) -> &[AsyncQueue] {
        &self.queues
    }

    /// Receives one packet on the first queue; see [`AsyncQueue::recv`].
    pub async fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        self.queues[0].recv(buf).await
    }

    /// Sends one packet on the first queue; see [`AsyncQueue::send`].
    pub async fn send(&self, packet: &[u8]) -> Result<usize> {
        self.queues[0].send(packet).await
    }

    /// Removes the device; see [`Device::destroy`]. Tasks blocked in `recv` wake with
    /// [`ErrorKind::Closed`] and streams end.
    pub fn destroy(&self) -> Result<()> {
        self.device.destroy()
    }

    /// A [`Stream`] of received packets and a [`Sink`] of packets to send, over a duplicate
    /// of the first queue (so the stream can move into its own task while this
    /// `AsyncDevice` stays usable). [`destroy`](AsyncDevice::destroy) ends the stream: it
    /// then yields `None`. Must be called inside a tokio runtime.
    pub fn packets(&self) -> Result<PacketStream> {
        let name = self.device.name();
        let wake = self.device.wake_fd()?;
        let wake = sys::register_async(wake, Interest::READABLE)
            .map_err(|e| Error::os("register with tokio", e).on(name))?;
        let queue = AsyncQueue::new(self.device.queues()[0].try_clone()?)?;
        // The kernel's announcement of the device's deletion ends the stream with Gone (a
        // detached tun fd signals only an error readiness, which tokio's read readiness
        // does not include). Without a watch (another namespace that this process may not
        // enter), only destroy ends it.
        let gone = Watch::open(self.device.namespace())
            .and_then(AsyncWatch::new)
            .ok();
        Ok(PacketStream {
            queue,
            wake,
            gone,
            index: self.device.index(),
            buf: BytesMut::new(),
            pending: None,
            ended: false,
        })
    }
}

/// A [`Watch`] as a [`Stream`] of [`LinkEvent`]s under tokio: each item is an event of the
/// watched namespace, as [`Watch`]'s iterator gives them.
#[derive(Debug)]
pub struct AsyncWatch {
    io: AsyncFd<Watch>,
}

impl AsyncWatch {
    /// Registers `watch` with the current tokio runtime (must be called inside one); its
    /// socket becomes non-blocking.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unsupported`] outside a runtime; [`ErrorKind::Os`] if the socket cannot
    /// be registered.
    pub fn new(watch: Watch) -> Result<AsyncWatch> {
        if ::tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "register with tokio",
                "not inside a tokio runtime",
            ));
        }
        watch.set_nonblocking()?;
        let io = sys::register_async(watch, Interest::READABLE)
            .map_err(|e| Error::os("register with tokio", e))?;
        Ok(AsyncWatch { io })
    }

    /// The watch underneath.
    pub fn watch(&self) -> &Watch {
        self.io.get_ref()
    }
}

impl Stream for AsyncWatch {
    type Item = Result<LinkEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.io.get_mut().pop() {
                return Poll::Ready(Some(Ok(event)));
            }
            let mut guard = match ready!(this.io.poll_read_ready_mut(cx)) {
                Ok(g) => g,
                Err(e) => return Poll::Ready(Some(Err(Error::os("poll", e)))),
            };
            match guard.get_inner_mut().receive(true) {
                Ok(true) => {}
                Ok(false) => guard.clear_ready(),
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
}

/// The largest packet a stream reads at once (a GSO packet with its headers).
const STREAM_READ: usize = 65536 + 64;
/// The chunk packets are carved from.
const STREAM_CHUNK: usize = 4 * STREAM_READ;

/// Packets of an [`AsyncDevice`] as a [`Stream`] (`Result<Bytes>`, one item per packet; the
/// stream ends after the device closes) and a [`Sink`] (`Bytes`, one packet per item).
///
/// Received packets are carved out of 256 KiB chunks: one allocation per chunk, not per
/// packet. The stream ends (`None`) when the device is destroyed by this process; a device
/// deleted from outside, or moved to another namespace, ends it with one
/// [`ErrorKind::Gone`] item first (seen through a [`Watch`] of the device's namespace,
/// which this process must be able to enter).
#[derive(Debug)]
pub struct PacketStream {
    queue: AsyncQueue,
    /// The device's wake-up eventfd: readable once it is destroyed.
    wake: AsyncFd<OwnedFd>,
    /// The device's namespace's link events: its deletion ends the stream with Gone.
    gone: Option<AsyncWatch>,
    /// The device's index, to find it among the events.
    index: u32,
    buf: BytesMut,
    pending: Option<Bytes>,
    ended: bool,
}

impl Stream for PacketStream {
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        // Packets are carved from a 256 KiB chunk; when less than one read's room is left, a
        // fresh chunk replaces it (never grown in place, which would copy the stale tail):
        // one allocation per chunk, shared by the packets cut from it.
        if this.buf.len() < STREAM_READ {
            this.buf = BytesMut::zeroed(STREAM_CHUNK);
        }
        match this.queue.poll_recv(cx, &mut this.buf[..STREAM_READ]) {
            Poll::Pending => {
                // A destroyed device's fd never polls readable to tokio: watch the eventfd.
                if this.wake.poll_read_ready(cx).is_ready() {
                    this.ended = true;
                    return Poll::Ready(None);
                }
                if let Some(gone) = this.gone_now(cx) {
                    this.ended = true;
                    return Poll::Ready(Some(Err(gone)));
                }
                Poll::Pending
            }
            Poll::Ready(Ok(n)) => Poll::Ready(Some(Ok(this.buf.split_to(n).freeze()))),
            Poll::Ready(Err(e)) => {
                if e.kind() == ErrorKind::Closed {
                    this.ended = true;
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Err(e)))
                }
            }
        }
    }
}

impl PacketStream {
    /// The error that ends the stream if the kernel announced the device's deletion or
    /// departure (registering `cx` for the next announcement otherwise).
    fn gone_now(&mut self, cx: &mut Context<'_>) -> Option<Error> {
        let watch = self.gone.as_mut()?;
        loop {
            match Pin::new(&mut *watch).poll_next(cx) {
                Poll::Ready(Some(Ok(LinkEvent::Deleted { index, .. }))) if index == self.index => {
                    break;
                }
                Poll::Ready(Some(Ok(LinkEvent::MovedAway { index, .. })))
                    if index == self.index =>
                {
                    break;
                }
                // Announcements were lost: the watch read the links anew.
                Poll::Ready(Some(Ok(LinkEvent::Lost))) if !watch.watch().knows(self.index) => {
                    break;
                }
                Poll::Ready(Some(_)) => {}
                Poll::Ready(None) | Poll::Pending => return None,
            }
        }
        let name = self.queue.queue().device();
        Some(
            Error::new(
                ErrorKind::Gone,
                "recv",
                "the device was deleted, or moved to another namespace, from outside",
            )
            .on(name),
        )
    }
}

impl Sink<Bytes> for PacketStream {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_flush(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Bytes) -> Result<()> {
        let this = self.get_mut();
        // A packet that fits nowhere would block the sink forever: refuse it now.
        if item.is_empty() {
            return Err(Error::new(ErrorKind::InvalidInput, "send", "empty packet")
                .on(this.queue.queue().device()));
        }
        this.pending = Some(item);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if let Some(packet) = &this.pending {
            let sent = ready!(this.queue.poll_send(cx, packet));
            this.pending = None;
            sent?;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_flush(cx)
    }
}
