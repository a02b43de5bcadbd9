//! Superset settings applied to the guest before the app starts: `hostname`
//! and `sysctls`. Validation is pure; application goes through [`Sys`].

use super::{fatal, report, BootError, Ctx};
use crate::sys::Sys;
use guest_contract::config::Config;
use guest_contract::exit::InitFailure;

/// Longest hostname Linux accepts.
pub const MAX_HOSTNAME: usize = 64;

/// RFC 1123 labels separated by dots, at most 64 bytes.
pub fn validate_hostname(h: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if h.is_empty() || h.len() > MAX_HOSTNAME || !h.split('.').all(label_ok) {
        return Err(format!("hostname {h:?} is not a valid host name"));
    }
    Ok(())
}

/// `/proc/sys` path of a sysctl key, in either of sysctl(8)'s forms: dotted
/// (`net.ipv4.conf.eth0/100.rp_filter`: a `/` stands for a literal dot) or
/// slashed (`net/ipv4/conf/eth0.100/rp_filter`); the first separator decides.
pub fn sysctl_path(key: &str) -> Result<String, String> {
    let dotted = key
        .find(['.', '/'])
        .is_some_and(|i| key.as_bytes()[i] == b'.');
    let rel: String = if dotted {
        key.chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect()
    } else {
        key.to_string()
    };
    let seg_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
    };
    if !rel.split('/').all(seg_ok) {
        return Err(format!("sysctl key {key:?} is not a valid name"));
    }
    Ok(format!("/proc/sys/{rel}"))
}

fn invalid<T>(detail: String) -> Result<T, BootError> {
    fatal(InitFailure::ConfigInvalid, detail)
}

/// Apply `hostname` and `sysctls`. In test mode (a namespace on a host, whose
/// hostname and global sysctls are the host's) they are only logged.
pub fn apply<S: Sys>(sys: &mut S, ctx: &Ctx, config: &Config) -> Result<(), BootError> {
    if let Some(h) = &config.hostname {
        validate_hostname(h).or_else(invalid)?;
        if ctx.test_mode {
            report::info(sys, "system", &format!("test mode: hostname {h} not set"));
        } else if let Err(e) = sys.set_hostname(h) {
            return invalid(format!("hostname {h}: {e}"));
        }
    }
    for (key, value) in config.sysctls.iter().flatten() {
        let path = sysctl_path(key).or_else(invalid)?;
        if value.contains(['\n', '\0']) {
            return invalid(format!("sysctl {key}: value must be one line"));
        }
        if ctx.test_mode {
            report::info(sys, "system", &format!("test mode: sysctl {key} not set"));
        } else if let Err(e) = sys.write_existing(&path, format!("{value}\n").as_bytes()) {
            // A valid name the kernel refuses (missing module, bad value): one
            // ERROR line, the boot goes on.
            report::error(sys, "system", &format!("sysctl {key}: {e}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for ok in ["a", "guest-1", "web.example.internal", &"a".repeat(63)] {
            assert_eq!(validate_hostname(ok), Ok(()), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "a_b", "a b", "ü", &"a".repeat(65)] {
            assert!(validate_hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sysctl_paths() {
        assert_eq!(
            sysctl_path("vm.swappiness").unwrap(),
            "/proc/sys/vm/swappiness"
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.100/rp_filter").unwrap(),
            "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
        );
        assert_eq!(
            sysctl_path("net.ipv4.conf.eth0/100.rp_filter").unwrap(),
            "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
        );
        for bad in [
            "",
            "..",
            "vm..x",
            "../../etc/passwd",
            "net/../x",
            "/vm/x",
            "a b",
            "vm.x.",
        ] {
            assert!(sysctl_path(bad).is_err(), "{bad}");
        }
    }
}
