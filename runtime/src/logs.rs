//! Container logs in Docker's json-file format: one JSON object per line with the text, the
//! stream and the time. With `--log-opt max-size` the file is rotated as Docker's json-file
//! driver rotates it: `container.log` is renamed `container.log.1` (older ones move up, at
//! most `max-file` files in all) and a new one begun; readers read the rotated files oldest
//! first, and a follower that finds the file renamed under it finishes the old one and opens
//! the new.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::RuntimeError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub log: String,
    pub stream: String,
    pub time: String,
}

/// A container's logging (Docker's `HostConfig.LogConfig`): `json-file` (the default) or
/// `none`, with the json-file options `max-size` and `max-file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LogConfig {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            kind: "json-file".into(),
            config: BTreeMap::new(),
        }
    }
}

/// The json-file driver's rotation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rotation {
    /// Rotate once the file has this many bytes (None: never).
    pub max_size: Option<u64>,
    /// Files kept in all, the current one included.
    pub max_file: u32,
}

impl LogConfig {
    /// `--log-driver` and `--log-opt KEY=VALUE`s, checked as Docker checks them.
    pub fn parse(driver: Option<&str>, opts: &[String]) -> Result<LogConfig, RuntimeError> {
        let kind = driver.unwrap_or("json-file").to_string();
        let bad = |m: String| RuntimeError::Invalid(m);
        if kind != "json-file" && kind != "none" {
            return Err(bad(format!(
                "logging driver {kind:?} is not supported (json-file, none)"
            )));
        }
        let mut config = BTreeMap::new();
        for o in opts {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| bad(format!("invalid --log-opt {o:?}: expected KEY=VALUE")))?;
            match (kind.as_str(), k) {
                ("json-file", "max-size" | "max-file") => {}
                _ => return Err(bad(format!("unknown log opt '{k}' for {kind} log driver"))),
            }
            config.insert(k.to_string(), v.to_string());
        }
        let c = LogConfig { kind, config };
        c.rotation()?;
        Ok(c)
    }

    /// Whether the container's output is kept (`logs` can read it).
    pub fn keeps_logs(&self) -> bool {
        self.kind != "none"
    }

    pub fn rotation(&self) -> Result<Rotation, RuntimeError> {
        let bad = |m: String| RuntimeError::Invalid(m);
        let max_size = match self.config.get("max-size") {
            None => None,
            Some(v) => match strata_parser::instructions::parse_size(v) {
                Some(0) => None,
                Some(n) => Some(n),
                None => return Err(bad(format!("invalid max-size {v:?} (use e.g. 10m)"))),
            },
        };
        let max_file = match self.config.get("max-file") {
            None => 1,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(bad(format!(
                        "invalid max-file {v:?}: a number of files, at least 1"
                    )))
                }
            },
        };
        if max_file > 1 && max_size.is_none() {
            return Err(bad("max-file cannot be set when max-size is not set".into()));
        }
        Ok(Rotation { max_size, max_file })
    }
}

/// The `n`th rotated file of the log at `path` (`container.log.n`).
fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Appends lines for one stream, buffering a partial last line until it completes.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
    partial: [Vec<u8>; 2],
}

impl LogWriter {
    pub fn open(path: &Path, rotation: Rotation) -> std::io::Result<LogWriter> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(LogWriter {
            path: path.to_path_buf(),
            size: file.metadata()?.len(),
            file,
            rotation,
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
        if self.rotation.max_size.is_some_and(|max| self.size >= max) {
            self.rotate();
        }
        if self.file.write_all(&bytes).is_ok() {
            self.size += bytes.len() as u64;
        }
    }

    /// Docker's rotation: the oldest file goes, each one moves up, the current one becomes
    /// `.1`, and a new current one begins (with one file in all, the current one is emptied).
    fn rotate(&mut self) {
        let keep = self.rotation.max_file;
        if keep > 1 {
            for n in (1..keep - 1).rev() {
                let _ = fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1));
            }
            let _ = fs::rename(&self.path, rotated(&self.path, 1));
        } else {
            let _ = fs::remove_file(&self.path);
        }
        if let Ok(f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            self.file = f;
            self.size = 0;
        }
    }
}

/// The rotated files of the log at `path` that exist, oldest first.
fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut n = 1;
    while rotated(path, n).exists() {
        out.push(rotated(path, n));
        n += 1;
    }
    out.reverse();
    out
}

/// Reads a log as it grows (`logs -f`): the first call returns the lines there are (rotated
/// files first), each later one the lines completed since, reading only what was appended.
pub struct LogFollower {
    path: PathBuf,
    file: Option<File>,
    /// Rotated files still to read before the current one.
    backlog: Vec<PathBuf>,
    /// Bytes of a line whose end has not been written yet.
    partial: Vec<u8>,
}

impl LogFollower {
    pub fn open(path: &Path) -> LogFollower {
        LogFollower {
            path: path.to_path_buf(),
            file: File::open(path).ok(),
            backlog: rotated_files(path),
            partial: Vec::new(),
        }
    }

    pub fn next_lines(&mut self) -> Vec<LogLine> {
        use std::io::Read;
        let mut bytes = Vec::new();
        for old in std::mem::take(&mut self.backlog) {
            if let Ok(mut f) = File::open(&old) {
                let _ = f.read_to_end(&mut bytes);
            }
        }
        bytes.append(&mut self.partial);
        self.partial = bytes;
        if self.file.is_none() {
            // The log appears with the container's first output.
            self.file = File::open(&self.path).ok();
        }
        if let Some(f) = self.file.as_mut() {
            let _ = f.read_to_end(&mut self.partial);
            // Rotated meanwhile: what the old file got is read; the new one is read whole.
            let ino = f.metadata().map(|m| m.ino()).ok();
            if fs::metadata(&self.path).map(|m| m.ino()).ok() != ino {
                self.file = File::open(&self.path).ok();
                if let Some(f) = self.file.as_mut() {
                    let _ = f.read_to_end(&mut self.partial);
                }
            }
        }
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
