//! A bridge's state, typed: what [`Bridge::status`](crate::Bridge::status) returns, what the
//! control socket sends as one line of JSON (`tunctl br show --json` prints an array of
//! them), and what `tunctl br show` prints.

use serde::{Deserialize, Serialize};

use crate::frame::Mac;

/// A bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Its name.
    pub name: String,
    /// The process running it.
    pub pid: u32,
    /// The ageing time, seconds.
    pub ageing_s: f64,
    /// Learning off: every frame floods (static entries still hold).
    pub flood: bool,
    /// The capacity for learned addresses.
    pub max_macs: usize,
    /// Learned addresses now.
    pub entries: usize,
    /// Static entries now (not counted in `entries` nor against `max_macs`).
    pub statics: usize,
    /// The ports, in the order they were added.
    pub ports: Vec<PortStatus>,
    /// The table: every entry alive, by port (in `ports` order), VLAN, address.
    pub fdb: Vec<FdbEntry>,
}

/// A port and its counters (ingress figures count frames read from the port).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortStatus {
    /// The tap's name.
    pub name: String,
    /// Its namespace as given after `@` (a name or a path), empty for the bridge's own.
    pub namespace: String,
    /// Opened with a virtio-net header: GSO frames arrive and leave whole.
    pub vnet_hdr: bool,
    /// Its queues (fds; each read by a thread of its own unless the bridge runs one thread).
    pub queues: usize,
    /// Not deleted from outside.
    pub alive: bool,
    /// Enslaved to a Linux bridge (`--uplink`).
    pub uplink: bool,
    /// Made by the bridge (removed when it stops), not attached.
    pub created: bool,
    /// Its MTU (re-read every second).
    pub mtu: u32,
    /// Its weight in the table's fair sharing.
    pub weight: u32,
    /// Its share of the table: max_macs × weight ÷ the ports' total weight.
    pub share: usize,
    /// Frames read from it.
    pub rx_frames: u64,
    /// Their bytes (without the virtio-net header).
    pub rx_bytes: u64,
    /// Frames written to it (a GSO frame split for a port without vnet_hdr counts each
    /// segment).
    pub tx_frames: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Frames read from it that went to one port.
    pub forwarded: u64,
    /// Frames read from it that went to every other port.
    pub flooded: u64,
    /// Learned addresses on it now.
    pub entries: usize,
    /// Static entries on it.
    pub statics: usize,
    /// Addresses learned on it.
    pub learned: u64,
    /// Addresses that moved to it from another port.
    pub moved: u64,
    /// Its addresses that aged out.
    pub aged: u64,
    /// Its addresses evicted to make room.
    pub evicted: u64,
    /// Frames dropped, by cause.
    pub dropped: Dropped,
}

/// Frames a port dropped, by cause. All but `egress_mtu` and `write` count frames read from
/// the port; those two count frames that were to be written to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// Shorter than an Ethernet header.
    pub runt: u64,
    /// A multicast, broadcast or zero source.
    pub invalid_source: u64,
    /// To an IEEE link-local group other than STP's (01:80:C2:00:00:01 to 0F): kept local.
    pub link_local: u64,
    /// Bigger than the port's MTU (not GSO), or than the largest frame read.
    pub oversize: u64,
    /// To an address learned on the port it came in on.
    pub same_port: u64,
    /// A GSO header that cannot be carried out.
    pub malformed_gso: u64,
    /// The write to this port failed.
    pub write: u64,
    /// From an address that a static entry puts on another port.
    pub static_source: u64,
    /// For this port, bigger than its MTU: a frame that is not GSO, or a UDP GSO frame
    /// whose datagrams do not fit (TCP GSO frames are cut to fit instead).
    pub egress_mtu: u64,
}

impl Dropped {
    /// (cause, count) of every cause, in declaration order.
    pub fn causes(&self) -> [(&'static str, u64); 9] {
        [
            ("runt", self.runt),
            ("invalid_source", self.invalid_source),
            ("link_local", self.link_local),
            ("oversize", self.oversize),
            ("same_port", self.same_port),
            ("malformed_gso", self.malformed_gso),
            ("write", self.write),
            ("static_source", self.static_source),
            ("egress_mtu", self.egress_mtu),
        ]
    }
}

/// An entry of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbEntry {
    /// The address.
    pub mac: Mac,
    /// Its VLAN (0: untagged).
    pub vlan: u16,
    /// The port's name.
    pub port: String,
    /// The port's namespace, as in [`PortStatus::namespace`].
    pub namespace: String,
    /// Milliseconds since a frame came from it (0 for a static entry never heard from).
    pub idle_ms: u64,
    /// Added by hand: never ages, never moves.
    #[serde(rename = "static")]
    pub is_static: bool,
}

/// A port's name, or `NAME@NS` when `twins` ports (it included) have that name.
fn label(name: &str, namespace: &str, twins: usize) -> String {
    if twins > 1 && !namespace.is_empty() {
        format!("{name}@{namespace}")
    } else {
        name.to_string()
    }
}

/// As the control socket sends it: one line of JSON.
impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let json = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        f.write_str(&json)
    }
}

impl Status {
    /// A port as `up` and `port del` take it: its name, or `NAME@NS` when another port
    /// has the same name.
    pub fn port_label(&self, name: &str, namespace: &str) -> String {
        let twins = self.ports.iter().filter(|p| p.name == name).count();
        label(name, namespace, twins)
    }

    /// The table as `bridge fdb show` prints a Linux bridge's: `MAC dev PORT [vlan VID]
    /// master BRIDGE [static]`, one line per entry (PORT as [`port_label`](Status::port_label)
    /// gives it).
    pub fn fdb_lines(&self) -> Vec<String> {
        // The names two ports share, counted once (not once per entry: a full table of a
        // bridge with many ports is millions of comparisons otherwise).
        let mut seen = std::collections::HashMap::new();
        for p in &self.ports {
            *seen.entry(p.name.as_str()).or_insert(0usize) += 1;
        }
        self.fdb
            .iter()
            .map(|e| {
                let twins = seen.get(e.port.as_str()).copied().unwrap_or(0);
                let port = label(&e.port, &e.namespace, twins);
                let mut line = format!("{} dev {port}", e.mac);
                if e.vlan != 0 {
                    line.push_str(&format!(" vlan {}", e.vlan));
                }
                line.push_str(&format!(" master {}", self.name));
                if e.is_static {
                    line.push_str(" static");
                }
                line
            })
            .collect()
    }

    /// The ports' counters summed: (frames in, forwarded, flooded).
    pub fn totals(&self) -> (u64, u64, u64) {
        self.ports.iter().fold((0, 0, 0), |(r, f, l), p| {
            (r + p.rx_frames, f + p.forwarded, l + p.flooded)
        })
    }
}
