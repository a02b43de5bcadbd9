//! The declarative build spec (TOML). See the crate README for the format.
//!
//! Relative paths are relative to the directory of the spec file. Strings may use
//! `{name}` placeholders, filled from the spec's `[vars]` table and then from the
//! caller's variables (which win).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::compress::Compression;
use crate::InitrdError;

/// A parsed spec plus the directory its relative paths start from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Image-wide settings.
    #[serde(default)]
    pub image: ImageSpec,
    /// Default values of `{name}` placeholders.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// The PID 1 binary, carried as `/init`.
    pub init: InitSpec,
    /// The guest agent, carried at `dest` (default `/usr/local/bin/guest-agent`).
    pub agent: Option<AgentSpec>,
    /// Kernel modules of the kernel this image pairs with.
    pub kernel: Option<KernelSpec>,
    /// A kernel-headers tarball.
    pub headers: Option<HeadersSpec>,
    /// Extra regular files.
    #[serde(default, rename = "file")]
    pub files: Vec<FileSpec>,
    /// Extra symlinks.
    #[serde(default, rename = "symlink")]
    pub symlinks: Vec<SymlinkSpec>,
    /// Extra (empty) directories.
    #[serde(default, rename = "dir")]
    pub dirs: Vec<DirSpec>,
    /// Extra device nodes (`/dev/console` and `/dev/null` are always carried).
    #[serde(default, rename = "node")]
    pub nodes: Vec<NodeSpec>,
    /// Directory that relative paths are resolved against.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[image]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// Middle part of the file name: `initramfs-<name>-<version>-<build_id>.img`.
    #[serde(default = "default_name")]
    pub name: String,
    /// Target architecture: `x86_64` or `aarch64`; every ELF must match.
    #[serde(default = "default_arch")]
    pub arch: String,
    /// `none`, `gzip`, `zstd` or `lz4`.
    #[serde(default)]
    pub compression: Compression,
    /// Compression level (gzip 1–9, zstd 1–22); default: the codec's best.
    pub level: Option<i32>,
    /// Fail when the compressed image is larger: bytes, or a string such as
    /// `"4MiB"` (see [`parse_size`]).
    #[serde(default, deserialize_with = "de_size")]
    pub max_size: Option<u64>,
    /// Fail when the uncompressed archive is larger.
    #[serde(default, deserialize_with = "de_size")]
    pub max_uncompressed_size: Option<u64>,
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec {
            name: default_name(),
            arch: default_arch(),
            compression: Compression::default(),
            level: None,
            max_size: None,
            max_uncompressed_size: None,
        }
    }
}

fn default_name() -> String {
    "guestinit".to_string()
}

fn default_arch() -> String {
    "x86_64".to_string()
}

/// Parses a size: plain bytes (`"4194304"`) or a number with a unit `K`/`KiB`,
/// `M`/`MiB`, `G`/`GiB` (all powers of 1024), e.g. `"4MiB"`, `"1.5M"`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?} (use K, M, G)"
            ))
        }
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("invalid size {s:?}"));
    }
    Ok((n * mult as f64).round() as u64)
}

fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Int(u64),
        Str(String),
    }
    match Size::deserialize(d)? {
        Size::Int(n) => Ok(Some(n)),
        Size::Str(s) => parse_size(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

/// `[init]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitSpec {
    /// Path of the static `init` binary.
    pub path: String,
    /// Its version (recorded in the manifest and the file name).
    pub version: String,
    /// The guest-init protocol number it speaks.
    pub protocol: u32,
}

/// `[agent]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// Path of the static agent binary.
    pub path: String,
    /// Its version.
    pub version: String,
    /// The oldest agent version hosts may pair with this init.
    pub min_version: Option<String>,
    /// Where it is carried.
    #[serde(default = "default_agent_dest")]
    pub dest: String,
}

fn default_agent_dest() -> String {
    "/usr/local/bin/guest-agent".to_string()
}

/// `[kernel]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSpec {
    /// Kernel release (`uname -r`), e.g. `6.1.0-31-amd64`.
    pub release: String,
    /// Folder holding `lib/modules/<release>/` (a `depmod -b` base).
    pub modules_root: Option<String>,
    /// Modules (or aliases) to carry; dependencies come along.
    #[serde(default)]
    pub modules: Vec<String>,
    /// Modules never added to satisfy an alias (e.g. `crc32c_intel`).
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// `[headers]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersSpec {
    /// The tarball on the build host.
    pub path: String,
    /// Where it is carried.
    #[serde(default = "default_headers_dest")]
    pub dest: String,
}

fn default_headers_dest() -> String {
    "/kernel-headers.tar.gz".to_string()
}

/// `[[file]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Source on the build host.
    pub src: String,
    /// Absolute path in the image.
    pub dest: String,
    /// Permission bits; default 0755 for ELF executables, else 0644.
    pub mode: Option<Mode>,
    /// Carried only in debug builds.
    #[serde(default)]
    pub debug: bool,
}

/// `[[symlink]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymlinkSpec {
    /// Absolute path of the link.
    pub path: String,
    /// Link target, stored as written.
    pub target: String,
    /// Carried only in debug builds.
    #[serde(default)]
    pub debug: bool,
}

/// `[[dir]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirSpec {
    /// Absolute path.
    pub path: String,
    /// Permission bits; default 0755.
    pub mode: Option<Mode>,
    /// Carried only in debug builds.
    #[serde(default)]
    pub debug: bool,
}

