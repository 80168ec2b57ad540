//! What a read-write layer changed relative to the layers below it (`strata diff`).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};

use super::LayerError;

/// ('A'dded | 'C'hanged | 'D'eleted, "/path") for every entry of `upper`, sorted by path.
/// The upper directory is walked through fds with `O_NOFOLLOW` (it may belong to a running
/// container); the read-only lower layers are looked up by path.
pub fn changes(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<(char, String)>, LayerError> {
    let root = nix::fcntl::open(
        upper,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| LayerError::io(upper, e.into()))?;
    let mut out = Vec::new();
    walk(&root, "", lowers, upper, &mut out)?;
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

fn in_lower(lowers: &[PathBuf], rel: &str) -> bool {
    for l in lowers {
        if let Ok(m) = std::fs::symlink_metadata(l.join(rel)) {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            let whiteout = m.file_type().is_char_device() && m.rdev() == 0;
            return !whiteout;
        }
    }
    false
}

fn walk(
    dir: &std::os::fd::OwnedFd,
    prefix: &str,
    lowers: &[PathBuf],
    upper: &Path,
    out: &mut Vec<(char, String)>,
) -> Result<(), LayerError> {
    let dup = dir
        .try_clone()
        .map_err(|e| LayerError::io(upper.join(prefix), e))?;
    let mut d =
        nix::dir::Dir::from_fd(dup).map_err(|e| LayerError::io(upper.join(prefix), e.into()))?;
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e.map_err(|e| LayerError::io(upper.join(prefix), e.into()))?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(std::ffi::OsStr::from_bytes(n).to_os_string());
        }
    }
    for name in names {
        if super::is_fuse_marker(name.as_bytes()) {
            continue;
        }
        let rel = format!("{prefix}{}", name.to_string_lossy());
        let st = fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| LayerError::io(upper.join(&rel), e.into()))?;
        let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        if fmt == SFlag::S_IFCHR && st.st_rdev == 0 {
            out.push(('D', format!("/{rel}")));
            continue;
        }
        out.push((
            if in_lower(lowers, &rel) { 'C' } else { 'A' },
            format!("/{rel}"),
        ));
        if fmt == SFlag::S_IFDIR {
            let child = openat(
                dir,
                name.as_os_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| LayerError::io(upper.join(&rel), e.into()))?;
            walk(&child, &format!("{rel}/"), lowers, upper, out)?;
        }
    }
    Ok(())
}
