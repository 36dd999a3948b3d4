//! One controller this driver serves: the bare-nvme controller over its PCI
//! I/O, the namespaces it publishes, the periodic tick and the
//! ExitBootServices stop.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ffi::c_void;
use core::ptr;
use core::time::Duration;

use bare_nvme::{ControllerConfig, DmaRegion, Error, Platform, RegisterAccess, State};
use uefi_raw::table::boot::{EventType, TimerDelay, Tpl};
use uefi_raw::{Event, Handle, Status};

use crate::link::PciIoLink;
use crate::namespace::{Backend, Namespace};
use crate::pci_io::{self, AttrOp, PciIo};
use crate::platform::{Bar0, UefiPlatform};
use crate::requests::{Request, Requests};
use crate::{clock, efi, say};

pub use crate::link::Nvme;

/// Bytes of the bounce buffer for callers' buffers that cannot be mapped
/// for the device (not dword aligned, or refused by `Map`).
const BOUNCE_BYTES: usize = 128 << 10;
/// Bytes of BAR 0 the driver may touch: registers and the doorbells of the
/// admin and one I/O queue pair at any doorbell stride up to 512 bytes.
const BAR0_BYTES: usize = 0x2000;
/// The tick period, in 100 ns units (10 ms).
const TICK_PERIOD: u64 = 100_000;

/// NVMe registers the ExitBootServices stop touches.
const REG_CAP: usize = 0x00;
const REG_CC: usize = 0x14;
const REG_CSTS: usize = 0x1c;

/// A served controller.
pub struct Device {
    /// The controller handle (the PCI function's).
    pub handle: Handle,
    /// The driver binding's handle (the owner of every open).
    pub binding: Handle,
    pci: PciIo,
    nvme: Nvme,
    bounce: Option<DmaRegion>,
    /// The published namespaces.
    pub namespaces: Vec<Box<Namespace>>,
    tick: Event,
    exit_boot: Event,
    original_attributes: u64,
    /// Set once a removal or failure was seen: BlockIo says `EFI_NO_MEDIA`.
    gone: bool,
    /// Blocks read and written through BlockIo.
    pub blocks_read: u64,
    /// See `blocks_read`.
    pub blocks_written: u64,
    /// Ticks the timer event ran.
    ticks: u64,
    /// BlockIo2 requests in flight.
    requests: Requests,
    /// BlockIo2 requests completed from the tick.
    pub requests_completed: u64,
}

impl Device {
    /// Brings up the controller behind `pci` (already opened BY_DRIVER) and
    /// publishes its namespaces under `parent_path`.
    pub fn start(
        handle: Handle,
        binding: Handle,
        pci: PciIo,
        parent_path: &[u8],
    ) -> Result<Box<Device>, Status> {
        let original_attributes = pci.attributes(AttrOp::Get, 0).unwrap_or(0);
        let supported = pci.attributes(AttrOp::Supported, 0).unwrap_or(0);
        let wanted = supported
            & (pci_io::ATTR_MEMORY | pci_io::ATTR_BUS_MASTER | pci_io::ATTR_DUAL_ADDRESS_CYCLE);
        pci.attributes(AttrOp::Enable, wanted)?;
        let config = ControllerConfig::default().io_queues(1).queue_depth(64);
        let nvme = Nvme::new(
            UefiPlatform::new(pci),
            PciIoLink(pci),
            Bar0(pci),
            BAR0_BYTES,
            config,
        );
        let mut device = Box::new(Device {
            handle,
            binding,
            pci,
            nvme,
            bounce: None,
            namespaces: Vec::new(),
            tick: ptr::null_mut(),
            exit_boot: ptr::null_mut(),
            original_attributes,
            gone: false,
            blocks_read: 0,
            blocks_written: 0,
            ticks: 0,
            requests: Requests::default(),
            requests_completed: 0,
        });
        let start = clock::now();
        if let Err(e) = device.nvme.bring_up() {
            say!("uefi: bring-up failed: {e}");
            device.release();
            return Err(Status::DEVICE_ERROR);
        }
        device.bounce = device.nvme.platform().dma_alloc(BOUNCE_BYTES, 4096);
        if device.bounce.is_none() {
            device.release();
            return Err(Status::OUT_OF_RESOURCES);
        }
        if let Some(info) = device.nvme.info() {
            say!(
                "uefi: controller ready in {} ms: {} serial {}",
                (clock::now() - start).as_millis(),
                info.model,
                info.serial
            );
        }
        let me: *mut Device = &mut *device;
        let found: Vec<_> = device
            .nvme
            .namespaces()
            .iter()
            .map(|n| (n.id(), n.info.eui64, n.block_size(), n.info.blocks))
            .collect();
        for (nsid, eui64, block_size, blocks) in found {
            let mut ns = Namespace::new(
                me as *mut dyn Backend,
                nsid,
                eui64,
                block_size,
                blocks,
                parent_path,
            );
            match ns.install(handle, binding) {
                Ok(()) => {
                    say!("uefi: namespace {nsid}: {blocks} blocks of {block_size} bytes");
                    device.namespaces.push(ns);
                }
                Err(s) => say!("uefi: namespace {nsid} not published: {s:?}"),
            }
        }
        if let Err(s) = device.arm_events() {
            // Nothing may keep a pointer to the device it frees: the
            // namespaces go, then `stop` closes whatever event was made.
            device.withdraw_namespaces();
            device.stop();
            return Err(s);
        }
        Ok(device)
    }

