//! The boot benchmark (`boot-bench`): the same kernel (the `kernel/` build,
//! every driver built in), disks and config booted under several PID 1s,
//! one VM at a time, interleaved round by round:
//!
//! - `floor`: a static `/init` that prints its CLOCK_BOOTTIME and powers off
//!   (`vm-helper` as PID 1) — what any init costs at least;
//! - `floor+payload`: the same, with an initramfs as large as ours (our
//!   image's bytes in a file beside it) — what the kernel charges for the
//!   bytes we ship before any init runs, so `app − floor+payload` is init's
//!   own part;
//! - `busybox-sh`: the baseline, a busybox shell init doing what hypeman's
//!   early shell init did (`tests-vm/bench/busybox-init.sh`);
//! - `init`: our init in exec mode, the app only; `init+net`: with eth0;
//!   `init+agent`: with the agent over vsock, awaited before the app;
//!   `init+2vol`: with two ext4 volumes;
//! - `cfg-initrd`, `cfg-vsock`: the app only, with `config.json` from an
//!   archive appended to the initramfs or from the host over vsock instead
//!   of the config disk.
//!
//! Every variant's app is `vm-helper stamp app`, which prints the guest's
//! CLOCK_BOOTTIME when it runs and the resident sets of PID 1 and of the
//! agent at that moment.
//! Guest times are read from the guest's own clock; with
//! [`Accel::Icount`] the guest clock is a function of the instructions run,
//! so a figure that waits on no I/O repeats to the microsecond.

use crate::artifacts::{release_binaries, target_dir, workspace_root};
use crate::guest::{ConfigDisk, Guest, Outcome};
use crate::initramfs::Variant;
use crate::kernel::Kernel;
use anyhow::{bail, Context, Result};
use guest_contract::config::VolumeMount;
use host_sysmgr::disks;
use host_sysmgr::vmm::{Accel, Disk, Nic};
use initrd_builder::cpio::{Archive, Entry};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The PID 1 under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A static init that prints its clock and powers off.
    Floor,
    /// The busybox shell baseline.
    BusyboxSh,
    /// Our init, with the steps named.
    Init {
        /// eth0 configured.
        net: bool,
        /// The agent started and awaited (vsock attached).
        agent: bool,
        /// Two ext4 volumes.
        volumes: bool,
        /// Where config.json comes from.
        config: Via,
    },
}

/// Where init reads config.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The config disk (vdc).
    Disk,
    /// An archive appended to the initramfs.
    Initrd,
    /// The host, over vsock.
    Vsock,
}

const fn ours(net: bool, agent: bool, volumes: bool, config: Via) -> Kind {
    Kind::Init {
        net,
        agent,
        volumes,
        config,
    }
}

/// Every variant (name, PID 1), in table order.
pub const VARIANTS: [(&str, Kind); 9] = [
    ("floor", Kind::Floor),
    ("floor+payload", Kind::Floor),
    ("busybox-sh", Kind::BusyboxSh),
    ("init", ours(false, false, false, Via::Disk)),
    ("init+net", ours(true, false, false, Via::Disk)),
    ("init+agent", ours(false, true, false, Via::Disk)),
    ("init+2vol", ours(false, false, true, Via::Disk)),
    ("cfg-initrd", ours(false, false, false, Via::Initrd)),
    ("cfg-vsock", ours(false, false, false, Via::Vsock)),
];

/// The vsock port the config is served on (as `host-sysmgr run`).
const CONFIG_PORT: u32 = host_sysmgr::disks::CONFIG_VSOCK_PORT;

/// Where the app lives in the image.
const APP: &str = "/usr/local/bin/vm-helper";

/// What one boot measured (guest times in ms of CLOCK_BOOTTIME).
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// PID 1's first instruction (init), or its first stamp (floor, shell).
    pub first: f64,
    /// The agent ready (init+agent).
    pub agent_ready: Option<f64>,
    /// The app's first output (for the floor: its own stamp).
    pub app: f64,
    /// init's own phases (ms), from its timing line.
    pub phases: BTreeMap<String, f64>,
    /// init's CPU time per phase (ms), from its `cpu by phase` line.
    pub cpu_phases: BTreeMap<String, f64>,
    /// Host: QEMU spawn → PROGRAM-START seen (ms).
    pub host_program_start: Option<f64>,
    /// Host: QEMU spawn → QEMU exit (ms).
    pub host_exit: f64,
    /// Resident sets of PID 1 and of the agent (kB) when the app started.
    pub rss_kb: (u64, u64),
}

