//! cgroups v1 (one hierarchy per controller) and v2 (unified), detected at run time: limits,
//! the freezer, membership, the device allow-list, and clean-up.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::RuntimeError;

const ROOT: &str = "/sys/fs/cgroup";
/// The parent group all containers live under.
const PARENT: &str = "strata";

/// Resource limits (0 = unlimited).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory: i64,
    pub pids: i64,
    pub nano_cpus: i64,
    pub cpuset_cpus: String,
    /// Restrict devices to Docker's allow-list (off for --privileged).
    pub restrict_devices: bool,
    /// More allow rules (`--device-cgroup-rule`, v1 syntax, checked by `devfilter::Rule`).
    pub device_rules: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// `STRATA_CGROUP_V2_ROOT`: manage containers in this cgroup v2 hierarchy even on a v1 or
/// hybrid host (e.g. `/sys/fs/cgroup/unified`, where only v2's own features — membership,
/// freezing, the eBPF device filter — are available).
const V2_ROOT_ENV: &str = "STRATA_CGROUP_V2_ROOT";

fn v2_override() -> Option<PathBuf> {
    std::env::var_os(V2_ROOT_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Which cgroup version containers are managed with, and the hierarchy's root.
fn layout() -> (Version, PathBuf) {
    if let Some(root) = v2_override() {
        return (Version::V2, root);
    }
    if Path::new(ROOT).join("cgroup.controllers").exists() {
        (Version::V2, PathBuf::from(ROOT))
    } else {
        (Version::V1, PathBuf::from(ROOT))
    }
}

/// Which cgroup version this host runs (or `STRATA_CGROUP_V2_ROOT` asks for).
pub fn version() -> Version {
    layout().0
}

/// v1 controllers strata uses (those mounted on this host). `cpuacct` and `blkio` only count:
/// `stats` joins a container to them (and to `memory` and `pids`) when first asked.
const V1_CONTROLLERS: [&str; 8] = [
    "memory", "pids", "cpu", "cpuset", "freezer", "devices", "cpuacct", "blkio",
];

/// The v1 hierarchies `stats` reads.
const V1_ACCOUNTING: [&str; 4] = ["cpuacct", "memory", "pids", "blkio"];

/// The limits `update` changes; `None` leaves one as it is, 0 (or -1) lifts it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewLimits {
    pub memory: Option<i64>,
    /// Memory plus swap (`--memory-swap`; -1 unlimited).
    pub memory_swap: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub cpu_shares: Option<i64>,
    pub pids: Option<i64>,
}

/// A v1 limit file's value: the number, or -1 for none.
fn limit_text(v: i64) -> String {
    if v > 0 {
        v.to_string()
    } else {
        "-1".into()
    }
}

/// What a container has used so far, as `stats` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time of all its processes.
    pub cpu_ns: u64,
    /// Memory in use, less the inactive file cache (Docker's figure).
    pub memory: u64,
    /// The memory limit; 0 when there is none.
    pub memory_limit: u64,
    pub pids: u64,
    pub block_read: u64,
    pub block_write: u64,
}

/// A container's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    pub version: Version,
    /// v1: one directory per controller; v2: one directory.
    pub dirs: Vec<(String, PathBuf)>,
}

fn write(path: &Path, value: &str) -> Result<(), RuntimeError> {
    fs::write(path, value).map_err(|e| RuntimeError::io(path, e))
}

/// Docker's default device rules (v1 `devices.allow` syntax).
const DEVICE_ALLOW: [&str; 13] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:200 rwm",
    "c 10:229 rwm",
];

/// What a rootless container cannot have: `what` ("pause needs") a cgroup of its own.
pub fn no_rootless_cgroup(what: &str) -> RuntimeError {
    RuntimeError::Invalid(format!(
        "rootless: {what} a cgroup tree delegated to the user, which this host does not give"
    ))
}

