//! `host-sysmgr run`: boot a root filesystem as a microVM, in the foreground
//! (console streamed, the app's exit code returned) or detached as a named
//! instance owned by a monitor process.

use super::Interrupted;
use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use guest_contract::config::{Config, VolumeMount};
use guest_contract::sentinel::scan_tail;
use host_sysmgr::disks::{self, RootFs};
use host_sysmgr::image::config::{derive, Derived, Overrides, RunConfig};
use host_sysmgr::vmm::qemu::Qemu;
use host_sysmgr::vmm::vhost_vsock::VhostVsock;
use host_sysmgr::vmm::{Disk, Machine, Nic, Vm, VmConfig, Vsock};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest `--memory`, MiB (1 TiB).
const MAX_MEMORY_MIB: i64 = 1 << 20;
/// Largest `--cpus`.
const MAX_CPUS: i64 = 255;
/// Largest `--timeout`, seconds (a week).
const MAX_TIMEOUT_S: u64 = 7 * 24 * 3600;

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum MachineArg {
    Q35,
    Microvm,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Kernel to boot (a PVH vmlinux, or a bzImage). Default: the data
    /// folder's default kernel (`ensure` installs it first).
    #[arg(long)]
    pub(crate) kernel: Option<PathBuf>,
    /// Initramfs carrying init (built by initrd-builder). Default: the data
    /// folder's initrd, built by `ensure` from the init and agent binaries.
    #[arg(long)]
    pub(crate) initrd: Option<PathBuf>,
    /// The data folder (default: $GUESTINIT_DATA_DIR, else
    /// $XDG_DATA_HOME/guestinit, else ~/.local/share/guestinit).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// What to boot: an OCI image — a registry reference
    /// (HOST[:PORT]/REPO[:TAG|@sha256:…]), an image layout folder
    /// (`oci:DIR[:TAG]`, or DIR), an OCI archive (`oci-archive:FILE[:TAG]`)
    /// or a `docker save` (`docker-archive:FILE`, or FILE) — cached, its
    /// root image built once per manifest; or a plain folder or root image
    /// file as --rootfs/--image.
    #[arg(value_name = "IMAGE", conflicts_with_all = ["rootfs", "image"],
          required_unless_present_any = ["rootfs", "image"])]
    pub(crate) source: Option<String>,
    /// Folder to turn into the read-only root image (ext4).
    #[arg(long, conflicts_with = "image")]
    pub(crate) rootfs: Option<PathBuf>,
    /// Existing root image (ext4, erofs or squashfs).
    #[arg(long)]
    pub(crate) image: Option<PathBuf>,
    /// Root image format built from an OCI image.
    #[arg(long, value_enum, default_value = "erofs")]
    pub(crate) root_format: RootFormat,
    /// Plain HTTP to a registry that is not on loopback.
    #[arg(long)]
    pub(crate) insecure_registry: bool,
    /// Environment of the app, KEY=VALUE (repeatable; over the image's).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub(crate) env: Vec<String>,
    /// Working directory of the app (default: the image's, else /).
    #[arg(long)]
    pub(crate) workdir: Option<String>,
    /// Entrypoint, replacing the image's (and its cmd); "" clears it.
    #[arg(long)]
    pub(crate) entrypoint: Option<String>,
    /// User of the app: name, uid or uid:gid (default: the image's, else root).
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// Memory in MiB (64 to 1048576).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(64..=MAX_MEMORY_MIB))]
    pub(crate) memory: u32,
    /// Virtual CPUs (1 to 255).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_CPUS))]
    pub(crate) cpus: u32,
    /// Machine model.
    #[arg(long, value_enum, default_value = "q35")]
    pub(crate) machine: MachineArg,
    /// Give up (and kill the VM) after this many seconds (1 to 604800, a week).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_S))]
    pub(crate) timeout: u64,
    /// Extra kernel command line words.
    #[arg(long, default_value = "")]
    pub(crate) append: String,
    /// Keep the VM running in the background as a named instance and return
    /// once it has booted (see `ps`, `exec`, `cp`, `stop`, `logs`). The VM
    /// gets vsock so the host can reach its agent.
    #[arg(long, short = 'd')]
    pub(crate) detach: bool,
    /// Name of the instance (with --detach; default: vm-<random>).
    #[arg(long, requires = "detach")]
    pub(crate) name: Option<String>,
    /// Attach vsock (the agent's channel) to a foreground VM too.
    #[arg(long)]
    pub(crate) vsock: bool,
    /// Give the guest a network: QEMU's user-mode network, restricted to
    /// the ports published with --publish (the guest reaches nothing else).
    /// init configures eth0 as 10.0.2.15/24 via 10.0.2.2 from the config.
    #[arg(long)]
    pub(crate) net: bool,
    /// Publish guest TCP port GUEST on 127.0.0.1:HOST (repeatable; implies --net).
    #[arg(long = "publish", short = 'p', value_name = "HOST:GUEST")]
    pub(crate) publish: Vec<String>,
    /// Attach the disk image IMG and mount it at PATH in the guest: ro, rw
    /// (the default; the image changes) or overlay (the image stays
    /// unchanged; writes go to a layer that ends with the run). Repeatable;
    /// the first is /dev/vdd. ext4, xfs, erofs, squashfs or btrfs.
    #[arg(long = "volume", short = 'v', value_name = "IMG:/PATH[:ro|rw|overlay]")]
    pub(crate) volume: Vec<String>,
    /// exec (init runs the app and reports its exit) or systemd (the
    /// image's init system becomes PID 1). Default: systemd for an image
    /// whose command is /sbin/init or systemd, else exec.
    #[arg(long, value_enum)]
    pub(crate) init_mode: Option<InitModeArg>,
    /// How config.json reaches the guest: on a config disk (vdc, as a
    /// hypeman host does), in an archive appended to the initramfs
    /// (`hypeman.config=initrd`), or from host-sysmgr over vsock port 2223
    /// (`hypeman.config=vsock:2223`); the last two need no config disk.
    #[arg(long, value_enum, default_value = "disk")]
    pub(crate) config_via: ConfigVia,
    /// The command (argv) to run in the guest (with an OCI image: replaces
    /// its cmd; optional then).
    #[arg(last = true)]
    pub(crate) command: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum InitModeArg {
    /// init runs the app as its child.
    Exec,
    /// The image's init system becomes PID 1.
    Systemd,
}

