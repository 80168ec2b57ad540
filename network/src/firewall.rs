//! The store's nftables table: outbound NAT for each network, the isolation between its
//! networks, `--internal`, and the DNAT of published ports (from other hosts, from the host's
//! own addresses and from 127.0.0.1).
//!
//! The whole table is rendered from the store (networks and live endpoints) and replaced in
//! one nft transaction whenever either changes. So there are no per-container rules to leak: a
//! container whose monitor was killed loses its rules at the next render, and the table never
//! holds a rule the store does not explain. Each store has its own table (`ip strata_<hash of
//! its path>`), and nothing of Docker's or podman's is touched.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::model::{Endpoint, Network};
use crate::NetworkError;

/// The table of the store at `root`.
pub fn table_name(root: &Path) -> String {
    let digest = strata_image::Digest::of(root.as_os_str().as_encoded_bytes());
    format!("strata_{}", &digest.hex()[..10])
}

/// The version of the rendering, in the table's comment with the digest of what it holds.
const SIGNATURE: &str = "strata.firewall.v1";

/// The table's text: `networks` with bridges, `endpoints` the live ones. Its comment signs
/// the rest (see [`signature`]), so a check can tell whether the kernel holds what the store
/// says without parsing nft's listing.
pub fn render(table: &str, networks: &[Network], endpoints: &[Endpoint]) -> String {
    let body = render_body(networks, endpoints);
    let digest = strata_image::Digest::of(body.as_bytes());
    format!(
        "table ip {table} {{\n  comment \"{SIGNATURE} {}\"\n{body}}}\n",
        &digest.hex()[..16]
    )
}

/// The signature in a table's text (ours or nft's listing of it).
pub fn signature(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("comment \""))
        .and_then(|c| c.strip_suffix('"'))
        .filter(|c| c.starts_with(SIGNATURE))
}

/// The signature of the table as the kernel holds it; `None` when there is no such table.
pub fn applied_signature(table: &str) -> Result<Option<String>, NetworkError> {
    let out = match Command::new("nft")
        .args(["list", "table", "ip", table])
        .output()
    {
        Ok(out) => out,
        // No nft, no table.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(NetworkError::Firewall(format!("run nft: {e}"))),
    };
    if !out.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(Some(signature(&text).unwrap_or("unsigned").to_string()))
}

fn render_body(networks: &[Network], endpoints: &[Endpoint]) -> String {
    let mut t = String::new();
    let bridges: Vec<_> = networks
        .iter()
        .map(|n| format!("\"{}\"", n.bridge))
        .collect();
    if !bridges.is_empty() {
        let _ = writeln!(
            t,
            "  set bridges {{ type ifname; elements = {{ {} }} }}",
            bridges.join(", ")
        );
    }
    t.push_str("  chain forward {\n    type filter hook forward priority filter; policy accept;\n");
    for n in networks {
        let b = &n.bridge;
        if n.internal {
            let _ = writeln!(t, "    iifname \"{b}\" oifname != \"{b}\" drop");
            let _ = writeln!(t, "    oifname \"{b}\" iifname != \"{b}\" drop");
        } else {
            let _ = writeln!(
                t,
                "    iifname \"{b}\" oifname @bridges oifname != \"{b}\" drop"
            );
        }
    }
    t.push_str("  }\n");
    t.push_str(
        "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    fib daddr type local jump published\n  }\n",
    );
    t.push_str(
        "  chain output {\n    type nat hook output priority -100; policy accept;\n    fib daddr type local jump published\n  }\n",
    );
    t.push_str("  chain published {\n");
    for e in endpoints {
        for p in &e.ports {
            let daddr = if p.host_ip.is_unspecified() {
                String::new()
            } else {
                format!("ip daddr {} ", p.host_ip)
            };
            let _ = writeln!(
                t,
                "    {daddr}{proto} dport {hp} dnat to {ip}:{cp}",
                proto = p.proto,
                hp = p.host_port,
                ip = e.ip,
                cp = p.container_port
            );
        }
    }
    t.push_str("  }\n");
    t.push_str(
        "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
    );
    for n in networks {
        let b = &n.bridge;
        if !n.internal {
            let _ = writeln!(t, "    ip saddr {} oifname != \"{b}\" masquerade", n.subnet);
        }
        let _ = writeln!(t, "    oifname \"{b}\" ip saddr 127.0.0.0/8 masquerade");
    }
    t.push_str("  }\n");
    t
}

