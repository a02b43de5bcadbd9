//! Operations on installed versions: default, rollback, garbage collection,
//! per-instance pins, boot outcomes (with automatic rollback) and the
//! version list a control plane reads.

use super::error::{Result, SystemError};
use super::initrd;
use super::install;
use super::layout::check_component;
use super::state::{Kind, Outcome, Pin, State};
use super::store::Store;
use serde::Serialize;

/// Versions `gc` keeps beyond the protected ones.
pub const KEEP: usize = 3;
/// Automatic rollback: boots of a default before its failure rate counts.
pub const MIN_BOOTS: u64 = 5;
/// Automatic rollback: failure rate (percent) above which a default is rolled back.
pub const MAX_FAILURE_PERCENT: u64 = 50;
/// The guest-init protocol versions this host speaks.
pub const PROTOCOLS: &[u32] = &[1];

/// What `gc` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Collected {
    /// Kernel versions removed.
    pub kernels: Vec<String>,
    /// Initrd builds removed.
    pub initrds: Vec<String>,
}

/// What `versions --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    /// The host architecture.
    pub arch: String,
    /// Installed kernel versions.
    pub kernels: Vec<String>,
    /// Catalog kernel versions for this architecture.
    pub available_kernels: Vec<String>,
    /// Installed initrd builds.
    pub initrds: Vec<String>,
    /// Guest-init protocol versions spoken.
    pub guest_init_protocols: Vec<u32>,
    /// The defaults.
    pub defaults: Defaults,
    /// This program's version.
    pub host_sysmgr: String,
}

/// The current defaults.
#[derive(Debug, Clone, Serialize)]
pub struct Defaults {
    /// Kernel version.
    pub kernel: Option<String>,
    /// Initrd build.
    pub initrd: Option<String>,
}

impl Store {
    fn check_installed(&self, kind: Kind, id: &str) -> Result<()> {
        match kind {
            Kind::Kernel => self.verify_kernel(id).map(drop),
            Kind::Initrd => {
                check_component("initrd build", id)?;
                initrd::verify(self.layout(), self.arch(), id).map(drop)
            }
        }
    }

    /// Makes `id` the default of `kind` (installed and verifying only).
    pub fn set_default(&self, kind: Kind, id: &str) -> Result<()> {
        let lock = self.lock()?;
        self.check_installed(kind, id)?;
        self.make_default(&lock, kind, id, "set-default")
    }

    /// Returns to the previous default still installed; says which.
    pub fn rollback(&self, kind: Kind, why: &str) -> Result<String> {
        let lock = self.lock()?;
        self.rollback_locked(&lock, kind, why)
    }

    fn rollback_locked(&self, lock: &super::state::Lock, kind: Kind, why: &str) -> Result<String> {
        let track = self.state()?.track(kind, self.arch());
        let current = track.default.clone().unwrap_or_default();
        let target = track
            .history
            .iter()
            .rev()
            .find(|h| **h != current && self.check_installed(kind, h).is_ok())
            .cloned()
            .ok_or_else(|| {
                SystemError::Refused(format!("no earlier {kind} is installed to roll back to"))
            })?;
        self.make_default(
            lock,
            kind,
            &target,
            &format!("rollback from {current}: {why}"),
        )?;
        let arch = self.arch().to_string();
        self.update(lock, |s| {
            let t = s.track_mut(kind, &arch);
            // The one rolled away from is not where the next rollback goes.
            t.history.retain(|h| *h != target && *h != current);
        })?;
        Ok(target)
    }

    /// Removes old versions: keeps the newest `keep` of each kind, every
    /// default, every pinned version and the rollback target.
    pub fn gc(&self, keep: usize) -> Result<Collected> {
        let _lock = self.lock()?;
        let state = self.state()?;
        let mut out = Collected::default();
        let kernels: Vec<String> = self
            .installed_kernels()?
            .into_iter()
            .map(|r| r.version)
            .collect();
        for v in kernels.iter().skip(keep) {
            if !protected(&state, Kind::Kernel, self.arch(), v) {
                install::remove_tree(&self.layout().kernels().join(v), &self.layout().staging())?;
                out.kernels.push(v.clone());
            }
        }
        for (b, _) in initrd::installed(self.layout(), self.arch())
            .iter()
            .skip(keep)
        {
            if !protected(&state, Kind::Initrd, self.arch(), b) {
                let dir = self.layout().initrd_dir(self.arch(), b);
                install::remove_tree(&dir, &self.layout().staging())?;
                out.initrds.push(b.clone());
            }
        }
        Ok(out)
    }

    /// Records what `instance` booted with.
    pub fn pin(&self, instance: &str, pin: Pin) -> Result<()> {
        let lock = self.lock()?;
        self.update(&lock, |s| s.pins.insert(instance.to_string(), pin))?;
        Ok(())
    }

