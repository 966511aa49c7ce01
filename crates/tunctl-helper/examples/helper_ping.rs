//! An unprivileged program using a TUN device through `tunctl-helper`:
//! `helper_ping NAMESPACE`. The helper creates `ht%d` in the namespace with 10.88.0.1/24 and
//! brings it up; this program writes an ICMP echo request from 10.88.0.2 into it and reads
//! the kernel's echo reply back out. Exit 0 and "reply" on success.
//!
//! `helper_ping --builder NAMESPACE` asks the same through `Device::builder()` with
//! `helper(true)`, as a newcomer would write it, and also prints "hint" once a direct change
//! of the helper-made device is refused with the calls that would work.

use std::time::{Duration, Instant};

use tunctl::helper::{Netns, Op, Request};
use tunctl::offload::internet_checksum;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    let builder = args.peek().map(String::as_str) == Some("--builder");
    if builder {
        args.next();
    }
    let ns = args
        .next()
        .ok_or("usage: helper_ping [--builder] NAMESPACE")?;
    let dev = if builder {
        let dev = tunctl::Device::builder()
            .tun()
            .name("ht%d")
            .namespace(tunctl::Namespace::named(&ns)?)
            .address("10.88.0.1/24".parse()?)
            .up(true)
            .helper(true)
            .create()?;
        match dev.add_address("10.88.0.9/24".parse()?) {
            Err(e)
                if e.kind() == tunctl::ErrorKind::PermissionDenied
                    && e.to_string().contains("helper::run") =>
            {
                println!("hint");
            }
            other => eprintln!("helper_ping: a direct change gave {other:?}"),
        }
        dev
    } else {
        let mut req = Request::new(Op::Create, "ht%d");
        req.netns = Netns::Named(ns);
        req.addrs = vec!["10.88.0.1/24".parse()?];
        req.up = true;
        tunctl::helper::create(&req)?
    };
    eprintln!(
        "helper_ping: {} (index {}), flags {}",
        dev.name(),
        dev.index(),
        dev.flags()?
    );

    // IPv4 + ICMP echo request 10.88.0.2 -> 10.88.0.1.
    let mut pkt = vec![
        0x45, 0, 0, 28, 0x12, 0x34, 0x40, 0, 64, 1, 0, 0, 10, 88, 0, 2, 10, 88, 0, 1,
    ];
    let sum = internet_checksum(&pkt);
    pkt[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut icmp = vec![8, 0, 0, 0, 0x0b, 0xad, 0, 1];
    let sum = internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    pkt.extend_from_slice(&icmp);
    dev.send(&pkt)?;

    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if let Some(n) = dev.recv_timeout(&mut buf, Duration::from_millis(200))? {
            let p = &buf[..n];
            if n >= 28 && p[9] == 1 && p[20] == 0 && p[24..26] == [0x0b, 0xad] {
                println!("reply");
                dev.destroy().ok();
                return Ok(());
            }
        }
    }
    Err("no echo reply".into())
}
