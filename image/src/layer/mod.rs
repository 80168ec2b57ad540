//! The layer codec: a deterministic tar writer from a directory in overlayfs form, and a safe
//! extractor from a (hostile) tar stream into overlayfs form.
//!
//! Overlayfs form: a deleted path is a 0/0 character device, an opaque directory carries
//! `trusted.overlay.opaque=y`. Tar form (OCI): `.wh.NAME` and `.wh..wh..opq` entries.

mod changes;
mod extract;
mod guard;
mod snapshot;
mod writer;

pub use changes::changes;
pub use extract::{extract_into_root, extract_layer, ExtractOptions, ExtractStats};
pub use snapshot::{materialize, write_changes_into, Changes, Snapshot};
pub use writer::{
    write_contents_tar, write_entry_tar, write_flattened_tar, write_layer_tar, TarOptions,
};

use std::path::{Path, PathBuf};

/// Where `path` leads inside the untrusted tree `root` (a context, a checkout, a layer), its
/// symlinks resolved inside the tree (pathrs, `openat2(RESOLVE_IN_ROOT)`): the host path of
/// that file, for code that needs a path (a bind mount's source, a directory to copy).
pub fn resolve_in_root(root: &Path, path: &str) -> std::io::Result<PathBuf> {
    let r = pathrs::Root::open(root).map_err(std::io::Error::other)?;
    let h = r.resolve(path).map_err(std::io::Error::other)?;
    let fd = std::os::fd::OwnedFd::from(h);
    std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ))
}

/// The prefix of a whiteout entry in tar form.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The name of an opaque-directory marker in tar form.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattr overlayfs uses to mark an opaque directory (as root).
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The same in a user namespace (rootless), where overlayfs is mounted with `userxattr`.
pub const USER_OVERLAY_OPAQUE_XATTR: &str = "user.overlay.opaque";

/// Whether this process runs in a user namespace (rootless strata): its uid map is not the
/// host's identity map. Read once per process, so only after the process has joined its
/// namespace (a rootless command does that first, see `strata_runtime::rootless`).
pub fn in_user_namespace() -> bool {
    static IN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IN.get_or_init(|| !uid_map_is_identity())
}

/// Whether this process's uid map is the host's identity map (it is in the host's user
/// namespace), read now.
pub fn uid_map_is_identity() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
}

/// The opaque-directory xattr overlayfs reads here: `trusted.` needs the host's root, so
/// in a user namespace overlayfs is mounted with `userxattr` and reads `user.`.
pub fn overlay_opaque_xattr() -> &'static str {
    if in_user_namespace() {
        USER_OVERLAY_OPAQUE_XATTR
    } else {
        OVERLAY_OPAQUE_XATTR
    }
}

/// Extra options for a writable overlay mount here (`,userxattr` in a user namespace).
pub fn overlay_mount_options() -> &'static str {
    if in_user_namespace() {
        ",userxattr"
    } else {
        ""
    }
}

/// The xattr fuse-overlayfs marks an opaque directory with (unprivileged); its upper
/// directories also hold `.wh..opq` and `.wh..wh..opq` marker entries of its own
/// ([`is_fuse_marker`]) until `strata_runtime::overlay` brings them to the kernel's form.
pub const FUSE_OPAQUE_XATTR: &str = "user.fuseoverlayfs.opaque";

/// The xattr of an empty file standing for a device node in a user namespace (which may not
/// make one): `c MAJOR MINOR` or `b MAJOR MINOR`. The layer writer writes the node back.
pub const DEVICE_XATTR: &str = "user.strata.device";

/// Whether `name` is one of overlayfs's (or fuse-overlayfs's, or strata's) own xattrs (never
/// taken from nor written to a tar).
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.")
        || name.starts_with(b"user.overlay.")
        || name.starts_with(b"user.fuseoverlayfs.")
        || name == DEVICE_XATTR.as_bytes()
}

/// Whether `name` in a live fuse-overlayfs upper directory is one of its opaque markers.
pub fn is_fuse_marker(name: &[u8]) -> bool {
    name == b".wh..opq" || name == OPAQUE_MARKER.as_bytes()
}

/// Errors of the layer codec. Every message names the entry or path it is about.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("tar entry {entry:?}: {reason}")]
    Entry { entry: String, reason: String },
    #[error("tar stream: {0}")]
    Stream(#[source] std::io::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl LayerError {
    pub(crate) fn entry(entry: impl Into<String>, reason: impl Into<String>) -> Self {
        LayerError::Entry {
            entry: entry.into(),
            reason: reason.into(),
        }
    }
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LayerError::Io {
            path: path.into(),
            source,
        }
    }
}
