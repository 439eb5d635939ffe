//! The device against a real tap: each test makes a fresh network namespace (on its own
//! thread), creates a tap there with `ip tuntap add`, gives it 10.0.0.1/24, and plays the guest
//! driver with virtio-queue's MockSplitQueue over fake guest memory. The host kernel's network
//! stack is the other end, so frames really cross the tap in both directions. The tests run
//! as root (the project's test machines do); nothing leaves the namespaces they create.

use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use virtio_bindings::bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_HDR_F_NEEDS_CSUM,
};
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::worker::{Flow, Queues, Worker};
use super::*;

const TAP: &str = "rkttest0";
const GUEST_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
const HOST_IP: [u8; 4] = [10, 0, 0, 1];
const GUEST_IP: [u8; 4] = [10, 0, 0, 2];
const QSIZE: u16 = 64;
const MEM_SIZE: usize = 16 << 20;
const RX_RING: u64 = 0x0;
const TX_RING: u64 = 0x1_0000;
const RX_BUFFERS: u64 = 0x10_0000;
const TX_BUFFERS: u64 = 0x80_0000;
/// Room per receive chain: a header and a full-size Ethernet frame, as Linux posts without TSO.
const RX_SLOT: u64 = 0x1000;
const RX_LEN: u32 = (VNET_HEADER_LEN + 1514) as u32;
const STEP: Option<Duration> = Some(Duration::from_millis(200));

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `test` on a thread of its own in a fresh network namespace holding the tap `TAP`
/// (up, 10.0.0.1/24, IPv6 off so that the kernel sends nothing unasked).
fn in_namespace_with_tap(test: impl FnOnce() + Send + 'static) {
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's network namespace; no memory is passed.
        let ret = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            ret,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        // /proc/sys/net is the opening thread's namespace; commands forked from this thread
        // inherit it too.
        let _ = std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
        run(&["ip", "tuntap", "add", "dev", TAP, "mode", "tap"]);
        run(&["ip", "addr", "add", "10.0.0.1/24", "dev", TAP]);
        run(&["ip", "link", "set", TAP, "up"]);
        test();
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// The guest driver's side of both queues.
struct Guest<'a> {
    mem: &'a GuestMemory,
    rx: MockSplitQueue<'a, GuestMemory>,
    tx: MockSplitQueue<'a, GuestMemory>,
    rx_next_desc: u16,
    tx_next_desc: u16,
    rx_seen: u16,
    tx_seen: u16,
}

impl<'a> Guest<'a> {
    fn new(mem: &'a GuestMemory) -> Guest<'a> {
        Guest {
            mem,
            rx: MockSplitQueue::create(mem, GuestAddress(RX_RING), QSIZE),
            tx: MockSplitQueue::create(mem, GuestAddress(TX_RING), QSIZE),
            rx_next_desc: 0,
            tx_next_desc: 0,
            rx_seen: 0,
            tx_seen: 0,
        }
    }

    fn queues(&self) -> Queues {
        let active = |vq: &MockSplitQueue<'a, GuestMemory>| ActiveQueue {
            queue: vq.create_queue::<Queue>().unwrap(),
            notify: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        };
        Queues {
            rx: active(&self.rx),
            tx: active(&self.tx),
        }
    }

    /// Makes a chain of raw descriptors available on the receive queue (NEXT links added).
    fn add_rx_chain(&mut self, descs: &[(u64, u32, u32)]) -> u16 {
        let head = self.rx_next_desc;
        let raw = link(descs, head);
        self.rx.add_desc_chains(&raw, head).unwrap();
        self.rx_next_desc += descs.len() as u16;
        head
    }

    /// Offers `count` ordinary receive buffers (one descriptor of `RX_LEN` bytes each).
    fn give_rx(&mut self, count: u16, len: u32) -> Vec<u16> {
        (0..count)
            .map(|_| {
                let addr = RX_BUFFERS + u64::from(self.rx_next_desc) * RX_SLOT;
                self.add_rx_chain(&[(addr, len, VRING_DESC_F_WRITE)])
            })
            .collect()
    }

    /// Puts `frame` (header included) in guest memory and makes it available for transmit.
    fn send(&mut self, frame: &[u8]) -> u16 {
        let addr = TX_BUFFERS + u64::from(self.tx_next_desc) * 0x1000;
        self.mem.write_slice(frame, GuestAddress(addr)).unwrap();
        self.send_raw(&[(addr, frame.len() as u32, 0)])
    }

