//! A small synchronous rtnetlink client: the requests the pod's wiring makes (links up, their
//! MTU, tc ingress qdiscs and u32 + mirred redirect filters) and the listings it reads back
//! (a link, addresses, routes), on a `netlink-sys` socket with `netlink-packet-route`'s
//! messages. A socket belongs to the network namespace of the thread that opened it.

use std::io;

use netlink_packet_core::{
    parse_string, ErrorMessage, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator,
    NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{RouteHeader, RouteMessage};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirror, TcActionMirrorOption, TcActionOption,
    TcActionType, TcAttribute, TcFilterU32, TcFilterU32Option, TcHandle, TcMessage, TcMirror,
    TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Receive buffer: a dump's datagrams are at most 32 KiB; a larger one is an error, never a
/// silently cut listing.
const RECEIVE_BUFFER: usize = 64 * 1024;
/// The extended ack's attribute with the kernel's message (`NLMSGERR_ATTR_MSG`).
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Length of a netlink message header.
const NLMSG_HEADER_LEN: usize = 16;
/// The ingress qdisc's handle, `ffff:`, which its filters name as their parent.
const INGRESS_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};

/// A route netlink socket in the calling thread's network namespace.
pub struct Rtnl {
    socket: Socket,
    sequence: u32,
}

impl Rtnl {
    pub fn open() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // The kernel's own words in errors ("Specified qdisc kind is unknown"), when it has
        // any; acks carry only the request's header. Both are best effort (old kernels).
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        Ok(Rtnl {
            socket,
            sequence: 0,
        })
    }

    /// Sends `message` with `flags` (and NLM_F_REQUEST); its sequence number.
    fn send(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        let sent = self.socket.send(&bytes, 0)?;
        if sent != bytes.len() {
            return Err(io::Error::other(format!(
                "netlink sent {sent} of {} bytes",
                bytes.len()
            )));
        }
        Ok(self.sequence)
    }

    /// The messages that answer request `sequence`, up to its ack (a request with NLM_F_ACK)
    /// or the end of its dump; the kernel's error if it refused.
    fn replies(&mut self, sequence: u32) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut messages = Vec::new();
        let mut buffer = vec![0u8; RECEIVE_BUFFER];
        loop {
            // MSG_TRUNC: the datagram's real length, so that a cut one is seen.
            let len = self.socket.recv(&mut &mut buffer[..], libc::MSG_TRUNC)?;
            let datagram = buffer.get(..len).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a netlink reply of {len} bytes, more than {RECEIVE_BUFFER}"),
                )
            })?;
            let mut offset = 0;
            while offset < datagram.len() {
                let message =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[offset..])
                        .map_err(|e| {
                            io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("undecodable netlink reply: {e}"),
                            )
                        })?;
                let length = message.header.length as usize;
                if length < NLMSG_HEADER_LEN {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a netlink reply shorter than its header",
                    ));
                }
                offset += length.next_multiple_of(4);
                if message.header.sequence_number != sequence {
                    continue;
                }
                match message.payload {
                    NetlinkPayload::InnerMessage(inner) => messages.push(inner),
                    NetlinkPayload::Done(done) if done.code < 0 => {
                        return Err(io::Error::from_raw_os_error(-done.code))
                    }
                    NetlinkPayload::Done(_) => return Ok(messages),
                    NetlinkPayload::Error(error) => match error.code {
                        None => return Ok(messages),
                        Some(_) => return Err(kernel_error(&error, message.header.flags)),
                    },
                    _ => {}
                }
            }
        }
    }

    /// A request the kernel acknowledges; what it sent before its ack.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let sequence = self.send(message, NLM_F_ACK | flags)?;
        self.replies(sequence)
    }

    fn dump(&mut self, message: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let sequence = self.send(message, NLM_F_DUMP)?;
        self.replies(sequence)
    }

    /// The link called `name`.
    pub fn link(&mut self, name: &str) -> io::Result<LinkMessage> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        self.request(RouteNetlinkMessage::GetLink(message), 0)?
            .into_iter()
            .find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(link),
                _ => None,
            })
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))
    }

    /// Brings the link called `name` up, with `mtu` if given (`ip link set dev NAME mtu MTU
    /// up`).
    pub fn set_up(&mut self, name: &str, mtu: Option<u32>) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        if let Some(mtu) = mtu {
            message.attributes.push(LinkAttribute::Mtu(mtu));
        }
        self.request(RouteNetlinkMessage::SetLink(message), 0)
            .map(drop)
    }

    /// `tc qdisc add dev INDEX ingress`.
    pub fn add_ingress_qdisc(&mut self, index: u32) -> io::Result<()> {
        let mut message = TcMessage::with_index(tc_index(index)?);
        message.header.parent = TcHandle::INGRESS;
        message.header.handle = INGRESS_HANDLE;
        message.attributes.push(TcAttribute::Kind("ingress".into()));
        self.request(
            RouteNetlinkMessage::NewQueueDiscipline(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// `tc filter add dev FROM parent ffff: protocol all u32 match u32 0 0 action mirred
    /// egress redirect dev TO`: every frame that arrives on `from` leaves by `to`.
    pub fn add_redirect(&mut self, from: u32, to: u32) -> io::Result<()> {
        let mut message = TcMessage::with_index(tc_index(from)?);
        message.header.parent = INGRESS_HANDLE;
        // Priority 0 (the kernel picks one) and the protocol, ETH_P_ALL in network order.
        message.header.info = u32::from((libc::ETH_P_ALL as u16).to_be());
        message
            .attributes
            .push(TcAttribute::Kind(TcFilterU32::KIND.into()));
        message.attributes.push(TcAttribute::Options(vec![
            TcOption::U32(TcFilterU32Option::Selector(match_all())),
            TcOption::U32(TcFilterU32Option::Action(vec![redirect_to(to)])),
        ]));
        self.request(
            RouteNetlinkMessage::NewTrafficFilter(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Every address of every link (both families).
    pub fn addresses(&mut self) -> io::Result<Vec<AddressMessage>> {
        Ok(self
            .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))?
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewAddress(address) => Some(address),
                _ => None,
            })
            .collect())
    }

    /// Every route of `family` (`Inet` or `Inet6`), of every table.
    pub fn routes(&mut self, family: AddressFamily) -> io::Result<Vec<RouteMessage>> {
        let mut request = RouteMessage::default();
        request.header.address_family = family;
        request.header.table = RouteHeader::RT_TABLE_UNSPEC;
        Ok(self
            .dump(RouteNetlinkMessage::GetRoute(request))?
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewRoute(route) => Some(route),
                _ => None,
            })
            .collect())
    }
}

