//! `-uuid xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.

use super::config::Uuid;
use super::error::ArgError;

/// Parses the 36-character form, hex digits in either case and dashes after the 8th, 12th,
/// 16th and 20th digit, as QEMU's `qemu_uuid_parse` does.
pub(crate) fn parse_uuid(s: &str) -> Result<Uuid, ArgError> {
    let text = s.as_bytes();
    if text.len() != 36 {
        return Err(ArgError::InvalidUuid);
    }
    let mut bytes = [0u8; 16];
    let mut digits = text
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 8 | 13 | 18 | 23))
        .map(|(_, &c)| hex_digit(c));
    if [8, 13, 18, 23].iter().any(|&i| text[i] != b'-') {
        return Err(ArgError::InvalidUuid);
    }
    for byte in &mut bytes {
        let (Some(Some(high)), Some(Some(low))) = (digits.next(), digits.next()) else {
            return Err(ArgError::InvalidUuid);
        };
        *byte = (high << 4) | low;
    }
    Ok(Uuid { bytes })
}

/// The value of an ASCII hex digit.
fn hex_digit(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_canonically() {
        let uuid = parse_uuid("0123ABCD-89ab-cdef-0123-456789ABCDEF").unwrap();
        assert_eq!(
            uuid.bytes,
            [
                0x01, 0x23, 0xab, 0xcd, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
                0xcd, 0xef
            ]
        );
        assert_eq!(uuid.to_string(), "0123abcd-89ab-cdef-0123-456789abcdef");
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "0123abcd89abcdef0123456789abcdef",
            "0123abcd-89ab-cdef-0123-456789abcde",
            "0123abcd-89ab-cdef-0123-456789abcdef0",
            "0123abcd-89ab-cdef-0123_456789abcdef",
            "0123abcg-89ab-cdef-0123-456789abcdef",
            "{123abcd-89ab-cdef-0123-456789abcde}",
            "0123abcd-89ab-cdef-0123--56789abcdef",
            "0123abcd-89ab-cdef-0123-456789abcdé",
            "+123abcd-89ab-cdef-0123-456789abcdef",
        ] {
            assert_eq!(parse_uuid(s), Err(ArgError::InvalidUuid), "{s}");
        }
    }
}
