//! The monitor: starts a container and stays its parent until it exits, then records the exit
//! status. In the foreground it is the `strata run` process itself (the client execs into it)
//! and forwards signals and the terminal; detached, it is a `setsid` process that writes the
//! container's output to its json log.

mod relay;

use relay::{Supervisor, CONSOLE, ERR, OUT};

use crate::attach::Hub;

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use strata_cache::fsutil;
use strata_cache::Store;

use crate::cgroup::{Cgroup, Limits};
use crate::container::{process_start_time, ContainerRecord, Containers, Status};
use crate::fdpass::pipe;
use crate::init;
use crate::launch::{IdMessage, InitFailure, MonitorLaunch, Ready, Target};
use crate::logs::LogWriter;
use crate::netns::{self, NetNs};
use crate::options::{NetworkMode, PidMode};
use crate::spec::{ProcessSpec, RootSpec};
use crate::RuntimeError;

/// How the monitor talks to the world: what it was started with.
pub type Options = MonitorLaunch;

/// Reads which container to start from the client's record writer (`fd`, written by `pid`):
/// the id once the record is stored, or the exit code and message if it could not be made.
/// Returns the id and the writer's pid, or the exit code and message to leave with.
fn receive_id(fd: RawFd, pid: i32) -> Result<(String, Pid), (i32, String)> {
    if fd < 3 || pid <= 0 {
        return Err((125, format!("bad --id-fd {fd}:{pid}")));
    }
    // SAFETY: the pipe's read end, handed to us alone across the exec.
    let pipe = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut msg = String::new();
    let _ = fs::File::from(pipe).read_to_string(&mut msg);
    let writer = Pid::from_raw(pid);
    match IdMessage::decode(&msg) {
        IdMessage::Id(id) => Ok((id, writer)),
        IdMessage::Failed(code, text) => {
            let _ = waitpid(writer, None);
            Err((code, text))
        }
    }
}

/// Signals a foreground monitor (and `exec`, and `attach --sig-proxy`) forwards to the
/// container.
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Runs the monitor; returns the exit code for the process to exit with.
pub fn run(store: &Store, opts: &Options) -> i32 {
    let fail = |code: i32, msg: &str| {
        report_ready(opts.ready_fd, &Ready::Failed(code, msg.to_string()));
        if opts.foreground {
            eprintln!("Error: {msg}");
        }
        code
    };
    let (id, early_netns, record_writer) = match &opts.target {
        Target::Id(id) => (id.clone(), None, None),
        Target::Pipe {
            fd,
            writer,
            netns_fd,
        } => match (receive_id(*fd, writer.unwrap_or(0)), *netns_fd) {
            (Ok((id, writer)), None) => (id, None, Some(writer)),
            (Ok((id, writer)), Some(fd)) if fd > 2 => {
                // SAFETY: the socket's end, handed to us alone across the exec.
                let sock = unsafe { OwnedFd::from_raw_fd(fd) };
                let made = (NetNs::from_socket(sock), netns::Helper::adopt(writer));
                (id, Some(made), None)
            }
            (Ok(_), Some(fd)) => return fail(125, &format!("bad --netns-fd {fd}")),
            (Err((code, msg)), _) => return fail(code, &msg),
        },
    };
    match run_inner(store, &id, opts, early_netns, record_writer) {
        Ok(code) => code,
        Err((code, msg)) => fail(code, &msg),
    }
}

/// Starts the helper making the container's network namespace (see `netns`).
fn start_netns() -> Result<(NetNs, netns::Helper), (i32, String)> {
    NetNs::spawn().map_err(|e| (125, format!("start the network namespace: {e}")))
}

fn report_ready(fd: Option<RawFd>, msg: &Ready) {
    if let Some(fd) = fd {
        // SAFETY: the ready pipe's write end is ours.
        let mut f = unsafe { fs::File::from_raw_fd(fd) };
        let _ = f.write_all(msg.encode().as_bytes());
        std::mem::forget(f);
    }
}

