//! The PL011 UART of `virt` (at 0x0900_0000), polled. QEMU's model needs no
//! baud rate setup; the driver enables the FIFOs, transmit and receive.

use core::fmt;
use core::ptr::NonNull;

use bare_nvme::{MmioRegisters, RegisterAccess};

use bare_nvme_board_common::console::{self, Uart};
use spin::Mutex;

/// Where `virt` puts its PL011 (the device tree says the same; the console
/// is needed before the tree is read).
const BASE: usize = 0x0900_0000;
/// Data register.
const DR: usize = 0x00;
/// Flag register: bit 4 receive FIFO empty, bit 5 transmit FIFO full.
const FR: usize = 0x18;
const FR_RXFE: u32 = 1 << 4;
const FR_TXFF: u32 = 1 << 5;
/// Line control: FIFOs on, 8 bits.
const LCR_H: usize = 0x2C;
const LCR_H_FEN_8BIT: u32 = (1 << 4) | (0b11 << 5);
/// Control: UART, transmit and receive enable.
const CR: usize = 0x30;
const CR_ENABLE: u32 = (1 << 0) | (1 << 8) | (1 << 9);
/// Polls of the flag register before a byte is sent anyway (a stuck UART
/// must not hang the kernel).
const MAX_POLLS: u32 = 100_000;

/// The UART's registers (4 KiB).
fn registers() -> MmioRegisters {
    // BASE is not null.
    let base = NonNull::new(BASE as *mut u8).unwrap_or(NonNull::dangling());
    // SAFETY: the PL011's register page, mapped as device memory (`paging`)
    // before the MMU and after it (identity); its registers have no effect
    // on memory (the UART does no DMA).
    unsafe { MmioRegisters::new(base, 0x1000) }
}

fn read(offset: usize) -> u32 {
    registers().read32(offset)
}

fn write(offset: usize, value: u32) {
    registers().write32(offset, value);
}

/// The serial port. Stateless: every value writes to the same UART.
pub struct Pl011;

/// The shared writer; the lock keeps lines whole.
static SERIAL: Mutex<Pl011> = Mutex::new(Pl011);

/// Enables the UART.
pub fn init() {
    write(LCR_H, LCR_H_FEN_8BIT);
    write(CR, CR_ENABLE);
    console::install(|text| {
        let _ = fmt::Write::write_fmt(&mut *SERIAL.lock(), text);
    });
}

impl Uart for Pl011 {
    fn write_byte(&mut self, byte: u8) {
        for _ in 0..MAX_POLLS {
            if read(FR) & FR_TXFF == 0 {
                break;
            }
        }
        write(DR, u32::from(byte));
    }
}

impl fmt::Write for Pl011 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        console::write_str(self, s)
    }
}

/// Takes one received byte, if any.
pub fn try_read_byte() -> Option<u8> {
    (read(FR) & FR_RXFE == 0).then(|| read(DR) as u8)
}
