//! Health checks (`HEALTHCHECK`, `--health-*`), daemonless: a container with one gets a
//! checker process, started by its monitor after the start (`strata --root R __health ID`,
//! detached), which runs the probe every interval through `strata exec`, keeps the status,
//! the failing streak and the last five probes in the container's state (`State.Health`),
//! records `health_status` events, and exits when the container stops. A container without a
//! health check costs nothing.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use strata_cache::Store;
use strata_image::spec::HealthConfig;

use crate::container::{same_process, ContainerRecord, Containers};

/// The re-exec's command word.
pub const HEALTH_COMMAND: &str = "__health";

/// Docker's defaults.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RETRIES: u32 = 3;
/// Probes kept in `State.Health.Log`.
const KEPT: usize = 5;
/// Output kept per probe (Docker's 4 KiB).
const MAX_OUTPUT: usize = 4096;

/// `State.Health`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// starting, healthy or unhealthy.
    pub status: String,
    pub failing_streak: u32,
    pub log: Vec<Probe>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Probe {
    pub start: String,
    pub end: String,
    pub exit_code: i32,
    pub output: String,
}

/// `--health-*` and `--no-healthcheck`, over the image's HEALTHCHECK.
#[derive(Debug, Clone, Default)]
pub struct HealthFlags {
    pub cmd: Option<String>,
    pub interval: Option<i64>,
    pub timeout: Option<i64>,
    pub start_period: Option<i64>,
    pub retries: Option<i64>,
    pub disabled: bool,
}

impl HealthFlags {
    /// The container's health check: the image's, each field the flags give replaced.
    pub fn merge(&self, image: Option<&HealthConfig>) -> Option<HealthConfig> {
        if self.disabled {
            return Some(HealthConfig {
                test: vec!["NONE".into()],
                ..Default::default()
            });
        }
        let mut h = image.cloned().unwrap_or_default();
        if let Some(cmd) = &self.cmd {
            h.test = vec!["CMD-SHELL".into(), cmd.clone()];
        }
        h.interval = self.interval.unwrap_or(h.interval);
        h.timeout = self.timeout.unwrap_or(h.timeout);
        h.start_period = self.start_period.unwrap_or(h.start_period);
        h.retries = self.retries.unwrap_or(h.retries);
        (!h.test.is_empty() || h.interval != 0).then_some(h)
    }
}

/// The probe's command, if the container has a health check.
pub fn probe_command(h: Option<&HealthConfig>) -> Option<Vec<String>> {
    let h = h?;
    match h.test.first().map(String::as_str) {
        Some("CMD") if h.test.len() > 1 => Some(h.test[1..].to_vec()),
        Some("CMD-SHELL") if h.test.len() > 1 => {
            Some(vec!["/bin/sh".into(), "-c".into(), h.test[1..].join(" ")])
        }
        _ => None,
    }
}

/// Starts the checker of `rec` (the monitor calls it once the container runs).
pub fn start_checker(store: &Store, rec: &ContainerRecord) {
    if probe_command(rec.config.healthcheck.as_ref()).is_none() {
        return;
    }
    let Ok(exe) = crate::rootexe::protected_exe() else {
        return;
    };
    // The checker detaches by itself: this waits only for its first fork.
    let _ = Command::new(exe)
        .arg("--root")
        .arg(store.root())
        .args([HEALTH_COMMAND, &rec.id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The checker's process: detaches, then probes until the container stops.
pub fn checker_main(store: &Store, id: &str) -> i32 {
    // SAFETY: the re-exec is single-threaded here.
    match unsafe { strata_cache::fsutil::fork_detached() } {
        Ok(Some(_)) => return 0,
        Ok(None) => {}
        Err(_) => return 1,
    }
    // Nothing of the monitor's stays open here (a client's ready pipe would never see its end).
    // SAFETY: a single-threaded process closing descriptors it does not use.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let containers = Containers::new(store);
    let Ok(rec) = containers.load(id) else {
        return 1;
    };
    let Some(argv) = probe_command(rec.config.healthcheck.as_ref()) else {
        return 0;
    };
    let h = rec.config.healthcheck.clone().unwrap_or_default();
    let nanos = |v: i64, d: Duration| {
        if v > 0 {
            Duration::from_nanos(v as u64)
        } else {
            d
        }
    };
    let interval = nanos(h.interval, DEFAULT_INTERVAL);
    let timeout = nanos(h.timeout, DEFAULT_TIMEOUT);
    let start_period = nanos(h.start_period, Duration::ZERO);
    let retries = if h.retries > 0 {
        h.retries as u32
    } else {
        DEFAULT_RETRIES
    };
    let Ok(st) = containers.state(id) else {
        return 1;
    };
    let (pid, pid_start) = (st.pid, st.pid_start);
    let started = Instant::now();
    loop {
        std::thread::sleep(interval);
        if !same_process(pid, pid_start) {
            return 0;
        }
        let probe = run_probe(store, id, &argv, timeout);
        if !same_process(pid, pid_start) {
            return 0;
        }
        let in_start_period = started.elapsed() < start_period;
        let mut changed = None;
        let _ = containers.update_state(id, |s| {
            let health = s.health.get_or_insert_with(|| Health {
                status: "starting".into(),
                ..Default::default()
            });
            let before = health.status.clone();
            if probe.exit_code == 0 {
                health.failing_streak = 0;
                health.status = "healthy".into();
            } else if !(in_start_period && before == "starting") {
                health.failing_streak += 1;
                if health.failing_streak >= retries {
                    health.status = "unhealthy".into();
                }
            }
            health.log.push(probe.clone());
            let extra = health.log.len().saturating_sub(KEPT);
            health.log.drain(..extra);
            if health.status != before {
                changed = Some(health.status.clone());
            }
            Ok(())
        });
        if let Some(status) = changed {
            crate::events::record(store, &rec, &format!("health_status: {status}"), &[]);
        }
    }
}

/// Runs the probe in the container (`strata exec`), killed after `timeout`.
fn run_probe(store: &Store, id: &str, argv: &[String], timeout: Duration) -> Probe {
    let start = strata_cache::fsutil::now_rfc3339();
    let child = std::env::current_exe().and_then(|exe| {
        Command::new(exe)
            .arg("--root")
            .arg(store.root())
            .args(["exec", id])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    });
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return Probe {
                start,
                end: strata_cache::fsutil::now_rfc3339(),
                exit_code: -1,
                output: format!("start the probe: {e}"),
            }
        }
    };
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let mut output = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_end(&mut output);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_end(&mut output);
    }
    output.truncate(MAX_OUTPUT);
    let (exit_code, output) = match status {
        Some(st) => (
            st.code().unwrap_or(-1),
            String::from_utf8_lossy(&output).into_owned(),
        ),
        None => (
            -1,
            format!("Health check exceeded timeout ({}s)", timeout.as_secs()),
        ),
    };
    Probe {
        start,
        end: strata_cache::fsutil::now_rfc3339(),
        exit_code,
        output,
    }
}
