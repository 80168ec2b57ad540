//! `exec`: a new process in a running container: same namespaces, cgroup, capabilities,
//! seccomp profile and (by default) user. Runs in a single-threaded re-exec of strata.

use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use serde::{Deserialize, Serialize};
use strata_cache::Store;

use crate::cgroup::Cgroup;
use crate::container::{same_process, Containers, Status};
use crate::init;
use crate::launch::InitFailure;
use crate::spec::ProcessSpec;
use crate::RuntimeError;

/// What `strata exec` asks for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecOptions {
    pub container: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub tty: bool,
    pub interactive: bool,
    pub detach: bool,
    pub privileged: bool,
}

/// Runs the exec; returns the process's exit code (or 125/126/127 with a message).
pub fn exec(store: &Store, o: &ExecOptions) -> Result<i32, (i32, String)> {
    let e125 = |e: RuntimeError| (125, e.to_string());
    let containers = Containers::new(store);
    let rec = containers.resolve(&o.container).map_err(e125)?;
    let st = containers.state(&rec.id).map_err(e125)?;
    match st.status {
        Status::Running if same_process(st.pid, st.pid_start) => {}
        Status::Paused => {
            return Err((
                125,
                format!(
                    "container {} is paused, unpause the container before exec",
                    rec.short_id()
                ),
            ))
        }
        _ => return Err((125, format!("container {} is not running", rec.short_id()))),
    }
    let spec = process_spec(store, &rec, o)?;
    // The log is opened here: from inside the container's namespaces the store is not there.
    let mut events = strata_cache::events::EventSink::open(store);
    let exec_id = strata_cache::fsutil::random_hex(32);
    let mut record = |action: &str, extra: &[(&str, String)]| {
        if let Some(sink) = &mut events {
            let mut attrs = vec![("execID", exec_id.clone())];
            attrs.extend(extra.iter().cloned());
            sink.record(&crate::events::event(&rec, action, &attrs));
        }
    };
    // Docker's actions name the command: `exec_create: sh -c …`.
    let command = o.args.join(" ");
    record(&format!("exec_create: {command}"), &[]);
    record(&format!("exec_start: {command}"), &[]);
    join_container(&rec, st.pid, st.pid_start)?;
    let console = if o.tty { Some(open_console()?) } else { None };
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| (125, format!("pipe: {e}")))?;
    let mut set = SigSet::empty();
    for s in crate::monitor::FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set.thread_block()
        .map_err(|e| (125, format!("block signals: {e}")))?;
    // SAFETY: single-threaded helper process; the child execs or exits.
    match unsafe { fork() }.map_err(|e| (125, format!("fork: {e}")))? {
        ForkResult::Child => {
            drop(err_r);
            run_command(o, &spec, console.as_ref(), err_w)
        }
        ForkResult::Parent { child } => {
            drop(err_w);
            let mut msg = String::new();
            let _ = fs::File::from(err_r).read_to_string(&mut msg);
            if let Some(failed) = InitFailure::decode(&msg, 126) {
                let _ = waitpid(child, None);
                return Err((failed.code, failed.message));
            }
            if o.detach {
                return Ok(0);
            }
            let master = console.map(|(m, _)| {
                use std::os::fd::{FromRawFd, IntoRawFd};
                // SAFETY: taking ownership of the pty master's descriptor.
                unsafe { OwnedFd::from_raw_fd(m.into_raw_fd()) }
            });
            let code = wait_relay(child, master, set);
            record("exec_die", &[("exitCode", code.to_string())]);
            Ok(code)
        }
    }
}

/// The process to run: the container's, with `exec`'s command, environment, user and
/// working directory (`--privileged`: every capability, no seccomp).
fn process_spec(
    store: &Store,
    rec: &crate::container::ContainerRecord,
    o: &ExecOptions,
) -> Result<ProcessSpec, (i32, String)> {
    let (_, base) = crate::spec::specs(
        store,
        rec,
        crate::networking::primary_of(store, rec).as_ref(),
    )
    .map_err(|e| (125, e.to_string()))?;
    let mut env = base.env.clone();
    env.extend(o.env.iter().cloned());
    let caps = if o.privileged {
        crate::caps::container_set(true, &[], &[])
    } else {
        base.caps.clone()
    };
    Ok(ProcessSpec {
        args: o.args.clone(),
        env,
        cwd: o.workdir.clone().unwrap_or(base.cwd.clone()),
        user: o.user.clone().unwrap_or(base.user.clone()),
        caps,
        no_new_privs: base.no_new_privs,
        seccomp: base.seccomp && !o.privileged,
        tty: o.tty,
        console_size: None,
        init: false,
        ulimits: base.ulimits.clone(),
        group_add: base.group_add.clone(),
        buildkit_groups: false,
    })
}

