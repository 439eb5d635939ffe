//! ACI files (appc `aci.md`): a tar, maybe gzip/bzip2/xz-compressed, holding
//! exactly `manifest` and `rootfs/`. The image ID is the SHA-512 of the
//! *uncompressed* tar, so the store keeps that form.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use appc::{ImageId, ImageManifest, ManifestError};
use sha2::{Digest, Sha512};
use tempfile::NamedTempFile;
use thiserror::Error;

use crate::extract::decompress::{decompress, size_limit_of, LimitedReader};
use crate::extract::normalize;

/// Manifests are small; anything bigger is not a manifest.
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Error)]
pub enum AciError {
    #[error("{source_name} is not a valid ACI: {problem}")]
    Invalid {
        source_name: String,
        problem: String,
    },
    #[error("the image manifest in {source_name}: {error}")]
    Manifest {
        source_name: String,
        #[source]
        error: ManifestError,
    },
    #[error(
        "{source_name} expands past the {} MiB limit; if the image really is that big, \
         raise it with --max-image-size", .limit / (1024 * 1024)
    )]
    TooLarge { source_name: String, limit: u64 },
    #[error("reading {source_name}: {error}")]
    Io {
        source_name: String,
        #[source]
        error: io::Error,
    },
}

/// An ACI decompressed into the store's temp dir and checked, not yet in the
/// store.
#[derive(Debug)]
pub struct StagedAci {
    pub id: ImageId,
    pub manifest: ImageManifest,
    pub manifest_bytes: Vec<u8>,
    pub size: u64,
    pub tar: NamedTempFile,
}

/// Decompresses `input` into a temporary file under `tmp_dir` while hashing
/// it, then checks the archive's layout and manifest.
pub fn stage(
    input: impl Read,
    source_name: &str,
    tmp_dir: &Path,
    max_bytes: u64,
) -> Result<StagedAci, AciError> {
    let io_err = |error: io::Error| match size_limit_of(&error) {
        Some(limit) => AciError::TooLarge {
            source_name: source_name.to_string(),
            limit,
        },
        None => AciError::Io {
            source_name: source_name.to_string(),
            error,
        },
    };
    let mut temp = tempfile::Builder::new()
        .prefix("aci-")
        .tempfile_in(tmp_dir)
        .map_err(io_err)?;
    let mut reader = LimitedReader::new(decompress(input).map_err(io_err)?, max_bytes);
    let mut hasher = Sha512::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buffer).map_err(io_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        temp.write_all(&buffer[..n]).map_err(io_err)?;
        size += n as u64;
    }
    let digest: [u8; 64] = hasher.finalize().into();
    let id = ImageId::from_sha512(&digest);

    temp.as_file_mut()
        .seek(SeekFrom::Start(0))
        .map_err(io_err)?;
    let manifest_bytes = check_layout(temp.as_file_mut(), source_name)?;
    let manifest =
        ImageManifest::from_json(&manifest_bytes).map_err(|error| AciError::Manifest {
            source_name: source_name.to_string(),
            error,
        })?;
    Ok(StagedAci {
        id,
        manifest,
        manifest_bytes,
        size,
        tar: temp,
    })
}

