//! `cp`: files and directories between a container's filesystem and the host.
//!
//! Main types: [`ContainerFs`], a container's filesystem opened for copying (a running
//! container's through `/proc/<pid>/root`, a stopped one's overlay mounted in a private mount
//! namespace of this process), and [`Tree`], either side of a copy as a root plus a path.
//!
//! Key decision: every copy is a tar stream from the layer writer, which walks with
//! `openat(O_NOFOLLOW)` from directory fds, into the layer extractor, which creates every
//! entry inside an opened root (pathrs): paths in the container resolve inside its root on
//! both sides, and a running container that swaps a symlink in cannot lead the copy out of it
//! (CVE-2018-15664). Nothing from the container is ever run (CVE-2019-14271).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{readlinkat, AtFlags};
use nix::sys::stat::{fstatat, SFlag};
use pathrs::Root;
use strata_cache::Store;
use strata_image::layer::{self, ExtractOptions};

use crate::container::{same_process, ContainerRecord, Containers};
use crate::RuntimeError;

/// How many symlinks `-L` follows before giving up (as the kernel's limit).
const MAX_LINKS: usize = 40;

/// A container's filesystem, open for copying.
pub struct ContainerFs {
    root: Root,
    /// The container as messages name it.
    name: String,
    readonly_rootfs: bool,
    /// A stopped container's fuse-overlayfs root, unmounted when done (its daemon would keep
    /// this process's mount namespace for ever).
    fuse: Option<crate::spec::RootSpec>,
}

impl Drop for ContainerFs {
    fn drop(&mut self) {
        if let Some(spec) = &self.fuse {
            let _ = spec.unmount_fuse();
        }
    }
}

impl ContainerFs {
    /// Opens `rec`'s filesystem as its processes see it. A stopped container's overlay (and
    /// its bind mounts and volumes) is mounted in a new mount namespace of this process, so
    /// call this while the process is single-threaded; the mounts end with it.
    pub fn open(store: &Store, rec: &ContainerRecord) -> Result<ContainerFs, RuntimeError> {
        let name = rec.name.clone();
        let readonly_rootfs = rec.host_config.readonly_rootfs;
        let st = Containers::new(store).state(&rec.id)?;
        if st.is_running() && same_process(st.pid, st.pid_start) {
            // The kernel's link to the container's root (in its mount namespace); pathrs
            // refuses to follow such magic links itself, so it is opened here.
            let path = format!("/proc/{}/root", st.pid);
            let fd = nix::fcntl::open(
                path.as_str(),
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| RuntimeError::io(&path, e.into()))?;
            let root = Root::from_fd(fd);
            // The pid may have been reused between the state check and the open.
            if !same_process(st.pid, st.pid_start) {
                return Err(RuntimeError::Conflict(format!(
                    "container {} stopped while being opened; retry",
                    rec.short_id()
                )));
            }
            return Ok(ContainerFs {
                root,
                name,
                readonly_rootfs,
                fuse: None,
            });
        }
        let (spec, _) = crate::spec::specs(
            store,
            rec,
            crate::networking::primary_of(store, rec).as_ref(),
        )?;
        crate::init::mount_for_copy(&spec).map_err(|e| RuntimeError::Invalid(e.message))?;
        let root = Root::open(&spec.mountpoint).map_err(|e| pathrs_error(&spec.mountpoint, e))?;
        Ok(ContainerFs {
            root,
            name,
            readonly_rootfs,
            fuse: spec.fuse.then_some(spec),
        })
    }

    /// `path` in this container, for either side of a copy.
    pub fn tree<'a>(&'a self, path: &'a str) -> Tree<'a> {
        Tree {
            root: &self.root,
            path,
            shown: format!("{}:{}", self.name, path),
            container: Some(self),
        }
    }
}

/// One side of a copy: a path resolved inside a root.
pub struct Tree<'a> {
    root: &'a Root,
    path: &'a str,
    /// How messages name it (`NAME:PATH` or the host path).
    shown: String,
    container: Option<&'a ContainerFs>,
}

/// The host's filesystem, the other side of a copy (the user's own paths, resolved as usual).
pub struct HostFs(Root);

impl HostFs {
    pub fn open() -> Result<HostFs, RuntimeError> {
        Root::open("/")
            .map(HostFs)
            .map_err(|e| pathrs_error("/", e))
    }

    /// The absolute host path `path`, named `shown` (as the user wrote it) in messages.
    pub fn tree<'a>(&'a self, path: &'a str, shown: &str) -> Tree<'a> {
        Tree {
            root: &self.0,
            path,
            shown: shown.to_string(),
            container: None,
        }
    }
}

/// Options of a copy.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// `-a`: keep the source's owners (else what is created belongs to whoever copies: root).
    pub archive: bool,
    /// `-L`: when the source is a symlink, copy what it points to.
    pub follow_link: bool,
}

