//! The list of fuzz targets and the corpus replay shared by the stable test
//! suites (`guest-contract`, `initrd-builder`, `host-sysmgr` and `guest-agent` each include this file
//! with `#[path]` and replay the targets of their group).

use std::fs;
use std::path::PathBuf;

/// Every fuzz target, with the crate whose parsers it checks. Each has
/// `fuzz_targets/<name>.rs`, a `[[bin]]` in `fuzz/Cargo.toml` and a
/// non-empty `corpus/<name>/`.
pub const TARGETS: &[(&str, &str)] = &[
    ("contract", "config"),
    ("contract", "sentinel"),
    ("contract", "quote"),
    ("contract", "cmdline"),
    ("contract", "passwd"),
    ("contract", "fsdetect"),
    ("contract", "sysctl"),
    ("contract", "input_event"),
    ("contract", "kmsg"),
    ("contract", "modindex"),
    ("contract", "netconfig"),
    ("contract", "rtnl_reply"),
    ("contract", "volumes"),
    ("contract", "pem"),
    ("contract", "headers"),
    ("contract", "gpu"),
    ("initrd", "cpio"),
    ("initrd", "decompress"),
    ("initrd", "elf"),
    ("initrd", "modules"),
    ("initrd", "spec"),
    ("initrd", "manifest"),
    ("host", "qmp"),
    ("host", "catalog"),
    ("host", "bundle"),
    ("host", "bzimage"),
    ("host", "layer"),
    ("host", "docker_config"),
    ("host", "vsock_handshake"),
    ("host", "agent_messages"),
    ("agent", "network_request"),
];

/// The fuzz crate's folder: the nearest `fuzz/` above the crate that
/// includes this file.
pub fn fuzz_dir() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        if dir.join("fuzz/Cargo.toml").is_file() {
            return dir.join("fuzz");
        }
        assert!(
            dir.pop(),
            "no fuzz/ folder above {}",
            env!("CARGO_MANIFEST_DIR")
        );
    }
}

/// The files of `corpus/<target>/`, sorted, with their bytes.
pub fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let bytes = fs::read(&path).expect("read corpus file");
            (path, bytes)
        })
        .collect()
}

/// Runs `check` on every corpus file of `target`; a panic fails the test.
pub fn replay(target: &str, check: fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        let outcome = std::panic::catch_unwind(|| check(&bytes));
        assert!(
            outcome.is_ok(),
            "{target}: {} fails its check",
            path.display()
        );
    }
}

/// A target's name and its check.
pub type Check<'a> = (&'a str, fn(&[u8]));

/// Replays the corpus of every target of `group` through `checks`, and fails
/// when `checks` does not name exactly the group's targets.
pub fn replay_group(group: &str, checks: &[Check<'_>]) {
    let mut want: Vec<&str> = TARGETS
        .iter()
        .filter(|(g, _)| *g == group)
        .map(|(_, t)| *t)
        .collect();
    let mut have: Vec<&str> = checks.iter().map(|(t, _)| *t).collect();
    want.sort_unstable();
    have.sort_unstable();
    assert_eq!(have, want, "the {group} replay must cover its targets");
    for (target, check) in checks {
        replay(target, *check);
    }
}

/// Every target has its source file, its `[[bin]]` and a corpus; the
/// `[[bin]]` list names no other target.
pub fn check_target_list() {
    let dir = fuzz_dir();
    let manifest = fs::read_to_string(dir.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let mut bins: Vec<&str> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|b| b.lines().find_map(|l| l.strip_prefix("name = ")))
        .map(|n| n.trim_matches('"'))
        .collect();
    let mut names: Vec<&str> = TARGETS.iter().map(|(_, t)| *t).collect();
    bins.sort_unstable();
    names.sort_unstable();
    assert_eq!(bins, names, "fuzz/Cargo.toml [[bin]] names vs TARGETS");
    for name in names {
        let src = dir.join("fuzz_targets").join(format!("{name}.rs"));
        assert!(src.is_file(), "missing {}", src.display());
        assert!(!corpus(name).is_empty());
    }
}
