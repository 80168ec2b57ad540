//! Moving images in and out of the store: `import` of a rootfs tarball, `save` to an archive
//! that is both an OCI layout and a docker-save tar, and `load` of either format.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io::{self, Read, Write};

use strata_image::archive::{self, ArchiveImage, ArchiveWriter, OciLayout};
use strata_image::compress::{self, Compression};
use strata_image::digest::{Digest, HashingReader};
use strata_image::layer::{extract_layer, ExtractOptions, TarOptions};
use strata_image::reference::Reference;
use strata_image::spec::{
    self, media, Descriptor, DockerArchiveEntry, ImageConfig, Index, Manifest, Platform,
};

use crate::error::{IoContext, Result, StoreError};
use crate::fsutil;
use crate::images::Image;
use crate::store::Store;

pub use strata_image::spec::host_arch;

/// Platform strata runs images for.
pub fn host_platform() -> Platform {
    Platform::host()
}

impl Store {
    /// `import`: a root filesystem tarball (plain, gzip or zstd) becomes a one-layer image.
    /// The layer is normalised through the deterministic writer, so its diffID is that of the
    /// tar strata would write for the same tree.
    pub fn import_rootfs<R: Read + Send>(
        &self,
        input: R,
        what: &str,
        config: spec::ContainerConfig,
        comment: Option<String>,
        platform: Option<&spec::Platform>,
    ) -> Result<Image> {
        let _lease = self.lease()?;
        let platform = platform.cloned().unwrap_or_else(host_platform);
        let (_, tar) =
            compress::decompress(input).map_err(|e| StoreError::Invalid(format!("{what}: {e}")))?;
        let staging = self.temp_dir("import")?;
        let result = (|| {
            let tree = staging.join("tree");
            std::fs::create_dir(&tree).at(&tree)?;
            let (_, rest) = extract_layer(tar, &tree, &ExtractOptions::default())
                .map_err(|e| StoreError::Invalid(format!("{what}: {e}")))?;
            drop(rest);
            let layer = self.add_layer_from_dir(None, &tree, true, &TarOptions::default())?;
            let created = fsutil::now_rfc3339();
            let cfg = ImageConfig {
                created: Some(created.clone()),
                architecture: platform.architecture.clone(),
                os: platform.os.clone(),
                variant: platform.variant.clone(),
                config: Some(config),
                rootfs: spec::RootFs {
                    kind: "layers".into(),
                    diff_ids: vec![layer.diff_id.clone()],
                },
                history: vec![spec::History {
                    created: Some(created),
                    created_by: Some(format!("strata import {what}")),
                    comment: Some(comment.unwrap_or_else(|| "Imported from tarball".into())),
                    ..Default::default()
                }],
                ..Default::default()
            };
            self.put_image(&spec::to_canonical_json(&cfg), None, Vec::new())
        })();
        let _ = fsutil::remove_any(&staging);
        result
    }

    /// Writes the layer's uncompressed tar, from the blob it came in when there is one (so a
    /// loaded or pulled layer keeps its exact bytes), else regenerated from the directory.
    pub fn write_uncompressed_layer(&self, chain: &Digest, out: &mut dyn Write) -> Result<()> {
        let meta = self.layer_meta(chain)?;
        for b in &meta.blobs {
            if !self.has_blob(&b.digest) {
                continue;
            }
            let f = self.open_blob(&b.digest)?;
            let (_, r) =
                compress::decompress(io::BufReader::new(f)).at(self.blob_path(&b.digest))?;
            let mut hr = HashingReader::new(r);
            io::copy(&mut hr, out).at(self.blob_path(&b.digest))?;
            let (d, _) = hr.finish();
            if d != meta.diff_id {
                return Err(StoreError::Corrupt(format!(
                    "blob {} of layer {chain} does not hash to its diffID",
                    b.digest
                )));
            }
            return Ok(());
        }
        self.write_layer_tar(chain, out)?;
        Ok(())
    }

    /// `save`: the images, with their tags, as one OCI-layout + docker-save tar.
    pub fn save<W: Write>(&self, images: &[(Image, Vec<Reference>)], out: W) -> Result<W> {
        self.save_with(images, out, Compression::None)
    }

