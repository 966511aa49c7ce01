//! The tunnel's UDP socket in batches: one `sendmsg` with `UDP_SEGMENT` for many datagrams
//! of one size to one peer (UDP GSO), `sendmmsg` where the kernel has no UDP GSO, and
//! `recvmmsg` with `UDP_GRO` (many datagrams of a flow arrive as one buffer, split here).
//! Large socket buffers, forced where the process may.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use tunctl::{Error, ErrorKind, Namespace};

use crate::device::{FastPath, TICK};

/// The socket buffers asked for (as wireguard-go does): room for bursts at Gbit/s.
pub const SOCKET_BUFFER: usize = 7 << 20;
/// The most segments in one UDP GSO send (the kernel's `UDP_MAX_SEGMENTS` is 64 on older
/// kernels, 128 on newer).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// The most payload bytes in one UDP GSO send (a UDP length is 16 bits).
pub const MAX_GSO_BYTES: usize = 65507;

/// A dual-stack socket speaks IPv6: IPv4 peers as v4-mapped addresses.
pub fn wire(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        v6 => v6,
    }
}

/// An address from the socket, v4-mapped ones as IPv4.
pub fn unwire(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => SocketAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// A socket address in the kernel's form, for the socket's family.
struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddr {
    fn new(addr: SocketAddr, v6_socket: bool) -> RawAddr {
        // SAFETY: sockaddr_storage is plain data; all zeros is a valid value.
        let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
        let addr = if v6_socket { wire(addr) } else { addr };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in.
                unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: as above, for sockaddr_in6.
                unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
                size_of::<libc::sockaddr_in6>()
            }
        };
        RawAddr {
            storage,
            len: len as libc::socklen_t,
        }
    }
}

impl RawAddr {
    /// Whether the destination is IPv4 (also as a v4-mapped address on a dual-stack
    /// socket): the IPv4 path takes it, and its ancillary data is IPv4's.
    fn v4_destination(&self) -> bool {
        match i32::from(self.storage.ss_family) {
            libc::AF_INET => true,
            // SAFETY: the family says the storage holds a sockaddr_in6.
            libc::AF_INET6 => unsafe {
                let sin6 = &*(&self.storage as *const _ as *const libc::sockaddr_in6);
                Ipv6Addr::from(sin6.sin6_addr.s6_addr)
                    .to_ipv4_mapped()
                    .is_some()
            },
            _ => false,
        }
    }
}

/// The address the kernel wrote into `storage`, if it is an IP one.
fn from_raw(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))),
                u16::from_be(sin.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            Some(unwire(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            ))))
        }
        _ => None,
    }
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: a valid fd and an int option of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn getsockopt_int(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value = 0i32;
    let mut len = size_of::<i32>() as libc::socklen_t;
    // SAFETY: a valid fd and an int buffer of the size given.
    let rc =
        unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut i32).cast(), &mut len) };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets both socket buffers to [`SOCKET_BUFFER`]: forced past `rmem_max`/`wmem_max` with
/// CAP_NET_ADMIN, else as far as those allow. Returns a warning when they were capped.
pub fn size_buffers(socket: &UdpSocket) -> Option<String> {
    let fd = socket.as_raw_fd();
    let want = SOCKET_BUFFER as i32;
    let mut capped = Vec::new();
    for (force, plain, name) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, "receive"),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, "send"),
    ] {
        if setsockopt_int(fd, libc::SOL_SOCKET, force, want).is_err() {
            let _ = setsockopt_int(fd, libc::SOL_SOCKET, plain, want);
            // The kernel reports twice what it keeps for its own bookkeeping.
            let got = getsockopt_int(fd, libc::SOL_SOCKET, plain).unwrap_or(0) / 2;
            if got < want {
                capped.push(format!("{name} {} KiB", got / 1024));
            }
        }
    }
    (!capped.is_empty()).then(|| {
        format!(
            "socket buffers capped at {} (no CAP_NET_ADMIN to go past net.core.rmem_max/wmem_max; {} KiB wanted): expect drops at high rates",
            capped.join(", "),
            SOCKET_BUFFER / 1024
        )
    })
}

