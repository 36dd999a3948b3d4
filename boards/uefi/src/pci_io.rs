//! `EFI_PCI_IO_PROTOCOL` (UEFI 2.10, section 14.4): the firmware's handle on
//! one PCI function. The `uefi` crates do not define it; the layout below is
//! the specification's.

use core::ffi::c_void;
use core::ptr::{self, NonNull};

use uefi_raw::{guid, Guid, Status};

/// `EFI_PCI_IO_PROTOCOL_GUID`.
pub const GUID: Guid = guid!("4cf5b200-68b8-4ca5-9eec-b23e3f50029a");

/// `EFI_PCI_IO_PROTOCOL_WIDTH`: 32-bit accesses.
const WIDTH_U32: u32 = 2;
/// 16-bit accesses.
const WIDTH_U16: u32 = 1;
/// 8-bit accesses.
const WIDTH_U8: u32 = 0;
/// `EfiPciIoOperationBusMasterCommonBuffer`: both CPU and device use the
/// buffer for as long as it is mapped.
const MAP_COMMON_BUFFER: u32 = 2;
/// `EfiPciIoOperationBusMasterRead`: the device reads the buffer (a write
/// to the disk).
pub const MAP_DEVICE_READS: u32 = 0;
/// `EfiPciIoOperationBusMasterWrite`: the device writes the buffer (a read
/// from the disk).
pub const MAP_DEVICE_WRITES: u32 = 1;
/// `AllocateAnyPages`.
const ALLOCATE_ANY_PAGES: u32 = 0;
/// `EfiBootServicesData`.
const BOOT_SERVICES_DATA: u32 = 4;

/// `EFI_PCI_IO_ATTRIBUTE_MEMORY`: memory space decoding.
pub const ATTR_MEMORY: u64 = 0x0200;
/// `EFI_PCI_IO_ATTRIBUTE_BUS_MASTER`.
pub const ATTR_BUS_MASTER: u64 = 0x0400;
/// `EFI_PCI_IO_ATTRIBUTE_DUAL_ADDRESS_CYCLE`: 64-bit DMA addresses.
pub const ATTR_DUAL_ADDRESS_CYCLE: u64 = 0x8000;

/// `EFI_PCI_IO_PROTOCOL_ATTRIBUTE_OPERATION`.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum AttrOp {
    /// Read the current attributes.
    Get = 0,
    /// Replace them.
    Set = 1,
    /// Turn some on.
    Enable = 2,
    /// Turn some off.
    Disable = 3,
    /// What the function supports.
    Supported = 4,
}

type MemFn = unsafe extern "efiapi" fn(*mut Protocol, u32, u8, u64, usize, *mut c_void) -> Status;
type ConfigFn = unsafe extern "efiapi" fn(*mut Protocol, u32, u32, usize, *mut c_void) -> Status;

/// The protocol's function table.
#[repr(C)]
pub struct Protocol {
    poll_mem: *const c_void,
    poll_io: *const c_void,
    mem_read: MemFn,
    mem_write: MemFn,
    io_read: MemFn,
    io_write: MemFn,
    pci_read: ConfigFn,
    pci_write: ConfigFn,
    copy_mem: *const c_void,
    map: unsafe extern "efiapi" fn(
        *mut Protocol,
        u32,
        *mut c_void,
        *mut usize,
        *mut u64,
        *mut *mut c_void,
    ) -> Status,
    unmap: unsafe extern "efiapi" fn(*mut Protocol, *mut c_void) -> Status,
    allocate_buffer:
        unsafe extern "efiapi" fn(*mut Protocol, u32, u32, usize, *mut *mut c_void, u64) -> Status,
    free_buffer: unsafe extern "efiapi" fn(*mut Protocol, usize, *mut c_void) -> Status,
    flush: *const c_void,
    get_location: unsafe extern "efiapi" fn(
        *mut Protocol,
        *mut usize,
        *mut usize,
        *mut usize,
        *mut usize,
    ) -> Status,
    attributes: unsafe extern "efiapi" fn(*mut Protocol, u32, u64, *mut u64) -> Status,
    get_bar_attributes: *const c_void,
    set_bar_attributes: *const c_void,
    rom_size: u64,
    rom_image: *mut c_void,
}

