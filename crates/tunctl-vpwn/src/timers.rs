//! The protocol's timers: every peer's engine is ticked every [`TICK`] (handshake retries,
//! rekeying, keepalives, session expiry), and what it asks to send goes to the peer; once
//! a second, the device is looked at again: its MTU (wg-quick sets it after the tunnel
//! starts), and whether routes the kernel removed must be put back.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tunctl::Device;

use crate::device::{follow_link, Follow, Shared, TICK};
use crate::engine::Out;
use crate::stats::Stats;

pub(crate) fn thread(device: &Device, shared: &Shared) {
    let mut out = vec![0u8; 256];
    let mut looked = Instant::now();
    let mut follow = Follow::default();
    while !shared.stop.load(Ordering::Acquire) {
        std::thread::sleep(TICK);
        if looked.elapsed().as_secs() >= 1 {
            follow_link(device, shared, &mut follow);
            looked = Instant::now();
        }
        let table = shared.table();
        for peer in &table.peers {
            peer.expire_retiring();
            // The engine's lock is let go before anything is sent, and nothing waits for
            // room in the socket: one peer's full path never holds up another's timers. The
            // engine's own timers first (retries, rekeying, expiry), every tick; then, if
            // they sent nothing, a persistent keepalive that is due: an empty packet (or,
            // with no session, the handshake it starts).
            let len = {
                let mut engine = peer.engine();
                let ticked = match engine.tick(&mut out) {
                    Out::Network(datagram) => Some(datagram.len()),
                    _ => None,
                };
                match ticked {
                    Some(len) => len,
                    None if peer.keepalive_due() => match engine.encapsulate(&[], &mut out) {
                        Out::Network(datagram) => datagram.len(),
                        _ => continue,
                    },
                    None => continue,
                }
            };
            let Some(datagram) = out.get(..len) else {
                continue;
            };
            if datagram.first() == Some(&crate::cookie::INITIATION) {
                peer.initiated();
            }
            if let Some(to) = peer.path() {
                let sock = shared.socket();
                if sock
                    .io
                    .try_send(&sock.udp, datagram, to.addr, to.src)
                    .is_ok()
                {
                    Stats::add(&peer.tx_bytes, len);
                    peer.sent();
                }
            }
        }
    }
}
