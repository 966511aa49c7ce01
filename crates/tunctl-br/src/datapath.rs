//! The way of a frame: read from a port, learned, looked up, written to one port or flooded
//! to every other, each destination's MTU respected. One thread per port
//! ([`port_loop`]), or one for all ([`event_loop`]).

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tunctl::offload::{gso_split, GsoType, OffloadError, VirtioNetHdr};
use tunctl::ErrorKind;

use crate::bridge::{add, say, Port, Ports, Shared, View};
use crate::fdb::{Key, Learned};
use crate::frame::{self, Header, Refusal};

/// How long a port's read waits before it looks at the stop flag.
const TICK: Duration = Duration::from_millis(100);
/// The largest frame read: a 64 KiB GSO frame and its Ethernet header.
const FRAME_ROOM: usize = 65536 + 64;
/// The most segments a GSO frame is split into for a port without vnet_hdr.
const MAX_SPLIT: usize = 256;
/// The fewest payload bytes per segment a TCP GSO frame is cut to for a small MTU.
const MIN_SEGMENT: usize = 64;

/// Scratch for splitting a GSO frame for a port without vnet_hdr: one arena cut into
/// segments, grown to the largest frame split so far (about 170 KB at most).
pub(crate) struct Split {
    arena: Vec<u8>,
    sizes: [usize; MAX_SPLIT],
}

impl Split {
    pub(crate) fn new() -> Split {
        Split {
            arena: Vec::new(),
            sizes: [0; MAX_SPLIT],
        }
    }
}

/// Where a frame goes.
enum Out {
    One(usize),
    Flood,
}

/// One queue's reader (queue `q` of port `me`): read a frame, learn its source, forward or
/// flood it. Ends when the bridge stops or the port goes.
pub(crate) fn port_loop(s: &Shared, me: &Port, q: usize) {
    let queue = &me.device.queues()[q];
    // [virtio-net header][frame]; a port without vnet_hdr reads after an empty header, so
    // every frame is handled the same way.
    let mut buf = vec![0u8; VirtioNetHdr::LEN + FRAME_ROOM];
    let mut split = Split::new();
    let mut view = View::new(s);
    while !s.stop.load(Ordering::Acquire) && me.alive.load(Ordering::Acquire) {
        let start = if me.vnet { 0 } else { VirtioNetHdr::LEN };
        // A read first; the wait (a poll, with a timeout to see the stop flag) only when
        // nothing is queued: one system call per frame under load.
        let n = match queue.recv_timeout(&mut buf[start..], TICK) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) if e.kind() == ErrorKind::Truncated => {
                add(&me.stats.drop_oversize, 1);
                continue;
            }
            Err(_) => {
                s.lose(me);
                break;
            }
        };
        view.refresh(s);
        handle(s, me, q, &view.ports, &mut buf, start + n, &mut split);
    }
}

/// One thread for every port: a poll over all of them, then each ready port drained (up to
/// 64 frames without waiting). One wake-up serves both directions of a flow.
pub(crate) fn event_loop(s: &Shared) {
    let mut buf = vec![0u8; VirtioNetHdr::LEN + FRAME_ROOM];
    let mut split = Split::new();
    let mut view = View::new(s);
    // Every queue of every live port: (port, queue).
    let mut live: Vec<(Arc<Port>, usize)> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut stale = true;
    while !s.stop.load(Ordering::Acquire) {
        if view.refresh(s) || stale {
            live.clear();
            for p in view.ports.iter().flatten() {
                if p.alive.load(Ordering::Acquire) {
                    live.extend((0..p.device.queues().len()).map(|q| (Arc::clone(p), q)));
                }
            }
            fds.clear();
            fds.extend(live.iter().map(|(p, q)| libc::pollfd {
                fd: p.device.queues()[*q].as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }));
            stale = false;
        }
        // SAFETY: poll(2) over `fds`, which holds the fds of the ports in `live` (kept open
        // by their Arc for as long as `live` holds them).
        let ready = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                TICK.as_millis() as libc::c_int,
            )
        };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // Said, and the bridge stops: never up while forwarding nothing.
            say(format_args!(
                "br: the port loop's poll failed: {e}; stopping"
            ));
            s.stop.store(true, Ordering::Release);
            break;
        }
        if ready == 0 {
            continue;
        }
        for ((me, q), fd) in live.iter().zip(&fds) {
            if fd.revents == 0 {
                continue;
            }
            if !me.alive.load(Ordering::Acquire) {
                stale = true;
                continue;
            }
            for _ in 0..64 {
                let start = if me.vnet { 0 } else { VirtioNetHdr::LEN };
                match me.device.queues()[*q].try_recv(&mut buf[start..]) {
                    Ok(Some(n)) => handle(s, me, *q, &view.ports, &mut buf, start + n, &mut split),
                    Ok(None) => break,
                    Err(e) if e.kind() == ErrorKind::Truncated => {
                        add(&me.stats.drop_oversize, 1);
                    }
                    Err(_) => {
                        s.lose(me);
                        stale = true;
                        break;
                    }
                }
            }
        }
    }
}

