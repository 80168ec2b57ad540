//! COPY and ADD: files are written into a new layer through an overlay mount of the parent
//! image (so destinations resolve through the image's own directories and symlinks, and
//! `--chown` names come from its passwd), with every path resolved inside that root (pathrs)
//! and every entry created with `*at` calls on its parent directory's fd.
//!
//! [`copy_step`] writes each kind of source in turn: heredoc files, downloads, a git
//! checkout, then context files ([`dest`], linked from the last layer by [`link`] where they
//! did not change) or a stage's or image's trees ([`tree`]), through the mounts of [`mount`].

mod dest;
mod link;
mod mount;
mod tree;

use dest::*;
use link::*;
pub(crate) use mount::{
    copy_image_path_into, copy_layers, materialize_context, mount_image, mount_layers, Mounted,
};
use strata_runtime::chroot::Isolation;
use tree::*;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, Permissions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, futimens, mkdirat, mknodat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use pathrs::Root;
use strata_cache::{Image, Store};
use strata_image::Digest;
use strata_planner::context::{Context, Kind};
use strata_planner::model::CopyOp;

use crate::reuse::{self, Reuse};

/// The content of a file to write.
enum Data<'a> {
    File(&'a mut File),
    Bytes(&'a [u8]),
}

/// Source metadata for one entry to write.
struct Meta {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    link: Option<String>,
}

/// WORKDIR: makes `dir` over `parent` (its missing components 0755, owned by `user` as the
/// image's passwd and group files name it, as BuildKit's mkdir does). Returns the new layer,
/// or None when the directory exists already (the step then adds no layer).
pub fn make_workdir(
    store: &Store,
    parent: &Image,
    pending: &crate::Lowers,
    dir: &str,
    user: &str,
    iso: Isolation,
) -> Result<Option<PathBuf>, String> {
    let m = mount_layers(store, parent, &crate::lock(pending), true, iso)?;
    let root = Root::open(&m.mnt).map_err(|e| e.to_string())?;
    let mut dest = Dest {
        root,
        dirs: HashMap::new(),
        dir_times: Vec::new(),
    };
    if dir == "/" || dest.is_dir(dir) {
        return Ok(None);
    }
    let own = if user.is_empty() {
        (0, 0)
    } else {
        let passwd = read_in_root(&dest.root, "/etc/passwd");
        let group = read_in_root(&dest.root, "/etc/group");
        let u = strata_runtime::user::resolve(user, &passwd, &group)
            .map_err(|e| format!("mkdir {dir}: user {user}: {e}"))?;
        (u.uid, u.gid)
    };
    let mut path = String::new();
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        path.push('/');
        path.push_str(part);
        if dest.is_dir(&path) {
            continue;
        }
        if dest.root.resolve_nofollow(&path).is_ok() {
            return Err(format!("mkdir {dir}: {path} is not a directory"));
        }
        dest.ensure_dir(&path, Some(own))?;
    }
    Ok(Some(m.into_upper()?))
}

fn is_archive(path: &Path) -> bool {
    File::open(path)
        .map(|f| strata_image::compress::is_tar_archive(io::BufReader::new(f)))
        .unwrap_or(false)
}

/// What a COPY/ADD wrote.
pub struct Copied {
    /// The new layer directory (overlay form).
    pub upper: PathBuf,
    /// For a context copy that can be reused next time: target → content digest of every
    /// regular file written.
    pub files: Option<BTreeMap<String, Digest>>,
}

/// A context file to write.
struct FileJob<'a> {
    target: String,
    meta: Meta,
    src: &'a str,
    digest: Option<&'a Digest>,
    size: u64,
}

