//! A plain directory tree's changes since a moment, as a layer: what a build step wrote where
//! no overlay records it (chroot isolation, which may not mount).
//!
//! [`Snapshot::take`] records a stamp of every entry (inode, change time, modification time,
//! size, mode, owner). [`Snapshot::changes`] compares the tree with it later: an entry whose
//! stamp differs was written (the change time moves with every write, `chmod`, `chown`, link
//! and rename, and nothing can set it back), a recorded entry that is gone was deleted.
//! [`write_changes_into`] makes an upper directory in overlay form from them, as an overlay
//! would have recorded the step: the changed entries, their parent directories as copy-up
//! makes them, whiteouts for the deleted names (a replaced directory gets whiteouts for the
//! names it lost, not an opaque marker, which would need `CAP_SYS_ADMIN` to set).
//! [`materialize`] is the other end: layer directories flattened into a plain tree.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::io::{BufWriter, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};

use super::writer::{open_dir, sorted_names, write_changes_tar};
use super::{extract_layer, write_flattened_tar, ExtractOptions, LayerError, TarOptions};

/// What identifies an entry's state: equal stamps, unchanged entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    /// A directory's birth time where the file system keeps one: a directory removed and
    /// made again often gets its old inode number back, never its birth time.
    born: Option<(i64, u32)>,
    ctime: (i64, i64),
    mtime: (i64, i64),
    size: i64,
    mode: u32,
    owner: (u32, u32),
}

impl Stamp {
    fn of(st: &FileStat) -> Stamp {
        Stamp {
            ino: st.st_ino,
            born: None,
            ctime: (st.st_ctime, st.st_ctime_nsec),
            mtime: (st.st_mtime, st.st_mtime_nsec),
            size: st.st_size,
            mode: st.st_mode,
            owner: (st.st_uid, st.st_gid),
        }
    }

    fn is_dir(&self) -> bool {
        self.mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits()
    }
}

/// Every entry of a tree (relative path, no leading slash) with its stamp.
pub struct Snapshot {
    stamps: HashMap<Vec<u8>, Stamp>,
}

/// What changed in a tree since its [`Snapshot`].
#[derive(Debug, Default)]
pub struct Changes {
    /// Entries a layer must hold: the changed ones and every directory above one of them or
    /// above a deletion.
    pub(super) emit: HashSet<Vec<u8>>,
    /// Deleted names by the directory prefix they were in (`""` for the top, else `dir/`).
    pub(super) deleted: BTreeMap<Vec<u8>, BTreeSet<OsString>>,
    /// Directories removed and made again, marked opaque (nothing below shows through).
    pub(super) opaque: HashSet<Vec<u8>>,
}

impl Changes {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.emit.is_empty() && self.deleted.is_empty()
    }
}

impl Snapshot {
    /// Stamps every entry below `dir`.
    pub fn take(dir: &Path) -> Result<Snapshot, LayerError> {
        Ok(Snapshot {
            stamps: stamp_tree(dir)?,
        })
    }

    /// What changed below `dir` since the snapshot; a directory made again is `opaque` when
    /// asked, else the names it lost get whiteouts.
    pub fn changes(&self, dir: &Path, opaque: bool) -> Result<Changes, LayerError> {
        let now = stamp_tree(dir)?;
        let mut out = Changes::default();
        for (rel, stamp) in &now {
            let was = self.stamps.get(rel);
            if was != Some(stamp) {
                out.emit.insert(rel.clone());
            }
            let remade =
                was.is_some_and(|w| w.is_dir() && (w.ino, w.born) != (stamp.ino, stamp.born));
            if opaque && stamp.is_dir() && remade {
                out.opaque.insert(rel.clone());
            }
        }
        for rel in self.stamps.keys() {
            if now.contains_key(rel) {
                continue;
            }
            let (prefix, name) = split_parent(rel);
            // Below a deleted directory, or a directory that became something else, the
            // parent's own whiteout or entry covers it.
            // Nor inside an opaque directory.
            let parent = prefix.strip_suffix(b"/");
            let parent_is_dir = parent.is_none_or(|p| now.get(p).is_some_and(Stamp::is_dir));
            if parent_is_dir && !parent.is_some_and(|p| out.opaque.contains(p)) {
                out.deleted
                    .entry(prefix.to_vec())
                    .or_default()
                    .insert(OsString::from(std::ffi::OsStr::from_bytes(name)));
            }
        }
        let mut parents: Vec<Vec<u8>> = out.emit.iter().cloned().collect();
        parents.extend(
            out.deleted
                .keys()
                .filter(|p| !p.is_empty())
                .map(|p| p[..p.len() - 1].to_vec()),
        );
        for rel in parents {
            let mut p = rel.as_slice();
            loop {
                out.emit.insert(p.to_vec());
                match p.iter().rposition(|&b| b == b'/') {
                    Some(i) => p = &p[..i],
                    None => break,
                }
            }
        }
        Ok(out)
    }
}

/// (`"dir/"`, `"name"`) of `"dir/name"`; (`""`, `"name"`) at the top.
fn split_parent(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..=i], &rel[i + 1..]),
        None => (&rel[..0], rel),
    }
}

