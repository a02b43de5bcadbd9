//! Cloud Hypervisor backend (v30 and later), driven by its command line and its
//! REST API on a Unix socket.
//!
//! Cloud Hypervisor needs a hardware KVM: [`Accel::Tcg`] is refused. It has no
//! user-mode network, so a [`crate::vmm::Nic`] is refused too (a NIC would need
//! a tap device). The kernel should be a PVH `vmlinux`. The guest's vsock is
//! exposed as a Unix socket with the `CONNECT <port>` handshake
//! ([`crate::vsock::dial`]); [`crate::vmm::Vsock::vhost_user_socket`] is QEMU's
//! and is ignored here.
//!
//! A guest power-off (ACPI) ends the process. A guest reboot, including the one
//! `panic=-1` triggers, restarts the guest instead: callers waiting for a
//! panicking guest to exit should stop it through [`crate::vmm::Vm::quit`].

use super::{Accel, Backend, ControlRequest, Launch, VmConfig, VmmError};
use std::path::PathBuf;

/// Cloud Hypervisor.
#[derive(Debug, Clone)]
pub struct CloudHypervisor {
    /// Binary (default `cloud-hypervisor`).
    pub program: String,
}

impl Default for CloudHypervisor {
    fn default() -> Self {
        CloudHypervisor {
            program: "cloud-hypervisor".into(),
        }
    }
}

/// The API socket Cloud Hypervisor listens on for `cfg`.
pub fn api_socket(cfg: &VmConfig) -> PathBuf {
    cfg.runtime_dir.join("ch-api.sock")
}

/// `cmdline` with each of `defaults` appended unless a parameter of the same
/// name (the part before `=`) is already there.
pub(super) fn cmdline_with(cmdline: &str, defaults: &[&str]) -> String {
    let mut words: Vec<&str> = cmdline.split_whitespace().collect();
    for d in defaults {
        let key = d.split('=').next().unwrap_or(d);
        if !words.iter().any(|w| w.split('=').next() == Some(key)) {
            words.push(d);
        }
    }
    words.join(" ")
}

/// Refusals shared by the KVM-only backends (Cloud Hypervisor, Firecracker).
pub(super) fn check_kvm_only(name: &str, cfg: &VmConfig) -> Result<(), VmmError> {
    cfg.validate()?;
    if matches!(cfg.accel, Accel::Tcg | Accel::Icount(_)) {
        return Err(VmmError::Config(format!(
            "{name} needs a hardware KVM: accelerator TCG is not supported (use QEMU)"
        )));
    }
    if cfg.nic.is_some() {
        return Err(VmmError::Config(format!(
            "{name} has no user-mode network: a NIC needs a tap device, which is not supported (use QEMU)"
        )));
    }
    Ok(())
}

fn push(args: &mut Vec<String>, items: &[&str]) {
    args.extend(items.iter().map(|s| s.to_string()));
}

fn boot_args(cfg: &VmConfig, args: &mut Vec<String>) {
    let kernel = cfg.kernel.display().to_string();
    push(args, &["--kernel", &kernel]);
    if let Some(initrd) = &cfg.initrd {
        push(args, &["--initramfs", &initrd.display().to_string()]);
    }
    let cmdline = cmdline_with(&cfg.cmdline, &["panic=-1"]);
    push(args, &["--cmdline", &cmdline]);
}

fn machine_args(cfg: &VmConfig, args: &mut Vec<String>) {
    let cpus = format!("boot={}", cfg.vcpus);
    let shared = if cfg.vsock.is_some() {
        ",shared=on"
    } else {
        ""
    };
    let memory = format!("size={}M{shared}", cfg.memory_mib);
    push(args, &["--cpus", &cpus, "--memory", &memory]);
}

fn disk_args(cfg: &VmConfig, args: &mut Vec<String>) {
    if cfg.disks.is_empty() {
        return;
    }
    args.push("--disk".into());
    for d in &cfg.disks {
        let ro = if d.read_only { ",readonly=on" } else { "" };
        args.push(format!("path={}{ro}", d.path.display()));
    }
}

fn device_args(cfg: &VmConfig, args: &mut Vec<String>) {
    if let Some(v) = &cfg.vsock {
        let vsock = format!("cid={},socket={}", v.cid, v.uds_path.display());
        push(args, &["--vsock", &vsock]);
    }
    let serial = format!("file={}", cfg.serial_log.display());
    push(args, &["--serial", &serial, "--console", "off"]);
}

