//! End to end: the container runtime through the binary, on the busybox fixture image.

mod attach;
mod events;
mod flags;
mod lifecycle;
mod mounts;
mod network;
mod state;

#[path = "../common/mod.rs"]
mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{sh, strata_bin, tree_listing, wait_for_no_process_of, Strata};

fn out(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Now in Unix seconds with nanoseconds, as `events --since` takes it.
fn unix_now() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}.{:09}", t.as_secs(), t.subsec_nanos())
}

fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Mount lines of this (the host's) mount namespace that name the store: `cp` of a stopped
/// container mounts it in a namespace of its own, which must leave nothing here.
fn store_mounts(s: &Strata) -> usize {
    let root = s.root().display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&root))
        .count()
}

/// Collects what the pty reader thread sends into `seen` until `want` shows up; false after
/// 10 s without it.
fn read_pty_until(rx: &std::sync::mpsc::Receiver<Vec<u8>>, seen: &mut String, want: &str) -> bool {
    read_pty_within(rx, seen, want, std::time::Duration::from_secs(10))
}

/// [`read_pty_until`] with its own time limit.
fn read_pty_within(
    rx: &std::sync::mpsc::Receiver<Vec<u8>>,
    seen: &mut String,
    want: &str,
    limit: std::time::Duration,
) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while !seen.contains(want) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(bytes) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            Err(_) => return false,
        }
    }
    true
}

/// A terminal of `rows` × `cols` for a strata command: the command runs with the pty as its
/// controlling terminal and stdio; returns the child, the pty master and what the master reads
/// (from a reader thread).
fn spawn_on_pty(
    mut cmd: std::process::Command,
    rows: u16,
    cols: u16,
) -> (
    std::process::Child,
    std::fs::File,
    std::sync::mpsc::Receiver<Vec<u8>>,
) {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let size = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let slave = std::fs::File::from(pty.slave);
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    // SAFETY: setsid and TIOCSCTTY between fork and exec, on the child's own stdin.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY as _, 0);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(slave);
    let master = std::fs::File::from(pty.master);
    let mut reader = master.try_clone().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    (child, master, rx)
}

/// The isolation fields of a process's `/proc/self/status`.
fn isolation(status: &str) -> Vec<String> {
    status
        .lines()
        .filter(|l| {
            ["Cap", "Seccomp", "NoNewPrivs"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .map(str::to_string)
        .collect()
}
