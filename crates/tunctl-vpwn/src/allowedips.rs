//! Cryptokey routing: which peer an inner address belongs to, by the longest allowed-IPs
//! prefix that holds it. A binary trie per family, path-compressed (a node per branching
//! point or network, so 100,000 networks make at most 200,000 nodes), in one vector: a
//! lookup follows at most one node per bit of the address (32 or 128), whatever the number
//! of networks, and touches no lock. Built once per configuration; a configuration change
//! builds a new one.

use std::net::IpAddr;

use tunctl::Cidr;

/// A node: the `len` leading bits of `bits` are its prefix; `peer` is set when that prefix
/// is an allowed network.
#[derive(Debug, Clone, Copy)]
struct Node {
    bits: u128,
    len: u8,
    peer: Option<u32>,
    children: [u32; 2],
}

/// No child.
const NONE: u32 = u32::MAX;

/// One family's trie.
#[derive(Debug, Clone)]
struct Trie {
    nodes: Vec<Node>,
    width: u8,
}

/// The top `len` bits of `bits` (a `width`-bit address in the low bits of a u128).
fn prefix(bits: u128, len: u8, width: u8) -> u128 {
    if len == 0 {
        return 0;
    }
    let host = u32::from(width - len);
    (bits >> host) << host
}

/// Bit `i` (0 = most significant) of a `width`-bit address.
fn bit(bits: u128, i: u8, width: u8) -> usize {
    ((bits >> (width - 1 - i)) & 1) as usize
}

/// How many leading bits two addresses share, up to `max`.
fn common(a: u128, b: u128, max: u8, width: u8) -> u8 {
    let x = (a ^ b) << (128 - u32::from(width));
    (x.leading_zeros().min(128) as u8).min(max)
}

impl Trie {
    fn new(width: u8) -> Trie {
        Trie {
            nodes: vec![Node {
                bits: 0,
                len: 0,
                peer: None,
                children: [NONE; 2],
            }],
            width,
        }
    }

    fn push(&mut self, bits: u128, len: u8, peer: Option<u32>) -> u32 {
        self.nodes.push(Node {
            bits: prefix(bits, len, self.width),
            len,
            peer,
            children: [NONE; 2],
        });
        (self.nodes.len() - 1) as u32
    }

    /// Adds (or replaces) network `bits/len` for `peer`.
    fn insert(&mut self, bits: u128, len: u8, peer: u32) {
        let w = self.width;
        let bits = prefix(bits, len, w);
        let mut at = 0usize;
        loop {
            let node = self.nodes[at];
            if node.len == len {
                self.nodes[at].peer = Some(peer);
                return;
            }
            let side = bit(bits, node.len, w);
            let child = node.children[side];
            if child == NONE {
                let new = self.push(bits, len, Some(peer));
                self.nodes[at].children[side] = new;
                return;
            }
            let c = self.nodes[child as usize];
            let shared = common(c.bits, bits, c.len.min(len), w);
            if shared == c.len {
                // The child's prefix holds ours: go down.
                at = child as usize;
                continue;
            }
            // Split: a node for the shared prefix (ours, if it is exactly ours), with the
            // old child and the new network under it.
            let mid = if shared == len {
                self.push(bits, len, Some(peer))
            } else {
                self.push(bits, shared, None)
            };
            self.nodes[mid as usize].children[bit(c.bits, shared, w)] = child;
            if shared != len {
                let leaf = self.push(bits, len, Some(peer));
                self.nodes[mid as usize].children[bit(bits, shared, w)] = leaf;
            }
            self.nodes[at].children[side] = mid;
            return;
        }
    }

    /// The peer of the longest network holding `bits`.
    fn lookup(&self, bits: u128) -> Option<u32> {
        let w = self.width;
        let mut best = None;
        let mut at = 0usize;
        loop {
            let node = &self.nodes[at];
            if prefix(bits, node.len, w) != node.bits {
                return best;
            }
            if node.peer.is_some() {
                best = node.peer;
            }
            if node.len == w {
                return best;
            }
            let child = node.children[bit(bits, node.len, w)];
            if child == NONE {
                return best;
            }
            at = child as usize;
        }
    }
}

/// The allowed IPs of every peer of a configuration.
#[derive(Debug, Clone)]
pub(crate) struct AllowedIps {
    v4: Trie,
    v6: Trie,
}

