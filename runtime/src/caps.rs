//! Linux capabilities: names, Docker's default set, and applying a set to the current process.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// Capability names, index = capability number.
pub const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Docker's default capabilities (CapEff 0x00000000a80425fb).
pub const DOCKER_DEFAULT: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SYS_CHROOT",
    "MKNOD",
    "AUDIT_WRITE",
    "SETFCAP",
];

/// Parses `CAP_NET_ADMIN`, `net_admin` or `ALL` into capability numbers.
pub fn parse(name: &str) -> Result<Vec<u32>, String> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare == "ALL" {
        return Ok((0..NAMES.len() as u32)
            .filter(|&c| c <= last_cap())
            .collect());
    }
    NAMES
        .iter()
        .position(|n| *n == bare)
        .map(|i| vec![i as u32])
        .ok_or_else(|| format!("unknown capability: {name:?}"))
}

/// This process's bounding set (all bits when /proc cannot say).
fn held_bounding() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

/// The highest capability the running kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// A capability name of `--cap-add`/`--cap-drop` (`NET_ADMIN`, `cap_chown`, `ALL`), with the
/// capability numbers it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    pub text: String,
    pub numbers: Vec<u32>,
}

impl FromStr for Capability {
    type Err = crate::RuntimeError;

    fn from_str(s: &str) -> Result<Capability, crate::RuntimeError> {
        Ok(Capability {
            text: s.to_string(),
            numbers: parse(s).map_err(crate::RuntimeError::Invalid)?,
        })
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

stored_as_text!(Capability);

/// The capability set for a container: Docker's defaults (or all with `privileged`), then
/// `--cap-add`, then `--cap-drop`, like Docker.
pub fn container_set(privileged: bool, add: &[Capability], drop: &[Capability]) -> BTreeSet<u32> {
    let mut set: BTreeSet<u32> = if privileged {
        // "All" means all this process can hand on: inside a restricted host (a container
        // with a reduced bounding set) asking for more fails with EPERM at exec time.
        let held = held_bounding();
        parse("ALL")
            .expect("known")
            .into_iter()
            .filter(|&c| held & (1u64 << c) != 0)
            .collect()
    } else {
        DOCKER_DEFAULT
            .iter()
            .map(|n| parse(n).expect("known")[0])
            .collect()
    };
    for a in add {
        set.extend(&a.numbers);
    }
    for d in drop {
        for c in &d.numbers {
            set.remove(c);
        }
    }
    set
}

/// The 64-bit mask of a set (as /proc/self/status shows it).
pub fn mask(set: &BTreeSet<u32>) -> u64 {
    set.iter().fold(0u64, |m, &c| m | (1u64 << c))
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x20080522;

/// Drops every capability outside `set` from the bounding set.
pub fn drop_bounding(set: &BTreeSet<u32>) -> std::io::Result<()> {
    for c in 0..=last_cap() {
        if !set.contains(&c) {
            // SAFETY: prctl with integer arguments.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0) };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Sets effective, permitted and inheritable to `eff_perm` (inheritable empty, like Docker).
pub fn set_process(eff_perm: &BTreeSet<u32>) -> std::io::Result<()> {
    let m = mask(eff_perm);
    let mut data = [CapData::default(); 2];
    data[0].effective = m as u32;
    data[0].permitted = m as u32;
    data[1].effective = (m >> 32) as u32;
    data[1].permitted = (m >> 32) as u32;
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    // SAFETY: capset with a valid header and two data words.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the ambient set to `set` (for a non-root user given capabilities with --cap-add).
pub fn set_ambient(set: &BTreeSet<u32>) {
    for &c in set {
        // SAFETY: prctl with integer arguments; failures leave the capability out.
        unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                c as libc::c_ulong,
                0,
                0,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_default_mask() {
        let set = container_set(false, &[], &[]);
        assert_eq!(mask(&set), 0xa80425fb);
        let cap = |n: &str| n.parse::<Capability>().unwrap();
        let set = container_set(false, &[cap("NET_ADMIN")], &[cap("cap_chown")]);
        assert!(set.contains(&12) && !set.contains(&0));
        assert!(parse("CAP_ALLL").is_err());
    }
}
