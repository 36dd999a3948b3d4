//! Admin passthrough: the driver knows how many bytes each standard admin
//! command moves and refuses a shorter buffer before anything reaches the
//! device; a command of unknown length goes only through the `unsafe`
//! path; commands that would change what the driver relies on (queues,
//! host memory, keep alive, namespaces' geometry and data, the running
//! firmware) are refused.

mod common;

use bare_nvme::nvme::command::{admin, feature, SubmissionEntry};
use bare_nvme::spec::command::sc;
use bare_nvme::spec::log::lid;
use bare_nvme::{Error, Platform};
use bare_nvme_sim::Sim;
use common::*;

fn entry(opcode: u8, cdw10: u32, cdw11: u32) -> SubmissionEntry {
    let mut sqe = SubmissionEntry::new(opcode);
    (sqe.cdw10, sqe.cdw11) = (cdw10, cdw11);
    sqe
}

fn admin_sent(sim: &Sim) -> u64 {
    sim.counters().admin_commands.iter().sum()
}

#[test]
fn a_buffer_shorter_than_the_commands_transfer_is_refused_before_the_device() {
    let (sim, mut driver, id) = single(spec(8192, 512), Default::default());
    let p = sim.platform();
    let mut small = zeroed(&p, 512);
    let mut page = zeroed(&p, 4096);
    let before = admin_sent(&sim);
    let c = driver.controller(id).unwrap();
    // Identify moves 4096 bytes whatever the buffer.
    let identify = entry(admin::IDENTIFY, 1, 0);
    assert_eq!(
        c.admin_passthrough(identify, Some(&mut small)),
        Err(Error::BufferTooSmall {
            needed: 4096,
            got: 512
        })
    );
    assert_eq!(
        c.admin_passthrough(identify, None),
        Err(Error::BufferTooSmall {
            needed: 4096,
            got: 0
        })
    );
    // Get Log Page of 8 KiB (NUMDL 2047) into one page: PRP2 would be 0.
    let log = entry(
        admin::GET_LOG_PAGE,
        lid::SMART_HEALTH as u32 | (2047 << 16),
        0,
    );
    assert_eq!(
        c.admin_passthrough(log, Some(&mut page)),
        Err(Error::BufferTooSmall {
            needed: 8192,
            got: 4096
        })
    );
    // NUMDU counts too: 64 Ki dwords more.
    let upper = entry(
        admin::GET_LOG_PAGE,
        lid::SMART_HEALTH as u32 | (127 << 16),
        1,
    );
    assert!(matches!(
        c.admin_passthrough(upper, Some(&mut page)),
        Err(Error::BufferTooSmall { needed, .. }) if needed == 512 + (1 << 18)
    ));
    // A feature's data structure: Autonomous Power State Transition, 256.
    let apst = entry(admin::GET_FEATURES, feature::AUTONOMOUS_POWER_STATE, 0);
    let mut tiny = zeroed(&p, 128);
    assert_eq!(
        c.admin_passthrough(apst, Some(&mut tiny)),
        Err(Error::BufferTooSmall {
            needed: 256,
            got: 128
        })
    );
    assert_eq!(
        admin_sent(&sim),
        before,
        "a refused command reached the device"
    );
    // Long enough: through, and the data is the device's.
    c.admin_passthrough(identify, Some(&mut page)).unwrap();
    assert_eq!(
        page.as_slice(),
        &sim.identify_controller(bare_nvme_sim::CtrlId(0))[..]
    );
    let smart = entry(
        admin::GET_LOG_PAGE,
        lid::SMART_HEALTH as u32 | (127 << 16),
        0,
    );
    c.admin_passthrough(smart, Some(&mut small)).unwrap();
    for region in [small, page, tiny] {
        p.dma_free(region);
    }
    finish(&sim, driver);
}

