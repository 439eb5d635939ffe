//! Request-level tests: a fake guest (RAM and one split virtqueue laid out by hand) sends real FUSE requests and malformed descriptor chains through the same path the worker
//! uses (`compat` views, `serve_queue`, `handle_chain`, the server, `GuardedFs`, the
//! passthrough over a temporary directory).

use std::path::Path;

use fuse_backend_rs::abi::fuse_abi::{
    CreateIn, EntryOut, InHeader, InitIn, InitOut, MkdirIn, Opcode, OpenIn, OpenOut, OutHeader,
    ReadIn, SetattrIn, WriteIn, ROOT_ID,
};
use fuse_backend_rs::api::filesystem::{FsOptions, SetattrValid};
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::passthrough::PassthroughFs;
use fuse_vm_memory::{ByteValued, Bytes as _};
use virtio_bindings::bindings::virtio_ring::{
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::tempdir::TempDir;

use super::compat::{queue_view, FuseGuestMemory, FuseQueue, GuestMemoryView};
use super::guard::GuardedFs;
use super::request::MAX_REQUEST_BYTES;
use super::worker::{serve_queue, unshare_fs_context};
use super::{new_passthrough, resolve_root};
use crate::memory::GuestMemory;

const RAM_SIZE: u64 = 16 << 20;
const QUEUE_SIZE: u16 = 256;
/// Where the request queue of [`Guest`] lives.
const QUEUE_BASE: u64 = 0x1000;
const AVAIL_RING: u64 = QUEUE_BASE + 0x1000;
const BUFFERS: u64 = 0x10_0000;

/// A ready split virtqueue of `size` entries at `base`: descriptor table, available ring and
/// used ring each in their own page.
fn ring_at(ram: &GuestMemory, base: u64, size: u16) -> virtio_queue::Queue {
    let mut queue = virtio_queue::Queue::new(size).unwrap();
    queue.set_size(size);
    queue.set_desc_table_address(Some(base as u32), Some((base >> 32) as u32));
    queue.set_avail_ring_address(Some((base + 0x1000) as u32), Some(0));
    queue.set_used_ring_address(Some((base + 0x2000) as u32), Some(0));
    queue.set_ready(true);
    assert!(queue.is_valid(ram));
    queue
}

/// Writes `descriptors` into the table of the ring at `base` from index `first`, and makes
/// `first` the head of the next available chain.
fn publish(ram: &GuestMemory, base: u64, size: u16, descriptors: &[RawDescriptor], first: u16) {
    for (i, descriptor) in descriptors.iter().enumerate() {
        let index = u64::from(first) + i as u64;
        ram.write_obj(*descriptor, GuestAddress(base + index * 16))
            .unwrap();
    }
    let avail = base + 0x1000;
    let idx: u16 = ram.read_obj(GuestAddress(avail + 2)).unwrap();
    let slot = u64::from(idx % size);
    ram.write_obj(first, GuestAddress(avail + 4 + slot * 2))
        .unwrap();
    ram.write_obj(idx.wrapping_add(1), GuestAddress(avail + 2))
        .unwrap();
}

/// A guest buffer: (guest address, length, device-writable).
type Buffer = (u64, u32, bool);

/// Descriptors for `buffers` chained from index `first`.
fn chain(first: u16, buffers: &[Buffer]) -> Vec<RawDescriptor> {
    let last = buffers.len() - 1;
    buffers
        .iter()
        .enumerate()
        .map(|(i, &(addr, len, writable))| {
            let mut flags = if writable { VRING_DESC_F_WRITE } else { 0 };
            if i != last {
                flags |= VRING_DESC_F_NEXT;
            }
            let next = first + i as u16 + 1;
            RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, next))
        })
        .collect()
}

/// How many chains the device has returned, and the newest (head, used length).
fn used(ram: &GuestMemory, base: u64, size: u16) -> (u16, (u32, u32)) {
    let used = base + 0x2000;
    let idx: u16 = ram.read_obj(GuestAddress(used + 2)).unwrap();
    let slot = u64::from(idx.wrapping_sub(1) % size);
    let at = used + 4 + slot * 8;
    let id: u32 = ram.read_obj(GuestAddress(at)).unwrap();
    let len: u32 = ram.read_obj(GuestAddress(at + 4)).unwrap();
    (idx, (id, len))
}

/// A FUSE request: header and body parts.
fn fuse_request(opcode: u32, nodeid: u64, unique: u64, parts: &[&[u8]]) -> Vec<u8> {
    let body: Vec<u8> = parts.concat();
    let header = InHeader {
        len: (size_of::<InHeader>() + body.len()) as u32,
        opcode,
        unique,
        nodeid,
        uid: 0,
        gid: 0,
        pid: 1,
        padding: 0,
    };
    [header.as_slice(), &body].concat()
}

fn init_in() -> InitIn {
    let flags = (FsOptions::BIG_WRITES | FsOptions::MAX_PAGES | FsOptions::ASYNC_READ).bits();
    InitIn {
        major: 7,
        minor: 31,
        max_readahead: 128 * 1024,
        flags: flags as u32,
    }
}

/// A guest with one request queue, talking to a share of a temporary directory.
struct Guest {
    ram: GuestMemory,
    memory_view: GuestMemoryView,
    queue: FuseQueue,
    server: Server<GuardedFs<PassthroughFs>>,
    next_desc: u16,
    next_buffer: u64,
    next_unique: u64,
    share: TempDir,
}

/// What came back for one chain.
struct Reply {
    used_len: u32,
    addr: u64,
}

impl Guest {
    fn new(read_only: bool) -> Guest {
        Guest::with_policy(read_only, false)
    }

    /// A guest of a share declared as changed by nothing but the guest (the pod share).
    fn of_guest_only_share() -> Guest {
        Guest::with_policy(false, true)
    }

    fn with_policy(read_only: bool, guest_only: bool) -> Guest {
        // The passthrough sets the umask to 0 at FUSE_INIT; keep it to this test's thread.
        unshare_fs_context().unwrap();
        let share = TempDir::new_with_prefix("/tmp/vmm-fs-request-").unwrap();
        std::fs::write(share.as_path().join("hello.txt"), b"hello, guest").unwrap();
        std::fs::create_dir(share.as_path().join("sub")).unwrap();
        let root = resolve_root(share.as_path()).unwrap();
        let server = Server::new(GuardedFs::new(
            new_passthrough(&root, guest_only).unwrap(),
            read_only,
        ));
        let ram = GuestMemory::from_ranges(&[(GuestAddress(0), RAM_SIZE as usize)]).unwrap();
        let queue = queue_view(&ring_at(&ram, QUEUE_BASE, QUEUE_SIZE)).unwrap();
        let memory_view = GuestMemoryView::new(&ram).unwrap();
        Guest {
            ram,
            memory_view,
            queue,
            server,
            next_desc: 0,
            next_buffer: BUFFERS,
            next_unique: 1,
            share,
        }
    }

    fn publish(&mut self, descriptors: &[RawDescriptor], first: u16) {
        publish(&self.ram, QUEUE_BASE, QUEUE_SIZE, descriptors, first);
        self.next_desc = first + descriptors.len() as u16;
    }

    fn fuse_memory(&self) -> &FuseGuestMemory {
        self.memory_view.get()
    }

