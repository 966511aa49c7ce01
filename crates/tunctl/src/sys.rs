//! The only home of system calls and `unsafe` in the crate.
//!
//! System calls go through [`rustix`] wherever it has them; what it lacks is hand-written
//! with `libc` and says so. Each function does one system call (or a tight, documented
//! sequence) and returns the `errno` as an [`io::Error`]. Callers add the device name and
//! operation.
//!
//! TUN ioctls are typed: the table of [`Tun`] opcodes says, for each request, whether the
//! driver takes its argument *by value* (TUNSETPERSIST, TUNSETOWNER, TUNSETGROUP, TUNSETLINK,
//! TUNSETOFFLOAD: rustix's `IntegerSetter`, through [`ioctl_value`]) or reads and/or writes it
//! *through a pointer* (`Setter`, `Getter`, `Updater`), and of which type. A by-pointer
//! helper does not accept a by-value opcode, so the owner-by-pointer bug of other TUN
//! libraries does not compile here.

use std::ffi::CString;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
#[cfg(feature = "tokio")]
use std::os::fd::AsRawFd;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use rustix::ioctl::{opcode, Getter, IntegerSetter, Ioctl, IoctlOutput, Opcode, Setter, Updater};

/// `IFNAMSIZ`: interface names are at most 15 bytes plus a NUL.
pub const IFNAMSIZ: usize = libc::IFNAMSIZ;

/// `struct ifreq` as TUNSETIFF/TUNGETIFF/TUNSETQUEUE use it: a name and a short of flags.
#[repr(C)]
pub struct IfReq {
    pub name: [u8; IFNAMSIZ],
    pub flags: libc::c_short,
    _pad: [u8; 22],
}

// At least as large as the kernel's `struct ifreq` (40 bytes on 64-bit, 32 on 32-bit).
const _: () = assert!(std::mem::size_of::<IfReq>() >= std::mem::size_of::<libc::ifreq>());

impl IfReq {
    pub fn new(name: &[u8], flags: u16) -> IfReq {
        let mut req = IfReq {
            name: [0; IFNAMSIZ],
            flags: flags as libc::c_short,
            _pad: [0; 22],
        };
        let n = name.len().min(IFNAMSIZ - 1);
        req.name[..n].copy_from_slice(&name[..n]);
        req
    }

