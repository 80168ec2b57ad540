//! Checks, the cache, stages, COPY/ADD semantics, failures.

use super::*;

#[test]
fn check_accepts_a_valid_dockerfile() {
    let s = Strata::new();
    let ctx = context(&s, "# syntax=docker/dockerfile:1\nFROM busybox AS base\nRUN echo hi\nFROM base\nCOPY --from=base /a /b\n");
    assert_eq!(
        s.ok(&["build", "--check", &ctx]).trim(),
        "Check complete, no warnings found."
    );
}

#[test]
fn check_reports_errors_with_line_and_caret() {
    let s = Strata::new();
    let ctx = context(&s, "FROM busybox\nCOPY --chmod=64a a b\n");
    let o = s.run(&["build", "--check", &ctx]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    let df = format!("{ctx}/Dockerfile");
    assert!(
        err.starts_with(&format!(
            "{df}:2:6: invalid chmod value \"64a\"\n   2 | COPY --chmod=64a a b\n            ^\n"
        )),
        "{err}"
    );
    for (text, expect) in [
        (
            "FROM busybox\nFNTRYPOINT [\"sh\"]\n",
            "2:1: unknown instruction: FNTRYPOINT (did you mean ENTRYPOINT?)",
        ),
        ("RUN true\n", "1:1: no build stage in current context"),
        ("FROM UPPER/Case\n", "must be lowercase"),
        (
            "FROM busybox\nCOPY --from=$X a b\n",
            "variable expansion is not supported for --from",
        ),
        ("FROM busybox AS 9x\n", "invalid name for build stage"),
        ("FROM busybox\nRUN <<EOF\necho\n", "unterminated heredoc"),
        (
            "FROM a AS x\nCOPY --from=y a b\nFROM b AS y\nCOPY --from=x a b\n",
            "circular dependency",
        ),
        ("ARG FOO=${FOO:?msg}\nFROM busybox\n", "FOO: msg"),
        (
            "FROM busybox\nRUN --mount=type=cache,id=../../x,target=/x true\n",
            "'..'",
        ),
        (
            "FROM busybox\nRUN --mount=type=cache,target=/x,colour=red true\n",
            "unexpected key 'colour'",
        ),
        ("", "file with no instructions"),
    ] {
        fs::write(format!("{ctx}/Dockerfile"), text).unwrap();
        let o = s.run(&["build", "--check", &ctx]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{text:?}");
        assert!(err.contains(expect), "{text:?}: {err}");
    }
}

#[test]
fn check_handles_huge_dockerfiles_in_bounded_time() {
    let s = Strata::new();
    let mut df = String::from("FROM busybox\n");
    for i in 0..100_000 {
        df.push_str(&format!("ENV V{i}=x\n"));
    }
    let ctx = context(&s, &df);
    let t = std::time::Instant::now();
    s.ok(&["build", "--check", &ctx]);
    // Generous bound: this guards against quadratic behaviour, not speed.
    assert!(t.elapsed().as_secs() < 20, "{:?}", t.elapsed());
    let long = format!("FROM busybox\nRUN echo {}\n", "x".repeat(1 << 20));
    fs::write(format!("{ctx}/Dockerfile"), long).unwrap();
    let o = s.run(&["build", "--check", &ctx]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("2:1: dockerfile line greater than max allowed size"),
        "{err}"
    );
    assert!(err.len() < 1000, "the whole long line was printed");
}

#[test]
fn cold_warm_and_incremental_builds_use_the_cache() {
    let s = Strata::new();
    s.busybox();
    let ctx = ctx_with(&s, "small", &[
        ("Dockerfile", "FROM busybox\nRUN echo one > /one\nCOPY a.txt /a.txt\nRUN cat /a.txt /one > /both\nCMD [\"cat\",\"/both\"]\n"),
        ("a.txt", "aaa\n"),
    ]);
    let (_, cold) = build(&s, &ctx, &["-t", "small"]);
    assert_eq!(cached_steps(&cold), 0, "{cold}");
    let id1 = s.ok(&["images", "-q", "--no-trunc", "small"]);
    assert_eq!(s.ok(&["run", "--rm", "small"]), "aaa\none\n");
    let (_, warm) = build(&s, &ctx, &["-t", "small"]);
    assert_eq!(cached_steps(&warm), 4, "{warm}");
    assert_eq!(
        s.ok(&["images", "-q", "--no-trunc", "small"]),
        id1,
        "a fully cached build must give the same image"
    );
    fs::write(format!("{ctx}/a.txt"), "bbb\n").unwrap();
    let dry = s.ok(&["build", "--dry-run", &ctx]);
    assert!(dry.contains("CACHED RUN echo one"), "{dry}");
    assert!(dry.contains("source files changed: a.txt"), "{dry}");
    let (_, incr) = build(&s, &ctx, &["-t", "small"]);
    assert_eq!(cached_steps(&incr), 1, "{incr}");
    assert_eq!(s.ok(&["run", "--rm", "small"]), "bbb\none\n");
    // an unchanged rebuild after --no-cache runs everything again
    let (_, nc) = build(&s, &ctx, &["--no-cache", "-t", "small2"]);
    assert_eq!(cached_steps(&nc), 0, "{nc}");
    s.assert_check();
}

#[test]
fn dry_run_names_the_field_of_the_key_that_changed() {
    let s = Strata::new();
    s.busybox();
    let df = "FROM busybox\nARG V=1\nRUN echo $V\nRUN --mount=type=tmpfs,target=/t true\n";
    let ctx = ctx_with(&s, "why", &[("Dockerfile", df)]);
    build(&s, &ctx, &["-t", "why"]);
    let dry = s.ok(&["build", "--dry-run", "--build-arg", "V=2", &ctx]);
    assert!(
        dry_run_line(&dry, "RUN echo $V").ends_with("(env/arg changed: V)"),
        "{dry}"
    );
    assert!(
        dry_run_line(&dry, "RUN --mount").ends_with("(an earlier step runs)"),
        "{dry}"
    );
    // A field that entered keys later (the mounts) explains a miss like the others.
    fs::write(format!("{ctx}/Dockerfile"), df.replace("/t", "/u")).unwrap();
    let dry = s.ok(&["build", "--dry-run", &ctx]);
    assert!(
        dry_run_line(&dry, "RUN echo $V").contains("CACHED"),
        "{dry}"
    );
    assert!(
        dry_run_line(&dry, "RUN --mount").ends_with("(mounts changed)"),
        "{dry}"
    );
    // `builder prune -a` takes the remembered inputs with the records.
    s.ok(&["builder", "prune", "-a", "-f"]);
    assert!(!s.root().join("buildcache/steps").exists());
    let dry = s.ok(&["build", "--dry-run", &ctx]);
    assert!(
        dry_run_line(&dry, "RUN echo $V").ends_with("(no earlier build of this step)"),
        "{dry}"
    );
    s.assert_check();
}

#[test]
fn metadata_instructions_reach_the_config() {
    let s = Strata::new();
    s.busybox();
    let ctx = ctx_with(&s, "meta", &[(
        "Dockerfile",
        "ARG BASE=busybox\nFROM ${BASE}\nARG VERSION=1.0\nENV APP_VERSION=$VERSION OTHER=\"two words\"\nLABEL org.example.version=$VERSION maintainer=\"me\"\nEXPOSE 8080 53/udp\nVOLUME /data\nWORKDIR /srv\nWORKDIR app\nUSER nobody\nSTOPSIGNAL SIGINT\nHEALTHCHECK --interval=5s --retries=2 CMD wget -q -O- localhost || exit 1\nONBUILD RUN echo triggered > /tmp/onbuild\nSHELL [\"/bin/sh\", \"-xc\"]\nENTRYPOINT [\"/bin/echo\"]\nCMD [\"hello\"]\n",
    )]);
    build(
        &s,
        &ctx,
        &[
            "-t",
            "meta",
            "--build-arg",
            "VERSION=2.0",
            "--label",
            "cli=yes",
        ],
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&s.ok(&["inspect", "--format", "{{json .Config}}", "meta"])).unwrap();
    assert_eq!(
        cfg["Env"],
        serde_json::json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "APP_VERSION=2.0",
            "OTHER=two words"
        ])
    );
    assert_eq!(cfg["Labels"]["org.example.version"], "2.0");
    assert_eq!(cfg["Labels"]["maintainer"], "me");
    assert_eq!(cfg["Labels"]["cli"], "yes");
    assert!(
        cfg["ExposedPorts"]["8080/tcp"].is_object() && cfg["ExposedPorts"]["53/udp"].is_object()
    );
    assert!(cfg["Volumes"]["/data"].is_object());
    assert_eq!(cfg["WorkingDir"], "/srv/app");
    assert_eq!(cfg["User"], "nobody");
    assert_eq!(cfg["StopSignal"], "SIGINT");
    assert_eq!(
        cfg["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "wget -q -O- localhost || exit 1"])
    );
    assert_eq!(cfg["Healthcheck"]["Interval"], 5_000_000_000i64);
    assert_eq!(
        cfg["OnBuild"],
        serde_json::json!(["RUN echo triggered > /tmp/onbuild"])
    );
    assert_eq!(cfg["Shell"], serde_json::json!(["/bin/sh", "-xc"]));
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["/bin/echo"]));
    assert_eq!(cfg["Cmd"], serde_json::json!(["hello"]));
    assert_eq!(s.ok(&["run", "--rm", "meta"]), "hello\n");
    let hist = s.ok(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}",
        "meta",
    ]);
    assert!(
        hist.contains("ENV APP_VERSION=2.0 OTHER=two words"),
        "{hist}"
    );
    // ONBUILD triggers run in the child build
    let child = ctx_with(
        &s,
        "child",
        &[(
            "Dockerfile",
            "FROM meta\nUSER root\nRUN test -f /tmp/onbuild\n",
        )],
    );
    build(&s, &child, &["-t", "child"]);
    let cfg: serde_json::Value =
        serde_json::from_str(&s.ok(&["inspect", "--format", "{{json .Config}}", "child"])).unwrap();
    assert!(
        cfg.get("OnBuild").map(|v| v.is_null()).unwrap_or(true),
        "{cfg}"
    );
}

