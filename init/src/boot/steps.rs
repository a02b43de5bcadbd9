//! The boot plan held as data: a list of [`Step`]s, made by pure functions
//! ([`before_config`] from nothing but the boot kind, [`after_config`] from
//! the options, the config and what init knows), then applied one by one
//! through [`apply`]. Every key the plan needs is checked while planning, so
//! a config init cannot use fails before any step after the config has
//! touched the new root. Adding a step (systemd mode, headers, GPU) is a
//! variant here and a module of its own, not a longer function.

use super::{report, BootError, Ctx, Failed};
use crate::sys::Sys;
use guest_contract::cmdline::Options;
use guest_contract::config::Config;
use guest_contract::network::NetSettings;
use guest_contract::volumes::{self, Volume, VolumeError};

/// What init knows besides the options and the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// Test mode: a namespace on a host.
    pub test_mode: bool,
    /// The initramfs carries a kernel-headers tarball (and the config does
    /// not skip it).
    pub headers_tarball: bool,
    /// An NVIDIA GPU is there (or `hypeman.gpu=1` says so).
    pub gpu: bool,
}

/// One step of the boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Signals, Ctrl-Alt-Del, /proc /sys /dev /run, the command line.
    EarlyMounts,
    /// The initramfs's kernel modules.
    Modules,
    /// The console, then the disks' wait.
    Devices,
    /// Root, overlay disk and overlayfs.
    Disks,
    /// The new root's mounts and links; the agent read from the initramfs.
    NewRoot,
    /// MS_MOVE + chroot; the agent written into the new root.
    SwitchRoot,
    /// `/run/hypeman/boot-timings` for the agent's `Info`.
    BootTimings,
    /// `hostname` and `sysctls`.
    System,
    /// eth0 over netlink and resolv.conf.
    Network(NetSettings),
    /// The network asked for in test mode without a namespace of its own.
    NetworkSkipped,
    /// The volumes, and the entries refused while planning.
    Volumes(Vec<Volume>, Vec<VolumeError>),
    /// The egress proxy's CA (checked PEM).
    EgressCa(String),
    /// The NVIDIA driver stack and its device nodes.
    Gpu,
    /// The kernel-headers tarball opened before the initramfs is freed; the
    /// mode's runner hands it to the worker.
    KernelHeaders,
}

impl Step {
    /// The phase this step ends in init's timing line, if any.
    pub fn timing(&self) -> Option<&'static str> {
        match self {
            Step::EarlyMounts => Some("mounts"),
            Step::Modules => Some("modules"),
            Step::Devices => Some("devices"),
            Step::Disks => Some("disks"),
            Step::SwitchRoot => Some("switch"),
            Step::NewRoot => Some("newroot"),
            Step::Network(_) => Some("network"),
            Step::Volumes(..) => Some("volumes"),
            Step::Gpu => Some("gpu"),
            _ => None,
        }
    }
}

/// The steps before the config is read (it is read right after them).
pub fn before_config() -> Vec<Step> {
    vec![Step::EarlyMounts, Step::Modules, Step::Devices, Step::Disks]
}

/// The steps after the config, up to the agent and the app.
pub fn after_config(opts: &Options, config: &Config, facts: Facts) -> Result<Vec<Step>, BootError> {
    let mut steps = vec![Step::NewRoot];
    if facts.gpu {
        steps.push(Step::Gpu);
    }
    if facts.headers_tarball {
        steps.push(Step::KernelHeaders);
    }
    steps.extend([Step::SwitchRoot, Step::BootTimings, Step::System]);
    match NetSettings::from_config(config) {
        Ok(None) => {}
        Ok(Some(_)) if facts.test_mode && !opts.test_net => steps.push(Step::NetworkSkipped),
        Ok(Some(net)) => steps.push(Step::Network(net)),
        Err(e) => return Err(BootError::ConfigInvalid(Failed::msg(e.to_string()))),
    }
    if config.volume_mounts.as_ref().is_some_and(|v| !v.is_empty()) {
        let (planned, refused) = volumes::plan(config);
        steps.push(Step::Volumes(planned, refused));
    }
    if let Some(pem) = super::ca::wanted(config) {
        let certs = guest_contract::pem::certificates(pem)
            .map_err(|e| BootError::EgressProxy(Failed::msg(e.to_string())))?;
        steps.push(Step::EgressCa(certs));
    }
    Ok(steps)
}

