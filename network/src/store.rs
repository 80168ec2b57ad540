//! [`Networks`]: the store's networks and endpoints, under the store's network lock.
//!
//! Layout: `networks/<id>.json` per network, `networks/endpoints/<network id>/<container
//! id>.json` per attachment. An endpoint lasts while one of its owners (the container's
//! monitor, then its init) lives; a dead one is reclaimed by the next allocation on its network,
//! the next firewall render and `system check --repair`, so a killed monitor leaks nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use strata_cache::fsutil::{self, FileLock, LockMode};
use strata_cache::Store;

use crate::firewall;
use crate::host;
use crate::ipam;
use crate::model::{
    mac_for, parse_mac, Endpoint, Network, Owner, PortMapping, DEFAULT_NETWORK, ENDPOINT_SCHEMA,
    NETWORK_SCHEMA,
};
use crate::netlink::Netlink;
use crate::NetworkError;

/// The names `--network` gives a meaning of its own: no network may take them.
const RESERVED: [&str; 4] = ["bridge", "host", "none", "default"];

/// What `network create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewNetwork {
    pub name: String,
    pub driver: String,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
    /// 0: the kernel's default.
    pub mtu: u32,
}

/// What a container asks of a network when it joins it.
#[derive(Debug, Clone, Default)]
pub struct JoinRequest {
    pub container_id: String,
    pub container_name: String,
    pub aliases: Vec<String>,
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<String>,
    pub ports: Vec<PortMapping>,
    /// The container's `--dns` servers.
    pub dns: Vec<String>,
}

/// The store's networks.
pub struct Networks {
    store: Store,
    dir: PathBuf,
    tmp: PathBuf,
    lock_path: PathBuf,
    table: String,
}

impl Networks {
    pub fn new(store: &Store) -> Networks {
        Networks {
            store: store.clone(),
            dir: store.root().join("networks"),
            tmp: store.tmp_dir(),
            lock_path: store.locks_dir().join("network.lock"),
            table: firewall::table_name(store.root()),
        }
    }

    pub(crate) fn lock(&self) -> Result<FileLock, NetworkError> {
        FileLock::acquire(&self.lock_path, LockMode::Exclusive)
            .map_err(|e| NetworkError::Store(e.to_string()))
    }

    fn network_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn endpoints_dir(&self, network_id: &str) -> PathBuf {
        self.dir.join("endpoints").join(network_id)
    }

    fn endpoint_path(&self, network_id: &str, container_id: &str) -> PathBuf {
        self.endpoints_dir(network_id)
            .join(format!("{container_id}.json"))
    }

    /// Writes a network's record, durably.
    fn write_json<T: serde::Serialize>(&self, path: &Path, v: &T) -> Result<(), NetworkError> {
        self.write_with(path, v, fsutil::atomic_write)
    }

    /// Writes what lasts only while processes live (endpoints, name servers): atomically but
    /// without an fsync, which would cost every container start a few milliseconds.
    fn write_volatile<T: serde::Serialize>(&self, path: &Path, v: &T) -> Result<(), NetworkError> {
        self.write_with(path, v, fsutil::replace_file)
    }

