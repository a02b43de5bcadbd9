//! `/config.json`: the instance configuration a hypeman host writes on the
//! config disk.
//!
//! Every key may be missing or `null` (both mean absent). Unknown keys are
//! tolerated and reported in [`ParsedConfig::unknown_keys`]. Besides hypeman's
//! keys, a few superset keys are accepted (see the crate README).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// Largest config file accepted, in bytes.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// The superset schema version this crate writes and understands.
pub const SCHEMA_VERSION: u32 = 1;

/// PATH added to the app environment when the config has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// HOME added to the app environment when the config has none.
pub const DEFAULT_HOME: &str = "/root";

const TOP_KEYS: &[&str] = &[
    "entrypoint",
    "cmd",
    "workdir",
    "env",
    "network_enabled",
    "guest_ip",
    "guest_cidr",
    "guest_gw",
    "guest_dns",
    "volume_mounts",
    "init_mode",
    "skip_kernel_headers",
    "skip_guest_agent",
    "egress_proxy",
    "enable_rosetta",
    "schema_version",
    "hostname",
    "dns_servers",
    "search_domains",
    "mtu",
    "user",
    "kernel_modules",
    "sysctls",
    "guest_ipv6",
    "guest_gw6",
    "guest_mac",
];

const VOLUME_KEYS: &[&str] = &[
    "device",
    "path",
    "mode",
    "overlay_device",
    "nfs_host",
    "nfs_export",
];

const PROXY_KEYS: &[&str] = &["enabled", "proxy_url", "ca_cert_pem"];

/// The instance configuration. Field order is the order a hypeman host writes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Image ENTRYPOINT or its override.
    pub entrypoint: Option<Vec<String>>,
    /// Image CMD or its override; argv is entrypoint ++ cmd.
    pub cmd: Option<Vec<String>>,
    /// Working directory of the app ("/" when missing or empty).
    pub workdir: Option<String>,
    /// Full environment of the app.
    pub env: Option<BTreeMap<String, String>>,
    /// Configure eth0.
    pub network_enabled: Option<bool>,
    /// Static IPv4 address of the guest.
    pub guest_ip: Option<String>,
    /// Prefix length of `guest_ip`.
    pub guest_cidr: Option<u8>,
    /// IPv4 default gateway.
    pub guest_gw: Option<String>,
    /// One DNS server for /etc/resolv.conf.
    pub guest_dns: Option<String>,
    /// Extra block devices or NFS exports to mount in the new root.
    pub volume_mounts: Option<Vec<VolumeMount>>,
    /// exec (default) or systemd.
    pub init_mode: Option<InitMode>,
    /// Skip installing kernel headers.
    pub skip_kernel_headers: Option<bool>,
    /// Skip starting the guest agent.
    pub skip_guest_agent: Option<bool>,
    /// Egress proxy whose CA goes into the image trust store.
    pub egress_proxy: Option<EgressProxy>,
    /// Rosetta for x86_64 binaries on Apple-silicon hosts (virtiofs tag
    /// `rosetta` + binfmt_misc); nothing to do on an x86_64 guest. Written
    /// only when set, as the newest hypeman omits it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_rosetta: Option<bool>,
    /// Superset: schema version of this file ([`SCHEMA_VERSION`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
    /// Superset: guest hostname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Superset: DNS servers, after `guest_dns`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_servers: Option<Vec<String>>,
    /// Superset: DNS search domains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_domains: Option<Vec<String>>,
    /// Superset: MTU of eth0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Superset: user to run the app as (`uid[:gid]` or a name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Superset: extra kernel modules to load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_modules: Option<Vec<String>>,
    /// Superset: sysctls to set (`net.ipv4.ip_forward` -> `1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sysctls: Option<BTreeMap<String, String>>,
    /// Superset: a static IPv6 address with its prefix (`2001:db8::15/64`),
    /// added without duplicate address detection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_ipv6: Option<String>,
    /// Superset: the IPv6 default gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_gw6: Option<String>,
    /// Superset: configure the interface with this MAC address instead of eth0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
}

