//! The device's TUN ioctls: persistence, owner and group, link type, receive filters
//! (MAC list, classic BPF, eBPF), carrier, send buffer, offloads and the virtio-net header,
//! its namespace.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;

use super::Device;
use crate::addr::MacAddr;
use crate::error::{Error, ErrorKind, Result};
use crate::flags::{Kind, Offload};
use crate::sys;

impl Device {
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
}
