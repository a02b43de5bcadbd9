//! Kernel module selection: parses a kernel's `modules.dep`, `modules.softdep`,
//! `modules.alias` (and `modules.builtin`), resolves a list of wanted modules to
//! the closure of their dependencies and soft dependencies, and writes index files
//! trimmed to what is carried.
//!
//! Names are compared after turning `-` into `_`, as modprobe does. A soft
//! dependency (or a wanted name) that is an alias is satisfied by any carried module
//! that provides it; when none is carried yet, every provider not excluded is added.

use guest_contract::modindex::{alias_line, dep_line, softdep_line};
pub use guest_contract::modindex::{module_name, normalize, uncompressed_path};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

/// Errors of reading and resolving a module tree.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// An index or module file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An index or (decompressed) module file above its size limit.
    #[error("{path} is larger than {limit} bytes (decompressed)")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// An index file has a line that does not parse.
    #[error("{file} line {line}: {reason}")]
    Parse {
        /// The index file name.
        file: &'static str,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A wanted name is neither a module, a built-in, nor an alias.
    #[error("unknown module {0:?}: not in modules.dep, modules.builtin or modules.alias")]
    Unknown(String),
    /// Every provider of a wanted alias is excluded.
    #[error("every module providing {0:?} is excluded")]
    AllExcluded(String),
    /// A module file could not be decompressed.
    #[error("cannot decompress {path}")]
    Decompress {
        /// The module file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// One module of `modules.dep`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Path relative to the modules directory, as written in `modules.dep`.
    pub path: String,
    /// Names of the modules it depends on.
    pub deps: Vec<String>,
}

/// A `softdep` line's `pre:` and `post:` names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SoftDep {
    /// Loaded before the module.
    pub pre: Vec<String>,
    /// Loaded after the module.
    pub post: Vec<String>,
}

/// The parsed index files of one kernel release.
#[derive(Debug, Clone, Default)]
pub struct ModuleIndex {
    modules: BTreeMap<String, ModuleInfo>,
    order: Vec<String>,
    softdeps: BTreeMap<String, SoftDep>,
    aliases: Vec<(String, String)>,
    builtin: BTreeSet<String>,
}

/// The outcome of [`ModuleIndex::resolve`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Carried modules, in `modules.dep` order.
    pub modules: Vec<String>,
    /// Wanted names that are built into the kernel (nothing to carry).
    pub builtin: Vec<String>,
}

/// Index files restricted to the carried modules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrimmedIndex {
    /// `modules.dep`.
    pub dep: String,
    /// `modules.softdep`.
    pub softdep: String,
    /// `modules.alias`.
    pub alias: String,
}

/// Largest index file (`modules.dep`, …) read; Debian's `modules.alias` is
/// ~1.5 MiB.
pub const MAX_INDEX_BYTES: u64 = 64 << 20;
/// Largest module read or decompressed (the biggest Debian modules are
/// ~20 MiB uncompressed): a guard against decompression bombs.
pub const MAX_MODULE_BYTES: u64 = 256 << 20;

/// Why a `modules.dep` path is refused: it must be relative, without `..`
/// or whitespace, and name `NAME.ko` (optionally `.xz`, `.zst`, `.gz`) with a
/// non-empty `NAME`, so that its trimmed (`.ko`) form parses to the same name.
fn module_path_problem(path: &str) -> Option<&'static str> {
    let base = uncompressed_path(path.rsplit('/').next().unwrap_or(path));
    if path.starts_with('/') || path.split('/').any(|c| c == "..") || path.is_empty() {
        Some("module path must be relative")
    } else if path.chars().any(char::is_whitespace) {
        Some("module path has whitespace")
    } else if base.strip_suffix(".ko").is_none_or(str::is_empty) {
        Some("not a module file name (NAME.ko, .ko.xz, .ko.zst or .ko.gz)")
    } else {
        None
    }
}

fn is_blank_or_comment(line: &str) -> bool {
    line.split_whitespace()
        .next()
        .is_none_or(|w| w.starts_with('#'))
}

fn parse_err(file: &'static str, line: usize, reason: &str) -> ModuleError {
    ModuleError::Parse {
        file,
        line: line + 1,
        reason: reason.to_string(),
    }
}

