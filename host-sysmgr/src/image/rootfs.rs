//! The read-only root image of a pulled image, built once per manifest
//! digest: `{data}/system/images/<hex>/rootfs.erofs` (or `.ext4`) beside the
//! image's run config (`image.json`). The layers are applied in a staging
//! folder that is removed whatever happens; the finished folder is moved
//! into place at once.

use super::config::{self, RunConfig};
use super::pull::Pulled;
use crate::disks::{self, RootFs};
use crate::system::error::{Result, SystemError};
use crate::system::install::{self, Staged};
use crate::system::layout::Layout;
use crate::system::record;
use std::path::PathBuf;

/// A root image ready to boot.
#[derive(Debug, Clone)]
pub struct RootImage {
    /// The image file (vda).
    pub path: PathBuf,
    /// The image's run config.
    pub config: RunConfig,
    /// Whether this call built it.
    pub built: bool,
}

/// `{data}/system/images`.
pub fn images_dir(layout: &Layout) -> PathBuf {
    layout.system().join("images")
}

/// The root image of `pulled` in `fs` (built when missing).
pub fn root_image(layout: &Layout, pulled: &Pulled, fs: RootFs) -> Result<RootImage> {
    let hex = pulled.manifest_digest.trim_start_matches("sha256:");
    crate::system::layout::check_component("manifest digest", hex)?;
    let file = match fs {
        RootFs::Erofs => "rootfs.erofs",
        RootFs::Ext4 => "rootfs.ext4",
    };
    let dir = images_dir(layout).join(hex);
    let path = dir.join(file);
    if path.is_file() {
        if let Ok(config) = record::read_json(&dir.join("image.json")) {
            return Ok(RootImage {
                path,
                config,
                built: false,
            });
        }
    }
    let run_config = config::read(&pulled.config)?;
    let stage = Staged::new(&images_dir(layout).join(".staging"))?;
    let root = stage.path().join("root");
    install::mkdirs(&root)?;
    super::apply::apply_layers(&root, &pulled.layers, super::apply::Limits::IMAGE)?;
    disks::rootfs_image(&root, &stage.path().join(file), fs).map_err(|e| SystemError::Kernel {
        path: root.clone(),
        message: format!("cannot build the root image: {}", crate::chain(&e)),
    })?;
    std::fs::remove_dir_all(&root).map_err(|e| SystemError::io(&root, e))?;
    record::write_json(&stage.path().join("image.json"), &run_config)?;
    if dir.exists() {
        install::remove_tree(&dir, &images_dir(layout).join(".staging"))?;
    }
    stage.commit(&dir)?;
    Ok(RootImage {
        path,
        config: run_config,
        built: true,
    })
}
