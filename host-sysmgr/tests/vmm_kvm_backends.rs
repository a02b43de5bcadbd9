//! Boot a kernel under Cloud Hypervisor and Firecracker, where they can run: the
//! program on PATH and a hardware KVM (kvm_intel/kvm_amd) loaded. Elsewhere each
//! test says why it is skipped and passes. The kernel (a PVH/ELF `vmlinux`)
//! comes from `HYPEMAN_TEST_KERNEL`; with no initrd and no root it panics, and
//! `panic=-1` turns that into a reboot.
#![allow(clippy::unwrap_used)]

use host_sysmgr::vmm::cloud_hypervisor::CloudHypervisor;
use host_sysmgr::vmm::firecracker::Firecracker;
use host_sysmgr::vmm::{accel, Backend, Vm, VmConfig};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// The kernel to boot, or `None` after printing why the test is skipped.
fn runnable(program: &str) -> Option<PathBuf> {
    let mut missing = Vec::new();
    if !on_path(program) {
        missing.push(format!("{program} not installed"));
    }
    if !accel::hardware_kvm(Path::new("/sys/module")) {
        missing.push("no hardware KVM (kvm_intel/kvm_amd) loaded".to_string());
    }
    if !missing.is_empty() {
        println!("skipped: {}", missing.join(" and "));
        return None;
    }
    let kernel = std::env::var_os("HYPEMAN_TEST_KERNEL").map(PathBuf::from);
    if kernel.is_none() {
        println!("skipped: HYPEMAN_TEST_KERNEL (a vmlinux) is not set");
    }
    kernel
}

fn start(backend: &dyn Backend, kernel: PathBuf, dir: &Path) -> (Vm, PathBuf) {
    let serial = dir.join("serial.log");
    let mut cfg = VmConfig::new(kernel, &serial, dir.join("run"));
    cfg.cmdline = "console=ttyS0".into();
    (Vm::start(&cfg, backend).unwrap(), serial)
}

fn wait_for_log(serial: &Path, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let log = std::fs::read_to_string(serial).unwrap_or_default();
        if log.contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn cloud_hypervisor_boots_and_shuts_down() {
    let Some(kernel) = runnable("cloud-hypervisor") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut vm, serial) = start(&CloudHypervisor::default(), kernel, dir.path());
    // A guest reboot (the panic) restarts it under Cloud Hypervisor: stop it via the API.
    assert!(
        wait_for_log(&serial, "Linux version", Duration::from_secs(60)),
        "no kernel output in {}",
        serial.display()
    );
    // The answer may race with the exit; the exit is what counts.
    if let Err(e) = vm.quit() {
        println!("vmm.shutdown: {e}");
    }
    let status = vm.wait_timeout(Duration::from_secs(20)).unwrap();
    assert!(
        status.is_some(),
        "cloud-hypervisor did not exit after vmm.shutdown"
    );
}

#[test]
fn firecracker_boots_and_exits() {
    let Some(kernel) = runnable("firecracker") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut vm, serial) = start(&Firecracker::default(), kernel, dir.path());
    // The rootless kernel panics; panic=-1 reboots, which ends Firecracker.
    let status = vm.wait_timeout(Duration::from_secs(60)).unwrap();
    let log = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(status.is_some(), "firecracker still runs; serial:\n{log}");
    println!(
        "firecracker exited with {status:?}; serial log {} bytes",
        log.len()
    );
}