impl ModuleIndex {
    /// Parses the contents of `modules.dep`, `modules.softdep`, `modules.alias` and
    /// `modules.builtin` (pass `""` for a missing optional file).
    pub fn parse(
        dep: &str,
        softdep: &str,
        alias: &str,
        builtin: &str,
    ) -> Result<Self, ModuleError> {
        let mut idx = ModuleIndex::default();
        idx.parse_dep(dep)?;
        idx.parse_softdep(softdep)?;
        idx.parse_alias(alias)?;
        idx.builtin = builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(module_name)
            .collect();
        Ok(idx)
    }

    /// Reads the index files of a modules directory (`.../lib/modules/<kver>`).
    /// `modules.dep` is required; the others are optional.
    pub fn load(dir: &Path) -> Result<Self, ModuleError> {
        let read = |name: &str, required: bool| -> Result<String, ModuleError> {
            let path = dir.join(name);
            match read_limited(&path, MAX_INDEX_BYTES) {
                Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
                Err(ModuleError::Io { source, .. })
                    if !required && source.kind() == std::io::ErrorKind::NotFound =>
                {
                    Ok(String::new())
                }
                Err(e) => Err(e),
            }
        };
        Self::parse(
            &read("modules.dep", true)?,
            &read("modules.softdep", false)?,
            &read("modules.alias", false)?,
            &read("modules.builtin", false)?,
        )
    }

    fn parse_dep(&mut self, text: &str) -> Result<(), ModuleError> {
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (path, deps) =
                dep_line(line).ok_or_else(|| parse_err("modules.dep", n, "missing ':'"))?;
            for p in std::iter::once(&path).chain(&deps) {
                if let Some(reason) = module_path_problem(p) {
                    return Err(parse_err("modules.dep", n, reason));
                }
            }
            let name = module_name(path);
            if self.modules.contains_key(&name) {
                return Err(parse_err("modules.dep", n, "module listed twice"));
            }
            let info = ModuleInfo {
                path: path.to_string(),
                deps: deps.into_iter().map(module_name).collect(),
            };
            self.order.push(name.clone());
            self.modules.insert(name, info);
        }
        Ok(())
    }

    fn parse_softdep(&mut self, text: &str) -> Result<(), ModuleError> {
        for (n, line) in text.lines().enumerate() {
            if is_blank_or_comment(line) {
                continue;
            }
            let sd = softdep_line(line).ok_or_else(|| {
                parse_err(
                    "modules.softdep",
                    n,
                    "expected 'softdep MODULE [pre: …] [post: …]'",
                )
            })?;
            let entry = self.softdeps.entry(normalize(sd.module)).or_default();
            entry.pre.extend(sd.pre.into_iter().map(str::to_string));
            entry.post.extend(sd.post.into_iter().map(str::to_string));
        }
        Ok(())
    }

    fn parse_alias(&mut self, text: &str) -> Result<(), ModuleError> {
        for (n, line) in text.lines().enumerate() {
            if is_blank_or_comment(line) {
                continue;
            }
            let (pattern, module) = alias_line(line)
                .ok_or_else(|| parse_err("modules.alias", n, "expected 'alias PATTERN MODULE'"))?;
            self.aliases.push((pattern.to_string(), normalize(module)));
        }
        Ok(())
    }

    /// The module of that name, if `modules.dep` lists it.
    pub fn module(&self, name: &str) -> Option<&ModuleInfo> {
        self.modules.get(&normalize(name))
    }

    /// Whether `modules.builtin` lists the name.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// Modules providing an alias (exact or glob match), in `modules.alias` order,
    /// without duplicates; only modules present in `modules.dep`.
    pub fn providers(&self, alias: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (pattern, module) in &self.aliases {
            let hit = pattern == alias || glob_match(pattern.as_bytes(), alias.as_bytes());
            if hit && self.modules.contains_key(module) && !out.contains(module) {
                out.push(module.clone());
            }
        }
        out
    }

    /// Resolves `wanted` (module names or aliases) to the set of modules to carry:
    /// their `modules.dep` closure plus soft dependencies (`pre:` and `post:`),
    /// recursively. `exclude` names modules never added for an alias.
    pub fn resolve(
        &self,
        wanted: &[String],
        exclude: &[String],
    ) -> Result<Resolution, ModuleError> {
        let exclude: BTreeSet<String> = exclude.iter().map(|e| normalize(e)).collect();
        let mut r = Resolver {
            idx: self,
            exclude,
            carried: BTreeSet::new(),
            builtin: Vec::new(),
        };
        for name in wanted {
            r.want(name)?;
        }
        r.close_softdeps();
        let modules = self
            .order
            .iter()
            .filter(|m| r.carried.contains(*m))
            .cloned()
            .collect();
        Ok(Resolution {
            modules,
            builtin: r.builtin,
        })
    }

    /// Index files restricted to `res.modules`, with decompressed file names.
    pub fn trimmed(&self, res: &Resolution) -> TrimmedIndex {
        let carried: BTreeSet<&String> = res.modules.iter().collect();
        TrimmedIndex {
            dep: self.trimmed_dep(&res.modules),
            softdep: self.trimmed_softdep(&carried),
            alias: self
                .aliases
                .iter()
                .filter(|(_, m)| carried.contains(m))
                .map(|(p, m)| format!("alias {p} {m}\n"))
                .collect(),
        }
    }

    fn trimmed_dep(&self, carried: &[String]) -> String {
        let mut out = String::new();
        for info in carried.iter().filter_map(|m| self.modules.get(m)) {
            out.push_str(&uncompressed_path(&info.path));
            out.push(':');
            for dep in info.deps.iter().filter_map(|d| self.modules.get(d)) {
                out.push(' ');
                out.push_str(&uncompressed_path(&dep.path));
            }
            out.push('\n');
        }
        out
    }

    fn trimmed_softdep(&self, carried: &BTreeSet<&String>) -> String {
        let keep = |name: &&String| {
            let n = normalize(name);
            carried.contains(&n) || self.providers(name).iter().any(|p| carried.contains(p))
        };
        let mut out = String::new();
        for (module, sd) in self.softdeps.iter().filter(|(m, _)| carried.contains(m)) {
            let pre: Vec<&String> = sd.pre.iter().filter(keep).collect();
            let post: Vec<&String> = sd.post.iter().filter(keep).collect();
            if pre.is_empty() && post.is_empty() {
                continue;
            }
            out.push_str(&format!("softdep {module}"));
            for (label, list) in [("pre:", pre), ("post:", post)] {
                if !list.is_empty() {
                    out.push_str(&format!(" {label}"));
                    list.iter().for_each(|n| out.push_str(&format!(" {n}")));
                }
            }
            out.push('\n');
        }
        out
    }
}

