//! vpwn's parsers of untrusted input: datagrams from the network (its own receive pipeline
//! and handshake handling, with a fixed key and two peers with live sessions: the cookie
//! checks, the peers' engines, the allowed-IPs check, UDP GRO buffers split by segment) and
//! UAPI requests (`set=1` lines applied to a configured device, raw bytes on a connection to
//! the server's own code). Never a panic, a hang or unbounded memory, and the checks in
//! `vpwn_wire/harness.rs` hold.
//!
//! Input: `[part, flags, body...]`; `part` (modulo 7) picks what runs:
//!
//! - 0: the body as one datagram;
//! - 1: `[segment (u16 BE), buffer...]`: a received buffer of datagrams of `segment` bytes;
//! - 2: `[peers, count, at (u16 BE), mask, segment (u16 BE), payload...]`: authentic traffic,
//!   the payload cut into `count % 8 + 1` inner packets (all of one size but the last, as UDP
//!   GRO coalesces), packet `i` sealed by peer `peers >> i & 1`; flags: 1 from IPv6, 2 sent
//!   twice, 4 byte `at` XORed with `mask`, 8 split by `segment` instead of the datagrams' size;
//! - 3: as 2, after a new handshake with peer `flags >> 4 & 1` if flags 128 (under load,
//!   with a cookie round, if flags 64);
//! - 4: `[kind, load, message...]`: a handshake-shaped message (`kind % 4`: initiation,
//!   response, cookie reply, as is) on a new pipeline, its mac1 made valid (unless flags 32),
//!   its receiver index a peer's (flags 16), after `load % 8` valid-mac1 responses, all under
//!   load if flags 64;
//! - 5: the body as the lines of a `set=1` request;
//! - 6: the body as the bytes a client sends on a UAPI connection.
#![no_main]

use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};
use libfuzzer_sys::fuzz_target;

#[path = "vpwn_wire/harness.rs"]
mod harness;

/// Writes a valid mac1 into a handshake message (its last 32 bytes are mac1 and mac2):
/// keyed BLAKE2s-128 of what precedes it, keyed with HASH("mac1----" || our public key).
fn set_mac1(msg: &mut [u8]) {
    let n = msg.len();
    let key: [u8; 32] = Blake2s256::new()
        .chain_update(b"mac1----")
        .chain_update(harness::public_key().0)
        .finalize()
        .into();
    let mut mac = Blake2sMac::<U16>::new_from_slice(&key).expect("a 32-byte key");
    mac.update(&msg[..n - 32]);
    let mac1: [u8; 16] = mac.finalize_fixed().into();
    msg[n - 32..n - 16].copy_from_slice(&mac1);
}

fn be16(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([
        b.get(at).copied().unwrap_or(0),
        b.get(at + 1).copied().unwrap_or(0),
    ]))
}

fn sealed(flags: u8, body: &[u8]) {
    let Some((head, payload)) = body.split_at_checked(7) else {
        return;
    };
    let (peers, count) = (head[0], usize::from(head[1] % 8) + 1);
    let size = payload.len().div_ceil(count).max(1);
    let mut packets: Vec<(usize, &[u8])> = payload
        .chunks(size)
        .enumerate()
        .map(|(i, p)| (usize::from(peers >> i & 1), p))
        .collect();
    if packets.is_empty() {
        packets.push((usize::from(peers & 1), &[]));
    }
    let tamper = (flags & 4 != 0).then(|| (be16(head, 2), head[4]));
    let segment = (flags & 8 != 0).then(|| be16(head, 5));
    harness::sealed(&packets, segment, tamper, flags & 2 != 0, flags & 1 != 0);
}

fn handshake_shaped(flags: u8, body: &[u8]) {
    let Some((&[kind, load], rest)) = body.split_first_chunk::<2>() else {
        return;
    };
    let (ty, len, receiver) = match kind % 4 {
        0 => (1u32, 148, None),
        1 => (2, 92, Some(8)),
        2 => (3, 64, Some(4)),
        _ => (0, 0, None),
    };
    let mut msg = rest.to_vec();
    if len > 0 {
        msg.resize(len, 0);
        msg[..4].copy_from_slice(&ty.to_le_bytes());
        if let Some(at) = receiver.filter(|_| flags & 16 != 0) {
            let idx = harness::peer_index(usize::from(load & 1)) << 8 | u32::from(msg[at]);
            msg[at..at + 4].copy_from_slice(&idx.to_le_bytes());
        }
        if ty != 3 && flags & 32 == 0 {
            set_mac1(&mut msg);
        }
    }
    let mut filler = vec![0u8; 92];
    filler[..4].copy_from_slice(&2u32.to_le_bytes());
    set_mac1(&mut filler);
    let mut messages: Vec<&[u8]> = vec![&filler; usize::from(load % 8)];
    messages.push(&msg);
    harness::fresh(&messages, flags & 1 != 0, flags & 64 != 0);
}

fuzz_target!(|data: &[u8]| {
    let Some((&[part, flags], body)) = data.split_first_chunk::<2>() else {
        return;
    };
    match part % 7 {
        0 => harness::gro_buffer(0, body, flags & 1 != 0),
        1 => harness::gro_buffer(be16(body, 0), body.get(2..).unwrap_or(&[]), flags & 1 != 0),
        2 => sealed(flags, body),
        3 => {
            if flags & 128 != 0 {
                harness::rehandshake(usize::from(flags >> 4 & 1), flags & 1 != 0, flags & 64 != 0);
            }
            sealed(flags, body);
        }
        4 => handshake_shaped(flags, body),
        5 => harness::uapi_set(&String::from_utf8_lossy(body)),
        _ => harness::uapi_conn(body),
    }
});
