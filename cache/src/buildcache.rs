//! The build-cache index: `buildcache/<key hex>.json` maps a step's cache key to the image
//! its step produced. Records are written only after the result is fully in the store.
//!
//! A record holds its image's content, not the image: its config blob and the layers the
//! config names are kept for it by the garbage collector ([`Store::cache_layers`]), while the
//! image record itself goes with `image prune -a` as Docker's images do. A hit whose image
//! record is gone brings it back from that content ([`Store::cache_image`]); `builder prune`
//! drops records and so their content.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use strata_image::digest::Digest;

use crate::error::{IoContext, Result, StoreError};
use crate::fsutil::{self, FileLock, LockMode};
use crate::store::{list_hex_names, Store};

pub const CACHE_SCHEMA: &str = "strata.cache.v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheRecord {
    pub schema: String,
    pub key: Digest,
    /// The (possibly intermediate) image the step produced.
    pub image: Digest,
    pub created: String,
    pub last_used: String,
}

impl Store {
    fn cache_path(&self, key: &Digest) -> std::path::PathBuf {
        self.buildcache_dir().join(format!("{}.json", key.hex()))
    }

    /// The result recorded for `key`, if it and its image are still complete. A record that
    /// cannot be read is moved aside (and so rebuilt by the next build).
    pub fn cache_get(&self, key: &Digest) -> Result<Option<CacheRecord>> {
        let p = self.cache_path(key);
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(crate::error::StoreError::io(&p, e)),
        };
        match serde_json::from_slice::<CacheRecord>(&bytes) {
            Ok(r)
                if r.schema == CACHE_SCHEMA && &r.key == key && self.cache_content_present(&r) =>
            {
                Ok(Some(r))
            }
            Ok(_) => Ok(None),
            Err(e) => {
                tracing::warn!(
                    "{}: corrupt build-cache record moved aside: {e}",
                    p.display()
                );
                self.move_aside(&p)?;
                Ok(None)
            }
        }
    }

    /// Records `image` as the result of `key`.
    pub fn cache_put(&self, key: &Digest, image: &Digest) -> Result<()> {
        let now = fsutil::now_rfc3339();
        let r = CacheRecord {
            schema: CACHE_SCHEMA.to_string(),
            key: key.clone(),
            image: image.clone(),
            created: now.clone(),
            last_used: now,
        };
        self.atomic_write(
            &self.cache_path(key),
            &serde_json::to_vec_pretty(&r).expect("serializes"),
        )
    }

    /// Marks a record used now (for `builder prune --keep-storage` ordering). Advisory, so it
    /// is replaced atomically but not synced, and at most once a minute per record: a warm
    /// build touches every record it hits.
    pub fn cache_touch(&self, rec: &CacheRecord) -> Result<()> {
        let now = fsutil::now_rfc3339();
        let recent = match (
            fsutil::parse_rfc3339(&rec.last_used),
            fsutil::parse_rfc3339(&now),
        ) {
            (Some(a), Some(b)) => b - a < 60,
            _ => false,
        };
        if recent {
            return Ok(());
        }
        let mut r = rec.clone();
        r.last_used = now;
        let path = self.cache_path(&r.key);
        let tmp = self.temp_path("touch");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&r).expect("serializes")).at(&tmp)?;
        std::fs::rename(&tmp, &path).at(&path)
    }

    /// Every readable record; unreadable ones are moved aside.
    pub fn cache_records(&self) -> Result<Vec<CacheRecord>> {
        let mut out = Vec::new();
        for key in list_hex_names(&self.buildcache_dir())? {
            if let Some(r) = self.cache_get_any(&key)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn cache_get_any(&self, key: &Digest) -> Result<Option<CacheRecord>> {
        let p = self.cache_path(key);
        let bytes = fs::read(&p).at(&p)?;
        match serde_json::from_slice::<CacheRecord>(&bytes) {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                tracing::warn!(
                    "{}: corrupt build-cache record moved aside: {e}",
                    p.display()
                );
                self.move_aside(&p)?;
                Ok(None)
            }
        }
    }

    /// The layers (chain IDs) a record's image is made of: from its image record, or, when
    /// that is gone, from its config. Empty when neither can be read.
    pub fn cache_layers(&self, rec: &CacheRecord) -> Vec<Digest> {
        if let Ok(r) = self.image_record(&rec.image) {
            return r.layers;
        }
        self.read_blob(&rec.image, strata_image::spec::MAX_JSON_BYTES)
            .ok()
            .and_then(|b| strata_image::spec::ImageConfig::parse("config", &b).ok())
            .map(|c| strata_image::digest::chain_ids(&c.rootfs.diff_ids))
            .unwrap_or_default()
    }

    /// Whether a record's result can be had: its image, or its config and every layer.
    fn cache_content_present(&self, rec: &CacheRecord) -> bool {
        self.has_image(&rec.image)
            || (self.has_blob(&rec.image)
                && self.cache_layers(rec).iter().all(|l| self.has_layer(l)))
    }

    /// A hit's image, its record brought back from the config and layers the cache kept
    /// when `image prune` removed it (`parent`: the build's image before the step).
    pub fn cache_image(
        &self,
        rec: &CacheRecord,
        parent: Option<&Digest>,
    ) -> Result<Option<crate::images::Image>> {
        if let Ok(img) = self.image(&rec.image) {
            return Ok(Some(img));
        }
        if !self.cache_content_present(rec) {
            return Ok(None);
        }
        let bytes = self.read_blob(&rec.image, strata_image::spec::MAX_JSON_BYTES)?;
        Ok(Some(self.put_image(&bytes, parent, Vec::new())?))
    }

    pub fn cache_remove(&self, key: &Digest) -> Result<()> {
        fsutil::remove_any(&self.cache_path(key))
    }

    fn move_aside(&self, p: &std::path::Path) -> Result<()> {
        let dest = self.temp_path("corrupt-cache");
        fs::rename(p, &dest).at(p)
    }
}

