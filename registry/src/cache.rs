//! The registry-backed build cache (`--cache-to/--cache-from type=registry,ref=R`).
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

use serde::{Deserialize, Serialize};
use strata_cache::Store;
use strata_image::compress::Compression;
use strata_image::spec::{media, to_canonical_json, Descriptor, ImageConfig, Manifest};
use strata_image::{Digest, Reference};

use crate::client::{read_capped, Client};
use crate::pull::{fetch_config, fetch_layers};
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
    let mut doc = CacheDoc {
        schema: CACHE_DOC_SCHEMA.to_string(),
        ..Default::default()
    };
    let mut items: Vec<(Digest, Descriptor)> = Vec::new();
    let mut seen_layers = BTreeSet::new();
    for (key, id) in steps {
        doc.steps.insert(key.clone(), id.clone());
        if doc.images.contains_key(id) {
            continue;
        }
        let image = store.image(id)?;
        let mut layers = Vec::new();
        for chain in &image.record.layers {
            let blob = store.layer_blob(chain, Compression::Gzip)?;
            let desc = Descriptor::new(media::OCI_LAYER_GZIP, blob.digest, blob.size);
            if seen_layers.insert(desc.digest.clone()) {
                items.push((chain.clone(), desc.clone()));
            }
            layers.push(desc);
        }
        let config = Descriptor::new(
            media::OCI_CONFIG,
            id.clone(),
            image.config_bytes.len() as u64,
        );
        upload_small_blob(client, repo, &image.config_bytes)?;
        doc.images
            .insert(id.clone(), CachedImage { config, layers });
    }
    upload_layers(store, client, repo, &source, &items, progress)?;
    let doc_bytes = to_canonical_json(&doc);
    let doc_digest = upload_small_blob(client, repo, &doc_bytes)?;
    let mut referenced: Vec<Descriptor> = items.into_iter().map(|(_, d)| d).collect();
    referenced.extend(doc.images.values().map(|i| i.config.clone()));
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.to_string()),
        config: Descriptor::new(CACHE_DOC_MEDIA_TYPE, doc_digest, doc_bytes.len() as u64),
        layers: referenced,
        annotations: Default::default(),
        extra: Default::default(),
    };
    let bytes = to_canonical_json(&manifest);
    let tag = reference.tag().unwrap_or("latest");
    client.put_manifest(repo, tag, media::OCI_MANIFEST, &bytes)
}

/// A cache imported from a registry: the document, and the client to fetch content with.
pub struct RemoteCache {
    client: Client,
    repo: String,
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
                    client,
                    repo,
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
        let manifest: Manifest = strata_image::spec::from_json(&what, &bytes)?;
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
            client.blob(&repo, &manifest.config.digest)?,
            manifest.config.size,
            &what,
        )?;
        if Digest::of(&doc_bytes) != manifest.config.digest {
            return Err(RegistryError::Integrity(format!(
                "{what}: the cache document does not match its digest"
            )));
        }
        let doc: CacheDoc = strata_image::spec::from_json(&what, &doc_bytes)?;
        if doc.schema != CACHE_DOC_SCHEMA {
            return Err(RegistryError::Protocol(format!(
                "{what}: cache schema {:?} is not {CACHE_DOC_SCHEMA}",
                doc.schema
            )));
        }
        Ok(RemoteCache { client, repo, doc })
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
        let config_bytes = fetch_config(&self.client, &self.repo, &image.config, &what)?;
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
            &self.client,
            &self.repo,
            &image.layers,
            &config.rootfs.diff_ids,
            &NoProgress,
        )?;
        store.put_image(&config_bytes, None, Vec::new())?;
        Ok(Some(id.clone()))
    }
}
