//! The safe layer extractor: a hostile tar stream into a directory in overlayfs form.
//!
//! Every entry's parent is resolved inside the target with `openat2(RESOLVE_IN_ROOT)` and no
//! symlinks allowed (pathrs), and the entry itself is created with `*at` calls on that parent
//! fd with `O_NOFOLLOW`/`O_EXCL`. So `../x`, absolute names, writes through a symlink the
//! archive planted, and hardlinks to anything outside the layer are all refused, and nothing
//! outside the target is ever touched.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Permissions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, futimens, mknodat, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use pathrs::flags::ResolverFlags;
use pathrs::Root;
use xattr::FileExt;

use super::guard::ExtensionGuard;
use super::{LayerError, OPAQUE_MARKER, WHITEOUT_PREFIX};

/// Options for [`extract_layer`].
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Allow character and block device entries (only when running as root).
    pub allow_devices: bool,
    /// Set file owners from the archive (needs root).
    pub preserve_owners: bool,
    /// Read `.wh.` entries as OCI whiteouts (a layer); off, they are ordinary names (`cp`).
    pub whiteouts: bool,
    /// Refuse to replace a directory with a non-directory or the reverse (`cp`, as Docker's
    /// `NoOverwriteDirNonDir`); a layer replaces whatever is there.
    pub no_overwrite_dir_non_dir: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        let root = nix::unistd::geteuid().is_root();
        ExtractOptions {
            allow_devices: root,
            preserve_owners: root,
            whiteouts: true,
            no_overwrite_dir_non_dir: false,
        }
    }
}

/// What an extraction produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractStats {
    pub entries: u64,
    /// Bytes of regular-file content.
    pub content_bytes: u64,
}

/// Extracts the (already decompressed) tar stream `input` into the existing, empty directory
/// `target`, converting OCI whiteouts to overlayfs form. Returns the reader positioned after
/// the end-of-archive marker so callers can hash or drain the rest.
pub fn extract_layer<R: Read>(
    input: R,
    target: &Path,
    opts: &ExtractOptions,
) -> Result<(ExtractStats, R), LayerError> {
    let root =
        Root::open(target).map_err(|e| LayerError::io(target, io::Error::other(e.to_string())))?;
    extract_into_root(input, root, target, opts)
}

/// Like [`extract_layer`] into an already opened root (e.g. a directory resolved inside a
/// container's rootfs); `target` only names it in errors.
pub fn extract_into_root<R: Read>(
    input: R,
    root: Root,
    target: &Path,
    opts: &ExtractOptions,
) -> Result<(ExtractStats, R), LayerError> {
    let root = root.with_resolver_flags(ResolverFlags::NO_SYMLINKS);
    let mut x = Extractor {
        root,
        target,
        opts,
        parents: HashMap::new(),
        dirs: Vec::new(),
        stats: ExtractStats::default(),
        buf: vec![0; COPY_BUF],
    };
    let mut archive = tar::Archive::new(ExtensionGuard::new(input));
    for entry in archive.entries().map_err(LayerError::Stream)? {
        let mut entry = entry.map_err(LayerError::Stream)?;
        x.entry(&mut entry)?;
    }
    x.finish_dirs()?;
    Ok((x.stats, archive.into_inner().into_inner()))
}

/// Where an entry goes: its parent directory (open), its name there, its path in the layer,
/// and its name as the archive wrote it (for errors).
struct Place {
    dir: Rc<OwnedFd>,
    parent: PathBuf,
    name: std::ffi::OsString,
    path: PathBuf,
    shown: String,
}

impl Place {
    fn bad(&self, reason: &str) -> LayerError {
        LayerError::entry(self.shown.clone(), reason)
    }
}

/// An entry's mode, owner and mtime as the archive gives them.
struct Attrs {
    mode: u32,
    owner: (u32, u32),
    mtime: i64,
}

struct DirFixup {
    path: PathBuf,
    mode: u32,
    mtime: i64,
}

struct Extractor<'a> {
    root: Root,
    target: &'a Path,
    opts: &'a ExtractOptions,
    /// Directories already resolved or created, by their path inside the layer: most entries
    /// find their parent here instead of walking the path again.
    parents: HashMap<PathBuf, Rc<OwnedFd>>,
    /// Directory modes and times, applied last so creating children does not disturb them.
    dirs: Vec<DirFixup>,
    stats: ExtractStats,
    /// File contents go through this buffer: one `write` per file for most files.
    buf: Vec<u8>,
}

