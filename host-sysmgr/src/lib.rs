//! Host-side system manager: run VMs (QEMU; Cloud Hypervisor and Firecracker
//! where a hardware KVM exists), build their disks, dial their vsock.

pub mod agent;
pub mod deadline;
pub mod disks;
pub mod instance;
pub mod stop;
pub mod vmm;
pub mod vsock;
