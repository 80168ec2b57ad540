//! `strata build`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use strata_image::compress::Compression;
use strata_image::layer::TarOptions;

use crate::commands::registry::{self, RegistryConfig};
use anyhow::{anyhow, bail, Context as _, Result};
use strata_cache::Store;
use strata_executor::progress::{Mode, Progress};
use strata_executor::{BuildError, ExecOptions, Executor};
use strata_image::reference::Reference;
use strata_image::spec::ImageConfig;
use strata_image::Digest;
use strata_parser::ignore::Matcher;
use strata_parser::parse_dockerfile;
use strata_planner::context::{Context, StatCache};
use strata_planner::keys::{source_rows, KeyOp};
use strata_planner::model::{Base, BuildGraph, FetchedFile, FetchedTree, StepOp};
use strata_planner::plan::{plan, ImageSource, PlanOptions};

use crate::cli::BuildArgs;

/// The Dockerfile's name (for messages), path and text.
pub struct DockerfileSource {
    pub name: String,
    /// Where it was read from (for `<Dockerfile>.dockerignore`); None for stdin.
    pub path: Option<PathBuf>,
    pub text: String,
}

/// Reads the Dockerfile: `-f -` from stdin, `-f FILE` as given (like Docker, it may live
/// outside the context), else `CONTEXT/Dockerfile` resolved inside the context.
pub fn read_dockerfile(a: &BuildArgs) -> Result<DockerfileSource> {
    let read_limited = |r: &mut dyn Read, name: &str| -> Result<String> {
        let mut buf = Vec::new();
        r.take(MAX_DOCKERFILE + 1)
            .read_to_end(&mut buf)
            .with_context(|| format!("read {name}"))?;
        if buf.len() as u64 > MAX_DOCKERFILE {
            bail!("{name}: larger than the {} MiB limit", MAX_DOCKERFILE >> 20);
        }
        String::from_utf8(buf).map_err(|e| {
            anyhow::anyhow!(
                "{name}: not valid UTF-8 (byte {})",
                e.utf8_error().valid_up_to()
            )
        })
    };
    let file = if a.context == "-" && a.file.is_none() {
        Some("-")
    } else {
        a.file.as_deref()
    };
    match file {
        Some("-") => Ok(DockerfileSource {
            name: "Dockerfile".into(),
            path: None,
            text: read_limited(&mut std::io::stdin().lock(), "stdin")?,
        }),
        Some(f) => {
            let mut file =
                std::fs::File::open(f).with_context(|| format!("open Dockerfile {f}"))?;
            Ok(DockerfileSource {
                name: f.to_string(),
                path: Some(PathBuf::from(f)),
                text: read_limited(&mut file, f)?,
            })
        }
        None => {
            let context = Path::new(&a.context);
            let path = context.join("Dockerfile");
            let name = path.display().to_string();
            // Resolved inside the context: a Dockerfile symlink cannot pull in a host file.
            let root = std::fs::canonicalize(context)
                .with_context(|| format!("context {}", context.display()))?;
            let real =
                std::fs::canonicalize(&path).with_context(|| format!("open Dockerfile {name}"))?;
            if !real.starts_with(&root) {
                bail!("{name}: resolves outside the build context");
            }
            let mut file =
                std::fs::File::open(&real).with_context(|| format!("open Dockerfile {name}"))?;
            Ok(DockerfileSource {
                name,
                path: Some(path),
                text: read_limited(&mut file, "Dockerfile")?,
            })
        }
    }
}

/// Dockerfiles larger than this are refused (a 100k-instruction file is about 2 MiB).
const MAX_DOCKERFILE: u64 = 16 << 20;

/// BuildKit's limit on one secret.
const MAX_SECRET_BYTES: u64 = 500 << 10;

