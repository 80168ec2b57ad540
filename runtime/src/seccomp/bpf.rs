//! A seccomp policy compiled to classic BPF: a binary search over ranges of syscall numbers
//! that share a verdict, then the argument checks of the few calls that have them.

use super::*;

// Classic BPF encoding (linux/bpf_common.h): class | size/op | source.
/// BPF_LD | BPF_W | BPF_ABS.
pub(super) const BPF_LD_W_ABS: u16 = 0x20;
/// BPF_ALU | BPF_AND | BPF_K.
pub(super) const BPF_ALU_AND_K: u16 = 0x54;
/// BPF_JMP | BPF_JA.
pub(super) const BPF_JMP_JA: u16 = 0x05;
/// BPF_JMP | BPF_JEQ | BPF_K.
pub(super) const BPF_JMP_JEQ_K: u16 = 0x15;
/// BPF_JMP | BPF_JGE | BPF_K.
pub(super) const BPF_JMP_JGE_K: u16 = 0x35;
/// BPF_RET | BPF_K.
pub(super) const BPF_RET_K: u16 = 0x06;
// linux/seccomp.h
pub(super) const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub(super) const RET_ERRNO: u32 = 0x0005_0000;
pub(super) const RET_ALLOW: u32 = 0x7fff_0000;
/// Offsets in `struct seccomp_data`.
pub(super) const DATA_NR: u32 = 0;
pub(super) const DATA_ARCH: u32 = 4;
pub(super) const DATA_ARGS: u32 = 16;

#[cfg(target_arch = "aarch64")]
pub(super) const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(not(target_arch = "aarch64"))]
pub(super) const AUDIT_ARCH: u32 = 0xC000_003E;

pub(super) fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

pub(super) fn ret(v: Verdict) -> libc::sock_filter {
    match v {
        Verdict::Allow => insn(BPF_RET_K, 0, 0, RET_ALLOW),
        Verdict::Errno(e) => insn(BPF_RET_K, 0, 0, RET_ERRNO | (e & 0xffff)),
        Verdict::Check(_) => unreachable!("a check is a jump"),
    }
}

/// An instruction of the search tree: a real one, or a jump to a check block (placed after
/// the tree, so its offset is known only at the end).
pub(super) enum Tree {
    Insn(libc::sock_filter),
    ToCheck(usize),
}

/// The verdict of every syscall number as ranges: (first number, verdict), sorted, covering
/// everything from 0; the last range runs to the end. Neighbours with the same plain verdict
/// are merged.
pub(super) fn ranges(p: &Policy) -> Vec<(u32, Verdict)> {
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
pub(super) fn tree(ranges: &[(u32, Verdict)]) -> Vec<Tree> {
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
pub(super) fn load_arg(arg: u8, high: bool) -> libc::sock_filter {
    insn(
        BPF_LD_W_ABS,
        0,
        0,
        DATA_ARGS + 8 * arg as u32 + if high { 4 } else { 0 },
    )
}

/// A check's block: ends in ALLOW when it passes, EPERM when not.
pub(super) fn check_block(c: &Check) -> Vec<libc::sock_filter> {
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
pub(super) fn compile(p: &Policy) -> BpfProgram {
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
