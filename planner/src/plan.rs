//! Planning: the typed AST, the build arguments and the context become a [`BuildGraph`]: the
//! stages the target needs, each a list of resolved [`Step`]s with everything expanded and a
//! content-hash [`Step::key`]. Keys are computable before anything runs, because they depend
//! only on inputs (the base image ID, instructions, argument values, content digests of COPY
//! sources, and the keys of stages copied from), never on outputs: so `--dry-run` can say
//! which steps would run and why.

use std::collections::{BTreeMap, BTreeSet};

use petgraph::graph::DiGraph;
use serde_json::{json, Value};
use strata_image::spec::{self, ContainerConfig, HealthConfig, ImageConfig};
use strata_image::Digest;
use strata_parser::grammar::Chmod;
use strata_parser::instructions::{
    CommandLine, Dockerfile, Health, Instruction, Kind, Mount, MountKind, NetworkMode, Security,
    Sharing,
};
use strata_parser::shell::Lexer;
use strata_parser::Pos;

use crate::context::{Context, Selected, StatCache};
pub use crate::metadata::{BuildConfig, ConfigChange};
use crate::PlanError;

/// The version of the cache-key encoding. Bump it whenever what goes into a key changes.
pub const KEY_VERSION: &str = "strata.cache.v1";

/// The default PATH BuildKit gives images that have none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where base images and the remote sources of ADD come from (implemented by the caller:
/// the store and the network).
pub trait ImageSource {
    /// Looks up an image by the name written in FROM (or `--from`), after expansion.
    fn lookup(&self, name: &str) -> Result<Option<(Digest, ImageConfig)>, String>;

    /// Downloads the URL of an `ADD`; the file must live until the build ends.
    fn fetch_url(&self, url: &str) -> Result<FetchedFile, String> {
        Err(format!("{url}: remote sources are not available here"))
    }

    /// Checks out the git source of an `ADD` (`URL[#REF][:SUBDIR]`); lives until the build ends.
    fn fetch_git(&self, source: &str, keep_git_dir: bool) -> Result<FetchedTree, String> {
        let _ = keep_git_dir;
        Err(format!("{source}: remote sources are not available here"))
    }
}

/// A file `ADD` downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedFile {
    pub path: std::path::PathBuf,
    pub digest: Digest,
    /// Its name in a destination directory.
    pub filename: String,
    /// `Last-Modified`, Unix seconds.
    pub mtime: Option<i64>,
}

/// A git checkout `ADD` copies from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedTree {
    /// The directory to copy (the subdirectory asked for, if any).
    pub dir: std::path::PathBuf,
    pub commit: String,
}

/// Whether an ADD source names a git repository (as BuildKit decides): `git://` and `git@`
/// addresses, and http(s) URLs whose path ends in `.git`.
pub fn is_git_source(source: &str) -> bool {
    let base = source.split('#').next().unwrap_or(source);
    base.starts_with("git://")
        || base.starts_with("git@")
        || (is_url(base) && base.trim_end_matches('/').ends_with(".git"))
}

/// Whether a COPY/ADD source is an http(s) URL.
pub fn is_url(source: &str) -> bool {
    source.starts_with("https://") || source.starts_with("http://")
}

/// Build options that shape the plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// Network for RUN steps without `--network` (BuildKit's default is the host's).
    pub network: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `SOURCE_DATE_EPOCH`: results carry clamped times, so it is part of every key (only when
    /// set: other builds keep their keys).
    pub source_date_epoch: Option<i64>,
    /// `--allow security.insecure`: `RUN --security=insecure` may run privileged.
    pub allow_insecure: bool,
    /// `--allow network.host`: `RUN --network=host` may be asked for explicitly (the default
    /// network of RUN steps is the host's anyway: strata has no bridge network).
    pub allow_network_host: bool,
    /// `--ulimit` for RUN steps, as given (part of their keys when set, as in BuildKit).
    pub ulimits: Vec<String>,
    /// `--build-context NAME=DIR`: local directories `COPY --from=NAME` (and bind mounts)
    /// read, by lower-cased name.
    pub named_contexts: BTreeMap<String, Context>,
}

/// What a stage starts from.
#[derive(Debug, Clone)]
pub enum Base {
    Scratch,
    Image { id: Digest, name: String },
    Stage(usize),
}

/// Where COPY reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFrom {
    Context,
    /// A named local context (`--build-context NAME=DIR`).
    Named(String),
    Stage(usize),
    Image(Digest),
}

/// A resolved COPY or ADD.
#[derive(Debug, Clone)]
pub struct CopyOp {
    pub from: CopyFrom,
    /// Expanded source arguments (for `--from`: paths in that root).
    pub sources: Vec<String>,
    /// Context sources, selected: (source argument index, selection).
    pub selected: Vec<(usize, Selected)>,
    /// Absolute destination (relative destinations resolved against WORKDIR).
    pub dest: String,
    /// The destination is a directory (trailing `/`, several sources, a directory or glob).
    pub dest_is_dir: bool,
    pub chown: Option<String>,
    pub chmod: Option<Chmod>,
    /// ADD: local archives are unpacked.
    pub add: bool,
    /// Heredoc files: (name, content).
    pub inline: Vec<(String, String)>,
    /// `--exclude` patterns (.dockerignore syntax), matched against paths relative to each
    /// source. Context selections are already filtered; `--from` copies apply them.
    pub exclude: Vec<String>,
    /// `--parents`: sources keep their path (below a `/./` pivot, if any) under the destination.
    pub parents: bool,
    /// ADD of URLs: the downloaded files.
    pub fetched: Vec<FetchedFile>,
    /// ADD of a git repository: the checkout whose contents are copied.
    pub git: Option<FetchedTree>,
    /// `ADD --unpack`: None = the default (local archives unpack, downloads do not).
    pub unpack: Option<bool>,
    /// `--link`: the files are written into an empty directory, not over the parent.
    pub link: bool,
}

