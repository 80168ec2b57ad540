//! The embedded DNS server of a user network: containers on it resolve each other by name,
//! `--network-alias` and short id, and everything else through the host's resolvers (or the
//! container's `--dns` servers), as Docker's embedded DNS and podman's aardvark-dns do.
//!
//! Daemonless: a network's server is started by the first container that joins it
//! ([`ensure`], under the store's network lock) and exits by itself once no live container is
//! left on the network, checking under the same lock, so a join never meets a dying server.
//! It is the strata binary again (`strata --root ROOT __dns NETWORK-ID`), handed the UDP
//! socket already bound to the network's gateway, port 53: the container never starts before
//! its name server can answer. Names are read from the store's endpoint records on every
//! query, so a container is resolvable the moment it has joined.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
use simple_dns::rdata::{RData, A, PTR};
use simple_dns::{Name, Packet, PacketFlag, ResourceRecord, CLASS, OPCODE, QTYPE, RCODE, TYPE};

use crate::model::{Endpoint, Network, Owner};
use crate::store::Networks;
use crate::NetworkError;

/// The re-exec's command word.
pub const DNS_COMMAND: &str = "__dns";

/// Docker's TTL for the names it serves.
const TTL: u32 = 600;
/// How long an upstream resolver gets to answer a forwarded query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// Forwarded queries in flight at once (each holds a thread); more are dropped.
const MAX_FORWARDS: usize = 64;
/// How often the server looks whether its network still has live containers.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Starts `net`'s server unless one is running. `exe` is the strata binary, `root` the store.
pub fn ensure(nets: &Networks, net: &Network, exe: &Path, root: &Path) -> Result<(), NetworkError> {
    if !net.has_dns() {
        return Ok(());
    }
    let _lock = nets.lock()?;
    if nets.dns_server(&net.id).is_some_and(|o| o.alive()) {
        return Ok(());
    }
    let sock = bind_gateway(net.gateway)?;
    let out = Command::new(exe)
        .arg("--root")
        .arg(root)
        .args([DNS_COMMAND, &net.id])
        .stdin(Stdio::from(sock))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| NetworkError::io(exe, e))?;
    let pid: i32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| {
            NetworkError::Store(format!(
                "the name server of network {} did not start",
                net.name
            ))
        })?;
    nets.record_dns_server(&net.id, Owner::of(pid))
}

/// A UDP socket on `gateway:53`. The address may not be on the bridge yet (it is made when the
/// first container is plugged in): the socket binds to it anyway (IP_FREEBIND).
fn bind_gateway(gateway: Ipv4Addr) -> Result<OwnedFd, NetworkError> {
    let what = format!("bind the name server to {gateway}:53");
    let err = |e: nix::Error| NetworkError::Kernel {
        what: what.clone(),
        errno: e as i32,
    };
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(err)?;
    socket::setsockopt(&fd, sockopt::IpFreebind, &true).map_err(err)?;
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(SocketAddrV4::new(gateway, 53)),
    )
    .map_err(err)?;
    Ok(fd)
}

