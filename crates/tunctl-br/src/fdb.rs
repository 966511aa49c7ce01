//! The forwarding database: which port each source address was last seen on, per VLAN, like
//! the Linux bridge's fdb, but bounded and fair.
//!
//! - Keyed by (MAC, VLAN ID) ([`Key`]): the same address in two VLANs is two entries, each
//!   on its own port, so it does not flap between them.
//! - A keyed hash (std's SipHash with a random key per table), so crafted addresses cannot
//!   pile into one bucket.
//! - A fixed capacity for learned entries, shared max-min fairly. Each port has a weight (1
//!   unless the bridge says otherwise; it gives its uplink more) and a **share**: the
//!   capacity × its weight ÷ the total weight of the ports. While the table has room, every
//!   port learns. When it is full, a port at or over its share recycles its own least
//!   recently used entry (approximately: a second-chance queue per port), and only a port
//!   under its share may take one, from the port furthest over its share (the most entries
//!   per unit of weight). A port flooding random sources fills the free room and then
//!   recycles its own entries: it never takes one from a port at or under its share, and a
//!   port under its share always gets up to its share.
//! - Static entries ([`Fdb::add_static`]): never aged, never moved, never evicted, and not
//!   counted against the capacity (at most as many again). A frame from a static address on
//!   another port is refused ([`Learned::Pinned`]): the bridge drops it.
//! - Ageing: a learned entry not refreshed for the ageing time is gone (lookups ignore it
//!   at once; a sweep removes it). An ageing time of zero turns learning off: every frame
//!   floods, but static entries still hold.
//!
//! Ports are numbered by the caller (small numbers: the tables grow to the largest) and
//! come and go ([`Fdb::set_port`], [`Fdb::remove_port`]). Times are milliseconds on the
//! bridge's own clock, given by the caller.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use crate::frame::Mac;

/// What the table is keyed by: an address in a VLAN (0: untagged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Key {
    /// The address.
    pub mac: Mac,
    /// The VLAN ID (12 bits; 0 for untagged and priority-tagged frames).
    pub vlan: u16,
}

impl Key {
    /// `mac` in `vlan`.
    pub fn new(mac: Mac, vlan: u16) -> Key {
        Key { mac, vlan }
    }
}

impl Hash for Key {
    /// One word: the 48-bit address and the VLAN above it.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let m = self.mac.0;
        let word = u64::from_be_bytes([0, 0, m[0], m[1], m[2], m[3], m[4], m[5]])
            | u64::from(self.vlan) << 48;
        state.write_u64(word);
    }
}

/// One entry.
#[derive(Debug, Clone, Copy)]
struct Entry {
    port: u32,
    /// Added by hand: never ages, moves or is evicted.
    fixed: bool,
    /// Last time a frame from it was seen.
    seen: u64,
    /// Changes when the entry is created or moves: tells stale queue records apart.
    generation: u64,
}

/// What learning a source address did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Known on this port: refreshed.
    Refreshed,
    /// New.
    New,
    /// Known on another port: moved here.
    Moved {
        /// The port it was on.
        from: usize,
    },
    /// Learning is off (ageing 0, hub mode), or the port is not in the table.
    Off,
    /// A static entry on this very port: nothing to learn.
    Static,
    /// A static entry on another port: the address may not come from this one (the bridge
    /// drops the frame).
    Pinned {
        /// The port the static entry is on.
        port: usize,
    },
    /// Not learned: the table is full and the port, at its share, has no entry of its own
    /// to give up (a share of zero).
    Full,
}

/// Per-port figures of the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortFigures {
    /// Learned entries on the port now.
    pub entries: usize,
    /// Static entries on the port.
    pub statics: usize,
    /// Its weight.
    pub weight: u32,
    /// Its share of the capacity: capacity × weight ÷ the ports' total weight.
    pub share: usize,
    /// Addresses learned on it (new entries).
    pub learned: u64,
    /// Addresses that moved to it from another port.
    pub moved: u64,
    /// Its entries removed by ageing.
    pub aged: u64,
    /// Its entries evicted to make room.
    pub evicted: u64,
}

/// An entry as `show` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    /// The address and its VLAN.
    pub key: Key,
    /// The port it is on.
    pub port: usize,
    /// Milliseconds since a frame from it was seen (0 for a static entry never seen).
    pub idle_ms: u64,
    /// Added by hand.
    pub fixed: bool,
}