/// Rootless: the cgroup v2 directory delegated to the user, under which its containers'
/// cgroups go (`<it>/strata/<id>`), if strata runs inside one: the topmost directory above
/// the user's pause process's cgroup that the user may write (systemd's `user@UID.service`
/// for a `systemd-run --user --scope`, or a directory an administrator chowned to the user,
/// as a CI runner's). Moving a process between cgroups takes write access to their common
/// ancestor, so strata must run below it; from anywhere else there is none.
pub fn delegated_to_user() -> Option<&'static Path> {
    static FOUND: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    FOUND
        .get_or_init(|| {
            let (version, root) = layout();
            if version != Version::V2 || !strata_image::layer::in_user_namespace() {
                return None;
            }
            let pid = crate::rootless::pause_pid().unwrap_or(std::process::id() as i32);
            let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
            let own = text.lines().find_map(|l| l.strip_prefix("0::"))?;
            topmost_writable(&root, own)
        })
        .as_deref()
}

/// The topmost directory from `root`/`own` upwards (never `root` itself) whose
/// `cgroup.procs` and entries this process may write.
fn topmost_writable(root: &Path, own: &str) -> Option<PathBuf> {
    use nix::unistd::{access, AccessFlags};
    let mut dir = root.join(own.trim_start_matches('/'));
    let mut found = None;
    while dir.starts_with(root) && dir != root {
        let writable = |p: &Path| access(p, AccessFlags::W_OK).is_ok();
        if !(writable(&dir) && writable(&dir.join("cgroup.procs"))) {
            break;
        }
        found = Some(dir.clone());
        dir.pop();
    }
    found
}

/// The controllers a rootless container's `limits` need that `dir`'s cgroup does not offer.
fn missing_controllers(dir: &Path, l: &Limits) -> Vec<&'static str> {
    let offered = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let has = |c: &str| offered.split_whitespace().any(|o| o == c);
    [
        (l.memory > 0, "memory", "--memory"),
        (l.pids > 0, "pids", "--pids-limit"),
        (l.nano_cpus > 0, "cpu", "--cpus"),
        (!l.cpuset_cpus.is_empty(), "cpuset", "--cpuset-cpus"),
    ]
    .into_iter()
    .filter(|(asked, ctl, _)| *asked && !has(ctl))
    .map(|(_, _, flag)| flag)
    .collect()
}

impl Cgroup {
    /// The cgroup of container `id`, without creating it.
    pub fn of(id: &str) -> Cgroup {
        if strata_image::layer::in_user_namespace() {
            return match delegated_to_user() {
                Some(d) => Cgroup {
                    version: Version::V2,
                    dirs: vec![("".to_string(), d.join(PARENT).join(id))],
                },
                None => Cgroup {
                    version: Version::V1,
                    dirs: Vec::new(),
                },
            };
        }
        let (version, root) = layout();
        let dirs = match version {
            Version::V2 => vec![("".to_string(), root.join(PARENT).join(id))],
            Version::V1 => V1_CONTROLLERS
                .iter()
                .map(|c| (c.to_string(), Path::new(ROOT).join(c).join(PARENT).join(id)))
                .filter(|(_, d)| d.is_dir())
                .collect(),
        };
        Cgroup { version, dirs }
    }

    /// The v1 controllers a container with `limits` needs: the freezer (pause) always, the
    /// device allow-list unless privileged, and each resource controller only when limited:
    /// every extra hierarchy is another migration and directory on each start.
    fn v1_needed(id: &str, limits: &Limits) -> Vec<(String, PathBuf)> {
        V1_CONTROLLERS
            .iter()
            .filter(|c| match **c {
                "freezer" => true,
                "devices" => limits.restrict_devices,
                "memory" => limits.memory > 0,
                "pids" => limits.pids > 0,
                "cpu" => limits.nano_cpus > 0,
                "cpuset" => !limits.cpuset_cpus.is_empty(),
                _ => false,
            })
            .filter(|c| Path::new(ROOT).join(c).is_dir())
            .map(|c| (c.to_string(), Path::new(ROOT).join(c).join(PARENT).join(id)))
            .collect()
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        match self.version {
            Version::V2 => self.dirs.first().map(|d| d.1.as_path()),
            Version::V1 => self
                .dirs
                .iter()
                .find(|d| d.0 == controller)
                .map(|d| d.1.as_path()),
        }
    }