/// A prepared variant.
pub struct Prepared {
    /// Its name.
    pub name: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// The guest to boot.
    pub guest: Guest,
    /// The initramfs's size in bytes.
    pub initrd_bytes: u64,
    _work: tempfile::TempDir,
}

/// The kernel the benchmark needs: the `kernel/` build.
pub fn kernel() -> Result<Kernel> {
    crate::kernel::project_build()
        .context("boot-bench needs the kernel/ build in .cache/kernel-build (scripts/setup.sh)")
}

/// Builds the guests of `names` (every variant when empty) for `accel`.
pub fn prepare(names: &[&str], accel: Accel) -> Result<Vec<Prepared>> {
    let kernel = kernel()?;
    let helper = std::fs::read(release_binaries()?.helper)?;
    VARIANTS
        .iter()
        .filter(|(n, _)| names.is_empty() || names.contains(n))
        .map(|(name, kind)| prepare_one(name, *kind, &kernel, &helper, accel))
        .collect()
}

fn prepare_one(
    name: &'static str,
    kind: Kind,
    kernel: &Kernel,
    helper: &[u8],
    accel: Accel,
) -> Result<Prepared> {
    let work = tempfile::tempdir()?;
    let mut g = Guest::new(&format!("bench-{name}"), &[APP, "stamp", "app"])
        .with_config(|c| c.skip_guest_agent = Some(true));
    g.kernel = Some(kernel.clone());
    g.accel = accel;
    if std::env::var_os("BOOT_BENCH_KERNEL_LOG").is_some() {
        // Diagnosis: the kernel's own timestamped log in the kept logs.
        g.quiet_kernel = false;
        g.cmdline = "printk.time=1 initcall_debug".into();
    }
    g.image_files = vec![(APP.into(), helper.to_vec(), 0o755)];
    g.initrd = Variant {
        compression: "none".into(),
        extra: Vec::new(),
    };
    match kind {
        Kind::Floor if name == "floor" => g.initrd_image = Some(floor_initrd(helper, None)?),
        Kind::Floor => {
            let ours = std::fs::read(crate::initramfs::image(kernel, &g.initrd)?)?;
            g.initrd_image = Some(floor_initrd(helper, Some(&ours))?);
        }
        Kind::BusyboxSh => g.initrd_image = Some(shell_initrd(helper)?),
        Kind::Init {
            net,
            agent,
            volumes,
            config,
        } => {
            if net {
                g = with_network(g);
            }
            if agent {
                g = g.with_config(|c| c.skip_guest_agent = None);
                g.vsock = true;
            }
            if volumes {
                g = with_volumes(g, work.path())?;
            }
            // Last: it takes the finished config off the disk.
            g = with_config_via(g, config, kernel, work.path())?;
        }
    }
    let image = match &g.initrd_image {
        Some(p) => p.clone(),
        None => crate::initramfs::image(kernel, &g.initrd)?,
    };
    Ok(Prepared {
        name,
        kind,
        guest: g,
        initrd_bytes: std::fs::metadata(image)?.len(),
        _work: work,
    })
}

/// The config from the initramfs or over vsock instead of the disk.
fn with_config_via(mut g: Guest, via: Via, kernel: &Kernel, work: &Path) -> Result<Guest> {
    let ConfigDisk::Config(config) = &g.config else {
        return Ok(g);
    };
    let config = (**config).clone();
    match via {
        Via::Disk => return Ok(g),
        Via::Initrd => {
            let base = crate::initramfs::image(kernel, &g.initrd)?;
            let image = host_sysmgr::disks::initrd_with_config(&base, &config, work)?;
            g.initrd_image = Some(image);
            g.cmdline.push_str(" hypeman.config=initrd");
        }
        Via::Vsock => {
            g.vsock = true;
            g.cmdline
                .push_str(&format!(" hypeman.config=vsock:{CONFIG_PORT}"));
            g.served_config = Some(config.to_hypeman_json().into_bytes());
        }
    }
    g.config = ConfigDisk::Missing;
    Ok(g)
}

/// `g` with eth0 (a virtio NIC; 10.0.2.15/24 via 10.0.2.2, DNS 10.0.2.3).
pub fn with_network(g: Guest) -> Guest {
    let mut g = g.with_config(|c| {
        c.network_enabled = Some(true);
        c.guest_ip = Some("10.0.2.15".into());
        c.guest_cidr = Some(24);
        c.guest_gw = Some("10.0.2.2".into());
        c.guest_dns = Some("10.0.2.3".into());
    });
    g.nic = Some(Nic::default());
    g
}

