//! The store: one data folder, its catalog and its state, and the kernel
//! operations (list, pull, import, verify).

use super::bundle::{self, Packing};
use super::catalog::{Catalog, KernelEntry, KernelFormat};
use super::download::{self, Expect, Policy};
use super::error::{Result, SystemError};
use super::install::{self, Staged};
use super::layout::{check_component, host_arch, Layout};
use super::record::{self, FileRecord, KernelRecord, Trust};
use super::state::{Kind, Lock, State};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Largest kernel image accepted without a published size.
pub const MAX_KERNEL: u64 = 1 << 30;
/// Name of a kernel's record in its folder.
pub const RECORD: &str = "manifest.json";

/// A data folder with its catalog.
#[derive(Debug, Clone)]
pub struct Store {
    layout: Layout,
    catalog: Catalog,
    arch: String,
    /// Download behaviour (timeouts, retries, progress).
    pub policy: Policy,
}

/// A kernel as `kernel list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelRow {
    /// Version.
    pub version: String,
    /// Architecture.
    pub arch: String,
    /// Family name.
    pub name: String,
    /// Installed in the data folder.
    pub installed: bool,
    /// The default of its architecture.
    pub default: bool,
    /// Size of the vmlinux (installed) or the download (catalog), if known.
    pub size: Option<u64>,
    /// How its digest is trusted: `published`, `tofu`, `local`, `registry`,
    /// or for a catalog entry not pulled yet `published`/`tofu`.
    pub trust: Trust,
    /// Where it comes from.
    pub source: String,
}

impl Store {
    /// The store of `data`, with the catalog files found there (and `catalog`).
    pub fn open(data: &Path, catalog: Option<&Path>) -> Result<Self> {
        let layout = Layout::new(data);
        let catalog = Catalog::load(&layout, catalog)?;
        Ok(Store {
            layout,
            catalog,
            arch: host_arch().to_string(),
            policy: Policy::default(),
        })
    }

    /// The paths.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The architecture this store serves (the host's).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The current state.
    pub fn state(&self) -> Result<State> {
        State::load(&self.layout.state())
    }

