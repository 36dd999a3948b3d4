//! Commands in flight at a pull: submitted as one-block reads, then
//! collected into a ledger that proves each completed exactly once.

use bare_nvme::QueueId;
use bare_nvme::{ControllerId, Error, IoOp, Platform};

use super::{Ctx, MAX_INFLIGHT};
use crate::nvme::{ctrl, Nvme};
use crate::scenarios::{deadline_ms, Failure};
use crate::{clock, ensure, failure};

/// Submits `n` one-block reads on `id`, each with its own buffer and its
/// index as tag, spread over the I/O queues, and rings the doorbells.
pub(super) fn submit_reads(
    cx: &Ctx,
    d: &mut Nvme,
    id: ControllerId,
    n: usize,
) -> Result<usize, Failure> {
    let platform = cx.board.platform;
    let c = ctrl(d, id)?;
    let nsid = c.namespaces().first().map(|n| n.id()).unwrap_or(1);
    let block = c.namespace(nsid).map_err(|e| failure!("{e}"))?.block_size() as usize;
    let queues = c.io_queue_count().max(1);
    for tag in 0..n {
        let buffer = platform
            .dma_alloc(block, 4096)
            .ok_or_else(|| failure!("no DMA memory"))?;
        let op = IoOp::Read {
            nsid,
            lba: tag as u64 * 8,
            blocks: 1,
        };
        if let Err(r) = c.submit(
            QueueId::new(tag as u16 % queues),
            op,
            Some(buffer),
            tag as u64,
        ) {
            if let Some(b) = r.buffer {
                platform.dma_free(b);
            }
            return Err(failure!("submit {tag}: {}", r.error));
        }
    }
    c.ring_doorbells();
    Ok(c.in_flight())
}

/// What the commands of [`submit_reads`] came back with.
#[derive(Default, Debug)]
pub(super) struct Ledger {
    pub(super) ok: u32,
    pub(super) removed: u32,
    pub(super) aborted: u32,
}

/// Polls `id` until all `n` commands were delivered; each exactly once, with
/// success, `DeviceRemoved` or (orderly) `Aborted`.
pub(super) fn collect(
    cx: &Ctx,
    d: &mut Nvme,
    id: ControllerId,
    n: usize,
) -> Result<Ledger, Failure> {
    let platform = cx.board.platform;
    let c = ctrl(d, id)?;
    let queues = c.io_queue_count().max(1);
    let mut seen = [0u8; MAX_INFLIGHT];
    let mut ledger = Ledger::default();
    let mut other = None;
    let deadline = deadline_ms(cx.timeout_ms);
    let mut delivered = 0;
    while delivered < n && clock::now() < deadline {
        for q in 0..queues {
            delivered += c.poll(QueueId::new(q), |done| {
                if let Some(slot) = seen.get_mut(done.tag as usize) {
                    *slot += 1;
                }
                match done.result {
                    Ok(()) => ledger.ok += 1,
                    Err(Error::DeviceRemoved) => ledger.removed += 1,
                    Err(Error::Aborted) => ledger.aborted += 1,
                    Err(e) => other = Some(e),
                }
                if let Some(b) = done.buffer {
                    platform.dma_free(b);
                }
            });
        }
    }
    if let Some(e) = other {
        return Err(failure!("a command completed with {e}"));
    }
    ensure!(
        seen[..n].iter().all(|&s| s == 1) && delivered == n,
        "{delivered} of {n} completions; per command {:?}",
        &seen[..n.min(16)]
    );
    // Nothing more may come.
    let mut extra = 0;
    for q in 0..queues {
        extra += c.poll(QueueId::new(q), |_| {});
    }
    ensure!(extra == 0, "{extra} completions delivered twice");
    Ok(ledger)
}
