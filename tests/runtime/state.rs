//! What containers leave and hold: commit, export, diff, limits, ps, cp, volumes, df.

use super::*;

#[test]
fn commit_export_and_diff() {
    let s = Strata::new();
    s.busybox();
    s.ok(&[
        "run",
        "--name",
        "c1",
        "busybox",
        "sh",
        "-c",
        "echo new > /newfile; rm /bin/vi; mkdir /etc/x; echo y > /etc/x/y",
    ]);
    assert_eq!(
        s.ok(&["diff", "c1"]),
        "C /bin\nD /bin/vi\nC /etc\nA /etc/x\nA /etc/x/y\nA /newfile\n"
    );
    let id = s.ok(&[
        "commit",
        "-m",
        "changes",
        "-c",
        "ENV COMMITTED=yes",
        "c1",
        "committed:1",
    ]);
    assert!(id.trim().starts_with("sha256:"));
    let got = s.ok(&[
        "run",
        "--rm",
        "committed:1",
        "sh",
        "-c",
        "cat /newfile /etc/x/y; echo $COMMITTED; test -e /bin/vi || echo vi-gone",
    ]);
    assert_eq!(got, "new\ny\nyes\nvi-gone\n");
    let hist = s.ok(&["history", "committed:1"]);
    assert!(hist.lines().nth(1).unwrap().contains("changes"), "{hist}");
    // the committed layer carries the deletion as a whiteout
    let save = s.path("c.tar");
    s.ok(&["save", "-o", save.to_str().unwrap(), "committed:1"]);
    let listing = sh(&format!(
        "cd {d} && mkdir x && tar -xf {t} -C x && for l in $(python3 -c 'import json;print(\" \".join(json.load(open(\"x/manifest.json\"))[0][\"Layers\"]))'); do tar -tf x/$l; done",
        d = s.dir.path().display(),
        t = save.display()
    ));
    assert!(listing.lines().any(|l| l == "bin/.wh.vi"), "{listing}");
    // export equals the container's view
    let exp = s.path("export.tar");
    s.ok(&["export", "-o", exp.to_str().unwrap(), "c1"]);
    let names = sh(&format!("tar -tf {} | sort", exp.display()));
    assert!(names.lines().any(|l| l == "newfile"));
    assert!(!names.lines().any(|l| l == "bin/vi"));
    assert!(!names.lines().any(|l| l.contains(".wh.")));
    let view = s.ok(&[
        "run",
        "--rm",
        "committed:1",
        "sh",
        "-c",
        "find / -xdev | sort",
    ]);
    let exported: std::collections::BTreeSet<String> = names
        .lines()
        .map(|l| format!("/{}", l.trim_end_matches('/')))
        .collect();
    for p in view.lines().filter(|p| {
        !p.starts_with("/proc") && !p.starts_with("/sys") && !p.starts_with("/dev") && *p != "/"
    }) {
        // What the runtime provides (the init layer), not files of the container's own.
        if p.starts_with("/etc/host") || p == "/etc/resolv.conf" || p == "/etc/mtab" {
            continue;
        }
        assert!(exported.contains(p), "{p} missing from export");
    }
    // interop: umoci's unpacked view of the committed image equals our export of the container
    let layout = s.path("layout");
    fs::create_dir(&layout).unwrap();
    sh(&format!(
        "tar -xf {} -C {}",
        save.display(),
        layout.display()
    ));
    let bundle = s.path("bundle");
    sh(&format!(
        "umoci unpack --image {}:1 {}",
        layout.display(),
        bundle.display()
    ));
    let exported = s.path("exported");
    fs::create_dir(&exported).unwrap();
    sh(&format!(
        "tar -xf {} -C {}",
        exp.display(),
        exported.display()
    ));
    assert_eq!(
        common::tree_listing(&bundle.join("rootfs")),
        common::tree_listing(&exported)
    );
    // an image a container uses cannot be removed
    let err = s.fails(&["rmi", "busybox"]);
    assert!(err.contains("being used by container"), "{err}");
    s.ok(&["rm", "c1"]);
    s.assert_check();
}

