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
    pub fn save<W: Write>(&self, items: &[(SaveItem, Vec<Reference>)], out: W) -> Result<W> {
        self.save_with(items, out, Compression::None)
    }

    /// `save` with layers compressed (gzip or zstd blobs, made on demand and kept): what
    /// `build -o type=oci,compression=...` writes. A multi-platform item is a nested index in
    /// `index.json` (as Docker's containerd store and BuildKit write it); `manifest.json`,
    /// which has no notion of platforms, lists its host member (or its first) under its tags.
    pub fn save_with<W: Write>(
        &self,
        items: &[(SaveItem, Vec<Reference>)],
        out: W,
        compression: Compression,
    ) -> Result<W> {
        let _lease = self.lease()?;
        let mut w = ArchiveBlobs {
            out: ArchiveWriter::new(out),
            written: BTreeSet::new(),
            compression,
        };
        let mut index_entries: Vec<(Descriptor, &[Reference])> = Vec::new();
        let mut docker_entries: Vec<ArchiveImage> = Vec::new();
        for (item, tags) in items {
            match item {
                SaveItem::Image(img) => {
                    let (mdesc, ai) = w.image(self, img)?;
                    index_entries.push((mdesc, tags));
                    docker_entries.push(ArchiveImage {
                        tags: tags.clone(),
                        ..ai
                    });
                }
                SaveItem::Platforms(members) => {
                    let mut manifests = Vec::new();
                    let mut primary = None;
                    for (platform, img) in sorted_by_platform(members) {
                        let (mut mdesc, ai) = w.image(self, img)?;
                        mdesc.platform = Some(platform.clone());
                        manifests.push(mdesc);
                        if primary.is_none() || *platform == host_platform() {
                            primary = Some(ai);
                        }
                    }
                    let (index, idesc) = platform_index_of(manifests);
                    w.bytes(&index)?;
                    index_entries.push((idesc, tags));
                    if let Some(ai) = primary {
                        docker_entries.push(ArchiveImage {
                            tags: tags.clone(),
                            ..ai
                        });
                    }
                }
            }
        }
        let err = archive_write_error;
        let mut w = w.out;
        w.add_bytes(archive::INDEX_FILE, &archive::archive_index(&index_entries))
            .map_err(err)?;
        let docker: Vec<&ArchiveImage> = docker_entries.iter().collect();
        w.add_bytes(
            archive::DOCKER_MANIFEST_FILE,
            &archive::docker_manifest(&docker),
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

    /// The OCI index `save_with` writes for a multi-platform image with layers compressed as
    /// `compression` says (entries sorted by platform), without writing anything: its digest
    /// is the ID `build --iidfile` and `-q` give for a several-platform build.
    pub fn platform_index(
        &self,
        members: &[(Platform, Image)],
        compression: Compression,
    ) -> Result<Descriptor> {
        let mut manifests = Vec::new();
        for (platform, img) in sorted_by_platform(members) {
            let (manifest, _) = self.archive_entry(img, compression)?;
            let mut d = manifest_descriptor(&manifest);
            d.platform = Some(platform.clone());
            manifests.push(d);
        }
        Ok(platform_index_of(manifests).1)
    }

    /// An image as an archive lists it, layers compressed as `compression` says: its OCI
    /// manifest and the image as `manifest.json` names it (no tags yet).
    fn archive_entry(
        &self,
        img: &Image,
        compression: Compression,
    ) -> Result<(Vec<u8>, ArchiveImage)> {
        let layers = img
            .record
            .layers
            .iter()
            .map(|chain| self.archive_layer(chain, compression))
            .collect::<Result<Vec<_>>>()?;
        let ai = ArchiveImage {
            config: Descriptor::new(
                media::OCI_CONFIG,
                img.id().clone(),
                img.config_bytes.len() as u64,
            ),
            layers,
            tags: Vec::new(),
        };
        Ok((archive::archive_manifest(&ai), ai))
    }

    /// A layer's descriptor in an archive: its compressed blob (made once and kept), or its
    /// uncompressed tar, whose digest is its diffID.
    fn archive_layer(&self, chain: &Digest, compression: Compression) -> Result<Descriptor> {
        if compression != Compression::None {
            return self.layer_blob(chain, compression);
        }
        let meta = self.layer_meta(chain)?;
        Ok(Descriptor::new(
            media::OCI_LAYER,
            meta.diff_id.clone(),
            meta.size,
        ))
    }

    /// `load`: a docker-save archive (old or new) or an OCI layout tar, plain or compressed;
    /// with `platform`, only that platform's images. Returns the images loaded with their tags.
    pub fn load<R: Read + Send>(
        &self,
        input: R,
        what: &str,
        platform: Option<&Platform>,
    ) -> Result<Vec<Loaded>> {
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
        // manifest.json is Docker's (and lists one image per tag), but it cannot say that a
        // tag names several platforms: an index.json that nests an index is read instead.
        let plan = if let Some(m) = files
            .small
            .get(archive::DOCKER_MANIFEST_FILE)
            .filter(|_| !files.nests_index())
        {
            files.docker_plan(self, &m.clone(), what)?
        } else if files.small.contains_key(archive::INDEX_FILE) {
            files.oci_plan(self, what)?
        } else {
            return Err(invalid(
                "neither manifest.json nor index.json found: not an image archive".into(),
            ));
        };
        let plan = match platform {
            Some(wanted) => self.only_platform(plan, wanted, what)?,
            None => plan,
        };
        for entry in &plan {
            for (_, p) in &entry.images {
                added.remove(&p.config);
                for l in &p.layers {
                    added.remove(&l.digest);
                }
                if let Some(m) = &p.manifest {
                    added.remove(&m.digest);
                }
            }
        }
        for unused in &added {
            let _ = std::fs::remove_file(self.blob_path(unused));
        }
        let mut loaded = Vec::new();
        for entry in plan {
            let mut images = Vec::new();
            for (platform, p) in &entry.images {
                images.push((platform.clone(), self.import_planned(p, what)?));
            }
            match images.as_slice() {
                [(_, img)] => {
                    for t in &entry.tags {
                        self.tag(t, img.id())?;
                    }
                }
                several => {
                    let members: BTreeMap<String, Digest> = several
                        .iter()
                        .filter_map(|(p, img)| Some((p.as_ref()?.to_string(), img.id().clone())))
                        .collect();
                    for t in &entry.tags {
                        self.tag_platforms(t, members.clone())?;
                    }
                }
            }
            loaded.push(Loaded {
                images,
                tags: entry.tags,
            });
        }
        Ok(loaded)
    }

    /// `load --platform`: the planned images for `wanted` (an index entry's platform, else
    /// the config's); none is an error naming those the archive has.
    fn only_platform(
        &self,
        plan: Vec<PlannedEntry>,
        wanted: &Platform,
        what: &str,
    ) -> Result<Vec<PlannedEntry>> {
        let mut seen = BTreeSet::new();
        let mut kept = Vec::new();
        for mut entry in plan {
            let mut images = Vec::new();
            for (listed, p) in entry.images {
                let have = match &listed {
                    Some(l) => l.clone(),
                    None => {
                        let bytes = self.read_blob(&p.config, spec::MAX_JSON_BYTES)?;
                        let cfg =
                            ImageConfig::parse(&format!("{what}: config {}", p.config), &bytes)?;
                        Platform::of_config(&cfg)
                    }
                };
                seen.insert(have.to_string());
                if wanted.is_met_by(&have) {
                    images.push((listed, p));
                }
            }
            if !images.is_empty() {
                entry.images = images;
                kept.push(entry);
            }
        }
        if kept.is_empty() {
            let seen: Vec<String> = seen.into_iter().collect();
            return Err(StoreError::NotFound(format!(
                "{what}: no image for {wanted} in the archive (it has {})",
                seen.join(", ")
            )));
        }
        Ok(kept)
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

/// The descriptor of an OCI manifest written as `bytes`.
fn manifest_descriptor(bytes: &[u8]) -> Descriptor {
    Descriptor::new(media::OCI_MANIFEST, Digest::of(bytes), bytes.len() as u64)
}

/// The OCI index of one image per platform (`manifests`, each with its `platform`): its
/// bytes and descriptor.
fn platform_index_of(manifests: Vec<Descriptor>) -> (Vec<u8>, Descriptor) {
    let bytes = spec::to_canonical_json(&Index::new(media::OCI_INDEX, manifests));
    let desc = Descriptor::new(media::OCI_INDEX, Digest::of(&bytes), bytes.len() as u64);
    (bytes, desc)
}

/// Members in the order an index lists them: by platform name.
fn sorted_by_platform(members: &[(Platform, Image)]) -> Vec<&(Platform, Image)> {
    let mut v: Vec<&(Platform, Image)> = members.iter().collect();
    v.sort_by_key(|(p, _)| p.to_string());
    v
}

/// What `save` writes under a list of tags: one image, or one image per platform.
pub enum SaveItem {
    Image(Box<Image>),
    Platforms(Vec<(Platform, Image)>),
}

fn archive_write_error(e: io::Error) -> StoreError {
    StoreError::Invalid(format!("writing the archive: {e}"))
}

/// An archive being written, with the blobs already in it (images share layers).
struct ArchiveBlobs<W: Write> {
    out: ArchiveWriter<W>,
    written: BTreeSet<Digest>,
    compression: Compression,
}

impl<W: Write> ArchiveBlobs<W> {
    /// Adds a small blob (config, manifest, index) unless it is there.
    fn bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let d = Digest::of(bytes);
        if self.written.insert(d.clone()) {
            self.out
                .add_bytes(&archive::blob_path(&d), bytes)
                .map_err(archive_write_error)?;
        }
        Ok(())
    }

    /// Adds an image's config, layers and OCI manifest; the manifest's descriptor and the
    /// image as `manifest.json` names it (no tags yet).
    fn image(&mut self, store: &Store, img: &Image) -> Result<(Descriptor, ArchiveImage)> {
        let (manifest, ai) = store.archive_entry(img, self.compression)?;
        self.bytes(&img.config_bytes)?;
        for (chain, desc) in img.record.layers.iter().zip(&ai.layers) {
            self.layer(store, chain, desc)?;
        }
        self.bytes(&manifest)?;
        Ok((manifest_descriptor(&manifest), ai))
    }

    /// Adds one layer (`desc`: its blob, compressed as asked, or its uncompressed tar, whose
    /// digest is its diffID) unless it is there.
    fn layer(&mut self, store: &Store, chain: &Digest, desc: &Descriptor) -> Result<()> {
        if !self.written.insert(desc.digest.clone()) {
            return Ok(());
        }
        if self.compression != Compression::None {
            let mut f = store.open_blob(&desc.digest)?;
            self.out
                .add_file(&archive::blob_path(&desc.digest), desc.size, &mut f)
                .map_err(archive_write_error)?;
        } else {
            let mut failure = None;
            self.out
                .add_file_with(&archive::blob_path(&desc.digest), desc.size, |out| {
                    store.write_uncompressed_layer(chain, out).map_err(|e| {
                        let msg = e.to_string();
                        failure = Some(e);
                        io::Error::other(msg)
                    })
                })
                .map_err(|e| failure.take().unwrap_or_else(|| archive_write_error(e)))?;
        }
        Ok(())
    }
}

/// What `load` added under one list of tags: an image, or one per platform (the tags then
/// name them all, as a multi-platform tag).
pub struct Loaded {
    pub images: Vec<(Option<Platform>, Image)>,
    pub tags: Vec<Reference>,
}

struct PlannedImage {
    config: Digest,
    layers: Vec<Descriptor>,
    manifest: Option<Descriptor>,
}

/// The images an archive names under one list of tags (one per platform for an index).
struct PlannedEntry {
    images: Vec<(Option<Platform>, PlannedImage)>,
    tags: Vec<Reference>,
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

    /// Whether `index.json` names an index (a multi-platform image) rather than manifests only.
    fn nests_index(&self) -> bool {
        let Some(bytes) = self.small.get(archive::INDEX_FILE) else {
            return false;
        };
        Index::parse("index.json", bytes)
            .is_ok_and(|i| i.manifests.iter().any(|d| media::is_index(&d.media_type)))
    }

    fn docker_plan(&self, store: &Store, manifest: &[u8], what: &str) -> Result<Vec<PlannedEntry>> {
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
            out.push(PlannedEntry {
                images: vec![(
                    None,
                    PlannedImage {
                        config,
                        layers,
                        manifest: None,
                    },
                )],
                tags,
            });
        }
        Ok(out)
    }

    fn oci_plan(&self, store: &Store, what: &str) -> Result<Vec<PlannedEntry>> {
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
            let mut images = Vec::new();
            for (platform, mdesc) in platform_manifests(store, d, what, 0)? {
                let mbytes = store.read_blob(&mdesc.digest, spec::MAX_JSON_BYTES)?;
                let m = Manifest::parse(&format!("{what}: manifest {}", mdesc.digest), &mbytes)?;
                // An index in an archive may list platforms whose blobs were left out (`save
                // --platform`, an attestation): those are skipped, not an error.
                if platform.is_some()
                    && !std::iter::once(&m.config)
                        .chain(&m.layers)
                        .all(|b| store.has_blob(&b.digest))
                {
                    continue;
                }
                check_size(store, &m.config, what, "config")?;
                for l in &m.layers {
                    check_size(store, l, what, "layer")?;
                }
                images.push((
                    platform,
                    PlannedImage {
                        config: m.config.digest.clone(),
                        layers: m.layers.clone(),
                        manifest: Some(mdesc),
                    },
                ));
            }
            if media::is_index(&d.media_type) && images.is_empty() {
                return Err(StoreError::Invalid(format!(
                    "{what}: index {} has no platform whose blobs are in the archive",
                    d.digest
                )));
            }
            if images.is_empty() {
                continue;
            }
            out.push(PlannedEntry {
                images,
                tags: tag.into_iter().collect(),
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

/// The image manifests an `index.json` entry leads to: itself when it is one (no platform),
/// else every real platform's of the index (nested indexes followed, attestations and
/// unknown platforms left out), sorted by platform.
fn platform_manifests(
    store: &Store,
    d: &Descriptor,
    what: &str,
    depth: u32,
) -> Result<Vec<(Option<Platform>, Descriptor)>> {
    let kind = if media::is_index(&d.media_type) {
        "index"
    } else {
        "manifest"
    };
    if media::is_manifest(&d.media_type) || media::is_index(&d.media_type) {
        check_size(store, d, what, kind)?;
    }
    if media::is_manifest(&d.media_type) {
        return Ok(vec![(None, d.clone())]);
    }
    if !media::is_index(&d.media_type) || depth > 4 {
        return Ok(Vec::new());
    }
    let bytes = store.read_blob(&d.digest, spec::MAX_JSON_BYTES)?;
    let idx = Index::parse(&format!("{what}: index {}", d.digest), &bytes)?;
    let mut found: BTreeMap<String, (Option<Platform>, Descriptor)> = BTreeMap::new();
    for m in &idx.manifests {
        if media::is_manifest(&m.media_type) {
            let Some(p) = m.platform.clone().filter(|p| p.os != "unknown") else {
                continue;
            };
            if store.has_blob(&m.digest) {
                check_size(store, m, what, "manifest")?;
                found.entry(p.to_string()).or_insert((Some(p), m.clone()));
            }
        } else if media::is_index(&m.media_type) && store.has_blob(&m.digest) {
            for (p, desc) in platform_manifests(store, m, what, depth + 1)? {
                let key = p.as_ref().map(|p| p.to_string()).unwrap_or_default();
                found.entry(key).or_insert((p, desc));
            }
        }
    }
    Ok(found.into_values().collect())
}
