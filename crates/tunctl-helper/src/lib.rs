//! `tunctl-helper`: creates and configures TUN/TAP devices for unprivileged users, as
//! `/etc/tunctl/helper.toml` allows, and hands the device's fd back over SCM_RIGHTS.
//!
//! Not run by hand: the tunctl library (`tunctl::helper`, the client and the wire format)
//! spawns it with a request socket on standard input. The rooms: [`policy`] decides (pure),
//! `execute` acts through the `tunctl` library, `serve` is the process's life, `sys` its
//! few system calls of its own. See README.md, "Unprivileged use".
#![deny(missing_docs)]

mod execute;
pub mod policy;
mod serve;
mod sys;

pub use serve::{serve, LOG_FILE, SYSLOG_PATH};
