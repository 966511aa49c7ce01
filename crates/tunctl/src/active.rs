//! Active mode (the seed's `{active, true}`): packets delivered to the device's owner without
//! asking, one [`Event`] per packet, with flow control.
//!
//! [`Device::activate`](crate::Device::activate) starts one reader thread per queue and returns
//! [`Packets`], the owner's inbox. Moving `Packets` to another thread hands the device over
//! (the seed's `controlling_process`): only its holder can do that, and packets already in it
//! move along, none lost or duplicated. Dropping it — the owner going away — destroys a
//! non-persistent device; a persistent one returns to passive mode.
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::device::Shared;
use crate::error::{Error, ErrorKind, Result};
use crate::sys::{self, Interest, Ready};

/// Size of each packet buffer of a reader: the largest packet a tun device can hand over
/// (a 64 KiB GSO packet plus virtio-net and packet-information headers).
pub const PACKET_BUFFER: usize = 65536 + 64;

/// How often a reader waiting for a free buffer checks for a mode change.
const BUFFER_WAIT: Duration = Duration::from_millis(20);

/// Delivery mode of an active device (the seed's `{active, Mode}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Active {
    /// Paused: packets stay in the kernel queue; passive reads work.
    Off,
    /// Every packet is delivered.
    On,
    /// Deliver one packet, then pause.
    Once,
    /// Deliver this many packets, then pause.
    Count(u32),
}

/// What the owner receives: a packet, or the error that ended delivery (the seed's
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Off,
    On,
    Count(u32),
}

impl Mode {
    fn delivering(self) -> bool {
        matches!(self, Mode::On | Mode::Count(1..))
    }
}

#[derive(Debug)]
struct State {
    mode: Mode,
    /// Bumped by every mode change: a reader holding a turn from an older epoch gives it back.
    epoch: u64,
    readers: usize,
    parked: usize,
    stop: bool,
}

/// Mode and reader bookkeeping of one device, shared by its readers and handles.
#[derive(Debug)]
pub(crate) struct Control {
    state: Mutex<State>,
    cond: Condvar,
    /// Readable while a mode change waits for readers blocked in `poll`.
    nudge: OwnedFd,
    delivering: AtomicBool,
}

enum Turn {
    Go { epoch: u64, reserved: bool },
    Exit,
}

