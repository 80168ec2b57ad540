//! A pass-through reader that follows tar framing to cap the size of extension headers
//! (PAX `x`/`g`, GNU `L`/`K`) before the tar reader buffers them whole in memory.

use std::io::{self, Read};

/// Extension headers larger than this are refused.
pub const MAX_EXTENSION_BYTES: u64 = 1 << 20;

const BLOCK: usize = 512;

enum State {
    Header,
    Data,
}

pub struct ExtensionGuard<R> {
    inner: R,
    state: State,
    header: [u8; BLOCK],
    filled: usize,
    data_left: u64,
    capture: Option<Vec<u8>>,
    pending_pax_size: Option<u64>,
}

impl<R: Read> ExtensionGuard<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            state: State::Header,
            header: [0; BLOCK],
            filled: 0,
            data_left: 0,
            capture: None,
            pending_pax_size: None,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    fn observe(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.state {
                State::Header => {
                    let take = (BLOCK - self.filled).min(bytes.len());
                    self.header[self.filled..self.filled + take].copy_from_slice(&bytes[..take]);
                    self.filled += take;
                    bytes = &bytes[take..];
                    if self.filled == BLOCK {
                        self.filled = 0;
                        self.on_header()?;
                    }
                }
                State::Data => {
                    let take = (self.data_left.min(bytes.len() as u64)) as usize;
                    if let Some(c) = &mut self.capture {
                        c.extend_from_slice(&bytes[..take]);
                    }
                    self.data_left -= take as u64;
                    bytes = &bytes[take..];
                    if self.data_left == 0 {
                        self.on_data_end();
                    }
                }
            }
        }
        Ok(())
    }

    fn on_header(&mut self) -> io::Result<()> {
        if self.header.iter().all(|&b| b == 0) {
            return Ok(());
        }
        let kind = self.header[156];
        let size = parse_numeric(&self.header[124..136]).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "tar header has an invalid size field",
            )
        })?;
        let is_extension = matches!(kind, b'x' | b'g' | b'L' | b'K');
        let size = if is_extension {
            if size > MAX_EXTENSION_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "extension header of {size} bytes exceeds the {} KiB limit",
                        MAX_EXTENSION_BYTES >> 10
                    ),
                ));
            }
            if kind == b'x' {
                self.capture = Some(Vec::with_capacity(size as usize));
            }
            size
        } else {
            self.pending_pax_size.take().unwrap_or(size)
        };
        // Like the tar reader, every entry's data area is its (PAX-overridden) size.
        let data = size;
        self.data_left = data.div_ceil(BLOCK as u64) * BLOCK as u64;
        if self.data_left > 0 {
            self.state = State::Data;
        } else {
            self.on_data_end();
        }
        Ok(())
    }

    fn on_data_end(&mut self) {
        self.state = State::Header;
        if let Some(records) = self.capture.take() {
            self.pending_pax_size = pax_size(&records);
        }
    }
}

impl<R: Read> Read for ExtensionGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n])?;
        Ok(n)
    }
}

/// Octal (NUL/space terminated) or GNU base-256 numbers.
fn parse_numeric(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let s: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&s).ok()?, 8).ok()
}

/// The `size` record of a PAX extension, if any.
fn pax_size(records: &[u8]) -> Option<u64> {
    let mut rest = records;
    let mut size = None;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        if len <= sp || len > rest.len() {
            return size;
        }
        let record = &rest[sp + 1..len];
        if let Some(v) = record.strip_prefix(b"size=") {
            let v = v.strip_suffix(b"\n").unwrap_or(v);
            size = std::str::from_utf8(v).ok()?.parse().ok();
        }
        rest = &rest[len..];
    }
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_size_record() {
        assert_eq!(pax_size(b"12 size=100\n"), Some(100));
        assert_eq!(pax_size(b"9 a=bcde\n12 size=100\n"), Some(100));
        assert_eq!(pax_size(b"9 a=bcde\n"), None);
    }

    #[test]
    fn numeric_fields() {
        assert_eq!(parse_numeric(b"00000000012\0"), Some(10));
        assert_eq!(parse_numeric(b"           \0"), Some(0));
        let mut b = [0u8; 12];
        b[0] = 0x80;
        b[11] = 5;
        assert_eq!(parse_numeric(&b), Some(5));
    }
}
