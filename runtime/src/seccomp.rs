//! The default seccomp profile: Docker's allowlist (`moby/profiles/seccomp/default.json`,
//! kept in `tests/data/` and compared with the compiled program for every x86_64 syscall and
//! several capability sets), compiled to classic BPF here. Syscalls outside the list fail with EPERM; `clone3` fails with
//! ENOSYS so libcs fall back to `clone`, whose namespace flags are filtered. Calls Docker allows
//! only with a capability are allowed when the container has that capability.
//!
//! Key design decision: the program is a binary search over ranges of syscall numbers that
//! share a verdict (about 60 ranges, ~200 instructions), not a list of one comparison per
//! syscall (~1,500 instructions). The kernel converts, JIT-compiles and, for its action cache,
//! emulates a filter for every syscall number when it is loaded; with a linear list that alone
//! cost ~0.6 ms of every container start.

use std::collections::{BTreeMap, BTreeSet};

/// A loadable classic BPF program.
pub type BpfProgram = Vec<libc::sock_filter>;

/// io_pgetevents (x86_64 number; libc does not name it on every target).
const SYS_IO_PGETEVENTS: i64 = 333;

/// x86_64 syscalls newer than the C library's headers name (Linux 6.5-6.13), which Docker's
/// profile allows where the kernel has them.
const NEWER_ALLOWED: &[i64] = &[
    335, // uretprobe
    451, // cachestat
    452, // fchmodat2
    453, // map_shadow_stack
    454, // futex_wake
    455, // futex_wait
    456, // futex_requeue
    457, // statmount
    458, // listmount
    462, // mseal
    463, // setxattrat
    464, // getxattrat
    465, // listxattrat
    466, // removexattrat
];

/// The LSM attribute calls (Linux 6.8), allowed with CAP_SYS_ADMIN.
const LSM_GET_SELF_ATTR: i64 = 459;
const LSM_SET_SELF_ATTR: i64 = 460;
const LSM_LIST_MODULES: i64 = 461;

