//! The boot path: a plan held as data ([`steps`]: pure functions of the
//! options, the config and what init knows; mounts in [`plan`]) applied step
//! by step through the [`Sys`] seam, then exec mode ([`exec_mode`]).

pub mod agent;
pub mod ca;
pub mod error;
pub mod exec_mode;
pub mod gpu;
pub mod kernel_headers;
pub mod network;
pub mod plan;
pub mod report;
pub mod steps;
pub mod system;
pub mod systemd_mode;
pub mod volumes;

#[cfg(test)]
mod tests;

use crate::sys::{Mount, ReadOff, Sys, RAMFS_MAGIC, TMPFS_MAGIC};
pub use error::{BootError, Failed};
use guest_contract::cmdline::Options;
use guest_contract::config::{self, Config};
use guest_contract::{fsdetect, modindex};
use plan::{BootKind, Layout, MountStep};
use report::Timing;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// What init was started with.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// A command line to use instead of /proc/cmdline.
    pub cmdline_override: Option<String>,
    /// Test mode (namespace tests): host-safety guards on, test triggers honoured.
    pub test_mode: bool,
    /// CLOCK_BOOTTIME at init's first instruction.
    pub start: Duration,
}

/// Environment variable that puts init in test mode: its value replaces
/// /proc/cmdline. Namespace tests use it so init never sees the host's cmdline.
pub const CMDLINE_ENV: &str = "HYPEMAN_INIT_CMDLINE";

impl Inputs {
    /// Read the inputs from the process environment.
    pub fn from_env(start: Duration) -> Inputs {
        let cmdline_override = std::env::var(CMDLINE_ENV).ok();
        Inputs {
            test_mode: cmdline_override.is_some(),
            cmdline_override,
            start,
        }
    }
}

/// The config disk's outcome: mounted (or the mount and its error),
/// config.json's path, the file's contents.
pub type ConfigDisk = (
    Result<(), (String, std::io::Error)>,
    String,
    Option<std::io::Result<Vec<u8>>>,
);

/// State carried from phase to phase.
pub struct Ctx {
    /// Options from the command line.
    pub opts: Options,
    /// Initramfs or direct boot.
    pub kind: BootKind,
    /// Staging paths.
    pub layout: Layout,
    /// Phase timings.
    pub timing: Timing,
    /// Whether test-only triggers are honoured.
    pub test_mode: bool,
    /// The command line came from [`Inputs`], not /proc/cmdline.
    pub cmdline_given: bool,
    /// Whether the agent was copied into the new root.
    pub agent_installed: bool,
    /// The agent in the initramfs, opened before the switch and copied
    /// into the new root after it (so image symlinks resolve inside the image).
    pub agent_file: Option<std::os::fd::OwnedFd>,
    /// Whether the new root is `/` already.
    pub switched: bool,
    /// Mount points to remount read-only at power-off, in order: the overlay
    /// root, then the overlay disk (through an fd path).
    pub shutdown_ro: Vec<String>,
    /// The overlay disk's mount point, held open: after the switch it is
    /// reached only through this descriptor (`/proc/self/fd/N`).
    pub overlay_dir: Option<std::os::fd::OwnedFd>,
    /// Signals and power-button presses that arrived while a boot step
    /// waited for a child of its own; the supervisor serves them first.
    pub deferred: Vec<crate::sys::Event>,
    /// CPU time PID 1 had used when init started (the kernel's own boot work
    /// runs in the same task before it executes /init).
    pub cpu_start: Duration,
    /// The initramfs's kernel-headers tarball, opened before the switch
    /// (the initramfs is freed then) for the headers worker.
    pub headers: Option<std::os::fd::OwnedFd>,
    /// The initramfs's root, opened before the switch and freed after it.
    pub initramfs: Option<std::os::fd::OwnedFd>,
    /// The config disk, from the disks step: its mount (or what failed),
    /// config.json's path, and the file (when the disk mounted).
    pub config_disk: Option<ConfigDisk>,
}

