//! ed25519 keys and detached signatures (RFC 8032, pure Ed25519, no prehash).
//!
//! Encodings:
//! - secret key file (`PREFIX.key`, created with mode 0600): PKCS#8 v1 PEM
//!   (`-----BEGIN PRIVATE KEY-----`, RFC 8410), the form `openssl genpkey
//!   -algorithm ed25519` writes and `openssl pkey` reads; v2 (with the public
//!   key) is read too;
//! - public key file (`PREFIX.pub`): the 32-byte public key as lowercase hex
//!   (64 characters) and a newline; an SPKI PEM (`-----BEGIN PUBLIC KEY-----`,
//!   `openssl pkey -pubout`) is read too;
//! - signature file: the 64-byte signature over the exact manifest bytes as
//!   lowercase hex (128 characters) and a newline.
//!
//! Whitespace around the text is ignored on reading. No file read here may be
//! larger than [`MAX_KEY_FILE_BYTES`]. Each format is distinct, so a public
//! key, a signature or a hex string given as the secret key is an error that
//! says what the file holds.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, KeypairBytes};
use ed25519_dalek::Signer;
pub use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

use crate::Cause;

/// Largest key or signature file read (they are 64 to ~120 bytes).
pub const MAX_KEY_FILE_BYTES: u64 = 4096;

const PEM_SECRET: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----";
const PEM_BEGIN: &str = "-----BEGIN ";

