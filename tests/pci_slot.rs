//! The PCI Express capability of a port: slot and link state, and clearing
//! exactly the handled change bits.

mod pci_common;

use bare_nvme::pci::slot::{
    LinkCapabilities, LinkStatus, PciePort, SlotCapabilities, SlotControl, SlotStatus, LINK_STATUS,
    SLOT_CONTROL, SLOT_STATUS,
};
use bare_nvme::Error;
use bare_nvme_sim::{FunctionId, FunctionSpec, FUNCTION_PCIE_CAP as PCIE_CAP};
use pci_common::Fabric;

const HPC_SLOT: u32 = (1 << 6) | (1 << 5) | (1 << 0) | (7 << 19);

fn port(slot: Option<u32>) -> (Fabric, FunctionId, PciePort) {
    let pci = Fabric::new();
    let node = pci.add_root(
        4,
        0,
        FunctionSpec::bridge()
            .with_buses(0, 1, 1)
            .with_pcie_port(slot, 1 << 20),
    );
    let port = PciePort::find(&pci, pci.addr(node)).unwrap().unwrap();
    (pci, node, port)
}

#[test]
fn finds_the_capability_and_decodes_slot_and_link_capabilities() {
    let (pci, _, port) = port(Some(HPC_SLOT));
    assert_eq!(port.capability, PCIE_CAP);
    assert!(port.slot_implemented(&pci));
    let caps = port.slot_capabilities(&pci);
    assert!(caps.contains(SlotCapabilities::HOT_PLUG_CAPABLE));
    assert!(caps.contains(SlotCapabilities::ATTENTION_BUTTON));
    assert!(!caps.contains(SlotCapabilities::POWER_CONTROLLER));
    assert_eq!(caps.physical_slot(), 7);
    assert!(port
        .link_capabilities(&pci)
        .contains(LinkCapabilities::DLL_ACTIVE_REPORTING));
}

#[test]
fn a_port_without_slot_says_so() {
    let (pci, _, port) = port(None);
    assert!(!port.slot_implemented(&pci));
}

#[test]
fn slot_state_decodes_presence_link_and_events() {
    let (pci, node, port) = port(Some(HPC_SLOT));
    pci.raise(
        node,
        PCIE_CAP + SLOT_STATUS,
        (SlotStatus::PRESENCE_DETECT_STATE
            | SlotStatus::PRESENCE_DETECT_CHANGED
            | SlotStatus::ATTENTION_BUTTON_PRESSED)
            .bits(),
    );
    pci.raise(
        node,
        PCIE_CAP + LINK_STATUS,
        LinkStatus::DLL_LINK_ACTIVE.bits(),
    );
    let state = port.slot_state(&pci).unwrap();
    assert!(state.present());
    assert!(state.link_active());
    assert_eq!(
        state.events(),
        SlotStatus::PRESENCE_DETECT_CHANGED | SlotStatus::ATTENTION_BUTTON_PRESSED
    );
}

#[test]
fn clearing_handled_bits_leaves_other_events_and_slot_control_alone() {
    let (pci, node, port) = port(Some(HPC_SLOT));
    let control = SlotControl::PRESENCE_DETECT_ENABLE | SlotControl::from_bits_retain(0x0100);
    port.write_slot_control(&pci, control);
    pci.raise(
        node,
        PCIE_CAP + SLOT_STATUS,
        (SlotStatus::PRESENCE_DETECT_STATE
            | SlotStatus::PRESENCE_DETECT_CHANGED
            | SlotStatus::DATA_LINK_STATE_CHANGED
            | SlotStatus::ATTENTION_BUTTON_PRESSED)
            .bits(),
    );

    // Asking to clear a read-only bit too must not matter.
    port.clear_slot_status(
        &pci,
        SlotStatus::PRESENCE_DETECT_CHANGED | SlotStatus::PRESENCE_DETECT_STATE,
    );
    let status = port.slot_status(&pci).unwrap();
    assert_eq!(
        status,
        SlotStatus::PRESENCE_DETECT_STATE
            | SlotStatus::DATA_LINK_STATE_CHANGED
            | SlotStatus::ATTENTION_BUTTON_PRESSED
    );
    assert_eq!(port.slot_control(&pci), control);
    // The dword written carried the current Slot Control in its low half.
    let last = *pci.writes().last().unwrap();
    assert_eq!(last.offset, PCIE_CAP + SLOT_CONTROL);
    assert_eq!(last.value, u32::from(control.bits()) | (0x0008 << 16));
}

#[test]
fn writing_slot_control_does_not_clear_pending_events() {
    let (pci, node, port) = port(Some(HPC_SLOT));
    let pending = SlotStatus::PRESENCE_DETECT_CHANGED | SlotStatus::DATA_LINK_STATE_CHANGED;
    pci.raise(node, PCIE_CAP + SLOT_STATUS, pending.bits());
    port.write_slot_control(&pci, SlotControl::POWER_OFF);
    assert_eq!(port.slot_control(&pci), SlotControl::POWER_OFF);
    assert_eq!(port.slot_status(&pci).unwrap(), pending);
}

#[test]
fn a_vanished_port_reports_removal() {
    let (pci, node, port) = port(Some(HPC_SLOT));
    pci.remove(node);
    assert_eq!(port.slot_state(&pci), Err(Error::DeviceRemoved));
}
