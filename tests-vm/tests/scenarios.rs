//! End-to-end scenarios: Debian's stock kernel + our initramfs in QEMU, with the
//! hypeman disk layout (vda root, vdb overlay, vdc config on q35,
//! console=ttyS0); init loads the virtio/ext4/overlay/vsock modules itself.

#![allow(clippy::unwrap_used)]

use anyhow::{ensure, Result};
use host_sysmgr::disks::RootFs;
use std::collections::BTreeMap;
use std::process::Command;
use tests_vm::guest::{ConfigDisk, Guest, Outcome, Root};
use tests_vm::initramfs::Variant;
use tests_vm::rootfs::Flavor;

fn no_panic(out: &Outcome) -> Result<()> {
    ensure!(
        !out.log.contains("Kernel panic"),
        "kernel panic:\n{}",
        out.log
    );
    Ok(())
}

fn expect_exit(out: &Outcome, line: &str) -> Result<()> {
    ensure!(out.exit_line()? == line, "want {line}, log:\n{}", out.log);
    ensure!(
        out.has_line(line),
        "the sentinel is not a line of its own:\n{}",
        out.log
    );
    no_panic(out)
}

#[test]
fn exit_zero_and_qemu_exits_by_itself() -> Result<()> {
    // Debian's stock kernel (init loads its 24 modules), then the default.
    for kernel in both_kernels()? {
        let mut g = Guest::new("exit-0", &["/bin/true"]);
        g.kernel = Some(kernel);
        let out = g.run()?;
        expect_exit(&out, r#"HYPEMAN-EXIT code=0 message="success""#)?;
        ensure!(
            out.to_program_start.is_some(),
            "no PROGRAM-START:\n{}",
            out.log
        );
    }
    Ok(())
}

#[test]
fn exit_codes_and_signals() -> Result<()> {
    let cases: [(&str, &[&str], &str); 4] = [
        (
            "exit-3",
            &["/bin/sh", "-c", "exit 3"],
            r#"code=3 message="exit code 3""#,
        ),
        (
            "exit-127",
            &["no-such-program"],
            r#"code=127 message="command not found""#,
        ),
        (
            "exit-126",
            &["/etc/not-executable"],
            r#"code=126 message="permission denied (command not executable)""#,
        ),
        (
            "sigsegv",
            &["/usr/bin/vm-helper", "segv"],
            r#"code=139 message="killed by signal 11 (segmentation fault)""#,
        ),
    ];
    for (name, cmd, want) in cases {
        let out = Guest::new(name, cmd).run()?;
        expect_exit(&out, &format!("HYPEMAN-EXIT {want}"))?;
        // PROGRAM-START before EXIT, also when the program could not start.
        let start = out.log.find("HYPEMAN-PROGRAM-START ");
        ensure!(
            start.is_some() && start < out.log.find("HYPEMAN-EXIT "),
            "{}",
            out.log
        );
    }
    Ok(())
}

#[test]
fn oom_in_a_small_vm() -> Result<()> {
    let mut g = Guest::new("oom", &["/usr/bin/vm-helper", "oom"]);
    g.memory_mib = 160;
    let out = g.run()?;
    expect_exit(
        &out,
        r#"HYPEMAN-EXIT code=137 message="killed by signal 9 (killed) - OOM""#,
    )
}

fn probe_lines<'a>(out: &'a Outcome, section: &str) -> Vec<&'a str> {
    let lines = out.lines();
    let Some(start) = lines.iter().position(|l| *l == section) else {
        return Vec::new();
    };
    // init's own lines may interleave: the app runs as soon as it is exec'd,
    // before init prints PROGRAM-START.
    lines[start + 1..]
        .iter()
        .copied()
        .filter(|l| !l.starts_with("HYPEMAN-") && !l.contains("[hypeman-init:"))
        .take_while(|l| !l.starts_with("---"))
        .collect()
}

