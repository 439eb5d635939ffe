//! The device end to end inside this process: a fake guest driver writes descriptors and
//! rings into fake guest memory, real unix sockets in a temporary directory play the host,
//! and the worker is stepped by hand (or runs on its own thread for the activation test).

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::connection::BUF_ALLOC;
use super::muxer::{Muxer, MAX_CONNECTIONS};
use super::packet::{
    op, Header, HEADER_LEN, HOST_CID, MAX_PAYLOAD, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};
use super::worker::{Flow, Queues, Worker};
use super::*;

const GUEST_CID: u64 = 3;
const QSIZE: u16 = 256;
const MEM_SIZE: usize = 32 << 20;
/// What the fake guest advertises per connection unless a test says otherwise.
const GUEST_BUF_ALLOC: u32 = 1 << 20;

/// A temporary directory removed at the end of the test.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("vsock-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One split virtqueue as a driver sees it: rings at `base` (descriptor table, then avail at
/// +4 KiB, used at +8 KiB), and a buffer of `slot` bytes per descriptor index at `buffers`.
struct FakeQueue {
    base: u64,
    buffers: u64,
    slot: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl FakeQueue {
    fn new(base: u64, buffers: u64, slot: u64) -> FakeQueue {
        FakeQueue {
            base,
            buffers,
            slot,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    fn avail(&self) -> u64 {
        self.base + 0x1000
    }

    fn used(&self) -> u64 {
        self.base + 0x2000
    }

    /// The device's view of this queue, as the transport would hand it over.
    fn queue(&self) -> Queue {
        let mut q = Queue::new(QSIZE).unwrap();
        q.set_size(QSIZE);
        q.try_set_desc_table_address(GuestAddress(self.base))
            .unwrap();
        q.try_set_avail_ring_address(GuestAddress(self.avail()))
            .unwrap();
        q.try_set_used_ring_address(GuestAddress(self.used()))
            .unwrap();
        q.set_ready(true);
        q
    }

    fn buffer(&self, desc: u16) -> u64 {
        self.buffers + u64::from(desc) * self.slot
    }

    /// Writes raw descriptors (addr, len, flags; NEXT links added) and makes the chain
    /// available; returns its head.
    fn add_raw(&mut self, mem: &GuestMemory, descs: &[(u64, u32, u32)]) -> u16 {
        assert!(
            self.avail_idx.wrapping_sub(self.used_seen) < QSIZE / 2 - 8,
            "test driver keeps too many chains outstanding"
        );
        if usize::from(self.next_desc) + descs.len() > usize::from(QSIZE) {
            self.next_desc = 0;
        }
        let head = self.next_desc;
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let index = head + i as u16;
            let last = i + 1 == descs.len();
            let flags = if last {
                flags
            } else {
                flags | VRING_DESC_F_NEXT
            };
            let at = self.base + u64::from(index) * 16;
            mem.write_obj(addr, GuestAddress(at)).unwrap();
            mem.write_obj(len, GuestAddress(at + 8)).unwrap();
            mem.write_obj(flags as u16, GuestAddress(at + 12)).unwrap();
            mem.write_obj(index + 1, GuestAddress(at + 14)).unwrap();
        }
        self.next_desc = head + descs.len() as u16;
        let slot = self.avail() + 4 + u64::from(self.avail_idx % QSIZE) * 2;
        mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail() + 2))
            .unwrap();
        head
    }

    /// Writes `parts` (length, device-writable, contents) into this queue's buffers and makes
    /// them available as one chain.
    fn add(&mut self, mem: &GuestMemory, parts: &[(u32, bool, &[u8])]) -> u16 {
        if usize::from(self.next_desc) + parts.len() > usize::from(QSIZE) {
            self.next_desc = 0;
        }
        let descs: Vec<(u64, u32, u32)> = parts
            .iter()
            .enumerate()
            .map(|(i, &(len, write, contents))| {
                let addr = self.buffer(self.next_desc + i as u16);
                mem.write_slice(contents, GuestAddress(addr)).unwrap();
                let flags = if write { VRING_DESC_F_WRITE } else { 0 };
                (addr, len, flags)
            })
            .collect();
        self.add_raw(mem, &descs)
    }

