//! The host side of the device: the VM's unix listener, the `CONNECT <port>` handshake, and
//! the table that routes each guest packet to its connection by (host port, guest port).
//!
//! It decides what goes to the guest next (one packet per receive buffer, round-robin over
//! the connections that have something, RSTs for strays first) and which unix streams epoll
//! watches, and for what: a stream is watched for reading only while the guest has credit and
//! we do not already know it is readable, and for writing only while guest data waits for it,
//! so a guest that stops reading or a host that stops writing never makes the worker spin.
//!
//! Everything here is bounded: at most `MAX_CONNECTIONS` streams (handshakes included), at most
//! `BUF_ALLOC` bytes held per connection, at most `MAX_PENDING_RESETS` RSTs waiting for
//! receive buffers, one 64 KiB scratch buffer.

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::connection::{Connection, Phase, RxItem, Verdict};
use super::host_socket::{HostSocket, PortSockets};
use super::packet::{op, Header, PacketError, TxPacket, HOST_CID, MAX_PAYLOAD, TYPE_STREAM};

/// Unix streams (handshaking or connected) per VM; more are refused.
pub const MAX_CONNECTIONS: usize = 256;
/// RSTs waiting for receive buffers; beyond this, a guest that sends stray packets without
/// giving us buffers loses the answers.
const MAX_PENDING_RESETS: usize = 512;
/// How long the guest has to answer a host-initiated REQUEST. Its kernel answers at once
/// (RESPONSE, or RST when nobody listens); this only ends connections to a guest that never
/// does, with room for a guest slowed down by emulation.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `CONNECT 4294967295` is 18 bytes; a longer line is not a CONNECT line.
const MAX_CONNECT_LINE: usize = 32;
/// Host ports for host-initiated connections come from here up (as in Firecracker's
/// convention, far from the ports guests listen on).
const FIRST_HOST_PORT: u32 = 1 << 30;
/// epoll tokens at and above this are unix streams (`TOKEN_STREAM_BASE + id`).
pub const TOKEN_STREAM_BASE: u64 = 16;

/// Identifies one accepted or connected unix stream for its whole life.
type StreamId = u64;

/// A host process that connected to the VM's socket and has not finished its CONNECT line.
struct Handshake {
    stream: HostSocket,
    line: Vec<u8>,
}

/// A connection plus what the muxer tracks about it.
struct Slot {
    conn: Connection<HostSocket>,
    /// Host-initiated connections must be answered by then.
    connect_deadline: Option<Instant>,
    /// Queued in `rx_ready`.
    queued: bool,
    /// What epoll watches now; None once the stream is taken out of epoll (hung up).
    interest: Option<EventSet>,
}

/// What became of a packet from the transmit queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxOutcome {
    /// Handled (or dropped); its buffer can be returned to the guest.
    Consumed,
    /// Its connection's buffer is full: leave it in the queue until the unix stream drains.
    Blocked,
}

/// The connections of one VM.
pub struct Muxer {
    guest_cid: u64,
    /// The only host sockets guest connections can reach.
    ports: Arc<PortSockets>,
    listener: Arc<UnixListener>,
    handshakes: HashMap<StreamId, Handshake>,
    slots: HashMap<StreamId, Slot>,
    /// (host port, guest port) -> stream.
    by_ports: HashMap<(u32, u32), StreamId>,
    /// Connections with something for the guest, in the order they get receive buffers.
    rx_ready: VecDeque<StreamId>,
    /// RSTs owed to the guest for packets that belong to no connection (or whose connection is
    /// gone).
    resets: VecDeque<Header>,
    next_id: StreamId,
    next_host_port: u32,
    scratch: Vec<u8>,
}

impl Muxer {
    /// A muxer for the guest `guest_cid`, accepting host connections on `listener`
    /// (non-blocking) and reaching host listeners of registered ports through `ports`.
    pub fn new(guest_cid: u64, listener: Arc<UnixListener>, ports: Arc<PortSockets>) -> Muxer {
        Muxer {
            guest_cid,
            ports,
            listener,
            handshakes: HashMap::new(),
            slots: HashMap::new(),
            by_ports: HashMap::new(),
            rx_ready: VecDeque::new(),
            resets: VecDeque::new(),
            next_id: 0,
            next_host_port: FIRST_HOST_PORT,
            scratch: Vec::new(),
        }
    }

