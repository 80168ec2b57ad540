//! End to end: `strata build`.

mod common;

use std::fs;

use common::Strata;

fn context(s: &Strata, dockerfile: &str) -> String {
    let dir = s.path("ctx");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    dir.to_str().unwrap().to_string()
}

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

// ---- building ---------------------------------------------------------------------------

/// A context directory with files (path, content); returns its path.
fn ctx_with(s: &Strata, name: &str, files: &[(&str, &str)]) -> String {
    let dir = s.path(name);
    for (p, c) in files {
        let f = dir.join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(f, c).unwrap();
    }
    dir.to_str().unwrap().to_string()
}

fn build(s: &Strata, ctx: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["build", "--progress", "plain"];
    args.extend_from_slice(extra);
    args.push(ctx);
    let o = s.run(&args);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "build failed:\n{err}");
    (out, err)
}

/// Runs a build that must fail; returns its final `Error:` line (progress precedes it).
fn build_fails(s: &Strata, args: &[&str]) -> String {
    let o = s.run(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "build succeeded unexpectedly: {err}");
    let last = err.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(last.starts_with("Error: "), "{err}");
    last.to_string()
}

fn cached_steps(progress: &str) -> usize {
    progress.lines().filter(|l| l.ends_with(" CACHED")).count()
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

/// The `--dry-run` line of the step written as `instruction`.
fn dry_run_line<'a>(dry: &'a str, instruction: &str) -> &'a str {
    dry.lines()
        .find(|l| l.contains(instruction))
        .unwrap_or_else(|| panic!("no step {instruction:?} in\n{dry}"))
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

/// The paths in the top `n` layers of `image` (sorted, from `save`), to see what RUN steps
/// committed.
fn top_layer_paths(s: &Strata, image: &str, n: usize) -> String {
    let dir = s.path(&format!("layers-{image}"));
    fs::create_dir_all(&dir).unwrap();
    let tar = dir.join("image.tar");
    s.ok(&["save", "-o", tar.to_str().unwrap(), image]);
    common::sh(&format!(
        "cd {0} && tar -xf image.tar && python3 -c \"import json;print(' '.join(json.load(open('manifest.json'))[0]['Layers'][-{n}:]))\" | xargs -n1 tar -tf | sort -u",
        dir.display()
    ))
}

/// Every file of every layer of `image`, as `path\0content` lines, plus its config and history
/// (from `save`), for looking for something that must not be there.
fn everything_in(s: &Strata, image: &str) -> Vec<u8> {
    let tar = s.path("everything.tar");
    s.ok(&["save", "-o", tar.to_str().unwrap(), image]);
    let dir = s.path("everything");
    fs::create_dir_all(&dir).unwrap();
    common::sh(&format!(
        "cd {0} && tar -xf {1} && for l in blobs/sha256/*; do tar -xOf $l 2>/dev/null; tar -tvf $l 2>/dev/null; done > all.txt; cat blobs/sha256/* >> all.txt",
        dir.display(),
        tar.display()
    ));
    fs::read(dir.join("all.txt")).unwrap()
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

#[test]
fn locked_cache_mounts_serialize_parallel_builds() {
    let s = Strata::new();
    s.busybox();
    let step = "RUN --mount=type=cache,target=/c,id=shared-lock,sharing=locked sh -c 'if [ -e /c/busy ]; then echo overlap; exit 1; fi; touch /c/busy; sleep 1; rm /c/busy; echo ok >> /c/runs'";
    let a = ctx_with(
        &s,
        "la",
        &[("Dockerfile", &format!("FROM busybox\nENV WHO=a\n{step}\n"))],
    );
    let b = ctx_with(
        &s,
        "lb",
        &[("Dockerfile", &format!("FROM busybox\nENV WHO=b\n{step}\n"))],
    );
    let ca = s.cmd(&["build", "-q", &a]).spawn().unwrap();
    let cb = s.cmd(&["build", "-q", &b]).spawn().unwrap();
    let (ra, rb) = (
        ca.wait_with_output().unwrap(),
        cb.wait_with_output().unwrap(),
    );
    assert!(
        ra.status.success() && rb.status.success(),
        "a locked cache mount was used twice at once"
    );
    let count = ctx_with(
        &s,
        "lc",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN --mount=type=cache,target=/c,id=shared-lock wc -l < /c/runs > /n\n",
        )],
    );
    build(&s, &count, &["-t", "n"]);
    assert_eq!(s.ok(&["run", "--rm", "n", "cat", "/n"]).trim(), "2");
}

#[test]
fn copy_exclude_and_parents_shape_what_lands() {
    let s = Strata::new();
    s.busybox();
    let ctx = ctx_with(
        &s,
        "shape",
        &[
            (
                "Dockerfile",
                "FROM busybox AS base\n\
                 COPY --exclude=*.md --exclude=src/sub --exclude=Dockerfile . /all/\n\
                 COPY --parents src/sub/z.go a.txt /par/\n\
                 COPY --parents ./src/./sub/z.go /piv/\n\
                 FROM base\n\
                 COPY --from=base --parents --exclude=*.txt /all/src /fromp/\n",
            ),
            ("a.txt", "a"),
            ("b.md", "b"),
            ("src/x.go", "x"),
            ("src/y.txt", "y"),
            ("src/sub/z.go", "z"),
        ],
    );
    build(&s, &ctx, &["-t", "shape"]);
    let listing = s.ok(&[
        "run",
        "--rm",
        "shape",
        "sh",
        "-c",
        "find /all /par /piv /fromp | sort",
    ]);
    assert_eq!(
        listing,
        "/all\n/all/a.txt\n/all/src\n/all/src/x.go\n/all/src/y.txt\n\
         /fromp\n/fromp/all\n/fromp/all/src\n/fromp/all/src/x.go\n\
         /par\n/par/a.txt\n/par/src\n/par/src/sub\n/par/src/sub/z.go\n\
         /piv\n/piv/sub\n/piv/sub/z.go\n"
    );
    // An excluded file changing does not invalidate the step; an included one does.
    fs::write(format!("{ctx}/b.md"), "changed").unwrap();
    let (_, progress) = build(&s, &ctx, &["-t", "shape"]);
    assert_eq!(cached_steps(&progress), 4, "{progress}");
    fs::write(format!("{ctx}/src/x.go"), "changed").unwrap();
    let (_, progress) = build(&s, &ctx, &["-t", "shape"]);
    assert_eq!(cached_steps(&progress), 0, "{progress}");
    let hist = s.ok(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}",
        "shape",
    ]);
    assert!(
        hist.contains("COPY --exclude=*.md --exclude=src/sub --exclude=Dockerfile . /all/"),
        "{hist}"
    );
    s.assert_check();
}

