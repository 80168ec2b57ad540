//! Two-stage stream pipelines: a producer on its own thread hands chunks of bytes to a consumer
//! through a bounded queue, so decompressing a layer and extracting it use two cores at once.
//!
//! Chunks move by ownership (no copy through a kernel pipe), the queue is bounded (memory stays
//! flat whatever the stream's size), and errors are attributed: a producer's own failure (bad
//! compression, network) wins over the consumer's view of a stream that ended early, while a
//! producer stopped only because the consumer gave up reports the consumer's error.

use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};

/// Bytes per chunk: large enough that queue operations cost nothing next to the work per byte.
const CHUNK: usize = 256 << 10;
/// Chunks in flight: 2 MiB between the stages at most.
const DEPTH: usize = 8;

/// Why a pipeline failed.
#[derive(Debug)]
pub enum Failure<P, C> {
    /// The producer's own error (its read, decode or verification failed).
    Producer(P),
    /// The consumer's error.
    Consumer(C),
}

impl<P, C> Failure<P, C> {
    /// One error: the consumer's as it is, the producer's converted by `producer`.
    pub fn into_error(self, producer: impl FnOnce(P) -> C) -> C {
        match self {
            Failure::Producer(e) => producer(e),
            Failure::Consumer(e) => e,
        }
    }
}

/// Runs `produce` on a new thread and `consume` on this one; what the producer sends through
/// its [`ChunkSender`] (by [`ChunkSender::send_all`] or as a writer) the consumer reads from
/// its [`ChunkReader`], which ends when the producer returns. Returns both results when both
/// succeed.
pub fn run<T, U, EP, EC, P, C>(produce: P, consume: C) -> Result<(T, U), Failure<EP, EC>>
where
    T: Send,
    EP: Send,
    P: FnOnce(&mut ChunkSender) -> Result<T, EP> + Send,
    C: FnOnce(&mut ChunkReader) -> Result<U, EC>,
{
    let (tx, rx) = sync_channel(DEPTH);
    let (recycle, spare) = channel();
    let mut reader = ChunkReader {
        rx,
        recycle,
        chunk: Vec::new(),
        pos: 0,
    };
    std::thread::scope(|s| {
        let producer = s.spawn(move || {
            let mut sender = ChunkSender {
                tx,
                spare,
                pending: Vec::new(),
                consumer_gone: false,
            };
            let result = produce(&mut sender);
            if result.is_ok() {
                // What was written but not yet sent. Should the consumer have stopped early,
                // its own result says why.
                let _ = sender.send_pending();
            }
            (result, sender.consumer_gone)
        });
        let consumed = consume(&mut reader);
        // Let a producer blocked on a full queue see that nobody reads any more.
        drop(reader);
        let (produced, consumer_gone) = match producer.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        match (produced, consumed) {
            (Ok(t), Ok(u)) => Ok((t, u)),
            (Err(_), Err(e)) if consumer_gone => Err(Failure::Consumer(e)),
            (Err(e), _) => Err(Failure::Producer(e)),
            (Ok(_), Err(e)) => Err(Failure::Consumer(e)),
        }
    })
}

/// The producer's end.
pub struct ChunkSender {
    tx: SyncSender<Vec<u8>>,
    /// Chunks the consumer is done with, to fill again: memory stays at the queue's size.
    spare: Receiver<Vec<u8>>,
    /// Bytes written but not yet sent (writer use).
    pending: Vec<u8>,
    consumer_gone: bool,
}

