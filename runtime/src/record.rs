//! What a container record holds (`containers/<id>/config.json`: [`ContainerRecord`] with
//! Docker's [`RunConfig`] and [`HostConfig`]) and its state (`state.json`: [`State`],
//! [`Status`]), with the restart policy and resource limits they carry.
//!
//! Key design decision: the record's JSON is Docker's shape (PascalCase, flag values as the
//! text Docker stores), so `inspect` prints it as it is, while in memory every flag value is
//! typed ([`crate::options`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use strata_image::Digest;

use crate::options::{
    BindMount, Capability, NamespaceMode, NetworkMode, PidMode, SecurityKind, SecurityOpt,
    StopSignal, VolumeSpec,
};
use crate::RuntimeError;

/// How a container should run (Docker's `Config`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub working_dir: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub open_stdin: bool,
    #[serde(default)]
    pub stop_signal: StopSignal,
    #[serde(default)]
    pub stop_timeout: Option<i64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `-a`: the streams a foreground run attaches (`stdin`, `stdout`, `stderr`); empty for
    /// Docker's default (stdout and stderr, and stdin with `-i`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attach: Vec<String>,
    /// The image's `EXPOSE`d ports and `--expose`, as `"80/tcp"` keys (what `-P` publishes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    /// `--mac-address`, for the first network.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
    /// The health check (the image's, with `--health-*` over it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<strata_image::spec::HealthConfig>,
}

impl RunConfig {
    /// Whether a foreground run attaches `stream` to the terminal. stdin is `-i`'s whatever
    /// `-a` says, as in Docker (`-i` attaches it; `-a stdin` alone leaves it closed).
    pub fn attaches(&self, stream: &str) -> bool {
        match stream {
            "stdin" => self.open_stdin,
            _ => self.attach.is_empty() || self.attach.iter().any(|a| a == stream),
        }
    }
}

/// Host-side settings (Docker's `HostConfig`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    /// `-v` (named and host-path volumes; anonymous ones are named volumes by now).
    #[serde(default)]
    pub binds: Vec<VolumeSpec>,
    /// Bind mounts given structurally (build `RUN --mount`), so paths may hold ':'.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<BindMount>,
    #[serde(default)]
    pub tmpfs: BTreeMap<String, String>,
    /// The image's `VOLUME`s not covered by `-v` or `--tmpfs`: each gets an anonymous volume
    /// (a directory of the container's, filled from the image on first start).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub readonly_rootfs: bool,
    #[serde(default)]
    pub network_mode: NetworkMode,
    /// `-p`, `-P`: Docker's `PortBindings` (`"80/tcp"` → host bindings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_bindings: strata_network::ports::PortBindings,
    #[serde(default)]
    pub publish_all_ports: bool,
    #[serde(default)]
    pub memory: i64,
    #[serde(default)]
    pub pids_limit: i64,
    #[serde(default)]
    pub nano_cpus: i64,
    /// `--memory-swap` (as set by `update`; 0: twice the memory limit, -1: unlimited).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub memory_swap: i64,
    /// `--cpu-shares` (as set by `update`; 0: the default).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cpu_shares: i64,
    #[serde(default)]
    pub cpuset_cpus: String,
    #[serde(default)]
    pub cap_add: Vec<Capability>,
    #[serde(default)]
    pub cap_drop: Vec<Capability>,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub security_opt: Vec<SecurityOpt>,
    /// `--log-driver`, `--log-opt`.
    #[serde(default)]
    pub log_config: crate::logs::LogConfig,
    /// `--device HOST[:CONTAINER[:PERMISSIONS]]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<crate::devices::DeviceMapping>,
    /// `--device-cgroup-rule`: more device allow rules (v1 syntax).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_cgroup_rules: Vec<String>,
    #[serde(default)]
    pub init: bool,
    #[serde(default)]
    pub auto_remove: bool,
    /// `--add-host HOST:IP` lines for /etc/hosts, as (host, ip).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<(String, String)>,
    /// `--dns`, `--dns-search`, `--dns-option`: what replaces the host's in resolv.conf.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_options: Vec<String>,
    /// `--shm-size` in bytes (0: Docker's 64 MiB).
    #[serde(default)]
    pub shm_size: i64,
    /// `--ulimit NAME=SOFT[:HARD]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// `--restart`.
    #[serde(default, skip_serializing_if = "RestartPolicy::is_none")]
    pub restart_policy: RestartPolicy,
    /// `--group-add`: more supplementary groups for the container's processes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    /// `--uts`: "host" shares the host's hostname namespace; empty for a private one.
    #[serde(default, skip_serializing_if = "NamespaceMode::is_private")]
    pub uts_mode: NamespaceMode,
    /// `--ipc`: "host" shares the host's IPC namespace; empty for a private one.
    #[serde(default, skip_serializing_if = "NamespaceMode::is_private")]
    pub ipc_mode: NamespaceMode,
    /// `--pid`: "host", "container:NAME", or empty for a private pid namespace.
    #[serde(default, skip_serializing_if = "PidMode::is_private")]
    pub pid_mode: PidMode,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Docker's restart policy: `no`, `always`, `unless-stopped` or `on-failure[:MAX]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicy {
    /// Empty for `no`.
    pub name: String,
    /// `on-failure:MAX` (0: no limit).
    #[serde(default)]
    pub maximum_retry_count: u32,
}

