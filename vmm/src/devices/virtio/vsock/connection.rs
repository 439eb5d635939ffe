//! One vsock stream between a guest socket and a host unix stream: its state machine and its
//! credit accounting (virtio spec 5.10.6.3), without sockets or guest memory of its own, so it
//! can be tested with an in-memory stream.
//!
//! Flow control, both ways, is what keeps the VMM's memory bounded:
//! - guest -> host: we advertise `BUF_ALLOC` bytes of buffer. Bytes the guest sent (`rx_cnt`)
//!   minus bytes written into the unix stream (`fwd_cnt`) is what we hold, so an honest guest can
//!   never make us hold more than `BUF_ALLOC`. A guest that ignores its credit is throttled by
//!   the muxer (see [`Connection::would_block`]), not buffered.
//! - host -> guest: we read from the unix stream only as much as the guest has room for
//!   (`peer_buf_alloc - (tx_cnt - peer_fwd_cnt)`), straight into a receive buffer; nothing is
//!   buffered on our side, and a host that writes faster than the guest reads fills its own
//!   socket buffer and blocks.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};

use super::packet::{op, Header, HOST_CID, MAX_PAYLOAD, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};

/// Receive buffer we advertise per connection: the most guest data we hold for a unix stream
/// that does not read fast enough.
pub const BUF_ALLOC: u32 = 256 * 1024;

/// Tell the guest about freed buffer space once its view of our free space falls below half
/// the buffer: a guest that streams while the host keeps up then never runs dry, for one
/// small packet per half buffer.
const CREDIT_UPDATE_THRESHOLD: u32 = BUF_ALLOC / 2;

/// An emptied buffer toward the host keeps at most this much capacity, so that idle
/// connections do not pin memory from an earlier burst.
const IDLE_BUFFER_CAPACITY: usize = 16 * 1024;

/// The host side of a connection: a non-blocking byte stream.
pub trait HostStream: Read + Write {
    /// Half-closes the stream: the host reads EOF after what was written.
    fn shutdown_write(&mut self) -> io::Result<()>;
}

/// Where the connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Host-initiated: the REQUEST is (to be) sent and the guest's RESPONSE has not come yet.
    Connecting,
    /// Data may flow (for a guest-initiated connection, once our RESPONSE is out).
    Established,
}

/// What the muxer must do after the guest sent a packet for this connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing: the connection lives on.
    Keep,
    /// Send the guest RST and close the unix stream (a protocol error or a dead host side).
    Reset,
    /// Close the unix stream without telling the guest (it sent RST itself).
    Close,
}

/// What [`Connection::next_rx`] produced for one receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxItem {
    /// A packet: its header and how many payload bytes were put at the start of the buffer.
    Packet(Header, usize),
    /// Nothing to send right now.
    Nothing,
    /// The unix stream failed: reset the connection.
    Reset,
}

/// One stream between guest port `peer_port` and host port `local_port`.
pub struct Connection<S> {
    stream: S,
    guest_cid: u64,
    local_port: u32,
    peer_port: u32,
    phase: Phase,

    // Control packets owed to the guest.
    send_request: bool,
    send_response: bool,
    send_shutdown: u32,
    send_credit_update: bool,

    // Host -> guest.
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    tx_cnt: u32,
    /// epoll said readable and no read has hit EAGAIN since.
    host_readable: bool,
    host_eof: bool,
    /// Both directions of the unix stream are shut (EPOLLHUP): nothing more can be written.
    host_hung_up: bool,
    guest_rcv_shut: bool,

    // Guest -> host.
    /// "OK <port>\n", written to the unix stream before any data.
    reply_line: Vec<u8>,
    to_host: VecDeque<u8>,
    rx_cnt: u32,
    fwd_cnt: u32,
    advertised_fwd_cnt: u32,
    guest_send_shut: bool,
    host_write_shut: bool,
}

