//! The trusted-keys directories (layout in the module above).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use pgp::composed::{Deserializable, SignedPublicKey};
use pgp::types::KeyDetails;

use super::TrustError;

pub struct Keystore {
    /// `<local-config>/trustedkeys` first, then `<system-config>/trustedkeys`.
    roots: Vec<PathBuf>,
}

/// A key's fingerprint and user IDs, for `rkt trust` to show before adding it.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub fingerprint: String,
    pub user_ids: Vec<String>,
    pub subkey_fingerprints: Vec<String>,
}

/// Parses an armored (or binary) public key and checks its self-signatures.
pub fn parse_key(bytes: &[u8], path: &str) -> Result<SignedPublicKey, TrustError> {
    let bad = |problem: String| TrustError::BadKey {
        path: path.to_string(),
        problem,
    };
    let (key, _headers) =
        SignedPublicKey::from_reader_single(bytes).map_err(|err| bad(err.to_string()))?;
    key.verify_bindings()
        .map_err(|err| bad(format!("its self-signatures do not verify: {err}")))?;
    Ok(key)
}

pub fn key_info(key: &SignedPublicKey) -> KeyInfo {
    KeyInfo {
        fingerprint: format!("{:x}", key.fingerprint()),
        user_ids: key
            .details
            .users
            .iter()
            .map(|user| String::from_utf8_lossy(user.id.id()).into_owned())
            .collect(),
        subkey_fingerprints: key
            .public_subkeys
            .iter()
            .map(|subkey| format!("{:x}", subkey.key.fingerprint()))
            .collect(),
    }
}

impl Keystore {
    pub fn new(local_config: &Path, system_config: &Path) -> Keystore {
        Keystore {
            roots: vec![
                local_config.join("trustedkeys"),
                system_config.join("trustedkeys"),
            ],
        }
    }

    fn local_root(&self) -> &Path {
        &self.roots[0]
    }

    /// Stores `key_bytes` (as given) as trusted for `prefix`, or for every
    /// image when `prefix` is `None`. Returns where it was written.
    pub fn add(
        &self,
        prefix: Option<&str>,
        key_bytes: &[u8],
        key_path: &str,
    ) -> Result<(KeyInfo, PathBuf), TrustError> {
        let key = parse_key(key_bytes, key_path)?;
        let info = key_info(&key);
        let dir = match prefix {
            None => self.local_root().join("root.d"),
            Some(prefix) => {
                appc::AcIdentifier::try_from(prefix).map_err(|problem| TrustError::BadPrefix {
                    prefix: prefix.to_string(),
                    problem,
                })?;
                self.local_root().join("prefix.d").join(prefix)
            }
        };
        let io_err = |context: String| move |source| TrustError::Io { context, source };
        fs::create_dir_all(&dir).map_err(io_err(format!(
            "creating {} (is --local-config writable? rkt trust usually needs root)",
            dir.display()
        )))?;
        let dest = dir.join(&info.fingerprint);
        let mut temp = tempfile::NamedTempFile::new_in(&dir)
            .map_err(io_err(format!("writing a key into {}", dir.display())))?;
        temp.write_all(key_bytes)
            .and_then(|()| temp.as_file().sync_all())
            .and_then(|()| {
                temp.as_file()
                    .set_permissions(fs::Permissions::from_mode(0o644))
            })
            .map_err(io_err(format!("writing {}", dest.display())))?;
        temp.persist(&dest)
            .map_err(|err| err.error)
            .map_err(io_err(format!("writing {}", dest.display())))?;
        Ok((info, dest))
    }

    /// Every key trusted for image `name`: root keys plus the keys of each
    /// prefix of the name.
    pub fn keys_for(&self, name: &str) -> Result<Vec<SignedPublicKey>, TrustError> {
        let mut keys = Vec::new();
        for root in &self.roots {
            collect_keys(&root.join("root.d"), &mut keys)?;
            let mut prefix = name;
            loop {
                collect_keys(&root.join("prefix.d").join(prefix), &mut keys)?;
                match prefix.rsplit_once('/') {
                    Some((parent, _)) => prefix = parent,
                    None => break,
                }
            }
        }
        Ok(keys)
    }
}

/// Reads every key file directly in `dir` (subdirectories are longer
/// prefixes, not keys). A missing directory holds no keys.
fn collect_keys(dir: &Path, keys: &mut Vec<SignedPublicKey>) -> Result<(), TrustError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(TrustError::Io {
                context: format!("reading {}", dir.display()),
                source,
            })
        }
    };
    for entry in entries {
        let entry = entry.map_err(|source| TrustError::Io {
            context: format!("reading {}", dir.display()),
            source,
        })?;
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        let bytes = fs::read(&path).map_err(|source| TrustError::Io {
            context: format!("reading {}", path.display()),
            source,
        })?;
        keys.push(parse_key(&bytes, &path.display().to_string())?);
    }
    Ok(())
}

/// Parses a key file and describes it without storing it.
pub fn describe(bytes: &[u8], path: &str) -> Result<KeyInfo, TrustError> {
    Ok(key_info(&parse_key(bytes, path)?))
}
