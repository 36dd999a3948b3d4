//! Asynchronous events collected by the tick (health, namespace changes),
//! and what a controller that lies about them or floods them gets.

mod common;

use std::time::Duration;

use bare_nvme::nvme::command::{admin, nvm, sc, sct, SubmissionEntry};
use bare_nvme::nvme::events::{MAX_ASYNC_EVENTS, STORM_BURST, STORM_WINDOW};
use bare_nvme::nvme::log::{async_config, event_type, lid, CriticalWarning};
use bare_nvme::QueueId;
use bare_nvme::{ControllerConfig, ControllerId, Error, Event, IoOp, Platform};
use bare_nvme_sim::{CtrlId, Hold, LogLie, NamespaceSpec, Sim};
use common::*;

const C: CtrlId = CtrlId(0);

/// Ticks `n` times, one virtual millisecond apart; returns the events.
fn ticks(sim: &Sim, driver: &mut BoxedDrv, n: usize) -> Vec<Event> {
    let mut all = Vec::new();
    for _ in 0..n {
        sim.advance(Duration::from_millis(1));
        all.extend(driver.tick());
    }
    all
}

fn health(events: &[Event]) -> Vec<(CriticalWarning, u16)> {
    events
        .iter()
        .filter_map(|e| match *e {
            Event::Health {
                warning,
                temperature,
                ..
            } => Some((warning, temperature)),
            _ => None,
        })
        .collect()
}

fn namespace_changes(events: &[Event]) -> Vec<(bool, u32)> {
    events
        .iter()
        .filter_map(|e| match *e {
            Event::NamespaceAdded { nsid, .. } => Some((true, nsid)),
            Event::NamespaceRemoved { nsid, .. } => Some((false, nsid)),
            _ => None,
        })
        .collect()
}

/// Writes and reads back 8 blocks of `nsid`.
fn verified_io(sim: &Sim, driver: &mut BoxedDrv, id: ControllerId, nsid: u32, seed: u8) {
    let p = sim.platform();
    let data = filled(&p, 4096, seed);
    let mut back = zeroed(&p, 4096);
    let c = driver.controller(id).unwrap();
    c.write(nsid, 16, &data).unwrap();
    c.read(nsid, 16, &mut back).unwrap();
    assert!(back.as_slice() == data.as_slice(), "namespace {nsid}");
    p.dma_free(data);
    p.dma_free(back);
}

fn two_namespaces() -> bare_nvme_sim::ControllerSpec {
    spec(8192, 512).namespace(NamespaceSpec::new(4096, 4096))
}

#[test]
fn bring_up_arms_requests_up_to_the_limit_and_enables_the_events() {
    let (sim, mut driver, id) = single(spec(8192, 512), ControllerConfig::default());
    // The simulated controller's AERL is 3: four requests.
    assert_eq!(sim.outstanding_event_requests(C), MAX_ASYNC_EVENTS);
    assert_eq!(sim.event_requests_over_limit(C), 0);
    let wanted = async_config::SMART_ALL | async_config::NAMESPACE_ATTRIBUTE;
    assert_eq!(sim.async_event_config(C) & wanted, wanted);
    assert_eq!(
        driver.controller(id).unwrap().async_events_outstanding(),
        MAX_ASYNC_EVENTS
    );
    finish(&sim, driver);
}

#[test]
fn a_health_event_is_reported_once_and_the_log_shows_the_bit() {
    let (sim, mut driver, id) = single(spec(8192, 512), ControllerConfig::default());
    ticks(&sim, &mut driver, 3);
    sim.set_critical_warning(C, CriticalWarning::RELIABILITY_DEGRADED.bits());
    let events = ticks(&sim, &mut driver, 5);
    assert_eq!(
        health(&events),
        [(CriticalWarning::RELIABILITY_DEGRADED, 323)],
        "{events:?}"
    );
    assert!(events.iter().all(|e| e.id() == Some(id)));
    assert!(health(&ticks(&sim, &mut driver, 50)).is_empty(), "once");
    let c = driver.controller(id).unwrap();
    let log = c.smart_log().unwrap();
    assert!(log
        .critical_warning
        .contains(CriticalWarning::RELIABILITY_DEGRADED));
    assert_eq!(log.temperature_celsius(), 50);
    // Re-armed: the request the event used was replaced.
    assert_eq!(sim.outstanding_event_requests(C), MAX_ASYNC_EVENTS);
    // A second warning is a second event.
    sim.set_critical_warning(C, 0x04 | 0x01);
    let events = ticks(&sim, &mut driver, 5);
    assert_eq!(health(&events).len(), 1, "{events:?}");
    finish(&sim, driver);
}

