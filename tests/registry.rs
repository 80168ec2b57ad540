//! Registries: push, pull, pull by digest, manifest lists, cross-repository mounts, chunked
//! uploads, Basic and Bearer auth, resumed pulls and `build --pull`, all against Debian's
//! distribution server (`docker-registry`) on 127.0.0.1; interop with skopeo and podman; and a
//! hostile registry whose every lie must end in a one-line error and an untouched store.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::http::{forward, Reply, Request, Server};
use common::{have, sh, Strata};

/// Debian's distribution server with its own storage, on a free loopback port.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start(htpasswd: Option<&Path>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("strata-registry-")
            .tempdir()
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let auth = match htpasswd {
            Some(p) => format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                p.display()
            ),
            None => String::new(),
        };
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Registry {
            child,
            port,
            _dir: dir,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `login -u tester --password-stdin` with `password` on stdin.
fn login(s: &Strata, registry: &str, password: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = s
        .cmd(&["login", "-u", "tester", "--password-stdin", registry])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(password.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// busybox plus two RUN layers, tagged `app:1`; returns the image ID.
fn app_image(s: &Strata) -> String {
    s.busybox();
    let ctx = s.path("app");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN echo one > /one\nRUN echo two > /two && mkdir -p /d && echo deep > /d/f\n",
    )
    .unwrap();
    s.ok(&["build", "-q", "-t", "app:1", ctx.to_str().unwrap()]);
    s.ok(&["images", "-q", "--no-trunc", "app:1"])
        .trim()
        .to_string()
}

fn digest_line(out: &str, prefix: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in {out}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn blob_count(s: &Strata) -> usize {
    fs::read_dir(s.root().join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

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

/// A front that demands Bearer tokens from its own token endpoint (which wants Basic
/// credentials) and forwards authorized requests to a plain registry.
fn token_front(backend: String, scopes: Arc<Mutex<Vec<String>>>) -> Server {
    let port_cell: Arc<Mutex<u16>> = Arc::new(Mutex::new(0));
    let port_for_handler = port_cell.clone();
    let server = Server::start(move |req: &Request| {
        let port = *port_for_handler.lock().unwrap();
        if req.path() == "/token" {
            // tester:s3cret
            if req.headers.get("authorization").map(String::as_str)
                != Some("Basic dGVzdGVyOnMzY3JldA==")
            {
                return Reply::json(401, "application/json", b"{}");
            }
            let query = req.target.split_once('?').map(|(_, q)| q).unwrap_or("");
            scopes.lock().unwrap().push(query.to_string());
            return Reply::json(
                200,
                "application/json",
                br#"{"token":"good-token","expires_in":300}"#,
            );
        }
        if req.headers.get("authorization").map(String::as_str) != Some("Bearer good-token") {
            let scope = if req.path().starts_with("/v2/") && req.path().len() > 4 {
                "repository:tok/app:pull,push"
            } else {
                ""
            };
            return Reply::Full(
                401,
                vec![(
                    "WWW-Authenticate".into(),
                    format!("Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"test-registry\",scope=\"{scope}\""),
                )],
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_vec(),
            );
        }
        forward(&backend, req)
    });
    *port_cell.lock().unwrap() = server.port;
    server
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

/// A plain forwarding front that counts requests and can fail some.
fn counting_front(
    backend: String,
    log: Arc<Mutex<Vec<(String, String)>>>,
    fail_blob: Arc<Mutex<Option<String>>>,
) -> Server {
    Server::start(move |req: &Request| {
        log.lock()
            .unwrap()
            .push((req.method.clone(), req.path().to_string()));
        if let Some(d) = fail_blob.lock().unwrap().as_deref() {
            if req.method == "GET" && req.path().ends_with(&format!("/blobs/{d}")) {
                return Reply::json(500, "application/json", b"{}");
            }
        }
        forward(&backend, req)
    })
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

/// A registry that lies in one way per repository.
fn hostile_registry(layer: Vec<u8>, diff_id: String) -> Server {
    Server::start(move |req: &Request| {
        let path = req.path().to_string();
        let layer_digest = format!("sha256:{}", sha256_hex(&layer));
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]}
        }))
        .unwrap();
        let config_digest = format!("sha256:{}", sha256_hex(&config));
        let manifest_with = |config_size: usize, layer_size: u64| {
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}]
            }))
            .unwrap()
        };
        let manifest = |layer_size: u64| manifest_with(config.len(), layer_size);
        let oci = "application/vnd.oci.image.manifest.v1+json";
        match path.as_str() {
            "/v2/" => Reply::json(200, "application/json", b"{}"),
            "/v2/wrongdigest/manifests/latest" => Reply::Full(
                200,
                vec![
                    ("Content-Type".into(), oci.into()),
                    (
                        "Docker-Content-Digest".into(),
                        format!("sha256:{}", "0".repeat(64)),
                    ),
                ],
                manifest(layer.len() as u64),
            ),
            "/v2/giant/manifests/latest" => {
                let mut big = b"{\"schemaVersion\":2,\"pad\":\"".to_vec();
                big.extend(std::iter::repeat_n(b'x', 5 << 20));
                big.extend(b"\"}");
                Reply::json(200, oci, &big)
            }
            "/v2/badtype/manifests/latest" => Reply::json(
                200,
                "text/html",
                br#"{"schemaVersion":2,"mediaType":"text/html","layers":[]}"#,
            ),
            "/v2/loop/manifests/latest" => Reply::Full(
                302,
                vec![("Location".into(), "/v2/loop/manifests/latest".into())],
                Vec::new(),
            ),
            "/v2/stall/manifests/latest" => Reply::Stall,
            // The config's descriptor says fewer bytes than the registry sends.
            "/v2/bigconfig/manifests/latest" => {
                Reply::json(200, oci, &manifest_with(100, layer.len() as u64))
            }
            "/v2/truncated/manifests/latest" | "/v2/badlayer/manifests/latest" => {
                Reply::json(200, oci, &manifest(layer.len() as u64))
            }
            p if p.ends_with(&format!("/blobs/{config_digest}")) => {
                Reply::json(200, "application/octet-stream", &config)
            }
            p if p.starts_with("/v2/truncated/blobs/") => Reply::Truncated(
                200,
                vec![],
                layer[..layer.len() / 2].to_vec(),
                layer.len() as u64,
            ),
            p if p.starts_with("/v2/badlayer/blobs/") => {
                // Another MTIME in the gzip header: still a valid stream of the same size
                // with the same contents, but not the bytes the manifest names.
                let mut wrong = layer.clone();
                wrong[4] ^= 0xff;
                Reply::json(200, "application/octet-stream", &wrong)
            }
            _ => Reply::json(
                404,
                "application/json",
                br#"{"errors":[{"code":"NOT_FOUND","message":"not here"}]}"#,
            ),
        }
    })
}

fn sha256_hex(b: &[u8]) -> String {
    use std::io::Write;
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b).unwrap();
    let o = c.wait_with_output().unwrap();
    String::from_utf8(o.stdout).unwrap()[..64].to_string()
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

/// Builds `ctx` in `s` with extra flags; returns (image ID, plain progress on stderr).
fn build_plain(s: &Strata, ctx: &Path, flags: &[&str]) -> (String, String) {
    let iid = s.path("iid");
    let mut args = vec![
        "build",
        "--progress",
        "plain",
        "--iidfile",
        iid.to_str().unwrap(),
    ];
    args.extend_from_slice(flags);
    args.push(ctx.to_str().unwrap());
    let o = s.run(&args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "build failed: {err}");
    (fs::read_to_string(&iid).unwrap(), err)
}

fn cached_steps(progress: &str) -> usize {
    progress.lines().filter(|l| l.ends_with(" CACHED")).count()
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
