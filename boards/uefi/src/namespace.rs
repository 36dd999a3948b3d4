//! One served namespace: its `EFI_BLOCK_IO_PROTOCOL` and
//! `EFI_BLOCK_IO2_PROTOCOL`, its media and its device path (the
//! controller's, then an NVMe namespace node).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ffi::c_void;

use uefi_raw::protocol::block::{
    BlockIo2Protocol, BlockIo2Token, BlockIoMedia, BlockIoProtocol, Lba,
};
use uefi_raw::protocol::disk::DiskInfoProtocol;
use uefi_raw::{Boolean, Handle, Status};

use crate::efi;

/// What a namespace's protocols ask of the controller under it. The
/// controller's device ([`crate::device::Device`]) implements it; a trait,
/// so that this module does not import the one that owns its namespaces.
pub trait Backend {
    /// Reads whole blocks at `lba` into `out`.
    fn read(&mut self, nsid: u32, lba: u64, out: &mut [u8]) -> bare_nvme::Result<()>;
    /// Writes whole blocks from `data` at `lba`.
    fn write(&mut self, nsid: u32, lba: u64, data: &[u8]) -> bare_nvme::Result<()>;
    /// Makes written data durable.
    fn flush(&mut self, nsid: u32) -> bare_nvme::Result<()>;
    /// Starts a BlockIo2 request; `None` when it must be done synchronously.
    ///
    /// # Safety
    /// `token` is the caller's valid token with an event, and `bytes` bytes
    /// at `buffer` are lent until that event is signalled.
    unsafe fn start_request(
        &mut self,
        nsid: u32,
        lba: u64,
        token: *mut BlockIo2Token,
        bytes: usize,
        buffer: *mut u8,
        write: bool,
    ) -> Option<Status>;
    /// Flushes once every started request of `nsid` has completed.
    fn flush_after_requests(&mut self, nsid: u32) -> bare_nvme::Result<()>;
    /// Identify Namespace data (4096 bytes) of `nsid` into `out`.
    fn identify_namespace(&mut self, nsid: u32, out: &mut [u8]) -> bare_nvme::Result<()>;
    /// The UEFI status for a result of the calls above.
    fn status_of(&mut self, result: bare_nvme::Result<()>) -> Status;
}

/// Device path node: Messaging (3), NVMe namespace (23), 16 bytes.
const NVME_NODE: [u8; 4] = [3, 23, 16, 0];
/// The end-of-path node.
const END_NODE: [u8; 4] = [0x7f, 0xff, 4, 0];

/// A served namespace. `block_io` comes first: the firmware hands its
/// address back as `this`, and the namespace is found from it.
#[repr(C)]
pub struct Namespace {
    block_io: BlockIoProtocol,
    block_io2: BlockIo2Protocol,
    disk_info: DiskInfoProtocol,
    media: BlockIoMedia,
    path: Vec<u8>,
    /// The handle its protocols are installed on.
    pub handle: Handle,
    /// Its NVMe namespace ID.
    pub nsid: u32,
    device: *mut dyn Backend,
}