    /// Guest memory for a buffer of `len` bytes.
    fn alloc(&mut self, len: u64) -> u64 {
        let addr = self.next_buffer;
        self.next_buffer = (addr + len).next_multiple_of(0x1000);
        addr
    }

    /// Makes a chain of (address, length, device-writable) buffers available.
    fn offer(&mut self, buffers: &[Buffer]) {
        let first = self.next_desc;
        self.publish(&chain(first, buffers), first);
    }

    /// Serves the queue and returns the newest used element (head, length).
    fn serve(&mut self) -> (u32, u32) {
        let pass = serve_queue(&mut self.queue, self.memory_view.get(), &self.server);
        assert!(pass.used_any, "the chain was not returned to the driver");
        self.last_used()
    }

    fn last_used(&self) -> (u32, u32) {
        used(&self.ram, QUEUE_BASE, QUEUE_SIZE).1
    }

    /// Sends `request` in one readable buffer with a writable buffer of `reply_room` bytes.
    fn send_raw(&mut self, request: &[u8], reply_room: u32) -> Reply {
        let request_addr = self.alloc(request.len() as u64);
        self.ram
            .write_slice(request, GuestAddress(request_addr))
            .unwrap();
        let reply_addr = self.alloc(u64::from(reply_room));
        self.offer(&[
            (request_addr, request.len() as u32, false),
            (reply_addr, reply_room, true),
        ]);
        let (_, used_len) = self.serve();
        Reply {
            used_len,
            addr: reply_addr,
        }
    }

    /// A FUSE request with a fresh `unique`.
    fn request(&mut self, opcode: u32, nodeid: u64, parts: &[&[u8]]) -> (Vec<u8>, u64) {
        let unique = self.next_unique;
        self.next_unique += 1;
        (fuse_request(opcode, nodeid, unique, parts), unique)
    }

    /// Sends a well-formed request and returns the reply, checking its header.
    fn call(&mut self, opcode: Opcode, nodeid: u64, parts: &[&[u8]], reply_room: u32) -> Reply {
        let (bytes, unique) = self.request(opcode as u32, nodeid, parts);
        let reply = self.send_raw(&bytes, reply_room);
        let header = self.out_header(&reply);
        assert_eq!(header.unique, unique);
        assert_eq!(header.len, reply.used_len, "{opcode:?}");
        reply
    }

    fn out_header(&self, reply: &Reply) -> OutHeader {
        assert!(reply.used_len >= size_of::<OutHeader>() as u32, "no reply");
        self.fuse_memory()
            .read_obj(fuse_vm_memory::GuestAddress(reply.addr))
            .unwrap()
    }

    /// The reply's errno (0 for success).
    fn errno(&self, reply: &Reply) -> i32 {
        -self.out_header(reply).error
    }

    fn body<T: ByteValued>(&self, reply: &Reply) -> T {
        assert_eq!(self.errno(reply), 0, "the request failed");
        self.fuse_memory()
            .read_obj(fuse_vm_memory::GuestAddress(
                reply.addr + size_of::<OutHeader>() as u64,
            ))
            .unwrap()
    }

    fn body_bytes(&self, reply: &Reply) -> Vec<u8> {
        let len = reply.used_len as usize - size_of::<OutHeader>();
        let mut bytes = vec![0u8; len];
        self.ram
            .read_slice(
                &mut bytes,
                GuestAddress(reply.addr + size_of::<OutHeader>() as u64),
            )
            .unwrap();
        bytes
    }

    fn init(&mut self) -> InitOut {
        let init = init_in();
        let reply = self.call(Opcode::Init, 0, &[init.as_slice()], 256);
        self.body(&reply)
    }

    fn lookup(&mut self, parent: u64, name: &str) -> Reply {
        let name = [name.as_bytes(), b"\0"].concat();
        self.call(Opcode::Lookup, parent, &[&name], 256)
    }

    fn lookup_ok(&mut self, parent: u64, name: &str) -> EntryOut {
        let reply = self.lookup(parent, name);
        self.body(&reply)
    }

    fn open(&mut self, nodeid: u64, flags: i32) -> Reply {
        let open = OpenIn {
            flags: flags as u32,
            fuse_flags: 0,
        };
        self.call(Opcode::Open, nodeid, &[open.as_slice()], 64)
    }

    fn read(&mut self, nodeid: u64, fh: u64, offset: u64, size: u32) -> Reply {
        let read = ReadIn {
            fh,
            offset,
            size,
            ..Default::default()
        };
        self.call(Opcode::Read, nodeid, &[read.as_slice()], 16 + size)
    }

    fn host(&self, name: &str) -> std::path::PathBuf {
        self.share.as_path().join(name)
    }
}

fn with_nul(name: &str) -> Vec<u8> {
    [name.as_bytes(), b"\0"].concat()
}

#[test]
fn init_lookup_open_read_round_trip() {
    for read_only in [false, true] {
        let mut guest = Guest::new(read_only);
        let init = guest.init();
        assert_eq!((init.major, init.minor), (7, 33));
        assert_eq!(init.max_write, 1 << 20, "1 MiB writes were negotiated");
        assert_eq!(init.max_pages, 256);
        let entry = guest.lookup_ok(ROOT_ID, "hello.txt");
        assert_ne!(entry.nodeid, 0);
        assert_eq!(entry.attr.size, 12);
        assert_eq!(entry.attr.mode & libc::S_IFMT, libc::S_IFREG);
        let reply = guest.open(entry.nodeid, libc::O_RDONLY);
        let open: OpenOut = guest.body(&reply);
        let reply = guest.read(entry.nodeid, open.fh, 0, 4096);
        assert_eq!(reply.used_len, 16 + 12);
        assert_eq!(guest.body_bytes(&reply), b"hello, guest");
        let reply = guest.read(entry.nodeid, open.fh, 7, 5);
        assert_eq!(guest.body_bytes(&reply), b"guest");
    }
}

#[test]
fn only_a_guest_only_share_lets_the_guest_keep_its_cache_across_opens() {
    // FOPEN_KEEP_CACHE and FOPEN_CACHE_DIR (fuse.h): without them the guest kernel drops a
    // file's cached pages at every open (close-to-open consistency), which a host volume needs
    // and the pod share does not.
    const FOPEN_KEEP_CACHE: u32 = 1 << 1;
    const FOPEN_CACHE_DIR: u32 = 1 << 3;
    for (mut guest, keeps) in [
        (Guest::new(false), false),
        (Guest::of_guest_only_share(), true),
    ] {
        guest.init();
        let file = guest.lookup_ok(ROOT_ID, "hello.txt");
        let open: OpenOut = {
            let reply = guest.open(file.nodeid, libc::O_RDONLY);
            guest.body(&reply)
        };
        assert_eq!(open.open_flags & FOPEN_KEEP_CACHE != 0, keeps);
        let dir = guest.lookup_ok(ROOT_ID, "sub");
        let opendir: OpenOut = {
            let reply = guest.call(
                Opcode::Opendir,
                dir.nodeid,
                &[OpenIn::default().as_slice()],
                64,
            );
            guest.body(&reply)
        };
        assert_eq!(opendir.open_flags & FOPEN_CACHE_DIR != 0, keeps);
        // Never direct I/O, which would refuse shared mmap.
        assert_eq!(open.open_flags & 1, 0);
    }
}

