//! virtio-fs (device ID 26, virtio spec 5.11): a FUSE server inside the VMM serving one host
//! directory to the guest, which mounts it with `mount -t virtiofs TAG DIR`.
//!
//! # Why fuse-backend-rs
//! The FUSE protocol (about 40 opcodes, each with its own layout and version quirks), a
//! passthrough file system that is careful about the host (one path component at a time from
//! `O_PATH` directory descriptors, `O_NOFOLLOW` everywhere, reopening through
//! `/proc/self/fd`, per-thread credentials for ownership on create) and the virtio-fs
//! Reader/Writer over descriptor chains are a lot of security-sensitive code. fuse-backend-rs
//! (rust-vmm's cloud-hypervisor family, used by Dragonball and Nydus) provides all three
//! (`api::server::Server`, `passthrough::PassthroughFs`, `transport::{Reader, VirtioFsWriter}`)
//! and is maintained; writing our own would mean re-deriving the same code with fewer eyes
//! on it. What it does not do, we do around it:
//! - `compat`: it is built on vm-memory 0.17 / virtio-queue 0.17 while the VMM uses 0.18, so
//!   at activation we give it a 0.17 view of the same guest RAM and 0.17 copies of the queues.
//! - `request`: the checks its server lacks before a request is trusted (complete header,
//!   consistent and bounded length, served opcode).
//! - `guard`: the VMM's policy (read-only shares answered EROFS, names that are one plain
//!   component, no host device nodes, set-ID bits or privileged xattrs, bounded buffers,
//!   handles and inodes).
//! - `worker`: the thread serving the queues, as for every device of this VMM.
//!
//! # The jail
//! Every host-side path walk is a single component `openat(dirfd, name, O_PATH | O_NOFOLLOW)`
//! from a directory already inside the share (the passthrough), with names that are never
//! empty, `.`, `..` or contain `/` (the passthrough for creating requests, `guard` for all,
//! including LOOKUP). So `..` cannot climb out of the root, symlinks (absolute or relative,
//! swapped or not) are never followed on the host (they are resolved by the guest kernel, in
//! the guest), `/proc/self/fd` names cannot be formed, and OPEN of anything but a regular file
//! or directory is refused (`EBADF`). Magic links are only used on the passthrough's own
//! descriptors. LINK links an inode the guest already reached, so no hard link can point
//! outside; a hard link placed in the share by the host is the host's business.
//!
//! # Configuration of the passthrough (see [`passthrough_config`])
//! Written through to the host (no writeback cache), page cache (shared `mmap` works;
//! `cache=never` would refuse it) with close-to-open consistency, or kept across opens for a
//! share only the guest changes (the pod share), xattrs on, no DAX, `O_PATH` descriptors
//! rather than file handles.

mod compat;
mod guard;
mod request;
pub mod seccomp;
#[cfg(test)]
mod tests;
mod worker;

#[doc(hidden)]
pub mod fuzzing;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::passthrough::{CachePolicy, Config as PassthroughConfig, PassthroughFs};
use thiserror::Error;
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;

pub use guard::{
    GuardedFs, DEFAULT_MAX_INODES, MAX_OPEN_HANDLES, MAX_READDIR_BYTES, MAX_XATTR_BYTES,
};
pub use request::MAX_REQUEST_BYTES;

use super::device::{ActivateError, ActiveQueue, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
use super::read_config_space;
use crate::memory::GuestMemory;
use worker::{ServedQueue, Worker};

/// The virtio device ID of a file system device.
pub const VIRTIO_ID_FS: u32 = 26;
/// The tag field of the configuration space: at most this many bytes, NUL-padded.
pub const TAG_LEN: usize = 36;
/// hiprio (FORGET, INTERRUPT) and one request queue.
const QUEUE_SIZES: [u16; 2] = [128, 1024];
/// Request queues besides hiprio, as the configuration space announces them.
const NUM_REQUEST_QUEUES: u32 = 1;
/// tag[36] + le32 num_request_queues (no notification queue, so no notify_buf_size).
const CONFIG_SPACE_LEN: usize = TAG_LEN + 4;

/// One directory shared with the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsConfig {
    /// The name the guest mounts it by (`mount -t virtiofs TAG DIR`): 1 to 36 bytes, no NUL.
    pub tag: String,
    /// The host directory served as the share's root.
    pub host_dir: PathBuf,
    /// Refuse every modifying request with EROFS.
    pub read_only: bool,
    /// The most inodes the guest may hold at once (see `ShareConfig::max_inodes`); at least 1.
    pub max_inodes: usize,
    /// Only the guest changes the tree while the VM runs (see `ShareConfig::guest_only`): its
    /// page cache may outlive a close.
    pub guest_only: bool,
}