    /// `save` with layers compressed (gzip or zstd blobs, made on demand and kept): what
    /// `build -o type=oci,compression=...` writes.
    pub fn save_with<W: Write>(
        &self,
        images: &[(Image, Vec<Reference>)],
        out: W,
        compression: Compression,
    ) -> Result<W> {
        let _lease = self.lease()?;
        let err = |e: io::Error| StoreError::Invalid(format!("writing the archive: {e}"));
        let mut w = ArchiveWriter::new(out);
        let mut written = std::collections::BTreeSet::new();
        let mut entries: Vec<(Descriptor, ArchiveImage)> = Vec::new();
        for (img, tags) in images {
            let config = Descriptor::new(
                media::OCI_CONFIG,
                img.id().clone(),
                img.config_bytes.len() as u64,
            );
            if written.insert(config.digest.clone()) {
                w.add_bytes(&archive::blob_path(&config.digest), &img.config_bytes)
                    .map_err(err)?;
            }
            let mut layers = Vec::new();
            for chain in &img.record.layers {
                if compression != Compression::None {
                    let desc = self.layer_blob(chain, compression)?;
                    if written.insert(desc.digest.clone()) {
                        let mut f = self.open_blob(&desc.digest)?;
                        w.add_file(&archive::blob_path(&desc.digest), desc.size, &mut f)
                            .map_err(err)?;
                    }
                    layers.push(desc);
                    continue;
                }
                let meta = self.layer_meta(chain)?;
                let desc = Descriptor::new(media::OCI_LAYER, meta.diff_id.clone(), meta.size);
                if written.insert(desc.digest.clone()) {
                    let mut failure = None;
                    w.add_file_with(&archive::blob_path(&desc.digest), meta.size, |out| {
                        self.write_uncompressed_layer(chain, out).map_err(|e| {
                            let msg = e.to_string();
                            failure = Some(e);
                            io::Error::other(msg)
                        })
                    })
                    .map_err(|e| failure.take().unwrap_or_else(|| err(e)))?;
                }
                layers.push(desc);
            }
            let ai = ArchiveImage {
                config,
                layers,
                tags: tags.clone(),
            };
            let manifest = archive::archive_manifest(&ai);
            let mdesc = Descriptor::new(
                media::OCI_MANIFEST,
                Digest::of(&manifest),
                manifest.len() as u64,
            );
            if written.insert(mdesc.digest.clone()) {
                w.add_bytes(&archive::blob_path(&mdesc.digest), &manifest)
                    .map_err(err)?;
            }
            entries.push((mdesc, ai));
        }
        let pairs: Vec<(Descriptor, &ArchiveImage)> =
            entries.iter().map(|(d, a)| (d.clone(), a)).collect();
        w.add_bytes(archive::INDEX_FILE, &archive::archive_index(&pairs))
            .map_err(err)?;
        let imgs: Vec<&ArchiveImage> = entries.iter().map(|(_, a)| a).collect();
        w.add_bytes(
            archive::DOCKER_MANIFEST_FILE,
            &archive::docker_manifest(&imgs),
        )
        .map_err(err)?;
        let layout = serde_json::to_vec(&OciLayout {
            image_layout_version: archive::OCI_LAYOUT_VERSION.into(),
        })
        .expect("serializes");
        w.add_bytes(archive::OCI_LAYOUT_FILE, &layout)
            .map_err(err)?;
        w.finish().map_err(err)
    }

