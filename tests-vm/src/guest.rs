//! `Guest`: build the disks, boot the kernel + initramfs in QEMU, watch the
//! serial log, and clean everything up (VM, vsock backend, images) even when a
//! test fails. One VM at a time (2 cores): an in-process mutex plus a file lock.

use crate::artifacts::{report_dir, target_dir};
use crate::initramfs::{self, Variant};
use crate::kernel::{self, Kernel};
use crate::rootfs::{self, Flavor};
use anyhow::{anyhow, bail, Context, Result};
use guest_contract::config::Config;
use guest_contract::sentinel::{scan_tail, Sentinel, SentinelStream};
use host_sysmgr::agent::Dialer;
use host_sysmgr::disks::{self, RootFs};
use host_sysmgr::stop::{StopOptions, StopReport};
use host_sysmgr::vmm::qemu::Qemu;
use host_sysmgr::vmm::vhost_vsock::VhostVsock;
use host_sysmgr::vmm::{Accel, Disk, Machine, Nic, Vm, VmConfig, Vsock};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Hang detection under TCG (not a performance bound).
pub const HANG_TIMEOUT: Duration = Duration::from_secs(60);

/// The root disk.
#[derive(Debug, Clone)]
pub enum Root {
    /// A tiny rootfs image of a flavor and filesystem.
    Image(Flavor, RootFs),
    /// Random bytes: no filesystem at all.
    Garbage,
}

/// The config disk.
#[derive(Debug, Clone)]
pub enum ConfigDisk {
    /// `config.json` as a hypeman host writes it.
    Config(Box<Config>),
    /// These exact bytes as `config.json`.
    Raw(Vec<u8>),
    /// No config disk attached.
    Missing,
}

/// A VM to boot.
#[derive(Debug, Clone)]
pub struct Guest {
    /// Scenario name (boot-time report).
    pub name: String,
    /// Root disk.
    pub root: Root,
    /// Config disk.
    pub config: ConfigDisk,
    /// Reuse this overlay image instead of a fresh one.
    pub overlay: Option<PathBuf>,
    /// Guest memory.
    pub memory_mib: u32,
    /// Extra kernel command line words.
    pub cmdline: String,
    /// Initramfs variant.
    pub initrd: Variant,
    /// An initramfs image to boot instead of the variant's.
    pub initrd_image: Option<PathBuf>,
    /// Bytes served to every guest connection on the config port
    /// (`hypeman.config=vsock:2223`; needs `vsock`).
    pub served_config: Option<Vec<u8>>,
    /// Accelerator (TCG here; `Accel::Icount` for deterministic guest time).
    pub accel: Accel,
    /// Attach vsock (vhost-device-vsock).
    pub vsock: bool,
    /// Attach a user-mode NIC (loopback-only forwards).
    pub nic: Option<Nic>,
    /// Disks attached after the config disk (/dev/vdd, /dev/vde, …).
    pub extra_disks: Vec<Disk>,
    /// Files added to the image rootfs (path relative to /, contents, mode).
    pub image_files: Vec<(String, Vec<u8>, u32)>,
    /// Kernel; [`kernel::default_kernel`] when `None` (the `kernel/` build
    /// when present, else Debian's).
    pub kernel: Option<Kernel>,
    /// Machine model.
    pub machine: Machine,
    /// `loglevel=4`: keep info-level kernel chatter off the console so it
    /// cannot split the lines tests compare (panics still print).
    pub quiet_kernel: bool,
}

impl Guest {
    /// A busybox guest on ext4 running `cmd` (as `config.cmd`).
    pub fn new(name: &str, cmd: &[&str]) -> Guest {
        let config = Config {
            cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
            workdir: Some("/".into()),
            network_enabled: Some(false),
            ..Config::default()
        };
        Guest {
            name: name.into(),
            root: Root::Image(Flavor::Busybox, RootFs::Ext4),
            config: ConfigDisk::Config(Box::new(config)),
            overlay: None,
            memory_mib: 512,
            cmdline: String::new(),
            initrd: Variant::default(),
            vsock: false,
            nic: None,
            extra_disks: Vec::new(),
            image_files: Vec::new(),
            initrd_image: None,
            served_config: None,
            accel: Accel::Auto,
            kernel: None,
            machine: Machine::Q35,
            quiet_kernel: true,
        }
    }

