//! Planning: the typed AST, the build arguments and the context become a
//! [`BuildGraph`](crate::model::BuildGraph): the stages the target needs, each a list of
//! resolved steps with everything expanded and a content-hash key. Keys are computable before
//! anything runs, because they depend only on inputs (the base image ID, instructions,
//! argument values, content digests of COPY sources, and the keys of stages copied from),
//! never on outputs: so `--dry-run` can say which steps would run and why.
//!
//! One module per instruction family: [`from`] (stages and what they start from, `--from`),
//! [`config`] (ARG and the metadata instructions), [`run`] (RUN, its mounts and heredocs),
//! [`copy`] (COPY and ADD). This module holds the [`Planner`] they share and [`plan`].

mod config;
mod copy;
mod from;
mod run;

use std::collections::{BTreeMap, BTreeSet};

use petgraph::graph::DiGraph;
use strata_image::spec::{ImageConfig, Platform};
use strata_image::Digest;
use strata_parser::instructions::{CommandLine, Dockerfile, Instruction, Kind};
use strata_parser::shell::Lexer;

use crate::context::{Context, StatCache};
use crate::keys::{KeyOp, StepKey};
pub use crate::metadata::{BuildConfig, ConfigChange};
use crate::model::{BuildGraph, FetchedFile, FetchedTree, StagePlan, Step, StepOp};
use crate::PlanError;

/// The default PATH BuildKit gives images that have none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where base images and the remote sources of ADD come from (implemented by the caller:
/// the store and the network).
pub trait ImageSource {
    /// Looks up an image by the name written in FROM (or `--from`), after expansion, for
    /// `platform` (what a pull asks the registry for).
    fn lookup(
        &self,
        name: &str,
        platform: &Platform,
    ) -> Result<Option<(Digest, ImageConfig)>, String>;

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
    /// `--platform`: the platform the stages are built for (None: the host's). A stage's
    /// `FROM --platform=` chooses its own.
    pub platform: Option<Platform>,
}

impl PlanOptions {
    /// The platform stages are built for unless their FROM says otherwise.
    pub fn target_platform(&self) -> Platform {
        self.platform.clone().unwrap_or_else(Platform::host)
    }
}

/// The state of one planning pass over the Dockerfile.
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
    let automatic = automatic_args(&opts.target_platform());
    let (problems, stage_graph) =
        crate::check::analyze(file, source, df, &opts.build_args, &automatic);
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
    let stages = loop {
        let mut p = Planner {
            file,
            source,
            opts,
            images,
            context,
            stat: &mut *stat,
            named_stats: BTreeMap::new(),
            escape: df.escape,
            global_args: automatic.clone(),
            stages: Vec::new(),
            needed: &needed,
            wanted: None,
        };
        match p.stages_of(df) {
            Ok(()) => break p.stages,
            Err(e) => match p.wanted {
                Some(i) => {
                    let more = stage_graph.needed_by(i);
                    needed.extend(more);
                }
                None => return Err(e),
            },
        }
    };
    graph_of(stages, target, opts)
}

/// The stages as a graph, and the order the target needs them in.
fn graph_of(
    stages: Vec<StagePlan>,
    target: usize,
    opts: &PlanOptions,
) -> Result<BuildGraph, PlanError> {
    let mut graph = DiGraph::new();
    let nodes: Vec<_> = (0..stages.len()).map(|i| graph.add_node(i)).collect();
    for s in &stages {
        for &d in &s.deps {
            graph.add_edge(nodes[d], nodes[s.index], ());
        }
    }
    // The stages the target needs, dependencies first.
    let mut needed = BTreeSet::new();
    let mut stack = vec![target];
    while let Some(s) = stack.pop() {
        if needed.insert(s) {
            stack.extend(stages[s].deps.iter().copied());
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
        stages,
        target,
        graph,
        order,
        named_contexts: opts.named_contexts.clone(),
    })
}

/// BuildKit's automatic platform arguments: the target's (`--platform`) and the host's.
pub fn automatic_args(target: &Platform) -> Vec<(String, String)> {
    let mut args = Vec::new();
    for (prefix, p) in [("TARGET", target), ("BUILD", &Platform::host())] {
        args.extend([
            (format!("{prefix}PLATFORM"), p.to_string()),
            (format!("{prefix}OS"), p.os.clone()),
            (format!("{prefix}ARCH"), p.architecture.clone()),
            (
                format!("{prefix}VARIANT"),
                p.variant.clone().unwrap_or_default(),
            ),
        ]);
    }
    args
}

/// A stage being planned.
struct StageBuilder {
    plan: StagePlan,
    config: BuildConfig,
    /// ARGs in scope in this stage, with values.
    args: Vec<(String, String)>,
    /// The platform the stage is built for.
    platform: Platform,
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

    /// The working directory steps run in (`/` when none is set).
    fn workdir(&self) -> String {
        match self.config.get().working_dir.as_str() {
            "" => "/".to_string(),
            w => w.to_string(),
        }
    }

    /// A command as the config stores it: the exec form as written, the shell form through
    /// the stage's SHELL.
    fn command(&self, c: &CommandLine) -> Vec<String> {
        match c {
            CommandLine::Exec(v) => v.clone(),
            CommandLine::Shell(s) => {
                let mut v = self.shell.clone();
                v.push(s.clone());
                v
            }
        }
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
                    self.global_arg(ins, decls)?;
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

    /// Plans one instruction of a stage, by family.
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
            Kind::Run(r) => self.run(b, ins, r, &vars),
            Kind::Copy(c) => self.copy(b, ins, c, false, &vars),
            Kind::Add(c) => self.copy(b, ins, c, true, &vars),
            _ => self.config(b, ins, &vars),
        }
    }

    fn finish(&mut self, mut b: StageBuilder) {
        b.plan.final_config = b.config.get().clone();
        self.stages.push(b.plan);
    }

    /// Adds a step after the stage's last: its key chains from the parent's.
    fn push(
        &mut self,
        b: &mut StageBuilder,
        ins: &Instruction,
        op: StepOp,
        key: KeyOp,
        created_by: String,
    ) {
        let inputs = StepKey::step(b.parent_key(), self.opts.source_date_epoch, key);
        b.plan.steps.push(Step {
            op,
            key: inputs.digest(),
            inputs,
            created_by,
            pos: ins.pos,
            original: ins.original.clone(),
            link_key: None,
        });
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

    /// Expands an optional word.
    fn expand_opt(
        &self,
        ins: &Instruction,
        word: Option<&str>,
        vars: &[(String, String)],
    ) -> Result<Option<String>, PlanError> {
        word.map(|w| self.expand(ins, w, vars)).transpose()
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
}

/// Borrowed variables for the expander.
struct SliceEnv<'a>(&'a [(String, String)]);

impl strata_parser::shell::Env for SliceEnv<'_> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.0.lookup(name)
    }
}
