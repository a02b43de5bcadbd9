//! Images from local files: an OCI image layout folder (`oci:DIR[:TAG]`), an
//! OCI archive (`oci-archive:FILE[:TAG]`, a tar of such a folder) and a
//! `docker save` archive (`docker-archive:FILE`). Their blobs enter the same
//! content-addressed cache as pulled ones, each checked against its digest
//! as it is copied; archives are unpacked (as bundles: nothing escapes) into
//! a staging folder that is removed afterwards.

use super::pull::{self, Pulled};
use crate::system::bundle::{self, Packing};
use crate::system::error::{Result, SystemError};
use crate::system::install::Staged;
use crate::system::layout::Layout;
use oci_client::manifest::{OciDescriptor, OciImageIndex, OciImageManifest};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest manifest, index or docker `manifest.json` read.
const MAX_JSON: u64 = 4 << 20;

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A registry reference.
    Registry(String),
    /// An OCI image layout folder and an optional tag.
    Layout(PathBuf, Option<String>),
    /// A tar of an OCI layout or a `docker save`, and an optional tag.
    Archive(PathBuf, Option<String>),
}

impl Source {
    /// Reads `oci:`, `oci-archive:`, `docker-archive:` prefixes; a path to a
    /// folder holding `oci-layout` or to a tar file without a prefix; else a
    /// registry reference.
    pub fn parse(s: &str) -> Source {
        let split = |rest: &str| -> (PathBuf, Option<String>) {
            match rest.rsplit_once(':') {
                Some((p, tag)) if !tag.contains('/') && !p.is_empty() => {
                    (p.into(), Some(tag.to_string()))
                }
                _ => (rest.into(), None),
            }
        };
        if let Some(rest) = s.strip_prefix("oci:") {
            let (p, t) = split(rest);
            return Source::Layout(p, t);
        }
        if let Some(rest) = s
            .strip_prefix("oci-archive:")
            .or_else(|| s.strip_prefix("docker-archive:"))
        {
            let (p, t) = split(rest);
            return Source::Archive(p, t);
        }
        let p = Path::new(s);
        if p.join("oci-layout").is_file() {
            return Source::Layout(p.into(), None);
        }
        if is_tar(p) {
            return Source::Archive(p.into(), None);
        }
        Source::Registry(s.to_string())
    }
}

/// A file whose header block carries the ustar magic.
pub fn is_tar(p: &Path) -> bool {
    let mut head = [0u8; 263];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head[257..262] == b"ustar")
}

fn read_limited(path: &Path) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(|e| SystemError::io(path, e))?;
    let mut out = Vec::new();
    f.take(MAX_JSON + 1)
        .read_to_end(&mut out)
        .map_err(|e| SystemError::io(path, e))?;
    if out.len() as u64 > MAX_JSON {
        return Err(SystemError::TooLarge {
            what: path.display().to_string(),
            limit: MAX_JSON,
        });
    }
    Ok(out)
}

fn json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &Path) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| SystemError::Json {
        path: what.to_path_buf(),
        source,
    })
}

/// A layout's blob, read whole (manifests, indexes) and checked.
fn layout_blob(dir: &Path, digest: &str) -> Result<Vec<u8>> {
    let hex = digest.strip_prefix("sha256:").unwrap_or_default();
    let path = dir.join("blobs/sha256").join(hex);
    crate::system::layout::check_component("digest", hex)?;
    let bytes = read_limited(&path)?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != hex {
        return Err(SystemError::Digest {
            what: path.display().to_string(),
            expected: hex.into(),
            actual,
        });
    }
    Ok(bytes)
}