/// Performs a COPY/ADD over `parent` (with `--link`, into an empty directory). With `reuse`,
/// unchanged context files are linked from the layer this COPY made last time.
#[allow(clippy::too_many_arguments)]
pub fn copy_step(
    store: &Store,
    iso: Isolation,
    ctx: &Context,
    parent: &Image,
    pending: &crate::Lowers,
    op: &CopyOp,
    from: Option<&Image>,
    reuse: Option<&Reuse>,
) -> Result<Copied, String> {
    let m = if op.link {
        Mounted::empty(store)?
    } else {
        // The pending layers cannot move while they are being mounted.
        mount_layers(store, parent, &crate::lock(pending), true, iso)?
    };
    let root = Root::open(&m.mnt).map_err(|e| e.to_string())?;
    let own = owner(&root, op.chown.as_deref())?;
    let mut dest = Dest {
        root,
        dirs: HashMap::new(),
        dir_times: Vec::new(),
    };
    let chmod = |mode: u32, is_dir: bool| match &op.chmod {
        Some(c) => c.apply(mode, is_dir),
        None => mode,
    };
    let single_into_dir = !op.dest_is_dir && dest.is_dir(&op.dest);
    let target_of = |rel: &str| -> String {
        if op.dest_is_dir || single_into_dir {
            format!("{}/{}", op.dest.trim_end_matches('/'), rel)
        } else {
            op.dest.clone()
        }
    };
    let w = Writing {
        op,
        iso,
        own,
        chmod: &chmod,
        target_of: &target_of,
    };
    if op.dest_is_dir {
        let d = op.dest.trim_end_matches('/');
        if !d.is_empty() {
            dest.ensure_dir(d, own)?;
        }
    }
    w.inline_files(&mut dest)?;
    w.downloads(&mut dest)?;
    if let Some(tree) = &op.git {
        let src = Root::open(&tree.dir).map_err(|e| format!("{}: {e}", tree.dir.display()))?;
        let shape = TreeShape {
            own: Some(own.unwrap_or((0, 0))),
            chmod: &chmod,
            exclude: None,
        };
        copy_tree(&src, "/", &mut dest, &target_of, &op.dest, &shape)?;
    }
    let (written, to_link) = match from {
        None if op.sources.is_empty() => (None, Linkable::default()),
        None => w.context_files(ctx, &mut dest, m.upper_dir(), reuse)?,
        Some(src_image) => {
            w.image_trees(store, src_image, &mut dest)?;
            (None, Linkable::default())
        }
    };
    dest.finish()?;
    drop(dest);
    let upper = m.into_upper()?;
    if let Some(reuse) = reuse {
        // The overlay is gone: the new layer is a plain directory now.
        link_or_copy(ctx, reuse, to_link)?;
    }
    Ok(Copied {
        upper,
        files: written,
    })
}

/// What every kind of source of one COPY/ADD is written with.
struct Writing<'a> {
    op: &'a CopyOp,
    /// How `COPY --from`'s image is read (mounted, or copied under chroot isolation).
    iso: Isolation,
    /// `--chown`, resolved in the destination.
    own: Option<(u32, u32)>,
    /// `--chmod` applied to a mode (of a directory or not).
    chmod: &'a dyn Fn(u32, bool) -> u32,
    /// Where a source path lands.
    target_of: &'a dyn Fn(&str) -> String,
}

/// Context files written: the targets and digests of the regular files (when they may be
/// reused next time), and the files readied for linking from the last layer.
type ContextCopy<'a> = (Option<BTreeMap<String, Digest>>, Linkable<'a>);

