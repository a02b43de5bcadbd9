//! Sharing kernels and initrds through an OCI registry: `publish` pushes an
//! installed artifact (its files as layers, its record as the config), `pull`
//! installs one. Every blob's sha256 is checked against the manifest as it
//! arrives (and once more on disk), an initrd's signature must come from a
//! trusted key, and the result is staged and moved into place at once.
//! Plain HTTP is used only for a loopback registry or when asked.

use super::error::{Result, SystemError};
use super::initrd;
use super::install::Staged;
use super::layout::check_component;
use super::record::{self, FileRecord, KernelRecord, Trust};
use super::state::Kind;
use super::store::Store;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::collections::BTreeMap;
use std::path::Path;

/// Config media type of a published kernel (the config is its record).
pub const KERNEL_CONFIG: &str = "application/vnd.guestinit.kernel.config.v1+json";
/// Config media type of a published initrd.
pub const INITRD_CONFIG: &str = "application/vnd.guestinit.initrd.config.v1+json";
/// Media type of every file layer.
pub const FILE_LAYER: &str = "application/vnd.guestinit.file.v1";
const TITLE: &str = "org.opencontainers.image.title";
/// Largest config blob read.
const MAX_CONFIG: i64 = 1 << 20;

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Plain HTTP even for a registry that is not on loopback.
    pub insecure: bool,
    /// Credentials (anonymous when `None`).
    pub basic: Option<(String, String)>,
}

/// Environment variables holding registry credentials (basic auth).
pub const USER_ENV: &str = "GUESTINIT_REGISTRY_USER";
/// See [`USER_ENV`].
pub const PASSWORD_ENV: &str = "GUESTINIT_REGISTRY_PASSWORD";

