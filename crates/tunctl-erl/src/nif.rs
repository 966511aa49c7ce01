//! The functions of the Erlang module `tunctl_nif`.
//!
//! A device argument ("target") is the resource `create/2` returned, the pid of a `tuncer`
//! process bound to one, or an fd number `getfd/1` gave; a closed or unknown one is
//! `{error, ebadf}`. Link operations also take an interface name (a binary), found in the
//! caller's namespace, as the original's `tunctl` module did. Anything else is `badarg`.
//! Functions that use netlink or may enter a namespace run on dirty I/O schedulers; reads and
//! writes never wait, so they run on normal ones.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rustler::{
    Atom, Binary, Encoder, Env, Error as NifError, LocalPid, NewBinary, NifResult, ResourceArc,
    Term,
};
use tunctl::offload::{gso_split, GroTable, GsoType, VirtioNetHdr, MAX_SEGMENTS};
use tunctl::{Cidr, Device, Flags, Kind, Link, Namespace, Offload};

use crate::atoms;
use crate::core::{self, Core, Handle};
use crate::reader::{Mode, MAX_PACKET};
use crate::reason;

type Res<'a> = NifResult<Term<'a>>;

fn ok(env: Env) -> Res {
    Ok(atoms::ok().encode(env))
}

fn ok_with<'a>(env: Env<'a>, value: impl Encoder) -> Res<'a> {
    Ok((atoms::ok(), value).encode(env))
}

fn fail<'a>(env: Env<'a>, err: &tunctl::Error) -> Res<'a> {
    Ok(reason::error(env, err))
}

fn fail_atom<'a>(env: Env<'a>, why: &str) -> Res<'a> {
    Ok(reason::error_atom(env, why))
}

/// `ok`, or `{error, Reason}`.
fn done<'a>(env: Env<'a>, r: tunctl::Result<()>) -> Res<'a> {
    match r {
        Ok(()) => ok(env),
        Err(e) => fail(env, &e),
    }
}

/// The open core a target names: `Err(None)` for one that is closed or unknown
/// (`{error, ebadf}`), `Err(Some(badarg))` for a term that is no target at all.
fn core_of(term: Term) -> Result<Arc<Core>, Option<NifError>> {
    if let Ok(h) = term.decode::<ResourceArc<Handle>>() {
        return h.core().ok_or(None);
    }
    if let Ok(pid) = term.decode::<LocalPid>() {
        return core::by_pid(&pid).filter(|c| !c.is_closed()).ok_or(None);
    }
    if let Ok(fd) = term.decode::<i64>() {
        return i32::try_from(fd)
            .ok()
            .and_then(core::by_fd)
            .filter(|c| !c.is_closed())
            .ok_or(None);
    }
    Err(Some(NifError::BadArg))
}

/// Runs `f` on the core `term` names, or answers `{error, ebadf}` / raises `badarg`.
fn with_core<'a>(env: Env<'a>, term: Term<'a>, f: impl FnOnce(&Arc<Core>) -> Res<'a>) -> Res<'a> {
    match core_of(term) {
        Ok(core) => f(&core),
        Err(None) => fail_atom(env, "ebadf"),
        Err(Some(e)) => Err(e),
    }
}

fn string_of(term: Term) -> NifResult<String> {
    if let Ok(b) = term.decode::<Binary>() {
        return String::from_utf8(b.as_slice().to_vec()).map_err(|_| NifError::BadArg);
    }
    term.decode::<String>().map_err(|_| NifError::BadArg)
}

fn offload_of(term: Term) -> NifResult<Offload> {
    let mut want = Offload::empty();
    for flag in term.decode::<Vec<Atom>>()? {
        want |= match flag {
            f if f == atoms::csum() => Offload::CSUM,
            f if f == atoms::tso4() => Offload::TSO4,
            f if f == atoms::tso6() => Offload::TSO6,
            f if f == atoms::tso_ecn() => Offload::TSO_ECN,
            f if f == atoms::uso4() => Offload::USO4,
            f if f == atoms::uso6() => Offload::USO6,
            _ => return Err(NifError::BadArg),
        };
    }
    Ok(want)
}

