//! The shared build cache: in a registry (`--cache-to/--cache-from type=registry,ref=R`) or
//! in an OCI layout directory (`type=local,dest=DIR` / `src=DIR`).
//!
//! A build's cache keys are content hashes of its inputs (`strata.cache.v1`), the same on every
//! machine, so sharing the cache is sharing the map from key to the step's resulting image. The
//! export is one OCI manifest under `ref`: its config is a [`CacheDoc`] (key → image ID, and for
//! every image its config and layer blob descriptors) and its layers list every blob the
//! document names, so the registry keeps them alive. The import reads only that document; a
//! step's layers and config are fetched when the build asks for that key and misses locally,
//! and they enter the store verified exactly as a pull's do. The image rebuilt from them has
//! the very same config bytes, so the same ID as on the exporting machine.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_cache::Store;
use strata_image::archive::{
    blob_path, ANNOTATION_REF_NAME, INDEX_FILE, OCI_LAYOUT_FILE, OCI_LAYOUT_VERSION,
};
use strata_image::compress::Compression;
use strata_image::spec::{
    media, to_canonical_json, Descriptor, ImageConfig, Index, Manifest, MAX_JSON_BYTES,
};
use strata_image::{Digest, Reference};

use crate::client::{read_capped, Client};
use crate::pull::{fetch_config, fetch_layers, BlobSource, RepoBlobs};
use crate::push::{upload_layers, upload_small_blob};
use crate::{NoProgress, Progress, RegistryError};

pub const CACHE_DOC_SCHEMA: &str = "strata.registry-cache.v1";
/// Media type of the cache document (the export manifest's config).
pub const CACHE_DOC_MEDIA_TYPE: &str = "application/vnd.strata.cache.v1+json";
/// The document may name many images; it is still read whole, under this cap.
const MAX_DOC_BYTES: u64 = 32 << 20;

/// What a registry cache holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheDoc {
    pub schema: String,
    /// Step cache key → the image the step produced.
    pub steps: BTreeMap<Digest, Digest>,
    /// Image ID → how to rebuild it.
    pub images: BTreeMap<Digest, CachedImage>,
}

/// An image in the cache: its config blob and its layer blobs, bottom first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedImage {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// The document for `steps`, the layer blobs it names (chain ID, gzip descriptor; each once)
/// and every image's config bytes.
struct Export {
    doc: CacheDoc,
    layers: Vec<(Digest, Descriptor)>,
    configs: Vec<Vec<u8>>,
}

fn collect(store: &Store, steps: &[(Digest, Digest)]) -> Result<Export, RegistryError> {
    let mut out = Export {
        doc: CacheDoc {
            schema: CACHE_DOC_SCHEMA.to_string(),
            ..Default::default()
        },
        layers: Vec::new(),
        configs: Vec::new(),
    };
    let mut seen_layers = BTreeSet::new();
    for (key, id) in steps {
        out.doc.steps.insert(key.clone(), id.clone());
        if out.doc.images.contains_key(id) {
            continue;
        }
        let image = store.image(id)?;
        let mut layers = Vec::new();
        for chain in &image.record.layers {
            let blob = store.layer_blob(chain, Compression::Gzip)?;
            let desc = Descriptor::new(media::OCI_LAYER_GZIP, blob.digest, blob.size);
            if seen_layers.insert(desc.digest.clone()) {
                out.layers.push((chain.clone(), desc.clone()));
            }
            layers.push(desc);
        }
        let config = Descriptor::new(
            media::OCI_CONFIG,
            id.clone(),
            image.config_bytes.len() as u64,
        );
        out.configs.push(image.config_bytes.clone());
        out.doc
            .images
            .insert(id.clone(), CachedImage { config, layers });
    }
    Ok(out)
}