/// Why a static entry was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaticError {
    /// The port is not in the table.
    NoPort,
    /// As many static entries as the capacity already.
    TooMany,
}

/// A port's part of the table.
#[derive(Debug, Clone, Default)]
struct Slot {
    present: bool,
    figures: PortFigures,
    /// (key, generation, seen when queued), oldest first; lazily cleaned.
    queue: VecDeque<(Key, u64, u64)>,
}

/// The table.
#[derive(Debug)]
pub struct Fdb {
    map: HashMap<Key, Entry, RandomState>,
    capacity: usize,
    ageing_ms: u64,
    slots: Vec<Slot>,
    /// Learned entries (the static ones are not counted).
    learned: usize,
    statics: usize,
    total_weight: u64,
    generation: u64,
}

impl Fdb {
    /// A table of `capacity` learned entries (at least 1) with this ageing time (0: no
    /// learning), and no ports yet.
    pub fn new(capacity: usize, ageing_ms: u64) -> Fdb {
        let capacity = capacity.max(1);
        Fdb {
            map: HashMap::with_capacity_and_hasher(capacity.min(1 << 16), RandomState::new()),
            capacity,
            ageing_ms,
            slots: Vec::new(),
            learned: 0,
            statics: 0,
            total_weight: 0,
            generation: 0,
        }
    }

    /// Adds port `port` with `weight` (at least 1), or changes its weight.
    pub fn set_port(&mut self, port: usize, weight: u32) {
        if port >= self.slots.len() {
            self.slots.resize_with(port + 1, Slot::default);
        }
        let weight = weight.max(1);
        let slot = &mut self.slots[port];
        if slot.present {
            self.total_weight -= u64::from(slot.figures.weight);
        } else {
            *slot = Slot {
                present: true,
                ..Slot::default()
            };
        }
        slot.figures.weight = weight;
        self.total_weight += u64::from(weight);
    }

    /// Removes port `port` and every entry on it, static ones too; returns how many.
    pub fn remove_port(&mut self, port: usize) -> usize {
        let Some(slot) = self.slots.get_mut(port) else {
            return 0;
        };
        if slot.present {
            self.total_weight -= u64::from(slot.figures.weight);
        }
        slot.present = false;
        slot.queue = VecDeque::new();
        let before = self.map.len();
        let (mut learned, mut statics) = (0, 0);
        self.map.retain(|_, e| {
            let gone = e.port as usize == port;
            if gone {
                if e.fixed {
                    statics += 1;
                } else {
                    learned += 1;
                }
            }
            !gone
        });
        self.learned -= learned;
        self.statics -= statics;
        let f = &mut self.slots[port].figures;
        f.entries = 0;
        f.statics = 0;
        before - self.map.len()
    }

    fn present(&self, port: usize) -> bool {
        self.slots.get(port).is_some_and(|s| s.present)
    }

    /// The number of learned entries.
    pub fn len(&self) -> usize {
        self.learned
    }

    /// The number of static entries.
    pub fn statics(&self) -> usize {
        self.statics
    }

    /// Whether the table holds no entry at all.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The capacity (learned entries).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Port `port`'s share of the capacity.
    pub fn share(&self, port: usize) -> usize {
        match self.slots.get(port) {
            Some(s) if s.present && self.total_weight > 0 => {
                (self.capacity as u128 * u128::from(s.figures.weight)
                    / u128::from(self.total_weight)) as usize
            }
            _ => 0,
        }
    }

    fn expired(&self, e: &Entry, now: u64) -> bool {
        !e.fixed && now.saturating_sub(e.seen) >= self.ageing_ms
    }

