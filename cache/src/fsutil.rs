//! Small filesystem helpers: durable atomic writes, directory fsync, random names, flock.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// The name of a new entry of the store's `tmp/`: `PREFIX-PID-RANDOM`. The pid says whose it
/// is, so a sweep never takes what a live command is writing ([`tmp_owner_alive`]), even a
/// command that holds no lease (a tag's `refs.json`, a cache record).
pub fn tmp_name(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), random_hex(8))
}

/// Whether the process that made the `tmp/` entry `name` ([`tmp_name`]) still runs. Names
/// of another form (an older strata's) have no live owner.
pub fn tmp_owner_alive(name: &str) -> bool {
    let mut parts = name.rsplit('-');
    let _random = parts.next();
    let Some(pid) = parts.next().and_then(|p| p.parse::<i32>().ok()) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only asks whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A random hex name for temporary files and IDs.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    random_fill(&mut buf);
    hex::encode(buf)
}

/// Fills `buf` from the kernel's random source with getrandom(2). (The getrandom crate looks
/// the libc function up with dlsym, which a static binary cannot do, and so falls back to
/// polling /dev/random and reading /dev/urandom: five syscalls per call on every container
/// start.)
pub fn random_fill(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe the unfilled part of `buf`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            filled += n as usize;
        } else {
            let e = std::io::Error::last_os_error();
            assert!(
                e.kind() == std::io::ErrorKind::Interrupted,
                "the kernel's random source failed: {e}"
            );
        }
    }
}

/// fsync a directory so a rename inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).at(dir)
}

/// Writes `bytes` to `path` atomically and durably: temp file in `tmp_dir` (same
/// filesystem) → fsync → rename → fsync(parent).
pub fn atomic_write(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_dir.join(tmp_name("w"));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .at(&tmp)?;
        f.write_all(bytes).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        fs::rename(&tmp, path).at(path)?;
        sync_dir(path.parent().unwrap_or(Path::new("/")))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Replaces `path` with `bytes` atomically (readers see the old file or the new one) but not
/// durably: for state that means nothing after a reboot (a running container's network
/// endpoints), where an fsync would only slow every container start.
pub fn replace_file(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_dir.join(tmp_name("w"));
    let result = fs::write(&tmp, bytes)
        .at(&tmp)
        .and_then(|()| fs::rename(&tmp, path).at(path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes a file or a whole tree, ignoring "not found".
pub fn remove_any(path: &Path) -> Result<()> {
    let r = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.at(path),
    }
}

/// Lock mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// A held `flock`; released on drop or when the process dies (never a pid file).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
    pub path: PathBuf,
}

impl FileLock {
    /// Blocks until the lock is held.
    pub fn acquire(path: &Path, mode: LockMode) -> Result<FileLock> {
        Self::lock(path, mode, false).map(|l| l.expect("blocking lock always returns"))
    }

    /// Takes the lock only if it is free now.
    pub fn try_acquire(path: &Path, mode: LockMode) -> Result<Option<FileLock>> {
        Self::lock(path, mode, true)
    }

    fn lock(path: &Path, mode: LockMode, nonblock: bool) -> Result<Option<FileLock>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .at(path)?;
        let mut op = match mode {
            LockMode::Shared => libc::LOCK_SH,
            LockMode::Exclusive => libc::LOCK_EX,
        };
        if nonblock {
            op |= libc::LOCK_NB;
        }
        loop {
            // SAFETY: flock on an fd we own.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
            if rc == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) if nonblock => return Ok(None),
                _ => return Err(err).at(path),
            }
        }
        Ok(Some(FileLock {
            _file: file,
            path: path.to_path_buf(),
        }))
    }
}

/// Current time as RFC 3339 with nanoseconds, UTC (Docker's `created` format).
pub fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

/// Formats a time as RFC 3339 UTC with nanoseconds trimmed of trailing zeros.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let base = t
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]"
        ))
        .expect("a valid time formats");
    let nanos = t.nanosecond();
    if nanos == 0 {
        format!("{base}Z")
    } else {
        let frac = format!("{nanos:09}");
        format!("{base}.{}Z", frac.trim_end_matches('0'))
    }
}

/// Nanoseconds since the epoch → RFC 3339 with all nine fraction digits, as Docker prints
/// event times (`2006-01-02T15:04:05.000000000Z`).
pub fn rfc3339_nanos_fixed(nanos: i128) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let base = t
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]"
        ))
        .expect("a valid time formats");
    format!("{base}.{:09}Z", t.nanosecond())
}

/// Seconds since the epoch → RFC 3339.
pub fn rfc3339_from_unix(secs: i64) -> String {
    rfc3339(
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
    )
}

