//! Spec → image, manifest and signature.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::compress::{compress, Compression};
use crate::cpio::{Archive, Entry, EntryKind};
use crate::elf;
use crate::manifest::{self, ImageInfo, KernelInfo, Manifest, ManifestEntry, MANIFEST_FORMAT};
use crate::modules::{self, ModuleIndex};
use crate::sign::{self, Signature, SigningKey};
use crate::spec::{NodeKind, Resolver, Spec};
use crate::verify::ArtifactPaths;
use crate::InitrdError;

/// Inputs of a build that are not in the spec.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Values of `{name}` placeholders; they override the spec's `[vars]`.
    pub vars: BTreeMap<String, String>,
    /// mtime of every entry (callers usually pass `SOURCE_DATE_EPOCH`, else 0).
    pub source_date_epoch: u64,
    /// Carry the spec's `debug = true` entries.
    pub debug: bool,
    /// Overrides the spec's compression.
    pub compression: Option<Compression>,
    /// Overrides the spec's compression level.
    pub level: Option<i32>,
    /// Overrides the spec's `max_size`.
    pub max_size: Option<u64>,
    /// Signs the manifest when set.
    pub signing_key: Option<SigningKey>,
}

impl BuildOptions {
    /// Reads `SOURCE_DATE_EPOCH` (unset or empty → 0).
    pub fn source_date_epoch_from_env() -> Result<u64, InitrdError> {
        match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|_| {
                InitrdError::Spec(format!(
                    "SOURCE_DATE_EPOCH {v:?} is not a number of seconds"
                ))
            }),
            _ => Ok(0),
        }
    }
}

/// A finished build, in memory.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// The compressed image.
    pub image: Vec<u8>,
    /// The manifest.
    pub manifest: Manifest,
    /// Its exact (signed) bytes.
    pub manifest_bytes: Vec<u8>,
    /// The detached signature over `manifest_bytes`, if a key was given.
    pub signature: Option<Signature>,
}

impl BuildOutput {
    /// Writes `<stem>.img`, `<stem>.sig` (if signed) and `<stem>.manifest.json` into
    /// `dir` (created if missing). Each file is written to a temporary name, synced
    /// and renamed, the manifest last; on error nothing is left behind.
    pub fn write_to(&self, dir: &Path) -> Result<ArtifactPaths, InitrdError> {
        std::fs::create_dir_all(dir).map_err(|e| InitrdError::io(dir, e))?;
        let paths = ArtifactPaths::in_dir(dir, &self.manifest.file_stem());
        let mut files: Vec<(&Path, Vec<u8>)> = vec![(&paths.image, self.image.clone())];
        if let Some(sig) = &self.signature {
            files.push((&paths.signature, sign::encode_signature(sig).into_bytes()));
        }
        files.push((&paths.manifest, self.manifest_bytes.clone()));
        let mut staged = Vec::new();
        for (path, data) in &files {
            match write_temp(path, data) {
                Ok(tmp) => staged.push((tmp, *path)),
                Err(e) => return Err(cleanup(staged, e)),
            }
        }
        for (tmp, path) in &staged {
            std::fs::rename(tmp, path).map_err(|e| InitrdError::io(path, e))?;
        }
        Ok(paths)
    }
}

fn write_temp(path: &Path, data: &[u8]) -> Result<PathBuf, InitrdError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let res = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(data)?;
        f.sync_all()
    });
    match res {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(InitrdError::io(&tmp, e))
        }
    }
}

fn cleanup(staged: Vec<(PathBuf, &Path)>, err: InitrdError) -> InitrdError {
    for (tmp, _) in staged {
        let _ = std::fs::remove_file(tmp);
    }
    err
}

