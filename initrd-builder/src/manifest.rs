//! The JSON manifest written beside each image. Its exact bytes are what the
//! detached signature covers; field order is fixed by the struct definitions and
//! entries are sorted by path, so the same build gives the same bytes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::compress::Compression;
use crate::cpio::{Entry, EntryKind};

/// Version of the manifest layout.
pub const MANIFEST_FORMAT: u32 = 1;

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Size and hash of a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    /// Bytes.
    pub size: u64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
}

impl Blob {
    /// Size and hash of `data`.
    pub fn of(data: &[u8]) -> Blob {
        Blob {
            size: data.len() as u64,
            sha256: sha256_hex(data),
        }
    }
}

/// The image file: its name, size and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// File name, `initramfs-<name>-<version>-<build_id>.img`.
    pub file: String,
    /// Compressed size in bytes.
    pub size: u64,
    /// SHA-256 of the compressed file.
    pub sha256: String,
    /// Compression of the file.
    pub compression: Compression,
    /// Size of the uncompressed cpio archive.
    pub uncompressed_size: u64,
    /// SHA-256 of the uncompressed cpio archive.
    pub uncompressed_sha256: String,
}

/// The kernel this image pairs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// `uname -r` of the kernel.
    pub release: String,
    /// Modules carried, in `modules.dep` order.
    pub modules: Vec<String>,
    /// Wanted modules that the kernel has built in.
    pub builtin: Vec<String>,
}

/// One archive entry as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Absolute path.
    pub path: String,
    /// `dir`, `file`, `symlink`, `chardev` or `blockdev`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Permission bits as 4 octal digits, e.g. `"0755"`.
    pub mode: String,
    /// Bytes of data (file contents or link target).
    pub size: u64,
    /// SHA-256 of a regular file's contents.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
    /// Target of a symlink.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target: Option<String>,
    /// `major:minor` of a device node.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rdev: Option<String>,
}

impl ManifestEntry {
    /// The record of an archive entry.
    pub fn of(e: &Entry) -> ManifestEntry {
        let (sha256, target, rdev) = match &e.kind {
            EntryKind::File(d) => (Some(sha256_hex(d)), None, None),
            EntryKind::Symlink(t) => (None, Some(t.clone()), None),
            EntryKind::CharDev { major, minor } | EntryKind::BlockDev { major, minor } => {
                (None, None, Some(format!("{major}:{minor}")))
            }
            EntryKind::Dir => (None, None, None),
        };
        ManifestEntry {
            path: e.path.clone(),
            kind: e.kind.name().to_string(),
            mode: format!("{:04o}", e.mode),
            size: e.kind.data().len() as u64,
            sha256,
            target,
            rdev,
        }
    }
}

/// Everything a host needs to pick, pair and trust an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// Image name (`guestinit`).
    pub name: String,
    /// Image version (= the init version).
    pub version: String,
    /// Hash of all inputs: first 16 hex characters of a SHA-256.
    pub build_id: String,
    /// Target architecture.
    pub arch: String,
    /// Version of `/init`.
    pub init_version: String,
    /// Guest-init protocol number spoken by `/init`.
    pub guest_init_protocol: u32,
    /// Version of the carried agent, if any.
    pub agent_version: Option<String>,
    /// Oldest agent version this image works with.
    pub min_agent_version: Option<String>,
    /// The kernel it pairs with (when it carries modules for one).
    pub kernel: Option<KernelInfo>,
    /// Built with debug tools.
    pub debug: bool,
    /// The mtime of every entry (`SOURCE_DATE_EPOCH`).
    pub source_date_epoch: u64,
    /// Version of the builder that made it.
    pub builder_version: String,
    /// The image file.
    pub image: ImageInfo,
    /// Every archive entry, in archive order.
    pub entries: Vec<ManifestEntry>,
}

impl Manifest {
    /// The signed bytes: pretty JSON plus a final newline.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Parses manifest bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The common stem of the three files: `initramfs-<name>-<version>-<build_id>`.
    pub fn file_stem(&self) -> String {
        file_stem(&self.name, &self.version, &self.build_id)
    }
}

/// `initramfs-<name>-<version>-<build_id>`.
pub fn file_stem(name: &str, version: &str, build_id: &str) -> String {
    format!("initramfs-{name}-{version}-{build_id}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn entries_record_kind_specifics() {
        let f = ManifestEntry::of(&Entry::file("/init", 0o755, b"x".to_vec()));
        assert_eq!(f.mode, "0755");
        assert_eq!(f.sha256.as_deref(), Some(sha256_hex(b"x").as_str()));
        let l = ManifestEntry::of(&Entry::symlink("/bin/sh", "busybox"));
        assert_eq!(l.target.as_deref(), Some("busybox"));
        let d = ManifestEntry::of(&Entry::char_dev("/dev/null", 0o666, 1, 3));
        assert_eq!(d.rdev.as_deref(), Some("1:3"));
        let json = serde_json::to_string(&d).unwrap();
        assert!(!json.contains("sha256"), "{json}");
    }
}
