//! Active mode (the Erlang original's `{active, true}`): packets delivered to the device's
//! owner without asking, one [`Event`] per packet, with flow control.
//!
//! [`Device::activate`](crate::Device::activate) starts one reader thread per queue and returns
//! [`Packets`], the owner's inbox. Moving `Packets` to another thread hands the device over
//! (the original's `controlling_process`): only its holder can do that, and packets already
//! in it move along, none lost or duplicated. The inbox and the `Device` are both owners:
//! dropping the inbox while the `Device` exists returns the device to passive mode; dropping
//! the `Device` while the inbox exists keeps delivery going; when the last of them goes, a
//! non-persistent device goes too (a persistent one stays, passive). The inbox ends with one
//! signal: [`Packets::recv`] fails with [`ErrorKind::Closed`] once the device is destroyed
//! and every delivered event has been received; an [`Event::Error`] reports only other
//! causes (e.g. [`ErrorKind::Gone`]).
//!
//! **Memory is bounded.** Each reader owns `capacity` packet buffers (64 KiB each) and recycles
//! them: a buffer returns to its reader when the [`Packet`] is dropped. When the owner holds
//! them all, the reader stops reading, packets wait in the kernel's queue (`txqueuelen`), and
//! the kernel drops what does not fit. No allocation happens per packet.
//!
//! **Flow control** ([`Device::set_active`](crate::Device::set_active)): `Off` pauses delivery
//! and returns once every reader has stopped, so packets that arrive afterwards stay in the
//! kernel queue, where passive reads see them; `On` resumes; `Once` and `Count(n)` deliver
//! exactly that many packets and then pause. While delivering, passive reads fail with
//! [`ErrorKind::Active`] and consume nothing.

use std::ops::Deref;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
pub use crate::gate::Active;
use crate::gate::Turn;
use crate::queue::Shared;
use crate::sys::{self, Interest, Ready};

/// Size of each packet buffer of a reader: the largest packet a tun device can hand over
/// (a 64 KiB GSO packet plus virtio-net and packet-information headers).
pub const PACKET_BUFFER: usize = 65536 + 64;

/// How often a reader waiting for a free buffer checks for a mode change.
const BUFFER_WAIT: Duration = Duration::from_millis(20);

/// What the owner receives: a packet, or the error that ended delivery (the original's
/// `{tuntap, Pid, Bin}` and `{tuntap_error, Pid, Reason}`).
#[derive(Debug)]
pub enum Event {
    /// One packet, exactly as one `read(2)` returned it.
    Packet(Packet),
    /// The device failed, e.g. [`ErrorKind::Gone`] when deleted from outside. No more packets
    /// come from that queue.
    Error(Error),
}

/// One packet delivered in active mode, tagged with its device and queue. Its buffer goes
/// back to the reader when dropped.
pub struct Packet {
    buf: Vec<u8>,
    len: usize,
    queue: usize,
    shared: Arc<Shared>,
    home: SyncSender<Vec<u8>>,
}

impl Packet {
    /// The name of the device the packet came from.
    pub fn device(&self) -> &str {
        &self.shared.name
    }

    /// The index of the queue that read it.
    pub fn queue(&self) -> usize {
        self.queue
    }
}

impl Deref for Packet {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl AsRef<[u8]> for Packet {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packet")
            .field("device", &self.device())
            .field("queue", &self.queue)
            .field("len", &self.len)
            .finish()
    }
}

impl Drop for Packet {
    fn drop(&mut self) {
        // Recycle the buffer; if the reader is gone, it is simply freed.
        let _ = self.home.try_send(std::mem::take(&mut self.buf));
    }
}

/// The owner's inbox of an active device (the original's owner process). `Send`, not `Clone`:
/// moving it is the hand-over.
#[derive(Debug)]
pub struct Packets {
    rx: Receiver<Event>,
    shared: Arc<Shared>,
}

impl Packets {
    /// The next event, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] once every reader has stopped (the device was destroyed, or each
    /// queue ended with an [`Event::Error`]) and every delivered event has been received.
    pub fn recv(&self) -> Result<Event> {
        self.rx
            .recv()
            .map_err(|_| Error::closed("active recv").on(&self.shared.name))
    }

    /// The next event if one is waiting; `Ok(None)` if not.
    ///
    /// # Errors
    ///
    /// As [`recv`](Packets::recv).
    pub fn try_recv(&self) -> Result<Option<Event>> {
        match self.rx.try_recv() {
            Ok(event) => Ok(Some(event)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => {
                Err(Error::closed("active recv").on(&self.shared.name))
            }
        }
    }

    /// The next event, waiting at most `timeout`; `Ok(None)` if none came.
    ///
    /// # Errors
    ///
    /// As [`recv`](Packets::recv).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Event>> {
        match self.rx.recv_timeout(timeout) {
            Ok(event) => Ok(Some(event)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                Err(Error::closed("active recv").on(&self.shared.name))
            }
        }
    }

    /// Changes the delivery mode; see [`Device::set_active`](crate::Device::set_active).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; [`ErrorKind::Busy`] if a reader does not finish
    /// its packet within 5 s (the new mode is in force all the same).
    pub fn set_active(&self, mode: Active) -> Result<()> {
        self.shared.check_open("set_active")?;
        self.shared
            .control
            .set(mode)
            .map_err(|e| e.on_default(&self.shared.name))
    }

    /// The device's name.
    pub fn device(&self) -> &str {
        &self.shared.name
    }
}

