//! systemd mode with real systemd: a Debian 12 root filesystem
//! (scripts/debian-rootfs.sh, debootstrap, cached) booted with
//! `init_mode: systemd`. PID 1 is systemd, hypeman-agent.service is active
//! and answers Exec, no job is left waiting (on udev or anything else), and
//! the host's graceful stop (SIGRTMIN+4 through the agent's Shutdown) powers
//! the VM off within the stop timeout.

use anyhow::{ensure, Context, Result};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Cli<'a> {
    data: &'a Path,
    state: &'a Path,
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> Result<Output> {
        let bins = tests_vm::artifacts::release_binaries()?;
        Ok(Command::new(&bins.host_sysmgr)
            .args(args)
            .env("GUESTINIT_DATA_DIR", self.data)
            .env("HOST_SYSMGR_STATE_DIR", self.state)
            .env("GUESTINIT_INIT", &bins.init)
            .env("GUESTINIT_AGENT", &bins.agent)
            .stdin(Stdio::null())
            .output()?)
    }

    /// The last 4 KiB of an instance's serial console (for a failure message).
    fn serial_tail(&self, name: &str) -> String {
        let log = std::fs::read(self.state.join(name).join("serial.log")).unwrap_or_default();
        String::from_utf8_lossy(&log[log.len().saturating_sub(4096)..]).into_owned()
    }

    /// `exec NAME -- CMD`, retried until the agent answers (systemd starts
    /// it late under TCG) or `within` passes; its stdout.
    fn exec_until(&self, name: &str, cmd: &[&str], within: Duration) -> Result<String> {
        let deadline = Instant::now() + within;
        let mut args = vec!["exec", name, "--"];
        args.extend_from_slice(cmd);
        loop {
            let out = self.run(&args)?;
            if out.status.success() {
                return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
            }
            ensure!(
                Instant::now() < deadline,
                "{cmd:?}: {:?}\n{}\n--- serial log (tail)\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.serial_tail(name)
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

#[test]
fn a_debian_rootfs_boots_systemd_as_pid_1_with_the_agent_and_stops_gracefully() -> Result<()> {
    let root = Command::new("bash")
        .arg(tests_vm::artifacts::workspace_root().join("scripts/debian-rootfs.sh"))
        .output()
        .context("scripts/debian-rootfs.sh")?;
    ensure!(
        root.status.success(),
        "{}",
        String::from_utf8_lossy(&root.stderr)
    );
    let rootfs = String::from_utf8_lossy(&root.stdout).trim().to_string();
    let kdir = tests_vm::artifacts::workspace_root().join(".cache/kernel-build");
    ensure!(
        kdir.join("manifest.json").is_file(),
        "no kernel/ build (scripts/setup.sh)"
    );
    let work = tempfile::tempdir()?;
    let (data, state) = (work.path().join("data"), work.path().join("state"));
    let cli = Cli {
        data: &data,
        state: &state,
    };
    let out = cli.run(&["kernel", "import", &kdir.display().to_string()])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let args = [
        "run",
        "-d",
        "--name",
        "deb",
        "--memory",
        "1024",
        "--init-mode",
        "systemd",
        "--rootfs",
        &rootfs,
        "--",
        "/lib/systemd/systemd",
    ];
    let out = cli.run(&args)?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stop_on_failure = StopOnDrop(&cli);
    let pid1 = cli.exec_until(
        "deb",
        &["readlink", "/proc/1/exe"],
        Duration::from_secs(240),
    )?;
    ensure!(pid1.trim().ends_with("/systemd"), "PID 1 is {pid1}");
    let active = cli.exec_until(
        "deb",
        &["systemctl", "is-active", "hypeman-agent.service"],
        Duration::from_secs(30),
    )?;
    ensure!(active.trim() == "active", "{active}");
    // Boot finished: no job left (none waits on a device udev never announces).
    let jobs = cli.exec_until(
        "deb",
        &["sh", "-c", "systemctl is-system-running --wait >/dev/null; systemctl list-jobs --no-legend | wc -l"],
        Duration::from_secs(180),
    )?;
    ensure!(jobs.trim() == "0", "jobs left: {jobs}");
    // hypeman-kernel-headers.service ran init's worker on the staged tarball
    // (a oneshot unit of multi-user.target: done once the boot is).
    let headers = cli.exec_until(
        "deb",
        &["sh", "-c", "cat /run/hypeman/kernel-headers.status; systemctl show -p Result --value hypeman-kernel-headers.service; test -f /lib/modules/$(uname -r)/build/Makefile && echo makefile-ok"],
        Duration::from_secs(30),
    )?;
    ensure!(
        headers.split_whitespace().collect::<Vec<_>>() == ["ready", "success", "makefile-ok"],
        "{headers}"
    );
    let stop = cli.run(&["stop", "deb", "--timeout", "60"])?;
    let said = String::from_utf8_lossy(&stop.stderr);
    ensure!(said.contains("stopped by the agent's Shutdown"), "{said}");
    std::mem::forget(stop_on_failure);
    Ok(())
}

struct StopOnDrop<'a>(&'a Cli<'a>);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["stop", "deb", "--timeout", "1"]);
    }
}
