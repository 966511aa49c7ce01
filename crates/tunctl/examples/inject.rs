//! Writes packets into an existing TUN/TAP device, as whoever may open it: its owner, a
//! member of its group, or anyone for a device with neither. Each argument after the name is
//! one packet (or frame, for a tap) in hex; the device's own flags (kind, packet information,
//! vnet_hdr) are read from the kernel first, so the packets are written as it expects.
//!
//! ```sh
//! cargo run --example inject -- [--hold MS] tun0 4500001c...
//! ```
//!
//! `--hold MS` keeps the device open that long after writing (a persistent tun has a carrier
//! only while someone holds it, and the kernel forgets what it learned on the link when the
//! carrier goes).
//!
//! What a device's holder can do: every packet written here is received by the namespace's
//! stack as if it came from the wire. The tests use this to show that a device given to a
//! user is hardened against router advertisements that user writes (see `Builder::harden`).

use tunctl::{Device, Namespace, Netlink};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: inject [--hold MS] DEVICE HEX...";
    let mut args = std::env::args().skip(1).peekable();
    let mut hold = 0u64;
    if args.peek().map(String::as_str) == Some("--hold") {
        args.next();
        hold = args.next().and_then(|ms| ms.parse().ok()).ok_or(usage)?;
    }
    let name = args.next().ok_or(usage)?;
    let info = Netlink::open_in(&Namespace::current())?.link_by_name(&name)?;
    let tun = info
        .tun
        .ok_or_else(|| format!("{name} is not a TUN/TAP device"))?;
    let dev = Device::builder().name(&name).like(&tun).open()?;
    let mut sent = 0;
    for hex in args {
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|b| u8::from_str_radix(b, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| format!("not hex: {hex}"))?;
        dev.send(&bytes)?;
        sent += 1;
    }
    println!("{sent} packet(s) written to {name}");
    std::thread::sleep(std::time::Duration::from_millis(hold));
    Ok(())
}