#[test]
fn a_command_of_unknown_length_goes_only_through_the_unchecked_path() {
    let (sim, mut driver, id) = single(spec(8192, 512), Default::default());
    let p = sim.platform();
    let mut buffer = zeroed(&p, 4096);
    let before = admin_sent(&sim);
    let c = driver.controller(id).unwrap();
    let vendor = SubmissionEntry::new(0xC1);
    assert!(matches!(
        c.admin_passthrough(vendor, Some(&mut buffer)),
        Err(Error::InvalidArgument { .. })
    ));
    // A vendor-specific feature: its length is the vendor's too.
    let vendor_feature = entry(admin::GET_FEATURES, 0xC5, 0);
    assert!(matches!(
        c.admin_passthrough(vendor_feature, Some(&mut buffer)),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(admin_sent(&sim), before);
    // SAFETY: the simulated controller moves no data for an opcode it does
    // not know, less than the buffer's 4096 bytes.
    let result = unsafe { c.admin_passthrough_unchecked(vendor, Some(&mut buffer)) };
    match result {
        Err(Error::CommandFailed { status, opcode }) => {
            assert_eq!(opcode, 0xC1);
            assert_eq!(status.sc, sc::INVALID_OPCODE);
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(sim.counters().admin_commands[0xC1], 1);
    // The unchecked path still checks what it knows, and refuses the same.
    // SAFETY: refused before the device; nothing is sent.
    let identify = unsafe { c.admin_passthrough_unchecked(entry(admin::IDENTIFY, 1, 0), None) };
    assert_eq!(
        identify,
        Err(Error::BufferTooSmall {
            needed: 4096,
            got: 0
        })
    );
    // SAFETY: refused before the device; nothing is sent.
    let format = unsafe { c.admin_passthrough_unchecked(entry(admin::FORMAT_NVM, 0, 0), None) };
    assert!(matches!(format, Err(Error::InvalidArgument { .. })));
    p.dma_free(buffer);
    finish(&sim, driver);
}

#[test]
fn commands_that_change_what_the_driver_relies_on_are_refused() {
    let (sim, mut driver, id) = single(spec(8192, 512), Default::default());
    let before = admin_sent(&sim);
    let c = driver.controller(id).unwrap();
    let refused = [
        // Host Memory Buffer enabled (EHM = 1): memory the driver does not own.
        entry(admin::SET_FEATURES, feature::HOST_MEMORY_BUFFER, 1),
        // A keep alive timer the driver would never serve.
        entry(admin::SET_FEATURES, feature::KEEP_ALIVE_TIMER, 10_000),
        // Notices off: namespace changes would go unseen.
        entry(admin::SET_FEATURES, feature::ASYNC_EVENT_CONFIG, 0),
        entry(admin::FORMAT_NVM, 0, 0),
        entry(admin::SANITIZE, 0x2, 0),
        entry(admin::NAMESPACE_MANAGEMENT, 0, 0),
        // Firmware Commit, commit actions 001b, 010b, 011b (activation).
        entry(admin::FIRMWARE_COMMIT, 1 << 3, 0),
        entry(admin::FIRMWARE_COMMIT, 2 << 3, 0),
        entry(admin::FIRMWARE_COMMIT, 3 << 3, 0),
    ];
    for sqe in refused {
        assert!(
            matches!(
                c.admin_passthrough(sqe, None),
                Err(Error::InvalidArgument { .. })
            ),
            "{sqe:?}"
        );
    }
    assert_eq!(
        admin_sent(&sim),
        before,
        "a refused command reached the device"
    );
    // Disabling a host memory buffer, a zero keep alive and a commit that
    // only replaces an image are harmless: they reach the device.
    let harmless = [
        entry(admin::SET_FEATURES, feature::HOST_MEMORY_BUFFER, 0),
        entry(admin::SET_FEATURES, feature::KEEP_ALIVE_TIMER, 0),
        entry(admin::FIRMWARE_COMMIT, 0, 0),
    ];
    for sqe in harmless {
        // The simulated controller may not implement them: any answer of
        // its own will do.
        let result = c.admin_passthrough(sqe, None);
        assert!(
            !matches!(result, Err(Error::InvalidArgument { .. })),
            "{sqe:?}: {result:?}"
        );
    }
    assert_eq!(admin_sent(&sim), before + 3);
    finish(&sim, driver);
}
