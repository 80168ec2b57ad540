//! Differential tests: the same Dockerfiles built by Docker (Debian's docker.io, run here as a
//! private dockerd on its own socket and data root) and by strata must give the same
//! filesystems (paths, types, modes, owners, contents, link targets) and the same configs.
//! Docker gets our busybox base image through `docker load` of `strata save` (an interop check
//! of its own). Debian ships no buildx, so Docker builds with its classic builder.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{have, sh, tree_listing, Strata};

struct Dockerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Dockerd {
    fn start() -> Dockerd {
        let dir = tempfile::Builder::new()
            .prefix("strata-dockerd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let child = Command::new("dockerd")
            .args(["--iptables=false", "--ip-masq=false", "--bridge=none"])
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .arg("--host")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .stdout(Stdio::null())
            .stderr(fs::File::create(d.join("log")).unwrap())
            .spawn()
            .unwrap();
        let me = Dockerd { child, dir };
        let t = Instant::now();
        while me
            .docker(&["version"])
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "dockerd did not start: {}",
                fs::read_to_string(me.dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        me
    }

    fn docker(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.env(
            "DOCKER_HOST",
            format!("unix://{}", self.dir.path().join("docker.sock").display()),
        )
        .env("DOCKER_BUILDKIT", "0")
        .args(args);
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.docker(args).output().unwrap();
        assert!(
            o.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        // dockerd leaves its overlay mounts behind when stopped abruptly; best effort.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {}[^ ]*' /proc/self/mountinfo | xargs -r -n1 umount -l",
                self.dir.path().display()
            ))
            .status();
    }
}

const CASES: &[(&str, &str)] = &[
    ("basic", "FROM busybox\nRUN echo one > /one && mkdir -p /a/b && echo x > /a/b/c && chmod 640 /a/b/c\nCOPY files /files/\nCOPY top.txt /top.txt\nRUN rm /bin/vi && ln -s /one /link && ln /one /hard\nENV A=1 B=\"two words\"\nWORKDIR /srv/app\nCOPY top.txt rel.txt\nUSER nobody\nCMD [\"sh\"]\n"),
    ("multistage", "FROM busybox AS builder\nRUN mkdir /out && echo built > /out/artifact && chown -R nobody:users /out\nFROM busybox\nCOPY --from=builder /out /opt/out\nCOPY --from=builder --chown=daemon:daemon /out/artifact /owned\nLABEL a=b\nEXPOSE 80\nENTRYPOINT [\"/bin/cat\"]\n"),
    ("workdir", "FROM busybox\nWORKDIR /app\nCOPY top.txt /app\nWORKDIR /srv/a/b\nENV A=1\nENV A=2 B=${A}\nRUN echo \"$A $B\" > /where\n"),
    ("dirs", "FROM busybox\nCOPY files/ /dest\nCOPY *.txt /globbed/\nRUN mkdir -p /x/y && touch /x/y/z && rm -r /x && mkdir /x && echo again > /x/new\n"),
];

fn context(root: &Path, dockerfile: &str) -> PathBuf {
    let ctx = root.to_path_buf();
    fs::create_dir_all(ctx.join("files/sub")).unwrap();
    fs::write(ctx.join("files/a"), "a\n").unwrap();
    fs::write(ctx.join("files/sub/b"), "b\n").unwrap();
    std::os::unix::fs::symlink("a", ctx.join("files/link")).unwrap();
    fs::write(ctx.join("top.txt"), "top\n").unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    ctx
}

/// A listing without the paths each runtime manages itself.
fn listing(root: &Path) -> Vec<String> {
    tree_listing(root)
        .into_iter()
        .filter(|l| {
            !l.contains("./etc/hosts")
                && !l.contains("./etc/hostname")
                && !l.contains("./etc/resolv.conf")
                && !l.contains("./.dockerenv")
                && !l.contains("./proc")
                && !l.contains("./sys")
                && !l.contains("./dev")
                && !l.contains("./etc/mtab")
        })
        .collect()
}

#[test]
fn builds_match_docker() {
    if !have("dockerd") {
        panic!("dockerd is required for the differential tests (apt-get install docker.io)");
    }
    let s = Strata::new();
    s.busybox();
    let d = Dockerd::start();
    let base = s.path("busybox.tar");
    s.ok(&["save", "-o", base.to_str().unwrap(), "busybox"]);
    let loaded = d.ok(&["load", "-i", base.to_str().unwrap()]);
    assert!(loaded.contains("busybox:latest"), "{loaded}");
    for (name, df) in CASES {
        let ctx = context(&s.path(&format!("ctx-{name}")), df);
        let c = ctx.to_str().unwrap();
        d.ok(&[
            "build",
            "--network",
            "host",
            "-q",
            "-t",
            &format!("d-{name}"),
            c,
        ]);
        s.ok(&["build", "-q", "-t", &format!("s-{name}"), c]);
        // filesystems
        let dt = s.path(&format!("{name}-docker.tar"));
        let cid = d.ok(&["create", &format!("d-{name}")]).trim().to_string();
        d.ok(&["export", "-o", dt.to_str().unwrap(), &cid]);
        let st = s.path(&format!("{name}-strata.tar"));
        let sid = s.ok(&["create", &format!("s-{name}")]).trim().to_string();
        s.ok(&["export", "-o", st.to_str().unwrap(), &sid]);
        let (dd, sd) = (s.path(&format!("{name}-d")), s.path(&format!("{name}-s")));
        fs::create_dir(&dd).unwrap();
        fs::create_dir(&sd).unwrap();
        sh(&format!("tar -xf {} -C {}", dt.display(), dd.display()));
        sh(&format!("tar -xf {} -C {}", st.display(), sd.display()));
        let (dl, sl) = (listing(&dd), listing(&sd));
        let only_docker: Vec<&String> = dl.iter().filter(|l| !sl.contains(l)).collect();
        let only_strata: Vec<&String> = sl.iter().filter(|l| !dl.contains(l)).collect();
        assert!(
            only_docker.is_empty() && only_strata.is_empty(),
            "{name}: filesystems differ\nonly docker: {only_docker:#?}\nonly strata: {only_strata:#?}"
        );
        // configs
        let fields = [
            "Env",
            "Cmd",
            "Entrypoint",
            "WorkingDir",
            "User",
            "Labels",
            "ExposedPorts",
            "Volumes",
        ];
        let dc: serde_json::Value = serde_json::from_str(&d.ok(&[
            "image",
            "inspect",
            "--format",
            "{{json .Config}}",
            &format!("d-{name}"),
        ]))
        .unwrap();
        let sc: serde_json::Value = serde_json::from_str(&s.ok(&[
            "image",
            "inspect",
            "--format",
            "{{json .Config}}",
            &format!("s-{name}"),
        ]))
        .unwrap();
        for f in fields {
            let norm = |v: &serde_json::Value| match v.get(f) {
                None | Some(serde_json::Value::Null) => serde_json::json!(null),
                Some(serde_json::Value::Object(o)) if o.is_empty() => serde_json::json!(null),
                Some(serde_json::Value::Array(a)) if a.is_empty() => serde_json::json!(null),
                Some(serde_json::Value::String(x)) if x.is_empty() => serde_json::json!(null),
                Some(v) => v.clone(),
            };
            assert_eq!(norm(&dc), norm(&sc), "{name}: config {f} differs");
        }
        // `--format` is Go's text/template with Docker's functions: the same output.
        for t in TEMPLATES {
            let (di, si) = (format!("d-{name}"), format!("s-{name}"));
            let d_out = d.ok(&["image", "inspect", "--format", t, &di]);
            let s_out = s.ok(&["image", "inspect", "--format", t, &si]);
            assert_eq!(s_out, d_out, "{name}: --format {t:?}");
        }
        // The same for a created container's fields templates read most.
        let t = "{{.State.Status}}|{{.NetworkSettings.IPAddress}}|{{.HostConfig.RestartPolicy}}|{{.Config.Healthcheck}}|{{.Config.Cmd}}|{{.Config.User}}|{{.State.ExitCode}}|{{.RestartCount}}";
        let d_out = d.ok(&["container", "inspect", "--format", t, &cid]);
        let s_out = s.ok(&["container", "inspect", "--format", t, &sid]);
        assert_eq!(s_out, d_out, "{name}: container --format {t:?}");
    }
}

/// Templates whose output depends only on the image's config, not on who built it.
const TEMPLATES: &[&str] = &[
    "{{- range .Config.Env -}}{{- println . -}}{{- end -}}",
    "{{.Config.Env}}|{{.Config.Cmd}}|{{.Config.Entrypoint}}|{{.Config.WorkingDir}}|{{.Config.User}}",
    "{{json .Config.Env}} {{json .Config.Cmd}} {{json .Config.Labels}}",
    "{{.Config.ExposedPorts}}|{{.Config.Volumes}}|{{.Config.Labels}}|{{.Config.Healthcheck}}",
    "{{json .Config.ExposedPorts}} {{json .Config.Healthcheck}}",
    "{{index .Config.Labels \"a\"}}|{{index .Config.Labels \"nope\"}}|{{len .Config.Env}}",
    "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{else}}none{{end}}",
    "{{if .Config.Entrypoint}}ep {{join .Config.Entrypoint \",\"}}{{else}}no entrypoint{{end}}",
    "{{with .Config.WorkingDir}}[{{.}}]{{else}}none{{end}} {{.Os}}/{{.Architecture}} {{len .RootFS.Layers}}",
    "{{upper .Os}} {{title .Os}} {{printf \"%q %5.5s|%-6s|\" .Config.User .Os .Architecture}} {{split .Architecture \"d\"}}",
    "{{range .Config.Env}}{{if eq . \"A=1\"}}{{continue}}{{end}}{{pad . 1 1}}{{truncate . 3}}{{end}}",
];

/// A multi-platform tag saved by strata (a nested index in index.json, the host's image in
/// manifest.json) loads into Docker as the host's image.
#[test]
fn docker_loads_a_multi_platform_save() {
    if !have("dockerd") {
        panic!("dockerd is required for the differential tests (apt-get install docker.io)");
    }
    let s = Strata::new();
    s.busybox();
    let arm = common::busybox_arm64_tar().to_str().unwrap().to_string();
    s.ok(&["import", "--platform", "linux/arm64", &arm, "busybox:arm64"]);
    s.ok(&["manifest", "create", "both", "busybox", "busybox:arm64"]);
    let archive = s.path("both.tar");
    s.ok(&["save", "-o", archive.to_str().unwrap(), "both"]);
    let d = Dockerd::start();
    let loaded = d.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains("both:latest"), "{loaded}");
    assert_eq!(
        d.ok(&[
            "image",
            "inspect",
            "-f",
            "{{.Os}}/{{.Architecture}}",
            "both"
        ]),
        "linux/amd64\n"
    );
    let id = d.ok(&["create", "both", "true"]).trim().to_string();
    let exported = s.path("both-docker.tar");
    d.ok(&["export", "-o", exported.to_str().unwrap(), &id]);
    assert!(sh(&format!("tar -tf {}", exported.display())).contains("bin/busybox"));
}
