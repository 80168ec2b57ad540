//! Plugging a container's network namespace into a network: a veth pair whose container end is
//! born inside the namespace (so it goes when the namespace goes, whatever kills the
//! container), enslaved to the network's bridge, with the endpoint's address, MAC and, for the
//! container's first network that has a way out, the default route.

use std::os::fd::BorrowedFd;

use crate::host;
use crate::model::{Endpoint, Network};
use crate::netlink::Netlink;
use crate::NetworkError;

/// Attaches the namespace `netns` to `net` as `ep` says. `default_route`: this network is the
/// container's way out.
pub fn attach(
    netns: BorrowedFd,
    net: &Network,
    ep: &Endpoint,
    default_route: bool,
) -> Result<(), NetworkError> {
    let mut hostside = Netlink::open()?;
    let bridge = host::ensure_bridge(&mut hostside, net)?;
    let add = |nl: &mut Netlink| {
        nl.add_veth(
            &ep.host_veth,
            bridge,
            &ep.ifname,
            ep.mac_bytes(),
            net.mtu,
            netns,
        )
    };
    match add(&mut hostside) {
        // The same container's previous namespace is still being torn down by the kernel
        // (a restart): its host end goes now.
        Err(NetworkError::Kernel { errno, .. }) if errno == libc::EEXIST => {
            hostside.delete_link(&ep.host_veth)?;
            add(&mut hostside)?;
        }
        other => other?,
    }
    let mut inside = Netlink::open_in(netns)?;
    let index = inside.link_index(&ep.ifname)?.ok_or_else(|| {
        NetworkError::Netlink(format!("{} did not arrive in the container", ep.ifname))
    })?;
    inside.add_address(index, ep.ip, net.subnet.prefix_len())?;
    inside.set_up(index)?;
    if default_route && !net.internal {
        inside.add_default_route(net.gateway)?;
    }
    Ok(())
}

/// Detaches the container from `ep`'s network: deleting the host's end of the pair deletes both.
pub fn detach(ep: &Endpoint) -> Result<(), NetworkError> {
    Netlink::open()?.delete_link(&ep.host_veth)
}
