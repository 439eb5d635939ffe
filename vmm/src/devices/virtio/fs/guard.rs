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
//!   open handles and of inodes the guest holds (each one is a host file descriptor);
//! - never lets the guest manufacture privileges on the host: the server runs as root, so
//!   set-user-ID is stripped from every mode the guest gives (create, mkdir, mknod, chmod) and
//!   set-group-ID from every mode but a directory's; and, as the kernel's "killpriv" does for
//!   an unprivileged writer, set-user-ID and set-group-ID are cleared from a regular file
//!   before the guest writes to it, truncates it, allocates in it or changes its owner (the
//!   server has CAP_FSETID, so the host kernel would keep them);
//! - keeps DAX off and asks the guest for 1 MiB reads and writes in INIT.

use std::collections::HashMap;
use std::ffi::CStr;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::CreateIn;
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileSystem, FsOptions, GetxattrReply, ListxattrReply, OpenOptions,
    SetattrValid, ZeroCopyReader, ZeroCopyWriter, ROOT_ID,
};

/// Largest directory listing buffer handed to the passthrough per READDIR(PLUS); the guest asks
/// for one page, and a shorter listing only means another request.
pub const MAX_READDIR_BYTES: u32 = 128 * 1024;
/// Largest extended attribute value or name list on Linux (XATTR_SIZE_MAX, XATTR_LIST_MAX).
pub const MAX_XATTR_BYTES: u32 = 64 * 1024;
/// Open files and directories per share; each is a host file descriptor.
pub const MAX_OPEN_HANDLES: usize = 16 * 1024;
/// Inodes the guest may hold per share unless configured otherwise (`FsConfig::max_inodes`):
/// the passthrough keeps an `O_PATH` host descriptor for each inode the guest has looked up
/// and not forgotten.
pub const DEFAULT_MAX_INODES: usize = 65536;

/// The mode bits that make an executable run with its owner's or group's rights.
const SET_ID_BITS: u32 = libc::S_ISUID | libc::S_ISGID;

/// The mode a guest may give an inode: never set-user-ID; set-group-ID only on a directory,
/// where it only makes new entries inherit the directory's group (and new subdirectories the
/// bit), which grants nothing: the guest can give its files any group anyway (the server is
/// root), and files created there still lose set-group-ID here.
fn unprivileged_mode(mode: u32, is_dir: bool) -> u32 {
    if is_dir {
        mode & !libc::S_ISUID
    } else {
        mode & !SET_ID_BITS
    }
}

fn is_dir(mode: u32) -> bool {
    mode & libc::S_IFMT == libc::S_IFDIR
}

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

/// The inodes the guest holds: each one's lookup count as the passthrough keeps it (one per
/// entry handed to the guest, minus what FORGET gives back; at 0 the passthrough closes the
/// inode's descriptor), plus the slots reserved by requests that are creating an inode now.
#[derive(Debug, Default)]
struct InodeRefs {
    counts: HashMap<u64, u64>,
    reserved: usize,
}

impl InodeRefs {
    fn in_use(&self) -> usize {
        self.counts.len() + self.reserved
    }

    /// Counts one more reference to `inode`, which takes a new slot unless the guest already
    /// holds it; false (nothing counted) when that would go past `max`. The root is always
    /// there and never counts.
    fn admit(&mut self, inode: u64, max: usize) -> bool {
        if inode == ROOT_ID {
            return true;
        }
        if let Some(count) = self.counts.get_mut(&inode) {
            *count = count.saturating_add(1);
            return true;
        }
        if self.in_use() >= max {
            return false;
        }
        self.counts.insert(inode, 1);
        true
    }

    /// The guest gave back `count` references (FORGET): as the passthrough does, saturating,
    /// and the slot is free at 0.
    fn forget(&mut self, inode: u64, count: u64) {
        if let Some(held) = self.counts.get_mut(&inode) {
            *held = held.saturating_sub(count);
            if *held == 0 {
                self.counts.remove(&inode);
            }
        }
    }
}

/// The VMM's policy in front of a file system (see the module documentation).
pub struct GuardedFs<F> {
    inner: F,
    read_only: bool,
    open_handles: AtomicUsize,
    max_handles: usize,
    inodes: Mutex<InodeRefs>,
    max_inodes: usize,
}