impl ChunkSender {
    fn send(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        if self.tx.send(chunk).is_err() {
            self.consumer_gone = true;
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the consumer stopped reading",
            ));
        }
        Ok(())
    }

    /// An empty chunk with room for [`CHUNK`] bytes.
    fn empty_chunk(&mut self) -> Vec<u8> {
        match self.spare.try_recv() {
            Ok(mut v) => {
                v.clear();
                v
            }
            Err(_) => Vec::with_capacity(CHUNK),
        }
    }

    fn send_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::take(&mut self.pending);
        self.send(chunk)
    }

    /// Reads `r` to its end, sending what it reads in chunks; returns the number of bytes.
    /// Reads go straight into the chunk that is sent (no intermediate copy).
    pub fn send_all(&mut self, r: &mut dyn Read) -> io::Result<u64> {
        self.send_pending()?;
        let mut total = 0u64;
        loop {
            let mut chunk = self.empty_chunk();
            chunk.resize(CHUNK, 0);
            let filled = read_full(r, &mut chunk)?;
            if filled == 0 {
                return Ok(total);
            }
            chunk.truncate(filled);
            total += filled as u64;
            self.send(chunk)?;
            if filled < CHUNK {
                return Ok(total);
            }
        }
    }
}

impl Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pending.capacity() == 0 {
            self.pending = self.empty_chunk();
        }
        let n = buf.len().min(CHUNK - self.pending.len());
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == CHUNK {
            self.send_pending()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send_pending()
    }
}

/// The consumer's end: a buffered reader over the producer's chunks.
pub struct ChunkReader {
    rx: Receiver<Vec<u8>>,
    recycle: Sender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(next) => {
                    let used = std::mem::replace(&mut self.chunk, next);
                    if used.capacity() > 0 {
                        let _ = self.recycle.send(used);
                    }
                    self.pos = 0;
                }
                // The producer returned: the stream ends here.
                Err(_) => return Ok(&[]),
            }
        }
        Ok(&self.chunk[self.pos..])
    }
    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.chunk.len());
    }
}

/// Reads from `r` until `buf` is full or the stream ends; returns how much was read.
pub fn read_full(r: &mut (impl Read + ?Sized), buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consumer_reads_exactly_what_the_producer_sent() {
        let data: Vec<u8> = (0..(3 * CHUNK + 12345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let (sent, got) = run(
            |tx| tx.send_all(&mut &data[..]),
            |rx| {
                let mut v = Vec::new();
                rx.read_to_end(&mut v).map(|_| v)
            },
        )
        .unwrap();
        assert_eq!(sent, data.len() as u64);
        assert_eq!(got, data);
    }

    #[test]
    fn a_writing_producer_is_read_whole_including_its_last_partial_chunk() {
        let data: Vec<u8> = (0..(2 * CHUNK + 77)).map(|i| (i % 13) as u8).collect();
        let (_, got) = run(
            |tx| -> io::Result<()> {
                for piece in data.chunks(1000) {
                    tx.write_all(piece)?;
                }
                Ok(())
            },
            |rx| {
                let mut v = Vec::new();
                rx.read_to_end(&mut v).map(|_| v)
            },
        )
        .unwrap();
        assert_eq!(got, data);
    }

    #[test]
    fn a_producer_error_wins_over_the_short_stream_the_consumer_saw() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "corrupt deflate",
                    ));
                }
                let n = buf.len().min(self.0);
                self.0 -= n;
                Ok(n)
            }
        }
        let r = run(
            |tx| tx.send_all(&mut Failing(CHUNK + 10)),
            |rx| -> Result<(), String> {
                let mut v = Vec::new();
                rx.read_to_end(&mut v).unwrap();
                Err(format!("truncated at {}", v.len()))
            },
        );
        match r {
            Err(Failure::Producer(e)) => assert_eq!(e.to_string(), "corrupt deflate"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_consumer_that_gives_up_reports_its_own_error_and_stops_the_producer() {
        let endless = io::repeat(1);
        let r = run(
            |tx| tx.send_all(&mut endless.take(u64::MAX)),
            |rx| -> Result<(), String> {
                let mut b = [0u8; 10];
                rx.read_exact(&mut b).unwrap();
                Err("bad header".into())
            },
        );
        match r {
            Err(Failure::Consumer(e)) => assert_eq!(e, "bad header"),
            other => panic!("{other:?}"),
        }
    }
}
