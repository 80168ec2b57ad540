//! The build cache beyond the store: `--cache-from` caches (a registry or a local OCI layout)
//! asked when a key misses locally ([`ImportedCaches`], the executor's [`RemoteCache`]), and
//! `--cache-to` export of the steps a build made ([`export_cache`]).

use std::path::PathBuf;

use strata_cache::Store;
use strata_image::{Digest, Reference};
use strata_planner::model::{Base, BuildGraph};
use strata_registry::config::RegistryConfig;

use crate::{BuildError, RemoteCache};

/// Where a build cache is exported to or imported from.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheTarget {
    /// `type=registry,ref=R`
    Registry(Reference),
    /// `type=local,dest=DIR` / `src=DIR`: an OCI layout directory.
    Local(PathBuf),
}

/// `--cache-to`/`--cache-from`.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSpec {
    pub target: CacheTarget,
    /// `mode=max`: every stage's steps, not only the target's.
    pub max: bool,
}

impl CacheSpec {
    /// `type=registry,ref=R[,mode=min|max]`, `type=local,dest=DIR[,mode=..]` (`src=DIR` for
    /// `--cache-from`), or (for `--cache-from`, as Docker) a bare `R`.
    pub fn parse(flag: &str, s: &str) -> Result<CacheSpec, String> {
        let mut kind = None;
        let mut reference = None;
        let mut dir = None;
        let mut max = false;
        let mut unknown: Option<String> = None;
        let dir_key = if flag == "--cache-to" { "dest" } else { "src" };
        if !s.contains('=') {
            reference = Some(s.to_string());
            kind = Some("registry".to_string());
        } else {
            for field in s.split(',') {
                let (k, v) = field
                    .split_once('=')
                    .ok_or_else(|| format!("{flag} {s}: field {field:?} is not key=value"))?;
                match k {
                    "type" => kind = Some(v.to_string()),
                    "ref" => reference = Some(v.to_string()),
                    _ if k == dir_key => dir = Some(PathBuf::from(v)),
                    "mode" => match v {
                        "min" => max = false,
                        "max" => max = true,
                        _ => return Err(format!("{flag} {s}: mode must be min or max")),
                    },
                    // Accepted for compatibility; layers are always gzip-compressed.
                    "compression" | "oci-mediatypes" | "ignore-error" | "image-manifest"
                    | "digest" | "tag" => {}
                    _ => {
                        unknown.get_or_insert(k.to_string());
                    }
                }
            }
        }
        if let Some(other) = kind
            .as_deref()
            .filter(|k| !matches!(*k, "registry" | "local"))
        {
            return Err(format!(
                "{flag} {s}: cache type {other:?} is not supported (registry or local)"
            ));
        }
        if let Some(k) = unknown {
            return Err(format!("{flag} {s}: unknown field {k:?}"));
        }
        let target = match kind.as_deref() {
            Some("registry") => {
                let r = reference.ok_or_else(|| format!("{flag} {s}: ref= is missing"))?;
                CacheTarget::Registry(Reference::parse(&r).map_err(|e| format!("{flag} {s}: {e}"))?)
            }
            Some("local") => {
                CacheTarget::Local(dir.ok_or_else(|| format!("{flag} {s}: {dir_key}= is missing"))?)
            }
            _ => return Err(format!("{flag} {s}: type= is missing")),
        };
        Ok(CacheSpec { target, max })
    }

    /// The cache as messages name it.
    pub fn describe(&self) -> String {
        match &self.target {
            CacheTarget::Registry(r) => r.familiar(),
            CacheTarget::Local(d) => d.display().to_string(),
        }
    }
}

/// The imported caches, asked in order.
pub struct ImportedCaches {
    caches: Vec<(String, strata_registry::cache::RemoteCache)>,
}

impl ImportedCaches {
    /// Reads the index of every cache in `specs`.
    pub fn load(
        specs: &[CacheSpec],
        registries: &RegistryConfig,
    ) -> Result<ImportedCaches, BuildError> {
        let mut caches = Vec::new();
        for spec in specs {
            let cache = match &spec.target {
                CacheTarget::Registry(r) => {
                    strata_registry::cache::RemoteCache::load(registries.client(r.domain()), r)
                }
                CacheTarget::Local(dir) => strata_registry::cache::RemoteCache::load_layout(dir),
            }
            .map_err(|e| BuildError::Other(format!("--cache-from {}: {e}", spec.describe())))?;
            tracing::info!("cache {}: {} steps", spec.describe(), cache.len());
            caches.push((spec.describe(), cache));
        }
        Ok(ImportedCaches { caches })
    }
}

impl RemoteCache for ImportedCaches {
    fn fetch(&self, store: &Store, key: &Digest) -> Result<Option<Digest>, String> {
        for (name, c) in &self.caches {
            match c.fetch(store, key) {
                Ok(Some(id)) => return Ok(Some(id)),
                Ok(None) => {}
                Err(e) => return Err(format!("{name}: {e}")),
            }
        }
        Ok(None)
    }
}

/// The (key, image) pairs to export: every step of every stage built (max), or of the target
/// stage and the stages it is built on (min).
fn cache_entries(
    store: &Store,
    graph: &BuildGraph,
    max: bool,
) -> Result<Vec<(Digest, Digest)>, BuildError> {
    let mut stages = Vec::new();
    if max {
        stages.extend(graph.order.iter().copied());
    } else {
        let mut s = Some(graph.target);
        while let Some(i) = s {
            stages.push(i);
            s = match graph.stages[i].base {
                Base::Stage(b) => Some(b),
                _ => None,
            };
        }
        stages.reverse();
    }
    let mut out = Vec::new();
    for i in stages {
        for step in &graph.stages[i].steps {
            if let Some(rec) = store.cache_get(&step.key)? {
                // An image prune may have taken the record: the cache kept its content.
                if store.cache_image(&rec, None)?.is_some() {
                    out.push((step.key.clone(), rec.image));
                }
            }
        }
    }
    Ok(out)
}

/// Exports the build's steps to the cache `spec` names; returns how many and the digest of
/// the cache's manifest (or index).
pub fn export_cache(
    store: &Store,
    graphs: &[&BuildGraph],
    spec: &CacheSpec,
    registries: &RegistryConfig,
) -> Result<(usize, Digest), BuildError> {
    // One build per platform: their steps go into one cache (keys name the platform).
    let mut entries: Vec<(Digest, Digest)> = Vec::new();
    for graph in graphs {
        for e in cache_entries(store, graph, spec.max)? {
            if !entries.iter().any(|(k, _)| *k == e.0) {
                entries.push(e);
            }
        }
    }
    let digest = match &spec.target {
        CacheTarget::Registry(r) => strata_registry::cache::export(
            store,
            &registries.client(r.domain()),
            r,
            &entries,
            &strata_registry::NoProgress,
        ),
        CacheTarget::Local(dir) => strata_registry::cache::export_layout(store, dir, &entries),
    }
    .map_err(|e| BuildError::Other(format!("--cache-to {}: {e}", spec.describe())))?;
    Ok((entries.len(), digest))
}