/// Errors of key and signature handling.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key or signature file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key or signature file larger than [`MAX_KEY_FILE_BYTES`].
    #[error("{path} is larger than {limit} bytes: not a key or signature file")]
    TooLarge {
        /// The file.
        path: String,
        /// The limit.
        limit: u64,
    },
    /// Text that is not the hex of the expected number of bytes.
    #[error("{what} must be {len} bytes of hex ({} hex characters)", len * 2)]
    Encoding {
        /// `public key` or `signature`.
        what: &'static str,
        /// Expected byte length.
        len: usize,
    },
    /// 32 bytes that are not a valid ed25519 public key.
    #[error("invalid ed25519 public key")]
    InvalidPublicKey,
    /// What was given as the secret key is something else.
    #[error(
        "{origin} holds {found}; --key takes the secret key (PREFIX.key from keygen, PKCS#8 PEM)"
    )]
    NotSecretKey {
        /// The file (or `key text`).
        origin: String,
        /// What it holds instead.
        found: String,
    },
    /// What was given as the public key is something else.
    #[error("{origin} holds {found}; --pubkey takes the public key (PREFIX.pub from keygen)")]
    NotPublicKey {
        /// The file (or `key text`).
        origin: String,
        /// What it holds instead.
        found: String,
    },
    /// A `PRIVATE KEY` PEM that is not a valid PKCS#8 ed25519 key.
    #[error("{origin} is not a valid PKCS#8 ed25519 secret key")]
    Pkcs8 {
        /// The file (or `key text`).
        origin: String,
        /// The cause.
        #[source]
        source: Cause,
    },
    /// A `PUBLIC KEY` PEM that is not a valid ed25519 SPKI document.
    #[error("{origin} is not a valid ed25519 public key (SPKI PEM)")]
    Spki {
        /// The file (or `key text`).
        origin: String,
        /// The cause.
        #[source]
        source: Cause,
    },
    /// A `keygen` prefix that names no file (`keys/`, an existing folder, `.`).
    #[error("key prefix {prefix:?} {reason}: give a path such as keys/release")]
    BadPrefix {
        /// The prefix as given.
        prefix: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn decode_hex<const N: usize>(text: &str, what: &'static str) -> Result<[u8; N], KeyError> {
    let bytes = hex::decode(text.trim()).map_err(|_| KeyError::Encoding { what, len: N })?;
    bytes
        .try_into()
        .map_err(|_| KeyError::Encoding { what, len: N })
}

/// A new random key, seeded from the kernel's CSPRNG (`/dev/urandom`).
pub fn generate() -> Result<SigningKey, KeyError> {
    let path = Path::new("/dev/urandom");
    let mut seed = [0u8; 32];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(io_err(path))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Signs `message` (the exact manifest bytes).
pub fn sign(key: &SigningKey, message: &[u8]) -> Signature {
    key.sign(message)
}

/// Checks a signature with the strict RFC 8032 rules (no malleable signatures,
/// no weak keys).
pub fn verify(key: &VerifyingKey, message: &[u8], sig: &Signature) -> bool {
    key.verify_strict(message, sig).is_ok()
}

/// The signature file's text.
pub fn encode_signature(sig: &Signature) -> String {
    format!("{}\n", hex::encode(sig.to_bytes()))
}

/// Parses a signature file's text.
pub fn decode_signature(text: &str) -> Result<Signature, KeyError> {
    Ok(Signature::from_bytes(&decode_hex::<64>(text, "signature")?))
}

/// The public key file's text (hex).
pub fn encode_public_key(key: &VerifyingKey) -> String {
    format!("{}\n", hex::encode(key.to_bytes()))
}

/// Parses a public key: 64 hex characters or an SPKI `PUBLIC KEY` PEM.
pub fn decode_public_key(text: &str) -> Result<VerifyingKey, KeyError> {
    decode_public_key_from(text, "key text")
}

fn decode_public_key_from(text: &str, origin: &str) -> Result<VerifyingKey, KeyError> {
    let text = text.trim();
    if text.starts_with(PEM_PUBLIC) {
        return VerifyingKey::from_public_key_pem(text).map_err(|e| KeyError::Spki {
            origin: origin.to_string(),
            source: Cause::of(&e),
        });
    }
    if text.starts_with(PEM_BEGIN) {
        return Err(KeyError::NotPublicKey {
            origin: origin.to_string(),
            found: describe(text, origin),
        });
    }
    let bytes = decode_hex::<32>(text, "public key")?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::InvalidPublicKey)
}

/// The secret key file's text: PKCS#8 v1 PEM, as OpenSSL writes it.
pub fn encode_secret_key(key: &SigningKey) -> Result<String, KeyError> {
    let doc = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    doc.to_pkcs8_pem(LineEnding::LF)
        .map(|pem| pem.as_str().to_string())
        .map_err(|e| KeyError::Pkcs8 {
            origin: "new key".to_string(),
            source: Cause::of(&e),
        })
}

/// Parses a secret key: a PKCS#8 `PRIVATE KEY` PEM holding an ed25519 key.
pub fn decode_secret_key(text: &str) -> Result<SigningKey, KeyError> {
    decode_secret_key_from(text, "key text")
}

fn decode_secret_key_from(text: &str, origin: &str) -> Result<SigningKey, KeyError> {
    let text = text.trim();
    if !text.starts_with(PEM_SECRET) {
        return Err(KeyError::NotSecretKey {
            origin: origin.to_string(),
            found: describe(text, origin),
        });
    }
    SigningKey::from_pkcs8_pem(text).map_err(|e| KeyError::Pkcs8 {
        origin: origin.to_string(),
        source: Cause::of(&e),
    })
}

/// What a key text that is not the expected kind holds, in words.
fn describe(text: &str, origin: &str) -> String {
    let hex_digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit());
    if text.is_empty() {
        "nothing (it is empty)".to_string()
    } else if text.starts_with(PEM_PUBLIC) {
        "a public key (PEM)".to_string()
    } else if text.starts_with(PEM_SECRET) {
        "a secret key (keep it private)".to_string()
    } else if let Some(label) = pem_label(text) {
        format!("a PEM block of type {label:?}")
    } else if hex_digits && text.len() == 64 && origin.ends_with(".key") {
        "64 hex characters: a public key, or a secret key in the old hex format \
         (make a new key pair with keygen)"
            .to_string()
    } else if hex_digits && text.len() == 64 {
        "a public key (64 hex characters)".to_string()
    } else if hex_digits && text.len() == 128 {
        "a signature (128 hex characters)".to_string()
    } else if hex_digits {
        format!("{} hex characters", text.len())
    } else {
        "text that is not a key".to_string()
    }
}

