//! `slots`: hot-add seen by polling config space, and removal by the hand.
//!
//! Arguments: `port=B:D.F` (hex) names the root port to watch (required);
//! `expect=add` waits for a device to appear after `@@READY` (the host does a
//! QMP `device_add`), otherwise one must be present already; `pull=button`
//! arms the hand so that the host's `device_del` (attention button) makes it
//! pull the device, `pull=now` pulls at once, `pull=flap` cuts slot power and
//! restores it (the device must come back reset), `pull=none` (default)
//! leaves it;
//! `hold=WORD` makes the kernel wait, after the pull, until the host sends
//! WORD (so the host can see QEMU's `DEVICE_DELETED` before the machine ends);
//! `timeout_ms=N` bounds each wait (default 10000).

use log::info;
use pci_types::PciAddress;

use super::{deadline_ms, wait_for_host, wait_until, Context, Outcome, Scenario};
use crate::hand::{Action, Hand};
use crate::pci::{self, scan, BoardConfig, NO_DEVICE};
use crate::{clock, ensure, failure, marker};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "slots",
    about: "watch a root port's slot for hot-add, pull the device with the hand",
    run,
};

fn run(board: &Context) -> Outcome {
    let args = board.args;
    let port = args
        .pci_address("port")
        .ok_or_else(|| failure!("malformed port="))?
        .ok_or_else(|| failure!("port= is required"))?;
    let timeout_ms = args
        .number("timeout_ms", 10_000)
        .ok_or_else(|| failure!("malformed timeout_ms="))?;
    let config = &board.config;
    let topology = scan::walk(config);
    let Some(root) = topology.root_ports.iter().find(|p| p.addr == port) else {
        return Err(failure!("no root port with a slot at {port}"));
    };
    let child = PciAddress::new(0, root.secondary_bus, 0, 0);
    info!("watching slot {} (bus {})", root.slot, root.secondary_bus);
    let present = || pci::vendor_id(config, child) != NO_DEVICE;

    marker!("READY");
    let ready = clock::now();
    if args.get("expect") == Some("add") {
        ensure!(!present(), "slot already occupied before the add");
        ensure!(
            wait_until(deadline_ms(timeout_ms), present),
            "no device appeared within {timeout_ms} ms"
        );
    }
    ensure!(present(), "no device in the slot");
    let id = pci::read32(config, child, 0);
    let class = pci::read32(config, child, 0x08) >> 8;
    marker!("PHASE attached");
    marker!(
        "RESULT attached_vendor={:#06x} attached_device={:#06x} attached_class={:#08x} seen_after_us={}",
        id as u16,
        id >> 16,
        class,
        (clock::now() - ready).as_micros()
    );

    let Some(mut hand) = Hand::new(port) else {
        return Err(failure!("{port} has no PCI Express capability"));
    };
    match args.get("pull").unwrap_or("none") {
        "none" => return Ok(()),
        "now" => hand.remove(),
        "flap" => return flap(config, &hand, child, timeout_ms),
        "button" => {
            hand.arm();
            marker!("PHASE armed");
            ensure!(
                wait_until(deadline_ms(timeout_ms), || hand.poll() == Action::Removed),
                "attention button not pressed within {timeout_ms} ms"
            );
        }
        other => return Err(failure!("unknown pull={other}")),
    }
    let pulled = clock::now();
    marker!("PHASE pulled");
    ensure!(
        wait_until(deadline_ms(timeout_ms), || !present()),
        "device still answers after the pull"
    );
    marker!(
        "RESULT gone_after_us={} presence={}",
        (clock::now() - pulled).as_micros(),
        hand.presence() as u8
    );
    match args.get("hold") {
        Some(word) => wait_for_host(word, timeout_ms),
        None => Ok(()),
    }
}

/// A link flap: power off, the function vanishes; power on, it returns reset.
fn flap(config: &BoardConfig, hand: &Hand, child: PciAddress, timeout_ms: u64) -> Outcome {
    let present = || pci::vendor_id(config, child) != NO_DEVICE;
    hand.power_off();
    marker!("PHASE power-off");
    ensure!(
        wait_until(deadline_ms(timeout_ms), || !present()),
        "device still answers with slot power off"
    );
    let off = clock::now();
    hand.power_on();
    marker!("PHASE power-on");
    ensure!(
        wait_until(deadline_ms(timeout_ms), present),
        "device did not come back after power-on"
    );
    let command = pci::read32(config, child, 0x04) as u16;
    marker!(
        "RESULT back_after_us={} command_after_flap={command:#06x}",
        (clock::now() - off).as_micros()
    );
    ensure!(
        command == 0,
        "device came back with command register {command:#06x}, not reset"
    );
    Ok(())
}
