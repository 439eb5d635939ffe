//! The three things `rkt-vsock-probe` does, over any `Listener`/`Connection`:
//! - `listen`: accept N connections, each in its own thread; read each to EOF, reply with the
//!   `bytes=<n> sha256=<hex>` line, close.
//! - `send`: K concurrent streams, each carrying its pattern (see `pattern`), then read the
//!   reply and check it matches what was sent.
//! - `echo`: accept forever, echo every byte back.

use std::io::{self, Read};
use std::thread;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::pattern::pattern;
use crate::summary::{BadSummary, Summary, SummaryHasher};
use crate::transport::{Connection, Listener};

/// Transfer buffer size: large enough that the per-call costs vanish against the copying.
const CHUNK: usize = 64 * 1024;
/// A reply is one short line; a peer sending more is not a probe listener.
const MAX_REPLY: u64 = 4096;

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error(
        "accepting a connection failed: {0}; the listening socket is unusable, start the \
         probe again"
    )]
    Accept(io::Error),

    #[error(
        "{who}: {doing} failed: {source}; the peer closed the connection early or the \
         transport failed"
    )]
    Io {
        who: String,
        doing: &'static str,
        source: io::Error,
    },

    #[error(
        "stream {stream}: connecting failed: {source}; check that a listener runs at that \
         CID and port"
    )]
    Connect { stream: u32, source: io::Error },

    #[error(
        "stream {stream}: connecting failed: this machine has no vsock transport (ENODEV); in \
         a guest, give the VM a virtio-vsock device"
    )]
    NoTransport { stream: u32 },

    #[error(
        "stream {stream}: the reply is longer than {MAX_REPLY} bytes; the peer is not an \
         rkt-vsock-probe listener"
    )]
    ReplyTooLong { stream: u32 },

    #[error("stream {stream}: {source}")]
    BadReply { stream: u32, source: BadSummary },

    #[error(
        "stream {stream}: the listener received {received} but {sent} was sent; the transport \
         lost, reordered or corrupted data"
    )]
    Mismatch {
        stream: u32,
        sent: Summary,
        received: Summary,
    },

    #[error("a connection thread panicked; this is a bug in rkt-vsock-probe")]
    ThreadPanicked,
}

/// Reads `connection` to EOF, answers with the summary line and closes. Returns what it read.
pub fn serve_one(mut connection: impl Connection, index: usize) -> Result<Summary, ProbeError> {
    let who = || format!("connection {index}");
    let mut hasher = SummaryHasher::new();
    let mut buf = vec![0; CHUNK];
    loop {
        match connection.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(ProbeError::Io {
                    who: who(),
                    doing: "reading",
                    source,
                })
            }
        }
    }
    let summary = hasher.finish();
    connection
        .write_all(summary.reply_line().as_bytes())
        .map_err(|source| ProbeError::Io {
            who: who(),
            doing: "replying",
            source,
        })?;
    // Dropping the connection closes it; the peer reads EOF after the line.
    Ok(summary)
}

/// Accepts `count` connections and serves each in its own thread, all at once. `on_served` is
/// called (from the connection's thread) as each one finishes. Returns one result per
/// connection accepted, in accept order; an accept failure ends the accepting.
pub fn listen<L: Listener>(
    listener: &L,
    count: usize,
    on_served: impl Fn(usize, &Result<Summary, ProbeError>) + Sync,
) -> Vec<Result<Summary, ProbeError>> {
    thread::scope(|scope| {
        let mut workers = Vec::with_capacity(count);
        let mut accept_error = None;
        for index in 0..count {
            match listener.accept() {
                Ok(connection) => {
                    let on_served = &on_served;
                    workers.push(scope.spawn(move || {
                        let result = serve_one(connection, index);
                        on_served(index, &result);
                        result
                    }));
                }
                Err(error) => {
                    accept_error = Some(ProbeError::Accept(error));
                    break;
                }
            }
        }
        let mut results: Vec<_> = workers
            .into_iter()
            .map(|worker| worker.join().unwrap_or(Err(ProbeError::ThreadPanicked)))
            .collect();
        results.extend(accept_error.map(Err));
        results
    })
}

/// What one stream of `send` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOutcome {
    pub stream: u32,
    /// The listener's reply line, without its newline.
    pub reply: String,
    pub sent: Summary,
    /// From just before connecting until the reply's end: the time the transfer took,
    /// including the listener's checksum.
    pub elapsed: Duration,
}