/// Serves ADD sources: plain files, a redirect, a redirect loop, a named download, archives
/// (one with a traversal entry) and an endless body. `hello` is what /files/hello.txt says.
fn add_server(
    dir: &std::path::Path,
    hello: std::sync::Arc<std::sync::Mutex<String>>,
) -> common::http::Server {
    use common::http::Reply;
    common::sh(&format!(
        "cd {0} && mkdir -p a && echo inside > a/b.txt && tar -czf good.tar.gz a && \
         python3 -c \"import tarfile,io;t=tarfile.open('evil.tar','w');i=tarfile.TarInfo('../escape');d=b'x';i.size=len(d);t.addfile(i,io.BytesIO(d));t.close()\"",
        dir.display()
    ));
    let good = fs::read(dir.join("good.tar.gz")).unwrap();
    let evil = fs::read(dir.join("evil.tar")).unwrap();
    common::http::Server::start(move |req| {
        let dated = vec![(
            "Last-Modified".to_string(),
            "Wed, 21 Oct 2015 07:28:00 GMT".to_string(),
        )];
        match req.path() {
            "/files/hello.txt" => Reply::Full(200, dated, hello.lock().unwrap().clone().into()),
            "/redirect" => Reply::Full(
                302,
                vec![("Location".into(), "/files/hello.txt".into())],
                Vec::new(),
            ),
            "/loop" => Reply::Full(302, vec![("Location".into(), "/loop".into())], Vec::new()),
            "/dl" => Reply::Full(
                200,
                vec![(
                    "Content-Disposition".into(),
                    "attachment; filename=\"named.bin\"".into(),
                )],
                b"named".to_vec(),
            ),
            "/good.tar.gz" => Reply::Full(200, Vec::new(), good.clone()),
            "/evil.tar" => Reply::Full(200, Vec::new(), evil.clone()),
            "/huge" => Reply::Endless,
            _ => Reply::Full(404, Vec::new(), b"not found".to_vec()),
        }
    })
}