/// Batched sends and receives on one socket, with what the kernel turned out to support.
pub struct Io {
    /// UDP GSO is used (until the kernel refuses it once).
    gso: AtomicBool,
    /// The socket is IPv6 (dual-stack): destinations go v4-mapped.
    v6: bool,
    /// UDP GRO was accepted.
    gro: bool,
}

/// The local address a datagram arrived on, which the answer leaves from ("sticky
/// sockets", as wireguard-go's): a server with several addresses answers from the one the
/// peer sent to, so that a stateful firewall in front of the peer lets the answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// The address.
    pub ip: IpAddr,
    /// The interface it arrived on (kept for IPv6 link-local addresses, which need it).
    pub ifindex: u32,
}

/// Where a peer is, as the data path sends to it: its address, and the local address its
/// datagrams arrived on, which ours leave from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The peer's address and port.
    pub addr: SocketAddr,
    /// Ours (none: the one routing picks).
    pub src: Option<Source>,
}

impl Endpoint {
    /// An address with no local address bound to it yet.
    pub fn new(addr: SocketAddr) -> Endpoint {
        Endpoint { addr, src: None }
    }
}

/// One received buffer: `len` bytes from `from`, made of datagrams of `segment` bytes (the
/// last may be shorter) when the kernel coalesced them.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Bytes in the buffer.
    pub len: usize,
    /// The sender.
    pub from: Option<SocketAddr>,
    /// The local address it was sent to.
    pub local: Option<Source>,
    /// The size of each datagram in it (0: one datagram).
    pub segment: usize,
    /// The buffer was too small: the (single) datagram was cut.
    pub truncated: bool,
}

/// The largest control message a receive gets: a UDP_GRO segment size and a packet-info.
const CMSG_ROOM: usize = 96;
/// The most datagrams one [`Io::recv`] takes (each may be a GRO train of many).
pub const RECV_AT_ONCE: usize = 8;

impl Io {
    /// Turns on what is asked and the kernel supports: UDP GRO on the socket (asked with
    /// `gro`), UDP GSO for sends (`gso`, found out at the first send).
    pub fn new(socket: &UdpSocket, gso: bool, gro: bool) -> Io {
        let fd = socket.as_raw_fd();
        let gro = gro && setsockopt_int(fd, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok();
        // The local address of every datagram (IPv4 ones, v4-mapped on a dual-stack socket,
        // report it as IP_PKTINFO).
        let _ = setsockopt_int(fd, libc::SOL_IP, libc::IP_PKTINFO, 1);
        let _ = setsockopt_int(fd, libc::SOL_IPV6, libc::IPV6_RECVPKTINFO, 1);
        Io {
            gso: AtomicBool::new(gso),
            v6: socket.local_addr().map(|a| a.is_ipv6()).unwrap_or(true),
            gro,
        }
    }

    /// Whether UDP GSO is in use.
    pub fn gso(&self) -> bool {
        self.gso.load(Ordering::Relaxed)
    }

    /// Whether UDP GRO is in use.
    pub fn gro(&self) -> bool {
        self.gro
    }

    /// Sends `buf`, datagrams of `segment` bytes each (the last may be shorter), to `to`:
    /// one `sendmsg` with `UDP_SEGMENT`, or (without UDP GSO) one `sendmmsg`.
    /// From `src` when given (see [`Source`]): an address that is no longer ours is left
    /// out and the datagrams leave from the one routing picks.
    pub fn send(
        &self,
        socket: &UdpSocket,
        buf: &[u8],
        segment: usize,
        to: SocketAddr,
        src: Option<Source>,
    ) -> io::Result<()> {
        let mut addr = RawAddr::new(to, self.v6);
        let fd = socket.as_raw_fd();
        if buf.len() <= segment || segment == 0 {
            return send_one(fd, buf, &mut addr, None, src, 0);
        }
        if self.gso() {
            match send_one(fd, buf, &mut addr, Some(segment as u16), src, 0) {
                Ok(()) => return Ok(()),
                // No UDP GSO here (or not for this route): split from now on.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
                    ) =>
                {
                    self.gso.store(false, Ordering::Relaxed)
                }
                Err(e) => return Err(e),
            }
        }
        send_split(fd, buf, segment, &mut addr, src)
    }

