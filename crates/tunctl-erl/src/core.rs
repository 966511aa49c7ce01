//! One open device behind an Erlang resource ([`Handle`]), and the registries that find it by
//! the pid of its `tuncer` process or by its fd number.
//!
//! A [`Core`] is a device (or one extra queue of a multi-queue device) and its reader. It is
//! closed exactly once, by whichever comes first: `tuncer:destroy/1` or the owner's exit (the
//! `tuncer` process's `terminate`), the death of the `tuncer` process itself (a monitor on it,
//! `exit(Dev, kill)` included), or the garbage collection of the last Erlang reference to the
//! resource (`tunctl:create/2`'s handle). Closing stops the reader, removes the registry
//! entries and, for a device that is not persistent, deletes it; the fds close with the last
//! reference. Nothing can leak an fd: every fd is owned by a `Core`, and every `Core` by a
//! resource whose destructor closes it.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant};

use rustler::{Env, LocalPid, Monitor, Resource, ResourceArc};
use tunctl::{Device, Queue};

use crate::reader::Reader;

/// One open device, or one extra queue of a multi-queue device.
pub struct Core {
    /// The device (shared by its extra queues).
    pub dev: Arc<Device>,
    /// An extra queue (`tuncer:attach_queue/1`); `None` for the device's own first queue.
    pub extra: Option<Queue>,
    /// The reader thread's state (active mode, passive-receive notifications).
    pub reader: Reader,
    /// The device's name.
    pub name: String,
    fd: RawFd,
    closed: AtomicBool,
    /// When `read/2` by fd last ran on this device in active mode (ns since [`EPOCH`]).
    raw_read: AtomicU64,
}

/// The origin of [`Core`]'s timestamps.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// How long active delivery leaves packets to a caller of `read/2` by fd: the original's
/// raw reads raced with its port and, polling in a loop, got packets; here they get them
/// for sure while they keep calling.
const RAW_READ_GRACE: Duration = Duration::from_millis(5);

impl Core {
    /// A core for `dev`'s first queue, or for `extra`.
    pub fn new(dev: Arc<Device>, extra: Option<Queue>) -> std::io::Result<Arc<Core>> {
        let fd = match &extra {
            Some(q) => q.as_raw_fd(),
            None => dev.as_raw_fd(),
        };
        let core = Arc::new(Core {
            name: dev.name().to_string(),
            dev,
            extra,
            reader: Reader::new()?,
            fd,
            closed: AtomicBool::new(false),
            raw_read: AtomicU64::new(0),
        });
        fds().insert(fd, Arc::downgrade(&core));
        Ok(core)
    }

    /// The queue this core reads and writes.
    pub fn queue(&self) -> &Queue {
        self.extra.as_ref().unwrap_or(&self.dev.queues()[0])
    }

    /// Its fd number (`tuncer:getfd/1`).
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Whether this is the device itself rather than an extra queue.
    pub fn primary(&self) -> bool {
        self.extra.is_none()
    }

    /// Notes a read by fd (`tuncer:read/2`) in active mode.
    pub fn note_raw_read(&self) {
        let now = EPOCH.elapsed().as_nanos() as u64;
        self.raw_read.store(now.max(1), Ordering::Relaxed);
    }

    /// Whether a read by fd ran within the last few milliseconds: active delivery then
    /// leaves the next packet to it.
    pub fn raw_reader_waiting(&self) -> bool {
        let last = self.raw_read.load(Ordering::Relaxed);
        // No clock read per packet unless someone ever read by fd in active mode.
        last != 0
            && (EPOCH.elapsed().as_nanos() as u64).saturating_sub(last)
                < RAW_READ_GRACE.as_nanos() as u64
    }

