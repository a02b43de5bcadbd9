//! An independent reader (GNU cpio after zcat / zstd -dc / lz4 -dc) sees exactly
//! the entries, modes, link targets and contents the spec asked for.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::*;

fn decompressor(compression: &str) -> &'static str {
    match compression {
        "gzip" => "zcat",
        "zstd" => "zstd -dc",
        "lz4" => "lz4 -dc",
        _ => "cat",
    }
}

fn build(dir: &Path, compression: &str, debug: bool) -> String {
    let spec = fixture(dir, compression, false);
    let (key, _) = keys(dir);
    let out_dir = dir.join("out");
    let mut args = vec![
        "build",
        "--spec",
        spec.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ];
    args.extend(["--key", key.to_str().unwrap()]);
    if debug {
        args.push("--debug");
    }
    let out = cli(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `cpio -itv` lines as (permissions, name, link target).
fn listing(image: &str, compression: &str) -> Vec<(String, String, Option<String>)> {
    let text = sh(&format!(
        "{} '{image}' | cpio -itv --quiet",
        decompressor(compression)
    ));
    String::from_utf8(text)
        .unwrap()
        .lines()
        .map(|l| {
            let perms = l.split_whitespace().next().unwrap().to_string();
            let (head, target) = match l.split_once(" -> ") {
                Some((h, t)) => (h, Some(t.to_string())),
                None => (l, None),
            };
            let name = head.split_whitespace().last().unwrap().to_string();
            (perms, name, target)
        })
        .collect()
}

fn check_extracted(root: &Path) {
    let meta = |p: &str| std::fs::symlink_metadata(root.join(p)).unwrap();
    assert_eq!(
        std::fs::read(root.join("init")).unwrap(),
        tiny_elf(X86_64, b"init payload")
    );
    assert_eq!(
        std::fs::read(root.join("usr/local/bin/guest-agent")).unwrap(),
        tiny_elf(X86_64, b"agent payload")
    );
    assert_eq!(
        std::fs::read(root.join("etc/motd")).unwrap(),
        b"hello from the initrd\n"
    );
    assert_eq!(meta("init").mode() & 0o7777, 0o755);
    assert_eq!(meta("etc/motd").mode() & 0o7777, 0o640);
    assert_eq!(meta("run/empty").mode() & 0o7777, 0o700);
    let link = std::fs::read_link(root.join("bin/agent")).unwrap();
    assert_eq!(link, Path::new("../usr/local/bin/guest-agent"));
    let console = meta("dev/console");
    assert!(console.file_type().is_char_device());
    assert_eq!(console.rdev(), 5 << 8 | 1);
    assert_eq!(meta("dev/null").rdev(), 1 << 8 | 3);
    assert!(meta("dev/vda").file_type().is_block_device());
    assert_eq!(meta("dev/vda").rdev(), 254 << 8);
}

#[test]
fn gnu_cpio_reads_every_compression() {
    for compression in ["none", "gzip", "zstd", "lz4"] {
        let dir = tempfile::tempdir().unwrap();
        let image = build(dir.path(), compression, false);
        let got = listing(&image, compression);
        let names: Vec<(&str, &str)> = got
            .iter()
            .map(|(p, n, _)| (n.as_str(), p.as_str()))
            .collect();
        assert_eq!(names, FIXTURE_ENTRIES, "{compression}");
        let link = got.iter().find(|(_, n, _)| n == "bin/agent").unwrap();
        assert_eq!(link.2.as_deref(), Some("../usr/local/bin/guest-agent"));
        let root = dir.path().join("x");
        std::fs::create_dir(&root).unwrap();
        let cmd = decompressor(compression);
        sh(&format!(
            "cd '{}' && {cmd} '{image}' | cpio -idv --quiet --no-absolute-filenames 2>/dev/null",
            root.display()
        ));
        check_extracted(&root);
    }
}

#[test]
fn debug_build_adds_debug_entries_only() {
    let dir = tempfile::tempdir().unwrap();
    let image = build(dir.path(), "gzip", true);
    let got = listing(&image, "gzip");
    let tool = got.iter().find(|(_, n, _)| n == "bin/debug-tool").unwrap();
    assert_eq!(tool.0, "-rwxr-xr-x", "ELF executables default to 0755");
    assert_eq!(got.len(), FIXTURE_ENTRIES.len() + 1);
}

#[test]
fn lz4_output_uses_the_legacy_container() {
    let dir = tempfile::tempdir().unwrap();
    let image = build(dir.path(), "lz4", false);
    let bytes = std::fs::read(image).unwrap();
    assert_eq!(&bytes[..4], &[0x02, 0x21, 0x4C, 0x18]);
}
