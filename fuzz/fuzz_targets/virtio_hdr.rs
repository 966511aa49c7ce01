//! Any bytes: parsing a virtio-net header and a packet-information header never panics, and
//! what parses re-encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tunctl::offload::VirtioNetHdr;
use tunctl::PacketInfo;

fuzz_target!(|data: &[u8]| {
    if let Ok(hdr) = VirtioNetHdr::parse(data) {
        let mut out = [0u8; VirtioNetHdr::LEN];
        hdr.write(&mut out).expect("room for a header");
        assert_eq!(&out[..], &data[..VirtioNetHdr::LEN]);
        let _ = hdr.gso();
    }
    if let Ok((pi, rest)) = PacketInfo::parse(data) {
        assert_eq!(rest.len() + 4, data.len());
        assert_eq!(&pi.to_bytes()[..], &data[..4]);
    }
});
