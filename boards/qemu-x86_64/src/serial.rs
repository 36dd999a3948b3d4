//! COM1 (16550 UART at port 0x3f8), 115200 baud 8N1, polled.

use core::fmt;

use bare_nvme_board_common::console::{self, Uart};
use spin::Mutex;
use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;
const DATA: u16 = 0;
const INTERRUPT_ENABLE: u16 = 1;
const FIFO_CONTROL: u16 = 2;
const LINE_CONTROL: u16 = 3;
const MODEM_CONTROL: u16 = 4;
const LINE_STATUS: u16 = 5;
/// Line Control: divisor latch access.
const DLAB: u8 = 0x80;
/// Line Control: 8 data bits, no parity, one stop bit.
const EIGHT_N_ONE: u8 = 0x03;
/// Line Status: a received byte is waiting.
const DATA_READY: u8 = 0x01;
/// Line Status: transmit holding register empty.
const THR_EMPTY: u8 = 0x20;
/// Polls of Line Status before a byte is sent anyway (a missing UART must not
/// hang the kernel).
const MAX_POLLS: u32 = 100_000;

/// The serial port. Stateless: every value writes to the same UART.
pub struct Com1;

/// The shared writer; the lock keeps lines whole.
static SERIAL: Mutex<Com1> = Mutex::new(Com1);

fn outb(offset: u16, value: u8) {
    // SAFETY: COM1's registers; writing them has no effect on memory.
    unsafe { Port::new(COM1 + offset).write(value) }
}

fn inb(offset: u16) -> u8 {
    // SAFETY: as in `outb`; reading Line Status has no side effects.
    unsafe { Port::new(COM1 + offset).read() }
}

/// Programs the UART: 115200 baud (divisor 1), 8N1, FIFOs on, no interrupts.
pub fn init() {
    outb(INTERRUPT_ENABLE, 0x00);
    outb(LINE_CONTROL, DLAB);
    outb(DATA, 0x01);
    outb(INTERRUPT_ENABLE, 0x00);
    outb(LINE_CONTROL, EIGHT_N_ONE);
    outb(FIFO_CONTROL, 0xC7);
    outb(MODEM_CONTROL, 0x03);
    console::install(|text| {
        let _ = fmt::Write::write_fmt(&mut *SERIAL.lock(), text);
    });
}

impl Uart for Com1 {
    fn write_byte(&mut self, byte: u8) {
        for _ in 0..MAX_POLLS {
            if inb(LINE_STATUS) & THR_EMPTY != 0 {
                break;
            }
        }
        outb(DATA, byte);
    }
}

impl fmt::Write for Com1 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        console::write_str(self, s)
    }
}

/// Takes one received byte, if any.
pub fn try_read_byte() -> Option<u8> {
    (inb(LINE_STATUS) & DATA_READY != 0).then(|| inb(DATA))
}
