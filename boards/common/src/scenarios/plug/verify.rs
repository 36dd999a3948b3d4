//! Verified I/O: on a controller in the slot, and on the survivor outside it.

use bare_nvme::ControllerId;

use super::Ctx;
use crate::nvme::{self, ctrl, Buffers, Nvme};
use crate::scenarios::Outcome;
use crate::{ensure, failure};

/// One verified I/O round on `id` (pattern, or zeroes on a null backend).
pub(super) fn check_io(cx: &Ctx, d: &mut Nvme, id: ControllerId, lba: u64, seed: u64) -> Outcome {
    let zeroes = cx.zeroes;
    let c = ctrl(d, id)?;
    let nsid = c
        .namespaces()
        .first()
        .map(|n| n.id())
        .ok_or_else(|| failure!("{id} has no namespace"))?;
    let block = c.namespace(nsid).map_err(|e| failure!("{e}"))?.block_size() as usize;
    if !zeroes {
        return nvme::verified_io(c, nsid, lba, 16 * block, seed);
    }
    let mut buffers = Buffers::new(*c.platform());
    let b = buffers.alloc(16 * block)?;
    buffers.regions[b].as_mut_slice().fill(0xA5);
    c.read(nsid, lba, &mut buffers.regions[b])
        .map_err(|e| failure!("read {id}: {e}"))?;
    ensure!(
        buffers.regions[b].as_slice().iter().all(|&x| x == 0),
        "{id}: read of a zero device returned data"
    );
    Ok(())
}

/// Verified I/O on the controller outside the slot, if asked for.
pub(super) fn survivor_round(
    cx: &mut Ctx,
    d: &mut Nvme,
    survivor: Option<ControllerId>,
) -> Outcome {
    let Some(id) = survivor.filter(|_| cx.survivor_io) else {
        return Ok(());
    };
    let round = cx.survivor_rounds;
    cx.survivor_rounds += 1;
    let zeroes = cx.zeroes;
    cx.zeroes = false;
    let result = check_io(cx, d, id, 1024 + (round % 64) * 16, 0x5000 + round);
    cx.zeroes = zeroes;
    result.map_err(|e| failure!("survivor: {e}"))
}
