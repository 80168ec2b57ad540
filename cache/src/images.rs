//! Image records (`images/<id hex>.json`) and tags (`refs.json`).

use std::collections::BTreeMap;
use std::fs;
use std::io;

use serde::{Deserialize, Serialize};
use strata_image::digest::{chain_ids, Digest};
use strata_image::reference::Reference;
use strata_image::spec::{self, Descriptor, ImageConfig};

use crate::error::{Result, StoreError};
use crate::fsutil;
use crate::store::{list_hex_names, Store};

pub const IMAGE_SCHEMA: &str = "strata.image.v1";
pub const REFS_SCHEMA: &str = "strata.refs.v1";

/// What the store records of an image beyond its config blob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub schema: String,
    /// The image ID: the config digest.
    pub id: Digest,
    /// Chain IDs of the layers, bottom first.
    pub layers: Vec<Digest>,
    /// Manifests known to describe this image (from pull, load or push), newest last.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    /// The image this one was built or committed on, for `images -a` and history.
    #[serde(default)]
    pub parent: Option<Digest>,
    /// When the image entered this store.
    pub added: String,
}

/// An image with its parsed config.
#[derive(Debug, Clone)]
pub struct Image {
    pub record: ImageRecord,
    pub config: ImageConfig,
    pub config_bytes: Vec<u8>,
}

impl Image {
    pub fn id(&self) -> &Digest {
        &self.record.id
    }
    pub fn top_layer(&self) -> Option<&Digest> {
        self.record.layers.last()
    }
}

/// Tags and pinned digests, each mapping a full reference to an image ID.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Refs {
    #[serde(default)]
    pub schema: String,
    #[serde(default)]
    pub tags: BTreeMap<String, Digest>,
    /// `repository@manifest-digest` → image ID (Docker's RepoDigests).
    #[serde(default)]
    pub digests: BTreeMap<String, Digest>,
    /// Multi-platform tags (`manifest create`, `build --platform a,b`): tag → platform
    /// (`os/arch[/variant]`) → image ID. The tag itself (in `tags`) names the member for this
    /// host's platform, or the first, so a command that takes one image takes that one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub platforms: BTreeMap<String, BTreeMap<String, Digest>>,
}

impl Refs {
    /// Tags pointing at `id`, as full references.
    pub fn tags_of(&self, id: &Digest) -> Vec<String> {
        self.tags
            .iter()
            .filter(|(_, v)| *v == id)
            .map(|(k, _)| k.clone())
            .collect()
    }
    /// Every image a multi-platform tag holds.
    pub fn platform_members(&self) -> impl Iterator<Item = &Digest> {
        self.platforms.values().flat_map(|m| m.values())
    }

    /// Drops every reference to `id`: its tags and digests, and its place in multi-platform
    /// tags (a tag left with no member goes).
    pub fn forget(&mut self, id: &Digest) {
        self.tags.retain(|_, v| v != id);
        self.digests.retain(|_, v| v != id);
        for members in self.platforms.values_mut() {
            members.retain(|_, v| v != id);
        }
        self.platforms.retain(|_, m| !m.is_empty());
    }

