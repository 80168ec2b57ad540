//! The deterministic layer tar writer.
//!
//! Same directory, same bytes: entries depth-first with names sorted bytewise, ustar headers
//! with numeric ids and no user/group names, no atime/ctime, whole-second mtimes, PAX records
//! (long names, big numbers, xattrs sorted by name) only where needed and in a fixed order,
//! hardlinks kept, sockets skipped. Overlay whiteouts become OCI whiteout entries.
//!
//! The tree is walked with `openat(O_NOFOLLOW)` relative to directory fds, so a container that
//! is still running cannot redirect the walk through a symlink it swaps in.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use nix::dir::Dir;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use xattr::FileExt;

use super::{LayerError, OPAQUE_MARKER, WHITEOUT_PREFIX};

/// Options for [`write_layer_tar`].
#[derive(Debug, Clone, Default)]
pub struct TarOptions {
    /// `SOURCE_DATE_EPOCH`: every mtime later than this is written as this.
    pub clamp_mtime: Option<i64>,
}

/// Writes the layer directory `dir` (overlayfs form) as a tar stream to `out`.
pub fn write_layer_tar<W: Write>(dir: &Path, out: W, opts: &TarOptions) -> Result<W, LayerError> {
    write_tree(&[dir], out, opts, false)
}

/// Writes the union of layer directories (`dirs`, top first) as one flat tar: what a container
/// sees, with whiteouts applied and no whiteout entries (`export`, `-o type=tar`).
pub fn write_flattened_tar<W: Write>(
    dirs: &[&Path],
    out: W,
    opts: &TarOptions,
) -> Result<W, LayerError> {
    write_tree(dirs, out, opts, true)
}

/// Writes one entry of a plain directory (no whiteouts: a merged view or a host tree), found
/// as `name` in the open directory `parent`, as the tar entry `as_name`, and for a directory
/// everything below it (`cp`). Walked like a layer: `openat(O_NOFOLLOW)` from directory fds,
/// so a running container cannot redirect the walk.
pub fn write_entry_tar<W: Write>(
    parent: OwnedFd,
    name: &std::ffi::OsStr,
    as_name: &[u8],
    out: W,
    shown: &Path,
) -> Result<W, LayerError> {
    let mut w = TarOut::plain(out, shown);
    w.write_name(&[parent], &name.to_os_string(), as_name.to_vec(), b"")?;
    w.finish()
}

/// Writes what the open directory `dir` holds (not the directory itself) as a tar stream of
/// relative names, like [`write_entry_tar`] (`cp DIR/. DEST`).
pub fn write_contents_tar<W: Write>(dir: OwnedFd, out: W, shown: &Path) -> Result<W, LayerError> {
    let mut w = TarOut::plain(out, shown);
    w.walk(&[dir], b"")?;
    w.finish()
}

/// Writes the entries of the plain tree `dir` that `changes` names, as a layer in overlay
/// order: a directory before what is below it, names sorted bytewise, a deleted name as its
/// whiteout where the name would sort (as an overlay upper's whiteout device would).
pub(super) fn write_changes_tar<W: Write>(
    dir: &Path,
    changes: &super::snapshot::Changes,
    out: W,
) -> Result<W, LayerError> {
    let root = super::snapshot::open_root(dir)?;
    let mut w = TarOut::plain(out, dir);
    w.flatten = false;
    w.walk_changes(&root, b"", changes)?;
    w.finish()
}

const NO_OPTIONS: TarOptions = TarOptions { clamp_mtime: None };

fn write_tree<W: Write>(
    dirs: &[&Path],
    out: W,
    opts: &TarOptions,
    flatten: bool,
) -> Result<W, LayerError> {
    let mut roots = Vec::new();
    for dir in dirs {
        roots.push(
            nix::fcntl::open(
                *dir,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| LayerError::io(*dir, e.into()))?,
        );
    }
    let dir = dirs.first().copied().unwrap_or(Path::new("."));
    let mut w = TarOut {
        out,
        opts,
        hardlinks: HashMap::new(),
        dir,
        buf: vec![0; 256 << 10],
        flatten,
    };
    w.walk(&roots, b"")?;
    w.finish()
}

struct TarOut<'a, W> {
    out: W,
    opts: &'a TarOptions,
    hardlinks: HashMap<(u64, u64), Vec<u8>>,
    dir: &'a Path,
    buf: Vec<u8>,
    /// Merge several layers into one view instead of writing one layer.
    flatten: bool,
}

