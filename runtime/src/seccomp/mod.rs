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
//!
//! Here: the policy (which syscalls get which verdict for a set of capabilities) and the
//! profile's API; [`syscalls`] holds Docker's tables, [`bpf`] compiles a policy to BPF.

mod bpf;
mod syscalls;

use std::collections::{BTreeMap, BTreeSet};

pub use bpf::apply;
use bpf::*;
use syscalls::*;

/// A loadable classic BPF program.
pub type BpfProgram = Vec<libc::sock_filter>;

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
            serde_json::from_str(include_str!("../../tests/data/docker-seccomp-default.json"))
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
