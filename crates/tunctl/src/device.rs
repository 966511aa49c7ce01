//! [`Device`]: one owned TUN/TAP device (the seed's `tuncer`), built with [`Builder`], and
//! [`Queue`]: one fd of it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::active::{self, Active, Control, Packets};
use crate::addr::{Cidr, MacAddr};
use crate::error::{Error, ErrorKind, Result};
use crate::flags::{Flags, Kind, Offload};
use crate::name;
use crate::netlink::{Address, Link, LinkInfo, Netlink};
use crate::netns::Namespace;
use crate::sys::{self, Interest, Ready};

/// A packet read: blocking or `RWF_NOWAIT`.
type ReadFn = fn(BorrowedFd<'_>, &mut [u8]) -> std::io::Result<(usize, bool)>;

/// The most queues the kernel gives one multi-queue device (`MAX_TAP_QUEUES`).
pub const MAX_QUEUES: usize = 256;

/// The flags TUNGETIFF reports faithfully, compared after every attach.
const ATTACH_FLAGS: Flags = Flags::from_bits_retain(
    Flags::TUN.bits() | Flags::TAP.bits() | Flags::VNET_HDR.bits() | Flags::MULTI_QUEUE.bits(),
);

/// State shared by a device, its queues and its active-mode readers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: String,
    closed: AtomicBool,
    /// Set while `destroy` deletes the link: I/O errors then mean "closed", not "gone".
    destroying: AtomicBool,
    /// Readable once the device is destroyed: wakes readers and writers blocked in `poll`.
    pub(crate) wake: OwnedFd,
    /// The rtnetlink handle, bound to the device's namespace.
    pub(crate) link: Link,
    /// Active-mode state.
    pub(crate) control: Control,
    /// The TUNSETIFF flags every queue of this device is attached with.
    flags: Flags,
    /// The smallest read buffer the kernel accepts: the vnet and packet-information headers.
    min_read: usize,
    /// The offload mask the kernel accepted (TUNSETOFFLOAD).
    pub(crate) offload: std::sync::atomic::AtomicU32,
    /// Set once the kernel refused a GSO write: later batches are split in userspace.
    pub(crate) gso_refused: AtomicBool,
    /// The virtio-net header size (TUNGETVNETHDRSZ), kept current by `set_vnet_hdr_size`.
    vnet_hdr_sz: std::sync::atomic::AtomicUsize,
    /// Keeps a namespace given by fd (`Device::from_fd`) reachable as `/proc/self/fd/N`.
    _netns: Option<OwnedFd>,
}

impl Shared {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// See [`Device::destroy`].
    pub(crate) fn destroy(&self) -> Result<()> {
        self.destroy_with(|| {})
    }

    /// [`destroy`](Shared::destroy), running `first` once the device is marked as being
    /// destroyed (so readers it wakes report Closed) and before the link is deleted.
    pub(crate) fn destroy_with(&self, first: impl FnOnce()) -> Result<()> {
        self.check_open("destroy")?;
        if self.destroying.swap(true, Ordering::AcqRel) {
            return Err(Error::new(
                ErrorKind::Busy,
                "destroy",
                "another thread is destroying the device",
            )
            .on(&self.name));
        }
        first();
        // A reader woken by the kernel's detach sees `destroying` and reports Closed, not Gone.
        match self.link.delete() {
            Ok(()) => {}
            // Gone already, or moved to another namespace: with persist cleared (by
            // Device::destroy) it disappears when its fds close.
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                self.destroying.store(false, Ordering::Release);
                return Err(if e.kind() == ErrorKind::PermissionDenied {
                    e.with_detail(
                        "deleting the link needs CAP_NET_ADMIN; it is no longer persistent and disappears when this Device is dropped (EPERM)",
                    )
                } else {
                    e
                });
            }
        }
        self.closed.store(true, Ordering::Release);
        self.control.stop();
        let _ = sys::eventfd_signal(self.wake.as_fd());
        Ok(())
    }

    /// A path naming the namespace the link handle configures.
    fn netns_path(&self) -> String {
        match self.link.netlink().namespace().file() {
            Some(path) => path.display().to_string(),
            None => "/proc/thread-self/ns/net".to_string(),
        }
    }

    /// The virtio-net header size in force (0 without `vnet_hdr`).
    pub(crate) fn vnet_hdr_len(&self) -> usize {
        self.vnet_hdr_sz.load(Ordering::Relaxed)
    }

    /// Whether the device's queues were attached with `flags`.
    pub(crate) fn flags_have(&self, flags: Flags) -> bool {
        self.flags.contains(flags)
    }

    /// The offloads the kernel accepted.
    pub(crate) fn offload(&self) -> Offload {
        Offload::from_bits_retain(self.offload.load(Ordering::Acquire))
    }

    pub(crate) fn check_open(&self, op: &str) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::closed(op).on(&self.name))
        } else {
            Ok(())
        }
    }

    /// Maps an I/O error, telling "destroyed here" from "deleted from outside".
    pub(crate) fn io_error(&self, op: &str, err: std::io::Error) -> Error {
        if self.closed.load(Ordering::Acquire) || self.destroying.load(Ordering::Acquire) {
            return Error::closed(op).on(&self.name);
        }
        let gone = err.raw_os_error() == Some(libc::EBADFD);
        let err = Error::os(op, err).on(&self.name);
        if gone {
            err.with_detail("the device no longer exists (deleted from outside?) (EBADFD)")
        } else {
            err
        }
    }
}

/// One file descriptor of a device: a queue of a multi-queue device, or the only fd of a
/// single-queue one. Reads and writes take `&self`: one thread may receive while another
/// sends, with no lock.
///
/// The fd is non-blocking and close-on-exec; blocking calls wait in `poll(2)` together with
/// the device's wake-up eventfd, so [`Device::destroy`] wakes them with
/// [`ErrorKind::Closed`].
#[derive(Debug)]
pub struct Queue {
    fd: OwnedFd,
    pub(crate) shared: Arc<Shared>,
}

/// Milliseconds left until `deadline` for `poll(2)`: -1 for none, rounded up, capped.
fn poll_timeout(deadline: Option<Instant>) -> Option<i32> {
    match deadline {
        None => Some(-1),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                None
            } else {
                let ms = left.as_micros().div_ceil(1000);
                Some(i32::try_from(ms).unwrap_or(i32::MAX))
            }
        }
    }
}

impl Queue {
    fn wait(&self, interest: Interest, deadline: Option<Instant>, op: &str) -> Result<bool> {
        let Some(timeout) = poll_timeout(deadline) else {
            return Ok(false);
        };
        match sys::poll(
            self.fd.as_fd(),
            interest,
            &[self.shared.wake.as_fd()],
            timeout,
        ) {
            Ok(Ready::Wake(_)) => Err(Error::closed(op).on(&self.shared.name)),
            Ok(_) => Ok(true),
            Err(e) => Err(self.shared.io_error("poll", e)),
        }
    }

    /// One non-blocking read: `Ok(None)` when no packet is queued.
    pub(crate) fn read_now(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        self.read_with(buf, sys::read_packet_nowait)
    }

