//! Container records in the store (`containers/<id>/`): the configuration a container was
//! created with, its state, and the lifecycle verbs' state checks.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use strata_cache::fsutil::{self, FileLock, LockMode};
use strata_cache::Store;
use strata_image::Digest;

pub use crate::options::BindMount;
use crate::options::{
    Capability, NamespaceMode, NetworkMode, SecurityKind, SecurityOpt, StopSignal, VolumeSpec,
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
    #[serde(default)]
    pub memory: i64,
    #[serde(default)]
    pub pids_limit: i64,
    #[serde(default)]
    pub nano_cpus: i64,
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

/// A process's start time from `/proc/<pid>/stat`, if it exists.
pub fn process_start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

/// True when `pid` is alive and is the process that started at `start`.
pub fn same_process(pid: i32, start: u64) -> bool {
    pid > 0 && process_start_time(pid) == Some(start)
}

/// Directory layout of one container.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    pub path: PathBuf,
}

impl ContainerDir {
    pub fn config(&self) -> PathBuf {
        self.path.join("config.json")
    }
    pub fn state(&self) -> PathBuf {
        self.path.join("state.json")
    }
    pub fn upper(&self) -> PathBuf {
        self.path.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.path.join("work")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.path.join("rootfs")
    }
    pub fn log(&self) -> PathBuf {
        self.path.join("container.log")
    }
}

/// The containers of a store.
#[derive(Debug, Clone)]
pub struct Containers {
    pub store: Store,
}

/// Docker's name rule.
pub fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphanumeric())
        && n.len() >= 2
        && n.len() <= 128
        && c.all(|x| x.is_ascii_alphanumeric() || matches!(x, '_' | '.' | '-'))
}

const ADJECTIVES: [&str; 24] = [
    "admiring",
    "brave",
    "clever",
    "dazzling",
    "eager",
    "festive",
    "gallant",
    "happy",
    "jolly",
    "keen",
    "lucid",
    "modest",
    "nifty",
    "optimistic",
    "pensive",
    "quirky",
    "relaxed",
    "serene",
    "tender",
    "upbeat",
    "vibrant",
    "wizardly",
    "youthful",
    "zealous",
];
const NAMES: [&str; 24] = [
    "babbage",
    "curie",
    "dijkstra",
    "euler",
    "feynman",
    "gauss",
    "hopper",
    "hypatia",
    "jepsen",
    "knuth",
    "lamport",
    "lovelace",
    "mccarthy",
    "noether",
    "pascal",
    "ritchie",
    "shannon",
    "thompson",
    "turing",
    "volhard",
    "wozniak",
    "yalow",
    "zuse",
    "kowalevski",
];

impl Containers {
    pub fn new(store: &Store) -> Containers {
        Containers {
            store: store.clone(),
        }
    }

    pub fn dir(&self, id: &str) -> ContainerDir {
        ContainerDir {
            path: self.store.containers_dir().join(id),
        }
    }

    /// Every container record (unreadable ones are skipped with a warning).
    pub fn list(&self) -> Result<Vec<ContainerRecord>, RuntimeError> {
        let mut out = Vec::new();
        for id in self.ids()? {
            match self.load(&id) {
                Ok(r) => out.push(r),
                Err(err) => tracing::debug!("skipping container {id}: {err}"),
            }
        }
        Ok(out)
    }

    pub fn load(&self, id: &str) -> Result<ContainerRecord, RuntimeError> {
        let p = self.dir(id).config();
        let bytes = fs::read(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => RuntimeError::NotFound(format!("no such container: {id}")),
            _ => RuntimeError::io(&p, e),
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| RuntimeError::Invalid(format!("{}: {e}", p.display())))
    }

    /// Finds a container by full ID, unique ID prefix, or name.
    pub fn resolve(&self, key: &str) -> Result<ContainerRecord, RuntimeError> {
        let key = key.strip_prefix('/').unwrap_or(key);
        if key.is_empty() {
            return Err(RuntimeError::NotFound("no such container: \"\"".into()));
        }
        if let Some(r) = self.by_name(key) {
            return Ok(r);
        }
        // IDs are directory names: matched without reading any record.
        let ids = self.ids()?;
        let matches: Vec<&String> = ids.iter().filter(|id| id.starts_with(key)).collect();
        if let Some(exact) = matches.iter().find(|id| id.as_str() == key) {
            return self.load(exact);
        }
        match matches.len() {
            1 => return self.load(matches[0]),
            0 => {}
            _ => {
                return Err(RuntimeError::Invalid(format!(
                    "multiple containers match {key:?}; use more of the ID"
                )))
            }
        }
        // A name the index does not know (it is rebuilt on the next create).
        self.list()?
            .into_iter()
            .find(|r| r.name == key)
            .ok_or_else(|| RuntimeError::NotFound(format!("no such container: {key}")))
    }