    /// Change the config (when it is a `Config`).
    pub fn with_config(mut self, f: impl FnOnce(&mut Config)) -> Guest {
        if let ConfigDisk::Config(c) = &mut self.config {
            f(c);
        }
        self
    }
}

/// A clear message instead of a confusing failure when setup was skipped.
fn require_tools() -> Result<()> {
    for tool in [
        "qemu-system-x86_64",
        "mkfs.ext4",
        "mkfs.erofs",
        "vhost-device-vsock",
    ] {
        let found = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("command -v {tool} || test -x \"$HOME/.cargo/bin/{tool}\""),
            ])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            bail!("{tool} is missing: run `bash scripts/setup.sh` first (it installs every VM test dependency)");
        }
    }
    Ok(())
}

/// The one-VM-at-a-time lock (a mutex in this process, a file lock across
/// processes), for tests that start VMs without a `Guest`.
pub fn vm_lock() -> Result<(MutexGuard<'static, ()>, std::fs::File)> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    std::fs::create_dir_all(target_dir())?;
    let file = std::fs::File::create(target_dir().join("vm.lock"))?;
    // SAFETY: flock on an fd we own; it blocks until other processes' VMs end.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    if rc != 0 {
        bail!("flock vm.lock: {}", std::io::Error::last_os_error());
    }
    Ok((guard, file))
}

fn root_image(root: &Root, files: &[(String, Vec<u8>, u32)], work: &Path) -> Result<PathBuf> {
    let img = work.join("root.img");
    match root {
        Root::Image(flavor, fs) => {
            let dir = work.join("rootfs");
            rootfs::populate(&dir, *flavor)?;
            for (rel, data, mode) in files {
                let path = dir.join(rel.trim_start_matches('/'));
                std::fs::create_dir_all(path.parent().unwrap_or(&dir))?;
                std::fs::write(&path, data)?;
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(*mode),
                )?;
            }
            disks::rootfs_image(&dir, &img, *fs)?;
        }
        Root::Garbage => {
            let bytes: Vec<u8> = (0u32..(8 << 20) / 4)
                .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
                .collect();
            std::fs::write(&img, bytes)?;
        }
    }
    Ok(img)
}

fn config_image(config: &ConfigDisk, work: &Path) -> Result<Option<PathBuf>> {
    let img = work.join("config.img");
    match config {
        ConfigDisk::Config(c) => disks::config_disk(c, &img)?,
        ConfigDisk::Raw(bytes) => {
            let dir = work.join("configdir");
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("config.json"), bytes)?;
            disks::mkfs_ext4(Some(&dir), &img, 4, false)?;
        }
        ConfigDisk::Missing => return Ok(None),
    }
    Ok(Some(img))
}

/// Hands `bytes` to the first guest connection on the config port
/// (vhost-device-vsock passes a connection to host port P to `<uds>_P`).
fn serve_once(uds: &Path, bytes: Vec<u8>) -> Result<()> {
    let port = host_sysmgr::disks::CONFIG_VSOCK_PORT;
    let path = PathBuf::from(format!("{}_{port}", uds.display()));
    let listener = std::os::unix::net::UnixListener::bind(&path)
        .with_context(|| format!("listen on {}", path.display()))?;
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let _ = conn.write_all(&bytes);
        }
    });
    Ok(())
}

