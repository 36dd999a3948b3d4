//! The controller's lifecycle state machine: `advance` runs the step the
//! lifecycle is at; the bring-up steps (reset, enable, identify, create
//! queues, discover namespaces) are here, the orderly detach's in `detach`.

use log::{info, warn};

use crate::error::{Error, Result, Wait};
use crate::link::{DeviceLink, Presence};
use crate::nvme::admin::ADMIN_QUEUE_DEPTH;
use crate::nvme::command::queue_fields::{CQID, IEN, NCQ, NSQ, PC, QID, QSIZE};
use crate::nvme::command::{admin, cns, feature, sc, sct, SubmissionEntry};
use crate::nvme::controller::{Controller, MAX_TRANSFER_LIMIT};
use crate::nvme::identify::{self, ControllerInfo, NamespaceInfo, NamespaceRefusal};
use crate::nvme::lifecycle::{Outcome, State, Step};
use crate::nvme::namespaces::Namespace;
use crate::nvme::prp::{self, PAGE_SIZE};
use crate::nvme::queue::DoorbellBuffers;
use crate::nvme::regs::{self, Cap, Cc, Csts};
use crate::platform::{Instant, Platform, RegisterAccess};
use spin::Mutex;

/// A queue whose rings were allocated at the step before has none.
const NO_RINGS: Error = Error::Internal {
    what: "queue without rings",
};

