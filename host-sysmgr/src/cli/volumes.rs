//! `run --volume IMG:/PATH[:ro|rw|overlay]`: disk images attached after the
//! config disk (/dev/vdd, /dev/vde, …) and the `volume_mounts` entries a
//! hypeman host would write for them. `overlay` attaches the image
//! read-only plus a fresh writable disk made in the run's work folder, so
//! the image stays byte-identical and the writes end with the run.

use anyhow::{bail, Context, Result};
use guest_contract::config::VolumeMount;
use guest_contract::volumes::normalise;
use host_sysmgr::disks;
use host_sysmgr::vmm::Disk;
use std::path::{Path, PathBuf};

/// Disks before the volumes: root, overlay, config.
/// vdd: the first disk after root, overlay and config.
pub const FIRST_VOLUME_DISK: usize = 3;
/// virtio-blk names run out at /dev/vdz.
const MAX_DISKS: usize = 26;
/// Size of an overlay volume's writable disk, MiB (sparse).
const OVERLAY_DISK_MIB: u64 = 1024;

/// How a volume is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read-only.
    Ro,
    /// Read-write: the image itself changes.
    Rw,
    /// Read-only image + a throw-away writable layer.
    Overlay,
}

/// One `--volume`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeArg {
    /// The disk image.
    pub image: PathBuf,
    /// Mount point in the guest.
    pub path: String,
    /// How.
    pub mode: Mode,
}

/// Parses `IMG:/PATH[:ro|rw|overlay]` (default rw).
pub fn parse(arg: &str) -> Result<VolumeArg> {
    let Some((image, rest)) = arg.split_once(":/") else {
        bail!("--volume {arg:?}: expected IMG:/PATH[:ro|rw|overlay]");
    };
    let rest = format!("/{rest}");
    let (path, mode) = match rest.rsplit_once(':') {
        Some((p, "ro")) => (p.to_string(), Mode::Ro),
        Some((p, "rw")) => (p.to_string(), Mode::Rw),
        Some((p, "overlay")) => (p.to_string(), Mode::Overlay),
        Some((_, m)) => bail!("--volume {arg:?}: mode {m:?} is not ro, rw or overlay"),
        None => (rest, Mode::Rw),
    };
    if image.is_empty() {
        bail!("--volume {arg:?}: no image");
    }
    let path = normalise(&path).map_err(|e| anyhow::anyhow!("--volume {arg:?}: {e}"))?;
    Ok(VolumeArg {
        image: PathBuf::from(image),
        path,
        mode,
    })
}

fn device(index: usize) -> Result<String> {
    if index >= MAX_DISKS {
        bail!("too many volumes: virtio disks end at /dev/vdz");
    }
    let letter = char::from(b'a' + index as u8);
    Ok(format!("/dev/vd{letter}"))
}

/// The disks to attach after the config disk and the config entries for
/// `vols`; overlay layers are created in `work`.
pub fn attach(
    vols: &[VolumeArg],
    work: &Path,
    first: usize,
) -> Result<(Vec<Disk>, Vec<VolumeMount>)> {
    let mut attached = Vec::new();
    let mut mounts = Vec::new();
    for (i, v) in vols.iter().enumerate() {
        let meta = std::fs::metadata(&v.image)
            .with_context(|| format!("--volume {}", v.image.display()))?;
        if !meta.is_file() {
            bail!("--volume {}: not a disk image file", v.image.display());
        }
        let dev = device(first + attached.len())?;
        let read_only = v.mode != Mode::Rw;
        attached.push(Disk {
            path: v.image.clone(),
            read_only,
        });
        let (mode, overlay_device) = match v.mode {
            Mode::Ro => ("ro", None),
            Mode::Rw => ("rw", None),
            Mode::Overlay => {
                let upper = work.join(format!("volume-{i}-overlay.img"));
                disks::overlay_disk(&upper, OVERLAY_DISK_MIB)?;
                let od = device(first + attached.len())?;
                attached.push(Disk {
                    path: upper,
                    read_only: false,
                });
                ("overlay", Some(od))
            }
        };
        mounts.push(VolumeMount {
            device: dev,
            path: v.path.clone(),
            mode: Some(mode.into()),
            overlay_device,
            ..VolumeMount::default()
        });
    }
    Ok((attached, mounts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_arguments() {
        let v = parse("data.img:/srv/data:ro").unwrap();
        assert_eq!(
            (v.image, v.path, v.mode),
            ("data.img".into(), "/srv/data".into(), Mode::Ro)
        );
        assert_eq!(parse("/x/a:b.img:/d").unwrap().mode, Mode::Rw);
        assert_eq!(
            parse("/x/a:b.img:/d").unwrap().image,
            PathBuf::from("/x/a:b.img")
        );
        assert_eq!(parse("i:/c/:overlay").unwrap().path, "/c");
        for bad in [
            "data.img",
            "i:/d:xx",
            ":/d",
            "i:/",
            "i:/a/../b",
            "i:/proc/x",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--volume {bad:?}")), "{e}");
        }
    }

    #[test]
    fn devices_follow_the_config_disk_and_overlays_get_a_layer() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("v.img");
        std::fs::write(&img, b"x").unwrap();
        let mut vols = vec![
            parse(&format!("{}:/a:ro", img.display())).unwrap(),
            parse(&format!("{}:/b:overlay", img.display())).unwrap(),
            parse(&format!("{}:/c", img.display())).unwrap(),
        ];
        let (d, m) = attach(&vols, dir.path(), FIRST_VOLUME_DISK).unwrap();
        let devs: Vec<(&str, Option<&str>)> = m
            .iter()
            .map(|m| (m.device.as_str(), m.overlay_device.as_deref()))
            .collect();
        assert_eq!(
            devs,
            [
                ("/dev/vdd", None),
                ("/dev/vde", Some("/dev/vdf")),
                ("/dev/vdg", None)
            ]
        );
        assert_eq!(
            d.iter().map(|d| d.read_only).collect::<Vec<_>>(),
            [true, true, false, false]
        );
        assert!(d[2].path.starts_with(dir.path()));
        vols[0].image = dir.path().into();
        assert!(attach(&vols, dir.path(), FIRST_VOLUME_DISK)
            .unwrap_err()
            .to_string()
            .contains("not a disk image file"));
        vols[0].image = img;
        let many: Vec<VolumeArg> = (0..24).map(|_| vols[0].clone()).collect();
        assert!(attach(&many, dir.path(), FIRST_VOLUME_DISK)
            .unwrap_err()
            .to_string()
            .contains("too many volumes"));
    }
}
