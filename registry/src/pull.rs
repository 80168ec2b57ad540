//! `pull`: resolve a reference to one platform's manifest, verify its config, fetch the missing
//! layers in parallel (each unpacked in the same pass that downloads and verifies it), publish
//! them bottom-up, then record the image, its manifest and its tags.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::sync::Mutex;

use strata_cache::layers::chain_id;
use strata_cache::staged::StagedLayer;
use strata_cache::{Image, Store};
use strata_image::spec::{
    media, Descriptor, ImageConfig, Index, Manifest, Platform, MAX_JSON_BYTES,
};
use strata_image::{Digest, Reference};

use crate::client::{read_capped, Client};
use crate::{platform_matches, LayerEvent, Progress, RegistryError};

/// Layers fetched at once (Docker's default is 3).
const PARALLEL_DOWNLOADS: usize = 3;

/// Annotation on a stored blob descriptor naming the repository it was last seen in, so a
/// push to another repository of the same registry can mount it instead of uploading.
pub const SOURCE_ANNOTATION: &str = "io.strata.source.repository";

/// Where blobs are read from: a repository of a registry ([`RepoBlobs`]) or an OCI layout
/// directory (a local build cache). Whatever it returns is verified by the caller.
pub trait BlobSource: Sync {
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, RegistryError>;
    /// `registry/repository`, recorded on fetched blobs so a push can mount them from there.
    fn repository(&self) -> Option<String>;
}

/// One repository of a registry.
pub struct RepoBlobs<'a> {
    pub client: &'a Client,
    pub repo: &'a str,
}

impl BlobSource for RepoBlobs<'_> {
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, RegistryError> {
        self.client.blob(self.repo, digest)
    }

    fn repository(&self) -> Option<String> {
        Some(format!("{}/{}", self.client.domain, self.repo))
    }
}

/// What a pull produced.
pub struct Pulled {
    pub image: Image,
    /// The digest the reference resolved to (the index's, for a multi-platform image).
    pub digest: Digest,
    /// False when the image was already in the store under this reference.
    pub downloaded: bool,
}

/// Pulls `reference` for `platform` into `store`.
pub fn pull(
    store: &Store,
    client: &Client,
    reference: &Reference,
    platform: &Platform,
    progress: &dyn Progress,
) -> Result<Pulled, RegistryError> {
    let _lease = store.lease()?;
    let repo = reference.path();
    let wanted = wanted_reference(reference);
    let (bytes, media_type, top_digest) = client.manifest(repo, &wanted)?;
    let index = if media::is_index(&media_type) {
        Some(parse_index(client, repo, &wanted, &bytes)?)
    } else {
        None
    };
    let (manifest_bytes, manifest_desc, listed) = match &index {
        Some(index) => {
            let entry = select_platform(client, repo, &wanted, index, platform)?;
            let (bytes, desc) = fetch_manifest(client, repo, entry)?;
            (bytes, desc, entry.platform.clone())
        }
        None => {
            let desc = Descriptor::new(&media_type, top_digest.clone(), bytes.len() as u64);
            (bytes.clone(), desc, None)
        }
    };
    let blobs = RepoBlobs { client, repo };
    let (image, existed) = fetch_image(
        store,
        &blobs,
        &manifest_bytes,
        manifest_desc.clone(),
        platform,
        progress,
    )?;
    let previous = reference
        .tag()
        .and_then(|_| store.resolve_image(&reference.to_string()).ok());
    let by_digest = reference.with_digest(top_digest.clone());
    // Another platform of the same index pulled before stays under the tag with this one (as
    // Docker's containerd store keeps an index's platforms), so a build for two platforms
    // that pulls its base for each leaves `run` of the tag working.
    let members = match (&index, &listed) {
        (Some(index), Some(p)) => same_index_members(store, &by_digest, index, p, image.id())?,
        _ => BTreeMap::new(),
    };
    let is_tag = reference.tag().is_some() && reference.digest().is_none();
    if members.len() > 1 {
        if is_tag {
            store.tag_platforms(reference, members.clone())?;
        }
        store.tag_platforms(&by_digest, members)?;
    } else {
        if is_tag {
            store.tag(reference, image.id())?;
        }
        store.tag(&by_digest, image.id())?;
    }
    Ok(Pulled {
        downloaded: !existed || previous.as_ref() != Some(image.id()),
        image,
        digest: top_digest,
    })
}

