//! Lifecycle verbs that act on a container from outside: stop, kill, pause, unpause, remove,
//! wait, top, and the filesystem views diff and export.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use strata_cache::Store;

use crate::cgroup::Cgroup;
use crate::container::{same_process, ContainerRecord, Containers, State, Status};
use crate::RuntimeError;

/// Sends `sig` to the container's init.
pub fn kill(c: &Containers, rec: &ContainerRecord, sig: Signal) -> Result<(), RuntimeError> {
    let st = c.state(&rec.id)?;
    if !st.is_running() || !same_process(st.pid, st.pid_start) {
        return Err(RuntimeError::Conflict(format!(
            "container {} is not running",
            rec.short_id()
        )));
    }
    // Stopped by hand: the restart policy leaves it stopped (Docker's rule for kill too).
    c.update_state(&rec.id, |s| {
        s.manually_stopped = true;
        Ok(())
    })?;
    // Recorded before the signal goes: the monitor records the `die` it causes, and may do
    // so before this process would get to its own line.
    crate::events::record(
        &c.store,
        rec,
        "kill",
        &[("signal", (sig as i32).to_string())],
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(st.pid), sig)
        .map_err(|e| RuntimeError::Invalid(format!("kill {}: {e}", rec.short_id())))?;
    if st.status == Status::Paused {
        // A frozen process only acts on the signal once thawed.
        Cgroup::of(&rec.id).freeze(false)?;
        c.update_state(&rec.id, |s| {
            if s.status == Status::Paused {
                s.status = Status::Running;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Waits until the container is no longer running, up to `timeout`. True if it stopped (a
/// `--rm` container that removed itself has stopped too).
pub fn wait_stopped(
    c: &Containers,
    rec: &ContainerRecord,
    timeout: Option<Duration>,
) -> Result<bool, RuntimeError> {
    match wait_stopped_inner(c, rec, timeout) {
        Err(RuntimeError::NotFound(_)) => Ok(true),
        other => other,
    }
}

fn wait_stopped_inner(
    c: &Containers,
    rec: &ContainerRecord,
    timeout: Option<Duration>,
) -> Result<bool, RuntimeError> {
    let st = c.state(&rec.id)?;
    if !st.is_running() {
        return Ok(true);
    }
    // Wait on the monitor: it records the exit before it exits.
    let deadline = timeout.map(|t| Instant::now() + t);
    if let Some(fd) =
        pidfd(st.monitor_pid).filter(|_| same_process(st.monitor_pid, st.monitor_start))
    {
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let ms: i32 = match left {
                Some(l) if l.is_zero() => return Ok(!c.state(&rec.id)?.is_running()),
                Some(l) => l.as_millis().min(i32::MAX as u128) as i32,
                None => -1,
            };
            let mut pfd = [nix::poll::PollFd::new(
                fd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(
                &mut pfd,
                nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::NONE),
            ) {
                Ok(0) => return Ok(!c.state(&rec.id)?.is_running()),
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
    }
    // The monitor is gone: poll the recorded state (it corrects itself if the monitor died).
    loop {
        if !c.state(&rec.id)?.is_running() {
            return Ok(true);
        }
        if deadline.map(|d| Instant::now() >= d).unwrap_or(false) {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn pidfd(pid: i32) -> Option<OwnedFd> {
    if pid <= 0 {
        return None;
    }
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `stop`: the stop signal, then SIGKILL after `timeout` seconds.
pub fn stop(
    c: &Containers,
    rec: &ContainerRecord,
    timeout: Option<i64>,
) -> Result<(), RuntimeError> {
    // Also when it is not running: a start the restart policy has pending is called off.
    let st = c.update_state(&rec.id, |s| {
        s.manually_stopped = true;
        s.restarting = false;
        Ok(())
    })?;
    if !st.is_running() {
        return Ok(());
    }
    let sig = rec.config.stop_signal.signal();
    let t = timeout.or(rec.config.stop_timeout).unwrap_or(10).max(0) as u64;
    let _ = kill(c, rec, sig);
    if !wait_stopped(c, rec, Some(Duration::from_secs(t)))? {
        let _ = kill(c, rec, Signal::SIGKILL);
        wait_stopped(c, rec, Some(Duration::from_secs(10)))?;
    }
    crate::events::record(&c.store, rec, "stop", &[]);
    Ok(())
}

pub fn pause(c: &Containers, rec: &ContainerRecord) -> Result<(), RuntimeError> {
    let st = c.state(&rec.id)?;
    match st.status {
        Status::Running => {}
        Status::Paused => {
            return Err(RuntimeError::Conflict(format!(
                "container {} is already paused",
                rec.short_id()
            )))
        }
        _ => {
            return Err(RuntimeError::Conflict(format!(
                "container {} is not running",
                rec.short_id()
            )))
        }
    }
    Cgroup::of(&rec.id).freeze(true)?;
    c.update_state(&rec.id, |s| {
        s.status = Status::Paused;
        Ok(())
    })?;
    crate::events::record(&c.store, rec, "pause", &[]);
    Ok(())
}

pub fn unpause(c: &Containers, rec: &ContainerRecord) -> Result<(), RuntimeError> {
    if c.state(&rec.id)?.status != Status::Paused {
        return Err(RuntimeError::Conflict(format!(
            "container {} is not paused",
            rec.short_id()
        )));
    }
    Cgroup::of(&rec.id).freeze(false)?;
    c.update_state(&rec.id, |s| {
        s.status = Status::Running;
        Ok(())
    })?;
    crate::events::record(&c.store, rec, "unpause", &[]);
    Ok(())
}

/// `rm`: refuses a running container unless `force`, which kills it first; with `volumes`
/// (`-v`) its anonymous volumes go too.
pub fn remove(
    c: &Containers,
    rec: &ContainerRecord,
    force: bool,
    volumes: Option<&crate::volume::Volumes<'_>>,
) -> Result<(), RuntimeError> {
    let st = c.state(&rec.id)?;
    if st.is_running() {
        if !force {
            return Err(RuntimeError::Conflict(format!(
                "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
                rec.name
            )));
        }
        let _ = kill(c, rec, Signal::SIGKILL);
        wait_stopped(c, rec, Some(Duration::from_secs(10)))?;
    }
    c.update_state(&rec.id, |s| {
        s.status = Status::Removing;
        Ok(())
    })?;
    Cgroup::of(&rec.id).destroy();
    // A container whose monitor was killed left its endpoints to whoever comes next.
    let _ = strata_network::Networks::new(&c.store).release(&rec.id);
    c.remove_dir(&rec.id)?;
    if let Some(v) = volumes {
        v.remove_anonymous_of(rec);
    }
    crate::events::record(&c.store, rec, "destroy", &[]);
    Ok(())
}

/// `update`: new limits (and restart policy) in the record, and on the running container's
/// cgroup at once.
pub fn update(
    c: &Containers,
    rec: &ContainerRecord,
    new: &crate::cgroup::NewLimits,
    restart: Option<crate::record::RestartPolicy>,
) -> Result<(), RuntimeError> {
    if rec.host_config.auto_remove && restart.as_ref().is_some_and(|r| !r.is_none()) {
        return Err(RuntimeError::Invalid(
            "restart policy cannot be updated because AutoRemove is enabled for the container"
                .into(),
        ));
    }
    let st = c.state(&rec.id)?;
    if st.is_running() {
        Cgroup::of(&rec.id).update(&rec.id, new)?;
    }
    let mut updated = rec.clone();
    let h = &mut updated.host_config;
    h.memory = new.memory.unwrap_or(h.memory);
    h.memory_swap = new.memory_swap.unwrap_or(h.memory_swap);
    h.nano_cpus = new.nano_cpus.unwrap_or(h.nano_cpus);
    h.cpu_shares = new.cpu_shares.unwrap_or(h.cpu_shares);
    h.pids_limit = new.pids.unwrap_or(h.pids_limit);
    if let Some(r) = restart {
        h.restart_policy = r;
    }
    c.save(&updated)
}

/// `wait`: blocks until the container stops; returns its exit code.
pub fn wait(c: &Containers, rec: &ContainerRecord) -> Result<i32, RuntimeError> {
    wait_stopped(c, rec, None)?;
    Ok(c.state(&rec.id)?.exit_code)
}

/// The processes in the pid namespace of process `pid` (this one's namespace excepted: a
/// container sharing it would list everything).
fn in_pid_namespace_of(pid: i32) -> Vec<i32> {
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let Some(target) = ns(&pid.to_string()).filter(|t| Some(t) != ns("self").as_ref()) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| ns(&p.to_string()).as_ref() == Some(&target))
        .collect()
}

/// Processes of a running container: (pid, ppid, uid, command line).
pub fn top(
    c: &Containers,
    rec: &ContainerRecord,
) -> Result<Vec<(i32, i32, u32, String)>, RuntimeError> {
    let st: State = c.state(&rec.id)?;
    if !st.is_running() {
        return Err(RuntimeError::Conflict(format!(
            "container {} is not running",
            rec.short_id()
        )));
    }
    let mut out = Vec::new();
    let mut pids = Cgroup::of(&rec.id).procs();
    if pids.is_empty() && st.pid > 0 {
        // No cgroup (rootless): the processes of the container's pid namespace.
        pids = in_pid_namespace_of(st.pid);
    }
    pids.sort();
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|&c| c == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        out.push((
            pid,
            field("PPid:").unwrap_or(0) as i32,
            field("Uid:").unwrap_or(0),
            cmd,
        ));
    }
    Ok(out)
}

/// The container's layer directories, top (its read-write layer) first.
pub fn layer_dirs(store: &Store, rec: &ContainerRecord) -> Vec<PathBuf> {
    let mut dirs = vec![Containers::new(store).dir(&rec.id).upper()];
    dirs.extend(rec.layers.iter().rev().map(|l| store.layer_diff(l)));
    dirs
}

/// `diff`: changes in the read-write layer: ('A'|'C'|'D', path), sorted by path.
pub fn diff(store: &Store, rec: &ContainerRecord) -> Result<Vec<(char, String)>, RuntimeError> {
    let dirs = layer_dirs(store, rec);
    let changes = strata_image::layer::changes(&dirs[0], &dirs[1..])
        .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
    Ok(changes)
}
