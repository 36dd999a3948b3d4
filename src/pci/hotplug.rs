//! A hot-plug slot's power, indicators and bring-up timing as a state
//! machine driven by slot polls (PCIe Base 6.0, 6.7; the order of steps
//! follows what Linux's pciehp does).
//!
//! Nothing here reads or writes a register: [`SlotPower::step`] takes what a
//! poll read (Slot Control, Slot Status, and Link Status or the function's
//! vendor ID when asked for) and the time, and returns the Slot Control write
//! to issue and what the driver does with the controllers behind the slot.
//! Every wait is a state with a deadline, so a poll never spins.

use core::time::Duration;

use super::slot::{Indicator, SlotCapabilities, SlotControl, SlotStatus, CRS_VENDOR_ID};
pub use crate::event::SlotFault;
use crate::platform::Instant;

/// How long a Slot Control write may take to report Command Completed
/// before the next one is written anyway (Linux's pciehp waits 1 s).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the link may take to train after power-on (PCIe Base 6.0,
/// 6.7.3.3: Data Link Layer Link Active within 1 s).
pub const LINK_TIMEOUT: Duration = Duration::from_secs(1);
/// The wait between the link coming up (or power-on, without link
/// reporting) and the first configuration request (PCIe Base 6.0, 6.6.1).
pub const CONFIG_DELAY: Duration = Duration::from_millis(100);
/// How long a function may answer with Configuration Request Retry Status
/// (or not at all) after [`CONFIG_DELAY`] before it counts as never ready
/// (PCIe Base 6.0, 6.6.1: 1 s after a Conventional Reset).
pub const READY_TIMEOUT: Duration = Duration::from_secs(1);
/// The attention button's abort window (PCIe Base 6.0, 6.7.1.5: 5 s).
pub const BUTTON_WINDOW: Duration = Duration::from_secs(5);

/// Where a slot is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Powered (or without a power controller) and left to the monitor's
    /// usual rules: controllers behind it are served, arrivals attached.
    Served,
    /// Held off: empty, or switched off by the driver (orderly detach, a
    /// fault). A card inserted (presence change) or a button press powers
    /// it on again; nothing else does.
    Off,
    /// Power is on (or a card arrived in a slot without a power
    /// controller): waiting for Data Link Layer Link Active until the
    /// deadline.
    Link {
        /// When the link counts as never up.
        deadline: Instant,
    },
    /// The link is up: no configuration request before `at`.
    Settle {
        /// The first configuration read.
        at: Instant,
    },
    /// Reading the function's vendor ID until it answers (not all-ones, not
    /// Retry Status) or the deadline passes.
    Ready {
        /// When the function counts as never ready.
        deadline: Instant,
    },
    /// The attention button was pressed: the power indicator blinks until
    /// `at`, a second press cancels, then the slot changes state.
    Button {
        /// End of the abort window.
        at: Instant,
        /// The slot was served: its end detaches; else it powers on.
        detach: bool,
    },
    /// An orderly detach of the slot's controllers is under way; the slot is
    /// switched off once none is live.
    Detaching,
}

/// What the driver does with the slot's controllers after a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// Nothing.
    None,
    /// The monitor's usual rules decide (removals, replacements, returns).
    Usual,
    /// The usual rules decide removals, but a card that arrived is not
    /// probed yet: the slot is bringing it up.
    UsualNoAttach,
    /// The function answers: probe behind the slot and attach.
    Attach,
    /// Start an orderly detach of the live controllers.
    Detach,
    /// The live controllers are gone (surprise removal); with a fault to
    /// report.
    Remove(Option<SlotFault>),
}

/// What a poll read, for [`SlotPower::step`].
#[derive(Clone, Copy, Debug)]
pub struct Poll {
    /// Slot Control as read.
    pub control: SlotControl,
    /// Slot Status as read (its events are acknowledged after the step).
    pub status: SlotStatus,
    /// Whether live controllers sit behind the slot.
    pub live: bool,
    /// The time of the poll.
    pub now: Instant,
}

