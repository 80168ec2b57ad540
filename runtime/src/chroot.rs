//! chroot isolation for build RUN steps: the command runs in a plain directory tree with
//! `chroot`, without new namespaces, for builds inside a container that may not create them
//! (Docker's default capability set and seccomp profile allow neither mounts nor `unshare`;
//! buildah's `--isolation chroot` and kaniko work there too).
//!
//! Main types: [`Isolation`] (how a build runs its RUN steps, and why: [`Isolation::detect`])
//! and [`ChrootSpec`] (what the single-threaded helper `strata __chroot --spec-fd N` is told:
//! the tree and the same [`ProcessSpec`] a container's init gets).
//!
//! Key design decision: the helper shares the container init's last stage
//! ([`crate::init::exec_process`]): user and groups from the tree's own files, limits,
//! working directory, Docker's capability set and seccomp profile (where this process may
//! load one), exec. What chroot cannot give is said, not faked: the host's network, pid and
//! IPC namespaces; no `/sys`; `/dev`, `/proc`, `/etc/hosts` and `/etc/resolv.conf` are bound from the
//! host only where a private mount namespace can be had, else the tree keeps device nodes
//! made for it. `CAP_SYS_CHROOT` is left out of the step's set, so the step cannot chroot
//! its way out of the tree; a step running as root still has the builder's other privileges
//! on the host (as with buildah's chroot isolation): use it for your own Dockerfiles.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::spec::ProcessSpec;

/// Capability numbers (linux/capability.h).
const CAP_SYS_CHROOT: u32 = 18;
const CAP_SYS_ADMIN: u32 = 21;

/// The re-exec verb of the chroot helper (`__chroot --spec-fd N`).
pub const CHROOT: &str = "__chroot";

/// How a build runs its RUN steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// A container: namespaces, an overlay root, a cgroup (the default).
    Oci,
    /// `chroot` into a plain copy of the layers; every step's layer is found by comparing the
    /// tree with a snapshot of it.
    Chroot,
}

impl std::str::FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Isolation, String> {
        match s {
            "oci" => Ok(Isolation::Oci),
            "chroot" => Ok(Isolation::Chroot),
            _ => Err(format!(
                "invalid isolation {s:?}: expected \"default\", \"oci\" or \"chroot\""
            )),
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isolation::Oci => "oci",
            Isolation::Chroot => "chroot",
        })
    }
}

impl Isolation {
    /// The isolation `asked` names (`--isolation`, `STRATA_ISOLATION`; no reason), or for
    /// `default` (or nothing) the one this process can get, with the reason `info` shows.
    pub fn choose(asked: Option<&str>) -> Result<(Isolation, Option<String>), String> {
        match asked.filter(|a| !a.is_empty() && *a != "default") {
            Some(a) => match a.parse()? {
                Isolation::Oci if !holds_cap_sys_admin() => Err(
                    "oci isolation needs mounts, and this process may not mount (no \
                     CAP_SYS_ADMIN): use --isolation chroot"
                        .into(),
                ),
                iso => Ok((iso, None)),
            },
            None => {
                let (iso, why) = Isolation::detect();
                Ok((iso, Some(why)))
            }
        }
    }

    /// `oci` where this process may mount (it holds `CAP_SYS_ADMIN`, as root or in its user
    /// namespace), else `chroot`.
    pub fn detect() -> (Isolation, String) {
        if holds_cap_sys_admin() {
            (Isolation::Oci, "this process may mount".into())
        } else {
            (
                Isolation::Chroot,
                "this process may not mount (no CAP_SYS_ADMIN)".into(),
            )
        }
    }
}

/// Whether `CAP_SYS_ADMIN` is in this process's effective set.
fn holds_cap_sys_admin() -> bool {
    own_caps("CapEff:") & (1 << CAP_SYS_ADMIN) != 0
}

/// One of this process's capability sets as `/proc/self/status` shows it (`CapEff:`...).
fn own_caps(field: &str) -> u64 {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// What the helper runs.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ChrootSpec {
    /// The tree to chroot into.
    pub rootfs: PathBuf,
    pub process: ProcessSpec,
}

/// The device nodes a step gets, as a container's `/dev` has them.
const DEVICES: [(&str, u32, u32); 6] = crate::devices::STANDARD;

/// Host files bound over the tree's own where a mount namespace can be had.
const HOST_FILES: [&str; 2] = ["etc/resolv.conf", "etc/hosts"];