/// Parses an RFC 3339 time to Unix seconds.
/// An RFC 3339 time in nanoseconds since the epoch.
pub fn parse_rfc3339_nanos(s: &str) -> Option<i128> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp_nanos())
}

pub fn parse_rfc3339(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// Bytes of the regular files under `path` (symlinks not followed; unreadable parts skipped).
pub fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return if meta.is_file() { meta.len() } else { 0 };
    }
    fs::read_dir(path)
        .map(|d| d.flatten().map(|e| tree_size(&e.path())).sum())
        .unwrap_or(0)
}

/// A process's state letter and start time from `/proc/<pid>/stat`, if it exists.
fn process_stat(pid: i32) -> Option<(char, u64)> {
    if pid <= 0 {
        return None;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ');
    let state = fields.next()?.chars().next()?;
    Some((state, fields.nth(18)?.parse().ok()?))
}

/// A process's start time from `/proc/<pid>/stat`, if it exists.
pub fn process_start_time(pid: i32) -> Option<u64> {
    process_stat(pid).map(|(_, start)| start)
}

/// True when `pid` is alive and is the process that started at `start`. A zombie is not alive:
/// a container's init whose monitor was killed is reaped by whoever adopted it, maybe late.
pub fn same_process(pid: i32, start: u64) -> bool {
    process_stat(pid).is_some_and(|(state, s)| !matches!(state, 'Z' | 'X') && s == start)
}

/// Forks a detached child: in a session of its own, every signal unblocked (a monitor blocks
/// them all). `Some(child pid)` in the parent, `None` in the child.
///
/// # Safety
/// The calling process must be single-threaded (the child may allocate).
pub unsafe fn fork_detached() -> nix::Result<Option<i32>> {
    use nix::unistd::{fork, setsid, ForkResult};
    // SAFETY: the caller promises a single-threaded process.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => Ok(Some(child.as_raw())),
        ForkResult::Child => {
            let _ = setsid();
            let _ = nix::sys::signal::SigSet::all().thread_unblock();
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zombie_is_not_the_same_process_any_more() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let start = process_start_time(pid).unwrap();
        // Exited but not reaped: a zombie keeps its /proc entry and its start time.
        while fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(process_start_time(pid), Some(start));
        assert!(!same_process(pid, start));
        child.wait().unwrap();
        assert!(same_process(
            std::process::id() as i32,
            process_start_time(std::process::id() as i32).unwrap()
        ));
    }

    #[test]
    fn atomic_writes_replace_the_file_whole_and_leave_nothing_behind() {
        let t = tempfile::tempdir().unwrap();
        let tmp = t.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let path = t.path().join("refs.json");
        atomic_write(&tmp, &path, b"old").unwrap();
        // A reader holding the old file keeps reading the old file: a new inode took the name.
        let mut held = File::open(&path).unwrap();
        let old_inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
        atomic_write(&tmp, &path, b"new contents").unwrap();
        let mut seen = String::new();
        std::io::Read::read_to_string(&mut held, &mut seen).unwrap();
        assert_eq!(seen, "old");
        assert_ne!(
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap()),
            old_inode
        );
        assert_eq!(fs::read(&path).unwrap(), b"new contents");
        assert_eq!(
            fs::read_dir(&tmp).unwrap().count(),
            0,
            "nothing left in tmp/"
        );
        // Readers polling while it is rewritten never see a partial file.
        let big = |c: u8| vec![c; 1 << 20];
        std::thread::scope(|s| {
            let writer = s.spawn(|| {
                for i in 0..40 {
                    atomic_write(&tmp, &path, &big(b'a' + (i % 2) as u8)).unwrap();
                }
            });
            let mut reads = 0;
            while !writer.is_finished() || reads == 0 {
                let got = fs::read(&path).unwrap();
                if got.len() == 12 {
                    continue; // still the small first version
                }
                assert_eq!(got.len(), 1 << 20, "a partial file was visible");
                assert!(got.iter().all(|&b| b == got[0]), "a mixed file was visible");
                reads += 1;
            }
        });
        assert_eq!(
            fs::read_dir(&tmp).unwrap().count(),
            0,
            "nothing left in tmp/"
        );
    }

    #[test]
    fn rfc3339_forms() {
        assert_eq!(rfc3339_from_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(parse_rfc3339("2024-01-02T03:04:05.5Z"), Some(1704164645));
    }

    #[test]
    fn exclusive_lock_excludes() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("l");
        let _a = FileLock::acquire(&p, LockMode::Shared).unwrap();
        let _b = FileLock::acquire(&p, LockMode::Shared).unwrap();
        assert!(FileLock::try_acquire(&p, LockMode::Exclusive)
            .unwrap()
            .is_none());
    }
}
