//! Signature, manifest and image verification: a flipped byte anywhere fails
//! with a clear error.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use initrd_builder::{verify, ArtifactPaths, InitrdError, VerifyError};

fn signed_build(dir: &Path) -> (ArtifactPaths, PathBuf) {
    let spec = fixture(dir, "zstd", false);
    let (key, public) = keys(dir);
    let out = cli(&[
        "build",
        "-s",
        spec.to_str().unwrap(),
        "-o",
        dir.join("out").to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    (ArtifactPaths::for_image(&image), public)
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = at.min(bytes.len() - 2);
    bytes[i] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

fn verify_cli(paths: &ArtifactPaths, public: &Path) -> (bool, String) {
    let out = cli(&[
        "verify",
        paths.image.to_str().unwrap(),
        "--pubkey",
        public.to_str().unwrap(),
        "--deep",
    ]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn names_and_good_verification() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, public) = signed_build(dir.path());
    let name = paths.image.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("initramfs-guestinit-1.2.3-") && name.ends_with(".img"),
        "{name}"
    );
    assert!(paths.manifest.exists() && paths.signature.exists());
    let (ok, text) = verify_cli(&paths, &public);
    assert!(ok, "{text}");
    assert!(text.starts_with("OK "), "{text}");
    let key = initrd_builder::sign::read_public_key(&public).unwrap();
    let m = verify::verify_files(&paths, &key, true).unwrap();
    assert_eq!(m.init_version, "1.2.3");
    assert_eq!(m.agent_version.as_deref(), Some("0.9.0"));
    assert_eq!(m.min_agent_version.as_deref(), Some("0.8.0"));
    assert_eq!(m.guest_init_protocol, 7);
    assert_eq!(m.build_id.len(), 16);
    assert_eq!(
        paths.image.file_name().unwrap().to_str().unwrap(),
        m.image.file
    );
    let sig = std::fs::read_to_string(&paths.signature).unwrap();
    assert_eq!(sig.len(), 129);
}

#[test]
fn flipped_image_byte_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, public) = signed_build(dir.path());
    flip(&paths.image, 100);
    let (ok, text) = verify_cli(&paths, &public);
    assert!(!ok);
    assert!(text.contains("image sha256"), "{text}");
    let key = initrd_builder::sign::read_public_key(&public).unwrap();
    let err = verify::verify_files(&paths, &key, false).unwrap_err();
    assert!(
        matches!(err, InitrdError::Verify(VerifyError::ImageHash { .. })),
        "{err}"
    );
}

#[test]
fn flipped_manifest_byte_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, public) = signed_build(dir.path());
    flip(&paths.manifest, 200);
    let (ok, text) = verify_cli(&paths, &public);
    assert!(!ok);
    assert!(
        text.contains("signature does not match the manifest"),
        "{text}"
    );
}

#[test]
fn flipped_signature_byte_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, public) = signed_build(dir.path());
    // Flip a bit of the first hex digit's byte: still hex, different signature.
    let mut sig = std::fs::read_to_string(&paths.signature)
        .unwrap()
        .into_bytes();
    sig[10] = if sig[10] == b'0' { b'1' } else { b'0' };
    std::fs::write(&paths.signature, &sig).unwrap();
    let (ok, text) = verify_cli(&paths, &public);
    assert!(!ok);
    assert!(text.contains("signature does not match"), "{text}");
    // A raw byte flip that breaks the hex encoding is reported as malformed.
    sig[20] ^= 0x80;
    std::fs::write(&paths.signature, &sig).unwrap();
    let (ok, text) = verify_cli(&paths, &public);
    assert!(!ok);
    assert!(text.contains("signature"), "{text}");
}

#[test]
fn wrong_key_and_missing_files_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, _) = signed_build(dir.path());
    let other = tempfile::tempdir().unwrap();
    let (_, other_pub) = keys(other.path());
    let (ok, text) = verify_cli(&paths, &other_pub);
    assert!(!ok);
    assert!(text.contains("wrong key"), "{text}");
    std::fs::remove_file(&paths.signature).unwrap();
    let (ok, text) = verify_cli(&paths, &other_pub);
    assert!(!ok);
    assert!(text.contains(".sig"), "{text}");
}

#[test]
fn deep_check_catches_a_manifest_that_lies() {
    let dir = tempfile::tempdir().unwrap();
    let spec = initrd_builder::Spec::load(&fixture(dir.path(), "gzip", false)).unwrap();
    let out = initrd_builder::build(&spec, &Default::default()).unwrap();
    verify::check_contents(&out.image, &out.manifest).unwrap();
    let mut lying = out.manifest.clone();
    lying.entries[0].mode = "0777".into();
    assert!(matches!(
        verify::check_contents(&out.image, &lying),
        Err(VerifyError::Contents(_))
    ));
}

#[test]
fn unsigned_builds_need_an_explicit_flag() {
    let dir = tempfile::tempdir().unwrap();
    let spec = fixture(dir.path(), "gzip", false);
    let out = cli(&[
        "build",
        "--spec",
        spec.to_str().unwrap(),
        "--out",
        dir.path().join("o").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--key"));
    let out = cli(&[
        "build",
        "--spec",
        spec.to_str().unwrap(),
        "--out",
        dir.path().join("o").to_str().unwrap(),
        "--unsigned",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(!ArtifactPaths::for_image(&image).signature.exists());
}