#[test]
fn memory_and_pids_limits_are_enforced() {
    let s = Strata::new();
    s.busybox();
    // a fork bomb stops at the pids limit (the shell cannot fork its 30th sleeper)
    let bomb = "for i in $(seq 30); do sleep 2 & done; echo spawned";
    let o = s.run(&[
        "run",
        "--rm",
        "--pids-limit",
        "10",
        "busybox",
        "sh",
        "-c",
        bomb,
    ]);
    assert_ne!(o.status.code(), Some(0), "{:?}", out(&o));
    assert!(out(&o).1.contains("fork"), "{:?}", out(&o));
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "--pids-limit",
            "100",
            "busybox",
            "sh",
            "-c",
            bomb
        ]),
        "spawned\n"
    );
    // a memory hog is OOM-killed under -m
    let o = s.run(&[
        "run",
        "--rm",
        "-m",
        "16m",
        "busybox",
        "sh",
        "-c",
        "x=a; while true; do x=$x$x; done",
    ]);
    assert_eq!(o.status.code(), Some(137), "{:?}", out(&o));
}

/// `ps --filter`, `-n` and `-l` select as Docker's do: stopped containers only with `-a`, a
/// limit, `before`/`since` or a `status` filter; values of one key are alternatives.
#[test]
fn ps_filters_select_as_docker_does() {
    let s = Strata::new();
    s.busybox();
    s.ok(&["run", "--name", "a1", "-l", "app=web", "busybox", "true"]);
    assert_eq!(
        s.run(&["run", "--name", "a2", "busybox", "sh", "-c", "exit 3"])
            .status
            .code(),
        Some(3)
    );
    s.ok(&["create", "--name", "c1", "busybox", "true"]);
    let r1 = s.ok(&[
        "run",
        "-d",
        "--name",
        "r1",
        "-l",
        "app=web",
        "-l",
        "tier=front",
        "busybox",
        "sleep",
        "60",
    ]);
    s.ok(&["run", "-d", "--name", "r2", "busybox", "sleep", "60"]);
    s.ok(&["pause", "r2"]);
    let ps = |args: &[&str]| {
        let mut all = vec!["ps", "--format", "{{.Names}} {{.State}}"];
        all.extend(args);
        s.ok(&all)
    };
    for (args, want) in [
        (&[][..], "r2 paused\nr1 running\n"),
        (
            &["-a"][..],
            "r2 paused\nr1 running\nc1 created\na2 exited\na1 exited\n",
        ),
        (&["-f", "name=a"], ""),
        (&["-a", "-f", "name=^/a1$"], "a1 exited\n"),
        (
            &["-a", "-f", "name=r", "-f", "name=c"],
            "r2 paused\nr1 running\nc1 created\n",
        ),
        (&["-a", "-f", "exited=3"], "a2 exited\n"),
        (&["-a", "-f", "exited=0"], "a1 exited\n"),
        (&["-f", "status=exited"], "a2 exited\na1 exited\n"),
        (
            &["-f", "status=created", "-f", "status=paused"],
            "r2 paused\nc1 created\n",
        ),
        (&["-a", "-f", "label=app=web"], "r1 running\na1 exited\n"),
        (
            &["-f", "label=app", "-f", "label=tier=front"],
            "r1 running\n",
        ),
        (
            &["-a", "-f", "ancestor=busybox", "-f", "status=running"],
            "r1 running\n",
        ),
        (&["-a", "-f", "ancestor=nosuch"], ""),
        (&["-a", "-f", &format!("id={}", &r1[..10])], "r1 running\n"),
        (&["-n", "2"], "r2 paused\nr1 running\n"),
        (&["-l"], "r2 paused\n"),
        (&["-f", "before=c1"], "a2 exited\na1 exited\n"),
        (&["-f", "since=a2"], "r2 paused\nr1 running\nc1 created\n"),
        (&["-f", "since=a1", "-f", "status=exited"], "a2 exited\n"),
    ] {
        assert_eq!(ps(args), want, "ps {args:?}");
    }
    for (args, error) in [
        (
            &["-f", "status=bogus"][..],
            "Error: invalid filter 'status=bogus'\n",
        ),
        (
            &["-f", "exited=x"],
            "Error: invalid filter 'exited=x': not an exit code\n",
        ),
        (&["-f", "foo=1"], "Error: invalid filter 'foo'\n"),
        (
            &["-f", "before=nosuch"],
            "Error: no such container: nosuch\n",
        ),
    ] {
        let mut all = vec!["ps"];
        all.extend(args);
        assert_eq!(s.fails(&all), error, "ps {args:?}");
    }
    s.ok(&["rm", "-f", "r1", "r2"]);
    s.assert_check();
}

