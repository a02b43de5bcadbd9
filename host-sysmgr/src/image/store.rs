//! The image store's housekeeping: `images ls`, `images rm`, and a GC of
//! blobs and root images no cached reference uses any more.

use super::pull::{self, cache_dir};
use super::rootfs::images_dir;
use crate::system::error::{Result, SystemError};
use crate::system::layout::Layout;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// One image as `images ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ImageRow {
    /// `sha256:<hex>` of the manifest.
    pub digest: String,
    /// References (or local sources) that name it.
    pub references: Vec<String>,
    /// Size of its root image, when built.
    pub root_image_size: Option<u64>,
    /// Size of its cached blobs.
    pub blob_size: u64,
}

/// Every cached image, by manifest digest.
pub fn list(layout: &Layout) -> Vec<ImageRow> {
    let mut rows: BTreeMap<String, ImageRow> = BTreeMap::new();
    for (key, digest, manifest) in pull::refs(layout) {
        let row = rows.entry(digest.clone()).or_insert_with(|| {
            let hex = digest.trim_start_matches("sha256:");
            let dir = images_dir(layout).join(hex);
            let root_image_size = ["rootfs.erofs", "rootfs.ext4"]
                .iter()
                .find_map(|f| std::fs::metadata(dir.join(f)).ok().map(|m| m.len()));
            let blob_size = std::iter::once(&manifest.config)
                .chain(&manifest.layers)
                .map(|d| d.size.max(0) as u64)
                .sum();
            ImageRow {
                digest: digest.clone(),
                references: Vec::new(),
                root_image_size,
                blob_size,
            }
        });
        row.references.push(key);
    }
    rows.into_values().collect()
}

/// Forgets `name` — a reference as cached, or a manifest digest (`sha256:…`
/// or at least 12 hex digits) for every reference to it — then collects
/// what nothing uses any more. Returns what went.
pub fn remove(layout: &Layout, name: &str) -> Result<Collected> {
    let refs = pull::refs(layout);
    let hex = name.trim_start_matches("sha256:");
    let by_digest = hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    let hits: Vec<&String> = refs
        .iter()
        .filter(|(k, d, _)| {
            k == name || (by_digest && d.trim_start_matches("sha256:").starts_with(hex))
        })
        .map(|(k, _, _)| k)
        .collect();
    if hits.is_empty() {
        return Err(SystemError::NotFound(format!(
            "no cached image {name:?} (see `images ls`)"
        )));
    }
    for k in hits {
        pull::unref(layout, k);
    }
    gc(layout)
}

/// What a GC removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Collected {
    /// Blobs removed.
    pub blobs: usize,
    /// Root images removed.
    pub root_images: usize,
    /// Bytes freed.
    pub bytes: u64,
}

/// Removes every blob and root image that no cached reference uses.
pub fn gc(layout: &Layout) -> Result<Collected> {
    let refs = pull::refs(layout);
    let mut blobs: HashSet<String> = HashSet::new();
    let mut images: HashSet<String> = HashSet::new();
    for (_, digest, m) in &refs {
        images.insert(digest.trim_start_matches("sha256:").to_string());
        blobs.extend(
            std::iter::once(&m.config)
                .chain(&m.layers)
                .map(|d| d.digest.trim_start_matches("sha256:").to_string()),
        );
    }
    let mut out = Collected::default();
    let blob_dir = cache_dir(layout).join("blobs/sha256");
    for e in std::fs::read_dir(&blob_dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !blobs.contains(&name) {
            out.bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(e.path()).map_err(|err| SystemError::io(e.path(), err))?;
            out.blobs += 1;
        }
    }
    for e in std::fs::read_dir(images_dir(layout))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == ".staging" || images.contains(&name) {
            continue;
        }
        out.bytes += dir_size(&e.path());
        std::fs::remove_dir_all(e.path()).map_err(|err| SystemError::io(e.path(), err))?;
        out.root_images += 1;
    }
    Ok(out)
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}
