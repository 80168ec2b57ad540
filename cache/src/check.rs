//! `system check`: every store invariant, asserted. Errors are corruption; garbage (leftovers
//! of crashes, unreferenced content) is reported but is not an error.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use strata_image::digest::{chain_ids, Digest, Hasher};
use strata_image::spec::ImageConfig;

use crate::error::{IoContext, Result};
use crate::fsutil;
use crate::layers::chain_id;
use crate::store::Store;

/// The outcome of a check.
#[derive(Debug, Default, Clone)]
pub struct CheckReport {
    /// Broken invariants.
    pub errors: Vec<String>,
    /// Harmless leftovers a prune reclaims.
    pub garbage: Vec<String>,
    /// What `--repair` did.
    pub repaired: Vec<String>,
    pub blobs: usize,
    pub layers: usize,
    pub images: usize,
    pub tags: usize,
    pub containers: usize,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

impl Store {
    /// Hint files that point at nothing any more: the build's (see
    /// [`Store::stale_build_hints`]) and `containers/.names/<name>` whose container directory
    /// is gone.
    fn stale_hints(&self) -> Result<Vec<(PathBuf, &'static str)>> {
        let mut out = self.stale_build_hints()?;
        let names = self.containers_dir().join(".names");
        if let Ok(entries) = fs::read_dir(&names) {
            for e in entries.flatten() {
                let id = fs::read_to_string(e.path()).unwrap_or_default();
                let id = id.trim();
                if id.is_empty() || id.contains('/') || !self.containers_dir().join(id).is_dir() {
                    out.push((e.path(), "name of a removed container"));
                }
            }
        }
        Ok(out)
    }

    /// Checks every invariant. `live` says whether a container ID has a live process (so its
    /// mounts are expected). With `repair`, leftovers are swept and orphan mounts unmounted.
    pub fn check(&self, repair: bool, live: &dyn Fn(&str) -> bool) -> Result<CheckReport> {
        let mut r = CheckReport::default();
        let exclusive = if repair {
            Some(self.exclusive()?)
        } else {
            self.try_exclusive()?
        };
        self.check_blobs(&mut r, repair)?;
        let layers = self.check_layers(&mut r)?;
        let image_set = self.check_images(&mut r, &layers.all)?;
        self.check_tags(&mut r, repair, &image_set)?;
        let container_ids = self.check_containers(&mut r, &image_set)?;
        self.check_build_hints(&mut r, repair)?;
        if repair && !layers.orphans.is_empty() {
            self.remove_orphans(&mut r, &layers)?;
        }
        self.unreferenced(&mut r, &layers)?;
        if exclusive.is_some() {
            self.tmp_garbage(&mut r, repair)?;
        }
        self.stray_mounts(&mut r, repair, &container_ids, live)?;
        Ok(r)
    }

    /// I1: every blob hashes to its name.
    fn check_blobs(&self, r: &mut CheckReport, repair: bool) -> Result<()> {
        let blob_dir = self.blobs_dir();
        for e in fs::read_dir(&blob_dir).at(&blob_dir)? {
            let e = e.at(&blob_dir)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(d) = Digest::from_hex(&name) else {
                r.errors
                    .push(format!("blobs/sha256/{name}: name is not a sha256 digest"));
                continue;
            };
            r.blobs += 1;
            match hash_file(&e.path()) {
                Ok(actual) if actual == d => {}
                Ok(actual) => {
                    r.errors
                        .push(format!("blob {d}: content hashes to {actual}"));
                    if repair {
                        fsutil::remove_any(&e.path())?;
                        r.repaired.push(format!("removed corrupt blob {d}"));
                    }
                }
                Err(err) => r.errors.push(format!("blob {d}: {err}")),
            }
        }

        Ok(())
    }

    /// Layers: complete, consistent chain IDs, parents present. A layer no image uses whose
    /// parent is gone (an older strata's prune, killed, deleted parents first) is garbage,
    /// which `--repair` removes.
    fn check_layers(&self, r: &mut CheckReport) -> Result<LayerCheck> {
        let (keep_layers, keep_blobs) = self.reachable()?;
        let layers = self.list_layers()?;
        let layer_set: BTreeSet<Digest> = layers.iter().cloned().collect();
        let mut orphans = Vec::new();
        for l in &layers {
            r.layers += 1;
            match self.layer_meta(l) {
                Err(e) => r.errors.push(format!("layer {l}: {e}")),
                Ok(m) => {
                    if &m.chain_id != l || &chain_id(m.parent.as_ref(), &m.diff_id) != l {
                        r.errors.push(format!(
                            "layer {l}: chain ID does not match its parent and diffID"
                        ));
                    }
                    if let Some(p) = &m.parent {
                        if !layer_set.contains(p) && keep_layers.contains(l) {
                            r.errors
                                .push(format!("layer {l}: parent layer {p} is missing"));
                        } else if !layer_set.contains(p) {
                            r.garbage.push(format!(
                                "layer {l}: parent layer {p} is missing, and no image uses it"
                            ));
                            orphans.push(l.clone());
                            continue;
                        }
                    }
                    if !self.layer_diff(l).is_dir() {
                        r.errors
                            .push(format!("layer {l}: diff directory is missing"));
                    } else if m.canonical {
                        // The directory must still be exactly what its diffID says.
                        if let Err(e) = self.write_layer_tar(l, std::io::sink()) {
                            r.errors.push(format!("layer {l}: {e}"));
                        }
                    }
                }
            }
        }
        let layer_dir = self.layers_dir();
        for e in fs::read_dir(&layer_dir).at(&layer_dir)? {
            let name = e.at(&layer_dir)?.file_name().to_string_lossy().into_owned();
            if Digest::from_hex(&name).is_err() {
                r.errors
                    .push(format!("layers/{name}: name is not a chain ID"));
            }
        }

        Ok(LayerCheck {
            all: layer_set,
            listed: layers,
            keep_layers,
            keep_blobs,
            orphans,
        })
    }