/// A resolved `RUN --mount`. Targets are absolute (relative ones resolved against WORKDIR).
#[derive(Debug, Clone)]
pub enum RunMount {
    /// Part of the context, a stage or an image; writes are discarded unless read-only.
    Bind {
        target: String,
        from: CopyFrom,
        /// The path inside `from` (for the context: what `selected` holds).
        source: String,
        selected: Vec<(usize, Selected)>,
        readonly: bool,
    },
    /// A directory kept by the store between builds, never part of a layer or a key.
    Cache {
        target: String,
        id: String,
        sharing: Sharing,
        uid: u32,
        gid: u32,
        mode: u32,
        readonly: bool,
        /// Seeds a new cache directory: (stage or image, path in it).
        seed: Option<(CopyFrom, String)>,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
    /// A secret given to the build (`--secret id=...`): a file at `target` and/or an
    /// environment variable; its value is never in a key, a layer or the config.
    Secret {
        id: String,
        target: Option<String>,
        env: Option<String>,
        required: bool,
        uid: u32,
        gid: u32,
        mode: u32,
    },
    /// An SSH agent socket given to the build (`--ssh id=SOCKET`).
    Ssh {
        id: String,
        target: String,
        required: bool,
        uid: u32,
        gid: u32,
        mode: u32,
    },
}

impl RunMount {
    pub fn target(&self) -> Option<&str> {
        match self {
            RunMount::Bind { target, .. }
            | RunMount::Cache { target, .. }
            | RunMount::Tmpfs { target, .. }
            | RunMount::Ssh { target, .. } => Some(target),
            RunMount::Secret { target, .. } => target.as_deref(),
        }
    }
}

/// What one step does.
#[derive(Debug, Clone)]
pub enum StepOp {
    Run {
        argv: Vec<String>,
        env: Vec<String>,
        user: String,
        workdir: String,
        network: String,
        mounts: Vec<RunMount>,
        /// `--security=insecure` (allowed by the build): the step runs privileged.
        insecure: bool,
    },
    Copy(Box<CopyOp>),
    /// A metadata instruction's change to the config. A WORKDIR's directory is also made
    /// (with its missing parents, owned by the config's user) unless the parent has it.
    Config(ConfigChange),
}

/// One step of a stage.
#[derive(Debug, Clone)]
pub struct Step {
    pub op: StepOp,
    /// The cache key: sha256 of the canonical encoding of `inputs`.
    pub key: Digest,
    /// Everything the key covers, for `--dry-run` explanations.
    pub inputs: Value,
    /// The history entry's `created_by`.
    pub created_by: String,
    /// Where the instruction is written.
    pub pos: Pos,
    pub original: String,
    /// `COPY --link`: the key of the step's layer alone, which leaves the parent out, so the
    /// layer is reused (rebased) when only earlier steps changed.
    pub link_key: Option<Digest>,
}

/// One stage of the plan.
#[derive(Debug, Clone)]
pub struct StagePlan {
    pub index: usize,
    pub name: Option<String>,
    pub base: Base,
    pub base_key: Digest,
    /// The base's config (for a stage base: that stage's final config).
    pub base_config: ImageConfig,
    pub steps: Vec<Step>,
    /// The config the first step starts from: the base's, with BuildKit's default PATH and
    /// without its ONBUILD triggers. Each step's [`ConfigChange`] applies to it in turn.
    pub start_config: ContainerConfig,
    /// Stages this one needs first (its base and every `--from`).
    pub deps: BTreeSet<usize>,
    /// The final config of the stage.
    pub final_config: ContainerConfig,
    pub pos: Pos,
}

impl StagePlan {
    /// Whether step `i`'s result is recorded (an image and a cache record): a step that may
    /// write a layer (RUN, COPY/ADD, WORKDIR) and the stage's last step. The other metadata
    /// steps are folded into the next recorded one: an image per step would make a
    /// Dockerfile of n ENV lines write n configs of growing size.
    pub fn records(&self, i: usize) -> bool {
        i + 1 == self.steps.len()
            || !matches!(
                self.steps[i].op,
                StepOp::Config(ref c) if !matches!(c, ConfigChange::Workdir(_))
            )
    }

    /// For each step, the first recorded step at or after it (the one whose result covers
    /// it).
    pub fn recorded_with(&self) -> Vec<usize> {
        let mut out = vec![0; self.steps.len()];
        let mut next = self.steps.len();
        for i in (0..self.steps.len()).rev() {
            if self.records(i) {
                next = i;
            }
            out[i] = next;
        }
        out
    }

    /// The key of the stage's result.
    pub fn final_key(&self) -> &Digest {
        self.steps.last().map(|s| &s.key).unwrap_or(&self.base_key)
    }
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", self.index))
    }
}

/// The plan: every stage written in the Dockerfile (those the target does not need are kept
/// but marked), and the dependency graph between stages.
#[derive(Debug)]
pub struct BuildGraph {
    pub stages: Vec<StagePlan>,
    pub target: usize,
    /// Stage dependency graph (edge a → b: b needs a).
    pub graph: DiGraph<usize, ()>,
    /// Stages the target needs, in an order where dependencies come first.
    pub order: Vec<usize>,
    /// The named local contexts the plan reads (`CopyFrom::Named`).
    pub named_contexts: BTreeMap<String, Context>,
}

impl BuildGraph {
    /// The directory a `CopyFrom::Context` or `CopyFrom::Named` selection was made in.
    pub fn context_for<'c>(&'c self, main: &'c Context, from: &CopyFrom) -> &'c Context {
        match from {
            CopyFrom::Named(n) => self.named_contexts.get(n).unwrap_or(main),
            _ => main,
        }
    }
}

/// Canonical key: sha256 of sorted, compact JSON.
pub fn key_of(inputs: &Value) -> Digest {
    Digest::of(&spec::to_canonical_json(inputs))
}

struct Planner<'a> {
    /// The stages to plan (the others get a placeholder: see [`plan`]).
    needed: &'a BTreeSet<usize>,
    /// A stage outside `needed` that a planned one turned out to need (then planning starts
    /// again with it).
    wanted: Option<usize>,
    file: &'a str,
    source: &'a str,
    opts: &'a PlanOptions,
    images: &'a dyn ImageSource,
    context: &'a Context,
    stat: &'a mut StatCache,
    /// Stat caches of the named contexts (kept for this build only).
    named_stats: BTreeMap<String, StatCache>,
    escape: char,
    global_args: Vec<(String, String)>,
    stages: Vec<StagePlan>,
}

/// Plans a build.
pub fn plan(
    file: &str,
    source: &str,
    df: &Dockerfile,
    opts: &PlanOptions,
    context: &Context,
    stat: &mut StatCache,
    images: &dyn ImageSource,
) -> Result<BuildGraph, PlanError> {
    let (problems, stage_graph) = crate::check::analyze(file, source, df, &opts.build_args);
    if let Some(p) = problems.into_iter().next() {
        return Err(PlanError::Parse(p));
    }
    let target = stage_graph.target(opts.target.as_deref()).ok_or_else(|| {
        PlanError::Invalid(format!(
            "target stage {:?} could not be found",
            opts.target.as_deref().unwrap_or_default()
        ))
    })?;
    // Only the stages the target needs are planned: the images of the others are neither
    // looked up nor pulled, as in BuildKit. An ONBUILD trigger of a base image may name a
    // stage the Dockerfile's text does not: then that stage is planned too, from the start.
    let mut needed = stage_graph.needed_by(target);
    let p = loop {
        let mut p = Planner {
            file,
            source,
            opts,
            images,
            context,
            stat: &mut *stat,
            named_stats: BTreeMap::new(),
            escape: df.escape,
            global_args: default_args(),
            stages: Vec::new(),
            needed: &needed,
            wanted: None,
        };
        match p.stages_of(df) {
            Ok(()) => break p,
            Err(e) => match p.wanted {
                Some(i) => {
                    let more = stage_graph.needed_by(i);
                    needed.extend(more);
                }
                None => return Err(e),
            },
        }
    };
    let mut graph = DiGraph::new();
    let nodes: Vec<_> = (0..p.stages.len()).map(|i| graph.add_node(i)).collect();
    for s in &p.stages {
        for &d in &s.deps {
            graph.add_edge(nodes[d], nodes[s.index], ());
        }
    }
    // The stages the target needs, dependencies first.
    let mut needed = BTreeSet::new();
    let mut stack = vec![target];
    while let Some(s) = stack.pop() {
        if needed.insert(s) {
            stack.extend(p.stages[s].deps.iter().copied());
        }
    }
    let mut order: Vec<usize> = petgraph::algo::toposort(&graph, None)
        .map_err(|_| PlanError::Invalid("circular dependency between stages".into()))?
        .into_iter()
        .map(|n| graph[n])
        .filter(|s| needed.contains(s))
        .collect();
    // Dependencies only point at earlier stages, so file order is a topological order too,
    // and the one users expect to read.
    order.sort_unstable();
    Ok(BuildGraph {
        stages: p.stages,
        target,
        graph,
        order,
        named_contexts: opts.named_contexts.clone(),
    })
}