    /// Used entries (head, length) the device added since the last call.
    fn take_used(&mut self, mem: &GuestMemory) -> Vec<(u16, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used() + 2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let at = self.used() + 4 + u64::from(self.used_seen % QSIZE) * 8;
            let id: u32 = mem.read_obj(GuestAddress(at)).unwrap();
            let len: u32 = mem.read_obj(GuestAddress(at + 4)).unwrap();
            out.push((id as u16, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }
}

/// The guest's side: its memory, its queues, and the notify eventfds the device listens on.
struct Guest {
    mem: GuestMemory,
    rx: FakeQueue,
    tx: FakeQueue,
    rx_notify: EventFd,
    tx_notify: EventFd,
    tx_done: usize,
}

impl Guest {
    /// Makes `count` receive buffers (a 44-byte header descriptor and 4 KiB for data, as
    /// Linux 6.1 does) available.
    fn give_rx(&mut self, count: usize) {
        for _ in 0..count {
            self.rx.add(
                &self.mem,
                &[(HEADER_LEN as u32, true, &[]), (4096, true, &[])],
            );
        }
        self.rx_notify.write(1).unwrap();
    }

    /// Adds receive buffers until `target` are outstanding.
    fn top_up_rx(&mut self, target: u16) {
        let outstanding = self.rx.avail_idx.wrapping_sub(self.rx.used_seen);
        self.give_rx(usize::from(target.saturating_sub(outstanding)));
    }

    /// Sends one packet (its `len` set from the payload).
    fn send(&mut self, header: Header, payload: &[u8]) {
        self.tx_done += self.tx.take_used(&self.mem).len();
        let header = Header {
            len: payload.len() as u32,
            ..header
        };
        let raw = header.encode();
        if payload.is_empty() {
            self.tx.add(&self.mem, &[(HEADER_LEN as u32, false, &raw)]);
        } else {
            self.tx.add(
                &self.mem,
                &[
                    (HEADER_LEN as u32, false, &raw),
                    (payload.len() as u32, false, payload),
                ],
            );
        }
        self.tx_notify.write(1).unwrap();
    }

    /// Transmit chains the device has returned so far.
    fn tx_completed(&mut self) -> usize {
        self.tx_done += self.tx.take_used(&self.mem).len();
        self.tx_done
    }

    /// Packets the device put into receive buffers since the last call.
    fn received(&mut self) -> Vec<(Header, Vec<u8>)> {
        let mut out = Vec::new();
        for (head, len) in self.rx.take_used(&self.mem) {
            let len = len as usize;
            assert!(len >= HEADER_LEN, "used length {len}");
            let mut raw = [0u8; HEADER_LEN];
            self.mem
                .read_slice(&mut raw, GuestAddress(self.rx.buffer(head)))
                .unwrap();
            let header = Header::decode(&raw);
            assert_eq!(header.len as usize, len - HEADER_LEN);
            let mut payload = vec![0u8; len - HEADER_LEN];
            self.mem
                .read_slice(&mut payload, GuestAddress(self.rx.buffer(head + 1)))
                .unwrap();
            out.push((header, payload));
        }
        out
    }
}

/// A header from the guest's port `src_port` to host port `dst_port`.
fn guest_header(op: u16, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len: 0,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: GUEST_BUF_ALLOC,
        fwd_cnt: 0,
    }
}

/// A device, its worker stepped by the test, and a guest.
struct Rig {
    // Field order: the worker (and its streams) before the device that owns the socket file.
    worker: Worker,
    guest: Guest,
    irq: EventFd,
    _stop: EventFd,
    device: Vsock,
    _dir: TempDir,
}

/// The host ports the rig's guest may connect to (the tests' listeners, and 4321 where
/// nobody listens).
const RIG_HOST_PORTS: [u32; 4] = [80, 1234, 4321, 7000];

impl Rig {
    fn new() -> Rig {
        Rig::with_host_ports(&RIG_HOST_PORTS)
    }

    fn with_host_ports(host_ports: &[u32]) -> Rig {
        let dir = TempDir::new();
        let config = VsockConfig {
            guest_cid: GUEST_CID,
            uds_path: dir.0.join("vm.sock"),
            host_ports: host_ports.to_vec(),
        };
        let device = Vsock::new(&config).unwrap();
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let rx = FakeQueue::new(0, 0x10_0000, 0x1000);
        let tx = FakeQueue::new(0x4000, 0x20_0000, 0x1_0000);
        let event = FakeQueue::new(0x8000, 0x1000_0000, 0);
        let notify = || EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let (rx_notify, tx_notify) = (notify(), notify());
        let irq = notify();
        let interrupt = Arc::new(Interrupt::new(irq.try_clone().unwrap()));
        let queues = Queues {
            rx: ActiveQueue {
                queue: rx.queue(),
                notify: rx_notify.try_clone().unwrap(),
            },
            tx: ActiveQueue {
                queue: tx.queue(),
                notify: tx_notify.try_clone().unwrap(),
            },
            event: ActiveQueue {
                queue: event.queue(),
                notify: notify(),
            },
        };
        let muxer = Muxer::new(GUEST_CID, device.listener.clone(), device.ports.clone());
        let stop = notify();
        let worker = Worker::new(mem.clone(), queues, interrupt, muxer, &stop).unwrap();
        Rig {
            worker,
            guest: Guest {
                mem,
                rx,
                tx,
                rx_notify,
                tx_notify,
                tx_done: 0,
            },
            irq,
            _stop: stop,
            device,
            _dir: dir,
        }
    }

    fn uds(&self) -> &Path {
        &self.device.config.uds_path
    }

    /// Runs a few worker passes, each waiting at most a millisecond for events.
    fn pump(&mut self) {
        for _ in 0..4 {
            assert_eq!(
                self.worker.step(Some(Duration::from_millis(1))),
                Flow::Continue
            );
        }
    }

    /// A host process connecting to the VM's socket.
    fn host_connect(&self) -> UnixStream {
        let stream = UnixStream::connect(self.uds()).unwrap();
        stream.set_nonblocking(true).unwrap();
        stream
    }

    /// Host-initiated connection to guest port `port`, accepted by the guest; returns the
    /// host stream and the host port the device chose.
    fn open_from_host(&mut self, port: u32) -> (UnixStream, u32) {
        self.open_from_host_with(port, GUEST_BUF_ALLOC)
    }

