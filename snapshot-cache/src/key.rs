//! What a cached snapshot is made of and may be used for: the stage1 image it came from (its
//! tree in the image store: kernel, initramfs and the VMM build are all in that image) and
//! the VM shape the guest saw at boot. Two pods with equal keys can restore one snapshot.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bumped whenever the cache's layout or what a key means changes: old entries then simply
/// stop matching (and `rkt gc` removes them). 2: `info.json` records each file's identity
/// (format-1 entries have no such record and could have been made with looser modes).
pub const CACHE_FORMAT: u32 = 2;

/// One share as the guest saw it at boot (the host directory is each pod's own).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareShape {
    pub tag: String,
    pub read_only: bool,
}

/// The key of one cache entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    /// [`CACHE_FORMAT`] when the entry was made.
    pub format: u32,
    /// The stage1 image's tree store ID (`stage1TreeStoreID` in the pod directory).
    pub stage1_tree: String,
    /// The kernel command line the snapshot was booted with.
    pub cmdline: String,
    pub mem_mib: u64,
    pub vcpus: u8,
    pub rng: bool,
    pub shares: Vec<ShareShape>,
    /// The guest's vsock CID.
    pub vsock_cid: u64,
    /// How many NICs (their taps and MACs are each pod's own).
    pub nics: usize,
}

impl Key {
    /// The entry's directory name: 32 hex digits of the SHA-256 of the key's JSON.
    pub fn id(&self) -> String {
        // Serializing plain strings and numbers cannot fail; an empty text would still give a
        // fixed, harmless id.
        let json = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&json);
        hex::encode(&digest[..16])
    }
}

/// Whether `name` looks like an entry id (anything else in the cache directory is not ours to
/// read as an entry).
pub fn is_id(name: &str) -> bool {
    name.len() == 32
        && name
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crate's test key, without NICs.
    fn key() -> Key {
        crate::tests::key(0)
    }

    #[test]
    fn every_part_of_the_key_changes_the_id() {
        let base = key().id();
        assert!(is_id(&base), "{base}");
        assert_eq!(key().id(), base, "stable");
        let mut other = key();
        other.nics = 1;
        assert_ne!(other.id(), base);
        let mut other = key();
        other.shares[0].read_only = true;
        assert_ne!(other.id(), base);
        let mut other = key();
        other.stage1_tree = "deps-sha512-bb".into();
        assert_ne!(other.id(), base);
        let mut other = key();
        other.mem_mib = 256;
        assert_ne!(other.id(), base);
        assert!(!is_id("ABC"));
        assert!(!is_id(&format!("{}x", &base[..31])));
    }
}
