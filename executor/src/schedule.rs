//! The build's schedule: the planner's stage graph (`BuildGraph::graph`, edge a → b when
//! stage b needs stage a) walked as it is. A stage is started as soon as the last stage it
//! needs is done (Kahn's algorithm, run concurrently), on a rayon pool; a stage whose input
//! failed is not run, and reports which input failed.
//!
//! The pool has a thread for every stage the target needs, not one per CPU: a stage spends
//! its time waiting on its RUN containers (processes of their own), so a CPU-sized pool would
//! run four independent `RUN sleep 1` stages in two seconds on a two-CPU machine instead of
//! one (`bench/run.sh fanout`). CPU-bound work inside a stage (writing a COPY's files) runs
//! on the CPU pool (`strata_image::pool`), which is sized to the machine.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

/// What a stage ended with: a value, or an error (for its dependents, which do not run).
pub(crate) type Outcome<T, E> = Option<Result<T, E>>;

/// Runs `run(stage)` for every stage in `needed`, each once every stage it needs (among
/// `needed`) has succeeded; `failed(input)` is the error of a stage whose input `input`
/// failed. Returns each stage's outcome, by stage index (None for stages not needed).
pub(crate) fn walk<T, E, R, F>(
    graph: &DiGraph<usize, ()>,
    needed: &[usize],
    run: R,
    failed: F,
) -> Vec<Outcome<T, E>>
where
    T: Send,
    E: Send,
    R: Fn(usize, &Results<T, E>) -> Result<T, E> + Sync,
    F: Fn(usize) -> E + Sync,
{
    let n = graph.node_count();
    let mut is_needed = vec![false; n];
    for &s in needed {
        is_needed[s] = true;
    }
    // The node of each stage, found once.
    let mut nodes = vec![NodeIndex::end(); n];
    for i in graph.node_indices() {
        nodes[graph[i]] = i;
    }
    // How many needed inputs each needed stage still waits for.
    let waiting: Vec<AtomicUsize> = (0..n)
        .map(|s| {
            let inputs = if is_needed[s] {
                graph
                    .neighbors_directed(nodes[s], Direction::Incoming)
                    .filter(|&i| is_needed[graph[i]])
                    .count()
            } else {
                0
            };
            AtomicUsize::new(inputs)
        })
        .collect();
    let results = Results {
        outcomes: Mutex::new((0..n).map(|_| None).collect()),
    };
    let ctx = Walk {
        graph,
        nodes: &nodes,
        is_needed: &is_needed,
        waiting: &waiting,
        results: &results,
        run: &run,
        failed: &failed,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(needed.len().max(1))
        .thread_name(|i| format!("strata-stage-{i}"))
        .build()
        .expect("a thread pool");
    pool.scope(|scope| {
        for &s in needed {
            if waiting[s].load(Ordering::SeqCst) == 0 {
                let ctx = &ctx;
                scope.spawn(move |scope| ctx.stage(s, scope));
            }
        }
    });
    results.outcomes.into_inner().expect("results lock")
}

/// The outcomes so far, for a stage to read its inputs' values.
pub(crate) struct Results<T, E> {
    outcomes: Mutex<Vec<Outcome<T, E>>>,
}

impl<T: Clone, E> Results<T, E> {
    /// The value of stage `s`, if it succeeded.
    pub(crate) fn value(&self, s: usize) -> Option<T> {
        match &self.outcomes.lock().expect("results lock")[s] {
            Some(Ok(v)) => Some(v.clone()),
            _ => None,
        }
    }
}

/// What every stage task shares.
struct Walk<'a, T, E, R, F> {
    graph: &'a DiGraph<usize, ()>,
    /// The node of each stage.
    nodes: &'a [NodeIndex],
    is_needed: &'a [bool],
    waiting: &'a [AtomicUsize],
    results: &'a Results<T, E>,
    run: &'a R,
    failed: &'a F,
}

impl<T, E, R, F> Walk<'_, T, E, R, F>
where
    T: Send,
    E: Send,
    R: Fn(usize, &Results<T, E>) -> Result<T, E> + Sync,
    F: Fn(usize) -> E + Sync,
{
    /// Runs stage `s` (unless an input failed), records its outcome, and starts every
    /// dependent whose last input this was.
    fn stage<'s>(&'s self, s: usize, scope: &rayon::Scope<'s>) {
        let node = self.nodes[s];
        let failed_input = self
            .graph
            .neighbors_directed(node, Direction::Incoming)
            .map(|i| self.graph[i])
            .filter(|&d| self.is_needed[d])
            .find(|&d| {
                !matches!(
                    self.results.outcomes.lock().expect("results lock")[d],
                    Some(Ok(_))
                )
            });
        let outcome = match failed_input {
            Some(d) => Err((self.failed)(d)),
            None => (self.run)(s, self.results),
        };
        self.results.outcomes.lock().expect("results lock")[s] = Some(outcome);
        for next in self.graph.neighbors_directed(node, Direction::Outgoing) {
            let t = self.graph[next];
            if self.is_needed[t] && self.waiting[t].fetch_sub(1, Ordering::SeqCst) == 1 {
                scope.spawn(move |scope| self.stage(t, scope));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// a → c, b → c, c → d; e unneeded.
    fn diamond() -> DiGraph<usize, ()> {
        let mut g = DiGraph::new();
        let n: Vec<_> = (0..5).map(|i| g.add_node(i)).collect();
        g.add_edge(n[0], n[2], ());
        g.add_edge(n[1], n[2], ());
        g.add_edge(n[2], n[3], ());
        g
    }

    #[test]
    fn stages_run_after_their_inputs_and_read_their_values() {
        let order = Mutex::new(Vec::new());
        let out = walk(
            &diamond(),
            &[0, 1, 2, 3],
            |s, r: &Results<usize, String>| {
                order.lock().unwrap().push(s);
                Ok(match s {
                    2 => r.value(0).unwrap() + r.value(1).unwrap() + 10,
                    3 => r.value(2).unwrap() * 2,
                    s => s + 1,
                })
            },
            |d| format!("stage {d} failed"),
        );
        let values: Vec<_> = out.into_iter().map(|o| o.map(|r| r.unwrap())).collect();
        assert_eq!(values, [Some(1), Some(2), Some(13), Some(26), None]);
        let order = order.into_inner().unwrap();
        assert_eq!(&order[2..], [2, 3]);
    }

    #[test]
    fn a_failed_input_stops_its_dependents_only() {
        let out = walk(
            &diamond(),
            &[0, 1, 2, 3],
            |s, _: &Results<usize, String>| if s == 1 { Err("boom".into()) } else { Ok(s) },
            |d| format!("stage {d} failed"),
        );
        assert_eq!(out[0], Some(Ok(0)));
        assert_eq!(out[1], Some(Err("boom".into())));
        assert_eq!(out[2], Some(Err("stage 1 failed".into())));
        assert_eq!(out[3], Some(Err("stage 2 failed".into())));
    }

    #[test]
    fn independent_stages_run_at_once_whatever_the_cpus() {
        let mut g = DiGraph::new();
        for i in 0..6 {
            g.add_node(i);
        }
        let (running, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        walk(
            &g,
            &[0, 1, 2, 3, 4, 5],
            |s, _: &Results<usize, ()>| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // Waiting, as a stage waits on its containers.
                std::thread::sleep(Duration::from_millis(200));
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(s)
            },
            |_| (),
        );
        assert_eq!(most.into_inner(), 6);
    }
}
