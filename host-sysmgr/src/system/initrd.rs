//! The host's initrd: built by initrd-builder from our `init` and agent,
//! uncompressed (it boots fastest: the kernel copies it instead of
//! inflating it), signed with the host's own key, and named by the hash of
//! its inputs so an unchanged input set is never built twice.

use super::error::{Result, SystemError};
use super::install::{self, Staged};
use super::layout::Layout;
use super::record::{self, FileRecord};
use initrd_builder::manifest::Manifest;
use initrd_builder::{sign, verify, BuildOptions, Spec};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Names of an initrd build's files.
pub const IMAGE: &str = "initrd";
/// Its manifest (the signed bytes).
pub const MANIFEST: &str = "manifest.json";
/// The detached signature over the manifest.
pub const SIGNATURE: &str = "initrd.sig";
/// Changes whenever what this module puts into an initrd changes.
const RECIPE: &str = "guestinit-initrd/2";

/// Modules init loads at boot from an initrd, for a kernel whose drivers are
/// modules (the same list as `initrd-builder/specs/guestinit.toml`).
pub const BOOT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "ext4",
    "crc32c_generic",
    "overlay",
    "erofs",
    "vsock",
    "vmw_vsock_virtio_transport",
    "button",
    "evdev",
];
/// Modules never pulled in for an alias (crc32c_intel fails on TCG's CPU).
pub const BOOT_EXCLUDE: &[&str] = &["crc32c_intel"];

/// What an initrd carries of the kernel it pairs with: the boot modules
/// (`modules.tar`) and the headers tarball (for DKMS in the guest).
#[derive(Debug, Clone)]
pub struct KernelModules {
    /// `uname -r` of the kernel.
    pub release: String,
    /// The modules tarball (`lib/modules/<release>/…`), if the kernel has one.
    pub modules: Option<PartFile>,
    /// `kernel-headers.tar.gz`, if the kernel has one (carried as
    /// `/kernel-headers.tar.gz`; init extracts it in the guest).
    pub headers: Option<PartFile>,
}

/// One file of a kernel, with its sha256 (part of the build id).
#[derive(Debug, Clone)]
pub struct PartFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its sha256.
    pub sha256: String,
}

impl KernelModules {
    /// The build-id line of these parts.
    fn id_line(&self) -> String {
        let digest =
            |p: &Option<PartFile>| p.as_ref().map_or("-", |f| f.sha256.as_str()).to_string();
        format!(
            "kernel {} modules {} headers {}",
            self.release,
            digest(&self.modules),
            digest(&self.headers)
        )
    }
}

/// Environment variables naming the init and agent binaries.
pub const INIT_ENV: &str = "GUESTINIT_INIT";
/// See [`INIT_ENV`].
pub const AGENT_ENV: &str = "GUESTINIT_AGENT";

/// The binaries an initrd is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    /// The static `init`.
    pub init: PathBuf,
    /// The static guest agent.
    pub agent: PathBuf,
}

impl Inputs {
    /// The given paths, else `$GUESTINIT_INIT`/`$GUESTINIT_AGENT`, else the
    /// first folder holding both of: the folder of this executable, cargo's
    /// static-target folder beside it, `/usr/local/lib/guestinit`,
    /// `/usr/lib/guestinit`.
    pub fn find(init: Option<&Path>, agent: Option<&Path>) -> Result<Self> {
        let found = Self::locate(init, agent)?;
        let abs = |p: &Path| std::fs::canonicalize(p).map_err(|e| SystemError::io(p, e));
        Ok(Inputs {
            init: abs(&found.init)?,
            agent: abs(&found.agent)?,
        })
    }

    fn locate(init: Option<&Path>, agent: Option<&Path>) -> Result<Self> {
        let env = |k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let init = init.map(Path::to_path_buf).or_else(|| env(INIT_ENV));
        let agent = agent.map(Path::to_path_buf).or_else(|| env(AGENT_ENV));
        if let (Some(init), Some(agent)) = (&init, &agent) {
            return Ok(Inputs {
                init: init.clone(),
                agent: agent.clone(),
            });
        }
        let found = search_dirs()
            .into_iter()
            .find(|d| d.join("init").is_file() && d.join("guest-agent").is_file());
        match found {
            Some(d) => Ok(Inputs {
                init: init.unwrap_or_else(|| d.join("init")),
                agent: agent.unwrap_or_else(|| d.join("guest-agent")),
            }),
            None => Err(SystemError::NotFound(format!(
                "no init and guest-agent binaries to build the initrd from: pass --init and --agent, or set {INIT_ENV} and {AGENT_ENV}"
            ))),
        }
    }
}

fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let profile = exe_dir.file_name().map(|n| n.to_os_string());
        if let (Some(target), Some(profile)) = (exe_dir.parent(), profile) {
            dirs.push(target.join("x86_64-unknown-linux-gnu").join(&profile));
            dirs.push(target.join("x86_64-unknown-linux-gnu/release"));
        }
        dirs.insert(0, exe_dir);
    }
    dirs.push("/usr/local/lib/guestinit".into());
    dirs.push("/usr/lib/guestinit".into());
    dirs
}

/// Stat identity of an input file: what the cached build id is keyed by, so
/// a warm call does not read the binaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct InputStamp {
    path: PathBuf,
    stat: record::Stamp,
}

fn stamp(path: &Path) -> Result<InputStamp> {
    Ok(InputStamp {
        path: path.to_path_buf(),
        stat: record::Stamp::of(path)?,
    })
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct BuildCache {
    known: Vec<(Vec<InputStamp>, String)>,
}

const CACHE: &str = "inputs.json";

/// The build id of `inputs`: the first 16 hex digits of a sha256 over the
/// recipe, the builder's version and both binaries. Taken from the stat
/// cache when the binaries have not changed since it was computed.
pub fn build_id(
    layout: &Layout,
    arch: &str,
    inputs: &Inputs,
    modules: Option<&KernelModules>,
) -> Result<String> {
    let mut stamps = vec![stamp(&inputs.init)?, stamp(&inputs.agent)?];
    let extra = modules.map_or(String::new(), KernelModules::id_line);
    stamps.push(InputStamp {
        path: PathBuf::from(&extra),
        stat: record::Stamp::default(),
    });
    let cache_path = layout.initrds(arch).join(CACHE);
    let mut cache: BuildCache = record::read_json(&cache_path).unwrap_or_default();
    if let Some((_, id)) = cache.known.iter().find(|(s, _)| *s == stamps) {
        return Ok(id.clone());
    }
    let mut h = Sha256::new();
    h.update(RECIPE);
    h.update(initrd_builder::VERSION);
    h.update(&extra);
    for p in [&inputs.init, &inputs.agent] {
        h.update(install::sha256_file(p)?.0);
    }
    let id = hex::encode(h.finalize())[..16].to_string();
    cache
        .known
        .retain(|(s, _)| s.iter().map(|x| &x.path).ne(stamps.iter().map(|x| &x.path)));
    cache.known.push((stamps, id.clone()));
    let _ = record::write_json(&cache_path, &cache);
    Ok(id)
}

fn spec(arch: &str, modules: Option<(&str, &Path)>, headers: Option<&Path>) -> Result<Spec> {
    let v = env!("CARGO_PKG_VERSION");
    let mut kernel = match modules {
        Some((release, root)) => format!(
            "[kernel]\nrelease = {release:?}\nmodules_root = {:?}\nmodules = {BOOT_MODULES:?}\nexclude = {BOOT_EXCLUDE:?}\n",
            root.display().to_string()
        ),
        None => String::new(),
    };
    if let Some(h) = headers {
        kernel.push_str(&format!(
            "[headers]\npath = {:?}\n",
            h.display().to_string()
        ));
    }
    let text = format!(
        r#"
[image]
name = "guestinit"
arch = "{arch}"
compression = "none"
max_size = "64MiB"
[init]
path = "{{init}}"
version = "{v}"
protocol = 1
[agent]
path = "{{agent}}"
version = "{v}"
min_version = "{v}"
[[dir]]
path = "/proc"
[[dir]]
path = "/sys"
[[dir]]
path = "/run"
[[dir]]
path = "/tmp"
mode = 0o1777
[[dir]]
path = "/mnt"
{kernel}"#
    );
    Spec::parse(&text, Path::new("/")).map_err(SystemError::Initrd)
}

/// The host's signing key, made on first use (the caller holds the lock).
pub fn signing_key(layout: &Layout) -> Result<sign::SigningKey> {
    let secret = layout.signing_key();
    if !secret.exists() {
        let key = sign::generate().map_err(|e| SystemError::Initrd(e.into()))?;
        let prefix = secret.with_extension("");
        install::mkdirs(prefix.parent().unwrap_or(Path::new(".")))?;
        sign::write_keypair(&key, &prefix).map_err(|e| SystemError::Initrd(e.into()))?;
    }
    sign::read_secret_key(&secret).map_err(|e| SystemError::Initrd(e.into()))
}

/// Builds the initrd of `inputs` into `stage` (initrd, manifest, signature).
pub fn build(
    layout: &Layout,
    arch: &str,
    inputs: &Inputs,
    modules: Option<&KernelModules>,
    stage: &Staged,
) -> Result<Manifest> {
    // The modules are unpacked (safely) next to the build, read, and dropped.
    let unpacked = match modules.and_then(|m| Some((m, m.modules.as_ref()?))) {
        Some((m, tar)) => {
            let dir = tempfile::Builder::new()
                .prefix("modules-")
                .tempdir_in(stage.path().parent().unwrap_or(Path::new("/tmp")))
                .map_err(|e| SystemError::io(stage.path(), e))?;
            super::bundle::extract(
                &tar.path,
                super::bundle::Packing::Tar,
                dir.path(),
                super::bundle::Limits::default(),
            )?;
            Some((m.release.clone(), dir))
        }
        None => None,
    };
    let headers = modules
        .and_then(|m| m.headers.as_ref())
        .map(|h| h.path.as_path());
    let spec = spec(
        arch,
        unpacked.as_ref().map(|(r, d)| (r.as_str(), d.path())),
        headers,
    )?;
    let mut opts = BuildOptions::default();
    opts.vars
        .insert("init".into(), inputs.init.display().to_string());
    opts.vars
        .insert("agent".into(), inputs.agent.display().to_string());
    opts.signing_key = Some(signing_key(layout)?);
    let out = initrd_builder::build(&spec, &opts).map_err(SystemError::Initrd)?;
    let dir = stage.path();
    let sig = out
        .signature
        .as_ref()
        .map(sign::encode_signature)
        .unwrap_or_default();
    for (name, data) in [
        (IMAGE, out.image.as_slice()),
        (MANIFEST, out.manifest_bytes.as_slice()),
        (SIGNATURE, sig.as_bytes()),
    ] {
        std::fs::write(dir.join(name), data).map_err(|e| SystemError::io(dir.join(name), e))?;
    }
    Ok(out.manifest)
}

/// Checks an installed build: the manifest's signature against this host's
/// key (or `extra_keys`), then the image against the manifest (hashed only
/// when its stamp changed). Returns the image path and the manifest.
pub fn verify(layout: &Layout, arch: &str, build: &str) -> Result<(PathBuf, Manifest)> {
    let dir = layout.initrd_dir(arch, build);
    if !dir.join(MANIFEST).is_file() {
        return Err(SystemError::NotFound(format!(
            "initrd {build} ({arch}) is not installed"
        )));
    }
    verify_dir(layout, &dir)
}

/// [`verify`] of the build in `dir` (installed or staged).
pub fn verify_dir(layout: &Layout, dir: &Path) -> Result<(PathBuf, Manifest)> {
    let bytes = verify::read_manifest_file(&dir.join(MANIFEST)).map_err(SystemError::Initrd)?;
    let sig = std::fs::read_to_string(dir.join(SIGNATURE))
        .map_err(|e| SystemError::io(dir.join(SIGNATURE), e))?;
    let manifest = trusted_keys(layout)?
        .iter()
        .find_map(|k| verify::verify_manifest(&bytes, &sig, k).ok())
        .ok_or_else(|| SystemError::Corrupt {
            path: dir.join(MANIFEST),
            message: "its signature matches no trusted key".into(),
        })?;
    let image = FileRecord {
        file: IMAGE.into(),
        sha256: manifest.image.sha256.clone(),
        size: manifest.image.size,
    };
    record::verify_files(dir, &[image])?;
    Ok((dir.join(IMAGE), manifest))
}

/// This host's public key plus `{system}/keys/trusted/*.pub`.
pub fn trusted_keys(layout: &Layout) -> Result<Vec<sign::VerifyingKey>> {
    let mut keys = Vec::new();
    let own = layout.public_key();
    if own.exists() {
        keys.push(sign::read_public_key(&own).map_err(|e| SystemError::Initrd(e.into()))?);
    }
    let trusted = layout.system().join("keys/trusted");
    if let Ok(rd) = std::fs::read_dir(&trusted) {
        for e in rd.flatten() {
            if e.path().extension().is_some_and(|x| x == "pub") {
                keys.push(
                    sign::read_public_key(&e.path()).map_err(|e| SystemError::Initrd(e.into()))?,
                );
            }
        }
    }
    Ok(keys)
}

/// Installed builds of `arch`, newest first.
pub fn installed(layout: &Layout, arch: &str) -> Vec<(String, u64)> {
    let Ok(rd) = std::fs::read_dir(layout.initrds(arch)) else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64)> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let m = std::fs::metadata(e.path().join(MANIFEST)).ok()?;
            (!name.starts_with('.')).then_some((name, m.mtime().max(0) as u64))
        })
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    out
}

impl super::store::Store {
    /// Adds a public key to `{system}/keys/trusted/` (named by its own hash);
    /// returns where it went.
    pub fn trust_key(&self, key: &Path) -> Result<PathBuf> {
        let k = sign::read_public_key(key).map_err(|e| SystemError::Initrd(e.into()))?;
        let text = sign::encode_public_key(&k);
        let id = hex::encode(&Sha256::digest(text.as_bytes())[..8]);
        let dest = self
            .layout()
            .system()
            .join("keys/trusted")
            .join(format!("{id}.pub"));
        install::write_atomic(&dest, text.as_bytes())?;
        Ok(dest)
    }
}
