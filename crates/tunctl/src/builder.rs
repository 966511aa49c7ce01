//! [`Builder`]: creates a device, or attaches to an existing one, after checking the
//! kernel's view of it; makes a [`Device`].

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::device::Device;
use crate::error::{Error, ErrorKind, Result};
use crate::flags::{Flags, Kind, Offload};
use crate::name;
use crate::netlink::{hardens, owner_changes, Link, LinkInfo, Netlink};
use crate::netns::Namespace;
use crate::queue::{attach, MAX_QUEUES};
use crate::sys;

/// What the sealed creation did.
enum Sealed {
    /// Made in a private namespace and moved in: the queues, the target's netlink socket,
    /// the name and the index.
    Made(Vec<OwnedFd>, Netlink, String, u32),
    /// The name is taken in the target.
    Exists,
    /// No private namespace allowed (no CAP_SYS_ADMIN) for a single-queue device: made in
    /// place, which is as safe (nobody can attach a second queue while it is held).
    InPlace,
}

/// How [`Builder`] treats an existing device of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Create, or attach to an existing (persistent) device: TUNSETIFF's own semantics.
    Create,
    /// Attach only: the device must exist.
    Open,
}

/// Builds a [`Device`]. Defaults follow the Erlang original: tap, no packet-information header,
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
    harden: Option<bool>,
    /// `None`: as [`crate::IO_URING_ENV`] says (off unless it turns it on).
    io_uring: Option<bool>,
    addresses: Vec<crate::addr::Cidr>,
    up: bool,
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
            harden: None,
            io_uring: None,
            addresses: Vec::new(),
            up: false,
        }
    }
}