    /// The listener, for epoll registration.
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// Number of unix streams open (handshakes included).
    pub fn stream_count(&self) -> usize {
        self.handshakes.len() + self.slots.len()
    }

    fn new_id(&mut self) -> StreamId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Accepts every pending host connection; each starts with its CONNECT line.
    pub fn accept(&mut self, poll: &Epoll) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue,
                // WouldBlock: all taken. Anything else (EMFILE, ENOMEM): try on the next event.
                Err(_) => return,
            };
            // Dropping the stream closes it: the host sees EOF at once instead of waiting.
            if self.stream_count() >= MAX_CONNECTIONS {
                continue;
            }
            let Ok(stream) = HostSocket::from_accepted(stream) else {
                continue;
            };
            let id = self.new_id();
            if register(poll, stream.as_raw_fd(), id, EventSet::IN).is_ok() {
                self.handshakes.insert(
                    id,
                    Handshake {
                        stream,
                        line: Vec::new(),
                    },
                );
            }
        }
    }

    /// epoll reported stream `id` with the raw epoll `events`.
    pub fn stream_event(&mut self, id: StreamId, events: u32, poll: &Epoll) {
        if self.handshakes.contains_key(&id) {
            self.read_connect_line(id);
            return;
        }
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let readable = events & libc::EPOLLIN as u32 != 0;
        let writable = events & libc::EPOLLOUT as u32 != 0;
        let hung_up = events & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
        let verdict = slot.conn.on_host_event(readable, writable, hung_up);
        if slot.conn.hung_up() && slot.interest.take().is_some() {
            // EPOLLHUP cannot be masked: it would wake us forever. What is left to read is
            // read when the guest has room, without epoll.
            let _ = poll.ctl(
                ControlOperation::Delete,
                slot.conn.stream().as_raw_fd(),
                EpollEvent::default(),
            );
        }
        self.apply(id, verdict);
    }

    /// Reads the CONNECT line and, once it is complete, turns the handshake into a
    /// host-initiated connection. What has arrived is peeked first and only the line's bytes
    /// are read, so no data after the newline is consumed (it belongs to the connection);
    /// a partial line is consumed too, so a level-triggered epoll does not wake again for it.
    fn read_connect_line(&mut self, id: StreamId) {
        let Some(handshake) = self.handshakes.get_mut(&id) else {
            return;
        };
        loop {
            let mut buf = [0u8; MAX_CONNECT_LINE + 1];
            let room = MAX_CONNECT_LINE + 1 - handshake.line.len();
            let peeked = match handshake.stream.peek(&mut buf[..room]) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            let newline = buf[..peeked].iter().position(|&b| b == b'\n');
            let take = newline.map_or(peeked, |at| at + 1);
            // EOF, an overlong line (no newline within MAX_CONNECT_LINE bytes), or a read
            // that does not return the bytes just peeked: close the stream.
            let line_too_long =
                newline.is_none() && handshake.line.len() + peeked > MAX_CONNECT_LINE;
            if peeked == 0
                || line_too_long
                || handshake.stream.read_exact(&mut buf[..take]).is_err()
            {
                self.handshakes.remove(&id);
                return;
            }
            match newline {
                Some(at) => {
                    handshake.line.extend_from_slice(&buf[..at]);
                    break;
                }
                None => handshake.line.extend_from_slice(&buf[..take]),
            }
        }
        let Some(handshake) = self.handshakes.remove(&id) else {
            return;
        };
        let Some(peer_port) = parse_connect_line(&handshake.line) else {
            return;
        };
        let local_port = self.allocate_host_port();
        let conn =
            Connection::host_initiated(handshake.stream, self.guest_cid, local_port, peer_port);
        self.by_ports.insert((local_port, peer_port), id);
        self.slots.insert(
            id,
            Slot {
                conn,
                connect_deadline: Some(Instant::now() + CONNECT_TIMEOUT),
                queued: false,
                interest: Some(EventSet::IN),
            },
        );
    }

    /// A host port no live connection uses.
    fn allocate_host_port(&mut self) -> u32 {
        loop {
            let port = self.next_host_port;
            self.next_host_port = port.checked_add(1).unwrap_or(FIRST_HOST_PORT);
            // At most MAX_CONNECTIONS ports are taken, so this ends quickly.
            if !self.by_ports.keys().any(|&(local, _)| local == port) {
                return port;
            }
        }
    }

    /// Handles one packet from the transmit queue.
    pub fn handle_guest_packet(&mut self, packet: &mut TxPacket, poll: &Epoll) -> TxOutcome {
        let header = packet.header;
        if header.src_cid != self.guest_cid {
            // Not from the guest as configured: nothing we could answer it with is meaningful.
            return TxOutcome::Consumed;
        }
        if header.dst_cid != HOST_CID || header.type_ != TYPE_STREAM {
            // Other CIDs are not reachable through us; seqpacket was not negotiated.
            self.refuse(&header);
            return TxOutcome::Consumed;
        }
        let Some(&id) = self.by_ports.get(&(header.dst_port, header.src_port)) else {
            if header.op == op::REQUEST {
                self.connect_to_host(&header, poll);
            } else {
                self.refuse(&header);
            }
            return TxOutcome::Consumed;
        };
        let Some(slot) = self.slots.get_mut(&id) else {
            return TxOutcome::Consumed;
        };
        if slot.conn.would_block(&header) {
            return TxOutcome::Blocked;
        }
        let verdict = match packet.read_payload(&mut self.scratch) {
            Ok(()) => slot.conn.handle_guest(&header, &self.scratch),
            Err(_) => Verdict::Reset,
        };
        self.apply(id, verdict);
        TxOutcome::Consumed
    }

    /// A transmit chain that is not a usable packet: if its header could be read, the
    /// connection it names is reset (a stream that lost data must not go on).
    pub fn handle_bad_packet(&mut self, error: &PacketError) {
        let Some(header) = error.header() else {
            return;
        };
        if header.src_cid != self.guest_cid {
            return;
        }
        match self.by_ports.get(&(header.dst_port, header.src_port)) {
            Some(&id) => self.apply(id, Verdict::Reset),
            None => self.refuse(header),
        }
    }

    /// The guest wants host port P: connect to `<uds_path>_P` if P is registered and that is
    /// a socket (never through a symlink); anything else is answered with RST.
    fn connect_to_host(&mut self, request: &Header, poll: &Epoll) {
        if self.stream_count() >= MAX_CONNECTIONS {
            self.refuse(request);
            return;
        }
        let stream = match self.ports.connect(request.dst_port) {
            Ok(stream) => stream,
            Err(_) => {
                self.refuse(request);
                return;
            }
        };
        let id = self.new_id();
        let conn = Connection::guest_initiated(stream, self.guest_cid, request);
        let interest = EventSet::empty();
        if register(poll, conn.stream().as_raw_fd(), id, interest).is_err() {
            self.refuse(request);
            return;
        }
        self.by_ports
            .insert((conn.local_port(), conn.peer_port()), id);
        self.slots.insert(
            id,
            Slot {
                conn,
                connect_deadline: None,
                queued: false,
                interest: Some(interest),
            },
        );
    }

    /// Queues an RST answering `header` (never one answering an RST).
    fn refuse(&mut self, header: &Header) {
        if header.op == op::RST || self.resets.len() >= MAX_PENDING_RESETS {
            return;
        }
        self.resets.push_back(Header {
            src_cid: header.dst_cid,
            dst_cid: header.src_cid,
            src_port: header.dst_port,
            dst_port: header.src_port,
            len: 0,
            type_: TYPE_STREAM,
            op: op::RST,
            flags: 0,
            buf_alloc: 0,
            fwd_cnt: 0,
        });
    }

    /// Carries out a connection's verdict.
    fn apply(&mut self, id: StreamId, verdict: Verdict) {
        match verdict {
            Verdict::Keep => {}
            Verdict::Close => {
                self.remove(id);
            }
            Verdict::Reset => {
                if let Some(rst) = self.remove(id) {
                    if self.resets.len() < MAX_PENDING_RESETS {
                        self.resets.push_back(rst);
                    }
                }
            }
        }
    }

    /// Forgets connection `id` and closes its unix stream (which also takes it out of epoll);
    /// returns the RST that would tell the guest.
    fn remove(&mut self, id: StreamId) -> Option<Header> {
        let slot = self.slots.remove(&id)?;
        let (local, peer) = (slot.conn.local_port(), slot.conn.peer_port());
        self.by_ports.remove(&(local, peer));
        Some(Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: local,
            dst_port: peer,
            len: 0,
            type_: TYPE_STREAM,
            op: op::RST,
            flags: 0,
            buf_alloc: 0,
            fwd_cnt: 0,
        })
    }

    /// Resets host-initiated connections the guest did not answer in time.
    pub fn expire(&mut self, now: Instant) {
        let late: Vec<StreamId> = self
            .slots
            .iter()
            .filter(|(_, slot)| {
                slot.conn.phase() == Phase::Connecting
                    && slot
                        .connect_deadline
                        .is_some_and(|deadline| deadline <= now)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            self.apply(id, Verdict::Reset);
        }
    }

    /// The earliest connect deadline, for the epoll timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .values()
            .filter(|slot| slot.conn.phase() == Phase::Connecting)
            .filter_map(|slot| slot.connect_deadline)
            .min()
    }

    /// Queues connections that have something for the guest and tells epoll what to watch.
    /// Called after every batch of events (it is linear in the number of connections, which
    /// is bounded).
    pub fn refresh(&mut self, poll: &Epoll) {
        for (&id, slot) in self.slots.iter_mut() {
            if !slot.queued && slot.conn.has_rx_work() {
                slot.queued = true;
                self.rx_ready.push_back(id);
            }
            let Some(current) = slot.interest else {
                continue;
            };
            let mut wanted = EventSet::empty();
            if slot.conn.wants_readable() {
                wanted |= EventSet::IN;
            }
            if slot.conn.wants_writable() {
                wanted |= EventSet::OUT;
            }
            if wanted != current {
                let event = EpollEvent::new(wanted, TOKEN_STREAM_BASE + id);
                let fd = slot.conn.stream().as_raw_fd();
                if poll.ctl(ControlOperation::Modify, fd, event).is_ok() {
                    slot.interest = Some(wanted);
                }
            }
        }
    }

    /// Something waits for a receive buffer.
    pub fn has_rx_work(&self) -> bool {
        !self.resets.is_empty() || !self.rx_ready.is_empty()
    }

    /// The next packet for the guest, given a receive buffer with room for `capacity` payload
    /// bytes: its header and payload. None when nothing is waiting (the buffer stays unused).
    pub fn next_rx_packet(&mut self, capacity: usize) -> Option<(Header, &[u8])> {
        if let Some(rst) = self.resets.pop_front() {
            return Some((rst, &[]));
        }
        let capacity = capacity.min(MAX_PAYLOAD as usize);
        if self.scratch.len() < capacity {
            self.scratch.resize(capacity, 0);
        }
        while let Some(id) = self.rx_ready.pop_front() {
            let Some(slot) = self.slots.get_mut(&id) else {
                continue;
            };
            slot.queued = false;
            match slot.conn.next_rx(&mut self.scratch[..capacity]) {
                RxItem::Packet(header, len) => {
                    if slot.conn.has_rx_work() {
                        slot.queued = true;
                        self.rx_ready.push_back(id);
                    }
                    return Some((header, &self.scratch[..len]));
                }
                RxItem::Nothing => {}
                RxItem::Reset => {
                    if let Some(rst) = self.remove(id) {
                        return Some((rst, &[]));
                    }
                }
            }
        }
        None
    }
}

/// Parses `CONNECT <port>` (decimal, no sign, no spaces around).
fn parse_connect_line(line: &[u8]) -> Option<u32> {
    let digits = line.strip_prefix(b"CONNECT ")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Adds `fd` to epoll as stream `id`.
fn register(poll: &Epoll, fd: i32, id: StreamId, interest: EventSet) -> io::Result<()> {
    poll.ctl(
        ControlOperation::Add,
        fd,
        EpollEvent::new(interest, TOKEN_STREAM_BASE + id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect_line(b"CONNECT 52"), Some(52));
        assert_eq!(parse_connect_line(b"CONNECT 4294967295"), Some(u32::MAX));
        for bad in [
            &b"CONNECT 4294967296"[..],
            b"CONNECT",
            b"CONNECT ",
            b"CONNECT +5",
            b"CONNECT 5 ",
            b"connect 5",
            b"CONNECT  5",
            b"CONNECT -1",
            b"",
        ] {
            assert_eq!(parse_connect_line(bad), None, "{bad:?}");
        }
    }
}