#[test]
fn add_url_downloads_verifies_and_caches_by_content() {
    let s = Strata::new();
    s.busybox();
    let hello = std::sync::Arc::new(std::sync::Mutex::new("hello from http\n".to_string()));
    let server = add_server(&s.path(""), hello.clone());
    let base = format!("http://{}", server.addr());
    let sum = common::sh("printf 'hello from http\\n' | sha256sum | cut -d' ' -f1");
    let ctx = ctx_with(
        &s,
        "addurl",
        &[(
            "Dockerfile",
            &format!(
                "FROM busybox\n\
                 ADD {base}/files/hello.txt /d/\n\
                 ADD --checksum=sha256:{} {base}/redirect /d/renamed.txt\n\
                 ADD {base}/dl /d/\n\
                 ADD --chmod=644 {base}/files/hello.txt /d/public.txt\n\
                 ADD --unpack=true {base}/good.tar.gz /unpacked/\n\
                 ADD {base}/good.tar.gz /packed/\n",
                sum.trim()
            ),
        )],
    );
    build(&s, &ctx, &["-t", "addurl"]);
    let out = s.ok(&[
        "run",
        "--rm",
        "addurl",
        "sh",
        "-c",
        "stat -c '%n %a %u %Y' /d/* && cat /d/renamed.txt /unpacked/a/b.txt && ls /packed",
    ]);
    assert_eq!(
        out,
        "/d/hello.txt 600 0 1445412480\n/d/named.bin 600 0 0\n/d/public.txt 644 0 1445412480\n\
         /d/renamed.txt 600 0 1445412480\nhello from http\ninside\ngood.tar.gz\n"
    );
    let (_, progress) = build(&s, &ctx, &["-t", "addurl"]);
    assert_eq!(cached_steps(&progress), 6, "{progress}");
    // New content at the same URL: the checksummed step refuses it before anything runs.
    *hello.lock().unwrap() = "changed\n".into();
    let err = build_fails(&s, &["build", &ctx]);
    assert!(err.contains("checksum mismatch: expected sha256:"), "{err}");
    assert!(err.contains(&format!("{base}/redirect")), "{err}");

    let hostile = [
        ("ADD {base}/loop /x\n", "more than 10 redirects"),
        ("ADD {base}/missing /x\n", "status 404"),
        (
            "ADD {base}/huge /x\n",
            "more than the limit of 1048576 bytes",
        ),
        ("ADD --unpack=true {base}/evil.tar /x/\n", "escape"),
        (
            "ADD --checksum=sha256:abc {base}/dl /x\n",
            "invalid checksum",
        ),
        (
            "ADD --checksum=abcdef1 {base}/dl /x\n",
            "a URL's checksum is a sha256: digest",
        ),
    ];
    for (line, want) in hostile {
        let df = format!("FROM busybox\n{}", line.replace("{base}", &base));
        let dir = ctx_with(&s, "hostile-add", &[("Dockerfile", &df)]);
        let o = s
            .cmd(&["build", &dir])
            .env("STRATA_ADD_MAX_SIZE", "1048576")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{df}: {err}");
    }
    let leftovers: Vec<_> = fs::read_dir(s.root().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(leftovers.is_empty(), "left in tmp/: {leftovers:?}");
    s.assert_check();
}

/// A git daemon on loopback serving `base` (its repositories), stopped when dropped.
struct GitDaemon(std::process::Child, u16);

impl GitDaemon {
    fn start(base: &std::path::Path) -> GitDaemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The daemon itself, not `git daemon` (whose child would outlive a kill).
        let exec_path = common::sh("git --exec-path");
        let child = std::process::Command::new(format!("{}/git-daemon", exec_path.trim()))
            .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        GitDaemon(child, port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn add_git_repository_by_ref_and_subdir() {
    let s = Strata::new();
    s.busybox();
    let repos = s.path("repos");
    common::sh(&format!(
        "set -e; mkdir -p {0}/src && cd {0}/src && git init -q -b main && \
         mkdir sub && echo one > sub/f && echo top > top && \
         git -c user.name=t -c user.email=t@t add . && \
         git -c user.name=t -c user.email=t@t commit -qm one && git tag v1 && \
         echo two > sub/f && git -c user.name=t -c user.email=t@t commit -qam two && \
         cd .. && git clone -q --bare src repo.git",
        repos.display()
    ));
    let daemon = GitDaemon::start(&repos);
    let url = format!("git://127.0.0.1:{}/repo.git", daemon.1);
    let ctx = ctx_with(
        &s,
        "addgit",
        &[(
            "Dockerfile",
            &format!(
                "FROM busybox\n\
                 ADD {url}#v1:sub /v1/\n\
                 ADD {url} /head/\n\
                 ADD --keep-git-dir=true {url}#main /kept/\n"
            ),
        )],
    );
    build(&s, &ctx, &["-t", "addgit"]);
    let out = s.ok(&[
        "run",
        "--rm",
        "addgit",
        "sh",
        "-c",
        "cat /v1/f /head/sub/f /head/top && ls -a /head && test -d /kept/.git && echo kept",
    ]);
    assert_eq!(out, "one\ntwo\ntop\n.\n..\nsub\ntop\nkept\n");
    let (_, progress) = build(&s, &ctx, &["-t", "addgit"]);
    assert_eq!(cached_steps(&progress), 3, "{progress}");
    let bad = ctx_with(
        &s,
        "badgit",
        &[(
            "Dockerfile",
            &format!("FROM busybox\nADD {url}#nosuchref /x/\n"),
        )],
    );
    let err = build_fails(&s, &["build", &bad]);
    assert!(err.contains("git fetch"), "{err}");
    // --checksum pins the commit a ref must resolve to.
    let v1 = common::sh(&format!("git -C {}/src rev-parse v1", repos.display()));
    let pinned = |sum: &str| {
        ctx_with(
            &s,
            "pinned",
            &[(
                "Dockerfile",
                &format!("FROM busybox\nADD --checksum={sum} {url}#v1 /p/\n"),
            )],
        )
    };
    build(&s, &pinned(&v1.trim()[..12]), &[]);
    let err = build_fails(&s, &["build", &pinned("0000000")]);
    assert!(
        err.contains("checksum mismatch: expected commit 0000000"),
        "{err}"
    );
    s.assert_check();
}

#[test]
fn no_cache_filter_rebuilds_only_the_named_stages() {
    let s = Strata::new();
    s.busybox();
    let ctx = context(
        &s,
        "FROM busybox AS deps\nRUN echo deps > /d\n\
         FROM deps AS app\nRUN echo app > /a\nRUN cat /d /a > /both\n",
    );
    build(&s, &ctx, &[]);
    let (_, progress) = build(&s, &ctx, &["--no-cache-filter", "app"]);
    let cached: Vec<&str> = progress
        .lines()
        .filter(|l| l.ends_with(" CACHED"))
        .collect();
    assert_eq!(cached.len(), 1, "{progress}");
    assert!(
        progress.contains("[deps 2/2] RUN echo deps > /d\n#2 CACHED"),
        "{progress}"
    );
    let err = s.fails(&["build", "--no-cache-filter", "nope", &ctx]);
    assert!(
        err.contains("--no-cache-filter nope: no such stage"),
        "{err}"
    );
}

#[test]
fn local_cache_export_makes_a_fresh_store_build_fully_cached() {
    let a = Strata::new();
    a.busybox();
    let df = "FROM busybox AS tools\nRUN echo tool > /tool\n\
              FROM busybox\nCOPY app.txt /app.txt\nCOPY --from=tools /tool /tool\nRUN cat /app.txt /tool > /out\n";
    let ctx = ctx_with(&a, "lc", &[("Dockerfile", df), ("app.txt", "app\n")]);
    let dir = a.path("cache-dir");
    let to = format!("type=local,dest={},mode=max", dir.display());
    let (out, _) = build(&a, &ctx, &["-q", "--cache-to", &to]);
    let id = out.trim().to_string();
    assert!(dir.join("index.json").is_file() && dir.join("oci-layout").is_file());

    // The other stores get the very same base image (an import would be dated differently).
    let base = a.path("base.tar");
    a.ok(&["save", "-o", base.to_str().unwrap(), "busybox"]);
    let fresh = || {
        let s = Strata::new();
        s.ok(&["load", "-i", base.to_str().unwrap()]);
        s
    };
    let b = fresh();
    let from = format!("type=local,src={}", dir.display());
    let iid = b.path("iid");
    let (_, progress) = build(
        &b,
        &ctx,
        &["--cache-from", &from, "--iidfile", iid.to_str().unwrap()],
    );
    assert_eq!(cached_steps(&progress), 4, "{progress}");
    assert_eq!(fs::read_to_string(&iid).unwrap(), id);
    assert_eq!(b.ok(&["run", "--rm", &id, "cat", "/out"]), "app\ntool\n");
    b.assert_check();

    // mode=min keeps only the final stage's chain: the tools stage runs again elsewhere.
    let min_dir = a.path("cache-min");
    let to = format!("type=local,dest={}", min_dir.display());
    build(&a, &ctx, &["--cache-to", &to]);
    let c = fresh();
    let from = format!("type=local,src={}", min_dir.display());
    let (_, progress) = build(&c, &ctx, &["--cache-from", &from]);
    assert_eq!(cached_steps(&progress), 3, "{progress}");

    // A damaged blob is named, and the store stays clean.
    let blobs = dir.join("blobs/sha256");
    for e in fs::read_dir(&blobs).unwrap() {
        let p = e.unwrap().path();
        if fs::metadata(&p).unwrap().len() > 1000 {
            fs::write(&p, b"garbage").unwrap();
        }
    }
    let d = fresh();
    let from = format!("type=local,src={}", dir.display());
    let err = build_fails(&d, &["build", "--cache-from", &from, &ctx]);
    assert!(err.contains("sha256:"), "{err}");
    d.assert_check();
    let err = d.fails(&["build", "--cache-to", "type=local", &ctx]);
    assert!(err.contains("dest= is missing"), "{err}");
}

#[test]
fn builder_cache_export_import_carries_cache_mounts() {
    let a = Strata::new();
    a.busybox();
    let fill = context(
        &a,
        "FROM busybox\nRUN --mount=type=cache,id=deps,target=/c mkdir -p /c/pkg && echo fetched > /c/pkg/x && ln -s pkg/x /c/link\n",
    );
    build(&a, &fill, &[]);
    let dir = a.path("mounts-export");
    let out = a.ok(&["builder", "cache", "export", dir.to_str().unwrap()]);
    assert!(out.starts_with("exported 1 cache mounts"), "{out}");
    let index = fs::read_to_string(dir.join("index.json")).unwrap();
    assert!(index.contains("\"id\": \"deps\""), "{index}");

    let b = Strata::new();
    b.busybox();
    let out = b.ok(&["builder", "cache", "import", dir.to_str().unwrap()]);
    assert!(out.starts_with("imported 1 cache mounts"), "{out}");
    let read = context(
        &b,
        "FROM busybox\nRUN --mount=type=cache,id=deps,target=/c cat /c/link > /seen\n",
    );
    build(&b, &read, &["-t", "seen"]);
    assert_eq!(b.ok(&["run", "--rm", "seen", "cat", "/seen"]), "fetched\n");

    // A damaged archive is refused and the store keeps what it had.
    let archive = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "zst"))
        .unwrap();
    let mut bytes = fs::read(&archive).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&archive, bytes).unwrap();
    let err = b.fails(&["builder", "cache", "import", dir.to_str().unwrap()]);
    assert!(err.contains("the index says"), "{err}");
    // An index naming files outside its directory, or not a cache-mount export at all.
    let hostile = a.path("hostile-export");
    fs::create_dir(&hostile).unwrap();
    let index = format!(
        "{{\"schema\":\"strata.cache-mounts.v1\",\"mounts\":[{{\"key\":\"{}\",\"archive\":\"../x.tar.zst\",\"digest\":\"sha256:{}\",\"size\":1}}]}}",
        "a".repeat(64),
        "0".repeat(64)
    );
    fs::write(hostile.join("index.json"), index).unwrap();
    let err = b.fails(&["builder", "cache", "import", hostile.to_str().unwrap()]);
    assert!(err.contains("bad key or archive name"), "{err}");
    fs::write(
        hostile.join("index.json"),
        "{\"schema\":\"other\",\"mounts\":[]}",
    )
    .unwrap();
    let err = b.fails(&["builder", "cache", "import", hostile.to_str().unwrap()]);
    assert!(err.contains("is not strata.cache-mounts.v1"), "{err}");
    build(&b, &read, &["--no-cache", "-t", "seen"]);
    assert_eq!(b.ok(&["run", "--rm", "seen", "cat", "/seen"]), "fetched\n");
    b.assert_check();
}

