//! strata-planner: a Dockerfile AST, build arguments and a context become a build graph.
//!
//! Main types: [`model::BuildGraph`] (stages, their dependency graph in petgraph, and the order
//! the target needs), [`model::Step`] (a resolved RUN, COPY/ADD or metadata change with its
//! content-hash cache key), [`keys::StepKey`] (what a key covers, one typed struct per kind of
//! step), [`context::Context`] (the build context walked once, with
//! `.dockerignore` applied, and a [`context::StatCache`] so unchanged files are not re-read),
//! and [`check::check`] (whole-file checks BuildKit makes before building).
//!
//! Key design decision: a step's key is sha256 over a versioned canonical encoding of its
//! inputs only (`strata.cache.v1`: parent key, base image ID, the expanded instruction, env,
//! user, workdir, network, content digests of COPY sources, keys of stages copied from), never
//! its outputs, so the whole plan, keys included, exists before anything runs.

pub mod check;
pub mod context;
pub mod keys;
pub mod metadata;
pub mod model;
pub mod paths;
pub mod plan;

/// Planning errors.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Parse(#[from] strata_parser::ParseError),
    #[error("{0}")]
    Context(String),
    #[error("{0}")]
    Invalid(String),
}
