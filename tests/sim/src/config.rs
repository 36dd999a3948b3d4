//! One function's configuration space: bytes plus per-byte write masks, the way
//! PCI hardware (and QEMU) implements it. A write changes the bits of `wmask`,
//! clears the bits of `w1c` that are written as one, and leaves the rest.
//! BAR sizing falls out of this: the low bits of a BAR below its size are not
//! writable, so writing all-ones reads back the size mask.

/// Size of PCIe extended configuration space.
pub(crate) const CONFIG_SIZE: usize = 4096;

/// Standard header offsets (PCI Local Bus 3.0, section 6.1; PCI-PCI bridge 1.2).
pub(crate) mod off {
    pub const VENDOR: usize = 0x00;
    pub const COMMAND: usize = 0x04;
    pub const STATUS: usize = 0x06;
    pub const REVISION: usize = 0x08;
    pub const HEADER_TYPE: usize = 0x0E;
    pub const BAR0: usize = 0x10;
    pub const PRIMARY_BUS: usize = 0x18;
    pub const SECONDARY_BUS: usize = 0x19;
    pub const SUBORDINATE_BUS: usize = 0x1A;
    pub const IO_BASE: usize = 0x1C;
    pub const MEM_BASE: usize = 0x20;
    pub const MEM_LIMIT: usize = 0x22;
    pub const PREF_BASE: usize = 0x24;
    pub const PREF_LIMIT: usize = 0x26;
    pub const PREF_BASE_UPPER: usize = 0x28;
    pub const PREF_LIMIT_UPPER: usize = 0x2C;
    pub const IO_UPPER: usize = 0x30;
    pub const CAP_PTR: usize = 0x34;
    pub const INTERRUPT_LINE: usize = 0x3C;
    pub const BRIDGE_CONTROL: usize = 0x3E;
}

/// Command register bits.
pub(crate) mod cmd {
    pub const IO: u16 = 1 << 0;
    pub const MEMORY: u16 = 1 << 1;
    pub const BUS_MASTER: u16 = 1 << 2;
    pub const INTX_DISABLE: u16 = 1 << 10;
}

/// Status register: capability list present.
const STATUS_CAP_LIST: u16 = 1 << 4;

pub(crate) struct ConfigSpace {
    data: Box<[u8; CONFIG_SIZE]>,
    wmask: Box<[u8; CONFIG_SIZE]>,
    w1c: Box<[u8; CONFIG_SIZE]>,
    /// Offset of the last capability added, to chain the next one.
    last_cap: Option<usize>,
}

impl ConfigSpace {
    /// A header with IDs and class code; everything else read-only zero.
    pub(crate) fn new(vendor: u16, device: u16, class: [u8; 3], header_type: u8) -> Self {
        let mut c = Self {
            data: Box::new([0; CONFIG_SIZE]),
            wmask: Box::new([0; CONFIG_SIZE]),
            w1c: Box::new([0; CONFIG_SIZE]),
            last_cap: None,
        };
        c.set16(off::VENDOR, vendor);
        c.set16(off::VENDOR + 2, device);
        c.data[off::REVISION] = 0x02;
        // Class code: prog-if, subclass, base class at 0x09..0x0B.
        c.data[0x09..0x0C].copy_from_slice(&class);
        c.data[off::HEADER_TYPE] = header_type;
        c.mask16(
            off::COMMAND,
            cmd::IO | cmd::MEMORY | cmd::BUS_MASTER | 1 << 6 | 1 << 8 | cmd::INTX_DISABLE,
        );
        // Status error bits are RW1C.
        c.w1c16(off::STATUS, 0xF900);
        c.data[off::INTERRUPT_LINE] = 0xFF;
        c.wmask[off::INTERRUPT_LINE] = 0xFF;
        c
    }