/// Creates (or attaches to) a device: `create(Name, Options)` with the options `tuncer`
/// and `tunctl` pass on (checked there): the flag atoms, `{namespace, NS}`,
/// `{offload, Flags}`, `{owner, Uid}`, `{group, Gid}`. Falls back to `tunctl-helper` when
/// the VM lacks the privilege.
#[rustler::nif(schedule = "DirtyIo")]
fn create<'a>(env: Env<'a>, name: Binary<'a>, options: Term<'a>) -> Res<'a> {
    let name = std::str::from_utf8(name.as_slice()).map_err(|_| NifError::BadArg)?;
    // The reader waits for its fd with poll(2), which a queue on io_uring leaves
    // unreadable while its ring holds packets: system calls, whatever TUNCTL_IO_URING says.
    let mut b = Device::builder().name(name).helper(true).io_uring(false);
    let (mut tun, mut tap, mut no_pi, mut vnet, mut offload) = (false, false, false, false, None);
    for opt in options.decode::<Vec<Term>>()? {
        if let Ok(flag) = opt.decode::<Atom>() {
            match flag {
                f if f == atoms::tun() => tun = true,
                f if f == atoms::tap() => tap = true,
                f if f == atoms::no_pi() => no_pi = true,
                f if f == atoms::one_queue() => b = b.one_queue(true),
                f if f == atoms::vnet_hdr() => vnet = true,
                f if f == atoms::tun_excl() => b = b.exclusive(true),
                f if f == atoms::multi_queue() => b = b.multi_queue(1),
                _ => return Err(NifError::BadArg),
            }
            continue;
        }
        let (key, value) = opt.decode::<(Atom, Term)>()?;
        match key {
            k if k == atoms::namespace() => {
                let ns = Namespace::from_arg(&string_of(value)?);
                match ns {
                    Ok(ns) => b = b.namespace(ns),
                    Err(e) => return fail(env, &e),
                }
            }
            k if k == atoms::offload() => offload = Some(offload_of(value)?),
            k if k == atoms::owner() => b = b.owner(value.decode()?),
            k if k == atoms::group() => b = b.group(value.decode()?),
            _ => return Err(NifError::BadArg),
        }
    }
    // The kernel's own rules: IFF_TUN wins over IFF_TAP; neither is EINVAL.
    b = match (tun, tap) {
        (true, _) => b.kind(Kind::Tun),
        (false, true) => b.kind(Kind::Tap),
        (false, false) => return fail_atom(env, "einval"),
    };
    b = b.packet_info(!no_pi).vnet_hdr(vnet);
    if let Some(want) = offload {
        b = b.offload(want);
    }
    let dev = match b.create() {
        Ok(dev) => dev,
        Err(e) => return fail(env, &e),
    };
    let name = dev.name().to_string();
    match Core::new(Arc::new(dev), None) {
        Ok(core) => Ok((
            atoms::ok(),
            Handle::new(core),
            name.as_bytes().to_vec_binary(env),
        )
            .encode(env)),
        Err(e) => fail(env, &tunctl::Error::from(e)),
    }
}

trait ToBinary {
    fn to_vec_binary<'a>(&self, env: Env<'a>) -> Term<'a>;
}

impl ToBinary for [u8] {
    fn to_vec_binary<'a>(&self, env: Env<'a>) -> Term<'a> {
        let mut b = NewBinary::new(env, self.len());
        b.as_mut_slice().copy_from_slice(self);
        b.into()
    }
}

/// Attaches one more queue to a multi-queue device: `{ok, Handle}`.
#[rustler::nif(schedule = "DirtyIo")]
fn attach_queue<'a>(env: Env<'a>, target: Term<'a>) -> Res<'a> {
    with_core(env, target, |core| match core.dev.attach_queue() {
        Ok(q) => match Core::new(Arc::clone(&core.dev), Some(q)) {
            Ok(c) => ok_with(env, Handle::new(c)),
            Err(e) => fail(env, &tunctl::Error::from(e)),
        },
        Err(e) => fail(env, &e),
    })
}

/// Closes a handle: the device goes unless persistent; an extra queue detaches. `ok` for a
/// handle closed already.
#[rustler::nif(schedule = "DirtyIo")]
fn close(env: Env, handle: ResourceArc<Handle>) -> Res {
    match handle.take() {
        Some(core) => done(env, core.close()),
        None => ok(env),
    }
}