/// Builds an image from a spec. Pure apart from reading the spec's input files.
pub fn build(spec: &Spec, opts: &BuildOptions) -> Result<BuildOutput, InitrdError> {
    check_file_name_part("image.name", &spec.image.name)?;
    check_file_name_part("init.version", &spec.init.version)?;
    let mut c = Collector::new(spec, opts)?;
    c.add_required(spec)?;
    let kernel = c.add_kernel(spec)?;
    c.add_extras(spec, opts.debug)?;
    let mtime = u32::try_from(opts.source_date_epoch)
        .map_err(|_| InitrdError::Spec("SOURCE_DATE_EPOCH does not fit the cpio format".into()))?;
    let entries = c.archive.entries()?;
    let cpio = c.archive.write(mtime)?;
    let compression = opts.compression.unwrap_or(spec.image.compression);
    let level = opts.level.or(spec.image.level);
    let limit = spec.image.max_uncompressed_size;
    check_budget("uncompressed archive", cpio.len(), limit, &entries)?;
    let image = compress(&cpio, compression, level)?;
    check_budget(
        "compressed image",
        image.len(),
        opts.max_size.or(spec.image.max_size),
        &entries,
    )?;
    let params = Params {
        spec,
        opts,
        kernel,
        compression,
        level: level.unwrap_or(compression.default_level()),
    };
    let manifest = make_manifest(&params, &cpio, &image, &entries)?;
    let manifest_bytes = manifest.to_bytes()?;
    let signature = opts
        .signing_key
        .as_ref()
        .map(|k| sign::sign(k, &manifest_bytes));
    Ok(BuildOutput {
        image,
        manifest,
        manifest_bytes,
        signature,
    })
}

/// Reads a spec file and builds it.
pub fn build_file(spec_path: &Path, opts: &BuildOptions) -> Result<BuildOutput, InitrdError> {
    build(&Spec::load(spec_path)?, opts)
}

struct Params<'a> {
    spec: &'a Spec,
    opts: &'a BuildOptions,
    kernel: Option<KernelInfo>,
    compression: Compression,
    level: i32,
}

/// Accumulates checked entries.
struct Collector {
    archive: Archive,
    resolver: Resolver,
    machine: u16,
    arch: String,
}

impl Collector {
    fn new(spec: &Spec, opts: &BuildOptions) -> Result<Self, InitrdError> {
        let arch = spec.image.arch.clone();
        let machine = elf::machine_of_arch(&arch)
            .ok_or_else(|| InitrdError::Spec(format!("unknown arch {arch:?} (x86_64, aarch64)")))?;
        Ok(Collector {
            archive: Archive::new(),
            resolver: Resolver::new(spec, &opts.vars),
            machine,
            arch,
        })
    }

    /// `/init`, the agent, the headers tarball, `/dev/console` and `/dev/null`.
    fn add_required(&mut self, spec: &Spec) -> Result<(), InitrdError> {
        self.add_file("/init", &spec.init.path, Some(0o755))?;
        if let Some(agent) = &spec.agent {
            self.add_file(&agent.dest, &agent.path, Some(0o755))?;
        }
        if let Some(h) = &spec.headers {
            self.add_file(&h.dest, &h.path, Some(0o644))?;
        }
        self.archive
            .add(Entry::char_dev("/dev/console", 0o600, 5, 1))?;
        self.archive
            .add(Entry::char_dev("/dev/null", 0o666, 1, 3))?;
        Ok(())
    }

    fn add_extras(&mut self, spec: &Spec, debug: bool) -> Result<(), InitrdError> {
        for f in spec.files.iter().filter(|f| debug || !f.debug) {
            let mode = f.mode.as_ref().map(|m| m.bits()).transpose()?;
            self.add_file(&f.dest, &f.src, mode)?;
        }
        for l in spec.symlinks.iter().filter(|l| debug || !l.debug) {
            self.archive.add(Entry::symlink(&l.path, &l.target))?;
        }
        for d in spec.dirs.iter().filter(|d| debug || !d.debug) {
            let mode = d
                .mode
                .as_ref()
                .map(|m| m.bits())
                .transpose()?
                .unwrap_or(0o755);
            self.archive.add(Entry::dir(&d.path, mode))?;
        }
        for n in spec.nodes.iter().filter(|n| debug || !n.debug) {
            let mode = n
                .mode
                .as_ref()
                .map(|m| m.bits())
                .transpose()?
                .unwrap_or(0o600);
            let (major, minor) = (n.major, n.minor);
            let kind = match n.kind {
                NodeKind::Char => EntryKind::CharDev { major, minor },
                NodeKind::Block => EntryKind::BlockDev { major, minor },
            };
            let path = n.path.clone();
            self.archive.add(Entry { path, mode, kind })?;
        }
        Ok(())
    }

