//! strata-registry: the OCI distribution client.
//!
//! Main types: [`client::Client`] (one registry: auth, redirects, retries, capped reads),
//! [`pull::pull`] and [`push::push`] (whole images), [`pull::pull_platforms`] and
//! [`push::push_index`] (several platforms' images under one index), [`auth`] (Docker's `config.json`
//! credentials and helpers), [`remote`] (the URLs and git repositories of `ADD`) and
//! [`Progress`] (per-layer events for the CLI to draw).
//!
//! Key design decision: nothing a registry sends is trusted. Every manifest and config is read
//! under a size cap and checked against its digest before it is parsed; every layer is
//! verified (compressed digest, size, and diffID) in the same single pass that unpacks it into
//! a staging directory, and only verified content enters the store, bottom layer first.

pub mod auth;
pub mod cache;
pub mod client;
pub mod config;
pub mod pull;
pub mod push;
pub mod remote;
mod tls;

use strata_cache::StoreError;
use strata_image::spec::{Platform, SpecError};
use strata_image::Digest;

pub use client::{Client, ClientOptions};

/// Errors talking to a registry. Messages are one line and name the registry, repository or
/// digest concerned.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Auth(String),
    #[error("{0}")]
    Transport(String),
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    Status(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Integrity(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// What happens to one layer (or config) during a pull or push, for progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerEvent {
    /// Queued; `size` compressed bytes.
    Waiting { size: u64 },
    /// Already present (locally for pull, in the registry for push).
    Exists,
    /// Bytes moved so far.
    Transferring { done: u64, total: u64 },
    /// Mounted from another repository of the same registry (push).
    Mounted { from: String },
    /// Done: downloaded and unpacked, or uploaded.
    Complete,
}

/// Receives layer events; called from worker threads.
pub trait Progress: Sync {
    fn layer(&self, digest: &Digest, event: LayerEvent);
}

/// Progress that is not shown.
pub struct NoProgress;

impl Progress for NoProgress {
    fn layer(&self, _: &Digest, _: LayerEvent) {}
}

/// Runs `f` on every item from at most `workers` threads. After the first error no new item
/// is started (those under way finish) and that error is returned.
pub(crate) fn for_each_parallel<T: Sync>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> Result<(), RegistryError> + Sync,
) -> Result<(), RegistryError> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers.min(items.len()) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                if k >= items.len() || failed.load(Ordering::SeqCst) {
                    return;
                }
                if let Err(e) = f(&items[k]) {
                    failed.store(true, Ordering::SeqCst);
                    first_error.lock().expect("error").get_or_insert(e);
                    return;
                }
            });
        }
    });
    match first_error.into_inner().expect("error") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Parses `os/arch[/variant]` as in `--platform linux/amd64`.
pub fn parse_platform(s: &str) -> Result<Platform, String> {
    Platform::parse(s)
}

/// Whether an index entry's platform fits the wanted one (a missing variant matches any).
pub fn platform_matches(want: &Platform, have: &Platform) -> bool {
    want.is_met_by(have)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_parsing_normalizes_and_refuses_junk() {
        let p = parse_platform("linux/x86_64").unwrap();
        assert_eq!(
            (p.os.as_str(), p.architecture.as_str(), p.variant),
            ("linux", "amd64", None)
        );
        let p = parse_platform("linux/arm/v7").unwrap();
        assert_eq!(p.variant.as_deref(), Some("v7"));
        for bad in [
            "",
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "linux/am d64",
        ] {
            assert!(parse_platform(bad).is_err(), "{bad:?} accepted");
        }
    }
}