/// `cp` both ways, running and stopped, with Docker's rules for what lands where.
#[test]
fn cp_copies_both_ways_with_dockers_rules() {
    let s = Strata::new();
    s.busybox();
    let host = cp_box(&s);
    let at = |name: &str| host.join(name).display().to_string();
    let listing = |name: &str| tree_listing(&host.join(name)).join("\n");

    // Out: a file onto a new name; a directory as a new one; into an existing one; its contents.
    s.ok(&["cp", "box:/data/a.txt", &at("a.txt")]);
    assert_eq!(fs::read_to_string(host.join("a.txt")).unwrap(), "hello\n");
    s.ok(&["cp", "box:/data", &at("new")]);
    let new = listing("new");
    assert!(
        new.contains("./a.txt f 644 0:0 6") && new.contains("./link l 777 0:0 a.txt"),
        "{new}"
    );
    assert!(new.contains("./sub/b f 644 0:0 5"), "{new}");
    fs::create_dir(host.join("existing")).unwrap();
    s.ok(&["cp", "box:/data", &at("existing")]);
    assert_eq!(listing("existing/data"), new);
    fs::create_dir(host.join("contents")).unwrap();
    s.ok(&["cp", "box:/data/.", &at("contents")]);
    assert_eq!(listing("contents"), new);
    // -a keeps the owner; -L copies what a link points to.
    s.ok(&["cp", "-a", "-L", "box:/data/link", &at("followed")]);
    assert_eq!(
        sh(&format!("stat -c '%u:%g %s' {}", at("followed"))).trim(),
        "1000:1000 6"
    );
    // A tar stream out.
    let o = s.cmd(&["cp", "box:/data/sub", "-"]).output().unwrap();
    assert!(o.status.success());
    let tar_path = s.path("sub.tar");
    fs::write(&tar_path, &o.stdout).unwrap();
    assert_eq!(
        sh(&format!("tar tf {}", tar_path.display())),
        "sub/\nsub/b\n"
    );

    // In: a file into a directory; a directory as a new one; a tar stream into a directory.
    fs::write(host.join("in.txt"), "from the host\n").unwrap();
    sh(&format!("chown 1234:1234 {}", at("in.txt")));
    s.ok(&["cp", &at("in.txt"), "box:/data/"]);
    s.ok(&["cp", "-a", &at("in.txt"), "box:/data/kept.txt"]);
    s.ok(&["cp", &at("new"), "box:/copy"]);
    let mut cp_in = s.cmd(&["cp", "-", "box:/tmp"]);
    let o = cp_in
        .stdin(fs::File::open(&tar_path).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", out(&o));
    assert_eq!(
        s.ok(&[
            "exec",
            "box",
            "sh",
            "-c",
            "stat -c '%n %u:%g' /data/in.txt /data/kept.txt; cat /data/in.txt; \
             find /copy /tmp/sub | sort"
        ]),
        "/data/in.txt 0:0\n/data/kept.txt 1234:1234\nfrom the host\n\
         /copy\n/copy/a.txt\n/copy/link\n/copy/sub\n/copy/sub/b\n/tmp/sub\n/tmp/sub/b\n"
    );

    // Stopped: the same through the container's overlay, mounted where only `cp` sees it.
    s.ok(&["stop", "-t", "0", "box"]);
    let mounts = store_mounts(&s);
    s.ok(&["cp", "box:/data/in.txt", &at("from-stopped.txt")]);
    assert_eq!(
        fs::read_to_string(host.join("from-stopped.txt")).unwrap(),
        "from the host\n"
    );
    s.ok(&["cp", &at("a.txt"), "box:/data/later.txt"]);
    assert_eq!(store_mounts(&s), mounts);
    s.ok(&["commit", "box", "boxed"]);
    assert_eq!(
        s.ok(&["run", "--rm", "boxed", "cat", "/data/later.txt"]),
        "hello\n"
    );

    s.ok(&["rm", "box"]);
    s.assert_check();
}

/// A running container `box` with files in /data (a file of uid 1000, a subdirectory, a
/// symlink), and a host directory for `cp`.
fn cp_box(s: &Strata) -> std::path::PathBuf {
    s.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "busybox",
        "sh",
        "-c",
        "mkdir -p /data/sub && echo hello > /data/a.txt && echo deep > /data/sub/b && \
         ln -s a.txt /data/link && chown 1000:1000 /data/a.txt && touch /ready && sleep 60",
    ]);
    wait_for(
        || {
            s.run(&["exec", "box", "test", "-e", "/ready"])
                .status
                .success()
        },
        "the container's files",
    );
    let host = s.path("host");
    fs::create_dir_all(&host).unwrap();
    host
}

