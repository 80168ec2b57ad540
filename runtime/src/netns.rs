//! The container's network namespace, made by a helper process while the rest of the start
//! goes on. Making one (its sysctl tables, the loopback device) costs ~0.5 ms of CPU, the
//! longest single step of a start, and the other core can spend it meanwhile.
//!
//! For a foreground `run` the client starts the helper right after it has parsed its
//! arguments, before it execs into the monitor: the helper stays the monitor's child across
//! the exec, and the socket is handed over on the command line ([`NetNs::to_arg`]). Otherwise
//! init starts it. The helper creates the namespace, brings loopback up, sends a descriptor of
//! it down a socket and exits: a descriptor in flight keeps the namespace alive until init
//! receives it and joins with setns(2) (before it mounts /sys, which shows the devices of the
//! namespace it is mounted from). Whoever started the helper reaps it ([`Helper::reap`]).
//!
//! The helper is a `clone(CLONE_VM)` child on a stack of its own, not a fork: a fork would
//! make every page the parent then writes a copy-on-write fault while the helper lives. It
//! shares the parent's memory, including glibc's thread-local state, so it runs only raw
//! system calls (rustix's, which touch neither errno nor the heap) and leaves by `exit`. It
//! first moves itself off the parent's CPU: the scheduler starts a new child on its parent's
//! CPU, and the parent would otherwise wait the ~0.5 ms of namespace creation for it.

use std::io::IoSlice;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sched::CloneFlags;
use nix::unistd::Pid;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

/// The receiving end of a network namespace being made.
#[derive(Debug)]
pub struct NetNs {
    sock: OwnedFd,
}

/// The process making a [`NetNs`], to be reaped by its parent.
#[derive(Debug)]
pub struct Helper(Pid);

/// The helper's stack. A process starts at most one helper (the client for its run, or init
/// for its container), and the stack is never freed: a helper may outlive its parent's image
/// (the client execs into the monitor meanwhile; the old memory lives on with the helper).
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
        // SAFETY: the stack is ours alone (STACK_TAKEN) and outlives the helper (static); the
        // child runs `helper_main`, which keeps to raw system calls (see the module comment),
        // with its own copy of the descriptor table.
        let pid = unsafe {
            let top = std::ptr::addr_of_mut!(STACK).cast::<u8>().add(STACK_SIZE);
            libc::clone(
                helper_main,
                top.cast(),
                libc::CLONE_VM | libc::SIGCHLD,
                theirs.as_raw_fd() as usize as *mut libc::c_void,
            )
        };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        drop(theirs);
        Ok((NetNs { sock: ours }, Helper(Pid::from_raw(pid))))
    }

    /// Keeps the socket open across exec and names it and the helper for the new program's
    /// command line (`FD:PID`); the helper stays a child of the process across the exec.
    pub fn to_arg(&self, helper: &Helper) -> std::io::Result<String> {
        nix::fcntl::fcntl(
            &self.sock,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )?;
        Ok(format!("{}:{}", self.sock.as_raw_fd(), helper.0))
    }

    /// The other side of [`NetNs::to_arg`]: takes the inherited socket (marked close-on-exec
    /// again, so it goes no further) and the helper. `None` if `arg` does not name an open
    /// unix socket.
    pub fn from_arg(arg: &str) -> Option<(NetNs, Helper)> {
        let (fd, pid) = arg.split_once(':')?;
        let fd: RawFd = fd.parse().ok()?;
        let pid: i32 = pid.parse().ok()?;
        if fd < 3 || pid <= 0 {
            return None;
        }
        // SAFETY: fstat on a number that may or may not be an open descriptor.
        let fd_ref = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let st = nix::sys::stat::fstat(fd_ref).ok()?;
        if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return None;
        }
        // SAFETY: fd is an open socket the parent handed over for us alone.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        nix::fcntl::fcntl(
            &sock,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .ok()?;
        Some((NetNs { sock }, Helper(Pid::from_raw(pid))))
    }

    /// Moves the calling process into the namespace. `Err` names what failed; a helper that
    /// failed tells why through its exit code ([`Helper::reap`]).
    pub fn join(self) -> Result<(), String> {
        let fds = crate::fdpass::recv_fds(self.sock.as_raw_fd())
            .map_err(|e| format!("receive the network namespace: {e}"))?;
        let Some(ns) = fds.and_then(|f| f.into_iter().next()) else {
            return Err("create the network namespace: the helper failed".into());
        };
        nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("join the network namespace: {e}"))
    }
}

impl Helper {
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

/// The helper: its exit code is 0 or the errno of what failed.
extern "C" fn helper_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the number of the socket end `spawn` kept open for us.
    let sock = unsafe { BorrowedFd::borrow_raw(arg as usize as RawFd) };
    match make(sock) {
        Ok(()) => 0,
        Err(e) => e.raw_os_error(),
    }
}

fn make(sock: BorrowedFd) -> rustix::io::Result<()> {
    move_off_this_cpu();
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

/// Leaves the CPU the helper was started on (its parent's) when there is another.
fn move_off_this_cpu() {
    let Ok(mut set) = rustix::thread::sched_getaffinity(None) else {
        return;
    };
    if set.count() > 1 {
        set.unset(rustix::thread::sched_getcpu());
        let _ = rustix::thread::sched_setaffinity(None, &set);
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