/// Ties a handle to its `tuncer` process `pid` (registered, monitored, tagging messages).
#[rustler::nif]
fn bind(env: Env, handle: ResourceArc<Handle>, pid: LocalPid) -> bool {
    Handle::bind(&handle, env, pid)
}

/// The device's name.
#[rustler::nif]
fn name<'a>(env: Env<'a>, target: Term<'a>) -> Res<'a> {
    with_core(env, target, |core| {
        Ok(core.name.as_bytes().to_vec_binary(env))
    })
}

/// The fd number of the handle's queue.
#[rustler::nif]
fn getfd<'a>(env: Env<'a>, target: Term<'a>) -> Res<'a> {
    with_core(env, target, |core| Ok(core.fd().encode(env)))
}

/// One packet if one is queued, at most `len` bytes of it (the rest of a longer packet is
/// dropped, as the original's read did): `{ok, Packet}`, `{error, eagain}` when none is,
/// `{error, einval}` in active mode.
#[rustler::nif]
fn recv<'a>(env: Env<'a>, target: Term<'a>, len: i64) -> Res<'a> {
    let len = usize::try_from(len).map_err(|_| NifError::BadArg)?;
    with_core(env, target, |core| {
        if !matches!(core.reader.mode(), Mode::Off | Mode::Notify) {
            return fail_atom(env, "einval");
        }
        read_now(env, core, len)
    })
}

/// Like `recv/2`, in any mode: the original's `read/2` on the fd raced with active delivery.
#[rustler::nif]
fn read<'a>(env: Env<'a>, target: Term<'a>, len: i64) -> Res<'a> {
    let len = usize::try_from(len).map_err(|_| NifError::BadArg)?;
    with_core(env, target, |core| {
        if core.reader.mode() != Mode::Off {
            core.note_raw_read();
        }
        read_now(env, core, len)
    })
}

fn read_now<'a>(env: Env<'a>, core: &Core, len: usize) -> Res<'a> {
    if len == 0 {
        return ok_with(env, [0u8; 0].to_vec_binary(env));
    }
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let want = len.min(MAX_PACKET);
        match core.queue().try_recv(&mut buf[..want]) {
            Ok(Some(n)) => ok_with(env, buf[..n].to_vec_binary(env)),
            Ok(None) => Ok((atoms::error(), atoms::eagain()).encode(env)),
            Err(e) if e.kind() == tunctl::ErrorKind::Truncated => {
                ok_with(env, buf[..want].to_vec_binary(env))
            }
            Err(e) => fail(env, &e),
        }
    })
}

thread_local! {
    /// One receive buffer per scheduler thread.
    static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; MAX_PACKET]);
}

/// Writes one packet: `ok`, or `{error, eagain}` if the device cannot take it now, or the
/// kernel's refusal (`einval` for a malformed packet).
#[rustler::nif]
fn send<'a>(env: Env<'a>, target: Term<'a>, packet: Binary<'a>) -> Res<'a> {
    with_core(env, target, |core| {
        match core.queue().try_send(packet.as_slice()) {
            Ok(Some(n)) if n == packet.len() => ok(env),
            Ok(Some(n)) => ok_with(env, n),
            Ok(None) => Ok((atoms::error(), atoms::eagain()).encode(env)),
            Err(e) => fail(env, &e),
        }
    })
}

fn mode_of(term: Term) -> NifResult<Mode> {
    if let Ok(a) = term.decode::<Atom>() {
        return match a {
            a if a == atoms::true_() => Ok(Mode::On),
            a if a == atoms::false_() => Ok(Mode::Off),
            a if a == atoms::once() => Ok(Mode::Once),
            _ => Err(NifError::BadArg),
        };
    }
    match term.decode::<i64>()? {
        n if n <= 0 => Ok(Mode::Off),
        n => u32::try_from(n)
            .map(Mode::Count)
            .map_err(|_| NifError::BadArg),
    }
}

fn mode_term(env: Env, mode: Mode) -> Term {
    match mode {
        Mode::Off | Mode::Notify => atoms::false_().encode(env),
        Mode::On => atoms::true_().encode(env),
        Mode::Once => atoms::once().encode(env),
        Mode::Count(n) => n.encode(env),
    }
}

