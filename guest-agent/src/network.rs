//! `ReconfigureNetwork`: give an interface a new MAC, IPv4 address, default
//! route and DNS servers — what a host does to a VM cloned from a snapshot.
//!
//! The request is checked first ([`NetPlan::from_request`], pure), then applied
//! over rtnetlink in this order: MAC (link down while it changes), the
//! interface's IPv4 addresses replaced by the new one, link up, the default
//! route replaced, `/etc/resolv.conf` replaced atomically (one
//! `nameserver <ip>` line a server, as init writes it at boot).

use guest_proto::ReconfigureNetworkRequest;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use tokio_stream::StreamExt;

/// The interface a request without a name means.
pub const DEFAULT_INTERFACE: &str = "eth0";
/// Most DNS servers accepted in one request.
pub const MAX_DNS_SERVERS: usize = 8;

/// Why a reconfiguration was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A field of the request is not valid.
    #[error("{field}: {reason}")]
    Invalid {
        /// The request field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No interface of that name.
    #[error("no network interface named {0:?}")]
    NoInterface(String),
    /// A netlink request failed.
    #[error("{step}")]
    Netlink {
        /// What was being done.
        step: String,
        /// The kernel's or the library's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// The netlink socket could not be opened.
    #[error("open a netlink socket")]
    Socket(#[source] std::io::Error),
    /// `/etc/resolv.conf` could not be written.
    #[error("write {}", .0.display())]
    Resolv(PathBuf, #[source] std::io::Error),
}

impl From<NetworkError> for tonic::Status {
    fn from(e: NetworkError) -> Self {
        let text = crate::error_chain(&e);
        match e {
            NetworkError::Invalid { .. } => tonic::Status::invalid_argument(text),
            NetworkError::NoInterface(_) => tonic::Status::not_found(text),
            _ => tonic::Status::internal(text),
        }
    }
}

/// A checked request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetPlan {
    /// The interface's name.
    pub interface: String,
    /// A new MAC address.
    pub mac: Option<[u8; 6]>,
    /// The new IPv4 address and prefix length.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// The new default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers for `/etc/resolv.conf` (none: the file is left alone).
    pub dns: Vec<IpAddr>,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> NetworkError {
    NetworkError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl NetPlan {
    /// Checks every field; empty strings mean "leave as it is" (an empty
    /// interface name means `eth0`).
    pub fn from_request(req: &ReconfigureNetworkRequest) -> Result<NetPlan, NetworkError> {
        let interface = match req.interface_name.as_str() {
            "" => DEFAULT_INTERFACE.to_string(),
            name => check_interface(name)?,
        };
        let mac = (!req.mac.is_empty())
            .then(|| parse_mac(&req.mac))
            .transpose()?;
        let ipv4 = (!req.ipv4.is_empty())
            .then(|| parse_address(&req.ipv4, req.prefix))
            .transpose()?;
        if ipv4.is_none() && req.prefix != 0 {
            return Err(invalid("prefix", "given without an ipv4 address"));
        }
        let gateway = (!req.gateway.is_empty())
            .then(|| parse_gateway(&req.gateway))
            .transpose()?;
        Ok(NetPlan {
            interface,
            mac,
            ipv4,
            gateway,
            dns: parse_dns(&req.dns_servers)?,
        })
    }
}

/// An interface name as the kernel takes it: 1-15 bytes, no `/`, `:`,
/// whitespace or control characters, not `.` or `..`.
fn check_interface(name: &str) -> Result<String, NetworkError> {
    let bad_char = name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if name.len() > 15 || bad_char || name == "." || name == ".." {
        return Err(invalid(
            "interface_name",
            format!("{name:?} is not an interface name"),
        ));
    }
    Ok(name.to_string())
}

/// `aa:bb:cc:dd:ee:ff` (or with `-`), unicast and not all zeros (the
/// contract's parser, which init uses for `guest_mac` too).
pub fn parse_mac(text: &str) -> Result<[u8; 6], NetworkError> {
    guest_contract::network::parse_mac(text).map_err(|reason| invalid("mac", reason))
}

fn parse_address(text: &str, prefix: u32) -> Result<(Ipv4Addr, u8), NetworkError> {
    let ip: Ipv4Addr = text
        .parse()
        .map_err(|_| invalid("ipv4", format!("{text:?} is not an IPv4 address")))?;
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
        return Err(invalid("ipv4", format!("{ip} cannot be a host's address")));
    }
    match u8::try_from(prefix) {
        Ok(p @ 1..=32) => Ok((ip, p)),
        _ => Err(invalid("prefix", format!("{prefix} is not 1-32"))),
    }
}

fn parse_gateway(text: &str) -> Result<Ipv4Addr, NetworkError> {
    let gw: Ipv4Addr = text
        .parse()
        .map_err(|_| invalid("gateway", format!("{text:?} is not an IPv4 address")))?;
    if gw.is_unspecified() || gw.is_multicast() || gw.is_broadcast() {
        return Err(invalid("gateway", format!("{gw} cannot be a gateway")));
    }
    Ok(gw)
}

fn parse_dns(servers: &[String]) -> Result<Vec<IpAddr>, NetworkError> {
    if servers.len() > MAX_DNS_SERVERS {
        return Err(invalid(
            "dns_servers",
            format!("{} given, at most {MAX_DNS_SERVERS}", servers.len()),
        ));
    }
    servers
        .iter()
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| invalid("dns_servers", format!("{s:?} is not an IP address")))
        })
        .collect()
}