    fn write_with<T: serde::Serialize>(
        &self,
        path: &Path,
        v: &T,
        write: fn(&Path, &Path, &[u8]) -> strata_cache::Result<()>,
    ) -> Result<(), NetworkError> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| NetworkError::io(dir, e))?;
        }
        let bytes = serde_json::to_vec_pretty(v).expect("serializes");
        write(&self.tmp, path, &bytes).map_err(|e| NetworkError::Store(e.to_string()))
    }

    /// Every network, by name.
    pub fn list(&self) -> Result<Vec<Network>, NetworkError> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(NetworkError::io(&self.dir, e)),
        };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|x| x == "json") {
                let bytes = fs::read(&p).map_err(|e| NetworkError::io(&p, e))?;
                let n: Network = serde_json::from_slice(&bytes)
                    .map_err(|e| NetworkError::Store(format!("{}: {e}", p.display())))?;
                out.push(n);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The network `key` names: its name, its id or a unique prefix of its id.
    pub fn find(&self, key: &str) -> Result<Network, NetworkError> {
        let all = self.list()?;
        if let Some(n) = all.iter().find(|n| n.name == key || n.id == key) {
            return Ok(n.clone());
        }
        let by_prefix: Vec<_> = all
            .iter()
            .filter(|n| !key.is_empty() && n.id.starts_with(key))
            .collect();
        match by_prefix.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(NetworkError::NotFound(format!("network {key} not found"))),
            _ => Err(NetworkError::Invalid(format!(
                "network {key} is ambiguous ({} matches found)",
                by_prefix.len()
            ))),
        }
    }

    /// The network `key` names, as [`Networks::find`], but the default one is made on first
    /// use: what `--network bridge` and `network inspect bridge` need.
    pub fn get(&self, key: &str) -> Result<Network, NetworkError> {
        if key == DEFAULT_NETWORK {
            self.default_network()
        } else {
            self.find(key)
        }
    }

    /// The default network, made on first use.
    pub fn default_network(&self) -> Result<Network, NetworkError> {
        if let Ok(n) = self.find(DEFAULT_NETWORK) {
            return Ok(n);
        }
        let _lock = self.lock()?;
        if let Ok(n) = self.find(DEFAULT_NETWORK) {
            return Ok(n);
        }
        self.create_locked(NewNetwork {
            name: DEFAULT_NETWORK.into(),
            driver: "bridge".into(),
            ..NewNetwork::default()
        })
    }

    /// `network create`.
    pub fn create(&self, req: NewNetwork) -> Result<Network, NetworkError> {
        if !valid_name(&req.name) {
            return Err(NetworkError::Invalid(format!(
                "invalid network name {:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                req.name
            )));
        }
        if RESERVED.contains(&req.name.as_str()) {
            return Err(NetworkError::Conflict(format!(
                "{} is a pre-defined network and cannot be created",
                req.name
            )));
        }
        if !req.driver.is_empty() && req.driver != "bridge" {
            return Err(NetworkError::Invalid(format!(
                "invalid driver {:?}: strata has the bridge driver",
                req.driver
            )));
        }
        let _lock = self.lock()?;
        self.create_locked(req)
    }

    fn create_locked(&self, req: NewNetwork) -> Result<Network, NetworkError> {
        let existing = self.list()?;
        if existing.iter().any(|n| n.name == req.name) {
            return Err(NetworkError::Conflict(format!(
                "network with name {} already exists",
                req.name
            )));
        }
        let _host = host::host_lock()?;
        let mut nl = Netlink::open()?;
        let mut taken: Vec<Ipv4Net> = existing.iter().map(|n| n.subnet).collect();
        let own = taken.len();
        taken.extend(host::routed_subnets(&mut nl)?);
        let subnet = match req.subnet {
            Some(s) => {
                let s = s.trunc();
                if let Some(t) = taken.iter().position(|t| ipam::overlaps(&s, t)) {
                    let with = if t < own {
                        format!("network {}", existing[t].name)
                    } else {
                        format!("the host's route to {}", taken[t])
                    };
                    return Err(NetworkError::Conflict(format!(
                        "invalid pool request: subnet {s} overlaps with {with}"
                    )));
                }
                s
            }
            None => ipam::pick_subnet(&taken)?,
        };
        let gateway = match req.gateway {
            Some(g) if !subnet.contains(&g) || g == subnet.network() || g == subnet.broadcast() => {
                return Err(NetworkError::Invalid(format!(
                    "invalid gateway {g}: not a host address of subnet {subnet}"
                )));
            }
            Some(g) => g,
            None => ipam::default_gateway(&subnet)?,
        };
        let id = fsutil::random_hex(32);
        let net = Network {
            schema: NETWORK_SCHEMA.into(),
            bridge: Network::bridge_name(&id),
            id,
            name: req.name,
            created: fsutil::now_rfc3339(),
            driver: "bridge".into(),
            subnet,
            gateway,
            internal: req.internal,
            labels: req.labels,
            mtu: req.mtu,
        };
        // The record first: killed before the bridge is made, a network leaves no device the
        // store does not name (the bridge is made again by the first container to join).
        self.write_json(&self.network_path(&net.id), &net)?;
        if let Err(e) = host::ensure_bridge(&mut nl, &net) {
            let _ = fs::remove_file(self.network_path(&net.id));
            return Err(e);
        }
        self.sync_firewall_locked()?;
        self.event(&net, "create", &[]);
        Ok(net)
    }

    /// Records a network event (`strata events`): Docker's attributes name and type.
    fn event(&self, net: &Network, action: &str, extra: &[(&str, &str)]) {
        let mut attributes = BTreeMap::from([
            ("name".to_string(), net.name.clone()),
            ("type".to_string(), net.driver.clone()),
        ]);
        for (k, v) in extra {
            attributes.insert(k.to_string(), v.to_string());
        }
        strata_cache::events::record(
            &self.store,
            &strata_cache::events::Event::new("network", action, &net.id, attributes),
        );
    }

    /// `network rm`: refused while a live container is attached.
    pub fn remove(&self, key: &str) -> Result<Network, NetworkError> {
        let _lock = self.lock()?;
        let net = self.find(key)?;
        if net.name == DEFAULT_NETWORK {
            return Err(NetworkError::Conflict(format!(
                "{DEFAULT_NETWORK} is a pre-defined network and cannot be removed"
            )));
        }
        let live: Vec<_> = self
            .endpoints(&net.id)?
            .into_iter()
            .filter(Endpoint::is_live)
            .collect();
        if !live.is_empty() {
            return Err(NetworkError::Conflict(format!(
                "error while removing network: network {} id {} has active endpoints ({})",
                net.name,
                net.id,
                live.iter()
                    .map(|e| e.container_name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        crate::dns::stop(self, &net.id);
        Netlink::open()?.delete_link(&net.bridge)?;
        let p = self.network_path(&net.id);
        fs::remove_file(&p).map_err(|e| NetworkError::io(&p, e))?;
        let _ = fs::remove_dir_all(self.endpoints_dir(&net.id));
        self.sync_firewall_locked()?;
        self.event(&net, "destroy", &[]);
        Ok(net)
    }

    /// Removes every network, the default one too, with their bridges and the store's
    /// firewall table (`system reset`): the host keeps nothing of this store. Live endpoints
    /// are refused, as by [`Networks::remove`].
    pub fn remove_all(&self) -> Result<Vec<Network>, NetworkError> {
        let _lock = self.lock()?;
        let all = self.list()?;
        if let Some(ep) = self.all_endpoints()?.into_iter().find(Endpoint::is_live) {
            return Err(NetworkError::Conflict(format!(
                "container {} is still attached to a network",
                ep.container_name
            )));
        }
        let mut nl = Netlink::open()?;
        for net in &all {
            crate::dns::stop(self, &net.id);
            nl.delete_link(&net.bridge)?;
            let p = self.network_path(&net.id);
            fs::remove_file(&p).map_err(|e| NetworkError::io(&p, e))?;
        }
        let _ = fs::remove_dir_all(self.dir.join("endpoints"));
        let _ = fs::remove_dir_all(self.dir.join("dns"));
        firewall::remove(&self.table)?;
        Ok(all)
    }

    /// The endpoints of network `id`, live or not.
    pub fn endpoints(&self, network_id: &str) -> Result<Vec<Endpoint>, NetworkError> {
        let dir = self.endpoints_dir(network_id);
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(NetworkError::io(&dir, e)),
        };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|x| x == "json") {
                // A file being replaced may vanish between the listing and the read.
                if let Ok(bytes) = fs::read(&p) {
                    if let Ok(ep) = serde_json::from_slice::<Endpoint>(&bytes) {
                        out.push(ep);
                    }
                }
            }
        }
        out.sort_by_key(|e| e.ip);
        Ok(out)
    }

    /// Every endpoint of the store.
    pub fn all_endpoints(&self) -> Result<Vec<Endpoint>, NetworkError> {
        let mut out = Vec::new();
        for n in self.list()? {
            out.extend(self.endpoints(&n.id)?);
        }
        Ok(out)
    }

    /// The endpoints of container `id`, in the order it joined their networks.
    pub fn container_endpoints(&self, container_id: &str) -> Result<Vec<Endpoint>, NetworkError> {
        let mut out: Vec<_> = self
            .all_endpoints()?
            .into_iter()
            .filter(|e| e.container_id == container_id)
            .collect();
        out.sort_by(|a, b| a.ifname.cmp(&b.ifname));
        Ok(out)
    }

    /// Joins a container to `net`: an address (the one asked for, or the lowest free), a MAC,
    /// its device name, all recorded with `owners`. Stale endpoints of the network are
    /// reclaimed first. The firewall is rendered again when ports are published.
    pub fn join(
        &self,
        net: &Network,
        req: JoinRequest,
        owners: Vec<Owner>,
    ) -> Result<Endpoint, NetworkError> {
        let _lock = self.lock()?;
        let mut used = BTreeSet::new();
        let mut reclaimed = false;
        for ep in self.endpoints(&net.id)? {
            if ep.container_id == req.container_id && ep.is_live() {
                return Err(NetworkError::Conflict(format!(
                    "container {} is already attached to network {}",
                    req.container_name, net.name
                )));
            }
            if ep.is_live() {
                used.insert(ep.ip);
            } else {
                reclaimed |= !ep.ports.is_empty();
                self.drop_endpoint(&ep);
            }
        }
        let ip = match req.ip {
            Some(ip) => {
                ipam::check_requested(ip, &net.subnet, net.gateway, &used)?;
                ip
            }
            None => ipam::next_address(&net.subnet, net.gateway, &used)?,
        };
        let mac = match &req.mac {
            Some(m) => {
                parse_mac(m)
                    .ok_or_else(|| NetworkError::Invalid(format!("invalid --mac-address {m:?}")))?;
                m.to_ascii_lowercase()
            }
            None => mac_for(ip),
        };
        let taken_ifnames: BTreeSet<String> = self
            .container_endpoints(&req.container_id)?
            .into_iter()
            .filter(Endpoint::is_live)
            .map(|e| e.ifname)
            .collect();
        let ifname = (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !taken_ifnames.contains(n))
            .expect("a free name");
        let ep = Endpoint {
            schema: ENDPOINT_SCHEMA.into(),
            network_id: net.id.clone(),
            container_id: req.container_id.clone(),
            container_name: req.container_name,
            aliases: req.aliases,
            ip,
            mac,
            host_veth: format!("sv{}{}", &req.container_id[..7], &net.id[..6]),
            ifname,
            ports: req.ports,
            dns: req.dns,
            owners,
        };
        self.write_volatile(&self.endpoint_path(&net.id, &ep.container_id), &ep)?;
        if reclaimed || !ep.ports.is_empty() {
            self.sync_firewall_locked()?;
        }
        self.event(net, "connect", &[("container", &ep.container_id)]);
        Ok(ep)
    }

    /// Adds an owner to the container's endpoints (its init, once started).
    pub fn add_owner(&self, container_id: &str, owner: Owner) -> Result<(), NetworkError> {
        let _lock = self.lock()?;
        for mut ep in self.container_endpoints(container_id)? {
            ep.owners.push(owner);
            self.write_volatile(&self.endpoint_path(&ep.network_id, container_id), &ep)?;
        }
        Ok(())
    }

    /// Takes the container off `network_id` in the store (its veth goes with its namespace, or
    /// by [`crate::attach::detach`]).
    pub fn leave(&self, net: &Network, container_id: &str) -> Result<(), NetworkError> {
        let _lock = self.lock()?;
        let p = self.endpoint_path(&net.id, container_id);
        let had_ports = fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<Endpoint>(&b).ok())
            .is_some_and(|e| !e.ports.is_empty());
        let _ = fs::remove_file(&p);
        if had_ports {
            self.sync_firewall_locked()?;
        }
        self.event(net, "disconnect", &[("container", container_id)]);
        Ok(())
    }

    fn dns_server_path(&self, network_id: &str) -> PathBuf {
        self.dir.join("dns").join(format!("{network_id}.json"))
    }

    /// The process serving network `id`'s names, as recorded (alive or not).
    pub(crate) fn dns_server(&self, network_id: &str) -> Option<Owner> {
        let bytes = fs::read(self.dns_server_path(network_id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Records the server started for network `id` (the caller holds the lock).
    pub(crate) fn record_dns_server(
        &self,
        network_id: &str,
        owner: Owner,
    ) -> Result<(), NetworkError> {
        self.write_volatile(&self.dns_server_path(network_id), &owner)
    }

    pub(crate) fn forget_dns_server(&self, network_id: &str) {
        let _ = fs::remove_file(self.dns_server_path(network_id));
    }

    /// Asked by network `id`'s server when idle: whether it should exit, because the network
    /// is gone or has no live container. Decided under the lock, where `close` is called and
    /// the record goes, so a container joining meanwhile finds either this server still
    /// serving or none and the port free.
    pub(crate) fn retire_dns_server(&self, network_id: &str, close: impl FnOnce()) -> bool {
        let idle = |n: &Networks| {
            !n.network_path(network_id).exists()
                || n.endpoints(network_id)
                    .is_ok_and(|eps| !eps.iter().any(Endpoint::is_live))
        };
        if !idle(self) {
            return false;
        }
        let Ok(_lock) = self.lock() else {
            return false;
        };
        if !idle(self) {
            return false;
        }
        close();
        if self
            .dns_server(network_id)
            .is_some_and(|o| o.pid == std::process::id() as i32)
        {
            self.forget_dns_server(network_id);
        }
        true
    }

    fn drop_endpoint(&self, ep: &Endpoint) {
        if let Ok(mut nl) = Netlink::open() {
            let _ = nl.delete_link(&ep.host_veth);
        }
        let _ = fs::remove_file(self.endpoint_path(&ep.network_id, &ep.container_id));
    }

    /// Reclaims the dead endpoints of container `id` (`rm` of a container whose monitor was
    /// killed: nobody else would give its addresses and ports back before the next check).
    pub fn release(&self, container_id: &str) -> Result<(), NetworkError> {
        let dead: Vec<Endpoint> = self
            .container_endpoints(container_id)?
            .into_iter()
            .filter(|e| !e.is_live())
            .collect();
        if dead.is_empty() {
            return Ok(());
        }
        let _lock = self.lock()?;
        for ep in &dead {
            self.drop_endpoint(ep);
        }
        if dead.iter().any(|e| !e.ports.is_empty()) {
            self.sync_firewall_locked()?;
        }
        Ok(())
    }

    /// Endpoints whose owners are all gone (a killed monitor and its container).
    pub fn stale_endpoints(&self) -> Result<Vec<Endpoint>, NetworkError> {
        Ok(self
            .all_endpoints()?
            .into_iter()
            .filter(|e| !e.is_live())
            .collect())
    }

    /// Removes stale endpoints (and any host veth left of them) and renders the firewall
    /// again. Returns what was reclaimed.
    pub fn reclaim(&self) -> Result<Vec<Endpoint>, NetworkError> {
        let _lock = self.lock()?;
        let stale = self.stale_endpoints()?;
        for ep in &stale {
            self.drop_endpoint(ep);
        }
        if !self.list()?.is_empty() {
            self.sync_firewall_locked()?;
        }
        Ok(stale)
    }

    fn sync_firewall_locked(&self) -> Result<(), NetworkError> {
        match self.expected_firewall()? {
            Some(text) => firewall::apply(&self.table, &text),
            None => firewall::remove(&self.table),
        }
    }

    /// The store's firewall table as it should be: `None` without networks.
    fn expected_firewall(&self) -> Result<Option<String>, NetworkError> {
        let networks = self.list()?;
        if networks.is_empty() {
            return Ok(None);
        }
        let mut live = Vec::new();
        for n in &networks {
            live.extend(self.endpoints(&n.id)?.into_iter().filter(Endpoint::is_live));
        }
        Ok(Some(firewall::render(&self.table, &networks, &live)))
    }

    /// What differs between the kernel's firewall table and the store (`system check`), if
    /// anything: a table removed or edited behind strata's back, or rules of dead containers.
    pub fn firewall_drift(&self) -> Result<Option<String>, NetworkError> {
        let expected = self.expected_firewall()?;
        if expected.is_none() && !self.dir.exists() {
            // A store that never made a network made no table: no nft to run.
            return Ok(None);
        }
        let applied = firewall::applied_signature(&self.table)?;
        let table = &self.table;
        Ok(match (expected, applied) {
            (None, None) => None,
            (None, Some(_)) => Some(format!("firewall table {table} is left without networks")),
            (Some(_), None) => Some(format!("firewall table {table} is missing")),
            (Some(e), Some(a)) if firewall::signature(&e) == Some(a.as_str()) => None,
            (Some(_), Some(_)) => Some(format!(
                "firewall table {table} differs from the store's networks and published ports"
            )),
        })
    }

    /// Renders the firewall table again from the store (`system check --repair`).
    pub fn repair_firewall(&self) -> Result<(), NetworkError> {
        let _lock = self.lock()?;
        self.sync_firewall_locked()
    }
}

/// Docker's rule for network names.
fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}
