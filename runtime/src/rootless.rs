//! Rootless strata: an ordinary user's commands run inside a user namespace where the user is
//! root, and the image's other owners map to the user's subordinate ids.
//!
//! Main types: [`IdMapping`] (container ids → host ids, from `/etc/subuid` and `/etc/subgid`),
//! [`enter`] (joins, or first makes, the user's namespace).
//!
//! Key design decision: one user namespace (and mount namespace) per user, held by a pause
//! process (`strata` forked, nothing else), as podman does: every rootless command joins it
//! before it touches the store, so all of them (and the containers' monitors they start) see
//! the same ids, and any of them may `exec` into or stop a container another one started. The
//! namespace is made before any mount; its maps are written by the setuid `newuidmap` and
//! `newgidmap` (Debian's `uidmap`) when the user has subordinate ranges, else the kernel's
//! rule lets the user map only itself (uid and gid 0 inside), which is enough for images whose
//! files are all root's.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};

use crate::RuntimeError;

/// One range of a user namespace's map: `size` ids from `inside` map to `outside` onwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub size: u32,
}

/// The uid and gid maps of a user's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMapping {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
}

impl IdMapping {
    /// For user `name` (`uid`, `gid`): 0 is the user, 1… the subordinate ranges in the order
    /// `subuid`/`subgid` list them (entries by name or by number).
    pub fn for_user(name: &str, uid: u32, gid: u32, subuid: &str, subgid: &str) -> IdMapping {
        let ranges = |own: u32, table: &str, id: u32| {
            let mut v = vec![IdRange {
                inside: 0,
                outside: own,
                size: 1,
            }];
            let mut next = 1u32;
            for (start, count) in subordinate(table, name, id) {
                v.push(IdRange {
                    inside: next,
                    outside: start,
                    size: count,
                });
                next = next.saturating_add(count);
            }
            v
        };
        IdMapping {
            uids: ranges(uid, subuid, uid),
            gids: ranges(gid, subgid, gid),
        }
    }

    /// This process's user's mapping, from the system's tables.
    pub fn current() -> IdMapping {
        let uid = Uid::effective();
        let gid = Gid::effective();
        let name = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_default();
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
        IdMapping::for_user(
            &name,
            uid.as_raw(),
            gid.as_raw(),
            &read("/etc/subuid"),
            &read("/etc/subgid"),
        )
    }

    /// Whether ids beyond 0 are mapped (the user has subordinate ranges for both).
    pub fn has_subordinates(&self) -> bool {
        self.uids.len() > 1 && self.gids.len() > 1
    }

    /// `0:1000:1,1:100000:65536` for `info`.
    pub fn describe(ranges: &[IdRange]) -> String {
        ranges
            .iter()
            .map(|r| format!("{}:{}:{}", r.inside, r.outside, r.size))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The `(start, count)` ranges of `/etc/subuid`-format `table` for user `name` or `id`.
fn subordinate(table: &str, name: &str, id: u32) -> Vec<(u32, u32)> {
    table
        .lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (who, start, count) = (f.next()?, f.next()?, f.next()?);
            let mine = (!name.is_empty() && who == name) || who.parse() == Ok(id);
            let (start, count) = (start.parse().ok()?, count.parse().ok()?);
            (mine && count > 0).then_some((start, count))
        })
        .collect()
}

/// Whether this process runs rootless: not root on the host, or inside a user namespace
/// (strata's own, which rootless commands' children inherit).
pub fn is_rootless() -> bool {
    !Uid::effective().is_root() || !in_initial_user_namespace()
}

/// Whether this process is in the host's user namespace (read now: `enter` changes it).
pub fn in_initial_user_namespace() -> bool {
    strata_image::layer::uid_map_is_identity()
}

/// The user's uid on the host, also from inside the namespace (where it is 0): this
/// process's uid through its uid map (the host's identity map gives it back unchanged).
fn host_uid() -> u32 {
    let own = Uid::effective().as_raw();
    fs::read_to_string("/proc/self/uid_map")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                let f: Vec<u32> = l
                    .split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect();
                (f.len() == 3 && f[0] <= own && own - f[0] < f[2]).then(|| f[1] + (own - f[0]))
            })
        })
        .unwrap_or(own)
}

