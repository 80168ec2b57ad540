//! `events`: the store's event log, filtered, printed as Docker prints it, and followed.

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use strata_cache::events::{Event, EventFollower};
use strata_cache::Store;

use crate::cli::EventsArgs;
use crate::commands::container_info::log_time;
use crate::filters::Filters;

const FILTER_KEYS: [&str; 7] = [
    "container",
    "event",
    "image",
    "label",
    "network",
    "type",
    "volume",
];

/// Prints the events since `--since` (default: now) and, until `--until` (default: never),
/// those that come.
pub fn events(store: &Store, a: &EventsArgs) -> Result<()> {
    let filters = Filters::parse(&a.filter, &FILTER_KEYS)?;
    let since = match &a.since {
        Some(t) => log_time("--since", t)?,
        None => now_nanos(),
    };
    let until = a
        .until
        .as_deref()
        .map(|t| log_time("--until", t))
        .transpose()?;
    let mut follower = EventFollower::open(store);
    let mut out = std::io::stdout().lock();
    loop {
        for e in follower.next_events() {
            let in_window = e.time_nano >= since && until.is_none_or(|u| e.time_nano <= u);
            if in_window && selected(&filters, &e) {
                writeln!(out, "{}", show(&e, a.format.as_deref())?)?;
            }
        }
        out.flush()?;
        if until.is_some_and(|u| now_nanos() > u) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn now_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// An event as `--format` asks (Docker's line without one).
fn show(e: &Event, format: Option<&str>) -> Result<String> {
    let mut value = serde_json::to_value(e)?;
    if let Some(o) = value.as_object_mut() {
        o.remove("schema");
    }
    match format {
        None | Some("") => Ok(e.line()),
        Some("json") => Ok(serde_json::to_string(&value)?),
        Some(t) => crate::output::render(t, &value),
    }
}

/// Docker's event filters: values of one key are alternatives, keys must all match, every
/// label given must be there.
fn selected(f: &Filters, e: &Event) -> bool {
    let attr = |k: &str| e.actor.attributes.get(k).map(String::as_str).unwrap_or("");
    let any = |key: &str, ok: &dyn Fn(&str) -> bool| {
        let values = f.values(key);
        values.is_empty() || values.iter().any(|v| ok(v))
    };
    // `exec_start: sh -c …` is the event `exec_start`.
    let action = e.action.split(':').next().unwrap_or("");
    any("type", &|v| e.kind == v)
        && any("event", &|v| action == v)
        && any("container", &|v| {
            e.kind == "container" && (e.actor.id.starts_with(v) || attr("name") == v)
        })
        && any("image", &|v| match e.kind.as_str() {
            "container" => attr("image") == v,
            "image" => e.actor.id == v || attr("name") == v,
            _ => false,
        })
        && any("network", &|v| {
            e.kind == "network" && (e.actor.id.starts_with(v) || attr("name") == v)
        })
        && any("volume", &|v| e.kind == "volume" && e.actor.id == v)
        && f.values("label").iter().all(|l| match l.split_once('=') {
            Some((k, v)) => e.actor.attributes.get(k).is_some_and(|x| x == v),
            None => e.actor.attributes.contains_key(l.as_str()),
        })
}