/// Readies the tree `rootfs` for steps, before the snapshot its layers are compared with (so
/// nothing made here lands in a layer): `dev`, `proc` and `etc` directories, a device node for
/// each of [`DEVICES`] (an empty file to bind the host's onto where `mknod` is not allowed),
/// and empty `/etc/hosts` and `/etc/resolv.conf` where the image has none.
pub fn prepare_rootfs(rootfs: &Path) -> Result<(), String> {
    let root = pathrs::Root::open(rootfs).map_err(|e| format!("{}: {e}", rootfs.display()))?;
    let dir_mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    for d in ["dev", "proc", "etc"] {
        if root.resolve_nofollow(d).is_err() {
            root.mkdir_all(d, &dir_mode)
                .map_err(|e| format!("{}/{d}: {e}", rootfs.display()))?;
        }
    }
    let dev = rootfs.join("dev");
    for (name, major, minor) in DEVICES {
        let path = dev.join(name);
        if path.symlink_metadata().is_ok() {
            continue;
        }
        let made = nix::sys::stat::mknod(
            &path,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(major.into(), minor.into()),
        );
        if made.is_err() {
            fs::write(&path, b"").map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let _ = fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666));
    }
    for f in HOST_FILES {
        if root.resolve_nofollow(f).is_err() {
            let p = rootfs.join(f);
            fs::write(&p, b"").map_err(|e| format!("{}: {e}", p.display()))?;
        }
    }
    Ok(())
}

/// Starts the helper `exe` for `spec`, its output on `stdout`/`stderr` and stdin empty. It
/// dies with its parent (`PR_SET_PDEATHSIG`): a build killed mid-step leaves no step running.
pub fn spawn(
    exe: &Path,
    store_root: &Path,
    spec: &ChrootSpec,
    stdout: Stdio,
    stderr: Stdio,
) -> std::io::Result<Child> {
    let (r, mut w) = std::io::pipe()?;
    let fd = OwnedFd::from(r);
    let raw = fd.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.arg("--root")
        .arg(store_root)
        .args([CHROOT, "--spec-fd", "3"])
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    // SAFETY: dup2/fcntl onto fd 3 and prctl are async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            // dup2 onto itself would leave close-on-exec set.
            let moved = if raw == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, 3)
            };
            if moved < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(fd);
    let json = serde_json::to_vec(spec).map_err(std::io::Error::other)?;
    w.write_all(&json)?;
    Ok(child)
}

/// The helper (`strata __chroot --spec-fd N`): binds what it can, chroots, and execs the
/// step's process. Returns only on failure, with the exit code.
pub fn helper_main(spec_fd: i32) -> i32 {
    // SAFETY: our parent handed us this pipe's read end as `spec_fd`.
    let mut f = fs::File::from(unsafe { OwnedFd::from_raw_fd(spec_fd) });
    let mut buf = Vec::new();
    let spec: ChrootSpec = match f
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_slice(&buf).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("Error: chroot request: {e}");
            return 125;
        }
    };
    drop(f);
    if let Err(e) = enter(&spec.rootfs) {
        eprintln!("Error: {e}");
        return 125;
    }
    match crate::init::exec_process(&spec.process, 2, None) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("Error: {}", e.message);
            e.code
        }
    }
}

/// Moves this process into `rootfs`: with a private mount namespace (where one can be made)
/// the host's device nodes, `/proc` and name files are bound in first, and vanish
/// with the process.
fn enter(rootfs: &Path) -> Result<(), String> {
    if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).is_ok() {
        bind_host_files(rootfs);
    }
    nix::unistd::chdir(rootfs).map_err(|e| format!("chdir {}: {e}", rootfs.display()))?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot {}: {e}", rootfs.display()))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))
}

/// Best effort: every bind that fails leaves what [`prepare_rootfs`] made.
fn bind_host_files(rootfs: &Path) {
    use nix::mount::{mount, MsFlags};
    let none: Option<&str> = None;
    let _ = mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_SLAVE, none);
    let bind = |src: &Path, dst: &Path, flags: MsFlags| {
        let _ = mount(Some(src), dst, none, MsFlags::MS_BIND | flags, none);
    };
    for (name, _, _) in DEVICES {
        let dst = rootfs.join("dev").join(name);
        if dst.metadata().is_ok_and(|m| m.is_file()) {
            bind(&Path::new("/dev").join(name), &dst, MsFlags::empty());
        }
    }
    let proc_ok = mount(
        Some("proc"),
        &rootfs.join("proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        none,
    )
    .is_ok();
    if !proc_ok {
        bind(Path::new("/proc"), &rootfs.join("proc"), MsFlags::MS_REC);
    }
    for f in HOST_FILES {
        // Only over a regular file of the tree's (never through a symlink it holds).
        let dst = rootfs.join(f);
        if dst.symlink_metadata().is_ok_and(|m| m.is_file()) {
            bind(&Path::new("/").join(f), &dst, MsFlags::empty());
        }
    }
}

/// The capabilities a chroot step gets: Docker's default set without `CAP_SYS_CHROOT` (which
/// would let it leave the tree), and only those this process holds.
pub fn step_caps() -> BTreeSet<u32> {
    let held = own_caps("CapPrm:");
    crate::caps::container_set(false, &[], &[])
        .into_iter()
        .filter(|&c| c != CAP_SYS_CHROOT && held & (1u64 << c) != 0)
        .collect()
}

/// Whether a step may load Docker's seccomp profile here (it takes `CAP_SYS_ADMIN` without
/// no_new_privs); where it may not, the container around the build already has one.
pub fn can_load_seccomp() -> bool {
    holds_cap_sys_admin()
}
