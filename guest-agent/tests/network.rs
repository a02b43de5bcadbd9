//! `ReconfigureNetwork` against a real kernel: the agent runs in a network
//! namespace of its own (one thread unshares it) holding an `eth0` (a
//! bridge: the hosts here have no dummy or veth driver), is
//! called through the host client, and `ip` (iproute2) reads back what the
//! kernel now has. Needs root; skipped with a message otherwise.

#![allow(clippy::unwrap_used)]

use guest_agent::AgentConfig;
use guest_proto::ReconfigureNetworkRequest;
use host_sysmgr::agent::{AgentClient, AgentError, Dialer, Timeouts};
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

/// `ip ARGS` in the calling thread's network namespace.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn status_of(e: AgentError) -> tonic::Status {
    match e {
        AgentError::Call { source, .. } => source,
        other => panic!("not an RPC error: {other}"),
    }
}

fn request(ipv4: &str, prefix: u32, gateway: &str) -> ReconfigureNetworkRequest {
    ReconfigureNetworkRequest {
        interface_name: String::new(),
        mac: String::new(),
        ipv4: ipv4.into(),
        prefix,
        gateway: gateway.into(),
        dns_servers: vec![],
    }
}

async fn eth0_with_an_old_address() {
    let (conn, handle, _) = rtnetlink::new_connection().unwrap();
    tokio::spawn(conn);
    handle
        .link()
        .add(rtnetlink::LinkBridge::new("eth0").build())
        .execute()
        .await
        .unwrap();
    let index = ip(&["-o", "link", "show", "eth0"])
        .split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let old = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
    handle
        .address()
        .add(index, old, 24)
        .execute()
        .await
        .unwrap();
}

async fn agent(dir: &std::path::Path) -> AgentClient {
    let sock = dir.join("agent.sock");
    let config = AgentConfig {
        resolv_conf: dir.join("resolv.conf"),
        ..AgentConfig::default()
    };
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tokio::spawn(guest_agent::serve(config, incoming));
    AgentClient::connect(Dialer::Unix(sock), Timeouts::default())
        .await
        .unwrap()
}

async fn scenario() {
    // Host safety: touch nothing unless this is a fresh namespace (only lo).
    let links = ip(&["-o", "link", "show"]);
    assert_eq!(links.lines().count(), 1, "not a fresh namespace: {links}");
    eth0_with_an_old_address().await;
    let dir = tempfile::tempdir().unwrap();
    let client = agent(dir.path()).await;
    let resolv = dir.path().join("resolv.conf");

    let mut full = request("10.0.2.20", 24, "10.0.2.2");
    full.mac = "02:00:00:aa:bb:01".into();
    full.dns_servers = vec!["10.0.2.3".into(), "10.0.2.4".into()];
    client.reconfigure_network(full).await.unwrap();
    let link = ip(&["-o", "link", "show", "eth0"]);
    assert!(link.contains("link/ether 02:00:00:aa:bb:01"), "{link}");
    assert!(link.contains(",UP") || link.contains("<UP"), "{link}");
    let addrs = ip(&["-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("inet 10.0.2.20/24"), "{addrs}");
    assert!(
        !addrs.contains("192.0.2.9"),
        "the old address stayed: {addrs}"
    );
    let routes = ip(&["-4", "route", "show", "default"]);
    // (`linkdown` may follow: a bridge without ports has no carrier.)
    assert!(
        routes.starts_with("default via 10.0.2.2 dev eth0"),
        "{routes}"
    );
    assert_eq!(
        std::fs::read_to_string(&resolv).unwrap(),
        "nameserver 10.0.2.3\nnameserver 10.0.2.4\n"
    );

    // Again, as after a second restore: one address, one default route.
    client
        .reconfigure_network(request("10.0.3.5", 16, "10.0.0.1"))
        .await
        .unwrap();
    let addrs = ip(&["-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("inet 10.0.3.5/16"), "{addrs}");
    assert_eq!(addrs.lines().count(), 1, "{addrs}");
    let routes = ip(&["-4", "route", "show", "default"]);
    assert!(
        routes.starts_with("default via 10.0.0.1 dev eth0"),
        "{routes}"
    );
    assert_eq!(routes.lines().count(), 1, "{routes}");
    let link = ip(&["-o", "link", "show", "eth0"]);
    assert!(
        link.contains("02:00:00:aa:bb:01"),
        "an empty mac keeps it: {link}"
    );
    assert!(std::fs::read_to_string(&resolv)
        .unwrap()
        .contains("10.0.2.3"));

    // A MAC alone keeps the address and the default route (set live).
    let mut mac_only = request("", 0, "");
    mac_only.mac = "02:00:00:aa:bb:02".into();
    client.reconfigure_network(mac_only).await.unwrap();
    let link = ip(&["-o", "link", "show", "eth0"]);
    assert!(link.contains("02:00:00:aa:bb:02"), "{link}");
    let routes = ip(&["-4", "route", "show", "default"]);
    assert!(
        routes.starts_with("default via 10.0.0.1 dev eth0"),
        "{routes}"
    );
    assert!(ip(&["-o", "-4", "addr", "show", "dev", "eth0"]).contains("inet 10.0.3.5/16"));

    // Refusals change nothing.
    let mut missing = request("10.0.9.9", 24, "");
    missing.interface_name = "nope0".into();
    let e = status_of(client.reconfigure_network(missing).await.unwrap_err());
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("nope0"), "{e:?}");
    let mut bad = request("10.0.9.9", 24, "");
    bad.mac = "ff:ff:ff:ff:ff:ff".into();
    bad.dns_servers = vec!["192.0.2.53".into()];
    let e = status_of(client.reconfigure_network(bad).await.unwrap_err());
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("mac: "), "{e:?}");
    let addrs = ip(&["-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("inet 10.0.3.5/16"), "{addrs}");
    assert!(!std::fs::read_to_string(&resolv)
        .unwrap()
        .contains("192.0.2.53"));
}

#[test]
fn reconfigure_network_sets_mac_address_route_and_dns_over_netlink() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: a network namespace needs root");
        return;
    }
    std::thread::spawn(|| {
        // Only this thread (and the threads it starts) enter the namespace.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(scenario());
    })
    .join()
    .unwrap();
}
