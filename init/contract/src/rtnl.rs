//! The four rtnetlink requests init sends, encoded by hand (a message
//! crate costs init ~590 KB against its 1.5 MiB budget), and the reply
//! parser that finds a request's ACK. Layouts are the kernel's
//! (`linux/netlink.h`, `linux/rtnetlink.h`, `linux/if_addr.h`); numbers are
//! native-endian as the kernel reads them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Size of `struct nlmsghdr`.
pub const HEADER_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IFA_F_NODAD: u8 = 0x02;
const IFA_FLAGS: u16 = 8;
const IFF_UP: u32 = 0x1;
const IFLA_MTU: u16 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;
const RTNH_F_ONLINK: u32 = 4;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One request under construction.
struct Message {
    buf: Vec<u8>,
}

impl Message {
    fn new(kind: u16, flags: u16, seq: u32) -> Message {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | flags).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        Message { buf }
    }

    fn bytes(mut self, b: &[u8]) -> Message {
        self.buf.extend_from_slice(b);
        self
    }

    fn attr(mut self, kind: u16, data: &[u8]) -> Message {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// RTM_SETLINK: link `index` up, with `mtu` when given.
pub fn link_up(seq: u32, index: u32, mtu: Option<u32>) -> Vec<u8> {
    // struct ifinfomsg: family, pad, type, index, flags, change.
    let mut info = vec![0u8, 0, 0, 0];
    info.extend_from_slice(&index.to_ne_bytes());
    info.extend_from_slice(&IFF_UP.to_ne_bytes());
    info.extend_from_slice(&IFF_UP.to_ne_bytes());
    let msg = Message::new(RTM_SETLINK, 0, seq).bytes(&info);
    match mtu {
        Some(m) => msg.attr(IFLA_MTU, &m.to_ne_bytes()).finish(),
        None => msg.finish(),
    }
}

/// RTM_NEWADDR (create or replace): `addr/prefix` on link `index`, with
/// its broadcast address for IPv4 prefixes below /31; IPv6 without
/// duplicate address detection (usable at once).
pub fn add_address(seq: u32, index: u32, addr: IpAddr, prefix: u8) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => add_ipv4(seq, index, a, prefix),
        IpAddr::V6(a) => add_ipv6(seq, index, a, prefix),
    }
}

/// RTM_NEWADDR for an IPv4 address.
pub fn add_ipv4(seq: u32, index: u32, addr: Ipv4Addr, prefix: u8) -> Vec<u8> {
    // struct ifaddrmsg: family, prefixlen, flags, scope, index.
    let mut ifa = vec![AF_INET, prefix, 0, RT_SCOPE_UNIVERSE];
    ifa.extend_from_slice(&index.to_ne_bytes());
    let msg = Message::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, seq)
        .bytes(&ifa)
        .attr(IFA_LOCAL, &addr.octets())
        .attr(IFA_ADDRESS, &addr.octets());
    match broadcast(addr, prefix) {
        Some(b) => msg.attr(IFA_BROADCAST, &b.octets()).finish(),
        None => msg.finish(),
    }
}

/// RTM_NEWADDR for an IPv6 address, flagged IFA_F_NODAD.
pub fn add_ipv6(seq: u32, index: u32, addr: Ipv6Addr, prefix: u8) -> Vec<u8> {
    let mut ifa = vec![AF_INET6, prefix, IFA_F_NODAD, RT_SCOPE_UNIVERSE];
    ifa.extend_from_slice(&index.to_ne_bytes());
    Message::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, seq)
        .bytes(&ifa)
        .attr(IFA_LOCAL, &addr.octets())
        .attr(IFA_ADDRESS, &addr.octets())
        .attr(IFA_FLAGS, &u32::from(IFA_F_NODAD).to_ne_bytes())
        .finish()
}

/// The broadcast address of `addr/prefix` (none for /31 and /32).
pub fn broadcast(addr: Ipv4Addr, prefix: u8) -> Option<Ipv4Addr> {
    (prefix < 31).then(|| Ipv4Addr::from(u32::from(addr) | (u32::MAX >> prefix)))
}

/// RTM_NEWROUTE (create or replace): the main table's default route (IPv4
/// or IPv6, as `gw` is) via `gw` on link `index`.
pub fn default_route(seq: u32, index: u32, gw: IpAddr) -> Vec<u8> {
    // IPv4 gateways are taken as on-link (RTNH_F_ONLINK): one outside the
    // address's prefix (a host that hands out a /32), or with no address
    // at all, still works.
    let (family, gw, flags) = match gw {
        IpAddr::V4(g) => (AF_INET, g.octets().to_vec(), RTNH_F_ONLINK),
        IpAddr::V6(g) => (AF_INET6, g.octets().to_vec(), 0),
    };
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    let mut rtm = vec![
        family,
        0,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_BOOT,
        RT_SCOPE_UNIVERSE,
        RTN_UNICAST,
    ];
    rtm.extend_from_slice(&flags.to_ne_bytes());
    Message::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, seq)
        .bytes(&rtm)
        .attr(RTA_GATEWAY, &gw)
        .attr(RTA_OIF, &index.to_ne_bytes())
        .finish()
}

/// What a datagram from the kernel says of request `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The request succeeded.
    Ack,
    /// The kernel refused it with this errno.
    Refused(i32),
    /// Nothing about `seq` in this datagram.
    Other,
    /// The datagram is not a well-formed sequence of netlink messages.
    Malformed,
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