fn run_inner(
    store: &Store,
    id: &str,
    opts: &Options,
    early_netns: Option<(NetNs, netns::Helper)>,
    record_writer: Option<Pid>,
) -> Result<i32, (i32, String)> {
    let e125 = |e: RuntimeError| (125, e.to_string());
    let containers = Containers::new(store);
    let rec = containers.load(id).map_err(e125)?;
    // The network namespace takes longest to make: its helper starts first (see `netns`).
    let netns = match (early_netns, &rec.host_config.network_mode) {
        (early, NetworkMode::Host | NetworkMode::Container(_)) => {
            if let Some((_, helper)) = early {
                let _ = helper.reap();
            }
            None
        }
        (Some(made), _) => Some(made),
        (None, _) => Some(start_netns()?),
    };
    claim(&containers, &rec, opts)?;
    let fail_start = |code: i32, msg: String| {
        let _ = containers.update_state(id, |s| {
            s.status = Status::Exited;
            s.exit_code = code;
            s.error = msg.clone();
            s.pid = 0;
            s.finished_at = fsutil::now_rfc3339();
            Ok(())
        });
        if rec.host_config.auto_remove {
            auto_remove(store, &containers, &rec);
        }
        (code, msg)
    };
    let shared_netns = match &rec.host_config.network_mode {
        NetworkMode::Container(other) => Some(
            other_container_ns(&containers, other, "net", "network namespace")
                .map_err(|e| fail_start(125, e))?,
        ),
        _ => None,
    };
    let pid_ns = match &rec.host_config.pid_mode {
        PidMode::Private => PidNs::Own,
        PidMode::Host => PidNs::Host,
        PidMode::Container(other) => PidNs::Join(
            other_container_ns(&containers, other, "pid", "PID").map_err(|e| fail_start(125, e))?,
        ),
    };
    let joined =
        crate::networking::join(store, &rec).map_err(|e| fail_start(125, e.to_string()))?;
    let leave_networks = || {
        if let Some(j) = &joined {
            j.leave(store);
        }
    };
    let (root, mut proc_) =
        crate::spec::specs(store, &rec, joined.as_ref().and_then(|j| j.primary())).map_err(
            |e| {
                leave_networks();
                fail_start(125, e.to_string())
            },
        )?;
    if proc_.tty && opts.foreground {
        proc_.console_size = terminal_size(0);
    }
    // `run -it`'s client is connected already: its terminal's size is the console's.
    let mut early_hub = opts
        .attach_fd
        .map(|fd| Hub::adopt(&containers.dir(id).path, fd));
    if let Some(h) = &mut early_hub {
        for asked in h.accept() {
            if let (true, crate::attach::Request::Resize(rows, cols)) = (proc_.tty, asked) {
                proc_.console_size = Some((rows, cols));
            }
        }
    }
    crate::init::clear_volatile_marker(&root);
    let limits = limits_of(&rec);
    let user_mode = crate::networking::user_mode(&rec);
    let netns = match shared_netns {
        Some(fd) => Some(NetnsPlan::Shared(fd)),
        None => netns.map(|made| match (&joined, user_mode) {
            (Some(j), _) => NetnsPlan::Plugged(made, j),
            (None, true) => NetnsPlan::UserMode(made, &rec),
            (None, false) => NetnsPlan::Own(made),
        }),
    };
    if root.fuse {
        // Here, in the user's mount namespace and before the container's pid namespace: the
        // daemon must be in neither of the container's.
        root.mount_fuse().map_err(|m| {
            leave_networks();
            fail_start(125, m)
        })?;
    }
    let started = start(&rec, &root, &proc_, &limits, opts, netns, pid_ns);
    if let Some(writer) = record_writer {
        // Long gone by now: it exits as soon as it has written the id.
        let _ = waitpid(writer, None);
    }
    let (child, io, cg) = match started {
        Ok(x) => x,
        Err((code, msg)) => {
            leave_networks();
            if root.fuse {
                let _ = root.unmount_fuse();
            }
            return Err(fail_start(code, msg));
        }
    };
    if let Some(j) = &joined {
        j.add_init(store, child.as_raw());
    }
    let pid_start = process_start_time(child.as_raw()).unwrap_or(0);
    let user_mode_ports = io
        .user_net
        .as_ref()
        .map(|n| n.ports().to_vec())
        .unwrap_or_default();
    let has_health = crate::health::probe_command(rec.config.healthcheck.as_ref()).is_some();
    let _ = containers.update_state(id, |s| {
        s.pid = child.as_raw();
        s.pid_start = pid_start;
        s.started_at = fsutil::now_rfc3339();
        s.exit_code = 0;
        s.oom_killed = false;
        s.user_mode_ports = user_mode_ports;
        s.health = has_health.then(|| crate::health::Health {
            status: "starting".into(),
            ..Default::default()
        });
        Ok(())
    });
    if has_health && children_in_own_pid_namespace() {
        crate::health::start_checker(store, &rec);
    }
    crate::events::record(store, &rec, "start", &[]);
    // Before the client hears of the start, so an `attach` right after `run -d` connects.
    let hub = early_hub.or_else(|| attach_hub(&containers, &rec, &io));
    let hub = hub.map(|mut h| {
        h.set_input(
            io.console
                .as_ref()
                .or(io.stdin.as_ref())
                .map(|fd| fd.as_fd()),
        );
        h
    });
    report_ready(opts.ready_fd, &Ready::Started);
    if let Some(fd) = opts.ready_fd {
        // SAFETY: the client has its answer; close our end.
        unsafe { libc::close(fd) };
    }
    let log = if keeps_logs(&rec, opts) {
        let rotation = rec.host_config.log_config.rotation().unwrap_or_default();
        LogWriter::open(&containers.dir(id).log(), rotation).ok()
    } else {
        None
    };
    let attached = [
        opts.foreground && rec.config.attaches("stdout"),
        opts.foreground && rec.config.attaches("stderr"),
    ];
    let (code, hub) = supervise(child, io, log, opts.foreground, attached, hub);
    if !rec.host_config.pid_mode.is_private() {
        // No pid namespace dies with init and takes the rest along: what the container left
        // running is found by its cgroup.
        for pid in cg.procs() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    if joined.is_some() {
        // Leaving may render the firewall: nft is a child process.
        children_in_own_pid_namespace();
    }
    leave_networks();
    if root.fuse {
        if let Err(e) = root.unmount_fuse() {
            eprintln!("Error: {e}");
        }
    }
    let oom = cg.oom_killed();
    // Found again: `stats` may have added hierarchies since the start.
    crate::cgroup::Cgroup::of(&rec.id).destroy();
    let code = if oom && code == 137 { 137 } else { code };
    if oom {
        crate::events::record(store, &rec, "oom", &[]);
    }
    crate::events::record(store, &rec, "die", &[("exitCode", code.to_string())]);
    // A foreground `--rm` returns its code to the caller itself: the record goes, and its
    // final state is only written if it cannot (a detached one keeps the write for `wait`).
    if !(opts.foreground && rec.host_config.auto_remove && auto_remove(store, &containers, &rec)) {
        record_exit(store, &containers, &rec, code, oom);
    }
    // Attached clients hear of the exit once it is recorded (a `wait` or `rm` after `attach`
    // finds the container stopped).
    if let Some(h) = hub {
        h.finish(code);
    }
    Ok(code)
}

/// The `attach` socket, when the container's output passes through this monitor (always but
/// for a foreground run without a TTY whose output goes straight to the terminal, and a
/// build's RUN step, whose output is the build's).
fn attach_hub(containers: &Containers, rec: &ContainerRecord, io: &Io) -> Option<Hub> {
    let build = rec
        .config
        .labels
        .contains_key(crate::container::BUILD_LABEL);
    if build || (io.out.is_none() && io.console.is_none()) {
        return None;
    }
    Hub::listen(&containers.dir(&rec.id).path).ok()
}

/// Claims the container for this monitor: only one may start it, and a start the restart
/// policy scheduled is called off by a `stop` meanwhile.
fn claim(
    containers: &Containers,
    rec: &ContainerRecord,
    opts: &Options,
) -> Result<(), (i32, String)> {
    let me = std::process::id() as i32;
    let my_start = process_start_time(me).unwrap_or(0);
    containers
        .update_state(&rec.id, |s| {
            if s.is_running() {
                return Err(RuntimeError::Conflict(format!(
                    "container {} is already running",
                    rec.name
                )));
            }
            if opts.policy_restart && (s.manually_stopped || !s.restarting) {
                return Err(RuntimeError::Conflict(format!(
                    "container {}: restart cancelled",
                    rec.name
                )));
            }
            if !opts.policy_restart {
                s.manually_stopped = false;
            }
            s.restarting = false;
            s.status = Status::Running;
            s.pid = 0;
            s.monitor_pid = me;
            s.monitor_start = my_start;
            s.error.clear();
            Ok(())
        })
        .map(|_| ())
        .map_err(|e| (125, e.to_string()))
}

/// The cgroup limits the record asks for.
fn limits_of(rec: &ContainerRecord) -> Limits {
    let h = &rec.host_config;
    Limits {
        memory: h.memory,
        pids: h.pids_limit,
        nano_cpus: h.nano_cpus,
        cpuset_cpus: h.cpuset_cpus.clone(),
        restrict_devices: !h.privileged,
        device_rules: h
            .device_cgroup_rules
            .iter()
            .cloned()
            .chain(
                crate::devices::resolve(&h.devices, false)
                    .map(|(_, rules)| rules)
                    .unwrap_or_default(),
            )
            .collect(),
    }
}

/// Records how the container exited, and starts it again later when its restart policy
/// says so (with Docker's doubling delay, reset after ten seconds of running).
fn record_exit(
    store: &Store,
    containers: &Containers,
    rec: &ContainerRecord,
    code: i32,
    oom: bool,
) {
    let id = rec.id.as_str();
    // `update --restart` may have changed it since the start.
    let fresh = containers.load(id).ok();
    let policy = fresh.as_ref().map_or(&rec.host_config.restart_policy, |r| {
        &r.host_config.restart_policy
    });
    let mut again = None;
    let _ = containers.update_state(id, |s| {
        s.status = Status::Exited;
        s.exit_code = code;
        s.oom_killed = oom;
        s.user_mode_ports.clear();
        s.pid = 0;
        s.finished_at = fsutil::now_rfc3339();
        if policy.restarts(code, s.restart_count, s.manually_stopped) {
            let ran = fsutil::parse_rfc3339(&s.finished_at).unwrap_or(0)
                - fsutil::parse_rfc3339(&s.started_at).unwrap_or(0);
            s.restart_delay_ms = if ran >= 10 || s.restart_delay_ms == 0 {
                100
            } else {
                (s.restart_delay_ms * 2).min(60_000)
            };
            s.restart_count += 1;
            s.restarting = true;
            again = Some(s.restart_delay_ms);
        }
        Ok(())
    });
    if rec.host_config.auto_remove {
        auto_remove(store, containers, rec);
    }
    if let Some(delay) = again {
        restart_later(store, id, delay);
    }
}

/// This monitor's children are born in the container's pid namespace, which died with its
/// init (a fork there fails): children go back to the monitor's own namespace. Whether they do.
fn children_in_own_pid_namespace() -> bool {
    fs::File::open("/proc/self/ns/pid")
        .is_ok_and(|own| nix::sched::setns(own, nix::sched::CloneFlags::CLONE_NEWPID).is_ok())
}

/// The restart policy's next start: a detached child that waits `delay_ms` and becomes the
/// container's monitor again (`--policy-restart`), while this monitor exits (a foreground one
/// returning the code to its caller, as `docker run` does).
fn restart_later(store: &Store, id: &str, delay_ms: u64) {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = crate::rootexe::protected_exe() else {
        return;
    };
    if !children_in_own_pid_namespace() {
        return;
    }
    // SAFETY: the monitor is single-threaded; the child only sleeps and execs.
    if let Ok(None) = unsafe { fsutil::fork_detached() } {
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = std::process::Command::new(exe)
            .arg0("strata")
            .arg("--root")
            .arg(store.root())
            .args(
                MonitorLaunch {
                    policy_restart: true,
                    ..MonitorLaunch::of(id)
                }
                .words(),
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .exec();
        std::process::exit(125);
    }
}

/// The monitor's side of the container's stdio.
/// `--rm`: the container goes, and its anonymous volumes with it (as Docker's do). Whether
/// the container's directory went.
fn auto_remove(store: &Store, containers: &Containers, rec: &ContainerRecord) -> bool {
    let gone = containers.remove_dir(&rec.id).is_ok();
    if gone {
        crate::volume::Volumes::new(store).remove_anonymous_of(rec);
        crate::events::record(store, rec, "destroy", &[]);
    }
    gone
}

/// Whether the monitor writes the container's output to its log: always but with
/// `--log-driver none`, except for a foreground `--rm` run, whose log nobody could read (its
/// output then goes straight to the terminal, no copy on the way).
fn keeps_logs(rec: &ContainerRecord, opts: &Options) -> bool {
    rec.host_config.log_config.keeps_logs() && !(opts.foreground && rec.host_config.auto_remove)
}

struct Io {
    signals: SignalFd,
    /// stdout and stderr pipes, when the output is logged (or, detached, discarded).
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    /// tty: the console master.
    console: Option<OwnedFd>,
    /// A detached `-i` container without a TTY: the write end of its stdin pipe.
    stdin: Option<OwnedFd>,
    /// Rootless: the container's slirp4netns, stopped when the container has exited.
    user_net: Option<crate::usermode::UserModeNet>,
}

/// Where the container's network namespace comes from.
enum NetnsPlan<'a> {
    /// Made by the helper, loopback only: init receives it.
    Own((NetNs, netns::Helper)),
    /// Made by the helper and plugged into networks by the monitor while init sets up.
    Plugged((NetNs, netns::Helper), &'a crate::networking::Joined),
    /// Rootless: made by the helper and given to slirp4netns by the monitor.
    UserMode((NetNs, netns::Helper), &'a ContainerRecord),
    /// Another container's (`--network container:NAME`).
    Shared(std::os::fd::OwnedFd),
}

/// The namespace the helper made, once it has sent it (the monitor needs it itself).
fn receive_namespace(ns: NetNs, helper: netns::Helper) -> Result<OwnedFd, (i32, String)> {
    let received = ns.receive();
    match (received, helper.reap().err()) {
        (Ok(fd), None) => Ok(fd),
        (_, Some(why)) | (Err(why), None) => Err((125, why)),
    }
}

/// Where the container's processes get their pids.
enum PidNs {
    /// A namespace of its own, init being pid 1 there.
    Own,
    Host,
    /// Another container's.
    Join(OwnedFd),
}

/// Opens namespace `kind` (`net`, `pid`) of running container `key`; `what` names it in
/// Docker's error.
fn other_container_ns(
    containers: &Containers,
    key: &str,
    kind: &str,
    what: &str,
) -> Result<OwnedFd, String> {
    let other = containers.resolve(key).map_err(|e| e.to_string())?;
    let st = containers.state(&other.id).map_err(|e| e.to_string())?;
    if !st.is_running() || st.pid <= 0 {
        return Err(format!(
            "cannot join {what} of a non running container: {key}"
        ));
    }
    let path = format!("/proc/{}/ns/{kind}", st.pid);
    fs::File::open(&path)
        .map(OwnedFd::from)
        .map_err(|e| format!("open {path}: {e}"))
}

fn start(
    rec: &ContainerRecord,
    root: &RootSpec,
    p: &ProcessSpec,
    limits: &Limits,
    opts: &Options,
    netns: Option<NetnsPlan>,
    pid_ns: PidNs,
) -> Result<(Pid, Io, Cgroup), (i32, String)> {
    let mut user_net = None;
    let (netns, netns_helper, plug) = match netns {
        None => (None, None, None),
        Some(NetnsPlan::Own((ns, helper))) => (Some(ns), Some(helper), None),
        Some(NetnsPlan::Shared(fd)) => (Some(NetNs::Ready(fd)), None, None),
        Some(NetnsPlan::Plugged((ns, helper), joined)) => {
            // The monitor needs the namespace itself to plug it in: wait for it here.
            let fd = receive_namespace(ns, helper)?;
            let for_init = fd
                .try_clone()
                .map_err(|e| (125, format!("duplicate the network namespace: {e}")))?;
            (Some(NetNs::Ready(for_init)), None, Some((joined, fd)))
        }
        Some(NetnsPlan::UserMode((ns, helper), rec)) => {
            // Started here, before the pid namespace: slirp4netns must not be in the
            // container's (its init, exiting, would wait for slirp4netns to be reaped, and
            // this monitor for the init), and rootless this process cannot go back to its own.
            let fd = receive_namespace(ns, helper)?;
            let net = crate::networking::start_user_mode(rec, fd.as_fd())
                .map_err(|e| (125, e.to_string()))?;
            user_net = Some(net);
            (Some(NetNs::Ready(fd)), None, None)
        }
    };
    let w = Wiring::new(rec, p, opts)?;
    let signals = block_signals()?;
    // The next child is born in the container's pid namespace.
    match pid_ns {
        PidNs::Own => nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)
            .map_err(|e| (125, format!("unshare pid namespace: {e}")))?,
        PidNs::Host => {}
        PidNs::Join(fd) => nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWPID)
            .map_err(|e| (125, format!("join the pid namespace: {e}")))?,
    }
    // SAFETY: the monitor is single-threaded (a fresh exec), so the child may allocate.
    match unsafe { fork() } {
        Err(e) => Err((125, format!("fork: {e}"))),
        Ok(ForkResult::Child) => {
            drop(signals);
            w.become_init(root, p, netns)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(netns);
            w.watch_init(child, p, limits, &rec.id, signals, netns_helper, plug)
                .map(|(child, mut io, cg)| {
                    io.user_net = user_net;
                    (child, io, cg)
                })
        }
    }
}

/// Blocks the signals the monitor handles and opens a signalfd for them.
fn block_signals() -> Result<SignalFd, (i32, String)> {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGWINCH);
    set.thread_block()
        .map_err(|e| (125, format!("block signals: {e}")))?;
    SignalFd::with_flags(&set, nix::sys::signalfd::SfdFlags::SFD_CLOEXEC)
        .map_err(|e| (125, format!("signalfd: {e}")))
}

