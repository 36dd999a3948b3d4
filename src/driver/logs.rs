//! Log pages through the driver, by controller identity: the calls of
//! [`crate::Controller`] (`log_page`, `begin_log_page`, `poll_log_page`)
//! for embedders that keep only `ControllerId`s.

use pci_types::ConfigRegionAccess;

use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::event::ControllerId;
use crate::nvme::{LogData, LogPage, LogRequest};
use crate::platform::Platform;

impl<
        P: Platform + Clone,
        C: ConfigRegionAccess + Clone,
        const N: usize,
        const QUEUES: usize,
        const DEPTH: usize,
    > Driver<P, C, N, QUEUES, DEPTH>
{
    /// Reads log page `page` of controller `id`, blocking (see
    /// [`crate::Controller::log_page`]).
    pub fn log_page(&mut self, id: ControllerId, page: LogPage) -> Result<LogData> {
        self.controller(id)?.log_page(page)
    }

    /// Starts reading log page `page` of controller `id` (split phase; the
    /// tick goes on meanwhile).
    pub fn begin_log_page(&mut self, id: ControllerId, page: LogPage) -> Result<LogRequest> {
        self.controller(id)?.begin_log_page(page)
    }

    /// The result of `request` on controller `id` once it completed, `None`
    /// while it runs; `StaleHandle` if the controller is gone from the
    /// table.
    #[must_use = "a finished read is returned once"]
    pub fn poll_log_page(
        &mut self,
        id: ControllerId,
        request: &LogRequest,
    ) -> Option<Result<LogData>> {
        match self.controller(id) {
            Ok(c) => c.poll_log_page(request),
            Err(e) => Some(Err::<LogData, Error>(e)),
        }
    }
}