    /// Uninstalls every namespace (on a failed start). One that someone
    /// still holds cannot be freed: it is leaked, so its interfaces stay
    /// valid (its calls then fail: the controller is detached).
    pub fn withdraw_namespaces(&mut self) {
        let (handle, binding) = (self.handle, self.binding);
        for mut ns in self.namespaces.drain(..) {
            if ns.uninstall(handle, binding).is_err() {
                ns.lose_media();
                Box::leak(ns);
            }
        }
    }

    /// The periodic tick (TPL_CALLBACK) and the ExitBootServices stop.
    fn arm_events(&mut self) -> Result<(), Status> {
        let ctx: *mut c_void = (self as *mut Device).cast();
        let bs = efi::boot();
        // SAFETY: `ctx` is this boxed device, which closes both events
        // before it is freed (`stop`).
        unsafe {
            let s = (bs.create_event)(
                EventType::TIMER | EventType::NOTIFY_SIGNAL,
                Tpl::CALLBACK,
                Some(on_tick),
                ctx,
                &mut self.tick,
            );
            if !s.is_success() {
                return Err(s);
            }
            let s = (bs.set_timer)(self.tick, TimerDelay::PERIODIC, TICK_PERIOD);
            if !s.is_success() {
                return Err(s);
            }
            let s = (bs.create_event)(
                EventType::SIGNAL_EXIT_BOOT_SERVICES,
                Tpl::CALLBACK,
                Some(on_exit_boot_services),
                ctx,
                &mut self.exit_boot,
            );
            if !s.is_success() {
                return Err(s);
            }
        }
        Ok(())
    }

    /// Stops the events, detaches the controller in order (drain, delete
    /// queues, shut down, DMA off, memory back) and restores the function's
    /// attributes. The namespaces must be gone already.
    pub fn stop(mut self: Box<Self>) {
        let bs = efi::boot();
        for event in [self.tick, self.exit_boot] {
            if !event.is_null() {
                // SAFETY: events this device created; closing cancels them.
                let _ = unsafe { (bs.close_event)(event) };
            }
        }
        self.tick = ptr::null_mut();
        self.exit_boot = ptr::null_mut();
        let start = clock::now();
        let result = self.nvme.detach();
        // Every command completed or was aborted; the requests still here
        // complete now, if the device's DMA is proven stopped (else their
        // buffers stay lent to it, and their events are never signalled).
        self.requests.reap(&mut self.nvme);
        let stopped = result.is_ok() || self.nvme.dma_stop().is_some();
        self.requests.finish(self.pci, stopped);
        say!(
            "uefi: detach {:?} in {} ms; {} blocks read, {} written through BlockIo, {} ticks, {} BlockIo2 requests completed from the tick",
            result,
            (clock::now() - start).as_millis(),
            self.blocks_read,
            self.blocks_written,
            self.ticks,
            self.requests_completed
        );
        self.release();
    }

    /// Returns the bounce buffer (when the device cannot reach it) and the
    /// function's original attributes.
    fn release(&mut self) {
        if let Some(bounce) = self.bounce.take() {
            let stopped = matches!(self.nvme.state(), State::Detached | State::Discovered)
                || self.nvme.dma_stop().is_some();
            // A buffer the device may still write into is never freed
            // (it goes out of scope here without `dma_free`).
            if stopped {
                self.nvme.platform().dma_free(bounce);
            }
        }
        let _ = self.pci.attributes(AttrOp::Set, self.original_attributes);
        let held = self.nvme.platform().outstanding();
        say!("uefi: {held} DMA buffers still held");
        say!("@@RESULT dma_buffers_held={held}");
    }

