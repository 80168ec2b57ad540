//! The overlay mounts a COPY writes through and reads from: an image's layers (and the
//! pending layers above them) under a fresh upper directory, or an empty directory for
//! `--link`. With chroot isolation (no mounts allowed) the same views are plain copies of
//! the layers, and a writable one's new layer is what changed since its snapshot.

use super::*;

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use strata_cache::{fsutil, Image, Store};
use strata_image::layer::Snapshot;
use strata_planner::context::Context;
use strata_runtime::chroot::Isolation;

/// A directory mounted read-write over an image: lower = the image's layers, upper = a fresh
/// directory that becomes the new layer. Dropped without [`Mounted::into_upper`] (an error, a
/// `RUN --mount=type=bind,rw`), the writes are discarded.
pub(crate) struct Mounted {
    pub(crate) mnt: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    mounted: bool,
    keep_upper: bool,
    /// chroot isolation: `mnt` is a plain copy of the layers, to delete afterwards.
    copied: bool,
    /// A writable copy's state before the step: its changes since are the new layer.
    snapshot: Option<Snapshot>,
    /// A fuse-overlayfs mount: its lower directories (top first), for bringing its upper
    /// directory to the kernel's form.
    fuse_lowers: Option<Vec<PathBuf>>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            let _ = umount2(&self.mnt, MntFlags::MNT_DETACH);
        }
        if self.copied {
            let _ = fsutil::remove_any(&self.mnt);
        } else if self.mnt != self.upper {
            let _ = fs::remove_dir(&self.mnt);
        }
        let _ = fsutil::remove_any(&self.work);
        if !self.keep_upper {
            let _ = fsutil::remove_any(&self.upper);
        }
    }
}

impl Mounted {
    /// An empty directory standing for "nothing below" (`COPY --link`): writes go straight
    /// into what becomes the layer.
    pub(super) fn empty(store: &Store) -> Result<Mounted, String> {
        let upper = store.temp_dir("copy-layer").map_err(|e| e.to_string())?;
        let work = store.temp_dir("copy-work").map_err(|e| e.to_string())?;
        Ok(Mounted {
            mnt: upper.clone(),
            upper,
            work,
            mounted: false,
            keep_upper: false,
            copied: false,
            snapshot: None,
            fuse_lowers: None,
        })
    }

    /// The upper directory of a mounted overlay (None for `--link`'s plain directory).
    pub(super) fn upper_dir(&self) -> Option<&Path> {
        self.mounted.then_some(self.upper.as_path())
    }

    /// Unmounts and hands over the upper directory: the new layer (for a copy, what changed
    /// in it, written out now).
    pub(crate) fn into_upper(mut self) -> Result<PathBuf, String> {
        if let Some(lowers) = &self.fuse_lowers {
            strata_runtime::overlay::unmount_all(&self.mnt);
            self.mounted = false;
            strata_runtime::overlay::normalize_upper(&self.upper, lowers)
                .map_err(|e| format!("{}: {e}", self.upper.display()))?;
        }
        if let Some(snapshot) = &self.snapshot {
            strata_image::layer::write_changes_into(&self.mnt, snapshot, &self.upper)
                .map_err(|e| e.to_string())?;
        }
        self.keep_upper = true;
        Ok(self.upper.clone())
    }
}

/// Copies `path` of `image` (a directory's contents, or a file) into the directory `dir`
/// (seeding a new cache mount from `from=`).
pub(crate) fn copy_image_path_into(
    store: &Store,
    image: &Image,
    path: &str,
    dir: &Path,
    iso: Isolation,
) -> Result<(), String> {
    let m = mount_image(store, image, false, iso)?;
    let src = Root::open(&m.mnt).map_err(|e| e.to_string())?;
    let mut dest = Dest {
        root: Root::open(dir).map_err(|e| e.to_string())?,
        dirs: HashMap::new(),
        dir_times: Vec::new(),
    };
    let target_of = |rel: &str| format!("/{rel}");
    let shape = TreeShape {
        own: None,
        chmod: &|m, _| m,
        exclude: None,
    };
    copy_tree(&src, path, &mut dest, &target_of, "/", &shape)?;
    dest.finish()
}

/// Writes the selected context entries into the fresh directory `dir` (for a
/// `RUN --mount=type=bind` of the context: only what `.dockerignore` lets through).
pub(crate) fn materialize_context(
    ctx: &Context,
    selected: &[(usize, strata_planner::context::Selected)],
    dir: &Path,
) -> Result<(), String> {
    let root = Root::open(dir).map_err(|e| e.to_string())?;
    let mut dest = Dest {
        root,
        dirs: HashMap::new(),
        dir_times: Vec::new(),
    };
    let ctx_root = ctx.root_handle().map_err(|e| e.to_string())?;
    for (_, sel) in selected {
        let e = ctx.entry(sel);
        let meta = Meta {
            kind: e.kind,
            mode: e.mode,
            uid: 0,
            gid: 0,
            mtime: e.mtime,
            link: e.link.clone(),
        };
        let target = format!("/{}", ctx.rel(sel));
        if e.kind == Kind::File {
            let mut f = ctx
                .open_in(&ctx_root, ctx.src(sel))
                .map_err(|er| er.to_string())?;
            dest.write(&target, &meta, Some(Data::File(&mut f)))?;
        } else if !ctx.rel(sel).is_empty() {
            dest.write(&target, &meta, None)?;
        }
    }
    dest.finish()
}

