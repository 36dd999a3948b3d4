//! The harness itself: a truthful device gets through bring-up and I/O, a
//! lying one is survived, and every input kept in `seeds/` still passes.

use bare_nvme_fuzz::{run, EVENT_BYTES, HEADER};

/// Configuration bytes: defaults, two I/O queues, `ops` operations.
fn header(ops: u8) -> Vec<u8> {
    let mut h = vec![0u8; HEADER];
    h[4] = 0x22; // two queues asked, two granted
    h[7] = ops;
    h[8] = 0xFF; // no misbehaviour rule
    h
}

#[test]
fn a_truthful_device_serves_io() {
    let mut input = header(6);
    // Submit a read, a write, poll, a blocking write, a blocking read, poll.
    for op in [
        [0, 0, 1, 3],
        [1, 1, 0, 9],
        [2, 0, 0, 0],
        [5, 0, 1, 2],
        [4, 0, 1, 2],
        [2, 0, 0, 0],
    ] {
        input.extend(op);
    }
    let reached = run(&input);
    assert!(reached.ready, "{reached:?}");
    // The two of the script, and the read of the recovery check.
    assert_eq!((reached.submitted, reached.delivered), (3, 3));
    assert_eq!((reached.recovered, reached.attached), (1, 1));
    assert_eq!(reached.lies, 0);
}

#[test]
fn lies_are_told_and_survived() {
    let mut input = header(4);
    for op in [[0, 0, 1, 3], [2, 0, 0, 0], [3, 0, 0, 0], [2, 0, 0, 0]] {
        input.extend(op);
    }
    // A lie every few calls, of every kind.
    for k in 0..64u8 {
        let mut e = vec![0u8; EVENT_BYTES];
        e[0] = k % 7;
        e[2] = k.wrapping_mul(37);
        e[3..7].copy_from_slice(&(u32::from(k) * 0x0101_0101).to_le_bytes());
        e[7..11].copy_from_slice(&(u32::from(k) << 8 | 1).to_le_bytes());
        input.extend(e);
    }
    let reached = run(&input);
    assert!(reached.lies > 10, "{reached:?}");
}

#[test]
fn kept_inputs_still_pass() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let data = std::fs::read(entry.path()).unwrap();
        run(&data);
    }
}

/// How fast the harness runs, without the fuzzer's instrumentation:
/// `FUZZ_CORPUS=corpus/device cargo test --release --test replay -- --ignored rate --nocapture`
/// runs every input of the directory (findings included) and prints the
/// executions per second of this one thread.
#[test]
#[ignore]
fn rate() {
    let Some(dir) = std::env::var_os("FUZZ_CORPUS") else {
        return;
    };
    let inputs: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    std::panic::set_hook(Box::new(|_| {}));
    let start = std::time::Instant::now();
    let mut panics = 0;
    for data in &inputs {
        if std::panic::catch_unwind(|| run(data)).is_err() {
            panics += 1;
        }
    }
    let _ = std::panic::take_hook();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} inputs in {secs:.2} s: {:.0} per second ({panics} broke an invariant)",
        inputs.len(),
        inputs.len() as f64 / secs
    );
}

/// Inputs in `findings/` break an invariant not fixed yet (see its
/// README); this fails while any still does.
#[test]
#[ignore]
fn open_findings() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("findings");
    let mut broken = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some() {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            broken.push(path);
        }
    }
    assert!(broken.is_empty(), "still broken: {broken:?}");
}
