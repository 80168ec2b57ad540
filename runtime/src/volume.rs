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
use crate::options::VolumeSpec;
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
    /// The local driver's options (`volume create -o`): `type`, `device`, `o`. With none, the
    /// volume is its `_data` directory.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// The version of `meta.json`.
pub const VOLUME_FORMAT: &str = "strata.volume.v1";

/// The label of anonymous volumes (`-v /path`, an image's `VOLUME`), Docker's (23+): they go
/// with a `--rm` container or `rm -v`, and `volume prune` takes only them without `-a`.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// A named volume.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub name: String,
    pub meta: VolumeMeta,
    /// The directory containers mount.
    pub mountpoint: PathBuf,
}

impl Volume {
    pub fn is_anonymous(&self) -> bool {
        self.meta.labels.contains_key(ANONYMOUS_LABEL)
    }
}

/// Checks the local driver's options as Docker's local driver takes them: `type=tmpfs`
/// (`device` anything, `o` the tmpfs options) or `type=none` with `o=bind` and a host
/// directory as `device`; other filesystems are not supported.
pub fn check_options(options: &BTreeMap<String, String>) -> Result<(), RuntimeError> {
    let bad = |m: String| Err(RuntimeError::Invalid(m));
    if options.is_empty() {
        return Ok(());
    }
    for k in options.keys() {
        if !["type", "device", "o"].contains(&k.as_str()) {
            return bad(format!("invalid option key: {k:?}"));
        }
    }
    let o = options.get("o").map(String::as_str).unwrap_or("");
    match (
        options.get("type").map(String::as_str),
        options.get("device"),
    ) {
        (Some("tmpfs"), _) => Ok(()),
        (Some("none"), Some(dev)) if o.split(',').any(|x| x == "bind" || x == "rbind") => {
            if !dev.starts_with('/') || !std::path::Path::new(dev).is_dir() {
                return bad(format!(
                    "bind device {dev:?} must be an existing absolute directory"
                ));
            }
            Ok(())
        }
        (None, _) => bad("missing required option: \"type\"".into()),
        (Some(t), _) => bad(format!(
            "volume option type {t:?} is not supported (tmpfs, or none with o=bind and a device)"
        )),
    }
}

pub struct Volumes<'a> {
    store: &'a Store,
}

pub use crate::options::valid_volume_name as valid_name;

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
        self.create_with(name, labels, BTreeMap::new())
    }

    /// [`Volumes::create`] with the local driver's options (see [`check_options`]).
    pub fn create_with(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        options: BTreeMap<String, String>,
    ) -> Result<Volume, RuntimeError> {
        check_options(&options)?;
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
            options,
        };
        let bytes = serde_json::to_vec_pretty(&meta)
            .map_err(|e| RuntimeError::Invalid(format!("volume {name}: {e}")))?;
        // Written last and atomically: a volume without its meta is an interrupted create,
        // which the next create of the same name completes.
        self.store.atomic_write(&dir.join("meta.json"), &bytes)?;
        self.event(name, "create");
        self.get(name)
    }

    /// A new anonymous volume (a random 64-hex name, as Docker's).
    pub fn create_anonymous(&self) -> Result<Volume, RuntimeError> {
        let labels = BTreeMap::from([(ANONYMOUS_LABEL.to_string(), String::new())]);
        self.create(&crate::container::new_id(), labels)
    }

    /// Removes the anonymous volumes `rec` mounted (the container is gone: `--rm`, `rm -v`);
    /// one another container also mounts stays.
    pub fn remove_anonymous_of(&self, rec: &ContainerRecord) {
        for (name, _, _) in named_volumes(rec) {
            if self.get(name).is_ok_and(|v| v.is_anonymous()) {
                let _ = self.remove(name);
            }
        }
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
        let doomed = self.store.temp_dir("dead-volume")?;
        let dir = self.dir(name);
        fs::rename(&dir, &doomed).map_err(|e| RuntimeError::io(&dir, e))?;
        self.event(name, "destroy");
        fs::remove_dir_all(&doomed).map_err(|e| RuntimeError::io(&doomed, e))
    }

    /// Records a volume event (`strata events`).
    fn event(&self, name: &str, action: &str) {
        let attributes = BTreeMap::from([("driver".to_string(), "local".to_string())]);
        strata_cache::events::record(
            self.store,
            &strata_cache::events::Event::new("volume", action, name, attributes),
        );
    }
}

/// The named volumes a container's `-v` options mount: (name, target, read-only).
pub fn named_volumes(rec: &ContainerRecord) -> impl Iterator<Item = (&str, &str, bool)> {
    rec.host_config.binds.iter().filter_map(|b| match b {
        VolumeSpec::Named {
            name,
            target,
            readonly,
            ..
        } => Some((name.as_str(), target.as_str(), *readonly)),
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
