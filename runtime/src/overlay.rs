//! How overlays are mounted: the kernel's overlayfs, or `fuse-overlayfs` where the kernel will
//! not mount one for this process (a user namespace on a kernel before 5.11, or one that
//! forbids it).
//!
//! Main types: [`Driver`] and [`Driver::current`] (chosen once per process: as root always the
//! kernel's; rootless by a probe mount in the user's runtime directory, remembered there for
//! the boot; `STRATA_STORAGE_DRIVER=overlay|fuse-overlayfs` chooses instead, and `info` shows
//! which and why).
//!
//! Key design decision: a fuse-overlayfs root is mounted by the container's monitor in the
//! user's shared mount namespace before the container's namespaces are made, and unmounted by
//! it after the exit, so its daemon is never inside the container (not in its pid namespace,
//! not killable from it). Its upper directory is then brought to the kernel's form
//! ([`normalize_upper`]): fuse-overlayfs marks every directory it makes opaque, and keeps
//! `.wh..opq` marker files of its own; the kernel marks only directories made over a deleted
//! one. The store holds one form, and layers and image IDs are the same with either driver.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The overlay implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// The kernel's overlayfs (`mount -t overlay`).
    Kernel,
    /// `fuse-overlayfs`, a FUSE daemon per mount.
    Fuse,
}

/// The variable that chooses the driver instead of the probe.
pub const DRIVER_VAR: &str = "STRATA_STORAGE_DRIVER";

use strata_image::layer::FUSE_OPAQUE_XATTR;

/// The marker files fuse-overlayfs leaves in an opaque directory of its upper layer.
const FUSE_MARKERS: [&str; 2] = [".wh..opq", ".wh..wh..opq"];

impl Driver {
    /// The name `info` prints (Docker's and podman's).
    pub fn name(self) -> &'static str {
        match self {
            Driver::Kernel => "overlay",
            Driver::Fuse => "fuse-overlayfs",
        }
    }

    /// This process's driver and why it is the one.
    pub fn current() -> (Driver, &'static str) {
        static CHOSEN: OnceLock<(Driver, &'static str)> = OnceLock::new();
        *CHOSEN.get_or_init(choose)
    }

    fn parse(name: &str) -> Option<Driver> {
        match name.trim() {
            "overlay" | "overlay2" => Some(Driver::Kernel),
            "fuse-overlayfs" => Some(Driver::Fuse),
            _ => None,
        }
    }
}

fn choose() -> (Driver, &'static str) {
    if let Some(d) = std::env::var(DRIVER_VAR)
        .ok()
        .and_then(|v| Driver::parse(&v))
    {
        return (d, "STRATA_STORAGE_DRIVER");
    }
    if !strata_image::layer::in_user_namespace() {
        return (Driver::Kernel, "root");
    }
    let Ok(dir) = crate::rootless::runtime_dir() else {
        return (Driver::Kernel, "no runtime directory to probe in");
    };
    let remembered = dir.join("storage-driver");
    if let Some(d) = fs::read_to_string(&remembered)
        .ok()
        .and_then(|t| Driver::parse(&t))
    {
        return (d, reason(d));
    }
    let d = if kernel_overlay_mounts(&dir) || !fuse_available() {
        Driver::Kernel
    } else {
        Driver::Fuse
    };
    let _ = strata_cache::fsutil::replace_file(&dir, &remembered, d.name().as_bytes());
    (d, reason(d))
}

fn reason(d: Driver) -> &'static str {
    match d {
        Driver::Kernel => "the kernel mounts overlayfs in this user namespace",
        Driver::Fuse => "the kernel does not mount overlayfs in this user namespace",
    }
}