    /// Learns that `key` is on `port` (a valid source: the caller checks).
    pub fn learn(&mut self, key: Key, port: usize, now: u64) -> Learned {
        if !self.present(port) || (self.ageing_ms == 0 && self.statics == 0) {
            return Learned::Off;
        }
        if let Some(e) = self.map.get_mut(&key) {
            let old = e.port as usize;
            if e.fixed {
                return if old == port {
                    e.seen = now;
                    Learned::Static
                } else {
                    Learned::Pinned { port: old }
                };
            }
            if self.ageing_ms == 0 {
                return Learned::Off;
            }
            e.seen = now;
            if old == port {
                return Learned::Refreshed;
            }
            self.generation += 1;
            e.port = port as u32;
            e.generation = self.generation;
            self.queue(port, key, now);
            self.slots[old].figures.entries -= 1;
            let f = &mut self.slots[port].figures;
            f.entries += 1;
            f.moved += 1;
            return Learned::Moved { from: old };
        }
        if self.ageing_ms == 0 {
            return Learned::Off;
        }
        if self.learned >= self.capacity && !self.make_room(port, now) {
            return Learned::Full;
        }
        self.generation += 1;
        self.map.insert(
            key,
            Entry {
                port: port as u32,
                fixed: false,
                seen: now,
                generation: self.generation,
            },
        );
        self.learned += 1;
        self.queue(port, key, now);
        let f = &mut self.slots[port].figures;
        f.entries += 1;
        f.learned += 1;
        Learned::New
    }

    /// Queues a record of the entry just made or moved; a queue grown well past its
    /// port's entries (stale records of moved or aged entries) is cleaned first, so memory
    /// stays bounded by the table whatever the rate of moves (amortised: a cleaning at
    /// least halves the queue).
    fn queue(&mut self, port: usize, key: Key, now: u64) {
        if self.slots[port].queue.len() > 2 * self.slots[port].figures.entries + 64 {
            self.compact_port(port);
        }
        let generation = self.generation;
        self.slots[port].queue.push_back((key, generation, now));
    }

    /// The port `key` is on, if it is known and not aged out.
    pub fn lookup(&self, key: &Key, now: u64) -> Option<usize> {
        if self.ageing_ms == 0 && self.statics == 0 {
            return None;
        }
        self.map
            .get(key)
            .filter(|e| e.fixed || (self.ageing_ms > 0 && !self.expired(e, now)))
            .map(|e| e.port as usize)
    }

    /// Makes room for one entry learned on `port` in a full table: its own least recently
    /// used entry if it is at or over its share, else one of the port furthest over its
    /// share. False if there was nothing to give up.
    fn make_room(&mut self, port: usize, now: u64) -> bool {
        let victim = if self.slots[port].figures.entries >= self.share(port) {
            port
        } else {
            // The most entries per unit of weight: a / wa > b / wb as a * wb > b * wa.
            let load = |s: &Slot| (s.figures.entries as u128, u128::from(s.figures.weight));
            let mut best: Option<usize> = None;
            for (j, s) in self.slots.iter().enumerate() {
                if j == port || !s.present || s.figures.entries == 0 {
                    continue;
                }
                let better = best.is_none_or(|b| {
                    let ((a, wa), (c, wc)) = (load(s), load(&self.slots[b]));
                    a * wc > c * wa
                });
                if better {
                    best = Some(j);
                }
            }
            best.unwrap_or(port)
        };
        self.evict_from(victim, now)
    }

    /// Evicts the least recently used entry of `victim` (second chance: a record whose
    /// entry was refreshed since it was queued goes to the back; stale records, of entries
    /// that moved or went, are dropped). Bounded by two passes over its queue.
    fn evict_from(&mut self, victim: usize, now: u64) -> bool {
        let rounds = 2 * self.slots[victim].queue.len() + 1;
        for _ in 0..rounds {
            let Some((key, generation, queued)) = self.slots[victim].queue.pop_front() else {
                break;
            };
            let Some(e) = self.map.get(&key).copied() else {
                continue;
            };
            if e.port as usize != victim || e.generation != generation || e.fixed {
                continue;
            }
            if e.seen > queued && !self.expired(&e, now) {
                self.slots[victim]
                    .queue
                    .push_back((key, generation, e.seen));
                continue;
            }
            self.map.remove(&key);
            self.learned -= 1;
            let f = &mut self.slots[victim].figures;
            f.entries -= 1;
            f.evicted += 1;
            return true;
        }
        false
    }