    /// Reads `out.len()` bytes at `lba` of namespace `nsid`: straight into
    /// the caller's buffer where the firmware maps it for the device,
    /// through the bounce buffer otherwise.
    pub fn read(&mut self, nsid: u32, lba: u64, out: &mut [u8]) -> bare_nvme::Result<()> {
        let block = self.nvme.namespace(nsid)?.block_size() as usize;
        let (mut lba, mut done) = (lba, 0);
        while done < out.len() {
            let rest = &mut out[done..];
            let len = rest.len();
            let n = match self.direct(
                pci_io::MAP_DEVICE_WRITES,
                nsid,
                lba,
                rest.as_mut_ptr(),
                rest.len(),
                block,
            ) {
                Some(result) => result?,
                None => self.bounce_read(nsid, lba, &mut rest[..len.min(BOUNCE_BYTES)])?,
            };
            done += n;
            lba += (n / block) as u64;
            self.blocks_read += (n / block) as u64;
        }
        Ok(())
    }

    /// Writes `data` at `lba` of namespace `nsid` (mapped like
    /// [`Device::read`], or bounced).
    pub fn write(&mut self, nsid: u32, lba: u64, data: &[u8]) -> bare_nvme::Result<()> {
        let block = self.nvme.namespace(nsid)?.block_size() as usize;
        let (mut lba, mut done) = (lba, 0);
        while done < data.len() {
            let rest = &data[done..];
            // The device only reads a buffer mapped this way.
            let host = rest.as_ptr().cast_mut();
            let n = match self.direct(pci_io::MAP_DEVICE_READS, nsid, lba, host, rest.len(), block)
            {
                Some(result) => result?,
                None => self.bounce_write(nsid, lba, &rest[..rest.len().min(BOUNCE_BYTES)])?,
            };
            done += n;
            lba += (n / block) as u64;
            self.blocks_written += (n / block) as u64;
        }
        Ok(())
    }

    /// One transfer straight to or from the caller's memory: maps as much of
    /// `len` bytes at `host` as the firmware will, moves the whole blocks of
    /// it, unmaps. `None` when it cannot be mapped (or is not dword aligned,
    /// as PRP entries must be): bounce instead.
    fn direct(
        &mut self,
        op: u32,
        nsid: u32,
        lba: u64,
        host: *mut u8,
        len: usize,
        block: usize,
    ) -> Option<bare_nvme::Result<usize>> {
        if host.align_offset(4) != 0 {
            return None;
        }
        let host_nn = core::ptr::NonNull::new(host)?;
        // SAFETY: the BlockIo caller lends these bytes for the call, which
        // ends only after `unmap`.
        let (device, mapped, mapping) = unsafe { self.pci.map(op, host, len) }?;
        let n = mapped - mapped % block;
        if n == 0 {
            // SAFETY: nothing was given to the device.
            unsafe { self.pci.unmap(mapping) };
            return None;
        }
        // SAFETY: the mapping gives the device `n` bytes at `device`, the
        // CPU's view of them at `host`; the region lives only for this
        // transfer and is never given to `dma_free`.
        let mut region = unsafe { DmaRegion::new(host_nn, bare_nvme::PhysAddr::new(device), n) };
        let result = if op == pci_io::MAP_DEVICE_WRITES {
            self.nvme.read(nsid, lba, &mut region)
        } else {
            self.nvme.write(nsid, lba, &region)
        };
        let stopped = result.is_ok()
            || !matches!(self.nvme.state(), State::Removed | State::Failed)
            || self.nvme.dma_stop().is_some();
        if stopped {
            // SAFETY: the command finished (or the device's DMA is stopped).
            unsafe { self.pci.unmap(mapping) };
        }
        // Otherwise the mapping stays: the device might still write there.
        Some(result.map(|()| n))
    }

    fn bounce_read(&mut self, nsid: u32, lba: u64, piece: &mut [u8]) -> bare_nvme::Result<usize> {
        let bounce = self.bounce.as_mut().ok_or(Error::NotReady)?;
        let view = bounce.view_mut(0..piece.len()).ok_or(Error::Internal {
            what: "a piece larger than the bounce buffer",
        })?;
        self.nvme.read(nsid, lba, view)?;
        piece.copy_from_slice(&bounce.as_slice()[..piece.len()]);
        Ok(piece.len())
    }