#[test]
fn multi_stage_target_and_unused_stages() {
    let s = Strata::new();
    s.busybox();
    let ctx = ctx_with(&s, "multi", &[(
        "Dockerfile",
        "FROM busybox AS base\nRUN echo base > /base\nFROM busybox AS broken\nRUN exit 1\nFROM base AS app\nRUN echo app > /app\nFROM busybox\nCOPY --from=app /base /app /out/\nCOPY --from=0 /base /base0\n",
    )]);
    let (_, p) = build(&s, &ctx, &["-t", "final"]);
    assert!(!p.contains("exit 1"), "the unused stage ran:\n{p}");
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "final",
            "cat",
            "/out/base",
            "/out/app",
            "/base0"
        ]),
        "base\napp\nbase\n"
    );
    build(&s, &ctx, &["--target", "app", "-t", "app"]);
    assert_eq!(s.ok(&["run", "--rm", "app", "cat", "/app"]), "app\n");
    let err = build_fails(&s, &["build", "--target", "broken", &ctx]);
    assert_eq!(
        err,
        format!("Error: {ctx}/Dockerfile:4: RUN exit 1: process \"/bin/sh -c exit 1\" did not complete successfully: exit code: 1")
    );
    let err = s.fails(&["build", "--target", "nosuch", &ctx]);
    assert!(
        err.contains("target stage \"nosuch\" could not be found"),
        "{err}"
    );
}