/// Applies one step.
pub fn apply<S: Sys>(
    sys: &mut S,
    ctx: &mut Ctx,
    config: &Config,
    step: &Step,
) -> Result<(), BootError> {
    match step {
        Step::EarlyMounts => super::early(sys, ctx),
        Step::Modules => {
            super::load_modules(sys, ctx);
            Ok(())
        }
        Step::Devices => {
            super::select_console(sys, &ctx.opts);
            super::wait_devices(sys, ctx)
        }
        Step::Disks => super::mount_disks(sys, ctx),
        Step::NewRoot => super::prepare_newroot(sys, ctx, config),
        Step::SwitchRoot => super::switch_root(sys, ctx),
        Step::BootTimings => {
            super::exec_mode::write_boot_timings(sys, ctx);
            Ok(())
        }
        Step::System => super::system::apply(sys, ctx, config),
        Step::Network(net) => super::network::apply(sys, net),
        Step::NetworkSkipped => {
            let msg = "test mode: network not configured (no hypeman.test_net=1)";
            report::info(sys, "network", msg);
            Ok(())
        }
        Step::Volumes(planned, refused) => {
            super::volumes::apply(sys, ctx, planned, refused);
            Ok(())
        }
        Step::EgressCa(certs) => super::ca::apply(sys, ctx, certs),
        Step::Gpu => {
            super::gpu::apply(sys, ctx);
            Ok(())
        }
        Step::KernelHeaders => {
            match sys.open_read(crate::headers::SOURCE) {
                Ok(fd) => ctx.headers = Some(fd),
                Err(e) => {
                    let msg = format!("{}: {e}; no kernel headers", crate::headers::SOURCE);
                    report::error(sys, "headers", &msg);
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use guest_contract::exit::InitFailure;

    fn plan(json: &str, test_mode: bool, cmdline: &str) -> Result<Vec<Step>, BootError> {
        let config = guest_contract::config::parse_config(json.as_bytes())
            .unwrap()
            .config;
        let facts = Facts {
            test_mode,
            headers_tarball: false,
            gpu: false,
        };
        after_config(&Options::parse(cmdline), &config, facts)
    }

    fn names(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| format!("{s:?}").split('(').next().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_minimal_config_plans_the_fixed_steps_only() {
        let steps = plan(r#"{"cmd":["/app"]}"#, false, "").unwrap();
        assert_eq!(
            names(&steps),
            ["NewRoot", "SwitchRoot", "BootTimings", "System"]
        );
    }

    #[test]
    fn network_volumes_and_ca_are_planned_as_data() {
        let mut der = vec![0x30, 3, 1, 2, 3];
        der.truncate(5);
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            guest_contract::pem::encode_base64(&der)
        );
        let cfg = serde_json::json!({
            "cmd": ["/app"], "network_enabled": true, "guest_ip": "10.0.2.15", "guest_cidr": 24,
            "volume_mounts": [{"device": "/dev/vdd", "path": "/data"}, {"device": "/dev/vde", "path": "/x/../y"}],
            "egress_proxy": {"enabled": true, "ca_cert_pem": pem},
        });
        let steps = plan(&cfg.to_string(), false, "").unwrap();
        assert_eq!(
            names(&steps),
            [
                "NewRoot",
                "SwitchRoot",
                "BootTimings",
                "System",
                "Network",
                "Volumes",
                "EgressCa"
            ]
        );
        let Step::Volumes(ok, refused) = &steps[5] else {
            panic!()
        };
        assert_eq!((ok.len(), refused.len()), (1, 1));
        assert_eq!(steps[6], Step::EgressCa(pem));
        let skipped = plan(&cfg.to_string(), true, "").unwrap();
        assert_eq!(skipped[4], Step::NetworkSkipped);
        let own_ns = plan(&cfg.to_string(), true, "hypeman.test_net=1").unwrap();
        assert!(matches!(own_ns[4], Step::Network(_)));
    }

    #[test]
    fn keys_init_cannot_use_fail_while_planning() {
        let bad_net = plan(
            r#"{"network_enabled":true,"guest_ip":"x","guest_cidr":8}"#,
            false,
            "",
        );
        assert_eq!(bad_net.unwrap_err().failure(), InitFailure::ConfigInvalid);
        let bad_ca = plan(
            r#"{"egress_proxy":{"enabled":true,"ca_cert_pem":"junk"}}"#,
            false,
            "",
        );
        assert_eq!(bad_ca.unwrap_err().failure(), InitFailure::EgressProxy);
    }

    #[test]
    fn steps_name_their_timing_phase() {
        let t: Vec<Option<&str>> = before_config().iter().map(Step::timing).collect();
        assert_eq!(
            t,
            [
                Some("mounts"),
                Some("modules"),
                Some("devices"),
                Some("disks")
            ]
        );
        assert_eq!(Step::SwitchRoot.timing(), Some("switch"));
        assert_eq!(Step::NewRoot.timing(), Some("newroot"));
    }
}