#[test]
fn create_write_and_read_back_through_fuse() {
    let mut guest = Guest::new(false);
    guest.init();
    let create = CreateIn {
        flags: libc::O_RDWR as u32,
        mode: 0o640,
        umask: 0o022,
        fuse_flags: 0,
    };
    let name = with_nul("new.txt");
    let reply = guest.call(Opcode::Create, ROOT_ID, &[create.as_slice(), &name], 256);
    let entry: EntryOut = guest.body(&reply);
    let open: OpenOut = guest
        .fuse_memory()
        .read_obj(fuse_vm_memory::GuestAddress(
            reply.addr + 16 + size_of::<EntryOut>() as u64,
        ))
        .unwrap();
    let data = b"written by the guest";
    let write = WriteIn {
        fh: open.fh,
        offset: 0,
        size: data.len() as u32,
        ..Default::default()
    };
    let reply = guest.call(Opcode::Write, entry.nodeid, &[write.as_slice(), data], 64);
    assert_eq!(guest.errno(&reply), 0);
    assert_eq!(std::fs::read(guest.host("new.txt")).unwrap(), data);
    let mode = std::fs::metadata(guest.host("new.txt")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o640,
        "the guest's mode, not the VMM's umask"
    );
    let reply = guest.read(entry.nodeid, open.fh, 8, 3);
    assert_eq!(guest.body_bytes(&reply), b"by ");
}

#[test]
fn escape_attempts_fail() {
    let mut guest = Guest::new(false);
    guest.init();
    std::os::unix::fs::symlink("/", guest.host("to_root")).unwrap();
    std::os::unix::fs::symlink("..", guest.host("to_parent")).unwrap();
    for name in ["..", ".", "../etc", "sub/../..", "/etc/passwd", ""] {
        let reply = guest.lookup(ROOT_ID, name);
        assert_eq!(guest.errno(&reply), libc::EINVAL, "LOOKUP {name:?}");
    }
    let sub = guest.lookup_ok(ROOT_ID, "sub").nodeid;
    let reply = guest.lookup(sub, "..");
    assert_eq!(
        guest.errno(&reply),
        libc::EINVAL,
        "LOOKUP .. from a subdirectory"
    );
    // Symlinks are entries of their own: the host never follows them.
    for link in ["to_root", "to_parent"] {
        let entry = guest.lookup_ok(ROOT_ID, link);
        assert_eq!(entry.attr.mode & libc::S_IFMT, libc::S_IFLNK);
        let reply = guest.lookup(entry.nodeid, "etc");
        assert_eq!(guest.errno(&reply), libc::ENOTDIR, "LOOKUP through {link}");
        let reply = guest.open(entry.nodeid, libc::O_RDONLY);
        assert_ne!(guest.errno(&reply), 0, "OPEN of the symlink {link}");
        let reply = guest.call(
            Opcode::Opendir,
            entry.nodeid,
            &[OpenIn::default().as_slice()],
            64,
        );
        assert_ne!(guest.errno(&reply), 0, "OPENDIR of the symlink {link}");
    }
    // Node IDs the guest was never given do not exist.
    let reply = guest.call(Opcode::Getattr, 0xdead_beef, &[&[0u8; 16]], 256);
    assert_eq!(guest.errno(&reply), libc::EBADF);
    let link_in = 0xdead_beef_u64.to_le_bytes();
    let name = with_nul("stolen");
    let reply = guest.call(Opcode::Link, ROOT_ID, &[&link_in, &name], 256);
    assert_eq!(guest.errno(&reply), libc::EBADF);
    assert!(!guest.host("stolen").exists());
    // A symlink the guest creates is stored as is and only ever means something in the guest.
    let reply = guest.call(
        Opcode::Symlink,
        ROOT_ID,
        &[&with_nul("mine"), &with_nul("/proc/self/fd/0")],
        256,
    );
    let entry: EntryOut = guest.body(&reply);
    let reply = guest.lookup(entry.nodeid, "x");
    assert_eq!(guest.errno(&reply), libc::ENOTDIR);
}

#[test]
fn a_read_only_share_answers_erofs_over_fuse() {
    let mut guest = Guest::new(true);
    guest.init();
    let file = guest.lookup_ok(ROOT_ID, "hello.txt").nodeid;
    let create = CreateIn {
        flags: libc::O_WRONLY as u32,
        mode: 0o644,
        ..Default::default()
    };
    let mkdir = MkdirIn {
        mode: 0o755,
        umask: 0,
    };
    let truncate = SetattrIn {
        valid: SetattrValid::SIZE.bits(),
        ..Default::default()
    };
    let open: OpenOut = {
        let reply = guest.open(file, libc::O_RDONLY);
        guest.body(&reply)
    };
    let write = WriteIn {
        fh: open.fh,
        size: 3,
        ..Default::default()
    };
    let requests: Vec<(Opcode, u64, Vec<u8>)> = vec![
        (
            Opcode::Create,
            ROOT_ID,
            [create.as_slice(), &with_nul("x")].concat(),
        ),
        (
            Opcode::Mkdir,
            ROOT_ID,
            [mkdir.as_slice(), &with_nul("d")].concat(),
        ),
        (Opcode::Unlink, ROOT_ID, with_nul("hello.txt")),
        (Opcode::Rmdir, ROOT_ID, with_nul("sub")),
        (Opcode::Setattr, file, truncate.as_slice().to_vec()),
        (Opcode::Write, file, [write.as_slice(), b"abc"].concat()),
        (
            Opcode::Open,
            file,
            OpenIn {
                flags: libc::O_RDWR as u32,
                fuse_flags: 0,
            }
            .as_slice()
            .to_vec(),
        ),
    ];
    for (opcode, nodeid, body) in requests {
        let reply = guest.call(opcode, nodeid, &[&body], 256);
        assert_eq!(guest.errno(&reply), libc::EROFS, "{opcode:?}");
    }
    assert_eq!(
        std::fs::read(guest.host("hello.txt")).unwrap(),
        b"hello, guest"
    );
    assert!(guest.host("sub").is_dir());
    assert!(!guest.host("x").exists() && !guest.host("d").exists());
}

#[test]
fn unknown_and_unserved_opcodes_get_enosys() {
    let mut guest = Guest::new(false);
    guest.init();
    for opcode in [
        0,
        7,
        19,
        Opcode::Getlk as u32,
        Opcode::Setlkw as u32,
        Opcode::Ioctl as u32,
        Opcode::CopyFileRange as u32,
        Opcode::SetupMapping as u32,
        50,
        4096,
        u32::MAX,
    ] {
        let (bytes, unique) = guest.request(opcode, ROOT_ID, &[&[0u8; 64]]);
        let reply = guest.send_raw(&bytes, 64);
        assert_eq!(guest.errno(&reply), libc::ENOSYS, "opcode {opcode}");
        assert_eq!(guest.out_header(&reply).unique, unique);
    }
}

