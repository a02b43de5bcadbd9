//! The network a config asks for (`network_enabled` and its keys) as checked
//! settings, and the files init writes for it in the new root.
//!
//! hypeman's keys: `guest_ip` + `guest_cidr` (a static IPv4 address and its
//! prefix), `guest_gw` (the default route), `guest_dns` (one server). The
//! superset adds `dns_servers` (after `guest_dns`), `search_domains`, `mtu`.
//! `/etc/resolv.conf` is one `nameserver <ip>` line a server, as a hypeman
//! host's init writes it, then one `search` line when domains are given.

use crate::config::Config;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The interface init configures.
pub const INTERFACE: &str = "eth0";
/// Most DNS servers written (the resolver reads the first 3).
pub const MAX_DNS_SERVERS: usize = 8;
/// Most search domains written (glibc's resolver reads 6).
pub const MAX_SEARCH_DOMAINS: usize = 6;
/// Smallest and largest MTU accepted (IPv4's minimum; the largest a link takes).
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

/// A network key with a value init cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct NetError {
    /// The config key.
    pub key: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn bad(key: &'static str, reason: impl Into<String>) -> NetError {
    NetError {
        key,
        reason: reason.into(),
    }
}

/// Checked network settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSettings {
    /// The interface (`eth0`), unless `mac` picks it.
    pub interface: String,
    /// Configure the interface with this MAC address instead (`guest_mac`).
    pub mac: Option<[u8; 6]>,
    /// Its IPv4 address and prefix length.
    pub address: Option<(Ipv4Addr, u8)>,
    /// The default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// A static IPv6 address and prefix length (`guest_ipv6`).
    pub address6: Option<(Ipv6Addr, u8)>,
    /// The IPv6 default gateway (`guest_gw6`).
    pub gateway6: Option<Ipv6Addr>,
    /// DNS servers, `guest_dns` first.
    pub dns: Vec<IpAddr>,
    /// DNS search domains.
    pub search: Vec<String>,
    /// The interface's MTU.
    pub mtu: Option<u32>,
}

impl NetSettings {
    /// The settings of `config`; `None` unless `network_enabled`. An empty
    /// string counts as absent (hosts write `""` for "none").
    pub fn from_config(config: &Config) -> Result<Option<NetSettings>, NetError> {
        if !config.network_enabled() {
            return Ok(None);
        }
        let address = address(config)?;
        let gateway = present(&config.guest_gw)
            .map(|g| ipv4("guest_gw", g))
            .transpose()?;
        if let (Some(gw), Some((ip, _))) = (gateway, address) {
            if gw == ip {
                return Err(bad("guest_gw", format!("{gw} is the guest's own address")));
            }
        }
        let mtu = config.mtu.map(check_mtu).transpose()?;
        let mac = present(&config.guest_mac)
            .map(|m| parse_mac(m).map_err(|reason| bad("guest_mac", reason)))
            .transpose()?;
        Ok(Some(NetSettings {
            interface: INTERFACE.to_string(),
            mac,
            address,
            gateway,
            address6: present(&config.guest_ipv6).map(ipv6_address).transpose()?,
            gateway6: present(&config.guest_gw6).map(ipv6_gateway).transpose()?,
            dns: dns_servers(config)?,
            search: search_domains(config)?,
            mtu,
        }))
    }

