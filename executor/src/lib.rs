//! strata-executor: runs a [`BuildGraph`].
//!
//! Main types: [`Executor`] (stage threads, cache lookups, step execution, commit) and
//! [`progress::Progress`]. Each step is create → start (RUN, with the `--mount`s that
//! [`mounts`] prepares and undoes) or write (COPY/ADD; `--link` writes into an empty layer that
//! is then rebased onto the parent) → commit, unless its cache key already has a result;
//! metadata steps only change the config. `reuse` lets a context COPY hard-link the files
//! that did not change from the layer it made last time.
//!
//! Key design decisions: every step's result is an (intermediate) image recorded in the store,
//! and only then is its cache record written, so a cache hit always points at a complete image
//! and a fully cached build ends at the very same image ID. Recording (hashing the layer,
//! moving it into the store) runs on a thread per step while the next steps already run on the
//! layer's directory (`State`, `Lowers`). The planner's stage graph is the schedule
//! (`schedule`): a stage starts when the stages it needs are done, on a pool with a thread per
//! stage (RUN steps mostly wait on their containers, so parallelism is bounded by the plan,
//! not by the CPU count); containers are started by spawning the single-threaded strata
//! monitor, so no namespace is ever created from this multi-threaded process. A build for
//! several platforms runs one executor per platform at once; [`SharedWork`] lets a stage
//! or a step whose cache key is the same in two plans run once.

mod copy;
pub mod explain;
pub mod mounts;
pub mod progress;
pub mod remote_cache;
mod reuse;
mod run;
mod schedule;
pub mod sources;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Mutex;

use strata_cache::{fsutil, Image, Store};
use strata_image::layer::TarOptions;
use strata_image::spec::{self, History, ImageConfig, RootFs};
use strata_image::Digest;
use strata_planner::context::Context;
use strata_planner::metadata::{BuildConfig, ConfigChange};
use strata_planner::model::{Base, BuildGraph, CopyFrom, StagePlan, Step, StepOp};
use strata_runtime::container::{new_id, ContainerRecord, Containers, HostConfig, RunConfig};
use strata_runtime::RuntimeError;

use progress::Progress;
use run::RunSpec;

/// Build failures. Step failures carry where the instruction is written.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{file}:{line}: {instruction}: {message}")]
    Step {
        file: String,
        line: usize,
        col: usize,
        instruction: String,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] strata_cache::StoreError),
    #[error(transparent)]
    Runtime(#[from] strata_runtime::RuntimeError),
    #[error("{0}")]
    Other(String),
}

/// Options for a run of the executor.
pub struct ExecOptions {
    pub no_cache: bool,
    /// `--no-cache-filter`: stages (by name or index) whose steps are always rebuilt.
    pub no_cache_stages: Vec<String>,
    pub file: String,
    /// `SOURCE_DATE_EPOCH`: times in new layers and configs are clamped to it.
    pub source_date_epoch: Option<i64>,
    /// `--secret` and `--ssh`, for `RUN --mount=type=secret|ssh`.
    pub secrets: mounts::BuildSecrets,
    /// `--ulimit`, for RUN steps.
    pub ulimits: Vec<strata_runtime::container::Ulimit>,
    /// How RUN steps run (and so how layers are read and written: mounted, or copied).
    pub isolation: strata_runtime::chroot::Isolation,
    /// Named in every progress line (`[linux/arm64 build 2/5]`) when several platforms'
    /// builds run at once.
    pub platform_label: Option<String>,
}

/// Work the executors of one several-platform build (one per platform, run at once) share:
/// - a stage whose last step has the same cache key in two plans (a `--platform=$BUILDPLATFORM`
///   stage that does not read the target's arguments) makes the same image: it runs once and
///   the other executor waits for its result;
/// - a step whose key is in two plans (say `RUN go mod download` before `ARG TARGETARCH` in a
///   `$BUILDPLATFORM` stage) runs in one executor at a time, which records it before letting
///   go, so the next finds it in the cache.
#[derive(Default)]
pub struct SharedWork {
    stages: Mutex<BTreeMap<Digest, StageCell>>,
    /// The step keys of more than one plan, each with its gate: held while the step runs and
    /// is recorded, and true once an executor of this build recorded it.
    steps: BTreeMap<Digest, Mutex<bool>>,
}