#[test]
fn copy_semantics_follow_docker() {
    let s = Strata::new();
    s.busybox();
    let ctx = ctx_with(&s, "copy", &[
        ("Dockerfile", "FROM busybox\nWORKDIR /work\nCOPY dir /contents/\nCOPY *.txt rel/\nCOPY one.txt /renamed\nCOPY --chown=nobody:users --chmod=640 one.txt /owned\nCOPY --chmod=u+x,g+w two.txt /sym\nCOPY links /links/\nCOPY viadir/f /viadir\n"),
        ("dir/a", "a"),
        ("dir/sub/b", "b"),
        ("one.txt", "1"),
        ("two.txt", "2"),
        ("links/target", "t"),
        ("real/f", "via link"),
    ]);
    std::os::unix::fs::symlink("target", format!("{ctx}/links/rel")).unwrap();
    std::os::unix::fs::symlink("real", format!("{ctx}/viadir")).unwrap();
    build(&s, &ctx, &["-t", "copy"]);
    let got = s.ok(&["run", "--rm", "copy", "sh", "-c",
        "cat /contents/a /contents/sub/b /work/rel/one.txt /work/rel/two.txt /renamed; echo; \
         stat -c '%U:%G %a' /owned /sym; readlink /links/rel; cat /viadir; echo; ls -d /contents/dir 2>&1 | grep -c 'No such'"]);
    assert_eq!(
        got,
        "ab121\nnobody:users 640\nroot:root 764\ntarget\nvia link\n1\n"
    );
    // a symlink pointing at a host path is "not found", never followed out of the context
    let bad = ctx_with(
        &s,
        "bad",
        &[("Dockerfile", "FROM busybox\nCOPY hostlink/passwd /p\n")],
    );
    std::os::unix::fs::symlink("/etc", format!("{bad}/hostlink")).unwrap();
    assert_eq!(
        build_fails(&s, &["build", &bad]),
        format!("Error: {bad}/Dockerfile:2:1: failed to compute cache key: \"/hostlink/passwd\" not found")
    );
    let bad2 = ctx_with(
        &s,
        "bad2",
        &[
            ("Dockerfile", "FROM busybox\nCOPY --chown=nosuch a /a\n"),
            ("a", "x"),
        ],
    );
    assert_eq!(
        build_fails(&s, &["build", &bad2]),
        format!("Error: {bad2}/Dockerfile:2: COPY --chown=nosuch a /a: --chown=nosuch: unable to find user nosuch: no matching entries in passwd file")
    );
}

