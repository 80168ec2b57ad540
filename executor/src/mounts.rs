//! `RUN --mount`: each mount is prepared on the host before the build container starts (a
//! cache directory under its lock, an overlay of a stage or image, the selected context files,
//! a secret's file) and handed to the runtime as a bind mount or tmpfs. Afterwards the mount
//! points the container had to create are removed from the step's layer, so no trace of a mount
//! (a secret's empty file, a cache target's directory) is committed.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use pathrs::Root;
use strata_cache::buildcache::CacheMount;
use strata_cache::{fsutil, Image, Store};
use strata_parser::instructions::Sharing;
use strata_planner::context::{Context, Kind};
use strata_planner::model::{CopyFrom, RunMount};
use strata_runtime::container::BindMount;

use crate::copy::{copy_image_path_into, materialize_context, mount_image, Mounted};
use strata_runtime::chroot::Isolation;

/// Secrets and SSH agents given to a build (`--secret`, `--ssh`). Values live only in memory
/// and, for the duration of a step, in a 0700 directory of the store's `tmp/`.
#[derive(Debug, Clone, Default)]
pub struct BuildSecrets {
    pub secrets: BTreeMap<String, Vec<u8>>,
    pub ssh: BTreeMap<String, PathBuf>,
}

/// Something to undo once the step's container has exited.
enum Guard {
    Overlay(Mounted),
    Temp(PathBuf),
    Cache(#[allow(dead_code)] CacheMount),
    Agent(AgentProxy),
}

/// An SSH agent socket of the step's own (`type=ssh` with uid/gid/mode): each connection to
/// it is relayed to the real agent, so the host socket's owner and mode never matter and the
/// step gets the ones it asked for. Stops accepting when dropped.
struct AgentProxy {
    path: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl AgentProxy {
    fn start(dir: &Path, agent: &Path, owner: (u32, u32), mode: u32) -> Result<AgentProxy, String> {
        use std::os::unix::net::{UnixListener, UnixStream};
        let path = dir.join("agent.sock");
        let listener = UnixListener::bind(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        set_owner_and_mode(&path, owner, mode & 0o777)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let agent = agent.to_path_buf();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let (Ok(client), Ok(upstream)) = (client, UnixStream::connect(&agent)) else {
                    continue;
                };
                relay(client, upstream);
            }
        });
        Ok(AgentProxy { path, stop })
    }
}

/// Copies both ways between two sockets until either side closes.
fn relay(a: std::os::unix::net::UnixStream, b: std::os::unix::net::UnixStream) {
    let pipe = |mut from: std::os::unix::net::UnixStream,
                mut to: std::os::unix::net::UnixStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    };
    if let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) {
        pipe(a, b2);
        pipe(b, a2);
    }
}

impl Drop for AgentProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = std::os::unix::net::UnixStream::connect(&self.path);
    }
}

/// The prepared mounts of one RUN step.
#[derive(Default)]
pub(crate) struct Prepared {
    pub binds: Vec<BindMount>,
    pub tmpfs: BTreeMap<String, String>,
    /// Environment only this step's process sees (`type=secret,env=`, `SSH_AUTH_SOCK`).
    pub env: Vec<String>,
    /// Mount points in the container (for removing the stubs afterwards).
    pub targets: Vec<String>,
    guards: Vec<Guard>,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        for g in self.guards.drain(..).rev() {
            match g {
                Guard::Overlay(m) => drop(m),
                Guard::Temp(p) => {
                    let _ = fsutil::remove_any(&p);
                }
                Guard::Cache(c) => drop(c),
                Guard::Agent(a) => drop(a),
            }
        }
    }
}

/// Resolves `path` inside the directory `root` (symlinks stay inside it) to a host path.
fn resolve_inside(root: &Path, path: &str) -> Result<PathBuf, String> {
    strata_image::layer::resolve_in_root(root, path).map_err(|e| format!("{path}: {e}"))
}

