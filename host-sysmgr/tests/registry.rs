//! Sharing kernels and initrds through a real OCI registry (Debian's
//! `docker-registry` on 127.0.0.1): publish from one data folder, pull into
//! another, byte-identical and verified; an initrd from an untrusted key and a
//! tampered blob are refused and leave nothing behind.

#![allow(clippy::unwrap_used)]

mod support;

use host_sysmgr::system::initrd::Inputs;
use host_sysmgr::system::record::Trust;
use host_sysmgr::system::registry::Access;
use host_sysmgr::system::state::Kind;
use host_sysmgr::system::{Store, SystemError};
use sha2::{Digest, Sha256};
use std::path::Path;
use support::registry::Registry;

/// A `kernel/build.sh`-style folder with a fake vmlinux and headers tarball.
fn kernel_build(dir: &Path) {
    let mut vmlinux = b"\x7fELF".to_vec();
    vmlinux.extend((0..3_000_000u32).map(|i| (i % 251) as u8));
    let headers = b"not really a tarball".to_vec();
    std::fs::write(dir.join("vmlinux"), &vmlinux).unwrap();
    std::fs::write(dir.join("kernel-headers.tar.gz"), &headers).unwrap();
    let sum =
        |d: &[u8]| serde_json::json!({"sha256": hex::encode(Sha256::digest(d)), "size": d.len()});
    let m = serde_json::json!({
        "kind": "kernel", "release": "6.1.0-test", "arch": std::env::consts::ARCH,
        "config_key": "0123456789abcdef",
        "files": {"vmlinux": sum(&vmlinux), "kernel-headers.tar.gz": sum(&headers)},
    });
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
}

fn store(dir: &Path) -> Store {
    Store::open(dir, None).unwrap()
}

fn busybox() -> Inputs {
    Inputs::find(
        Some(Path::new("/bin/busybox")),
        Some(Path::new("/bin/busybox")),
    )
    .unwrap()
}

fn nothing_staged(s: &Store) {
    let left: Vec<_> = std::fs::read_dir(s.layout().staging())
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn publish_then_pull_gives_identical_verified_artifacts() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let build = work.path().join("build");
    std::fs::create_dir(&build).unwrap();
    kernel_build(&build);
    let a = store(&work.path().join("a"));
    let version = a.import_kernel(&build, None).unwrap().version;
    let initrd = a.ensure_initrd(&busybox()).unwrap();
    let access = Access::default();
    let kref = format!("{}/guestinit/kernel:{version}", reg.addr);
    let iref = format!("{}/guestinit/initrd:{initrd}", reg.addr);
    a.publish(Kind::Kernel, &version, &kref, &access).unwrap();
    a.publish(Kind::Initrd, &initrd, &iref, &access).unwrap();

    let b = store(&work.path().join("b"));
    assert_eq!(
        b.pull_artifact(&kref, &access).unwrap(),
        (Kind::Kernel, version.clone())
    );
    let rec = b.kernel_record(&version).unwrap();
    assert_eq!(rec.trust, Trust::Registry);
    assert!(rec.source.contains("@sha256:"), "{}", rec.source);
    for f in ["vmlinux", "kernel-headers.tar.gz"] {
        let (x, y) = (
            a.layout().kernel_dir(&version, a.arch()).join(f),
            b.layout().kernel_dir(&version, b.arch()).join(f),
        );
        assert_eq!(std::fs::read(x).unwrap(), std::fs::read(y).unwrap(), "{f}");
    }
    b.verify_kernel(&version).unwrap();
    assert_eq!(
        b.state().unwrap().track(Kind::Kernel, b.arch()).default,
        Some(version)
    );

    // The initrd is refused until the publishing host's key is trusted.
    let e = b.pull_artifact(&iref, &access).unwrap_err();
    assert!(e.to_string().contains("no trusted key"), "{e}");
    assert!(!b.layout().initrd_dir(b.arch(), &initrd).exists());
    nothing_staged(&b);
    b.trust_key(&a.layout().public_key()).unwrap();
    assert_eq!(
        b.pull_artifact(&iref, &access).unwrap(),
        (Kind::Initrd, initrd.clone())
    );
    for f in ["initrd", "manifest.json", "initrd.sig"] {
        let (x, y) = (
            a.layout().initrd_dir(a.arch(), &initrd).join(f),
            b.layout().initrd_dir(b.arch(), &initrd).join(f),
        );
        assert_eq!(std::fs::read(x).unwrap(), std::fs::read(y).unwrap(), "{f}");
    }
}

#[test]
fn a_tampered_blob_is_refused_and_leaves_nothing() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let build = work.path().join("build");
    std::fs::create_dir(&build).unwrap();
    kernel_build(&build);
    let a = store(&work.path().join("a"));
    let version = a.import_kernel(&build, None).unwrap().version;
    let kref = format!("{}/guestinit/kernel:{version}", reg.addr);
    a.publish(Kind::Kernel, &version, &kref, &Access::default())
        .unwrap();
    let sha = a.kernel_record(&version).unwrap().vmlinux.sha256;
    let blob = reg.blob_path(&sha);
    let mut data = std::fs::read(&blob).unwrap();
    data[1_000_000] ^= 0x20;
    std::fs::write(&blob, data).unwrap();
    let c = store(&work.path().join("c"));
    let e = c.pull_artifact(&kref, &Access::default()).unwrap_err();
    assert!(
        matches!(e, SystemError::Registry { .. } | SystemError::Digest { .. }),
        "{e}"
    );
    assert!(
        host_sysmgr::chain(&e).contains("sha256"),
        "{}",
        host_sysmgr::chain(&e)
    );
    assert!(c.installed_kernels().unwrap().is_empty());
    nothing_staged(&c);
    // A reference that is not ours is refused by its config type.
    let e = c
        .pull_artifact(&format!("{}/nothing:here", reg.addr), &Access::default())
        .unwrap_err();
    assert!(matches!(e, SystemError::Registry { .. }), "{e}");
}
