//! Container networks, daemonless: Docker's bridge network model on the kernel's own parts.
//!
//! Main types: [`Networks`] (the store's networks and endpoints, under the store's network
//! lock), [`Network`] and [`Endpoint`] (what the store records), [`Netlink`] (the route socket
//! the host's bridge and a container's veth pair are made through), [`firewall`] (the store's
//! nftables table), [`ports`] (published ports, reserved by binding them) and [`dns`] (a user
//! network's name server, started by its first container and gone with its last).
//!
//! Key design decision: nothing runs between commands. A container's monitor joins it to its
//! networks (addresses from the store, a veth pair born in the container's namespace, rules
//! rendered from the store) and takes it off when it exits. Every piece of kernel state is
//! either tied to a namespace (veth ends die with it) or rendered whole from the store (the
//! nftables table), so a killed monitor leaks only store records, which the next command
//! reclaims.

pub mod attach;
pub mod dns;
pub mod firewall;
pub mod host;
pub mod ipam;
pub mod model;
pub mod netlink;
pub mod ports;
pub mod store;

pub use model::{Endpoint, Network, Owner, PortMapping, Proto, DEFAULT_NETWORK};
pub use netlink::Netlink;
pub use store::{JoinRequest, Networks, NewNetwork};

use std::path::{Path, PathBuf};

/// What can go wrong with a network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("no free address left in subnet {0}")]
    Exhausted(String),
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("{what}: {}", std::io::Error::from_raw_os_error(*errno))]
    Kernel { what: String, errno: i32 },
    #[error("{0}")]
    Firewall(String),
    #[error("{0}")]
    Store(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl NetworkError {
    pub fn io(path: &Path, source: std::io::Error) -> NetworkError {
        NetworkError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
