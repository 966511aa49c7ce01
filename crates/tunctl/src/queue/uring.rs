//! The io_uring path of a queue (feature `io-uring`): its two rings, switching to them,
//! receiving through the reading ring, and which path a queue uses ([`IoPath`]).

#[cfg(feature = "io-uring")]
use std::sync::Mutex;
use std::time::Instant;

use super::Queue;
use crate::error::{Error, ErrorKind, Result};
#[cfg(feature = "io-uring")]
use crate::sys::uring::{Read, ReadRing, WriteRing, BUFFER_SIZE};

/// How a queue's packets reach the kernel: see [`Queue::io_path`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IoPath {
    /// One system call per packet: `readv(2)` (or `preadv2(2)` with `RWF_NOWAIT`) to read,
    /// `pwritev2(2)` to write. Every queue starts here.
    Syscalls,
    /// io_uring ([`Queue::use_io_uring`]): packets are read ahead by one multishot read into
    /// a ring of provided buffers, and a batch is written with one `io_uring_enter(2)`.
    IoUring,
}

impl std::fmt::Display for IoPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IoPath::Syscalls => "readv/pwritev2",
            IoPath::IoUring => "io_uring",
        })
    }
}

/// The variable that turns io_uring off for every queue of the process: `0`, `off`, `no` or
/// `false` (for a system where it misbehaves); or on for every device a [`Builder`] makes
/// or opens without [`io_uring(false)`](crate::Builder::io_uring): `1`, `on`, `yes` or
/// `true` (to try a program on io_uring without changing it, as the benchmarks do).
///
/// [`Builder`]: crate::Builder
pub const IO_URING_ENV: &str = "TUNCTL_IO_URING";

/// Whether [`IO_URING_ENV`] turns io_uring on for devices that did not choose.
pub(crate) fn turned_on() -> bool {
    std::env::var(IO_URING_ENV).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "on" | "yes" | "true"
        )
    })
}

/// The rings of a queue on the io_uring path.
#[cfg(feature = "io-uring")]
#[derive(Debug)]
pub(crate) struct Rings {
    read: Mutex<Reading>,
    write: Mutex<WriteRing>,
}

/// The reading ring and an error met after packets were taken, for the next call.
#[cfg(feature = "io-uring")]
struct Reading {
    ring: ReadRing,
    deferred: Option<Error>,
}

#[cfg(feature = "io-uring")]
impl std::fmt::Debug for Reading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reading")
            .field("deferred", &self.deferred)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "io-uring")]
impl Rings {
    /// The writing ring.
    pub(crate) fn writer(&self) -> std::sync::MutexGuard<'_, WriteRing> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(feature = "io-uring")]
impl std::fmt::Debug for WriteRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteRing")
    }
}

/// Where received packets go: one caller's buffer, or a batch.
#[cfg_attr(not(feature = "io-uring"), allow(dead_code))]
pub(crate) trait Take {
    /// Whether another packet fits.
    fn room(&self) -> bool;
    /// Takes one packet (exactly as one `read(2)` returns it).
    fn take(&mut self, packet: &[u8]) -> Result<()>;
}

/// Whether [`IO_URING_ENV`] turns io_uring off.
fn turned_off() -> bool {
    std::env::var(IO_URING_ENV).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "off" | "no" | "false"
        )
    })
}

impl Queue {
    /// Which path this queue's packets take: [`IoPath::IoUring`] once
    /// [`use_io_uring`](Queue::use_io_uring) (or [`Builder::io_uring`](crate::Builder::io_uring))
    /// succeeded for it, [`IoPath::Syscalls`] otherwise.
    pub fn io_path(&self) -> IoPath {
        #[cfg(feature = "io-uring")]
        if self.uring.get().is_some() {
            return IoPath::IoUring;
        }
        IoPath::Syscalls
    }

