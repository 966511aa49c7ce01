//! TUNSETIFF flags and the device kind.

use std::fmt;

bitflags::bitflags! {
    /// The `ifr_flags` of TUNSETIFF/TUNGETIFF (`IFF_TUN`, `IFF_NO_PI`, ...), over the
    /// kernel's 16-bit value. `Debug` prints the constants' names (`Flags(TUN | NO_PI)`),
    /// `Display` just the names (`TUN | NO_PI`); unknown bits are kept and shown in hex.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
    pub struct Flags: u16 {
        /// `IFF_TUN`: layer-3 device, packets are IP datagrams.
        const TUN = libc::IFF_TUN as u16;
        /// `IFF_TAP`: layer-2 device, packets are Ethernet frames.
        const TAP = libc::IFF_TAP as u16;
        /// `IFF_NAPI`: receive through NAPI (kernel ≥ 4.15).
        const NAPI = libc::IFF_NAPI as u16;
        /// `IFF_NAPI_FRAGS`: NAPI with fragments.
        const NAPI_FRAGS = libc::IFF_NAPI_FRAGS as u16;
        /// `IFF_NO_CARRIER`: create the device without carrier (kernel ≥ 5.0).
        const NO_CARRIER = 0x0040;
        /// `IFF_MULTI_QUEUE`: one device, several fds (queues).
        const MULTI_QUEUE = libc::IFF_MULTI_QUEUE as u16;
        /// `IFF_PERSIST`: reported by TUNGETIFF when the device outlives its fds (read-only
        /// here).
        const PERSIST = libc::IFF_PERSIST as u16;
        /// `IFF_NO_PI`: no 4-byte packet-information header in front of each packet.
        const NO_PI = libc::IFF_NO_PI as u16;
        /// `IFF_ONE_QUEUE`: accepted for compatibility; the kernel ignores it since
        /// Linux 3.8.
        const ONE_QUEUE = libc::IFF_ONE_QUEUE as u16;
        /// `IFF_VNET_HDR`: a `virtio_net_hdr` in front of each packet (offload metadata).
        const VNET_HDR = libc::IFF_VNET_HDR as u16;
        /// `IFF_TUN_EXCL`: fail with EBUSY instead of attaching when the device exists.
        const TUN_EXCL = libc::IFF_TUN_EXCL as u16;
    }
}

impl Flags {
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
        let mut out: Vec<String> = self.iter_names().map(|(n, _)| n.to_string()).collect();
        let rest = self.bits() & !Flags::all().bits();
        if rest != 0 {
            out.push(format!("{rest:#06x}"));
        }
        out
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

impl From<Flags> for u16 {
    fn from(flags: Flags) -> u16 {
        flags.bits()
    }
}

impl From<u16> for Flags {
    fn from(bits: u16) -> Flags {
        Flags::from_bits_retain(bits)
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

bitflags::bitflags! {
    /// TUNSETOFFLOAD bits (`TUN_F_*`): which offloads the reader of a `vnet_hdr` device
    /// accepts. `Debug` prints the names (`Offload(CSUM | TSO4 | TSO6)`).
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
    pub struct Offload: u32 {
        /// `TUN_F_CSUM`: packets may carry a partial checksum.
        const CSUM = libc::TUN_F_CSUM;
        /// `TUN_F_TSO4`: TCP segmentation offload for IPv4.
        const TSO4 = libc::TUN_F_TSO4;
        /// `TUN_F_TSO6`: TCP segmentation offload for IPv6.
        const TSO6 = libc::TUN_F_TSO6;
        /// `TUN_F_TSO_ECN`: TSO with ECN.
        const TSO_ECN = libc::TUN_F_TSO_ECN;
        /// `TUN_F_UFO`: UDP fragmentation offload (obsolete).
        const UFO = libc::TUN_F_UFO;
        /// `TUN_F_USO4`: UDP segmentation offload for IPv4 (kernel ≥ 6.2).
        const USO4 = libc::TUN_F_USO4;
        /// `TUN_F_USO6`: UDP segmentation offload for IPv6 (kernel ≥ 6.2).
        const USO6 = libc::TUN_F_USO6;
    }
}
