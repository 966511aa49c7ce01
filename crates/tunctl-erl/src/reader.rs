//! The reader thread of a device: active-mode delivery straight to the owner, and readiness
//! notices for passive receives that wait.
//!
//! One thread per device, started the first time it is needed and stopped when the device
//! closes. It waits in `poll(2)` on the device's fd, never on a scheduler, and only while its
//! mode asks for packets:
//!
//! - [`Mode::On`], [`Mode::Once`], [`Mode::Count`]: each packet is read (one `RWF_NOWAIT`
//!   read) and sent to the owner as `{tuntap, Dev, Packet}`, one hop, from this thread.
//!   `Once` and `Count(n)` deliver exactly that many and switch to `Off`; a `Count` that runs
//!   out also sends `{tuntap_passive, Dev}` (as `{active, N}` sockets send `tcp_passive`).
//! - [`Mode::Notify`]: the first time the fd is readable, `{'$tuncer', readable}` goes to the
//!   process that asked (the device's `tuncer` process, which serves `recv/3` with a
//!   timeout), without reading; then `Off`.
//! - [`Mode::Off`]: the thread waits on a condition variable; packets wait in the kernel's
//!   queue, where passive reads find them.
//!
//! A mode change to `Off` returns only once no packet is between read and delivery, so after
//! `setopt(Dev, {active, false})` returns, nothing more arrives, and a packet is never lost
//! between the two modes. A read error other than the device's own closing (the device was
//! deleted from outside: `ebadfd`) ends delivery with `{tuntap_error, Dev, Reason}` to the
//! owner and `{'$tuncer', gone, Reason}` to the device's process.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use rustler::{Encoder, LocalPid, NewBinary, OwnedEnv};

use crate::atoms;
use crate::core::Core;

/// Largest packet a device hands over: 64 KiB plus the virtio-net and packet-information
/// headers, with room to spare.
pub const MAX_PACKET: usize = 65536 + 256;

/// What the reader does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Nothing: packets stay in the kernel's queue.
    Off,
    /// Deliver every packet (`{active, true}`).
    On,
    /// Deliver one packet, then `Off` (`{active, once}`).
    Once,
    /// Deliver this many, then `Off` and `{tuntap_passive, Dev}` (`{active, N}`).
    Count(u32),
    /// Tell the process waiting in a passive receive that a packet is there, then `Off`.
    Notify,
}

impl Mode {
    fn delivers(self) -> bool {
        matches!(self, Mode::On | Mode::Once | Mode::Count(_))
    }
}

struct State {
    mode: Mode,
    /// Bumped by every mode change, so a count is only decremented for a packet read under
    /// the mode it belongs to.
    generation: u64,
    /// A packet is between read and delivery.
    busy: bool,
    stop: bool,
    running: bool,
    owner: Option<LocalPid>,
    device: Option<LocalPid>,
    notify: Option<LocalPid>,
}

