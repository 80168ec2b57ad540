//! End to end: `strata build`.

mod basics;
mod engine;
mod isolation;
mod platforms;
mod semantics;
mod sources;

#[path = "../common/mod.rs"]
mod common;

use std::fs;

use common::Strata;

fn context(s: &Strata, dockerfile: &str) -> String {
    let dir = s.path("ctx");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    dir.to_str().unwrap().to_string()
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

/// The `--dry-run` line of the step written as `instruction`.
fn dry_run_line<'a>(dry: &'a str, instruction: &str) -> &'a str {
    dry.lines()
        .find(|l| l.contains(instruction))
        .unwrap_or_else(|| panic!("no step {instruction:?} in\n{dry}"))
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
