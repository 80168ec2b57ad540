//! Push and pull, manifest lists, authentication, chunked and resumed transfers.

use super::*;

#[test]
fn push_pull_by_tag_and_digest_round_trip_and_run() {
    let reg = Registry::start(None);
    let a = Strata::new();
    let id = app_image(&a);
    let target = format!("{}/team/app:1", reg.addr());
    let out = a.ok(&["push", "app:1", &target]);
    assert!(
        out.starts_with(&format!(
            "The push refers to repository [{}/team/app]",
            reg.addr()
        )),
        "{out}"
    );
    assert_eq!(out.matches(": Pushed").count(), 3, "{out}");
    let pushed = digest_line(&out, "1: digest: ");

    // Pushing again uploads nothing; another repository mounts every layer.
    let again = a.ok(&["push", "app:1", &target]);
    assert_eq!(
        again.matches(": Layer already exists").count(),
        3,
        "{again}"
    );
    assert_eq!(digest_line(&again, "1: digest: "), pushed);
    let other = a.ok(&["push", "app:1", &format!("{}/other/app:2", reg.addr())]);
    assert_eq!(
        other.matches(": Mounted from team/app").count(),
        3,
        "{other}"
    );
    assert_eq!(digest_line(&other, "2: digest: "), pushed);

    let b = Strata::new();
    let out = b.ok(&["pull", &target]);
    assert!(out.contains(": Pull complete"), "{out}");
    assert_eq!(digest_line(&out, "Digest: "), pushed);
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {target}")),
        "{out}"
    );
    assert_eq!(b.ok(&["images", "-q", "--no-trunc", &target]).trim(), id);
    assert_eq!(
        b.ok(&["run", "--rm", &target, "cat", "/one", "/two", "/d/f"]),
        "one\ntwo\ndeep\n"
    );
    let up_to_date = b.ok(&["pull", &target]);
    assert!(
        up_to_date.contains("Status: Image is up to date"),
        "{up_to_date}"
    );
    assert_eq!(
        up_to_date.matches(": Already exists").count(),
        3,
        "{up_to_date}"
    );

    // By digest, into a third store; `images --digests` and inspect show it.
    let c = Strata::new();
    let by_digest = format!("{}/team/app@{pushed}", reg.addr());
    c.ok(&["pull", "-q", &by_digest]);
    let digests = c.ok(&["images", "--digests"]);
    assert!(digests.contains(&pushed), "{digests}");
    let inspect = c.ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &by_digest,
    ]);
    assert!(inspect.contains(&format!("team/app@{pushed}")), "{inspect}");

    // The pulled image pushes back with the same digest (its own manifest is reused).
    let back = b.ok(&["push", &target, &format!("{}/copy/app:1", reg.addr())]);
    assert_eq!(digest_line(&back, "1: digest: "), pushed);
    for s in [&a, &b, &c] {
        s.assert_check();
    }
}

#[test]
fn manifest_list_resolves_to_the_platform_and_names_what_it_has() {
    let reg = Registry::start(None);
    let a = Strata::new();
    let id = app_image(&a);
    let oci = a.ok(&[
        "push",
        "-q",
        "app:1",
        &format!("{}/multi/app:oci", reg.addr()),
    ]);
    let docker = a.ok(&[
        "push",
        "-q",
        "--format",
        "docker",
        "app:1",
        &format!("{}/multi/app:docker", reg.addr()),
    ]);
    let (oci, docker) = (oci.trim(), docker.trim());
    assert_ne!(oci, docker);
    let size = |d: &str| {
        sh(&format!(
            "curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' http://{}/v2/multi/app/manifests/{d} | wc -c",
            reg.addr()
        ))
        .trim()
        .parse::<u64>()
        .unwrap()
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": docker, "size": size(docker),
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": oci, "size": size(oci),
             "platform": {"architecture": "amd64", "os": "linux"}}
        ]
    });
    let file = a.path("index.json");
    fs::write(&file, serde_json::to_vec(&index).unwrap()).unwrap();
    sh(&format!(
        "curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.index.v1+json' --data-binary @{} http://{}/v2/multi/app/manifests/all",
        file.display(),
        reg.addr()
    ));
    let b = Strata::new();
    let reference = format!("{}/multi/app:all", reg.addr());
    let out = b.ok(&["pull", &reference]);
    let index_digest = digest_line(&out, "Digest: ");
    assert!(index_digest != oci && index_digest != docker, "{out}");
    assert_eq!(b.ok(&["images", "-q", "--no-trunc", &reference]).trim(), id);
    let err = b.fails(&["pull", "--platform", "linux/s390x", &reference]);
    assert!(
        err.contains("no manifest for linux/s390x (the index has: linux/arm64/v8, linux/amd64)"),
        "{err}"
    );
    // The arm64 entry points at an amd64 image: refused rather than run wrongly.
    let err = b.fails(&["pull", "--platform", "linux/arm64", &reference]);
    assert!(
        err.contains("the image is for linux/amd64, not linux/arm64"),
        "{err}"
    );
    b.assert_check();
}