    /// Takes the store's lock (waiting for another process to finish), then
    /// removes what a killed holder left in the staging folder: every
    /// install stages under the lock, so nothing there is in use.
    pub fn lock(&self) -> Result<Lock> {
        let lock = Lock::take(&self.layout.lock())?;
        if let Ok(rd) = std::fs::read_dir(self.layout.staging()) {
            for e in rd.flatten() {
                tracing::debug!(path = %e.path().display(), "removing a stale staging folder");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        Ok(lock)
    }

    /// Changes the state under the lock the caller holds.
    pub fn update<T>(&self, _held: &Lock, f: impl FnOnce(&mut State) -> T) -> Result<T> {
        let mut s = self.state()?;
        let out = f(&mut s);
        s.save(&self.layout.state())?;
        Ok(out)
    }

    /// The record of an installed kernel.
    pub fn kernel_record(&self, version: &str) -> Result<KernelRecord> {
        check_component("kernel version", version)?;
        let path = self.layout.kernel_dir(version, &self.arch).join(RECORD);
        if !path.exists() {
            return Err(SystemError::NotFound(format!(
                "kernel {version} ({}) is not installed",
                self.arch
            )));
        }
        record::read_json(&path)
    }

    /// Installed kernels of this architecture, newest install first.
    pub fn installed_kernels(&self) -> Result<Vec<KernelRecord>> {
        let dir = self.layout.kernels();
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if check_component("v", &name).is_ok() {
                if let Ok(r) = self.kernel_record(&name) {
                    out.push(r);
                }
            }
        }
        out.sort_by(|a, b| (b.installed_at, &b.version).cmp(&(a.installed_at, &a.version)));
        Ok(out)
    }

    /// Installed kernels and, with `available`, the catalog's others.
    pub fn kernel_rows(&self, available: bool) -> Result<Vec<KernelRow>> {
        let default = self.state()?.track(Kind::Kernel, &self.arch).default;
        let mut rows: Vec<KernelRow> = self
            .installed_kernels()?
            .into_iter()
            .map(|r| KernelRow {
                default: default.as_deref() == Some(r.version.as_str()),
                version: r.version,
                arch: r.arch,
                name: r.name,
                installed: true,
                size: Some(r.vmlinux.size),
                trust: r.trust,
                source: r.source,
            })
            .collect();
        if available {
            for (k, src) in &self.catalog.kernels {
                if k.arch == self.arch && !rows.iter().any(|r| r.version == k.version) {
                    rows.push(KernelRow {
                        version: k.version.clone(),
                        arch: k.arch.clone(),
                        name: k.name.clone(),
                        installed: false,
                        default: false,
                        size: k.size,
                        trust: if k.sha256.is_some() {
                            Trust::Published
                        } else {
                            Trust::Tofu
                        },
                        source: format!("{} ({src})", k.url),
                    });
                }
            }
        }
        Ok(rows)
    }

    /// Checks an installed kernel (stat only when it verified before) and
    /// returns its vmlinux path.
    pub fn verify_kernel(&self, version: &str) -> Result<PathBuf> {
        self.verify_kernel_files(version, &self.kernel_record(version)?)
    }

    /// [`Store::verify_kernel`] with the record already read.
    pub fn verify_kernel_files(&self, version: &str, rec: &KernelRecord) -> Result<PathBuf> {
        let dir = self.layout.kernel_dir(version, &self.arch);
        record::verify_files(&dir, &rec.files())?;
        Ok(dir.join(&rec.vmlinux.file))
    }

    /// Downloads and installs the catalog's `version` (nothing to do when it
    /// is installed and verifies; a corrupt install is replaced).
    pub fn pull_kernel(&self, version: &str) -> Result<KernelRecord> {
        let entry = self
            .catalog
            .find(version, &self.arch)
            .cloned()
            .ok_or_else(|| {
                SystemError::NotFound(format!(
                    "kernel {version} ({}) is not in the catalog (see `kernel list --available`)",
                    self.arch
                ))
            })?;
        let lock = self.lock()?;
        self.pull_locked(&lock, &entry)
    }

    pub(crate) fn pull_locked(&self, lock: &Lock, entry: &KernelEntry) -> Result<KernelRecord> {
        let dest = self.layout.kernel_dir(&entry.version, &self.arch);
        if self.verify_kernel(&entry.version).is_ok() {
            return self.kernel_record(&entry.version);
        }
        let tofu = self.state()?.tofu.get(&entry.url).cloned();
        let stage = Staged::new(&self.layout.staging())?;
        let (vmlinux, trust) = self.fetch_kernel(entry, tofu.as_deref(), stage.path())?;
        let headers = self.fetch_headers(entry, stage.path())?;
        let rec = KernelRecord {
            name: entry.name.clone(),
            version: entry.version.clone(),
            arch: self.arch.clone(),
            source: entry.url.clone(),
            trust,
            release: None,
            vmlinux,
            headers,
            modules: None,
            installed_at: record::now(),
        };
        self.commit_kernel(stage, &rec, &dest)?;
        if trust == Trust::Tofu && tofu.is_none() {
            let (url, sha) = (entry.url.clone(), rec.vmlinux.sha256.clone());
            self.update(lock, |s| s.tofu.insert(url, sha))?;
        }
        self.default_if_none(lock, &rec.version)?;
        Ok(rec)
    }

    /// Writes the record into `stage` and moves it to `dest` (replacing a
    /// corrupt install there).
    pub(crate) fn commit_kernel(
        &self,
        stage: Staged,
        rec: &KernelRecord,
        dest: &Path,
    ) -> Result<()> {
        check_elf(&stage.path().join(&rec.vmlinux.file))?;
        record::write_json(&stage.path().join(RECORD), rec)?;
        if dest.exists() {
            tracing::warn!(path = %dest.display(), "replacing an install that does not verify");
            install::remove_tree(dest, &self.layout.staging())?;
        }
        stage.commit(dest)?;
        Ok(())
    }

    pub(crate) fn default_if_none(&self, lock: &Lock, version: &str) -> Result<()> {
        let arch = self.arch.clone();
        self.update(lock, |s| {
            if s.track(Kind::Kernel, &arch).default.is_none() {
                s.set_default(
                    Kind::Kernel,
                    &arch,
                    version,
                    "the first kernel installed".into(),
                );
            }
        })
    }

    fn fetch_kernel(
        &self,
        e: &KernelEntry,
        tofu: Option<&str>,
        stage: &Path,
    ) -> Result<(FileRecord, Trust)> {
        let sha = e.sha256.clone().or_else(|| tofu.map(str::to_string));
        let expect = Expect {
            sha256: sha,
            size: e.size,
            limit: MAX_KERNEL,
        };
        let partial = self.partial_path(&e.url);
        let got = download::fetch(&e.url, &expect, &partial, &self.policy)?;
        let trust = if e.sha256.is_some() {
            Trust::Published
        } else {
            Trust::Tofu
        };
        let packing = match e.format {
            KernelFormat::Vmlinux => None,
            KernelFormat::TarGz => Some(Packing::Gzip),
            KernelFormat::TarZst => Some(Packing::Zstd),
        };
        let Some(packing) = packing else {
            let dest = stage.join("vmlinux");
            std::fs::rename(&partial, &dest).map_err(|err| SystemError::io(&dest, err))?;
            let rec = FileRecord {
                file: "vmlinux".into(),
                sha256: got.sha256,
                size: got.size,
            };
            return Ok((rec, trust));
        };
        let res = bundle::extract(&partial, packing, stage, bundle::Limits::default());
        let _ = std::fs::remove_file(&partial);
        res?;
        if !stage.join("vmlinux").is_file() {
            return Err(SystemError::Kernel {
                path: partial,
                message: format!("bundle {} holds no vmlinux", e.url),
            });
        }
        Ok((FileRecord::of(stage, "vmlinux")?, trust))
    }

    fn fetch_headers(&self, e: &KernelEntry, stage: &Path) -> Result<Option<FileRecord>> {
        let Some(url) = &e.headers_url else {
            return Ok(None);
        };
        let name = if url.ends_with(".tar.zst") {
            "kernel-headers.tar.zst"
        } else {
            "kernel-headers.tar.gz"
        };
        let expect = Expect {
            sha256: e.headers_sha256.clone(),
            size: e.headers_size,
            limit: MAX_KERNEL,
        };
        let partial = self.partial_path(url);
        let got = download::fetch(url, &expect, &partial, &self.policy)?;
        let dest = stage.join(name);
        std::fs::rename(&partial, &dest).map_err(|err| SystemError::io(&dest, err))?;
        Ok(Some(FileRecord {
            file: name.into(),
            sha256: got.sha256,
            size: got.size,
        }))
    }

    /// Where a download of `url` is kept while it is incomplete.
    pub fn partial_path(&self, url: &str) -> PathBuf {
        let id = hex::encode(&Sha256::digest(url.as_bytes())[..8]);
        self.layout.partial().join(format!("{id}.part"))
    }
}

/// Refuses a file that is not an ELF image (a bzImage, HTML, …).
pub fn check_elf(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| SystemError::io(path, e))?;
    if magic != *b"\x7fELF" {
        return Err(SystemError::Kernel {
            path: path.to_path_buf(),
            message: "not an ELF vmlinux (a bzImage must be imported with `kernel import`)".into(),
        });
    }
    Ok(())
}