/// Most step transitions one `advance` call makes: bounds the work per tick.
const STEPS_PER_ADVANCE: usize = 16;

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
                    if self.owned.link.presence() != Presence::Present {
                        // Gone, not failed: whatever the step saw was the
                        // absence of the device.
                        self.remove();
                        return Err(Error::DeviceRemoved);
                    }
                    if self.owned.lifecycle.state() == State::Detaching {
                        if self.detach_step_failed(e) {
                            continue;
                        }
                        return Err(e);
                    }
                    warn!(
                        "nvme: controller failed during {:?}: {}",
                        self.owned.lifecycle.step(),
                        e
                    );
                    if is_permanent(e) || self.owned.recovery.exhausted() {
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
        match self.owned.lifecycle.state() {
            State::Failed | State::Removed => Err(self
                .owned
                .lifecycle
                .failure()
                .unwrap_or(Error::ControllerFailed)),
            s => Ok(s),
        }
    }

    fn step(&mut self) -> Result<Outcome> {
        match self.owned.lifecycle.step() {
            Step::Backoff { until } => self.backoff_step(until),
            Step::Start => self.start_reset(),
            Step::WaitDisabled { deadline } => self.wait_disabled(deadline),
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
            Step::WaitEnabled { deadline } => self.wait_enabled(deadline),
            Step::IdentifyController => self.identify_controller(),
            Step::SetQueueCount => self.set_queue_count(),
            Step::CreateCq(i) => self.create_cq(i),
            Step::CreateSq(i) => self.create_sq(i),
            Step::DoorbellBuffers => self.configure_doorbell_buffers(),
            Step::ActiveNamespaces => self.active_namespaces(),
            Step::NamespaceDescriptors(k) => self.namespace_descriptors(k),
            Step::AsyncEvents => self.enable_async_events(),
            Step::IdentifyNamespace(k) => self.identify_namespace(k),
            Step::Ready | Step::Finished => Ok(Outcome::Waiting),
            Step::Drain { deadline } => self.drain_step(deadline),
            Step::DeleteSq(i) => self.delete_sq(i),
            Step::DeleteCq(i) => self.delete_cq(i),
            Step::Shutdown => self.shutdown(),
            Step::WaitShutdown { deadline } => self.wait_shutdown(deadline),
        }
    }

    /// Waits out a reset's backoff.
    fn backoff_step(&mut self, until: Instant) -> Result<Outcome> {
        if self.now() < until {
            return Ok(Outcome::Waiting);
        }
        self.owned.lifecycle.go(Step::Start);
        Ok(Outcome::Progress)
    }

    /// Waits for proof that the controller is disabled, then enables it.
    fn wait_disabled(&mut self, deadline: Instant) -> Result<Outcome> {
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

    /// Waits for CSTS.RDY = 1.
    fn wait_enabled(&mut self, deadline: Instant) -> Result<Outcome> {
        let csts = self.read_status();
        if csts.bits() == u32::MAX || csts.contains(Csts::CFS) {
            return Err(Error::ControllerFailed);
        }
        if csts.contains(Csts::RDY) {
            self.owned
                .lifecycle
                .enter(State::Initializing, Step::IdentifyController);
            return Ok(Outcome::Progress);
        }
        self.check_deadline(deadline, Wait::Enable)
    }

    /// Identify Controller: the limits the rest of bring-up uses.
    fn identify_controller(&mut self) -> Result<Outcome> {
        let scratch = self.scratch_phys()?;
        let mut sqe = SubmissionEntry::new(admin::IDENTIFY);
        sqe.prp1 = scratch;
        sqe.cdw10 = cns::CONTROLLER;
        let Some(_) = self.admin_exchange(sqe)? else {
            return Ok(Outcome::Waiting);
        };
        let mut page = [0; PAGE_SIZE];
        let info = ControllerInfo::parse(self.read_scratch(&mut page))?;
        let max_transfer = transfer_limit(self.shared.config.max_transfer, info.mdts);
        info!(
            "nvme: controller {} {} fw {} mdts {} KiB, {} namespaces",
            info.model,
            info.serial,
            info.firmware,
            max_transfer >> 10,
            info.namespace_count
        );
        self.shared.set_identity(info, max_transfer);
        self.owned.lifecycle.go(Step::SetQueueCount);
        Ok(Outcome::Progress)
    }

    /// Number of Queues, then the I/O queue pairs' memory.
    fn set_queue_count(&mut self) -> Result<Outcome> {
        let wanted = self.shared.config.io_queues.clamp(1, QUEUES as u16);
        let mut sqe = SubmissionEntry::new(admin::SET_FEATURES);
        sqe.cdw10 = feature::NUMBER_OF_QUEUES;
        sqe.cdw11 = NSQ.of(wanted as u32 - 1) | NCQ.of(wanted as u32 - 1);
        let Some(dw0) = self.admin_exchange(sqe)? else {
            return Ok(Outcome::Waiting);
        };
        // Both counts are 0-based; a controller may grant more or fewer.
        let granted_sq = NSQ.get(dw0) + 1;
        let granted_cq = NCQ.get(dw0) + 1;
        let count = (wanted as u32).min(granted_sq).min(granted_cq) as u16;
        self.setup_io_queues(count)?;
        self.owned.lifecycle.go(Step::CreateCq(0));
        Ok(Outcome::Progress)
    }

    /// Create I/O Completion Queue of the `i`th queue pair.
    fn create_cq(&mut self, i: u16) -> Result<Outcome> {
        let q = self.shared.io[i as usize].get_mut();
        let (_, cq_phys) = q.ring_addresses().ok_or(NO_RINGS)?;
        let mut sqe = SubmissionEntry::new(admin::CREATE_CQ);
        sqe.prp1 = cq_phys;
        sqe.cdw10 = QSIZE.of(q.entries() as u32 - 1) | QID.of(q.qid as u32);
        // Interrupts off: completions are polled.
        sqe.cdw11 = PC.of(1) | IEN.of(0);
        let Some(_) = self.admin_exchange(sqe)? else {
            return Ok(Outcome::Waiting);
        };
        self.owned.lifecycle.go(Step::CreateSq(i));
        Ok(Outcome::Progress)
    }

    /// Create I/O Submission Queue of the `i`th queue pair.
    fn create_sq(&mut self, i: u16) -> Result<Outcome> {
        let q = self.shared.io[i as usize].get_mut();
        let (sq_phys, _) = q.ring_addresses().ok_or(NO_RINGS)?;
        let mut sqe = SubmissionEntry::new(admin::CREATE_SQ);
        sqe.prp1 = sq_phys;
        sqe.cdw10 = QSIZE.of(q.entries() as u32 - 1) | QID.of(q.qid as u32);
        // Each SQ posts to the CQ of the same id.
        sqe.cdw11 = CQID.of(q.qid as u32) | PC.of(1);
        let Some(_) = self.admin_exchange(sqe)? else {
            return Ok(Outcome::Waiting);
        };
        let next = if (i as usize + 1) < self.shared.io.len() {
            Step::CreateCq(i + 1)
        } else {
            Step::DoorbellBuffers
        };
        self.owned.lifecycle.go(next);
        Ok(Outcome::Progress)
    }

    /// The active namespace list.
    fn active_namespaces(&mut self) -> Result<Outcome> {
        let scratch = self.scratch_phys()?;
        let mut sqe = SubmissionEntry::new(admin::IDENTIFY);
        sqe.prp1 = scratch;
        sqe.cdw10 = cns::ACTIVE_NAMESPACES;
        let Some(_) = self.admin_exchange(sqe)? else {
            return Ok(Outcome::Waiting);
        };
        let nn = self.shared.info.map_or(0, |i| i.namespace_count);
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
        self.owned.discovery.begin(ids);
        self.shared.namespaces.forget_all();
        self.owned.lifecycle.go(Step::NamespaceDescriptors(0));
        Ok(Outcome::Progress)
    }

    /// Asynchronous Event Configuration, the event requests armed: serving.
    fn enable_async_events(&mut self) -> Result<Outcome> {
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
        self.owned.lifecycle.become_ready();
        info!(
            "nvme: ready, {} I/O queues of {} entries, {} namespaces ({} refused)",
            self.shared.io.len(),
            self.shared.queue_entries,
            self.shared.namespaces.list().len(),
            self.owned.discovery.refused().len()
        );
        Ok(Outcome::Progress)
    }

    /// Identify Namespace of the `k`th active namespace (an NVM one).
    fn identify_namespace(&mut self, k: u16) -> Result<Outcome> {
        let Some(nsid) = self.owned.discovery.pending(k) else {
            self.owned.lifecycle.go(Step::NamespaceDescriptors(k));
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
            match info.refusal(self.shared.max_transfer) {
                Some(reason) => self.refuse_namespace(nsid, reason),
                None => {
                    // At least 1: the block fits in max_transfer.
                    let max_blocks = (self.shared.max_transfer >> info.block_shift).min(1 << 16);
                    // The scan has at most MAX_NAMESPACES, as does the list.
                    self.shared.namespaces.add(Namespace { info, max_blocks });
                }
            }
        }
        self.owned.lifecycle.go(Step::NamespaceDescriptors(k + 1));
        Ok(Outcome::Progress)
    }

    /// Learns the command set of the `k`th active namespace from its
    /// Namespace Identification Descriptor list (Identify CNS 03h) before
    /// anything else is read of it: only NVM namespaces go on to Identify
    /// Namespace. Past the last namespace the controller is ready.
    fn namespace_descriptors(&mut self, k: u16) -> Result<Outcome> {
        let Some(nsid) = self.owned.discovery.pending(k) else {
            self.owned.lifecycle.go(Step::AsyncEvents);
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
        let next = match refusal {
            None => Step::IdentifyNamespace(k),
            Some(reason) => {
                self.refuse_namespace(nsid, reason);
                Step::NamespaceDescriptors(k + 1)
            }
        };
        self.owned.lifecycle.go(next);
        Ok(Outcome::Progress)
    }

    fn refuse_namespace(&mut self, nsid: u32, reason: NamespaceRefusal) {
        warn!("nvme: namespace {nsid} not served: {reason}");
        self.owned.discovery.refuse(nsid, reason);
    }

    /// Doorbell Buffer Config (admin opcode 0x7C, OACS bit 8) when the
    /// embedder wants shadow doorbells: I/O queues then announce tails and
    /// heads in memory and write MMIO only when EventIdx asks for it. The
    /// admin queue keeps its MMIO doorbells. A controller that refuses the
    /// command keeps working with MMIO doorbells.
    fn configure_doorbell_buffers(&mut self) -> Result<Outcome> {
        let supported = self
            .shared
            .info
            .is_some_and(|i| i.supports_shadow_doorbells());
        let last = regs::cq_head_doorbell(
            self.shared.io.len() as u16,
            self.shared.cap.doorbell_stride_exp(),
        );
        if !self.shared.config.shadow_doorbells || !supported || !DoorbellBuffers::covers(last) {
            self.release_doorbell_buffers();
            self.owned.lifecycle.go(Step::ActiveNamespaces);
            return Ok(Outcome::Progress);
        }
        if !self.owned.admin.exchanging() {
            // About to issue the command: fresh, zeroed pages (tails and
            // heads of the new queues are 0).
            if let Err(e) = self.owned.pages.fresh_doorbells(&self.shared.platform) {
                warn!("nvme: no memory for shadow doorbells ({e}), using MMIO doorbells");
                self.owned.lifecycle.go(Step::ActiveNamespaces);
                return Ok(Outcome::Progress);
            }
        }
        let Some((shadow, event_idx)) = self.owned.pages.doorbells().map(|b| b.addresses()) else {
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
                for q in self.shared.io.iter_mut().map(Mutex::get_mut) {
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
        self.owned.lifecycle.go(Step::ActiveNamespaces);
        Ok(Outcome::Progress)
    }

    fn release_doorbell_buffers(&mut self) {
        self.owned.pages.release_doorbells(&self.shared.platform);
    }

    fn start_reset(&mut self) -> Result<Outcome> {
        let cap = Cap(self.shared.regs.read64(regs::CAP));
        validate_cap(cap, self.shared.regs_len, QUEUES)?;
        self.shared.set_cap(cap);
        self.clear_subsystem_reset();
        // Firmware may have left the controller enabled with its own queues:
        // always start from a reset.
        let cc = self.shared.regs.read32(regs::CC);
        if cc & Cc::EN.bits() != 0 {
            self.shared.regs.write32(regs::CC, cc & !Cc::EN.bits());
        }
        let deadline = self.now() + self.ready_timeout();
        self.owned
            .lifecycle
            .enter(State::Resetting, Step::WaitDisabled { deadline });
        Ok(Outcome::Progress)
    }

    fn enable(&mut self) -> Result<()> {
        // The controller was seen disabled: only now may it reach memory.
        if !self.owned.link.allow_dma() {
            return Err(Error::DeviceUnsupported {
                what: "bus mastering (the command register ignores it)",
            });
        }
        self.owned.pages.ensure_scratch(&self.shared.platform)?;
        let dstrd = self.shared.cap.doorbell_stride_exp();
        let entries = (ADMIN_QUEUE_DEPTH as u32).min(self.shared.cap.max_queue_entries()) as u16;
        let (asq, acq) = self
            .owned
            .admin
            .attach_rings(&self.shared.platform, entries, dstrd)?;
        self.shared
            .regs
            .write32(regs::AQA, regs::aqa_value(entries, entries));
        self.shared.regs.write64(regs::ASQ, asq);
        self.shared.regs.write64(regs::ACQ, acq);
        // Interrupts are not used: mask them all.
        self.shared.regs.write32(regs::INTMS, u32::MAX);
        self.shared.regs.write32(regs::CC, Cc::enable_value(0));
        let deadline = self.now() + self.ready_timeout();
        self.owned
            .lifecycle
            .enter(State::Enabling, Step::WaitEnabled { deadline });
        Ok(())
    }

    fn setup_io_queues(&mut self, count: u16) -> Result<()> {
        // A queue needs two entries (one always stays empty); a smaller
        // request is the embedder's, clamped like the other settings, so
        // only the controller's CAP.MQES can make this fail.
        let entries = (self.shared.config.queue_depth.max(2) as u32)
            .min(self.shared.cap.max_queue_entries())
            .min(DEPTH as u32) as u16;
        if entries < 2 {
            return Err(Error::BadDeviceValue {
                field: "CAP.MQES",
                value: self.shared.cap.max_queue_entries() as u64 - 1,
            });
        }
        let dstrd = self.shared.cap.doorbell_stride_exp();
        let stride = prp::list_stride(self.shared.max_transfer as usize);
        self.shared.build_queues(count, entries, dstrd, stride)
    }

    fn check_deadline(&self, deadline: crate::Instant, what: Wait) -> Result<Outcome> {
        let now = self.now();
        if now > deadline {
            let waited = self.ready_timeout().max(self.shared.config.admin_timeout);
            return Err(Error::timeout(what, waited));
        }
        Ok(Outcome::Waiting)
    }

    fn scratch_phys(&self) -> Result<u64> {
        self.owned.pages.scratch_address()
    }

    /// See `OwnPages::read_scratch`.
    fn read_scratch<'a>(&self, page: &'a mut [u8; PAGE_SIZE]) -> &'a [u8] {
        self.owned.pages.read_scratch(&self.shared.platform, page)
    }

    /// The lifecycle's admin command (see `AdminChannel::exchange`); a
    /// timeout on a controller that reports fatal status (or no longer
    /// answers) is that failure.
    pub(crate) fn admin_exchange(&mut self, sqe: SubmissionEntry) -> Result<Option<u32>> {
        let now = self.now();
        let result = self
            .owned
            .admin
            .exchange(&self.shared.platform, &self.shared.regs, sqe, now);
        if let Err(Error::Timeout { .. }) = result {
            let csts = self.read_status();
            if csts.bits() == u32::MAX || csts.contains(Csts::CFS) {
                return Err(Error::ControllerFailed);
            }
        }
        result
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
