//! Container logs in Docker's json-file format: one JSON object per line with the text, the
//! stream and the time.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub log: String,
    pub stream: String,
    pub time: String,
}

/// Appends lines for one stream, buffering a partial last line until it completes.
pub struct LogWriter {
    file: File,
    partial: [Vec<u8>; 2],
}

impl LogWriter {
    pub fn open(path: &Path) -> std::io::Result<LogWriter> {
        Ok(LogWriter {
            file: OpenOptions::new().create(true).append(true).open(path)?,
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Records bytes from stream 0 (stdout) or 1 (stderr).
    pub fn write(&mut self, stream: usize, bytes: &[u8]) {
        self.partial[stream].extend_from_slice(bytes);
        while let Some(pos) = self.partial[stream].iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial[stream].drain(..=pos).collect();
            self.emit(stream, &line);
        }
    }

    /// Writes out partial lines (at exit).
    pub fn flush(&mut self) {
        for s in 0..2 {
            if !self.partial[s].is_empty() {
                let line = std::mem::take(&mut self.partial[s]);
                self.emit(s, &line);
            }
        }
    }

    fn emit(&mut self, stream: usize, line: &[u8]) {
        let l = LogLine {
            log: String::from_utf8_lossy(line).into_owned(),
            stream: if stream == 0 { "stdout" } else { "stderr" }.into(),
            time: strata_cache::fsutil::now_rfc3339(),
        };
        let mut bytes = serde_json::to_vec(&l).expect("serializes");
        bytes.push(b'\n');
        let _ = self.file.write_all(&bytes);
    }
}

/// Reads a log as it grows (`logs -f`): the first call returns the lines there are, each
/// later one the lines completed since, reading only what was appended.
pub struct LogFollower {
    path: std::path::PathBuf,
    file: Option<File>,
    /// Bytes of a line whose end has not been written yet.
    partial: Vec<u8>,
}

impl LogFollower {
    pub fn open(path: &Path) -> LogFollower {
        LogFollower {
            path: path.to_path_buf(),
            file: File::open(path).ok(),
            partial: Vec::new(),
        }
    }

    pub fn next_lines(&mut self) -> Vec<LogLine> {
        use std::io::Read;
        if self.file.is_none() {
            // The log appears with the container's first output.
            self.file = File::open(&self.path).ok();
        }
        let Some(f) = self.file.as_mut() else {
            return Vec::new();
        };
        let _ = f.read_to_end(&mut self.partial);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        complete
            .split(|&b| b == b'\n')
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect()
    }
}