/// Extended attributes as (name, value) pairs, sorted by name.
type Xattrs = Vec<(OsString, Vec<u8>)>;

/// One entry to write.
struct Meta<'s> {
    kind: tar::EntryType,
    st: &'s FileStat,
    size: u64,
    link: Option<&'s [u8]>,
    xattrs: Xattrs,
}

impl<'a, W: Write> TarOut<'a, W> {
    /// A writer for a plain tree (no layers to merge, no whiteouts to convert).
    fn plain(out: W, dir: &'a Path) -> Self {
        TarOut {
            out,
            opts: &NO_OPTIONS,
            hardlinks: HashMap::new(),
            dir,
            buf: vec![0; 256 << 10],
            flatten: true,
        }
    }

    /// Ends the archive (two zero blocks) and gives the output back.
    fn finish(mut self) -> Result<W, LayerError> {
        self.out
            .write_all(&[0u8; 1024])
            .map_err(|e| LayerError::io(self.dir, e))?;
        Ok(self.out)
    }

    fn err(&self, rel: &[u8], e: impl Into<io::Error>) -> LayerError {
        LayerError::io(
            self.dir.join(Path::new(std::ffi::OsStr::from_bytes(rel))),
            e.into(),
        )
    }

    /// Writes the entries of directory `prefix`, present in `dirs` (top first; one unless
    /// flattening). The topmost layer holding a name decides what it is.
    fn walk(&mut self, dirs: &[OwnedFd], prefix: &[u8]) -> Result<(), LayerError> {
        let mut names: Vec<OsString> = Vec::new();
        for d in dirs {
            names.extend(sorted_names(d).map_err(|e| self.err(prefix, e))?);
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        names.dedup();
        for name in names {
            if super::is_fuse_marker(name.as_bytes()) {
                continue;
            }
            let mut rel = prefix.to_vec();
            rel.extend_from_slice(name.as_bytes());
            self.write_name(dirs, &name, rel, prefix)?;
        }
        Ok(())
    }

    /// Writes `name` of directory `prefix` as the entry `rel` (and, for a directory,
    /// everything below it as `rel/...`). The topmost layer holding it decides what it is.
    fn write_name(
        &mut self,
        dirs: &[OwnedFd],
        name: &OsString,
        rel: Vec<u8>,
        prefix: &[u8],
    ) -> Result<(), LayerError> {
        let mut found = None;
        for (i, d) in dirs.iter().enumerate() {
            match fstatat(d, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => {
                    found = Some((i, st));
                    break;
                }
                Err(nix::errno::Errno::ENOENT) => continue,
                Err(e) => return Err(self.err(&rel, e)),
            }
        }
        let Some((top, st)) = found else {
            return Ok(());
        };
        let dir = &dirs[top];
        let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        let whiteout = fmt == SFlag::S_IFCHR && st.st_rdev == 0;
        if whiteout && self.flatten {
            return Ok(());
        }
        match fmt {
            SFlag::S_IFDIR => self.directory(&dirs[top..], name, rel, &st)?,
            SFlag::S_IFREG => self.regular(dir, name, rel, &st)?,
            SFlag::S_IFLNK => {
                let target = readlinkat(dir, name.as_os_str()).map_err(|e| self.err(&rel, e))?;
                self.entry(
                    &rel,
                    Meta::simple(tar::EntryType::Symlink, &st, Some(target.as_bytes())),
                )?;
            }
            SFlag::S_IFCHR if whiteout => {
                let mut wh = prefix.to_vec();
                wh.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
                wh.extend_from_slice(name.as_bytes());
                self.marker(&wh, &st)?;
            }
            SFlag::S_IFCHR => self.entry(&rel, Meta::simple(tar::EntryType::Char, &st, None))?,
            SFlag::S_IFBLK => self.entry(&rel, Meta::simple(tar::EntryType::Block, &st, None))?,
            SFlag::S_IFIFO => self.entry(&rel, Meta::simple(tar::EntryType::Fifo, &st, None))?,
            // Sockets cannot be carried in a layer; Docker skips them too.
            _ => {}
        }
        Ok(())
    }

    /// Writes the changed names of directory `prefix` (open as `dir`) and their whiteouts.
    fn walk_changes(
        &mut self,
        dir: &OwnedFd,
        prefix: &[u8],
        changes: &super::snapshot::Changes,
    ) -> Result<(), LayerError> {
        let mut names = sorted_names(dir).map_err(|e| self.err(prefix, e))?;
        let gone = changes.deleted.get(prefix);
        if let Some(gone) = gone {
            names.extend(gone.iter().cloned());
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            names.dedup();
        }
        let here = fstat(dir).map_err(|e| self.err(prefix, e))?;
        for name in names {
            let mut rel = prefix.to_vec();
            rel.extend_from_slice(name.as_bytes());
            if gone.is_some_and(|g| g.contains(&name)) {
                let mut wh = prefix.to_vec();
                wh.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
                wh.extend_from_slice(name.as_bytes());
                self.marker(&wh, &here)?;
                continue;
            }
            if !changes.emit.contains(&rel) {
                continue;
            }
            let st = fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| self.err(&rel, e))?;
            if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFDIR {
                self.write_name(std::slice::from_ref(dir), &name, rel, prefix)?;
                continue;
            }
            let opaque = changes.opaque.contains(&rel);
            let (child, rel, _) = self.directory_entry(dir, &name, rel, &st)?;
            if opaque {
                let mut marker = rel.clone();
                marker.extend_from_slice(OPAQUE_MARKER.as_bytes());
                self.marker(&marker, &st)?;
            }
            self.walk_changes(&child, &rel, changes)?;
        }
        Ok(())
    }

