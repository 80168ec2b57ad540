//! Unchanged files of a context COPY are hard-linked from the layer the same COPY made last
//! time instead of being copied again, so an incremental build of a large context writes only
//! what changed.
//!
//! A COPY from the context records, per site (context directory, Dockerfile, instruction),
//! the layer it produced and the content digest written at each target (a build hint of the
//! store: `strata_cache::hints`, `buildcache/reuse-<site>.json`). The next build of that site
//! links a file from that layer when its digest is the same and the candidate, checked through
//! its own descriptor, is exactly what a copy would write: a regular file with the same size,
//! mode, owner and mtime and no extended attributes. Layers are never written once published,
//! so two layers sharing an inode is safe, and the new layer's tar (hence its diffID) is the
//! same as a copy's: the tar writer only emits hard links between paths of one layer, and each
//! linked inode appears once in it. Anything that does not check out is copied as usual; the
//! record is a hint, never trusted for content.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::AtFlags;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::unistd::linkat;
use strata_cache::Store;
use strata_image::Digest;

/// What a copy would write at a target: the candidate must match it exactly.
pub(crate) struct Expect {
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

/// The files an earlier layer of this COPY offers.
pub(crate) struct Reuse {
    layer: OwnedFd,
    files: BTreeMap<String, Digest>,
}

/// The record's name for a COPY site.
pub(crate) fn site(context: &Path, dockerfile: &str, created_by: &str) -> String {
    let ctx = std::fs::canonicalize(context).unwrap_or_else(|_| context.to_path_buf());
    let id = format!(
        "{}\0{}\0{dockerfile}\0{created_by}",
        strata_cache::hints::REUSE_SCHEMA,
        ctx.to_string_lossy()
    );
    Digest::of(id.as_bytes()).hex()[..32].to_string()
}

/// The earlier layer of `site`, if it is still in the store.
pub(crate) fn load(store: &Store, site: &str) -> Option<Reuse> {
    let hint = store.reuse_hint(site)?;
    let layer = nix::fcntl::open(
        &store.layer_diff(&hint.layer),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    Some(Reuse {
        layer,
        files: hint.files,
    })
}

/// `path` below `dir`, literally: no symlink, no `..` out, no other mount on the way.
pub(crate) fn open_literal(dir: &OwnedFd, path: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    openat2(
        dir,
        rel,
        OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_XDEV,
            ),
    )
}

impl Reuse {
    /// Whether the earlier layer wrote the content `digest` at `target`.
    pub(crate) fn offers(&self, target: &str, digest: Option<&Digest>) -> bool {
        digest.is_some_and(|d| self.files.get(target) == Some(d))
    }

    /// Links the earlier layer's file at `target` into `dir` as `name` if it is exactly what
    /// a copy would write; false when it is not (the caller copies).
    pub(crate) fn link(&self, target: &str, want: &Expect, dir: &OwnedFd, name: &str) -> bool {
        let Ok(fd) = open_literal(&self.layer, target, OFlag::O_RDONLY | OFlag::O_NOATIME) else {
            return false;
        };
        let Ok(st) = fstat(&fd) else { return false };
        let same = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFREG
            && st.st_size as u64 == want.size
            && st.st_mode & 0o7777 == want.mode & 0o7777
            && st.st_uid == want.uid
            && st.st_gid == want.gid
            && st.st_mtime == want.mtime
            && st.st_mtime_nsec == 0
            && !has_xattrs(&fd);
        same && linkat(&fd, "", dir, name, AtFlags::AT_EMPTY_PATH).is_ok()
    }
}

fn has_xattrs(fd: &OwnedFd) -> bool {
    // SAFETY: an open descriptor and a null buffer of size 0 (asks for the list's length).
    let n = unsafe { libc::flistxattr(fd.as_raw_fd(), std::ptr::null_mut(), 0) };
    n != 0
}
