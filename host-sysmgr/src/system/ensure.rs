//! `ensure` (hypeman's EnsureSystemFiles): the default kernel and the
//! current initrd present and verified, installed or rebuilt when not. A
//! warm call takes no lock and reads no big file: the state, two records
//! and the stat of each artifact and input. Several processes may call it at
//! once: the changes happen under the store's lock, and whoever waited for
//! the lock finds the work done and reuses it.

use super::error::{Result, SystemError};
use super::initrd::{self, Inputs, KernelModules};
use super::install::{self, Staged};
use super::record::KernelRecord;
use super::state::Kind;
use super::store::Store;
use std::path::{Path, PathBuf};

/// What a VM should boot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ensured {
    /// The default kernel's version.
    pub kernel_version: String,
    /// Its vmlinux.
    pub kernel: PathBuf,
    /// The initrd build id.
    pub initrd_build: String,
    /// The initrd image.
    pub initrd: PathBuf,
    /// Whether this call installed or built anything.
    pub changed: bool,
}

impl Store {
    /// Makes sure the default kernel and the initrd of `inputs` (with the
    /// kernel's boot modules, if it has them) are installed and verified,
    /// and returns their paths.
    pub fn ensure(&self, inputs: &Inputs) -> Result<Ensured> {
        if let Ok(found) = self.ensured(inputs) {
            return Ok(found);
        }
        let lock = self.lock()?;
        if let Ok(found) = self.ensured(inputs) {
            return Ok(found);
        }
        self.kernel_locked(&lock)?;
        let modules = self.default_modules()?;
        let build = initrd::build_id(self.layout(), self.arch(), inputs, modules.as_ref())?;
        self.initrd_locked(&lock, inputs, modules.as_ref(), &build)?;
        let mut out = self.ensured(inputs)?;
        out.changed = true;
        Ok(out)
    }

    /// Makes sure the initrd of `inputs` (for the default kernel, if any) is
    /// built, verified and the default; returns its build id.
    pub fn ensure_initrd(&self, inputs: &Inputs) -> Result<String> {
        let lock = self.lock()?;
        let modules = self.default_modules()?;
        let build = initrd::build_id(self.layout(), self.arch(), inputs, modules.as_ref())?;
        self.initrd_locked(&lock, inputs, modules.as_ref(), &build)?;
        Ok(build)
    }

    /// The default kernel's boot modules and headers tarball, when it has
    /// either. Only a gzip tarball of headers is carried (init reads no other).
    pub fn default_modules(&self) -> Result<Option<KernelModules>> {
        let Some(version) = self.state()?.track(Kind::Kernel, self.arch()).default else {
            return Ok(None);
        };
        let rec = self.kernel_record(&version)?;
        Ok(self.kernel_parts(&version, rec))
    }

    /// What of kernel `version` (its record `rec`) an initrd carries.
    fn kernel_parts(&self, version: &str, rec: KernelRecord) -> Option<KernelModules> {
        let dir = self.layout().kernel_dir(version, self.arch());
        let part = |f: super::record::FileRecord| initrd::PartFile {
            path: dir.join(&f.file),
            sha256: f.sha256,
        };
        let headers = rec.headers.filter(|h| h.file.ends_with(".tar.gz"));
        if rec.modules.is_none() && headers.is_none() {
            return None;
        }
        Some(KernelModules {
            release: rec.release.unwrap_or_else(|| version.to_string()),
            modules: rec.modules.map(part),
            headers: headers.map(part),
        })
    }

    /// The warm path: everything already in place and verifying.
    fn ensured(&self, inputs: &Inputs) -> Result<Ensured> {
        let state = self.state()?;
        let version = state
            .track(Kind::Kernel, self.arch())
            .default
            .ok_or_else(|| SystemError::NotFound("no default kernel".into()))?;
        // One read of the kernel's record for both.
        let rec = self.kernel_record(&version)?;
        let kernel = self.verify_kernel_files(&version, &rec)?;
        let modules = self.kernel_parts(&version, rec);
        let build = initrd::build_id(self.layout(), self.arch(), inputs, modules.as_ref())?;
        if state.track(Kind::Initrd, self.arch()).default.as_deref() != Some(build.as_str()) {
            return Err(SystemError::NotFound(format!(
                "initrd {build} is not the default"
            )));
        }
        let (initrd, _) = initrd::verify(self.layout(), self.arch(), &build)?;
        Ok(Ensured {
            kernel_version: version,
            kernel,
            initrd_build: build,
            initrd,
            changed: false,
        })
    }

    /// The default kernel installed and verifying: pulled from the catalog
    /// when missing or corrupt (and the catalog has it).
    fn kernel_locked(&self, lock: &super::state::Lock) -> Result<()> {
        let arch = self.arch().to_string();
        let default = self.state()?.track(Kind::Kernel, &arch).default;
        let version = match default {
            Some(v) => v,
            None => {
                let entry = self.catalog().default_for(&arch).ok_or_else(|| {
                    SystemError::NotFound(format!(
                        "no default kernel for {arch}: `kernel import DIR`, `kernel pull VERSION`, or mark a catalog entry `default = true`"
                    ))
                })?;
                entry.version.clone()
            }
        };
        match self.verify_kernel(&version) {
            Ok(_) => {}
            Err(e) => {
                let Some(entry) = self.catalog().find(&version, &arch).cloned() else {
                    return Err(e);
                };
                if !matches!(e, SystemError::NotFound(_)) {
                    tracing::warn!(version, error = %crate::chain(&e), "the default kernel does not verify: downloading it again");
                }
                self.pull_locked(lock, &entry)?;
            }
        }
        self.update(lock, |s| {
            if s.track(Kind::Kernel, &arch).default.is_none() {
                s.set_default(
                    Kind::Kernel,
                    &arch,
                    &version,
                    "ensure: the catalog's default".into(),
                );
            }
        })
    }

    /// The initrd of `build` installed, verifying and the default.
    fn initrd_locked(
        &self,
        lock: &super::state::Lock,
        inputs: &Inputs,
        modules: Option<&KernelModules>,
        build: &str,
    ) -> Result<()> {
        let arch = self.arch().to_string();
        if let Err(e) = initrd::verify(self.layout(), &arch, build) {
            let dest = self.layout().initrd_dir(&arch, build);
            if dest.exists() {
                tracing::warn!(build, error = %crate::chain(&e), "the initrd does not verify: building it again");
                install::remove_tree(&dest, &self.layout().staging())?;
            }
            let stage = Staged::new(&self.layout().staging())?;
            initrd::build(self.layout(), &arch, inputs, modules, &stage)?;
            stage.commit(&dest)?;
            initrd::verify(self.layout(), &arch, build)?;
        }
        self.make_default(
            lock,
            Kind::Initrd,
            build,
            "ensure: built from the current init and agent",
        )
    }

    /// Sets the default of `kind` (which must be installed and verify) and,
    /// for an initrd, points `latest` at it.
    pub(crate) fn make_default(
        &self,
        lock: &super::state::Lock,
        kind: Kind,
        id: &str,
        why: &str,
    ) -> Result<()> {
        let arch = self.arch().to_string();
        self.update(lock, |s| s.set_default(kind, &arch, id, why.to_string()))?;
        if kind == Kind::Initrd {
            install::replace_symlink(&self.layout().initrd_latest(&arch), Path::new(id))?;
        }
        Ok(())
    }
}
