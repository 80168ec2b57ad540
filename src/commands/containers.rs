//! Container commands: create, run, start, stop, kill, pause, unpause, rm, ps, exec, logs,
//! wait, inspect, rename, top, commit, export, diff, and the hidden monitor/exec helpers.

use std::ffi::OsStr;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use strata_cache::{fsutil, Store};
use strata_image::reference::Reference;
use strata_image::spec::{self, History, ImageConfig};
use strata_image::Digest;
use strata_runtime::container::{ContainerRecord, Containers, Status};
use strata_runtime::launch::{self, IdMessage, MonitorLaunch};
use strata_runtime::{fdpass, handoff, ops, rootexe, volume};

use crate::changes;
use crate::cli::{
    CommitArgs, CpArgs, CreateArgs, ExecArgs, ExportArgs, KillArgs, RmArgs, RunArgs, StartArgs,
    StopArgs,
};

/// An error that carries the process exit code (125/126/127 as Docker uses them).
#[derive(Debug)]
pub struct ExitError(pub i32, pub String);

impl std::fmt::Display for ExitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for ExitError {}

fn exit125(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!(ExitError(125, e.to_string()))
}

/// Builds and stores a container record from an image and the create flags.
pub fn create_record(
    store: &Store,
    a: &CreateArgs,
    image: Option<&Digest>,
) -> Result<ContainerRecord> {
    let Some(path) = &a.cidfile else {
        return new_record(store, a, image);
    };
    // Docker's rule: an existing file may belong to a container still running.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => anyhow!(
                "container ID file found, make sure the other container isn't running or delete {}",
                path.display()
            ),
            _ => anyhow!("--cidfile {}: {e}", path.display()),
        })?;
    match new_record(store, a, image) {
        Ok(rec) => {
            file.write_all(rec.id.as_bytes())
                .with_context(|| format!("write {}", path.display()))?;
            Ok(rec)
        }
        Err(e) => {
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}

/// The record itself; `image` is the image's ID when the caller has resolved it already.
fn new_record(store: &Store, a: &CreateArgs, image: Option<&Digest>) -> Result<ContainerRecord> {
    let opts = crate::commands::create_flags::create_options(a)?;
    let _lease = store.lease()?;
    let named = match image {
        Some(id) => id.clone(),
        None => store
            .resolve_image(a.image())
            .map_err(|e| anyhow!("unable to find image '{}' locally: {e}", a.image()))?,
    };
    let id = match &a.platform {
        None => {
            warn_if_foreign(store, &named)?;
            named
        }
        // A multi-platform tag's member for it, or an image that is for it, which this host
        // must be able to run.
        Some(wanted) => {
            let id = super::images::resolve_for_platform(store, a.image(), Some(wanted))?;
            let want = super::images::platform_flag(wanted)?;
            strata_runtime::emulation::check_runnable(&want)
                .map_err(|e| anyhow!("--platform {want}: {e}"))?;
            id
        }
    };
    Ok(strata_runtime::create::new_record(store, &id, &opts)?)
}

/// Docker's warning for an image of another platform run without `--platform` (it runs,
/// through emulation where the host has it).
fn warn_if_foreign(store: &Store, id: &Digest) -> Result<()> {
    let config = store.image(id)?.config;
    let image = strata_image::spec::Platform::of_config(&config);
    let host = strata_image::spec::Platform::host();
    if !config.architecture.is_empty() && !host.is_met_by(&image) {
        eprintln!(
            "WARNING: The requested image's platform ({image}) does not match the detected \
             host platform ({host}) and no specific platform was requested"
        );
    }
    Ok(())
}

pub fn create(store: &Store, root: &Path, insecure: &[String], a: &CreateArgs) -> Result<()> {
    crate::cli::check_flag_words(a.image()).map_err(exit125)?;
    let image = ensure_image(store, root, insecure, a)?;
    let rec = create_record(store, a, image.as_ref()).map_err(exit125)?;
    println!("{}", rec.id);
    Ok(())
}

/// Replaces this process with the container's monitor (foreground).
fn become_monitor(root: &Path, id: &str) -> anyhow::Error {
    match rootexe::protected_exe() {
        Ok(exe) => exec_monitor(&exe, root, id),
        Err(e) => exit125(e),
    }
}

/// Execs the foreground monitor of container `id`. Returns only on failure.
fn exec_monitor(exe: &Path, root: &Path, id: &str) -> anyhow::Error {
    let launch = MonitorLaunch {
        foreground: true,
        ..MonitorLaunch::of(id)
    };
    let err = Command::new(exe)
        .arg0("strata")
        .arg("--root")
        .arg(root)
        .args(launch.words())
        .exec();
    exit125(format!("exec the container monitor: {err}"))
}

/// Starts a detached monitor and waits until it reports the container started.
fn start_detached(root: &Path, id: &str) -> Result<()> {
    start_detached_with(root, id, None)
}

/// [`start_detached`], the monitor handed `attach`'s socket (as fd 4) when a client made it.
fn start_detached_with(root: &Path, id: &str, attach: Option<OwnedFd>) -> Result<()> {
    let exe = rootexe::protected_exe().map_err(exit125)?;
    let attach_fd = attach.as_ref().map(|fd| fd.as_raw_fd());
    // CLOEXEC: only the dup2'd copy (fd 3, whose dup clears the flag) reaches the monitor.
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| exit125(format!("pipe: {e}")))?;
    let wfd = w.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.arg0("strata")
        .arg("--root")
        .arg(root)
        .args(
            MonitorLaunch {
                ready_fd: Some(3),
                attach_fd: attach_fd.map(|_| 4),
                ..MonitorLaunch::of(id)
            }
            .words(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if libc::dup2(wfd, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(fd) = attach_fd {
                if libc::dup2(fd, 4) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| exit125(format!("start the container monitor: {e}")))?;
    drop(w);
    drop(attach);
    let result = strata_runtime::monitor::read_ready(r);
    // The monitor lives on as a session leader; reap it if it already exited.
    let _ = child.try_wait();
    result.map_err(|(code, msg)| anyhow!(ExitError(code, msg)))
}

/// Docker's `--pull` for `run` and `create`: an image the store lacks (any, with `always`)
/// is pulled first. By a child `strata pull`: the pull runs threads, and the start that follows
/// needs a single-threaded process; its progress goes to stderr, as Docker's does, since stdout
/// belongs to the container. Returns the image's ID when the store has it, so the record
/// does not look it up again (on a foreground run's path).
fn ensure_image(
    store: &Store,
    root: &Path,
    insecure: &[String],
    a: &CreateArgs,
) -> Result<Option<Digest>> {
    let present = store.resolve_image(a.image()).ok();
    let reference = Reference::parse(a.image()).ok();
    match a.pull.as_str() {
        "never" => return Ok(present),
        "missing" if present.is_some() => return Ok(present),
        "missing" => {
            let shown = reference.as_ref().map(|r| r.familiar());
            eprintln!(
                "Unable to find image '{}' locally",
                shown.as_deref().unwrap_or(a.image())
            );
        }
        _ => {}
    }
    // A malformed name or an ID is the record's to report ("unable to find image").
    if reference.is_none() {
        return Ok(present);
    }
    let exe = std::env::current_exe().map_err(exit125)?;
    let mut cmd = Command::new(exe);
    cmd.arg("--root").arg(root);
    for r in insecure {
        cmd.arg("--insecure-registry").arg(r);
    }
    cmd.arg("pull");
    if let Some(p) = &a.platform {
        cmd.args(["--platform", p]);
    }
    cmd.arg(a.image());
    let stderr = io::stderr().as_fd().try_clone_to_owned().map_err(exit125)?;
    let o = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| exit125(format!("run strata pull: {e}")))?;
    let said = String::from_utf8_lossy(&o.stderr);
    if o.status.success() {
        eprint!("{said}");
        return Ok(store.resolve_image(a.image()).ok());
    }
    let last = said.lines().last().unwrap_or("pull failed");
    Err(exit125(last.strip_prefix("Error: ").unwrap_or(last)))
}

pub fn run(store: &Store, root: &Path, insecure: &[String], a: &RunArgs) -> Result<()> {
    crate::cli::check_flag_words(a.create.image()).map_err(exit125)?;
    if a.detach && !a.create.attach.is_empty() {
        return Err(exit125("Conflicting options: -a and -d"));
    }
    let image = ensure_image(store, root, insecure, &a.create)?;
    if a.detach {
        let rec = create_record(store, &a.create, image.as_ref()).map_err(exit125)?;
        start_detached(root, &rec.id)?;
        println!("{}", rec.id);
        return Ok(());
    }
    if a.create.tty && a.create.interactive && super::attach::stdin_is_a_terminal() {
        let rec = create_record(store, &a.create, image.as_ref()).map_err(exit125)?;
        return super::attach::start_attached(store, &rec, |sock| {
            start_detached_with(root, &rec.id, Some(sock))
        });
    }
    run_foreground(store, root, a, image.as_ref())
}

/// A foreground run: this process execs into the monitor (the process the user's shell waits
/// for), and a child, started in this process's memory ([`handoff::exec_handing_off`]),
/// writes the record, sends the monitor the id ([`launch::Target::Pipe`]) and then makes the
/// container's network namespace,
/// on the other CPU while the monitor starts (docs/architecture.md, "Containers").
fn run_foreground(store: &Store, root: &Path, a: &RunArgs, image: Option<&Digest>) -> Result<()> {
    let exe = rootexe::protected_exe().map_err(exit125)?;
    let (id_r, id_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| exit125(format!("pipe: {e}")))?;
    let netns = if a.create.network == "host" {
        None
    } else {
        Some(fdpass::socket_pair().map_err(|e| exit125(format!("socketpair: {e}")))?)
    };
    // The monitor's ends cross the exec; the child's stay in the child (CLOEXEC here).
    let mut monitor_ends = vec![id_r.into_raw_fd()];
    let mut netns_fd = None;
    let netns_child = netns.map(|(monitor_end, child_end)| {
        netns_fd = Some(monitor_end.as_raw_fd());
        monitor_ends.push(monitor_end.into_raw_fd());
        child_end
    });
    let launch = MonitorLaunch {
        target: launch::Target::Pipe {
            fd: monitor_ends[0],
            writer: None,
            netns_fd,
        },
        foreground: true,
        ..MonitorLaunch::of("-")
    };
    let words = launch.words();
    for fd in &monitor_ends {
        // SAFETY: our own descriptors, kept open across the exec.
        let flags = unsafe { libc::fcntl(*fd, libc::F_SETFD, 0) };
        if flags < 0 {
            return Err(exit125(format!("fcntl: {}", io::Error::last_os_error())));
        }
    }
    let mut argv: Vec<&OsStr> = vec!["strata".as_ref(), "--root".as_ref(), root.as_os_str()];
    let pid_arg = argv.len() + MonitorLaunch::WRITER_WORD;
    argv.extend(words.iter().map(OsStr::new));
    let child = move |cpus: handoff::CpuSplit| {
        for fd in &monitor_ends {
            // SAFETY: the child's copies of the monitor's ends, which it does not use.
            unsafe { libc::close(*fd) };
        }
        let code = write_record_for_monitor(store, a, image, id_w, cpus);
        match netns_child {
            Some(sock) if code == 0 => match strata_runtime::netns::make_and_send(sock.as_fd()) {
                Ok(()) => 0,
                Err(e) => e.raw_os_error(),
            },
            _ => code,
        }
    };
    // SAFETY: the client is single-threaded (nothing has started a thread), and this frame,
    // which `child` borrows from, is left only by the exec or after the child is done.
    let err = unsafe { handoff::exec_handing_off(exe.as_os_str(), &argv, pid_arg, child) };
    Err(exit125(format!("exec the container monitor: {err}")))
}

/// The record writer's side of [`run_foreground`]: stores the record and sends its id, or the
/// exit code and message the monitor is to leave with. Returns this process's exit code.
fn write_record_for_monitor(
    store: &Store,
    a: &RunArgs,
    image: Option<&Digest>,
    to_monitor: OwnedFd,
    cpus: handoff::CpuSplit,
) -> i32 {
    let msg = match create_record(store, &a.create, image) {
        Ok(rec) => IdMessage::Id(rec.id),
        Err(e) => IdMessage::Failed(125, crate::one_line(&e)),
    }
    .encode();
    // The monitor forks the container's init once it has the id: give it its CPUs back first.
    cpus.restore();
    let mut pipe = std::fs::File::from(to_monitor);
    match pipe.write_all(msg.as_bytes()) {
        Ok(()) => 0,
        Err(_) => 125,
    }
}

pub fn start(store: &Store, root: &Path, a: &StartArgs) -> Result<()> {
    let c = Containers::new(store);
    if a.attach || a.interactive {
        if a.containers.len() != 1 {
            bail!("you cannot start and attach multiple containers at once");
        }
        let mut rec = c.resolve(&a.containers[0])?;
        if a.interactive && !rec.config.open_stdin {
            rec.config.open_stdin = true;
            c.save(&rec)?;
        }
        if a.interactive && super::attach::attaches_a_terminal(&rec) {
            if c.state(&rec.id)?.is_running() {
                // Docker's `start -ai` of a running container attaches to it.
                let args = crate::cli::AttachArgs {
                    detach_keys: None,
                    no_stdin: false,
                    sig_proxy: true,
                    container: rec.id.clone(),
                };
                return super::attach::attach(store, &args);
            }
            return super::attach::start_attached(store, &rec, |sock| {
                start_detached_with(root, &rec.id, Some(sock))
            });
        }
        return Err(become_monitor(root, &rec.id));
    }
    let mut failed = Vec::new();
    for key in &a.containers {
        let r = c.resolve(key).map_err(anyhow::Error::from).and_then(|rec| {
            if c.state(&rec.id)?.is_running() {
                return Ok(());
            }
            start_detached(root, &rec.id)
        });
        match r {
            Ok(()) => println!("{key}"),
            Err(e) => failed.push(format!("{key}: {e}")),
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

fn for_each(
    store: &Store,
    keys: &[String],
    f: impl Fn(&Containers, &ContainerRecord) -> Result<()>,
) -> Result<()> {
    let c = Containers::new(store);
    let mut failed = Vec::new();
    for key in keys {
        match c
            .resolve(key)
            .map_err(anyhow::Error::from)
            .and_then(|rec| f(&c, &rec))
        {
            Ok(()) => println!("{key}"),
            Err(e) => failed.push(e.to_string()),
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

pub fn stop(store: &Store, a: &StopArgs) -> Result<()> {
    for_each(store, &a.containers, |c, rec| stop_one(c, rec, a))
}

/// `restart`: `stop` (when running), then a detached start, as Docker's.
pub fn restart(store: &Store, root: &Path, a: &StopArgs) -> Result<()> {
    for_each(store, &a.containers, |c, rec| {
        stop_one(c, rec, a)?;
        start_detached(root, &rec.id)
    })
}

/// Stops one container with `-s` (over its stop signal) and `-t`.
fn stop_one(c: &Containers, rec: &ContainerRecord, a: &StopArgs) -> Result<()> {
    let mut rec = rec.clone();
    if let Some(s) = &a.signal {
        rec.config.stop_signal = s.parse()?;
    }
    Ok(ops::stop(c, &rec, a.time)?)
}

pub fn kill(store: &Store, a: &KillArgs) -> Result<()> {
    let sig = strata_runtime::parse_signal(&a.signal)?;
    for_each(store, &a.containers, |c, rec| Ok(ops::kill(c, rec, sig)?))
}

pub fn pause(store: &Store, keys: &[String]) -> Result<()> {
    for_each(store, keys, |c, rec| Ok(ops::pause(c, rec)?))
}

pub fn unpause(store: &Store, keys: &[String]) -> Result<()> {
    for_each(store, keys, |c, rec| Ok(ops::unpause(c, rec)?))
}

pub fn rm(store: &Store, a: &RmArgs) -> Result<()> {
    for_each(store, &a.containers, |c, rec| {
        let volumes = a.volumes.then(|| volume::Volumes::new(store));
        Ok(ops::remove(c, rec, a.force, volumes.as_ref())?)
    })
}

/// `wait [--condition C]`: the exit codes once the containers stop (Docker's not-running),
/// or once they are removed; or, printing nothing, once they are running, paused, healthy or
/// unhealthy (podman's conditions).
pub fn wait(store: &Store, condition: &str, keys: &[String]) -> Result<()> {
    use strata_runtime::container::Status;
    const STATES: [&str; 4] = ["running", "paused", "healthy", "unhealthy"];
    let c = Containers::new(store);
    match condition {
        "not-running" | "next-exit" | "stopped" | "exited" => {
            for key in keys {
                let rec = c.resolve(key)?;
                println!("{}", ops::wait(&c, &rec)?);
            }
        }
        "removed" => {
            for key in keys {
                let rec = c.resolve(key)?;
                while c.state(&rec.id).is_ok() {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                // The record is gone with its exit code: the last `die` event keeps it.
                let code = strata_cache::events::EventFollower::open(store)
                    .next_events()
                    .into_iter()
                    .rev()
                    .find(|e| e.actor.id == rec.id && e.action == "die")
                    .and_then(|e| e.actor.attributes.get("exitCode").cloned())
                    .unwrap_or_else(|| "0".into());
                println!("{code}");
            }
        }
        cond if STATES.contains(&cond) => {
            for key in keys {
                let rec = c.resolve(key)?;
                loop {
                    let st = c.state(&rec.id)?;
                    let health = st.health.as_ref().map(|h| h.status.as_str());
                    let reached = match cond {
                        "running" => st.status == Status::Running,
                        "paused" => st.status == Status::Paused,
                        other => health == Some(other),
                    };
                    if reached {
                        break;
                    }
                    if cond != "running" && !st.is_running() && st.status != Status::Created {
                        bail!("container {key} exited before it was {cond}");
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        }
        other => bail!(
            "invalid --condition {other:?}: not-running, removed, running, paused, healthy or unhealthy"
        ),
    }
    Ok(())
}

pub fn rename(store: &Store, key: &str, new_name: &str) -> Result<()> {
    Ok(Containers::new(store).rename(key, new_name)?)
}

/// `cp`: one side is `CONTAINER:PATH`, the other a local path or `-` (a tar stream).
pub fn cp(store: &Store, a: &CpArgs) -> Result<()> {
    use strata_runtime::copy::{self, ContainerFs, CopyOptions, HostFs};
    let opts = CopyOptions {
        archive: a.archive,
        follow_link: a.follow_link,
    };
    let (from, to) = (split_cp_arg(&a.src), split_cp_arg(&a.dest));
    let (name, ctr_path, local, into_container) = match (from, to) {
        ((Some(_), _), (Some(_), _)) => bail!("copying between containers is not supported"),
        ((None, _), (None, _)) => bail!("must specify at least one container source"),
        ((Some(c), p), (None, l)) => (c, p, l, false),
        ((None, l), (Some(c), p)) => (c, p, l, true),
    };
    let rec = Containers::new(store).resolve(name)?;
    // Opening a stopped container mounts it in a mount namespace of this process, which must
    // still be single-threaded then.
    let fs = ContainerFs::open(store, &rec)?;
    let ctr = fs.tree(ctr_path);
    if local == "-" {
        return if into_container {
            Ok(copy::copy_from_stream(io::stdin(), &ctr, &opts)?)
        } else {
            if io::stdout().is_terminal() {
                bail!("cowardly refusing to write a tar stream to a terminal");
            }
            copy::copy_to_stream(&ctr, io::BufWriter::new(io::stdout().lock()), &opts)?.flush()?;
            Ok(())
        };
    }
    let absolute = if Path::new(local).is_absolute() {
        local.to_string()
    } else {
        // Kept as text, not joined: a trailing `/` or `/.` means something to `cp`.
        format!("{}/{local}", std::env::current_dir()?.display())
    };
    let host_fs = HostFs::open()?;
    let host = host_fs.tree(&absolute, local);
    if into_container {
        copy::copy(&host, &ctr, &opts)?;
    } else {
        copy::copy(&ctr, &host, &opts)?;
    }
    Ok(())
}

/// Docker's reading of a `cp` argument: `NAME:PATH` names a container unless the argument is
/// an absolute or explicitly relative local path (`/x:y`, `./x:y`).
fn split_cp_arg(arg: &str) -> (Option<&str>, &str) {
    if arg.starts_with('/') || arg.starts_with("./") || arg.starts_with("../") {
        return (None, arg);
    }
    match arg.split_once(':') {
        Some((name, path)) if !name.is_empty() && !name.contains('/') => (Some(name), path),
        _ => (None, arg),
    }
}

pub fn export(store: &Store, a: &ExportArgs) -> Result<()> {
    let rec = Containers::new(store).resolve(&a.container)?;
    let dirs = ops::layer_dirs(store, &rec);
    let refs: Vec<&Path> = dirs.iter().map(|d| d.as_path()).collect();
    let opts = strata_image::layer::TarOptions::default();
    match &a.output {
        Some(p) => {
            let f = std::fs::File::create(p).with_context(|| format!("create {}", p.display()))?;
            let w = strata_image::layer::write_flattened_tar(
                &refs,
                io::BufWriter::with_capacity(1 << 20, f),
                &opts,
            )?;
            w.into_inner()
                .map_err(|e| anyhow!("{}: {}", p.display(), e.error()))?
                .sync_all()?;
        }
        None => {
            if io::stdout().is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            let mut w = strata_image::layer::write_flattened_tar(
                &refs,
                io::BufWriter::with_capacity(1 << 20, io::stdout().lock()),
                &opts,
            )?;
            w.flush()?;
        }
    }
    Ok(())
}

pub fn commit(store: &Store, a: &CommitArgs) -> Result<()> {
    let c = Containers::new(store);
    let rec = c.resolve(&a.container)?;
    let reference = a
        .reference
        .as_deref()
        .map(Reference::parse)
        .transpose()
        .map_err(|e| anyhow!("{e}"))?;
    let base = store.image(&rec.image)?;
    let mut cfg = base.config.container();
    cfg.cmd = Some(rec.config.cmd.clone());
    cfg.entrypoint = (!rec.config.entrypoint.is_empty()).then(|| rec.config.entrypoint.clone());
    cfg.env = rec.config.env.clone();
    cfg.working_dir = rec.config.working_dir.clone();
    cfg.user = rec.config.user.clone();
    cfg.labels = rec.config.labels.clone();
    for ch in &a.changes {
        changes::apply(&mut cfg, ch)?;
    }
    let _lease = store.lease()?;
    let paused =
        a.pause && c.state(&rec.id)?.status == Status::Running && ops::pause(&c, &rec).is_ok();
    let layer = store.add_layer_from_dir(
        rec.layers.last(),
        &c.dir(&rec.id).upper(),
        false,
        &strata_image::layer::TarOptions::default(),
    );
    if paused {
        let _ = ops::unpause(&c, &rec);
    }
    let layer = layer?;
    let now = fsutil::now_rfc3339();
    let mut history = base.config.history.clone();
    history.push(History {
        created: Some(now.clone()),
        created_by: Some(rec.argv().join(" ")),
        author: a.author.clone(),
        comment: a.message.clone(),
        ..Default::default()
    });
    let mut diff_ids = base.config.rootfs.diff_ids.clone();
    diff_ids.push(layer.diff_id.clone());
    let new = ImageConfig {
        created: Some(now),
        author: a.author.clone().or(base.config.author.clone()),
        architecture: base.config.architecture.clone(),
        os: base.config.os.clone(),
        variant: base.config.variant.clone(),
        config: Some(cfg),
        rootfs: spec::RootFs {
            kind: "layers".into(),
            diff_ids,
        },
        history,
        extra: Default::default(),
    };
    let img = store.put_image(&spec::to_canonical_json(&new), Some(&rec.image), Vec::new())?;
    if let Some(r) = reference {
        store.tag(&r, img.id())?;
    }
    println!("{}", img.id());
    Ok(())
}

/// `exec`: hands the request to a single-threaded re-exec of strata through a pipe.
pub fn exec(root: &Path, a: &ExecArgs) -> Result<()> {
    crate::cli::check_flag_words(a.container()).map_err(exit125)?;
    if a.command().is_empty() {
        bail!("\"strata exec\" requires at least 2 arguments: CONTAINER COMMAND [ARG...]");
    }
    let opts = strata_runtime::exec::ExecOptions {
        container: a.container().to_string(),
        args: a.command().to_vec(),
        env: crate::commands::create_flags::env_list(&a.env)?,
        user: a.user.clone(),
        workdir: a.workdir.clone(),
        tty: a.tty,
        interactive: a.interactive,
        detach: a.detach,
        privileged: a.privileged,
    };
    let payload = serde_json::to_vec(&opts)?;
    let (r, w) = nix::unistd::pipe().map_err(|e| exit125(format!("pipe: {e}")))?;
    // The spec is small: it fits in the pipe buffer before the helper reads it.
    nix::unistd::write(&w, &payload).map_err(|e| exit125(format!("pipe: {e}")))?;
    drop(w);
    let exe = rootexe::protected_exe().map_err(exit125)?;
    let err = Command::new(exe)
        .arg0("strata")
        .arg("--root")
        .arg(root)
        .args([launch::EXEC, "--spec-fd", &r.as_raw_fd().to_string()])
        .exec();
    Err(exit125(format!("exec helper: {err}")))
}

/// The hidden `__exec` helper.
pub fn exec_helper(store: &Store, spec_fd: i32) -> i32 {
    // SAFETY: the client passed us this pipe's read end.
    let fd = unsafe { OwnedFd::from_raw_fd(spec_fd) };
    let mut buf = Vec::new();
    let _ = std::fs::File::from(fd).read_to_end(&mut buf);
    let opts: strata_runtime::exec::ExecOptions = match serde_json::from_slice(&buf) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("Error: exec request: {e}");
            return 125;
        }
    };
    match strata_runtime::exec::exec(store, &opts) {
        Ok(code) => code,
        Err((code, msg)) => {
            eprintln!("Error: {msg}");
            code
        }
    }
}

/// `container prune` / part of `system prune`: removes stopped containers.
pub fn prune_stopped(store: &Store) -> Result<Vec<String>> {
    let c = Containers::new(store);
    let mut removed = Vec::new();
    for rec in c.list()? {
        if !c.state(&rec.id)?.is_running() {
            ops::remove(&c, &rec, false, None)?;
            removed.push(rec.id);
        }
    }
    Ok(removed)
}

/// `update`: new limits and restart policy for each container named (Docker prints each name).
pub fn update(store: &Store, a: &crate::cli::UpdateArgs) -> Result<()> {
    use super::create_flags::{nano_cpus, parse_memory, pids_limit};
    let memory_swap = a
        .memory_swap
        .as_deref()
        .map(|s| {
            if s == "-1" {
                Ok(-1)
            } else {
                strata_parser::instructions::parse_size(s)
                    .map(|b| b as i64)
                    .ok_or_else(|| anyhow!("invalid --memory-swap {s:?} (use e.g. 1g, or -1)"))
            }
        })
        .transpose()?;
    let new = strata_runtime::cgroup::NewLimits {
        memory: a.memory.as_deref().map(parse_memory).transpose()?,
        memory_swap,
        nano_cpus: a.cpus.map(|c| nano_cpus(Some(c))).transpose()?,
        cpu_shares: a.cpu_shares,
        pids: a.pids_limit.map(|p| pids_limit(Some(p))).transpose()?,
    };
    let restart = a
        .restart
        .as_deref()
        .map(strata_runtime::record::RestartPolicy::parse)
        .transpose()?;
    let c = Containers::new(store);
    let mut failed = Vec::new();
    for name in &a.containers {
        let done = c
            .resolve(name)
            .and_then(|rec| ops::update(&c, &rec, &new, restart.clone()));
        match done {
            Ok(()) => println!("{name}"),
            Err(e) => failed.push(format!("cannot update container {name}: {e}")),
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}
