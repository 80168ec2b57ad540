//! The strata binary as containers see it: a read-only bind mount of itself under /run/strata,
//! so a container that reaches the binary through `/proc/<pid>/exe` (CVE-2019-5736) cannot
//! write to it (EROFS), without copying the binary on every start.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use crate::RuntimeError;

const DIR: &str = "/run/strata/exe";

/// The path to re-exec: a read-only view of the running binary, made once per binary.
pub fn protected_exe() -> Result<PathBuf, RuntimeError> {
    let me = fs::metadata("/proc/self/exe").map_err(|e| RuntimeError::io("/proc/self/exe", e))?;
    let target = Path::new(DIR).join(format!(
        "strata-{:x}-{:x}-{}",
        me.dev(),
        me.ino(),
        me.mtime()
    ));
    if is_readonly_view(&target, me.ino()) {
        return Ok(target);
    }
    fs::create_dir_all(DIR).map_err(|e| RuntimeError::io(DIR, e))?;
    let _lock = strata_cache::fsutil::FileLock::acquire(
        &Path::new(DIR).join(".lock"),
        strata_cache::fsutil::LockMode::Exclusive,
    )?;
    if is_readonly_view(&target, me.ino()) {
        return Ok(target);
    }
    if !target.exists() {
        fs::write(&target, b"").map_err(|e| RuntimeError::io(&target, e))?;
    }
    mount(
        Some("/proc/self/exe"),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| RuntimeError::io(&target, e.into()))?;
    mount(
        None::<&str>,
        &target,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| RuntimeError::io(&target, e.into()))?;
    drop_stale_views();
    Ok(target)
}

/// Unmounts views of binaries that were replaced since (a rebuilt or upgraded strata): every
/// mount on the host is copied into each new container's mount namespace, so stale ones cost
/// every start a little.
fn drop_stale_views() {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() > 4 && f[4].starts_with(DIR) && f[3].ends_with("//deleted") {
            let _ = nix::mount::umount2(f[4], nix::mount::MntFlags::MNT_DETACH);
            let _ = fs::remove_file(f[4]);
        }
    }
}

fn is_readonly_view(p: &Path, ino: u64) -> bool {
    let same = fs::metadata(p).map(|m| m.ino() == ino).unwrap_or(false);
    same && nix::sys::statvfs::statvfs(p)
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false)
}