impl Drop for Packets {
    fn drop(&mut self) {
        self.shared.control.stop_and_join();
        self.shared.control.set_inbox(false);
        if self.shared.is_closed() {
            return;
        }
        // A `Device` or `Queue` still holds the device: it returns to passive mode.
        if Arc::strong_count(&self.shared) > 1 {
            return;
        }
        // The last owner went away: a non-persistent device goes with it, as in the Erlang
        // original. When persistence cannot be read, nothing is deleted.
        let persistent = match self.shared.link.info() {
            Ok(info) => info.tun.map(|tun| tun.persist),
            Err(_) => None,
        };
        if persistent == Some(false) {
            let _ = self.shared.destroy();
        }
    }
}

/// Starts one reader per fd and returns the owner's inbox. `capacity` buffers per reader.
pub(crate) fn activate(
    shared: &Arc<Shared>,
    fds: Vec<OwnedFd>,
    capacity: usize,
    mode: Active,
) -> Result<Packets> {
    if capacity == 0 || capacity > 65536 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "activate",
            format!("capacity {capacity}: 1 to 65536 buffers"),
        )
        .on(&shared.name));
    }
    if !shared.control.register(fds.len()) {
        return Err(Error::new(
            ErrorKind::Busy,
            "activate",
            "the device is active already; drop its Packets first",
        )
        .on(&shared.name));
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(capacity * fds.len());
    let total = fds.len();
    for (queue, fd) in fds.into_iter().enumerate() {
        let (free_tx, free_rx) = std::sync::mpsc::sync_channel(capacity);
        for _ in 0..capacity {
            let _ = free_tx.try_send(vec![0u8; PACKET_BUFFER]);
        }
        let reader = Reader {
            fd,
            shared: Arc::clone(shared),
            tx: tx.clone(),
            free_tx,
            free_rx,
            queue,
        };
        let spawned = std::thread::Builder::new()
            .name(format!("tunctl-{}-q{queue}", shared.name))
            .spawn(move || reader.run());
        match spawned {
            Ok(handle) => shared
                .control
                .handles
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(handle),
            Err(e) => {
                // The readers never started are not running: count them out, stop the rest.
                for _ in queue..total {
                    shared.control.unregister();
                }
                shared.control.stop_and_join();
                return Err(Error::os("spawn reader", e).on(&shared.name));
            }
        }
    }
    if let Err(e) = shared.control.set(mode) {
        // Readers without an inbox would deliver into the void: stop them, so the device
        // is passive again, as before the call.
        shared.control.stop_and_join();
        return Err(e.on_default(&shared.name));
    }
    shared.control.set_inbox(true);
    Ok(Packets {
        rx,
        shared: Arc::clone(shared),
    })
}

struct Reader {
    fd: OwnedFd,
    shared: Arc<Shared>,
    tx: SyncSender<Event>,
    free_tx: SyncSender<Vec<u8>>,
    free_rx: Receiver<Vec<u8>>,
    queue: usize,
}

impl Reader {
    fn run(self) {
        let control = &self.shared.control;
        // 1. A buffer (the owner may hold them all: wait, checking for stop).
        while let Some(mut buf) = self.buffer() {
            // 2. Wait for a packet, holding nothing.
            match self.wait_readable() {
                Ok(true) => {}
                Ok(false) => break,
                Err(err) => {
                    self.report(err);
                    break;
                }
            }
            // 3. A turn, then one read that does not wait.
            match control.take_turn() {
                Turn::Exit => break,
                Turn::Park => {
                    let _ = self.free_tx.try_send(buf);
                    if !control.wait_unpaused() {
                        break;
                    }
                    continue;
                }
                Turn::Go => {}
            }
            match sys::read_packet_nowait(self.fd.as_fd(), &mut buf) {
                Ok((len, false)) => {
                    let packet = Packet {
                        buf,
                        len,
                        queue: self.queue,
                        shared: Arc::clone(&self.shared),
                        home: self.free_tx.clone(),
                    };
                    let sent = self.tx.send(Event::Packet(packet));
                    control.end_turn(true);
                    if sent.is_err() {
                        break;
                    }
                }
                Ok((n, true)) => {
                    control.end_turn(true);
                    let _ = self.free_tx.try_send(buf);
                    let err = Error::new(
                        ErrorKind::Truncated,
                        "active recv",
                        format!("packet longer than {n} bytes dropped"),
                    )
                    .on(&self.shared.name);
                    if self.tx.send(Event::Error(err)).is_err() {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    control.end_turn(false);
                    let _ = self.free_tx.try_send(buf);
                }
                Err(e) => {
                    control.end_turn(false);
                    self.report(self.shared.io_error("active recv", e));
                    break;
                }
            }
        }
        control.unregister();
    }

    /// Sends the error that ends delivery, unless it is the device's own destruction: the
    /// inbox then ends with one signal, [`ErrorKind::Closed`] from `recv`, not two.
    fn report(&self, err: Error) {
        if err.kind() != ErrorKind::Closed {
            let _ = self.tx.send(Event::Error(err));
        }
    }

    /// A free buffer, or `None` once delivery stopped.
    fn buffer(&self) -> Option<Vec<u8>> {
        loop {
            match self.free_rx.recv_timeout(BUFFER_WAIT) {
                Ok(buf) => return Some(buf),
                Err(_) if self.shared.control.stopped() => return None,
                Err(_) => {}
            }
        }
    }

    /// Waits until the queue has a packet: `Ok(false)` once delivery stopped.
    fn wait_readable(&self) -> Result<bool> {
        let wake = [self.shared.wake.as_fd(), self.shared.control.nudge.as_fd()];
        loop {
            match sys::poll(self.fd.as_fd(), Interest::Read, &wake, -1) {
                Ok(Ready::Io) => return Ok(true),
                Ok(Ready::Timeout) => {}
                Ok(Ready::Wake(_)) => return Ok(false),
                Err(e) => return Err(self.shared.io_error("poll", e)),
            }
        }
    }
}
