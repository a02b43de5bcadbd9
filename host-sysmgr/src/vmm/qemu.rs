//! QEMU backend: q35 (PCI) by default, microvm (MMIO) as an option.

use super::{
    accel, Accel, Backend, ControlRequest, Launch, Machine, VmConfig, VmmError, FORWARD_RELAY,
    GUEST_FORWARD_ADDR,
};
use std::path::Path;

/// QEMU, with the host facts that shape its command line.
#[derive(Debug, Clone)]
pub struct Qemu {
    /// Binary (default `qemu-system-x86_64`).
    pub program: String,
    /// Accelerator after resolving `Auto`.
    pub accel_on_host: Accel,
    /// Host TSC in kHz (microvm under TCG).
    pub tsc_khz: Option<u64>,
}

impl Qemu {
    /// Look at this host: hardware KVM? TSC rate?
    pub fn detect() -> Qemu {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Qemu {
            program: "qemu-system-x86_64".into(),
            accel_on_host: accel::resolve(
                Accel::Auto,
                Path::new("/sys/module"),
                Path::new("/dev/kvm"),
            ),
            tsc_khz: accel::tsc_khz(&cpuinfo),
        }
    }

    fn accel(&self, cfg: &VmConfig) -> Accel {
        match cfg.accel {
            Accel::Auto => self.accel_on_host,
            a => a,
        }
    }
}

/// QEMU option values are comma-separated: a path with a comma would end the
/// value and could inject options. Refuse them, and malformed MACs.
fn check_option_values(cfg: &VmConfig) -> Result<(), VmmError> {
    let mut paths = vec![&cfg.kernel, &cfg.serial_log, &cfg.runtime_dir];
    paths.extend(cfg.initrd.iter());
    paths.extend(cfg.disks.iter().map(|d| &d.path));
    if let Some(v) = &cfg.vsock {
        paths.extend(v.vhost_user_socket.iter());
    }
    if let Some(p) = paths.iter().find(|p| p.to_string_lossy().contains(',')) {
        return Err(VmmError::Config(format!(
            "path {} contains a comma",
            p.display()
        )));
    }
    let mac = cfg.nic.as_ref().and_then(|n| n.mac.as_deref());
    if let Some(mac) = mac.filter(|m| !valid_mac(m)) {
        return Err(VmmError::Config(format!("invalid MAC address {mac:?}")));
    }
    Ok(())
}

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn qmp_path(cfg: &VmConfig) -> std::path::PathBuf {
    cfg.runtime_dir.join("qmp.sock")
}

fn push(args: &mut Vec<String>, items: &[&str]) {
    args.extend(items.iter().map(|s| s.to_string()));
}

fn cmdline(q: &Qemu, cfg: &VmConfig, accel: Accel) -> String {
    // Always panic=-1 (with -no-reboot a panic ends QEMU); any other panic=
    // would hang a panicking guest until a timeout.
    let mut words: Vec<String> = cfg
        .cmdline
        .split_whitespace()
        .filter(|w| !w.starts_with("panic="))
        .map(String::from)
        .collect();
    let mut add = |w: String| {
        let key = w.split('=').next().unwrap_or("").to_string();
        if !words
            .iter()
            .any(|x| x.split('=').next() == Some(key.as_str()))
        {
            words.push(w);
        }
    };
    add("panic=-1".into());
    if cfg.machine == Machine::Microvm {
        add("reboot=t".into());
        if let (true, Some(khz)) = (accel.is_tcg(), q.tsc_khz) {
            add(format!("tsc_early_khz={khz}"));
        }
    }
    words.join(" ")
}

fn machine_args(cfg: &VmConfig, accel: Accel, args: &mut Vec<String>) {
    let mem = format!("{}M", cfg.memory_mib);
    let backend = cfg.vsock.is_some().then_some("memory-backend=mem");
    let machine = match cfg.machine {
        Machine::Q35 => "q35".to_string(),
        Machine::Microvm => "microvm,x-option-roms=off,isa-serial=on,rtc=on".to_string(),
    };
    let machine = match backend {
        Some(b) => format!("{machine},{b}"),
        None => machine,
    };
    if cfg.vsock.is_some() {
        // vhost-user needs guest RAM in a shared memfd, or vsock silently does nothing.
        let obj = format!("memory-backend-memfd,id=mem,size={mem},share=on");
        push(args, &["-object", &obj]);
    }
    let name = match accel {
        Accel::Kvm => "kvm",
        _ => "tcg",
    };
    push(args, &["-M", &machine, "-accel", name, "-m", &mem]);
    if let Accel::Icount(shift) = accel {
        push(
            args,
            &["-icount", &format!("shift={},sleep=off", shift.min(10))],
        );
    }
    push(args, &["-smp", &cfg.vcpus.to_string()]);
}