/// Where the user's pause process is recorded: `$XDG_RUNTIME_DIR/strata`, else
/// `/tmp/strata-UID` (made 0700 and checked to be the user's own).
pub(crate) fn runtime_dir() -> Result<PathBuf, RuntimeError> {
    let uid = Uid::effective().as_raw();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("strata"),
        None => PathBuf::from(format!("/tmp/strata-{}", host_uid())),
    };
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let _ = fs::DirBuilder::new().mode(0o700).create(&dir);
    let meta = fs::symlink_metadata(&dir).map_err(|e| RuntimeError::io(&dir, e))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(RuntimeError::Invalid(format!(
            "{}: not a private directory of uid {uid}",
            dir.display()
        )));
    }
    Ok(dir)
}

/// Puts this (single-threaded) process into the user's namespaces: the pause process's if it
/// runs, else a new one's. After it, this process is root in the namespace.
pub fn enter() -> Result<(), RuntimeError> {
    let dir = runtime_dir()?;
    let record = dir.join("pause.pid");
    // Read as the user, before any join could make this process someone else.
    let map = IdMapping::current();
    if let Some(pid) = live_pause(&record) {
        if join(pid).is_ok() {
            return Ok(());
        }
    }
    let pid = start_pause(&map)?;
    let text = format!(
        "{pid} {}\n",
        strata_cache::fsutil::process_start_time(pid).unwrap_or(0)
    );
    strata_cache::fsutil::replace_file(&dir, &record, text.as_bytes())
        .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
    join(pid)
}

/// The pause process recorded in `record`, if it still runs (a zombie does not).
fn live_pause(record: &Path) -> Option<i32> {
    let text = fs::read_to_string(record).ok()?;
    let mut f = text.split_whitespace();
    let pid: i32 = f.next()?.parse().ok()?;
    let start: u64 = f.next()?.parse().ok()?;
    let alive = strata_cache::fsutil::same_process(pid, start)
        && !fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|st| st.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')));
    alive.then_some(pid)
}

/// The pause process, if one runs: the pid to kill (`system reset`).
pub fn pause_pid() -> Option<i32> {
    live_pause(&runtime_dir().ok()?.join("pause.pid"))
}

/// Joins the pause process's namespaces. Joining a mount namespace moves the process to its
/// root: the working directory is taken back by its path (relative paths on the command line
/// still mean what the user meant).
fn join(pid: i32) -> Result<(), RuntimeError> {
    let cwd = std::env::current_dir().ok();
    // Both opened before either is joined: a pause process that just died (a zombie keeps
    // its user namespace, not its mount namespace) must not leave us half inside.
    let mut opened = Vec::new();
    for (ns, flag) in [
        ("user", CloneFlags::CLONE_NEWUSER),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let path = format!("/proc/{pid}/ns/{ns}");
        let f = fs::File::open(&path).map_err(|e| RuntimeError::io(&path, e))?;
        opened.push((f, flag, path));
    }
    for (f, flag, path) in opened {
        nix::sched::setns(f, flag)
            .map_err(|e| RuntimeError::Invalid(format!("join the user namespace ({path}): {e}")))?;
    }
    if let Some(dir) = cwd {
        std::env::set_current_dir(&dir).map_err(|e| RuntimeError::io(&dir, e))?;
    }
    Ok(())
}