impl RestartPolicy {
    pub fn parse(s: &str) -> Result<RestartPolicy, RuntimeError> {
        let bad = || {
            RuntimeError::Invalid(format!(
                "invalid restart policy {s:?}: no, always, unless-stopped or on-failure[:MAX]"
            ))
        };
        let (name, max) = match s.split_once(':') {
            Some(("on-failure", n)) => ("on-failure", n.parse().map_err(|_| bad())?),
            Some(_) => return Err(bad()),
            None => (s, 0),
        };
        match name {
            "no" | "" => Ok(RestartPolicy::default()),
            "always" | "unless-stopped" | "on-failure" => Ok(RestartPolicy {
                name: name.to_string(),
                maximum_retry_count: max,
            }),
            _ => Err(bad()),
        }
    }

    pub fn is_none(&self) -> bool {
        self.name.is_empty()
    }

    /// Whether a container that exited with `code`, restarted `count` times so far and not
    /// stopped by hand, starts again.
    pub fn restarts(&self, code: i32, count: u32, manually_stopped: bool) -> bool {
        !manually_stopped
            && match self.name.as_str() {
                "always" | "unless-stopped" => true,
                "on-failure" => {
                    code != 0 && (self.maximum_retry_count == 0 || count < self.maximum_retry_count)
                }
                _ => false,
            }
    }
}

/// The resource a `--ulimit` name sets (Docker's names).
pub fn rlimit_resource(name: &str) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    Some(match name {
        "core" => R::RLIMIT_CORE,
        "cpu" => R::RLIMIT_CPU,
        "data" => R::RLIMIT_DATA,
        "fsize" => R::RLIMIT_FSIZE,
        "locks" => R::RLIMIT_LOCKS,
        "memlock" => R::RLIMIT_MEMLOCK,
        "msgqueue" => R::RLIMIT_MSGQUEUE,
        "nice" => R::RLIMIT_NICE,
        "nofile" => R::RLIMIT_NOFILE,
        "nproc" => R::RLIMIT_NPROC,
        "rss" => R::RLIMIT_RSS,
        "rtprio" => R::RLIMIT_RTPRIO,
        "rttime" => R::RLIMIT_RTTIME,
        "sigpending" => R::RLIMIT_SIGPENDING,
        "stack" => R::RLIMIT_STACK,
        "as" => R::RLIMIT_AS,
        _ => return None,
    })
}