    /// Writes the entry of directory `name` (in `parent`) with its xattrs; gives it back open,
    /// with its `rel/` prefix, and whether it is opaque.
    fn directory_entry(
        &mut self,
        parent: &OwnedFd,
        name: &OsString,
        mut rel: Vec<u8>,
        st: &FileStat,
    ) -> Result<(OwnedFd, Vec<u8>, bool), LayerError> {
        let fd = open_dir(parent, name.as_os_str()).map_err(|e| self.err(&rel, e))?;
        let file = File::from(fd);
        let (xattrs, opaque) = read_xattrs(&file).map_err(|e| self.err(&rel, e))?;
        rel.push(b'/');
        let mut meta = Meta::simple(tar::EntryType::Directory, st, None);
        meta.xattrs = xattrs;
        self.entry(&rel, meta)?;
        Ok((OwnedFd::from(file), rel, opaque))
    }

    /// A directory: `layers[0]` holds it; when flattening, the layers below it that also hold
    /// it as a directory contribute their entries until an opaque one or a non-directory.
    fn directory(
        &mut self,
        layers: &[OwnedFd],
        name: &OsString,
        rel: Vec<u8>,
        st: &FileStat,
    ) -> Result<(), LayerError> {
        let (top, rel, opaque) = self.directory_entry(&layers[0], name, rel, st)?;
        if opaque && !self.flatten {
            let mut marker = rel.clone();
            marker.extend_from_slice(OPAQUE_MARKER.as_bytes());
            self.marker(&marker, st)?;
        }
        let mut children = vec![top];
        if self.flatten && !opaque {
            for lower in &layers[1..] {
                match fstatat(lower, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Err(nix::errno::Errno::ENOENT) => continue,
                    Err(e) => return Err(self.err(&rel, e)),
                    Ok(lst)
                        if SFlag::from_bits_truncate(lst.st_mode & SFlag::S_IFMT.bits())
                            == SFlag::S_IFDIR =>
                    {
                        let f = File::from(
                            open_dir(lower, name.as_os_str()).map_err(|e| self.err(&rel, e))?,
                        );
                        let (_, lower_opaque) = read_xattrs(&f).map_err(|e| self.err(&rel, e))?;
                        children.push(OwnedFd::from(f));
                        if lower_opaque {
                            break;
                        }
                    }
                    // A file or a whiteout hides everything further down.
                    Ok(_) => break,
                }
            }
        }
        self.walk(&children, &rel)
    }

