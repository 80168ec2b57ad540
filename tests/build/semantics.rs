//! Docker semantics real Dockerfiles touch, scale, ulimits and prune.

use super::*;

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
    // The namespace itself, not its devices: other tests' containers come and go on the host.
    let host = ctx_with(
        &s,
        "nethost",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN --network=host readlink /proc/self/ns/net > /host\n",
        )],
    );
    let err = build_fails(&s, &["build", &host]);
    assert!(err.contains("--allow network.host"), "{err}");
    build(&s, &host, &["--allow", "network.host", "-t", "nethost"]);
    let seen = s.ok(&["run", "--rm", "nethost", "cat", "/host"]);
    let on_host = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(seen.trim(), on_host.to_str().unwrap());
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
