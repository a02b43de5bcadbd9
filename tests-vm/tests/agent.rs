//! The guest agent in a real VM, reached from the host over vhost-device-vsock
//! (the hybrid-vsock handshake of Cloud Hypervisor and Firecracker): Exec,
//! copies, stat, ReconfigureNetwork on a virtio NIC, and the graceful stop a
//! hypeman host performs.

use anyhow::{ensure, Context, Result};
use host_sysmgr::agent::exec::command;
use host_sysmgr::agent::{AgentClient, Timeouts};
use host_sysmgr::stop::{StopOptions, StoppedBy};
use std::time::Duration;
use tests_vm::guest::{Guest, Running};

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Boots `cmd` with vsock and waits for the agent.
fn boot(name: &str, cmd: &[&str]) -> Result<Running> {
    let mut g = Guest::new(name, cmd);
    g.vsock = true;
    let mut r = g.start()?;
    r.wait_line("HYPEMAN-AGENT-READY ts=")?;
    Ok(r)
}

async fn connect(r: &Running) -> Result<AgentClient> {
    let dialer = r.agent_dialer().context("no vsock")?;
    let timeouts = Timeouts {
        connect: Duration::from_secs(30),
        call: Duration::from_secs(60),
    };
    Ok(AgentClient::connect(dialer, timeouts).await?)
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(data))
}

/// `sh -c script` in the guest; its stdout.
async fn guest_sh(client: &AgentClient, script: &str) -> Result<String> {
    let out = client.exec(command(&["sh", "-c", script]), b"").await?;
    ensure!(out.exit_code == 0, "{script}: {out:?}");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// ReconfigureNetwork on the VM's virtio NIC, read back with busybox `ip`.
async fn reconfigure_network(client: &AgentClient) -> Result<()> {
    let req = guest_proto::ReconfigureNetworkRequest {
        interface_name: "eth0".into(),
        mac: "02:00:00:00:be:ef".into(),
        ipv4: "10.0.2.15".into(),
        prefix: 24,
        gateway: "10.0.2.2".into(),
        dns_servers: vec!["10.0.2.3".into()],
    };
    client.reconfigure_network(req).await?;
    let link = guest_sh(client, "busybox ip -o link show eth0").await?;
    ensure!(
        link.contains("02:00:00:00:be:ef") && link.contains(",UP"),
        "{link}"
    );
    let addr = guest_sh(client, "busybox ip -o -4 addr show dev eth0").await?;
    ensure!(addr.contains("inet 10.0.2.15/24"), "{addr}");
    let route = guest_sh(client, "busybox ip route").await?;
    ensure!(
        route
            .lines()
            .any(|l| l.starts_with("default via 10.0.2.2 dev eth0")),
        "{route}"
    );
    let resolv = guest_sh(client, "cat /etc/resolv.conf").await?;
    ensure!(resolv == "nameserver 10.0.2.3\n", "{resolv:?}");
    Ok(())
}

#[test]
fn exec_copy_and_stat_over_vsock_then_shutdown_stops_the_app() -> Result<()> {
    let mut g = Guest::new("agent-rpcs", &["/bin/sleep", "600"]);
    g.vsock = true;
    g.nic = Some(host_sysmgr::vmm::Nic {
        mac: Some("02:00:00:00:00:01".into()),
        ..Default::default()
    });
    let mut r = g.start()?;
    r.wait_line("HYPEMAN-AGENT-READY ts=")?;
    let release = tests_vm::kernel::default_kernel()?.release;
    let host = tempfile::tempdir()?;
    let payload: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(host.path().join("in.bin"), &payload)?;
    runtime()?.block_on(async {
        let client = connect(&r).await?;
        let out = client.exec(command(&["uname", "-r"]), b"").await?;
        ensure!(out.exit_code == 0, "{out:?}");
        ensure!(
            String::from_utf8_lossy(&out.stdout).trim() == release,
            "{out:?}"
        );
        // The readiness probe of a hypeman host.
        ensure!(client.exec(command(&["/bin/true"]), b"").await?.exit_code == 0);
        client
            .copy_to_guest(&host.path().join("in.bin"), "/tmp/in.bin")
            .await?;
        let sum = client
            .exec(command(&["sha256sum", "/tmp/in.bin"]), b"")
            .await?;
        let text = String::from_utf8_lossy(&sum.stdout).into_owned();
        ensure!(text.starts_with(&sha256_hex(&payload)), "{text}");
        let back = host.path().join("marker");
        client.copy_from_guest("/etc/marker", &back, false).await?;
        ensure!(std::fs::read(&back)? == b"from-image\n");
        let st = client.stat("/etc/marker", false).await?;
        ensure!(st.exists && st.is_file && st.size == 11, "{st:?}");
        ensure!(!client.stat("/no/such/file", false).await?.exists);
        reconfigure_network(&client).await
    })?;
    let (report, out) = r.stop(StopOptions::default());
    ensure!(report.by == StoppedBy::Agent, "{report:?}\n{}", out.log);
    ensure!(report.elapsed < Duration::from_secs(5), "{report:?}");
    let exit = out.exit_line()?;
    ensure!(
        exit == r#"HYPEMAN-EXIT code=143 message="killed by signal 15 (terminated)""#,
        "{exit}"
    );
    Ok(())
}

#[test]
fn an_app_that_ignores_sigterm_is_still_stopped() -> Result<()> {
    let mut r = boot(
        "agent-stubborn",
        &[
            "/bin/sh",
            "-c",
            "trap '' TERM INT; echo trapped; while :; do sleep 1; done",
        ],
    )?;
    r.wait_line("trapped")?;
    let pid = r.qemu_pid().context("no QEMU pid")?;
    let opts = StopOptions {
        timeout: Duration::from_secs(2),
        power_down_grace: Duration::from_secs(2),
        ..StopOptions::default()
    };
    let (report, out) = r.stop(opts);
    ensure!(report.by == StoppedBy::Killed, "{report:?}\n{}", out.log);
    ensure!(report.agent_error.is_none(), "{report:?}");
    ensure!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "QEMU {pid} still exists"
    );
    Ok(())
}

