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
        assert!(config.addresses.len() <= text.len());
        assert!(config.peers.len() <= text.len());
        // One network, one peer.
        let nets: Vec<_> = config.peers.iter().flat_map(|p| &p.allowed_ips).collect();
        for (i, n) in nets.iter().enumerate() {
            assert!(!nets[..i].contains(n), "{n} twice");
        }
    }
    let _ = text.parse::<tunctl_vpwn::SecretKey>();
    let _ = text.parse::<tunctl_vpwn::PublicKey>();
    // Only literal addresses and scopes that name no interface: a host name would be
    // looked up.
    if text.parse::<std::net::SocketAddr>().is_ok() {
        let _ = tunctl_vpwn::config::resolve_endpoint(text);
    }
});
