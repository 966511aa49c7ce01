//! br's frame parser and forwarding table on any bytes.
//!
//! - `frame::parse` never panics, agrees with a plain re-reading of the header (addresses,
//!   refusals in the bridge's order, 802.1Q/802.1ad tags skipped, at most two) and never
//!   reports a header longer than the frame.
//! - A small `Fdb` driven by fuzz-chosen operations (learn, lookup, sweep, flush, with
//!   fuzz-chosen ports, some out of range, and a monotonic fuzz-chosen clock) keeps its
//!   bound (len ≤ capacity), its per-port figures summing to its length, its queues
//!   bounded, and never answers a lookup with a port out of range, a port the address was
//!   not last learned on, an address flushed or aged, or nothing for the address just
//!   learned.
#![no_main]
use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use tunctl_br::fdb::{Fdb, Learned};
use tunctl_br::frame::{self, Mac, Refusal, MIN_FRAME};

/// An independent reading of what `parse` must say.
fn expected(f: &[u8]) -> Result<(Mac, Mac, usize, u16), Refusal> {
    if f.len() < 14 {
        return Err(Refusal::Runt);
    }
    let dst = Mac(f[0..6].try_into().unwrap());
    let src = Mac(f[6..12].try_into().unwrap());
    if src.0[0] & 1 == 1 || src.0 == [0; 6] {
        return Err(Refusal::InvalidSource);
    }
    if dst.0[..5] == [0x01, 0x80, 0xc2, 0, 0] && dst.0[5] <= 0x0f {
        return Err(Refusal::LinkLocal);
    }
    let mut at = 12;
    let mut tags = 0;
    loop {
        let t = u16::from_be_bytes([f[at], f[at + 1]]);
        if tags == 2 || (t != 0x8100 && t != 0x88a8) {
            return Ok((dst, src, at + 2, t));
        }
        if f.len() < at + 6 {
            // Cut inside the tag: the header counts what it has, the type is unknown.
            return Ok((dst, src, at + 2, 0));
        }
        at += 4;
        tags += 1;
    }
}

/// Addresses from a small pool (so that they collide, move and get evicted), all valid
/// sources.
fn mac(b: u8) -> Mac {
    Mac([0x02, 0, 0, 0, b >> 4, b & 0x0f])
}

fuzz_target!(|data: &[u8]| {
    // The frame parser on the whole input, then on every suffix start within the first 24
    // bytes (cuts inside tags).
    for skip in 0..data.len().min(24) {
        let f = &data[skip..];
        let got = frame::parse(f);
        let want = expected(f);
        match (got, want) {
            (Ok(h), Ok((dst, src, len, ethertype))) => {
                assert_eq!(
                    (h.dst, h.src, h.len, h.ethertype),
                    (dst, src, len, ethertype)
                );
                assert!(h.len >= MIN_FRAME && h.len <= f.len() && h.len <= 22);
                assert!(h.src.is_valid_source() && !h.dst.is_link_local());
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            (g, w) => panic!("parse {f:02x?}: {g:?}, expected {w:?}"),
        }
    }

    // The table: [ports, capacity, ageing, uplink] then operations of 3 bytes.
    let Some((cfg, mut ops)) = data.split_first_chunk::<4>() else {
        return;
    };
    let ports = 1 + usize::from(cfg[0] % 5);
    let capacity = 1 + usize::from(cfg[1] % 12);
    let ageing = u64::from(cfg[2] % 8) * 40;
    let uplink = (usize::from(cfg[3] % 8) < ports).then_some(usize::from(cfg[3] % 8));
    let mut t = Fdb::new(capacity, ageing, ports, uplink);
    assert_eq!(t.capacity(), capacity);
    // What the table was last told per address: (port, when).
    let mut told: HashMap<Mac, (usize, u64)> = HashMap::new();
    let mut now = 0u64;
    let mut count = 0;
    while let Some((op, rest)) = ops.split_first_chunk::<3>() {
        ops = rest;
        count += 1;
        if count > 4096 {
            break;
        }
        let [kind, a, b] = *op;
        // The clock only goes forward, by 0 to 63 ms a step.
        now += u64::from(kind >> 2);
        let port = usize::from(b % 8);
        match kind & 3 {
            0 | 1 => {
                let m = mac(a);
                let len = t.len();
                let learned = t.learn(m, port, now);
                if ageing == 0 || port >= ports {
                    assert_eq!(learned, Learned::Off);
                    assert_eq!(t.len(), len);
                } else {
                    match learned {
                        Learned::Off => panic!("learning is on"),
                        Learned::Refreshed => {
                            assert_eq!(told.get(&m).map(|x| x.0), Some(port))
                        }
                        Learned::Moved { from } => {
                            assert_ne!(from, port);
                            assert_eq!(told.get(&m).map(|x| x.0), Some(from));
                        }
                        Learned::New => {}
                    }
                    told.insert(m, (port, now));
                    // Just learned: found at once, on that port.
                    assert_eq!(t.lookup(&m, now), Some(port));
                }
            }
            2 => {
                let gone = t.sweep(now);
                assert!(gone <= capacity);
                // What is left is alive.
                assert_eq!(t.entries(now).len(), t.len());
            }
            _ => {
                let before = t.len();
                let gone = t.flush_port(port);
                assert_eq!(t.len() + gone, before);
                told.retain(|_, x| x.0 != port);
                if port < ports {
                    assert_eq!(t.figures()[port].entries, 0);
                }
            }
        }
        // Invariants after every operation.
        assert!(t.len() <= capacity, "{} > {capacity}", t.len());
        assert_eq!(t.figures().len(), ports);
        assert_eq!(
            t.figures().iter().map(|f| f.entries).sum::<usize>(),
            t.len()
        );
        assert!(
            t.queued() <= ports * (2 * capacity + 66),
            "queues unbounded: {}",
            t.queued()
        );
        for probe in [a, b, a ^ b] {
            let m = mac(probe);
            if let Some(p) = t.lookup(&m, now) {
                assert!(p < ports, "lookup gave port {p} of {ports}");
                let (q, seen) = told
                    .get(&m)
                    .copied()
                    .unwrap_or_else(|| panic!("{m} found but never learned or flushed"));
                assert_eq!(p, q, "{m} found on a port it was not last learned on");
                assert!(now - seen < ageing, "{m} found though aged");
            }
        }
        for l in t.entries(now) {
            assert!(l.port < ports && l.idle_ms < ageing.max(1));
            assert_eq!(told.get(&l.mac).map(|x| x.0), Some(l.port));
        }
    }
});
