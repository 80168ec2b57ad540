//! `pull`, `push`, `login`, `logout`, and the per-layer progress they draw.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Read, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use strata_cache::Store;
use strata_image::compress::Compression;
use strata_image::spec::Platform;
use strata_image::{Digest, Reference};
use strata_registry::auth::{self, Credentials};
use strata_registry::push::{Format, PushOptions};
use strata_registry::{pull, push, LayerEvent, Progress};

use crate::cli::{LoginArgs, PullArgs, PushArgs};

pub use strata_registry::config::RegistryConfig;

fn parse_reference(s: &str) -> Result<Reference> {
    Reference::parse(s).map_err(|e| anyhow!("{e}"))
}

/// The platform to pull: `--platform`, else the host's.
pub fn wanted_platform(flag: Option<&str>) -> Result<Platform> {
    match flag {
        Some(p) => super::images::platform_flag(p),
        None => Ok(strata_cache::transfer::host_platform()),
    }
}

/// Pulls `reference`, drawing progress on stderr (or stdout, like Docker, when not quiet).
pub fn pull_image(
    store: &Store,
    cfg: &RegistryConfig,
    reference: &Reference,
    platform: &Platform,
    quiet: bool,
) -> Result<strata_registry::pull::Pulled> {
    let client = cfg.client(reference.domain());
    let progress = LayerProgress::new(quiet, false);
    if !quiet {
        let what = reference
            .tag()
            .map(str::to_string)
            .or_else(|| reference.digest().map(|d| d.to_string()))
            .unwrap_or_default();
        progress.line(&format!(
            "{what}: Pulling from {}",
            reference.familiar_repository()
        ));
    }
    let pulled = pull::pull(store, &client, reference, platform, &progress)
        .with_context(|| format!("pull {}", reference.familiar()))?;
    progress.finish();
    Ok(pulled)
}

/// Pulls several platforms of the index `reference` names (all when `platforms` is None).
fn pull_platforms(
    store: &Store,
    cfg: &RegistryConfig,
    reference: &Reference,
    platforms: Option<&[Platform]>,
    quiet: bool,
) -> Result<strata_registry::pull::PulledPlatforms> {
    let client = cfg.client(reference.domain());
    let progress = LayerProgress::new(quiet, false);
    let pulled = pull::pull_platforms(store, &client, reference, platforms, &progress)
        .with_context(|| format!("pull {}", reference.familiar()))?;
    progress.finish();
    Ok(pulled)
}

pub fn pull_cmd(store: &Store, cfg: &RegistryConfig, a: &PullArgs) -> Result<()> {
    let reference = parse_reference(&a.image)?;
    let several = a.all_platforms || a.platform.as_deref().is_some_and(|p| p.contains(','));
    let (digest, downloaded) = if several {
        let platforms: Option<Vec<Platform>> = a
            .platform
            .as_deref()
            .filter(|_| !a.all_platforms)
            .map(|list| {
                list.split(',')
                    .map(|p| wanted_platform(Some(p.trim())))
                    .collect()
            })
            .transpose()?;
        let pulled = pull_platforms(store, cfg, &reference, platforms.as_deref(), a.quiet)?;
        (pulled.digest, pulled.downloaded)
    } else {
        let platform = wanted_platform(a.platform.as_deref())?;
        let pulled = pull_image(store, cfg, &reference, &platform, a.quiet)?;
        (pulled.digest, pulled.downloaded)
    };
    super::image_event(
        store,
        "pull",
        &reference.to_string(),
        &reference.repository(),
    );
    if !a.quiet {
        println!("Digest: {digest}");
        let status = if downloaded {
            "Downloaded newer image for"
        } else {
            "Image is up to date for"
        };
        println!("Status: {status} {}", reference.familiar());
    }
    println!("{reference}");
    Ok(())
}

pub fn push_cmd(store: &Store, cfg: &RegistryConfig, a: &PushArgs) -> Result<()> {
    let target_name = a.destination.as_deref().unwrap_or(&a.image);
    let target = parse_reference(target_name)?;
    let compression = match a.compression.as_str() {
        "zstd" => Compression::Zstd,
        "none" => Compression::None,
        _ => Compression::Gzip,
    };
    let format = a
        .format
        .as_deref()
        .map(Format::parse)
        .transpose()
        .map_err(|e| anyhow!("--format: {e}"))?;
    let opts = PushOptions {
        compression,
        format,
    };
    let (digest, size) = push_image(store, cfg, &a.image, &target, opts, a.quiet)?;
    if a.quiet {
        println!("{digest}");
    } else {
        println!(
            "{}: digest: {digest} size: {size}",
            target.tag().unwrap_or("latest")
        );
    }
    Ok(())
}

/// Pushes the image (or multi-platform tag, as an index) `name` names to `target`, drawing
/// progress unless `quiet`; the pushed manifest's (or index's) digest and size.
pub fn push_image(
    store: &Store,
    cfg: &RegistryConfig,
    name: &str,
    target: &Reference,
    opts: PushOptions,
    quiet: bool,
) -> Result<(strata_image::Digest, u64)> {
    let platforms = store.platforms_of(name)?;
    let id = store.resolve_image(name)?;
    let image = store.image(&id)?;
    if target.digest().is_some() {
        bail!(
            "push {}: cannot push to a digest reference; name a tag",
            target.familiar()
        );
    }
    let client = cfg.client(target.domain());
    let progress = LayerProgress::new(quiet, true);
    if !quiet {
        progress.line(&format!(
            "The push refers to repository [{}]",
            target.repository()
        ));
    }
    let pushed = match platforms {
        // A multi-platform tag goes up as an index of its images' manifests.
        Some(members) => {
            let mut images = Vec::new();
            for (platform, id) in members {
                let p = Platform::parse(&platform).map_err(|e| anyhow!(e))?;
                images.push((p, store.image(&id)?));
            }
            push::push_index(store, &client, &images, target, opts, &progress)
        }
        None => push::push(store, &client, &image, target, opts, &progress),
    };
    let pushed = pushed.with_context(|| format!("push {}", target.familiar()))?;
    progress.finish();
    super::image_event(store, "push", &target.to_string(), &target.repository());
    Ok(pushed)
}

