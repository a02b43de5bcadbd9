//! Module resolution against Debian's real 6.1 kernel, fetched (once, cached)
//! by scripts/fetch-kernel.sh into <repo>/.cache/kernel.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use initrd_builder::modules::ModuleIndex;
use initrd_builder::{build, BuildOptions, Spec};

const WANTED: &[&str] = &[
    "virtio_blk",
    "virtio_pci",
    "virtio_net",
    "ext4",
    "overlay",
    "erofs",
    "vsock",
    "vmw_vsock_virtio_transport",
    "crc32c_generic",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// (kver, modules_root) of the cached Debian kernel.
fn kernel() -> &'static (String, PathBuf) {
    static K: OnceLock<(String, PathBuf)> = OnceLock::new();
    K.get_or_init(|| {
        let script = repo().join("scripts/fetch-kernel.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fetch-kernel.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kver = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(
            kver.starts_with("6.1.") && kver.ends_with("-amd64"),
            "{kver:?}"
        );
        let root = repo().join(".cache/kernel").join(&kver).join("root");
        (kver, root)
    })
}

fn module_spec(dir: &Path, root: &Path, wanted: &[&str]) -> Spec {
    write(&dir.join("init"), &tiny_elf(X86_64, b"init"));
    let list: Vec<String> = wanted.iter().map(|m| format!("\"{m}\"")).collect();
    let text = format!(
        "[init]\npath = \"init\"\nversion = \"1\"\nprotocol = 1\n\n[kernel]\nrelease = \"{{kver}}\"\n\
         modules_root = \"{}\"\nmodules = [{}]\n",
        root.display(),
        list.join(", ")
    );
    Spec::parse(&text, dir).unwrap()
}

fn opts(kver: &str) -> BuildOptions {
    let mut o = BuildOptions::default();
    o.vars.insert("kver".into(), kver.into());
    o
}

fn entry<'a>(
    entries: &'a [initrd_builder::cpio::RawEntry],
    path: &str,
) -> &'a initrd_builder::cpio::RawEntry {
    entries
        .iter()
        .find(|e| e.name == path)
        .unwrap_or_else(|| panic!("no {path}"))
}

#[test]
fn resolves_debian_modules_with_deps_and_softdeps() {
    let (kver, root) = kernel();
    let dir = tempfile::tempdir().unwrap();
    let out = build(&module_spec(dir.path(), root, WANTED), &opts(kver)).unwrap();
    let k = out.manifest.kernel.clone().unwrap();
    assert_eq!(&k.release, kver);
    for m in [
        "ext4",
        "jbd2",
        "mbcache",
        "crc16",
        "crc32c_generic",
        "virtio",
        "virtio_ring",
        "virtio_pci_modern_dev",
        "net_failover",
        "failover",
        "vsock",
        "vmw_vsock_virtio_transport_common",
        "libcrc32c",
        "overlay",
        "erofs",
    ] {
        assert!(
            k.modules.contains(&m.to_string()),
            "{m} missing from {:?}",
            k.modules
        );
    }
    assert!(
        !k.modules.contains(&"crc32c_intel".to_string()),
        "crc32c_generic satisfies crc32c"
    );

    let (_, archive) = initrd_builder::compress::decompress(&out.image).unwrap();
    let entries = initrd_builder::cpio::read(&archive).unwrap();
    let base = format!("lib/modules/{kver}");
    let dep =
        String::from_utf8(entry(&entries, &format!("{base}/modules.dep")).data.clone()).unwrap();
    assert_eq!(dep.lines().count(), k.modules.len());
    for line in dep.lines() {
        for path in line.replace(':', " ").split_whitespace() {
            let e = entry(&entries, &format!("{base}/{path}"));
            assert!(e.data.starts_with(b"\x7fELF"), "{path}");
        }
    }
    assert!(dep
        .lines()
        .any(|l| l.starts_with("kernel/fs/ext4/ext4.ko: ") && l.contains("jbd2.ko")));
    let softdep = String::from_utf8(
        entry(&entries, &format!("{base}/modules.softdep"))
            .data
            .clone(),
    )
    .unwrap();
    assert!(
        softdep.contains("softdep ext4 pre: crypto-crc32c"),
        "{softdep}"
    );
    let alias = String::from_utf8(
        entry(&entries, &format!("{base}/modules.alias"))
            .data
            .clone(),
    )
    .unwrap();
    assert!(
        alias.contains("alias crypto-crc32c crc32c_generic"),
        "{alias}"
    );
    assert!(!alias.contains("crc32c_intel"));
    assert!(alias
        .lines()
        .all(|l| k.modules.iter().any(|m| l.ends_with(&format!(" {m}")))));
    // ELF check of modules: all x86_64.
    let ko = entry(&entries, &format!("{base}/kernel/fs/ext4/ext4.ko"));
    assert_eq!(
        initrd_builder::elf::machine(&ko.data).unwrap(),
        initrd_builder::elf::EM_X86_64
    );
}