    /// Adds (or replaces) a static entry: `key` on `port`, whatever was learned of it.
    /// Returns whether an entry for `key` existed (learned or static).
    ///
    /// # Errors
    ///
    /// [`StaticError::NoPort`] for a port not in the table, [`StaticError::TooMany`] when
    /// there are as many static entries as the capacity.
    pub fn add_static(&mut self, key: Key, port: usize) -> Result<bool, StaticError> {
        if !self.present(port) {
            return Err(StaticError::NoPort);
        }
        let existing = self.map.get(&key).map(|e| (e.port as usize, e.fixed));
        if !existing.is_some_and(|(_, fixed)| fixed) && self.statics >= self.capacity {
            return Err(StaticError::TooMany);
        }
        if let Some((old, fixed)) = existing {
            self.forget(old, fixed);
        }
        self.generation += 1;
        self.map.insert(
            key,
            Entry {
                port: port as u32,
                fixed: true,
                seen: 0,
                generation: self.generation,
            },
        );
        self.statics += 1;
        self.slots[port].figures.statics += 1;
        Ok(existing.is_some())
    }

    /// Removes the entry for `key`, static or learned; returns (port, static) of what it
    /// removed.
    pub fn remove(&mut self, key: &Key) -> Option<(usize, bool)> {
        let e = self.map.remove(key)?;
        self.forget(e.port as usize, e.fixed);
        Some((e.port as usize, e.fixed))
    }

    /// Counts an entry of `port` out (its queue record, if any, is now stale).
    fn forget(&mut self, port: usize, fixed: bool) {
        let f = &mut self.slots[port].figures;
        if fixed {
            f.statics -= 1;
            self.statics -= 1;
        } else {
            f.entries -= 1;
            self.learned -= 1;
        }
    }

    /// Removes the learned entries aged out by `now`; returns how many.
    pub fn sweep(&mut self, now: u64) -> usize {
        if self.ageing_ms == 0 {
            return 0;
        }
        let ageing = self.ageing_ms;
        let mut gone = 0;
        let slots = &mut self.slots;
        self.map.retain(|_, e| {
            let keep = e.fixed || now.saturating_sub(e.seen) < ageing;
            if !keep {
                let f = &mut slots[e.port as usize].figures;
                f.entries -= 1;
                f.aged += 1;
                gone += 1;
            }
            keep
        });
        self.learned -= gone;
        self.compact();
        gone
    }

    /// Drops stale records from queues that grew well past their port's entries (moves and
    /// ageing leave records behind).
    fn compact(&mut self) {
        for port in 0..self.slots.len() {
            if self.slots[port].queue.len() > 2 * self.slots[port].figures.entries + 64 {
                self.compact_port(port);
            }
        }
    }

    fn compact_port(&mut self, port: usize) {
        let map = &self.map;
        self.slots[port].queue.retain(|(key, generation, _)| {
            map.get(key)
                .is_some_and(|e| e.port as usize == port && e.generation == *generation)
        });
    }

    /// Per-port figures, indexed by port (a port not in the table has zeros).
    pub fn figures(&self) -> Vec<PortFigures> {
        (0..self.slots.len())
            .map(|i| PortFigures {
                share: self.share(i),
                ..self.slots[i].figures
            })
            .collect()
    }

    /// The entries alive at `now`, in no order (a copy: sort it after letting go of the
    /// table's lock).
    pub fn entries(&self, now: u64) -> Vec<Listed> {
        self.map
            .iter()
            .filter(|(_, e)| e.fixed || (self.ageing_ms > 0 && !self.expired(e, now)))
            .map(|(key, e)| Listed {
                key: *key,
                port: e.port as usize,
                idle_ms: if e.fixed && e.seen == 0 {
                    0
                } else {
                    now.saturating_sub(e.seen)
                },
                fixed: e.fixed,
            })
            .collect()
    }