/// `g` with a read-only and a read-write ext4 volume (vdd at /data, vde at
/// /state), their images made in `work`.
pub fn with_volumes(g: Guest, work: &Path) -> Result<Guest> {
    let (ro, rw) = (work.join("ro.img"), work.join("rw.img"));
    disks::overlay_disk(&ro, 16)?;
    disks::overlay_disk(&rw, 16)?;
    let volume = |dev: &str, path: &str, mode: &str| VolumeMount {
        device: dev.into(),
        path: path.into(),
        mode: Some(mode.into()),
        ..VolumeMount::default()
    };
    let vols = vec![
        volume("/dev/vdd", "/data", "ro"),
        volume("/dev/vde", "/state", "rw"),
    ];
    let mut g = g.with_config(|c| c.volume_mounts = Some(vols));
    g.extra_disks = vec![
        Disk {
            path: ro,
            read_only: true,
        },
        Disk {
            path: rw,
            read_only: false,
        },
    ];
    Ok(g)
}

/// An uncompressed newc image of `entries` plus /dev/console, written once.
fn write_initrd(name: &str, files: Vec<Entry>) -> Result<PathBuf> {
    let mut a = Archive::new();
    for d in ["/dev", "/proc", "/sys", "/run", "/tmp"] {
        a.add(Entry::dir(d, 0o755))?;
    }
    a.add(Entry::char_dev("/dev/console", 0o600, 5, 1))?;
    for f in files {
        a.add(f)?;
    }
    let path = target_dir()
        .join("vm-fixtures")
        .join(format!("bench-{name}.cpio"));
    std::fs::create_dir_all(path.parent().context("fixtures dir")?)?;
    std::fs::write(&path, a.write(0)?)?;
    Ok(path)
}

/// The floor's image; with `size_of`, padded to that image's size with its
/// bytes (`floor+payload`).
fn floor_initrd(helper: &[u8], size_of: Option<&[u8]>) -> Result<PathBuf> {
    let mut files = vec![Entry::file("/init", 0o755, helper.to_vec())];
    let Some(ours) = size_of else {
        return write_initrd("floor", files);
    };
    // The archive's own headers and /dev entries are ~1 KiB: pad to within it.
    let pad = ours.len().saturating_sub(helper.len() + 1024);
    files.push(Entry::file("/payload", 0o644, ours[..pad].to_vec()));
    write_initrd("floor+payload", files)
}

fn shell_initrd(helper: &[u8]) -> Result<PathBuf> {
    let script = std::fs::read(workspace_root().join("tests-vm/bench/busybox-init.sh"))?;
    let busybox = std::fs::read("/bin/busybox").context("/bin/busybox (busybox-static)")?;
    write_initrd(
        "busybox-sh",
        vec![
            Entry::file("/init", 0o755, script),
            Entry::dir("/bin", 0o755),
            Entry::file("/bin/busybox", 0o755, busybox),
            Entry::file("/vm-helper", 0o755, helper.to_vec()),
        ],
    )
}

/// `BENCH <label> t_us=<n> …` → (t in ms, init rss, agent rss).
fn stamp(log: &str, label: &str) -> Option<(f64, u64, u64)> {
    // Anywhere in a line: the firmware's last words may share the floor's.
    let pat = format!("BENCH {label} ");
    let line = log.lines().find_map(|l| l.split(&pat).nth(1))?;
    let field = |k: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))?
            .parse()
            .ok()
    };
    let t = field("t_us=")? as f64 / 1000.0;
    Some((
        t,
        field("init_rss_kb=").unwrap_or(0),
        field("agent_rss_kb=").unwrap_or(0),
    ))
}

/// init's timing line: (kernel start to init, phases in order).
fn timing(log: &str) -> Option<(f64, Vec<(String, f64)>)> {
    let line = log.lines().find(|l| l.contains("[hypeman-init:timing]"))?;
    let to_init: f64 = line
        .split("kernel start to init ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let mut phases = vec![(
        "execve".to_string(),
        line.split("] init ")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?,
    )];
    phases.extend(ms_words(line.split("): ").nth(1)?)?);
    Some((to_init, phases))
}

/// `a=1.000 ms b=2.000 ms` → [(a, 1.0), (b, 2.0)].
fn ms_words(text: &str) -> Option<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for word in text.split(" ms") {
        if let Some((k, v)) = word.trim().split_once('=') {
            out.push((k.to_string(), v.parse().ok()?));
        }
    }
    Some(out)
}

