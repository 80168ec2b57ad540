//! `attach` (and `start -ai`): clients joining a container's stdio through its monitor.

use super::*;
use std::io::Write;

/// Waits for `child` with a time limit (a hung attach fails the test instead of hanging it).
fn wait_child(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("{what} did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn inspect(s: &Strata, name: &str, template: &str) -> String {
    s.ok(&["inspect", "-f", template, name]).trim().to_string()
}

#[test]
fn attach_to_a_detached_tty_shell_runs_commands_detaches_and_attaches_again() {
    let s = Strata::new();
    s.busybox();
    s.ok(&["run", "-dit", "--name", "sh", "busybox", "sh"]);
    let (mut child, mut master, rx) = spawn_on_pty(s.cmd(&["attach", "sh"]), 24, 80);
    let mut seen = String::new();
    // The quotes keep the typed line (echoed by the container's terminal) from matching.
    master.write_all(b"echo hel''lo\r").unwrap();
    assert!(read_pty_until(&rx, &mut seen, "hello\r\n"), "{seen:?}");
    // The terminal's size reached the container's.
    master.write_all(b"stty size\r").unwrap();
    assert!(read_pty_until(&rx, &mut seen, "24 80"), "{seen:?}");
    master.write_all(&[0x10, 0x11]).unwrap();
    assert!(
        read_pty_until(&rx, &mut seen, "read escape sequence"),
        "{seen:?}"
    );
    assert_eq!(wait_child(&mut child, "attach").code(), Some(1), "{seen:?}");
    assert_eq!(inspect(&s, "sh", "{{.State.Status}}"), "running");

    // Two clients at once, after the first detach: both see what either types.
    let (mut one, mut one_pty, one_rx) = spawn_on_pty(s.cmd(&["attach", "sh"]), 30, 100);
    let (mut two, mut two_pty, two_rx) = spawn_on_pty(s.cmd(&["attach", "sh"]), 30, 100);
    let (mut seen_one, mut seen_two) = (String::new(), String::new());
    // Both are attached once each sees the answer to a line typed after it connected.
    wait_for(
        || {
            one_pty.write_all(b"echo rea''dy\r").unwrap();
            read_pty_within(
                &one_rx,
                &mut seen_one,
                "ready\r\n",
                Duration::from_millis(300),
            ) && read_pty_within(
                &two_rx,
                &mut seen_two,
                "ready\r\n",
                Duration::from_millis(300),
            )
        },
        "both clients attached",
    );
    one_pty.write_all(b"echo tw''o\r").unwrap();
    assert!(
        read_pty_until(&one_rx, &mut seen_one, "two\r\n"),
        "{seen_one:?}"
    );
    assert!(
        read_pty_until(&two_rx, &mut seen_two, "two\r\n"),
        "{seen_two:?}"
    );
    // The shell's exit ends both with its code, once the exit is recorded.
    two_pty.write_all(b"exit 3\r").unwrap();
    assert_eq!(
        wait_child(&mut one, "first client").code(),
        Some(3),
        "{seen_one:?}"
    );
    assert_eq!(
        wait_child(&mut two, "second client").code(),
        Some(3),
        "{seen_two:?}"
    );
    assert_eq!(
        inspect(&s, "sh", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 3"
    );
    s.ok(&["rm", "sh"]);
    s.assert_check();
}

#[test]
fn attach_without_a_tty_relays_both_streams_and_proxies_signals() {
    let s = Strata::new();
    s.busybox();
    let script = "trap 'echo got-term; exit 7' TERM; \
                  while :; do echo tick; echo tock >&2; sleep 0.1; done";
    s.ok(&["run", "-d", "--name", "tt", "busybox", "sh", "-c", script]);
    let dir = tempfile::tempdir().unwrap();
    let attach = |name: &str, extra: &[&str]| {
        let out = dir.path().join(format!("{name}.out"));
        let err = dir.path().join(format!("{name}.err"));
        let mut args = vec!["attach"];
        args.extend_from_slice(extra);
        args.push("tt");
        let child = s
            .cmd(&args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        (child, out, err)
    };
    let has =
        |p: &std::path::Path, want: &str| fs::read_to_string(p).unwrap_or_default().contains(want);
    // --sig-proxy=false: the signal is attach's own, and the container runs on.
    let (mut quiet, out, _) = attach("quiet", &["--sig-proxy=false"]);
    wait_for(|| has(&out, "tick\n"), "output through the first client");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(quiet.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = wait_child(&mut quiet, "attach --sig-proxy=false");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(15));
    assert_eq!(inspect(&s, "tt", "{{.State.Status}}"), "running");

    let (mut proxy, out, err) = attach("proxy", &[]);
    wait_for(
        || has(&out, "tick\n") && has(&err, "tock\n"),
        "both streams",
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(proxy.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(wait_child(&mut proxy, "attach").code(), Some(7));
    let out = fs::read_to_string(&out).unwrap();
    assert!(out.ends_with("got-term\n"), "{out:?}");
    assert!(
        out.lines().all(|l| l == "tick" || l == "got-term"),
        "{out:?}"
    );
    let err = fs::read_to_string(&err).unwrap();
    assert!(err.lines().all(|l| l == "tock"), "{err:?}");
    s.ok(&["rm", "tt"]);
}

#[test]
fn attach_writes_to_the_stdin_of_a_detached_interactive_container() {
    let s = Strata::new();
    s.busybox();
    s.ok(&["run", "-di", "--name", "ii", "busybox", "sh"]);
    let o = s.run_with_input(&["attach", "ii"], b"echo piped; echo $((6*7))\nexit 4\n");
    assert_eq!(out(&o), ("piped\n42\n".into(), String::new()));
    assert_eq!(o.status.code(), Some(4));
    // The log has what the clients saw.
    assert_eq!(s.ok(&["logs", "ii"]), "piped\n42\n");
    s.ok(&["rm", "ii"]);
}

#[test]
fn start_ai_gives_the_shell_of_a_created_tty_container() {
    let s = Strata::new();
    s.busybox();
    s.ok(&["create", "-it", "--name", "cc", "busybox", "sh"]);
    let (mut child, mut master, rx) = spawn_on_pty(s.cmd(&["start", "-ai", "cc"]), 24, 80);
    let mut seen = String::new();
    master.write_all(b"echo star''ted\r").unwrap();
    assert!(read_pty_until(&rx, &mut seen, "started\r\n"), "{seen:?}");
    master.write_all(b"exit 5\r").unwrap();
    assert_eq!(
        wait_child(&mut child, "start -ai").code(),
        Some(5),
        "{seen:?}"
    );
    s.ok(&["rm", "cc"]);
}

#[test]
fn attach_refuses_what_docker_refuses() {
    let s = Strata::new();
    s.busybox();
    s.ok(&["create", "--name", "stopped", "busybox", "true"]);
    assert_eq!(
        s.fails(&["attach", "stopped"]),
        "Error: You cannot attach to a stopped container, start it first\n"
    );
    s.ok(&["run", "-dit", "--name", "tty", "busybox", "sh"]);
    // stdin here is /dev/null, not a terminal; without stdin the output can still be watched.
    assert_eq!(
        s.fails(&["attach", "tty"]),
        "Error: the input device is not a TTY\n"
    );
    assert_eq!(
        s.fails(&["attach", "--detach-keys", "ctrl-", "tty"]),
        "Error: Invalid detach keys (ctrl-) provided\n"
    );
    s.ok(&["pause", "tty"]);
    assert_eq!(
        s.fails(&["attach", "tty"]),
        "Error: You cannot attach to a paused container, unpause it first\n"
    );
    s.ok(&["unpause", "tty"]);
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("out");
    let mut watcher = s
        .cmd(&["attach", "--no-stdin", "tty"])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&seen).unwrap())
        .spawn()
        .unwrap();
    // What the container writes to its terminal (here from an exec) once the client is on.
    wait_for(
        || {
            s.ok(&["exec", "tty", "sh", "-c", "echo from-exec > /proc/1/fd/1"]);
            fs::read_to_string(&seen).unwrap().contains("from-exec")
        },
        "output through attach --no-stdin",
    );
    s.ok(&["kill", "tty"]);
    assert_eq!(
        wait_child(&mut watcher, "attach --no-stdin").code(),
        Some(137)
    );
    let o = fs::read_to_string(&seen).unwrap();
    assert!(
        o.split_terminator('\n').all(|l| l == "from-exec\r"),
        "{o:?}"
    );
    s.ok(&["rm", "-f", "stopped", "tty"]);
}

#[test]
fn run_it_detaches_with_the_keys_and_the_container_runs_on() {
    let s = Strata::new();
    s.busybox();
    let cmd = s.cmd(&["run", "-it", "--name", "fg", "busybox", "sh"]);
    let (mut child, mut master, rx) = spawn_on_pty(cmd, 24, 80);
    let mut seen = String::new();
    master.write_all(b"echo fore''ground; stty size\r").unwrap();
    assert!(
        read_pty_until(&rx, &mut seen, "foreground\r\n24 80"),
        "{seen:?}"
    );
    // Docker's `run -it` leaves quietly on the detach keys.
    master.write_all(&[0x10, 0x11]).unwrap();
    assert_eq!(
        wait_child(&mut child, "run -it").code(),
        Some(0),
        "{seen:?}"
    );
    assert!(!seen.contains("escape"), "{seen:?}");
    assert_eq!(inspect(&s, "fg", "{{.State.Status}}"), "running");
    // `start -ai` of the running container attaches to it; its exit is the command's.
    let (mut again, mut master, rx) = spawn_on_pty(s.cmd(&["start", "-ai", "fg"]), 24, 80);
    let mut seen = String::new();
    wait_for(
        || {
            master.write_all(b"echo ag''ain\r").unwrap();
            read_pty_within(&rx, &mut seen, "again\r\n", Duration::from_millis(300))
        },
        "start -ai attached",
    );
    master.write_all(b"exit 6\r").unwrap();
    assert_eq!(
        wait_child(&mut again, "start -ai").code(),
        Some(6),
        "{seen:?}"
    );
    // A `--rm` run: its code, and nothing left.
    let cmd = s.cmd(&["run", "--rm", "-it", "busybox", "sh", "-c", "exit 9"]);
    let (mut gone, _master, _rx) = spawn_on_pty(cmd, 24, 80);
    assert_eq!(wait_child(&mut gone, "run --rm -it").code(), Some(9));
    assert_eq!(
        s.ok(&["ps", "-aq"]),
        format!("{}\n", &inspect(&s, "fg", "{{.Id}}")[..12])
    );
    // A start that fails says why, with Docker's code, and gives the terminal back.
    let cmd = s.cmd(&["run", "--rm", "-it", "busybox", "no-such-command"]);
    let (mut failed, _master, rx) = spawn_on_pty(cmd, 24, 80);
    let mut seen = String::new();
    assert!(
        read_pty_until(&rx, &mut seen, "no-such-command"),
        "{seen:?}"
    );
    assert_eq!(
        wait_child(&mut failed, "run of a missing command").code(),
        Some(127)
    );
    s.ok(&["rm", "fg"]);
    s.assert_check();
}
