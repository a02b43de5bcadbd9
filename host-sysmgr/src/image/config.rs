//! The image config (`config` of an OCI image config blob) turned into the
//! guest's command, environment, working folder and user, as a hypeman host
//! derives them, with `docker run`'s overrides: `--entrypoint` replaces the
//! entrypoint (and drops the image's cmd), a trailing command replaces cmd,
//! `--env` adds or replaces variables, `--workdir` and `--user` replace.

use crate::system::error::{Result, SystemError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The part of an image config a VM needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// ENTRYPOINT.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// CMD.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// ENV (`KEY=VALUE`).
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// WORKDIR.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// USER.
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<RunConfig>,
}

/// Reads an image config blob (at most 4 MiB) and checks it is for Linux on
/// this host's architecture.
pub fn read(path: &Path) -> Result<RunConfig> {
    let c: ConfigFile = crate::system::record::read_json(path)?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    if (!c.os.is_empty() && c.os != "linux")
        || (!c.architecture.is_empty() && c.architecture != arch)
    {
        return Err(SystemError::Refused(format!(
            "the image is for {}/{}, not linux/{arch}",
            c.os, c.architecture
        )));
    }
    Ok(c.config.unwrap_or_default())
}

/// What the user typed on top of the image.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--entrypoint` (an empty string clears it).
    pub entrypoint: Option<String>,
    /// The trailing command (empty: the image's cmd).
    pub cmd: Vec<String>,
    /// `--env KEY=VALUE`.
    pub env: BTreeMap<String, String>,
    /// `--workdir`.
    pub workdir: Option<String>,
    /// `--user`.
    pub user: Option<String>,
}

/// The guest's side of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Derived {
    /// config.json `entrypoint`.
    pub entrypoint: Vec<String>,
    /// config.json `cmd`.
    pub cmd: Vec<String>,
    /// config.json `env`.
    pub env: BTreeMap<String, String>,
    /// config.json `workdir`.
    pub workdir: String,
    /// config.json `user` (None: root).
    pub user: Option<String>,
    /// The command is an init system (`/sbin/init`, systemd): a hypeman host
    /// sets `init_mode: systemd` for it.
    pub systemd: bool,
}

/// Commands a hypeman host takes for systemd.
const SYSTEMD: &[&str] = &[
    "/sbin/init",
    "/lib/systemd/systemd",
    "/usr/lib/systemd/systemd",
    "/usr/sbin/init",
];

/// Image config + overrides → the guest's config fields.
pub fn derive(image: &RunConfig, o: &Overrides) -> Derived {
    let (entrypoint, image_cmd) = match &o.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.clone()], Vec::new()),
        None => (
            image.entrypoint.clone().unwrap_or_default(),
            image.cmd.clone().unwrap_or_default(),
        ),
    };
    let cmd = if o.cmd.is_empty() {
        image_cmd
    } else {
        o.cmd.clone()
    };
    let mut env: BTreeMap<String, String> = image
        .env
        .iter()
        .flatten()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .filter(|(k, _)| !k.is_empty())
        .collect();
    env.extend(o.env.clone());
    let workdir = o
        .workdir
        .clone()
        .or_else(|| image.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    let user = o
        .user
        .clone()
        .or_else(|| image.user.clone())
        .filter(|u| !u.is_empty());
    let first = entrypoint
        .first()
        .or(cmd.first())
        .map(String::as_str)
        .unwrap_or("");
    Derived {
        systemd: SYSTEMD.contains(&first),
        entrypoint,
        cmd,
        env,
        workdir,
        user,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> RunConfig {
        RunConfig {
            entrypoint: Some(vec!["/bin/app".into()]),
            cmd: Some(vec!["--serve".into()]),
            env: Some(vec!["PATH=/bin".into(), "A=1".into(), "BAD".into()]),
            working_dir: Some("/srv".into()),
            user: Some("1000:1000".into()),
        }
    }

    #[test]
    fn the_image_config_with_docker_overrides() {
        let d = derive(&image(), &Overrides::default());
        assert_eq!(
            (d.entrypoint.clone(), d.cmd.clone()),
            (vec!["/bin/app".to_string()], vec!["--serve".to_string()])
        );
        assert_eq!(d.env.get("A").map(String::as_str), Some("1"));
        assert_eq!(d.env.len(), 2);
        assert_eq!(
            (d.workdir.as_str(), d.user.as_deref()),
            ("/srv", Some("1000:1000"))
        );
        let o = Overrides {
            cmd: vec!["--check".into()],
            env: BTreeMap::from([("A".into(), "2".into())]),
            workdir: Some("/tmp".into()),
            user: Some("root".into()),
            ..Overrides::default()
        };
        let d = derive(&image(), &o);
        assert_eq!(d.cmd, vec!["--check"]);
        assert_eq!(d.entrypoint, vec!["/bin/app"]);
        assert_eq!(d.env["A"], "2");
        assert_eq!(
            (d.workdir.as_str(), d.user.as_deref()),
            ("/tmp", Some("root"))
        );
        let d = derive(
            &image(),
            &Overrides {
                entrypoint: Some("/bin/sh".into()),
                ..Overrides::default()
            },
        );
        assert_eq!(
            (d.entrypoint, d.cmd),
            (vec!["/bin/sh".to_string()], Vec::<String>::new())
        );
    }

    #[test]
    fn systemd_images_are_recognised() {
        let img = RunConfig {
            cmd: Some(vec!["/sbin/init".into()]),
            ..RunConfig::default()
        };
        assert!(derive(&img, &Overrides::default()).systemd);
        assert!(!derive(&image(), &Overrides::default()).systemd);
    }
}