/// init's `cpu by phase: …` line.
fn cpu_phases(log: &str) -> Option<Vec<(String, f64)>> {
    ms_words(
        log.split("[hypeman-init:timing] cpu by phase: ")
            .nth(1)?
            .lines()
            .next()?,
    )
}

/// Reads one boot's outcome.
pub fn sample(kind: Kind, out: &Outcome) -> Result<Sample> {
    let mut s = Sample {
        host_program_start: out.to_program_start.map(|d| d.as_secs_f64() * 1000.0),
        host_exit: out.to_exit.as_secs_f64() * 1000.0,
        ..Sample::default()
    };
    let app_label = if kind == Kind::Floor { "floor" } else { "app" };
    let (app, init_rss, agent_rss) =
        stamp(&out.log, app_label).with_context(|| format!("no BENCH {app_label} line"))?;
    s.app = app;
    s.rss_kb = (init_rss, agent_rss);
    match kind {
        Kind::Floor => s.first = app,
        Kind::BusyboxSh => s.first = stamp(&out.log, "init").context("no BENCH init line")?.0,
        Kind::Init { agent, .. } => {
            let (to_init, phases) = timing(&out.log).context("no timing line")?;
            s.first = to_init;
            if agent {
                let before: f64 = phases
                    .iter()
                    .skip(1)
                    .take_while(|(k, _)| k != "agent")
                    .map(|(_, v)| v)
                    .sum();
                let own = phases.iter().find(|(k, _)| k == "agent").map(|(_, v)| *v);
                s.agent_ready = own.map(|a| to_init + before + a);
            }
            s.phases = phases.into_iter().collect();
            s.cpu_phases = cpu_phases(&out.log)
                .context("no cpu by phase line")?
                .into_iter()
                .collect();
        }
    }
    Ok(s)
}

/// Boots every prepared variant `rounds` times, interleaved (round by
/// round), after `warmup` rounds that are not kept.
pub fn measure(prepared: &[Prepared], warmup: usize, rounds: usize) -> Result<Vec<Vec<Sample>>> {
    let mut all = vec![Vec::new(); prepared.len()];
    for round in 0..warmup + rounds {
        for (i, p) in prepared.iter().enumerate() {
            let out = p.guest.run()?;
            keep_log(p.name, round, &out.log)?;
            let s = sample(p.kind, &out)
                .with_context(|| format!("{} (round {round}):\n{}", p.name, out.log))?;
            if out.exit.as_ref().map(|e| e.0) != Some(0) && p.kind != Kind::Floor {
                bail!("{}: the app did not exit 0:\n{}", p.name, out.log);
            }
            if round >= warmup {
                all[i].push(s);
            }
        }
    }
    Ok(all)
}

