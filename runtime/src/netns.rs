//! The container's network namespace, made by another process while the rest of the start
//! goes on. Making one (its sysctl tables, the loopback device) costs ~0.5 ms of CPU, the
//! longest single step of a start, and the other core can spend it meanwhile.
//!
//! Its maker creates the namespace, brings loopback up, sends a descriptor of it down a socket
//! ([`make_and_send`]) and exits: a descriptor in flight keeps the namespace alive until init
//! (which inherits the socket) receives it and joins with setns(2), before it mounts /sys
//! (which shows the devices of the namespace it is mounted from). The monitor reaps the maker
//! ([`Helper::reap`]). For a foreground `run` the maker is the client's record writer, once
//! the record is written (`handoff`, `monitor::Which::Pipe`); for a detached or build
//! container, a helper the monitor starts once it has read the record ([`NetNs::spawn`]).
//!
//! The helper is a `clone(CLONE_VM)` child on a stack of its own, not a fork: a fork would
//! make every page the parent then writes a copy-on-write fault while the helper lives. It
//! shares the parent's memory, including glibc's thread-local state, so it runs only raw
//! system calls (rustix's, which touch neither errno nor the heap) and leaves by `exit`. If the
//! scheduler started it on the parent's CPU, it first moves to another (`leave_cpu`).

use std::io::IoSlice;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sched::CloneFlags;
use nix::unistd::Pid;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

/// A network namespace for init to join: the receiving end of one being made, or one already
/// at hand (received by the monitor, which plugs it into networks; another container's).
#[derive(Debug)]
pub enum NetNs {
    Coming(OwnedFd),
    Ready(OwnedFd),
}

/// The process making a [`NetNs`], to be reaped by its parent.
#[derive(Debug)]
pub struct Helper(Pid);

/// The helper's stack. A monitor starts one helper, for its one container, and the stack is
/// never freed (a static), so it outlives the helper whatever happens.
const STACK_SIZE: usize = 64 << 10;
static mut STACK: [u8; STACK_SIZE] = [0; STACK_SIZE];
static STACK_TAKEN: AtomicBool = AtomicBool::new(false);

impl NetNs {
    /// Starts the helper.
    pub fn spawn() -> std::io::Result<(NetNs, Helper)> {
        if STACK_TAKEN.swap(true, Ordering::SeqCst) {
            return Err(std::io::Error::other(
                "a network namespace helper was already started",
            ));
        }
        let (ours, theirs) = crate::fdpass::socket_pair()?;
        let job = HelperJob {
            sock: theirs.as_raw_fd(),
            parent_cpu: rustix::thread::sched_getcpu(),
        };
        // SAFETY: the stack is ours alone (STACK_TAKEN) and outlives the helper (static); the
        // child runs `helper_main`, which keeps to raw system calls (see the module comment),
        // with its own copy of the descriptor table.
        let pid = unsafe {
            let top = std::ptr::addr_of_mut!(STACK).cast::<u8>().add(STACK_SIZE);
            libc::clone(
                helper_main,
                top.cast(),
                libc::CLONE_VM | libc::SIGCHLD,
                job.pack() as *mut libc::c_void,
            )
        };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        drop(theirs);
        Ok((NetNs::Coming(ours), Helper(Pid::from_raw(pid))))
    }

    /// The receiving end of a namespace another process makes with [`make_and_send`].
    pub fn from_socket(sock: OwnedFd) -> NetNs {
        NetNs::Coming(sock)
    }

    /// The namespace itself, once made. `Err` names what failed; a helper that failed tells
    /// why through its exit code ([`Helper::reap`]).
    pub fn receive(self) -> Result<OwnedFd, String> {
        match self {
            NetNs::Ready(ns) => Ok(ns),
            NetNs::Coming(sock) => {
                let fds = crate::fdpass::recv_fds(sock.as_raw_fd())
                    .map_err(|e| format!("receive the network namespace: {e}"))?;
                fds.and_then(|f| f.into_iter().next())
                    .ok_or_else(|| "create the network namespace: the helper failed".to_string())
            }
        }
    }

    /// Moves the calling process into the namespace.
    pub fn join(self) -> Result<(), String> {
        let ns = self.receive()?;
        nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("join the network namespace: {e}"))
    }
}

impl Helper {
    /// Process `pid`, a child of the caller, as the one making a namespace: a foreground run's
    /// record writer, which makes it after the record (see [`make_and_send`]).
    pub fn adopt(pid: Pid) -> Helper {
        Helper(pid)
    }

