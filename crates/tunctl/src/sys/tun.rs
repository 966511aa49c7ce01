//! TUN ioctls, typed: the table of [`Tun`] opcodes says, for each request, whether the
//! driver takes its argument *by value* (TUNSETPERSIST, TUNSETOWNER, TUNSETGROUP, TUNSETLINK,
//! TUNSETOFFLOAD: rustix's `IntegerSetter`, through [`ioctl_value`]) or reads and/or writes it
//! *through a pointer* (`Setter`, `Getter`, `Updater`), and of which type. A by-pointer
//! helper does not accept a by-value opcode, so the owner-by-pointer bug of other TUN
//! libraries does not compile here. Also the opening of `/dev/net/tun` itself.

use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};

use rustix::ioctl::{opcode, Getter, IntegerSetter, Ioctl, IoctlOutput, Opcode, Setter, Updater};

use super::einval;

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

#[cfg(test)]
mod tests {
    use super::*;

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