/// `k=v` pairs as history shows them.
fn shown_pairs(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// BuildKit's automatic platform arguments.
fn default_args() -> Vec<(String, String)> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        o => o,
    };
    vec![
        ("TARGETPLATFORM".into(), format!("linux/{arch}")),
        ("TARGETOS".into(), "linux".into()),
        ("TARGETARCH".into(), arch.into()),
        ("TARGETVARIANT".into(), String::new()),
        ("BUILDPLATFORM".into(), format!("linux/{arch}")),
        ("BUILDOS".into(), "linux".into()),
        ("BUILDARCH".into(), arch.into()),
        ("BUILDVARIANT".into(), String::new()),
    ]
}

/// What an ADD fetched: files, a checkout, and what of them the key covers.
type Fetched = (Vec<FetchedFile>, Option<FetchedTree>, Vec<Value>);

/// A stage being planned.
struct StageBuilder {
    plan: StagePlan,
    config: BuildConfig,
    /// ARGs in scope in this stage, with values.
    args: Vec<(String, String)>,
    shell: Vec<String>,
}

impl StageBuilder {
    fn parent_key(&self) -> Digest {
        self.plan.final_key().clone()
    }
    /// Variables for expansion: ARGs, then ENV (ENV wins on conflict).
    fn vars(&self) -> Vec<(String, String)> {
        let mut v = self.args.clone();
        for kv in &self.config.get().env {
            let (k, val) = kv.split_once('=').unwrap_or((kv, ""));
            v.push((k.to_string(), val.to_string()));
        }
        v
    }
}