impl Writing<'_> {
    /// A regular file's metadata as written: `--chown` (or root), `--chmod` over `mode`.
    fn file_meta(&self, mode: u32, mtime: i64) -> Meta {
        let (uid, gid) = self.own.unwrap_or((0, 0));
        Meta {
            kind: Kind::File,
            mode: (self.chmod)(mode, false),
            uid,
            gid,
            mtime,
            link: None,
        }
    }

    /// Heredoc files (`COPY <<EOF /path`).
    fn inline_files(&self, dest: &mut Dest) -> Result<(), String> {
        for (name, content) in &self.op.inline {
            let meta = self.file_meta(0o644, 0);
            let data = Some(Data::Bytes(content.as_bytes()));
            dest.write(&(self.target_of)(name), &meta, data)?;
        }
        Ok(())
    }

    /// ADD's downloads: private unless `--chmod` says otherwise, as in Docker; an archive
    /// unpacks only with `--unpack=true`.
    fn downloads(&self, dest: &mut Dest) -> Result<(), String> {
        for f in &self.op.fetched {
            let mut file = File::open(&f.path).map_err(|e| format!("{}: {e}", f.path.display()))?;
            if self.op.unpack == Some(true) && is_archive(&f.path) {
                extract_into(dest, &self.op.dest, file)?;
                continue;
            }
            let meta = self.file_meta(0o600, f.mtime.unwrap_or(0));
            dest.write(
                &(self.target_of)(&f.filename),
                &meta,
                Some(Data::File(&mut file)),
            )?;
        }
        Ok(())
    }

    /// The selected context entries. Regular files of one source have distinct targets, so
    /// they are written in parallel once the directories exist (a context copy is
    /// syscall-bound); with `reuse`, those the last layer offers are readied for linking.
    fn context_files<'c>(
        &self,
        ctx: &'c Context,
        dest: &mut Dest,
        upper: Option<&Path>,
        reuse: Option<&Reuse>,
    ) -> Result<ContextCopy<'c>, String>
    where
        Self: 'c,
    {
        let op = self.op;
        let ctx_root = ctx.root_handle().map_err(|e| e.to_string())?;
        let first = op.selected.first().map(|x| x.0);
        let parallel = !op.add
            && op.selected.len() >= PARALLEL_COPY_MIN
            && op.selected.iter().all(|x| Some(x.0) == first);
        let mut files: Vec<FileJob> = Vec::new();
        for (_, sel) in &op.selected {
            let e = ctx.entry(sel);
            let target = (self.target_of)(ctx.rel(sel));
            if op.add
                && op.unpack != Some(false)
                && e.kind == Kind::File
                && is_archive(&ctx.root.join(ctx.src(sel)))
            {
                // An archive unpacks into the destination, which is a directory then.
                let f = ctx
                    .open_in(&ctx_root, ctx.src(sel))
                    .map_err(|er| er.to_string())?;
                extract_into(dest, &op.dest, f)?;
                continue;
            }
            let (uid, gid) = self.own.unwrap_or((0, 0));
            let meta = Meta {
                kind: e.kind,
                mode: (self.chmod)(e.mode, e.kind == Kind::Dir),
                uid,
                gid,
                mtime: e.mtime,
                link: e.link.clone(),
            };
            if e.kind == Kind::File && parallel {
                files.push(FileJob {
                    target,
                    meta,
                    src: ctx.src(sel),
                    digest: sel.digest.as_ref(),
                    size: e.size,
                });
            } else if e.kind == Kind::File {
                let mut f = ctx
                    .open_in(&ctx_root, ctx.src(sel))
                    .map_err(|er| er.to_string())?;
                dest.write(&target, &meta, Some(Data::File(&mut f)))?;
            } else {
                dest.write(&target, &meta, None)?;
            }
        }
        let written = parallel.then(|| {
            files
                .iter()
                .filter_map(|f| Some((f.target.clone(), f.digest?.clone())))
                .collect()
        });
        let (linkable, copies): (Vec<FileJob>, Vec<FileJob>) = files
            .into_iter()
            .partition(|f| reuse.is_some_and(|r| r.offers(&f.target, f.digest)));
        write_files_parallel(ctx, dest, &copies)?;
        let to_link = match upper {
            Some(upper) => dest.prepare_links(ctx, upper, linkable)?,
            None => {
                write_files_parallel(ctx, dest, &linkable)?;
                Linkable::default()
            }
        };
        Ok((written, to_link))
    }

    /// `COPY --from`: each source (a path or a glob) of the stage or image, as a tree; with
    /// `--parents`, at its own path below the destination.
    fn image_trees(&self, store: &Store, src_image: &Image, dest: &mut Dest) -> Result<(), String> {
        let op = self.op;
        let sm = mount_image(store, src_image, false, self.iso)?;
        let src_root = Root::open(&sm.mnt).map_err(|e| e.to_string())?;
        let exclude = if op.exclude.is_empty() {
            None
        } else {
            Some(
                strata_parser::ignore::Matcher::new(&op.exclude)
                    .map_err(|(p, e)| format!("--exclude={p}: {e}"))?,
            )
        };
        let shape = TreeShape {
            own: self.own,
            chmod: self.chmod,
            exclude: exclude.as_ref(),
        };
        for s in &op.sources {
            let found = glob_sources(&src_root, s)?;
            if found.is_empty() {
                return Err(format!("{s}: not found in the source stage"));
            }
            let pivot = strata_planner::paths::parents_pivot(s);
            for path in found {
                if !op.parents {
                    copy_tree(&src_root, &path, dest, self.target_of, &op.dest, &shape)?;
                    continue;
                }
                // --parents: the source lands at its own path (below the pivot).
                let rel = path.trim_start_matches('/');
                let landing = format!(
                    "{}/{}",
                    op.dest.trim_end_matches('/'),
                    rel.strip_prefix(pivot.as_str()).unwrap_or(rel)
                );
                let at = |_: &str| landing.clone();
                copy_tree(&src_root, &path, dest, &at, &landing, &shape)?;
            }
        }
        Ok(())
    }
}

/// Below this many entries a copy stays on one thread.
const PARALLEL_COPY_MIN: usize = 256;

/// Writes context files (target, metadata, context path) with one writer per core, each with
/// its own handles on both roots; their directories exist already.
fn write_files_parallel(ctx: &Context, dest: &Dest, files: &[FileJob]) -> Result<(), String> {
    on_each_core(files, |part| {
        let mut out = Dest {
            root: dest.root.try_clone().map_err(|e| e.to_string())?,
            dirs: HashMap::new(),
            dir_times: Vec::new(),
        };
        let ctx_root = ctx.root_handle().map_err(|e| e.to_string())?;
        for job in part {
            let mut f = ctx.open_in(&ctx_root, job.src).map_err(|e| e.to_string())?;
            out.write(&job.target, &job.meta, Some(Data::File(&mut f)))?;
        }
        Ok(())
    })
    .map(|_| ())
}

/// Runs `work` on `items` cut into one part per core (at most four), on the CPU pool
/// (`strata_image::pool`); returns the parts' results in order, or the first error. Each part opens
/// its own handles once, so parts are few and large rather than one task per item.
fn on_each_core<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&[T]) -> Result<R, String> + Sync,
) -> Result<Vec<R>, String> {
    use rayon::prelude::*;
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let pool = strata_image::pool::cpu();
    let parts = pool.current_num_threads().clamp(1, 4);
    pool.install(|| {
        items
            .par_chunks(items.len().div_ceil(parts))
            .map(&work)
            .collect()
    })
}
