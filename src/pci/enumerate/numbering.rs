//! Bus numbers: checking firmware's, handing out new ones.
//!
//! Each bus number records the depth of the deepest bridge whose
//! secondary..=subordinate range holds it. A bridge at depth `d` may take a
//! range only where its parent (depth `d - 1`) is the deepest holder; so
//! sibling ranges never overlap and every bus is scanned at most once.

use pci_types::ConfigRegionAccess;

use super::{Bridge, Frame, Topology, Walk, BUS_COUNT, MAX_DEPTH};
use crate::error::Error;
use crate::pci::config::{ConfigSpace, PRIMARY_BUS};

/// Who holds each bus number during the walk.
pub(super) struct Buses {
    /// Depth of the deepest bridge whose range contains the bus (0: only the
    /// root, i.e. free).
    claimed: [u8; BUS_COUNT],
    /// Highest bus number in any bridge's range.
    max: u8,
}

impl Buses {
    pub(super) fn new() -> Self {
        Self {
            claimed: [0; BUS_COUNT],
            max: 0,
        }
    }
}

impl<const FUNCTIONS: usize, const BRIDGES: usize> Topology<FUNCTIONS, BRIDGES> {
    /// The ancestors of bridge `index` (outermost first) and its depth.
    pub(super) fn chain(&self, index: usize) -> (heapless::Vec<usize, MAX_DEPTH>, u8) {
        let mut reversed: heapless::Vec<usize, MAX_DEPTH> = heapless::Vec::new();
        let mut at = self.bridges[index].parent;
        while let Some(p) = at {
            // Parents are recorded before children, so the chain is finite;
            // the capacity bound stops it regardless.
            if reversed.push(p).is_err() || p >= index {
                break;
            }
            at = self.bridges[p].parent;
        }
        let depth = reversed.len() as u8 + 1;
        reversed.reverse();
        (reversed, depth)
    }

    /// Whether firmware's numbers for bridge `index` at `depth` fit: the
    /// secondary bus lies behind the bridge's own bus, inside the parent's
    /// range, and no sibling (or anything deeper) already holds any of them.
    pub(super) fn firmware_numbers_valid(&self, walk: &Walk, index: usize, depth: u8) -> bool {
        let b = &self.bridges[index];
        let bus = b.address.bus();
        let parent_limit = b.parent.map_or(u8::MAX, |p| self.bridges[p].subordinate);
        let valid = b.secondary > bus
            && b.secondary <= b.subordinate
            && b.subordinate <= parent_limit
            && (b.secondary..=b.subordinate)
                .all(|x| walk.buses.claimed[usize::from(x)] == depth - 1);
        if !valid && b.secondary != 0 {
            log::warn!(
                "pci: bridge {} has unusable bus numbers {}/{}/{}; renumbering",
                b.address,
                b.primary,
                b.secondary,
                b.subordinate
            );
        }
        valid
    }

    /// Whether bus `x` may be covered by a bridge at depth `depth` whose
    /// ancestors are `chain`: nobody holds it, or only one of those ancestors
    /// (so no sibling range and nothing deeper routes it elsewhere).
    fn held_only_by_chain(&self, walk: &Walk, chain: &[usize], depth: u8, x: u8) -> bool {
        let k = walk.buses.claimed[usize::from(x)];
        k < depth
            && (k == 0 || {
                let a = &self.bridges[chain[usize::from(k) - 1]];
                (a.secondary..=a.subordinate).contains(&x)
            })
    }

    /// Gives bridge `index` a free bus number (preferring one already routed
    /// to its parent, else the next after every number in use) and grows its
    /// ancestors' subordinate ranges to cover it. The frame of its secondary
    /// bus, or `None` when no number fits (noted as an error).
    pub(super) fn number_bridge<A: ConfigRegionAccess + ?Sized>(
        &mut self,
        access: &A,
        walk: &mut Walk,
        index: usize,
    ) -> Option<Frame> {
        let (chain, depth) = self.chain(index);
        if usize::from(depth) > MAX_DEPTH {
            walk.note(Error::CapacityExceeded {
                what: "bridge nesting depth",
                limit: MAX_DEPTH as u32,
            });
            return None;
        }
        let own_bus = self.bridges[index].address.bus();
        let fits = |bus: u8| {
            bus > own_bus
                && self.held_only_by_chain(walk, &chain, depth, bus)
                && chain.iter().enumerate().all(|(j, &a)| {
                    let from = u16::from(self.bridges[a].subordinate) + 1;
                    (from..=u16::from(bus))
                        .all(|x| self.held_only_by_chain(walk, &chain, j as u8 + 1, x as u8))
                })
        };
        let next_after_all = walk.buses.max.checked_add(1);
        // On bus 0 the next number after all others keeps the new subtree
        // contiguous; deeper, a spare number in the parent's range avoids
        // growing ranges at all.
        let bus = if chain.is_empty() {
            next_after_all.filter(|&b| fits(b))
        } else {
            (own_bus.saturating_add(1)..=walk.buses.max)
                .find(|&b| fits(b))
                .or(next_after_all.filter(|&b| fits(b)))
        };
        let Some(bus) = bus else {
            walk.note(Error::CapacityExceeded {
                what: "bus numbers for a bridge",
                limit: BUS_COUNT as u32,
            });
            return None;
        };

        let mut routed = true;
        for (j, &ancestor) in chain.iter().enumerate() {
            let a = &mut self.bridges[ancestor];
            if a.subordinate < bus {
                let from = a.subordinate + 1;
                a.subordinate = bus;
                routed &= write_bus_numbers(access, walk, a);
                claim(&mut walk.buses, from, bus, j as u8 + 1);
            }
        }
        let b = &mut self.bridges[index];
        b.primary = own_bus;
        b.secondary = bus;
        b.subordinate = bus;
        b.numbered_by_walk = true;
        routed &= write_bus_numbers(access, walk, b);
        claim(&mut walk.buses, bus, bus, depth);
        log::debug!("pci: bridge {} numbered, secondary bus {bus}", b.address);
        // A bus no bridge routes to has nothing to walk.
        routed.then(|| Frame::new(bus, Some(index), depth))
    }
}