/// Unconditionally allowed (x86_64 names only; 32-bit-only calls do not exist here).
const ALLOWED: &[i64] = &[
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_access,
    libc::SYS_add_key,
    // With ptrace: Docker allows the three on kernels from 4.8 on (all it supports).
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_keyctl,
    libc::SYS_request_key,
    libc::SYS_modify_ldt,
    libc::SYS_adjtimex,
    libc::SYS_alarm,
    libc::SYS_arch_prctl,
    libc::SYS_bind,
    libc::SYS_brk,
    libc::SYS_capget,
    libc::SYS_capset,
    libc::SYS_chdir,
    libc::SYS_chmod,
    libc::SYS_chown,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_getres,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_connect,
    libc::SYS_copy_file_range,
    libc::SYS_creat,
    libc::SYS_dup,
    libc::SYS_dup2,
    libc::SYS_dup3,
    libc::SYS_epoll_create,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_ctl_old,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_wait_old,
    libc::SYS_eventfd,
    libc::SYS_eventfd2,
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_fadvise64,
    libc::SYS_fallocate,
    libc::SYS_fanotify_mark,
    libc::SYS_fchdir,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_fcntl,
    libc::SYS_fdatasync,
    libc::SYS_fgetxattr,
    libc::SYS_flistxattr,
    libc::SYS_flock,
    libc::SYS_fork,
    libc::SYS_fremovexattr,
    libc::SYS_fsetxattr,
    libc::SYS_fstat,
    libc::SYS_fstatfs,
    libc::SYS_fsync,
    libc::SYS_ftruncate,
    libc::SYS_futex,
    libc::SYS_futex_waitv,
    libc::SYS_futimesat,
    libc::SYS_getcpu,
    libc::SYS_getcwd,
    libc::SYS_getdents,
    libc::SYS_getdents64,
    libc::SYS_getegid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getgroups,
    libc::SYS_getitimer,
    libc::SYS_getpeername,
    libc::SYS_getpgid,
    libc::SYS_getpgrp,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_getpriority,
    libc::SYS_getrandom,
    libc::SYS_getresgid,
    libc::SYS_getresuid,
    libc::SYS_getrlimit,
    libc::SYS_get_robust_list,
    libc::SYS_getrusage,
    libc::SYS_getsid,
    libc::SYS_getsockname,
    libc::SYS_getsockopt,
    libc::SYS_get_thread_area,
    libc::SYS_gettid,
    libc::SYS_gettimeofday,
    libc::SYS_getuid,
    libc::SYS_getxattr,
    libc::SYS_inotify_add_watch,
    libc::SYS_inotify_init,
    libc::SYS_inotify_init1,
    libc::SYS_inotify_rm_watch,
    libc::SYS_io_cancel,
    libc::SYS_ioctl,
    libc::SYS_io_destroy,
    libc::SYS_io_getevents,
    SYS_IO_PGETEVENTS,
    libc::SYS_ioprio_get,
    libc::SYS_ioprio_set,
    libc::SYS_io_setup,
    libc::SYS_io_submit,
    libc::SYS_kill,
    libc::SYS_landlock_add_rule,
    libc::SYS_landlock_create_ruleset,
    libc::SYS_landlock_restrict_self,
    libc::SYS_lchown,
    libc::SYS_lgetxattr,
    libc::SYS_link,
    libc::SYS_linkat,
    libc::SYS_listen,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_lremovexattr,
    libc::SYS_lseek,
    libc::SYS_lsetxattr,
    libc::SYS_lstat,
    libc::SYS_madvise,
    libc::SYS_membarrier,
    libc::SYS_memfd_create,
    libc::SYS_memfd_secret,
    libc::SYS_mincore,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_mknod,
    libc::SYS_mknodat,
    libc::SYS_mlock,
    libc::SYS_mlock2,
    libc::SYS_mlockall,
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_mq_getsetattr,
    libc::SYS_mq_notify,
    libc::SYS_mq_open,
    libc::SYS_mq_timedreceive,
    libc::SYS_mq_timedsend,
    libc::SYS_mq_unlink,
    libc::SYS_mremap,
    libc::SYS_msgctl,
    libc::SYS_msgget,
    libc::SYS_msgrcv,
    libc::SYS_msgsnd,
    libc::SYS_msync,
    libc::SYS_munlock,
    libc::SYS_munlockall,
    libc::SYS_munmap,
    libc::SYS_name_to_handle_at,
    libc::SYS_nanosleep,
    libc::SYS_newfstatat,
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_pause,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal,
    libc::SYS_pipe,
    libc::SYS_pipe2,
    libc::SYS_pkey_alloc,
    libc::SYS_pkey_free,
    libc::SYS_pkey_mprotect,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_prctl,
    libc::SYS_pread64,
    libc::SYS_preadv,
    libc::SYS_preadv2,
    libc::SYS_prlimit64,
    libc::SYS_process_mrelease,
    libc::SYS_pselect6,
    libc::SYS_ptrace,
    libc::SYS_pwrite64,
    libc::SYS_pwritev,
    libc::SYS_pwritev2,
    libc::SYS_read,
    libc::SYS_readahead,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_readv,
    libc::SYS_recvfrom,
    libc::SYS_recvmmsg,
    libc::SYS_recvmsg,
    libc::SYS_remap_file_pages,
    libc::SYS_removexattr,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_restart_syscall,
    libc::SYS_rmdir,
    libc::SYS_rseq,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigpending,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigsuspend,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_tgsigqueueinfo,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_getattr,
    libc::SYS_sched_getparam,
    libc::SYS_sched_get_priority_max,
    libc::SYS_sched_get_priority_min,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_rr_get_interval,
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_setattr,
    libc::SYS_sched_setparam,
    libc::SYS_sched_setscheduler,
    libc::SYS_sched_yield,
    libc::SYS_seccomp,
    libc::SYS_select,
    libc::SYS_semctl,
    libc::SYS_semget,
    libc::SYS_semop,
    libc::SYS_semtimedop,
    libc::SYS_sendfile,
    libc::SYS_sendmmsg,
    libc::SYS_sendmsg,
    libc::SYS_sendto,
    libc::SYS_setfsgid,
    libc::SYS_setfsuid,
    libc::SYS_setgid,
    libc::SYS_setgroups,
    libc::SYS_setitimer,
    libc::SYS_setpgid,
    libc::SYS_setpriority,
    libc::SYS_setregid,
    libc::SYS_setresgid,
    libc::SYS_setresuid,
    libc::SYS_setreuid,
    libc::SYS_setrlimit,
    libc::SYS_set_robust_list,
    libc::SYS_setsid,
    libc::SYS_setsockopt,
    libc::SYS_set_thread_area,
    libc::SYS_set_tid_address,
    libc::SYS_setuid,
    libc::SYS_setxattr,
    libc::SYS_shmat,
    libc::SYS_shmctl,
    libc::SYS_shmdt,
    libc::SYS_shmget,
    libc::SYS_shutdown,
    libc::SYS_sigaltstack,
    libc::SYS_signalfd,
    libc::SYS_signalfd4,
    libc::SYS_socketpair,
    libc::SYS_splice,
    libc::SYS_stat,
    libc::SYS_statfs,
    libc::SYS_statx,
    libc::SYS_symlink,
    libc::SYS_symlinkat,
    libc::SYS_sync,
    libc::SYS_sync_file_range,
    libc::SYS_syncfs,
    libc::SYS_sysinfo,
    libc::SYS_tee,
    libc::SYS_tgkill,
    libc::SYS_time,
    libc::SYS_timer_create,
    libc::SYS_timer_delete,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_gettime,
    libc::SYS_timer_settime,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_gettime,
    libc::SYS_timerfd_settime,
    libc::SYS_times,
    libc::SYS_tkill,
    libc::SYS_truncate,
    libc::SYS_umask,
    libc::SYS_uname,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_utime,
    libc::SYS_utimensat,
    libc::SYS_utimes,
    libc::SYS_vfork,
    libc::SYS_vmsplice,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_write,
    libc::SYS_writev,
];

