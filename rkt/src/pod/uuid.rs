//! Pod UUIDs: random (version 4) UUIDs in the canonical lowercase
//! `8-4-4-4-12` hex form, which is also the pod directory's name.
//!
//! Sixteen random bytes and a fixed text form do not justify a dependency;
//! the kernel's `/dev/urandom` supplies the randomness.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};

/// Length of the canonical text form.
const TEXT_LEN: usize = 36;
/// Positions of the dashes in the canonical text form.
const DASHES: [usize; 4] = [8, 13, 18, 23];

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodUuid(String);

impl PodUuid {
    /// A new random UUID (RFC 4122 version 4, variant 1).
    pub fn new_random() -> io::Result<PodUuid> {
        let mut bytes = [0u8; 16];
        File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        Ok(PodUuid::from_random_bytes(bytes))
    }

    fn from_random_bytes(mut bytes: [u8; 16]) -> PodUuid {
        bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
        bytes[8] = (bytes[8] & 0x3f) | 0x80; // variant 1
        let hex = hex::encode(bytes);
        PodUuid(format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        ))
    }

    /// Accepts exactly the canonical form (any case; stored lowercase).
    pub fn parse(text: &str) -> Option<PodUuid> {
        if text.len() != TEXT_LEN {
            return None;
        }
        let well_formed = text.char_indices().all(|(index, c)| {
            if DASHES.contains(&index) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
        well_formed.then(|| PodUuid(text.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PodUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_uuids_are_canonical_version_4_and_differ() {
        let a = PodUuid::new_random().unwrap();
        let b = PodUuid::new_random().unwrap();
        assert_ne!(a, b);
        assert_eq!(PodUuid::parse(a.as_str()), Some(a.clone()));
        assert_eq!(&a.as_str()[14..15], "4");
        assert!("89ab".contains(&a.as_str()[19..20]));
    }

    #[test]
    fn parse_refuses_anything_but_the_canonical_form() {
        let fixed = PodUuid::from_random_bytes([0xab; 16]);
        assert_eq!(fixed.as_str(), "abababab-abab-4bab-abab-abababababab");
        assert_eq!(
            PodUuid::parse("ABABABAB-ABAB-4BAB-ABAB-ABABABABABAB"),
            Some(fixed)
        );
        for bad in [
            "",
            "abababab",
            "abababababab-4bab-abab-abababababab",
            "abababab-abab-4bab-abab-ababababababx",
            "abababab_abab-4bab-abab-abababababab",
            "gbababab-abab-4bab-abab-abababababab",
            "../../../../etc/passwd-xxxxxxxxxxxxx",
        ] {
            assert_eq!(PodUuid::parse(bad), None, "{bad:?}");
        }
    }
}
