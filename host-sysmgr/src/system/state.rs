//! The store's state (`{data}/system/state.json`): the default kernel and
//! initrd per architecture with their history, per-instance pins, boot
//! outcomes per version, and digests trusted on first use. Read freely;
//! changed only under the store's lock, and written atomically.

use super::error::{Result, SystemError};
use super::install::write_atomic;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

/// Largest state file read.
const MAX_STATE: u64 = 16 << 20;

/// Kernels or initrds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `system/kernel/<version>/<arch>`.
    Kernel,
    /// `system/initrd/<arch>/<build>`.
    Initrd,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Kernel => "kernel",
            Kind::Initrd => "initrd",
        })
    }
}

/// The default of one kind on one architecture.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Track {
    /// The current default.
    pub default: Option<String>,
    /// Earlier defaults, most recent last (what `rollback` returns to).
    #[serde(default)]
    pub history: Vec<String>,
    /// Why the default last changed (shown by `show`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Versions rolled away from automatically (never made default again by
    /// `ensure`; `set-default` still can).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<String>,
}

/// What an instance was started with; a snapshot restore must match it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// Kernel version.
    pub kernel: String,
    /// Initrd build.
    pub initrd: String,
    /// The VMM and its version (e.g. `qemu 7.2.19`).
    pub vmm: String,
}

/// Boots of one version, judged from the serial sentinels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Reached the app (`HYPEMAN-PROGRAM-START`).
    pub ok: u64,
    /// Ended in an `init: ` fatal exit before the app.
    pub failed: u64,
}

/// The whole state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Kernel default per architecture.
    #[serde(default)]
    pub kernel: BTreeMap<String, Track>,
    /// Initrd default per architecture.
    #[serde(default)]
    pub initrd: BTreeMap<String, Track>,
    /// Pins per instance name.
    #[serde(default)]
    pub pins: BTreeMap<String, Pin>,
    /// Boot outcomes per `kind/arch/id`.
    #[serde(default)]
    pub outcomes: BTreeMap<String, Outcome>,
    /// sha256 pinned on first download, per URL.
    #[serde(default)]
    pub tofu: BTreeMap<String, String>,
}

impl State {
    /// Reads the state (a missing file is the empty state).
    pub fn load(path: &Path) -> Result<Self> {
        use std::io::Read;
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(SystemError::io(path, e)),
        };
        let mut bytes = Vec::new();
        f.take(MAX_STATE)
            .read_to_end(&mut bytes)
            .map_err(|e| SystemError::io(path, e))?;
        serde_json::from_slice(&bytes).map_err(|source| SystemError::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes the state atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|source| SystemError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        bytes.push(b'\n');
        write_atomic(path, &bytes)
    }

    /// The track of `kind` on `arch`.
    pub fn track(&self, kind: Kind, arch: &str) -> Track {
        let map = match kind {
            Kind::Kernel => &self.kernel,
            Kind::Initrd => &self.initrd,
        };
        map.get(arch).cloned().unwrap_or_default()
    }

    /// The track of `kind` on `arch`, to change.
    pub fn track_mut(&mut self, kind: Kind, arch: &str) -> &mut Track {
        let map = match kind {
            Kind::Kernel => &mut self.kernel,
            Kind::Initrd => &mut self.initrd,
        };
        map.entry(arch.to_string()).or_default()
    }

    /// Makes `id` the default, remembering the old one.
    pub fn set_default(&mut self, kind: Kind, arch: &str, id: &str, reason: String) {
        let t = self.track_mut(kind, arch);
        if t.default.as_deref() == Some(id) {
            return;
        }
        if let Some(old) = t.default.take() {
            t.history.retain(|h| h != &old);
            t.history.push(old);
        }
        t.history.retain(|h| h != id);
        t.default = Some(id.to_string());
        t.reason = Some(reason);
    }

    /// The key of an outcome.
    pub fn outcome_key(kind: Kind, arch: &str, id: &str) -> String {
        format!("{kind}/{arch}/{id}")
    }
}

/// The store's lock: held (exclusively) by whoever changes the store.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Waits for and takes the lock file at `path`.
    pub fn take(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            super::install::mkdirs(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| SystemError::io(path, e))?;
        file.lock().map_err(|e| SystemError::io(path, e))?;
        Ok(Lock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_keep_a_history() {
        let mut s = State::default();
        s.set_default(Kind::Kernel, "x86_64", "1", "first".into());
        s.set_default(Kind::Kernel, "x86_64", "2", "second".into());
        s.set_default(Kind::Kernel, "x86_64", "3", "third".into());
        s.set_default(Kind::Kernel, "x86_64", "2", "again".into());
        let t = s.track(Kind::Kernel, "x86_64");
        assert_eq!(t.default.as_deref(), Some("2"));
        assert_eq!(t.history, vec!["1", "3"]);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        assert_eq!(State::load(&p).unwrap(), State::default());
        s.save(&p).unwrap();
        assert_eq!(State::load(&p).unwrap(), s);
        std::fs::write(&p, b"{").unwrap();
        assert!(State::load(&p)
            .unwrap_err()
            .to_string()
            .contains("state.json"));
    }
}
