//! The virtio-fs worker's allow-list: the FUSE server and fuse-backend-rs's passthrough file
//! system, which works on `O_PATH` descriptors of every inode the guest looked up (reopened
//! through /proc/self/fd), switches its file-system credentials per request (raw setresuid /
//! setresgid around creations) and may drop CAP_FSETID around writes (capget/capset).

use crate::seccomp::rules::{worker_loop, Allow};

/// The worker's calls besides the common ones.
pub fn rules() -> Vec<Allow> {
    use libc::*;
    let mut rules = worker_loop();
    rules.extend([
        // LOOKUP/OPEN/CREATE: openat relative to a parent's O_PATH descriptor or
        // /proc/self/fd; the descriptors are duplicated and their flags read.
        Allow::always(SYS_openat),
        Allow::always(SYS_open),
        Allow::always(SYS_dup),
        Allow::arg_in(
            SYS_fcntl,
            1,
            &[
                F_GETFL as u64,
                F_SETFL as u64,
                F_GETFD as u64,
                F_SETFD as u64,
                F_DUPFD_CLOEXEC as u64,
                // POSIX locks (GETLK/SETLK/SETLKW) the guest asks for.
                F_GETLK as u64,
                F_SETLK as u64,
                F_SETLKW as u64,
                F_OFD_GETLK as u64,
                F_OFD_SETLK as u64,
                F_OFD_SETLKW as u64,
            ],
        ),
        Allow::always(SYS_flock),
        // GETATTR/LOOKUP/STATFS.
        Allow::always(SYS_statx),
        Allow::always(SYS_newfstatat),
        Allow::always(SYS_fstat),
        Allow::always(SYS_fstatfs),
        Allow::always(SYS_statfs),
        // READ/WRITE between the file and guest memory, in place.
        Allow::always(SYS_pread64),
        Allow::always(SYS_pwrite64),
        Allow::always(SYS_preadv),
        Allow::always(SYS_pwritev),
        Allow::always(SYS_preadv2),
        Allow::always(SYS_pwritev2),
        Allow::always(SYS_readv),
        Allow::always(SYS_writev),
        Allow::always(SYS_lseek),
        Allow::always(SYS_copy_file_range),
        // READDIR(PLUS).
        Allow::always(SYS_getdents64),
        // MKDIR/MKNOD/SYMLINK/LINK/UNLINK/RMDIR/RENAME(2)/READLINK.
        Allow::always(SYS_mkdirat),
        Allow::always(SYS_mknodat),
        Allow::always(SYS_symlinkat),
        Allow::always(SYS_linkat),
        Allow::always(SYS_unlinkat),
        Allow::always(SYS_renameat),
        Allow::always(SYS_renameat2),
        Allow::always(SYS_readlinkat),
        // SETATTR: mode, owner, times, size; FALLOCATE; FSYNC/FSYNCDIR/FLUSH.
        Allow::always(SYS_fchmod),
        Allow::always(SYS_fchmodat),
        Allow::always(SYS_fchown),
        Allow::always(SYS_fchownat),
        Allow::always(SYS_utimensat),
        Allow::always(SYS_ftruncate),
        Allow::always(SYS_truncate),
        Allow::always(SYS_fallocate),
        Allow::always(SYS_fsync),
        Allow::always(SYS_fdatasync),
        // xattrs: on descriptors, and by /proc/self/fd path for O_PATH inodes.
        Allow::always(SYS_fgetxattr),
        Allow::always(SYS_fsetxattr),
        Allow::always(SYS_flistxattr),
        Allow::always(SYS_fremovexattr),
        Allow::always(SYS_getxattr),
        Allow::always(SYS_setxattr),
        Allow::always(SYS_listxattr),
        Allow::always(SYS_removexattr),
        Allow::always(SYS_lgetxattr),
        Allow::always(SYS_lsetxattr),
        Allow::always(SYS_llistxattr),
        Allow::always(SYS_lremovexattr),
        // The passthrough creates files as the guest's caller: raw per-thread setresgid and
        // setresuid (ScopedGid/ScopedUid), back to ours afterwards; umask cleared at INIT.
        Allow::always(SYS_setresuid),
        Allow::always(SYS_setresgid),
        Allow::always(SYS_umask),
        Allow::always(SYS_getuid),
        Allow::always(SYS_getgid),
        // Dropping CAP_FSETID around a write that must clear set-ID bits (caps crate).
        Allow::always(SYS_capget),
        Allow::always(SYS_capset),
    ]);
    rules
}
