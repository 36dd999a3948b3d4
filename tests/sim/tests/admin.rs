//! Controller bring-up and admin commands through the register interface.

mod common;

use bare_nvme::nvme::command::{admin, cns, sc, sct, SubmissionEntry};
use bare_nvme::nvme::identify::{self, ControllerInfo, NamespaceInfo};
use bare_nvme::nvme::regs;
use bare_nvme::{Platform, RegisterAccess};
use bare_nvme_sim::{ControllerSpec, CtrlId, Metadata, NamespaceSpec, Sim};
use common::*;
use std::time::Duration;

fn spec() -> ControllerSpec {
    ControllerSpec::default()
        .serial("sn1")
        .namespace(NamespaceSpec::new(1000, 512))
        .namespace(NamespaceSpec::new(200, 4096).eui64(0x1122_3344_5566_7788))
        .mqes(255)
        .mdts(5)
        .max_ioqpairs(4)
}

#[test]
fn cap_and_version_report_the_knobs() {
    let sim = Sim::single(spec().timeout(255).dstrd(2).page_sizes(0, 3));
    let (_, _, regs, _) = Mini::map(&sim).unwrap();
    let cap = regs::Cap(regs.read64(regs::CAP));
    assert_eq!(cap.max_queue_entries(), 256);
    assert_eq!(cap.timeout_units(), 255);
    assert_eq!(cap.doorbell_stride_exp(), 2);
    assert!(cap.contiguous_queues_required() && cap.nvm_command_set() && cap.nssr_supported());
    assert_eq!(cap.mpsmax(), 3);
    assert_eq!(regs.read32(regs::VS), 0x0001_0400);
    assert_eq!(sim.counters().mmio_reads, 3, "read64 is two reads");
}

#[test]
fn identify_pages_parse_with_the_driver_parsers() {
    let sim = Sim::single(spec());
    let mut m = Mini::bring_up(&sim).unwrap();
    let mut e = SubmissionEntry::new(admin::IDENTIFY);
    e.cdw10 = cns::CONTROLLER;
    let (c, page) = m.admin_page(e).unwrap();
    ok(c).unwrap();
    let info = ControllerInfo::parse(&page).unwrap();
    assert_eq!(info.serial.as_str(), "sn1");
    assert_eq!(info.mdts, 5);
    assert_eq!(info.namespace_count, 2);
    assert!(info.supports_write_zeroes() && info.supports_deallocate());
    assert!(info.supports_shadow_doorbells() && info.volatile_write_cache);

    let mut e = SubmissionEntry::new(admin::IDENTIFY);
    e.cdw10 = cns::ACTIVE_NAMESPACES;
    let (_, page) = m.admin_page(e).unwrap();
    let ids: Vec<u32> = identify::active_namespaces(&page, 2)
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2]);

    let mut e = SubmissionEntry::new(admin::IDENTIFY);
    e.cdw10 = cns::NAMESPACE;
    e.nsid = 2;
    let (_, page) = m.admin_page(e).unwrap();
    let ns = NamespaceInfo::parse(2, &page).unwrap().unwrap();
    assert_eq!(
        (ns.blocks, ns.block_size(), ns.eui64),
        (200, 4096, 0x1122_3344_5566_7788)
    );

    e.nsid = 3;
    let (c, _) = m.admin_page(e).unwrap();
    assert_eq!(
        (c.status().sct, c.status().sc),
        (sct::GENERIC, sc::INVALID_NAMESPACE)
    );
    assert_eq!(sim.counters().admin(admin::IDENTIFY), 4);
    m.shut_down().unwrap();
    let c = sim.counters();
    assert_eq!((c.protocol_errors, c.wild_dma, c.dma_regions), (0, 0, 0));
}

#[test]
fn identify_overrides_and_garbage() {
    let sim = Sim::single(
        ControllerSpec::default()
            .namespace(NamespaceSpec::new(8, 512).identify_patch(identify::ns::FLBAS, &[9]))
            .identify_patch(identify::ctrl::NN, &5000u32.to_le_bytes()),
    );
    let page = sim.identify_controller(CtrlId(0));
    assert_eq!(ControllerInfo::parse(&page).unwrap().namespace_count, 5000);
    let sim2 = Sim::single(ControllerSpec::default().identify_garbage(42));
    let a = sim2.identify_controller(CtrlId(0));
    let b =
        Sim::single(ControllerSpec::default().identify_garbage(42)).identify_controller(CtrlId(0));
    assert_eq!(a, b, "garbage is reproducible");
    assert!(a.iter().filter(|&&x| x != 0).count() > 3000);
    let mut m = Mini::bring_up(&sim).unwrap();
    let mut e = SubmissionEntry::new(admin::IDENTIFY);
    e.nsid = 1;
    let (_, page) = m.admin_page(e).unwrap();
    assert!(NamespaceInfo::parse(1, &page).is_err());
    m.release();
}