impl Ctx {
    /// Charge the time and CPU since the last mark to `phase`.
    pub fn mark<S: Sys>(&mut self, sys: &S, phase: &'static str) {
        self.timing.mark(phase, sys.boottime(), sys.cpu_time());
    }
}

/// Run the whole boot; returns only after `power_off` returned (fake, or not PID 1).
pub fn run<S: Sys>(sys: &mut S, inputs: &Inputs) -> (i32, String) {
    let cpu_start = sys.cpu_time();
    let kind = match sys.statfs_magic("/") {
        Ok(RAMFS_MAGIC) | Ok(TMPFS_MAGIC) => BootKind::Initramfs,
        _ => BootKind::Direct,
    };
    let mut ctx = Ctx {
        opts: Options::parse(inputs.cmdline_override.as_deref().unwrap_or("")),
        kind,
        layout: Layout::new(kind),
        timing: Timing::new(inputs.start, cpu_start),
        test_mode: inputs.test_mode,
        cmdline_given: inputs.cmdline_override.is_some(),
        agent_installed: false,
        agent_file: None,
        switched: false,
        shutdown_ro: Vec::new(),
        overlay_dir: None,
        deferred: Vec::new(),
        headers: None,
        initramfs: None,
        config_disk: None,
        cpu_start,
    };
    if sys.getpid() != 1 {
        // Never mount over a running system's /proc, /dev or /sys.
        let e = BootError::Internal(Failed::msg(
            "init must run as PID 1 (of a VM or of a PID namespace)",
        ));
        return report::fail(sys, &ctx, &e);
    }
    match boot(sys, &mut ctx) {
        Ok(config) if config.init_mode() == config::InitMode::Systemd => {
            systemd_mode::run(sys, &mut ctx, &config)
        }
        Ok(config) => exec_mode::run(sys, &mut ctx, &config),
        Err(e) => report::fail(sys, &ctx, &e),
    }
}

fn boot<S: Sys>(sys: &mut S, ctx: &mut Ctx) -> Result<Config, BootError> {
    for step in steps::before_config() {
        run_step(sys, ctx, &Config::default(), &step)?;
    }
    let config = read_config(sys, ctx)?;
    ctx.mark(sys, "config");
    let facts = steps::Facts {
        test_mode: ctx.test_mode,
        headers_tarball: ctx.kind == BootKind::Initramfs
            && config.skip_kernel_headers != Some(true)
            && sys.exists(crate::headers::SOURCE),
        gpu: gpu::wanted(sys, ctx),
    };
    for step in steps::after_config(&ctx.opts, &config, facts)? {
        run_step(sys, ctx, &config, &step)?;
    }
    Ok(config)
}

/// One step, then its mark in the timing line.
fn run_step<S: Sys>(
    sys: &mut S,
    ctx: &mut Ctx,
    config: &Config,
    step: &steps::Step,
) -> Result<(), BootError> {
    steps::apply(sys, ctx, config, step)?;
    if let Some(phase) = step.timing() {
        ctx.mark(sys, phase);
    }
    Ok(())
}

/// Signals, Ctrl-Alt-Del, the early mounts, then the command line (from
/// /proc/cmdline unless test mode gave one) and test mode's guards.
fn early<S: Sys>(sys: &mut S, ctx: &mut Ctx) -> Result<(), BootError> {
    if let Err(e) = sys.setup_signals() {
        return Err(BootError::EarlyMount(Failed::new("signal setup", e)));
    }
    sys.disable_ctrl_alt_del();
    apply_mounts(sys, &plan::early_mounts(), BootError::EarlyMount, "mounts")?;
    if !ctx.cmdline_given {
        let raw = sys
            .read_file("/proc/cmdline", 64 * 1024)
            .unwrap_or_default();
        ctx.opts = Options::parse(&String::from_utf8_lossy(&raw));
    }
    for word in &ctx.opts.unknown {
        report::info(sys, "cmdline", &format!("unknown option {word} ignored"));
    }
    if ctx.test_mode {
        test_mode_guards(ctx)?;
    }
    Ok(())
}