/// A booted guest.
pub struct Running {
    vm: Vm,
    _vhost: Option<VhostVsock>,
    /// Host-side vsock socket, when vsock is attached.
    pub vsock_uds: Option<PathBuf>,
    /// Serial console log.
    pub serial: PathBuf,
    /// Overlay disk image.
    pub overlay_img: PathBuf,
    started: Instant,
    program_start: Option<Duration>,
    name: String,
    /// Images and sockets; removed on drop.
    pub work: tempfile::TempDir,
    _lock: (MutexGuard<'static, ()>, std::fs::File),
}

impl Guest {
    /// Build the disks and start QEMU.
    pub fn start(&self) -> Result<Running> {
        require_tools()?;
        let kernel = match &self.kernel {
            Some(k) => k.clone(),
            None => kernel::default_kernel()?,
        };
        let initrd = match &self.initrd_image {
            Some(p) => p.clone(),
            None => initramfs::image(&kernel, &self.initrd)?,
        };
        let lock = vm_lock()?;
        let work = tempfile::Builder::new()
            .prefix("vm-")
            .tempdir_in(target_dir())
            .context("create work dir")?;
        let w = work.path();
        let root = root_image(&self.root, &self.image_files, w)?;
        let overlay_img = match &self.overlay {
            Some(p) => p.clone(),
            None => {
                let p = w.join("overlay.img");
                disks::overlay_disk(&p, 64)?;
                p
            }
        };
        let mut cfg = VmConfig::new(&kernel.vmlinux, w.join("serial.log"), w.join("run"));
        cfg.initrd = Some(initrd);
        cfg.memory_mib = self.memory_mib;
        cfg.accel = self.accel;
        cfg.machine = self.machine;
        cfg.nic = self.nic.clone();
        let quiet = if self.quiet_kernel { "loglevel=4 " } else { "" };
        cfg.cmdline = format!("console=ttyS0 {quiet}{}", self.cmdline)
            .trim()
            .to_string();
        cfg.disks = vec![
            Disk {
                path: root,
                read_only: true,
            },
            Disk {
                path: overlay_img.clone(),
                read_only: false,
            },
        ];
        if let Some(c) = config_image(&self.config, w)? {
            cfg.disks.push(Disk {
                path: c,
                read_only: true,
            });
        }
        cfg.disks.extend(self.extra_disks.iter().cloned());
        std::fs::create_dir_all(&cfg.runtime_dir)?;
        let vhost = if self.vsock {
            let v = VhostVsock::start(3, &w.join("run/vhost.sock"), &w.join("run/vsock.sock"))?;
            cfg.vsock = Some(Vsock {
                cid: 3,
                uds_path: v.uds_path.clone(),
                vhost_user_socket: Some(v.socket.clone()),
            });
            Some(v)
        } else {
            None
        };
        if let (Some(bytes), Some(v)) = (&self.served_config, &vhost) {
            serve_once(&v.uds_path, bytes.clone())?;
        }
        let vm = Vm::start(&cfg, &Qemu::detect())?;
        Ok(Running {
            vm,
            vsock_uds: vhost.as_ref().map(|v| v.uds_path.clone()),
            _vhost: vhost,
            serial: cfg.serial_log.clone(),
            overlay_img,
            started: Instant::now(),
            program_start: None,
            name: self.name.clone(),
            work,
            _lock: lock,
        })
    }

    /// Boot and wait for the VM to end by itself.
    pub fn run(&self) -> Result<Outcome> {
        self.start()?.finish()
    }
}

/// How a boot ended.
#[derive(Debug)]
pub struct Outcome {
    /// The whole serial log (lossy UTF-8).
    pub log: String,
    /// Code and message of the HYPEMAN-EXIT line, as a hypeman host reads it.
    pub exit: Option<(i32, String)>,
    /// QEMU start → PROGRAM-START.
    pub to_program_start: Option<Duration>,
    /// QEMU start → QEMU exit.
    pub to_exit: Duration,
    /// The overlay image (kept in `work`).
    pub overlay_img: PathBuf,
    /// The work folder, alive as long as the outcome.
    pub work: tempfile::TempDir,
}

impl Outcome {
    /// The exit sentinel line, exactly.
    pub fn exit_line(&self) -> Result<String> {
        let (code, message) = self
            .exit
            .clone()
            .ok_or_else(|| anyhow!("no HYPEMAN-EXIT in:\n{}", self.log))?;
        Ok(Sentinel::Exit { code, message }.render())
    }

    /// Whether the log has a line equal to `line` (after trimming `\r`).
    pub fn has_line(&self, line: &str) -> bool {
        self.lines().contains(&line)
    }

    /// Lines of the log (see [`console_lines`]).
    pub fn lines(&self) -> Vec<&str> {
        console_lines(&self.log).collect()
    }
}

/// Lines of a serial log, `\r` trimmed. The firmware's last words end
/// without a newline: what follows them on their line is a line of its own.
pub fn console_lines(log: &str) -> impl Iterator<Item = &str> {
    const FIRMWARE_END: &str = "Booting from ROM..";
    log.lines()
        .map(|l| l.split_once(FIRMWARE_END).map_or(l, |(_, rest)| rest))
        .map(|l| l.trim_end_matches('\r'))
}

impl Running {
    fn read_log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    fn note_program_start(&mut self, log: &str) {
        if self.program_start.is_none() && log.contains("HYPEMAN-PROGRAM-START ") {
            self.program_start = Some(self.started.elapsed());
        }
    }