/// One entry of `volume_mounts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeMount {
    /// Block device, e.g. `/dev/vdd` (empty for NFS).
    #[serde(deserialize_with = "null_as_default")]
    pub device: String,
    /// Mount point inside the new root.
    #[serde(deserialize_with = "null_as_default")]
    pub path: String,
    /// `ro`, `rw`, `overlay` or `nfs`; anything else is `rw`.
    pub mode: Option<String>,
    /// Writable disk holding `upper/` and `work/` for overlay mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlay_device: Option<String>,
    /// NFS server for nfs mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nfs_host: Option<String>,
    /// NFS export path for nfs mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nfs_export: Option<String>,
}

/// How a volume is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VolumeMode {
    /// ext4 `ro,noload`.
    ReadOnly,
    /// Read-write (also any unknown or missing mode).
    ReadWrite,
    /// Read-only base plus a writable overlay disk.
    Overlay,
    /// NFS v4 over TCP.
    Nfs,
}

impl VolumeMount {
    /// The mount mode; an unknown or missing mode is [`VolumeMode::ReadWrite`].
    pub fn mode_kind(&self) -> VolumeMode {
        match self.mode.as_deref() {
            Some("ro") => VolumeMode::ReadOnly,
            Some("overlay") => VolumeMode::Overlay,
            Some("nfs") => VolumeMode::Nfs,
            _ => VolumeMode::ReadWrite,
        }
    }
}

/// `egress_proxy`: a proxy whose CA certificate is installed in the image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EgressProxy {
    /// Whether the proxy is in use.
    pub enabled: Option<bool>,
    /// Proxy URL.
    pub proxy_url: Option<String>,
    /// PEM of the proxy's CA certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert_pem: Option<String>,
}

/// What PID 1 becomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitMode {
    /// init runs the app and powers off when it exits.
    #[default]
    Exec,
    /// init hands PID 1 to systemd.
    Systemd,
}

impl InitMode {
    /// The name used in config and sentinels: `exec` or `systemd`.
    pub fn as_str(self) -> &'static str {
        match self {
            InitMode::Exec => "exec",
            InitMode::Systemd => "systemd",
        }
    }
}

/// A parsed config plus the unknown keys it carried.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedConfig {
    /// The config.
    pub config: Config,
    /// Dotted paths of unknown keys (`"entrypiont"`, `"volume_mounts[0].foo"`), sorted.
    pub unknown_keys: Vec<String>,
}

/// Why a config was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file is over [`MAX_CONFIG_BYTES`].
    #[error("config is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Size of the file.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not valid JSON.
    #[error("malformed json at line {line} column {column}: {reason}")]
    Malformed {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        reason: String,
    },
    /// The document is not a JSON object.
    #[error("config is not a json object")]
    NotObject,
    /// A known key has the wrong type or value.
    #[error("key \"{key}\": {reason}")]
    InvalidValue {
        /// Dotted path of the key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Parses `config.json`: size check, JSON, then each known key on its own so
/// that an error names the key. Never panics.
pub fn parse_config(bytes: &[u8]) -> Result<ParsedConfig, ConfigError> {
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            size: bytes.len(),
            limit: MAX_CONFIG_BYTES,
        });
    }
    let value: Value = serde_json::from_slice(bytes).map_err(malformed)?;
    let Value::Object(obj) = value else {
        return Err(ConfigError::NotObject);
    };
    let mut unknown = Vec::new();
    let config = config_from_object(&obj, &mut unknown)?;
    unknown.sort();
    Ok(ParsedConfig {
        config,
        unknown_keys: unknown,
    })
}

fn malformed(e: serde_json::Error) -> ConfigError {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let reason = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
    ConfigError::Malformed {
        line: e.line(),
        column: e.column(),
        reason,
    }
}