/// A shared stage's result, set by the executor that runs it.
type StageCell = std::sync::Arc<std::sync::OnceLock<Result<Image, String>>>;

impl SharedWork {
    /// What the plans of one build (one per platform) may share.
    pub fn new(graphs: &[&BuildGraph]) -> SharedWork {
        let mut plans_with: BTreeMap<&Digest, usize> = BTreeMap::new();
        for g in graphs {
            let keys: std::collections::BTreeSet<&Digest> = g
                .order
                .iter()
                .flat_map(|&s| g.stages[s].steps.iter().map(|st| &st.key))
                .collect();
            for k in keys {
                *plans_with.entry(k).or_default() += 1;
            }
        }
        SharedWork {
            stages: Mutex::default(),
            steps: plans_with
                .into_iter()
                .filter(|(_, n)| *n > 1)
                .map(|(k, _)| (k.clone(), Mutex::new(false)))
                .collect(),
        }
    }

    fn stage(&self, key: &Digest) -> StageCell {
        self.stages
            .lock()
            .expect("shared stages lock")
            .entry(key.clone())
            .or_default()
            .clone()
    }
}

/// A cache beyond the store (a registry, `--cache-from`), asked when a key misses locally.
pub trait RemoteCache: Sync {
    /// Brings the image the remote cache holds for `key` into the store; its ID, or None.
    fn fetch(&self, store: &Store, key: &Digest) -> Result<Option<Digest>, String>;
}

/// Runs build graphs against a store.
pub struct Executor<'a> {
    /// Consulted after the store's own cache misses.
    pub remote_cache: Option<&'a dyn RemoteCache>,
    pub store: &'a Store,
    pub context: &'a Context,
    pub graph: &'a BuildGraph,
    pub opts: ExecOptions,
    pub progress: &'a Progress,
    /// Stages and steps shared with the other executors of a several-platform build.
    pub shared: Option<&'a SharedWork>,
    /// The strata binary to start containers with (the read-only view of ourselves), made
    /// when the first RUN step needs it: a fully cached build never does.
    pub exe: std::sync::OnceLock<PathBuf>,
}

/// Where a stage stands: its last recorded image, or the step results still being recorded
/// after it.
///
/// A step that wrote a layer is recorded by a thread of its own (scoped to the stage): the
/// layer is hashed (its diffID names it) while the next steps already run on top of its
/// directory, then moved into the store and recorded as an image and a cache record — as soon
/// as the step before it is recorded, so results are recorded in order and each within
/// moments of its step, even if the build is killed later.
struct State {
    image: Image,
    /// The config after the steps so far (each step's [`ConfigChange`] applied).
    config: BuildConfig,
    /// The history entries (`created_by`) of metadata steps not recorded yet: the next
    /// recorded step's image carries them (see [`StagePlan::records`]).
    folded: Vec<String>,
    /// The last pending step's result, when steps are pending.
    tail: Option<Receiver<Result<Image, String>>>,
    /// The pending steps' layer directories as made (in `tmp/`), for `settle` to remove what
    /// was not moved into the store.
    pending: Vec<PathBuf>,
}

/// Where the pending steps' layer directories are now, bottom first: what the next step runs
/// on above the state's image. A recording thread moves its directory into the store and
/// updates its entry with the lock held, and a step holds the lock from reading the list until
/// its overlay is mounted, so no directory moves between being named and being mounted.
pub(crate) type Lowers = Mutex<Vec<PathBuf>>;

/// What a step left to record.
struct Outcome {
    /// Its layer directory (overlay form), if it writes a layer.
    layer: Option<PathBuf>,
    config: spec::ContainerConfig,
    /// History entries of the metadata steps folded into this one, before its own.
    folded: Vec<String>,
    empty: bool,
    /// A context COPY's reuse record (site, files), saved once its layer has a chain ID.
    reuse: Option<(String, BTreeMap<String, Digest>)>,
}

type Scope<'scope, 'env> = std::thread::Scope<'scope, 'env>;

/// The stages' outcomes as the schedule keeps them (a failed stage's error as text).
type Results = schedule::Results<Image, String>;

