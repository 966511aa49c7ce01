use tunctl::{Device, Namespace};
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ns = Namespace::create("tunctl-smoke")?; // deleted when `ns` is dropped
    let r = (|| -> Result<(), Box<dyn std::error::Error>> {
        let dev = Device::builder()
            .tun()
            .name("smk%d")
            .namespace(ns.clone())
            .create()?;
        println!(
            "name {} flags {:?} features {:?}",
            dev.name(),
            dev.flags()?,
            dev.features()?
        );
        dev.add_address("10.9.0.1/24".parse()?)?;
        dev.add_address("fd00:9::1/64".parse()?)?;
        dev.up()?;
        dev.set_peer("10.9.0.1".parse()?, "10.9.0.2".parse()?)?;
        dev.set_owner(1234)?;
        dev.set_group(4321)?;
        println!("{:#?}", dev.info()?);
        for a in dev.addresses()? {
            println!("addr {a}");
        }
        if let Err(e) = dev.set_mtu(70000) {
            println!("mtu err: {e}");
        }
        if let Err(e) = dev.add_address("10.9.0.1/24".parse()?) {
            println!("dup err: {e}");
        }
        let tap = Device::builder()
            .name("smk%d")
            .namespace(ns.clone())
            .create()?;
        tap.set_mac("02:00:00:00:00:09".parse()?)?;
        tap.add_address("10.8.0.1/24".parse()?)?;
        tap.set_broadcast("10.8.0.1".parse()?, "10.8.0.200".parse()?)?;
        tap.up()?;
        println!("tap {:?}", tap.info()?.mac);
        for a in tap.addresses()? {
            println!("tap addr {a}");
        }
        let mut buf = [0u8; 2000];
        let n = tap.recv_timeout(&mut buf, std::time::Duration::from_secs(3))?;
        println!("tap got {n:?}");
        if let Err(e) = Device::builder()
            .tun()
            .name(tap.name())
            .namespace(ns.clone())
            .create()
        {
            println!("kind err: {e}");
        }
        if let Err(e) = Device::builder()
            .tun()
            .name("lo")
            .namespace(ns.clone())
            .create()
        {
            println!("lo err: {e}");
        }
        if let Err(e) = Device::builder()
            .tun()
            .name(dev.name())
            .namespace(ns.clone())
            .create()
        {
            println!("busy err: {e}");
        }
        dev.destroy()?;
        if let Err(e) = dev.destroy() {
            println!("second destroy: {e}");
        }
        if let Err(e) = dev.up() {
            println!("up after destroy: {e}");
        }
        Ok(())
    })();
    Namespace::delete("tunctl-smoke")?;
    r
}
