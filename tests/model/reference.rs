//! The reference model: what the driver may report and return, given the
//! calls made and the device events so far.

use super::*;

/// What the model knows about one block of a device.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BlockModel {
    /// The version last written by a write that completed `Ok` (0: never
    /// written, zeroes); `None` when a write to it ended in an unknown state.
    pub(crate) known: Option<u64>,
    /// Writes to it submitted and not yet delivered.
    pub(crate) in_flight: u32,
    /// Counts writes submitted to it: a read across a change cannot know.
    pub(crate) epoch: u64,
    /// The version of the last write submitted.
    pub(crate) last_writer: u64,
    /// Two writes to it were outstanding at once: the device may execute
    /// them in either order (NVMe orders no two outstanding commands), so
    /// the content is unknown until a later write alone settles it.
    pub(crate) contended: bool,
}

impl BlockModel {
    pub(crate) fn fresh() -> Self {
        Self {
            known: Some(0),
            ..Self::default()
        }
    }
}

/// One simulated controller.
pub(crate) struct DeviceModel {
    pub(crate) location: Location,
    /// Where its function answered when last looked at.
    pub(crate) address: Option<pci_types::PciAddress>,
    pub(crate) knobs: Knobs,
    pub(crate) serial: String,
    pub(crate) blocks: HashMap<u64, BlockModel>,
    /// Faults so far (removal, link flap, fatal status, hang, memory
    /// decoding off): commands may fail after one.
    pub(crate) faults: u32,
    /// Events that make the device lose its queues or vanish: no command
    /// submitted after one can succeed.
    pub(crate) lost: u32,
    /// Held-completion periods begun: commands may time out.
    pub(crate) holds: u32,
    pub(crate) held: bool,
    pub(crate) hung: bool,
    pub(crate) ignoring_config: bool,
    pub(crate) present: bool,
    /// Media errors were turned on at some point: a command may end with
    /// the device's error status.
    pub(crate) media_errors: bool,
}

impl DeviceModel {
    pub(crate) fn block(&mut self, lba: u64) -> &mut BlockModel {
        self.blocks.entry(lba).or_insert_with(BlockModel::fresh)
    }

    /// A write of `version` to `blocks` blocks from `lba` is on its way:
    /// until it ends, what they hold is unknown.
    pub(crate) fn start_write(&mut self, lba: u64, blocks: u64, version: u64) {
        for i in 0..blocks {
            let b = self.block(lba + i);
            b.contended |= b.in_flight > 0;
            b.in_flight += 1;
            b.epoch += 1;
            b.last_writer = version;
            b.known = None;
        }
    }

    /// The write of `version` ended (`ok`: it succeeded): each block holds
    /// it if no other write overlapped it.
    pub(crate) fn end_write(&mut self, lba: u64, blocks: u64, version: u64, ok: bool) {
        for i in 0..blocks {
            let b = self.block(lba + i);
            b.in_flight -= 1;
            b.known = (ok && b.last_writer == version && b.in_flight == 0 && !b.contended)
                .then_some(version);
            if b.in_flight == 0 {
                b.contended = false;
            }
        }
    }

    /// What a read starting now may expect of each block: the version known
    /// (none while a write is in flight) and the epoch it was known in.
    pub(crate) fn expect_read(&mut self, lba: u64, blocks: u64) -> Vec<(Option<u64>, u64)> {
        (0..blocks)
            .map(|i| {
                let b = *self.block(lba + i);
                let known = if b.in_flight == 0 { b.known } else { None };
                (known, b.epoch)
            })
            .collect()
    }
}

/// One controller identity the driver reported.
pub(crate) struct IdModel {
    pub(crate) dev: usize,
    /// `DeviceModel::faults` / `holds` when it attached.
    pub(crate) faults_base: u32,
    pub(crate) holds_base: u32,
    /// `DeviceModel::lost` when it attached.
    pub(crate) lost_base: u32,
    /// A command never rung ended with an error: its timeout reset the
    /// controller, failing the others too.
    pub(crate) unrung_failed: bool,
    pub(crate) detach_requested: bool,
    pub(crate) ready: bool,
    pub(crate) seen_serving: bool,
    pub(crate) ended: bool,
    pub(crate) quarantined: bool,
}

/// A command the driver accepted and has not delivered yet.
pub(crate) struct Pending {
    pub(crate) id: ControllerId,
    pub(crate) queue: u16,
    pub(crate) cid: u16,
    pub(crate) write: bool,
    pub(crate) lba: u64,
    pub(crate) blocks: u64,
    /// For a write: its version.
    pub(crate) version: u64,
    /// For a read: per block, the expected version and the epoch then.
    pub(crate) expect: Vec<(Option<u64>, u64)>,
    /// `DeviceModel::lost` at submission.
    pub(crate) lost_at_submit: u32,
    /// Whether its doorbell was rung (a poll of its queue or
    /// `ring_doorbells`): until then the device has not seen it, and the
    /// deadline, counted from submission, may pass without a fault.
    pub(crate) rung: bool,
    /// Its I/O deadline: rung only after it is as good as never rung.
    pub(crate) deadline: bare_nvme::Instant,
}