/// `/etc/resolv.conf` for `servers`: `nameserver <ip>` a line.
pub fn resolv_conf(servers: &[IpAddr]) -> String {
    servers
        .iter()
        .map(|s| format!("nameserver {s}\n"))
        .collect()
}

/// Applies `plan`; `resolv` is the file DNS servers go to.
pub async fn apply(plan: &NetPlan, resolv: &Path) -> Result<(), NetworkError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(NetworkError::Socket)?;
    let task = tokio::spawn(connection);
    let result = configure(&handle, plan).await;
    task.abort();
    result?;
    if !plan.dns.is_empty() {
        write_resolv(resolv, &resolv_conf(&plan.dns))?;
    }
    Ok(())
}

fn netlink(step: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let step = step.into();
    move |source| NetworkError::Netlink { step, source }
}

async fn configure(handle: &Handle, plan: &NetPlan) -> Result<(), NetworkError> {
    let index = link_index(handle, &plan.interface).await?;
    let name = &plan.interface;
    if let Some(mac) = plan.mac {
        set_mac(handle, index, name, mac).await?;
    }
    if let Some((ip, prefix)) = plan.ipv4 {
        // The new address first, then the others: the link is never left
        // without one, and routes through the new prefix survive.
        handle
            .address()
            .add(index, IpAddr::V4(ip), prefix)
            .replace()
            .execute()
            .await
            .map_err(netlink(format!("add {ip}/{prefix} to {name}")))?;
        remove_other_ipv4(handle, index, name, ip).await?;
    }
    set_link(handle, LinkUnspec::new_with_index(index).up(), name, "up").await?;
    if let Some(gw) = plan.gateway {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gw)
            .output_interface(index)
            .build();
        handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(netlink(format!("default route via {gw} on {name}")))?;
    }
    Ok(())
}

async fn set_link(
    handle: &Handle,
    msg: rtnetlink::LinkMessageBuilder<LinkUnspec>,
    name: &str,
    what: &str,
) -> Result<(), NetworkError> {
    handle
        .link()
        .set(msg.build())
        .execute()
        .await
        .map_err(netlink(format!("set {name} {what}")))
}

async fn link_index(handle: &Handle, name: &str) -> Result<u32, NetworkError> {
    let links = handle.link().get().match_name(name.to_string()).execute();
    let mut links = std::pin::pin!(links);
    match links.next().await {
        Some(Ok(link)) => Ok(link.header.index),
        // The kernel answers ENODEV for a name it does not know.
        Some(Err(_)) | None => Err(NetworkError::NoInterface(name.to_string())),
    }
}

/// Sets the MAC with the link up when the driver allows it (virtio-net and
/// bridges do), so its routes and IPv6 addresses stay; otherwise down, set,
/// and up again — also when setting it fails.
async fn set_mac(
    handle: &Handle,
    index: u32,
    name: &str,
    mac: [u8; 6],
) -> Result<(), NetworkError> {
    let set = || LinkUnspec::new_with_index(index).address(mac.to_vec());
    if set_link(handle, set(), name, "MAC").await.is_ok() {
        return Ok(());
    }
    set_link(
        handle,
        LinkUnspec::new_with_index(index).down(),
        name,
        "down",
    )
    .await?;
    let result = set_link(handle, set(), name, "MAC").await;
    let up = set_link(handle, LinkUnspec::new_with_index(index).up(), name, "up").await;
    result.and(up)
}

