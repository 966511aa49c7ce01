//! vpwn: a tunnel that speaks WireGuard, on a [`tunctl`] device.
//!
//! The Erlang original's `vpwn:start(Node, "10.10.10.1", "10.10.10.2")` carried a tap's
//! frames over the Erlang distribution, in clear text. This one is what people want from
//! that: encrypted and authenticated with the WireGuard protocol, so the other end can be
//! any WireGuard implementation, configured with the keys and the file format WireGuard
//! users know (any number of peers). WireGuard carries IP packets, not Ethernet frames:
//! the device is a tun.
//!
//! ```no_run
//! use tunctl::Namespace;
//! use tunctl_vpwn::{Config, Options, Tunnel};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::parse(&std::fs::read_to_string("/etc/wireguard/wg0.conf")?)?;
//! let tunnel = Tunnel::up(Options::new("wg0", Namespace::current(), config))?;
//! if let Some(key) = tunnel.public_key() {
//!     println!("listening on {}, public key {key}", tunnel.port());
//! }
//! # Ok(()) }
//! ```
//!
//! **Routing** is wg-quick's, through rtnetlink: the peers' allowed IPs are routed to the
//! device; a default route among them (a full tunnel) goes in a table of its own, the
//! tunnel's socket gets a firewall mark, and two rules send everything else through the
//! tunnel while its own datagrams still leave by the real default route. [`Tunnel::down`]
//! (or dropping the tunnel) removes all of it (see [`config::Table`]).
//!
//! The protocol itself (handshake, sessions, timers) is boringtun's sans-IO `noise` module,
//! behind a small internal interface ([`engine`]); what it leaves to its caller is done here:
//! padding to 16 bytes, the allowed-IPs check on every decrypted packet (cryptokey routing),
//! following the peer's address (roaming), the MACs, cookies and per-source limits on
//! handshakes, and dropping and counting malformed, oversized and forged datagrams. The
//! crate is split as wireguard-go's `device/` is: [`device`] (set-up and life), peer and
//! table (live state), allowed-IPs (a trie), send, receive, handshake, timers, [`uapi`].
#![deny(missing_docs)]

mod allowedips;
pub mod config;
mod cookie;
pub mod device;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
mod handshake;
pub mod keys;
mod peer;
mod receive;
pub mod routing;
mod send;
pub mod stats;
mod table;
mod timers;
pub mod uapi;
mod udp;

pub use config::{Config, Peer, Table};
pub use device::{Ended, FastPath, Options, Tunnel};
pub use keys::{PublicKey, SecretKey};
pub use stats::Counters;