/// Stops `net_id`'s server, if one runs (`network rm`, `system reset`).
pub(crate) fn stop(nets: &Networks, net_id: &str) {
    if let Some(owner) = nets.dns_server(net_id) {
        if owner.alive() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(owner.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    nets.forget_dns_server(net_id);
}

/// The server's process (`strata __dns NETWORK-ID`, its socket on stdin). It detaches (the
/// caller gets the server's pid on stdout and returns) and serves until its network has no
/// live container. Call it while the process is single-threaded: it forks.
pub fn server_main(nets: Networks, net_id: &str) -> i32 {
    // SAFETY: the re-exec is single-threaded here. The monitor that started us blocks every
    // signal: detached, they are unblocked, so `network rm` can stop us.
    match unsafe { strata_cache::fsutil::fork_detached() } {
        Ok(Some(child)) => {
            let _ = writeln!(std::io::stdout(), "{child}");
            return 0;
        }
        Ok(None) => {}
        Err(_) => return 1,
    }
    // Only the socket stays open (moved to fd 3; the starter's other descriptors, such as a
    // client's ready pipe, must not be held open by a server that outlives it); fds 0-2 go
    // to /dev/null so the starter sees the end of its pipe.
    // SAFETY: plain descriptor juggling in a single-threaded process; fd 0 is the socket.
    let sock = unsafe {
        libc::dup2(0, 3);
        libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
        if let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            use std::os::fd::AsRawFd;
            for fd in 0..3 {
                libc::dup2(null.as_raw_fd(), fd);
            }
        }
        UdpSocket::from_raw_fd(3)
    };
    match Server::new(nets, net_id, sock) {
        Some(server) => server.run(),
        None => 1,
    }
}

struct Server {
    nets: Networks,
    net: Network,
    sock: Arc<UdpSocket>,
    host_resolvers: Vec<SocketAddr>,
    in_flight: Arc<AtomicUsize>,
}

impl Server {
    fn new(nets: Networks, net_id: &str, sock: UdpSocket) -> Option<Server> {
        let net = nets.find(net_id).ok()?;
        sock.set_read_timeout(Some(IDLE_CHECK)).ok()?;
        let host_resolvers = std::fs::read_to_string("/etc/resolv.conf")
            .map(|t| resolvers(&t))
            .unwrap_or_default();
        Some(Server {
            nets,
            net,
            sock: Arc::new(sock),
            host_resolvers,
            in_flight: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn run(self) -> i32 {
        let mut buf = [0u8; 4096];
        let mut checked = Instant::now();
        loop {
            match self.sock.recv_from(&mut buf) {
                Ok((n, peer)) => self.handle(&buf[..n], peer),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return 1,
            }
            if checked.elapsed() >= IDLE_CHECK {
                checked = Instant::now();
                if self.nets.retire_dns_server(&self.net.id, || self.close()) {
                    return 0;
                }
            }
        }
    }

    /// Closes the socket for every thread at once (they share its fd): once the server
    /// retires, the next server may bind the gateway's port.
    fn close(&self) {
        use std::os::fd::AsRawFd;
        if let Ok(null) = std::fs::File::open("/dev/null") {
            // SAFETY: both are open descriptors of this process; the socket's is replaced.
            unsafe { libc::dup2(null.as_raw_fd(), self.sock.as_raw_fd()) };
        }
    }

    fn handle(&self, query: &[u8], peer: SocketAddr) {
        let endpoints: Vec<Endpoint> = self
            .nets
            .endpoints(&self.net.id)
            .unwrap_or_default()
            .into_iter()
            .filter(Endpoint::is_live)
            .collect();
        match answer(query, &endpoints, self.net.internal) {
            Answer::Reply(bytes) => {
                let _ = self.sock.send_to(&bytes, peer);
            }
            Answer::Forward => {
                let asker = endpoints.iter().find(|e| IpAddr::V4(e.ip) == peer.ip());
                let upstreams = match asker.map(|e| resolvers_of(&e.dns)) {
                    Some(own) if !own.is_empty() => own,
                    _ => self.host_resolvers.clone(),
                };
                self.forward(query.to_vec(), peer, upstreams);
            }
            Answer::Ignore => {}
        }
    }

    /// Relays the query to the upstream resolvers in turn, on a thread of its own, and the
    /// first answer back to the container.
    fn forward(&self, query: Vec<u8>, peer: SocketAddr, upstreams: Vec<SocketAddr>) {
        if self.in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_FORWARDS {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        let sock = Arc::clone(&self.sock);
        let in_flight = Arc::clone(&self.in_flight);
        std::thread::spawn(move || {
            let reply = upstreams
                .iter()
                .find_map(|up| ask_upstream(&query, *up))
                .or_else(|| failure(&query, RCODE::ServerFailure));
            if let Some(reply) = reply {
                let _ = sock.send_to(&reply, peer);
            }
            in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

fn ask_upstream(query: &[u8], upstream: SocketAddr) -> Option<Vec<u8>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(local).ok()?;
    s.connect(upstream).ok()?;
    s.set_read_timeout(Some(UPSTREAM_TIMEOUT)).ok()?;
    s.send(query).ok()?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = s.recv(&mut buf).ok()?;
        // A late answer to another query has another id.
        if n >= 2 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Some(buf);
        }
    }
}

/// What the server does with a query.
#[derive(Debug, PartialEq)]
enum Answer {
    Reply(Vec<u8>),
    Forward,
    Ignore,
}

/// The answer to `query` from the network's live `endpoints`: their names, aliases and short
/// ids (A), their addresses (PTR); other names go upstream, but not from an internal network.
fn answer(query: &[u8], endpoints: &[Endpoint], internal: bool) -> Answer {
    let Ok(packet) = Packet::parse(query) else {
        return Answer::Ignore;
    };
    if packet.has_flags(PacketFlag::RESPONSE) {
        return Answer::Ignore;
    }
    let [question] = packet.questions.as_slice() else {
        return reply_or_ignore(failure(query, RCODE::FormatError));
    };
    if packet.opcode() != OPCODE::StandardQuery {
        return reply_or_ignore(failure(query, RCODE::NotImplemented));
    }
    let name = question.qname.to_string().to_ascii_lowercase();
    let name = name.trim_end_matches('.');
    let mut reply = Packet::new_reply(packet.id());
    reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER | PacketFlag::RECURSION_AVAILABLE);
    if packet.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    reply.questions.push(question.clone());
    let wants = |t: TYPE| matches!(question.qtype, QTYPE::ANY) || question.qtype == QTYPE::TYPE(t);
    let named: Vec<&Endpoint> = endpoints.iter().filter(|e| is_named(e, name)).collect();
    let pointed = ptr_address(name).and_then(|ip| endpoints.iter().find(|e| e.ip == ip));
    if !named.is_empty() {
        if wants(TYPE::A) {
            for ep in named {
                reply.answers.push(ResourceRecord::new(
                    question.qname.clone(),
                    CLASS::IN,
                    TTL,
                    RData::A(A {
                        address: u32::from(ep.ip),
                    }),
                ));
            }
        }
    } else if let Some(ep) = pointed {
        if wants(TYPE::PTR) {
            reply.answers.push(ResourceRecord::new(
                question.qname.clone(),
                CLASS::IN,
                TTL,
                RData::PTR(PTR(Name::new_unchecked(&ep.container_name))),
            ));
        }
    } else if internal {
        *reply.rcode_mut() = RCODE::NameError;
    } else {
        return Answer::Forward;
    }
    reply_or_ignore(reply.build_bytes_vec_compressed().ok())
}

fn reply_or_ignore(bytes: Option<Vec<u8>>) -> Answer {
    bytes.map(Answer::Reply).unwrap_or(Answer::Ignore)
}

/// Whether `name` (lower case, no final dot) is the endpoint's container name, one of its
/// aliases or its short id.
fn is_named(ep: &Endpoint, name: &str) -> bool {
    !name.is_empty()
        && (ep.container_name.eq_ignore_ascii_case(name)
            || ep.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
            || ep.container_id.get(..12) == Some(name))
}

/// `4.3.2.1.in-addr.arpa` → 1.2.3.4.
fn ptr_address(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let mut octets: Vec<u8> = rest
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if octets.len() != 4 {
        return None;
    }
    octets.reverse();
    Some(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))
}

/// A header-only answer with `rcode` to `query` (its id, flags and question kept).
fn failure(query: &[u8], rcode: RCODE) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let mut out = query.to_vec();
    // QR set, opcode and RD kept, RA set, rcode.
    out[2] |= 0x80;
    out[3] = 0x80 | (rcode as u8 & 0x0f);
    Some(out)
}

/// The `nameserver` lines of a resolv.conf, on port 53.
fn resolvers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next()?.parse::<IpAddr>().ok())
                .flatten()
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// A container's `--dns` servers, on port 53.
fn resolvers_of(dns: &[String]) -> Vec<SocketAddr> {
    dns.iter()
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(name: &str, id: &str, aliases: &[&str], ip: [u8; 4]) -> Endpoint {
        Endpoint {
            schema: crate::model::ENDPOINT_SCHEMA.into(),
            network_id: "n".repeat(64),
            container_id: id.into(),
            container_name: name.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            ip: Ipv4Addr::from(ip),
            mac: String::new(),
            ifname: "eth0".into(),
            host_veth: String::new(),
            ports: Vec::new(),
            dns: Vec::new(),
            owners: Vec::new(),
        }
    }

    fn query(name: &str, qtype: TYPE) -> Vec<u8> {
        let mut q = Packet::new_query(0x1234);
        q.set_flags(PacketFlag::RECURSION_DESIRED);
        q.questions.push(simple_dns::Question::new(
            Name::new_unchecked(name),
            QTYPE::TYPE(qtype),
            simple_dns::QCLASS::CLASS(CLASS::IN),
            false,
        ));
        q.build_bytes_vec().unwrap()
    }

    fn addresses(a: Answer) -> (RCODE, Vec<String>) {
        let Answer::Reply(bytes) = a else {
            panic!("no reply: {a:?}");
        };
        let p = Packet::parse(&bytes).unwrap();
        assert_eq!(p.id(), 0x1234);
        assert!(p.has_flags(PacketFlag::RESPONSE));
        let answers = p
            .answers
            .iter()
            .map(|r| match &r.rdata {
                RData::A(a) => Ipv4Addr::from(a.address).to_string(),
                RData::PTR(p) => p.0.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        (p.rcode(), answers)
    }

    #[test]
    fn names_aliases_and_short_ids_resolve_to_the_endpoints() {
        let web_id = format!("abcdef012345{}", "0".repeat(52));
        let eps = [
            endpoint("web", &web_id, &["site"], [10, 89, 128, 2]),
            endpoint("web2", &"f".repeat(64), &["site"], [10, 89, 128, 3]),
        ];
        let ok = |n: &str| addresses(answer(&query(n, TYPE::A), &eps, false));
        assert_eq!(ok("web"), (RCODE::NoError, vec!["10.89.128.2".into()]));
        assert_eq!(ok("WEB."), (RCODE::NoError, vec!["10.89.128.2".into()]));
        assert_eq!(
            ok("abcdef012345"),
            (RCODE::NoError, vec!["10.89.128.2".into()])
        );
        assert_eq!(
            ok("site"),
            (
                RCODE::NoError,
                vec!["10.89.128.2".into(), "10.89.128.3".into()]
            )
        );
        assert_eq!(
            addresses(answer(&query("web", TYPE::AAAA), &eps, false)),
            (RCODE::NoError, vec![]),
            "a known name has no IPv6 address, and no error"
        );
        assert_eq!(
            addresses(answer(
                &query("3.128.89.10.in-addr.arpa", TYPE::PTR),
                &eps,
                false
            )),
            (RCODE::NoError, vec!["web2".into()])
        );
    }

    #[test]
    fn other_names_go_upstream_except_from_internal_networks() {
        let eps = [endpoint("web", &"a".repeat(64), &[], [10, 89, 128, 2])];
        assert_eq!(
            answer(&query("example.org", TYPE::A), &eps, false),
            Answer::Forward
        );
        assert_eq!(
            addresses(answer(&query("example.org", TYPE::A), &eps, true)),
            (RCODE::NameError, vec![])
        );
        assert_eq!(answer(b"\x12\x34garbage", &eps, false), Answer::Ignore);
    }

    #[test]
    fn failures_keep_the_query_id_and_question() {
        let q = query("x", TYPE::A);
        let f = failure(&q, RCODE::ServerFailure).unwrap();
        let p = Packet::parse(&f).unwrap();
        assert_eq!(p.id(), 0x1234);
        assert_eq!(p.rcode(), RCODE::ServerFailure);
        assert_eq!(p.questions.len(), 1);
    }

    #[test]
    fn resolvers_come_from_nameserver_lines() {
        assert_eq!(
            resolvers("search x\nnameserver 10.0.0.1\nnameserver ::1\n#nameserver 1.1.1.1\n"),
            vec![
                "10.0.0.1:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }
}