/// Syscalls Docker allows only when the container holds a capability.
fn by_capability(cap: &str) -> &'static [i64] {
    match cap {
        "SYS_ADMIN" => &[
            libc::SYS_bpf,
            libc::SYS_clone,
            libc::SYS_fanotify_init,
            libc::SYS_fsconfig,
            libc::SYS_fsmount,
            libc::SYS_fsopen,
            libc::SYS_fspick,
            libc::SYS_lookup_dcookie,
            LSM_GET_SELF_ATTR,
            LSM_SET_SELF_ATTR,
            LSM_LIST_MODULES,
            libc::SYS_mount,
            libc::SYS_mount_setattr,
            libc::SYS_move_mount,
            libc::SYS_open_tree,
            libc::SYS_perf_event_open,
            libc::SYS_quotactl,
            libc::SYS_quotactl_fd,
            libc::SYS_setdomainname,
            libc::SYS_sethostname,
            libc::SYS_setns,
            libc::SYS_syslog,
            libc::SYS_umount2,
            libc::SYS_unshare,
        ],
        "DAC_READ_SEARCH" => &[libc::SYS_open_by_handle_at],
        "SYS_BOOT" => &[libc::SYS_reboot],
        "SYS_CHROOT" => &[libc::SYS_chroot],
        "SYS_MODULE" => &[
            libc::SYS_delete_module,
            libc::SYS_init_module,
            libc::SYS_finit_module,
        ],
        "SYS_PACCT" => &[libc::SYS_acct],
        "SYS_PTRACE" => &[
            libc::SYS_kcmp,
            libc::SYS_pidfd_getfd,
            libc::SYS_process_madvise,
            libc::SYS_process_vm_readv,
            libc::SYS_process_vm_writev,
            libc::SYS_ptrace,
        ],
        "SYS_RAWIO" => &[libc::SYS_iopl, libc::SYS_ioperm],
        "SYS_TIME" => &[libc::SYS_settimeofday, libc::SYS_clock_settime],
        "SYS_TTY_CONFIG" => &[libc::SYS_vhangup],
        "SYS_NICE" => &[
            libc::SYS_get_mempolicy,
            libc::SYS_mbind,
            libc::SYS_set_mempolicy,
            libc::SYS_set_mempolicy_home_node,
        ],
        "SYSLOG" => &[libc::SYS_syslog],
        "BPF" => &[libc::SYS_bpf],
        "PERFMON" => &[libc::SYS_perf_event_open],
        _ => &[],
    }
}

/// The namespace flags `clone` may not use without CAP_SYS_ADMIN.
const CLONE_NS_FLAGS: u64 = 0x7E02_0000;
const AF_VSOCK: u64 = 40;

/// What a syscall gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Allow,
    Errno(u32),
    /// Allowed when the argument check of this index passes, else EPERM.
    Check(usize),
}

/// A test on one 64-bit syscall argument.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Check {
    /// `(arg & mask) == value`.
    MaskedEq { arg: u8, mask: u64, value: u64 },
    /// `arg != value`.
    Ne { arg: u8, value: u64 },
    /// `arg` is one of `values`.
    OneOf { arg: u8, values: Vec<u64> },
}

/// A profile: verdicts by syscall number; any other number gets EPERM.
#[derive(Debug, Default)]
struct Policy {
    verdicts: BTreeMap<u32, Verdict>,
    checks: Vec<Check>,
}

impl Policy {
    fn set(&mut self, nr: i64, v: Verdict) {
        self.verdicts.insert(nr as u32, v);
    }
    fn check(&mut self, nr: i64, c: Check) {
        self.checks.push(c);
        self.set(nr, Verdict::Check(self.checks.len() - 1));
    }
}