impl<F> GuardedFs<F> {
    /// Guards `inner`; a `read_only` share refuses every modifying request with EROFS.
    pub fn new(inner: F, read_only: bool) -> Self {
        GuardedFs {
            inner,
            read_only,
            open_handles: AtomicUsize::new(0),
            max_handles: MAX_OPEN_HANDLES,
            inodes: Mutex::new(InodeRefs::default()),
            max_inodes: DEFAULT_MAX_INODES,
        }
    }

    /// The same guard with at most `max` open handles instead of [`MAX_OPEN_HANDLES`].
    pub fn with_max_handles(mut self, max: usize) -> Self {
        self.max_handles = max;
        self
    }

    /// The same guard letting the guest hold at most `max` inodes (besides the root) instead
    /// of [`DEFAULT_MAX_INODES`]: a lookup or creation that would take one more is refused
    /// with ENFILE; inodes already held keep working and FORGET makes room.
    pub fn with_max_inodes(mut self, max: usize) -> Self {
        self.max_inodes = max;
        self
    }

    /// The inode table. A panic elsewhere cannot leave it inconsistent (every change is one
    /// map operation), so a poisoned lock is used as it is.
    fn inode_refs(&self) -> MutexGuard<'_, InodeRefs> {
        self.inodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves room for an inode a request is about to create (ENFILE when there is none).
    fn reserve_inode(&self) -> io::Result<()> {
        let mut refs = self.inode_refs();
        if refs.in_use() >= self.max_inodes {
            return Err(error(libc::ENFILE));
        }
        refs.reserved += 1;
        Ok(())
    }