#[test]
fn env_argv_workdir_exact_on_a_distroless_rootfs() -> Result<()> {
    let mut g = Guest::new("distroless-probe", &["probe", "a b", "", "$HOME"]).with_config(|c| {
        c.entrypoint = Some(vec!["/usr/bin/vm-helper".into()]);
        c.workdir = Some("/srv".into());
        c.env = Some(BTreeMap::from([
            ("GREETING".into(), "hello world".into()),
            ("HOME".into(), "/custom".into()),
        ]));
    });
    g.root = Root::Image(Flavor::Distroless, RootFs::Erofs);
    let out = g.run()?;
    ensure!(
        probe_lines(&out, "--- argv") == ["[a b]", "[]", "[$HOME]"],
        "{}",
        out.log
    );
    let env = probe_lines(&out, "--- env");
    let want = [
        "GREETING=hello world",
        "HOME=/custom",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ];
    ensure!(env == want, "env {env:?}\n{}", out.log);
    ensure!(probe_lines(&out, "--- cwd") == ["/srv"], "{}", out.log);
    expect_exit(&out, r#"HYPEMAN-EXIT code=0 message="success""#)
}

#[test]
fn kill_term_1_from_the_app_reaches_its_handler() -> Result<()> {
    let out = Guest::new("kill-term-1", &["/usr/bin/vm-helper", "term-self"]).run()?;
    ensure!(out.has_line("got-TERM"), "{}", out.log);
    expect_exit(&out, r#"HYPEMAN-EXIT code=0 message="success""#)
}

#[test]
fn overlay_writes_survive_a_second_boot_and_the_disk_is_clean() -> Result<()> {
    let first = Guest::new(
        "overlay-write",
        &["/bin/sh", "-c", "echo kept > /srv/state && sync"],
    )
    .run()?;
    expect_exit(&first, r#"HYPEMAN-EXIT code=0 message="success""#)?;
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&first.overlay_img)
        .output()?;
    ensure!(
        fsck.status.success(),
        "e2fsck -fn:\n{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let mut second = Guest::new("overlay-read", &["/bin/cat", "/srv/state"]);
    second.overlay = Some(first.overlay_img.clone());
    let out = second.run()?;
    ensure!(out.has_line("kept"), "{}", out.log);
    expect_exit(&out, r#"HYPEMAN-EXIT code=0 message="success""#)
}

fn expect_init_failure(out: &Outcome, phase: &str, detail: &str) -> Result<()> {
    let (code, message) = out
        .exit
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no exit:\n{}", out.log))?;
    ensure!(guest_contract::exit::is_init_failure(&message), "{message}");
    ensure!(
        message.starts_with(&format!("init: {phase}: ")),
        "{message}"
    );
    ensure!(message.contains(detail), "{message}");
    ensure!(
        guest_contract::exit::InitFailure::from_code(code).is_some(),
        "code {code}"
    );
    ensure!(out.log.contains("[ERROR] [hypeman-init:"), "{}", out.log);
    no_panic(out)
}

#[test]
fn missing_config_disk() -> Result<()> {
    let mut g = Guest::new("no-config-disk", &["/bin/true"]);
    g.config = ConfigDisk::Missing;
    g.cmdline = "hypeman.device_timeout_ms=2000".into();
    expect_init_failure(&g.run()?, "devices", "/dev/vdc did not appear")
}

#[test]
fn corrupt_config_json() -> Result<()> {
    let mut g = Guest::new("corrupt-config", &["/bin/true"]);
    g.config = ConfigDisk::Raw(b"{\"cmd\": [\"/bin/true\"".to_vec());
    expect_init_failure(&g.run()?, "config", "config.json")
}

#[test]
fn garbage_root_disk() -> Result<()> {
    let mut g = Guest::new("garbage-root", &["/bin/true"]);
    g.root = Root::Garbage;
    expect_init_failure(&g.run()?, "root-disk", "unknown filesystem")
}

#[test]
fn double_forking_app_leaves_no_zombie() -> Result<()> {
    let script = "i=0; while [ $i -lt 100 ]; do sh -c 'sleep 1 & exit 0'; i=$((i+1)); done; sleep 3; \
                  n=0; z=0; for f in /proc/[0-9]*/stat; do s=$(awk '{print $3}' $f 2>/dev/null); n=$((n+1)); [ \"$s\" = Z ] && z=$((z+1)); done; echo procs=$n; echo zombies=$z";
    let out = Guest::new("double-fork", &["/bin/sh", "-c", script]).run()?;
    ensure!(out.has_line("zombies=0"), "{}", out.log);
    // The scan saw processes (a missing /proc would also print zombies=0).
    let procs = out
        .lines()
        .into_iter()
        .find_map(|l| l.strip_prefix("procs=").map(str::to_string));
    ensure!(
        procs.and_then(|n| n.parse::<u32>().ok()).unwrap_or(0) >= 3,
        "{}",
        out.log
    );
    expect_exit(&out, r#"HYPEMAN-EXIT code=0 message="success""#)
}

fn mem_free_kb(out: &Outcome) -> Result<u64> {
    let line = out
        .lines()
        .into_iter()
        .find(|l| l.starts_with("MemFree:"))
        .map(str::to_string);
    let line = line.ok_or_else(|| anyhow::anyhow!("no MemFree:\n{}", out.log))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}

#[test]
fn initramfs_memory_is_freed() -> Result<()> {
    let filler = tempfile::NamedTempFile::new()?;
    std::fs::write(filler.path(), vec![0x42u8; 48 << 20])?;
    // The initramfs is freed by a child of PID 1 forked after the app
    // started: a second later it is gone.
    let app = ["/bin/sh", "-c", "sleep 1; exec /usr/bin/vm-helper meminfo"];
    let base = Guest::new("memfree-base", &app);
    let mut big = base.clone();
    big.name = "memfree-48MiB-filler".into();
    big.initrd = Variant {
        compression: "gzip".into(),
        extra: vec![(filler.path().to_path_buf(), "/filler.bin".into())],
    };
    let (a, b) = (mem_free_kb(&base.run()?)?, mem_free_kb(&big.run()?)?);
    // 48 MiB kept in the initramfs would show as ≥ 48 MiB less free memory.
    ensure!(
        a.abs_diff(b) < 24 * 1024,
        "MemFree {a} kB without filler vs {b} kB with it"
    );
    Ok(())
}

#[test]
fn erofs_root_with_the_stock_kernel() -> Result<()> {
    for kernel in both_kernels()? {
        let mut g = Guest::new("erofs-root", &["/bin/cat", "/etc/marker"]);
        g.root = Root::Image(Flavor::Busybox, RootFs::Erofs);
        g.kernel = Some(kernel);
        let out = g.run()?;
        ensure!(out.has_line("from-image"), "{}", out.log);
        expect_exit(&out, r#"HYPEMAN-EXIT code=0 message="success""#)?;
    }
    Ok(())
}

#[test]
fn project_kernel_when_present() -> Result<()> {
    let Some(kernel) = tests_vm::kernel::project_build() else {
        eprintln!(
            "skipped: no kernel built from kernel/ in .cache/kernel-build (bash kernel/build.sh)"
        );
        return Ok(());
    };
    let script = "trap 'echo got-TERM; exit 6' TERM; cat /etc/marker; i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done";
    let mut g = Guest::new("project-kernel", &["/bin/sh", "-c", script]);
    g.kernel = Some(kernel);
    let mut r = g.start()?;
    r.wait_line("from-image")?;
    // Built-in ACPI button + evdev: the power button stops the app.
    r.wait_line("power button /dev/input/")?;
    r.request_power_down()?;
    let out = r.finish()?;
    ensure!(out.has_line("got-TERM"), "{}", out.log);
    expect_exit(&out, r#"HYPEMAN-EXIT code=6 message="exit code 6""#)
}
#[test]
fn agent_ready_and_host_dials_vsock_2222() -> Result<()> {
    let mut g = Guest::new("vsock-agent", &["/bin/sleep", "30"]);
    g.vsock = true;
    let mut r = g.start()?;
    let line = r.wait_line("HYPEMAN-AGENT-READY ts=")?;
    ensure!(line.starts_with("HYPEMAN-AGENT-READY ts="), "{line}");
    let uds = r.vsock_uds.clone().unwrap();
    let stream = host_sysmgr::vsock::dial(&uds, 2222, std::time::Duration::from_secs(20))?;
    drop(stream);
    Ok(())
}

#[test]
fn qmp_quit_stops_a_running_vm() -> Result<()> {
    let mut r = Guest::new("qmp-quit", &["/bin/sleep", "60"]).start()?;
    r.wait_line("HYPEMAN-PROGRAM-START ")?;
    r.quit()?;
    Ok(())
}

#[test]
fn microvm_machine_boots_with_mmio_devices() -> Result<()> {
    // Debian's kernel finds the MMIO devices through ACPI and loads
    // virtio_mmio; the kernel/ build has it built in.
    for kernel in both_kernels()? {
        let mut g = Guest::new("microvm", &["/bin/cat", "/etc/marker"]);
        g.machine = host_sysmgr::vmm::Machine::Microvm;
        g.kernel = Some(kernel);
        let out = g.run()?;
        ensure!(out.has_line("from-image"), "{}", out.log);
        expect_exit(&out, r#"HYPEMAN-EXIT code=0 message="success""#)?;
    }
    Ok(())
}

/// Debian's stock kernel (init loads its modules), then the default one
/// (the kernel/ build when present).
fn both_kernels() -> Result<Vec<tests_vm::kernel::Kernel>> {
    let debian = tests_vm::kernel::debian()?;
    let default = tests_vm::kernel::default_kernel()?;
    Ok(if default.vmlinux == debian.vmlinux {
        vec![debian]
    } else {
        vec![debian, default]
    })
}

fn qemu_children(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn the_vm_dies_with_its_parent() -> Result<()> {
    let bins = tests_vm::artifacts::release_binaries()?;
    let kernel = tests_vm::kernel::debian()?;
    let initrd = tests_vm::initramfs::image(&kernel, &Variant::default())?;
    let rootfs = tempfile::tempdir()?;
    tests_vm::rootfs::populate(rootfs.path(), Flavor::Busybox)?;
    let _lock = tests_vm::guest::vm_lock()?;
    let mut parent = Command::new(&bins.host_sysmgr)
        .args(["run", "--timeout", "120", "--kernel"])
        .arg(&kernel.vmlinux)
        .arg("--initrd")
        .arg(&initrd)
        .arg("--rootfs")
        .arg(rootfs.path())
        .args(["--", "/bin/sleep", "100"])
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let qemu = loop {
        if let Some(q) = qemu_children(parent.id()).first() {
            break *q;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "host-sysmgr started no QEMU"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    parent.kill()?; // SIGKILL: no chance to clean up by itself
    parent.wait()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{qemu}")).exists() {
        let state = std::fs::read_to_string(format!("/proc/{qemu}/stat")).unwrap_or_default();
        if state.split_whitespace().nth(2) == Some("Z") {
            break; // dead, waiting for its (new) parent to reap it
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "QEMU {qemu} outlived its parent"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn ctrl_alt_del_becomes_sigint_for_the_app() -> Result<()> {
    let script = "trap 'echo got-INT; exit 5' INT; echo app-ready; i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done";
    let mut r = Guest::new("ctrl-alt-del", &["/bin/sh", "-c", script]).start()?;
    r.wait_line("app-ready")?;
    r.ctrl_alt_del()?;
    let out = r.finish()?;
    ensure!(out.has_line("got-INT"), "{}", out.log);
    expect_exit(&out, r#"HYPEMAN-EXIT code=5 message="exit code 5""#)
}

#[test]
fn hostname_and_sysctls_from_the_config() -> Result<()> {
    let g = Guest::new(
        "hostname-sysctls",
        &[
            "/bin/cat",
            "/proc/sys/kernel/hostname",
            "/proc/sys/vm/swappiness",
            "/etc/hosts",
        ],
    )
    .with_config(|c| {
        c.hostname = Some("guest-1".into());
        c.sysctls = Some(BTreeMap::from([("vm.swappiness".into(), "7".into())]));
    });
    let out = g.run()?;
    ensure!(out.has_line("guest-1") && out.has_line("7"), "{}", out.log);
    ensure!(out.has_line("127.0.1.1\tguest-1"), "{}", out.log);
    expect_exit(&out, r#"HYPEMAN-EXIT code=0 message="success""#)
}

#[test]
fn acpi_power_down_stops_the_app_gracefully() -> Result<()> {
    let script = "trap 'echo got-TERM; exit 6' TERM; echo app-ready; i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done";
    let mut r = Guest::new("acpi-power-down", &["/bin/sh", "-c", script]).start()?;
    r.wait_line("app-ready")?;
    r.request_power_down()?;
    let out = r.finish()?;
    ensure!(out.has_line("got-TERM"), "{}", out.log);
    expect_exit(&out, r#"HYPEMAN-EXIT code=6 message="exit code 6""#)
}
