//! Mounts, logs, cp streams, volumes, templates and exec isolation.

use super::*;

#[test]
fn bind_sources_are_made_and_mount_points_are_unique() {
    let s = Strata::new();
    s.busybox();
    let missing = s.path("not/there/yet");
    let v = format!("{}:/data", missing.display());
    s.ok(&["run", "--rm", "-v", &v, "busybox", "touch", "/data/made"]);
    assert!(missing.join("made").is_file());
    let v2 = format!("{}:/data", s.path("other").display());
    for dup in [
        vec!["-v", v.as_str(), "-v", v2.as_str()],
        vec!["-v", v.as_str(), "--tmpfs", "/data"],
        vec!["-v", "/data", "--mount", "type=tmpfs,target=/data/"],
    ] {
        let mut args = vec!["run", "--rm"];
        args.extend(dup);
        args.extend(["busybox", "true"]);
        let o = s.run(&args);
        assert_eq!(o.status.code(), Some(125), "{args:?}");
        assert_eq!(out(&o).1, "Error: Duplicate mount point: /data\n");
    }
    assert_eq!(s.ok(&["ps", "-aq"]), "", "nothing was created");
    // /etc/mtab is the mount table, as Docker's init layer makes it.
    assert_eq!(
        s.ok(&["run", "--rm", "busybox", "readlink", "/etc/mtab"]),
        "/proc/mounts\n"
    );
}

