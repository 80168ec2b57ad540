//! A container's networks, as its monitor handles them: before the start, [`join`] reserves
//! the published ports and takes an address on each network the record names; once the
//! container's namespace exists, [`Joined::plug`] connects it (veth pairs, addresses, route);
//! when the container exits, [`Joined::leave`] gives it all back. The veth pairs need no
//! teardown: they die with the namespace.

use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;

use strata_cache::Store;
use strata_network::ports::{self, PortBindings, Reservation};
use strata_network::{attach, Endpoint, JoinRequest, Network, Networks, Owner};

use crate::container::ContainerRecord;
use crate::options::NetworkMode;
use crate::record::EndpointSettings;
use crate::RuntimeError;

/// The networks a started container is on, and the host ports it holds.
pub struct Joined {
    pub attached: Vec<(Network, Endpoint)>,
    /// Held for the container's life (see `strata_network::ports`).
    _ports: Reservation,
}

/// The networks the record names, the first being `--network`'s.
pub fn wanted(rec: &ContainerRecord) -> Vec<EndpointSettings> {
    let mut out = rec.networks.clone();
    if let Some(primary) = rec.host_config.network_mode.network_name() {
        if !out.iter().any(|e| e.network == primary) {
            out.insert(
                0,
                EndpointSettings {
                    network: primary.to_string(),
                    ..Default::default()
                },
            );
        }
    }
    out
}

/// The published ports the record asks for: `-p`, and `-P`'s exposed ports.
pub fn port_bindings(rec: &ContainerRecord) -> PortBindings {
    let mut b = rec.host_config.port_bindings.clone();
    if rec.host_config.publish_all_ports {
        ports::publish_all(rec.config.exposed_ports.keys().cloned(), &mut b);
    }
    b
}

/// Reserves the container's ports and joins it to its networks, owned by this process (the
/// monitor). `None` for a container without networks of its own (`none`, `host`,
/// `container:`).
pub fn join(store: &Store, rec: &ContainerRecord) -> Result<Option<Joined>, RuntimeError> {
    let wanted = wanted(rec);
    if wanted.is_empty()
        || matches!(rec.host_config.network_mode, NetworkMode::Container(_))
        || user_mode(rec)
    {
        return Ok(None);
    }
    let nets = Networks::new(store);
    let reservation = ports::reserve(&port_bindings(rec))?;
    let mut joined = Joined {
        attached: Vec::new(),
        _ports: Reservation::default(),
    };
    for (i, w) in wanted.iter().enumerate() {
        let step = (|| {
            let net = nets.get(&w.network)?;
            // `--mac-address` and the published ports belong to the first network.
            let req = if i == 0 {
                JoinRequest {
                    mac: (!rec.config.mac_address.is_empty())
                        .then(|| rec.config.mac_address.clone()),
                    ports: reservation.mappings.clone(),
                    ..join_request(rec, w)?
                }
            } else {
                join_request(rec, w)?
            };
            let ep = nets.join(&net, req, vec![Owner::me()])?;
            if let Err(e) = start_name_server(store, &nets, &net) {
                let _ = nets.leave(&net, &rec.id);
                return Err(e);
            }
            Ok::<_, RuntimeError>((net, ep))
        })();
        match step {
            Ok(pair) => joined.attached.push(pair),
            Err(e) => {
                joined.leave(store);
                return Err(e);
            }
        }
    }
    joined._ports = reservation;
    Ok(Some(joined))
}

/// What the container asks of one network, without a MAC or published ports.
fn join_request(
    rec: &ContainerRecord,
    settings: &EndpointSettings,
) -> Result<JoinRequest, RuntimeError> {
    Ok(JoinRequest {
        container_id: rec.id.clone(),
        container_name: rec.name.clone(),
        aliases: settings.aliases.clone(),
        ip: parse_ip(&settings.ipv4_address)?,
        mac: None,
        ports: Vec::new(),
        dns: rec.host_config.dns.clone(),
    })
}

/// Starts the network's name server unless it runs (user networks only).
fn start_name_server(store: &Store, nets: &Networks, net: &Network) -> Result<(), RuntimeError> {
    if !net.has_dns() {
        return Ok(());
    }
    let exe = crate::rootexe::protected_exe()?;
    Ok(strata_network::dns::ensure(nets, net, &exe, store.root())?)
}

fn parse_ip(text: &str) -> Result<Option<Ipv4Addr>, RuntimeError> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| RuntimeError::Invalid(format!("invalid --ip {text:?}: not an IPv4 address")))
}

impl Joined {
    /// Connects the namespace `netns` to every network joined; the first one with a way out
    /// gives the default route.
    pub fn plug(&self, netns: BorrowedFd) -> Result<(), RuntimeError> {
        let mut route_given = false;
        for (net, ep) in &self.attached {
            let route = !route_given && !net.internal;
            attach::attach(netns, net, ep, route)?;
            route_given |= route;
        }
        Ok(())
    }

    /// The container's init joins the endpoints' owners: they outlive a killed monitor while
    /// the container runs.
    pub fn add_init(&self, store: &Store, pid: i32) {
        let _ = Networks::new(store).add_owner(&self.attached[0].1.container_id, Owner::of(pid));
    }

    /// Gives the addresses back (and the ports, with the firewall rendered again).
    pub fn leave(&self, store: &Store) {
        let nets = Networks::new(store);
        for (net, ep) in &self.attached {
            let _ = nets.leave(net, &ep.container_id);
        }
    }

