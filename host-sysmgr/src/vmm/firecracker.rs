//! Firecracker backend: one JSON config file (`--config-file`), which boots the
//! guest at once, plus the API socket for control requests.
//!
//! Firecracker needs a hardware KVM ([`Accel::Tcg`] is refused) and a tap device
//! for networking ([`crate::vmm::Nic`] is refused). On x86_64 the kernel must be
//! an uncompressed ELF `vmlinux`; a bzImage is not accepted.
//!
//! Serial console: Firecracker writes the guest's serial port to its **stdout**
//! unless the config's `serial.serial_out_path` is honoured (the `/serial`
//! resource of recent Firecracker releases; older releases ignore the key).
//! This backend sets `serial_out_path` to [`VmConfig::serial_log`], but
//! [`crate::vmm::Launch`] cannot redirect the process's stdout and
//! [`crate::vmm::Vm::start`] sends it to `/dev/null`: with an older Firecracker
//! the serial log stays empty unless the caller runs the [`Launch`] itself with
//! stdout redirected to the log. Firecracker's own log goes to
//! `<runtime_dir>/firecracker.log`.
//!
//! Stopping: Firecracker ends when the guest reboots (`reboot=k`, added to the
//! command line, makes the kernel reset through the i8042 controller; `panic=-1`
//! turns a panic into such a reboot). It has no ACPI power-off and no graceful
//! quit: power-down sends Ctrl-Alt-Del, and quit is
//! [`ControlRequest::Unsupported`] (the caller kills the process).

use super::cloud_hypervisor::{check_kvm_only, cmdline_with};
use super::{Backend, ControlRequest, Launch, VmConfig, VmmError};
use serde_json::{json, Value};
use std::path::PathBuf;

/// Firecracker.
#[derive(Debug, Clone)]
pub struct Firecracker {
    /// Binary (default `firecracker`).
    pub program: String,
}

impl Default for Firecracker {
    fn default() -> Self {
        Firecracker {
            program: "firecracker".into(),
        }
    }
}

/// The API socket Firecracker listens on for `cfg`.
pub fn api_socket(cfg: &VmConfig) -> PathBuf {
    cfg.runtime_dir.join("fc-api.sock")
}

/// The JSON config file written for `cfg`.
pub fn config_path(cfg: &VmConfig) -> PathBuf {
    cfg.runtime_dir.join("firecracker.json")
}

/// Firecracker's own log file for `cfg` (it must exist before start).
pub fn log_path(cfg: &VmConfig) -> PathBuf {
    cfg.runtime_dir.join("firecracker.log")
}

/// Drive ids in attachment order: `vda`, `vdb`, … (at most 26).
fn drive_id(index: usize) -> String {
    let letter = u8::try_from(index % 26).map_or('?', |i| char::from(b'a' + i));
    format!("vd{letter}")
}

fn boot_source(cfg: &VmConfig) -> Value {
    let mut boot = json!({
        "kernel_image_path": cfg.kernel.display().to_string(),
        "boot_args": cmdline_with(&cfg.cmdline, &["panic=-1", "reboot=k"]),
    });
    if let Some(initrd) = &cfg.initrd {
        boot["initrd_path"] = json!(initrd.display().to_string());
    }
    boot
}

fn drives(cfg: &VmConfig) -> Value {
    let drives: Vec<Value> = cfg
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            json!({
                "drive_id": drive_id(i),
                "path_on_host": d.path.display().to_string(),
                "is_root_device": false,
                "is_read_only": d.read_only,
            })
        })
        .collect();
    Value::Array(drives)
}

/// The JSON config Firecracker boots `cfg` from.
pub fn config_json(cfg: &VmConfig) -> Value {
    let mut config = json!({
        "boot-source": boot_source(cfg),
        "drives": drives(cfg),
        "machine-config": {
            "vcpu_count": cfg.vcpus,
            "mem_size_mib": cfg.memory_mib,
        },
        "logger": {
            "log_path": log_path(cfg).display().to_string(),
            "level": "Warning",
        },
        "serial": {
            "serial_out_path": cfg.serial_log.display().to_string(),
        },
    });
    if let Some(v) = &cfg.vsock {
        config["vsock"] = json!({
            "guest_cid": v.cid,
            "uds_path": v.uds_path.display().to_string(),
        });
    }
    config
}