    /// The IDs of all containers (directory names; no record is read).
    fn ids(&self) -> Result<Vec<String>, RuntimeError> {
        let root = self.store.containers_dir();
        let mut out = Vec::new();
        for e in fs::read_dir(&root).map_err(|e| RuntimeError::io(&root, e))? {
            let e = e.map_err(|e| RuntimeError::io(&root, e))?;
            let id = e.file_name().to_string_lossy().into_owned();
            if !id.starts_with('.') {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Creates the record and directories. Fails if the name is taken.
    pub fn create(&self, mut rec: ContainerRecord) -> Result<ContainerRecord, RuntimeError> {
        let _lock = self.store.meta_lock("containers")?;
        self.ensure_name_index()?;
        if rec.name.is_empty() {
            rec.name = loop {
                let mut b = [0u8; 2];
                strata_cache::fsutil::random_fill(&mut b);
                let n = format!(
                    "{}_{}",
                    ADJECTIVES[b[0] as usize % 24],
                    NAMES[b[1] as usize % 24]
                );
                if self.by_name(&n).is_none() {
                    break n;
                }
            };
        } else if !valid_name(&rec.name) {
            return Err(RuntimeError::Invalid(format!(
                "invalid container name ({:?}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                rec.name
            )));
        } else if let Some(other) = self.by_name(&rec.name) {
            return Err(RuntimeError::Conflict(format!(
                "the container name \"/{}\" is already in use by container {}",
                rec.name, other.id
            )));
        }
        let dir = self.dir(&rec.id);
        // Built in tmp/ and renamed, so a half-created container is never listed.
        let staging = self.store.temp_dir("container")?;
        let build = || -> Result<(), RuntimeError> {
            for d in ["upper", "work", "rootfs"] {
                let p = staging.join(d);
                fs::create_dir(&p).map_err(|e| RuntimeError::io(&p, e))?;
            }
            // The staging directory is private: plain writes, no temp files needed.
            for (name, bytes) in [
                (
                    "state.json",
                    serde_json::to_vec_pretty(&State::new()).expect("serializes"),
                ),
                (
                    "config.json",
                    serde_json::to_vec_pretty(&rec).expect("serializes"),
                ),
            ] {
                let p = staging.join(name);
                fs::write(&p, bytes).map_err(|e| RuntimeError::io(&p, e))?;
            }
            fs::rename(&staging, &dir.path).map_err(|e| RuntimeError::io(&dir.path, e))
        };
        if let Err(e) = build() {
            let _ = fsutil::remove_any(&staging);
            return Err(e);
        }
        if let Err(e) = self.index_name(&rec.name, &rec.id) {
            let _ = self.remove_dir(&rec.id);
            return Err(e);
        }
        Ok(rec)
    }

    /// The name index: `containers/.names/<name>` holds the ID of the container of that name,
    /// so a new container's name is checked without reading every record. An entry is
    /// trusted only when that container exists and still has the name; anything else is
    /// stale and overwritten.
    fn names_dir(&self) -> PathBuf {
        self.store.containers_dir().join(".names")
    }

    /// The container named `name`, through the index.
    fn by_name(&self, name: &str) -> Option<ContainerRecord> {
        if !valid_name(name) {
            return None;
        }
        let id = fs::read_to_string(self.names_dir().join(name)).ok()?;
        let rec = self.load(id.trim()).ok()?;
        (rec.name == name).then_some(rec)
    }

    /// Records `name` → `id` (under the containers lock).
    fn index_name(&self, name: &str, id: &str) -> Result<(), RuntimeError> {
        let p = self.names_dir().join(name);
        fs::write(&p, id).map_err(|e| RuntimeError::io(&p, e))
    }

    /// Forgets `name` if it still points at `id`.
    fn unindex_name(&self, name: &str, id: &str) {
        let p = self.names_dir().join(name);
        if fs::read_to_string(&p).is_ok_and(|v| v.trim() == id) {
            let _ = fs::remove_file(&p);
        }
    }

    /// Makes the index from the records, for a store that does not have one yet (under the
    /// containers lock; the index appears whole, by rename).
    fn ensure_name_index(&self) -> Result<(), RuntimeError> {
        let dir = self.names_dir();
        if dir.is_dir() {
            return Ok(());
        }
        let staging = self.store.temp_dir("names")?;
        for rec in self.list()? {
            let p = staging.join(&rec.name);
            fs::write(&p, &rec.id).map_err(|e| RuntimeError::io(&p, e))?;
        }
        fs::rename(&staging, &dir).map_err(|e| RuntimeError::io(&dir, e))
    }

    /// Replaces the record (rename).
    pub fn save(&self, rec: &ContainerRecord) -> Result<(), RuntimeError> {
        let dir = self.dir(&rec.id);
        let _l = self.lock(&rec.id)?;
        write_json(&dir.config(), rec)
    }

    /// Renames a container, refusing names in use.
    pub fn rename(&self, key: &str, new_name: &str) -> Result<(), RuntimeError> {
        let _lock = self.store.meta_lock("containers")?;
        if !valid_name(new_name) {
            return Err(RuntimeError::Invalid(format!(
                "invalid container name ({new_name:?})"
            )));
        }
        let mut rec = self.resolve(key)?;
        self.ensure_name_index()?;
        if let Some(other) = self.by_name(new_name).filter(|r| r.id != rec.id) {
            return Err(RuntimeError::Conflict(format!(
                "the container name \"/{new_name}\" is already in use by container {}",
                other.id
            )));
        }
        let old = std::mem::replace(&mut rec.name, new_name.to_string());
        self.save(&rec)?;
        self.index_name(new_name, &rec.id)?;
        self.unindex_name(&old, &rec.id);
        Ok(())
    }

    /// The container's lock (the state file, held exclusively).
    pub fn lock(&self, id: &str) -> Result<FileLock, RuntimeError> {
        Ok(FileLock::acquire(
            &self.dir(id).state(),
            LockMode::Exclusive,
        )?)
    }

    /// Reads the state and corrects it if its processes died without recording it (a killed
    /// monitor, a reboot), so it is never a lie.
    pub fn state(&self, id: &str) -> Result<State, RuntimeError> {
        let st = self.read_state(id)?;
        if st.is_running()
            && !same_process(st.pid, st.pid_start)
            && !same_process(st.monitor_pid, st.monitor_start)
        {
            return self.update_state(id, |s| {
                if s.is_running()
                    && !same_process(s.pid, s.pid_start)
                    && !same_process(s.monitor_pid, s.monitor_start)
                {
                    s.status = Status::Exited;
                    if s.exit_code == 0 {
                        s.exit_code = 255;
                    }
                    s.error = "the container's monitor died".into();
                    s.finished_at = fsutil::now_rfc3339();
                    s.pid = 0;
                }
                Ok(())
            });
        }
        Ok(st)
    }

    fn open_state(&self, id: &str) -> Result<fs::File, RuntimeError> {
        let p = self.dir(id).state();
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => {
                    RuntimeError::NotFound(format!("no such container: {id}"))
                }
                _ => RuntimeError::io(&p, e),
            })
    }

    fn read_state(&self, id: &str) -> Result<State, RuntimeError> {
        let mut f = self.open_state(id)?;
        flock(&f, libc::LOCK_SH).map_err(|e| RuntimeError::io(self.dir(id).state(), e))?;
        parse_state(&mut f, &self.dir(id).state())
    }

    /// Read-modify-write of the state under an exclusive lock on the state file itself. The
    /// file is rewritten in place (readers take a shared lock), so no inode is created per
    /// update: a container start updates its state three times.
    pub fn update_state(
        &self,
        id: &str,
        f: impl FnOnce(&mut State) -> Result<(), RuntimeError>,
    ) -> Result<State, RuntimeError> {
        let p = self.dir(id).state();
        let mut file = self.open_state(id)?;
        flock(&file, libc::LOCK_EX).map_err(|e| RuntimeError::io(&p, e))?;
        let mut st = parse_state(&mut file, &p)?;
        f(&mut st)?;
        let bytes = serde_json::to_vec_pretty(&st).expect("serializes");
        use std::os::unix::fs::FileExt;
        file.write_all_at(&bytes, 0)
            .map_err(|e| RuntimeError::io(&p, e))?;
        file.set_len(bytes.len() as u64)
            .map_err(|e| RuntimeError::io(&p, e))?;
        Ok(st)
    }

    /// Removes a container's directory (it must not be running).
    pub fn remove_dir(&self, id: &str) -> Result<(), RuntimeError> {
        match self.load(id) {
            Ok(rec) => self.remove(&rec),
            Err(_) => self.remove_files(id),
        }
    }

    /// Deletes the container `rec` (its name, then its directory).
    fn remove(&self, rec: &ContainerRecord) -> Result<(), RuntimeError> {
        self.unindex_name(&rec.name, &rec.id);
        self.remove_files(&rec.id)
    }

    fn remove_files(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.dir(id);
        // Out of sight first, then deleted: a half-removed container is never listed.
        let dead = self.store.temp_path("dead-container");
        fs::rename(&dir.path, &dead).map_err(|e| RuntimeError::io(&dir.path, e))?;
        remove_known_entries(&dead);
        if fs::remove_dir(&dead).is_err() {
            // Whatever else there is (files the container wrote, volumes, logs).
            fsutil::remove_any(&dead)?;
        }
        Ok(())
    }
}

/// Removes what every container directory holds by name, with one call each instead of the
/// open/read/stat of a tree walk (this is on `run --rm`'s path). Anything unexpected stays
/// for the caller's full removal.
fn remove_known_entries(dir: &std::path::Path) {
    let Ok(d) = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) else {
        return;
    };
    use nix::unistd::{unlinkat, UnlinkatFlags::NoRemoveDir, UnlinkatFlags::RemoveDir};
    for f in [
        "config.json",
        "state.json",
        "hosts",
        "hostname",
        "resolv.conf",
    ] {
        let _ = unlinkat(&d, f, NoRemoveDir);
    }
    // The overlay's work dir (a `volatile` mount leaves work/incompat/volatile/dirty), the
    // mount point and an upper dir the container did not write to.
    let _ = unlinkat(&d, "work/work/incompat/volatile/dirty", NoRemoveDir);
    for sub in [
        "work/work/incompat/volatile",
        "work/work/incompat",
        "work/work",
        "work/incompat/volatile",
        "work/incompat",
        "work",
        "rootfs",
        "upper",
    ] {
        let _ = unlinkat(&d, sub, RemoveDir);
    }
}