    /// Wait for a serial line containing `needle` (bounded by the hang timeout).
    pub fn wait_line(&mut self, needle: &str) -> Result<String> {
        let deadline = self.started + HANG_TIMEOUT;
        loop {
            // Whether QEMU still runs is read before the log, so a line written
            // just before it exited is still seen.
            let alive = self.vm.running();
            let log = self.read_log();
            self.note_program_start(&log);
            if let Some(l) = console_lines(&log).find(|l| l.contains(needle)) {
                return Ok(l.to_string());
            }
            if Instant::now() > deadline || !alive {
                bail!("no line containing {needle:?}; serial log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Ask QEMU for an ACPI power-down (QMP `system_powerdown`): init sends the
    /// app SIGTERM.
    pub fn request_power_down(&self) -> Result<()> {
        Ok(self.vm.power_down()?)
    }

    /// Press Ctrl-Alt-Del on the guest's keyboard.
    pub fn ctrl_alt_del(&self) -> Result<()> {
        Ok(self.vm.ctrl_alt_del()?)
    }

    /// Host pid of QEMU.
    pub fn qemu_pid(&self) -> Option<u32> {
        self.vm.pid()
    }

    /// QMP `quit`, then wait (≤ 10 s) for QEMU to end. Returns how long QEMU
    /// took to exit after `quit`.
    pub fn quit(mut self) -> Result<Duration> {
        let asked = Instant::now();
        self.vm.quit()?;
        match self.vm.wait_timeout(Duration::from_secs(10))? {
            Some(_) => Ok(asked.elapsed()),
            None => bail!("QEMU still runs 10 s after QMP quit"),
        }
    }

    /// Wait for QEMU to exit by itself (the guest powers off), bounded.
    pub fn finish(mut self) -> Result<Outcome> {
        let deadline = self.started + HANG_TIMEOUT;
        loop {
            let log = self.read_log();
            self.note_program_start(&log);
            if self.vm.wait_timeout(Duration::from_millis(10))?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                self.vm.kill();
                bail!("VM hung for {HANG_TIMEOUT:?}; serial log:\n{log}");
            }
        }
        Ok(self.outcome())
    }

    /// The graceful stop a host performs (agent Shutdown, wait, power
    /// button, SIGKILL), then the outcome. The agent is dialed over this
    /// guest's vsock when it has one.
    pub fn stop(mut self, mut opts: StopOptions) -> (StopReport, Outcome) {
        if opts.agent.is_none() {
            opts.agent = self.agent_dialer();
        }
        let report = host_sysmgr::stop::stop(&mut self.vm, &opts);
        (report, self.outcome())
    }

    /// How to reach this guest's agent (hybrid vsock), if it has vsock.
    pub fn agent_dialer(&self) -> Option<Dialer> {
        self.vsock_uds.as_ref().map(|uds| Dialer::HybridVsock {
            uds: uds.clone(),
            port: guest_proto::AGENT_PORT,
        })
    }

    fn outcome(mut self) -> Outcome {
        let to_exit = self.started.elapsed();
        let bytes = std::fs::read(&self.serial).unwrap_or_default();
        let log = String::from_utf8_lossy(&bytes).into_owned();
        self.note_program_start(&log);
        record_times(&self.name, self.program_start, to_exit);
        Outcome {
            exit: scan_tail(&bytes).exit,
            log,
            to_program_start: self.program_start,
            to_exit,
            overlay_img: self.overlay_img.clone(),
            work: self.work,
        }
    }
}

/// Feed a log through the streaming parser: every sentinel, in order.
pub fn sentinels(log: &[u8]) -> Vec<Sentinel> {
    let mut s = SentinelStream::new();
    let mut all = s.push(log);
    all.extend(s.finish());
    all
}

fn record_times(name: &str, start: Option<Duration>, exit: Duration) {
    let ms = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1000.0);
    let line = format!(
        "{name}\t{}\t{}\n",
        start.map(ms).unwrap_or_else(|| "-".into()),
        ms(exit)
    );
    if let Ok(dir) = report_dir() {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("vm-boot-times.tsv"));
        if let Ok(mut f) = file {
            let _ = f.write_all(line.as_bytes());
        }
    }
}
