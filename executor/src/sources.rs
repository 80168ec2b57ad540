//! Where a build's inputs come from ([`StoreImages`], the planner's `ImageSource`): base
//! images from the store, pulled first as `--pull` says; `--build-context` directories made
//! images of (`Store::directory_image`) and image aliases; ADD's URLs downloaded and git
//! repositories checked out into a directory of the store's `tmp/` that lives as long as the
//! build.

use std::collections::BTreeMap;
use std::path::PathBuf;

use strata_cache::Store;
use strata_image::spec::{ImageConfig, Platform};
use strata_image::{Digest, Reference};
use strata_planner::model::{FetchedFile, FetchedTree};
use strata_planner::plan::ImageSource;
use strata_registry::config::RegistryConfig;
use strata_registry::NoProgress;

/// `--pull`: when base images are pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// When the store does not have them (the default).
    Missing,
    /// Every time (except images named by ID).
    Always,
    Never,
}

impl std::str::FromStr for PullPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<PullPolicy, String> {
        match s {
            "missing" => Ok(PullPolicy::Missing),
            "always" | "true" => Ok(PullPolicy::Always),
            "never" | "false" => Ok(PullPolicy::Never),
            other => Err(format!("--pull {other:?}: missing, always or never")),
        }
    }
}

/// Base images come from the store, pulled first when `--pull` asks for it; ADD's URLs and
/// git repositories are fetched into a directory of the store's `tmp/` that lives as long
/// as the build.
pub struct StoreImages<'a> {
    store: &'a Store,
    pull: PullPolicy,
    registries: &'a RegistryConfig,
    quiet: bool,
    fetched: std::cell::OnceCell<tempfile::TempDir>,
    fetches: std::cell::Cell<usize>,
    /// `--build-context NAME=docker-image://REF`: FROM NAME and --from=NAME mean REF.
    pub aliases: BTreeMap<String, String>,
    /// `--build-context NAME=DIR`: FROM NAME starts from that directory's files.
    pub dir_roots: BTreeMap<String, PathBuf>,
}

/// Largest ADD download, unless `STRATA_ADD_MAX_SIZE` (bytes) says otherwise.
const ADD_MAX_SIZE: u64 = 4 << 30;

impl<'a> StoreImages<'a> {
    /// Sources from `store`; `quiet` leaves out the "pulling" lines.
    pub fn new(
        store: &'a Store,
        pull: PullPolicy,
        registries: &'a RegistryConfig,
        quiet: bool,
    ) -> Self {
        StoreImages {
            store,
            pull,
            registries,
            quiet,
            fetched: std::cell::OnceCell::new(),
            fetches: std::cell::Cell::new(0),
            aliases: BTreeMap::new(),
            dir_roots: BTreeMap::new(),
        }
    }

    /// A new directory for one fetch.
    fn fetch_dir(&self) -> Result<PathBuf, String> {
        let base = match self.fetched.get() {
            Some(d) => d,
            None => {
                let d = tempfile::Builder::new()
                    .prefix("add-")
                    .tempdir_in(self.store.tmp_dir())
                    .map_err(|e| format!("{}: {e}", self.store.tmp_dir().display()))?;
                self.fetched.get_or_init(|| d)
            }
        };
        let n = self.fetches.get();
        self.fetches.set(n + 1);
        let dir = base.path().join(n.to_string());
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(dir)
    }
}

