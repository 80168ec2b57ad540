//! `strata build`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use strata_image::compress::Compression;
use strata_image::layer::TarOptions;
use strata_image::spec::Platform;

use crate::commands::registry::RegistryConfig;
use anyhow::{anyhow, bail, Context as _, Result};
use strata_cache::transfer::SaveItem;
use strata_cache::Store;
use strata_executor::explain::explain_miss;
use strata_executor::progress::{Mode, Progress};
use strata_executor::remote_cache::{export_cache, CacheSpec, ImportedCaches};
use strata_executor::sources::{PullPolicy, StoreImages};
use strata_executor::{BuildError, ExecOptions, Executor, SharedWork};
use strata_image::reference::Reference;
use strata_parser::ignore::Matcher;
use strata_parser::parse_dockerfile;
use strata_planner::context::{Context, StatCache};
use strata_planner::model::{Base, BuildGraph};
use strata_planner::plan::{plan, PlanOptions};

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

/// `--cache-from` (none with `--no-cache`).
fn imported_caches(a: &BuildArgs, registries: &RegistryConfig) -> Result<Option<ImportedCaches>> {
    if a.cache_from.is_empty() || a.no_cache {
        return Ok(None);
    }
    let specs = a
        .cache_from
        .iter()
        .map(|s| CacheSpec::parse("--cache-from", s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!(e))?;
    Ok(Some(ImportedCaches::load(&specs, registries)?))
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

/// `--platform`: the platforms to build (empty: the host's), each one this host can run.
fn build_platforms(flag: Option<&str>) -> Result<Vec<Platform>> {
    let Some(text) = flag else {
        return Ok(Vec::new());
    };
    let mut out: Vec<Platform> = Vec::new();
    for one in text.split(',').map(str::trim) {
        let p = super::images::platform_flag(one)?;
        strata_runtime::emulation::check_runnable(&p)
            .map_err(|e| anyhow!("--platform {p}: {e}"))?;
        if out.contains(&p) {
            bail!("--platform {text}: {p} is named twice");
        }
        out.push(p);
    }
    Ok(out)
}

pub fn build(store: &Store, a: &BuildArgs, registries: &RegistryConfig) -> Result<()> {
    if a.check {
        return check(a);
    }
    let platforms = build_platforms(a.platform.as_deref())?;
    let tags: Vec<Reference> = a
        .tags
        .iter()
        .map(|t| Reference::parse(t).map_err(|e| anyhow!("-t {t}: {e}")))
        .collect::<Result<_>>()?;
    let output = Output::parse(a.output.as_deref())?;
    let mut tags = tags;
    let push = match &output {
        Output::Image { name, push } => {
            tags.extend(name.iter().cloned());
            *push || a.push
        }
        _ if a.push => bail!("--push: -o writes the image elsewhere; push is for the store's"),
        _ => false,
    };
    if push && tags.is_empty() {
        bail!("--push: name the image with -t REGISTRY/NAME[:TAG]");
    }
    if platforms.len() > 1 && matches!(output, Output::Tar { .. }) {
        bail!("-o type=tar: a tarball holds one platform's files; use type=local (a directory per platform) or type=oci");
    }
    let cache_to = a
        .cache_to
        .as_deref()
        .map(|s| CacheSpec::parse("--cache-to", s))
        .transpose()
        .map_err(|e| anyhow!(e))?;
    let quiet = a.quiet || a.progress == "quiet";
    let progress = Progress::with_mode(Box::new(std::io::stderr()), progress_mode(a, quiet));
    let src = read_dockerfile(a)?;
    let context = load_context(a, &src)?;
    let args = build_args(a)?;
    let epoch = source_date_epoch(&args)?;
    // Every platform is planned before any runs: a base one of them lacks is found at once.
    // The sources hold ADD's downloads, which the builds read: they live until the end.
    let mut plans = Vec::new();
    for platform in targets(platforms) {
        let (graph, sources) = plan_build(
            store,
            a,
            registries,
            &src,
            &context,
            (args.clone(), platform.clone()),
            epoch,
        )?;
        plans.push((platform, graph, sources));
    }
    if a.dry_run {
        for (platform, graph, _) in &plans {
            if let (Some(p), true) = (platform, plans.len() > 1) {
                println!("platform {p}");
            }
            dry_run(store, graph, &context)?;
        }
        return Ok(());
    }
    let remote = imported_caches(a, registries)?;
    let graphs: Vec<(Option<Platform>, &BuildGraph)> =
        plans.iter().map(|(p, g, _)| (p.clone(), g)).collect();
    let shared = SharedWork::new(&graphs.iter().map(|(_, g)| *g).collect::<Vec<_>>());
    let run = Run {
        store,
        a,
        src: &src,
        context: &context,
        epoch,
        remote: remote
            .as_ref()
            .map(|r| r as &dyn strata_executor::RemoteCache),
        progress: &progress,
        shared: &shared,
    };
    let built = run.all(&graphs)?;
    let id = match built.as_slice() {
        [(_, img)] => {
            export(store, &output, &progress, img, &tags)?;
            img.id().clone()
        }
        several => {
            let members: Vec<(Platform, strata_cache::Image)> = several
                .iter()
                .map(|(p, img)| (p.clone().unwrap_or_else(Platform::host), img.clone()))
                .collect();
            export_platforms(store, &output, &progress, &members, &tags)?
        }
    };
    if let Some(spec) = &cache_to {
        let graphs: Vec<&BuildGraph> = graphs.iter().map(|(_, g)| *g).collect();
        let (steps, digest) = export_cache(store, &graphs, spec, registries)?;
        if !quiet {
            eprintln!(
                "exported cache of {steps} steps to {}@{digest}",
                spec.describe()
            );
        }
    }
    if push {
        push_tags(store, registries, &progress, &tags)?;
    }
    report_id(a, &id, quiet)
}

/// `--push`: each tag goes to its registry (a several-platform image as an index).
fn push_tags(
    store: &Store,
    registries: &RegistryConfig,
    progress: &Progress,
    tags: &[Reference],
) -> Result<()> {
    for t in tags {
        let v = progress.start(&format!("pushing {t}"));
        let pushed = super::registry::push_image(
            store,
            registries,
            &t.to_string(),
            t,
            strata_registry::push::PushOptions::default(),
            true,
        );
        match pushed {
            Ok((digest, _)) => {
                v.log(&format!("pushed {digest}"));
                v.done();
            }
            Err(e) => {
                v.error(&e.to_string());
                return Err(e);
            }
        }
    }
    Ok(())
}

/// `--iidfile` and `-q`: the image's ID (an index's digest for several platforms).
fn report_id(a: &BuildArgs, id: &strata_image::Digest, quiet: bool) -> Result<()> {
    if let Some(p) = &a.iidfile {
        std::fs::write(p, id.to_string()).with_context(|| format!("write {}", p.display()))?;
    }
    if quiet {
        println!("{id}");
    }
    Ok(())
}

/// What each build is for: the platforms asked for, or the host's (None) when none was.
fn targets(platforms: Vec<Platform>) -> Vec<Option<Platform>> {
    if platforms.is_empty() {
        vec![None]
    } else {
        platforms.into_iter().map(Some).collect()
    }
}

/// Writes a built image where `-o` says (the store: under its tags).
fn export(
    store: &Store,
    output: &Output,
    progress: &Progress,
    img: &strata_cache::Image,
    tags: &[Reference],
) -> Result<()> {
    let v = progress.start(&format!("exporting to {}", output.kind()));
    v.log(&format!("writing image {} done", img.id()));
    match output {
        Output::Image { .. } => {
            for t in tags {
                store.tag(t, img.id())?;
                v.log(&format!("naming to {t} done"));
            }
        }
        other => other.write(store, &[(None, img.clone())], tags)?,
    }
    v.done();
    let name = tags
        .first()
        .map(|t| t.to_string())
        .unwrap_or(img.id().to_string());
    super::image_event(store, "build", &img.id().to_string(), &name);
    Ok(())
}

/// Writes the images of a several-platform build as one multi-platform image: in the store,
/// every tag names them all; an archive holds their index; a directory holds one
/// subdirectory per platform. The index's digest (what `--iidfile` and `-q` report).
fn export_platforms(
    store: &Store,
    output: &Output,
    progress: &Progress,
    members: &[(Platform, strata_cache::Image)],
    tags: &[Reference],
) -> Result<strata_image::Digest> {
    let v = progress.start(&format!("exporting to {}", output.kind()));
    for (p, img) in members {
        v.log(&format!("writing image {} for {p} done", img.id()));
    }
    let index = store.platform_index(members, output.compression())?;
    v.log(&format!("writing image index {} done", index.digest));
    match output {
        Output::Image { .. } => {
            let ids: BTreeMap<String, strata_image::Digest> = members
                .iter()
                .map(|(p, img)| (p.to_string(), img.id().clone()))
                .collect();
            for t in tags {
                store.tag_platforms(t, ids.clone())?;
                v.log(&format!("naming to {t} done"));
            }
        }
        other => {
            let listed: Vec<(Option<Platform>, strata_cache::Image)> = members
                .iter()
                .map(|(p, img)| (Some(p.clone()), img.clone()))
                .collect();
            other.write(store, &listed, tags)?
        }
    }
    v.done();
    let name = tags
        .first()
        .map(|t| t.to_string())
        .unwrap_or(index.digest.to_string());
    for (_, img) in members {
        super::image_event(store, "build", &img.id().to_string(), &name);
    }
    Ok(index.digest)
}

/// What every platform's build of one `build` shares.
struct Run<'a> {
    store: &'a Store,
    a: &'a BuildArgs,
    src: &'a DockerfileSource,
    context: &'a Context,
    epoch: Option<i64>,
    remote: Option<&'a dyn strata_executor::RemoteCache>,
    progress: &'a Progress,
    shared: &'a SharedWork,
}

impl Run<'_> {
    /// Runs every platform's plan at once (their RUN steps mostly wait on containers, and
    /// emulated ones on one core each; stages they share run once): each one's image, in
    /// order, or the first failure once all have ended.
    fn all(
        &self,
        graphs: &[(Option<Platform>, &BuildGraph)],
    ) -> Result<Vec<(Option<Platform>, strata_cache::Image)>> {
        let several = graphs.len() > 1;
        if let [(platform, graph)] = graphs {
            // One plan runs on this thread: a thread more costs a warm build 0.3-0.6 ms
            // (its allocator heap's mappings, measured).
            return Ok(vec![(platform.clone(), self.execute(graph, None)?)]);
        }
        let results: Vec<Result<strata_cache::Image>> = std::thread::scope(|scope| {
            let handles: Vec<_> = graphs
                .iter()
                .map(|(platform, graph)| {
                    let label = platform.as_ref().filter(|_| several).map(|p| p.to_string());
                    scope.spawn(move || self.execute(graph, label))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("a platform's build panicked")))
                })
                .collect()
        });
        graphs
            .iter()
            .zip(results)
            .map(|((p, _), r)| Ok((p.clone(), r?)))
            .collect()
    }

    /// Runs one platform's plan: its image, with the `--label`s.
    fn execute(
        &self,
        graph: &BuildGraph,
        platform_label: Option<String>,
    ) -> Result<strata_cache::Image> {
        let a = self.a;
        let exec = Executor {
            remote_cache: self.remote,
            store: self.store,
            context: self.context,
            graph,
            opts: ExecOptions {
                no_cache: a.no_cache,
                no_cache_stages: no_cache_stages(a, graph)?,
                file: self.src.name.clone(),
                source_date_epoch: self.epoch,
                secrets: build_secrets(a)?,
                ulimits: a
                    .ulimits
                    .iter()
                    .map(|u| strata_runtime::container::parse_ulimit(u).map_err(|e| anyhow!("{e}")))
                    .collect::<Result<Vec<_>>>()?,
                isolation: strata_runtime::chroot::Isolation::choose(a.isolation.as_deref())
                    .map_err(|e| anyhow!("--isolation: {e}"))?
                    .0,
                platform_label,
            },
            progress: self.progress,
            shared: Some(self.shared),
            exe: std::sync::OnceLock::new(),
        };
        let img = match exec.run() {
            Ok(img) => img,
            Err(e) => {
                eprintln!("{}", step_error_render(self.src, &e));
                bail!("{}", e);
            }
        };
        with_labels(self.store, img, &a.labels)
    }
}

