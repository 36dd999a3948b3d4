//! The controller's lifecycle state machine: reset, enable, identify, create
//! queues, discover namespaces; and the orderly detach back down.

use log::{info, warn};

use crate::error::{Error, Result, Wait};
use crate::link::{DeviceLink, Presence};
use crate::nvme::command::{admin, cns, feature, sc, sct, SubmissionEntry};
use crate::nvme::controller::{
    Controller, Namespace, State, Step, ADMIN_QUEUE_DEPTH, MAX_TRANSFER_LIMIT,
};
use crate::nvme::identify::{self, ControllerInfo, NamespaceInfo, NamespaceRefusal};
use crate::nvme::prp::{self, PAGE_SIZE};
use crate::nvme::qpair::QueuePair;
use crate::nvme::queue::DoorbellBuffers;
use crate::nvme::regs::{self, Cap, Cc, Csts};
use crate::nvme::shared_memory::SharedMemory;
use crate::platform::{Platform, RegisterAccess};

/// A queue whose rings were allocated at the step before has none.
const NO_RINGS: Error = Error::Internal {
    what: "queue without rings",
};

/// Most step transitions one `advance` call makes: bounds the work per tick.
const STEPS_PER_ADVANCE: usize = 16;

/// What one step did.
enum Outcome {
    /// Moved on; try the next step now.
    Progress,
    /// Waiting for the device.
    Waiting,
}