    fn send_raw(&mut self, descs: &[(u64, u32, u32)]) -> u16 {
        let head = self.tx_next_desc;
        let raw = link(descs, head);
        self.tx.add_desc_chains(&raw, head).unwrap();
        self.tx_next_desc += descs.len() as u16;
        head
    }

    fn used(vq: &MockSplitQueue<'a, GuestMemory>, seen: &mut u16) -> Vec<(u16, u32)> {
        let idx = vq.used().idx().load();
        let mut out = Vec::new();
        while *seen != idx {
            let elem = vq.used().ring().ref_at(usize::from(*seen)).unwrap().load();
            out.push((elem.id() as u16, elem.len()));
            *seen += 1;
        }
        out
    }

    fn take_rx_used(&mut self) -> Vec<(u16, u32)> {
        Guest::used(&self.rx, &mut self.rx_seen)
    }

    fn take_tx_used(&mut self) -> Vec<(u16, u32)> {
        Guest::used(&self.tx, &mut self.tx_seen)
    }

    /// The bytes the device wrote into the one-descriptor receive chain `head`.
    fn rx_frame(&self, head: u16, len: u32) -> Vec<u8> {
        let mut buf = vec![0u8; len as usize];
        let addr = RX_BUFFERS + u64::from(head) * RX_SLOT;
        self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }
}

/// Descriptors starting at table index `first`, each linked to the next.
fn link(descs: &[(u64, u32, u32)], first: u16) -> Vec<RawDescriptor> {
    descs
        .iter()
        .enumerate()
        .map(|(i, &(addr, len, flags))| {
            let last = i + 1 == descs.len();
            let flags = if last {
                flags
            } else {
                flags | VRING_DESC_F_NEXT
            };
            let next = if last { 0 } else { first + i as u16 + 1 };
            RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, next))
        })
        .collect()
}

fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

struct Device {
    worker: Worker,
    counters: Arc<NetCounters>,
    _stop: EventFd,
    /// The guest's receive-queue notifier (what a QueueNotify write signals).
    rx_notify: EventFd,
    /// The device's irqfd, as KVM would see it.
    irqfd: EventFd,
}

impl Device {
    /// How many interrupts were raised since the last call.
    fn interrupts(&self) -> u64 {
        self.irqfd.read().unwrap_or(0)
    }
}

/// Waits until the kernel sends on the tap: attaching gives it a carrier, but until the
/// link watcher (up to a second later) activates its queueing discipline, frames sent to it are
/// dropped.
fn wait_until_tap_sends() {
    wait_until_up(TAP);
}

/// Waits until `device`'s operational state is up (see `wait_until_tap_sends`).
fn wait_until_up(device: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "dev", device])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains(" state UP ") {
            return;
        }
        assert!(Instant::now() < deadline, "{device} never came up: {out:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A worker on `TAP` for the guest's queues with `features` negotiated (tap offloads set as
/// activation would).
fn device(guest: &Guest, features: u64) -> Device {
    let tap = Arc::new(Tap::open(TAP, VNET_HEADER_LEN).unwrap());
    let offloads = Offloads::from_features(features);
    tap.set_offloads(offloads.tun_flags()).unwrap();
    wait_until_tap_sends();
    let counters = Arc::new(NetCounters::default());
    let stop = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let irqfd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let irq = Arc::new(Interrupt::new(irqfd.try_clone().unwrap()));
    let mut queues = guest.queues();
    let event_idx = features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
    queues.rx.queue.set_event_idx(event_idx);
    queues.tx.queue.set_event_idx(event_idx);
    let rx_notify = queues.rx.notify.try_clone().unwrap();
    let worker = Worker::new(
        guest.mem.clone(),
        queues,
        irq,
        tap,
        offloads,
        counters.clone(),
        &stop,
    )
    .unwrap();
    Device {
        worker,
        counters,
        _stop: stop,
        rx_notify,
        irqfd,
    }
}

fn count(counter: &AtomicU64) -> u64 {
    NetCounters::get(counter)
}

/// A virtio-net header with nothing to offload, then an ARP request from the guest asking
/// for the host's address.
fn arp_request() -> Vec<u8> {
    arp_request_for(GUEST_IP, HOST_IP)
}

/// An ARP request from the guest (as `sender`) asking who has `target`.
fn arp_request_for(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HEADER_LEN];
    f.extend([0xff; 6]);
    f.extend(GUEST_MAC.0);
    f.extend([0x08, 0x06]);
    f.extend([0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend(GUEST_MAC.0);
    f.extend(sender);
    f.extend([0; 6]);
    f.extend(target);
    f
}

/// The Ethernet frame after the virtio-net header.
fn ethertype(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[VNET_HEADER_LEN + 12], frame[VNET_HEADER_LEN + 13]])
}