/// Whether the guest runs systemd as PID 1 (its graceful stop differs).
pub fn is_systemd(args: &RunArgs, derived: &Derived) -> bool {
    match args.init_mode {
        Some(m) => m == InitModeArg::Systemd,
        None => derived.systemd,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ConfigVia {
    /// A config disk (vdc).
    Disk,
    /// An archive appended to the initramfs.
    Initrd,
    /// Served over vsock (port [`CONFIG_VSOCK_PORT`]).
    Vsock,
}

/// The vsock port init reads config.json from with `--config-via vsock`.
pub use host_sysmgr::disks::CONFIG_VSOCK_PORT;

/// Serves `work/config.json` to every guest connection on
/// [`CONFIG_VSOCK_PORT`] (vhost-device-vsock hands a guest's connection to
/// host port P to the Unix socket `<uds>_P`), from a thread that lives as
/// long as the process.
pub fn serve_config(cfg: &VmConfig, work: &Path) -> Result<()> {
    let json = std::fs::read(work.join("config.json")).context("read the config to serve")?;
    let uds = cfg
        .vsock
        .as_ref()
        .context("no vsock to serve the config on")?
        .uds_path
        .clone();
    let path = PathBuf::from(format!("{}_{CONFIG_VSOCK_PORT}", uds.display()));
    let listener = std::os::unix::net::UnixListener::bind(&path)
        .with_context(|| format!("listen on {}", path.display()))?;
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            let _ = conn.write_all(&json);
        }
    });
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum RootFormat {
    /// EROFS: smallest and fastest to mount.
    Erofs,
    /// ext4 without a journal.
    Ext4,
}

/// The root disk and the app's command.
pub struct Root {
    /// The root image (vda).
    pub path: PathBuf,
    /// The guest's command, environment, folder and user.
    pub derived: Derived,
}

fn overrides(args: &RunArgs) -> Result<Overrides> {
    Ok(Overrides {
        entrypoint: args.entrypoint.clone(),
        cmd: args.command.clone(),
        env: parse_env(&args.env)?,
        workdir: args.workdir.clone(),
        user: args.user.clone(),
    })
}

