//! The build context: a directory on this machine, read in place (never uploaded). It is walked
//! once with `lstat` (never following a link), filtered by `.dockerignore`, and its files are
//! hashed on demand with a stat cache, so an unchanged context costs only the `lstat`s.
//!
//! Source selection follows BuildKit: a source that is itself a symlink is followed *inside*
//! the context (an absolute target resolves against the context root, so a link to a host path
//! is simply "not found"); links inside a copied directory are copied as links.

use std::collections::HashMap;
use std::fs;
use std::os::fd::OwnedFd;

use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
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
    /// Relative path ("a/b") and entry, sorted by path, for everything not ignored (and the
    /// directories that lead to re-included files). Selections name entries by their place
    /// here: a plan of a 160,000-file context holds each path once.
    entries: Vec<(Box<str>, Entry)>,
}

/// A selected source: an entry of the [`Context`] it was selected from ([`Context::src`],
/// [`Context::entry`]) and the path it lands at, relative to the destination directory
/// ([`Context::rel`]), which is always a suffix of its path in the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    at: u32,
    rel_at: u32,
    /// A regular file's content digest, once the planner has computed it (for the cache key).
    pub digest: Option<Digest>,
}

impl Selected {
    fn new(at: usize, path: &str, rel: &str) -> Selected {
        debug_assert!(path.ends_with(rel));
        Selected {
            at: at as u32,
            rel_at: (path.len() - rel.len()) as u32,
            digest: None,
        }
    }
}

impl Context {
    /// An empty context (a Dockerfile read from stdin with `-`).
    pub fn empty() -> Context {
        Context {
            root: PathBuf::new(),
            entries: Vec::new(),
        }
    }

    /// The place of `path` in the entries.
    fn find(&self, path: &str) -> Option<usize> {
        self.entries.binary_search_by(|(p, _)| (**p).cmp(path)).ok()
    }

    fn get(&self, path: &str) -> Option<&Entry> {
        self.find(path).map(|i| &self.entries[i].1)
    }

    /// Whether the context holds `path` (not ignored).
    pub fn contains(&self, path: &str) -> bool {
        self.find(path).is_some()
    }

