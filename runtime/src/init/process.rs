//! The container's process: the console, resource limits, user and groups, capabilities,
//! seccomp, the environment, and the exec (with `--init`, a reaping init that forwards
//! signals).

use super::*;

/// Opens a pty in the container's own devpts, sends the master to the monitor, and makes the
/// slave the controlling terminal and stdio.
pub(super) fn attach_console(
    console: Option<RawFd>,
    size: Option<(u16, u16)>,
) -> Result<(), InitError> {
    let sock = console.ok_or_else(|| InitError {
        code: 125,
        message: "tty requested without a console socket".into(),
    })?;
    let master = nix::pty::posix_openpt(nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY)
        .ctx(|| "open /dev/ptmx".into())?;
    nix::pty::grantpt(&master).ctx(|| "grantpt".into())?;
    nix::pty::unlockpt(&master).ctx(|| "unlockpt".into())?;
    if let Some((rows, cols)) = size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ with a winsize we own, on the master we just opened.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    let name = nix::pty::ptsname_r(&master).ctx(|| "ptsname".into())?;
    let slave = nix::fcntl::open(
        name.as_str(),
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY,
        Mode::empty(),
    )
    .ctx(|| format!("open {name}"))?;
    crate::fdpass::send_fd(sock, master.as_raw_fd())
        .ctx(|| "send the console to the monitor".into())?;
    drop(master);
    // SAFETY: the console socket is ours to close.
    unsafe { libc::close(sock) };
    nix::unistd::setsid().ctx(|| "setsid".into())?;
    // SAFETY: TIOCSCTTY on an fd we own.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return fail(
            125,
            format!(
                "set controlling terminal: {}",
                std::io::Error::last_os_error()
            ),
        );
    }
    for target in 0..3 {
        // SAFETY: dup2 onto the standard fds.
        unsafe { libc::dup2(slave.as_raw_fd(), target) };
    }
    Ok(())
}

/// Environment with Docker's defaults filled in.
pub fn final_env(env: &[String], home: &str, hostname: &str, tty: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let has = |k: &str| {
        env.iter()
            .any(|e| e.split_once('=').map(|(a, _)| a) == Some(k))
    };
    if !has("PATH") {
        out.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !hostname.is_empty() && !has("HOSTNAME") {
        out.push(format!("HOSTNAME={hostname}"));
    }
    if tty && !has("TERM") {
        out.push("TERM=xterm".into());
    }
    out.extend(env.iter().cloned());
    if !has("HOME") {
        out.push(format!("HOME={home}"));
    }
    out
}

/// PATH lookup of `cmd` inside the (already entered) container root. Returns the path or the
/// Docker exit code and message.
pub fn find_executable(cmd: &str, env: &[String]) -> Result<String, InitError> {
    let check = |p: &Path| -> Result<(), InitError> {
        match fs::metadata(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fail(
                127,
                format!(
                    "exec: {:?}: stat {}: no such file or directory",
                    cmd,
                    p.display()
                ),
            ),
            Err(e) => fail(126, format!("exec: {cmd:?}: {e}")),
            // A directory cannot be executed either: execve says EACCES, and so does Docker.
            Ok(m) if m.is_dir() || m.permissions().mode() & 0o111 == 0 => {
                fail(126, format!("exec: {cmd:?}: permission denied"))
            }
            Ok(_) => Ok(()),
        }
    };
    if cmd.contains('/') {
        check(Path::new(cmd))?;
        return Ok(cmd.to_string());
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':') {
        let candidate = Path::new(if dir.is_empty() { "." } else { dir }).join(cmd);
        if let Ok(m) = fs::metadata(&candidate) {
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Ok(candidate.to_string_lossy().into_owned());
            }
        }
    }
    fail(
        127,
        format!("exec: {cmd:?}: executable file not found in $PATH"),
    )
}