#[test]
fn malformed_headers_fail_the_request() {
    let mut guest = Guest::new(false);
    guest.init();
    // Fewer bytes than a header: nothing to answer to.
    let (bytes, _) = guest.request(Opcode::Getattr as u32, ROOT_ID, &[]);
    let reply = guest.send_raw(&bytes[..20], 64);
    assert_eq!(reply.used_len, 0);
    // A header claiming more than the chain holds, or less than itself.
    for claimed in [1000u32, 8, 0, u32::MAX] {
        let (mut bytes, _) = guest.request(Opcode::Lookup as u32, ROOT_ID, &[b"sub\0"]);
        bytes[..4].copy_from_slice(&claimed.to_le_bytes());
        let reply = guest.send_raw(&bytes, 64);
        assert_eq!(guest.errno(&reply), libc::EINVAL, "len {claimed}");
    }
    // A body cut short: LOOKUP without a name, READ without its arguments.
    for opcode in [Opcode::Lookup, Opcode::Read, Opcode::Init, Opcode::Rename2] {
        let (bytes, _) = guest.request(opcode as u32, ROOT_ID, &[]);
        let reply = guest.send_raw(&bytes, 64);
        assert!(guest.errno(&reply) > 0, "{opcode:?}");
    }
    // A name without its terminating NUL.
    let reply = guest.call(Opcode::Lookup, ROOT_ID, &[b"sub"], 64);
    assert!(guest.errno(&reply) > 0);
    // No room for the reply: the chain comes back empty.
    let (bytes, _) = guest.request(Opcode::Lookup as u32, ROOT_ID, &[b"sub\0"]);
    let reply = guest.send_raw(&bytes, 8);
    assert_eq!(reply.used_len, 0);
    // READ asking for more than the reply buffer holds.
    let file = guest.lookup_ok(ROOT_ID, "hello.txt").nodeid;
    let reply = guest.open(file, libc::O_RDONLY);
    let open: OpenOut = guest.body(&reply);
    let read = ReadIn {
        fh: open.fh,
        size: u32::MAX,
        ..Default::default()
    };
    let reply = guest.call(Opcode::Read, file, &[read.as_slice()], 64);
    assert!(guest.errno(&reply) > 0);
    // The device still serves well-formed requests.
    assert_eq!(
        guest.lookup_ok(ROOT_ID, "sub").attr.mode & libc::S_IFMT,
        libc::S_IFDIR
    );
}

#[test]
fn malformed_chains_never_reach_outside_guest_ram() {
    let mut guest = Guest::new(false);
    guest.init();
    let (request, _) = guest.request(Opcode::Lookup as u32, ROOT_ID, &[b"sub\0"]);
    let request_addr = guest.alloc(request.len() as u64);
    guest
        .ram
        .write_slice(&request, GuestAddress(request_addr))
        .unwrap();
    let len = request.len() as u32;
    let reply_addr = guest.alloc(256);
    let chains: Vec<(&str, Vec<Buffer>)> = vec![
        (
            "zero lengths",
            vec![(request_addr, 0, false), (reply_addr, 0, true)],
        ),
        (
            "request outside RAM",
            vec![(RAM_SIZE + 0x1000, len, false), (reply_addr, 256, true)],
        ),
        (
            "request past the end of RAM",
            vec![(RAM_SIZE - 8, len, false), (reply_addr, 256, true)],
        ),
        (
            "request at the top of the address space",
            vec![(u64::MAX - 8, len, false), (reply_addr, 256, true)],
        ),
        (
            "reply outside RAM",
            vec![(request_addr, len, false), (RAM_SIZE + 0x1000, 256, true)],
        ),
        (
            "reply past the end of RAM",
            vec![(request_addr, len, false), (RAM_SIZE - 8, 256, true)],
        ),
        (
            "huge request length",
            vec![(request_addr, u32::MAX, false), (reply_addr, 256, true)],
        ),
        (
            "huge reply length",
            vec![(request_addr, len, false), (reply_addr, u32::MAX, true)],
        ),
        (
            "lengths overflowing together",
            vec![
                (request_addr, len, false),
                (0, u32::MAX, true),
                (0, u32::MAX, true),
            ],
        ),
        ("no writable buffer", vec![(request_addr, len, false)]),
        ("no readable buffer", vec![(reply_addr, 256, true)]),
    ];
    for (what, chain) in chains {
        let before = guest.next_desc;
        guest.offer(&chain);
        let (head, used_len) = guest.serve();
        assert_eq!(u32::from(before), head, "{what}: the chain came back");
        assert_eq!(used_len, 0, "{what}: nothing was written");
    }
    // A request larger than any the guest may send.
    let big = guest.alloc(MAX_REQUEST_BYTES as u64 + 1);
    guest.ram.write_slice(&request, GuestAddress(big)).unwrap();
    guest.offer(&[
        (big, MAX_REQUEST_BYTES as u32 + 1, false),
        (reply_addr, 256, true),
    ]);
    guest.serve();
    let reply = Reply {
        used_len: 16,
        addr: reply_addr,
    };
    assert_eq!(guest.errno(&reply), libc::EINVAL);
    // Request and reply in the same bytes: the header is read before the reply is written.
    let shared = guest.alloc(256);
    guest
        .ram
        .write_slice(&request, GuestAddress(shared))
        .unwrap();
    guest.offer(&[(shared, len, false), (shared, 256, true)]);
    let (_, used_len) = guest.serve();
    let reply = Reply {
        used_len,
        addr: shared,
    };
    assert_eq!(guest.errno(&reply), 0, "overlapping buffers");
    // The request split over many small (and empty) buffers.
    let split: Vec<Buffer> = (0..u64::from(len))
        .flat_map(|i| [(request_addr + i, 1, false), (request_addr, 0, false)])
        .chain([(reply_addr, 256, true)])
        .collect();
    guest.offer(&split);
    let (_, used_len) = guest.serve();
    let reply = Reply {
        used_len,
        addr: reply_addr,
    };
    let entry: EntryOut = guest.body(&reply);
    assert_eq!(entry.attr.mode & libc::S_IFMT, libc::S_IFDIR);
}

#[test]
fn indirect_descriptor_tables_are_followed() {
    let mut guest = Guest::new(false);
    guest.init();
    let (request, unique) = guest.request(Opcode::Lookup as u32, ROOT_ID, &[b"hello.txt\0"]);
    let request_addr = guest.alloc(request.len() as u64);
    guest
        .ram
        .write_slice(&request, GuestAddress(request_addr))
        .unwrap();
    let reply_addr = guest.alloc(256);
    // The request split in two readable buffers, then the reply, all in an indirect table.
    let table = chain(
        0,
        &[
            (request_addr, 16, false),
            (request_addr + 16, request.len() as u32 - 16, false),
            (reply_addr, 256, true),
        ],
    );
    let table_addr = guest.alloc(16 * table.len() as u64);
    for (i, descriptor) in table.iter().enumerate() {
        guest
            .ram
            .write_obj(*descriptor, GuestAddress(table_addr + 16 * i as u64))
            .unwrap();
    }
    let head = guest.next_desc;
    let indirect = RawDescriptor::from(SplitDescriptor::new(
        table_addr,
        16 * table.len() as u32,
        VRING_DESC_F_INDIRECT as u16,
        0,
    ));
    guest.publish(&[indirect], head);
    let (used_head, used_len) = guest.serve();
    assert_eq!(used_head, u32::from(head));
    let reply = Reply {
        used_len,
        addr: reply_addr,
    };
    assert_eq!(guest.out_header(&reply).unique, unique);
    let entry: EntryOut = guest.body(&reply);
    assert_eq!(entry.attr.size, 12);
    // An indirect table whose length is not a whole number of descriptors is refused.
    let head = guest.next_desc;
    let bad = RawDescriptor::from(SplitDescriptor::new(
        table_addr,
        16 * table.len() as u32 - 1,
        VRING_DESC_F_INDIRECT as u16,
        0,
    ));
    guest.publish(&[bad], head);
    assert_eq!(guest.serve(), (u32::from(head), 0));
}