/// Atomic JSON write without fsync: container records are rebuilt from the processes'
/// reality (`Containers::state`) after a crash, so durability is not needed, and start-up
/// latency is.
pub fn write_json<T: Serialize>(path: &std::path::Path, v: &T) -> Result<(), RuntimeError> {
    let tmp = path.with_extension(format!("tmp-{}", fsutil::random_hex(4)));
    fs::write(&tmp, serde_json::to_vec_pretty(v).expect("serializes"))
        .map_err(|e| RuntimeError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| RuntimeError::io(path, e))
}

fn flock(f: &fs::File, op: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

fn parse_state(f: &mut fs::File, p: &std::path::Path) -> Result<State, RuntimeError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)
        .map_err(|e| RuntimeError::io(p, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| RuntimeError::Invalid(format!("{}: {e}", p.display())))
}

/// A new random container ID.
pub fn new_id() -> String {
    fsutil::random_hex(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host config as records have held it since before its values were typed: it reads
    /// into the typed values and writes back byte for byte.
    const HOST_CONFIG: &str = r#"{"Binds":["data:/data:ro","/srv:/srv:rw,z"],"Tmpfs":{"/t":"size=1m"},"ReadonlyRootfs":false,"NetworkMode":"host","Memory":0,"PidsLimit":0,"NanoCpus":0,"CpusetCpus":"","CapAdd":["NET_ADMIN"],"CapDrop":["cap_chown"],"Privileged":false,"SecurityOpt":["no-new-privileges:false","seccomp=unconfined"],"LogConfig":{"Type":"json-file","Config":{}},"Init":false,"AutoRemove":false,"ShmSize":0,"UtsMode":"host"}"#;

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