/// Steps the worker until the guest has a used receive buffer holding a frame of `ethertype`
/// (other frames are skipped); returns (head, frame).
fn receive(dev: &mut Device, guest: &mut Guest, wanted: u16) -> (u16, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        assert_eq!(dev.worker.step(STEP), Flow::Continue);
        let used = guest.take_rx_used();
        for (i, &(head, len)) in used.iter().enumerate() {
            let frame = guest.rx_frame(head, len);
            if frame.len() > VNET_HEADER_LEN + 14 && ethertype(&frame) == wanted {
                // Later frames of the same pass are left for the next call.
                guest.rx_seen -= (used.len() - i - 1) as u16;
                return (head, frame);
            }
        }
    }
    panic!(
        "no frame of type {wanted:#06x} reached the guest: {:?}",
        dev.counters
    );
}

/// The kernel learns the guest's address without ARP, so that UDP to it goes straight out.
fn add_guest_neighbour() {
    run(&[
        "ip",
        "neigh",
        "add",
        "10.0.0.2",
        "lladdr",
        &GUEST_MAC.to_string(),
        "dev",
        TAP,
    ]);
}

/// Sends a UDP datagram from the host side (10.0.0.1) to the guest (10.0.0.2:7777).
fn udp_to_guest(payload: &[u8]) {
    let socket = UdpSocket::bind("10.0.0.1:0").unwrap();
    socket.send_to(payload, "10.0.0.2:7777").unwrap();
}

/// The UDP payload of an IPv4 frame, after checking the IPv4 header checksum and the UDP
/// checksum (so that a checksum left to an offload the guest did not accept is caught).
fn checked_udp_payload(frame: &[u8]) -> Vec<u8> {
    let ip = &frame[VNET_HEADER_LEN + 14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    assert_eq!(ip[9], 17, "UDP");
    let sum16 = |data: &[u8], mut acc: u32| {
        for pair in data.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            acc += hi | pair.get(1).map_or(0, |lo| u32::from(*lo));
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc
    };
    assert_eq!(sum16(&ip[..ihl], 0), 0xffff, "IPv4 header checksum");
    let udp_len = usize::from(u16::from_be_bytes([ip[ihl + 4], ip[ihl + 5]]));
    let udp = &ip[ihl..ihl + udp_len];
    let mut pseudo = Vec::new();
    pseudo.extend(&ip[12..20]);
    pseudo.extend([0, 17]);
    pseudo.extend((udp_len as u16).to_be_bytes());
    assert_eq!(sum16(udp, sum16(&pseudo, 0)), 0xffff, "UDP checksum");
    udp[8..].to_vec()
}

#[test]
fn the_host_kernel_answers_the_guests_arp_request() {
    in_namespace_with_tap(|| {
        let mem = memory();
        let mut guest = Guest::new(&mem);
        let mut dev = device(&guest, 0);
        guest.give_rx(8, RX_LEN);
        let head = guest.send(&arp_request());
        let (_, reply) = receive(&mut dev, &mut guest, 0x0806);
        assert_eq!(guest.take_tx_used(), vec![(head, 0)]);
        let eth = &reply[VNET_HEADER_LEN..];
        assert_eq!(&eth[0..6], &GUEST_MAC.0, "sent to the guest");
        assert_eq!(&eth[20..22], &[0, 2], "an ARP reply");
        assert_eq!(&eth[28..32], &HOST_IP, "for the host's address");
        assert_eq!(&reply[..VNET_HEADER_LEN - 2], &[0; 10], "nothing offloaded");
        assert_eq!(&reply[10..12], &[1, 0], "num_buffers is 1");
        assert_eq!(count(&dev.counters.tx_frames), 1);
        assert!(count(&dev.counters.rx_frames) >= 1);
        assert!(dev.interrupts() >= 1, "the guest was interrupted");
    });
}

#[test]
fn host_datagrams_reach_the_guest_with_complete_checksums() {
    in_namespace_with_tap(|| {
        let mem = memory();
        let mut guest = Guest::new(&mem);
        let mut dev = device(&guest, 0);
        add_guest_neighbour();
        guest.give_rx(4, RX_LEN);
        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        udp_to_guest(&payload);
        let (_, frame) = receive(&mut dev, &mut guest, 0x0800);
        assert_eq!(
            frame[0], 0,
            "no offload flags for a driver without GUEST_CSUM"
        );
        assert_eq!(checked_udp_payload(&frame), payload);
    });
}

#[test]
fn with_guest_checksum_offload_the_header_says_what_is_left_to_do() {
    in_namespace_with_tap(|| {
        let mem = memory();
        let mut guest = Guest::new(&mem);
        let features = VIRTIO_F_VERSION_1 | 1 << VIRTIO_NET_F_GUEST_CSUM;
        let mut dev = device(&guest, features);
        add_guest_neighbour();
        guest.give_rx(4, RX_LEN);
        udp_to_guest(b"partial");
        let (_, frame) = receive(&mut dev, &mut guest, 0x0800);
        let flags = u32::from(frame[0]);
        assert_eq!(frame[1], 0, "no segmentation for a small datagram");
        if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
            // csum_start and csum_offset point at the UDP checksum field.
            let start = u16::from_le_bytes([frame[6], frame[7]]);
            let offset = u16::from_le_bytes([frame[8], frame[9]]);
            assert_eq!((start, offset), (14 + 20, 6));
        } else {
            assert_eq!(checked_udp_payload(&frame), b"partial");
        }
    });
}

