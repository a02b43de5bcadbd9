//! Host-side system manager: run VMs (QEMU; Cloud Hypervisor and Firecracker
//! where a hardware KVM exists), build their disks, dial their vsock.

pub mod agent;
pub mod deadline;
pub mod disks;
pub mod image;
pub mod instance;
pub mod stop;
pub mod system;
pub mod vmm;
pub mod vsock;

/// An error and its causes on one line, each once: `a: b: c`.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !text.is_empty() && !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}
