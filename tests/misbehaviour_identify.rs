//! Identify data that lies: pages of garbage and single broken fields. The
//! controller fails with an error naming the field, or comes up serving
//! only what it could validate; it never panics and returns all memory.

mod misbehaviour_common;

use bare_nvme::nvme::identify::{ctrl, ns};
use bare_nvme::{Error, Event, State};
use bare_nvme_sim::{ControllerSpec, NamespaceSpec, Sim};
use misbehaviour_common::*;

fn failed_with(events: &[Event]) -> Option<Error> {
    events.iter().find_map(|e| match e {
        Event::Failed { error, .. } => Some(*error),
        _ => None,
    })
}

/// Brings `spec` up and returns how it ended, after checking that no
/// memory leaked.
fn outcome(spec: ControllerSpec) -> Result<usize, Error> {
    let sim = Sim::single(spec);
    let (mut driver, events) = start(&sim);
    let id = driver.controllers().next().unwrap();
    let result = match driver.controller_state(id) {
        Some(State::Ready) => Ok(driver.controller(id).unwrap().namespaces().len()),
        _ => Err(failed_with(&events).unwrap_or_else(|| panic!("no outcome: {events:?}"))),
    };
    finish(driver, &sim);
    result
}

fn ns_spec(patch: (usize, &[u8])) -> ControllerSpec {
    ControllerSpec::default()
        .serial("id")
        .namespace(NamespaceSpec::new(1024, 512).identify_patch(patch.0, patch.1))
}

#[test]
fn garbage_identify_controller_pages_fail_with_a_named_field_or_are_served() {
    let mut refused = 0;
    for seed in 0..48 {
        let spec = ControllerSpec::default()
            .namespace(NamespaceSpec::new(256, 512))
            .identify_garbage(seed);
        match outcome(spec) {
            Ok(_) => {}
            Err(Error::BadDeviceValue { field, .. }) => {
                assert!(["SQES", "CQES", "active namespace list"].contains(&field));
                refused += 1;
            }
            Err(e) => panic!("seed {seed}: {e:?}"),
        }
    }
    assert!(refused > 0, "random SQES/CQES are mostly invalid");
}

#[test]
fn garbage_identify_namespace_pages_fail_with_a_named_field() {
    let mut refused = 0;
    for seed in 0..48 {
        let spec = ControllerSpec::default()
            .namespace(NamespaceSpec::new(256, 512).identify_garbage(seed));
        match outcome(spec) {
            Ok(n) => assert!(n <= 1),
            Err(Error::BadDeviceValue { field, .. }) => {
                assert!(["NCAP", "NLBAF", "FLBAS", "LBADS", "NSZE"].contains(&field));
                refused += 1;
            }
            Err(Error::DeviceUnsupported { .. }) => refused += 1,
            Err(e) => panic!("seed {seed}: {e:?}"),
        }
    }
    assert!(refused > 0);
}

#[test]
fn each_broken_namespace_field_is_named() {
    let cases: [(usize, &[u8], &str); 5] = [
        // 65 formats: more than the 64 the spec allows.
        (ns::NLBAF, &[64], "NLBAF"),
        // Format index 5 of a namespace that has one format.
        (ns::FLBAS, &[5], "FLBAS"),
        // 2^40-byte blocks.
        (ns::LBAF0 + 2, &[40], "LBADS"),
        // Capacity above the size.
        (ns::NCAP, &2000u64.to_le_bytes(), "NCAP"),
        // A size whose byte count does not fit 64 bits.
        (ns::NSZE, &(1u64 << 60).to_le_bytes(), "NSZE"),
    ];
    for (offset, bytes, field) in cases {
        let r = outcome(ns_spec((offset, bytes)));
        assert!(
            matches!(r, Err(Error::BadDeviceValue { field: f, .. }) if f == field),
            "{field}: {r:?}"
        );
    }
}

#[test]
fn a_zero_size_namespace_is_skipped() {
    let r = outcome(ns_spec((ns::NSZE, &0u64.to_le_bytes())));
    assert_eq!(r, Ok(0));
}

#[test]
fn broken_controller_entry_sizes_are_named() {
    for (offset, value, field) in [(ctrl::SQES, 0x44, "SQES"), (ctrl::CQES, 0x22, "CQES")] {
        let spec = spec().identify_patch(offset, &[value]);
        let r = outcome(spec);
        assert_eq!(
            r,
            Err(Error::BadDeviceValue {
                field,
                value: value as u64
            })
        );
    }
}

#[test]
fn a_namespace_count_of_zero_or_huge_is_bounded() {
    // NN = 0 while the active list names namespace 1: a contradiction,
    // reported with the offending ID.
    assert_eq!(
        outcome(spec().identify_patch(ctrl::NN, &[0; 4])),
        Err(Error::BadDeviceValue {
            field: "active namespace list",
            value: 1
        })
    );
    // NN = 2^32 - 1 with one active namespace: the list decides.
    assert_eq!(outcome(spec().identify_patch(ctrl::NN, &[0xFF; 4])), Ok(1));
}

#[test]
fn an_absurd_mdts_is_clamped() {
    for mdts in [1u8, 20, 21, 255] {
        let sim = Sim::single(spec().mdts(mdts).identify_patch(ctrl::MDTS, &[mdts]));
        let (mut driver, id) = ready(&sim);
        let max = driver.controller(id).unwrap().max_transfer();
        assert!((4096..=4 << 20).contains(&max), "mdts {mdts}: {max}");
        if mdts == 1 {
            assert_eq!(max, 8192);
        }
        round_trip(&mut driver, &sim, id, 0);
        finish(driver, &sim);
    }
}
