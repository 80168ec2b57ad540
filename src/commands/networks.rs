//! Network commands: network create, ls, inspect, rm, prune, connect, disconnect; and `port`.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};
use strata_cache::Store;
use strata_network::{Endpoint, Network, Networks, NewNetwork, DEFAULT_NETWORK};
use strata_runtime::container::{Containers, EndpointSettings};

use crate::cli::NetworkCommand;
use crate::filters::Filters;
use crate::output::{print_formatted, print_table, Format};

/// `host` and `none`: listed and inspected as Docker lists them, though no store record
/// stands behind them.
const BUILTIN: [&str; 2] = ["host", "none"];

/// The MTU `network create -o` asks for (Docker's and podman's option names); 0 for the
/// kernel's default (1500, as Docker's). Any other option is refused.
fn mtu_option(opts: &std::collections::BTreeMap<String, String>) -> Result<u32> {
    let mut mtu = 0;
    for (k, v) in opts {
        match k.as_str() {
            MTU_OPTION | "mtu" => {
                mtu = v
                    .parse()
                    .ok()
                    .filter(|m| (68..=65535).contains(m))
                    .ok_or_else(|| anyhow!("invalid -o {k}={v}: an MTU from 68 to 65535"))?
            }
            _ => bail!("invalid -o {k}: the bridge driver knows {MTU_OPTION} (or mtu)"),
        }
    }
    Ok(mtu)
}

const MTU_OPTION: &str = "com.docker.network.driver.mtu";

pub fn run(store: &Store, command: NetworkCommand) -> Result<()> {
    let nets = Networks::new(store);
    match command {
        NetworkCommand::Create {
            driver,
            subnet,
            gateway,
            internal,
            labels,
            opts,
            name,
        } => {
            let subnet = subnet
                .map(|s| {
                    s.parse()
                        .map_err(|_| anyhow!("invalid --subnet {s:?}: not an IPv4 CIDR"))
                })
                .transpose()?;
            let gateway = gateway
                .map(|g| {
                    g.parse()
                        .map_err(|_| anyhow!("invalid --gateway {g:?}: not an IPv4 address"))
                })
                .transpose()?;
            if gateway.is_some() && subnet.is_none() {
                bail!("--gateway needs --subnet");
            }
            let net = nets.create(NewNetwork {
                name,
                driver,
                subnet,
                gateway,
                internal,
                labels: super::key_values(&labels),
                mtu: mtu_option(&super::key_values(&opts))?,
            })?;
            println!("{}", net.id);
            Ok(())
        }
        NetworkCommand::Ls {
            quiet,
            no_trunc,
            filter,
            format,
        } => list(store, &nets, quiet, no_trunc, &filter, format.as_deref()),
        NetworkCommand::Inspect { format, names } => {
            crate::commands::images::inspect_each(&names, format.as_deref(), |n| {
                inspect_value(store, &nets, n)
            })
        }
        NetworkCommand::Rm { force, names } => {
            let mut failed = Vec::new();
            for n in &names {
                match nets.remove(n) {
                    Ok(_) => println!("{n}"),
                    Err(strata_network::NetworkError::NotFound(_)) if force => {}
                    Err(e) => failed.push(e.to_string()),
                }
            }
            if !failed.is_empty() {
                bail!("{}", failed.join("; "));
            }
            Ok(())
        }
        NetworkCommand::Prune { force: _ } => {
            let mut deleted = Vec::new();
            for n in nets.list()? {
                if n.name != DEFAULT_NETWORK && nets.remove(&n.id).is_ok() {
                    deleted.push(n.name);
                }
            }
            if !deleted.is_empty() {
                println!("Deleted Networks:");
                for n in deleted {
                    println!("{n}");
                }
            }
            Ok(())
        }
        NetworkCommand::Connect {
            aliases,
            ip,
            network,
            container,
        } => {
            let containers = Containers::new(store);
            let rec = containers.resolve(&container)?;
            let st = containers.state(&rec.id)?;
            let settings = EndpointSettings {
                network,
                aliases,
                ipv4_address: ip.unwrap_or_default(),
            };
            let pid = st.is_running().then_some(st.pid).filter(|p| *p > 0);
            strata_runtime::networking::connect(store, &containers, &rec, pid, settings)?;
            Ok(())
        }
        NetworkCommand::Disconnect {
            force: _,
            network,
            container,
        } => {
            let containers = Containers::new(store);
            let rec = containers.resolve(&container)?;
            strata_runtime::networking::disconnect(store, &containers, &rec, &network)?;
            Ok(())
        }
    }
}

/// A stable id for the built-in `host` and `none` networks of a store.
fn builtin_id(store: &Store, name: &str) -> String {
    strata_image::Digest::of(format!("{}/{name}", store.root().display()).as_bytes())
        .hex()
        .to_string()
}

/// One row of `network ls`.
struct Row {
    id: String,
    name: String,
    driver: &'static str,
    created: String,
    internal: bool,
    labels: BTreeMap<String, String>,
    builtin: bool,
}