/// `cp` errors name the path and side that is wrong, in one line.
#[test]
fn cp_errors_name_the_path_and_the_side() {
    let s = Strata::new();
    s.busybox();
    let host = cp_box(&s);
    let at = |name: &str| host.join(name).display().to_string();
    s.ok(&["cp", "box:/data/a.txt", &at("a.txt")]);
    fs::write(host.join("in.txt"), "from the host\n").unwrap();
    for (args, error) in [
        (
            vec!["cp", "box:/nonexist", "."],
            "Error: box:/nonexist: no such file or directory\n",
        ),
        (
            vec!["cp", "box:/data/a.txt/", "x"],
            "Error: box:/data/a.txt/: not a directory\n",
        ),
        (
            vec!["cp", "a", "b"],
            "Error: must specify at least one container source\n",
        ),
        (
            vec!["cp", "box:/a", "box:/b"],
            "Error: copying between containers is not supported\n",
        ),
        (
            vec!["cp", "nosuch:/a", "."],
            "Error: no such container: nosuch\n",
        ),
    ] {
        assert_eq!(s.fails(&args), error, "{args:?}");
    }
    let err = s.fails(&["cp", "box:/data", &at("a.txt")]);
    assert_eq!(
        err,
        format!(
            "Error: {}: cannot copy a directory to a file\n",
            at("a.txt")
        )
    );
    let err = s.fails(&["cp", &at("in.txt"), "box:/nodir/"]);
    assert!(err.contains("box:/nodir/: no such directory"), "{err}");
    s.ok(&["rm", "-f", "box"]);
    s.assert_check();
}