#[test]
fn dockerignore_and_per_dockerfile_ignore() {
    let s = Strata::new();
    s.busybox();
    let ctx = ctx_with(
        &s,
        "ign",
        &[
            ("Dockerfile", "FROM busybox\nCOPY . /ctx/\n"),
            ("other.Dockerfile", "FROM busybox\nCOPY . /ctx/\n"),
            (".dockerignore", "secret*\nlogs\n!logs/keep.log\n**/cache\n"),
            ("other.Dockerfile.dockerignore", "keep.txt\n"),
            ("secret.key", "k"),
            ("keep.txt", "kept"),
            ("logs/a.log", "a"),
            ("logs/keep.log", "k"),
            // `**/cache` takes a cache at any depth, but no name that merely ends so.
            ("cache", "top"),
            ("deep/er/cache", "deep"),
            ("deep/nocache", "kept"),
        ],
    );
    build(&s, &ctx, &["-t", "ign"]);
    let got = s.ok(&["run", "--rm", "ign", "find", "/ctx", "-type", "f"]);
    let mut files: Vec<&str> = got.lines().collect();
    files.sort();
    assert_eq!(
        files,
        vec![
            "/ctx/.dockerignore",
            "/ctx/Dockerfile",
            "/ctx/deep/nocache",
            "/ctx/keep.txt",
            "/ctx/logs/keep.log",
            "/ctx/other.Dockerfile",
            "/ctx/other.Dockerfile.dockerignore"
        ]
    );
    build(
        &s,
        &ctx,
        &["-f", &format!("{ctx}/other.Dockerfile"), "-t", "ign2"],
    );
    let got = s.ok(&[
        "run",
        "--rm",
        "ign2",
        "sh",
        "-c",
        "ls /ctx/keep.txt; ls /ctx/secret.key",
    ]);
    assert_eq!(got.trim(), "/ctx/secret.key");
}

#[test]
fn add_unpacks_local_archives() {
    let s = Strata::new();
    s.busybox();
    let ctx = ctx_with(
        &s,
        "add",
        &[
            (
                "Dockerfile",
                "FROM busybox\nADD bundle.tar.gz /opt/\nADD plain.txt /plain.txt\nADD bundle.tar.xz /xz/\nADD bundle.tar.bz2 /bz2/\nADD note.gz /note.gz\n",
            ),
            ("plain.txt", "p"),
        ],
    );
    let src = s.path("bundle-src");
    fs::create_dir_all(src.join("pkg")).unwrap();
    fs::write(src.join("pkg/file"), "packed\n").unwrap();
    common::sh(&format!(
        "cd {src} && tar -czf {ctx}/bundle.tar.gz pkg && tar -cJf {ctx}/bundle.tar.xz pkg && tar -cjf {ctx}/bundle.tar.bz2 pkg && echo note | gzip > {ctx}/note.gz",
        src = src.display()
    ));
    build(&s, &ctx, &["-t", "add"]);
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "add",
            "cat",
            "/opt/pkg/file",
            "/plain.txt",
            "/xz/pkg/file",
            "/bz2/pkg/file"
        ]),
        "packed\nppacked\npacked\n"
    );
    // A compressed file that is not a tar archive is copied as it is, as Docker does.
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "add",
            "sh",
            "-c",
            "gzip -dc /note.gz; stat -c %F /note.gz"
        ]),
        "note\nregular file\n"
    );
}