/// User, limits, working directory, security, fds, and exec. Shared with `exec`. `filters`:
/// the seccomp filter to load if `p` asks for one, when it was compiled already.
pub fn exec_process(
    p: &ProcessSpec,
    err_fd: RawFd,
    filters: Option<Vec<crate::seccomp::BpfProgram>>,
) -> Result<Never, InitError> {
    if p.args.is_empty() {
        return fail(125, "no command specified");
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = fs::read_to_string("/etc/group").unwrap_or_default();
    let mut user = crate::user::resolve(&p.user, &passwd, &group).map_err(|m| InitError {
        code: 125,
        message: m,
    })?;
    let more = crate::user::group_ids(&p.group_add, &group).map_err(|m| InitError {
        code: 125,
        message: m,
    })?;
    user.additional_gids.extend(more);
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let env = final_env(&p.env, &user.home, &hostname, p.tty);
    raise_nofile();
    set_ulimits(&p.ulimits)?;
    // Only our error pipe survives from here: no fd can carry a host directory into the
    // container (CVE-2024-21626), not even through a working directory like /proc/self/fd/N.
    close_fds_except(err_fd);
    let cwd = if p.cwd.is_empty() {
        "/"
    } else {
        p.cwd.as_str()
    };
    if !Path::new(cwd).exists() {
        fs::create_dir_all(cwd).ctx(|| format!("create working directory {cwd}"))?;
    }
    chdir(cwd).ctx(|| format!("chdir to working directory {cwd}"))?;
    match nix::unistd::getcwd() {
        Ok(d) if d.starts_with("/") && d.to_string_lossy() != "(unreachable)" => {}
        _ => {
            return fail(
                125,
                format!("working directory {cwd} is outside the container"),
            )
        }
    }
    let program = find_executable(&p.args[0], &env)?;
    if p.no_new_privs {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return fail(125, "set no_new_privs");
        }
    }
    drop_privileges(p, &user, filters)?;
    reset_signals();
    if p.init {
        return run_as_init(&program, &p.args, &env, err_fd);
    }
    Err(do_exec(&program, &p.args, &env))
}

pub(super) fn raise_nofile() {
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        // Never above the host's hard limit, so this cannot fail for lack of privilege.
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// `--ulimit`s, after the defaults (so `nofile` given replaces the raised default).
pub(super) fn set_ulimits(limits: &[crate::container::Ulimit]) -> Result<(), InitError> {
    for l in limits {
        let Some(resource) = crate::container::rlimit_resource(&l.name) else {
            return fail(125, format!("unknown ulimit {:?}", l.name));
        };
        let value = |v: i64| if v < 0 { libc::RLIM_INFINITY } else { v as u64 };
        nix::sys::resource::setrlimit(resource, value(l.soft), value(l.hard))
            .ctx(|| format!("set ulimit {}={}:{}", l.name, l.soft, l.hard))?;
    }
    Ok(())
}

pub(super) fn close_fds_except(keep: RawFd) {
    // SAFETY: close_range on descriptor ranges; stdio (0-2) and `keep` stay.
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32);
        }
        libc::syscall(
            libc::SYS_close_range,
            (keep.max(2) + 1) as u32,
            u32::MAX,
            0u32,
        );
    }
}

