//! [`Device`]: one owned TUN/TAP device (the Erlang original's `tuncer`), made by
//! [`Builder`](crate::Builder) or from parts ([`Device::from_fd`], [`Device::from_parts`]).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::active::{self, Active, Packets};
use crate::addr::{Cidr, MacAddr};
use crate::error::{Error, ErrorKind, Result};
use crate::flags::{Flags, Kind, Offload};
use crate::netlink::{Address, Link, LinkInfo, Netlink};
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
        Ok(Device { queues, shared })
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

    /// Makes the device outlive its fds (TUNSETPERSIST, value by value).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy, [`ErrorKind::Gone`] if the device was deleted
    /// from outside.
    pub fn set_persist(&self, persist: bool) -> Result<()> {
        self.ioctl("TUNSETPERSIST", |fd| sys::tun_set_persist(fd, persist))
    }

    /// Lets user `uid` attach without CAP_NET_ADMIN (TUNSETOWNER with the uid as the value).
    ///
    /// The kernel has no way back to "no owner" (it refuses -1), and any holder of the fd may
    /// call this. A device with neither owner nor group can be opened by every local user;
    /// to have the owner in place before anyone can open the device, use
    /// [`Builder::owner`](crate::Builder::owner).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy, [`ErrorKind::Gone`] if the device was deleted
    /// from outside; [`ErrorKind::Os`] (EINVAL) for a uid the caller's user namespace does
    /// not map, such as `u32::MAX`.
    pub fn set_owner(&self, uid: u32) -> Result<()> {
        self.ioctl("TUNSETOWNER", |fd| sys::tun_set_owner(fd, uid))
    }

    /// Lets group `gid` attach without CAP_NET_ADMIN (TUNSETGROUP with the gid as the value).
    /// As for [`set_owner`](Device::set_owner), there is no way back to "no group"; with
    /// both set, a user must match both.
    ///
    /// # Errors
    ///
    /// As [`set_owner`](Device::set_owner), for a gid.
    pub fn set_group(&self, gid: u32) -> Result<()> {
        self.ioctl("TUNSETGROUP", |fd| sys::tun_set_group(fd, gid))
    }

    /// Sets the link type (TUNSETLINK, an `ARPHRD_*` value); the device must be down.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Busy`] while the device is up, [`ErrorKind::Closed`] after destroy,
    /// [`ErrorKind::Gone`] if the device was deleted from outside.
    pub fn set_link_type(&self, link_type: u16) -> Result<()> {
        self.ioctl("TUNSETLINK", |fd| sys::tun_set_link(fd, link_type))
    }

    /// Sets a tap's receive filter (TUNSETTXFILTER: the original's TODO "tun filtering"): only
    /// frames to these destination MACs (and, with `all_multicast`, every multicast frame)
    /// reach the reader. An empty list with `all_multicast == false` removes the filter.
    ///
    /// The kernel matches at most 8 unicast addresses exactly (more would silently disable
    /// the filter, so they are refused); multicast addresses go to its hash filter.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for more than 8 unicast addresses (before any system
    /// call), [`ErrorKind::Closed`] after destroy, [`ErrorKind::Gone`] if the device was
    /// deleted from outside; EINVAL ([`ErrorKind::Os`]) on a tun device.
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
        // The kernel matches the first 8 entries exactly and hashes the rest, where a
        // unicast address would switch the filter off: unicast first.
        let raw: Vec<[u8; 6]> = macs
            .iter()
            .filter(|m| m.0[0] & 1 == 0)
            .chain(macs.iter().filter(|m| m.0[0] & 1 != 0))
            .map(|m| m.0)
            .collect();
        self.ioctl("TUNSETTXFILTER", |fd| {
            sys::tun_set_tx_filter(fd, all_multicast, &raw)
        })
    }

    /// Attaches a classic BPF program to every queue of a tap device (TUNATTACHFILTER): the
    /// kernel then hands over only the frames the program passes; see
    /// [`filter`](crate::filter) for what it runs on. Replaces a program attached before;
    /// the kernel keeps it for queues attached later.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an empty program or one longer than
    /// [`MAX_INSTRUCTIONS`](crate::filter::MAX_INSTRUCTIONS), or a tun device (the kernel
    /// takes classic filters on taps only); the kernel's refusal of an invalid program
    /// (EINVAL).
    pub fn attach_filter(&self, program: &[crate::filter::Instruction]) -> Result<()> {
        if program.is_empty() || program.len() > crate::filter::MAX_INSTRUCTIONS {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "TUNATTACHFILTER",
                format!(
                    "a program has 1 to {} instructions, not {}",
                    crate::filter::MAX_INSTRUCTIONS,
                    program.len()
                ),
            )
            .on(self.name()));
        }
        if self.kind() != Kind::Tap {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "TUNATTACHFILTER",
                "the kernel takes classic filters on tap devices only (use set_filter_ebpf on a tun)",
            )
            .on(self.name()));
        }
        let program: Vec<libc::sock_filter> = program
            .iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        self.ioctl("TUNATTACHFILTER", |fd| sys::tun_attach_filter(fd, &program))
    }

    /// Detaches the classic filter (TUNDETACHFILTER): every frame reaches the readers again.
    ///
    /// # Errors
    ///
    /// The kernel's refusal (EINVAL on a tun device).
    pub fn detach_filter(&self) -> Result<()> {
        self.ioctl("TUNDETACHFILTER", sys::tun_detach_filter)
    }

    /// Sets an eBPF socket-filter program, by its fd, on the device (TUNSETFILTEREBPF), or
    /// removes it with `None`. The program stays the caller's: the kernel takes its own
    /// reference. Works on tun and tap devices.
    ///
    /// # Errors
    ///
    /// The kernel's refusal: EBADF or EINVAL for an fd that is not a socket-filter program.
    pub fn set_filter_ebpf(&self, program: Option<BorrowedFd<'_>>) -> Result<()> {
        let raw = program.map_or(-1, |p| p.as_raw_fd());
        self.ioctl("TUNSETFILTEREBPF", |fd| sys::tun_set_filter_ebpf(fd, raw))
    }

    /// Sets an eBPF queue-steering program, by its fd (TUNSETSTEERINGEBPF): it picks the
    /// queue of a multi-queue device each packet goes to. `None` removes it.
    ///
    /// # Errors
    ///
    /// As [`set_filter_ebpf`](Device::set_filter_ebpf).
    pub fn set_steering_ebpf(&self, program: Option<BorrowedFd<'_>>) -> Result<()> {
        let raw = program.map_or(-1, |p| p.as_raw_fd());
        self.ioctl("TUNSETSTEERINGEBPF", |fd| {
            sys::tun_set_steering_ebpf(fd, raw)
        })
    }

    /// Sets the carrier (TUNSETCARRIER): without it the link is `NO-CARRIER`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy, [`ErrorKind::Gone`] if the device was deleted
    /// from outside; [`ErrorKind::PermissionDenied`] turning it on while no queue is
    /// enabled; EINVAL ([`ErrorKind::Os`]) on a kernel without TUNSETCARRIER.
    pub fn set_carrier(&self, carrier: bool) -> Result<()> {
        self.ioctl("TUNSETCARRIER", |fd| sys::tun_set_carrier(fd, carrier))
    }

    /// The send buffer of the device's sockets (TUNGETSNDBUF).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy, [`ErrorKind::Gone`] if the device was deleted
    /// from outside.
    pub fn sndbuf(&self) -> Result<i32> {
        self.ioctl("TUNGETSNDBUF", sys::tun_get_sndbuf)
    }

    /// Sets the send buffer (TUNSETSNDBUF); must be positive.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] if `size` is not positive (before any system call);
    /// otherwise as [`sndbuf`](Device::sndbuf).
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

    /// Tells the kernel which offloads the reader handles (TUNSETOFFLOAD, by value), and
    /// records the mask for [`offload`](Device::offload) and the batch calls. Prefer
    /// [`negotiate_offload`](Device::negotiate_offload), which also bounds the kernel's
    /// super-packets to what a batch splits in one go.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy, [`ErrorKind::Gone`] if the device was deleted
    /// from outside; EINVAL ([`ErrorKind::Os`]) if the kernel does not know an offload asked
    /// for (nothing is changed then).
    pub fn set_offload(&self, offload: Offload) -> Result<()> {
        self.ioctl("TUNSETOFFLOAD", |fd| {
            sys::tun_set_offload(fd, offload.bits())
        })?;
        self.shared.offload.store(offload.bits(), Ordering::Release);
        Ok(())
    }

    /// Negotiates TUNSETOFFLOAD: asks for `want` (with `CSUM`, which TSO and USO need),
    /// then without USO, then without TSO, and records what the kernel accepted. With
    /// `Offload::empty()` the mask is reset: the kernel hands over plain packets.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy, [`ErrorKind::Gone`] if the device was deleted
    /// from outside (a refused mask is retried smaller, not an error). Once TSO or USO is
    /// accepted, `gso_max_segs` is set over rtnetlink: [`ErrorKind::PermissionDenied`]
    /// without CAP_NET_ADMIN, with the new mask already in force.
    pub fn negotiate_offload(&self, want: Offload) -> Result<Offload> {
        let segmenting =
            Offload::TSO4 | Offload::TSO6 | Offload::TSO_ECN | Offload::USO4 | Offload::USO6;
        let mut want = want;
        if want.bits() & segmenting.bits() != 0 {
            want |= Offload::CSUM;
        }
        let no_uso =
            Offload::from_bits_retain(want.bits() & !(Offload::USO4 | Offload::USO6).bits());
        let csum_only = Offload::from_bits_retain(want.bits() & Offload::CSUM.bits());
        let mut last = None;
        // Segmentation offloads need the kernel to send super-packets of at most 64
        // segments (what a batch splits in one go): `gso_max_segs`, which only CAP_NET_ADMIN
        // can set. Without it (an unprivileged owner), segmentation is not asked for.
        let limited = want.bits() & segmenting.bits() == 0
            || self
                .link()
                .and_then(|l| l.set_gso_max_segs(crate::offload::MAX_SEGMENTS as u32))
                .is_ok();
        let attempts: &[Offload] = if limited {
            &[want, no_uso, csum_only, Offload::empty()]
        } else {
            &[csum_only, Offload::empty()]
        };
        for &attempt in attempts {
            match self.set_offload(attempt) {
                Ok(()) => {
                    self.shared.offload.store(attempt.bits(), Ordering::Release);
                    return Ok(attempt);
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::new(ErrorKind::Unsupported, "TUNSETOFFLOAD", "refused")))
    }

    /// The offloads in force: what [`negotiate_offload`](Device::negotiate_offload) (or the
    /// builder's [`offload`](crate::Builder::offload)) got the kernel to accept.
    pub fn offload(&self) -> Offload {
        Offload::from_bits_retain(self.shared.offload.load(Ordering::Acquire))
    }

    /// The virtio-net header size of a `vnet_hdr` device (TUNGETVNETHDRSZ).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy, [`ErrorKind::Gone`] if the device was deleted
    /// from outside.
    pub fn vnet_hdr_size(&self) -> Result<i32> {
        self.ioctl("TUNGETVNETHDRSZ", sys::tun_get_vnet_hdr_sz)
    }

    /// Sets the virtio-net header size (TUNSETVNETHDRSZ; at least 10).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy, [`ErrorKind::Gone`] if the device was deleted
    /// from outside; EINVAL ([`ErrorKind::Os`]) from the kernel for a size below 10.
    pub fn set_vnet_hdr_size(&self, size: i32) -> Result<()> {
        self.ioctl("TUNSETVNETHDRSZ", |fd| sys::tun_set_vnet_hdr_sz(fd, size))?;
        self.shared.set_vnet_hdr_len(size.max(0) as usize);
        Ok(())
    }

    /// A close-on-exec fd for the device's network namespace (TUNGETDEVNETNS; needs
    /// CAP_NET_ADMIN).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::PermissionDenied`] without CAP_NET_ADMIN over the device's namespace,
    /// [`ErrorKind::Closed`] after destroy, [`ErrorKind::Gone`] if the device was deleted
    /// from outside; EINVAL ([`ErrorKind::Os`]) on kernels before 5.2.
    pub fn namespace_fd(&self) -> Result<OwnedFd> {
        self.ioctl("TUNGETDEVNETNS", sys::tun_get_dev_netns)
    }

    /// The rtnetlink handle of the device, for configuration this type does not wrap.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy.
    pub fn link(&self) -> Result<&Link> {
        self.check_open("configure")?;
        Ok(&self.shared.link)
    }

    /// The kernel's view of the device: flags, MTU, MAC, `IFLA_TUN_*` attributes.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::info`] (a device deleted
    /// from outside is [`ErrorKind::NotFound`] there, not [`ErrorKind::Gone`]).
    pub fn info(&self) -> Result<LinkInfo> {
        self.link()?.info()
    }

    /// Brings the device up (`IFF_UP`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::up`].
    pub fn up(&self) -> Result<()> {
        self.link()?.up()
    }

    /// Brings the device down; its addresses stay (the original's `down/1`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::down`].
    pub fn down(&self) -> Result<()> {
        self.link()?.down()
    }

    /// Adds an address; see [`Link::add_address`]. The original's `up(Ref, IP)` is
    /// `add_address(ip)` then `up()`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::add_address`].
    pub fn add_address(&self, cidr: Cidr) -> Result<()> {
        self.link()?.add_address(cidr)
    }

    /// Removes an address.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::del_address`].
    pub fn del_address(&self, cidr: Cidr) -> Result<()> {
        self.link()?.del_address(cidr)
    }

    /// The device's addresses.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::addresses`].
    pub fn addresses(&self) -> Result<Vec<Address>> {
        self.link()?.addresses()
    }

    /// Sets the point-to-point peer of the address `local` (the Erlang original's
    /// `dstaddr/2`, IPv4 and IPv6); see [`Link::set_peer`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::set_peer`].
    pub fn set_peer(&self, local: std::net::IpAddr, peer: std::net::IpAddr) -> Result<()> {
        self.link()?.set_peer(local, peer)
    }

    /// Sets the broadcast address of the IPv4 address `local` (the Erlang original's
    /// `broadcast/2`); see [`Link::set_broadcast`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::set_broadcast`].
    pub fn set_broadcast(
        &self,
        local: std::net::Ipv4Addr,
        broadcast: std::net::Ipv4Addr,
    ) -> Result<()> {
        self.link()?.set_broadcast(local, broadcast)
    }

    /// The MTU.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::mtu`].
    pub fn mtu(&self) -> Result<u32> {
        self.link()?.mtu()
    }

    /// Sets the MTU.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::set_mtu`].
    pub fn set_mtu(&self, mtu: u32) -> Result<()> {
        self.link()?.set_mtu(mtu)
    }

    /// Sets a tap's MAC address.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::set_mac`].
    pub fn set_mac(&self, mac: MacAddr) -> Result<()> {
        self.link()?.set_mac(mac)
    }

    /// Sets the transmit queue length.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::set_txqueuelen`].
    pub fn set_txqueuelen(&self, len: u32) -> Result<()> {
        self.link()?.set_txqueuelen(len)
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
        Ok(Queue::new(fd, Arc::clone(&self.shared)))
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