impl<S: HostStream> Connection<S> {
    fn new(stream: S, guest_cid: u64, local_port: u32, peer_port: u32, phase: Phase) -> Self {
        Connection {
            stream,
            guest_cid,
            local_port,
            peer_port,
            phase,
            send_request: false,
            send_response: false,
            send_shutdown: 0,
            send_credit_update: false,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            host_readable: false,
            host_eof: false,
            host_hung_up: false,
            guest_rcv_shut: false,
            reply_line: Vec::new(),
            to_host: VecDeque::new(),
            rx_cnt: 0,
            fwd_cnt: 0,
            advertised_fwd_cnt: 0,
            guest_send_shut: false,
            host_write_shut: false,
        }
    }

    /// A host process asked (`CONNECT <peer_port>`) to reach guest port `peer_port`; we will
    /// send the REQUEST from host port `local_port`.
    pub fn host_initiated(stream: S, guest_cid: u64, local_port: u32, peer_port: u32) -> Self {
        let mut conn = Connection::new(stream, guest_cid, local_port, peer_port, Phase::Connecting);
        conn.send_request = true;
        conn
    }

    /// The guest's `request` reached a host listener through `stream`; we owe it a RESPONSE.
    pub fn guest_initiated(stream: S, guest_cid: u64, request: &Header) -> Self {
        let mut conn = Connection::new(
            stream,
            guest_cid,
            request.dst_port,
            request.src_port,
            Phase::Established,
        );
        conn.send_response = true;
        conn.peer_buf_alloc = request.buf_alloc;
        conn.peer_fwd_cnt = request.fwd_cnt;
        conn
    }

    /// The unix stream (for epoll registration).
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Our (host) port.
    pub fn local_port(&self) -> u32 {
        self.local_port
    }

    /// The guest's port.
    pub fn peer_port(&self) -> u32 {
        self.peer_port
    }

    /// Where the connection is in its life.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// How many more bytes the guest can take right now.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        // A guest claiming to have consumed more than we sent makes in_flight wrap to a huge
        // value: that is credit 0, which only stalls its own connection.
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Free space in our buffer toward the host.
    fn free_space(&self) -> usize {
        (BUF_ALLOC as usize).saturating_sub(self.to_host.len())
    }

    /// True when `header` is payload the guest sent beyond the credit we gave it: taking it
    /// would grow our buffer past `BUF_ALLOC`, so the muxer leaves it in the queue until the
    /// unix stream drains.
    pub fn would_block(&self, header: &Header) -> bool {
        header.op == op::RW
            && self.phase == Phase::Established
            && !self.guest_send_shut
            && header.len as usize > self.free_space()
    }

    /// Handles a packet from the guest (addresses already matched) and its payload.
    pub fn handle_guest(&mut self, header: &Header, payload: &[u8]) -> Verdict {
        // Every packet carries the sender's buffer state (spec 5.10.6.3).
        self.peer_buf_alloc = header.buf_alloc;
        self.peer_fwd_cnt = header.fwd_cnt;
        match (header.op, self.phase) {
            (op::RST, _) => Verdict::Close,
            (op::RESPONSE, Phase::Connecting) => {
                self.phase = Phase::Established;
                self.reply_line = format!("OK {}\n", self.local_port).into_bytes();
                self.settle_toward_host()
            }
            (op::CREDIT_UPDATE, _) => Verdict::Keep,
            (op::CREDIT_REQUEST, _) => {
                self.send_credit_update = true;
                Verdict::Keep
            }
            (op::SHUTDOWN, Phase::Established) => {
                self.guest_rcv_shut |= header.flags & SHUTDOWN_RCV != 0;
                self.guest_send_shut |= header.flags & SHUTDOWN_SEND != 0;
                self.settle_toward_host()
            }
            (op::RW, Phase::Established) => {
                if self.guest_send_shut || payload.len() > self.free_space() {
                    // Data after its own SHUTDOWN, or beyond the credit we gave.
                    return Verdict::Reset;
                }
                // Grow by doubling but never past BUF_ALLOC (plain doubling could reach twice
                // that); the free-space check above keeps `needed` within it.
                let needed = self.to_host.len() + payload.len();
                if needed > self.to_host.capacity() {
                    let target = needed
                        .max(self.to_host.capacity() * 2)
                        .min(BUF_ALLOC as usize);
                    self.to_host.reserve_exact(target - self.to_host.len());
                }
                self.to_host.extend(payload);
                self.rx_cnt = self.rx_cnt.wrapping_add(payload.len() as u32);
                self.settle_toward_host()
            }
            // A second REQUEST, a RESPONSE we did not ask for, anything before the RESPONSE,
            // or an unknown operation.
            _ => Verdict::Reset,
        }
    }

