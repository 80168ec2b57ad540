//! Build hints: records a build keeps in `buildcache/` beside its cache records. A hint only
//! saves work; it is never trusted for content, so a lost, stale or unreadable one costs the
//! next build some reading or copying, never a wrong result.
//!
//! | record | schema | what it remembers | when it goes |
//! |---|---|---|---|
//! | `dirimage-<dir hash>.json` | `strata.dirimage.v1` | the image a `--build-context NAME=DIR` became ([`Store::directory_image`]), with a stamp of the tree | its image is gone; `builder prune -a` |
//! | `reuse-<site>.json` | `strata.copyreuse.v1` | the layer a context COPY wrote last and the digest at each target (`executor::reuse` links unchanged files from it) | its layer is gone |
//! | `steps/<place hash>` (+ `.rows`) | the `StepKey` encoding | what the key of the last step built at a place (line, instruction) covered, for `build --dry-run`'s miss explanations | `builder prune -a` |
//!
//! Main entry points: [`Store::directory_image`], [`Store::reuse_hint`] /
//! [`Store::set_reuse_hint`], [`Store::step_hint_path`] / [`Store::replace_hint`], and
//! [`Store::stale_build_hints`] / [`Store::remove_build_hints`] for the garbage collector.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_image::digest::Digest;
use strata_image::layer::TarOptions;
use strata_image::spec::{self, History, ImageConfig, RootFs};

use crate::error::{IoContext, Result};
use crate::fsutil;
use crate::store::Store;

const DIR_IMAGE_SCHEMA: &str = "strata.dirimage.v1";
/// The version of `reuse-*.json` (also part of each site's name, so a new version starts afresh).
pub const REUSE_SCHEMA: &str = "strata.copyreuse.v1";

/// `dirimage-<hash of the directory's path>.json`.
#[derive(Serialize, Deserialize)]
struct DirImage {
    schema: String,
    stamp: Digest,
    image: Digest,
}

/// `reuse-<site>.json`.
#[derive(Serialize, Deserialize)]
struct ReuseRecord {
    schema: String,
    /// Chain ID of the layer the COPY produced.
    layer: Digest,
    /// Target path → content digest of the regular file written there.
    files: BTreeMap<String, Digest>,
}

/// What a reuse hint offers: a layer still in the store and the files it holds.
pub struct ReuseHint {
    pub layer: Digest,
    pub files: BTreeMap<String, Digest>,
}

