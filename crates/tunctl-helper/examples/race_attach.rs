//! The attacker of the multi-queue takeover race, for the helper's tests:
//! `race_attach NAME SECONDS` loops on TUNSETIFF for NAME in its own network namespace for
//! at most SECONDS, as multi-queue and single-queue tun and tap, and prints
//! `attempts N attached M`. Run as a user who owns nothing, it must never attach to a
//! device that `tunctl-helper` (or root's `tunctl add --owner`) is creating for someone else.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const IFF_TUN: libc::c_short = 0x0001;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(secs)) = (args.next(), args.next()) else {
        eprintln!("usage: race_attach NAME SECONDS");
        std::process::exit(2);
    };
    let secs: u64 = secs.parse().unwrap_or(10).min(300);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let variants = [
        IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE,
        IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE,
        IFF_TUN | IFF_NO_PI,
        IFF_TUN | IFF_MULTI_QUEUE,
    ];
    let (mut attempts, mut attached) = (0u64, 0u64);
    let stop = std::path::Path::new("/run").join(format!("race_attach.stop.{name}"));
    while Instant::now() < deadline && !stop.exists() {
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
        else {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: variants[(attempts % variants.len() as u64) as usize],
            _pad: [0; 22],
        };
        let n = name.len().min(libc::IFNAMSIZ - 1);
        req.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        attempts += 1;
        // SAFETY: TUNSETIFF reads and writes an ifreq-sized struct we own.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) };
        if rc == 0 {
            attached += 1;
            eprintln!(
                "race_attach: attached to {name} with flags {:#x}",
                req.flags
            );
        }
    }
    println!("attempts {attempts} attached {attached}");
}
