//! guest-agent's checks of what a host sends it.

use guest_agent::network::{resolv_conf, NetPlan};
use prost::Message;

/// A `ReconfigureNetworkRequest` (its protobuf encoding): a request the
/// agent accepts names a real interface name, a unicast MAC, an address
/// with a prefix of 1-32, and DNS servers that each make exactly one
/// `nameserver` line; checking is deterministic.
pub fn check_network_request(data: &[u8]) {
    let Ok(req) = guest_proto::ReconfigureNetworkRequest::decode(data) else {
        return;
    };
    let Ok(plan) = NetPlan::from_request(&req) else {
        return;
    };
    let name = &plan.interface;
    assert!(!name.is_empty() && name.len() <= 15, "{name:?}");
    assert!(!name.contains(['/', ':', '\n', '\0', ' ']), "{name:?}");
    if let Some(mac) = plan.mac {
        assert_eq!(mac[0] & 1, 0, "{mac:?}");
        assert_ne!(mac, [0; 6]);
    }
    if let Some((ip, prefix)) = plan.ipv4 {
        assert!(
            (1..=32).contains(&prefix) && !ip.is_unspecified(),
            "{ip}/{prefix}"
        );
    }
    let text = resolv_conf(&plan.dns);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), plan.dns.len(), "{text:?}");
    for (line, server) in lines.iter().zip(&plan.dns) {
        assert_eq!(*line, format!("nameserver {server}"));
    }
    assert_eq!(NetPlan::from_request(&req).ok(), Some(plan));
}
