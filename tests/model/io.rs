//! Split-phase and blocking I/O: submissions, deliveries and the data a
//! read returns, checked against the model.

use bare_nvme::block::{BounceConfig, NamespaceDisk};
use bare_nvme::{DmaRegion, Rejected};

use super::*;

/// What the caller sees of a queue just before it submits: a refusal must
/// be one of what this explains.
#[derive(Clone, Copy)]
struct QueueSeen {
    serving: bool,
    /// Commands of the model's ledger on the queue.
    outstanding: usize,
    depth: usize,
    /// I/O queues of the controller.
    queues: u16,
}

/// Fills `buffer` with the content `version` gives `blocks` blocks from
/// `lba`.
fn fill(buffer: &mut DmaRegion, lba: u64, blocks: u64, version: u64) {
    for i in 0..blocks {
        buffer.as_mut_slice()[i as usize * BLOCK..][..BLOCK]
            .copy_from_slice(&content(lba + i, version));
    }
}

impl Model {
    pub(crate) fn submit(
        &mut self,
        id: ControllerId,
        q: u16,
        write: bool,
        lba: u64,
        blocks: u64,
        unaligned: bool,
    ) {
        let dev = self.id_model(id).dev;
        let mut buffer = self.io_buffer(blocks, unaligned);
        let version = self.next_version;
        if write {
            self.next_version += 1;
            fill(&mut buffer, lba, blocks, version);
        }
        let tag = self.next_tag;
        self.next_tag += 1;
        let op = if write {
            IoOp::Write {
                nsid: 1,
                lba,
                blocks: blocks as u32,
            }
        } else {
            IoOp::Read {
                nsid: 1,
                lba,
                blocks: blocks as u32,
            }
        };
        let seen = self.queue_seen(id, q);
        let c = self.driver.controller(id).expect("picked from the driver");
        match c.submit(QueueId::new(q), op, Some(buffer), tag) {
            Ok(token) => {
                self.trace.push(format!("  tag {tag} -> {token:?}"));
                self.check(seen.serving, || format!("{id}: accepted while not serving"));
                let d = &mut self.devices[dev];
                let lost_at_submit = d.lost;
                let expect = if write {
                    d.start_write(lba, blocks, version);
                    Vec::new()
                } else {
                    d.expect_read(lba, blocks)
                };
                self.ledger.insert(
                    tag,
                    Pending {
                        id,
                        queue: q,
                        cid: token.cid,
                        write,
                        lba,
                        blocks,
                        version,
                        expect,
                        lost_at_submit,
                        rung: false,
                        deadline: self.sim.now() + IO_TIMEOUT,
                    },
                );
            }
            Err(rejected) => self.rejected(id, q, rejected, &seen),
        }
    }

    /// A buffer for `blocks` blocks; `unaligned`: one that starts 512 bytes
    /// into a page, so that the first PRP entry has an offset.
    fn io_buffer(&self, blocks: u64, unaligned: bool) -> DmaRegion {
        let len = blocks as usize * BLOCK;
        let platform = self.sim.platform();
        if unaligned {
            let pad = platform.dma_alloc(BLOCK, 4096).expect("dma");
            let b = platform.dma_alloc(len, BLOCK).expect("dma");
            platform.dma_free(pad);
            b
        } else {
            platform.dma_alloc(len, 4096).expect("dma")
        }
    }

    /// What the caller sees of `id`'s queue `q` just before it submits.
    fn queue_seen(&mut self, id: ControllerId, q: u16) -> QueueSeen {
        let outstanding = self
            .ledger
            .values()
            .filter(|p| p.id == id && p.queue == q)
            .count();
        let c = self.driver.controller(id).expect("picked from the driver");
        QueueSeen {
            serving: c.state() == State::Ready,
            outstanding,
            depth: c.queue_depth() as usize,
            queues: c.io_queue_count(),
        }
    }