    fn regular(
        &mut self,
        parent: &OwnedFd,
        name: &OsString,
        rel: Vec<u8>,
        st: &FileStat,
    ) -> Result<(), LayerError> {
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 {
            if let Some(first) = self.hardlinks.get(&key).cloned() {
                return self.entry(&rel, Meta::simple(tar::EntryType::Link, st, Some(&first)));
            }
        }
        let fd = openat(
            parent,
            name.as_os_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.err(&rel, e))?;
        let now = fstat(&fd).map_err(|e| self.err(&rel, e))?;
        if (now.st_dev, now.st_ino) != key {
            return Err(self.err(&rel, io::Error::other("file was replaced while reading")));
        }
        let mut file = File::from(fd);
        if let Some(node) = recorded_device(&file, &now) {
            // An empty file standing for a device node (user namespace): the node itself.
            let kind = if node.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFBLK.bits() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Char
            };
            return self.entry(&rel, Meta::simple(kind, &node, None));
        }
        let (xattrs, _) = read_xattrs(&file).map_err(|e| self.err(&rel, e))?;
        let mut meta = Meta::simple(tar::EntryType::Regular, &now, None);
        meta.size = now.st_size as u64;
        meta.xattrs = xattrs;
        self.entry(&rel, meta)?;
        self.copy_exact(&mut file, now.st_size as u64, &rel)?;
        if st.st_nlink > 1 {
            self.hardlinks.insert(key, rel);
        }
        Ok(())
    }

    fn copy_exact(&mut self, file: &mut File, size: u64, rel: &[u8]) -> Result<(), LayerError> {
        let mut left = size;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = file
                .read(&mut self.buf[..want])
                .map_err(|e| self.err(rel, e))?;
            if n == 0 {
                return Err(self.err(rel, io::Error::other("file shrank while reading")));
            }
            self.out
                .write_all(&self.buf[..n])
                .map_err(|e| self.err(rel, e))?;
            left -= n as u64;
        }
        self.pad(size, rel)
    }

    fn pad(&mut self, size: u64, rel: &[u8]) -> Result<(), LayerError> {
        let rem = (size % 512) as usize;
        if rem != 0 {
            self.out
                .write_all(&[0u8; 512][..512 - rem])
                .map_err(|e| self.err(rel, e))?;
        }
        Ok(())
    }

    /// A whiteout or opaque marker: an empty regular file owned by root.
    fn marker(&mut self, rel: &[u8], st: &FileStat) -> Result<(), LayerError> {
        let mut meta = Meta::simple(tar::EntryType::Regular, st, None);
        meta.xattrs.clear();
        let mut header = self.header(rel, &meta)?;
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_cksum();
        self.out
            .write_all(header.as_bytes())
            .map_err(|e| self.err(rel, e))
    }

    fn entry(&mut self, rel: &[u8], meta: Meta<'_>) -> Result<(), LayerError> {
        let header = self.header(rel, &meta)?;
        self.out
            .write_all(header.as_bytes())
            .map_err(|e| self.err(rel, e))
    }

    /// Builds the ustar header, writing a PAX header first when a field does not fit.
    fn header(&mut self, rel: &[u8], meta: &Meta<'_>) -> Result<tar::Header, LayerError> {
        let st = meta.st;
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(meta.kind);
        put_name(&mut h.as_old_mut().name, rel, b"path", &mut pax);
        if let Some(link) = meta.link {
            put_name(&mut h.as_old_mut().linkname, link, b"linkpath", &mut pax);
        }
        h.set_mode(st.st_mode & 0o7777);
        let (uid, gid) = (u64::from(st.st_uid), u64::from(st.st_gid));
        if uid >= 0o7777777 {
            pax.push((b"uid".to_vec(), uid.to_string().into_bytes()));
        }
        if gid >= 0o7777777 {
            pax.push((b"gid".to_vec(), gid.to_string().into_bytes()));
        }
        h.set_uid(uid);
        h.set_gid(gid);
        if meta.size >= 0o77777777777 {
            pax.push((b"size".to_vec(), meta.size.to_string().into_bytes()));
        }
        h.set_size(meta.size);
        let mut mtime = st.st_mtime;
        if let Some(clamp) = self.opts.clamp_mtime {
            mtime = mtime.min(clamp);
        }
        h.set_mtime(mtime.max(0) as u64);
        if matches!(meta.kind, tar::EntryType::Char | tar::EntryType::Block) {
            let rdev = st.st_rdev;
            h.set_device_major(libc::major(rdev))
                .map_err(|e| self.err(rel, e))?;
            h.set_device_minor(libc::minor(rdev))
                .map_err(|e| self.err(rel, e))?;
        }
        for (k, v) in &meta.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k.as_bytes());
            pax.push((key, v.clone()));
        }
        if !pax.is_empty() {
            self.write_pax(rel, &pax)?;
        }
        h.set_cksum();
        Ok(h)
    }

    fn write_pax(&mut self, rel: &[u8], records: &[(Vec<u8>, Vec<u8>)]) -> Result<(), LayerError> {
        let mut data = Vec::new();
        for (k, v) in records {
            data.extend_from_slice(&pax_record(k, v));
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        let mut name = b"PaxHeaders/".to_vec();
        name.extend_from_slice(&rel[..rel.len().min(80)]);
        let mut ignored = Vec::new();
        put_name(&mut h.as_old_mut().name, &name, b"path", &mut ignored);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.out
            .write_all(h.as_bytes())
            .and_then(|_| self.out.write_all(&data))
            .map_err(|e| self.err(rel, e))?;
        self.pad(data.len() as u64, rel)
    }
}

