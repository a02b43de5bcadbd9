//! `kernel import DIR`: install a kernel from this host's files.
//! - A `kernel/build.sh` output folder (`vmlinux`, `kernel-headers.tar.gz`
//!   and the `manifest.json` naming their sha256 and size): each file is
//!   copied into a staging folder while it is hashed and checked against the
//!   manifest.
//! - A distribution's layout (`boot/vmlinuz-<release>` and
//!   `lib/modules/<release>/`, e.g. an unpacked `linux-image` package): the
//!   bzImage is unpacked to its PVH vmlinux, and the modules init loads at
//!   boot (virtio, ext4, overlay, erofs, vsock, the power button — with their
//!   dependencies) are packed with the index files into `modules.tar`, which
//!   the initrd built for this kernel carries.
//!
//! Either way the kernel is moved into place at once.

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
        if !dir.join("manifest.json").exists() && dir.join("boot").is_dir() {
            return self.import_distro(dir, version);
        }
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
            modules: None,
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

impl Store {
    /// Imports `boot/vmlinuz-<release>` + `lib/modules/<release>/` under
    /// `dir`; `version` picks the release when there are several, and names
    /// the install (default: the release).
    fn import_distro(&self, dir: &Path, version: Option<&str>) -> Result<KernelRecord> {
        let release = pick_release(dir, version)?;
        let vmlinuz = dir.join("boot").join(format!("vmlinuz-{release}"));
        let mods = dir.join("lib/modules").join(&release);
        if !mods.join("modules.dep").is_file() {
            return Err(SystemError::Kernel {
                path: mods,
                message: "no modules.dep: the modules of this kernel are missing".into(),
            });
        }
        let version = version.unwrap_or(&release).to_string();
        check_component("kernel version", &version)?;
        let vmlinux = super::bzimage::unpack(&vmlinuz)?;
        let lock = self.lock()?;
        let stage = Staged::new(&self.layout().staging())?;
        let path = stage.path().join("vmlinux");
        std::fs::write(&path, &vmlinux).map_err(|e| SystemError::io(&path, e))?;
        modules_tar(&mods, &release, &stage.path().join(MODULES_TAR))?;
        let rec = KernelRecord {
            name: "distro".into(),
            version: version.clone(),
            arch: self.arch().to_string(),
            source: format!("import {}", vmlinuz.display()),
            trust: Trust::Local,
            release: Some(release),
            vmlinux: FileRecord::of(stage.path(), "vmlinux")?,
            headers: None,
            modules: Some(FileRecord::of(stage.path(), MODULES_TAR)?),
            installed_at: record::now(),
        };
        if self.verify_kernel(&version).is_ok() {
            return Err(SystemError::Refused(format!(
                "kernel {version} is already installed (import under another --version)"
            )));
        }
        let dest = self.layout().kernel_dir(&version, self.arch());
        self.commit_kernel(stage, &rec, &dest)?;
        self.default_if_none(&lock, &version)?;
        Ok(rec)
    }
}

/// Name of the boot-modules tarball in a kernel's folder.
pub const MODULES_TAR: &str = "modules.tar";

fn pick_release(dir: &Path, version: Option<&str>) -> Result<String> {
    let boot = dir.join("boot");
    let mut releases: Vec<String> = std::fs::read_dir(&boot)
        .map_err(|e| SystemError::io(&boot, e))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("vmlinuz-").map(str::to_string)
        })
        .collect();
    releases.sort();
    match (version, releases.as_slice()) {
        (Some(v), all) if all.iter().any(|r| r == v) => Ok(v.to_string()),
        (_, [one]) => Ok(one.clone()),
        (_, []) => Err(SystemError::Kernel {
            path: boot,
            message: "holds no vmlinuz-<release>".into(),
        }),
        (_, all) => Err(SystemError::Kernel {
            path: boot,
            message: format!(
                "holds several kernels ({}): pick one with --version",
                all.join(", ")
            ),
        }),
    }
}

/// Packs the boot modules of `mods` (`lib/modules/<release>`) and its index
/// files into the tarball `out`.
fn modules_tar(mods: &Path, release: &str, out: &Path) -> Result<()> {
    use initrd_builder::modules::ModuleIndex;
    let bad = |e: initrd_builder::modules::ModuleError| SystemError::Initrd(e.into());
    let idx = ModuleIndex::load(mods).map_err(bad)?;
    let wanted: Vec<String> = super::initrd::BOOT_MODULES
        .iter()
        .map(|m| m.to_string())
        .collect();
    let exclude: Vec<String> = super::initrd::BOOT_EXCLUDE
        .iter()
        .map(|m| m.to_string())
        .collect();
    let res = idx.resolve(&wanted, &exclude).map_err(bad)?;
    let file = std::fs::File::create(out).map_err(|e| SystemError::io(out, e))?;
    let mut tar = tar::Builder::new(file);
    tar.follow_symlinks(true);
    let base = Path::new("lib/modules").join(release);
    let index = [
        "modules.dep",
        "modules.softdep",
        "modules.alias",
        "modules.builtin",
    ];
    let files = index
        .iter()
        .map(|f| f.to_string())
        .filter(|f| mods.join(f).is_file())
        .chain(
            res.modules
                .iter()
                .filter_map(|m| idx.module(m).map(|i| i.path.clone())),
        );
    for rel in files {
        let src = mods.join(&rel);
        tar.append_path_with_name(&src, base.join(&rel))
            .map_err(|e| SystemError::io(&src, e))?;
    }
    tar.into_inner()
        .and_then(|f| f.sync_all())
        .map_err(|e| SystemError::io(out, e))
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
