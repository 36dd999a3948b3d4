//! Which namespaces a controller serves: only those the driver can serve
//! correctly. A block larger than one command may carry, metadata (separate
//! or inline), protection information and I/O command sets other than NVM are
//! refused at bring-up with the reason; the other namespaces keep working,
//! and nothing is ever sent to a refused one.

mod common;

use bare_nvme::nvme::command::{admin, sc, sct, Status};
use bare_nvme::nvme::identify::{csi, ctrl, nid};
use bare_nvme::{ControllerConfig, ControllerId, Error, NamespaceRefusal, Platform};
use bare_nvme_sim::{ControllerSpec, CtrlId, Metadata, NamespaceSpec, Sim};
use common::*;

/// Namespace 1 is a plain 512-byte NVM namespace; `others` follow as 2, 3, ...
fn controller(others: &[NamespaceSpec]) -> ControllerSpec {
    others
        .iter()
        .fold(spec(1024, 512), |c, ns| c.namespace(ns.clone()))
}

/// The IDs of the namespaces the controller serves.
fn served(driver: &mut BoxedDrv, id: ControllerId) -> Vec<u32> {
    let c = driver.controller(id).unwrap();
    c.namespaces().iter().map(|n| n.id()).collect()
}

/// I/O naming `nsid` is refused by the driver and reaches no device.
fn assert_not_served(sim: &Sim, driver: &mut BoxedDrv, id: ControllerId, nsid: u32) {
    let p = sim.platform();
    let before = io_total(&sim.counters());
    let mut buf = zeroed(&p, 4096);
    let c = driver.controller(id).unwrap();
    let unknown = Err(Error::UnknownNamespace { nsid });
    assert_eq!(c.read(nsid, 0, &mut buf), unknown, "read {nsid}");
    assert_eq!(c.write(nsid, 0, &buf), unknown, "write {nsid}");
    assert_eq!(c.flush(nsid), unknown, "flush {nsid}");
    assert_eq!(c.write_zeroes(nsid, 0, 1), unknown, "write zeroes {nsid}");
    assert!(c.namespace(nsid).is_err());
    assert_eq!(
        io_total(&sim.counters()),
        before,
        "a command reached {nsid}"
    );
    p.dma_free(buf);
}

/// A write then read on `nsid` returns the data and stores it on the media.
fn round_trip(sim: &Sim, driver: &mut BoxedDrv, id: ControllerId, nsid: u32, lba: u64) {
    let p = sim.platform();
    let c = driver.controller(id).unwrap();
    let bs = c.namespace(nsid).unwrap().block_size() as usize;
    let data = filled(&p, 2 * bs, nsid as u8);
    let mut back = zeroed(&p, 2 * bs);
    c.write(nsid, lba, &data).unwrap();
    c.read(nsid, lba, &mut back).unwrap();
    assert_eq!(back.as_slice(), data.as_slice(), "namespace {nsid}");
    assert_eq!(
        sim.read_block(CtrlId(0), nsid, lba + 1),
        data.as_slice()[bs..],
        "namespace {nsid} media"
    );
    p.dma_free(data);
    p.dma_free(back);
}

/// Brings `spec` up, checks that exactly `serve` are served and every other
/// active namespace is refused as `refuse` says and sent nothing, that I/O
/// works on the served ones, and that the model saw no violation.
fn expect(
    spec: ControllerSpec,
    config: ControllerConfig,
    serve: &[u32],
    refuse: &[(u32, NamespaceRefusal)],
) -> (Sim, BoxedDrv, ControllerId) {
    let sim = Sim::single(spec);
    let page = sim.identify_controller(CtrlId(0));
    let count = u32::from_le_bytes(page[ctrl::NN..ctrl::NN + 4].try_into().unwrap());
    let (mut driver, ids) = up(&sim, config);
    assert_eq!(ids.len(), 1, "not ready: {:?}", sim.protocol_log());
    let id = ids[0];
    assert_eq!(served(&mut driver, id), serve);
    let refused = driver.controller(id).unwrap().refused_namespaces().to_vec();
    assert_eq!(refused, refuse);
    for nsid in (1..=count).filter(|n| !serve.contains(n)) {
        assert_not_served(&sim, &mut driver, id, nsid);
    }
    for &nsid in serve {
        round_trip(&sim, &mut driver, id, nsid, 6);
    }
    assert_clean(&sim);
    (sim, driver, id)
}

