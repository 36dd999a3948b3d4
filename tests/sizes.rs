//! What the driver's memory costs: `size_of` for the configurations in
//! README's memory table, checked against that table, and a large driver
//! built in place on a thread with a small stack.

use std::mem::size_of;
use std::time::Duration;

use bare_nvme::{Controller, Driver, DriverConfig};
use bare_nvme_sim::{ControllerSpec, NamespaceSpec, Sim, SimConfig, SimPlatform};

/// README's label of each configuration and its size in bytes.
fn measured() -> Vec<(&'static str, usize)> {
    type P = SimPlatform;
    type C = SimConfig;
    vec![
        (
            "`Driver<_, _, 1, 1, 32>`",
            size_of::<Driver<P, C, 1, 1, 32>>(),
        ),
        (
            "`Driver<_, _, 1, 2, 64>`",
            size_of::<Driver<P, C, 1, 2, 64>>(),
        ),
        (
            "`Driver<_, _, 4, 1, 128>`",
            size_of::<Driver<P, C, 4, 1, 128>>(),
        ),
        ("`Driver<_, _>` (4, 4, 256)", size_of::<Driver<P, C>>()),
        ("`Driver<_, _, 16>`", size_of::<Driver<P, C, 16>>()),
        (
            "`Controller<_, (), 1, 32>`",
            size_of::<Controller<P, (), 1, 32>>(),
        ),
        ("`Controller<_>` (4, 256)", size_of::<Controller<P>>()),
    ]
}

/// The rows of README's table: first cell, and the number in the second.
fn readme_rows() -> Vec<(String, usize)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    readme
        .lines()
        .filter(|l| l.starts_with("| `Driver") || l.starts_with("| `Controller"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let bytes = cells[2].replace(',', "").parse().expect("a byte count");
            (cells[1].to_string(), bytes)
        })
        .collect()
}

#[test]
fn readme_memory_table_matches_size_of() {
    // The table states sizes with 8-byte platform and access handles.
    assert_eq!((size_of::<SimPlatform>(), size_of::<SimConfig>()), (8, 8));
    let rows = readme_rows();
    let measured = measured();
    for (label, bytes) in &measured {
        println!("| {label} | {bytes} |");
    }
    let as_strings: Vec<(String, usize)> =
        measured.iter().map(|(l, b)| (l.to_string(), *b)).collect();
    assert_eq!(rows, as_strings, "README's memory table is out of date");
}

#[test]
fn one_controller_with_one_queue_of_32_fits_in_32_kib() {
    assert!(size_of::<Driver<SimPlatform, SimConfig, 1, 1, 32>>() <= 32 << 10);
}

#[test]
fn a_driver_of_sixteen_controllers_is_built_in_place_on_a_small_stack() {
    // Nearly 1 MiB of driver; the thread's stack is half of that.
    let worker = std::thread::Builder::new()
        .stack_size(512 << 10)
        .spawn(|| {
            let mut builder = Sim::builder();
            for serial in 0..3 {
                let spec = ControllerSpec::default()
                    .serial(&format!("S{serial}"))
                    .namespace(NamespaceSpec::new(64, 512));
                builder = builder.controller_on_bus0(spec);
            }
            let sim = builder.build();
            let mut place = Box::<Driver<SimPlatform, SimConfig, 16>>::new_uninit();
            let driver = Driver::new_in(
                &mut place,
                sim.platform(),
                sim.config_access(),
                DriverConfig::default(),
            );
            driver.scan().expect("scan");
            let _ = driver.wait_ready(Duration::from_secs(30));
            let ready = driver.ready_controllers().count();
            // SAFETY: new_in initialised it.
            drop(unsafe { place.assume_init() });
            ready
        })
        .expect("thread");
    assert_eq!(worker.join().expect("no stack overflow"), 3);
}