    /// Ends a reservation: the created inode, if any, is counted in its place (it always fits,
    /// the reservation held its room).
    fn finish_inode(&self, created: Option<u64>) {
        let mut refs = self.inode_refs();
        refs.reserved = refs.reserved.saturating_sub(1);
        if let Some(inode) = created {
            // Cannot fail: the slot was reserved, so the cap is not consulted again.
            refs.admit(inode, usize::MAX);
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
        if previous >= self.max_handles {
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

impl<F: FileSystem<Inode = u64, Handle = u64>> GuardedFs<F> {
    /// Counts the reference an inner request returned with `entry`; past the cap the inner
    /// file system forgets it again (closing its descriptor) and the request fails with ENFILE.
    fn admit_entry(&self, ctx: &Context, entry: Entry) -> io::Result<Entry> {
        if self.inode_refs().admit(entry.inode, self.max_inodes) {
            return Ok(entry);
        }
        self.inner.forget(ctx, entry.inode, 1);
        Err(error(libc::ENFILE))
    }

    /// Runs a request that creates a new inode in a reserved inode slot.
    fn with_inode_slot(&self, create: impl FnOnce() -> io::Result<Entry>) -> io::Result<Entry> {
        self.reserve_inode()?;
        let result = create();
        self.finish_inode(result.as_ref().ok().map(|entry| entry.inode));
        result
    }

    /// Clears set-user-ID and set-group-ID on `inode` if it is a regular file, before the
    /// guest modifies it: the kernel does this for a writer without CAP_FSETID, but the server
    /// has it, so a guest could otherwise rewrite a set-user-ID host binary in place and keep
    /// the bit. Done before the change, as the kernel does, so no one can run a half-changed
    /// privileged file; a failure fails the request.
    fn kill_set_id(&self, ctx: &Context, inode: u64) -> io::Result<()> {
        let (st, _) = self.inner.getattr(ctx, inode, None)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_mode & SET_ID_BITS == 0 {
            return Ok(());
        }
        // SAFETY: stat64 is plain integers, for which all-zero is a valid value.
        let mut attr: libc::stat64 = unsafe { std::mem::zeroed() };
        attr.st_mode = st.st_mode & 0o7777 & !SET_ID_BITS;
        self.inner
            .setattr(ctx, inode, attr, None, SetattrValid::MODE)
            .map(|_| ())
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
        *self.inode_refs() = InodeRefs::default();
    }

    fn lookup(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        check_name(name)?;
        let entry = self.inner.lookup(ctx, parent, name)?;
        self.admit_entry(ctx, entry)
    }

    fn forget(&self, ctx: &Context, inode: u64, count: u64) {
        self.inode_refs().forget(inode, count);
        self.inner.forget(ctx, inode, count)
    }

    fn batch_forget(&self, ctx: &Context, requests: Vec<(u64, u64)>) {
        {
            let mut refs = self.inode_refs();
            for &(inode, count) in &requests {
                refs.forget(inode, count);
            }
        }
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
        let mut attr = attr;
        if valid.contains(SetattrValid::MODE) {
            // The file type comes from the host, never from the guest's mode; it is only
            // needed when set-group-ID is asked for.
            let dir = attr.st_mode & libc::S_ISGID != 0
                && is_dir(self.inner.getattr(ctx, inode, None)?.0.st_mode);
            attr.st_mode = unprivileged_mode(attr.st_mode, dir);
        }
        if valid.intersects(SetattrValid::SIZE | SetattrValid::UID | SetattrValid::GID) {
            self.kill_set_id(ctx, inode)?;
        }
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
        self.with_inode_slot(|| self.inner.symlink(ctx, linkname, parent, name))
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
        // Never a directory (mknod_allowed), so neither set-ID bit stays.
        let mode = unprivileged_mode(mode, false);
        self.with_inode_slot(|| self.inner.mknod(ctx, parent, name, mode, rdev, umask))
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
        let mode = unprivileged_mode(mode, true);
        self.with_inode_slot(|| self.inner.mkdir(ctx, parent, name, mode, umask))
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
        // The entry is the inode the guest already holds, so it takes no new slot.
        let entry = self.inner.link(ctx, inode, newparent, newname)?;
        self.admit_entry(ctx, entry)
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
        if flags as i32 & libc::O_TRUNC != 0 {
            self.kill_set_id(ctx, inode)?;
        }
        self.with_handle_slot(|| self.inner.open(ctx, inode, flags, fuse_flags))
    }

    fn create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mut args: CreateIn,
    ) -> io::Result<(Entry, Option<u64>, OpenOptions, Option<u32>)> {
        self.writable()?;
        check_name(name)?;
        // The passthrough opens new files with the guest's flags only; keep the host
        // descriptor out of any process the VMM might start.
        args.flags |= libc::O_CLOEXEC as u32;
        args.mode = unprivileged_mode(args.mode, false);
        let exclusive = args.flags as i32 & libc::O_EXCL != 0;
        // The inner create is always exclusive, for the inode count: when the name exists and
        // its open then fails, the passthrough keeps the reference its lookup took, which the
        // guest never learns of and so never forgets (a guest could pin host descriptors
        // without limit that way). An existing name is opened below, as OPEN would.
        let room = self.reserve_inode().is_ok();
        if room {
            let mut new_file = args;
            new_file.flags |= libc::O_EXCL as u32;
            let result = self.with_handle_slot(|| self.inner.create(ctx, parent, name, new_file));
            self.finish_inode(result.as_ref().ok().map(|created| created.0.inode));
            match result {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && !exclusive => {}
                other => return other,
            }
        } else if exclusive {
            return Err(error(libc::ENFILE));
        }
        let entry = match self.lookup(ctx, parent, name) {
            // No room to create it.
            Err(e) if !room && e.raw_os_error() == Some(libc::ENOENT) => {
                return Err(error(libc::ENFILE))
            }
            other => other?,
        };
        let flags = args.flags & !((libc::O_CREAT | libc::O_EXCL) as u32);
        let opened = (|| {
            if flags as i32 & libc::O_TRUNC != 0 {
                self.kill_set_id(ctx, entry.inode)?;
            }
            self.with_handle_slot(|| self.inner.open(ctx, entry.inode, flags, args.fuse_flags))
        })();
        match opened {
            Ok((handle, options, passthrough)) => Ok((entry, handle, options, passthrough)),
            Err(e) => {
                self.forget(ctx, entry.inode, 1);
                Err(e)
            }
        }
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
        self.kill_set_id(ctx, inode)?;
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
        // Allocating, punching holes and zeroing ranges change the file too.
        self.kill_set_id(ctx, inode)?;
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
        // Every entry listed is a lookup (a reference the guest must forget), so each is
        // counted against the cap like LOOKUP. The passthrough forgets an entry itself when
        // `add_entry` answers 0 (no room: the listing ends there and the guest asks again from
        // that offset), but not when it fails, so that case is forgotten here.
        let mut full = false;
        let mut listed = 0usize;
        self.inner.readdirplus(
            ctx,
            inode,
            handle,
            size.min(MAX_READDIR_BYTES),
            offset,
            &mut |dir_entry, entry| {
                let ino = entry.inode;
                if !self.inode_refs().admit(ino, self.max_inodes) {
                    full = true;
                    return Ok(0);
                }
                match add_entry(dir_entry, entry) {
                    Ok(0) => {
                        self.inode_refs().forget(ino, 1);
                        Ok(0)
                    }
                    Ok(n) => {
                        listed += 1;
                        Ok(n)
                    }
                    Err(e) => {
                        self.inode_refs().forget(ino, 1);
                        self.inner.forget(ctx, ino, 1);
                        Err(e)
                    }
                }
            },
        )?;
        // A listing cut short by the cap says so instead of looking like the directory's end.
        if full && listed == 0 {
            return Err(error(libc::ENFILE));
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::ffi::CString;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;
    use std::sync::Mutex;

    use fuse_backend_rs::api::filesystem::ROOT_ID;
    use fuse_backend_rs::file_traits::FileReadWriteVolatile;
    use fuse_backend_rs::passthrough::{Config, PassthroughFs};
    use vmm_sys_util::tempdir::TempDir;

    use super::*;

    fn c(name: &str) -> CString {
        CString::new(name).unwrap()
    }

    fn errno<T>(result: io::Result<T>) -> Option<i32> {
        match result {
            Ok(_) => None,
            Err(e) => e.raw_os_error(),
        }
    }

    /// A share with a file, a directory with a file, and a symlink.
    fn share() -> TempDir {
        let dir = TempDir::new_with_prefix("/tmp/vmm-fs-guard-").unwrap();
        let root = dir.as_path();
        std::fs::write(root.join("file"), b"data").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/inner"), b"inner").unwrap();
        std::os::unix::fs::symlink("file", root.join("link")).unwrap();
        dir
    }

    /// The passthrough sets the umask to 0 when it imports its root; keep that to this test's
    /// thread, as the worker does.
    fn keep_umask_to_this_thread() {
        super::super::worker::unshare_fs_context().unwrap();
    }

    fn guarded(dir: &TempDir, read_only: bool) -> GuardedFs<PassthroughFs> {
        keep_umask_to_this_thread();
        let config = Config {
            root_dir: dir.as_path().to_str().unwrap().to_owned(),
            do_import: true,
            xattr: true,
            ..Default::default()
        };
        let fs = GuardedFs::new(PassthroughFs::new(config).unwrap(), read_only);
        fs.init(FsOptions::empty()).unwrap();
        fs
    }

    /// Everything observable about a tree: type, mode, owner, size, times, contents, targets.
    fn snapshot(root: &Path) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut pending = vec![root.to_path_buf()];
        while let Some(path) = pending.pop() {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let mut line = format!(
                "{:o} {}:{} {} {}.{} {}",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.size(),
                meta.mtime(),
                meta.mtime_nsec(),
                meta.nlink()
            );
            if meta.is_dir() {
                for entry in std::fs::read_dir(&path).unwrap() {
                    pending.push(entry.unwrap().path());
                }
            } else if meta.file_type().is_symlink() {
                line += &format!(" -> {}", std::fs::read_link(&path).unwrap().display());
            } else {
                line += &format!(" {:?}", std::fs::read(&path).unwrap());
            }
            out.insert(rel, line);
        }
        out
    }

    /// A reader with nothing in it: refused writes must not get as far as reading.
    struct NoData;

    impl io::Read for NoData {
        fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
            Ok(0)
        }
    }

    impl ZeroCopyReader for NoData {
        fn read_to(
            &mut self,
            _f: &mut dyn FileReadWriteVolatile,
            _count: usize,
            _off: u64,
        ) -> io::Result<usize> {
            Ok(0)
        }
    }

    fn attr() -> libc::stat64 {
        // SAFETY: stat64 is plain integers, for which all-zero is a valid value.
        let mut attr: libc::stat64 = unsafe { std::mem::zeroed() };
        attr.st_mode = 0o777;
        attr.st_uid = 1234;
        attr.st_gid = 1234;
        attr
    }

    #[test]
    fn a_read_only_share_refuses_every_modifying_request() {
        let dir = share();
        let before = snapshot(dir.as_path());
        let fs = guarded(&dir, true);
        let ctx = Context::default();
        let file = fs.lookup(&ctx, ROOT_ID, &c("file")).unwrap().inode;
        let sub = fs.lookup(&ctx, ROOT_ID, &c("sub")).unwrap().inode;
        let create = |flags: i32| CreateIn {
            flags: flags as u32,
            mode: 0o644,
            umask: 0,
            fuse_flags: 0,
        };
        let refused = [
            (
                "create",
                errno(fs.create(&ctx, ROOT_ID, &c("new"), create(libc::O_RDWR))),
            ),
            (
                "create existing",
                errno(fs.create(&ctx, ROOT_ID, &c("file"), create(libc::O_RDONLY))),
            ),
            (
                "mknod",
                errno(fs.mknod(&ctx, ROOT_ID, &c("fifo"), libc::S_IFIFO | 0o644, 0, 0)),
            ),
            ("mkdir", errno(fs.mkdir(&ctx, ROOT_ID, &c("d"), 0o755, 0))),
            ("unlink", errno(fs.unlink(&ctx, ROOT_ID, &c("file")))),
            ("rmdir", errno(fs.rmdir(&ctx, ROOT_ID, &c("sub")))),
            (
                "rename",
                errno(fs.rename(&ctx, ROOT_ID, &c("file"), sub, &c("moved"), 0)),
            ),
            (
                "rename exchange",
                errno(fs.rename(
                    &ctx,
                    ROOT_ID,
                    &c("file"),
                    ROOT_ID,
                    &c("sub"),
                    libc::RENAME_EXCHANGE,
                )),
            ),
            ("link", errno(fs.link(&ctx, file, ROOT_ID, &c("hard")))),
            (
                "symlink",
                errno(fs.symlink(&ctx, &c("/"), ROOT_ID, &c("s"))),
            ),
            (
                "truncate",
                errno(fs.setattr(&ctx, file, attr(), None, SetattrValid::SIZE)),
            ),
            (
                "chmod",
                errno(fs.setattr(&ctx, file, attr(), None, SetattrValid::MODE)),
            ),
            (
                "chown",
                errno(fs.setattr(
                    &ctx,
                    file,
                    attr(),
                    None,
                    SetattrValid::UID | SetattrValid::GID,
                )),
            ),
            (
                "utimens",
                errno(fs.setattr(
                    &ctx,
                    file,
                    attr(),
                    None,
                    SetattrValid::ATIME | SetattrValid::MTIME_NOW,
                )),
            ),
            (
                "open wronly",
                errno(fs.open(&ctx, file, libc::O_WRONLY as u32, 0)),
            ),
            (
                "open rdwr",
                errno(fs.open(&ctx, file, libc::O_RDWR as u32, 0)),
            ),
            (
                "open trunc",
                errno(fs.open(&ctx, file, (libc::O_RDONLY | libc::O_TRUNC) as u32, 0)),
            ),
            (
                "open tmpfile",
                errno(fs.open(&ctx, sub, (libc::O_TMPFILE | libc::O_RDWR) as u32, 0)),
            ),
            (
                "write",
                errno(fs.write(&ctx, file, 1, &mut NoData, 4, 0, None, false, 0, 0)),
            ),
            ("fallocate", errno(fs.fallocate(&ctx, file, 1, 0, 0, 4096))),
            (
                "setxattr",
                errno(fs.setxattr(&ctx, file, &c("user.x"), b"1", 0)),
            ),
            (
                "removexattr",
                errno(fs.removexattr(&ctx, file, &c("user.x"))),
            ),
            (
                "access W_OK",
                errno(fs.access(&ctx, file, libc::W_OK as u32)),
            ),
        ];
        for (what, result) in refused {
            assert_eq!(result, Some(libc::EROFS), "{what}");
        }
        // Reading still works.
        assert_eq!(errno(fs.open(&ctx, file, libc::O_RDONLY as u32, 0)), None);
        assert_eq!(errno(fs.opendir(&ctx, sub, libc::O_RDONLY as u32)), None);
        assert_eq!(errno(fs.access(&ctx, file, libc::R_OK as u32)), None);
        assert_eq!(
            errno(fs.readlink(&ctx, fs.lookup(&ctx, ROOT_ID, &c("link")).unwrap().inode)),
            None
        );
        assert_eq!(errno(fs.statfs(&ctx, ROOT_ID)), None);
        assert_eq!(
            snapshot(dir.as_path()),
            before,
            "the host directory changed"
        );
    }

    #[test]
    fn a_writable_share_lets_the_same_requests_through() {
        let dir = share();
        let fs = guarded(&dir, false);
        let ctx = Context::default();
        let file = fs.lookup(&ctx, ROOT_ID, &c("file")).unwrap().inode;
        fs.mkdir(&ctx, ROOT_ID, &c("d"), 0o750, 0).unwrap();
        fs.link(&ctx, file, ROOT_ID, &c("hard")).unwrap();
        fs.symlink(&ctx, &c("/etc"), ROOT_ID, &c("abs")).unwrap();
        fs.setattr(&ctx, file, attr(), None, SetattrValid::MODE)
            .unwrap();
        fs.rename(&ctx, ROOT_ID, &c("file"), ROOT_ID, &c("renamed"), 0)
            .unwrap();
        let root = dir.as_path();
        assert!(root.join("d").is_dir());
        assert_eq!(std::fs::read(root.join("hard")).unwrap(), b"data");
        assert_eq!(
            std::fs::read_link(root.join("abs")).unwrap(),
            Path::new("/etc")
        );
        let meta = std::fs::metadata(root.join("renamed")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o777);
        assert_eq!(meta.nlink(), 2);
    }

    #[test]
    fn posix_operations_pods_need_work_through_the_guard() {
        let dir = share();
        let fs = guarded(&dir, false);
        let root_ctx = Context::default();
        let root = dir.as_path();
        // Ownership on create follows the caller (rkt#2576); the host checks the caller's
        // permissions too, so the share root must let uid 1234 in.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o777)).unwrap();
        let user = Context {
            uid: 1234,
            gid: 2345,
            pid: 1,
        };
        let args = CreateIn {
            flags: libc::O_RDWR as u32,
            mode: 0o600,
            umask: 0,
            fuse_flags: 0,
        };
        let (entry, handle, _, _) = fs.create(&user, ROOT_ID, &c("owned"), args).unwrap();
        let meta = std::fs::metadata(root.join("owned")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1234, 2345));
        fs.mkdir(&user, ROOT_ID, &c("owned_dir"), 0o700, 0).unwrap();
        assert_eq!(
            std::fs::metadata(root.join("owned_dir")).unwrap().uid(),
            1234
        );
        // Open, unlink, fstat (rkt#1917): the open handle still answers.
        let handle = handle.unwrap();
        fs.unlink(&root_ctx, ROOT_ID, &c("owned")).unwrap();
        assert!(!root.join("owned").exists());
        let (st, _) = fs.getattr(&root_ctx, entry.inode, Some(handle)).unwrap();
        assert_eq!((st.st_nlink, st.st_uid), (0, 1234));
        fs.fsync(&root_ctx, entry.inode, false, handle).unwrap();
        fs.release(&root_ctx, entry.inode, 0, handle, false, false, None)
            .unwrap();
        // rename2: NOREPLACE refuses an existing target, EXCHANGE swaps.
        std::fs::write(root.join("a"), b"A").unwrap();
        std::fs::write(root.join("b"), b"B").unwrap();
        assert_eq!(
            errno(fs.rename(
                &root_ctx,
                ROOT_ID,
                &c("a"),
                ROOT_ID,
                &c("b"),
                libc::RENAME_NOREPLACE
            )),
            Some(libc::EEXIST)
        );
        fs.rename(
            &root_ctx,
            ROOT_ID,
            &c("a"),
            ROOT_ID,
            &c("b"),
            libc::RENAME_EXCHANGE,
        )
        .unwrap();
        assert_eq!(std::fs::read(root.join("a")).unwrap(), b"B");
        // chown, chmod with the sticky bit, utimens, truncate.
        let file = fs.lookup(&root_ctx, ROOT_ID, &c("a")).unwrap().inode;
        let mut attr = attr();
        attr.st_mode = libc::S_ISVTX | 0o777;
        attr.st_mtime = 1_000_000;
        attr.st_size = 0;
        fs.setattr(
            &root_ctx,
            file,
            attr,
            None,
            SetattrValid::UID
                | SetattrValid::GID
                | SetattrValid::MODE
                | SetattrValid::MTIME
                | SetattrValid::SIZE,
        )
        .unwrap();
        let meta = std::fs::metadata(root.join("a")).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (1234, 1234, 0o1777)
        );
        assert_eq!((meta.mtime(), meta.len()), (1_000_000, 0));
        // Symlinks and readlink; statfs.
        let link = fs.symlink(&root_ctx, &c("a"), ROOT_ID, &c("to_a")).unwrap();
        assert_eq!(fs.readlink(&root_ctx, link.inode).unwrap(), b"a");
        assert!(fs.statfs(&root_ctx, ROOT_ID).unwrap().f_blocks > 0);
        // xattrs.
        fs.setxattr(&root_ctx, file, &c("user.k"), b"v", 0).unwrap();
        match fs.getxattr(&root_ctx, file, &c("user.k"), 16).unwrap() {
            GetxattrReply::Value(value) => assert_eq!(value, b"v"),
            GetxattrReply::Count(_) => panic!("asked for the value"),
        }
        fs.removexattr(&root_ctx, file, &c("user.k")).unwrap();
        assert_eq!(xattr(&root.join("a"), "user.k"), None);
    }

    #[test]
    fn names_must_be_one_plain_component() {
        let dir = share();
        let fs = guarded(&dir, false);
        let ctx = Context::default();
        for name in ["", ".", "..", "sub/inner", "../etc", "/etc", "sub/"] {
            assert_eq!(
                errno(fs.lookup(&ctx, ROOT_ID, &c(name))),
                Some(libc::EINVAL),
                "lookup {name:?}"
            );
            assert_eq!(
                errno(fs.mkdir(&ctx, ROOT_ID, &c(name), 0o755, 0)),
                Some(libc::EINVAL),
                "mkdir {name:?}"
            );
            assert_eq!(
                errno(fs.rename(&ctx, ROOT_ID, &c("file"), ROOT_ID, &c(name), 0)),
                Some(libc::EINVAL),
                "rename to {name:?}"
            );
        }
        assert!(dir.as_path().join("file").exists());
    }

    #[test]
    fn host_device_nodes_and_privileged_xattrs_are_refused() {
        let dir = share();
        let fs = guarded(&dir, false);
        let ctx = Context::default();
        let mem_dev = libc::makedev(1, 1) as u32;
        assert_eq!(
            errno(fs.mknod(&ctx, ROOT_ID, &c("mem"), libc::S_IFCHR | 0o666, mem_dev, 0)),
            Some(libc::EPERM)
        );
        assert_eq!(
            errno(fs.mknod(&ctx, ROOT_ID, &c("disk"), libc::S_IFBLK | 0o666, mem_dev, 0)),
            Some(libc::EPERM)
        );
        assert!(!dir.as_path().join("mem").exists());
        assert!(!dir.as_path().join("disk").exists());
        // FIFOs, and overlayfs whiteouts, are fine.
        fs.mknod(&ctx, ROOT_ID, &c("fifo"), libc::S_IFIFO | 0o644, 0, 0)
            .unwrap();
        fs.mknod(&ctx, ROOT_ID, &c("whiteout"), libc::S_IFCHR, 0, 0)
            .unwrap();
        let file = fs.lookup(&ctx, ROOT_ID, &c("file")).unwrap().inode;
        for name in ["trusted.overlay.opaque", "security.capability"] {
            assert_eq!(
                errno(fs.setxattr(&ctx, file, &c(name), b"y", 0)),
                Some(libc::EPERM),
                "{name}"
            );
        }
        assert_eq!(
            errno(fs.removexattr(&ctx, file, &c("trusted.overlay.opaque"))),
            Some(libc::EPERM)
        );
        fs.setxattr(&ctx, file, &c("user.note"), b"kept", 0)
            .unwrap();
        assert_eq!(
            xattr(&dir.as_path().join("file"), "user.note"),
            Some(b"kept".to_vec())
        );
    }

    fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
        let path = c(path.to_str().unwrap());
        let name = c(name);
        let mut buf = [0u8; 64];
        // SAFETY: both strings are NUL-terminated and `buf` is writable for its length.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        usize::try_from(n).ok().map(|n| buf[..n].to_vec())
    }