pub(super) fn open_root(dir: &Path) -> Result<OwnedFd, LayerError> {
    nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| LayerError::io(dir, e.into()))
}

/// Stamps of every entry below `dir`, walked through fds without following symlinks (the
/// tree is what a build step left: it may hold any link).
fn stamp_tree(dir: &Path) -> Result<HashMap<Vec<u8>, Stamp>, LayerError> {
    let mut out = HashMap::new();
    let root = open_root(dir)?;
    let mut todo = vec![(root, Vec::new())];
    while let Some((fd, prefix)) = todo.pop() {
        let at =
            |e: std::io::Error| LayerError::io(dir.join(std::ffi::OsStr::from_bytes(&prefix)), e);
        for name in sorted_names(&fd).map_err(at)? {
            let mut rel = prefix.clone();
            rel.extend_from_slice(name.as_bytes());
            let st = fstatat(&fd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| at(e.into()))?;
            let mut stamp = Stamp::of(&st);
            if stamp.is_dir() {
                stamp.born = birth_time(&fd, &name);
                let child = open_dir(&fd, &name).map_err(|e| at(e.into()))?;
                let mut p = rel.clone();
                p.push(b'/');
                todo.push((child, p));
            }
            out.insert(rel, stamp);
        }
    }
    Ok(out)
}

/// The birth time of `name` in `dir` (statx), if the file system records one.
fn birth_time(dir: &OwnedFd, name: &std::ffi::OsStr) -> Option<(i64, u32)> {
    use std::os::fd::AsRawFd;
    let c = std::ffi::CString::new(name.as_bytes()).ok()?;
    // SAFETY: statx into a zeroed struct we own, with a NUL-terminated name.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::statx(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BTIME,
            &mut stx,
        )
    };
    (r == 0 && stx.stx_mask & libc::STATX_BTIME != 0)
        .then_some((stx.stx_btime.tv_sec, stx.stx_btime.tv_nsec))
}

/// Streams a tar from `write` (on a thread of its own) into [`extract_layer`] of `target`.
fn tar_into(
    target: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<(), LayerError> + Send,
) -> Result<(), LayerError> {
    let (r, w) = std::io::pipe().map_err(|e| LayerError::io(target, e))?;
    std::thread::scope(|s| {
        let writer = s.spawn(move || {
            let mut out = BufWriter::with_capacity(256 << 10, w);
            write(&mut out)?;
            out.flush().map_err(|e| LayerError::io(target, e))
        });
        let read = extract_layer(r, target, &ExtractOptions::default()).map(|(_, mut rest)| {
            // Drain what follows the end marker, so the writer never blocks on a full pipe.
            let _ = std::io::copy(&mut rest, &mut std::io::sink());
        });
        let wrote = writer.join().expect("tar writer thread");
        // The extractor's error says why when it stopped first (the writer then only sees a
        // closed pipe).
        read.and(wrote)
    })
}

/// Whether overlay's opaque xattr can be set here (as root, or in a user namespace), tried on
/// the empty directory `upper`.
fn opaque_xattr_settable(upper: &Path) -> bool {
    let name = super::overlay_opaque_xattr();
    let set = xattr::set(upper, name, b"y").is_ok();
    let _ = xattr::remove(upper, name);
    set
}

/// Makes the plain tree `target` (an existing empty directory) from the layer directories
/// `lowers` (overlay form, top first): what a container on them would see.
pub fn materialize(lowers: &[&Path], target: &Path) -> Result<(), LayerError> {
    tar_into(target, |out| {
        write_flattened_tar(lowers, out, &TarOptions::default()).map(|_| ())
    })
}