/// The channels between the monitor and the container's init, made before the fork.
struct Wiring {
    /// The monitor tells init through this socket that its cgroup is ready, handing it the
    /// files to join it with (cgroup v1, see `Cgroup::admit`), then the seccomp filters.
    sync_w: OwnedFd,
    sync_r: OwnedFd,
    /// Init's failure ([`InitFailure`]), or EOF at exec.
    err_r: OwnedFd,
    err_w: OwnedFd,
    /// stdout and stderr pipes, unless a foreground container's output goes straight to
    /// the terminal.
    out_pipe: Option<(OwnedFd, OwnedFd)>,
    err_pipe: Option<(OwnedFd, OwnedFd)>,
    /// Straight to the terminal, the streams `-a` leaves out go nowhere.
    unattached: Vec<i32>,
    /// With a TTY: the socket init sends the pty's master over.
    console: Option<(OwnedFd, OwnedFd)>,
    /// stdin is /dev/null (detached, or not attached).
    stdin_null: bool,
    /// A detached `-i` container without a TTY reads a pipe that `attach` clients write to.
    stdin_pipe: Option<(OwnedFd, OwnedFd)>,
}

impl Wiring {
    fn new(
        rec: &ContainerRecord,
        p: &ProcessSpec,
        opts: &Options,
    ) -> Result<Wiring, (i32, String)> {
        let err = |e: RuntimeError| (125, e.to_string());
        let (sync_w, sync_r) =
            crate::fdpass::socket_pair().map_err(|e| (125, format!("sync socket: {e}")))?;
        let (err_r, err_w) = pipe().map_err(err)?;
        let (out_pipe, err_pipe) = if p.tty || (opts.foreground && !keeps_logs(rec, opts)) {
            (None, None)
        } else {
            (Some(pipe().map_err(err)?), Some(pipe().map_err(err)?))
        };
        let unattached = [(1, "stdout"), (2, "stderr")]
            .into_iter()
            .filter(|(_, s)| opts.foreground && !p.tty && !rec.config.attaches(s))
            .map(|(fd, _)| fd)
            .collect();
        let console = if p.tty {
            Some(crate::fdpass::socket_pair().map_err(|e| (125, format!("console socket: {e}")))?)
        } else {
            None
        };
        let stdin_pipe = if !p.tty && !opts.foreground && rec.config.open_stdin {
            Some(pipe().map_err(err)?)
        } else {
            None
        };
        Ok(Wiring {
            stdin_pipe,
            sync_w,
            sync_r,
            err_r,
            err_w,
            out_pipe,
            err_pipe,
            unattached,
            console,
            stdin_null: !rec.config.attaches("stdin") || !opts.foreground,
        })
    }