/// Why a share cannot be set up.
#[derive(Debug, Error)]
pub enum FsError {
    /// The tag is the empty string.
    #[error("virtio-fs share for {host_dir} has an empty tag: give it a tag, the name the guest mounts it by")]
    EmptyTag {
        /// The share's directory.
        host_dir: PathBuf,
    },
    /// The tag does not fit the configuration space.
    #[error("virtio-fs tag {tag:?} is {len} bytes long: use a tag of at most 36 bytes")]
    TagTooLong {
        /// The tag.
        tag: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The tag contains a NUL byte, which would end it early in the guest.
    #[error("virtio-fs tag {tag:?} contains a NUL byte: remove it")]
    TagHasNul {
        /// The tag.
        tag: String,
    },
    /// A share that may hold no inode could serve nothing but its root.
    #[error(
        "virtio-fs share {tag:?} allows 0 inodes: allow at least 1 (default {DEFAULT_MAX_INODES})"
    )]
    NoInodes {
        /// The tag.
        tag: String,
    },
    /// The directory cannot be opened.
    #[error("cannot open shared directory {path}: {source}: create it or correct the path")]
    HostDir {
        /// The configured path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The path names something other than a directory.
    #[error("shared path {path} is not a directory: share a directory")]
    NotADirectory {
        /// The configured path.
        path: PathBuf,
    },
    /// The passthrough file system takes its root as a UTF-8 string.
    #[error(
        "shared directory {path} is not valid UTF-8: rename it or share it through a UTF-8 path"
    )]
    NotUtf8 {
        /// The resolved path.
        path: PathBuf,
    },
    /// The passthrough file system could not start (it needs /proc/self/fd and
    /// /proc/self/mountinfo).
    #[error(
        "cannot serve {path} over virtio-fs: {source}: mount /proc in the VMM's mount namespace"
    )]
    Passthrough {
        /// The resolved path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// A virtio-fs device serving one host directory.
pub struct Fs {
    /// The canonical root (no symlinks in it), as the passthrough opens it at FUSE_INIT.
    root: String,
    read_only: bool,
    max_inodes: usize,
    guest_only: bool,
    config_space: [u8; CONFIG_SPACE_LEN],
    worker: Option<Worker>,
}

impl Fs {
    /// Checks `config` and prepares the device (nothing is served before the guest activates it).
    pub fn new(config: &FsConfig) -> Result<Fs, FsError> {
        let tag = validate_tag(config)?;
        if config.max_inodes == 0 {
            return Err(FsError::NoInodes {
                tag: config.tag.clone(),
            });
        }
        let root = resolve_root(&config.host_dir)?;
        // Fail now, with a message, rather than at guest mount time.
        new_passthrough(&root, config.guest_only).map_err(|source| FsError::Passthrough {
            path: PathBuf::from(&root),
            source,
        })?;
        raise_fd_limit();
        let mut config_space = [0u8; CONFIG_SPACE_LEN];
        config_space[..tag.len()].copy_from_slice(tag);
        config_space[TAG_LEN..].copy_from_slice(&NUM_REQUEST_QUEUES.to_le_bytes());
        Ok(Fs {
            root,
            read_only: config.read_only,
            max_inodes: config.max_inodes,
            guest_only: config.guest_only,
            config_space,
            worker: None,
        })
    }
}

fn validate_tag(config: &FsConfig) -> Result<&[u8], FsError> {
    let tag = config.tag.as_bytes();
    if tag.is_empty() {
        return Err(FsError::EmptyTag {
            host_dir: config.host_dir.clone(),
        });
    }
    if tag.len() > TAG_LEN {
        return Err(FsError::TagTooLong {
            tag: config.tag.clone(),
            len: tag.len(),
        });
    }
    if tag.contains(&0) {
        return Err(FsError::TagHasNul {
            tag: config.tag.clone(),
        });
    }
    Ok(tag)
}

/// Opens `host_dir` to check it, and returns its canonical path: the passthrough reopens the
/// root by path at every FUSE_INIT, and a path without symlinks cannot be redirected by
/// swapping one.
fn resolve_root(host_dir: &Path) -> Result<String, FsError> {
    let host_err = |source| FsError::HostDir {
        path: host_dir.to_path_buf(),
        source,
    };
    let dir = File::open(host_dir).map_err(host_err)?;
    if !dir.metadata().map_err(host_err)?.is_dir() {
        return Err(FsError::NotADirectory {
            path: host_dir.to_path_buf(),
        });
    }
    let canonical = std::fs::canonicalize(host_dir).map_err(host_err)?;
    canonical
        .to_str()
        .map(str::to_owned)
        .ok_or(FsError::NotUtf8 { path: canonical })
}

/// The passthrough configuration; each choice with its reason. `guest_only`: see
/// [`FsConfig::guest_only`].
fn passthrough_config(root: &str, guest_only: bool) -> PassthroughConfig {
    PassthroughConfig {
        root_dir: root.to_owned(),
        // Import the root at FUSE_INIT ourselves (no Vfs layer above). This also switches on
        // the passthrough's own name checks, which it skips when it runs under a Vfs.
        do_import: true,
        // Pods use xattrs (ACLs, user.*); privileged namespaces are refused in `guard`.
        xattr: true,
        // Write-through: data is on the host when WRITE returns, so the host sees status
        // files without a flush, O_APPEND stays atomic, and write-only files need no read
        // access on the host.
        writeback: false,
        // Page cache either way: MAP_SHARED mmap works (cache=never makes files direct-I/O,
        // which refuses it). A tree the host may change meanwhile (a host volume) gets
        // close-to-open consistency: the guest drops a file's cached data at every open, so
        // host changes are seen on the next open. A tree only the guest changes (the pod
        // share: the pod's own root file systems) keeps its cached data across opens
        // (FOPEN_KEEP_CACHE, and CACHE_DIR for directories): without it every exec re-read
        // the whole binary and its libraries over virtio-fs, about 50 ms per exec of a 2 MiB
        // busybox in the emulated KVM host. Only the guest's own view is concerned; what the
        // host serves and checks is the same.
        cache_policy: if guest_only {
            CachePolicy::Always
        } else {
            CachePolicy::Auto
        },
        entry_timeout: Duration::from_secs(5),
        attr_timeout: Duration::from_secs(5),
        dir_entry_timeout: None,
        dir_attr_timeout: None,
        // Every OPEN/OPENDIR gets a real handle (no_open needs cache=always).
        no_open: false,
        no_opendir: false,
        // A well-behaved guest kernel clears setuid bits itself (with a SETATTR), and `guard`
        // clears them before every write, truncation, fallocate and chown whatever the guest
        // sends; killpriv_v2 would only do it when the guest asks.
        killpriv_v2: false,
        // O_PATH descriptors, not file handles: open_by_handle_at needs CAP_DAC_READ_SEARCH and
        // a mount descriptor per file system, for no gain here.
        inode_file_handles: false,
        no_readdir: false,
        seal_size: false,
        // Inodes are told apart by (st_dev, st_ino), which is what the guest sees too.
        enable_mntid: false,
        // There is no DAX window.
        dax_file_size: None,
        use_host_ino: false,
        allow_direct_io: true,
    }
}

fn new_passthrough(root: &str, guest_only: bool) -> io::Result<PassthroughFs> {
    PassthroughFs::new(passthrough_config(root, guest_only))
}

/// Raises this process's open-file limit (best effort): to 2^20 or fs.nr_open as root, else
/// the soft limit to the hard one. The share holds one host descriptor per inode the guest has
/// looked up and per open file, so the common default of 1024 is reached by an ordinary
/// `apt-get` in a pod.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the `rlimit` we pass, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    // A guest that walks a large tree keeps that many inodes (and so host descriptors) until
    // its kernel forgets them; 4096, a common hard limit, is reached by creating 5,000 files.
    // As root (CAP_SYS_RESOURCE) the hard limit may go up to fs.nr_open.
    let wanted = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse::<libc::rlim_t>().ok())
        .unwrap_or(limit.rlim_max)
        .min(WANTED_FD_LIMIT);
    let raised = libc::rlimit {
        rlim_cur: wanted.max(limit.rlim_cur),
        rlim_max: wanted.max(limit.rlim_max),
    };
    // SAFETY: setrlimit only reads the `rlimit` we pass, which outlives the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return;
    }
    // Unprivileged: the soft limit can still go up to the hard one.
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    }
}