/// The pid of the one process named `name` in the guest (busybox `pidof`).
async fn pid_of(client: &AgentClient, name: &str) -> Result<u32> {
    let out = client.exec(command(&["pidof", name]), b"").await?;
    ensure!(out.exit_code == 0, "no {name}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    text.parse()
        .with_context(|| format!("pidof {name} printed {text:?}"))
}

/// init's phase `name` as the agent's `Info` reports it.
async fn boot_phase(client: &AgentClient, name: &str) -> Result<u64> {
    let info = client.info().await?;
    let phase = info.boot_phases.iter().find(|p| p.name == name);
    phase
        .map(|p| p.micros)
        .with_context(|| format!("no phase {name} in {info:?}"))
}

/// SIGKILL the agent through its own Exec; the call dies with the agent, so
/// its result is not the point (bounded, so a hung stream cannot hang us).
async fn kill_agent(client: &AgentClient, pid: u32) {
    let kill = client.exec(command(&["kill", "-9", &pid.to_string()]), b"");
    let _ = tokio::time::timeout(Duration::from_secs(20), kill).await;
}

#[test]
fn a_killed_agent_is_restarted_and_serves_again_while_the_app_runs() -> Result<()> {
    let mut r = boot("agent-restart", &["/bin/sleep", "600"])?;
    let rt = runtime()?;
    let (agent, app) = rt.block_on(async {
        let client = connect(&r).await?;
        let switch = boot_phase(&client, "switch").await?;
        ensure!(switch > 0, "switch={switch}");
        let agent = pid_of(&client, "guest-agent").await?;
        let app = pid_of(&client, "sleep").await?;
        kill_agent(&client, agent).await;
        Ok((agent, app))
    })?;
    r.wait_line(
        "[hypeman-init:agent] guest agent exited: killed by signal 9 (killed); restarting in 1 s",
    )?;
    rt.block_on(async {
        // connect retries until the restarted agent listens.
        let client = connect(&r).await?;
        let out = client.exec(command(&["echo", "served"]), b"").await?;
        ensure!(out.exit_code == 0 && out.stdout == b"served\n", "{out:?}");
        let again = pid_of(&client, "guest-agent").await?;
        ensure!(again != agent, "agent pid {again} did not change");
        ensure!(pid_of(&client, "sleep").await? == app, "the app changed");
        ensure!(boot_phase(&client, "switch").await? > 0);
        Ok(())
    })?;
    // The restarted agent also serves the host's graceful stop.
    let (report, out) = r.stop(StopOptions::default());
    ensure!(report.by == StoppedBy::Agent, "{report:?}\n{}", out.log);
    let restarts = out
        .lines()
        .iter()
        .filter(|l| l.contains("[hypeman-init:agent] guest agent exited"))
        .count();
    ensure!(restarts == 1, "{restarts} restart lines:\n{}", out.log);
    let ready = out
        .lines()
        .iter()
        .filter(|l| l.contains("HYPEMAN-AGENT-READY ts="))
        .count();
    ensure!(ready == 2, "{ready} AGENT-READY lines:\n{}", out.log);
    let exit = out.exit_line()?;
    ensure!(
        exit == r#"HYPEMAN-EXIT code=143 message="killed by signal 15 (terminated)""#,
        "{exit}"
    );
    Ok(())
}