    /// Memory held by the queues, in records (for tests of boundedness).
    pub fn queued(&self) -> usize {
        self.slots.iter().map(|s| s.queue.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u32) -> Key {
        let b = n.to_be_bytes();
        Key::new(Mac([2, 0, b[0], b[1], b[2], b[3]]), 0)
    }

    /// A table with ports 0..n of weight 1.
    fn table(capacity: usize, ageing: u64, n: usize) -> Fdb {
        let mut t = Fdb::new(capacity, ageing);
        for p in 0..n {
            t.set_port(p, 1);
        }
        t
    }

    #[test]
    fn learns_moves_ages_and_floods_in_hub_mode() {
        let mut t = table(16, 1000, 3);
        assert_eq!(t.learn(mac(1), 0, 0), Learned::New);
        assert_eq!(t.learn(mac(1), 0, 10), Learned::Refreshed);
        assert_eq!(t.lookup(&mac(1), 20), Some(0));
        assert_eq!(t.learn(mac(1), 2, 30), Learned::Moved { from: 0 });
        assert_eq!(t.lookup(&mac(1), 40), Some(2));
        assert_eq!(t.figures()[0].entries, 0);
        assert_eq!(t.figures()[2].moved, 1);
        // Aged: gone for lookups at once, removed by the sweep.
        assert_eq!(t.lookup(&mac(1), 1030), None);
        assert_eq!(t.sweep(1030), 1);
        assert_eq!(t.figures()[2].aged, 1);
        assert!(t.is_empty());
        // A port not in the table learns nothing.
        assert_eq!(t.learn(mac(1), 7, 0), Learned::Off);
        let mut hub = table(16, 0, 2);
        assert_eq!(hub.learn(mac(1), 0, 0), Learned::Off);
        assert_eq!(hub.lookup(&mac(1), 0), None);
    }

    #[test]
    fn the_same_address_in_two_vlans_is_two_entries() {
        let mut t = table(16, 1000, 2);
        let (a, b) = (Key::new(mac(1).mac, 10), Key::new(mac(1).mac, 20));
        assert_eq!(t.learn(a, 0, 0), Learned::New);
        assert_eq!(t.learn(b, 1, 0), Learned::New);
        for _ in 0..3 {
            assert_eq!(t.learn(a, 0, 1), Learned::Refreshed);
            assert_eq!(t.learn(b, 1, 1), Learned::Refreshed);
        }
        assert_eq!((t.lookup(&a, 2), t.lookup(&b, 2)), (Some(0), Some(1)));
        assert_eq!(t.lookup(&mac(1), 2), None, "untagged: not learned");
        assert_eq!(t.figures()[0].moved + t.figures()[1].moved, 0);
    }

    #[test]
    fn a_flood_from_one_port_evicts_only_its_own_entries() {
        let mut t = table(100, 300_000, 3);
        for i in 0..10 {
            t.learn(mac(i), 1, 0);
            t.learn(mac(1000 + i), 2, 0);
        }
        for i in 0..100_000u32 {
            t.learn(mac(10_000 + i), 0, u64::from(i));
            // The others keep talking now and then.
            if i % 1000 == 0 {
                for j in 0..10 {
                    t.learn(mac(j), 1, u64::from(i));
                }
            }
        }
        assert_eq!(t.len(), 100);
        for i in 0..10 {
            assert_eq!(t.lookup(&mac(i), 100_000), Some(1));
            assert_eq!(t.lookup(&mac(1000 + i), 100_000), Some(2));
        }
        assert_eq!(t.figures()[0].entries, 80);
        assert!(t.figures()[0].evicted >= 99_900);
        assert_eq!(t.figures()[1].evicted + t.figures()[2].evicted, 0);
        assert!(
            t.queued() <= 3 * 100 + 200,
            "queues bounded: {}",
            t.queued()
        );
    }

    /// The case, in the table alone: 4 ports of 1024 each in 4096; port 2 holds
    /// 3000 (the table had room); port 1 floods: it fills the free room, past its share,
    /// then recycles its own. Port 3, under its share, then takes its share from the port
    /// furthest over its share (2), never from 1.
    #[test]
    fn max_min_shares_a_full_table() {
        let mut t = table(4096, 300_000, 4);
        for i in 0..3000 {
            t.learn(mac(i), 2, 0);
        }
        for i in 0..100_000u32 {
            t.learn(mac(1_000_000 + i), 1, 1);
        }
        let f = t.figures();
        assert_eq!((f[1].entries, f[2].entries), (1096, 3000));
        assert_eq!(f[2].evicted, 0);
        assert_eq!(f[1].share, 1024);
        for i in 0..1024 {
            assert_eq!(t.learn(mac(2_000_000 + i), 3, 2), Learned::New);
        }
        let f = t.figures();
        assert_eq!(f[3].entries, 1024, "port 3 got its share");
        assert_eq!(f[2].entries, 3000 - 1024, "from the port furthest over");
        assert_eq!(f[1].entries, 1096);
        // At its share now: the next one recycles port 3's own.
        t.learn(mac(3_000_000), 3, 3);
        assert_eq!(t.figures()[3].entries, 1024);
        assert_eq!(t.figures()[3].evicted, 1);
        assert_eq!(t.len(), 4096);
    }

    #[test]
    fn weights_size_the_shares() {
        // The uplink (port 3) weighs as much as the three others: half the table.
        let mut t = table(1000, 300_000, 3);
        t.set_port(3, 3);
        assert_eq!((t.share(0), t.share(3)), (166, 500));
        for i in 0..1000 {
            t.learn(mac(i), 0, 0);
        }
        // The uplink, under its share, takes from port 0 up to its share, then recycles.
        for i in 0..600 {
            t.learn(mac(10_000 + i), 3, 1);
        }
        assert_eq!(t.figures()[3].entries, 500);
        assert_eq!(t.figures()[0].entries, 500);
        t.remove_port(3);
        assert_eq!(t.share(0), 333);
        assert_eq!(t.len(), 500);
    }

    #[test]
    fn recently_used_entries_survive_eviction() {
        let mut t = table(4, 300_000, 2);
        for i in 0..4 {
            t.learn(mac(i), 0, u64::from(i));
        }
        t.learn(mac(0), 0, 10); // used again: second chance
        t.learn(mac(99), 0, 11); // evicts the oldest unused: mac(1)
        assert_eq!(t.lookup(&mac(0), 12), Some(0));
        assert_eq!(t.lookup(&mac(1), 12), None);
    }

    #[test]
    fn static_entries_hold_their_port_and_never_age() {
        let mut t = table(4, 1000, 3);
        let gw = mac(7);
        assert_eq!(t.learn(gw, 1, 0), Learned::New);
        assert_eq!(t.add_static(gw, 0), Ok(true), "replaces the learned one");
        assert_eq!((t.len(), t.statics()), (0, 1));
        assert_eq!(t.learn(gw, 2, 5), Learned::Pinned { port: 0 });
        assert_eq!(t.learn(gw, 0, 5), Learned::Static);
        assert_eq!(t.lookup(&gw, 1_000_000), Some(0));
        assert_eq!(t.sweep(1_000_000), 0);
        // Not counted against the capacity, never evicted.
        for i in 0..10 {
            t.learn(mac(100 + i), 0, 2_000_000);
        }
        assert_eq!((t.len(), t.statics()), (4, 1));
        assert_eq!(t.lookup(&gw, 2_000_000), Some(0));
        assert_eq!(t.figures()[0].statics, 1);
        assert_eq!(t.add_static(mac(8), 9), Err(StaticError::NoPort));
        for i in 0..3 {
            t.add_static(mac(200 + i), 1).unwrap();
        }
        assert_eq!(t.add_static(mac(300), 1), Err(StaticError::TooMany));
        assert_eq!(t.lookup(&mac(109), 2_000_000), Some(0));
        assert_eq!(
            t.add_static(mac(109), 1),
            Err(StaticError::TooMany),
            "nor in place of a learned one"
        );
        assert_eq!(t.add_static(mac(200), 2), Ok(true), "a static one moves");
        assert_eq!((t.statics(), t.figures()[2].statics), (4, 1));
        assert_eq!(t.remove(&gw), Some((0, true)));
        assert_eq!(t.learn(gw, 2, 3_000_000), Learned::New);
        // Hub mode: no learning, static entries still hold.
        let mut hub = table(16, 0, 2);
        hub.add_static(gw, 1).unwrap();
        assert_eq!(hub.lookup(&gw, 0), Some(1));
        assert_eq!(hub.learn(gw, 0, 0), Learned::Pinned { port: 1 });
        assert_eq!(hub.learn(mac(1), 0, 0), Learned::Off);
        // A port removed takes its static entries along.
        assert_eq!(hub.remove_port(1), 1);
        assert_eq!((hub.statics(), hub.lookup(&gw, 0)), (0, None));
    }

    #[test]
    fn ping_pong_moves_keep_the_queues_bounded() {
        let mut t = table(8, 1000, 2);
        for i in 0..100_000u64 {
            t.learn(mac(1), (i % 2) as usize, i / 1000);
            if i % 1000 == 0 {
                t.sweep(i / 1000);
            }
        }
        assert!(t.queued() < 200, "{}", t.queued());
        assert_eq!(t.remove_port(1) + t.remove_port(0), 1);
        assert!(t.is_empty());
    }
}