impl Planner<'_> {
    /// Plans every stage in `df` (placeholders for those not needed).
    fn stages_of(&mut self, df: &Dockerfile) -> Result<(), PlanError> {
        let mut current: Option<StageBuilder> = None;
        let mut skipping = false;
        for ins in &df.instructions {
            match &ins.kind {
                Kind::Arg(decls) if current.is_none() && !skipping => {
                    for d in decls {
                        let value = match (self.opts.build_args.get(&d.name), &d.default) {
                            (Some(v), _) => Some(v.clone()),
                            (None, Some(def)) => {
                                Some(self.expand(ins, def, &self.global_args.clone())?)
                            }
                            (None, None) => None,
                        };
                        if let Some(v) = value {
                            self.global_args.retain(|(k, _)| k != &d.name);
                            self.global_args.push((d.name.clone(), v));
                        }
                    }
                }
                Kind::From(f) => {
                    if let Some(b) = current.take() {
                        self.finish(b);
                    }
                    skipping = !self.needed.contains(&self.stages.len());
                    if skipping {
                        self.skip_stage(ins, f);
                    } else {
                        current = Some(self.start_stage(ins, f)?);
                    }
                }
                _ if skipping => {}
                _ => {
                    let b = current.as_mut().expect("check guarantees a FROM first");
                    self.instruction(b, ins)?;
                }
            }
        }
        if let Some(b) = current.take() {
            self.finish(b);
        }
        Ok(())
    }

    /// A stage the target does not need: only its name and place are kept.
    fn skip_stage(&mut self, ins: &Instruction, f: &strata_parser::instructions::From) {
        self.stages.push(StagePlan {
            index: self.stages.len(),
            name: f.alias.clone(),
            base: Base::Scratch,
            base_key: key_of(&json!({"v": KEY_VERSION, "op": "skipped"})),
            base_config: ImageConfig::default(),
            steps: Vec::new(),
            start_config: ContainerConfig::default(),
            deps: BTreeSet::new(),
            final_config: ContainerConfig::default(),
            pos: ins.pos,
        });
    }

    /// Stage `i` as an input of a planned stage; an error (and a new planning with it) when
    /// it was skipped.
    fn stage_input(&mut self, ins: &Instruction, i: usize) -> Result<(), PlanError> {
        if self.needed.contains(&i) {
            return Ok(());
        }
        self.wanted = Some(i);
        Err(self.err(ins, format!("stage {i} was not planned")))
    }

    fn err(&self, ins: &Instruction, m: impl Into<String>) -> PlanError {
        PlanError::Parse(strata_parser::ParseError::new(
            self.file,
            self.source,
            ins.pos,
            m,
        ))
    }

    fn expand(
        &self,
        ins: &Instruction,
        word: &str,
        vars: &[(String, String)],
    ) -> Result<String, PlanError> {
        Lexer::new(self.escape)
            .process_word(word, &SliceEnv(vars))
            .map(|e| e.value)
            .map_err(|e| self.err(ins, format!("{} {word}: {e}", ins.kind.name())))
    }

    fn expand_words(
        &self,
        ins: &Instruction,
        word: &str,
        vars: &[(String, String)],
    ) -> Result<Vec<String>, PlanError> {
        Lexer::new(self.escape)
            .process_words(word, &SliceEnv(vars))
            .map_err(|e| self.err(ins, format!("{} {word}: {e}", ins.kind.name())))
    }

    fn start_stage(
        &mut self,
        ins: &Instruction,
        f: &strata_parser::instructions::From,
    ) -> Result<StageBuilder, PlanError> {
        let index = self.stages.len();
        let name = self.expand(ins, &f.image, &self.global_args.clone())?;
        let (base, base_config, base_key, mut deps) = if name == "scratch" {
            (
                Base::Scratch,
                ImageConfig {
                    architecture: default_args()[2].1.clone(),
                    os: "linux".into(),
                    ..Default::default()
                },
                key_of(&json!({"v": KEY_VERSION, "op": "scratch"})),
                BTreeSet::new(),
            )
        } else if let Some(i) = self
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(&name.to_lowercase()))
        {
            let s = &self.stages[i];
            let mut cfg = s.base_config.clone();
            cfg.config = Some(s.final_config.clone());
            (
                Base::Stage(i),
                cfg,
                s.final_key().clone(),
                BTreeSet::from([i]),
            )
        } else {
            match self.images.lookup(&name).map_err(|e| self.err(ins, e))? {
                Some((id, cfg)) => {
                    let key = key_of(&json!({"v": KEY_VERSION, "op": "image", "id": id}));
                    (Base::Image { id, name: name.clone() }, cfg, key, BTreeSet::new())
                }
                None => {
                    return Err(self.err(
                        ins,
                        format!("{name}: image not found locally (strata import or load it first, or pull it)"),
                    ))
                }
            }
        };
        let _ = &mut deps;
        let mut config = base_config.container();
        if config.env_get("PATH").is_none() {
            config.env.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        let triggers = std::mem::take(&mut config.on_build);
        let mut b = StageBuilder {
            plan: StagePlan {
                index,
                name: f.alias.clone(),
                base,
                base_key,
                base_config,
                steps: Vec::new(),
                start_config: config.clone(),
                deps,
                final_config: ContainerConfig::default(),
                pos: ins.pos,
            },
            shell: config
                .shell
                .clone()
                .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]),
            config: BuildConfig::new(config),
            args: Vec::new(),
        };
        // ONBUILD triggers of the base image run first, as if written after FROM.
        for t in triggers {
            let trig = strata_parser::parse_instruction(self.file, &t).map_err(PlanError::Parse)?;
            let trig = Instruction {
                pos: ins.pos,
                ..trig
            };
            self.instruction(&mut b, &trig)?;
        }
        Ok(b)
    }

    fn finish(&mut self, mut b: StageBuilder) {
        b.plan.final_config = b.config.get().clone();
        self.stages.push(b.plan);
    }

    fn push(
        &mut self,
        b: &mut StageBuilder,
        ins: &Instruction,
        op: StepOp,
        mut inputs: Value,
        created_by: String,
    ) {
        let obj = inputs.as_object_mut().expect("inputs are an object");
        obj.insert("v".into(), json!(KEY_VERSION));
        obj.insert("parent".into(), json!(b.parent_key()));
        if let Some(e) = self.opts.source_date_epoch {
            obj.insert("epoch".into(), json!(e));
        }
        let key = key_of(&inputs);
        b.plan.steps.push(Step {
            op,
            key,
            inputs,
            created_by,
            pos: ins.pos,
            original: ins.original.clone(),
            link_key: None,
        });
    }

    /// A metadata step: the change enters the key (the config before it is fixed by the
    /// parent key) and the stage's config.
    fn config_step(
        &mut self,
        b: &mut StageBuilder,
        ins: &Instruction,
        change: ConfigChange,
        created_by: String,
    ) {
        b.config.apply(&change);
        let op = if matches!(change, ConfigChange::Workdir(_)) {
            "workdir"
        } else {
            "config"
        };
        let inputs = json!({"op": op, "change": change, "created_by": created_by});
        self.push(b, ins, StepOp::Config(change), inputs, created_by);
    }

    fn command(&self, b: &StageBuilder, c: &CommandLine) -> Vec<String> {
        match c {
            CommandLine::Exec(v) => v.clone(),
            CommandLine::Shell(s) => {
                let mut v = b.shell.clone();
                v.push(s.clone());
                v
            }
        }
    }

    fn instruction(&mut self, b: &mut StageBuilder, ins: &Instruction) -> Result<(), PlanError> {
        // Only an instruction that can refer to a variable needs them: copying every variable
        // for every line would make a Dockerfile of n ENV lines plan in O(n²).
        let refers = ins.original.contains('$')
            || match &ins.kind {
                Kind::Run(r) => !r.heredocs.is_empty(),
                Kind::Copy(c) | Kind::Add(c) => !c.heredocs.is_empty(),
                _ => false,
            };
        let vars = if refers { b.vars() } else { Vec::new() };
        match &ins.kind {
            Kind::From(_) => unreachable!("handled by the caller"),
            Kind::Arg(decls) => {
                for d in decls {
                    let value = match (self.opts.build_args.get(&d.name), &d.default) {
                        (Some(v), _) => Some(v.clone()),
                        (None, Some(def)) => Some(self.expand(ins, def, &vars)?),
                        (None, None) => self
                            .global_args
                            .iter()
                            .rev()
                            .find(|(k, _)| *k == d.name)
                            .map(|(_, v)| v.clone()),
                    };
                    b.args.retain(|(k, _)| k != &d.name);
                    if let Some(v) = value {
                        b.args.push((d.name.clone(), v));
                    }
                }
            }
            Kind::Env(kvs) => {
                let mut pairs = Vec::new();
                for kv in kvs {
                    // Every pair is expanded with the environment from before the
                    // instruction, as BuildKit does: `ENV A=1 B=${A}2` sees no A of its own.
                    let k = self.expand(ins, &kv.key, &vars)?;
                    let v = self.expand(ins, &kv.value, &vars)?;
                    pairs.push((k, v));
                }
                let shown = format!("ENV {}", shown_pairs(&pairs));
                self.config_step(b, ins, ConfigChange::Env(pairs), shown);
            }
            Kind::Label(kvs) => {
                let mut pairs = Vec::new();
                for kv in kvs {
                    let k = self.expand(ins, &kv.key, &vars)?;
                    let v = self.expand(ins, &kv.value, &vars)?;
                    pairs.push((k, v));
                }
                let shown = format!("LABEL {}", shown_pairs(&pairs));
                self.config_step(b, ins, ConfigChange::Label(pairs), shown);
            }
            Kind::Cmd(c) => {
                let argv = self.command(b, c);
                let shown = format!("CMD {}", serde_json::to_string(&argv).expect("json"));
                self.config_step(b, ins, ConfigChange::Cmd(argv), shown);
            }
            Kind::Entrypoint(c) => {
                let argv = self.command(b, c);
                // Docker: a new ENTRYPOINT resets a CMD inherited from the base image.
                let reset_cmd = !b
                    .plan
                    .steps
                    .iter()
                    .any(|s| matches!(s.op, StepOp::Config(ConfigChange::Cmd(_))));
                let shown = format!("ENTRYPOINT {}", serde_json::to_string(&argv).expect("json"));
                self.config_step(b, ins, ConfigChange::Entrypoint { argv, reset_cmd }, shown);
            }
            Kind::Shell(s) => {
                b.shell = s.clone();
                let shown = format!("SHELL {}", serde_json::to_string(s).expect("json"));
                self.config_step(b, ins, ConfigChange::Shell(s.clone()), shown);
            }
            Kind::Workdir(w) => {
                let w = self.expand(ins, w, &vars)?;
                let abs = if w.starts_with('/') {
                    w
                } else {
                    let base = if b.config.get().working_dir.is_empty() {
                        "/".to_string()
                    } else {
                        b.config.get().working_dir.clone()
                    };
                    format!("{}/{w}", base.trim_end_matches('/'))
                };
                let dir = clean_abs(&abs);
                let shown = format!("WORKDIR {dir}");
                // BuildKit makes the directory (owned by the USER) in a layer of its own when
                // it is missing, so the next step sees it: `COPY f /app` copies into it.
                self.config_step(b, ins, ConfigChange::Workdir(dir), shown);
            }
            Kind::User(u) => {
                let user = self.expand(ins, u, &vars)?;
                let shown = format!("USER {user}");
                self.config_step(b, ins, ConfigChange::User(user), shown);
            }
            Kind::Expose(ports) => {
                let mut shown = Vec::new();
                for p in ports {
                    for w in self.expand_words(ins, p, &vars)? {
                        let port =
                            strata_parser::grammar::parse_port(&w).map_err(|e| self.err(ins, e))?;
                        shown.push(port);
                    }
                }
                let text = format!(
                    "EXPOSE map[{}]",
                    shown
                        .iter()
                        .map(|p| format!("{p}:{{}}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                self.config_step(b, ins, ConfigChange::Expose(shown), text);
            }
            Kind::Volume(vols) => {
                let mut shown = Vec::new();
                for v in vols {
                    shown.push(self.expand(ins, v, &vars)?);
                }
                let text = format!("VOLUME [{}]", shown.join(" "));
                self.config_step(b, ins, ConfigChange::Volume(shown), text);
            }
            Kind::StopSignal(s) => {
                let signal = self.expand(ins, s, &vars)?;
                let shown = format!("STOPSIGNAL {signal}");
                self.config_step(b, ins, ConfigChange::StopSignal(signal), shown);
            }
            Kind::Maintainer(m) => {
                self.config_step(b, ins, ConfigChange::Maintainer, format!("MAINTAINER {m}"));
            }
            Kind::Healthcheck(h) => {
                let health = match h {
                    Health::None => HealthConfig {
                        test: vec!["NONE".into()],
                        ..Default::default()
                    },
                    Health::Cmd {
                        test,
                        interval,
                        timeout,
                        start_period,
                        start_interval,
                        retries,
                    } => HealthConfig {
                        test: match test {
                            CommandLine::Exec(v) => {
                                let mut t = vec!["CMD".to_string()];
                                t.extend(v.iter().cloned());
                                t
                            }
                            CommandLine::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
                        },
                        interval: *interval,
                        timeout: *timeout,
                        start_period: *start_period,
                        start_interval: *start_interval,
                        retries: *retries,
                        extra: Default::default(),
                    },
                };
                let shown = format!("HEALTHCHECK {}", ins.original.trim_start()[11..].trim());
                self.config_step(b, ins, ConfigChange::Healthcheck(health), shown);
            }
            Kind::Onbuild(inner) => {
                let text = ins.original.trim_start();
                let trigger = text[7..].trim_start().to_string();
                let _ = inner;
                let shown = format!("ONBUILD {trigger}");
                self.config_step(b, ins, ConfigChange::OnBuild(trigger), shown);
            }
            Kind::Run(r) => {
                let argv = if r.heredocs.is_empty() {
                    self.command(b, &r.command)
                } else {
                    self.heredoc_command(b, ins, r)?
                };
                let mut env = b.config.get().env.clone();
                // Build arguments in scope are environment for RUN (ENV wins), not kept in the image.
                let mut arg_env = Vec::new();
                for (k, v) in &b.args {
                    if b.config.get().env_get(k).is_none() {
                        arg_env.push(format!("{k}={v}"));
                    }
                }
                env.extend(arg_env.iter().cloned());
                let network = match r.network {
                    Some(NetworkMode::None) => "none".to_string(),
                    Some(NetworkMode::Host) => "host".to_string(),
                    Some(NetworkMode::Default) | None => {
                        self.opts.network.clone().unwrap_or_else(|| "host".into())
                    }
                };
                if r.network == Some(NetworkMode::Host) && !self.opts.allow_network_host {
                    return Err(self.err(
                        ins,
                        "RUN --network=host needs the build to allow it (--allow network.host)",
                    ));
                }
                let insecure = r.security == Some(Security::Insecure);
                if insecure && !self.opts.allow_insecure {
                    return Err(self.err(
                        ins,
                        "RUN --security=insecure needs the build to allow it (--allow security.insecure)",
                    ));
                }
                let user = b.config.get().user.clone();
                let workdir = if b.config.get().working_dir.is_empty() {
                    "/".to_string()
                } else {
                    b.config.get().working_dir.clone()
                };
                let mut mounts = Vec::new();
                let mut mount_inputs = Vec::new();
                for (n, m) in r.mounts.iter().enumerate() {
                    let (mount, input) = self.run_mount(b, ins, m, &workdir, n, &vars)?;
                    mounts.push(mount);
                    mount_inputs.push(input);
                }
                let mut sorted_env = env.clone();
                sorted_env.sort();
                let mut inputs = json!({"op": "run", "argv": argv, "env": sorted_env, "user": user, "workdir": workdir, "network": network});
                // Only when used, so the keys of plain RUN steps stay what they were.
                if !mount_inputs.is_empty() {
                    inputs["mounts"] = json!(mount_inputs);
                }
                if insecure {
                    inputs["security"] = json!("insecure");
                }
                if !self.opts.ulimits.is_empty() {
                    inputs["ulimits"] = json!(self.opts.ulimits);
                }
                let shown = match &r.command {
                    CommandLine::Shell(s) => format!("RUN {} {s} # buildkit", b.shell.join(" ")),
                    CommandLine::Exec(v) => format!("RUN {} # buildkit", v.join(" ")),
                };
                let op = StepOp::Run {
                    argv,
                    env,
                    user,
                    workdir,
                    network,
                    mounts,
                    insecure,
                };
                self.push(b, ins, op, inputs, shown);
            }
            Kind::Copy(c) | Kind::Add(c) => {
                let add = matches!(ins.kind, Kind::Add(_));
                self.copy(b, ins, c, add, &vars)?;
            }
        }
        Ok(())
    }

    /// Resolves one `RUN --mount` (values expanded with the build's variables) and what of it
    /// the step's key covers: never a secret's value or a cache's contents.
    fn run_mount(
        &mut self,
        b: &mut StageBuilder,
        ins: &Instruction,
        m: &Mount,
        workdir: &str,
        n: usize,
        vars: &[(String, String)],
    ) -> Result<(RunMount, Value), PlanError> {
        let expand = |me: &Self, v: &Option<String>| -> Result<Option<String>, PlanError> {
            v.as_deref().map(|x| me.expand(ins, x, vars)).transpose()
        };
        let target = expand(self, &m.target)?.map(|t| {
            if t.starts_with('/') {
                clean_abs(&t)
            } else {
                clean_abs(&format!("{}/{t}", workdir.trim_end_matches('/')))
            }
        });
        let need_target = |t: Option<String>| {
            t.ok_or_else(|| self.err(ins, "--mount: a target is required for this mount type"))
        };
        let source = expand(self, &m.source)?;
        let from = expand(self, &m.from)?;
        Ok(match m.kind {
            MountKind::Bind => {
                let target = need_target(target)?;
                let source = source.unwrap_or_else(|| "/".into());
                let named = from
                    .as_deref()
                    .map(str::to_lowercase)
                    .filter(|n| self.opts.named_contexts.contains_key(n));
                let (from, key, selected, content) = match &from {
                    _ if from.is_none() || named.is_some() => {
                        let rel = crate::context::clean_source(&source)
                            .map_err(|e| self.err(ins, format!("--mount source {source}: {e}")))?;
                        let sel = self.select_context(
                            ins,
                            &[if rel.is_empty() { ".".to_string() } else { rel }],
                            &SelectShape {
                                named: named.clone(),
                                ..SelectShape::default()
                            },
                        )?;
                        let content = content_key(self.context_of(named.as_ref()), &sel);
                        let from = named.map_or(CopyFrom::Context, CopyFrom::Named);
                        (from, None, sel, content)
                    }
                    None => unreachable!("handled above"),
                    Some(f) => {
                        let (from, key) = self.resolve_from(b, ins, f)?;
                        (from, Some(key), Vec::new(), json!([]))
                    }
                };
                let input = json!({"type": "bind", "target": target, "from": key, "source": source, "content": content, "ro": m.readonly});
                (
                    RunMount::Bind {
                        target,
                        from,
                        source,
                        selected,
                        readonly: m.readonly,
                    },
                    input,
                )
            }
            MountKind::Cache => {
                let target = need_target(target)?;
                let id = expand(self, &m.id)?.unwrap_or_else(|| target.clone());
                let seed = match &from {
                    Some(f) => {
                        let (from, _) = self.resolve_from(b, ins, f)?;
                        Some((from, source.clone().unwrap_or_else(|| "/".into())))
                    }
                    None => None,
                };
                let input = json!({"type": "cache", "target": target, "id": id, "ro": m.readonly});
                (
                    RunMount::Cache {
                        target,
                        id,
                        sharing: m.sharing,
                        uid: m.uid.unwrap_or(0),
                        gid: m.gid.unwrap_or(0),
                        mode: m.mode.unwrap_or(0o755),
                        readonly: m.readonly,
                        seed,
                    },
                    input,
                )
            }
            MountKind::Tmpfs => {
                let target = need_target(target)?;
                let input = json!({"type": "tmpfs", "target": target, "size": m.size});
                (
                    RunMount::Tmpfs {
                        target,
                        size: m.size,
                    },
                    input,
                )
            }
            MountKind::Secret => {
                let id = expand(self, &m.id)?.unwrap_or_default();
                let env = expand(self, &m.env)?;
                let input = json!({"type": "secret", "id": id, "target": target, "env": env});
                (
                    RunMount::Secret {
                        id,
                        target,
                        env,
                        required: m.required,
                        uid: m.uid.unwrap_or(0),
                        gid: m.gid.unwrap_or(0),
                        mode: m.mode.unwrap_or(0o400),
                    },
                    input,
                )
            }
            MountKind::Ssh => {
                let id = expand(self, &m.id)?.unwrap_or_else(|| "default".into());
                let target = target.unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{n}"));
                let input = json!({"type": "ssh", "id": id, "target": target});
                (
                    RunMount::Ssh {
                        id,
                        target,
                        required: m.required,
                        uid: m.uid.unwrap_or(0),
                        gid: m.gid.unwrap_or(0),
                        mode: m.mode.unwrap_or(0o600),
                    },
                    input,
                )
            }
        })
    }

    /// Selects context sources; also returns what of them the cache key covers (paths, kinds,
    /// modes, content digests).
    fn select_context(
        &mut self,
        ins: &Instruction,
        sources: &[String],
        shape: &SelectShape,
    ) -> Result<Vec<(usize, Selected)>, PlanError> {
        let mut selected = Vec::new();
        let opts = self.opts;
        let (ctx, stat) = match &shape.named {
            None => (self.context, &mut *self.stat),
            Some(n) => (
                &opts.named_contexts[n],
                self.named_stats.entry(n.clone()).or_default(),
            ),
        };
        for (i, s) in sources.iter().enumerate() {
            let sel = match ctx.select(s) {
                Ok(sel) => sel,
                Err(e) => {
                    return Err(PlanError::Parse(strata_parser::ParseError::new(
                        self.file,
                        self.source,
                        ins.pos,
                        e.to_string(),
                    )))
                }
            };
            let pivot = shape.parents.then(|| parents_pivot(s));
            for mut x in sel {
                if shape
                    .exclude
                    .as_ref()
                    .is_some_and(|m| m.excluded(ctx.rel(&x)))
                {
                    continue;
                }
                if let Some(pivot) = &pivot {
                    let src = ctx.src(&x);
                    ctx.set_rel(&mut x, src.strip_prefix(pivot.as_str()).unwrap_or(src));
                }
                let e = ctx.entry(&x);
                if e.kind == crate::context::Kind::File {
                    x.digest = Some(stat.digest(ctx, ctx.src(&x), e)?);
                }
                selected.push((i, x));
            }
        }
        Ok(selected)
    }

    /// The context a selection of `named` (None: the build context) was made in.
    fn context_of(&self, named: Option<&String>) -> &Context {
        named.map_or(self.context, |n| &self.opts.named_contexts[n])
    }

    /// Fetches the URLs and git repositories of an ADD, checking `--checksum`; returns the
    /// files, the checkout, and what of them the key covers (content digests, commits).
    fn fetch_remote(
        &mut self,
        ins: &Instruction,
        urls: &[String],
        git_sources: &[String],
        checksum: Option<&str>,
        keep_git_dir: bool,
    ) -> Result<Fetched, PlanError> {
        if checksum.is_some() && urls.len() + git_sources.len() != 1 {
            return Err(self.err(ins, "--checksum needs exactly one URL or git source"));
        }
        if git_sources.len() > 1 || (!git_sources.is_empty() && !urls.is_empty()) {
            return Err(self.err(ins, "ADD of a git repository takes it as the only source"));
        }
        let mut fetched = Vec::new();
        let mut inputs = Vec::new();
        for u in urls {
            let f = self.images.fetch_url(u).map_err(|e| self.err(ins, e))?;
            if let Some(want) = checksum {
                let want_digest: Digest = want.parse().map_err(|_| {
                    self.err(
                        ins,
                        format!("--checksum={want}: a URL's checksum is a sha256: digest"),
                    )
                })?;
                if want_digest != f.digest {
                    return Err(self.err(
                        ins,
                        format!(
                            "ADD {u}: checksum mismatch: expected {want_digest}, got {}",
                            f.digest
                        ),
                    ));
                }
            }
            inputs.push(json!([u, f.digest, f.filename, f.mtime]));
            fetched.push(f);
        }
        let mut git = None;
        for g in git_sources {
            let t = self
                .images
                .fetch_git(g, keep_git_dir)
                .map_err(|e| self.err(ins, e))?;
            if let Some(want) = checksum {
                if !t.commit.starts_with(&want.to_ascii_lowercase()) {
                    return Err(self.err(
                        ins,
                        format!(
                            "ADD {g}: checksum mismatch: expected commit {want}, got {}",
                            t.commit
                        ),
                    ));
                }
            }
            inputs.push(json!([g, t.commit, keep_git_dir]));
            git = Some(t);
        }
        Ok((fetched, git, inputs))
    }

    /// `--from=NAME`: an earlier stage (by name or index) or an image; with the key it gives.
    fn resolve_from(
        &mut self,
        b: &mut StageBuilder,
        ins: &Instruction,
        f: &str,
    ) -> Result<(CopyFrom, Digest), PlanError> {
        let stage = self
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(&f.to_lowercase()))
            .or_else(|| f.parse::<usize>().ok().filter(|&i| i < self.stages.len()));
        if let Some(i) = stage {
            self.stage_input(ins, i)?;
            b.plan.deps.insert(i);
            return Ok((CopyFrom::Stage(i), self.stages[i].final_key().clone()));
        }
        match self.images.lookup(f).map_err(|e| self.err(ins, e))? {
            Some((id, _)) => Ok((CopyFrom::Image(id.clone()), id)),
            None => Err(self.err(
                ins,
                format!("--from={f}: no such stage, and no such image locally"),
            )),
        }
    }

    fn copy(
        &mut self,
        b: &mut StageBuilder,
        ins: &Instruction,
        c: &strata_parser::instructions::Copy,
        add: bool,
        vars: &[(String, String)],
    ) -> Result<(), PlanError> {
        let checksum = c
            .checksum
            .as_deref()
            .map(|x| self.expand(ins, x, vars))
            .transpose()?;
        let exclude = c
            .exclude
            .iter()
            .map(|x| self.expand(ins, x, vars))
            .collect::<Result<Vec<_>, _>>()?;
        // `--build-context NAME=DIR` takes precedence over stages and images, as in BuildKit.
        let named = c
            .from
            .as_deref()
            .map(str::to_lowercase)
            .filter(|n| self.opts.named_contexts.contains_key(n));
        let shape = SelectShape {
            named: named.clone(),
            exclude: if exclude.is_empty() {
                None
            } else {
                Some(
                    strata_parser::ignore::Matcher::new(&exclude)
                        .map_err(|(p, e)| self.err(ins, format!("--exclude={p}: {e}")))?,
                )
            },
            parents: c.parents,
        };
        let mut sources = Vec::new();
        let (mut urls, mut git_sources) = (Vec::new(), Vec::new());
        let mut inline = Vec::new();
        let mut heredocs = c.heredocs.iter();
        for s in &c.sources {
            if strata_parser::grammar::heredoc_marker(s).is_some() {
                // COPY <<EOF /path: the heredoc is a file named after its delimiter.
                if let Some(h) = heredocs.next() {
                    let body = heredoc_body(h);
                    let content = if h.expand {
                        self.expand_heredoc(ins, &body, vars)?
                    } else {
                        body
                    };
                    inline.push((h.name.clone(), content));
                    continue;
                }
            }
            let s = self.expand(ins, s, vars)?;
            if add && is_git_source(&s) {
                git_sources.push(s);
            } else if add && is_url(&s) {
                urls.push(s);
            } else {
                sources.push(s);
            }
        }
        let (fetched, git, remote_inputs) = self.fetch_remote(
            ins,
            &urls,
            &git_sources,
            checksum.as_deref(),
            c.keep_git_dir,
        )?;
        let remote_count = urls.len() + git_sources.len();
        let dest_raw = self.expand(ins, &c.dest, vars)?;
        let workdir = if b.config.get().working_dir.is_empty() {
            "/".to_string()
        } else {
            b.config.get().working_dir.clone()
        };
        let dest = if dest_raw.starts_with('/') {
            dest_raw.clone()
        } else {
            format!("{}/{dest_raw}", workdir.trim_end_matches('/'))
        };
        let trailing = dest_raw.ends_with('/') || dest_raw == "." || dest_raw.ends_with("/.");
        let chown = c
            .chown
            .as_deref()
            .map(|x| self.expand(ins, x, vars))
            .transpose()?;
        let chmod_text = c
            .chmod
            .as_deref()
            .map(|x| self.expand(ins, x, vars))
            .transpose()?;
        let chmod = chmod_text
            .as_deref()
            .map(|x| strata_parser::grammar::parse_chmod(x).map_err(|e| self.err(ins, e)))
            .transpose()?;
        let (from, from_key, mut selected) = match &c.from {
            None if sources.is_empty() => (CopyFrom::Context, None, Vec::new()),
            None => {
                let selected = self.select_context(ins, &sources, &shape)?;
                (CopyFrom::Context, None, selected)
            }
            Some(_) if named.is_some() => {
                let selected = self.select_context(ins, &sources, &shape)?;
                let n = named.clone().expect("checked");
                (CopyFrom::Named(n), None, selected)
            }
            Some(f) => {
                let (from, key) = self.resolve_from(b, ins, f)?;
                (from, Some(key), Vec::new())
            }
        };
        let ctx = self.context_of(named.as_ref());
        // Selections name entries by their place in the sorted context: that is path order.
        selected.sort_by(|a, b| ctx.src(&a.1).cmp(ctx.src(&b.1)).then(a.0.cmp(&b.0)));
        let source_inputs = content_key(ctx, &selected);
        let many = sources.len() + inline.len() + remote_count > 1
            || git.is_some()
            || sources.iter().any(|s| s.contains(['*', '?', '[']))
            || (matches!(from, CopyFrom::Context | CopyFrom::Named(_))
                && sources.iter().any(|s| {
                    let cleaned = crate::context::clean_source(s).unwrap_or_default();
                    let ctx = match &from {
                        CopyFrom::Named(n) => &self.opts.named_contexts[n],
                        _ => self.context,
                    };
                    cleaned.is_empty()
                        || ctx
                            .resolve(&cleaned)
                            .map(|(_, e)| e.kind == crate::context::Kind::Dir)
                            .unwrap_or(false)
                }));
        let dest_is_dir = trailing || many || c.parents;
        let name = if add { "ADD" } else { "COPY" };
        let mut flags = String::new();
        if let Some(f) = &c.from {
            flags.push_str(&format!("--from={f} "));
        }
        if let Some(o) = &chown {
            flags.push_str(&format!("--chown={o} "));
        }
        if let Some(m) = &chmod_text {
            flags.push_str(&format!("--chmod={m} "));
        }
        if c.link {
            flags.push_str("--link ");
        }
        if c.parents {
            flags.push_str("--parents ");
        }
        for x in &exclude {
            flags.push_str(&format!("--exclude={x} "));
        }
        if let Some(x) = &checksum {
            flags.push_str(&format!("--checksum={x} "));
        }
        if c.keep_git_dir {
            flags.push_str("--keep-git-dir=true ");
        }
        if let Some(u) = c.unpack {
            flags.push_str(&format!("--unpack={u} "));
        }
        let written: Vec<&str> = urls
            .iter()
            .chain(&git_sources)
            .chain(&sources)
            .map(String::as_str)
            .collect();
        let created_by = format!("{name} {flags}{} {dest_raw} # buildkit", written.join(" "));
        let inputs = json!({
            "op": name.to_lowercase(),
            "from": from_key,
            "sources": sources,
            "content": source_inputs,
            "dest": dest,
            "dest_is_dir": dest_is_dir,
            "chown": chown,
            "chmod": chmod_text,
            "inline": inline,
        });
        let mut inputs = inputs;
        // Only when used, so keys of plain COPYs stay what they were.
        if !exclude.is_empty() {
            inputs["exclude"] = json!(exclude);
        }
        if c.parents {
            inputs["parents"] = json!(true);
        }
        if let Some(n) = &named {
            inputs["named_context"] = json!(n);
        }
        if c.link {
            inputs["link"] = json!(true);
        }
        if remote_count > 0 {
            inputs["remote"] = json!(remote_inputs);
        }
        if let Some(u) = c.unpack {
            inputs["unpack"] = json!(u);
        }
        let op = CopyOp {
            from,
            sources,
            selected,
            dest,
            dest_is_dir,
            chown,
            chmod,
            add,
            inline,
            exclude,
            parents: c.parents,
            fetched,
            git,
            unpack: c.unpack,
            link: c.link,
        };
        self.push(b, ins, StepOp::Copy(Box::new(op)), inputs, created_by);
        if c.link {
            let step = b.plan.steps.last_mut().expect("just pushed");
            let mut layer_inputs = step.inputs.clone();
            let o = layer_inputs.as_object_mut().expect("inputs are an object");
            o.remove("parent");
            o.insert("layer_only".into(), json!(true));
            step.link_key = Some(key_of(&layer_inputs));
        }
        Ok(())
    }
}

/// One selected context entry as the cache key covers it: (source index, path it lands at,
/// kind, mode, content digest or link target).
type SourceRow<'a> = (usize, &'a str, &'a str, u32, Option<&'a str>);

