//! rkt-vsock-probe: moves deterministic data over AF_VSOCK and checks it arrived intact.
//! Built static to run inside the guest; see the guest_tools library for the formats.
//!
//! Exit status: 0 when every connection succeeded, 1 when any failed (details on stderr, one
//! line each), 2 for usage errors.

use std::fmt::Display;
use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use guest_tools::probe::{self, ProbeError};
use guest_tools::size::parse_size;
use guest_tools::summary::{received_line, sent_line, stream_reply_line};
use guest_tools::vsock::{self, VsockListener, VsockStream};

#[derive(Debug, Parser)]
#[command(
    name = "rkt-vsock-probe",
    version,
    about = "Test and measure AF_VSOCK streams"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Accept N connections, all served at once: read each to EOF, reply
    /// `bytes=<n> sha256=<hex>`, close. Prints `listening PORT` once ready.
    Listen {
        port: u32,
        /// How many connections to accept before exiting.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
    },
    /// Open K streams at once to CID:PORT; send BYTES pattern bytes on each, then check the
    /// listener's reply. Prints `stream=<i> reply=<line>` and
    /// `sent bytes=<n> sha256=<hex> secs=<t>` per stream.
    Send {
        /// 2 is the host, seen from a guest; 1 is this machine (needs vsock_loopback).
        cid: u32,
        port: u32,
        /// Bytes per stream: a whole number, optionally with K, M or G (binary).
        #[arg(value_parser = parse_size)]
        bytes: u64,
        /// Seed of the pattern (each stream's pattern also depends on its index).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// How many streams to run concurrently.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        streams: u32,
    },
    /// Accept connections forever and echo every byte back. Prints `listening PORT` once
    /// ready and `echoed connection=<i> bytes=<n>` as each connection ends.
    Echo { port: u32 },
    /// Connect to CID:PORT and send standard input as it is (the hostile-guest tests forge
    /// protocol frames with it). Prints `connected` or why not, then `sent bytes=<n>`.
    Raw { cid: u32, port: u32 },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let failures = match cli.command {
        Command::Listen { port, count } => listen(port, count),
        Command::Send {
            cid,
            port,
            bytes,
            seed,
            streams,
        } => send(cid, port, bytes, seed, streams),
        Command::Echo { port } => echo(port),
        Command::Raw { cid, port } => raw(cid, port),
    };
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Returns the number of failed connections (1 if nothing could start).
fn listen(port: u32, count: u32) -> usize {
    let Some(listener) = bind(port) else {
        return 1;
    };
    let results = probe::listen(&listener, count as usize, |index, result| match result {
        Ok(summary) => print_lines(&[received_line(index, summary)]),
        Err(error) => print_error(error),
    });
    let mut failures = results.iter().filter(|result| result.is_err()).count();
    // An accept failure is reported here: it has no connection thread to report it.
    if let Some(Err(error @ ProbeError::Accept(_))) = results.last() {
        print_error(error);
    }
    if results.len() < count as usize {
        failures += count as usize - results.len();
    }
    failures
}

fn send(cid: u32, port: u32, bytes: u64, seed: u64, streams: u32) -> usize {
    let results = probe::send(
        || VsockStream::connect(cid, port),
        seed,
        streams,
        bytes,
        |result| match result {
            Ok(outcome) => print_lines(&[
                stream_reply_line(outcome.stream, &outcome.reply),
                sent_line(&outcome.sent, outcome.elapsed),
            ]),
            Err(error) => print_error(error),
        },
    );
    results.iter().filter(|result| result.is_err()).count()
}

fn raw(cid: u32, port: u32) -> usize {
    let mut stream = match VsockStream::connect(cid, port) {
        Ok(stream) => stream,
        Err(error) => {
            print_error(&format!("connect to {cid}:{port} failed: {error}"));
            return 1;
        }
    };
    print_lines(&["connected".to_string()]);
    match io::copy(&mut io::stdin().lock(), &mut stream) {
        Ok(bytes) => {
            print_lines(&[format!("sent bytes={bytes}")]);
            0
        }
        Err(error) => {
            print_error(&format!("sending to {cid}:{port} failed: {error}"));
            1
        }
    }
}

fn echo(port: u32) -> usize {
    let Some(listener) = bind(port) else {
        return 1;
    };
    let error = probe::echo(&listener, |index, result| match result {
        Ok(bytes) => print_lines(&[format!("echoed connection={index} bytes={bytes}")]),
        Err(error) => print_error(error),
    });
    print_error(&error);
    1
}

/// Binds and announces `listening PORT`, or reports why it could not.
fn bind(port: u32) -> Option<VsockListener> {
    match VsockListener::bind(port) {
        Ok(listener) => {
            print_lines(&[format!("listening {port}")]);
            if let Ok(None) = vsock::local_cid() {
                print_warning(
                    &"this machine has no vsock transport (its CID is unknown), so \
                     no connection can arrive; in a guest, give the VM a virtio-vsock device",
                );
            }
            Some(listener)
        }
        Err(error) => {
            print_error(&format_args!(
                "cannot listen on vsock port {port}: {error}; the kernel needs AF_VSOCK with a \
                 transport (in a guest: a virtio-vsock device and CONFIG_VIRTIO_VSOCKETS), and \
                 the port must be free"
            ));
            None
        }
    }
}

/// Writes the lines together and flushes, so a test waiting for them sees them at once and
/// lines of concurrent streams never interleave.
fn print_lines(lines: &[String]) {
    let mut out = io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}

fn print_error(error: &dyn Display) {
    let message = error.to_string().replace(['\r', '\n'], " ");
    let _ = writeln!(io::stderr().lock(), "rkt-vsock-probe: error: {message}");
}

fn print_warning(message: &dyn Display) {
    let _ = writeln!(io::stderr().lock(), "rkt-vsock-probe: warning: {message}");
}
