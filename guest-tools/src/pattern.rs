//! The deterministic byte stream `send` transmits, recomputable by anyone who knows
//! (seed, stream index, length), in any language:
//!
//! ```text
//! key     = seed XOR (stream * 0xD1B54A32D192ED03)                     (64-bit, wrapping)
//! block_k = splitmix64_mix(key + (k + 1) * 0x9E3779B97F4A7C15)         k = 0, 1, 2, ...
//! splitmix64_mix(z): z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
//!                    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
//!                    return z ^ (z >> 31)                             (64-bit, wrapping)
//! bytes   = block_0 as 8 little-endian bytes, then block_1, ..., cut to the length
//! ```
//!
//! That is the output of SplitMix64 (Steele, Lea and Flood, 2014) started from state `key`.
//! Why this generator: it is a few multiplications per 8 bytes (the checksum, not the pattern,
//! dominates the cost), block k is computable without the ones before it, and different
//! streams of one seed give unrelated bytes, so a transfer that swaps or mixes streams shows.

/// Multiplier that spreads stream indices over the key space (an odd 64-bit constant).
const STREAM_MULTIPLIER: u64 = 0xD1B5_4A32_D192_ED03;
/// SplitMix64's increment: 2^64 divided by the golden ratio.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The pattern for (seed, stream), `len` bytes long.
pub fn pattern(seed: u64, stream: u32, len: u64) -> Pattern {
    Pattern {
        state: seed ^ u64::from(stream).wrapping_mul(STREAM_MULTIPLIER),
        block: [0; 8],
        used: 8,
        remaining: len,
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A finite pattern: iterate it byte by byte, or `fill` buffers for speed.
#[derive(Debug, Clone)]
pub struct Pattern {
    state: u64,
    /// The current 8-byte block and how many of its bytes were handed out already.
    block: [u8; 8],
    used: usize,
    remaining: u64,
}

impl Pattern {
    /// Bytes not handed out yet.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Fills the start of `buf` with the next bytes; returns how many (less than `buf.len()`
    /// only at the end of the pattern, 0 once it is exhausted).
    pub fn fill(&mut self, buf: &mut [u8]) -> usize {
        let wanted = usize::try_from(self.remaining).map_or(buf.len(), |left| left.min(buf.len()));
        let buf = &mut buf[..wanted];
        let mut filled = 0;
        // Finish a partly used block first, then whole blocks, then the start of one more.
        while filled < buf.len() && self.used < 8 {
            buf[filled] = self.block[self.used];
            self.used += 1;
            filled += 1;
        }
        let mut chunks = buf[filled..].chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_block());
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            self.block = self.next_block();
            tail.copy_from_slice(&self.block[..tail.len()]);
            self.used = tail.len();
        }
        self.remaining -= wanted as u64;
        wanted
    }

    fn next_block(&mut self) -> [u8; 8] {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix(self.state).to_le_bytes()
    }
}

impl Iterator for Pattern {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let mut byte = [0];
        (self.fill(&mut byte) == 1).then_some(byte[0])
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        (left, usize::try_from(self.remaining).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // SplitMix64 seeded with 0 (the reference implementation's first outputs).
        let mut p = pattern(0, 0, 24);
        let mut buf = [0u8; 24];
        assert_eq!(p.fill(&mut buf), 24);
        let words: Vec<u64> = buf
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(
            words,
            vec![
                0xE220_A839_7B1D_CDAF,
                0x6E78_9E6A_A1B9_65F4,
                0x06C4_5D18_8009_454F
            ]
        );
    }

    #[test]
    fn length_is_exact() {
        for len in [0u64, 1, 7, 8, 9, 1000, 65_537] {
            assert_eq!(pattern(1, 2, len).count() as u64, len);
        }
    }

    #[test]
    fn fill_in_odd_pieces_equals_byte_by_byte() {
        let whole: Vec<u8> = pattern(42, 3, 1000).collect();
        let mut pieces = Vec::new();
        let mut p = pattern(42, 3, 1000);
        for size in [1, 3, 8, 13, 0, 64, 5, 2000].iter().cycle() {
            let mut buf = vec![0; *size];
            let n = p.fill(&mut buf);
            pieces.extend_from_slice(&buf[..n]);
            if p.remaining() == 0 {
                break;
            }
        }
        assert_eq!(pieces, whole);
        assert_eq!(p.fill(&mut [0; 8]), 0);
    }

    #[test]
    fn a_longer_pattern_starts_with_the_shorter_one() {
        let short: Vec<u8> = pattern(5, 1, 100).collect();
        let long: Vec<u8> = pattern(5, 1, 1000).collect();
        assert_eq!(short[..], long[..100]);
    }

    #[test]
    fn seeds_and_streams_give_different_bytes() {
        let base: Vec<u8> = pattern(1, 0, 64).collect();
        let other_stream: Vec<u8> = pattern(1, 1, 64).collect();
        let other_seed: Vec<u8> = pattern(2, 0, 64).collect();
        assert_ne!(base, other_stream);
        assert_ne!(base, other_seed);
        assert_ne!(other_stream, other_seed);
        // Same inputs, same bytes.
        assert_eq!(base, pattern(1, 0, 64).collect::<Vec<u8>>());
    }
}
