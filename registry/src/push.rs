//! `push`: upload the image's layer blobs (made on demand in the wanted compression and kept),
//! skipping those the registry has and mounting those another repository of the registry
//! has, then the config, then the manifest under the tag.

use std::io::BufReader;

use strata_cache::{Image, Store};
use strata_image::compress::Compression;
use strata_image::spec::{media, to_canonical_json, Descriptor, Manifest};
use strata_image::{Digest, Reference};

use crate::client::Client;
use crate::pull::SOURCE_ANNOTATION;
use crate::{LayerEvent, Progress, RegistryError};

const PARALLEL_UPLOADS: usize = 3;

/// Manifest media types to push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Oci,
    Docker,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "oci" => Ok(Format::Oci),
            "docker" | "v2s2" => Ok(Format::Docker),
            other => Err(format!(
                "unknown manifest format {other:?}: expected oci or docker"
            )),
        }
    }

    fn manifest_type(self) -> &'static str {
        match self {
            Format::Oci => media::OCI_MANIFEST,
            Format::Docker => media::DOCKER_MANIFEST,
        }
    }

    fn config_type(self) -> &'static str {
        match self {
            Format::Oci => media::OCI_CONFIG,
            Format::Docker => media::DOCKER_CONFIG,
        }
    }

    fn layer_type(self, c: Compression) -> Result<&'static str, RegistryError> {
        Ok(match (self, c) {
            (Format::Oci, Compression::Gzip) => media::OCI_LAYER_GZIP,
            (Format::Oci, Compression::Zstd) => media::OCI_LAYER_ZSTD,
            (Format::Oci, Compression::None) => media::OCI_LAYER,
            (Format::Docker, Compression::Gzip) => media::DOCKER_LAYER_GZIP,
            (Format::Docker, Compression::None) => media::DOCKER_LAYER,
            (Format::Docker, Compression::Zstd) => {
                return Err(RegistryError::Protocol(
                    "zstd layers need the oci format (--format oci)".into(),
                ))
            }
            (_, other) => {
                return Err(RegistryError::Protocol(format!(
                    "{} layers cannot be pushed",
                    other.name()
                )))
            }
        })
    }
}

/// Push settings.
#[derive(Debug, Clone, Copy)]
pub struct PushOptions {
    pub compression: Compression,
    /// `None`: reuse the manifest the image came with when it fits, else OCI.
    pub format: Option<Format>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            compression: Compression::Gzip,
            format: None,
        }
    }
}

/// Pushes `image` as `target` (a tag). Returns the manifest digest and size.
pub fn push(
    store: &Store,
    client: &Client,
    image: &Image,
    target: &Reference,
    opts: PushOptions,
    progress: &dyn Progress,
) -> Result<(Digest, u64), RegistryError> {
    let _lease = store.lease()?;
    let reference = target.tag().unwrap_or("latest");
    let (digest, size) = push_manifest(store, client, image, target, reference, opts, progress)?;
    store.tag(&target.with_digest(digest.clone()), image.id())?;
    Ok((digest, size))
}

/// Pushes a multi-platform tag's images (`members`: platform text → image), each manifest by
/// its digest, then an index of them (OCI's, or Docker's manifest list with `--format
/// docker`) under `target`'s tag; the index's digest and size.
pub fn push_index(
    store: &Store,
    client: &Client,
    members: &[(strata_image::spec::Platform, Image)],
    target: &Reference,
    opts: PushOptions,
    progress: &dyn Progress,
) -> Result<(Digest, u64), RegistryError> {
    let _lease = store.lease()?;
    let mut manifests = Vec::new();
    for (platform, image) in members {
        let (media_type, bytes) = manifest_for(store, image, opts)?;
        let digest = Digest::of(&bytes);
        push_manifest(
            store,
            client,
            image,
            target,
            &digest.to_string(),
            opts,
            progress,
        )?;
        let mut desc = Descriptor::new(&media_type, digest, bytes.len() as u64);
        desc.platform = Some(platform.clone());
        manifests.push(desc);
    }
    let index_type = match opts.format.unwrap_or(Format::Oci) {
        Format::Oci => media::OCI_INDEX,
        Format::Docker => media::DOCKER_MANIFEST_LIST,
    };
    let bytes = to_canonical_json(&strata_image::spec::Index::new(index_type, manifests));
    let reference = target.tag().unwrap_or("latest");
    let digest = client.put_manifest(target.path(), reference, index_type, &bytes)?;
    Ok((digest, bytes.len() as u64))
}

