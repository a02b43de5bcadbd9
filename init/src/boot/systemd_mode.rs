//! systemd mode: after the same disks, network, volumes and CA steps, hand
//! PID 1 to the image's init system. The agent and the kernel-headers
//! worker become units (hypeman's exact text), the app's environment goes to
//! `/etc/hypeman/env`, the units that wait for udev events a container-made
//! root never gets are masked, and `entrypoint ++ cmd` (or `/sbin/init`) is
//! executed in place of init.

use super::{report, BootError, Ctx, Failed};
use crate::sys::Sys;
use guest_contract::config::{Config, InitMode};

/// `/etc/systemd/system/hypeman-agent.service`, byte for byte.
pub const AGENT_UNIT: &str = "[Unit]
Description=Hypeman Guest Agent

[Service]
Type=simple
ExecStart=/opt/hypeman/guest-agent
EnvironmentFile=-/etc/hypeman/env
Restart=always
RestartSec=3
StandardOutput=journal
StandardError=journal

[Install]
WantedBy=multi-user.target
";

/// `/etc/systemd/system/hypeman-kernel-headers.service`, byte for byte.
pub const HEADERS_UNIT: &str = "[Unit]
Description=Hypeman Kernel Headers Setup
After=local-fs.target
ConditionPathExists=/opt/hypeman/hypeman-init
ConditionPathExists=/opt/hypeman/kernel-headers.tar.gz

[Service]
Type=oneshot
ExecStart=/opt/hypeman/hypeman-init --headers-worker-guest
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7
StandardOutput=journal
StandardError=journal

[Install]
WantedBy=multi-user.target
";

const UNITS: &str = "/etc/systemd/system";
/// The environment file both units read.
pub const ENV_FILE: &str = "/etc/hypeman/env";

/// A value as the env file writes it: bare when it is made of
/// `[A-Za-z0-9@%+=:,./-]` only, `''` when empty, else single-quoted with
/// each `'` written `'"'"'`.
pub fn shell_quote(v: &str) -> String {
    let bare = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./-".contains(c);
    if v.is_empty() {
        "''".into()
    } else if v.chars().all(bare) {
        v.into()
    } else {
        format!("'{}'", v.replace('\'', "'\"'\"'"))
    }
}

/// `/etc/hypeman/env`: one `KEY=value` line per variable (PATH and HOME
/// added when absent, as for an exec-mode app).
pub fn env_file(config: &Config) -> String {
    config
        .app_env()
        .iter()
        .map(|(k, v)| format!("{k}={}\n", shell_quote(v)))
        .collect()
}

/// Units masked (linked to /dev/null), each waiting ~90 s for a device unit
/// udev never announces in a container-made root: the serial getty on the
/// console, and the device units of the VM's disks (`dev-vda.device`…:
/// root, overlay, config and volume disks), so a job that names one fails
/// at once instead of timing out.
pub fn masked_units(console: Option<&str>, disks: &[&str]) -> Vec<String> {
    let simple = |name: &str| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric());
    let tty = console
        .and_then(|c| c.strip_prefix("/dev/"))
        .filter(|t| t.starts_with("tty") && simple(t));
    let getty = tty.map(|t| format!("serial-getty@{t}.service"));
    let mut devices: Vec<String> = disks
        .iter()
        .filter_map(|d| d.strip_prefix("/dev/"))
        .filter(|d| d.starts_with("vd") && simple(d))
        .map(|d| format!("dev-{d}.device"))
        .collect();
    devices.sort();
    devices.dedup();
    getty.into_iter().chain(devices).collect()
}

/// The VM's disks: those the boot waited for and the volumes'.
fn disks(ctx: &Ctx, config: &Config) -> Vec<String> {
    let mut disks = super::plan::devices(&ctx.opts, ctx.kind);
    for v in config.volume_mounts.iter().flatten() {
        disks.push(v.device.clone());
        disks.extend(v.overlay_device.clone());
    }
    disks
}

/// What PID 1 becomes: `entrypoint ++ cmd`, or `/sbin/init`.
pub fn argv(config: &Config) -> Vec<String> {
    let argv: Vec<String> = config
        .entrypoint
        .iter()
        .flatten()
        .chain(config.cmd.iter().flatten())
        .cloned()
        .collect();
    if argv.is_empty() {
        vec!["/sbin/init".into()]
    } else {
        argv
    }
}

