//! The device tree QEMU places at the start of RAM for a kernel that is not
//! Linux: RAM, the PCIe host bridge (ECAM, bus range, memory windows), the
//! kernel command line. Parsed with the `fdt` crate; the PCI `ranges` cells
//! are decoded here (PCI Bus Binding to IEEE 1275, 2.2.1.1).

use fdt::Fdt;

/// Where `virt` places the tree for a non-Linux kernel.
pub const DTB_ADDRESS: usize = 0x4000_0000;
/// Largest tree accepted.
const DTB_MAX: usize = 1 << 20;

/// A physical range: base and size in bytes.
pub type Range = (u64, u64);

/// What the board takes from the tree.
#[derive(Clone, Copy, Debug)]
pub struct Machine {
    /// The first RAM range.
    pub ram: Range,
    /// The ECAM window of the PCIe host bridge.
    pub ecam: Range,
    /// Bus numbers the ECAM window covers.
    pub buses: (u8, u8),
    /// The 32-bit non-prefetchable memory window (CPU address = PCI address).
    pub memory: Option<Range>,
    /// The 64-bit (prefetchable) memory window.
    pub prefetchable: Option<Range>,
    /// The kernel command line (`/chosen/bootargs`).
    pub bootargs: &'static str,
}

/// Space code of a PCI address's high cell (bits 25:24).
const SPACE_MEMORY_32: u32 = 0b10;
const SPACE_MEMORY_64: u32 = 0b11;

fn be32(bytes: &[u8], cell: usize) -> Option<u32> {
    let b = bytes.get(cell * 4..cell * 4 + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn be64(bytes: &[u8], cell: usize) -> Option<u64> {
    Some((u64::from(be32(bytes, cell)?) << 32) | u64::from(be32(bytes, cell + 1)?))
}

/// Reads the tree at [`DTB_ADDRESS`].
pub fn read() -> Result<Machine, &'static str> {
    // SAFETY: RAM at the start of `virt`'s memory holds the tree QEMU put
    // there; it is mapped, never written, and the image and the DMA pool lie
    // above it, so a 'static shared borrow of it is sound.
    let head = unsafe { core::slice::from_raw_parts(DTB_ADDRESS as *const u8, 8) };
    let size = be32(head, 1).ok_or("no header")? as usize;
    if be32(head, 0) != Some(0xD00D_FEED) || size > DTB_MAX {
        return Err("no device tree at the start of RAM");
    }
    // SAFETY: as above, for the size the header gives (bounded).
    let bytes: &'static [u8] =
        unsafe { core::slice::from_raw_parts(DTB_ADDRESS as *const u8, size) };
    let tree = Fdt::new(bytes).map_err(|_| "malformed device tree")?;
    let ram = tree
        .memory()
        .regions()
        .next()
        .and_then(|r| Some((r.starting_address as u64, r.size? as u64)))
        .ok_or("no memory node")?;
    let pcie = tree
        .find_compatible(&["pci-host-ecam-generic"])
        .ok_or("no pci-host-ecam-generic node")?;
    let ecam = pcie
        .reg()
        .and_then(|mut r| r.next())
        .and_then(|r| Some((r.starting_address as u64, r.size? as u64)))
        .ok_or("PCIe node without reg")?;
    let buses = pcie
        .property("bus-range")
        .and_then(|p| Some((be32(p.value, 0)? as u8, be32(p.value, 1)? as u8)))
        .unwrap_or((0, ((ecam.1 >> 20).saturating_sub(1)).min(255) as u8));
    let mut memory = None;
    let mut prefetchable = None;
    if let Some(ranges) = pcie.property("ranges") {
        // (pci address: 3 cells, cpu address: 2 cells, size: 2 cells)
        for entry in ranges.value.chunks_exact(7 * 4) {
            let (Some(high), Some(pci), Some(cpu), Some(size)) = (
                be32(entry, 0),
                be64(entry, 1),
                be64(entry, 3),
                be64(entry, 5),
            ) else {
                continue;
            };
            if pci != cpu {
                // The driver programs CPU addresses into BARs: only
                // identity-translated windows are usable.
                continue;
            }
            match (high >> 24) & 0b11 {
                SPACE_MEMORY_32 => memory = Some((cpu, size)),
                SPACE_MEMORY_64 => prefetchable = Some((cpu, size)),
                _ => {}
            }
        }
    }
    Ok(Machine {
        ram,
        ecam,
        buses,
        memory,
        prefetchable,
        bootargs: tree.chosen().bootargs().unwrap_or(""),
    })
}
