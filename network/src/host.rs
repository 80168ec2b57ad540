//! The host's side of a network: its bridge (made on first use, again after a reboot), the
//! sysctls a bridge network needs, and the host-wide lock under which subnets are chosen (two
//! stores on one host must not pick the same one).

use std::path::Path;

use ipnet::Ipv4Net;
use strata_cache::fsutil::{FileLock, LockMode};

use crate::model::Network;
use crate::netlink::Netlink;
use crate::NetworkError;

/// Where the host-wide network lock lives: /run is per boot, as the bridges are.
const HOST_LOCK: &str = "/run/strata/network.lock";

/// Serialises subnet choices and bridge creation across every store of the host.
pub fn host_lock() -> Result<FileLock, NetworkError> {
    let path = Path::new(HOST_LOCK);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| NetworkError::io(dir, e))?;
    }
    FileLock::acquire(path, LockMode::Exclusive)
        .map_err(|e| NetworkError::Store(format!("lock {HOST_LOCK}: {e}")))
}

/// The subnets the host's routes cover (the default route aside).
pub fn routed_subnets(nl: &mut Netlink) -> Result<Vec<Ipv4Net>, NetworkError> {
    Ok(nl
        .routes()?
        .into_iter()
        .filter_map(|(ip, prefix)| Ipv4Net::new(ip, prefix).ok())
        .collect())
}

/// Makes the network's bridge if it is missing, with the gateway address, up. Returns its
/// index.
pub fn ensure_bridge(nl: &mut Netlink, net: &Network) -> Result<u32, NetworkError> {
    if let Some(index) = nl.link_index(&net.bridge)? {
        return Ok(index);
    }
    match nl.add_bridge(&net.bridge, net.mtu) {
        Err(NetworkError::Kernel { errno, .. }) if errno == libc::EEXIST => {}
        other => other?,
    }
    let index = nl
        .link_index(&net.bridge)?
        .ok_or_else(|| NetworkError::Netlink(format!("bridge {} vanished", net.bridge)))?;
    match nl.add_address(index, net.gateway, net.subnet.prefix_len()) {
        Err(NetworkError::Kernel { errno, .. }) if errno == libc::EEXIST => {}
        other => other?,
    }
    // Published ports reach containers from 127.0.0.1: the kernel must route loopback
    // sources out of the bridge (they are masqueraded there, see `firewall`).
    write_sysctl(
        &format!("/proc/sys/net/ipv4/conf/{}/route_localnet", net.bridge),
        "1",
    )?;
    if !net.internal {
        enable_forwarding()?;
    }
    nl.set_up(index)?;
    Ok(index)
}

/// Containers' traffic out goes through the host's routing: forwarding must be on, as Docker
/// and podman turn it on.
pub fn enable_forwarding() -> Result<(), NetworkError> {
    let p = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(p).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    write_sysctl(p, "1")
}

fn write_sysctl(path: &str, value: &str) -> Result<(), NetworkError> {
    std::fs::write(path, value).map_err(|e| NetworkError::io(Path::new(path), e))
}