/// `[[node]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Absolute path.
    pub path: String,
    /// `char` or `block`.
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Permission bits; default 0600.
    pub mode: Option<Mode>,
    /// Carried only in debug builds.
    #[serde(default)]
    pub debug: bool,
}

/// Device node type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Character device.
    Char,
    /// Block device.
    Block,
}

/// Permission bits, written as a TOML octal integer (`0o755`) or an octal string
/// (`"0755"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Mode {
    /// An integer (use TOML's `0o` prefix).
    Int(u32),
    /// An octal string.
    Str(String),
}

impl Mode {
    /// The permission bits; errors above `0o7777` or on a non-octal string.
    pub fn bits(&self) -> Result<u32, InitrdError> {
        let bits = match self {
            Mode::Int(i) => Some(*i),
            Mode::Str(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).ok(),
        };
        bits.filter(|b| *b <= 0o7777).ok_or_else(|| {
            InitrdError::Spec(format!("invalid mode {self:?}: use 0o755 or \"0755\""))
        })
    }
}

impl Spec {
    /// Parses TOML text; relative paths will start at `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Spec, InitrdError> {
        Self::parse_from(text, base_dir, "spec text")
    }

    fn parse_from(text: &str, base_dir: &Path, origin: &str) -> Result<Spec, InitrdError> {
        let mut spec: Spec = toml::from_str(text).map_err(|e| InitrdError::SpecSyntax {
            origin: origin.to_string(),
            source: Box::new(e),
        })?;
        spec.base_dir = base_dir.to_path_buf();
        Ok(spec)
    }

    /// Reads and parses a spec file; relative paths start at its directory.
    pub fn load(path: &Path) -> Result<Spec, InitrdError> {
        let text = std::fs::read_to_string(path).map_err(|e| InitrdError::io(path, e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let base = if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        };
        Spec::parse_from(&text, base, &path.display().to_string())
    }
}

/// Fills `{name}` placeholders and resolves spec paths.
#[derive(Debug, Clone)]
pub struct Resolver {
    base: PathBuf,
    vars: BTreeMap<String, String>,
}

impl Resolver {
    /// Spec `[vars]` overridden by `overrides`.
    pub fn new(spec: &Spec, overrides: &BTreeMap<String, String>) -> Self {
        let mut vars = spec.vars.clone();
        vars.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        Resolver {
            base: spec.base_dir.clone(),
            vars,
        }
    }

    /// Expands the placeholders of `s`; an undefined or empty one is an error.
    pub fn text(&self, s: &str) -> Result<String, InitrdError> {
        let mut out = String::new();
        let mut rest = s;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .ok_or_else(|| InitrdError::Spec(format!("unclosed '{{' in {s:?}")))?;
            let name = &rest[start + 1..start + end];
            match self.vars.get(name).filter(|v| !v.is_empty()) {
                Some(v) => out.push_str(v),
                None => return Err(InitrdError::UndefinedVar(name.to_string())),
            }
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Expands placeholders and makes a relative path start at the spec directory.
    pub fn path(&self, s: &str) -> Result<PathBuf, InitrdError> {
        Ok(self.base.join(self.text(s)?))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
[vars]
target = "../target"

[image]
compression = "zstd"
max_size = 1000

[init]
path = "{target}/init"
version = "0.1.0"
protocol = 1

[kernel]
release = "{kver}"
modules_root = "cache/{kver}/root"
modules = ["ext4"]

[[file]]
src = "/bin/busybox"
dest = "/bin/busybox"
mode = 0o755
debug = true

[[node]]
path = "/dev/ttyS0"
type = "char"
major = 4
minor = 64
mode = "0620"
"#;

    #[test]
    fn parses_and_resolves() {
        let spec = Spec::parse(SPEC, Path::new("/specs")).unwrap();
        assert_eq!(spec.image.compression, Compression::Zstd);
        assert_eq!(spec.image.arch, "x86_64");
        assert_eq!(spec.files[0].mode.as_ref().unwrap().bits().unwrap(), 0o755);
        assert_eq!(spec.nodes[0].mode.as_ref().unwrap().bits().unwrap(), 0o620);
        let mut vars = BTreeMap::new();
        let r = Resolver::new(&spec, &vars);
        assert_eq!(
            r.path(&spec.init.path).unwrap(),
            Path::new("/specs/../target/init")
        );
        assert!(matches!(r.text("{kver}"), Err(InitrdError::UndefinedVar(v)) if v == "kver"));
        vars.insert("kver".into(), "6.1".into());
        vars.insert("target".into(), "/t".into());
        let r = Resolver::new(&spec, &vars);
        assert_eq!(r.path(&spec.init.path).unwrap(), Path::new("/t/init"));
        assert_eq!(r.text("a{kver}b{kver}").unwrap(), "a6.1b6.1");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
        assert_eq!(parse_size("1.5M").unwrap(), 3 << 19);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert!(parse_size("3 parsecs").is_err());
        let spec = SPEC.replace("max_size = 1000", "max_size = \"3MiB\"");
        let spec = Spec::parse(&spec, Path::new(".")).unwrap();
        assert_eq!(spec.image.max_size, Some(3 << 20));
    }

    #[test]
    fn rejects_unknown_fields_and_bad_modes() {
        let bad = SPEC.replace("protocol = 1", "protocol = 1\ncolour = 2");
        assert!(Spec::parse(&bad, Path::new(".")).is_err());
        assert!(Mode::Str("999".into()).bits().is_err());
        assert!(Mode::Int(0o17777).bits().is_err());
    }
}