pub fn login(cfg: &RegistryConfig, a: &LoginArgs) -> Result<()> {
    let registry = a.registry.as_deref().unwrap_or("docker.io");
    let registry = registry
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let username = match &a.username {
        Some(u) => u.clone(),
        None => bail!("login {registry}: a username is needed (-u USER)"),
    };
    let password = if a.password_stdin {
        if a.password.is_some() {
            bail!("--password and --password-stdin are mutually exclusive");
        }
        let mut s = String::new();
        io::stdin()
            .read_to_string(&mut s)
            .context("reading the password from stdin")?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else {
        match &a.password {
            Some(p) => {
                eprintln!(
                    "WARNING! Using --password via the CLI is insecure. Use --password-stdin."
                );
                p.clone()
            }
            None => bail!("login {registry}: a password is needed (--password-stdin)"),
        }
    };
    if password.is_empty() {
        bail!("login {registry}: the password is empty");
    }
    let creds = Credentials { username, password };
    cfg.client(registry)
        .with_credentials(creds.clone())
        .ping()
        .with_context(|| format!("login {registry}"))?;
    let path = auth::store(registry, &creds)?;
    eprintln!("credentials saved in {}", path.display());
    println!("Login Succeeded");
    Ok(())
}

pub fn logout(registry: Option<&str>) -> Result<()> {
    let registry = registry.unwrap_or("docker.io");
    if auth::remove(registry)? {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(())
}

/// Docker-style per-layer lines. On a terminal they are redrawn in place with byte counts
/// (at most ten times a second); otherwise each state change is one line.
pub struct LayerProgress {
    quiet: bool,
    tty: bool,
    pushing: bool,
    state: Mutex<ProgressState>,
}

struct ProgressState {
    order: Vec<Digest>,
    status: BTreeMap<Digest, String>,
    drawn: usize,
    last_draw: Option<Instant>,
}

impl LayerProgress {
    pub fn new(quiet: bool, pushing: bool) -> Self {
        LayerProgress {
            quiet,
            tty: io::stdout().is_terminal(),
            pushing,
            state: Mutex::new(ProgressState {
                order: Vec::new(),
                status: BTreeMap::new(),
                drawn: 0,
                last_draw: None,
            }),
        }
    }

    pub fn line(&self, s: &str) {
        if !self.quiet {
            println!("{s}");
        }
    }

    fn text(&self, event: LayerEvent) -> Option<String> {
        let pushing = self.pushing;
        Some(match event {
            LayerEvent::Waiting { .. } if pushing => "Preparing".into(),
            LayerEvent::Waiting { .. } => "Pulling fs layer".into(),
            LayerEvent::Exists if pushing => "Layer already exists".into(),
            LayerEvent::Exists => "Already exists".into(),
            LayerEvent::Transferring { done, total } => {
                if !self.tty {
                    return None;
                }
                let verb = if pushing { "Pushing" } else { "Downloading" };
                format!("{verb} {}/{}", human(done), human(total))
            }
            LayerEvent::Mounted { from } => format!("Mounted from {from}"),
            LayerEvent::Complete if pushing => "Pushed".into(),
            LayerEvent::Complete => "Pull complete".into(),
        })
    }

    fn redraw(&self, st: &mut ProgressState, force: bool) {
        let now = Instant::now();
        if !force
            && st
                .last_draw
                .is_some_and(|t| now.duration_since(t) < Duration::from_millis(100))
        {
            return;
        }
        st.last_draw = Some(now);
        let mut out = io::stdout().lock();
        if st.drawn > 0 {
            let _ = write!(out, "\x1b[{}A", st.drawn);
        }
        for d in &st.order {
            let _ = writeln!(out, "\x1b[2K{}: {}", short(d), st.status[d]);
        }
        st.drawn = st.order.len();
        let _ = out.flush();
    }

    pub fn finish(&self) {
        if self.quiet || !self.tty {
            return;
        }
        let mut st = self.state.lock().expect("progress");
        self.redraw(&mut st, true);
    }
}

impl Progress for LayerProgress {
    fn layer(&self, digest: &Digest, event: LayerEvent) {
        if self.quiet {
            return;
        }
        let transferring = matches!(event, LayerEvent::Transferring { .. });
        let Some(text) = self.text(event) else {
            return;
        };
        let mut st = self.state.lock().expect("progress");
        if !st.status.contains_key(digest) {
            st.order.push(digest.clone());
        }
        let changed = st.status.insert(digest.clone(), text.clone()).as_deref() != Some(&text);
        if self.tty {
            let force = !transferring;
            self.redraw(&mut st, force);
        } else if changed {
            println!("{}: {text}", short(digest));
        }
    }
}

fn short(d: &Digest) -> &str {
    &d.hex()[..12]
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2}GB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1}MB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1}kB", n as f64 / 1024.0),
        n => format!("{n}B"),
    }
}