    /// Same, with the guest advertising `buf_alloc` bytes of receive buffer.
    fn open_from_host_with(&mut self, port: u32, buf_alloc: u32) -> (UnixStream, u32) {
        let mut host = self.host_connect();
        host.write_all(format!("CONNECT {port}\n").as_bytes())
            .unwrap();
        self.guest.top_up_rx(8);
        self.pump();
        let packets = self.guest.received();
        assert_eq!(packets.len(), 1, "{packets:?}");
        let request = packets[0].0;
        assert_eq!(request.op, op::REQUEST);
        assert_eq!(request.dst_port, port);
        let mut response = guest_header(op::RESPONSE, port, request.src_port);
        response.buf_alloc = buf_alloc;
        self.guest.send(response, &[]);
        self.pump();
        let expected = format!("OK {}\n", request.src_port);
        let (got, eof) = read_available(&mut host);
        assert!(!eof);
        assert_eq!(String::from_utf8(got).unwrap(), expected);
        (host, request.src_port)
    }
}

/// Everything readable right now from a non-blocking stream, and whether it hit EOF.
fn read_available(stream: &mut UnixStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return (out, false),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (out, true),
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Recognisable, position-dependent bytes so that loss, duplication or reordering show.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

#[test]
fn identity_config_space_and_features() {
    let dir = TempDir::new();
    let config = VsockConfig {
        guest_cid: 0x1_0000_0042,
        uds_path: dir.0.join("vm.sock"),
        host_ports: Vec::new(),
    };
    assert!(matches!(
        Vsock::new(&config),
        Err(VsockError::BadCid(0x1_0000_0042))
    ));
    let config = VsockConfig {
        guest_cid: 0x0102_0304,
        ..config
    };
    let device = Vsock::new(&config).unwrap();
    assert_eq!(device.device_type(), 19);
    assert_eq!(device.features(), VIRTIO_F_VERSION_1);
    assert_eq!(device.queue_max_sizes().len(), 3);
    let mut cid = [0xffu8; 8];
    device.read_config(0, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), 0x0102_0304);
    let mut high = [0xffu8; 4];
    device.read_config(4, &mut high);
    assert_eq!(high, [0; 4]);
    let mut past = [0xffu8; 2];
    device.read_config(7, &mut past);
    assert_eq!(past, [0x00, 0]);
    device.read_config(u64::MAX, &mut past);
    assert_eq!(past, [0, 0]);
    assert!(config.uds_path.exists());
    drop(device);
    assert!(!config.uds_path.exists(), "socket removed with the device");
}

#[test]
fn new_refuses_reserved_cids_and_existing_paths() {
    let dir = TempDir::new();
    let path = dir.0.join("taken");
    for cid in [0, 1, 2, u64::from(u32::MAX)] {
        let config = VsockConfig {
            guest_cid: cid,
            uds_path: path.clone(),
            host_ports: Vec::new(),
        };
        let err = Vsock::new(&config).err().unwrap();
        assert!(matches!(err, VsockError::BadCid(c) if c == cid));
        assert!(err.to_string().contains("choose one from 3"));
    }
    std::fs::write(&path, b"not ours").unwrap();
    let config = VsockConfig {
        guest_cid: 3,
        uds_path: path.clone(),
        host_ports: Vec::new(),
    };
    let err = Vsock::new(&config).err().unwrap();
    assert!(matches!(err, VsockError::SocketExists(_)));
    assert!(err.to_string().contains("already exists"));
    assert_eq!(std::fs::read(&path).unwrap(), b"not ours", "left alone");
    let config = VsockConfig {
        guest_cid: 3,
        uds_path: dir.0.join("x".repeat(MAX_UDS_PATH_LEN)),
        host_ports: Vec::new(),
    };
    let err = Vsock::new(&config).err().unwrap();
    assert!(matches!(err, VsockError::PathTooLong(_)));
    assert!(err.to_string().contains("at most 96 bytes"));
    let config = VsockConfig {
        guest_cid: 3,
        uds_path: dir.0.join("missing-dir").join("vm.sock"),
        host_ports: Vec::new(),
    };
    assert!(matches!(Vsock::new(&config), Err(VsockError::Bind { .. })));
}

#[test]
fn host_initiated_connection_carries_data_both_ways_intact() {
    let mut rig = Rig::new();
    // The guest's own (small) receive buffer, which the device must respect.
    let guest_buf_alloc = 64 * 1024;
    let (mut host, host_port) = rig.open_from_host_with(52, guest_buf_alloc);
    assert!(host_port >= 1 << 30);
    let to_guest = pattern(700_000, 0x11);
    let to_host = pattern(900_000, 0x22);
    let (mut host_sent, mut host_got) = (0, Vec::new());
    let (mut guest_sent, mut guest_got) = (0usize, Vec::new());
    // The guest's view of the device's credit.
    let (mut dev_buf_alloc, mut dev_fwd_cnt) = (0u32, 0u32);
    let mut reply = guest_header(op::RW, 52, host_port);
    reply.buf_alloc = guest_buf_alloc;
    rig.guest.give_rx(60);
    let deadline = Instant::now() + Duration::from_secs(30);
    while host_got.len() < to_host.len() || guest_got.len() < to_guest.len() {
        assert!(Instant::now() < deadline, "transfer stalled");
        if host_sent < to_guest.len() {
            match host.write(&to_guest[host_sent..]) {
                Ok(n) => host_sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("host write: {e}"),
            }
        }
        // The guest sends only what the device's credit allows.
        loop {
            let in_flight = (guest_sent as u32).wrapping_sub(dev_fwd_cnt);
            let credit = dev_buf_alloc.saturating_sub(in_flight) as usize;
            let chunk = credit.min(32 * 1024).min(to_host.len() - guest_sent);
            if chunk == 0 {
                break;
            }
            reply.fwd_cnt = guest_got.len() as u32;
            rig.guest
                .send(reply, &to_host[guest_sent..guest_sent + chunk]);
            guest_sent += chunk;
            if rig.guest.tx.avail_idx.wrapping_sub(rig.guest.tx.used_seen) > 40 {
                break;
            }
        }
        rig.pump();
        let packets = rig.guest.received();
        let consumed = packets.len();
        for (header, payload) in packets {
            assert_eq!((header.src_port, header.dst_port), (host_port, 52));
            dev_buf_alloc = header.buf_alloc;
            dev_fwd_cnt = header.fwd_cnt;
            match header.op {
                op::RW => guest_got.extend_from_slice(&payload),
                op::CREDIT_UPDATE => {}
                other => panic!("unexpected op {other}"),
            }
            let in_buffer = guest_got.len() as u32;
            assert!(
                header.op != op::RW || in_buffer <= guest_buf_alloc + reply.fwd_cnt,
                "device sent beyond the guest's credit"
            );
        }
        if consumed > 0 {
            // The guest application reads everything at once and tells the device.
            rig.guest.give_rx(consumed);
            reply.fwd_cnt = guest_got.len() as u32;
            let mut update = reply;
            update.op = op::CREDIT_UPDATE;
            rig.guest.send(update, &[]);
        }
        let (got, eof) = read_available(&mut host);
        assert!(!eof);
        host_got.extend_from_slice(&got);
    }
    assert_eq!(dev_buf_alloc, BUF_ALLOC);
    assert!(guest_got == to_guest, "host -> guest bytes differ");
    assert!(host_got == to_host, "guest -> host bytes differ");
    assert!(rig.irq.read().unwrap() > 0, "the guest was interrupted");
}

#[test]
fn guest_refusal_and_bad_connect_lines_close_the_host_stream() {
    let mut rig = Rig::new();
    rig.guest.give_rx(8);
    // No listener in the guest: it answers RST.
    let mut host = rig.host_connect();
    host.write_all(b"CONNECT 99\n").unwrap();
    rig.pump();
    let packets = rig.guest.received();
    assert_eq!(packets.len(), 1);
    let request = packets[0].0;
    rig.guest
        .send(guest_header(op::RST, 99, request.src_port), &[]);
    rig.pump();
    assert_eq!(read_available(&mut host), (Vec::new(), true));
    // Malformed and overlong lines never reach the guest.
    let mut bad = rig.host_connect();
    bad.write_all(b"CONNECT x\n").unwrap();
    let mut long = rig.host_connect();
    long.write_all(&[b'7'; 40]).unwrap();
    let mut gone = rig.host_connect();
    gone.write_all(b"CONN").unwrap();
    gone.shutdown(std::net::Shutdown::Write).unwrap();
    rig.pump();
    assert_eq!(read_available(&mut bad), (Vec::new(), true));
    assert_eq!(read_available(&mut long), (Vec::new(), true));
    assert_eq!(read_available(&mut gone), (Vec::new(), true));
    assert!(rig.guest.received().is_empty());
    assert_eq!(rig.worker_streams(), 0);
}

impl Rig {
    fn worker_streams(&self) -> usize {
        self.worker.stream_count()
    }
}

#[test]
fn guest_initiated_connection_reaches_the_port_socket() {
    let mut rig = Rig::new();
    let mut port_path = rig.uds().as_os_str().to_owned();
    port_path.push("_1234");
    let listener = UnixListener::bind(&port_path).unwrap();
    rig.guest.give_rx(16);
    rig.guest.send(guest_header(op::REQUEST, 5000, 1234), &[]);
    rig.pump();
    let (mut host, _) = listener.accept().unwrap();
    host.set_nonblocking(true).unwrap();
    let packets = rig.guest.received();
    assert_eq!(packets.len(), 1);
    let response = packets[0].0;
    assert_eq!(
        (
            response.op,
            response.src_cid,
            response.dst_cid,
            response.src_port,
            response.dst_port
        ),
        (op::RESPONSE, HOST_CID, GUEST_CID, 1234, 5000)
    );
    assert_eq!(response.buf_alloc, BUF_ALLOC);
    // Guest -> host, then host -> guest.
    rig.guest
        .send(guest_header(op::RW, 5000, 1234), b"ping from the guest");
    rig.pump();
    assert_eq!(read_available(&mut host).0, b"ping from the guest");
    host.write_all(b"pong from the host").unwrap();
    rig.pump();
    let packets = rig.guest.received();
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].0.op, op::RW);
    assert_eq!(packets[0].1, b"pong from the host");

    // A port nobody listens on is refused.
    rig.guest.send(guest_header(op::REQUEST, 5001, 4321), &[]);
    rig.pump();
    let packets = rig.guest.received();
    assert_eq!(packets.len(), 1);
    let rst = packets[0].0;
    assert_eq!((rst.op, rst.src_port, rst.dst_port), (op::RST, 4321, 5001));
}