impl<const FUNCTIONS: usize, const BRIDGES: usize> Topology<FUNCTIONS, BRIDGES> {
    /// Renumbering: gives bridge `index` the next free bus as its secondary
    /// bus and, until its subtree is walked, every bus above it as its
    /// subordinate range (so configuration cycles reach whatever is behind).
    pub(super) fn open_range<A: ConfigRegionAccess + ?Sized>(
        &mut self,
        access: &A,
        walk: &mut Walk,
        index: usize,
        depth: u8,
    ) -> Option<Frame> {
        let own_bus = self.bridges[index].address.bus();
        let next = walk.buses.max.max(own_bus).checked_add(1);
        let Some(bus) = next.filter(|&b| b <= walk.ceiling) else {
            walk.note(Error::CapacityExceeded {
                what: "bus numbers for a bridge",
                limit: BUS_COUNT as u32,
            });
            return None;
        };
        let b = &mut self.bridges[index];
        b.primary = own_bus;
        b.secondary = bus;
        b.subordinate = walk.ceiling;
        b.numbered_by_walk = true;
        let routed = write_bus_numbers(access, walk, b);
        claim(&mut walk.buses, bus, bus, depth);
        routed.then(|| Frame::new(bus, Some(index), depth))
    }

    /// Renumbering: closes bridge `index`'s range once its subtree is
    /// walked, at the highest bus used behind it, or further for a hot-plug
    /// capable port's reserve.
    pub(super) fn close_range<A: ConfigRegionAccess + ?Sized>(
        &mut self,
        access: &A,
        walk: &mut Walk,
        index: usize,
    ) {
        let reserve = if self.bridges[index].hot_plug_capable() {
            walk.hotplug_buses
        } else {
            0
        };
        let b = &mut self.bridges[index];
        let last = walk
            .buses
            .max
            .max(b.secondary.saturating_add(reserve))
            .max(b.secondary)
            .min(walk.ceiling);
        b.subordinate = last;
        write_bus_numbers(access, walk, b);
        let b = &self.bridges[index];
        let from = b.secondary;
        walk.buses.max = walk.buses.max.max(last);
        for x in from..=last {
            // Deeper bridges' claims stay; the reserve becomes this bridge's.
            if walk.buses.claimed[usize::from(x)] == 0 {
                walk.buses.claimed[usize::from(x)] = 1;
            }
        }
    }
}

/// Marks buses `first..=last` as held at `depth`.
pub(super) fn claim(buses: &mut Buses, first: u8, last: u8, depth: u8) {
    for x in first..=last {
        buses.claimed[usize::from(x)] = depth;
    }
    buses.max = buses.max.max(last);
}

/// Writes a bridge's bus numbers, keeping the secondary latency timer that
/// shares their dword, and reads them back: a bridge that does not take
/// them routes nothing behind it, which is noted on `walk` with what it
/// reads. Returns whether it took them.
pub(super) fn write_bus_numbers<A: ConfigRegionAccess + ?Sized>(
    access: &A,
    walk: &mut Walk,
    bridge: &Bridge,
) -> bool {
    let config = ConfigSpace::new(access, bridge.address);
    let latency = config.read32(PRIMARY_BUS) & 0xFF00_0000;
    let numbers = u32::from(bridge.primary)
        | (u32::from(bridge.secondary) << 8)
        | (u32::from(bridge.subordinate) << 16);
    config.write32(PRIMARY_BUS, latency | numbers);
    let back = config.read32(PRIMARY_BUS) & 0x00FF_FFFF;
    if back != numbers {
        log::warn!(
            "pci: bridge {} does not take bus numbers {numbers:#08x} (reads {back:#08x}): nothing behind it is reachable",
            bridge.address
        );
        walk.note(Error::BadDeviceValue {
            field: "bridge bus numbers (read back)",
            value: u64::from(back),
        });
        return false;
    }
    true
}