/// `SOURCE_DATE_EPOCH` from the build arguments or the environment (BuildKit takes both).
fn source_date_epoch(args: &BTreeMap<String, String>) -> Result<Option<i64>> {
    let Some(v) = args
        .get("SOURCE_DATE_EPOCH")
        .cloned()
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
    else {
        return Ok(None);
    };
    v.trim()
        .parse::<i64>()
        .map(Some)
        .map_err(|_| anyhow!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))
}

/// Parses the Dockerfile and plans the build (pulling base images as `--pull` says); the
/// context's stat cache is saved for the next build. Returns the plan and its sources, which
/// keep what ADD downloaded for as long as they live.
fn plan_build<'a>(
    store: &'a Store,
    a: &BuildArgs,
    registries: &'a RegistryConfig,
    src: &DockerfileSource,
    context: &Context,
    (args, platform): (BTreeMap<String, String>, Option<Platform>),
    epoch: Option<i64>,
) -> Result<(BuildGraph, StoreImages<'a>)> {
    let df = parse_dockerfile(&src.name, &src.text).map_err(|e| anyhow!("{e}"))?;
    let stat_path = StatCache::path_for(&store.buildcache_dir(), Path::new(&a.context));
    let mut stat = StatCache::load(&stat_path);
    let named = NamedContexts::parse(&a.build_contexts)?;
    let entitled = entitlements(a)?;
    let pull: PullPolicy = a.pull.parse().map_err(|e: String| anyhow!(e))?;
    let mut sources = StoreImages::new(store, pull, registries, a.quiet || a.progress == "quiet");
    sources.aliases = named.images;
    sources.dir_roots = named
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
        platform,
    };
    let graph = plan(
        &src.name, &src.text, &df, &opts, context, &mut stat, &sources,
    )?;
    stat.save(&stat_path);
    Ok((graph, sources))
}

