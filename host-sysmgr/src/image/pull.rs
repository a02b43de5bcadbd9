//! Pulling an image from a registry into the content-addressed cache
//! (`{data}/system/oci-cache/blobs/sha256/<hex>`, the layout the reference
//! documents name): the manifest (a multi-platform index resolves to this
//! host's platform), the config and every layer, each blob checked against
//! its digest while it is written to a temporary name and renamed, layers
//! fetched in parallel (at most 3 at once). A reference already resolved
//! once is served from the cache with no request at all.

use crate::system::error::{Result, SystemError};
use crate::system::install::{self, mkdirs};
use crate::system::layout::Layout;
use crate::system::record;
use crate::system::registry::{self, Access};
use futures_util::StreamExt;
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Largest image config blob.
const MAX_CONFIG: i64 = 4 << 20;
/// Largest layer blob.
const MAX_LAYER: i64 = 16 << 30;
/// Layers fetched at once.
const PARALLEL: usize = 3;

/// What a pull produced.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// `sha256:<hex>` of the image manifest.
    pub manifest_digest: String,
    /// The image config blob.
    pub config: PathBuf,
    /// The layer blobs, bottom first.
    pub layers: Vec<PathBuf>,
    /// Blobs this pull downloaded (0 when everything was cached).
    pub downloaded: usize,
}

/// `{data}/system/oci-cache`.
pub fn cache_dir(layout: &Layout) -> PathBuf {
    layout.system().join("oci-cache")
}

/// The cache path of blob `sha256:<hex>` (the digest is checked).
pub fn blob_path(layout: &Layout, digest: &str) -> Result<PathBuf> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| {
            crate::system::catalog::is_sha256(h) && h.bytes().all(|b| !b.is_ascii_uppercase())
        })
        .ok_or_else(|| {
            SystemError::Refused(format!(
                "digest {digest:?} is not sha256:<64 lowercase hex>"
            ))
        })?;
    Ok(cache_dir(layout).join("blobs/sha256").join(hex))
}

#[derive(Serialize, Deserialize)]
struct RefRecord {
    reference: String,
    manifest_digest: String,
    manifest: OciImageManifest,
}

fn ref_path(layout: &Layout, reference: &str) -> PathBuf {
    let id = hex::encode(&Sha256::digest(reference.as_bytes())[..16]);
    cache_dir(layout).join("refs").join(format!("{id}.json"))
}

/// Pulls `reference` (anything `docker pull` takes, plain HTTP only for a
/// loopback registry or with `access.insecure`).
pub fn pull(layout: &Layout, reference: &str, access: &Access) -> Result<Pulled> {
    let cached = ref_path(layout, reference);
    if let Ok(rec) = record::read_json::<RefRecord>(&cached) {
        if let Ok(p) = complete(layout, &rec.manifest_digest, &rec.manifest) {
            return Ok(p);
        }
    }
    let r = registry::parse_ref(reference)?;
    let (client, auth) = registry::client(&r, access);
    let (manifest, digest) = registry::block_on(client.pull_image_manifest(&r, &auth))?
        .map_err(|e| registry::registry_err(reference, e))?;
    check_sizes(&manifest, reference)?;
    let wanted: Vec<&OciDescriptor> = std::iter::once(&manifest.config)
        .chain(&manifest.layers)
        .filter(|d| blob_path(layout, &d.digest).is_ok_and(|p| !p.exists()))
        .collect();
    let downloaded = wanted.len();
    let bar = progress(&wanted);
    registry::block_on(async {
        let fetches = wanted.into_iter().map(|d| async {
            let res = fetch_blob(layout, &client, &r, d, reference).await;
            bar.inc(d.size.max(0) as u64);
            res
        });
        let results: Vec<Result<()>> = futures_util::stream::iter(fetches)
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>>>()
    })?
    .inspect_err(|_| {
        // A failed pull leaves none of its blobs behind.
        for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if let Ok(p) = blob_path(layout, &d.digest) {
                let _ = std::fs::remove_file(p);
            }
        }
    })?;
    let rec = RefRecord {
        reference: reference.to_string(),
        manifest_digest: digest.clone(),
        manifest,
    };
    record::write_json(&cached, &rec)?;
    let mut p = complete(layout, &digest, &rec.manifest)?;
    p.downloaded = downloaded;
    Ok(p)
}

/// A bar of the bytes to fetch, on a terminal only.
fn progress(wanted: &[&OciDescriptor]) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if wanted.is_empty() || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let total = wanted.iter().map(|d| d.size.max(0) as u64).sum();
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "pull {bytes}/{total_bytes} {wide_bar} {bytes_per_sec}",
    ) {
        bar.set_style(style);
    }
    bar
}

fn check_sizes(m: &OciImageManifest, reference: &str) -> Result<()> {
    if m.config.size > MAX_CONFIG || m.config.size < 0 {
        return Err(SystemError::TooLarge {
            what: format!("{reference}: image config"),
            limit: MAX_CONFIG as u64,
        });
    }
    if let Some(l) = m.layers.iter().find(|l| l.size > MAX_LAYER || l.size < 0) {
        return Err(SystemError::TooLarge {
            what: format!("{reference}: layer {}", l.digest),
            limit: MAX_LAYER as u64,
        });
    }
    Ok(())
}

