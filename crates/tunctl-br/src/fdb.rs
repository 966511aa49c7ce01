//! The forwarding database: which port each source MAC was last seen on, like the Linux
//! bridge's fdb, but bounded.
//!
//! - A keyed hash (std's SipHash with a random key per table), so crafted addresses cannot
//!   pile into one bucket.
//! - A fixed capacity. When it is full, a new address evicts the least recently used entry
//!   (approximately: a second-chance queue per port) of the port holding the most entries,
//!   so a MAC flood from one port evicts that port's own entries and never the others'
//!   (Open vSwitch's fair eviction). The uplink, which legitimately carries many addresses,
//!   counts half when the victim port is chosen.
//! - Ageing: an entry not refreshed for the ageing time is gone (lookups ignore it at once;
//!   a sweep removes it). An ageing time of zero turns learning off: every frame floods.
//!
//! Times are milliseconds on the bridge's own clock, given by the caller.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};

use crate::frame::Mac;

/// One learned address.
#[derive(Debug, Clone, Copy)]
struct Entry {
    port: usize,
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
    /// Learning is off (ageing 0, hub mode).
    Off,
}

/// Per-port figures of the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortFigures {
    /// Entries on the port now.
    pub entries: usize,
    /// Addresses learned on it (new entries).
    pub learned: u64,
    /// Addresses that moved to it from another port.
    pub moved: u64,
    /// Its entries removed by ageing.
    pub aged: u64,
    /// Its entries evicted to make room.
    pub evicted: u64,
}

/// A learned address as `show` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    /// The address.
    pub mac: Mac,
    /// The port it is on.
    pub port: usize,
    /// Milliseconds since a frame from it was seen.
    pub idle_ms: u64,
}

/// The table.
#[derive(Debug)]
pub struct Fdb {
    map: HashMap<Mac, Entry, RandomState>,
    capacity: usize,
    ageing_ms: u64,
    uplink: Option<usize>,
    /// Per port: (address, generation, seen when queued), oldest first; lazily cleaned.
    queues: Vec<VecDeque<(Mac, u64, u64)>>,
    figures: Vec<PortFigures>,
    generation: u64,
}

