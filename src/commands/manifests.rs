//! `manifest create|add|annotate|inspect|push|rm`: multi-platform tags made of single-platform images (a
//! local image index: `Refs::platforms`), as Docker's and podman's `manifest` commands make
//! manifest lists. `FROM`, `run --platform` and `build --platform` pick each platform's image.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use serde_json::json;
use strata_cache::Store;
use strata_image::reference::Reference;
use strata_image::spec::Platform;
use strata_image::Digest;

use crate::cli::ManifestCommand;
use crate::commands::registry::{push_cmd, RegistryConfig};

pub fn run(store: &Store, registries: &RegistryConfig, c: ManifestCommand) -> Result<()> {
    match c {
        ManifestCommand::Create {
            amend,
            list,
            images,
        } => {
            let reference = list_reference(&list)?;
            if !amend && store.platforms_of(&list)?.is_some() {
                bail!("refusing to amend an existing manifest list with no --amend flag");
            }
            let mut members = BTreeMap::new();
            for image in &images {
                add_member(store, &mut members, image, false)?;
            }
            store.tag_platforms(&reference, members)?;
            println!("Created manifest list {}", reference.familiar());
            Ok(())
        }
        ManifestCommand::Add { list, image } => {
            let reference = list_reference(&list)?;
            let mut members = store
                .platforms_of(&list)?
                .ok_or_else(|| anyhow!("{list}: no such manifest list"))?;
            add_member(store, &mut members, &image, true)?;
            Ok(store.tag_platforms(&reference, members)?)
        }
        ManifestCommand::Annotate {
            list,
            image,
            os,
            arch,
            variant,
        } => {
            let reference = list_reference(&list)?;
            let mut members = store
                .platforms_of(&list)?
                .ok_or_else(|| anyhow!("{list}: no such manifest list"))?;
            annotate(store, &mut members, &image, (os, arch, variant))?;
            Ok(store.tag_platforms(&reference, members)?)
        }
        ManifestCommand::Push { purge, push } => {
            if store.platforms_of(&push.image)?.is_none() {
                bail!("{}: no such manifest list", push.image);
            }
            push_cmd(store, registries, &push)?;
            if purge {
                remove(store, &push.image)?;
            }
            Ok(())
        }
        ManifestCommand::Inspect { list } => {
            let value = match store.platforms_of(&list)? {
                Some(members) => describe(store, &members)?,
                // Not a local list: the registry's manifest or index, as Docker's `manifest
                // inspect` shows (CI scripts ask it whether an image was pushed).
                None => remote_manifest(registries, &list)?,
            };
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(())
        }
        ManifestCommand::Rm { lists } => {
            let mut errors = Vec::new();
            for list in &lists {
                if let Err(e) = remove(store, list) {
                    errors.push(format!("{list}: {e}"));
                }
            }
            if !errors.is_empty() {
                bail!("{}", errors.join("; "));
            }
            Ok(())
        }
    }
}

fn list_reference(list: &str) -> Result<Reference> {
    let r = Reference::parse(list).map_err(|e| anyhow!("{list}: {e}"))?;
    if r.digest().is_some() {
        bail!("{list}: a manifest list is named by a tag, not a digest");
    }
    Ok(r)
}

/// Adds `image` under its config's platform; another image already there is an error unless
/// `replace`.
fn add_member(
    store: &Store,
    members: &mut BTreeMap<String, Digest>,
    image: &str,
    replace: bool,
) -> Result<()> {
    let id = store.resolve_image(image)?;
    let config = store.image(&id)?.config;
    let platform = Platform::of_config(&config).to_string();
    if let Some(other) = members.get(&platform) {
        if !replace && other != &id {
            bail!(
                "{image}: the list has a {platform} image already ({})",
                other.short()
            );
        }
    }
    members.insert(platform, id);
    Ok(())
}

/// Lists `image`, a member of the list, for another platform: the fields given replace its
/// own (a new OS or architecture drops the variant unless one is given).
fn annotate(
    store: &Store,
    members: &mut BTreeMap<String, Digest>,
    image: &str,
    (os, arch, variant): (Option<String>, Option<String>, Option<String>),
) -> Result<()> {
    let id = store.resolve_image(image)?;
    let Some(old) = members
        .iter()
        .find(|(_, m)| **m == id)
        .map(|(p, _)| p.clone())
    else {
        bail!("{image}: not in the manifest list");
    };
    let mut p = Platform::parse(&old).map_err(|e| anyhow!(e))?;
    if os.is_some() || arch.is_some() {
        p.variant = None;
    }
    p.os = os.unwrap_or(p.os);
    p.architecture = arch.unwrap_or(p.architecture);
    p.variant = variant.or(p.variant);
    // Parsed again so `--arch x86_64` is stored as amd64, as everywhere else.
    let text = format!(
        "{}/{}{}",
        p.os,
        p.architecture,
        p.variant.map(|v| format!("/{v}")).unwrap_or_default()
    );
    let p = Platform::parse(&text).map_err(|e| anyhow!("{text}: {e}"))?;
    members.remove(&old);
    if let Some(other) = members.get(&p.to_string()) {
        bail!(
            "{image}: the list has a {p} image already ({})",
            other.short()
        );
    }
    members.insert(p.to_string(), id);
    Ok(())
}

/// An OCI index's shape, each entry naming its image by ID (the manifests themselves are
/// made when the images are pushed or saved).
fn describe(store: &Store, members: &BTreeMap<String, Digest>) -> Result<serde_json::Value> {
    let mut manifests = Vec::new();
    for (platform, id) in members {
        let p = Platform::parse(platform).map_err(|e| anyhow!(e))?;
        let size = store.image(id)?.config_bytes.len();
        let mut platform = json!({"architecture": p.architecture, "os": p.os});
        if let Some(v) = &p.variant {
            platform["variant"] = json!(v);
        }
        manifests.push(json!({
            "image": id.to_string(),
            "configSize": size,
            "platform": platform,
        }));
    }
    Ok(json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
}

/// The manifest (or index) `name` names in its registry.
fn remote_manifest(registries: &RegistryConfig, name: &str) -> Result<serde_json::Value> {
    let no_such = || anyhow!("no such manifest: {name}");
    let Ok(r) = Reference::parse(name) else {
        return Err(no_such());
    };
    let wanted = match (r.digest(), r.tag()) {
        (Some(d), _) => d.to_string(),
        (None, t) => t.unwrap_or("latest").to_string(),
    };
    let client = registries.client(r.domain());
    let (bytes, _, _) = match client.manifest(r.path(), &wanted) {
        Ok(found) => found,
        Err(strata_registry::RegistryError::NotFound(_)) => return Err(no_such()),
        Err(e) => bail!("manifest inspect {name}: {e}"),
    };
    serde_json::from_slice(&bytes).map_err(|e| anyhow!("{name}: the registry's manifest: {e}"))
}

/// Removes the multi-platform tag `list` (its images stay, as Docker's `manifest rm`).
fn remove(store: &Store, list: &str) -> Result<()> {
    let key = list_reference(list)?.to_string();
    store.update_refs(|r| {
        if r.platforms.remove(&key).is_none() {
            return Err(strata_cache::StoreError::NotFound(format!(
                "no such manifest list: {list}"
            )));
        }
        r.tags.remove(&key);
        Ok(())
    })?;
    Ok(())
}
