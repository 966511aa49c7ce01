//! The active-mode gate: which mode a device delivers in, how many reader threads take
//! turns, and whether passive reads must be refused. Below both the queues (which consult
//! it) and active mode (which drives it), so neither reaches up into the other.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// Delivery mode of an active device (the original's `{active, Mode}`).
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
    /// Readers started and not yet finished.
    readers: usize,
    /// Readers holding a turn: between taking it and delivering (or giving it back). A turn
    /// is taken only once the queue is readable, and the read that follows never waits.
    busy: usize,
    stop: bool,
}

/// Mode and reader bookkeeping of one device, shared by its readers and handles.
///
/// A reader waits for its queue to be readable holding nothing; then takes a turn under the
/// lock (a `Count` is decremented there), reads without waiting, delivers, and gives the turn
/// back. A mode change therefore only has to wait for readers that hold a turn, which never
/// block: `set(Off)` returns within one read-and-deliver, and `Count(n)` delivers exactly n
/// packets whichever queues they arrive on.
#[derive(Debug)]
pub(crate) struct Control {
    state: Mutex<State>,
    /// Readers wait here while paused.
    readers_cv: Condvar,
    /// `set` waits here for busy readers to finish.
    setter_cv: Condvar,
    /// Serialises `set` calls.
    setter: Mutex<()>,
    /// Readable once delivery stops for good: wakes readers blocked in `poll`.
    pub(crate) nudge: OwnedFd,
    delivering: AtomicBool,
    /// Whether the owner's inbox (`Packets`) exists: while it does, the readers keep the
    /// device alive even when every `Device` handle is gone.
    inbox: AtomicBool,
    pub(crate) handles: Mutex<Vec<JoinHandle<()>>>,
}

pub(crate) enum Turn {
    Go,
    Park,
    Exit,
}

impl Control {
    pub(crate) fn new() -> std::io::Result<Control> {
        Ok(Control {
            state: Mutex::new(State {
                mode: Mode::Off,
                readers: 0,
                busy: 0,
                stop: false,
            }),
            readers_cv: Condvar::new(),
            setter_cv: Condvar::new(),
            setter: Mutex::new(()),
            nudge: sys::eventfd()?,
            delivering: AtomicBool::new(false),
            inbox: AtomicBool::new(false),
            handles: Mutex::new(Vec::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether passive reads must be refused: packets go to the owner, or a reader is
    /// between taking a turn and delivering.
    pub(crate) fn delivering(&self) -> bool {
        self.delivering.load(Ordering::Acquire)
    }

    fn publish(&self, state: &State) {
        let on = !state.stop && state.readers > 0 && (state.mode.delivering() || state.busy > 0);
        self.delivering.store(on, Ordering::Release);
    }

    pub(crate) fn is_active(&self) -> bool {
        self.lock().readers > 0
    }

    /// Changes the mode and returns once no reader holds a turn taken under the old one
    /// (bounded: 5 s, then [`ErrorKind::Busy`]).
    pub(crate) fn set(&self, active: Active) -> Result<()> {
        let mode = match active {
            Active::Off | Active::Count(0) => Mode::Off,
            Active::On => Mode::On,
            Active::Once => Mode::Count(1),
            Active::Count(n) => Mode::Count(n),
        };
        let _serial = self.setter.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = self.lock();
        state.mode = mode;
        self.publish(&state);
        self.readers_cv.notify_all();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !state.stop && state.busy > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(Error::new(
                    ErrorKind::Busy,
                    "set_active",
                    "a reader did not finish its packet within 5 s",
                ));
            }
            state = self
                .setter_cv
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }

    /// Stops every reader for good (device dropped or destroyed, or owner gone).
    pub(crate) fn stop(&self) {
        let mut state = self.lock();
        state.stop = true;
        self.publish(&state);
        let _ = sys::eventfd_signal(self.nudge.as_fd());
        self.readers_cv.notify_all();
        self.setter_cv.notify_all();
    }

    /// Stops the readers and waits for them to finish (they close their fds).
    /// Records whether the owner's inbox exists.
    pub(crate) fn set_inbox(&self, alive: bool) {
        self.inbox.store(alive, Ordering::Release);
    }

    /// Whether the owner's inbox exists.
    pub(crate) fn inbox(&self) -> bool {
        self.inbox.load(Ordering::Acquire)
    }

    pub(crate) fn stop_and_join(&self) {
        self.stop();
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }

    /// A reader with a readable queue asks for a turn.
    pub(crate) fn take_turn(&self) -> Turn {
        let mut state = self.lock();
        if state.stop {
            return Turn::Exit;
        }
        match state.mode {
            Mode::On => {}
            Mode::Count(n) if n > 0 => state.mode = Mode::Count(n - 1),
            _ => return Turn::Park,
        }
        state.busy += 1;
        self.publish(&state);
        Turn::Go
    }

    /// Ends a turn; `used == false` returns an unused `Count` turn.
    pub(crate) fn end_turn(&self, used: bool) {
        let mut state = self.lock();
        state.busy -= 1;
        if !used {
            if let Mode::Count(n) = state.mode {
                state.mode = Mode::Count(n.saturating_add(1));
            }
        }
        self.publish(&state);
        self.setter_cv.notify_all();
    }

    /// Waits while delivery is paused; `false` once stopped.
    pub(crate) fn wait_unpaused(&self) -> bool {
        let mut state = self.lock();
        while !state.stop && !state.mode.delivering() {
            state = self
                .readers_cv
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        !state.stop
    }

    pub(crate) fn stopped(&self) -> bool {
        self.lock().stop
    }

    /// Registers `n` readers at once, refusing if readers are running.
    pub(crate) fn register(&self, n: usize) -> bool {
        let mut state = self.lock();
        if state.readers > 0 {
            return false;
        }
        state.readers = n;
        state.busy = 0;
        state.stop = false;
        state.mode = Mode::Off;
        // A nudge left by an earlier stop would wake the new readers forever.
        let mut buf = [0u8; 8];
        let _ = sys::read_packet(self.nudge.as_fd(), &mut buf);
        self.publish(&state);
        true
    }

    pub(crate) fn unregister(&self) {
        let mut state = self.lock();
        state.readers -= 1;
        self.publish(&state);
        self.setter_cv.notify_all();
    }
}
