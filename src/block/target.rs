//! What a block device runs on: a controller of the driver (named by its
//! [`ControllerId`]) or a controller used on its own.

use pci_types::ConfigRegionAccess;

use crate::block::handle::NamespaceHandle;
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::event::ControllerId;
use crate::link::DeviceLink;
use crate::nvme::{Controller, IoOp};
use crate::platform::{PhysAddr, Platform};

mod sealed {
    /// Only this crate implements [`super::BlockTarget`].
    pub trait Sealed {}

    /// Proof that a call comes from this crate: the methods taking it hand
    /// the device a bare physical address, which only memory the caller owns
    /// as a `DmaRegion` may be.
    pub struct Private(pub(crate) ());

    /// A direction of transfer.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Direction {
        /// Device to memory.
        Read,
        /// Memory to device.
        Write,
    }
}

pub(crate) use sealed::{Direction, Private};

/// Where namespace handles come from and where their I/O goes: a
/// [`Driver`] (handles name a controller by [`ControllerId`]), a standalone
/// [`Controller`], or a `&mut` of either.
pub trait BlockTarget: sealed::Sealed {
    /// The platform DMA memory comes from.
    type Platform: Platform;

    /// The platform.
    fn platform(&self) -> &Self::Platform;

    /// A handle on namespace `nsid` of `controller` (ignored by a standalone
    /// controller), validated now: the controller serves and serves that
    /// namespace. Finishes a bring-up in progress first.
    fn namespace_handle(
        &mut self,
        controller: Option<ControllerId>,
        nsid: u32,
    ) -> Result<NamespaceHandle>;

    /// Checks `handle` (see [`NamespaceHandle`]) and, if it holds, moves
    /// `len` bytes at `phys` to or from `lba`, blocking.
    #[doc(hidden)]
    fn transfer(
        &mut self,
        handle: &NamespaceHandle,
        lba: u64,
        phys: PhysAddr,
        len: usize,
        direction: Direction,
        _: Private,
    ) -> Result<()>;

    /// Checks `handle` and makes every completed write durable, blocking.
    fn flush(&mut self, handle: &NamespaceHandle) -> Result<()>;
}

/// The controller `handle` was made on, checked to be serving the same
/// namespace still.
fn checked<'c, P: Platform, L: DeviceLink, const Q: usize, const D: usize>(
    c: &'c mut Controller<P, L, Q, D>,
    handle: &NamespaceHandle,
) -> Result<&'c mut Controller<P, L, Q, D>> {
    if c.state().is_finished() {
        return Err(Error::StaleHandle);
    }
    // A reset's bring-up discovers the namespaces again: finish it first.
    c.ensure_ready()?;
    handle.check(c.namespace(handle.nsid()).ok())?;
    Ok(c)
}

fn handle_on<P: Platform, L: DeviceLink, const Q: usize, const D: usize>(
    c: &mut Controller<P, L, Q, D>,
    id: Option<ControllerId>,
    nsid: u32,
) -> Result<NamespaceHandle> {
    c.ensure_ready()?;
    let max_transfer = c.max_transfer();
    let ns = *c.namespace(nsid)?;
    let place = c.namespace_place(nsid);
    NamespaceHandle::new(id, c.state(), &ns, max_transfer, place)
}

fn transfer_on<P: Platform, L: DeviceLink, const Q: usize, const D: usize>(
    c: &mut Controller<P, L, Q, D>,
    handle: &NamespaceHandle,
    lba: u64,
    phys: PhysAddr,
    len: usize,
    direction: Direction,
) -> Result<()> {
    let op: fn(u32, u64, u32) -> IoOp = match direction {
        Direction::Write => |nsid, lba, blocks| IoOp::Write { nsid, lba, blocks },
        Direction::Read => |nsid, lba, blocks| IoOp::Read { nsid, lba, blocks },
    };
    checked(c, handle)?.transfer_blocking(handle.nsid(), lba, phys, len, op)
}

impl<P: Platform, L: DeviceLink, const Q: usize, const D: usize> sealed::Sealed
    for Controller<P, L, Q, D>
{
}

