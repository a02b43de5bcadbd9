//! Reproducible, verified, tiny initramfs images for the guest `init`.
//!
//! - [`spec`]: the declarative TOML spec of what an image carries;
//! - [`build()`]: spec → newc cpio ([`cpio`]) → compression ([`compress`]) →
//!   manifest ([`manifest`]) → ed25519 signature ([`sign`]);
//! - [`verify`]: signature, then manifest, then image hash (and optionally every
//!   entry);
//! - [`unpack`]: every archive of an image, as the kernel's unpacker reads it;
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
pub mod unpack;
pub mod verify;

use std::path::{Path, PathBuf};

/// The builder's version (part of every build id that depends on it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub use build::{build, BuildOptions, BuildOutput};
pub use compress::Compression;
pub use manifest::Manifest;
pub use spec::Spec;
pub use verify::{ArtifactPaths, VerifyError};

/// Errors of building, listing and verifying images.
#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    /// A file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file larger than the limit for its kind.
    #[error("{path} is larger than {limit} bytes")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The spec is not valid TOML of the spec's shape.
    #[error("{origin}: invalid spec")]
    SpecSyntax {
        /// The spec file, or `spec text`.
        origin: String,
        /// The cause.
        #[source]
        source: Box<toml::de::Error>,
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
    #[error("{path} ({src})")]
    Elf {
        /// Path in the image.
        path: String,
        /// Source on the host.
        src: PathBuf,
        /// The cause.
        #[source]
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
    /// The manifest could not be serialised.
    #[error("cannot serialise the manifest")]
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
    /// An image could not be read or unpacked.
    #[error(transparent)]
    Unpack(#[from] unpack::UnpackError),
}

/// The message of a third-party error kept as one cause. Some crates'
/// errors (`pkcs8`, `goblin`) print their cause in their own message *and*
/// return it as their source, so the chain would say everything twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause(String);

impl Cause {
    /// The message of `e` (with whatever causes it prints itself).
    pub fn of(e: &impl std::fmt::Display) -> Self {
        Cause(e.to_string())
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Cause {}

impl InitrdError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        InitrdError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::error::Error;
    use std::path::Path;

    use super::*;

    /// No message of the chain repeats the message of its cause.
    fn assert_no_repeat(e: &dyn Error) {
        let mut cur = e;
        while let Some(src) = cur.source() {
            let (msg, cause) = (cur.to_string(), src.to_string());
            assert!(!msg.contains(&cause), "{msg:?} repeats its cause {cause:?}");
            cur = src;
        }
    }

    fn chain_len(e: &(dyn Error + 'static)) -> usize {
        let mut n = 1;
        let mut cur = e;
        while let Some(src) = cur.source() {
            n += 1;
            cur = src;
        }
        n
    }

    #[test]
    fn messages_do_not_repeat_their_cause() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let bad_xz = dir.path().join("bad.ko.xz");
        std::fs::write(&bad_xz, b"junk").unwrap();
        let bad_elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0";
        let zstd_image = compress::compress(b"0707", Compression::Zstd, Some(3)).unwrap();
        let errors: Vec<Box<dyn Error>> = vec![
            Box::new(Spec::load(&missing).unwrap_err()),
            Box::new(Spec::parse("[init]\npath = 3\n", Path::new(".")).unwrap_err()),
            Box::new(sign::read_public_key(&missing).unwrap_err()),
            Box::new(sign::read_secret_key(&missing).unwrap_err()),
            Box::new(sign::decode_secret_key("-----BEGIN PRIVATE KEY-----\nAA==\n").unwrap_err()),
            Box::new(
                sign::decode_public_key(
                    "-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----",
                )
                .unwrap_err(),
            ),
            Box::new(modules::ModuleIndex::load(&missing).unwrap_err()),
            Box::new(modules::read_module(&bad_xz).unwrap_err()),
            Box::new(elf::inspect(bad_elf).unwrap_err()),
            Box::new(unpack::read_image_file(&missing).unwrap_err()),
            Box::new(unpack::unpack(&zstd_image[..zstd_image.len() - 2]).unwrap_err()),
            Box::new(unpack::unpack(&zstd_image).unwrap_err()),
            Box::new(compress::decompress(b"\x1f\x8b\x08\0\0\0\0\0\0\x03garbage").unwrap_err()),
            Box::new(
                verify::verify_manifest(
                    b"{",
                    &"00".repeat(64),
                    &sign::generate().unwrap().verifying_key(),
                )
                .unwrap_err(),
            ),
            Box::new(
                verify::verify_manifest(b"{", "zz", &sign::generate().unwrap().verifying_key())
                    .unwrap_err(),
            ),
            Box::new(InitrdError::from(verify::VerifyError::Manifest(
                serde_json::from_str::<Manifest>("{").unwrap_err(),
            ))),
        ];
        for e in &errors {
            assert_no_repeat(e.as_ref());
        }
        // The I/O errors keep their cause as the source, printed once by `{:#}`.
        assert!(chain_len(errors[0].as_ref()) >= 2);
        assert_eq!(errors[0].to_string(), missing.display().to_string());
    }
}
