//! Running, isolating, logging, restarting and stopping containers.

use super::*;

#[test]
fn run_exit_codes_and_stream_separation() {
    let s = Strata::new();
    s.busybox();
    let o = s.run(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(out(&o), ("to-out\n".into(), "to-err\n".into()));
    let o = s.run(&["run", "--rm", "busybox", "nosuchcmd"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(
        out(&o).1.contains("executable file not found"),
        "{:?}",
        out(&o)
    );
    let o = s.run(&["run", "--rm", "busybox", "/etc/passwd"]);
    assert_eq!(o.status.code(), Some(126));
    let o = s.run(&["run", "--rm", "--pull", "never", "nosuchimage"]);
    assert_eq!(o.status.code(), Some(125));
    // stdin only with -i
    let o = s.run_with_input(&["run", "--rm", "-i", "busybox", "cat"], b"piped in\n");
    assert_eq!(String::from_utf8(o.stdout).unwrap(), "piped in\n");
    assert_eq!(
        s.ok(&["ps", "-aq"]).trim(),
        "",
        "--rm left a container behind"
    );
    s.assert_check();
}

/// CVE-2019-5736: what a container could reach as its runtime's `/proc/<pid>/exe` (the monitor
/// and the exec helper run from it) is a complete copy of the binary on a read-only mount.
#[test]
fn monitors_run_from_a_read_only_copy_of_the_binary() {
    let s = Strata::new();
    s.busybox();
    let id = s.ok(&["run", "-d", "busybox", "sleep", "30"]);
    let id = id.trim();
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(s.root().join("containers").join(id).join("state.json")).unwrap(),
    )
    .unwrap();
    let monitor = state["MonitorPid"].as_i64().unwrap();
    let exe = std::fs::read_link(format!("/proc/{monitor}/exe")).unwrap();
    assert!(exe.starts_with("/run/strata/exe/"), "{}", exe.display());
    assert!(
        std::fs::read(&exe).unwrap() == std::fs::read(common::strata_bin()).unwrap(),
        "{} is not a copy of the binary",
        exe.display()
    );
    let err = std::fs::OpenOptions::new()
        .append(true)
        .open(&exe)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    s.ok(&["rm", "-f", id]);
    s.assert_check();
}

/// A foreground `run` pins itself to one CPU while it hands the record to a child on another
/// (`runtime::handoff::CpuSplit`): the container must still get exactly the CPUs `run` was
/// given, whether that is all of them or one.
#[test]
fn a_foreground_run_gives_the_container_the_cpus_it_was_given() {
    let s = Strata::new();
    s.busybox();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let ours = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string();
    let first = ours.split([',', '-']).next().unwrap().to_string();
    for cpus in [ours.as_str(), first.as_str()] {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", cpus, strata_bin(), "--root"])
            .arg(s.root())
            .args([
                "run",
                "--rm",
                "busybox",
                "grep",
                "Cpus_allowed_list",
                "/proc/self/status",
            ]);
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("Cpus_allowed_list:\t{cpus}\n"),
            "taskset -c {cpus}"
        );
    }
    s.assert_check();
}

/// `--cpus` and `--cpuset-cpus` limit the host's CPUs: they are checked against what the host
/// has online, not against the client's own CPUs (a pinned client, or the record writer, which
/// runs pinned to the client's other CPUs).
#[test]
fn cpu_limits_are_checked_against_the_hosts_cpus_not_the_clients() {
    let s = Strata::new();
    s.busybox();
    let online = fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let ranges: Vec<(u32, u32)> = online
        .trim()
        .split(',')
        .map(|r| {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    let count: u32 = ranges.iter().map(|(a, b)| b - a + 1).sum();
    let (first, last) = (
        ranges[0].0.to_string(),
        ranges.last().unwrap().1.to_string(),
    );
    let run = |pin: &str, cpus: &str| {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", pin, strata_bin(), "--root"])
            .arg(s.root())
            .args(["run", "--rm", "--cpus", cpus, "--cpuset-cpus", &last])
            .args(["busybox", "grep", "Cpus_allowed_list", "/proc/self/status"]);
        cmd.stdin(Stdio::null()).output().unwrap()
    };
    let all = count.to_string();
    let o = run(&first, &all);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("Cpus_allowed_list:\t{last}\n")
    );
    let o = run(&first, &(count + 1).to_string());
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!(
            "Error: invalid --cpus {}: range of CPUs is from 0.01 to {count}\n",
            count + 1
        )
    );
    s.assert_check();
}

/// A foreground `run`'s record writer makes the network namespace once the record is written;
/// otherwise (`start -a`, detached runs) the monitor starts a helper once it has read the
/// record: every way gives the container its own namespace with loopback up, and no maker is
/// left in it or behind it.
#[test]
fn the_network_namespace_is_private_whoever_makes_it() {
    let s = Strata::new();
    s.busybox();
    let script = "ls /sys/class/net; cat /sys/class/net/lo/flags; echo /proc/[0-9]*";
    // On the default network: its device plugged in by the monitor, whoever made the namespace.
    let want = "eth0\nlo\n0x9\n/proc/1\n";
    assert_eq!(s.ok(&["run", "--rm", "busybox", "sh", "-c", script]), want);
    s.ok(&[
        "create", "--name", "attached", "busybox", "sh", "-c", script,
    ]);
    assert_eq!(s.ok(&["start", "-a", "attached"]), want);
    s.ok(&[
        "run", "-d", "--name", "detached", "busybox", "sh", "-c", script,
    ]);
    assert_eq!(s.ok(&["wait", "detached"]).trim(), "0");
    assert_eq!(s.ok(&["logs", "detached"]), want);
    // `--network host` is the host's namespace itself (compared by identity: the devices
    // listed would race with the veths other tests make).
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    let seen = s.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox",
        "readlink",
        "/proc/self/ns/net",
    ]);
    assert_eq!(seen.trim(), host.to_string_lossy());
    s.ok(&["rm", "attached", "detached"]);
    s.assert_check();
}

