//! br's frame parser and forwarding table on any bytes.
//!
//! - `frame::parse` never panics, agrees with a plain re-reading of the header (addresses,
//!   refusals in the bridge's order, STP's group forwarded, 802.1Q/802.1ad tags skipped, at
//!   most two, the outer one's VLAN) and never reports a header longer than the frame.
//! - A small `Fdb` driven by fuzz-chosen operations (learn, lookup, sweep, a port removed,
//!   static entries added and removed, with fuzz-chosen ports and weights, some out of
//!   range, and a monotonic fuzz-chosen clock) keeps its bound (len ≤ capacity), its
//!   per-port figures summing to its counts, its queues bounded, never lets a learning port
//!   take an entry from a port at or under its share, and never answers a lookup with a
//!   port out of range, a port the address was not last put on, an address removed or
//!   aged, or nothing for the address just learned.
#![no_main]
use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use tunctl_br::fdb::{Fdb, Key, Learned};
use tunctl_br::frame::{self, Mac, Refusal, MIN_FRAME};

/// An independent reading of what `parse` must say: (dst, src, header length, type, VLAN).
fn expected(f: &[u8]) -> Result<(Mac, Mac, usize, u16, u16), Refusal> {
    if f.len() < 14 {
        return Err(Refusal::Runt);
    }
    let dst = Mac(f[0..6].try_into().unwrap());
    let src = Mac(f[6..12].try_into().unwrap());
    if src.0[0] & 1 == 1 || src.0 == [0; 6] {
        return Err(Refusal::InvalidSource);
    }
    if dst.0[..5] == [0x01, 0x80, 0xc2, 0, 0] && (1..=0x0f).contains(&dst.0[5]) {
        return Err(Refusal::LinkLocal);
    }
    let mut at = 12;
    let mut tags = 0;
    let mut vlan = 0;
    loop {
        let t = u16::from_be_bytes([f[at], f[at + 1]]);
        if tags == 2 || (t != 0x8100 && t != 0x88a8) {
            return Ok((dst, src, at + 2, t, vlan));
        }
        if f.len() < at + 6 {
            // Cut inside the tag: the header counts what it has, the type is unknown.
            return Ok((dst, src, at + 2, 0, vlan));
        }
        if tags == 0 {
            vlan = u16::from_be_bytes([f[at + 2], f[at + 3]]) & 0x0fff;
        }
        at += 4;
        tags += 1;
    }
}

/// Addresses from a small pool (so that they collide, move and get evicted), all valid
/// sources, in VLAN 0 or 1.
fn key(b: u8) -> Key {
    Key::new(
        Mac([0x02, 0, 0, 0, (b >> 4) & 7, b & 0x0f]),
        u16::from(b >> 7),
    )
}