    /// Sends one datagram without waiting: when the socket's buffer is full it is dropped
    /// (what the timers and the handshake thread send must never wait behind data).
    pub fn try_send(
        &self,
        socket: &UdpSocket,
        buf: &[u8],
        to: SocketAddr,
        src: Option<Source>,
    ) -> io::Result<()> {
        let mut addr = RawAddr::new(to, self.v6);
        send_one(
            socket.as_raw_fd(),
            buf,
            &mut addr,
            None,
            src,
            libc::MSG_DONTWAIT,
        )
    }

    /// Sends each datagram to its own destination, without waiting: one `sendmmsg` for up
    /// to 64 of them. Returns how many the kernel took (a full socket buffer drops the
    /// rest).
    pub fn send_each(
        &self,
        socket: &UdpSocket,
        msgs: &[(&[u8], SocketAddr, Option<Source>)],
    ) -> usize {
        let mut taken = 0;
        for chunk in msgs.chunks(64) {
            let mut addrs: Vec<RawAddr> = chunk
                .iter()
                .map(|(_, to, _)| RawAddr::new(*to, self.v6))
                .collect();
            let mut controls = vec![[0u64; CONTROL_WORDS]; chunk.len()];
            // SAFETY: plain data, all zeros is valid for each.
            let mut iovs: [libc::iovec; 64] = unsafe { zeroed() };
            let mut hdrs: [libc::mmsghdr; 64] = unsafe { zeroed() };
            for (i, (((buf, to, src), addr), control)) in chunk
                .iter()
                .zip(addrs.iter_mut())
                .zip(controls.iter_mut())
                .enumerate()
            {
                iovs[i] = libc::iovec {
                    iov_base: buf.as_ptr() as *mut _,
                    iov_len: buf.len(),
                };
                hdrs[i].msg_hdr.msg_name =
                    (&mut addr.storage as *mut libc::sockaddr_storage).cast();
                hdrs[i].msg_hdr.msg_namelen = addr.len;
                hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
                hdrs[i].msg_hdr.msg_iovlen = 1;
                write_control(&mut hdrs[i].msg_hdr, control, None, *src, to.is_ipv4());
            }
            let n = chunk.len();
            let mut sent = 0;
            for _ in 0..8 {
                if sent == n {
                    break;
                }
                // SAFETY: the headers point at live buffers and addresses, n - sent entries
                // from `sent`.
                let rc = unsafe {
                    libc::sendmmsg(
                        socket.as_raw_fd(),
                        hdrs[sent..].as_mut_ptr(),
                        (n - sent) as u32,
                        libc::MSG_DONTWAIT,
                    )
                };
                if rc < 0 {
                    match io::Error::last_os_error().kind() {
                        io::ErrorKind::Interrupted => continue,
                        // Full: the rest is dropped, never waited for.
                        io::ErrorKind::WouldBlock => break,
                        _ => {}
                    }
                    // This one is refused (unreachable, a full buffer): skip it.
                    sent += 1;
                    continue;
                }
                sent += rc as usize;
                taken += rc as usize;
            }
        }
        taken
    }

