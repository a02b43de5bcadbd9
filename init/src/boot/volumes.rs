//! Volumes (`volume_mounts`), mounted in the new root after the switch:
//! `ro`, `rw` and `overlay` (see [`guest_contract::volumes`]), the
//! filesystem read from each device's superblock (ext4, xfs, erofs,
//! squashfs, btrfs). A volume that cannot be used — refused by the plan,
//! its device missing, an unknown filesystem, a mount point that is a
//! symlink in the image, a mount that fails — is one ERROR line naming it,
//! and the boot goes on, as with a hypeman host's init. Writable volumes
//! are remounted read-only at power-off.

use super::{report, Ctx};
use crate::sys::{Mount, MountFlags, Sys};
use guest_contract::fsdetect::{detect_volume, FsType, VOLUME_HEAD_BYTES};
use guest_contract::volumes::{Volume, VolumeError, VolumeMode};
use std::time::Duration;

/// How long a volume's device may take to appear.
pub const DEVICE_TIMEOUT: Duration = Duration::from_secs(2);

/// Reports the entries refused while planning, then mounts the others.
pub fn apply<S: Sys>(sys: &mut S, ctx: &mut Ctx, planned: &[Volume], refused: &[VolumeError]) {
    for e in refused {
        report::error(sys, "volumes", &e.to_string());
    }
    for v in planned {
        match mount_volume(sys, ctx, v) {
            Ok(fs) => {
                let msg = format!(
                    "{} ({}) on {} {}",
                    v.device,
                    fs.name(),
                    v.path,
                    mode_word(&v.mode)
                );
                report::info(sys, "volumes", &msg);
            }
            Err(reason) => {
                let msg = format!("volume {} on {}: {reason}; not mounted", v.device, v.path);
                report::error(sys, "volumes", &msg);
            }
        }
    }
}

fn mode_word(mode: &VolumeMode) -> &'static str {
    match mode {
        VolumeMode::ReadOnly => "ro",
        VolumeMode::ReadWrite => "rw",
        VolumeMode::Overlay { .. } => "overlay",
    }
}

fn flags(read_only: bool) -> MountFlags {
    MountFlags {
        read_only,
        nosuid_nodev: true,
        ..MountFlags::default()
    }
}

fn mount_volume<S: Sys>(sys: &mut S, ctx: &mut Ctx, v: &Volume) -> Result<FsType, String> {
    no_symlink_on_the_way(sys, &v.path)?;
    let fs = probe(sys, ctx, &v.device)?;
    match &v.mode {
        VolumeMode::ReadOnly => mount_fs(sys, &v.device, &v.path, fs, true)?,
        VolumeMode::ReadWrite => {
            mount_fs(sys, &v.device, &v.path, fs, false)?;
            keep_clean_at_power_off(ctx, &v.path);
        }
        VolumeMode::Overlay { overlay_device } => {
            let (base, upper_disk) = (v.base_dir(), v.overlay_dir());
            no_symlink_on_the_way(sys, &base)?;
            no_symlink_on_the_way(sys, &upper_disk)?;
            mount_fs(sys, &v.device, &base, fs, true)?;
            let ofs = probe(sys, ctx, overlay_device)?;
            mount_fs(sys, overlay_device, &upper_disk, ofs, false)?;
            keep_clean_at_power_off(ctx, &upper_disk);
            for dir in ["upper", "work"] {
                let d = format!("{upper_disk}/{dir}");
                sys.mkdir_all(&d).map_err(|e| format!("create {d}: {e}"))?;
            }
            let data =
                format!("lowerdir={base},upperdir={upper_disk}/upper,workdir={upper_disk}/work");
            sys.mkdir_all(&v.path)
                .map_err(|e| format!("create {}: {e}", v.path))?;
            let m = Mount::fs("overlay", &v.path, "overlay", flags(false), &data);
            sys.mount(&m)
                .map_err(|e| format!("overlay on {}: {e}", v.path))?;
        }
    }
    Ok(fs)
}

/// The device's filesystem, after waiting for it to appear. In test mode
/// (a namespace on a host, whose /dev is the host's) only loop devices.
fn probe<S: Sys>(sys: &mut S, ctx: &Ctx, dev: &str) -> Result<FsType, String> {
    if ctx.test_mode && !dev.starts_with("/dev/loop") {
        return Err(format!("test mode: {dev} is not a loop device"));
    }
    sys.wait_for_paths(&[dev.to_string()], DEVICE_TIMEOUT)
        .map_err(|_| {
            format!(
                "device {dev} did not appear within {} s",
                DEVICE_TIMEOUT.as_secs()
            )
        })?;
    let head = sys
        .read_head(dev, VOLUME_HEAD_BYTES)
        .map_err(|e| format!("read {dev}: {e}"))?;
    detect_volume(&head).ok_or_else(|| {
        format!("{dev}: unknown filesystem (no ext4, xfs, erofs, squashfs or btrfs superblock)")
    })
}

fn mount_fs<S: Sys>(
    sys: &mut S,
    dev: &str,
    target: &str,
    fs: FsType,
    ro: bool,
) -> Result<(), String> {
    sys.mkdir_all(target)
        .map_err(|e| format!("create {target}: {e}"))?;
    let data = if ro { fs.ro_data() } else { "" };
    let m = Mount::fs(dev, target, fs.name(), flags(ro), data);
    sys.mount(&m)
        .map_err(|e| format!("mount {dev} ({}) on {target}: {e}", fs.name()))
}

/// A mount point must not pass through a symlink of the image (it would
/// put the volume somewhere else than the config says).
fn no_symlink_on_the_way<S: Sys>(sys: &mut S, path: &str) -> Result<(), String> {
    let mut at = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        at.push('/');
        at.push_str(part);
        if sys.is_symlink(&at) {
            return Err(format!("{at} is a symlink in the image"));
        }
    }
    Ok(())
}

/// Writable mounts are remounted read-only at power-off, before the root.
fn keep_clean_at_power_off(ctx: &mut Ctx, target: &str) {
    ctx.shutdown_ro.insert(0, target.to_string());
    report::register_teardown(&ctx.shutdown_ro);
}
