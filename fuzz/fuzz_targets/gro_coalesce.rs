//! Any batch of packets: GRO coalesce never panics, keeps every packet's bytes in bounds,
//! and whatever it emits with a GSO header splits again without error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tunctl::offload::{gso_split, GroTable, VirtioNetHdr};

const OFF: usize = 12;

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, mut rest)) = data.split_first() else {
        return;
    };
    // Packets as length-prefixed chunks: [len_hi, len_lo, bytes...]...
    let mut bufs = Vec::new();
    let mut lens = Vec::new();
    while rest.len() >= 2 && bufs.len() < 32 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])) % 2048;
        let chunk = &rest[2..];
        let take = len.min(chunk.len());
        let mut buf = vec![0u8; OFF + 65536];
        buf[OFF..OFF + take].copy_from_slice(&chunk[..take]);
        bufs.push(buf);
        lens.push(take);
        rest = &chunk[take..];
    }
    let mut table = GroTable::new(ctl & 1 != 0);
    table.set_protocols(ctl & 2 != 0, ctl & 1 != 0);
    let mut out = Vec::new();
    table
        .coalesce(&mut bufs, &mut lens, OFF, &mut out)
        .expect("buffers are large enough");
    let mut segs = vec![vec![0u8; 2200]; 64];
    let mut sizes = vec![0usize; 64];
    for &i in &out {
        assert!(lens[i] <= 65535 + 40);
        let hdr = VirtioNetHdr::parse(&bufs[i][OFF - VirtioNetHdr::LEN..]).expect("header written");
        if hdr.gso_type != 0 {
            let n = gso_split(&bufs[i][OFF..OFF + lens[i]], hdr, &mut segs, &mut sizes, 0)
                .expect("a coalesced packet splits again");
            assert!(n >= 2);
        }
    }
});
