//! Tiny test root filesystems: Debian's busybox-static plus our static
//! `vm-helper`, or a distroless one with the helper alone (no /bin/sh).

use crate::artifacts::release_binaries;
use anyhow::{Context, Result};
use std::path::Path;

/// Which rootfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    /// busybox + vm-helper + a passwd database.
    #[default]
    Busybox,
    /// Only /usr/bin/vm-helper: no shell, no busybox.
    Distroless,
}

const APPLETS: &[&str] = &[
    "sh",
    "echo",
    "cat",
    "ls",
    "env",
    "pwd",
    "id",
    "sleep",
    "kill",
    "seq",
    "tr",
    "true",
    "false",
    "grep",
    "awk",
    "wc",
    "head",
    "sort",
    "sync",
    "mount",
    "dd",
    "uname",
    "sha256sum",
    "mkdir",
    "stat",
    "rm",
    "pidof",
    "ps",
];

fn copy_exec(src: &Path, dst: &Path) -> Result<()> {
    std::fs::copy(src, dst)
        .with_context(|| format!("copy {} to {}", src.display(), dst.display()))?;
    Ok(())
}

/// Fill `dir` with a rootfs of `flavor`.
pub fn populate(dir: &Path, flavor: Flavor) -> Result<()> {
    for d in [
        "usr/bin", "etc", "proc", "sys", "dev", "run", "tmp", "srv", "root",
    ] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    copy_exec(&release_binaries()?.helper, &dir.join("usr/bin/vm-helper"))?;
    if flavor == Flavor::Distroless {
        return Ok(());
    }
    std::fs::create_dir_all(dir.join("bin"))?;
    copy_exec(Path::new("/bin/busybox"), &dir.join("bin/busybox"))?;
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(a))?;
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(dir.join("etc/group"), "root:x:0:\n")?;
    std::fs::write(dir.join("etc/marker"), "from-image\n")?;
    std::fs::write(dir.join("etc/not-executable"), "data\n")?;
    Ok(())
}
