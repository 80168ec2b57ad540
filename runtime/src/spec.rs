//! What the container's init needs to know, derived from the record by the monitor.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A user mount (`-v`, `--tmpfs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserMount {
    Bind {
        source: PathBuf,
        target: String,
        readonly: bool,
    },
    Tmpfs {
        target: String,
        options: String,
    },
    /// A volume (a container's anonymous one or a named one): `dir/_data` is bound at
    /// `target`; the first time, it is filled with what the image has at `target` (and
    /// `dir/populated` marks that done).
    Volume {
        dir: PathBuf,
        target: String,
        readonly: bool,
    },
}

/// The root filesystem and mounts of a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootSpec {
    /// Layer directories, top first, relative to `layers_dir` (keeps the mount options short).
    pub lowers: Vec<String>,
    pub layers_dir: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub mountpoint: PathBuf,
    pub mounts: Vec<UserMount>,
    /// Host files bind-mounted over /etc/hosts, /etc/hostname, /etc/resolv.conf.
    pub etc_files: Vec<(PathBuf, String)>,
    pub hostname: String,
    pub readonly: bool,
    pub privileged: bool,
    /// A new network namespace with only loopback.
    pub isolated_network: bool,
    /// Size of /dev/shm in bytes (0: Docker's 64 MiB).
    #[serde(default)]
    pub shm_size: i64,
    /// `--uts host`: the host's hostname namespace (and hostname) instead of a new one.
    #[serde(default)]
    pub host_uts: bool,
    /// `--ipc host`: the host's IPC namespace instead of a new one.
    #[serde(default)]
    pub host_ipc: bool,
}

/// The process to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub caps: BTreeSet<u32>,
    pub no_new_privs: bool,
    pub seccomp: bool,
    pub tty: bool,
    /// With `tty`: the terminal's (rows, columns), set on the pty before the command runs, so
    /// it never starts at 0×0 while the monitor catches up.
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
    /// Run a reaping init (pid 1) that forwards signals to the command.
    pub init: bool,
    /// Resource limits set before the exec (`--ulimit`).
    #[serde(default)]
    pub ulimits: Vec<crate::container::Ulimit>,
    /// More supplementary groups (`--group-add`, names resolved in the container).
    #[serde(default)]
    pub group_add: Vec<String>,
    /// A build's RUN step: supplementary groups follow BuildKit's rule, not Docker's
    /// (`user::groups_for`).
    #[serde(default)]
    pub buildkit_groups: bool,
}

/// The default PATH, as Docker and BuildKit set it.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's masked paths (bind-mounted over with /dev/null or an empty read-only tmpfs).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];