    fn bounce_write(&mut self, nsid: u32, lba: u64, piece: &[u8]) -> bare_nvme::Result<usize> {
        let bounce = self.bounce.as_mut().ok_or(Error::NotReady)?;
        bounce.as_mut_slice()[..piece.len()].copy_from_slice(piece);
        let view = bounce.view(0..piece.len()).ok_or(Error::Internal {
            what: "a piece larger than the bounce buffer",
        })?;
        self.nvme.write(nsid, lba, view)?;
        Ok(piece.len())
    }

    /// Starts a BlockIo2 request on the caller's buffer (mapped whole for
    /// the device); `None` when it cannot be mapped whole (or is not dword
    /// aligned): the caller then does it synchronously.
    ///
    /// # Safety
    /// `token` is the caller's valid token with an event, and `bytes` bytes
    /// at `buffer` are lent until that event is signalled.
    pub unsafe fn start_request(
        &mut self,
        nsid: u32,
        lba: u64,
        token: *mut uefi_raw::protocol::block::BlockIo2Token,
        bytes: usize,
        buffer: *mut u8,
        write: bool,
    ) -> Option<Status> {
        let block = self.nvme.namespace(nsid).ok()?.block_size() as usize;
        if buffer.align_offset(4) != 0 {
            return None;
        }
        let host = core::ptr::NonNull::new(buffer)?;
        let op = if write {
            pci_io::MAP_DEVICE_READS
        } else {
            pci_io::MAP_DEVICE_WRITES
        };
        // SAFETY: the caller lends the buffer until the token's event is
        // signalled, which happens after `unmap`.
        let (device, mapped, mapping) = unsafe { self.pci.map(op, buffer, bytes) }?;
        if mapped != bytes {
            // SAFETY: nothing was given to the device.
            unsafe { self.pci.unmap(mapping) };
            return None;
        }
        let request = Request::new(token, nsid, lba, block, write, host, device, bytes, mapping);
        self.requests.start(&mut self.nvme, request);
        Some(Status::SUCCESS)
    }

    /// Waits (ticking) until no BlockIo2 request is in flight, then flushes.
    pub fn flush_after_requests(&mut self, nsid: u32) -> bare_nvme::Result<()> {
        let deadline = clock::now() + Duration::from_secs(30);
        while !self.requests.is_empty() {
            if clock::now() > deadline {
                return Err(Error::Timeout {
                    what: bare_nvme::Wait::IoCommand,
                    after_ms: 30_000,
                });
            }
            self.service();
        }
        self.flush(nsid)
    }

    /// One round of the tick's work: the controller's tick, then the
    /// BlockIo2 requests (completions taken, next pieces submitted, finished
    /// ones signalled).
    fn service(&mut self) {
        if !self.gone {
            self.nvme.tick();
            self.notice_state();
        }
        self.requests.reap(&mut self.nvme);
        self.requests.pump(&mut self.nvme);
        let before = self.requests.len();
        // After a removal or failure, commands the driver cannot deliver
        // fail once its DMA is proven stopped.
        let abandon = self.gone && self.nvme.dma_stop().is_some();
        self.requests.finish(self.pci, abandon);
        self.requests_completed += (before - self.requests.len()) as u64;
    }

    /// Identify Namespace data (4096 bytes) of `nsid` into `out`, read
    /// from the controller now (Identify, CNS 0, through the driver's admin
    /// passthrough).
    pub fn identify_namespace(&mut self, nsid: u32, out: &mut [u8]) -> bare_nvme::Result<()> {
        let mut page = self
            .nvme
            .platform()
            .dma_alloc(4096, 4096)
            .ok_or(Error::OutOfDmaMemory { bytes: 4096 })?;
        let mut sqe = bare_nvme::spec::command::SubmissionEntry::new(
            bare_nvme::spec::command::admin::IDENTIFY,
        );
        sqe.nsid = nsid;
        sqe.cdw10 = 0;
        let result = self.nvme.admin_passthrough(sqe, Some(&mut page));
        if let Err(Error::Quarantined) = result {
            // The device may still write the page: it is never reused.
            return result.map(|_| ());
        }
        if result.is_ok() {
            let n = out.len().min(4096);
            out[..n].copy_from_slice(&page.as_slice()[..n]);
        }
        self.nvme.platform().dma_free(page);
        result.map(|_| ())
    }

    /// Makes the namespace's completed writes durable.
    pub fn flush(&mut self, nsid: u32) -> bare_nvme::Result<()> {
        self.nvme.flush(nsid)
    }

    /// The BlockIo status of a driver result; a removal or failure takes
    /// the media away from every namespace.
    pub fn status_of(&mut self, result: bare_nvme::Result<()>) -> Status {
        match result {
            Ok(()) => Status::SUCCESS,
            Err(e) => {
                say!("uefi: I/O failed: {e}");
                self.notice_state();
                if self.gone {
                    Status::NO_MEDIA
                } else {
                    Status::DEVICE_ERROR
                }
            }
        }
    }

