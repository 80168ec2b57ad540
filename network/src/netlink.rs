//! The few rtnetlink requests a container network needs, on a blocking route socket: make a
//! bridge, a veth pair whose container end is born in the container's namespace, addresses,
//! links up, a default route, and deleting links. One request at a time, each acknowledged.
//!
//! Why not `ip`: a start would spawn it several times (a few ms each); a route socket does all
//! of a container's setup in well under a millisecond.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::NetworkError;

/// A route socket in the network namespace it was opened in.
pub struct Netlink {
    sock: Socket,
    seq: u32,
}

fn nl_err(what: &str, e: std::io::Error) -> NetworkError {
    NetworkError::Netlink(format!("{what}: {e}"))
}

impl Netlink {
    /// A route socket in the caller's current network namespace.
    pub fn open() -> Result<Netlink, NetworkError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| nl_err("open a route socket", e))?;
        sock.bind_auto()
            .map_err(|e| nl_err("bind a route socket", e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| nl_err("connect a route socket", e))?;
        Ok(Netlink { sock, seq: 0 })
    }

    /// A route socket in the namespace `netns` refers to: the calling thread enters it to open
    /// the socket and goes back (a socket stays in the namespace it was made in).
    pub fn open_in(netns: BorrowedFd) -> Result<Netlink, NetworkError> {
        let own = std::fs::File::open("/proc/thread-self/ns/net")
            .map_err(|e| nl_err("open /proc/thread-self/ns/net", e))?;
        nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| nl_err("enter the container's network namespace", e.into()))?;
        let opened = Netlink::open();
        nix::sched::setns(&own, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| nl_err("return to the host's network namespace", e.into()))?;
        opened
    }

    /// Sends one request and waits for its acknowledgement (or the reply it asked for).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, NetworkError> {
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.sock.send(&buf, 0).map_err(|e| nl_err(what, e))?;
        let mut replies = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full().map_err(|e| nl_err(what, e))?;
            let mut at = 0;
            while at < data.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[at..])
                    .map_err(|e| NetworkError::Netlink(format!("{what}: bad reply: {e}")))?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number != self.seq {
                    at += len.max(1);
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(replies),
                            Some(code) => Err(NetworkError::Kernel {
                                what: what.to_string(),
                                errno: -code.get(),
                            }),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(m) => {
                        replies.push(m);
                        if reply.header.flags & netlink_packet_core::NLM_F_MULTIPART == 0
                            && flags & NLM_F_ACK == 0
                        {
                            return Ok(replies);
                        }
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                at += len;
            }
        }
    }

    /// The index of the link named `name`, if there is one.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>, NetworkError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(msg), 0, "find a link") {
            Ok(replies) => Ok(replies.into_iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })),
            Err(NetworkError::Kernel { errno, .. }) if errno == libc::ENODEV => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes a bridge named `name`.
    pub fn add_bridge(&mut self, name: &str, mtu: u32) -> Result<(), NetworkError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        if mtu != 0 {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &format!("create bridge {name}"),
        )
        .map(drop)
    }

    /// Makes a veth pair: `host` in this namespace, enslaved to the bridge `master`, and `peer`
    /// (with MAC address `mac`) born in the namespace `peer_netns`, so it can never be left
    /// behind in the host's: it goes when that namespace goes.
    pub fn add_veth(
        &mut self,
        host: &str,
        master: u32,
        peer: &str,
        mac: [u8; 6],
        mtu: u32,
        peer_netns: BorrowedFd,
    ) -> Result<(), NetworkError> {
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.to_string()));
        peer_msg
            .attributes
            .push(LinkAttribute::Address(mac.to_vec()));
        peer_msg
            .attributes
            .push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
        let mut msg = LinkMessage::default();
        if mtu != 0 {
            peer_msg.attributes.push(LinkAttribute::Mtu(mtu));
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(host.to_string()));
        msg.attributes.push(LinkAttribute::Controller(master));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &format!("create veth pair {host}"),
        )
        .map(drop)
    }

    /// Brings link `index` up.
    pub fn set_up(&mut self, index: u32) -> Result<(), NetworkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.request(
            RouteNetlinkMessage::SetLink(msg),
            NLM_F_ACK,
            "set a link up",
        )
        .map(drop)
    }

    /// Gives link `index` the address `ip/prefix`.
    pub fn add_address(
        &mut self,
        index: u32,
        ip: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetworkError> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(ip.into()));
        msg.attributes.push(AddressAttribute::Address(ip.into()));
        let host_bits = 32 - u32::from(prefix);
        let broadcast = if host_bits >= 2 {
            Ipv4Addr::from(u32::from(ip) | ((1u32 << host_bits) - 1))
        } else {
            ip
        };
        msg.attributes.push(AddressAttribute::Broadcast(broadcast));
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &format!("add address {ip}/{prefix}"),
        )
        .map(drop)
    }

    /// Adds the default route through `gateway`.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> Result<(), NetworkError> {
        let mut msg = RouteMessage::default();
        msg.header = RouteHeader {
            address_family: AddressFamily::Inet,
            table: RouteHeader::RT_TABLE_MAIN,
            protocol: RouteProtocol::Boot,
            scope: RouteScope::Universe,
            kind: RouteType::Unicast,
            ..RouteHeader::default()
        };
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &format!("add the default route via {gateway}"),
        )
        .map(drop)
    }

    /// Deletes the link named `name`; a link already gone is not an error.
    pub fn delete_link(&mut self, name: &str) -> Result<(), NetworkError> {
        let Some(index) = self.link_index(name)? else {
            return Ok(());
        };
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.request(
            RouteNetlinkMessage::DelLink(msg),
            NLM_F_ACK,
            &format!("delete link {name}"),
        ) {
            Err(NetworkError::Kernel { errno, .. }) if errno == libc::ENODEV => Ok(()),
            other => other.map(drop),
        }
    }

    /// The IPv4 destinations (network, prefix) of the main routing table: subnets a new
    /// network must not overlap.
    pub fn routes(&mut self) -> Result<Vec<(Ipv4Addr, u8)>, NetworkError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        let replies = self.request(
            RouteNetlinkMessage::GetRoute(msg),
            netlink_packet_core::NLM_F_DUMP,
            "list routes",
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewRoute(m)
                    if m.header.table == RouteHeader::RT_TABLE_MAIN
                        && m.header.destination_prefix_length > 0 =>
                {
                    m.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Destination(RouteAddress::Inet(d)) => {
                            Some((*d, m.header.destination_prefix_length))
                        }
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }
}
