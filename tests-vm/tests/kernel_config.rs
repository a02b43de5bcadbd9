//! kernel/: the fragments configure a kernel with everything the boot needs
//! built in, and an option that does not survive is named — whether a
//! fragment lost it (kernel/required.config) or a dependency is missing.
//! Configuration only (`build.sh --config-only`, about a minute on a fresh
//! machine: it installs linux-source-6.1 and unpacks it into a cache); the
//! full build is `bash kernel/build.sh`.

use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn configure(fragment_dir: Option<&Path>) -> Result<Output> {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("kernel/build.sh")).arg("--config-only");
    if let Some(dir) = fragment_dir {
        cmd.arg("--fragment-dir").arg(dir);
    }
    cmd.output().context("run kernel/build.sh")
}

/// A copy of the fragments without the line `option`.
fn fragments_without(option: &str) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    for entry in std::fs::read_dir(repo().join("kernel/fragments"))? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        let kept: String = text
            .lines()
            .filter(|l| *l != option)
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(dir.path().join(path.file_name().context("name")?), kept)?;
    }
    Ok(dir)
}

#[test]
fn the_fragments_configure_and_a_lost_option_is_named() -> Result<()> {
    let out = configure(None)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{stderr}");
    let config_path = String::from_utf8(out.stdout)?;
    let config = std::fs::read_to_string(config_path.trim())?;
    for want in [
        "CONFIG_VIRTIO_VSOCKETS=y",
        "CONFIG_EROFS_FS=y",
        "CONFIG_PVH=y",
        "CONFIG_MODULES=y",
    ] {
        ensure!(config.lines().any(|l| l == want), "{want} missing");
    }

    // A fragment that lost an option the boot needs.
    let lost = fragments_without("CONFIG_EXT4_FS=y")?;
    let out = configure(Some(lost.path()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "a kernel without ext4 was accepted");
    ensure!(
        stderr.contains("kernel config: CONFIG_EXT4_FS is not built in (asked by required.config)"),
        "{stderr}"
    );

    // An option whose dependency no fragment enables.
    let no_net = fragments_without("CONFIG_NET=y")?;
    let out = configure(Some(no_net.path()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success());
    ensure!(
        stderr.contains("kernel config: CONFIG_INET is not built in (asked by base.config)"),
        "{stderr}"
    );
    Ok(())
}
