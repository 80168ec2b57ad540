//! The container's init, run in the child the monitor forks into the new pid namespace:
//! namespaces, the overlay root, Docker's mounts, pivot_root, hostname, loopback, the console,
//! user, capabilities, seccomp, and finally exec. Everything here runs in a single-threaded
//! process freshly re-executed from the strata binary.
//!
//! Here: the order of it all ([`run`], `setup`); [`rootfs`] builds the container's file
//! system (overlay root, Docker's mounts, user mounts, pivot_root, masked paths), [`process`]
//! the process (console, limits, user, capabilities, seccomp, exec, and the reaping init).

mod process;
mod rootfs;

use std::ffi::CString;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::{mknodat, Mode, SFlag};
use nix::unistd::{chdir, pivot_root, sethostname};
use pathrs::Root;

use process::*;
pub use process::{exec_process, final_env, find_executable};
use rootfs::*;
pub use rootfs::{clear_volatile_marker, mount_for_copy};

use crate::netns::NetNs;
use crate::spec::{ProcessSpec, RootSpec, UserMount, DEFAULT_PATH, MASKED_PATHS, READONLY_PATHS};

/// A failure inside init: the exit code Docker would use and a one-line message.
#[derive(Debug)]
pub struct InitError {
    pub code: i32,
    pub message: String,
}

fn fail<T>(code: i32, message: impl Into<String>) -> Result<T, InitError> {
    Err(InitError {
        code,
        message: message.into(),
    })
}

trait Ctx<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, InitError>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, InitError> {
        self.map_err(|e| InitError {
            code: 125,
            message: format!("{}: {e}", what()),
        })
    }
}

/// Sets up the container and execs its process. Only returns on failure.
pub fn run(
    root: &RootSpec,
    proc_: &ProcessSpec,
    err_fd: RawFd,
    console: Option<RawFd>,
    cgroup_ready: OwnedFd,
    netns: Option<NetNs>,
) -> InitError {
    match setup(root, proc_, err_fd, console, cgroup_ready, netns) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// A result that never succeeds: the success path is exec.
pub enum Never {}

fn setup(
    root: &RootSpec,
    p: &ProcessSpec,
    err_fd: RawFd,
    console: Option<RawFd>,
    cgroup_ready: OwnedFd,
    netns: Option<NetNs>,
) -> Result<Never, InitError> {
    let mut namespaces = CloneFlags::CLONE_NEWNS;
    if !root.host_uts {
        namespaces |= CloneFlags::CLONE_NEWUTS;
    }
    if !root.host_ipc {
        namespaces |= CloneFlags::CLONE_NEWIPC;
    }
    unshare_private(namespaces)?;
    mount_rootfs(root)?;
    let root_fd: OwnedFd = nix::fcntl::open(
        &root.mountpoint,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open rootfs {}", root.mountpoint.display()))?;
    standard_mounts(&root_fd, root.shm_size, &root.devices)?;
    // sysfs shows the network devices of the namespace it is mounted from.
    // The monitor's helper has made it meanwhile (see `netns`).
    match netns {
        Some(ns) => ns.join().map_err(|m| InitError {
            code: 125,
            message: m,
        })?,
        None if root.isolated_network => return fail(125, "no network namespace was made"),
        None => {}
    }
    mount_sys(&root_fd, root)?;
    etc_files(&root_fd, root)?;
    if !root.mounts.is_empty() {
        // User mount targets are arbitrary paths in an untrusted tree: resolve them with pathrs.
        let rootfs = Root::open(&root.mountpoint)
            .ctx(|| format!("open rootfs {}", root.mountpoint.display()))?;
        user_mounts(&rootfs, root)?;
    }
    drop(root_fd);
    let old_root = enter_root(&root.mountpoint)?;
    if !root.privileged {
        mask_paths();
    }
    if root.readonly {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .ctx(|| "remount / read-only".into())?;
    }
    // Never in the host's UTS namespace: that would rename the host.
    if !root.hostname.is_empty() && !root.host_uts {
        sethostname(&root.hostname).ctx(|| "sethostname".into())?;
    }
    if p.tty {
        attach_console(console, p.console_size)?;
    }
    // Limits must apply to the user's process: wait until the monitor made the cgroup, and
    // join it through the files it sends (none when it moved us itself).
    let files = crate::fdpass::recv_fds(cgroup_ready.as_raw_fd())
        .ctx(|| "wait for the cgroup".into())?
        .ok_or_else(|| InitError {
            code: 125,
            message: "the monitor went away before the cgroup was ready".into(),
        })?;
    // Then the seccomp filter, which the monitor compiled meanwhile.
    let filters = crate::seccomp::read_filters(&mut File::from(cgroup_ready))
        .ctx(|| "receive the seccomp filter".into())?;
    crate::cgroup::join_with(&files).ctx(|| "join the container's cgroup".into())?;
    drop(files);
    old_root.detached()?;
    exec_process(p, err_fd, Some(filters))
}

/// New namespaces (a mount namespace among them) whose mounts propagate nowhere.
fn unshare_private(flags: CloneFlags) -> Result<(), InitError> {
    unshare(flags).ctx(|| "unshare namespaces".into())?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .ctx(|| "make / private".into())
}

/// Writes an init failure to the error pipe: `<code> <message>`.
pub fn report(err_fd: RawFd, e: &InitError) {
    // SAFETY: err_fd is the pipe's write end, owned by this process until exit.
    let mut f = unsafe { File::from_raw_fd(err_fd) };
    let failure = crate::launch::InitFailure {
        code: e.code,
        message: e.message.clone(),
    };
    let _ = f.write_all(failure.encode().as_bytes());
    std::mem::forget(f);
}
