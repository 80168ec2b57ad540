//! The container's file system: the overlay root, Docker's standard mounts (/proc, /dev,
//! /sys, /dev/shm…), /etc files, user mounts and volumes, pivot_root, masked and read-only
//! paths. Every path inside the root is resolved inside it (pathrs, `*at` calls).

use super::*;

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
/// calling process, which must be single-threaded. The mounts end with the process (a
/// fuse-overlayfs root, whose daemon would keep the namespace, the caller unmounts with
/// [`RootSpec::unmount_fuse`]); the working directory is kept.
pub fn mount_for_copy(root: &RootSpec) -> Result<(), InitError> {
    unshare_private(CloneFlags::CLONE_NEWNS)?;
    let cwd = File::open(".").ctx(|| "open the working directory".into())?;
    clear_volatile_marker(root);
    let mounted = if root.fuse {
        // Its daemon lives in this namespace: the caller unmounts it when done.
        root.mount_fuse().map_err(|m| InitError {
            code: 125,
            message: m,
        })
    } else {
        mount_rootfs(root)
    };
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

pub(super) fn mount_rootfs(root: &RootSpec) -> Result<(), InitError> {
    if root.fuse {
        // The monitor mounted it before the namespaces were made.
        return Ok(());
    }
    // Relative lowerdirs keep the option string under the kernel's one-page limit.
    chdir(&root.layers_dir).ctx(|| format!("chdir {}", root.layers_dir.display()))?;
    // Never empty: the container's init layer is always the top lower layer.
    let lowers = root.lowers.join(":");
    let data = format!(
        "lowerdir={lowers},upperdir={},workdir={},index=off,volatile{}",
        root.upper.display(),
        root.work.display(),
        strata_image::layer::overlay_mount_options()
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
pub(super) fn tmpfs_options(options: &str) -> (MsFlags, String) {
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
pub(super) fn mount_in(
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
pub(super) fn open_fixed(root: &OwnedFd, path: &str, dir: bool) -> Result<OwnedFd, InitError> {
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

pub(super) fn mount_fixed(
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

pub(super) fn standard_mounts(
    root_fd: &OwnedFd,
    shm_size: i64,
    devices: &[crate::devices::DeviceNode],
) -> Result<(), InitError> {
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
    for (name, major, minor) in crate::devices::STANDARD {
        let made = mknodat(
            &dev,
            name,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            libc::makedev(major, minor),
        );
        if made == Err(nix::errno::Errno::EPERM) && strata_image::layer::in_user_namespace() {
            // Rootless: no device nodes can be made; the host's are bound instead (as
            // runc and podman do), keeping the host's modes.
            bind_host_device(root_fd, &dev, name)?;
            continue;
        }
        made.ctx(|| format!("mknod /dev/{name}"))?;
        // mknod honours the umask; devices must be 0666.
        nix::sys::stat::fchmodat(
            &dev,
            name,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .ctx(|| format!("chmod /dev/{name}"))?;
    }
    for node in devices {
        make_device(&dev, node)?;
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

/// Binds the host's `/dev/NAME` onto an empty file made at the container's `/dev/NAME`.
fn bind_host_device(root_fd: &OwnedFd, dev: &OwnedFd, name: &str) -> Result<(), InitError> {
    let made = nix::fcntl::openat(
        dev,
        name,
        nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_EXCL | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o666),
    )
    .ctx(|| format!("create /dev/{name}"))?;
    drop(made);
    let host = format!("/dev/{name}");
    bind_onto_file(root_fd, &host, Path::new(&host))
}

/// Binds `source` (a host path) onto the file `target` of the container's root.
fn bind_onto_file(root_fd: &OwnedFd, target: &str, source: &Path) -> Result<(), InitError> {
    let fd = open_fixed(root_fd, target, false)?;
    let via = format!("/proc/self/fd/{}", fd.as_raw_fd());
    mount(
        Some(source),
        via.as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .ctx(|| format!("bind {target}"))
}

/// Makes `node` in the container's /dev (`dev`, our own tmpfs: no symlink in it yet), its
/// directories first, with the host node's mode and owner.
fn make_device(dev: &OwnedFd, node: &crate::devices::DeviceNode) -> Result<(), InitError> {
    let path = std::path::Path::new(&node.path);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut so_far = std::path::PathBuf::new();
        for c in parent.components() {
            so_far.push(c);
            match nix::sys::stat::mkdirat(dev, &so_far, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(e).ctx(|| format!("mkdir /dev/{}", so_far.display())),
            }
        }
    }
    let kind = if node.block {
        SFlag::S_IFBLK
    } else {
        SFlag::S_IFCHR
    };
    let mode = Mode::from_bits_truncate(node.mode);
    mknodat(
        dev,
        path,
        kind,
        mode,
        libc::makedev(node.major as u32, node.minor as u32),
    )
    .ctx(|| format!("mknod /dev/{}", node.path))?;
    nix::sys::stat::fchmodat(
        dev,
        path,
        mode,
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .ctx(|| format!("chmod /dev/{}", node.path))?;
    nix::unistd::fchownat(
        dev,
        path,
        Some(nix::unistd::Uid::from_raw(node.uid)),
        Some(nix::unistd::Gid::from_raw(node.gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .ctx(|| format!("chown /dev/{}", node.path))
}

/// /sys: a fresh read-only sysfs in a network namespace of the container's own, else the
/// host's, bound read-only.
pub(super) fn mount_sys(root_fd: &OwnedFd, root: &RootSpec) -> Result<(), InitError> {
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

pub(super) fn reopen_dir(fd: &OwnedFd) -> nix::Result<OwnedFd> {
    nix::fcntl::openat(
        fd,
        ".",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// /etc/hosts, /etc/hostname, /etc/resolv.conf bound from the container's directory onto the
/// files the init layer provides (so nothing is written to the container's layer).
pub(super) fn etc_files(root_fd: &OwnedFd, root: &RootSpec) -> Result<(), InitError> {
    for (host, target) in &root.etc_files {
        bind_onto_file(root_fd, target, host)?;
    }
    Ok(())
}

pub(super) fn user_mounts(rootfs: &Root, root: &RootSpec) -> Result<(), InitError> {
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
pub(super) fn bind_into(
    rootfs: &Root,
    source: &Path,
    target: &str,
    readonly: bool,
) -> Result<(), InitError> {
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
pub(super) fn copy_tree_into(src: &OwnedFd, dst: &Path) -> std::io::Result<()> {
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
pub(super) fn enter_root(mountpoint: &Path) -> Result<OldRoot, InitError> {
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
pub(super) struct OldRoot(std::thread::JoinHandle<nix::Result<()>>);

impl OldRoot {
    /// Waits until the old root is detached; the process is single-threaded again after.
    pub(super) fn detached(self) -> Result<(), InitError> {
        match self.0.join() {
            Ok(r) => r.ctx(|| "detach old root".into())?,
            Err(_) => return fail(125, "detach old root: the helper thread panicked"),
        }
        chdir("/").ctx(|| "chdir /".into())
    }
}

pub(super) fn mask_paths() {
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