fuzz_target!(|data: &[u8]| {
    // The frame parser on the whole input, then on every suffix start within the first 24
    // bytes (cuts inside tags).
    for skip in 0..data.len().min(24) {
        let f = &data[skip..];
        let got = frame::parse(f);
        let want = expected(f);
        match (got, want) {
            (Ok(h), Ok((dst, src, len, ethertype, vlan))) => {
                assert_eq!(
                    (h.dst, h.src, h.len, h.ethertype, h.vlan),
                    (dst, src, len, ethertype, vlan)
                );
                assert!(h.len >= MIN_FRAME && h.len <= f.len() && h.len <= 22);
                assert!(h.src.is_valid_source() && (!h.dst.is_link_local() || h.dst.is_stp()));
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            (g, w) => panic!("parse {f:02x?}: {g:?}, expected {w:?}"),
        }
    }

    // The table: [ports, capacity, ageing, weights] then operations of 3 bytes.
    let Some((cfg, mut ops)) = data.split_first_chunk::<4>() else {
        return;
    };
    let ports = 1 + usize::from(cfg[0] % 5);
    let capacity = 1 + usize::from(cfg[1] % 12);
    let ageing = u64::from(cfg[2] % 8) * 40;
    let mut t = Fdb::new(capacity, ageing);
    // Each port weighs 1 to 4 (two bits of cfg[3] each, recycled).
    let weight = |p: usize| 1 + u32::from((cfg[3] >> ((p % 4) * 2)) & 3);
    let mut present = vec![true; ports];
    for p in 0..ports {
        t.set_port(p, weight(p));
    }
    assert_eq!(t.capacity(), capacity);
    // What the table was last told per key: (port, when, static).
    let mut told: HashMap<Key, (usize, u64, bool)> = HashMap::new();
    let mut now = 0u64;
    let mut count = 0;
    while let Some((op, rest)) = ops.split_first_chunk::<3>() {
        ops = rest;
        count += 1;
        if count > 4096 {
            break;
        }
        let [kind, a, b] = *op;
        // The clock only goes forward, by 0 to 31 ms a step.
        now += u64::from(kind >> 3);
        let port = usize::from(b % 8);
        let live = port < ports && present[port];
        let k = key(a);
        match kind & 7 {
            0..=3 => {
                let len = t.len();
                let before = t.figures();
                let learned = t.learn(k, port, now);
                let fixed = told.get(&k).filter(|x| x.2).map(|x| x.0);
                match learned {
                    Learned::Off => {
                        assert!(!live || ageing == 0, "{learned:?}");
                        assert_eq!(t.len(), len);
                    }
                    Learned::Static => assert_eq!(fixed, Some(port)),
                    Learned::Pinned { port: p } => {
                        assert_eq!(fixed, Some(p));
                        assert_ne!(p, port);
                    }
                    Learned::Full => assert!(t.share(port) == 0 && before[port].entries == 0),
                    Learned::Refreshed => {
                        assert_eq!(told.get(&k).map(|x| x.0), Some(port))
                    }
                    Learned::Moved { from } => {
                        assert_ne!(from, port);
                        assert_eq!(told.get(&k).map(|x| x.0), Some(from));
                    }
                    Learned::New => {
                        // Only a port under its share takes another port's entry, and not
                        // from one at or under its own share.
                        let after = t.figures();
                        for (q, (x, y)) in before.iter().zip(&after).enumerate() {
                            if q != port && y.evicted > x.evicted {
                                assert!(before[port].entries < before[port].share);
                                assert!(x.entries > x.share || x.share == 0, "{q}: {x:?}");
                            }
                        }
                    }
                }
                if matches!(
                    learned,
                    Learned::New | Learned::Moved { .. } | Learned::Refreshed
                ) {
                    told.insert(k, (port, now, false));
                    // Just learned: found at once, on that port.
                    assert_eq!(t.lookup(&k, now), Some(port));
                }
            }
            4 => {
                let gone = t.sweep(now);
                assert!(gone <= capacity);
                // What is left is alive.
                assert_eq!(t.entries(now).len(), t.len() + t.statics());
            }
            5 => {
                match t.add_static(k, port) {
                    Ok(_) => {
                        assert!(live);
                        told.insert(k, (port, now, true));
                        assert_eq!(t.lookup(&k, now), Some(port));
                    }
                    Err(_) => assert!(!live || t.statics() >= capacity),
                }
            }
            6 => {
                if t.remove(&k).is_some() {
                    told.remove(&k);
                }
                assert_eq!(t.lookup(&k, now), None);
            }
            _ => {
                let before = t.len() + t.statics();
                let gone = t.remove_port(port);
                assert_eq!(t.len() + t.statics() + gone, before);
                told.retain(|_, x| x.0 != port);
                if port < ports {
                    present[port] = false;
                    assert_eq!(t.figures()[port].entries, 0);
                    // It comes back at once, empty.
                    t.set_port(port, weight(port));
                    present[port] = true;
                }
            }
        }
        // Invariants after every operation.
        let figures = t.figures();
        assert!(t.len() <= capacity, "{} > {capacity}", t.len());
        assert!(t.statics() <= capacity);
        assert_eq!(figures.iter().map(|f| f.entries).sum::<usize>(), t.len());
        assert_eq!(
            figures.iter().map(|f| f.statics).sum::<usize>(),
            t.statics()
        );
        assert!(figures.iter().map(|f| f.share).sum::<usize>() <= capacity);
        assert!(
            t.queued() <= ports * (2 * capacity + 66),
            "queues unbounded: {}",
            t.queued()
        );
        for probe in [a, b, a ^ b] {
            let k = key(probe);
            if let Some(p) = t.lookup(&k, now) {
                assert!(p < ports, "lookup gave port {p} of {ports}");
                let (q, seen, fixed) = told
                    .get(&k)
                    .copied()
                    .unwrap_or_else(|| panic!("{k:?} found but never put there"));
                assert_eq!(p, q, "{k:?} found on a port it was not last put on");
                assert!(fixed || now - seen < ageing, "{k:?} found though aged");
            }
        }
        for l in t.entries(now) {
            assert!(l.port < ports);
            assert!(l.fixed || l.idle_ms < ageing.max(1));
            assert_eq!(
                told.get(&l.key).map(|x| (x.0, x.2)),
                Some((l.port, l.fixed))
            );
        }
    }
});
