//! The CLI against confusing or hostile input: keys of the wrong kind, errors
//! that repeat their cause, a missing image, images with more than one
//! archive or with forged names, endless files, keygen prefixes that name a
//! folder.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use initrd_builder::{build, compress, sign, BuildOptions, Compression, Spec};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Builds the fixture with the CLI; returns the image path and the output.
fn build_cli(dir: &Path, compression: &str, key: Option<&Path>) -> (PathBuf, std::process::Output) {
    let spec = fixture(dir, compression, false);
    let out_dir = dir.join("out");
    let mut args = vec!["build", "--spec", s(&spec), "--out", s(&out_dir)];
    match key {
        Some(k) => args.extend(["--key", s(k)]),
        None => args.push("--unsigned"),
    }
    let out = cli(&args);
    let image = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (image, out)
}

#[test]
fn a_public_key_given_as_the_secret_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = keys(dir.path());
    let (_, out) = build_cli(dir.path(), "gzip", Some(&public));
    let (stdout, stderr) = texts(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "{} holds a public key (64 hex characters); --key takes the secret key (PREFIX.key from keygen",
            public.display()
        )),
        "{stderr}"
    );
    assert!(!dir.path().join("out").exists());
    // A hex seed (the old secret key format) is no secret key either.
    let old = dir.path().join("old.key");
    std::fs::write(&old, format!("{}\n", "7a".repeat(32))).unwrap();
    let (_, out) = build_cli(dir.path(), "gzip", Some(&old));
    let (_, stderr) = texts(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("old hex format"), "{stderr}");
    // And the secret key is no public key.
    let (image, out) = build_cli(dir.path(), "gzip", Some(&secret));
    assert!(out.status.success(), "{}", texts(&out).1);
    let out = cli(&["verify", s(&image), "--pubkey", s(&secret)]);
    let (_, stderr) = texts(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("holds a secret key"), "{stderr}");
    assert!(std::fs::read_to_string(&secret)
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----\n"));
}

#[test]
fn keys_interoperate_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = keys(dir.path());
    // openssl reads our secret key and derives the same public key.
    let pem = dir.path().join("k.pub.pem");
    sh(&format!(
        "openssl pkey -in '{}' -pubout -out '{}'",
        secret.display(),
        pem.display()
    ));
    let (image, out) = build_cli(dir.path(), "zstd", Some(&secret));
    assert!(out.status.success(), "{}", texts(&out).1);
    for key in [&public, &pem] {
        let out = cli(&["verify", s(&image), "--pubkey", s(key)]);
        assert!(out.status.success(), "{}", texts(&out).1);
    }
    // We read openssl's secret keys.
    let theirs = dir.path().join("openssl.key");
    sh(&format!(
        "openssl genpkey -algorithm ed25519 -out '{}'",
        theirs.display()
    ));
    let key = sign::read_secret_key(&theirs).unwrap();
    let der = sh(&format!(
        "openssl pkey -in '{}' -pubout -outform DER",
        theirs.display()
    ));
    assert_eq!(der[der.len() - 32..], key.verifying_key().to_bytes());
}

#[test]
fn errors_print_their_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let out = cli(&["build", "--spec", s(&missing), "--unsigned"]);
    let (_, stderr) = texts(&out);
    assert!(!out.status.success());
    let cause = "No such file or directory (os error 2)";
    assert_eq!(stderr.matches(cause).count(), 1, "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!("initrd-builder: error: {}: {cause}", missing.display())
    );
    let out = cli(&["ls", s(&dir.path().join("nope.img"))]);
    assert_eq!(texts(&out).1.matches(cause).count(), 1, "{}", texts(&out).1);
}

#[test]
fn verify_names_a_missing_image() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = keys(dir.path());
    let missing = dir.path().join("missing.img");
    let out = cli(&["verify", s(&missing), "--pubkey", s(&public)]);
    let (_, stderr) = texts(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{}: No such file", missing.display())),
        "{stderr}"
    );
    assert!(!stderr.contains(".sig"), "{stderr}");
}