    /// A submission was refused: only for a reason the queue as seen
    /// explains, and with the buffer handed back.
    fn rejected(&mut self, id: ControllerId, q: u16, rejected: Rejected, seen: &QueueSeen) {
        self.trace.push(format!("  rejected: {:?}", rejected.error));
        let QueueSeen {
            serving,
            outstanding,
            depth,
            queues,
        } = *seen;
        let ok = match rejected.error {
            Error::QueueFull { .. } => outstanding + 1 >= depth,
            Error::UnknownQueue { .. } => q >= queues,
            Error::NotReady | Error::DeviceRemoved | Error::ControllerFailed => !serving,
            _ => false,
        };
        self.check(ok, || {
            format!(
                "{id}: submit rejected with {:?} (serving {serving}, {outstanding} \
                 outstanding on queue {q} of depth {depth})",
                rejected.error
            )
        });
        let buffer = rejected.buffer.expect("a rejection hands the buffer back");
        self.sim.platform().dma_free(buffer);
    }

    /// The doorbell of `id`'s commands (on `queue`, or all) was rung: the
    /// device sees them now, unless their deadline passed already.
    pub(crate) fn mark_rung(&mut self, id: ControllerId, queue: Option<u16>) {
        let now = self.sim.now();
        for p in self.ledger.values_mut() {
            if p.id == id && queue.is_none_or(|q| q == p.queue) && now <= p.deadline {
                p.rung = true;
            }
        }
    }

    /// Whether `error` may end a command of `id`; `unrung`: a split-phase
    /// command whose doorbell the caller never rang.
    pub(crate) fn error_allowed(&self, id: ControllerId, error: Error, unrung: bool) -> bool {
        let m = &self.ids[&key(id)].1;
        let d = &self.devices[m.dev];
        // Since it attached, or still in effect from before.
        let faulted = d.faults > m.faults_base || d.hung;
        // A command the caller never rang times out and resets the
        // controller: every command of it may then fail the same way.
        let unrung =
            unrung || m.unrung_failed || self.ledger.values().any(|p| p.id == id && !p.rung);
        let held = d.holds > m.holds_base || d.held;
        match error {
            Error::DeviceRemoved | Error::ControllerFailed => faulted,
            Error::Timeout { .. } => faulted || held || unrung,
            Error::Aborted => m.detach_requested || faulted || held || unrung,
            // Bring-up could not turn bus mastering on.
            Error::DeviceUnsupported { .. } => d.ignoring_config,
            // The device's own error status: only a media error made it.
            Error::CommandFailed { .. } => d.media_errors,
            _ => false,
        }
    }

    pub(crate) fn poll(&mut self, id: ControllerId, q: u16) {
        let Ok(c) = self.driver.controller(id) else {
            let left = self.ledger.values().filter(|p| p.id == id).count();
            self.check(left == 0, || {
                format!("{id} gone with {left} commands undelivered")
            });
            return;
        };
        let mut got: Vec<Completion> = Vec::new();
        c.poll(QueueId::new(q), |done| got.push(done));
        let quarantined = c.quarantined().regions > 0;
        for done in got {
            self.deliver(id, done, quarantined);
        }
        // What is still outstanding on the queue reached the doorbell now.
        self.mark_rung(id, Some(q));
    }