    /// Reads a host file, checks it, and adds it. Without a mode, ELF executables
    /// get 0755 and everything else 0644.
    fn add_file(&mut self, dest: &str, src: &str, mode: Option<u32>) -> Result<(), InitrdError> {
        let src = self.resolver.path(src)?;
        let data = std::fs::read(&src).map_err(|e| InitrdError::io(&src, e))?;
        let mode = mode.unwrap_or_else(|| default_mode(&data));
        if mode & 0o111 != 0 {
            self.check_executable(dest, &src, &data)?;
        }
        self.archive.add(Entry::file(dest, mode, data))?;
        Ok(())
    }

    fn check_executable(&self, dest: &str, src: &Path, data: &[u8]) -> Result<(), InitrdError> {
        let (path, src) = (dest.to_string(), src.to_path_buf());
        let info = match elf::inspect(data) {
            Ok(info) => info,
            Err(elf::ElfError::NotElf) => return Err(InitrdError::NotElf { path, src }),
            Err(source) => return Err(InitrdError::Elf { path, src, source }),
        };
        if info.machine != self.machine {
            let (found, expected) = (elf::machine_name(info.machine), self.arch.clone());
            return Err(InitrdError::WrongArch {
                path,
                src,
                found,
                expected,
            });
        }
        if !info.is_static {
            let (interpreter, needed) = (info.interpreter, info.needed);
            return Err(InitrdError::NotStatic {
                path,
                src,
                interpreter,
                needed,
            });
        }
        Ok(())
    }

    fn check_module(&self, dest: &str, src: &Path, data: &[u8]) -> Result<(), InitrdError> {
        let (path, src) = (dest.to_string(), src.to_path_buf());
        let machine = elf::machine(data).map_err(|source| match source {
            elf::ElfError::NotElf => InitrdError::NotElf {
                path: path.clone(),
                src: src.clone(),
            },
            source => InitrdError::Elf {
                path: path.clone(),
                src: src.clone(),
                source,
            },
        })?;
        if machine != self.machine {
            let (found, expected) = (elf::machine_name(machine), self.arch.clone());
            return Err(InitrdError::WrongArch {
                path,
                src,
                found,
                expected,
            });
        }
        Ok(())
    }

    /// Resolves and adds the spec's modules and trimmed index files.
    fn add_kernel(&mut self, spec: &Spec) -> Result<Option<KernelInfo>, InitrdError> {
        let Some(k) = &spec.kernel else {
            return Ok(None);
        };
        let release = self.resolver.text(&k.release)?;
        if k.modules.is_empty() {
            return Ok(Some(KernelInfo {
                release,
                modules: vec![],
                builtin: vec![],
            }));
        }
        let root = k.modules_root.as_deref().ok_or_else(|| {
            InitrdError::Spec("kernel.modules_root is required when kernel.modules is set".into())
        })?;
        let dir = self.resolver.path(root)?.join("lib/modules").join(&release);
        let index = ModuleIndex::load(&dir)?;
        let res = index.resolve(&k.modules, &k.exclude)?;
        let base = format!("/lib/modules/{release}");
        for name in &res.modules {
            let Some(info) = index.module(name) else {
                continue;
            };
            let src = dir.join(&info.path);
            let data = modules::read_module(&src)?;
            let dest = format!("{base}/{}", modules::uncompressed_path(&info.path));
            self.check_module(&dest, &src, &data)?;
            self.archive.add(Entry::file(&dest, 0o644, data))?;
        }
        let t = index.trimmed(&res);
        for (name, text) in [
            ("modules.dep", t.dep),
            ("modules.softdep", t.softdep),
            ("modules.alias", t.alias),
        ] {
            self.archive.add(Entry::file(
                &format!("{base}/{name}"),
                0o644,
                text.into_bytes(),
            ))?;
        }
        Ok(Some(KernelInfo {
            release,
            modules: res.modules,
            builtin: res.builtin,
        }))
    }
}

/// Name and version become part of file names: keep them to `[A-Za-z0-9._+~-]`.
fn check_file_name_part(field: &str, value: &str) -> Result<(), InitrdError> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "._+~-".contains(c);
    if value.is_empty() || !value.chars().all(ok) || value.starts_with('.') {
        return Err(InitrdError::Spec(format!(
            "{field} {value:?} must be non-empty and use only letters, digits and . _ + ~ -"
        )));
    }
    Ok(())
}