/// The root image and command of `args`: an OCI image pulled and built (or
/// reused), a root image file, or a folder made into an ext4 image in `work`.
pub fn root(args: &RunArgs, work: &Path) -> Result<Root> {
    let plain = |path: PathBuf| -> Result<Root> {
        let derived = derive(&RunConfig::default(), &overrides(args)?);
        if derived.cmd.is_empty() && derived.entrypoint.is_empty() {
            bail!("give the command to run after --");
        }
        Ok(Root { path, derived })
    };
    let folder = |dir: &Path| -> Result<PathBuf> {
        let img = work.join("root.img");
        disks::rootfs_image(dir, &img, RootFs::Ext4).context("build the root image")?;
        Ok(img)
    };
    match (&args.source, &args.image, &args.rootfs) {
        (_, Some(img), _) => plain(img.clone()),
        (_, None, Some(dir)) => plain(folder(dir)?),
        (Some(s), None, None) if is_rootfs_dir(s) => plain(folder(Path::new(s))?),
        (Some(s), None, None) if is_root_image(s) => plain(PathBuf::from(s)),
        (Some(reference), None, None) => oci_root(args, reference),
        (None, None, None) => bail!("give an IMAGE, --rootfs DIR or --image IMG"),
    }
}

/// A plain folder (an OCI image layout has an `oci-layout` file).
fn is_rootfs_dir(s: &str) -> bool {
    let p = Path::new(s);
    p.is_dir() && !p.join("oci-layout").exists()
}

/// A file that is not a tar archive (those are OCI or docker-save archives).
fn is_root_image(s: &str) -> bool {
    let p = Path::new(s);
    p.is_file() && !host_sysmgr::image::local::is_tar(p)
}