#[test]
fn outstanding_requests_are_no_hang_and_no_caller_command() {
    let config = ControllerConfig::default().admin_timeout(Duration::from_millis(100));
    let (sim, mut driver, id) = single(spec(8192, 512), config);
    // Far past every admin deadline: the requests are still only waiting.
    for _ in 0..50 {
        sim.advance(Duration::from_secs(1));
        let _ = driver.tick();
    }
    let c = driver.controller(id).unwrap();
    assert_eq!(c.reset_count(), 0, "a waiting request is not a hang");
    assert_eq!(sim.outstanding_event_requests(C), MAX_ASYNC_EVENTS);
    driver.begin_detach(id).unwrap();
    let mut removed = None;
    for _ in 0..1000 {
        for e in driver.tick() {
            if let Event::Removed {
                failed_commands, ..
            } = e
            {
                removed = Some(failed_commands);
            }
        }
        if removed.is_some() {
            break;
        }
    }
    assert_eq!(removed, Some(0), "the requests are the driver's own");
    assert_eq!(driver.controller(id).unwrap().failed_commands(), 0);
    assert_clean(&sim);
    assert_eq!(sim.counters().dma_regions, 0);
}

#[test]
fn a_surprise_removal_with_requests_outstanding_counts_only_caller_commands() {
    let (sim, mut driver, id) = single(spec(8192, 512).hold(Hold::Io), ControllerConfig::default());
    let p = sim.platform();
    let buffer = zeroed(&p, 4096);
    let read = IoOp::Read {
        nsid: 1,
        lba: 0,
        blocks: 8,
    };
    let _ = driver
        .controller(id)
        .unwrap()
        .submit(QueueId::FIRST, read, Some(buffer), 1)
        .unwrap();
    driver.controller(id).unwrap().ring_doorbells();
    sim.surprise_remove(C);
    let events = ticks(&sim, &mut driver, 5);
    let failed: Vec<u32> = events
        .iter()
        .filter_map(|e| match *e {
            Event::Removed {
                failed_commands, ..
            } => Some(failed_commands),
            _ => None,
        })
        .collect();
    assert_eq!(failed, [1], "{events:?}");
    let done = collect(&mut driver, id, 0, 1);
    for d in done {
        p.dma_free(d.buffer.unwrap());
    }
    drop(driver);
}

#[test]
fn a_reset_arms_the_requests_again_within_the_limit() {
    let (sim, mut driver, id) = single(spec(8192, 512), ControllerConfig::default());
    sim.set_cfs(C);
    for _ in 0..200 {
        sim.advance(Duration::from_millis(5));
        let _ = driver.tick();
    }
    let c = driver.controller(id).unwrap();
    assert_eq!(c.reset_count(), 1);
    assert_eq!(c.state(), bare_nvme::State::Ready);
    assert_eq!(sim.outstanding_event_requests(C), MAX_ASYNC_EVENTS);
    assert_eq!(sim.event_requests_over_limit(C), 0);
    sim.set_critical_warning(C, 0x01);
    assert_eq!(health(&ticks(&sim, &mut driver, 5)).len(), 1);
    finish(&sim, driver);
}

