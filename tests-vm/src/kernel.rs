//! The kernel fixture: Debian's stock 6.1 kernel, fetched with `apt-get
//! download` into `<repo>/.cache/kernel` by scripts/fetch-kernel.sh (depmod'ed,
//! vmlinux extracted). Never the host's /boot or /lib/modules.

use crate::artifacts::workspace_root;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Release, e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// PVH-bootable ELF.
    pub vmlinux: PathBuf,
    /// `depmod -b` base holding lib/modules/<release>.
    pub modules_root: PathBuf,
}

fn fetch() -> Result<Kernel> {
    let root = workspace_root();
    let out = Command::new("bash")
        .arg(root.join("scripts/fetch-kernel.sh"))
        .output()
        .context("run scripts/fetch-kernel.sh")?;
    if !out.status.success() {
        bail!(
            "fetch-kernel.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let release = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dir = root.join(".cache/kernel").join(&release);
    let k = Kernel {
        vmlinux: dir.join("vmlinux"),
        modules_root: dir.join("root"),
        release,
    };
    if !k.vmlinux.is_file() {
        bail!("{} is missing after fetch-kernel.sh", k.vmlinux.display());
    }
    Ok(k)
}

/// Debian's kernel (fetched once per process).
pub fn debian() -> Result<Kernel> {
    static CELL: OnceLock<std::result::Result<Kernel, String>> = OnceLock::new();
    CELL.get_or_init(|| fetch().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The kernel VM tests boot unless they name one: the `kernel/` build (all
/// drivers built in; `scripts/setup.sh` builds it) when present, else
/// Debian's stock kernel.
pub fn default_kernel() -> Result<Kernel> {
    match project_build() {
        Some(k) => Ok(k),
        None => debian(),
    }
}

/// A kernel built from `kernel/` (all drivers built in), when one is present:
/// `<repo>/.cache/kernel-build/vmlinux`.
pub fn project_build() -> Option<Kernel> {
    let dir = workspace_root().join(".cache/kernel-build");
    let vmlinux = dir.join("vmlinux");
    let release = std::fs::read_to_string(dir.join("release")).ok()?;
    vmlinux.is_file().then(|| Kernel {
        release: release.trim().to_string(),
        vmlinux,
        modules_root: dir.join("modules"),
    })
}
