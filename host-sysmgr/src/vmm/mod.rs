//! Virtual machine monitors: one VM description, several backends.
//!
//! [`VmConfig`] says what to boot; a [`Backend`] turns it into a process (QEMU
//! here; Cloud Hypervisor and Firecracker need a hardware KVM). [`Vm`] owns the
//! running process: wait, power-down, quit, kill; the VMM dies with its parent.

pub mod accel;
pub mod cloud_hypervisor;
pub mod firecracker;
pub mod process;
pub mod qemu;
pub mod qmp;
pub mod vhost_vsock;

pub use process::Vm;

use std::path::PathBuf;

/// Errors of the VMM layer.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The configuration cannot be expressed for this backend.
    #[error("invalid vm config: {0}")]
    Config(String),
    /// Starting the VMM process failed.
    #[error("cannot start {program}")]
    Spawn {
        /// The program that failed to start.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// Talking to the VMM's control socket failed.
    #[error("control socket {path}: {reason}")]
    Control {
        /// Socket path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Waiting for the VMM failed or timed out.
    #[error("wait: {0}")]
    Wait(String),
    /// Another I/O error.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Machine model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Machine {
    /// QEMU q35 with PCI virtio devices (disks appear as vda, vdb, … in order).
    #[default]
    Q35,
    /// QEMU microvm with MMIO virtio devices.
    Microvm,
}

/// Accelerator choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// KVM when a hardware KVM module is loaded, else TCG.
    #[default]
    Auto,
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation.
    Tcg,
    /// Software emulation with deterministic instruction counting (QEMU's
    /// `-icount shift=N,sleep=off`): guest time advances 2^N ns per
    /// instruction, so the guest's clock readings are reproducible where
    /// no I/O is waited for. For benchmarks; QEMU only.
    Icount(u8),
}

impl Accel {
    /// Software emulation of either kind.
    pub fn is_tcg(self) -> bool {
        matches!(self, Accel::Tcg | Accel::Icount(_))
    }
}

/// One virtio-blk disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// Raw image file.
    pub path: PathBuf,
    /// Attach read-only.
    pub read_only: bool,
}

/// A user-mode NIC whose only reachable addresses are forwarded loopback ports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Nic {
    /// (host port on 127.0.0.1, guest port) TCP forwards.
    pub host_forwards: Vec<(u16, u16)>,
    /// MAC address, if fixed.
    pub mac: Option<String>,
    /// (guest port on [`GUEST_FORWARD_ADDR`], host port on 127.0.0.1) TCP
    /// forwards the guest may dial: the only host services it can reach.
    pub guest_forwards: Vec<(u16, u16)>,
}

/// The address a guest dials for [`Nic::guest_forwards`] (QEMU user network).
pub const GUEST_FORWARD_ADDR: &str = "10.0.2.100";
/// The host program that relays one forwarded guest connection to a
/// 127.0.0.1 port (busybox's `nc`, from busybox-static).
pub const FORWARD_RELAY: &str = "/bin/busybox";

/// A vsock device exposed to the host as a Unix socket (hybrid vsock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vsock {
    /// Guest context id (≥ 3).
    pub cid: u32,
    /// The host-side Unix socket users dial (`CONNECT <port>`).
    pub uds_path: PathBuf,
    /// QEMU only: the vhost-user socket of a vhost-device-vsock backend.
    pub vhost_user_socket: Option<PathBuf>,
}

/// Everything needed to boot one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Kernel image (a PVH vmlinux or a bzImage).
    pub kernel: PathBuf,
    /// Initramfs, if any.
    pub initrd: Option<PathBuf>,
    /// Kernel command line (backends add what they need, e.g. `panic=-1`).
    pub cmdline: String,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Disks in attachment order.
    pub disks: Vec<Disk>,
    /// Network, if any.
    pub nic: Option<Nic>,
    /// vsock, if any.
    pub vsock: Option<Vsock>,
    /// File that receives the serial console.
    pub serial_log: PathBuf,
    /// Machine model (QEMU).
    pub machine: Machine,
    /// Accelerator.
    pub accel: Accel,
    /// Folder for control sockets and generated files.
    pub runtime_dir: PathBuf,
}

impl VmConfig {
    /// A config with one vCPU, 512 MiB, no disks.
    pub fn new(
        kernel: impl Into<PathBuf>,
        serial_log: impl Into<PathBuf>,
        runtime_dir: impl Into<PathBuf>,
    ) -> Self {
        VmConfig {
            kernel: kernel.into(),
            initrd: None,
            cmdline: "console=ttyS0".into(),
            vcpus: 1,
            memory_mib: 512,
            disks: Vec::new(),
            nic: None,
            vsock: None,
            serial_log: serial_log.into(),
            machine: Machine::Q35,
            accel: Accel::Auto,
            runtime_dir: runtime_dir.into(),
        }
    }

    /// Check what every backend needs.
    pub fn validate(&self) -> Result<(), VmmError> {
        if self.vcpus == 0 || self.memory_mib < 64 {
            return Err(VmmError::Config("need at least 1 vCPU and 64 MiB".into()));
        }
        if let Some(v) = &self.vsock {
            if v.cid < 3 {
                return Err(VmmError::Config(format!(
                    "vsock cid {} is reserved (use ≥ 3)",
                    v.cid
                )));
            }
        }
        if self.disks.len() > 20 {
            return Err(VmmError::Config("at most 20 disks".into()));
        }
        Ok(())
    }
}

/// What a backend produces: the program and its arguments, plus files to write
/// before starting it (e.g. Firecracker's JSON config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Program to run.
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Files to write first: (path, contents).
    pub files: Vec<(PathBuf, String)>,
    /// Control socket, if the backend has one (QMP, CH API, Firecracker API).
    pub control_socket: Option<PathBuf>,
}

/// A VMM backend.
pub trait Backend {
    /// Short name (`qemu`, `cloud-hypervisor`, `firecracker`).
    fn name(&self) -> &'static str;
    /// The process to start for `cfg`.
    fn launch(&self, cfg: &VmConfig) -> Result<Launch, VmmError>;
    /// Ask the guest to power down (ACPI) through the control socket.
    fn power_down_request(&self) -> ControlRequest;
    /// Stop the VMM at once through the control socket.
    fn quit_request(&self) -> ControlRequest;
}

/// A request on a backend's control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlRequest {
    /// QMP: a command name sent after `qmp_capabilities`.
    Qmp(&'static str),
    /// HTTP over the Unix socket: method, path, body.
    Http(&'static str, &'static str, &'static str),
    /// Not supported by this backend (the caller falls back to a signal).
    Unsupported,
}
