//! `host-sysmgr`: the host side of the project. This release has one command,
//! `run`, which boots a rootfs as a microVM in QEMU with our kernel + initrd,
//! shows its console and exits with the app's exit code.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use guest_contract::config::Config;
use guest_contract::sentinel::scan_tail;
use host_sysmgr::disks::{self, RootFs};
use host_sysmgr::vmm::qemu::Qemu;
use host_sysmgr::vmm::{Disk, Machine, Vm, VmConfig};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    version,
    about = "Host-side manager of guest kernels and initrds, and microVM runner"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a root filesystem as a microVM and run a command in it.
    ///
    /// Builds the disks a hypeman host would (vda: the rootfs read-only, vdb: a
    /// fresh ext4 overlay, vdc: the config disk with config.json), boots QEMU
    /// (KVM only where a hardware KVM module is loaded, else TCG), streams the
    /// serial console to stdout, and exits with the app's exit code as parsed
    /// from the HYPEMAN-EXIT line.
    ///
    /// Exit status 125 means host-sysmgr itself failed (bad arguments, disks,
    /// QEMU, a VM that ended without HYPEMAN-EXIT, or the timeout); 130 means it
    /// was interrupted (SIGINT/SIGTERM): the VM is killed and its files removed.
    Run(RunArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum MachineArg {
    Q35,
    Microvm,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Kernel to boot (a PVH vmlinux, or a bzImage).
    #[arg(long)]
    kernel: PathBuf,
    /// Initramfs carrying init (built by initrd-builder).
    #[arg(long)]
    initrd: PathBuf,
    /// Folder to turn into the read-only root image (ext4).
    #[arg(long, conflicts_with = "image", required_unless_present = "image")]
    rootfs: Option<PathBuf>,
    /// Existing root image (ext4, erofs or squashfs).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Environment of the app, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory of the app.
    #[arg(long, default_value = "/")]
    workdir: String,
    /// Memory in MiB.
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Machine model.
    #[arg(long, value_enum, default_value = "q35")]
    machine: MachineArg,
    /// Give up (and kill the VM) after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Extra kernel command line words.
    #[arg(long, default_value = "")]
    append: String,
    /// The command (argv) to run in the guest.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn parse_env(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            bail!("--env {p:?}: expected KEY=VALUE");
        };
        if k.is_empty() {
            bail!("--env {p:?}: empty key");
        }
        env.insert(k.to_string(), v.to_string());
    }
    Ok(env)
}

fn config(args: &RunArgs) -> Result<Config> {
    Ok(Config {
        cmd: Some(args.command.clone()),
        workdir: Some(args.workdir.clone()),
        env: Some(parse_env(&args.env)?),
        network_enabled: Some(false),
        ..Config::default()
    })
}

fn vm_config(args: &RunArgs, work: &Path) -> Result<VmConfig> {
    for (what, p) in [("kernel", &args.kernel), ("initrd", &args.initrd)] {
        if !p.is_file() {
            bail!("{what} {} does not exist", p.display());
        }
    }
    let root = match (&args.image, &args.rootfs) {
        (Some(img), _) => img.clone(),
        (None, Some(dir)) => {
            let img = work.join("root.img");
            disks::rootfs_image(dir, &img, RootFs::Ext4).context("build the root image")?;
            img
        }
        (None, None) => bail!("give --rootfs DIR or --image IMG"),
    };
    let overlay = work.join("overlay.img");
    disks::overlay_disk(&overlay, 256)?;
    let config_img = work.join("config.img");
    disks::config_disk(&config(args)?, &config_img)?;
    let mut cfg = VmConfig::new(&args.kernel, work.join("serial.log"), work.join("run"));
    cfg.initrd = Some(args.initrd.clone());
    cfg.cmdline = format!("console=ttyS0 {}", args.append).trim().to_string();
    cfg.memory_mib = args.memory;
    cfg.vcpus = args.cpus;
    cfg.machine = match args.machine {
        MachineArg::Q35 => Machine::Q35,
        MachineArg::Microvm => Machine::Microvm,
    };
    cfg.disks = vec![
        Disk {
            path: root,
            read_only: true,
        },
        Disk {
            path: overlay,
            read_only: false,
        },
        Disk {
            path: config_img,
            read_only: true,
        },
    ];
    Ok(cfg)
}

/// Copy what the serial log gained since `pos` to stdout.
fn pump(serial: &Path, pos: &mut u64) {
    let Ok(mut f) = std::fs::File::open(serial) else {
        return;
    };
    if f.seek(SeekFrom::Start(*pos)).is_err() {
        return;
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_ok() && !buf.is_empty() {
        *pos += buf.len() as u64;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&buf).and_then(|()| out.flush());
    }
}

/// host-sysmgr's own failure.
const EXIT_FAILURE: u8 = 125;
/// Interrupted by SIGINT or SIGTERM.
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, thiserror::Error)]
#[error("interrupted; the VM was killed")]
struct Interrupted;

fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&flag)).context("install signal handlers")?;
    }
    Ok(flag)
}

fn run(args: &RunArgs) -> Result<i32> {
    let interrupted = interrupt_flag()?;
    let work = tempfile::Builder::new()
        .prefix("host-sysmgr-run-")
        .tempdir()?;
    let cfg = vm_config(args, work.path())?;
    let mut vm = Vm::start(&cfg, &Qemu::detect())?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut pos = 0;
    while vm.wait_timeout(Duration::from_millis(20))?.is_none() {
        pump(&cfg.serial_log, &mut pos);
        if interrupted.load(Ordering::SeqCst) {
            vm.kill();
            return Err(Interrupted.into());
        }
        if Instant::now() > deadline {
            vm.kill();
            bail!("the VM did not finish within {} s; killed it", args.timeout);
        }
    }
    pump(&cfg.serial_log, &mut pos);
    let log = std::fs::read(&cfg.serial_log).context("read the serial log")?;
    match scan_tail(&log).exit {
        Some((code, message)) => {
            eprintln!("host-sysmgr: app exited: code={code} ({message})");
            Ok(code)
        }
        None => {
            let stderr =
                std::fs::read_to_string(cfg.runtime_dir.join("vmm.stderr")).unwrap_or_default();
            bail!("the VM ended without a HYPEMAN-EXIT line\n{stderr}")
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Run(args) = cli.command;
    match run(&args) {
        Ok(code) => ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)),
        Err(e) => {
            eprintln!("host-sysmgr: {e:#}");
            if e.is::<Interrupted>() {
                ExitCode::from(EXIT_INTERRUPTED)
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
    }
}