/// What a copy's source is.
struct Source {
    /// The directory holding it (an `O_PATH` fd) and its name there.
    parent: OwnedFd,
    name: OsString,
    is_dir: bool,
    /// `DIR/.`: the directory's contents, not the directory.
    contents_only: bool,
    /// The name it is copied as into an existing directory.
    base: OsString,
}

/// Copies `src` to `dest` with Docker's rules: a file onto a new or existing file name or into
/// an existing directory; a directory into an existing directory (its contents only for
/// `SRC/.`) or as a new directory; never a directory onto a file.
pub fn copy(src: &Tree<'_>, dest: &Tree<'_>, opts: &CopyOptions) -> Result<(), RuntimeError> {
    refuse_readonly(dest)?;
    let source = resolve_source(src, opts)?;
    let (into, as_name) = resolve_destination(dest, &source)?;
    let target = Root::from_fd(into);
    let shown = PathBuf::from(&dest.shown);
    let x = extract_options(opts);
    let src_shown = src.shown.as_str();
    std::thread::scope(|scope| {
        let (reader, writer) = std::io::pipe().map_err(|e| RuntimeError::io(&shown, e))?;
        let producer = scope.spawn(move || write_source(source, as_name, writer, src_shown));
        let extracted = layer::extract_into_root(reader, target, &shown, &x).map(drop);
        let written = producer
            .join()
            .unwrap_or_else(|_| Err(layer::LayerError::Stream(std::io::Error::other("panicked"))));
        match (written, extracted) {
            (Ok(_), Ok(())) => Ok(()),
            // The extractor stopped reading: the writer's broken pipe says nothing more.
            (Err(w), Err(_)) if !is_broken_pipe(&w) => Err(layer_error(src_shown, w)),
            (_, Err(x)) => Err(layer_error(&dest.shown, x)),
            (Err(w), Ok(())) => Err(layer_error(src_shown, w)),
        }
    })
}