/// Whether a writable kernel overlay mounts here, tried on a scratch directory in `dir`.
fn kernel_overlay_mounts(dir: &Path) -> bool {
    let scratch = dir.join(format!("overlay-probe-{}", std::process::id()));
    let sub = |n: &str| scratch.join(n);
    let made = ["lower", "upper", "work", "merged"]
        .iter()
        .all(|n| fs::create_dir_all(sub(n)).is_ok());
    let data = format!(
        "lowerdir={},upperdir={},workdir={}{}",
        sub("lower").display(),
        sub("upper").display(),
        sub("work").display(),
        strata_image::layer::overlay_mount_options()
    );
    let mounted = made
        && nix::mount::mount(
            Some("overlay"),
            &sub("merged"),
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(data.as_str()),
        )
        .is_ok();
    if mounted {
        let _ = nix::mount::umount2(&sub("merged"), nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = fs::remove_dir_all(&scratch);
    mounted
}

fn fuse_available() -> bool {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("fuse-overlayfs").is_file()))
        .unwrap_or(false);
    on_path
        && fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .is_ok()
}

/// Mounts `lowers` (colon-separated, relative to `cwd`), `upper` and `work` at `target` with
/// fuse-overlayfs; returns once the mount is there (the daemon detaches itself).
pub fn mount_fuse(
    cwd: &Path,
    lowers: &str,
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), String> {
    // Its complaints go to a file: the daemon it becomes could hold a pipe open for ever.
    let log = work.with_extension("fuse-overlayfs.log");
    let err = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut cmd = Command::new("fuse-overlayfs");
    // SAFETY: close_range is async-signal-safe. The daemon must hold none of our descriptors
    // (a client's pipe waiting for our end of file would wait for the container's end).
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
    let status = cmd
        .current_dir(cwd)
        .arg("-o")
        .arg(format!(
            "lowerdir={lowers},upperdir={},workdir={}",
            upper.display(),
            work.display()
        ))
        .arg(target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .status()
        .map_err(|e| format!("fuse-overlayfs: {e} (install the fuse-overlayfs package)"))?;
    let said = fs::read_to_string(&log).unwrap_or_default();
    let _ = fs::remove_file(&log);
    if status.success() {
        return Ok(());
    }
    let last = said
        .lines()
        .rfind(|l| !l.contains("unknown argument ignored"))
        .unwrap_or("");
    Err(format!(
        "fuse-overlayfs on {}: {status}: {last}",
        target.display()
    ))
}

/// Unmounts what is mounted at `target` (every layer of it); the daemon of a fuse mount ends.
pub fn unmount_all(target: &Path) {
    while nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH).is_ok() {}
}

/// Brings a fuse-overlayfs upper directory to the kernel's form: its own opaque marks and
/// marker files go, and a directory stays opaque only where `lowers` (absolute layer
/// directories, top first) hold something at its path, as the kernel marks only a directory
/// made over a deleted entry.
pub fn normalize_upper(upper: &Path, lowers: &[PathBuf]) -> std::io::Result<()> {
    normalize_dir(upper, Path::new(""), lowers)
}

fn normalize_dir(upper: &Path, rel: &Path, lowers: &[PathBuf]) -> std::io::Result<()> {
    let here = upper.join(rel);
    if xattr::get(&here, FUSE_OPAQUE_XATTR)?.is_some() {
        xattr::remove(&here, FUSE_OPAQUE_XATTR)?;
        for m in FUSE_MARKERS {
            match fs::remove_file(here.join(m)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        if shows_below(rel, lowers) {
            xattr::set(&here, strata_image::layer::overlay_opaque_xattr(), b"y")?;
        }
    }
    for entry in fs::read_dir(&here)? {
        let entry = entry?;
        // Its own bookkeeping (where each entry came from), never part of a layer.
        let _ = xattr::remove(entry.path(), "user.fuseoverlayfs.origin");
        if entry.file_type()?.is_dir() {
            normalize_dir(upper, &rel.join(entry.file_name()), lowers)?;
        }
    }
    Ok(())
}

/// Whether the topmost of `lowers` holding `rel` holds something other than a whiteout.
fn shows_below(rel: &Path, lowers: &[PathBuf]) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    lowers
        .iter()
        .find_map(|l| fs::symlink_metadata(l.join(rel)).ok())
        .is_some_and(|m| !(m.file_type().is_char_device() && m.rdev() == 0))
}