impl Access {
    /// Credentials from the environment, when both variables are set.
    pub fn from_env(insecure: bool) -> Self {
        let basic = match (std::env::var(USER_ENV), std::env::var(PASSWORD_ENV)) {
            (Ok(u), Ok(p)) if !u.is_empty() => Some((u, p)),
            _ => None,
        };
        Access { insecure, basic }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct InitrdConfig {
    kind: String,
    arch: String,
    build: String,
}

impl Store {
    /// Pushes an installed kernel or initrd to `reference`; returns the
    /// manifest's URL.
    pub fn publish(
        &self,
        kind: Kind,
        id: &str,
        reference: &str,
        access: &Access,
    ) -> Result<String> {
        let r = parse_ref(reference)?;
        let (files, config) = match kind {
            Kind::Kernel => {
                self.verify_kernel(id)?;
                let rec = self.kernel_record(id)?;
                let dir = self.layout().kernel_dir(id, self.arch());
                let cfg = json(&rec, KERNEL_CONFIG)?;
                (
                    load_files(&dir, rec.files().iter().map(|f| f.file.clone()))?,
                    cfg,
                )
            }
            Kind::Initrd => {
                check_component("initrd build", id)?;
                initrd::verify(self.layout(), self.arch(), id)?;
                let dir = self.layout().initrd_dir(self.arch(), id);
                let names = [initrd::IMAGE, initrd::MANIFEST, initrd::SIGNATURE].map(String::from);
                let cfg = InitrdConfig {
                    kind: "initrd".into(),
                    arch: self.arch().into(),
                    build: id.into(),
                };
                (
                    load_files(&dir, names.into_iter())?,
                    json(&cfg, INITRD_CONFIG)?,
                )
            }
        };
        let (client, auth) = client(&r, access);
        block_on(async {
            client
                .push(&r, &files, config, &auth, None)
                .await
                .map(|resp| resp.manifest_url)
                .map_err(|e| registry_err(reference, e))
        })?
    }

    /// Installs the kernel or initrd published at `reference`; returns its
    /// kind and id.
    pub fn pull_artifact(&self, reference: &str, access: &Access) -> Result<(Kind, String)> {
        let r = parse_ref(reference)?;
        let (client, auth) = client(&r, access);
        let lock = self.lock()?;
        let stage = Staged::new(&self.layout().staging())?;
        let (manifest, digest) = block_on(client.pull_image_manifest(&r, &auth))?
            .map_err(|e| registry_err(reference, e))?;
        let config = pull_config(&client, &r, &manifest.config, reference)?;
        for layer in &manifest.layers {
            pull_layer(&client, &r, layer, stage.path(), reference)?;
        }
        let source = format!("{}@{digest}", r.whole());
        match manifest.config.media_type.as_str() {
            KERNEL_CONFIG => self.install_pulled_kernel(&lock, stage, &config, source),
            INITRD_CONFIG => self.install_pulled_initrd(stage, &config),
            other => Err(SystemError::Refused(format!(
                "{reference}: config media type {other:?} is not a guestinit kernel or initrd"
            ))),
        }
    }

    fn install_pulled_kernel(
        &self,
        lock: &super::state::Lock,
        stage: Staged,
        config: &[u8],
        source: String,
    ) -> Result<(Kind, String)> {
        let mut rec: KernelRecord =
            serde_json::from_slice(config).map_err(|source| SystemError::Json {
                path: "kernel config blob".into(),
                source,
            })?;
        check_component("kernel version", &rec.version)?;
        if rec.arch != self.arch() {
            return Err(SystemError::Refused(format!(
                "kernel {} is for {}, not {}",
                rec.version,
                rec.arch,
                self.arch()
            )));
        }
        for f in rec.files() {
            check_file(stage.path(), &f)?;
        }
        rec.trust = Trust::Registry;
        rec.source = source;
        rec.installed_at = record::now();
        let dest = self.layout().kernel_dir(&rec.version, self.arch());
        if self.verify_kernel(&rec.version).is_ok() {
            return Ok((Kind::Kernel, rec.version));
        }
        self.commit_kernel(stage, &rec, &dest)?;
        self.default_if_none(lock, &rec.version)?;
        Ok((Kind::Kernel, rec.version))
    }

    fn install_pulled_initrd(&self, stage: Staged, config: &[u8]) -> Result<(Kind, String)> {
        let cfg: InitrdConfig =
            serde_json::from_slice(config).map_err(|source| SystemError::Json {
                path: "initrd config blob".into(),
                source,
            })?;
        check_component("initrd build", &cfg.build)?;
        if cfg.arch != self.arch() {
            return Err(SystemError::Refused(format!(
                "initrd {} is for {}, not {}",
                cfg.build,
                cfg.arch,
                self.arch()
            )));
        }
        let dest = self.layout().initrd_dir(self.arch(), &cfg.build);
        if initrd::verify(self.layout(), self.arch(), &cfg.build).is_ok() {
            return Ok((Kind::Initrd, cfg.build));
        }
        // Verified in the staging folder first: signature of a trusted key,
        // image against the manifest.
        initrd::verify_dir(self.layout(), stage.path())?;
        if dest.exists() {
            super::install::remove_tree(&dest, &self.layout().staging())?;
        }
        stage.commit(&dest)?;
        initrd::verify(self.layout(), self.arch(), &cfg.build)?;
        Ok((Kind::Initrd, cfg.build))
    }
}

pub(crate) fn parse_ref(reference: &str) -> Result<Reference> {
    reference
        .parse::<Reference>()
        .map_err(|e| registry_err(reference, e))
}

pub(crate) fn registry_err(
    reference: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> SystemError {
    SystemError::Registry {
        reference: reference.to_string(),
        source: Box::new(e),
    }
}

fn is_loopback(registry: &str) -> bool {
    // HOST, HOST:PORT, [V6] or [V6]:PORT.
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => registry.split(':').next().unwrap_or_default(),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub(crate) fn client(r: &Reference, access: &Access) -> (Client, RegistryAuth) {
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let protocol = if access.insecure || is_loopback(r.resolve_registry()) {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    let client = Client::new(ClientConfig {
        protocol,
        ..ClientConfig::default()
    });
    // $GUESTINIT_REGISTRY_USER/_PASSWORD first, then the Docker config file.
    let auth = match &access.basic {
        Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
        None => match crate::image::auth::lookup(r.resolve_registry()) {
            Some(crate::image::auth::Credentials::Basic(u, p)) => RegistryAuth::Basic(u, p),
            Some(crate::image::auth::Credentials::Bearer(t)) => RegistryAuth::Bearer(t),
            None => RegistryAuth::Anonymous,
        },
    };
    (client, auth)
}

pub(crate) fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SystemError::io("tokio runtime", e))?;
    Ok(rt.block_on(f))
}

fn json<T: serde::Serialize>(v: &T, media_type: &str) -> Result<Config> {
    let data = serde_json::to_vec(v).map_err(|source| SystemError::Json {
        path: "config".into(),
        source,
    })?;
    Ok(Config::new(data, media_type.to_string(), None))
}

fn load_files(dir: &Path, names: impl Iterator<Item = String>) -> Result<Vec<ImageLayer>> {
    names
        .map(|name| {
            let path = dir.join(&name);
            let data = std::fs::read(&path).map_err(|e| SystemError::io(&path, e))?;
            let notes = BTreeMap::from([(TITLE.to_string(), name)]);
            Ok(ImageLayer::new(data, FILE_LAYER.to_string(), Some(notes)))
        })
        .collect()
}

fn pull_config(
    client: &Client,
    r: &Reference,
    d: &OciDescriptor,
    reference: &str,
) -> Result<Vec<u8>> {
    if d.size > MAX_CONFIG || d.size < 0 {
        return Err(SystemError::TooLarge {
            what: format!("{reference}: config"),
            limit: MAX_CONFIG as u64,
        });
    }
    let mut out = Vec::new();
    block_on(client.pull_blob(r, d, &mut out))?.map_err(|e| registry_err(reference, e))?;
    Ok(out)
}

/// Pulls one file layer into `stage` under its title (a plain file name).
fn pull_layer(
    client: &Client,
    r: &Reference,
    d: &OciDescriptor,
    stage: &Path,
    reference: &str,
) -> Result<()> {
    let name = d
        .annotations
        .as_ref()
        .and_then(|a| a.get(TITLE))
        .cloned()
        .unwrap_or_default();
    check_component("layer title", &name)?;
    if d.media_type != FILE_LAYER || d.size < 0 || d.size as u64 > super::store::MAX_KERNEL {
        return Err(SystemError::Refused(format!(
            "{reference}: layer {name:?} is not a guestinit file"
        )));
    }
    let path = stage.join(&name);
    block_on(async {
        let file = tokio::fs::File::create_new(&path)
            .await
            .map_err(|e| SystemError::io(&path, e))?;
        client
            .pull_blob(r, d, file)
            .await
            .map_err(|e| registry_err(reference, e))
    })??;
    let want = d.digest.strip_prefix("sha256:").unwrap_or_default();
    check_file(
        stage,
        &FileRecord {
            file: name,
            sha256: want.to_string(),
            size: d.size as u64,
        },
    )
}

/// A staged file must match its record (or its descriptor) exactly.
fn check_file(dir: &Path, f: &FileRecord) -> Result<()> {
    let path = dir.join(&f.file);
    let (sha256, size) = super::install::sha256_file(&path)?;
    if sha256 != f.sha256 || size != f.size {
        return Err(SystemError::Digest {
            what: path.display().to_string(),
            expected: format!("{} ({} bytes)", f.sha256, f.size),
            actual: format!("{sha256} ({size} bytes)"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries() {
        for r in [
            "127.0.0.1:5000",
            "localhost:5000",
            "localhost",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "registry.example.org",
            "10.0.0.1:5000",
            "127.0.0.1.example.org",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }
}