    /// Images: config present and valid, layers match the config.
    fn check_images(
        &self,
        r: &mut CheckReport,
        layer_set: &BTreeSet<Digest>,
    ) -> Result<BTreeSet<Digest>> {
        let images = self.list_images()?;
        let image_set: BTreeSet<Digest> = images.iter().cloned().collect();
        for id in &images {
            r.images += 1;
            let rec = match self.image_record(id) {
                Ok(rec) => rec,
                Err(e) => {
                    r.errors.push(format!("image {id}: {e}"));
                    continue;
                }
            };
            if &rec.id != id {
                r.errors
                    .push(format!("image {id}: record names {}", rec.id));
            }
            match self.read_blob(id, strata_image::spec::MAX_JSON_BYTES) {
                Err(e) => r.errors.push(format!("image {id}: config: {e}")),
                Ok(bytes) => match ImageConfig::parse("config", &bytes) {
                    Err(e) => r.errors.push(format!("image {id}: {e}")),
                    Ok(cfg) => {
                        if chain_ids(&cfg.rootfs.diff_ids) != rec.layers {
                            r.errors.push(format!(
                                "image {id}: layers do not match the config's diff_ids"
                            ));
                        }
                    }
                },
            }
            for l in &rec.layers {
                if !layer_set.contains(l) {
                    r.errors.push(format!("image {id}: layer {l} is missing"));
                }
            }
            for m in &rec.manifests {
                if !self.has_blob(&m.digest) {
                    r.errors
                        .push(format!("image {id}: manifest {} is missing", m.digest));
                }
            }
        }

        Ok(image_set)
    }

    /// Tags point at images.
    fn check_tags(
        &self,
        r: &mut CheckReport,
        repair: bool,
        image_set: &BTreeSet<Digest>,
    ) -> Result<()> {
        match self.refs() {
            Err(e) => {
                r.errors.push(e.to_string());
                if repair {
                    let p = self.root().join("refs.json");
                    fs::rename(&p, self.temp_path("corrupt-refs")).at(&p)?;
                    r.repaired
                        .push("moved the unreadable refs.json aside (tags are lost)".into());
                }
            }
            Ok(refs) => {
                for (name, id) in refs.tags.iter().chain(refs.digests.iter()) {
                    r.tags += 1;
                    if !image_set.contains(id) {
                        r.errors.push(format!("tag {name}: image {id} is missing"));
                    }
                }
                for (name, members) in &refs.platforms {
                    for (platform, id) in members {
                        if !image_set.contains(id) {
                            r.errors
                                .push(format!("tag {name} ({platform}): image {id} is missing"));
                        }
                    }
                }
            }
        }

        Ok(())
    }

    /// Containers stand on images that exist; returns their IDs.
    fn check_containers(
        &self,
        r: &mut CheckReport,
        image_set: &BTreeSet<Digest>,
    ) -> Result<BTreeSet<String>> {
        let containers = self.container_links()?;
        let container_ids: BTreeSet<String> = containers.iter().map(|c| c.id.clone()).collect();
        for c in &containers {
            r.containers += 1;
            if !image_set.contains(&c.image) {
                r.errors.push(format!(
                    "container {}: image {} is missing",
                    short(&c.id),
                    c.image
                ));
            }
        }

        Ok(container_ids)
    }

    /// Build cache records point at images; stale build hints and container names.
    fn check_build_hints(&self, r: &mut CheckReport, repair: bool) -> Result<()> {
        for rec in self.cache_records()? {
            if self.cache_get(&rec.key)?.is_none() {
                r.garbage.push(format!(
                    "build-cache record {} points at an image whose content is gone",
                    rec.key
                ));
                if repair {
                    self.cache_remove(&rec.key)?;
                }
            }
        }

        // COPY reuse records (executor::reuse) whose layer is gone, and container names
        // (runtime's name index) whose container is gone.
        for (path, what) in self.stale_hints()? {
            r.garbage.push(format!("{}: {what}", path.display()));
            if repair {
                let _ = fs::remove_file(&path);
            }
        }

        Ok(())
    }

