//! How the RTC presents numbers: BCD or binary (register B bit 2), and hours
//! in 24-hour or 12-hour form (register B bit 1).

const REG_B_24H: u8 = 1 << 1;
const REG_B_BINARY: u8 = 1 << 2;
const HOUR_PM: u8 = 1 << 7;

/// The data format selected by register B.
#[derive(Clone, Copy, Debug)]
pub(super) struct Format {
    binary: bool,
    hour24: bool,
}

impl Format {
    pub fn from_reg_b(reg_b: u8) -> Self {
        Self {
            binary: reg_b & REG_B_BINARY != 0,
            hour24: reg_b & REG_B_24H != 0,
        }
    }

    /// Encodes a value below 100.
    pub fn encode(self, value: u8) -> u8 {
        if self.binary {
            value
        } else {
            ((value / 10) << 4) | (value % 10)
        }
    }

    /// Decodes a register value; `None` for a BCD byte with a digit above 9.
    pub fn decode(self, raw: u8) -> Option<u8> {
        if self.binary {
            return Some(raw);
        }
        let (tens, units) = (raw >> 4, raw & 0xf);
        (tens <= 9 && units <= 9).then_some(tens * 10 + units)
    }

    /// Encodes an hour of the day (0-23).
    pub fn encode_hour(self, hour: u8) -> u8 {
        if self.hour24 {
            return self.encode(hour);
        }
        let hour12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        let pm = if hour >= 12 { HOUR_PM } else { 0 };
        self.encode(hour12) | pm
    }

    /// Decodes an hour register into 0-23; `None` when out of range.
    pub fn decode_hour(self, raw: u8) -> Option<u8> {
        if self.hour24 {
            return self.decode(raw).filter(|h| *h <= 23);
        }
        let hour12 = self
            .decode(raw & !HOUR_PM)
            .filter(|h| (1..=12).contains(h))?;
        let pm = if raw & HOUR_PM != 0 { 12 } else { 0 };
        Some(hour12 % 12 + pm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BCD_24H: Format = Format {
        binary: false,
        hour24: true,
    };
    const BIN_12H: Format = Format {
        binary: true,
        hour24: false,
    };
    const BCD_12H: Format = Format {
        binary: false,
        hour24: false,
    };

    #[test]
    fn bcd() {
        assert_eq!(BCD_24H.encode(59), 0x59);
        assert_eq!(BCD_24H.decode(0x59), Some(59));
        assert_eq!(BCD_24H.decode(0x5a), None);
        assert_eq!(BCD_24H.decode(0xa0), None);
        for v in 0..100 {
            assert_eq!(BCD_24H.decode(BCD_24H.encode(v)), Some(v));
        }
    }

    #[test]
    fn binary() {
        assert_eq!(BIN_12H.encode(59), 59);
        assert_eq!(BIN_12H.decode(0xff), Some(0xff));
    }

    #[test]
    fn twelve_hour() {
        assert_eq!(BCD_12H.encode_hour(0), 0x12);
        assert_eq!(BCD_12H.encode_hour(11), 0x11);
        assert_eq!(BCD_12H.encode_hour(12), 0x92);
        assert_eq!(BCD_12H.encode_hour(23), 0x91);
        assert_eq!(BIN_12H.encode_hour(13), 0x81);
        for h in 0..24 {
            assert_eq!(BCD_12H.decode_hour(BCD_12H.encode_hour(h)), Some(h));
            assert_eq!(BIN_12H.decode_hour(BIN_12H.encode_hour(h)), Some(h));
        }
        assert_eq!(BCD_12H.decode_hour(0x00), None);
        assert_eq!(BCD_12H.decode_hour(0x13), None);
    }

    #[test]
    fn twenty_four_hour() {
        assert_eq!(BCD_24H.encode_hour(23), 0x23);
        assert_eq!(BCD_24H.decode_hour(0x23), Some(23));
        assert_eq!(BCD_24H.decode_hour(0x24), None);
    }
}
