//! The trusted-keys directories (layout in the module above).

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use appc::AcIdentifier;

use pgp::composed::{Deserializable, SignedPublicKey};
use pgp::types::KeyDetails;

use super::TrustError;
use crate::pod::safe_read::{self, SafeReadError};

/// The most a key file may hold. An armored key with a few user IDs and
/// subkeys is a few KiB; a file far larger is not a key, and is not read.
pub const MAX_KEY_FILE: u64 = 1 << 20;

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
        let held = create_key_dir(self.local_root(), &dir).map_err(io_err(format!(
            "creating {} (is --local-config writable? rkt trust usually needs root)",
            dir.display()
        )))?;
        let dest = dir.join(&info.fingerprint);
        // The directory as opened, by its descriptor's /proc name: the file lands in it even if
        // a path component were swapped for a link meanwhile.
        let held_path = PathBuf::from(format!("/proc/self/fd/{}", held.as_raw_fd()));
        let mut temp = tempfile::NamedTempFile::new_in(&held_path)
            .map_err(io_err(format!("writing a key into {}", dir.display())))?;
        temp.write_all(key_bytes)
            .and_then(|()| temp.as_file().sync_all())
            .and_then(|()| {
                temp.as_file()
                    .set_permissions(fs::Permissions::from_mode(0o644))
            })
            .map_err(io_err(format!("writing {}", dest.display())))?;
        temp.persist(held_path.join(&info.fingerprint))
            .map_err(|err| err.error)
            .map_err(io_err(format!("writing {}", dest.display())))?;
        Ok((info, dest))
    }

    /// Every key trusted for image `name`: root keys plus the keys of each
    /// prefix of the name. `name` is a validated AC identifier, so its
    /// segments are never empty, `.` or `..`; each prefix directory is
    /// reached from `trustedkeys/` without following a symbolic link, so the
    /// lookup reads nothing outside `root.d/` and `prefix.d/<prefix>/`.
    pub fn keys_for(&self, name: &AcIdentifier) -> Result<Vec<SignedPublicKey>, TrustError> {
        let mut keys = Vec::new();
        for root in &self.roots {
            let Some(root_dir) = open_trust_root(root)? else {
                continue;
            };
            collect_keys(&root_dir, root, Path::new("root.d"), &mut keys)?;
            for prefix in prefixes(name) {
                collect_keys(
                    &root_dir,
                    root,
                    &Path::new("prefix.d").join(prefix),
                    &mut keys,
                )?;
            }
        }
        Ok(keys)
    }
}

/// Creates (where missing) and opens `dir`, a directory below the trust root `root`
/// (`root.d` or `prefix.d/<prefix>`), one component at a time without following a link: a
/// link planted at `prefix.d/example.com` must not make rkt write a key elsewhere. `root`
/// itself is the administrator's path, so a link to it is followed (as when reading).
fn create_key_dir(root: &Path, dir: &Path) -> io::Result<File> {
    fs::create_dir_all(root)?;
    let rel = dir.strip_prefix(root).map_err(|_| {
        io::Error::other(format!("{} is not below {}", dir.display(), root.display()))
    })?;
    let mut current = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(root)?;
    let mut reached = root.to_path_buf();
    for component in rel.components() {
        let std::path::Component::Normal(name) = component else {
            return Err(io::Error::other(format!(
                "{} is not a plain path below {}",
                dir.display(),
                root.display()
            )));
        };
        reached.push(name);
        match nix::sys::stat::mkdirat(
            Some(current.as_raw_fd()),
            name,
            nix::sys::stat::Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(errno) => return Err(errno.into()),
        }
        let fd = nix::fcntl::openat(
            Some(current.as_raw_fd()),
            name,
            nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC
                | nix::fcntl::OFlag::O_RDONLY,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|errno| match errno {
            nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => io::Error::other(format!(
                "{} is a link or not a directory; rkt does not follow links in the trust store",
                reached.display()
            )),
            other => other.into(),
        })?;
        // SAFETY: openat returned a new descriptor that nothing else owns.
        current = File::from(unsafe {
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
        });
    }
    Ok(current)
}

/// The `/`-separated prefixes of `name`, longest first: `a/b/c`, `a/b`, `a`.
fn prefixes(name: &AcIdentifier) -> impl Iterator<Item = &str> {
    let name = name.as_str();
    std::iter::successors(Some(name), |prefix| {
        prefix.rsplit_once('/').map(|(parent, _)| parent)
    })
}

