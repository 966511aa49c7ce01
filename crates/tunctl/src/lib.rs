//! Create, configure and use Linux TUN/TAP devices.
//!
//! `tunctl` re-creates the Erlang project of the same name in Rust: [`Device`] is the original's
//! `tuncer` (one owned device), the [`sys`-level ioctls](Device::set_persist) are its `tunctl`
//! module made safe, and configuration (addresses, peer, broadcast, MTU, MAC, up/down) goes
//! through rtnetlink ([`Link`]) instead of `ip`, `ifconfig` or `sudo`. Devices can be born
//! and configured inside another network [`Namespace`] without moving the process.
//!
//! Creating devices needs `CAP_NET_ADMIN` (root, or a pre-created device owned by the user).
//!
//! ```no_run
//! use tunctl::{Device, Namespace};
//!
//! # fn main() -> Result<(), tunctl::Error> {
//! let ns = Namespace::create("demo-blue")?;   // deleted again when `ns` is dropped
//! let dev = Device::builder()
//!     .name("tun%d")
//!     .tun()
//!     .namespace(ns.clone())
//!     .create()?;
//! dev.add_address("10.99.0.1/24".parse()?)?;
//! dev.up()?;
//!
//! let mut buf = [0u8; 1500];
//! if let Some(n) = dev.recv_timeout(&mut buf, std::time::Duration::from_millis(100))? {
//!     println!("{}: {n}-byte packet", dev.name());
//! }
//! dev.destroy()?;
//! ns.delete()?;                                // or let the guard do it
//! # Ok(())
//! # }
//! ```
//!
//! Every error names the device, the operation and the cause:
//! `tap0: TUNSETIFF: device is busy: another process has it open ... (EBUSY)`.
#![deny(missing_docs)]
#![warn(unsafe_op_in_unsafe_fn)]

pub mod active;
pub mod addr;
mod batch;
mod builder;

mod device;
mod error;
pub mod filter;
mod flags;
mod gate;
pub mod helper;
pub mod name;
mod netlink;
mod netns;
pub mod offload;
mod pi;
mod queue;
pub mod service;
mod sys;
#[cfg(feature = "tokio")]
pub mod tokio;

pub use active::{Active, Event, Packet, Packets};
pub use addr::{Cidr, MacAddr};
pub use batch::Batch;

pub use builder::Builder;
pub use device::Device;
pub use error::{errno_name, Error, ErrorKind, Result};
pub use flags::{Flags, Kind, Offload};
pub use netlink::{
    Address, Link, LinkConfig, LinkEvent, LinkInfo, Netlink, Plan, Route, RouteKind, RouteSpec,
    Rule, Step, TunInfo, Watch, RTPROT_STATIC, RT_TABLE_MAIN,
};
pub use netns::{CreatedNamespace, Namespace, PrivateNamespace, NETNS_RUN_DIR};
pub use pi::PacketInfo;
pub use queue::{IoPath, Queue, IO_URING_ENV, MAX_QUEUES};

/// The README's Rust examples, compiled as doctests so they cannot rot (with the `tokio`
/// feature, which its async example needs).
#[doc = include_str!("../../../README.md")]
#[cfg(all(doctest, feature = "tokio"))]
pub struct ReadmeDoctests;

/// The uid of a user name or number (`"alice"` or `"1000"`), from the system's user
/// database.
///
/// # Errors
///
/// [`ErrorKind::NotFound`] for an unknown name, [`ErrorKind::InvalidInput`] for an empty
/// one; [`ErrorKind::Os`] if the user database cannot be read.
pub fn user_id(user: &str) -> Result<u32> {
    lookup_id(user, "user", sys::user_id)
}

/// The gid of a group name or number (`"netdev"` or `"100"`), from the system's group
/// database.
///
/// # Errors
///
/// As [`user_id`], for the group database.
pub fn group_id(group: &str) -> Result<u32> {
    lookup_id(group, "group", sys::group_id)
}

fn lookup_id(
    name: &str,
    what: &str,
    lookup: fn(&str) -> std::io::Result<Option<u32>>,
) -> Result<u32> {
    if let Some(id) = addr::parse_decimal::<u32>(name) {
        return Ok(id);
    }
    let op = format!("look up {what}");
    if name.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            op,
            format!("empty {what} name"),
        ));
    }
    match lookup(name) {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(Error::new(
            ErrorKind::NotFound,
            op,
            format!("no {what} named {name:?}"),
        )),
        Err(e) => Err(Error::os(op, e)),
    }
}

/// The name of a uid in the system's user database (as `ip -d link` shows an owner), or
/// `None` if it has none.
pub fn user_name(uid: u32) -> Option<String> {
    sys::user_name(uid)
}

/// The name of a gid in the system's group database, or `None` if it has none.
pub fn group_name(gid: u32) -> Option<String> {
    sys::group_name(gid)
}

/// The TUNSETIFF flags this kernel supports (TUNGETFEATURES on a fresh, unattached fd).
///
/// # Errors
///
/// [`ErrorKind::NotFound`] if `/dev/net/tun` is missing (tun module not loaded),
/// [`ErrorKind::PermissionDenied`] if the caller may not open it.
pub fn kernel_features() -> Result<Flags> {
    use std::os::fd::AsFd;
    let fd = sys::open_tun().map_err(|e| Error::os("open /dev/net/tun", e))?;
    sys::tun_get_features(fd.as_fd())
        .map(|f| Flags::from_bits_retain(f as u16))
        .map_err(|e| Error::os("TUNGETFEATURES", e))
}