/// The outcome of one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Slot Control to write (one command).
    pub write: Option<SlotControl>,
    /// What happens to the controllers.
    pub act: Act,
    /// A fault to report.
    pub fault: Option<SlotFault>,
}

impl Step {
    const NONE: Step = Step {
        write: None,
        act: Act::None,
        fault: None,
    };

    fn act(act: Act) -> Step {
        Step { act, ..Step::NONE }
    }
}

/// The settings a slot's machine follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotPolicy {
    /// The attention button's abort window; zero acts at once.
    pub button_window: Duration,
}

/// One hot-plug slot's machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotPower {
    caps: SlotCapabilities,
    /// The port reports Data Link Layer Link Active.
    link_reporting: bool,
    phase: Phase,
    /// A Slot Control write waits for Command Completed until then.
    command: Option<Instant>,
    /// Presence Detect State at the last poll. Presence Detect Changed can
    /// be lost: a card inserted between the read of Slot Status and the
    /// acknowledgement of an earlier change has its event cleared with it
    /// (RW1C clears the bit, not the event). A switched-off slot whose
    /// presence went from absent to present counts as an insertion.
    was_present: bool,
}

impl SlotPower {
    /// The machine of a slot with capabilities `caps`, in phase `phase`
    /// (what [`SlotPower::initial`] found at enumeration).
    pub fn new(caps: SlotCapabilities, link_reporting: bool, phase: Phase) -> Self {
        Self {
            caps,
            link_reporting,
            phase,
            command: None,
            // Assumed present, so that a card already in a slot switched
            // off on purpose is not taken for a new one.
            was_present: true,
        }
    }

