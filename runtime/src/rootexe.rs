//! The strata binary as containers see it: a copy of itself in a read-only tmpfs of its own
//! under /run/strata/exe, made once per binary. A container that reaches the binary through
//! `/proc/<pid>/exe` (CVE-2019-5736) cannot write to it (EROFS).
//!
//! A copy rather than a bind mount of the installed file, because every container start
//! executes the binary twice and forks it once, and what the page cache holds decides what
//! those cost. The tmpfs is mounted `huge=always`, so the copy sits in 2 MiB pages, and the
//! binary is linked with its segments 2 MiB-aligned (`.cargo/config.toml`), so the kernel maps
//! its code with a few PMD entries instead of faulting it in 64 KiB at a time: the client,
//! the monitor and init took ~150 page faults on text alone per start. A file as a linker
//! writes it (through a shared mapping) sits in small pages; measured on this 2-vCPU VM, a
//! start from the copy took 6.46 ms against 7.31 ms from the freshly built file (60 runs each,
//! interleaved). Where the kernel has no huge pages for tmpfs, the copy is made without them.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::RuntimeError;

const DIR: &str = "/run/strata/exe";
/// The copy's name inside its tmpfs, and the file naming the binary it was copied from.
const EXE: &str = "strata";
const SOURCE: &str = "source";

/// Whether this process runs the protected copy from a place that cannot see it: inside a
/// container (the copy's tmpfs is mounted in the host's mount namespace only), reached through
/// `/proc/self/exe` (`#!/proc/self/exe` as a container's entrypoint executes its runtime's
/// binary) or a strata process's `/proc/<pid>/exe`. The copy must not act as the runtime
/// there: callers refuse to run.
pub fn reentered_from_a_container() -> bool {
    let Ok(path) = fs::read_link("/proc/self/exe") else {
        return false;
    };
    if !is_copy_path(&path) {
        return false;
    }
    match (fs::metadata(&path), fs::metadata("/proc/self/exe")) {
        (Ok(seen), Ok(running)) => (seen.dev(), seen.ino()) != (running.dev(), running.ino()),
        _ => true,
    }
}

/// The path to re-exec: a read-only copy of the running binary, made once per binary.
pub fn protected_exe() -> Result<PathBuf, RuntimeError> {
    let me = fs::metadata("/proc/self/exe").map_err(|e| RuntimeError::io("/proc/self/exe", e))?;
    let mut base = PathBuf::from(DIR);
    let mut dir = base.join(copy_name(&me));
    let mut exe = dir.join(EXE);
    if is_complete_copy(&dir, me.size()) {
        return Ok(exe);
    }
    if crate::rootless::is_rootless() {
        // /run is not the user's: the copies live in the user's runtime directory, in the
        // mount namespace all the user's commands share.
        base = crate::rootless::runtime_dir()?.join("exe");
        dir = base.join(copy_name(&me));
        exe = dir.join(EXE);
        if is_complete_copy(&dir, me.size()) {
            return Ok(exe);
        }
    }
    fs::create_dir_all(&base).map_err(|e| RuntimeError::io(&base, e))?;
    let _lock = strata_cache::fsutil::FileLock::acquire(
        &base.join(".lock"),
        strata_cache::fsutil::LockMode::Exclusive,
    )?;
    if is_complete_copy(&dir, me.size()) {
        return Ok(exe);
    }
    // A copy a crash left writable (or anything else mounted there, such as the bind mount
    // on a plain file that earlier versions made) goes first.
    while umount2(&dir, MntFlags::MNT_DETACH).is_ok() {}
    if fs::symlink_metadata(&dir).is_ok_and(|m| !m.is_dir()) {
        fs::remove_file(&dir).map_err(|e| RuntimeError::io(&dir, e))?;
    }
    fs::create_dir_all(&dir).map_err(|e| RuntimeError::io(&dir, e))?;
    make_copy(&dir, me.size()).inspect_err(|_| {
        let _ = umount2(&dir, MntFlags::MNT_DETACH);
    })?;
    drop_stale_copies(&base, &dir);
    Ok(exe)
}

