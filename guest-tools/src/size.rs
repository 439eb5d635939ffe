//! Byte counts as people write them on a command line: `4096`, `64K`, `256M`, `1G`
//! (binary multiples: K = 1024).

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "{0:?} is not a byte count; write a whole number, optionally followed by K, M or G \
     (multiples of 1024), e.g. 256M"
)]
pub struct BadSize(pub String);

pub fn parse_size(text: &str) -> Result<u64, BadSize> {
    let bad = || BadSize(text.to_owned());
    let (digits, multiplier) = match text.as_bytes().last() {
        Some(b'K' | b'k') => (&text[..text.len() - 1], 1u64 << 10),
        Some(b'M' | b'm') => (&text[..text.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let value: u64 = digits.parse().map_err(|_| bad())?;
    value.checked_mul(multiplier).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_suffixed_sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65_536));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in [
            "",
            "K",
            "-1",
            "+1",
            "1.5M",
            "1T",
            "12 ",
            "18446744073709551616",
            "17179869184G",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_size("x")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
            .contains("256M"));
    }
}
