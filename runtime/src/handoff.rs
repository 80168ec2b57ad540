//! Exec while a child finishes this process's work in this process's memory.
//!
//! A foreground `run` execs into the container's monitor, and the container's record is
//! written meanwhile by a child of the client (see `strata`'s `run_foreground`). A forked child
//! would make every page it then touches a copy-on-write fault (~0.5 ms for writing a record);
//! [`exec_handing_off`] instead starts the child with `clone(CLONE_VM)` on a stack of its own,
//! so it runs in the very memory the client used, and the parent execs at once. The exec gives
//! the parent a new address space and leaves the old one to the child alone, which frees it
//! when it exits — the same hand-over a `vfork` child's exec makes, in the other direction.
//!
//! Between the clone and the exec both processes share one heap and glibc's thread-local
//! state, so the parent does nothing there but write the child's pid into an argument made
//! beforehand, keep the child off its CPU ([`CpuSplit`]) and call `execv`: no allocation, no
//! locks.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;

/// The child's stack: mapped on demand (only the pages it touches are ever allocated), with a
/// guard page below. The child's code is the store's ordinary record writing (JSON, paths).
const STACK_SIZE: usize = 8 << 20;
const GUARD: usize = 4096;

/// Runs `child` in a `clone(CLONE_VM)` child and execs `exe` with `args` (the first is `argv[0]`)
/// in this process; the argument at index `pid_arg` gets the child's pid appended, as ten
/// digits. The two run on different CPUs where there are two ([`CpuSplit`]); the child must
/// call [`CpuSplit::restore`] before anything it sends lets the new program go on. Returns only
/// on failure, after the child has finished.
///
/// # Safety
/// The calling process must be single-threaded. `child` may borrow from the caller: on
/// success the caller's frames are never returned to (the exec leaves them, untouched, to the
/// child), and on failure this waits for the child before returning.
pub unsafe fn exec_handing_off<F: FnOnce(CpuSplit) -> i32>(
    exe: &OsStr,
    args: &[&OsStr],
    pid_arg: usize,
    child: F,
) -> std::io::Error {
    let to_c = |s: &OsStr| CString::new(s.as_bytes()).map_err(std::io::Error::other);
    let exe = match to_c(exe) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let mut argv: Vec<Vec<u8>> = Vec::with_capacity(args.len());
    for (i, a) in args.iter().enumerate() {
        let mut bytes = a.as_bytes().to_vec();
        if bytes.contains(&0) {
            return std::io::Error::other("an argument holds a NUL byte");
        }
        if i == pid_arg {
            bytes.extend_from_slice(b"0000000000");
        }
        bytes.push(0);
        argv.push(bytes);
    }
    let Some(slot) = argv.get_mut(pid_arg) else {
        return std::io::Error::other("the pid's argument is missing");
    };
    let digits = slot.len() - 11..slot.len() - 1;
    let digits_at = slot[digits.clone()].as_mut_ptr();
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr().cast()).collect();
    ptrs.push(std::ptr::null());

    let stack = match Stack::map() {
        Ok(s) => s,
        Err(e) => return e,
    };
    let split = CpuSplit::pin_parent();
    let job: *mut Job<F> = Box::into_raw(Box::new(Job {
        work: Some(child),
        split,
    }));
    // SAFETY: the stack is the child's alone and stays mapped (in the address space the exec
    // leaves to the child, or until the child is waited for below); `job` is read by the child
    // only. From here to execv this process allocates nothing (see the module comment).
    let pid = unsafe {
        libc::clone(
            run_job::<F>,
            stack.top().cast(),
            libc::CLONE_VM | libc::SIGCHLD,
            job.cast(),
        )
    };
    if pid < 0 {
        let err = std::io::Error::last_os_error();
        // SAFETY: no child took the job.
        drop(unsafe { Box::from_raw(job) });
        split.restore();
        return err;
    }
    // The child may not have run yet: queued behind us on our CPU, it would wait for the exec.
    split.move_child(pid);
    // SAFETY: `digits_at` points at ten bytes of `argv`, which nothing else touches.
    unsafe { write_digits(digits_at, pid as u32) };
    // SAFETY: NUL-terminated strings and a null-terminated array, alive until the exec.
    unsafe { libc::execv(exe.as_ptr(), ptrs.as_ptr()) };
    let err = std::io::Error::last_os_error();
    // The exec failed: the child still uses this memory (and may have borrowed the caller's).
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    drop(stack);
    split.restore();
    err
}

/// What the child is given.
struct Job<F> {
    work: Option<F>,
    split: CpuSplit,
}