/// A container's symlinks resolve inside the container, whichever way `cp` goes and whether
/// it runs or not: nothing on the host is read or written through them.
#[test]
fn cp_stays_inside_the_container_whatever_its_symlinks_say() {
    let s = Strata::new();
    s.busybox();
    let host = s.path("host");
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("secret"), "host secret\n").unwrap();
    let script = format!(
        "ln -s / /evil && ln -s {h} /escape && ln -s ../../../../../../../..{h}/secret /rel && \
         echo inside > /inside && touch /ready && sleep 60",
        h = host.display()
    );
    s.ok(&[
        "run", "-d", "--name", "hostile", "busybox", "sh", "-c", &script,
    ]);
    wait_for(
        || {
            s.run(&["exec", "hostile", "test", "-e", "/ready"])
                .status
                .success()
        },
        "the links",
    );
    let at = |name: &str| host.join(name).display().to_string();
    fs::write(host.join("in.txt"), "x\n").unwrap();
    for running in [true, false] {
        s.ok(&["cp", "hostile:/evil/inside", &at("via-evil")]);
        assert_eq!(
            fs::read_to_string(host.join("via-evil")).unwrap(),
            "inside\n"
        );
        let err = s.fails(&["cp", "hostile:/escape/secret", &at("stolen")]);
        assert!(err.contains("no such file or directory"), "{err}");
        let err = s.fails(&["cp", "-L", "hostile:/rel", &at("stolen")]);
        assert!(err.contains("no such file or directory"), "{err}");
        assert!(!host.join("stolen").exists());
        let err = s.fails(&["cp", &at("in.txt"), "hostile:/escape/planted"]);
        assert!(err.contains("no such directory"), "{err}");
        assert!(!host.join("planted").exists(), "running: {running}");
        s.ok(&["cp", &at("in.txt"), "hostile:/evil/tmp/"]);
        if running {
            s.ok(&["stop", "-t", "0", "hostile"]);
        }
    }
    s.ok(&["rm", "hostile"]);
    s.assert_check();
}

/// Named volumes (`-v NAME:/path`, `volume create|ls|inspect|rm|prune`) as Docker's: made on
/// first use, filled from the image on first mount, kept after their containers, never removed
/// while a container uses them; `-v /path` alone is an anonymous volume.
#[test]
fn named_volumes_outlive_their_containers() {
    let s = Strata::new();
    s.busybox();
    assert_eq!(
        s.ok(&["volume", "create", "--label", "team=a", "made"]),
        "made\n"
    );
    // Made by `run`, filled from the image (busybox's /etc) on its first mount.
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "-v",
            "etc:/etc",
            "busybox",
            "sh",
            "-c",
            "test -s /etc/passwd && echo kept > /etc/mine"
        ]),
        ""
    );
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "-v",
            "etc:/x:ro",
            "busybox",
            "sh",
            "-c",
            "cat /x/mine; echo no > /x/other 2>/dev/null || echo read-only"
        ]),
        "kept\nread-only\n"
    );
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "etc\nmade\n");
    assert_eq!(
        s.ok(&[
            "volume",
            "ls",
            "--format",
            "{{.Name}} {{.Labels}}",
            "-f",
            "label=team"
        ]),
        "made team=a\n"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&s.ok(&["volume", "inspect", "etc"])).unwrap();
    let data = inspect[0]["Mountpoint"].as_str().unwrap().to_string();
    assert_eq!(
        s.ok(&["inspect", "--format", "{{.Name}} {{.Driver}}", "etc"]),
        "etc local\n",
        "the generic inspect finds volumes too"
    );
    assert_eq!(
        data,
        s.root().join("volumes/etc/_data").display().to_string()
    );
    assert_eq!(
        fs::read_to_string(format!("{data}/mine")).unwrap(),
        "kept\n"
    );

    let user = s.ok(&[
        "create",
        "--name",
        "user",
        "-v",
        "etc:/data",
        "busybox",
        "true",
    ]);
    assert_eq!(
        s.ok(&["volume", "ls", "-q", "-f", "dangling=true"]),
        "made\n"
    );
    assert_eq!(
        s.fails(&["volume", "rm", "etc"]),
        format!("Error: remove etc: volume is in use - [{}]\n", &user[..12])
    );
    let mounts = s.ok(&["inspect", "--format", "{{json .Mounts}}", "user"]);
    assert!(
        mounts.contains(r#""Name":"etc""#) && mounts.contains(r#""Type":"volume""#),
        "{mounts}"
    );
    s.ok(&["rm", "user"]);
    assert_eq!(
        s.ok(&["volume", "prune", "-f"]),
        "Total reclaimed space: 0B\n"
    );
    assert!(s
        .ok(&["volume", "prune", "-a", "-f"])
        .starts_with("Deleted Volumes:\netc\nmade\n"));
    assert!(!s.root().join("volumes/etc").exists());
    assert_eq!(s.ok(&["volume", "rm", "-f", "etc"]), "");

    assert_eq!(s.ok(&["volume", "ls", "-q"]), "");
    s.assert_check();
}

