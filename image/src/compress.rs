//! Compression of layer blobs: detection by magic bytes, streaming decoders and encoders.

use std::io::{self, BufRead, BufReader, Read, Write};

/// A blob's compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    Bzip2,
    Xz,
}

impl Compression {
    /// Detects the compression from the first bytes of a stream.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else {
            Compression::None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
        }
    }
}

/// Wraps `r` in the decoder its magic bytes call for (gzip, zstd, or none).
/// bzip2 and xz are detected but refused here: layer blobs never use them.
pub fn decompress<'a, R: Read + Send + 'a>(
    r: R,
) -> io::Result<(Compression, Box<dyn Read + Send + 'a>)> {
    decoder(r, false)
}

/// [`decompress`] for the archives `ADD` unpacks, which may also be bzip2 or xz, as Docker
/// accepts them.
pub fn decompress_archive<'a, R: Read + Send + 'a>(
    r: R,
) -> io::Result<(Compression, Box<dyn Read + Send + 'a>)> {
    decoder(r, true)
}

fn decoder<'a, R: Read + Send + 'a>(
    r: R,
    archives: bool,
) -> io::Result<(Compression, Box<dyn Read + Send + 'a>)> {
    let mut br = BufReader::with_capacity(256 << 10, r);
    let head = br.fill_buf()?;
    let c = Compression::detect(head);
    let out: Box<dyn Read + Send + 'a> = match c {
        Compression::None => Box::new(br),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(br)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(br)?),
        Compression::Bzip2 if archives => Box::new(bzip2::bufread::MultiBzDecoder::new(br)),
        Compression::Xz if archives => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(br)),
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} compression is not supported here", other.name()),
            ))
        }
    };
    Ok((c, out))
}

/// Whether `r` is a tar archive, plain or compressed (what `ADD` unpacks, as Docker decides:
/// the stream, decompressed, starts with a tar header whose checksum holds).
pub fn is_tar_archive<R: Read + Send>(r: R) -> bool {
    let Ok((_, mut r)) = decompress_archive(r) else {
        return false;
    };
    let mut head = [0u8; 512];
    if r.read_exact(&mut head).is_err() {
        return false;
    }
    let stored = std::str::from_utf8(&head[148..156])
        .ok()
        .map(|f| f.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|f| u32::from_str_radix(f, 8).ok());
    // The checksum counts its own field as eight spaces.
    let sum: u32 = head
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u32
            }
        })
        .sum();
    head[0] != 0 && stored == Some(sum)
}

/// A compressing writer; `finish` flushes the trailer and returns the inner writer.
pub enum Encoder<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    /// A new encoder. Gzip output has no name or mtime in its header, so it is deterministic.
    pub fn new(w: W, c: Compression) -> io::Result<Self> {
        Ok(match c {
            Compression::None => Encoder::Plain(w),
            Compression::Gzip => Encoder::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .write(w, flate2::Compression::default()),
            ),
            Compression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(w, 3)?;
                // Multi-threaded compression gives the same bytes for the same input and level.
                let threads = std::thread::available_parallelism()
                    .map(|n| n.get() as u32)
                    .unwrap_or(1);
                if threads > 1 {
                    e.multithread(threads)?;
                }
                e.include_checksum(false)?;
                Encoder::Zstd(e)
            }
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot write {} blobs", other.name()),
                ))
            }
        })
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// A reader that fails once more than `limit` bytes come out of it: the cap on
/// decompressed sizes that stops decompression bombs.
pub struct LimitedReader<R> {
    inner: R,
    remaining: u64,
    what: &'static str,
}

impl<R: Read> LimitedReader<R> {
    pub fn new(inner: R, limit: u64, what: &'static str) -> Self {
        Self {
            inner,
            remaining: limit,
            what,
        }
    }
}

impl<R: Read> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(self.remaining.saturating_add(1) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.remaining {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} exceeds its size limit", self.what),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(c: Compression) {
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut e = Encoder::new(Vec::new(), c).unwrap();
        e.write_all(&data).unwrap();
        let blob = e.finish().unwrap();
        let (found, mut r) = decompress(&blob[..]).unwrap();
        assert_eq!(found, c);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn gzip_zstd_and_plain_round_trip() {
        round_trip(Compression::None);
        round_trip(Compression::Gzip);
        round_trip(Compression::Zstd);
    }

    #[test]
    fn encoders_are_deterministic() {
        for c in [Compression::Gzip, Compression::Zstd] {
            let enc = |d: &[u8]| {
                let mut e = Encoder::new(Vec::new(), c).unwrap();
                e.write_all(d).unwrap();
                e.finish().unwrap()
            };
            let data = vec![7u8; 3 << 20];
            assert_eq!(enc(&data), enc(&data));
        }
    }

    #[test]
    fn limited_reader_stops_bombs() {
        let data = vec![0u8; 1000];
        let mut r = LimitedReader::new(&data[..], 999, "blob");
        assert!(io::copy(&mut r, &mut io::sink()).is_err());
        let mut r = LimitedReader::new(&data[..], 1000, "blob");
        assert_eq!(io::copy(&mut r, &mut io::sink()).unwrap(), 1000);
    }
}