/// Size of the content buffer.
const COPY_BUF: usize = 256 << 10;
/// Directory fds kept open at most: a pull extracts up to three layers at once, and all of
/// them together must stay well under the usual soft limit of 1024 open files. (Layers list a
/// directory's entries together, so the parents in use at any time are few.)
const MAX_CACHED_PARENTS: usize = 128;

impl Extractor<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), LayerError> {
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let bad = |reason: &str| LayerError::entry(shown.clone(), reason);
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let path = clean_entry_path(&raw).map_err(bad)?;
        self.stats.entries += 1;
        let Some(name) = path.file_name().map(OsStr::to_os_string) else {
            // The archive's root entry ("./"): nothing to create.
            return Ok(());
        };
        let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
        // Outside layers (`cp`), `.wh.` names are just names.
        if self.opts.whiteouts && self.whiteout(entry, &parent, &name, &path, &shown)? {
            return Ok(());
        }
        let header = entry.header();
        let attrs = Attrs {
            mode: header.mode().map_err(LayerError::Stream)? & 0o7777,
            owner: (
                header.uid().map_err(LayerError::Stream)? as u32,
                header.gid().map_err(LayerError::Stream)? as u32,
            ),
            mtime: header.mtime().map_err(LayerError::Stream)? as i64,
        };
        let at = Place {
            dir: self.parent(&parent, &shown)?,
            parent,
            name,
            path,
            shown,
        };
        match kind {
            tar::EntryType::Directory => self.directory(entry, at, &attrs),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.regular(entry, &at, &attrs)
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| at.bad("symlink without a target"))?
                    .into_owned();
                self.create(&at.dir, &at.parent, &at.name, false, || {
                    symlinkat(OsStr::from_bytes(&target), &*at.dir, at.name.as_os_str())
                })?;
                self.stamp_at(&at.dir, &at.name, &at.path, attrs.owner, attrs.mtime)
            }
            tar::EntryType::Link => self.hardlink(entry, &at),
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                self.node(entry, &at, &attrs)
            }
            other => Err(at.bad(&format!("unsupported entry type {other:?}"))),
        }
    }

    /// An opaque marker or a whiteout (`.wh.NAME`) in overlay form; false for any other name.
    fn whiteout<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        parent: &Path,
        name: &OsStr,
        path: &Path,
        shown: &str,
    ) -> Result<bool, LayerError> {
        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE_MARKER.as_bytes() {
            let dir = self.parent(parent, shown)?;
            fset_xattr(&*dir, super::overlay_opaque_xattr().as_bytes(), b"y")
                .map_err(|e| self.io(parent, e))?;
            return Ok(true);
        }
        let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) else {
            return Ok(false);
        };
        if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
            return Err(LayerError::entry(
                shown.to_string(),
                "whiteout names an invalid path",
            ));
        }
        let hidden = OsStr::from_bytes(hidden).to_os_string();
        let dir = self.parent(parent, shown)?;
        self.create(&dir, parent, &hidden, false, || {
            mknodat(&*dir, hidden.as_os_str(), SFlag::S_IFCHR, Mode::empty(), 0)
        })?;
        // The writer puts a whiteout's time in its marker entry: keep the entry's, so the
        // layer written back from this directory is the same tar (same diffID), whatever the
        // clock says now.
        let mtime = entry.header().mtime().map_err(LayerError::Stream)? as i64;
        let t = TimeSpec::new(mtime, 0);
        utimensat(
            &*dir,
            hidden.as_os_str(),
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| self.io(path, e.into()))?;
        Ok(true)
    }

    /// A directory: an existing one stays (its children too), anything else is replaced.
    fn directory<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        at: Place,
        attrs: &Attrs,
    ) -> Result<(), LayerError> {
        let dir = &at.dir;
        let name = &at.name;
        let mkdir = || match nix::sys::stat::mkdirat(
            &**dir,
            name.as_os_str(),
            Mode::from_bits_truncate(0o700),
        ) {
            Err(Errno::EEXIST) => {
                match fstatat(&**dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits() => Ok(()),
                    _ => Err(Errno::EEXIST),
                }
            }
            other => other,
        };
        self.create(dir, &at.parent, name, true, mkdir)?;
        let fd = openat(
            &**dir,
            name.as_os_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.io(&at.path, e.into()))?;
        self.own(&fd, attrs.owner, &at.path)?;
        self.set_xattrs(entry, &fd, &at.path)?;
        // Opened from its resolved parent without following links, so it is inside the
        // layer: its children need no path walk.
        self.remember_parent(at.path.clone(), fd);
        self.dirs.push(DirFixup {
            path: at.path,
            mode: attrs.mode,
            mtime: attrs.mtime,
        });
        Ok(())
    }

    /// A regular file, written through the content buffer.
    fn regular<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        at: &Place,
        attrs: &Attrs,
    ) -> Result<(), LayerError> {
        let fd = self.create(&at.dir, &at.parent, &at.name, false, || {
            openat(
                &*at.dir,
                at.name.as_os_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
        })?;
        let mut file = File::from(fd);
        let n = copy_through(entry, &mut file, &mut self.buf).map_err(LayerError::Stream)?;
        self.stats.content_bytes += n;
        self.own(&file, attrs.owner, &at.path)?;
        fchmod(&file, Mode::from_bits_truncate(attrs.mode))
            .map_err(|e| self.io(&at.path, e.into()))?;
        self.set_xattrs(entry, &file, &at.path)?;
        let t = TimeSpec::new(attrs.mtime, 0);
        futimens(&file, &t, &t).map_err(|e| self.io(&at.path, e.into()))
    }

    /// A hard link to an earlier entry of the layer (never a directory, never outside it).
    fn hardlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        at: &Place,
    ) -> Result<(), LayerError> {
        let raw_target = entry
            .link_name_bytes()
            .ok_or_else(|| at.bad("hardlink without a target"))?
            .into_owned();
        let target =
            clean_entry_path(&raw_target).map_err(|r| at.bad(&format!("hardlink target: {r}")))?;
        let (tparent, tname) = match (target.parent(), target.file_name()) {
            (Some(p), Some(n)) => (p.to_path_buf(), n.to_os_string()),
            _ => return Err(at.bad("hardlink target is the layer root")),
        };
        let tdir = self
            .root
            .resolve_nofollow(&tparent)
            .map(OwnedFd::from)
            .map_err(|_| at.bad("hardlink target is not in the layer"))?;
        let tst = fstatat(&tdir, tname.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|_| at.bad("hardlink target is not in the layer"))?;
        if SFlag::from_bits_truncate(tst.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR {
            return Err(at.bad("hardlink target is a directory"));
        }
        self.create(&at.dir, &at.parent, &at.name, false, || {
            linkat(
                &tdir,
                tname.as_os_str(),
                &*at.dir,
                at.name.as_os_str(),
                AtFlags::empty(),
            )
        })?;
        Ok(())
    }

    /// A device node (as root only, recorded on an empty file in a user namespace; never a 0/0
    /// character device, overlay's whiteout) or a FIFO.
    fn node<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        at: &Place,
        attrs: &Attrs,
    ) -> Result<(), LayerError> {
        let header = entry.header();
        let (sflag, is_dev) = match header.entry_type() {
            tar::EntryType::Char => (SFlag::S_IFCHR, true),
            tar::EntryType::Block => (SFlag::S_IFBLK, true),
            _ => (SFlag::S_IFIFO, false),
        };
        if is_dev && !self.opts.allow_devices {
            return Err(at.bad("device nodes are only extracted as root"));
        }
        let major = header.device_major().ok().flatten().unwrap_or(0);
        let minor = header.device_minor().ok().flatten().unwrap_or(0);
        if is_dev && major == 0 && minor == 0 && sflag == SFlag::S_IFCHR {
            return Err(at.bad("a 0/0 character device is a whiteout in overlay form; refusing it"));
        }
        let mode = Mode::from_bits_truncate(attrs.mode);
        if is_dev && super::in_user_namespace() {
            // No mknod in a user namespace: an empty file stands for the node, recording it
            // (the layer writer gives the entry back as it came).
            let fd = self.create(&at.dir, &at.parent, &at.name, false, || {
                openat(
                    &*at.dir,
                    at.name.as_os_str(),
                    OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_WRONLY
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    mode,
                )
            })?;
            let kind = if sflag == SFlag::S_IFCHR { 'c' } else { 'b' };
            fset_xattr(
                &fd,
                super::DEVICE_XATTR.as_bytes(),
                format!("{kind} {major} {minor}").as_bytes(),
            )
            .map_err(|e| at.bad(&format!("record the device node: {e}")))?;
        } else {
            self.create(&at.dir, &at.parent, &at.name, false, || {
                mknodat(
                    &*at.dir,
                    at.name.as_os_str(),
                    sflag,
                    mode,
                    libc::makedev(major, minor),
                )
            })?;
        }
        // mknod applies the umask: the node gets the archive's mode exactly (a 0666
        // /dev/null stays 0666). No symlink is followed (glibc refuses one).
        nix::sys::stat::fchmodat(
            &*at.dir,
            at.name.as_os_str(),
            mode,
            nix::sys::stat::FchmodatFlags::NoFollowSymlink,
        )
        .map_err(|e| at.bad(&format!("chmod: {e}")))?;
        self.stamp_at(&at.dir, &at.name, &at.path, attrs.owner, attrs.mtime)
    }

    /// The fd of `parent` inside the layer, creating missing directories; never through a symlink.
    fn parent(&mut self, parent: &Path, shown: &str) -> Result<Rc<OwnedFd>, LayerError> {
        if let Some(fd) = self.parents.get(parent) {
            return Ok(Rc::clone(fd));
        }
        let handle = self
            .root
            .mkdir_all(parent, &Permissions::from_mode(0o755))
            .map_err(|e| {
                LayerError::entry(
                    shown,
                    format!("parent directory cannot be resolved inside the layer (a symlink or a non-directory in the path?): {e}"),
                )
            })?;
        Ok(self.remember_parent(parent.to_path_buf(), OwnedFd::from(handle)))
    }

    fn remember_parent(&mut self, path: PathBuf, fd: OwnedFd) -> Rc<OwnedFd> {
        if self.parents.len() >= MAX_CACHED_PARENTS {
            self.parents.clear();
        }
        let fd = Rc::new(fd);
        self.parents.insert(path, Rc::clone(&fd));
        fd
    }

    /// Runs `make` to create `dir/name`; should something be there already (an archive may
    /// name a path twice, or a later layer's entry replaces an earlier one), clears it and
    /// runs `make` again. Creating first saves a `stat` per entry in the usual case.
    fn create<T>(
        &mut self,
        dir: &OwnedFd,
        parent: &Path,
        name: &OsStr,
        keep_dir: bool,
        make: impl Fn() -> nix::Result<T>,
    ) -> Result<T, LayerError> {
        match make() {
            Err(Errno::EEXIST) => {
                self.clear(dir, parent, name, keep_dir)?;
                make()
            }
            other => other,
        }
        .map_err(|e| self.io(&parent.join(name), e.into()))
    }

    /// Removes whatever is at `dir/name` so a new entry can take its place. An existing
    /// directory stays when the new entry is a directory too.
    fn clear(
        &mut self,
        dir: &OwnedFd,
        parent: &Path,
        name: &OsStr,
        keep_dir: bool,
    ) -> Result<(), LayerError> {
        let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(self.io(&parent.join(name), e.into())),
        };
        let is_dir = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR;
        if is_dir && keep_dir {
            return Ok(());
        }
        if self.opts.no_overwrite_dir_non_dir && is_dir != keep_dir {
            let what = if is_dir {
                "cannot overwrite directory {} with non-directory"
            } else {
                "cannot overwrite non-directory {} with directory"
            };
            return Err(LayerError::entry(
                parent.join(name).to_string_lossy().into_owned(),
                what.replace("{}", &format!("{:?}", parent.join(name))),
            ));
        }
        if is_dir {
            // Removing a directory invalidates every cached fd below it, and its mode and
            // time (and those of its subdirectories) are no longer to be set.
            self.parents.clear();
            let gone = parent.join(name);
            self.dirs.retain(|d| !d.path.starts_with(&gone));
            self.root
                .remove_all(&gone)
                .map_err(|e| self.io(&gone, io::Error::other(e.to_string())))
        } else {
            unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| self.io(&parent.join(name), e.into()))
        }
    }

    /// Owner (when kept) and mtime of the non-directory `name` in `dir`, not following it.
    fn stamp_at(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        path: &Path,
        owner: (u32, u32),
        mtime: i64,
    ) -> Result<(), LayerError> {
        if self.opts.preserve_owners {
            fchownat(
                dir,
                name,
                Some(Uid::from_raw(owner.0)),
                Some(Gid::from_raw(owner.1)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.chown_error(path, owner, e))?;
        }
        let t = TimeSpec::new(mtime, 0);
        utimensat(dir, name, &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| self.io(path, e.into()))
    }

    fn own(&self, fd: impl AsFd, owner: (u32, u32), path: &Path) -> Result<(), LayerError> {
        if !self.opts.preserve_owners {
            return Ok(());
        }
        fchown(
            fd,
            Some(Uid::from_raw(owner.0)),
            Some(Gid::from_raw(owner.1)),
        )
        .map_err(|e| self.chown_error(path, owner, e))
    }

    /// A chown that failed; EINVAL means the owner has no id in this user namespace (rootless
    /// without subordinate ranges), which the error says how to give it.
    fn chown_error(&self, path: &Path, owner: (u32, u32), e: nix::Error) -> LayerError {
        if e != nix::errno::Errno::EINVAL {
            return self.io(path, e.into());
        }
        LayerError::entry(
            path.display().to_string(),
            format!(
                "owned by uid {} gid {}, which this user namespace does not map (add a range \
                 for the user to /etc/subuid and /etc/subgid)",
                owner.0, owner.1
            ),
        )
    }

    fn set_xattrs<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        f: impl AsFd,
        path: &Path,
    ) -> Result<(), LayerError> {
        let Some(exts) = entry.pax_extensions().map_err(LayerError::Stream)? else {
            return Ok(());
        };
        for ext in exts {
            let ext = ext.map_err(LayerError::Stream)?;
            let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                continue;
            };
            // Overlay's own attributes are never taken from an archive.
            if super::is_overlay_xattr(name) {
                continue;
            }
            match fset_xattr(&f, name, ext.value_bytes()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
                Err(e) => return Err(self.io(path, e)),
            }
        }
        Ok(())
    }

    fn finish_dirs(&mut self) -> Result<(), LayerError> {
        for d in std::mem::take(&mut self.dirs) {
            let fd = OwnedFd::from(
                self.root
                    .resolve_nofollow(&d.path)
                    .map_err(|e| self.io(&d.path, io::Error::other(e.to_string())))?,
            );
            // An O_PATH handle cannot be chmod'ed; reopen it as a real directory fd.
            let f = reopen_dir(&fd).map_err(|e| self.io(&d.path, e))?;
            fchmod(&f, Mode::from_bits_truncate(d.mode)).map_err(|e| self.io(&d.path, e.into()))?;
            let t = TimeSpec::new(d.mtime, 0);
            futimens(&f, &t, &t).map_err(|e| self.io(&d.path, e.into()))?;
        }
        Ok(())
    }

    fn io(&self, rel: &Path, e: io::Error) -> LayerError {
        LayerError::io(self.target.join(rel), e)
    }
}

