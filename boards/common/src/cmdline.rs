//! The kernel command line: `scenario=NAME key=value ...`.

/// Arguments from the command line, borrowed from the boot info.
#[derive(Clone, Copy, Debug)]
pub struct Args {
    line: &'static str,
}

impl Args {
    /// Wraps a command line.
    pub fn new(line: &'static str) -> Self {
        Self { line }
    }

    /// The whole line.
    pub fn line(&self) -> &'static str {
        self.line
    }

    /// The value of `key=value`, the last one if repeated.
    pub fn get(&self, key: &str) -> Option<&'static str> {
        self.line
            .split_ascii_whitespace()
            .filter_map(|word| word.split_once('='))
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .next_back()
    }

    /// A number (decimal or 0x-hex) for `key`, `default` when absent; `None`
    /// when present but malformed.
    pub fn number(&self, key: &str, default: u64) -> Option<u64> {
        match self.get(key) {
            None => Some(default),
            Some(v) => match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => v.parse().ok(),
            },
        }
    }

    /// The scenario to run (`boot` when not given).
    pub fn scenario(&self) -> &'static str {
        self.get("scenario").unwrap_or("boot")
    }

    /// A PCI address written `bus:device.function` in hex (`0:5.0`).
    pub fn pci_address(&self, key: &str) -> Option<Option<pci_types::PciAddress>> {
        let Some(v) = self.get(key) else {
            return Some(None);
        };
        let (bus, rest) = v.split_once(':')?;
        let (device, function) = rest.split_once('.')?;
        let bus = u8::from_str_radix(bus, 16).ok()?;
        let device = u8::from_str_radix(device, 16).ok()?;
        let function = u8::from_str_radix(function, 16).ok()?;
        (device < 32 && function < 8)
            .then(|| Some(pci_types::PciAddress::new(0, bus, device, function)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_value_of_a_key_counts_and_numbers_take_hex() {
        let args = Args::new("scenario=io count=3 count=0x10 bad=zz");
        assert_eq!(args.scenario(), "io");
        assert_eq!(args.get("count"), Some("0x10"));
        assert_eq!(args.number("count", 1), Some(16));
        assert_eq!(args.number("absent", 7), Some(7));
        assert_eq!(args.number("bad", 7), None);
        assert_eq!(Args::new("").scenario(), "boot");
    }

    #[test]
    fn a_pci_address_is_bus_device_function_in_hex() {
        let args = Args::new("port=1c:1f.7 far=0:20.0");
        let port = args.pci_address("port").unwrap().unwrap();
        assert_eq!(
            (port.bus(), port.device(), port.function()),
            (0x1c, 0x1f, 7)
        );
        assert_eq!(args.pci_address("far"), None);
        assert_eq!(args.pci_address("absent"), Some(None));
    }
}
