//! Any bytes: the helper's request parser never panics, and what it accepts re-encodes to a
//! request that parses to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tunctl::helper::Request;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = Request::parse(data) {
        let again = Request::parse(req.encode().as_bytes()).expect("an encoded request parses");
        assert_eq!(again, req);
    }
});