    /// The phase of a slot found with `control` and `status` at enumeration,
    /// and the write that starts it: a card in a slot whose power controller
    /// has it off (no firmware powered it) is powered on; a card in a
    /// powered slot whose function does not answer yet (`answers` false:
    /// still training, or Retry Status) is waited for as after a power-up.
    pub fn initial(
        caps: SlotCapabilities,
        control: SlotControl,
        status: SlotStatus,
        answers: bool,
        now: Instant,
    ) -> (Phase, Option<SlotControl>) {
        let present = status.contains(SlotStatus::PRESENCE_DETECT_STATE);
        let powered_off = caps.contains(SlotCapabilities::POWER_CONTROLLER)
            && control.contains(SlotControl::POWER_OFF);
        match (present, powered_off) {
            (true, true) => (
                Phase::Link {
                    deadline: now + COMMAND_TIMEOUT + LINK_TIMEOUT,
                },
                Some(power_on(caps, control)),
            ),
            (false, true) => (Phase::Off, None),
            (true, false) if !answers => (
                Phase::Ready {
                    deadline: now + READY_TIMEOUT,
                },
                None,
            ),
            _ => (Phase::Served, None),
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the machine is bringing a card up (the usual rules must not
    /// probe the slot meanwhile).
    pub fn starting(&self) -> bool {
        matches!(
            self.phase,
            Phase::Link { .. } | Phase::Settle { .. } | Phase::Ready { .. }
        )
    }

    /// Whether the slot has a power controller the driver switches.
    pub fn power_controller(&self) -> bool {
        self.caps.contains(SlotCapabilities::POWER_CONTROLLER)
    }

    /// Whether a Slot Control write still waits for Command Completed at
    /// `now` (with `status` just read). Clears the wait when the command
    /// completed or its time ran out.
    pub fn command_pending(&mut self, status: SlotStatus, now: Instant) -> bool {
        match self.command {
            Some(deadline) if !status.contains(SlotStatus::COMMAND_COMPLETED) && now < deadline => {
                true
            }
            Some(_) => {
                if !status.contains(SlotStatus::COMMAND_COMPLETED) {
                    log::warn!("pci: slot command not completed within 1 s; going on");
                }
                self.command = None;
                false
            }
            None => false,
        }
    }

    /// Records that a Slot Control write was issued at `now`.
    pub fn issued(&mut self, now: Instant) {
        if !self.caps.contains(SlotCapabilities::NO_COMMAND_COMPLETED) {
            self.command = Some(now + COMMAND_TIMEOUT);
        }
    }

    /// An orderly detach of the slot's controllers was asked for (the
    /// embedder's `begin_detach`): the slot is switched off once they are
    /// detached.
    pub fn detach_requested(&mut self) {
        if matches!(self.phase, Phase::Served | Phase::Button { .. }) {
            self.phase = Phase::Detaching;
        }
    }

    /// Whether the machine needs Link Status at this poll.
    pub fn wants_link(&self) -> bool {
        self.link_reporting && matches!(self.phase, Phase::Link { .. })
    }

    /// Whether the machine reads the function's vendor ID at this poll
    /// (given the time).
    pub fn wants_vendor(&self, now: Instant) -> bool {
        match self.phase {
            Phase::Ready { .. } => true,
            Phase::Settle { at } => now >= at,
            _ => false,
        }
    }

    /// One poll: `seen` is what was read, `link_active` Link Status's DLLLA
    /// when [`SlotPower::wants_link`] asked for it, `vendor` the function's
    /// vendor ID when [`SlotPower::wants_vendor`] asked for it.
    pub fn step(
        &mut self,
        policy: &SlotPolicy,
        seen: &Poll,
        link_active: Option<bool>,
        vendor: Option<u16>,
    ) -> Step {
        let status = seen.status;
        let events = status.events();
        let present = status.contains(SlotStatus::PRESENCE_DETECT_STATE);
        let pc = self.power_controller();
        let mrl_open = self.caps.contains(SlotCapabilities::MRL_SENSOR)
            && status.contains(SlotStatus::MRL_SENSOR_STATE);

        if pc && events.contains(SlotStatus::POWER_FAULT_DETECTED) {
            return self.stop(seen.control, Some(SlotFault::PowerFault), true);
        }
        if mrl_open && (seen.live || self.phase != Phase::Off) {
            // The latch opened: the card is about to leave, power or not.
            return self.stop(seen.control, None, false);
        }
        let arrived = present && !self.was_present && self.phase == Phase::Off;
        self.was_present = present;
        let presence = events.contains(SlotStatus::PRESENCE_DETECT_CHANGED) || arrived;
        let link_changed = events.contains(SlotStatus::DATA_LINK_STATE_CHANGED);
        // A link change in a slot held off is the slot's own power-off (or
        // a card there being reset): only a presence change or the button
        // turns such a slot on again.
        let link_matters = !self.starting() && self.phase != Phase::Off;
        if presence || (link_changed && link_matters) {
            return self.presence_or_link(seen, present);
        }
        if !present && self.phase != Phase::Off {
            // The card left without a presence event (a port that reports
            // none, or one acknowledged elsewhere).
            return self.emptied(seen.control);
        }
        if events.contains(SlotStatus::ATTENTION_BUTTON_PRESSED) {
            return self.button(policy, seen, present);
        }
        self.timers(seen, link_active, vendor)
    }

    /// A presence or link change outside a power-up.
    fn presence_or_link(&mut self, seen: &Poll, present: bool) -> Step {
        let powered_off = self.power_controller() && seen.control.contains(SlotControl::POWER_OFF);
        if !present {
            return self.emptied(seen.control);
        }
        if seen.live {
            // The usual rules tell a bounce from a replaced card; a card
            // that is new is brought up by a later poll (presence stays). A
            // button window running is over.
            let window = matches!(self.phase, Phase::Button { .. });
            self.phase = Phase::Served;
            return Step {
                write: if window {
                    self.indicator(seen.control, Indicator::On)
                } else {
                    None
                },
                act: Act::Usual,
                fault: None,
            };
        }
        if powered_off {
            return self.power_up(seen.control, Act::UsualNoAttach, seen.now);
        }
        // Powered (or no power controller): the card trains on its own.
        self.phase = Phase::Link {
            deadline: seen.now + LINK_TIMEOUT,
        };
        Step::act(Act::UsualNoAttach)
    }

    /// The slot is empty: the controllers behind it are gone, and the slot
    /// is switched off so that a card inserted later is powered up anew.
    fn emptied(&mut self, control: SlotControl) -> Step {
        self.phase = Phase::Off;
        let off = self.off_control(control, None);
        Step {
            write: (off != control).then_some(off),
            act: Act::Usual,
            fault: None,
        }
    }

    /// Switches the slot off now: a fault, or the latch opened.
    fn stop(&mut self, control: SlotControl, fault: Option<SlotFault>, attention: bool) -> Step {
        self.phase = Phase::Off;
        let off = self.off_control(control, attention.then_some(Indicator::On));
        Step {
            write: (off != control).then_some(off),
            act: Act::Remove(fault),
            fault,
        }
    }

    /// Slot Control for a slot switched off: power off (with a power
    /// controller), power indicator off, the attention indicator as given.
    fn off_control(&self, control: SlotControl, attention: Option<Indicator>) -> SlotControl {
        let mut off = control;
        if self.power_controller() {
            off |= SlotControl::POWER_OFF;
        }
        if self.caps.contains(SlotCapabilities::POWER_INDICATOR) {
            off = off.with_power_indicator(Indicator::Off);
        }
        if let (Some(a), true) = (
            attention,
            self.caps.contains(SlotCapabilities::ATTENTION_INDICATOR),
        ) {
            off = off.with_attention_indicator(a);
        }
        off
    }

    /// Powers the slot on and starts waiting for its link.
    fn power_up(&mut self, control: SlotControl, act: Act, now: Instant) -> Step {
        self.phase = Phase::Link {
            deadline: now + COMMAND_TIMEOUT + LINK_TIMEOUT,
        };
        Step {
            write: Some(power_on(self.caps, control)),
            act,
            fault: None,
        }
    }

    /// The attention button was pressed.
    fn button(&mut self, policy: &SlotPolicy, seen: &Poll, present: bool) -> Step {
        let control = seen.control;
        let powered_off = self.power_controller() && control.contains(SlotControl::POWER_OFF);
        match self.phase {
            Phase::Button { detach, .. } => {
                // A second press inside the window cancels.
                self.phase = if detach { Phase::Served } else { Phase::Off };
                let indicator = if detach {
                    Indicator::On
                } else {
                    Indicator::Off
                };
                return Step {
                    write: self.indicator(control, indicator),
                    ..Step::NONE
                };
            }
            Phase::Served if seen.live => {
                if policy.button_window.is_zero() {
                    self.phase = Phase::Detaching;
                    return Step::act(Act::Detach);
                }
                self.phase = Phase::Button {
                    at: seen.now + policy.button_window,
                    detach: true,
                };
            }
            Phase::Off | Phase::Served if present && powered_off && !seen.live => {
                if policy.button_window.is_zero() {
                    return self.power_up(control, Act::UsualNoAttach, seen.now);
                }
                self.phase = Phase::Button {
                    at: seen.now + policy.button_window,
                    detach: false,
                };
            }
            // Nothing to switch: a press in a slot on its way up or down.
            _ => return Step::NONE,
        }
        Step {
            write: self.indicator(control, Indicator::Blink),
            ..Step::NONE
        }
    }

    /// The waits: the button window, link, settle and readiness, and the
    /// end of an orderly detach.
    fn timers(&mut self, seen: &Poll, link_active: Option<bool>, vendor: Option<u16>) -> Step {
        let now = seen.now;
        let control = seen.control;
        match self.phase {
            Phase::Button { at, detach } if now >= at => {
                if detach {
                    self.phase = Phase::Detaching;
                    Step::act(Act::Detach)
                } else {
                    self.power_up(control, Act::UsualNoAttach, now)
                }
            }
            Phase::Detaching if !seen.live => {
                self.phase = Phase::Off;
                let off = self.off_control(control, None);
                Step {
                    write: (off != control).then_some(off),
                    ..Step::NONE
                }
            }
            Phase::Link { deadline } => {
                let up = if self.link_reporting {
                    link_active == Some(true)
                } else {
                    // No link state to read: the wait starts once power-on
                    // completed (the command gate held the poll until then).
                    true
                };
                if up {
                    self.phase = Phase::Settle {
                        at: now + CONFIG_DELAY,
                    };
                    Step::NONE
                } else if now >= deadline {
                    self.failed(control, SlotFault::LinkDown)
                } else {
                    Step::NONE
                }
            }
            Phase::Settle { at } if now >= at => {
                self.phase = Phase::Ready {
                    deadline: at + READY_TIMEOUT,
                };
                self.ready(control, vendor, now)
            }
            Phase::Ready { .. } => self.ready(control, vendor, now),
            _ => Step::NONE,
        }
    }

    /// A readiness read: the function answers, retries, or ran out of time.
    fn ready(&mut self, control: SlotControl, vendor: Option<u16>, now: Instant) -> Step {
        let Phase::Ready { deadline } = self.phase else {
            return Step::NONE;
        };
        match vendor {
            Some(v) if v != u16::MAX && v != CRS_VENDOR_ID => {
                self.phase = Phase::Served;
                Step {
                    write: self.indicator(control, Indicator::On),
                    act: Act::Attach,
                    fault: None,
                }
            }
            _ if now >= deadline => self.failed(control, SlotFault::NotReady),
            _ => Step::NONE,
        }
    }

    /// Power-up failed: the slot is switched off with its attention
    /// indicator on, and stays off until the next presence change.
    fn failed(&mut self, control: SlotControl, fault: SlotFault) -> Step {
        self.phase = Phase::Off;
        let off = self.off_control(control, Some(Indicator::On));
        Step {
            write: (off != control).then_some(off),
            act: Act::None,
            fault: Some(fault),
        }
    }

    /// Slot Control with the power indicator set, if the slot has one and it
    /// is not set already.
    fn indicator(&self, control: SlotControl, indicator: Indicator) -> Option<SlotControl> {
        if !self.caps.contains(SlotCapabilities::POWER_INDICATOR) {
            return None;
        }
        let new = control.with_power_indicator(indicator);
        (new != control).then_some(new)
    }
}

/// Slot Control that powers the slot on: power controller on, power
/// indicator blinking, attention indicator off (a fault is being retried).
fn power_on(caps: SlotCapabilities, control: SlotControl) -> SlotControl {
    let mut on = control - SlotControl::POWER_OFF;
    if caps.contains(SlotCapabilities::POWER_INDICATOR) {
        on = on.with_power_indicator(Indicator::Blink);
    }
    if caps.contains(SlotCapabilities::ATTENTION_INDICATOR) {
        on = on.with_attention_indicator(Indicator::Off);
    }
    on
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_PORT: SlotCapabilities = SlotCapabilities::ATTENTION_BUTTON
        .union(SlotCapabilities::POWER_CONTROLLER)
        .union(SlotCapabilities::ATTENTION_INDICATOR)
        .union(SlotCapabilities::POWER_INDICATOR)
        .union(SlotCapabilities::HOT_PLUG_CAPABLE);

    fn at(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    fn poll(control: u16, status: SlotStatus, live: bool, now: u64) -> Poll {
        Poll {
            control: SlotControl::from_bits_retain(control),
            status,
            live,
            now: at(now),
        }
    }

    const POLICY: SlotPolicy = SlotPolicy {
        button_window: BUTTON_WINDOW,
    };
    const PRESENT: SlotStatus = SlotStatus::PRESENCE_DETECT_STATE;

    #[test]
    fn indicator_fields_encode_as_the_spec_says() {
        let off = SlotControl::from_bits_retain(0x07C0);
        assert_eq!(off.power_indicator(), Some(Indicator::Off));
        let on = off.with_power_indicator(Indicator::On) - SlotControl::POWER_OFF;
        assert_eq!(on.bits(), 0x01C0);
        let blink = on.with_attention_indicator(Indicator::Blink);
        assert_eq!(blink.bits(), 0x0180);
        assert_eq!(blink.attention_indicator(), Some(Indicator::Blink));
        assert_eq!(SlotControl::empty().power_indicator(), None);
    }

    #[test]
    fn a_populated_slot_found_off_is_powered_on_and_an_empty_one_stays_off() {
        let off = SlotControl::from_bits_retain(0x07C0);
        let (phase, write) = SlotPower::initial(QEMU_PORT, off, PRESENT, false, at(0));
        assert!(matches!(phase, Phase::Link { .. }));
        assert_eq!(write.map(|w| w.bits()), Some(0x02C0));
        let empty = SlotStatus::empty();
        let (phase, write) = SlotPower::initial(QEMU_PORT, off, empty, false, at(0));
        assert_eq!((phase, write), (Phase::Off, None));
        let on = SlotControl::from_bits_retain(0x01C0);
        let (phase, write) = SlotPower::initial(QEMU_PORT, on, PRESENT, true, at(0));
        assert_eq!((phase, write), (Phase::Served, None));
        // Powered, but the function is not answering yet: waited for.
        let (phase, write) = SlotPower::initial(QEMU_PORT, on, PRESENT, false, at(0));
        assert_eq!((phase, write), (Phase::Ready { deadline: at(1000) }, None));
    }

    #[test]
    fn a_card_whose_presence_event_was_lost_is_still_taken_in() {
        // A slot without a power controller: the card left (the driver
        // switched the slot off), then a card arrives, but its Presence
        // Detect Changed was cleared with the acknowledgement of the
        // departure: only the state says so.
        let no_pc = QEMU_PORT - SlotCapabilities::POWER_CONTROLLER;
        let mut m = SlotPower::new(no_pc, true, Phase::Served);
        let left = SlotStatus::PRESENCE_DETECT_CHANGED;
        let s = m.step(&POLICY, &poll(0x01C0, left, false, 0), None, None);
        assert_eq!(s.act, Act::Usual);
        assert_eq!(m.phase(), Phase::Off);
        let s = m.step(&POLICY, &poll(0x03C0, PRESENT, false, 10), None, None);
        assert_eq!(s.act, Act::UsualNoAttach);
        assert!(matches!(m.phase(), Phase::Link { .. }));
        // With a power controller the slot is powered up the same way.
        let mut m = SlotPower::new(QEMU_PORT, true, Phase::Served);
        let _ = m.step(&POLICY, &poll(0x01C0, left, false, 0), None, None);
        assert_eq!(m.phase(), Phase::Off);
        let s = m.step(&POLICY, &poll(0x07C0, PRESENT, false, 10), None, None);
        assert_eq!(s.write.map(|w| w.bits()), Some(0x02C0));
        // A card that stayed in a slot switched off on purpose is left off.
        let mut m = SlotPower::new(QEMU_PORT, true, Phase::Off);
        let s = m.step(&POLICY, &poll(0x07C0, PRESENT, false, 0), None, None);
        assert_eq!(s.write, None);
        assert_eq!(m.phase(), Phase::Off);
    }

    #[test]
    fn power_up_waits_link_then_100_ms_then_a_non_retry_answer() {
        let mut m = SlotPower::new(QEMU_PORT, true, Phase::Off);
        let inserted = PRESENT | SlotStatus::PRESENCE_DETECT_CHANGED;
        let s = m.step(&POLICY, &poll(0x07C0, inserted, false, 0), None, None);
        assert_eq!(s.write.map(|w| w.bits()), Some(0x02C0));
        assert_eq!(s.act, Act::UsualNoAttach);
        assert!(m.wants_link());
        let s = m.step(
            &POLICY,
            &poll(0x02C0, PRESENT, false, 10),
            Some(false),
            None,
        );
        assert_eq!(s, Step::NONE);
        m.step(&POLICY, &poll(0x02C0, PRESENT, false, 20), Some(true), None);
        assert_eq!(m.phase(), Phase::Settle { at: at(120) });
        assert!(!m.wants_vendor(at(119)));
        assert!(m.wants_vendor(at(120)));
        let crs = Some(CRS_VENDOR_ID);
        let s = m.step(&POLICY, &poll(0x02C0, PRESENT, false, 120), None, crs);
        assert_eq!(s, Step::NONE);
        let s = m.step(
            &POLICY,
            &poll(0x02C0, PRESENT, false, 130),
            None,
            Some(0x1b36),
        );
        assert_eq!(s.act, Act::Attach);
        assert_eq!(s.write.map(|w| w.bits()), Some(0x01C0));
        assert_eq!(m.phase(), Phase::Served);
    }

    #[test]
    fn the_button_window_blinks_cancels_and_ends_on_a_presence_bounce() {
        let mut m = SlotPower::new(QEMU_PORT, true, Phase::Served);
        let press = PRESENT | SlotStatus::ATTENTION_BUTTON_PRESSED;
        let s = m.step(&POLICY, &poll(0x01C0, press, true, 0), None, None);
        assert_eq!(s.write.map(|w| w.bits()), Some(0x02C0));
        assert_eq!(
            m.phase(),
            Phase::Button {
                at: at(5000),
                detach: true
            }
        );
        // A bounce of presence while the card's controller still serves:
        // the window is over, the indicator on again.
        let bounce = PRESENT | SlotStatus::PRESENCE_DETECT_CHANGED;
        let s = m.step(&POLICY, &poll(0x02C0, bounce, true, 100), None, None);
        assert_eq!(s.act, Act::Usual);
        assert_eq!(s.write.map(|w| w.bits()), Some(0x01C0));
        assert_eq!(m.phase(), Phase::Served);
        // Pressed, then let be: at the window's end the controllers detach.
        m.step(&POLICY, &poll(0x01C0, press, true, 200), None, None);
        let s = m.step(&POLICY, &poll(0x02C0, PRESENT, true, 5199), None, None);
        assert_eq!(s, Step::NONE);
        let s = m.step(&POLICY, &poll(0x02C0, PRESENT, true, 5200), None, None);
        assert_eq!(s.act, Act::Detach);
        // Switched off once none is live.
        let s = m.step(&POLICY, &poll(0x02C0, PRESENT, false, 5300), None, None);
        assert_eq!(s.write.map(|w| w.bits()), Some(0x07C0));
        assert_eq!(m.phase(), Phase::Off);
    }

    #[test]
    fn command_completed_gates_the_next_command_for_at_most_a_second() {
        let mut m = SlotPower::new(QEMU_PORT, true, Phase::Served);
        m.issued(at(0));
        assert!(m.command_pending(SlotStatus::empty(), at(999)));
        assert!(!m.command_pending(SlotStatus::COMMAND_COMPLETED, at(5)));
        m.issued(at(0));
        assert!(!m.command_pending(SlotStatus::empty(), at(1000)));
        let mut no_cc = SlotPower::new(
            QEMU_PORT | SlotCapabilities::NO_COMMAND_COMPLETED,
            true,
            Phase::Served,
        );
        no_cc.issued(at(0));
        assert!(!no_cc.command_pending(SlotStatus::empty(), at(0)));
    }
}