    /// Creates the cgroup and applies `limits`.
    pub fn create(id: &str, limits: &Limits) -> Result<Cgroup, RuntimeError> {
        if strata_image::layer::in_user_namespace() {
            return match delegated_to_user() {
                Some(d) => Cgroup::delegated(d, id, limits),
                None => Cgroup::rootless(limits),
            };
        }
        let mut cg = Cgroup::of(id);
        if cg.version == Version::V1 {
            cg.dirs = Cgroup::v1_needed(id, limits);
        }
        match cg.version {
            Version::V2 => {
                let parent = cg.dirs[0].1.parent().expect("has a parent").to_path_buf();
                let root = parent.parent().expect("has a parent").to_path_buf();
                if !parent.is_dir() {
                    create_dir(&parent)?;
                }
                // Delegate the controllers we set down to containers (ignore ones this host lacks).
                for ctl in ["+memory", "+pids", "+cpu", "+cpuset"] {
                    let _ = fs::write(root.join("cgroup.subtree_control"), ctl);
                    let _ = fs::write(parent.join("cgroup.subtree_control"), ctl);
                }
                create_dir(&cg.dirs[0].1)?;
            }
            Version::V1 => {
                for (ctl, dir) in &cg.dirs {
                    let parent = dir.parent().expect("has a parent");
                    if !parent.is_dir() {
                        create_dir(parent)?;
                    }
                    if ctl == "cpuset" {
                        // A v1 cpuset group takes no tasks until cpus and mems are set.
                        inherit_cpuset(parent)?;
                    }
                    create_dir(dir)?;
                    if ctl == "cpuset" {
                        inherit_cpuset(dir)?;
                    }
                }
            }
        }
        if let Err(e) = cg.apply(limits) {
            cg.destroy();
            return Err(e);
        }
        Ok(cg)
    }

    /// Rootless in a delegated v2 tree: `<delegated>/strata/<id>`, with the controllers the
    /// limits need (enabled down the tree as far as the user may; a limit whose controller
    /// is not delegated is an error). The device filter stays root's: a user namespace makes
    /// no device nodes but those bound from the host.
    fn delegated(delegated: &Path, id: &str, limits: &Limits) -> Result<Cgroup, RuntimeError> {
        let parent = delegated.join(PARENT);
        create_dir(&parent)?;
        for ctl in ["+memory", "+pids", "+cpu", "+cpuset"] {
            let _ = fs::write(delegated.join("cgroup.subtree_control"), ctl);
            let _ = fs::write(parent.join("cgroup.subtree_control"), ctl);
        }
        let dir = parent.join(id);
        create_dir(&dir)?;
        let cg = Cgroup {
            version: Version::V2,
            dirs: vec![("".to_string(), dir.clone())],
        };
        let missing = missing_controllers(&dir, limits);
        if !missing.is_empty() {
            cg.destroy();
            let verb = if missing.len() == 1 { "needs" } else { "need" };
            return Err(RuntimeError::Invalid(format!(
                "rootless: {} {verb} a controller the cgroup delegated to the user ({}) does not \
                 offer",
                missing.join(", "),
                delegated.display()
            )));
        }
        let unfiltered = Limits {
            restrict_devices: false,
            ..limits.clone()
        };
        if let Err(e) = cg.apply(&unfiltered) {
            cg.destroy();
            return Err(e);
        }
        Ok(cg)
    }

    /// Rootless without a delegated tree (v1 always; v2 unless strata runs inside one): a
    /// container gets no cgroup, and a limit is an error rather than silently not applied.
    fn rootless(l: &Limits) -> Result<Cgroup, RuntimeError> {
        let asked: Vec<&str> = [
            (l.memory > 0, "--memory"),
            (l.pids > 0, "--pids-limit"),
            (l.nano_cpus > 0, "--cpus"),
            (!l.cpuset_cpus.is_empty(), "--cpuset-cpus"),
        ]
        .into_iter()
        .filter_map(|(set, flag)| set.then_some(flag))
        .collect();
        if !asked.is_empty() {
            let verb = if asked.len() == 1 { "needs" } else { "need" };
            return Err(no_rootless_cgroup(&format!("{} {verb}", asked.join(", "))));
        }
        Ok(Cgroup {
            version: Version::V1,
            dirs: Vec::new(),
        })
    }