#[test]
fn build_contexts_name_directories_and_images() {
    let s = Strata::new();
    s.busybox();
    let extra = ctx_with(&s, "extra", &[("data.txt", "extra data\n")]);
    let ctx = context(
        &s,
        "FROM base\nCOPY --from=extra data.txt /data.txt\n\
         RUN --mount=type=bind,from=extra,target=/e cat /e/data.txt > /seen\n",
    );
    let dir_flag = format!("extra={extra}");
    let flags = [
        "--build-context",
        "base=docker-image://busybox",
        "--build-context",
        &dir_flag,
    ];
    let mut args = flags.to_vec();
    args.extend(["-t", "named"]);
    build(&s, &ctx, &args);
    assert_eq!(
        s.ok(&["run", "--rm", "named", "cat", "/data.txt", "/seen"]),
        "extra data\nextra data\n"
    );
    let (_, progress) = build(&s, &ctx, &args);
    assert_eq!(cached_steps(&progress), 2, "{progress}");
    fs::write(format!("{extra}/data.txt"), "changed\n").unwrap();
    let (_, progress) = build(&s, &ctx, &args);
    assert_eq!(cached_steps(&progress), 0, "{progress}");
    assert_eq!(s.ok(&["run", "--rm", "named", "cat", "/seen"]), "changed\n");
    // FROM a directory context: its files are the stage's root filesystem.
    let rootdir = s.path("rootdir");
    fs::create_dir(&rootdir).unwrap();
    common::sh(&format!(
        "tar -xf {} -C {} && echo from-dir > {}/marker",
        common::busybox_tar().display(),
        rootdir.display(),
        rootdir.display()
    ));
    let from_dir = ctx_with(
        &s,
        "fromdir-ctx",
        &[("Dockerfile", "FROM rootfs\nRUN cat /marker > /seen\n")],
    );
    let flag = format!("rootfs={}", rootdir.display());
    build(&s, &from_dir, &["--build-context", &flag, "-t", "fromdir"]);
    assert_eq!(
        s.ok(&["run", "--rm", "fromdir", "cat", "/seen"]),
        "from-dir\n"
    );
    let (_, progress) = build(&s, &from_dir, &["--build-context", &flag, "-t", "fromdir"]);
    assert_eq!(cached_steps(&progress), 1, "{progress}");
    s.assert_check();
    // The directory's image is remembered by the tree's stat stamp; new content of the same
    // size with the old mtime still changes the stamp (ctime), so it is seen.
    let memos = fs::read_dir(s.root().join("buildcache"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("dirimage-")
        })
        .count();
    assert_eq!(memos, 1);
    common::sh(&format!(
        "cd {0} && cp -p marker ../marker.orig && echo changed! > marker && touch -r ../marker.orig marker",
        rootdir.display()
    ));
    build(&s, &from_dir, &["--build-context", &flag, "-t", "fromdir"]);
    assert_eq!(
        s.ok(&["run", "--rm", "fromdir", "cat", "/seen"]),
        "changed!\n"
    );
    // Once the directory's image is pruned, its record is garbage.
    s.ok(&["rmi", "fromdir"]);
    s.ok(&["system", "prune", "-a", "-f"]);
    let report = s.ok(&["system", "check"]);
    assert!(
        report.contains("directory-context record of a removed image"),
        "{report}"
    );
    s.ok(&["system", "check", "--repair"]);
    s.assert_check();
    let err = s.fails(&["build", "--build-context", "x=oci-layout:///tmp/l", &ctx]);
    assert!(
        err.contains("only directories and docker-image://"),
        "{err}"
    );
    let err = s.fails(&["build", "--build-context", "x=/nonexistent/dir", &ctx]);
    assert!(err.contains("/nonexistent/dir"), "{err}");
}

