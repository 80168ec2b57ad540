//! Which platforms this host can run: its own, and those whose binaries the kernel hands to
//! an emulator through `binfmt_misc` (Debian's `qemu-user-static`, registered with the
//! fix-binary flag, so the emulator is found inside containers too).
//!
//! Main functions: [`runnable`] (for `info`) and [`check_runnable`] (a build or a run for a
//! foreign platform, refused in one line that says what to install).

use std::fs;
use std::path::Path;

use strata_image::spec::Platform;

const BINFMT: &str = "/proc/sys/fs/binfmt_misc";

/// QEMU's name for an OCI architecture (`qemu-<name>` in binfmt_misc).
fn qemu_name(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "arm64" => "aarch64",
        "amd64" => "x86_64",
        "arm" => "arm",
        "386" => "i386",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "mips64le" => "mips64el",
        _ => return None,
    })
}

/// Whether binfmt_misc has an enabled `qemu-<name>` entry with the fix-binary flag (without
/// it the emulator is looked up by path at exec time, inside the container, and not found).
fn emulated(name: &str) -> Result<(), String> {
    let entry = Path::new(BINFMT).join(format!("qemu-{name}"));
    let text = fs::read_to_string(&entry).map_err(|_| {
        format!(
            "no emulator for it is registered in binfmt_misc ({}: install qemu-user-static and \
             register it, e.g. scripts/binfmt.sh)",
            entry.display()
        )
    })?;
    if !text.lines().any(|l| l == "enabled") {
        return Err(format!("{} is disabled", entry.display()));
    }
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix("flags: "))
        .unwrap_or("");
    if !flags.contains('F') {
        return Err(format!(
            "{} lacks the fix-binary (F) flag: containers would not find the emulator",
            entry.display()
        ));
    }
    Ok(())
}

/// Whether this host can run programs for `p`; why not, in a phrase.
pub fn check_runnable(p: &Platform) -> Result<(), String> {
    let h = Platform::host();
    if p.os != h.os {
        return Err(format!("this host runs {} programs only", h.os));
    }
    if p.architecture == h.architecture {
        return Ok(());
    }
    match qemu_name(&p.architecture) {
        Some(name) => emulated(name).map_err(|e| format!("this host cannot run it: {e}")),
        None => Err(format!(
            "this host cannot run it: no emulator is known for {}",
            p.architecture
        )),
    }
}

/// The platforms this host can run: its own first, then the emulated ones.
pub fn runnable() -> Vec<Platform> {
    let h = Platform::host();
    let mut out = vec![h.clone()];
    for arch in [
        "amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le",
    ] {
        if arch == h.architecture {
            continue;
        }
        let p = Platform {
            architecture: arch.into(),
            ..h.clone()
        };
        if check_runnable(&p).is_ok() {
            out.push(p);
        }
    }
    out
}