impl Store {
    /// `FROM NAME` of a directory context: its files become a one-layer image (like `import`
    /// of that tree), whose ID depends only on the content. When the tree's metadata is what
    /// it was when the image was made (the trust the context's stat cache has), the image is
    /// reused without reading the files.
    pub fn directory_image(&self, name: &str, dir: &Path) -> Result<(Digest, ImageConfig)> {
        let _lease = self.lease()?;
        let stamp = tree_stamp(dir).at(dir)?;
        let memo = self.buildcache_dir().join(format!(
            "dirimage-{}.json",
            &Digest::of(dir.as_os_str().as_encoded_bytes()).hex()[..32]
        ));
        if let Some(img) = fs::read(&memo)
            .ok()
            .and_then(|b| serde_json::from_slice::<DirImage>(&b).ok())
            .filter(|m| m.schema == DIR_IMAGE_SCHEMA && m.stamp == stamp)
            .and_then(|m| self.image(&m.image).ok())
        {
            return Ok((img.id().clone(), img.config));
        }
        let layer = self.add_layer_from_dir(None, dir, false, &TarOptions::default())?;
        let cfg = ImageConfig {
            architecture: crate::transfer::host_arch().to_string(),
            os: "linux".to_string(),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![layer.diff_id],
            },
            history: vec![History {
                created_by: Some(format!("build context {name}")),
                ..Default::default()
            }],
            ..Default::default()
        };
        let img = self.put_image(&spec::to_canonical_json(&cfg), None, Vec::new())?;
        let record = DirImage {
            schema: DIR_IMAGE_SCHEMA.to_string(),
            stamp,
            image: img.id().clone(),
        };
        // Best effort: without it the next build only reads the tree again.
        let _ = fsutil::atomic_write(
            &self.tmp_dir(),
            &memo,
            &serde_json::to_vec(&record).unwrap_or_default(),
        );
        Ok((img.id().clone(), img.config))
    }

    fn reuse_path(&self, site: &str) -> PathBuf {
        self.buildcache_dir().join(format!("reuse-{site}.json"))
    }

    /// The layer the COPY at `site` wrote last, if it is still in the store.
    pub fn reuse_hint(&self, site: &str) -> Option<ReuseHint> {
        let bytes = fs::read(self.reuse_path(site)).ok()?;
        let rec: ReuseRecord = serde_json::from_slice(&bytes).ok()?;
        if rec.schema != REUSE_SCHEMA || !self.has_layer(&rec.layer) {
            return None;
        }
        Some(ReuseHint {
            layer: rec.layer,
            files: rec.files,
        })
    }

    /// Records what the COPY at `site` wrote into `layer`. Best effort: a lost record only
    /// costs the next build a copy.
    pub fn set_reuse_hint(&self, site: &str, layer: &Digest, files: BTreeMap<String, Digest>) {
        let rec = ReuseRecord {
            schema: REUSE_SCHEMA.to_string(),
            layer: layer.clone(),
            files,
        };
        if let Ok(bytes) = serde_json::to_vec(&rec) {
            let _ = fsutil::atomic_write(&self.tmp_dir(), &self.reuse_path(site), &bytes);
        }
    }

    /// Where the key inputs of the last step built at `place` are remembered.
    pub fn step_hint_path(&self, place: &str) -> PathBuf {
        self.buildcache_dir()
            .join("steps")
            .join(Digest::of(place.as_bytes()).hex())
    }

    /// Replaces the hint at `path` with what `write` writes, by rename (a reader sees the old
    /// or the new one), without fsync: a Dockerfile of thousands of steps does not wait for
    /// the disk for hints. Best effort.
    pub fn replace_hint(
        &self,
        path: &Path,
        write: impl FnOnce(&mut std::io::BufWriter<fs::File>) -> std::io::Result<()>,
    ) {
        if let Some(parent) = path.parent() {
            let _ = fs::create_dir_all(parent);
        }
        let tmp = self.temp_path("hint");
        let written = fs::File::create(&tmp).and_then(|f| {
            let mut w = std::io::BufWriter::new(f);
            write(&mut w)?;
            w.flush()
        });
        if written.is_err() || fs::rename(&tmp, path).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }

    /// Hints that point at nothing any more: reuse records whose layer is gone and
    /// directory-context records whose image is gone. Unreadable ones count as stale.
    pub fn stale_build_hints(&self) -> Result<Vec<(PathBuf, &'static str)>> {
        let mut out = Vec::new();
        let dir = self.buildcache_dir();
        for e in fs::read_dir(&dir).at(&dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".json") {
                continue;
            }
            let bytes = fs::read(e.path()).unwrap_or_default();
            if name.starts_with("reuse-") {
                let live = serde_json::from_slice::<ReuseRecord>(&bytes)
                    .is_ok_and(|r| self.has_layer(&r.layer));
                if !live {
                    out.push((e.path(), "COPY reuse record of a removed layer"));
                }
            } else if name.starts_with("dirimage-") {
                let live = serde_json::from_slice::<DirImage>(&bytes)
                    .is_ok_and(|r| self.has_image(&r.image));
                if !live {
                    out.push((e.path(), "directory-context record of a removed image"));
                }
            }
        }
        Ok(out)
    }

    /// `builder prune`: removes the stale hints; with `all` (`-a`) also every
    /// directory-context record and every step's remembered inputs.
    pub fn remove_build_hints(&self, all: bool) -> Result<()> {
        for (path, _) in self.stale_build_hints()? {
            let _ = fs::remove_file(path);
        }
        if !all {
            return Ok(());
        }
        let dir = self.buildcache_dir();
        for e in fs::read_dir(&dir).at(&dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("dirimage-") && name.ends_with(".json") {
                let _ = fs::remove_file(e.path());
            }
        }
        let steps = dir.join("steps");
        if steps.exists() {
            fsutil::remove_any(&steps)?;
        }
        Ok(())
    }
}

/// A digest of the directory's and every entry's path and `lstat` (type, mode, owner, size,
/// inode, mtime and ctime with nanoseconds, link target) under `dir`, in a fixed order;
/// symlinks are not followed. Any change to a file's content or attributes changes its ctime,
/// so it changes the stamp.
fn tree_stamp(dir: &Path) -> std::io::Result<Digest> {
    use std::os::unix::fs::MetadataExt;
    let line = |m: &fs::Metadata| {
        format!(
            "\0{} {} {} {} {} {}.{} {}.{} ",
            m.mode(),
            m.uid(),
            m.gid(),
            m.size(),
            m.ino(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        )
    };
    let mut h = strata_image::digest::Hasher::new();
    h.update(line(&fs::metadata(dir)?).as_bytes());
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(dir.join(&rel))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for n in names {
            let p = rel.join(&n);
            let m = fs::symlink_metadata(dir.join(&p))?;
            h.update(b"\n");
            h.update(p.as_os_str().as_encoded_bytes());
            h.update(line(&m).as_bytes());
            if m.file_type().is_symlink() {
                h.update(fs::read_link(dir.join(&p))?.as_os_str().as_encoded_bytes());
            } else if m.is_dir() {
                stack.push(p);
            }
        }
    }
    Ok(h.finish())
}