/// Finds the ACK or error of request `seq` in one datagram.
pub fn reply(mut buf: &[u8], seq: u32) -> Reply {
    while !buf.is_empty() {
        let (Some(len), Some(kind), Some(got)) = (u32_at(buf, 0), u16_at(buf, 4), u32_at(buf, 8))
        else {
            return Reply::Malformed;
        };
        let len = len as usize;
        if len < HEADER_LEN || len > buf.len() {
            return Reply::Malformed;
        }
        if kind == NLMSG_ERROR && got == seq {
            if len < HEADER_LEN + 4 {
                return Reply::Malformed;
            }
            return match buf.get(HEADER_LEN..HEADER_LEN + 4) {
                Some(b) => match i32::from_ne_bytes([b[0], b[1], b[2], b[3]]) {
                    0 => Reply::Ack,
                    e => Reply::Refused(e.checked_neg().unwrap_or(i32::MAX)),
                },
                None => Reply::Malformed,
            };
        }
        buf = buf.get(align4(len)..).unwrap_or(&[]);
    }
    Reply::Other
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ack(seq: u32, errno: i32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&36u32.to_ne_bytes());
        b.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&(-errno).to_ne_bytes());
        b.extend_from_slice(&[0u8; 16]);
        b
    }

    #[test]
    fn requests_have_the_kernels_layout() {
        let m = link_up(7, 2, Some(1400));
        assert_eq!(m.len(), 16 + 16 + 8);
        assert_eq!(u32_at(&m, 0), Some(40));
        assert_eq!(u16_at(&m, 4), Some(RTM_SETLINK));
        assert_eq!(u16_at(&m, 6), Some(NLM_F_REQUEST | NLM_F_ACK));
        assert_eq!(u32_at(&m, 8), Some(7));
        assert_eq!(u32_at(&m, 20), Some(2), "ifi_index");
        assert_eq!(
            (u32_at(&m, 24), u32_at(&m, 28)),
            (Some(IFF_UP), Some(IFF_UP))
        );
        assert_eq!(
            (u16_at(&m, 32), u16_at(&m, 34), u32_at(&m, 36)),
            (Some(8), Some(IFLA_MTU), Some(1400))
        );
        let a = add_ipv4(8, 3, Ipv4Addr::new(10, 0, 2, 15), 24);
        assert_eq!(a.len(), 16 + 8 + 3 * 8);
        assert_eq!(&a[16..20], &[AF_INET, 24, 0, 0]);
        assert_eq!(u32_at(&a, 20), Some(3));
        assert_eq!(
            &a[24..32],
            &[8, 0, 2, 0, 10, 0, 2, 15],
            "IFA_LOCAL (little-endian host)"
        );
        assert_eq!(&a[44..48], &[10, 0, 2, 255], "broadcast");
        assert_eq!(
            add_ipv4(8, 3, Ipv4Addr::new(10, 0, 2, 15), 32).len(),
            16 + 8 + 2 * 8
        );
        let v6 = add_address(8, 3, IpAddr::V6("2001:db8::15".parse().unwrap()), 64);
        assert_eq!(v6.len(), 16 + 8 + 2 * 20 + 8);
        assert_eq!(&v6[16..20], &[AF_INET6, 64, IFA_F_NODAD, 0]);
        assert_eq!(&v6[28..30], &[0x20, 0x01], "IFA_LOCAL starts 2001:");
        let r6 = default_route(9, 3, IpAddr::V6("fe80::1".parse().unwrap()));
        assert_eq!(r6.len(), 16 + 12 + 20 + 8);
        assert_eq!(r6[16], AF_INET6);
        let r = default_route(9, 3, IpAddr::V4(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(r.len(), 16 + 12 + 8 + 8);
        assert_eq!(
            &r[16..24],
            &[AF_INET, 0, 0, 0, 254, RTPROT_BOOT, 0, RTN_UNICAST]
        );
        assert_eq!(&r[32..36], &[10, 0, 2, 2]);
        assert_eq!(u32_at(&r, 24), Some(RTNH_F_ONLINK));
        assert_eq!(u32_at(&r6, 24), Some(0));
        assert_eq!(u32_at(&r, 40), Some(3));
    }

    #[test]
    fn replies_are_matched_by_sequence_number() {
        assert_eq!(reply(&ack(5, 0), 5), Reply::Ack);
        assert_eq!(reply(&ack(5, 17), 5), Reply::Refused(17));
        assert_eq!(reply(&ack(4, 0), 5), Reply::Other);
        let mut two = ack(4, 0);
        two.extend(ack(5, 1));
        assert_eq!(reply(&two, 5), Reply::Refused(1));
        assert_eq!(reply(&[1, 2, 3], 5), Reply::Malformed);
        let mut short = ack(5, 0);
        short.truncate(18);
        assert_eq!(reply(&short, 5), Reply::Malformed);
        let mut overlong = ack(5, 0);
        overlong[0] = 200;
        assert_eq!(reply(&overlong, 5), Reply::Malformed);
        assert_eq!(reply(&[], 5), Reply::Other);
    }

    #[test]
    fn broadcast_addresses() {
        let ip = Ipv4Addr::new(192, 168, 1, 9);
        assert_eq!(broadcast(ip, 24), Some(Ipv4Addr::new(192, 168, 1, 255)));
        assert_eq!(broadcast(ip, 1), Some(Ipv4Addr::new(255, 255, 255, 255)));
        assert_eq!(broadcast(ip, 31), None);
    }
}