    pub(crate) fn deliver(&mut self, id: ControllerId, done: Completion, quarantined: bool) {
        self.trace
            .push(format!("  delivered tag {} {:?}", done.tag, done.result));
        let Some(p) = self.ledger.remove(&done.tag) else {
            self.fail(format!(
                "{id}: tag {} delivered twice or never submitted",
                done.tag
            ));
        };
        self.check(
            p.id == id && p.queue == done.token.queue.index() && p.cid == done.token.cid,
            || format!("tag {} delivered by {id} {:?}", done.tag, done.token),
        );
        let dev = self.ids[&key(id)].1.dev;
        match done.result {
            Ok(()) => self.check(self.ids[&key(id)].1.lost_base == p.lost_at_submit, || {
                format!(
                    "tag {}: Ok though its device vanished before it was sent",
                    done.tag
                )
            }),
            Err(e) => self.check(self.error_allowed(id, e, !p.rung), || {
                format!(
                    "tag {}: {e:?}, which nothing that happened explains",
                    done.tag
                )
            }),
        }
        let ok = done.result.is_ok();
        if !ok && !p.rung {
            self.id_model(id).unrung_failed = true;
        }
        if p.write {
            self.devices[dev].end_write(p.lba, p.blocks, p.version, ok);
        }
        match done.buffer {
            None => self.check(quarantined, || {
                format!("tag {}: no buffer, and no quarantine", done.tag)
            }),
            Some(buffer) => {
                self.sim.caller_owns(&buffer);
                if ok && !p.write {
                    self.verify(dev, p.lba, &p.expect, buffer.as_slice(), done.tag);
                }
                self.sim.platform().dma_free(buffer);
            }
        }
    }

    /// A read that succeeded returned what the model knows of each block.
    pub(crate) fn verify(
        &mut self,
        dev: usize,
        lba: u64,
        expect: &[(Option<u64>, u64)],
        data: &[u8],
        tag: u64,
    ) {
        for (i, &(known, epoch)) in expect.iter().enumerate() {
            let lba = lba + i as u64;
            let b = *self.devices[dev].block(lba);
            let Some(version) = known.filter(|_| b.epoch == epoch) else {
                continue;
            };
            let got = &data[i * BLOCK..][..BLOCK];
            self.check(got == content(lba, version).as_slice(), || {
                format!("tag {tag}: block {lba} read back other data than version {version}")
            });
        }
    }

    pub(crate) fn blocking(&mut self, id: ControllerId, op: Blocking, lba: u64, blocks: u64) {
        let dev = self.id_model(id).dev;
        let platform = self.sim.platform();
        let len = blocks as usize * BLOCK;
        let vanished = self.devices[dev].lost != self.id_model(id).lost_base;
        let seen = self.queue_seen(id, 0);
        let version = self.next_version;
        let mut expect = Vec::new();
        let mut buffer = match op {
            Blocking::Write => {
                self.next_version += 1;
                let mut b = platform.dma_alloc(len, 4096).expect("dma");
                fill(&mut b, lba, blocks, version);
                self.devices[dev].start_write(lba, blocks, version);
                Some(b)
            }
            Blocking::Read => {
                expect = self.devices[dev].expect_read(lba, blocks);
                Some(platform.dma_alloc(len, 4096).expect("dma"))
            }
            Blocking::Flush => None,
        };
        let c = self.driver.controller(id).unwrap();
        let result = match (op, buffer.as_mut()) {
            (Blocking::Write, Some(b)) => c.write(1, lba, b),
            (Blocking::Read, Some(b)) => c.read(1, lba, b),
            _ => c.flush(1),
        };
        let quarantined = c.quarantined().regions > 0;
        self.trace.push(format!("  -> {result:?}"));
        self.check_blocking(id, result, &seen, vanished, quarantined);
        let ok = result.is_ok();
        if let Blocking::Write = op {
            self.devices[dev].end_write(lba, blocks, version, ok);
        }
        if let Some(b) = buffer {
            if result == Err(Error::Quarantined) {
                // The device may still write it: never freed (leaked), as
                // documented; the quarantine lets the end check allow it.
                return;
            }
            self.sim.caller_owns(&b);
            if ok && matches!(op, Blocking::Read) {
                self.verify(dev, lba, &expect, b.as_slice(), 0);
            }
            platform.dma_free(b);
        }
    }