impl Rig {
    /// The path of host port `port`'s socket, `<uds>_<port>`.
    fn port_path(&self, port: u32) -> PathBuf {
        let mut path = self.uds().as_os_str().to_owned();
        path.push(format!("_{port}"));
        PathBuf::from(path)
    }

    /// The guest asks for host port `port` from its port `src`; returns what it got back.
    fn guest_request(&mut self, src: u32, port: u32) -> Header {
        self.guest.top_up_rx(8);
        self.guest.send(guest_header(op::REQUEST, src, port), &[]);
        self.pump();
        let packets = self.guest.received();
        assert_eq!(packets.len(), 1, "{packets:?}");
        packets[0].0
    }
}

/// A listener that must never see a connection.
fn assert_never_connected(listener: &UnixListener, why: &str) {
    listener.set_nonblocking(true).unwrap();
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok(_) => panic!("{why}: the host socket was connected to"),
        Err(e) => panic!("{why}: accept: {e}"),
    }
}

#[test]
fn an_unregistered_host_port_is_reset_without_a_connection() {
    let mut rig = Rig::with_host_ports(&[1234]);
    // A socket at `<uds>_7`, as a guest could plant through a share: never reached.
    let listener = UnixListener::bind(rig.port_path(7)).unwrap();
    let rst = rig.guest_request(5000, 7);
    assert_eq!(
        (rst.op, rst.src_cid, rst.dst_cid, rst.src_port, rst.dst_port),
        (op::RST, HOST_CID, GUEST_CID, 7, 5000)
    );
    assert_never_connected(&listener, "unregistered port 7");
    assert_eq!(rig.worker_streams(), 0);
    // Data for the refused connection is answered with RST too, and reaches nobody.
    rig.guest.send(guest_header(op::RW, 5000, 7), b"secret");
    rig.pump();
    assert_eq!(rig.guest.received()[0].0.op, op::RST);
    assert_never_connected(&listener, "unregistered port 7");
}