impl Fdb {
    /// A table of `capacity` entries (at least 1) for `ports` ports, with this ageing time
    /// (0: no learning), `uplink` counting half when a port must give up an entry.
    pub fn new(capacity: usize, ageing_ms: u64, ports: usize, uplink: Option<usize>) -> Fdb {
        let capacity = capacity.max(1);
        Fdb {
            map: HashMap::with_capacity_and_hasher(capacity.min(1 << 16), RandomState::new()),
            capacity,
            ageing_ms,
            uplink,
            queues: vec![VecDeque::new(); ports],
            figures: vec![PortFigures::default(); ports],
            generation: 0,
        }
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn expired(&self, e: &Entry, now: u64) -> bool {
        now.saturating_sub(e.seen) >= self.ageing_ms
    }

    /// Learns that `mac` is on `port` (a valid source: the caller checks).
    pub fn learn(&mut self, mac: Mac, port: usize, now: u64) -> Learned {
        if self.ageing_ms == 0 || port >= self.figures.len() {
            return Learned::Off;
        }
        if let Some(e) = self.map.get_mut(&mac) {
            let old = e.port;
            e.seen = now;
            if old == port {
                return Learned::Refreshed;
            }
            self.generation += 1;
            e.port = port;
            e.generation = self.generation;
            self.queue(port, mac, now);
            self.figures[old].entries -= 1;
            self.figures[port].entries += 1;
            self.figures[port].moved += 1;
            return Learned::Moved { from: old };
        }
        if self.map.len() >= self.capacity {
            self.evict(now);
        }
        self.generation += 1;
        self.map.insert(
            mac,
            Entry {
                port,
                seen: now,
                generation: self.generation,
            },
        );
        self.queue(port, mac, now);
        self.figures[port].entries += 1;
        self.figures[port].learned += 1;
        Learned::New
    }

    /// Queues a record of the entry just made or moved; a queue grown well past its
    /// port's entries (stale records of moved or aged entries) is cleaned first, so memory
    /// stays bounded by the table whatever the rate of moves (amortised: a cleaning at
    /// least halves the queue).
    fn queue(&mut self, port: usize, mac: Mac, now: u64) {
        if self.queues[port].len() > 2 * self.figures[port].entries + 64 {
            self.compact_port(port);
        }
        self.queues[port].push_back((mac, self.generation, now));
    }

    /// The port `mac` is on, if it is known and not aged out.
    pub fn lookup(&self, mac: &Mac, now: u64) -> Option<usize> {
        if self.ageing_ms == 0 {
            return None;
        }
        self.map
            .get(mac)
            .filter(|e| !self.expired(e, now))
            .map(|e| e.port)
    }

    /// Makes room for one entry: the least recently used entry of the port holding the most.
    fn evict(&mut self, now: u64) {
        let weight = |i: usize, f: &PortFigures| {
            if Some(i) == self.uplink {
                f.entries / 2
            } else {
                f.entries
            }
        };
        let Some(victim) = (0..self.figures.len())
            .filter(|&i| self.figures[i].entries > 0)
            .max_by_key(|&i| weight(i, &self.figures[i]))
        else {
            return;
        };
        // Second chance: a record whose entry was refreshed since it was queued goes to the
        // back; stale records (the entry moved or went) are dropped. Bounded by two passes.
        let rounds = 2 * self.queues[victim].len() + 1;
        for _ in 0..rounds {
            let Some((mac, generation, queued)) = self.queues[victim].pop_front() else {
                break;
            };
            let Some(e) = self.map.get(&mac).copied() else {
                continue;
            };
            if e.port != victim || e.generation != generation {
                continue;
            }
            if e.seen > queued && !self.expired(&e, now) {
                self.queues[victim].push_back((mac, generation, e.seen));
                continue;
            }
            self.map.remove(&mac);
            self.figures[victim].entries -= 1;
            self.figures[victim].evicted += 1;
            return;
        }
    }

    /// Removes the entries aged out by `now`; returns how many.
    pub fn sweep(&mut self, now: u64) -> usize {
        if self.ageing_ms == 0 {
            return 0;
        }
        let ageing = self.ageing_ms;
        let mut gone = 0;
        let figures = &mut self.figures;
        self.map.retain(|_, e| {
            let keep = now.saturating_sub(e.seen) < ageing;
            if !keep {
                figures[e.port].entries -= 1;
                figures[e.port].aged += 1;
                gone += 1;
            }
            keep
        });
        self.compact();
        gone
    }

    /// Drops stale records from queues that grew well past their port's entries (moves and
    /// ageing leave records behind).
    fn compact(&mut self) {
        for port in 0..self.queues.len() {
            if self.queues[port].len() > 2 * self.figures[port].entries + 64 {
                self.compact_port(port);
            }
        }
    }

    fn compact_port(&mut self, port: usize) {
        let map = &self.map;
        self.queues[port].retain(|(mac, generation, _)| {
            map.get(mac)
                .is_some_and(|e| e.port == port && e.generation == *generation)
        });
    }

    /// Removes every entry of `port` (a port that is gone); returns how many.
    pub fn flush_port(&mut self, port: usize) -> usize {
        let before = self.map.len();
        self.map.retain(|_, e| e.port != port);
        let gone = before - self.map.len();
        if let Some(f) = self.figures.get_mut(port) {
            f.entries = 0;
        }
        if let Some(q) = self.queues.get_mut(port) {
            q.clear();
        }
        gone
    }

    /// Per-port figures.
    pub fn figures(&self) -> &[PortFigures] {
        &self.figures
    }

    /// The entries alive at `now`, by port then address.
    pub fn entries(&self, now: u64) -> Vec<Listed> {
        let mut v: Vec<Listed> = self
            .map
            .iter()
            .filter(|(_, e)| self.ageing_ms > 0 && !self.expired(e, now))
            .map(|(mac, e)| Listed {
                mac: *mac,
                port: e.port,
                idle_ms: now.saturating_sub(e.seen),
            })
            .collect();
        v.sort_by_key(|l| (l.port, l.mac));
        v
    }

    /// Memory held by the queues, in records (for tests of boundedness).
    pub fn queued(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u32) -> Mac {
        let b = n.to_be_bytes();
        Mac([2, 0, b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn learns_moves_ages_and_floods_in_hub_mode() {
        let mut t = Fdb::new(16, 1000, 3, None);
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
        let mut hub = Fdb::new(16, 0, 2, None);
        assert_eq!(hub.learn(mac(1), 0, 0), Learned::Off);
        assert_eq!(hub.lookup(&mac(1), 0), None);
    }

    #[test]
    fn a_flood_from_one_port_evicts_only_its_own_entries() {
        let mut t = Fdb::new(100, 300_000, 3, None);
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

    #[test]
    fn recently_used_entries_survive_eviction_and_the_uplink_may_hold_more() {
        let mut t = Fdb::new(4, 300_000, 2, Some(1));
        for i in 0..4 {
            t.learn(mac(i), 0, u64::from(i));
        }
        t.learn(mac(0), 0, 10); // used again: second chance
        t.learn(mac(99), 0, 11); // evicts the oldest unused: mac(1)
        assert_eq!(t.lookup(&mac(0), 12), Some(0));
        assert_eq!(t.lookup(&mac(1), 12), None);
        // The uplink counts half: with 2 entries against port 0's 2, port 0 gives one up.
        let mut u = Fdb::new(4, 300_000, 2, Some(1));
        u.learn(mac(1), 0, 0);
        u.learn(mac(2), 0, 0);
        u.learn(mac(3), 1, 0);
        u.learn(mac(4), 1, 0);
        u.learn(mac(5), 1, 1);
        assert_eq!(u.figures()[0].entries, 1);
        assert_eq!(u.figures()[1].entries, 3);
    }

    #[test]
    fn ping_pong_moves_keep_the_queues_bounded() {
        let mut t = Fdb::new(8, 1000, 2, None);
        for i in 0..100_000u64 {
            t.learn(mac(1), (i % 2) as usize, i / 1000);
            if i % 1000 == 0 {
                t.sweep(i / 1000);
            }
        }
        assert!(t.queued() < 200, "{}", t.queued());
        assert_eq!(t.flush_port(1) + t.flush_port(0), 1);
        assert!(t.is_empty());
    }
}
