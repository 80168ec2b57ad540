//! The build context: a directory on this machine, read in place (never uploaded). It is walked
//! once with `lstat` (never following a link), filtered by `.dockerignore`, and its files are
//! hashed on demand with a stat cache, so an unchanged context costs only the `lstat`s.
//!
//! Source selection follows BuildKit: a source that is itself a symlink is followed *inside*
//! the context (an absolute target resolves against the context root, so a link to a host path
//! is simply "not found"); links inside a copied directory are copied as links.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::fd::OwnedFd;

use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_image::digest::Hasher;
use strata_image::Digest;
use strata_parser::ignore::Matcher;

use crate::PlanError;

/// What kind of file an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// FIFOs, sockets, devices: never opened.
    Special,
}

/// One entry of the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub mode: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub ino: u64,
    pub ctime: i64,
    pub ctime_nsec: i64,
    pub link: Option<String>,
}

/// The walked context.
#[derive(Debug, Clone)]
pub struct Context {
    pub root: PathBuf,
    /// Relative path ("a/b") → entry, for everything not ignored (and the directories that
    /// lead to re-included files).
    pub entries: BTreeMap<String, Entry>,
}

/// A selected source: the path in the context and the path it lands at, relative to the
/// destination directory ("" when the source itself is the destination).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub src: String,
    pub rel: String,
    pub entry: Entry,
    /// A regular file's content digest, once the planner has computed it (for the cache key).
    pub digest: Option<Digest>,
}

impl Context {
    /// An empty context (a Dockerfile read from stdin with `-`).
    pub fn empty() -> Context {
        Context {
            root: PathBuf::new(),
            entries: BTreeMap::new(),
        }
    }

    /// Walks `root` with the ignore patterns applied.
    pub fn load(root: &Path, ignore: &Matcher) -> Result<Context, PlanError> {
        let meta = fs::metadata(root)
            .map_err(|e| PlanError::Context(format!("{}: {e}", root.display())))?;
        if !meta.is_dir() {
            return Err(PlanError::Context(format!(
                "{}: the build context must be a directory",
                root.display()
            )));
        }
        let mut entries = BTreeMap::new();
        let dir = nix::fcntl::open(
            root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| PlanError::Context(format!("{}: {e}", root.display())))?;
        walk(root, &dir, "", ignore, &mut entries)?;
        Ok(Context {
            root: root.to_path_buf(),
            entries,
        })
    }

    /// Resolves `rel` through symlinks, all inside the context. None if it does not exist.
    pub fn resolve(&self, rel: &str) -> Option<(String, &Entry)> {
        let mut parts: Vec<String> = rel
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .map(str::to_string)
            .collect();
        let mut done: Vec<String> = Vec::new();
        let mut hops = 0;
        while !parts.is_empty() {
            let part = parts.remove(0);
            if part == ".." {
                done.pop();
                continue;
            }
            done.push(part);
            let here = done.join("/");
            let e = self.entries.get(&here)?;
            if e.kind == Kind::Symlink {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                let target = e.link.clone().unwrap_or_default();
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                let mut new_parts: Vec<String> = target
                    .split('/')
                    .filter(|p| !p.is_empty() && *p != ".")
                    .map(str::to_string)
                    .collect();
                new_parts.append(&mut parts);
                parts = new_parts;
            }
        }
        let path = done.join("/");
        if path.is_empty() {
            return None;
        }
        self.entries.get(&path).map(|e| (path, e))
    }