impl Namespace {
    /// A namespace of `blocks` blocks of `block_size` bytes, under the
    /// controller whose device path is `parent` (ending in its end node).
    pub fn new(
        device: *mut dyn Backend,
        nsid: u32,
        eui64: u64,
        block_size: u32,
        blocks: u64,
        parent: &[u8],
    ) -> Box<Self> {
        let mut path = Vec::with_capacity(parent.len() + 16);
        path.extend_from_slice(&parent[..parent.len() - END_NODE.len()]);
        path.extend_from_slice(&NVME_NODE);
        path.extend_from_slice(&nsid.to_le_bytes());
        path.extend_from_slice(&eui64.to_le_bytes());
        path.extend_from_slice(&END_NODE);
        Box::new(Self {
            block_io: BlockIoProtocol {
                revision: BlockIoProtocol::REVISION_3,
                media: core::ptr::null(),
                reset,
                read_blocks,
                write_blocks,
                flush_blocks,
            },
            block_io2: BlockIo2Protocol {
                media: core::ptr::null(),
                reset: reset2,
                read_blocks_ex,
                write_blocks_ex,
                flush_blocks_ex,
            },
            disk_info: DiskInfoProtocol {
                interface: DiskInfoProtocol::NVME_INTERFACE_GUID,
                inquiry,
                identify,
                sense_data,
                which_ide,
            },
            media: BlockIoMedia {
                media_id: 0,
                removable_media: Boolean::FALSE,
                media_present: Boolean::TRUE,
                logical_partition: Boolean::FALSE,
                read_only: Boolean::FALSE,
                write_caching: Boolean::FALSE,
                block_size,
                io_align: 0,
                last_block: blocks - 1,
                lowest_aligned_lba: 0,
                logical_blocks_per_physical_block: 1,
                optimal_transfer_length_granularity: 0,
            },
            path,
            handle: core::ptr::null_mut(),
            nsid,
            device,
        })
    }

    /// Installs the device path, BlockIo, BlockIo2, DiskInfo and the driver's tag on a new
    /// handle, and ties it to the controller's PCI I/O (BY_CHILD_CONTROLLER,
    /// so that disconnecting the controller stops this child first).
    pub fn install(&mut self, controller: Handle, binding: Handle) -> Result<(), Status> {
        self.block_io.media = &self.media;
        self.block_io2.media = &self.media;
        let io2: *const BlockIo2Protocol = &self.block_io2;
        let info: *const DiskInfoProtocol = &self.disk_info;
        let me: *mut Namespace = self;
        for (guid, iface) in [
            (
                &crate::DEVICE_PATH_GUID,
                self.path.as_ptr().cast::<c_void>(),
            ),
            (&BlockIoProtocol::GUID, me.cast_const().cast()),
            (&BlockIo2Protocol::GUID, io2.cast()),
            (&DiskInfoProtocol::GUID, info.cast()),
            (&crate::TAG_GUID, me.cast_const().cast()),
        ] {
            // SAFETY: the interfaces live in this boxed namespace, which is
            // freed only after `uninstall` succeeded.
            let s = unsafe {
                (efi::boot().install_protocol_interface)(
                    &mut self.handle,
                    guid,
                    uefi_raw::table::boot::InterfaceType::NATIVE_INTERFACE,
                    iface,
                )
            };
            if !s.is_success() {
                let _ = self.uninstall(controller, binding);
                return Err(s);
            }
        }
        efi::open(
            controller,
            &crate::pci_io::GUID,
            binding,
            self.handle,
            efi::OPEN_BY_CHILD,
        )
        .map(|_| ())
    }

    /// Undoes [`Namespace::install`]; fails while someone still holds the
    /// BlockIo (the namespace must then stay allocated).
    pub fn uninstall(&mut self, controller: Handle, binding: Handle) -> Result<(), Status> {
        if self.handle.is_null() {
            return Ok(());
        }
        let _ = efi::close(controller, &crate::pci_io::GUID, binding, self.handle);
        let me: *mut Namespace = self;
        let io2: *const BlockIo2Protocol = &self.block_io2;
        let info: *const DiskInfoProtocol = &self.disk_info;
        for (guid, iface) in [
            (&crate::TAG_GUID, me.cast_const().cast::<c_void>()),
            (&DiskInfoProtocol::GUID, info.cast()),
            (&BlockIo2Protocol::GUID, io2.cast()),
            (&BlockIoProtocol::GUID, me.cast_const().cast()),
            (&crate::DEVICE_PATH_GUID, self.path.as_ptr().cast()),
        ] {
            // SAFETY: uninstalls what `install` put on this handle.
            let s = unsafe { (efi::boot().uninstall_protocol_interface)(self.handle, guid, iface) };
            if !s.is_success() && s != Status::NOT_FOUND {
                // Put the tie back so the firmware still sees the child.
                let _ = efi::open(
                    controller,
                    &crate::pci_io::GUID,
                    binding,
                    self.handle,
                    efi::OPEN_BY_CHILD,
                );
                return Err(s);
            }
        }
        self.handle = core::ptr::null_mut();
        Ok(())
    }

