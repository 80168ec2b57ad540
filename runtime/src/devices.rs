//! Devices beyond Docker's standard /dev: `--device HOST[:CONTAINER[:PERMISSIONS]]` and, with
//! `--privileged`, every device node of the host's /dev, as Docker gives them.
//!
//! [`DeviceMapping`] is what the record keeps (Docker's `HostConfig.Devices`); [`resolve`]
//! turns it, on the host, into [`DeviceNode`]s (type, numbers, mode and owner read from the
//! host's node) that init makes in the container's /dev tmpfs, and the cgroup rules that let
//! the container use them.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use crate::RuntimeError;

/// The character devices every container's /dev has, as Docker's: (name, major, minor).
pub const STANDARD: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// `--device` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceMapping {
    pub path_on_host: String,
    pub path_in_container: String,
    pub cgroup_permissions: String,
}

/// A node to make in the container's /dev.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceNode {
    /// Relative to /dev.
    pub path: String,
    pub block: bool,
    pub major: u64,
    pub minor: u64,
    /// Permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Parses `HOST[:CONTAINER[:PERMISSIONS]]` (PERMISSIONS: some of `rwm`; `HOST:rw` names
/// permissions, not a path).
pub fn parse(spec: &str) -> Result<DeviceMapping, RuntimeError> {
    let bad =
        |why: &str| RuntimeError::Invalid(format!("invalid device specification {spec:?}: {why}"));
    let parts: Vec<&str> = spec.split(':').collect();
    let is_perms = |p: &str| !p.is_empty() && p.chars().all(|c| "rwm".contains(c));
    let (host, container, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, p] if is_perms(p) => (*h, *h, *p),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] if is_perms(p) => (*h, *c, *p),
        [_, _, _] => return Err(bad("permissions are some of r, w and m")),
        _ => return Err(bad("HOST[:CONTAINER[:PERMISSIONS]]")),
    };
    if !host.starts_with('/') {
        return Err(bad("the host path must be absolute"));
    }
    let within_dev = container
        .strip_prefix("/dev/")
        .filter(|rest| !rest.is_empty())
        .is_some_and(|rest| {
            Path::new(rest)
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        });
    if !within_dev {
        return Err(bad("the container path must be a path under /dev"));
    }
    Ok(DeviceMapping {
        path_on_host: host.into(),
        path_in_container: container.into(),
        cgroup_permissions: perms.into(),
    })
}

/// The nodes to make and the cgroup rules (v1 syntax) to add: each mapping's device, and with
/// `privileged` every node of the host's /dev (whose cgroup allows all devices anyway).
pub fn resolve(
    mappings: &[DeviceMapping],
    privileged: bool,
) -> Result<(Vec<DeviceNode>, Vec<String>), RuntimeError> {
    let mut nodes = Vec::new();
    let mut rules = Vec::new();
    for m in mappings {
        let node = node_of(Path::new(&m.path_on_host), &m.path_in_container["/dev/".len()..])?
            .ok_or_else(|| {
                RuntimeError::Invalid(format!(
                    "error gathering device information while adding custom device {:?}: not a device node",
                    m.path_on_host
                ))
            })?;
        let kind = if node.block { 'b' } else { 'c' };
        rules.push(format!(
            "{kind} {}:{} {}",
            node.major, node.minor, m.cgroup_permissions
        ));
        nodes.push(node);
    }
    if privileged {
        host_devices(Path::new("/dev"), "", &mut nodes);
    }
    Ok((nodes, rules))
}

/// The device at `host` as a node named `path` (relative to /dev); `None` if it is no device.
fn node_of(host: &Path, path: &str) -> Result<Option<DeviceNode>, RuntimeError> {
    let meta = std::fs::metadata(host).map_err(|e| {
        RuntimeError::Invalid(format!(
            "error gathering device information while adding custom device {:?}: {e}",
            host.display().to_string()
        ))
    })?;
    let ft = meta.file_type();
    if !ft.is_char_device() && !ft.is_block_device() {
        return Ok(None);
    }
    let rdev = meta.rdev();
    Ok(Some(DeviceNode {
        path: path.into(),
        block: ft.is_block_device(),
        major: libc::major(rdev) as u64,
        minor: libc::minor(rdev) as u64,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    }))
}

/// Every device node under the host's `dir` (not its pts, shm and mqueue, which the container
/// has its own of, nor symlinks), skipping names already in `nodes` and Docker's standard ones.
fn host_devices(dir: &Path, prefix: &str, nodes: &mut Vec<DeviceNode>) {
    const OWN: [&str; 10] = [
        "pts", "shm", "mqueue", "null", "zero", "full", "random", "urandom", "tty", "ptmx",
    ];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = format!("{prefix}{name}");
        if (prefix.is_empty() && OWN.contains(&name.as_str())) || name.starts_with('.') {
            continue;
        }
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            host_devices(&entry.path(), &format!("{rel}/"), nodes);
        } else if (ft.is_char_device() || ft.is_block_device())
            && !nodes.iter().any(|n| n.path == rel)
        {
            if let Ok(Some(node)) = node_of(&entry.path(), &rel) {
                nodes.push(node);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specifications_parse_as_dockers() {
        let m = |h: &str, c: &str, p: &str| DeviceMapping {
            path_on_host: h.into(),
            path_in_container: c.into(),
            cgroup_permissions: p.into(),
        };
        for (spec, want) in [
            ("/dev/fuse", m("/dev/fuse", "/dev/fuse", "rwm")),
            ("/dev/fuse:r", m("/dev/fuse", "/dev/fuse", "r")),
            ("/dev/sda:/dev/xvdc", m("/dev/sda", "/dev/xvdc", "rwm")),
            ("/dev/sda:/dev/xvdc:rw", m("/dev/sda", "/dev/xvdc", "rw")),
        ] {
            assert_eq!(parse(spec).unwrap(), want, "{spec}");
        }
        assert!(parse("/dev/sda:/dev/../etc/x").is_err());
        assert!(parse("/dev/sda:/etc/x").is_err());
        assert!(parse("/dev/sda:/dev/x:rwx").is_err());
        assert!(parse("sda").is_err());
    }

    #[test]
    fn a_device_is_read_from_the_host() {
        let (nodes, rules) =
            resolve(&[parse("/dev/null:/dev/mine/null:rw").unwrap()], false).unwrap();
        assert_eq!(rules, ["c 1:3 rw"]);
        assert_eq!(nodes[0].path, "mine/null");
        assert!(!nodes[0].block);
        let err = resolve(
            &[parse("/etc/hostname").unwrap_or_else(|_| DeviceMapping {
                path_on_host: "/etc/hostname".into(),
                path_in_container: "/dev/x".into(),
                cgroup_permissions: "rwm".into(),
            })],
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a device node"), "{err}");
    }
}