fn device(cfg: &VmConfig, kind: &str) -> String {
    match cfg.machine {
        Machine::Q35 => format!("{kind}-pci"),
        Machine::Microvm => format!("{kind}-device"),
    }
}

fn disk_args(cfg: &VmConfig, args: &mut Vec<String>) {
    for (i, d) in cfg.disks.iter().enumerate() {
        let ro = if d.read_only { ",readonly=on" } else { "" };
        let drive = format!(
            "file={},if=none,id=d{i},format=raw,cache=unsafe{ro}",
            d.path.display()
        );
        let dev = format!("{},drive=d{i}", device(cfg, "virtio-blk"));
        push(args, &["-drive", &drive, "-device", &dev]);
    }
}

fn nic_args(cfg: &VmConfig, args: &mut Vec<String>) {
    let Some(nic) = &cfg.nic else { return };
    let mut netdev = "user,id=n0,ipv6=off,restrict=on".to_string();
    for (host, guest) in &nic.host_forwards {
        netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
    }
    for (guest, host) in &nic.guest_forwards {
        netdev.push_str(&format!(
            ",guestfwd=tcp:{GUEST_FORWARD_ADDR}:{guest}-cmd:{FORWARD_RELAY} nc 127.0.0.1 {host}"
        ));
    }
    let mut dev = format!("{},netdev=n0", device(cfg, "virtio-net"));
    if let Some(mac) = &nic.mac {
        dev.push_str(&format!(",mac={mac}"));
    }
    push(args, &["-netdev", &netdev, "-device", &dev]);
}

fn vsock_args(cfg: &VmConfig, args: &mut Vec<String>) -> Result<(), VmmError> {
    let Some(v) = &cfg.vsock else { return Ok(()) };
    let Some(sock) = &v.vhost_user_socket else {
        return Err(VmmError::Config(
            "qemu vsock needs a vhost-user socket (vhost-device-vsock)".into(),
        ));
    };
    let chardev = format!("socket,id=vs,path={}", sock.display());
    let dev = format!("{},chardev=vs", device(cfg, "vhost-user-vsock"));
    push(args, &["-chardev", &chardev, "-device", &dev]);
    Ok(())
}