/// The image of an OCI layout folder (by tag, or its only image).
pub fn from_layout(layout: &Layout, dir: &Path, tag: Option<&str>, key: &str) -> Result<Pulled> {
    if !dir.join("oci-layout").is_file() {
        return Err(SystemError::NotFound(format!(
            "{} is not an OCI image layout (no oci-layout file)",
            dir.display()
        )));
    }
    let index_path = dir.join("index.json");
    let index: OciImageIndex = json(&read_limited(&index_path)?, &index_path)?;
    let entry = pick(&index, tag, dir)?;
    let (manifest, digest) = resolve_manifest(dir, &entry.digest)?;
    let mut copied = 0;
    for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
        let hex = d.digest.strip_prefix("sha256:").unwrap_or_default();
        copied += usize::from(copy_blob(layout, &dir.join("blobs/sha256").join(hex), d)?);
    }
    finish(layout, key, digest, manifest, copied)
}

fn pick<'a>(
    index: &'a OciImageIndex,
    tag: Option<&str>,
    dir: &Path,
) -> Result<&'a oci_client::manifest::ImageIndexEntry> {
    let name = |e: &oci_client::manifest::ImageIndexEntry| {
        e.annotations
            .as_ref()
            .and_then(|a| a.get("org.opencontainers.image.ref.name"))
            .cloned()
    };
    match tag {
        Some(t) => index
            .manifests
            .iter()
            .find(|e| name(e).as_deref() == Some(t)),
        None if index.manifests.len() == 1 => index.manifests.first(),
        None => None,
    }
    .ok_or_else(|| {
        let tags: Vec<String> = index.manifests.iter().filter_map(name).collect();
        SystemError::NotFound(format!(
            "{}: name an image with :TAG (tags: {})",
            dir.display(),
            tags.join(", ")
        ))
    })
}

/// A manifest digest, or an index resolved to this host's platform.
fn resolve_manifest(dir: &Path, digest: &str) -> Result<(OciImageManifest, String)> {
    let bytes = layout_blob(dir, digest)?;
    let v: serde_json::Value = json(&bytes, dir)?;
    if v.get("manifests").is_none() {
        return Ok((json(&bytes, dir)?, digest.to_string()));
    }
    let index: OciImageIndex = json(&bytes, dir)?;
    let chosen =
        oci_client::client::current_platform_resolver(&index.manifests).ok_or_else(|| {
            SystemError::NotFound(format!(
                "{}: no image for this host's platform in index {digest}",
                dir.display()
            ))
        })?;
    let bytes = layout_blob(dir, &chosen)?;
    Ok((json(&bytes, dir)?, chosen))
}

