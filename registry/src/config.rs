//! Registry settings a command (or a build) talks to registries with: which registries are
//! insecure (plain HTTP or unverified TLS), and the tuning knobs read from the environment
//! (`STRATA_UPLOAD_CHUNK_SIZE`, `STRATA_REGISTRY_TIMEOUT`).

use std::time::Duration;

use crate::{Client, ClientOptions};

/// Registry settings shared by the commands.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    pub insecure: Vec<String>,
}

impl RegistryConfig {
    pub fn client(&self, domain: &str) -> Client {
        let mut opts = ClientOptions {
            insecure: self.insecure.clone(),
            ..ClientOptions::default()
        };
        // Tuning knob (and the way tests exercise chunked uploads).
        if let Some(n) = std::env::var("STRATA_UPLOAD_CHUNK_SIZE")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|n| *n > 0)
        {
            opts.chunk_size = n;
        }
        if let Some(t) = network_timeout() {
            opts.timeout = t;
        }
        Client::new(domain, opts)
    }
}

/// `STRATA_REGISTRY_TIMEOUT` (seconds): reads from registries and ADD downloads.
pub fn network_timeout() -> Option<Duration> {
    std::env::var("STRATA_REGISTRY_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|n| *n > 0)
        .map(Duration::from_secs)
}