fn default_mode(data: &[u8]) -> u32 {
    if elf::inspect(data).is_ok_and(|_| is_elf_executable(data)) {
        0o755
    } else {
        0o644
    }
}

/// ET_EXEC or ET_DYN with an entry point.
fn is_elf_executable(data: &[u8]) -> bool {
    goblin::elf::Elf::parse_header(data).is_ok_and(|h| {
        (h.e_type == goblin::elf::header::ET_EXEC || h.e_type == goblin::elf::header::ET_DYN)
            && h.e_entry != 0
    })
}

fn check_budget(
    what: &'static str,
    size: usize,
    limit: Option<u64>,
    entries: &[Entry],
) -> Result<(), InitrdError> {
    let Some(limit) = limit else { return Ok(()) };
    let size = size as u64;
    if size <= limit {
        return Ok(());
    }
    let mut by_size: Vec<&Entry> = entries.iter().collect();
    by_size.sort_by_key(|e| std::cmp::Reverse(e.kind.data().len()));
    let largest = by_size
        .iter()
        .take(5)
        .map(|e| format!("{} ({} bytes)", e.path, e.kind.data().len()))
        .collect::<Vec<_>>()
        .join(", ");
    Err(InitrdError::OverBudget {
        what,
        size,
        limit,
        largest,
    })
}

/// Every input that determines the image, hashed into the build id.
#[derive(Serialize)]
struct BuildIdInputs<'a> {
    format: u32,
    name: &'a str,
    version: &'a str,
    arch: &'a str,
    init_version: &'a str,
    guest_init_protocol: u32,
    agent_version: Option<&'a str>,
    min_agent_version: Option<&'a str>,
    kernel: Option<&'a KernelInfo>,
    debug: bool,
    source_date_epoch: u64,
    compression: Compression,
    level: i32,
    archive_sha256: &'a str,
}

fn make_manifest(
    p: &Params<'_>,
    cpio: &[u8],
    image: &[u8],
    entries: &[Entry],
) -> Result<Manifest, InitrdError> {
    let spec = p.spec;
    let archive_sha256 = manifest::sha256_hex(cpio);
    let agent = spec.agent.as_ref();
    let inputs = BuildIdInputs {
        format: MANIFEST_FORMAT,
        name: &spec.image.name,
        version: &spec.init.version,
        arch: &spec.image.arch,
        init_version: &spec.init.version,
        guest_init_protocol: spec.init.protocol,
        agent_version: agent.map(|a| a.version.as_str()),
        min_agent_version: agent.and_then(|a| a.min_version.as_deref()),
        kernel: p.kernel.as_ref(),
        debug: p.opts.debug,
        source_date_epoch: p.opts.source_date_epoch,
        compression: p.compression,
        level: p.level,
        archive_sha256: &archive_sha256,
    };
    let build_id = manifest::sha256_hex(&serde_json::to_vec(&inputs)?)[..16].to_string();
    let stem = manifest::file_stem(&spec.image.name, &spec.init.version, &build_id);
    let blob = manifest::Blob::of(image);
    Ok(Manifest {
        format: MANIFEST_FORMAT,
        name: spec.image.name.clone(),
        version: spec.init.version.clone(),
        build_id,
        arch: spec.image.arch.clone(),
        init_version: spec.init.version.clone(),
        guest_init_protocol: spec.init.protocol,
        agent_version: inputs.agent_version.map(str::to_string),
        min_agent_version: inputs.min_agent_version.map(str::to_string),
        kernel: p.kernel.clone(),
        debug: p.opts.debug,
        source_date_epoch: p.opts.source_date_epoch,
        builder_version: env!("CARGO_PKG_VERSION").to_string(),
        image: ImageInfo {
            file: format!("{stem}.img"),
            size: blob.size,
            sha256: blob.sha256,
            compression: p.compression,
            uncompressed_size: cpio.len() as u64,
            uncompressed_sha256: archive_sha256,
        },
        entries: entries.iter().map(ManifestEntry::of).collect(),
    })
}
