//! What a block device runs on: a controller of the driver (named by its
//! [`ControllerId`]) or a controller used on its own.
//!
//! Each target only says where the controller of a handle is; what is done
//! with it (making handles, checking them, submitting and waiting, flushing)
//! is written once, for every target, over [`sealed::NamespaceIo`].

use pci_types::ConfigRegionAccess;

use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::event::ControllerId;
use crate::link::DeviceLink;
use crate::nvme::NamespaceHandle;
use crate::nvme::{Controller, IoOp};
use crate::platform::{PhysAddr, Platform};

mod sealed {
    use super::{ControllerId, NamespaceHandle, PhysAddr, Result};

    /// Only this crate implements [`super::BlockTarget`].
    pub trait Sealed {
        /// The controller a new handle on `controller` is made on, and the
        /// name the handle keeps for it.
        fn io_for(
            &mut self,
            controller: Option<ControllerId>,
        ) -> Result<(&mut dyn NamespaceIo, Option<ControllerId>)>;

        /// The controller `handle` was made on (`StaleHandle` if this target
        /// does not hold it), not yet checked to serve it still.
        fn io_of(&mut self, handle: &NamespaceHandle) -> Result<&mut dyn NamespaceIo>;
    }

    /// What a block device asks of a controller, whatever its capacities
    /// and link.
    pub trait NamespaceIo {
        /// A handle on namespace `nsid`, named `id`.
        fn handle(&mut self, id: Option<ControllerId>, nsid: u32) -> Result<NamespaceHandle>;

        /// `Ok` if the controller still serves the namespace of `handle` as
        /// it was; finishes a bring-up in progress first.
        fn check(&mut self, handle: &NamespaceHandle) -> Result<()>;

        /// Checks `handle` and queues one command moving `len` bytes (at
        /// most the largest transfer) at `phys` to or from `lba`; the
        /// command reaches the device at the next [`NamespaceIo::wait`].
        fn submit(
            &mut self,
            handle: &NamespaceHandle,
            lba: u64,
            phys: PhysAddr,
            len: usize,
            direction: Direction,
            _: Private,
        ) -> Result<u16>;

        /// Waits (with the I/O deadline) until one of `cids` from
        /// [`NamespaceIo::submit`] is done: its index and its result; no
        /// index if the controller ended without any of them done.
        fn wait(&mut self, cids: &[u16], _: Private) -> (Option<usize>, Result<()>);

        /// Checks `handle` and makes every completed write durable.
        fn flush(&mut self, handle: &NamespaceHandle) -> Result<()>;
    }

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

pub(crate) use sealed::{Direction, NamespaceIo, Private, Sealed};

/// Where namespace handles come from and where their I/O goes: a
/// [`Driver`] (handles name a controller by [`ControllerId`]), a standalone
/// [`Controller`], or a `&mut` of either.
pub trait BlockTarget: sealed::Sealed {
    /// The platform DMA memory comes from.
    type Platform: Platform;

    /// The platform.
    fn platform(&self) -> &Self::Platform;

    /// A handle on namespace `nsid` of `controller` (ignored by a standalone
    /// controller; required by a driver, `InvalidArgument` without it),
    /// validated now: the controller serves and serves that namespace.
    /// Finishes a bring-up in progress first.
    fn namespace_handle(
        &mut self,
        controller: Option<ControllerId>,
        nsid: u32,
    ) -> Result<NamespaceHandle> {
        let (io, id) = self.io_for(controller)?;
        io.handle(id, nsid)
    }

