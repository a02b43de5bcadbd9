//! `agent-bench`: figures of the guest agent for docs/benchmarks.md.
//!
//! In one run, with the release binaries:
//! - in-process over a Unix socket (no VM): `Exec ["/bin/true"]` round trip
//!   (median and p90 of N after 10 warm-ups) and a 100 MiB copy each way;
//! - in a VM (QEMU under TCG, vhost-device-vsock, the busybox rootfs): the
//!   agent's stripped size, start → ready (init's `agent=` phase), its RSS
//!   after the calls, the same Exec round trip over vsock, a copy each way,
//!   and the graceful stop (Shutdown RPC → VMM exit).
//!
//! Usage: `cargo run --release -p tests-vm --bin agent-bench -- [N [COPY_MIB]]`
//! (defaults: N = 100 round trips, 32 MiB copied over vsock).

use anyhow::{ensure, Context, Result};
use host_sysmgr::agent::exec::command;
use host_sysmgr::agent::{AgentClient, Dialer, Timeouts};
use host_sysmgr::stop::{StopOptions, StoppedBy};
use std::path::Path;
use std::time::{Duration, Instant};
use tests_vm::guest::Guest;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

/// (median, p90) in ms of `n` Exec round trips of /bin/true after 10 warm-ups.
async fn round_trips(client: &AgentClient, n: usize) -> Result<(f64, f64)> {
    for _ in 0..10 {
        client.exec(command(&["/bin/true"]), b"").await?;
    }
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let out = client.exec(command(&["/bin/true"]), b"").await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        ensure!(out.exit_code == 0, "{out:?}");
    }
    ms.sort_by(f64::total_cmp);
    Ok((percentile(&ms, 0.5), percentile(&ms, 0.9)))
}

fn write_payload(path: &Path, mib: usize) -> Result<()> {
    let block: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for _ in 0..mib {
        std::io::Write::write_all(&mut f, &block)?;
    }
    Ok(())
}

/// MiB/s of a copy in then out of `remote`.
async fn copies(
    client: &AgentClient,
    local: &Path,
    remote: &str,
    mib: usize,
) -> Result<(f64, f64)> {
    let t = Instant::now();
    client.copy_to_guest(local, remote).await?;
    let up = mib as f64 / t.elapsed().as_secs_f64();
    let back = local.with_extension("back");
    let t = Instant::now();
    client.copy_from_guest(remote, &back, false).await?;
    let down = mib as f64 / t.elapsed().as_secs_f64();
    ensure!(std::fs::metadata(&back)?.len() == (mib as u64) << 20);
    Ok((up, down))
}

async fn in_process(n: usize, work: &Path) -> Result<()> {
    let sock = work.join("agent.sock");
    let listener = tokio::net::UnixListener::bind(&sock)?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tokio::spawn(guest_agent::serve(
        guest_agent::AgentConfig::default(),
        incoming,
    ));
    let client = AgentClient::connect(Dialer::Unix(sock), Timeouts::default()).await?;
    let (med, p90) = round_trips(&client, n).await?;
    println!("| Unix socket (in-process) | Exec /bin/true round trip | median {med:.2} ms, p90 {p90:.2} ms (N={n}) |");
    let payload = work.join("payload");
    write_payload(&payload, 100)?;
    let (up, down) = copies(
        &client,
        &payload,
        work.join("copied").to_str().context("path")?,
        100,
    )
    .await?;
    println!("| Unix socket (in-process) | 100 MiB copy | to guest {up:.0} MiB/s, from guest {down:.0} MiB/s |");
    Ok(())
}

/// VmRSS of the agent in the guest, found by its /proc/*/comm.
async fn agent_rss(client: &AgentClient) -> Result<String> {
    let script = "for d in /proc/[0-9]*; do if [ \"$(cat $d/comm 2>/dev/null)\" = guest-agent ]; then grep VmRSS $d/status; fi; done";
    let out = client
        .exec(command(&["/bin/sh", "-c", script]), b"")
        .await?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip(1)
        .collect::<Vec<_>>()
        .join(" "))
}

fn agent_phase(log: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains("[hypeman-init:timing]"))?;
    let rest = line.split(" agent=").nth(1)?;
    Some(
        rest.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn in_vm(n: usize, copy_mib: usize, work: &Path) -> Result<()> {
    let bins = tests_vm::artifacts::release_binaries()?;
    println!(
        "| VM | guest-agent stripped size | {} bytes |",
        std::fs::metadata(&bins.agent)?.len()
    );
    let mut g = Guest::new("agent-bench", &["/bin/sleep", "600"]);
    g.vsock = true;
    let mut r = g.start()?;
    r.wait_line("HYPEMAN-PROGRAM-START")?;
    let log = std::fs::read_to_string(&r.serial).unwrap_or_default();
    println!(
        "| VM | agent start → ready (init's agent phase) | {} |",
        agent_phase(&log).unwrap_or_else(|| "-".into())
    );
    let dialer = r.agent_dialer().context("no vsock")?;
    let payload = work.join("vm-payload");
    write_payload(&payload, copy_mib)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let timeouts = Timeouts { connect: Duration::from_secs(30), call: Duration::from_secs(120) };
        let client = AgentClient::connect(dialer, timeouts).await?;
        let (med, p90) = round_trips(&client, n).await?;
        println!("| VM (vsock, TCG) | Exec /bin/true round trip | median {med:.1} ms, p90 {p90:.1} ms (N={n}) |");
        let (up, down) = copies(&client, &payload, "/tmp/payload", copy_mib).await?;
        println!("| VM (vsock, TCG) | {copy_mib} MiB copy | to guest {up:.1} MiB/s, from guest {down:.1} MiB/s |");
        println!("| VM | agent RSS after the calls | {} |", agent_rss(&client).await?);
        anyhow::Ok(())
    })?;
    let (report, _) = r.stop(StopOptions::default());
    ensure!(report.by == StoppedBy::Agent, "{report:?}");
    println!(
        "| VM | graceful stop: Shutdown RPC → VMM exit | {:.0} ms |",
        report.elapsed.as_secs_f64() * 1000.0
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = args.first().map_or(Ok(100), |s| s.parse()).context("N")?;
    let copy_mib = args
        .get(1)
        .map_or(Ok(32), |s| s.parse())
        .context("COPY_MIB")?;
    let work = tempfile::tempdir()?;
    println!("| where | what | figure |\n|---|---|---|");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(in_process(n, work.path()))?;
    in_vm(n, copy_mib, work.path())
}
