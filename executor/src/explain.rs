//! Why a step misses the cache (`build --dry-run`): its key compared, field by field, with
//! the key of the last step built at the same place, and for a COPY the source files that
//! changed.

use strata_cache::Store;
use strata_planner::context::Context;
use strata_planner::keys::{source_rows, KeyOp};
use strata_planner::model::{BuildGraph, Step, StepOp};

/// Why a step has no cache result: compares its inputs with those of the last build that ran
/// a step at the same place.
pub fn explain_miss(store: &Store, graph: &BuildGraph, context: &Context, step: &Step) -> String {
    let Some(prev) = crate::last_inputs(store, step) else {
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
    match (&step.op, crate::last_rows(store, step)) {
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