#[test]
fn lying_log_pages_are_rejected_and_no_health_is_made_up() {
    let (sim, mut driver, id) = single(spec(8192, 512), ControllerConfig::default());
    // A page cut short: the rest of the zeroed buffer has no temperature.
    sim.lie_about_logs(C, Some(LogLie::Short(1)));
    sim.set_critical_warning(C, 0x04);
    let events = ticks(&sim, &mut driver, 5);
    assert!(health(&events).is_empty(), "{events:?}");
    let c = driver.controller(id).unwrap();
    assert_eq!(c.bad_log_pages(), 1);
    assert!(matches!(c.smart_log(), Err(Error::BadDeviceValue { .. })));
    assert!(matches!(
        c.firmware_log(),
        Err(Error::BadDeviceValue { .. })
    ));
    // Garbage: whatever passes validation is within its ranges.
    for seed in 1..40 {
        sim.lie_about_logs(C, Some(LogLie::Garbage(seed)));
        let c = driver.controller(id).unwrap();
        match c.smart_log() {
            Ok(log) => {
                assert!(log.available_spare <= 100 && log.spare_threshold <= 100);
                assert_ne!(log.temperature, 0);
            }
            Err(e) => assert!(matches!(e, Error::BadDeviceValue { .. }), "{e}"),
        }
        match c.firmware_log() {
            Ok(log) => assert!((1..=7).contains(&log.active_slot)),
            Err(e) => assert!(matches!(e, Error::BadDeviceValue { .. }), "{e}"),
        }
        match c.error_log() {
            Ok(entries) => {
                assert!(entries
                    .windows(2)
                    .all(|w| w[0].error_count > w[1].error_count))
            }
            Err(e) => assert!(matches!(e, Error::BadDeviceValue { .. }), "{e}"),
        }
    }
    // A garbage Changed Namespace List changes nothing.
    sim.detach_namespace(C, 1);
    let events = ticks(&sim, &mut driver, 10);
    assert!(namespace_changes(&events).is_empty(), "{events:?}");
    // Honest again: everything reads, and the controller still serves.
    sim.lie_about_logs(C, None);
    let c = driver.controller(id).unwrap();
    assert_eq!(c.smart_log().unwrap().critical_warning.bits(), 0x04);
    assert_eq!(c.firmware_log().unwrap().revision(1), "1.0");
    assert!(c.error_log().unwrap().is_empty());
    sim.attach_namespace(C, 1);
    verified_io(&sim, &mut driver, id, 1, 3);
    finish(&sim, driver);
}

#[test]
fn events_of_unknown_types_are_counted_and_the_request_rearmed() {
    let (sim, mut driver, id) = single(spec(8192, 512), ControllerConfig::default());
    for kind in [3, 4, 5, event_type::IO_COMMAND_SPECIFIC, event_type::VENDOR] {
        sim.raise_event(C, kind, 0xAB, 0xCD);
    }
    // A notice the driver does not follow up (firmware activation).
    sim.raise_event(C, event_type::NOTICE, 0x01, 0x03);
    let events = ticks(&sim, &mut driver, 10);
    assert!(
        events.is_empty(),
        "nothing is reported for them: {events:?}"
    );
    let c = driver.controller(id).unwrap();
    assert_eq!(c.unknown_events(), 6);
    assert_eq!(c.async_events_received(), 6);
    assert_eq!(sim.outstanding_event_requests(C), MAX_ASYNC_EVENTS);
    verified_io(&sim, &mut driver, id, 1, 5);
    sim.set_critical_warning(C, 0x02);
    assert_eq!(health(&ticks(&sim, &mut driver, 5)).len(), 1);
    finish(&sim, driver);
}

#[test]
fn an_event_storm_is_rate_limited_and_io_goes_on() {
    let (sim, mut driver, id) = single(spec(8192, 512), ControllerConfig::default());
    sim.event_storm(C, 1_000_000);
    // Within one window: at most a burst (plus the requests that were
    // already armed when the burst was reached).
    let events = ticks(&sim, &mut driver, 200);
    let first = health(&events).len();
    assert!(first >= STORM_BURST as usize, "{first}");
    assert!(first <= STORM_BURST as usize + MAX_ASYNC_EVENTS, "{first}");
    verified_io(&sim, &mut driver, id, 1, 7);
    // Later windows: the same bound each.
    let windows = 5;
    let per_window = (STORM_WINDOW.as_millis() / 10) as usize;
    let mut later = 0;
    for _ in 0..windows * per_window {
        sim.advance(Duration::from_millis(10));
        later += health(&driver.tick()).len();
    }
    assert!(later > 0, "events keep flowing, rate-limited");
    assert!(
        later <= (windows + 1) * (STORM_BURST as usize + MAX_ASYNC_EVENTS),
        "{later}"
    );
    let c = driver.controller(id).unwrap();
    assert!(c.event_storms() >= 1);
    assert_eq!(c.reset_count(), 0);
    sim.event_storm(C, 0);
    finish(&sim, driver);
}