#[test]
fn isolation_matches_docker_defaults() {
    let s = Strata::new();
    s.busybox();
    let script = "echo pid=$$; hostname; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; \
        wc -c < /proc/keys; wc -c < /proc/timer_list; ls /sys/firmware | wc -l; ls /proc/self/fd | wc -l; \
        (echo x > /proc/sys/kernel/hostname) 2>/dev/null && echo sys-writable || echo sys-readonly; \
        ip link | grep -c '^[0-9]'; ls /sys/class/net; cat /sys/class/net/lo/flags; echo /proc/[0-9]*";
    let got = s.ok(&[
        "run",
        "--rm",
        "--hostname",
        "box",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    let lines: Vec<&str> = got.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        vec![
            "pid=1",
            "box",
            "CapEff:\t00000000a80425fb",
            "NoNewPrivs:\t0",
            "Seccomp:\t2",
            "0",
            "0",
            "0",
            // 0, 1, 2 and the fd `ls` itself opens for the directory
            "4",
            "sys-readonly",
            "2",
            // sysfs mounted from the container's own network namespace, loopback up
            "eth0",
            "lo",
            "0x9",
            // nothing but the command: the network namespace's helper is gone
            "/proc/1",
        ],
        "{got}"
    );
    let got = s.ok(&[
        "run",
        "--rm",
        "--security-opt",
        "no-new-privileges",
        "--cap-drop",
        "ALL",
        "busybox",
        "grep",
        "-E",
        "^(CapEff|NoNewPrivs)",
        "/proc/self/status",
    ]);
    assert_eq!(got, "CapEff:\t0000000000000000\nNoNewPrivs:\t1\n");
    let got = s.ok(&["run", "--rm", "-u", "nobody", "busybox", "id"]);
    assert_eq!(
        got.trim(),
        "uid=65534(nobody) gid=65534(nogroup) groups=100(users),65534(nogroup)"
    );
    // seccomp: a user namespace needs no capability, so only the filter refuses it
    let o = s.run(&["run", "--rm", "busybox", "unshare", "-U", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        out(&o).1,
        "unshare: unshare(0x10000000): Operation not permitted\n"
    );
    s.ok(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        "busybox",
        "unshare",
        "-U",
        "true",
    ]);
    let got = s.ok(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        "busybox",
        "grep",
        "Seccomp:",
        "/proc/self/status",
    ]);
    assert_eq!(got, "Seccomp:\t0\n");
}

