//! Container events (`strata events`), recorded into the store's log by whichever process
//! makes them happen: the CLI (create, kill, stop, pause, unpause, destroy, exec) and the
//! monitor (start, oom, die, destroy of a `--rm` container).

use std::collections::BTreeMap;

use strata_cache::events::{self, Event};
use strata_cache::Store;

use crate::container::ContainerRecord;

/// Records `action` on `rec`, with Docker's attributes (image, name, the container's labels)
/// and `extra` ones (exitCode, signal…).
pub fn record(store: &Store, rec: &ContainerRecord, action: &str, extra: &[(&str, String)]) {
    events::record(store, &event(rec, action, extra));
}

/// The event, to be recorded later or elsewhere (see [`events::EventSink`]).
pub fn event(rec: &ContainerRecord, action: &str, extra: &[(&str, String)]) -> Event {
    let mut attributes: BTreeMap<String, String> = rec.config.labels.clone();
    attributes.insert("image".into(), image_of(rec));
    attributes.insert("name".into(), rec.name.clone());
    for (k, v) in extra {
        attributes.insert(k.to_string(), v.clone());
    }
    Event::new("container", action, &rec.id, attributes)
}

/// The image as the user named it, else its id.
fn image_of(rec: &ContainerRecord) -> String {
    if rec.image_name.is_empty() {
        rec.image.to_string()
    } else {
        rec.image_name.clone()
    }
}