/// Sets the active mode (`false`, `true`, `once`, or a count) and the owner packets go to.
#[rustler::nif]
fn set_active<'a>(env: Env<'a>, target: Term<'a>, mode: Term<'a>, owner: LocalPid) -> Res<'a> {
    let mode = mode_of(mode)?;
    with_core(env, target, |core| {
        core.reader.set_owner(owner);
        match core.reader.set_mode(core, mode, None) {
            Ok(()) => ok(env),
            Err(e) => fail(env, &tunctl::Error::from(e)),
        }
    })
}

/// `{active, N}` on top of the mode now: `ok`, or `passive` when the count is 0 or less
/// (the mode is then `false`); `{error, einval}` above 32767.
#[rustler::nif]
fn add_active<'a>(env: Env<'a>, target: Term<'a>, n: i64, owner: LocalPid) -> Res<'a> {
    with_core(env, target, |core| {
        core.reader.set_owner(owner);
        match core.reader.add_count(core, n) {
            Ok(false) => ok(env),
            Ok(true) => Ok(rustler::types::atom::Atom::from_str(env, "passive")?.encode(env)),
            Err(e) => fail(env, &tunctl::Error::from(e)),
        }
    })
}

/// The active mode now: `false`, `true`, `once`, or what is left of a count.
#[rustler::nif]
fn active<'a>(env: Env<'a>, target: Term<'a>) -> Res<'a> {
    with_core(env, target, |core| Ok(mode_term(env, core.reader.mode())))
}

/// Asks for `{'$tuncer', readable}` to `pid` once a packet is queued (passive mode only).
#[rustler::nif]
fn notify<'a>(env: Env<'a>, target: Term<'a>, pid: LocalPid) -> Res<'a> {
    with_core(env, target, |core| {
        if core.reader.mode() != Mode::Off && core.reader.mode() != Mode::Notify {
            return fail_atom(env, "einval");
        }
        match core.reader.set_mode(core, Mode::Notify, Some(pid)) {
            Ok(()) => ok(env),
            Err(e) => fail(env, &tunctl::Error::from(e)),
        }
    })
}

/// TUNSETPERSIST.
#[rustler::nif]
fn persist<'a>(env: Env<'a>, target: Term<'a>, on: bool) -> Res<'a> {
    with_core(env, target, |core| done(env, core.dev.set_persist(on)))
}

/// TUNSETOWNER, with the uid as the value.
#[rustler::nif]
fn owner<'a>(env: Env<'a>, target: Term<'a>, uid: u32) -> Res<'a> {
    with_core(env, target, |core| done(env, core.dev.set_owner(uid)))
}

/// TUNSETGROUP, with the gid as the value.
#[rustler::nif]
fn group<'a>(env: Env<'a>, target: Term<'a>, gid: u32) -> Res<'a> {
    with_core(env, target, |core| done(env, core.dev.set_group(gid)))
}

/// The uid of a user name or number.
// The user database may be remote (NSS: LDAP, ...): a dirty scheduler.
#[rustler::nif(schedule = "DirtyIo")]
fn user_id<'a>(env: Env<'a>, user: Term<'a>) -> Res<'a> {
    match tunctl::user_id(&string_of(user)?) {
        Ok(id) => ok_with(env, id),
        Err(e) => fail(env, &e),
    }
}

/// The gid of a group name or number.
// The user database may be remote (NSS: LDAP, ...): a dirty scheduler.
#[rustler::nif(schedule = "DirtyIo")]
fn group_id<'a>(env: Env<'a>, group: Term<'a>) -> Res<'a> {
    match tunctl::group_id(&string_of(group)?) {
        Ok(id) => ok_with(env, id),
        Err(e) => fail(env, &e),
    }
}

/// The device's flags as the kernel has them, as atoms.
#[rustler::nif(schedule = "DirtyIo")]
fn flags<'a>(env: Env<'a>, target: Term<'a>) -> Res<'a> {
    with_core(env, target, |core| match core.dev.flags() {
        Ok(f) => {
            let mut out = Vec::new();
            for (bit, atom) in [
                (Flags::TUN, atoms::tun()),
                (Flags::TAP, atoms::tap()),
                (Flags::NO_PI, atoms::no_pi()),
                (Flags::ONE_QUEUE, atoms::one_queue()),
                (Flags::VNET_HDR, atoms::vnet_hdr()),
                (Flags::MULTI_QUEUE, atoms::multi_queue()),
                (Flags::PERSIST, atoms::persist()),
            ] {
                if f.contains(bit) {
                    out.push(atom);
                }
            }
            Ok(out.encode(env))
        }
        Err(e) => fail(env, &e),
    })
}