/// Removes the IPv4 addresses of interface `index` other than `keep`. One
/// already gone (a secondary removed with its primary) is not an error.
async fn remove_other_ipv4(
    handle: &Handle,
    index: u32,
    name: &str,
    keep: Ipv4Addr,
) -> Result<(), NetworkError> {
    let found = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    let mut found = std::pin::pin!(found);
    let mut old: Vec<AddressMessage> = Vec::new();
    while let Some(msg) = found.next().await {
        let msg = msg.map_err(netlink(format!("list the addresses of {name}")))?;
        let is_keep = msg.attributes.iter().any(|a| {
            matches!(a, AddressAttribute::Local(IpAddr::V4(v)) | AddressAttribute::Address(IpAddr::V4(v)) if *v == keep)
        });
        if msg.header.family == AddressFamily::Inet && msg.header.index == index && !is_keep {
            old.push(msg);
        }
    }
    for msg in old {
        match handle.address().del(msg).execute().await {
            Ok(()) => {}
            Err(rtnetlink::Error::NetlinkError(e))
                if e.code.map(|c| -c.get()) == Some(libc::EADDRNOTAVAIL) => {}
            Err(e) => return Err(netlink(format!("remove an old address of {name}"))(e)),
        }
    }
    Ok(())
}

/// Replaces `path` atomically (a temporary file in its folder, then rename).
fn write_resolv(path: &Path, text: &str) -> Result<(), NetworkError> {
    let fail = |e| NetworkError::Resolv(path.to_path_buf(), e);
    let dir = path.parent().unwrap_or(Path::new("/"));
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".resolv.conf.{}.{n}", std::process::id()));
    std::fs::write(&tmp, text).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req(f: impl FnOnce(&mut ReconfigureNetworkRequest)) -> ReconfigureNetworkRequest {
        let mut r = ReconfigureNetworkRequest {
            interface_name: String::new(),
            mac: "02:00:00:aa:bb:01".into(),
            ipv4: "10.0.2.20".into(),
            prefix: 24,
            gateway: "10.0.2.2".into(),
            dns_servers: vec!["10.0.2.3".into(), "2001:db8::53".into()],
        };
        f(&mut r);
        r
    }

    #[test]
    fn a_full_request_becomes_a_plan() {
        let plan = NetPlan::from_request(&req(|_| {})).unwrap();
        assert_eq!(plan.interface, "eth0");
        assert_eq!(plan.mac, Some([2, 0, 0, 0xaa, 0xbb, 1]));
        assert_eq!(plan.ipv4, Some((Ipv4Addr::new(10, 0, 2, 20), 24)));
        assert_eq!(plan.gateway, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(
            resolv_conf(&plan.dns),
            "nameserver 10.0.2.3\nnameserver 2001:db8::53\n"
        );
    }

    #[test]
    fn empty_fields_leave_things_as_they_are() {
        let plan = NetPlan::from_request(&req(|r| {
            r.mac.clear();
            r.ipv4.clear();
            r.prefix = 0;
            r.gateway.clear();
            r.dns_servers.clear();
        }))
        .unwrap();
        assert_eq!((plan.mac, plan.ipv4, plan.gateway), (None, None, None));
        assert!(plan.dns.is_empty());
    }

    #[test]
    fn bad_fields_are_named() {
        type Change = fn(&mut ReconfigureNetworkRequest);
        let cases: Vec<(&str, Change)> = vec![
            ("interface_name", |r| r.interface_name = "../etc".into()),
            ("interface_name", |r| r.interface_name = "a".repeat(16)),
            ("interface_name", |r| r.interface_name = "e th0".into()),
            ("mac", |r| r.mac = "01:00:00:00:00:01".into()),
            ("mac", |r| r.mac = "00:00:00:00:00:00".into()),
            ("mac", |r| r.mac = "02:00:00:00:00".into()),
            ("mac", |r| r.mac = "02:00:00:00:00:0g".into()),
            ("mac", |r| r.mac = "02:00:00:00:00:001".into()),
            ("ipv4", |r| r.ipv4 = "10.0.2".into()),
            ("ipv4", |r| r.ipv4 = "::1".into()),
            ("ipv4", |r| r.ipv4 = "0.0.0.0".into()),
            ("prefix", |r| r.prefix = 0),
            ("prefix", |r| r.prefix = 33),
            ("prefix", |r| {
                r.ipv4.clear();
                r.prefix = 8
            }),
            ("gateway", |r| r.gateway = "224.0.0.1".into()),
            ("gateway", |r| r.gateway = "gw".into()),
            ("dns_servers", |r| r.dns_servers = vec!["8.8.8".into()]),
            ("dns_servers", |r| r.dns_servers = vec!["1.1.1.1".into(); 9]),
        ];
        for (field, change) in cases {
            let r = req(change);
            match NetPlan::from_request(&r) {
                Err(NetworkError::Invalid { field: f, .. }) => assert_eq!(f, field, "{r:?}"),
                other => panic!("{r:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn resolv_conf_is_replaced_whole() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 192.0.2.1\nsearch old\n").unwrap();
        write_resolv(&path, "nameserver 10.0.2.3\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "nameserver 10.0.2.3\n"
        );
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp left"
        );
        let e = write_resolv(&d.path().join("no/such/resolv.conf"), "x").unwrap_err();
        assert!(matches!(e, NetworkError::Resolv(..)), "{e}");
    }
}