/// The descriptor limit the VMM asks for when it serves shares (virtiofsd's default too).
const WANTED_FD_LIMIT: libc::rlim_t = 1 << 20;

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_FS
    }

    fn features(&self) -> u64 {
        // Indirect descriptors: a 1 MiB request spans about 260 buffers, more than a small
        // ring holds. No VIRTIO_RING_F_EVENT_IDX: the worker signals after every pass that
        // used buffers.
        VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_INDIRECT_DESC
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_space(&self.config_space, offset, data);
    }

    /// The configuration space is read-only for the driver.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(
        &mut self,
        memory: GuestMemory,
        _features: u64,
        queues: Vec<ActiveQueue>,
        interrupt: Arc<Interrupt>,
    ) -> Result<(), ActivateError> {
        self.reset();
        // The transport hands over only the queues the driver made ready, in order; Linux
        // sets up all of them, and without both we cannot tell hiprio from requests.
        if queues.len() < QUEUE_SIZES.len() {
            return Err(ActivateError::QueueMissing(queues.len()));
        }
        let internal = |e: compat::CompatError| ActivateError::Worker(io::Error::other(e));
        let fuse_memory = compat::GuestMemoryView::new(&memory).map_err(internal)?;
        let mut served = Vec::with_capacity(queues.len());
        for active in queues {
            served.push(ServedQueue {
                queue: compat::queue_view(&active.queue).map_err(internal)?,
                notify: active.notify,
            });
        }
        // A fresh file system per activation: a reset forgets every inode and handle.
        let passthrough = new_passthrough(&self.root, self.guest_only)?;
        let server = Server::new(
            GuardedFs::new(passthrough, self.read_only).with_max_inodes(self.max_inodes),
        );
        self.worker = Some(Worker::spawn(server, fuse_memory, served, interrupt)?);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(mut worker) = self.worker.take() {
            worker.stop();
        }
    }
}

impl Drop for Fs {
    fn drop(&mut self) {
        self.reset();
    }
}
