//! Test harness shared by the project's end-to-end tests: release artifacts,
//! the kernel fixture, the initramfs under test, tiny root filesystems, and a
//! `Guest` builder that boots them in QEMU through host-sysmgr's VM runner,
//! and the boot benchmark ([`bootbench`]).

pub mod artifacts;
pub mod bootbench;
pub mod guest;
pub mod initramfs;
pub mod kernel;
pub mod rootfs;