    /// The child: stdio wired, then the container's init (which never returns).
    fn become_init(self, root: &RootSpec, p: &ProcessSpec, netns: Option<NetNs>) -> ! {
        drop(self.sync_w);
        drop(self.err_r);
        // SAFETY: wiring the child's stdio before anything else runs.
        unsafe {
            if let Some((r, _)) = &self.stdin_pipe {
                libc::dup2(r.as_raw_fd(), 0);
            } else if self.stdin_null {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
                libc::dup2(null, 0);
                libc::close(null);
            }
            if let Some((_, w)) = &self.out_pipe {
                libc::dup2(w.as_raw_fd(), 1);
            }
            if let Some((_, w)) = &self.err_pipe {
                libc::dup2(w.as_raw_fd(), 2);
            }
            if self.out_pipe.is_none() {
                for fd in &self.unattached {
                    let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
                    libc::dup2(null, *fd);
                    libc::close(null);
                }
            }
        }
        drop(self.out_pipe);
        drop(self.err_pipe);
        drop(self.stdin_pipe);
        let console_fd = self.console.map(|(parent, child)| {
            drop(parent);
            let fd = child.as_raw_fd();
            std::mem::forget(child);
            fd
        });
        let fd = self.err_w.as_raw_fd();
        // The error pipe must survive close_fds: keep it as a raw fd.
        std::mem::forget(self.err_w);
        // Setup runs while the monitor makes the cgroup; init joins it just before exec.
        let e = init::run(root, p, fd, console_fd, self.sync_r, netns);
        init::report(fd, &e);
        std::process::exit(e.code);
    }