    /// Marks the medium gone: every later call fails with `EFI_NO_MEDIA`.
    pub fn lose_media(&mut self) {
        self.media.media_present = Boolean::FALSE;
    }

    fn check(&self, media_id: u32, lba: Lba, bytes: usize, buffer: bool) -> Result<u64, Status> {
        if !bool::from(self.media.media_present) {
            return Err(Status::NO_MEDIA);
        }
        if media_id != self.media.media_id {
            return Err(Status::MEDIA_CHANGED);
        }
        if !buffer {
            return Err(Status::INVALID_PARAMETER);
        }
        let block = self.media.block_size as usize;
        if !bytes.is_multiple_of(block) {
            return Err(Status::BAD_BUFFER_SIZE);
        }
        let blocks = (bytes / block) as u64;
        let end = lba.checked_add(blocks).ok_or(Status::INVALID_PARAMETER)?;
        if end > self.media.last_block + 1 {
            return Err(Status::INVALID_PARAMETER);
        }
        Ok(blocks)
    }
}

/// The namespace behind a BlockIo `this`.
///
/// # Safety
/// `this` is the BlockIo of a live [`Namespace`] (the firmware passes back
/// the interface it got from `install`).
unsafe fn namespace<'a>(this: *const BlockIoProtocol) -> &'a Namespace {
    // SAFETY: the caller's promise; `block_io` is the first field of the
    // `repr(C)` namespace.
    unsafe { &*this.cast::<Namespace>() }
}

/// The controller a namespace belongs to.
///
/// # Safety
/// Callers run at TPL_CALLBACK (the driver's tick cannot run) and use no
/// other reference to the device meanwhile; the device outlives its
/// namespaces.
unsafe fn device_of<'a>(ns: &Namespace) -> &'a mut dyn Backend {
    // SAFETY: the caller's promise.
    unsafe { &mut *ns.device }
}

unsafe extern "efiapi" fn reset(_this: *mut BlockIoProtocol, _extended: Boolean) -> Status {
    // The controller recovers by itself (its tick resets it on a failure).
    Status::SUCCESS
}

unsafe extern "efiapi" fn read_blocks(
    this: *const BlockIoProtocol,
    media_id: u32,
    lba: Lba,
    bytes: usize,
    buffer: *mut c_void,
) -> Status {
    efi::at_callback(|| {
        // SAFETY: the firmware calls with the interface we installed.
        let ns = unsafe { namespace(this) };
        if let Err(s) = ns.check(media_id, lba, bytes, !buffer.is_null()) {
            return s;
        }
        let nsid = ns.nsid;
        // SAFETY: at TPL_CALLBACK; `ns` is not used past this point.
        let device = unsafe { device_of(ns) };
        if bytes == 0 {
            return Status::SUCCESS;
        }
        // SAFETY: the caller lends `bytes` writable bytes at `buffer`.
        let out = unsafe { core::slice::from_raw_parts_mut(buffer.cast::<u8>(), bytes) };
        let result = device.read(nsid, lba, out);
        device.status_of(result)
    })
}

unsafe extern "efiapi" fn write_blocks(
    this: *mut BlockIoProtocol,
    media_id: u32,
    lba: Lba,
    bytes: usize,
    buffer: *const c_void,
) -> Status {
    efi::at_callback(|| {
        // SAFETY: the firmware calls with the interface we installed.
        let ns = unsafe { namespace(this) };
        if let Err(s) = ns.check(media_id, lba, bytes, !buffer.is_null()) {
            return s;
        }
        let nsid = ns.nsid;
        // SAFETY: at TPL_CALLBACK; `ns` is not used past this point.
        let device = unsafe { device_of(ns) };
        if bytes == 0 {
            return Status::SUCCESS;
        }
        // SAFETY: the caller lends `bytes` readable bytes at `buffer`.
        let data = unsafe { core::slice::from_raw_parts(buffer.cast::<u8>(), bytes) };
        let result = device.write(nsid, lba, data);
        device.status_of(result)
    })
}