/// Whether `path` is a protected copy: `/run/strata/exe/strata-…/strata`, or the same under a
/// rootless user's runtime directory (`…/strata/exe/…` or `/tmp/strata-UID/exe/…`).
fn is_copy_path(path: &Path) -> bool {
    if path.starts_with(DIR) {
        return true;
    }
    let name = |p: Option<&Path>| {
        p.and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let copy = path.parent();
    let base = copy.and_then(Path::parent);
    name(copy).starts_with("strata-")
        && name(base) == "exe"
        && name(base.and_then(Path::parent)).starts_with("strata")
}

/// `strata-<dev>-<inode>-<mtime>` of the installed binary: a rebuilt or upgraded binary gets
/// a new copy.
fn copy_name(m: &fs::Metadata) -> String {
    format!("strata-{:x}-{:x}-{}", m.dev(), m.ino(), m.mtime())
}

/// Mounts a tmpfs on `dir`, copies the running binary into it and makes it read-only; the
/// read-only tmpfs is what says the copy is complete.
fn make_copy(dir: &Path, size: u64) -> Result<(), RuntimeError> {
    let mount_err = |e: nix::Error| RuntimeError::io(dir, e.into());
    // Room for the binary rounded up to whole huge pages, and the source note.
    let room = (size / (2 << 20) + 2) * (2 << 20);
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let huge = format!("size={room},mode=0755,huge=always");
    if mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        flags,
        Some(huge.as_str()),
    )
    .is_err()
    {
        // A kernel without huge pages for tmpfs refuses the option.
        let plain = format!("size={room},mode=0755");
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            flags,
            Some(plain.as_str()),
        )
        .map_err(mount_err)?;
    }
    let exe = dir.join(EXE);
    copy_file("/proc/self/exe", &exe)?;
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o555))
        .map_err(|e| RuntimeError::io(&exe, e))?;
    let source = fs::read_link("/proc/self/exe").unwrap_or_default();
    let note = dir.join(SOURCE);
    fs::write(&note, source.as_os_str().as_encoded_bytes())
        .map_err(|e| RuntimeError::io(&note, e))?;
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
        None::<&str>,
    )
    .map_err(mount_err)
}

/// Copies the binary; the tmpfs (`huge=always`) puts it in huge pages whatever the writes' size.
fn copy_file(from: &str, to: &Path) -> Result<(), RuntimeError> {
    let mut src = fs::File::open(from).map_err(|e| RuntimeError::io(from, e))?;
    let mut dst = fs::File::create(to).map_err(|e| RuntimeError::io(to, e))?;
    std::io::copy(&mut src, &mut dst).map_err(|e| RuntimeError::io(to, e))?;
    Ok(())
}

/// A read-only tmpfs holding the binary at its full size.
fn is_complete_copy(dir: &Path, size: u64) -> bool {
    let read_only_tmpfs = nix::sys::statfs::statfs(dir).is_ok_and(|s| {
        s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC
            && nix::sys::statvfs::statvfs(dir)
                .is_ok_and(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
    });
    read_only_tmpfs && fs::metadata(dir.join(EXE)).is_ok_and(|m| m.len() == size)
}

/// Unmounts the copies of binaries that were replaced or removed since (a rebuilt or upgraded
/// strata): each holds memory, and every mount on the host is copied into each new container's
/// mount namespace. A copy whose binary is still installed stays. Processes still running from
/// a dropped copy keep it alive until they exit.
fn drop_stale_copies(base: &Path, current: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let name = entry.file_name();
        if dir == current || !name.to_string_lossy().starts_with("strata-") {
            continue;
        }
        let installed = fs::read(dir.join(SOURCE))
            .ok()
            .and_then(|p| fs::metadata(String::from_utf8_lossy(&p).as_ref()).ok())
            .is_some_and(|m| copy_name(&m) == name.to_string_lossy());
        if !installed {
            while umount2(&dir, MntFlags::MNT_DETACH).is_ok() {}
            // Views of the earlier design were bind mounts on plain files.
            let _ = fs::remove_dir(&dir).or_else(|_| fs::remove_file(&dir));
        }
    }
}