/// `--secret id=ID[,src=FILE|,env=VAR]` (a bare `id` reads the variable of that name) and
/// `--ssh default|ID[=SOCKET]`.
fn build_secrets(a: &BuildArgs) -> Result<strata_executor::mounts::BuildSecrets> {
    let mut out = strata_executor::mounts::BuildSecrets::default();
    for spec in &a.secrets {
        let (mut id, mut src, mut env) = (None, None, None);
        for field in spec.split(',') {
            match field.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(v.to_string()),
                Some(("env", v)) => env = Some(v.to_string()),
                Some(("type", "file" | "env")) => {}
                _ => bail!("--secret {spec}: unknown field {field:?} (id=, src=, env=)"),
            }
        }
        let id = id
            .or_else(|| {
                src.as_deref()
                    .and_then(|s| Path::new(s).file_name())
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .ok_or_else(|| anyhow!("--secret {spec}: id= is missing"))?;
        let value = match (src, env) {
            (Some(f), _) => {
                let meta =
                    std::fs::metadata(&f).with_context(|| format!("--secret {spec}: {f}"))?;
                if meta.len() > MAX_SECRET_BYTES {
                    bail!("--secret {spec}: {f} is larger than 500 KiB");
                }
                std::fs::read(&f).with_context(|| format!("--secret {spec}: {f}"))?
            }
            (None, Some(var)) => std::env::var(&var)
                .map_err(|_| anyhow!("--secret {spec}: environment variable {var} is not set"))?
                .into_bytes(),
            (None, None) => std::env::var(&id)
                .map_err(|_| {
                    anyhow!("--secret {spec}: give src=FILE or env=VAR (no variable {id} either)")
                })?
                .into_bytes(),
        };
        out.secrets.insert(id, value);
    }
    for spec in &a.ssh {
        let (id, path) = match spec.split_once('=') {
            Some((id, p)) => (id.to_string(), PathBuf::from(p)),
            None => {
                let sock = std::env::var_os("SSH_AUTH_SOCK").ok_or_else(|| {
                    anyhow!("--ssh {spec}: SSH_AUTH_SOCK is not set; give {spec}=SOCKET")
                })?;
                (spec.clone(), PathBuf::from(sock))
            }
        };
        use std::os::unix::fs::FileTypeExt;
        let meta = std::fs::metadata(&path)
            .with_context(|| format!("--ssh {spec}: {}", path.display()))?;
        if !meta.file_type().is_socket() {
            bail!(
                "--ssh {spec}: {} is not an agent socket (key files are not supported)",
                path.display()
            );
        }
        out.ssh.insert(id, path);
    }
    Ok(out)
}

/// `--allow`: the entitlements `security.insecure` and `network.host`, as (insecure, host).
fn entitlements(a: &BuildArgs) -> Result<(bool, bool)> {
    let (mut insecure, mut host) = (false, false);
    for e in &a.allow {
        match e.as_str() {
            "security.insecure" => insecure = true,
            "network.host" => host = true,
            other => {
                bail!("--allow {other}: unknown entitlement (security.insecure, network.host)")
            }
        }
    }
    Ok((insecure, host))
}

/// `--build-arg K=V` / `--build-arg K` (from the environment).
pub fn build_args(a: &BuildArgs) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for b in &a.build_args {
        if b.contains('\0') {
            bail!("--build-arg {b:?}: contains a NUL byte");
        }
        match b.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            Some(_) => bail!("--build-arg {b:?}: empty name"),
            None => {
                if let Ok(v) = std::env::var(b) {
                    out.insert(b.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

/// `build --check`: parse and validate, print every problem with its line and a caret.
pub fn check(a: &BuildArgs) -> Result<()> {
    let src = read_dockerfile(a)?;
    let args = build_args(a)?;
    let df = match parse_dockerfile(&src.name, &src.text) {
        Ok(df) => df,
        Err(e) => {
            eprintln!("{}", e.render());
            bail!("{}: check failed", src.name);
        }
    };
    let problems = strata_planner::check::check(&src.name, &src.text, &df, &args);
    if problems.is_empty() {
        for w in &df.warnings {
            println!("{}:{}: warning: {}", src.name, w.line, w.message);
        }
        if df.warnings.is_empty() {
            println!("Check complete, no warnings found.");
        } else {
            println!(
                "Check complete, {} warnings have been found!",
                df.warnings.len()
            );
        }
        return Ok(());
    }
    for p in &problems {
        eprintln!("{}", p.render());
    }
    bail!("{}: check failed with {} errors", src.name, problems.len());
}

/// `--no-cache-filter`: each must name a stage of the Dockerfile.
fn no_cache_stages(a: &BuildArgs, graph: &BuildGraph) -> Result<Vec<String>> {
    for f in &a.no_cache_filter {
        let known = graph.stages.iter().any(|s| {
            s.name.as_deref() == Some(f.to_lowercase().as_str())
                || f.parse::<usize>().ok() == Some(s.index)
        });
        if !known {
            bail!("--no-cache-filter {f}: no such stage in the Dockerfile");
        }
    }
    Ok(a.no_cache_filter.clone())
}

/// Base images come from the store, pulled first when `--pull` asks for it; ADD's URLs and
/// git repositories are fetched into a directory of the store's `tmp/` that lives as long
/// as the build.
struct StoreImages<'a> {
    store: &'a Store,
    pull: &'a str,
    registries: &'a RegistryConfig,
    quiet: bool,
    fetched: std::cell::OnceCell<tempfile::TempDir>,
    fetches: std::cell::Cell<usize>,
    /// `--build-context NAME=docker-image://REF`: FROM NAME and --from=NAME mean REF.
    aliases: BTreeMap<String, String>,
    /// `--build-context NAME=DIR`: FROM NAME starts from that directory's files.
    dir_roots: BTreeMap<String, PathBuf>,
}

/// `--build-context NAME=VALUE`s: local directories and image aliases.
struct NamedContexts {
    dirs: BTreeMap<String, Context>,
    images: BTreeMap<String, String>,
}

impl NamedContexts {
    fn parse(flags: &[String]) -> Result<NamedContexts> {
        let mut out = NamedContexts {
            dirs: BTreeMap::new(),
            images: BTreeMap::new(),
        };
        for f in flags {
            let (name, value) = f
                .split_once('=')
                .filter(|(n, v)| !n.is_empty() && !v.is_empty())
                .ok_or_else(|| {
                    anyhow!("--build-context {f}: want NAME=DIR or NAME=docker-image://REF")
                })?;
            let name = name.to_lowercase();
            if let Some(r) = value.strip_prefix("docker-image://") {
                Reference::parse(r).map_err(|e| anyhow!("--build-context {f}: {e}"))?;
                out.images.insert(name, r.to_string());
            } else if value.contains("://") || value.starts_with("target:") {
                bail!("--build-context {f}: only directories and docker-image:// are supported");
            } else {
                let ctx =
                    Context::load(Path::new(value), &Matcher::new::<&str>(&[]).expect("empty"))
                        .map_err(|e| anyhow!("--build-context {f}: {e}"))?;
                out.dirs.insert(name, ctx);
            }
        }
        Ok(out)
    }
}

/// Largest ADD download, unless `STRATA_ADD_MAX_SIZE` (bytes) says otherwise.
const ADD_MAX_SIZE: u64 = 4 << 30;

impl<'a> StoreImages<'a> {
    fn new(store: &'a Store, pull: &'a str, registries: &'a RegistryConfig, quiet: bool) -> Self {
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
    fn fetch_dir(&self) -> std::result::Result<PathBuf, String> {
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
    fn local(&self, name: &str) -> std::result::Result<Option<(Digest, ImageConfig)>, String> {
        match self.store.resolve_image(name) {
            Ok(id) => {
                let img = self.store.image(&id).map_err(|e| e.to_string())?;
                Ok(Some((id, img.config)))
            }
            Err(strata_cache::StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    fn pull(&self, reference: &Reference) -> std::result::Result<(), String> {
        if !self.quiet {
            eprintln!("pulling {}", reference.familiar());
        }
        let platform = strata_cache::transfer::host_platform();
        registry::pull_image(self.store, self.registries, reference, &platform, true)
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    }
}

impl StoreImages<'_> {
    /// `FROM NAME` of a directory context: its files become a one-layer image (like
    /// `import` of that tree), whose ID depends only on the content.
    fn directory_image(
        &self,
        name: &str,
        dir: &Path,
    ) -> std::result::Result<(Digest, ImageConfig), String> {
        let _lease = self.store.lease().map_err(|e| e.to_string())?;
        // The tree's metadata, as stat gives it: when nothing changed since the image was made
        // (same trust as the context's stat cache), it is reused without reading the files.
        let stamp = tree_stamp(dir).map_err(|e| format!("build context {name}: {e}"))?;
        let memo = self.store.buildcache_dir().join(format!(
            "dirimage-{}.json",
            &Digest::of(dir.as_os_str().as_encoded_bytes()).hex()[..32]
        ));
        if let Some(img) = std::fs::read(&memo)
            .ok()
            .and_then(|b| serde_json::from_slice::<DirImage>(&b).ok())
            .filter(|m| m.schema == DIR_IMAGE_SCHEMA && m.stamp == stamp)
            .and_then(|m| self.store.image(&m.image).ok())
        {
            return Ok((img.id().clone(), img.config));
        }
        let layer = self
            .store
            .add_layer_from_dir(None, dir, false, &TarOptions::default())
            .map_err(|e| format!("build context {name}: {e}"))?;
        let cfg = ImageConfig {
            architecture: strata_cache::transfer::host_arch().to_string(),
            os: "linux".to_string(),
            rootfs: strata_image::spec::RootFs {
                kind: "layers".into(),
                diff_ids: vec![layer.diff_id],
            },
            history: vec![strata_image::spec::History {
                created_by: Some(format!("build context {name}")),
                ..Default::default()
            }],
            ..Default::default()
        };
        let img = self
            .store
            .put_image(
                &strata_image::spec::to_canonical_json(&cfg),
                None,
                Vec::new(),
            )
            .map_err(|e| e.to_string())?;
        let record = DirImage {
            schema: DIR_IMAGE_SCHEMA.to_string(),
            stamp,
            image: img.id().clone(),
        };
        // Best effort: without it the next build only reads the tree again.
        let _ = strata_cache::fsutil::atomic_write(
            &self.store.tmp_dir(),
            &memo,
            &serde_json::to_vec(&record).unwrap_or_default(),
        );
        Ok((img.id().clone(), img.config))
    }
}

const DIR_IMAGE_SCHEMA: &str = "strata.dirimage.v1";

/// `builder prune -a`: drops every directory-context record.
pub fn remove_directory_images(store: &Store) {
    let Ok(dir) = std::fs::read_dir(store.buildcache_dir()) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("dirimage-") && name.ends_with(".json") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// `buildcache/dirimage-<hash of the directory's path>.json`: the image a directory context
/// last became, with the stamp of the tree it was made from.
#[derive(serde::Serialize, serde::Deserialize)]
struct DirImage {
    schema: String,
    stamp: Digest,
    image: Digest,
}

/// A digest of the directory's and every entry's path and `lstat` (type, mode, owner, size,
/// inode, mtime and ctime with nanoseconds, link target) under `dir`, in a fixed order;
/// symlinks are not followed. Any change to a file's content or attributes changes its ctime,
/// so it changes the stamp.
fn tree_stamp(dir: &Path) -> std::io::Result<Digest> {
    use std::os::unix::fs::MetadataExt;
    let line = |m: &std::fs::Metadata| {
        format!(
            "\0{} {} {} {} {} {}.{} {}.{} ",
            m.mode(),
            m.uid(),
            m.gid(),
            m.size(),
            m.ino(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        )
    };
    let mut h = strata_image::digest::Hasher::new();
    h.update(line(&std::fs::metadata(dir)?).as_bytes());
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(dir.join(&rel))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for n in names {
            let p = rel.join(&n);
            let m = std::fs::symlink_metadata(dir.join(&p))?;
            h.update(b"\n");
            h.update(p.as_os_str().as_encoded_bytes());
            h.update(line(&m).as_bytes());
            if m.file_type().is_symlink() {
                h.update(
                    std::fs::read_link(dir.join(&p))?
                        .as_os_str()
                        .as_encoded_bytes(),
                );
            } else if m.is_dir() {
                stack.push(p);
            }
        }
    }
    Ok(h.finish())
}

impl ImageSource for StoreImages<'_> {
    fn lookup(&self, name: &str) -> std::result::Result<Option<(Digest, ImageConfig)>, String> {
        if let Some(dir) = self.dir_roots.get(&name.to_lowercase()) {
            return self.directory_image(name, dir).map(Some);
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
            && self.local(name)?.is_some();
        match self.pull {
            "always" if !is_id => self.pull(&reference)?,
            "missing" if self.local(name)?.is_none() => self.pull(&reference)?,
            _ => {}
        }
        self.local(name)
    }

    fn fetch_url(&self, url: &str) -> std::result::Result<FetchedFile, String> {
        let max = std::env::var("STRATA_ADD_MAX_SIZE")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(ADD_MAX_SIZE);
        let timeout = registry::network_timeout()
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

    fn fetch_git(
        &self,
        source: &str,
        keep_git_dir: bool,
    ) -> std::result::Result<FetchedTree, String> {
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

/// Where a build cache is exported to or imported from.
#[derive(Debug, Clone, PartialEq)]
enum CacheTarget {
    /// `type=registry,ref=R`
    Registry(Reference),
    /// `type=local,dest=DIR` / `src=DIR`: an OCI layout directory.
    Local(PathBuf),
}

/// `--cache-to`/`--cache-from`.
#[derive(Debug, Clone, PartialEq)]
struct CacheSpec {
    target: CacheTarget,
    max: bool,
}

impl CacheSpec {
    /// `type=registry,ref=R[,mode=min|max]`, `type=local,dest=DIR[,mode=..]` (`src=DIR` for
    /// `--cache-from`), or (for `--cache-from`, as Docker) a bare `R`.
    fn parse(flag: &str, s: &str) -> Result<CacheSpec> {
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
                    .ok_or_else(|| anyhow!("{flag} {s}: field {field:?} is not key=value"))?;
                match k {
                    "type" => kind = Some(v.to_string()),
                    "ref" => reference = Some(v.to_string()),
                    _ if k == dir_key => dir = Some(PathBuf::from(v)),
                    "mode" => match v {
                        "min" => max = false,
                        "max" => max = true,
                        _ => bail!("{flag} {s}: mode must be min or max"),
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
            bail!("{flag} {s}: cache type {other:?} is not supported (registry or local)")
        }
        if let Some(k) = unknown {
            bail!("{flag} {s}: unknown field {k:?}");
        }
        let target = match kind.as_deref() {
            Some("registry") => {
                let r = reference.ok_or_else(|| anyhow!("{flag} {s}: ref= is missing"))?;
                CacheTarget::Registry(Reference::parse(&r).map_err(|e| anyhow!("{flag} {s}: {e}"))?)
            }
            Some("local") => {
                CacheTarget::Local(dir.ok_or_else(|| anyhow!("{flag} {s}: {dir_key}= is missing"))?)
            }
            _ => bail!("{flag} {s}: type= is missing"),
        };
        Ok(CacheSpec { target, max })
    }

    fn describe(&self) -> String {
        match &self.target {
            CacheTarget::Registry(r) => r.familiar(),
            CacheTarget::Local(d) => d.display().to_string(),
        }
    }
}

/// The imported registry caches, asked in order.
struct RegistryCaches {
    store_caches: Vec<(String, strata_registry::cache::RemoteCache)>,
}

impl RegistryCaches {
    fn load(a: &BuildArgs, registries: &RegistryConfig) -> Result<Option<RegistryCaches>> {
        if a.cache_from.is_empty() || a.no_cache {
            return Ok(None);
        }
        let mut caches = Vec::new();
        for s in &a.cache_from {
            let spec = CacheSpec::parse("--cache-from", s)?;
            let cache = match &spec.target {
                CacheTarget::Registry(r) => {
                    strata_registry::cache::RemoteCache::load(registries.client(r.domain()), r)
                }
                CacheTarget::Local(dir) => strata_registry::cache::RemoteCache::load_layout(dir),
            }
            .with_context(|| format!("--cache-from {}", spec.describe()))?;
            tracing::info!("cache {}: {} steps", spec.describe(), cache.len());
            caches.push((spec.describe(), cache));
        }
        Ok(Some(RegistryCaches {
            store_caches: caches,
        }))
    }
}

impl strata_executor::RemoteCache for RegistryCaches {
    fn fetch(&self, store: &Store, key: &Digest) -> std::result::Result<Option<Digest>, String> {
        for (name, c) in &self.store_caches {
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
fn cache_entries(store: &Store, graph: &BuildGraph, max: bool) -> Result<Vec<(Digest, Digest)>> {
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

fn export_cache(
    store: &Store,
    graph: &BuildGraph,
    spec: &CacheSpec,
    registries: &RegistryConfig,
    quiet: bool,
) -> Result<()> {
    let entries = cache_entries(store, graph, spec.max)?;
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
    .with_context(|| format!("--cache-to {}", spec.describe()))?;
    if !quiet {
        eprintln!(
            "exported cache of {} steps to {}@{digest}",
            entries.len(),
            spec.describe()
        );
    }
    Ok(())
}

/// The context, with `<Dockerfile>.dockerignore` or `.dockerignore` applied.
fn load_context(a: &BuildArgs, src: &DockerfileSource) -> Result<Context> {
    if a.context == "-" {
        return Ok(Context::empty());
    }
    let root = Path::new(&a.context);
    let df_path = src.path.clone().unwrap_or_else(|| root.join("Dockerfile"));
    let patterns = match strata_parser::ignore::ignore_file_for(root, &df_path) {
        Some(p) => {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))?;
            strata_parser::ignore::read_ignore_file(&text)
        }
        None => Vec::new(),
    };
    let matcher =
        Matcher::new(&patterns).map_err(|(p, e)| anyhow!(".dockerignore: pattern {p:?}: {e}"))?;
    Ok(Context::load(root, &matcher)?)
}

fn step_error_render(src: &DockerfileSource, e: &BuildError) -> String {
    match e {
        BuildError::Step {
            line, col, message, ..
        } => {
            let pe = strata_parser::ParseError::new(
                &src.name,
                &src.text,
                strata_parser::Pos {
                    line: *line,
                    col: *col,
                },
                message.clone(),
            );
            pe.render()
        }
        other => other.to_string(),
    }
}

pub fn build(store: &Store, a: &BuildArgs, registries: &RegistryConfig) -> Result<()> {
    if a.check {
        return check(a);
    }
    if let Some(p) = &a.platform {
        let host = format!("linux/{}", strata_cache::transfer::host_arch());
        if p != &host {
            bail!("--platform {p}: only the host platform ({host}) can be built");
        }
    }
    let tags: Vec<Reference> = a
        .tags
        .iter()
        .map(|t| Reference::parse(t).map_err(|e| anyhow!("-t {t}: {e}")))
        .collect::<Result<_>>()?;
    let output = Output::parse(a.output.as_deref())?;
    let src = read_dockerfile(a)?;
    let args = build_args(a)?;
    let df = parse_dockerfile(&src.name, &src.text).map_err(|e| anyhow!("{e}"))?;
    let context = load_context(a, &src)?;
    let stat_path = StatCache::path_for(&store.buildcache_dir(), Path::new(&a.context));
    let mut stat = StatCache::load(&stat_path);
    let mut labels = BTreeMap::new();
    for l in &a.labels {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.to_string(), v.to_string());
    }
    // SOURCE_DATE_EPOCH from the environment or as a build argument (BuildKit accepts both).
    let epoch = match args
        .get("SOURCE_DATE_EPOCH")
        .cloned()
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
    {
        Some(v) => Some(
            v.trim()
                .parse::<i64>()
                .map_err(|_| anyhow!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))?,
        ),
        None => None,
    };
    let ulimits = a
        .ulimits
        .iter()
        .map(|u| strata_runtime::container::parse_ulimit(u).map_err(|e| anyhow!("{e}")))
        .collect::<Result<Vec<_>>>()?;
    let named = NamedContexts::parse(&a.build_contexts)?;
    let entitled = entitlements(a)?;
    let dir_roots = named
        .dirs
        .iter()
        .map(|(n, c)| (n.clone(), c.root.clone()))
        .collect();
    let opts = PlanOptions {
        source_date_epoch: epoch,
        build_args: args,
        target: a.target.clone(),
        network: a
            .network
            .clone()
            .map(|n| if n == "default" { "host".into() } else { n }),
        allow_insecure: entitled.0,
        allow_network_host: entitled.1,
        ulimits: a.ulimits.clone(),
        named_contexts: named.dirs,
    };
    let mut sources =
        StoreImages::new(store, &a.pull, registries, a.quiet || a.progress == "quiet");
    sources.aliases = named.images;
    sources.dir_roots = dir_roots;
    let graph = plan(
        &src.name, &src.text, &df, &opts, &context, &mut stat, &sources,
    )?;
    stat.save(&stat_path);
    if a.dry_run {
        return dry_run(store, &graph, &context);
    }
    let quiet = a.quiet || a.progress == "quiet";
    let mode = match a.progress.as_str() {
        _ if quiet => Mode::Quiet,
        "plain" => Mode::Plain,
        "tty" => Mode::Tty,
        _ if std::io::stderr().is_terminal() => Mode::Tty,
        _ => Mode::Plain,
    };
    let progress = Progress::with_mode(Box::new(std::io::stderr()), mode);
    let cache_to = a
        .cache_to
        .as_deref()
        .map(|s| CacheSpec::parse("--cache-to", s))
        .transpose()?;
    let remote = RegistryCaches::load(a, registries)?;
    let exec = Executor {
        remote_cache: remote
            .as_ref()
            .map(|r| r as &dyn strata_executor::RemoteCache),
        store,
        context: &context,
        graph: &graph,
        opts: ExecOptions {
            no_cache: a.no_cache,
            no_cache_stages: no_cache_stages(a, &graph)?,
            file: src.name.clone(),
            source_date_epoch: epoch,
            secrets: build_secrets(a)?,
            ulimits,
        },
        progress: &progress,
        exe: std::sync::OnceLock::new(),
    };
    let mut img = match exec.run() {
        Ok(img) => img,
        Err(e) => {
            eprintln!("{}", step_error_render(&src, &e));
            bail!("{}", e);
        }
    };
    if !labels.is_empty() {
        let mut cfg = img.config.clone();
        let mut c = cfg.container();
        c.labels.extend(labels);
        cfg.config = Some(c);
        img = store.put_image(
            &strata_image::spec::to_canonical_json(&cfg),
            Some(img.id()),
            Vec::new(),
        )?;
    }
    let v = progress.start(&format!("exporting to {}", output.kind()));
    v.log(&format!("writing image {} done", img.id()));
    match &output {
        Output::Image => {
            for t in &tags {
                store.tag(t, img.id())?;
                v.log(&format!("naming to {t} done"));
            }
        }
        other => other.write(store, &img, &tags)?,
    }
    v.done();
    if let Some(spec) = &cache_to {
        export_cache(store, &graph, spec, registries, quiet)?;
    }
    if let Some(p) = &a.iidfile {
        std::fs::write(p, img.id().to_string())
            .with_context(|| format!("write {}", p.display()))?;
    }
    if quiet {
        println!("{}", img.id());
    }
    Ok(())
}

/// `--dry-run`: stages, steps, keys, and whether each would be CACHED.
fn dry_run(store: &Store, graph: &BuildGraph, context: &Context) -> Result<()> {
    for &s in &graph.order {
        let st = &graph.stages[s];
        let base = match &st.base {
            Base::Scratch => "scratch".to_string(),
            Base::Image { name, id } => format!("{name} ({})", id.short()),
            Base::Stage(i) => format!("stage {}", graph.stages[*i].display_name()),
        };
        println!("stage {} [{}] FROM {base}", st.index, st.display_name());
        let mut parent_missed = false;
        let recorded_with = st.recorded_with();
        for (i, step) in st.steps.iter().enumerate() {
            // A metadata step is recorded with the next step that records (its result).
            let hit = store.cache_get(&st.steps[recorded_with[i]].key)?.is_some();
            // COPY --link: its layer alone may be known, and is then only rebased.
            let link_hit = !hit
                && match &step.link_key {
                    Some(k) => store.cache_get(k)?.is_some(),
                    None => false,
                };
            let status = if hit || link_hit { "CACHED" } else { "run" };
            let reason = if hit {
                String::new()
            } else if link_hit {
                "  (its --link layer is reused on the new parent)".to_string()
            } else if parent_missed {
                "  (an earlier step runs)".to_string()
            } else {
                format!("  ({})", explain_miss(store, graph, context, step))
            };
            println!(
                "  {:>2} {} {:<6} {}{reason}",
                i + 1,
                &step.key.hex()[..16],
                status,
                step.original.trim()
            );
            parent_missed |= !hit;
        }
    }
    for (i, st) in graph.stages.iter().enumerate() {
        if !graph.order.contains(&i) {
            println!(
                "stage {} [{}] skipped: the target does not need it",
                st.index,
                st.display_name()
            );
        }
    }
    Ok(())
}

/// Why a step has no cache result: compares its inputs with those of the last build that ran
/// a step at the same place.
fn explain_miss(
    store: &Store,
    graph: &BuildGraph,
    context: &Context,
    step: &strata_planner::model::Step,
) -> String {
    let Some(prev) = strata_executor::last_inputs(store, step) else {
        return "no earlier build of this step".into();
    };
    let changed = step.inputs.changed_fields(&prev);
    let Some(first) = changed.first() else {
        return "inputs changed".into();
    };
    match (first.as_str(), &step.inputs.op, &prev.op) {
        ("env", KeyOp::Run(now), KeyOp::Run(then)) => {
            let names: Vec<&str> = now
                .env
                .iter()
                .filter(|x| !then.env.contains(x))
                .map(|x| x.split('=').next().unwrap_or(""))
                .collect();
            format!("env/arg changed: {}", names.join(", "))
        }
        ("content", ..) => changed_sources(store, graph, context, step),
        ("parent", ..) => "the base image or an earlier step changed".into(),
        (field, ..) => format!("{field} changed"),
    }
}

/// Which source files of a COPY changed since the last build at its place.
fn changed_sources(
    store: &Store,
    graph: &BuildGraph,
    context: &Context,
    step: &strata_planner::model::Step,
) -> String {
    match (&step.op, strata_executor::last_rows(store, step)) {
        (StepOp::Copy(op), Some(before)) => {
            let ctx = graph.context_for(context, &op.from);
            let mut now = std::collections::HashSet::new();
            let mut changed = Vec::new();
            for (i, rel, kind, mode, content) in source_rows(ctx, &op.selected) {
                now.insert(rel);
                let same = before.get(rel).is_some_and(|b| {
                    (b.0, b.2.as_str(), b.3, b.4.as_deref()) == (i, kind, mode, content)
                });
                if !same {
                    changed.push(rel.to_string());
                }
            }
            let mut removed: Vec<&String> = before
                .keys()
                .filter(|k| !now.contains(k.as_str()))
                .collect();
            removed.sort();
            changed.extend(removed.into_iter().map(|p| format!("{p} (removed)")));
            format!("source files changed: {}", changed.join(", "))
        }
        _ => "source files changed".into(),
    }
}

/// Where a build's result goes (`-o`).
enum Output {
    Image,
    Archive {
        dest: String,
        oci: bool,
        compression: Compression,
    },
    Tar {
        dest: String,
    },
    Local {
        dest: PathBuf,
    },
}

impl Output {
    fn parse(s: Option<&str>) -> Result<Output> {
        let Some(s) = s else { return Ok(Output::Image) };
        if s == "-" {
            return Ok(Output::Tar { dest: "-".into() });
        }
        if !s.contains('=') {
            return Ok(Output::Local {
                dest: PathBuf::from(s),
            });
        }
        let mut kv = BTreeMap::new();
        for part in s.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| anyhow!("-o {s}: {part:?} is not key=value"))?;
            kv.insert(k.trim().to_string(), v.trim().to_string());
        }
        let dest = || {
            kv.get("dest")
                .cloned()
                .ok_or_else(|| anyhow!("-o {s}: dest= is required"))
        };
        let out = match kv.get("type").map(String::as_str).unwrap_or("local") {
            "image" => Output::Image,
            t @ ("oci" | "docker") => Output::Archive {
                dest: dest()?,
                oci: t == "oci",
                compression: match kv.get("compression").map(String::as_str) {
                    None | Some("uncompressed") => Compression::None,
                    Some("gzip") => Compression::Gzip,
                    Some("zstd") => Compression::Zstd,
                    Some(o) => {
                        bail!("-o {s}: unknown compression {o:?} (use gzip, zstd or uncompressed)")
                    }
                },
            },
            "tar" => Output::Tar { dest: dest()? },
            "local" => Output::Local {
                dest: PathBuf::from(dest()?),
            },
            other => bail!(
                "-o {s}: unknown output type {other:?} (use image, oci, docker, tar or local)"
            ),
        };
        for k in kv.keys() {
            if !["type", "dest", "compression", "name"].contains(&k.as_str()) {
                bail!("-o {s}: unknown key {k:?}");
            }
        }
        Ok(out)
    }

    fn kind(&self) -> &'static str {
        match self {
            Output::Image => "image",
            Output::Archive { oci: true, .. } => "oci image format",
            Output::Archive { .. } => "docker image format",
            Output::Tar { .. } => "client tarball",
            Output::Local { .. } => "client directory",
        }
    }

    fn write(&self, store: &Store, img: &strata_cache::Image, tags: &[Reference]) -> Result<()> {
        let sink = |dest: &str| -> Result<Box<dyn Write>> {
            if dest == "-" {
                if std::io::stdout().is_terminal() {
                    bail!("refusing to write an archive to a terminal: redirect standard output or use dest=FILE");
                }
                Ok(Box::new(std::io::BufWriter::new(std::io::stdout())))
            } else {
                let f = std::fs::File::create(dest).with_context(|| format!("create {dest}"))?;
                Ok(Box::new(std::io::BufWriter::with_capacity(1 << 20, f)))
            }
        };
        let layers: Vec<PathBuf> = img
            .record
            .layers
            .iter()
            .rev()
            .map(|l| store.layer_diff(l))
            .collect();
        let dirs: Vec<&Path> = layers.iter().map(PathBuf::as_path).collect();
        match self {
            Output::Image => {}
            Output::Archive {
                dest, compression, ..
            } => {
                let mut w =
                    store.save_with(&[(img.clone(), tags.to_vec())], sink(dest)?, *compression)?;
                w.flush()?;
            }
            Output::Tar { dest } => {
                let mut w = strata_image::layer::write_flattened_tar(
                    &dirs,
                    sink(dest)?,
                    &TarOptions::default(),
                )?;
                w.flush()?;
            }
            Output::Local { dest } => {
                std::fs::create_dir_all(dest)
                    .with_context(|| format!("create {}", dest.display()))?;
                let (r, w) = std::io::pipe()?;
                let dirs_owned = layers.clone();
                let producer = std::thread::spawn(move || {
                    let d: Vec<&Path> = dirs_owned.iter().map(PathBuf::as_path).collect();
                    strata_image::layer::write_flattened_tar(
                        &d,
                        std::io::BufWriter::new(w),
                        &TarOptions::default(),
                    )
                    .map(|_| ())
                });
                strata_image::layer::extract_layer(
                    r,
                    dest,
                    &strata_image::layer::ExtractOptions::default(),
                )?;
                producer
                    .join()
                    .map_err(|_| anyhow!("tar writer panicked"))??;
            }
        }
        Ok(())
    }
}
