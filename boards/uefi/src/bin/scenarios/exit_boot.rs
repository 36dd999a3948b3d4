//! `uefi/exit-boot`: the controller after ExitBootServices, read by a probe.

use super::*;

/// `uefi/exit-boot`: after ExitBootServices the controller is quiescent
/// (CC.EN = 0, shutdown complete, bus mastering off), read by a probe.
/// Returns only on a failure before the exit.
pub(crate) fn exit_boot() -> Outcome {
    let driver = load_driver()?;
    let functions = hand_over(driver)?;
    let fs = our_file_system()?;
    {
        let mut sfs = boot::open_protocol_exclusive::<SimpleFileSystem>(fs)
            .map_err(|e| format!("SimpleFileSystem: {e:?}"))?;
        let mut root = sfs
            .open_volume()
            .map_err(|e| format!("OpenVolume: {e:?}"))?;
        let data = read_file(&mut root, cstr16!("HELLO.TXT"), 5000)?;
        if data != pattern(5000, 1) {
            return Err("HELLO.TXT differs".into());
        }
    }
    let (_, pci) = functions[0];
    let (_, bus, dev, func) = pci.location().ok_or("no PCI location")?;
    let bar_lo = pci.config_read32(0x10).ok_or("BAR0")?;
    let bar_hi = pci.config_read32(0x14).ok_or("BAR1")?;
    let bar = (u64::from(bar_hi) << 32) | u64::from(bar_lo & !0xf);
    say!("uefi: controller at {bus:02x}:{dev:02x}.{func}, BAR0 {bar:#x}; exiting boot services");
    // SAFETY: nothing of boot services is used past this point: the probe
    // reads registers and configuration space directly.
    let _map = unsafe { boot::exit_boot_services(None) };
    let cc = mmio_read32(bar, 0x14);
    let csts = mmio_read32(bar, 0x1c);
    let command = config_read16(bus as u8, dev as u8, func as u8, 0x04);
    let cc_en = cc & 1;
    let shst = (csts >> 2) & 3;
    let bus_master = (command >> 2) & 1;
    say!(
        "@@RESULT cc_en={cc_en} rdy={} shst={shst} bus_master={bus_master}",
        csts & 1
    );
    // Nothing may be dropped now (the allocator is gone with boot
    // services): the verdict ends the machine here.
    if cc_en != 0 || csts & 1 != 0 || bus_master != 0 {
        say!("@@FAIL controller not quiescent: CC {cc:#x} CSTS {csts:#x} command {command:#x}");
        exit_qemu(0x11)
    }
    say!("@@PASS");
    exit_qemu(0x10)
}

/// A register of the controller at BAR 0 address `bar`.
pub(crate) fn mmio_read32(bar: u64, offset: usize) -> u32 {
    use bare_nvme::RegisterAccess;

    let Some(base) = NonNull::new(bar as *mut u8) else {
        return u32::MAX;
    };
    // SAFETY: the controller's BAR 0, identity mapped by the firmware's page
    // tables (still in force right after ExitBootServices); reading CC and
    // CSTS has no side effect.
    let regs = unsafe { bare_nvme::MmioRegisters::new(base, 0x1000) };
    regs.read32(offset)
}
