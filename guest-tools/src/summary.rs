//! What both ends say about a transfer: its length and SHA-256, as `bytes=<n> sha256=<hex>`
//! (the listener's reply line, and the core of the sender's report).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::pattern::pattern;

/// A transfer's length and checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub bytes: u64,
    pub sha256: [u8; 32],
}

impl Summary {
    /// The summary of the pattern `send` transmits for (seed, stream, len): what a host-side
    /// listener should receive and what a host-side sender should send.
    pub fn of_pattern(seed: u64, stream: u32, len: u64) -> Summary {
        let mut pattern = pattern(seed, stream, len);
        let mut hasher = SummaryHasher::new();
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = pattern.fill(&mut buf);
            if n == 0 {
                break hasher.finish();
            }
            hasher.update(&buf[..n]);
        }
    }

    pub fn of_bytes(data: &[u8]) -> Summary {
        let mut hasher = SummaryHasher::new();
        hasher.update(data);
        hasher.finish()
    }

    pub fn sha256_hex(&self) -> String {
        self.sha256
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// The listener's reply: the summary and a newline.
    pub fn reply_line(&self) -> String {
        format!("{self}\n")
    }
}

/// `bytes=<n> sha256=<64 lowercase hex digits>`
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bytes={} sha256={}", self.bytes, self.sha256_hex())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{line:?} is not `bytes=<n> sha256=<64 hex digits>`; the peer does not speak the \
     rkt-vsock-probe reply format"
)]
pub struct BadSummary {
    pub line: String,
}

/// Parses `bytes=<n> sha256=<hex>`, with or without the trailing newline.
impl FromStr for Summary {
    type Err = BadSummary;

    fn from_str(line: &str) -> Result<Summary, BadSummary> {
        let bad = || BadSummary {
            line: line.to_owned(),
        };
        let trimmed = line.strip_suffix('\n').unwrap_or(line);
        let (bytes, sha256) = trimmed.split_once(' ').ok_or_else(bad)?;
        let bytes = bytes.strip_prefix("bytes=").ok_or_else(bad)?;
        let sha256 = sha256.strip_prefix("sha256=").ok_or_else(bad)?;
        if !bytes.bytes().all(|b| b.is_ascii_digit()) || sha256.len() != 64 {
            return Err(bad());
        }
        let bytes = bytes.parse().map_err(|_| bad())?;
        let mut digest = [0u8; 32];
        for (byte, pair) in digest.iter_mut().zip(sha256.as_bytes().chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            if !pair.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Summary {
            bytes,
            sha256: digest,
        })
    }
}

/// Counts and hashes bytes as they pass.
#[derive(Debug, Clone, Default)]
pub struct SummaryHasher {
    bytes: u64,
    hasher: Sha256,
}

impl SummaryHasher {
    pub fn new() -> SummaryHasher {
        SummaryHasher::default()
    }

    pub fn update(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        self.hasher.update(data);
    }

    pub fn finish(self) -> Summary {
        Summary {
            bytes: self.bytes,
            sha256: self.hasher.finalize().into(),
        }
    }
}

/// The sender's line for the listener's reply on stream `stream`: `stream=<i> reply=<line>`.
pub fn stream_reply_line(stream: u32, reply: &str) -> String {
    format!("stream={stream} reply={}", reply.trim_end_matches('\n'))
}

/// The sender's own report for one stream: `sent bytes=<n> sha256=<hex> secs=<elapsed>`, the
/// time in seconds with microsecond resolution.
pub fn sent_line(sent: &Summary, elapsed: Duration) -> String {
    format!("sent {sent} secs={:.6}", elapsed.as_secs_f64())
}

/// The listener's line for connection `index` (in accept order):
/// `received connection=<i> bytes=<n> sha256=<hex>`.
pub fn received_line(index: usize, received: &Summary) -> String {
    format!("received connection={index} {received}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn reply_line_format() {
        let summary = Summary::of_bytes(b"");
        assert_eq!(
            summary.reply_line(),
            format!("bytes=0 sha256={EMPTY_SHA256}\n")
        );
        let abc = Summary::of_bytes(b"abc");
        assert_eq!(
            abc.to_string(),
            "bytes=3 sha256=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn reply_line_round_trips() {
        let summary = Summary::of_pattern(9, 4, 100_000);
        assert_eq!(summary.reply_line().parse::<Summary>(), Ok(summary));
        assert_eq!(summary.to_string().parse::<Summary>(), Ok(summary));
    }

    #[test]
    fn malformed_replies_are_refused() {
        let good_hash = EMPTY_SHA256;
        for bad in [
            String::new(),
            "bytes=0".into(),
            format!("bytes=x sha256={good_hash}"),
            format!("bytes=-1 sha256={good_hash}"),
            format!("bytes=+1 sha256={good_hash}"),
            format!("bytes=0 sha256={}", &good_hash[1..]),
            format!("bytes=0 sha256={}", good_hash.to_uppercase()),
            format!("bytes=0  sha256={good_hash}"),
            format!("bytes=0 sha256={good_hash} extra"),
            format!("sha256={good_hash} bytes=0"),
            format!("bytes=0 sha256={}é", &good_hash[2..]),
        ] {
            assert!(bad.parse::<Summary>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn pattern_summary_matches_hashing_the_bytes() {
        let data: Vec<u8> = pattern(7, 2, 200_003).collect();
        assert_eq!(Summary::of_pattern(7, 2, 200_003), Summary::of_bytes(&data));
    }

    #[test]
    fn sender_and_listener_lines() {
        let summary = Summary::of_bytes(b"");
        assert_eq!(
            stream_reply_line(3, &summary.reply_line()),
            format!("stream=3 reply=bytes=0 sha256={EMPTY_SHA256}")
        );
        assert_eq!(
            sent_line(&summary, Duration::from_micros(1_500_250)),
            format!("sent bytes=0 sha256={EMPTY_SHA256} secs=1.500250")
        );
        assert_eq!(
            received_line(0, &summary),
            format!("received connection=0 bytes=0 sha256={EMPTY_SHA256}")
        );
    }
}