#[test]
fn working_directory_cannot_escape_through_leaked_fds() {
    let s = Strata::new();
    s.busybox();
    for n in 3..8 {
        let o = s.run(&[
            "run",
            "--rm",
            "-w",
            &format!("/proc/self/fd/{n}"),
            "busybox",
            "pwd",
        ]);
        assert_ne!(
            o.status.code(),
            Some(0),
            "-w /proc/self/fd/{n} ran: {:?}",
            out(&o)
        );
    }
}

#[test]
fn tty_output_goes_through_a_pty() {
    let s = Strata::new();
    s.busybox();
    let got = s.ok(&["run", "--rm", "-t", "busybox", "sh", "-c", "tty; echo done"]);
    assert_eq!(got, "/dev/pts/0\r\ndone\r\n");
}

#[test]
fn volumes_tmpfs_readonly_and_env() {
    let s = Strata::new();
    s.busybox();
    let vol = s.path("vol");
    fs::create_dir(&vol).unwrap();
    fs::write(vol.join("in"), "host data\n").unwrap();
    let v = format!("{}:/data", vol.display());
    s.ok(&[
        "run",
        "--rm",
        "-v",
        &v,
        "busybox",
        "sh",
        "-c",
        "cat /data/in > /data/out",
    ]);
    assert_eq!(fs::read_to_string(vol.join("out")).unwrap(), "host data\n");
    let o = s.run(&[
        "run",
        "--rm",
        "-v",
        &format!("{v}:ro"),
        "busybox",
        "touch",
        "/data/x",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(out(&o).1, "touch: /data/x: Read-only file system\n");
    assert!(!vol.join("x").exists());
    // --tmpfs: a tmpfs is mounted there (with its options), writable in a read-only root.
    let o = s.run(&[
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/scratch:size=2m,mode=1770",
        "busybox",
        "sh",
        "-c",
        "grep ' /scratch ' /proc/mounts | cut -d' ' -f1-4; stat -c %a /scratch; touch /scratch/ok && echo wrote; touch /nope",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        out(&o),
        (
            "tmpfs /scratch tmpfs rw,nosuid,nodev,noexec,relatime,size=2048k,mode=1770\n1770\nwrote\n".into(),
            "touch: /nope: Read-only file system\n".into()
        )
    );
    let envf = s.path("env");
    fs::write(&envf, "FROM_FILE=1\n# comment\n").unwrap();
    let got = s.ok(&[
        "run",
        "--rm",
        "-e",
        "A=b c",
        "--env-file",
        envf.to_str().unwrap(),
        "-w",
        "/tmp/work",
        "busybox",
        "sh",
        "-c",
        "echo $A $FROM_FILE $HOME $(pwd)",
    ]);
    assert_eq!(got, "b c 1 /root /tmp/work\n");
}

/// `logs -f` follows until the container exits, without repeating or losing a line;
/// `--since`/`--until` take timestamps, Unix seconds or durations before now.
#[test]
fn logs_follow_to_the_end_and_select_by_time() {
    let s = Strata::new();
    s.busybox();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        "busybox",
        "sh",
        "-c",
        "echo one; sleep 1; echo two; echo three >&2; sleep 0.5; echo four",
    ]);
    let o = s.run(&["logs", "-f", "talker"]);
    assert_eq!(out(&o), ("one\ntwo\nfour\n".into(), "three\n".into()));
    let stamped = s.ok(&["logs", "-t", "talker"]);
    let two = stamped
        .lines()
        .find_map(|l| l.strip_suffix(" two"))
        .unwrap()
        .to_string();
    assert_eq!(s.ok(&["logs", "--since", &two, "talker"]), "two\nfour\n");
    assert_eq!(s.ok(&["logs", "--until", &two, "talker"]), "one\n");
    assert_eq!(
        s.ok(&["logs", "--since", "1h", "talker"]),
        "one\ntwo\nfour\n"
    );
    assert_eq!(
        s.ok(&["logs", "--since", "0", "--tail", "1", "talker"]),
        "four\n"
    );
    assert_eq!(s.ok(&["logs", "--until", "1h", "talker"]), "");
    assert_eq!(
        s.fails(&["logs", "--since", "soon", "talker"]),
        "Error: invalid --since value \"soon\": a timestamp, Unix seconds or a duration such as 42m\n"
    );
    s.ok(&["rm", "talker"]);
}

/// `restart` stops a running container (or none) and starts it detached; its files stay.
#[test]
fn restart_starts_again_with_the_same_files() {
    let s = Strata::new();
    s.busybox();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "again",
        "busybox",
        "sh",
        "-c",
        "echo start >> /starts; exec sleep 60",
    ]);
    let starts = |n: &str| {
        s.run(&["exec", "again", "wc", "-l", "/starts"]).stdout
            == format!("{n} /starts\n").as_bytes()
    };
    wait_for(|| starts("1"), "the first start");
    assert_eq!(s.ok(&["restart", "-t", "0", "again"]), "again\n");
    wait_for(|| starts("2"), "the second start");
    s.ok(&["stop", "-t", "0", "again"]);
    assert_eq!(s.ok(&["container", "restart", "again"]), "again\n");
    wait_for(|| starts("3"), "the third start");
    assert!(s
        .ok(&["ps", "--format", "{{.Status}}", "-f", "name=again"])
        .starts_with("Up "));
    assert!(s
        .fails(&["restart", "nosuch"])
        .contains("no such container: nosuch"));
    s.ok(&["rm", "-f", "again"]);
    s.assert_check();
}