    /// Everything a COPY source selects (BuildKit semantics): a glob is matched against the
    /// context; a plain path is resolved (following a symlink inside the context). A directory
    /// selects its contents.
    pub fn select(&self, source: &str) -> Result<Vec<Selected>, PlanError> {
        let cleaned = clean_source(source)?;
        let mut roots: Vec<(String, Entry)> = Vec::new();
        if cleaned.is_empty() {
            // "." : the whole context.
            let mut out = Vec::new();
            for (p, e) in &self.entries {
                out.push(Selected {
                    src: p.clone(),
                    rel: p.clone(),
                    entry: e.clone(),
                    digest: None,
                });
            }
            return Ok(out);
        }
        if has_glob(&cleaned) {
            for (p, e) in &self.entries {
                if glob_match(&cleaned, p) {
                    roots.push((p.clone(), e.clone()));
                }
            }
            if roots.is_empty() {
                return Err(PlanError::Context(format!(
                    "no source files were specified (no match for {source:?})"
                )));
            }
        } else {
            match self.resolve(&cleaned) {
                Some((p, e)) => roots.push((p, e.clone())),
                None => {
                    return Err(PlanError::Context(format!(
                        "failed to compute cache key: \"/{cleaned}\" not found"
                    )))
                }
            }
        }
        let mut out = Vec::new();
        for (p, e) in roots {
            if e.kind == Kind::Dir {
                let prefix = format!("{p}/");
                for (q, qe) in self.entries.range(prefix.clone()..) {
                    if !q.starts_with(&prefix) {
                        break;
                    }
                    out.push(Selected {
                        src: q.clone(),
                        rel: q[prefix.len()..].to_string(),
                        entry: qe.clone(),
                        digest: None,
                    });
                }
            } else {
                let name = p.rsplit('/').next().unwrap_or(&p).to_string();
                out.push(Selected {
                    src: p,
                    rel: name,
                    entry: e,
                    digest: None,
                });
            }
        }
        Ok(out)
    }

    /// A handle on the context root for confined opens.
    pub fn root_handle(&self) -> Result<pathrs::Root, PlanError> {
        pathrs::Root::open(&self.root)
            .map_err(|e| PlanError::Context(format!("{}: {e}", self.root.display())))
    }

    /// Opens a context file for reading, never through a symlink.
    pub fn open(&self, rel: &str) -> Result<fs::File, PlanError> {
        self.open_in(&self.root_handle()?, rel)
    }

    /// Like [`Context::open`] with a root handle opened once by the caller.
    pub fn open_in(&self, root: &pathrs::Root, rel: &str) -> Result<fs::File, PlanError> {
        // One openat2 (confined to the root, a final symlink refused), no reopen via /proc.
        root.open_subpath(
            rel,
            pathrs::flags::OpenFlags::O_RDONLY | pathrs::flags::OpenFlags::O_NOFOLLOW,
        )
        .map_err(|e| PlanError::Context(format!("{}: {e}", self.root.join(rel).display())))
    }
}

/// One directory level: every entry with whether it is excluded, and an fd for each
/// subdirectory worth descending into. Works through fds (`openat` + `fstatat`), never
/// following a link.
#[allow(clippy::type_complexity)]
fn read_level(
    root: &Path,
    dir: &OwnedFd,
    prefix: &str,
    ignore: &Matcher,
) -> Result<Vec<(String, Entry, bool, Option<OwnedFd>)>, PlanError> {
    let err =
        |rel: &str, e: nix::Error| PlanError::Context(format!("{}: {e}", root.join(rel).display()));
    let mut names: Vec<String> = Vec::new();
    {
        let dup = dir
            .try_clone()
            .map_err(|e| PlanError::Context(format!("{}: {e}", root.join(prefix).display())))?;
        let mut d = nix::dir::Dir::from_fd(dup).map_err(|e| err(prefix, e))?;
        for e in d.iter() {
            let e = e.map_err(|e| err(prefix, e))?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(String::from_utf8_lossy(n).into_owned());
            }
        }
    }
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let st =
            fstatat(dir, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| err(&rel, e))?;
        let kind = match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFDIR => Kind::Dir,
            SFlag::S_IFREG => Kind::File,
            SFlag::S_IFLNK => Kind::Symlink,
            _ => Kind::Special,
        };
        let entry = Entry {
            kind,
            mode: if kind == Kind::Special {
                st.st_mode
            } else {
                st.st_mode & 0o7777
            },
            size: if kind == Kind::File {
                st.st_size as u64
            } else {
                0
            },
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec,
            ino: st.st_ino,
            ctime: st.st_ctime,
            ctime_nsec: st.st_ctime_nsec,
            link: if kind == Kind::Symlink {
                Some(
                    readlinkat(dir, name.as_str())
                        .map_err(|e| err(&rel, e))?
                        .to_string_lossy()
                        .into_owned(),
                )
            } else {
                None
            },
        };
        let excluded = !ignore.is_empty() && ignore.excluded(&rel);
        let fd = if kind == Kind::Dir && (!excluded || ignore.may_reinclude_under(&rel)) {
            Some(
                openat(
                    dir,
                    name.as_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| err(&rel, e))?,
            )
        } else {
            None
        };
        out.push((rel, entry, excluded, fd));
    }
    Ok(out)
}