    /// One read with `read`: `Ok(None)` when it would block.
    fn read_with(&self, buf: &mut [u8], read: ReadFn) -> Result<Option<usize>> {
        self.shared.check_open("recv")?;
        if buf.len() < self.shared.min_read {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "recv",
                format!(
                    "a {}-byte buffer cannot hold the device's packet headers ({} bytes)",
                    buf.len(),
                    self.shared.min_read
                ),
            )
            .on(&self.shared.name));
        }
        if self.shared.control.delivering() {
            return Err(Error::new(
                ErrorKind::Active,
                "recv",
                "the device is in active mode: its packets go to the owner (pause with Active::Off to read passively)",
            )
            .on(&self.shared.name));
        }
        loop {
            return match read(self.fd.as_fd(), buf) {
                Ok((n, false)) => Ok(Some(n)),
                Ok((n, true)) => Err(Error::new(
                    ErrorKind::Truncated,
                    "recv",
                    format!("packet longer than the {n}-byte buffer: its first {n} bytes are in the buffer, the kernel dropped the rest"),
                )
                .on(&self.shared.name)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(self.shared.io_error("recv", e)),
            };
        }
    }

    /// One non-blocking write: `Ok(None)` when the device cannot take it now.
    pub(crate) fn write_now(&self, packet: &[u8]) -> Result<Option<usize>> {
        if packet.is_empty() {
            return Err(
                Error::new(ErrorKind::InvalidInput, "send", "empty packet").on(&self.shared.name)
            );
        }
        self.shared.check_open("send")?;
        loop {
            return match sys::write_nowait(self.fd.as_fd(), packet) {
                Ok(n) => Ok(Some(n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(self.shared.io_error("send", e)),
            };
        }
    }

    /// Waits until the queue is readable or `deadline` passes (`Ok(false)`).
    pub(crate) fn wait_readable(&self, deadline: Option<Instant>) -> Result<bool> {
        self.wait(Interest::Read, deadline, "recv")
    }

    fn recv_until(&self, buf: &mut [u8], deadline: Option<Instant>) -> Result<Option<usize>> {
        // No deadline: one blocking `readv`, woken by the kernel if the device is destroyed
        // (an adopted non-blocking fd falls back to poll below).
        let read = if deadline.is_none() {
            sys::read_packet
        } else {
            sys::read_packet_nowait
        };
        loop {
            if let Some(n) = self.read_with(buf, read)? {
                return Ok(Some(n));
            }
            if !self.wait(Interest::Read, deadline, "recv")? {
                return Ok(None);
            }
        }
    }

    fn send_until(&self, packet: &[u8], deadline: Option<Instant>) -> Result<Option<usize>> {
        loop {
            if let Some(n) = self.write_now(packet)? {
                return Ok(Some(n));
            }
            if !self.wait(Interest::Write, deadline, "send")? {
                return Ok(None);
            }
        }
    }

    /// The device's name.
    pub fn device(&self) -> &str {
        &self.shared.name
    }

    /// Another handle on the same queue (`dup(2)`, close-on-exec): both read from and write
    /// to the same queue; the queue detaches when the last handle closes.
    pub fn try_clone(&self) -> Result<Queue> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| Error::os("dup", e).on(&self.shared.name))?;
        Ok(Queue {
            fd,
            shared: Arc::clone(&self.shared),
        })
    }

    /// Receives one packet, waiting as long as it takes. Returns its length.
    ///
    /// One `readv(2)` when a packet is queued, plus a `poll(2)` when none is. A packet longer
    /// than `buf` gives [`ErrorKind::Truncated`] (its head is in `buf`); the device being
    /// destroyed gives [`ErrorKind::Closed`]; deleted from outside, [`ErrorKind::Gone`].
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        self.recv_until(buf, None).map(|n| n.unwrap_or(0))
    }

    /// Receives one packet if one is queued; `Ok(None)` if not. Never waits.
    pub fn try_recv(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        self.recv_until(buf, Some(Instant::now()))
    }

    /// Receives one packet, waiting at most `timeout` (`Duration::MAX`: no limit); `Ok(None)`
    /// if none came.
    pub fn recv_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<usize>> {
        self.recv_until(buf, Instant::now().checked_add(timeout))
    }

    /// Sends one packet (one `write(2)` is one packet), waiting if the device's send buffer
    /// is full. An invalid packet gives an error for this call only; the device lives on.
    pub fn send(&self, packet: &[u8]) -> Result<usize> {
        self.send_until(packet, None).map(|n| n.unwrap_or(0))
    }

    /// Sends one packet if it can be sent without waiting; `Ok(None)` if not.
    pub fn try_send(&self, packet: &[u8]) -> Result<Option<usize>> {
        self.send_until(packet, Some(Instant::now()))
    }

    /// Sends one packet, waiting at most `timeout` for room; `Ok(None)` on timeout.
    pub fn send_timeout(&self, packet: &[u8], timeout: Duration) -> Result<Option<usize>> {
        self.send_until(packet, Instant::now().checked_add(timeout))
    }

    /// Enables (attaches) or disables (detaches) this queue of a multi-queue device
    /// (TUNSETQUEUE with IFF_ATTACH_QUEUE / IFF_DETACH_QUEUE). A disabled queue gets no
    /// packets and cannot send.
    pub fn set_enabled(&self, enabled: bool) -> Result<()> {
        self.shared.check_open("TUNSETQUEUE")?;
        sys::tun_set_queue(self.fd.as_fd(), enabled)
            .map_err(|e| self.shared.io_error("TUNSETQUEUE", e))
    }
}

impl AsFd for Queue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Queue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// How [`Builder`] treats an existing device of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Create, or attach to an existing (persistent) device: TUNSETIFF's own semantics.
    Create,
    /// Attach only: the device must exist.
    Open,
}

/// Builds a [`Device`]. Defaults follow the seed: tap, no packet-information header,
/// one queue, in the caller's namespace, name chosen by the kernel.
#[derive(Debug, Clone)]
pub struct Builder {
    name: Option<String>,
    kind: Kind,
    packet_info: bool,
    one_queue: bool,
    queues: usize,
    multi_queue: bool,
    vnet_hdr: bool,
    offload: Offload,
    exclusive: bool,
    namespace: Namespace,
    helper: bool,
    owner: Option<u32>,
    group: Option<u32>,
    persist: bool,
    alias: Option<String>,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            name: None,
            kind: Kind::Tap,
            packet_info: false,
            one_queue: false,
            queues: 1,
            multi_queue: false,
            vnet_hdr: false,
            offload: Offload::empty(),
            exclusive: false,
            namespace: Namespace::Current,
            helper: false,
            owner: None,
            group: None,
            persist: false,
            alias: None,
        }
    }
}