/// The manifest `image` is pushed with: the one it came with when it still fits, else one
/// made now (layers compressed as asked).
fn manifest_for(
    store: &Store,
    image: &Image,
    opts: PushOptions,
) -> Result<(String, Vec<u8>), RegistryError> {
    Ok(match reusable_manifest(store, image, opts) {
        Some(found) => found,
        None => {
            let format = opts.format.unwrap_or(Format::Oci);
            let layers = layer_descriptors(store, image, opts.compression, format)?;
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(format.manifest_type().to_string()),
                config: Descriptor::new(
                    format.config_type(),
                    image.id().clone(),
                    image.config_bytes.len() as u64,
                ),
                layers,
                annotations: Default::default(),
                extra: Default::default(),
            };
            (
                format.manifest_type().to_string(),
                to_canonical_json(&manifest),
            )
        }
    })
}

/// Uploads `image`'s blobs and puts its manifest under `reference` (a tag, or the manifest's
/// own digest); the manifest's digest and size. The manifest is remembered with the image.
fn push_manifest(
    store: &Store,
    client: &Client,
    image: &Image,
    target: &Reference,
    reference: &str,
    opts: PushOptions,
    progress: &dyn Progress,
) -> Result<(Digest, u64), RegistryError> {
    let repo = target.path();
    let source = format!("{}/{repo}", client.domain);
    let (manifest_type, manifest_bytes) = manifest_for(store, image, opts)?;
    let manifest = Manifest::parse("manifest", &manifest_bytes)?;
    let items: Vec<(Digest, Descriptor)> = image
        .record
        .layers
        .iter()
        .cloned()
        .zip(manifest.layers.iter().cloned())
        .collect();
    // The config goes up on its own connection while the layers upload: its three requests
    // (HEAD, POST, PUT) no longer wait behind the largest layer.
    let (layers, config) = std::thread::scope(|s| {
        let config = s.spawn(|| upload_small_blob(client, repo, &image.config_bytes));
        let layers = upload_layers(store, client, repo, &source, &items, progress);
        (layers, config.join().expect("config upload does not panic"))
    });
    layers?;
    config?;
    let digest = client.put_manifest(repo, reference, &manifest_type, &manifest_bytes)?;
    store.put_blob_bytes(&manifest_bytes)?;
    let desc = Descriptor::new(&manifest_type, digest.clone(), manifest_bytes.len() as u64);
    store.put_image(&image.config_bytes, None, vec![desc])?;
    Ok((digest, manifest_bytes.len() as u64))
}

/// The manifest the image was pulled or loaded with, if its blobs are all still here and it
/// agrees with the requested format and compression: pushing it unchanged keeps the digest.
fn reusable_manifest(store: &Store, image: &Image, opts: PushOptions) -> Option<(String, Vec<u8>)> {
    for desc in image.record.manifests.iter().rev() {
        let Ok(bytes) = store.read_blob(&desc.digest, strata_image::spec::MAX_JSON_BYTES) else {
            continue;
        };
        let Ok(m) = Manifest::parse("stored manifest", &bytes) else {
            continue;
        };
        let format_fits = match opts.format {
            None => true,
            Some(f) => desc.media_type == f.manifest_type(),
        };
        let compression_fits = m.layers.iter().all(|l| match opts.compression {
            Compression::Gzip => l.media_type.ends_with("gzip"),
            Compression::Zstd => l.media_type.ends_with("zstd"),
            _ => l.media_type.ends_with(".tar"),
        });
        let complete = m.config.digest == *image.id()
            && m.layers.len() == image.record.layers.len()
            && m.layers.iter().all(|l| store.has_blob(&l.digest));
        if format_fits && compression_fits && complete {
            return Some((desc.media_type.clone(), bytes));
        }
    }
    None
}

