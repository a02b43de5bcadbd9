//! The volumes a config asks for (`volume_mounts`), checked: which device
//! goes where, how. Each entry is judged on its own: one that init cannot
//! use becomes a [`VolumeError`] (one ERROR line at boot) and the others
//! still mount, as a hypeman host's init does.
//!
//! Modes: `ro` (read-only; ext4 without journal replay), `rw`, `overlay`
//! (the device read-only at `/mnt/vol-base-<dev>`, the `overlay_device`
//! at `/mnt/vol-overlay-<dev>` holding `upper/` and `work/`, an overlayfs
//! of both at the path). Any other mode is `rw`, except `nfs`, which no
//! host ships and init does not serve.

use crate::config::{Config, VolumeMount};

/// How a volume is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeMode {
    /// Read-only.
    ReadOnly,
    /// Read-write.
    ReadWrite,
    /// Read-only base + writable overlay disk.
    Overlay {
        /// The disk holding `upper/` and `work/`.
        overlay_device: String,
    },
}

/// One checked volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Block device (`/dev/vdd`).
    pub device: String,
    /// Mount point in the new root, normalised (`/data/x`).
    pub path: String,
    /// How.
    pub mode: VolumeMode,
}

/// A volume entry init cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("volume {index} ({path:?}): {reason}")]
pub struct VolumeError {
    /// Its position in `volume_mounts`.
    pub index: usize,
    /// Its path as given.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

impl Volume {
    /// `/mnt/vol-base-<dev>`: where an overlay volume's base is mounted.
    pub fn base_dir(&self) -> String {
        format!("/mnt/vol-base-{}", dev_name(&self.device))
    }

