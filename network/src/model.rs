//! What the store keeps about networks: a [`Network`] per network and an [`Endpoint`] per
//! container attached to one (its address, MAC, published ports and the processes whose life
//! it lasts). Both are versioned JSON files (`strata.network.v1`, `strata.endpoint.v1`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::NetworkError;

pub const NETWORK_SCHEMA: &str = "strata.network.v1";
pub const ENDPOINT_SCHEMA: &str = "strata.endpoint.v1";

/// The default network's name, as in Docker.
pub const DEFAULT_NETWORK: &str = "bridge";

/// One network of the store: a Linux bridge with a subnet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Network {
    pub schema: String,
    pub id: String,
    pub name: String,
    pub created: String,
    pub driver: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// No route out (`--internal`).
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
    /// The host's bridge device.
    pub bridge: String,
    /// The MTU of the bridge and the containers' devices (`-o mtu`); 0: the kernel's, 1500.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtu: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Network {
    /// Whether containers on it resolve each other by name: every network but the default
    /// one, as in Docker.
    pub fn has_dns(&self) -> bool {
        self.name != DEFAULT_NETWORK
    }

    /// The bridge device's name for network `id`: `sb-` and 12 hex digits (IFNAMSIZ is 16).
    pub fn bridge_name(id: &str) -> String {
        format!("sb-{}", &id[..12])
    }
}

/// The transport of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl FromStr for Proto {
    type Err = NetworkError;
    fn from_str(s: &str) -> Result<Proto, NetworkError> {
        match s {
            "tcp" | "" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            other => Err(NetworkError::Invalid(format!(
                "invalid protocol {other:?} (tcp or udp)"
            ))),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A published port as bound: host address and port (never 0 once bound) to the container's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

/// A process by pid and start time (a pid alone may be reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: i32,
    pub start: u64,
}

impl Owner {
    /// Process `pid` as it is now (a process already gone gets start 0: never alive).
    pub fn of(pid: i32) -> Owner {
        Owner {
            pid,
            start: strata_cache::fsutil::process_start_time(pid).unwrap_or(0),
        }
    }

    pub fn me() -> Owner {
        Owner::of(std::process::id() as i32)
    }

    pub fn alive(&self) -> bool {
        strata_cache::fsutil::same_process(self.pid, self.start)
    }
}

/// A container's attachment to a network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    pub schema: String,
    pub network_id: String,
    pub container_id: String,
    pub container_name: String,
    /// Names other containers on the network resolve to this one (`--network-alias`).
    pub aliases: Vec<String>,
    pub ip: Ipv4Addr,
    pub mac: String,
    /// The container's device (`eth0`, `eth1`…) and the host's end of its veth pair.
    pub ifname: String,
    pub host_veth: String,
    pub ports: Vec<PortMapping>,
    /// The container's own resolvers (`--dns`): the network's name server forwards its
    /// queries for other names there rather than to the host's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// The endpoint lasts while any of these lives: the container's monitor, then its init.
    pub owners: Vec<Owner>,
}

impl Endpoint {
    pub fn is_live(&self) -> bool {
        self.owners.iter().any(Owner::alive)
    }

    /// The endpoint's id, stable for its life: its network's and container's ids hashed.
    pub fn id(&self) -> String {
        strata_image::Digest::of(format!("{}/{}", self.network_id, self.container_id).as_bytes())
            .hex()
            .to_string()
    }

    /// The MAC as bytes.
    pub fn mac_bytes(&self) -> [u8; 6] {
        parse_mac(&self.mac).unwrap_or([0x02, 0x42, 0, 0, 0, 0])
    }
}

/// Docker's MAC for an address: 02:42 and the address's four bytes.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// `aa:bb:cc:dd:ee:ff` → bytes, if it is a unicast MAC address.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<_> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut out = [0u8; 6];
    for (o, p) in out.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    (out[0] & 1 == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_follow_docker() {
        assert_eq!(mac_for("172.17.0.2".parse().unwrap()), "02:42:ac:11:00:02");
        assert_eq!(
            parse_mac("02:42:ac:11:00:02"),
            Some([2, 0x42, 0xac, 0x11, 0, 2])
        );
        assert_eq!(parse_mac("01:00:5e:00:00:01"), None, "multicast");
        assert_eq!(parse_mac("02:42:ac:11:00"), None);
    }
}
