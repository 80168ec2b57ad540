//! Address management: which subnet a new network gets and which address a new endpoint gets.
//! Pure functions over what is in use; the caller holds the locks that make "in use" true
//! (the store's network lock for addresses, the host's for subnets).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::NetworkError;

/// Where default subnets come from: /24s of 10.89.0.0/16, as podman's user networks, but
/// starting above the range podman hands out first, and never 172.17-31 (Docker's own).
pub const POOL: &str = "10.89.128.0/17";

/// The first /24 of the pool overlapping none of `taken` (the host's routes and the store's
/// networks).
pub fn pick_subnet(taken: &[Ipv4Net]) -> Result<Ipv4Net, NetworkError> {
    let pool: Ipv4Net = POOL.parse().expect("valid pool");
    pool.subnets(24)
        .expect("a /17 has /24s")
        .find(|s| !taken.iter().any(|t| overlaps(s, t)))
        .ok_or_else(|| {
            NetworkError::Invalid(format!(
                "no free subnet left in {POOL}: give one with --subnet"
            ))
        })
}

pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The gateway a subnet gets by default: its first host address.
pub fn default_gateway(subnet: &Ipv4Net) -> Result<Ipv4Addr, NetworkError> {
    subnet
        .hosts()
        .next()
        .ok_or_else(|| NetworkError::Invalid(format!("subnet {subnet} has no room for a gateway")))
}

/// The lowest free host address of `subnet`, skipping the gateway and `used`.
pub fn next_address(
    subnet: &Ipv4Net,
    gateway: Ipv4Addr,
    used: &BTreeSet<Ipv4Addr>,
) -> Result<Ipv4Addr, NetworkError> {
    subnet
        .hosts()
        .find(|ip| *ip != gateway && !used.contains(ip))
        .ok_or_else(|| NetworkError::Exhausted(subnet.to_string()))
}

/// Checks a requested `--ip`: in the subnet, not the gateway, its network or broadcast address,
/// and free.
pub fn check_requested(
    ip: Ipv4Addr,
    subnet: &Ipv4Net,
    gateway: Ipv4Addr,
    used: &BTreeSet<Ipv4Addr>,
) -> Result<(), NetworkError> {
    if !subnet.contains(&ip) || ip == subnet.network() || ip == subnet.broadcast() {
        return Err(NetworkError::Invalid(format!(
            "invalid --ip {ip}: not a host address of subnet {subnet}"
        )));
    }
    if ip == gateway || used.contains(&ip) {
        return Err(NetworkError::Conflict(format!(
            "address {ip} is already in use"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn subnets_skip_what_routes_and_networks_take() {
        assert_eq!(pick_subnet(&[]).unwrap(), net("10.89.128.0/24"));
        assert_eq!(
            pick_subnet(&[net("10.89.128.0/24"), net("10.89.129.0/25")]).unwrap(),
            net("10.89.130.0/24")
        );
        assert_eq!(
            pick_subnet(&[net("10.0.0.0/8")]).unwrap_err().to_string(),
            "no free subnet left in 10.89.128.0/17: give one with --subnet"
        );
    }

    #[test]
    fn addresses_start_after_the_gateway_and_skip_used_ones() {
        let s = net("10.89.128.0/24");
        let gw = default_gateway(&s).unwrap();
        assert_eq!(gw, Ipv4Addr::new(10, 89, 128, 1));
        let mut used = BTreeSet::new();
        assert_eq!(
            next_address(&s, gw, &used).unwrap(),
            Ipv4Addr::new(10, 89, 128, 2)
        );
        used.insert(Ipv4Addr::new(10, 89, 128, 2));
        assert_eq!(
            next_address(&s, gw, &used).unwrap(),
            Ipv4Addr::new(10, 89, 128, 3)
        );
        let tiny = net("10.1.1.0/30");
        let used: BTreeSet<_> = [Ipv4Addr::new(10, 1, 1, 2)].into();
        assert_eq!(
            next_address(&tiny, Ipv4Addr::new(10, 1, 1, 1), &used)
                .unwrap_err()
                .to_string(),
            "no free address left in subnet 10.1.1.0/30"
        );
    }

    #[test]
    fn requested_addresses_are_checked() {
        let s = net("10.89.128.0/24");
        let gw = Ipv4Addr::new(10, 89, 128, 1);
        let used = BTreeSet::new();
        assert!(check_requested(Ipv4Addr::new(10, 89, 128, 9), &s, gw, &used).is_ok());
        assert!(check_requested(gw, &s, gw, &used).is_err());
        assert!(check_requested(Ipv4Addr::new(10, 89, 128, 255), &s, gw, &used).is_err());
        assert!(check_requested(Ipv4Addr::new(10, 9, 0, 2), &s, gw, &used).is_err());
    }
}