    /// A request through a `BlockDevice` (two bounce buffers of two blocks,
    /// so up to eight pieces, two in flight): checked like a blocking call,
    /// and one more invariant of a call in several commands: if the
    /// controller was serving when called and quarantined memory during the
    /// call, the call says `Quarantined`.
    pub(crate) fn block_device(&mut self, id: ControllerId, write: bool, lba: u64, blocks: u64) {
        let dev = self.id_model(id).dev;
        let vanished = self.devices[dev].lost != self.id_model(id).lost_base;
        let seen = self.queue_seen(id, 0);
        let c = self.driver.controller(id).unwrap();
        let (kept_before, resets_before) = (c.quarantined().regions, c.reset_count());
        let version = self.next_version;
        let mut data = vec![0u8; blocks as usize * BLOCK];
        let mut expect = Vec::new();
        if write {
            self.next_version += 1;
            for i in 0..blocks {
                data[i as usize * BLOCK..][..BLOCK].copy_from_slice(&content(lba + i, version));
            }
            self.devices[dev].start_write(lba, blocks, version);
        } else {
            expect = self.devices[dev].expect_read(lba, blocks);
        }
        let bounce = BounceConfig::new().buffers(2).bytes(2 * BLOCK);
        let result = match NamespaceDisk::open(&mut *self.driver, Some(id), 1, bounce) {
            Ok(mut disk) if write => disk.write(lba, &data),
            Ok(mut disk) => disk.read(lba, &mut data),
            Err(e) => Err(e),
        };
        let c = self.driver.controller(id).unwrap();
        let (kept, resets) = (c.quarantined().regions, c.reset_count());
        let ended = c.state() != State::Ready;
        self.trace.push(format!("  -> {result:?}"));
        // Serving when called, the call's first step is a command, and from
        // then on one of its commands is in flight at every wait: any
        // quarantine during the call holds some of its memory. (A bring-up
        // the call finishes first may end in a quarantine of the
        // controller's own memory before any command of the call.)
        if seen.serving && kept > kept_before {
            self.check(result == Err(Error::Quarantined), || {
                format!("a quarantine during a block request, which returned {result:?}")
            });
        }
        match result {
            // The namespace list the handle was made on ended with a reset
            // or the controller during the call.
            Err(Error::StaleHandle) => self
                .check(resets != resets_before || ended || !seen.serving, || {
                    "StaleHandle with no reset and no end".to_string()
                }),
            r => self.check_blocking(id, r, &seen, vanished, kept > 0),
        }
        let ok = result.is_ok();
        if write {
            self.devices[dev].end_write(lba, blocks, version, ok);
        } else if ok {
            self.verify(dev, lba, &expect, &data, 0);
        }
    }

    /// A blocking call's result is one the queue as seen before the call
    /// and the events so far explain; `vanished`: its device lost its
    /// queues or went away before the call.
    fn check_blocking(
        &mut self,
        id: ControllerId,
        result: Result<(), Error>,
        seen: &QueueSeen,
        vanished: bool,
        quarantined: bool,
    ) {
        let QueueSeen {
            serving,
            outstanding,
            depth,
            ..
        } = *seen;
        match result {
            Ok(()) => self.check(!vanished, || {
                "blocking call Ok though its device vanished before".to_string()
            }),
            Err(Error::Quarantined) => self.check(quarantined, || {
                "Quarantined without a quarantine".to_string()
            }),
            Err(Error::QueueFull { queue: 0 }) => self.check(outstanding + 1 >= depth, || {
                format!("blocking call: queue 0 full with {outstanding} of {depth} outstanding")
            }),
            Err(Error::NotReady) => self.check(
                !serving || self.error_allowed(id, Error::Aborted, false),
                || "NotReady from a serving controller".to_string(),
            ),
            // Not serving when called: a bring-up to finish (which may fail
            // in any of the lifecycle's ways) or a controller that ended.
            Err(
                e @ (Error::DeviceRemoved
                | Error::ControllerFailed
                | Error::Timeout { .. }
                | Error::Aborted),
            ) if !serving => self.trace.push(format!("  (not serving: {e:?} allowed)")),
            Err(e) => self.check(self.error_allowed(id, e, false), || {
                format!("blocking call: {e:?}, which nothing that happened explains")
            }),
        }
    }

    // ---- device events ----
}