impl Builder {
    /// The interface name, or a template with one `%d` (`"lab%d"`). Without one, the kernel
    /// picks `tunN` or `tapN`. Checked when the device is built.
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        let name = name.into();
        self.name = if name.is_empty() { None } else { Some(name) };
        self
    }

    /// A tun (layer 3, IP packets) device.
    pub fn tun(self) -> Builder {
        self.kind(Kind::Tun)
    }

    /// A tap (layer 2, Ethernet frames) device: the default.
    pub fn tap(self) -> Builder {
        self.kind(Kind::Tap)
    }

    /// tun or tap.
    pub fn kind(mut self, kind: Kind) -> Builder {
        self.kind = kind;
        self
    }

    /// Whether packets carry the 4-byte [`PacketInfo`](crate::PacketInfo) header (the
    /// seed's option is the opposite, `no_pi`, which is the default: `false` here).
    pub fn packet_info(mut self, on: bool) -> Builder {
        self.packet_info = on;
        self
    }

    /// `IFF_ONE_QUEUE`: accepted for compatibility with the seed; the kernel has ignored it
    /// since Linux 3.8 (the device queue is the qdisc's).
    pub fn one_queue(mut self, on: bool) -> Builder {
        self.one_queue = on;
        self
    }

    /// `IFF_MULTI_QUEUE` with `queues` fds (1 to 256), one [`Queue`] each.
    pub fn multi_queue(mut self, queues: usize) -> Builder {
        self.multi_queue = true;
        self.queues = queues;
        self
    }

    /// Offloads to ask for (implies [`vnet_hdr`](Builder::vnet_hdr)): the kernel may then hand
    /// over 64 KiB super-packets with a partial checksum, and take them. Negotiated with
    /// TUNSETOFFLOAD at creation, dropping what the kernel refuses (USO, then TSO); see
    /// [`Device::offload`]. A `vnet_hdr` device always gets its mask set, so a stale mask
    /// left on a persistent device by an earlier user is reset (`Offload::empty()` opts out).
    pub fn offload(mut self, want: Offload) -> Builder {
        self.vnet_hdr = true;
        self.offload = want;
        self
    }

    /// `IFF_VNET_HDR`: each packet starts with a `virtio_net_hdr` (offload metadata).
    pub fn vnet_hdr(mut self, on: bool) -> Builder {
        self.vnet_hdr = on;
        self
    }

    /// `IFF_TUN_EXCL`: refuse to attach to a device that exists already.
    pub fn exclusive(mut self, on: bool) -> Builder {
        self.exclusive = on;
        self
    }

    /// Create (or open) the device inside `ns`. The device is configured there too (over a
    /// netlink socket opened inside it); the calling process does not move.
    pub fn namespace(mut self, ns: Namespace) -> Builder {
        self.namespace = ns;
        self
    }

    /// Whether [`create`](Builder::create) may fall back to the privileged helper
    /// ([`crate::helper`]) when the kernel refuses TUNSETIFF for lack of privilege. Off by
    /// default: library code never starts a privileged program unless asked. Even when on,
    /// a process running as root never falls back (the kernel's refusal is reported), and
    /// only a helper installed in a trusted place is run ([`crate::helper::find`]).
    pub fn helper(mut self, on: bool) -> Builder {
        self.helper = on;
        self
    }

    /// The user allowed to attach to the device without CAP_NET_ADMIN (TUNSETOWNER), set
    /// before anyone else can see the device.
    ///
    /// The kernel lets *any* user attach to a device that has neither an owner nor a group,
    /// and a multi-queue device accepts more queues while it is held. So a new device with an
    /// owner, a group, an [`alias`](Builder::alias) or [`persist`](Builder::persist) is born
    /// in a private network namespace, gets all of them there, and is then moved into its
    /// namespace: nobody can attach to it in between (this needs CAP_SYS_ADMIN for the
    /// private namespace; without it, a single-queue device is created in place, which is as
    /// safe since the kernel refuses a second fd while this one holds the only queue, and a
    /// multi-queue device is refused). On an existing device the settings are applied after
    /// attaching.
    pub fn owner(mut self, uid: u32) -> Builder {
        self.owner = Some(uid);
        self
    }

    /// The group allowed to attach without CAP_NET_ADMIN (TUNSETGROUP); see
    /// [`owner`](Builder::owner) for how it is set. With both an owner and a group, the
    /// kernel requires a user to match both.
    pub fn group(mut self, gid: u32) -> Builder {
        self.group = Some(gid);
        self
    }

    /// Make the device persistent (TUNSETPERSIST) before it becomes visible; see
    /// [`owner`](Builder::owner). A persistent device without an owner or group can be
    /// opened by any local user: give it one.
    pub fn persist(mut self, on: bool) -> Builder {
        self.persist = on;
        self
    }

    /// The interface alias (`IFLA_IFALIAS`, which only CAP_NET_ADMIN can change), set
    /// before the device becomes visible; see [`owner`](Builder::owner). `tunctl-helper`
    /// marks the devices it makes this way.
    pub fn alias(mut self, alias: impl Into<String>) -> Builder {
        self.alias = Some(alias.into());
        self
    }

    /// Whether the device gets settings that must be in place before it is visible.
    fn seals(&self) -> bool {
        self.owner.is_some() || self.group.is_some() || self.persist || self.alias.is_some()
    }

    /// The TUNSETIFF flags these options ask for.
    pub fn flags(&self) -> Flags {
        let mut flags = self.kind.flag();
        if !self.packet_info {
            flags |= Flags::NO_PI;
        }
        if self.one_queue {
            flags |= Flags::ONE_QUEUE;
        }
        if self.multi_queue {
            flags |= Flags::MULTI_QUEUE;
        }
        if self.vnet_hdr {
            flags |= Flags::VNET_HDR;
        }
        flags
    }

    /// Creates the device, or attaches to an existing persistent device of the same name,
    /// kind and flags (TUNSETIFF's semantics; with [`exclusive`](Builder::exclusive) an
    /// existing device is an error instead).
    ///
    /// Errors, all before anything is created: an invalid name ([`ErrorKind::InvalidInput`]);
    /// the name taken by a device that is not TUN/TAP, or is TUN/TAP of another kind or flags
    /// ([`ErrorKind::FlagMismatch`]); a missing namespace ([`ErrorKind::NotFound`]). From
    /// the kernel: [`ErrorKind::Busy`] (in use, or exists with `exclusive`),
    /// [`ErrorKind::PermissionDenied`] (needs CAP_NET_ADMIN or ownership).
    pub fn create(self) -> Result<Device> {
        match self.clone().build(Mode::Create) {
            Err(e)
                if self.helper
                    && e.kind() == ErrorKind::PermissionDenied
                    && !sys::is_root()
                    && self.group.is_none()
                    && self.alias.is_none()
                    && self.owner.is_none_or(|uid| uid == sys::real_uid()) =>
            {
                self.via_helper(e)
            }
            other => other,
        }
    }

    /// Creates the device through the privileged helper, which makes the caller its owner.
    /// Without a trusted helper, the kernel's refusal `denied` is the answer, with what
    /// would overcome it.
    fn via_helper(&self, denied: Error) -> Result<Device> {
        use crate::helper::{Netns, Op, Request};
        if let Err(why) = crate::helper::find() {
            return Err(denied.with_detail(crate::helper::privilege_hint(&why)));
        }
        let mut req = Request::new(
            Op::Create,
            self.name.as_deref().unwrap_or(if self.kind == Kind::Tun {
                "tun%d"
            } else {
                "tap%d"
            }),
        );
        req.kind = self.kind;
        req.pi = self.packet_info;
        req.vnet_hdr = self.vnet_hdr;
        req.multi_queue = self.multi_queue;
        req.persist = self.persist;
        req.netns = match &self.namespace {
            Namespace::Current => Netns::Own,
            Namespace::Named(n) => Netns::Named(n.clone()),
            Namespace::Path(p) => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    "tunctl-helper",
                    format!(
                        "the helper takes named namespaces only, not {}",
                        p.display()
                    ),
                ))
            }
        };
        crate::helper::create(&req)
    }

    /// Attaches to an existing device (typically persistent) with these flags. Fails with
    /// [`ErrorKind::NotFound`] if it does not exist, [`ErrorKind::FlagMismatch`] if its kind or
    /// flags differ: the kernel would otherwise silently change them for every user.
    pub fn open(self) -> Result<Device> {
        self.build(Mode::Open)
    }

    fn build(self, mode: Mode) -> Result<Device> {
        let label = self
            .name
            .clone()
            .unwrap_or_else(|| format!("{}%d", self.kind));
        if let Some(name) = &self.name {
            name::validate(name, mode == Mode::Create)?;
        } else if mode == Mode::Open {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "open",
                "a name is needed to open an existing device",
            ));
        }
        if self.queues == 0 || self.queues > MAX_QUEUES {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "multi_queue",
                format!("{} queues: a device has 1 to {MAX_QUEUES}", self.queues),
            )
            .on(label));
        }
        let flags = self.flags();
        let ns = self.namespace.clone();
        let sealed = if mode == Mode::Create && self.seals() {
            self.create_sealed(flags)
                .map_err(|e| e.on_default(&label))?
        } else {
            None
        };
        let (dev, attached) = match sealed {
            Some((queues, netlink, kname, index)) => (
                Device::assemble(queues, Link::from_index(netlink, index, kname), flags, None)?,
                false,
            ),
            None => {
                let (queues, netlink, kname, index) = ns
                    .run(|| self.attach_all(mode, flags))
                    .and_then(|r| r)
                    .map_err(|e| e.on_default(&label))?;
                let dev =
                    Device::assemble(queues, Link::from_index(netlink, index, kname), flags, None)?;
                (dev, true)
            }
        };
        if attached {
            // An existing device (or one made in place without CAP_SYS_ADMIN, single-queue
            // and so held by us alone): the settings in the order that never leaves a
            // persistent device without its owner.
            self.seal(&dev)?;
        }
        if flags.contains(Flags::VNET_HDR) {
            dev.negotiate_offload(self.offload)?;
        }
        Ok(dev)
    }

    /// Applies owner, group, alias and persist to an attached device, persist last.
    fn seal(&self, dev: &Device) -> Result<()> {
        if let Some(uid) = self.owner {
            dev.set_owner(uid)?;
        }
        if let Some(gid) = self.group {
            dev.set_group(gid)?;
        }
        if let Some(alias) = &self.alias {
            dev.link()?.set_alias(alias)?;
        }
        if self.persist {
            dev.set_persist(true)?;
        }
        Ok(())
    }

    /// Creates a new device in a private network namespace, gives it its owner, group,
    /// alias and persist flag there, and moves it into the target namespace under the
    /// requested name (a template is resolved there). Nobody outside this process can see
    /// or attach to it before it is complete; if this process dies on the way, the private
    /// namespace dies with it and takes the device along.
    ///
    /// `Ok(None)`: use the plain path instead: the named device exists already (attach to
    /// it), or the private namespace is not allowed (no CAP_SYS_ADMIN) and the device is
    /// single-queue.
    #[allow(clippy::type_complexity)]
    fn create_sealed(&self, flags: Flags) -> Result<Option<(Vec<OwnedFd>, Netlink, String, u32)>> {
        let target = Netlink::open_in(&self.namespace)?;
        let request = self
            .name
            .clone()
            .unwrap_or_else(|| format!("{}%d", self.kind));
        if !request.contains('%') {
            match target.link_by_name(&request) {
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let target_fd = match self.namespace.open()? {
            Some(fd) => fd,
            None => sys::open_readonly(std::path::Path::new("/proc/thread-self/ns/net"))
                .map_err(|e| Error::os("open namespace", e))?,
        };
        let made = std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<Option<Vec<OwnedFd>>> {
                    match sys::unshare_net() {
                        Ok(()) => {}
                        Err(e)
                            if e.raw_os_error() == Some(libc::EPERM) && !self.multi_queue =>
                        {
                            return Ok(None)
                        }
                        Err(e) => {
                            let err = Error::os("unshare", e);
                            return Err(if err.kind() == ErrorKind::PermissionDenied {
                                err.with_detail(
                                    "a multi-queue device with an owner, group, alias or persist is made in a private namespace so that nobody can attach before they are set; that needs CAP_SYS_ADMIN (EPERM)",
                                )
                            } else {
                                err
                            });
                        }
                    }
                    self.populate_private(&request, flags, target_fd.as_fd())
                        .map(Some)
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })?;
        let Some(fds) = made else {
            return Ok(None);
        };
        let (kname, _) = sys::tun_get_iff(fds[0].as_fd()).map_err(|e| Error::os("TUNGETIFF", e))?;
        let info = target.link_by_name(&kname)?;
        // What arrived must be exactly what was made: our queues, our owner, group and alias.
        let (queues, owner, group) = info
            .tun
            .as_ref()
            .map_or((None, None, None), |t| (t.queues, t.owner, t.group));
        let queues_ok =
            info.tun.is_some() && (!self.multi_queue || queues == Some(fds.len() as u32));
        if !queues_ok || owner != self.owner || group != self.group || info.alias != self.alias {
            let _ = target.delete_link(info.index);
            return Err(Error::new(
                ErrorKind::Os,
                "create",
                format!(
                    "the device arrived with queues {:?}, owner {:?}, group {:?}, alias {:?}: not as made; removed",
                    queues, owner, group, info.alias
                ),
            )
            .on(kname));
        }
        Ok(Some((fds, target, kname, info.index)))
    }

    /// Runs on a thread inside a fresh private namespace: creates the device under a
    /// temporary name, sets everything that must precede visibility, and moves it into
    /// `target` as `request`. On failure the device is deleted (and would die with the
    /// namespace anyway).
    fn populate_private(
        &self,
        request: &str,
        flags: Flags,
        target: BorrowedFd<'_>,
    ) -> Result<Vec<OwnedFd>> {
        use std::hash::{BuildHasher, Hasher};
        // Unique in the target too, so the move never clashes before the rename.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let temp = format!("tcs{:012x}", h.finish() & 0xffff_ffff_ffff);
        let (first, _) = attach(&temp, flags | Flags::TUN_EXCL, flags)?;
        let mut fds = vec![first];
        for _ in 1..self.queues {
            fds.push(attach(&temp, flags, flags)?.0);
        }
        let netlink = Netlink::open()?;
        let index = netlink.link_by_name(&temp)?.index;
        let link = Link::from_index(netlink, index, temp.clone());
        let done = (|| -> Result<()> {
            let fd = fds[0].as_fd();
            if let Some(uid) = self.owner {
                sys::tun_set_owner(fd, uid).map_err(|e| Error::os("TUNSETOWNER", e))?;
            }
            if let Some(gid) = self.group {
                sys::tun_set_group(fd, gid).map_err(|e| Error::os("TUNSETGROUP", e))?;
            }
            if let Some(alias) = &self.alias {
                link.set_alias(alias)?;
            }
            if self.persist {
                sys::tun_set_persist(fd, true).map_err(|e| Error::os("TUNSETPERSIST", e))?;
            }
            link.netlink()
                .move_link(index, target, request)
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::EEXIST) => Error::new(
                        ErrorKind::Busy,
                        "TUNSETIFF",
                        "a device of that name exists already",
                    ),
                    _ => e,
                })
        })();
        if let Err(e) = done {
            let _ = link.delete();
            return Err(e.on(request));
        }
        Ok(fds)
    }

    /// Runs inside the target namespace: checks an existing device, opens every queue, and
    /// opens the netlink socket that will configure the device.
    fn attach_all(&self, mode: Mode, flags: Flags) -> Result<(Vec<OwnedFd>, Netlink, String, u32)> {
        let netlink = Netlink::open_here(self.namespace.clone())?;
        let existing = match &self.name {
            Some(name) if !name.contains('%') => match netlink.link_by_name(name) {
                Ok(info) => Some(info),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            },
            _ => None,
        };
        match (&existing, mode) {
            (None, Mode::Open) => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    "open",
                    format!("no such device in {}", self.namespace.describe()),
                ))
            }
            (Some(info), _) => check_compatible(info, flags, self.exclusive)?,
            (None, Mode::Create) => {}
        }
        let first_flags = if self.exclusive {
            flags | Flags::TUN_EXCL
        } else {
            flags
        };
        let request = self
            .name
            .clone()
            .unwrap_or_else(|| format!("{}%d", self.kind));
        let (first, kname) = attach(&request, first_flags, flags)?;
        let mut fds = vec![first];
        for _ in 1..self.queues {
            fds.push(attach(&kname, flags, flags)?.0);
        }
        let index = netlink.link_by_name(&kname)?.index;
        if let Some(info) = existing {
            if info.index != index {
                // Deleted and re-created between the check and the attach: not the device we
                // checked. Dropping the fds removes what we just created.
                return Err(Error::new(
                    ErrorKind::NotFound,
                    "attach",
                    "the device was replaced while attaching",
                )
                .on(&kname));
            }
        }
        Ok((fds, netlink, kname, index))
    }
}

