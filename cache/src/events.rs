//! The store's event log (`strata events`): what Docker's daemon publishes, appended by the
//! commands and container monitors themselves, since there is no daemon to ask.
//!
//! Main types: [`Event`] (Docker's event message, `Type`/`Action`/`Actor`, one JSON line each,
//! schema `strata.events.v1`) and [`EventFollower`] (reads what is there and what comes).
//!
//! Key design decision: one append-only file, `events/events.jsonl`, written with `O_APPEND` in
//! one `write` per event, so processes record concurrently without a lock and readers never see
//! half a line. It is bounded: past [`MAX_LOG_BYTES`] the file becomes `events.1.jsonl` (the one
//! before is dropped), under a lock; a follower holding the old file drains it before moving on.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::fsutil::{FileLock, LockMode};
use crate::Store;

/// The log's line format.
pub const EVENTS_SCHEMA: &str = "strata.events.v1";
/// Past this size the log is rotated.
pub const MAX_LOG_BYTES: u64 = 1 << 20;

/// One event, as Docker's API gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    pub scope: String,
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i128,
    /// Docker's older fields, for containers and images: the action, the id, the image.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    /// [`EVENTS_SCHEMA`].
    #[serde(default)]
    pub schema: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

impl Event {
    /// An event of `kind` (container, image, volume, network) happening now.
    pub fn new(kind: &str, action: &str, id: &str, attributes: BTreeMap<String, String>) -> Event {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        let legacy = matches!(kind, "container" | "image");
        Event {
            kind: kind.into(),
            action: action.into(),
            status: if legacy { action.into() } else { String::new() },
            id: if legacy { id.into() } else { String::new() },
            from: if kind == "container" {
                attributes.get("image").cloned().unwrap_or_default()
            } else {
                String::new()
            },
            actor: Actor {
                id: id.into(),
                attributes,
            },
            scope: "local".into(),
            time: (nanos / 1_000_000_000) as i64,
            time_nano: nanos,
            schema: EVENTS_SCHEMA.into(),
        }
    }

    /// Docker's line: `TIME TYPE ACTION ID (k=v, …)`.
    pub fn line(&self) -> String {
        let attrs: Vec<String> = self
            .actor
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut out = format!(
            "{} {} {} {}",
            crate::fsutil::rfc3339_nanos_fixed(self.time_nano),
            self.kind,
            self.action,
            self.actor.id
        );
        if !attrs.is_empty() {
            out.push_str(&format!(" ({})", attrs.join(", ")));
        }
        out
    }
}

fn log_dir(store: &Store) -> PathBuf {
    store.root().join("events")
}

fn log_path(store: &Store) -> PathBuf {
    log_dir(store).join("events.jsonl")
}

fn rotated_path(store: &Store) -> PathBuf {
    log_dir(store).join("events.1.jsonl")
}

/// Appends `event` to the store's log. Best effort: an event that cannot be written is not a
/// reason to fail the command that made it.
pub fn record(store: &Store, event: &Event) {
    let _ = append(store, event);
}

fn append(store: &Store, event: &Event) -> std::io::Result<()> {
    let path = log_path(store);
    let open = || OpenOptions::new().append(true).create(true).open(&path);
    let mut f = match open() {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(log_dir(store))?;
            open()?
        }
        Err(e) => return Err(e),
    };
    let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    line.push(b'\n');
    f.write_all(&line)?;
    if f.metadata()?.len() > MAX_LOG_BYTES {
        rotate(store)?;
    }
    Ok(())
}

fn rotate(store: &Store) -> std::io::Result<()> {
    let _lock = FileLock::acquire(&store.locks_dir().join("events.lock"), LockMode::Exclusive)
        .map_err(std::io::Error::other)?;
    let path = log_path(store);
    // Another process may have rotated it meanwhile.
    if fs::metadata(&path)?.len() > MAX_LOG_BYTES {
        fs::rename(&path, rotated_path(store))?;
    }
    Ok(())
}

/// The log opened ahead, for a process about to leave the host's mount namespace (`exec`
/// joins the container's and records the exec's end from there). It never rotates the log.
pub struct EventSink(File);