#[test]
fn ls_lists_every_archive_the_kernel_unpacks() {
    let dir = tempfile::tempdir().unwrap();
    let (image, out) = build_cli(dir.path(), "zstd", None);
    assert!(out.status.success(), "{}", texts(&out).1);
    let mut bytes = std::fs::read(&image).unwrap();
    let first = bytes.len();
    bytes.resize(first.next_multiple_of(4), 0);
    let at = bytes.len();
    bytes.extend(raw_newc(&[(b"etc/evil", 0o100644, b"boo")]));
    let two = dir.path().join("two.img");
    std::fs::write(&two, &bytes).unwrap();
    let out = cli(&["ls", s(&two)]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout.lines().count(),
        FIXTURE_ENTRIES.len() + 1,
        "{stdout}"
    );
    assert!(
        stdout.contains("-rw-r--r-- 0644          3 /etc/evil  [archive 2]"),
        "{stdout}"
    );
    assert!(stderr.contains("holds 2 archives"), "{stderr}");
    assert!(
        stderr.contains("archive 1: zstd stream at offset 0"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("archive 2: uncompressed at offset {at}, 1 entry")),
        "{stderr}"
    );
    let out = cli(&["ls", "--json", s(&two)]);
    let (stdout, _) = texts(&out);
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["path"], "/etc/evil");
    assert_eq!(last["archive"], 2);
    assert_eq!(last["unsafe_name"], serde_json::Value::Null);
}

