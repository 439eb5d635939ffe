//! What the VMM enforces on every FUSE request before the passthrough file system sees it: a
//! [`FileSystem`] wrapper that forwards to an inner one (fuse-backend-rs's `PassthroughFs`) and
//!
//! - answers EROFS to every modifying request of a read-only share, so a read-only volume stays
//!   read-only whatever the guest kernel or a malicious guest sends (rkt#3302);
//! - refuses names that are not one plain path component (empty, `.`, `..`, containing `/`) in
//!   every request that takes a name, including LOOKUP, which the passthrough lets through with
//!   `.`/`..` for NFS export (the Linux virtio-fs client never sends them);
//! - refuses device nodes other than overlayfs whiteouts (char 0:0) and extended attributes in
//!   the host-privileged `trusted.` and `security.` namespaces (file capabilities, LSM labels,
//!   host overlayfs metadata), which would give a guest power over the host rather than over
//!   its own files;
//! - clamps the buffer sizes a request names (readdir, getxattr, listxattr) so that the
//!   passthrough never allocates more than a fixed amount per request, and caps the number of
//!   open handles (each one is a host file descriptor);
//! - keeps DAX off and asks the guest for 1 MiB reads and writes in INIT.

use std::ffi::CStr;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::CreateIn;
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileSystem, FsOptions, GetxattrReply, ListxattrReply, OpenOptions,
    SetattrValid, ZeroCopyReader, ZeroCopyWriter,
};

/// Largest directory listing buffer handed to the passthrough per READDIR(PLUS); the guest asks
/// for one page, and a shorter listing only means another request.
pub const MAX_READDIR_BYTES: u32 = 128 * 1024;
/// Largest extended attribute value or name list on Linux (XATTR_SIZE_MAX, XATTR_LIST_MAX).
pub const MAX_XATTR_BYTES: u32 = 64 * 1024;
/// Open files and directories per share; each is a host file descriptor.
pub const MAX_OPEN_HANDLES: usize = 16 * 1024;

/// Extended attribute namespaces a guest may not write: `trusted.` is host-root metadata (host
/// overlayfs uses it), `security.` holds file capabilities and LSM labels the host honours.
const PRIVILEGED_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.", b"security."];

