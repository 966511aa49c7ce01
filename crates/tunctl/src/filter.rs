//! Packet filters on a device's queues: classic BPF programs ([`Instruction`], for
//! [`Device::attach_filter`](crate::Device::attach_filter), TUNATTACHFILTER) and eBPF
//! programs by fd ([`Device::set_filter_ebpf`](crate::Device::set_filter_ebpf),
//! [`Device::set_steering_ebpf`](crate::Device::set_steering_ebpf)).
//!
//! The kernel runs these filters on what it **sends to userspace**: the packets the device
//! transmits (that the reader would otherwise receive), not on what the reader writes. A
//! classic filter applies to every queue of a tap device (the kernel refuses it on a tun
//! device); a packet it drops never reaches any reader. The Erlang original listed "tun
//! filtering" as to be done.

/// One classic BPF instruction, the kernel's `struct sock_filter` (see
/// `Documentation/networking/filter.rst`). Build programs with [`Instruction::stmt`] and
/// [`Instruction::jump`] and the `BPF_*` constants below.
///
/// ```
/// use tunctl::filter::{Instruction as I, *};
///
/// // Pass IPv4 UDP frames of a tap device, drop everything else.
/// let udp_only = [
///     I::stmt(BPF_LD | BPF_H | BPF_ABS, 12),           // EtherType
///     I::jump(BPF_JMP | BPF_JEQ | BPF_K, 0x0800, 0, 3), // IPv4?
///     I::stmt(BPF_LD | BPF_B | BPF_ABS, 23),           // IP protocol
///     I::jump(BPF_JMP | BPF_JEQ | BPF_K, 17, 0, 1),    // UDP?
///     I::stmt(BPF_RET | BPF_K, u32::MAX),              // pass the whole frame
///     I::stmt(BPF_RET | BPF_K, 0),                     // drop
/// ];
/// assert_eq!(udp_only.len(), 6);
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Instruction {
    /// The operation (`BPF_LD | BPF_H | BPF_ABS`, ...).
    pub code: u16,
    /// Jump offset if the condition is true.
    pub jt: u8,
    /// Jump offset if the condition is false.
    pub jf: u8,
    /// The operand.
    pub k: u32,
}

impl Instruction {
    /// A statement: `code` with operand `k`, no jumps.
    pub const fn stmt(code: u16, k: u32) -> Instruction {
        Instruction {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }

    /// A conditional jump: `code` comparing with `k`, skipping `jt` instructions if true and
    /// `jf` if false.
    pub const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Instruction {
        Instruction { code, jt, jf, k }
    }
}

/// The most instructions the kernel takes in one classic program (`BPF_MAXINSNS`).
pub const MAX_INSTRUCTIONS: usize = 4096;

/// Instruction class: load into the accumulator.
pub const BPF_LD: u16 = 0x00;
/// Instruction class: jump.
pub const BPF_JMP: u16 = 0x05;
/// Instruction class: return (the number of bytes to pass; 0 drops).
pub const BPF_RET: u16 = 0x06;
/// Size: 32-bit word.
pub const BPF_W: u16 = 0x00;
/// Size: 16-bit half-word.
pub const BPF_H: u16 = 0x08;
/// Size: byte.
pub const BPF_B: u16 = 0x10;
/// Mode: absolute offset into the packet.
pub const BPF_ABS: u16 = 0x20;
/// Jump if equal.
pub const BPF_JEQ: u16 = 0x10;
/// Operand: the constant `k`.
pub const BPF_K: u16 = 0x00;