#[test]
fn copy_link_layer_survives_earlier_changes_unchanged() {
    let s = Strata::new();
    s.busybox();
    let ctx = ctx_with(
        &s,
        "link",
        &[
            (
                "Dockerfile",
                "FROM busybox\nCOPY a.txt /a.txt\nCOPY --link b.txt /b/\nRUN cat /a.txt /b/b.txt > /both\n",
            ),
            ("a.txt", "a1\n"),
            ("b.txt", "b\n"),
        ],
    );
    let layers = |s: &Strata| -> Vec<String> {
        let out = s.ok(&[
            "image",
            "inspect",
            "--format",
            "{{json .RootFS.Layers}}",
            "link",
        ]);
        serde_json::from_str(&out).unwrap()
    };
    build(&s, &ctx, &["-t", "link"]);
    let before = layers(&s);
    // The --link layer holds only what it copied; the RUN layer above it only /both.
    assert_eq!(top_layer_paths(&s, "link", 2), "b/\nb/b.txt\nboth\n");
    fs::write(format!("{ctx}/a.txt"), "a2\n").unwrap();
    let plan = s.ok(&["build", "--dry-run", &ctx]);
    assert!(
        plan.contains(
            "CACHED COPY --link b.txt /b/  (its --link layer is reused on the new parent)"
        ),
        "{plan}"
    );
    let (_, progress) = build(&s, &ctx, &["-t", "link"]);
    assert!(
        progress.contains("COPY --link b.txt /b/\n#3 CACHED"),
        "{progress}"
    );
    assert_eq!(cached_steps(&progress), 1, "{progress}");
    let after = layers(&s);
    assert_ne!(before[1], after[1], "the changed COPY");
    assert_eq!(before[2], after[2], "the --link layer is the same layer");
    assert_eq!(s.ok(&["run", "--rm", "link", "cat", "/both"]), "a2\nb\n");
    let hist = s.ok(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}",
        "link",
    ]);
    assert!(hist.contains("COPY --link b.txt /b/ # buildkit"), "{hist}");
    s.assert_check();
}

#[test]
fn run_network_modes_and_the_host_entitlement() {
    let s = Strata::new();
    s.busybox();
    let interfaces = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '";
    let ctx = context(
        &s,
        &format!("FROM busybox\nRUN --network=none sh -c \"{interfaces}\" > /none\n"),
    );
    build(&s, &ctx, &["-t", "netnone"]);
    assert_eq!(s.ok(&["run", "--rm", "netnone", "cat", "/none"]), "lo ");
    // The host's network is an entitlement when a step asks for it by name.
    let host = ctx_with(
        &s,
        "nethost",
        &[(
            "Dockerfile",
            &format!("FROM busybox\nRUN --network=host sh -c \"{interfaces}\" > /host\n"),
        )],
    );
    let err = build_fails(&s, &["build", &host]);
    assert!(err.contains("--allow network.host"), "{err}");
    build(&s, &host, &["--allow", "network.host", "-t", "nethost"]);
    let seen = s.ok(&["run", "--rm", "nethost", "cat", "/host"]);
    let on_host = common::sh(&format!("sh -c \"{interfaces}\""));
    assert_eq!(seen, on_host);
}