    fn apply(&self, l: &Limits) -> Result<(), RuntimeError> {
        match self.version {
            Version::V1 => {
                if l.memory > 0 {
                    if let Some(d) = self.dir("memory") {
                        write(&d.join("memory.limit_in_bytes"), &l.memory.to_string())?;
                        let memsw = d.join("memory.memsw.limit_in_bytes");
                        if memsw.exists() {
                            write(&memsw, &(l.memory * 2).to_string())?;
                        }
                    }
                }
                if l.pids > 0 {
                    if let Some(d) = self.dir("pids") {
                        write(&d.join("pids.max"), &l.pids.to_string())?;
                    }
                }
                if l.nano_cpus > 0 {
                    if let Some(d) = self.dir("cpu") {
                        write(&d.join("cpu.cfs_period_us"), "100000")?;
                        write(
                            &d.join("cpu.cfs_quota_us"),
                            &(l.nano_cpus / 10_000).to_string(),
                        )?;
                    }
                }
                if !l.cpuset_cpus.is_empty() {
                    if let Some(d) = self.dir("cpuset") {
                        write(&d.join("cpuset.cpus"), &l.cpuset_cpus)?;
                    }
                }
                if l.restrict_devices {
                    if let Some(d) = self.dir("devices") {
                        write(&d.join("devices.deny"), "a")?;
                        // One rule per write(2), all through one open file.
                        let allow = d.join("devices.allow");
                        let mut f = fs::OpenOptions::new()
                            .write(true)
                            .open(&allow)
                            .map_err(|e| RuntimeError::io(&allow, e))?;
                        for rule in DEVICE_ALLOW
                            .iter()
                            .copied()
                            .chain(l.device_rules.iter().map(|r| r.as_str()))
                        {
                            std::io::Write::write_all(&mut f, rule.as_bytes())
                                .map_err(|e| RuntimeError::io(&allow, e))?;
                        }
                    }
                }
            }
            Version::V2 => {
                let d = &self.dirs[0].1;
                if l.memory > 0 {
                    write(&d.join("memory.max"), &l.memory.to_string())?;
                    let _ = fs::write(d.join("memory.swap.max"), l.memory.to_string());
                }
                if l.pids > 0 {
                    write(&d.join("pids.max"), &l.pids.to_string())?;
                }
                if l.nano_cpus > 0 {
                    write(
                        &d.join("cpu.max"),
                        &format!("{} 100000", l.nano_cpus / 10_000),
                    )?;
                }
                if !l.cpuset_cpus.is_empty() {
                    write(&d.join("cpuset.cpus"), &l.cpuset_cpus)?;
                }
                if l.restrict_devices {
                    let mut rules: Vec<_> = DEVICE_ALLOW
                        .iter()
                        .map(|r| crate::devfilter::Rule::parse(r).expect("valid built-in rule"))
                        .collect();
                    for r in &l.device_rules {
                        rules.push(crate::devfilter::Rule::parse(r).ok_or_else(|| {
                            RuntimeError::Invalid(format!("invalid device cgroup rule {r:?}"))
                        })?);
                    }
                    crate::devfilter::attach(d, &rules)?;
                }
            }
        }
        Ok(())
    }