/// Writes what changed below `dir` since `snapshot` into `upper` (an existing empty
/// directory) in overlay form. Returns whether anything changed.
pub fn write_changes_into(
    dir: &Path,
    snapshot: &Snapshot,
    upper: &Path,
) -> Result<bool, LayerError> {
    let changes = snapshot.changes(dir, opaque_xattr_settable(upper))?;
    if changes.is_empty() {
        return Ok(false);
    }
    tar_into(upper, |out| {
        write_changes_tar(dir, &changes, out).map(|_| ())
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let p = t.path();
        fs::create_dir_all(p.join("etc/conf.d")).unwrap();
        fs::create_dir_all(p.join("var/lib/old/deep")).unwrap();
        fs::write(p.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        fs::write(p.join("etc/conf.d/a"), "a").unwrap();
        fs::write(p.join("etc/group"), "root:x:0:\n").unwrap();
        fs::write(p.join("var/lib/old/deep/f"), "f").unwrap();
        fs::create_dir(p.join("keep")).unwrap();
        fs::write(p.join("keep/same"), "same").unwrap();
        t
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in walk(dir) {
            let rel = e.strip_prefix(dir).unwrap().display().to_string();
            let m = fs::symlink_metadata(&e).unwrap();
            let kind = if m.file_type().is_char_device() && m.rdev() == 0 {
                " (whiteout)"
            } else if m.is_dir() {
                "/"
            } else {
                ""
            };
            out.push(format!("{rel}{kind}"));
        }
        out.sort();
        out
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
        out
    }

    #[test]
    fn an_untouched_tree_has_no_changes() {
        let t = tree();
        let snap = Snapshot::take(t.path()).unwrap();
        assert!(snap.changes(t.path(), true).unwrap().is_empty());
        let upper = tempfile::tempdir().unwrap();
        assert!(!write_changes_into(t.path(), &snap, upper.path()).unwrap());
        assert!(names(upper.path()).is_empty());
    }

    #[test]
    fn changes_become_an_overlay_upper_with_parents_and_whiteouts() {
        if !nix::unistd::geteuid().is_root() {
            return; // whiteouts are device nodes
        }
        let t = tree();
        let p = t.path();
        let snap = Snapshot::take(p).unwrap();
        fs::write(p.join("etc/conf.d/a"), "changed").unwrap();
        fs::set_permissions(p.join("etc/group"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::remove_file(p.join("etc/passwd")).unwrap();
        fs::remove_dir_all(p.join("var/lib/old")).unwrap();
        fs::create_dir(p.join("new")).unwrap();
        symlink("../etc", p.join("new/link")).unwrap();
        let upper = tempfile::tempdir().unwrap();
        assert!(write_changes_into(p, &snap, upper.path()).unwrap());
        assert_eq!(
            names(upper.path()),
            [
                "etc/",
                "etc/conf.d/",
                "etc/conf.d/a",
                "etc/group",
                "etc/passwd (whiteout)",
                "new/",
                "new/link",
                "var/",
                "var/lib/",
                "var/lib/old (whiteout)",
            ]
        );
        let u = upper.path();
        assert_eq!(
            fs::read_to_string(u.join("etc/conf.d/a")).unwrap(),
            "changed"
        );
        assert_eq!(
            fs::metadata(u.join("etc/group")).unwrap().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::read_link(u.join("new/link")).unwrap(),
            Path::new("../etc")
        );
    }

    /// A tree, its snapshot, and then `etc` removed and made again with one file.
    fn etc_made_again() -> (tempfile::TempDir, Snapshot) {
        let t = tree();
        let p = t.path();
        let snap = Snapshot::take(p).unwrap();
        fs::remove_dir_all(p.join("etc")).unwrap();
        fs::create_dir(p.join("etc")).unwrap();
        fs::write(p.join("etc/group"), "new\n").unwrap();
        (t, snap)
    }

    #[test]
    fn a_directory_made_again_is_opaque() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let (t, snap) = etc_made_again();
        let p = t.path();
        let upper = tempfile::tempdir().unwrap();
        write_changes_into(p, &snap, upper.path()).unwrap();
        assert_eq!(names(upper.path()), ["etc/", "etc/group"]);
        let opaque = xattr::get(
            upper.path().join("etc"),
            super::super::overlay_opaque_xattr(),
        );
        assert_eq!(opaque.unwrap().as_deref(), Some(&b"y"[..]));
    }

    #[test]
    fn without_opaque_a_directory_made_again_whites_out_the_names_it_lost() {
        let (t, snap) = etc_made_again();
        let p = t.path();
        let ch = snap.changes(p, false).unwrap();
        assert!(ch.opaque.is_empty());
        let gone: Vec<_> = ch.deleted[&b"etc/"[..]].iter().cloned().collect();
        assert_eq!(gone, ["conf.d", "passwd"]);
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let upper = tempfile::tempdir().unwrap();
        tar_into(upper.path(), |out| {
            write_changes_tar(p, &ch, out).map(|_| ())
        })
        .unwrap();
        assert_eq!(
            names(upper.path()),
            [
                "etc/",
                "etc/conf.d (whiteout)",
                "etc/group",
                "etc/passwd (whiteout)"
            ]
        );
    }

    #[test]
    fn materialize_applies_whiteouts_and_upper_layers_win() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let lower = tree();
        let snap = Snapshot::take(lower.path()).unwrap();
        let work = tempfile::tempdir().unwrap();
        materialize(&[lower.path()], work.path()).unwrap();
        assert_eq!(names(work.path()), names(lower.path()));
        let top = tempfile::tempdir().unwrap();
        let w = work.path();
        let before = Snapshot::take(w).unwrap();
        fs::remove_file(w.join("keep/same")).unwrap();
        fs::write(w.join("etc/passwd"), "other\n").unwrap();
        write_changes_into(w, &before, top.path()).unwrap();
        let merged = tempfile::tempdir().unwrap();
        materialize(&[top.path(), lower.path()], merged.path()).unwrap();
        let m = merged.path();
        assert!(!m.join("keep/same").exists());
        assert_eq!(fs::read_to_string(m.join("etc/passwd")).unwrap(), "other\n");
        assert_eq!(fs::read(m.join("etc/conf.d/a")).unwrap(), b"a");
        // The lower tree itself was never touched.
        assert!(snap.changes(lower.path(), true).unwrap().is_empty());
    }
}
