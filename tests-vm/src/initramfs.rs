//! The initramfs under test: built by our initrd-builder from freshly built
//! static binaries and the kernel fixture's modules, cached per variant.

use crate::artifacts::{release_binaries, target_dir, workspace_root};
use crate::kernel::Kernel;
use anyhow::{Context, Result};
use initrd_builder::spec::FileSpec;
use initrd_builder::{BuildOptions, Compression, Spec};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// What varies between initramfs images in tests.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Variant {
    /// Compression.
    pub compression: String,
    /// Extra files: (host source, path in the image).
    pub extra: Vec<(PathBuf, String)>,
}

impl Default for Variant {
    fn default() -> Self {
        Variant {
            compression: "gzip".into(),
            extra: Vec::new(),
        }
    }
}

fn build(kernel: &Kernel, v: &Variant) -> Result<PathBuf> {
    release_binaries()?;
    let mut spec = Spec::load(&workspace_root().join("initrd-builder/specs/guestinit.toml"))?;
    let modules = kernel
        .modules_root
        .join("lib/modules")
        .join(&kernel.release);
    if !modules.is_dir() {
        // A kernel with every driver built in (kernel/): no modules to carry.
        spec.kernel = None;
    }
    for (src, dest) in &v.extra {
        spec.files.push(FileSpec {
            src: src.display().to_string(),
            dest: dest.clone(),
            mode: None,
            debug: false,
        });
    }
    let mut opts = BuildOptions::default();
    opts.vars.insert("kver".into(), kernel.release.clone());
    opts.vars
        .insert("target_dir".into(), target_dir().display().to_string());
    opts.compression = Some(
        v.compression
            .parse::<Compression>()
            .map_err(anyhow::Error::msg)?,
    );
    opts.max_size = Some(256 << 20);
    let out = initrd_builder::build(&spec, &opts).context("build initramfs")?;
    let extra = if v.extra.is_empty() { "" } else { "-extra" };
    let name = format!("initramfs-{}-{}{extra}", kernel.release, v.compression);
    let dir = target_dir().join("vm-fixtures").join(name);
    // One image per variant: drop the ones earlier builds left behind.
    let _ = std::fs::remove_dir_all(&dir);
    let paths = out.write_to(&dir)?;
    Ok(paths.image)
}

/// The initramfs for `kernel` and `variant`, built once per process.
pub fn image(kernel: &Kernel, variant: &Variant) -> Result<PathBuf> {
    static CACHE: Mutex<BTreeMap<(String, Variant), PathBuf>> = Mutex::new(BTreeMap::new());
    let key = (kernel.release.clone(), variant.clone());
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = cache.get(&key) {
        return Ok(p.clone());
    }
    let p = build(kernel, variant)?;
    cache.insert(key, p.clone());
    Ok(p)
}
