//! Pulls by build and run, skopeo and podman as oracles, hostile registries, caches.

use super::*;

#[test]
fn build_pulls_missing_base_images() {
    let reg = Registry::start(None);
    let a = Strata::new();
    a.busybox();
    a.ok(&["push", "busybox", &format!("{}/base/busybox:1", reg.addr())]);
    let b = Strata::new();
    let ctx = b.path("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}/base/busybox:1\nRUN echo built > /b\n", reg.addr()),
    )
    .unwrap();
    let err = b.fails(&["build", "--pull", "never", "-t", "x", ctx.to_str().unwrap()]);
    assert!(err.contains("image not found locally"), "{err}");
    b.ok(&["build", "-q", "-t", "x", ctx.to_str().unwrap()]);
    assert_eq!(b.ok(&["run", "--rm", "x", "cat", "/b"]), "built\n");
    let o = b.run(&[
        "build",
        "--pull",
        "always",
        "--progress",
        "plain",
        "-t",
        "x",
        ctx.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("pulling "),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `run` and `create` pull an image the store lacks first, as Docker's do; `--pull never`
/// refuses, `--pull always` asks the registry again. The pull's progress goes to stderr.
#[test]
fn run_pulls_a_missing_image_first() {
    let reg = Registry::start(None);
    let a = Strata::new();
    a.busybox();
    let remote = format!("{}/base/busybox:1", reg.addr());
    a.ok(&["push", "busybox", &remote]);
    let b = Strata::new();
    let err = b.fails(&["run", "--rm", "--pull", "never", &remote, "true"]);
    assert!(err.contains("unable to find image"), "{err}");
    let o = b.run(&["run", "--rm", &remote, "echo", "pulled"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "pulled\n");
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.starts_with(&format!("Unable to find image '{remote}' locally\n")),
        "{said}"
    );
    // Present now: no pull, nothing said.
    let o = b.run(&["run", "--rm", &remote, "true"]);
    assert_eq!((o.status.code(), o.stderr.len()), (Some(0), 0));
    let o = b.run(&["create", "--pull", "always", &remote, "true"]);
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Image is up to date"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A registry that has no such image: one error line after the pull's own.
    let o = b.run(&[
        "run",
        "--rm",
        &format!("{}/base/none:1", reg.addr()),
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125));
    let said = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        said.lines().filter(|l| l.starts_with("Error: ")).count(),
        1,
        "{said}"
    );
    b.assert_check();
}

#[test]
fn interop_with_skopeo_and_podman() {
    assert!(
        have("skopeo"),
        "skopeo is required (apt-get install skopeo)"
    );
    let reg = Registry::start(None);
    let a = Strata::new();
    let id = app_image(&a);
    let target = format!("{}/interop/app:1", reg.addr());
    let pushed = digest_line(&a.ok(&["push", "app:1", &target]), "1: digest: ");
    let inspect: serde_json::Value = serde_json::from_str(&sh(&format!(
        "skopeo inspect --tls-verify=false docker://{target}"
    )))
    .unwrap();
    assert_eq!(inspect["Digest"], pushed.as_str());
    let layout = a.path("oci");
    sh(&format!(
        "skopeo copy -q --src-tls-verify=false docker://{target} oci:{}:x",
        layout.display()
    ));

    if have("podman") {
        let pm = a.path("podman");
        let podman = format!(
            "podman --root {0}/root --runroot {0}/run --storage-driver vfs",
            pm.display()
        );
        sh(&format!("{podman} pull -q --tls-verify=false {target}"));
        let out = sh(&format!(
            "{podman} run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 {target} cat /one /d/f"
        ));
        assert_eq!(out, "one\ndeep\n");
        let podman_id = sh(&format!(
            "{podman} image inspect --format '{{{{.Id}}}}' {target}"
        ));
        assert_eq!(format!("sha256:{}", podman_id.trim()), id);
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{podman} rmi -af; umount {}/root/overlay 2>/dev/null",
                pm.display()
            ))
            .output();
    }

    // skopeo pushes (Docker media types, its own compression); strata pulls and runs it.
    let theirs = format!("{}/interop/skopeo:1", reg.addr());
    sh(&format!(
        "skopeo copy -q --dest-tls-verify=false --format v2s2 oci:{}:x docker://{theirs}",
        layout.display()
    ));
    let skopeo_digest = serde_json::from_str::<serde_json::Value>(&sh(&format!(
        "skopeo inspect --tls-verify=false docker://{theirs}"
    )))
    .unwrap()["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    let b = Strata::new();
    let out = b.ok(&["pull", &theirs]);
    assert_eq!(digest_line(&out, "Digest: "), skopeo_digest);
    assert_eq!(b.ok(&["run", "--rm", &theirs, "cat", "/two"]), "two\n");
    b.assert_check();
}