#[test]
fn a_block_larger_than_the_maximum_transfer_is_refused_and_the_others_served() {
    // MDTS 1: 8 KiB per command; namespace 2 has 16 KiB blocks.
    let spec = controller(&[NamespaceSpec::new(64, 16384), NamespaceSpec::new(256, 4096)]).mdts(1);
    let too_large = NamespaceRefusal::BlockLargerThanTransfer {
        block_size: 16384,
        max_transfer: 8192,
    };
    let (sim, driver, _) = expect(
        spec,
        ControllerConfig::default(),
        &[1, 3],
        &[(2, too_large)],
    );
    finish(&sim, driver);
    // The embedder's own limit counts as well: 4 KiB per command.
    let config = ControllerConfig::default().max_transfer(4096);
    let spec = controller(&[NamespaceSpec::new(64, 8192)]);
    let too_large = NamespaceRefusal::BlockLargerThanTransfer {
        block_size: 8192,
        max_transfer: 4096,
    };
    let (sim, driver, _) = expect(spec, config, &[1], &[(2, too_large)]);
    finish(&sim, driver);
}

#[test]
fn a_namespace_with_separate_metadata_is_refused() {
    for ms in [8, 16, 64] {
        let spec = controller(&[NamespaceSpec::new(1024, 512).metadata(Metadata::Separate(ms))]);
        let reason = NamespaceRefusal::SeparateMetadata {
            bytes_per_block: ms,
        };
        let (sim, driver, _) = expect(spec, ControllerConfig::default(), &[1], &[(2, reason)]);
        finish(&sim, driver);
    }
}

#[test]
fn a_namespace_with_protection_information_is_refused() {
    for (metadata, dps) in [
        (Metadata::Separate(8), 1),
        (Metadata::Extended(8), 0x9),
        (Metadata::Separate(16), 3),
    ] {
        let ns = NamespaceSpec::new(1024, 4096)
            .metadata(metadata)
            .protection(dps);
        let reason = NamespaceRefusal::ProtectionInformation { dps };
        let (sim, driver, _) = expect(
            controller(&[ns]),
            ControllerConfig::default(),
            &[1],
            &[(2, reason)],
        );
        finish(&sim, driver);
    }
}

#[test]
fn a_namespace_with_inline_metadata_is_refused_and_the_controller_serves_the_rest() {
    let spec = controller(&[
        NamespaceSpec::new(1024, 512).metadata(Metadata::Extended(8)),
        NamespaceSpec::new(1024, 4096).metadata(Metadata::Extended(64)),
        NamespaceSpec::new(1024, 4096),
    ]);
    let inline = |bytes_per_block| NamespaceRefusal::InlineMetadata { bytes_per_block };
    let refused = [(2, inline(8)), (3, inline(64))];
    let (sim, driver, _) = expect(spec, ControllerConfig::default(), &[1, 4], &refused);
    finish(&sim, driver);
}

#[test]
fn zoned_key_value_and_unknown_command_sets_are_refused() {
    let spec = controller(&[
        NamespaceSpec::new(1024, 4096).command_set(csi::ZONED),
        NamespaceSpec::new(1024, 512).command_set(csi::KEY_VALUE),
        NamespaceSpec::new(1024, 512).command_set(0x7F),
        NamespaceSpec::new(1024, 512)
            .command_set(csi::NVM)
            .eui64(0x0102_0304_0506_0708),
    ]);
    let set = |csi| NamespaceRefusal::CommandSet { csi };
    let refused = [
        (2, set(csi::ZONED)),
        (3, set(csi::KEY_VALUE)),
        (4, set(0x7F)),
    ];
    let (sim, driver, _) = expect(spec, ControllerConfig::default(), &[1, 5], &refused);
    finish(&sim, driver);
}

#[test]
fn a_controller_without_descriptor_lists_serves_its_namespaces_as_nvm() {
    let spec = controller(&[NamespaceSpec::new(256, 4096)]).descriptor_lists(false);
    let (sim, driver, _) = expect(spec, ControllerConfig::default(), &[1, 2], &[]);
    // Controller, active list, and for each namespace the descriptor list
    // (refused) and Identify Namespace.
    assert_eq!(sim.counters().admin(admin::IDENTIFY), 6);
    finish(&sim, driver);
}

#[test]
fn a_descriptor_list_that_fails_otherwise_refuses_only_its_namespace() {
    let spec = controller(&[
        NamespaceSpec::new(256, 512).descriptor_list_fails(sc::INTERNAL_ERROR),
        NamespaceSpec::new(256, 512).descriptor_list_fails(sc::INVALID_FIELD),
    ]);
    let reason = NamespaceRefusal::DescriptorListFailed {
        status: Status::new(sct::GENERIC, sc::INTERNAL_ERROR),
    };
    let (sim, driver, _) = expect(spec, ControllerConfig::default(), &[1, 3], &[(2, reason)]);
    finish(&sim, driver);
}

