//! What the container's init needs to know ([`RootSpec`], [`ProcessSpec`]), and how the
//! monitor derives it from the container record ([`specs`]): mounts resolved (named volumes,
//! host paths), /etc files written, capabilities computed.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use strata_cache::fsutil;
use strata_cache::Store;

use crate::container::{ContainerRecord, Containers, HostConfig};
use crate::options::{NetworkMode, VolumeSpec};
use crate::volume::{Volume, Volumes};
use crate::RuntimeError;

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
    /// Device nodes beyond the standard ones (`--device`, `--privileged`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<crate::devices::DeviceNode>,
    /// The root is a fuse-overlayfs mount the monitor makes (`overlay::Driver::Fuse`), not the
    /// kernel overlay init mounts.
    #[serde(default)]
    pub fuse: bool,
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
impl RootSpec {
    /// The layer directories, top first, as absolute paths.
    pub fn lower_paths(&self) -> Vec<PathBuf> {
        self.lowers
            .iter()
            .map(|l| self.layers_dir.join(l))
            .collect()
    }

    /// Mounts the fuse-overlayfs root at the mountpoint (a leftover of a crash unmounted
    /// first).
    pub fn mount_fuse(&self) -> Result<(), String> {
        crate::overlay::unmount_all(&self.mountpoint);
        crate::overlay::mount_fuse(
            &self.layers_dir,
            &self.lowers.join(":"),
            &self.upper,
            &self.work,
            &self.mountpoint,
        )
    }

    /// Unmounts the fuse-overlayfs root and brings the upper directory to the kernel's form.
    pub fn unmount_fuse(&self) -> Result<(), String> {
        crate::overlay::unmount_all(&self.mountpoint);
        crate::overlay::normalize_upper(&self.upper, &self.lower_paths())
            .map_err(|e| format!("{}: {e}", self.upper.display()))
    }
}

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

/// Builds the init's view of the container from its record.
pub fn specs(
    store: &Store,
    rec: &ContainerRecord,
    network: Option<&(strata_network::Network, strata_network::Endpoint)>,
) -> Result<(RootSpec, ProcessSpec), RuntimeError> {
    let dir = Containers::new(store).dir(&rec.id);
    let h = &rec.host_config;
    let network_host = h.host_network();
    let host_uts = h.uts_mode.is_host();
    let hostname = if !rec.config.hostname.is_empty() && !host_uts {
        rec.config.hostname.clone()
    } else if network_host || host_uts {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        rec.short_id().to_string()
    };
    let (hostname, etc) = match &h.network_mode {
        NetworkMode::Container(other) => shared_etc_files(store, other)?,
        _ => (
            hostname.clone(),
            etc_files(&dir.path, &hostname, h, network)?,
        ),
    };
    let mut mounts = Vec::new();
    for b in &h.binds {
        mounts.push(user_mount(b, store)?);
    }
    for m in &h.mounts {
        mounts.push(UserMount::Bind {
            source: m.source.clone(),
            target: m.target.clone(),
            readonly: m.readonly,
        });
    }
    for target in &h.volumes {
        mounts.push(UserMount::Volume {
            dir: volume_dir(&dir.path, target),
            target: target.clone(),
            readonly: false,
        });
    }
    for (target, options) in &h.tmpfs {
        mounts.push(UserMount::Tmpfs {
            target: target.clone(),
            options: options.clone(),
        });
    }
    let caps = h.capabilities();
    let mut lowers = vec![init_layer(store.root())?.display().to_string()];
    lowers.extend(
        rec.pending_layers
            .iter()
            .rev()
            .map(|d| d.display().to_string()),
    );
    lowers.extend(rec.layers.iter().rev().map(|l| format!("{}/diff", l.hex())));
    let root = RootSpec {
        lowers,
        layers_dir: store.layers_dir(),
        upper: dir.upper(),
        work: dir.work(),
        mountpoint: dir.rootfs(),
        mounts,
        etc_files: etc,
        hostname,
        readonly: h.readonly_rootfs,
        privileged: h.privileged,
        isolated_network: !network_host,
        shm_size: h.shm_size,
        host_uts,
        host_ipc: h.ipc_mode.is_host(),
        devices: crate::devices::resolve(&h.devices, h.privileged)?.0,
        fuse: crate::overlay::Driver::current().0 == crate::overlay::Driver::Fuse,
    };
    let proc_ = ProcessSpec {
        args: rec.argv(),
        env: rec.config.env.clone(),
        cwd: rec.config.working_dir.clone(),
        user: rec.config.user.clone(),
        caps,
        no_new_privs: h.no_new_privileges(),
        seccomp: !h.seccomp_unconfined(),
        tty: rec.config.tty,
        console_size: None,
        init: h.init,
        ulimits: h.ulimits.clone(),
        group_add: h.group_add.clone(),
        buildkit_groups: rec.is_build(),
    };
    Ok((root, proc_))
}

