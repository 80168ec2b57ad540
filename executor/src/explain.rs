//! Why a step misses the cache (`build --dry-run`): its key compared, field by field, with
//! the key of the last step built at the same place, and for a COPY the source files that
//! changed; and where the last build's key inputs (and a context COPY's source rows) are
//! remembered for that, a build hint of the store (`strata_cache::hints`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use strata_cache::Store;
use strata_planner::context::Context;
use strata_planner::keys::{source_rows, KeyOp};
use strata_planner::model::{BuildGraph, CopyFrom, Step, StepOp};

use crate::Executor;

/// Why a step has no cache result: compares its inputs with those of the last build that ran
/// a step at the same place.
pub fn explain_miss(store: &Store, graph: &BuildGraph, context: &Context, step: &Step) -> String {
    let Some(prev) = last_inputs(store, step) else {
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
fn changed_sources(store: &Store, graph: &BuildGraph, context: &Context, step: &Step) -> String {
    match (&step.op, last_rows(store, step)) {
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

/// Where the inputs of the last build of a step at the same place are remembered, for
/// `--dry-run` explanations (keyed by the step's position, not its content): a build hint of
/// the store (`strata_cache::hints`).
pub(crate) fn position_path(store: &Store, step: &Step) -> PathBuf {
    let place = format!(
        "{}\0{}",
        step.pos.line,
        step.original.split_whitespace().next().unwrap_or("")
    );
    store.step_hint_path(&place)
}

/// The inputs recorded for the last build of a step at this place, if any.
pub fn last_inputs(store: &Store, step: &Step) -> Option<strata_planner::keys::StepKey> {
    let bytes = std::fs::read(position_path(store, step)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl Executor<'_> {
    /// Remembers a step's inputs for `--dry-run` explanations, and for a context COPY the
    /// rows of its sources (one JSON array per line, `.rows` beside).
    pub(crate) fn remember_inputs(&self, step: &Step) {
        let p = position_path(self.store, step);
        if let StepOp::Copy(op) = &step.op {
            if matches!(op.from, CopyFrom::Context | CopyFrom::Named(_)) {
                let ctx = self.graph.context_for(self.context, &op.from);
                self.store.replace_hint(&rows_path(&p), |w| {
                    for row in strata_planner::keys::source_rows(ctx, &op.selected) {
                        serde_json::to_writer(&mut *w, &row)?;
                        w.write_all(b"\n")?;
                    }
                    Ok(())
                });
            }
        }
        self.store.replace_hint(&p, |w| {
            serde_json::to_writer(w, &step.inputs).map_err(std::io::Error::from)
        });
    }
}

fn rows_path(inputs: &Path) -> PathBuf {
    inputs.with_extension("rows")
}

/// One row of [`strata_planner::keys::source_rows`], as read back.
pub type SourceRow = (usize, String, String, u32, Option<String>);

/// The source rows recorded for the last build of a context COPY at this place, by the path
/// each lands at.
pub fn last_rows(store: &Store, step: &Step) -> Option<HashMap<String, SourceRow>> {
    let f = std::fs::File::open(rows_path(&position_path(store, step))).ok()?;
    let mut out = HashMap::new();
    for line in BufReader::new(f).lines() {
        let row: SourceRow = serde_json::from_str(&line.ok()?).ok()?;
        out.insert(row.1.clone(), row);
    }
    Some(out)
}