impl Backend for CloudHypervisor {
    fn name(&self) -> &'static str {
        "cloud-hypervisor"
    }

    fn launch(&self, cfg: &VmConfig) -> Result<Launch, VmmError> {
        check_kvm_only(self.name(), cfg)?;
        let api = api_socket(cfg);
        let mut args = Vec::new();
        push(
            &mut args,
            &["--api-socket", &format!("path={}", api.display())],
        );
        boot_args(cfg, &mut args);
        machine_args(cfg, &mut args);
        disk_args(cfg, &mut args);
        device_args(cfg, &mut args);
        Ok(Launch {
            program: self.program.clone(),
            args,
            files: Vec::new(),
            control_socket: Some(api),
        })
    }

    fn power_down_request(&self) -> ControlRequest {
        ControlRequest::Http("PUT", "/api/v1/vm.power-button", "")
    }

    fn quit_request(&self) -> ControlRequest {
        ControlRequest::Http("PUT", "/api/v1/vmm.shutdown", "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::{Disk, Nic, Vsock};

    fn cfg() -> VmConfig {
        let mut c = VmConfig::new("/k/vmlinux", "/run/vm/serial.log", "/run/vm");
        c.initrd = Some("/k/initrd.img".into());
        c.vcpus = 2;
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
        c
    }

    fn ch() -> CloudHypervisor {
        CloudHypervisor::default()
    }

    #[test]
    fn golden_command_line() {
        let l = ch().launch(&cfg()).unwrap();
        assert_eq!(l.program, "cloud-hypervisor");
        assert_eq!(
            l.args,
            [
                "--api-socket",
                "path=/run/vm/ch-api.sock",
                "--kernel",
                "/k/vmlinux",
                "--initramfs",
                "/k/initrd.img",
                "--cmdline",
                "console=ttyS0 panic=-1",
                "--cpus",
                "boot=2",
                "--memory",
                "size=512M",
                "--disk",
                "path=/d/root.img,readonly=on",
                "path=/d/overlay.img",
                "--serial",
                "file=/run/vm/serial.log",
                "--console",
                "off",
            ]
        );
        assert!(l.files.is_empty());
        assert_eq!(l.control_socket, Some("/run/vm/ch-api.sock".into()));
    }

    #[test]
    fn golden_with_vsock_no_initrd_no_disks() {
        let mut c = cfg();
        c.initrd = None;
        c.disks.clear();
        c.cmdline = "console=ttyS0 panic=5 quiet".into();
        c.accel = Accel::Kvm;
        c.vsock = Some(Vsock {
            cid: 7,
            uds_path: "/run/vm/vsock.sock".into(),
            vhost_user_socket: None,
        });
        assert_eq!(
            ch().launch(&c).unwrap().args.join(" "),
            "--api-socket path=/run/vm/ch-api.sock --kernel /k/vmlinux \
             --cmdline console=ttyS0 panic=5 quiet --cpus boot=2 --memory size=512M,shared=on \
             --vsock cid=7,socket=/run/vm/vsock.sock \
             --serial file=/run/vm/serial.log --console off"
        );
    }

    #[test]
    fn control_requests() {
        assert_eq!(
            ch().power_down_request(),
            ControlRequest::Http("PUT", "/api/v1/vm.power-button", "")
        );
        assert_eq!(
            ch().quit_request(),
            ControlRequest::Http("PUT", "/api/v1/vmm.shutdown", "")
        );
        assert_eq!(ch().name(), "cloud-hypervisor");
    }

    #[test]
    fn tcg_nic_and_bad_configs_are_refused() {
        let mut c = cfg();
        c.accel = Accel::Tcg;
        let e = ch().launch(&c).unwrap_err();
        assert!(matches!(e, VmmError::Config(_)));
        assert!(e.to_string().contains("hardware KVM"), "{e}");

        let mut c = cfg();
        c.nic = Some(Nic::default());
        let e = ch().launch(&c).unwrap_err().to_string();
        assert!(e.contains("tap"), "{e}");

        let mut c = cfg();
        c.vcpus = 0;
        assert!(matches!(ch().launch(&c), Err(VmmError::Config(_))));
    }

    #[test]
    fn cmdline_defaults_are_added_once() {
        assert_eq!(cmdline_with("a  b=1", &["b=2", "c=3"]), "a b=1 c=3");
        assert_eq!(cmdline_with("", &["panic=-1"]), "panic=-1");
    }
}