#[test]
fn a_registered_port_that_is_a_symlink_is_reset_without_a_connection() {
    let mut rig = Rig::with_host_ports(&[7, 8, 9]);
    let dir = TempDir::new();
    // A real listening socket elsewhere (the host's secret), and a symlink to it at the port's
    // name, absolute for port 7 and relative for port 8.
    let secret_path = dir.0.join("hostsecret.sock");
    let secret = UnixListener::bind(&secret_path).unwrap();
    std::os::unix::fs::symlink(&secret_path, rig.port_path(7)).unwrap();
    let relative = Path::new("..").join(secret_path.strip_prefix(dir.0.parent().unwrap()).unwrap());
    std::os::unix::fs::symlink(&relative, rig.port_path(8)).unwrap();
    assert!(
        UnixStream::connect(rig.port_path(8)).is_ok(),
        "the relative symlink works for a path-following connect"
    );
    let _ = secret.accept().unwrap();
    for port in [7, 8] {
        let rst = rig.guest_request(5000 + port, port);
        assert_eq!((rst.op, rst.src_port), (op::RST, port), "port {port}");
    }
    assert_never_connected(&secret, "a symlink to a host socket");
    // Something other than a socket at a registered port is refused as well.
    std::fs::write(rig.port_path(9), b"not a socket").unwrap();
    assert_eq!(rig.guest_request(5009, 9).op, op::RST);
    assert_eq!(rig.worker_streams(), 0);
}

#[test]
fn a_registered_port_reaches_its_real_socket() {
    let mut rig = Rig::with_host_ports(&[7]);
    let listener = UnixListener::bind(rig.port_path(7)).unwrap();
    let response = rig.guest_request(5000, 7);
    assert_eq!(
        (response.op, response.src_port, response.dst_port),
        (op::RESPONSE, 7, 5000)
    );
    let (mut host, _) = listener.accept().unwrap();
    host.set_nonblocking(true).unwrap();
    rig.guest.send(guest_header(op::RW, 5000, 7), b"registered");
    rig.pump();
    assert_eq!(read_available(&mut host).0, b"registered");
}

#[test]
fn shutdowns_in_both_directions_and_the_closing_handshake() {
    let mut rig = Rig::new();
    let (mut host, port) = rig.open_from_host(52);
    // The guest stops sending: the host reads the data, then EOF, and can still write.
    rig.guest
        .send(guest_header(op::RW, 52, port), b"bye from the guest");
    let mut shutdown = guest_header(op::SHUTDOWN, 52, port);
    shutdown.flags = SHUTDOWN_SEND;
    rig.guest.send(shutdown, &[]);
    rig.pump();
    assert_eq!(
        read_available(&mut host),
        (b"bye from the guest".to_vec(), true)
    );
    host.write_all(b"still here").unwrap();
    // The host stops sending: the guest gets the data, then SHUTDOWN(SEND) (and RCV: with
    // both directions of the unix stream shut, the device cannot tell a close from two
    // half-closes, and the guest has stopped sending anyway).
    host.shutdown(std::net::Shutdown::Write).unwrap();
    rig.pump();
    let packets = rig.guest.received();
    let ops: Vec<(u16, u32)> = packets.iter().map(|(h, _)| (h.op, h.flags)).collect();
    assert_eq!(
        ops,
        [(op::RW, 0), (op::SHUTDOWN, SHUTDOWN_SEND | SHUTDOWN_RCV)]
    );
    assert_eq!(packets[0].1, b"still here");
    // The guest closes: it sends SHUTDOWN with both flags and waits for our RST.
    shutdown.flags = SHUTDOWN_SEND | SHUTDOWN_RCV;
    rig.guest.send(shutdown, &[]);
    rig.guest.give_rx(2);
    rig.pump();
    let packets = rig.guest.received();
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].0.op, op::RST);
    assert_eq!(rig.worker_streams(), 0);
}