/// Copies the rest of `entry` into `file` through `buf`, filling it before each write.
fn copy_through(entry: &mut impl Read, file: &mut File, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0;
    loop {
        let filled = crate::pipeline::read_full(entry, buf)?;
        if filled == 0 {
            return Ok(total);
        }
        file.write_all(&buf[..filled])?;
        total += filled as u64;
    }
}

/// Sets an extended attribute through a descriptor that is not a `File` (a directory the
/// extractor keeps open for its children).
fn fset_xattr(fd: impl AsFd, name: &[u8], value: &[u8]) -> io::Result<()> {
    XattrFd(fd.as_fd()).set_xattr(OsStr::from_bytes(name), value)
}

/// A borrowed descriptor for the xattr crate, whose `FileExt` only `File` implements.
struct XattrFd<'a>(BorrowedFd<'a>);

impl AsRawFd for XattrFd<'_> {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl xattr::FileExt for XattrFd<'_> {}

fn reopen_dir(fd: &OwnedFd) -> io::Result<OwnedFd> {
    openat(
        fd,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Normalises a tar entry name: strips `./` and trailing `/`, refuses absolute paths, `..`
/// components and NUL bytes.
fn clean_entry_path(raw: &[u8]) -> Result<PathBuf, &'static str> {
    if raw.contains(&0) {
        return Err("name contains a NUL byte");
    }
    if raw.first() == Some(&b'/') {
        return Err("absolute path");
    }
    let mut out = PathBuf::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("path escapes the layer with '..'"),
            p => out.push(OsStr::from_bytes(p)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_cleaned_or_refused() {
        assert_eq!(clean_entry_path(b"./a/b/").unwrap(), PathBuf::from("a/b"));
        assert_eq!(clean_entry_path(b"./").unwrap(), PathBuf::from(""));
        assert!(clean_entry_path(b"../x").is_err());
        assert!(clean_entry_path(b"a/../../x").is_err());
        assert!(clean_entry_path(b"/etc/passwd").is_err());
    }
}