/// What a COPY wrote at /app, as the image shows it: every path below /app with mode, owner,
/// size and mtime, and every file's checksum.
fn app_listing(s: &Strata, image: &str) -> String {
    s.ok(&[
        "run",
        "--rm",
        image,
        "sh",
        "-c",
        "cd /app && find . -mindepth 1 -exec stat -c '%n %a %u %g %s %Y' {} + | sort && find . -type f -exec md5sum {} + | sort",
    ])
}

/// Paths of regular files below `app/` in the store's layers that share their inode.
fn shared_layer_files(s: &Strata) -> usize {
    common::sh(&format!(
        "find {} -path '*/diff/app/*' -type f -links +1 | wc -l",
        s.root().join("layers").display()
    ))
    .trim()
    .parse()
    .unwrap()
}

#[test]
fn copy_links_unchanged_files_from_its_previous_layer_and_checks_them() {
    let s = Strata::new();
    s.busybox();
    let mut files: Vec<(String, String)> = (0..300)
        .map(|i| (format!("d{}/f{i}.txt", i % 7), format!("file {i}\n")))
        .collect();
    files.push(("top.txt".into(), "top\n".into()));
    files.push((
        "Dockerfile".into(),
        "FROM busybox\nWORKDIR /app\nCOPY . /app\nRUN cat /app/top.txt\n".into(),
    ));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let ctx = ctx_with(&s, "reuse", &refs);
    common::sh(&format!("chmod 0755 {ctx}/d3/f3.txt"));
    build(&s, &ctx, &["-t", "v1"]);
    assert_eq!(shared_layer_files(&s), 0);

    // One file changes: the 301 others are linked from v1's COPY layer, the changed one is not.
    fs::write(format!("{ctx}/d1/f1.txt"), "changed\n").unwrap();
    build(&s, &ctx, &["-t", "v2"]);
    assert_eq!(shared_layer_files(&s), 2 * 301);
    let listing = app_listing(&s, "v2");
    assert!(listing.contains("./d3/f3.txt 755 0 0 7 "), "{listing}");
    // The same as a build from scratch in another store.
    let fresh = Strata::new();
    fresh.busybox();
    fresh.ok(&["build", "-q", "-t", "v2", &ctx]);
    assert_eq!(listing, app_listing(&fresh, "v2"));
    s.assert_check();

    // A candidate that is not what a copy would write (here: another mtime) is copied instead.
    let y = common::sh(&format!(
        "find {} -path '*/diff/app/top.txt' | head -1",
        s.root().join("layers").display()
    ));
    let y = y.trim();
    let original = common::sh(&format!("stat -c %Y {y}"));
    common::sh(&format!("touch -m -d @1000000000 {y}"));
    fs::write(format!("{ctx}/d1/f1.txt"), "changed again\n").unwrap();
    build(&s, &ctx, &["-t", "v3"]);
    let v3 = app_listing(&s, "v3");
    assert!(
        v3.contains(&format!("./top.txt 644 0 0 4 {}", original.trim())),
        "{v3}"
    );
    common::sh(&format!("touch -m -d @{} {y}", original.trim()));
    s.assert_check();
    // Once its images are gone, the record is garbage; `builder prune` drops it.
    for t in ["v1", "v2", "v3"] {
        s.ok(&["rmi", t]);
    }
    s.ok(&["system", "prune", "-a", "-f"]);
    let report = s.ok(&["system", "check"]);
    assert!(
        report.contains("COPY reuse record of a removed layer"),
        "{report}"
    );
    s.ok(&["builder", "prune", "-a", "-f"]);
    let report = s.ok(&["system", "check"]);
    assert!(!report.contains("COPY reuse record"), "{report}");
}

// ---- Docker's semantics where strata differed (issue 17) ----------------------------------

/// The output a build's RUN steps printed, in order (plain progress, `#N 0.123 text`).
fn run_output(progress: &str) -> Vec<String> {
    progress
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix('#')?;
            let (_, rest) = rest.split_once(' ')?;
            let (time, text) = rest.split_once(' ')?;
            time.parse::<f64>().ok().map(|_| text.to_string())
        })
        .collect()
}

#[test]
fn workdir_makes_its_directory_for_the_next_step() {
    let s = Strata::new();
    s.busybox();
    let ctx = ctx_with(
        &s,
        "ctx",
        &[
            ("f.txt", "hello\n"),
            (
                "Dockerfile",
                "FROM busybox\nWORKDIR /app\nCOPY f.txt /app\nRUN cat /app/f.txt && pwd\nUSER nobody\nWORKDIR /srv/x/y\nRUN stat -c '%n %u:%g %a' /srv /srv/x /srv/x/y\nWORKDIR /etc\n",
            ),
        ],
    );
    let (_, err) = build(&s, &ctx, &["-t", "wd"]);
    assert_eq!(
        run_output(&err),
        [
            "hello",
            "/app",
            "/srv 65534:65534 755",
            "/srv/x 65534:65534 755",
            "/srv/x/y 65534:65534 755",
        ],
        "{err}"
    );
    // A WORKDIR that makes a directory adds a layer; one that exists (/etc) adds none.
    let history = s.ok(&["history", "--format", "{{.CreatedBy}}|{{.Size}}", "wd"]);
    let rows: Vec<&str> = history.lines().collect();
    assert_eq!(rows[0], "WORKDIR /etc|0B", "{history}");
    assert!(
        rows.iter()
            .any(|r| r.starts_with("WORKDIR /srv/x/y|") && !r.ends_with("|0B")),
        "{history}"
    );
    // A path on the way that is a file is an error naming it.
    let ctx = context(&s, "FROM busybox\nWORKDIR /etc/passwd/sub\n");
    let err = build_fails(&s, &["build", &ctx]);
    assert!(err.contains("Dockerfile:2: WORKDIR /etc/passwd/sub: mkdir /etc/passwd/sub: /etc/passwd is not a directory"), "{err}");
}

