//! The destination of a COPY: a root (pathrs) in which every parent directory is resolved
//! once and kept open, and every entry is created with `*at` calls on its parent's fd, never
//! through a path that a symlink could redirect.

use super::*;

/// Parent directories already resolved in the destination root, by path.
pub(super) struct Dest {
    pub(super) root: Root,
    pub(super) dirs: HashMap<String, OwnedFd>,
    /// Directories to stamp with their source times once everything is written.
    pub(super) dir_times: Vec<(String, i64)>,
}

pub(super) fn split(path: &str) -> (String, String) {
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
    pub(super) fn dir(&mut self, path: &str) -> Result<OwnedFd, String> {
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
    pub(super) fn ensure_dir(&mut self, path: &str, own: Option<(u32, u32)>) -> Result<(), String> {
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

    pub(super) fn is_dir(&self, path: &str) -> bool {
        self.root
            .resolve(path)
            .ok()
            .and_then(|h| h.reopen(pathrs::flags::OpenFlags::O_RDONLY).ok())
            .and_then(|f| f.metadata().ok())
            .map(|m| m.is_dir())
            .unwrap_or(false)
    }

    /// Removes what is at `dir/name` unless it is a directory and `keep_dir`.
    pub(super) fn clear(
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
    pub(super) fn write(
        &mut self,
        target: &str,
        m: &Meta,
        data: Option<Data<'_>>,
    ) -> Result<(), String> {
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

    pub(super) fn finish(&mut self) -> Result<(), String> {
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
    pub(super) fn prepare_links<'a>(
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
    pub(super) fn copy_up(&mut self, path: &str) -> Result<Option<()>, String> {
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

/// Creates the regular file `name` in `dir` (which must not have it) with `m`'s owner, mode
/// and mtime; `target` names it in errors.
pub(super) fn write_file_at(
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
pub(super) fn owner(dest: &Root, chown: Option<&str>) -> Result<Option<(u32, u32)>, String> {
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
pub(super) fn read_in_root(root: &Root, path: &str) -> String {
    root.resolve(path)
        .ok()
        .and_then(|h| h.reopen(pathrs::flags::OpenFlags::O_RDONLY).ok())
        .and_then(|mut f| {
            let mut s = String::new();
            io::Read::read_to_string(&mut f, &mut s).ok().map(|_| s)
        })
        .unwrap_or_default()
}
