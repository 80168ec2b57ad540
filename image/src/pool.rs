//! The one pool for CPU-bound, embarrassingly parallel work (hashing context files, writing
//! and linking a COPY's files): a rayon pool with a thread per CPU, shared by the planner and
//! the executor.
//!
//! Key design decision: an explicit pool rather than rayon's global one, because parallel
//! work started from a thread of another rayon pool runs on that pool: the executor runs its
//! stages on a pool of its own (a thread per stage, sized to the plan), and a COPY's files
//! would otherwise be written one at a time on a one-stage build's one thread.

use std::sync::OnceLock;

/// The CPU pool (made on first use).
pub fn cpu() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("strata-cpu-{i}"))
            .build()
            .expect("a thread pool")
    })
}