/// An anonymous volume is mounted empty and goes with its `--rm` container; bad volume names
/// and specifications are one-line errors.
#[test]
fn anonymous_volumes_go_with_their_container_and_bad_names_are_refused() {
    let s = Strata::new();
    s.busybox();
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "-v",
            "/scratch",
            "busybox",
            "sh",
            "-c",
            "grep -c ' /scratch ' /proc/mounts; ls -A /scratch"
        ]),
        "1\n"
    );
    for (args, error) in [
        (
            vec!["volume", "rm", "nosuch"],
            "Error: no such volume: nosuch\n",
        ),
        (
            vec!["volume", "create", "../x"],
            "Error: invalid volume name \"../x\": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed\n",
        ),
        (
            vec!["run", "-v", "a/b:/x", "busybox", "true"],
            "Error: invalid volume specification \"a/b:/x\": \"a/b\" includes invalid characters \
             for a volume name, only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed; a host directory needs \
             an absolute path\n",
        ),
    ] {
        assert_eq!(s.fails(&args), error, "{args:?}");
    }
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "");
    s.assert_check();
}

/// `system df` counts what containers and volumes hold: writable layers (reclaimable when
/// stopped), named volumes (reclaimable when unused) and anonymous ones.
#[test]
fn system_df_measures_containers_and_volumes() {
    let s = Strata::new();
    s.busybox();
    s.ok(&[
        "run",
        "--name",
        "wrote",
        "busybox",
        "sh",
        "-c",
        "head -c 300000 /dev/zero > /z",
    ]);
    s.ok(&[
        "run",
        "--rm",
        "-v",
        "kept:/d",
        "busybox",
        "sh",
        "-c",
        "head -c 100000 /dev/zero > /d/z",
    ]);
    s.ok(&[
        "run",
        "-d",
        "--name",
        "up",
        "-v",
        "/anon",
        "busybox",
        "sh",
        "-c",
        "head -c 20000 /dev/zero > /anon/z; sleep 60",
    ]);
    // Rows with their columns' padding folded (the widths follow the image's size).
    let rows = || -> Vec<String> {
        s.ok(&["system", "df"])
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    wait_for(
        || rows()[3].starts_with("Local Volumes 2 1 120kB"),
        "the anonymous volume's file",
    );
    let rows = rows();
    assert_eq!(rows[0], "TYPE TOTAL ACTIVE SIZE RECLAIMABLE");
    assert!(rows[1].starts_with("Images 1 1 "), "{rows:?}");
    assert_eq!(rows[2], "Containers 2 1 300kB 300kB (100%)");
    assert_eq!(rows[3], "Local Volumes 2 1 120kB 100kB (83%)");
    assert_eq!(rows[4], "Build Cache 0 0 0B 0B");
    // `ps -s`: the writable layer, and with the image under it.
    let size = s.ok(&[
        "ps",
        "-a",
        "-s",
        "-f",
        "name=wrote",
        "--format",
        "{{.Size}}",
    ]);
    assert!(
        size.starts_with("300kB (virtual ") && size.ends_with("MB)\n"),
        "{size}"
    );
    s.ok(&["rm", "-f", "up", "wrote"]);
    s.ok(&["volume", "rm", "kept"]);
    s.assert_check();
}

/// `stats --no-stream` rows as (name, cpu %, memory used in bytes, pids).
fn stats_rows(s: &Strata, names: &[&str]) -> Vec<(String, f64, f64, String)> {
    let mut args = vec![
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.CPUPerc}} {{.MemUsage}} {{.PIDs}}",
    ];
    args.extend_from_slice(names);
    s.ok(&args)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let unit = |v: &str| -> f64 {
                let (num, mult) = [
                    ("GiB", 1u64 << 30),
                    ("MiB", 1 << 20),
                    ("KiB", 1 << 10),
                    ("B", 1),
                ]
                .iter()
                .find_map(|(u, m)| v.strip_suffix(u).map(|n| (n, *m)))
                .unwrap();
                num.parse::<f64>().unwrap() * mult as f64
            };
            (
                f[0].to_string(),
                f[1].trim_end_matches('%').parse().unwrap(),
                unit(f[2]),
                f[5].to_string(),
            )
        })
        .collect()
}