const DENY: Verdict = Verdict::Errno(libc::EPERM as u32);

/// Docker's policy for a container holding `caps` (capability names, upper-case).
fn policy(caps: &BTreeSet<String>) -> Policy {
    let mut p = Policy::default();
    for &s in ALLOWED.iter().chain(NEWER_ALLOWED) {
        p.set(s, Verdict::Allow);
    }
    for c in caps {
        for &s in by_capability(c) {
            p.set(s, Verdict::Allow);
        }
    }
    if caps.contains("SYS_ADMIN") {
        p.set(libc::SYS_clone3, Verdict::Allow);
    } else {
        // clone without namespace flags; clone3 (whose flags live in memory the filter cannot
        // read) is answered ENOSYS, so libcs fall back to clone.
        p.check(
            libc::SYS_clone,
            Check::MaskedEq {
                arg: 0,
                mask: CLONE_NS_FLAGS,
                value: 0,
            },
        );
        p.set(libc::SYS_clone3, Verdict::Errno(libc::ENOSYS as u32));
    }
    // socket: anything but AF_VSOCK.
    p.check(
        libc::SYS_socket,
        Check::Ne {
            arg: 0,
            value: AF_VSOCK,
        },
    );
    // personality: the harmless personas Docker allows.
    p.check(
        libc::SYS_personality,
        Check::OneOf {
            arg: 0,
            values: vec![0, 0x0008, 0x20000, 0x20008, 0xffff_ffff],
        },
    );
    p
}

/// The default profile for a process with `caps` (capability numbers, as in a
/// [`crate::spec::ProcessSpec`]).
pub fn profile_for_caps(caps: &BTreeSet<u32>) -> Result<Vec<BpfProgram>, String> {
    let names = caps
        .iter()
        .map(|&c| crate::caps::NAMES[c as usize].to_string())
        .collect();
    default_profile(&names)
}

/// Writes `filters` for [`read_filters`] at the other end of a stream (the monitor builds a
/// container's filter while init sets up, and sends it with the cgroup).
pub fn write_filters(w: &mut impl std::io::Write, filters: &[BpfProgram]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(4 + filters.iter().map(|f| 4 + 8 * f.len()).sum::<usize>());
    out.extend((filters.len() as u32).to_le_bytes());
    for f in filters {
        out.extend((f.len() as u32).to_le_bytes());
        for i in f {
            out.extend(i.code.to_le_bytes());
            out.push(i.jt);
            out.push(i.jf);
            out.extend(i.k.to_le_bytes());
        }
    }
    w.write_all(&out)
}

/// Reads what [`write_filters`] wrote.
pub fn read_filters(r: &mut impl std::io::Read) -> std::io::Result<Vec<BpfProgram>> {
    let mut word = [0u8; 4];
    r.read_exact(&mut word)?;
    let count = u32::from_le_bytes(word);
    let too_big = || std::io::Error::new(std::io::ErrorKind::InvalidData, "filter too large");
    if count > 8 {
        return Err(too_big());
    }
    let mut filters = Vec::new();
    for _ in 0..count {
        r.read_exact(&mut word)?;
        let len = u32::from_le_bytes(word) as usize;
        // BPF_MAXINSNS
        if len > 4096 {
            return Err(too_big());
        }
        let mut raw = vec![0u8; 8 * len];
        r.read_exact(&mut raw)?;
        filters.push(
            raw.chunks_exact(8)
                .map(|c| libc::sock_filter {
                    code: u16::from_le_bytes([c[0], c[1]]),
                    jt: c[2],
                    jf: c[3],
                    k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                })
                .collect(),
        );
    }
    Ok(filters)
}

/// Compiles the profile for a container holding `caps` (capability names, upper-case).
/// Returns the filters to load in order.
pub fn default_profile(caps: &BTreeSet<String>) -> Result<Vec<BpfProgram>, String> {
    Ok(vec![compile(&policy(caps))])
}

// Classic BPF encoding (linux/bpf_common.h): class | size/op | source.
/// BPF_LD | BPF_W | BPF_ABS.
const BPF_LD_W_ABS: u16 = 0x20;
/// BPF_ALU | BPF_AND | BPF_K.
const BPF_ALU_AND_K: u16 = 0x54;
/// BPF_JMP | BPF_JA.
const BPF_JMP_JA: u16 = 0x05;
/// BPF_JMP | BPF_JEQ | BPF_K.
const BPF_JMP_JEQ_K: u16 = 0x15;
/// BPF_JMP | BPF_JGE | BPF_K.
const BPF_JMP_JGE_K: u16 = 0x35;
/// BPF_RET | BPF_K.
const BPF_RET_K: u16 = 0x06;
// linux/seccomp.h
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARGS: u32 = 16;