fn rows(nets: &Networks, store: &Store) -> Result<Vec<Row>> {
    nets.default_network()?;
    let mut out: Vec<Row> = nets
        .list()?
        .into_iter()
        .map(|n| Row {
            builtin: n.name == DEFAULT_NETWORK,
            id: n.id,
            name: n.name,
            driver: "bridge",
            created: n.created,
            internal: n.internal,
            labels: n.labels,
        })
        .collect();
    for name in BUILTIN {
        out.push(Row {
            id: builtin_id(store, name),
            name: name.to_string(),
            driver: if name == "host" { "host" } else { "null" },
            created: String::new(),
            internal: false,
            labels: BTreeMap::new(),
            builtin: true,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn list(
    store: &Store,
    nets: &Networks,
    quiet: bool,
    no_trunc: bool,
    filter: &[String],
    format: Option<&str>,
) -> Result<()> {
    let f = Filters::parse(filter, &["name", "id", "driver", "label", "type"])?;
    let shown: Vec<Row> = rows(nets, store)?
        .into_iter()
        .filter(|r| {
            f.matches("name", &r.name)
                && (!f.has("id") || f.values("id").iter().any(|v| r.id.starts_with(v.as_str())))
                && (!f.has("driver") || f.values("driver").iter().any(|d| d == r.driver))
                && f.matches_labels(&r.labels)
                && (!f.has("type")
                    || f.values("type")
                        .iter()
                        .any(|t| (t == "builtin" && r.builtin) || (t == "custom" && !r.builtin)))
        })
        .collect();
    let id = |r: &Row| {
        if no_trunc {
            r.id.clone()
        } else {
            r.id[..12].to_string()
        }
    };
    if quiet {
        for r in &shown {
            println!("{}", id(r));
        }
        return Ok(());
    }
    let format = Format::parse(format);
    if let Format::Table = format {
        let table: Vec<Vec<String>> = shown
            .iter()
            .map(|r| vec![id(r), r.name.clone(), r.driver.to_string(), "local".into()])
            .collect();
        print_table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &table);
        return Ok(());
    }
    let items: Vec<Value> = shown
        .iter()
        .map(|r| {
            json!({
                "ID": id(r),
                "Name": r.name,
                "Driver": r.driver,
                "Scope": "local",
                "IPv6": "false",
                "Internal": r.internal.to_string(),
                "Labels": r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
                "CreatedAt": r.created,
            })
        })
        .collect();
    print_formatted(
        &format,
        &items,
        &[
            ("ID", "NETWORK ID"),
            ("Name", "NAME"),
            ("Driver", "DRIVER"),
            ("Scope", "SCOPE"),
            ("IPv6", "IPV6"),
            ("Internal", "INTERNAL"),
            ("Labels", "LABELS"),
            ("CreatedAt", "CREATED AT"),
        ],
    )
}

/// Docker's `network inspect` object.
fn inspect_value(store: &Store, nets: &Networks, key: &str) -> Result<Value> {
    if BUILTIN.contains(&key) {
        return Ok(json!({
            "Name": key,
            "Id": builtin_id(store, key),
            "Created": "",
            "Scope": "local",
            "Driver": if key == "host" { "host" } else { "null" },
            "EnableIPv6": false,
            "IPAM": {"Driver": "default", "Options": Value::Null, "Config": []},
            "Internal": false,
            "Attachable": false,
            "Ingress": false,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": false,
            "Containers": {},
            "Options": {},
            "Labels": {},
        }));
    }
    let net = nets.get(key)?;
    Ok(network_value(&net, &nets.endpoints(&net.id)?))
}

fn network_value(net: &Network, endpoints: &[Endpoint]) -> Value {
    let containers: serde_json::Map<String, Value> = endpoints
        .iter()
        .filter(|e| e.is_live())
        .map(|e| {
            (
                e.container_id.clone(),
                json!({
                    "Name": e.container_name,
                    "EndpointID": e.id(),
                    "MacAddress": e.mac,
                    "IPv4Address": format!("{}/{}", e.ip, net.subnet.prefix_len()),
                    "IPv6Address": "",
                }),
            )
        })
        .collect();
    json!({
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": "local",
        "Driver": net.driver,
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": Value::Null,
            "Config": [{"Subnet": net.subnet.to_string(), "Gateway": net.gateway.to_string()}],
        },
        "Internal": net.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": options(net),
        "Labels": net.labels,
    })
}

/// A network's driver options as `network inspect` shows them.
fn options(net: &Network) -> Value {
    let mut o = json!({
        "com.docker.network.bridge.name": net.bridge,
        "com.docker.network.bridge.enable_ip_masquerade": (!net.internal).to_string(),
    });
    if net.mtu != 0 {
        o[MTU_OPTION] = json!(net.mtu.to_string());
    }
    o
}

/// `port CONTAINER [PRIVATE_PORT[/PROTO]]`.
pub fn port(store: &Store, container: &str, private_port: Option<&str>) -> Result<()> {
    let rec = Containers::new(store).resolve(container)?;
    let lines =
        super::network_view::port_lines(store, &rec, private_port).map_err(|e| anyhow!(e))?;
    for l in lines {
        println!("{l}");
    }
    Ok(())
}
