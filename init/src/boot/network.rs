//! Network (`network_enabled`): lo and eth0 up, eth0's IPv4 address, the
//! default route and its MTU over netlink from PID 1 (no `ip`, no shell),
//! then `/etc/resolv.conf` in the new root. Runs after the switch, before
//! the agent and the app. A key init cannot use is a config failure (65);
//! an interface that never appears or a request the kernel refuses ends the
//! boot with the network failure (77): an app that asked for a network
//! never runs without one.

use super::{report, BootError, Failed};
use crate::sys::Sys;
use guest_contract::network::NetSettings;
use std::net::IpAddr;
use std::time::Duration;

/// How long eth0 may take to appear (its driver probes asynchronously).
pub const LINK_TIMEOUT: Duration = Duration::from_secs(5);
/// The resolver configuration in the new root.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Applies checked network `settings` (planned from the config by
/// [`super::steps::after_config`]).
pub fn apply<S: Sys>(sys: &mut S, settings: &NetSettings) -> Result<(), BootError> {
    let lo = sys.net_wait_link("lo", Duration::ZERO);
    lo.and_then(|i| sys.net_link_up(i, None))
        .map_err(|e| failed("lo up".into(), e))?;
    let (index, name) = find_interface(sys, settings)?;
    let name = &name;
    if let Some((ip, prefix)) = settings.address {
        sys.net_add_address(index, IpAddr::V4(ip), prefix)
            .map_err(|e| failed(format!("{name} address {ip}/{prefix}"), e))?;
    }
    if let Some((ip, prefix)) = settings.address6 {
        sys.net_add_address(index, IpAddr::V6(ip), prefix)
            .map_err(|e| failed(format!("{name} address {ip}/{prefix}"), e))?;
    }
    sys.net_link_up(index, settings.mtu)
        .map_err(|e| failed(format!("{name} up"), e))?;
    let gateways = [
        settings.gateway.map(IpAddr::V4),
        settings.gateway6.map(IpAddr::V6),
    ];
    for gw in gateways.into_iter().flatten() {
        sys.net_default_route(index, gw)
            .map_err(|e| failed(format!("default route via {gw}"), e))?;
    }
    if let Some(text) = settings.resolv_conf() {
        let _ = sys.mkdir_all("/etc");
        sys.write_file(RESOLV_CONF, text.as_bytes(), 0o644)
            .map_err(|e| failed(format!("write {RESOLV_CONF}"), e))?;
    }
    report::info(sys, "network", &summary(settings, name));
    Ok(())
}

/// eth0, or the interface `guest_mac` names: its index and name.
fn find_interface<S: Sys>(sys: &mut S, s: &NetSettings) -> Result<(u32, String), BootError> {
    match s.mac {
        Some(mac) => {
            let text = guest_contract::network::format_mac(mac);
            sys.net_wait_mac(mac, LINK_TIMEOUT)
                .map_err(|e| failed(format!("wait for the interface with MAC {text}"), e))
        }
        None => {
            let name = &s.interface;
            let index = sys
                .net_wait_link(name, LINK_TIMEOUT)
                .map_err(|e| failed(format!("wait for {name}"), e))?;
            Ok((index, name.clone()))
        }
    }
}

fn failed(what: String, e: std::io::Error) -> BootError {
    BootError::Network(Failed::new(what, e))
}

/// One line: what the interface now has.
fn summary(s: &NetSettings, name: &str) -> String {
    let mut words = vec![name.to_string()];
    if let Some((ip, prefix)) = s.address {
        words.push(format!("{ip}/{prefix}"));
    }
    if let Some(gw) = s.gateway {
        words.push(format!("via {gw}"));
    }
    if let Some((ip, prefix)) = s.address6 {
        words.push(format!("{ip}/{prefix}"));
    }
    if let Some(gw) = s.gateway6 {
        words.push(format!("via {gw}"));
    }
    if let Some(mtu) = s.mtu {
        words.push(format!("mtu {mtu}"));
    }
    if !s.dns.is_empty() {
        let dns: Vec<String> = s.dns.iter().map(ToString::to_string).collect();
        words.push(format!("dns {}", dns.join(",")));
    }
    words.join(" ")
}
