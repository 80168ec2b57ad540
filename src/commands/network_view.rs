//! How a container's networks read in `inspect` (`NetworkSettings`), `ps` (PORTS, NETWORKS)
//! and `port`: Docker's shapes, from the endpoints in the store (live ones only: a stopped
//! container has no address and no published port).

use std::collections::BTreeMap;

use serde_json::{json, Value};
use strata_cache::Store;
use strata_network::{Endpoint, Network};
use strata_runtime::container::ContainerRecord;

/// The container's live endpoints with their networks, in device order.
fn live_endpoints(store: &Store, rec: &ContainerRecord) -> Vec<(Network, Endpoint)> {
    strata_runtime::networking::live_endpoints(store, &rec.id)
}

/// The ports the container publishes now: its endpoints', or (rootless) its user-mode
/// network's, kept in its state while it runs.
fn published(
    store: &Store,
    rec: &ContainerRecord,
    eps: &[(Network, Endpoint)],
) -> Vec<strata_network::PortMapping> {
    let mut ports: Vec<_> = eps.iter().flat_map(|(_, ep)| ep.ports.clone()).collect();
    if eps.is_empty() {
        let st = strata_runtime::container::Containers::new(store).state(&rec.id);
        if let Some(st) = st.ok().filter(|s| s.is_running()) {
            ports = st.user_mode_ports;
        }
    }
    ports
}