/// Each boot's serial log, kept as `target/reports/boot-bench/<variant>-<round>.log`.
fn keep_log(name: &str, round: usize, log: &str) -> Result<()> {
    let dir = crate::artifacts::report_dir()?.join("boot-bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("{name}-{round}.log")), log)?;
    Ok(())
}

/// The median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `median [min–max]` of one figure over the samples.
pub fn spread(samples: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> (f64, f64, f64) {
    let v: Vec<f64> = samples.iter().filter_map(f).collect();
    let min = v.iter().copied().fold(f64::NAN, f64::min);
    let max = v.iter().copied().fold(f64::NAN, f64::max);
    (median(&v), min, max)
}

fn cell(v: (f64, f64, f64)) -> String {
    match v.0.is_nan() {
        true => "-".into(),
        false => format!("{:.1} [{:.1}–{:.1}]", v.0, v.1, v.2),
    }
}

/// The main table: one row per variant, medians [min–max] in ms, then the
/// overhead over the floor and the ratio ours / baseline, from one run.
pub fn table(prepared: &[Prepared], samples: &[Vec<Sample>]) -> String {
    let mut out = String::from(
        "| variant | initramfs bytes | PID 1 starts | agent ready | app's first output | PID 1 → app | app − floor | app − floor+payload | host: spawn→PROGRAM-START | host: spawn→exit | PID 1 RSS | agent RSS |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let floor = floor_app(prepared, samples);
    let payload = app_of(prepared, samples, "floor+payload");
    let minus = |base: Option<f64>, app: f64| match base {
        Some(f) => format!("{:.1}", app - f),
        None => "-".into(),
    };
    for (p, s) in prepared.iter().zip(samples) {
        let app = spread(s, |x| Some(x.app));
        let rss = |f: fn(&Sample) -> u64| {
            let kb = median(&s.iter().map(|x| f(x) as f64).collect::<Vec<_>>());
            match kb > 0.0 {
                true => format!("{:.0} KiB", kb),
                false => "-".into(),
            }
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            p.name,
            p.initrd_bytes,
            cell(spread(s, |x| Some(x.first))),
            cell(spread(s, |x| x.agent_ready)),
            cell(app),
            cell(spread(s, |x| Some(x.app - x.first))),
            minus(floor, app.0),
            minus(payload, app.0),
            cell(spread(s, |x| x.host_program_start)),
            cell(spread(s, |x| Some(x.host_exit))),
            rss(|x| x.rss_kb.0),
            rss(|x| x.rss_kb.1),
        ));
    }
    if let Some(r) = ratio(prepared, samples) {
        out.push_str(&format!(
            "\n(init − floor) / (busybox-sh − floor) = {r:.2}, medians of {} boots each\n",
            samples.first().map_or(0, Vec::len)
        ));
    }
    out
}

fn floor_app(prepared: &[Prepared], samples: &[Vec<Sample>]) -> Option<f64> {
    app_of(prepared, samples, "floor")
}

fn app_of(prepared: &[Prepared], samples: &[Vec<Sample>], name: &str) -> Option<f64> {
    let i = prepared.iter().position(|p| p.name == name)?;
    Some(spread(&samples[i], |x| Some(x.app)).0)
}

/// (init − floor) / (busybox-sh − floor), when all three ran.
pub fn ratio(prepared: &[Prepared], samples: &[Vec<Sample>]) -> Option<f64> {
    let floor = floor_app(prepared, samples)?;
    let ours = app_of(prepared, samples, "init")?;
    let base = app_of(prepared, samples, "busybox-sh")?;
    Some((ours - floor) / (base - floor))
}

/// init's phases: one row per init variant, medians (ms).
pub fn phase_table(prepared: &[Prepared], samples: &[Vec<Sample>]) -> String {
    phases_of(prepared, samples, |s| &s.phases)
}

/// init's CPU time per phase: one row per init variant, medians (ms).
pub fn cpu_phase_table(prepared: &[Prepared], samples: &[Vec<Sample>]) -> String {
    phases_of(prepared, samples, |s| &s.cpu_phases)
}

fn phases_of(
    prepared: &[Prepared],
    samples: &[Vec<Sample>],
    field: fn(&Sample) -> &BTreeMap<String, f64>,
) -> String {
    let names: Vec<String> = samples
        .iter()
        .flatten()
        .flat_map(|s| field(s).keys().cloned())
        .fold(Vec::new(), |mut v, k| {
            if !v.contains(&k) {
                v.push(k);
            }
            v
        });
    let mut out = format!(
        "| variant | {} |\n|---|{}\n",
        names.join(" | "),
        "---:|".repeat(names.len())
    );
    for (p, s) in prepared.iter().zip(samples) {
        if !matches!(p.kind, Kind::Init { .. }) {
            continue;
        }
        let cells: Vec<String> = names
            .iter()
            .map(|n| {
                let m = spread(s, |x| field(x).get(n).copied()).0;
                match m.is_nan() {
                    true => "-".into(),
                    false => format!("{m:.1}"),
                }
            })
            .collect();
        out.push_str(&format!("| {} | {} |\n", p.name, cells.join(" | ")));
    }
    out
}

/// Two passes of the same variants under deterministic instruction
/// counting: the app's stamp per pass and their difference (ms).
pub fn agreement_table(prepared: &[Prepared], a: &[Vec<Sample>], b: &[Vec<Sample>]) -> String {
    let mut out = String::from(
        "| variant | app's first output, pass 1 | pass 2 | difference | app − floor (pass 1) | PID 1 CPU time, pass 1 | pass 2 |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let floor = floor_app(prepared, a);
    for (i, p) in prepared.iter().enumerate() {
        let (x, y) = (
            spread(&a[i], |s| Some(s.app)),
            spread(&b[i], |s| Some(s.app)),
        );
        let cpu = |v: &[Sample]| spread(v, |s| s.phases.get("cpu").copied());
        out.push_str(&format!(
            "| {} | {} | {} | {:.3} | {} | {} | {} |\n",
            p.name,
            cell(x),
            cell(y),
            (x.0 - y.0).abs(),
            floor.map_or("-".into(), |f| format!("{:.1}", x.0 - f)),
            cell(cpu(&a[i])),
            cell(cpu(&b[i])),
        ));
    }
    out
}
