//! `kernel import DIR`: install a kernel built on this host by `kernel/build.sh`
//! (a folder with `vmlinux`, `kernel-headers.tar.gz` and the `manifest.json`
//! naming their sha256 and size). Each file is copied into a staging folder
//! while it is hashed, checked against the folder's manifest, and the whole
//! kernel moved into place at once.

use super::error::{Result, SystemError};
use super::install::Staged;
use super::layout::check_component;
use super::record::{self, FileRecord, KernelRecord, Trust};
use super::store::Store;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

#[derive(Deserialize)]
struct BuildManifest {
    kind: String,
    release: String,
    arch: String,
    #[serde(default)]
    config_key: String,
    files: BTreeMap<String, Sum>,
}

#[derive(Deserialize)]
struct Sum {
    sha256: String,
    size: u64,
}

impl Store {
    /// Imports a `kernel/` build folder as `version` (default
    /// `<release>-<first 8 of its config key>`).
    pub fn import_kernel(&self, dir: &Path, version: Option<&str>) -> Result<KernelRecord> {
        let m: BuildManifest =
            record::read_json(&dir.join("manifest.json")).map_err(|e| SystemError::Kernel {
                path: dir.to_path_buf(),
                message: format!("not a kernel/ build folder ({})", crate::chain(&e)),
            })?;
        if m.kind != "kernel" || m.arch != self.arch() {
            return Err(SystemError::Kernel {
                path: dir.to_path_buf(),
                message: format!(
                    "a {} build for {}, not a kernel for {}",
                    m.kind,
                    m.arch,
                    self.arch()
                ),
            });
        }
        let version = match version {
            Some(v) => v.to_string(),
            None => default_version(&m),
        };
        check_component("kernel version", &version)?;
        let lock = self.lock()?;
        let stage = Staged::new(&self.layout().staging())?;
        let vmlinux = copy_checked(dir, "vmlinux", &m, stage.path())?;
        let headers = match m.files.contains_key("kernel-headers.tar.gz") {
            true => Some(copy_checked(
                dir,
                "kernel-headers.tar.gz",
                &m,
                stage.path(),
            )?),
            false => None,
        };
        let rec = KernelRecord {
            name: "guestinit".into(),
            version: version.clone(),
            arch: self.arch().to_string(),
            source: format!("import {}", dir.display()),
            trust: Trust::Local,
            release: Some(m.release.clone()),
            vmlinux,
            headers,
            installed_at: record::now(),
        };
        let dest = self.layout().kernel_dir(&version, self.arch());
        if self.verify_kernel(&version).is_ok() {
            return Err(SystemError::Refused(format!(
                "kernel {version} is already installed (remove it with `gc`, or import under another --version)"
            )));
        }
        self.commit_kernel(stage, &rec, &dest)?;
        self.default_if_none(&lock, &version)?;
        Ok(rec)
    }
}

fn default_version(m: &BuildManifest) -> String {
    let key: String = m.config_key.chars().take(8).collect();
    if key.is_empty() {
        m.release.clone()
    } else {
        format!("{}-{key}", m.release)
    }
}

/// Copies `dir/name` into `stage` while hashing it; refuses a file that does
/// not match the build manifest.
fn copy_checked(dir: &Path, name: &str, m: &BuildManifest, stage: &Path) -> Result<FileRecord> {
    let want = m.files.get(name).ok_or_else(|| SystemError::Kernel {
        path: dir.join("manifest.json"),
        message: format!("lists no {name}"),
    })?;
    let src = dir.join(name);
    let dest = stage.join(name);
    let mut from = std::fs::File::open(&src).map_err(|e| SystemError::io(&src, e))?;
    let mut to = std::fs::File::create(&dest).map_err(|e| SystemError::io(&dest, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = from.read(&mut buf).map_err(|e| SystemError::io(&src, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        to.write_all(&buf[..n])
            .map_err(|e| SystemError::io(&dest, e))?;
        size += n as u64;
    }
    let sha256 = hex::encode(h.finalize());
    if sha256 != want.sha256 || size != want.size {
        return Err(SystemError::Digest {
            what: src.display().to_string(),
            expected: format!("{} ({} bytes)", want.sha256, want.size),
            actual: format!("{sha256} ({size} bytes)"),
        });
    }
    Ok(FileRecord {
        file: name.to_string(),
        sha256,
        size,
    })
}
