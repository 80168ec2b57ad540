//! One module per command family; each function takes its parsed arguments and the store.

pub mod attach;
pub mod build;
pub mod container_info;
pub mod containers;
pub mod create_flags;
pub mod events;
pub mod images;
pub mod manifests;
pub mod network_view;
pub mod networks;
pub mod registry;
pub mod stats;
pub mod system;
pub mod volumes;

use std::path::Path;

use anyhow::{Context, Result};
use strata_cache::Store;

/// `KEY=VALUE` flags (`--label`) as a map; a bare `KEY` has an empty value, the last of a key
/// wins.
pub fn key_values(items: &[String]) -> std::collections::BTreeMap<String, String> {
    items
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Opens the store, creating it on first use.
pub fn open_store(root: &Path) -> Result<Store> {
    Store::open(root).with_context(|| format!("opening the store at {}", root.display()))
}

/// Records an image event (`strata events`): Docker's `image ACTION ID (name=NAME)`.
pub fn image_event(store: &strata_cache::Store, action: &str, id: &str, name: &str) {
    let attributes = std::collections::BTreeMap::from([("name".to_string(), name.to_string())]);
    strata_cache::events::record(
        store,
        &strata_cache::events::Event::new("image", action, id, attributes),
    );
}
