//! Build-time checks: static ELF of the right architecture, size budget, and
//! nothing written when a build fails.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use initrd_builder::{build, BuildOptions, InitrdError, Spec};

fn spec_with_init(dir: &Path, init: &[u8], extra: &str) -> Spec {
    write(&dir.join("init"), init);
    let text = format!("[init]\npath = \"init\"\nversion = \"1\"\nprotocol = 1\n{extra}");
    Spec::parse(&text, dir).unwrap()
}

#[test]
fn dynamic_executables_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_with_init(dir.path(), &std::fs::read("/bin/ls").unwrap(), "");
    let err = build(&spec, &BuildOptions::default()).unwrap_err();
    assert!(matches!(err, InitrdError::NotStatic { .. }), "{err}");
    assert!(err.to_string().contains("/init"), "{err}");
    let spec = spec_with_init(dir.path(), &tiny_elf_interp(X86_64, "/lib/ld.so"), "");
    let err = build(&spec, &BuildOptions::default()).unwrap_err();
    assert!(err.to_string().contains("/lib/ld.so"), "{err}");
}

#[test]
fn foreign_architecture_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_with_init(dir.path(), &tiny_elf(AARCH64, b""), "");
    let err = build(&spec, &BuildOptions::default()).unwrap_err();
    assert!(matches!(err, InitrdError::WrongArch { .. }), "{err}");
    assert!(err.to_string().contains("aarch64"), "{err}");
    // The same binary is right for an aarch64 image; an x86_64 agent then is not.
    write(&dir.path().join("agent"), &tiny_elf(X86_64, b""));
    let extra = "[image]\narch = \"aarch64\"\n[agent]\npath = \"agent\"\nversion = \"1\"\n";
    let spec = spec_with_init(dir.path(), &tiny_elf(AARCH64, b""), extra);
    let err = build(&spec, &BuildOptions::default()).unwrap_err();
    assert!(err.to_string().contains("x86_64"), "{err}");
    assert!(err.to_string().contains("guest-agent"), "{err}");
}

#[test]
fn scripts_and_non_elf_executables_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_with_init(dir.path(), b"#!/bin/sh\necho hi\n", "");
    let err = build(&spec, &BuildOptions::default()).unwrap_err();
    assert!(matches!(err, InitrdError::NotElf { .. }), "{err}");
    // A non-executable data file is fine.
    write(&dir.path().join("data"), b"#!/bin/sh\n");
    let extra = "[[file]]\nsrc = \"data\"\ndest = \"/etc/data\"\n";
    let spec = spec_with_init(dir.path(), &tiny_elf(X86_64, b""), extra);
    build(&spec, &BuildOptions::default()).unwrap();
}

#[test]
fn size_budget_fails_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut x = 0x2545f4914f6cdd1du64;
    let noise: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    write(&dir.path().join("big"), &noise);
    let extra = "[image]\nmax_size = \"100K\"\n[[file]]\nsrc = \"big\"\ndest = \"/big\"\n";
    spec_with_init(dir.path(), &tiny_elf(X86_64, b""), extra);
    let spec_path = dir.path().join("spec.toml");
    let text = format!("[init]\npath = \"init\"\nversion = \"1\"\nprotocol = 1\n{extra}");
    write(&spec_path, text.as_bytes());
    let out_dir = dir.path().join("out");
    let out = cli(&[
        "build",
        "--spec",
        spec_path.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--unsigned",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("above the budget of 102400 bytes") && err.contains("/big"),
        "{err}"
    );
    assert!(!out_dir.exists() || std::fs::read_dir(&out_dir).unwrap().next().is_none());
    // Raising the budget on the command line lets it through.
    let out = cli(&[
        "build",
        "--spec",
        spec_path.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--unsigned",
        "--max-size",
        "1MiB",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn spec_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_with_init(
        dir.path(),
        &tiny_elf(X86_64, b""),
        "[kernel]\nrelease = \"{kver}\"\n",
    );
    let err = build(&spec, &BuildOptions::default()).unwrap_err();
    assert!(err.to_string().contains("--var kver="), "{err}");
    let spec = spec_with_init(
        dir.path(),
        &tiny_elf(X86_64, b""),
        "[[symlink]]\npath = \"/init\"\ntarget = \"x\"\n",
    );
    let err = build(&spec, &BuildOptions::default()).unwrap_err();
    assert!(err.to_string().contains("duplicate entry /init"), "{err}");
    let bad = Spec::parse(
        "[init]\npath = \"init\"\nversion = \"1/../x\"\nprotocol = 1\n",
        dir.path(),
    );
    let err = build(&bad.unwrap(), &BuildOptions::default()).unwrap_err();
    assert!(err.to_string().contains("init.version"), "{err}");
    let missing = dir.path().join("nope.toml");
    let err = Spec::load(&missing).unwrap_err();
    assert!(err.to_string().contains("nope.toml"), "{err}");
    write(&missing, b"[init]\npath = 3\n");
    let err = Spec::load(&missing).unwrap_err();
    assert!(err.to_string().contains("nope.toml"), "{err}");
}

#[test]
fn ls_lists_modes_sizes_and_targets() {
    let dir = tempfile::tempdir().unwrap();
    let spec = fixture(dir.path(), "lz4", false);
    let out = cli(&[
        "build",
        "--spec",
        spec.to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
        "--unsigned",
    ]);
    let image = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let out = cli(&["ls", &image]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("lrwxrwxrwx 0777         28 /bin/agent -> ../usr/local/bin/guest-agent"),
        "{text}"
    );
    assert!(
        text.contains("crw------- 0600       5, 1 /dev/console"),
        "{text}"
    );
    assert!(
        text.contains("-rw-r----- 0640         22 /etc/motd"),
        "{text}"
    );
    assert_eq!(text.lines().count(), FIXTURE_ENTRIES.len());
    let out = cli(&["ls", "--json", &image]);
    let first: serde_json::Value = serde_json::from_str(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["path"], "/bin");
    assert_eq!(first["type"], "dir");
}

#[test]
fn elf_inspect_reports_static_and_machine() {
    let info = initrd_builder::elf::inspect(&tiny_elf(AARCH64, b"x")).unwrap();
    assert_eq!(info.machine, AARCH64);
    assert!(info.is_static && info.interpreter.is_none() && info.needed.is_empty());
    let info = initrd_builder::elf::inspect(&tiny_elf_interp(X86_64, "/lib/ld.so")).unwrap();
    assert_eq!(info.interpreter.as_deref(), Some("/lib/ld.so"));
    assert!(!info.is_static);
    if let Ok(busybox) = std::fs::read("/bin/busybox") {
        assert!(initrd_builder::elf::inspect(&busybox).unwrap().is_static);
    }
}
