//! strata-planner: Dockerfile AST + build args + context → a build graph.
//!
//! Main entry points: [`check::check`] (the whole-file checks BuildKit makes before building).

pub mod check;
