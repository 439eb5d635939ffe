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
        // The worker's own root, cwd and umask (worker::unshare_fs_context), so the umask the
        // passthrough clears stays on this thread; no other namespace.
        Allow::arg_in(SYS_unshare, 0, &[CLONE_FS as u64]),
        // LOOKUP/OPEN/CREATE: openat relative to a parent's O_PATH descriptor or
        // /proc/self/fd; descriptors duplicated, their status flags changed (O_APPEND,
        // O_DIRECT on an open handle).
        Allow::always(SYS_openat),
        Allow::always(SYS_dup),
        Allow::arg_in(
            SYS_fcntl,
            1,
            &[
                F_GETFL as u64,
                F_SETFL as u64,
                F_GETFD as u64,
                F_DUPFD_CLOEXEC as u64,
            ],
        ),
        // GETATTR/LOOKUP (statx, fstatat), STATFS (fstatvfs: fstatfs).
        Allow::always(SYS_statx),
        Allow::always(SYS_newfstatat),
        Allow::always(SYS_fstat),
        Allow::always(SYS_fstatfs),
        // READ/WRITE between the file and guest memory, in place.
        Allow::always(SYS_pread64),
        Allow::always(SYS_pwrite64),
        Allow::always(SYS_preadv),
        Allow::always(SYS_pwritev),
        Allow::always(SYS_readv),
        Allow::always(SYS_writev),
        // LSEEK (SEEK_DATA/SEEK_HOLE), READDIR(PLUS).
        Allow::always(SYS_lseek),
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
        // SETATTR: mode, owner, times, size; FALLOCATE; FSYNC/FSYNCDIR.
        Allow::always(SYS_fchmod),
        Allow::always(SYS_fchmodat),
        Allow::always(SYS_fchownat),
        Allow::always(SYS_utimensat),
        Allow::always(SYS_ftruncate),
        Allow::always(SYS_fallocate),
        Allow::always(SYS_fsync),
        Allow::always(SYS_fdatasync),
        // GET/SET/LIST/REMOVEXATTR, by /proc/self/fd/N path (the inodes are O_PATH).
        Allow::always(SYS_getxattr),
        Allow::always(SYS_setxattr),
        Allow::always(SYS_listxattr),
        Allow::always(SYS_removexattr),
        // The passthrough creates files as the guest's caller: raw per-thread setresgid and
        // setresuid (ScopedGid/ScopedUid), back to ours afterwards; the umask is cleared at
        // INIT; its own IDs are read when it is created.
        Allow::always(SYS_setresuid),
        Allow::always(SYS_setresgid),
        Allow::always(SYS_umask),
        Allow::always(SYS_getuid),
        Allow::always(SYS_getgid),
        // Dropping and restoring CAP_FSETID around a write that must clear set-ID bits (the
        // caps crate; only with killpriv_v2, which is off, but a capability can only be
        // dropped or restored within the permitted set).
        Allow::always(SYS_capget),
        Allow::always(SYS_capset),
    ]);
    rules
}