/// Test mode (namespace tests on a host): never the host's console, modules or
/// disks. Every device must be named on the test command line.
fn test_mode_guards(ctx: &mut Ctx) -> Result<(), BootError> {
    ctx.opts.console_inherit = true;
    ctx.opts.load_modules = false;
    let [root, overlay, config] = ctx.opts.explicit;
    if !(overlay && config && (root || ctx.kind == BootKind::Direct)) {
        let need =
            "test mode needs hypeman.root (unless direct boot), hypeman.overlay and hypeman.config";
        return Err(BootError::Devices(Failed::msg(need)));
    }
    if ctx.opts.test_panic {
        panic!("test-only panic trigger (hypeman.test_panic)");
    }
    Ok(())
}

/// Apply mount steps, creating each mount point first.
pub fn apply_mounts<S: Sys>(
    sys: &mut S,
    steps: &[MountStep],
    failure: fn(Failed) -> BootError,
    phase: &str,
) -> Result<(), BootError> {
    for s in steps {
        let _ = sys.mkdir_all(&s.mount.target);
        if let Err(e) = sys.mount(&s.mount) {
            let what = format!("mount {} on {}", describe(&s.mount), s.mount.target);
            if s.fatal {
                return Err(failure(Failed::new(what, e)));
            }
            report::error(sys, phase, &format!("{what}: {e}"));
        }
    }
    Ok(())
}

fn describe(m: &Mount) -> &str {
    if m.fstype.is_empty() {
        &m.source
    } else {
        &m.fstype
    }
}

fn load_modules<S: Sys>(sys: &mut S, ctx: &Ctx) {
    // In direct boot /lib/modules is the image's tree, not what we carry.
    if !ctx.opts.load_modules || ctx.kind == BootKind::Direct {
        return;
    }
    let dir = format!("/lib/modules/{}", sys.kernel_release());
    let Some(index) = module_index(sys, &dir) else {
        return;
    };
    let mut loaded = 0;
    for rel in index.load_order() {
        // The GPU step loads the NVIDIA stack, with its parameters, when a GPU is there.
        if guest_contract::gpu::DRIVER_STACK
            .iter()
            .any(|(m, _)| *m == modindex::module_name(&rel))
        {
            continue;
        }
        match sys.load_module(&format!("{dir}/{rel}"), "") {
            Ok(()) => loaded += 1,
            Err(e) => report::error(
                sys,
                "modules",
                &format!("{}: {e}", modindex::module_name(&rel)),
            ),
        }
    }
    report::info(
        sys,
        "modules",
        &format!("loaded {loaded} modules from {dir}"),
    );
}