impl<P: Platform, L: DeviceLink, const Q: usize, const D: usize> BlockTarget
    for Controller<P, L, Q, D>
{
    type Platform = P;

    fn platform(&self) -> &P {
        Controller::platform(self)
    }

    fn namespace_handle(
        &mut self,
        _controller: Option<ControllerId>,
        nsid: u32,
    ) -> Result<NamespaceHandle> {
        handle_on(self, None, nsid)
    }

    fn transfer(
        &mut self,
        handle: &NamespaceHandle,
        lba: u64,
        phys: PhysAddr,
        len: usize,
        direction: Direction,
        _: Private,
    ) -> Result<()> {
        if handle.controller().is_some() {
            // Made on a driver's controller, not on this one.
            return Err(Error::StaleHandle);
        }
        transfer_on(self, handle, lba, phys, len, direction)
    }

    fn flush(&mut self, handle: &NamespaceHandle) -> Result<()> {
        if handle.controller().is_some() {
            return Err(Error::StaleHandle);
        }
        checked(self, handle)?.flush(handle.nsid())
    }
}

impl<
        P: Platform + Clone,
        C: ConfigRegionAccess + Clone,
        const N: usize,
        const Q: usize,
        const D: usize,
    > sealed::Sealed for Driver<P, C, N, Q, D>
{
}

impl<
        P: Platform + Clone,
        C: ConfigRegionAccess + Clone,
        const N: usize,
        const Q: usize,
        const D: usize,
    > Driver<P, C, N, Q, D>
{
    /// The controller a handle names: `StaleHandle` when the handle was made
    /// without the driver or its entry now holds another attach.
    fn handle_controller(
        &mut self,
        handle: &NamespaceHandle,
    ) -> Result<&mut crate::driver::DriverController<P, C, Q, D>> {
        let id = handle.controller().ok_or(Error::StaleHandle)?;
        self.controller(id)
    }
}

impl<
        P: Platform + Clone,
        C: ConfigRegionAccess + Clone,
        const N: usize,
        const Q: usize,
        const D: usize,
    > BlockTarget for Driver<P, C, N, Q, D>
{
    type Platform = P;

    fn platform(&self) -> &P {
        Driver::platform(self)
    }

    /// `controller` is required: `InvalidArgument` without it.
    fn namespace_handle(
        &mut self,
        controller: Option<ControllerId>,
        nsid: u32,
    ) -> Result<NamespaceHandle> {
        let id = controller.ok_or(Error::InvalidArgument {
            what: "a driver's namespace handle needs its controller",
        })?;
        handle_on(self.controller(id)?, Some(id), nsid)
    }

    fn transfer(
        &mut self,
        handle: &NamespaceHandle,
        lba: u64,
        phys: PhysAddr,
        len: usize,
        direction: Direction,
        _: Private,
    ) -> Result<()> {
        transfer_on(
            self.handle_controller(handle)?,
            handle,
            lba,
            phys,
            len,
            direction,
        )
    }

    fn flush(&mut self, handle: &NamespaceHandle) -> Result<()> {
        checked(self.handle_controller(handle)?, handle)?.flush(handle.nsid())
    }
}

impl<T: BlockTarget + ?Sized> sealed::Sealed for &mut T {}

impl<T: BlockTarget + ?Sized> BlockTarget for &mut T {
    type Platform = T::Platform;

    fn platform(&self) -> &Self::Platform {
        (**self).platform()
    }

    fn namespace_handle(
        &mut self,
        controller: Option<ControllerId>,
        nsid: u32,
    ) -> Result<NamespaceHandle> {
        (**self).namespace_handle(controller, nsid)
    }

    fn transfer(
        &mut self,
        handle: &NamespaceHandle,
        lba: u64,
        phys: PhysAddr,
        len: usize,
        direction: Direction,
        private: Private,
    ) -> Result<()> {
        (**self).transfer(handle, lba, phys, len, direction, private)
    }

    fn flush(&mut self, handle: &NamespaceHandle) -> Result<()> {
        (**self).flush(handle)
    }
}
