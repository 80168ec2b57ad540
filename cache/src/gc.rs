//! Garbage collection: what no tag, container, build-cache record or kept image needs goes.
//!
//! Roots are tags, containers and build-cache records; an image is kept when a root names it
//! or it is the parent of a kept image. Everything reachable from kept images (config and
//! manifest blobs, layer chains and their blobs) stays; the rest is removed under the
//! exclusive store lock, so no in-flight operation (which holds a lease) loses anything.

use std::collections::BTreeSet;
use std::fs;

use serde::Deserialize;
use strata_image::digest::Digest;

use crate::error::{IoContext, Result};
use crate::fsutil;
use crate::store::Store;

/// What a prune removed.
#[derive(Debug, Default, Clone)]
pub struct GcReport {
    pub images: Vec<Digest>,
    pub layers: usize,
    pub blobs: usize,
    pub tmp_entries: usize,
    pub bytes: u64,
}

/// Which images a prune may remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImagePrune {
    /// None: only unreachable content goes.
    None,
    /// Untagged images nothing needs.
    Dangling,
    /// Every image no container or build-cache record needs.
    Unused,
}

/// The part of a container's record the store needs: which image it stands on.
#[derive(Debug, Clone, Deserialize)]
pub struct ContainerLink {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Image")]
    pub image: Digest,
}

impl Store {
    /// Images that containers use.
    pub fn container_links(&self) -> Result<Vec<ContainerLink>> {
        let dir = self.containers_dir();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).at(&dir)? {
            let e = e.at(&dir)?;
            let p = e.path().join("config.json");
            match fs::read(&p) {
                Ok(b) => match serde_json::from_slice::<ContainerLink>(&b) {
                    Ok(l) => out.push(l),
                    Err(e) => tracing::warn!("{}: {e}", p.display()),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(crate::error::StoreError::io(&p, e)),
            }
        }
        Ok(out)
    }

    /// Removes images per `prune`, then everything unreachable, and sweeps `tmp/`.
    pub fn prune(&self, prune: ImagePrune) -> Result<GcReport> {
        let _x = self.exclusive()?;
        let mut report = GcReport::default();
        if prune != ImagePrune::None {
            let refs = self.refs()?;
            // The build cache pins no image: it keeps its images' content itself (see
            // `reachable`), as BuildKit's cache is not images either.
            let mut roots: BTreeSet<Digest> = self
                .container_links()?
                .into_iter()
                .map(|c| c.image)
                .collect();
            if prune == ImagePrune::Dangling {
                roots.extend(refs.tags.values().cloned());
                roots.extend(refs.digests.values().cloned());
                roots.extend(refs.platform_members().cloned());
            }
            let kept = self.with_parents(&roots)?;
            for id in self.list_images()? {
                if !kept.contains(&id) {
                    self.update_refs(|r| {
                        r.forget(&id);
                        Ok(())
                    })?;
                    self.remove_image_record(&id)?;
                    report.images.push(id);
                }
            }
        }
        self.collect_locked(&mut report)?;
        report.tmp_entries = self.sweep_tmp_locked()?;
        Ok(report)
    }

    /// Removes unreachable layers and blobs if no lease is held right now; returns None when
    /// it had to skip (the next prune will reclaim them).
    pub fn try_collect(&self) -> Result<Option<GcReport>> {
        let Some(_x) = self.try_exclusive()? else {
            return Ok(None);
        };
        let mut report = GcReport::default();
        self.collect_locked(&mut report)?;
        Ok(Some(report))
    }

    /// `roots` plus every ancestor (parent chain) of them that is still recorded.
    fn with_parents(&self, roots: &BTreeSet<Digest>) -> Result<BTreeSet<Digest>> {
        let mut kept = BTreeSet::new();
        for r in roots {
            let mut cur = Some(r.clone());
            while let Some(id) = cur {
                if !kept.insert(id.clone()) {
                    break;
                }
                cur = self.image_record(&id).ok().and_then(|rec| rec.parent);
            }
        }
        Ok(kept)
    }

