//! The kernel catalog: built-in entries plus the operator's catalog files.

use super::error::{Result, SystemError};
use super::layout::{check_component, Layout};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Environment variable naming an extra catalog file.
pub const CATALOG_ENV: &str = "GUESTINIT_CATALOG";

/// Largest catalog file read.
const MAX_CATALOG: u64 = 1 << 20;

/// How a catalog entry's file is packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum KernelFormat {
    /// An uncompressed ELF `vmlinux` (PVH-bootable).
    #[default]
    #[serde(rename = "vmlinux")]
    Vmlinux,
    /// A tarball holding `vmlinux` and optionally `kernel-headers.tar.gz`.
    #[serde(rename = "tar.gz")]
    TarGz,
    /// The same, zstd-compressed.
    #[serde(rename = "tar.zst")]
    TarZst,
}

/// One kernel a host can download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelEntry {
    /// Family name (e.g. `guestinit`, `firecracker-ci`).
    pub name: String,
    /// Version: the folder name under `system/kernel/`.
    pub version: String,
    /// Architecture (`x86_64`, `aarch64`).
    pub arch: String,
    /// Where to get it (http or https).
    pub url: String,
    /// Published sha256; without it the first download is pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Published size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// How the file is packed.
    #[serde(default)]
    pub format: KernelFormat,
    /// The kernel headers tarball (for DKMS in the guest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_url: Option<String>,
    /// Its sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_sha256: Option<String>,
    /// Its size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_size: Option<u64>,
    /// The kernel `ensure` installs when no default is set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    kernel: Vec<KernelEntry>,
}

/// Every known entry, later sources overriding earlier ones.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Entries with the file they came from.
    pub kernels: Vec<(KernelEntry, String)>,
}

impl Catalog {
    /// The built-in entries, then `{data}/system/catalog.toml`, then
    /// `$GUESTINIT_CATALOG`, then `extra`.
    pub fn load(layout: &Layout, extra: Option<&Path>) -> Result<Self> {
        let mut cat = Catalog::default();
        cat.merge(parse(include_str!("../../catalog.toml"), "built-in")?);
        let env = std::env::var_os(CATALOG_ENV).filter(|v| !v.is_empty());
        let files = [
            Some(layout.catalog()).filter(|p| p.exists()),
            env.map(Into::into),
            extra.map(Path::to_path_buf),
        ];
        for path in files.into_iter().flatten() {
            cat.merge(read(&path)?);
        }
        Ok(cat)
    }

    fn merge(&mut self, entries: Vec<(KernelEntry, String)>) {
        for (e, src) in entries {
            self.kernels
                .retain(|(k, _)| !(k.version == e.version && k.arch == e.arch));
            self.kernels.push((e, src));
        }
    }

    /// The entry of `version` for `arch`.
    pub fn find(&self, version: &str, arch: &str) -> Option<&KernelEntry> {
        self.kernels
            .iter()
            .map(|(k, _)| k)
            .find(|k| k.version == version && k.arch == arch)
    }

    /// The last entry marked `default` for `arch`.
    pub fn default_for(&self, arch: &str) -> Option<&KernelEntry> {
        self.kernels
            .iter()
            .rev()
            .map(|(k, _)| k)
            .find(|k| k.arch == arch && k.default)
    }
}

fn read(path: &Path) -> Result<Vec<(KernelEntry, String)>> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| SystemError::io(path, e))?;
    let mut text = String::new();
    f.take(MAX_CATALOG + 1)
        .read_to_string(&mut text)
        .map_err(|e| SystemError::io(path, e))?;
    let name = path.display().to_string();
    if text.len() as u64 > MAX_CATALOG {
        return Err(SystemError::Catalog {
            path: name,
            message: format!("larger than {MAX_CATALOG} bytes"),
        });
    }
    parse(&text, &name)
}

/// Parses and checks a catalog file's text.
pub fn parse(text: &str, source: &str) -> Result<Vec<(KernelEntry, String)>> {
    let err = |message: String| SystemError::Catalog {
        path: source.to_string(),
        message,
    };
    let file: CatalogFile = toml::from_str(text).map_err(|e| err(e.message().to_string()))?;
    file.kernel
        .into_iter()
        .map(|k| {
            check_entry(&k).map_err(|m| err(format!("kernel {:?}: {m}", k.version)))?;
            Ok((k, source.to_string()))
        })
        .collect()
}

fn check_entry(k: &KernelEntry) -> Result<(), String> {
    check_component("version", &k.version).map_err(|e| e.to_string())?;
    check_component("arch", &k.arch).map_err(|e| e.to_string())?;
    for url in std::iter::once(&k.url).chain(&k.headers_url) {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("url {url:?} is not http(s)"));
        }
    }
    for d in k.sha256.iter().chain(&k.headers_sha256) {
        if !is_sha256(d) {
            return Err(format!("sha256 {d:?} is not 64 hex digits"));
        }
    }
    Ok(())
}

/// 64 hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_parses() {
        let cat = parse(include_str!("../../catalog.toml"), "built-in").unwrap();
        assert!(!cat.is_empty());
    }

    #[test]
    fn later_entries_override_and_bad_ones_are_named() {
        let mut cat = Catalog::default();
        let a = "[[kernel]]\nname='a'\nversion='1'\narch='x86_64'\nurl='http://h/a'\n";
        let b =
            "[[kernel]]\nname='b'\nversion='1'\narch='x86_64'\nurl='http://h/b'\ndefault=true\n";
        cat.merge(parse(a, "a").unwrap());
        cat.merge(parse(b, "b").unwrap());
        assert_eq!(cat.kernels.len(), 1);
        assert_eq!(cat.default_for("x86_64").unwrap().name, "b");
        for bad in [
            "[[kernel]]\nname='a'\nversion='../x'\narch='x86_64'\nurl='http://h/a'\n",
            "[[kernel]]\nname='a'\nversion='1'\narch='x86_64'\nurl='file:///etc/passwd'\n",
            "[[kernel]]\nname='a'\nversion='1'\narch='x86_64'\nurl='http://h'\nsha256='zz'\n",
            "[[kernel]]\nname='a'\nversion='1'\narch='x86_64'\nurl='http://h'\nsurprise=1\n",
        ] {
            let e = parse(bad, "f.toml").unwrap_err().to_string();
            assert!(e.starts_with("catalog f.toml: "), "{e}");
        }
    }
}