#[test]
fn stats_shows_a_busy_containers_cpu_and_memory_it_allocates() {
    let s = Strata::new();
    s.busybox();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "burn",
        "busybox",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    s.ok(&["run", "-d", "--name", "idle", "busybox", "sleep", "600"]);
    let rows = stats_rows(&s, &["burn", "idle"]);
    assert_eq!(rows[0].0, "burn");
    assert!(rows[0].1 > 30.0, "a busy loop's CPU: {rows:?}");
    assert_eq!(rows[1].0, "idle");
    assert!(rows[1].1 < 10.0, "an idle container's CPU: {rows:?}");
    assert_eq!(rows[1].3, "1");
    let before = rows[1].2;
    s.ok(&[
        "exec",
        "idle",
        "sh",
        "-c",
        "head -c 30000000 /dev/zero > /dev/shm/fill",
    ]);
    let after = stats_rows(&s, &["idle"])[0].2;
    assert!(
        after - before > 25e6,
        "memory grows by what it holds: {before} -> {after}"
    );
    // Docker's columns; a stopped container named shows zeros.
    s.ok(&["stop", "-t", "0", "burn"]);
    let table = s.ok(&["stats", "--no-stream", "burn"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        "CONTAINER ID   NAME   CPU %   MEM USAGE / LIMIT   MEM %   NET I/O   BLOCK I/O   PIDS"
    );
    assert!(
        lines[1].ends_with("burn   0.00%   0B / 0B             0.00%   0B / 0B   0B / 0B     0"),
        "{table}"
    );
    s.ok(&["rm", "-f", "burn", "idle"]);
    s.assert_check();
}

#[test]
fn update_changes_a_running_containers_limits_and_its_record() {
    let s = Strata::new();
    s.busybox();
    s.ok(&["run", "-d", "--name", "up", "busybox", "sleep", "600"]);
    let fill = "head -c 20000000 /dev/zero > /dev/shm/fill && rm /dev/shm/fill && echo held";
    assert_eq!(s.ok(&["exec", "up", "sh", "-c", fill]), "held\n");
    assert_eq!(
        s.ok(&[
            "update",
            "--memory",
            "16m",
            "--pids-limit",
            "50",
            "--restart",
            "on-failure:2",
            "up"
        ]),
        "up\n"
    );
    let out = s.run(&["exec", "up", "sh", "-c", fill]);
    assert!(!out.status.success(), "20 MB no longer fit in 16 MiB");
    assert_eq!(
        s.ok(&[
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}} {{.HostConfig.RestartPolicy.Name}}",
            "up"
        ]),
        "16777216 50 on-failure\n"
    );
    s.ok(&["update", "--cpus", "0.5", "--cpu-shares", "512", "up"]);
    assert_eq!(
        s.ok(&[
            "inspect",
            "-f",
            "{{.HostConfig.NanoCpus}} {{.HostConfig.CpuShares}}",
            "up"
        ]),
        "500000000 512\n"
    );
    assert_eq!(s.ok(&["wait", "--condition", "running", "up"]), "");
    let err = s.fails(&["update", "--memory", "64m", "nothere"]);
    assert_eq!(
        err,
        "Error: cannot update container nothere: no such container: nothere\n"
    );
    // A restart policy given to a running container applies when it exits.
    s.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "busybox",
        "sh",
        "-c",
        "sleep 2; exit 3",
    ]);
    s.ok(&["update", "--restart", "on-failure:1", "flaky"]);
    wait_for(
        || s.ok(&["inspect", "-f", "{{.RestartCount}}", "flaky"]) == "1\n",
        "the restart the updated policy makes",
    );
    // `wait --condition removed` returns once a --rm container is gone, with its code.
    s.ok(&[
        "run",
        "-d",
        "--rm",
        "--name",
        "brief",
        "busybox",
        "sh",
        "-c",
        "sleep 0.5; exit 4",
    ]);
    assert_eq!(s.ok(&["wait", "--condition", "removed", "brief"]), "4\n");
    s.ok(&["rm", "-f", "up", "flaky"]);
    s.assert_check();
}