fn pem_label(text: &str) -> Option<&str> {
    let rest = text.strip_prefix(PEM_BEGIN)?;
    let label = &rest[..rest.find("-----")?];
    let printable = label.chars().all(|c| c.is_ascii_graphic() || c == ' ');
    (printable && label.len() <= 64).then_some(label)
}

/// Reads a key or signature file as text, at most [`MAX_KEY_FILE_BYTES`].
pub fn read_key_text(path: &Path) -> Result<String, KeyError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_KEY_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(io_err(path))?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(KeyError::TooLarge {
            path: path.display().to_string(),
            limit: MAX_KEY_FILE_BYTES,
        });
    }
    // Non-UTF-8 bytes cannot be any of the encodings: keep them visible as
    // "text that is not a key" (lossy) rather than a separate error.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Reads a secret key file (PKCS#8 PEM).
pub fn read_secret_key(path: &Path) -> Result<SigningKey, KeyError> {
    decode_secret_key_from(&read_key_text(path)?, &path.display().to_string())
}

/// Reads a public key file (hex, or SPKI PEM).
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    decode_public_key_from(&read_key_text(path)?, &path.display().to_string())
}

/// Reads a signature file (hex).
pub fn read_signature(path: &Path) -> Result<Signature, KeyError> {
    decode_signature(&read_key_text(path)?)
}

