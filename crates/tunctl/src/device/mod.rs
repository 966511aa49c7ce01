//! [`Device`]: one owned TUN/TAP device (the Erlang original's `tuncer`), made by
//! [`Builder`](crate::Builder) or from parts ([`Device::from_fd`], [`Device::from_parts`]):
//! its life, its queues and active mode here; its TUN ioctls in `ioctl.rs`, its rtnetlink
//! configuration in `config.rs`.

mod config;
mod ioctl;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use crate::active::{self, Active, Packets};
use crate::error::{Error, ErrorKind, Result};
use crate::flags::{Flags, Kind};
use crate::netlink::{Link, Netlink};
use crate::netns::Namespace;
use crate::queue::{attach, Queue, Shared, ATTACH_FLAGS};
use crate::sys;

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
    /// Made by tunctl-helper: changes need its help (or CAP_NET_ADMIN), and errors say so.
    helper_made: bool,
}

impl Device {
    /// Adopts an fd already attached to a TUN/TAP device (e.g. received from a privileged
    /// helper, or `getfd` of another program). Reads the name and flags back with TUNGETIFF
    /// and finds the device's namespace with TUNGETDEVNETNS (falling back to the caller's).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unsupported`] if `fd` is not a TUN/TAP fd, [`ErrorKind::Gone`] if it is
    /// attached to no device; [`ErrorKind::PermissionDenied`] without CAP_NET_ADMIN
    /// (TUNGETDEVNETNS) or, for a device in another namespace, CAP_SYS_ADMIN to enter it;
    /// [`ErrorKind::FlagMismatch`] if the interface of the fd's name there is another device.
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
            // Kernels before 5.2 lack TUNGETDEVNETNS, and it needs CAP_NET_ADMIN (an fd handed
            // to an unprivileged program): assume ours, and verify below.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOTTY) | Some(libc::EINVAL) | Some(libc::EPERM)
                ) =>
            {
                (Netlink::open()?, None)
            }
            Err(e) => return Err(Error::os("TUNGETDEVNETNS", e).on(&kname)),
        };
        let info = netlink.link_by_name(&kname)?;
        // TUNGETIFF's bit 0x1000 is IFF_NOFILTER there; NO_PI comes from IFLA_TUN_PI.
        let mut flags = Flags::from_bits_retain(flags) & ATTACH_FLAGS;
        match &info.tun {
            Some(tun) if Some(tun.kind) == flags.kind() => flags |= tun.flags() & Flags::NO_PI,
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

    /// Assembles a device from parts made elsewhere, e.g. by a privileged helper: `fd`
    /// attached to the device, an rtnetlink socket (`netlink`) opened in the device's
    /// namespace (so it can be inspected there without entering it), its name and index,
    /// and the namespace to name in messages. The flags are read back from the fd.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unsupported`] if `fd` is not a TUN/TAP fd (TUNGETIFF fails).
    pub fn from_parts(
        fd: OwnedFd,
        netlink: OwnedFd,
        name: String,
        index: u32,
        ns: Namespace,
    ) -> Result<Device> {
        let (_, raw) =
            sys::tun_get_iff(fd.as_fd()).map_err(|e| Error::os("TUNGETIFF", e).on(&name))?;
        let netlink = Netlink::from_socket(sys::netlink_socket_from(netlink), ns);
        let mut flags = Flags::from_bits_retain(raw) & ATTACH_FLAGS;
        if let Some(tun) = netlink.link_by_index(index).ok().and_then(|i| i.tun) {
            flags |= tun.flags() & Flags::NO_PI;
        }
        Device::assemble(
            vec![fd],
            Link::from_index(netlink, index, name),
            flags,
            None,
        )
    }

    pub(crate) fn assemble(
        fds: Vec<OwnedFd>,
        link: Link,
        flags: Flags,
        netns: Option<OwnedFd>,
    ) -> Result<Device> {
        let shared = Arc::new(Shared::new(link, flags, fds.first(), netns)?);
        let queues = fds
            .into_iter()
            .map(|fd| Queue::new(fd, Arc::clone(&shared)))
            .collect();
        Ok(Device {
            queues,
            shared,
            helper_made: false,
        })
    }

    /// Marks a device the privileged helper made: a change refused for lack of privilege
    /// then says which calls make it through the helper.
    pub(crate) fn made_by_helper(mut self) -> Device {
        self.helper_made = true;
        self
    }

    fn check_open(&self, op: &str) -> Result<()> {
        self.shared.check_open(op)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.queues[0].as_fd()
    }

    fn ioctl<T>(
        &self,
        op: &str,
        call: impl FnOnce(BorrowedFd<'_>) -> std::io::Result<T>,
    ) -> Result<T> {
        self.check_open(op)?;
        call(self.fd()).map_err(|e| self.shared.io_error(op, e))
    }

    /// The interface name the kernel gave the device (the original's `devname/1`).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The interface index.
    pub fn index(&self) -> u32 {
        self.shared.link.index()
    }

    /// tun or tap.
    pub fn kind(&self) -> Kind {
        self.shared.flags().kind().unwrap_or(Kind::Tap)
    }

    /// The namespace the device lives (and is configured) in.
    pub fn namespace(&self) -> &Namespace {
        self.shared.link.netlink().namespace()
    }

    /// The flags as the kernel reports them now, `PERSIST` included (the original's `flags/1`,
    /// which returned the option list instead). One TUNGETIFF plus one netlink round trip:
    /// TUNGETIFF reports bit 0x1000 as `IFF_NOFILTER`, so `NO_PI` comes from `IFLA_TUN_PI`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after [`destroy`](Device::destroy), [`ErrorKind::Gone`] if the
    /// device was deleted from outside; a failed netlink read as [`Link::info`].
    pub fn flags(&self) -> Result<Flags> {
        let (_, raw) = self.ioctl("TUNGETIFF", sys::tun_get_iff)?;
        let hidden = Flags::NO_PI.bits() | libc::IFF_DETACH_QUEUE as u16;
        let mut flags = Flags::from_bits_retain(raw & !hidden);
        if let Some(tun) = self.info()?.tun {
            flags |= tun.flags() & Flags::NO_PI;
        }
        Ok(flags)
    }

    /// Whether the device outlives its fds.
    ///
    /// # Errors
    ///
    /// As [`flags`](Device::flags).
    pub fn is_persistent(&self) -> Result<bool> {
        Ok(self.flags()?.contains(Flags::PERSIST))
    }

    /// The TUNSETIFF flags this kernel supports (TUNGETFEATURES).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy (the kernel answers even for a deleted device).
    pub fn features(&self) -> Result<Flags> {
        self.ioctl("TUNGETFEATURES", sys::tun_get_features)
            .map(|f| Flags::from_bits_retain(f as u16))
    }

    /// The device's queues: one, or N for a multi-queue device.
    pub fn queues(&self) -> &[Queue] {
        &self.queues
    }

    /// Receives one packet on the first queue; see [`Queue::recv`].
    ///
    /// # Errors
    ///
    /// As [`Queue::recv`].
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        self.queues[0].recv(buf)
    }

    /// Receives one packet if one is queued; see [`Queue::try_recv`].
    ///
    /// # Errors
    ///
    /// As [`Queue::recv`].
    pub fn try_recv(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        self.queues[0].try_recv(buf)
    }

    /// Receives one packet, waiting at most `timeout`; see [`Queue::recv_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Queue::recv`].
    pub fn recv_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<usize>> {
        self.queues[0].recv_timeout(buf, timeout)
    }

    /// Sends one packet on the first queue; see [`Queue::send`].
    ///
    /// # Errors
    ///
    /// As [`Queue::send`].
    pub fn send(&self, packet: &[u8]) -> Result<usize> {
        self.queues[0].send(packet)
    }

    /// Sends one packet without waiting; see [`Queue::try_send`].
    ///
    /// # Errors
    ///
    /// As [`Queue::send`].
    pub fn try_send(&self, packet: &[u8]) -> Result<Option<usize>> {
        self.queues[0].try_send(packet)
    }

    /// Sends one packet, waiting at most `timeout` for room; see [`Queue::send_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Queue::send`].
    pub fn send_timeout(&self, packet: &[u8], timeout: Duration) -> Result<Option<usize>> {
        self.queues[0].send_timeout(packet, timeout)
    }

    /// Removes the interface, persistent or not (RTM_DELLINK in its namespace), and wakes
    /// every thread blocked on its queues with [`ErrorKind::Closed`]. The fds are closed
    /// when the `Device` is dropped. A second call, and every later operation, gives
    /// [`ErrorKind::Closed`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] if already destroyed, [`ErrorKind::Busy`] while another thread
    /// destroys it; [`ErrorKind::PermissionDenied`] if RTM_DELLINK needs CAP_NET_ADMIN (the
    /// device, no longer persistent, then goes when the `Device` is dropped).
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
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy, [`ErrorKind::Busy`] while the device is active,
    /// [`ErrorKind::Unsupported`] for a single-queue device; from TUNSETIFF,
    /// [`ErrorKind::PermissionDenied`] (CAP_NET_ADMIN, or the device's owner or group) or
    /// [`ErrorKind::FlagMismatch`]. Another namespace needs CAP_SYS_ADMIN to enter.
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
        if !self.shared.flags().contains(Flags::MULTI_QUEUE) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "attach queue",
                "not a multi-queue device (build it with multi_queue)",
            )
            .on(self.name()));
        }
        let flags = self.shared.flags();
        let name = self.name();
        let (fd, _) = self.namespace().run(|| attach(name, flags, flags))??;
        // By name: the device must still be the one this handle owns (not deleted and
        // re-created from outside meanwhile).
        let now = self.link()?.netlink().link_by_name(name)?;
        if now.index != self.index() {
            return Err(Error::new(
                ErrorKind::Gone,
                "attach queue",
                "the device was deleted and a new one of the same name made meanwhile",
            )
            .on(name));
        }
        let queue = Queue::new(fd, Arc::clone(&self.shared));
        // On the path its siblings take (io_uring where allowed).
        if self
            .queues
            .iter()
            .any(|q| q.io_path() == crate::queue::IoPath::IoUring)
        {
            let _ = queue.use_io_uring();
        }
        Ok(queue)
    }

    /// Switches to active mode (the original's `{active, true}`): one reader thread per queue
    /// delivers every packet to the returned [`Packets`], the owner's inbox, with `capacity`
    /// recycled 64 KiB buffers per queue bounding memory. See the [`active`](crate::active)
    /// module for flow control and ownership.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Busy`] if already active or a queue is on io_uring
    /// ([`Queue::use_io_uring`]), [`ErrorKind::InvalidInput`] for a `capacity`
    /// outside 1 to 65536, [`ErrorKind::Closed`] after destroy; [`ErrorKind::Os`] if a queue
    /// fd cannot be duplicated or a reader thread cannot be started.
    pub fn activate(&self, capacity: usize) -> Result<Packets> {
        self.activate_with(capacity, Active::On)
    }

    /// Like [`activate`](Device::activate), starting in `mode` (e.g. `Active::Off` to arm the
    /// readers without delivering yet).
    ///
    /// # Errors
    ///
    /// As [`activate`](Device::activate).
    pub fn activate_with(&self, capacity: usize, mode: Active) -> Result<Packets> {
        self.check_open("activate")?;
        if let Some(i) = self
            .queues
            .iter()
            .position(|q| q.io_path() == crate::queue::IoPath::IoUring)
        {
            return Err(Error::new(
                ErrorKind::Busy,
                "activate",
                format!("queue {i} reads through io_uring (use_io_uring): active mode reads the queues itself"),
            )
            .on(self.name()));
        }
        let fds = self
            .queues
            .iter()
            .map(|q| q.as_fd().try_clone_to_owned())
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::os("dup", e).on(self.name()))?;
        active::activate(&self.shared, fds, capacity, mode)
    }

    /// Changes the active-mode delivery (the original's `setopt(Ref, {active, ...})`): `Off`
    /// pauses and returns once no reader takes packets any more; `On` resumes; `Once` and
    /// `Count(n)` deliver that many packets, then pause. Setting the current mode is a no-op.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] if the device is not active, [`ErrorKind::Closed`] after
    /// destroy; [`ErrorKind::Busy`] if a reader does not finish its packet within 5 s (the
    /// new mode is in force all the same).
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
        // While the active-mode inbox exists, it is an owner too: its readers keep delivering
        // (they hold duplicates of the fds) and the device goes when the inbox goes.
        // Otherwise stop any readers and wait, so the fds close with ours and a
        // non-persistent device is gone when this returns.
        if !self.shared.control.inbox() {
            self.shared.control.stop_and_join();
        }
    }
}

/// [`Device::from_fd`]: adopts an fd attached to a TUN/TAP device.
impl TryFrom<OwnedFd> for Device {
    type Error = Error;

    fn try_from(fd: OwnedFd) -> Result<Device> {
        Device::from_fd(fd)
    }
}

impl AsFd for Device {
    /// The first queue's fd (the original's `getfd/1`), for use with `poll`, an event loop, or
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