/// The offloads in force, as atoms.
#[rustler::nif]
fn offload<'a>(env: Env<'a>, target: Term<'a>) -> Res<'a> {
    with_core(env, target, |core| {
        let o = core.dev.offload();
        let mut out = Vec::new();
        for (bit, atom) in [
            (Offload::CSUM, atoms::csum()),
            (Offload::TSO4, atoms::tso4()),
            (Offload::TSO6, atoms::tso6()),
            (Offload::TSO_ECN, atoms::tso_ecn()),
            (Offload::USO4, atoms::uso4()),
            (Offload::USO6, atoms::uso6()),
        ] {
            if o.contains(bit) {
                out.push(atom);
            }
        }
        Ok(out.encode(env))
    })
}

/// The link a target names: a device's own (configured in its namespace), or an interface
/// of the caller's namespace by name.
enum Target {
    Device(Arc<Core>),
    Name(String),
}

fn target_of(term: Term) -> Result<Target, Option<NifError>> {
    if let Ok(b) = term.decode::<Binary>() {
        return std::str::from_utf8(b.as_slice())
            .map(|s| Target::Name(s.to_string()))
            .map_err(|_| Some(NifError::BadArg));
    }
    core_of(term).map(Target::Device)
}

/// Runs `f` on the link `term` names. A missing interface is `enodev`, as the original's
/// ioctls said.
fn with_link<'a, T>(
    env: Env<'a>,
    term: Term<'a>,
    f: impl FnOnce(&Link) -> tunctl::Result<T>,
    answer: impl FnOnce(Env<'a>, T) -> Res<'a>,
) -> Res<'a> {
    let result = match target_of(term) {
        Ok(Target::Device(core)) => core.dev.link().and_then(f),
        Ok(Target::Name(name)) => Link::by_name(&Namespace::Current, &name).and_then(|l| f(&l)),
        Err(None) => return fail_atom(env, "ebadf"),
        Err(Some(e)) => return Err(e),
    };
    match result {
        Ok(v) => answer(env, v),
        Err(e) if e.kind() == tunctl::ErrorKind::NotFound && e.raw_os_error().is_none() => {
            fail_atom(env, "enodev")
        }
        Err(e) => fail(env, &e),
    }
}

fn addr_of(bin: Binary) -> NifResult<IpAddr> {
    match bin.as_slice() {
        [a, b, c, d] => Ok(IpAddr::V4(Ipv4Addr::new(*a, *b, *c, *d))),
        s if s.len() == 16 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(s);
            Ok(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => Err(NifError::BadArg),
    }
}

fn addr_term(env: Env, ip: IpAddr) -> Term {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            (a, b, c, d).encode(env)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let t: Vec<Term> = s.iter().map(|x| x.encode(env)).collect();
            rustler::types::tuple::make_tuple(env, &t)
        }
    }
}

/// Through `tunctl-helper`, for a device it made for this user: the VM has no CAP_NET_ADMIN.
fn via_helper(
    link: &Link,
    err: tunctl::Error,
    fill: impl FnOnce(&mut tunctl::helper::Request),
) -> tunctl::Result<()> {
    use tunctl::helper::{Netns, Op, Request};
    if err.kind() != tunctl::ErrorKind::PermissionDenied || tunctl::helper::find().is_err() {
        return Err(err);
    }
    let Ok(netns) = Netns::try_from(link.netlink().namespace()) else {
        return Err(err);
    };
    let mut req = Request::new(Op::Set, link.name());
    req.netns = netns;
    fill(&mut req);
    tunctl::helper::run(&req).map_err(|_| err)
}