/// The `uid`/`gid`/`mode` a mount asked for, on what the step gets at its target.
fn set_owner_and_mode(path: &Path, owner: (u32, u32), mode: u32) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(owner.0), Some(owner.1))
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777)))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn temp_private_dir(store: &Store, prefix: &str) -> Result<PathBuf, String> {
    let d = store.temp_dir(prefix).map_err(|e| e.to_string())?;
    fs::set_permissions(&d, fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", d.display()))?;
    Ok(d)
}

/// A private directory for one secret's file: in memory (`/dev/shm`) when the host has it, so
/// the value never reaches a disk; otherwise in the store's `tmp/`.
fn secret_dir(store: &Store) -> Result<PathBuf, String> {
    match tempfile::Builder::new()
        .prefix("strata-secret-")
        .tempdir_in("/dev/shm")
    {
        Ok(d) => Ok(d.keep()),
        Err(_) => temp_private_dir(store, "secret"),
    }
}

/// Prepares `mounts`; `image_of` gives the image of a stage or image `from=`.
pub(crate) fn prepare(
    store: &Store,
    ctx: &Context,
    graph: &strata_planner::model::BuildGraph,
    secrets: &BuildSecrets,
    mounts: &[RunMount],
    image_of: &dyn Fn(&CopyFrom) -> Result<Image, String>,
) -> Result<Prepared, String> {
    let w = Preparing {
        store,
        ctx,
        graph,
        image_of,
    };
    let mut p = Prepared::default();
    for m in mounts {
        match m {
            RunMount::Bind {
                target,
                from,
                source,
                selected,
                readonly,
            } => {
                let host = w.bind_source(&mut p, from, source, selected, *readonly)?;
                p.bind(host, target, *readonly);
            }
            RunMount::Cache {
                target,
                id,
                sharing,
                uid,
                gid,
                mode,
                readonly,
                seed,
            } => {
                let dir = w.cache_dir(&mut p, id, *sharing, (*uid, *gid), *mode, seed.as_ref())?;
                p.bind(dir, target, *readonly);
            }
            RunMount::Tmpfs { target, size } => {
                let opts = size.map(|s| format!("size={s}")).unwrap_or_default();
                p.tmpfs.insert(target.clone(), opts);
                p.targets.push(target.clone());
            }
            RunMount::Secret {
                id,
                target,
                env,
                required,
                uid,
                gid,
                mode,
            } => {
                let Some(value) = secrets.secrets.get(id) else {
                    if *required {
                        return Err(format!(
                            "secret {id}: not provided (strata build --secret id={id},src=FILE)"
                        ));
                    }
                    continue;
                };
                w.secret(
                    &mut p,
                    id,
                    value,
                    target.as_deref(),
                    env.as_deref(),
                    (*uid, *gid),
                    *mode,
                )?;
            }
            RunMount::Ssh {
                id,
                target,
                required,
                uid,
                gid,
                mode,
            } => {
                let Some(sock) = secrets.ssh.get(id) else {
                    if *required {
                        return Err(format!(
                            "ssh {id}: no agent given (strata build --ssh {id}=SOCKET)"
                        ));
                    }
                    continue;
                };
                w.ssh_agent(&mut p, sock, target, (*uid, *gid), *mode)?;
            }
        }
    }
    Ok(p)
}

/// What preparing a step's mounts reads.
struct Preparing<'a> {
    store: &'a Store,
    ctx: &'a Context,
    graph: &'a strata_planner::model::BuildGraph,
    image_of: &'a dyn Fn(&CopyFrom) -> Result<Image, String>,
}