/// Replaces the table with `body` (from [`render`]) in one transaction.
pub fn apply(table: &str, body: &str) -> Result<(), NetworkError> {
    let script = format!("table ip {table} {{}}\ndelete table ip {table}\n{body}");
    run_nft(&script)
}

/// Deletes the table, if it exists.
pub fn remove(table: &str) -> Result<(), NetworkError> {
    run_nft(&format!("table ip {table} {{}}\ndelete table ip {table}\n"))
}

fn run_nft(script: &str) -> Result<(), NetworkError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            NetworkError::Firewall(format!(
                "run nft: {e} (container networks need nftables installed)"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetworkError::Firewall(format!("run nft: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(NetworkError::Firewall(format!("nft failed: {first}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PortMapping, Proto};

    fn network(name: &str, id: &str, subnet: &str, internal: bool) -> Network {
        Network {
            schema: crate::model::NETWORK_SCHEMA.into(),
            id: id.repeat(12),
            name: name.into(),
            created: String::new(),
            driver: "bridge".into(),
            subnet: subnet.parse().unwrap(),
            gateway: subnet
                .parse::<ipnet::Ipv4Net>()
                .unwrap()
                .hosts()
                .next()
                .unwrap(),
            internal,
            labels: Default::default(),
            mtu: 0,
            bridge: Network::bridge_name(&id.repeat(12)),
        }
    }

    #[test]
    fn the_table_holds_nat_isolation_and_published_ports() {
        let nets = [
            network("bridge", "a", "10.89.128.0/24", false),
            network("secret", "b", "10.89.129.0/24", true),
        ];
        let ep = Endpoint {
            schema: crate::model::ENDPOINT_SCHEMA.into(),
            network_id: nets[0].id.clone(),
            container_id: "c".repeat(64),
            container_name: "web".into(),
            aliases: vec![],
            ip: "10.89.128.2".parse().unwrap(),
            mac: "02:42:0a:59:80:02".into(),
            ifname: "eth0".into(),
            host_veth: "svccccccc".into(),
            ports: vec![
                PortMapping {
                    host_ip: "127.0.0.1".parse().unwrap(),
                    host_port: 8080,
                    container_port: 80,
                    proto: Proto::Tcp,
                },
                PortMapping {
                    host_ip: "0.0.0.0".parse().unwrap(),
                    host_port: 5353,
                    container_port: 53,
                    proto: Proto::Udp,
                },
            ],
            dns: vec![],
            owners: vec![],
        };
        assert_eq!(
            render("strata_t", &nets, &[ep]),
            r#"table ip strata_t {
  comment "strata.firewall.v1 25ed1efca8a51bda"
  set bridges { type ifname; elements = { "sb-aaaaaaaaaaaa", "sb-bbbbbbbbbbbb" } }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "sb-aaaaaaaaaaaa" oifname @bridges oifname != "sb-aaaaaaaaaaaa" drop
    iifname "sb-bbbbbbbbbbbb" oifname != "sb-bbbbbbbbbbbb" drop
    oifname "sb-bbbbbbbbbbbb" iifname != "sb-bbbbbbbbbbbb" drop
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    fib daddr type local jump published
  }
  chain output {
    type nat hook output priority -100; policy accept;
    fib daddr type local jump published
  }
  chain published {
    ip daddr 127.0.0.1 tcp dport 8080 dnat to 10.89.128.2:80
    udp dport 5353 dnat to 10.89.128.2:53
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 10.89.128.0/24 oifname != "sb-aaaaaaaaaaaa" masquerade
    oifname "sb-aaaaaaaaaaaa" ip saddr 127.0.0.0/8 masquerade
    oifname "sb-bbbbbbbbbbbb" ip saddr 127.0.0.0/8 masquerade
  }
}
"#
        );
    }

    #[test]
    fn the_signature_is_read_back_from_nfts_listing() {
        let listing = "table ip t {\n\tcomment \"strata.firewall.v1 25ed1efca8a51bda\"\n}\n";
        assert_eq!(
            signature(listing),
            Some("strata.firewall.v1 25ed1efca8a51bda")
        );
        assert_eq!(signature("table ip x {\n\tcomment \"other\"\n}\n"), None);
    }
}