#[test]
fn a_detached_namespace_is_removed_then_added_while_the_other_serves() {
    let (sim, mut driver, id) = single(two_namespaces(), ControllerConfig::default());
    verified_io(&sim, &mut driver, id, 2, 1);
    sim.detach_namespace(C, 2);
    let events = ticks(&sim, &mut driver, 5);
    assert_eq!(namespace_changes(&events), [(false, 2)], "{events:?}");
    let p = sim.platform();
    let mut buffer = zeroed(&p, 4096);
    let before = sim.counters();
    let c = driver.controller(id).unwrap();
    assert_eq!(
        c.read(2, 0, &mut buffer),
        Err(Error::UnknownNamespace { nsid: 2 })
    );
    assert_eq!(
        sim.counters().io_commands[nvm::READ as usize],
        before.io_commands[nvm::READ as usize],
        "nothing reached the device"
    );
    assert_eq!(c.namespaces().len(), 1);
    verified_io(&sim, &mut driver, id, 1, 2);
    sim.attach_namespace(C, 2);
    let events = ticks(&sim, &mut driver, 10);
    assert_eq!(namespace_changes(&events), [(true, 2)], "{events:?}");
    let c = driver.controller(id).unwrap();
    assert_eq!(c.namespace(2).unwrap().block_size(), 4096);
    c.read(2, 16, &mut buffer).unwrap();
    assert!(buffer.as_slice() == pattern(4096, 1), "data kept");
    verified_io(&sim, &mut driver, id, 1, 4);
    p.dma_free(buffer);
    finish(&sim, driver);
}

#[test]
fn a_removed_namespaces_handle_goes_stale_and_the_others_keep_serving() {
    use bare_nvme::block::{BlockTarget, BounceConfig, NamespaceDisk};
    let (sim, mut driver, id) = single(two_namespaces(), ControllerConfig::default());
    let gone = driver.namespace_handle(Some(id), 2).unwrap();
    let stays = driver.namespace_handle(Some(id), 1).unwrap();
    sim.detach_namespace(C, 2);
    let events = ticks(&sim, &mut driver, 5);
    assert_eq!(namespace_changes(&events), [(false, 2)], "{events:?}");
    let data = pattern(4096, 9);
    let mut back = vec![0u8; 4096];
    {
        let mut disk =
            NamespaceDisk::with_handle(&mut *driver, gone, BounceConfig::default()).unwrap();
        assert_eq!(disk.write(0, &data), Err(Error::StaleHandle));
        assert_eq!(disk.read(0, &mut back), Err(Error::StaleHandle));
    }
    {
        let mut disk =
            NamespaceDisk::with_handle(&mut *driver, stays, BounceConfig::default()).unwrap();
        disk.write(8, &data).unwrap();
        disk.read(8, &mut back).unwrap();
        assert!(back == data, "namespace 1 untouched");
    }
    finish(&sim, driver);
}

#[test]
fn commands_in_flight_to_a_removed_namespace_fail_once_the_others_succeed() {
    let (sim, mut driver, id) =
        single(two_namespaces().hold(Hold::Io), ControllerConfig::default());
    let p = sim.platform();
    let c = driver.controller(id).unwrap();
    for (tag, nsid, blocks) in [(1, 1, 8), (2, 2, 1), (3, 1, 8), (4, 2, 1)] {
        let op = IoOp::Read {
            nsid,
            lba: 0,
            blocks,
        };
        let _ = c
            .submit(QueueId::FIRST, op, Some(zeroed(&p, 4096)), tag)
            .unwrap();
    }
    c.ring_doorbells();
    sim.detach_namespace(C, 2);
    let events = ticks(&sim, &mut driver, 5);
    assert_eq!(namespace_changes(&events), [(false, 2)]);
    sim.release_all();
    let mut done = collect(&mut driver, id, 0, 4);
    done.sort_by_key(|d| d.tag);
    for d in &done {
        match d.tag {
            1 | 3 => assert_eq!(d.result, Ok(()), "tag {}", d.tag),
            _ => match d.result {
                Err(Error::CommandFailed { status, .. }) => {
                    assert_eq!(
                        (status.sct, status.sc),
                        (sct::GENERIC, sc::INVALID_NAMESPACE)
                    )
                }
                r => panic!("tag {}: {r:?}", d.tag),
            },
        }
    }
    let c = driver.controller(id).unwrap();
    assert_eq!(
        c.poll(QueueId::FIRST, |d| panic!("delivered twice: {}", d.tag)),
        0
    );
    for d in done {
        p.dma_free(d.buffer.unwrap());
    }
    finish(&sim, driver);
}