struct Resolver<'a> {
    idx: &'a ModuleIndex,
    exclude: BTreeSet<String>,
    carried: BTreeSet<String>,
    builtin: Vec<String>,
}

impl Resolver<'_> {
    fn want(&mut self, name: &str) -> Result<(), ModuleError> {
        let norm = normalize(name);
        if self.idx.modules.contains_key(&norm) {
            self.add_with_deps(&norm);
        } else if self.idx.is_builtin(&norm) {
            self.builtin.push(norm);
        } else {
            let providers = self.idx.providers(name);
            if providers.is_empty() {
                return Err(ModuleError::Unknown(name.to_string()));
            }
            if !self.add_alias(&providers) {
                return Err(ModuleError::AllExcluded(name.to_string()));
            }
        }
        Ok(())
    }

    /// Adds the providers of an alias unless one is carried already; false when all
    /// are excluded.
    fn add_alias(&mut self, providers: &[String]) -> bool {
        if providers.iter().any(|p| self.carried.contains(p)) {
            return true;
        }
        let allowed: Vec<&String> = providers
            .iter()
            .filter(|p| !self.exclude.contains(*p))
            .collect();
        for p in &allowed {
            self.add_with_deps(p);
        }
        !allowed.is_empty()
    }

    fn add_with_deps(&mut self, name: &str) {
        let mut stack = vec![name.to_string()];
        while let Some(m) = stack.pop() {
            if !self.carried.insert(m.clone()) {
                continue;
            }
            if let Some(info) = self.idx.modules.get(&m) {
                stack.extend(info.deps.iter().cloned());
            }
        }
    }

    /// Adds soft dependencies of carried modules until nothing changes. A soft
    /// dependency that names nothing known is ignored, as modprobe does.
    fn close_softdeps(&mut self) {
        loop {
            let before = self.carried.len();
            let carried: Vec<String> = self.carried.iter().cloned().collect();
            for m in carried {
                let Some(sd) = self.idx.softdeps.get(&m) else {
                    continue;
                };
                for name in sd.pre.iter().chain(&sd.post) {
                    let norm = normalize(name);
                    if self.idx.modules.contains_key(&norm) {
                        self.add_with_deps(&norm);
                    } else {
                        let providers = self.idx.providers(name);
                        self.add_alias(&providers);
                    }
                }
            }
            if self.carried.len() == before {
                return;
            }
        }
    }
}

