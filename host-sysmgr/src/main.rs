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
    about = "Host-side manager of guest kernels and initrds, and microVM runner",
    after_help = EXIT_STATUS
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
    /// Exit status: the app's own code (0-255) from HYPEMAN-EXIT; 125 when
    /// host-sysmgr itself failed (see EXIT STATUS in `host-sysmgr --help`);
    /// 130 when interrupted (SIGINT/SIGTERM): the VM is killed. Its work folder
    /// (root, overlay and config images, serial log) is removed on every exit.
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
    /// Memory in MiB (64 to 1048576).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(64..=MAX_MEMORY_MIB))]
    memory: u32,
    /// Virtual CPUs (1 to 255).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_CPUS))]
    cpus: u32,
    /// Machine model.
    #[arg(long, value_enum, default_value = "q35")]
    machine: MachineArg,
    /// Give up (and kill the VM) after this many seconds (1 to 604800, a week).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_S))]
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
        check_input_file(what, p)?;
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

/// A kernel or initrd path must name a regular file (symlinks followed).
fn check_input_file(what: &str, p: &Path) -> Result<()> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(m) if m.is_dir() => bail!(
            "--{what} {}: is a directory, not a {what} image",
            p.display()
        ),
        Ok(_) => bail!("--{what} {}: not a regular file", p.display()),
        Err(e) => Err(e).with_context(|| format!("--{what} {}", p.display())),
    }
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
/// Largest `--memory`, MiB (1 TiB).
const MAX_MEMORY_MIB: i64 = 1 << 20;
/// Largest `--cpus`.
const MAX_CPUS: i64 = 255;
/// Largest `--timeout`, seconds (a week).
const MAX_TIMEOUT_S: u64 = 7 * 24 * 3600;

const EXIT_STATUS: &str = "EXIT STATUS (run):
  0-255  the app's own exit code, from the guest's HYPEMAN-EXIT line
  125    host-sysmgr itself failed: a usage error (bad or out-of-range
         argument), a missing kernel/initrd/rootfs, building the disks,
         starting the VMM, a VM that ended without a valid HYPEMAN-EXIT
         (none, or a code outside 0-255), or the --timeout
  130    interrupted by SIGINT or SIGTERM (the VM is killed)
  --help and --version exit 0.";

/// The exit status for the code a guest reported: its own code when it is a
/// real exit status (0-255); anything else is a malformed report and ends
/// as host-sysmgr's own failure, never as success.
fn exit_status(code: i32) -> Result<u8> {
    u8::try_from(code)
        .map_err(|_| anyhow::anyhow!("the guest reported exit code {code}, outside 0-255"))
}

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

fn run(args: &RunArgs) -> Result<u8> {
    let interrupted = interrupt_flag()?;
    let work = tempfile::Builder::new()
        .prefix("host-sysmgr-run-")
        .tempdir()?;
    let cfg = vm_config(args, work.path())?;
    let mut vm = Vm::start(&cfg, &Qemu::detect())?;
    let deadline = host_sysmgr::deadline::after(Duration::from_secs(args.timeout));
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
    let log = match std::fs::read(&cfg.serial_log) {
        Ok(log) => log,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).context("read the serial log"),
    };
    match scan_tail(&log).exit {
        Some((code, message)) => {
            eprintln!("host-sysmgr: app exited: code={code} ({message})");
            exit_status(code)
        }
        None => bail!(
            "the VM ended without a HYPEMAN-EXIT line{}",
            vmm_stderr(&cfg.runtime_dir)
        ),
    }
}

/// The VMM's own stderr, as an indented block to append to an error.
fn vmm_stderr(runtime_dir: &Path) -> String {
    let path = runtime_dir.join("vmm.stderr");
    let text = std::fs::read(&path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text[text.len().saturating_sub(8192)..]);
    let text = text.trim();
    if text.is_empty() {
        return "; the VMM printed nothing on stderr".into();
    }
    let lines: Vec<String> = text.lines().map(|l| format!("  {l}")).collect();
    format!("; the VMM's stderr:\n{}", lines.join("\n"))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let Command::Run(args) = cli.command;
    match run(&args) {
        Ok(code) => ExitCode::from(code),
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

/// `--help`/`--version` print and exit 0; a usage error exits 125 like every
/// other failure of host-sysmgr's own (as `docker run` does).
fn usage_error(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
            ExitCode::SUCCESS
        }
        _ => ExitCode::from(EXIT_FAILURE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_outside_0_255_are_never_success() {
        for code in [0, 1, 7, 126, 127, 137, 255] {
            assert_eq!(exit_status(code).ok(), u8::try_from(code).ok());
        }
        for code in [-1, -255, 256, 512, i32::MIN, i32::MAX] {
            let e = exit_status(code).expect_err("out of range");
            assert!(e.to_string().contains(&code.to_string()), "{e}");
        }
    }
}
