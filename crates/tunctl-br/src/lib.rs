//! br: a userspace learning bridge of tap devices, on [`tunctl`].
//!
//! The Erlang original's `br:start(["erlbr0", "erl0", "erl1", "erl2"])` made tap devices as
//! switch ports (the first plugged into a Linux bridge as the uplink, the others handed to
//! LXC containers) and flooded every frame to every other port, logging each one. This one
//! keeps that use and switches like a real bridge:
//!
//! - it learns the source address of every valid frame and sends known unicast to one
//!   port, unknown unicast, broadcast and multicast to every other port, never back out of
//!   the port it came in on; sources that are multicast or zero, IEEE link-local
//!   destinations (01:80:C2:00:00:0X), runts and oversized frames are dropped and counted;
//! - an address seen on another port moves at once; idle ones age out (300 s by default;
//!   an ageing time of zero is the original's hub: everything floods);
//! - the table is bounded (8192 addresses by default) with a keyed hash and fair eviction,
//!   so a MAC flood from one port cannot push out the others' entries;
//! - every port it creates has `vnet_hdr` with TSO: GSO super-frames cross the bridge
//!   whole; a port without `vnet_hdr` (a tap made by someone else) gets them split into
//!   valid segments;
//! - a port deleted from outside (`ip link del`) is dropped and the bridge goes on; a port
//!   moved to another namespace keeps working through its file descriptor once it is up
//!   there (`show` still names the namespace it was born in). The bridge's fd keeps a
//!   port's namespace alive: after `ip netns del`, the namespace and its port live on until
//!   the bridge stops.
//!
//! ```no_run
//! use tunctl_br::{Bridge, Options, PortSpec};
//!
//! # fn main() -> Result<(), tunctl::Error> {
//! let ports: Vec<PortSpec> = ["erl0@c1".parse()?, "erl1@c2".parse()?, "erl2@c3".parse()?].into();
//! let bridge = Bridge::up(Options::new("erlbr", ports))?;
//! println!("{}", bridge.status());
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod bridge;
pub mod control;
pub mod fdb;
pub mod frame;

pub use bridge::{Bridge, Options, PortSpec};
pub use frame::Mac;