/// Parses `--ulimit NAME=SOFT[:HARD]` (HARD defaults to SOFT; -1 is unlimited).
pub fn parse_ulimit(s: &str) -> Result<Ulimit, RuntimeError> {
    let bad = |why: &str| RuntimeError::Invalid(format!("invalid --ulimit {s:?}: {why}"));
    let (name, values) = s
        .split_once('=')
        .ok_or_else(|| bad("expected NAME=SOFT[:HARD]"))?;
    if rlimit_resource(name).is_none() {
        return Err(bad(&format!("unknown ulimit {name:?}")));
    }
    let (soft, hard) = values.split_once(':').unwrap_or((values, values));
    let num = |v: &str| {
        v.parse::<i64>()
            .ok()
            .filter(|n| *n >= -1)
            .ok_or_else(|| bad(&format!("{v:?} is not a number")))
    };
    let (soft, hard) = (num(soft)?, num(hard)?);
    let above = |a: i64, b: i64| b != -1 && (a == -1 || a > b);
    if above(soft, hard) {
        return Err(bad("the soft limit is above the hard limit"));
    }
    Ok(Ulimit {
        name: name.to_string(),
        soft,
        hard,
    })
}

/// One resource limit (`--ulimit nofile=1024:2048`); -1 is unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

impl HostConfig {
    /// `--network host`: the container shares the host's network namespace.
    pub fn host_network(&self) -> bool {
        self.network_mode == NetworkMode::Host
    }

    /// `--security-opt no-new-privileges[=|:true|false]`: the last one given wins.
    pub fn no_new_privileges(&self) -> bool {
        self.security_opt
            .iter()
            .rev()
            .find_map(|o| match o.kind {
                SecurityKind::NoNewPrivileges(on) => Some(on),
                _ => None,
            })
            .unwrap_or(false)
    }

    pub fn seccomp_unconfined(&self) -> bool {
        self.privileged
            || self
                .security_opt
                .iter()
                .any(|o| o.kind == SecurityKind::SeccompUnconfined)
    }

    /// The capabilities the container's processes get.
    pub fn capabilities(&self) -> std::collections::BTreeSet<u32> {
        crate::caps::container_set(self.privileged, &self.cap_add, &self.cap_drop)
    }
}

/// What `containers/<id>/config.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    /// The image ID (config digest).
    pub image: Digest,
    /// The image as the user named it.
    pub image_name: String,
    pub created: String,
    pub config: RunConfig,
    pub host_config: HostConfig,
    /// Chain IDs of the image's layers, bottom first.
    pub layers: Vec<Digest>,
    /// Build containers only: directories (absolute, bottom first) of the earlier steps'
    /// layers that are still being hashed, stacked above `layers`. They are not in the store
    /// yet; the build moves them there once their diffIDs are known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_layers: Vec<PathBuf>,
    /// The networks the container joins at each start, by name, with what it asked of each
    /// (Docker's `NetworkingConfig.EndpointsConfig`): `--network`'s, then `network connect`'s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<EndpointSettings>,
}

/// What a container asks of one network.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSettings {
    pub network: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// `--ip`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ipv4_address: String,
}

/// The label of the containers a build runs its RUN steps in.
pub const BUILD_LABEL: &str = "strata.build";

impl ContainerRecord {
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }
    /// A build's RUN step container.
    pub fn is_build(&self) -> bool {
        self.config.labels.contains_key(BUILD_LABEL)
    }
    /// The command to run: entrypoint + cmd.
    pub fn argv(&self) -> Vec<String> {
        let mut v = self.config.entrypoint.clone();
        v.extend(self.config.cmd.iter().cloned());
        v
    }
}

/// Lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Paused,
    Exited,
    Removing,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Exited => "exited",
            Status::Removing => "removing",
        }
    }
}