#[test]
fn number_of_queues_is_capped_and_queue_creation_is_validated() {
    let sim = Sim::single(spec());
    sim.expect_protocol_errors();
    let mut m = Mini::bring_up(&sim).unwrap();
    let mut e = SubmissionEntry::new(admin::SET_FEATURES);
    e.cdw10 = 7;
    e.cdw11 = 15 | 15 << 16;
    let c = ok(m.cmd(false, e).unwrap()).unwrap();
    assert_eq!(c.dw0, 3 | 3 << 16, "4 pairs granted (0-based)");
    let cq = m.p.dma_alloc(4096, 4096).unwrap();
    // Queue id beyond the grant.
    let mut e = SubmissionEntry::new(admin::CREATE_CQ);
    e.prp1 = cq.phys().as_u64();
    e.cdw10 = 5 | 15 << 16;
    e.cdw11 = 1;
    let c = m.cmd(false, e).unwrap();
    assert_eq!((c.status().sct, c.status().sc), (1, 0x01));
    // Size beyond MQES + 1.
    e.cdw10 = 1 | 256 << 16;
    let c = m.cmd(false, e).unwrap();
    assert_eq!((c.status().sct, c.status().sc), (1, 0x02));
    // An SQ for a CQ that does not exist.
    let mut e = SubmissionEntry::new(admin::CREATE_SQ);
    e.prp1 = cq.phys().as_u64();
    e.cdw10 = 1 | 15 << 16;
    e.cdw11 = 1 | 1 << 16;
    let c = m.cmd(false, e).unwrap();
    assert_eq!((c.status().sct, c.status().sc), (1, 0x00));
    assert_eq!(
        sim.counters().protocol_errors,
        3,
        "{:?}",
        sim.protocol_log()
    );
    m.p.dma_free(cq);
    m.release();
}

#[test]
fn io_queue_pair_lifecycle_leaves_nothing_behind() {
    let sim = Sim::single(spec());
    let mut m = Mini::bring_up(&sim).unwrap();
    m.create_io(32).unwrap();
    assert_eq!(sim.io_queues(CtrlId(0)), 1);
    // Deleting the CQ first is refused.
    let mut e = SubmissionEntry::new(admin::DELETE_CQ);
    e.cdw10 = 1;
    let c = m.cmd(false, e).unwrap();
    assert_eq!((c.status().sct, c.status().sc), (1, 0x0C));
    sim.reset_counters();
    m.shut_down().unwrap();
    assert_eq!(sim.io_queues(CtrlId(0)), 0);
    let c = sim.counters();
    assert_eq!((c.protocol_errors, c.dma_regions, c.dma_bytes), (0, 0, 0));
}

#[test]
fn firmware_enabled_controller_must_be_reset_first() {
    let sim = Sim::single(spec().firmware_enabled(true));
    let (p, _, regs, _) = Mini::map(&sim).unwrap();
    assert!(sim.is_ready(CtrlId(0)));
    assert_eq!(regs.read32(regs::CSTS) & 1, 1);
    assert_ne!(regs.read64(regs::ASQ), 0, "firmware's admin queue");
    assert_eq!(
        sim.counters().dma_regions,
        0,
        "firmware memory is not the driver's"
    );
    drop((p, regs));
    let m = Mini::bring_up(&sim).unwrap();
    m.shut_down().unwrap();
    assert_eq!(sim.counters().protocol_errors, 0);
}

#[test]
fn ready_follows_enable_after_the_delay_and_never_when_broken() {
    let sim = Sim::single(spec().ready_delay(Duration::from_millis(2)));
    let m = Mini::bring_up(&sim).unwrap();
    assert!(sim.now().as_nanos() >= 2_000_000);
    m.release();

    let sim = Sim::single(spec().ready_never(true));
    assert_eq!(
        Mini::bring_up(&sim).err().unwrap(),
        "timeout waiting RDY=true"
    );
}

#[test]
fn enabling_with_bad_configuration_is_refused() {
    let sim = Sim::single(spec());
    sim.expect_protocol_errors();
    let (p, _, regs, _) = Mini::map(&sim).unwrap();
    let q = p.dma_alloc(4096, 4096).unwrap();
    regs.write32(regs::AQA, regs::aqa_value(16, 16));
    regs.write64(regs::ASQ, q.virt().as_ptr() as u64);
    regs.write64(regs::ACQ, q.phys().as_u64());
    regs.write32(regs::CC, regs::Cc::enable_value(0));
    sim.advance(Duration::from_secs(1));
    assert_eq!(regs.read32(regs::CSTS) & 1, 0);
    assert_eq!(
        sim.counters().protocol_errors,
        1,
        "{:?}",
        sim.protocol_log()
    );
    p.dma_free(q);
}

#[test]
fn shutdown_reports_complete_unless_configured_not_to() {
    for never in [false, true] {
        let sim = Sim::single(spec().shutdown_never(never));
        let m = Mini::bring_up(&sim).unwrap();
        m.regs.write32(
            regs::CC,
            regs::Cc::enable_value(0) | regs::Cc::SHN_NORMAL.bits(),
        );
        let csts = regs::Csts::from_bits_retain(m.regs.read32(regs::CSTS));
        assert_eq!(csts.shutdown_complete(), !never);
        m.release();
    }
}