    /// Receives into `bufs` (each 64 KiB or more; at most [`RECV_AT_ONCE`] are used): waits
    /// for the first (the socket's read timeout), takes what else is queued. Returns how
    /// many of `out` are filled.
    pub fn recv(
        &self,
        socket: &UdpSocket,
        bufs: &mut [Vec<u8>],
        out: &mut [Received],
    ) -> io::Result<usize> {
        let n = bufs.len().min(out.len()).min(RECV_AT_ONCE);
        // Sized for what one call takes, not more: these are zeroed on every call.
        // SAFETY: plain data, all zeros is valid for each.
        let mut names: [libc::sockaddr_storage; RECV_AT_ONCE] = unsafe { zeroed() };
        let mut iovs: [libc::iovec; RECV_AT_ONCE] = unsafe { zeroed() };
        let mut cmsgs = [[0u64; CMSG_ROOM / 8]; RECV_AT_ONCE];
        let mut msgs: [libc::mmsghdr; RECV_AT_ONCE] = unsafe { zeroed() };
        for i in 0..n {
            iovs[i] = libc::iovec {
                iov_base: bufs[i].as_mut_ptr().cast(),
                iov_len: bufs[i].len(),
            };
            msgs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_control = cmsgs[i].as_mut_ptr().cast();
            msgs[i].msg_hdr.msg_controllen = CMSG_ROOM as _;
        }
        // SAFETY: every header points at live buffers of the lengths given, for n entries.
        let got = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = got as usize;
        for i in 0..got {
            let hdr = &msgs[i].msg_hdr;
            let mut segment = 0;
            let mut local = None;
            // SAFETY: the kernel filled msg_control with msg_controllen bytes of cmsgs; each
            // is read with an unaligned copy of the size its type says.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(hdr);
                while !c.is_null() {
                    let (level, kind) = ((*c).cmsg_level, (*c).cmsg_type);
                    if level == libc::SOL_UDP && kind == libc::UDP_GRO {
                        let v: i32 = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                        segment = v.max(0) as usize;
                    } else if level == libc::SOL_IP && kind == libc::IP_PKTINFO {
                        let p: libc::in_pktinfo =
                            std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                        local = Some(Source {
                            ip: IpAddr::V4(Ipv4Addr::from(u32::from_be(p.ipi_spec_dst.s_addr))),
                            ifindex: p.ipi_ifindex as u32,
                        });
                    } else if level == libc::SOL_IPV6 && kind == libc::IPV6_PKTINFO {
                        let p: libc::in6_pktinfo =
                            std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                        let ip = Ipv6Addr::from(p.ipi6_addr.s6_addr);
                        local = Some(Source {
                            ip: ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4),
                            ifindex: p.ipi6_ifindex,
                        });
                    }
                    c = libc::CMSG_NXTHDR(hdr, c);
                }
            }
            out[i] = Received {
                len: msgs[i].msg_len as usize,
                from: from_raw(&names[i]),
                local,
                segment,
                truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
            };
        }
        Ok(got)
    }
}

/// Room for the ancillary data of one send: a UDP_SEGMENT and a packet-info.
const CONTROL_WORDS: usize = 12;

/// Fills `msg`'s ancillary data into `control`: the GSO segment size, and the source
/// address (IP_PKTINFO for an IPv4 destination, also on a dual-stack socket; IPV6_PKTINFO
/// for an IPv6 one). Leaves it empty when there is neither.
fn write_control(
    msg: &mut libc::msghdr,
    control: &mut [u64; CONTROL_WORDS],
    segment: Option<u16>,
    src: Option<Source>,
    to_v4: bool,
) {
    // A source of the other family than the destination cannot be used.
    let src = src.filter(|s| s.ip.is_ipv4() == to_v4);
    // SAFETY: CMSG_SPACE only computes.
    let space = unsafe {
        segment.map_or(0, |_| libc::CMSG_SPACE(size_of::<u16>() as u32))
            + src.map_or(0, |_| {
                if to_v4 {
                    libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32)
                } else {
                    libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32)
                }
            })
    } as usize;
    if space == 0 || space > size_of::<[u64; CONTROL_WORDS]>() {
        msg.msg_control = std::ptr::null_mut();
        msg.msg_controllen = 0;
        return;
    }
    *control = [0; CONTROL_WORDS];
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer holds `space` bytes, enough for the cmsgs written (their
    // CMSG_SPACE summed); each is written with an unaligned copy of its value.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        if let Some(seg) = segment {
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = libc::UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), seg);
            c = libc::CMSG_NXTHDR(msg, c);
        }
        if let (Some(s), false) = (src, c.is_null()) {
            match s.ip {
                IpAddr::V4(ip) => {
                    (*c).cmsg_level = libc::SOL_IP;
                    (*c).cmsg_type = libc::IP_PKTINFO;
                    (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
                    let p = libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: libc::in_addr {
                            s_addr: u32::from(ip).to_be(),
                        },
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    };
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), p);
                }
                IpAddr::V6(ip) => {
                    (*c).cmsg_level = libc::SOL_IPV6;
                    (*c).cmsg_type = libc::IPV6_PKTINFO;
                    (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as _;
                    // A link-local address is only an address with its interface.
                    let link_local = ip.segments()[0] & 0xffc0 == 0xfe80;
                    let p = libc::in6_pktinfo {
                        ipi6_addr: libc::in6_addr {
                            s6_addr: ip.octets(),
                        },
                        ipi6_ifindex: if link_local { s.ifindex } else { 0 },
                    };
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), p);
                }
            }
        }
    }
}