/// A descriptor of type `nidt` with `nidl` identifier bytes of `fill`.
fn descriptor(nidt: u8, nidl: u8, fill: u8) -> Vec<u8> {
    let mut d = vec![nidt, nidl, 0, 0];
    d.extend(std::iter::repeat_n(fill, nidl as usize));
    d
}

/// Unknown descriptors (type 0x80, 252 bytes each) filling `n` * 256 bytes.
fn filler(n: usize) -> Vec<u8> {
    (0..n).flat_map(|_| descriptor(0x80, 252, 0xA5)).collect()
}

#[test]
fn lying_descriptor_lists_refuse_the_namespace_without_harm() {
    // Each list, and the offset of the descriptor that breaks it.
    let refused: [(Vec<u8>, u16); 7] = [
        // A command set identifier of two bytes.
        (descriptor(nid::CSI, 2, 0), 0),
        // An EUI-64 of four bytes.
        (
            [descriptor(nid::EUI64, 4, 1), descriptor(nid::CSI, 1, 0)].concat(),
            0,
        ),
        // A UUID of 17 bytes.
        (descriptor(nid::UUID, 17, 0), 0),
        // Two command sets.
        (
            [descriptor(nid::CSI, 1, 0), descriptor(nid::CSI, 1, 2)].concat(),
            5,
        ),
        // A descriptor running past the page.
        (
            [filler(15), descriptor(0x80, 255, 0x5A)].concat()[..4096].to_vec(),
            3840,
        ),
        // No terminator, all ones: the 16th descriptor runs past the page.
        (vec![0xFF; 4096], 15 * 259),
        // A header cut by the page end.
        (
            [filler(15), descriptor(0x80, 250, 0), vec![0x80, 0x10]].concat(),
            4094,
        ),
    ];
    for (bytes, offset) in refused {
        let ns = NamespaceSpec::new(256, 512).descriptor_patch(0, &bytes);
        let reason = NamespaceRefusal::BadDescriptorList { offset };
        let (sim, driver, _) = expect(
            controller(&[ns]),
            ControllerConfig::default(),
            &[1],
            &[(2, reason)],
        );
        finish(&sim, driver);
    }
    // A list that fills the page exactly with descriptors the driver does
    // not know and names no command set is a valid list of an NVM namespace.
    let ns = NamespaceSpec::new(256, 512).descriptor_patch(0, &filler(16));
    let (sim, driver, _) = expect(controller(&[ns]), ControllerConfig::default(), &[1, 2], &[]);
    finish(&sim, driver);
}

#[test]
fn garbage_descriptor_lists_never_harm_the_controller() {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for seed in 0..32 {
        let page: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let ns = NamespaceSpec::new(256, 512).descriptor_patch(0, &page);
        let sim = Sim::single(controller(&[ns]));
        let (mut driver, ids) = up(&sim, ControllerConfig::default());
        assert_eq!(ids.len(), 1, "seed {seed}: {:?}", sim.protocol_log());
        let id = ids[0];
        let ns = served(&mut driver, id);
        assert_eq!(ns[0], 1, "seed {seed}");
        let refused = driver.controller(id).unwrap().refused_namespaces().to_vec();
        if ns.len() == 1 {
            // Random bytes: a broken list, or a command set other than NVM.
            assert!(
                matches!(
                    refused[..],
                    [(
                        2,
                        NamespaceRefusal::BadDescriptorList { .. }
                            | NamespaceRefusal::CommandSet { .. }
                    )]
                ),
                "seed {seed}: {refused:?}"
            );
            assert_not_served(&sim, &mut driver, id, 2);
        } else {
            assert!(refused.is_empty(), "seed {seed}: {refused:?}");
        }
        for nsid in ns {
            round_trip(&sim, &mut driver, id, nsid, seed);
        }
        finish(&sim, driver);
    }
}

#[test]
fn a_mixed_controller_serves_io_on_the_good_namespace() {
    let spec = ControllerSpec::default()
        .namespace(NamespaceSpec::new(1024, 512).metadata(Metadata::Separate(8)))
        .namespace(NamespaceSpec::new(512, 4096));
    let separate = NamespaceRefusal::SeparateMetadata { bytes_per_block: 8 };
    let (sim, mut driver, id) = expect(spec, ControllerConfig::default(), &[2], &[(1, separate)]);
    let p = sim.platform();
    // A transfer the blocking wrapper splits, on the good namespace.
    let data = filled(&p, 64 << 10, 7);
    let mut back = zeroed(&p, 64 << 10);
    let c = driver.controller(id).unwrap();
    c.write(2, 100, &data).unwrap();
    c.read(2, 100, &mut back).unwrap();
    assert_eq!(back.as_slice(), data.as_slice());
    c.flush(2).unwrap();
    p.dma_free(data);
    p.dma_free(back);
    finish(&sim, driver);
}
