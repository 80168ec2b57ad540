//! Published ports: `-p` as written ([`parse_publish`], into Docker's `PortBindings` shape) and
//! as bound ([`reserve`]). The monitor binds every published host port (without listening) and
//! holds the sockets while the container lives: a port in use is refused before the container
//! starts, nothing else on the host can take it meanwhile, and the reservation ends with the
//! monitor whatever kills it. Traffic never reaches those sockets: the firewall's DNAT sends it
//! to the container first.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;

use nix::sys::socket::{bind, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
use serde::{Deserialize, Serialize};

use crate::model::{PortMapping, Proto};
use crate::NetworkError;

/// One host binding of a container port (Docker's `PortBinding`): empty strings for "any
/// address" and "any free port".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    pub host_ip: String,
    pub host_port: String,
}

/// Docker's `PortBindings`: `"80/tcp"` → its host bindings.
pub type PortBindings = BTreeMap<String, Vec<PortBinding>>;

fn bad(spec: &str, why: &str) -> NetworkError {
    NetworkError::Invalid(format!("invalid publish spec {spec:?}: {why}"))
}

/// `START[-END]` as a port range.
fn port_range(spec: &str, text: &str) -> Result<(u16, u16), NetworkError> {
    let one = |t: &str| -> Result<u16, NetworkError> {
        match t.parse::<u32>() {
            Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
            _ => Err(bad(spec, &format!("invalid port {t:?} (1-65535)"))),
        }
    };
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if b < a {
                return Err(bad(spec, &format!("invalid range {text}")));
            }
            Ok((a, b))
        }
        None => {
            let p = one(text)?;
            Ok((p, p))
        }
    }
}

/// `-p [IP:][HOSTPORT[-END]:]CPORT[-END][/PROTO]` → `("CPORT/PROTO", binding)` pairs, ranges
/// expanded port by port (a host range for one container port binds any free port of it).
pub fn parse_publish(spec: &str) -> Result<Vec<(String, PortBinding)>, NetworkError> {
    let (addr, proto) = match spec.rsplit_once('/') {
        Some((a, p)) => (
            a,
            p.parse::<Proto>().map_err(|e| bad(spec, &e.to_string()))?,
        ),
        None => (spec, Proto::Tcp),
    };
    let parts: Vec<&str> = addr.rsplitn(3, ':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [c] => ("", "", *c),
        [c, h] => ("", *h, *c),
        [c, h, ip] => (*ip, *h, *c),
        _ => return Err(bad(spec, "too many colons")),
    };
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if !ip.is_empty() && ip.parse::<Ipv4Addr>().is_err() {
        return Err(bad(spec, &format!("invalid IP address {ip:?}")));
    }
    let (c0, c1) = port_range(spec, container)?;
    let count = usize::from(c1 - c0) + 1;
    let hosts: Vec<String> = if host.is_empty() {
        vec![String::new(); count]
    } else {
        let (h0, h1) = port_range(spec, host)?;
        let hcount = usize::from(h1 - h0) + 1;
        if hcount == count {
            (h0..=h1).map(|p| p.to_string()).collect()
        } else if count == 1 {
            vec![format!("{h0}-{h1}")]
        } else {
            return Err(bad(
                spec,
                "the host and container port ranges differ in length",
            ));
        }
    };
    Ok((c0..=c1)
        .zip(hosts)
        .map(|(c, h)| {
            (
                format!("{c}/{proto}"),
                PortBinding {
                    host_ip: ip.to_string(),
                    host_port: h,
                },
            )
        })
        .collect())
}

/// `"80/tcp"` → (80, tcp).
pub fn parse_port_key(key: &str) -> Result<(u16, Proto), NetworkError> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let p = port_range(key, port)?;
    Ok((p.0, proto.parse()?))
}

/// Published ports as bound, and the sockets that hold them.
#[derive(Debug, Default)]
pub struct Reservation {
    pub mappings: Vec<PortMapping>,
    pub sockets: Vec<OwnedFd>,
}

/// Binds every host port `bindings` asks for: a port given, one of a host range, or (empty) a
/// free one the kernel picks. The first port in use fails the whole reservation.
pub fn reserve(bindings: &PortBindings) -> Result<Reservation, NetworkError> {
    let mut out = Reservation::default();
    for (key, list) in bindings {
        let (container_port, proto) = parse_port_key(key)?;
        for b in list {
            let ip: Ipv4Addr = if b.host_ip.is_empty() {
                Ipv4Addr::UNSPECIFIED
            } else {
                b.host_ip.parse().map_err(|_| {
                    NetworkError::Invalid(format!("invalid host address {:?}", b.host_ip))
                })?
            };
            let (sock, host_port) = if b.host_port.is_empty() {
                bind_port(ip, 0, proto)?
            } else {
                let (lo, hi) = port_range(&b.host_port, &b.host_port)?;
                bind_in_range(ip, lo, hi, proto)?
            };
            out.sockets.push(sock);
            out.mappings.push(PortMapping {
                host_ip: ip,
                host_port,
                container_port,
                proto,
            });
        }
    }
    Ok(out)
}