fn config_from_object(
    obj: &Map<String, Value>,
    unknown: &mut Vec<String>,
) -> Result<Config, ConfigError> {
    collect_unknown(obj, TOP_KEYS, "", unknown);
    Ok(Config {
        entrypoint: field(obj, "entrypoint", "")?,
        cmd: field(obj, "cmd", "")?,
        workdir: field(obj, "workdir", "")?,
        env: field(obj, "env", "")?,
        network_enabled: field(obj, "network_enabled", "")?,
        guest_ip: field(obj, "guest_ip", "")?,
        guest_cidr: field(obj, "guest_cidr", "")?,
        guest_gw: field(obj, "guest_gw", "")?,
        guest_dns: field(obj, "guest_dns", "")?,
        volume_mounts: volume_mounts(obj, unknown)?,
        init_mode: field(obj, "init_mode", "")?,
        skip_kernel_headers: field(obj, "skip_kernel_headers", "")?,
        skip_guest_agent: field(obj, "skip_guest_agent", "")?,
        egress_proxy: egress_proxy(obj, unknown)?,
        enable_rosetta: field(obj, "enable_rosetta", "")?,
        schema_version: field(obj, "schema_version", "")?,
        hostname: field(obj, "hostname", "")?,
        dns_servers: field(obj, "dns_servers", "")?,
        search_domains: field(obj, "search_domains", "")?,
        mtu: field(obj, "mtu", "")?,
        user: field(obj, "user", "")?,
        kernel_modules: field(obj, "kernel_modules", "")?,
        sysctls: field(obj, "sysctls", "")?,
        guest_ipv6: field(obj, "guest_ipv6", "")?,
        guest_gw6: field(obj, "guest_gw6", "")?,
        guest_mac: field(obj, "guest_mac", "")?,
    })
}

fn volume_mounts(
    obj: &Map<String, Value>,
    unknown: &mut Vec<String>,
) -> Result<Option<Vec<VolumeMount>>, ConfigError> {
    let Some(items) = field::<Vec<Value>>(obj, "volume_mounts", "")? else {
        return Ok(None);
    };
    let mut mounts = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let prefix = format!("volume_mounts[{i}]");
        let entry = as_object(item, &prefix)?;
        mounts.push(volume_mount(entry, &prefix, unknown)?);
    }
    Ok(Some(mounts))
}

fn volume_mount(
    obj: &Map<String, Value>,
    prefix: &str,
    unknown: &mut Vec<String>,
) -> Result<VolumeMount, ConfigError> {
    collect_unknown(obj, VOLUME_KEYS, prefix, unknown);
    Ok(VolumeMount {
        device: field(obj, "device", prefix)?.unwrap_or_default(),
        path: field(obj, "path", prefix)?.unwrap_or_default(),
        mode: field(obj, "mode", prefix)?,
        overlay_device: field(obj, "overlay_device", prefix)?,
        nfs_host: field(obj, "nfs_host", prefix)?,
        nfs_export: field(obj, "nfs_export", prefix)?,
    })
}

fn egress_proxy(
    obj: &Map<String, Value>,
    unknown: &mut Vec<String>,
) -> Result<Option<EgressProxy>, ConfigError> {
    let prefix = "egress_proxy";
    match obj.get(prefix) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => {
            let proxy = as_object(value, prefix)?;
            collect_unknown(proxy, PROXY_KEYS, prefix, unknown);
            Ok(Some(EgressProxy {
                enabled: field(proxy, "enabled", prefix)?,
                proxy_url: field(proxy, "proxy_url", prefix)?,
                ca_cert_pem: field(proxy, "ca_cert_pem", prefix)?,
            }))
        }
    }
}

fn as_object<'a>(value: &'a Value, key: &str) -> Result<&'a Map<String, Value>, ConfigError> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ConfigError::InvalidValue {
            key: key.to_string(),
            reason: format!("invalid type: {}, expected an object", kind(other)),
        }),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "sequence",
        Value::Object(_) => "map",
    }
}