    /// Waits for the helper, which exits as soon as it has sent the namespace or failed;
    /// returns why it failed, if it did.
    pub fn reap(self) -> Result<(), String> {
        match nix::sys::wait::waitpid(self.0, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => Err(format!(
                "create the network namespace: {}",
                std::io::Error::from_raw_os_error(code)
            )),
            other => Err(format!("network namespace helper: {other:?}")),
        }
    }
}

/// What the helper is given, packed into clone's one argument: the socket to send the
/// namespace down and the CPU its parent ran on when it started the helper.
#[derive(Debug, Clone, Copy, PartialEq)]
struct HelperJob {
    sock: RawFd,
    parent_cpu: usize,
}

impl HelperJob {
    fn pack(self) -> usize {
        (self.sock as u32 as usize) | (self.parent_cpu << 32)
    }

    fn unpack(arg: usize) -> HelperJob {
        HelperJob {
            sock: arg as u32 as RawFd,
            parent_cpu: arg >> 32,
        }
    }
}

/// The helper: its exit code is 0 or the errno of what failed.
extern "C" fn helper_main(arg: *mut libc::c_void) -> libc::c_int {
    let job = HelperJob::unpack(arg as usize);
    leave_cpu(job.parent_cpu);
    // SAFETY: the socket end `spawn` kept open for us.
    let sock = unsafe { BorrowedFd::borrow_raw(job.sock) };
    match make_and_send(sock) {
        Ok(()) => 0,
        Err(e) => e.raw_os_error(),
    }
}

/// Makes a network namespace with loopback up and sends a descriptor of it down `sock`, for a
/// [`NetNs`] at the other end; the calling process stays in it, so it is one that exits next:
/// the helper, or a foreground run's record writer (see `strata`'s `run_foreground`). Raw
/// system calls only, without the heap (see the module comment).
pub fn make_and_send(sock: BorrowedFd) -> rustix::io::Result<()> {
    // SAFETY: unsharing only the network namespace touches nothing the parent shares.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET)? };
    loopback_up()?;
    // Still the host's /proc here: `self` is this process.
    // Descriptors are left to the exit (ManuallyDrop): std would close them through glibc.
    let ns = ManuallyDrop::new(rustix::fs::open(
        c"/proc/self/ns/net",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    let fds = [ns.as_fd()];
    cmsg.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(sock, &[IoSlice::new(b"c")], &mut cmsg, SendFlags::NOSIGNAL)?;
    Ok(())
}

/// Moves the helper off its parent's CPU if it was started there and there is another: the
/// scheduler often starts a child on its parent's CPU and runs it first, and the parent, which
/// has the start's next steps to take, then waits for the whole namespace creation. A helper
/// the scheduler already placed elsewhere stays where it is (leaving "this CPU" there would
/// move it onto the parent's). The old set of CPUs is restored once moved, so the scheduler may
/// still bring the helper back if that CPU frees first.
fn leave_cpu(parent_cpu: usize) {
    if rustix::thread::sched_getcpu() != parent_cpu {
        return;
    }
    let Ok(all) = rustix::thread::sched_getaffinity(None) else {
        return;
    };
    if all.count() > 1 {
        let mut others = all;
        others.unset(parent_cpu);
        if rustix::thread::sched_setaffinity(None, &others).is_ok() {
            let _ = rustix::thread::sched_setaffinity(None, &all);
        }
    }
}

/// `ip link set lo up` without a shell tool.
fn loopback_up() -> rustix::io::Result<()> {
    const SIOCGIFFLAGS: rustix::ioctl::Opcode = libc::SIOCGIFFLAGS as _;
    const SIOCSIFFLAGS: rustix::ioctl::Opcode = libc::SIOCSIFFLAGS as _;
    let s = ManuallyDrop::new(rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )?);
    // SAFETY: an all-zero ifreq is valid; the name is NUL-terminated.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo\0".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: both requests read and write an ifreq.
    unsafe {
        rustix::ioctl::ioctl(
            &*s,
            rustix::ioctl::Updater::<SIOCGIFFLAGS, _>::new(&mut req),
        )?;
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        rustix::ioctl::ioctl(
            &*s,
            rustix::ioctl::Updater::<SIOCSIFFLAGS, _>::new(&mut req),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_jobs_survive_packing() {
        for job in [
            HelperJob {
                sock: 3,
                parent_cpu: 0,
            },
            HelperJob {
                sock: 1023,
                parent_cpu: 1,
            },
            HelperJob {
                sock: 7,
                parent_cpu: 4095,
            },
        ] {
            assert_eq!(HelperJob::unpack(job.pack()), job);
        }
    }
}