fn oci_root(args: &RunArgs, reference: &str) -> Result<Root> {
    let layout = host_sysmgr::system::Layout::new(host_sysmgr::system::layout::data_dir(
        args.data_dir.as_deref(),
    )?);
    let access = host_sysmgr::system::registry::Access::from_env(args.insecure_registry);
    let fs = match args.root_format {
        RootFormat::Erofs => RootFs::Erofs,
        RootFormat::Ext4 => RootFs::Ext4,
    };
    let (_, img) = host_sysmgr::image::prepare(&layout, reference, &access, fs)
        .with_context(|| format!("image {reference}"))?;
    let derived = derive(&img.config, &overrides(args)?);
    if derived.systemd && args.init_mode.is_none() {
        eprintln!("host-sysmgr: {reference} runs an init system: systemd mode");
    }
    if derived.cmd.is_empty() && derived.entrypoint.is_empty() {
        bail!("{reference} has no entrypoint or cmd: give the command after --");
    }
    Ok(Root {
        path: img.path,
        derived,
    })
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

/// `HOST:GUEST` port pairs of --publish.
fn parse_publish(pairs: &[String]) -> Result<Vec<(u16, u16)>> {
    pairs
        .iter()
        .map(|p| {
            let port = |s: &str| s.parse::<u16>().ok().filter(|&n| n != 0);
            match p.split_once(':') {
                Some((h, g)) => match (port(h), port(g)) {
                    (Some(h), Some(g)) => Ok((h, g)),
                    _ => bail!("--publish {p:?}: ports are 1-65535"),
                },
                None => bail!("--publish {p:?}: expected HOST:GUEST"),
            }
        })
        .collect()
}

/// The guest's address on the user-mode network (QEMU's defaults).
const GUEST_IP: &str = "10.0.2.15";
const GUEST_GW: &str = "10.0.2.2";

fn config(args: &RunArgs, d: &Derived, volumes: Vec<VolumeMount>) -> Result<Config> {
    let net = wants_net(args);
    Ok(Config {
        init_mode: is_systemd(args, d).then_some(guest_contract::config::InitMode::Systemd),
        volume_mounts: (!volumes.is_empty()).then_some(volumes),
        entrypoint: (!d.entrypoint.is_empty()).then(|| d.entrypoint.clone()),
        cmd: Some(d.cmd.clone()),
        workdir: Some(d.workdir.clone()),
        env: Some(d.env.clone()),
        user: d.user.clone(),
        network_enabled: Some(net),
        guest_ip: net.then(|| GUEST_IP.into()),
        guest_cidr: net.then_some(24),
        guest_gw: net.then(|| GUEST_GW.into()),
        ..Config::default()
    })
}

fn wants_net(args: &RunArgs) -> bool {
    args.net || !args.publish.is_empty()
}

/// What a VM boots, and whether it came from the data folder's defaults
/// (then its boot is recorded against those versions).
pub struct BootFiles {
    /// The kernel image.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// (kernel version, initrd build) when the defaults were used.
    pub versions: Option<(String, String)>,
    /// The store they came from.
    pub store: Option<host_sysmgr::system::Store>,
}

/// `--kernel`/`--initrd` when given, else the data folder's defaults after
/// `ensure` (which installs or builds what is missing).
pub fn boot_files(args: &RunArgs) -> Result<BootFiles> {
    if let (Some(kernel), Some(initrd)) = (&args.kernel, &args.initrd) {
        for (what, p) in [("kernel", kernel), ("initrd", initrd)] {
            check_input_file(what, p)?;
        }
        return Ok(BootFiles {
            kernel: kernel.clone(),
            initrd: initrd.clone(),
            versions: None,
            store: None,
        });
    }
    let store = super::system::open_store(args.data_dir.as_deref(), None)?;
    let inputs = host_sysmgr::system::initrd::Inputs::find(None, None)?;
    let e = store
        .ensure(&inputs)
        .context("ensure the default kernel and initrd")?;
    let kernel = args.kernel.clone().unwrap_or(e.kernel);
    let initrd = args.initrd.clone().unwrap_or(e.initrd);
    for (what, p) in [("kernel", &kernel), ("initrd", &initrd)] {
        check_input_file(what, p)?;
    }
    let versions = (args.kernel.is_none() && args.initrd.is_none())
        .then_some((e.kernel_version, e.initrd_build));
    Ok(BootFiles {
        kernel,
        initrd,
        versions,
        store: Some(store),
    })
}

/// The VM of `args`, its disks built in `work`.
/// The VM of `args` (its disks built in `work`) and whether its guest runs
/// systemd as PID 1.
pub fn vm_config(args: &RunArgs, files: &BootFiles, work: &Path) -> Result<(VmConfig, bool)> {
    let volumes = args
        .volume
        .iter()
        .map(|v| super::volumes::parse(v))
        .collect::<Result<Vec<_>>>()?;
    let nic = if wants_net(args) {
        Some(Nic {
            host_forwards: parse_publish(&args.publish)?,
            ..Nic::default()
        })
    } else {
        None
    };
    let Root {
        path: root,
        derived,
    } = root(args, work)?;
    let overlay = work.join("overlay.img");
    disks::overlay_disk(&overlay, 256)?;
    let via_initrd = args.config_via == ConfigVia::Initrd;
    let no_disk = args.config_via != ConfigVia::Disk;
    let first_volume = super::volumes::FIRST_VOLUME_DISK - usize::from(no_disk);
    let (volume_disks, mounts) = super::volumes::attach(&volumes, work, first_volume)?;
    let guest_config = config(args, &derived, mounts)?;
    let mut cfg = VmConfig::new(&files.kernel, work.join("serial.log"), work.join("run"));
    cfg.disks = vec![
        Disk {
            path: root,
            read_only: true,
        },
        Disk {
            path: overlay,
            read_only: false,
        },
    ];
    let mut append = args.append.clone();
    if via_initrd {
        cfg.initrd = Some(host_sysmgr::disks::initrd_with_config(
            &files.initrd,
            &guest_config,
            work,
        )?);
        append = format!("hypeman.config=initrd {append}");
    } else if no_disk {
        // Served by `serve_config` once vsock is attached.
        std::fs::write(work.join("config.json"), guest_config.to_hypeman_json())?;
        cfg.initrd = Some(files.initrd.clone());
        append = format!("hypeman.config=vsock:{CONFIG_VSOCK_PORT} {append}");
    } else {
        let config_img = work.join("config.img");
        disks::config_disk(&guest_config, &config_img)?;
        cfg.initrd = Some(files.initrd.clone());
        cfg.disks.push(Disk {
            path: config_img,
            read_only: true,
        });
    }
    cfg.cmdline = format!("console=ttyS0 {append}").trim().to_string();
    cfg.memory_mib = args.memory;
    cfg.vcpus = args.cpus;
    cfg.machine = match args.machine {
        MachineArg::Q35 => Machine::Q35,
        MachineArg::Microvm => Machine::Microvm,
    };
    cfg.nic = nic;
    cfg.disks.extend(volume_disks);
    Ok((cfg, is_systemd(args, &derived)))
}

/// Starts a vhost-device-vsock backend for `cfg` (guest CID 3; each VM has
/// a backend of its own) and attaches it.
pub fn attach_vsock(cfg: &mut VmConfig) -> Result<VhostVsock> {
    std::fs::create_dir_all(&cfg.runtime_dir)
        .with_context(|| format!("create {}", cfg.runtime_dir.display()))?;
    let v = VhostVsock::start(
        3,
        &cfg.runtime_dir.join("vhost.sock"),
        &cfg.runtime_dir.join("vsock.sock"),
    )?;
    cfg.vsock = Some(Vsock {
        cid: 3,
        uds_path: v.uds_path.clone(),
        vhost_user_socket: Some(v.socket.clone()),
    });
    Ok(v)
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

fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&flag)).context("install signal handlers")?;
    }
    Ok(flag)
}