unsafe extern "efiapi" fn flush_blocks(this: *mut BlockIoProtocol) -> Status {
    efi::at_callback(|| {
        // SAFETY: the firmware calls with the interface we installed.
        let ns = unsafe { namespace(this) };
        if !bool::from(ns.media.media_present) {
            return Status::NO_MEDIA;
        }
        let nsid = ns.nsid;
        // SAFETY: at TPL_CALLBACK; `ns` is not used past this point.
        let device = unsafe { device_of(ns) };
        let result = device.flush(nsid);
        device.status_of(result)
    })
}

/// The namespace behind a BlockIo2 `this`.
///
/// # Safety
/// `this` is the BlockIo2 of a live [`Namespace`].
unsafe fn namespace2<'a>(this: *const BlockIo2Protocol) -> &'a Namespace {
    let offset = core::mem::offset_of!(Namespace, block_io2);
    // SAFETY: the caller's promise; the protocol is the `block_io2` field,
    // `offset` bytes into its namespace.
    unsafe { &*this.cast::<u8>().sub(offset).cast::<Namespace>() }
}

unsafe extern "efiapi" fn reset2(_this: *mut BlockIo2Protocol, _extended: Boolean) -> Status {
    Status::SUCCESS
}

/// Completes `token` now (a request done synchronously).
///
/// # Safety
/// `token` is null or the caller's valid token.
unsafe fn complete_now(token: *mut BlockIo2Token, status: Status) -> Status {
    // SAFETY: the caller's promise.
    match unsafe { token.as_mut() } {
        Some(t) if !t.event.is_null() => {
            t.transaction_status = status;
            // SAFETY: the caller's event.
            let _ = unsafe { (efi::boot().signal_event)(t.event) };
            Status::SUCCESS
        }
        _ => status,
    }
}

/// ReadBlocksEx and WriteBlocksEx: without a token event, synchronous like
/// BlockIo; with one, queued and completed from the tick.
///
/// # Safety
/// The firmware's arguments for `this`'s namespace.
unsafe fn transfer_ex(
    this: *const BlockIo2Protocol,
    media_id: u32,
    lba: Lba,
    token: *mut BlockIo2Token,
    bytes: usize,
    buffer: *mut u8,
    write: bool,
) -> Status {
    efi::at_callback(|| {
        // SAFETY: the firmware calls with the interface we installed.
        let ns = unsafe { namespace2(this) };
        if let Err(s) = ns.check(media_id, lba, bytes, !buffer.is_null()) {
            return s;
        }
        let nsid = ns.nsid;
        // SAFETY: at TPL_CALLBACK; `ns` is not used past this point.
        let device = unsafe { device_of(ns) };
        // SAFETY: null or the caller's token.
        let asynchronous = unsafe { token.as_ref() }.is_some_and(|t| !t.event.is_null());
        if asynchronous && bytes > 0 {
            // SAFETY: BlockIo2's contract: the token and the buffer stay
            // the caller's until the event is signalled.
            let started = unsafe { device.start_request(nsid, lba, token, bytes, buffer, write) };
            if let Some(status) = started {
                return status;
            }
        }
        let result = if bytes == 0 {
            Ok(())
        } else if write {
            // SAFETY: the caller lends `bytes` readable bytes at `buffer`.
            device.write(nsid, lba, unsafe {
                core::slice::from_raw_parts(buffer, bytes)
            })
        } else {
            // SAFETY: the caller lends `bytes` writable bytes at `buffer`.
            device.read(nsid, lba, unsafe {
                core::slice::from_raw_parts_mut(buffer, bytes)
            })
        };
        let status = device.status_of(result);
        // SAFETY: null or the caller's token.
        unsafe { complete_now(token, status) }
    })
}

