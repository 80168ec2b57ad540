//! The containers of a store (`containers/<id>/`): [`Containers`] creates, finds, locks,
//! renames and removes them, reads their state against the processes' reality, and keeps the
//! name index; [`ContainerDir`] is one container's directory layout. What a record and a
//! state hold is in [`crate::record`] (re-exported here).

use std::fs;
use std::io;
use std::path::PathBuf;

use serde::Serialize;
use strata_cache::fsutil::{self, FileLock, LockMode};
use strata_cache::Store;

pub use crate::options::BindMount;
pub use crate::record::*;
use crate::RuntimeError;

pub use strata_cache::fsutil::{process_start_time, same_process};

/// Directory layout of one container.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    pub path: PathBuf,
}

impl ContainerDir {
    pub fn config(&self) -> PathBuf {
        self.path.join("config.json")
    }
    pub fn state(&self) -> PathBuf {
        self.path.join("state.json")
    }
    pub fn upper(&self) -> PathBuf {
        self.path.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.path.join("work")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.path.join("rootfs")
    }
    pub fn log(&self) -> PathBuf {
        self.path.join("container.log")
    }
}

/// The containers of a store.
#[derive(Debug, Clone)]
pub struct Containers {
    pub store: Store,
}

/// Docker's name rule.
pub fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphanumeric())
        && n.len() >= 2
        && n.len() <= 128
        && c.all(|x| x.is_ascii_alphanumeric() || matches!(x, '_' | '.' | '-'))
}

const ADJECTIVES: [&str; 24] = [
    "admiring",
    "brave",
    "clever",
    "dazzling",
    "eager",
    "festive",
    "gallant",
    "happy",
    "jolly",
    "keen",
    "lucid",
    "modest",
    "nifty",
    "optimistic",
    "pensive",
    "quirky",
    "relaxed",
    "serene",
    "tender",
    "upbeat",
    "vibrant",
    "wizardly",
    "youthful",
    "zealous",
];
const NAMES: [&str; 24] = [
    "babbage",
    "curie",
    "dijkstra",
    "euler",
    "feynman",
    "gauss",
    "hopper",
    "hypatia",
    "jepsen",
    "knuth",
    "lamport",
    "lovelace",
    "mccarthy",
    "noether",
    "pascal",
    "ritchie",
    "shannon",
    "thompson",
    "turing",
    "volhard",
    "wozniak",
    "yalow",
    "zuse",
    "kowalevski",
];

impl Containers {
    pub fn new(store: &Store) -> Containers {
        Containers {
            store: store.clone(),
        }
    }

    pub fn dir(&self, id: &str) -> ContainerDir {
        ContainerDir {
            path: self.store.containers_dir().join(id),
        }
    }

    /// Every container record (unreadable ones are skipped with a warning).
    pub fn list(&self) -> Result<Vec<ContainerRecord>, RuntimeError> {
        let mut out = Vec::new();
        for id in self.ids()? {
            match self.load(&id) {
                Ok(r) => out.push(r),
                Err(err) => tracing::debug!("skipping container {id}: {err}"),
            }
        }
        Ok(out)
    }

    pub fn load(&self, id: &str) -> Result<ContainerRecord, RuntimeError> {
        let p = self.dir(id).config();
        let bytes = fs::read(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => RuntimeError::NotFound(format!("no such container: {id}")),
            _ => RuntimeError::io(&p, e),
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| RuntimeError::Invalid(format!("{}: {e}", p.display())))
    }

    /// Finds a container by full ID, unique ID prefix, or name.
    pub fn resolve(&self, key: &str) -> Result<ContainerRecord, RuntimeError> {
        let key = key.strip_prefix('/').unwrap_or(key);
        if key.is_empty() {
            return Err(RuntimeError::NotFound("no such container: \"\"".into()));
        }
        if let Some(r) = self.by_name(key) {
            return Ok(r);
        }
        // IDs are directory names: matched without reading any record.
        let ids = self.ids()?;
        let matches: Vec<&String> = ids.iter().filter(|id| id.starts_with(key)).collect();
        if let Some(exact) = matches.iter().find(|id| id.as_str() == key) {
            return self.load(exact);
        }
        match matches.len() {
            1 => return self.load(matches[0]),
            0 => {}
            _ => {
                return Err(RuntimeError::Invalid(format!(
                    "multiple containers match {key:?}; use more of the ID"
                )))
            }
        }
        // A name the index does not know (it is rebuilt on the next create).
        self.list()?
            .into_iter()
            .find(|r| r.name == key)
            .ok_or_else(|| RuntimeError::NotFound(format!("no such container: {key}")))
    }