    pub fn digests_of(&self, id: &Digest) -> Vec<String> {
        self.digests
            .iter()
            .filter(|(_, v)| *v == id)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

impl Store {
    fn image_path(&self, id: &Digest) -> std::path::PathBuf {
        self.images_dir().join(format!("{}.json", id.hex()))
    }

    pub fn has_image(&self, id: &Digest) -> bool {
        self.image_path(id).is_file()
    }

    pub fn image_record(&self, id: &Digest) -> Result<ImageRecord> {
        let p = self.image_path(id);
        let bytes = fs::read(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound(format!("no such image: {id}")),
            _ => StoreError::io(&p, e),
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", p.display())))
    }

    pub fn image(&self, id: &Digest) -> Result<Image> {
        let record = self.image_record(id)?;
        let config_bytes = self.read_blob(id, spec::MAX_JSON_BYTES)?;
        let config = ImageConfig::parse(&format!("config {id}"), &config_bytes)?;
        Ok(Image {
            record,
            config,
            config_bytes,
        })
    }

    pub fn list_images(&self) -> Result<Vec<Digest>> {
        list_hex_names(&self.images_dir())
    }

    /// Records an image whose config is `config_bytes` and whose layers (all present) are the
    /// chain of the config's diffIDs. The config blob is written first, then the record, so a
    /// visible record never points at missing content.
    pub fn put_image(
        &self,
        config_bytes: &[u8],
        parent: Option<&Digest>,
        manifests: Vec<Descriptor>,
    ) -> Result<Image> {
        let id = Digest::of(config_bytes);
        let config = ImageConfig::parse(&format!("config {id}"), config_bytes)?;
        let layers = chain_ids(&config.rootfs.diff_ids);
        for l in &layers {
            if !self.has_layer(l) {
                return Err(StoreError::NotFound(format!(
                    "image {id}: layer {l} is not in the store"
                )));
            }
        }
        self.put_blob_bytes(config_bytes)?;
        let _lock = self.meta_lock("images")?;
        let mut record = match self.image_record(&id) {
            Ok(r) => r,
            Err(StoreError::NotFound(_)) => ImageRecord {
                schema: IMAGE_SCHEMA.to_string(),
                id: id.clone(),
                layers,
                manifests: Vec::new(),
                parent: parent.cloned(),
                added: fsutil::now_rfc3339(),
            },
            Err(e) => return Err(e),
        };
        for m in manifests {
            record.manifests.retain(|x| x.digest != m.digest);
            record.manifests.push(m);
        }
        if record.parent.is_none() {
            record.parent = parent.cloned();
        }
        self.atomic_write(
            &self.image_path(&id),
            &serde_json::to_vec_pretty(&record).expect("record serializes"),
        )?;
        Ok(Image {
            record,
            config,
            config_bytes: config_bytes.to_vec(),
        })
    }

    /// Removes an image record (not its content: GC does that, once nothing needs it).
    pub fn remove_image_record(&self, id: &Digest) -> Result<()> {
        fsutil::remove_any(&self.image_path(id))
    }

    // ---- refs --------------------------------------------------------------------------

    pub fn refs(&self) -> Result<Refs> {
        let p = self.root().join("refs.json");
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                StoreError::Corrupt(format!(
                    "{}: {e}; repair with `strata system check --repair`",
                    p.display()
                ))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Refs {
                schema: REFS_SCHEMA.to_string(),
                ..Default::default()
            }),
            Err(e) => Err(StoreError::io(p, e)),
        }
    }

    /// Read-modify-write of the tags under their lock; the new file replaces the old atomically.
    pub fn update_refs<T>(&self, f: impl FnOnce(&mut Refs) -> Result<T>) -> Result<T> {
        let _lock = self.meta_lock("refs")?;
        let mut refs = self.refs()?;
        let out = f(&mut refs)?;
        refs.schema = REFS_SCHEMA.to_string();
        let p = self.root().join("refs.json");
        self.atomic_write(
            &p,
            &serde_json::to_vec_pretty(&refs).expect("refs serialize"),
        )?;
        Ok(out)
    }

    /// Points `reference` (a tag) at `id` (one image, whatever it named before).
    pub fn tag(&self, reference: &Reference, id: &Digest) -> Result<()> {
        if !self.has_image(id) {
            return Err(StoreError::NotFound(format!("no such image: {id}")));
        }
        let key = reference.to_string();
        self.update_refs(|r| {
            if reference.digest().is_some() {
                r.digests.insert(key, id.clone());
            } else {
                // A tag pointed at one image is no longer a multi-platform one.
                r.platforms.remove(&key);
                r.tags.insert(key, id.clone());
            }
            Ok(())
        })
    }

    /// Points the tag (or digest reference) `reference` at one image per platform (`members`,
    /// platform text → image ID): the tag names the host's member, or the first.
    pub fn tag_platforms(
        &self,
        reference: &Reference,
        members: BTreeMap<String, Digest>,
    ) -> Result<()> {
        let host = spec::Platform::host().to_string();
        for id in members.values() {
            if !self.has_image(id) {
                return Err(StoreError::NotFound(format!("no such image: {id}")));
            }
        }
        let primary = members
            .get(&host)
            .or_else(|| members.values().next())
            .cloned()
            .ok_or_else(|| StoreError::Invalid("a multi-platform tag needs an image".into()))?;
        let key = reference.to_string();
        self.update_refs(|r| {
            if reference.digest().is_some() {
                r.digests.insert(key.clone(), primary);
            } else {
                r.tags.insert(key.clone(), primary);
            }
            r.platforms.insert(key, members);
            Ok(())
        })
    }

    /// The per-platform members of the multi-platform tag `name`, if it is one.
    pub fn platforms_of(&self, name: &str) -> Result<Option<BTreeMap<String, Digest>>> {
        let Ok(r) = Reference::parse(name) else {
            return Ok(None);
        };
        Ok(self.refs()?.platforms.get(&r.to_string()).cloned())
    }

    /// [`Store::resolve_image`] for a platform: a multi-platform tag's member for it (an
    /// error listing the platforms it has when it has none), else the image `s` names.
    pub fn resolve_image_for(&self, s: &str, wanted: &spec::Platform) -> Result<Digest> {
        let Some(members) = self.platforms_of(s)? else {
            return self.resolve_image(s);
        };
        for (text, id) in &members {
            if spec::Platform::parse(text).is_ok_and(|p| wanted.is_met_by(&p)) {
                return Ok(id.clone());
            }
        }
        let has: Vec<&str> = members.keys().map(String::as_str).collect();
        Err(StoreError::NotFound(format!(
            "image {s} has no {wanted} variant (it has {})",
            has.join(", ")
        )))
    }

    /// Resolves what a user typed (`busybox`, `busybox:1`, an ID, an ID prefix, `sha256:...`)
    /// to an image ID.
    pub fn resolve_image(&self, s: &str) -> Result<Digest> {
        let refs = self.refs()?;
        let no_such = || StoreError::NotFound(format!("no such image: {s}"));
        let hex_prefix = s.strip_prefix("sha256:").unwrap_or(s);
        let looks_like_id = !hex_prefix.is_empty()
            && hex_prefix.len() <= 64
            && hex_prefix
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if let Ok(r) = Reference::parse(s) {
            let key = r.to_string();
            if let Some(id) = refs.tags.get(&key).or_else(|| refs.digests.get(&key)) {
                return Ok(id.clone());
            }
            if let Some(d) = r.digest() {
                // `repo@sha256:` of an image whose manifest we know.
                for id in self.list_images()? {
                    if let Ok(rec) = self.image_record(&id) {
                        if rec.manifests.iter().any(|m| &m.digest == d) {
                            return Ok(id);
                        }
                    }
                }
            }
        }
        if looks_like_id && (s.starts_with("sha256:") || hex_prefix.len() >= 3 || !s.contains(':'))
        {
            let matches: Vec<Digest> = self
                .list_images()?
                .into_iter()
                .filter(|d| d.hex().starts_with(hex_prefix))
                .collect();
            return match matches.len() {
                0 => Err(no_such()),
                1 => Ok(matches.into_iter().next().expect("one match")),
                _ => Err(StoreError::Conflict(format!(
                    "image ID prefix {s:?} is ambiguous"
                ))),
            };
        }
        Err(no_such())
    }
}