#[test]
fn logs_show_foreground_runs_and_rotate_as_docker_does() {
    let s = Strata::new();
    s.busybox();
    // A foreground run and `start -a` are logged too; the terminal gets what -a attaches.
    let o = s.run(&[
        "run",
        "--name",
        "fg",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert_eq!(out(&o), ("out\n".into(), "err\n".into()));
    let o = s.run(&["logs", "fg"]);
    assert_eq!(out(&o), ("out\n".into(), "err\n".into()));
    let o = s.run(&[
        "run",
        "--name",
        "only-out",
        "-a",
        "stdout",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert_eq!(out(&o), ("out\n".into(), String::new()));
    let o = s.run(&["logs", "only-out"]);
    assert_eq!(out(&o), ("out\n".into(), "err\n".into()));
    let id = s.ok(&["create", "busybox", "echo", "started"]);
    let o = s.run(&["start", "-a", id.trim()]);
    assert_eq!(out(&o).0, "started\n");
    assert_eq!(s.ok(&["logs", id.trim()]), "started\n");
    // --log-driver none keeps nothing, and says so.
    s.ok(&[
        "run",
        "--name",
        "quiet",
        "--log-driver",
        "none",
        "busybox",
        "echo",
        "x",
    ]);
    let err = s.fails(&["logs", "quiet"]);
    assert_eq!(
        err,
        "Error: configured logging driver does not support reading (none)\n"
    );
    // max-size/max-file: rotated, at most three files, the newest lines kept in order.
    let id = s.ok(&[
        "run",
        "-d",
        "--log-opt",
        "max-size=1k",
        "--log-opt",
        "max-file=3",
        "busybox",
        "sh",
        "-c",
        "for i in $(seq 1 300); do echo line $i; done",
    ]);
    let id = id.trim();
    s.ok(&["wait", id]);
    let dir = s.root().join("containers").join(id);
    let mut logs: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("container.log"))
        .collect();
    logs.sort();
    assert_eq!(
        logs,
        ["container.log", "container.log.1", "container.log.2"]
    );
    for f in &logs {
        let size = fs::metadata(dir.join(f)).unwrap().len();
        assert!(size <= 1024 + 100, "{f} has {size} bytes");
    }
    let lines: Vec<u32> = s
        .ok(&["logs", id])
        .lines()
        .map(|l| l.strip_prefix("line ").unwrap().parse().unwrap())
        .collect();
    assert_eq!(*lines.last().unwrap(), 300);
    assert!(lines.windows(2).all(|w| w[1] == w[0] + 1), "{lines:?}");
    assert!(lines.len() > 20 && lines.len() < 60, "{}", lines.len());
    // Bad combinations are refused before anything is made.
    for (args, msg) in [
        (vec!["-d", "-a", "stdout"], "Error: Conflicting options: -a and -d\n"),
        (vec!["--log-opt", "max-file=2"], "Error: max-file cannot be set when max-size is not set\n"),
        (vec!["--log-driver", "syslog"], "Error: logging driver \"syslog\" is not supported (json-file, none)\n"),
        (vec!["-a", "stdnone"], "Error: invalid argument \"stdnone\" for \"-a, --attach\" flag: valid streams are STDIN, STDOUT and STDERR\n"),
    ] {
        let mut a = vec!["run"];
        a.extend(args);
        a.extend(["busybox", "true"]);
        let o = s.run(&a);
        assert_eq!(o.status.code(), Some(125), "{a:?}");
        assert_eq!(out(&o).1, msg);
    }
}

#[test]
fn cp_takes_compressed_streams_and_never_replaces_a_directory() {
    let s = Strata::new();
    s.busybox();
    let id = "target";
    s.ok(&[
        "run",
        "-d",
        "--name",
        id,
        "busybox",
        "sh",
        "-c",
        "mkdir -p /d/sub && sleep 60",
    ]);
    let src = s.path("src");
    fs::create_dir_all(src.join("tree")).unwrap();
    fs::write(src.join("tree/a"), "a\n").unwrap();
    fs::write(src.join("sub"), "a file named like the directory\n").unwrap();
    sh(&format!(
        "cd {s} && tar -czf ../tree.tgz tree && tar -cJf ../tree.txz tree && tar -czf ../sub.tgz sub",
        s = src.display()
    ));
    let cp_stdin = |archive: &str, dest: &str| {
        s.cmd(&["cp", "-", &format!("{id}:{dest}")])
            .stdin(fs::File::open(s.path(archive)).unwrap())
            .output()
            .unwrap()
    };
    for (archive, dest) in [("tree.tgz", "/d"), ("tree.txz", "/d/sub")] {
        let o = cp_stdin(archive, dest);
        assert!(o.status.success(), "{archive}: {:?}", out(&o));
    }
    assert_eq!(
        s.ok(&["exec", id, "cat", "/d/tree/a", "/d/sub/tree/a"]),
        "a\na\n"
    );
    // A file never replaces a directory (nor the reverse), as in Docker.
    let o = cp_stdin("sub.tgz", "/d");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        out(&o).1,
        format!("Error: cp {id}:/d: tar entry \"sub\": cannot overwrite directory \"sub\" with non-directory\n")
    );
    assert_eq!(s.ok(&["exec", id, "ls", "/d/sub"]), "tree\n");
    // Docker's boolean spellings.
    let f = src.join("sub");
    s.ok(&[
        "cp",
        "-a=false",
        f.to_str().unwrap(),
        &format!("{id}:/d/sub/"),
    ]);
    s.ok(&[
        "cp",
        "-L=true",
        "-a",
        f.to_str().unwrap(),
        &format!("{id}:/copied"),
    ]);
    assert_eq!(
        s.ok(&["exec", id, "cat", "/d/sub/sub", "/copied"]),
        "a file named like the directory\n".repeat(2)
    );
    s.ok(&["rm", "-f", id]);
}

#[test]
fn anonymous_volumes_are_listed_and_pruned_as_dockers() {
    let s = Strata::new();
    s.busybox();
    let names = |s: &Strata| -> Vec<String> {
        s.ok(&["volume", "ls", "-q"])
            .lines()
            .map(str::to_string)
            .collect()
    };
    // --rm takes its anonymous volume with it.
    s.ok(&[
        "run",
        "--rm",
        "-v",
        "/scratch",
        "busybox",
        "touch",
        "/scratch/f",
    ]);
    assert!(names(&s).is_empty());
    // Otherwise it is a volume like any other, labelled anonymous, until rm -v or a prune.
    s.ok(&[
        "run", "--name", "ca", "-v", "/data", "busybox", "touch", "/data/f",
    ]);
    let anon = names(&s);
    assert_eq!(anon.len(), 1);
    assert_eq!(anon[0].len(), 64);
    assert_eq!(
        s.ok(&[
            "volume",
            "inspect",
            "--format",
            "{{json .Labels}}",
            &anon[0]
        ]),
        "{\"com.docker.volume.anonymous\":\"\"}\n"
    );
    s.ok(&["run", "--name", "cb", "-v", "/data", "busybox", "true"]);
    s.ok(&["rm", "-v", "cb"]);
    assert_eq!(names(&s), anon, "rm -v took cb's own volume only");
    s.ok(&["volume", "create", "named"]);
    s.ok(&["volume", "create", "--label", "keep=1", "kept"]);
    // In use: nothing goes.
    assert_eq!(
        s.ok(&["volume", "prune", "-f"]),
        "Total reclaimed space: 0B\n"
    );
    s.ok(&["rm", "ca"]);
    assert_eq!(names(&s).len(), 3, "rm without -v keeps the volume");
    // Without -a only anonymous volumes go.
    assert_eq!(
        s.ok(&["volume", "prune", "-f"]),
        format!(
            "Deleted Volumes:\n{}\n\nTotal reclaimed space: 0B\n",
            anon[0]
        )
    );
    assert_eq!(names(&s), ["kept", "named"]);
    assert_eq!(
        s.ok(&[
            "volume",
            "prune",
            "-f",
            "--filter",
            "all=true",
            "--filter",
            "label!=keep"
        ]),
        "Deleted Volumes:\nnamed\n\nTotal reclaimed space: 0B\n"
    );
    assert_eq!(names(&s), ["kept"]);
}

#[test]
fn volume_options_make_tmpfs_and_bind_volumes() {
    let s = Strata::new();
    s.busybox();
    s.ok(&[
        "volume",
        "create",
        "-o",
        "type=tmpfs",
        "-o",
        "device=tmpfs",
        "-o",
        "o=size=1m",
        "t",
    ]);
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "-v",
            "t:/t",
            "busybox",
            "sh",
            "-c",
            "grep ' /t ' /proc/mounts | cut -d' ' -f1,3,4"
        ]),
        "tmpfs tmpfs rw,nosuid,nodev,relatime,size=1024k\n"
    );
    assert_eq!(
        s.ok(&["volume", "inspect", "--format", "{{json .Options}}", "t"]),
        "{\"device\":\"tmpfs\",\"o\":\"size=1m\",\"type\":\"tmpfs\"}\n"
    );
    let host = s.path("host");
    fs::create_dir_all(&host).unwrap();
    let dev = format!("device={}", host.display());
    s.ok(&[
        "volume",
        "create",
        "-o",
        "type=none",
        "-o",
        "o=bind",
        "-o",
        &dev,
        "b",
    ]);
    s.ok(&["run", "--rm", "-v", "b:/b", "busybox", "touch", "/b/made"]);
    assert!(host.join("made").is_file());
    let err = s.fails(&[
        "volume",
        "create",
        "-o",
        "type=ext4",
        "-o",
        "device=/dev/sda",
        "x",
    ]);
    assert!(
        err.contains("volume option type \"ext4\" is not supported"),
        "{err}"
    );
}

