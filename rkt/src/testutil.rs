//! Builders for test images.

use std::path::Path;

use appc::ImageId;

use crate::image::aci;
use crate::store::Store;

/// A manifest for `name` at `version`, with optional raw JSON for
/// `dependencies` and `pathWhitelist`.
pub fn manifest(name: &str, version: &str, extra: &str) -> String {
    format!(
        r#"{{"acKind":"ImageManifest","acVersion":"0.8.11","name":"{name}",
           "labels":[{{"name":"version","value":"{version}"}},{{"name":"os","value":"linux"}},{{"name":"arch","value":"amd64"}}],
           "app":{{"exec":["/bin/sh"],"user":"0","group":"0"}}{extra}}}"#
    )
}

/// An uncompressed ACI with `manifest` and the given `rootfs/` files.
pub fn aci(manifest: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let files: Vec<(&str, &[u8], u32)> = files.iter().map(|(p, d)| (*p, *d, 0o644)).collect();
    aci_with_modes(manifest, &files)
}

/// As [`aci`], each file with its mode.
pub fn aci_with_modes(manifest: &str, files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut append = |path: &str, data: &[u8], kind: tar::EntryType, mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_entry_type(kind);
        header.set_uid(0);
        header.set_gid(0);
        builder.append_data(&mut header, path, data).unwrap();
    };
    append(
        "manifest",
        manifest.as_bytes(),
        tar::EntryType::Regular,
        0o644,
    );
    append("rootfs", b"", tar::EntryType::Directory, 0o755);
    for (path, data, mode) in files {
        append(
            &format!("rootfs/{path}"),
            data,
            tar::EntryType::Regular,
            *mode,
        );
    }
    builder.into_inner().unwrap()
}

/// Stages and inserts an ACI built from `manifest` and `files`.
pub fn import(store: &Store, manifest: &str, files: &[(&str, &[u8])]) -> ImageId {
    import_tar(store, &aci(manifest, files))
}

/// Stages and inserts the ACI `tar`.
pub fn import_tar(store: &Store, tar: &[u8]) -> ImageId {
    let staged = aci::stage(tar, "test.aci", &store.tmp_dir(), 1 << 30).unwrap();
    store.insert_aci(staged, "test.aci", false).unwrap()
}

/// Files under `dir`, relative, sorted (directories included, with a `/`).
pub fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(root.join(rel)).unwrap() {
            let entry = entry.unwrap();
            let child = rel.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                out.push(format!("{}/", child.display()));
                walk(root, &child, out);
            } else {
                out.push(child.display().to_string());
            }
        }
    }
    walk(dir, Path::new(""), &mut out);
    out.sort();
    out
}
