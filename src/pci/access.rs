//! Ready-made configuration space access mechanisms.
//!
//! A board picks one and hands it to the driver as its
//! [`ConfigRegionAccess`](https://docs.rs/pci_types/0.10/pci_types/trait.ConfigRegionAccess.html) implementation: [`PortIo`] (the legacy CF8/CFC mechanism,
//! x86_64 only, 256 bytes per function) or [`Ecam`] (the PCI Express
//! memory-mapped window, 4 KiB per function). Both accept only dword-aligned
//! offsets inside the function's space; anything else reads all-ones and drops
//! writes, which is what a driver sees from an absent function anyway.

use core::ptr::NonNull;

use pci_types::{ConfigRegionAccess, PciAddress};
use volatile::VolatilePtr;

/// Size of one function's configuration space through ECAM (PCIe 6.0, 7.2.2).
const ECAM_FUNCTION_SIZE: usize = 4096;
/// Bytes of ECAM window per bus: 32 devices x 8 functions x 4 KiB.
const ECAM_BUS_SIZE: usize = 1 << 20;

/// Whether `offset` names a dword inside a configuration space of `limit` bytes.
fn dword_offset_ok(offset: u16, limit: u16) -> bool {
    offset.is_multiple_of(4) && offset < limit
}

#[cfg(target_arch = "x86_64")]
pub use port_io::PortIo;

#[cfg(target_arch = "x86_64")]
mod port_io {
    use pci_types::{ConfigRegionAccess, PciAddress};
    use spin::Mutex;
    use x86_64::instructions::port::Port;

    use super::dword_offset_ok;

    /// CONFIG_ADDRESS port of configuration mechanism #1 (PCI Local Bus 3.0, 3.2.2.3.2).
    const CONFIG_ADDRESS: u16 = 0xCF8;
    /// CONFIG_DATA port of configuration mechanism #1.
    const CONFIG_DATA: u16 = 0xCFC;
    /// CONFIG_ADDRESS bit 31: turns the access into a configuration cycle.
    const ENABLE: u32 = 1 << 31;
    /// Configuration space reachable through the legacy mechanism.
    const PORT_IO_SPACE: u16 = 256;

    /// Configuration access through the legacy CF8/CFC I/O ports (segment 0,
    /// the first 256 bytes of each function only).
    ///
    /// The address write and the data access form one transaction: a lock
    /// keeps another CPU (or a re-entrant caller on another core) from moving
    /// CONFIG_ADDRESS in between.
    pub struct PortIo {
        ports: Mutex<(Port<u32>, Port<u32>)>,
    }

    impl PortIo {
        /// Creates the accessor.
        ///
        /// # Safety
        /// The machine must implement configuration mechanism #1 at ports
        /// 0xCF8/0xCFC, and nothing else may use these ports while this value
        /// (or a copy of the mechanism elsewhere) is in use.
        pub unsafe fn new() -> Self {
            Self {
                ports: Mutex::new((Port::new(CONFIG_ADDRESS), Port::new(CONFIG_DATA))),
            }
        }

        fn config_address(address: PciAddress, offset: u16) -> Option<u32> {
            if address.segment() != 0 || !dword_offset_ok(offset, PORT_IO_SPACE) {
                return None;
            }
            Some(
                ENABLE
                    | (u32::from(address.bus()) << 16)
                    | (u32::from(address.device()) << 11)
                    | (u32::from(address.function()) << 8)
                    | u32::from(offset),
            )
        }
    }

    impl ConfigRegionAccess for PortIo {
        unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
            let Some(config_address) = Self::config_address(address, offset) else {
                return u32::MAX;
            };
            let mut ports = self.ports.lock();
            // SAFETY: `new`'s contract gives us exclusive use of mechanism #1;
            // the lock keeps the address/data pair atomic, and the address is
            // a well-formed configuration address for an aligned dword.
            unsafe {
                ports.0.write(config_address);
                ports.1.read()
            }
        }

        unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
            let Some(config_address) = Self::config_address(address, offset) else {
                return;
            };
            let mut ports = self.ports.lock();
            // SAFETY: as in `read`.
            unsafe {
                ports.0.write(config_address);
                ports.1.write(value);
            }
        }
    }
}

/// Configuration access through a PCI Express ECAM window (the MCFG region of
/// one segment) mapped into the address space.
pub struct Ecam {
    base: NonNull<u8>,
    segment: u16,
    start_bus: u8,
    end_bus: u8,
}

// SAFETY: the window is device memory reached only through single volatile
// dword accesses; concurrent accesses from several CPUs are what the hardware
// serves anyway, and the struct holds no CPU-side state.
unsafe impl Send for Ecam {}
// SAFETY: as for Send: `&Ecam` only performs independent volatile accesses.
unsafe impl Sync for Ecam {}

