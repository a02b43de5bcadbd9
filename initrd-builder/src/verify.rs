//! Verification: the signature over the exact manifest bytes first, then the
//! manifest, then the image's size and SHA-256; optionally ("deep") every entry of
//! the decompressed archive against the manifest.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cpio;
use crate::manifest::{Manifest, ManifestEntry, MANIFEST_FORMAT};
use crate::sign::{self, VerifyingKey};
use crate::unpack::{self, UnpackError, Unpacked};
use crate::InitrdError;

/// Why an image is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The signature file is not 64 bytes of hex.
    #[error("signature file is malformed")]
    SignatureEncoding(#[source] sign::KeyError),
    /// The signature does not verify.
    #[error("signature does not match the manifest: wrong key, or the manifest or signature was altered")]
    SignatureMismatch,
    /// The (signed) manifest does not parse.
    #[error("manifest is not valid")]
    Manifest(#[source] serde_json::Error),
    /// The (signed) manifest has a layout this build does not read.
    #[error("manifest format {found} is not supported (this build reads {MANIFEST_FORMAT})")]
    ManifestFormat {
        /// Its `format`.
        found: u32,
    },
    /// The image's size is not the one signed.
    #[error("image is {actual} bytes, the manifest says {expected}: image altered or truncated")]
    ImageSize {
        /// From the manifest.
        expected: u64,
        /// Of the file.
        actual: u64,
    },
    /// The image's hash is not the one signed.
    #[error("image sha256 is {actual}, the manifest says {expected}: image altered")]
    ImageHash {
        /// From the manifest.
        expected: String,
        /// Of the file.
        actual: String,
    },
    /// The image does not unpack as the kernel would unpack it.
    #[error("image does not unpack")]
    Unpack(#[source] UnpackError),
    /// The archive's contents differ from the manifest.
    #[error("archive contents differ from the manifest: {0}")]
    Contents(String),
}

/// Largest manifest file read (a manifest of 10,000 entries is ~2 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// The three files of one build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactPaths {
    /// `<stem>.img`.
    pub image: PathBuf,
    /// `<stem>.manifest.json`.
    pub manifest: PathBuf,
    /// `<stem>.sig`.
    pub signature: PathBuf,
}

impl ArtifactPaths {
    /// The files of `stem` in `dir`.
    pub fn in_dir(dir: &Path, stem: &str) -> Self {
        ArtifactPaths {
            image: dir.join(format!("{stem}.img")),
            manifest: dir.join(format!("{stem}.manifest.json")),
            signature: dir.join(format!("{stem}.sig")),
        }
    }

    /// The manifest and signature beside an image (`X.img` → `X.manifest.json`,
    /// `X.sig`; an image without `.img` gets the suffixes appended).
    pub fn for_image(image: &Path) -> Self {
        let name = image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = name.strip_suffix(".img").unwrap_or(&name);
        let dir = image.parent().unwrap_or(Path::new(""));
        ArtifactPaths {
            image: image.to_path_buf(),
            ..Self::in_dir(dir, stem)
        }
    }
}

/// Checks the signature over `manifest_bytes`, then parses them.
pub fn verify_manifest(
    manifest_bytes: &[u8],
    signature_text: &str,
    key: &VerifyingKey,
) -> Result<Manifest, VerifyError> {
    let sig = sign::decode_signature(signature_text).map_err(VerifyError::SignatureEncoding)?;
    if !sign::verify(key, manifest_bytes, &sig) {
        return Err(VerifyError::SignatureMismatch);
    }
    let manifest = Manifest::from_bytes(manifest_bytes).map_err(VerifyError::Manifest)?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(VerifyError::ManifestFormat {
            found: manifest.format,
        });
    }
    Ok(manifest)
}

/// Compares an image's size and hash with the manifest.
pub fn check_image(image: &[u8], manifest: &Manifest) -> Result<(), VerifyError> {
    check_size_and_hash(
        image.len() as u64,
        &hex::encode(Sha256::digest(image)),
        manifest,
    )
}

fn check_size_and_hash(size: u64, sha256: &str, m: &Manifest) -> Result<(), VerifyError> {
    if size != m.image.size {
        return Err(VerifyError::ImageSize {
            expected: m.image.size,
            actual: size,
        });
    }
    if sha256 != m.image.sha256 {
        let (expected, actual) = (m.image.sha256.clone(), sha256.to_string());
        return Err(VerifyError::ImageHash { expected, actual });
    }
    Ok(())
}

/// Streams an image file (a regular file) through SHA-256 and compares it
/// with the manifest.
pub fn check_image_file(path: &Path, manifest: &Manifest) -> Result<(), InitrdError> {
    hash_image(unpack::open_image_file(path)?, path, manifest)
}