#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(not(target_arch = "aarch64"))]
const AUDIT_ARCH: u32 = 0xC000_003E;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn ret(v: Verdict) -> libc::sock_filter {
    match v {
        Verdict::Allow => insn(BPF_RET_K, 0, 0, RET_ALLOW),
        Verdict::Errno(e) => insn(BPF_RET_K, 0, 0, RET_ERRNO | (e & 0xffff)),
        Verdict::Check(_) => unreachable!("a check is a jump"),
    }
}

/// An instruction of the search tree: a real one, or a jump to a check block (placed after
/// the tree, so its offset is known only at the end).
enum Tree {
    Insn(libc::sock_filter),
    ToCheck(usize),
}

/// The verdict of every syscall number as ranges: (first number, verdict), sorted, covering
/// everything from 0; the last range runs to the end. Neighbours with the same plain verdict
/// are merged.
fn ranges(p: &Policy) -> Vec<(u32, Verdict)> {
    let max = p.verdicts.keys().max().copied().unwrap_or(0);
    let mut out: Vec<(u32, Verdict)> = Vec::new();
    for n in 0..=max + 1 {
        let v = p.verdicts.get(&n).copied().unwrap_or(DENY);
        // Checks have an index each, so two of them are never equal.
        if out.last().map(|l| l.1) != Some(v) {
            out.push((n, v));
        }
    }
    out
}

/// A search tree over `ranges`, with A holding the syscall number.
fn tree(ranges: &[(u32, Verdict)]) -> Vec<Tree> {
    if let [(_, v)] = ranges {
        return vec![match v {
            Verdict::Check(i) => Tree::ToCheck(*i),
            v => Tree::Insn(ret(*v)),
        }];
    }
    let mid = ranges.len() / 2;
    let below = tree(&ranges[..mid]);
    let above = tree(&ranges[mid..]);
    let mut out = Vec::with_capacity(below.len() + above.len() + 2);
    match u8::try_from(below.len()) {
        Ok(skip) => out.push(Tree::Insn(insn(BPF_JMP_JGE_K, skip, 0, ranges[mid].0))),
        Err(_) => {
            // Too far for a conditional jump: go through an unconditional one.
            out.push(Tree::Insn(insn(BPF_JMP_JGE_K, 0, 1, ranges[mid].0)));
            out.push(Tree::Insn(insn(BPF_JMP_JA, 0, 0, below.len() as u32)));
        }
    }
    out.extend(below);
    out.extend(above);
    out
}

/// Loads the low or high half of argument `arg`.
fn load_arg(arg: u8, high: bool) -> libc::sock_filter {
    insn(
        BPF_LD_W_ABS,
        0,
        0,
        DATA_ARGS + 8 * arg as u32 + if high { 4 } else { 0 },
    )
}

/// A check's block: ends in ALLOW when it passes, EPERM when not.
fn check_block(c: &Check) -> Vec<libc::sock_filter> {
    let split = |v: u64| ((v >> 32) as u32, v as u32);
    let deny = ret(DENY);
    let allow = ret(Verdict::Allow);
    match c {
        Check::MaskedEq { arg, mask, value } => {
            let ((mh, ml), (vh, vl)) = (split(*mask), split(*value));
            vec![
                load_arg(*arg, true),
                insn(BPF_ALU_AND_K, 0, 0, mh),
                insn(BPF_JMP_JEQ_K, 0, 3, vh),
                load_arg(*arg, false),
                insn(BPF_ALU_AND_K, 0, 0, ml),
                insn(BPF_JMP_JEQ_K, 1, 0, vl),
                deny,
                allow,
            ]
        }
        Check::Ne { arg, value } => {
            let (vh, vl) = split(*value);
            vec![
                load_arg(*arg, true),
                insn(BPF_JMP_JEQ_K, 0, 3, vh),
                load_arg(*arg, false),
                insn(BPF_JMP_JEQ_K, 0, 1, vl),
                deny,
                allow,
            ]
        }
        Check::OneOf { arg, values } => {
            // Per value: high half equal? then low half equal → allow.
            let n = values.len();
            let mut out = Vec::with_capacity(4 * n + 2);
            for (i, v) in values.iter().enumerate() {
                let (vh, vl) = split(*v);
                // Instructions after this value's last one, up to the final ALLOW.
                let to_allow = (4 * (n - 1 - i) + 1) as u8;
                out.push(load_arg(*arg, true));
                out.push(insn(BPF_JMP_JEQ_K, 0, 2, vh));
                out.push(load_arg(*arg, false));
                out.push(insn(BPF_JMP_JEQ_K, to_allow, 0, vl));
            }
            out.push(deny);
            out.push(allow);
            out
        }
    }
}