impl Export {
    /// The manifest that carries the document: its layers list every blob, so a registry
    /// (or a layout's garbage collector) keeps them.
    fn manifest(&self, doc_digest: Digest, doc_len: usize) -> Vec<u8> {
        let mut referenced: Vec<Descriptor> = self.layers.iter().map(|(_, d)| d.clone()).collect();
        referenced.extend(self.doc.images.values().map(|i| i.config.clone()));
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.to_string()),
            config: Descriptor::new(CACHE_DOC_MEDIA_TYPE, doc_digest, doc_len as u64),
            layers: referenced,
            annotations: Default::default(),
            extra: Default::default(),
        };
        to_canonical_json(&manifest)
    }
}

/// Exports `steps` (key, image ID) to `reference`. Returns the manifest digest.
pub fn export(
    store: &Store,
    client: &Client,
    reference: &Reference,
    steps: &[(Digest, Digest)],
    progress: &dyn Progress,
) -> Result<Digest, RegistryError> {
    let _lease = store.lease()?;
    let repo = reference.path();
    let source = format!("{}/{repo}", client.domain);
    let ex = collect(store, steps)?;
    for config in &ex.configs {
        upload_small_blob(client, repo, config)?;
    }
    upload_layers(store, client, repo, &source, &ex.layers, progress)?;
    let doc_bytes = to_canonical_json(&ex.doc);
    let doc_digest = upload_small_blob(client, repo, &doc_bytes)?;
    let bytes = ex.manifest(doc_digest, doc_bytes.len());
    let tag = reference.tag().unwrap_or("latest");
    client.put_manifest(repo, tag, media::OCI_MANIFEST, &bytes)
}

/// Exports `steps` to the OCI layout directory `dir` (`--cache-to type=local,dest=DIR`):
/// blobs are added (each written to a temp name and renamed), then `index.json` is replaced
/// to point at the new cache manifest. Returns the manifest digest.
pub fn export_layout(
    store: &Store,
    dir: &Path,
    steps: &[(Digest, Digest)],
) -> Result<Digest, RegistryError> {
    let _lease = store.lease()?;
    let ex = collect(store, steps)?;
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(|e| io_err(&blobs, e))?;
    for (_, layer) in &ex.layers {
        let mut f = store.open_blob(&layer.digest)?;
        put_layout_blob(dir, &layer.digest, layer.size, &mut f)?;
    }
    for config in &ex.configs {
        put_layout_bytes(dir, config)?;
    }
    let doc_bytes = to_canonical_json(&ex.doc);
    let doc_digest = put_layout_bytes(dir, &doc_bytes)?;
    let manifest = ex.manifest(doc_digest, doc_bytes.len());
    let manifest_digest = put_layout_bytes(dir, &manifest)?;
    let mut desc = Descriptor::new(
        media::OCI_MANIFEST,
        manifest_digest.clone(),
        manifest.len() as u64,
    );
    desc.annotations
        .insert(ANNOTATION_REF_NAME.to_string(), "latest".to_string());
    let index = Index {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.to_string()),
        manifests: vec![desc],
        annotations: Default::default(),
        extra: Default::default(),
    };
    let layout = format!("{{\"imageLayoutVersion\":\"{OCI_LAYOUT_VERSION}\"}}");
    write_layout_file(dir, OCI_LAYOUT_FILE, layout.as_bytes())?;
    write_layout_file(dir, INDEX_FILE, &to_canonical_json(&index))?;
    Ok(manifest_digest)
}

fn io_err(path: &Path, e: std::io::Error) -> RegistryError {
    RegistryError::Transport(format!("{}: {e}", path.display()))
}

/// Writes `name` in `dir` atomically (temp file, fsync, rename, fsync of `dir`).
fn write_layout_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), RegistryError> {
    Ok(strata_cache::fsutil::atomic_write(
        dir,
        &dir.join(name),
        bytes,
    )?)
}

fn put_layout_bytes(dir: &Path, bytes: &[u8]) -> Result<Digest, RegistryError> {
    let d = Digest::of(bytes);
    put_layout_blob(dir, &d, bytes.len() as u64, &mut &bytes[..])?;
    Ok(d)
}

