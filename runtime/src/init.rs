//! The container's init, run in the child the monitor forks into the new pid namespace:
//! namespaces, the overlay root, Docker's mounts, pivot_root, hostname, loopback, the console,
//! user, capabilities, seccomp, and finally exec. Everything here runs in a single-threaded
//! process freshly re-executed from the strata binary.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::{mknodat, Mode, SFlag};
use nix::unistd::{chdir, pivot_root, sethostname};
use pathrs::Root;

use crate::netns::NetNs;
use crate::spec::{ProcessSpec, RootSpec, UserMount, DEFAULT_PATH, MASKED_PATHS, READONLY_PATHS};

/// A failure inside init: the exit code Docker would use and a one-line message.
#[derive(Debug)]
pub struct InitError {
    pub code: i32,
    pub message: String,
}

fn fail<T>(code: i32, message: impl Into<String>) -> Result<T, InitError> {
    Err(InitError {
        code,
        message: message.into(),
    })
}

trait Ctx<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, InitError>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, InitError> {
        self.map_err(|e| InitError {
            code: 125,
            message: format!("{}: {e}", what()),
        })
    }
}

/// Sets up the container and execs its process. Only returns on failure.
pub fn run(
    root: &RootSpec,
    proc_: &ProcessSpec,
    err_fd: RawFd,
    console: Option<RawFd>,
    cgroup_ready: OwnedFd,
    netns: Option<NetNs>,
) -> InitError {
    match setup(root, proc_, err_fd, console, cgroup_ready, netns) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// A result that never succeeds: the success path is exec.
pub enum Never {}

fn setup(
    root: &RootSpec,
    p: &ProcessSpec,
    err_fd: RawFd,
    console: Option<RawFd>,
    cgroup_ready: OwnedFd,
    netns: Option<NetNs>,
) -> Result<Never, InitError> {
    let mut namespaces = CloneFlags::CLONE_NEWNS;
    if !root.host_uts {
        namespaces |= CloneFlags::CLONE_NEWUTS;
    }
    if !root.host_ipc {
        namespaces |= CloneFlags::CLONE_NEWIPC;
    }
    unshare_private(namespaces)?;
    mount_rootfs(root)?;
    let root_fd: OwnedFd = nix::fcntl::open(
        &root.mountpoint,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open rootfs {}", root.mountpoint.display()))?;
    standard_mounts(&root_fd, root.shm_size)?;
    // sysfs shows the network devices of the namespace it is mounted from.
    // The monitor's helper has made it meanwhile (see `netns`).
    match netns {
        Some(ns) => ns.join().map_err(|m| InitError {
            code: 125,
            message: m,
        })?,
        None if root.isolated_network => return fail(125, "no network namespace was made"),
        None => {}
    }
    mount_sys(&root_fd, root)?;
    etc_files(&root_fd, root)?;
    if !root.mounts.is_empty() {
        // User mount targets are arbitrary paths in an untrusted tree: resolve them with pathrs.
        let rootfs = Root::open(&root.mountpoint)
            .ctx(|| format!("open rootfs {}", root.mountpoint.display()))?;
        user_mounts(&rootfs, root)?;
    }
    drop(root_fd);
    let old_root = enter_root(&root.mountpoint)?;
    if !root.privileged {
        mask_paths();
    }
    if root.readonly {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .ctx(|| "remount / read-only".into())?;
    }
    // Never in the host's UTS namespace: that would rename the host.
    if !root.hostname.is_empty() && !root.host_uts {
        sethostname(&root.hostname).ctx(|| "sethostname".into())?;
    }
    if p.tty {
        attach_console(console, p.console_size)?;
    }
    // Limits must apply to the user's process: wait until the monitor made the cgroup, and
    // join it through the files it sends (none when it moved us itself).
    let files = crate::fdpass::recv_fds(cgroup_ready.as_raw_fd())
        .ctx(|| "wait for the cgroup".into())?
        .ok_or_else(|| InitError {
            code: 125,
            message: "the monitor went away before the cgroup was ready".into(),
        })?;
    // Then the seccomp filter, which the monitor compiled meanwhile.
    let filters = crate::seccomp::read_filters(&mut File::from(cgroup_ready))
        .ctx(|| "receive the seccomp filter".into())?;
    crate::cgroup::join_with(&files).ctx(|| "join the container's cgroup".into())?;
    drop(files);
    old_root.detached()?;
    exec_process(p, err_fd, Some(filters))
}

/// New namespaces (a mount namespace among them) whose mounts propagate nowhere.
fn unshare_private(flags: CloneFlags) -> Result<(), InitError> {
    unshare(flags).ctx(|| "unshare namespaces".into())?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .ctx(|| "make / private".into())
}

/// The overlay is mounted `volatile` (no syncs on unmount: Docker does not need them either,
/// and they dominate a short container's run time); the kernel then leaves a marker in the
/// work dir that must go before the next mount of the same upper directory.
pub fn clear_volatile_marker(root: &RootSpec) {
    let _ = fs::remove_dir_all(root.work.join("work/incompat"));
    let _ = fs::remove_dir_all(root.work.join("incompat"));
}

/// Mounts a container that is not running where `cp` can reach it: its overlay at its rootfs
/// directory, with its bind mounts and volumes but not its tmpfs mounts (they hold nothing
/// while it is stopped: Docker's `cp` writes under them too), in a new mount namespace of the
/// calling process, which must be single-threaded. The mounts end with the process; the
/// working directory is kept.
pub fn mount_for_copy(root: &RootSpec) -> Result<(), InitError> {
    unshare_private(CloneFlags::CLONE_NEWNS)?;
    let cwd = File::open(".").ctx(|| "open the working directory".into())?;
    clear_volatile_marker(root);
    let mounted = mount_rootfs(root);
    nix::unistd::fchdir(&cwd).ctx(|| "return to the working directory".into())?;
    mounted?;
    let rootfs =
        Root::open(&root.mountpoint).ctx(|| format!("open {}", root.mountpoint.display()))?;
    let mut persistent = root.clone();
    persistent
        .mounts
        .retain(|m| !matches!(m, UserMount::Tmpfs { .. }));
    user_mounts(&rootfs, &persistent)
}

fn mount_rootfs(root: &RootSpec) -> Result<(), InitError> {
    // Relative lowerdirs keep the option string under the kernel's one-page limit.
    chdir(&root.layers_dir).ctx(|| format!("chdir {}", root.layers_dir.display()))?;
    // Never empty: the container's init layer is always the top lower layer.
    let lowers = root.lowers.join(":");
    let data = format!(
        "lowerdir={lowers},upperdir={},workdir={},index=off,volatile",
        root.upper.display(),
        root.work.display()
    );
    mount(
        Some("overlay"),
        &root.mountpoint,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .ctx(|| format!("mount overlay on {}", root.mountpoint.display()))
}

/// A tmpfs mount's options as Docker splits them: flag words (`ro`, `exec`, `nosuid`...)
/// become mount flags over Docker's defaults (`nosuid,nodev,noexec`), the rest (`size=`,
/// `mode=`, ...) the filesystem's data, `mode=1777` unless a mode is given.
fn tmpfs_options(options: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut data: Vec<&str> = Vec::new();
    for o in options.split(',').filter(|o| !o.is_empty()) {
        let (set, clear) = match o {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            other => {
                data.push(other);
                continue;
            }
        };
        flags = (flags | set) & !clear;
    }
    if !data.iter().any(|d| d.starts_with("mode=")) {
        data.push("mode=1777");
    }
    (flags, data.join(","))
}

/// Resolves (creating as directories) `target` inside the rootfs and mounts onto it through
/// its fd, so no symlink planted in the image can redirect the mount (CVE-2021-30465).
fn mount_in(
    rootfs: &Root,
    target: &str,
    source: Option<&str>,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), InitError> {
    let handle = rootfs
        .mkdir_all(target, &fs::Permissions::from_mode(0o755))
        .ctx(|| format!("create mount point {target}"))?;
    let fd = OwnedFd::from(handle);
    let via = format!("/proc/self/fd/{}", fd.as_raw_fd());
    mount(source, via.as_str(), fstype, flags, data).ctx(|| format!("mount {target}"))
}

/// Opens a fixed path inside the new root with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS):
/// the standard mount points come from the init layer, so no symlink may appear on the way.
fn open_fixed(root: &OwnedFd, path: &str, dir: bool) -> Result<OwnedFd, InitError> {
    let c = CString::new(path).expect("no NUL");
    let mut flags = libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    if dir {
        flags |= libc::O_DIRECTORY;
    }
    /// `struct open_how` of openat2(2).
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: flags as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 with a valid open_how; the result is a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return fail(
            125,
            format!(
                "open {path} in the container: {}",
                std::io::Error::last_os_error()
            ),
        );
    }
    // SAFETY: the kernel just returned this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn mount_fixed(
    root: &OwnedFd,
    target: &str,
    source: Option<&str>,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), InitError> {
    let fd = open_fixed(root, target, true)?;
    let via = format!("/proc/self/fd/{}", fd.as_raw_fd());
    mount(source, via.as_str(), fstype, flags, data).ctx(|| format!("mount {target}"))
}

fn standard_mounts(root_fd: &OwnedFd, shm_size: i64) -> Result<(), InitError> {
    let nosuid_noexec_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    mount_fixed(
        root_fd,
        "/proc",
        Some("proc"),
        Some("proc"),
        nosuid_noexec_nodev,
        None,
    )?;
    mount_fixed(
        root_fd,
        "/dev",
        Some("tmpfs"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    // The new /dev is our own empty tmpfs: make its directories, nodes and links.
    let dev = reopen_dir(&open_fixed(root_fd, "/dev", true)?).ctx(|| "open /dev".into())?;
    for d in ["pts", "shm", "mqueue"] {
        nix::sys::stat::mkdirat(&dev, d, Mode::from_bits_truncate(0o755))
            .ctx(|| format!("mkdir /dev/{d}"))?;
    }
    mount_fixed(
        root_fd,
        "/dev/pts",
        Some("devpts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let shm = if shm_size > 0 {
        format!("mode=1777,size={shm_size}")
    } else {
        "mode=1777,size=65536k".to_string()
    };
    mount_fixed(
        root_fd,
        "/dev/shm",
        Some("shm"),
        Some("tmpfs"),
        nosuid_noexec_nodev,
        Some(shm.as_str()),
    )?;
    mount_fixed(
        root_fd,
        "/dev/mqueue",
        Some("mqueue"),
        Some("mqueue"),
        nosuid_noexec_nodev,
        None,
    )?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        mknodat(
            &dev,
            name,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            libc::makedev(major, minor),
        )
        .ctx(|| format!("mknod /dev/{name}"))?;
        // mknod honours the umask; devices must be 0666.
        nix::sys::stat::fchmodat(
            &dev,
            name,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .ctx(|| format!("chmod /dev/{name}"))?;
    }
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        nix::unistd::symlinkat(target, &dev, link).ctx(|| format!("symlink /dev/{link}"))?;
    }
    Ok(())
}

/// /sys: a fresh read-only sysfs in a network namespace of the container's own, else the
/// host's, bound read-only.
fn mount_sys(root_fd: &OwnedFd, root: &RootSpec) -> Result<(), InitError> {
    let nosuid_noexec_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    let sys_flags = if root.privileged {
        nosuid_noexec_nodev
    } else {
        nosuid_noexec_nodev | MsFlags::MS_RDONLY
    };
    if root.isolated_network {
        mount_fixed(
            root_fd,
            "/sys",
            Some("sysfs"),
            Some("sysfs"),
            sys_flags,
            None,
        )?;
    } else {
        // sysfs cannot be mounted fresh without owning the network namespace: bind the host's.
        mount_fixed(
            root_fd,
            "/sys",
            Some("/sys"),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        if !root.privileged {
            mount_fixed(
                root_fd,
                "/sys",
                None,
                None,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | nosuid_noexec_nodev,
                None,
            )?;
        }
    }
    Ok(())
}

fn reopen_dir(fd: &OwnedFd) -> nix::Result<OwnedFd> {
    nix::fcntl::openat(
        fd,
        ".",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// /etc/hosts, /etc/hostname, /etc/resolv.conf bound from the container's directory onto the
/// files the init layer provides (so nothing is written to the container's layer).
fn etc_files(root_fd: &OwnedFd, root: &RootSpec) -> Result<(), InitError> {
    for (host, target) in &root.etc_files {
        let fd = open_fixed(root_fd, target, false)?;
        let via = format!("/proc/self/fd/{}", fd.as_raw_fd());
        mount(
            Some(host.as_path()),
            via.as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .ctx(|| format!("bind {target}"))?;
    }
    Ok(())
}

fn user_mounts(rootfs: &Root, root: &RootSpec) -> Result<(), InitError> {
    for m in &root.mounts {
        match m {
            UserMount::Bind {
                source,
                target,
                readonly,
            } => bind_into(rootfs, source, target, *readonly)?,
            UserMount::Volume {
                dir,
                target,
                readonly,
            } => {
                let data = dir.join("_data");
                fs::create_dir_all(&data).ctx(|| format!("create {}", data.display()))?;
                let marker = dir.join("populated");
                if !marker.exists() {
                    // Docker's rule: a new volume starts with what the image has there.
                    let here = rootfs
                        .mkdir_all(target, &fs::Permissions::from_mode(0o755))
                        .ctx(|| format!("create mount point {target}"))?;
                    let dir = here
                        .reopen(
                            pathrs::flags::OpenFlags::O_RDONLY
                                | pathrs::flags::OpenFlags::O_DIRECTORY,
                        )
                        .ctx(|| format!("open {target}"))?;
                    copy_tree_into(&OwnedFd::from(dir), &data)
                        .ctx(|| format!("fill the volume for {target}"))?;
                    fs::write(&marker, "").ctx(|| format!("write {}", marker.display()))?;
                }
                bind_into(rootfs, &data, target, *readonly)?;
            }
            UserMount::Tmpfs { target, options } => {
                let (flags, data) = tmpfs_options(options);
                mount_in(
                    rootfs,
                    target,
                    Some("tmpfs"),
                    Some("tmpfs"),
                    flags,
                    Some(data.as_str()),
                )?;
            }
        }
    }
    Ok(())
}

/// Bind-mounts the host path `source` at `target` in the rootfs (creating the mount point
/// inside it), read-only if asked.
fn bind_into(rootfs: &Root, source: &Path, target: &str, readonly: bool) -> Result<(), InitError> {
    let is_dir = source.is_dir();
    let handle = if is_dir {
        rootfs.mkdir_all(target, &fs::Permissions::from_mode(0o755))
    } else {
        let parent = Path::new(target)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or("/".into());
        rootfs
            .mkdir_all(&parent, &fs::Permissions::from_mode(0o755))
            .ctx(|| format!("create {parent}"))?;
        match rootfs.resolve(target) {
            Ok(h) => Ok(h),
            Err(_) => {
                rootfs
                    .create_file(
                        target,
                        pathrs::flags::OpenFlags::O_WRONLY,
                        &fs::Permissions::from_mode(0o644),
                    )
                    .ctx(|| format!("create {target}"))?;
                rootfs.resolve(target)
            }
        }
    }
    .ctx(|| format!("create mount point {target}"))?;
    let fd = OwnedFd::from(handle);
    let via = format!("/proc/self/fd/{}", fd.as_raw_fd());
    mount(
        Some(source),
        via.as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| format!("bind {} to {target}", source.display()))?;
    if readonly {
        // The fd above still names the directory under the new mount; resolve again
        // to reach the bind mount itself.
        let top = OwnedFd::from(rootfs.resolve(target).ctx(|| format!("resolve {target}"))?);
        let via = format!("/proc/self/fd/{}", top.as_raw_fd());
        mount(
            None::<&str>,
            via.as_str(),
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .ctx(|| format!("make {target} read-only"))?;
    }
    Ok(())
}

/// Copies the directory tree open at `src` (in the container's rootfs: untrusted, walked with
/// `openat`/`fstatat` from that fd, never following its symlinks) into the empty host
/// directory `dst`, with modes, owners and times; `dst` itself takes `src`'s mode and owner.
fn copy_tree_into(src: &OwnedFd, dst: &Path) -> std::io::Result<()> {
    use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
    use nix::sys::stat::{fstat, fstatat, Mode, SFlag};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::lchown;
    let io = std::io::Error::from;
    let top = fstat(src).map_err(io)?;
    let names: Vec<std::ffi::CString> = {
        let mut dir = nix::dir::Dir::from_fd(src.try_clone()?).map_err(io)?;
        dir.iter()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_owned())
            .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
            .collect()
    };
    for name in names {
        let m = fstatat(src, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io)?;
        let to = dst.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
        let kind = SFlag::from_bits_truncate(m.st_mode & SFlag::S_IFMT.bits());
        if kind == SFlag::S_IFLNK {
            std::os::unix::fs::symlink(readlinkat(src, name.as_c_str()).map_err(io)?, &to)?;
        } else if kind == SFlag::S_IFDIR {
            fs::create_dir(&to)?;
            let child = openat(
                src,
                name.as_c_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(io)?;
            copy_tree_into(&child, &to)?;
        } else if kind == SFlag::S_IFREG {
            let from = openat(
                src,
                name.as_c_str(),
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(io)?;
            let mut out = fs::File::create(&to)?;
            std::io::copy(&mut fs::File::from(from), &mut out)?;
            out.set_permissions(fs::Permissions::from_mode(m.st_mode & 0o7777))?;
        } else {
            // Devices, FIFOs and sockets do not belong in a volume's seed.
            continue;
        }
        lchown(&to, Some(m.st_uid), Some(m.st_gid))?;
        if kind != SFlag::S_IFLNK {
            let t = nix::sys::time::TimeSpec::new(m.st_mtime, m.st_mtime_nsec);
            let _ = nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &to,
                &t,
                &t,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            );
        }
    }
    fs::set_permissions(dst, fs::Permissions::from_mode(top.st_mode & 0o7777))?;
    lchown(dst, Some(top.st_uid), Some(top.st_gid))
}

/// pivot_root into the new root; the old one is detached by a helper thread, see [`OldRoot`].
fn enter_root(mountpoint: &Path) -> Result<OldRoot, InitError> {
    chdir(mountpoint).ctx(|| format!("chdir {}", mountpoint.display()))?;
    pivot_root(".", ".").ctx(|| "pivot_root".into())?;
    // The old root is now stacked under "."; make it private and detach it.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| "make old root a slave".into())?;
    // Absolute paths resolve from the new root already (the old one is stacked on it, and a
    // walk starts at the root without following what is mounted there), so the rest of the
    // setup goes on while the helper detaches it. Nothing runs the user's command before
    // `OldRoot::detached`.
    std::thread::Builder::new()
        .stack_size(64 << 10)
        .spawn(|| umount2(".", MntFlags::MNT_DETACH))
        .map(OldRoot)
        .ctx(|| "start detaching the old root".into())
}

/// The old root's detach in flight. Unmounting it waits for an RCU grace period before the
/// call returns (0.4-2 ms measured on a 2-vCPU VM, where the kernel's expedited grace period
/// interrupts the other CPUs); the container's remaining setup (masked paths, hostname,
/// console, cgroup) overlaps that wait.
struct OldRoot(std::thread::JoinHandle<nix::Result<()>>);

impl OldRoot {
    /// Waits until the old root is detached; the process is single-threaded again after.
    fn detached(self) -> Result<(), InitError> {
        match self.0.join() {
            Ok(r) => r.ctx(|| "detach old root".into())?,
            Err(_) => return fail(125, "detach old root: the helper thread panicked"),
        }
        chdir("/").ctx(|| "chdir /".into())
    }
}

fn mask_paths() {
    for p in MASKED_PATHS {
        let path = Path::new(p);
        let Ok(meta) = fs::symlink_metadata(path) else {
            continue;
        };
        let r = if meta.is_dir() {
            mount(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                Some("size=0"),
            )
        } else {
            mount(
                Some("/dev/null"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        if let Err(e) = r {
            tracing::debug!("mask {p}: {e}");
        }
    }
    for p in READONLY_PATHS {
        if !Path::new(p).exists() {
            continue;
        }
        let _ = mount(
            Some(p),
            p,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        );
        let _ = mount(
            Some(p),
            p,
            None::<&str>,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_BIND
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_REC,
            None::<&str>,
        );
    }
}

/// Opens a pty in the container's own devpts, sends the master to the monitor, and makes the
/// slave the controlling terminal and stdio.
fn attach_console(console: Option<RawFd>, size: Option<(u16, u16)>) -> Result<(), InitError> {
    let sock = console.ok_or_else(|| InitError {
        code: 125,
        message: "tty requested without a console socket".into(),
    })?;
    let master = nix::pty::posix_openpt(nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY)
        .ctx(|| "open /dev/ptmx".into())?;
    nix::pty::grantpt(&master).ctx(|| "grantpt".into())?;
    nix::pty::unlockpt(&master).ctx(|| "unlockpt".into())?;
    if let Some((rows, cols)) = size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ with a winsize we own, on the master we just opened.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    let name = nix::pty::ptsname_r(&master).ctx(|| "ptsname".into())?;
    let slave = nix::fcntl::open(
        name.as_str(),
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY,
        Mode::empty(),
    )
    .ctx(|| format!("open {name}"))?;
    crate::fdpass::send_fd(sock, master.as_raw_fd())
        .ctx(|| "send the console to the monitor".into())?;
    drop(master);
    // SAFETY: the console socket is ours to close.
    unsafe { libc::close(sock) };
    nix::unistd::setsid().ctx(|| "setsid".into())?;
    // SAFETY: TIOCSCTTY on an fd we own.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return fail(
            125,
            format!(
                "set controlling terminal: {}",
                std::io::Error::last_os_error()
            ),
        );
    }
    for target in 0..3 {
        // SAFETY: dup2 onto the standard fds.
        unsafe { libc::dup2(slave.as_raw_fd(), target) };
    }
    Ok(())
}

/// Environment with Docker's defaults filled in.
pub fn final_env(env: &[String], home: &str, hostname: &str, tty: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let has = |k: &str| {
        env.iter()
            .any(|e| e.split_once('=').map(|(a, _)| a) == Some(k))
    };
    if !has("PATH") {
        out.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !hostname.is_empty() && !has("HOSTNAME") {
        out.push(format!("HOSTNAME={hostname}"));
    }
    if tty && !has("TERM") {
        out.push("TERM=xterm".into());
    }
    out.extend(env.iter().cloned());
    if !has("HOME") {
        out.push(format!("HOME={home}"));
    }
    out
}

/// PATH lookup of `cmd` inside the (already entered) container root. Returns the path or the
/// Docker exit code and message.
pub fn find_executable(cmd: &str, env: &[String]) -> Result<String, InitError> {
    let check = |p: &Path| -> Result<(), InitError> {
        match fs::metadata(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fail(
                127,
                format!(
                    "exec: {:?}: stat {}: no such file or directory",
                    cmd,
                    p.display()
                ),
            ),
            Err(e) => fail(126, format!("exec: {cmd:?}: {e}")),
            // A directory cannot be executed either: execve says EACCES, and so does Docker.
            Ok(m) if m.is_dir() || m.permissions().mode() & 0o111 == 0 => {
                fail(126, format!("exec: {cmd:?}: permission denied"))
            }
            Ok(_) => Ok(()),
        }
    };
    if cmd.contains('/') {
        check(Path::new(cmd))?;
        return Ok(cmd.to_string());
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':') {
        let candidate = Path::new(if dir.is_empty() { "." } else { dir }).join(cmd);
        if let Ok(m) = fs::metadata(&candidate) {
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Ok(candidate.to_string_lossy().into_owned());
            }
        }
    }
    fail(
        127,
        format!("exec: {cmd:?}: executable file not found in $PATH"),
    )
}

/// User, limits, working directory, security, fds, and exec. Shared with `exec`. `filters`:
/// the seccomp filter to load if `p` asks for one, when it was compiled already.
pub fn exec_process(
    p: &ProcessSpec,
    err_fd: RawFd,
    filters: Option<Vec<crate::seccomp::BpfProgram>>,
) -> Result<Never, InitError> {
    if p.args.is_empty() {
        return fail(125, "no command specified");
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = fs::read_to_string("/etc/group").unwrap_or_default();
    let mut user = crate::user::resolve(&p.user, &passwd, &group).map_err(|m| InitError {
        code: 125,
        message: m,
    })?;
    let more = crate::user::group_ids(&p.group_add, &group).map_err(|m| InitError {
        code: 125,
        message: m,
    })?;
    user.additional_gids.extend(more);
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let env = final_env(&p.env, &user.home, &hostname, p.tty);
    raise_nofile();
    set_ulimits(&p.ulimits)?;
    // Only our error pipe survives from here: no fd can carry a host directory into the
    // container (CVE-2024-21626), not even through a working directory like /proc/self/fd/N.
    close_fds_except(err_fd);
    let cwd = if p.cwd.is_empty() {
        "/"
    } else {
        p.cwd.as_str()
    };
    if !Path::new(cwd).exists() {
        fs::create_dir_all(cwd).ctx(|| format!("create working directory {cwd}"))?;
    }
    chdir(cwd).ctx(|| format!("chdir to working directory {cwd}"))?;
    match nix::unistd::getcwd() {
        Ok(d) if d.starts_with("/") && d.to_string_lossy() != "(unreachable)" => {}
        _ => {
            return fail(
                125,
                format!("working directory {cwd} is outside the container"),
            )
        }
    }
    let program = find_executable(&p.args[0], &env)?;
    if p.no_new_privs {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return fail(125, "set no_new_privs");
        }
    }
    drop_privileges(p, &user, filters)?;
    reset_signals();
    if p.init {
        return run_as_init(&program, &p.args, &env, err_fd);
    }
    Err(do_exec(&program, &p.args, &env))
}

fn raise_nofile() {
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        // Never above the host's hard limit, so this cannot fail for lack of privilege.
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// `--ulimit`s, after the defaults (so `nofile` given replaces the raised default).
fn set_ulimits(limits: &[crate::container::Ulimit]) -> Result<(), InitError> {
    for l in limits {
        let Some(resource) = crate::container::rlimit_resource(&l.name) else {
            return fail(125, format!("unknown ulimit {:?}", l.name));
        };
        let value = |v: i64| if v < 0 { libc::RLIM_INFINITY } else { v as u64 };
        nix::sys::resource::setrlimit(resource, value(l.soft), value(l.hard))
            .ctx(|| format!("set ulimit {}={}:{}", l.name, l.soft, l.hard))?;
    }
    Ok(())
}

fn close_fds_except(keep: RawFd) {
    // SAFETY: close_range on descriptor ranges; stdio (0-2) and `keep` stay.
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32);
        }
        libc::syscall(
            libc::SYS_close_range,
            (keep.max(2) + 1) as u32,
            u32::MAX,
            0u32,
        );
    }
}

fn drop_privileges(
    p: &ProcessSpec,
    user: &crate::user::ExecUser,
    filters: Option<Vec<crate::seccomp::BpfProgram>>,
) -> Result<(), InitError> {
    crate::caps::drop_bounding(&p.caps).ctx(|| "drop capabilities".into())?;
    if p.seccomp {
        let filters = match filters {
            Some(f) if !f.is_empty() => f,
            _ => crate::seccomp::profile_for_caps(&p.caps).map_err(|m| InitError {
                code: 125,
                message: m,
            })?,
        };
        crate::seccomp::apply(&filters).ctx(|| "load seccomp profile".into())?;
    }
    // SAFETY: prctl/setgroups/setres[ug]id with plain arguments.
    unsafe {
        libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0);
        let groups = crate::user::groups_for(user, p.buildkit_groups);
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
            return fail(
                125,
                format!("setgroups: {}", std::io::Error::last_os_error()),
            );
        }
        if libc::setresgid(user.gid, user.gid, user.gid) != 0 {
            return fail(
                125,
                format!("setgid {}: {}", user.gid, std::io::Error::last_os_error()),
            );
        }
        if libc::setresuid(user.uid, user.uid, user.uid) != 0 {
            return fail(
                125,
                format!("setuid {}: {}", user.uid, std::io::Error::last_os_error()),
            );
        }
    }
    // Root keeps the container's set; another user gets none (only the bounding set), like Docker.
    let eff = if user.uid == 0 {
        p.caps.clone()
    } else {
        Default::default()
    };
    crate::caps::set_process(&eff).ctx(|| "set capabilities".into())?;
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    Ok(())
}

fn reset_signals() {
    // SAFETY: restoring default dispositions and an empty mask before exec.
    unsafe {
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

fn do_exec(program: &str, args: &[String], env: &[String]) -> InitError {
    let c = |s: &str| CString::new(s).unwrap_or_else(|_| CString::new("?").expect("no NUL"));
    let prog = c(program);
    let argv: Vec<CString> = args.iter().map(|a| c(a)).collect();
    let envp: Vec<CString> = env.iter().map(|a| c(a)).collect();
    let e = nix::unistd::execve(&prog, &argv, &envp).unwrap_err();
    let code = if e == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    };
    InitError {
        code,
        message: format!("exec {program}: {e}"),
    }
}

/// `--init`: this process stays pid 1, reaping zombies and forwarding signals to the command.
fn run_as_init(
    program: &str,
    args: &[String],
    env: &[String],
    err_fd: RawFd,
) -> Result<Never, InitError> {
    // SAFETY: the reaper stays strata code inside the container: keep it non-dumpable so the
    // container cannot open its /proc/<pid>/exe (CVE-2019-5736).
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // Block forwarded signals before forking so none is lost.
    let mut set = nix::sys::signal::SigSet::empty();
    for s in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGQUIT,
        nix::sys::signal::Signal::SIGUSR1,
        nix::sys::signal::Signal::SIGUSR2,
        nix::sys::signal::Signal::SIGWINCH,
        nix::sys::signal::Signal::SIGCHLD,
    ] {
        set.add(s);
    }
    set.thread_block().ctx(|| "block signals".into())?;
    // SAFETY: single-threaded; the child execs or exits.
    match unsafe { nix::unistd::fork() }.ctx(|| "fork".into())? {
        nix::unistd::ForkResult::Child => {
            reset_signals();
            let e = do_exec(program, args, env);
            report(err_fd, &e);
            std::process::exit(e.code);
        }
        nix::unistd::ForkResult::Parent { child } => {
            // SAFETY: our copy of the error pipe is not needed; the child reports exec errors.
            unsafe { libc::close(err_fd) };
            let sfd = nix::sys::signalfd::SignalFd::new(&set).ctx(|| "signalfd".into())?;
            loop {
                let Ok(Some(info)) = sfd.read_signal() else {
                    continue;
                };
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGCHLD {
                    loop {
                        match nix::sys::wait::waitpid(
                            None,
                            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                        ) {
                            Ok(nix::sys::wait::WaitStatus::Exited(pid, code)) if pid == child => {
                                std::process::exit(code)
                            }
                            Ok(nix::sys::wait::WaitStatus::Signaled(pid, s, _)) if pid == child => {
                                std::process::exit(128 + s as i32)
                            }
                            Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(_) => break,
                            Ok(_) => continue,
                        }
                    }
                } else {
                    // SAFETY: forwarding a signal to our child.
                    unsafe { libc::kill(child.as_raw(), sig) };
                }
            }
        }
    }
}

/// Writes an init failure to the error pipe: `<code> <message>`.
pub fn report(err_fd: RawFd, e: &InitError) {
    // SAFETY: err_fd is the pipe's write end, owned by this process until exit.
    let mut f = unsafe { File::from_raw_fd(err_fd) };
    let failure = crate::launch::InitFailure {
        code: e.code,
        message: e.message.clone(),
    };
    let _ = f.write_all(failure.encode().as_bytes());
    std::mem::forget(f);
}