fn error(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// Whether `name` is exactly one path component that stays in its directory.
fn is_plain_component(name: &CStr) -> bool {
    let bytes = name.to_bytes();
    !bytes.is_empty() && bytes != b"." && bytes != b".." && !bytes.contains(&b'/')
}

fn check_name(name: &CStr) -> io::Result<()> {
    if is_plain_component(name) {
        Ok(())
    } else {
        Err(error(libc::EINVAL))
    }
}

/// Whether opening with `flags` could change the file (write access, truncation, creation).
fn open_modifies(flags: u32) -> bool {
    let flags = flags as i32;
    flags & libc::O_ACCMODE != libc::O_RDONLY
        || flags & (libc::O_TRUNC | libc::O_CREAT) != 0
        || flags & libc::O_TMPFILE == libc::O_TMPFILE
}

/// Only regular files, FIFOs, sockets and overlayfs whiteouts (char device 0:0) may be created
/// with MKNOD: a block or character device node would open a host device to anyone on the host
/// who can reach the share.
fn mknod_allowed(mode: u32, rdev: u32) -> bool {
    match mode & libc::S_IFMT {
        libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK => true,
        libc::S_IFCHR => rdev == 0,
        _ => false,
    }
}

fn xattr_is_privileged(name: &CStr) -> bool {
    let bytes = name.to_bytes();
    PRIVILEGED_XATTR_PREFIXES
        .iter()
        .any(|prefix| bytes.starts_with(prefix))
}

/// The VMM's policy in front of a file system (see the module documentation).
pub struct GuardedFs<F> {
    inner: F,
    read_only: bool,
    open_handles: AtomicUsize,
}

impl<F> GuardedFs<F> {
    /// Guards `inner`; a `read_only` share refuses every modifying request with EROFS.
    pub fn new(inner: F, read_only: bool) -> Self {
        GuardedFs {
            inner,
            read_only,
            open_handles: AtomicUsize::new(0),
        }
    }

    fn writable(&self) -> io::Result<()> {
        if self.read_only {
            Err(error(libc::EROFS))
        } else {
            Ok(())
        }
    }

    /// Reserves a handle slot; released by `handle_closed` or given back on failure.
    fn reserve_handle(&self) -> io::Result<()> {
        let previous = self.open_handles.fetch_add(1, Ordering::AcqRel);
        if previous >= MAX_OPEN_HANDLES {
            self.open_handles.fetch_sub(1, Ordering::AcqRel);
            return Err(error(libc::ENFILE));
        }
        Ok(())
    }

    fn handle_closed(&self) {
        // Saturating: a guest releasing handles it never opened must not wrap the counter.
        let _ = self
            .open_handles
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Runs an opening request in a reserved handle slot, keeping the slot only on success.
    fn with_handle_slot<T>(&self, open: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        self.reserve_handle()?;
        let result = open();
        if result.is_err() {
            self.handle_closed();
        }
        result
    }
}

impl<F: FileSystem<Inode = u64, Handle = u64>> FileSystem for GuardedFs<F> {
    type Inode = u64;
    type Handle = u64;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        let mut wanted = self.inner.init(capable)?;
        // No DAX window exists, so per-file DAX must never be negotiated.
        wanted.remove(FsOptions::PERFILE_DAX);
        // Up to 1 MiB per READ/WRITE (the server caps requests at that size) instead of the
        // 4 KiB the protocol defaults to, and readahead in parallel.
        wanted |= FsOptions::BIG_WRITES | FsOptions::MAX_PAGES | FsOptions::ASYNC_READ;
        Ok(wanted)
    }

    fn destroy(&self) {
        self.inner.destroy();
        self.open_handles.store(0, Ordering::Release);
    }

    fn lookup(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        check_name(name)?;
        self.inner.lookup(ctx, parent, name)
    }

    fn forget(&self, ctx: &Context, inode: u64, count: u64) {
        self.inner.forget(ctx, inode, count)
    }

    fn batch_forget(&self, ctx: &Context, requests: Vec<(u64, u64)>) {
        self.inner.batch_forget(ctx, requests)
    }

    fn getattr(
        &self,
        ctx: &Context,
        inode: u64,
        handle: Option<u64>,
    ) -> io::Result<(libc::stat64, Duration)> {
        self.inner.getattr(ctx, inode, handle)
    }

    fn setattr(
        &self,
        ctx: &Context,
        inode: u64,
        attr: libc::stat64,
        handle: Option<u64>,
        valid: SetattrValid,
    ) -> io::Result<(libc::stat64, Duration)> {
        self.writable()?;
        self.inner.setattr(ctx, inode, attr, handle, valid)
    }

    fn readlink(&self, ctx: &Context, inode: u64) -> io::Result<Vec<u8>> {
        self.inner.readlink(ctx, inode)
    }

    fn symlink(
        &self,
        ctx: &Context,
        linkname: &CStr,
        parent: u64,
        name: &CStr,
    ) -> io::Result<Entry> {
        self.writable()?;
        check_name(name)?;
        // The target is stored, never followed on the host: every host-side lookup is one
        // component with O_NOFOLLOW, so `/etc` or `../..` here only means something in the guest.
        self.inner.symlink(ctx, linkname, parent, name)
    }

    fn mknod(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.writable()?;
        check_name(name)?;
        if !mknod_allowed(mode, rdev) {
            return Err(error(libc::EPERM));
        }
        self.inner.mknod(ctx, parent, name, mode, rdev, umask)
    }

    fn mkdir(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.writable()?;
        check_name(name)?;
        self.inner.mkdir(ctx, parent, name, mode, umask)
    }

    fn unlink(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        self.writable()?;
        check_name(name)?;
        self.inner.unlink(ctx, parent, name)
    }

    fn rmdir(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        self.writable()?;
        check_name(name)?;
        self.inner.rmdir(ctx, parent, name)
    }

    fn rename(
        &self,
        ctx: &Context,
        olddir: u64,
        oldname: &CStr,
        newdir: u64,
        newname: &CStr,
        flags: u32,
    ) -> io::Result<()> {
        self.writable()?;
        check_name(oldname)?;
        check_name(newname)?;
        self.inner
            .rename(ctx, olddir, oldname, newdir, newname, flags)
    }

    fn link(&self, ctx: &Context, inode: u64, newparent: u64, newname: &CStr) -> io::Result<Entry> {
        self.writable()?;
        check_name(newname)?;
        self.inner.link(ctx, inode, newparent, newname)
    }

    fn open(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        if open_modifies(flags) {
            self.writable()?;
        }
        self.with_handle_slot(|| self.inner.open(ctx, inode, flags, fuse_flags))
    }

    fn create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        args: CreateIn,
    ) -> io::Result<(Entry, Option<u64>, OpenOptions, Option<u32>)> {
        self.writable()?;
        check_name(name)?;
        self.with_handle_slot(|| self.inner.create(ctx, parent, name, args))
    }

    fn read(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        flags: u32,
    ) -> io::Result<usize> {
        self.inner
            .read(ctx, inode, handle, w, size, offset, lock_owner, flags)
    }

    fn write(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        delayed_write: bool,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<usize> {
        self.writable()?;
        self.inner.write(
            ctx,
            inode,
            handle,
            r,
            size,
            offset,
            lock_owner,
            delayed_write,
            flags,
            fuse_flags,
        )
    }

    fn flush(&self, ctx: &Context, inode: u64, handle: u64, lock_owner: u64) -> io::Result<()> {
        self.inner.flush(ctx, inode, handle, lock_owner)
    }

    fn fsync(&self, ctx: &Context, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
        self.inner.fsync(ctx, inode, datasync, handle)
    }

    fn fallocate(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        mode: u32,
        offset: u64,
        length: u64,
    ) -> io::Result<()> {
        self.writable()?;
        self.inner
            .fallocate(ctx, inode, handle, mode, offset, length)
    }

    fn release(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        handle: u64,
        flush: bool,
        flock_release: bool,
        lock_owner: Option<u64>,
    ) -> io::Result<()> {
        self.inner
            .release(ctx, inode, flags, handle, flush, flock_release, lock_owner)
            .inspect(|()| self.handle_closed())
    }

    fn statfs(&self, ctx: &Context, inode: u64) -> io::Result<libc::statvfs64> {
        self.inner.statfs(ctx, inode)
    }

    fn setxattr(
        &self,
        ctx: &Context,
        inode: u64,
        name: &CStr,
        value: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        self.writable()?;
        if xattr_is_privileged(name) {
            return Err(error(libc::EPERM));
        }
        self.inner.setxattr(ctx, inode, name, value, flags)
    }

    fn getxattr(
        &self,
        ctx: &Context,
        inode: u64,
        name: &CStr,
        size: u32,
    ) -> io::Result<GetxattrReply> {
        self.inner
            .getxattr(ctx, inode, name, size.min(MAX_XATTR_BYTES))
    }

    fn listxattr(&self, ctx: &Context, inode: u64, size: u32) -> io::Result<ListxattrReply> {
        self.inner.listxattr(ctx, inode, size.min(MAX_XATTR_BYTES))
    }

    fn removexattr(&self, ctx: &Context, inode: u64, name: &CStr) -> io::Result<()> {
        self.writable()?;
        // Removing `security.capability` only drops privilege (the guest kernel does it when
        // a capable file is written), so only `trusted.` is refused here.
        if name.to_bytes().starts_with(b"trusted.") {
            return Err(error(libc::EPERM));
        }
        self.inner.removexattr(ctx, inode, name)
    }

    fn opendir(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions)> {
        self.with_handle_slot(|| self.inner.opendir(ctx, inode, flags))
    }

    fn readdir(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.inner.readdir(
            ctx,
            inode,
            handle,
            size.min(MAX_READDIR_BYTES),
            offset,
            add_entry,
        )
    }

    fn readdirplus(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.inner.readdirplus(
            ctx,
            inode,
            handle,
            size.min(MAX_READDIR_BYTES),
            offset,
            add_entry,
        )
    }

    fn fsyncdir(&self, ctx: &Context, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
        self.inner.fsyncdir(ctx, inode, datasync, handle)
    }

    fn releasedir(&self, ctx: &Context, inode: u64, flags: u32, handle: u64) -> io::Result<()> {
        self.inner
            .releasedir(ctx, inode, flags, handle)
            .inspect(|()| self.handle_closed())
    }

    fn access(&self, ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
        // access(W_OK) on a read-only file system is EROFS, as for a read-only mount.
        if mask & libc::W_OK as u32 != 0 {
            self.writable()?;
        }
        self.inner.access(ctx, inode, mask)
    }

    fn lseek(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        self.inner.lseek(ctx, inode, handle, offset, whence)
    }

    // Not forwarded, so the trait's ENOSYS/ENOTTY answers apply: locks (INIT does not offer
    // them, so the guest kernel keeps POSIX locks and flock local to the guest), ioctl, poll,
    // bmap, DAX mappings. The request filter in `request.rs` refuses those opcodes anyway.
}