/// Copies a blob into the cache (temporary name, digest and size checked,
/// rename); false when it was already there.
fn copy_blob(layout: &Layout, src: &Path, d: &OciDescriptor) -> Result<bool> {
    let dest = pull::blob_path(layout, &d.digest)?;
    if dest.is_file() {
        return Ok(false);
    }
    let dir = dest.parent().unwrap_or(Path::new("."));
    crate::system::install::mkdirs(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| SystemError::io(dir, e))?;
    let mut from = std::fs::File::open(src).map_err(|e| SystemError::io(src, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = from.read(&mut buf).map_err(|e| SystemError::io(src, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        std::io::Write::write_all(&mut tmp, &buf[..n])
            .map_err(|e| SystemError::io(tmp.path(), e))?;
        size += n as u64;
    }
    let sha = hex::encode(h.finalize());
    pull::admit_blob(tmp, &dest, d, (&sha, size), src.display().to_string())?;
    Ok(true)
}

fn finish(
    layout: &Layout,
    key: &str,
    digest: String,
    manifest: OciImageManifest,
    copied: usize,
) -> Result<Pulled> {
    pull::remember(layout, key, &digest, &manifest)?;
    let mut p = pull::cached(layout, &digest, &manifest)?;
    p.downloaded = copied;
    Ok(p)
}

/// The image of an OCI archive or a `docker save` archive.
pub fn from_archive(layout: &Layout, file: &Path, tag: Option<&str>, key: &str) -> Result<Pulled> {
    // Not the store's `.staging` (cleared whenever its lock is taken).
    let stage = Staged::new(&super::rootfs::images_dir(layout).join(".staging"))?;
    bundle::extract(file, Packing::Tar, stage.path(), bundle::Limits::default())?;
    let dir = stage.path();
    if dir.join("oci-layout").is_file() && dir.join("index.json").is_file() {
        return from_layout(layout, dir, tag, key);
    }
    if dir.join("manifest.json").is_file() {
        return from_docker_save(layout, dir, file, tag, key);
    }
    Err(SystemError::NotFound(format!(
        "{}: neither an OCI archive (oci-layout, index.json) nor a docker save (manifest.json)",
        file.display()
    )))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// `docker save`: `manifest.json` lists the config and layer files; their
/// digests are computed as they enter the cache, and the manifest is made
/// from them.
fn from_docker_save(
    layout: &Layout,
    dir: &Path,
    file: &Path,
    tag: Option<&str>,
    key: &str,
) -> Result<Pulled> {
    let mpath = dir.join("manifest.json");
    let entries: Vec<SaveEntry> = json(&read_limited(&mpath)?, &mpath)?;
    let entry = match tag {
        Some(t) => entries.iter().find(|e| {
            e.repo_tags
                .iter()
                .flatten()
                .any(|r| r == t || r.ends_with(&format!(":{t}")))
        }),
        None if entries.len() == 1 => entries.first(),
        None => None,
    }
    .ok_or_else(|| {
        SystemError::NotFound(format!(
            "{}: name one of its {} images with :TAG",
            file.display(),
            entries.len()
        ))
    })?;
    let config = add_file(
        layout,
        dir,
        &entry.config,
        "application/vnd.oci.image.config.v1+json",
    )?;
    let layers = entry
        .layers
        .iter()
        .map(|l| add_file(layout, dir, l, "application/vnd.oci.image.layer.v1.tar"))
        .collect::<Result<Vec<_>>>()?;
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
        config,
        layers,
        ..OciImageManifest::default()
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|source| SystemError::Json {
        path: mpath.clone(),
        source,
    })?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    finish(layout, key, digest, manifest, 0)
}

/// A file of an unpacked archive (named relative to it) into the cache.
fn add_file(layout: &Layout, dir: &Path, rel: &str, media_type: &str) -> Result<OciDescriptor> {
    let rel = Path::new(rel);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(SystemError::Refused(format!(
            "docker save lists {} outside the archive",
            rel.display()
        )));
    }
    let src = dir.join(rel);
    let (sha, size) = crate::system::install::sha256_file(&src)?;
    let d = OciDescriptor {
        media_type: media_type.into(),
        digest: format!("sha256:{sha}"),
        size: size as i64,
        ..OciDescriptor::default()
    };
    copy_blob(layout, &src, &d)?;
    Ok(d)
}

/// Pulls or copies the image of `source` (as typed: it names the image in
/// the cache's records) into the cache.
pub fn fetch(
    layout: &Layout,
    source: &str,
    access: &crate::system::registry::Access,
) -> Result<Pulled> {
    match Source::parse(source) {
        Source::Registry(r) => pull::pull(layout, &r, access),
        Source::Layout(d, t) => from_layout(layout, &d, t.as_deref(), source),
        Source::Archive(f, t) => from_archive(layout, &f, t.as_deref(), source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_told_apart() {
        assert_eq!(
            Source::parse("oci:/x/y:v1"),
            Source::Layout("/x/y".into(), Some("v1".into()))
        );
        assert_eq!(
            Source::parse("oci:/x/y"),
            Source::Layout("/x/y".into(), None)
        );
        assert_eq!(
            Source::parse("docker-archive:/a.tar"),
            Source::Archive("/a.tar".into(), None)
        );
        assert_eq!(
            Source::parse("127.0.0.1:5000/a/b:1"),
            Source::Registry("127.0.0.1:5000/a/b:1".into())
        );
    }
}