/// Refuses, before TUNSETIFF, to attach to a device whose kind or flags differ from those
/// asked for (the kernel would refuse some with a bare EINVAL and silently apply others to
/// every user of the device).
fn check_compatible(info: &LinkInfo, flags: Flags, exclusive: bool) -> Result<()> {
    let mismatch =
        |why: String| Err(Error::new(ErrorKind::FlagMismatch, "attach", why).on(&info.name));
    let Some(tun) = &info.tun else {
        return mismatch(match info.link_kind.as_deref() {
            Some(kind) => format!("the name is taken by a {kind} device, which is not TUN/TAP"),
            None => "the name is taken by a device that is not TUN/TAP".to_string(),
        });
    };
    if exclusive {
        return Err(Error::new(
            ErrorKind::Busy,
            "TUNSETIFF",
            "exists already and exclusive (tun_excl) was asked for",
        )
        .on(&info.name));
    }
    let want_kind = flags.kind().unwrap_or(Kind::Tap);
    if tun.kind != want_kind {
        return mismatch(format!("exists as a {} device, not {want_kind}", tun.kind));
    }
    let checks = [
        (
            "multi_queue",
            tun.multi_queue,
            flags.contains(Flags::MULTI_QUEUE),
        ),
        (
            "packet information (no_pi off)",
            tun.pi,
            !flags.contains(Flags::NO_PI),
        ),
        ("vnet_hdr", tun.vnet_hdr, flags.contains(Flags::VNET_HDR)),
    ];
    for (what, has, wants) in checks {
        if has != wants {
            let state = |b: bool| if b { "on" } else { "off" };
            return mismatch(format!(
                "exists with {what} {}, asked for {}",
                state(has),
                state(wants)
            ));
        }
    }
    Ok(())
}

