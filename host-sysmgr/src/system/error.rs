//! The one error type of the system-files library.

use std::path::PathBuf;

/// What went wrong managing system files. Messages name the file, URL or
/// version; the cause, if any, is the `source`.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// A file system operation failed.
    #[error("{path}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client failed (connect, TLS, reset, timeout).
    #[error("download {url}")]
    Http {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with a status that is not success.
    #[error("download {url}: the server answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The body stopped arriving for longer than the stall timeout.
    #[error("download {url}: no data for {seconds} s")]
    Stalled {
        /// The URL.
        url: String,
        /// The stall timeout.
        seconds: u64,
    },
    /// Content does not have the expected sha256.
    #[error("{what}: sha256 is {actual}, expected {expected}")]
    Digest {
        /// The URL or file.
        what: String,
        /// The expected digest.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// Content does not have the expected size.
    #[error("{what}: {actual} bytes, expected {expected}")]
    Size {
        /// The URL or file.
        what: String,
        /// The expected size.
        expected: u64,
        /// The size of what arrived (at least).
        actual: u64,
    },
    /// Content is larger than the limit for its kind.
    #[error("{what}: larger than the limit of {limit} bytes")]
    TooLarge {
        /// The URL or file.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// A bundle (tarball) entry that would not stay inside the bundle, or is
    /// of a kind a bundle may not hold.
    #[error("bundle {bundle}: entry {entry:?} refused: {reason}")]
    UnsafeEntry {
        /// The bundle.
        bundle: String,
        /// The entry's path as written in the tarball.
        entry: String,
        /// Why.
        reason: &'static str,
    },
    /// A bundle could not be read as a tarball.
    #[error("bundle {bundle}")]
    Bundle {
        /// The bundle.
        bundle: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A catalog file that does not parse or holds a bad entry.
    #[error("catalog {path}: {message}")]
    Catalog {
        /// The catalog file (or "built-in").
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A state or record file that does not parse.
    #[error("{path}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A version, build or entry that is not known.
    #[error("{0}")]
    NotFound(String),
    /// An operation the state does not allow (the message says why).
    #[error("{0}")]
    Refused(String),
    /// An installed artifact failed verification.
    #[error("{path}: {message}")]
    Corrupt {
        /// The artifact.
        path: PathBuf,
        /// What does not match.
        message: String,
    },
    /// Building or verifying an initrd failed.
    #[error("initrd")]
    Initrd(#[source] initrd_builder::InitrdError),
    /// A kernel image that cannot be booted as given.
    #[error("kernel {path}: {message}")]
    Kernel {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The registry client failed.
    #[error("registry {reference}")]
    Registry {
        /// The reference.
        reference: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl SystemError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SystemError::Io {
            path: path.into(),
            source,
        }
    }
}

/// `Result` of this library.
pub type Result<T, E = SystemError> = std::result::Result<T, E>;