/// Joins the container's cgroup, then its namespaces (mount last: it changes our root).
fn join_container(
    rec: &crate::container::ContainerRecord,
    pid: i32,
    pid_start: u64,
) -> Result<(), (i32, String)> {
    Cgroup::of(&rec.id)
        .add_self()
        .map_err(|e| (125, e.to_string()))?;
    // A namespace the container shares with us (`--network host`, `--ipc host`...) is not
    // joined: we are in it, and rootless we could not (the host's belong to its root).
    let ns =
        |name: &str, flag: CloneFlags| -> Result<Option<(OwnedFd, CloneFlags)>, (i32, String)> {
            let p = format!("/proc/{pid}/ns/{name}");
            let f = fs::File::open(&p).map_err(|e| (125, format!("{p}: {e}")))?;
            let ours = fs::metadata(format!("/proc/self/ns/{name}"));
            let same = match (f.metadata(), ours) {
                (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
                _ => false,
            };
            Ok((!same).then(|| (OwnedFd::from(f), flag)))
        };
    let fds: Vec<(OwnedFd, CloneFlags)> = [
        ns("ipc", CloneFlags::CLONE_NEWIPC)?,
        ns("uts", CloneFlags::CLONE_NEWUTS)?,
        ns("net", CloneFlags::CLONE_NEWNET)?,
        ns("pid", CloneFlags::CLONE_NEWPID)?,
        ns("mnt", CloneFlags::CLONE_NEWNS)?,
    ]
    .into_iter()
    .flatten()
    .collect();
    // The pid namespace we opened must still be the container's (the pid was not reused).
    if !same_process(pid, pid_start) {
        return Err((125, format!("container {} is not running", rec.short_id())));
    }
    // SAFETY: until exec, this strata process must not be reachable through /proc/<pid>/exe.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    for (fd, flag) in &fds {
        setns(fd, *flag).map_err(|e| (125, format!("join the container's namespaces: {e}")))?;
    }
    Ok(())
}

/// A pty in the container's devpts (we are in its mount namespace): the master and the
/// slave's name, sized like our terminal before the command runs.
fn open_console() -> Result<(nix::pty::PtyMaster, String), (i32, String)> {
    let master = nix::pty::posix_openpt(nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY)
        .map_err(|e| (125, format!("open /dev/ptmx: {e}")))?;
    nix::pty::grantpt(&master).map_err(|e| (125, format!("grantpt: {e}")))?;
    nix::pty::unlockpt(&master).map_err(|e| (125, format!("unlockpt: {e}")))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| (125, format!("ptsname: {e}")))?;
    crate::monitor::copy_winsize(0, master.as_raw_fd());
    Ok((master, name))
}

/// The child: stdio wired (the pty, /dev/null, or a new session when detached), then the
/// command; a failure goes down the error pipe.
fn run_command(
    o: &ExecOptions,
    spec: &ProcessSpec,
    console: Option<&(nix::pty::PtyMaster, String)>,
    err_w: OwnedFd,
) -> ! {
    // SAFETY: stdio wiring in the child.
    unsafe {
        if !o.interactive && !o.tty {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            libc::dup2(null, 0);
            libc::close(null);
        }
        if o.detach {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            for t in 0..3 {
                libc::dup2(null, t);
            }
            libc::close(null);
            libc::setsid();
        }
    }
    if let Some((master, name)) = console {
        let slave = nix::fcntl::open(
            name.as_str(),
            nix::fcntl::OFlag::O_RDWR,
            nix::sys::stat::Mode::empty(),
        );
        if let Ok(slave) = slave {
            // SAFETY: making the pty our controlling terminal and stdio.
            unsafe {
                libc::setsid();
                libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0);
                for t in 0..3 {
                    libc::dup2(slave.as_raw_fd(), t);
                }
            }
        }
        let _ = master;
    }
    let fd = err_w.as_raw_fd();
    std::mem::forget(err_w);
    let e = match init::exec_process(spec, fd, None) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    init::report(fd, &e);
    std::process::exit(e.code);
}

/// Waits for an exec'd process, relaying signals and (with a tty) the terminal.
fn wait_relay(child: nix::unistd::Pid, console: Option<OwnedFd>, set: SigSet) -> i32 {
    let sfd = match nix::sys::signalfd::SignalFd::new(&set) {
        Ok(s) => s,
        Err(_) => {
            return match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, c)) => c,
                Ok(WaitStatus::Signaled(_, s, _)) => 128 + s as i32,
                _ => 255,
            }
        }
    };
    crate::monitor::relay(child, sfd, console)
}