#[test]
fn without_receive_buffers_the_worker_sleeps_until_the_guest_refills() {
    in_namespace_with_tap(|| {
        let mem = memory();
        let mut guest = Guest::new(&mem);
        let mut dev = device(&guest, 0);
        add_guest_neighbour();
        udp_to_guest(b"first");
        udp_to_guest(b"second");
        // The first frame is read and waits; the tap is no longer watched, so the next step
        // sleeps its whole timeout instead of spinning.
        dev.worker.step(STEP);
        let deadline = Instant::now() + Duration::from_secs(5);
        while count(&dev.counters.rx_waits_for_buffers) == 0 && Instant::now() < deadline {
            dev.worker.step(STEP);
        }
        assert_eq!(count(&dev.counters.rx_waits_for_buffers), 1);
        let started = Instant::now();
        for _ in 0..3 {
            dev.worker.step(Some(Duration::from_millis(100)));
        }
        assert!(
            started.elapsed() >= Duration::from_millis(290),
            "the worker spun"
        );
        assert_eq!(count(&dev.counters.rx_waits_for_buffers), 1);
        assert_eq!(count(&dev.counters.rx_dropped_frames), 0);
        // The refill notifies the receive queue, and both frames arrive in order, unharmed.
        guest.give_rx(4, RX_LEN);
        dev.rx_notify.write(1).unwrap();
        let (_, first) = receive(&mut dev, &mut guest, 0x0800);
        assert_eq!(checked_udp_payload(&first), b"first");
        let (_, second) = receive(&mut dev, &mut guest, 0x0800);
        assert_eq!(checked_udp_payload(&second), b"second");
        assert_eq!(count(&dev.counters.rx_dropped_frames), 0);
    });
}

#[test]
fn bad_receive_chains_are_returned_empty_and_oversized_frames_dropped() {
    in_namespace_with_tap(|| {
        let mem = memory();
        let mut guest = Guest::new(&mem);
        let mut dev = device(&guest, 0);
        add_guest_neighbour();
        // A device-readable buffer, one outside guest memory, then one too small for the
        // first datagram but large enough for the second.
        let readable = guest.add_rx_chain(&[(RX_BUFFERS, 2048, 0)]);
        let outside = guest.add_rx_chain(&[(MEM_SIZE as u64, 2048, VRING_DESC_F_WRITE)]);
        let small = guest.give_rx(1, 100)[0];
        udp_to_guest(&[0xab; 500]);
        udp_to_guest(b"0123456789");
        let mut used = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !used.iter().any(|&(head, _)| head == small) {
            assert!(Instant::now() < deadline, "nothing delivered: {used:?}");
            dev.worker.step(STEP);
            used.extend(guest.take_rx_used());
        }
        assert_eq!(
            used[..2],
            [(readable, 0), (outside, 0)],
            "bad chains returned empty"
        );
        let (_, len) = used[2];
        let frame = guest.rx_frame(small, len);
        assert_eq!(checked_udp_payload(&frame), b"0123456789");
        assert_eq!(count(&dev.counters.rx_bad_chains), 2);
        assert_eq!(count(&dev.counters.rx_dropped_frames), 1);
        assert_eq!(count(&dev.counters.rx_frames), 1);
    });
}

