//! Byte sizes as QEMU writes them: `512`, `512M`, `1.5G`, `4096b`.
//!
//! The suffixes are QEMU's, case-insensitive and binary: B (bytes), K, M, G, T, P, E. A
//! fraction needs a suffix other than B and is truncated to whole bytes, as in QEMU. Hex
//! (`0x...`), which QEMU also accepts, is rejected to keep the grammar small; leading
//! whitespace and signs are rejected too.

/// Why a size did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SizeError {
    /// Not of the grammar above.
    Invalid,
    /// Does not fit in 64 bits.
    TooLarge,
}

/// The multiplier of a suffix letter.
fn suffix_multiplier(c: u8) -> Option<u64> {
    let shift = match c.to_ascii_uppercase() {
        b'B' => 0,
        b'K' => 10,
        b'M' => 20,
        b'G' => 30,
        b'T' => 40,
        b'P' => 50,
        b'E' => 60,
        _ => return None,
    };
    Some(1u64 << shift)
}

/// Fraction digits beyond this many are ignored: with multipliers up to 2^60 they cannot add
/// a whole byte, and it keeps the arithmetic within `u128`.
const MAX_FRACTION_DIGITS: usize = 18;

/// Parses `s`; a number without suffix is multiplied by `default_unit` (1 for plain bytes,
/// 1 MiB for `-m size`).
pub(crate) fn parse_size(s: &str, default_unit: u64) -> Result<u64, SizeError> {
    let bytes = s.as_bytes();
    let int_len = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if int_len == 0 {
        return Err(SizeError::Invalid);
    }
    let mut pos = int_len;
    let mut fraction = "";
    if bytes.get(pos) == Some(&b'.') {
        let frac_len = bytes[pos + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if frac_len == 0 {
            return Err(SizeError::Invalid);
        }
        fraction = &s[pos + 1..pos + 1 + frac_len];
        pos += 1 + frac_len;
    }
    let multiplier = match bytes.get(pos) {
        None => default_unit,
        Some(&c) => {
            pos += 1;
            suffix_multiplier(c).ok_or(SizeError::Invalid)?
        }
    };
    if pos != bytes.len() || (multiplier == 1 && !fraction.is_empty()) {
        return Err(SizeError::Invalid);
    }

    // Digits only, so the sole possible parse failure is overflow.
    let int: u128 = s[..int_len].parse().map_err(|_| SizeError::TooLarge)?;
    let mut total = int
        .checked_mul(u128::from(multiplier))
        .ok_or(SizeError::TooLarge)?;
    if !fraction.is_empty() {
        let digits = &fraction[..fraction.len().min(MAX_FRACTION_DIGITS)];
        let numerator: u128 = digits.parse().map_err(|_| SizeError::Invalid)?;
        let denominator = 10u128.pow(u32::try_from(digits.len()).unwrap_or(0));
        total = total
            .checked_add(numerator * u128::from(multiplier) / denominator)
            .ok_or(SizeError::TooLarge)?;
    }
    u64::try_from(total).map_err(|_| SizeError::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn suffixes() {
        assert_eq!(parse_size("4096b", 1), Ok(4096));
        assert_eq!(parse_size("4096B", MIB), Ok(4096));
        assert_eq!(parse_size("2k", 1), Ok(2048));
        assert_eq!(parse_size("2K", 1), Ok(2048));
        assert_eq!(parse_size("3m", 1), Ok(3 * MIB));
        assert_eq!(parse_size("1G", 1), Ok(1 << 30));
        assert_eq!(parse_size("1t", 1), Ok(1 << 40));
        assert_eq!(parse_size("1P", 1), Ok(1 << 50));
        assert_eq!(parse_size("15E", 1), Ok(15 << 60));
    }

    #[test]
    fn default_unit() {
        assert_eq!(parse_size("512", MIB), Ok(512 * MIB));
        assert_eq!(parse_size("512", 1), Ok(512));
    }

    #[test]
    fn fractions() {
        assert_eq!(parse_size("1.5G", 1), Ok(3 << 29));
        assert_eq!(parse_size("1.5", MIB), Ok(MIB + MIB / 2));
        assert_eq!(parse_size("0.5k", 1), Ok(512));
        // Truncated to whole bytes.
        assert_eq!(parse_size("1.1k", 1), Ok(1126));
        assert_eq!(parse_size("0.0000000000000000000001k", 1), Ok(0));
        assert_eq!(parse_size("1.5b", 1), Err(SizeError::Invalid));
        assert_eq!(parse_size("1.5", 1), Err(SizeError::Invalid));
    }

    #[test]
    fn garbage() {
        for s in [
            "", "M", "12Q", "-1", "+1", " 1", "1 ", "1MB", "1.G", ".5G", "0x10", "1e3", "1,5",
            "1..5", "١٢",
        ] {
            assert_eq!(parse_size(s, MIB), Err(SizeError::Invalid), "{s:?}");
        }
    }

    #[test]
    fn overflow() {
        assert_eq!(parse_size("16E", 1), Err(SizeError::TooLarge));
        assert_eq!(parse_size("17592186044416", MIB), Err(SizeError::TooLarge));
        assert_eq!(parse_size("18446744073709551615", 1), Ok(u64::MAX));
        assert_eq!(
            parse_size("18446744073709551616", 1),
            Err(SizeError::TooLarge)
        );
        assert_eq!(
            parse_size("999999999999999999999999999999999999999999", 1),
            Err(SizeError::TooLarge)
        );
        assert_eq!(parse_size("15.5E", 1), Ok(0xf800_0000_0000_0000));
    }
}
