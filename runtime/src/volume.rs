//! Named volumes in the store (`volumes/<name>/`): `_data` is what containers mount,
//! `meta.json` when and with which labels it was made, and `populated` marks that the first
//! container to mount it filled it with what its image had there (Docker's rule).
//!
//! Main type: [`Volumes`]. Key decision: a volume records nothing about its users; who uses
//! it is read from the container records when it matters (`rm`, `prune`, `ls -f dangling`),
//! so no second index can disagree with them.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use strata_cache::Store;

use crate::container::{ContainerRecord, Containers};
use crate::RuntimeError;

/// What `volumes/<name>/meta.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeMeta {
    /// [`VOLUME_FORMAT`].
    pub format: String,
    pub created_at: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The version of `meta.json`.
pub const VOLUME_FORMAT: &str = "strata.volume.v1";

/// A named volume.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub name: String,
    pub meta: VolumeMeta,
    /// The directory containers mount.
    pub mountpoint: PathBuf,
}

pub struct Volumes<'a> {
    store: &'a Store,
}

/// Docker's rule for volume names (as for container names): no path can be made of one.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

impl<'a> Volumes<'a> {
    pub fn new(store: &'a Store) -> Self {
        Volumes { store }
    }

    fn root(&self) -> PathBuf {
        self.store.root().join("volumes")
    }

    /// The directory of volume `name` (which must be valid).
    pub fn dir(&self, name: &str) -> PathBuf {
        self.root().join(name)
    }

    /// Makes the volume unless it exists (then it is returned as it is, as Docker does).
    pub fn create(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Volume, RuntimeError> {
        if !valid_name(name) {
            return Err(RuntimeError::Invalid(format!(
                "invalid volume name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        let _lock = self.store.meta_lock("volumes")?;
        if let Ok(v) = self.get(name) {
            return Ok(v);
        }
        let dir = self.dir(name);
        let data = dir.join("_data");
        fs::create_dir_all(&data).map_err(|e| RuntimeError::io(&data, e))?;
        let meta = VolumeMeta {
            format: VOLUME_FORMAT.to_string(),
            created_at: strata_cache::fsutil::now_rfc3339(),
            labels,
        };
        let bytes = serde_json::to_vec_pretty(&meta)
            .map_err(|e| RuntimeError::Invalid(format!("volume {name}: {e}")))?;
        // Written last and atomically: a volume without its meta is an interrupted create,
        // which the next create of the same name completes.
        self.store.atomic_write(&dir.join("meta.json"), &bytes)?;
        self.get(name)
    }

    pub fn get(&self, name: &str) -> Result<Volume, RuntimeError> {
        let missing = || RuntimeError::NotFound(format!("no such volume: {name}"));
        if !valid_name(name) {
            return Err(missing());
        }
        let dir = self.dir(name);
        let path = dir.join("meta.json");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
            Err(e) => return Err(RuntimeError::io(&path, e)),
        };
        let meta: VolumeMeta = serde_json::from_slice(&bytes)
            .map_err(|e| RuntimeError::Invalid(format!("{}: {e}", path.display())))?;
        if meta.format != VOLUME_FORMAT {
            return Err(RuntimeError::Invalid(format!(
                "{}: unknown format {:?} (this strata reads {VOLUME_FORMAT})",
                path.display(),
                meta.format
            )));
        }
        Ok(Volume {
            name: name.to_string(),
            meta,
            mountpoint: dir.join("_data"),
        })
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<Volume>, RuntimeError> {
        let root = self.root();
        let entries = match fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RuntimeError::io(&root, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| RuntimeError::io(&root, e))?;
            if let Some(name) = entry.file_name().to_str() {
                if let Ok(v) = self.get(name) {
                    out.push(v);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The containers (any state) that mount volume `name`.
    pub fn users(&self, name: &str) -> Result<Vec<ContainerRecord>, RuntimeError> {
        Ok(Containers::new(self.store)
            .list()?
            .into_iter()
            .filter(|c| named_volumes(c).any(|(n, _, _)| n == name))
            .collect())
    }

    /// The names of the volumes some container (any state) mounts, from one reading of the
    /// container records.
    pub fn in_use(&self) -> Result<std::collections::BTreeSet<String>, RuntimeError> {
        Ok(Containers::new(self.store)
            .list()?
            .iter()
            .flat_map(|c| named_volumes(c).map(|(n, _, _)| n.to_string()))
            .collect())
    }

    /// Removes volume `name` and its data; refused while a container uses it.
    pub fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        let _lock = self.store.meta_lock("volumes")?;
        self.get(name)?;
        let users = self.users(name)?;
        if !users.is_empty() {
            let ids: Vec<&str> = users.iter().map(|c| c.short_id()).collect();
            return Err(RuntimeError::Conflict(format!(
                "remove {name}: volume is in use - [{}]",
                ids.join(", ")
            )));
        }
        // Out of sight first (one rename), then deleted: never a half-removed volume in `ls`.
        let doomed = self.store.temp_dir("dead-volume-")?;
        let dir = self.dir(name);
        fs::rename(&dir, &doomed).map_err(|e| RuntimeError::io(&dir, e))?;
        fs::remove_dir_all(&doomed).map_err(|e| RuntimeError::io(&doomed, e))
    }
}

/// The named volumes a container's `-v` options mount: (name, target, read-only).
pub fn named_volumes(rec: &ContainerRecord) -> impl Iterator<Item = (&str, &str, bool)> {
    rec.host_config
        .binds
        .iter()
        .filter_map(|b| match crate::monitor::split_bind(b) {
            Some((src, dst, mode)) if !src.starts_with('/') => Some((
                src,
                dst,
                crate::monitor::bind_readonly(mode).unwrap_or(false),
            )),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_cannot_make_paths() {
        for ok in ["data", "my_vol.1", "A-b", "0"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "a/b", "-a", "_a", "a b", "a:b"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
