//! Opens an archive stream whatever its compression, recognised by its first
//! bytes rather than its file name (ACIs are always named `.aci`).

use std::io::{self, BufRead, BufReader, Read};

/// The compressions appc allows for an ACI (gzip, bzip2, xz), zstd (OCI
/// layers), and none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl Compression {
    /// Recognises the compression from the stream's first bytes.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&ZSTD_MAGIC) || is_skippable_zstd_frame(head) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// zstd skippable frames (magic 0x184D2A50..=0x184D2A5F, little-endian) may
/// open a stream, as in zstd:chunked layers.
fn is_skippable_zstd_frame(head: &[u8]) -> bool {
    head.len() >= 4 && head[0] & 0xf0 == 0x50 && head[1..4] == [0x2a, 0x4d, 0x18]
}

/// Most memory the xz decoder may use. xz streams declare their dictionary
/// size; `xz -9` needs 65 MiB, so 256 MiB leaves room for any real image and
/// refuses one that declares gigabytes.
pub const XZ_MEMORY_LIMIT: u64 = 256 * 1024 * 1024;
/// Largest zstd window accepted (the decoder allocates the window the frame
/// declares): 128 MiB, `zstd --long=27`, more than `zstd -19` uses.
pub const ZSTD_MAX_WINDOW: u64 = 128 * 1024 * 1024;

/// A stream whose decoder would need more memory than allowed.
#[derive(Debug, thiserror::Error)]
#[error(
    "the {format} stream needs more than {} MiB of memory to decode (it declares a huge \
     dictionary or window); recompress it with ordinary settings", .limit >> 20
)]
pub struct DecoderMemoryLimit {
    pub format: &'static str,
    pub limit: u64,
}

/// Turns liblzma's "memory limit reached" into an error that says why.
struct XzReader<R> {
    inner: liblzma::bufread::XzDecoder<R>,
}

impl<R: BufRead> Read for XzReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|err| {
            let is_memlimit = err
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<liblzma::stream::Error>())
                .is_some_and(|inner| matches!(inner, liblzma::stream::Error::MemLimit));
            if is_memlimit {
                io::Error::other(DecoderMemoryLimit {
                    format: "xz",
                    limit: XZ_MEMORY_LIMIT,
                })
            } else {
                err
            }
        })
    }
}

/// Wraps `input` in the decoder its magic bytes call for, each with a bound
/// on the memory it may allocate (see `XZ_MEMORY_LIMIT`, `ZSTD_MAX_WINDOW`;
/// gzip's window is 32 KiB and bzip2's blocks at most 900 KB by format).
pub fn decompress<'a, R: Read + 'a>(input: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(64 * 1024, input);
    let head = buffered.fill_buf()?;
    Ok(match Compression::detect(head) {
        Compression::None => Box::new(buffered),
        // MultiGzDecoder: `pigz` and concatenated gzip members are valid gzip.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(buffered)),
        Compression::Xz => {
            // Concatenated streams are valid xz, as `new_multi_decoder` reads.
            let stream = liblzma::stream::Stream::new_stream_decoder(
                XZ_MEMORY_LIMIT,
                liblzma::stream::CONCATENATED,
            )
            .map_err(io::Error::other)?;
            Box::new(XzReader {
                inner: liblzma::bufread::XzDecoder::new_stream(buffered, stream),
            })
        }
        Compression::Zstd => {
            let mut decoder = ruzstd::decoding::FrameDecoder::new();
            decoder.set_max_window_size(ZSTD_MAX_WINDOW);
            Box::new(ZstdReader {
                source: buffered,
                decoder,
                in_frame: false,
            })
        }
    })
}

/// Decodes a zstd stream of any number of frames, skipping skippable ones
/// (ruzstd's own streaming decoder reads a single frame).
struct ZstdReader<R> {
    source: R,
    decoder: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        use ruzstd::decoding::BlockDecodingStrategy;
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.in_frame {
                while self.decoder.can_collect() == 0 && !self.decoder.is_finished() {
                    self.decoder
                        .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBlocks(1))
                        .map_err(io::Error::other)?;
                }
                let n = self.decoder.read(buf)?;
                if n > 0 {
                    return Ok(n);
                }
                if self.decoder.is_finished() && self.decoder.can_collect() == 0 {
                    self.in_frame = false;
                }
                continue;
            }
            if self.source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            match self.decoder.reset(&mut self.source) {
                Ok(()) => self.in_frame = true,
                Err(FrameDecoderError::WindowSizeTooBig { .. }) => {
                    return Err(io::Error::other(DecoderMemoryLimit {
                        format: "zstd",
                        limit: ZSTD_MAX_WINDOW,
                    }))
                }
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    io::copy(
                        &mut (&mut self.source).take(u64::from(length)),
                        &mut io::sink(),
                    )?;
                }
                Err(err) => return Err(io::Error::other(err)),
            }
        }
    }
}