/// Opens `<config>/trustedkeys` (the administrator's path, so a link to it
/// is followed); `None` if there is none.
fn open_trust_root(root: &Path) -> Result<Option<File>, TrustError> {
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(root);
    match opened {
        Ok(dir) => Ok(Some(dir)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TrustError::Io {
            context: format!("opening {}", root.display()),
            source,
        }),
    }
}

/// Reads every key file directly in `rel` beneath `root_dir` (subdirectories
/// are longer prefixes, not keys). A missing directory holds no keys. Only
/// regular files are read, each at most [`MAX_KEY_FILE`] bytes; links,
/// FIFOs, sockets and devices are skipped without being opened.
fn collect_keys(
    root_dir: &File,
    root: &Path,
    rel: &Path,
    keys: &mut Vec<SignedPublicKey>,
) -> Result<(), TrustError> {
    let shown = root.join(rel);
    let refused = |source: SafeReadError| TrustError::KeyStore {
        dir: root.to_path_buf(),
        source,
    };
    let dir = match safe_read::open_dir(root_dir.as_fd(), rel) {
        Ok(dir) => dir,
        Err(err) if err.is_not_found() => return Ok(()),
        Err(err) => return Err(refused(err)),
    };
    let io_err = |source| TrustError::Io {
        context: format!("reading {}", shown.display()),
        source,
    };
    // The O_PATH descriptor names the directory already resolved; list it
    // through its /proc name rather than by path.
    let entries = fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())).map_err(io_err)?;
    let mut names: Vec<_> = entries
        .map(|entry| entry.map(|entry| entry.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err)?;
    // A stable order, so which key signs (and which error shows) is repeatable.
    names.sort();
    for name in names {
        let bytes = match safe_read::read(dir.as_fd(), Path::new(&name), MAX_KEY_FILE) {
            Ok(bytes) => bytes,
            Err(SafeReadError::NotRegular { .. } | SafeReadError::Link { .. }) => continue,
            // Removed while we looked: it holds no key any more.
            Err(err) if err.is_not_found() => continue,
            Err(err) => return Err(refused(rel_error(rel, err))),
        };
        let path = shown.join(&name);
        keys.push(parse_key(&bytes, &path.display().to_string())?);
    }
    Ok(())
}

/// Makes a key file's error name it relative to `trustedkeys/`.
fn rel_error(rel: &Path, err: SafeReadError) -> SafeReadError {
    match err {
        SafeReadError::TooLarge { path, limit } => SafeReadError::TooLarge {
            path: rel.join(path),
            limit,
        },
        SafeReadError::Io { path, source } => SafeReadError::Io {
            path: rel.join(path),
            source,
        },
        other => other,
    }
}

/// Parses a key file and describes it without storing it.
pub fn describe(bytes: &[u8], path: &str) -> Result<KeyInfo, TrustError> {
    Ok(key_info(&parse_key(bytes, path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> AcIdentifier {
        AcIdentifier::try_from(text).unwrap()
    }

    #[test]
    fn prefixes_are_the_names_own_segments() {
        let worker = name("example.com/app/worker");
        let all: Vec<&str> = prefixes(&worker).collect();
        assert_eq!(
            all,
            ["example.com/app/worker", "example.com/app", "example.com"]
        );
        let busybox = name("busybox");
        assert_eq!(prefixes(&busybox).collect::<Vec<_>>(), ["busybox"]);
    }

    #[test]
    fn a_linked_prefix_directory_is_refused_by_name() {
        let config = tempfile::tempdir().unwrap();
        let system = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        fs::create_dir_all(config.path().join("trustedkeys/prefix.d")).unwrap();
        std::os::unix::fs::symlink(
            elsewhere.path(),
            config.path().join("trustedkeys/prefix.d/example.com"),
        )
        .unwrap();
        let store = Keystore::new(config.path(), system.path());
        let err = store.keys_for(&name("example.com/app")).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("prefix.d/example.com") && message.contains("link"),
            "{message}"
        );
        // No trustedkeys directory at all: no keys, no error.
        let empty = tempfile::tempdir().unwrap();
        let store = Keystore::new(empty.path(), system.path());
        assert!(store.keys_for(&name("example.com/app")).unwrap().is_empty());
    }
}