/// The whole program: architecture check, syscall number, search tree, check blocks.
fn compile(p: &Policy) -> BpfProgram {
    let mut prog = vec![
        insn(BPF_LD_W_ABS, 0, 0, DATA_ARCH),
        insn(BPF_JMP_JEQ_K, 1, 0, AUDIT_ARCH),
        insn(BPF_RET_K, 0, 0, RET_KILL_PROCESS),
        insn(BPF_LD_W_ABS, 0, 0, DATA_NR),
    ];
    let t = tree(&ranges(p));
    let tree_end = prog.len() + t.len();
    let mut starts = Vec::with_capacity(p.checks.len());
    let mut blocks = Vec::new();
    for c in &p.checks {
        starts.push(tree_end + blocks.len());
        blocks.extend(check_block(c));
    }
    for (i, node) in t.into_iter().enumerate() {
        let at = prog.len();
        debug_assert_eq!(at, 4 + i);
        prog.push(match node {
            Tree::Insn(x) => x,
            Tree::ToCheck(c) => insn(BPF_JMP_JA, 0, 0, (starts[c] - at - 1) as u32),
        });
    }
    prog.extend(blocks);
    prog
}

/// Loads the filters into the current process. Needs CAP_SYS_ADMIN (the container's init
/// still has it here): unlike libseccomp's default, this does not set no_new_privs,
/// which Docker leaves off unless asked (`--security-opt no-new-privileges`).
pub fn apply(filters: &[BpfProgram]) -> std::io::Result<()> {
    for f in filters {
        let prog = libc::sock_fprog {
            len: f.len() as u16,
            filter: f.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: the kernel copies the program; `f` outlives the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: &[BpfProgram], b: &[BpfProgram]) -> bool {
        let key = |f: &BpfProgram| -> Vec<(u16, u8, u8, u32)> {
            f.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect()
        };
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| key(x) == key(y))
    }

    #[test]
    fn filters_sent_by_the_monitor_arrive_whole_and_oversized_ones_are_refused() {
        let caps = crate::caps::container_set(false, &[], &[]);
        let filters = profile_for_caps(&caps).unwrap();
        let mut wire = Vec::new();
        write_filters(&mut wire, &filters).unwrap();
        assert!(same(&read_filters(&mut wire.as_slice()).unwrap(), &filters));
        // none at all (seccomp=unconfined), and a stream cut short
        let mut empty = Vec::new();
        write_filters(&mut empty, &[]).unwrap();
        assert!(read_filters(&mut empty.as_slice()).unwrap().is_empty());
        assert!(read_filters(&mut &wire[..wire.len() - 1]).is_err());
        let mut huge = 1u32.to_le_bytes().to_vec();
        huge.extend(100_000u32.to_le_bytes());
        assert!(read_filters(&mut huge.as_slice()).is_err());
    }

    /// Runs a classic BPF seccomp program on (arch, nr, args): the kernel's semantics for the
    /// instructions `compile` emits.
    fn run(prog: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let word = |off: u32| -> u32 {
            match off {
                DATA_NR => nr,
                DATA_ARCH => arch,
                o if o >= DATA_ARGS => {
                    let i = ((o - DATA_ARGS) / 8) as usize;
                    let v = args[i];
                    if (o - DATA_ARGS).is_multiple_of(8) {
                        v as u32
                    } else {
                        (v >> 32) as u32
                    }
                }
                o => panic!("load of offset {o}"),
            }
        };
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                BPF_LD_W_ABS => a = word(i.k),
                BPF_ALU_AND_K => a &= i.k,
                BPF_JMP_JA => pc += i.k as usize,
                BPF_JMP_JEQ_K => pc += if a == i.k { i.jt } else { i.jf } as usize,
                BPF_JMP_JGE_K => pc += if a >= i.k { i.jt } else { i.jf } as usize,
                BPF_RET_K => return i.k,
                c => panic!("unexpected instruction {c:#x}"),
            }
        }
    }

    /// What the policy means, evaluated directly.
    fn expected(p: &Policy, nr: u32, args: [u64; 6]) -> u32 {
        let v = p.verdicts.get(&nr).copied().unwrap_or(DENY);
        let pass = |c: &Check| match c {
            Check::MaskedEq { arg, mask, value } => args[*arg as usize] & mask == *value,
            Check::Ne { arg, value } => args[*arg as usize] != *value,
            Check::OneOf { arg, values } => values.contains(&args[*arg as usize]),
        };
        let v = match v {
            Verdict::Check(i) if pass(&p.checks[i]) => Verdict::Allow,
            Verdict::Check(_) => DENY,
            v => v,
        };
        ret(v).k
    }

    fn caps(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_compiled_program_decides_every_syscall_as_the_policy_says() {
        let docker: Vec<&str> = crate::caps::DOCKER_DEFAULT.to_vec();
        let mut admin = docker.clone();
        admin.push("SYS_ADMIN");
        let interesting: [u64; 10] = [
            0,
            8,
            40,
            0x2_0000,
            0x2_0008,
            0x1000_0000,
            0xffff_ffff,
            0x1_0000_0008,
            0x7E02_0000,
            u64::MAX,
        ];
        for set in [caps(&docker), caps(&admin), caps(&[])] {
            let p = policy(&set);
            let prog = compile(&p);
            assert!(prog.len() < 300, "{} instructions", prog.len());
            let numbers = (0..600u32).chain([0x4000_0000, 0x4000_0001, 0x4000_0000 + 59, u32::MAX]);
            for nr in numbers {
                for &a0 in &interesting {
                    let args = [a0, 1, 2, 3, 4, 5];
                    assert_eq!(
                        run(&prog, AUDIT_ARCH, nr, args),
                        expected(&p, nr, args),
                        "syscall {nr} arg0 {a0:#x}"
                    );
                }
            }
            assert_eq!(run(&prog, 0x4000_0003, 0, [0; 6]), RET_KILL_PROCESS);
        }
    }

    /// x86_64 syscall numbers by name, from the kernel's headers, and the ones newer than
    /// Debian 12's headers (the kernel's `syscall_64.tbl`).
    fn syscall_numbers() -> BTreeMap<String, u32> {
        let path = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h";
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{path}: {e} (apt-get install linux-libc-dev)"));
        let mut out: BTreeMap<String, u32> = text
            .lines()
            .filter_map(|l| {
                let mut w = l.strip_prefix("#define __NR_")?.split_whitespace();
                Some((w.next()?.to_string(), w.next()?.parse().ok()?))
            })
            .collect();
        let newer = [
            ("uretprobe", 335),
            ("cachestat", 451),
            ("fchmodat2", 452),
            ("map_shadow_stack", 453),
            ("futex_wake", 454),
            ("futex_wait", 455),
            ("futex_requeue", 456),
            ("statmount", 457),
            ("listmount", 458),
            ("lsm_get_self_attr", 459),
            ("lsm_set_self_attr", 460),
            ("lsm_list_modules", 461),
            ("mseal", 462),
            ("setxattrat", 463),
            ("getxattrat", 464),
            ("listxattrat", 465),
            ("removexattrat", 466),
        ];
        for (name, nr) in newer {
            out.entry(name.to_string()).or_insert(nr);
        }
        out
    }

    /// One rule of Docker's profile, as it applies on amd64 to a holder of `caps`.
    struct Rule {
        names: Vec<String>,
        errno: Option<u32>,
        /// (arg index, op, value); empty: unconditional.
        args: Vec<(usize, String, u64)>,
    }

    /// The rules of Docker's published profile (kept as data in `tests/data/`, see its
    /// NOTICE) that apply on amd64 to a holder of `caps` (`CAP_` names).
    fn docker_rules(caps: &BTreeSet<String>) -> Vec<Rule> {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../tests/data/docker-seccomp-default.json"))
                .unwrap();
        let strs = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
                .unwrap_or_default()
        };
        let mut out = Vec::new();
        for r in doc["syscalls"].as_array().unwrap() {
            let inc = &r["includes"];
            let exc = &r["excludes"];
            let arches_in = strs(&inc["arches"]);
            if !arches_in.is_empty() && !arches_in.iter().any(|a| a == "amd64") {
                continue;
            }
            if strs(&exc["arches"]).iter().any(|a| a == "amd64") {
                continue;
            }
            if !strs(&inc["caps"]).iter().all(|c| caps.contains(c)) {
                continue;
            }
            if strs(&exc["caps"]).iter().any(|c| caps.contains(c)) {
                continue;
            }
            let errno = match r["action"].as_str().unwrap() {
                "SCMP_ACT_ALLOW" => None,
                "SCMP_ACT_ERRNO" => Some(r["errnoRet"].as_u64().unwrap() as u32),
                other => panic!("action {other}"),
            };
            let args = r["args"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| {
                            (
                                x["index"].as_u64().unwrap() as usize,
                                x["op"].as_str().unwrap().to_string(),
                                x["value"].as_u64().unwrap(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Rule {
                names: strs(&r["names"]),
                errno,
                args,
            });
        }
        out
    }

    #[test]
    fn the_profile_is_dockers_published_default_profile() {
        let numbers = syscall_numbers();
        let docker = crate::caps::DOCKER_DEFAULT.to_vec();
        let with = |extra: &'static str| {
            let mut v = docker.clone();
            v.push(extra);
            v
        };
        for set in [
            docker.clone(),
            with("SYS_ADMIN"),
            with("DAC_READ_SEARCH"),
            with("SYS_PTRACE"),
            with("SYS_NICE"),
            crate::caps::NAMES.to_vec(),
        ] {
            let ours = compile(&policy(&caps(&set)));
            let theirs = docker_rules(&set.iter().map(|c| format!("CAP_{c}")).collect());
            for (name, &nr) in &numbers {
                let rules: Vec<&Rule> = theirs.iter().filter(|r| r.names.contains(name)).collect();
                // Argument values that pass and fail each rule's conditions.
                let mut probes = vec![[0u64; 6], [0x7E02_0000, 0x7E02_0000, 0, 0, 0, 0]];
                for r in &rules {
                    for (i, op, v) in &r.args {
                        let mut pass = [0u64; 6];
                        let mut fail = [0u64; 6];
                        match op.as_str() {
                            "SCMP_CMP_EQ" => {
                                pass[*i] = *v;
                                fail[*i] = 0x0040_0000;
                            }
                            "SCMP_CMP_NE" => {
                                pass[*i] = v + 1;
                                fail[*i] = *v;
                            }
                            "SCMP_CMP_MASKED_EQ" => fail[*i] = *v,
                            other => panic!("op {other}"),
                        }
                        probes.push(pass);
                        probes.push(fail);
                    }
                }
                for args in probes {
                    let holds = |r: &&&Rule| {
                        r.args.iter().all(|(i, op, v)| match op.as_str() {
                            "SCMP_CMP_EQ" => args[*i] == *v,
                            "SCMP_CMP_NE" => args[*i] != *v,
                            _ => args[*i] & v == 0,
                        })
                    };
                    let want = if rules.iter().filter(holds).any(|r| r.errno.is_none()) {
                        RET_ALLOW
                    } else if let Some(e) = rules.iter().filter(holds).find_map(|r| r.errno) {
                        RET_ERRNO | e
                    } else {
                        RET_ERRNO | libc::EPERM as u32
                    };
                    assert_eq!(
                        run(&ours, AUDIT_ARCH, nr, args),
                        want,
                        "{name} ({nr}) args {args:x?} with {set:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn docker_defaults_on_the_calls_that_matter() {
        let p = policy(&caps(&crate::caps::DOCKER_DEFAULT));
        let prog = compile(&p);
        let call = |nr: i64, a0: u64| run(&prog, AUDIT_ARCH, nr as u32, [a0, 0, 0, 0, 0, 0]);
        let eperm = RET_ERRNO | libc::EPERM as u32;
        assert_eq!(call(libc::SYS_read, 0), RET_ALLOW);
        assert_eq!(call(libc::SYS_mount, 0), eperm);
        assert_eq!(call(libc::SYS_unshare, 0), eperm);
        assert_eq!(call(libc::SYS_clone, libc::SIGCHLD as u64), RET_ALLOW);
        assert_eq!(call(libc::SYS_clone, libc::CLONE_NEWNS as u64), eperm);
        assert_eq!(call(libc::SYS_clone3, 0), RET_ERRNO | libc::ENOSYS as u32);
        assert_eq!(call(libc::SYS_socket, libc::AF_INET as u64), RET_ALLOW);
        assert_eq!(call(libc::SYS_socket, AF_VSOCK), eperm);
        assert_eq!(call(libc::SYS_personality, 0xffff_ffff), RET_ALLOW);
        assert_eq!(call(libc::SYS_personality, 0x0040_0000), eperm);
        assert_eq!(call(libc::SYS_chroot, 0), RET_ALLOW);
        assert_eq!(call(libc::SYS_open_by_handle_at, 0), eperm);
        assert_eq!(call(libc::SYS_reboot, 0), eperm);
        assert_eq!(call(libc::SYS_kexec_load, 0), eperm);
    }
}
