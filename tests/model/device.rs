//! Device events: what the simulated machine does to a controller, and what
//! the model then expects.

use super::*;

impl Model {
    pub(crate) fn port_of(&self, d: usize) -> Option<PortId> {
        match self.devices[d].location {
            Location::Port(p) => Some(p),
            _ => None,
        }
    }

    pub(crate) fn device(&mut self, d: usize, ev: Device) {
        let ctrl = CtrlId(d);
        let present = self.devices[d].present && self.sim.is_present(ctrl);
        let port = self.port_of(d);
        if !present && !matches!(ev, Device::Insert { .. }) {
            self.trace.push("  (device absent: nothing)".into());
            return;
        }
        let fault = |m: &mut DeviceModel| m.faults += 1;
        match ev {
            Device::Remove => {
                self.sim.surprise_remove(ctrl);
                let m = &mut self.devices[d];
                fault(m);
                m.lost += 1;
                m.present = false;
            }
            Device::Glitch => self.sim.glitch(ctrl),
            Device::Cfs => {
                self.sim.set_cfs(ctrl);
                fault(&mut self.devices[d]);
            }
            Device::Hang => {
                self.sim.hang(ctrl);
                let m = &mut self.devices[d];
                fault(m);
                m.hung = true;
            }
            Device::Unhang => {
                self.sim.unhang(ctrl);
                self.devices[d].hung = false;
            }
            Device::MemoryDecodingOff => {
                self.sim.memory_decoding_off(ctrl);
                fault(&mut self.devices[d]);
            }
            Device::MediaErrors(true) => {
                self.sim.fail_reads(ctrl, 1, MEDIA_ERRORS);
                self.sim.fail_writes(ctrl, 1, MEDIA_ERRORS);
                self.devices[d].media_errors = true;
            }
            Device::MediaErrors(false) => self.sim.clear_media_errors(ctrl),
            Device::IgnoreConfigWrites(on) => {
                self.sim.ignore_config_writes(ctrl, on);
                self.devices[d].ignoring_config = on;
            }
            Device::BouncePresence => {
                if let Some(p) = port {
                    self.sim.bounce_presence(p);
                }
            }
            Device::BounceLink => {
                if let Some(p) = port {
                    self.sim.bounce_link(p);
                }
            }
            Device::LinkFlap => {
                if let Some(p) = port {
                    self.sim.link_flap(p);
                    let m = &mut self.devices[d];
                    fault(m);
                    m.lost += 1;
                    // The device comes back reset, released from any hang.
                }
            }
            Device::Insert { same } => self.insert(d, same),
            Device::AttentionButton => {
                if let Some(p) = port {
                    self.sim.press_attention_button(p);
                    // An orderly detach of whatever the driver runs there.
                    for (_, m) in self.ids.values_mut() {
                        if m.dev == d {
                            m.detach_requested = true;
                        }
                    }
                }
            }
            Device::Hold(on) => {
                self.sim.hold(ctrl, if on { Hold::Io } else { Hold::None });
                let m = &mut self.devices[d];
                if on && !m.held {
                    m.holds += 1;
                }
                m.held = on;
            }
        }
    }

    /// A device inserted where device `d` was (`same`: the same one again,
    /// by its serial number), unless the slot is taken.
    fn insert(&mut self, d: usize, same: bool) {
        let occupied = self
            .devices
            .iter()
            .any(|m| m.present && m.location == self.devices[d].location);
        if occupied {
            self.trace.push("  (slot occupied: nothing)".into());
            return;
        }
        let location = self.devices[d].location;
        let knobs = self.devices[d].knobs;
        let serial = if same {
            self.devices[d].serial.clone()
        } else {
            format!("model{}", self.devices.len())
        };
        let new = self.sim.hot_add_at(location, knobs.spec(&serial));
        assert_eq!(new.0, self.devices.len());
        self.devices.push(DeviceModel {
            location,
            address: None,
            knobs,
            serial,
            blocks: HashMap::new(),
            faults: 0,
            lost: 0,
            holds: 0,
            held: false,
            hung: false,
            ignoring_config: false,
            media_errors: false,
            present: true,
        });
    }

    // ---- running a scenario ----
}
