//! Registry credentials from the usual Docker config file
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`): an `auths`
//! entry for the registry with `auth` (base64 `user:password`),
//! `username`/`password`, or an `identitytoken`/`registrytoken` (bearer).
//! Credential helpers (`credsStore`) are not run.

use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Largest config file read.
const MAX_CONFIG: u64 = 1 << 20;

/// Credentials for one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// HTTP basic (the registry may trade them for a token).
    Basic(String, String),
    /// A bearer token.
    Bearer(String),
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Deserialize, Default)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

/// The Docker config file's path.
pub fn config_path() -> Option<PathBuf> {
    let env = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("DOCKER_CONFIG")
        .map(|d| d.join("config.json"))
        .or_else(|| env("HOME").map(|h| h.join(".docker/config.json")))
}

/// `https://host:port/v1/` → `host:port`; Docker Hub's names → `docker.io`.
fn normalize(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        _ => host,
    }
}

/// Credentials for `registry` in the config text, if any.
pub fn parse(text: &[u8], registry: &str) -> Option<Credentials> {
    let file: ConfigFile = serde_json::from_slice(text).ok()?;
    let want = normalize(registry);
    // A key that names no host (`https://`) matches nothing.
    if want.is_empty() {
        return None;
    }
    let entry = file.auths.iter().find(|(k, _)| normalize(k) == want)?.1;
    if let Some(t) = entry
        .registrytoken
        .as_ref()
        .or(entry.identitytoken.as_ref())
        .filter(|t| !t.is_empty())
    {
        return Some(Credentials::Bearer(t.clone()));
    }
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Some(Credentials::Basic(u.clone(), p.clone()));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(entry.auth.as_ref()?.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some(Credentials::Basic(u.to_string(), p.to_string()))
}

/// Credentials for `registry` from the Docker config file, if any.
pub fn lookup(registry: &str) -> Option<Credentials> {
    use std::io::Read;
    let path = config_path()?;
    let mut text = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_CONFIG)
        .read_to_end(&mut text)
        .ok()?;
    parse(&text, registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_the_docker_config() {
        let text = br#"{"auths": {
            "https://127.0.0.1:5000/v1/": {"auth": "dXNlcjpwYTpzcw=="},
            "reg.example.org": {"username": "u", "password": "p"},
            "https://index.docker.io/v1/": {"identitytoken": "tok"},
            "broken.example.org": {"auth": "!!!"}
        }}"#;
        assert_eq!(
            parse(text, "127.0.0.1:5000"),
            Some(Credentials::Basic("user".into(), "pa:ss".into()))
        );
        assert_eq!(
            parse(text, "REG.example.org"),
            Some(Credentials::Basic("u".into(), "p".into()))
        );
        assert_eq!(
            parse(text, "docker.io"),
            Some(Credentials::Bearer("tok".into()))
        );
        assert_eq!(parse(text, "broken.example.org"), None);
        assert_eq!(parse(text, "other:5000"), None);
        assert_eq!(parse(b"not json", "x"), None);
        let hostless = br#"{"auths": {"https://": {"auth": "dXNlcjpwYXNz"}}}"#;
        assert_eq!(parse(hostless, ""), None);
    }
}