/// Adds `addr/prefix` (an address it has already counts as added) and brings the link up:
/// the original's `up/3`, by rtnetlink, IPv4 and IPv6 alike.
#[rustler::nif(schedule = "DirtyIo")]
fn up<'a>(env: Env<'a>, target: Term<'a>, addr: Binary<'a>, prefix: u8) -> Res<'a> {
    let ip = addr_of(addr)?;
    let cidr = match Cidr::new(ip, prefix) {
        Ok(c) => c,
        Err(e) => return fail(env, &e),
    };
    with_link(
        env,
        target,
        |link| {
            let added = match link.add_address(cidr) {
                Err(e) if e.kind() == tunctl::ErrorKind::AlreadyExists => Ok(()),
                other => other,
            };
            added.and_then(|()| link.up()).or_else(|e| {
                via_helper(link, e, |r| {
                    r.addrs = vec![cidr];
                    r.up = true;
                })
            })
        },
        |env, ()| ok(env),
    )
}

/// Brings the link down; addresses stay.
#[rustler::nif(schedule = "DirtyIo")]
fn down<'a>(env: Env<'a>, target: Term<'a>) -> Res<'a> {
    with_link(
        env,
        target,
        |link| {
            link.down()
                .or_else(|e| via_helper(link, e, |r| r.down = true))
        },
        |env, ()| ok(env),
    )
}

/// The link's first address of `peer`'s family (the one the original's ioctls changed).
fn local_for(link: &Link, peer: IpAddr) -> tunctl::Result<Option<IpAddr>> {
    Ok(link
        .addresses()?
        .into_iter()
        .map(|a| a.cidr().addr())
        .find(|a| a.is_ipv4() == peer.is_ipv4()))
}

/// `ok` once the link had an address to change, else `{error, eaddrnotavail}`.
fn found_local(env: Env, found: bool) -> Res {
    if found {
        ok(env)
    } else {
        fail_atom(env, "eaddrnotavail")
    }
}

/// Sets the point-to-point peer of the link's address of that family (IPv4 or IPv6).
#[rustler::nif(schedule = "DirtyIo")]
fn dstaddr<'a>(env: Env<'a>, target: Term<'a>, addr: Binary<'a>) -> Res<'a> {
    let peer = addr_of(addr)?;
    with_link(
        env,
        target,
        |link| match local_for(link, peer)? {
            Some(local) => link
                .set_peer(local, peer)
                .or_else(|e| via_helper(link, e, |r| r.peer = Some(peer)))
                .map(|()| true),
            None => Ok(false),
        },
        found_local,
    )
}

/// Sets the broadcast address of the link's IPv4 address.
#[rustler::nif(schedule = "DirtyIo")]
fn broadcast<'a>(env: Env<'a>, target: Term<'a>, addr: Binary<'a>) -> Res<'a> {
    let IpAddr::V4(brd) = addr_of(addr)? else {
        return fail_atom(env, "einval");
    };
    with_link(
        env,
        target,
        |link| match local_for(link, IpAddr::V4(brd))? {
            Some(IpAddr::V4(local)) => link.set_broadcast(local, brd).map(|()| true),
            _ => Ok(false),
        },
        found_local,
    )
}

/// The MTU: `{ok, MTU}`.
#[rustler::nif(schedule = "DirtyIo")]
fn mtu<'a>(env: Env<'a>, target: Term<'a>) -> Res<'a> {
    with_link(env, target, |link| link.mtu(), |env, m| ok_with(env, m))
}

/// Sets the MTU.
#[rustler::nif(schedule = "DirtyIo")]
fn set_mtu<'a>(env: Env<'a>, target: Term<'a>, mtu: i64) -> Res<'a> {
    let Ok(mtu) = u32::try_from(mtu) else {
        return fail_atom(env, "einval");
    };
    with_link(
        env,
        target,
        |link| {
            link.set_mtu(mtu)
                .or_else(|e| via_helper(link, e, |r| r.mtu = Some(mtu)))
        },
        |env, ()| ok(env),
    )
}

/// The link's addresses: `{ok, [{Address, Prefix}]}` (tuples as `inet` has them).
#[rustler::nif(schedule = "DirtyIo")]
fn addresses<'a>(env: Env<'a>, target: Term<'a>) -> Res<'a> {
    with_link(
        env,
        target,
        |link| link.addresses(),
        |env, addrs| {
            let list: Vec<Term> = addrs
                .iter()
                .map(|a| (addr_term(env, a.cidr().addr()), a.cidr().prefix()).encode(env))
                .collect();
            ok_with(env, list)
        },
    )
}