/// The init layer every container gets on top of its image (like Docker's): the mount points
/// strata always uses, so making them never lands in the container's own layer (diff, commit
/// and export stay clean), and no image can turn them into symlinks. Shared by all containers
/// of a store; built in tmp/ and renamed, so it is complete whenever it exists.
fn init_layer(store_root: &std::path::Path) -> Result<PathBuf, RuntimeError> {
    // Versioned by name: containers running on an older one keep it as their lower layer.
    let init = store_root.join("init-v2");
    if init.is_dir() {
        return Ok(init);
    }
    let staging = store_root.join("tmp").join(fsutil::tmp_name("init"));
    for d in ["dev", "proc", "sys", "etc"] {
        let p = staging.join(d);
        fs::create_dir_all(&p).map_err(|e| RuntimeError::io(&p, e))?;
    }
    for f in ["etc/hosts", "etc/hostname", "etc/resolv.conf"] {
        let p = staging.join(f);
        fs::write(&p, b"").map_err(|e| RuntimeError::io(&p, e))?;
    }
    // As in Docker's init layer: tools that read the mount table find the container's.
    let mtab = staging.join("etc/mtab");
    std::os::unix::fs::symlink("/proc/mounts", &mtab).map_err(|e| RuntimeError::io(&mtab, e))?;
    if let Err(e) = fs::rename(&staging, &init) {
        let _ = fs::remove_dir_all(&staging);
        if !init.is_dir() {
            return Err(RuntimeError::io(&init, e));
        }
    }
    Ok(init)
}

/// Where the anonymous volume for `target` lives in the container directory `dir`.
pub fn volume_dir(dir: &std::path::Path, target: &str) -> PathBuf {
    let hex = strata_image::Digest::of(target.as_bytes())
        .hex()
        .to_string();
    dir.join("volumes").join(&hex[..16])
}

/// What a `-v` mounts: a host path (made, a directory, when missing, as Docker makes it) or
/// a named volume (which must exist: `create` makes it).
pub fn user_mount(spec: &VolumeSpec, store: &Store) -> Result<UserMount, RuntimeError> {
    match spec {
        VolumeSpec::Anonymous { target } => Err(RuntimeError::Invalid(format!(
            "the anonymous volume at {target} has no name yet"
        ))),
        VolumeSpec::Named {
            name,
            target,
            readonly,
            ..
        } => Ok(volume_mount(
            &Volumes::new(store).get(name)?,
            target,
            *readonly,
        )),
        VolumeSpec::Bind {
            source,
            target,
            readonly,
            ..
        } => {
            if fs::symlink_metadata(source).is_err() {
                fs::create_dir_all(source).map_err(|e| {
                    RuntimeError::Invalid(format!(
                        "invalid volume specification {:?}: {}: {e}",
                        spec.to_string(),
                        source.display()
                    ))
                })?;
            }
            Ok(UserMount::Bind {
                source: source.clone(),
                target: target.clone(),
                readonly: *readonly,
            })
        }
    }
}

/// What mounting the volume `v` at `target` means: its `_data` directory, or what its options
/// ask for (a tmpfs, or a bind of a host directory), mounted in the container's own
/// mount namespace.
fn volume_mount(v: &Volume, target: &str, readonly: bool) -> UserMount {
    let o = v.meta.options.get("o").map(String::as_str).unwrap_or("");
    match v.meta.options.get("type").map(String::as_str) {
        // The local driver mounts what `o` says, executable (a `--tmpfs` is noexec).
        Some("tmpfs") => UserMount::Tmpfs {
            target: target.to_string(),
            options: ["exec", o, if readonly { "ro" } else { "" }]
                .into_iter()
                .filter(|x| !x.is_empty())
                .collect::<Vec<_>>()
                .join(","),
        },
        Some(_) => UserMount::Bind {
            source: PathBuf::from(v.meta.options.get("device").cloned().unwrap_or_default()),
            target: target.to_string(),
            readonly: readonly || o.split(',').any(|x| x == "ro"),
        },
        None => UserMount::Volume {
            dir: v
                .mountpoint
                .parent()
                .expect("_data has a parent")
                .to_path_buf(),
            target: target.to_string(),
            readonly,
        },
    }
}