/// The platforms of `index` the store holds under `by_digest` (its `repo@digest` reference),
/// with `id` for `platform`.
fn same_index_members(
    store: &Store,
    by_digest: &Reference,
    index: &Index,
    platform: &Platform,
    id: &Digest,
) -> Result<BTreeMap<String, Digest>, RegistryError> {
    let key = by_digest.to_string();
    let refs = store.refs()?;
    let mut members = match refs.platforms.get(&key) {
        Some(m) => m.clone(),
        None => {
            let mut m = BTreeMap::new();
            // One image pulled from this index before: its entry names its platform.
            if let Some(old) = refs.digests.get(&key) {
                let record = store.image_record(old)?;
                let entry = index
                    .manifests
                    .iter()
                    .find(|e| record.manifests.iter().any(|m| m.digest == e.digest));
                if let Some(p) = entry.and_then(|e| e.platform.as_ref()) {
                    m.insert(p.to_string(), old.clone());
                }
            }
            m
        }
    };
    members.insert(platform.to_string(), id.clone());
    Ok(members)
}

/// What a pull of several platforms produced.
pub struct PulledPlatforms {
    /// One image per platform, sorted by platform.
    pub images: Vec<(Platform, Image)>,
    /// The index's digest.
    pub digest: Digest,
    /// False when every image was already in the store.
    pub downloaded: bool,
}

/// Pulls the image index `reference` names keeping several platforms (`platforms`, or every
/// real platform it lists when None): each one's image, and the tag names them all as a
/// multi-platform tag (`@digest` names the host's, or the first).
pub fn pull_platforms(
    store: &Store,
    client: &Client,
    reference: &Reference,
    platforms: Option<&[Platform]>,
    progress: &dyn Progress,
) -> Result<PulledPlatforms, RegistryError> {
    let _lease = store.lease()?;
    let repo = reference.path();
    let wanted = wanted_reference(reference);
    let (bytes, media_type, top_digest) = client.manifest(repo, &wanted)?;
    if !media::is_index(&media_type) {
        return Err(RegistryError::NotFound(format!(
            "{}/{repo}:{wanted} is a single-platform image, not an index of several",
            client.domain
        )));
    }
    let index = parse_index(client, repo, &wanted, &bytes)?;
    let entries: Vec<&Descriptor> = match platforms {
        Some(list) => list
            .iter()
            .map(|p| select_platform(client, repo, &wanted, &index, p))
            .collect::<Result<_, _>>()?,
        None => index
            .manifests
            .iter()
            .filter(|m| {
                media::is_manifest(&m.media_type)
                    && m.platform.as_ref().is_some_and(|p| p.os != "unknown")
            })
            .collect(),
    };
    let blobs = RepoBlobs { client, repo };
    let mut images: BTreeMap<String, (Platform, Image)> = BTreeMap::new();
    let mut downloaded = false;
    for entry in entries {
        let platform = entry.platform.clone().expect("entries have platforms");
        if images.contains_key(&platform.to_string()) {
            continue;
        }
        let (manifest_bytes, desc) = fetch_manifest(client, repo, entry)?;
        let (image, existed) =
            fetch_image(store, &blobs, &manifest_bytes, desc, &platform, progress)?;
        downloaded |= !existed;
        images.insert(platform.to_string(), (platform, image));
    }
    let members: BTreeMap<String, Digest> = images
        .iter()
        .map(|(k, (_, img))| (k.clone(), img.id().clone()))
        .collect();
    if reference.tag().is_some() && reference.digest().is_none() {
        downloaded |= store.platforms_of(&reference.to_string())?.as_ref() != Some(&members);
        store.tag_platforms(reference, members.clone())?;
    }
    store.tag_platforms(&reference.with_digest(top_digest.clone()), members)?;
    Ok(PulledPlatforms {
        images: images.into_values().collect(),
        digest: top_digest,
        downloaded,
    })
}

/// The tag or digest a reference asks a registry for.
fn wanted_reference(reference: &Reference) -> String {
    match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".to_string(),
    }
}