    /// `--repair`: layers whose parent is gone, and their unused children first, so none is
    /// left without its parent.
    fn remove_orphans(&self, r: &mut CheckReport, layers: &LayerCheck) -> Result<()> {
        let mut doomed: BTreeSet<Digest> = layers.orphans.iter().cloned().collect();
        loop {
            let more: Vec<Digest> = layers
                .listed
                .iter()
                .filter(|l| !doomed.contains(*l) && !layers.keep_layers.contains(*l))
                .filter(|l| {
                    self.layer_meta(l)
                        .ok()
                        .and_then(|m| m.parent)
                        .is_some_and(|p| doomed.contains(&p))
                })
                .cloned()
                .collect();
            if more.is_empty() {
                break;
            }
            doomed.extend(more);
        }
        for l in self.children_first(doomed.into_iter().collect()) {
            self.remove_layer_locked(&l)?;
            r.repaired
                .push(format!("removed layer {l}, whose parent was missing"));
        }
        Ok(())
    }

    /// Unreferenced content is garbage.
    fn unreferenced(&self, r: &mut CheckReport, layers: &LayerCheck) -> Result<()> {
        for l in layers
            .listed
            .iter()
            .filter(|l| !layers.keep_layers.contains(l) && !layers.orphans.contains(l))
        {
            r.garbage
                .push(format!("layer {l} is not used by any image"));
        }
        for b in self
            .list_blobs()?
            .iter()
            .filter(|b| !layers.keep_blobs.contains(b))
        {
            r.garbage.push(format!("blob {b} is not referenced"));
        }

        Ok(())
    }

    /// tmp/ leftovers (only under the exclusive lock: otherwise they may be in use).
    fn tmp_garbage(&self, r: &mut CheckReport, repair: bool) -> Result<()> {
        let leftovers: Vec<PathBuf> = self.tmp_leftovers()?;
        for p in &leftovers {
            r.garbage.push(format!(
                "{}: left over from an interrupted operation",
                p.display()
            ));
            if repair {
                fsutil::remove_any(p)?;
            }
        }
        if repair && !leftovers.is_empty() {
            r.repaired
                .push(format!("swept {} entries from tmp/", leftovers.len()));
        }

        Ok(())
    }

    /// Mounts of the store that belong to no live container.
    fn stray_mounts(
        &self,
        r: &mut CheckReport,
        repair: bool,
        container_ids: &BTreeSet<String>,
        live: &dyn Fn(&str) -> bool,
    ) -> Result<()> {
        for m in store_mounts(self.root())? {
            let owner = m
                .strip_prefix(self.containers_dir())
                .ok()
                .and_then(|rest| rest.components().next())
                .map(|c| c.as_os_str().to_string_lossy().into_owned());
            let orphan = match &owner {
                Some(id) => !container_ids.contains(id) || !live(id),
                None => true,
            };
            if orphan {
                r.errors.push(format!(
                    "{}: mounted but no live container owns it",
                    m.display()
                ));
                if repair {
                    match nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                        Ok(()) => r.repaired.push(format!("unmounted {}", m.display())),
                        Err(e) => r
                            .errors
                            .push(format!("{}: unmount failed: {e}", m.display())),
                    }
                }
            }
        }
        Ok(())
    }
}

/// What the layer check found, for the checks after it.
struct LayerCheck {
    /// Every layer in the store.
    all: BTreeSet<Digest>,
    listed: Vec<Digest>,
    /// Layers and blobs images (and the build cache) reach.
    keep_layers: BTreeSet<Digest>,
    keep_blobs: BTreeSet<Digest>,
    /// Layers whose parent is missing and no image uses.
    orphans: Vec<Digest>,
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn hash_file(p: &Path) -> std::io::Result<Digest> {
    let mut h = Hasher::new();
    h.update_from(&mut std::io::BufReader::with_capacity(
        1 << 20,
        fs::File::open(p)?,
    ))?;
    Ok(h.finish())
}

/// Mount points at or below `root`, from /proc/self/mountinfo.
pub fn store_mounts(root: &Path) -> Result<Vec<PathBuf>> {
    let root = fs::canonicalize(root).at(root)?;
    let info = fs::read_to_string("/proc/self/mountinfo").at("/proc/self/mountinfo")?;
    let mut out = Vec::new();
    for line in info.lines() {
        if let Some(mp) = line.split(' ').nth(4) {
            let mp = PathBuf::from(unescape_mountinfo(mp));
            if mp.starts_with(&root) && mp != root {
                out.push(mp);
            }
        }
    }
    // Deepest first, so repairs unmount children before parents.
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    Ok(out)
}

fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}
