//! What the kernel command line asks for: which virtio-fs share to mount, which directory of it
//! becomes the command's root, and where the exit status goes. Pure parsing and path rules; the
//! set-up itself is in the parent module.

use std::ffi::{OsStr, OsString};
use std::path::{Component, Path, PathBuf};

use super::ShareError;
use crate::cmdline::{self, KernelParam};

/// The virtio-fs tag to mount at /rkt/share.
pub const PARAM_SHARE: &str = "rkt.share";
/// A directory of the share (relative to it) that becomes the command's root.
pub const PARAM_ROOT: &str = "rkt.root";
/// A file of the share (relative to it) that receives the exit status.
pub const PARAM_STATUS: &str = "rkt.status";

/// The longest tag a virtio-fs device can announce: its config space field is 36 bytes.
pub const MAX_TAG_BYTES: usize = 36;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRequest {
    pub tag: String,
    /// `None`: the command runs in the initramfs root, the share at /rkt/share.
    pub root: Option<SharePath>,
    pub status: Option<SharePath>,
}

impl ShareRequest {
    /// The request made by the kernel parameters, or `None` when they name no share at all.
    pub fn from_params(params: &[KernelParam]) -> Result<Option<ShareRequest>, ShareError> {
        let root = cmdline::last_value(params, PARAM_ROOT);
        let status = cmdline::last_value(params, PARAM_STATUS);
        let Some(tag) = cmdline::last_value(params, PARAM_SHARE) else {
            return match (root, status) {
                (None, None) => Ok(None),
                (Some(_), _) => Err(ShareError::NeedsShare { param: PARAM_ROOT }),
                (None, Some(_)) => Err(ShareError::NeedsShare {
                    param: PARAM_STATUS,
                }),
            };
        };
        let tag = parse_tag(tag)?;
        let root = root
            .map(|value| SharePath::parse(PARAM_ROOT, value))
            .transpose()?;
        let status = status
            .map(|value| SharePath::parse(PARAM_STATUS, value))
            .transpose()?;
        if let Some(status) = &status {
            if status.file_name().is_none() {
                return Err(ShareError::InvalidPath {
                    param: PARAM_STATUS,
                    value: status.as_written.to_string_lossy().into_owned(),
                    reason: "it names no file",
                });
            }
        }
        Ok(Some(ShareRequest { tag, root, status }))
    }
}

fn parse_tag(value: &OsStr) -> Result<String, ShareError> {
    let invalid = |reason| ShareError::InvalidTag {
        tag: value.to_string_lossy().into_owned(),
        reason,
    };
    // The virtio-fs tag is UTF-8 by the spec, and mount(2) takes it as a C string.
    let tag = value.to_str().ok_or_else(|| invalid("it is not UTF-8"))?;
    if tag.is_empty() {
        return Err(invalid("it is empty"));
    }
    if tag.len() > MAX_TAG_BYTES {
        return Err(invalid(
            "it is longer than the 36 bytes a virtio-fs tag can have",
        ));
    }
    Ok(tag.to_owned())
}

/// A path inside the share: relative, and without `..`, so it cannot name anything above the
/// share's root by its spelling. (Symlinks inside the share are followed by the guest kernel;
/// the VMM keeps every lookup inside the shared directory.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharePath {
    /// Only normal components: `.` and repeated slashes are dropped. Empty means the share
    /// root itself.
    relative: PathBuf,
    /// As the parameter gave it, for messages.
    as_written: OsString,
}

impl SharePath {
    pub fn parse(param: &'static str, value: &OsStr) -> Result<SharePath, ShareError> {
        let invalid = |reason| ShareError::InvalidPath {
            param,
            value: value.to_string_lossy().into_owned(),
            reason,
        };
        if value.is_empty() {
            return Err(invalid("it is empty"));
        }
        let mut relative = PathBuf::new();
        for component in Path::new(value).components() {
            match component {
                Component::Normal(name) => relative.push(name),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => {
                    return Err(invalid("it is absolute"));
                }
                Component::ParentDir => return Err(invalid("it contains a `..` component")),
            }
        }
        Ok(SharePath {
            relative,
            as_written: value.to_owned(),
        })
    }

    /// The path relative to the share root; empty for the share root itself.
    pub fn relative(&self) -> &Path {
        &self.relative
    }

    /// The last component, if the path names anything below the share root.
    pub fn file_name(&self) -> Option<&OsStr> {
        self.relative.file_name()
    }