/// Walks the context in order. An excluded directory is kept only for the files `!` patterns
/// bring back inside it. Returns whether anything was added.
fn walk(
    root: &Path,
    dir: &OwnedFd,
    prefix: &str,
    ignore: &Matcher,
    out: &mut BTreeMap<String, Entry>,
) -> Result<bool, PlanError> {
    let mut any = false;
    for (rel, entry, excluded, fd) in read_level(root, dir, prefix, ignore)? {
        match fd {
            Some(child) if excluded => {
                let mut sub = BTreeMap::new();
                if walk(root, &child, &rel, ignore, &mut sub)? {
                    out.insert(rel, entry);
                    out.append(&mut sub);
                    any = true;
                }
            }
            Some(child) => {
                out.insert(rel.clone(), entry);
                walk(root, &child, &rel, ignore, out)?;
                any = true;
            }
            None if !excluded && entry.kind != Kind::Dir => {
                out.insert(rel, entry);
                any = true;
            }
            None => {}
        }
    }
    Ok(any)
}

/// Normalises a source path: leading `/` and `./` dropped; `..` above the root refused.
pub fn clean_source(s: &str) -> Result<String, PlanError> {
    let mut parts: Vec<&str> = Vec::new();
    for p in s.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(PlanError::Context(format!(
                        "forbidden path outside the build context: {s}"
                    )));
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Go's `filepath.Match` on a whole path: `*` and `?` never match `/`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    fn m(p: &[char], n: &[char]) -> bool {
        if p.is_empty() {
            return n.is_empty();
        }
        match p[0] {
            '*' => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != '/')
                .any(|i| m(&p[1..], &n[i..])),
            '?' => !n.is_empty() && n[0] != '/' && m(&p[1..], &n[1..]),
            '[' => {
                if n.is_empty() || n[0] == '/' {
                    return false;
                }
                let mut i = 1;
                let negate = p.get(1) == Some(&'^');
                if negate {
                    i += 1;
                }
                let mut matched = false;
                let mut first = true;
                while i < p.len() && (p[i] != ']' || first) {
                    first = false;
                    let lo = if p[i] == '\\' && i + 1 < p.len() {
                        i += 1;
                        p[i]
                    } else {
                        p[i]
                    };
                    let mut hi = lo;
                    if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
                        hi = p[i + 2];
                        i += 2;
                    }
                    if lo <= n[0] && n[0] <= hi {
                        matched = true;
                    }
                    i += 1;
                }
                if i >= p.len() {
                    return false;
                }
                matched != negate && m(&p[i + 1..], &n[1..])
            }
            '\\' if p.len() > 1 => !n.is_empty() && n[0] == p[1] && m(&p[2..], &n[1..]),
            c => !n.is_empty() && n[0] == c && m(&p[1..], &n[1..]),
        }
    }
    m(&p, &n)
}

/// (size, mtime, mtime ns, inode, ctime, ctime ns) and the content digest.
pub type Stamped = (u64, i64, i64, u64, i64, i64, Digest);

