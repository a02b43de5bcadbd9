//! The agent's RPC paths without a VM: `cargo bench -p guest-agent --bench unix_rpc`.
//!
//! The agent serves on a Unix socket in this process and host-sysmgr's
//! client talks to it (both on one tokio thread, so the figures hold the
//! whole client + server cost):
//! - an `Exec` of `/bin/true` round trip (start → exit code), median of 200
//!   after 20 warm-ups;
//! - a 100 MiB `CopyToGuest` and `CopyFromGuest` (file to file), median of
//!   5, in MiB/s, next to a plain `std::fs::copy` of the same file (the
//!   ratio is the figure a noisy machine keeps).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use guest_agent::AgentConfig;
use host_sysmgr::agent::exec::command;
use host_sysmgr::agent::{AgentClient, Dialer, Timeouts};
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let config = AgentConfig {
        resolv_conf: dir.path().join("resolv.conf"),
        ..AgentConfig::default()
    };
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tokio::spawn(guest_agent::serve(config, incoming));
    let client = AgentClient::connect(Dialer::Unix(sock), Timeouts::default())
        .await
        .unwrap();

    let mut times = Vec::new();
    for i in 0..220 {
        let t = Instant::now();
        let out = client.exec(command(&["/bin/true"]), b"").await.unwrap();
        assert_eq!(out.exit_code, 0);
        if i >= 20 {
            times.push(t.elapsed());
        }
    }
    let mut sorted = times.clone();
    sorted.sort();
    println!(
        "| Exec `/bin/true` round trip (Unix socket) | median {:.2} ms, p90 {:.2} ms (N=200) |",
        median(times).as_secs_f64() * 1e3,
        sorted[sorted.len() * 9 / 10].as_secs_f64() * 1e3
    );

    let src = dir.path().join("src.bin");
    let data: Vec<u8> = (0..100u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let mib = data.len() as f64 / f64::from(1 << 20);
    let (mut to, mut from, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..5 {
        let remote = dir.path().join(format!("in-guest-{i}"));
        let t = Instant::now();
        let n = client
            .copy_to_guest(&src, remote.to_str().unwrap())
            .await
            .unwrap();
        to.push(t.elapsed());
        assert_eq!(n, data.len() as u64);
        let back = dir.path().join(format!("back-{i}"));
        let t = Instant::now();
        let n = client
            .copy_from_guest(remote.to_str().unwrap(), &back, false)
            .await
            .unwrap();
        from.push(t.elapsed());
        assert_eq!(n, data.len() as u64);
        let copy = dir.path().join(format!("plain-{i}"));
        let t = Instant::now();
        std::fs::copy(&src, &copy).unwrap();
        plain.push(t.elapsed());
        for f in [remote, back, copy] {
            std::fs::remove_file(f).unwrap();
        }
    }
    let rate = |d: Duration| mib / d.as_secs_f64();
    let (to, from, plain) = (median(to), median(from), median(plain));
    println!(
        "| 100 MiB CopyToGuest / CopyFromGuest (Unix socket) | {:.0} / {:.0} MiB/s; a plain file copy {:.0} MiB/s (time ratios {:.2} / {:.2}) |",
        rate(to),
        rate(from),
        rate(plain),
        to.as_secs_f64() / plain.as_secs_f64(),
        from.as_secs_f64() / plain.as_secs_f64()
    );
}