pub(super) fn drop_privileges(
    p: &ProcessSpec,
    user: &crate::user::ExecUser,
    filters: Option<Vec<crate::seccomp::BpfProgram>>,
) -> Result<(), InitError> {
    crate::caps::drop_bounding(&p.caps).ctx(|| "drop capabilities".into())?;
    if p.seccomp {
        let filters = match filters {
            Some(f) if !f.is_empty() => f,
            _ => crate::seccomp::profile_for_caps(&p.caps).map_err(|m| InitError {
                code: 125,
                message: m,
            })?,
        };
        crate::seccomp::apply(&filters).ctx(|| "load seccomp profile".into())?;
    }
    // SAFETY: prctl/setgroups/setres[ug]id with plain arguments.
    unsafe {
        libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0);
        let groups = crate::user::groups_for(user, p.buildkit_groups);
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
            return fail(
                125,
                format!("setgroups: {}", std::io::Error::last_os_error()),
            );
        }
        if libc::setresgid(user.gid, user.gid, user.gid) != 0 {
            return fail(
                125,
                format!("setgid {}: {}", user.gid, std::io::Error::last_os_error()),
            );
        }
        if libc::setresuid(user.uid, user.uid, user.uid) != 0 {
            return fail(
                125,
                format!("setuid {}: {}", user.uid, std::io::Error::last_os_error()),
            );
        }
    }
    // Root keeps the container's set; another user gets none (only the bounding set), like Docker.
    let eff = if user.uid == 0 {
        p.caps.clone()
    } else {
        Default::default()
    };
    crate::caps::set_process(&eff).ctx(|| "set capabilities".into())?;
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    Ok(())
}

pub(super) fn reset_signals() {
    // SAFETY: restoring default dispositions and an empty mask before exec.
    unsafe {
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

pub(super) fn do_exec(program: &str, args: &[String], env: &[String]) -> InitError {
    let c = |s: &str| CString::new(s).unwrap_or_else(|_| CString::new("?").expect("no NUL"));
    let prog = c(program);
    let argv: Vec<CString> = args.iter().map(|a| c(a)).collect();
    let envp: Vec<CString> = env.iter().map(|a| c(a)).collect();
    let e = nix::unistd::execve(&prog, &argv, &envp).unwrap_err();
    let code = if e == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    };
    InitError {
        code,
        message: format!("exec {program}: {e}"),
    }
}

/// `--init`: this process stays pid 1, reaping zombies and forwarding signals to the command.
pub(super) fn run_as_init(
    program: &str,
    args: &[String],
    env: &[String],
    err_fd: RawFd,
) -> Result<Never, InitError> {
    // SAFETY: the reaper stays strata code inside the container: keep it non-dumpable so the
    // container cannot open its /proc/<pid>/exe (CVE-2019-5736).
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // Block forwarded signals before forking so none is lost.
    let mut set = nix::sys::signal::SigSet::empty();
    for s in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGQUIT,
        nix::sys::signal::Signal::SIGUSR1,
        nix::sys::signal::Signal::SIGUSR2,
        nix::sys::signal::Signal::SIGWINCH,
        nix::sys::signal::Signal::SIGCHLD,
    ] {
        set.add(s);
    }
    set.thread_block().ctx(|| "block signals".into())?;
    // SAFETY: single-threaded; the child execs or exits.
    match unsafe { nix::unistd::fork() }.ctx(|| "fork".into())? {
        nix::unistd::ForkResult::Child => {
            reset_signals();
            let e = do_exec(program, args, env);
            report(err_fd, &e);
            std::process::exit(e.code);
        }
        nix::unistd::ForkResult::Parent { child } => {
            // SAFETY: our copy of the error pipe is not needed; the child reports exec errors.
            unsafe { libc::close(err_fd) };
            let sfd = nix::sys::signalfd::SignalFd::new(&set).ctx(|| "signalfd".into())?;
            loop {
                let Ok(Some(info)) = sfd.read_signal() else {
                    continue;
                };
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGCHLD {
                    loop {
                        match nix::sys::wait::waitpid(
                            None,
                            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                        ) {
                            Ok(nix::sys::wait::WaitStatus::Exited(pid, code)) if pid == child => {
                                std::process::exit(code)
                            }
                            Ok(nix::sys::wait::WaitStatus::Signaled(pid, s, _)) if pid == child => {
                                std::process::exit(128 + s as i32)
                            }
                            Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(_) => break,
                            Ok(_) => continue,
                        }
                    }
                } else {
                    // SAFETY: forwarding a signal to our child.
                    unsafe { libc::kill(child.as_raw(), sig) };
                }
            }
        }
    }
}
