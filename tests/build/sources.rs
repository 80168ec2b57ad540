//! Cache mounts, COPY shapes, remote ADD, cache export/import, named contexts, --link.

use super::*;

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