/// The child's entry: moves to a CPU of its own, runs the work and exits with its code
/// (glibc's clone wrapper calls `exit` with what this returns). A panic must not unwind into C.
extern "C" fn run_job<F: FnOnce(CpuSplit) -> i32>(job: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `exec_handing_off` passes a leaked `Box<Job<F>>` to this child alone.
    let mut job = unsafe { Box::from_raw(job.cast::<Job<F>>()) };
    job.split.leave_parent();
    let split = job.split;
    let Some(f) = job.work.take() else { return 125 };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(split))).unwrap_or(125)
}

/// The parent on one CPU, the child on the others, from the clone until the child says the
/// parent may go anywhere again.
///
/// Why: the scheduler queues a new child on its parent's CPU and often runs it first, so the
/// parent, whose exec is the next step, would wait for the child's whole work; and a child
/// that moves itself races the exec's own balancing, which moves the parent to the idlest CPU
/// (often the one the child is leaving for). So the parent pins itself to the CPU it is on
/// before the clone, the child (which inherits the pin) is moved to the parent's other CPUs by
/// whichever of the two runs first, and the child restores the parent's CPUs once the exec is
/// past ([`Self::restore`]), before the parent's new program starts children of its own (they
/// inherit its CPUs).
#[derive(Clone, Copy)]
pub struct CpuSplit {
    /// The parent's CPUs before the pin, its pid and the CPU it was pinned to; `None` with a
    /// single CPU to run on.
    pinned: Option<(rustix::thread::CpuSet, rustix::process::Pid, usize)>,
}

impl CpuSplit {
    fn pin_parent() -> CpuSplit {
        let Ok(all) = rustix::thread::sched_getaffinity(None) else {
            return CpuSplit { pinned: None };
        };
        let here = rustix::thread::sched_getcpu();
        if all.count() < 2 || !all.is_set(here) {
            return CpuSplit { pinned: None };
        }
        let mut one = rustix::thread::CpuSet::new();
        one.set(here);
        if rustix::thread::sched_setaffinity(None, &one).is_err() {
            return CpuSplit { pinned: None };
        }
        let me = rustix::process::getpid();
        CpuSplit {
            pinned: Some((all, me, here)),
        }
    }

    /// The parent's other CPUs.
    fn others(&self) -> Option<rustix::thread::CpuSet> {
        let (all, _, here) = self.pinned.as_ref()?;
        let mut others = *all;
        others.unset(*here);
        Some(others)
    }

    /// In the child, when it runs first: move to the parent's other CPUs.
    fn leave_parent(&self) {
        if let Some(others) = self.others() {
            let _ = rustix::thread::sched_setaffinity(None, &others);
        }
    }

    /// In the parent, when it runs first: move the child to the other CPUs, where it starts.
    fn move_child(&self, child: libc::pid_t) {
        if let Some(others) = self.others() {
            let pid = rustix::process::Pid::from_raw(child);
            let _ = rustix::thread::sched_setaffinity(pid, &others);
        }
    }

    /// Gives the parent (or the program it became) back the CPUs it had.
    pub fn restore(&self) {
        if let Some((all, parent, _)) = &self.pinned {
            let _ = rustix::thread::sched_setaffinity(Some(*parent), all);
        }
    }
}

/// Writes `n` as ten decimal digits, without allocating.
///
/// # Safety
/// `at` must point at ten writable bytes.
unsafe fn write_digits(at: *mut u8, mut n: u32) {
    for i in (0..10).rev() {
        // SAFETY: i < 10.
        unsafe { *at.add(i) = b'0' + (n % 10) as u8 };
        n /= 10;
    }
}

/// An anonymous mapping for a stack, with a guard page at its low end.
struct Stack(*mut libc::c_void);

impl Stack {
    fn map() -> std::io::Result<Stack> {
        // SAFETY: a fresh anonymous mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                STACK_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let stack = Stack(base);
        // SAFETY: the lowest page of our own mapping.
        if unsafe { libc::mprotect(base, GUARD, libc::PROT_NONE) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stack)
    }

    fn top(&self) -> *mut u8 {
        // SAFETY: one past the end of the mapping, where a downward stack starts.
        unsafe { self.0.cast::<u8>().add(STACK_SIZE) }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: our mapping, no longer used (the child was waited for or never started).
        unsafe { libc::munmap(self.0, STACK_SIZE) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_are_written_as_ten_digits() {
        let mut buf = *b"0000000000";
        // SAFETY: ten bytes.
        unsafe { write_digits(buf.as_mut_ptr(), 4_194_304) };
        assert_eq!(&buf, b"0004194304");
        assert_eq!(
            std::str::from_utf8(&buf).unwrap().parse::<i32>(),
            Ok(4_194_304)
        );
    }
}