    /// `/etc/resolv.conf`, or `None` when there is nothing to write (the
    /// image's own file is kept).
    pub fn resolv_conf(&self) -> Option<String> {
        if self.dns.is_empty() && self.search.is_empty() {
            return None;
        }
        let mut text: String = self
            .dns
            .iter()
            .map(|s| format!("nameserver {s}\n"))
            .collect();
        if !self.search.is_empty() {
            text.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        Some(text)
    }
}

/// `/etc/hosts` naming `hostname` (`127.0.1.1`, as Debian does) and
/// `localhost`, built on the image's `existing` file (its lines are kept);
/// `None` when the file already names both.
pub fn hosts_file(existing: &str, hostname: &str) -> Option<String> {
    let entries: Vec<Vec<&str>> = existing
        .lines()
        .map(|l| {
            l.split('#')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect()
        })
        .filter(|f: &Vec<&str>| f.len() >= 2)
        .collect();
    let names = |name: &str| entries.iter().any(|f| f[1..].contains(&name));
    let (has_localhost, has_host) = (names("localhost"), names(hostname));
    if has_localhost && has_host {
        return None;
    }
    let mut text = existing.to_string();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    if !has_localhost {
        text.push_str("127.0.0.1\tlocalhost\n");
    }
    if !has_host {
        text.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    Some(text)
}

/// `aa:bb:cc:dd:ee:ff` (or with `-`): a unicast MAC address, not all zeros.
pub fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let bad = || format!("{text:?} is not a MAC address");
    let parts: Vec<&str> = text.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(&parts) {
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 == 1 || mac == [0; 6] {
        return Err(format!("{text} is not a unicast address"));
    }
    Ok(mac)
}

/// A MAC address as `ip` and sysfs print it (`02:00:00:00:00:42`).
pub fn format_mac(mac: [u8; 6]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

/// `2001:db8::15/64`: a unicast IPv6 address (not link-local, which the
/// kernel makes itself) and a prefix length of 1-128.
fn ipv6_address(text: &str) -> Result<(Ipv6Addr, u8), NetError> {
    let key = "guest_ipv6";
    let (ip, prefix) = text
        .split_once('/')
        .ok_or_else(|| bad(key, format!("{text:?} lacks its /prefix")))?;
    let ip: Ipv6Addr = ip
        .parse()
        .map_err(|_| bad(key, format!("{ip:?} is not an IPv6 address")))?;
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_unicast_link_local() {
        return Err(bad(key, format!("{ip} cannot be used here")));
    }
    match prefix.parse::<u8>() {
        Ok(p @ 1..=128) => Ok((ip, p)),
        _ => Err(bad(
            key,
            format!("{prefix:?} is not a prefix length of 1-128"),
        )),
    }
}

fn ipv6_gateway(text: &str) -> Result<Ipv6Addr, NetError> {
    let gw: Ipv6Addr = text
        .parse()
        .map_err(|_| bad("guest_gw6", format!("{text:?} is not an IPv6 address")))?;
    if gw.is_unspecified() || gw.is_loopback() || gw.is_multicast() {
        return Err(bad("guest_gw6", format!("{gw} cannot be a gateway")));
    }
    Ok(gw)
}

fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

fn ipv4(key: &'static str, text: &str) -> Result<Ipv4Addr, NetError> {
    let ip: Ipv4Addr = text
        .parse()
        .map_err(|_| bad(key, format!("{text:?} is not an IPv4 address")))?;
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
        return Err(bad(key, format!("{ip} cannot be used here")));
    }
    Ok(ip)
}

fn address(config: &Config) -> Result<Option<(Ipv4Addr, u8)>, NetError> {
    let Some(text) = present(&config.guest_ip) else {
        return match config.guest_cidr {
            Some(p) if p != 0 => Err(bad("guest_cidr", "given without guest_ip")),
            _ => Ok(None),
        };
    };
    let ip = ipv4("guest_ip", text)?;
    match config.guest_cidr {
        Some(p @ 1..=32) => Ok(Some((ip, p))),
        Some(p) => Err(bad(
            "guest_cidr",
            format!("{p} is not a prefix length of 1-32"),
        )),
        None => Err(bad(
            "guest_cidr",
            "missing: guest_ip needs its prefix length",
        )),
    }
}

fn dns_servers(config: &Config) -> Result<Vec<IpAddr>, NetError> {
    let mut servers = Vec::new();
    if let Some(d) = present(&config.guest_dns) {
        servers.push(parse_server("guest_dns", d)?);
    }
    for d in config.dns_servers.iter().flatten() {
        servers.push(parse_server("dns_servers", d)?);
    }
    if servers.len() > MAX_DNS_SERVERS {
        return Err(bad(
            "dns_servers",
            format!("{} servers, at most {MAX_DNS_SERVERS}", servers.len()),
        ));
    }
    Ok(servers)
}

fn parse_server(key: &'static str, text: &str) -> Result<IpAddr, NetError> {
    let ip: IpAddr = text
        .parse()
        .map_err(|_| bad(key, format!("{text:?} is not an IP address")))?;
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(bad(key, format!("{ip} cannot be a DNS server")));
    }
    Ok(ip)
}

fn search_domains(config: &Config) -> Result<Vec<String>, NetError> {
    let domains: Vec<String> = config.search_domains.iter().flatten().cloned().collect();
    if domains.len() > MAX_SEARCH_DOMAINS {
        return Err(bad(
            "search_domains",
            format!("{} domains, at most {MAX_SEARCH_DOMAINS}", domains.len()),
        ));
    }
    for d in &domains {
        check_domain(d)?;
    }
    Ok(domains)
}

/// A DNS name: 1-253 bytes of labels of 1-63 letters, digits, `-` and `_`
/// (no leading or trailing `-`), separated by dots.
fn check_domain(name: &str) -> Result<(), NetError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let name_ok = name.trim_end_matches('.');
    if name_ok.is_empty() || name.len() > 253 || !name_ok.split('.').all(label_ok) {
        return Err(bad(
            "search_domains",
            format!("{name:?} is not a domain name"),
        ));
    }
    Ok(())
}

