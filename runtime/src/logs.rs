//! Container logs in Docker's json-file format: one JSON object per line with the text, the
//! stream and the time.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
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

/// Reads every log line of a container.
pub fn read(path: &Path) -> Vec<LogLine> {
    let Ok(f) = File::open(path) else {
        return Vec::new();
    };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}
