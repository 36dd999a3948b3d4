//! Replays one input with the driver's log and the harness's operations
//! printed: `FUZZ_TRACE=1 FUZZ_INPUT=path cargo test --release --test trace`.

struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        eprintln!("{} {}", r.level(), r.args());
    }
    fn flush(&self) {}
}

#[test]
fn trace() {
    let Some(path) = std::env::var_os("FUZZ_INPUT") else {
        return;
    };
    log::set_logger(&Stderr).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let data = std::fs::read(path).unwrap();
    eprintln!("{:?}", bare_nvme_fuzz::run(&data));
}