#[test]
fn env_values_of_one_instruction_see_the_environment_before_it() {
    let s = Strata::new();
    s.busybox();
    let ctx = context(
        &s,
        "FROM busybox\nENV A=0\nENV A=1 B=${A}2 C=x${B}\nRUN echo \"A=$A B=$B C=$C\"\n",
    );
    let (_, err) = build(&s, &ctx, &["-t", "env"]);
    assert_eq!(run_output(&err), ["A=1 B=02 C=x"], "{err}");
    let env = s.ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Env}}",
        "env",
    ]);
    assert!(env.contains(r#""A=1","B=02","C=x""#), "{env}");
}

#[test]
fn run_steps_get_buildkits_supplementary_groups_and_run_keeps_dockers() {
    let s = Strata::new();
    s.busybox();
    let mut df = String::from("FROM busybox\nRUN echo app:x:1000:1000::/home/app:/bin/sh >> /etc/passwd && printf 'app:x:1000:\\nusers:x:100:app\\nother:x:200:\\n' >> /etc/group\n");
    for u in ["app", "1000", "app:other", "1000:200"] {
        df.push_str(&format!(
            "USER {u}\nRUN echo {u} $(grep Groups /proc/self/status)\n"
        ));
    }
    let ctx = context(&s, &df);
    let (_, err) = build(&s, &ctx, &["-t", "groups"]);
    // BuildKit: only the groups that list the user; none with an explicit group.
    assert_eq!(
        run_output(&err),
        [
            "app Groups: 100",
            "1000 Groups: 100",
            "app:other Groups:",
            "1000:200 Groups:"
        ],
        "{err}"
    );
    // Docker's `run -u`: the primary group as well.
    let mut docker = Vec::new();
    for u in ["app", "1000", "app:other", "1000:200"] {
        let out = s.ok(&[
            "run",
            "--rm",
            "-u",
            u,
            "groups",
            "sh",
            "-c",
            "grep Groups /proc/self/status",
        ]);
        docker.push(format!("{u}:{}", out.trim_start_matches("Groups:").trim()));
    }
    assert_eq!(
        docker,
        [
            "app:100 1000",
            "1000:100 1000",
            "app:other:200",
            "1000:200:200"
        ]
    );
}

#[test]
fn unused_stages_images_are_never_looked_up() {
    let s = Strata::new();
    s.busybox();
    // Neither image exists anywhere: resolving either would fail the build (or try a pull).
    let ctx = context(
        &s,
        "FROM example.invalid/nosuch:1 AS unused\nRUN false\nFROM busybox AS used\nRUN echo used > /u\nFROM busybox AS other\nCOPY --from=example.invalid/other:2 /x /y\nRUN --mount=from=example.invalid/third:3,target=/m true\nFROM used\nRUN cat /u\n",
    );
    let (_, err) = build(&s, &ctx, &["--pull", "missing", "-t", "final"]);
    assert_eq!(run_output(&err), ["used"], "{err}");
    assert!(!err.contains("example.invalid"), "{err}");
    let dry = s.ok(&["build", "--dry-run", "--target", "used", &ctx]);
    let skipped: Vec<&str> = dry
        .lines()
        .filter(|l| l.ends_with("skipped: the target does not need it"))
        .collect();
    assert_eq!(
        skipped,
        [
            "stage 0 [unused] skipped: the target does not need it",
            "stage 2 [other] skipped: the target does not need it",
            "stage 3 [stage-3] skipped: the target does not need it"
        ],
        "{dry}"
    );
    // A base image's ONBUILD trigger may name a stage the text does not: it is planned then.
    let trig = context(&s, "FROM busybox\nONBUILD COPY --from=helper /h /h\n");
    s.ok(&["build", "-q", "-t", "trig", &trig]);
    let ctx = ctx_with(
        &s,
        "onbuild",
        &[(
            "Dockerfile",
            "FROM busybox AS helper\nRUN echo helped > /h\nFROM trig\nRUN cat /h\n",
        )],
    );
    let (_, err) = build(&s, &ctx, &[]);
    assert_eq!(run_output(&err), ["helped"], "{err}");
}

#[test]
fn thousands_of_metadata_lines_plan_and_record_in_linear_space() {
    let s = Strata::new();
    s.busybox();
    let mut df = String::from("FROM busybox\n");
    for i in 0..5000 {
        df.push_str(&format!("ENV V{i}=value{i}\n"));
    }
    df.push_str("RUN test \"$V4999\" = value4999\nLABEL done=yes\n");
    let ctx = context(&s, &df);
    let (_, err) = build(&s, &ctx, &["-t", "many"]);
    assert_eq!(err.matches(" CACHED").count(), 0, "{err}");
    // Metadata steps are folded into the next recorded step: the build recorded two images
    // (the RUN and the last LABEL), not one per line, and the history still has every line.
    let records = fs::read_dir(s.root().join("images")).unwrap().count();
    assert_eq!(records, 3, "busybox and two build images");
    let history = s.ok(&["history", "-q", "many"]);
    let ids: Vec<&str> = history.lines().collect();
    assert_eq!(ids.len(), 5003, "5000 ENV, RUN, LABEL and the import");
    assert_ne!(ids[0], "<missing>");
    assert_ne!(ids[1], "<missing>", "the RUN's image");
    assert!(ids[2..5002].iter().all(|i| *i == "<missing>"));
    let env = s.ok(&[
        "image",
        "inspect",
        "--format",
        "{{len .Config.Env}}",
        "many",
    ]);
    assert_eq!(env.trim(), "5001");
    // A warm build hits every step, the folded ones included, and ends at the same image.
    let (_, err) = build(&s, &ctx, &["-t", "again"]);
    assert_eq!(cached_steps(&err), 5002, "{}", &err[..500]);
    assert_eq!(
        s.ok(&["image", "inspect", "--format", "{{.Id}}", "many"]),
        s.ok(&["image", "inspect", "--format", "{{.Id}}", "again"])
    );
}

#[test]
fn variable_expansion_is_capped_with_an_error_naming_the_line() {
    let s = Strata::new();
    s.busybox();
    let mut df = String::from("ARG A0=0123456789abcdef\n");
    for i in 1..40 {
        df.push_str(&format!("ARG A{i}=${{A{}}}${{A{}}}\n", i - 1, i - 1));
    }
    df.push_str("FROM busybox\n");
    let ctx = context(&s, &df);
    let err = s.fails(&["build", "--dry-run", &ctx]);
    assert_eq!(
        err.trim(),
        format!(
            "Error: {ctx}/Dockerfile:18:1: ARG A17: variable expansion exceeds 1 MiB (at $A16)"
        )
    );
    let ctx = context(
        &s,
        &format!(
            "FROM busybox\nENV A=0123456789abcdef\n{}",
            "ENV A=$A$A\n".repeat(20)
        ),
    );
    let err = s.fails(&["build", &ctx]);
    assert_eq!(
        err.trim(),
        format!("Error: {ctx}/Dockerfile:19:1: ENV $A$A: variable expansion exceeds 1 MiB (at $A)")
    );
}

#[test]
fn a_warm_rebuild_of_a_large_context_stays_small() {
    let s = Strata::new();
    s.busybox();
    let ctx = s.path("large");
    for d in 0..400 {
        let dir = ctx.join(format!("src/d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            fs::write(dir.join(format!("f{f}.txt")), format!("file {d} {f}\n")).unwrap();
        }
    }
    fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY . /app\n").unwrap();
    let c = ctx.to_str().unwrap();
    s.ok(&["build", "-q", "-t", "large", c]);
    // 40,000 files: the plan holds each path once (the context's), digests inline, and the
    // stat cache as a sorted list read a line at a time. 88 MB before; 27 MB now.
    let out = common::sh(&format!(
        "/usr/bin/time -f 'peak %M' {} --root {} build -q {c} 2>&1 >/dev/null",
        common::strata_bin(),
        s.root().display()
    ));
    let peak: u64 = out
        .trim()
        .strip_prefix("peak ")
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        peak < 50_000,
        "a warm rebuild of 40,000 files peaked at {peak} KB"
    );
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "large",
            "sh",
            "-c",
            "find /app -type f | wc -l"
        ])
        .trim(),
        "40001"
    );
}