    /// `load`: a docker-save archive (old or new) or an OCI layout tar, plain or compressed.
    /// Returns the images loaded with their tags.
    pub fn load<R: Read + Send>(
        &self,
        input: R,
        what: &str,
    ) -> Result<Vec<(Image, Vec<Reference>)>> {
        let _lease = self.lease()?;
        let invalid = |m: String| StoreError::Invalid(format!("{what}: {m}"));
        let (_, tar) = compress::decompress(input).map_err(|e| invalid(e.to_string()))?;
        let mut files = ArchiveFiles::default();
        // Blobs this load added, to drop those no loaded image uses (the OCI manifests of an
        // archive read through its docker manifest.json, say).
        let mut added: BTreeSet<Digest> = BTreeSet::new();
        let mut a = tar::Archive::new(tar);
        for entry in a.entries().map_err(|e| invalid(e.to_string()))? {
            let mut entry = entry.map_err(|e| invalid(e.to_string()))?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let path = archive::clean_path(&raw).map_err(invalid)?;
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {}
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    let dir = match (entry.header().entry_type(), path.rsplit_once('/')) {
                        (tar::EntryType::Symlink, Some((dir, _))) => dir,
                        _ => "",
                    };
                    let resolved = archive::join_inside(dir, &target)
                        .map_err(|e| invalid(format!("{path}: {e}")))?;
                    files.links.insert(path, resolved);
                    continue;
                }
                _ => continue,
            }
            let size = entry.size();
            if let Some(d) = archive::digest_of_blob_path(&path) {
                if !self.has_blob(&d) {
                    self.ingest_blob(&mut entry, Some(&d), Some(size), &format!("{what}: {path}"))?;
                    added.insert(d.clone());
                }
                files.blobs.insert(path, d);
            } else if path.ends_with(".json")
                || path == archive::OCI_LAYOUT_FILE
                || path == "repositories"
            {
                if size > spec::MAX_JSON_BYTES {
                    return Err(invalid(format!(
                        "{path}: {size} bytes exceeds the 4 MiB limit"
                    )));
                }
                let mut buf = Vec::with_capacity(size as usize);
                entry
                    .read_to_end(&mut buf)
                    .map_err(|e| invalid(format!("{path}: {e}")))?;
                files.small.insert(path, buf);
            } else if path.ends_with("layer.tar")
                || path.ends_with(".tar")
                || path.ends_with(".tar.gz")
            {
                let (d, _) =
                    self.ingest_blob(&mut entry, None, Some(size), &format!("{what}: {path}"))?;
                files.blobs.insert(path, d);
            }
        }
        let plan = if let Some(m) = files.small.get(archive::DOCKER_MANIFEST_FILE) {
            files.docker_plan(self, &m.clone(), what)?
        } else if files.small.contains_key(archive::INDEX_FILE) {
            files.oci_plan(self, what)?
        } else {
            return Err(invalid(
                "neither manifest.json nor index.json found: not an image archive".into(),
            ));
        };
        for p in &plan {
            added.remove(&p.config);
            for l in &p.layers {
                added.remove(&l.digest);
            }
            if let Some(m) = &p.manifest {
                added.remove(&m.digest);
            }
        }
        for unused in &added {
            let _ = std::fs::remove_file(self.blob_path(unused));
        }
        let mut loaded = Vec::new();
        for p in plan {
            let img = self.import_planned(&p, what)?;
            for t in &p.tags {
                self.tag(t, img.id())?;
            }
            loaded.push((img, p.tags));
        }
        Ok(loaded)
    }

    /// Unpacks the layers of one planned image (skipping those present) and records it.
    fn import_planned(&self, p: &PlannedImage, what: &str) -> Result<Image> {
        let config_bytes = self.read_blob(&p.config, spec::MAX_JSON_BYTES)?;
        let cfg = ImageConfig::parse(&format!("{what}: config {}", p.config), &config_bytes)?;
        if cfg.rootfs.diff_ids.len() != p.layers.len() {
            return Err(StoreError::Invalid(format!(
                "{what}: image {} has {} layers but its config lists {} diff_ids",
                p.config,
                p.layers.len(),
                cfg.rootfs.diff_ids.len()
            )));
        }
        let mut parent: Option<Digest> = None;
        for (blob, diff_id) in p.layers.iter().zip(&cfg.rootfs.diff_ids) {
            let chain = crate::layers::chain_id(parent.as_ref(), diff_id);
            if !self.has_layer(&chain) {
                let f = self.open_blob(&blob.digest)?;
                let layer_what = format!("{what}: layer {}", blob.digest);
                let (c, tar) = compress::decompress(io::BufReader::new(f))
                    .map_err(|e| StoreError::Invalid(format!("{layer_what}: {e}")))?;
                let mt = match c {
                    Compression::Gzip => media::OCI_LAYER_GZIP,
                    Compression::Zstd => media::OCI_LAYER_ZSTD,
                    _ => media::OCI_LAYER,
                };
                let desc = Descriptor::new(mt, blob.digest.clone(), self.blob_size(&blob.digest)?);
                self.add_layer_from_tar(
                    parent.as_ref(),
                    tar,
                    Some(diff_id),
                    Some(desc),
                    &layer_what,
                )?;
            }
            parent = Some(chain);
        }
        self.put_image(&config_bytes, None, p.manifest.iter().cloned().collect())
    }
}

struct PlannedImage {
    config: Digest,
    layers: Vec<Descriptor>,
    tags: Vec<Reference>,
    manifest: Option<Descriptor>,
}

#[derive(Default)]
struct ArchiveFiles {
    /// Archive path → blob digest, for every file that went into the blob store.
    blobs: BTreeMap<String, Digest>,
    /// Small JSON files kept in memory.
    small: BTreeMap<String, Vec<u8>>,
    /// Link path → target path (old docker-save archives link duplicate layers).
    links: BTreeMap<String, String>,
}