/// One DMA buffer: pages from `AllocateBuffer`, mapped as a common buffer.
#[derive(Clone, Copy, Debug)]
pub struct DmaBuffer {
    /// The CPU's address.
    pub host: NonNull<u8>,
    /// The device's address (differs from `host` behind an IOMMU).
    pub device: u64,
    /// Pages allocated.
    pub pages: usize,
    /// The mapping token for `Unmap`.
    pub mapping: *mut c_void,
}

/// A PCI function as the firmware lends it: a pointer to its protocol
/// instance, valid while the driver holds it open (BY_DRIVER).
#[derive(Clone, Copy, Debug)]
pub struct PciIo(NonNull<Protocol>);

impl PciIo {
    /// Wraps an interface pointer from `OpenProtocol`.
    ///
    /// # Safety
    /// `iface` is an `EFI_PCI_IO_PROTOCOL` instance that stays valid as long
    /// as this value (and its copies) is used.
    pub unsafe fn new(iface: NonNull<c_void>) -> Self {
        Self(iface.cast())
    }

    fn this(self) -> *mut Protocol {
        self.0.as_ptr()
    }

    fn table(&self) -> &Protocol {
        // SAFETY: `new`'s contract: the instance outlives every use.
        unsafe { self.0.as_ref() }
    }

    fn config_read(self, width: u32, offset: u32, out: *mut c_void) -> Option<()> {
        // SAFETY: one element of `width` into `out`, which the callers size.
        let s = unsafe { (self.table().pci_read)(self.this(), width, offset, 1, out) };
        s.is_success().then_some(())
    }

    /// A configuration dword (`None` when the firmware refuses).
    pub fn config_read32(self, offset: u32) -> Option<u32> {
        let mut v = 0u32;
        self.config_read(WIDTH_U32, offset, (&mut v as *mut u32).cast())?;
        Some(v)
    }

    /// A configuration word.
    pub fn config_read16(self, offset: u32) -> Option<u16> {
        let mut v = 0u16;
        self.config_read(WIDTH_U16, offset, (&mut v as *mut u16).cast())?;
        Some(v)
    }

    /// A configuration byte.
    pub fn config_read8(self, offset: u32) -> Option<u8> {
        let mut v = 0u8;
        self.config_read(WIDTH_U8, offset, (&mut v as *mut u8).cast())?;
        Some(v)
    }

    /// A 32-bit read at `offset` into BAR `bar` (all ones on failure, as a
    /// vanished device reads).
    pub fn mem_read32(self, bar: u8, offset: u64) -> u32 {
        let mut v = u32::MAX;
        // SAFETY: one dword into `v`.
        let s = unsafe {
            (self.table().mem_read)(
                self.this(),
                WIDTH_U32,
                bar,
                offset,
                1,
                (&mut v as *mut u32).cast(),
            )
        };
        if s.is_success() {
            v
        } else {
            u32::MAX
        }
    }

    /// A 32-bit write at `offset` into BAR `bar`.
    pub fn mem_write32(self, bar: u8, offset: u64, value: u32) {
        let mut v = value;
        // SAFETY: one dword from `v`. A refused write is what a vanished
        // device does too; the driver notices from its reads.
        let _ = unsafe {
            (self.table().mem_write)(
                self.this(),
                WIDTH_U32,
                bar,
                offset,
                1,
                (&mut v as *mut u32).cast(),
            )
        };
    }

    /// Runs an attribute operation; returns the attributes for `Get` and
    /// `Supported`.
    pub fn attributes(self, op: AttrOp, attributes: u64) -> Result<u64, Status> {
        let mut result = 0u64;
        let out = match op {
            AttrOp::Get | AttrOp::Supported => &mut result as *mut u64,
            _ => ptr::null_mut(),
        };
        // SAFETY: `out` is null or points at `result`.
        let s = unsafe { (self.table().attributes)(self.this(), op as u32, attributes, out) };
        if s.is_success() {
            Ok(result)
        } else {
            Err(s)
        }
    }