#[test]
fn a_looping_chain_ends() {
    let mut guest = Guest::new(false);
    guest.init();
    let (request, _) = guest.request(Opcode::Statfs as u32, ROOT_ID, &[]);
    let addr = guest.alloc(64);
    guest.ram.write_slice(&request, GuestAddress(addr)).unwrap();
    // One descriptor whose `next` is itself.
    let head = guest.next_desc;
    let looping = RawDescriptor::from(SplitDescriptor::new(
        addr,
        request.len() as u32,
        VRING_DESC_F_NEXT as u16,
        head,
    ));
    guest.publish(&[looping], head);
    let (used_head, _) = guest.serve();
    assert_eq!(used_head, u32::from(head));
    assert_eq!(
        guest.lookup_ok(ROOT_ID, "sub").attr.mode & libc::S_IFMT,
        libc::S_IFDIR
    );
}

#[test]
fn a_corrupt_avail_ring_stops_the_pass_without_harm() {
    let mut guest = Guest::new(false);
    guest.init();
    let avail = AVAIL_RING;
    // An available index far ahead of what the ring can hold.
    guest
        .ram
        .write_obj(1000u16, GuestAddress(avail + 2))
        .unwrap();
    let pass = serve_queue(&mut guest.queue, guest.memory_view.get(), &guest.server);
    assert!(!pass.used_any);
    // A head index outside the descriptor table.
    let mut guest = Guest::new(false);
    guest.init();
    let avail = AVAIL_RING;
    let idx: u16 = guest.ram.read_obj(GuestAddress(avail + 2)).unwrap();
    guest
        .ram
        .write_obj(QUEUE_SIZE + 7, GuestAddress(avail + 4 + u64::from(idx) * 2))
        .unwrap();
    guest
        .ram
        .write_obj(idx + 1, GuestAddress(avail + 2))
        .unwrap();
    let pass = serve_queue(&mut guest.queue, guest.memory_view.get(), &guest.server);
    assert!(!pass.used_any);
}

#[test]
fn forget_and_interrupt_get_no_reply() {
    let mut guest = Guest::new(false);
    guest.init();
    let sub = guest.lookup_ok(ROOT_ID, "sub").nodeid;
    let (bytes, _) = guest.request(Opcode::Forget as u32, sub, &[&1u64.to_le_bytes()]);
    assert_eq!(guest.send_raw(&bytes, 64).used_len, 0);
    // BATCH_FORGET claiming more entries than it carries.
    let (bytes, _) = guest.request(
        Opcode::BatchForget as u32,
        0,
        &[&u32::MAX.to_le_bytes(), &[0; 4]],
    );
    assert_eq!(guest.send_raw(&bytes, 64).used_len, 0);
    let (bytes, _) = guest.request(Opcode::Interrupt as u32, 0, &[&7u64.to_le_bytes()]);
    assert_eq!(guest.send_raw(&bytes, 64).used_len, 0);
    // The root cannot be forgotten away.
    let (bytes, _) = guest.request(Opcode::Forget as u32, ROOT_ID, &[&u64::MAX.to_le_bytes()]);
    guest.send_raw(&bytes, 64);
    assert_eq!(guest.lookup_ok(ROOT_ID, "hello.txt").attr.size, 12);
}

#[test]
fn the_root_is_resolved_once_and_without_symlinks() {
    let dir = TempDir::new_with_prefix("/tmp/vmm-fs-root-").unwrap();
    std::fs::create_dir(dir.as_path().join("real")).unwrap();
    std::os::unix::fs::symlink("real", dir.as_path().join("alias")).unwrap();
    let root = resolve_root(&dir.as_path().join("alias")).unwrap();
    assert_eq!(
        Path::new(&root),
        std::fs::canonicalize(dir.as_path().join("real")).unwrap()
    );
}

mod device {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use vmm_sys_util::eventfd::EventFd;

    use super::*;
    use crate::devices::virtio::device::{
        ActivateError, ActiveQueue, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1,
    };
    use crate::devices::virtio::fs::{Fs, FsConfig, FsError, VIRTIO_ID_FS};

    const HIPRIO_BASE: u64 = 0x1000;
    const REQUEST_BASE: u64 = 0x4000;

    fn config(tag: &str, host_dir: &Path) -> FsConfig {
        FsConfig {
            tag: tag.to_owned(),
            host_dir: host_dir.to_path_buf(),
            read_only: false,
            max_inodes: crate::devices::virtio::fs::DEFAULT_MAX_INODES,
            guest_only: false,
        }
    }

    #[test]
    fn new_checks_the_tag_and_the_directory() {
        let share = TempDir::new_with_prefix("/tmp/vmm-fs-device-").unwrap();
        let dir = share.as_path();
        assert!(matches!(
            Fs::new(&config("", dir)),
            Err(FsError::EmptyTag { .. })
        ));
        let long = "t".repeat(37);
        assert!(matches!(
            Fs::new(&config(&long, dir)),
            Err(FsError::TagTooLong { len: 37, .. })
        ));
        assert!(matches!(
            Fs::new(&config("po\0d", dir)),
            Err(FsError::TagHasNul { .. })
        ));
        let missing = dir.join("missing");
        let err = Fs::new(&config("pod", &missing)).err().unwrap();
        assert!(matches!(err, FsError::HostDir { .. }));
        assert!(err.to_string().contains("missing"), "{err}");
        std::fs::write(dir.join("file"), b"").unwrap();
        assert!(matches!(
            Fs::new(&config("pod", &dir.join("file"))),
            Err(FsError::NotADirectory { .. })
        ));
        assert!(Fs::new(&config(&"t".repeat(36), dir)).is_ok());
        let mut no_inodes = config("pod", dir);
        no_inodes.max_inodes = 0;
        assert!(matches!(Fs::new(&no_inodes), Err(FsError::NoInodes { .. })));
    }

    #[test]
    fn the_config_space_carries_the_tag_and_one_request_queue() {
        let share = TempDir::new_with_prefix("/tmp/vmm-fs-device-").unwrap();
        let fs = Fs::new(&config("pod-data", share.as_path())).unwrap();
        assert_eq!(fs.device_type(), VIRTIO_ID_FS);
        assert_ne!(fs.features() & VIRTIO_F_VERSION_1, 0);
        assert_ne!(fs.features() & (1 << 28), 0, "indirect descriptors");
        assert_eq!(fs.features() & (1 << 29), 0, "no event index");
        assert_eq!(fs.queue_max_sizes().len(), 2);
        let mut space = [0xffu8; 48];
        fs.read_config(0, &mut space);
        assert_eq!(&space[..8], b"pod-data");
        assert_eq!(space[8..36], [0; 28]);
        assert_eq!(space[36..40], 1u32.to_le_bytes());
        assert_eq!(space[40..], [0; 8], "zero past the end");
        let mut far = [0xffu8; 4];
        fs.read_config(u64::MAX, &mut far);
        assert_eq!(far, [0; 4]);
    }

