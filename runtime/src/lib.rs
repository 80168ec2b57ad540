//! strata-runtime: containers with real Linux isolation, for `run`/`exec` and build RUN steps.
//!
//! Main types: [`container::Containers`] / [`container::ContainerRecord`] / [`container::State`]
//! (records in the store and the lifecycle), [`monitor`] (the per-container monitor that
//! starts the container and records its exit), [`init`] (the container-side setup: overlay
//! root, Docker's mounts, pivot_root, user, capabilities, seccomp, exec), [`exec`] (joining a
//! running container), [`netns`] (the network namespace, made meanwhile by another process),
//! [`handoff`] (a foreground run's exec into the monitor while a child writes the record),
//! [`attach`] (clients joined to a running container's stdio through its monitor's socket),
//! [`chroot`] (build RUN steps without namespaces, for builds inside unprivileged containers),
//! [`cgroup`] (v1 and v2), [`caps`], [`seccomp`] (Docker's profile compiled to a range search
//! tree of classic BPF).
//!
//! Key design decision: every container start and every exec goes through a fresh,
//! single-threaded re-exec of the strata binary from a read-only copy of itself
//! ([`rootexe`]); the foreground client *becomes* the monitor by exec, so a foreground run
//! costs one exec and one fork beyond the kernel's own namespace work. Mounts live only in the
//! container's private mount namespace, so nothing can leak onto the host when a container dies.

/// Serializes a type (a flag's typed value, `options`) as its `Display` text and reads it back with its `FromStr`.
macro_rules! stored_as_text {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub mod attach;
pub mod caps;
pub mod cgroup;
pub mod chroot;
pub mod container;
pub mod copy;
pub mod create;
pub mod devfilter;
pub mod devices;
pub mod emulation;
pub mod events;
pub mod exec;
pub mod fdpass;
pub mod handoff;
pub mod health;
pub mod init;
pub mod launch;
pub mod logs;
pub mod monitor;
pub mod netns;
pub mod networking;
pub mod ops;
pub mod options;
pub mod overlay;
pub mod record;
pub mod rootexe;
pub mod rootless;
pub mod seccomp;
pub mod spec;
pub mod user;
pub mod usermode;
pub mod volume;

use std::path::PathBuf;

/// Errors of the runtime; messages are one line and name the container, path or value.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] strata_cache::StoreError),
    #[error(transparent)]
    Network(#[from] strata_network::NetworkError),
}

impl RuntimeError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Parses `SIGTERM`, `TERM`, `term` or `15`.
pub fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal, RuntimeError> {
    use std::str::FromStr;
    let bad = || RuntimeError::Invalid(format!("invalid signal: {s}"));
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(
            parse_signal("TERM").unwrap(),
            nix::sys::signal::Signal::SIGTERM
        );
        assert_eq!(
            parse_signal("sigkill").unwrap(),
            nix::sys::signal::Signal::SIGKILL
        );
        assert_eq!(
            parse_signal("9").unwrap(),
            nix::sys::signal::Signal::SIGKILL
        );
        assert!(parse_signal("SIGFOO").is_err());
    }
}