    /// Moves `pid` into the cgroup.
    pub fn add(&self, pid: i32) -> Result<(), RuntimeError> {
        for (_, d) in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    // Why processes join by themselves on cgroup v1: moving another process, or a whole
    // thread group, takes the kernel's cgroup_threadgroup_rwsem for writing, and taking it
    // waits for an RCU grace period (4-16 ms measured here, longer than a container's whole
    // setup) unless the hierarchy was mounted with `favordynmods`. A single-threaded process
    // writing "0" (itself) to a v1 `tasks` file moves without that lock: ~0.1 ms.

    /// Lets the single-threaded process `pid` in. On v2 it is moved now and nothing is
    /// returned; on v1 the result is the files it writes "0" to to move itself in
    /// ([`join_with`]): each hierarchy's `tasks`, opened now (the container's init gets them
    /// over a socket, after it left the host's mount namespace).
    pub fn admit(&self, pid: i32) -> Result<Vec<OwnedFd>, RuntimeError> {
        match self.version {
            Version::V1 => self.tasks_files(),
            Version::V2 => self.add(pid).map(|()| Vec::new()),
        }
    }

    /// Moves the calling process, which must be single-threaded, into the cgroup.
    pub fn add_self(&self) -> Result<(), RuntimeError> {
        let files = self.admit(std::process::id() as i32)?;
        join_with(&files).map_err(|e| RuntimeError::io(self.dirs[0].1.join("tasks"), e))
    }

    fn tasks_files(&self) -> Result<Vec<OwnedFd>, RuntimeError> {
        self.dirs
            .iter()
            .map(|(_, d)| {
                let tasks = d.join("tasks");
                fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(&tasks)
                    .map(OwnedFd::from)
                    .map_err(|e| RuntimeError::io(&tasks, e))
            })
            .collect()
    }

    /// Freezes or thaws every process in the cgroup.
    pub fn freeze(&self, frozen: bool) -> Result<(), RuntimeError> {
        match self.version {
            Version::V1 => {
                let d = self.dir("freezer").ok_or_else(|| {
                    if strata_image::layer::in_user_namespace() {
                        no_rootless_cgroup("pause needs")
                    } else {
                        RuntimeError::Invalid(
                            "the freezer cgroup controller is not available".into(),
                        )
                    }
                })?;
                let want = if frozen { "FROZEN" } else { "THAWED" };
                write(&d.join("freezer.state"), want)?;
                // Freezing is asynchronous in v1: wait until the state settles.
                for _ in 0..2000 {
                    let now = fs::read_to_string(d.join("freezer.state")).unwrap_or_default();
                    if now.trim() == want {
                        return Ok(());
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    write(&d.join("freezer.state"), want)?;
                }
                Err(RuntimeError::Invalid(format!(
                    "cgroup freezer did not reach {want}"
                )))
            }
            Version::V2 => {
                let d = &self.dirs[0].1;
                write(&d.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
                for _ in 0..2000 {
                    let ev = fs::read_to_string(d.join("cgroup.events")).unwrap_or_default();
                    if ev.contains(if frozen { "frozen 1" } else { "frozen 0" }) {
                        return Ok(());
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(RuntimeError::Invalid("cgroup did not freeze".into()))
            }
        }
    }

    /// Pids in the cgroup.
    pub fn procs(&self) -> Vec<i32> {
        let d = match self.version {
            Version::V1 => self
                .dir("pids")
                .or_else(|| self.dir("memory"))
                .or_else(|| self.dirs.first().map(|d| d.1.as_path())),
            Version::V2 => self.dirs.first().map(|d| d.1.as_path()),
        };
        d.and_then(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Makes sure the container's processes are counted (`stats`): on v1, a container started
    /// without limits is in none of the accounting hierarchies, so it is joined to them now,
    /// its memory charges moving along; its start never pays for this. On v2 the controllers
    /// are enabled for strata's containers.
    pub fn ensure_accounting(&mut self, id: &str) -> Result<(), RuntimeError> {
        match self.version {
            Version::V2 => {
                if let Some(parent) = self.dirs.first().and_then(|d| d.1.parent()) {
                    for ctl in ["+memory", "+pids", "+cpu", "+io"] {
                        let _ = fs::write(parent.join("cgroup.subtree_control"), ctl);
                    }
                }
                Ok(())
            }
            Version::V1 => self.join_v1(id, &V1_ACCOUNTING),
        }
    }

    /// Changes a running container's limits (`update`); `None` leaves one as it is. On v1 the
    /// container joins the hierarchies a new limit needs first.
    pub fn update(&mut self, id: &str, new: &NewLimits) -> Result<(), RuntimeError> {
        let needed: Vec<&str> = [
            ("memory", new.memory.is_some() || new.memory_swap.is_some()),
            ("pids", new.pids.is_some()),
            ("cpu", new.nano_cpus.is_some() || new.cpu_shares.is_some()),
        ]
        .iter()
        .filter(|(_, wanted)| *wanted)
        .map(|(c, _)| *c)
        .collect();
        if !needed.is_empty() && self.dirs.is_empty() && strata_image::layer::in_user_namespace() {
            return Err(no_rootless_cgroup("update needs"));
        }
        match self.version {
            Version::V1 => {
                self.join_v1(id, &needed)?;
                if let Some(d) = self.dir("memory") {
                    let memsw = d.join("memory.memsw.limit_in_bytes");
                    let has_swap = memsw.exists();
                    if let Some(m) = new.memory {
                        // memsw may never be below memory: lift it first.
                        if has_swap {
                            write(&memsw, "-1")?;
                        }
                        write(&d.join("memory.limit_in_bytes"), &limit_text(m))?;
                        if has_swap {
                            let swap = new.memory_swap.unwrap_or(if m > 0 { m * 2 } else { -1 });
                            write(&memsw, &limit_text(swap))?;
                        }
                    } else if let (Some(s), true) = (new.memory_swap, has_swap) {
                        write(&memsw, &limit_text(s))?;
                    }
                }
                if let (Some(p), Some(d)) = (new.pids, self.dir("pids")) {
                    write(
                        &d.join("pids.max"),
                        &if p > 0 { p.to_string() } else { "max".into() },
                    )?;
                }
                if let Some(d) = self.dir("cpu") {
                    if let Some(n) = new.nano_cpus {
                        write(&d.join("cpu.cfs_period_us"), "100000")?;
                        let quota = if n > 0 {
                            (n / 10_000).to_string()
                        } else {
                            "-1".into()
                        };
                        write(&d.join("cpu.cfs_quota_us"), &quota)?;
                    }
                    if let Some(s) = new.cpu_shares {
                        write(&d.join("cpu.shares"), &s.to_string())?;
                    }
                }
            }
            Version::V2 => {
                self.ensure_accounting(id)?;
                let d = self.dirs[0].1.clone();
                let max = |v: i64| if v > 0 { v.to_string() } else { "max".into() };
                if let Some(m) = new.memory {
                    write(&d.join("memory.max"), &max(m))?;
                }
                if let Some(s) = new.memory_swap {
                    let swap = if s > 0 {
                        (s - new.memory.unwrap_or(0)).max(0)
                    } else {
                        -1
                    };
                    let _ = fs::write(d.join("memory.swap.max"), max(swap));
                }
                if let Some(p) = new.pids {
                    write(&d.join("pids.max"), &max(p))?;
                }
                if let Some(n) = new.nano_cpus {
                    let quota = if n > 0 {
                        (n / 10_000).to_string()
                    } else {
                        "max".into()
                    };
                    write(&d.join("cpu.max"), &format!("{quota} 100000"))?;
                }
                if let Some(s) = new.cpu_shares {
                    // Docker's conversion of v1 shares (2..262144) to v2 weights (1..10000).
                    let weight = 1 + ((s.clamp(2, 262_144) - 2) * 9999) / 262_142;
                    write(&d.join("cpu.weight"), &weight.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// v1: joins the container's processes to `controllers` it is not in yet.
    fn join_v1(&mut self, id: &str, controllers: &[&str]) -> Result<(), RuntimeError> {
        let members = self.procs();
        for ctl in controllers {
            let root = Path::new(ROOT).join(ctl);
            if self.dir(ctl).is_some() || !root.is_dir() {
                continue;
            }
            let dir = root.join(PARENT).join(id);
            create_dir(&root.join(PARENT))?;
            create_dir(&dir)?;
            if *ctl == "memory" {
                let _ = fs::write(dir.join("memory.move_charge_at_immigrate"), "3");
            }
            // Twice: a process forked while the first pass ran is caught by the second.
            for _ in 0..2 {
                for pid in &members {
                    let _ = fs::write(dir.join("cgroup.procs"), pid.to_string());
                }
            }
            self.dirs.push((ctl.to_string(), dir));
        }
        Ok(())
    }

    /// The container's usage counters (zero where a controller is missing).
    pub fn usage(&self) -> Usage {
        let read = |ctl: &str, file: &str| {
            self.dir(ctl)
                .and_then(|d| fs::read_to_string(d.join(file)).ok())
                .unwrap_or_default()
        };
        let num = |s: String| s.trim().parse::<u64>().unwrap_or(0);
        let stat_field = |text: &str, key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or(0u64)
        };
        match self.version {
            Version::V1 => {
                let stat = read("memory", "memory.stat");
                let used = num(read("memory", "memory.usage_in_bytes"));
                let limit = num(read("memory", "memory.limit_in_bytes"));
                let (mut r, mut w) = (0, 0);
                for l in read("blkio", "blkio.throttle.io_service_bytes_recursive").lines() {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    match f.as_slice() {
                        [_, "Read", n] => r += n.parse::<u64>().unwrap_or(0),
                        [_, "Write", n] => w += n.parse::<u64>().unwrap_or(0),
                        _ => {}
                    }
                }
                Usage {
                    cpu_ns: num(read("cpuacct", "cpuacct.usage")),
                    memory: used.saturating_sub(stat_field(&stat, "total_inactive_file")),
                    // v1 says "unlimited" with a huge number.
                    memory_limit: if limit >= (1 << 62) { 0 } else { limit },
                    pids: num(read("pids", "pids.current")),
                    block_read: r,
                    block_write: w,
                }
            }
            Version::V2 => {
                let stat = read("", "memory.stat");
                let used = num(read("", "memory.current"));
                let (mut r, mut w) = (0, 0);
                for l in read("", "io.stat").lines() {
                    for kv in l.split_whitespace() {
                        match kv.split_once('=') {
                            Some(("rbytes", n)) => r += n.parse::<u64>().unwrap_or(0),
                            Some(("wbytes", n)) => w += n.parse::<u64>().unwrap_or(0),
                            _ => {}
                        }
                    }
                }
                Usage {
                    cpu_ns: stat_field(&read("", "cpu.stat"), "usage_usec") * 1000,
                    memory: used.saturating_sub(stat_field(&stat, "inactive_file")),
                    memory_limit: num(read("", "memory.max")),
                    pids: num(read("", "pids.current")),
                    block_read: r,
                    block_write: w,
                }
            }
        }
    }

    /// Whether the kernel's OOM killer fired in this cgroup.
    pub fn oom_killed(&self) -> bool {
        let read = |p: PathBuf| fs::read_to_string(p).unwrap_or_default();
        let text = match self.version {
            Version::V1 => self
                .dir("memory")
                .map(|d| read(d.join("memory.oom_control")))
                .unwrap_or_default(),
            Version::V2 => read(self.dirs[0].1.join("memory.events")),
        };
        text.lines().any(|l| {
            let mut f = l.split_whitespace();
            f.next() == Some("oom_kill") && f.next().map(|n| n != "0").unwrap_or(false)
        })
    }

    /// Removes the cgroup directories (best effort; processes must be gone).
    pub fn destroy(&self) {
        for (_, d) in &self.dirs {
            for _ in 0..100 {
                match fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
                }
            }
        }
    }
}

/// Container cgroups under strata's parent group, in every hierarchy this host has, that hold
/// no process and were not touched for `min_age`: leftovers of monitors killed before they
/// could clean up. (A cgroup is created a moment before its first process joins, hence the age.)
pub fn leftovers(min_age: std::time::Duration) -> Vec<PathBuf> {
    let mut parents: Vec<PathBuf> = V1_CONTROLLERS
        .iter()
        .map(|c| Path::new(ROOT).join(c).join(PARENT))
        .collect();
    parents.push(Path::new(ROOT).join(PARENT));
    parents.push(Path::new(ROOT).join("unified").join(PARENT));
    parents.extend(v2_override().map(|r| r.join(PARENT)));
    parents.sort();
    parents.dedup();
    let mut out = Vec::new();
    for parent in parents {
        let Ok(entries) = fs::read_dir(&parent) else {
            continue;
        };
        for e in entries.flatten() {
            let dir = e.path();
            let idle = e
                .metadata()
                .ok()
                .filter(|m| m.is_dir())
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= min_age);
            let empty = fs::read_to_string(dir.join("cgroup.procs"))
                .map(|p| p.trim().is_empty())
                .unwrap_or(false);
            if idle && empty {
                out.push(dir);
            }
        }
    }
    out
}

/// Moves the calling (single-threaded) process in through files from [`Cgroup::admit`]: one
/// "0" written to each.
pub fn join_with(files: &[OwnedFd]) -> io::Result<()> {
    for f in files {
        let n = nix::unistd::write(f, b"0")?;
        if n != 1 {
            return Err(io::Error::other("short write to a cgroup tasks file"));
        }
    }
    Ok(())
}

fn create_dir(p: &Path) -> Result<(), RuntimeError> {
    match fs::create_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(RuntimeError::io(p, e)),
    }
}

fn inherit_cpuset(dir: &Path) -> Result<(), RuntimeError> {
    let parent = dir.parent().expect("has a parent");
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let mine = fs::read_to_string(dir.join(f)).unwrap_or_default();
        if mine.trim().is_empty() {
            let theirs = fs::read_to_string(parent.join(f))
                .map_err(|e| RuntimeError::io(parent.join(f), e))?;
            write(&dir.join(f), theirs.trim())?;
        }
    }
    Ok(())
}

/// Parses a Linux CPU list (`0-3,8,10-11`, as `--cpuset-cpus` and sysfs write them) into
/// inclusive ranges; `None` if any part is malformed.
fn parse_cpu_list(list: &str) -> Option<Vec<(u64, u64)>> {
    list.trim()
        .split(',')
        .map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            (a <= b).then_some((a, b))
        })
        .collect()
}

/// The CPUs this host has online, as ranges.
///
/// Read from sysfs, not from this process's affinity: limits are about the host, and the
/// process checking them may be pinned (a `run` client, `taskset`, the record writer of
/// `runtime::handoff`, which runs on the client's other CPUs).
fn online_cpus() -> Vec<(u64, u64)> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(&s))
        .unwrap_or_else(|| {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
            vec![(0, n - 1)]
        })
}

/// How many CPUs this host has online (the upper bound of `--cpus`).
pub fn host_cpu_count() -> u64 {
    online_cpus().iter().map(|(a, b)| b - a + 1).sum()
}

/// Validates a `--cpuset-cpus` list against the CPUs this host has online.
pub fn check_cpuset(spec: &str) -> Result<(), String> {
    check_cpuset_against(spec, &online_cpus())
}

fn check_cpuset_against(spec: &str, online: &[(u64, u64)]) -> Result<(), String> {
    let wanted =
        parse_cpu_list(spec).ok_or_else(|| format!("invalid --cpuset-cpus value {spec:?}"))?;
    let available = online
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    for (a, b) in wanted {
        // Ranges in sysfs are disjoint and ascending, so a wanted range is available when one
        // online range holds all of it, or when the ranges it spans touch end to end.
        let mut next = a;
        for &(lo, hi) in online {
            if lo <= next && next <= hi {
                next = hi.saturating_add(1);
            }
            if next > b {
                break;
            }
        }
        if next <= b {
            let asked = if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            };
            return Err(format!(
                "invalid --cpuset-cpus: requested CPUs {asked} are not available (this host has CPUs {available})"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuset_validation() {
        assert!(check_cpuset("0").is_ok());
        assert!(check_cpuset("0-100000000").is_err());
        assert!(check_cpuset("x").is_err());
    }

    #[test]
    fn cpusets_are_checked_against_every_online_range() {
        let online = parse_cpu_list("0-3,8,10-11\n").unwrap();
        assert_eq!(online, [(0, 3), (8, 8), (10, 11)]);
        for ok in ["0", "0-3", "1,2", "8", "10-11", "0-1,8,11"] {
            assert_eq!(check_cpuset_against(ok, &online), Ok(()), "{ok}");
        }
        assert_eq!(
            check_cpuset_against("3-4", &online),
            Err(
                "invalid --cpuset-cpus: requested CPUs 3-4 are not available \
                 (this host has CPUs 0-3,8,10-11)"
                    .to_string()
            )
        );
        for bad in ["9", "8-10", "12", "0-100000000"] {
            assert!(check_cpuset_against(bad, &online).is_err(), "{bad}");
        }
        for malformed in ["", "x", "3-1", "1-", ",", "1,,2"] {
            assert_eq!(
                check_cpuset_against(malformed, &online),
                Err(format!("invalid --cpuset-cpus value {malformed:?}")),
            );
        }
        // Adjacent ranges (as a hand-written list may give) make one.
        assert_eq!(check_cpuset_against("1-5", &[(0, 3), (4, 7)]), Ok(()));
    }
}