/// fnmatch-style matching of `*`, `?` and `[...]` (with `!`/`^` negation and
/// ranges), as used by modules.alias patterns.
pub fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
            continue;
        }
        if let Some(np) = match_one(pat, p, s[i]) {
            p = np;
            i += 1;
            continue;
        }
        match star {
            Some((sp, si)) => {
                p = sp + 1;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Matches one character at `pat[p]`; returns the next pattern index.
fn match_one(pat: &[u8], p: usize, c: u8) -> Option<usize> {
    match pat.get(p)? {
        b'?' => Some(p + 1),
        b'*' => None,
        b'[' => match_class(pat, p, c),
        &lit => (lit == c).then_some(p + 1),
    }
}

fn match_class(pat: &[u8], p: usize, c: u8) -> Option<usize> {
    let mut j = p + 1;
    let negate = matches!(pat.get(j), Some(b'!') | Some(b'^'));
    if negate {
        j += 1;
    }
    let mut hit = false;
    let mut first = true;
    while let Some(&ch) = pat.get(j) {
        if ch == b']' && !first {
            return (hit != negate).then_some(j + 1);
        }
        first = false;
        if pat.get(j + 1) == Some(&b'-') && pat.get(j + 2).is_some_and(|&e| e != b']') {
            hit |= (ch..=pat[j + 2]).contains(&c);
            j += 3;
        } else {
            hit |= ch == c;
            j += 1;
        }
    }
    // An unterminated class matches a literal '['.
    (c == b'[').then_some(p + 1)
}

/// Reads a module file and decompresses `.ko.xz`, `.ko.zst` and `.ko.gz`, to
/// at most [`MAX_MODULE_BYTES`].
pub fn read_module(path: &Path) -> Result<Vec<u8>, ModuleError> {
    read_module_limited(path, MAX_MODULE_BYTES)
}

fn read_module_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ModuleError> {
    let raw = read_limited(path, MAX_MODULE_BYTES.max(limit))?;
    let name = path.to_string_lossy();
    let fail = |source| ModuleError::Decompress {
        path: path.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    if name.ends_with(".xz") {
        let mut sink = LimitedWriter { out, limit };
        let res = lzma_rs::xz_decompress(&mut raw.as_slice(), &mut sink);
        if sink.out.len() as u64 > limit {
            return Err(too_large(path, limit));
        }
        // lzma-rs's errors print their cause and return it as source: keep the
        // message only, so it is said once.
        res.map_err(|e| fail(std::io::Error::new(ErrorKind::InvalidData, e.to_string())))?;
        out = sink.out;
    } else if name.ends_with(".zst") {
        let dec = zstd::stream::read::Decoder::new(raw.as_slice()).map_err(fail)?;
        dec.take(limit + 1).read_to_end(&mut out).map_err(fail)?;
    } else if name.ends_with(".gz") {
        let dec = flate2::read::GzDecoder::new(raw.as_slice());
        dec.take(limit + 1).read_to_end(&mut out).map_err(fail)?;
    } else {
        out = raw;
    }
    if out.len() as u64 > limit {
        return Err(too_large(path, limit));
    }
    Ok(out)
}

fn too_large(path: &Path, limit: u64) -> ModuleError {
    ModuleError::TooLarge {
        path: path.to_path_buf(),
        limit,
    }
}

/// Reads at most `limit` bytes of a file; more is an error.
fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ModuleError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
        .map_err(|source| ModuleError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(too_large(path, limit));
    }
    Ok(bytes)
}

/// A `Write` that takes one byte past `limit` and then fails, so that a
/// decoder writing into it stops early (the caller sees the extra byte).
struct LimitedWriter {
    out: Vec<u8>,
    limit: u64,
}

impl std::io::Write for LimitedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = (self.limit + 1).saturating_sub(self.out.len() as u64);
        if room == 0 {
            return Err(std::io::Error::other("decompressed size limit reached"));
        }
        let n = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        self.out.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/fs/unrelated.ko:
kernel/fs/a.ko:
kernel/fs/b.ko:
";
    const SOFTDEP: &str = "\
# Soft dependencies extracted from modules themselves.
softdep ext4 pre: crypto-crc32c
softdep jbd2 pre: crypto-crc32c
softdep a post: b
softdep unrelated pre: crc16
";
    const ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias crypto-crc32c-intel crc32c_intel
alias crypto-crc32c crc32c_intel
alias crc32c crc32c_intel
alias crypto-crc32c crc32c_generic
alias crc32c crc32c_generic
alias fs-ext4 ext4
alias virtio:d00000002v* virtio_blk
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
";

    fn idx() -> ModuleIndex {
        ModuleIndex::parse(DEP, SOFTDEP, ALIAS, "kernel/fs/overlayfs/overlay.ko\n").unwrap()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn names() {
        assert_eq!(module_name("kernel/fs/ext4/ext4.ko.xz"), "ext4");
        assert_eq!(
            module_name("kernel/arch/x86/crypto/crc32c-intel.ko"),
            "crc32c_intel"
        );
        assert_eq!(uncompressed_path("a/b.ko.zst"), "a/b.ko");
    }

    #[test]
    fn deps_and_alias_softdeps() {
        let r = idx().resolve(&s(&["ext4", "crc32c-generic"]), &[]).unwrap();
        assert_eq!(
            r.modules,
            s(&["ext4", "jbd2", "mbcache", "crc16", "crc32c_generic"])
        );
    }

    #[test]
    fn alias_softdep_adds_all_providers_unless_excluded() {
        let r = idx().resolve(&s(&["jbd2"]), &[]).unwrap();
        assert_eq!(r.modules, s(&["jbd2", "crc32c_generic", "crc32c_intel"]));
        let r = idx().resolve(&s(&["jbd2"]), &s(&["crc32c_intel"])).unwrap();
        assert_eq!(r.modules, s(&["jbd2", "crc32c_generic"]));
    }

    #[test]
    fn post_softdeps_builtins_aliases_and_unknowns() {
        let r = idx()
            .resolve(&s(&["a", "overlay", "fs-ext4"]), &s(&["crc32c_intel"]))
            .unwrap();
        assert!(r.modules.contains(&"b".to_string()));
        assert!(r.modules.contains(&"ext4".to_string()));
        assert_eq!(r.builtin, s(&["overlay"]));
        assert!(matches!(
            idx().resolve(&s(&["nope"]), &[]),
            Err(ModuleError::Unknown(_))
        ));
        assert!(matches!(
            idx().resolve(&s(&["crc32c"]), &s(&["crc32c_intel", "crc32c_generic"])),
            Err(ModuleError::AllExcluded(_))
        ));
    }

    #[test]
    fn trimmed_index_files() {
        let i = idx();
        let r = i
            .resolve(&s(&["ext4", "virtio_blk", "crc32c_generic"]), &[])
            .unwrap();
        let t = i.trimmed(&r);
        assert_eq!(
            t.dep,
            "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/crypto/crc32c_generic.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
"
        );
        assert_eq!(
            t.softdep,
            "softdep ext4 pre: crypto-crc32c\nsoftdep jbd2 pre: crypto-crc32c\n"
        );
        assert_eq!(
            t.alias,
            "alias crypto-crc32c crc32c_generic\nalias crc32c crc32c_generic\nalias fs-ext4 ext4\nalias virtio:d00000002v* virtio_blk\n"
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match(
            b"virtio:d00000002v*",
            b"virtio:d00000002v00001AF4"
        ));
        assert!(glob_match(b"pci:v*d*sv*", b"pci:v1d2sv3"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(glob_match(b"a[0-9]c", b"a5c"));
        assert!(!glob_match(b"a[!0-9]c", b"a5c"));
        assert!(!glob_match(b"abc", b"abd"));
        assert!(!glob_match(b"a*d", b"abc"));
    }

    #[test]
    fn malformed_index_files() {
        assert!(ModuleIndex::parse("no colon\n", "", "", "").is_err());
        assert!(ModuleIndex::parse("/abs/x.ko:\n", "", "", "").is_err());
        assert!(ModuleIndex::parse("", "options x y\n", "", "").is_err());
        assert!(ModuleIndex::parse("", "", "alias onlyone\n", "").is_err());
    }

    #[test]
    fn names_that_trim_to_nothing_are_refused_at_parse_time() {
        // `.xz` once became the empty path `` in the trimmed modules.dep, which
        // the parser then refused: such lines never get past the parser now.
        for (dep, line) in [
            (".xz:\n", 1),
            ("a.ko:\n.ko.zst:\n", 2),
            ("a/.ko:\n", 1),
            ("kernel/x.gz:\n", 1),
            ("a.ko: .xz\n", 1),
            ("a.ko: b.ko:\n", 1),
            ("a b.ko:\n", 1),
            ("a-b.ko:\nx/a_b.ko.xz:\n", 2),
        ] {
            match ModuleIndex::parse(dep, "", "", "") {
                Err(ModuleError::Parse { line: l, .. }) => assert_eq!(l, line, "{dep:?}"),
                other => panic!("{dep:?}: {other:?}"),
            }
        }
        // What does parse trims to a modules.dep that parses to the same.
        let i = ModuleIndex::parse("k/a.ko.xz: k/b.ko.zst\nk/b.ko.zst:\n", "", "", "").unwrap();
        let r = i.resolve(&s(&["a"]), &[]).unwrap();
        let t = i.trimmed(&r);
        assert_eq!(t.dep, "k/a.ko: k/b.ko\nk/b.ko:\n");
        let again = ModuleIndex::parse(&t.dep, &t.softdep, &t.alias, "").unwrap();
        assert_eq!(again.resolve(&r.modules, &[]).unwrap(), r);
        assert_eq!(again.trimmed(&r), t);
    }

    #[test]
    fn decompression_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let zeros = vec![0u8; 4 << 20];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &zeros).unwrap();
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut zeros.as_slice(), &mut xz).unwrap();
        let bombs = [
            (
                "bomb.ko.zst",
                zstd::encode_all(zeros.as_slice(), 19).unwrap(),
            ),
            ("bomb.ko.gz", gz.finish().unwrap()),
            ("bomb.ko.xz", xz),
        ];
        for (name, packed) in bombs {
            // lzma-rs only stores: its "bomb" is as big as its output.
            assert!(name.ends_with(".xz") || packed.len() < 64 << 10, "{name}");
            let path = dir.path().join(name);
            std::fs::write(&path, packed).unwrap();
            assert_eq!(read_module_limited(&path, 4 << 20).unwrap().len(), 4 << 20);
            let err = read_module_limited(&path, 1 << 20).unwrap_err();
            assert!(
                matches!(err, ModuleError::TooLarge { limit, .. } if limit == 1 << 20),
                "{err}"
            );
        }
        let plain = dir.path().join("big.ko");
        std::fs::write(&plain, vec![1u8; 2 << 20]).unwrap();
        assert!(matches!(
            read_module_limited(&plain, 1 << 20),
            Err(ModuleError::TooLarge { .. })
        ));
        assert_eq!(MAX_MODULE_BYTES, 256 << 20);
    }

    #[test]
    fn decompresses_modules() {
        let dir = tempfile::tempdir().unwrap();
        let body = b"\x7fELF fake module".repeat(10);
        let zst = dir.path().join("m.ko.zst");
        std::fs::write(&zst, zstd::encode_all(body.as_slice(), 3).unwrap()).unwrap();
        assert_eq!(read_module(&zst).unwrap(), body);
        let xz = dir.path().join("m.ko.xz");
        let mut packed = Vec::new();
        lzma_rs::xz_compress(&mut body.as_slice(), &mut packed).unwrap();
        std::fs::write(&xz, packed).unwrap();
        assert_eq!(read_module(&xz).unwrap(), body);
        std::fs::write(dir.path().join("bad.ko.xz"), b"junk").unwrap();
        assert!(read_module(&dir.path().join("bad.ko.xz")).is_err());
    }
}