/// Handles the frame read from queue `q` of port `me` into `buf[..end]` (a virtio-net
/// header first, zeroed for a port without vnet_hdr): learn, then forward or flood (written
/// to the same queue number of each destination, modulo its queues).
fn handle(
    s: &Shared,
    me: &Port,
    q: usize,
    ports: &Ports,
    buf: &mut [u8],
    end: usize,
    split: &mut Split,
) {
    let hdr_len = VirtioNetHdr::LEN;
    if !me.vnet {
        buf[..hdr_len].fill(0);
    }
    if end < hdr_len {
        add(&me.stats.drop_runt, 1);
        return;
    }
    add(&me.stats.rx_frames, 1);
    add(&me.stats.rx_bytes, (end - hdr_len) as u64);
    let Ok(vh) = VirtioNetHdr::parse(&buf[..hdr_len]) else {
        add(&me.stats.drop_malformed_gso, 1);
        return;
    };
    let gso = vh.gso_type != 0;
    let frame_len = end - hdr_len;
    let h = match frame::parse(&buf[hdr_len..end]) {
        Ok(h) => h,
        Err(why) => {
            add(
                match why {
                    Refusal::Runt => &me.stats.drop_runt,
                    Refusal::InvalidSource => &me.stats.drop_invalid_source,
                    Refusal::LinkLocal => &me.stats.drop_link_local,
                },
                1,
            );
            if s.trace {
                say(format_args!(
                    "br {}: {} in: {frame_len} bytes dropped: {why:?}",
                    s.name, me.name
                ));
            }
            return;
        }
    };
    if !gso && frame_len - h.len > me.mtu.load(Ordering::Relaxed) as usize {
        add(&me.stats.drop_oversize, 1);
        return;
    }
    let now = s.now();
    let out = {
        let mut fdb = s.fdb();
        // Removed meanwhile: its frames teach the table nothing (checked under the lock
        // that flushes its entries).
        if !me.alive.load(Ordering::Acquire) {
            return;
        }
        if let Learned::Pinned { .. } = fdb.learn(Key::new(h.src, h.vlan), me.slot, now) {
            drop(fdb);
            add(&me.stats.drop_static_source, 1);
            if s.trace {
                say(format_args!(
                    "br {}: {} in: {} > {} dropped: its source is static on another port",
                    s.name, me.name, h.src, h.dst
                ));
            }
            return;
        }
        if h.dst.is_multicast() {
            Out::Flood
        } else {
            fdb.lookup(&Key::new(h.dst, h.vlan), now)
                .map_or(Out::Flood, Out::One)
        }
    };
    if s.trace {
        let to = match out {
            Out::One(d) => ports
                .get(d)
                .and_then(Option::as_ref)
                .map_or("?".to_string(), |p| p.name.clone()),
            Out::Flood => "flood".to_string(),
        };
        say(format_args!(
            "br {}: {} in: {} > {}{} type {:04x} {frame_len} bytes{} -> {to}",
            s.name,
            me.name,
            h.src,
            h.dst,
            if h.vlan != 0 {
                format!(" vlan {}", h.vlan)
            } else {
                String::new()
            },
            h.ethertype,
            if gso { " (GSO)" } else { "" }
        ));
    }
    let whole = &mut buf[..end];
    match out {
        Out::One(d) if d == me.slot => add(&me.stats.drop_same_port, 1),
        Out::One(d) => match ports.get(d).and_then(Option::as_ref) {
            Some(to) if to.alive.load(Ordering::Acquire) => {
                add(&me.stats.forwarded, 1);
                if !deliver(s, to, q, whole, vh, &h, split) {
                    add(&me.stats.drop_malformed_gso, 1);
                }
            }
            _ => add(&me.stats.drop_write, 1),
        },
        Out::Flood => {
            add(&me.stats.flooded, 1);
            let mut malformed = false;
            for to in ports.iter().flatten() {
                if to.slot != me.slot && to.alive.load(Ordering::Acquire) {
                    malformed |= !deliver(s, to, q, whole, vh, &h, split);
                }
            }
            if malformed {
                add(&me.stats.drop_malformed_gso, 1);
            }
        }
    }
}

/// Where a GSO frame's transport header ends (from the frame's start), and whether it is
/// UDP (whose datagrams cannot be cut smaller); `None` for a header that says nothing
/// sensible.
fn transport_end(frame: &[u8], vh: &VirtioNetHdr) -> Option<(usize, bool)> {
    let start = usize::from(vh.csum_start);
    match vh.gso().ok()? {
        GsoType::TcpV4 | GsoType::TcpV6 => {
            let len = usize::from(*frame.get(start + 12)? >> 4) * 4;
            (len >= 20).then_some((start + len, false))
        }
        GsoType::UdpL4 => Some((start + 8, true)),
        GsoType::None | GsoType::Ufo => None,
    }
}

