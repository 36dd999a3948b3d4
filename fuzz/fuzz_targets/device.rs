//! The fuzzer controls everything the device says while the driver
//! enumerates, brings a controller up, serves I/O and tears it down.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bare_nvme_fuzz::run(data);
});