fn check_mtu(mtu: u32) -> Result<u32, NetError> {
    if MTU_RANGE.contains(&mtu) {
        Ok(mtu)
    } else {
        Err(bad("mtu", format!("{mtu} is not within 68-65535")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn settings(json: &str) -> Result<Option<NetSettings>, NetError> {
        let config = crate::config::parse_config(json.as_bytes()).unwrap().config;
        NetSettings::from_config(&config)
    }

    #[test]
    fn hypemans_keys_become_settings_and_resolv_conf() {
        let s = settings(
            r#"{"network_enabled":true,"guest_ip":"10.0.2.15","guest_cidr":24,"guest_gw":"10.0.2.2","guest_dns":"10.0.2.3"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.interface, "eth0");
        assert_eq!(s.address, Some((Ipv4Addr::new(10, 0, 2, 15), 24)));
        assert_eq!(s.gateway, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(s.resolv_conf().unwrap(), "nameserver 10.0.2.3\n");
        assert_eq!(s.mtu, None);
    }

    #[test]
    fn superset_keys_add_servers_search_domains_and_mtu() {
        let s = settings(
            r#"{"network_enabled":true,"guest_ip":"10.0.2.15","guest_cidr":24,"guest_dns":"10.0.2.3",
                "dns_servers":["2001:db8::53","1.1.1.1"],"search_domains":["corp.example","example."],"mtu":1400}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            s.resolv_conf().unwrap(),
            "nameserver 10.0.2.3\nnameserver 2001:db8::53\nnameserver 1.1.1.1\nsearch corp.example example.\n"
        );
        assert_eq!(s.mtu, Some(1400));
    }

    #[test]
    fn ipv6_and_mac_selection_are_superset_keys() {
        let s = settings(
            r#"{"network_enabled":true,"guest_ipv6":"2001:db8::15/64","guest_gw6":"fe80::1","guest_mac":"02-00-00-00-00-42"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.address6, Some(("2001:db8::15".parse().unwrap(), 64)));
        assert_eq!(s.gateway6, Some("fe80::1".parse().unwrap()));
        assert_eq!(s.mac, Some([2, 0, 0, 0, 0, 0x42]));
        assert_eq!(format_mac([2, 0, 0, 0xab, 0, 0x42]), "02:00:00:ab:00:42");
        assert_eq!(s.address, None);
    }

    #[test]
    fn hosts_name_the_hostname_and_keep_the_images_lines() {
        assert_eq!(
            hosts_file("", "guest-1").unwrap(),
            "127.0.0.1\tlocalhost\n127.0.1.1\tguest-1\n"
        );
        let image = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n10.1.1.1 db # the database";
        assert_eq!(
            hosts_file(image, "guest-1").unwrap(),
            format!("{image}\n127.0.1.1\tguest-1\n")
        );
        let named = format!("{image}\n127.0.1.1\tguest-1\n");
        assert_eq!(
            hosts_file(&named, "guest-1"),
            None,
            "a second boot adds nothing"
        );
        assert!(hosts_file("# 127.0.0.1 localhost guest-1\n", "guest-1")
            .unwrap()
            .contains("127.0.1.1\tguest-1"));
        assert!(hosts_file("10.0.0.1 db\n", "db")
            .unwrap()
            .contains("localhost"));
    }

    #[test]
    fn disabled_or_empty_means_nothing_to_do() {
        assert_eq!(settings(r#"{"guest_ip":"10.0.2.15"}"#).unwrap(), None);
        let s = settings(r#"{"network_enabled":true,"guest_ip":"","guest_gw":"","guest_dns":""}"#)
            .unwrap()
            .unwrap();
        assert_eq!((s.address, s.gateway), (None, None));
        assert_eq!(s.resolv_conf(), None, "the image's resolv.conf is kept");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (json, key) in [
            (r#""guest_ip":"10.0.2","guest_cidr":24"#, "guest_ip"),
            (r#""guest_ip":"127.0.0.1","guest_cidr":8"#, "guest_ip"),
            (r#""guest_ip":"10.0.2.15""#, "guest_cidr"),
            (r#""guest_ip":"10.0.2.15","guest_cidr":33"#, "guest_cidr"),
            (r#""guest_ip":"10.0.2.15","guest_cidr":0"#, "guest_cidr"),
            (r#""guest_cidr":24"#, "guest_cidr"),
            (r#""guest_gw":"255.255.255.255""#, "guest_gw"),
            (
                r#""guest_ip":"10.0.2.15","guest_cidr":24,"guest_gw":"10.0.2.15""#,
                "guest_gw",
            ),
            (r#""guest_dns":"dns.example""#, "guest_dns"),
            (r#""dns_servers":["0.0.0.0"]"#, "dns_servers"),
            (
                r#""dns_servers":["1.1.1.1","1.1.1.1","1.1.1.1","1.1.1.1","1.1.1.1","1.1.1.1","1.1.1.1","1.1.1.1","1.1.1.1"]"#,
                "dns_servers",
            ),
            (r#""search_domains":["a b"]"#, "search_domains"),
            (r#""search_domains":["-bad.example"]"#, "search_domains"),
            (
                r#""search_domains":["x\nnameserver 6.6.6.6"]"#,
                "search_domains",
            ),
            (r#""mtu":67"#, "mtu"),
            (r#""mtu":65536"#, "mtu"),
            (r#""guest_ipv6":"2001:db8::15""#, "guest_ipv6"),
            (r#""guest_ipv6":"fe80::1/64""#, "guest_ipv6"),
            (r#""guest_ipv6":"2001:db8::15/129""#, "guest_ipv6"),
            (r#""guest_ipv6":"10.0.2.15/24""#, "guest_ipv6"),
            (r#""guest_gw6":"ff02::1""#, "guest_gw6"),
            (r#""guest_mac":"01:00:5e:00:00:01""#, "guest_mac"),
            (r#""guest_mac":"02:00:00:00:00""#, "guest_mac"),
        ] {
            let e = settings(&format!(r#"{{"network_enabled":true,{json}}}"#)).unwrap_err();
            assert_eq!(e.key, key, "{json}: {e}");
        }
    }
}
