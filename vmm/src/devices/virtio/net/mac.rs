//! The guest's Ethernet address: parsed from `aa:bb:cc:dd:ee:ff`, or made up at random in the
//! locally administered range so that it never collides with a vendor's address.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// An Ethernet (MAC-48) address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MacAddr(pub [u8; 6]);

/// A string that is not a usable unicast MAC address.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MacAddrError {
    /// Not six two-digit hex bytes separated by colons.
    #[error("{0:?} is not a MAC address: write six hex bytes separated by colons, e.g. 52:54:00:12:34:56")]
    Syntax(String),
    /// The group bit is set: a NIC cannot own a multicast or broadcast address.
    #[error(
        "{0} is a multicast address: a NIC needs a unicast one (even first byte, e.g. 52:...)"
    )]
    Multicast(MacAddr),
}

impl MacAddr {
    /// A random unicast address with the locally-administered bit set (x2:, x6:, xa:, xe:).
    pub fn random_local() -> MacAddr {
        let mut bytes = [0u8; 6];
        let mut filled = 0;
        while filled < bytes.len() {
            let rest = &mut bytes[filled..];
            // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes for the duration
            // of the call, and getrandom writes at most that many bytes.
            let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
            if n > 0 {
                filled += n as usize;
            } else if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                // getrandom only fails before the entropy pool exists; a fixed address from the
                // same range still works for a single VM.
                bytes = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
                break;
            }
        }
        bytes[0] = (bytes[0] & !0x01) | 0x02;
        MacAddr(bytes)
    }

    /// Whether this is a multicast (or broadcast) address.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }
}

impl FromStr for MacAddr {
    type Err = MacAddrError;

    fn from_str(s: &str) -> Result<MacAddr, MacAddrError> {
        let syntax = || MacAddrError::Syntax(s.to_string());
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(syntax)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(syntax());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| syntax())?;
        }
        if parts.next().is_some() {
            return Err(syntax());
        }
        let mac = MacAddr(bytes);
        if mac.is_multicast() {
            return Err(MacAddrError::Multicast(mac));
        }
        Ok(mac)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_colon_form() {
        let mac: MacAddr = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(mac, MacAddr([0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f]));
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
    }

    #[test]
    fn refuses_malformed_and_multicast_addresses() {
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52:54:00:12:34:5",
            "52:54:00:12:34:567",
            "52-54-00-12-34-56",
            "52:54:00:12:34:zz",
            "+2:54:00:12:34:56",
        ] {
            assert!(
                matches!(bad.parse::<MacAddr>(), Err(MacAddrError::Syntax(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            "01:00:5e:00:00:01".parse::<MacAddr>(),
            Err(MacAddrError::Multicast(_))
        ));
        assert!("ff:ff:ff:ff:ff:ff".parse::<MacAddr>().is_err());
    }

    #[test]
    fn random_addresses_are_local_unicast_and_differ() {
        let a = MacAddr::random_local();
        let b = MacAddr::random_local();
        for mac in [a, b] {
            assert_eq!(mac.0[0] & 0x03, 0x02, "{mac}");
        }
        assert_ne!(a, b);
    }
}