#[test]
fn alias_softdep_without_a_chosen_provider_takes_all_of_them() {
    let (kver, root) = kernel();
    let idx = ModuleIndex::load(&root.join("lib/modules").join(kver)).unwrap();
    let r = idx.resolve(&["jbd2".to_string()], &[]).unwrap();
    assert!(r.modules.contains(&"crc32c_generic".to_string()));
    assert!(r.modules.contains(&"crc32c_intel".to_string()));
    let r = idx
        .resolve(&["jbd2".to_string()], &["crc32c_intel".to_string()])
        .unwrap();
    assert!(!r.modules.contains(&"crc32c_intel".to_string()));
    assert!(idx.resolve(&["no_such_module".to_string()], &[]).is_err());
}

#[test]
fn compressed_modules_are_decompressed_at_build_time() {
    let (kver, root) = kernel();
    let src = root
        .join("lib/modules")
        .join(kver)
        .join("kernel/fs/overlayfs/overlay.ko");
    let original = std::fs::read(&src).unwrap();
    let tree = tempfile::tempdir().unwrap();
    let mods = tree.path().join("lib/modules/9.9.9");
    std::fs::create_dir_all(mods.join("kernel")).unwrap();
    sh(&format!(
        "xz --check=crc32 -c '{}' > '{}/kernel/overlay.ko.xz'",
        src.display(),
        mods.display()
    ));
    sh(&format!(
        "zstd -q -c '{}' > '{}/kernel/ovl2.ko.zst'",
        src.display(),
        mods.display()
    ));
    write(
        &mods.join("modules.dep"),
        b"kernel/overlay.ko.xz:\nkernel/ovl2.ko.zst: kernel/overlay.ko.xz\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let spec = module_spec(dir.path(), tree.path(), &["ovl2"]);
    let out = build(&spec, &opts("9.9.9")).unwrap();
    let (_, archive) = initrd_builder::compress::decompress(&out.image).unwrap();
    let entries = initrd_builder::cpio::read(&archive).unwrap();
    assert_eq!(
        entry(&entries, "lib/modules/9.9.9/kernel/overlay.ko").data,
        original
    );
    assert_eq!(
        entry(&entries, "lib/modules/9.9.9/kernel/ovl2.ko").data,
        original
    );
    let dep = &entry(&entries, "lib/modules/9.9.9/modules.dep").data;
    assert_eq!(
        dep,
        b"kernel/overlay.ko:\nkernel/ovl2.ko: kernel/overlay.ko\n"
    );
}

#[test]
fn standard_modules_fit_their_budget() {
    let (kver, root) = kernel();
    let dir = tempfile::tempdir().unwrap();
    let out = build(&module_spec(dir.path(), root, WANTED), &opts(kver)).unwrap();
    // The modules alone must leave room for init + agent under the 4 MiB total.
    assert!(
        out.manifest.image.size < 1 << 20,
        "{} bytes",
        out.manifest.image.size
    );
}

#[test]
fn the_standard_spec_builds_against_the_cached_kernel() {
    let (kver, _) = kernel();
    let target = tempfile::tempdir().unwrap();
    let release = target.path().join("x86_64-unknown-linux-gnu/release");
    write(&release.join("init"), &tiny_elf(X86_64, b"init"));
    write(&release.join("guest-agent"), &tiny_elf(X86_64, b"agent"));
    let spec = Spec::load(&repo().join("initrd-builder/specs/guestinit.toml")).unwrap();
    let mut o = opts(kver);
    o.vars
        .insert("target_dir".into(), target.path().display().to_string());
    let out = build(&spec, &o).unwrap();
    let m = &out.manifest;
    assert_eq!(m.name, "guestinit");
    assert!(m
        .kernel
        .as_ref()
        .unwrap()
        .modules
        .contains(&"vmw_vsock_virtio_transport".to_string()));
    let find = |p: &str| {
        m.entries
            .iter()
            .find(|e| e.path == p)
            .unwrap_or_else(|| panic!("{p}"))
    };
    assert_eq!(find("/tmp").mode, "1777");
    assert_eq!(find("/usr/local/bin/guest-agent").mode, "0755");
    assert!(
        !m.entries.iter().any(|e| e.path == "/bin/sh"),
        "debug entries only with --debug"
    );
    o.debug = true;
    let dbg = build(&spec, &o).unwrap();
    assert!(dbg.manifest.entries.iter().any(|e| e.path == "/bin/sh"));
    assert!(dbg.manifest.debug);
}