/// The exit status for the code a guest reported: its own code when it is a
/// real exit status (0-255); anything else is a malformed report and ends
/// as host-sysmgr's own failure, never as success.
fn exit_status(code: i32) -> Result<u8> {
    u8::try_from(code)
        .map_err(|_| anyhow::anyhow!("the guest reported exit code {code}, outside 0-255"))
}

/// Foreground or detached, as asked.
pub fn run(args: &RunArgs) -> Result<u8> {
    if args.detach {
        return super::detach::detach(args);
    }
    foreground(args)
}

fn foreground(args: &RunArgs) -> Result<u8> {
    let interrupted = interrupt_flag()?;
    let work = tempfile::Builder::new()
        .prefix("host-sysmgr-run-")
        .tempdir()?;
    let files = boot_files(args)?;
    let (mut cfg, _) = vm_config(args, &files, work.path())?;
    let via_vsock = args.config_via == ConfigVia::Vsock;
    let _vhost = if args.vsock || via_vsock {
        Some(attach_vsock(&mut cfg)?)
    } else {
        None
    };
    if via_vsock {
        serve_config(&cfg, work.path())?;
    }
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
    let scan = scan_tail(&log);
    record_outcome(&files, &scan);
    match scan.exit {
        Some((code, message)) => {
            eprintln!("host-sysmgr: app exited: code={code} ({message})");
            exit_status(code)
        }
        None if systemd_started(&scan) => {
            // systemd as PID 1 reports no app exit: it powered the VM off.
            eprintln!("host-sysmgr: the systemd guest powered off");
            Ok(0)
        }
        None => bail!(
            "the VM ended without a HYPEMAN-EXIT line{}",
            vmm_stderr(&cfg.runtime_dir)
        ),
    }
}

/// Counts the boot for the default versions it used: good when the app
/// started, failed when init gave up before it (or nothing was reported).
/// A default that keeps failing is rolled back (see `system::ops`).
fn record_outcome(files: &BootFiles, scan: &guest_contract::sentinel::TailScan) {
    let (Some(store), Some((kernel, initrd))) = (&files.store, &files.versions) else {
        return;
    };
    let ok = scan.program_start.is_some();
    match store.record_boot(kernel, initrd, ok) {
        Ok(notes) => notes.iter().for_each(|n| eprintln!("host-sysmgr: {n}")),
        Err(e) => eprintln!(
            "host-sysmgr: could not record the boot: {}",
            host_sysmgr::chain(&e)
        ),
    }
}

/// Whether init handed PID 1 to systemd (`PROGRAM-START … mode=systemd`).
fn systemd_started(scan: &guest_contract::sentinel::TailScan) -> bool {
    matches!(&scan.program_start, Some(guest_contract::sentinel::Sentinel::ProgramStart { mode, .. }) if mode == "systemd")
}

/// The VMM's own stderr, as an indented block to append to an error.
pub fn vmm_stderr(runtime_dir: &Path) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_takes_host_and_guest_ports() {
        let ok = parse_publish(&["8080:80".into(), "1:65535".into()]).unwrap();
        assert_eq!(ok, [(8080, 80), (1, 65535)]);
        for bad in ["80", "0:80", "80:0", "65536:80", "a:b", "80:80:80", ":80"] {
            let e = parse_publish(&[bad.into()]).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--publish {bad:?}: ")), "{e}");
        }
    }

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