/// Walks the tar once: every entry must sit under `manifest` or `rootfs/`,
/// appear once and have a clean path; returns the manifest's bytes. Entry
/// contents are checked again, fully, when the image is rendered.
fn check_layout(tar_file: &mut File, source_name: &str) -> Result<Vec<u8>, AciError> {
    let invalid = |problem: String| AciError::Invalid {
        source_name: source_name.to_string(),
        problem,
    };
    let mut archive = tar::Archive::new(tar_file);
    let mut manifest = None;
    let mut seen = std::collections::HashSet::new();
    let entries = archive
        .entries()
        .map_err(|err| invalid(format!("not a tar archive ({err})")))?;
    for entry in entries {
        let mut entry = entry.map_err(|err| invalid(format!("broken tar archive ({err})")))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = entry
            .path()
            .map_err(|err| invalid(format!("entry {name:?}: {err}")))?
            .into_owned();
        let Some(clean) =
            normalize(&path).map_err(|problem| invalid(format!("entry {name:?} {problem}")))?
        else {
            continue;
        };
        if !seen.insert(clean.clone()) {
            return Err(invalid(format!("entry {name:?} appears twice")));
        }
        let top = clean.components().next().map(|c| c.as_os_str().to_owned());
        if clean == Path::new("manifest") {
            if entry.header().entry_type() != tar::EntryType::Regular {
                return Err(invalid("\"manifest\" must be a regular file".to_string()));
            }
            if entry.size() > MAX_MANIFEST_BYTES {
                return Err(invalid("\"manifest\" is larger than 1 MiB".to_string()));
            }
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|err| invalid(format!("reading \"manifest\": {err}")))?;
            manifest = Some(bytes);
        } else if top.as_deref() != Some(std::ffi::OsStr::new("rootfs")) {
            return Err(invalid(format!(
                "entry {name:?} is outside \"manifest\" and \"rootfs/\", the only two top-level names an ACI may have"
            )));
        }
    }
    manifest.ok_or_else(|| invalid("it has no \"manifest\" file".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn manifest_json(name: &str) -> String {
        format!(
            r#"{{"acKind":"ImageManifest","acVersion":"0.8.11","name":"{name}",
               "labels":[{{"name":"version","value":"1.0"}},{{"name":"os","value":"linux"}},{{"name":"arch","value":"amd64"}}],
               "app":{{"exec":["/bin/sh"],"user":"0","group":"0"}}}}"#
        )
    }

    fn aci(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn stages_a_compressed_aci_with_the_id_of_the_uncompressed_tar() {
        let manifest = manifest_json("example.com/hello");
        let tar = aci(&[("manifest", manifest.as_bytes()), ("rootfs/hello", b"hi")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let compressed = gz.finish().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let staged = stage(&compressed[..], "hello.aci", tmp.path(), 1 << 30).unwrap();
        let expected: [u8; 64] = Sha512::digest(&tar).into();
        assert_eq!(staged.id, ImageId::from_sha512(&expected));
        assert_eq!(staged.size, tar.len() as u64);
        assert_eq!(staged.manifest.name.as_str(), "example.com/hello");
        assert_eq!(std::fs::read(staged.tar.path()).unwrap(), tar);
    }

    #[test]
    fn refuses_bad_layouts_naming_the_problem() {
        let tmp = tempfile::tempdir().unwrap();
        let manifest = manifest_json("example.com/hello");
        let extra = aci(&[("manifest", manifest.as_bytes()), ("etc/passwd", b"x")]);
        let err = stage(&extra[..], "x.aci", tmp.path(), 1 << 30).unwrap_err();
        assert!(err.to_string().contains("\"etc/passwd\""), "{err}");
        let none = aci(&[("rootfs/a", b"x")]);
        let err = stage(&none[..], "x.aci", tmp.path(), 1 << 30).unwrap_err();
        assert!(err.to_string().contains("no \"manifest\""), "{err}");
        let bad = aci(&[(
            "manifest",
            br#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"Bad"}"#,
        )]);
        let err = stage(&bad[..], "x.aci", tmp.path(), 1 << 30).unwrap_err();
        assert!(err.to_string().contains("manifest field `name`"), "{err}");
        let not_tar = b"this is not a tar archive at all, just text, but long enough".repeat(20);
        assert!(stage(&not_tar[..], "x.aci", tmp.path(), 1 << 30).is_err());
    }

    #[test]
    fn refuses_oversized_input() {
        let tmp = tempfile::tempdir().unwrap();
        let manifest = manifest_json("example.com/hello");
        let tar = aci(&[
            ("manifest", manifest.as_bytes()),
            ("rootfs/big", &[0u8; 100_000]),
        ]);
        let err = stage(&tar[..], "big.aci", tmp.path(), 10_000).unwrap_err();
        assert!(matches!(err, AciError::TooLarge { .. }), "{err}");
    }
}
