//! The kernel command line (`/proc/cmdline`): the options init understands,
//! parsed without ever failing (unknown `hypeman.*` words are collected).
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `console=<name>[,opts]` | — | console device (last one wins), e.g. `ttyS0,115200` |
//! | `hypeman.console=<dev>\|inherit` | — | override the console; `inherit` keeps the fds init was given |
//! | `hypeman.root=<dev>` | `/dev/vda` | image root disk |
//! | `hypeman.overlay=<dev>\|tmpfs` | `/dev/vdb` | writable overlay disk, or a tmpfs upper layer |
//! | `hypeman.config=<dev>\|initrd\|vsock:<port>` | `/dev/vdc` (`/dev/vdb` with a tmpfs overlay) | config disk; `initrd`: read `/config.json` from the initramfs (an archive appended by the host); `vsock:<port>`: read it from the host (CID 2) on that port, within `hypeman.device_timeout_ms`; no config disk with either |
//! | `hypeman.device_timeout_ms=<n>` | 10000 | how long to wait for disks |
//! | `hypeman.agent_timeout_ms=<n>` | 10000 | how long to wait for the agent's readiness |
//! | `hypeman.modules=0` | 1 | do not load kernel modules |
//! | `hypeman.debug_shell=1` | 0 | on a fatal error, run `/bin/sh` from the initramfs when it has one |

use std::time::Duration;

/// Options parsed from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Console device path chosen on the command line, if any.
    pub console: Option<String>,
    /// Keep the stdout/stderr init was started with.
    pub console_inherit: bool,
    /// Root image device.
    pub root_dev: String,
    /// Overlay disk; `None` means a tmpfs upper layer.
    pub overlay_dev: Option<String>,
    /// Config disk.
    pub config_dev: String,
    /// `hypeman.config=initrd`: config.json comes from the initramfs, and
    /// there is no config disk to wait for.
    pub config_initrd: bool,
    /// `hypeman.config=vsock:<port>`: config.json comes from the host over
    /// vsock on this port, and there is no config disk to wait for.
    pub config_vsock: Option<u32>,
    /// Bound on the wait for disks.
    pub device_timeout: Duration,
    /// Bound on the wait for the agent's readiness.
    pub agent_timeout: Duration,
    /// Load kernel modules from the initramfs.
    pub load_modules: bool,
    /// Drop to a shell on fatal errors when one exists.
    pub debug_shell: bool,
    /// Test-only: panic on purpose (honoured only in test mode).
    pub test_panic: bool,
    /// Test-only: init runs in a network namespace of its own, so test mode
    /// may configure the network (never set it for a namespace that shares
    /// the host's network).
    pub test_net: bool,
    /// `hypeman.gpu`: `None` (auto) probes the PCI bus for an NVIDIA
    /// function; `Some(false)` never probes; `Some(true)` loads the driver
    /// stack without probing (a VMM whose device the probe cannot see).
    pub gpu: Option<bool>,
    /// Options init did not understand but that look like ours (`hypeman.*`).
    pub unknown: Vec<String>,
    /// Which of root, overlay, config were named on the command line.
    pub explicit: [bool; 3],
}