    /// `/mnt/vol-overlay-<dev>`: where an overlay volume's writable disk is mounted.
    pub fn overlay_dir(&self) -> String {
        format!("/mnt/vol-overlay-{}", dev_name(&self.device))
    }
}

/// A device path's name below /dev, `/` as `-` (`/dev/vdd` → `vdd`,
/// `/dev/disk/by-id/x` → `disk-by-id-x`): two devices never share one.
fn dev_name(device: &str) -> String {
    device
        .strip_prefix("/dev/")
        .unwrap_or(device)
        .replace('/', "-")
}

/// The volumes of `config`, and the entries refused.
pub fn plan(config: &Config) -> (Vec<Volume>, Vec<VolumeError>) {
    let mut volumes: Vec<Volume> = Vec::new();
    let mut errors = Vec::new();
    for (index, m) in config.volume_mounts.iter().flatten().enumerate() {
        let fail = |reason: String| VolumeError {
            index,
            path: m.path.clone(),
            reason,
        };
        match check(m) {
            Ok(v) if volumes.iter().any(|o| o.path == v.path) => errors.push(fail(format!(
                "{} is already a volume's mount point",
                v.path
            ))),
            Ok(v) => volumes.push(v),
            Err(reason) => errors.push(fail(reason)),
        }
    }
    // Parents before children (`/data`, then `/data/cache`), whatever the
    // config's order, so no volume hides another.
    volumes.sort_by_key(|v| v.path.matches('/').count());
    (volumes, errors)
}

fn check(m: &VolumeMount) -> Result<Volume, String> {
    let device = check_device(&m.device)?;
    let path = normalise(&m.path)?;
    let mode = match m.mode.as_deref() {
        Some("ro") => VolumeMode::ReadOnly,
        Some("overlay") => {
            let od = m
                .overlay_device
                .as_deref()
                .filter(|d| !d.is_empty())
                .ok_or("overlay mode needs overlay_device")?;
            let overlay_device = check_device(od)?;
            if overlay_device == device {
                return Err("overlay_device is the volume's own device".into());
            }
            VolumeMode::Overlay { overlay_device }
        }
        Some("nfs") => return Err("nfs volumes are not supported".into()),
        _ => VolumeMode::ReadWrite,
    };
    Ok(Volume { device, path, mode })
}

/// A block device under `/dev`: `/dev/` then a name of letters, digits,
/// `-`, `_` and `/` without empty, `.` or `..` parts.
fn check_device(device: &str) -> Result<String, String> {
    let rest = device
        .strip_prefix("/dev/")
        .ok_or_else(|| format!("device {device:?} is not under /dev"))?;
    let part_ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if rest.len() > 200 || !rest.split('/').all(part_ok) {
        return Err(format!("device {device:?} is not a device path"));
    }
    Ok(device.to_string())
}

/// An absolute path below `/` with no `..` (`.` and repeated slashes are
/// dropped); not `/` itself, nothing under `/proc`, `/sys` or `/dev`.
pub fn normalise(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} is not absolute"));
    }
    if path.len() > 4096 || path.contains('\0') {
        return Err("path is too long or holds a NUL byte".into());
    }
    let mut parts = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => return Err(format!("path {path:?} leaves its folder (..)")),
            p => parts.push(p),
        }
    }
    match parts.first() {
        None => Err("path / would hide the whole root".into()),
        Some(&("proc" | "sys" | "dev")) => Err(format!("path {path:?} is a kernel filesystem")),
        _ => Ok(format!("/{}", parts.join("/"))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn planned(json: &str) -> (Vec<Volume>, Vec<VolumeError>) {
        let config = crate::config::parse_config(json.as_bytes()).unwrap().config;
        plan(&config)
    }

    #[test]
    fn modes_as_hypeman_names_them() {
        let (v, e) = planned(
            r#"{"volume_mounts":[
                {"device":"/dev/vdd","path":"/data","mode":"ro"},
                {"device":"/dev/vde","path":"/srv//rw/./x/","mode":"rw"},
                {"device":"/dev/vdf","path":"/cache","mode":"overlay","overlay_device":"/dev/vdg"},
                {"device":"/dev/vdh","path":"/odd","mode":"weird"},
                {"device":"/dev/vdi","path":"/none"}]}"#,
        );
        assert!(e.is_empty(), "{e:?}");
        let at = |p: &str| v.iter().find(|x| x.path == p).unwrap();
        assert_eq!(at("/data").mode, VolumeMode::ReadOnly);
        assert_eq!(at("/srv/rw/x").mode, VolumeMode::ReadWrite);
        let cache = at("/cache");
        assert_eq!(
            cache.mode,
            VolumeMode::Overlay {
                overlay_device: "/dev/vdg".into()
            }
        );
        assert_eq!(
            (cache.base_dir(), cache.overlay_dir()),
            ("/mnt/vol-base-vdf".into(), "/mnt/vol-overlay-vdf".into())
        );
        assert_eq!(
            at("/odd").mode,
            VolumeMode::ReadWrite,
            "an unknown mode is rw"
        );
        assert_eq!(at("/none").mode, VolumeMode::ReadWrite);
    }

    #[test]
    fn bad_entries_are_refused_one_by_one() {
        let (v, e) = planned(
            r#"{"volume_mounts":[
                {"device":"/dev/vdd","path":"/data/../etc","mode":"rw"},
                {"device":"/dev/vde","path":"data","mode":"rw"},
                {"device":"/tmp/x","path":"/x","mode":"rw"},
                {"device":"/dev/../sda","path":"/y","mode":"rw"},
                {"device":"/dev/vdf","path":"/","mode":"rw"},
                {"device":"/dev/vdf","path":"/proc/x","mode":"rw"},
                {"device":"/dev/vdf","path":"/c","mode":"overlay"},
                {"device":"/dev/vdf","path":"/c","mode":"overlay","overlay_device":"/dev/vdf"},
                {"device":"","path":"/n","mode":"nfs"},
                {"device":"/dev/vdf","path":"/ok","mode":"ro"},
                {"device":"/dev/vdg","path":"/ok/","mode":"ro"}]}"#,
        );
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].path, "/ok");
        let (nested, _) = planned(
            r#"{"volume_mounts":[{"device":"/dev/vdd","path":"/data/cache"},{"device":"/dev/vde","path":"/data"},
                {"device":"/dev/disk/by-id/x","path":"/z","mode":"overlay","overlay_device":"/dev/vdf"}]}"#,
        );
        let order: Vec<&str> = nested.iter().map(|v| v.path.as_str()).collect();
        assert_eq!(order, ["/data", "/z", "/data/cache"], "parents first");
        assert_eq!(nested[1].base_dir(), "/mnt/vol-base-disk-by-id-x");
        let reasons: Vec<usize> = e.iter().map(|e| e.index).collect();
        assert_eq!(reasons, [0, 1, 2, 3, 4, 5, 6, 7, 8, 10]);
        assert!(
            e[0].to_string()
                .starts_with("volume 0 (\"/data/../etc\"): "),
            "{}",
            e[0]
        );
    }
}