/// Forks the pause process: it makes the user namespace, waits for its maps, makes the mount
/// namespace and then only waits. Returns its pid once both namespaces exist.
fn start_pause(map: &IdMapping) -> Result<i32, RuntimeError> {
    let (from_child, to_parent) = crate::fdpass::pipe()?;
    let (from_parent, to_child) = crate::fdpass::pipe()?;
    // SAFETY: the caller is single-threaded.
    let child = match unsafe { strata_cache::fsutil::fork_detached() } {
        Err(e) => return Err(RuntimeError::Invalid(format!("fork: {e}"))),
        Ok(Some(pid)) => pid,
        Ok(None) => {
            drop((from_child, to_child));
            pause_main(fs::File::from(to_parent), fs::File::from(from_parent))
        }
    };
    drop((to_parent, from_parent));
    let (mut from_child, mut to_child) = (fs::File::from(from_child), fs::File::from(to_child));
    let failed = |why: String| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child),
            nix::sys::signal::Signal::SIGKILL,
        );
        RuntimeError::Invalid(why)
    };
    let mut said = [0u8; 1];
    if from_child.read(&mut said).unwrap_or(0) != 1 {
        return Err(failed(
            "cannot create a user namespace (user.max_user_namespaces is 0?)".into(),
        ));
    }
    write_maps(child, map).map_err(|e| failed(e.to_string()))?;
    to_child
        .write_all(b"m")
        .map_err(|e| failed(format!("pause process: {e}")))?;
    if from_child.read(&mut said).unwrap_or(0) != 1 {
        return Err(failed("pause process: no mount namespace".into()));
    }
    Ok(child)
}

/// The child: user namespace, wait for the maps, mount namespace, then nothing until killed.
fn pause_main(mut to_parent: fs::File, mut from_parent: fs::File) -> ! {
    if nix::sched::unshare(CloneFlags::CLONE_NEWUSER).is_err() {
        std::process::exit(1);
    }
    let _ = to_parent.write_all(b"u");
    let mut byte = [0u8; 1];
    if from_parent.read(&mut byte).unwrap_or(0) != 1 {
        std::process::exit(1);
    }
    if nix::sched::unshare(CloneFlags::CLONE_NEWNS).is_err() {
        std::process::exit(1);
    }
    let _ = to_parent.write_all(b"n");
    // SAFETY: stdio onto /dev/null and every other descriptor closed: a pause process must
    // not hold a caller's pipe open (`$(strata …)` would never end).
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        libc::close_range(3, u32::MAX, 0);
    }
    let _ = nix::sys::prctl::set_name(c"strata-pause");
    loop {
        nix::unistd::pause();
    }
}

/// Writes `pid`'s uid and gid maps: through `newuidmap`/`newgidmap` when the user has
/// subordinate ranges, else the single mapping the kernel lets a user write itself.
fn write_maps(pid: i32, map: &IdMapping) -> Result<(), RuntimeError> {
    if map.has_subordinates() {
        for (tool, ranges) in [("newuidmap", &map.uids), ("newgidmap", &map.gids)] {
            let mut cmd = Command::new(tool);
            cmd.arg(pid.to_string());
            for r in ranges {
                cmd.args([r.inside, r.outside, r.size].map(|n| n.to_string()));
            }
            let out = cmd.output().map_err(|e| {
                RuntimeError::Invalid(format!("{tool}: {e} (install the uidmap package)"))
            })?;
            if !out.status.success() {
                return Err(RuntimeError::Invalid(format!(
                    "{tool}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        return Ok(());
    }
    let proc_file = |name: &str, text: String| {
        let p = format!("/proc/{pid}/{name}");
        fs::write(&p, text).map_err(|e| RuntimeError::io(&p, e))
    };
    proc_file("uid_map", format!("0 {} 1\n", map.uids[0].outside))?;
    proc_file("setgroups", "deny\n".into())?;
    proc_file("gid_map", format!("0 {} 1\n", map.gids[0].outside))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_puts_the_user_at_0_and_subordinate_ranges_after_it() {
        let subuid = "other:100000:65536\nalice:165536:65536\n1000:300000:10\n";
        let subgid = "alice:165536:65536\n";
        let m = IdMapping::for_user("alice", 1000, 1000, subuid, subgid);
        assert_eq!(
            IdMapping::describe(&m.uids),
            "0:1000:1,1:165536:65536,65537:300000:10"
        );
        assert_eq!(IdMapping::describe(&m.gids), "0:1000:1,1:165536:65536");
        assert!(m.has_subordinates());
        let none = IdMapping::for_user("bob", 1001, 1001, subuid, subgid);
        assert_eq!(IdMapping::describe(&none.uids), "0:1001:1");
        assert!(!none.has_subordinates());
    }
}
