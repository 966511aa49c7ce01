//! `tunctl-helper`: creates and configures TUN/TAP devices for unprivileged users, as
//! `/etc/tunctl/helper.toml` allows, and hands the device's fd back over SCM_RIGHTS.
//!
//! Not run by hand: the tunctl library spawns it with a request socket on standard input.
//! Install it with file capabilities (`setcap cap_net_admin,cap_sys_admin+ep`), or setuid
//! root (it then keeps only those two capabilities and becomes the calling user before it
//! reads anything). It takes no setting from its environment and closes every fd it did not
//! expect. See README.md, "Unprivileged use".

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(tunctl_helper::serve().clamp(0, 255) as u8)
}