impl Device {
    /// A [`Builder`] with the Erlang original's defaults (tap, no_pi, one queue,
    /// kernel-chosen name).
    pub fn builder() -> Builder {
        Builder::default()
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

    /// A tun (layer 3, IP packets) device. `tun`, `tap` and `kind` set the same option: the
    /// last call wins.
    pub fn tun(self) -> Builder {
        self.kind(Kind::Tun)
    }

    /// A tap (layer 2, Ethernet frames) device: the default. The last of `tun`, `tap` and
    /// `kind` wins.
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

    /// `IFF_ONE_QUEUE`: accepted for compatibility with the Erlang original; the kernel has ignored it
    /// since Linux 3.8 (the device queue is the qdisc's).
    pub fn one_queue(mut self, on: bool) -> Builder {
        self.one_queue = on;
        self
    }

    /// `IFF_MULTI_QUEUE` with `queues` fds (1 to 256), one [`Queue`](crate::Queue) each.
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
    /// ([`crate::helper`]) when the kernel refuses for lack of privilege: TUNSETIFF, or
    /// entering a named [`namespace`](Builder::namespace). The helper then also adds the
    /// builder's [`address`](Builder::address)es and brings the device [`up`](Builder::up)
    /// (a helper-made device cannot be configured directly without CAP_NET_ADMIN; later
    /// changes go through [`helper::run`](crate::helper::run) with an `Op::Set` request).
    /// Off by default: library code never starts a privileged program unless asked. Even
    /// when on, a process running as root never falls back (the kernel's refusal is
    /// reported), and only a helper installed in a trusted place is run
    /// ([`crate::helper::find`]).
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

    /// Whether the device is hardened against its holder ([`Link::harden`], IPv6 kept on):
    /// router advertisements, redirects and source routes ignored, spoofed IPv4 sources
    /// dropped. On by default for a device whose file descriptor goes to someone else: an
    /// [`owner`](Builder::owner) or [`group`](Builder::group) other than root. Whoever holds
    /// the fd writes packets that the namespace's stack receives from the device, so without
    /// it an owner could install a default route, an on-link prefix and an address in the
    /// namespace with one router advertisement. `harden(false)` is the explicit opt-out (a
    /// device whose holder is trusted to configure the namespace by router advertisement);
    /// `harden(true)` asks for it on any device. Applied after the device is in its
    /// namespace and before `create`/`open` returns, so before anyone can bring it up.
    pub fn harden(mut self, on: bool) -> Builder {
        self.harden = Some(on);
        self
    }

    /// An address to add once the device exists (repeatable); see [`Link::add_address`].
    /// Through the helper, the helper adds it (if its policy allows).
    pub fn address(mut self, cidr: crate::addr::Cidr) -> Builder {
        self.addresses.push(cidr);
        self
    }

    /// Brings the device up once it exists and has its addresses (`IFF_UP`). Through the
    /// helper, the helper does.
    pub fn up(mut self, on: bool) -> Builder {
        self.up = on;
        self
    }

    /// Puts every queue on io_uring ([`Queue::use_io_uring`](crate::Queue::use_io_uring):
    /// packets read ahead by a multishot read, batches written with one system call), where
    /// the kernel allows it; a queue where it does not stays on `readv`/`pwritev2`, fully
    /// working. [`Queue::io_path`](crate::Queue::io_path) tells which path each queue took.
    /// Off by default (unless `TUNCTL_IO_URING=1`, see [`crate::IO_URING_ENV`]); needs the
    /// `io-uring` feature (without it, every queue stays on system calls).
    pub fn io_uring(mut self, on: bool) -> Builder {
        self.io_uring = Some(on);
        self
    }

    /// Whether the device gets settings that must be in place before it is visible.
    fn seals(&self) -> bool {
        self.owner.is_some() || self.group.is_some() || self.persist || self.alias.is_some()
    }

    /// Kind, packet information, vnet_hdr and multi-queue as an existing device has them
    /// (its kernel view, e.g. from [`Netlink::tun_links`]): what attaching to it needs.
    pub fn like(mut self, tun: &crate::TunInfo) -> Builder {
        let flags = tun.flags();
        self.kind = tun.kind;
        self.packet_info = !flags.contains(Flags::NO_PI);
        self.vnet_hdr = flags.contains(Flags::VNET_HDR);
        self.multi_queue = flags.contains(Flags::MULTI_QUEUE);
        self
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
    /// # Errors
    ///
    /// Checked before TUNSETIFF: an invalid name or queue count ([`ErrorKind::InvalidInput`]);
    /// the name taken by a device that is not TUN/TAP, or is TUN/TAP of another kind or flags
    /// ([`ErrorKind::FlagMismatch`]); a missing namespace ([`ErrorKind::NotFound`]). From
    /// the kernel: [`ErrorKind::Busy`] (in use, or exists with `exclusive`),
    /// [`ErrorKind::PermissionDenied`] (CAP_NET_ADMIN or ownership for TUNSETIFF; CAP_SYS_ADMIN
    /// to enter another namespace or to seal a multi-queue device). With
    /// [`helper`](Builder::helper), that refusal may become [`crate::helper::create`]'s errors.
    pub fn create(self) -> Result<Device> {
        match self.clone().build(Mode::Create) {
            // Only the kernel's refusal to create (or to enter the namespace to create in):
            // a refusal after a device was made (and removed again) is no reason to make a
            // second one through the helper.
            Err(e)
                if self.helper
                    && e.kind() == ErrorKind::PermissionDenied
                    && (e.operation() == "TUNSETIFF"
                        || (e.operation() == "setns"
                            && matches!(self.namespace, Namespace::Named(_))))
                    && !sys::is_root()
                    && self.group.is_none()
                    && self.alias.is_none()
                    && self.owner.is_none_or(|uid| uid == sys::real_uid()) =>
            {
                // The helper's device gets what needs no privilege, as ours does.
                self.via_helper(e).inspect(|dev| self.rings(dev))
            }
            other => other,
        }
    }

    /// Puts the device's queues on io_uring if asked (or `TUNCTL_IO_URING=1`).
    fn rings(&self, dev: &Device) {
        if self
            .io_uring
            .unwrap_or_else(crate::queue::io_uring_turned_on)
        {
            for q in dev.queues() {
                // Refused (blocked, old kernel, built without the feature): the queue keeps
                // the system-call path, which `io_path` reports.
                let _ = q.use_io_uring();
            }
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
        req.addrs = self.addresses.clone();
        req.up = self.up;
        req.netns = Netns::try_from(&self.namespace)?;
        crate::helper::create(&req)
    }

    /// Attaches to an existing device (typically persistent) with these flags, which must be
    /// its own: the kernel would otherwise silently change them for every user.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] without a name or for an invalid one,
    /// [`ErrorKind::NotFound`] if the device (or the namespace) does not exist,
    /// [`ErrorKind::FlagMismatch`] if its kind or flags differ; [`ErrorKind::Busy`] and
    /// [`ErrorKind::PermissionDenied`] as for [`create`](Builder::create) (never the helper).
    pub fn open(self) -> Result<Device> {
        self.build(Mode::Open)
    }

    fn build(mut self, mode: Mode) -> Result<Device> {
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
        // A namespace given by path (a PrivateNamespace's /proc/self/fd/N, another process's
        // /proc/PID/ns/net) is held by an fd of the device's own, and reached through it from
        // now on: the path may name another namespace once its fd is closed or its process
        // gone, and the device re-enters its namespace later (attach_queue, sysctls).
        let mut held = match &self.namespace {
            Namespace::Path(_) => {
                let fd = self.namespace.open().map_err(|e| e.on_default(&label))?;
                if let Some(fd) = &fd {
                    self.namespace = Namespace::path(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                }
                fd
            }
            _ => None,
        };
        let ns = self.namespace.clone();
        let sealed = if mode == Mode::Create && self.seals() {
            self.create_sealed(flags)
                .map_err(|e| e.on_default(&label))?
        } else {
            Sealed::InPlace
        };
        let mut plain = |mode: Mode| -> Result<(Device, bool, bool)> {
            let (queues, netlink, kname, index, existed) = ns
                .run(|| self.attach_all(mode, flags))
                .and_then(|r| r)
                .map_err(|e| e.on_default(&label))?;
            let dev = Device::assemble(
                queues,
                Link::from_index(netlink, index, kname),
                flags,
                held.take(),
            )?;
            Ok((dev, true, !existed))
        };
        let (dev, attached, created) = match sealed {
            Sealed::Made(queues, netlink, kname, index) => (
                Device::assemble(
                    queues,
                    Link::from_index(netlink, index, kname),
                    flags,
                    held.take(),
                )?,
                false,
                true,
            ),
            // The name is taken: attach only, never create in its place (it may vanish in
            // between, and a device created here would be visible before its owner is set).
            Sealed::Exists if self.exclusive => {
                return Err(Error::new(
                    ErrorKind::Busy,
                    "TUNSETIFF",
                    "exists already and exclusive (tun_excl) was asked for",
                )
                .on(label))
            }
            Sealed::Exists => plain(Mode::Open)?,
            Sealed::InPlace => plain(mode)?,
        };
        let finish = || -> Result<()> {
            let link = dev.link()?;
            // Hardened before its new owner or group can attach (a made device was sealed
            // in its private namespace, and the move here reset these settings; an attached
            // one gets its owner only below). An owner or group it has already is no change.
            let (owner, group) = match (attached, self.owner.or(self.group)) {
                (true, Some(_)) => match link.info()?.tun {
                    Some(tun) => owner_changes(&tun, self.owner, self.group),
                    None => (self.owner, self.group),
                },
                _ => (self.owner, self.group),
            };
            if hardens(self.harden, owner, group) {
                link.harden(true).map_err(|e| {
                    e.add_detail(
                        "hardening a device whose fd goes to another user (Builder::harden(false) skips it)",
                    )
                })?;
            }
            if attached {
                // An existing device (or one made in place without CAP_SYS_ADMIN,
                // single-queue and so held by us alone): the settings in the order that never
                // leaves a persistent device without its owner.
                self.seal(&dev)?;
            }
            if flags.contains(Flags::VNET_HDR) {
                dev.negotiate_offload(self.offload)?;
            }
            for cidr in &self.addresses {
                match link.add_address(*cidr) {
                    // An existing device that has it already: as asked.
                    Err(e) if e.kind() == ErrorKind::AlreadyExists && !created => {}
                    other => other?,
                }
            }
            if self.up {
                link.up()?;
            }
            Ok(())
        };
        self.rings(&dev);
        if let Err(e) = finish() {
            // A device this call made goes again, persistent or not: a failed create leaves
            // nothing behind.
            if created {
                let _ = dev.destroy();
            }
            return Err(e);
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
    fn create_sealed(&self, flags: Flags) -> Result<Sealed> {
        let target = Netlink::open_in(&self.namespace)?;
        let request = self
            .name
            .clone()
            .unwrap_or_else(|| format!("{}%d", self.kind));
        if !request.contains('%') {
            match target.link_by_name(&request) {
                Ok(_) => return Ok(Sealed::Exists),
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
            return Ok(Sealed::InPlace);
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
                ErrorKind::Other,
                "create",
                format!(
                    "the device arrived with queues {:?}, owner {:?}, group {:?}, alias {:?}: not as made; removed",
                    queues, owner, group, info.alias
                ),
            )
            .on(kname));
        }
        // Persistent only now, once the device is where it belongs and as made: a process
        // killed before this leaves nothing (the device goes with its fds).
        if self.persist {
            if let Err(e) = sys::tun_set_persist(fds[0].as_fd(), true) {
                let _ = target.delete_link(info.index);
                return Err(Error::os("TUNSETPERSIST", e).on(kname));
            }
        }
        Ok(Sealed::Made(fds, target, kname, info.index))
    }

    /// Runs on a thread inside a fresh private namespace: creates the device, sets owner,
    /// group and alias there, and moves it into `target` as `request`. A fixed name is
    /// created as itself, so the move fails whole (EEXIST) if the name is taken in the target;
    /// a template is created under a temporary name that cannot clash there and resolved in
    /// the same message. On failure the device is deleted (and would die with the namespace
    /// anyway).
    fn populate_private(
        &self,
        request: &str,
        flags: Flags,
        target: BorrowedFd<'_>,
    ) -> Result<Vec<OwnedFd>> {
        use std::hash::{BuildHasher, Hasher};
        let temp = if request.contains('%') {
            // Unique in the target too, so the move never clashes before the rename.
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            format!("tcs{:012x}", h.finish() & 0xffff_ffff_ffff)
        } else {
            request.to_string()
        };
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
    /// Returns the queues, the netlink socket, the kernel's name, the index, and whether
    /// the device existed before.
    #[allow(clippy::type_complexity)]
    fn attach_all(
        &self,
        mode: Mode,
        flags: Flags,
    ) -> Result<(Vec<OwnedFd>, Netlink, String, u32, bool)> {
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
        if let Some(info) = &existing {
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
        Ok((fds, netlink, kname, index, existing.is_some()))
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