/// tc headers hold the interface index as a C int.
fn tc_index(index: u32) -> io::Result<i32> {
    i32::try_from(index).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface index {index}"),
        )
    })
}

/// u32's `match u32 0 0`: one key that compares no bit, so every frame of every protocol
/// matches; terminal, so the filter's actions run.
fn match_all() -> TcU32Selector {
    let mut selector = TcU32Selector::default();
    selector.flags = TcU32SelectorFlags::Terminal;
    selector.nkeys = 1;
    selector.keys = vec![TcU32Key::default()];
    selector
}

/// `action mirred egress redirect dev INDEX`: the frame leaves by `index` and goes no further
/// here (stolen), as tc sets it for a redirect.
fn redirect_to(index: u32) -> TcAction {
    let mut mirror = TcMirror::default();
    mirror.generic.action = TcActionType::Stolen;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = index;
    let mut action = TcAction::default();
    action.attributes = vec![
        TcActionAttribute::Kind(TcActionMirror::KIND.into()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirror,
        ))]),
    ];
    action
}

/// The kernel's refusal as an io::Error: its errno, with its extended ack's message if any.
fn kernel_error(error: &ErrorMessage, flags: u16) -> io::Error {
    let os = error.to_io();
    match ack_message(&error.header, flags) {
        Some(text) if !text.is_empty() => io::Error::new(os.kind(), format!("{os}: {text}")),
        _ => os,
    }
}

/// The message in an error's extended ack: its attributes follow the request's header (and
/// the request itself when the ack was not capped).
fn ack_message(payload: &[u8], flags: u16) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let request_len = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HEADER_LEN
    } else {
        u32::from_ne_bytes(payload.get(..4)?.try_into().ok()?) as usize
    };
    let attributes = payload.get(request_len.next_multiple_of(4)..)?;
    NlasIterator::new(attributes)
        .filter_map(Result::ok)
        .find(|nla| nla.kind() == NLMSGERR_ATTR_MSG)
        .and_then(|nla| parse_string(nla.value()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    #[test]
    fn the_redirect_filter_is_what_tc_sends() {
        // tc's TCA_U32_SEL for `match u32 0 0` with an action: flags TC_U32_TERMINAL, one key
        // of zeros (16-byte selector, 16-byte key).
        let selector = match_all();
        let mut bytes = vec![0; selector.buffer_len()];
        selector.emit(&mut bytes);
        let mut expected = vec![0u8; 32];
        expected[0] = 1;
        expected[2] = 1;
        assert_eq!(bytes, expected);
        // mirred's parameters: tc_gen (index, capab, action TC_ACT_STOLEN, refcnt, bindcnt),
        // then eaction TCA_EGRESS_REDIR and the target's index.
        let TcActionAttribute::Options(options) = &redirect_to(7).attributes[1] else {
            panic!("no options");
        };
        let TcActionOption::Mirror(TcActionMirrorOption::Parms(mirror)) = &options[0] else {
            panic!("not mirred");
        };
        let mut bytes = vec![0; mirror.buffer_len()];
        mirror.emit(&mut bytes);
        let words: Vec<i32> = bytes
            .chunks(4)
            .map(|w| i32::from_ne_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        assert_eq!(words, [0, 0, 4, 0, 0, 1, 7]);
    }

    #[test]
    fn an_extended_ack_adds_the_kernels_words() {
        // A capped ack: the request's 16-byte header, then NLMSGERR_ATTR_MSG.
        let mut payload = vec![0u8; 16];
        let text = b"Specified qdisc kind is unknown.\0";
        let len = 4 + text.len();
        payload.extend_from_slice(&(len as u16).to_ne_bytes());
        payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend_from_slice(text);
        payload.resize(16 + len.next_multiple_of(4), 0);
        let mut error = ErrorMessage::default();
        error.code = std::num::NonZeroI32::new(-libc::ENOENT);
        error.header = payload;
        let err = kernel_error(&error, NLM_F_CAPPED | NLM_F_ACK_TLVS);
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string()
                .ends_with(": Specified qdisc kind is unknown."),
            "{err}"
        );
        assert_eq!(kernel_error(&error, 0).raw_os_error(), Some(libc::ENOENT));
    }
}
