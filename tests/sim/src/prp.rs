//! Walking a command's PRP entries into a list of memory segments
//! (NVMe Base 2.0, section 4.1.1), strictly: every rule a driver can break is
//! reported as a protocol error.

use bare_nvme::spec::command::{sc, sct, Status};

use crate::counters::Stats;
use crate::memory::Arena;

/// PRP Offset Invalid (generic status 0x13).
pub(crate) const PRP_OFFSET_INVALID: u8 = 0x13;

/// Where a walk reports what it finds wrong.
pub(crate) trait Report {
    /// A rule of the protocol the driver broke.
    fn protocol(&mut self, what: String);
    /// A list entry outside every live allocation.
    fn wild_dma(&mut self);
}

impl Report for Stats {
    fn protocol(&mut self, what: String) {
        Stats::protocol(self, what);
    }
    fn wild_dma(&mut self) {
        self.c.wild_dma += 1;
    }
}

/// Walks that only want the memory a command names report nothing.
impl Report for () {
    fn protocol(&mut self, _: String) {}
    fn wild_dma(&mut self) {}
}

/// The segments `(phys, len)` a transfer of `len` bytes covers.
pub(crate) fn segments(
    mem: &Arena,
    stats: &mut Stats,
    prp1: u64,
    prp2: u64,
    len: usize,
    page: usize,
) -> Result<Vec<(u64, usize)>, Status> {
    walk(mem, stats, prp1, prp2, len, page, &mut Vec::new())
}

/// [`segments`], also collecting the address of every PRP list entry read
/// into `lists`; each broken rule goes to `report`.
pub(crate) fn walk(
    mem: &Arena,
    report: &mut impl Report,
    prp1: u64,
    prp2: u64,
    len: usize,
    page: usize,
    lists: &mut Vec<u64>,
) -> Result<Vec<(u64, usize)>, Status> {
    let bad_offset = Status::new(sct::GENERIC, PRP_OFFSET_INVALID);
    let mut segs = Vec::new();
    if len == 0 {
        return Ok(segs);
    }
    let page_u = page as u64;
    if prp1 & 3 != 0 {
        report.protocol(format!("PRP1 {prp1:#x} is not dword aligned"));
        return Err(bad_offset);
    }
    let first = len.min(page - (prp1 % page_u) as usize);
    segs.push((prp1, first));
    let mut rem = len - first;
    if rem == 0 {
        return Ok(segs);
    }
    if rem <= page {
        if !prp2.is_multiple_of(page_u) {
            report.protocol(format!("PRP2 {prp2:#x} (second page) has an offset"));
            return Err(bad_offset);
        }
        segs.push((prp2, rem));
        return Ok(segs);
    }
    if prp2 & 7 != 0 {
        report.protocol(format!("PRP list pointer {prp2:#x} is not qword aligned"));
        return Err(bad_offset);
    }
    let mut entry = prp2;
    // Bound the walk by the pages the transfer needs (plus chain pointers),
    // so a looping list cannot spin.
    let mut budget = rem / page + 2 + (rem / page) / (page / 8 - 1) + 1;
    while rem > 0 {
        budget = budget.saturating_sub(1);
        if budget == 0 {
            report.protocol("PRP list longer than the transfer".into());
            return Err(Status::new(sct::GENERIC, sc::INVALID_FIELD));
        }
        lists.push(entry);
        let value = match mem.read_u64(entry) {
            Ok(v) => v,
            Err(_) => {
                report.wild_dma();
                return Err(Status::new(sct::GENERIC, sc::DATA_TRANSFER_ERROR));
            }
        };
        let last_in_page = (entry + 8).is_multiple_of(page_u);
        if last_in_page && rem > page {
            // The last entry of a list page chains to the next list page.
            if value % page_u != 0 {
                report.protocol(format!(
                    "PRP list chain pointer {value:#x} is not page aligned"
                ));
                return Err(bad_offset);
            }
            entry = value;
            continue;
        }
        if value % page_u != 0 {
            report.protocol(format!("PRP list entry {value:#x} has an offset"));
            return Err(bad_offset);
        }
        let n = rem.min(page);
        segs.push((value, n));
        rem -= n;
        entry += 8;
    }
    Ok(segs)
}

/// Checks that every segment lies inside live DMA memory, all of them
/// inside the same allocation: one command's data is one buffer, so a
/// transfer that runs from one allocation into another (a buffer shorter
/// than the command, with the next region behind it) is as wrong as one
/// outside every allocation.
pub(crate) fn check(mem: &Arena, stats: &mut Stats, segs: &[(u64, usize)]) -> Result<(), Status> {
    let mut allocations = segs.iter().map(|&(p, n)| mem.allocation_of(p, n));
    let first = allocations.next().flatten();
    if first.is_some() && allocations.all(|a| a == first) {
        return Ok(());
    }
    if first.is_some() && segs.iter().all(|&(p, n)| mem.contains(p, n)) {
        stats.protocol(format!(
            "one command's data spans several allocations: {segs:x?}"
        ));
    }
    stats.c.wild_dma += 1;
    Err(Status::new(sct::GENERIC, sc::DATA_TRANSFER_ERROR))
}

/// Device-to-host transfer of `data` into the segments.
pub(crate) fn write_out(mem: &Arena, segs: &[(u64, usize)], data: &[u8]) {
    let mut at = 0;
    for &(p, n) in segs {
        mem.write(p, &data[at..at + n]).expect("segments checked");
        at += n;
    }
}

/// Host-to-device transfer from the segments.
pub(crate) fn read_in(mem: &Arena, segs: &[(u64, usize)], data: &mut [u8]) {
    let mut at = 0;
    for &(p, n) in segs {
        mem.read(p, &mut data[at..at + n])
            .expect("segments checked");
        at += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Owner;

    /// Two page-sized allocations side by side: a transfer whose first page
    /// is in one and whose second page is in the other is refused, though
    /// each page alone lies inside live memory.
    #[test]
    fn a_transfer_spanning_two_allocations_is_refused() {
        let mut mem = Arena::new(1 << 16);
        let a = mem.alloc(4096, 4096, Owner::Driver).unwrap();
        let b = mem.alloc(4096, 4096, Owner::Driver).unwrap();
        let (pa, pb) = (a.phys().as_u64(), b.phys().as_u64());
        let mut stats = Stats::default();
        assert_eq!(check(&mem, &mut stats, &[(pa, 4096)]), Ok(()));
        assert_eq!(
            check(&mem, &mut stats, &[(pa, 2048), (pa + 2048, 2048)]),
            Ok(())
        );
        assert_eq!(stats.c.wild_dma, 0);
        let spanning = [(pa + 3584, 512), (pb, 3584)];
        assert_eq!(
            check(&mem, &mut stats, &spanning),
            Err(Status::new(sct::GENERIC, sc::DATA_TRANSFER_ERROR))
        );
        assert_eq!((stats.c.wild_dma, stats.c.protocol_errors), (1, 1));
        mem.free(&a);
        mem.free(&b);
    }
}
