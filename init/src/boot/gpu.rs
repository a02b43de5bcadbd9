//! The GPU step: when an NVIDIA PCI function is present, the driver stack
//! (`nvidia`, `nvidia_uvm`, `nvidia_modeset`, `nvidia_drm modeset=1`, each
//! after its dependencies) loaded from the image's `/lib/modules/<release>`
//! or else the initramfs's, the device nodes the driver needs created with
//! the majors it registered in `/proc/devices`, and the outcome written to
//! `/run/hypeman/gpu-init.status` (`ok …` or `failed: <why>`) for the
//! agent's `GetGPUInitStatus`. Never fatal: the app runs either way.
//!
//! It runs before the switch, while both module trees are reachable (the
//! image at the new root, the initramfs at `/`). Without a GPU the whole
//! cost is the probe: one read of `/proc/bus/pci/devices` (none with
//! `hypeman.gpu=0`).

use super::{report, Ctx};
use crate::sys::Sys;
use guest_contract::{gpu, modindex};

/// The status file the agent reads (in the guest's root).
pub const STATUS: &str = "/run/hypeman/gpu-init.status";
/// The PCI functions the kernel sees.
pub const PCI_DEVICES: &str = "/proc/bus/pci/devices";

/// Whether the GPU step is planned: `hypeman.gpu` when given, else the
/// probe. Never in test mode (a namespace sees the host's PCI bus).
pub fn wanted<S: Sys>(sys: &mut S, ctx: &Ctx) -> bool {
    if ctx.test_mode {
        return false;
    }
    match ctx.opts.gpu {
        Some(forced) => forced,
        None => sys
            .read_file(PCI_DEVICES, 1 << 20)
            .is_ok_and(|t| gpu::nvidia_functions(&String::from_utf8_lossy(&t)) > 0),
    }
}

/// Loads the stack and makes the nodes; the outcome goes to the log and the
/// status file.
pub fn apply<S: Sys>(sys: &mut S, ctx: &Ctx) {
    let newroot = ctx.layout.newroot();
    let outcome = load(sys, &newroot);
    let line = match &outcome {
        Ok(done) => {
            report::info(sys, "gpu", done);
            format!("ok {done}\n")
        }
        Err(e) => {
            let why = report::error_chain(e);
            report::error(sys, "gpu", &why);
            format!("failed: {why}\n")
        }
    };
    let dir = format!("{newroot}/run/hypeman");
    let written = sys
        .mkdir_all(&dir)
        .and_then(|()| sys.write_file(&format!("{newroot}{STATUS}"), line.as_bytes(), 0o644));
    if let Err(e) = written {
        report::error(sys, "gpu", &format!("write {STATUS}: {e}"));
    }
}

/// Why the GPU step failed.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// Neither module tree carries the driver.
    #[error("no NVIDIA driver modules (nvidia in modules.dep) in the image's or the initramfs's /lib/modules/{release}")]
    NoDriver {
        /// `uname -r`.
        release: String,
    },
    /// A module did not load.
    #[error("load {module}")]
    Load {
        /// Its name.
        module: String,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// The driver registered no character device.
    #[error("the nvidia module registered no character device in /proc/devices")]
    NoMajor,
    /// A device node could not be made.
    #[error("mknod {path}")]
    Node {
        /// The node.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn load<S: Sys>(sys: &mut S, newroot: &str) -> Result<String, GpuError> {
    let release = sys.kernel_release();
    let (dir, index) = find_stack(sys, newroot, &release).ok_or(GpuError::NoDriver { release })?;
    let names: Vec<&str> = gpu::DRIVER_STACK.iter().map(|(m, _)| *m).collect();
    let mut loaded = Vec::new();
    for rel in index.load_order_of(&names) {
        let name = modindex::module_name(&rel);
        let params = gpu::DRIVER_STACK
            .iter()
            .find(|(m, _)| *m == name)
            .map_or("", |(_, p)| *p);
        sys.load_module(&format!("{dir}/{rel}"), params)
            .map_err(|source| GpuError::Load {
                module: name.clone(),
                source,
            })?;
        loaded.push(name);
    }
    let devices = sys.read_file("/proc/devices", 1 << 20).unwrap_or_default();
    let devices = String::from_utf8_lossy(&devices);
    let frontend = gpu::char_major(&devices, "nvidia-frontend")
        .or_else(|| gpu::char_major(&devices, "nvidia"))
        .ok_or(GpuError::NoMajor)?;
    let uvm = gpu::char_major(&devices, "nvidia-uvm");
    let gpus = sys
        .list_dir("/proc/driver/nvidia/gpus")
        .map_or(0, |g| g.len());
    let nodes = gpu::nodes(gpus, frontend, uvm);
    for (path, major, minor) in &nodes {
        sys.mknod_char(path, *major, *minor, 0o666)
            .map_err(|source| GpuError::Node {
                path: path.clone(),
                source,
            })?;
    }
    Ok(format!(
        "{gpus} GPU(s); loaded {} from {dir}; {} device nodes",
        loaded.join(", "),
        nodes.len()
    ))
}

/// The first module tree whose index carries `nvidia`: the image's, then
/// the initramfs's.
fn find_stack<S: Sys>(
    sys: &mut S,
    newroot: &str,
    release: &str,
) -> Option<(String, modindex::Index)> {
    for dir in [
        format!("{newroot}/lib/modules/{release}"),
        format!("/lib/modules/{release}"),
    ] {
        let Some(index) = super::module_index(sys, &dir) else {
            continue;
        };
        if index.carries("nvidia") {
            return Some((dir, index));
        }
    }
    None
}
