//! Volumes (`volume_mounts`) in a real VM: ro is read-only (a write fails
//! with EROFS), rw persists across boots, overlay keeps its base image
//! byte-identical, and a missing device is one ERROR line while the app
//! still runs.

use anyhow::{ensure, Result};
use guest_contract::config::VolumeMount;
use host_sysmgr::disks::{self, RootFs};
use host_sysmgr::vmm::Disk;
use sha2::Digest;
use std::path::Path;
use tests_vm::guest::Guest;

fn volume(device: &str, path: &str, mode: &str, overlay: Option<&str>) -> VolumeMount {
    VolumeMount {
        device: device.into(),
        path: path.into(),
        mode: Some(mode.into()),
        overlay_device: overlay.map(Into::into),
        ..VolumeMount::default()
    }
}

fn disk(path: &Path, read_only: bool) -> Disk {
    Disk {
        path: path.to_path_buf(),
        read_only,
    }
}

/// An ext4 image holding `files` (name, contents).
fn image_with(dir: &Path, name: &str, files: &[(&str, &str)]) -> Result<std::path::PathBuf> {
    let src = dir.join(format!("{name}.d"));
    std::fs::create_dir_all(&src)?;
    for (f, text) in files {
        std::fs::write(src.join(f), text)?;
    }
    let img = dir.join(format!("{name}.img"));
    disks::rootfs_image(&src, &img, RootFs::Ext4)?;
    Ok(img)
}

fn sha256(path: &Path) -> Result<String> {
    Ok(format!("{:x}", sha2::Sha256::digest(std::fs::read(path)?)))
}

#[test]
fn ro_rw_overlay_and_a_missing_device() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ro = image_with(dir.path(), "ro", &[("hello.txt", "read me\n")])?;
    let rw = dir.path().join("rw.img");
    disks::overlay_disk(&rw, 16)?;
    let base = image_with(dir.path(), "base", &[("base.txt", "base\n")])?;
    let upper = dir.path().join("upper.img");
    disks::overlay_disk(&upper, 16)?;
    let base_sum = sha256(&base)?;
    let script = "cat /data/hello.txt; echo x > /data/new 2>/dev/null || echo ro-write-refused; \
        grep ' /data ' /proc/mounts | busybox awk '{print \"data-opts \" $4}'; \
        echo persisted > /rw/count; sync; \
        cat /cache/base.txt; echo changed > /cache/base.txt; echo new > /cache/new.txt; \
        cat /cache/base.txt /cache/new.txt; ls -1 /mnt; echo done";
    let vols = vec![
        volume("/dev/vdd", "/data", "ro", None),
        volume("/dev/vde", "/rw", "rw", None),
        volume("/dev/vdf", "/cache", "overlay", Some("/dev/vdg")),
        volume("/dev/vdh", "/missing", "rw", None),
    ];
    let mut g = Guest::new("volumes", &["/bin/sh", "-c", script])
        .with_config(|c| c.volume_mounts = Some(vols));
    g.extra_disks = vec![
        disk(&ro, true),
        disk(&rw, false),
        disk(&base, true),
        disk(&upper, false),
    ];
    let out = g.run()?;
    for line in [
        "read me",
        "ro-write-refused",
        "base",
        "changed",
        "new",
        "vol-base-vdf",
        "vol-overlay-vdf",
        "done",
    ] {
        ensure!(out.has_line(line), "no line {line:?}:\n{}", out.log);
    }
    ensure!(out.log.contains("data-opts ro,"), "{}", out.log);
    ensure!(
        out.log.contains("[ERROR] [hypeman-init:volumes] volume /dev/vdh on /missing: device /dev/vdh did not appear within 2 s; not mounted"),
        "{}",
        out.log
    );
    ensure!(out.exit_line()? == r#"HYPEMAN-EXIT code=0 message="success""#);
    ensure!(
        sha256(&base)? == base_sum,
        "the overlay's base image changed"
    );

    // rw persists: a second boot reads what the first wrote.
    let vols = vec![volume("/dev/vdd", "/rw", "rw", None)];
    let mut again = Guest::new("volumes-rw-again", &["/bin/cat", "/rw/count"])
        .with_config(|c| c.volume_mounts = Some(vols));
    again.extra_disks = vec![disk(&rw, false)];
    let out = again.run()?;
    ensure!(out.has_line("persisted"), "{}", out.log);
    let fsck = std::process::Command::new("e2fsck")
        .args(["-fn"])
        .arg(&rw)
        .output()?;
    ensure!(fsck.status.success(), "rw volume not clean: {fsck:?}");
    Ok(())
}

#[test]
fn run_volume_from_the_cli() -> Result<()> {
    let bins = tests_vm::artifacts::release_binaries()?;
    let kernel = tests_vm::kernel::debian()?;
    let initrd = tests_vm::initramfs::image(&kernel, &tests_vm::initramfs::Variant::default())?;
    let dir = tempfile::tempdir()?;
    let rootfs = dir.path().join("rootfs");
    tests_vm::rootfs::populate(&rootfs, tests_vm::rootfs::Flavor::Busybox)?;
    let data = image_with(dir.path(), "data", &[("hello.txt", "from a volume\n")])?;
    let before = sha256(&data)?;
    let _lock = tests_vm::guest::vm_lock()?;
    let out = std::process::Command::new(&bins.host_sysmgr)
        .args(["run", "--kernel"])
        .arg(&kernel.vmlinux)
        .arg("--initrd")
        .arg(&initrd)
        .arg("--rootfs")
        .arg(&rootfs)
        .arg("--volume")
        .arg(format!("{}:/data:overlay", data.display()))
        .args([
            "--",
            "/bin/sh",
            "-c",
            "cat /data/hello.txt; echo scratch > /data/hello.txt; cat /data/hello.txt",
        ])
        .stdin(std::process::Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "{out:?}");
    let has = |want: &str| text.lines().any(|l| l.trim_end() == want);
    ensure!(has("from a volume") && has("scratch"), "{text}");
    ensure!(
        sha256(&data)? == before,
        "an overlay volume changed its image"
    );
    Ok(())
}
