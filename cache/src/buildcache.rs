//! The build-cache index: `buildcache/<key hex>.json` maps a step's cache key to the image
//! its step produced. Records are written only after the result is fully in the store.

use std::fs;

use serde::{Deserialize, Serialize};
use strata_image::digest::Digest;

use crate::error::{IoContext, Result};
use crate::fsutil;
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
            Ok(r) if r.schema == CACHE_SCHEMA && &r.key == key && self.has_image(&r.image) => {
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

    pub fn cache_remove(&self, key: &Digest) -> Result<()> {
        fsutil::remove_any(&self.cache_path(key))
    }

    fn move_aside(&self, p: &std::path::Path) -> Result<()> {
        let dest = self.temp_path("corrupt-cache");
        fs::rename(p, &dest).at(p)
    }
}