/// Namespace Attachment of `nsid` for this controller: `detach` or attach.
fn attachment(driver: &mut BoxedDrv, sim: &Sim, id: ControllerId, nsid: u32, detach: bool) {
    let p = sim.platform();
    let mut list = zeroed(&p, 4096);
    let c = driver.controller(id).unwrap();
    let cntlid = c.info().unwrap().controller_id;
    list.as_mut_slice()[..4].copy_from_slice(&[1, 0, cntlid as u8, (cntlid >> 8) as u8]);
    let mut sqe = SubmissionEntry::new(admin::NAMESPACE_ATTACHMENT);
    sqe.nsid = nsid;
    sqe.cdw10 = detach as u32;
    c.admin_passthrough(sqe, Some(&mut list)).unwrap();
    p.dma_free(list);
}

#[test]
fn the_hosts_own_namespace_attachment_is_reported_removed_then_added() {
    let (sim, mut driver, id) = single(two_namespaces(), ControllerConfig::default());
    attachment(&mut driver, &sim, id, 2, true);
    let events = ticks(&sim, &mut driver, 5);
    assert_eq!(namespace_changes(&events), [(false, 2)], "{events:?}");
    verified_io(&sim, &mut driver, id, 1, 9);
    attachment(&mut driver, &sim, id, 2, false);
    let events = ticks(&sim, &mut driver, 10);
    assert_eq!(namespace_changes(&events), [(true, 2)], "{events:?}");
    verified_io(&sim, &mut driver, id, 2, 10);
    finish(&sim, driver);
}

#[test]
fn passthrough_refuses_what_would_break_queue_management() {
    let (sim, mut driver, id) = single(spec(8192, 512), ControllerConfig::default());
    let before = sim.counters();
    let c = driver.controller(id).unwrap();
    for opcode in [
        admin::DELETE_SQ,
        admin::CREATE_SQ,
        admin::DELETE_CQ,
        admin::CREATE_CQ,
        admin::ABORT,
        admin::ASYNC_EVENT_REQUEST,
        admin::DOORBELL_BUFFER_CONFIG,
        admin::VIRTUALIZATION_MANAGEMENT,
    ] {
        let sqe = SubmissionEntry::new(opcode);
        assert!(
            matches!(
                c.admin_passthrough(sqe, None),
                Err(Error::InvalidArgument { .. })
            ),
            "{opcode:#x}"
        );
    }
    let mut queues = SubmissionEntry::new(admin::SET_FEATURES);
    queues.cdw10 = 0x07;
    assert!(c.admin_passthrough(queues, None).is_err());
    assert_eq!(sim.counters().admin_commands, before.admin_commands);
    finish(&sim, driver);
}

