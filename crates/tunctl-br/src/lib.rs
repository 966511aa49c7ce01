//! br: a userspace learning bridge of tap devices, on [`tunctl`].
//!
//! The Erlang original's `br:start(["erlbr0", "erl0", "erl1", "erl2"])` made tap devices as
//! switch ports (the first plugged into a Linux bridge as the uplink, the others handed to
//! LXC containers) and flooded every frame to every other port, logging each one. This one
//! keeps that use and switches like a real bridge:
//!
//! - it learns the source address of every valid frame, per VLAN, and sends known unicast
//!   to one port, unknown unicast, broadcast and multicast to every other port, never back
//!   out of the port it came in on; sources that are multicast or zero, IEEE link-local
//!   destinations other than STP's (01:80:C2:00:00:01 to 0F), runts and frames bigger than
//!   a port's MTU are dropped and counted; STP BPDUs are forwarded, as by a Linux bridge
//!   with STP off;
//! - an address seen on another port moves at once; idle ones age out (300 s by default;
//!   an ageing time of zero is the original's hub: everything floods);
//! - the table is bounded (8192 addresses by default) with a keyed hash and max-min fair
//!   sharing ([`fdb`]), so a MAC flood from one port cannot push out the others' entries;
//!   static entries pin an address to a port (a frame from it elsewhere is dropped);
//! - every port it creates has `vnet_hdr` with TSO: GSO super-frames cross the bridge
//!   whole (cut smaller for a port with a smaller MTU); a port without `vnet_hdr` (a tap
//!   made by someone else) gets them split into valid segments;
//! - ports are added and removed while it runs ([`Bridge::add_port`],
//!   [`Bridge::remove_port`], or `tunctl br port add|del` through the control socket); a
//!   port deleted from outside (`ip link del`) is dropped and the bridge goes on; a port
//!   moved to another namespace keeps working through its file descriptor once it is up
//!   there (`show` still names the namespace it was born in). The bridge's fd keeps a
//!   port's namespace alive: after `ip netns del`, the namespace and its port live on until
//!   the bridge stops or the port is removed.
//!
//! ```no_run
//! use tunctl_br::{Bridge, Options, PortSpec};
//!
//! # fn main() -> Result<(), tunctl::Error> {
//! let ports: Vec<PortSpec> = ["erl0@c1".parse()?, "erl1@c2".parse()?, "erl2@c3".parse()?].into();
//! let bridge = Bridge::up(Options::new("erlbr", ports))?;
//! bridge.add_port(&"erl3@c4".parse()?)?;
//! for line in bridge.status().fdb_lines() {
//!     println!("{line}");
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod bridge;
pub mod control;
mod datapath;
pub mod fdb;
pub mod frame;
pub mod spec;
pub mod status;

pub use bridge::{Bridge, Options, MAX_PORTS, MAX_QUEUES};
pub use frame::Mac;
pub use spec::{Master, PortRef, PortSpec, StaticEntry};
pub use status::Status;