/// Sends the pattern (seed, stream, bytes) on a fresh connection, half-closes, reads the reply
/// and checks it against what was sent.
pub fn send_one<C: Connection>(
    connect: impl FnOnce() -> io::Result<C>,
    seed: u64,
    stream: u32,
    bytes: u64,
) -> Result<SendOutcome, ProbeError> {
    let io_error = |doing| {
        move |source| ProbeError::Io {
            who: format!("stream {stream}"),
            doing,
            source,
        }
    };
    let started = Instant::now();
    let mut connection = connect().map_err(|source| match source.raw_os_error() {
        Some(libc::ENODEV) => ProbeError::NoTransport { stream },
        _ => ProbeError::Connect { stream, source },
    })?;
    let mut data = pattern(seed, stream, bytes);
    let mut hasher = SummaryHasher::new();
    let mut buf = vec![0; CHUNK];
    loop {
        let n = data.fill(&mut buf);
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        connection
            .write_all(&buf[..n])
            .map_err(io_error("sending"))?;
    }
    let sent = hasher.finish();
    connection
        .shutdown_write()
        .map_err(io_error("closing the sending side"))?;

    let mut reply = Vec::new();
    (&mut connection)
        .take(MAX_REPLY + 1)
        .read_to_end(&mut reply)
        .map_err(io_error("reading the reply"))?;
    let elapsed = started.elapsed();
    if reply.len() as u64 > MAX_REPLY {
        return Err(ProbeError::ReplyTooLong { stream });
    }
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let received: Summary = reply
        .parse()
        .map_err(|source| ProbeError::BadReply { stream, source })?;
    if received != sent {
        return Err(ProbeError::Mismatch {
            stream,
            sent,
            received,
        });
    }
    Ok(SendOutcome {
        stream,
        reply: reply.trim_end_matches('\n').to_owned(),
        sent,
        elapsed,
    })
}

