//! COPY and ADD: files are written into a new layer through an overlay mount of the parent
//! image (so destinations resolve through the image's own directories and symlinks, and
//! `--chown` names come from its passwd), with every path resolved inside that root (pathrs)
//! and every entry created with `*at` calls on its parent directory's fd.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, Permissions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{openat, AtFlags, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fchmod, fstatat, futimens, mkdirat, mknodat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use pathrs::Root;
use strata_cache::{fsutil, Image, Store};
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

/// A directory mounted read-write over an image: lower = the image's layers, upper = a fresh
/// directory that becomes the new layer. Dropped without [`Mounted::into_upper`] (an error, a
/// `RUN --mount=type=bind,rw`), the writes are discarded.
pub(crate) struct Mounted {
    pub(crate) mnt: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    mounted: bool,
    keep_upper: bool,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            let _ = umount2(&self.mnt, MntFlags::MNT_DETACH);
        }
        if self.mnt != self.upper {
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
    fn empty(store: &Store) -> Result<Mounted, String> {
        let upper = store.temp_dir("copy-layer").map_err(|e| e.to_string())?;
        let work = store.temp_dir("copy-work").map_err(|e| e.to_string())?;
        Ok(Mounted {
            mnt: upper.clone(),
            upper,
            work,
            mounted: false,
            keep_upper: false,
        })
    }

    /// The upper directory of a mounted overlay (None for `--link`'s plain directory).
    fn upper_dir(&self) -> Option<&Path> {
        self.mounted.then_some(self.upper.as_path())
    }

    /// Unmounts and hands over the upper directory: the new layer.
    pub(crate) fn into_upper(mut self) -> PathBuf {
        self.keep_upper = true;
        self.upper.clone()
    }
}