#[test]
fn hostile_registry_errors_are_one_line_and_leave_the_store_clean() {
    // A real gzip layer and its diffID.
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("hello"), "hi\n").unwrap();
    let tar = sh(&format!(
        "cd {} && tar -cf layer.tar hello && gzip -kn layer.tar && sha256sum layer.tar",
        dir.path().display()
    ));
    let diff_id = format!("sha256:{}", &tar[..64]);
    let layer = fs::read(dir.path().join("layer.tar.gz")).unwrap();
    let server = hostile_registry(layer, diff_id);
    let s = Strata::new();
    let cases = [
        ("wrongdigest", "Docker-Content-Digest sha256:000"),
        ("giant", "larger than the 4 MiB limit"),
        ("bigconfig", "larger than the 100 bytes limit"),
        ("badtype", "unsupported media type \"text/html\""),
        ("loop", "more than 5 redirects"),
        ("stall", "timed out"),
        ("truncated", "layer sha256:"),
        ("badlayer", "digest mismatch"),
        ("missing", "manifest unknown"),
    ];
    for (repo, expected) in cases {
        let reference = format!("{}/{repo}:latest", server.addr());
        let started = Instant::now();
        let o = s
            .cmd(&["pull", &reference])
            .env("STRATA_REGISTRY_TIMEOUT", "2")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!o.status.success(), "{repo}: pull succeeded");
        assert_eq!(err.trim().lines().count(), 1, "{repo}: {err}");
        assert!(
            err.contains(expected),
            "{repo}: expected {expected:?} in {err}"
        );
        eprintln!("{repo}: {}", err.trim());
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{repo} took {:?}",
            started.elapsed()
        );
        assert_eq!(blob_count(&s), 0, "{repo}: blobs were written");
        assert!(s.ok(&["images", "-q"]).is_empty(), "{repo}");
    }
    s.assert_check();
}

#[test]
fn registry_cache_is_shared_between_fresh_stores() {
    let reg = Registry::start(None);
    let log = Arc::new(Mutex::new(Vec::new()));
    let front = counting_front(reg.addr(), log.clone(), Arc::new(Mutex::new(None)));
    let a = Strata::new();
    a.busybox();
    let base = format!("{}/base/busybox:1", front.addr());
    a.ok(&["push", "busybox", &base]);
    let write_ctx = |s: &Strata, c: &str| {
        let ctx = s.path("ctx");
        fs::create_dir_all(&ctx).unwrap();
        fs::write(
            ctx.join("Dockerfile"),
            format!("FROM {base}\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\nCOPY c.txt /c.txt\nRUN cat /c.txt >> /b.txt\n"),
        )
        .unwrap();
        fs::write(ctx.join("a.txt"), "A\n").unwrap();
        fs::write(ctx.join("c.txt"), c).unwrap();
        ctx
    };
    let cache = format!("{}/cache/app:buildcache", front.addr());
    let to = format!("type=registry,ref={cache},mode=max");
    let from = format!("type=registry,ref={cache}");

    let (id_a, progress) = build_plain(&a, &write_ctx(&a, "C\n"), &["--cache-to", &to]);
    assert_eq!(cached_steps(&progress), 0, "{progress}");
    assert!(progress.contains("exported cache of 4 steps"), "{progress}");

    // A fresh store: every step comes from the registry cache, same image ID.
    let b = Strata::new();
    let (id_b, progress) = build_plain(&b, &write_ctx(&b, "C\n"), &["--cache-from", &from]);
    assert_eq!(cached_steps(&progress), 4, "{progress}");
    assert_eq!(id_b, id_a);
    assert_eq!(b.ok(&["run", "--rm", &id_b, "cat", "/b.txt"]), "A\nC\n");
    b.assert_check();

    // Another fresh store, one file changed: the steps before it are cached, the rest run.
    let c = Strata::new();
    let (id_c, progress) = build_plain(&c, &write_ctx(&c, "changed\n"), &["--cache-from", &from]);
    assert_eq!(cached_steps(&progress), 2, "{progress}");
    assert_ne!(id_c, id_a);
    assert_eq!(
        c.ok(&["run", "--rm", &id_c, "cat", "/b.txt"]),
        "A\nchanged\n"
    );

    // Nothing in the cache fits: only the cache document is read, no layer.
    log.lock().unwrap().clear();
    let d = Strata::new();
    let ctx = write_ctx(&d, "C\n");
    fs::write(ctx.join("a.txt"), "other\n").unwrap();
    let (_, progress) = build_plain(&d, &ctx, &["--cache-from", &from]);
    assert_eq!(cached_steps(&progress), 0, "{progress}");
    let cache_blobs = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, p)| m == "GET" && p.starts_with("/v2/cache/app/blobs/"))
        .count();
    assert_eq!(cache_blobs, 1, "only the cache document should be fetched");

    // A cache that does not exist yet is empty, not an error; a bad spec is one line.
    let (_, progress) = build_plain(
        &d,
        &ctx,
        &["--cache-from", &format!("{}/cache/none:x", front.addr())],
    );
    // Same context as the build before: all four steps from the local cache.
    assert_eq!(cached_steps(&progress), 4, "{progress}");
    let err = d.fails(&[
        "build",
        "--cache-to",
        "type=gha,scope=x",
        ctx.to_str().unwrap(),
    ]);
    assert!(err.contains("cache type \"gha\" is not supported"), "{err}");
}