pub(crate) struct Model {
    pub(crate) sim: Sim,
    pub(crate) driver: Box<Drv>,
    pub(crate) devices: Vec<DeviceModel>,
    pub(crate) ids: BTreeMap<(u32, u8), (ControllerId, IdModel)>,
    pub(crate) ledger: HashMap<u64, Pending>,
    pub(crate) next_tag: u64,
    pub(crate) next_version: u64,
    pub(crate) quarantine_reported: bool,
    pub(crate) trace: Vec<String>,
    /// The simulation's violation counters last seen, to trace where they
    /// moved.
    pub(crate) bad: (u64, u64, u64),
}

/// `BLOCK` bytes of block `lba` at `version` (0: zeroes).
pub(crate) fn content(lba: u64, version: u64) -> Vec<u8> {
    if version == 0 {
        return vec![0; BLOCK];
    }
    let mut x = (version << 20) ^ lba ^ 0x9E37_79B9_7F4A_7C15;
    (0..BLOCK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub(crate) fn key(id: ControllerId) -> (u32, u8) {
    // ControllerId's index is private: the generation alone is unique.
    (id.generation(), 0)
}

impl Model {
    pub(crate) fn new(s: &Scenario) -> Self {
        let mut builder = Sim::builder()
            .clock_step(CLOCK_STEP)
            .root_port(true)
            .root_port(true);
        let mut devices = Vec::new();
        let mut add = |builder: bare_nvme_sim::SimBuilder, location: Location, knobs: Knobs| {
            let serial = format!("model{}", devices.len());
            devices.push(DeviceModel {
                location,
                address: None,
                knobs,
                serial: serial.clone(),
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
            builder.controller_at(location, knobs.spec(&serial))
        };
        builder = add(builder, Location::Port(PortId(0)), s.first);
        if let Some(k) = s.second {
            builder = add(builder, Location::Port(PortId(1)), k);
        }
        if let Some(k) = s.bus0 {
            builder = add(builder, Location::Bus0, k);
        }
        let sim = builder.build();
        for (d, m) in devices.iter_mut().enumerate() {
            m.address = sim.address(CtrlId(d));
        }
        let config = DriverConfig::default().controller(ControllerConfig::default().io_queues(2).queue_depth(s.depth).io_timeout(IO_TIMEOUT).admin_timeout(Duration::from_millis(50)).ready_timeout_limit(Duration::from_secs(1)).shutdown_timeout(Duration::from_millis(100)).// The controller's knob decides whether they are offered.
                shadow_doorbells(true)).bus_rescan_interval(Some(Duration::from_millis(50))).// A button press detaches at once: the model has no window.
            button_window(Duration::ZERO).// Room for BARs of functions hot-added on bus 0.
            root_window(Some((
                bare_nvme::PhysAddr::new(bare_nvme_sim::MMIO_APERTURE.0 + (64 << 20)),
                1 << 20,
            )));
        let driver = Box::new(Drv::new(sim.platform(), sim.config_access(), config));
        Self {
            sim,
            driver,
            devices,
            ids: BTreeMap::new(),
            ledger: HashMap::new(),
            next_tag: 1,
            next_version: 1,
            quarantine_reported: false,
            trace: Vec::new(),
            bad: (0, 0, 0),
        }
    }

    pub(crate) fn fail(&self, what: String) -> ! {
        panic!("{what}\ntrace:\n{}", self.trace.join("\n"));
    }

    /// Whether the driver's last controller of device `d` ended `Failed`.
    pub(crate) fn driver_gave_up_on(&mut self, d: usize) -> bool {
        let last = self
            .ids
            .values()
            .filter(|(_, m)| m.dev == d)
            .map(|(id, _)| *id)
            .max_by_key(|id| id.generation());
        last.is_some_and(|id| {
            self.driver
                .controller(id)
                .is_ok_and(|c| c.state() == State::Failed)
        })
    }

    pub(crate) fn check(&self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.fail(what());
        }
    }

    pub(crate) fn id_model(&mut self, id: ControllerId) -> &mut IdModel {
        &mut self.ids.get_mut(&key(id)).expect("known id").1
    }

    /// The `c`-th controller the driver holds (any state).
    pub(crate) fn pick(&self, c: u8) -> Option<ControllerId> {
        // Only those whose Attached event was seen.
        let ids: Vec<ControllerId> = self
            .driver
            .controllers()
            .filter(|id| self.ids.contains_key(&key(*id)))
            .collect();
        (!ids.is_empty()).then(|| ids[c as usize % ids.len()])
    }

    // ---- events ----
}
