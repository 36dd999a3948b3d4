//! The firmware's boot services, reached through the system table the
//! `uefi` crate's entry point recorded, and the few calls made through it.

use core::ffi::c_void;
use core::ptr;

use uefi_raw::table::boot::{BootServices, Tpl};
use uefi_raw::{Guid, Handle, Status};

/// `EFI_OPEN_PROTOCOL_GET_PROTOCOL`: a look without a claim.
pub const OPEN_GET: u32 = 0x02;
/// `EFI_OPEN_PROTOCOL_BY_CHILD_CONTROLLER`: a child's tie to its parent.
pub const OPEN_BY_CHILD: u32 = 0x08;
/// `EFI_OPEN_PROTOCOL_BY_DRIVER`: the driver's claim on a controller.
pub const OPEN_BY_DRIVER: u32 = 0x10;
/// `EFI_OPEN_PROTOCOL_EXCLUSIVE`: with BY_DRIVER, the firmware first
/// disconnects every other driver that holds the protocol.
pub const OPEN_EXCLUSIVE: u32 = 0x20;

/// The boot services table. Only called while boot services exist (every
/// caller runs from a firmware entry point before ExitBootServices, or from
/// the ExitBootServices notification itself).
pub fn boot() -> &'static BootServices {
    let st = uefi::table::system_table_raw().expect("entry point sets the system table");
    // SAFETY: the firmware's system table and its boot services table stay
    // valid and unmoved until ExitBootServices; see above.
    unsafe { &*st.as_ref().boot_services }
}

/// Opens `guid` on `handle` with `attributes` for `owner`/`controller`,
/// returning the interface.
#[allow(
    clippy::not_unsafe_ptr_arg_deref,
    reason = "handles are opaque: the firmware checks them, nothing here reads through them"
)]
pub fn open(
    handle: Handle,
    guid: &Guid,
    owner: Handle,
    controller: Handle,
    attributes: u32,
) -> Result<*mut c_void, Status> {
    let mut iface = ptr::null_mut();
    // SAFETY: a plain boot service call with valid out pointer.
    let status =
        unsafe { (boot().open_protocol)(handle, guid, &mut iface, owner, controller, attributes) };
    if status.is_success() {
        Ok(iface)
    } else {
        Err(status)
    }
}

/// Closes what [`open`] opened with the same arguments.
#[allow(
    clippy::not_unsafe_ptr_arg_deref,
    reason = "handles are opaque: the firmware checks them, nothing here reads through them"
)]
pub fn close(handle: Handle, guid: &Guid, owner: Handle, controller: Handle) -> Status {
    // SAFETY: a plain boot service call.
    unsafe { (boot().close_protocol)(handle, guid, owner, controller) }
}

/// Runs `f` at TPL_CALLBACK, so that the driver's timer notification (at
/// that level) cannot run in the middle of it.
pub fn at_callback<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: raising to TPL_CALLBACK is allowed from TPL_APPLICATION and
    // from TPL_CALLBACK itself (BlockIo's callers are at or below it); the
    // old level is restored before returning.
    let old = unsafe { (boot().raise_tpl)(Tpl::CALLBACK) };
    let r = f();
    // SAFETY: restores the level raise_tpl returned.
    unsafe { (boot().restore_tpl)(old) };
    r
}
