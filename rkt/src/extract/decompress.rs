//! Opens an archive stream whatever its compression, recognised by its first
//! bytes rather than its file name (ACIs are always named `.aci`).

use std::io::{self, BufRead, BufReader, Read};

/// The compressions appc allows for an ACI, plus none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
}

impl Compression {
    /// Recognises the compression from the stream's first bytes. Zstandard
    /// (some OCI layers) is reported as an error by `decompress`, not here.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else {
            Compression::None
        }
    }
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Wraps `input` in the decoder its magic bytes call for.
pub fn decompress<'a, R: Read + 'a>(input: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(64 * 1024, input);
    let head = buffered.fill_buf()?;
    if head.starts_with(&ZSTD_MAGIC) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "zstd-compressed archives are not supported yet; recompress with gzip",
        ));
    }
    Ok(match Compression::detect(head) {
        Compression::None => Box::new(buffered),
        // MultiGzDecoder: `pigz` and concatenated gzip members are valid gzip.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(buffered)),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(buffered)),
    })
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
    fn zstd_is_refused_with_a_hint() {
        let err = decompress(&[0x28u8, 0xb5, 0x2f, 0xfd, 0, 0][..])
            .err()
            .unwrap();
        assert!(err.to_string().contains("gzip"));
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
    fn limited_reader_allows_exactly_the_limit() {
        let data = vec![7u8; 4096];
        let mut limited = LimitedReader::new(&data[..], 4096);
        assert_eq!(io::copy(&mut limited, &mut io::sink()).unwrap(), 4096);
    }
}