/// Reads `key` of `obj`: missing or null is `None`; a wrong type names the key.
fn field<T: DeserializeOwned>(
    obj: &Map<String, Value>,
    key: &str,
    prefix: &str,
) -> Result<Option<T>, ConfigError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => T::deserialize(value)
            .map(Some)
            .map_err(|e| ConfigError::InvalidValue {
                key: join(prefix, key),
                reason: e.to_string(),
            }),
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn collect_unknown(obj: &Map<String, Value>, known: &[&str], prefix: &str, out: &mut Vec<String>) {
    let unknown = obj.keys().filter(|k| !known.contains(&k.as_str()));
    out.extend(unknown.map(|k| join(prefix, k)));
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl Config {
    /// The init mode; [`InitMode::Exec`] when missing.
    pub fn init_mode(&self) -> InitMode {
        self.init_mode.unwrap_or_default()
    }

    /// The app's argv: entrypoint ++ cmd (possibly empty).
    pub fn argv(&self) -> Vec<String> {
        let entrypoint = self.entrypoint.iter().flatten();
        entrypoint
            .chain(self.cmd.iter().flatten())
            .cloned()
            .collect()
    }

    /// The app's working directory; "/" when missing or empty.
    pub fn workdir(&self) -> &str {
        match self.workdir.as_deref() {
            None | Some("") => "/",
            Some(dir) => dir,
        }
    }

    /// The app's environment, sorted by key: the config's env plus
    /// [`DEFAULT_PATH`] and [`DEFAULT_HOME`] when absent.
    pub fn app_env(&self) -> Vec<(String, String)> {
        let mut env = self.env.clone().unwrap_or_default();
        env.entry("PATH".into())
            .or_insert_with(|| DEFAULT_PATH.into());
        env.entry("HOME".into())
            .or_insert_with(|| DEFAULT_HOME.into());
        env.into_iter().collect()
    }

    /// Whether to configure eth0 (default false).
    pub fn network_enabled(&self) -> bool {
        self.network_enabled.unwrap_or(false)
    }

    /// Whether to skip the guest agent (default false).
    pub fn skip_guest_agent(&self) -> bool {
        self.skip_guest_agent.unwrap_or(false)
    }

    /// Whether to skip kernel headers (default false).
    pub fn skip_kernel_headers(&self) -> bool {
        self.skip_kernel_headers.unwrap_or(false)
    }

    /// The config as a hypeman host writes it: Go's `json.MarshalIndent` with
    /// two spaces, every hypeman key present (`null` when absent), superset
    /// keys only when set, and Go's HTML-safe escapes of `<`, `>`, `&`,
    /// U+2028 and U+2029.
    pub fn to_hypeman_json(&self) -> String {
        let json = serde_json::to_string_pretty(self).unwrap_or_else(|_| String::from("{}"));
        go_html_escape(&json)
    }
}

/// Go's encoder escapes these inside strings; in JSON text they only occur in strings.
fn go_html_escape(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> ConfigError {
        parse_config(json.as_bytes()).expect_err("should fail")
    }

    #[test]
    fn minimal_form_parses() {
        let json = r#"{"entrypoint":null,"cmd":["/bin/sh"],"workdir":"/","env":null,"network_enabled":false,"init_mode":"exec"}"#;
        let parsed = parse_config(json.as_bytes()).expect("parse");
        assert_eq!(parsed.config.argv(), vec!["/bin/sh"]);
        assert_eq!(parsed.config.init_mode(), InitMode::Exec);
        assert!(parsed.unknown_keys.is_empty());
    }

    #[test]
    fn empty_object_has_defaults() {
        let c = parse_config(b"{}").expect("parse").config;
        assert_eq!(c, Config::default());
        assert_eq!(c.workdir(), "/");
        assert!(c.argv().is_empty());
        assert!(!c.network_enabled() && !c.skip_guest_agent() && !c.skip_kernel_headers());
    }

    #[test]
    fn wrong_type_names_key() {
        let e = err(r#"{"cmd":"x"}"#);
        assert_eq!(
            e.to_string(),
            r#"key "cmd": invalid type: string "x", expected a sequence"#
        );
        let e = err(r#"{"volume_mounts":[{"device":1}]}"#);
        assert!(
            e.to_string()
                .starts_with(r#"key "volume_mounts[0].device": "#),
            "{e}"
        );
        let e = err(r#"{"egress_proxy":[]}"#);
        assert_eq!(
            e.to_string(),
            r#"key "egress_proxy": invalid type: sequence, expected an object"#
        );
        let e = err(r#"{"guest_cidr":300}"#);
        assert!(e.to_string().starts_with(r#"key "guest_cidr": "#), "{e}");
    }

    #[test]
    fn malformed_and_non_object() {
        let e = err("{\n  \"cmd\": [,]\n}");
        assert!(matches!(e, ConfigError::Malformed { line: 2, .. }), "{e:?}");
        assert!(
            e.to_string().starts_with("malformed json at line 2 column"),
            "{e}"
        );
        assert_eq!(err("[1]"), ConfigError::NotObject);
        assert_eq!(err("null"), ConfigError::NotObject);
    }

    #[test]
    fn too_large_names_limit() {
        let big = vec![b' '; MAX_CONFIG_BYTES + 1];
        let e = parse_config(&big).expect_err("too large");
        assert!(e.to_string().contains("1048576"), "{e}");
    }

    #[test]
    fn unknown_keys_are_nested_and_sorted() {
        let json = r#"{"zz":1,"entrypiont":["a"],"volume_mounts":[{"device":"/dev/vdd","path":"/d","foo":1}],"egress_proxy":{"x":null}}"#;
        let p = parse_config(json.as_bytes()).expect("parse");
        assert_eq!(
            p.unknown_keys,
            vec!["egress_proxy.x", "entrypiont", "volume_mounts[0].foo", "zz"]
        );
    }

    #[test]
    fn volume_modes() {
        let vm = |m: Option<&str>| VolumeMount {
            mode: m.map(String::from),
            ..VolumeMount::default()
        };
        assert_eq!(vm(Some("ro")).mode_kind(), VolumeMode::ReadOnly);
        assert_eq!(vm(Some("rw")).mode_kind(), VolumeMode::ReadWrite);
        assert_eq!(vm(Some("overlay")).mode_kind(), VolumeMode::Overlay);
        assert_eq!(vm(Some("nfs")).mode_kind(), VolumeMode::Nfs);
        assert_eq!(vm(Some("weird")).mode_kind(), VolumeMode::ReadWrite);
        assert_eq!(vm(None).mode_kind(), VolumeMode::ReadWrite);
    }

    #[test]
    fn app_env_adds_defaults_only_when_absent() {
        let mut c = Config::default();
        let env = c.app_env();
        assert_eq!(
            env,
            vec![
                ("HOME".into(), "/root".into()),
                ("PATH".into(), DEFAULT_PATH.into())
            ]
        );
        c.env = Some(BTreeMap::from([
            ("PATH".into(), "/x".into()),
            ("A".into(), "1".into()),
        ]));
        let env = c.app_env();
        assert_eq!(
            env,
            vec![
                ("A".into(), "1".into()),
                ("HOME".into(), "/root".into()),
                ("PATH".into(), "/x".into())
            ]
        );
    }

    #[test]
    fn hypeman_json_escapes_like_go() {
        let c = Config {
            cmd: Some(vec!["a<b>&c\u{2028}".into()]),
            ..Config::default()
        };
        let json = c.to_hypeman_json();
        assert!(json.contains(r#""a\u003cb\u003e\u0026c\u2028""#), "{json}");
        assert_eq!(parse_config(json.as_bytes()).expect("parse").config, c);
    }
}