/// The module index of a `lib/modules/<release>` folder (`modules.dep`,
/// `.softdep`, `.alias`), or `None` when it has no `modules.dep`.
pub fn module_index<S: Sys>(sys: &S, dir: &str) -> Option<modindex::Index> {
    let read = |name: &str| {
        let bytes = sys
            .read_file(&format!("{dir}/{name}"), 4 << 20)
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let dep = read("modules.dep");
    if dep.is_empty() {
        return None;
    }
    Some(modindex::Index::parse(
        &dep,
        &read("modules.softdep"),
        &read("modules.alias"),
    ))
}

/// Candidates after an explicit `console=`.
const CONSOLES: [&str; 3] = ["/dev/hvc0", "/dev/ttyAMA0", "/dev/ttyS0"];

fn select_console<S: Sys>(sys: &mut S, opts: &Options) {
    if opts.console_inherit {
        return;
    }
    let chosen = opts.console.iter().map(String::as_str).chain(CONSOLES);
    for dev in chosen {
        if sys.exists(dev) && sys.select_console(dev).is_ok() {
            return;
        }
    }
}

fn wait_devices<S: Sys>(sys: &mut S, ctx: &Ctx) -> Result<(), BootError> {
    let devs = plan::devices(&ctx.opts, ctx.kind);
    match sys.wait_for_paths(&devs, ctx.opts.device_timeout) {
        Ok(()) => Ok(()),
        Err(missing) => Err(BootError::Devices(Failed::msg(format!(
            "{missing} did not appear within {} ms",
            ctx.opts.device_timeout.as_millis()
        )))),
    }
}

/// The root disk's mount: its filesystem read from its superblock.
fn root_mount<S: Sys>(sys: &mut S, ctx: &Ctx) -> Result<Mount, BootError> {
    let lower = ctx.layout.lower();
    Ok(match ctx.kind {
        BootKind::Direct => Mount::bind("/", &lower, false),
        BootKind::Initramfs => {
            let dev = &ctx.opts.root_dev;
            let head = sys.read_head(dev, fsdetect::HEAD_BYTES);
            let head =
                head.map_err(|e| BootError::RootDisk(Failed::new(format!("read {dev}"), e)))?;
            let Some(fs) = fsdetect::detect(&head) else {
                return Err(BootError::RootDisk(Failed::msg(format!(
                    "{dev}: unknown filesystem (no erofs, ext4 or squashfs superblock)"
                ))));
            };
            let ro = crate::sys::MountFlags {
                read_only: true,
                ..Default::default()
            };
            Mount::fs(dev, &lower, fs.name(), ro, fs.ro_data())
        }
    })
}

/// Whether config.json comes from the config disk.
fn config_on_disk(opts: &Options) -> bool {
    opts.config_vsock.is_none() && !opts.config_initrd
}

/// The root, the overlay disk and the config disk are mounted at once (each
/// mount waits on its disk's reads; together they wait once), then the
/// overlay's folders and overlayfs. The config disk's outcome is kept for
/// the config step, so a root or overlay failure is reported first.
fn mount_disks<S: Sys>(sys: &mut S, ctx: &mut Ctx) -> Result<(), BootError> {
    let l = ctx.layout.clone();
    let root = root_mount(sys, ctx)?;
    let upper = plan::overlay_mount(&ctx.opts, &l);
    let mut mounts = vec![root, upper];
    let mut read = None;
    if config_on_disk(&ctx.opts) {
        let m = plan::config_mount(&ctx.opts, &l);
        read = Some(ReadOff {
            mount: mounts.len(),
            path: format!("{}/config.json", m.target),
            // One byte over the limit, so the parser refuses it with the limit named.
            limit: config::MAX_CONFIG_BYTES + 1,
        });
        mounts.push(m);
    }
    for m in &mounts {
        let _ = sys.mkdir_all(&m.target);
    }
    let (results, file) = sys.mount_concurrently(&mounts, read.as_ref());
    let mut results = results.into_iter();
    let mut next = || {
        results
            .next()
            .unwrap_or_else(|| Err(std::io::Error::other("not mounted")))
    };
    let what = |m: &Mount| format!("mount {} on {}", m.source, m.target);
    next().map_err(|e| BootError::RootDisk(Failed::new(what(&mounts[0]), e)))?;
    let upper_done = next();
    if let Some(r) = read {
        let mounted = next().map_err(|e| (what(&mounts[r.mount]), e));
        ctx.config_disk = Some((mounted, r.path, file));
    }
    upper_done.map_err(|e| BootError::Overlay(Failed::new(what(&mounts[1]), e)))?;
    let l = &l;
    let overlayfs = plan::overlayfs_mount(l);
    let dirs = [l.overlay() + "/upper", l.overlay() + "/work", l.newroot()];
    let failed = |what: String, e| BootError::Overlay(Failed::new(what, e));
    for d in &dirs {
        sys.mkdir_all(d)
            .map_err(|e| failed(format!("mkdir {d}"), e))?;
    }
    sys.mount(&overlayfs)
        .map_err(|e| failed(format!("mount overlay on {}", overlayfs.target), e))?;
    ctx.shutdown_ro.push(l.newroot());
    if ctx.opts.overlay_dev.is_some() {
        // Reachable after the switch only through an fd: remounted read-only at
        // power-off so the disk is clean.
        if let Ok(fd) = sys.open_dir(&l.overlay()) {
            ctx.shutdown_ro
                .push(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            ctx.overlay_dir = Some(fd);
        }
    }
    report::register_teardown(&ctx.shutdown_ro);
    Ok(())
}

fn read_config<S: Sys>(sys: &mut S, ctx: &mut Ctx) -> Result<Config, BootError> {
    let (path, bytes) = if let Some(port) = ctx.opts.config_vsock {
        config_from_vsock(sys, ctx, port)?
    } else if ctx.opts.config_initrd {
        config_from_initrd(sys, ctx)?
    } else {
        config_from_disk(ctx)?
    };
    let parsed = config::parse_config(&bytes)
        .map_err(|e| BootError::ConfigInvalid(Failed::new(path.clone(), e)))?;
    for key in &parsed.unknown_keys {
        report::info(
            sys,
            "config",
            &format!("warning: unknown key {key:?} ignored"),
        );
    }
    report_unsupported(sys, &parsed.config);
    Ok(parsed.config)
}

/// `hypeman.config=initrd`: `/config.json` of the initramfs (read before
/// the switch; the initramfs, and the file with it, is freed after it).
fn config_from_initrd<S: Sys>(sys: &mut S, ctx: &Ctx) -> Result<(String, Vec<u8>), BootError> {
    let path = plan::INITRD_CONFIG.to_string();
    if ctx.kind != BootKind::Initramfs {
        let why = std::io::Error::other("hypeman.config=initrd needs an initramfs");
        return Err(BootError::ConfigDisk(Failed::new(
            format!("read {path}"),
            why,
        )));
    }
    // One byte over the limit, so the parser refuses it with the limit named.
    let bytes = sys
        .read_regular(&path, config::MAX_CONFIG_BYTES + 1)
        .map_err(|e| BootError::ConfigDisk(Failed::new(format!("read {path}"), e)))?;
    report::info(
        sys,
        "config",
        "config.json from the initramfs (hypeman.config=initrd)",
    );
    Ok((path, bytes))
}

/// `hypeman.config=vsock:<port>`: what the host sends on that port (CID 2),
/// within the device timeout.
fn config_from_vsock<S: Sys>(
    sys: &mut S,
    ctx: &Ctx,
    port: u32,
) -> Result<(String, Vec<u8>), BootError> {
    let what = format!("vsock 2:{port}");
    let bytes = sys
        .vsock_fetch(port, config::MAX_CONFIG_BYTES + 1, ctx.opts.device_timeout)
        .map_err(|e| {
            BootError::ConfigDisk(Failed::new(format!("read config.json from {what}"), e))
        })?;
    report::info(
        sys,
        "config",
        &format!("config.json from the host over {what}"),
    );
    Ok((what, bytes))
}

/// config.json, read off the config disk by the disks step (mounted with
/// the other disks, read and detached on its own thread).
fn config_from_disk(ctx: &mut Ctx) -> Result<(String, Vec<u8>), BootError> {
    let Some((mounted, path, file)) = ctx.config_disk.take() else {
        let e = Failed::msg("the config disk was not mounted with the other disks");
        return Err(BootError::Internal(e));
    };
    mounted.map_err(|(what, e)| BootError::ConfigDisk(Failed::new(what, e)))?;
    let bytes = file.unwrap_or_else(|| Err(std::io::Error::other("not read")));
    let bytes = bytes.map_err(|e| BootError::ConfigDisk(Failed::new(format!("read {path}"), e)))?;
    Ok((path, bytes))
}

/// Features of the contract this init does not serve yet: one ERROR line each,
/// so nothing is silently dropped.
fn report_unsupported<S: Sys>(sys: &mut S, c: &Config) {
    if c.enable_rosetta == Some(true) && cfg!(target_arch = "x86_64") {
        let msg = "enable_rosetta: not applicable on x86_64 (Rosetta serves Apple-silicon hosts); ignored";
        report::info(sys, "config", msg);
    }
    let mut missing = Vec::new();
    let superset = [("kernel_modules", c.kernel_modules.is_some())];
    missing.extend(superset.iter().filter(|(_, set)| *set).map(|(k, _)| *k));
    for m in missing {
        let msg = format!("{m} is not supported by this init yet; ignored");
        report::error(sys, "config", &msg);
    }
}

fn prepare_newroot<S: Sys>(sys: &mut S, ctx: &mut Ctx, config: &Config) -> Result<(), BootError> {
    let newroot = ctx.layout.newroot();
    for (target, link) in plan::DEV_LINKS {
        let _ = sys.symlink(target, link);
    }
    let cgroup = sys.exists("/sys/fs/cgroup/cgroup.controllers");
    // A mount point that is a symlink in the image would be resolved against
    // the initramfs: make it a real directory on the overlay instead.
    for dir in ["dev", "proc", "sys", "run"] {
        let path = format!("{newroot}/{dir}");
        if let Ok(true) = sys.replace_symlink_with_dir(&path) {
            report::info(
                sys,
                "newroot",
                &format!("/{dir} was a symlink in the image; made it a directory"),
            );
        }
    }
    apply_mounts(
        sys,
        &plan::newroot_mounts(&newroot, cgroup),
        BootError::SwitchRoot,
        "newroot",
    )?;
    if !config.skip_guest_agent() {
        ctx.agent_file = open_agent(sys);
    }
    Ok(())
}

/// The agent in the initramfs; a missing agent is one ERROR line.
fn open_agent<S: Sys>(sys: &mut S) -> Option<std::os::fd::OwnedFd> {
    match sys.open_read(plan::AGENT_SOURCE) {
        Ok(fd) => Some(fd),
        Err(e) => {
            let msg = format!("{}: {e}; booting without the agent", plan::AGENT_SOURCE);
            report::error(sys, "agent", &msg);
            None
        }
    }
}

/// Frees the initramfs (opened before the switch) in this process: one
/// line, and 0, or 1 when it could not be read.
pub fn release_initramfs<S: Sys>(sys: &mut S, root: &std::os::fd::OwnedFd) -> i32 {
    match sys.free_initramfs(root) {
        Ok(bytes) => {
            let msg = format!("freed {} KiB of initramfs", bytes / 1024);
            report::info(sys, "switch", &msg);
            0
        }
        Err(e) => {
            report::error(sys, "switch", &format!("initramfs not freed: {e}"));
            1
        }
    }
}

/// Frees the initramfs in a child forked after the app, so the app never
/// waits for it; in PID 1 itself when no child can be forked.
pub fn release_initramfs_later<S: Sys>(sys: &mut S, ctx: &mut Ctx) {
    let Some(root) = ctx.initramfs.take() else {
        return;
    };
    if let Err(e) = sys.start_initramfs_release(&root) {
        let msg = format!("initramfs release worker: {e}; freeing it here");
        report::error(sys, "switch", &msg);
        release_initramfs(sys, &root);
    }
}

/// Copy the agent into the (now current) root.
fn install_agent<S: Sys>(sys: &mut S, agent: &std::os::fd::OwnedFd) -> bool {
    let written = sys
        .mkdir_all("/opt/hypeman")
        .and_then(|()| sys.copy_fd(agent, plan::AGENT_TARGET, 0o755).map(drop));
    if let Err(e) = written {
        let msg = format!(
            "install {}: {e}; booting without the agent",
            plan::AGENT_TARGET
        );
        report::error(sys, "agent", &msg);
        return false;
    }
    true
}

fn switch_root<S: Sys>(sys: &mut S, ctx: &mut Ctx) -> Result<(), BootError> {
    if ctx.kind == BootKind::Initramfs {
        // Freed after the switch (after the app started, in exec mode):
        // deleting megabytes of page cache is init's costliest step.
        match sys.open_initramfs() {
            Ok(root) => ctx.initramfs = Some(root),
            Err(e) => report::error(sys, "switch", &format!("initramfs not freed: {e}")),
        }
    }
    let newroot = ctx.layout.newroot();
    sys.switch_root(&newroot)
        .map_err(|e| BootError::SwitchRoot(Failed::new(format!("move {newroot} onto /"), e)))?;
    ctx.switched = true;
    if let Some(root) = ctx.shutdown_ro.first_mut() {
        *root = "/".into();
    }
    report::register_teardown(&ctx.shutdown_ro);
    if let Some(agent) = ctx.agent_file.take() {
        ctx.agent_installed = install_agent(sys, &agent);
    }
    Ok(())
}