    #[test]
    fn open_handles_are_capped_and_released() {
        let dir = share();
        let fs = guarded(&dir, false).with_max_handles(2);
        let ctx = Context::default();
        let file = fs.lookup(&ctx, ROOT_ID, &c("file")).unwrap().inode;
        let first = fs
            .open(&ctx, file, libc::O_RDONLY as u32, 0)
            .unwrap()
            .0
            .unwrap();
        // A failed open does not keep a slot.
        assert!(fs.open(&ctx, 999, libc::O_RDONLY as u32, 0).is_err());
        let _second = fs.opendir(&ctx, ROOT_ID, libc::O_RDONLY as u32).unwrap();
        assert_eq!(
            errno(fs.open(&ctx, file, libc::O_RDONLY as u32, 0)),
            Some(libc::ENFILE)
        );
        // Releasing a handle that does not exist frees nothing.
        assert!(fs
            .release(&ctx, file, 0, 12345, false, false, None)
            .is_err());
        assert_eq!(
            errno(fs.open(&ctx, file, libc::O_RDONLY as u32, 0)),
            Some(libc::ENFILE)
        );
        fs.release(&ctx, file, 0, first, false, false, None)
            .unwrap();
        assert_eq!(errno(fs.open(&ctx, file, libc::O_RDONLY as u32, 0)), None);
    }

