//! Helpers shared by the end-to-end tests: a private store per test and the busybox fixture.

#![allow(dead_code)]

pub mod http;
pub mod registry;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The strata binary under test.
pub fn strata_bin() -> &'static str {
    env!("CARGO_BIN_EXE_strata")
}

/// A test's own store in a temp dir, removed at the end.
pub struct Strata {
    pub dir: tempfile::TempDir,
}

/// A store that made networks leaves their bridges and firewall table on the host: `system
/// reset` takes them (and any container still running) away before the directory goes.
impl Drop for Strata {
    fn drop(&mut self) {
        if self.root().join("networks").exists() {
            let _ = self.run(&["system", "reset", "--force"]);
        }
    }
}

impl Strata {
    pub fn new() -> Strata {
        Strata {
            dir: tempfile::Builder::new()
                .prefix("strata-test-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// A path for scratch files of this test.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(strata_bin());
        c.arg("--root").arg(self.root()).args(args);
        c.env_remove("STRATA_ROOT");
        c.env_remove("DOCKER_DEFAULT_PLATFORM");
        // Registry credentials stay inside the test.
        c.env("DOCKER_CONFIG", self.dir.path().join("docker-config"));
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    /// `strata ARGS` with `input` on its stdin (then closed); its output.
    pub fn run_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "strata {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs and expects failure with a one-line error; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            !o.status.success(),
            "strata {args:?} succeeded unexpectedly: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "error is not one line: {err:?}");
        err
    }

    /// Imports the busybox fixture as `busybox:latest`; returns the image ID.
    pub fn busybox(&self) -> String {
        let out = self.ok(&[
            "import",
            "-c",
            r#"CMD ["sh"]"#,
            busybox_tar().to_str().unwrap(),
            "busybox:latest",
        ]);
        out.trim().to_string()
    }

    /// The diff directory of the store's first layer (a store of one layer: its only one).
    pub fn first_layer_diff(&self) -> PathBuf {
        std::fs::read_dir(self.root().join("layers"))
            .unwrap()
            .next()
            .expect("a layer")
            .unwrap()
            .path()
            .join("diff")
    }

    /// `system check` passes.
    pub fn assert_check(&self) {
        let out = self.ok(&["system", "check"]);
        assert!(out.contains(" 0 errors"), "{out}");
    }
}

/// The busybox rootfs tarball, built once per test binary from Debian's busybox-static.
pub fn busybox_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fixture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tar = dir.join("busybox.tar");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/busybox-rootfs.sh");
        let st = Command::new(script).arg(&tar).status().unwrap();
        assert!(st.success(), "building the busybox fixture failed");
        tar
    })
}

/// The arm64 busybox rootfs tarball (Debian's busybox-static:arm64), built once per test
/// binary.
pub fn busybox_arm64_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("fixture-arm64-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tar = dir.join("busybox-arm64.tar");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/busybox-rootfs.sh");
        let st = Command::new(script)
            .arg(&tar)
            .arg("arm64")
            .status()
            .unwrap();
        assert!(st.success(), "building the arm64 busybox fixture failed");
        tar
    })
}

/// The debian:bookworm rootfs tarball (`debootstrap --variant=minbase` from the machine's
/// mirror), made once and kept in the target directory between runs.
pub fn debian_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let tar = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-bookworm.tar");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/debian-rootfs.sh");
        let st = Command::new(script).arg(&tar).status().unwrap();
        assert!(st.success(), "building the debian fixture failed");
        tar
    })
}

/// Waits until no process has the store `root` on its command line (its monitors, pending
/// restarts and helpers are gone): the event a test of "nothing happens later" waits for.
pub fn wait_for_no_process_of(root: &Path) {
    let root = root.display().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let running = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&root))
        })
    };
    while running() {
        assert!(
            std::time::Instant::now() < deadline,
            "a process of {root} is still running"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs a shell command, asserting success; returns stdout.
pub fn sh(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// True if a program is on PATH (interop tests use Debian's tools as oracles).
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A sorted listing of a tree: path, type, mode, owner, size/target, content hash.
pub fn tree_listing(root: &Path) -> Vec<String> {
    let out = sh(&format!(
        "cd {} && {{ find . -mindepth 1 \\( -type f -printf '%p f %m %U:%G %s\\n' \\) -o \\( ! -type f -printf '%p %y %m %U:%G %l\\n' \\); find . -type f -exec sha256sum {{}} + ; }} | sort",
        root.display()
    ));
    out.lines().map(str::to_string).collect()
}