/// Layer descriptors for a new manifest, compressing layers that have no blob of this kind.
fn layer_descriptors(
    store: &Store,
    image: &Image,
    compression: Compression,
    format: Format,
) -> Result<Vec<Descriptor>, RegistryError> {
    let mt = format.layer_type(compression)?;
    image
        .record
        .layers
        .iter()
        .map(|chain| {
            let blob = store.layer_blob(chain, compression)?;
            Ok(Descriptor::new(mt, blob.digest, blob.size))
        })
        .collect()
}

/// Uploads the layer blobs (each with its layer's chain ID) the registry lacks, mounting from a
/// known source repository first.
pub(crate) fn upload_layers(
    store: &Store,
    client: &Client,
    repo: &str,
    source: &str,
    items: &[(Digest, Descriptor)],
    progress: &dyn Progress,
) -> Result<(), RegistryError> {
    crate::for_each_parallel(items, PARALLEL_UPLOADS, |(chain, layer)| {
        push_one(store, client, repo, source, chain, layer, progress)
    })
}

fn push_one(
    store: &Store,
    client: &Client,
    repo: &str,
    source: &str,
    chain: &Digest,
    layer: &Descriptor,
    progress: &dyn Progress,
) -> Result<(), RegistryError> {
    let d = &layer.digest;
    progress.layer(d, LayerEvent::Waiting { size: layer.size });
    let mut noted = Descriptor::new(&layer.media_type, d.clone(), layer.size);
    noted
        .annotations
        .insert(SOURCE_ANNOTATION.to_string(), source.to_string());
    if client.has_blob(repo, d)? {
        progress.layer(d, LayerEvent::Exists);
        store.record_layer_blob(chain, noted)?;
        return Ok(());
    }
    let prefix = format!("{}/", client.domain);
    let from = store
        .layer_meta(chain)?
        .blobs
        .iter()
        .filter(|b| &b.digest == d)
        .filter_map(|b| b.annotations.get(SOURCE_ANNOTATION))
        .filter_map(|s| s.strip_prefix(&prefix))
        .find(|r| *r != repo)
        .map(str::to_string);
    if let Some(from) = from {
        if client.mount_blob(repo, d, &from)? {
            progress.layer(d, LayerEvent::Mounted { from });
            store.record_layer_blob(chain, noted)?;
            return Ok(());
        }
    }
    let file = store.open_blob(d)?;
    let total = layer.size;
    let reader = ProgressReader {
        inner: BufReader::with_capacity(256 << 10, file),
        done: 0,
        report: |done| progress.layer(d, LayerEvent::Transferring { done, total }),
    };
    client.upload_blob(repo, d, layer.size, Box::new(reader))?;
    progress.layer(d, LayerEvent::Complete);
    store.record_layer_blob(chain, noted)?;
    Ok(())
}

struct ProgressReader<R, F> {
    inner: R,
    done: u64,
    report: F,
}

impl<R: std::io::Read, F: FnMut(u64)> std::io::Read for ProgressReader<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.report)(self.done);
        Ok(n)
    }
}

/// Uploads a small blob (a config) unless the registry has it.
pub(crate) fn upload_small_blob(
    client: &Client,
    repo: &str,
    bytes: &[u8],
) -> Result<Digest, RegistryError> {
    let digest = Digest::of(bytes);
    if !client.has_blob(repo, &digest)? {
        client.upload_blob(repo, &digest, bytes.len() as u64, Box::new(bytes))?;
    }
    Ok(digest)
}