/// `"80/tcp"` → its host bindings (`mappings`) as Docker prints them, with every exposed port
/// (`null` when not published); `{}` off every network.
fn ports_value(
    rec: &ContainerRecord,
    eps: &[(Network, Endpoint)],
    mappings: &[strata_network::PortMapping],
) -> Value {
    let mut ports: BTreeMap<String, Value> = BTreeMap::new();
    if eps.is_empty() && mappings.is_empty() {
        return json!({});
    }
    for key in rec.config.exposed_ports.keys() {
        ports.insert(key.clone(), Value::Null);
    }
    for p in mappings {
        let key = format!("{}/{}", p.container_port, p.proto);
        let entry = ports.entry(key).or_insert(Value::Null);
        if entry.is_null() {
            *entry = json!([]);
        }
        if let Value::Array(list) = entry {
            list.push(
                json!({"HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string()}),
            );
        }
    }
    json!(ports)
}

/// Docker's `NetworkSettings` for a container.
pub fn network_settings(store: &Store, rec: &ContainerRecord) -> Value {
    let eps = live_endpoints(store, rec);
    let mut networks = serde_json::Map::new();
    for (net, ep) in &eps {
        networks.insert(net.name.clone(), endpoint_value(net, ep));
    }
    if networks.is_empty() {
        let name = rec.host_config.network_mode.text();
        networks.insert(name, json!({}));
    }
    let primary = eps.first();
    let field = |f: &dyn Fn(&Network, &Endpoint) -> Value, empty: Value| match primary {
        Some((n, e)) => f(n, e),
        None => empty,
    };
    json!({
        "Bridge": "",
        "SandboxID": "",
        "Ports": ports_value(rec, &eps, &published(store, rec, &eps)),
        "Gateway": field(&|n, _| json!(n.gateway.to_string()), json!("")),
        "IPAddress": field(&|_, e| json!(e.ip.to_string()), json!("")),
        "IPPrefixLen": field(&|n, _| json!(n.subnet.prefix_len()), json!(0)),
        "MacAddress": field(&|_, e| json!(e.mac), json!("")),
        "Networks": networks,
    })
}

fn endpoint_value(net: &Network, ep: &Endpoint) -> Value {
    json!({
        "IPAMConfig": Value::Null,
        "Links": Value::Null,
        "Aliases": if net.has_dns() {
            let mut a = ep.aliases.clone();
            a.push(ep.container_id[..12].to_string());
            json!(a)
        } else {
            Value::Null
        },
        "NetworkID": net.id,
        "EndpointID": ep.id(),
        "Gateway": net.gateway.to_string(),
        "IPAddress": ep.ip.to_string(),
        "IPPrefixLen": net.subnet.prefix_len(),
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "MacAddress": ep.mac,
        "DriverOpts": Value::Null,
    })
}

/// The PORTS column of `ps`: `0.0.0.0:8080->80/tcp, 443/tcp`, runs of consecutive ports
/// folded into ranges as Docker folds them.
pub fn ports_column(store: &Store, rec: &ContainerRecord) -> String {
    let eps = live_endpoints(store, rec);
    let mappings = published(store, rec, &eps);
    if eps.is_empty() && mappings.is_empty() {
        return String::new();
    }
    // (host ip, proto, container port) → host port; unpublished exposed ports have none.
    let mut published: Vec<(String, String, u16, Option<u16>)> = Vec::new();
    for p in &mappings {
        published.push((
            p.host_ip.to_string(),
            p.proto.to_string(),
            p.container_port,
            Some(p.host_port),
        ));
    }
    for key in rec.config.exposed_ports.keys() {
        if let Ok((port, proto)) = strata_network::ports::parse_port_key(key) {
            let proto = proto.to_string();
            if !published.iter().any(|x| x.1 == proto && x.2 == port) {
                published.push((String::new(), proto, port, None));
            }
        }
    }
    published.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
    fold_ranges(&published).join(", ")
}

fn fold_ranges(ports: &[(String, String, u16, Option<u16>)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < ports.len() {
        let (ip, proto, c0, h0) = &ports[i];
        let mut j = i;
        while j + 1 < ports.len() {
            let (nip, nproto, nc, nh) = &ports[j + 1];
            let step = u16::try_from(j + 1 - i).unwrap_or(u16::MAX);
            let host_follows = match (h0, nh) {
                (Some(h), Some(n)) => h.checked_add(step) == Some(*n),
                (None, None) => true,
                _ => false,
            };
            if nip == ip && nproto == proto && c0.checked_add(step) == Some(*nc) && host_follows {
                j += 1;
            } else {
                break;
            }
        }
        let span = |a: u16, b: u16| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        };
        let c1 = ports[j].2;
        out.push(match h0 {
            Some(h) => {
                let h1 = ports[j].3.unwrap_or(*h);
                format!("{ip}:{}->{}/{proto}", span(*h, h1), span(*c0, c1))
            }
            None => format!("{}/{proto}", span(*c0, c1)),
        });
        i = j + 1;
    }
    out
}

/// The NETWORKS column of `ps`.
pub fn networks_column(store: &Store, rec: &ContainerRecord) -> String {
    let eps = live_endpoints(store, rec);
    if eps.is_empty() {
        return rec.host_config.network_mode.text();
    }
    eps.iter()
        .map(|(n, _)| n.name.clone())
        .collect::<Vec<_>>()
        .join(",")
}

/// `port CONTAINER [PRIVATE_PORT[/PROTO]]`: Docker's lines.
pub fn port_lines(
    store: &Store,
    rec: &ContainerRecord,
    filter: Option<&str>,
) -> Result<Vec<String>, String> {
    let wanted = match filter {
        Some(f) => Some(strata_network::ports::parse_port_key(f).map_err(|e| e.to_string())?),
        None => None,
    };
    let mut lines = Vec::new();
    let eps = live_endpoints(store, rec);
    let mut ports = published(store, rec, &eps);
    ports.sort_by_key(|p| (p.container_port, p.proto, p.host_ip, p.host_port));
    for p in ports {
        match wanted {
            Some((port, proto)) if (port, proto) == (p.container_port, p.proto) => {
                lines.push(format!("{}:{}", p.host_ip, p.host_port));
            }
            Some(_) => {}
            None => lines.push(format!(
                "{}/{} -> {}:{}",
                p.container_port, p.proto, p.host_ip, p.host_port
            )),
        }
    }
    if lines.is_empty() {
        if let Some(f) = filter {
            return Err(format!("no public port '{f}' published for {}", rec.name));
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ports_fold_into_ranges_as_docker_prints_them() {
        let p = |ip: &str, c: u16, h: Option<u16>| (ip.to_string(), "tcp".to_string(), c, h);
        assert_eq!(
            fold_ranges(&[
                p("", 443, None),
                p("0.0.0.0", 8000, Some(8000)),
                p("0.0.0.0", 8001, Some(8001)),
                p("0.0.0.0", 8002, Some(8002)),
                p("127.0.0.1", 80, Some(9090)),
            ]),
            [
                "443/tcp",
                "0.0.0.0:8000-8002->8000-8002/tcp",
                "127.0.0.1:9090->80/tcp"
            ]
        );
    }
}