/// A reader that fails once more than `limit` bytes have come through: the
/// guard against decompression bombs, applied to the decompressed stream.
pub struct LimitedReader<R> {
    inner: R,
    remaining: u64,
    limit: u64,
}

impl<R: Read> LimitedReader<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        LimitedReader {
            inner,
            remaining: limit,
            limit,
        }
    }
}

/// Marker carried inside the `io::Error` so callers can tell a size-limit stop
/// from a broken archive.
#[derive(Debug)]
pub struct SizeLimitExceeded {
    pub limit: u64,
}

impl std::fmt::Display for SizeLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the archive expands past the {} MiB limit",
            self.limit / (1024 * 1024)
        )
    }
}

impl std::error::Error for SizeLimitExceeded {}

impl<R: Read> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            // Only an error if there really is more data.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(SizeLimitExceeded { limit: self.limit })),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// If `err` is a size-limit stop, returns the limit.
pub fn size_limit_of(err: &io::Error) -> Option<u64> {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<SizeLimitExceeded>())
        .map(|exceeded| exceeded.limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn roundtrip(compressed: Vec<u8>, expected: &[u8]) {
        let mut out = Vec::new();
        decompress(&compressed[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, expected);
    }

    #[test]
    fn detects_and_decodes_each_compression() {
        let data = b"hello tar world".repeat(100);
        roundtrip(data.clone(), &data);

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        roundtrip(gz.finish().unwrap(), &data);

        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&data).unwrap();
        roundtrip(bz.finish().unwrap(), &data);

        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&data).unwrap();
        roundtrip(xz.finish().unwrap(), &data);
    }

    #[test]
    fn decodes_multi_frame_zstd_with_skippable_frames() {
        let first = b"first frame, ".repeat(50);
        let second = b"second frame".repeat(50);
        let mut stream = Vec::new();
        // A skippable frame first, as zstd:chunked layers may have.
        stream.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3]);
        stream.extend(ruzstd::encoding::compress_to_vec(
            &first[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        ));
        stream.extend(ruzstd::encoding::compress_to_vec(
            &second[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        ));
        let mut expected = first.clone();
        expected.extend_from_slice(&second);
        roundtrip(stream, &expected);
        assert!(decompress(&[0x28u8, 0xb5, 0x2f, 0xfd, 0, 0][..])
            .unwrap()
            .read_to_end(&mut Vec::new())
            .is_err());
    }

    #[test]
    fn limited_reader_stops_a_bomb() {
        // 8 MiB of zeros compresses to a few KiB.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&vec![0u8; 8 * 1024 * 1024]).unwrap();
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 1024 * 1024);
        let mut limited = LimitedReader::new(decompress(&bomb[..]).unwrap(), 1024 * 1024);
        let err = io::copy(&mut limited, &mut io::sink()).unwrap_err();
        assert_eq!(size_limit_of(&err), Some(1024 * 1024));
    }

    #[test]
    fn xz_with_a_huge_dictionary_is_refused_without_allocating_it() {
        // An LZMA2 filter declaring a 1.5 GiB dictionary.
        let mut options = liblzma::stream::LzmaOptions::new_preset(0).unwrap();
        options.dict_size(1536 * 1024 * 1024);
        let mut filters = liblzma::stream::Filters::new();
        filters.lzma2(&options);
        let stream =
            liblzma::stream::Stream::new_stream_encoder(&filters, liblzma::stream::Check::Crc64)
                .unwrap();
        let mut xz = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        xz.write_all(b"tiny").unwrap();
        let compressed = xz.finish().unwrap();
        let err = decompress(&compressed[..])
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("needs more than 256 MiB"), "{err}");
    }

    #[test]
    fn limited_reader_allows_exactly_the_limit() {
        let data = vec![7u8; 4096];
        let mut limited = LimitedReader::new(&data[..], 4096);
        assert_eq!(io::copy(&mut limited, &mut io::sink()).unwrap(), 4096);
    }
}