impl<'s> Meta<'s> {
    fn simple(kind: tar::EntryType, st: &'s FileStat, link: Option<&'s [u8]>) -> Self {
        Meta {
            kind,
            st,
            size: 0,
            link,
            xattrs: Vec::new(),
        }
    }
}

/// Puts `value` in a 100-byte name field, or a PAX record when it does not fit.
fn put_name(field: &mut [u8; 100], value: &[u8], key: &[u8], pax: &mut Vec<(Vec<u8>, Vec<u8>)>) {
    if value.len() <= 100 {
        field[..value.len()].copy_from_slice(value);
    } else {
        field.copy_from_slice(&value[..100]);
        pax.push((key.to_vec(), value.to_vec()));
    }
}

/// `"%d %s=%s\n"` where the length counts itself.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut out = format!("{len} ").into_bytes();
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

/// The device node an empty file stands for ([`super::DEVICE_XATTR`]), as the stat of one.
fn recorded_device(file: &File, st: &FileStat) -> Option<FileStat> {
    if st.st_size != 0 {
        return None;
    }
    let value = file.get_xattr(super::DEVICE_XATTR).ok()??;
    let text = String::from_utf8(value).ok()?;
    let mut f = text.split(' ');
    let kind = match f.next()? {
        "c" => SFlag::S_IFCHR,
        "b" => SFlag::S_IFBLK,
        _ => return None,
    };
    let (major, minor): (u32, u32) = (f.next()?.parse().ok()?, f.next()?.parse().ok()?);
    let mut node = *st;
    node.st_mode = kind.bits() | (st.st_mode & 0o7777);
    node.st_rdev = libc::makedev(major, minor);
    Some(node)
}

/// Opens the directory `name` of `parent` without following a symlink.
pub(super) fn open_dir(parent: &OwnedFd, name: &std::ffi::OsStr) -> nix::Result<OwnedFd> {
    openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Directory entries sorted bytewise, without `.` and `..`.
pub(super) fn sorted_names(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let dup = dir.as_fd().try_clone_to_owned()?;
    let mut d = Dir::from_fd(dup)?;
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsString::from_vec(n.to_vec()));
        }
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// The xattrs a layer carries (sorted; overlay's own bookkeeping left out) and whether the
/// directory is opaque.
fn read_xattrs(f: &File) -> io::Result<(Xattrs, bool)> {
    let mut out = Vec::new();
    let mut opaque = false;
    let names = match f.list_xattr() {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok((out, false)),
        Err(e) => return Err(e),
    };
    for name in names {
        let n = name.as_bytes();
        if n == super::overlay_opaque_xattr().as_bytes() || n == super::FUSE_OPAQUE_XATTR.as_bytes()
        {
            opaque = f.get_xattr(&name)?.as_deref() == Some(b"y");
            continue;
        }
        if super::is_overlay_xattr(n) || n == b"security.selinux" {
            continue;
        }
        if let Some(v) = f.get_xattr(&name)? {
            out.push((name, v));
        }
    }
    out.sort();
    Ok((out, opaque))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_device_node_is_written_as_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let stand_in = dir.path().join("null");
        std::fs::write(&stand_in, b"").unwrap();
        xattr::set(&stand_in, super::super::DEVICE_XATTR, b"c 1 3").unwrap();
        let tar = write_layer_tar(dir.path(), Vec::new(), &TarOptions::default()).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries: Vec<_> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                (
                    e.path().unwrap().display().to_string(),
                    h.entry_type(),
                    h.device_major().unwrap(),
                    h.device_minor().unwrap(),
                    e.pax_extensions().unwrap().is_some(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [(
                "null".to_string(),
                tar::EntryType::Char,
                Some(1),
                Some(3),
                false
            )]
        );
    }

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record(b"path", b"a"), b"9 path=a\n".to_vec());
        let r = pax_record(b"path", &[b'x'; 95]);
        assert_eq!(r.len().to_string(), String::from_utf8_lossy(&r[..3]));
    }
}