#[test]
fn ls_escapes_and_flags_names() {
    let dir = tempfile::tempdir().unwrap();
    let records: [(&[u8], u32, &[u8]); 5] = [
        (b"a\n-rwxr-xr-x 0755          0 /forged", 0o100644, b""),
        (b"\x1b[31mred", 0o100644, b""),
        (b"../etc/passwd", 0o100644, b"root::0:0::/:/bin/sh\n"),
        (b"/abs", 0o040755, b""),
        (b"link", 0o120777, b"\x1b]0;title\x07"),
    ];
    let image = dir.path().join("odd.img");
    std::fs::write(&image, raw_newc(&records)).unwrap();
    let out = cli(&["ls", s(&image)]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
    assert!(
        !stdout.contains('\x1b') && !stdout.contains('\x07'),
        "{stdout:?}"
    );
    assert!(stdout.contains("/a\\n-rwxr-xr-x 0755"), "{stdout}");
    assert!(stdout.contains("/\\x1b[31mred"), "{stdout}");
    assert!(stdout.contains("/link -> \\x1b]0;title\\x07"), "{stdout}");
    assert!(
        stdout.contains("/../etc/passwd  [unsafe name: '..' component]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("//abs  [unsafe name: absolute name]"),
        "{stdout}"
    );
    assert!(stderr.contains("warning: entry /../etc/passwd"), "{stderr}");
    assert!(stderr.contains("warning: entry //abs"), "{stderr}");
    let out = cli(&["ls", "--json", s(&image)]);
    let (stdout, _) = texts(&out);
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records[0]["path"], "/a\n-rwxr-xr-x 0755          0 /forged");
    assert_eq!(records[2]["unsafe_name"], "dotdot");
    assert_eq!(records[3]["unsafe_name"], "absolute");
    assert_eq!(records[1]["unsafe_name"], serde_json::Value::Null);
    // A name that is not UTF-8 is a clear error naming it, escaped.
    let bad = dir.path().join("bad.img");
    std::fs::write(&bad, raw_newc(&[(b"bad\xffname\n", 0o100644, b"")])).unwrap();
    let out = cli(&["ls", s(&bad)]);
    let (_, stderr) = texts(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("entry name \"bad\\xffname\\n\" at offset 0 is not UTF-8"),
        "{stderr}"
    );
}

#[test]
fn endless_inputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = keys(dir.path());
    let (image, out) = build_cli(dir.path(), "gzip", Some(&secret));
    assert!(out.status.success(), "{}", texts(&out).1);
    let zero = "/dev/zero";
    for (args, want) in [
        (
            vec!["verify", s(&image), "--pubkey", s(&public), "--sig", zero],
            "/dev/zero is larger than 4096 bytes",
        ),
        (
            vec!["verify", s(&image), "--pubkey", zero],
            "/dev/zero is larger than 4096 bytes",
        ),
        (
            vec![
                "verify",
                s(&image),
                "--pubkey",
                s(&public),
                "--manifest",
                zero,
            ],
            "/dev/zero is larger than",
        ),
        (
            vec!["verify", zero, "--pubkey", s(&public)],
            "/dev/zero is not a regular file",
        ),
        (vec!["ls", zero], "/dev/zero is not a regular file"),
    ] {
        let out = cli_bounded(&args);
        let (_, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

/// An image whose manifest was signed over a second, appended archive (a
/// buggy or hostile signer): the hashes match, only `--deep` can tell.
fn sign_with_extra_archive(dir: &Path, compression: Compression) -> (PathBuf, PathBuf) {
    let key = sign::generate().unwrap();
    let spec = Spec::load(&fixture(dir, compression.name(), false)).unwrap();
    let opts = BuildOptions {
        compression: Some(compression),
        level: (compression == Compression::Zstd).then_some(3),
        ..Default::default()
    };
    let out = build(&spec, &opts).unwrap();
    let extra = raw_newc(&[(b"etc/evil", 0o100644, b"boo")]);
    let (_, archive) = compress::decompress(&out.image).unwrap();
    let mut image = out.image.clone();
    image.extend(compress::compress(&extra, compression, opts.level).unwrap());
    let mut m = out.manifest.clone();
    let blob = initrd_builder::manifest::Blob::of(&image);
    (m.image.size, m.image.sha256) = (blob.size, blob.sha256);
    m.image.uncompressed_sha256 = initrd_builder::manifest::sha256_hex(&[archive, extra].concat());
    let stem = dir.join(format!("extra-{compression}"));
    let paths = initrd_builder::ArtifactPaths::for_image(&stem.with_extension("img"));
    let bytes = m.to_bytes().unwrap();
    std::fs::write(&paths.image, &image).unwrap();
    std::fs::write(&paths.manifest, &bytes).unwrap();
    std::fs::write(
        &paths.signature,
        sign::encode_signature(&sign::sign(&key, &bytes)),
    )
    .unwrap();
    let public = dir.join(format!("extra-{compression}.pub"));
    std::fs::write(&public, sign::encode_public_key(&key.verifying_key())).unwrap();
    (paths.image, public)
}

#[test]
fn deep_verification_sees_a_second_archive() {
    for c in [Compression::None, Compression::Zstd, Compression::Gzip] {
        let dir = tempfile::tempdir().unwrap();
        let (image, public) = sign_with_extra_archive(dir.path(), c);
        let out = cli(&["verify", s(&image), "--pubkey", s(&public)]);
        assert!(out.status.success(), "{c}: {}", texts(&out).1);
        let out = cli(&["verify", s(&image), "--pubkey", s(&public), "--deep"]);
        let (_, stderr) = texts(&out);
        assert!(!out.status.success(), "{c}: deep verification passed");
        assert!(
            stderr.contains("entry /etc/evil") && stderr.contains("is not in the manifest"),
            "{c}: {stderr}"
        );
    }
}

#[test]
fn keygen_wants_a_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    std::fs::create_dir(&keys_dir).unwrap();
    for (prefix, reason) in [
        (format!("{}/", keys_dir.display()), "ends in /"),
        (keys_dir.display().to_string(), "is an existing folder"),
        (format!("{}/.", keys_dir.display()), "has no file name"),
        (format!("{}/new/", keys_dir.display()), "ends in /"),
    ] {
        let out = cli(&["keygen", &prefix]);
        let (_, stderr) = texts(&out);
        assert!(!out.status.success(), "{prefix}");
        assert!(stderr.contains(reason), "{prefix}: {stderr}");
    }
    assert_eq!(std::fs::read_dir(&keys_dir).unwrap().count(), 0);
    let out = cli(&["keygen", s(&keys_dir.join("release"))]);
    assert!(out.status.success(), "{}", texts(&out).1);
    assert!(keys_dir.join("release.key").exists() && keys_dir.join("release.pub").exists());
}