impl Preparing<'_> {
    /// The host path a bind mount binds: the selected part of a context, copied into a
    /// private directory (writes to it are discarded), or a path of a stage's or an image's
    /// mounted tree.
    fn bind_source(
        &self,
        p: &mut Prepared,
        from: &CopyFrom,
        source: &str,
        selected: &[(usize, strata_planner::context::Selected)],
        readonly: bool,
    ) -> Result<PathBuf, String> {
        match from {
            CopyFrom::Context | CopyFrom::Named(_) => {
                let ctx = self.graph.context_for(self.ctx, from);
                let dir = temp_private_dir(self.store, "ctx-mount")?;
                p.guards.push(Guard::Temp(dir.clone()));
                materialize_context(ctx, selected, &dir)?;
                let names_file = strata_planner::context::clean_source(source)
                    .ok()
                    .filter(|c| !c.is_empty())
                    .and_then(|c| ctx.resolve(&c).map(|(_, e)| e.kind != Kind::Dir))
                    .unwrap_or(false);
                Ok(match selected {
                    [(_, one)] if names_file => dir.join(ctx.rel(one)),
                    _ => dir,
                })
            }
            other => {
                let img = (self.image_of)(other)?;
                // RUN --mount is refused under chroot isolation: these are always mounts.
                let mounted = mount_image(self.store, &img, !readonly, Isolation::Oci)?;
                let host = resolve_inside(&mounted.mnt, source)
                    .map_err(|e| format!("--mount source {e}"))?;
                p.guards.push(Guard::Overlay(mounted));
                Ok(host)
            }
        }
    }

    /// A cache mount's directory, held as `sharing` says (a `private` one in use gives this
    /// step a directory of its own), seeded from `from=` when new.
    fn cache_dir(
        &self,
        p: &mut Prepared,
        id: &str,
        sharing: Sharing,
        owner: (u32, u32),
        mode: u32,
        seed: Option<&(CopyFrom, String)>,
    ) -> Result<PathBuf, String> {
        let exclusive = sharing != Sharing::Shared;
        let try_only = sharing == Sharing::Private;
        let (dir, created) = match self
            .store
            .cache_mount(id, owner, mode, exclusive, try_only)
            .map_err(|e| e.to_string())?
        {
            Some(c) => {
                let r = (c.dir.clone(), c.created);
                p.guards.push(Guard::Cache(c));
                r
            }
            None => {
                let d = self
                    .store
                    .temp_dir("cache-mount")
                    .map_err(|e| e.to_string())?;
                set_owner_and_mode(&d, owner, mode)?;
                p.guards.push(Guard::Temp(d.clone()));
                (d, true)
            }
        };
        if let (true, Some((from, path))) = (created, seed) {
            copy_image_path_into(
                self.store,
                &(self.image_of)(from)?,
                path,
                &dir,
                Isolation::Oci,
            )?;
        }
        Ok(dir)
    }

    /// A secret: an environment variable and/or a read-only file in a private directory.
    #[allow(clippy::too_many_arguments)]
    fn secret(
        &self,
        p: &mut Prepared,
        id: &str,
        value: &[u8],
        target: Option<&str>,
        env: Option<&str>,
        owner: (u32, u32),
        mode: u32,
    ) -> Result<(), String> {
        if let Some(var) = env {
            let text = std::str::from_utf8(value)
                .map_err(|_| format!("secret {id}: not UTF-8, cannot be env {var}"))?;
            p.env.push(format!("{var}={text}"));
        }
        if let Some(target) = target {
            let dir = secret_dir(self.store)?;
            p.guards.push(Guard::Temp(dir.clone()));
            let file = dir.join("value");
            fs::write(&file, value).map_err(|e| format!("{}: {e}", file.display()))?;
            set_owner_and_mode(&file, owner, mode)?;
            p.bind(file, target, true);
        }
        Ok(())
    }

    /// An SSH agent: a proxy socket for the step, and `SSH_AUTH_SOCK` naming it.
    fn ssh_agent(
        &self,
        p: &mut Prepared,
        sock: &Path,
        target: &str,
        owner: (u32, u32),
        mode: u32,
    ) -> Result<(), String> {
        if !p.env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
            p.env.push(format!("SSH_AUTH_SOCK={target}"));
        }
        let dir = temp_private_dir(self.store, "ssh")?;
        let proxy = AgentProxy::start(&dir, sock, owner, mode)?;
        let path = proxy.path.clone();
        // The proxy goes first: the directory is removed after it stops.
        p.guards.push(Guard::Temp(dir));
        p.guards.push(Guard::Agent(proxy));
        p.bind(path, target, false);
        Ok(())
    }
}