    fn wait_for_used(ram: &GuestMemory, base: u64, count: u16) -> (u32, u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (idx, last) = used(ram, base, QUEUE_SIZE);
            if idx == count {
                return last;
            }
            assert!(Instant::now() < deadline, "the worker did not answer");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_worker_serves_notified_queues_until_reset() {
        let share = TempDir::new_with_prefix("/tmp/vmm-fs-device-").unwrap();
        let mut fs = Fs::new(&config("pod", share.as_path())).unwrap();
        let ram = GuestMemory::from_ranges(&[(GuestAddress(0), RAM_SIZE as usize)]).unwrap();
        let hiprio = ActiveQueue {
            queue: ring_at(&ram, HIPRIO_BASE, 128),
            notify: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        };
        let request = ActiveQueue {
            queue: ring_at(&ram, REQUEST_BASE, QUEUE_SIZE),
            notify: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        };
        let kick = request.notify.try_clone().unwrap();
        let irqfd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let irq = irqfd.try_clone().unwrap();
        let interrupt = Arc::new(Interrupt::new(irqfd));

        // Both queues are required.
        let lone = ActiveQueue {
            queue: ring_at(&ram, REQUEST_BASE, QUEUE_SIZE),
            notify: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        };
        assert!(matches!(
            fs.activate(
                ram.clone(),
                VIRTIO_F_VERSION_1,
                vec![lone],
                interrupt.clone()
            ),
            Err(ActivateError::QueueMissing(1))
        ));

        fs.activate(
            ram.clone(),
            VIRTIO_F_VERSION_1,
            vec![hiprio, request],
            interrupt,
        )
        .unwrap();
        let request = fuse_request(Opcode::Init as u32, 0, 42, &[init_in().as_slice()]);
        ram.write_slice(&request, GuestAddress(BUFFERS)).unwrap();
        let reply = BUFFERS + 0x1000;
        let first = chain(
            0,
            &[(BUFFERS, request.len() as u32, false), (reply, 256, true)],
        );
        publish(&ram, REQUEST_BASE, QUEUE_SIZE, &first, 0);
        kick.write(1).unwrap();
        let (head, len) = wait_for_used(&ram, REQUEST_BASE, 1);
        assert_eq!(head, 0);
        assert_eq!(len as usize, size_of::<OutHeader>() + size_of::<InitOut>());
        let out: OutHeader = GuestMemoryView::new(&ram)
            .unwrap()
            .get()
            .read_obj(fuse_vm_memory::GuestAddress(reply))
            .unwrap();
        assert_eq!((out.unique, out.error), (42, 0));
        assert!(irq.read().unwrap() >= 1, "the used queue was signalled");

        // After a reset the worker is gone: nothing is served any more.
        fs.reset();
        let second = chain(
            2,
            &[(BUFFERS, request.len() as u32, false), (reply, 256, true)],
        );
        publish(&ram, REQUEST_BASE, QUEUE_SIZE, &second, 2);
        kick.write(1).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(used(&ram, REQUEST_BASE, QUEUE_SIZE).0, 1);
    }
}

/// Set-user-ID and set-group-ID: the guest can neither create them nor keep them on a file it
/// modifies (the server runs as root, with CAP_FSETID, so the host kernel would not clear them).
mod set_id {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use fuse_backend_rs::abi::fuse_abi::{FallocateIn, MknodIn};

    use super::*;

    const SET_ID: u32 = libc::S_ISUID | libc::S_ISGID;

    fn host_mode(guest: &Guest, name: &str) -> u32 {
        std::fs::symlink_metadata(guest.host(name)).unwrap().mode() & 0o7777
    }

    /// A host file `name` with set-user-ID and set-group-ID (as a host binary could be), looked
    /// up by the guest.
    fn set_id_file(guest: &mut Guest, name: &str) -> u64 {
        std::fs::write(guest.host(name), b"#!/bin/sh\necho privileged\n").unwrap();
        std::fs::set_permissions(guest.host(name), std::fs::Permissions::from_mode(0o6755))
            .unwrap();
        assert_eq!(host_mode(guest, name), 0o6755);
        guest.lookup_ok(ROOT_ID, name).nodeid
    }

    fn setattr(guest: &mut Guest, nodeid: u64, setattr: SetattrIn) -> i32 {
        let reply = guest.call(Opcode::Setattr, nodeid, &[setattr.as_slice()], 256);
        guest.errno(&reply)
    }

    fn open_fh(guest: &mut Guest, nodeid: u64, flags: i32) -> u64 {
        let reply = guest.open(nodeid, flags);
        let open: OpenOut = guest.body(&reply);
        open.fh
    }

    #[test]
    fn create_mkdir_and_mknod_never_make_set_user_id_and_only_directories_set_group_id() {
        let mut guest = Guest::new(false);
        guest.init();
        let create = CreateIn {
            flags: libc::O_RDWR as u32,
            mode: libc::S_IFREG | 0o6755,
            umask: 0,
            fuse_flags: 0,
        };
        let reply = guest.call(
            Opcode::Create,
            ROOT_ID,
            &[create.as_slice(), &with_nul("created")],
            256,
        );
        assert_eq!(guest.errno(&reply), 0);
        assert_eq!(host_mode(&guest, "created"), 0o755);

        let mkdir = MkdirIn {
            mode: 0o6775,
            umask: 0,
        };
        let reply = guest.call(
            Opcode::Mkdir,
            ROOT_ID,
            &[mkdir.as_slice(), &with_nul("dir")],
            256,
        );
        assert_eq!(guest.errno(&reply), 0);
        // Linux's mkdir takes set-group-ID only from the parent; set-user-ID never appears.
        assert_eq!(host_mode(&guest, "dir") & SET_ID, 0);
        assert_eq!(host_mode(&guest, "dir"), 0o775);
        std::fs::set_permissions(guest.host("dir"), std::fs::Permissions::from_mode(0o2775))
            .unwrap();
        let dir = guest.lookup_ok(ROOT_ID, "dir").nodeid;
        let reply = guest.call(
            Opcode::Mkdir,
            dir,
            &[mkdir.as_slice(), &with_nul("inherits")],
            256,
        );
        assert_eq!(guest.errno(&reply), 0);
        assert_eq!(
            host_mode(&guest, "dir/inherits"),
            0o2775,
            "inherited, as on the host"
        );

        for (name, kind) in [("regular", libc::S_IFREG), ("fifo", libc::S_IFIFO)] {
            let mknod = MknodIn {
                mode: kind | 0o6755,
                rdev: 0,
                umask: 0,
                padding: 0,
            };
            let reply = guest.call(
                Opcode::Mknod,
                ROOT_ID,
                &[mknod.as_slice(), &with_nul(name)],
                256,
            );
            assert_eq!(guest.errno(&reply), 0, "mknod {name}");
            assert_eq!(host_mode(&guest, name), 0o755, "mknod {name}");
        }
        // Device nodes stay refused, set-ID or not.
        let mknod = MknodIn {
            mode: libc::S_IFCHR | 0o4666,
            rdev: libc::makedev(1, 1) as u32,
            umask: 0,
            padding: 0,
        };
        let reply = guest.call(
            Opcode::Mknod,
            ROOT_ID,
            &[mknod.as_slice(), &with_nul("mem")],
            256,
        );
        assert_eq!(guest.errno(&reply), libc::EPERM);
        assert!(!guest.host("mem").exists());
    }