/// Writes the units and the env file, then executes the init system as PID
/// 1. Returns only on failure (or from the fake).
pub fn run<S: Sys>(sys: &mut S, ctx: &mut Ctx, config: &Config) -> (i32, String) {
    if let Err(e) = prepare(sys, ctx, config) {
        return report::fail(sys, ctx, &e);
    }
    let argv = argv(config);
    let env: Vec<String> = config
        .app_env()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if let Some(root) = ctx.initramfs.take() {
        super::release_initramfs(sys, &root);
    }
    let (secs, nanos) = sys.realtime();
    report::sentinel(
        sys,
        &guest_contract::sentinel::program_start(secs, nanos, InitMode::Systemd),
    );
    match sys.exec_pid1(&argv, &env) {
        Ok(()) => (0, "init system started".into()),
        Err(e) => {
            let e = BootError::SystemdMode(Failed::new(format!("execute {}", argv[0]), e));
            report::fail(sys, ctx, &e)
        }
    }
}

fn prepare<S: Sys>(sys: &mut S, ctx: &mut Ctx, config: &Config) -> Result<(), BootError> {
    let failed = |what: String| move |e| BootError::SystemdMode(Failed::new(what, e));
    for dir in [
        format!("{UNITS}/multi-user.target.wants"),
        "/etc/hypeman".into(),
    ] {
        sys.mkdir_all(&dir)
            .map_err(failed(format!("mkdir {dir}")))?;
    }
    sys.write_file(ENV_FILE, env_file(config).as_bytes(), 0o600)
        .map_err(failed(format!("write {ENV_FILE}")))?;
    let mut units = Vec::new();
    if ctx.agent_installed && config.skip_guest_agent != Some(true) {
        units.push(("hypeman-agent.service", AGENT_UNIT));
    }
    if config.skip_kernel_headers != Some(true) {
        units.push(("hypeman-kernel-headers.service", HEADERS_UNIT));
        super::kernel_headers::stage(sys, ctx);
    }
    for (name, text) in units {
        let path = format!("{UNITS}/{name}");
        sys.write_file(&path, text.as_bytes(), 0o644)
            .map_err(failed(format!("write {path}")))?;
        let link = format!("{UNITS}/multi-user.target.wants/{name}");
        let _ = sys.remove_file(&link);
        sys.symlink(&format!("../{name}"), &link)
            .map_err(failed(format!("enable {name}")))?;
    }
    let disks = disks(ctx, config);
    let disks: Vec<&str> = disks.iter().map(String::as_str).collect();
    let masked = masked_units(ctx.opts.console.as_deref(), &disks);
    for unit in &masked {
        let link = format!("{UNITS}/{unit}");
        let _ = sys.remove_file(&link);
        sys.symlink("/dev/null", &link)
            .map_err(failed(format!("mask {unit}")))?;
    }
    if !masked.is_empty() {
        report::info(
            sys,
            "systemd",
            &format!(
                "masked {} (udev never announces its device here)",
                masked.join(", ")
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_as_hypeman_does() {
        assert_eq!(
            shell_quote("plain/path:1,2@x%y+z=w.-"),
            "plain/path:1,2@x%y+z=w.-"
        );
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\"'\"'s'");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn argv_and_masks() {
        let c: Config =
            serde_json::from_str(r#"{"cmd":["/lib/systemd/systemd","--log-level=info"]}"#).unwrap();
        assert_eq!(argv(&c), ["/lib/systemd/systemd", "--log-level=info"]);
        assert_eq!(argv(&Config::default()), ["/sbin/init"]);
        assert_eq!(
            masked_units(Some("/dev/ttyS0"), &[]),
            ["serial-getty@ttyS0.service"]
        );
        assert!(masked_units(Some("/dev/hvc0"), &[]).is_empty());
        assert!(masked_units(None, &["/dev/sda", "/dev/vd-x", "vdz"]).is_empty());
        assert_eq!(
            masked_units(Some("/dev/ttyS0"), &["/dev/vdc", "/dev/vda", "/dev/vdc"]),
            [
                "serial-getty@ttyS0.service",
                "dev-vda.device",
                "dev-vdc.device"
            ]
        );
    }
}