impl<P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize>
    Controller<P, L, QUEUES, DEPTH>
{
    /// Advances bring-up or detach by a bounded amount of work without
    /// blocking, and returns the state reached. An error means the controller
    /// failed (or vanished) and was torn down; the error is also kept in
    /// [`Controller::failure`].
    pub fn advance(&mut self) -> Result<State> {
        for _ in 0..STEPS_PER_ADVANCE {
            match self.step() {
                Ok(Outcome::Progress) => continue,
                Ok(Outcome::Waiting) => break,
                Err(e) => {
                    if self.link.presence() != Presence::Present {
                        // Gone, not failed: whatever the step saw was the
                        // absence of the device.
                        self.remove();
                        return Err(Error::DeviceRemoved);
                    }
                    if self.state == State::Detaching {
                        if self.detach_step_failed(e) {
                            continue;
                        }
                        return Err(e);
                    }
                    warn!("nvme: controller failed during {:?}: {}", self.step, e);
                    if is_permanent(e) || self.resets >= crate::nvme::recovery::MAX_RESETS {
                        self.fail(e);
                    } else {
                        // A transient failure (timeout, fatal status) gets a
                        // bounded number of retries with backoff.
                        self.reset(e);
                    }
                    return Err(e);
                }
            }
        }
        match self.state {
            State::Failed | State::Removed => Err(self.failure.unwrap_or(Error::ControllerFailed)),
            s => Ok(s),
        }
    }

    fn step(&mut self) -> Result<Outcome> {
        match self.step {
            Step::Backoff { until } => {
                if self.now() < until {
                    return Ok(Outcome::Waiting);
                }
                self.step = Step::Start;
                Ok(Outcome::Progress)
            }
            Step::Start => self.start_reset(),
            Step::WaitDisabled { deadline } => {
                // Enabling turns bus mastering on, so the controller must
                // be proven disabled first (RDY = 0 on two reads, CAP
                // reachable): a zero read of registers that do not decode
                // is no proof, and an earlier controller still running
                // there could reach memory returned long ago.
                if self.disabled_proof().is_some() {
                    self.enable()?;
                    return Ok(Outcome::Progress);
                }
                if self.read_status().bits() == u32::MAX {
                    return Err(Error::DeviceRemoved);
                }
                self.check_deadline(deadline, Wait::Disable)
            }
            Step::ResetDisable { deadline, backoff } => {
                Ok(if self.reset_disable_step(deadline, backoff) {
                    Outcome::Progress
                } else {
                    Outcome::Waiting
                })
            }
            Step::StopDma { deadline } => Ok(if self.stop_dma_step(deadline) {
                Outcome::Progress
            } else {
                Outcome::Waiting
            }),
            Step::WaitEnabled { deadline } => {
                let csts = self.read_status();
                if csts.bits() == u32::MAX || csts.contains(Csts::CFS) {
                    return Err(Error::ControllerFailed);
                }
                if csts.contains(Csts::RDY) {
                    self.state = State::Initializing;
                    self.step = Step::IdentifyController;
                    return Ok(Outcome::Progress);
                }
                self.check_deadline(deadline, Wait::Enable)
            }
            Step::IdentifyController => {
                let scratch = self.scratch_phys()?;
                let mut sqe = SubmissionEntry::new(admin::IDENTIFY);
                sqe.prp1 = scratch;
                sqe.cdw10 = cns::CONTROLLER;
                let Some(_) = self.admin_exchange(sqe)? else {
                    return Ok(Outcome::Waiting);
                };
                let mut page = [0; PAGE_SIZE];
                let info = ControllerInfo::parse(self.read_scratch(&mut page))?;
                self.max_transfer = transfer_limit(self.config.max_transfer, info.mdts);
                info!(
                    "nvme: controller {} {} fw {} mdts {} KiB, {} namespaces",
                    info.model,
                    info.serial,
                    info.firmware,
                    self.max_transfer >> 10,
                    info.namespace_count
                );
                self.info = Some(info);
                self.step = Step::SetQueueCount;
                Ok(Outcome::Progress)
            }
            Step::SetQueueCount => {
                let wanted = self.config.io_queues.clamp(1, QUEUES as u16);
                let mut sqe = SubmissionEntry::new(admin::SET_FEATURES);
                sqe.cdw10 = feature::NUMBER_OF_QUEUES;
                sqe.cdw11 = ((wanted as u32 - 1) << 16) | (wanted as u32 - 1);
                let Some(dw0) = self.admin_exchange(sqe)? else {
                    return Ok(Outcome::Waiting);
                };
                // Both counts are 0-based; a controller may grant more or fewer.
                let granted_sq = (dw0 & 0xFFFF) + 1;
                let granted_cq = (dw0 >> 16) + 1;
                let count = (wanted as u32).min(granted_sq).min(granted_cq) as u16;
                self.setup_io_queues(count)?;
                self.step = Step::CreateCq(0);
                Ok(Outcome::Progress)
            }
            Step::CreateCq(i) => {
                let q = &self.io[i as usize];
                let (_, cq_phys) = q.ring_addresses().ok_or(NO_RINGS)?;
                let mut sqe = SubmissionEntry::new(admin::CREATE_CQ);
                sqe.prp1 = cq_phys;
                sqe.cdw10 = ((q.entries() as u32 - 1) << 16) | q.qid as u32;
                sqe.cdw11 = 1; // physically contiguous, interrupts off
                let Some(_) = self.admin_exchange(sqe)? else {
                    return Ok(Outcome::Waiting);
                };
                self.step = Step::CreateSq(i);
                Ok(Outcome::Progress)
            }
            Step::CreateSq(i) => {
                let q = &self.io[i as usize];
                let (sq_phys, _) = q.ring_addresses().ok_or(NO_RINGS)?;
                let mut sqe = SubmissionEntry::new(admin::CREATE_SQ);
                sqe.prp1 = sq_phys;
                sqe.cdw10 = ((q.entries() as u32 - 1) << 16) | q.qid as u32;
                sqe.cdw11 = ((q.qid as u32) << 16) | 1; // its CQ, contiguous
                let Some(_) = self.admin_exchange(sqe)? else {
                    return Ok(Outcome::Waiting);
                };
                self.step = if (i as usize + 1) < self.io.len() {
                    Step::CreateCq(i + 1)
                } else {
                    Step::DoorbellBuffers
                };
                Ok(Outcome::Progress)
            }
            Step::DoorbellBuffers => self.configure_doorbell_buffers(),
            Step::ActiveNamespaces => {
                let scratch = self.scratch_phys()?;
                let mut sqe = SubmissionEntry::new(admin::IDENTIFY);
                sqe.prp1 = scratch;
                sqe.cdw10 = cns::ACTIVE_NAMESPACES;
                let Some(_) = self.admin_exchange(sqe)? else {
                    return Ok(Outcome::Waiting);
                };
                let nn = self.info.map_or(0, |i| i.namespace_count);
                let mut ids = heapless::Vec::new();
                let mut skipped = 0;
                let mut page = [0; PAGE_SIZE];
                for id in identify::active_namespaces(self.read_scratch(&mut page), nn) {
                    if ids.push(id?).is_err() {
                        skipped += 1;
                    }
                }
                if skipped > 0 {
                    warn!("nvme: {skipped} namespaces beyond the driver's limit are not served");
                }
                self.pending_nsids = ids;
                self.namespaces.clear();
                self.refused.clear();
                self.step = Step::NamespaceDescriptors(0);
                Ok(Outcome::Progress)
            }
            Step::NamespaceDescriptors(k) => self.namespace_descriptors(k),
            Step::AsyncEvents => {
                match self.admin_exchange(Self::async_event_config()) {
                    Ok(None) => return Ok(Outcome::Waiting),
                    Ok(Some(_)) => {}
                    // Events then come only as the controller's defaults
                    // allow; serving does not depend on them.
                    Err(Error::CommandFailed { status, .. }) => {
                        warn!("nvme: Asynchronous Event Configuration failed ({status})")
                    }
                    Err(e) => return Err(e),
                }
                self.arm_async_events();
                self.renew_namespace_stamp();
                self.state = State::Ready;
                self.step = Step::Ready;
                self.came_up = true;
                info!(
                    "nvme: ready, {} I/O queues of {} entries, {} namespaces ({} refused)",
                    self.io.len(),
                    self.queue_entries,
                    self.namespaces.len(),
                    self.refused.len()
                );
                Ok(Outcome::Progress)
            }
            Step::IdentifyNamespace(k) => {
                let Some(&nsid) = self.pending_nsids.get(k as usize) else {
                    self.step = Step::NamespaceDescriptors(k);
                    return Ok(Outcome::Progress);
                };
                let scratch = self.scratch_phys()?;
                let mut sqe = SubmissionEntry::new(admin::IDENTIFY);
                sqe.prp1 = scratch;
                sqe.nsid = nsid;
                sqe.cdw10 = cns::NAMESPACE;
                let Some(_) = self.admin_exchange(sqe)? else {
                    return Ok(Outcome::Waiting);
                };
                let mut page = [0; PAGE_SIZE];
                if let Some(info) = NamespaceInfo::parse(nsid, self.read_scratch(&mut page))? {
                    match info.refusal(self.max_transfer) {
                        Some(reason) => self.refuse_namespace(nsid, reason),
                        None => {
                            // At least 1: the block fits in max_transfer.
                            let max_blocks = (self.max_transfer >> info.block_shift).min(1 << 16);
                            // The list has at most MAX_NAMESPACES entries, as does this.
                            let _ = self.namespaces.push(Namespace { info, max_blocks });
                        }
                    }
                }
                self.step = Step::NamespaceDescriptors(k + 1);
                Ok(Outcome::Progress)
            }
            Step::Ready | Step::Finished => Ok(Outcome::Waiting),
            Step::Drain { deadline } => {
                let shadow = self.doorbell_buffers.as_ref();
                for q in self.io.iter_mut() {
                    q.publish(&self.platform, &self.regs, shadow);
                    q.reap(&self.platform, &self.regs, shadow);
                }
                if self.in_flight() == 0 || self.now() > deadline {
                    self.collect_detach_flushes();
                    self.step = Step::DeleteSq(0);
                    return Ok(Outcome::Progress);
                }
                Ok(Outcome::Waiting)
            }
            Step::DeleteSq(i) => {
                let Some(q) = self.io.get(i as usize) else {
                    self.step = Step::DeleteCq(0);
                    return Ok(Outcome::Progress);
                };
                let mut sqe = SubmissionEntry::new(admin::DELETE_SQ);
                sqe.cdw10 = q.qid as u32;
                if self.admin_exchange(sqe)?.is_none() {
                    return Ok(Outcome::Waiting);
                }
                self.step = Step::DeleteSq(i + 1);
                Ok(Outcome::Progress)
            }
            Step::DeleteCq(i) => {
                let Some(q) = self.io.get(i as usize) else {
                    self.step = Step::Shutdown;
                    return Ok(Outcome::Progress);
                };
                let mut sqe = SubmissionEntry::new(admin::DELETE_CQ);
                sqe.cdw10 = q.qid as u32;
                if self.admin_exchange(sqe)?.is_none() {
                    return Ok(Outcome::Waiting);
                }
                self.step = Step::DeleteCq(i + 1);
                Ok(Outcome::Progress)
            }
            Step::Shutdown => {
                let cc = self.regs.read32(regs::CC) & !Cc::SHN_MASK;
                self.regs.write32(regs::CC, cc | Cc::SHN_NORMAL.bits());
                let deadline = self.now() + self.config.shutdown_timeout;
                self.step = Step::WaitShutdown { deadline };
                Ok(Outcome::Progress)
            }
            Step::WaitShutdown { deadline } => {
                let csts = self.read_status();
                if csts.bits() != u32::MAX && csts.shutdown_complete() {
                    info!("nvme: controller shut down");
                    // Shut down is not disabled: a controller left enabled
                    // still holds its queue addresses, and whoever turns bus
                    // mastering on next (a new attach) would let it reach
                    // the memory returned now.
                    self.clear_enable();
                    self.begin_teardown(State::Detached, Error::Aborted);
                    return Ok(Outcome::Progress);
                }
                if self.now() > deadline {
                    return Err(Error::timeout(Wait::Shutdown, self.config.shutdown_timeout));
                }
                Ok(Outcome::Waiting)
            }
        }
    }

    /// A detach step failed with `e`. A queue deletion that fails does not
    /// skip the shutdown (cached writes would be lost): the detach goes on
    /// with CC.SHN and reports the error at the end. A shutdown that fails
    /// ends the controller as `Failed` with the error: the detach could not
    /// complete. Returns whether the detach goes on.
    fn detach_step_failed(&mut self, e: Error) -> bool {
        match self.step {
            Step::Drain { .. } | Step::DeleteSq(_) | Step::DeleteCq(_) => {
                warn!(
                    "nvme: detach: {:?} failed ({e}), shutting down anyway",
                    self.step
                );
                self.detach_error.get_or_insert(e);
                self.abandon_admin_command();
                self.step = Step::Shutdown;
                true
            }
            _ => {
                warn!("nvme: detach could not shut the controller down: {e}");
                self.fail(e);
                false
            }
        }
    }

    /// Learns the command set of the `k`th active namespace from its
    /// Namespace Identification Descriptor list (Identify CNS 03h) before
    /// anything else is read of it: only NVM namespaces go on to Identify
    /// Namespace. Past the last namespace the controller is ready.
    fn namespace_descriptors(&mut self, k: u16) -> Result<Outcome> {
        let Some(&nsid) = self.pending_nsids.get(k as usize) else {
            self.step = Step::AsyncEvents;
            return Ok(Outcome::Progress);
        };
        let mut sqe = SubmissionEntry::new(admin::IDENTIFY);
        sqe.prp1 = self.scratch_phys()?;
        sqe.nsid = nsid;
        sqe.cdw10 = cns::NAMESPACE_DESCRIPTORS;
        let mut page = [0; PAGE_SIZE];
        let refusal = match self.admin_exchange(sqe) {
            Ok(None) => return Ok(Outcome::Waiting),
            Ok(Some(_)) => match identify::namespace_command_set(self.read_scratch(&mut page)) {
                Ok(identify::csi::NVM) => None,
                Ok(csi) => Some(NamespaceRefusal::CommandSet { csi }),
                Err(reason) => Some(reason),
            },
            Err(Error::CommandFailed { status, .. })
                if status.sct == sct::GENERIC && status.sc == sc::INVALID_FIELD =>
            {
                // Before NVMe 1.3 there was no such list and no command set
                // but NVM.
                None
            }
            Err(Error::CommandFailed { status, .. }) => {
                Some(NamespaceRefusal::DescriptorListFailed { status })
            }
            Err(e) => return Err(e),
        };
        self.step = match refusal {
            None => Step::IdentifyNamespace(k),
            Some(reason) => {
                self.refuse_namespace(nsid, reason);
                Step::NamespaceDescriptors(k + 1)
            }
        };
        Ok(Outcome::Progress)
    }

    fn refuse_namespace(&mut self, nsid: u32, reason: NamespaceRefusal) {
        warn!("nvme: namespace {nsid} not served: {reason}");
        // The list has at most MAX_NAMESPACES entries, as does this.
        let _ = self.refused.push((nsid, reason));
    }

    /// Doorbell Buffer Config (admin opcode 0x7C, OACS bit 8) when the
    /// embedder wants shadow doorbells: I/O queues then announce tails and
    /// heads in memory and write MMIO only when EventIdx asks for it. The
    /// admin queue keeps its MMIO doorbells. A controller that refuses the
    /// command keeps working with MMIO doorbells.
    fn configure_doorbell_buffers(&mut self) -> Result<Outcome> {
        let supported = self.info.is_some_and(|i| i.supports_shadow_doorbells());
        let last = regs::cq_head_doorbell(self.io.len() as u16, self.cap.doorbell_stride_exp());
        if !self.config.shadow_doorbells || !supported || !DoorbellBuffers::covers(last) {
            self.release_doorbell_buffers();
            self.step = Step::ActiveNamespaces;
            return Ok(Outcome::Progress);
        }
        if self.admin_pending.is_none() {
            // About to issue the command: fresh, zeroed pages (tails and
            // heads of the new queues are 0).
            match self.doorbell_buffers.as_mut() {
                Some(buffers) => buffers.clear(&self.platform),
                None => match DoorbellBuffers::alloc(&self.platform) {
                    Ok(buffers) => self.doorbell_buffers = Some(buffers),
                    Err(e) => {
                        warn!("nvme: no memory for shadow doorbells ({e}), using MMIO doorbells");
                        self.step = Step::ActiveNamespaces;
                        return Ok(Outcome::Progress);
                    }
                },
            }
        }
        let Some((shadow, event_idx)) = self.doorbell_buffers.as_ref().map(|b| b.addresses())
        else {
            return Err(Error::Internal {
                what: "shadow doorbell pages missing",
            });
        };
        let mut sqe = SubmissionEntry::new(admin::DOORBELL_BUFFER_CONFIG);
        sqe.prp1 = shadow;
        sqe.prp2 = event_idx;
        match self.admin_exchange(sqe) {
            Ok(None) => return Ok(Outcome::Waiting),
            Ok(Some(_)) => {
                for q in self.io.iter_mut() {
                    q.use_shadow_doorbells();
                }
                info!("nvme: shadow doorbells on");
            }
            Err(Error::CommandFailed { status, .. }) => {
                warn!("nvme: Doorbell Buffer Config failed ({status}), using MMIO doorbells");
                self.release_doorbell_buffers();
            }
            Err(e) => return Err(e),
        }
        self.step = Step::ActiveNamespaces;
        Ok(Outcome::Progress)
    }

    fn release_doorbell_buffers(&mut self) {
        if let Some(buffers) = self.doorbell_buffers.take() {
            buffers.release(&self.platform);
        }
    }

    fn start_reset(&mut self) -> Result<Outcome> {
        let cap = Cap(self.regs.read64(regs::CAP));
        validate_cap(cap, self.regs_len, QUEUES)?;
        self.cap = cap;
        self.state = State::Resetting;
        self.clear_subsystem_reset();
        // Firmware may have left the controller enabled with its own queues:
        // always start from a reset.
        let cc = self.regs.read32(regs::CC);
        if cc & Cc::EN.bits() != 0 {
            self.regs.write32(regs::CC, cc & !Cc::EN.bits());
        }
        let deadline = self.now() + self.ready_timeout();
        self.step = Step::WaitDisabled { deadline };
        Ok(Outcome::Progress)
    }

    fn enable(&mut self) -> Result<()> {
        // The controller was seen disabled: only now may it reach memory.
        if !self.link.allow_dma() {
            return Err(Error::DeviceUnsupported {
                what: "bus mastering (the command register ignores it)",
            });
        }
        if self.scratch.is_none() {
            self.scratch = Some(SharedMemory::alloc(&self.platform, PAGE_SIZE, PAGE_SIZE)?);
        }
        let dstrd = self.cap.doorbell_stride_exp();
        let entries = (ADMIN_QUEUE_DEPTH as u32).min(self.cap.max_queue_entries()) as u16;
        let (asq, acq) = self.admin.attach_rings(&self.platform, entries, dstrd)?;
        self.regs
            .write32(regs::AQA, regs::aqa_value(entries, entries));
        self.regs.write64(regs::ASQ, asq);
        self.regs.write64(regs::ACQ, acq);
        // Interrupts are not used: mask them all.
        self.regs.write32(regs::INTMS, u32::MAX);
        self.regs.write32(regs::CC, Cc::enable_value(0));
        self.state = State::Enabling;
        let deadline = self.now() + self.ready_timeout();
        self.step = Step::WaitEnabled { deadline };
        Ok(())
    }

    fn setup_io_queues(&mut self, count: u16) -> Result<()> {
        // A queue needs two entries (one always stays empty); a smaller
        // request is the embedder's, clamped like the other settings, so
        // only the controller's CAP.MQES can make this fail.
        let entries = (self.config.queue_depth.max(2) as u32)
            .min(self.cap.max_queue_entries())
            .min(DEPTH as u32) as u16;
        if entries < 2 {
            return Err(Error::BadDeviceValue {
                field: "CAP.MQES",
                value: self.cap.max_queue_entries() as u64 - 1,
            });
        }
        let dstrd = self.cap.doorbell_stride_exp();
        let stride = prp::list_stride(self.max_transfer as usize);
        if self.io.len() != count as usize || self.queue_entries != entries {
            // After a reset the old command tables may still hold commands
            // the reset failed, waiting for the caller's poll (with their
            // buffers): they must not be dropped with the old geometry.
            if self.io.iter().any(|q| !q.tracker.is_idle()) {
                return Err(Error::BadDeviceValue {
                    field: "queue geometry after reset",
                    value: ((count as u64) << 16) | entries as u64,
                });
            }
            for q in self.io.iter_mut() {
                q.release(&self.platform);
            }
            self.io.clear();
            for qid in 1..=count {
                // count <= QUEUES, so this always fits.
                let _ = self.io.push(QueuePair::new(qid, entries));
            }
        }
        self.queue_entries = entries;
        for q in self.io.iter_mut() {
            q.attach_rings(&self.platform, entries, dstrd, stride)?;
        }
        Ok(())
    }

    fn check_deadline(&self, deadline: crate::Instant, what: Wait) -> Result<Outcome> {
        let now = self.now();
        if now > deadline {
            let waited = self.ready_timeout().max(self.config.admin_timeout);
            return Err(Error::timeout(what, waited));
        }
        Ok(Outcome::Waiting)
    }

    fn scratch_phys(&self) -> Result<u64> {
        self.scratch
            .as_ref()
            .map(|s| s.phys().as_u64())
            .ok_or(Error::Internal {
                what: "identify page missing",
            })
    }

    /// Copies the scratch page into `page` and returns the bytes copied:
    /// identify data is parsed from the copy, which the device cannot change.
    fn read_scratch<'a>(&self, page: &'a mut [u8; PAGE_SIZE]) -> &'a [u8] {
        let n = self.scratch.as_ref().map_or(0, |s| {
            // What the device wrote, not stale lines of an earlier command.
            s.invalidate(&self.platform, 0, PAGE_SIZE);
            s.copy_out(0, page)
        });
        &page[..n]
    }

    /// Submits `sqe` on the admin queue if no admin command is outstanding,
    /// otherwise polls for the outstanding one. `Ok(Some(dw0))` once it
    /// completed successfully, `Ok(None)` while waiting.
    pub(crate) fn admin_exchange(&mut self, sqe: SubmissionEntry) -> Result<Option<u32>> {
        let now = self.now();
        let Some(ticket) = self.admin_pending else {
            self.admin_pending = Some(self.admin.submit(&self.platform, &self.regs, sqe, now)?);
            return Ok(None);
        };
        match self.admin.poll(&self.platform, &self.regs, ticket, now) {
            None => Ok(None),
            Some(Ok(dw0)) => {
                self.admin_pending = None;
                Ok(Some(dw0))
            }
            Some(Err(e)) => {
                self.admin_pending = None;
                if matches!(e, Error::Timeout { .. }) {
                    let csts = self.read_status();
                    if csts.bits() == u32::MAX || csts.contains(Csts::CFS) {
                        return Err(Error::ControllerFailed);
                    }
                }
                Err(e)
            }
        }
    }
}

