//! Blocking calls: each submits on queue 0 and waits for its own command
//! with the I/O deadline, leaving other completions for the next `poll`.

use super::checks::{aborted_means_timeout, check_range};
use super::IoOp;
use crate::error::{Error, Result};
use crate::link::DeviceLink;
use crate::nvme::controller::Controller;
use crate::platform::{DmaView, DmaViewMut, PhysAddr, Platform};

/// How often a blocking wait with no progress checks CSTS, in nanoseconds.
const STATUS_CHECK_NS: u64 = 1_000_000;

impl<P: Platform, L: DeviceLink, const QUEUES: usize, const DEPTH: usize>
    Controller<P, L, QUEUES, DEPTH>
{
    /// Reads `buffer.len()` bytes (a multiple of the block size) at `lba`,
    /// blocking. Splits transfers larger than one command may carry.
    /// `buffer` is a whole region (`&mut region`) or part of one
    /// (`region.view_mut(range)`).
    pub fn read<'b>(
        &mut self,
        nsid: u32,
        lba: u64,
        buffer: impl Into<DmaViewMut<'b>>,
    ) -> Result<()> {
        let buffer = buffer.into();
        let read = |nsid, lba, blocks| IoOp::Read { nsid, lba, blocks };
        self.transfer_blocking(nsid, lba, buffer.phys(), buffer.len(), read)
    }

    /// Writes `buffer.len()` bytes (a multiple of the block size) at `lba`,
    /// blocking. Splits transfers larger than one command may carry.
    /// `buffer` is a whole region (`&region`) or part of one
    /// (`region.view(range)`).
    pub fn write<'b>(&mut self, nsid: u32, lba: u64, buffer: impl Into<DmaView<'b>>) -> Result<()> {
        let buffer = buffer.into();
        let write = |nsid, lba, blocks| IoOp::Write { nsid, lba, blocks };
        self.transfer_blocking(nsid, lba, buffer.phys(), buffer.len(), write)
    }

    /// Like [`Controller::write`], with Force Unit Access: the data is
    /// durable when this returns, without a flush.
    pub fn write_fua<'b>(
        &mut self,
        nsid: u32,
        lba: u64,
        buffer: impl Into<DmaView<'b>>,
    ) -> Result<()> {
        let buffer = buffer.into();
        let write = |nsid, lba, blocks| IoOp::WriteFua { nsid, lba, blocks };
        self.transfer_blocking(nsid, lba, buffer.phys(), buffer.len(), write)
    }

    /// Makes every completed write to `nsid` durable, blocking.
    pub fn flush(&mut self, nsid: u32) -> Result<()> {
        self.execute_blocking(IoOp::Flush { nsid }, None)
    }

    /// Sets `blocks` blocks at `lba` to zero, blocking.
    pub fn write_zeroes(&mut self, nsid: u32, lba: u64, blocks: u64) -> Result<()> {
        self.ranged_blocking(nsid, lba, blocks, |nsid, lba, blocks| IoOp::WriteZeroes {
            nsid,
            lba,
            blocks,
        })
    }

    /// Deallocates (trims) `blocks` blocks at `lba`, blocking.
    pub fn deallocate(&mut self, nsid: u32, lba: u64, blocks: u64) -> Result<()> {
        self.ranged_blocking(nsid, lba, blocks, |nsid, lba, blocks| IoOp::Deallocate {
            nsid,
            lba,
            blocks,
        })
    }

    pub(crate) fn transfer_blocking(
        &mut self,
        nsid: u32,
        lba: u64,
        phys: PhysAddr,
        len: usize,
        op: fn(u32, u64, u32) -> IoOp,
    ) -> Result<()> {
        // A controller that is not serving has no namespaces worth naming.
        self.ensure_ready()?;
        let ns = *self.namespace(nsid)?;
        let block = ns.block_size() as usize;
        if len == 0 {
            return Err(Error::EmptyTransfer);
        }
        // Block sizes are powers of two (validated at identify): masks and
        // shifts, no division.
        if len & (block - 1) != 0 {
            return Err(Error::InvalidArgument {
                what: "buffer length must be a multiple of the block size",
            });
        }
        let total = (len >> ns.info.block_shift) as u64;
        check_range(lba, total, ns.blocks())?;
        let reads = matches!(op(nsid, lba, 0), IoOp::Read { .. });
        let mut done = 0u64;
        while done < total {
            let blocks = (total - done).min(ns.max_blocks as u64) as u32;
            let offset = (done as usize) * block;
            let at = phys
                .checked_add(offset as u64)
                .ok_or(Error::InvalidArgument {
                    what: "buffer address overflows",
                })?;
            let command = op(nsid, lba + done, blocks);
            let bytes = blocks as usize * block;
            self.execute_blocking(command, Some((at, bytes)))?;
            if reads {
                self.shared.platform.dma_invalidate(at, bytes);
            }
            done += blocks as u64;
        }
        Ok(())
    }

    fn ranged_blocking(
        &mut self,
        nsid: u32,
        lba: u64,
        blocks: u64,
        op: impl Fn(u32, u64, u32) -> IoOp,
    ) -> Result<()> {
        self.ensure_ready()?;
        let ns = *self.namespace(nsid)?;
        if blocks == 0 {
            return Err(Error::EmptyTransfer);
        }
        check_range(lba, blocks, ns.blocks())?;
        let mut done = 0;
        while done < blocks {
            let n = (blocks - done).min(1 << 16) as u32;
            self.execute_blocking(op(nsid, lba + done, n), None)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Submits one command on queue 0 for a caller who waits, and waits for it
    /// with the I/O deadline. Completions of other commands that arrive
    /// meanwhile stay queued for the caller's next `poll`.
    fn execute_blocking(&mut self, op: IoOp, data: Option<(PhysAddr, usize)>) -> Result<()> {
        let cid = self.submit_waited(op, data)?;
        self.wait_blocking(&[cid]).1
    }

    /// Queues one command on queue 0 for a caller who waits for it with
    /// [`Controller::wait_blocking`] (never delivered through `poll`; the
    /// data memory stays the caller's). It reaches the device at the wait.
    pub(crate) fn submit_waited(
        &mut self,
        op: IoOp,
        data: Option<(PhysAddr, usize)>,
    ) -> Result<u16> {
        self.ensure_ready()?;
        self.prepare(0, op, data, 0, true, &mut None)
    }

    /// Waits with the I/O deadline until one of `cids` (commands from
    /// [`Controller::submit_waited`], not yet waited for) is done: returns its
    /// index in `cids` and its result. Completions of other commands that
    /// arrive meanwhile stay queued for the caller's next `poll`. The index
    /// is `None` only if the controller ended without any of them done.
    pub(crate) fn wait_blocking(&mut self, cids: &[u16]) -> (Option<usize>, Result<()>) {
        if cids.is_empty() {
            return (
                None,
                Err(Error::Internal {
                    what: "a wait for no command",
                }),
            );
        }
        let mut last_progress = self.now();
        loop {
            if self.holding() {
                // Failed, but the device may still reach the buffer: drive
                // the stop this command waits for (bounded by CAP.TO).
                let _ = self.advance();
                continue;
            }
            let live = self.rings_live();
            let q = self.shared.io[0].get_mut();
            let shadow = self.owned.pages.doorbells();
            if live {
                q.publish(&self.shared.platform, &self.shared.regs, shadow);
                if q.reap(&self.shared.platform, &self.shared.regs, shadow) > 0 {
                    last_progress = self.shared.platform.now();
                }
            }
            // Done also covers a command failed by a reset or a removal.
            let found = cids
                .iter()
                .enumerate()
                .find_map(|(i, &cid)| q.tracker.take_done_cid(cid).map(|done| (i, done)));
            if let Some((index, done)) = found {
                if done.result.is_ok() {
                    self.note_success();
                }
                if self.owned.lifecycle.quarantine().regions > 0 {
                    // The device may still write the caller's buffer.
                    return (Some(index), Err(Error::Quarantined));
                }
                let result = aborted_means_timeout(done.result, self.shared.config.io_timeout);
                return (Some(index), result);
            }
            if self.owned.lifecycle.state().is_finished() {
                if self.owned.lifecycle.quarantine().regions > 0 {
                    return (None, Err(Error::Quarantined));
                }
                return (
                    None,
                    Err(self.owned.lifecycle.failure().unwrap_or(Error::NotReady)),
                );
            }
            if !cids
                .iter()
                .any(|&cid| q.tracker.in_flight_mut(cid).is_some())
            {
                // Neither done nor in flight: nothing would end this wait.
                return (
                    None,
                    Err(Error::Internal {
                        what: "a wait for a command not in flight",
                    }),
                );
            }
            let now = self.now();
            self.expire(now);
            if now.as_nanos().saturating_sub(last_progress.as_nanos()) > STATUS_CHECK_NS {
                last_progress = now;
                if let Some(error) = self.check_health() {
                    self.lost(error);
                }
            }
        }
    }
}