    /// The monitor, while init sets up: the cgroup made and handed over, the seccomp
    /// filters sent, the console received; then init's exec or failure.
    #[allow(clippy::too_many_arguments)] // the channels and the two namespace jobs, each used once
    fn watch_init(
        self,
        child: Pid,
        p: &ProcessSpec,
        limits: &Limits,
        id: &str,
        signals: SignalFd,
        netns_helper: Option<netns::Helper>,
        plug: Option<(&crate::networking::Joined, OwnedFd)>,
    ) -> Result<(Pid, Io, Cgroup), (i32, String)> {
        drop(self.sync_r);
        drop(self.err_w);
        let out = self.out_pipe.map(|(r, _)| r);
        let errp = self.err_pipe.map(|(r, _)| r);
        let console_parent = self.console.map(|(parent, _)| parent);
        // Made while the child sets up its namespaces and mounts. On v1 the child moves
        // itself in (fast, see `Cgroup::admit`); on v2 the monitor moves it.
        let cg = Cgroup::create(id, limits).and_then(|cg| match cg.admit(child.as_raw()) {
            Ok(files) => Ok((cg, files)),
            Err(e) => {
                cg.destroy();
                Err(e)
            }
        });
        // The container's networks are plugged in meanwhile too, before init may exec.
        let plugged = match plug {
            Some((joined, ns)) => joined.plug(ns.as_fd()),
            None => Ok(()),
        };
        let cg = match (cg, plugged) {
            (Ok(c), Ok(())) => Ok(c),
            (Ok((cg, _)), Err(e)) => {
                cg.destroy();
                Err(e)
            }
            (Err(e), _) => Err(e),
        };
        let (cg, join_files) = match cg {
            Ok(c) => c,
            Err(e) => {
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                let _ = netns_helper.map(netns::Helper::reap);
                return Err((125, e.to_string()));
            }
        };
        let raw: Vec<_> = join_files.iter().map(|f| f.as_raw_fd()).collect();
        let _ = crate::fdpass::send_fds(self.sync_w.as_raw_fd(), &raw);
        drop(join_files);
        // The seccomp filter is compiled here, while init still sets up (none sent: init
        // compiles it itself, and reports what fails).
        let filters = if p.seccomp {
            crate::seccomp::profile_for_caps(&p.caps).unwrap_or_default()
        } else {
            Vec::new()
        };
        let _ = crate::seccomp::write_filters(&mut fs::File::from(self.sync_w), &filters);
        // The console arrives before exec (init sends it while setting up).
        let console_master = match &console_parent {
            Some(sock) => crate::fdpass::recv_fd(sock.as_raw_fd()).ok().flatten(),
            None => None,
        };
        // EOF on the error pipe means exec happened; text means init failed.
        let mut msg = String::new();
        let _ = fs::File::from(self.err_r).read_to_string(&mut msg);
        // Init has joined the namespace or failed, so the helper is done: reap it, and say
        // why it failed if it did (init only saw it send nothing).
        let netns_failure = netns_helper.and_then(|h| h.reap().err());
        if let Some(failed) = InitFailure::decode(&msg, 125) {
            let _ = waitpid(child, None);
            cg.destroy();
            return Err(match netns_failure {
                Some(why) => (125, why),
                None => (failed.code, failed.message),
            });
        }
        let io = Io {
            signals,
            out,
            err: errp,
            console: console_master,
            stdin: self.stdin_pipe.map(|(_, w)| w),
            user_net: None,
        };
        Ok((child, io, cg))
    }
}

