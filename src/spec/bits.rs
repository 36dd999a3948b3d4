//! Bit fields of command, completion and status dwords, named by where the
//! specification puts them, so that a dword is built and read field by
//! field instead of with shifts and masks written out at each use.

/// A field of `width` bits starting at bit `low` of a 32-bit word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    low: u32,
    width: u32,
}

impl Field {
    /// The field of `width` bits from bit `low` (both checked when the
    /// constant is built: the field lies inside 32 bits and is not empty).
    pub const fn new(low: u32, width: u32) -> Self {
        assert!(width > 0 && low + width <= 32);
        Self { low, width }
    }

    /// The field's mask, in place.
    pub const fn mask(self) -> u32 {
        (u32::MAX >> (32 - self.width)) << self.low
    }

    /// The field's value in `word`.
    pub const fn get(self, word: u32) -> u32 {
        (word & self.mask()) >> self.low
    }

    /// `word` with the field set to `value` (bits of `value` beyond the
    /// field's width are dropped).
    pub const fn set(self, word: u32, value: u32) -> u32 {
        (word & !self.mask()) | ((value << self.low) & self.mask())
    }

    /// A word holding only `value` in this field.
    pub const fn of(self, value: u32) -> u32 {
        self.set(0, value)
    }

    /// Whether the (one-bit) field is set in `word`.
    pub const fn is_set(self, word: u32) -> bool {
        self.get(word) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_and_write_only_their_bits() {
        let high = Field::new(16, 16);
        assert_eq!(high.mask(), 0xFFFF_0000);
        assert_eq!(high.set(0x1234_5678, 0xBEEF), 0xBEEF_5678);
        assert_eq!(high.get(0xBEEF_5678), 0xBEEF);
        let three = Field::new(8, 3);
        assert_eq!(three.of(0xF), 0x700);
        assert_eq!(three.get(0xFFFF), 7);
        assert!(Field::new(31, 1).is_set(1 << 31));
        assert_eq!(Field::new(0, 32).mask(), u32::MAX);
    }
}