/// File content digests remembered by (path, size, mtime, inode, ctime), so an unchanged file
/// is never read twice. Versioned; a cache that cannot be read is simply rebuilt.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StatCache {
    pub schema: String,
    pub entries: HashMap<String, Stamped>,
    #[serde(skip)]
    pub dirty: bool,
}

const STAT_CACHE_SCHEMA: &str = "strata.statcache.v2";

impl StatCache {
    /// Where the stat cache of context directory `root` lives, under `dir`.
    pub fn path_for(dir: &Path, root: &Path) -> PathBuf {
        let abs = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        dir.join(format!(
            "statcache-{}.json",
            &Digest::of(abs.as_os_str().as_encoded_bytes()).hex()[..16]
        ))
    }

    pub fn load(path: &Path) -> StatCache {
        fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<StatCache>(&b).ok())
            .filter(|c| c.schema == STAT_CACHE_SCHEMA)
            .unwrap_or_else(|| StatCache {
                schema: STAT_CACHE_SCHEMA.into(),
                ..Default::default()
            })
    }

    /// The content digest of a context file.
    pub fn digest(&mut self, ctx: &Context, rel: &str, e: &Entry) -> Result<Digest, PlanError> {
        // One cache per context directory (see `path_for`), so the relative path is the key.
        let stamp = (e.size, e.mtime, e.mtime_nsec, e.ino, e.ctime, e.ctime_nsec);
        if let Some(c) = self.entries.get(rel) {
            if (c.0, c.1, c.2, c.3, c.4, c.5) == stamp {
                return Ok(c.6.clone());
            }
        }
        let f = ctx.open(rel)?;
        let mut h = Hasher::new();
        h.update_from(&mut std::io::BufReader::with_capacity(256 << 10, f))
            .map_err(|er| PlanError::Context(format!("{}: {er}", ctx.root.join(rel).display())))?;
        let d = h.finish();
        self.entries.insert(
            rel.to_string(),
            (
                stamp.0,
                stamp.1,
                stamp.2,
                stamp.3,
                stamp.4,
                stamp.5,
                d.clone(),
            ),
        );
        self.dirty = true;
        Ok(d)
    }

    /// Writes the cache back (atomically) if it changed.
    pub fn save(&self, path: &Path) {
        if !self.dirty {
            return;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if fs::write(&tmp, serde_json::to_vec(self).unwrap_or_default()).is_ok() {
            let _ = fs::rename(&tmp, path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "d/a.txt"));
        assert!(glob_match("d/*.txt", "d/a.txt"));
        assert!(glob_match("fi?e[0-9]", "file7"));
        assert!(!glob_match("fi?e[^0-9]", "file7"));
    }

    #[test]
    fn selection_follows_links_inside_the_context_only() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("dir/sub")).unwrap();
        fs::write(r.join("dir/sub/f"), "x").unwrap();
        fs::write(r.join("a.txt"), "a").unwrap();
        std::os::unix::fs::symlink("dir", r.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc", r.join("hostlink")).unwrap();
        let ctx = Context::load(r, &Matcher::default()).unwrap();
        let s = ctx.select("link/sub/f").unwrap();
        assert_eq!(s[0].src, "dir/sub/f");
        assert!(ctx.select("hostlink/passwd").is_err());
        let s = ctx.select("dir").unwrap();
        assert_eq!(
            s.iter().map(|x| x.rel.as_str()).collect::<Vec<_>>(),
            vec!["sub", "sub/f"]
        );
        assert_eq!(ctx.select("*.txt").unwrap()[0].rel, "a.txt");
        assert!(ctx.select("../x").is_err());
        let m = Matcher::new(&["dir", "!dir/sub/f"]).unwrap();
        let ctx = Context::load(r, &m).unwrap();
        assert!(ctx.entries.contains_key("dir/sub/f"));
        let m = Matcher::new(&["*.txt"]).unwrap();
        let ctx = Context::load(r, &m).unwrap();
        assert!(!ctx.entries.contains_key("a.txt"));
    }
}