impl Backend for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn launch(&self, cfg: &VmConfig) -> Result<Launch, VmmError> {
        cfg.validate()?;
        check_option_values(cfg)?;
        let accel = self.accel(cfg);
        if cfg.machine == Machine::Microvm && accel.is_tcg() && self.tsc_khz.is_none() {
            // Without tsc_early_khz about half of such boots hang in calibration.
            return Err(VmmError::Config(
                "microvm under TCG needs the host TSC rate (none in /proc/cpuinfo); use q35".into(),
            ));
        }
        let mut args = Vec::new();
        push(
            &mut args,
            &["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"],
        );
        machine_args(cfg, accel, &mut args);
        let kernel = cfg.kernel.display().to_string();
        push(
            &mut args,
            &["-kernel", &kernel, "-append", &cmdline(self, cfg, accel)],
        );
        if let Some(initrd) = &cfg.initrd {
            push(&mut args, &["-initrd", &initrd.display().to_string()]);
        }
        let serial = format!("file:{}", cfg.serial_log.display());
        push(&mut args, &["-serial", &serial]);
        disk_args(cfg, &mut args);
        nic_args(cfg, &mut args);
        vsock_args(cfg, &mut args)?;
        let qmp = qmp_path(cfg);
        let qmp_arg = format!("unix:{},server=on,wait=off", qmp.display());
        push(&mut args, &["-qmp", &qmp_arg]);
        Ok(Launch {
            program: self.program.clone(),
            args,
            files: Vec::new(),
            control_socket: Some(qmp),
        })
    }

    fn power_down_request(&self) -> ControlRequest {
        ControlRequest::Qmp("system_powerdown")
    }

    fn quit_request(&self) -> ControlRequest {
        ControlRequest::Qmp("quit")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::{Disk, Nic, Vsock};

    fn qemu(accel: Accel) -> Qemu {
        Qemu {
            program: "qemu-system-x86_64".into(),
            accel_on_host: accel,
            tsc_khz: Some(2_000_000),
        }
    }

    fn cfg() -> VmConfig {
        let mut c = VmConfig::new("/k/vmlinux", "/run/vm/serial.log", "/run/vm");
        c.initrd = Some("/k/initrd.img".into());
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

    #[test]
    fn q35_under_tcg_golden() {
        let l = qemu(Accel::Tcg).launch(&cfg()).unwrap();
        assert_eq!(
            l.args.join(" "),
            "-nodefaults -no-user-config -nographic -no-reboot -M q35 -accel tcg -m 512M -smp 1 \
             -kernel /k/vmlinux -append console=ttyS0 panic=-1 -initrd /k/initrd.img \
             -serial file:/run/vm/serial.log \
             -drive file=/d/root.img,if=none,id=d0,format=raw,cache=unsafe,readonly=on -device virtio-blk-pci,drive=d0 \
             -drive file=/d/overlay.img,if=none,id=d1,format=raw,cache=unsafe -device virtio-blk-pci,drive=d1 \
             -qmp unix:/run/vm/qmp.sock,server=on,wait=off"
        );
        assert_eq!(l.control_socket, Some("/run/vm/qmp.sock".into()));
    }

    #[test]
    fn microvm_with_vsock_and_nic() {
        let mut c = cfg();
        c.machine = Machine::Microvm;
        c.cmdline = "console=ttyS0 panic=5".into();
        c.nic = Some(Nic {
            host_forwards: vec![(8080, 80)],
            guest_forwards: vec![(80, 9090)],
            mac: None,
        });
        c.vsock = Some(Vsock {
            cid: 3,
            uds_path: "/run/vm/v.sock".into(),
            vhost_user_socket: Some("/run/vm/vhost.sock".into()),
        });
        let args = qemu(Accel::Tcg).launch(&c).unwrap().args.join(" ");
        assert!(
            args.contains("-object memory-backend-memfd,id=mem,size=512M,share=on"),
            "{args}"
        );
        assert!(
            args.contains("-M microvm,x-option-roms=off,isa-serial=on,rtc=on,memory-backend=mem")
        );
        // panic= is always -1; TCG on microvm needs the TSC rate and reboot=t.
        assert!(
            args.contains("-append console=ttyS0 panic=-1 reboot=t tsc_early_khz=2000000 "),
            "{args}"
        );
        assert!(args.contains("-device virtio-blk-device,drive=d0"));
        assert!(args.contains("-netdev user,id=n0,ipv6=off,restrict=on,hostfwd=tcp:127.0.0.1:8080-:80,guestfwd=tcp:10.0.2.100:80-cmd:/bin/busybox nc 127.0.0.1 9090 -device virtio-net-device,netdev=n0"), "{args}");
        assert!(args.contains("-chardev socket,id=vs,path=/run/vm/vhost.sock -device vhost-user-vsock-device,chardev=vs"));
    }

    #[test]
    fn option_injection_and_unknown_tsc_are_refused() {
        let mut c = cfg();
        c.disks[0].path = "/d/a,file.driver=host_device".into();
        let err = qemu(Accel::Tcg).launch(&c).unwrap_err().to_string();
        assert!(err.contains("contains a comma"), "{err}");
        let mut c = cfg();
        c.nic = Some(Nic {
            mac: Some("52:54:00:12:34,x".into()),
            ..Nic::default()
        });
        assert!(qemu(Accel::Tcg)
            .launch(&c)
            .unwrap_err()
            .to_string()
            .contains("invalid MAC"));
        let mut c = cfg();
        c.machine = Machine::Microvm;
        let mut q = qemu(Accel::Tcg);
        q.tsc_khz = None;
        assert!(q.launch(&c).unwrap_err().to_string().contains("TSC"));
    }

    #[test]
    fn kvm_only_when_resolved() {
        let mut c = cfg();
        c.accel = Accel::Icount(3);
        let args = qemu(Accel::Kvm).launch(&c).unwrap().args.join(" ");
        assert!(
            args.contains("-accel tcg -m 512M -icount shift=3,sleep=off"),
            "{args}"
        );
        let args = qemu(Accel::Kvm).launch(&cfg()).unwrap().args.join(" ");
        assert!(args.contains("-accel kvm"));
        let mut c = cfg();
        c.accel = Accel::Tcg;
        assert!(qemu(Accel::Kvm)
            .launch(&c)
            .unwrap()
            .args
            .join(" ")
            .contains("-accel tcg"));
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut c = cfg();
        c.vsock = Some(Vsock {
            cid: 2,
            uds_path: "/x".into(),
            vhost_user_socket: None,
        });
        assert!(qemu(Accel::Tcg)
            .launch(&c)
            .unwrap_err()
            .to_string()
            .contains("reserved"));
        c.vsock = Some(Vsock {
            cid: 3,
            uds_path: "/x".into(),
            vhost_user_socket: None,
        });
        assert!(qemu(Accel::Tcg)
            .launch(&c)
            .unwrap_err()
            .to_string()
            .contains("vhost-user"));
    }
}