/// The rows of a selection, in order ([`content_key`] hashes them; `--dry-run` explains a
/// miss by comparing them with the last build's).
pub fn source_rows<'a>(
    ctx: &'a Context,
    selected: &'a [(usize, Selected)],
) -> impl Iterator<Item = SourceRow<'a>> + 'a {
    selected.iter().map(move |(i, x)| {
        let e = ctx.entry(x);
        let kind = match e.kind {
            crate::context::Kind::File => "File",
            crate::context::Kind::Dir => "Dir",
            crate::context::Kind::Symlink => "Symlink",
            crate::context::Kind::Special => "Special",
        };
        let content = match e.kind {
            crate::context::Kind::File => x.digest.as_ref().map(Digest::as_str),
            crate::context::Kind::Symlink => e.link.as_deref(),
            _ => None,
        };
        (*i, ctx.rel(x), kind, e.mode, content)
    })
}

/// What a cache key holds of selected context sources: the sha256 of their rows, one JSON
/// array per line (a list of 160,000 rows in the key's JSON cost 350 bytes of memory each).
fn content_key(ctx: &Context, selected: &[(usize, Selected)]) -> Value {
    let mut h = strata_image::digest::Hasher::new();
    for row in source_rows(ctx, selected) {
        let line = serde_json::to_vec(&row).expect("rows serialize");
        h.update(&line);
        h.update(b"\n");
    }
    json!(h.finish())
}