/// What `containers/<id>/state.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct State {
    pub status: Status,
    /// Host pid of the container's init.
    #[serde(default)]
    pub pid: i32,
    /// Its start time (clock ticks since boot), to detect a reused pid.
    #[serde(default)]
    pub pid_start: u64,
    #[serde(default)]
    pub monitor_pid: i32,
    #[serde(default)]
    pub monitor_start: u64,
    #[serde(default)]
    pub exit_code: i32,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub started_at: String,
    #[serde(default)]
    pub finished_at: String,
    #[serde(default, rename = "OOMKilled")]
    pub oom_killed: bool,
    /// Starts made by the restart policy.
    #[serde(default)]
    pub restart_count: u32,
    /// Exited, and waiting for the restart policy's next start.
    #[serde(default)]
    pub restarting: bool,
    /// The policy's current wait before a start, in milliseconds (Docker's: 100 ms, doubled
    /// at each quick exit up to a minute, back to 100 ms after 10 s of running).
    #[serde(default)]
    pub restart_delay_ms: u64,
    /// `stop` or `kill` was asked: the restart policy makes no more starts until a manual one.
    #[serde(default)]
    pub manually_stopped: bool,
    /// The health check's status and last probes, for a container with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::Health>,
    /// Rootless: the ports its user-mode network publishes while it runs (root's are in the
    /// network store's endpoints).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_mode_ports: Vec<strata_network::PortMapping>,
}

impl State {
    pub fn new() -> State {
        State {
            status: Status::Created,
            pid: 0,
            pid_start: 0,
            monitor_pid: 0,
            monitor_start: 0,
            exit_code: 0,
            error: String::new(),
            started_at: String::new(),
            finished_at: String::new(),
            oom_killed: false,
            restart_count: 0,
            restarting: false,
            restart_delay_ms: 0,
            manually_stopped: false,
            health: None,
            user_mode_ports: Vec::new(),
        }
    }
    pub fn is_running(&self) -> bool {
        matches!(self.status, Status::Running | Status::Paused)
    }
    /// Docker's state name: `restarting` while the restart policy waits.
    pub fn state_name(&self) -> &'static str {
        if self.restarting && self.status == Status::Exited {
            "restarting"
        } else {
            self.status.as_str()
        }
    }
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host config as records have held it since before its values were typed: it reads
    /// into the typed values and writes back byte for byte.
    const HOST_CONFIG: &str = r#"{"Binds":["data:/data:ro","/srv:/srv:rw,z"],"Tmpfs":{"/t":"size=1m"},"ReadonlyRootfs":false,"NetworkMode":"host","PublishAllPorts":false,"Memory":0,"PidsLimit":0,"NanoCpus":0,"CpusetCpus":"","CapAdd":["NET_ADMIN"],"CapDrop":["cap_chown"],"Privileged":false,"SecurityOpt":["no-new-privileges:false","seccomp=unconfined"],"LogConfig":{"Type":"json-file","Config":{}},"Init":false,"AutoRemove":false,"ShmSize":0,"UtsMode":"host"}"#;

    #[test]
    fn stored_host_configs_read_into_typed_values_and_back() {
        let h: HostConfig = serde_json::from_str(HOST_CONFIG).unwrap();
        assert!(h.host_network() && h.uts_mode.is_host() && h.ipc_mode.is_private());
        assert!(h.binds[0].readonly() && !h.binds[1].readonly());
        assert!(!h.no_new_privileges() && h.seccomp_unconfined());
        assert!(h.capabilities().contains(&12) && !h.capabilities().contains(&0));
        assert_eq!(serde_json::to_string(&h).unwrap(), HOST_CONFIG);
    }

    #[test]
    fn a_stop_signal_is_read_once() {
        let c: RunConfig = serde_json::from_str(r#"{"StopSignal":"SIGINT"}"#).unwrap();
        assert_eq!(c.stop_signal.signal(), nix::sys::signal::Signal::SIGINT);
        assert!(serde_json::from_str::<RunConfig>(r#"{"StopSignal":"NOPE"}"#).is_err());
    }
}