/// Adds a blob to the layout unless a file of that size is there already.
fn put_layout_blob(
    dir: &Path,
    digest: &Digest,
    size: u64,
    content: &mut dyn Read,
) -> Result<(), RegistryError> {
    let path = dir.join(blob_path(digest));
    if fs::metadata(&path)
        .map(|m| m.len() == size)
        .unwrap_or(false)
    {
        return Ok(());
    }
    let parent = path.parent().unwrap_or(dir);
    let mut tmp = tempfile::NamedTempFile::new_in(parent).map_err(|e| io_err(parent, e))?;
    std::io::copy(content, &mut tmp).map_err(|e| io_err(&path, e))?;
    tmp.as_file().sync_all().map_err(|e| io_err(&path, e))?;
    tmp.persist(&path).map_err(|e| io_err(&path, e.error))?;
    Ok(())
}

/// Blobs of an OCI layout directory.
struct LayoutBlobs {
    dir: PathBuf,
}

impl BlobSource for LayoutBlobs {
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, RegistryError> {
        let path = self.dir.join(blob_path(digest));
        match fs::File::open(&path) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RegistryError::NotFound(
                format!("{}: missing", path.display()),
            )),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    fn repository(&self) -> Option<String> {
        None
    }
}

/// Where an imported cache's blobs are.
enum Origin {
    Registry { client: Box<Client>, repo: String },
    Layout(LayoutBlobs),
}

/// A cache imported from a registry or a layout directory: the document, and where to fetch
/// content from.
pub struct RemoteCache {
    origin: Origin,
    doc: CacheDoc,
}

impl RemoteCache {
    /// Reads the cache document under `reference`. A missing cache is an empty one (the first
    /// build of a CI fleet has nothing to import).
    pub fn load(client: Client, reference: &Reference) -> Result<RemoteCache, RegistryError> {
        let repo = reference.path().to_string();
        let tag = reference
            .digest()
            .map(|d| d.to_string())
            .or_else(|| reference.tag().map(str::to_string))
            .unwrap_or_else(|| "latest".into());
        let (bytes, media_type, digest) = match client.manifest(&repo, &tag) {
            Ok(m) => m,
            Err(RegistryError::NotFound(_)) => {
                return Ok(RemoteCache {
                    origin: Origin::Registry {
                        client: Box::new(client),
                        repo,
                    },
                    doc: CacheDoc::default(),
                })
            }
            Err(e) => return Err(e),
        };
        let what = format!("cache {}/{repo}@{digest}", client.domain);
        if !media::is_manifest(&media_type) {
            return Err(RegistryError::Protocol(format!(
                "{what}: {media_type} is not a cache manifest"
            )));
        }
        let doc = read_doc(
            &RepoBlobs {
                client: &client,
                repo: &repo,
            },
            &what,
            &bytes,
        )?;
        Ok(RemoteCache {
            origin: Origin::Registry {
                client: Box::new(client),
                repo,
            },
            doc,
        })
    }