/// Opens `/dev/net/tun`, attaches it with TUNSETIFF, and verifies with TUNGETIFF that the
/// kernel applied `expect`. On any failure the fd is closed (dropped) before returning.
fn attach(name: &str, flags: Flags, expect: Flags) -> Result<(OwnedFd, String)> {
    let fd = sys::open_tun().map_err(|e| {
        let err = Error::os("open /dev/net/tun", e).on(name);
        if err.kind() == ErrorKind::NotFound {
            err.with_detail("/dev/net/tun is missing: load the tun module (modprobe tun)")
        } else {
            err
        }
    })?;
    let kname = sys::tun_set_iff(fd.as_fd(), name.as_bytes(), flags.bits()).map_err(|e| {
        let errno = e.raw_os_error();
        let err = Error::os("TUNSETIFF", e).on(name);
        match errno {
            Some(libc::EPERM) => err.with_detail("operation not permitted: needs CAP_NET_ADMIN, or the device's owner or group (EPERM)"),
            Some(libc::EBUSY) => err.with_detail("device is busy: another process has it open, or it exists and exclusive was asked for (EBUSY)"),
            _ => err,
        }
    })?;
    let (_, actual) =
        sys::tun_get_iff(fd.as_fd()).map_err(|e| Error::os("TUNGETIFF", e).on(&kname))?;
    // NO_PI is not comparable here: TUNGETIFF reports bit 0x1000 as IFF_NOFILTER ("no socket
    // filter attached"), the same bit. An existing device's packet-information setting is
    // checked over netlink before attaching (check_compatible).
    let mask = ATTACH_FLAGS;
    let actual = Flags::from_bits_retain(actual);
    if actual & mask != expect & mask {
        return Err(Error::new(
            ErrorKind::FlagMismatch,
            "TUNGETIFF",
            format!(
                "kernel attached with {} instead of {}",
                actual & mask,
                expect & mask
            ),
        )
        .on(kname));
    }
    Ok((fd, kname))
}

/// One owned TUN/TAP device: its queues (fds), its name and its configuration handle (the
/// seed's `tuncer` process, as a value).
///
/// Dropping a `Device` closes its fds: a non-persistent device then disappears, a persistent
/// one stays (UP, with its addresses). [`Device::destroy`] removes it in either case.
/// Receive and send methods use the first queue; [`Device::queues`] gives all of them.
#[derive(Debug)]
pub struct Device {
    queues: Vec<Queue>,
    shared: Arc<Shared>,
}

