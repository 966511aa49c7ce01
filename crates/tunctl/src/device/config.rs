//! The device's configuration over rtnetlink (addresses, peer, broadcast, MTU, MAC, queue
//! length, up and down), through its [`Link`].

use super::Device;
use crate::addr::{Cidr, MacAddr};
#[cfg(doc)]
use crate::error::ErrorKind;
use crate::error::Result;
use crate::netlink::{Address, Link, LinkInfo};

impl Device {
    /// A refusal for lack of privilege on a device tunctl-helper made, with the calls that
    /// would work.
    fn changed_by_helper(&self, err: crate::error::Error) -> crate::error::Error {
        if self.helper_made && err.kind() == crate::error::ErrorKind::PermissionDenied {
            err.add_detail(
                "this device was made through tunctl-helper, which makes changes for you: give Builder::address and Builder::up before create(), or send an Op::Set request with helper::run (`tunctl set` does); or run with CAP_NET_ADMIN",
            )
        } else {
            err
        }
    }

    /// The rtnetlink handle of the device, for configuration this type does not wrap.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy.
    pub fn link(&self) -> Result<&Link> {
        self.check_open("configure")?;
        Ok(&self.shared.link)
    }

    /// The kernel's view of the device: flags, MTU, MAC, `IFLA_TUN_*` attributes.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::info`] (a device deleted
    /// from outside is [`ErrorKind::NotFound`] there, not [`ErrorKind::Gone`]).
    pub fn info(&self) -> Result<LinkInfo> {
        self.link()?.info()
    }

    /// Brings the device up (`IFF_UP`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::up`].
    pub fn up(&self) -> Result<()> {
        self.link()?.up().map_err(|e| self.changed_by_helper(e))
    }

    /// Brings the device down; its addresses stay (the original's `down/1`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::down`].
    pub fn down(&self) -> Result<()> {
        self.link()?.down().map_err(|e| self.changed_by_helper(e))
    }

    /// Adds an address; see [`Link::add_address`]. The original's `up(Ref, IP)` is
    /// `add_address(ip)` then `up()`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::add_address`].
    pub fn add_address(&self, cidr: Cidr) -> Result<()> {
        self.link()?
            .add_address(cidr)
            .map_err(|e| self.changed_by_helper(e))
    }

    /// Removes an address.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::del_address`].
    pub fn del_address(&self, cidr: Cidr) -> Result<()> {
        self.link()?
            .del_address(cidr)
            .map_err(|e| self.changed_by_helper(e))
    }

    /// The device's addresses.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::addresses`].
    pub fn addresses(&self) -> Result<Vec<Address>> {
        self.link()?.addresses()
    }

    /// Sets the point-to-point peer of the address `local` (the Erlang original's
    /// `dstaddr/2`, IPv4 and IPv6); see [`Link::set_peer`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::set_peer`].
    pub fn set_peer(&self, local: std::net::IpAddr, peer: std::net::IpAddr) -> Result<()> {
        self.link()?
            .set_peer(local, peer)
            .map_err(|e| self.changed_by_helper(e))
    }

    /// Sets the broadcast address of the IPv4 address `local` (the Erlang original's
    /// `broadcast/2`); see [`Link::set_broadcast`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::set_broadcast`].
    pub fn set_broadcast(
        &self,
        local: std::net::Ipv4Addr,
        broadcast: std::net::Ipv4Addr,
    ) -> Result<()> {
        self.link()?
            .set_broadcast(local, broadcast)
            .map_err(|e| self.changed_by_helper(e))
    }

    /// The MTU.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::mtu`].
    pub fn mtu(&self) -> Result<u32> {
        self.link()?.mtu()
    }

    /// Sets the MTU.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::set_mtu`].
    pub fn set_mtu(&self, mtu: u32) -> Result<()> {
        self.link()?
            .set_mtu(mtu)
            .map_err(|e| self.changed_by_helper(e))
    }

    /// Sets a tap's MAC address.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::set_mac`].
    pub fn set_mac(&self, mac: MacAddr) -> Result<()> {
        self.link()?
            .set_mac(mac)
            .map_err(|e| self.changed_by_helper(e))
    }

    /// Sets the transmit queue length.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] after destroy; otherwise as [`Link::set_txqueuelen`].
    pub fn set_txqueuelen(&self, len: u32) -> Result<()> {
        self.link()?
            .set_txqueuelen(len)
            .map_err(|e| self.changed_by_helper(e))
    }
}