    #[test]
    fn chmod_strips_set_user_id_always_and_set_group_id_except_on_directories() {
        let mut guest = Guest::new(false);
        guest.init();
        let file = guest.lookup_ok(ROOT_ID, "hello.txt").nodeid;
        let dir = guest.lookup_ok(ROOT_ID, "sub").nodeid;
        let chmod = |mode| SetattrIn {
            valid: SetattrValid::MODE.bits(),
            mode,
            ..Default::default()
        };
        for mode in [0o4755, 0o2755, 0o6755] {
            assert_eq!(setattr(&mut guest, file, chmod(libc::S_IFREG | mode)), 0);
            assert_eq!(host_mode(&guest, "hello.txt"), 0o755, "chmod {mode:o}");
        }
        // The file type is the host's: a guest claiming a regular file is a directory gains
        // nothing.
        assert_eq!(setattr(&mut guest, file, chmod(libc::S_IFDIR | 0o2755)), 0);
        assert_eq!(host_mode(&guest, "hello.txt"), 0o755);
        assert_eq!(setattr(&mut guest, dir, chmod(libc::S_IFDIR | 0o6755)), 0);
        assert_eq!(host_mode(&guest, "sub"), 0o2755);
        // Other bits (sticky, permissions) are the guest's to set.
        assert_eq!(setattr(&mut guest, file, chmod(libc::S_IFREG | 0o1640)), 0);
        assert_eq!(host_mode(&guest, "hello.txt"), 0o1640);
    }

    #[test]
    fn writing_to_a_set_id_file_clears_its_bits() {
        let mut guest = Guest::new(false);
        guest.init();
        let file = set_id_file(&mut guest, "suid");
        // Reading does not change it.
        let fh = open_fh(&mut guest, file, libc::O_RDONLY);
        let reply = guest.read(file, fh, 0, 64);
        assert!(reply.used_len > 16);
        assert_eq!(host_mode(&guest, "suid"), 0o6755);
        let fh = open_fh(&mut guest, file, libc::O_WRONLY);
        assert_eq!(
            host_mode(&guest, "suid"),
            0o6755,
            "opening to write is not writing"
        );
        let data = b"\x7fELF evil";
        let write = WriteIn {
            fh,
            offset: 0,
            size: data.len() as u32,
            ..Default::default()
        };
        let reply = guest.call(Opcode::Write, file, &[write.as_slice(), data], 64);
        assert_eq!(guest.errno(&reply), 0);
        assert_eq!(host_mode(&guest, "suid"), 0o755);
        assert!(std::fs::read(guest.host("suid")).unwrap().starts_with(data));
    }

    #[test]
    fn truncating_a_set_id_file_clears_its_bits() {
        let mut guest = Guest::new(false);
        guest.init();
        // SETATTR size.
        let file = set_id_file(&mut guest, "by_setattr");
        let truncate = SetattrIn {
            valid: SetattrValid::SIZE.bits(),
            size: 3,
            ..Default::default()
        };
        assert_eq!(setattr(&mut guest, file, truncate), 0);
        assert_eq!(host_mode(&guest, "by_setattr"), 0o755);
        assert_eq!(
            std::fs::metadata(guest.host("by_setattr")).unwrap().len(),
            3
        );
        // OPEN with O_TRUNC.
        let file = set_id_file(&mut guest, "by_open");
        open_fh(&mut guest, file, libc::O_WRONLY | libc::O_TRUNC);
        assert_eq!(host_mode(&guest, "by_open"), 0o755);
        assert_eq!(std::fs::metadata(guest.host("by_open")).unwrap().len(), 0);
        // CREATE of an existing name with O_TRUNC.
        set_id_file(&mut guest, "by_create");
        let create = CreateIn {
            flags: (libc::O_WRONLY | libc::O_TRUNC) as u32,
            mode: 0o644,
            umask: 0,
            fuse_flags: 0,
        };
        let reply = guest.call(
            Opcode::Create,
            ROOT_ID,
            &[create.as_slice(), &with_nul("by_create")],
            256,
        );
        assert_eq!(guest.errno(&reply), 0);
        assert_eq!(host_mode(&guest, "by_create"), 0o755);
        assert_eq!(std::fs::metadata(guest.host("by_create")).unwrap().len(), 0);
        // FALLOCATE (punching a hole changes the file as much as a write).
        let file = set_id_file(&mut guest, "by_fallocate");
        let fh = open_fh(&mut guest, file, libc::O_RDWR);
        let fallocate = FallocateIn {
            fh,
            offset: 0,
            length: 4096,
            mode: 0,
            padding: 0,
        };
        let reply = guest.call(Opcode::Fallocate, file, &[fallocate.as_slice()], 64);
        assert_eq!(guest.errno(&reply), 0);
        assert_eq!(host_mode(&guest, "by_fallocate"), 0o755);
    }

    #[test]
    fn changing_the_owner_of_a_set_id_file_clears_its_bits() {
        let mut guest = Guest::new(false);
        guest.init();
        for (name, valid) in [
            ("uid", SetattrValid::UID),
            ("gid", SetattrValid::GID),
            ("both", SetattrValid::UID | SetattrValid::GID),
        ] {
            let file = set_id_file(&mut guest, name);
            let chown = SetattrIn {
                valid: valid.bits(),
                uid: 0,
                gid: 0,
                ..Default::default()
            };
            assert_eq!(setattr(&mut guest, file, chown), 0, "{name}");
            assert_eq!(host_mode(&guest, name), 0o755, "chown {name}");
        }
        // chown and chmod in one request: the bits asked for are stripped as well.
        let file = set_id_file(&mut guest, "with_mode");
        let chown = SetattrIn {
            valid: (SetattrValid::UID | SetattrValid::MODE).bits(),
            uid: 0,
            mode: libc::S_IFREG | 0o6711,
            ..Default::default()
        };
        assert_eq!(setattr(&mut guest, file, chown), 0);
        assert_eq!(host_mode(&guest, "with_mode"), 0o711);
        // A directory's set-group-ID survives a chown (it grants nothing).
        std::fs::set_permissions(guest.host("sub"), std::fs::Permissions::from_mode(0o2755))
            .unwrap();
        let dir = guest.lookup_ok(ROOT_ID, "sub").nodeid;
        let chown = SetattrIn {
            valid: SetattrValid::GID.bits(),
            gid: 0,
            ..Default::default()
        };
        assert_eq!(setattr(&mut guest, dir, chown), 0);
        assert_eq!(host_mode(&guest, "sub"), 0o2755);
    }
}

/// The cap on inodes the guest holds (each one a host descriptor in the passthrough).
mod inode_cap {
    use std::ffi::CString;

    use fuse_backend_rs::api::filesystem::{Context, FileSystem};

    use super::*;

    fn c(name: &str) -> CString {
        CString::new(name).unwrap()
    }

    fn errno<T>(result: std::io::Result<T>) -> Option<i32> {
        result.err().and_then(|e| e.raw_os_error())
    }

    /// A share with files a..e and a directory, served by a guard allowing `max` inodes.
    fn share(max: usize) -> (TempDir, GuardedFs<PassthroughFs>) {
        unshare_fs_context().unwrap();
        let dir = TempDir::new_with_prefix("/tmp/vmm-fs-inodes-").unwrap();
        for name in ["a", "b", "c", "d", "e"] {
            std::fs::write(dir.as_path().join(name), name).unwrap();
        }
        std::fs::create_dir(dir.as_path().join("sub")).unwrap();
        let root = resolve_root(dir.as_path()).unwrap();
        let fs = GuardedFs::new(new_passthrough(&root, false).unwrap(), false).with_max_inodes(max);
        fs.init(FsOptions::empty()).unwrap();
        (dir, fs)
    }