impl Device {
    /// A [`Builder`] with the seed's defaults (tap, no_pi, one queue, kernel-chosen name).
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Adopts an fd already attached to a TUN/TAP device (e.g. received from a privileged
    /// helper, or `getfd` of another program). Reads the name and flags back with TUNGETIFF
    /// and finds the device's namespace with TUNGETDEVNETNS (falling back to the caller's).
    pub fn from_fd(fd: OwnedFd) -> Result<Device> {
        let (kname, flags) = sys::tun_get_iff(fd.as_fd()).map_err(|e| {
            let err = Error::os("TUNGETIFF", e);
            if err.kind() == ErrorKind::Unsupported {
                err.with_detail("not a TUN/TAP fd (ENOTTY)")
            } else {
                err
            }
        })?;
        sys::set_cloexec(fd.as_fd()).map_err(|e| Error::os("fcntl", e).on(&kname))?;
        // Configure the device where it lives: its namespace fd, kept open and reachable by
        // path when it is not ours (entering it needs CAP_SYS_ADMIN; ours needs nothing).
        let (netlink, netns) = match sys::tun_get_dev_netns(fd.as_fd()) {
            Ok(nsfd) => {
                let path = format!("/proc/self/fd/{}", nsfd.as_raw_fd());
                if same_file(&path, "/proc/thread-self/ns/net") {
                    (Netlink::open()?, None)
                } else {
                    (Netlink::open_in(&Namespace::path(path))?, Some(nsfd))
                }
            }
            // Kernels before 5.2 lack TUNGETDEVNETNS: assume ours, and verify below.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY) | Some(libc::EINVAL)) => {
                (Netlink::open()?, None)
            }
            Err(e) => return Err(Error::os("TUNGETDEVNETNS", e).on(&kname)),
        };
        let info = netlink.link_by_name(&kname)?;
        // TUNGETIFF's bit 0x1000 is IFF_NOFILTER there; NO_PI comes from IFLA_TUN_PI.
        let mut flags = Flags::from_bits_retain(flags) & ATTACH_FLAGS;
        match &info.tun {
            Some(tun) if Some(tun.kind) == flags.kind() => {
                if !tun.pi {
                    flags |= Flags::NO_PI;
                }
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::FlagMismatch,
                    "from_fd",
                    "the interface of that name here is not the fd's device",
                )
                .on(&kname))
            }
        }
        let link = Link::from_index(netlink, info.index, kname);
        Device::assemble(vec![fd], link, flags, netns)
    }

    /// Assembles a device from what the privileged helper sent: the tun fd and a netlink
    /// socket opened in the device's namespace.
    pub(crate) fn from_helper(
        fd: OwnedFd,
        socket: netlink_sys::Socket,
        name: String,
        index: u32,
        ns: Namespace,
    ) -> Result<Device> {
        let (_, raw) =
            sys::tun_get_iff(fd.as_fd()).map_err(|e| Error::os("TUNGETIFF", e).on(&name))?;
        let netlink = Netlink::from_socket(socket, ns);
        let mut flags = Flags::from_bits_retain(raw) & ATTACH_FLAGS;
        if netlink
            .link_by_index(index)
            .ok()
            .and_then(|i| i.tun)
            .is_some_and(|t| !t.pi)
        {
            flags |= Flags::NO_PI;
        }
        Device::assemble(
            vec![fd],
            Link::from_index(netlink, index, name),
            flags,
            None,
        )
    }

    fn assemble(
        fds: Vec<OwnedFd>,
        link: Link,
        flags: Flags,
        netns: Option<OwnedFd>,
    ) -> Result<Device> {
        let name = link.name().to_string();
        let vnet_len = match fds.first() {
            Some(fd) if flags.contains(Flags::VNET_HDR) => {
                sys::tun_get_vnet_hdr_sz(fd.as_fd()).map_or(10, |n| n.max(0) as usize)
            }
            _ => 0,
        };
        let shared = Arc::new(Shared {
            wake: sys::eventfd().map_err(|e| Error::os("eventfd", e).on(&name))?,
            control: Control::new().map_err(|e| Error::os("eventfd", e).on(&name))?,
            name,
            closed: AtomicBool::new(false),
            destroying: AtomicBool::new(false),
            link,
            flags,
            min_read: usize::from(!flags.contains(Flags::NO_PI) && flags.kind().is_some()) * 4
                + usize::from(flags.contains(Flags::VNET_HDR)) * 10,
            offload: std::sync::atomic::AtomicU32::new(0),
            gso_refused: AtomicBool::new(false),
            vnet_hdr_sz: std::sync::atomic::AtomicUsize::new(vnet_len),
            _netns: netns,
        });
        let queues = fds
            .into_iter()
            .map(|fd| Queue {
                fd,
                shared: Arc::clone(&shared),
            })
            .collect();
        Ok(Device { queues, shared })
    }

    fn check_open(&self, op: &str) -> Result<()> {
        self.shared.check_open(op)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.queues[0].fd.as_fd()
    }

    fn ioctl<T>(
        &self,
        op: &str,
        call: impl FnOnce(BorrowedFd<'_>) -> std::io::Result<T>,
    ) -> Result<T> {
        self.check_open(op)?;
        call(self.fd()).map_err(|e| self.shared.io_error(op, e))
    }

    /// The interface name the kernel gave the device (the seed's `devname/1`).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The interface index.
    pub fn index(&self) -> u32 {
        self.shared.link.index()
    }

    /// tun or tap.
    pub fn kind(&self) -> Kind {
        self.shared.flags.kind().unwrap_or(Kind::Tap)
    }

    /// The namespace the device lives (and is configured) in.
    pub fn namespace(&self) -> &Namespace {
        self.shared.link.netlink().namespace()
    }

    /// The flags as the kernel reports them now, `PERSIST` included (the seed's `flags/1`,
    /// which returned the option list instead). One TUNGETIFF plus one netlink round trip:
    /// TUNGETIFF reports bit 0x1000 as `IFF_NOFILTER`, so `NO_PI` comes from `IFLA_TUN_PI`.
    pub fn flags(&self) -> Result<Flags> {
        let (_, raw) = self.ioctl("TUNGETIFF", sys::tun_get_iff)?;
        let hidden = Flags::NO_PI.bits() | libc::IFF_DETACH_QUEUE as u16;
        let mut flags = Flags::from_bits_retain(raw & !hidden);
        if self.info()?.tun.is_some_and(|t| !t.pi) {
            flags |= Flags::NO_PI;
        }
        Ok(flags)
    }

    /// Whether the device outlives its fds.
    pub fn is_persistent(&self) -> Result<bool> {
        Ok(self.flags()?.contains(Flags::PERSIST))
    }

    /// The TUNSETIFF flags this kernel supports (TUNGETFEATURES).
    pub fn features(&self) -> Result<Flags> {
        self.ioctl("TUNGETFEATURES", sys::tun_get_features)
            .map(|f| Flags::from_bits_retain(f as u16))
    }

    /// The device's queues: one, or N for a multi-queue device.
    pub fn queues(&self) -> &[Queue] {
        &self.queues
    }

    /// Receives one packet on the first queue; see [`Queue::recv`].
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        self.queues[0].recv(buf)
    }

    /// Receives one packet if one is queued; see [`Queue::try_recv`].
    pub fn try_recv(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        self.queues[0].try_recv(buf)
    }

    /// Receives one packet, waiting at most `timeout`; see [`Queue::recv_timeout`].
    pub fn recv_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<usize>> {
        self.queues[0].recv_timeout(buf, timeout)
    }

    /// Sends one packet on the first queue; see [`Queue::send`].
    pub fn send(&self, packet: &[u8]) -> Result<usize> {
        self.queues[0].send(packet)
    }

    /// Sends one packet without waiting; see [`Queue::try_send`].
    pub fn try_send(&self, packet: &[u8]) -> Result<Option<usize>> {
        self.queues[0].try_send(packet)
    }

    /// Makes the device outlive its fds (TUNSETPERSIST, value by value).
    pub fn set_persist(&self, persist: bool) -> Result<()> {
        self.ioctl("TUNSETPERSIST", |fd| sys::tun_set_persist(fd, persist))
    }

    /// Lets user `uid` attach without CAP_NET_ADMIN (TUNSETOWNER with the uid as the value).
    ///
    /// The kernel has no way back to "no owner" (it refuses -1), and any holder of the fd may
    /// call this. A device with neither owner nor group can be opened by every local user;
    /// to have the owner in place before anyone can open the device, use
    /// [`Builder::owner`].
    pub fn set_owner(&self, uid: u32) -> Result<()> {
        self.ioctl("TUNSETOWNER", |fd| sys::tun_set_owner(fd, uid))
    }

    /// Lets group `gid` attach without CAP_NET_ADMIN (TUNSETGROUP with the gid as the value).
    /// As for [`set_owner`](Device::set_owner), there is no way back to "no group"; with
    /// both set, a user must match both.
    pub fn set_group(&self, gid: u32) -> Result<()> {
        self.ioctl("TUNSETGROUP", |fd| sys::tun_set_group(fd, gid))
    }

    /// Sets the link type (TUNSETLINK, an `ARPHRD_*` value); the device must be down.
    pub fn set_link_type(&self, link_type: u16) -> Result<()> {
        self.ioctl("TUNSETLINK", |fd| sys::tun_set_link(fd, link_type))
    }

    /// Sets a tap's receive filter (TUNSETTXFILTER: the seed's TODO "tun filtering"): only
    /// frames to these destination MACs (and, with `all_multicast`, every multicast frame)
    /// reach the reader. An empty list with `all_multicast == false` removes the filter.
    ///
    /// The kernel matches at most 8 unicast addresses exactly (more would silently disable
    /// the filter, so they are refused); multicast addresses go to its hash filter.
    pub fn set_mac_filter(&self, all_multicast: bool, macs: &[MacAddr]) -> Result<()> {
        let unicast = macs.iter().filter(|m| m.0[0] & 1 == 0).count();
        if unicast > 8 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "TUNSETTXFILTER",
                format!("{unicast} unicast addresses: the kernel filters at most 8 exactly"),
            )
            .on(self.name()));
        }
        let raw: Vec<[u8; 6]> = macs.iter().map(|m| m.0).collect();
        self.ioctl("TUNSETTXFILTER", |fd| {
            sys::tun_set_tx_filter(fd, all_multicast, &raw)
        })
    }

    /// Sets the carrier (TUNSETCARRIER): without it the link is `NO-CARRIER`.
    pub fn set_carrier(&self, carrier: bool) -> Result<()> {
        self.ioctl("TUNSETCARRIER", |fd| sys::tun_set_carrier(fd, carrier))
    }

    /// The send buffer of the device's sockets (TUNGETSNDBUF).
    pub fn sndbuf(&self) -> Result<i32> {
        self.ioctl("TUNGETSNDBUF", sys::tun_get_sndbuf)
    }

    /// Sets the send buffer (TUNSETSNDBUF); must be positive.
    pub fn set_sndbuf(&self, size: i32) -> Result<()> {
        if size <= 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "TUNSETSNDBUF",
                format!("size {size} must be positive"),
            )
            .on(self.name()));
        }
        self.ioctl("TUNSETSNDBUF", |fd| sys::tun_set_sndbuf(fd, size))
    }

    /// Tells the kernel which offloads the reader handles (TUNSETOFFLOAD, by value).
    pub fn set_offload(&self, offload: Offload) -> Result<()> {
        self.ioctl("TUNSETOFFLOAD", |fd| {
            sys::tun_set_offload(fd, offload.bits())
        })
    }

    /// Negotiates TUNSETOFFLOAD: asks for `want` (with `CSUM`, which TSO and USO need),
    /// then without USO, then without TSO, and records what the kernel accepted. With
    /// `Offload::empty()` the mask is reset: the kernel hands over plain packets.
    pub fn negotiate_offload(&self, want: Offload) -> Result<Offload> {
        let segmenting =
            Offload::TSO4 | Offload::TSO6 | Offload::TSO_ECN | Offload::USO4 | Offload::USO6;
        let mut want = want;
        if want.bits() & segmenting.bits() != 0 {
            want = want | Offload::CSUM;
        }
        let no_uso =
            Offload::from_bits_retain(want.bits() & !(Offload::USO4 | Offload::USO6).bits());
        let csum_only = Offload::from_bits_retain(want.bits() & Offload::CSUM.bits());
        let mut last = None;
        for attempt in [want, no_uso, csum_only, Offload::empty()] {
            match self.set_offload(attempt) {
                Ok(()) => {
                    self.shared.offload.store(attempt.bits(), Ordering::Release);
                    if attempt.bits() & segmenting.bits() != 0 {
                        // Super-packets of at most 64 segments: what a batch splits in one go.
                        self.link()?
                            .set_gso_max_segs(crate::offload::MAX_SEGMENTS as u32)?;
                    }
                    return Ok(attempt);
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::new(ErrorKind::Unsupported, "TUNSETOFFLOAD", "refused")))
    }

    /// The offloads in force: what [`negotiate_offload`](Device::negotiate_offload) (or the
    /// builder's [`offload`](Builder::offload)) got the kernel to accept.
    pub fn offload(&self) -> Offload {
        Offload::from_bits_retain(self.shared.offload.load(Ordering::Acquire))
    }

    /// The virtio-net header size of a `vnet_hdr` device (TUNGETVNETHDRSZ).
    pub fn vnet_hdr_size(&self) -> Result<i32> {
        self.ioctl("TUNGETVNETHDRSZ", sys::tun_get_vnet_hdr_sz)
    }

    /// Sets the virtio-net header size (TUNSETVNETHDRSZ; at least 10).
    pub fn set_vnet_hdr_size(&self, size: i32) -> Result<()> {
        self.ioctl("TUNSETVNETHDRSZ", |fd| sys::tun_set_vnet_hdr_sz(fd, size))?;
        self.shared
            .vnet_hdr_sz
            .store(size.max(0) as usize, Ordering::Relaxed);
        Ok(())
    }

    /// A close-on-exec fd for the device's network namespace (TUNGETDEVNETNS; needs
    /// CAP_NET_ADMIN).
    pub fn namespace_fd(&self) -> Result<OwnedFd> {
        self.ioctl("TUNGETDEVNETNS", sys::tun_get_dev_netns)
    }

    /// The rtnetlink handle of the device, for configuration this type does not wrap.
    pub fn link(&self) -> Result<&Link> {
        self.check_open("configure")?;
        Ok(&self.shared.link)
    }

    /// The kernel's view of the device: flags, MTU, MAC, `IFLA_TUN_*` attributes.
    pub fn info(&self) -> Result<LinkInfo> {
        self.link()?.info()
    }

    /// Brings the device up (`IFF_UP`).
    pub fn up(&self) -> Result<()> {
        self.link()?.up()
    }

    /// Brings the device down; its addresses stay (the seed's `down/1`).
    pub fn down(&self) -> Result<()> {
        self.link()?.down()
    }

    /// Adds an address; see [`Link::add_address`]. The seed's `up(Ref, IP)` is
    /// `add_address(ip)` then `up()`.
    pub fn add_address(&self, cidr: Cidr) -> Result<()> {
        self.link()?.add_address(cidr)
    }

    /// Removes an address.
    pub fn del_address(&self, cidr: Cidr) -> Result<()> {
        self.link()?.del_address(cidr)
    }

    /// The device's addresses.
    pub fn addresses(&self) -> Result<Vec<Address>> {
        self.link()?.addresses()
    }

    /// Sets the point-to-point peer of the address `local` (the Erlang original's
    /// `dstaddr/2`, IPv4 and IPv6); see [`Link::set_peer`].
    pub fn set_peer(&self, local: std::net::IpAddr, peer: std::net::IpAddr) -> Result<()> {
        self.link()?.set_peer(local, peer)
    }

    /// Sets the broadcast address of the IPv4 address `local` (the Erlang original's
    /// `broadcast/2`); see [`Link::set_broadcast`].
    pub fn set_broadcast(
        &self,
        local: std::net::Ipv4Addr,
        broadcast: std::net::Ipv4Addr,
    ) -> Result<()> {
        self.link()?.set_broadcast(local, broadcast)
    }

    /// The MTU.
    pub fn mtu(&self) -> Result<u32> {
        self.link()?.mtu()
    }

    /// Sets the MTU.
    pub fn set_mtu(&self, mtu: u32) -> Result<()> {
        self.link()?.set_mtu(mtu)
    }

    /// Sets a tap's MAC address.
    pub fn set_mac(&self, mac: MacAddr) -> Result<()> {
        self.link()?.set_mac(mac)
    }

    /// Sets the transmit queue length.
    pub fn set_txqueuelen(&self, len: u32) -> Result<()> {
        self.link()?.set_txqueuelen(len)
    }

    /// Removes the interface, persistent or not (RTM_DELLINK in its namespace), and wakes
    /// every thread blocked on its queues with [`ErrorKind::Closed`]. The fds are closed
    /// when the `Device` is dropped. A second call, and every later operation, gives
    /// [`ErrorKind::Closed`].
    pub fn destroy(&self) -> Result<()> {
        self.check_open("destroy")?;
        // Clear persist first: should RTM_DELLINK be refused (no CAP_NET_ADMIN, as for a
        // device owned by this user), the device still goes away with its last fd.
        let _ = sys::tun_set_persist(self.fd(), false);
        // Moved to another namespace since? Delete it where it is now, so the kernel detaches
        // (and wakes) every reader blocked on it.
        self.shared.destroy_with(|| {
            if let (Ok(nsfd), Ok((name, _))) = (
                sys::tun_get_dev_netns(self.fd()),
                sys::tun_get_iff(self.fd()),
            ) {
                let path = format!("/proc/self/fd/{}", nsfd.as_raw_fd());
                if !same_file(&path, &self.shared.netns_path()) {
                    if let Ok(link) = Link::by_name(&Namespace::path(path), &name) {
                        let _ = link.delete();
                    }
                }
            }
        })
    }

    /// A duplicate of the eventfd that becomes readable when the device is destroyed.
    #[cfg(feature = "tokio")]
    pub(crate) fn wake_fd(&self) -> Result<OwnedFd> {
        self.shared
            .wake
            .try_clone()
            .map_err(|e| Error::os("dup", e).on(self.name()))
    }

    /// Whether [`destroy`](Device::destroy) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Attaches one more queue to a multi-queue device at run time (TUNSETIFF in the device's
    /// namespace, verified with TUNGETIFF). The returned [`Queue`] is independent of the
    /// `Device` value: move it to its own thread; dropping it detaches it.
    pub fn attach_queue(&self) -> Result<Queue> {
        self.check_open("attach queue")?;
        if self.shared.control.is_active() {
            return Err(Error::new(
                ErrorKind::Busy,
                "attach queue",
                "the device is active: a new queue would have no reader; drop its Packets first",
            )
            .on(self.name()));
        }
        if !self.shared.flags.contains(Flags::MULTI_QUEUE) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "attach queue",
                "not a multi-queue device (build it with multi_queue)",
            )
            .on(self.name()));
        }
        let flags = self.shared.flags;
        let name = self.name();
        let (fd, _) = self.namespace().run(|| attach(name, flags, flags))??;
        Ok(Queue {
            fd,
            shared: Arc::clone(&self.shared),
        })
    }

    /// Switches to active mode (the seed's `{active, true}`): one reader thread per queue
    /// delivers every packet to the returned [`Packets`], the owner's inbox, with `capacity`
    /// recycled 64 KiB buffers per queue bounding memory. See the [`active`](crate::active)
    /// module for flow control and ownership. [`ErrorKind::Busy`] if already active.
    pub fn activate(&self, capacity: usize) -> Result<Packets> {
        self.activate_with(capacity, Active::On)
    }

    /// Like [`activate`](Device::activate), starting in `mode` (e.g. `Active::Off` to arm the
    /// readers without delivering yet).
    pub fn activate_with(&self, capacity: usize, mode: Active) -> Result<Packets> {
        self.check_open("activate")?;
        let fds = self
            .queues
            .iter()
            .map(|q| q.fd.try_clone())
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::os("dup", e).on(self.name()))?;
        active::activate(&self.shared, fds, capacity, mode)
    }

    /// Changes the active-mode delivery (the seed's `setopt(Ref, {active, ...})`): `Off`
    /// pauses and returns once no reader takes packets any more; `On` resumes; `Once` and
    /// `Count(n)` deliver that many packets, then pause. Setting the current mode is a no-op.
    pub fn set_active(&self, mode: Active) -> Result<()> {
        self.check_open("set_active")?;
        if !self.shared.control.is_active() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "set_active",
                "the device is not active: call activate() first",
            )
            .on(self.name()));
        }
        self.shared
            .control
            .set(mode)
            .map_err(|e| e.on_default(self.name()))
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // Readers hold duplicates of the fds: stop them and wait, so the fds close with ours
        // and a non-persistent device is gone when this returns.
        self.shared.control.stop_and_join();
    }
}

impl AsFd for Device {
    /// The first queue's fd (the seed's `getfd/1`), for use with `poll`, an event loop, or
    /// raw `read`/`write`. It stays owned by the device.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd()
    }
}

impl AsRawFd for Device {
    fn as_raw_fd(&self) -> RawFd {
        self.fd().as_raw_fd()
    }
}

/// Whether two paths name the same file (namespace files compare by inode and device).
fn same_file(a: &str, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.ino() == y.ino() && x.dev() == y.dev(),
        _ => false,
    }
}

/// Whether the fd has close-on-exec set (a check for tests and tools).
pub fn is_cloexec(fd: BorrowedFd<'_>) -> Result<bool> {
    sys::is_cloexec(fd).map_err(|e| Error::os("fcntl(F_GETFD)", e))
}