    /// Reads the cache of the OCI layout directory `dir` (`--cache-from type=local,src=DIR`).
    /// A directory without `index.json` is an empty cache.
    pub fn load_layout(dir: &Path) -> Result<RemoteCache, RegistryError> {
        let blobs = LayoutBlobs {
            dir: dir.to_path_buf(),
        };
        let index_path = dir.join(INDEX_FILE);
        let what = format!("cache {}", dir.display());
        let index_bytes = match fs::File::open(&index_path) {
            Ok(f) => read_capped(f, MAX_JSON_BYTES, &what)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RemoteCache {
                    origin: Origin::Layout(blobs),
                    doc: CacheDoc::default(),
                })
            }
            Err(e) => return Err(io_err(&index_path, e)),
        };
        let index = Index::parse(&what, &index_bytes)?;
        let Some(desc) = index.manifests.first() else {
            return Err(RegistryError::Protocol(format!(
                "{what}: index.json lists no manifest"
            )));
        };
        if desc.size > MAX_JSON_BYTES {
            return Err(RegistryError::Protocol(format!(
                "{what}: manifest too large"
            )));
        }
        let manifest = read_capped(blobs.open_blob(&desc.digest)?, desc.size, &what)?;
        if Digest::of(&manifest) != desc.digest {
            return Err(RegistryError::Integrity(format!(
                "{what}: the manifest does not match its digest {}",
                desc.digest
            )));
        }
        let doc = read_doc(&blobs, &what, &manifest)?;
        Ok(RemoteCache {
            origin: Origin::Layout(blobs),
            doc,
        })
    }

    pub fn len(&self) -> usize {
        self.doc.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.doc.steps.is_empty()
    }

    /// Brings the image the cache holds for `key` into the store; its ID, or None if the
    /// cache does not know the key.
    pub fn fetch(&self, store: &Store, key: &Digest) -> Result<Option<Digest>, RegistryError> {
        let Some(id) = self.doc.steps.get(key) else {
            return Ok(None);
        };
        if store.has_image(id) {
            return Ok(Some(id.clone()));
        }
        let image = self.doc.images.get(id).ok_or_else(|| {
            RegistryError::Protocol(format!(
                "cache: step {key} names image {id}, which the cache does not describe"
            ))
        })?;
        if &image.config.digest != id {
            return Err(RegistryError::Integrity(format!(
                "cache: image {id} has config {}",
                image.config.digest
            )));
        }
        let what = format!("cache image {id}");
        let registry_blobs;
        let blobs: &dyn BlobSource = match &self.origin {
            Origin::Registry { client, repo } => {
                registry_blobs = RepoBlobs { client, repo };
                &registry_blobs
            }
            Origin::Layout(l) => l,
        };
        let config_bytes = fetch_config(blobs, &image.config, &what)?;
        let config = ImageConfig::parse(&what, &config_bytes)?;
        if config.rootfs.diff_ids.len() != image.layers.len() {
            return Err(RegistryError::Protocol(format!(
                "{what}: {} layer blobs for {} diff_ids",
                image.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let _lease = store.lease()?;
        fetch_layers(
            store,
            blobs,
            &image.layers,
            &config.rootfs.diff_ids,
            &NoProgress,
        )?;
        store.put_image(&config_bytes, None, Vec::new())?;
        Ok(Some(id.clone()))
    }
}

/// Checks a cache manifest and reads, verifies and parses the document it carries.
fn read_doc(
    blobs: &dyn BlobSource,
    what: &str,
    manifest_bytes: &[u8],
) -> Result<CacheDoc, RegistryError> {
    let manifest: Manifest = strata_image::spec::from_json(what, manifest_bytes)?;
    if manifest.config.media_type != CACHE_DOC_MEDIA_TYPE {
        return Err(RegistryError::Protocol(format!(
            "{what}: config media type {:?} is not {CACHE_DOC_MEDIA_TYPE} (not a strata cache)",
            manifest.config.media_type
        )));
    }
    if manifest.config.size > MAX_DOC_BYTES {
        return Err(RegistryError::Protocol(format!(
            "{what}: cache document of {} bytes is too large",
            manifest.config.size
        )));
    }
    let doc_bytes = read_capped(
        blobs.open_blob(&manifest.config.digest)?,
        manifest.config.size,
        what,
    )?;
    if Digest::of(&doc_bytes) != manifest.config.digest {
        return Err(RegistryError::Integrity(format!(
            "{what}: the cache document does not match its digest"
        )));
    }
    let doc: CacheDoc = strata_image::spec::from_json(what, &doc_bytes)?;
    if doc.schema != CACHE_DOC_SCHEMA {
        return Err(RegistryError::Protocol(format!(
            "{what}: cache schema {:?} is not {CACHE_DOC_SCHEMA}",
            doc.schema
        )));
    }
    Ok(doc)
}