/// A `RUN --mount=type=cache` directory, held for the duration of a step.
pub struct CacheMount {
    pub dir: PathBuf,
    /// Shared for `sharing=shared`, exclusive for `locked` (and `private` when first).
    _lock: FileLock,
    /// True when this step created the directory (it may be seeded).
    pub created: bool,
}

impl Store {
    /// Where cache mounts live: `buildcache/mounts/<sha256(id)>/`, each with a `.lock` file.
    pub fn cache_mounts_dir(&self) -> PathBuf {
        self.buildcache_dir().join("mounts")
    }

    /// Opens (creating on first use, with `uid`/`gid`/`mode`) the cache mount `id`. `exclusive`
    /// waits for other users to finish (`sharing=locked`); with `try_only`, a busy mount is
    /// None instead (`sharing=private` then uses a fresh directory).
    pub fn cache_mount(
        &self,
        id: &str,
        owner: (u32, u32),
        mode: u32,
        exclusive: bool,
        try_only: bool,
    ) -> Result<Option<CacheMount>> {
        let base = self.cache_mounts_dir();
        fs::create_dir_all(&base).at(&base)?;
        let hex = Digest::of(id.as_bytes()).hex().to_string();
        let lock_path = base.join(format!("{hex}.lock"));
        let mode_lock = if exclusive {
            LockMode::Exclusive
        } else {
            LockMode::Shared
        };
        let lock = if try_only {
            match FileLock::try_acquire(&lock_path, mode_lock)? {
                Some(l) => l,
                None => return Ok(None),
            }
        } else {
            FileLock::acquire(&lock_path, mode_lock)?
        };
        let dir = base.join(&hex);
        let created = match fs::create_dir(&dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(StoreError::io(&dir, e)),
        };
        if created {
            use std::os::unix::fs::PermissionsExt as _;
            // The id, for `builder cache export` (the directory is named by its hash).
            let _ = fs::write(base.join(format!("{hex}.id")), id);
            std::os::unix::fs::chown(&dir, Some(owner.0), Some(owner.1)).at(&dir)?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode & 0o7777)).at(&dir)?;
        }
        Ok(Some(CacheMount {
            dir,
            _lock: lock,
            created,
        }))
    }

    /// Every cache mount: (directory name = sha256 of the id, the id when recorded, bytes,
    /// last modified as RFC 3339).
    pub fn cache_mounts(&self) -> Vec<(String, Option<String>, u64, String)> {
        let base = self.cache_mounts_dir();
        let Ok(entries) = fs::read_dir(&base) else {
            return Vec::new();
        };
        let mut out: Vec<_> = entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let id = fs::read_to_string(base.join(format!("{name}.id"))).ok();
                let modified = e
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .map(|t| fsutil::rfc3339(t.into()))
                    .unwrap_or_default();
                (name, id, fsutil::tree_size(&e.path()), modified)
            })
            .collect();
        out.sort();
        out
    }

    /// Removes every cache mount nobody is using; returns how many and their bytes.
    pub fn prune_cache_mounts(&self) -> Result<(usize, u64)> {
        let base = self.cache_mounts_dir();
        let mut removed = 0;
        let mut bytes = 0;
        let Ok(entries) = fs::read_dir(&base) else {
            return Ok((0, 0));
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".lock") || !e.path().is_dir() {
                continue;
            }
            let lock_path = base.join(format!("{name}.lock"));
            let Some(_lock) = FileLock::try_acquire(&lock_path, LockMode::Exclusive)? else {
                continue;
            };
            bytes += fsutil::tree_size(&e.path());
            fsutil::remove_any(&e.path())?;
            let _ = fs::remove_file(base.join(format!("{name}.id")));
            removed += 1;
        }
        Ok((removed, bytes))
    }
}
