//! vpwn's parsers of outside input never panic: a wg-quick file, a key, an endpoint,
//! whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = tunctl_vpwn::Config::parse(text) {
        // What parses must be complete and bounded by the input.
        assert!(config.interface.addresses.len() <= text.len());
    }
    let _ = text.parse::<tunctl_vpwn::Key>();
    // Only literal addresses: a host name would be looked up.
    if text.parse::<std::net::SocketAddr>().is_ok() {
        let _ = tunctl_vpwn::config::parse_endpoint(text);
    }
});
