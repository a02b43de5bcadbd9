//! `run --detach`: the VM runs under a monitor process of its own (a fork of
//! host-sysmgr, in a new session) that owns the VMM and its vsock backend —
//! they die with it — and records how the VM ended. The command returns
//! once the monitor reports the VM started.

use super::run::{attach_vsock, boot_files, serve_config, vm_config, ConfigVia, RunArgs};
use anyhow::{bail, Context, Result};
use host_sysmgr::instance::{self, InstanceInfo, Store};
use host_sysmgr::vmm::qemu::Qemu;
use host_sysmgr::vmm::Vm;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

/// Starts the instance and prints its name.
pub fn detach(args: &RunArgs) -> Result<u8> {
    let store = Store::new(instance::default_root());
    let name = match &args.name {
        Some(n) => n.clone(),
        None => random_name(),
    };
    let dir = store.create(&name)?;
    match start_monitor(args, &store, &name, &dir) {
        Ok(()) => {
            println!("{name}");
            Ok(0)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

fn random_name() -> String {
    let mut bytes = [0u8; 3];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    format!("vm-{:02x}{:02x}{:02x}", bytes[0], bytes[1], bytes[2])
}

/// Builds the disks, forks the monitor and waits for its word.
fn start_monitor(args: &RunArgs, store: &Store, name: &str, dir: &Path) -> Result<()> {
    let files = boot_files(args)?;
    let (mut cfg, systemd) = vm_config(args, &files, dir)?;
    // Close-on-exec: the VMM must not inherit the write end (the parent reads
    // until every copy of it is closed).
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("create a pipe")?;
    // SAFETY: host-sysmgr is single-threaded here (no runtime, no helper
    // thread has been started), so the child may run Rust code after fork.
    match unsafe { nix::unistd::fork() }.context("fork the monitor")? {
        nix::unistd::ForkResult::Child => {
            drop(read_end);
            let mode = if systemd { "systemd" } else { "exec" };
            let code = monitor(&mut cfg, args, (store, name, mode), write_end);
            std::process::exit(code)
        }
        nix::unistd::ForkResult::Parent { .. } => {
            drop(write_end);
            let mut word = String::new();
            std::fs::File::from(read_end)
                .read_to_string(&mut word)
                .context("read the monitor's report")?;
            match word.strip_prefix("ok") {
                Some(_) => pin(&files, name, dir),
                None if word.is_empty() => bail!("the monitor died before the VM started"),
                None => bail!("{}", word.trim_end()),
            }
        }
    }
}

/// The monitor: start the VM, report, wait, record the end.
fn monitor(
    cfg: &mut host_sysmgr::vmm::VmConfig,
    args: &RunArgs,
    (store, name, mode): (&Store, &str, &str),
    report: OwnedFd,
) -> i32 {
    let mut report = std::fs::File::from(report);
    let dir = store.dir(name);
    if let Err(e) = detach_from_terminal(&dir) {
        let _ = write!(report, "{e:#}");
        return 1;
    }
    let started = start_vm(cfg, args, name, mode);
    let (mut vm, _vhost) = match started {
        Ok(v) => v,
        Err(e) => {
            let _ = write!(report, "{e:#}");
            return 1;
        }
    };
    let _ = report.write_all(b"ok");
    drop(report);
    while !matches!(
        vm.wait_timeout(Duration::from_secs(1)),
        Ok(Some(_)) | Err(_)
    ) {}
    // The disks go first: a recorded exit means the monitor is done.
    for disk in ["root.img", "overlay.img", "config.img"] {
        let _ = std::fs::remove_file(dir.join(disk));
    }
    record_exit(&dir, &cfg.serial_log);
    0
}

/// An instance booted from the data folder's defaults pins them: `gc`
/// keeps them, and a restore must use the same kernel, initrd and VMM.
/// `pin.json` in the instance folder says which data folder to unpin from.
fn pin(files: &super::run::BootFiles, name: &str, dir: &Path) -> Result<()> {
    let (Some(store), Some((kernel, initrd))) = (&files.store, &files.versions) else {
        return Ok(());
    };
    let pin = host_sysmgr::system::state::Pin {
        kernel: kernel.clone(),
        initrd: initrd.clone(),
        vmm: vmm_version(),
    };
    store.pin(name, pin)?;
    let data = store.layout().data().to_path_buf();
    instance::write_json(&dir.join(PIN_FILE), &data)?;
    Ok(())
}

/// Where an instance records the data folder its pin lives in.
pub const PIN_FILE: &str = "pin.json";

/// `qemu-system-x86_64 --version`'s first line (the VMM a pin names).
fn vmm_version() -> String {
    std::process::Command::new(Qemu::detect().program)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.lines().next().map(str::to_string))
        .unwrap_or_else(|| "qemu (unknown version)".into())
}

/// A new session, stdio on /dev/null and `monitor.log`.
fn detach_from_terminal(dir: &Path) -> Result<()> {
    nix::unistd::setsid().context("setsid")?;
    let null = std::fs::File::open("/dev/null").context("open /dev/null")?;
    let log = std::fs::File::create(dir.join("monitor.log")).context("create monitor.log")?;
    nix::unistd::dup2_stdin(&null).context("redirect stdin")?;
    nix::unistd::dup2_stdout(&log).context("redirect stdout")?;
    nix::unistd::dup2_stderr(&log).context("redirect stderr")?;
    Ok(())
}

fn start_vm(
    cfg: &mut host_sysmgr::vmm::VmConfig,
    args: &RunArgs,
    name: &str,
    mode: &str,
) -> Result<(Vm, host_sysmgr::vmm::vhost_vsock::VhostVsock)> {
    let vhost = attach_vsock(cfg)?;
    if args.config_via == ConfigVia::Vsock {
        let work = cfg
            .serial_log
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        serve_config(cfg, &work)?;
    }
    let vm = Vm::start(cfg, &Qemu::detect())?;
    let pid = vm
        .pid()
        .and_then(|p| i32::try_from(p).ok())
        .context("no VMM pid")?;
    let info = InstanceInfo {
        name: name.to_string(),
        vmm_pid: pid,
        vmm_start_ticks: instance::start_ticks(pid).context("the VMM exited at once")?,
        monitor_pid: i32::try_from(std::process::id()).unwrap_or(0),
        control_socket: vm.launch.control_socket.clone(),
        vsock_uds: Some(vhost.uds_path.clone()),
        serial_log: cfg.serial_log.clone(),
        command: args.command.clone(),
        created: instance::now(),
        mode: mode.into(),
    };
    let dir = cfg.serial_log.parent().unwrap_or(Path::new("."));
    instance::write_json(&dir.join("instance.json"), &info)?;
    Ok((vm, vhost))
}

fn record_exit(dir: &Path, serial: &Path) {
    let info = instance::exit_from_serial(serial);
    let _ = instance::write_json(&dir.join("exit.json"), &info);
}