/// `streams` concurrent `send_one`s, stream indices 0..streams. `on_done` is called from each
/// stream's thread as it finishes. Results come back in stream order.
pub fn send<C: Connection>(
    connect: impl Fn() -> io::Result<C> + Sync,
    seed: u64,
    streams: u32,
    bytes: u64,
    on_done: impl Fn(&Result<SendOutcome, ProbeError>) + Sync,
) -> Vec<Result<SendOutcome, ProbeError>> {
    thread::scope(|scope| {
        let workers: Vec<_> = (0..streams)
            .map(|stream| {
                let (connect, on_done) = (&connect, &on_done);
                scope.spawn(move || {
                    let result = send_one(connect, seed, stream, bytes);
                    on_done(&result);
                    result
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap_or(Err(ProbeError::ThreadPanicked)))
            .collect()
    })
}

/// Echoes everything it reads back, then closes. Returns the number of bytes echoed.
///
/// Nothing is buffered beyond one chunk: a peer that writes a lot must read at the same time,
/// or both ends block once the socket buffers are full.
pub fn echo_one(mut connection: impl Connection, index: usize) -> Result<u64, ProbeError> {
    let io_error = |doing| {
        move |source| ProbeError::Io {
            who: format!("connection {index}"),
            doing,
            source,
        }
    };
    let mut buf = vec![0; CHUNK];
    let mut total = 0;
    loop {
        let n = match connection.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(io_error("reading")(source)),
        };
        connection
            .write_all(&buf[..n])
            .map_err(io_error("echoing"))?;
        total += n as u64;
    }
    connection.shutdown_write().map_err(io_error("closing"))?;
    Ok(total)
}

/// Accepts connections until accepting fails, echoing each in its own thread. `on_done` is
/// called from each connection's thread as it ends.
pub fn echo<L: Listener>(
    listener: &L,
    on_done: impl Fn(usize, &Result<u64, ProbeError>) + Sync,
) -> ProbeError {
    thread::scope(|scope| {
        let mut index = 0usize;
        loop {
            match listener.accept() {
                Ok(connection) => {
                    let on_done = &on_done;
                    scope.spawn(move || on_done(index, &echo_one(connection, index)));
                }
                // Leaving the scope first waits for the connections still open.
                Err(error) => return ProbeError::Accept(error),
            }
            index = index.wrapping_add(1);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    struct Socket {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    fn socket() -> (Socket, UnixListener) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe.sock");
        let listener = UnixListener::bind(&path).unwrap();
        (Socket { _dir: dir, path }, listener)
    }

    fn connector(path: &Path) -> impl Fn() -> io::Result<UnixStream> + Sync + '_ {
        move || UnixStream::connect(path)
    }

    /// A listener that answers every connection with `reply` after reading to EOF.
    fn fake_listener(listener: UnixListener, reply: Vec<u8>) -> thread::JoinHandle<()> {
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            io::copy(&mut stream, &mut io::sink()).unwrap();
            let _ = stream.write_all(&reply);
        })
    }

    #[test]
    fn concurrent_streams_arrive_intact() {
        let (socket, listener) = socket();
        let bytes = 300_001;
        let served = Mutex::new(Vec::new());
        let (listened, sent) = thread::scope(|scope| {
            let listening = scope.spawn(|| {
                listen(&listener, 4, |index, result| {
                    served.lock().unwrap().push((index, result.is_ok()));
                })
            });
            let sent = send(connector(&socket.path), 77, 4, bytes, |_| {});
            (listening.join().unwrap(), sent)
        });

        let mut received: Vec<Summary> = listened.into_iter().map(Result::unwrap).collect();
        let sent: Vec<SendOutcome> = sent.into_iter().map(Result::unwrap).collect();
        let expected: Vec<Summary> = (0..4).map(|i| Summary::of_pattern(77, i, bytes)).collect();
        for (index, outcome) in sent.iter().enumerate() {
            assert_eq!(outcome.stream, index as u32);
            assert_eq!(outcome.sent, expected[index]);
            assert_eq!(outcome.reply, expected[index].to_string());
        }
        // The listener saw each stream once, in whatever order they connected.
        received.sort_by_key(|summary| summary.sha256);
        let mut expected_sorted = expected.clone();
        expected_sorted.sort_by_key(|summary| summary.sha256);
        assert_eq!(received, expected_sorted);
        assert_eq!(served.lock().unwrap().len(), 4);
    }

    #[test]
    fn empty_transfer() {
        let (socket, listener) = socket();
        let server = thread::spawn(move || listen(&listener, 1, |_, _| {}));
        let outcome = send_one(connector(&socket.path), 0, 0, 0).unwrap();
        assert_eq!(outcome.sent, Summary::of_bytes(b""));
        assert_eq!(server.join().unwrap().len(), 1);
    }

    #[test]
    fn a_reply_that_does_not_match_is_an_error() {
        let (socket, listener) = socket();
        let wrong = Summary::of_bytes(b"something else").reply_line();
        let server = fake_listener(listener, wrong.into_bytes());
        let error = send_one(connector(&socket.path), 1, 2, 1000).err();
        server.join().unwrap();
        let message = error.as_ref().map(ToString::to_string).unwrap_or_default();
        assert!(
            matches!(error, Some(ProbeError::Mismatch { stream: 2, .. })),
            "{message}"
        );
        assert!(message.contains("bytes=1000"), "{message}");
    }

    #[test]
    fn a_reply_in_another_format_is_an_error() {
        let (socket, listener) = socket();
        let server = fake_listener(listener, b"OK\n".to_vec());
        let error = send_one(connector(&socket.path), 1, 0, 10).err();
        server.join().unwrap();
        assert!(matches!(
            error,
            Some(ProbeError::BadReply { stream: 0, .. })
        ));
    }

    #[test]
    fn an_endless_reply_is_cut_off() {
        let (socket, listener) = socket();
        let server = fake_listener(listener, vec![b'x'; 1 << 20]);
        let error = send_one(connector(&socket.path), 1, 0, 10).err();
        assert!(matches!(
            error,
            Some(ProbeError::ReplyTooLong { stream: 0 })
        ));
        server.join().unwrap();
    }

    #[test]
    fn connect_failure_names_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.sock");
        let results = send(connector(&missing), 0, 2, 10, |_| {});
        assert_eq!(results.len(), 2);
        for (index, result) in results.iter().enumerate() {
            let message = result
                .as_ref()
                .err()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(
                message.starts_with(&format!("stream {index}: connecting failed")),
                "{message}"
            );
        }
    }

    #[test]
    fn a_missing_transport_gets_its_own_message() {
        let result = send_one(
            || Err::<UnixStream, _>(io::Error::from_raw_os_error(libc::ENODEV)),
            0,
            1,
            10,
        );
        let message = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.starts_with("stream 1: connecting failed"),
            "{message}"
        );
        assert!(message.contains("virtio-vsock device"), "{message}");
    }

    #[test]
    fn a_sender_that_leaves_before_the_reply_fails_that_connection_only() {
        let (socket, listener) = socket();
        let server = thread::spawn(move || listen(&listener, 1, |_, _| {}));
        let mut client = UnixStream::connect(&socket.path).unwrap();
        client.write_all(b"partial").unwrap();
        // Closed before the listener can reply: it reads EOF, then its reply hits EPIPE.
        drop(client);
        let results = server.join().unwrap();
        assert_eq!(results.len(), 1);
        let message = results[0].as_ref().err().map(ToString::to_string);
        let message = message.unwrap_or_default();
        assert!(
            message.starts_with("connection 0: replying failed"),
            "{message}"
        );
    }

    #[test]
    fn echo_returns_every_byte() {
        let (socket, listener) = socket();
        let done = std::sync::mpsc::channel();
        let sender = Mutex::new(done.0);
        // The echo server runs until the test process ends; its thread is detached.
        thread::spawn(move || {
            echo(&listener, |index, result| {
                let _ = sender
                    .lock()
                    .unwrap()
                    .send((index, result.as_ref().ok().copied()));
            })
        });
        for round in 0..2 {
            let mut client = UnixStream::connect(&socket.path).unwrap();
            let data: Vec<u8> = pattern(round, 0, 10_000).collect();
            client.write_all(&data).unwrap();
            client.shutdown_write().unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).unwrap();
            assert_eq!(back, data);
            let (index, echoed) = done.1.recv().unwrap();
            assert_eq!((index, echoed), (round as usize, Some(10_000)));
        }
    }
}