fn bind_in_range(
    ip: Ipv4Addr,
    lo: u16,
    hi: u16,
    proto: Proto,
) -> Result<(OwnedFd, u16), NetworkError> {
    let mut last = None;
    for port in lo..=hi {
        match bind_port(ip, port, proto) {
            Ok(bound) => return Ok(bound),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("a range has a port"))
}

fn bind_port(ip: Ipv4Addr, port: u16, proto: Proto) -> Result<(OwnedFd, u16), NetworkError> {
    let kind = match proto {
        Proto::Tcp => SockType::Stream,
        Proto::Udp => SockType::Datagram,
    };
    let sock = socket(AddressFamily::Inet, kind, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| NetworkError::Invalid(format!("socket: {e}")))?;
    if proto == Proto::Tcp && strata_image::layer::in_user_namespace() {
        // Rootless the port is let go for slirp4netns to listen on, which, as every server,
        // binds with SO_REUSEADDR: a connection it closed, still in TIME_WAIT, does not make
        // the port busy (a listener still does). Root's reservations are held, unlistened,
        // for the container's life: there two reservations must exclude each other.
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReuseAddr, &true)
            .map_err(|e| NetworkError::Invalid(format!("setsockopt: {e}")))?;
    }
    let addr = SockaddrIn::from(SocketAddrV4::new(ip, port));
    bind(std::os::fd::AsRawFd::as_raw_fd(&sock), &addr).map_err(|e| {
        let why = match e {
            nix::errno::Errno::EADDRINUSE => "port is already allocated".to_string(),
            nix::errno::Errno::EADDRNOTAVAIL => "not an address of this host".to_string(),
            other => other.desc().to_lowercase(),
        };
        NetworkError::Conflict(format!("bind for {ip}:{port}/{proto} failed: {why}"))
    })?;
    let bound: SockaddrIn = getsockname(std::os::fd::AsRawFd::as_raw_fd(&sock))
        .map_err(|e| NetworkError::Invalid(format!("getsockname: {e}")))?;
    Ok((sock, bound.port()))
}

/// The ports `-P` publishes: every exposed port (`"80/tcp"` keys) to a free host port.
pub fn publish_all(exposed: impl IntoIterator<Item = String>, into: &mut PortBindings) {
    for key in exposed {
        into.entry(key).or_insert_with(|| {
            vec![PortBinding {
                host_ip: String::new(),
                host_port: String::new(),
            }]
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(spec: &str) -> String {
        match parse_publish(spec) {
            Ok(v) => v
                .iter()
                .map(|(k, b)| format!("{k}={}:{}", b.host_ip, b.host_port))
                .collect::<Vec<_>>()
                .join(" "),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn publish_specs_read_as_docker_reads_them() {
        assert_eq!(text("80"), "80/tcp=:");
        assert_eq!(text("8080:80"), "80/tcp=:8080");
        assert_eq!(text("127.0.0.1:8080:80/udp"), "80/udp=127.0.0.1:8080");
        assert_eq!(text("127.0.0.1::80"), "80/tcp=127.0.0.1:");
        assert_eq!(
            text("8000-8002:9000-9002"),
            "9000/tcp=:8000 9001/tcp=:8001 9002/tcp=:8002"
        );
        assert_eq!(text("8000-8009:80"), "80/tcp=:8000-8009");
        assert_eq!(
            text("70000:80"),
            "invalid publish spec \"70000:80\": invalid port \"70000\" (1-65535)"
        );
        assert_eq!(
            text("80/sctp"),
            "invalid publish spec \"80/sctp\": invalid protocol \"sctp\" (tcp or udp)"
        );
        assert_eq!(
            text("1-3:1-2"),
            "invalid publish spec \"1-3:1-2\": the host and container port ranges differ in length"
        );
        assert_eq!(
            text("x.y:1:2"),
            "invalid publish spec \"x.y:1:2\": invalid IP address \"x.y\""
        );
    }

    #[test]
    fn a_reserved_port_cannot_be_reserved_twice() {
        let mut b = PortBindings::new();
        b.insert(
            "80/tcp".into(),
            vec![PortBinding {
                host_ip: "127.0.0.1".into(),
                host_port: String::new(),
            }],
        );
        let first = reserve(&b).unwrap();
        let port = first.mappings[0].host_port;
        assert_ne!(port, 0);
        b.get_mut("80/tcp").unwrap()[0].host_port = port.to_string();
        assert_eq!(
            reserve(&b).unwrap_err().to_string(),
            format!("bind for 127.0.0.1:{port}/tcp failed: port is already allocated")
        );
        drop(first);
        assert!(reserve(&b).is_ok());
    }
}