/// How sources are selected: from which context, `--exclude` patterns and `--parents`.
#[derive(Default)]
struct SelectShape {
    /// A named local context instead of the build context.
    named: Option<String>,
    exclude: Option<strata_parser::ignore::Matcher>,
    parents: bool,
}

/// For `--parents`: the prefix (with its trailing `/`) a source's paths lose, which is what
/// stands before a `/./` pivot (`a/./b/c` keeps `b/c`), or nothing.
pub fn parents_pivot(source: &str) -> String {
    match source.find("/./") {
        Some(i) => {
            let before = clean_abs(&source[..i]);
            let trimmed = before.trim_start_matches('/');
            if trimmed.is_empty() {
                String::new()
            } else {
                format!("{trimmed}/")
            }
        }
        None => String::new(),
    }
}

/// Cleans an absolute path (`/a/./b/../c` → `/a/c`).
pub fn clean_abs(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Borrowed variables for the expander.
struct SliceEnv<'a>(&'a [(String, String)]);

impl strata_parser::shell::Env for SliceEnv<'_> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.0.lookup(name)
    }
}

/// A heredoc's content with `<<-` tab stripping applied.
fn heredoc_body(h: &strata_parser::node::Heredoc) -> String {
    if !h.chomp {
        return h.content.clone();
    }
    h.content
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

impl Planner<'_> {
    /// Expands `$VAR` in an unquoted heredoc body, like the shell would: quotes stay literal.
    fn expand_heredoc(
        &self,
        ins: &Instruction,
        body: &str,
        vars: &[(String, String)],
    ) -> Result<String, PlanError> {
        let lx = Lexer {
            escape: self.escape,
            raw_quotes: true,
            skip_unset: false,
        };
        lx.process_word(body, &SliceEnv(vars))
            .map(|e| e.value)
            .map_err(|e| self.err(ins, format!("heredoc: {e}")))
    }

    /// RUN with heredocs, as BuildKit does it: `RUN <<EOF` alone runs the body as a script
    /// (through its `#!` interpreter if it has one); otherwise the whole text, bodies and
    /// terminators included, goes to the shell, which reads the heredocs itself.
    fn heredoc_command(
        &self,
        b: &StageBuilder,
        ins: &Instruction,
        r: &strata_parser::instructions::Run,
    ) -> Result<Vec<String>, PlanError> {
        let CommandLine::Shell(cmd) = &r.command else {
            return Err(self.err(ins, "heredocs need the shell form of RUN"));
        };
        let mut argv = b.shell.clone();
        let only =
            r.heredocs.len() == 1 && strata_parser::grammar::heredoc_marker(cmd.trim()).is_some();
        if only {
            let script = heredoc_body(&r.heredocs[0]);
            if script.starts_with("#!") {
                // Written to a file, run, removed: the interpreter line picks the program.
                let mark = format!(
                    "STRATA_SCRIPT_{}",
                    &strata_image::Digest::of(script.as_bytes()).hex()[..12]
                );
                argv.push(format!(
                    "f=$(mktemp) && cat > \"$f\" <<'{mark}' && chmod +x \"$f\" && \"$f\"; r=$?; rm -f \"$f\"; exit $r\n{script}{}{mark}\n",
                    if script.ends_with('\n') { "" } else { "\n" }
                ));
            } else {
                argv.push(script);
            }
            return Ok(argv);
        }
        let mut full = cmd.clone();
        full.push('\n');
        for h in &r.heredocs {
            full.push_str(&h.content);
            full.push_str(&h.name);
            full.push('\n');
        }
        argv.push(full);
        Ok(argv)
    }
}