/// The reader of one device: its mode, owner and thread.
pub struct Reader {
    state: Mutex<State>,
    cv: Condvar,
    /// Written to wake the thread out of `poll` when it must stop.
    nudge: OwnedFd,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Reader {
    /// A reader with no thread yet, in mode `Off`.
    pub fn new() -> std::io::Result<Reader> {
        // SAFETY: eventfd takes no pointers; a valid result is a new fd that we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Reader {
            // SAFETY: fd was just returned by eventfd and is owned by nobody else.
            nudge: unsafe { OwnedFd::from_raw_fd(fd) },
            state: Mutex::new(State {
                mode: Mode::Off,
                generation: 0,
                busy: false,
                stop: false,
                running: false,
                owner: None,
                device: None,
                notify: None,
            }),
            cv: Condvar::new(),
            thread: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pid that tags this device's messages (its `tuncer` process).
    pub fn set_device(&self, pid: LocalPid) {
        self.lock().device = Some(pid);
    }

    /// The process active-mode packets go to.
    pub fn set_owner(&self, pid: LocalPid) {
        self.lock().owner = Some(pid);
    }

    /// The mode now (a `Count` shows what is left of it).
    pub fn mode(&self) -> Mode {
        self.lock().mode
    }

    /// Switches to `mode`, starting the thread if it is not running. For `Notify`, `notify`
    /// is the process to tell. Returns once no packet is between read and delivery when the
    /// new mode delivers nothing.
    ///
    /// # Errors
    ///
    /// `EBADF` once the reader is stopped; the thread's spawn error.
    pub fn set_mode(
        &self,
        core: &Arc<Core>,
        mode: Mode,
        notify: Option<LocalPid>,
    ) -> std::io::Result<()> {
        let mut st = self.lock();
        if st.stop {
            return Err(std::io::Error::from_raw_os_error(libc::EBADF));
        }
        st.mode = mode;
        st.generation = st.generation.wrapping_add(1);
        if mode == Mode::Notify {
            st.notify = notify;
        }
        self.cv.notify_all();
        if !mode.delivers() {
            while st.busy {
                st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        }
        if mode == Mode::Off {
            return Ok(());
        }
        self.start(st, core)
    }

    /// `{active, N}`: adds `n` to what is left of a count, or starts a count of `n`, as
    /// sockets do. Atomic with delivery: a packet being delivered under the old count is
    /// taken from the new one, so none is counted twice or not at all. `Ok(true)` when the
    /// count is 0 or less: the mode is then `Off`.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a count above 32767, `EBADF` once stopped, the thread's spawn error.
    pub fn add_count(&self, core: &Arc<Core>, n: i64) -> std::io::Result<bool> {
        let mut st = self.lock();
        if st.stop {
            return Err(std::io::Error::from_raw_os_error(libc::EBADF));
        }
        let (left, counting) = match st.mode {
            Mode::Count(k) => (i64::from(k), true),
            _ => (0, false),
        };
        let total = left + n;
        if total > 32767 {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        if total <= 0 {
            drop(st);
            self.set_mode(core, Mode::Off, None)?;
            return Ok(true);
        }
        st.mode = Mode::Count(total as u32);
        if !counting {
            st.generation = st.generation.wrapping_add(1);
        }
        self.cv.notify_all();
        self.start(st, core).map(|()| false)
    }

    /// Starts the thread unless it runs.
    fn start(&self, mut st: MutexGuard<'_, State>, core: &Arc<Core>) -> std::io::Result<()> {
        if st.running {
            return Ok(());
        }
        st.running = true;
        drop(st);
        let mut slot = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.take() {
            let _ = old.join();
        }
        let core = Arc::clone(core);
        match std::thread::Builder::new()
            .name(format!("tunctl-erl-{}", core.name))
            .spawn(move || run(&core))
        {
            Ok(handle) => {
                *slot = Some(handle);
                Ok(())
            }
            Err(e) => {
                let mut st = self.lock();
                st.running = false;
                st.mode = Mode::Off;
                Err(e)
            }
        }
    }

    /// Stops the thread for good and waits for it.
    pub fn stop(&self) {
        {
            let mut st = self.lock();
            st.stop = true;
            self.cv.notify_all();
        }
        self.wake();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd.
        unsafe {
            libc::write(
                self.nudge.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// Waits until `fd` is readable (`true`) or the nudge fires (`false`, drained).
    fn poll(&self, fd: RawFd) -> bool {
        let mut fds = [
            libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.nudge.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
            // SAFETY: fds is a live array of two pollfd structures.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if n < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                // Cannot wait: let the read report what is wrong.
                return true;
            }
            if fds[1].revents != 0 {
                let mut val: u64 = 0;
                // SAFETY: reads 8 bytes into a live u64 from our own non-blocking eventfd.
                unsafe {
                    libc::read(
                        self.nudge.as_raw_fd(),
                        (&mut val as *mut u64).cast(),
                        std::mem::size_of::<u64>(),
                    )
                };
                return false;
            }
            return true;
        }
    }
}

/// What the thread does for one turn.
enum Turn {
    Deliver(u64, Option<LocalPid>, Option<LocalPid>),
    Tell(Option<LocalPid>),
    Wait,
    Exit,
}

/// The device's pid, which tags its messages (`undefined` before it is bound).
fn tag(env: rustler::Env, device: Option<LocalPid>) -> rustler::Term {
    match device {
        Some(pid) => pid.encode(env),
        None => atoms::undefined().encode(env),
    }
}

fn run(core: &Arc<Core>) {
    let reader = &core.reader;
    let mut env = OwnedEnv::new();
    let mut buf = vec![0u8; MAX_PACKET];
    // A packet was just read: try the next one before waiting in poll.
    let mut ready = false;
    loop {
        {
            let mut st = reader.lock();
            while !st.stop && st.mode == Mode::Off {
                st = reader.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.stop {
                st.running = false;
                return;
            }
        }
        if !ready && !reader.poll(core.fd()) {
            continue;
        }
        if core.raw_reader_waiting() {
            // Someone reads the fd in a loop (`tuncer:read/2`): the packet is theirs.
            ready = false;
            std::thread::sleep(std::time::Duration::from_millis(1));
            continue;
        }
        let turn = {
            let mut st = reader.lock();
            if st.stop {
                Turn::Exit
            } else {
                match st.mode {
                    Mode::Off => Turn::Wait,
                    Mode::Notify => {
                        st.mode = Mode::Off;
                        Turn::Tell(st.notify.take())
                    }
                    _ => {
                        st.busy = true;
                        Turn::Deliver(st.generation, st.owner, st.device)
                    }
                }
            }
        };
        let (generation, owner, device) = match turn {
            Turn::Exit => {
                reader.lock().running = false;
                return;
            }
            Turn::Wait => continue,
            Turn::Tell(pid) => {
                ready = false;
                if let Some(pid) = pid {
                    let _ = env.send_and_clear(&pid, |env| {
                        (atoms::tuncer_internal(), atoms::readable()).encode(env)
                    });
                }
                continue;
            }
            Turn::Deliver(g, o, d) => (g, o, d),
        };
        match core.queue().try_recv(&mut buf) {
            Ok(Some(n)) => {
                ready = true;
                if let Some(owner) = owner {
                    let packet = &buf[..n];
                    let _ = env.send_and_clear(&owner, |env| {
                        let mut bin = NewBinary::new(env, packet.len());
                        bin.as_mut_slice().copy_from_slice(packet);
                        let bin: rustler::Binary = bin.into();
                        (atoms::tuntap(), tag(env, device), bin).encode(env)
                    });
                }
                let mut st = reader.lock();
                st.busy = false;
                if st.generation == generation {
                    match st.mode {
                        Mode::Once => st.mode = Mode::Off,
                        Mode::Count(k) if k <= 1 => {
                            st.mode = Mode::Off;
                            if let Some(owner) = owner {
                                // Under the lock: out before anyone sees the mode change.
                                let _ = env.send_and_clear(&owner, |env| {
                                    (atoms::tuntap_passive(), tag(env, device)).encode(env)
                                });
                            }
                        }
                        Mode::Count(k) => st.mode = Mode::Count(k - 1),
                        _ => {}
                    }
                }
                reader.cv.notify_all();
            }
            Ok(None) => {
                ready = false;
                let mut st = reader.lock();
                st.busy = false;
                reader.cv.notify_all();
            }
            // A packet longer than the buffer: dropped, and said to the owner; the device
            // goes on delivering (only a device that is gone ends delivery).
            Err(e) if e.kind() == tunctl::ErrorKind::Truncated => {
                let why = crate::reason::name(&e);
                if let Some(owner) = owner {
                    let _ = env.send_and_clear(&owner, |env| {
                        (
                            atoms::tuntap_error(),
                            tag(env, device),
                            crate::reason::atom_of(env, &why),
                        )
                            .encode(env)
                    });
                }
                let mut st = reader.lock();
                st.busy = false;
                reader.cv.notify_all();
            }
            Err(e) => {
                let closed = e.kind() == tunctl::ErrorKind::Closed;
                let why = crate::reason::name(&e);
                if !closed {
                    if let Some(owner) = owner {
                        let _ = env.send_and_clear(&owner, |env| {
                            (
                                atoms::tuntap_error(),
                                tag(env, device),
                                crate::reason::atom_of(env, &why),
                            )
                                .encode(env)
                        });
                    }
                    if let Some(device) = device {
                        let _ = env.send_and_clear(&device, |env| {
                            (
                                atoms::tuncer_internal(),
                                atoms::gone(),
                                crate::reason::atom_of(env, &why),
                            )
                                .encode(env)
                        });
                    }
                }
                let mut st = reader.lock();
                st.busy = false;
                st.mode = Mode::Off;
                st.running = false;
                reader.cv.notify_all();
                return;
            }
        }
    }
}