impl Backend for Firecracker {
    fn name(&self) -> &'static str {
        "firecracker"
    }

    fn launch(&self, cfg: &VmConfig) -> Result<Launch, VmmError> {
        check_kvm_only(self.name(), cfg)?;
        let json = serde_json::to_string_pretty(&config_json(cfg))
            .map_err(|e| VmmError::Config(format!("firecracker config: {e}")))?;
        let (api, config) = (api_socket(cfg), config_path(cfg));
        let args = [
            "--api-sock".to_string(),
            api.display().to_string(),
            "--config-file".to_string(),
            config.display().to_string(),
        ];
        Ok(Launch {
            program: self.program.clone(),
            args: args.to_vec(),
            // Firecracker opens the log and serial files but may not create them.
            files: vec![
                (config, json),
                (log_path(cfg), String::new()),
                (cfg.serial_log.clone(), String::new()),
            ],
            control_socket: Some(api),
        })
    }

    fn power_down_request(&self) -> ControlRequest {
        ControlRequest::Http("PUT", "/actions", r#"{"action_type":"SendCtrlAltDel"}"#)
    }

    fn quit_request(&self) -> ControlRequest {
        ControlRequest::Unsupported
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::{Accel, Disk, Nic, Vsock};

    fn cfg() -> VmConfig {
        let mut c = VmConfig::new("/k/vmlinux", "/run/vm/serial.log", "/run/vm");
        c.initrd = Some("/k/initrd.img".into());
        c.vcpus = 2;
        c.memory_mib = 256;
        c.disks = vec![
            Disk {
                path: "/d/root.img".into(),
                read_only: true,
            },
            Disk {
                path: "/d/overlay.img".into(),
                read_only: false,
            },
        ];
        c.vsock = Some(Vsock {
            cid: 3,
            uds_path: "/run/vm/vsock.sock".into(),
            vhost_user_socket: None,
        });
        c
    }

    fn fc() -> Firecracker {
        Firecracker::default()
    }

    #[test]
    fn golden_command_line_and_files() {
        let l = fc().launch(&cfg()).unwrap();
        assert_eq!(l.program, "firecracker");
        assert_eq!(
            l.args,
            [
                "--api-sock",
                "/run/vm/fc-api.sock",
                "--config-file",
                "/run/vm/firecracker.json"
            ]
        );
        assert_eq!(l.control_socket, Some("/run/vm/fc-api.sock".into()));
        let paths: Vec<_> = l
            .files
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        assert_eq!(
            paths,
            [
                "/run/vm/firecracker.json",
                "/run/vm/firecracker.log",
                "/run/vm/serial.log"
            ]
        );
        assert_eq!(l.files[1].1, "");
        assert_eq!(l.files[2].1, "");
    }

    #[test]
    fn golden_json() {
        let l = fc().launch(&cfg()).unwrap();
        let expected = json!({
            "boot-source": {
                "kernel_image_path": "/k/vmlinux",
                "initrd_path": "/k/initrd.img",
                "boot_args": "console=ttyS0 panic=-1 reboot=k"
            },
            "drives": [
                {
                    "drive_id": "vda",
                    "path_on_host": "/d/root.img",
                    "is_root_device": false,
                    "is_read_only": true
                },
                {
                    "drive_id": "vdb",
                    "path_on_host": "/d/overlay.img",
                    "is_root_device": false,
                    "is_read_only": false
                }
            ],
            "machine-config": { "vcpu_count": 2, "mem_size_mib": 256 },
            "vsock": { "guest_cid": 3, "uds_path": "/run/vm/vsock.sock" },
            "logger": { "log_path": "/run/vm/firecracker.log", "level": "Warning" },
            "serial": { "serial_out_path": "/run/vm/serial.log" }
        });
        let written: Value = serde_json::from_str(&l.files[0].1).unwrap();
        assert_eq!(written, expected);
        assert_eq!(
            l.files[0].1,
            serde_json::to_string_pretty(&expected).unwrap()
        );
    }

    #[test]
    fn minimal_json_keeps_explicit_params() {
        let mut c = cfg();
        c.initrd = None;
        c.vsock = None;
        c.disks.clear();
        c.cmdline = "console=ttyS0 panic=3 reboot=t".into();
        let j = config_json(&c);
        assert_eq!(
            j["boot-source"],
            json!({"kernel_image_path": "/k/vmlinux", "boot_args": "console=ttyS0 panic=3 reboot=t"})
        );
        assert_eq!(j["drives"], json!([]));
        assert!(j.get("vsock").is_none());
    }

    #[test]
    fn control_requests() {
        assert_eq!(
            fc().power_down_request(),
            ControlRequest::Http("PUT", "/actions", r#"{"action_type":"SendCtrlAltDel"}"#)
        );
        assert_eq!(fc().quit_request(), ControlRequest::Unsupported);
        assert_eq!(fc().name(), "firecracker");
    }

    #[test]
    fn tcg_and_nic_are_refused() {
        let mut c = cfg();
        c.accel = Accel::Tcg;
        let e = fc().launch(&c).unwrap_err().to_string();
        assert!(e.contains("firecracker needs a hardware KVM"), "{e}");
        let mut c = cfg();
        c.nic = Some(Nic::default());
        let e = fc().launch(&c).unwrap_err().to_string();
        assert!(e.contains("tap"), "{e}");
    }

    #[test]
    fn drive_ids() {
        assert_eq!(drive_id(0), "vda");
        assert_eq!(drive_id(19), "vdt");
    }
}
