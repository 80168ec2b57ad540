//! Concurrency, crashes, recording, heredocs, reproducibility, outputs, RUN --mount.

use super::*;

#[test]
fn concurrent_builds_share_one_store() {
    let s = Strata::new();
    s.busybox();
    let same = ctx_with(
        &s,
        "same",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN echo same > /s\nRUN sleep 0.2\n",
        )],
    );
    let mut children = Vec::new();
    for _ in 0..2 {
        children.push(
            s.cmd(&["build", "-q", &same])
                .stderr(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    for i in 0..8 {
        let ctx = ctx_with(
            &s,
            &format!("b{i}"),
            &[
                (
                    "Dockerfile",
                    &format!("FROM busybox\nRUN echo {i} > /n\nCOPY f /f\n"),
                ),
                ("f", &i.to_string()),
            ],
        );
        children.push(
            s.cmd(&["build", "-q", "-t", &format!("b{i}"), &ctx])
                .stderr(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    for i in 0..8 {
        assert_eq!(
            s.ok(&["run", "--rm", &format!("b{i}"), "cat", "/n", "/f"]),
            format!("{i}\n{i}")
        );
    }
    s.assert_check();
}

#[test]
fn builder_prune_and_du() {
    let s = Strata::new();
    s.busybox();
    let ctx = ctx_with(
        &s,
        "p",
        &[("Dockerfile", "FROM busybox\nRUN echo x > /x\n")],
    );
    build(&s, &ctx, &[]);
    assert!(s.ok(&["builder", "du"]).lines().count() >= 2);
    s.ok(&["builder", "prune", "-a", "-f"]);
    let (_, p) = build(&s, &ctx, &[]);
    assert_eq!(cached_steps(&p), 0, "{p}");
    s.assert_check();
}

#[test]
fn a_killed_build_leaves_nothing_half_written() {
    let s = Strata::new();
    s.busybox();
    let ctx = ctx_with(
        &s,
        "killed",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN echo first > /first\nRUN sleep 3 && echo late > /late\n",
        )],
    );
    let mut child = s
        .cmd(&["build", "-t", "killed", &ctx])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the first RUN is recorded (its cache record is written), while the second
    // still sleeps: waiting for that rather than a fixed time keeps a loaded machine from
    // killing the build before the first step is in.
    let recorded = || {
        std::fs::read_dir(s.root().join("buildcache")).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "json"))
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !recorded() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first RUN was never recorded"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    assert_eq!(
        s.ok(&["images", "-q", "killed"]).trim(),
        "",
        "a killed build tagged its image"
    );
    s.assert_check();
    // the orphaned RUN finishes on its own (its monitor exits); then a retry builds and tags
    common::wait_for_no_process_of(&s.root());
    let (_, p) = build(&s, &ctx, &["-t", "killed"]);
    assert_eq!(cached_steps(&p), 1, "{p}");
    assert_eq!(
        s.ok(&["run", "--rm", "killed", "cat", "/first", "/late"]),
        "first\nlate\n"
    );
    s.ok(&["system", "prune", "-f"]);
    s.assert_check();
}

#[test]
fn later_steps_run_on_layers_still_being_recorded() {
    // Each layer is hashed and moved into the store while the next steps already run on it:
    // the small first layer is recorded (moved) while the second step sleeps, before the third
    // mounts it; the large second one is still being hashed when the steps after it mount it.
    let s = Strata::new();
    s.busybox();
    let df = "FROM busybox\n\
        RUN echo one > /one\n\
        RUN sleep 0.5 && dd if=/dev/zero of=/big bs=1M count=96 2>/dev/null\n\
        RUN test -s /big && cat /one > /seen\n\
        ENV STAGE=two\n\
        COPY a.txt /a.txt\n\
        RUN cat /seen /a.txt > /both && rm /one\n\
        RUN ls / > /listing\n";
    let ctx = ctx_with(
        &s,
        "pending",
        &[("Dockerfile", df), ("a.txt", "from the context\n")],
    );
    build(&s, &ctx, &["-t", "pending"]);
    let script = "cat /both; echo $STAGE; test ! -e /one && wc -c < /big";
    assert_eq!(
        s.ok(&["run", "--rm", "pending", "sh", "-c", script]),
        "one\nfrom the context\ntwo\n100663296\n"
    );
    s.assert_check();
    let id = s.ok(&["images", "-q", "--no-trunc", "pending"]);
    let (_, p) = build(&s, &ctx, &["-t", "pending"]);
    assert_eq!(cached_steps(&p), 7, "{p}");
    assert_eq!(s.ok(&["images", "-q", "--no-trunc", "pending"]), id);
    // nothing of the pending directories is left behind
    let tmp = fs::read_dir(s.root().join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(tmp, 0, "leftovers in tmp/");
}

#[test]
fn heredocs_in_run_and_copy() {
    let s = Strata::new();
    s.busybox();
    let df = "FROM busybox\nARG WHO=world\nENV GREETING=hello\nRUN <<EOF\necho \"$GREETING $WHO\" > /greeting\necho second line >> /greeting\nEOF\nRUN cat <<-END > /chomped\n\tindented\n\tEND\nRUN <<'EOF'\n#!/bin/sh -e\necho \"script via #!\" > /script\nEOF\nCOPY <<EOF /etc/app.conf\nuser=$WHO\nEOF\nCOPY <<'RAW' <<OTHER /docs/\nliteral $WHO\nRAW\nexpanded $WHO\nOTHER\n";
    let ctx = ctx_with(&s, "heredoc", &[("Dockerfile", df)]);
    build(&s, &ctx, &["-t", "hd", "--build-arg", "WHO=strata"]);
    let got = s.ok(&[
        "run",
        "--rm",
        "hd",
        "sh",
        "-c",
        "cat /greeting /chomped /script /etc/app.conf /docs/RAW /docs/OTHER; ls /tmp | wc -l",
    ]);
    assert_eq!(got, "hello strata\nsecond line\nindented\nscript via #!\nuser=strata\nliteral $WHO\nexpanded strata\n0\n");
    let (_, p) = build(&s, &ctx, &["-t", "hd", "--build-arg", "WHO=strata"]);
    assert_eq!(cached_steps(&p), 6, "{p}");
    let bad = ctx_with(
        &s,
        "unterminated",
        &[("Dockerfile", "FROM busybox\nRUN <<EOF\necho\n")],
    );
    assert_eq!(
        s.fails(&["build", &bad]),
        format!("Error: {bad}/Dockerfile:2:1: unterminated heredoc \"EOF\": no line \"EOF\" before the end of the file\n")
    );
}

#[test]
fn reproducible_builds_with_source_date_epoch() {
    // Two stores with the same base image (loaded from one archive), built at different times.
    let base = Strata::new();
    base.busybox();
    let archive = base.path("busybox.tar");
    base.ok(&["save", "-o", archive.to_str().unwrap(), "busybox"]);
    // (The `rm` leaves a whiteout: its time must be clamped and kept like any other.)
    let df = "FROM busybox\nRUN echo built > /built && mkdir -p /var/x && touch /var/x/stamp && rm /bin/vi\nCOPY app.txt /app/\nENV V=1\nCMD [\"cat\", \"/app/app.txt\"]\n";
    let mut ids = Vec::new();
    let mut digests = Vec::new();
    for (i, round) in ["a", "b"].iter().enumerate() {
        if i == 1 {
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        let s = Strata::new();
        s.ok(&["load", "-i", archive.to_str().unwrap()]);
        let ctx = ctx_with(&s, round, &[("Dockerfile", df), ("app.txt", "app\n")]);
        let mut results = Vec::new();
        for c in ["gzip", "zstd"] {
            let out = s.path(&format!("out-{c}.tar"));
            let o = s
                .cmd(&[
                    "build",
                    "-q",
                    "-o",
                    &format!("type=oci,dest={},compression={c}", out.display()),
                    &ctx,
                ])
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            ids.push(String::from_utf8(o.stdout).unwrap().trim().to_string());
            let idx: serde_json::Value = serde_json::from_str(&common::sh(&format!(
                "tar -xOf {} index.json",
                out.display()
            )))
            .unwrap();
            results.push(idx["manifests"][0]["digest"].as_str().unwrap().to_string());
        }
        digests.push(results);
        // the config carries the epoch
        let created = s.ok(&["inspect", "--format", "{{.Created}}", &ids[ids.len() - 1]]);
        assert_eq!(created.trim(), "2023-11-14T22:13:20Z");
    }
    assert_eq!(ids[0], ids[2], "image IDs differ between stores");
    assert_eq!(
        digests[0], digests[1],
        "manifest digests differ between stores"
    );
    assert_ne!(
        digests[0][0], digests[0][1],
        "gzip and zstd manifests must differ"
    );
    // a changed source changes the result
    let s = Strata::new();
    s.ok(&["load", "-i", archive.to_str().unwrap()]);
    let ctx = ctx_with(&s, "changed", &[("Dockerfile", df), ("app.txt", "other\n")]);
    let o = s
        .cmd(&[
            "build",
            "-q",
            "--build-arg",
            "SOURCE_DATE_EPOCH=1700000000",
            &ctx,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let changed = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(
        changed.starts_with("sha256:") && changed.len() == 71,
        "{changed:?}"
    );
    assert_ne!(changed, ids[0]);
}

#[test]
fn outputs_tar_local_and_docker() {
    let s = Strata::new();
    s.busybox();
    let ctx = ctx_with(
        &s,
        "out",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN echo x > /x && rm /bin/vi\n",
        )],
    );
    let tar = s.path("fs.tar");
    build(
        &s,
        &ctx,
        &["-o", &format!("type=tar,dest={}", tar.display())],
    );
    let names = common::sh(&format!("tar -tf {}", tar.display()));
    assert!(
        names.lines().any(|l| l == "x")
            && !names.lines().any(|l| l == "bin/vi" || l.contains(".wh.")),
        "{names}"
    );
    let dir = s.path("local");
    build(&s, &ctx, &["-o", dir.to_str().unwrap()]);
    assert_eq!(fs::read_to_string(dir.join("x")).unwrap(), "x\n");
    assert!(!dir.join("bin/vi").exists());
    let docker = s.path("docker.tar");
    build(
        &s,
        &ctx,
        &[
            "-t",
            "named:1",
            "-o",
            &format!("type=docker,dest={}", docker.display()),
        ],
    );
    let t = Strata::new();
    assert_eq!(
        t.ok(&["load", "-i", docker.to_str().unwrap()]).trim(),
        "Loaded image: named:1"
    );
    assert_eq!(
        s.ok(&["images", "-q", "named"]).trim(),
        "",
        "-o type=docker must not tag the store"
    );
    let err = s.fails(&["build", "-o", "type=bogus,dest=x", &ctx]);
    assert!(err.contains("unknown output type"), "{err}");
}

#[test]
fn run_mount_cache_persists_and_stays_out_of_layers() {
    let s = Strata::new();
    s.busybox();
    let ctx = ctx_with(
        &s,
        "cache",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN --mount=type=cache,target=/var/cache/app,uid=1000,mode=0700 \\\n    echo run >> /var/cache/app/log && wc -l < /var/cache/app/log > /count && stat -c '%u %a' /var/cache/app > /owner\n",
        )],
    );
    for expected in ["1", "2"] {
        build(&s, &ctx, &["--no-cache", "-t", "c"]);
        assert_eq!(
            s.ok(&["run", "--rm", "c", "cat", "/count"]).trim(),
            expected
        );
    }
    assert_eq!(
        s.ok(&["run", "--rm", "c", "cat", "/owner"]).trim(),
        "1000 700"
    );
    // Neither the target nor its parents (absent from busybox) are in the layer.
    assert_eq!(top_layer_paths(&s, "c", 1), "count\nowner\n");
    // Without an id= the target is the id; `builder du` lists the mount with its size.
    let du = s.ok(&["builder", "du"]);
    assert!(du.contains("cache mount /var/cache/app"), "{du}");
    let out = s.ok(&["builder", "prune", "-a"]);
    assert!(out.contains("Deleted cache mounts: 1"), "{out}");
    build(&s, &ctx, &["--no-cache", "-t", "c"]);
    assert_eq!(s.ok(&["run", "--rm", "c", "cat", "/count"]).trim(), "1");
    s.assert_check();
}

#[test]
fn run_mount_bind_tmpfs_and_security() {
    let s = Strata::new();
    s.busybox();
    let ctx = ctx_with(
        &s,
        "bind",
        &[
            ("src/a.txt", "from context\n"),
            ("secret.key", "ignored by .dockerignore\n"),
            (".dockerignore", "secret.key\n"),
            (
                "Dockerfile",
                "FROM busybox AS base\nRUN mkdir /data && echo from stage > /data/x\n\
                 FROM busybox\n\
                 RUN --mount=type=bind,target=/ctx ls /ctx | sort > /listing\n\
                 RUN --mount=type=bind,source=src/a.txt,target=/a cat /a > /copied\n\
                 RUN --mount=type=bind,from=base,source=/data,target=/b,rw echo scribble > /b/y && cat /b/x > /fromstage\n\
                 RUN --mount=type=bind,from=base,source=/data,target=/b ls /b > /after\n\
                 RUN --mount=type=tmpfs,target=/t,size=1m df -k /t | tail -1 | awk '{print $2}' > /tsize\n\
                 RUN --mount=type=bind,source=src,target=/ro sh -c 'touch /ro/z 2>/dev/null && echo writable || echo read-only' > /ro-state\n",
            ),
        ],
    );
    build(&s, &ctx, &["-t", "b"]);
    let got = s.ok(&[
        "run",
        "--rm",
        "b",
        "cat",
        "/listing",
        "/copied",
        "/fromstage",
        "/after",
        "/tsize",
        "/ro-state",
    ]);
    assert_eq!(
        got,
        "Dockerfile\nsrc\nfrom context\nfrom stage\nx\n1024\nread-only\n"
    );
    assert_eq!(
        top_layer_paths(&s, "b", 6),
        "after\ncopied\nfromstage\nlisting\nro-state\ntsize\n"
    );
    // A bind of the context is part of the key: changing a file reruns the steps that bind it
    // (the first binds the whole context), not the stage that does not.
    fs::write(format!("{ctx}/src/a.txt"), "changed\n").unwrap();
    let (_, progress) = build(&s, &ctx, &["-t", "b"]);
    assert_eq!(cached_steps(&progress), 1, "{progress}");
    assert_eq!(s.ok(&["run", "--rm", "b", "cat", "/copied"]), "changed\n");

    // --security=insecure needs --allow security.insecure, and then runs privileged.
    let ctx2 = ctx_with(
        &s,
        "insecure",
        &[("Dockerfile", "FROM busybox\nRUN --security=insecure mkdir /m && mount -t tmpfs none /m && echo mounted > /ok\n")],
    );
    let err = s.fails(&["build", &ctx2]);
    assert!(err.contains("--allow security.insecure"), "{err}");
    build(&s, &ctx2, &["--allow", "security.insecure", "-t", "i"]);
    assert_eq!(s.ok(&["run", "--rm", "i", "cat", "/ok"]), "mounted\n");
    s.assert_check();
}

#[test]
fn run_mount_secrets_never_reach_the_image_or_the_cache() {
    let s = Strata::new();
    s.busybox();
    let secret = "s3cr3t-VALUE-8c1d";
    let file = s.path("token");
    fs::write(&file, secret).unwrap();
    let ctx = ctx_with(
        &s,
        "secret",
        &[(
            "Dockerfile",
            "FROM busybox\n\
             RUN --mount=type=secret,id=tok grep -q VALUE /run/secrets/tok && stat -c '%a %u' /run/secrets/tok > /perm\n\
             RUN --mount=type=secret,id=tok,env=TOKEN,target=/etc/tok,mode=0440,uid=7 sh -c 'test \"${#TOKEN}\" = 17 && stat -c \"%a %u\" /etc/tok > /perm2'\n\
             RUN --mount=type=secret,id=absent echo optional secrets may be missing > /opt\n",
        )],
    );
    let src = format!("id=tok,src={}", file.display());
    build(&s, &ctx, &["--secret", &src, "-t", "sec"]);
    assert_eq!(
        s.ok(&["run", "--rm", "sec", "cat", "/perm", "/perm2"]),
        "400 0\n440 7\n"
    );
    assert_eq!(top_layer_paths(&s, "sec", 3), "opt\nperm\nperm2\n");
    let all = everything_in(&s, "sec");
    assert!(
        !all.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret is in the saved image"
    );
    let inspect = s.ok(&["image", "inspect", "sec"]);
    assert!(!inspect.contains(secret));
    let store_hits = common::sh(&format!(
        "grep -rl -- {secret} {} 2>/dev/null || true",
        s.root().display()
    ));
    assert_eq!(store_hits, "", "the secret is in the store");

    // The value is not in the key: another value still hits the cache.
    fs::write(&file, "another").unwrap();
    let (_, progress) = build(&s, &ctx, &["--secret", &src, "-t", "sec"]);
    assert_eq!(cached_steps(&progress), 3, "{progress}");

    let required = ctx_with(
        &s,
        "required",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN --mount=type=secret,id=nope,required true\n",
        )],
    );
    let err = build_fails(&s, &["build", &required]);
    assert!(err.contains("secret nope: not provided"), "{err}");
    let err = s.fails(&["build", "--secret", "id=x,src=/nonexistent/file", &required]);
    assert!(err.contains("/nonexistent/file"), "{err}");
    s.assert_check();
}

#[test]
fn run_mount_ssh_forwards_the_agent_socket() {
    let s = Strata::new();
    s.busybox();
    let sock = s.path("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let ctx = ctx_with(
        &s,
        "ssh",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo $SSH_AUTH_SOCK > /sock\n\
             RUN --mount=type=ssh,uid=65534,gid=65534,mode=0600 stat -c '%u %g %a' \"$SSH_AUTH_SOCK\" > /perm\n",
        )],
    );
    let err = s.fails(&[
        "build",
        "--ssh",
        &format!("default={}", s.path("token").display()),
        &ctx,
    ]);
    assert!(err.contains("--ssh default="), "{err}");
    build(
        &s,
        &ctx,
        &["--ssh", &format!("default={}", sock.display()), "-t", "ssh"],
    );
    assert_eq!(
        s.ok(&["run", "--rm", "ssh", "cat", "/sock"]),
        "/run/buildkit/ssh_agent.0\n"
    );
    // The step's socket is a relay of the agent with the owner and mode it asked for.
    assert_eq!(
        s.ok(&["run", "--rm", "ssh", "cat", "/perm"]),
        "65534 65534 600\n"
    );
    assert_eq!(top_layer_paths(&s, "ssh", 2), "perm\nsock\n");
}