/// Removes `addr/prefix` from the link.
#[rustler::nif(schedule = "DirtyIo")]
fn del_address<'a>(env: Env<'a>, target: Term<'a>, addr: Binary<'a>, prefix: u8) -> Res<'a> {
    let cidr = match Cidr::new(addr_of(addr)?, prefix) {
        Ok(c) => c,
        Err(e) => return fail(env, &e),
    };
    with_link(
        env,
        target,
        |link| link.del_address(cidr),
        |env, ()| ok(env),
    )
}

/// Splits what one read of a `vnet_hdr` device gave (virtio-net header, then a packet, maybe
/// a GSO super-packet) into IP packets of at most the sender's segment size, checksums
/// complete: `{ok, [Packet]}`, or `{error, Reason}` for a malformed or unsupported one.
#[rustler::nif(schedule = "DirtyCpu", name = "gso_split")]
fn gso_split_nif<'a>(env: Env<'a>, packet: Binary<'a>) -> Res<'a> {
    let data = packet.as_slice();
    let Ok(hdr) = VirtioNetHdr::parse(data) else {
        return fail_atom(env, "einval");
    };
    let body = &data[VirtioNetHdr::LEN..];
    // A packet that is no super-packet (whatever its gso_size field says) comes back whole.
    let whole = matches!(hdr.gso(), Ok(GsoType::None)) || hdr.gso_size == 0;
    let (seg, count) = if whole {
        (body.len(), 1)
    } else {
        (
            (usize::from(hdr.gso_size) + 256).min(body.len()),
            (body.len() / usize::from(hdr.gso_size) + 2).min(MAX_SEGMENTS * 2),
        )
    };
    let mut out = vec![vec![0u8; seg.max(1)]; count];
    let mut sizes = vec![0usize; count];
    match gso_split(body, hdr, &mut out, &mut sizes, 0) {
        Ok(n) => {
            let list: Vec<Term> = (0..n)
                .map(|i| out[i][..sizes[i]].to_vec_binary(env))
                .collect();
            ok_with(env, list)
        }
        Err(_) => fail_atom(env, "einval"),
    }
}

/// Coalesces IP packets (TCP, and UDP with `udp`) into as few super-packets as the kernel
/// takes, each with its virtio-net header, ready for a `vnet_hdr` device with TSO (USO):
/// `{ok, [Packet]}`. At most 64 packets per call.
#[rustler::nif(schedule = "DirtyCpu")]
fn gro_coalesce<'a>(env: Env<'a>, packets: Vec<Binary<'a>>, udp: bool) -> Res<'a> {
    if packets.len() > MAX_SEGMENTS || packets.iter().any(|p| p.len() > 65535) {
        return Err(NifError::BadArg);
    }
    let off = VirtioNetHdr::LEN;
    // The scheduler thread's own buffers, made once (64 of 64 KiB: allocating and zeroing
    // them per call cost 4 MiB a call).
    GRO_BUFS.with(|cell| {
        let mut bufs = cell.borrow_mut();
        if bufs.len() < MAX_SEGMENTS {
            *bufs = vec![vec![0u8; 65536 + off]; MAX_SEGMENTS];
        }
        for (buf, p) in bufs.iter_mut().zip(&packets) {
            // A clean virtio-net header, as a fresh buffer had (the last call wrote one).
            buf[..off].fill(0);
            buf[off..off + p.len()].copy_from_slice(p.as_slice());
        }
        let bufs = &mut bufs[..packets.len()];
        let mut lens: Vec<usize> = packets.iter().map(|p| p.len()).collect();
        let mut order = Vec::new();
        let mut table = GroTable::new(udp);
        if table.coalesce(bufs, &mut lens, off, &mut order).is_err() {
            return fail_atom(env, "einval");
        }
        let list: Vec<Term> = order
            .iter()
            .map(|&i| bufs[i][..off + lens[i]].to_vec_binary(env))
            .collect();
        ok_with(env, list)
    })
}

thread_local! {
    /// [`gro_coalesce`]'s buffers, per dirty scheduler thread.
    static GRO_BUFS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}