#[test]
fn run_deletions_become_whiteouts_and_hardlinks_survive() {
    let s = Strata::new();
    s.busybox();
    let ctx = ctx_with(&s, "wh", &[(
        "Dockerfile",
        "FROM busybox\nRUN rm /bin/vi && mkdir /d && echo x > /d/f && ln /d/f /d/hard\nRUN rm -r /d && mkdir /d && echo new > /d/g\n",
    )]);
    build(&s, &ctx, &["-t", "wh"]);
    let got = s.ok(&[
        "run",
        "--rm",
        "wh",
        "sh",
        "-c",
        "ls /bin/vi 2>&1 | grep -c 'No such'; ls /d",
    ]);
    assert_eq!(got, "1\ng\n");
    let save = s.path("wh.tar");
    s.ok(&["save", "-o", save.to_str().unwrap(), "wh"]);
    let listing = common::sh(&format!(
        "cd {d} && mkdir x && tar -xf {t} -C x && for l in $(python3 -c 'import json;print(\" \".join(json.load(open(\"x/manifest.json\"))[0][\"Layers\"]))'); do tar -tvf x/$l; done",
        d = s.dir.path().display(),
        t = save.display()
    ));
    assert!(listing.contains("bin/.wh.vi"), "{listing}");
    assert!(listing.contains("d/hard link to d/f"), "{listing}");
    assert!(listing.contains("d/.wh..wh..opq"), "{listing}");
}

#[test]
fn cache_misses_follow_args_and_env() {
    let s = Strata::new();
    s.busybox();
    let ctx = ctx_with(
        &s,
        "args",
        &[(
            "Dockerfile",
            "FROM busybox\nARG GREETING=hi\nRUN echo $GREETING > /g\nENV E=1\nRUN echo $E > /e\n",
        )],
    );
    build(&s, &ctx, &[]);
    let (_, p) = build(&s, &ctx, &["--build-arg", "GREETING=hey", "-t", "args"]);
    assert_eq!(cached_steps(&p), 0, "{p}");
    assert_eq!(s.ok(&["run", "--rm", "args", "cat", "/g"]), "hey\n");
    let (_, p) = build(&s, &ctx, &["--build-arg", "GREETING=hey"]);
    assert_eq!(cached_steps(&p), 3, "{p}");
    fs::write(
        format!("{ctx}/Dockerfile"),
        "FROM busybox\nARG GREETING=hi\nRUN echo $GREETING > /g\nENV E=2\nRUN echo $E > /e\n",
    )
    .unwrap();
    let (_, p) = build(&s, &ctx, &["--build-arg", "GREETING=hey"]);
    assert_eq!(cached_steps(&p), 1, "{p}");
}

#[test]
fn a_failing_run_is_reported_with_its_line_and_tags_nothing() {
    let s = Strata::new();
    s.busybox();
    let ctx = ctx_with(
        &s,
        "fail",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN echo before\nRUN echo oops >&2; exit 3\nRUN echo never\n",
        )],
    );
    let o = s.run(&["build", "--progress", "plain", "-t", "failed", &ctx]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("oops"), "{err}");
    assert!(err.contains("Dockerfile:3:1: process \"/bin/sh -c echo oops >&2; exit 3\" did not complete successfully: exit code: 3"), "{err}");
    assert!(
        err.contains("   3 | RUN echo oops >&2; exit 3\n       ^"),
        "{err}"
    );
    assert!(!err.contains("never"), "{err}");
    assert_eq!(s.ok(&["images", "-q", "failed"]).trim(), "");
    assert_eq!(
        s.ok(&["ps", "-aq"]).trim(),
        "",
        "a build container was left behind"
    );
    s.assert_check();
}

#[test]
fn scratch_images_and_stdin_dockerfiles() {
    let s = Strata::new();
    s.busybox();
    let ctx = ctx_with(&s, "scratch", &[("Dockerfile", "FROM busybox AS tools\nFROM scratch\nCOPY --from=tools /bin/busybox /busybox\nENTRYPOINT [\"/busybox\"]\nCMD [\"echo\", \"from scratch\"]\n")]);
    build(&s, &ctx, &["-t", "tiny"]);
    assert_eq!(s.ok(&["run", "--rm", "tiny"]), "from scratch\n");
    let cfg: serde_json::Value =
        serde_json::from_str(&s.ok(&["inspect", "--format", "{{json .Config.Env}}", "tiny"]))
            .unwrap();
    assert_eq!(
        cfg,
        serde_json::json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
    );
    let mut c = s
        .cmd(&["build", "-q", "-t", "fromstdin", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin
        .take()
        .unwrap()
        .write_all(b"FROM busybox\nRUN echo stdin > /s\n")
        .unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout)
        .trim()
        .starts_with("sha256:"));
    assert_eq!(s.ok(&["run", "--rm", "fromstdin", "cat", "/s"]), "stdin\n");
}