    /// The name up to the first NUL.
    pub fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

// The TUN requests as <linux/if_tun.h> computes them. The size in an opcode is the header's
// (`int` for TUNSETIFF, which in fact reads a whole ifreq), not the argument's.
const TUNSETIFF: Opcode = opcode::write::<libc::c_int>(b'T', 202);
const TUNSETPERSIST: Opcode = opcode::write::<libc::c_int>(b'T', 203);
const TUNSETOWNER: Opcode = opcode::write::<libc::c_int>(b'T', 204);
const TUNSETLINK: Opcode = opcode::write::<libc::c_int>(b'T', 205);
const TUNSETGROUP: Opcode = opcode::write::<libc::c_int>(b'T', 206);
const TUNGETFEATURES: Opcode = opcode::read::<libc::c_uint>(b'T', 207);
const TUNSETOFFLOAD: Opcode = opcode::write::<libc::c_uint>(b'T', 208);
const TUNSETTXFILTER: Opcode = opcode::write::<libc::c_uint>(b'T', 209);
const TUNGETIFF: Opcode = opcode::read::<libc::c_uint>(b'T', 210);
const TUNGETSNDBUF: Opcode = opcode::read::<libc::c_int>(b'T', 211);
const TUNSETSNDBUF: Opcode = opcode::write::<libc::c_int>(b'T', 212);
const TUNGETVNETHDRSZ: Opcode = opcode::read::<libc::c_int>(b'T', 215);
const TUNSETVNETHDRSZ: Opcode = opcode::write::<libc::c_int>(b'T', 216);
const TUNATTACHFILTER: Opcode = opcode::write::<libc::sock_fprog>(b'T', 213);
const TUNDETACHFILTER: Opcode = opcode::write::<libc::sock_fprog>(b'T', 214);
const TUNSETQUEUE: Opcode = opcode::write::<libc::c_int>(b'T', 217);
// <linux/if_tun.h> declares these two _IOR, though the driver reads the int (an fd).
const TUNSETSTEERINGEBPF: Opcode = opcode::read::<libc::c_int>(b'T', 224);
const TUNSETFILTEREBPF: Opcode = opcode::read::<libc::c_int>(b'T', 225);
const TUNSETCARRIER: Opcode = opcode::write::<libc::c_int>(b'T', 226);
const TUNGETDEVNETNS: Opcode = opcode::none(b'T', 227);

// The same numbers as libc's. (The casts are needed elsewhere: `Opcode` is a `c_ulong` with
// rustix's libc backend, and `libc::Ioctl` a `c_int` on musl.)
#[allow(clippy::unnecessary_cast)]
const _: () = {
    let ours_and_libc = [
        (TUNSETIFF, libc::TUNSETIFF),
        (TUNSETPERSIST, libc::TUNSETPERSIST),
        (TUNSETOWNER, libc::TUNSETOWNER),
        (TUNSETLINK, libc::TUNSETLINK),
        (TUNSETGROUP, libc::TUNSETGROUP),
        (TUNGETFEATURES, libc::TUNGETFEATURES),
        (TUNSETOFFLOAD, libc::TUNSETOFFLOAD),
        (TUNSETTXFILTER, libc::TUNSETTXFILTER),
        (TUNGETIFF, libc::TUNGETIFF),
        (TUNGETSNDBUF, libc::TUNGETSNDBUF),
        (TUNSETSNDBUF, libc::TUNSETSNDBUF),
        (TUNGETVNETHDRSZ, libc::TUNGETVNETHDRSZ),
        (TUNSETVNETHDRSZ, libc::TUNSETVNETHDRSZ),
        (TUNSETQUEUE, libc::TUNSETQUEUE),
        (TUNATTACHFILTER, libc::TUNATTACHFILTER),
        (TUNDETACHFILTER, libc::TUNDETACHFILTER),
        (TUNSETSTEERINGEBPF, libc::TUNSETSTEERINGEBPF),
        (TUNSETFILTEREBPF, libc::TUNSETFILTEREBPF),
        (TUNSETCARRIER, libc::TUNSETCARRIER),
        (TUNGETDEVNETNS, libc::TUNGETDEVNETNS),
    ];
    let mut i = 0;
    while i < ours_and_libc.len() {
        assert!(ours_and_libc[i].0 as u32 == ours_and_libc[i].1 as u32);
        i += 1;
    }
};

/// A TUN request, by opcode. The traits below, implemented for it only in the table after
/// them, say how the tun driver (`__tun_chr_ioctl` in drivers/net/tun.c) takes the argument:
/// that table is the safety argument of the helpers that issue the requests.
struct Tun<const OP: Opcode>;

/// The driver takes the argument by value: the integer itself (rustix's `IntegerSetter`).
trait ByValue {}
/// The driver reads an `Arg` through the pointer, and writes nothing (`Setter`).
trait Reads {
    type Arg;
}
/// On success the driver writes a whole `Arg` through the pointer, and reads nothing
/// (`Getter`).
trait Writes {
    type Arg;
}
/// The driver may read an `Arg` through the pointer and write into it (`Updater`).
trait Updates {
    type Arg;
}

impl ByValue for Tun<TUNSETPERSIST> {}
impl ByValue for Tun<TUNSETOWNER> {}
impl ByValue for Tun<TUNSETGROUP> {}
impl ByValue for Tun<TUNSETLINK> {}
impl ByValue for Tun<TUNSETOFFLOAD> {}
impl Updates for Tun<TUNSETIFF> {
    type Arg = IfReq;
}
// Only written, but not `Writes`: a 32-bit compat task gets a 32-byte ifreq, fewer bytes
// than `IfReq` holds, so the rest must be initialised beforehand.
impl Updates for Tun<TUNGETIFF> {
    type Arg = IfReq;
}
impl Reads for Tun<TUNSETQUEUE> {
    type Arg = IfReq;
}
impl Writes for Tun<TUNGETFEATURES> {
    type Arg = libc::c_uint;
}
impl Writes for Tun<TUNGETSNDBUF> {
    type Arg = libc::c_int;
}
impl Reads for Tun<TUNSETSNDBUF> {
    type Arg = libc::c_int;
}
impl Writes for Tun<TUNGETVNETHDRSZ> {
    type Arg = libc::c_int;
}
impl Reads for Tun<TUNSETVNETHDRSZ> {
    type Arg = libc::c_int;
}
impl Reads for Tun<TUNSETCARRIER> {
    type Arg = libc::c_int;
}
// The program's instructions are read through the pointer inside: `tun_attach_filter` keeps
// the slice borrowed for the call, and the kernel copies them.
impl Reads for Tun<TUNATTACHFILTER> {
    type Arg = libc::sock_fprog;
}
// The driver reads nothing for a detach; a zeroed sock_fprog is what the opcode names.
impl Reads for Tun<TUNDETACHFILTER> {
    type Arg = libc::sock_fprog;
}
impl Reads for Tun<TUNSETSTEERINGEBPF> {
    type Arg = libc::c_int;
}
impl Reads for Tun<TUNSETFILTEREBPF> {
    type Arg = libc::c_int;
}
// TUNSETTXFILTER (a variable-length argument) and TUNGETDEVNETNS (an fd as the return value)
// fit none of these: they are `TxFilter` and `DevNetns` below.

/// Issues a TUN request on `fd`.
fn tun_ioctl<I: Ioctl>(fd: BorrowedFd<'_>, req: I) -> io::Result<I::Output> {
    // SAFETY: every `I` used here is one of this module's TUN requests, whose opcode and
    // argument agree by construction (the helpers below and the `Ioctl` impls say why), and
    // `fd` is a /dev/net/tun file (or one whose driver does not know these 'T' numbers).
    unsafe { rustix::ioctl::ioctl(fd, req) }.map_err(Into::into)
}

/// A TUN request whose argument the driver takes by value.
fn ioctl_value<const OP: Opcode>(fd: BorrowedFd<'_>, value: usize) -> io::Result<()>
where
    Tun<OP>: ByValue,
{
    // SAFETY: `Tun<OP>: ByValue`: the driver uses the integer itself; nothing is dereferenced.
    tun_ioctl(fd, unsafe { IntegerSetter::<OP>::new_usize(value) })
}

/// A TUN request whose argument the driver reads through a pointer.
fn ioctl_set<const OP: Opcode>(fd: BorrowedFd<'_>, arg: <Tun<OP> as Reads>::Arg) -> io::Result<()>
where
    Tun<OP>: Reads,
{
    // SAFETY: `Tun<OP>: Reads`: the driver reads an `Arg` and writes nothing back.
    tun_ioctl(fd, unsafe { Setter::<OP, _>::new(arg) })
}

/// A TUN request whose argument the driver writes through a pointer.
fn ioctl_get<const OP: Opcode>(fd: BorrowedFd<'_>) -> io::Result<<Tun<OP> as Writes>::Arg>
where
    Tun<OP>: Writes,
{
    // SAFETY: `Tun<OP>: Writes`: on success the driver has written a whole `Arg`.
    tun_ioctl(fd, unsafe { Getter::<OP, _>::new() })
}

/// A TUN request whose argument the driver reads and writes through a pointer.
fn ioctl_update<const OP: Opcode>(
    fd: BorrowedFd<'_>,
    arg: &mut <Tun<OP> as Updates>::Arg,
) -> io::Result<()>
where
    Tun<OP>: Updates,
{
    // SAFETY: `Tun<OP>: Updates`: the driver reads and writes at most one `Arg`.
    tun_ioctl(fd, unsafe { Updater::<OP, _>::new(arg) })
}

/// TUNSETTXFILTER's argument, `struct tun_filter { u16 flags; u16 count; u8 addr[count][6]; }`,
/// whole: [`TxFilter::new`] is the only way to make one.
struct TxFilter(Vec<u8>);

impl TxFilter {
    fn new(all_multicast: bool, macs: &[[u8; 6]]) -> io::Result<TxFilter> {
        let count = u16::try_from(macs.len()).map_err(|_| einval())?;
        let mut buf = Vec::with_capacity(4 + 6 * macs.len());
        buf.extend_from_slice(&(all_multicast as u16).to_ne_bytes());
        buf.extend_from_slice(&count.to_ne_bytes());
        for mac in macs {
            buf.extend_from_slice(mac);
        }
        Ok(TxFilter(buf))
    }
}

// SAFETY: the driver reads a tun_filter header and then `count` addresses from the pointer,
// and the buffer holds exactly that (see `new`); it writes nothing and returns 0.
unsafe impl Ioctl for TxFilter {
    type Output = ();
    const IS_MUTATING: bool = false;

    fn opcode(&self) -> Opcode {
        TUNSETTXFILTER
    }

    fn as_ptr(&mut self) -> *mut std::ffi::c_void {
        self.0.as_mut_ptr().cast()
    }

    unsafe fn output_from_ptr(_: IoctlOutput, _: *mut std::ffi::c_void) -> rustix::io::Result<()> {
        Ok(())
    }
}

/// TUNGETDEVNETNS: no argument; the return value is a new fd.
struct DevNetns;

// SAFETY: the driver dereferences nothing, and on success returns a fresh close-on-exec fd
// for the device's network namespace (`open_related_ns`) that nobody else owns.
unsafe impl Ioctl for DevNetns {
    type Output = OwnedFd;
    const IS_MUTATING: bool = false;

    fn opcode(&self) -> Opcode {
        TUNGETDEVNETNS
    }

    fn as_ptr(&mut self) -> *mut std::ffi::c_void {
        std::ptr::null_mut()
    }

    unsafe fn output_from_ptr(
        fd: IoctlOutput,
        _: *mut std::ffi::c_void,
    ) -> rustix::io::Result<OwnedFd> {
        // SAFETY: `fd` is the fresh fd a successful TUNGETDEVNETNS returned (see above).
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// `open("/dev/net/tun", O_RDWR | O_CLOEXEC)`. The file is bound to the calling thread's
/// network namespace. It is blocking: a blocking receive is one `readv(2)`, and the calls
/// that must not wait use `RWF_NOWAIT` ([`read_packet_nowait`], [`write_nowait`]).
pub fn open_tun() -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(
        c"/dev/net/tun",
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// TUNSETIFF: create or attach; returns the kernel's name.
pub fn tun_set_iff(fd: BorrowedFd<'_>, name: &[u8], flags: u16) -> io::Result<String> {
    let mut req = IfReq::new(name, flags);
    ioctl_update::<TUNSETIFF>(fd, &mut req)?;
    Ok(req.name())
}

/// TUNGETIFF: the name and flags of the device this fd is attached to.
pub fn tun_get_iff(fd: BorrowedFd<'_>) -> io::Result<(String, u16)> {
    let mut req = IfReq::new(b"", 0);
    ioctl_update::<TUNGETIFF>(fd, &mut req)?;
    Ok((req.name(), req.flags as u16))
}

/// TUNGETFEATURES: the TUNSETIFF flags this kernel supports.
pub fn tun_get_features(fd: BorrowedFd<'_>) -> io::Result<u32> {
    ioctl_get::<TUNGETFEATURES>(fd)
}

/// TUNSETPERSIST (by value).
pub fn tun_set_persist(fd: BorrowedFd<'_>, persist: bool) -> io::Result<()> {
    ioctl_value::<TUNSETPERSIST>(fd, persist as usize)
}

/// TUNSETOWNER (by value: the uid itself).
pub fn tun_set_owner(fd: BorrowedFd<'_>, uid: u32) -> io::Result<()> {
    ioctl_value::<TUNSETOWNER>(fd, uid as usize)
}

/// TUNSETGROUP (by value: the gid itself).
pub fn tun_set_group(fd: BorrowedFd<'_>, gid: u32) -> io::Result<()> {
    ioctl_value::<TUNSETGROUP>(fd, gid as usize)
}

/// TUNSETLINK (by value: an ARPHRD_* link type; the device must be down).
pub fn tun_set_link(fd: BorrowedFd<'_>, link_type: u16) -> io::Result<()> {
    ioctl_value::<TUNSETLINK>(fd, link_type as usize)
}

/// TUNSETOFFLOAD (by value: TUN_F_* bits).
pub fn tun_set_offload(fd: BorrowedFd<'_>, offload: u32) -> io::Result<()> {
    ioctl_value::<TUNSETOFFLOAD>(fd, offload as usize)
}

/// TUNSETTXFILTER: `struct tun_filter { u16 flags; u16 count; u8 addr[count][6]; }`.
pub fn tun_set_tx_filter(
    fd: BorrowedFd<'_>,
    all_multicast: bool,
    macs: &[[u8; 6]],
) -> io::Result<()> {
    tun_ioctl(fd, TxFilter::new(all_multicast, macs)?)
}

/// TUNSETCARRIER (pointer to int).
pub fn tun_set_carrier(fd: BorrowedFd<'_>, carrier: bool) -> io::Result<()> {
    ioctl_set::<TUNSETCARRIER>(fd, carrier as libc::c_int)
}

/// TUNGETSNDBUF (pointer to int).
pub fn tun_get_sndbuf(fd: BorrowedFd<'_>) -> io::Result<i32> {
    ioctl_get::<TUNGETSNDBUF>(fd)
}

/// TUNSETSNDBUF (pointer to int).
pub fn tun_set_sndbuf(fd: BorrowedFd<'_>, size: i32) -> io::Result<()> {
    ioctl_set::<TUNSETSNDBUF>(fd, size)
}

/// TUNGETVNETHDRSZ (pointer to int).
pub fn tun_get_vnet_hdr_sz(fd: BorrowedFd<'_>) -> io::Result<i32> {
    ioctl_get::<TUNGETVNETHDRSZ>(fd)
}

/// TUNSETVNETHDRSZ (pointer to int).
pub fn tun_set_vnet_hdr_sz(fd: BorrowedFd<'_>, size: i32) -> io::Result<()> {
    ioctl_set::<TUNSETVNETHDRSZ>(fd, size)
}

/// TUNSETQUEUE with IFF_ATTACH_QUEUE or IFF_DETACH_QUEUE.
pub fn tun_set_queue(fd: BorrowedFd<'_>, attach: bool) -> io::Result<()> {
    let flag = if attach {
        libc::IFF_ATTACH_QUEUE
    } else {
        libc::IFF_DETACH_QUEUE
    };
    ioctl_set::<TUNSETQUEUE>(fd, IfReq::new(b"", flag as u16))
}

/// TUNATTACHFILTER: a classic BPF program on every queue of a tap device (the kernel copies
/// it; `program` need only live for the call).
pub fn tun_attach_filter(fd: BorrowedFd<'_>, program: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(program.len()).map_err(|_| einval())?;
    let prog = libc::sock_fprog {
        len,
        // Read only by the kernel.
        filter: program.as_ptr().cast_mut(),
    };
    ioctl_set::<TUNATTACHFILTER>(fd, prog)
}

/// TUNDETACHFILTER: removes the classic filter.
pub fn tun_detach_filter(fd: BorrowedFd<'_>) -> io::Result<()> {
    let none = libc::sock_fprog {
        len: 0,
        filter: std::ptr::null_mut(),
    };
    ioctl_set::<TUNDETACHFILTER>(fd, none)
}

/// TUNSETFILTEREBPF (pointer to int): an eBPF socket filter by fd, or -1 to detach.
pub fn tun_set_filter_ebpf(fd: BorrowedFd<'_>, prog: libc::c_int) -> io::Result<()> {
    ioctl_set::<TUNSETFILTEREBPF>(fd, prog)
}

/// TUNSETSTEERINGEBPF (pointer to int): an eBPF queue-steering program by fd, or -1 to
/// detach.
pub fn tun_set_steering_ebpf(fd: BorrowedFd<'_>, prog: libc::c_int) -> io::Result<()> {
    ioctl_set::<TUNSETSTEERINGEBPF>(fd, prog)
}

/// TUNGETDEVNETNS: a new close-on-exec fd for the device's network namespace.
pub fn tun_get_dev_netns(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    tun_ioctl(fd, DevNetns)
}

/// `readv` into `buf` plus one spare byte: returns the length read and whether the packet was
/// longer than `buf` (the tun driver copies what fits and drops the rest of a packet). Waits
/// if the fd is blocking and no packet is queued.
pub fn read_packet(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    read_packet_flags(fd, buf, None)
}

/// Like [`read_packet`], never waiting: `preadv2(RWF_NOWAIT)` (EAGAIN when nothing is queued),
/// whatever the fd's blocking mode.
pub fn read_packet_nowait(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    read_packet_flags(fd, buf, Some(rustix::io::ReadWriteFlags::NOWAIT))
}

/// The offset `-1` of `preadv2`/`pwritev2`: the file's own position (a tun file has none).
const CURRENT_POSITION: u64 = u64::MAX;

fn read_packet_flags(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: Option<rustix::io::ReadWriteFlags>,
) -> io::Result<(usize, bool)> {
    let len = buf.len();
    let mut spare = [0u8; 1];
    let mut iov = [IoSliceMut::new(buf), IoSliceMut::new(&mut spare)];
    let n = match flags {
        None => rustix::io::readv(fd, &mut iov)?,
        Some(f) => rustix::io::preadv2(fd, &mut iov, CURRENT_POSITION, f)?,
    };
    Ok((n.min(len), n > len))
}

/// `pwritev2(RWF_NOWAIT)`: one packet, never waiting (EAGAIN if the device cannot take it).
pub fn write_nowait(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    let iov = [IoSlice::new(buf)];
    Ok(rustix::io::pwritev2(
        fd,
        &iov,
        CURRENT_POSITION,
        rustix::io::ReadWriteFlags::NOWAIT,
    )?)
}

/// Readiness a [`poll2`] call waits for on the first fd.
#[derive(Clone, Copy)]
pub enum Interest {
    Read,
    Write,
}

/// What [`poll`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Ready {
    /// The I/O fd is ready (or has an error/hang-up to report on the next call).
    Io,
    /// Wake-up fd number `i` (an eventfd) is readable; it takes precedence over `Io`.
    Wake(usize),
    /// The timeout passed.
    Timeout,
}

/// `poll(2)` on an I/O fd and up to two wake-up fds; `timeout_ms < 0` waits forever. EINTR
/// is reported as `Timeout`, so callers simply loop on their deadline.
pub fn poll(
    io_fd: BorrowedFd<'_>,
    interest: Interest,
    wake: &[BorrowedFd<'_>],
    timeout_ms: i32,
) -> io::Result<Ready> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let events = match interest {
        Interest::Read => PollFlags::IN,
        Interest::Write => PollFlags::OUT,
    };
    let mut fds = [
        PollFd::from_borrowed_fd(io_fd, events),
        PollFd::from_borrowed_fd(io_fd, PollFlags::empty()),
        PollFd::from_borrowed_fd(io_fd, PollFlags::empty()),
    ];
    let n = 1 + wake.len().min(2);
    for (slot, fd) in fds[1..n].iter_mut().zip(wake) {
        *slot = PollFd::from_borrowed_fd(*fd, PollFlags::IN);
    }
    // rustix's poll is ppoll, which takes a timespec (None: forever) instead of milliseconds.
    let timeout = (timeout_ms >= 0).then(|| Timespec {
        tv_sec: (timeout_ms / 1000).into(),
        tv_nsec: (timeout_ms % 1000 * 1_000_000).into(),
    });
    match rustix::event::poll(&mut fds[..n], timeout.as_ref()) {
        Ok(_) => {}
        Err(rustix::io::Errno::INTR) => return Ok(Ready::Timeout),
        Err(e) => return Err(e.into()),
    }
    if let Some(i) = fds[1..n].iter().position(|f| !f.revents().is_empty()) {
        Ok(Ready::Wake(i))
    } else if !fds[0].revents().is_empty() {
        Ok(Ready::Io)
    } else {
        Ok(Ready::Timeout)
    }
}

/// A close-on-exec, non-blocking eventfd used to wake blocked readers.
pub fn eventfd() -> io::Result<OwnedFd> {
    use rustix::event::EventfdFlags;
    Ok(rustix::event::eventfd(
        0,
        EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
    )?)
}

/// Make an eventfd readable (it stays readable: nobody drains it).
pub fn eventfd_signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    rustix::io::write(fd, &1u64.to_ne_bytes())?;
    Ok(())
}

/// Sets FD_CLOEXEC on an fd adopted from elsewhere. Its blocking mode is left alone (it is a
/// property of the open file, shared with its other holders); every call copes with both.
pub fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = rustix::io::fcntl_getfd(fd)?;
    Ok(rustix::io::fcntl_setfd(
        fd,
        flags | rustix::io::FdFlags::CLOEXEC,
    )?)
}

#[cfg(test)]
/// `fcntl(F_GETFD)`: whether the fd has FD_CLOEXEC set.
pub fn is_cloexec(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(rustix::io::fcntl_getfd(fd)?.contains(rustix::io::FdFlags::CLOEXEC))
}

/// `open(path, O_RDONLY | O_CLOEXEC)`.
pub fn open_readonly(path: &Path) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// `setns(fd, CLONE_NEWNET)`: moves the *calling thread* into the network namespace.
pub fn setns_net(fd: BorrowedFd<'_>) -> io::Result<()> {
    use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
    Ok(move_into_link_name_space(
        fd,
        Some(LinkNameSpaceType::Network),
    )?)
}

/// `unshare(CLONE_NEWNET)`: gives the *calling thread* a new network namespace.
pub fn unshare_net() -> io::Result<()> {
    // SAFETY: the hazard rustix guards against is CLONE_FILES (a private fd table);
    // CLONE_NEWNET only changes the network namespace of this thread.
    Ok(unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }?)
}

/// `mount(source, target, NULL, flags, NULL)`.
pub fn mount(source: &Path, target: &Path, flags: libc::c_ulong) -> io::Result<()> {
    use rustix::mount::{MountFlags, MountPropagationFlags};
    const PROPAGATION: libc::c_ulong =
        libc::MS_SHARED | libc::MS_PRIVATE | libc::MS_SLAVE | libc::MS_UNBINDABLE;
    // Every MS_* flag fits in 32 bits, rustix's width.
    let bits = libc::c_uint::try_from(flags).map_err(|_| einval())?;
    let done = if flags & PROPAGATION != 0 {
        // A propagation change: the kernel ignores the source (rustix passes NULL).
        rustix::mount::mount_change(target, MountPropagationFlags::from_bits_retain(bits))
    } else if flags == libc::MS_BIND {
        rustix::mount::mount_bind(source, target)
    } else if flags == libc::MS_BIND | libc::MS_REC {
        rustix::mount::mount_bind_recursive(source, target)
    } else {
        // rustix's general mount wants a file system type: "" where the kernel reads none
        // (bind, move, remount); a new mount, which needs one, fails as before (ENODEV
        // instead of EINVAL).
        rustix::mount::mount(
            source,
            target,
            c"",
            MountFlags::from_bits_retain(bits),
            None::<&std::ffi::CStr>,
        )
    };
    Ok(done?)
}

/// `umount2(target, MNT_DETACH)`.
pub fn umount_detach(target: &Path) -> io::Result<()> {
    Ok(rustix::mount::unmount(
        target,
        rustix::mount::UnmountFlags::DETACH,
    )?)
}

// rustix has no getpwnam_r/getgrnam_r (the user and group databases are libc's NSS).
/// Calls a `get*nam_r` function, growing the buffer on ERANGE (large LDAP groups).
fn lookup_r(
    name: &str,
    mut call: impl FnMut(&std::ffi::CStr, &mut [u8]) -> (libc::c_int, Option<u32>),
) -> io::Result<Option<u32>> {
    let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut size = 16 * 1024;
    loop {
        let mut buf = vec![0u8; size];
        match call(&c, &mut buf) {
            (0, id) => return Ok(id),
            (libc::ERANGE, _) if size < 64 << 20 => size *= 4,
            (rc, _) => return Err(io::Error::from_raw_os_error(rc)),
        }
    }
}

/// The uid of a user name, from the system's user database (`getpwnam_r`).
pub fn user_id(name: &str) -> io::Result<Option<u32>> {
    lookup_r(name, |c, buf| {
        // SAFETY: zeroed passwd is a valid out-parameter.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the stated sizes.
        let rc = unsafe {
            libc::getpwnam_r(
                c.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        (rc, (!result.is_null()).then_some(pwd.pw_uid))
    })
}

/// The name of a uid, from the system's user database (`getpwuid_r`).
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: a zeroed passwd is a valid out-parameter.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the stated size; the strings land in `buf`.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// The name of a gid, from the system's group database (`getgrgid_r`).
pub fn group_name(gid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: a zeroed group is a valid out-parameter.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the stated size; the strings land in `buf`.
    let rc = unsafe {
        libc::getgrgid_r(
            gid,
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: gr_name points into `buf`, NUL-terminated by getgrgid_r.
    let name = unsafe { std::ffi::CStr::from_ptr(grp.gr_name) };
    Some(name.to_string_lossy().into_owned())
}

/// The gid of a group name, from the system's group database (`getgrnam_r`).
pub fn group_id(name: &str) -> io::Result<Option<u32>> {
    lookup_r(name, |c, buf| {
        // SAFETY: zeroed group is a valid out-parameter.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the stated sizes.
        let rc = unsafe {
            libc::getgrnam_r(
                c.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        (rc, (!result.is_null()).then_some(grp.gr_gid))
    })
}

/// Registers a value that owns its fd with the current tokio runtime.
#[cfg(feature = "tokio")]
pub fn register_async<T: AsRawFd>(
    inner: T,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<T>> {
    // SAFETY: callers pass a value that owns its fd (a `Queue` holds an `OwnedFd` it never
    // replaces), so the fd stays open and the same for the whole life of the AsyncFd.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(inner, interest) }
        .map_err(io::Error::from)
}

/// A connected pair of close-on-exec `SOCK_SEQPACKET` Unix sockets (message boundaries kept).
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// `CMSG_SPACE(len)`, which rustix does not export: a `cmsghdr` and `len` bytes, each
/// rounded up to a multiple of `size_t`.
const fn cmsg_space(len: usize) -> usize {
    const fn align(n: usize) -> usize {
        let a = std::mem::size_of::<usize>();
        (n + a - 1) & !(a - 1)
    }
    align(std::mem::size_of::<libc::cmsghdr>()) + align(len)
}

/// A control buffer of exactly `CMSG_SPACE(fds * sizeof(int))` bytes, aligned for a
/// `cmsghdr`, out of `storage` (so that rustix's own alignment leaves its length alone: the
/// length decides how many fds the kernel may deliver).
fn cmsg_buffer(storage: &mut Vec<MaybeUninit<u8>>, fds: usize) -> &mut [MaybeUninit<u8>] {
    if fds == 0 {
        return &mut [];
    }
    let space = cmsg_space(fds * std::mem::size_of::<libc::c_int>());
    let align = std::mem::align_of::<libc::cmsghdr>();
    storage.resize(space + align - 1, MaybeUninit::new(0));
    let start = storage.as_ptr().align_offset(align);
    &mut storage[start..start + space]
}

/// Sends one message with `fds` attached (SCM_RIGHTS).
pub fn send_with_fds(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut storage = Vec::new();
    let mut control = SendAncillaryBuffer::new(cmsg_buffer(&mut storage, fds.len()));
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(einval());
    }
    Ok(rustix::net::sendmsg(
        sock,
        &[IoSlice::new(data)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?)
}

/// What of a received message did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// The data was longer than the buffer (MSG_TRUNC).
    pub data: bool,
    /// More control data (fds) came than there was room for (MSG_CTRUNC).
    pub control: bool,
}

/// Receives one message into `buf` with up to `max_fds` attached fds (made close-on-exec).
/// Returns the length, what was truncated, and the fds.
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<(usize, Truncation, Vec<OwnedFd>)> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
    let mut storage = Vec::new();
    // Owns every fd received: those not taken below are closed when it is dropped.
    let mut control = RecvAncillaryBuffer::new(cmsg_buffer(&mut storage, max_fds));
    let msg = rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    let truncated = Truncation {
        data: msg.flags.contains(ReturnFlags::TRUNC),
        control: msg.flags.contains(ReturnFlags::CTRUNC),
    };
    Ok((msg.bytes, truncated, fds))
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The real uid: the user who ran this process.
pub fn real_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Whether this thread has `cap` (a `CAP_*` number) in its effective set (capget).
pub fn has_capability(cap: u32) -> bool {
    cap < 64
        && rustix::thread::capabilities(None)
            .is_ok_and(|sets| sets.effective.bits() & (1u64 << cap) != 0)
}

/// Whether this process runs in "secure" mode (setuid, setgid or file capabilities:
/// `getauxval(AT_SECURE)`), where the environment must not choose what it runs.
pub fn secure_mode() -> bool {
    // rustix has no public AT_SECURE.
    // SAFETY: getauxval only reads the auxiliary vector.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// Wraps an fd received from elsewhere (the privileged helper) as a netlink socket.
pub fn netlink_socket_from(fd: OwnedFd) -> netlink_sys::Socket {
    use std::os::fd::IntoRawFd;
    // netlink-sys has no `From<OwnedFd>`.
    // SAFETY: ownership of the fd moves into the socket, which closes it on drop.
    unsafe { <netlink_sys::Socket as FromRawFd>::from_raw_fd(fd.into_raw_fd()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn fds_pass_close_on_exec_and_truncation_is_reported() {
        let (a, b) = seqpacket_pair().unwrap();
        let fds: Vec<OwnedFd> = (0..3).map(|_| eventfd().unwrap()).collect();
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
        let mut buf = [0u8; 16];

        send_with_fds(a.as_fd(), b"hello", &borrowed[..2]).unwrap();
        let (n, trunc, got) = recv_with_fds(b.as_fd(), &mut buf, 2).unwrap();
        assert_eq!((&buf[..n], got.len()), (&b"hello"[..], 2));
        assert_eq!(
            trunc,
            Truncation {
                data: false,
                control: false
            }
        );
        assert!(got.iter().all(|f| is_cloexec(f.as_fd()).unwrap()));

        // Room for two: the third is dropped by the kernel and reported.
        send_with_fds(a.as_fd(), b"x", &borrowed).unwrap();
        let (_, trunc, got) = recv_with_fds(b.as_fd(), &mut buf, 2).unwrap();
        assert_eq!((got.len(), trunc.control, trunc.data), (2, true, false));

        send_with_fds(a.as_fd(), b"y", &borrowed[..1]).unwrap();
        let (_, trunc, got) = recv_with_fds(b.as_fd(), &mut buf, 0).unwrap();
        assert_eq!((got.len(), trunc.control), (0, true));

        send_with_fds(a.as_fd(), b"a longer message", &[]).unwrap();
        let (n, trunc, got) = recv_with_fds(b.as_fd(), &mut buf[..4], 2).unwrap();
        assert_eq!(
            (n, trunc.data, trunc.control, got.len()),
            (4, true, false, 0)
        );
    }

    #[test]
    fn poll_reports_wake_io_and_timeout() {
        let (a, b) = seqpacket_pair().unwrap();
        let wake = eventfd().unwrap();
        assert_eq!(
            poll(a.as_fd(), Interest::Read, &[wake.as_fd()], 10).unwrap(),
            Ready::Timeout
        );
        assert_eq!(
            poll(a.as_fd(), Interest::Write, &[wake.as_fd()], -1).unwrap(),
            Ready::Io
        );
        send_with_fds(b.as_fd(), b"x", &[]).unwrap();
        eventfd_signal(wake.as_fd()).unwrap();
        let other = eventfd().unwrap();
        assert_eq!(
            poll(a.as_fd(), Interest::Read, &[other.as_fd(), wake.as_fd()], 0).unwrap(),
            Ready::Wake(1)
        );
    }

    #[test]
    fn cloexec_is_set_and_read_back() {
        let (a, _b) = seqpacket_pair().unwrap();
        let dup = rustix::io::dup(&a).unwrap();
        assert!(!is_cloexec(dup.as_fd()).unwrap());
        set_cloexec(dup.as_fd()).unwrap();
        assert!(is_cloexec(dup.as_fd()).unwrap());
    }

    #[test]
    fn tx_filter_is_header_then_addresses() {
        let filter = TxFilter::new(true, &[[1, 2, 3, 4, 5, 6]]).unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(filter.0, want);
        assert!(TxFilter::new(false, &vec![[0; 6]; 70_000]).is_err());
    }
}