    /// Segment, bus, device and function.
    pub fn location(self) -> Option<(usize, usize, usize, usize)> {
        let (mut s, mut b, mut d, mut f) = (0, 0, 0, 0);
        // SAFETY: four valid out pointers.
        let st =
            unsafe { (self.table().get_location)(self.this(), &mut s, &mut b, &mut d, &mut f) };
        st.is_success().then_some((s, b, d, f))
    }

    /// `pages` zeroed pages the device can reach, mapped as a common buffer
    /// (so the firmware's IOMMU driver, if any, lets the device in).
    pub fn dma_alloc(self, pages: usize) -> Option<DmaBuffer> {
        let mut host: *mut c_void = ptr::null_mut();
        // SAFETY: valid out pointer; the attributes ask for nothing special
        // (cached, coherent memory, below 4 GiB unless dual address is set).
        let s = unsafe {
            (self.table().allocate_buffer)(
                self.this(),
                ALLOCATE_ANY_PAGES,
                BOOT_SERVICES_DATA,
                pages,
                &mut host,
                0,
            )
        };
        if !s.is_success() {
            return None;
        }
        let host = NonNull::new(host.cast::<u8>())?;
        // SAFETY: `AllocateBuffer` returned `pages` pages at `host`, ours.
        unsafe { ptr::write_bytes(host.as_ptr(), 0, pages * 4096) };
        let mut bytes = pages * 4096;
        let mut device = 0u64;
        let mut mapping = ptr::null_mut();
        // SAFETY: maps the buffer just allocated; valid out pointers.
        let s = unsafe {
            (self.table().map)(
                self.this(),
                MAP_COMMON_BUFFER,
                host.as_ptr().cast(),
                &mut bytes,
                &mut device,
                &mut mapping,
            )
        };
        if !s.is_success() || bytes != pages * 4096 {
            if s.is_success() {
                // SAFETY: undoes the partial mapping just made.
                let _ = unsafe { (self.table().unmap)(self.this(), mapping) };
            }
            // SAFETY: returns the pages just allocated, never lent out.
            let _ = unsafe { (self.table().free_buffer)(self.this(), pages, host.as_ptr().cast()) };
            return None;
        }
        Some(DmaBuffer {
            host,
            device,
            pages,
            mapping,
        })
    }

    /// Maps up to `len` bytes of a caller's buffer at `host` for one
    /// transfer (`op`: [`MAP_DEVICE_READS`] or [`MAP_DEVICE_WRITES`]);
    /// returns the device address, the bytes mapped (maybe fewer) and the
    /// mapping token for [`PciIo::unmap`].
    ///
    /// # Safety
    /// `host..host + len` stays valid and unused by the CPU until `unmap`.
    pub unsafe fn map(
        self,
        op: u32,
        host: *mut u8,
        len: usize,
    ) -> Option<(u64, usize, *mut c_void)> {
        let mut bytes = len;
        let mut device = 0u64;
        let mut mapping = ptr::null_mut();
        // SAFETY: the caller's promise on the buffer; valid out pointers.
        let s = unsafe {
            (self.table().map)(
                self.this(),
                op,
                host.cast(),
                &mut bytes,
                &mut device,
                &mut mapping,
            )
        };
        (s.is_success() && bytes > 0).then_some((device, bytes, mapping))
    }

    /// Ends a mapping from [`PciIo::map`] (copying a bounce back, where the
    /// firmware used one).
    ///
    /// # Safety
    /// The device no longer reaches the buffer.
    pub unsafe fn unmap(self, mapping: *mut c_void) {
        // SAFETY: the caller's promise.
        let _ = unsafe { (self.table().unmap)(self.this(), mapping) };
    }

    /// Unmaps and frees a buffer from [`PciIo::dma_alloc`].
    ///
    /// # Safety
    /// The device can no longer reach `buffer` and nothing uses it.
    pub unsafe fn dma_free(self, buffer: DmaBuffer) {
        // SAFETY: the caller's promise; the mapping and pages are ours.
        unsafe {
            let _ = (self.table().unmap)(self.this(), buffer.mapping);
            let _ =
                (self.table().free_buffer)(self.this(), buffer.pages, buffer.host.as_ptr().cast());
        }
    }
}