    pub(crate) fn get8(&self, at: usize) -> u8 {
        self.data[at]
    }
    pub(crate) fn get16(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.data[at], self.data[at + 1]])
    }
    pub(crate) fn get32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.data[at..at + 4].try_into().expect("4 bytes"))
    }
    pub(crate) fn set8(&mut self, at: usize, v: u8) {
        self.data[at] = v;
    }
    pub(crate) fn set16(&mut self, at: usize, v: u16) {
        self.data[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn set32(&mut self, at: usize, v: u32) {
        self.data[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn mask8(&mut self, at: usize, m: u8) {
        self.wmask[at] = m;
    }
    pub(crate) fn mask16(&mut self, at: usize, m: u16) {
        self.wmask[at..at + 2].copy_from_slice(&m.to_le_bytes());
    }
    pub(crate) fn mask32(&mut self, at: usize, m: u32) {
        self.wmask[at..at + 4].copy_from_slice(&m.to_le_bytes());
    }
    pub(crate) fn w1c16(&mut self, at: usize, m: u16) {
        self.w1c[at..at + 2].copy_from_slice(&m.to_le_bytes());
    }

    /// A dword write with hardware semantics.
    pub(crate) fn write32(&mut self, at: usize, value: u32) {
        for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
            let a = at + i;
            let w = self.wmask[a];
            let c = self.w1c[a];
            self.data[a] = ((self.data[a] & !w) | (byte & w)) & !(byte & c);
        }
    }

    /// Appends a capability with `id` and `len` bytes at `at`, chained after
    /// the previous one (or from the capability pointer).
    pub(crate) fn add_cap(&mut self, at: usize, id: u8, len: usize) {
        assert!(at >= 0x40 && at + len <= 0x100 && at.is_multiple_of(4));
        self.data[at] = id;
        self.data[at + 1] = 0;
        match self.last_cap {
            None => {
                self.data[off::CAP_PTR] = at as u8;
                let status = self.get16(off::STATUS) | STATUS_CAP_LIST;
                self.set16(off::STATUS, status);
            }
            Some(prev) => self.data[prev + 1] = at as u8,
        }
        self.last_cap = Some(at);
    }

    /// Points the last capability back at the first: a malformed list.
    pub(crate) fn close_cap_cycle(&mut self) {
        if let Some(last) = self.last_cap {
            self.data[last + 1] = self.data[off::CAP_PTR];
        }
    }

    /// A 64-bit memory BAR of `size` bytes at BAR0/BAR1, unassigned.
    pub(crate) fn bar64(&mut self, size: u64) {
        let mask = !(size - 1);
        // Low dword: memory space, type 64-bit (0b10 in bits 2:1), not
        // prefetchable; address bits below the size are hardwired to zero.
        self.set32(off::BAR0, 0b100);
        self.set32(off::BAR0 + 4, 0);
        self.mask32(off::BAR0, (mask as u32) & !0xF);
        self.mask32(off::BAR0 + 4, (mask >> 32) as u32);
    }

    /// The address BAR0/1 decodes (64-bit memory BAR).
    pub(crate) fn bar64_addr(&self) -> u64 {
        (self.get32(off::BAR0) & !0xF) as u64 | (self.get32(off::BAR0 + 4) as u64) << 32
    }

    pub(crate) fn command(&self) -> u16 {
        self.get16(off::COMMAND)
    }

    /// Bridge: the memory and prefetchable windows it forwards, if open.
    pub(crate) fn bridge_windows(&self) -> [Option<(u64, u64)>; 2] {
        let mem_base = ((self.get16(off::MEM_BASE) & 0xFFF0) as u64) << 16;
        let mem_limit = ((self.get16(off::MEM_LIMIT) & 0xFFF0) as u64) << 16 | 0xF_FFFF;
        let pb = ((self.get16(off::PREF_BASE) & 0xFFF0) as u64) << 16
            | (self.get32(off::PREF_BASE_UPPER) as u64) << 32;
        let pl = ((self.get16(off::PREF_LIMIT) & 0xFFF0) as u64) << 16
            | 0xF_FFFF
            | (self.get32(off::PREF_LIMIT_UPPER) as u64) << 32;
        let open = |b: u64, l: u64| (b <= l).then_some((b, l));
        [open(mem_base, mem_limit), open(pb, pl)]
    }

    /// Bridge: (secondary, subordinate) bus numbers.
    pub(crate) fn bus_range(&self) -> (u8, u8) {
        (
            self.get8(off::SECONDARY_BUS),
            self.get8(off::SUBORDINATE_BUS),
        )
    }

    /// Makes the type-1 header registers of a bridge writable and closes its
    /// windows (base above limit) as after reset.
    pub(crate) fn bridge_header(&mut self) {
        for at in [
            off::PRIMARY_BUS,
            off::SECONDARY_BUS,
            off::SUBORDINATE_BUS,
            0x1B,
        ] {
            self.mask8(at, 0xFF);
        }
        // I/O window: 32-bit I/O addressing, bits 7:4 writable.
        self.set8(off::IO_BASE, 0x01);
        self.set8(off::IO_BASE + 1, 0x01);
        self.mask8(off::IO_BASE, 0xF0);
        self.mask8(off::IO_BASE + 1, 0xF0);
        self.mask32(off::IO_UPPER, 0xFFFF_FFFF);
        self.w1c16(off::IO_BASE + 2, 0xF900);
        self.mask16(off::MEM_BASE, 0xFFF0);
        self.mask16(off::MEM_LIMIT, 0xFFF0);
        self.set16(off::MEM_BASE, 0xFFF0);
        self.set16(off::MEM_LIMIT, 0);
        // Prefetchable window: 64-bit capable (low nibble 1).
        self.mask16(off::PREF_BASE, 0xFFF0);
        self.mask16(off::PREF_LIMIT, 0xFFF0);
        self.set16(off::PREF_BASE, 0xFFF1);
        self.set16(off::PREF_LIMIT, 0x0001);
        self.mask32(off::PREF_BASE_UPPER, 0xFFFF_FFFF);
        self.mask32(off::PREF_LIMIT_UPPER, 0xFFFF_FFFF);
        self.mask16(off::BRIDGE_CONTROL, 0x0FFF);
    }

    /// Programs a bridge's memory window to `[base, base + len)` (1 MiB units).
    pub(crate) fn set_mem_window(&mut self, base: u64, len: u64) {
        let limit = base + len - 1;
        self.set16(off::MEM_BASE, ((base >> 16) as u16) & 0xFFF0);
        self.set16(off::MEM_LIMIT, ((limit >> 16) as u16) & 0xFFF0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_sizing_reads_back_the_size_mask() {
        let mut c = ConfigSpace::new(1, 2, [2, 8, 1], 0);
        c.bar64(16 << 10);
        c.write32(off::BAR0, !0);
        c.write32(off::BAR0 + 4, !0);
        assert_eq!(c.get32(off::BAR0), 0xFFFF_C004);
        assert_eq!(c.get32(off::BAR0 + 4), 0xFFFF_FFFF);
        c.write32(off::BAR0, 0xC000_0000);
        c.write32(off::BAR0 + 4, 0);
        assert_eq!(c.bar64_addr(), 0xC000_0000);
    }

    #[test]
    fn rw1c_bits_clear_only_when_written_as_one() {
        let mut c = ConfigSpace::new(1, 2, [0, 0, 0], 0);
        c.set16(off::STATUS, 0x8010);
        c.write32(off::COMMAND, 0x0000_0006);
        assert_eq!(c.get16(off::STATUS), 0x8010);
        assert_eq!(c.command(), 6);
        c.write32(off::COMMAND, 0x8000_0006);
        assert_eq!(c.get16(off::STATUS), 0x0010);
    }
}
