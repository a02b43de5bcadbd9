//! Accelerator detection: KVM only where a hardware KVM module is loaded.
//!
//! `/dev/kvm` alone proves nothing: a paravirtual KVM (`kvm_pvm`) also provides
//! it and hangs ordinary guest kernels. Hardware KVM means `kvm_intel` or
//! `kvm_amd` under /sys/module.

use super::Accel;
use std::path::Path;

/// Resolve `Auto` by looking at `sys_module` (normally `/sys/module`) and
/// whether `dev_kvm` (normally `/dev/kvm`) can be opened read-write.
pub fn resolve(requested: Accel, sys_module: &Path, dev_kvm: &Path) -> Accel {
    match requested {
        Accel::Auto if hardware_kvm(sys_module) && usable(dev_kvm) => Accel::Kvm,
        Accel::Auto => Accel::Tcg,
        other => other,
    }
}

/// Whether the device can be opened for reading and writing.
fn usable(dev: &Path) -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .is_ok()
}

/// Whether `kvm_intel` or `kvm_amd` is loaded.
pub fn hardware_kvm(sys_module: &Path) -> bool {
    ["kvm_intel", "kvm_amd"]
        .iter()
        .any(|m| sys_module.join(m).is_dir())
}

/// The host TSC rate in kHz from /proc/cpuinfo's "cpu MHz" (TCG guests on
/// microvm need `tsc_early_khz`).
pub fn tsc_khz(cpuinfo: &str) -> Option<u64> {
    let line = cpuinfo.lines().find(|l| l.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    Some((mhz * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvm_alone_is_not_kvm() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("kvm")).unwrap();
        std::fs::create_dir(d.path().join("kvm_pvm")).unwrap();
        let dev = d.path().join("kvm-device");
        std::fs::write(&dev, b"").unwrap();
        assert_eq!(resolve(Accel::Auto, d.path(), &dev), Accel::Tcg);
        std::fs::create_dir(d.path().join("kvm_amd")).unwrap();
        assert_eq!(resolve(Accel::Auto, d.path(), &dev), Accel::Kvm);
        // A hardware module but no usable device: TCG, not a failing QEMU.
        assert_eq!(
            resolve(Accel::Auto, d.path(), &d.path().join("none")),
            Accel::Tcg
        );
        assert_eq!(resolve(Accel::Tcg, d.path(), &dev), Accel::Tcg);
    }

    #[test]
    fn tsc_from_cpuinfo() {
        assert_eq!(
            tsc_khz("processor : 0\ncpu MHz\t\t: 2000.000\n"),
            Some(2_000_000)
        );
        assert_eq!(tsc_khz("nothing"), None);
    }
}