/// Writes `whole` ([virtio-net header][frame], `h` its Ethernet header) to port `to`: as it
/// is to a vnet_hdr port; to a port without, the frame alone, a GSO frame split into
/// segments and a partial checksum completed. A frame bigger than the port's MTU is
/// dropped and counted there, a TCP GSO frame whose segments would be is cut into smaller
/// ones instead. False if the frame's GSO header cannot be carried out (malformed).
fn deliver(
    s: &Shared,
    to: &Port,
    q: usize,
    whole: &mut [u8],
    vh: VirtioNetHdr,
    h: &Header,
    split: &mut Split,
) -> bool {
    let hdr_len = VirtioNetHdr::LEN;
    let frame_len = whole.len() - hdr_len;
    let queues = to.device.queues();
    let queue = &queues[q % queues.len()];
    let mtu = to.mtu.load(Ordering::Relaxed) as usize;
    let too_big = || add(&to.stats.drop_egress_mtu, 1);
    let mut out = vh;
    // Where the payload starts, for a GSO frame.
    let mut headers = 0;
    if vh.gso_type != 0 {
        let Some((end, udp)) = transport_end(&whole[hdr_len..], &vh) else {
            return false;
        };
        let Some(ip_and_l4) = end.checked_sub(h.len) else {
            return false;
        };
        headers = end;
        if ip_and_l4 + usize::from(vh.gso_size) > mtu {
            if udp || mtu < ip_and_l4 + MIN_SEGMENT {
                too_big();
                return true;
            }
            out.gso_size = (mtu - ip_and_l4) as u16;
        }
    } else if frame_len - h.len > mtu {
        too_big();
        return true;
    }
    let needs_work = out.gso_type != 0 || out.flags & VirtioNetHdr::NEEDS_CSUM != 0;
    let result = if to.vnet {
        if out.gso_size == vh.gso_size {
            queue.send(whole).map(|_| (1, frame_len))
        } else {
            // The same frame, cut smaller by the kernel: only the header's segment size
            // changes (put back after, for the other ports of a flood).
            let mut saved = [0u8; VirtioNetHdr::LEN];
            saved.copy_from_slice(&whole[..hdr_len]);
            if out.write(&mut whole[..hdr_len]).is_err() {
                return false;
            }
            let sent = queue.send(whole).map(|_| (1, frame_len));
            whole[..hdr_len].copy_from_slice(&saved);
            sent
        }
    } else if !needs_work {
        queue.send(&whole[hdr_len..]).map(|_| (1, frame_len))
    } else {
        match split_and_send(queue, &whole[hdr_len..], h.len, out, headers, split) {
            Ok(sent) => sent,
            Err(_) => return false,
        }
    };
    match result {
        Ok((frames, bytes)) => {
            add(&to.stats.tx_frames, frames);
            add(&to.stats.tx_bytes, bytes as u64);
        }
        Err(e) if matches!(e.kind(), ErrorKind::Gone | ErrorKind::Closed) => s.lose(to),
        Err(_) => add(&to.stats.drop_write, 1),
    }
    true
}

/// Splits `frame` (Ethernet header of `eth_len`, transport headers ending at `headers` for
/// a GSO frame) as `vh` says and writes each segment to `to`: (segments, bytes) written,
/// the write's error, or the split's.
#[allow(clippy::type_complexity)]
fn split_and_send(
    to: &tunctl::Queue,
    frame: &[u8],
    eth_len: usize,
    vh: VirtioNetHdr,
    headers: usize,
    split: &mut Split,
) -> Result<Result<(u64, usize), tunctl::Error>, OffloadError> {
    let mut ip_hdr = vh;
    ip_hdr.csum_start = usize::from(vh.csum_start)
        .checked_sub(eth_len)
        .ok_or(OffloadError::BadHeader)? as u16;
    let (stride, count) = if vh.gso_type == 0 {
        (frame.len(), 1)
    } else {
        let size = usize::from(vh.gso_size).max(1);
        let payload = frame.len().saturating_sub(headers);
        (headers + size, payload.div_ceil(size).max(1))
    };
    if count > MAX_SPLIT {
        return Err(OffloadError::NoRoom);
    }
    if split.arena.len() < stride * count {
        split.arena.resize(stride * count, 0);
    }
    let mut outs: [&mut [u8]; MAX_SPLIT] = std::array::from_fn(|_| Default::default());
    for (o, chunk) in outs
        .iter_mut()
        .zip(split.arena.chunks_mut(stride))
        .take(count)
    {
        *o = chunk;
    }
    let k = gso_split(
        &frame[eth_len..],
        ip_hdr,
        &mut outs[..count],
        &mut split.sizes[..count],
        eth_len,
    )?;
    let (mut frames, mut bytes) = (0, 0);
    for (seg, &size) in outs.iter_mut().zip(&split.sizes).take(k) {
        seg[..eth_len].copy_from_slice(&frame[..eth_len]);
        let seg = &seg[..eth_len + size];
        if let Err(e) = to.send(seg) {
            return Ok(Err(e));
        }
        frames += 1;
        bytes += seg.len();
    }
    Ok(Ok((frames, bytes)))
}