#[test]
fn doorbell_misuse_is_counted() {
    let sim = Sim::single(spec());
    sim.expect_protocol_errors();
    let mut m = Mini::bring_up(&sim).unwrap();
    m.regs.write32(regs::sq_tail_doorbell(0, 0), QSIZE as u32);
    m.regs.write32(regs::sq_tail_doorbell(3, 0), 1);
    m.regs.write32(regs::cq_head_doorbell(0, 0), 1);
    assert_eq!(
        sim.counters().protocol_errors,
        3,
        "{:?}",
        sim.protocol_log()
    );
    assert_eq!(sim.counters().sq_doorbell_writes, 2);
    assert_eq!(sim.counters().cq_doorbell_writes, 1);
    let mut e = SubmissionEntry::new(admin::GET_FEATURES);
    e.cdw10 = 7;
    assert_eq!(ok(m.cmd(false, e).unwrap()).unwrap().dw0, 3 | 3 << 16);
    m.release();
}

#[test]
fn subsystem_reset_sets_nssro_and_disables() {
    let sim = Sim::single(spec());
    let m = Mini::bring_up(&sim).unwrap();
    m.regs.write32(regs::NSSR, regs::NSSR_RESET);
    let csts = m.regs.read32(regs::CSTS);
    assert_eq!(csts & 1, 0);
    assert_ne!(csts & regs::Csts::NSSRO.bits(), 0);
    m.regs.write32(regs::CSTS, regs::Csts::NSSRO.bits());
    assert_eq!(m.regs.read32(regs::CSTS), 0);
    m.release();
}

#[test]
fn namespace_descriptors_and_formats_report_the_spec() {
    let spec = ControllerSpec::default()
        .namespace(NamespaceSpec::new(8, 512).eui64(0x0102_0304_0506_0708))
        .namespace(
            NamespaceSpec::new(8, 4096)
                .command_set(identify::csi::ZONED)
                .metadata(Metadata::Extended(16))
                .protection(0x9),
        )
        .namespace(NamespaceSpec::new(8, 512).metadata(Metadata::Separate(8)));
    let sim = Sim::single(spec);
    let mut m = Mini::bring_up(&sim).unwrap();
    let page = |m: &mut Mini, cns: u32, nsid: u32| {
        let mut e = SubmissionEntry::new(admin::IDENTIFY);
        e.cdw10 = cns;
        e.nsid = nsid;
        let (c, page) = m.admin_page(e).unwrap();
        ok(c).unwrap();
        page
    };
    // EUI-64 (big endian), then the command set; zeroes end the list.
    let list = page(&mut m, cns::NAMESPACE_DESCRIPTORS, 1);
    assert_eq!(list[..12], [1, 8, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(list[12..17], [4, 1, 0, 0, 0]);
    assert!(list[17..].iter().all(|&b| b == 0));
    let list = page(&mut m, cns::NAMESPACE_DESCRIPTORS, 2);
    assert_eq!(list[..5], [4, 1, 0, 0, identify::csi::ZONED]);
    // Formats: the formatted one carries MS; FLBAS bit 4 says inline; DPS.
    let ns2 = page(&mut m, cns::NAMESPACE, 2);
    let index = (ns2[identify::ns::FLBAS] & 0xF) as usize;
    let lbaf = &ns2[identify::ns::LBAF0 + 4 * index..][..4];
    assert_eq!(lbaf, [16, 0, 12, 0]);
    assert_ne!(ns2[identify::ns::FLBAS] & 0x10, 0);
    assert_eq!(ns2[identify::ns::DPS], 0x9);
    let ns3 = page(&mut m, cns::NAMESPACE, 3);
    let index = (ns3[identify::ns::FLBAS] & 0xF) as usize;
    assert_eq!(ns3[identify::ns::LBAF0 + 4 * index..][..4], [8, 0, 9, 0]);
    assert_eq!(ns3[identify::ns::FLBAS] & 0x10, 0);
    assert_eq!(ns3[identify::ns::DPS], 0);
    m.shut_down().unwrap();

    // An older controller refuses CNS 03h with Invalid Field.
    let sim = Sim::single(ControllerSpec::with_blocks(8).descriptor_lists(false));
    let mut m = Mini::bring_up(&sim).unwrap();
    let mut e = SubmissionEntry::new(admin::IDENTIFY);
    e.cdw10 = cns::NAMESPACE_DESCRIPTORS;
    e.nsid = 1;
    let (c, _) = m.admin_page(e).unwrap();
    assert_eq!(
        (c.status().sct, c.status().sc),
        (sct::GENERIC, sc::INVALID_FIELD)
    );
    m.shut_down().unwrap();
    let c = sim.counters();
    assert_eq!((c.protocol_errors, c.wild_dma, c.dma_regions), (0, 0, 0));
}