#[test]
fn basic_auth_login_push_pull_logout() {
    assert!(
        have("htpasswd"),
        "htpasswd is required (apt-get install apache2-utils)"
    );
    let a = Strata::new();
    let htpasswd = a.path("htpasswd");
    sh(&format!(
        "htpasswd -Bbn tester s3cret > {}",
        htpasswd.display()
    ));
    let reg = Registry::start(Some(&htpasswd));
    app_image(&a);
    let target = format!("{}/private/app:1", reg.addr());

    let err = a.fails(&["push", "app:1", &target]);
    assert!(
        err.contains(&format!(
            "authentication required (strata login {})",
            reg.addr()
        )),
        "{err}"
    );
    let o = login(&a, &reg.addr(), "wrong\n");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("unauthorized"), "{err}");
    assert!(!a.path("docker-config/config.json").exists());

    let o = login(&a, &reg.addr(), "s3cret\n");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "Login Succeeded\n");
    let config = fs::read_to_string(a.path("docker-config/config.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        v["auths"][reg.addr()]["auth"],
        "dGVzdGVyOnMzY3JldA==",
        "{config}"
    );

    a.ok(&["push", "app:1", &target]);
    // `push SRC DEST` does not tag DEST (as podman); removing app:1 removes the image.
    a.ok(&["rmi", "app:1"]);
    a.ok(&["system", "prune", "-a", "-f"]);
    a.ok(&["pull", &target]);
    assert_eq!(a.ok(&["run", "--rm", &target, "cat", "/one"]), "one\n");

    assert_eq!(
        a.ok(&["logout", &reg.addr()]),
        format!("Removing login credentials for {}\n", reg.addr())
    );
    let err = a.fails(&["pull", &format!("{}/private/app:nope", reg.addr())]);
    assert!(err.contains("authentication required"), "{err}");

    // A credential helper named in credHelpers (docker-credential-<name> get) is asked.
    let bin = a.path("helpers");
    fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-strata-test");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\n[ \"$server\" = {} ] || exit 1\necho '{{\"Username\":\"tester\",\"Secret\":\"s3cret\"}}'\n",
            reg.addr()
        ),
    )
    .unwrap();
    sh(&format!("chmod +x {}", helper.display()));
    fs::write(
        a.path("docker-config/config.json"),
        format!(r#"{{"credHelpers":{{"{}":"strata-test"}}}}"#, reg.addr()),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let o = a
        .cmd(&["pull", "-q", &target])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    a.assert_check();
}

#[test]
fn bearer_token_flow_through_a_token_server() {
    let reg = Registry::start(None);
    let scopes = Arc::new(Mutex::new(Vec::new()));
    let front = token_front(reg.addr(), scopes.clone());
    let a = Strata::new();
    let id = app_image(&a);
    let target = format!("{}/tok/app:1", front.addr());
    let err = a.fails(&["push", "app:1", &target]);
    assert!(err.contains("the token server answered 401"), "{err}");

    assert!(login(&a, &front.addr(), "s3cret").status.success());

    a.ok(&["push", "app:1", &target]);
    let b = Strata::new();
    fs::create_dir_all(b.path("docker-config")).unwrap();
    fs::copy(
        a.path("docker-config/config.json"),
        b.path("docker-config/config.json"),
    )
    .unwrap();
    b.ok(&["pull", &target]);
    assert_eq!(b.ok(&["images", "-q", "--no-trunc", &target]).trim(), id);
    let scopes = scopes.lock().unwrap();
    assert!(
        scopes.iter().all(|q| q.contains("service=test-registry")),
        "{scopes:?}"
    );
    assert!(
        scopes
            .iter()
            .any(|q| q.contains("scope=repository%3Atok%2Fapp%3Apull%2Cpush")),
        "{scopes:?}"
    );
    assert!(
        scopes
            .iter()
            .any(|q| q.contains("scope=repository%3Atok%2Fapp%3Apull")),
        "{scopes:?}"
    );
}

#[test]
fn chunked_upload_and_interrupted_pull_resumes_without_refetching() {
    let reg = Registry::start(None);
    let log = Arc::new(Mutex::new(Vec::new()));
    let fail = Arc::new(Mutex::new(None));
    let front = counting_front(reg.addr(), log.clone(), fail.clone());
    let a = Strata::new();
    let id = app_image(&a);
    let target = format!("{}/chunk/app:1", front.addr());
    let o = a
        .cmd(&["push", "app:1", &target])
        .env("STRATA_UPLOAD_CHUNK_SIZE", "65536")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let patches = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, _)| m == "PATCH")
        .count();
    // The busybox layer is about a megabyte: many 64 KiB chunks.
    assert!(patches > 10, "{patches} PATCH requests");

    // The manifest lists the layers bottom-up; fail the top one.
    let manifest: serde_json::Value = serde_json::from_str(&sh(&format!(
        "curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' http://{}/v2/chunk/app/manifests/1",
        reg.addr()
    )))
    .unwrap();
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    *fail.lock().unwrap() = Some(layers[2].clone());
    log.lock().unwrap().clear();
    let b = Strata::new();
    let err = b.fails(&["pull", &target]);
    assert!(err.contains("500"), "{err}");
    assert!(b.ok(&["images", "-q"]).is_empty());
    b.assert_check();

    *fail.lock().unwrap() = None;
    log.lock().unwrap().clear();
    b.ok(&["pull", &target]);
    assert_eq!(b.ok(&["images", "-q", "--no-trunc", &target]).trim(), id);
    let gets: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, p)| m == "GET" && p.contains("/blobs/"))
        .map(|(_, p)| p.clone())
        .collect();
    let refetched: Vec<&String> = gets
        .iter()
        .filter(|p| p.ends_with(&layers[0]) || p.ends_with(&layers[1]))
        .collect();
    assert!(
        refetched.is_empty(),
        "finished layers fetched again: {refetched:?}"
    );
    assert!(gets.iter().any(|p| p.ends_with(&layers[2])), "{gets:?}");
    b.assert_check();
}
