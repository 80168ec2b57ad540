//! The device allow-list on cgroup v2: v2 has no `devices.allow` file; the kernel asks a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the cgroup instead. This module compiles
//! the same rules the v1 path writes (Docker's defaults) into such a program, loads it with
//! `bpf(2)` and attaches it to the container's cgroup. The program is a straight list of
//! checks, one block per rule; no helpers, no maps.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::RuntimeError;

/// One allow rule: `c 1:3 rwm` (type, major, minor; `None` is `*`), access bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// `BPF_DEVCG_DEV_BLOCK` (1) or `BPF_DEVCG_DEV_CHAR` (2); None for `a` (either).
    pub kind: Option<u32>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// `BPF_DEVCG_ACC_MKNOD` (1) | `READ` (2) | `WRITE` (4).
    pub access: u32,
}

impl Rule {
    /// Parses the v1 syntax (`c 136:* rwm`).
    pub fn parse(s: &str) -> Option<Rule> {
        let mut f = s.split_whitespace();
        let kind = match f.next()? {
            "b" => Some(1),
            "c" => Some(2),
            "a" => None,
            _ => return None,
        };
        let (major, minor) = f.next()?.split_once(':')?;
        let num = |x: &str| -> Option<Option<u32>> {
            if x == "*" {
                Some(None)
            } else {
                x.parse().ok().map(Some)
            }
        };
        let mut access = 0;
        for c in f.next()?.chars() {
            access |= match c {
                'm' => 1,
                'r' => 2,
                'w' => 4,
                _ => return None,
            };
        }
        Some(Rule {
            kind,
            major: num(major)?,
            minor: num(minor)?,
            access,
        })
    }
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const LDX_MEM_W: u8 = 0x61;
const MOV64_REG: u8 = 0xbf;
const MOV64_IMM: u8 = 0xb7;
const AND64_IMM: u8 = 0x57;
const RSH64_IMM: u8 = 0x77;
const JNE_IMM: u8 = 0x55;
const EXIT: u8 = 0x95;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// The program: allow (return 1) when some rule matches the access, else deny (return 0).
///
/// Registers: r1 = `struct bpf_cgroup_dev_ctx *` (`access_type`, `major`, `minor`, u32 each,
/// `access_type` = access << 16 | type); r2 type, r3 access, r4 major, r5 minor, r6 scratch.
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(MOV64_REG, 3, 2, 0, 0),
        insn(AND64_IMM, 2, 0, 0, 0xffff),
        insn(RSH64_IMM, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in rules {
        // Each test jumps past the end of this rule's block when it fails; offsets are
        // patched once the block's length is known.
        let mut jumps = Vec::new();
        if let Some(k) = r.kind {
            jumps.push(p.len());
            p.push(insn(JNE_IMM, 2, 0, 0, k as i32));
        }
        if let Some(m) = r.major {
            jumps.push(p.len());
            p.push(insn(JNE_IMM, 4, 0, 0, m as i32));
        }
        if let Some(m) = r.minor {
            jumps.push(p.len());
            p.push(insn(JNE_IMM, 5, 0, 0, m as i32));
        }
        // Every requested access bit must be allowed: (access & ~allowed) == 0.
        p.push(insn(MOV64_REG, 6, 3, 0, 0));
        p.push(insn(AND64_IMM, 6, 0, 0, (!r.access & 0x7) as i32));
        jumps.push(p.len());
        p.push(insn(JNE_IMM, 6, 0, 0, 0));
        p.push(insn(MOV64_IMM, 0, 0, 0, 1));
        p.push(insn(EXIT, 0, 0, 0, 0));
        let end = p.len();
        for j in jumps {
            p[j].off = (end - (j + 1)) as i16;
        }
    }
    p.push(insn(MOV64_IMM, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// `union bpf_attr`, as the two commands use it; the rest stays zero.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn put_u32(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn put_u64(&mut self, at: usize, v: u64) {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<i64> {
    // SAFETY: bpf(2) reads `attr` (and the buffers it points to, which outlive the call).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            std::mem::size_of::<Attr>(),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Loads `insns`; with `verbose`, a failure carries the verifier's last line (the log is only
/// asked for on a retry: a full log of a long program overflows any small buffer).
fn load(insns: &[Insn], verbose: bool) -> Result<i64, RuntimeError> {
    let license = b"Apache-2.0\0";
    let mut log = vec![0u8; if verbose { 1 << 20 } else { 0 }];
    let mut attr = Attr::new();
    attr.put_u32(0, BPF_PROG_TYPE_CGROUP_DEVICE);
    attr.put_u32(4, insns.len() as u32);
    attr.put_u64(8, insns.as_ptr() as u64);
    attr.put_u64(16, license.as_ptr() as u64);
    if verbose {
        attr.put_u32(24, 1);
        attr.put_u32(28, log.len() as u32);
        attr.put_u64(32, log.as_mut_ptr() as u64);
    }
    bpf(BPF_PROG_LOAD, &mut attr).map_err(|e| {
        let text = String::from_utf8_lossy(&log);
        let last = text
            .trim_matches(char::from(0))
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("")
            .to_string();
        let detail = if last.is_empty() {
            String::new()
        } else {
            format!(" ({last})")
        };
        RuntimeError::Invalid(format!("load the cgroup v2 device filter: {e}{detail}"))
    })
}

/// Loads the program for `rules` and attaches it to the cgroup directory `dir`.
pub fn attach(dir: &Path, rules: &[Rule]) -> Result<(), RuntimeError> {
    let insns = program(rules);
    let prog = load(&insns, false).or_else(|_| load(&insns, true))?;
    // SAFETY: a new fd returned by bpf(BPF_PROG_LOAD), owned here.
    let prog = unsafe { OwnedFd::from_raw_fd(prog as i32) };
    let cgroup = File::open(dir).map_err(|e| RuntimeError::io(dir, e))?;
    let mut at = Attr::new();
    at.put_u32(0, cgroup.as_raw_fd() as u32);
    at.put_u32(4, prog.as_raw_fd() as u32);
    at.put_u32(8, BPF_CGROUP_DEVICE);
    at.put_u32(12, BPF_F_ALLOW_MULTI);
    bpf(BPF_PROG_ATTACH, &mut at).map_err(|e| {
        RuntimeError::Invalid(format!(
            "attach the device filter to {}: {e}",
            dir.display()
        ))
    })?;
    // The attachment holds the program; our fd can go.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse() {
        assert_eq!(
            Rule::parse("c 136:* rwm"),
            Some(Rule {
                kind: Some(2),
                major: Some(136),
                minor: None,
                access: 7
            })
        );
        assert_eq!(Rule::parse("x 1:1 r"), None);
    }

    #[test]
    fn jumps_land_after_their_block() {
        let p = program(&[Rule::parse("c 1:3 rw").unwrap()]);
        // 6 loads, then: jne type, jne major, jne minor, mov, and, jne access, mov r0 1, exit.
        assert_eq!(p.len(), 6 + 8 + 2);
        assert_eq!(p[6].off, 7);
        assert_eq!(p[7].off, 6);
        assert_eq!(p[8].off, 5);
        assert_eq!(p[11].off, 2);
        assert_eq!(p[10].imm, 0b001);
    }
}
