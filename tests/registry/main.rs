//! Registries: push, pull, pull by digest, manifest lists, cross-repository mounts, chunked
//! uploads, Basic and Bearer auth, resumed pulls and `build --pull`, all against Debian's
//! distribution server (`docker-registry`) on 127.0.0.1; interop with skopeo and podman; and a
//! hostile registry whose every lie must end in a one-line error and an untouched store.

mod interop;
mod push_pull;

#[path = "../common/mod.rs"]
mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::http::{forward, Reply, Request, Server};
use common::registry::Registry;
use common::{have, sh, Strata};

/// `login -u tester --password-stdin` with `password` on stdin.
fn login(s: &Strata, registry: &str, password: &str) -> std::process::Output {
    s.run_with_input(
        &["login", "-u", "tester", "--password-stdin", registry],
        password.as_bytes(),
    )
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