    /// Moves this queue onto io_uring (feature `io-uring`, Linux 6.7 or later): its receives
    /// ([`recv`](Queue::recv) and the others, [`recv_batch`](Queue::recv_batch)) take packets
    /// that one multishot read has put into a ring of 128 provided buffers of 64 KiB (read
    /// ahead while the program does other work: a system call per batch, or none), and
    /// [`send_batch`](Queue::send_batch) writes a batch with one `io_uring_enter(2)`. Single
    /// [`send`](Queue::send)s keep their one `pwritev2(2)`. A no-op on a queue already there.
    ///
    /// The rings belong to this handle: a [`try_clone`](Queue::try_clone) reads and writes
    /// with system calls, and competes with the multishot read for packets. A device with a
    /// queue on io_uring cannot be [`activate`](crate::Device::activate)d.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unsupported`] when io_uring cannot be used, saying why: built without the
    /// feature, turned off by `TUNCTL_IO_URING=0`, refused by the kernel (ENOSYS or EPERM
    /// where a seccomp profile or `kernel.io_uring_disabled` blocks it, EOPNOTSUPP before
    /// Linux 6.7); ENOMEM as [`ErrorKind::Os`]. The queue then stays on
    /// [`IoPath::Syscalls`], fully working.
    pub fn use_io_uring(&self) -> Result<()> {
        self.shared.check_open("io_uring")?;
        let unsupported =
            |why: String| Error::new(ErrorKind::Unsupported, "io_uring", why).on(self.device());
        if turned_off() {
            return Err(unsupported(format!(
                "turned off by {IO_URING_ENV}={}",
                std::env::var(IO_URING_ENV).unwrap_or_default()
            )));
        }
        #[cfg(not(feature = "io-uring"))]
        {
            Err(unsupported(
                "tunctl was built without its io-uring feature".to_string(),
            ))
        }
        #[cfg(feature = "io-uring")]
        {
            use std::os::fd::AsFd;
            if self.uring.get().is_some() {
                return Ok(());
            }
            if self.shared.control.is_active() {
                return Err(Error::new(
                    ErrorKind::Busy,
                    "io_uring",
                    "the device is in active mode: its readers read the queues themselves",
                )
                .on(self.device()));
            }
            let refused = |e: std::io::Error| {
                let why = match e.raw_os_error() {
                    Some(libc::ENOSYS) => "the kernel has no io_uring, or a seccomp profile hides it (ENOSYS)",
                    Some(libc::EPERM) => "io_uring is blocked here: kernel.io_uring_disabled, or a seccomp profile (EPERM)",
                    Some(libc::EOPNOTSUPP) => "the kernel lacks multishot reads (Linux 6.7) (EOPNOTSUPP)",
                    Some(libc::EINVAL) => "the kernel lacks provided-buffer rings (Linux 5.19) (EINVAL)",
                    Some(libc::ENOMEM) => return Error::os("io_uring", e).on(self.device()),
                    _ => return unsupported(format!("io_uring_setup: {e}")),
                };
                unsupported(why.to_string())
            };
            let read = ReadRing::new(self.fd.as_fd()).map_err(refused)?;
            let write = WriteRing::new().map_err(refused)?;
            let _ = self.uring.set(Rings {
                read: Mutex::new(Reading {
                    ring: read,
                    deferred: None,
                }),
                write: Mutex::new(write),
            });
            Ok(())
        }
    }

    /// The rings, on the io_uring path.
    #[cfg(feature = "io-uring")]
    pub(crate) fn rings(&self) -> Option<&Rings> {
        self.uring.get()
    }

    /// Receives through the reading ring, if this queue has one: `None` if not. Hands `sink`
    /// packets while it has room, waiting for the first until `deadline` (`None`: as long as
    /// it takes). Returns how many it took, 0 on timeout. An error met after a packet was
    /// taken is returned by the next call.
    pub(crate) fn ring_recv(
        &self,
        sink: &mut dyn Take,
        deadline: Option<Instant>,
    ) -> Option<Result<usize>> {
        #[cfg(not(feature = "io-uring"))]
        {
            let _ = (sink, deadline);
            None
        }
        #[cfg(feature = "io-uring")]
        {
            let rings = self.uring.get()?;
            Some(self.ring_recv_on(rings, sink, deadline))
        }
    }

    #[cfg(feature = "io-uring")]
    fn ring_recv_on(
        &self,
        rings: &Rings,
        sink: &mut dyn Take,
        deadline: Option<Instant>,
    ) -> Result<usize> {
        self.shared.check_open("recv")?;
        self.check_passive("recv")?;
        // A thread blocked in the ring holds it: a receive with a deadline does not queue
        // behind that one (which may wait for ever) but tries until its own time is up.
        let mut reading = match deadline {
            None => rings.read.lock().unwrap_or_else(|p| p.into_inner()),
            Some(deadline) => loop {
                match rings.read.try_lock() {
                    Ok(r) => break r,
                    Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Ok(0);
                        }
                        std::thread::sleep(left.min(std::time::Duration::from_millis(1)));
                    }
                }
            },
        };
        if let Some(err) = reading.deferred.take() {
            return Err(err);
        }
        let mut waited = false;
        loop {
            let mut got = 0;
            while sink.room() {
                let Some(read) = reading.ring.next() else {
                    break;
                };
                let done = match read {
                    Read::Packet { buffer, len } => {
                        let done = if len >= BUFFER_SIZE {
                            Err(Error::new(
                                ErrorKind::Truncated,
                                "recv",
                                format!("packet of {len} bytes longer than any device hands over: dropped"),
                            )
                            .on(self.device()))
                        } else {
                            sink.take(reading.ring.packet(buffer, len))
                                .map_err(|e| e.on_default(self.device()))
                        };
                        reading.ring.recycle(buffer);
                        done
                    }
                    Read::Error(errno) => Err(self
                        .shared
                        .io_error("recv", std::io::Error::from_raw_os_error(errno))),
                };
                match done {
                    Ok(()) => got += 1,
                    Err(e) if got > 0 => {
                        reading.deferred = Some(e);
                        return Ok(got);
                    }
                    Err(e) => return Err(e),
                }
            }
            if got > 0 {
                return Ok(got);
            }
            // Nothing waiting: let the kernel run the reads it has pending for this thread,
            // then wait, unless the deadline has passed.
            let expired = deadline.is_some_and(|d| Instant::now() >= d);
            let ready = if expired {
                if waited {
                    return Ok(0);
                }
                reading.ring.poll().map(|()| true)
            } else {
                reading.ring.wait(deadline)
            };
            waited = true;
            match ready {
                Ok(_) => {}
                Err(e) => return Err(self.shared.io_error("io_uring_enter", e)),
            }
            self.shared.check_open("recv")?;
        }
    }
}