/// Waits for the container, relaying signals, the terminal and logs. Returns the exit code.
/// Waits for `child`, forwarding signals, relaying the console's input, and copying its
/// output to the log and to the terminal for the `attached` streams (stdout, stderr).
fn supervise(
    child: Pid,
    io: Io,
    log: Option<LogWriter>,
    foreground: bool,
    attached: [bool; 2],
    hub: Option<Hub>,
) -> (i32, Option<Hub>) {
    let stdin_tty = foreground
        && io.console.is_some()
        && nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    let saved = if stdin_tty { make_raw() } else { None };
    if let Some(c) = &io.console {
        copy_winsize(0, c.as_raw_fd());
    }
    let mut open_streams: BTreeSet<usize> = BTreeSet::new();
    for (key, present) in [
        (OUT, io.out.is_some()),
        (ERR, io.err.is_some()),
        (CONSOLE, io.console.is_some()),
    ] {
        if present {
            open_streams.insert(key);
        }
    }
    let mut s = Supervisor {
        child,
        stdin_open: foreground && io.console.is_some(),
        io,
        log,
        attached,
        buf: vec![0u8; 64 << 10],
        exit: None,
        open_streams,
        hub,
    };
    s.relay_until_exit();
    if let Some(l) = &mut s.log {
        l.flush();
    }
    if let Some(t) = saved {
        let _ =
            nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &t);
    }
    (s.exit.unwrap_or(255), s.hub.take())
}