/// Copies `path` of `image` (a directory's contents, or a file) into the directory `dir`
/// (seeding a new cache mount from `from=`).
pub(crate) fn copy_image_path_into(
    store: &Store,
    image: &Image,
    path: &str,
    dir: &Path,
) -> Result<(), String> {
    let m = mount_image(store, image, false)?;
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

/// The overlay lowerdir list (top first) of `image` with the `pending` layer directories
/// (bottom first) of earlier build steps on top.
fn lowerdirs(store: &Store, image: &Image, pending: &[PathBuf]) -> Result<String, String> {
    if image.record.layers.is_empty() && pending.is_empty() {
        let empty = store.temp_dir("empty").map_err(|e| e.to_string())?;
        return Ok(empty.display().to_string());
    }
    let dirs: Vec<String> = pending
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
        .map(|d| d.display().to_string())
        .collect();
    Ok(dirs.join(":"))
}

pub(crate) fn mount_image(store: &Store, image: &Image, writable: bool) -> Result<Mounted, String> {
    mount_layers(store, image, &[], writable)
}

/// [`mount_image`] with the `pending` layer directories of earlier steps on top.
pub(crate) fn mount_layers(
    store: &Store,
    image: &Image,
    pending: &[PathBuf],
    writable: bool,
) -> Result<Mounted, String> {
    let e = |e: strata_cache::StoreError| e.to_string();
    let mnt = store.temp_dir("mnt").map_err(e)?;
    let upper = store.temp_dir("copy-layer").map_err(e)?;
    let work = store.temp_dir("copy-work").map_err(e)?;
    let mut m = Mounted {
        mnt,
        upper,
        work,
        mounted: false,
        keep_upper: false,
    };
    let lowers = lowerdirs(store, image, pending)?;
    let (data, flags) = if writable {
        (
            format!(
                "lowerdir={lowers},upperdir={},workdir={},index=off,volatile",
                m.upper.display(),
                m.work.display()
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

/// Parent directories already resolved in the destination root, by path.
struct Dest {
    root: Root,
    dirs: HashMap<String, OwnedFd>,
    /// Directories to stamp with their source times once everything is written.
    dir_times: Vec<(String, i64)>,
}

fn split(path: &str) -> (String, String) {
    let p = path.trim_end_matches('/');
    match p.rfind('/') {
        Some(i) => (
            if i == 0 {
                "/".into()
            } else {
                p[..i].to_string()
            },
            p[i + 1..].to_string(),
        ),
        None => ("/".into(), p.to_string()),
    }
}

impl Dest {
    fn dir(&mut self, path: &str) -> Result<OwnedFd, String> {
        if let Some(fd) = self.dirs.get(path) {
            return fd.try_clone().map_err(|e| e.to_string());
        }
        let h = self
            .root
            .mkdir_all(path, &Permissions::from_mode(0o755))
            .map_err(|e| format!("{path}: {e}"))?;
        let fd = nix::fcntl::openat(
            OwnedFd::from(h),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("{path}: {e}"))?;
        if self.dirs.len() > 4096 {
            self.dirs.clear();
        }
        self.dirs
            .insert(path.to_string(), fd.try_clone().map_err(|e| e.to_string())?);
        Ok(fd)
    }

    /// Makes the destination directory `path` (0755, owned by `own` or root) unless it is one
    /// already; it keeps the time of its making (it has no source).
    fn ensure_dir(&mut self, path: &str, own: Option<(u32, u32)>) -> Result<(), String> {
        if self.is_dir(path) {
            return Ok(());
        }
        let (uid, gid) = own.unwrap_or((0, 0));
        let meta = Meta {
            kind: Kind::Dir,
            mode: 0o755,
            uid,
            gid,
            mtime: 0,
            link: None,
        };
        self.write(path, &meta, None)?;
        self.dir_times.pop();
        Ok(())
    }

    fn is_dir(&self, path: &str) -> bool {
        self.root
            .resolve(path)
            .ok()
            .and_then(|h| h.reopen(pathrs::flags::OpenFlags::O_RDONLY).ok())
            .and_then(|f| f.metadata().ok())
            .map(|m| m.is_dir())
            .unwrap_or(false)
    }

    /// Removes what is at `dir/name` unless it is a directory and `keep_dir`.
    fn clear(
        &mut self,
        dir: &OwnedFd,
        parent: &str,
        name: &str,
        keep_dir: bool,
    ) -> Result<(), String> {
        match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(format!("{parent}/{name}: {e}")),
            Ok(st)
                if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
                    == SFlag::S_IFDIR =>
            {
                if keep_dir {
                    return Ok(());
                }
                self.dirs.clear();
                self.root
                    .remove_all(format!("{parent}/{name}"))
                    .map_err(|e| format!("{parent}/{name}: {e}"))
            }
            Ok(_) => unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| format!("{parent}/{name}: {e}")),
        }
    }

    /// Writes one entry at absolute `target`; `data` supplies a regular file's content.
    fn write(&mut self, target: &str, m: &Meta, data: Option<Data<'_>>) -> Result<(), String> {
        let (parent, name) = split(target);
        if name.is_empty() {
            return Ok(());
        }
        let dir = self.dir(&parent)?;
        let at = |e: nix::Error| format!("{target}: {e}");
        match m.kind {
            Kind::Dir => {
                self.clear(&dir, &parent, &name, true)?;
                match mkdirat(&dir, name.as_str(), Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(at(e)),
                }
                let fd = openat(
                    &dir,
                    name.as_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(at)?;
                fchown(&fd, Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid))).map_err(at)?;
                fchmod(&fd, Mode::from_bits_truncate(m.mode)).map_err(at)?;
                self.dir_times.push((target.to_string(), m.mtime));
            }
            Kind::File => {
                self.clear(&dir, &parent, &name, false)?;
                write_file_at(&dir, &name, target, m, data)?;
            }
            Kind::Symlink => {
                self.clear(&dir, &parent, &name, false)?;
                symlinkat(m.link.as_deref().unwrap_or(""), &dir, name.as_str()).map_err(at)?;
                fchownat(
                    &dir,
                    name.as_str(),
                    Some(Uid::from_raw(m.uid)),
                    Some(Gid::from_raw(m.gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(at)?;
            }
            Kind::Special => {
                // FIFOs are recreated; sockets and devices are not copied (and never opened).
                if m.mode & 0o170000 == libc::S_IFIFO || m.link.as_deref() == Some("fifo") {
                    self.clear(&dir, &parent, &name, false)?;
                    mknodat(
                        &dir,
                        name.as_str(),
                        SFlag::S_IFIFO,
                        Mode::from_bits_truncate(m.mode & 0o7777),
                        0,
                    )
                    .map_err(at)?;
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        for (path, mtime) in std::mem::take(&mut self.dir_times).into_iter().rev() {
            if let Ok(h) = self.root.resolve_nofollow(&path) {
                if let Ok(f) = h.reopen(
                    pathrs::flags::OpenFlags::O_RDONLY | pathrs::flags::OpenFlags::O_DIRECTORY,
                ) {
                    let t = TimeSpec::new(mtime, 0);
                    let _ = futimens(&f, &t, &t);
                }
            }
        }
        Ok(())
    }
}

impl Dest {
    /// Readies files for linking once the overlay is gone: each one's parent is copied up (a
    /// chown to its own owner, through the overlay) and opened at its literal path in the
    /// upper directory. Files whose parent has no literal path there (a symlink on the way)
    /// are written through the overlay now.
    fn prepare_links<'a>(
        &mut self,
        ctx: &Context,
        upper: &Path,
        jobs: Vec<FileJob<'a>>,
    ) -> Result<Linkable<'a>, String> {
        let mut out = Linkable {
            jobs: Vec::new(),
            dir_times: HashMap::new(),
        };
        if jobs.is_empty() {
            return Ok(out);
        }
        // Directories this copy wrote (chowned) through the overlay are in the upper layer.
        let written: HashSet<String> = self.dir_times.iter().map(|(p, _)| p.clone()).collect();
        let upper_fd = nix::fcntl::open(
            upper,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("{}: {e}", upper.display()))?;
        let mut parents: HashMap<String, Option<Arc<OwnedFd>>> = HashMap::new();
        let mut now = Vec::new();
        for job in jobs {
            let parent = split(&job.target).0;
            if !parents.contains_key(&parent) {
                let copied_up = written.contains(&parent) || self.copy_up(&parent)?.is_some();
                let literal = copied_up
                    .then(|| {
                        reuse::open_literal(
                            &upper_fd,
                            &parent,
                            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                        )
                        .ok()
                    })
                    .flatten();
                parents.insert(parent.clone(), literal.map(Arc::new));
            }
            match &parents[&parent] {
                Some(dir) => out.jobs.push((job, dir.clone())),
                None => now.push(job),
            }
        }
        write_files_parallel(ctx, self, &now)?;
        // Linking changes these directories' mtimes: they are stamped after it instead.
        self.dir_times.retain(|(p, t)| {
            let later = matches!(parents.get(p), Some(Some(_)));
            if later {
                out.dir_times.insert(p.clone(), *t);
            }
            !later
        });
        Ok(out)
    }

    /// Makes sure the directory `path` is in the upper layer (overlay copies a directory up on
    /// any attribute change). None if it is not a directory.
    fn copy_up(&mut self, path: &str) -> Result<Option<()>, String> {
        let fd = self.dir(path)?;
        let st = nix::sys::stat::fstat(&fd).map_err(|e| format!("{path}: {e}"))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Ok(None);
        }
        fchown(
            &fd,
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
        )
        .map_err(|e| format!("{path}: {e}"))?;
        Ok(Some(()))
    }
}

/// Files readied for linking, with their parents' open directories, and the source mtimes
/// of those parents (stamped once the links are made).
struct Linkable<'a> {
    jobs: Vec<(FileJob<'a>, Arc<OwnedFd>)>,
    dir_times: HashMap<String, i64>,
}

/// Links (or, when the earlier file does not check out, copies) the readied files into their
/// parents in the new layer, one worker per core, then puts back the parents' source mtimes.
fn link_or_copy(ctx: &Context, reuse: &Reuse, todo: Linkable) -> Result<(), String> {
    let mut touched: HashMap<String, Arc<OwnedFd>> = HashMap::new();
    for part in on_each_core(&todo.jobs, "link", |part| link_part(ctx, reuse, part))? {
        touched.extend(part);
    }
    for (parent, dir) in touched {
        if let Some(&mtime) = todo.dir_times.get(&parent) {
            let t = TimeSpec::new(mtime, 0);
            futimens(&*dir, &t, &t).map_err(|e| format!("{parent}: {e}"))?;
        }
    }
    Ok(())
}

/// One worker's share of [`link_or_copy`]; returns the directories it wrote into.
fn link_part(
    ctx: &Context,
    reuse: &Reuse,
    part: &[(FileJob, Arc<OwnedFd>)],
) -> Result<HashMap<String, Arc<OwnedFd>>, String> {
    let ctx_root = ctx.root_handle().map_err(|e| e.to_string())?;
    let mut touched = HashMap::new();
    for (job, dir) in part {
        let (parent, name) = split(&job.target);
        let want = reuse::Expect {
            size: job.size,
            mode: job.meta.mode,
            uid: job.meta.uid,
            gid: job.meta.gid,
            mtime: job.meta.mtime,
        };
        if !reuse.link(&job.target, &want, dir, &name) {
            let mut f = ctx.open_in(&ctx_root, job.src).map_err(|e| e.to_string())?;
            write_file_at(dir, &name, &job.target, &job.meta, Some(Data::File(&mut f)))?;
        }
        touched.entry(parent).or_insert_with(|| dir.clone());
    }
    Ok(touched)
}

/// Creates the regular file `name` in `dir` (which must not have it) with `m`'s owner, mode
/// and mtime; `target` names it in errors.
fn write_file_at(
    dir: &OwnedFd,
    name: &str,
    target: &str,
    m: &Meta,
    data: Option<Data<'_>>,
) -> Result<(), String> {
    let at = |e: nix::Error| format!("{target}: {e}");
    let fd = openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(at)?;
    let mut f = File::from(fd);
    match data {
        // File to file: std uses copy_file_range, so the data never enters user space.
        Some(Data::File(src)) => {
            io::copy(src, &mut f).map_err(|e| format!("{target}: {e}"))?;
        }
        Some(Data::Bytes(b)) => {
            io::Write::write_all(&mut f, b).map_err(|e| format!("{target}: {e}"))?
        }
        None => {}
    }
    fchown(&f, Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid))).map_err(at)?;
    fchmod(&f, Mode::from_bits_truncate(m.mode)).map_err(at)?;
    let t = TimeSpec::new(m.mtime, 0);
    futimens(&f, &t, &t).map_err(at)
}

/// Resolves `--chown` against the destination's own passwd and group files.
fn owner(dest: &Root, chown: Option<&str>) -> Result<Option<(u32, u32)>, String> {
    let Some(spec) = chown else { return Ok(None) };
    let passwd = read_in_root(dest, "/etc/passwd");
    let group = read_in_root(dest, "/etc/group");
    // A user name alone means its primary group; Docker's --chown default group is the user's.
    let u = strata_runtime::user::resolve(spec, &passwd, &group)
        .map_err(|e| format!("--chown={spec}: {e}"))?;
    let gid = if spec.contains(':') {
        u.gid
    } else if spec.parse::<u32>().is_ok() {
        u.uid
    } else {
        u.gid
    };
    Ok(Some((u.uid, gid)))
}

/// A text file of the tree under `root` (resolved inside it); empty when it cannot be read.
fn read_in_root(root: &Root, path: &str) -> String {
    root.resolve(path)
        .ok()
        .and_then(|h| h.reopen(pathrs::flags::OpenFlags::O_RDONLY).ok())
        .and_then(|mut f| {
            let mut s = String::new();
            io::Read::read_to_string(&mut f, &mut s).ok().map(|_| s)
        })
        .unwrap_or_default()
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
) -> Result<Option<PathBuf>, String> {
    let m = mount_layers(store, parent, &crate::lock(pending), true)?;
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
    Ok(Some(m.into_upper()))
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
pub fn copy_step(
    store: &Store,
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
        mount_layers(store, parent, &crate::lock(pending), true)?
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
    let mut written = None;
    let mut to_link = Linkable {
        jobs: Vec::new(),
        dir_times: HashMap::new(),
    };
    let single_into_dir = !op.dest_is_dir && dest.is_dir(&op.dest);
    let target_of = |rel: &str| -> String {
        if op.dest_is_dir || single_into_dir {
            format!("{}/{}", op.dest.trim_end_matches('/'), rel)
        } else {
            op.dest.clone()
        }
    };
    if op.dest_is_dir {
        let d = op.dest.trim_end_matches('/');
        if !d.is_empty() {
            dest.ensure_dir(d, own)?;
        }
    }
    for (name, content) in &op.inline {
        let (uid, gid) = own.unwrap_or((0, 0));
        let meta = Meta {
            kind: Kind::File,
            mode: chmod(0o644, false),
            uid,
            gid,
            mtime: 0,
            link: None,
        };
        dest.write(
            &target_of(name),
            &meta,
            Some(Data::Bytes(content.as_bytes())),
        )?;
    }
    for f in &op.fetched {
        let mut file = File::open(&f.path).map_err(|e| format!("{}: {e}", f.path.display()))?;
        if op.unpack == Some(true) && is_archive(&f.path) {
            extract_into(&dest, &op.dest, file)?;
            continue;
        }
        let (uid, gid) = own.unwrap_or((0, 0));
        let meta = Meta {
            kind: Kind::File,
            // Downloads are private unless --chmod says otherwise, as in Docker.
            mode: chmod(0o600, false),
            uid,
            gid,
            mtime: f.mtime.unwrap_or(0),
            link: None,
        };
        dest.write(&target_of(&f.filename), &meta, Some(Data::File(&mut file)))?;
    }
    if let Some(tree) = &op.git {
        let src = Root::open(&tree.dir).map_err(|e| format!("{}: {e}", tree.dir.display()))?;
        let shape = TreeShape {
            own: Some(own.unwrap_or((0, 0))),
            chmod: &chmod,
            exclude: None,
        };
        copy_tree(&src, "/", &mut dest, &target_of, &op.dest, &shape)?;
    }
    match from {
        None if op.sources.is_empty() => {}
        None => {
            let ctx_root = ctx.root_handle().map_err(|e| e.to_string())?;
            // Regular files of one source have distinct targets, so they can be written in
            // parallel once the directories exist (a context copy is syscall-bound).
            let first = op.selected.first().map(|x| x.0);
            let parallel = !op.add
                && op.selected.len() >= PARALLEL_COPY_MIN
                && op.selected.iter().all(|x| Some(x.0) == first);
            let mut files: Vec<FileJob> = Vec::new();
            for (_, sel) in &op.selected {
                let e = ctx.entry(sel);
                let (uid, gid) = own.unwrap_or((0, 0));
                let target = target_of(ctx.rel(sel));
                if op.add
                    && op.unpack != Some(false)
                    && e.kind == Kind::File
                    && is_archive(&ctx.root.join(ctx.src(sel)))
                {
                    // An archive unpacks into the destination, which is a directory then.
                    let dir = op.dest.clone();
                    let f = ctx
                        .open_in(&ctx_root, ctx.src(sel))
                        .map_err(|er| er.to_string())?;
                    extract_into(&dest, &dir, f)?;
                    continue;
                }
                let meta = Meta {
                    kind: e.kind,
                    mode: chmod(e.mode, e.kind == Kind::Dir),
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
            if parallel {
                written = Some(
                    files
                        .iter()
                        .filter_map(|f| Some((f.target.clone(), f.digest?.clone())))
                        .collect(),
                );
            }
            let (linkable, copies): (Vec<FileJob>, Vec<FileJob>) = files
                .into_iter()
                .partition(|f| reuse.is_some_and(|r| r.offers(&f.target, f.digest)));
            write_files_parallel(ctx, &dest, &copies)?;
            if let Some(upper) = m.upper_dir() {
                to_link = dest.prepare_links(ctx, upper, linkable)?;
            } else {
                write_files_parallel(ctx, &dest, &linkable)?;
            }
        }
        Some(src_image) => {
            let sm = mount_image(store, src_image, false)?;
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
                own,
                chmod: &chmod,
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
                        copy_tree(&src_root, &path, &mut dest, &target_of, &op.dest, &shape)?;
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
                    copy_tree(&src_root, &path, &mut dest, &at, &landing, &shape)?;
                }
            }
            drop(src_root);
            drop(sm);
        }
    }
    dest.finish()?;
    drop(dest);
    let upper = m.into_upper();
    if let Some(reuse) = reuse {
        // The overlay is gone: the new layer is a plain directory now.
        link_or_copy(ctx, reuse, to_link)?;
    }
    Ok(Copied {
        upper,
        files: written,
    })
}

/// Below this many entries a copy stays on one thread.
const PARALLEL_COPY_MIN: usize = 256;

/// Writes context files (target, metadata, context path) with one writer per core, each with
/// its own handles on both roots; their directories exist already.
fn write_files_parallel(ctx: &Context, dest: &Dest, files: &[FileJob]) -> Result<(), String> {
    on_each_core(files, "copy", |part| {
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

/// Runs `work` on `items` cut into one part per core (at most four), each on its own scoped
/// thread; returns the parts' results in order, or the first error. Nothing runs for no items.
fn on_each_core<T: Sync, R: Send>(
    items: &[T],
    what: &str,
    work: impl Fn(&[T]) -> Result<R, String> + Sync,
) -> Result<Vec<R>, String> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let chunk = items.len().div_ceil(workers);
    let work = &work;
    std::thread::scope(|scope| {
        let parts: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || work(part)))
            .collect();
        parts
            .into_iter()
            .map(|p| {
                p.join()
                    .unwrap_or_else(|_| Err(format!("a {what} worker panicked")))
            })
            .collect()
    })
}

/// Paths a `--from` source names: a literal path, or a glob in its last component.
fn glob_sources(root: &Root, s: &str) -> Result<Vec<String>, String> {
    let clean = strata_planner::paths::clean_abs(s);
    if !clean.contains(['*', '?', '[']) {
        return Ok(if root.resolve(&clean).is_ok() {
            vec![clean]
        } else {
            Vec::new()
        });
    }
    let (parent, pattern) = split(&clean);
    let h = root
        .resolve(&parent)
        .map_err(|e| format!("{parent}: {e}"))?;
    let f = h
        .reopen(pathrs::flags::OpenFlags::O_RDONLY | pathrs::flags::OpenFlags::O_DIRECTORY)
        .map_err(|e| format!("{parent}: {e}"))?;
    let mut out = Vec::new();
    for e in fs::read_dir(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .map_err(|e| format!("{parent}: {e}"))?
    {
        let name = e
            .map_err(|e| e.to_string())?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if strata_planner::context::glob_match(&pattern, &name) {
            out.push(format!("{}/{name}", parent.trim_end_matches('/')));
        }
    }
    out.sort();
    Ok(out)
}

/// How a `--from` tree is copied: owner, mode changes, `--exclude`.
struct TreeShape<'a> {
    own: Option<(u32, u32)>,
    chmod: &'a dyn Fn(u32, bool) -> u32,
    exclude: Option<&'a strata_parser::ignore::Matcher>,
}

/// Copies `path` from the source root (a directory: its contents) to the destination.
fn copy_tree(
    src: &Root,
    path: &str,
    dest: &mut Dest,
    target_of: &dyn Fn(&str) -> String,
    dest_dir: &str,
    shape: &TreeShape,
) -> Result<(), String> {
    let (own, chmod) = (shape.own, shape.chmod);
    let excluded = |rel: &str| shape.exclude.is_some_and(|m| m.excluded(rel));
    // The named source is followed (inside the root); what is below it is not.
    let h = src.resolve(path).map_err(|e| format!("{path}: {e}"))?;
    let f = h
        .reopen(pathrs::flags::OpenFlags::O_RDONLY)
        .map_err(|e| format!("{path}: {e}"))?;
    let md = f.metadata().map_err(|e| format!("{path}: {e}"))?;
    let name = split(path).1;
    if !md.is_dir() {
        if excluded(&name) {
            return Ok(());
        }
        let meta = meta_of(&md, None, own, chmod);
        let mut f = f;
        return dest.write(&target_of(&name), &meta, Some(Data::File(&mut f)));
    }
    // A directory's contents go into the destination, which is then a directory.
    let dest_dir = dest_dir.trim_end_matches('/').to_string();
    dest.ensure_dir(&dest_dir, own)?;
    let target_of = |rel: &str| format!("{dest_dir}/{rel}");
    let base = format!("/proc/self/fd/{}", f.as_raw_fd());
    let mut stack: Vec<String> = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir_path = if rel.is_empty() {
            base.clone()
        } else {
            format!("{base}/{rel}")
        };
        let mut names: Vec<String> = fs::read_dir(&dir_path)
            .map_err(|e| format!("{path}/{rel}: {e}"))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        for n in names {
            let child_rel = if rel.is_empty() {
                n.clone()
            } else {
                format!("{rel}/{n}")
            };
            if excluded(&child_rel) {
                continue;
            }
            let p = format!("{base}/{child_rel}");
            let cm = fs::symlink_metadata(&p).map_err(|e| format!("{path}/{child_rel}: {e}"))?;
            let ft = cm.file_type();
            let target = target_of(&child_rel);
            if ft.is_symlink() {
                let link = fs::read_link(&p)
                    .map(|l| l.to_string_lossy().into_owned())
                    .ok();
                dest.write(&target, &meta_of(&cm, link, own, chmod), None)?;
            } else if ft.is_dir() {
                dest.write(&target, &meta_of(&cm, None, own, chmod), None)?;
                stack.push(child_rel);
            } else if ft.is_file() {
                let h = src
                    .resolve_nofollow(format!("{}/{}", path.trim_end_matches('/'), child_rel))
                    .map_err(|e| format!("{path}/{child_rel}: {e}"))?;
                let mut cf = h
                    .reopen(pathrs::flags::OpenFlags::O_RDONLY)
                    .map_err(|e| format!("{path}/{child_rel}: {e}"))?;
                dest.write(
                    &target,
                    &meta_of(&cm, None, own, chmod),
                    Some(Data::File(&mut cf)),
                )?;
            } else {
                dest.write(&target, &meta_of(&cm, None, own, chmod), None)?;
            }
        }
    }
    Ok(())
}

fn meta_of(
    m: &fs::Metadata,
    link: Option<String>,
    own: Option<(u32, u32)>,
    chmod: &dyn Fn(u32, bool) -> u32,
) -> Meta {
    let ft = m.file_type();
    let kind = if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else {
        Kind::Special
    };
    let (uid, gid) = own.unwrap_or((m.uid(), m.gid()));
    Meta {
        kind,
        mode: if kind == Kind::Special {
            m.mode()
        } else {
            chmod(m.mode() & 0o7777, kind == Kind::Dir)
        },
        uid,
        gid,
        mtime: m.mtime(),
        link,
    }
}

/// ADD of a local archive: unpacked (safely) into the destination directory.
fn extract_into(dest: &Dest, dir: &str, f: File) -> Result<(), String> {
    let h = dest
        .root
        .mkdir_all(dir, &Permissions::from_mode(0o755))
        .map_err(|e| format!("{dir}: {e}"))?;
    let root = Root::from_fd(OwnedFd::from(h));
    let (_, r) = strata_image::compress::decompress_archive(io::BufReader::new(f))
        .map_err(|e| format!("ADD: {e}"))?;
    strata_image::layer::extract_into_root(
        r,
        root,
        Path::new(dir),
        &strata_image::layer::ExtractOptions::default(),
    )
    .map_err(|e| format!("ADD: {e}"))?;
    Ok(())
}
