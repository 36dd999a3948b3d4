//! Unit-test stand-ins for the machine: heap memory posing as DMA memory,
//! with a device-side view through raw pointers (as a DMA engine reaches
//! memory, outside any Rust reference), and registers that record writes.
//! Miri runs the tests that use them.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::RefCell;
use std::ptr::NonNull;
use std::vec::Vec;

use volatile::VolatilePtr;

use crate::nvme::shared_memory::SharedMemory;
use crate::platform::{DmaRegion, PhysAddr, RegisterAccess};

/// A page-aligned heap allocation at a made-up device address.
pub(crate) struct HeapDma {
    base: NonNull<u8>,
    layout: Layout,
    phys: u64,
    lent: bool,
}

impl HeapDma {
    /// `len` zeroed bytes the device sees at `phys`.
    pub(crate) fn new(len: usize, phys: u64) -> Self {
        let layout = Layout::from_size_align(len, 4096).expect("layout");
        // SAFETY: `len` is non-zero in every test.
        let base = NonNull::new(unsafe { alloc_zeroed(layout) }).expect("host memory");
        Self {
            base,
            layout,
            phys,
            lent: false,
        }
    }

    /// The memory as the driver's shared memory. Once: the driver's value
    /// owns it from then on. It must not be used after `self` is dropped.
    pub(crate) fn shared(&mut self) -> SharedMemory {
        assert!(!self.lent, "lent twice");
        self.lent = true;
        // SAFETY: valid for `layout.size()` bytes until `self` drops (the
        // tests drop the driver's values first); the driver's value is the
        // only CPU-side owner, the device side below is the DMA engine.
        let region =
            unsafe { DmaRegion::new(self.base, PhysAddr::new(self.phys), self.layout.size()) };
        SharedMemory::new(region)
    }

    /// Like [`HeapDma::shared`], but the memory from byte `offset` on (a
    /// region that starts unaligned when `offset` is).
    pub(crate) fn shared_from(&mut self, offset: usize) -> SharedMemory {
        assert!(!self.lent && offset < self.layout.size(), "lent twice");
        self.lent = true;
        // SAFETY: as in `shared`, for the bytes from `offset` on, which lie
        // inside the allocation (checked).
        let region = unsafe {
            DmaRegion::new(
                self.base.add(offset),
                PhysAddr::new(self.phys + offset as u64),
                self.layout.size() - offset,
            )
        };
        SharedMemory::new(region)
    }

    /// A raw (DMA engine's) pointer to the `T` at byte `offset`.
    fn device_ptr<T: Copy>(&self, offset: usize) -> VolatilePtr<'_, T> {
        assert!(
            offset + size_of::<T>() <= self.layout.size(),
            "device access out of range"
        );
        // SAFETY: in range (checked) and non-null; the tests' offsets are
        // aligned. A raw access, like the device's DMA.
        unsafe { VolatilePtr::new(self.base.add(offset).cast()) }
    }

    /// What the device reads at byte `offset`.
    pub(crate) fn device_read<T: Copy>(&self, offset: usize) -> T {
        self.device_ptr(offset).read()
    }

    /// The device writes `value` at byte `offset`.
    pub(crate) fn device_write<T: Copy>(&self, offset: usize, value: T) {
        self.device_ptr(offset).write(value)
    }
}

impl Drop for HeapDma {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.base.as_ptr(), self.layout) }
    }
}

/// Registers that read as zero and record every write.
#[derive(Default)]
pub(crate) struct RecordingRegisters {
    writes: RefCell<Vec<(usize, u32)>>,
}

impl RecordingRegisters {
    /// The writes since the last call, in order.
    pub(crate) fn take(&self) -> Vec<(usize, u32)> {
        self.writes.take()
    }
}

impl RegisterAccess for RecordingRegisters {
    fn read32(&self, _offset: usize) -> u32 {
        0
    }

    fn write32(&self, offset: usize, value: u32) {
        self.writes.borrow_mut().push((offset, value));
    }
}

/// A platform for unit tests of ring code: coherent DMA (the default
/// maintenance hooks), no memory or registers of its own.
pub(crate) struct CoherentPlatform;

impl crate::platform::Platform for CoherentPlatform {
    type Registers = RecordingRegisters;

    fn dma_alloc(&self, _len: usize, _align: usize) -> Option<DmaRegion> {
        None
    }

    fn dma_free(&self, _region: DmaRegion) {}

    fn map_registers(&self, _phys: PhysAddr, _len: usize) -> Option<RecordingRegisters> {
        None
    }

    fn now(&self) -> crate::platform::Instant {
        crate::platform::Instant::from_nanos(0)
    }
}