    /// The first network and its endpoint: what /etc/hosts and resolv.conf are written for.
    pub fn primary(&self) -> Option<&(Network, Endpoint)> {
        self.attached.first()
    }
}

/// A container's live endpoints with their networks, in device order, from the store.
pub fn live_endpoints(store: &Store, container_id: &str) -> Vec<(Network, Endpoint)> {
    let nets = Networks::new(store);
    let Ok(eps) = nets.container_endpoints(container_id) else {
        return Vec::new();
    };
    eps.into_iter()
        .filter(Endpoint::is_live)
        .filter_map(|ep| nets.find(&ep.network_id).ok().map(|n| (n, ep)))
        .collect()
}

/// The first live network of a running container and its endpoint, from the store.
pub fn primary_of(store: &Store, rec: &ContainerRecord) -> Option<(Network, Endpoint)> {
    live_endpoints(store, &rec.id).into_iter().next()
}

/// `network connect`: the record asks for the network from now on; a running container (init
/// `pid`) is plugged in at once, its endpoint owned by its init.
pub fn connect(
    store: &Store,
    containers: &crate::container::Containers,
    rec: &ContainerRecord,
    running_pid: Option<i32>,
    settings: EndpointSettings,
) -> Result<(), RuntimeError> {
    if rec.host_config.network_mode.network_name().is_none() {
        return Err(RuntimeError::Invalid(format!(
            "container {} is on network {:?}: it cannot be connected to another",
            rec.name,
            rec.host_config.network_mode.text()
        )));
    }
    let nets = Networks::new(store);
    let net = nets.get(&settings.network)?;
    if wanted(rec).iter().any(|w| w.network == net.name) {
        return Err(RuntimeError::Conflict(format!(
            "endpoint with name {} already exists in network {}",
            rec.name, net.name
        )));
    }
    if let Some(pid) = running_pid {
        let ep = nets.join(&net, join_request(rec, &settings)?, vec![Owner::of(pid)])?;
        if let Err(e) = start_name_server(store, &nets, &net) {
            let _ = nets.leave(&net, &rec.id);
            return Err(e);
        }
        let has_route = nets
            .container_endpoints(&rec.id)?
            .iter()
            .any(|e| e.is_live() && e.network_id != net.id);
        let plugged = std::fs::File::open(format!("/proc/{pid}/ns/net"))
            .map_err(|e| RuntimeError::io(format!("/proc/{pid}/ns/net"), e))
            .and_then(|ns| {
                use std::os::fd::AsFd;
                attach::attach(ns.as_fd(), &net, &ep, !has_route).map_err(RuntimeError::from)
            });
        if let Err(e) = plugged {
            let _ = attach::detach(&ep);
            let _ = nets.leave(&net, &rec.id);
            return Err(e);
        }
    }
    let mut updated = rec.clone();
    updated.networks = wanted(rec);
    updated.networks.push(EndpointSettings {
        network: net.name.clone(),
        ..settings
    });
    containers.save(&updated)
}

/// `network disconnect`: unplugged at once if running, and left out of later starts.
pub fn disconnect(
    store: &Store,
    containers: &crate::container::Containers,
    rec: &ContainerRecord,
    network: &str,
) -> Result<(), RuntimeError> {
    let nets = Networks::new(store);
    let net = nets.get(network)?;
    let in_record = wanted(rec).iter().any(|w| w.network == net.name);
    let live = nets
        .container_endpoints(&rec.id)?
        .into_iter()
        .find(|e| e.network_id == net.id && e.is_live());
    if !in_record && live.is_none() {
        return Err(RuntimeError::Invalid(format!(
            "container {} is not connected to network {}",
            rec.name, net.name
        )));
    }
    if let Some(ep) = live {
        attach::detach(&ep)?;
        nets.leave(&net, &rec.id)?;
    }
    let mut updated = rec.clone();
    updated.networks = wanted(rec)
        .into_iter()
        .filter(|w| w.network != net.name)
        .collect();
    if rec.host_config.network_mode.network_name() == Some(net.name.as_str()) {
        // The container keeps a namespace of its own, on no network.
        updated.host_config.network_mode = if updated.networks.is_empty() {
            NetworkMode::None
        } else {
            NetworkMode::Named(updated.networks[0].network.clone())
        };
    }
    containers.save(&updated)
}

/// Whether the container's network is user-mode (rootless, on the default bridge: the host's
/// bridges need root).
///
/// The monitor asks before it forks init, whatever the network: the answer is read once and
/// both processes keep it (the cgroup and the overlay ask again after the fork).
pub fn user_mode(rec: &ContainerRecord) -> bool {
    strata_image::layer::in_user_namespace()
        && matches!(rec.host_config.network_mode, NetworkMode::Bridge)
}

/// Rootless: slirp4netns on the container's namespace `ns`, publishing its ports (reserved
/// here first, so a port in use fails as it does for root, then let go for slirp4netns to
/// bind).
pub fn start_user_mode(
    rec: &ContainerRecord,
    ns: std::os::fd::BorrowedFd,
) -> Result<crate::usermode::UserModeNet, RuntimeError> {
    let reservation = ports::reserve(&port_bindings(rec))?;
    let mappings = reservation.mappings.clone();
    drop(reservation);
    let api = crate::rootless::runtime_dir()?.join(format!("slirp-{}.sock", &rec.id[..12]));
    crate::usermode::UserModeNet::start(ns, &api, &mappings).map_err(RuntimeError::Invalid)
}