impl ArchiveFiles {
    fn resolve(&self, path: &str, what: &str) -> Result<Digest> {
        let mut p = archive::clean_path(path)
            .map_err(|e| StoreError::Invalid(format!("{what}: manifest.json: {e}")))?;
        for _ in 0..16 {
            if let Some(d) = self.blobs.get(&p) {
                return Ok(d.clone());
            }
            match self.links.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        Err(StoreError::Invalid(format!(
            "{what}: manifest.json names {path:?}, which is not in the archive"
        )))
    }

    fn docker_plan(&self, store: &Store, manifest: &[u8], what: &str) -> Result<Vec<PlannedImage>> {
        let entries: Vec<DockerArchiveEntry> =
            spec::from_json(&format!("{what}: manifest.json"), manifest)?;
        let mut out = Vec::new();
        for e in entries {
            let config = match self.resolve(&e.config, what) {
                Ok(d) => d,
                Err(err) => {
                    // Old archives keep the config as `<id>.json` outside blobs/.
                    let p = archive::clean_path(&e.config)
                        .map_err(|m| StoreError::Invalid(format!("{what}: manifest.json: {m}")))?;
                    let bytes = self.small.get(&p).ok_or(err)?.clone();
                    store.put_blob_bytes(&bytes)?
                }
            };
            let mut layers = Vec::new();
            for l in &e.layers {
                let d = self.resolve(l, what)?;
                layers.push(Descriptor::new(
                    media::DOCKER_LAYER,
                    d.clone(),
                    store.blob_size(&d)?,
                ));
            }
            let mut tags = Vec::new();
            for t in &e.repo_tags {
                tags.push(
                    Reference::parse(t)
                        .map_err(|err| StoreError::Invalid(format!("{what}: RepoTags: {err}")))?,
                );
            }
            out.push(PlannedImage {
                config,
                layers,
                tags,
                manifest: None,
            });
        }
        Ok(out)
    }

    fn oci_plan(&self, store: &Store, what: &str) -> Result<Vec<PlannedImage>> {
        let layout = self
            .small
            .get(archive::OCI_LAYOUT_FILE)
            .ok_or_else(|| StoreError::Invalid(format!("{what}: oci-layout file is missing")))?;
        let layout: OciLayout = spec::from_json(&format!("{what}: oci-layout"), layout)?;
        if layout.image_layout_version != archive::OCI_LAYOUT_VERSION {
            return Err(StoreError::Invalid(format!(
                "{what}: oci-layout: imageLayoutVersion {:?} is not supported",
                layout.image_layout_version
            )));
        }
        let index = Index::parse(
            &format!("{what}: index.json"),
            &self.small[archive::INDEX_FILE],
        )?;
        let mut out = Vec::new();
        for d in &index.manifests {
            let Some(mdesc) = pick_manifest(store, d, what, 0)? else {
                continue;
            };
            let mbytes = store.read_blob(&mdesc.digest, spec::MAX_JSON_BYTES)?;
            let m = Manifest::parse(&format!("{what}: manifest {}", mdesc.digest), &mbytes)?;
            check_size(store, &m.config, what, "config")?;
            for l in &m.layers {
                check_size(store, l, what, "layer")?;
            }
            let tag = d
                .annotations
                .get(archive::ANNOTATION_IMAGE_NAME)
                .and_then(|n| Reference::parse(n).ok())
                .or_else(|| {
                    d.annotations
                        .get(archive::ANNOTATION_REF_NAME)
                        .filter(|n| n.contains('/') || n.contains(':'))
                        .and_then(|n| Reference::parse(n).ok())
                });
            out.push(PlannedImage {
                config: m.config.digest.clone(),
                layers: m.layers.clone(),
                tags: tag.into_iter().collect(),
                manifest: Some(mdesc),
            });
        }
        Ok(out)
    }
}

/// A blob must have the size its descriptor says, as a pull checks (a digest alone does
/// not bound what a reader is fed first).
fn check_size(store: &Store, d: &Descriptor, what: &str, kind: &str) -> Result<()> {
    let actual = store.blob_size(&d.digest)?;
    if actual != d.size {
        return Err(StoreError::Invalid(format!(
            "{what}: {kind} {}: the blob has {actual} bytes, its descriptor says {}",
            d.digest, d.size
        )));
    }
    Ok(())
}

/// Follows an index entry to the image manifest for this platform.
fn pick_manifest(
    store: &Store,
    d: &Descriptor,
    what: &str,
    depth: u32,
) -> Result<Option<Descriptor>> {
    let kind = if media::is_index(&d.media_type) {
        "index"
    } else {
        "manifest"
    };
    if media::is_manifest(&d.media_type) || media::is_index(&d.media_type) {
        check_size(store, d, what, kind)?;
    }
    if media::is_manifest(&d.media_type) {
        return Ok(Some(d.clone()));
    }
    if !media::is_index(&d.media_type) || depth > 4 {
        return Ok(None);
    }
    let bytes = store.read_blob(&d.digest, spec::MAX_JSON_BYTES)?;
    let idx = Index::parse(&format!("{what}: index {}", d.digest), &bytes)?;
    let host = host_platform();
    for m in &idx.manifests {
        let fits = m
            .platform
            .as_ref()
            .map(|p| p.os == host.os && p.architecture == host.architecture)
            .unwrap_or(true);
        if fits {
            if let Some(found) = pick_manifest(store, m, what, depth + 1)? {
                return Ok(Some(found));
            }
        }
    }
    Ok(None)
}
