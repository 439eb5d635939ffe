//! Destination paths inside the archive.
//!
//! Every destination is absolute (`/bin/busybox`) and made only of plain names: a `..` could
//! climb out of the directory the archive is unpacked into, and a relative path would mean
//! different things to different readers. In the archive a path is stored without its leading
//! slash (`bin/busybox`), as the kernel's own gen_init_cpio does.

use std::fmt;
use std::path::{Component, Path};

use crate::error::InitramfsError;

/// An absolute, normalised path inside the archive; never the root itself.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DestPath {
    /// Plain names from the root down. Ordering by components puts every directory right
    /// before its contents, which is the order an unpacker needs.
    components: Vec<String>,
}

impl DestPath {
    pub fn parse(dest: &str) -> Result<DestPath, InitramfsError> {
        let bad = |reason| InitramfsError::BadDestination {
            dest: dest.to_string(),
            reason,
        };
        if dest.contains('\0') {
            return Err(bad("it contains a NUL byte"));
        }
        let mut parts = Path::new(dest).components();
        if parts.next() != Some(Component::RootDir) {
            return Err(bad("it is relative"));
        }
        let mut components = Vec::new();
        for part in parts {
            match part {
                Component::Normal(name) => match name.to_str() {
                    Some(name) => components.push(name.to_string()),
                    None => return Err(bad("it is not valid UTF-8")),
                },
                Component::ParentDir => return Err(bad("it contains `..`")),
                // Path::components already drops `.` and repeated slashes after the root.
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(bad("it is not a plain path"))
                }
            }
        }
        if components.is_empty() {
            return Err(bad("it is the root directory itself"));
        }
        Ok(DestPath { components })
    }

    /// Every ancestor, outermost first (`/usr`, `/usr/bin` for `/usr/bin/env`).
    pub fn ancestors(&self) -> impl Iterator<Item = DestPath> + '_ {
        (1..self.components.len()).map(|len| DestPath {
            components: self.components[..len].to_vec(),
        })
    }

    /// A sibling in the same directory (`/bin/sh` for `/bin/busybox` and `sh`).
    pub fn sibling(&self, name: &str) -> Result<DestPath, InitramfsError> {
        let mut path = self.to_string();
        let cut = path.rfind('/').map_or(0, |slash| slash + 1);
        path.truncate(cut);
        path.push_str(name);
        DestPath::parse(&path)
    }

    pub fn file_name(&self) -> &str {
        self.components.last().map_or("", String::as_str)
    }

    /// The name stored in the archive: no leading slash.
    pub fn archive_name(&self) -> String {
        self.components.join("/")
    }
}

impl fmt::Display for DestPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.archive_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(dest: &str) -> Option<DestPath> {
        DestPath::parse(dest).ok()
    }

    #[test]
    fn accepts_and_normalises_absolute_paths() {
        let path = parse("/usr//bin/./env").map(|p| p.archive_name());
        assert_eq!(path.as_deref(), Some("usr/bin/env"));
        assert_eq!(
            parse("/init").map(|p| p.to_string()).as_deref(),
            Some("/init")
        );
        assert_eq!(
            parse("/bin/").map(|p| p.archive_name()).as_deref(),
            Some("bin")
        );
    }

    #[test]
    fn rejects_relative_parent_root_and_nul() {
        for bad in [
            "bin/sh",
            "./bin/sh",
            "",
            "/",
            "//",
            "/bin/../etc",
            "/..",
            "/a\0b",
        ] {
            let error = DestPath::parse(bad).err();
            assert!(
                matches!(error, Some(InitramfsError::BadDestination { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn parents_sort_before_children() {
        let mut paths: Vec<DestPath> = ["/bin-x", "/bin/sh", "/bin", "/a/b/c", "/a"]
            .iter()
            .filter_map(|p| parse(p))
            .collect();
        paths.sort();
        let names: Vec<String> = paths.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["/a", "/a/b/c", "/bin", "/bin/sh", "/bin-x"]);
    }

    #[test]
    fn ancestors_and_sibling() {
        let path = parse("/usr/bin/env");
        let ancestors: Vec<String> = path
            .iter()
            .flat_map(|p| p.ancestors())
            .map(|p| p.to_string())
            .collect();
        assert_eq!(ancestors, ["/usr", "/usr/bin"]);
        let top: Vec<DestPath> = parse("/init").iter().flat_map(|p| p.ancestors()).collect();
        assert!(top.is_empty());
        let sibling = path.and_then(|p| p.sibling("awk").ok());
        assert_eq!(
            sibling.map(|p| p.to_string()).as_deref(),
            Some("/usr/bin/awk")
        );
        assert!(parse("/bin/busybox")
            .map(|p| p.sibling("..").is_err())
            .unwrap_or(false));
    }
}