    /// The IDs of all containers (directory names; no record is read).
    fn ids(&self) -> Result<Vec<String>, RuntimeError> {
        let root = self.store.containers_dir();
        let mut out = Vec::new();
        for e in fs::read_dir(&root).map_err(|e| RuntimeError::io(&root, e))? {
            let e = e.map_err(|e| RuntimeError::io(&root, e))?;
            let id = e.file_name().to_string_lossy().into_owned();
            if !id.starts_with('.') {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Creates the record and directories. Fails if the name is taken.
    pub fn create(&self, mut rec: ContainerRecord) -> Result<ContainerRecord, RuntimeError> {
        let _lock = self.store.meta_lock("containers")?;
        self.ensure_name_index()?;
        if rec.name.is_empty() {
            rec.name = loop {
                let mut b = [0u8; 2];
                strata_cache::fsutil::random_fill(&mut b);
                let n = format!(
                    "{}_{}",
                    ADJECTIVES[b[0] as usize % 24],
                    NAMES[b[1] as usize % 24]
                );
                if self.by_name(&n).is_none() {
                    break n;
                }
            };
        } else if !valid_name(&rec.name) {
            return Err(RuntimeError::Invalid(format!(
                "invalid container name ({:?}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                rec.name
            )));
        } else if let Some(other) = self.by_name(&rec.name) {
            return Err(RuntimeError::Conflict(format!(
                "the container name \"/{}\" is already in use by container {}",
                rec.name, other.id
            )));
        }
        let dir = self.dir(&rec.id);
        // Built in tmp/ and renamed, so a half-created container is never listed.
        let staging = self.store.temp_dir("container")?;
        let build = || -> Result<(), RuntimeError> {
            for d in ["upper", "work", "rootfs"] {
                let p = staging.join(d);
                fs::create_dir(&p).map_err(|e| RuntimeError::io(&p, e))?;
            }
            // The staging directory is private: plain writes, no temp files needed.
            for (name, bytes) in [
                (
                    "state.json",
                    serde_json::to_vec_pretty(&State::new()).expect("serializes"),
                ),
                (
                    "config.json",
                    serde_json::to_vec_pretty(&rec).expect("serializes"),
                ),
            ] {
                let p = staging.join(name);
                fs::write(&p, bytes).map_err(|e| RuntimeError::io(&p, e))?;
            }
            fs::rename(&staging, &dir.path).map_err(|e| RuntimeError::io(&dir.path, e))
        };
        if let Err(e) = build() {
            let _ = fsutil::remove_any(&staging);
            return Err(e);
        }
        if let Err(e) = self.index_name(&rec.name, &rec.id) {
            let _ = self.remove_dir(&rec.id);
            return Err(e);
        }
        Ok(rec)
    }

    /// The name index: `containers/.names/<name>` holds the ID of the container of that name,
    /// so a new container's name is checked without reading every record. An entry is
    /// trusted only when that container exists and still has the name; anything else is
    /// stale and overwritten.
    fn names_dir(&self) -> PathBuf {
        self.store.containers_dir().join(".names")
    }

    /// The container named `name`, through the index.
    fn by_name(&self, name: &str) -> Option<ContainerRecord> {
        if !valid_name(name) {
            return None;
        }
        let id = fs::read_to_string(self.names_dir().join(name)).ok()?;
        let rec = self.load(id.trim()).ok()?;
        (rec.name == name).then_some(rec)
    }

    /// Records `name` → `id` (under the containers lock).
    fn index_name(&self, name: &str, id: &str) -> Result<(), RuntimeError> {
        let p = self.names_dir().join(name);
        fs::write(&p, id).map_err(|e| RuntimeError::io(&p, e))
    }

    /// Forgets `name` if it still points at `id`.
    fn unindex_name(&self, name: &str, id: &str) {
        let p = self.names_dir().join(name);
        if fs::read_to_string(&p).is_ok_and(|v| v.trim() == id) {
            let _ = fs::remove_file(&p);
        }
    }

    /// Makes the index from the records, for a store that does not have one yet (under the
    /// containers lock; the index appears whole, by rename).
    fn ensure_name_index(&self) -> Result<(), RuntimeError> {
        let dir = self.names_dir();
        if dir.is_dir() {
            return Ok(());
        }
        let staging = self.store.temp_dir("names")?;
        for rec in self.list()? {
            let p = staging.join(&rec.name);
            fs::write(&p, &rec.id).map_err(|e| RuntimeError::io(&p, e))?;
        }
        fs::rename(&staging, &dir).map_err(|e| RuntimeError::io(&dir, e))
    }

    /// Replaces the record (rename).
    pub fn save(&self, rec: &ContainerRecord) -> Result<(), RuntimeError> {
        let dir = self.dir(&rec.id);
        let _l = self.lock(&rec.id)?;
        write_json(&dir.config(), rec)
    }

    /// Renames a container, refusing names in use.
    pub fn rename(&self, key: &str, new_name: &str) -> Result<(), RuntimeError> {
        let _lock = self.store.meta_lock("containers")?;
        if !valid_name(new_name) {
            return Err(RuntimeError::Invalid(format!(
                "invalid container name ({new_name:?})"
            )));
        }
        let mut rec = self.resolve(key)?;
        self.ensure_name_index()?;
        if let Some(other) = self.by_name(new_name).filter(|r| r.id != rec.id) {
            return Err(RuntimeError::Conflict(format!(
                "the container name \"/{new_name}\" is already in use by container {}",
                other.id
            )));
        }
        let old = std::mem::replace(&mut rec.name, new_name.to_string());
        self.save(&rec)?;
        self.index_name(new_name, &rec.id)?;
        self.unindex_name(&old, &rec.id);
        Ok(())
    }

    /// The container's lock (the state file, held exclusively).
    pub fn lock(&self, id: &str) -> Result<FileLock, RuntimeError> {
        Ok(FileLock::acquire(
            &self.dir(id).state(),
            LockMode::Exclusive,
        )?)
    }

    /// Reads the state and corrects it if its processes died without recording it (a killed
    /// monitor, a reboot), so it is never a lie.
    pub fn state(&self, id: &str) -> Result<State, RuntimeError> {
        let st = self.read_state(id)?;
        if st.is_running()
            && !same_process(st.pid, st.pid_start)
            && !same_process(st.monitor_pid, st.monitor_start)
        {
            return self.update_state(id, |s| {
                if s.is_running()
                    && !same_process(s.pid, s.pid_start)
                    && !same_process(s.monitor_pid, s.monitor_start)
                {
                    s.status = Status::Exited;
                    if s.exit_code == 0 {
                        s.exit_code = 255;
                    }
                    s.error = "the container's monitor died".into();
                    s.finished_at = fsutil::now_rfc3339();
                    s.pid = 0;
                }
                Ok(())
            });
        }
        Ok(st)
    }

    fn open_state(&self, id: &str) -> Result<fs::File, RuntimeError> {
        let p = self.dir(id).state();
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => {
                    RuntimeError::NotFound(format!("no such container: {id}"))
                }
                _ => RuntimeError::io(&p, e),
            })
    }

    fn read_state(&self, id: &str) -> Result<State, RuntimeError> {
        let mut f = self.open_state(id)?;
        flock(&f, libc::LOCK_SH).map_err(|e| RuntimeError::io(self.dir(id).state(), e))?;
        parse_state(&mut f, &self.dir(id).state())
    }

    /// Read-modify-write of the state under an exclusive lock on the state file itself. The
    /// file is rewritten in place (readers take a shared lock), so no inode is created per
    /// update: a container start updates its state three times.
    pub fn update_state(
        &self,
        id: &str,
        f: impl FnOnce(&mut State) -> Result<(), RuntimeError>,
    ) -> Result<State, RuntimeError> {
        let p = self.dir(id).state();
        let mut file = self.open_state(id)?;
        flock(&file, libc::LOCK_EX).map_err(|e| RuntimeError::io(&p, e))?;
        let mut st = parse_state(&mut file, &p)?;
        f(&mut st)?;
        let bytes = serde_json::to_vec_pretty(&st).expect("serializes");
        use std::os::unix::fs::FileExt;
        file.write_all_at(&bytes, 0)
            .map_err(|e| RuntimeError::io(&p, e))?;
        file.set_len(bytes.len() as u64)
            .map_err(|e| RuntimeError::io(&p, e))?;
        Ok(st)
    }

    /// Removes a container's directory (it must not be running).
    pub fn remove_dir(&self, id: &str) -> Result<(), RuntimeError> {
        match self.load(id) {
            Ok(rec) => self.remove(&rec),
            Err(_) => self.remove_files(id),
        }
    }

    /// Deletes the container `rec` (its name, then its directory).
    fn remove(&self, rec: &ContainerRecord) -> Result<(), RuntimeError> {
        self.unindex_name(&rec.name, &rec.id);
        self.remove_files(&rec.id)
    }

    fn remove_files(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.dir(id);
        // A fuse-overlayfs root a killed monitor left mounted (rootless).
        crate::overlay::unmount_all(&dir.rootfs());
        // Out of sight first, then deleted: a half-removed container is never listed.
        let dead = self.store.temp_path("dead-container");
        fs::rename(&dir.path, &dead).map_err(|e| RuntimeError::io(&dir.path, e))?;
        remove_known_entries(&dead);
        if fs::remove_dir(&dead).is_err() {
            // Whatever else there is (files the container wrote, volumes, logs).
            fsutil::remove_any(&dead)?;
        }
        Ok(())
    }
}

/// Removes what every container directory holds by name, with one call each instead of the
/// open/read/stat of a tree walk (this is on `run --rm`'s path). Anything unexpected stays
/// for the caller's full removal.
fn remove_known_entries(dir: &std::path::Path) {
    let Ok(d) = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) else {
        return;
    };
    use nix::unistd::{unlinkat, UnlinkatFlags::NoRemoveDir, UnlinkatFlags::RemoveDir};
    for f in [
        "config.json",
        "state.json",
        "hosts",
        "hostname",
        "resolv.conf",
    ] {
        let _ = unlinkat(&d, f, NoRemoveDir);
    }
    // The overlay's work dir (a `volatile` mount leaves work/incompat/volatile/dirty), the
    // mount point and an upper dir the container did not write to.
    let _ = unlinkat(&d, "work/work/incompat/volatile/dirty", NoRemoveDir);
    for sub in [
        "work/work/incompat/volatile",
        "work/work/incompat",
        "work/work",
        "work/incompat/volatile",
        "work/incompat",
        "work",
        "rootfs",
        "upper",
    ] {
        let _ = unlinkat(&d, sub, RemoveDir);
    }
}

/// Atomic JSON write without fsync: container records are rebuilt from the processes'
/// reality (`Containers::state`) after a crash, so durability is not needed, and start-up
/// latency is.
pub fn write_json<T: Serialize>(path: &std::path::Path, v: &T) -> Result<(), RuntimeError> {
    let tmp = path.with_extension(format!("tmp-{}", fsutil::random_hex(4)));
    fs::write(&tmp, serde_json::to_vec_pretty(v).expect("serializes"))
        .map_err(|e| RuntimeError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| RuntimeError::io(path, e))
}

fn flock(f: &fs::File, op: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

fn parse_state(f: &mut fs::File, p: &std::path::Path) -> Result<State, RuntimeError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)
        .map_err(|e| RuntimeError::io(p, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| RuntimeError::Invalid(format!("{}: {e}", p.display())))
}

/// A new random container ID.
pub fn new_id() -> String {
    fsutil::random_hex(32)
}