#[test]
fn a_host_that_closes_gets_both_shutdown_flags_and_a_guest_rst_ends_it() {
    let mut rig = Rig::new();
    let (mut host, port) = rig.open_from_host(52);
    host.write_all(b"last words").unwrap();
    drop(host);
    rig.pump();
    let packets = rig.guest.received();
    let ops: Vec<(u16, u32)> = packets.iter().map(|(h, _)| (h.op, h.flags)).collect();
    assert_eq!(
        ops,
        [(op::RW, 0), (op::SHUTDOWN, SHUTDOWN_SEND | SHUTDOWN_RCV)]
    );
    assert_eq!(packets[0].1, b"last words");
    // Data toward a host that is gone resets the connection.
    rig.guest.give_rx(2);
    rig.guest
        .send(guest_header(op::RW, 52, port), b"anyone there?");
    rig.pump();
    let packets = rig.guest.received();
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].0.op, op::RST);
    assert_eq!(rig.worker_streams(), 0);
}

#[test]
fn stray_and_malformed_packets_are_answered_or_dropped() {
    let mut rig = Rig::new();
    rig.guest.give_rx(16);
    // A packet for no connection: RST.
    rig.guest.send(guest_header(op::RW, 7, 8), b"hello");
    // From a CID that is not the guest's: dropped.
    let mut spoofed = guest_header(op::REQUEST, 7, 8);
    spoofed.src_cid = 99;
    rig.guest.send(spoofed, &[]);
    // To a CID other than the host: RST (from that CID, so the guest finds its socket).
    let mut elsewhere = guest_header(op::REQUEST, 9, 10);
    elsewhere.dst_cid = 5;
    rig.guest.send(elsewhere, &[]);
    // Seqpacket: RST.
    let mut seqpacket = guest_header(op::REQUEST, 11, 12);
    seqpacket.type_ = 2;
    rig.guest.send(seqpacket, &[]);
    // An RST for no connection: nothing (never answer an RST).
    rig.guest.send(guest_header(op::RST, 13, 14), &[]);
    // Truncated header, out-of-range buffer, writable descriptor, zero-length descriptor
    // (raw chains use buffers above the fake driver's own).
    let mem = rig.guest.mem.clone();
    rig.guest.tx.add_raw(&mem, &[(0x130_0000, 20, 0)]);
    rig.guest.tx.add_raw(&mem, &[(MEM_SIZE as u64 - 8, 44, 0)]);
    rig.guest
        .tx
        .add_raw(&mem, &[(0x130_0000, 44, VRING_DESC_F_WRITE)]);
    rig.guest.tx.add_raw(&mem, &[(0x130_0000, 0, 0)]);
    // A huge len, and a len beyond the chain: RST.
    let mut huge = guest_header(op::RW, 15, 16).encode();
    huge[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    mem.write_slice(&huge, GuestAddress(0x131_0000)).unwrap();
    rig.guest.tx.add_raw(&mem, &[(0x131_0000, 44, 0)]);
    let mut beyond = guest_header(op::RW, 17, 18).encode();
    beyond[24..28].copy_from_slice(&100u32.to_le_bytes());
    mem.write_slice(&beyond, GuestAddress(0x132_0000)).unwrap();
    rig.guest
        .tx
        .add_raw(&mem, &[(0x132_0000, 44, 0), (0x133_0000, 99, 0)]);
    rig.guest.tx_notify.write(1).unwrap();
    rig.pump();
    assert_eq!(rig.guest.tx_completed(), 11, "every chain returned");
    let replies: Vec<(u16, u64, u32, u32)> = rig
        .guest
        .received()
        .iter()
        .map(|(h, _)| (h.op, h.src_cid, h.src_port, h.dst_port))
        .collect();
    assert_eq!(
        replies,
        [
            (op::RST, HOST_CID, 8, 7),
            (op::RST, 5, 10, 9),
            (op::RST, HOST_CID, 12, 11),
            (op::RST, HOST_CID, 16, 15),
            (op::RST, HOST_CID, 18, 17),
        ]
    );
    // Still serving.
    let (mut host, port) = rig.open_from_host(52);
    rig.guest.send(guest_header(op::RW, 52, port), b"ok");
    rig.pump();
    assert_eq!(read_available(&mut host).0, b"ok");
}

#[test]
fn a_malformed_packet_on_a_live_connection_resets_it() {
    let mut rig = Rig::new();
    let (mut host, port) = rig.open_from_host(52);
    let mut bad = guest_header(op::RW, 52, port).encode();
    bad[24..28].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
    let mem = rig.guest.mem.clone();
    mem.write_slice(&bad, GuestAddress(0x131_0000)).unwrap();
    rig.guest.tx.add_raw(&mem, &[(0x131_0000, 44, 0)]);
    rig.guest.tx_notify.write(1).unwrap();
    rig.guest.give_rx(2);
    rig.pump();
    let packets = rig.guest.received();
    assert_eq!(packets.len(), 1);
    assert_eq!(
        (
            packets[0].0.op,
            packets[0].0.src_port,
            packets[0].0.dst_port
        ),
        (op::RST, port, 52)
    );
    assert_eq!(read_available(&mut host), (Vec::new(), true));
}

#[test]
fn a_guest_flooding_past_its_credit_is_throttled_not_buffered() {
    let mut rig = Rig::new();
    let mut port_path = rig.uds().as_os_str().to_owned();
    port_path.push("_7000");
    let listener = UnixListener::bind(&port_path).unwrap();
    rig.guest.give_rx(8);
    rig.guest.send(guest_header(op::REQUEST, 6000, 7000), &[]);
    rig.pump();
    let (mut host, _) = listener.accept().unwrap();
    host.set_nonblocking(true).unwrap();
    assert_eq!(rig.guest.received()[0].0.op, op::RESPONSE);
    // 40 full packets (2.5 MiB) regardless of credit, while the host reads nothing.
    let packets = 40;
    let data = pattern(packets * MAX_PAYLOAD as usize, 0x33);
    let mut queued = 0;
    let mut got = Vec::new();
    while queued < 30 {
        let chunk = &data[queued * MAX_PAYLOAD as usize..][..MAX_PAYLOAD as usize];
        rig.guest.send(guest_header(op::RW, 6000, 7000), chunk);
        queued += 1;
    }
    for _ in 0..10 {
        rig.pump();
    }
    let taken = rig.guest.tx_completed() - 1;
    // Our buffer plus what the kernel's socket buffer took, and not one packet more.
    assert!(taken >= (BUF_ALLOC / MAX_PAYLOAD) as usize, "took {taken}");
    assert!(taken < 30, "took all {taken}: not throttled");
    assert!(
        rig.guest
            .received()
            .iter()
            .all(|(h, _)| h.op == op::CREDIT_UPDATE),
        "no RST: it is throttled, not killed"
    );
    // The host reads: the guest's packets flow again and arrive intact.
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < data.len() {
        assert!(Instant::now() < deadline, "stalled at {}", got.len());
        if queued < packets && rig.guest.tx_completed() + 20 > queued {
            let chunk = &data[queued * MAX_PAYLOAD as usize..][..MAX_PAYLOAD as usize];
            rig.guest.send(guest_header(op::RW, 6000, 7000), chunk);
            queued += 1;
        }
        got.extend_from_slice(&read_available(&mut host).0);
        rig.pump();
    }
    assert!(got == data, "bytes differ");
    assert_eq!(rig.guest.tx_completed(), packets + 1);
}

#[test]
fn many_concurrent_streams_stay_separate() {
    let mut rig = Rig::new();
    let mut streams = Vec::new();
    for i in 0..24u32 {
        let (host, port) = rig.open_from_host(100 + i);
        streams.push((host, port, 100 + i));
    }
    let ports: std::collections::HashSet<u32> = streams.iter().map(|s| s.1).collect();
    assert_eq!(ports.len(), 24, "distinct host ports");
    rig.guest.give_rx(60);
    for (i, (host, port, guest_port)) in streams.iter_mut().enumerate() {
        host.write_all(&pattern(3000, i as u8)).unwrap();
        rig.guest.send(
            guest_header(op::RW, *guest_port, *port),
            &pattern(5000, 0x80 | i as u8),
        );
    }
    let mut per_stream: std::collections::HashMap<u32, Vec<u8>> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while per_stream.values().map(Vec::len).sum::<usize>() < 24 * 3000 {
        assert!(Instant::now() < deadline);
        rig.pump();
        let packets = rig.guest.received();
        rig.guest.give_rx(packets.len());
        for (header, payload) in packets {
            assert_eq!(header.op, op::RW);
            per_stream
                .entry(header.dst_port)
                .or_default()
                .extend_from_slice(&payload);
        }
    }
    for (i, (host, _, guest_port)) in streams.iter_mut().enumerate() {
        assert!(per_stream[guest_port] == pattern(3000, i as u8));
        assert_eq!(read_available(host).0, pattern(5000, 0x80 | i as u8));
    }
}

#[test]
fn without_receive_buffers_work_waits_and_resets_stay_bounded() {
    let mut rig = Rig::new();
    let mut host = rig.host_connect();
    host.write_all(b"CONNECT 52\n").unwrap();
    // 600 stray packets while the guest gives no receive buffers.
    for batch in 0..6 {
        for i in 0..30 {
            rig.guest
                .send(guest_header(op::RW, batch * 100 + i, 1), &[]);
        }
        rig.pump();
        for i in 30..100 {
            rig.guest
                .send(guest_header(op::RW, batch * 100 + i, 1), &[]);
            if i % 30 == 0 {
                rig.pump();
            }
        }
        rig.pump();
    }
    assert_eq!(rig.guest.tx_completed(), 600);
    assert!(rig.guest.received().is_empty());
    let mut resets = 0;
    let mut requests = 0;
    for _ in 0..40 {
        rig.guest.top_up_rx(30);
        rig.pump();
        for (header, _) in rig.guest.received() {
            match header.op {
                op::RST => resets += 1,
                op::REQUEST => requests += 1,
                other => panic!("op {other}"),
            }
        }
    }
    assert_eq!(resets, 512, "bounded backlog of RSTs");
    assert_eq!(
        requests, 1,
        "the waiting REQUEST went out once buffers came"
    );
}

#[test]
fn connections_beyond_the_cap_are_closed() {
    let mut rig = Rig::new();
    let mut streams = Vec::new();
    for i in 0..MAX_CONNECTIONS {
        streams.push(rig.host_connect());
        if i % 32 == 0 {
            rig.pump();
        }
    }
    rig.pump();
    assert_eq!(rig.worker_streams(), MAX_CONNECTIONS);
    let mut extra = rig.host_connect();
    rig.pump();
    assert_eq!(read_available(&mut extra), (Vec::new(), true));
    // A guest REQUEST is refused too.
    let mut port_path = rig.uds().as_os_str().to_owned();
    port_path.push("_80");
    let _listener = UnixListener::bind(&port_path).unwrap();
    rig.guest.give_rx(2);
    rig.guest.send(guest_header(op::REQUEST, 1, 80), &[]);
    rig.pump();
    assert_eq!(rig.guest.received()[0].0.op, op::RST);
    // Closing one makes room.
    drop(streams.pop());
    rig.pump();
    assert_eq!(rig.worker_streams(), MAX_CONNECTIONS - 1);
    let (mut host, port) = rig.open_from_host(52);
    rig.guest.send(guest_header(op::RW, 52, port), b"room");
    rig.pump();
    assert_eq!(read_available(&mut host).0, b"room");
}

#[test]
fn an_unanswered_request_times_out() {
    let mut rig = Rig::new();
    let mut host = rig.host_connect();
    host.write_all(b"CONNECT 52\n").unwrap();
    rig.guest.give_rx(4);
    rig.pump();
    let request = rig.guest.received()[0].0;
    let start = Instant::now();
    while start.elapsed() < CONNECT_TIMEOUT + Duration::from_millis(300) {
        rig.worker.step(Some(Duration::from_millis(50)));
    }
    let packets = rig.guest.received();
    assert_eq!(packets.len(), 1);
    assert_eq!(
        (
            packets[0].0.op,
            packets[0].0.src_port,
            packets[0].0.dst_port
        ),
        (op::RST, request.src_port, 52)
    );
    assert_eq!(read_available(&mut host), (Vec::new(), true));
}

#[test]
fn activation_runs_a_worker_thread_that_reset_stops() {
    let dir = TempDir::new();
    let config = VsockConfig {
        guest_cid: GUEST_CID,
        uds_path: dir.0.join("vm.sock"),
        host_ports: Vec::new(),
    };
    let mut device = Vsock::new(&config).unwrap();
    let mem = GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let mut rx = FakeQueue::new(0, 0x10_0000, 0x1000);
    let tx = FakeQueue::new(0x4000, 0x20_0000, 0x1_0000);
    let event = FakeQueue::new(0x8000, 0x1000_0000, 0);
    let rx_notify = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let active = |q: &FakeQueue, fd: &EventFd| ActiveQueue {
        queue: q.queue(),
        notify: fd.try_clone().unwrap(),
    };
    let other = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let interrupt = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
    // Two queues are not enough.
    assert!(matches!(
        device.activate(
            mem.clone(),
            VIRTIO_F_VERSION_1,
            vec![active(&rx, &rx_notify), active(&tx, &other)],
            interrupt.clone(),
        ),
        Err(ActivateError::QueueMissing(2))
    ));
    device
        .activate(
            mem.clone(),
            VIRTIO_F_VERSION_1,
            vec![
                active(&rx, &rx_notify),
                active(&tx, &other),
                active(&event, &other),
            ],
            interrupt,
        )
        .unwrap();
    rx.add(&mem, &[(HEADER_LEN as u32, true, &[]), (4096, true, &[])]);
    rx_notify.write(1).unwrap();
    let mut host = UnixStream::connect(&config.uds_path).unwrap();
    host.write_all(b"CONNECT 52\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let used = loop {
        let used = rx.take_used(&mem);
        if !used.is_empty() {
            break used;
        }
        assert!(
            Instant::now() < deadline,
            "no REQUEST from the worker thread"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut raw = [0u8; HEADER_LEN];
    mem.read_slice(&mut raw, GuestAddress(rx.buffer(used[0].0)))
        .unwrap();
    assert_eq!(Header::decode(&raw).op, op::REQUEST);
    device.reset();
    // The worker is gone, and the connection with it.
    let mut buf = [0u8; 8];
    assert_eq!(host.read(&mut buf).unwrap(), 0);
    // The socket survives a reset: a new activation serves it again.
    assert!(config.uds_path.exists());
}

#[test]
fn an_unknown_operation_on_a_live_connection_resets_it() {
    let mut rig = Rig::new();
    let (mut host, port) = rig.open_from_host(52);
    rig.guest.send(guest_header(0, 52, port), &[]);
    rig.guest.top_up_rx(4);
    rig.pump();
    let packets = rig.guest.received();
    assert_eq!(packets.len(), 1);
    assert_eq!((packets[0].0.op, packets[0].0.src_port), (op::RST, port));
    assert_eq!(read_available(&mut host), (Vec::new(), true));
    // Unknown operations on no connection are refused the same way.
    rig.guest.send(guest_header(0xffff, 52, port), &[]);
    rig.pump();
    assert_eq!(rig.guest.received()[0].0.op, op::RST);
}

#[test]
fn a_connect_line_in_pieces_is_read_whole() {
    let mut rig = Rig::new();
    let mut host = rig.host_connect();
    rig.guest.top_up_rx(8);
    host.write_all(b"CONN").unwrap();
    rig.pump();
    assert!(rig.guest.received().is_empty(), "half a line is no request");
    host.write_all(b"ECT 5").unwrap();
    rig.pump();
    host.write_all(b"2\n").unwrap();
    rig.pump();
    let packets = rig.guest.received();
    assert_eq!(packets.len(), 1);
    assert_eq!((packets[0].0.op, packets[0].0.dst_port), (op::REQUEST, 52));
}

#[test]
fn host_bytes_sent_right_after_the_connect_line_arrive_after_the_handshake() {
    let mut rig = Rig::new();
    let mut host = rig.host_connect();
    host.write_all(b"CONNECT 52\nearly bytes").unwrap();
    rig.guest.top_up_rx(8);
    rig.pump();
    let request = rig.guest.received()[0].0;
    assert_eq!(request.op, op::REQUEST);
    rig.guest
        .send(guest_header(op::RESPONSE, 52, request.src_port), &[]);
    rig.pump();
    let packets = rig.guest.received();
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].0.op, op::RW);
    assert_eq!(packets[0].1, b"early bytes");
    assert_eq!(
        read_available(&mut host).0,
        format!("OK {}\n", request.src_port).as_bytes()
    );
}