    /// Whether [`close`](Core::close) ran.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Stops the reader, forgets the registry entries and, for the device itself when it is
    /// not persistent, deletes it (a persistent device stays, as configured). An extra queue
    /// is detached when its fd closes, with the last reference. Runs once; later calls do
    /// nothing.
    pub fn close(self: &Arc<Core>) -> tunctl::Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.reader.stop();
        {
            let mut fds = fds();
            if fds
                .get(&self.fd)
                .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(self)))
            {
                fds.remove(&self.fd);
            }
        }
        PIDS.write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, core| !Arc::ptr_eq(core, self));
        if self.primary() && !self.dev.is_closed() {
            // Persistent: kept, UP and configured. Unreadable (deleted from outside, say):
            // destroy copes with a device that is gone.
            let persistent = self.dev.is_persistent().unwrap_or(false);
            if !persistent {
                return match self.dev.destroy() {
                    Err(e) if e.kind() == tunctl::ErrorKind::Closed => Ok(()),
                    other => other,
                };
            }
        }
        Ok(())
    }
}

/// Devices by the pid of their `tuncer` process: `tuncer:send/2` and `recv/1,2` go straight to
/// the device, not through that process.
static PIDS: LazyLock<RwLock<HashMap<LocalPid, Arc<Core>>>> = LazyLock::new(Default::default);

/// Cores by fd number, for `tuncer:read/1,2` and `write/2` with the number `getfd/1` gave.
static FDS: LazyLock<Mutex<HashMap<RawFd, Weak<Core>>>> = LazyLock::new(Default::default);

fn fds() -> MutexGuard<'static, HashMap<RawFd, Weak<Core>>> {
    FDS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The core registered for the `tuncer` process `pid`.
pub fn by_pid(pid: &LocalPid) -> Option<Arc<Core>> {
    let g = PIDS.read().unwrap_or_else(|p| p.into_inner());
    g.get(pid).cloned()
}

/// The open core whose fd number is `fd`.
pub fn by_fd(fd: RawFd) -> Option<Arc<Core>> {
    fds().get(&fd).and_then(Weak::upgrade)
}

/// Registers `core` for the `tuncer` process `pid`.
pub fn register(pid: LocalPid, core: &Arc<Core>) {
    PIDS.write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(pid, Arc::clone(core));
}

/// The Erlang resource that owns a [`Core`]: `tunctl:create/2`'s handle, and the state of a
/// `tuncer` process.
pub struct Handle {
    core: Mutex<Option<Arc<Core>>>,
}

impl Handle {
    /// A resource owning `core`.
    pub fn new(core: Arc<Core>) -> ResourceArc<Handle> {
        ResourceArc::new(Handle {
            core: Mutex::new(Some(core)),
        })
    }

    /// The core, unless closed.
    pub fn core(&self) -> Option<Arc<Core>> {
        let g = self.core.lock().unwrap_or_else(|p| p.into_inner());
        g.as_ref().filter(|c| !c.is_closed()).cloned()
    }

    /// Takes the core out (closing is then the taker's job).
    pub fn take(&self) -> Option<Arc<Core>> {
        self.core.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Ties the device to the `tuncer` process `pid`: registered under it, and closed when it
    /// dies, however it dies.
    pub fn bind(this: &ResourceArc<Handle>, env: Env, pid: LocalPid) -> bool {
        let Some(core) = this.core() else {
            return false;
        };
        register(pid, &core);
        core.reader.set_device(pid);
        // The monitor lasts while the resource does; its handle is never needed back.
        this.monitor(Some(env), &pid).is_some()
    }
}

/// Closes `core` on a thread of its own: from a resource callback, which must not wait for a
/// reader thread or the kernel.
fn close_later(core: Arc<Core>) {
    let spawned = std::thread::Builder::new()
        .name("tunctl-erl-close".into())
        .spawn({
            let core = Arc::clone(&core);
            move || {
                let _ = core.close();
            }
        });
    if spawned.is_err() {
        let _ = core.close();
    }
}

#[rustler::resource_impl(name = "tunctl_device")]
impl Resource for Handle {
    const IMPLEMENTS_DOWN: bool = true;

    fn down<'a>(&'a self, _env: Env<'a>, _pid: LocalPid, _mon: Monitor) {
        // The tuncer process died: the device goes with it (exit(Dev, kill) included).
        if let Some(core) = self.take() {
            close_later(core);
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(core) = self.take() {
            if !core.is_closed() {
                close_later(core);
            }
        }
    }
}
