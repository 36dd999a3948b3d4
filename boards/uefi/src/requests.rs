//! `EFI_BLOCK_IO2_PROTOCOL` requests in flight: a caller's buffer mapped
//! for the device, split into commands of at most the controller's largest
//! transfer, submitted as the queue has room, and completed from the tick
//! (the token's status set, its event signalled).

use alloc::vec::Vec;
use core::ffi::c_void;
use core::ptr::NonNull;

use bare_nvme::{DmaRegion, Error, IoOp, PhysAddr, QueueId, State};
use uefi_raw::protocol::block::BlockIo2Token;
use uefi_raw::Status;

use crate::efi;
use crate::link::Nvme;
use crate::pci_io::PciIo;

/// Tags of these commands carry this in their upper half (the slot in the
/// lower), so that no other completion is taken for one of them.
const TAG_MARK: u64 = 0xb10c_2000 << 32;

/// One request.
pub struct Request {
    /// The caller's token (status and event).
    pub token: *mut BlockIo2Token,
    /// Namespace and first block.
    pub nsid: u32,
    /// First block.
    pub lba: u64,
    /// Block size in bytes.
    pub block: usize,
    /// A write (else a read).
    pub write: bool,
    /// The caller's buffer, its device address and length.
    pub host: NonNull<u8>,
    /// See `host`.
    pub device: u64,
    /// See `host`.
    pub len: usize,
    /// The PCI I/O mapping of the buffer.
    pub mapping: *mut c_void,
    submitted: usize,
    outstanding: u32,
    status: Status,
}

impl Request {
    /// A request not yet submitted.
    #[allow(
        clippy::too_many_arguments,
        reason = "one request's fields, named at the call"
    )]
    pub fn new(
        token: *mut BlockIo2Token,
        nsid: u32,
        lba: u64,
        block: usize,
        write: bool,
        host: NonNull<u8>,
        device: u64,
        len: usize,
        mapping: *mut c_void,
    ) -> Self {
        Self {
            token,
            nsid,
            lba,
            block,
            write,
            host,
            device,
            len,
            mapping,
            submitted: 0,
            outstanding: 0,
            status: Status::SUCCESS,
        }
    }

    fn done(&self) -> bool {
        self.outstanding == 0 && (self.submitted == self.len || self.status.is_error())
    }
}

/// The requests of one controller.
#[derive(Default)]
pub struct Requests {
    slots: Vec<Option<Request>>,
}

impl Requests {
    /// Requests in flight.
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Whether none is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes `request` and submits what the queue has room for.
    pub fn start(&mut self, nvme: &mut Nvme, request: Request) {
        match self.slots.iter_mut().find(|s| s.is_none()) {
            Some(slot) => *slot = Some(request),
            None => self.slots.push(Some(request)),
        }
        self.pump(nvme);
    }

    /// Submits the next pieces of every request, as the queue has room.
    pub fn pump(&mut self, nvme: &mut Nvme) {
        let max = nvme.max_transfer() as usize;
        let gone = matches!(nvme.state(), State::Removed | State::Failed);
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let Some(r) = slot else { continue };
            while r.status.is_success() && r.submitted < r.len {
                let piece = (r.len - r.submitted).min(max - max % r.block);
                // SAFETY: a part of the caller's mapped buffer, lent to the
                // device until its command completes; never given to
                // `dma_free`.
                let region = unsafe {
                    DmaRegion::new(
                        r.host.add(r.submitted),
                        PhysAddr::new(r.device + r.submitted as u64),
                        piece,
                    )
                };
                let lba = r.lba + (r.submitted / r.block) as u64;
                let blocks = (piece / r.block) as u32;
                let op = if r.write {
                    IoOp::Write {
                        nsid: r.nsid,
                        lba,
                        blocks,
                    }
                } else {
                    IoOp::Read {
                        nsid: r.nsid,
                        lba,
                        blocks,
                    }
                };
                match nvme.submit(QueueId::FIRST, op, Some(region), TAG_MARK | index as u64) {
                    Ok(_) => {
                        r.submitted += piece;
                        r.outstanding += 1;
                    }
                    // Room comes back as commands complete: the next tick.
                    Err(rejected) if matches!(rejected.error, Error::QueueFull { .. }) => break,
                    Err(_) => {
                        r.status = if gone {
                            Status::NO_MEDIA
                        } else {
                            Status::DEVICE_ERROR
                        };
                    }
                }
            }
        }
        nvme.ring_doorbells();
    }

    /// Takes the completions of these requests' commands.
    pub fn reap(&mut self, nvme: &mut Nvme) {
        let slots = &mut self.slots;
        nvme.poll(QueueId::FIRST, |done| {
            if done.tag & !0xffff_ffff != TAG_MARK {
                return;
            }
            let index = (done.tag & 0xffff_ffff) as usize;
            let Some(Some(r)) = slots.get_mut(index) else {
                return;
            };
            r.outstanding = r.outstanding.saturating_sub(1);
            if done.result.is_err() && r.status.is_success() {
                r.status = Status::DEVICE_ERROR;
            }
        });
    }

    /// Completes every finished request: unmaps its buffer, sets its
    /// token's status and signals its event. With `abandon` (the controller
    /// stopped, was removed or failed, and its DMA is proven stopped), also
    /// those whose commands the driver will not hand back: they fail.
    pub fn finish(&mut self, pci: PciIo, abandon: bool) {
        for slot in &mut self.slots {
            let Some(r) = slot else { continue };
            let done = r.done();
            if !done && !abandon {
                continue;
            }
            // SAFETY: no command of the request is outstanding, or the
            // device's DMA is stopped: it no longer reaches the buffer.
            unsafe { pci.unmap(r.mapping) };
            let status = if done { r.status } else { Status::DEVICE_ERROR };
            // SAFETY: the caller's token, valid until its event is signalled.
            unsafe {
                (*r.token).transaction_status = status;
                let _ = (efi::boot().signal_event)((*r.token).event);
            }
            *slot = None;
        }
    }
}