fn send_one(
    fd: RawFd,
    buf: &[u8],
    addr: &mut RawAddr,
    segment: Option<u16>,
    src: Option<Source>,
    flags: i32,
) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut _,
        iov_len: buf.len(),
    };
    let mut control = [0u64; CONTROL_WORDS];
    // SAFETY: plain data.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut addr.storage as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = addr.len;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let to_v4 = addr.v4_destination();
    write_control(&mut msg, &mut control, segment, src, to_v4);
    for _ in 0..3 {
        // SAFETY: msg points at live buffers for the call.
        let rc = unsafe { libc::sendmsg(fd, &msg, flags) };
        if rc >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            // The source is no longer ours (its address removed): from wherever routing
            // sends, then.
            Some(libc::EINVAL | libc::EADDRNOTAVAIL) if src.is_some() => {
                write_control(&mut msg, &mut control, segment, None, to_v4);
                return send_one(fd, buf, addr, segment, None, flags);
            }
            _ => return Err(e),
        }
    }
    Err(io::Error::from(io::ErrorKind::Interrupted))
}

/// Without UDP GSO: the datagrams of `buf` with one `sendmmsg` (64 at a time).
fn send_split(
    fd: RawFd,
    buf: &[u8],
    segment: usize,
    addr: &mut RawAddr,
    src: Option<Source>,
) -> io::Result<()> {
    let to_v4 = addr.v4_destination();
    let mut chunks = buf.chunks(segment).peekable();
    let mut controls = [[0u64; CONTROL_WORDS]; 64];
    while chunks.peek().is_some() {
        // SAFETY: plain data.
        let mut iovs: [libc::iovec; 64] = unsafe { zeroed() };
        let mut msgs: [libc::mmsghdr; 64] = unsafe { zeroed() };
        let mut n = 0;
        while n < 64 {
            let Some(c) = chunks.next() else { break };
            iovs[n] = libc::iovec {
                iov_base: c.as_ptr() as *mut _,
                iov_len: c.len(),
            };
            n += 1;
        }
        for i in 0..n {
            msgs[i].msg_hdr.msg_name = (&mut addr.storage as *mut libc::sockaddr_storage).cast();
            msgs[i].msg_hdr.msg_namelen = addr.len;
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            write_control(&mut msgs[i].msg_hdr, &mut controls[i], None, src, to_v4);
        }
        let mut sent = 0;
        let mut tries = 0;
        while sent < n && tries < 8 {
            tries += 1;
            // SAFETY: the headers point at live buffers, n - sent entries from `sent`.
            let rc = unsafe { libc::sendmmsg(fd, msgs[sent..].as_mut_ptr(), (n - sent) as u32, 0) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            sent += rc as usize;
        }
    }
    Ok(())
}

/// The UDP socket and how to batch on it.
pub(crate) struct Sock {
    pub(crate) udp: UdpSocket,
    pub(crate) io: Io,
    /// Why the socket buffers are smaller than asked, if they are.
    pub(crate) warning: Option<String>,
}

impl Sock {
    /// The UDP socket, dual-stack where IPv6 is on, in the tunnel's namespace, with large
    /// buffers and UDP GRO/GSO as `fast` allows.
    pub(crate) fn bind(namespace: &Namespace, port: u16, fast: FastPath) -> Result<Sock, Error> {
        let udp = namespace
            .run(|| dual_stack(port).or_else(|_| UdpSocket::bind(("0.0.0.0", port))))?
            .map_err(|e| {
                let kind = e.kind();
                let err = Error::from(e).add_detail(&format!("UDP port {port}"));
                if kind == std::io::ErrorKind::AddrInUse {
                    Error::from_kind(ErrorKind::AlreadyExists, "bind", err.detail())
                } else {
                    err
                }
            })?;
        udp.set_read_timeout(Some(TICK))?;
        // A send waits for room in the socket at most this long (a path that does not drain
        // never holds a thread for good: it would hold `down` too).
        udp.set_write_timeout(Some(std::time::Duration::from_secs(1)))?;
        let warning = size_buffers(&udp);
        let io = Io::new(&udp, fast.udp_gso, fast.udp_gro);
        Ok(Sock { udp, io, warning })
    }
}

/// A UDP socket on `[::]:port` that takes IPv4 too (v4-mapped), whatever
/// `net.ipv6.bindv6only` says.
fn dual_stack(port: u16) -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::IPV6,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    s.set_only_v6(false)?;
    s.bind(&std::net::SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    Ok(s.into())
}

/// `SO_MARK` on the tunnel's socket (CAP_NET_ADMIN); 0 on a socket without a mark is a
/// no-op.
pub(crate) fn set_mark(socket: &UdpSocket, mark: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // The mark's bits as the kernel's int option takes them.
    match setsockopt_int(
        socket.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_MARK,
        mark as i32,
    ) {
        Err(_) if mark == 0 => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// On loopback: a GSO send of 5 datagrams arrives as 5 datagrams (with GRO, possibly
    /// coalesced, then split by segment), and the fallback sends the same.
    #[test]
    fn gso_and_fallback_send_the_same_datagrams() {
        for (gso, gro) in [(true, true), (false, false), (true, false), (false, true)] {
            let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
            rx.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            let io_tx = Io::new(&tx, gso, false);
            let io_rx = Io::new(&rx, false, gro);
            let mut buf = Vec::new();
            for i in 0..5u8 {
                buf.extend(std::iter::repeat_n(i, if i == 4 { 300 } else { 1000 }));
            }
            io_tx
                .send(&tx, &buf, 1000, rx.local_addr().unwrap(), None)
                .unwrap();
            let mut bufs = vec![vec![0u8; 65536]; 8];
            let mut out = [Received {
                len: 0,
                from: None,
                local: None,
                segment: 0,
                truncated: false,
            }; 8];
            let mut datagrams = Vec::new();
            for _ in 0..10 {
                if datagrams.len() == 5 {
                    break;
                }
                let n = io_rx.recv(&rx, &mut bufs, &mut out).unwrap();
                for k in 0..n {
                    let seg = if out[k].segment == 0 {
                        out[k].len
                    } else {
                        out[k].segment
                    };
                    for d in bufs[k][..out[k].len].chunks(seg) {
                        datagrams.push(d.to_vec());
                    }
                    assert_eq!(out[k].from, Some(tx.local_addr().unwrap()));
                }
            }
            assert_eq!(datagrams.len(), 5, "gso {gso} gro {gro}");
            for (i, d) in datagrams.iter().enumerate() {
                assert!(d.iter().all(|b| *b == i as u8));
                assert_eq!(d.len(), if i == 4 { 300 } else { 1000 });
            }
        }
    }
}
