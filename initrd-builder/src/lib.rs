//! Reproducible, verified, tiny initramfs images for the guest `init`.
//!
//! - [`spec`]: the declarative TOML spec of what an image carries;
//! - [`build()`]: spec → newc cpio ([`cpio`]) → compression ([`compress`]) →
//!   manifest ([`manifest`]) → ed25519 signature ([`sign`]);
//! - [`verify`]: signature, then manifest, then image hash (and optionally every
//!   entry);
//! - [`modules`]: kernel module dependency resolution and trimmed index files;
//! - [`elf`]: static-ness and architecture of ELF files.
//!
//! Typical host-side use:
//! ```no_run
//! use initrd_builder::{build, BuildOptions, Spec};
//! # fn main() -> Result<(), initrd_builder::InitrdError> {
//! let spec = Spec::load("initrd-builder/specs/guestinit.toml".as_ref())?;
//! let mut opts = BuildOptions::default();
//! opts.vars.insert("kver".into(), "6.1.0-31-amd64".into());
//! opts.signing_key = Some(initrd_builder::sign::read_secret_key("release.key".as_ref())?);
//! let out = build(&spec, &opts)?;
//! let paths = out.write_to("out".as_ref())?;
//! let key = initrd_builder::sign::read_public_key("release.pub".as_ref())?;
//! let manifest = initrd_builder::verify::verify_files(&paths, &key, true)?;
//! println!("{} {}", manifest.build_id, paths.image.display());
//! # Ok(())
//! # }
//! ```

pub mod build;
pub mod compress;
pub mod cpio;
pub mod elf;
pub mod manifest;
pub mod modules;
pub mod sign;
pub mod spec;
pub mod verify;

use std::path::{Path, PathBuf};

pub use build::{build, BuildOptions, BuildOutput};
pub use compress::Compression;
pub use manifest::Manifest;
pub use spec::Spec;
pub use verify::{ArtifactPaths, VerifyError};

/// Errors of building, listing and verifying images.
#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The spec is invalid.
    #[error("invalid spec: {0}")]
    Spec(String),
    /// A `{name}` placeholder has no value.
    #[error("spec variable {{{0}}} is not set (pass --var {0}=VALUE or set it in [vars])")]
    UndefinedVar(String),
    /// An executable is not an ELF file.
    #[error(
        "{path} ({src}): executable is not an ELF file; only static ELF executables are carried"
    )]
    NotElf {
        /// Path in the image.
        path: String,
        /// Source on the host.
        src: PathBuf,
    },
    /// An ELF file could not be parsed.
    #[error("{path} ({src}): {source}")]
    Elf {
        /// Path in the image.
        path: String,
        /// Source on the host.
        src: PathBuf,
        /// The cause.
        source: elf::ElfError,
    },
    /// An executable needs a dynamic loader or shared libraries.
    #[error("{path} ({src}) is not static: interpreter {interpreter:?}, needed {needed:?}")]
    NotStatic {
        /// Path in the image.
        path: String,
        /// Source on the host.
        src: PathBuf,
        /// `PT_INTERP`.
        interpreter: Option<String>,
        /// `DT_NEEDED`.
        needed: Vec<String>,
    },
    /// An ELF file is built for another architecture.
    #[error("{path} ({src}) is built for {found}, the image is for {expected}")]
    WrongArch {
        /// Path in the image.
        path: String,
        /// Source on the host.
        src: PathBuf,
        /// Architecture of the file.
        found: String,
        /// Architecture of the image.
        expected: String,
    },
    /// The image is above its size budget.
    #[error(
        "{what} is {size} bytes, above the budget of {limit} bytes; largest entries: {largest}"
    )]
    OverBudget {
        /// `compressed image` or `uncompressed archive`.
        what: &'static str,
        /// Actual size.
        size: u64,
        /// The limit.
        limit: u64,
        /// The biggest entries, for the user to act on.
        largest: String,
    },
    /// Manifest (de)serialisation failed.
    #[error("manifest: {0}")]
    Manifest(#[from] serde_json::Error),
    /// Archive error.
    #[error(transparent)]
    Cpio(#[from] cpio::CpioError),
    /// Compression error.
    #[error(transparent)]
    Compress(#[from] compress::CompressError),
    /// Module resolution error.
    #[error(transparent)]
    Modules(#[from] modules::ModuleError),
    /// Key or signature error.
    #[error(transparent)]
    Key(#[from] sign::KeyError),
    /// Verification failed.
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

impl InitrdError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        InitrdError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
