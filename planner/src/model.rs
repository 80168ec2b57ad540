//! The plan as the executor reads it: stages of resolved steps.
//!
//! Main types: [`BuildGraph`] (every stage, the target, and the petgraph graph of stage
//! dependencies), [`StagePlan`] (a stage's base and [`Step`]s), [`Step`] (a resolved
//! [`StepOp`] with its cache key and the [`StepKey`] it is the digest of), [`CopyOp`] and
//! [`RunMount`] (COPY/ADD and `RUN --mount` with every value expanded and every source
//! selected).
//!
//! Key design decision: everything here is resolved (variables expanded, paths absolute,
//! context files selected and hashed, stages and images named by index or ID), so the
//! executor never reads the Dockerfile's text or the build arguments.

use std::collections::{BTreeMap, BTreeSet};

use petgraph::graph::DiGraph;
use strata_image::spec::{ContainerConfig, ImageConfig};
use strata_image::Digest;
use strata_parser::grammar::Chmod;
use strata_parser::instructions::Sharing;
use strata_parser::Pos;

use crate::context::{Context, Selected};
use crate::keys::StepKey;
pub use crate::metadata::ConfigChange;

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
    pub inputs: StepKey,
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