#[test]
fn build_ulimits_reach_run_steps_and_their_keys() {
    let s = Strata::new();
    s.busybox();
    let ctx = context(&s, "FROM busybox\nRUN ulimit -n\n");
    let (_, err) = build(&s, &ctx, &["--ulimit", "nofile=1234:1234"]);
    assert_eq!(run_output(&err), ["1234"], "{err}");
    // Another limit is another key: the step runs again.
    let (_, err) = build(&s, &ctx, &["--ulimit", "nofile=2345:2345"]);
    assert_eq!(run_output(&err), ["2345"], "{err}");
    let err = build_fails(&s, &["build", "--ulimit", "nosuch=1", &ctx]);
    assert!(err.contains("invalid --ulimit \"nosuch=1\""), "{err}");
}

#[test]
fn image_prune_all_removes_built_images_and_the_cache_keeps_their_layers() {
    let s = Strata::new();
    s.busybox();
    // The base stays: a container uses it.
    s.ok(&["create", "--name", "pin", "busybox", "sh"]);
    let ctx = context(
        &s,
        "FROM busybox\nRUN head -c 100000 /dev/urandom > /big\nENV X=1\nRUN echo hi > /x\n",
    );
    let id = s.ok(&["build", "-q", "-t", "app", &ctx]);
    let out = s.ok(&["image", "prune", "-a", "-f"]);
    assert!(out.starts_with("Deleted Images:\n"), "{out}");
    assert!(out.contains(&format!("deleted: {}", id.trim())), "{out}");
    assert_eq!(
        s.ok(&["images", "-a", "--format", "{{.Repository}}"]),
        "busybox\n",
        "every image no container uses went, the build's too"
    );
    s.assert_check();
    // The build cache kept the content: the rebuild hits every step, same image.
    let (_, err) = build(&s, &ctx, &["-t", "app"]);
    assert_eq!(cached_steps(&err), 3, "{err}");
    assert_eq!(s.ok(&["images", "-q", "--no-trunc", "app"]), id);
    // builder prune is what takes it.
    s.ok(&["rmi", "app"]);
    s.ok(&["rm", "pin"]);
    s.ok(&["builder", "prune", "-a", "-f"]);
    s.ok(&["image", "prune", "-a", "-f"]);
    assert_eq!(fs::read_dir(s.root().join("layers")).unwrap().count(), 0);
    s.assert_check();
}
