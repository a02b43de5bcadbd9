//! Disk images a host hands a guest: the config disk, a rootfs image from a
//! folder, an empty overlay disk. Built with the real mkfs tools, never by
//! mounting anything.

use guest_contract::config::Config;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors building disks.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A tool could not be run.
    #[error("cannot run {tool}")]
    Spawn {
        /// Tool name.
        tool: String,
        /// Why.
        source: std::io::Error,
    },
    /// A tool ran and failed.
    #[error("{tool} failed: {stderr}")]
    Failed {
        /// Tool name.
        tool: String,
        /// Its stderr.
        stderr: String,
    },
    /// Filesystem I/O.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Root filesystem formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootFs {
    /// ext4 without a journal (read-only use).
    Ext4,
    /// EROFS.
    Erofs,
}

fn run(tool: &str, cmd: &mut Command) -> Result<(), DiskError> {
    let out = cmd.output().map_err(|source| DiskError::Spawn {
        tool: tool.into(),
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(DiskError::Failed {
        tool: tool.into(),
        stderr,
    })
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> DiskError {
    move |source| DiskError::Io { context, source }
}

/// `mkfs.ext4 -d` from a folder (or empty), 4 KiB blocks.
pub fn mkfs_ext4(
    dir: Option<&Path>,
    img: &Path,
    size_mib: u64,
    journal: bool,
) -> Result<(), DiskError> {
    let _ = std::fs::remove_file(img);
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-q", "-F", "-b", "4096"]);
    if !journal {
        cmd.args(["-O", "^has_journal"]);
    }
    if let Some(d) = dir {
        cmd.arg("-d").arg(d);
    }
    cmd.arg(img).arg(format!("{size_mib}M"));
    run("mkfs.ext4", &mut cmd)
}

/// The config disk exactly as a hypeman host builds it: `config.json`
/// (2-space indented, every hypeman key) on an ext4 without a journal.
pub fn config_disk(config: &Config, img: &Path) -> Result<(), DiskError> {
    let dir = tempfile::tempdir().map_err(io("create temp dir".into()))?;
    let json = config.to_hypeman_json();
    std::fs::write(dir.path().join("config.json"), json).map_err(io("write config.json".into()))?;
    mkfs_ext4(Some(dir.path()), img, 4, false)
}

/// The vsock port the host serves `config.json` on when a guest boots
/// with `hypeman.config=vsock:<port>` (`run --config-via vsock`).
pub const CONFIG_VSOCK_PORT: u32 = 2223;

/// `base` with a second newc archive appended that holds `/config.json`
/// (the kernel unpacks both; init reads it with `hypeman.config=initrd`),
/// written to `work/initrd-with-config.img`.
pub fn initrd_with_config(base: &Path, config: &Config, work: &Path) -> Result<PathBuf, DiskError> {
    use initrd_builder::cpio::{Archive, Entry};
    let mut image = std::fs::read(base).map_err(io(format!("read {}", base.display())))?;
    image.resize(image.len().next_multiple_of(4), 0);
    let mut archive = Archive::new();
    let json = config.to_hypeman_json().into_bytes();
    let cpio_error = |e| DiskError::Io {
        context: "write the config archive".into(),
        source: std::io::Error::other(e),
    };
    archive
        .add(Entry::file("/config.json", 0o600, json))
        .map_err(cpio_error)?;
    image.extend(archive.write(0).map_err(cpio_error)?);
    let path = work.join("initrd-with-config.img");
    std::fs::write(&path, image).map_err(io(format!("write {}", path.display())))?;
    Ok(path)
}

/// Size for an ext4 image of `dir`: content plus headroom.
fn ext4_size_mib(dir: &Path) -> u64 {
    let bytes = dir_bytes(dir);
    (bytes * 3 / 2 / (1 << 20)).max(16) + 16
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => 4096 + dir_bytes(&e.path()),
            _ => 4096 + e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// A read-only root image of a folder.
pub fn rootfs_image(dir: &Path, img: &Path, fs: RootFs) -> Result<(), DiskError> {
    match fs {
        RootFs::Ext4 => mkfs_ext4(Some(dir), img, ext4_size_mib(dir), false),
        RootFs::Erofs => {
            let _ = std::fs::remove_file(img);
            run(
                "mkfs.erofs",
                Command::new("mkfs.erofs").arg("--quiet").arg(img).arg(dir),
            )
        }
    }
}

/// An empty ext4 overlay disk (with a journal: it is written at run time).
pub fn overlay_disk(img: &Path, size_mib: u64) -> Result<(), DiskError> {
    mkfs_ext4(None, img, size_mib, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debugfs_cat(img: &Path, file: &str) -> String {
        let out = Command::new("debugfs")
            .args(["-R", &format!("cat {file}")])
            .arg(img)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn config_disk_holds_hypeman_json() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("config.img");
        let cfg = guest_contract::config::parse_config(br#"{"cmd":["/bin/sh"]}"#)
            .unwrap()
            .config;
        config_disk(&cfg, &img).unwrap();
        let json = debugfs_cat(&img, "/config.json");
        assert_eq!(json, cfg.to_hypeman_json());
        assert!(json.contains("\n  \"volume_mounts\": null"), "{json}");
        let fsck = Command::new("e2fsck")
            .arg("-fn")
            .arg(&img)
            .output()
            .unwrap();
        assert!(fsck.status.success());
    }

    #[test]
    fn rootfs_images_of_a_folder() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("root");
        std::fs::create_dir_all(src.join("etc")).unwrap();
        std::fs::write(src.join("etc/hostname"), "guest\n").unwrap();
        let ext4 = d.path().join("root.ext4");
        rootfs_image(&src, &ext4, RootFs::Ext4).unwrap();
        assert_eq!(debugfs_cat(&ext4, "/etc/hostname"), "guest\n");
        let erofs = d.path().join("root.erofs");
        rootfs_image(&src, &erofs, RootFs::Erofs).unwrap();
        let head = std::fs::read(&erofs).unwrap();
        assert_eq!(&head[1024..1028], &0xE0F5_E1E2u32.to_le_bytes());
    }

    #[test]
    fn failures_carry_the_tool_error() {
        let d = tempfile::tempdir().unwrap();
        let err = rootfs_image(
            &d.path().join("missing"),
            &d.path().join("x.img"),
            RootFs::Erofs,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("mkfs.erofs failed"), "{err}");
    }
}
