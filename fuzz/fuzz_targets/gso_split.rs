//! Any header and packet: GSO split never panics, and every segment it produces fits its
//! buffer and is no longer than the input's headers plus one segment's payload.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tunctl::offload::{gso_split, VirtioNetHdr};

fuzz_target!(|data: &[u8]| {
    let Ok(hdr) = VirtioNetHdr::parse(data) else {
        return;
    };
    let packet = &data[VirtioNetHdr::LEN..];
    let mut out = vec![vec![0u8; 1600]; 48];
    let mut sizes = vec![0usize; 48];
    let offset = usize::from(data.get(1).copied().unwrap_or(0) % 32);
    if let Ok(n) = gso_split(packet, hdr, &mut out, &mut sizes, offset) {
        assert!(n >= 1 && n <= out.len());
        for &s in &sizes[..n] {
            assert!(offset + s <= 1600);
            assert!(s <= packet.len());
        }
    }
});