impl EventSink {
    pub fn open(store: &Store) -> Option<EventSink> {
        fs::create_dir_all(log_dir(store)).ok()?;
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(log_path(store))
            .ok()
            .map(EventSink)
    }

    pub fn record(&mut self, event: &Event) {
        if let Ok(mut line) = serde_json::to_vec(event) {
            line.push(b'\n');
            let _ = self.0.write_all(&line);
        }
    }
}

/// Reads the log as it grows: first everything kept, then each newly appended event.
pub struct EventFollower {
    path: PathBuf,
    rotated: PathBuf,
    file: Option<File>,
    partial: Vec<u8>,
    started: bool,
}

impl EventFollower {
    pub fn open(store: &Store) -> EventFollower {
        EventFollower {
            path: log_path(store),
            rotated: rotated_path(store),
            file: None,
            partial: Vec::new(),
            started: false,
        }
    }

    /// The events not yet returned, oldest first.
    pub fn next_events(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            if let Ok(mut old) = File::open(&self.rotated) {
                let mut bytes = Vec::new();
                let _ = old.read_to_end(&mut bytes);
                parse_lines(&bytes, &mut Vec::new(), &mut out);
            }
        }
        // Drain the file held (it may have been rotated away), then move to the current one.
        loop {
            if let Some(f) = &mut self.file {
                let mut bytes = Vec::new();
                let _ = f.read_to_end(&mut bytes);
                parse_lines(&bytes, &mut self.partial, &mut out);
            }
            let current = fs::metadata(&self.path).ok().map(|m| m.ino());
            let held = self
                .file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .map(|m| m.ino());
            if current.is_none() || current == held {
                return out;
            }
            self.file = File::open(&self.path).ok();
            self.partial.clear();
            if let Some(f) = &mut self.file {
                let _ = f.seek(SeekFrom::Start(0));
            }
        }
    }
}

fn parse_lines(bytes: &[u8], partial: &mut Vec<u8>, out: &mut Vec<Event>) {
    partial.extend_from_slice(bytes);
    let Some(end) = partial.iter().rposition(|&b| b == b'\n') else {
        return;
    };
    let complete: Vec<u8> = partial.drain(..=end).collect();
    for line in complete.split(|&b| b == b'\n') {
        if let Ok(e) = serde_json::from_slice::<Event>(line) {
            out.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn events_are_read_back_in_order_and_followed_across_a_rotation() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let mut follower = EventFollower::open(&store);
        assert!(follower.next_events().is_empty());
        record(
            &store,
            &Event::new("container", "create", "abc", attrs(&[("name", "web")])),
        );
        record(&store, &Event::new("container", "start", "abc", attrs(&[])));
        let seen: Vec<String> = follower
            .next_events()
            .iter()
            .map(|e| e.action.clone())
            .collect();
        assert_eq!(seen, ["create", "start"]);
        // Enough events to rotate the log: the follower sees each once, in order.
        let many = (MAX_LOG_BYTES / 100) as usize;
        for i in 0..many {
            record(
                &store,
                &Event::new("volume", "create", &format!("v{i}"), attrs(&[])),
            );
        }
        assert!(rotated_path(&store).exists());
        let ids: Vec<String> = follower
            .next_events()
            .into_iter()
            .map(|e| e.actor.id)
            .collect();
        assert_eq!(ids.len(), many);
        assert_eq!(ids[0], "v0");
        assert_eq!(ids[many - 1], format!("v{}", many - 1));
    }

    #[test]
    fn lines_are_dockers() {
        let mut e = Event::new(
            "container",
            "die",
            "abc",
            attrs(&[("name", "web"), ("exitCode", "3"), ("image", "busybox")]),
        );
        e.time_nano = 1_765_043_400_123_456_789;
        assert_eq!(
            e.line(),
            "2025-12-06T17:50:00.123456789Z container die abc (exitCode=3, image=busybox, name=web)"
        );
        assert_eq!(e.from, "busybox");
        assert_eq!(e.status, "die");
    }
}
