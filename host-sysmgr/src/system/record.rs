//! What is installed: the record (`manifest.json`) beside each kernel, and
//! the verification stamps (`.verified.json`) that let a warm check stat the
//! files instead of reading them. A stamp holds each file's device, inode,
//! size, mtime and ctime as they were when its sha256 last matched; any write
//! to the file changes its ctime, so a changed file is hashed again before use.

use super::error::{Result, SystemError};
use super::install::{sha256_file, write_atomic};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Largest record read.
const MAX_RECORD: u64 = 1 << 20;

/// How far an artifact's digest is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    /// Matched a checksum published in the catalog.
    Published,
    /// No published checksum: pinned on first download.
    Tofu,
    /// Imported from this host's files, or built here.
    Local,
    /// Pulled from a registry by digest.
    Registry,
}

/// One file of an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Its name in the artifact's folder.
    pub file: String,
    /// Its sha256.
    pub sha256: String,
    /// Its size.
    pub size: u64,
}

impl FileRecord {
    /// The record of `dir/name` as it is now.
    pub fn of(dir: &Path, name: &str) -> Result<Self> {
        let (sha256, size) = sha256_file(&dir.join(name))?;
        Ok(FileRecord {
            file: name.to_string(),
            sha256,
            size,
        })
    }
}

/// `manifest.json` of an installed kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelRecord {
    /// Family name.
    pub name: String,
    /// Version (its folder).
    pub version: String,
    /// Architecture.
    pub arch: String,
    /// The URL, registry reference or folder it came from.
    pub source: String,
    /// How its digest is trusted.
    pub trust: Trust,
    /// The kernel `uname -r` reports, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// The PVH-bootable ELF.
    pub vmlinux: FileRecord,
    /// The headers tarball, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<FileRecord>,
    /// `modules.tar`: the boot modules of a kernel whose drivers are not
    /// built in (`lib/modules/<release>/…`, index files included), carried
    /// into the initrd built for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules: Option<FileRecord>,
    /// When it was installed (seconds since the epoch).
    pub installed_at: u64,
}

impl KernelRecord {
    /// Its files.
    pub fn files(&self) -> Vec<FileRecord> {
        std::iter::once(self.vmlinux.clone())
            .chain(self.headers.clone())
            .chain(self.modules.clone())
            .collect()
    }
}

/// Reads a JSON record of at most 1 MiB.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| SystemError::io(path, e))?;
    let mut bytes = Vec::new();
    f.take(MAX_RECORD)
        .read_to_end(&mut bytes)
        .map_err(|e| SystemError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| SystemError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a JSON record atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| SystemError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// A file's identity and state (device, inode, size, mtime, ctime): what a
/// cheap check compares instead of reading the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    /// The stamp of `path` now.
    pub fn of(path: &Path) -> Result<Self> {
        let m = std::fs::metadata(path).map_err(|e| SystemError::io(path, e))?;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Ok(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        })
    }
}

const STAMPS: &str = ".verified.json";

/// Checks `files` in `dir`: a file whose stamp still matches is taken as
/// verified without reading it; any other is hashed and compared with its
/// record, and its stamp renewed when it matches. Returns how many files
/// were hashed.
pub fn verify_files(dir: &Path, files: &[FileRecord]) -> Result<usize> {
    let stamps_path = dir.join(STAMPS);
    let mut stamps: BTreeMap<String, Stamp> = read_json(&stamps_path).unwrap_or_default();
    let mut hashed = 0;
    for f in files {
        let path = dir.join(&f.file);
        let now = Stamp::of(&path)?;
        if stamps.get(&f.file) == Some(&now) && now.size == f.size {
            continue;
        }
        hashed += 1;
        let (sha256, size) = sha256_file(&path)?;
        if sha256 != f.sha256 || size != f.size {
            stamps.remove(&f.file);
            let _ = write_json(&stamps_path, &stamps);
            return Err(SystemError::Corrupt {
                path,
                message: format!(
                    "sha256 {sha256} ({size} bytes) does not match its record {} ({} bytes)",
                    f.sha256, f.size
                ),
            });
        }
        stamps.insert(f.file.clone(), now);
    }
    if hashed > 0 {
        write_json(&stamps_path, &stamps)?;
    }
    Ok(hashed)
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_byte_is_caught_and_an_unchanged_file_is_not_read() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("vmlinux"), vec![7u8; 4096]).unwrap();
        let rec = FileRecord::of(d.path(), "vmlinux").unwrap();
        assert_eq!(
            verify_files(d.path(), std::slice::from_ref(&rec)).unwrap(),
            1
        );
        assert_eq!(
            verify_files(d.path(), std::slice::from_ref(&rec)).unwrap(),
            0
        );
        {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(d.path().join("vmlinux"))
                .unwrap();
            f.write_all_at(&[8], 100).unwrap();
        }
        let e = verify_files(d.path(), std::slice::from_ref(&rec)).unwrap_err();
        assert!(matches!(e, SystemError::Corrupt { .. }), "{e}");
        // Still caught on the next call (the stamp was dropped).
        assert!(verify_files(d.path(), &[rec]).is_err());
    }
}