    /// Checks `handle` (see [`NamespaceHandle`]) and makes every completed
    /// write durable, blocking.
    fn flush(&mut self, handle: &NamespaceHandle) -> Result<()> {
        self.io_of(handle)?.flush(handle)
    }
}

impl<P: Platform, L: DeviceLink, const Q: usize, const D: usize> NamespaceIo
    for Controller<P, L, Q, D>
{
    fn handle(&mut self, id: Option<ControllerId>, nsid: u32) -> Result<NamespaceHandle> {
        self.ensure_ready()?;
        let max_transfer = self.max_transfer();
        let ns = *self.namespace(nsid)?;
        let place = self.namespace_place(nsid);
        NamespaceHandle::new(id, self.state(), &ns, max_transfer, place)
    }

    fn check(&mut self, handle: &NamespaceHandle) -> Result<()> {
        if self.state().is_finished() {
            return Err(Error::StaleHandle);
        }
        // A reset's bring-up discovers the namespaces again: finish it first.
        self.ensure_ready()?;
        handle.check(self.namespace(handle.nsid()).ok())
    }

    fn submit(
        &mut self,
        handle: &NamespaceHandle,
        lba: u64,
        phys: PhysAddr,
        len: usize,
        direction: Direction,
        _: Private,
    ) -> Result<u16> {
        self.check(handle)?;
        let nsid = handle.nsid();
        let blocks = u32::try_from(len >> handle.block_shift()).map_err(|_| Error::Internal {
            what: "a block command larger than the largest transfer",
        })?;
        let op = match direction {
            Direction::Read => IoOp::Read { nsid, lba, blocks },
            Direction::Write => IoOp::Write { nsid, lba, blocks },
        };
        self.submit_waited(op, Some((phys, len)))
    }

    fn wait(&mut self, cids: &[u16], _: Private) -> (Option<usize>, Result<()>) {
        self.wait_blocking(cids)
    }

    fn flush(&mut self, handle: &NamespaceHandle) -> Result<()> {
        self.check(handle)?;
        Controller::flush(self, handle.nsid())
    }
}

impl<P: Platform, L: DeviceLink, const Q: usize, const D: usize> Sealed for Controller<P, L, Q, D> {
    fn io_for(
        &mut self,
        _controller: Option<ControllerId>,
    ) -> Result<(&mut dyn NamespaceIo, Option<ControllerId>)> {
        Ok((self, None))
    }

    fn io_of(&mut self, handle: &NamespaceHandle) -> Result<&mut dyn NamespaceIo> {
        match handle.controller() {
            // Made on a driver's controller, not on this one.
            Some(_) => Err(Error::StaleHandle),
            None => Ok(self),
        }
    }
}

impl<P: Platform, L: DeviceLink, const Q: usize, const D: usize> BlockTarget
    for Controller<P, L, Q, D>
{
    type Platform = P;

    fn platform(&self) -> &P {
        Controller::platform(self)
    }
}

impl<
        P: Platform + Clone,
        C: ConfigRegionAccess + Clone,
        const N: usize,
        const Q: usize,
        const D: usize,
    > Sealed for Driver<P, C, N, Q, D>
{
    fn io_for(
        &mut self,
        controller: Option<ControllerId>,
    ) -> Result<(&mut dyn NamespaceIo, Option<ControllerId>)> {
        let id = controller.ok_or(Error::InvalidArgument {
            what: "a driver's namespace handle needs its controller",
        })?;
        Ok((self.controller(id)?, Some(id)))
    }

    /// `StaleHandle` when the handle was made without the driver or its
    /// entry now holds another attach.
    fn io_of(&mut self, handle: &NamespaceHandle) -> Result<&mut dyn NamespaceIo> {
        let id = handle.controller().ok_or(Error::StaleHandle)?;
        Ok(self.controller(id)?)
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
}

impl<T: BlockTarget + ?Sized> Sealed for &mut T {
    fn io_for(
        &mut self,
        controller: Option<ControllerId>,
    ) -> Result<(&mut dyn NamespaceIo, Option<ControllerId>)> {
        (**self).io_for(controller)
    }

    fn io_of(&mut self, handle: &NamespaceHandle) -> Result<&mut dyn NamespaceIo> {
        (**self).io_of(handle)
    }
}

impl<T: BlockTarget + ?Sized> BlockTarget for &mut T {
    type Platform = T::Platform;

    fn platform(&self) -> &Self::Platform {
        (**self).platform()
    }
}