/// Errors that another reset cannot cure: the device is unusable as it is.
fn is_permanent(error: Error) -> bool {
    matches!(
        error,
        Error::BadDeviceValue { .. }
            | Error::DeviceUnsupported { .. }
            | Error::OutOfDmaMemory { .. }
            | Error::MapFailed { .. }
            | Error::Internal { .. }
    )
}

/// Checks CAP for what the driver relies on.
fn validate_cap(cap: Cap, regs_len: usize, queues: usize) -> Result<()> {
    if cap.0 == u64::MAX {
        return Err(Error::DeviceRemoved);
    }
    if !cap.nvm_command_set() {
        return Err(Error::DeviceUnsupported {
            what: "NVM command set",
        });
    }
    if cap.mpsmin() != 0 {
        // The driver uses 4 KiB memory pages.
        return Err(Error::BadDeviceValue {
            field: "CAP.MPSMIN",
            value: cap.mpsmin() as u64,
        });
    }
    if cap.mpsmax() < cap.mpsmin() {
        return Err(Error::BadDeviceValue {
            field: "CAP.MPSMAX",
            value: cap.mpsmax() as u64,
        });
    }
    if cap.max_queue_entries() < 2 {
        return Err(Error::BadDeviceValue {
            field: "CAP.MQES",
            value: cap.max_queue_entries() as u64 - 1,
        });
    }
    // Every doorbell the driver may ring must lie inside the mapped BAR.
    let last = regs::cq_head_doorbell(queues as u16, cap.doorbell_stride_exp()) + 4;
    if last > regs_len {
        return Err(Error::BadDeviceValue {
            field: "CAP.DSTRD",
            value: cap.doorbell_stride_exp() as u64,
        });
    }
    Ok(())
}

/// Bytes one command may carry: the embedder's choice, bounded by MDTS (a
/// power of two of 4 KiB pages, 0 = unlimited) and the driver's own limit.
fn transfer_limit(wanted: u32, mdts: u8) -> u32 {
    let by_mdts = if mdts == 0 || mdts > 20 {
        u64::MAX
    } else {
        (PAGE_SIZE as u64) << mdts
    };
    let bytes = (wanted as u64)
        .min(by_mdts)
        .min(MAX_TRANSFER_LIMIT as u64)
        .max(PAGE_SIZE as u64);
    bytes as u32 & !(PAGE_SIZE as u32 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_limit_follows_mdts() {
        assert_eq!(transfer_limit(1 << 20, 0), 1 << 20);
        assert_eq!(transfer_limit(1 << 20, 5), 128 << 10);
        assert_eq!(transfer_limit(64 << 20, 0), MAX_TRANSFER_LIMIT);
        assert_eq!(transfer_limit(1000, 0), 4096);
        assert_eq!(transfer_limit(1 << 20, 255), 1 << 20);
    }
}