    /// Whether the passthrough still holds `inode` (a forgotten one answers EBADF).
    fn alive(fs: &GuardedFs<PassthroughFs>, inode: u64) -> bool {
        fs.getattr(&Context::default(), inode, None).is_ok()
    }

    #[test]
    fn lookups_beyond_the_cap_fail_with_enfile_and_forget_makes_room() {
        let (_dir, fs) = share(3);
        let ctx = Context::default();
        let a = fs.lookup(&ctx, ROOT_ID, &c("a")).unwrap().inode;
        let b = fs.lookup(&ctx, ROOT_ID, &c("b")).unwrap().inode;
        let c_inode = fs.lookup(&ctx, ROOT_ID, &c("c")).unwrap().inode;
        assert_eq!(errno(fs.lookup(&ctx, ROOT_ID, &c("d"))), Some(libc::ENFILE));
        // Inodes already held keep working, and can be looked up again.
        assert_eq!(fs.lookup(&ctx, ROOT_ID, &c("a")).unwrap().inode, a);
        assert!(alive(&fs, a) && alive(&fs, b) && alive(&fs, c_inode));
        // The root is not counted.
        assert!(alive(&fs, ROOT_ID));
        // a is held twice now: one forget leaves it held and the table full.
        fs.forget(&ctx, a, 1);
        assert!(alive(&fs, a));
        assert_eq!(errno(fs.lookup(&ctx, ROOT_ID, &c("d"))), Some(libc::ENFILE));
        fs.batch_forget(&ctx, vec![(a, 1), (b, 5)]);
        assert!(!alive(&fs, a) && !alive(&fs, b));
        let d = fs.lookup(&ctx, ROOT_ID, &c("d")).unwrap().inode;
        let e = fs.lookup(&ctx, ROOT_ID, &c("e")).unwrap().inode;
        assert_eq!(errno(fs.lookup(&ctx, ROOT_ID, &c("a"))), Some(libc::ENFILE));
        // The refused lookups left nothing behind in the passthrough: once d is forgotten (one
        // reference, from the lookup that succeeded) its descriptor is gone.
        fs.forget(&ctx, d, 1);
        assert!(!alive(&fs, d));
        assert!(alive(&fs, e));
    }

    #[test]
    fn creations_beyond_the_cap_fail_with_enfile_without_creating() {
        let (dir, fs) = share(1);
        let ctx = Context::default();
        let a = fs.lookup(&ctx, ROOT_ID, &c("a")).unwrap().inode;
        let create = |flags: i32| CreateIn {
            flags: flags as u32,
            mode: 0o644,
            umask: 0,
            fuse_flags: 0,
        };
        assert_eq!(
            errno(fs.create(&ctx, ROOT_ID, &c("new"), create(libc::O_RDWR))),
            Some(libc::ENFILE)
        );
        assert_eq!(
            errno(fs.create(
                &ctx,
                ROOT_ID,
                &c("new"),
                create(libc::O_RDWR | libc::O_EXCL)
            )),
            Some(libc::ENFILE)
        );
        assert_eq!(
            errno(fs.mkdir(&ctx, ROOT_ID, &c("newdir"), 0o755, 0)),
            Some(libc::ENFILE)
        );
        assert_eq!(
            errno(fs.mknod(&ctx, ROOT_ID, &c("fifo"), libc::S_IFIFO | 0o644, 0, 0)),
            Some(libc::ENFILE)
        );
        assert_eq!(
            errno(fs.symlink(&ctx, &c("a"), ROOT_ID, &c("link"))),
            Some(libc::ENFILE)
        );
        for name in ["new", "newdir", "fifo", "link"] {
            assert!(
                std::fs::symlink_metadata(dir.as_path().join(name)).is_err(),
                "{name} was created"
            );
        }
        // CREATE of a name the guest holds opens it; a hard link to it takes no slot.
        let (entry, handle, _, _) = fs
            .create(&ctx, ROOT_ID, &c("a"), create(libc::O_RDWR))
            .unwrap();
        assert_eq!(entry.inode, a);
        assert!(handle.is_some());
        assert_eq!(fs.link(&ctx, a, ROOT_ID, &c("hard")).unwrap().inode, a);
        // Forgetting every reference (lookup, create, link) makes room for a creation.
        fs.forget(&ctx, a, 3);
        assert!(!alive(&fs, a));
        let created = fs.mkdir(&ctx, ROOT_ID, &c("newdir"), 0o755, 0).unwrap();
        assert!(alive(&fs, created.inode));
    }

    #[test]
    fn a_failed_create_of_an_existing_name_pins_nothing() {
        let (_dir, fs) = share(8);
        let ctx = Context::default();
        // The name exists and is a directory: opening it for writing fails.
        let args = CreateIn {
            flags: libc::O_RDWR as u32,
            mode: 0o644,
            umask: 0,
            fuse_flags: 0,
        };
        assert_eq!(
            errno(fs.create(&ctx, ROOT_ID, &c("sub"), args)),
            Some(libc::EISDIR)
        );
        let sub = fs.lookup(&ctx, ROOT_ID, &c("sub")).unwrap().inode;
        fs.forget(&ctx, sub, 1);
        assert!(
            !alive(&fs, sub),
            "the failed create left a reference the guest never got"
        );
    }

    #[test]
    fn readdirplus_counts_its_entries_and_says_enfile_when_full() {
        let (_dir, fs) = share(2);
        let ctx = Context::default();
        let a = fs.lookup(&ctx, ROOT_ID, &c("a")).unwrap().inode;
        let (handle, _) = fs.opendir(&ctx, ROOT_ID, libc::O_RDONLY as u32).unwrap();
        let handle = handle.unwrap();
        let mut listed = Vec::new();
        fs.readdirplus(
            &ctx,
            ROOT_ID,
            handle,
            64 * 1024,
            0,
            &mut |dir_entry, entry| {
                listed.push((dir_entry.name.to_vec(), entry.inode, dir_entry.offset));
                Ok(1)
            },
        )
        .unwrap();
        // a is held already, so one more fits: the listing stops after it (whatever the
        // directory's order), and the next batch from there is refused outright.
        assert!(!listed.is_empty() && listed.len() <= 2, "{listed:?}");
        let new: Vec<_> = listed.iter().filter(|(_, inode, _)| *inode != a).collect();
        assert_eq!(new.len(), 1, "{listed:?}");
        let next = listed.last().unwrap().2;
        let result = fs.readdirplus(
            &ctx,
            ROOT_ID,
            handle,
            64 * 1024,
            next,
            &mut |dir_entry, _| panic!("listed {:?} beyond the cap", dir_entry.name),
        );
        // Unless the directory ended right there (then it is simply the end).
        if let Err(e) = result {
            assert_eq!(e.raw_os_error(), Some(libc::ENFILE));
        }
        // The listed entries are references the guest holds and forgets like lookups.
        let other = new[0].1;
        assert!(alive(&fs, other));
        fs.forget(&ctx, other, 1);
        assert!(!alive(&fs, other));
        assert!(fs.lookup(&ctx, ROOT_ID, &c("e")).is_ok());
    }
}