impl Prepared {
    fn bind(&mut self, source: PathBuf, target: &str, readonly: bool) {
        self.binds.push(BindMount {
            source,
            target: target.to_string(),
            readonly,
        });
        self.targets.push(target.to_string());
    }
}

/// Removes from the step's layer `upper` the mount points the container created: a target
/// (or a parent made for it) that no layer of `image` has, left empty. All paths are resolved
/// inside `upper`, which the step's process could have filled with symlinks.
pub(crate) fn remove_mount_stubs(store: &Store, image: &Image, upper: &Path, targets: &[String]) {
    let Ok(root) = Root::open(upper) else {
        return;
    };
    // The path as the image's topmost layer that has it has it.
    let in_image = |path: &str| {
        image.record.layers.iter().rev().find_map(|l| {
            fs::symlink_metadata(store.layer_diff(l).join(path.trim_start_matches('/'))).ok()
        })
    };
    for t in targets {
        let mut path = t.trim_end_matches('/').to_string();
        while !path.is_empty() && path != "/" {
            let lower = in_image(&path);
            let existed = lower.is_some();
            let removed = match root.resolve_nofollow(&path) {
                Ok(h) => {
                    // fstat on the O_PATH handle: nothing is opened (a fifo would block).
                    let fd = std::os::fd::OwnedFd::from(h);
                    let st = nix::sys::stat::fstat(&fd).ok();
                    let kind = st.map(|st| st.st_mode & libc::S_IFMT);
                    let is_empty_file =
                        kind == Some(libc::S_IFREG) && st.is_some_and(|st| st.st_size == 0);
                    if is_empty_file && !existed {
                        root.remove_file(&path).is_ok()
                    } else if kind == Some(libc::S_IFDIR)
                        && lower.as_ref().is_none_or(|m| {
                            use std::os::unix::fs::MetadataExt;
                            let st = st.expect("kind came from it");
                            m.mode() == st.st_mode
                                && m.uid() == st.st_uid
                                && m.gid() == st.st_gid
                                && !is_opaque(&fd)
                        })
                    {
                        // A new empty directory, or one the image has that overlayfs copied
                        // up only to hold the stub: without it the image's shows through.
                        root.remove_dir(&path).is_ok()
                    } else {
                        false
                    }
                }
                Err(_) => false,
            };
            if !removed {
                break;
            }
            path = match path.rfind('/') {
                Some(0) | None => String::new(),
                Some(i) => path[..i].to_string(),
            };
        }
    }
}

/// Whether an upper directory hides the lower ones (`trusted.overlay.opaque=y`, rootless
/// `user.`).
fn is_opaque(fd: &std::os::fd::OwnedFd) -> bool {
    let path = format!("/proc/self/fd/{}\0", fd.as_raw_fd());
    let name = format!("{}\0", strata_image::layer::overlay_opaque_xattr());
    let mut buf = [0u8; 4];
    // SAFETY: both names are NUL-terminated and `buf` is as long as the length passed.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr().cast(),
            name.as_ptr().cast(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n > 0 && buf[0] == b'y'
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn agent_proxy_relays_both_ways_with_its_own_mode() {
        let dir = tempfile::tempdir().unwrap();
        let agent_path = dir.path().join("real.sock");
        let agent = std::os::unix::net::UnixListener::bind(&agent_path).unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = agent.accept().unwrap();
            let mut q = [0u8; 4];
            c.read_exact(&mut q).unwrap();
            c.write_all(if &q == b"ping" { b"pong" } else { b"what" })
                .unwrap();
        });
        let proxy_dir = dir.path().join("p");
        fs::create_dir(&proxy_dir).unwrap();
        let proxy = AgentProxy::start(&proxy_dir, &agent_path, (65534, 65534), 0o600).unwrap();
        let meta = fs::metadata(&proxy.path).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o777),
            (65534, 65534, 0o600)
        );
        let mut c = std::os::unix::net::UnixStream::connect(&proxy.path).unwrap();
        c.write_all(b"ping").unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "pong");
    }
}