/// Waits for `child` (an exec'd process), forwarding signals and relaying its console.
pub fn relay(child: Pid, signals: SignalFd, console: Option<OwnedFd>) -> i32 {
    supervise(
        child,
        Io {
            signals,
            out: None,
            err: None,
            console,
            stdin: None,
            user_net: None,
        },
        None,
        true,
        [true, true],
        None,
    )
    .0
}

/// The container's exit code if it has exited.
fn reap(child: Pid) -> Option<i32> {
    match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Some(code),
        Ok(WaitStatus::Signaled(_, sig, _)) => Some(128 + sig as i32),
        Ok(_) => None,
        Err(nix::errno::Errno::ECHILD) => Some(255),
        Err(_) => None,
    }
}

/// Puts the terminal on stdin in raw mode; its settings before, to restore.
pub fn make_raw() -> Option<nix::sys::termios::Termios> {
    let stdin = std::io::stdin();
    let saved = nix::sys::termios::tcgetattr(&stdin).ok()?;
    let mut raw = saved.clone();
    nix::sys::termios::cfmakeraw(&mut raw);
    nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw).ok()?;
    Some(saved)
}

/// The (rows, columns) of the terminal on `fd`, if it is one with a size.
pub fn terminal_size(fd: RawFd) -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ into a winsize we own.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        (libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_row > 0)
            .then_some((ws.ws_row, ws.ws_col))
    }
}

/// Sets the size of the terminal `fd` (which signals its foreground process group).
pub(crate) fn set_winsize(fd: RawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ with a winsize we own.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

/// Gives the terminal `to` the size of the terminal `from` (if it is one).
pub(crate) fn copy_winsize(from: RawFd, to: RawFd) {
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ with a winsize we own.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Helper for clients: wait for the detached monitor's [`Ready`].
pub fn read_ready(fd: OwnedFd) -> Result<(), (i32, String)> {
    let mut msg = String::new();
    let _ = fs::File::from(fd).read_to_string(&mut msg);
    match Ready::decode(&msg) {
        Ready::Started => Ok(()),
        Ready::Failed(code, why) => Err((code, why)),
    }
}