fn is_broken_pipe(e: &layer::LayerError) -> bool {
    matches!(e, layer::LayerError::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
}

/// `cp SRC -`: writes `src` as a tar stream named after its last component.
pub fn copy_to_stream<W: Write>(
    src: &Tree<'_>,
    out: W,
    opts: &CopyOptions,
) -> Result<W, RuntimeError> {
    let source = resolve_source(src, opts)?;
    let name = source.base.clone();
    write_source(source, Some(name), out, &src.shown).map_err(|e| layer_error(&src.shown, e))
}

/// `cp - DEST`: extracts a tar stream (plain or compressed: gzip, bzip2, xz, zstd, as Docker
/// takes it) into the existing directory `dest`.
pub fn copy_from_stream<R: Read + Send>(
    input: R,
    dest: &Tree<'_>,
    opts: &CopyOptions,
) -> Result<(), RuntimeError> {
    refuse_readonly(dest)?;
    let dir = dest
        .root
        .resolve(dest.path)
        .map_err(|_| not_found(&dest.shown, "no such directory"))?;
    let dir = OwnedFd::from(dir);
    if !is_dir(&dir)? {
        return Err(RuntimeError::Invalid(format!(
            "{}: destination must be a directory",
            dest.shown
        )));
    }
    let shown = PathBuf::from(&dest.shown);
    let (_, input) = strata_image::compress::decompress_archive(input)
        .map_err(|e| RuntimeError::Invalid(format!("{}: {e}", dest.shown)))?;
    layer::extract_into_root(input, Root::from_fd(dir), &shown, &extract_options(opts))
        .map(drop)
        .map_err(|e| layer_error(&dest.shown, e))
}

fn refuse_readonly(dest: &Tree<'_>) -> Result<(), RuntimeError> {
    match dest.container {
        Some(c) if c.readonly_rootfs => Err(RuntimeError::Invalid(format!(
            "{}: container rootfs is marked read-only",
            dest.shown
        ))),
        _ => Ok(()),
    }
}

fn extract_options(opts: &CopyOptions) -> ExtractOptions {
    ExtractOptions {
        preserve_owners: opts.archive,
        whiteouts: false,
        no_overwrite_dir_non_dir: true,
        ..ExtractOptions::default()
    }
}

/// Writes the source as a tar stream: as `as_name` (and everything below it), or, without a
/// name, only what the directory holds.
fn write_source<W: Write>(
    source: Source,
    as_name: Option<OsString>,
    out: W,
    shown: &str,
) -> Result<W, layer::LayerError> {
    match as_name {
        Some(name) => layer::write_entry_tar(
            source.parent,
            &source.name,
            name.as_bytes(),
            out,
            Path::new(shown),
        ),
        None => {
            // Opened from its resolved parent without following a link, as the writer opens
            // every directory below it.
            let dir = nix::fcntl::openat(
                &source.parent,
                source.name.as_os_str(),
                nix::fcntl::OFlag::O_RDONLY
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_NOFOLLOW
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| layer::LayerError::Io {
                path: shown.into(),
                source: e.into(),
            })?;
            layer::write_contents_tar(dir, out, Path::new(shown))
        }
    }
}

/// Resolves the source: its parent inside the root (symlinks there resolve inside it), then the
/// last component itself, followed only with `-L`.
fn resolve_source(src: &Tree<'_>, opts: &CopyOptions) -> Result<Source, RuntimeError> {
    let contents_only = src.path.ends_with("/.") || src.path == ".";
    let wants_dir = src.path.ends_with('/') || contents_only;
    let mut path = clean(src.path);
    for _ in 0..MAX_LINKS {
        let (parent_path, name) = split_last(&path);
        let parent = src
            .root
            .resolve(&parent_path)
            .map(OwnedFd::from)
            .map_err(|_| not_found(&src.shown, "no such file or directory"))?;
        let st = fstatat(&parent, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|_| not_found(&src.shown, "no such file or directory"))?;
        let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        if kind == SFlag::S_IFLNK && (opts.follow_link || wants_dir) {
            let target = readlinkat(&parent, name.as_os_str())
                .map_err(|e| RuntimeError::io(&src.shown, e.into()))?;
            path = clean(&parent_path.join(target).to_string_lossy());
            continue;
        }
        let is_dir = kind == SFlag::S_IFDIR;
        if wants_dir && !is_dir {
            return Err(RuntimeError::Invalid(format!(
                "{}: not a directory",
                src.shown
            )));
        }
        let base = if name == "." {
            OsString::from("rootfs")
        } else {
            name.clone()
        };
        return Ok(Source {
            parent,
            name,
            is_dir,
            contents_only,
            base,
        });
    }
    Err(RuntimeError::Invalid(format!(
        "{}: too many levels of symbolic links",
        src.shown
    )))
}

/// Where the copy lands: the directory to extract into and the name the source takes there
/// (`None`: the source directory's contents go straight in).
fn resolve_destination(
    dest: &Tree<'_>,
    source: &Source,
) -> Result<(OwnedFd, Option<OsString>), RuntimeError> {
    let wants_dir = dest.path.ends_with('/') || dest.path.ends_with("/.");
    let path = clean(dest.path);
    match dest.root.resolve(&path) {
        Ok(h) => {
            let fd = OwnedFd::from(h);
            if is_dir(&fd)? {
                let name = (!source.contents_only).then(|| source.base.clone());
                return Ok((fd, name));
            }
            if source.is_dir {
                return Err(RuntimeError::Invalid(format!(
                    "{}: cannot copy a directory to a file",
                    dest.shown
                )));
            }
            if wants_dir {
                return Err(RuntimeError::Invalid(format!(
                    "{}: not a directory",
                    dest.shown
                )));
            }
        }
        Err(_) if wants_dir && !source.is_dir => {
            return Err(not_found(
                &dest.shown,
                "no such directory (a file is only copied into one that exists)",
            ));
        }
        Err(_) => {}
    }
    let (parent_path, name) = split_last(&path);
    let parent = dest
        .root
        .resolve(&parent_path)
        .map(OwnedFd::from)
        .map_err(|_| not_found(&dest.shown, "no such directory"))?;
    if !is_dir(&parent)? || name == "." {
        return Err(not_found(&dest.shown, "no such directory"));
    }
    Ok((parent, Some(name)))
}

/// Whether the open file (an `O_PATH` handle will do) is a directory.
fn is_dir(fd: &OwnedFd) -> Result<bool, RuntimeError> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| RuntimeError::io("fstat", e.into()))?;
    Ok(st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits())
}

/// `path` as an absolute path inside its root, `.` and `..` folded lexically (pathrs
/// resolves in the root anyway; this only splits off the last component reliably).
fn clean(path: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// The parent and the last name of a cleaned path; the root is its own parent, named `.`.
fn split_last(path: &Path) -> (PathBuf, OsString) {
    match (path.parent(), path.file_name()) {
        (Some(p), Some(n)) => (p.to_path_buf(), n.to_os_string()),
        _ => (PathBuf::from("/"), OsString::from(".")),
    }
}

fn not_found(shown: &str, what: &str) -> RuntimeError {
    RuntimeError::NotFound(format!("{shown}: {what}"))
}

fn pathrs_error(path: impl AsRef<Path>, e: pathrs::error::Error) -> RuntimeError {
    RuntimeError::io(path.as_ref(), std::io::Error::other(e.to_string()))
}

fn layer_error(shown: &str, e: layer::LayerError) -> RuntimeError {
    RuntimeError::Invalid(format!("cp {shown}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_inside_their_root() {
        assert_eq!(clean("a/../../b/./c/"), PathBuf::from("/b/c"));
        assert_eq!(
            split_last(&clean("/etc/hosts")),
            (PathBuf::from("/etc"), OsString::from("hosts"))
        );
        assert_eq!(
            split_last(&clean("/")),
            (PathBuf::from("/"), OsString::from("."))
        );
        assert_eq!(
            split_last(&clean("../..")),
            (PathBuf::from("/"), OsString::from("."))
        );
    }
}
