//! TUNSETIFF flags and the device kind.

use std::fmt;
use std::ops::{BitAnd, BitOr, BitOrAssign, Not};

/// The `ifr_flags` of TUNSETIFF/TUNGETIFF (`IFF_TUN`, `IFF_NO_PI`, ...), as a newtype over the
/// kernel's 16-bit value. `Debug` and `Display` print the constants' names.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u16);

impl Flags {
    /// `IFF_TUN`: layer-3 device, packets are IP datagrams.
    pub const TUN: Flags = Flags(libc::IFF_TUN as u16);
    /// `IFF_TAP`: layer-2 device, packets are Ethernet frames.
    pub const TAP: Flags = Flags(libc::IFF_TAP as u16);
    /// `IFF_NAPI`: receive through NAPI (kernel ≥ 4.15).
    pub const NAPI: Flags = Flags(libc::IFF_NAPI as u16);
    /// `IFF_NAPI_FRAGS`: NAPI with fragments.
    pub const NAPI_FRAGS: Flags = Flags(libc::IFF_NAPI_FRAGS as u16);
    /// `IFF_NO_CARRIER`: create the device without carrier (kernel ≥ 5.0).
    pub const NO_CARRIER: Flags = Flags(0x0040);
    /// `IFF_MULTI_QUEUE`: one device, several fds (queues).
    pub const MULTI_QUEUE: Flags = Flags(libc::IFF_MULTI_QUEUE as u16);
    /// `IFF_PERSIST`: reported by TUNGETIFF when the device outlives its fds (read-only here).
    pub const PERSIST: Flags = Flags(libc::IFF_PERSIST as u16);
    /// `IFF_NO_PI`: no 4-byte packet-information header in front of each packet.
    pub const NO_PI: Flags = Flags(libc::IFF_NO_PI as u16);
    /// `IFF_ONE_QUEUE`: accepted for compatibility; the kernel ignores it since Linux 3.8.
    pub const ONE_QUEUE: Flags = Flags(libc::IFF_ONE_QUEUE as u16);
    /// `IFF_VNET_HDR`: a `virtio_net_hdr` in front of each packet (offload metadata).
    pub const VNET_HDR: Flags = Flags(libc::IFF_VNET_HDR as u16);
    /// `IFF_TUN_EXCL`: fail with EBUSY instead of attaching when the device exists.
    pub const TUN_EXCL: Flags = Flags(libc::IFF_TUN_EXCL as u16);

    const NAMES: [(Flags, &'static str); 11] = [
        (Flags::TUN, "TUN"),
        (Flags::TAP, "TAP"),
        (Flags::NAPI, "NAPI"),
        (Flags::NAPI_FRAGS, "NAPI_FRAGS"),
        (Flags::NO_CARRIER, "NO_CARRIER"),
        (Flags::MULTI_QUEUE, "MULTI_QUEUE"),
        (Flags::PERSIST, "PERSIST"),
        (Flags::NO_PI, "NO_PI"),
        (Flags::ONE_QUEUE, "ONE_QUEUE"),
        (Flags::VNET_HDR, "VNET_HDR"),
        (Flags::TUN_EXCL, "TUN_EXCL"),
    ];

    /// No flag set.
    pub const fn empty() -> Flags {
        Flags(0)
    }

    /// The raw kernel value.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Wraps a raw kernel value, unknown bits included.
    pub const fn from_bits_retain(bits: u16) -> Flags {
        Flags(bits)
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The device kind these flags select (`TUN` wins when both are set, as in the kernel).
    pub fn kind(self) -> Option<Kind> {
        if self.contains(Flags::TUN) {
            Some(Kind::Tun)
        } else if self.contains(Flags::TAP) {
            Some(Kind::Tap)
        } else {
            None
        }
    }

    /// The names of the set flags, in kernel bit order (unknown bits as hex).
    pub fn names(self) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = self.0;
        for (flag, name) in Flags::NAMES {
            if self.contains(flag) {
                out.push(name.to_string());
                rest &= !flag.0;
            }
        }
        if rest != 0 {
            out.push(format!("{rest:#06x}"));
        }
        out
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.names();
        if names.is_empty() {
            f.write_str("(empty)")
        } else {
            f.write_str(&names.join(" | "))
        }
    }
}

impl BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Flags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for Flags {
    type Output = Flags;
    fn bitand(self, rhs: Flags) -> Flags {
        Flags(self.0 & rhs.0)
    }
}

impl Not for Flags {
    type Output = Flags;
    fn not(self) -> Flags {
        Flags(!self.0)
    }
}

impl From<Flags> for u16 {
    fn from(flags: Flags) -> u16 {
        flags.0
    }
}

impl From<u16> for Flags {
    fn from(bits: u16) -> Flags {
        Flags(bits)
    }
}

/// Whether a device carries IP packets (tun) or Ethernet frames (tap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Layer 3: IP packets (`IFF_TUN`).
    Tun,
    /// Layer 2: Ethernet frames (`IFF_TAP`).
    Tap,
}

impl Kind {
    /// The TUNSETIFF flag of this kind.
    pub fn flag(self) -> Flags {
        match self {
            Kind::Tun => Flags::TUN,
            Kind::Tap => Flags::TAP,
        }
    }

    /// `"tun"` or `"tap"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tun => "tun",
            Kind::Tap => "tap",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// TUNSETOFFLOAD bits (`TUN_F_*`): which offloads the reader of a `vnet_hdr` device accepts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct Offload(u32);

impl Offload {
    /// `TUN_F_CSUM`: packets may carry a partial checksum.
    pub const CSUM: Offload = Offload(libc::TUN_F_CSUM);
    /// `TUN_F_TSO4`: TCP segmentation offload for IPv4.
    pub const TSO4: Offload = Offload(libc::TUN_F_TSO4);
    /// `TUN_F_TSO6`: TCP segmentation offload for IPv6.
    pub const TSO6: Offload = Offload(libc::TUN_F_TSO6);
    /// `TUN_F_TSO_ECN`: TSO with ECN.
    pub const TSO_ECN: Offload = Offload(libc::TUN_F_TSO_ECN);
    /// `TUN_F_UFO`: UDP fragmentation offload (obsolete).
    pub const UFO: Offload = Offload(libc::TUN_F_UFO);
    /// `TUN_F_USO4`: UDP segmentation offload for IPv4 (kernel ≥ 6.2).
    pub const USO4: Offload = Offload(libc::TUN_F_USO4);
    /// `TUN_F_USO6`: UDP segmentation offload for IPv6 (kernel ≥ 6.2).
    pub const USO6: Offload = Offload(libc::TUN_F_USO6);

    /// No offload.
    pub const fn empty() -> Offload {
        Offload(0)
    }

    /// The raw kernel value.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Wraps a raw value.
    pub const fn from_bits_retain(bits: u32) -> Offload {
        Offload(bits)
    }
}

impl Offload {
    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Offload) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Offload {
    type Output = Offload;
    fn bitor(self, rhs: Offload) -> Offload {
        Offload(self.0 | rhs.0)
    }
}
