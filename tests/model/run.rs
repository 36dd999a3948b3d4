//! Running a case: its steps, then healing every device and checking that
//! each present one is served, then the end.

use super::*;

impl Model {
    pub(crate) fn run(&mut self, steps: &[Step]) {
        self.driver.scan().expect("scan");
        self.observe();
        for (n, &step) in steps.iter().enumerate() {
            self.trace.push(format!("step {n}: {step:?}"));
            self.step(step);
            self.observe();
        }
        self.heal_and_check_service();
        self.finish();
    }

    pub(crate) fn step(&mut self, step: Step) {
        match step {
            Step::Submit {
                c,
                q,
                write,
                lba,
                blocks,
                unaligned,
            } => {
                if let Some(id) = self.pick(c) {
                    let blocks = (blocks as u64).min(NS_BLOCKS - lba as u64);
                    self.submit(id, q as u16, write, lba as u64, blocks, unaligned);
                }
            }
            Step::Blocking { c, op, lba, blocks } => {
                if let Some(id) = self.pick(c) {
                    self.blocking(id, op, lba as u64, blocks as u64);
                }
            }
            Step::BlockDevice {
                c,
                write,
                lba,
                blocks,
            } => {
                if let Some(id) = self.pick(c) {
                    self.block_device(id, write, lba as u64, blocks as u64);
                }
            }
            Step::Poll { c, q } => {
                if let Some(id) = self.pick(c) {
                    self.poll(id, q as u16);
                }
            }
            Step::Tick { ms } => {
                self.sim.advance(Duration::from_millis(ms as u64));
                self.sim.process();
                self.tick();
            }
            Step::Ring { c } => {
                if let Some(id) = self.pick(c) {
                    self.driver.controller(id).unwrap().ring_doorbells();
                    self.mark_rung(id, None);
                }
            }
            Step::Detach { c } => {
                if let Some(id) = self.pick(c) {
                    self.driver
                        .begin_detach(id)
                        .expect("a controller the driver holds");
                    self.id_model(id).detach_requested = true;
                }
            }
            Step::Scan => {
                self.driver.scan().expect("scan");
            }
            Step::Device { d, ev } => {
                let d = d as usize % self.devices.len();
                self.device(d, ev);
            }
            Step::Release { n } => {
                self.sim.complete_held(n as usize);
            }
        }
    }

    /// Ticks for `span` of virtual time, 5 ms apart (the slot poll
    /// interval is 10 ms), observing.
    pub(crate) fn run_for(&mut self, span: Duration) {
        let end = self.sim.now() + span;
        while self.sim.now() < end {
            self.sim.advance(Duration::from_millis(5));
            self.sim.process();
            self.tick();
            self.observe();
        }
    }

    /// Collects every completion of every controller.
    pub(crate) fn poll_all(&mut self) {
        let ids: Vec<ControllerId> = self.ids.values().map(|(id, _)| *id).collect();
        for id in ids {
            if self.driver.controller(id).is_ok() {
                for q in 0..2 {
                    self.poll(id, q);
                }
            }
        }
    }

    /// Every device behaves again: each present one is served once the
    /// driver rescans, and serves I/O that reads back what was written.
    pub(crate) fn heal_and_check_service(&mut self) {
        self.trace.push("heal".into());
        for d in 0..self.devices.len() {
            if !self.sim.is_present(CtrlId(d)) {
                continue;
            }
            self.sim.unhang(CtrlId(d));
            self.sim.ignore_config_writes(CtrlId(d), false);
            self.sim.hold(CtrlId(d), Hold::None);
            self.sim.clear_media_errors(CtrlId(d));
            self.devices[d].hung = false;
            self.devices[d].held = false;
        }
        self.sim.release_all();
        // A glitch still pending would hide the function from the scan
        // below (see `a_scan_finds_a_function_whose_first_config_read_glitches`):
        // behaving again means it passed.
        let access = self.sim.config_access();
        for d in 0..self.devices.len() {
            if let Some(address) = self.sim.address(CtrlId(d)) {
                // SAFETY: a read of the simulated configuration space.
                let _ = unsafe { pci_types::ConfigRegionAccess::read(&access, address, 0) };
            }
        }
        // Long enough for any reset (CAP.TO 500 ms, backoffs), stop or
        // detach under way to end.
        self.run_for(Duration::from_secs(2));
        // Failed commands of removed controllers are collected, as an
        // embedder does after a removal: their table entries free up for
        // devices waiting to attach.
        self.poll_all();
        self.driver.scan().expect("scan");
        self.run_for(Duration::from_secs(2));
        self.poll_all();
        for d in 0..self.devices.len() {
            if !self.sim.is_present(CtrlId(d)) {
                continue;
            }
            let serving = self
                .ids
                .values()
                .map(|(id, m)| (*id, m.dev))
                .find(|&(id, dev)| {
                    dev == d
                        && self
                            .driver
                            .controller(id)
                            .is_ok_and(|c| c.state() == State::Ready)
                });
            let Some((id, _)) = serving else {
                if self.devices[d].knobs.slow_disable == 2 && self.driver_gave_up_on(d) {
                    // Its disable takes longer than its CAP.TO: a reset
                    // cannot finish in time, and the driver gives such a
                    // device up, as it must.
                    self.trace
                        .push(format!("device {d}: given up (disable slower than CAP.TO)"));
                    continue;
                }
                self.fail(format!(
                    "device {d} behaves again but no controller serves it"
                ));
            };
            self.trace.push(format!("service check of {id}"));
            // Write then read back a block nothing else touches now.
            let lba = NS_BLOCKS - 1;
            self.blocking(id, Blocking::Write, lba, 1);
            let known = self.devices[d].block(lba).known;
            self.check(known.is_some(), || {
                format!("{id}: write after healing failed")
            });
            self.blocking(id, Blocking::Read, lba, 1);
        }
    }

    /// Detaches everything, collects every command and checks the books.
    pub(crate) fn finish(&mut self) {
        self.trace.push("finish".into());
        let ids: Vec<ControllerId> = self.driver.controllers().collect();
        for id in ids {
            let state = self.driver.controller(id).unwrap().state();
            if !state.is_finished() {
                self.driver.begin_detach(id).unwrap();
                self.id_model(id).detach_requested = true;
            }
        }
        self.run_for(Duration::from_secs(2));
        self.poll_all();
        let books: Vec<(ControllerId, bool, bool, bool)> = self
            .ids
            .values()
            .map(|(id, m)| (*id, m.ended, m.seen_serving, m.ready))
            .collect();
        for (id, ended, seen_serving, ready) in books {
            let stale = self.driver.controller(id).is_err();
            self.check(ended || stale, || format!("{id} never reported its end"));
            self.check(!seen_serving || ready, || {
                format!("{id} served without a Ready event")
            });
        }
        self.check(self.ledger.is_empty(), || {
            format!(
                "commands never delivered: {:?}",
                self.ledger.keys().collect::<Vec<_>>()
            )
        });
        // What completed Ok is on the medium.
        for (d, m) in self.devices.iter().enumerate() {
            for (&lba, b) in &m.blocks {
                if let Some(version) = b.known {
                    self.check(
                        self.sim.read_block(CtrlId(d), 1, lba) == content(lba, version),
                        || format!("device {d} block {lba} lost version {version}"),
                    );
                }
            }
        }
    }
}