    /// Records the buffer sizes the guard passes on.
    #[derive(Default)]
    struct SizeRecorder(Mutex<Vec<u32>>);

    impl FileSystem for SizeRecorder {
        type Inode = u64;
        type Handle = u64;

        fn getxattr(&self, _: &Context, _: u64, _: &CStr, size: u32) -> io::Result<GetxattrReply> {
            self.0.lock().unwrap().push(size);
            Err(error(libc::ENODATA))
        }

        fn listxattr(&self, _: &Context, _: u64, size: u32) -> io::Result<ListxattrReply> {
            self.0.lock().unwrap().push(size);
            Err(error(libc::ENODATA))
        }

        fn readdir(
            &self,
            _: &Context,
            _: u64,
            _: u64,
            size: u32,
            _: u64,
            _: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
        ) -> io::Result<()> {
            self.0.lock().unwrap().push(size);
            Ok(())
        }

        fn readdirplus(
            &self,
            _: &Context,
            _: u64,
            _: u64,
            size: u32,
            _: u64,
            _: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
        ) -> io::Result<()> {
            self.0.lock().unwrap().push(size);
            Ok(())
        }
    }

    #[test]
    fn buffer_sizes_named_by_the_guest_are_clamped() {
        let fs = GuardedFs::new(SizeRecorder::default(), false);
        let ctx = Context::default();
        let _ = fs.getxattr(&ctx, 1, &c("user.a"), u32::MAX);
        let _ = fs.getxattr(&ctx, 1, &c("user.a"), 0);
        let _ = fs.listxattr(&ctx, 1, u32::MAX);
        let _ = fs.readdir(&ctx, 1, 1, u32::MAX, 0, &mut |_| Ok(0));
        let _ = fs.readdirplus(&ctx, 1, 1, 4096, 0, &mut |_, _| Ok(0));
        assert_eq!(
            *fs.inner.0.lock().unwrap(),
            vec![MAX_XATTR_BYTES, 0, MAX_XATTR_BYTES, MAX_READDIR_BYTES, 4096]
        );
    }

    #[test]
    fn init_asks_for_big_requests_and_never_dax() {
        let dir = share();
        let config = Config {
            root_dir: dir.as_path().to_str().unwrap().to_owned(),
            ..Default::default()
        };
        let fs = GuardedFs::new(PassthroughFs::<()>::new(config).unwrap(), false);
        keep_umask_to_this_thread();
        let wanted = fs.init(FsOptions::all()).unwrap();
        assert!(wanted.contains(FsOptions::BIG_WRITES | FsOptions::MAX_PAGES));
        assert!(!wanted.contains(FsOptions::PERFILE_DAX));
        // Locks stay in the guest: the passthrough does not implement them.
        assert!(!wanted.intersects(FsOptions::POSIX_LOCKS | FsOptions::FLOCK_LOCKS));
    }
}