    /// Writes what we can toward the host and decides whether the connection is over.
    fn settle_toward_host(&mut self) -> Verdict {
        if self.flush_to_host().is_err() {
            return Verdict::Reset;
        }
        if self.finished() {
            // The guest closed both directions and everything it sent reached the host: Linux
            // waits for our RST to finish its close.
            return Verdict::Reset;
        }
        Verdict::Keep
    }

    /// The guest is done in both directions and nothing is left to deliver to the host.
    pub fn finished(&self) -> bool {
        self.guest_send_shut
            && self.guest_rcv_shut
            && self.to_host.is_empty()
            && self.reply_line.is_empty()
    }

    /// Writes buffered guest data into the unix stream until it would block.
    fn flush_to_host(&mut self) -> io::Result<()> {
        while !self.reply_line.is_empty() {
            match self.stream.write(&self.reply_line) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => drop(self.reply_line.drain(..n)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        while !self.to_host.is_empty() {
            let (front, _) = self.to_host.as_slices();
            match self.stream.write(front) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    drop(self.to_host.drain(..n));
                    // n <= front.len() <= BUF_ALLOC, so it fits in u32.
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.to_host.is_empty() {
            if self.to_host.capacity() > IDLE_BUFFER_CAPACITY {
                self.to_host = VecDeque::new();
            }
            if self.guest_send_shut && !self.host_write_shut {
                self.host_write_shut = true;
                self.stream.shutdown_write()?;
            }
        }
        let guest_view_of_free =
            BUF_ALLOC.saturating_sub(self.rx_cnt.wrapping_sub(self.advertised_fwd_cnt));
        if self.fwd_cnt != self.advertised_fwd_cnt && guest_view_of_free < CREDIT_UPDATE_THRESHOLD {
            self.send_credit_update = true;
        }
        Ok(())
    }

    /// epoll reported the unix stream: readable, writable, hung up (both directions shut) or in
    /// error. Returns what the muxer must do.
    pub fn on_host_event(&mut self, readable: bool, writable: bool, hung_up: bool) -> Verdict {
        if hung_up {
            // Reads still return what is left, then EOF or the error.
            self.host_hung_up = true;
            self.host_readable = true;
        }
        if readable {
            self.host_readable = true;
        }
        if writable || hung_up {
            return self.settle_toward_host();
        }
        Verdict::Keep
    }

    /// Whether we can move host data into the guest now (apart from needing a buffer).
    fn can_read_host(&self) -> bool {
        self.phase == Phase::Established
            && !self.send_response
            && self.host_readable
            && !self.host_eof
            && !self.guest_rcv_shut
            && self.peer_credit() > 0
    }

    /// Something is waiting to go to the guest.
    pub fn has_rx_work(&self) -> bool {
        self.send_request
            || self.send_response
            || self.send_shutdown != 0
            || self.send_credit_update
            || self.can_read_host()
    }

    /// Interest in EPOLLIN: we could send host data to the guest but do not know whether
    /// there is any.
    pub fn wants_readable(&self) -> bool {
        self.phase == Phase::Established
            && !self.host_hung_up
            && !self.host_readable
            && !self.host_eof
            && !self.guest_rcv_shut
            && self.peer_credit() > 0
    }

    /// Interest in EPOLLOUT: guest data (or the OK line) waits for room in the unix stream.
    pub fn wants_writable(&self) -> bool {
        !self.host_hung_up && (!self.reply_line.is_empty() || !self.to_host.is_empty())
    }

    /// The epoll registration must go: EPOLLHUP would be reported forever.
    pub fn hung_up(&self) -> bool {
        self.host_hung_up
    }

    /// A header from us to the guest; it carries our current buffer state, so sending any
    /// packet is also a credit update.
    fn header(&mut self, op: u16) -> Header {
        self.advertised_fwd_cnt = self.fwd_cnt;
        self.send_credit_update = false;
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt,
        }
    }

    /// The next packet for the guest, with its payload (if any) read from the unix stream into
    /// the start of `buf`, whose length is the room the receive buffer has for payload.
    pub fn next_rx(&mut self, buf: &mut [u8]) -> RxItem {
        if self.send_request {
            self.send_request = false;
            return RxItem::Packet(self.header(op::REQUEST), 0);
        }
        if self.send_response {
            self.send_response = false;
            return RxItem::Packet(self.header(op::RESPONSE), 0);
        }
        if self.can_read_host() && !buf.is_empty() {
            let max = buf
                .len()
                .min(self.peer_credit() as usize)
                .min(MAX_PAYLOAD as usize);
            match self.stream.read(&mut buf[..max]) {
                Ok(0) => {
                    self.host_eof = true;
                    self.send_shutdown |= SHUTDOWN_SEND;
                    if self.host_hung_up {
                        self.send_shutdown |= SHUTDOWN_RCV;
                    }
                }
                Ok(n) => {
                    // n <= MAX_PAYLOAD.
                    self.tx_cnt = self.tx_cnt.wrapping_add(n as u32);
                    return RxItem::Packet(self.header(op::RW), n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.host_readable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return RxItem::Reset,
            }
        }
        if self.send_shutdown != 0 {
            let mut header = self.header(op::SHUTDOWN);
            header.flags = std::mem::take(&mut self.send_shutdown);
            return RxItem::Packet(header, 0);
        }
        if self.send_credit_update {
            return RxItem::Packet(self.header(op::CREDIT_UPDATE), 0);
        }
        RxItem::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory stand-in for a non-blocking unix stream.
    #[derive(Default)]
    struct FakeStream {
        /// What the host wrote, for us to read.
        incoming: VecDeque<u8>,
        host_closed_write: bool,
        /// What we wrote to the host.
        written: Vec<u8>,
        /// How many more bytes the host's socket buffer takes.
        room: usize,
        broken: bool,
        write_shut: bool,
    }

    impl Read for FakeStream {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.incoming.is_empty() {
                if self.host_closed_write {
                    return Ok(0);
                }
                return Err(ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.incoming.len());
            for (slot, byte) in buf.iter_mut().zip(self.incoming.drain(..n)) {
                *slot = byte;
            }
            Ok(n)
        }
    }

    impl Write for FakeStream {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.broken {
                return Err(ErrorKind::BrokenPipe.into());
            }
            if self.room == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.written.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl HostStream for FakeStream {
        fn shutdown_write(&mut self) -> io::Result<()> {
            self.write_shut = true;
            Ok(())
        }
    }

    const GUEST_CID: u64 = 3;

    fn from_guest(op: u16, len: u32, buf_alloc: u32, fwd_cnt: u32) -> Header {
        Header {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port: 5000,
            dst_port: 52,
            len,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc,
            fwd_cnt,
        }
    }

    fn established(room: usize) -> Connection<FakeStream> {
        let stream = FakeStream {
            room,
            ..Default::default()
        };
        let mut conn =
            Connection::guest_initiated(stream, GUEST_CID, &from_guest(op::REQUEST, 0, 4096, 0));
        let mut buf = [0u8; 16];
        match conn.next_rx(&mut buf) {
            RxItem::Packet(h, 0) => assert_eq!(h.op, op::RESPONSE),
            other => panic!("{other:?}"),
        }
        conn
    }

    #[test]
    fn host_initiated_handshake() {
        let mut conn = Connection::host_initiated(
            FakeStream {
                room: 100,
                ..Default::default()
            },
            GUEST_CID,
            1 << 30,
            52,
        );
        assert_eq!(conn.phase(), Phase::Connecting);
        let mut buf = [0u8; 64];
        let RxItem::Packet(request, 0) = conn.next_rx(&mut buf) else {
            panic!("no request");
        };
        assert_eq!(
            (
                request.op,
                request.src_port,
                request.dst_port,
                request.dst_cid
            ),
            (op::REQUEST, 1 << 30, 52, GUEST_CID)
        );
        assert_eq!(request.buf_alloc, BUF_ALLOC);
        assert_eq!(conn.next_rx(&mut buf), RxItem::Nothing);
        // Data before the RESPONSE is a protocol error.
        assert_eq!(
            conn.handle_guest(&from_guest(op::RW, 1, 4096, 0), b"x"),
            Verdict::Reset
        );
        let verdict = conn.handle_guest(&from_guest(op::RESPONSE, 0, 4096, 0), &[]);
        assert_eq!(verdict, Verdict::Keep);
        assert_eq!(conn.phase(), Phase::Established);
        assert_eq!(
            conn.stream().written,
            format!("OK {}\n", 1 << 30).as_bytes()
        );
        // A second RESPONSE is a protocol error.
        assert_eq!(
            conn.handle_guest(&from_guest(op::RESPONSE, 0, 4096, 0), &[]),
            Verdict::Reset
        );
    }

    #[test]
    fn host_data_never_exceeds_the_guests_credit() {
        let mut conn = established(0);
        conn.stream
            .incoming
            .extend(std::iter::repeat_n(7u8, 10_000));
        assert!(!conn.has_rx_work(), "nothing known to be readable yet");
        assert!(conn.wants_readable());
        conn.on_host_event(true, false, false);
        let mut buf = vec![0u8; 3000];
        let mut sent = 0;
        while let RxItem::Packet(h, n) = conn.next_rx(&mut buf) {
            assert_eq!((h.op, h.len as usize), (op::RW, 0));
            assert!(n <= 3000);
            sent += n;
        }
        // The guest advertised 4096 bytes and consumed none.
        assert_eq!(sent, 4096);
        assert_eq!(conn.peer_credit(), 0);
        assert!(!conn.has_rx_work() && !conn.wants_readable());
        // It consumes 1000: exactly 1000 more may go.
        conn.handle_guest(&from_guest(op::CREDIT_UPDATE, 0, 4096, 1000), &[]);
        assert!(conn.has_rx_work());
        let RxItem::Packet(_, n) = conn.next_rx(&mut buf) else {
            panic!("no data");
        };
        assert_eq!(n, 1000);
        // A bogus fwd_cnt ahead of what we sent gives no credit at all.
        conn.handle_guest(&from_guest(op::CREDIT_UPDATE, 0, 4096, 99_999), &[]);
        assert_eq!(conn.peer_credit(), 0);
    }

    #[test]
    fn guest_data_is_forwarded_and_credit_returned() {
        let mut conn = established(usize::MAX);
        let payload = vec![1u8; MAX_PAYLOAD as usize];
        for _ in 0..3 {
            let h = from_guest(op::RW, MAX_PAYLOAD, 4096, 0);
            assert!(!conn.would_block(&h));
            assert_eq!(conn.handle_guest(&h, &payload), Verdict::Keep);
        }
        assert_eq!(conn.stream().written.len(), 3 * MAX_PAYLOAD as usize);
        // The guest thinks 192 KiB of our 256 KiB are in use: it must hear about the space.
        assert!(conn.has_rx_work());
        let mut buf = [0u8; 16];
        let RxItem::Packet(update, 0) = conn.next_rx(&mut buf) else {
            panic!("no credit update");
        };
        assert_eq!(update.op, op::CREDIT_UPDATE);
        assert_eq!(update.fwd_cnt, 3 * MAX_PAYLOAD);
        assert_eq!(update.buf_alloc, BUF_ALLOC);
        assert!(!conn.has_rx_work());
        // A CREDIT_REQUEST is always answered.
        conn.handle_guest(&from_guest(op::CREDIT_REQUEST, 0, 4096, 0), &[]);
        assert!(matches!(
            conn.next_rx(&mut buf),
            RxItem::Packet(
                Header {
                    op: op::CREDIT_UPDATE,
                    ..
                },
                0
            )
        ));
    }

    #[test]
    fn a_slow_host_fills_the_buffer_then_blocks_the_guest() {
        let mut conn = established(1000);
        let payload = vec![2u8; MAX_PAYLOAD as usize];
        let h = from_guest(op::RW, MAX_PAYLOAD, 4096, 0);
        for _ in 0..4 {
            assert!(!conn.would_block(&h));
            assert_eq!(conn.handle_guest(&h, &payload), Verdict::Keep);
        }
        // 1000 bytes went out, the rest waits: another full packet would pass BUF_ALLOC.
        assert_eq!(conn.to_host.len(), 4 * MAX_PAYLOAD as usize - 1000);
        assert!(conn.would_block(&h));
        assert!(conn.wants_writable());
        assert!(conn.to_host.capacity() <= BUF_ALLOC as usize);
        // Sent anyway (the muxer never does this): refused with a reset.
        assert_eq!(conn.handle_guest(&h, &payload), Verdict::Reset);
        // The host drains: the space returns.
        conn.stream.room = usize::MAX;
        assert_eq!(conn.on_host_event(false, true, false), Verdict::Keep);
        assert!(conn.to_host.is_empty() && !conn.wants_writable());
        assert!(!conn.would_block(&h));
        assert!(conn.to_host.capacity() <= IDLE_BUFFER_CAPACITY);
    }

    #[test]
    fn host_eof_becomes_a_shutdown_after_the_data() {
        let mut conn = established(0);
        conn.stream.incoming.extend(b"last words");
        conn.stream.host_closed_write = true;
        conn.on_host_event(true, false, false);
        let mut buf = [0u8; 64];
        let RxItem::Packet(h, n) = conn.next_rx(&mut buf) else {
            panic!("no data");
        };
        assert_eq!((h.op, &buf[..n]), (op::RW, &b"last words"[..]));
        let RxItem::Packet(h, 0) = conn.next_rx(&mut buf) else {
            panic!("no shutdown");
        };
        assert_eq!((h.op, h.flags), (op::SHUTDOWN, SHUTDOWN_SEND));
        assert_eq!(conn.next_rx(&mut buf), RxItem::Nothing);
        assert!(!conn.wants_readable(), "EOF is not polled again");
    }

    #[test]
    fn a_hung_up_host_gets_both_flags() {
        let mut conn = established(0);
        conn.stream.host_closed_write = true;
        assert_eq!(conn.on_host_event(true, false, true), Verdict::Keep);
        assert!(conn.hung_up() && !conn.wants_readable());
        let mut buf = [0u8; 64];
        let RxItem::Packet(h, 0) = conn.next_rx(&mut buf) else {
            panic!("no shutdown");
        };
        assert_eq!(h.flags, SHUTDOWN_SEND | SHUTDOWN_RCV);
    }

    #[test]
    fn guest_shutdown_half_closes_then_finishes() {
        let mut conn = established(0);
        let mut shutdown = from_guest(op::SHUTDOWN, 0, 4096, 0);
        assert_eq!(
            conn.handle_guest(&from_guest(op::RW, 3, 4096, 0), b"abc"),
            Verdict::Keep
        );
        shutdown.flags = SHUTDOWN_SEND;
        assert_eq!(conn.handle_guest(&shutdown, &[]), Verdict::Keep);
        // Not yet: "abc" is still buffered.
        assert!(!conn.stream().write_shut);
        // Data after its own SHUTDOWN is an error.
        assert_eq!(
            conn.handle_guest(&from_guest(op::RW, 1, 4096, 0), b"x"),
            Verdict::Reset
        );
        conn.stream.room = 10;
        conn.on_host_event(false, true, false);
        assert_eq!(conn.stream().written, b"abc");
        assert!(conn.stream().write_shut, "host reads EOF after the data");
        shutdown.flags = SHUTDOWN_RCV;
        assert_eq!(conn.handle_guest(&shutdown, &[]), Verdict::Reset);
        assert!(conn.finished());
    }

    #[test]
    fn rst_closes_and_unknown_operations_reset() {
        let mut conn = established(0);
        assert_eq!(
            conn.handle_guest(&from_guest(op::RST, 0, 0, 0), &[]),
            Verdict::Close
        );
        let mut conn = established(0);
        assert_eq!(
            conn.handle_guest(&from_guest(99, 0, 0, 0), &[]),
            Verdict::Reset
        );
        let mut conn = established(0);
        assert_eq!(
            conn.handle_guest(&from_guest(op::REQUEST, 0, 0, 0), &[]),
            Verdict::Reset
        );
    }

    #[test]
    fn a_broken_host_stream_resets() {
        let mut conn = established(0);
        conn.stream.broken = true;
        assert_eq!(
            conn.handle_guest(&from_guest(op::RW, 1, 4096, 0), b"x"),
            Verdict::Reset
        );
    }
}