unsafe extern "efiapi" fn read_blocks_ex(
    this: *const BlockIo2Protocol,
    media_id: u32,
    lba: Lba,
    token: *mut BlockIo2Token,
    bytes: usize,
    buffer: *mut c_void,
) -> Status {
    // SAFETY: the firmware's arguments.
    unsafe { transfer_ex(this, media_id, lba, token, bytes, buffer.cast(), false) }
}

unsafe extern "efiapi" fn write_blocks_ex(
    this: *mut BlockIo2Protocol,
    media_id: u32,
    lba: Lba,
    token: *mut BlockIo2Token,
    bytes: usize,
    buffer: *const c_void,
) -> Status {
    // SAFETY: the firmware's arguments; a write's buffer is only read.
    unsafe {
        transfer_ex(
            this,
            media_id,
            lba,
            token,
            bytes,
            buffer.cast_mut().cast(),
            true,
        )
    }
}

unsafe extern "efiapi" fn flush_blocks_ex(
    this: *mut BlockIo2Protocol,
    token: *mut BlockIo2Token,
) -> Status {
    efi::at_callback(|| {
        // SAFETY: the firmware calls with the interface we installed.
        let ns = unsafe { namespace2(this) };
        if !bool::from(ns.media.media_present) {
            return Status::NO_MEDIA;
        }
        let nsid = ns.nsid;
        // SAFETY: at TPL_CALLBACK; `ns` is not used past this point.
        let device = unsafe { device_of(ns) };
        // Flush waits for every completed write; the requests still in
        // flight complete first so that theirs are included.
        let result = device.flush_after_requests(nsid);
        let status = device.status_of(result);
        // SAFETY: null or the caller's token.
        unsafe { complete_now(token, status) }
    })
}

/// Bytes of Identify Namespace data, what DiskInfo's `Identify` returns.
const IDENTIFY_BYTES: u32 = 4096;

unsafe extern "efiapi" fn inquiry(
    _this: *const DiskInfoProtocol,
    _data: *mut c_void,
    _size: *mut u32,
) -> Status {
    // NVMe has no SCSI inquiry data.
    Status::NOT_FOUND
}

unsafe extern "efiapi" fn identify(
    this: *const DiskInfoProtocol,
    data: *mut c_void,
    size: *mut u32,
) -> Status {
    // SAFETY: the caller's size pointer (checked for null).
    let Some(size) = (unsafe { size.as_mut() }) else {
        return Status::INVALID_PARAMETER;
    };
    if *size < IDENTIFY_BYTES || data.is_null() {
        *size = IDENTIFY_BYTES;
        return Status::BUFFER_TOO_SMALL;
    }
    efi::at_callback(|| {
        let offset = core::mem::offset_of!(Namespace, disk_info);
        // SAFETY: `this` is the `disk_info` field of a live namespace (the
        // interface `install` published).
        let ns = unsafe { &*this.cast::<u8>().sub(offset).cast::<Namespace>() };
        if !bool::from(ns.media.media_present) {
            return Status::NO_MEDIA;
        }
        let nsid = ns.nsid;
        // SAFETY: at TPL_CALLBACK; `ns` is not used past this point.
        let device = unsafe { device_of(ns) };
        // SAFETY: the caller lends `*size >= 4096` bytes at `data`.
        let out =
            unsafe { core::slice::from_raw_parts_mut(data.cast::<u8>(), IDENTIFY_BYTES as usize) };
        let result = device.identify_namespace(nsid, out);
        *size = IDENTIFY_BYTES;
        device.status_of(result)
    })
}

unsafe extern "efiapi" fn sense_data(
    _this: *const DiskInfoProtocol,
    _data: *mut c_void,
    _size: *mut u32,
    _number: *mut u8,
) -> Status {
    Status::NOT_FOUND
}

unsafe extern "efiapi" fn which_ide(
    _this: *const DiskInfoProtocol,
    _channel: *mut u32,
    _device: *mut u32,
) -> Status {
    Status::UNSUPPORTED
}
