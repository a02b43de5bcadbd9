//! Release artifacts (static `init` and `guest-agent`), built once per test
//! process with the workspace's own cargo configuration.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The build target every binary of the workspace uses (see .cargo/config.toml).
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The cargo target folder (CARGO_TARGET_DIR or `<root>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Paths of the release binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// Static `init`.
    pub init: PathBuf,
    /// Static `guest-agent`.
    pub agent: PathBuf,
    /// Static `vm-helper` (test program for guests).
    pub helper: PathBuf,
    /// `host-sysmgr` (the host-side CLI).
    pub host_sysmgr: PathBuf,
}

fn cargo_release(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--release", "--locked"])
        .args(args)
        .status()
        .context("run cargo build --release")?;
    if !status.success() {
        bail!("cargo build --release {}: {status}", args.join(" "));
    }
    Ok(())
}

fn build() -> Result<Binaries> {
    // Two invocations, so init and the agent are built exactly as users build
    // them (feature unification with the test crates would change them).
    cargo_release(&["-p", "init", "-p", "guest-agent"])?;
    cargo_release(&["-p", "tests-vm", "--bin", "vm-helper"])?;
    cargo_release(&["-p", "host-sysmgr"])?;
    let dir = target_dir().join(TARGET).join("release");
    Ok(Binaries {
        init: dir.join("init"),
        agent: dir.join("guest-agent"),
        helper: dir.join("vm-helper"),
        host_sysmgr: dir.join("host-sysmgr"),
    })
}

/// Build (once per process) and return the release binaries.
pub fn release_binaries() -> Result<Binaries> {
    static CELL: OnceLock<std::result::Result<Binaries, String>> = OnceLock::new();
    CELL.get_or_init(|| build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Where tests write reports (sizes, boot times).
pub fn report_dir() -> Result<PathBuf> {
    let dir = target_dir().join("reports");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}
