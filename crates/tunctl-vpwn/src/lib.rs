//! vpwn: a point-to-point tunnel that speaks WireGuard, on a [`tunctl`] device.
//!
//! The Erlang original's `vpwn:start(Node, "10.10.10.1", "10.10.10.2")` carried a tap's
//! frames over the Erlang distribution, in clear text. This one is what people want from
//! that: encrypted and authenticated with the WireGuard protocol, so the other end can be
//! any WireGuard implementation, configured with the keys and the file format WireGuard
//! users know. WireGuard carries IP packets, not Ethernet frames: the device is a tun.
//!
//! ```no_run
//! use tunctl::Namespace;
//! use tunctl_vpwn::{Config, Options, Tunnel};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::parse(&std::fs::read_to_string("/etc/wireguard/wg0.conf")?)?;
//! let tunnel = Tunnel::up(Options {
//!     name: "wg0".into(),
//!     namespace: Namespace::current(),
//!     config,
//! })?;
//! println!("listening on {}, public key {}", tunnel.port(), tunnel.public_key());
//! # Ok(()) }
//! ```
//!
//! The protocol itself (handshake, sessions, timers) is boringtun's sans-IO `noise` module,
//! behind a small internal interface; what it leaves to its caller is done here: padding to
//! 16 bytes, the allowed-IPs check on every decrypted packet (cryptokey routing), following
//! the peer's address (roaming), and dropping and counting malformed, oversized and forged
//! datagrams.
#![deny(missing_docs)]

pub mod config;
mod cookie;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
mod handshake;
pub mod keys;
mod receive;
pub mod stats;
mod table;
pub mod tunnel;
pub mod uapi;
mod udp;

pub use config::{Config, Interface, Peer};
pub use keys::Key;
pub use stats::Counters;
pub use tunnel::{FastPath, Options, Tunnel};
pub use uapi::{DeviceConf, PeerConf};