    /// Everything reachable from the recorded images and the build cache's records:
    /// (layers, blobs).
    pub fn reachable(&self) -> Result<(BTreeSet<Digest>, BTreeSet<Digest>)> {
        let mut layers = BTreeSet::new();
        let mut blobs = BTreeSet::new();
        for rec in self.cache_records()? {
            blobs.insert(rec.image.clone());
            layers.extend(self.cache_layers(&rec));
        }
        for id in self.list_images()? {
            let rec = match self.image_record(&id) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("skipping unreadable image record {id}: {e}");
                    continue;
                }
            };
            blobs.insert(id.clone());
            for m in &rec.manifests {
                blobs.insert(m.digest.clone());
            }
            for l in &rec.layers {
                layers.insert(l.clone());
            }
        }
        // Parents of kept layers are kept too (they are the same chains, but be safe).
        let mut queue: Vec<Digest> = layers.iter().cloned().collect();
        while let Some(l) = queue.pop() {
            if let Ok(meta) = self.layer_meta(&l) {
                for b in &meta.blobs {
                    blobs.insert(b.digest.clone());
                }
                blobs.insert(meta.diff_id.clone());
                if let Some(p) = meta.parent {
                    if layers.insert(p.clone()) {
                        queue.push(p);
                    }
                }
            }
        }
        Ok((layers, blobs))
    }

    fn collect_locked(&self, report: &mut GcReport) -> Result<()> {
        let (keep_layers, keep_blobs) = self.reachable()?;
        let doomed: Vec<Digest> = self
            .list_layers()?
            .into_iter()
            .filter(|l| !keep_layers.contains(l))
            .collect();
        for l in self.children_first(doomed) {
            report.bytes += self.layer_meta(&l).map(|m| m.size).unwrap_or(0);
            self.remove_layer_locked(&l)?;
            report.layers += 1;
        }
        for b in self.list_blobs()? {
            if keep_blobs.contains(&b) {
                continue;
            }
            report.bytes += self.blob_size(&b).unwrap_or(0);
            fsutil::remove_any(&self.blob_path(&b))?;
            report.blobs += 1;
        }
        Ok(())
    }

    /// `layers` ordered so that a layer comes before its parent: deleted in this order, a
    /// kill at any moment leaves no layer whose parent is gone, only unused layers.
    pub(crate) fn children_first(&self, layers: Vec<Digest>) -> Vec<Digest> {
        let mut depth: std::collections::BTreeMap<Digest, usize> = Default::default();
        for l in &layers {
            let mut chain = Vec::new();
            let mut cur = Some(l.clone());
            let mut base = 0;
            while let Some(c) = cur {
                if let Some(&d) = depth.get(&c) {
                    base = d;
                    break;
                }
                cur = self.layer_meta(&c).ok().and_then(|m| m.parent);
                chain.push(c);
            }
            for (i, c) in chain.into_iter().rev().enumerate() {
                depth.insert(c, base + i + 1);
            }
        }
        let mut out = layers;
        out.sort_by_key(|l| std::cmp::Reverse(depth.get(l).copied().unwrap_or(0)));
        out
    }

    /// Removes a layer, out of sight first (one rename), so a half-deleted layer is never
    /// visible. Only with the exclusive lock held.
    pub(crate) fn remove_layer_locked(&self, l: &Digest) -> Result<()> {
        let src = self.layer_path(l);
        let dead = self.temp_path("dead-layer");
        fs::rename(&src, &dead).at(&src)?;
        fsutil::remove_any(&dead)
    }

    /// Removes leftovers in `tmp/`. Only call with the exclusive lock held: then no leased
    /// operation runs, and what a lease-less one writes carries its live pid.
    fn sweep_tmp_locked(&self) -> Result<usize> {
        let mut n = 0;
        for p in self.tmp_leftovers()? {
            fsutil::remove_any(&p)?;
            n += 1;
        }
        Ok(n)
    }

    /// The entries of `tmp/` no live command owns (see [`fsutil::tmp_name`]).
    pub(crate) fn tmp_leftovers(&self) -> Result<Vec<std::path::PathBuf>> {
        let dir = self.tmp_dir();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).at(&dir)? {
            let e = e.at(&dir)?;
            if !fsutil::tmp_owner_alive(&e.file_name().to_string_lossy()) {
                out.push(e.path());
            }
        }
        Ok(out)
    }

    /// Sweeps `tmp/` if no operation is running; returns how many entries went.
    pub fn try_sweep_tmp(&self) -> Result<Option<usize>> {
        let Some(_x) = self.try_exclusive()? else {
            return Ok(None);
        };
        self.sweep_tmp_locked().map(Some)
    }
}