/// On another container's network (`--network container:NAME`), the container shares that
/// one's hostname and its /etc/hosts, /etc/hostname and /etc/resolv.conf (the same files, so
/// an edit in one is seen in both, as in Docker).
fn shared_etc_files(
    store: &Store,
    other: &str,
) -> Result<(String, Vec<(PathBuf, String)>), RuntimeError> {
    let containers = Containers::new(store);
    let dir = containers.dir(&containers.resolve(other)?.id).path;
    let hostname_file = dir.join("hostname");
    let hostname = fs::read_to_string(&hostname_file)
        .map_err(|e| RuntimeError::io(&hostname_file, e))?
        .trim_end()
        .to_string();
    let files = ["hosts", "hostname", "resolv.conf"]
        .iter()
        .map(|f| (dir.join(f), format!("/etc/{f}")))
        .collect();
    Ok((hostname, files))
}

/// /etc/hosts, /etc/hostname and /etc/resolv.conf as Docker writes them for the container's
/// network mode: the host's for `host`; on a network, the container's address for its
/// hostname and the host's resolvers that a bridge can reach.
fn etc_files(
    dir: &std::path::Path,
    hostname: &str,
    h: &HostConfig,
    network: Option<&(strata_network::Network, strata_network::Endpoint)>,
) -> Result<Vec<(PathBuf, String)>, RuntimeError> {
    let hosts = dir.join("hosts");
    let own_address = match network {
        Some((_, ep)) => ep.ip.to_string(),
        None => "127.0.1.1".into(),
    };
    let mut content = if h.host_network() {
        fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n{own_address}\t{hostname}\n"
        )
    };
    for (host, ip) in &h.extra_hosts {
        content.push_str(&format!("{ip}\t{host}\n"));
    }
    let hostname_file = dir.join("hostname");
    let resolv = dir.join("resolv.conf");
    let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv_content = match network {
        Some((net, _)) if net.has_dns() => embedded_dns_resolv_conf(&host_resolv, h, net.gateway),
        Some(_) => resolv_conf(&without_loopback_nameservers(&host_resolv), h),
        None => resolv_conf(&host_resolv, h),
    };
    for (p, c) in [
        (&hosts, content),
        (&hostname_file, format!("{hostname}\n")),
        (&resolv, resolv_content),
    ] {
        fs::write(p, c).map_err(|e| RuntimeError::io(p, e))?;
    }
    Ok(vec![
        (hosts, "/etc/hosts".into()),
        (hostname_file, "/etc/hostname".into()),
        (resolv, "/etc/resolv.conf".into()),
    ])
}

/// On a user network, as Docker writes it for its embedded DNS: the network's name server
/// (which forwards to the host's or the `--dns` resolvers) and `ndots:0`, the host's search
/// domains and other options kept.
fn embedded_dns_resolv_conf(host: &str, h: &HostConfig, server: std::net::Ipv4Addr) -> String {
    let mut options: Vec<String> = if h.dns_options.is_empty() {
        host.lines()
            .filter_map(|l| l.strip_prefix("options"))
            .flat_map(|rest| rest.split_whitespace().map(String::from))
            .collect()
    } else {
        h.dns_options.clone()
    };
    if !options.iter().any(|o| o.starts_with("ndots:")) {
        options.push("ndots:0".into());
    }
    let embedded = HostConfig {
        dns: vec![server.to_string()],
        dns_options: options,
        ..h.clone()
    };
    resolv_conf(host, &embedded)
}

/// On a bridge, a nameserver on the host's loopback cannot be reached: Docker leaves those
/// out, and gives Google's public resolvers when none is left.
fn without_loopback_nameservers(host: &str) -> String {
    let is_loopback = |l: &str| {
        let mut w = l.split_whitespace();
        w.next() == Some("nameserver")
            && w.next()
                .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                .is_some_and(|a| a.is_loopback())
    };
    let mut out: String = host
        .lines()
        .filter(|l| !is_loopback(l))
        .map(|l| format!("{l}\n"))
        .collect();
    if !out.lines().any(|l| l.starts_with("nameserver")) {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

/// The host's resolv.conf with the nameservers, search domains and options the container was
/// given in place of the host's (each kind only when given, as Docker does).
fn resolv_conf(host: &str, h: &HostConfig) -> String {
    let given = [
        ("nameserver", !h.dns.is_empty()),
        ("search", !h.dns_search.is_empty()),
        ("domain", !h.dns_search.is_empty()),
        ("options", !h.dns_options.is_empty()),
    ];
    let mut out: String = host
        .lines()
        .filter(|l| {
            let key = l.split_whitespace().next().unwrap_or("");
            !given.iter().any(|(k, replaced)| *replaced && key == *k)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    for ns in &h.dns {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    if !h.dns_search.is_empty() {
        out.push_str(&format!("search {}\n", h.dns_search.join(" ")));
    }
    if !h.dns_options.is_empty() {
        out.push_str(&format!("options {}\n", h.dns_options.join(" ")));
    }
    out
}