/// Refuses a prefix that names no file of its own: one ending in `/`, whose
/// last component is empty, `.` or `..`, or that is an existing folder
/// (`keys/` would make the hidden `keys/.key`).
pub fn check_prefix(prefix: &Path) -> Result<(), KeyError> {
    let text = prefix.as_os_str().as_encoded_bytes();
    let last = text.rsplit(|&b| b == b'/').next().unwrap_or(text);
    let reason = if text.ends_with(b"/") {
        Some("ends in /")
    } else if last.is_empty() || last == b"." || last == b".." {
        Some("has no file name")
    } else if prefix.is_dir() {
        Some("is an existing folder")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(KeyError::BadPrefix {
            prefix: prefix.display().to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Writes `<prefix>.key` (PKCS#8 PEM, mode 0600) and `<prefix>.pub` (hex);
/// refuses a prefix without a file name (see [`check_prefix`]) and to overwrite
/// either file. Returns the two paths.
pub fn write_keypair(key: &SigningKey, prefix: &Path) -> Result<(PathBuf, PathBuf), KeyError> {
    check_prefix(prefix)?;
    let with_ext = |ext: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    let (secret, public) = (with_ext(".key"), with_ext(".pub"));
    for p in [&secret, &public] {
        if p.exists() {
            return Err(io_err(p)(std::io::Error::from(
                std::io::ErrorKind::AlreadyExists,
            )));
        }
    }
    write_new(&secret, 0o600, &encode_secret_key(key)?)?;
    write_new(&public, 0o644, &encode_public_key(&key.verifying_key()))?;
    Ok((secret, public))
}

fn write_new(path: &Path, mode: u32, text: &str) -> Result<(), KeyError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(text.as_bytes()).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const RFC8032_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn rfc_key() -> SigningKey {
        SigningKey::from_bytes(&decode_hex::<32>(RFC8032_SEED, "secret key").unwrap())
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let key = generate().unwrap();
        let sig = sign(&key, b"manifest");
        let text = encode_signature(&sig);
        assert_eq!(text.len(), 129);
        let back = decode_signature(&text).unwrap();
        let public = decode_public_key(&encode_public_key(&key.verifying_key())).unwrap();
        assert!(verify(&public, b"manifest", &back));
        assert!(!verify(&public, b"manifesT", &back));
        assert!(decode_signature("abcd").is_err());
        assert!(decode_public_key(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn rfc8032_test_vector_1() {
        let key = rfc_key();
        assert_eq!(hex::encode(key.verifying_key().to_bytes()), RFC8032_PUBLIC);
        assert!(encode_signature(&sign(&key, b"")).starts_with("e5564300c360ac72"));
    }

    #[test]
    fn secret_key_is_pkcs8_v1_pem() {
        let pem = encode_secret_key(&rfc_key()).unwrap();
        // RFC 8410's v1 layout: 30 2e 02 01 00 30 05 06 03 2b 65 70 04 22 04 20 <seed>.
        assert_eq!(
            pem,
            "-----BEGIN PRIVATE KEY-----\n\
             MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n\
             -----END PRIVATE KEY-----\n"
        );
        assert_eq!(
            decode_secret_key(&pem).unwrap().to_bytes(),
            rfc_key().to_bytes()
        );
    }

    #[test]
    fn public_key_pem_is_read() {
        // `openssl pkey -pubout` of the RFC 8032 key.
        let pem = "-----BEGIN PUBLIC KEY-----\n\
                   MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n\
                   -----END PUBLIC KEY-----\n";
        let key = decode_public_key(pem).unwrap();
        assert_eq!(hex::encode(key.to_bytes()), RFC8032_PUBLIC);
    }

    #[test]
    fn wrong_kinds_of_key_say_what_they_are() {
        let secret = encode_secret_key(&rfc_key()).unwrap();
        let cases = [
            (RFC8032_PUBLIC, "a public key"),
            ("", "empty"),
            (&"ab".repeat(64), "a signature"),
            (
                "-----BEGIN PUBLIC KEY-----\nMCow\n-----END PUBLIC KEY-----",
                "a public key (PEM)",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nx\n",
                "\"RSA PRIVATE KEY\"",
            ),
            ("hello", "not a key"),
        ];
        for (text, found) in cases {
            let err = decode_secret_key_from(text, "keys/x.pub").unwrap_err();
            assert!(matches!(err, KeyError::NotSecretKey { .. }), "{err}");
            let msg = err.to_string();
            assert!(
                msg.starts_with("keys/x.pub holds ") && msg.contains(found),
                "{msg}"
            );
            assert!(
                msg.contains("--key takes the secret key (PREFIX.key"),
                "{msg}"
            );
        }
        let err = decode_secret_key_from(RFC8032_SEED, "keys/old.key").unwrap_err();
        assert!(err.to_string().contains("old hex format"), "{err}");
        let err = decode_public_key_from(&secret, "keys/x.key").unwrap_err();
        assert!(matches!(err, KeyError::NotPublicKey { .. }), "{err}");
        assert!(err.to_string().contains("holds a secret key"), "{err}");
        let broken = secret.replace("K2Vw", "K2Vx"); // the Ed448 OID
        let err = decode_secret_key(&broken).unwrap_err();
        assert!(matches!(err, KeyError::Pkcs8 { .. }), "{err}");
    }

    #[test]
    fn key_files_are_capped() {
        for read in [
            |p: &Path| read_public_key(p).map(|_| ()),
            |p: &Path| read_secret_key(p).map(|_| ()),
            |p: &Path| read_signature(p).map(|_| ()),
        ] {
            let err = read(Path::new("/dev/zero")).unwrap_err();
            assert!(
                matches!(err, KeyError::TooLarge { limit: 4096, .. }),
                "{err}"
            );
            assert!(err.to_string().contains("/dev/zero"), "{err}");
        }
    }

    #[test]
    fn keypair_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate().unwrap();
        let (s, p) = write_keypair(&key, &dir.path().join("release")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&s).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(std::fs::read_to_string(&s).unwrap().starts_with(PEM_SECRET));
        assert_eq!(read_secret_key(&s).unwrap().to_bytes(), key.to_bytes());
        assert_eq!(read_public_key(&p).unwrap(), key.verifying_key());
        assert!(write_keypair(&key, &dir.path().join("release")).is_err());
        let err = read_secret_key(&p).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "release.pub holds a public key (64 hex characters); \
             --key takes the secret key (PREFIX.key from keygen, PKCS#8 PEM)"
            ),
            "{err}"
        );
    }

    #[test]
    fn prefixes_without_a_file_name_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate().unwrap();
        let d = dir.path().display().to_string();
        for bad in [
            format!("{d}/"),
            d.clone(),
            format!("{d}/."),
            format!("{d}/.."),
            "".into(),
        ] {
            let err = write_keypair(&key, Path::new(&bad)).unwrap_err();
            assert!(matches!(err, KeyError::BadPrefix { .. }), "{bad}: {err}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        check_prefix(&dir.path().join(".hidden")).unwrap();
    }
}