#[test]
fn ps_templates_know_mounts_networks_and_local_volumes() {
    let s = Strata::new();
    s.busybox();
    let host = s.path("hostdir");
    fs::create_dir_all(&host).unwrap();
    let bind = format!("{}:/h", host.display());
    s.ok(&[
        "run", "--name", "vols", "-v", "data:/d", "-v", &bind, "busybox", "true",
    ]);
    let t = "{{.Names}}|{{.Mounts}}|{{.Networks}}|{{.LocalVolumes}}|{{if eq .State \"exited\"}}done{{end}}";
    let shown = s.ok(&["ps", "-a", "--format", t]);
    let trunc: String = host.display().to_string().chars().take(15).collect();
    assert_eq!(shown, format!("vols|data,{trunc}|bridge|1|done\n"));
    let shown = s.ok(&["ps", "-a", "--no-trunc", "--format", "{{.Mounts}}"]);
    assert_eq!(shown, format!("data,{}\n", host.display()));
}

#[test]
fn a_container_cannot_run_the_runtimes_binary() {
    let s = Strata::new();
    s.busybox();
    // At a script's exec, /proc/self/exe is still the runtime's binary (init's): the kernel
    // runs it as the interpreter, inside the container.
    let ctx = s.path("reenter");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("again"), "#!/proc/self/exe\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY --chmod=755 again /again\n",
    )
    .unwrap();
    s.ok(&["build", "-q", "-t", "reenter", ctx.to_str().unwrap()]);
    for args in [
        vec!["--entrypoint", "/again", "reenter"],
        vec!["reenter", "/again", "--root", "/tmp/x", "images"],
    ] {
        let mut a = vec!["run", "--rm"];
        a.extend(args);
        let o = s.run(&a);
        assert_eq!(o.status.code(), Some(126), "{a:?}");
        assert_eq!(
            out(&o),
            (
                String::new(),
                "strata: this is the container runtime's binary; it does not run inside a container\n".into()
            )
        );
    }
}

#[test]
fn exec_runs_with_the_containers_isolation() {
    let s = Strata::new();
    s.busybox();
    for (name, flags) in [
        ("plain", vec![]),
        ("nnp", vec!["--security-opt", "no-new-privileges"]),
        (
            "dropped",
            vec!["--cap-drop", "CHOWN", "--cap-add", "NET_ADMIN"],
        ),
    ] {
        let mut args = vec!["run", "-d", "--name", name];
        args.extend(flags.iter().copied());
        args.extend([
            "busybox",
            "sh",
            "-c",
            "cat /proc/self/status > /run.status; sleep 60",
        ]);
        s.ok(&args);
        wait_for(
            || {
                s.run(&["exec", name, "test", "-s", "/run.status"])
                    .status
                    .success()
            },
            "the status file",
        );
        let run = isolation(&s.ok(&["exec", name, "cat", "/run.status"]));
        let exec = isolation(&s.ok(&["exec", name, "cat", "/proc/self/status"]));
        assert_eq!(exec, run, "{name}");
        // And what that is: a seccomp filter, no_new_privs as asked, Docker's capabilities.
        assert!(run.contains(&"Seccomp:\t2".to_string()), "{name}: {run:?}");
        let nnp = if name == "nnp" { "1" } else { "0" };
        assert!(
            run.contains(&format!("NoNewPrivs:\t{nnp}")),
            "{name}: {run:?}"
        );
        let eff = match name {
            "dropped" => "CapEff:\t00000000a80435fa",
            _ => "CapEff:\t00000000a80425fb",
        };
        assert!(run.contains(&eff.to_string()), "{name}: {run:?}");
        s.ok(&["rm", "-f", name]);
    }
}