#[test]
fn malformed_transmit_chains_are_dropped_and_counted_and_the_device_goes_on() {
    in_namespace_with_tap(|| {
        let mem = memory();
        let mut guest = Guest::new(&mem);
        let mut dev = device(&guest, 0);
        guest.give_rx(8, RX_LEN);
        let good = arp_request();
        // Too short for headers; a writable descriptor in a transmit chain; outside guest
        // memory; longer than any frame; checksum offload that was not negotiated.
        guest.send(&good[..VNET_HEADER_LEN + 10]);
        guest.send_raw(&[
            (TX_BUFFERS, good.len() as u32, 0),
            (TX_BUFFERS + 0x1000, 64, VRING_DESC_F_WRITE),
        ]);
        guest.send_raw(&[(MEM_SIZE as u64 - 16, 64, 0)]);
        guest.send_raw(&[(TX_BUFFERS, 0x2_0000, 0)]);
        let mut csum = good.clone();
        csum[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
        guest.send(&csum);
        for _ in 0..2 {
            dev.worker.step(Some(Duration::from_millis(50)));
        }
        let used = guest.take_tx_used();
        assert_eq!(used.len(), 5, "every chain is returned");
        assert!(used.iter().all(|&(_, len)| len == 0));
        assert_eq!(count(&dev.counters.tx_bad_chains), 2);
        assert_eq!(count(&dev.counters.tx_dropped_frames), 3);
        assert_eq!(count(&dev.counters.tx_frames), 0);
        // A good frame still goes through.
        guest.send(&good);
        let (_, reply) = receive(&mut dev, &mut guest, 0x0806);
        assert_eq!(&reply[VNET_HEADER_LEN + 28..VNET_HEADER_LEN + 32], &HOST_IP);
        assert_eq!(count(&dev.counters.tx_frames), 1);
    });
}

#[test]
fn a_deleted_tap_is_counted_and_not_spun_on() {
    in_namespace_with_tap(|| {
        let mem = memory();
        let mut guest = Guest::new(&mem);
        let mut dev = device(&guest, 0);
        guest.give_rx(2, RX_LEN);
        run(&["ip", "link", "del", TAP]);
        dev.worker.step(Some(Duration::from_millis(100)));
        assert!(count(&dev.counters.rx_tap_errors) >= 1);
        let started = Instant::now();
        for _ in 0..3 {
            dev.worker.step(Some(Duration::from_millis(100)));
        }
        assert!(
            started.elapsed() >= Duration::from_millis(290),
            "the worker spun"
        );
        // Guest frames are still consumed (and counted), so the guest never stalls.
        guest.send(&arp_request());
        dev.worker.step(Some(Duration::from_millis(100)));
        assert_eq!(guest.take_tx_used().len(), 1);
        assert_eq!(count(&dev.counters.tx_tap_errors), 1);
    });
}

#[test]
fn the_device_attaches_activates_and_resets() {
    in_namespace_with_tap(|| {
        let missing = Net::new(&NetConfig::new("rkt-missing0"));
        assert!(matches!(missing, Err(NetError::Tap(TapError::NotFound(_)))));
        let config = NetConfig {
            tap_name: TAP.to_string(),
            mac: GUEST_MAC,
        };
        // The guest is told the tap's MTU as it was when the device was created.
        run(&["ip", "link", "set", TAP, "mtu", "9000"]);
        let jumbo = Net::new(&config).unwrap();
        let mut mtu = [0u8; 2];
        jumbo.read_config(10, &mut mtu);
        assert_eq!(u16::from_le_bytes(mtu), 9000);
        drop(jumbo);
        run(&["ip", "link", "set", TAP, "mtu", "1500"]);
        let mut net = Net::new(&config).unwrap();
        wait_until_tap_sends();
        // A second attachment to the same tap is refused while the first holds it.
        assert!(matches!(
            Net::new(&config),
            Err(NetError::Tap(TapError::Busy(_)))
        ));
        assert_eq!(net.device_type(), 1);
        assert_eq!(net.features() & OFFERED_FEATURES, OFFERED_FEATURES);
        assert_eq!(net.queue_max_sizes().len(), 2);
        let mut space = [0xffu8; 14];
        net.read_config(0, &mut space);
        assert_eq!(
            space,
            [0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0, 0, 0, 0, 0xdc, 0x05, 0, 0],
            "MAC, status, queue pairs, MTU 1500"
        );
        let mut tail = [0xffu8; 2];
        net.read_config(4, &mut tail);
        assert_eq!(tail, [0x34, 0x56]);
        net.read_config(u64::MAX, &mut tail);
        assert_eq!(tail, [0, 0]);

        let mem = memory();
        let mut guest = Guest::new(&mem);
        let queues = guest.queues();
        let rx_notify = queues.rx.notify.try_clone().unwrap();
        let tx_notify = queues.tx.notify.try_clone().unwrap();
        let irqfd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let irq = Arc::new(Interrupt::new(irqfd.try_clone().unwrap()));
        let features = VIRTIO_F_VERSION_1 | 1 << VIRTIO_NET_F_MAC;
        net.activate(mem.clone(), features, vec![queues.rx, queues.tx], irq)
            .unwrap();
        guest.give_rx(8, RX_LEN);
        rx_notify.write(1).unwrap();
        guest.send(&arp_request());
        tx_notify.write(1).unwrap();
        let counters = net.counters();
        let deadline = Instant::now() + Duration::from_secs(5);
        let reply = loop {
            assert!(
                Instant::now() < deadline,
                "no ARP reply through the running device"
            );
            let got = guest
                .take_rx_used()
                .into_iter()
                .map(|(head, len)| guest.rx_frame(head, len))
                .find(|frame| ethertype(frame) == 0x0806);
            if let Some(frame) = got {
                break frame;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(&reply[VNET_HEADER_LEN..VNET_HEADER_LEN + 6], &GUEST_MAC.0);
        assert!(
            irqfd.read().unwrap() >= 1,
            "the worker raised the interrupt"
        );
        assert_eq!(count(&counters.tx_frames), 1);
        // Reset joins the worker; the tap stays attached for the next activation.
        net.reset();
        assert!(matches!(
            Net::new(&config),
            Err(NetError::Tap(TapError::Busy(_)))
        ));
        drop(net);
        // Dropped: the tap is free again.
        drop(Net::new(&config).unwrap());
    });
}

#[test]
fn with_event_idx_the_driver_is_asked_to_notify_and_interrupted_only_when_it_wants() {
    in_namespace_with_tap(|| {
        let mem = memory();
        let mut guest = Guest::new(&mem);
        let mut dev = device(&guest, VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_EVENT_IDX);
        // used_event sits after the avail ring, avail_event after the used ring.
        let used_event = guest.tx.avail_addr().0 + 4 + 2 * u64::from(QSIZE);
        let avail_event = guest.tx.used_addr().0 + 4 + 8 * u64::from(QSIZE);
        mem.write_obj(5u16, GuestAddress(used_event)).unwrap();
        for _ in 0..2 {
            guest.send(&arp_request());
        }
        dev.worker.step(Some(Duration::from_millis(50)));
        assert_eq!(guest.take_tx_used().len(), 2);
        assert_eq!(dev.interrupts(), 0, "used_event 5 not reached yet");
        let asked: u16 = mem.read_obj(GuestAddress(avail_event)).unwrap();
        assert_eq!(asked, 2, "the driver is asked to notify the third chain");
        // The driver now wants to hear about the next used chain.
        mem.write_obj(2u16, GuestAddress(used_event)).unwrap();
        guest.send(&arp_request());
        dev.worker.step(Some(Duration::from_millis(50)));
        assert_eq!(guest.take_tx_used().len(), 1);
        assert_eq!(dev.interrupts(), 1);
    });
}

/// A named network namespace, deleted on drop.
struct PeerNamespace(String);

impl PeerNamespace {
    fn new() -> PeerNamespace {
        let name = format!("rkt-net-unit-{}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        PeerNamespace(name)
    }
}

impl Drop for PeerNamespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The pod wiring of issue 7 in miniature: the tap joined to a veth (the CNI interface) by tc
/// mirred redirects in both directions, the veth's peer holding the address the guest talks to.
/// Nothing but the redirects connects the tap to the peer.
#[test]
fn tc_mirred_redirects_join_the_tap_to_a_veth() {
    in_namespace_with_tap(|| {
        // The peer lives in a namespace of its own, as the CNI host side does, so that only
        // the redirects can carry frames between it and the tap.
        let peer_ns = PeerNamespace::new();
        let peer = peer_ns.0.as_str();
        run(&["ip", "addr", "flush", "dev", TAP]);
        run(&[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        ]);
        run(&["ip", "link", "set", "peer0", "netns", peer]);
        run(&[
            "ip",
            "-n",
            peer,
            "addr",
            "add",
            "10.0.3.1/24",
            "dev",
            "peer0",
        ]);
        run(&["ip", "-n", peer, "link", "set", "peer0", "up"]);
        run(&["ip", "link", "set", "eth0", "up"]);
        for (from, to) in [("eth0", TAP), (TAP, "eth0")] {
            run(&["tc", "qdisc", "add", "dev", from, "ingress"]);
            run(&[
                "tc", "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32",
                "match", "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
            ]);
        }
        let mem = memory();
        let mut guest = Guest::new(&mem);
        let mut dev = device(&guest, 0);
        wait_until_up("eth0");
        guest.give_rx(8, RX_LEN);
        guest.send(&arp_request_for([10, 0, 3, 2], [10, 0, 3, 1]));
        let (_, reply) = receive(&mut dev, &mut guest, 0x0806);
        let eth = &reply[VNET_HEADER_LEN..];
        assert_eq!(&eth[0..6], &GUEST_MAC.0);
        assert_eq!(&eth[20..22], &[0, 2], "an ARP reply");
        assert_eq!(&eth[28..32], &[10, 0, 3, 1], "from the veth peer");
    });
}

#[test]
fn with_mergeable_buffers_a_frame_spans_consecutive_chains() {
    in_namespace_with_tap(|| {
        let mem = memory();
        let mut guest = Guest::new(&mem);
        let mut dev = device(&guest, VIRTIO_F_VERSION_1 | 1 << VIRTIO_NET_F_MRG_RXBUF);
        add_guest_neighbour();
        // 254 bytes with the header: three 100-byte buffers. Two are not enough: the frame
        // waits, and nothing is used.
        let first_two = guest.give_rx(2, 100);
        let payload: Vec<u8> = (0..200u8).collect();
        udp_to_guest(&payload);
        let deadline = Instant::now() + Duration::from_secs(5);
        while count(&dev.counters.rx_waits_for_buffers) == 0 {
            assert!(Instant::now() < deadline, "the frame never waited");
            dev.worker.step(STEP);
        }
        assert!(guest.take_rx_used().is_empty());
        // The refill: a device-readable chain (returned empty, ahead of the frame), then room.
        let readable = guest.add_rx_chain(&[(RX_BUFFERS + 0x8_0000, 100, 0)]);
        let more = guest.give_rx(2, 100);
        dev.rx_notify.write(1).unwrap();
        let mut used = Vec::new();
        while used.len() < 4 {
            assert!(Instant::now() < deadline, "not delivered: {used:?}");
            dev.worker.step(STEP);
            used.extend(guest.take_rx_used());
        }
        let frame_heads = [first_two[0], first_two[1], more[0]];
        assert_eq!(
            used,
            vec![
                (readable, 0),
                (frame_heads[0], 100),
                (frame_heads[1], 100),
                (frame_heads[2], 54)
            ]
        );
        let mut frame = Vec::new();
        for (head, len) in &used[1..] {
            frame.extend(guest.rx_frame(*head, *len));
        }
        assert_eq!(&frame[10..12], &[3, 0], "num_buffers");
        assert_eq!(checked_udp_payload(&frame), payload);
        assert_eq!(count(&dev.counters.rx_frames), 1);
        assert_eq!(count(&dev.counters.rx_bad_chains), 1);
    });
}