impl Executor<'_> {
    /// Runs every stage the target needs, each as soon as the stages it needs are done
    /// (`schedule`); returns the target's image.
    pub fn run(&self) -> Result<Image, BuildError> {
        let _lease = self.store.lease()?;
        let first_error: Mutex<Option<BuildError>> = Mutex::new(None);
        let mut outcomes = schedule::walk(
            &self.graph.graph,
            &self.graph.order,
            |s, results| {
                let stage = &self.graph.stages[s];
                let run = || {
                    self.run_stage(stage, results).map_err(|e| {
                        let text = e.to_string();
                        first_error.lock().expect("error lock").get_or_insert(e);
                        text
                    })
                };
                match (self.shared, stage.steps.last()) {
                    (Some(shared), Some(last)) => shared.stage(&last.key).get_or_init(run).clone(),
                    _ => run(),
                }
            },
            |d| format!("stage {} failed", self.graph.stages[d].display_name()),
        );
        if let Some(e) = first_error.into_inner().expect("error lock") {
            return Err(e);
        }
        match outcomes[self.graph.target].take() {
            Some(Ok(img)) => Ok(img),
            Some(Err(e)) => Err(BuildError::Other(e)),
            None => Err(BuildError::Other("the target stage did not run".into())),
        }
    }

    fn result_of(&self, results: &Results, s: usize) -> Result<Image, BuildError> {
        results
            .value(s)
            .ok_or_else(|| BuildError::Other(format!("stage {s} has no result")))
    }

    fn now(&self) -> String {
        match self.opts.source_date_epoch {
            Some(t) => fsutil::rfc3339_from_unix(t),
            None => fsutil::now_rfc3339(),
        }
    }

    fn base_image(&self, stage: &StagePlan, results: &Results) -> Result<Image, BuildError> {
        match &stage.base {
            Base::Image { id, .. } => Ok(self.store.image(id)?),
            Base::Stage(i) => self.result_of(results, *i),
            Base::Scratch => {
                // An empty image: deterministic config, no layers, so always the same ID.
                let cfg = ImageConfig {
                    architecture: stage.base_config.architecture.clone(),
                    os: "linux".into(),
                    rootfs: RootFs::default(),
                    ..Default::default()
                };
                Ok(self
                    .store
                    .put_image(&spec::to_canonical_json(&cfg), None, Vec::new())?)
            }
        }
    }

    fn run_stage(&self, stage: &StagePlan, results: &Results) -> Result<Image, BuildError> {
        let lowers = Lowers::default();
        std::thread::scope(|scope| self.run_steps(stage, results, &lowers, scope))
    }

    fn run_steps<'scope, 'env>(
        &'env self,
        stage: &'env StagePlan,
        results: &'env Results,
        lowers: &'env Lowers,
        scope: &'scope Scope<'scope, 'env>,
    ) -> Result<Image, BuildError> {
        let total = stage.steps.len() + 1;
        let platform = self
            .opts
            .platform_label
            .as_ref()
            .map(|p| format!("{p} "))
            .unwrap_or_default();
        let label = |i: usize| format!("[{platform}{} {}/{}]", stage.display_name(), i, total);
        let base_name = match &stage.base {
            Base::Image { name, .. } => name.clone(),
            Base::Stage(i) => self.graph.stages[*i].display_name(),
            Base::Scratch => "scratch".into(),
        };
        let v = self
            .progress
            .start(&format!("{} FROM {base_name}", label(1)));
        let mut state = State {
            image: self.base_image(stage, results)?,
            config: BuildConfig::new(stage.start_config.clone()),
            folded: Vec::new(),
            tail: None,
            pending: Vec::new(),
        };
        v.done();
        // Whether the recorded step a run of metadata steps is folded into has a result.
        let mut folded_into: Option<(usize, bool)> = None;
        let recorded_with = stage.recorded_with();
        for (i, step) in stage.steps.iter().enumerate() {
            let v = self
                .progress
                .start(&format!("{} {}", label(i + 2), step.original.trim()));
            if let StepOp::Config(change) = &step.op {
                state.config.apply(change);
            }
            if !stage.records(i) {
                state.folded.push(step.created_by.clone());
                let j = recorded_with[i];
                let hit = match folded_into {
                    Some((k, hit)) if k == j => hit,
                    _ => {
                        let hit = !self.skips_cache(stage)
                            && self.store.cache_get(&stage.steps[j].key)?.is_some();
                        folded_into = Some((j, hit));
                        hit
                    }
                };
                if hit {
                    v.cached();
                } else {
                    self.remember_inputs(step);
                    v.done();
                }
                continue;
            }
            // A step another plan shares: one executor at a time runs and records it.
            let mut gate = self
                .shared
                .and_then(|s| s.steps.get(&step.key))
                .map(|g| g.lock().unwrap_or_else(|e| e.into_inner()));
            let recorded_by_other = gate.as_deref().copied().unwrap_or(false);
            if !self.skips_cache(stage) || recorded_by_other {
                if let Some(rec) = self.store.cache_get(&step.key)? {
                    self.settle(&mut state, lowers)?;
                    if let Some(img) = self.store.cache_image(&rec, Some(state.image.id()))? {
                        let _ = self.store.cache_touch(&rec);
                        state.image = img;
                        state.folded.clear();
                        v.cached();
                        continue;
                    }
                }
                if self.remote_cache.is_some() || step.link_key.is_some() {
                    // Both make an image on top of the state's.
                    self.settle(&mut state, lowers)?;
                }
                if let Some(img) = self.remote_hit(step, &state)? {
                    state.image = img;
                    state.folded.clear();
                    v.cached();
                    continue;
                }
                if let Some(img) = self.link_hit(step, &mut state)? {
                    state.image = img;
                    v.cached();
                    continue;
                }
            }
            let last = i + 1 == stage.steps.len();
            let outcome = self
                .execute(step, &mut state, results, lowers, &v)
                .and_then(|o| match o {
                    Some(o) => self.defer(&mut state, step, o, lowers, scope),
                    None => Ok(()),
                })
                // The stage's last step stays on screen while what is left is recorded (a
                // large layer's hash takes a while, with nothing else running).
                .and_then(|_| {
                    if last || gate.is_some() {
                        self.settle(&mut state, lowers)
                    } else {
                        Ok(())
                    }
                });
            match outcome {
                Ok(()) => {
                    if let Some(recorded) = gate.as_deref_mut() {
                        *recorded = true;
                    }
                    v.done()
                }
                Err(e) => {
                    v.error(&e.to_string());
                    // The steps before this one are done: they are recorded for the next build.
                    if let Err(settling) = self.settle(&mut state, lowers) {
                        tracing::warn!("recording the steps before the failed one: {settling}");
                    }
                    return Err(e);
                }
            }
        }
        // The last step (or a cache hit) settled the stage already.
        debug_assert!(state.tail.is_none());
        Ok(state.image)
    }

    /// Waits until the pending steps are recorded; the state's image is the last one's then.
    fn settle(&self, state: &mut State, lowers: &Lowers) -> Result<(), BuildError> {
        let recorded = state.tail.take().map(recorded);
        lock(lowers).clear();
        // What was not moved into the store (a failure, or a layer another build made first).
        for dir in state.pending.drain(..) {
            let _ = fsutil::remove_any(&dir);
        }
        if let Some(img) = recorded {
            state.image = img?;
        }
        Ok(())
    }

    /// Hands a step's outcome to a recording thread, chained after the pending steps'. A clamped
    /// (SOURCE_DATE_EPOCH) layer is copied through the tar codec instead, at once.
    fn defer<'scope, 'env>(
        &'env self,
        state: &mut State,
        step: &'env Step,
        o: Outcome,
        lowers: &'env Lowers,
        scope: &'scope Scope<'scope, 'env>,
    ) -> Result<(), BuildError> {
        if let (Some(dir), Some(_)) = (o.layer.clone(), self.opts.source_date_epoch) {
            self.settle(state, lowers)?;
            let reuse = o.reuse.clone();
            let img = self.commit(&state.image, step, &dir, o)?;
            self.record(step, &img, reuse)?;
            state.image = img;
            return Ok(());
        }
        let slot = o.layer.as_ref().map(|dir| {
            state.pending.push(dir.clone());
            let mut l = lock(lowers);
            l.push(dir.clone());
            l.len() - 1
        });
        let before = state.tail.take();
        let base = state.image.clone();
        let (tx, rx) = channel();
        state.tail = Some(rx);
        scope.spawn(move || {
            let recorded = self.record_outcome(step, o, slot.map(|k| (lowers, k)), before, base);
            let _ = tx.send(recorded.map_err(|e| e.to_string()));
        });
        Ok(())
    }

    /// A recording thread: hashes the step's layer, waits for the step before it to be
    /// recorded (`before`, or `base` when nothing was pending), then records this one.
    fn record_outcome(
        &self,
        step: &Step,
        o: Outcome,
        slot: Option<(&Lowers, usize)>,
        before: Option<Receiver<Result<Image, String>>>,
        base: Image,
    ) -> Result<Image, BuildError> {
        let hashed = o
            .layer
            .as_ref()
            .map(|dir| Store::hash_layer_dir(dir, &TarOptions::default()));
        // A directory that is not moved into the store is removed by `settle`: later steps
        // may be running on it.
        let parent = before.map_or(Ok(base), recorded)?;
        let diff_id = match (&o.layer, hashed.transpose()?, slot) {
            (Some(dir), Some((diff_id, size)), Some((lowers, k))) => {
                let mut l = lock(lowers);
                let meta = self
                    .store
                    .publish_layer_dir(parent.top_layer(), dir, diff_id, size)?;
                if !dir.exists() {
                    l[k] = self.store.layer_diff(&meta.chain_id);
                }
                Some(meta.diff_id)
            }
            _ => None,
        };
        let reuse = o.reuse.clone();
        let img = self.commit_diff(&parent, step, diff_id, o)?;
        self.record(step, &img, reuse)?;
        Ok(img)
    }

    /// A step's result is known: its cache record, the inputs `--dry-run` compares with, and
    /// for a context COPY what the next run of it may link.
    fn record(
        &self,
        step: &Step,
        img: &Image,
        reuse: Option<(String, BTreeMap<String, Digest>)>,
    ) -> Result<(), BuildError> {
        if let (Some((site, files)), Some(layer)) = (reuse, img.top_layer()) {
            self.store.set_reuse_hint(&site, layer, files);
        }
        self.store.cache_put(&step.key, img.id())?;
        self.remember_inputs(step);
        Ok(())
    }

    /// `--no-cache`, or `--no-cache-filter` naming this stage.
    fn skips_cache(&self, stage: &StagePlan) -> bool {
        self.opts.no_cache
            || self.opts.no_cache_stages.iter().any(|f| {
                stage.name.as_deref() == Some(f.to_lowercase().as_str())
                    || f.parse::<usize>().ok() == Some(stage.index)
            })
    }

    /// `COPY --link` whose layer is known (only earlier steps changed): the layer is put on
    /// the new parent without running the copy again.
    fn link_hit(&self, step: &Step, state: &mut State) -> Result<Option<Image>, BuildError> {
        let Some(link_key) = &step.link_key else {
            return Ok(None);
        };
        let Some(rec) = self.store.cache_get(link_key)? else {
            return Ok(None);
        };
        let Some(layer_image) = self.store.cache_image(&rec, None)? else {
            return Ok(None);
        };
        let _ = self.store.cache_touch(&rec);
        let img = self.rebase(state, step, &layer_image)?;
        self.store.cache_put(&step.key, img.id())?;
        self.remember_inputs(step);
        Ok(Some(img))
    }

    /// Puts the single layer of `layer_image` (a `--link` result) on top of the state's image
    /// (with the metadata steps folded into this one).
    fn rebase(
        &self,
        state: &mut State,
        step: &Step,
        layer_image: &Image,
    ) -> Result<Image, BuildError> {
        let chain = layer_image
            .top_layer()
            .ok_or_else(|| BuildError::Other("a --link result without its layer".into()))?;
        // Through the codec: the layer's tar, hence its diffID, is the same on any parent.
        let layer = self.store.add_layer_from_dir(
            state.image.top_layer(),
            &self.store.layer_diff(chain),
            false,
            &TarOptions::default(),
        )?;
        let o = Outcome {
            layer: None,
            config: state.config.get().clone(),
            folded: std::mem::take(&mut state.folded),
            empty: false,
            reuse: None,
        };
        self.commit_diff(&state.image, step, Some(layer.diff_id), o)
    }

    /// Commits a `--link` copy's directory as a layer of its own (recorded under the step's
    /// link key as a one-layer image), then rebases it onto the parent.
    fn commit_link(
        &self,
        state: &mut State,
        step: &Step,
        upper: &Path,
    ) -> Result<Image, BuildError> {
        let opts = TarOptions {
            clamp_mtime: self.opts.source_date_epoch,
        };
        let layer = self.store.add_layer_from_dir(None, upper, true, &opts);
        let _ = fsutil::remove_any(upper);
        let layer = layer?;
        let parent = &state.image.config;
        let cfg = spec::ImageConfig {
            architecture: parent.architecture.clone(),
            os: parent.os.clone(),
            created: Some(self.now()),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![layer.diff_id.clone()],
            },
            history: vec![History {
                created: Some(self.now()),
                created_by: Some(step.created_by.clone()),
                comment: Some("buildkit.dockerfile.v0".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let layer_image = self
            .store
            .put_image(&spec::to_canonical_json(&cfg), None, Vec::new())?;
        if let Some(k) = &step.link_key {
            self.store.cache_put(k, layer_image.id())?;
        }
        self.rebase(state, step, &layer_image)
    }

    /// A step's result from the remote cache, recorded locally so the next build hits at home.
    fn remote_hit(&self, step: &Step, state: &State) -> Result<Option<Image>, BuildError> {
        let Some(remote) = self.remote_cache else {
            return Ok(None);
        };
        let fetched = remote
            .fetch(self.store, &step.key)
            .map_err(|e| self.step_error(step, format!("cache import: {e}")))?;
        let Some(id) = fetched else {
            return Ok(None);
        };
        let img = self.store.image(&id)?;
        // The image's parent is this build's previous step, as if it had been built here.
        let img = self
            .store
            .put_image(&img.config_bytes, Some(state.image.id()), Vec::new())?;
        self.store.cache_put(&step.key, img.id())?;
        Ok(Some(img))
    }

    fn step_error(&self, step: &Step, message: String) -> BuildError {
        BuildError::Step {
            file: self.opts.file.clone(),
            line: step.pos.line,
            col: step.pos.col,
            instruction: step.original.trim().chars().take(80).collect(),
            message,
        }
    }

    /// Runs a step that missed the cache; returns what is left to record (None: it is recorded
    /// already).
    fn execute(
        &self,
        step: &Step,
        state: &mut State,
        results: &Results,
        lowers: &Lowers,
        v: &progress::Vertex<'_>,
    ) -> Result<Option<Outcome>, BuildError> {
        let outcome = |state: &mut State, layer: Option<PathBuf>| Outcome {
            empty: layer.is_none(),
            layer,
            config: state.config.get().clone(),
            folded: std::mem::take(&mut state.folded),
            reuse: None,
        };
        match &step.op {
            StepOp::Config(ConfigChange::Workdir(dir)) => {
                let made = copy::make_workdir(
                    self.store,
                    &state.image,
                    lowers,
                    dir,
                    &state.config.get().user,
                    self.opts.isolation,
                )
                .map_err(|e| self.step_error(step, e))?;
                Ok(Some(outcome(state, made)))
            }
            StepOp::Config(_) => Ok(Some(outcome(state, None))),
            StepOp::Run {
                argv,
                env,
                user,
                workdir,
                network,
                mounts,
                insecure,
            } => {
                let chroot = self.opts.isolation == strata_runtime::chroot::Isolation::Chroot;
                if chroot && !mounts.is_empty() {
                    return Err(self.step_error(
                        step,
                        "RUN --mount needs mounts, which --isolation chroot does without".into(),
                    ));
                }
                if !mounts.is_empty() {
                    // Mount stubs are judged against the layers in the store.
                    self.settle(state, lowers)?;
                }
                let image_of = |from: &CopyFrom| -> Result<Image, String> {
                    match from {
                        CopyFrom::Context | CopyFrom::Named(_) => {
                            Err("a context is not an image".into())
                        }
                        CopyFrom::Stage(i) => {
                            self.result_of(results, *i).map_err(|e| e.to_string())
                        }
                        CopyFrom::Image(id) => self.store.image(id).map_err(|e| e.to_string()),
                    }
                };
                let prepared = mounts::prepare(
                    self.store,
                    self.context,
                    self.graph,
                    &self.opts.secrets,
                    mounts,
                    &image_of,
                )
                .map_err(|e| self.step_error(step, e))?;
                let run = RunSpec {
                    argv,
                    env,
                    user,
                    workdir,
                    network,
                    privileged: *insecure,
                    mounts: &prepared,
                };
                let upper = if chroot {
                    self.run_chrooted(state, step, &run, lowers, v)?
                } else {
                    self.run_container(state, step, &run, lowers, v)?
                };
                mounts::remove_mount_stubs(self.store, &state.image, &upper, &prepared.targets);
                drop(prepared);
                Ok(Some(outcome(state, Some(upper))))
            }
            StepOp::Copy(op) => {
                if op.link {
                    // A linked copy is rebased onto the parent image.
                    self.settle(state, lowers)?;
                }
                let from = match &op.from {
                    CopyFrom::Context | CopyFrom::Named(_) => None,
                    CopyFrom::Stage(i) => Some(self.result_of(results, *i)?),
                    CopyFrom::Image(id) => Some(self.store.image(id)?),
                };
                let ctx = self.graph.context_for(self.context, &op.from);
                // Unchanged context files are linked from this COPY's previous layer; not for
                // clamped (SOURCE_DATE_EPOCH) builds, whose layers hold other mtimes.
                let site = (matches!(op.from, CopyFrom::Context | CopyFrom::Named(_))
                    && !op.link
                    && self.opts.source_date_epoch.is_none())
                .then(|| reuse::site(&ctx.root, &self.opts.file, &step.created_by));
                let earlier = site.as_deref().and_then(|s| reuse::load(self.store, s));
                let copied = copy::copy_step(
                    self.store,
                    self.opts.isolation,
                    ctx,
                    &state.image,
                    lowers,
                    op,
                    from.as_ref(),
                    earlier.as_ref(),
                )
                .map_err(|e| self.step_error(step, e))?;
                if op.link {
                    let img = self.commit_link(state, step, &copied.upper)?;
                    self.record(step, &img, None)?;
                    state.image = img;
                    return Ok(None);
                }
                Ok(Some(Outcome {
                    reuse: site.zip(copied.files),
                    ..outcome(state, Some(copied.upper))
                }))
            }
        }
    }

    /// A new image: the parent plus a layer from `upper` (copied through the tar codec, so
    /// clamped times apply), with the outcome's config and history entries.
    fn commit(
        &self,
        parent: &Image,
        step: &Step,
        upper: &Path,
        o: Outcome,
    ) -> Result<Image, BuildError> {
        let opts = TarOptions {
            clamp_mtime: self.opts.source_date_epoch,
        };
        let layer = self
            .store
            .add_layer_from_dir(parent.top_layer(), upper, true, &opts);
        let _ = fsutil::remove_any(upper);
        self.commit_diff(parent, step, Some(layer?.diff_id), o)
    }

    /// The image of `parent` plus the layer `diff_id` (already in the store on top of it), with
    /// the outcome's config, the history entries of the metadata steps folded into this step,
    /// and its own.
    fn commit_diff(
        &self,
        parent: &Image,
        step: &Step,
        diff_id: Option<Digest>,
        o: Outcome,
    ) -> Result<Image, BuildError> {
        let mut cfg = parent.config.clone();
        let mut diff_ids = cfg.rootfs.diff_ids.clone();
        diff_ids.extend(diff_id);
        cfg.config = Some(o.config);
        let now = self.now();
        cfg.rootfs = RootFs {
            kind: "layers".into(),
            diff_ids,
        };
        cfg.created = Some(now.clone());
        let entry = |created_by: String, empty_layer: bool| History {
            created: Some(now.clone()),
            created_by: Some(created_by),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer,
            ..Default::default()
        };
        for created_by in o.folded {
            cfg.history.push(entry(created_by, true));
        }
        cfg.history.push(entry(step.created_by.clone(), o.empty));
        Ok(self.store.put_image(
            &spec::to_canonical_json(&cfg),
            Some(parent.id()),
            Vec::new(),
        )?)
    }
}

/// What a recording thread sent: the step's image, or why it could not be recorded.
fn recorded(rx: Receiver<Result<Image, String>>) -> Result<Image, BuildError> {
    rx.recv()
        .map_err(|_| BuildError::Other("a step's recording thread stopped".into()))?
        .map_err(BuildError::Other)
}

/// The lock, also when a thread that held it panicked (the list is still consistent: it is
/// only ever pushed to, cleared, or has one entry replaced).
pub(crate) fn lock(lowers: &Lowers) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
    lowers
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
