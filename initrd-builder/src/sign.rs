//! ed25519 keys and detached signatures (RFC 8032, pure Ed25519, no prehash).
//!
//! Encodings, all lowercase hex text with one trailing newline (whitespace around
//! the hex is ignored on reading):
//! - secret key file: the 32-byte seed (64 hex chars), created with mode 0600;
//! - public key file: the 32-byte public key (64 hex chars);
//! - signature file: the 64-byte signature over the exact manifest bytes
//!   (128 hex chars).

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ed25519_dalek::Signer;
pub use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

/// Errors of key and signature handling.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key or signature file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Text that is not the hex of the expected number of bytes.
    #[error("{what} must be {len} bytes of hex ({} hex characters)", len * 2)]
    Encoding {
        /// `secret key`, `public key` or `signature`.
        what: &'static str,
        /// Expected byte length.
        len: usize,
    },
    /// 32 bytes that are not a valid ed25519 public key.
    #[error("invalid ed25519 public key")]
    InvalidPublicKey,
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

/// Parses a public key (hex text).
pub fn decode_public_key(text: &str) -> Result<VerifyingKey, KeyError> {
    let bytes = decode_hex::<32>(text, "public key")?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::InvalidPublicKey)
}

/// The public key file's text.
pub fn encode_public_key(key: &VerifyingKey) -> String {
    format!("{}\n", hex::encode(key.to_bytes()))
}

/// Reads a secret key file.
pub fn read_secret_key(path: &Path) -> Result<SigningKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    Ok(SigningKey::from_bytes(&decode_hex::<32>(
        &text,
        "secret key",
    )?))
}

/// Reads a public key file.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    decode_public_key(&std::fs::read_to_string(path).map_err(io_err(path))?)
}

/// Writes `<prefix>.key` (mode 0600) and `<prefix>.pub`; refuses to overwrite
/// either. Returns the two paths.
pub fn write_keypair(
    key: &SigningKey,
    prefix: &Path,
) -> Result<(std::path::PathBuf, std::path::PathBuf), KeyError> {
    let with_ext = |ext: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(ext);
        std::path::PathBuf::from(p)
    };
    let (secret, public) = (with_ext(".key"), with_ext(".pub"));
    for p in [&secret, &public] {
        if p.exists() {
            return Err(io_err(p)(std::io::Error::from(
                std::io::ErrorKind::AlreadyExists,
            )));
        }
    }
    write_new(
        &secret,
        0o600,
        &format!("{}\n", hex::encode(key.to_bytes())),
    )?;
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
        let seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
        let key = SigningKey::from_bytes(&decode_hex::<32>(seed, "secret key").unwrap());
        assert_eq!(
            hex::encode(key.verifying_key().to_bytes()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert!(encode_signature(&sign(&key, b"")).starts_with("e5564300c360ac72"));
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
        assert_eq!(read_secret_key(&s).unwrap().to_bytes(), key.to_bytes());
        assert_eq!(read_public_key(&p).unwrap(), key.verifying_key());
        assert!(write_keypair(&key, &dir.path().join("release")).is_err());
    }
}