/// `--progress`: plain, tty, quiet, or auto (tty when stderr is a terminal).
fn progress_mode(a: &BuildArgs, quiet: bool) -> Mode {
    match a.progress.as_str() {
        _ if quiet => Mode::Quiet,
        "plain" => Mode::Plain,
        "tty" => Mode::Tty,
        _ if std::io::stderr().is_terminal() => Mode::Tty,
        _ => Mode::Plain,
    }
}

/// `--label`s on the built image: one more image, whose config has them (its layers are the
/// built image's).
fn with_labels(
    store: &Store,
    img: strata_cache::Image,
    labels: &[String],
) -> Result<strata_cache::Image> {
    if labels.is_empty() {
        return Ok(img);
    }
    let mut cfg = img.config.clone();
    let mut c = cfg.container();
    c.labels.extend(super::key_values(labels));
    cfg.config = Some(c);
    Ok(store.put_image(
        &strata_image::spec::to_canonical_json(&cfg),
        Some(img.id()),
        Vec::new(),
    )?)
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

/// Where a build's result goes (`-o`).
enum Output {
    /// The store, under the `-t` names and `name=`; pushed to their registries with `push`.
    Image {
        name: Option<Reference>,
        push: bool,
    },
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
        let Some(s) = s else {
            return Ok(Output::Image {
                name: None,
                push: false,
            });
        };
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
            t @ ("image" | "registry") => Output::Image {
                name: kv
                    .get("name")
                    .map(|n| Reference::parse(n).map_err(|e| anyhow!("-o {s}: name={n}: {e}")))
                    .transpose()?,
                push: t == "registry"
                    || match kv.get("push").map(String::as_str) {
                        None | Some("false") => false,
                        Some("true") => true,
                        Some(o) => bail!("-o {s}: push={o:?} is not true or false"),
                    },
            },
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
            if !["type", "dest", "compression", "name", "push"].contains(&k.as_str()) {
                bail!("-o {s}: unknown key {k:?}");
            }
        }
        Ok(out)
    }

    /// How the layers of what it writes are compressed (archives only compress).
    fn compression(&self) -> Compression {
        match self {
            Output::Archive { compression, .. } => *compression,
            _ => Compression::None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Output::Image { .. } => "image",
            Output::Archive { oci: true, .. } => "oci image format",
            Output::Archive { .. } => "docker image format",
            Output::Tar { .. } => "client tarball",
            Output::Local { .. } => "client directory",
        }
    }

    /// Writes the image (or one per platform) to the archive or directory `-o` names.
    fn write(
        &self,
        store: &Store,
        images: &[(Option<Platform>, strata_cache::Image)],
        tags: &[Reference],
    ) -> Result<()> {
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
        let layer_dirs = |img: &strata_cache::Image| -> Vec<PathBuf> {
            img.record
                .layers
                .iter()
                .rev()
                .map(|l| store.layer_diff(l))
                .collect()
        };
        match (self, images) {
            (Output::Image { .. }, _) => {}
            (
                Output::Archive {
                    dest, compression, ..
                },
                _,
            ) => {
                let item = match images {
                    [(None, img)] => SaveItem::Image(Box::new(img.clone())),
                    several => SaveItem::Platforms(
                        several
                            .iter()
                            .map(|(p, img)| (p.clone().unwrap_or_else(Platform::host), img.clone()))
                            .collect(),
                    ),
                };
                let mut w = store.save_with(&[(item, tags.to_vec())], sink(dest)?, *compression)?;
                w.flush()?;
            }
            (Output::Tar { dest }, [(_, img)]) => {
                let layers = layer_dirs(img);
                let dirs: Vec<&Path> = layers.iter().map(PathBuf::as_path).collect();
                let mut w = strata_image::layer::write_flattened_tar(
                    &dirs,
                    sink(dest)?,
                    &TarOptions::default(),
                )?;
                w.flush()?;
            }
            (Output::Tar { .. }, _) => bail!("-o type=tar holds one platform's files"),
            (Output::Local { dest }, [(_, img)]) => write_local(dest, layer_dirs(img))?,
            // BuildKit's layout for several platforms: a directory each, `linux_arm64`.
            (Output::Local { dest }, several) => {
                for (p, img) in several {
                    let p = p.clone().unwrap_or_else(Platform::host);
                    write_local(&dest.join(p.to_string().replace('/', "_")), layer_dirs(img))?;
                }
            }
        }
        Ok(())
    }
}

/// `-o type=local`: the image's files (its layers, upper first, flattened) in `dest`.
fn write_local(dest: &Path, layers: Vec<PathBuf>) -> Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("create {}", dest.display()))?;
    let (r, w) = std::io::pipe()?;
    let producer = std::thread::spawn(move || {
        let d: Vec<&Path> = layers.iter().map(PathBuf::as_path).collect();
        strata_image::layer::write_flattened_tar(
            &d,
            std::io::BufWriter::new(w),
            &TarOptions::default(),
        )
        .map(|_| ())
    });
    strata_image::layer::extract_layer(r, dest, &strata_image::layer::ExtractOptions::default())?;
    producer
        .join()
        .map_err(|_| anyhow!("tar writer panicked"))??;
    Ok(())
}