impl Control {
    pub(crate) fn new() -> std::io::Result<Control> {
        Ok(Control {
            state: Mutex::new(State {
                mode: Mode::Off,
                epoch: 0,
                readers: 0,
                parked: 0,
                stop: false,
            }),
            cond: Condvar::new(),
            nudge: sys::eventfd()?,
            delivering: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether packets currently go to the owner (passive reads are refused then).
    pub(crate) fn delivering(&self) -> bool {
        self.delivering.load(Ordering::Acquire)
    }

    fn publish(&self, state: &State) {
        self.delivering.store(
            !state.stop && state.readers > 0 && state.mode.delivering(),
            Ordering::Release,
        );
    }

    pub(crate) fn is_active(&self) -> bool {
        self.lock().readers > 0
    }

    fn drain_nudge(&self) {
        let mut buf = [0u8; 8];
        let _ = sys::read_packet(self.nudge.as_fd(), &mut buf);
    }

    /// Changes the mode. `Off` returns once every reader is parked (bounded: 5 s).
    pub(crate) fn set(&self, active: Active) {
        let mode = match active {
            Active::Off | Active::Count(0) => Mode::Off,
            Active::On => Mode::On,
            Active::Once => Mode::Count(1),
            Active::Count(n) => Mode::Count(n),
        };
        let mut state = self.lock();
        if state.mode == mode {
            return;
        }
        state.mode = mode;
        state.epoch += 1;
        self.publish(&state);
        if mode.delivering() {
            self.drain_nudge();
            self.cond.notify_all();
            return;
        }
        let _ = sys::eventfd_signal(self.nudge.as_fd());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !state.stop && state.parked < state.readers && std::time::Instant::now() < deadline {
            state = self
                .cond
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        self.drain_nudge();
    }

    /// Stops every reader for good (device dropped, destroyed, or owner gone).
    pub(crate) fn stop(&self) {
        let mut state = self.lock();
        state.stop = true;
        self.publish(&state);
        let _ = sys::eventfd_signal(self.nudge.as_fd());
        self.cond.notify_all();
    }

    /// Called by a reader before it reads: waits (parked) while paused.
    fn turn(&self) -> Turn {
        let mut state = self.lock();
        loop {
            if state.stop {
                return Turn::Exit;
            }
            match state.mode {
                Mode::On => {
                    return Turn::Go {
                        epoch: state.epoch,
                        reserved: false,
                    }
                }
                Mode::Count(n) if n > 0 => {
                    state.mode = Mode::Count(n - 1);
                    self.publish(&state);
                    return Turn::Go {
                        epoch: state.epoch,
                        reserved: true,
                    };
                }
                _ => {
                    state.parked += 1;
                    self.cond.notify_all();
                    state = self.cond.wait(state).unwrap_or_else(|p| p.into_inner());
                    state.parked -= 1;
                }
            }
        }
    }

    /// Returns an unused reservation of a `Count` turn, if the mode is still that one.
    fn give_back(&self, epoch: u64, reserved: bool) {
        if !reserved {
            return;
        }
        let mut state = self.lock();
        if let (true, Mode::Count(n)) = (state.epoch == epoch, state.mode) {
            state.mode = Mode::Count(n + 1);
            self.publish(&state);
        }
    }

    /// Whether the mode changed (or delivery stopped) since `epoch`.
    fn changed(&self, epoch: u64) -> bool {
        let state = self.lock();
        state.stop || state.epoch != epoch
    }

    fn unregister(&self) {
        let mut state = self.lock();
        state.readers -= 1;
        self.publish(&state);
        self.cond.notify_all();
    }
}

/// The owner's inbox of an active device (the seed's owner process). `Send`, not `Clone`:
/// moving it is the hand-over.
#[derive(Debug)]
pub struct Packets {
    rx: Receiver<Event>,
    shared: Arc<Shared>,
}

impl Packets {
    /// The next event, waiting as long as it takes. [`ErrorKind::Closed`] once the device is
    /// closed and every delivered event has been received.
    pub fn recv(&self) -> Result<Event> {
        self.rx
            .recv()
            .map_err(|_| Error::closed("active recv").on(&self.shared.name))
    }

    /// The next event if one is waiting; `Ok(None)` if not.
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
    pub fn set_active(&self, mode: Active) -> Result<()> {
        self.shared.check_open("set_active")?;
        self.shared.control.set(mode);
        Ok(())
    }

    /// The device's name.
    pub fn device(&self) -> &str {
        &self.shared.name
    }
}

impl Drop for Packets {
    fn drop(&mut self) {
        self.shared.control.stop();
        if self.shared.is_closed() {
            return;
        }
        // The owner went away: a non-persistent device goes with it, as in the seed.
        let persistent = self
            .shared
            .link
            .info()
            .ok()
            .and_then(|info| info.tun)
            .is_some_and(|tun| tun.persist);
        if !persistent {
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
    if shared.control.is_active() {
        return Err(Error::new(
            ErrorKind::Busy,
            "activate",
            "the device is active already; drop its Packets first",
        )
        .on(&shared.name));
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(capacity * fds.len());
    shared.control.register_all(fds.len());
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
        if let Err(e) = spawned {
            shared.control.stop();
            return Err(Error::os("spawn reader", e).on(&shared.name));
        }
    }
    shared.control.set(mode);
    Ok(Packets {
        rx,
        shared: Arc::clone(shared),
    })
}

impl Control {
    fn register_all(&self, n: usize) {
        let mut state = self.lock();
        state.readers += n;
        state.stop = false;
        state.mode = Mode::Off;
        state.epoch += 1;
        self.publish(&state);
    }
}

struct Reader {
    fd: OwnedFd,
    shared: Arc<Shared>,
    tx: SyncSender<Event>,
    free_tx: SyncSender<Vec<u8>>,
    free_rx: Receiver<Vec<u8>>,
    queue: usize,
}

enum Outcome {
    Read(usize),
    Changed,
    Failed(Error),
}

impl Reader {
    fn run(self) {
        let control = &self.shared.control;
        while let Turn::Go { epoch, reserved } = control.turn() {
            let Some(mut buf) = self.buffer(epoch) else {
                control.give_back(epoch, reserved);
                continue;
            };
            match self.read(epoch, &mut buf) {
                Outcome::Read(len) => {
                    let packet = Packet {
                        buf,
                        len,
                        queue: self.queue,
                        shared: Arc::clone(&self.shared),
                        home: self.free_tx.clone(),
                    };
                    if self.tx.send(Event::Packet(packet)).is_err() {
                        break;
                    }
                }
                Outcome::Changed => {
                    let _ = self.free_tx.try_send(buf);
                    control.give_back(epoch, reserved);
                }
                Outcome::Failed(err) => {
                    let _ = self.tx.send(Event::Error(err));
                    break;
                }
            }
        }
        control.unregister();
    }

    /// A free buffer, or `None` if the mode changed while waiting for one.
    fn buffer(&self, epoch: u64) -> Option<Vec<u8>> {
        loop {
            match self.free_rx.recv_timeout(BUFFER_WAIT) {
                Ok(buf) => return Some(buf),
                Err(_) if self.shared.control.changed(epoch) => return None,
                Err(_) => {}
            }
        }
    }

    fn read(&self, epoch: u64, buf: &mut [u8]) -> Outcome {
        let control = &self.shared.control;
        loop {
            match sys::read_packet(self.fd.as_fd(), buf) {
                Ok((n, false)) => return Outcome::Read(n),
                Ok((n, true)) => {
                    let err = Error::new(
                        ErrorKind::Truncated,
                        "active recv",
                        format!("packet longer than {n} bytes dropped"),
                    )
                    .on(&self.shared.name);
                    if self.tx.send(Event::Error(err)).is_err() {
                        return Outcome::Changed;
                    }
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Outcome::Failed(self.shared.io_error("active recv", e)),
            }
            let wake = [self.shared.wake.as_fd(), control.nudge.as_fd()];
            match sys::poll(self.fd.as_fd(), Interest::Read, &wake, -1) {
                Ok(Ready::Io) | Ok(Ready::Timeout) => {}
                Ok(Ready::Wake(0)) => {
                    return Outcome::Failed(Error::closed("active recv").on(&self.shared.name))
                }
                Ok(Ready::Wake(_)) => {
                    if control.changed(epoch) {
                        return Outcome::Changed;
                    }
                }
                Err(e) => return Outcome::Failed(self.shared.io_error("poll", e)),
            }
        }
    }
}