impl StoreImages<'_> {
    /// The local image `name` names for `platform` (a multi-platform tag's member for it; a
    /// multi-platform tag without one is an error, never a pull).
    fn local(
        &self,
        name: &str,
        platform: &Platform,
    ) -> Result<Option<(Digest, ImageConfig)>, String> {
        let multi = self
            .store
            .platforms_of(name)
            .map_err(|e| e.to_string())?
            .is_some();
        match self.store.resolve_image_for(name, platform) {
            Ok(id) => {
                let img = self.store.image(&id).map_err(|e| e.to_string())?;
                Ok(Some((id, img.config)))
            }
            Err(strata_cache::StoreError::NotFound(m)) if multi => Err(m),
            Err(strata_cache::StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Whether `--pull missing` pulls `name` for `platform`: nothing local has the name, or
    /// what has it was pulled (a `repo@digest` reference names it) for other platforms only —
    /// a build for two platforms pulls its base for each. An image imported or built under the
    /// name is never replaced by a pull: a platform it lacks is the planner's one-line error.
    fn missing_for(&self, name: &str, platform: &Platform) -> Result<bool, String> {
        let refs = self.store.refs().map_err(|e| e.to_string())?;
        let Ok(r) = Reference::parse(name) else {
            return Ok(self.local(name, platform)?.is_none());
        };
        let key = r.to_string();
        let named: Vec<&Digest> = match (refs.platforms.get(&key), refs.tags.get(&key)) {
            (Some(members), _) => {
                let has = members
                    .keys()
                    .any(|p| Platform::parse(p).is_ok_and(|p| platform.is_met_by(&p)));
                if has {
                    return Ok(false);
                }
                members.values().collect()
            }
            (None, Some(id)) => {
                let img = self.store.image(id).map_err(|e| e.to_string())?;
                if platform.is_met_by(&Platform::of_config(&img.config)) {
                    return Ok(false);
                }
                vec![id]
            }
            (None, None) => return Ok(self.local(name, platform)?.is_none()),
        };
        let pulled_as = format!("{}@", r.repository());
        Ok(r.digest().is_none()
            && refs
                .digests
                .iter()
                .any(|(k, id)| k.starts_with(&pulled_as) && named.contains(&id)))
    }

    fn pull(&self, reference: &Reference, platform: &Platform) -> Result<(), String> {
        if !self.quiet {
            eprintln!("pulling {}", reference.familiar());
        }
        let client = self.registries.client(reference.domain());
        strata_registry::pull::pull(self.store, &client, reference, platform, &NoProgress)
            .map(|_| ())
            .map_err(|e| format!("pull {}: {e}", reference.familiar()))
    }
}

impl ImageSource for StoreImages<'_> {
    fn lookup(
        &self,
        name: &str,
        platform: &Platform,
    ) -> Result<Option<(Digest, ImageConfig)>, String> {
        if let Some(dir) = self.dir_roots.get(&name.to_lowercase()) {
            return self
                .store
                .directory_image(name, dir)
                .map(Some)
                .map_err(|e| format!("build context {name}: {e}"));
        }
        let name = self
            .aliases
            .get(&name.to_lowercase())
            .map(String::as_str)
            .unwrap_or(name);
        let reference = Reference::parse(name).map_err(|e| e.to_string())?;
        // An image ID (or its prefix) names local content and is never pulled.
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        let is_id = hex.len() >= 12
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
            && self.local(name, platform)?.is_some();
        match self.pull {
            PullPolicy::Always if !is_id => self.pull(&reference, platform)?,
            PullPolicy::Missing if self.missing_for(name, platform)? => {
                self.pull(&reference, platform)?
            }
            _ => {}
        }
        self.local(name, platform)
    }

    fn fetch_url(&self, url: &str) -> Result<FetchedFile, String> {
        let max = std::env::var("STRATA_ADD_MAX_SIZE")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(ADD_MAX_SIZE);
        let timeout = strata_registry::config::network_timeout()
            .unwrap_or(strata_registry::client::ClientOptions::default().timeout);
        let dir = self.fetch_dir()?;
        let d = strata_registry::remote::download(url, &dir, max, timeout)
            .map_err(|e| e.to_string())?;
        Ok(FetchedFile {
            path: d.path,
            digest: d.digest,
            filename: d.filename,
            mtime: d.last_modified,
        })
    }

    fn fetch_git(&self, source: &str, keep_git_dir: bool) -> Result<FetchedTree, String> {
        let src = strata_registry::remote::GitSource::parse(source);
        let dir = self.fetch_dir()?.join("checkout");
        let c = strata_registry::remote::git_checkout(&src, &dir, keep_git_dir)
            .map_err(|e| e.to_string())?;
        Ok(FetchedTree {
            dir: c.dir,
            commit: c.commit,
        })
    }
}