/// Every cached reference: (reference or source, manifest digest, manifest).
pub fn refs(layout: &Layout) -> Vec<(String, String, OciImageManifest)> {
    let Ok(rd) = std::fs::read_dir(cache_dir(layout).join("refs")) else {
        return Vec::new();
    };
    let mut out: Vec<_> = rd
        .flatten()
        .filter_map(|e| record::read_json::<RefRecord>(&e.path()).ok())
        .map(|r| (r.reference, r.manifest_digest, r.manifest))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Forgets one cached reference (its blobs stay until `gc`).
pub fn unref(layout: &Layout, key: &str) -> bool {
    std::fs::remove_file(ref_path(layout, key)).is_ok()
}

/// Records that `key` (a reference or a local source) names `digest`.
pub fn remember(
    layout: &Layout,
    key: &str,
    digest: &str,
    manifest: &OciImageManifest,
) -> Result<()> {
    let rec = RefRecord {
        reference: key.to_string(),
        manifest_digest: digest.to_string(),
        manifest: manifest.clone(),
    };
    record::write_json(&ref_path(layout, key), &rec)
}

/// The pull result when every blob of `manifest` is in the cache.
pub fn cached(layout: &Layout, digest: &str, manifest: &OciImageManifest) -> Result<Pulled> {
    complete(layout, digest, manifest)
}

/// The pull result when every blob of `manifest` is in the cache.
fn complete(layout: &Layout, digest: &str, manifest: &OciImageManifest) -> Result<Pulled> {
    let path = |d: &OciDescriptor| -> Result<PathBuf> {
        let p = blob_path(layout, &d.digest)?;
        if p.is_file() {
            Ok(p)
        } else {
            Err(SystemError::NotFound(format!(
                "blob {} is not cached",
                d.digest
            )))
        }
    };
    Ok(Pulled {
        manifest_digest: digest.to_string(),
        config: path(&manifest.config)?,
        layers: manifest.layers.iter().map(path).collect::<Result<_>>()?,
        downloaded: 0,
    })
}

/// Downloads one blob to a temporary file beside its cache path, checks its
/// sha256 and size, and renames it into place.
async fn fetch_blob(
    layout: &Layout,
    client: &oci_client::Client,
    r: &oci_client::Reference,
    d: &OciDescriptor,
    reference: &str,
) -> Result<()> {
    let dest = blob_path(layout, &d.digest)?;
    let dir = dest.parent().unwrap_or(Path::new("."));
    mkdirs(dir)?;
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| SystemError::io(dir, e))?;
    let file = tokio::fs::File::from_std(tmp.reopen().map_err(|e| SystemError::io(tmp.path(), e))?);
    client
        .pull_blob(r, d, file)
        .await
        .map_err(|e| registry::registry_err(reference, e))?;
    let (sha, size) = install::sha256_file(tmp.path())?;
    admit_blob(
        tmp,
        &dest,
        d,
        (&sha, size),
        format!("{reference}: blob {}", d.digest),
    )
}

/// Moves a blob written to `tmp` (with this sha256 and size) into the cache
/// at `dest` when it matches its descriptor; otherwise `tmp` is dropped
/// (removed) and the mismatch named after `what`.
pub(crate) fn admit_blob(
    tmp: tempfile::NamedTempFile,
    dest: &Path,
    d: &OciDescriptor,
    (sha, size): (&str, u64),
    what: String,
) -> Result<()> {
    let want = d.digest.trim_start_matches("sha256:");
    if sha != want || size != d.size.max(0) as u64 {
        return Err(SystemError::Digest {
            what,
            expected: format!("{want} ({} bytes)", d.size),
            actual: format!("{sha} ({size} bytes)"),
        });
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| SystemError::io(tmp.path(), e))?;
    tmp.persist(dest)
        .map_err(|e| SystemError::io(dest, e.error))?;
    Ok(())
}

/// Forgets `reference` after its image could not be built: its record goes,
/// and so do its blobs unless another cached reference uses them.
pub fn forget(layout: &Layout, reference: &str) {
    let path = ref_path(layout, reference);
    let Ok(rec) = record::read_json::<RefRecord>(&path) else {
        return;
    };
    let _ = std::fs::remove_file(&path);
    let mut used = std::collections::HashSet::new();
    if let Ok(rd) = std::fs::read_dir(cache_dir(layout).join("refs")) {
        for e in rd.flatten() {
            if let Ok(other) = record::read_json::<RefRecord>(&e.path()) {
                used.extend(
                    std::iter::once(other.manifest.config.digest)
                        .chain(other.manifest.layers.into_iter().map(|l| l.digest)),
                );
            }
        }
    }
    let mine = std::iter::once(&rec.manifest.config).chain(&rec.manifest.layers);
    for d in mine.filter(|d| !used.contains(&d.digest)) {
        if let Ok(p) = blob_path(layout, &d.digest) {
            let _ = std::fs::remove_file(p);
        }
    }
}