/// `--restart`: the policy starts an exited container again (Docker's backoff, 100 ms
/// doubling), `on-failure:N` at most N times and only after failures, and never once it was
/// stopped by hand; a foreground run still returns the first exit's code.
#[test]
fn restart_policies_start_again_until_stopped() {
    let s = Strata::new();
    s.busybox();
    let inspect = |name: &str| {
        s.ok(&[
            "inspect",
            "--format",
            "{{.RestartCount}} {{.State.Status}}",
            name,
        ])
    };
    s.ok(&[
        "run",
        "-d",
        "--name",
        "failing",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo run; exit 1",
    ]);
    wait_for(
        || inspect("failing") == "2 exited\n",
        "two restarts, then no more",
    );
    assert_eq!(s.ok(&["logs", "failing"]), "run\nrun\nrun\n");
    s.ok(&[
        "run",
        "-d",
        "--name",
        "fine",
        "--restart",
        "on-failure",
        "busybox",
        "true",
    ]);
    wait_for(
        || inspect("fine") == "0 exited\n",
        "a success, not restarted",
    );

    let o = s.run(&[
        "run",
        "--name",
        "always",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "echo up; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3));
    wait_for(
        || s.ok(&["logs", "always"]).lines().count() >= 2,
        "restarts in the background",
    );
    s.ok(&["stop", "always"]);
    let stopped = inspect("always");
    // The pending start (a detached process sleeping the backoff) gives up: then nothing can
    // start it again.
    common::wait_for_no_process_of(&s.root());
    assert_eq!(inspect("always"), stopped, "restarted after stop");
    assert!(stopped.ends_with(" exited\n"), "{stopped}");
    assert!(s
        .ok(&["ps", "-a", "--format", "{{.Status}}", "-f", "name=always"])
        .starts_with("Exited (3)"));
    assert_eq!(
        s.fails(&["run", "--rm", "--restart", "always", "busybox", "true"]),
        "Error: conflicting options: cannot specify both --restart and --rm\n"
    );
    s.ok(&["rm", "-f", "failing", "fine", "always"]);
    s.assert_check();
}

#[test]
fn detached_lifecycle_exec_logs_pause_stop_rm() {
    let s = Strata::new();
    s.busybox();
    let id = s.ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        "busybox",
        "sh",
        "-c",
        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64);
    let ps = s.ok(&["ps"]);
    assert!(ps.starts_with("CONTAINER ID   IMAGE     COMMAND"), "{ps}");
    assert!(ps.contains("ticker") && ps.contains("Up "), "{ps}");
    wait_for(
        || s.ok(&["logs", "ticker"]).lines().count() >= 3,
        "log lines",
    );
    assert!(s
        .ok(&["logs", "--tail", "1", "ticker"])
        .starts_with("tick "));
    assert!(s
        .ok(&["logs", "-t", "ticker"])
        .lines()
        .next()
        .unwrap()
        .contains("Z tick 0"));
    // exec joins the same pid namespace: pid 1 is the container's command
    let got = s.ok(&[
        "exec",
        "ticker",
        "sh",
        "-c",
        "cat /proc/1/cmdline | tr '\\0' ' '; echo; echo $$",
    ]);
    let lines: Vec<&str> = got.lines().collect();
    assert!(lines[0].starts_with("sh -c i=0;"), "{got}");
    assert_ne!(lines[1], "1");
    // ... and the container's cgroups (it joins them by itself, see cgroup::join_with)
    let got = s.ok(&[
        "exec",
        "ticker",
        "sh",
        "-c",
        "cat /proc/self/cgroup; echo ---; cat /proc/1/cgroup",
    ]);
    let (exec_cg, init_cg) = got.split_once("---\n").expect("two cgroup listings");
    assert_eq!(exec_cg, init_cg);
    assert!(
        init_cg.contains(&format!("/strata/{id}")),
        "init is not in the container's cgroup: {init_cg}"
    );
    let o = s.run(&["exec", "ticker", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    assert!(s.ok(&["top", "ticker"]).contains("while true"));
    // pause really freezes: the log stops growing
    s.ok(&["pause", "ticker"]);
    assert!(s
        .ok(&["ps", "--format", "{{.Status}}"])
        .contains("(Paused)"));
    let n1 = s.ok(&["logs", "ticker"]).lines().count();
    std::thread::sleep(Duration::from_millis(500));
    let n2 = s.ok(&["logs", "ticker"]).lines().count();
    assert_eq!(n1, n2, "log grew while paused");
    let o = s.run(&["exec", "ticker", "true"]);
    assert_eq!(o.status.code(), Some(125));
    s.ok(&["unpause", "ticker"]);
    wait_for(
        || s.ok(&["logs", "ticker"]).lines().count() > n2,
        "log growth after unpause",
    );
    // rm of a running container is refused
    let err = s.fails(&["rm", "ticker"]);
    assert!(err.contains("container is running"), "{err}");
    // stop: SIGTERM is ignored by pid 1 without a handler, so SIGKILL after the timeout
    let t = Instant::now();
    s.ok(&["stop", "-t", "1", "ticker"]);
    assert!(t.elapsed() >= Duration::from_millis(900));
    let st = s.ok(&["ps", "-a", "--format", "{{.Status}}"]);
    assert!(st.starts_with("Exited (137)"), "{st}");
    assert_eq!(s.ok(&["wait", "ticker"]).trim(), "137");
    let o = s.run(&["exec", "ticker", "true"]);
    assert_eq!(o.status.code(), Some(125));
    let inspect: serde_json::Value =
        serde_json::from_str(&s.ok(&["container", "inspect", "ticker"])).unwrap();
    assert_eq!(inspect[0]["State"]["Status"], "exited");
    assert_eq!(inspect[0]["State"]["ExitCode"], 137);
    assert_eq!(inspect[0]["Name"], "/ticker");
    s.ok(&["rename", "ticker", "ticker2"]);
    s.ok(&["rm", "ticker2"]);
    assert_eq!(s.ok(&["ps", "-aq"]).trim(), "");
    s.assert_check();
}

#[test]
fn restart_keeps_files_and_signals_are_forwarded() {
    let s = Strata::new();
    s.busybox();
    s.ok(&[
        "create",
        "--name",
        "counter",
        "busybox",
        "sh",
        "-c",
        "echo run >> /count; wc -l < /count",
    ]);
    assert!(s
        .ok(&["ps", "-a", "--format", "{{.Status}}"])
        .starts_with("Created"));
    assert_eq!(s.ok(&["start", "-a", "counter"]).trim(), "1");
    assert_eq!(s.ok(&["start", "-a", "counter"]).trim(), "2");
    // SIGTERM to the foreground client reaches the container (with --init, pid 1 forwards it)
    let mut child = s
        .cmd(&[
            "run", "--rm", "--init", "--name", "sleeper", "busybox", "sleep", "30",
        ])
        .spawn()
        .unwrap();
    wait_for(
        || String::from_utf8_lossy(&s.run(&["top", "sleeper"]).stdout).contains("sleep 30"),
        "the container's command to run",
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(143));
}