    /// Forgets an instance's pin.
    pub fn unpin(&self, instance: &str) -> Result<()> {
        let lock = self.lock()?;
        self.update(&lock, |s| s.pins.remove(instance))?;
        Ok(())
    }

    /// Refuses to restore `instance` with anything but what it was pinned to.
    pub fn check_restore(&self, instance: &str, with: &Pin) -> Result<()> {
        let state = self.state()?;
        let pin = state.pins.get(instance).ok_or_else(|| {
            SystemError::NotFound(format!("instance {instance} has no pinned versions"))
        })?;
        let diff: Vec<String> = [
            ("kernel", &pin.kernel, &with.kernel),
            ("initrd", &pin.initrd, &with.initrd),
            ("VMM", &pin.vmm, &with.vmm),
        ]
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(w, a, b)| format!("{w} {b} (saved with {a})"))
        .collect();
        if diff.is_empty() {
            Ok(())
        } else {
            Err(SystemError::Refused(format!(
                "instance {instance} cannot be restored with {}",
                diff.join(", ")
            )))
        }
    }

    /// Records one boot of `kernel` + `initrd`; when the current default of
    /// either has failed more than [`MAX_FAILURE_PERCENT`] of at least
    /// [`MIN_BOOTS`] boots, rolls it back and returns what it did.
    pub fn record_boot(&self, kernel: &str, initrd: &str, ok: bool) -> Result<Vec<String>> {
        let lock = self.lock()?;
        let arch = self.arch().to_string();
        let state = self.update(&lock, |s| {
            for (kind, id) in [(Kind::Kernel, kernel), (Kind::Initrd, initrd)] {
                let o = s
                    .outcomes
                    .entry(State::outcome_key(kind, &arch, id))
                    .or_default();
                if ok {
                    o.ok += 1
                } else {
                    o.failed += 1
                }
            }
            s.clone()
        })?;
        let mut notes = Vec::new();
        for (kind, id) in [(Kind::Kernel, kernel), (Kind::Initrd, initrd)] {
            let track = state.track(kind, &arch);
            let o = state
                .outcomes
                .get(&State::outcome_key(kind, &arch, id))
                .copied()
                .unwrap_or_default();
            if track.default.as_deref() == Some(id) && failing(o) {
                let why = format!(
                    "automatic: {} of {} boots failed",
                    o.failed,
                    o.ok + o.failed
                );
                match self.rollback_locked(&lock, kind, &why) {
                    Ok(to) => {
                        tracing::warn!(%kind, from = id, to, "{why}: rolled back");
                        let rejected = id.to_string();
                        self.update(&lock, |s| s.track_mut(kind, &arch).rejected.push(rejected))?;
                        notes.push(format!("{kind} {id} rolled back to {to} ({why})"));
                    }
                    Err(e) => {
                        tracing::warn!(%kind, id, error = %crate::chain(&e), "{why}: no rollback")
                    }
                }
            }
        }
        Ok(notes)
    }

    /// The version list for a control plane.
    pub fn versions(&self) -> Result<Versions> {
        let state = self.state()?;
        Ok(Versions {
            arch: self.arch().to_string(),
            kernels: self
                .installed_kernels()?
                .into_iter()
                .map(|r| r.version)
                .collect(),
            available_kernels: self
                .catalog()
                .kernels
                .iter()
                .filter(|(k, _)| k.arch == self.arch())
                .map(|(k, _)| k.version.clone())
                .collect(),
            initrds: initrd::installed(self.layout(), self.arch())
                .into_iter()
                .map(|(b, _)| b)
                .collect(),
            guest_init_protocols: PROTOCOLS.to_vec(),
            defaults: Defaults {
                kernel: state.track(Kind::Kernel, self.arch()).default,
                initrd: state.track(Kind::Initrd, self.arch()).default,
            },
            host_sysmgr: env!("CARGO_PKG_VERSION").to_string(),
        })
    }
}

fn failing(o: Outcome) -> bool {
    let total = o.ok + o.failed;
    total >= MIN_BOOTS && o.failed * 100 > MAX_FAILURE_PERCENT * total
}

fn protected(state: &State, kind: Kind, arch: &str, id: &str) -> bool {
    let t = state.track(kind, arch);
    let pinned = state.pins.values().any(|p| match kind {
        Kind::Kernel => p.kernel == id,
        Kind::Initrd => p.initrd == id,
    });
    t.default.as_deref() == Some(id) || t.history.last().map(String::as_str) == Some(id) || pinned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_rate() {
        assert!(!failing(Outcome { ok: 0, failed: 4 }));
        assert!(failing(Outcome { ok: 0, failed: 5 }));
        assert!(failing(Outcome { ok: 2, failed: 3 }));
        assert!(!failing(Outcome { ok: 3, failed: 3 }));
    }
}