    /// A selection's path in the context.
    pub fn src<'a>(&'a self, s: &Selected) -> &'a str {
        &self.entries[s.at as usize].0
    }

    /// Where a selection lands, relative to the destination directory.
    pub fn rel<'a>(&'a self, s: &Selected) -> &'a str {
        &self.src(s)[s.rel_at as usize..]
    }

    /// Lands a selection at `rel` instead (`--parents`); `rel` must be a suffix of its path.
    pub fn set_rel(&self, s: &mut Selected, rel: &str) {
        *s = Selected {
            digest: s.digest.take(),
            ..Selected::new(s.at as usize, self.src(s), rel)
        };
    }

    /// A selection's entry.
    pub fn entry<'a>(&'a self, s: &Selected) -> &'a Entry {
        &self.entries[s.at as usize].1
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
        let mut entries = Vec::new();
        let dir = nix::fcntl::open(
            root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| PlanError::Context(format!("{}: {e}", root.display())))?;
        walk(root, &dir, "", ignore, &mut entries)?;
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if entries.len() > u32::MAX as usize {
            return Err(PlanError::Context(format!(
                "{}: too many files in the build context",
                root.display()
            )));
        }
        Ok(Context {
            root: root.to_path_buf(),
            entries,
        })
    }

    /// Resolves `rel` through symlinks, all inside the context. None if it does not exist.
    pub fn resolve(&self, rel: &str) -> Option<(String, &Entry)> {
        self.resolve_at(rel)
            .map(|i| (self.entries[i].0.to_string(), &self.entries[i].1))
    }

    /// [`Context::resolve`], as a place in the entries.
    fn resolve_at(&self, rel: &str) -> Option<usize> {
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
            let e = self.get(&here)?;
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
        self.find(&path)
    }

    /// Everything a COPY source selects (BuildKit semantics): a glob is matched against the
    /// context; a plain path is resolved (following a symlink inside the context). A directory
    /// selects its contents.
    pub fn select(&self, source: &str) -> Result<Vec<Selected>, PlanError> {
        let cleaned = clean_source(source)?;
        if cleaned.is_empty() {
            // "." : the whole context.
            return Ok(self
                .entries
                .iter()
                .enumerate()
                .map(|(i, (p, _))| Selected::new(i, p, p))
                .collect());
        }
        let mut roots: Vec<usize> = Vec::new();
        if has_glob(&cleaned) {
            roots.extend(
                (0..self.entries.len()).filter(|&i| glob_match(&cleaned, &self.entries[i].0)),
            );
            if roots.is_empty() {
                return Err(PlanError::Context(format!(
                    "no source files were specified (no match for {source:?})"
                )));
            }
        } else {
            match self.resolve_at(&cleaned) {
                Some(i) => roots.push(i),
                None => {
                    return Err(PlanError::Context(format!(
                        "failed to compute cache key: \"/{cleaned}\" not found"
                    )))
                }
            }
        }
        let mut out = Vec::new();
        for r in roots {
            let (p, e) = &self.entries[r];
            if e.kind == Kind::Dir {
                // A directory selects its contents: the entries after it that start with it.
                let prefix = format!("{p}/");
                let first = self.entries.partition_point(|(q, _)| **q < *prefix);
                for (i, (q, _)) in self.entries.iter().enumerate().skip(first) {
                    if !q.starts_with(&prefix) {
                        break;
                    }
                    out.push(Selected::new(i, q, &q[prefix.len()..]));
                }
            } else {
                let name = p.rsplit('/').next().unwrap_or(p);
                out.push(Selected::new(r, p, name));
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
    out: &mut Vec<(Box<str>, Entry)>,
) -> Result<bool, PlanError> {
    let mut any = false;
    for (rel, entry, excluded, fd) in read_level(root, dir, prefix, ignore)? {
        match fd {
            Some(child) if excluded => {
                let mut sub = Vec::new();
                if walk(root, &child, &rel, ignore, &mut sub)? {
                    out.push((rel.into(), entry));
                    out.append(&mut sub);
                    any = true;
                }
            }
            Some(child) => {
                out.push((rel.as_str().into(), entry));
                walk(root, &child, &rel, ignore, out)?;
                any = true;
            }
            None if !excluded && entry.kind != Kind::Dir => {
                out.push((rel.into(), entry));
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

/// What a file's digest was computed for: (size, mtime, mtime ns, inode, ctime, ctime ns).
pub type Stamp = (u64, i64, i64, u64, i64, i64);

/// File content digests remembered by (path, size, mtime, inode, ctime), so an unchanged file
/// is never read twice. Versioned; a cache that cannot be read is simply rebuilt.
///
/// On disk: a first line naming the schema, then one JSON array per file (`[path, size, ...,
/// digest]`) sorted by path, read and written a line at a time. In memory the entries read
/// stay a sorted list (searched by path, sized exactly: a hash map's table cost 2.5 times as
/// much for a 160,000-file context) and the digests are kept as bytes; files hashed by this
/// build go to a small map until the cache is saved.
#[derive(Debug, Default)]
pub struct StatCache {
    loaded: Vec<(Box<str>, Stamp, [u8; 32])>,
    added: HashMap<Box<str>, (Stamp, [u8; 32])>,
    pub dirty: bool,
}

const STAT_CACHE_SCHEMA: &str = "strata.statcache.v3";

impl StatCache {
    /// Where the stat cache of context directory `root` lives, under `dir`.
    pub fn path_for(dir: &Path, root: &Path) -> PathBuf {
        let abs = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        dir.join(format!(
            "statcache-{}.jsonl",
            &Digest::of(abs.as_os_str().as_encoded_bytes()).hex()[..16]
        ))
    }

    /// The cache at `path`; empty when it is missing, of another schema, or damaged.
    pub fn load(path: &Path) -> StatCache {
        Self::read(path).unwrap_or_default()
    }

    fn read(path: &Path) -> Option<StatCache> {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(fs::File::open(path).ok()?).lines();
        let head: serde_json::Value = serde_json::from_str(&lines.next()?.ok()?).ok()?;
        if head.get("schema")?.as_str()? != STAT_CACHE_SCHEMA {
            return None;
        }
        let mut loaded = Vec::new();
        for line in lines {
            let (p, size, mt, mtn, ino, ct, ctn, d): (
                String,
                u64,
                i64,
                i64,
                u64,
                i64,
                i64,
                Digest,
            ) = serde_json::from_str(&line.ok()?).ok()?;
            loaded.push((
                p.into_boxed_str(),
                (size, mt, mtn, ino, ct, ctn),
                d.to_bytes(),
            ));
        }
        // Written sorted; sorted again in case an older writer or a hand did otherwise.
        if !loaded.is_sorted_by(|a, b| a.0 <= b.0) {
            loaded.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        loaded.shrink_to_fit();
        Some(StatCache {
            loaded,
            added: HashMap::new(),
            dirty: false,
        })
    }

    fn get(&self, rel: &str) -> Option<(&Stamp, &[u8; 32])> {
        if let Some((s, d)) = self.added.get(rel) {
            return Some((s, d));
        }
        let i = self
            .loaded
            .binary_search_by(|(p, _, _)| (**p).cmp(rel))
            .ok()?;
        let (_, s, d) = &self.loaded[i];
        Some((s, d))
    }

    /// The digest the cache holds for a context file, if its `lstat` is what the cache saw.
    pub fn cached(&self, rel: &str, e: &Entry) -> Option<Digest> {
        // One cache per context directory (see `path_for`), so the relative path is the key.
        match self.get(rel) {
            Some((s, d)) if *s == stamp_of(e) => Some(Digest::from_bytes(d)),
            _ => None,
        }
    }

    /// Reads and hashes context files the cache does not know, in parallel on the CPU pool
    /// (`strata_image::pool`), and remembers their digests.
    pub fn hash(
        &mut self,
        ctx: &Context,
        files: &[(&str, &Entry)],
    ) -> Result<Vec<Digest>, PlanError> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let root = ctx.root_handle()?;
        let hash = |f: &(&str, &Entry)| hash_file(ctx, &root, f.0);
        // A few changed files are not worth waking the pool's threads for.
        let hashed: Vec<Digest> = if files.len() < 8 {
            files.iter().map(hash).collect::<Result<_, _>>()?
        } else {
            strata_image::pool::cpu()
                .install(|| files.par_iter().map(hash).collect::<Result<_, _>>())?
        };
        for ((rel, e), d) in files.iter().zip(&hashed) {
            self.added
                .insert((*rel).into(), (stamp_of(e), d.to_bytes()));
        }
        self.dirty = true;
        Ok(hashed)
    }

    /// Writes the cache back (atomically, sorted by path) if it changed.
    pub fn save(&self, path: &Path) {
        use std::io::Write;
        if !self.dirty {
            return;
        }
        let mut added: Vec<_> = self.added.iter().collect();
        added.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let kept = self
            .loaded
            .iter()
            .filter(|(p, _, _)| !self.added.contains_key(p))
            .map(|(p, s, d)| (p, s, d));
        let mut rows: Vec<(&Box<str>, &Stamp, &[u8; 32])> = kept
            .chain(added.into_iter().map(|(p, (s, d))| (p, s, d)))
            .collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = fs::File::create(&tmp).and_then(|f| {
            let mut w = std::io::BufWriter::new(f);
            serde_json::to_writer(&mut w, &serde_json::json!({ "schema": STAT_CACHE_SCHEMA }))?;
            w.write_all(b"\n")?;
            for (p, (size, mt, mtn, ino, ct, ctn), d) in rows {
                let d = Digest::from_bytes(d);
                serde_json::to_writer(&mut w, &(p, size, mt, mtn, ino, ct, ctn, d))?;
                w.write_all(b"\n")?;
            }
            w.flush()
        });
        if written.is_err() || fs::rename(&tmp, path).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }
}

/// What the stat cache compares: size, mtime, inode and ctime.
fn stamp_of(e: &Entry) -> Stamp {
    (e.size, e.mtime, e.mtime_nsec, e.ino, e.ctime, e.ctime_nsec)
}

/// Reads and hashes one context file, through the context's root handle.
fn hash_file(ctx: &Context, root: &pathrs::Root, rel: &str) -> Result<Digest, PlanError> {
    let f = ctx.open_in(root, rel)?;
    let mut h = Hasher::new();
    h.update_from(&mut std::io::BufReader::with_capacity(256 << 10, f))
        .map_err(|er| PlanError::Context(format!("{}: {er}", ctx.root.join(rel).display())))?;
    Ok(h.finish())
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
        assert_eq!(ctx.src(&s[0]), "dir/sub/f");
        assert!(ctx.select("hostlink/passwd").is_err());
        let s = ctx.select("dir").unwrap();
        assert_eq!(
            s.iter().map(|x| ctx.rel(x)).collect::<Vec<_>>(),
            vec!["sub", "sub/f"]
        );
        assert_eq!(ctx.rel(&ctx.select("*.txt").unwrap()[0]), "a.txt");
        assert!(ctx.select("../x").is_err());
        let m = Matcher::new(&["dir", "!dir/sub/f"]).unwrap();
        let ctx = Context::load(r, &m).unwrap();
        assert!(ctx.contains("dir/sub/f"));
        let m = Matcher::new(&["*.txt"]).unwrap();
        let ctx = Context::load(r, &m).unwrap();
        assert!(!ctx.contains("a.txt"));
    }
}