    /// The directory holding `file_name()`, relative to the share root (empty: the root).
    pub fn parent(&self) -> &Path {
        self.relative.parent().unwrap_or(Path::new(""))
    }

    pub fn as_written(&self) -> &OsStr {
        &self.as_written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::kernel_params;

    fn request(cmdline: &str) -> Result<Option<ShareRequest>, ShareError> {
        ShareRequest::from_params(&kernel_params(cmdline.as_bytes()))
    }

    fn path(value: &str) -> Result<SharePath, ShareError> {
        SharePath::parse(PARAM_ROOT, OsStr::new(value))
    }

    #[test]
    fn no_share_parameters_means_no_request() {
        assert_eq!(request("console=ttyS0 quiet -- /bin/sh").ok(), Some(None));
        // Parameters after `--` belong to the command.
        assert_eq!(request("quiet -- sh rkt.share=pod").ok(), Some(None));
    }

    #[test]
    fn full_request() {
        let parsed =
            request(r#"quiet rkt.share=pod rkt.root="my root" rkt.status=out/status -- sh"#)
                .ok()
                .flatten();
        let parsed = parsed.expect("a request");
        assert_eq!(parsed.tag, "pod");
        let root = parsed.root.expect("root");
        assert_eq!(root.relative(), Path::new("my root"));
        let status = parsed.status.expect("status");
        assert_eq!(status.relative(), Path::new("out/status"));
        assert_eq!(status.parent(), Path::new("out"));
        assert_eq!(status.file_name(), Some(OsStr::new("status")));
    }

    #[test]
    fn share_alone() {
        let parsed = request("rkt.share=pod").ok().flatten().expect("a request");
        assert_eq!(
            parsed,
            ShareRequest {
                tag: "pod".into(),
                root: None,
                status: None
            }
        );
    }

    #[test]
    fn root_and_status_need_a_share() {
        let error = request("rkt.root=root").err().map(|e| e.to_string());
        assert!(error
            .as_deref()
            .is_some_and(|e| e.contains("rkt.root") && e.contains("rkt.share=")));
        let error = request("rkt.status=status").err().map(|e| e.to_string());
        assert!(error.as_deref().is_some_and(|e| e.contains("rkt.status")));
    }

    #[test]
    fn tags_are_checked() {
        for bad in [
            "rkt.share",
            "rkt.share=",
            "rkt.share=0123456789012345678901234567890123456",
        ] {
            let error = request(bad).err();
            assert!(
                matches!(error, Some(ShareError::InvalidTag { .. })),
                "{bad}"
            );
        }
        let longest = format!("rkt.share={}", "t".repeat(MAX_TAG_BYTES));
        assert!(request(&longest).is_ok());
    }

    #[test]
    fn relative_paths_are_normalised() {
        let normal = |value| path(value).ok().map(|p| p.relative().to_path_buf());
        assert_eq!(normal("root"), Some(PathBuf::from("root")));
        assert_eq!(normal("./a//b/./c/"), Some(PathBuf::from("a/b/c")));
        assert_eq!(normal("."), Some(PathBuf::new()));
        assert_eq!(normal("a..b/..c"), Some(PathBuf::from("a..b/..c")));
    }

    #[test]
    fn escaping_paths_are_refused() {
        for bad in [
            "/", "/root", "..", "../root", "a/../b", "a/..", "./../a", "",
        ] {
            let error = path(bad).err();
            assert!(
                matches!(error, Some(ShareError::InvalidPath { .. })),
                "{bad} accepted"
            );
            let status = error.map(|e| e.exit_status());
            assert_eq!(status, Some(125), "{bad}");
        }
    }

    #[test]
    fn path_errors_name_the_parameter_and_the_rule() {
        let message = path("../x")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("rkt.root=../x"), "{message}");
        assert!(message.contains(".."), "{message}");
        assert!(!message.contains('\n'));
        let message = path("/x").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("absolute"), "{message}");
    }

    #[test]
    fn status_must_name_a_file() {
        let error = request("rkt.share=pod rkt.status=.").err();
        assert!(matches!(error, Some(ShareError::InvalidPath { .. })));
        let error = request("rkt.share=pod rkt.status=../status").err();
        assert!(matches!(error, Some(ShareError::InvalidPath { .. })));
    }

    #[test]
    fn share_root_itself_may_be_the_root() {
        let parsed = request("rkt.share=pod rkt.root=.")
            .ok()
            .flatten()
            .expect("a request");
        assert_eq!(
            parsed.root.map(|r| r.relative().to_path_buf()),
            Some(PathBuf::new())
        );
    }
}