#[test]
fn a_failing_health_check_turns_unhealthy_after_its_retries_and_healthy_again() {
    let s = Strata::new();
    s.busybox();
    let t0 = unix_now();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "hc",
        "--health-cmd",
        "test -e /tmp/ok",
        "--health-interval",
        "100ms",
        "--health-retries",
        "2",
        "busybox",
        "sleep",
        "600",
    ]);
    let status = || s.ok(&["ps", "--format", "{{.Status}}", "-f", "name=hc"]);
    assert!(status().ends_with("(health: starting)\n"), "{}", status());
    assert_eq!(s.ok(&["wait", "--condition", "unhealthy", "hc"]), "");
    assert!(status().ends_with("(unhealthy)\n"), "{}", status());
    assert_eq!(s.ok(&["ps", "-q", "-f", "health=unhealthy"]).len(), 13);
    assert_eq!(s.ok(&["ps", "-q", "-f", "health=healthy"]), "");
    let streak: u32 = s
        .ok(&["inspect", "-f", "{{.State.Health.FailingStreak}}", "hc"])
        .trim()
        .parse()
        .unwrap();
    assert!(streak >= 2, "{streak}");
    s.ok(&["exec", "hc", "touch", "/tmp/ok"]);
    assert_eq!(s.ok(&["wait", "--condition", "healthy", "hc"]), "");
    assert!(status().ends_with("(healthy)\n"), "{}", status());
    let err = s.fails(&["wait", "--condition", "sleepy", "hc"]);
    assert_eq!(
        err,
        "Error: invalid --condition \"sleepy\": not-running, removed, running, paused, healthy or unhealthy\n"
    );
    let log = s.ok(&[
        "inspect",
        "-f",
        "{{len .State.Health.Log}} {{.State.Health.FailingStreak}}",
        "hc",
    ]);
    assert!(
        log.ends_with(" 0\n") && log.split(' ').next().unwrap().parse::<usize>().unwrap() <= 5,
        "{log}"
    );
    let events = s.ok(&[
        "events",
        "--since",
        &t0,
        "--until",
        "0s",
        "-f",
        "event=health_status",
        "--format",
        "{{.Action}}",
    ]);
    assert_eq!(events, "health_status: unhealthy\nhealth_status: healthy\n");
    // An image's HEALTHCHECK, and --no-healthcheck.
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nHEALTHCHECK --interval=100ms CMD true\n",
    )
    .unwrap();
    s.ok(&["build", "-q", "-t", "checked", ctx.path().to_str().unwrap()]);
    s.ok(&["run", "-d", "--name", "img", "checked", "sleep", "600"]);
    s.ok(&[
        "run",
        "-d",
        "--name",
        "off",
        "--no-healthcheck",
        "checked",
        "sleep",
        "600",
    ]);
    wait_for(
        || {
            s.ok(&["ps", "--format", "{{.Status}}", "-f", "name=img"])
                .ends_with("(healthy)\n")
        },
        "the image's check",
    );
    assert!(!s
        .ok(&["ps", "--format", "{{.Status}}", "-f", "name=off"])
        .contains('('));
    assert_eq!(
        s.ok(&["inspect", "-f", "{{json .State.Health}}", "off"]),
        "null\n"
    );
    s.ok(&["rm", "-f", "hc", "img", "off"]);
    s.assert_check();
}
