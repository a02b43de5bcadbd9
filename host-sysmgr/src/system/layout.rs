//! Where system files live under the data folder.

use super::error::{Result, SystemError};
use std::path::{Path, PathBuf};

/// Environment variable naming the data folder (after `--data-dir`).
pub const DATA_DIR_ENV: &str = "GUESTINIT_DATA_DIR";

/// The data folder: `flag`, else `$GUESTINIT_DATA_DIR`, else
/// `$XDG_DATA_HOME/guestinit`, else `~/.local/share/guestinit`.
pub fn data_dir(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = env(DATA_DIR_ENV) {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = env("XDG_DATA_HOME") {
        return Ok(PathBuf::from(p).join("guestinit"));
    }
    env("HOME")
        .map(|h| PathBuf::from(h).join(".local/share/guestinit"))
        .ok_or_else(|| {
            SystemError::NotFound(format!(
                "no data folder: pass --data-dir, or set {DATA_DIR_ENV} or HOME"
            ))
        })
}

/// This host's architecture in the layout's spelling (`x86_64`, `aarch64`).
pub fn host_arch() -> &'static str {
    std::env::consts::ARCH
}

/// Checks a version, build id or arch used as one path component.
pub fn check_component(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(SystemError::Refused(format!(
            "{what} {s:?}: use 1-128 letters, digits, '.', '_', '-', '+' (not starting with '.')"
        )))
    }
}

/// The paths of one data folder.
#[derive(Debug, Clone)]
pub struct Layout {
    data: PathBuf,
}

impl Layout {
    /// The layout under `data`.
    pub fn new(data: impl Into<PathBuf>) -> Self {
        Layout { data: data.into() }
    }

    /// The data folder.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// `{data}/system`.
    pub fn system(&self) -> PathBuf {
        self.data.join("system")
    }

    /// `{data}/system/kernel`.
    pub fn kernels(&self) -> PathBuf {
        self.system().join("kernel")
    }

    /// `{data}/system/kernel/<version>/<arch>`.
    pub fn kernel_dir(&self, version: &str, arch: &str) -> PathBuf {
        self.kernels().join(version).join(arch)
    }

    /// `{data}/system/initrd/<arch>`.
    pub fn initrds(&self, arch: &str) -> PathBuf {
        self.system().join("initrd").join(arch)
    }

    /// `{data}/system/initrd/<arch>/<build>`.
    pub fn initrd_dir(&self, arch: &str, build: &str) -> PathBuf {
        self.initrds(arch).join(build)
    }

    /// `{data}/system/initrd/<arch>/latest` (a relative symlink to the default build).
    pub fn initrd_latest(&self, arch: &str) -> PathBuf {
        self.initrds(arch).join("latest")
    }

    /// Resumable partial downloads, named by what they will be.
    pub fn partial(&self) -> PathBuf {
        self.system().join(".partial")
    }

    /// Staging folders of installs in progress.
    pub fn staging(&self) -> PathBuf {
        self.system().join(".staging")
    }

    /// Defaults, history, pins, boot outcomes and trusted-on-first-use digests.
    pub fn state(&self) -> PathBuf {
        self.system().join("state.json")
    }

    /// The lock every change takes.
    pub fn lock(&self) -> PathBuf {
        self.system().join(".lock")
    }

    /// The key that signs initrds built on this host.
    pub fn signing_key(&self) -> PathBuf {
        self.system().join("keys/initrd.key")
    }

    /// Its public half.
    pub fn public_key(&self) -> PathBuf {
        self.system().join("keys/initrd.pub")
    }

    /// The operator's catalog file, read when present.
    pub fn catalog(&self) -> PathBuf {
        self.system().join("catalog.toml")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components() {
        for ok in ["6.1.158", "6.12.8-guestinit.1", "x86_64", "abc+1"] {
            check_component("v", ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "ä",
            &"x".repeat(129),
        ] {
            assert!(check_component("v", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn layout_paths() {
        let l = Layout::new("/d");
        assert_eq!(
            l.kernel_dir("6.1", "x86_64"),
            Path::new("/d/system/kernel/6.1/x86_64")
        );
        assert_eq!(
            l.initrd_dir("x86_64", "b1"),
            Path::new("/d/system/initrd/x86_64/b1")
        );
        assert_eq!(
            l.initrd_latest("x86_64"),
            Path::new("/d/system/initrd/x86_64/latest")
        );
    }

    #[test]
    fn data_dir_prefers_the_flag() {
        assert_eq!(
            data_dir(Some(Path::new("/x"))).unwrap(),
            PathBuf::from("/x")
        );
    }
}
