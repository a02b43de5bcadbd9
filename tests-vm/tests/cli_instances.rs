//! `host-sysmgr run --detach` and the commands on the instance, as a user
//! types them: ps, exec, cp both ways, stat, logs, stop, rm.

use anyhow::{ensure, Context, Result};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use tests_vm::initramfs::Variant;
use tests_vm::rootfs::Flavor;

struct Cli<'a> {
    bin: &'a Path,
    state: &'a Path,
}

impl Cli<'_> {
    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<Output> {
        let mut cmd = Command::new(self.bin);
        cmd.args(args)
            .env("HOST_SYSMGR_STATE_DIR", self.state)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("run host-sysmgr")?;
        if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
            std::io::Write::write_all(&mut w, data)?;
        }
        Ok(child.wait_with_output()?)
    }

    fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args, None)?;
        ensure!(
            out.status.success(),
            "{args:?}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Stops the instance if the test ends early, so no VM outlives it.
struct StopOnDrop<'a>(&'a Cli<'a>, &'static str);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["stop", "--timeout", "1", self.1], None);
    }
}

/// The instance's own records, for a failure message.
fn instance_files(dir: &Path) -> String {
    let mut out = String::new();
    for f in [
        "monitor.log",
        "exit.json",
        "run/vmm.stderr",
        "run/vhost.log",
    ] {
        let text = std::fs::read(dir.join(f)).unwrap_or_default();
        let tail = &text[text.len().saturating_sub(4096)..];
        out += &format!("--- {f}\n{}\n", String::from_utf8_lossy(tail));
    }
    let serial = std::fs::read(dir.join("serial.log")).unwrap_or_default();
    let tail = &serial[serial.len().saturating_sub(4096)..];
    out + &format!("--- serial.log (tail)\n{}", String::from_utf8_lossy(tail))
}

#[test]
fn detach_exec_cp_stat_logs_stop_from_the_cli() -> Result<()> {
    let bins = tests_vm::artifacts::release_binaries()?;
    let kernel = tests_vm::kernel::debian()?;
    let initrd = tests_vm::initramfs::image(&kernel, &Variant::default())?;
    let rootfs = tempfile::tempdir()?;
    tests_vm::rootfs::populate(rootfs.path(), Flavor::Busybox)?;
    let state = tempfile::tempdir()?;
    let host = tempfile::tempdir()?;
    let cli = Cli {
        bin: &bins.host_sysmgr,
        state: state.path(),
    };
    let _lock = tests_vm::guest::vm_lock()?;
    let (k, i, r) = (
        kernel.vmlinux.display().to_string(),
        initrd.display().to_string(),
        rootfs.path().display().to_string(),
    );
    let name = cli.ok(&[
        "run",
        "--detach",
        "--name",
        "box",
        "--kernel",
        &k,
        "--initrd",
        &i,
        "--rootfs",
        &r,
        "--",
        "/bin/sleep",
        "600",
    ])?;
    let _cleanup = StopOnDrop(&cli, "box");
    ensure!(name.trim() == "box", "{name}");
    let again = cli.run(
        &[
            "run", "-d", "--name", "box", "--kernel", &k, "--initrd", &i, "--rootfs", &r, "--",
            "true",
        ],
        None,
    )?;
    ensure!(
        again.status.code() == Some(125),
        "a second instance of the same name: {again:?}"
    );
    let ps = cli.ok(&["ps", "--json"])?;
    let rows: serde_json::Value = serde_json::from_str(&ps)?;
    ensure!(
        rows[0]["name"] == "box" && rows[0]["state"] == "running",
        "{ps}\n{}",
        instance_files(&state.path().join("box"))
    );

    // exec: output, exit status, stdin.
    let out = cli.run(
        &[
            "exec",
            "box",
            "--",
            "sh",
            "-c",
            "cat; echo to-err >&2; exit 7",
        ],
        Some(b"from-stdin\n"),
    )?;
    ensure!(out.status.code() == Some(7), "{out:?}");
    ensure!(
        out.stdout == b"from-stdin\n" && out.stderr == b"to-err\n",
        "{out:?}"
    );
    ensure!(cli.ok(&["exec", "box", "--", "uname", "-r"])?.trim() == kernel.release);

    // Ctrl-C during exec kills the remote command and exits 130.
    let mut waiting = Command::new(cli.bin)
        .args([
            "exec",
            "box",
            "--",
            "sh",
            "-c",
            "echo $$ > /tmp/remote.pid; exec sleep 300",
        ])
        .env("HOST_SYSMGR_STATE_DIR", cli.state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut pid = String::new();
    for _ in 0..200 {
        pid = cli.ok(&[
            "exec",
            "box",
            "--",
            "sh",
            "-c",
            "cat /tmp/remote.pid 2>/dev/null || true",
        ])?;
        if !pid.trim().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    ensure!(!pid.trim().is_empty(), "the remote command never started");
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(waiting.id() as i32, libc::SIGINT) };
    let status = waiting.wait()?;
    ensure!(status.code() == Some(130), "{status:?}");
    let probe = format!(
        "kill -0 {} 2>/dev/null && echo alive || echo gone",
        pid.trim()
    );
    let mut liveness = String::new();
    for _ in 0..50 {
        liveness = cli.ok(&["exec", "box", "--", "sh", "-c", &probe])?;
        if liveness.trim() == "gone" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    ensure!(
        liveness.trim() == "gone",
        "the remote command outlived Ctrl-C: {liveness}"
    );

    // cp both ways, into a folder as `docker cp` does; stat.
    std::fs::write(host.path().join("note.txt"), "hello guest\n")?;
    cli.ok(&[
        "cp",
        &host.path().join("note.txt").display().to_string(),
        "box:/tmp",
    ])?;
    ensure!(cli.ok(&["exec", "box", "--", "cat", "/tmp/note.txt"])? == "hello guest\n");
    cli.ok(&["cp", "box:/etc", &host.path().display().to_string()])?;
    ensure!(std::fs::read_to_string(host.path().join("etc/marker"))? == "from-image\n");
    let st = cli.ok(&["stat", "--json", "box:/tmp/note.txt"])?;
    ensure!(
        st.contains("\"type\":\"file\"") && st.contains("\"size\":12"),
        "{st}"
    );
    let missing = cli.run(&["stat", "box:/nope"], None)?;
    ensure!(missing.status.code() == Some(1), "{missing:?}");

    // logs, then the graceful stop: the app gets SIGTERM.
    ensure!(cli.ok(&["logs", "box"])?.contains("HYPEMAN-AGENT-READY"));
    let stop = cli.run(&["stop", "box"], None)?;
    let said = String::from_utf8_lossy(&stop.stderr);
    ensure!(
        stop.status.success() && said.contains("stopped by the agent's Shutdown"),
        "{said}"
    );
    let logs = cli.ok(&["logs", "box"])?;
    ensure!(
        logs.contains(r#"HYPEMAN-EXIT code=143 message="killed by signal 15 (terminated)""#),
        "{logs}"
    );
    let ps = cli.ok(&["ps"])?;
    ensure!(ps.contains("exited (143)"), "{ps}");
    for disk in ["root.img", "overlay.img", "config.img"] {
        ensure!(
            !state.path().join("box").join(disk).exists(),
            "{disk} outlived the stop"
        );
    }
    let gone = cli.run(&["exec", "box", "--", "true"], None)?;
    ensure!(gone.status.code() == Some(125), "{gone:?}");
    cli.ok(&["rm", "box"])?;
    ensure!(!state.path().join("box").exists());
    Ok(())
}