fn hash_image(mut f: std::fs::File, path: &Path, manifest: &Manifest) -> Result<(), InitrdError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| InitrdError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(check_size_and_hash(
        size,
        &hex::encode(hasher.finalize()),
        manifest,
    )?)
}

/// Signature, manifest and image hash, all in memory.
pub fn verify(
    image: &[u8],
    manifest_bytes: &[u8],
    signature_text: &str,
    key: &VerifyingKey,
) -> Result<Manifest, VerifyError> {
    let manifest = verify_manifest(manifest_bytes, signature_text, key)?;
    check_image(image, &manifest)?;
    Ok(manifest)
}

/// Unpacks the image as the kernel would and checks that it holds exactly
/// the manifest's entries (type, mode, size, hash, link target, device
/// numbers, uid/gid 0) in one archive of the manifest's compression: an entry
/// the manifest does not list (in a second archive, say) is an error.
pub fn check_contents(image: &[u8], manifest: &Manifest) -> Result<(), VerifyError> {
    let unpacked = unpack::unpack(image).map_err(VerifyError::Unpack)?;
    check_entries(&unpacked, manifest)?;
    let bad = VerifyError::Contents;
    let [archive] = unpacked.archives.as_slice() else {
        let n = unpacked.archives.len();
        return Err(bad(format!(
            "the image holds {n} archives, the manifest describes one"
        )));
    };
    if archive.compression != manifest.image.compression {
        return Err(bad(format!(
            "image is {}, manifest says {}",
            archive.compression, manifest.image.compression
        )));
    }
    if archive.sha256 != manifest.image.uncompressed_sha256 {
        return Err(bad("uncompressed archive hash differs".into()));
    }
    Ok(())
}

fn check_entries(unpacked: &Unpacked, manifest: &Manifest) -> Result<(), VerifyError> {
    let bad = VerifyError::Contents;
    let mut count = 0;
    for (i, (a, r)) in unpacked.entries().enumerate() {
        count += 1;
        let Some(m) = manifest.entries.get(i) else {
            return Err(bad(format!(
                "entry /{} ({}) is not in the manifest",
                cpio::escape(&r.name),
                unpacked.archives[a].describe()
            )));
        };
        if &record_of(r) != m || r.uid != 0 || r.gid != 0 {
            return Err(bad(format!("entry {} differs", cpio::escape(&m.path))));
        }
    }
    if count != manifest.entries.len() {
        let listed = manifest.entries.len();
        return Err(bad(format!("{count} entries, manifest lists {listed}")));
    }
    Ok(())
}

/// The manifest record of an entry read back from an archive.
pub fn record_of(r: &cpio::RawEntry) -> ManifestEntry {
    let kind = r.kind_name();
    let is = |k: &str| kind == k;
    ManifestEntry {
        path: format!("/{}", r.name),
        kind: kind.to_string(),
        mode: format!("{:04o}", r.mode & 0o7777),
        size: r.data.len() as u64,
        sha256: is("file").then(|| hex::encode(Sha256::digest(&r.data))),
        target: is("symlink").then(|| String::from_utf8_lossy(&r.data).into_owned()),
        rdev: (is("chardev") || is("blockdev")).then(|| format!("{}:{}", r.rdev.0, r.rdev.1)),
    }
}

/// Reads the three files and verifies them; `deep` also checks every entry.
/// The image is looked at first (it must be a regular file), so a missing
/// image is named as such.
pub fn verify_files(
    paths: &ArtifactPaths,
    key: &VerifyingKey,
    deep: bool,
) -> Result<Manifest, InitrdError> {
    let image = unpack::open_image_file(&paths.image)?;
    let sig = sign::read_key_text(&paths.signature)?;
    let manifest = verify_manifest(&read_manifest_file(&paths.manifest)?, &sig, key)?;
    if deep {
        let bytes = unpack::read_image(image, &paths.image)?;
        check_image(&bytes, &manifest)?;
        check_contents(&bytes, &manifest)?;
    } else {
        hash_image(image, &paths.image, &manifest)?;
    }
    Ok(manifest)
}

/// Reads a manifest file of at most [`MAX_MANIFEST_BYTES`].
pub fn read_manifest_file(path: &Path) -> Result<Vec<u8>, InitrdError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| InitrdError::io(path, e))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(InitrdError::FileTooLarge {
            path: path.to_path_buf(),
            limit: MAX_MANIFEST_BYTES,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sibling_paths() {
        let p = ArtifactPaths::for_image(Path::new("/o/initramfs-guestinit-1-ab.img"));
        assert_eq!(
            p.manifest,
            Path::new("/o/initramfs-guestinit-1-ab.manifest.json")
        );
        assert_eq!(p.signature, Path::new("/o/initramfs-guestinit-1-ab.sig"));
        let p = ArtifactPaths::for_image(Path::new("initrd"));
        assert_eq!(p.manifest, Path::new("initrd.manifest.json"));
    }
}
