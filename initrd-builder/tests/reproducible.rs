//! Reproducibility: different directories, mtimes, umask, source modes and spec
//! entry order with the same SOURCE_DATE_EPOCH give identical bytes; one changed
//! input byte changes the hashes.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Builds `spec` with the CLI under `umask`, returns (image bytes, manifest bytes).
fn build_with_umask(spec: &Path, out: &Path, umask: &str, key: &Path) -> (Vec<u8>, Vec<u8>) {
    let bin = env!("CARGO_BIN_EXE_initrd-builder");
    let script = format!(
        "umask {umask} && exec '{bin}' build --spec '{}' --out '{}' --key '{}'",
        spec.display(),
        out.display(),
        key.display()
    );
    let res = Command::new("bash")
        .arg("-c")
        .arg(script)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let image = String::from_utf8(res.stdout).unwrap().trim().to_string();
    let manifest = image.replace(".img", ".manifest.json");
    (
        std::fs::read(&image).unwrap(),
        std::fs::read(manifest).unwrap(),
    )
}

fn touch_all(dir: &Path, date: &str, mode: &str) {
    sh(&format!(
        "find '{}' -type f -exec touch -d '{date}' {{}} + -exec chmod {mode} {{}} +",
        dir.display()
    ));
}

#[test]
fn same_inputs_same_bytes_anywhere() {
    let keydir = tempfile::tempdir().unwrap();
    let (key, _) = keys(keydir.path());
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let spec_a = fixture(&a.path().join("deep/er"), "gzip", false);
    let spec_b = fixture(b.path(), "gzip", true);
    touch_all(a.path(), "2001-01-01", "600");
    touch_all(b.path(), "2020-02-02", "755");
    let one = build_with_umask(&spec_a, &a.path().join("out"), "022", &key);
    let two = build_with_umask(&spec_b, &b.path().join("o2"), "077", &key);
    assert!(one.0 == two.0, "images differ");
    assert_eq!(
        String::from_utf8(one.1.clone()).unwrap(),
        String::from_utf8(two.1).unwrap()
    );
    let manifest: serde_json::Value = serde_json::from_slice(&one.1).unwrap();
    assert_eq!(manifest["source_date_epoch"], 1700000000);

    // One changed byte of one input changes image hash and build id.
    let mut agent = std::fs::read(b.path().join("bin/agent")).unwrap();
    *agent.last_mut().unwrap() ^= 1;
    std::fs::write(b.path().join("bin/agent"), agent).unwrap();
    let three = build_with_umask(&spec_b, &b.path().join("o3"), "022", &key);
    assert_ne!(one.0, three.0);
    let m3: serde_json::Value = serde_json::from_slice(&three.1).unwrap();
    assert_ne!(manifest["build_id"], m3["build_id"]);
    assert_ne!(manifest["image"]["sha256"], m3["image"]["sha256"]);
}

#[test]
fn every_compression_is_deterministic_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = fixture(dir.path(), "gzip", false);
    let spec = initrd_builder::Spec::load(&spec_path).unwrap();
    for c in initrd_builder::Compression::ALL {
        let opts = initrd_builder::BuildOptions {
            compression: Some(c),
            ..Default::default()
        };
        let x = initrd_builder::build(&spec, &opts).unwrap();
        let y = initrd_builder::build(&spec, &opts).unwrap();
        assert_eq!(x.image, y.image, "{c}");
        assert_eq!(x.manifest_bytes, y.manifest_bytes, "{c}");
        assert_eq!(x.manifest.image.compression, c);
        assert!(x.manifest.entries.iter().all(|e| e.path.starts_with('/')));
    }
}

#[test]
fn source_date_epoch_is_every_mtime() {
    let dir = tempfile::tempdir().unwrap();
    let spec = initrd_builder::Spec::load(&fixture(dir.path(), "none", false)).unwrap();
    let opts = initrd_builder::BuildOptions {
        source_date_epoch: 1234567,
        ..Default::default()
    };
    let out = initrd_builder::build(&spec, &opts).unwrap();
    let entries = initrd_builder::cpio::read(&out.image).unwrap();
    assert!(entries
        .iter()
        .all(|e| e.mtime == 1234567 && e.uid == 0 && e.gid == 0));
    let inos: Vec<u32> = entries.iter().map(|e| e.ino).collect();
    assert_eq!(inos, (1..=entries.len() as u32).collect::<Vec<_>>());
}