    fn notice_state(&mut self) {
        if self.gone {
            return;
        }
        if matches!(self.nvme.state(), State::Removed | State::Failed) {
            self.gone = true;
            say!("uefi: controller {:?}: media gone", self.nvme.state());
            for ns in &mut self.namespaces {
                ns.lose_media();
            }
        }
    }

    /// Stops the controller without freeing anything (boot services'
    /// memory calls are not allowed here): normal shutdown (CC.SHN), then
    /// CC.EN = 0, then bus mastering off. Each wait is bounded.
    fn quiesce(&mut self) {
        let regs = Bar0(self.pci);
        let cap = regs.read64(REG_CAP);
        // CAP.TO: worst-case ready transition in 500 ms units.
        let ready_limit = Duration::from_millis(((cap >> 24) & 0xff).max(1) * 500);
        let cc = regs.read32(REG_CC);
        let mut shst = 0;
        if cc & 1 != 0 && cc != u32::MAX {
            regs.write32(REG_CC, (cc & !(3 << 14)) | (1 << 14));
            let deadline = clock::now() + Duration::from_secs(2);
            loop {
                shst = (regs.read32(REG_CSTS) >> 2) & 3;
                if shst == 2 || clock::now() > deadline {
                    break;
                }
                core::hint::spin_loop();
            }
            regs.write32(REG_CC, regs.read32(REG_CC) & !1);
            let deadline = clock::now() + ready_limit;
            while regs.read32(REG_CSTS) & 1 != 0 && clock::now() < deadline {
                core::hint::spin_loop();
            }
        }
        let _ = self
            .pci
            .attributes(AttrOp::Disable, pci_io::ATTR_BUS_MASTER);
        let csts = regs.read32(REG_CSTS);
        let command = self.pci.config_read16(4).unwrap_or(u16::MAX);
        say!(
            "uefi: exit boot services: shutdown status {shst}, CC {:#x}, CSTS {csts:#x}, command {command:#x}",
            regs.read32(REG_CC)
        );
        say!("@@RESULT ebs_shutdown_status={shst}");
    }
}

/// The periodic tick: the controller's health, deadlines, resets and
/// removal, and the BlockIo2 requests (at TPL_CALLBACK, which BlockIo and
/// BlockIo2 calls also raise to).
unsafe extern "efiapi" fn on_tick(_event: Event, ctx: *mut c_void) {
    // SAFETY: `ctx` is the live device that created this event (it closes
    // the event before it is freed); at TPL_CALLBACK no BlockIo call of it
    // runs meanwhile.
    let device = unsafe { &mut *ctx.cast::<Device>() };
    device.ticks += 1;
    device.service();
}

/// ExitBootServices: the OS loader owns memory from now on; the controller
/// must not write into it.
unsafe extern "efiapi" fn on_exit_boot_services(_event: Event, ctx: *mut c_void) {
    // SAFETY: as for `on_tick`.
    let device = unsafe { &mut *ctx.cast::<Device>() };
    device.quiesce();
}

impl Backend for Device {
    fn read(&mut self, nsid: u32, lba: u64, out: &mut [u8]) -> bare_nvme::Result<()> {
        Device::read(self, nsid, lba, out)
    }

    fn write(&mut self, nsid: u32, lba: u64, data: &[u8]) -> bare_nvme::Result<()> {
        Device::write(self, nsid, lba, data)
    }

    fn flush(&mut self, nsid: u32) -> bare_nvme::Result<()> {
        Device::flush(self, nsid)
    }

    unsafe fn start_request(
        &mut self,
        nsid: u32,
        lba: u64,
        token: *mut uefi_raw::protocol::block::BlockIo2Token,
        bytes: usize,
        buffer: *mut u8,
        write: bool,
    ) -> Option<Status> {
        // SAFETY: the trait's contract is this method's.
        unsafe { Device::start_request(self, nsid, lba, token, bytes, buffer, write) }
    }

    fn flush_after_requests(&mut self, nsid: u32) -> bare_nvme::Result<()> {
        Device::flush_after_requests(self, nsid)
    }

    fn identify_namespace(&mut self, nsid: u32, out: &mut [u8]) -> bare_nvme::Result<()> {
        Device::identify_namespace(self, nsid, out)
    }

    fn status_of(&mut self, result: bare_nvme::Result<()>) -> Status {
        Device::status_of(self, result)
    }
}