fn bits(addr: IpAddr) -> (bool, u128) {
    match addr {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

impl AllowedIps {
    /// The tries of `(network, peer)` pairs; a network given twice is the last one's.
    pub(crate) fn new<'a>(nets: impl IntoIterator<Item = (&'a Cidr, usize)>) -> AllowedIps {
        let mut t = AllowedIps {
            v4: Trie::new(32),
            v6: Trie::new(128),
        };
        for (net, peer) in nets {
            let (v6, b) = bits(net.network());
            let trie = if v6 { &mut t.v6 } else { &mut t.v4 };
            trie.insert(b, net.prefix(), peer as u32);
        }
        t
    }

    /// The peer whose allowed IPs hold `addr` (longest prefix).
    pub(crate) fn lookup(&self, addr: IpAddr) -> Option<usize> {
        let (v6, b) = bits(addr);
        let trie = if v6 { &self.v6 } else { &self.v4 };
        trie.lookup(b).map(|p| p as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The longest prefix, by brute force.
    fn brute(nets: &[(Cidr, usize)], addr: IpAddr) -> Option<usize> {
        let host = Cidr::new(addr, if addr.is_ipv4() { 32 } else { 128 }).unwrap();
        nets.iter()
            .filter(|(c, _)| c.contains(&host))
            .max_by_key(|(c, _)| c.prefix())
            .map(|(_, p)| *p)
    }

    #[test]
    fn longest_prefix_wins_and_families_stay_apart() {
        let nets: Vec<(Cidr, usize)> = [
            ("10.0.0.0/8", 0),
            ("::/0", 0),
            ("10.1.0.0/16", 1),
            ("0.0.0.0/0", 2),
            ("10.1.2.0/24", 3),
            ("10.1.2.3/32", 4),
            ("2001:db8::/32", 5),
            ("2001:db8:8000::/33", 6),
        ]
        .iter()
        .map(|(c, p)| (c.parse().unwrap(), *p))
        .collect();
        let t = AllowedIps::new(nets.iter().map(|(c, p)| (c, *p)));
        for a in [
            "10.1.2.3",
            "10.1.2.4",
            "10.1.3.1",
            "10.2.0.1",
            "192.0.2.1",
            "0.0.0.0",
            "255.255.255.255",
            "2001:db8::1",
            "2001:db8:8000::1",
            "2001:db9::1",
            "::1",
        ] {
            let addr: IpAddr = a.parse().unwrap();
            assert_eq!(t.lookup(addr), brute(&nets, addr), "{a}");
        }
        assert_eq!(
            AllowedIps::new([]).lookup("10.0.0.1".parse().unwrap()),
            None
        );
    }

    /// Random networks and random addresses (a fixed seed): the trie agrees with brute
    /// force on every one, including networks added in any order and ones inside others.
    #[test]
    fn random_networks_agree_with_brute_force() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20 {
            let mut nets = Vec::new();
            for i in 0..300 {
                let v6 = round % 2 == 1;
                let r = next();
                let (addr, len): (IpAddr, u8) = if v6 {
                    let hi = (r as u128) << 64 | u128::from(next());
                    // Clustered, so prefixes nest.
                    (
                        IpAddr::from(std::net::Ipv6Addr::from(hi & !(0xffff << 100))),
                        (r % 129) as u8,
                    )
                } else {
                    (
                        IpAddr::from(std::net::Ipv4Addr::from(((r >> 32) as u32) & 0x0aff_ffff)),
                        (r % 33) as u8,
                    )
                };
                let c = Cidr::new(addr, len).unwrap();
                let c = Cidr::new(c.network(), len).unwrap();
                nets.retain(|(n, _)| *n != c);
                nets.push((c, i % 7));
            }
            let t = AllowedIps::new(nets.iter().map(|(c, p)| (c, *p)));
            for _ in 0..2000 {
                let r = next();
                let addr: IpAddr = if round % 2 == 1 {
                    IpAddr::from(std::net::Ipv6Addr::from(
                        ((r as u128) << 64 | u128::from(next())) & !(0xffff << 100),
                    ))
                } else {
                    IpAddr::from(std::net::Ipv4Addr::from(((r >> 32) as u32) & 0x0aff_ffff))
                };
                assert_eq!(t.lookup(addr), brute(&nets, addr), "round {round}: {addr}");
            }
            for (c, p) in &nets {
                assert_eq!(
                    t.lookup(c.network()),
                    brute(&nets, c.network()),
                    "{c} of {p}"
                );
            }
        }
    }
}
