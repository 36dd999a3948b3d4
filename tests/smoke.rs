use bare_nvme::{Driver, DriverConfig, Platform};
use bare_nvme_sim::{ControllerSpec, NamespaceSpec, Sim};
use std::time::Duration;

#[test]
fn smoke() {
    let sim = Sim::single(
        ControllerSpec::default()
            .serial("sn1")
            .namespace(NamespaceSpec::new(4096, 512)),
    );
    let mut driver: Driver<_, _> =
        Driver::new(sim.platform(), sim.config_access(), DriverConfig::default());
    assert_eq!(driver.scan().unwrap(), 1);
    let events = driver.wait_ready(Duration::from_secs(5));
    println!("{events:?}");
    let id = driver.ready_controllers().next().expect("ready");
    let p = sim.platform();
    let mut buf = p.dma_alloc(8192, 4096).unwrap();
    buf.as_mut_slice().fill(0xA5);
    let c = driver.controller(id).unwrap();
    c.write(1, 10, &buf).unwrap();
    let mut back = p.dma_alloc(8192, 4096).unwrap();
    c.read(1, 10, &mut back).unwrap();
    assert_eq!(back.as_slice(), buf.as_slice());
    c.detach().unwrap();
    p.dma_free(buf);
    p.dma_free(back);
    println!("{:?}", driver.tick());
    let counters = sim.counters();
    println!("{:?}", sim.protocol_log());
    assert_eq!(counters.protocol_errors, 0);
    assert_eq!(counters.dma_regions, 0);
}