/// A view with its directories made and nothing mounted yet.
fn fresh(store: &Store) -> Result<Mounted, String> {
    let e = |e: strata_cache::StoreError| e.to_string();
    Ok(Mounted {
        mnt: store.temp_dir("mnt").map_err(e)?,
        upper: store.temp_dir("copy-layer").map_err(e)?,
        work: store.temp_dir("copy-work").map_err(e)?,
        mounted: false,
        keep_upper: false,
        copied: false,
        snapshot: None,
        fuse_lowers: None,
    })
}

/// [`mount_layers`] for chroot isolation: the layers copied into a plain tree, `prepare`d
/// (a RUN step's device nodes), then, when `writable`, snapshotted.
pub(crate) fn copy_layers(
    store: &Store,
    image: &Image,
    pending: &[PathBuf],
    writable: bool,
    prepare: &dyn Fn(&Path) -> Result<(), String>,
) -> Result<Mounted, String> {
    let mut m = fresh(store)?;
    m.copied = true;
    let dirs = layer_dirs(store, image, pending);
    let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    strata_image::layer::materialize(&dirs, &m.mnt).map_err(|e| e.to_string())?;
    prepare(&m.mnt)?;
    if writable {
        m.snapshot = Some(strata_image::layer::Snapshot::take(&m.mnt).map_err(|e| e.to_string())?);
    }
    Ok(m)
}

/// The layer directories of `image` with the `pending` ones (bottom first) above, top first.
fn layer_dirs(store: &Store, image: &Image, pending: &[PathBuf]) -> Vec<PathBuf> {
    pending
        .iter()
        .rev()
        .cloned()
        .chain(
            image
                .record
                .layers
                .iter()
                .rev()
                .map(|l| store.layer_diff(l)),
        )
        .collect()
}

/// The overlay lowerdir list (top first) of `image` with the `pending` layer directories
/// (bottom first) of earlier build steps on top.
pub(super) fn lowerdirs(
    store: &Store,
    image: &Image,
    pending: &[PathBuf],
) -> Result<String, String> {
    if image.record.layers.is_empty() && pending.is_empty() {
        let empty = store.temp_dir("empty").map_err(|e| e.to_string())?;
        return Ok(empty.display().to_string());
    }
    let dirs: Vec<String> = layer_dirs(store, image, pending)
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    Ok(dirs.join(":"))
}

pub(crate) fn mount_image(
    store: &Store,
    image: &Image,
    writable: bool,
    iso: Isolation,
) -> Result<Mounted, String> {
    mount_layers(store, image, &[], writable, iso)
}

/// [`mount_image`] with the `pending` layer directories of earlier steps on top.
pub(crate) fn mount_layers(
    store: &Store,
    image: &Image,
    pending: &[PathBuf],
    writable: bool,
    iso: Isolation,
) -> Result<Mounted, String> {
    if iso == Isolation::Chroot {
        let prepare = |_: &Path| Ok(());
        return copy_layers(store, image, pending, writable, &prepare);
    }
    let mut m = fresh(store)?;
    let lowers = lowerdirs(store, image, pending)?;
    if strata_runtime::overlay::Driver::current().0 == strata_runtime::overlay::Driver::Fuse {
        // Read-only too: fuse-overlayfs always wants an upper directory (this one is
        // discarded).
        strata_runtime::overlay::mount_fuse(Path::new("/"), &lowers, &m.upper, &m.work, &m.mnt)?;
        m.mounted = true;
        m.fuse_lowers = Some(layer_dirs(store, image, pending));
        return Ok(m);
    }
    let (data, flags) = if writable {
        (
            format!(
                "lowerdir={lowers},upperdir={},workdir={},index=off,volatile{}",
                m.upper.display(),
                m.work.display(),
                strata_image::layer::overlay_mount_options()
            ),
            MsFlags::empty(),
        )
    } else if lowers.contains(':') {
        (format!("lowerdir={lowers}"), MsFlags::MS_RDONLY)
    } else {
        // A single layer needs no overlay: bind it read-only.
        mount(
            Some(lowers.as_str()),
            &m.mnt,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|er| format!("bind {lowers}: {er}"))?;
        m.mounted = true;
        mount(
            None::<&str>,
            &m.mnt,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|er| format!("remount {lowers} read-only: {er}"))?;
        return Ok(m);
    };
    if data.len() > 4000 {
        return Err(format!(
            "the image has too many layers to mount ({})",
            image.record.layers.len()
        ));
    }
    mount(
        Some("overlay"),
        &m.mnt,
        Some("overlay"),
        flags,
        Some(data.as_str()),
    )
    .map_err(|er| format!("mount the image: {er}"))?;
    m.mounted = true;
    Ok(m)
}