impl Ecam {
    /// Wraps a mapped ECAM window of segment `segment` covering buses
    /// `start_bus..=end_bus`, whose first byte (bus `start_bus`, device 0,
    /// function 0, offset 0) is at `base`. Accesses to buses outside the range
    /// read all-ones and drop writes; an `end_bus` below `start_bus` makes the
    /// window empty.
    ///
    /// # Safety
    /// `base` must be 4-byte aligned and the mapping must cover
    /// `(end_bus - start_bus + 1) << 20` bytes of uncached ECAM space of that
    /// segment, staying mapped while this value lives.
    pub unsafe fn new(base: NonNull<u8>, segment: u16, start_bus: u8, end_bus: u8) -> Self {
        Self {
            base,
            segment,
            start_bus,
            end_bus,
        }
    }

    fn register(&self, address: PciAddress, offset: u16) -> Option<VolatilePtr<'_, u32>> {
        if address.segment() != self.segment
            || address.bus() < self.start_bus
            || address.bus() > self.end_bus
            || !dword_offset_ok(offset, ECAM_FUNCTION_SIZE as u16)
        {
            return None;
        }
        let byte = usize::from(address.bus() - self.start_bus) * ECAM_BUS_SIZE
            + usize::from(address.device()) * 8 * ECAM_FUNCTION_SIZE
            + usize::from(address.function()) * ECAM_FUNCTION_SIZE
            + usize::from(offset);
        // SAFETY: bus is inside start_bus..=end_bus and device < 32,
        // function < 8, offset < 4096, so `byte` is inside the window `new`
        // promised to be mapped.
        let ptr = unsafe { self.base.as_ptr().add(byte) }.cast::<u32>();
        // SAFETY: non-null (in bounds of a NonNull-based mapping) and 4-byte
        // aligned (aligned base, dword offset); only used for volatile access.
        Some(unsafe { VolatilePtr::new(NonNull::new_unchecked(ptr)) })
    }
}

impl ConfigRegionAccess for Ecam {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        self.register(address, offset)
            .map_or(u32::MAX, |r| r.read())
    }

    unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
        if let Some(r) = self.register(address, offset) {
            r.write(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake window of two buses in ordinary memory.
    fn with_ecam(f: impl FnOnce(&Ecam)) {
        let mut memory = vec![0u32; 2 * ECAM_BUS_SIZE / 4];
        let base = NonNull::new(memory.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `memory` covers two buses and outlives `ecam`.
        let ecam = unsafe { Ecam::new(base, 1, 4, 5) };
        f(&ecam);
    }

    #[test]
    fn ecam_reads_and_writes_the_dword_of_bus_device_function_offset() {
        let mut memory = vec![0u32; 2 * ECAM_BUS_SIZE / 4];
        {
            let base = NonNull::new(memory.as_mut_ptr().cast::<u8>()).unwrap();
            // SAFETY: `memory` covers buses 4 and 5 and outlives `ecam`.
            let ecam = unsafe { Ecam::new(base, 1, 4, 5) };
            let address = PciAddress::new(1, 5, 3, 2);
            // SAFETY: the accessor validates everything itself.
            unsafe { ecam.write(address, 0x10, 0xAABB_CCDD) };
            // SAFETY: as above.
            assert_eq!(unsafe { ecam.read(address, 0x10) }, 0xAABB_CCDD);
        }
        let index =
            (ECAM_BUS_SIZE + 3 * 8 * ECAM_FUNCTION_SIZE + 2 * ECAM_FUNCTION_SIZE + 0x10) / 4;
        assert_eq!(memory[index], 0xAABB_CCDD);
        assert_eq!(memory.iter().filter(|&&d| d != 0).count(), 1);
    }

    #[test]
    fn ecam_outside_its_buses_segment_or_dwords_reads_all_ones_and_drops_writes() {
        with_ecam(|ecam| {
            for (address, offset) in [
                (PciAddress::new(1, 3, 0, 0), 0),
                (PciAddress::new(1, 6, 0, 0), 0),
                (PciAddress::new(0, 4, 0, 0), 0),
                (PciAddress::new(1, 4, 0, 0), 2),
                (PciAddress::new(1, 4, 0, 0), 4096),
            ] {
                // SAFETY: the accessor validates everything itself.
                unsafe { ecam.write(address, offset, 0x1234_5678) };
                // SAFETY: as above.
                assert_eq!(unsafe { ecam.read(address, offset) }, u32::MAX);
            }
            // Nothing leaked into bus 4 device 0 either.
            // SAFETY: as above.
            assert_eq!(unsafe { ecam.read(PciAddress::new(1, 4, 0, 0), 0) }, 0);
        });
    }
}