#[test]
fn a_vendor_command_reaches_the_device_with_the_callers_buffer() {
    let (sim, mut driver, id) = single(spec(8192, 512), ControllerConfig::default());
    let p = sim.platform();
    let mut buffer = zeroed(&p, 8192);
    let c = driver.controller(id).unwrap();
    let vendor = SubmissionEntry::new(0xC1);
    // SAFETY: the simulated controller moves no data for an opcode it does
    // not know.
    match unsafe { c.admin_passthrough_unchecked(vendor, Some(&mut buffer)) } {
        Err(Error::CommandFailed { status, opcode }) => {
            assert_eq!(opcode, 0xC1);
            assert_eq!(status.sc, sc::INVALID_OPCODE);
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(sim.counters().admin_commands[0xC1], 1);
    // A known command through the same path: Get Log Page (SMART).
    let mut smart = SubmissionEntry::new(admin::GET_LOG_PAGE);
    smart.nsid = u32::MAX;
    smart.cdw10 = lid::SMART_HEALTH as u32 | (127 << 16) | (1 << 15);
    c.admin_passthrough(smart, Some(&mut buffer)).unwrap();
    assert_eq!(
        u16::from_le_bytes([buffer.as_slice()[1], buffer.as_slice()[2]]),
        323
    );
    let mut too_big = zeroed(&p, 3 * 4096);
    // SAFETY: refused before the device (more than two pages).
    let result = unsafe { c.admin_passthrough_unchecked(vendor, Some(&mut too_big)) };
    assert!(matches!(result, Err(Error::InvalidArgument { .. })));
    p.dma_free(buffer);
    p.dma_free(too_big);
    finish(&sim, driver);
}

#[test]
fn a_split_phase_log_read_runs_beside_the_tick() {
    use bare_nvme::{LogData, LogPage};
    let (sim, mut driver, id) = single(spec(8192, 512), ControllerConfig::default());
    sim.hold(C, Hold::All);
    let request = driver.begin_log_page(id, LogPage::SmartHealth).unwrap();
    assert!(
        matches!(
            driver.begin_log_page(id, LogPage::FirmwareSlot),
            Err(Error::CapacityExceeded { .. })
        ),
        "one read at a time"
    );
    for _ in 0..5 {
        let _ = driver.tick();
        assert!(driver.poll_log_page(id, &request).is_none(), "held");
    }
    sim.release_all();
    match driver.poll_log_page(id, &request) {
        Some(Ok(LogData::SmartHealth(log))) => assert_eq!(log.temperature, 323),
        r => panic!("{r:?}"),
    }
    sim.hold(C, Hold::None);
    match driver.log_page(id, LogPage::FirmwareSlot).unwrap() {
        LogData::FirmwareSlot(fw) => assert_eq!(fw.active_slot, 1),
        r => panic!("{r:?}"),
    }
    finish(&sim, driver);
}

#[test]
fn a_log_read_cut_off_by_a_reset_ends_aborted() {
    use bare_nvme::LogPage;
    let (sim, mut driver, id) = single(spec(8192, 512), ControllerConfig::default());
    sim.hold(C, Hold::All);
    let request = driver.begin_log_page(id, LogPage::SmartHealth).unwrap();
    sim.hold(C, Hold::None);
    sim.set_cfs(C);
    for _ in 0..100 {
        sim.advance(Duration::from_millis(5));
        let _ = driver.tick();
    }
    assert_eq!(
        driver.poll_log_page(id, &request),
        Some(Err(Error::Aborted))
    );
    assert_eq!(driver.controller(id).unwrap().reset_count(), 1);
    assert!(driver.log_page(id, LogPage::SmartHealth).is_ok());
    finish(&sim, driver);
}

/// A controller with one namespace more than the driver serves: once NSID
/// 1 is detached, the driver serves NSIDs 2 to 17; when NSID 1 comes back,
/// the active list no longer fits, but a served namespace is never pushed
/// out of it (nor reported removed) by one the driver has no room for.
#[test]
fn a_namespace_attached_below_the_served_ones_pushes_none_of_them_out() {
    use bare_nvme::nvme::controller::MAX_NAMESPACES;
    let mut spec = spec(1024, 512);
    for _ in 1..=MAX_NAMESPACES {
        spec = spec.namespace(NamespaceSpec::new(1024, 512));
    }
    let (sim, mut driver, id) = single(spec, ControllerConfig::default());
    let served = |driver: &mut BoxedDrv| -> Vec<u32> {
        let c = driver.controller(id).unwrap();
        c.namespaces().iter().map(|n| n.id()).collect()
    };
    assert_eq!(served(&mut driver), (1..=16).collect::<Vec<u32>>());
    sim.detach_namespace(C, 1);
    let events = ticks(&sim, &mut driver, 10);
    assert_eq!(namespace_changes(&events), [(false, 1), (true, 17)]);
    assert_eq!(served(&mut driver), (2..=17).collect::<Vec<u32>>());
    sim.attach_namespace(C, 1);
    let events = ticks(&sim, &mut driver, 10);
    assert_eq!(namespace_changes(&events), [], "{events:?}");
    assert_eq!(served(&mut driver), (2..=17).collect::<Vec<u32>>());
    verified_io(&sim, &mut driver, id, 17, 3);
    finish(&sim, driver);
}

/// A split-phase log read that is begun and never polled to its end does
/// not keep the scratch page: once the admin timeout passed, the tick takes
/// the page back (the read, polled then, ends `Aborted`), and a namespace
/// change is followed up again.
#[test]
fn a_log_read_never_polled_gives_the_page_back_to_the_events() {
    use bare_nvme::LogPage;
    let config = ControllerConfig::default();
    let (sim, mut driver, id) = single(two_namespaces(), config);
    let request = driver.begin_log_page(id, LogPage::SmartHealth).unwrap();
    sim.detach_namespace(C, 2);
    // Ticked past the admin timeout, a millisecond at a time.
    let ms = config.admin_timeout.as_millis() as usize;
    let events = ticks(&sim, &mut driver, ms + 20);
    assert_eq!(namespace_changes(&events), [(false, 2)], "{events:?}");
    assert_eq!(
        driver.poll_log_page(id, &request),
        Some(Err(Error::Aborted))
    );
    assert_eq!(driver.controller(id).unwrap().reset_count(), 0);
    assert!(driver.log_page(id, LogPage::SmartHealth).is_ok());
    finish(&sim, driver);
}