/// Fetches one image's config and missing layers and records it with its manifest; the
/// image, and whether the store had it already.
fn fetch_image(
    store: &Store,
    blobs: &RepoBlobs,
    manifest_bytes: &[u8],
    manifest_desc: Descriptor,
    platform: &Platform,
    progress: &dyn Progress,
) -> Result<(Image, bool), RegistryError> {
    let what = format!(
        "{}/{}@{}",
        blobs.client.domain, blobs.repo, manifest_desc.digest
    );
    let manifest = Manifest::parse(&format!("manifest {what}"), manifest_bytes)?;
    let config_bytes = fetch_config(blobs, &manifest.config, &what)?;
    let config = ImageConfig::parse(&format!("config {}", manifest.config.digest), &config_bytes)?;
    check_config_platform(&config, platform, &what)?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(RegistryError::Protocol(format!(
            "{what}: the manifest lists {} layers but the config {} diff_ids",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    let existed = store.has_image(&Digest::of(&config_bytes));
    fetch_layers(
        store,
        blobs,
        &manifest.layers,
        &config.rootfs.diff_ids,
        progress,
    )?;
    store.put_blob_bytes(manifest_bytes)?;
    let image = store.put_image(&config_bytes, None, vec![manifest_desc])?;
    Ok((image, existed))
}

fn parse_index(
    client: &Client,
    repo: &str,
    wanted: &str,
    bytes: &[u8],
) -> Result<Index, RegistryError> {
    Ok(Index::parse(
        &format!("index {}/{repo}:{wanted}", client.domain),
        bytes,
    )?)
}

/// Picks the entry of an index for `platform`.
fn select_platform<'i>(
    client: &Client,
    repo: &str,
    wanted: &str,
    index: &'i Index,
    platform: &Platform,
) -> Result<&'i Descriptor, RegistryError> {
    index
        .manifests
        .iter()
        .find(|m| {
            media::is_manifest(&m.media_type)
                && m.platform
                    .as_ref()
                    .is_some_and(|p| platform_matches(platform, p))
        })
        .ok_or_else(|| {
            let have: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|m| m.platform.as_ref())
                .map(|p| {
                    format!(
                        "{}/{}{}",
                        p.os,
                        p.architecture,
                        p.variant
                            .as_ref()
                            .map(|v| format!("/{v}"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            RegistryError::NotFound(format!(
                "{}/{repo}:{wanted}: no manifest for {}/{} (the index has: {})",
                client.domain,
                platform.os,
                platform.architecture,
                if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                }
            ))
        })
}

/// Fetches the image manifest an index entry names, checking its size and kind.
fn fetch_manifest(
    client: &Client,
    repo: &str,
    entry: &Descriptor,
) -> Result<(Vec<u8>, Descriptor), RegistryError> {
    if entry.size > MAX_JSON_BYTES {
        return Err(RegistryError::Protocol(format!(
            "manifest {}: {} bytes exceeds the 4 MiB limit",
            entry.digest, entry.size
        )));
    }
    let (bytes, media_type, digest) = client.manifest(repo, entry.digest.as_str())?;
    if bytes.len() as u64 != entry.size {
        return Err(RegistryError::Integrity(format!(
            "manifest {}: {} bytes but the index says {}",
            entry.digest,
            bytes.len(),
            entry.size
        )));
    }
    if !media::is_manifest(&media_type) {
        return Err(RegistryError::Protocol(format!(
            "manifest {digest}: media type {media_type:?} is not an image manifest"
        )));
    }
    Ok((bytes, Descriptor::new(&media_type, digest, entry.size)))
}

/// Fetches the config blob under the JSON cap and checks its digest and size.
pub(crate) fn fetch_config(
    blobs: &dyn BlobSource,
    desc: &Descriptor,
    what: &str,
) -> Result<Vec<u8>, RegistryError> {
    if !media::is_config(&desc.media_type) {
        return Err(RegistryError::Protocol(format!(
            "{what}: config media type {:?} is not an image config",
            desc.media_type
        )));
    }
    if desc.size > MAX_JSON_BYTES {
        return Err(RegistryError::Protocol(format!(
            "{what}: config of {} bytes exceeds the 4 MiB limit",
            desc.size
        )));
    }
    let bytes = read_capped(
        blobs.open_blob(&desc.digest)?,
        desc.size,
        &format!("config {}", desc.digest),
    )?;
    if bytes.len() as u64 != desc.size || Digest::of(&bytes) != desc.digest {
        return Err(RegistryError::Integrity(format!(
            "config {}: content does not match its descriptor ({} bytes, {})",
            desc.digest,
            bytes.len(),
            Digest::of(&bytes)
        )));
    }
    Ok(bytes)
}

/// A single-platform image for another platform is refused rather than run wrongly.
fn check_config_platform(
    config: &ImageConfig,
    platform: &Platform,
    what: &str,
) -> Result<(), RegistryError> {
    let (os, arch) = (config.os.as_str(), config.architecture.as_str());
    if (!os.is_empty() && os != platform.os) || (!arch.is_empty() && arch != platform.architecture)
    {
        return Err(RegistryError::NotFound(format!(
            "{what}: the image is for {os}/{arch}, not {}/{}",
            platform.os, platform.architecture
        )));
    }
    Ok(())
}

/// Downloads and unpacks the layers the store lacks, `PARALLEL_DOWNLOADS` at a time, then
/// publishes them bottom-up. A failure stops the other workers after their current layer.
pub(crate) fn fetch_layers(
    store: &Store,
    blobs: &dyn BlobSource,
    layers: &[Descriptor],
    diff_ids: &[Digest],
    progress: &dyn Progress,
) -> Result<(), RegistryError> {
    let mut chains = Vec::with_capacity(layers.len());
    let mut parent: Option<Digest> = None;
    for d in diff_ids {
        let c = chain_id(parent.as_ref(), d);
        chains.push(c.clone());
        parent = Some(c);
    }
    let mut todo = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        if !media::is_layer(&layer.media_type)
            || layer.media_type.contains("foreign")
            || layer.media_type.contains("nondistributable")
        {
            return Err(RegistryError::Protocol(format!(
                "layer {}: media type {:?} is not supported",
                layer.digest, layer.media_type
            )));
        }
        if store.has_layer(&chains[i]) {
            progress.layer(&layer.digest, LayerEvent::Exists);
        } else {
            progress.layer(&layer.digest, LayerEvent::Waiting { size: layer.size });
            todo.push(i);
        }
    }
    let staged: Mutex<BTreeMap<usize, StagedLayer>> = Mutex::new(BTreeMap::new());
    let source = blobs.repository();
    crate::for_each_parallel(&todo, PARALLEL_DOWNLOADS, |&i| {
        let st = fetch_one(
            store,
            blobs,
            &layers[i],
            &diff_ids[i],
            source.as_deref(),
            progress,
        )?;
        staged.lock().expect("staged").insert(i, st);
        Ok(())
    })?;
    let mut staged = staged.into_inner().expect("staged");
    for i in todo {
        let st = staged.remove(&i).expect("every layer was staged");
        let parent = if i == 0 { None } else { Some(&chains[i - 1]) };
        store.publish_staged(parent, st)?;
        progress.layer(&layers[i].digest, LayerEvent::Complete);
    }
    Ok(())
}

/// One layer: from the local blob when an earlier (interrupted) pull kept it, else from the
/// registry; unpacked while reading.
fn fetch_one(
    store: &Store,
    blobs: &dyn BlobSource,
    layer: &Descriptor,
    diff_id: &Digest,
    source: Option<&str>,
    progress: &dyn Progress,
) -> Result<StagedLayer, RegistryError> {
    let mut desc = Descriptor::new(&layer.media_type, layer.digest.clone(), layer.size);
    if let Some(source) = source {
        desc.annotations
            .insert(SOURCE_ANNOTATION.to_string(), source.to_string());
    }
    let what = format!("layer {}", layer.digest);
    let total = layer.size;
    let mut report =
        |done: u64| progress.layer(&layer.digest, LayerEvent::Transferring { done, total });
    let staged = if store.has_blob(&layer.digest) {
        let f = store.open_blob(&layer.digest)?;
        store.stage_layer_stream(
            BufReader::with_capacity(256 << 10, f),
            &desc,
            diff_id,
            &what,
            &mut report,
        )?
    } else {
        let body = blobs.open_blob(&layer.digest)?;
        store.stage_layer_stream(
            BufReader::with_capacity(256 << 10, body),
            &desc,
            diff_id,
            &what,
            &mut report,
        )?
    };
    Ok(staged)
}