/// Split a command line into words, honouring double quotes as the kernel does.
pub fn split(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in cmdline.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// `vda` → `/dev/vda`; absolute paths are kept.
pub fn dev_path(name: &str) -> String {
    if name.starts_with('/') {
        name.to_string()
    } else {
        format!("/dev/{name}")
    }
}

/// Longest wait any timeout option may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

fn millis(v: &str, default: Duration) -> Duration {
    v.parse::<u64>()
        .map(|ms| Duration::from_millis(ms).min(MAX_TIMEOUT))
        .unwrap_or(default)
}

fn flag(v: &str) -> bool {
    !matches!(v, "0" | "false" | "no" | "off")
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl Options {
    /// Parse a kernel command line.
    pub fn parse(cmdline: &str) -> Options {
        let mut o = Options {
            console: None,
            console_inherit: false,
            root_dev: "/dev/vda".into(),
            overlay_dev: Some("/dev/vdb".into()),
            config_dev: String::new(),
            config_initrd: false,
            config_vsock: None,
            device_timeout: DEFAULT_TIMEOUT,
            agent_timeout: DEFAULT_TIMEOUT,
            load_modules: true,
            debug_shell: false,
            test_panic: false,
            test_net: false,
            gpu: None,
            unknown: Vec::new(),
            explicit: [false; 3],
        };
        let mut config = None;
        for word in split(cmdline) {
            let (key, val) = word.split_once('=').unwrap_or((word.as_str(), "1"));
            match key {
                "console" => o.console = Some(dev_path(val.split(',').next().unwrap_or(val))),
                "hypeman.console" if val == "inherit" => o.console_inherit = true,
                "hypeman.console" => o.console = Some(dev_path(val)),
                "hypeman.root" => {
                    o.root_dev = dev_path(val);
                    o.explicit[0] = true;
                }
                "hypeman.overlay" => {
                    o.overlay_dev = (val != "tmpfs").then(|| dev_path(val));
                    o.explicit[1] = true;
                }
                "hypeman.config" => {
                    let port = val.strip_prefix("vsock:").map(str::parse::<u32>);
                    (o.config_initrd, o.config_vsock) = (val == "initrd", None);
                    match port {
                        Some(Ok(p)) => o.config_vsock = Some(p),
                        Some(Err(_)) => o.unknown.push(word.clone()),
                        None if val == "initrd" => {}
                        None => config = Some(dev_path(val)),
                    }
                    o.explicit[2] = true;
                }
                "hypeman.device_timeout_ms" => o.device_timeout = millis(val, DEFAULT_TIMEOUT),
                "hypeman.agent_timeout_ms" => o.agent_timeout = millis(val, DEFAULT_TIMEOUT),
                "hypeman.modules" => o.load_modules = flag(val),
                "hypeman.debug_shell" => o.debug_shell = flag(val),
                "hypeman.test_panic" => o.test_panic = flag(val),
                "hypeman.test_net" => o.test_net = flag(val),
                "hypeman.gpu" if val == "auto" => o.gpu = None,
                "hypeman.gpu" => o.gpu = Some(flag(val)),
                k if k.starts_with("hypeman.") => o.unknown.push(word.clone()),
                _ => {}
            }
        }
        o.config_dev = config.unwrap_or_else(|| match o.overlay_dev {
            Some(_) => "/dev/vdc".into(),
            None => "/dev/vdb".into(),
        });
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_hypeman_layout() {
        let o = Options::parse("console=ttyS0 root=/dev/ram0 panic=-1");
        assert_eq!(o.console.as_deref(), Some("/dev/ttyS0"));
        assert_eq!(o.root_dev, "/dev/vda");
        assert_eq!(o.overlay_dev.as_deref(), Some("/dev/vdb"));
        assert_eq!(o.config_dev, "/dev/vdc");
        assert!(o.load_modules);
        assert_eq!(o.device_timeout, Duration::from_secs(10));
    }

    #[test]
    fn config_from_the_initramfs() {
        let o = Options::parse("hypeman.config=initrd");
        assert!(o.config_initrd && o.explicit[2]);
        let o = Options::parse("hypeman.config=initrd hypeman.config=vdd");
        assert!(!o.config_initrd);
        assert_eq!(o.config_dev, "/dev/vdd");
        let o = Options::parse("hypeman.config=vsock:2223");
        assert_eq!((o.config_vsock, o.config_initrd), (Some(2223), false));
        let o = Options::parse("hypeman.config=vsock:x");
        assert_eq!(o.config_vsock, None);
        assert_eq!(o.unknown, ["hypeman.config=vsock:x"]);
    }

    #[test]
    fn tmpfs_overlay_moves_the_config_disk_to_vdb() {
        let o = Options::parse("hypeman.overlay=tmpfs");
        assert_eq!(o.overlay_dev, None);
        assert_eq!(o.config_dev, "/dev/vdb");
    }

    #[test]
    fn last_console_wins_and_options_are_dropped() {
        let o = Options::parse("console=tty0 console=hvc0,115200n8");
        assert_eq!(o.console.as_deref(), Some("/dev/hvc0"));
    }

    #[test]
    fn overrides_and_unknown_options() {
        let o = Options::parse(
            "hypeman.root=/dev/loop7 hypeman.config=loop9 hypeman.modules=0 \
             hypeman.device_timeout_ms=250 hypeman.consle=x hypeman.console=inherit",
        );
        assert_eq!(o.root_dev, "/dev/loop7");
        assert_eq!(o.config_dev, "/dev/loop9");
        assert!(!o.load_modules);
        assert!(o.console_inherit);
        assert_eq!(o.device_timeout, Duration::from_millis(250));
        assert_eq!(o.unknown, vec!["hypeman.consle=x".to_string()]);
    }

    #[test]
    fn timeouts_are_clamped() {
        let o = Options::parse(
            "hypeman.agent_timeout_ms=18446744073709551615 hypeman.device_timeout_ms=x",
        );
        assert_eq!(o.agent_timeout, MAX_TIMEOUT);
        assert_eq!(o.device_timeout, Duration::from_secs(10));
    }

    #[test]
    fn quotes_group_words() {
        assert_eq!(split(r#"a "b c" d"#), vec!["a", "b c", "d"]);
        assert_eq!(split("  \n "), Vec::<String>::new());
    }
}
