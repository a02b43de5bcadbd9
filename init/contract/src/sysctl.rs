//! Names from the config that reach the kernel: `sysctls` keys (mapped to a
//! `/proc/sys` path that cannot escape it), their values, and `hostname`
//! (RFC 1123). Validation only; applying them is the binary's job.

/// Longest hostname Linux accepts.
pub const MAX_HOSTNAME: usize = 64;

/// Why a name or value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not RFC 1123 labels, or too long.
    #[error("hostname {0:?} is not a valid host name")]
    Hostname(String),
    /// A key with an empty, `.` or `..` component, or a character outside
    /// `[A-Za-z0-9_.:-]`.
    #[error("sysctl key {0:?} is not a valid name")]
    SysctlKey(String),
    /// A value with a line break or a NUL byte (the key is named, not the value).
    #[error("sysctl {0}: value must be one line")]
    SysctlValue(String),
}

/// RFC 1123 labels separated by dots, at most 64 bytes.
pub fn validate_hostname(h: &str) -> Result<(), NameError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if h.is_empty() || h.len() > MAX_HOSTNAME || !h.split('.').all(label_ok) {
        return Err(NameError::Hostname(h.to_string()));
    }
    Ok(())
}

/// `/proc/sys` path of a sysctl key, in either of sysctl(8)'s forms: dotted
/// (`net.ipv4.conf.eth0/100.rp_filter`: a `/` stands for a literal dot) or
/// slashed (`net/ipv4/conf/eth0.100/rp_filter`); the first separator decides.
pub fn sysctl_path(key: &str) -> Result<String, NameError> {
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
        return Err(NameError::SysctlKey(key.to_string()));
    }
    Ok(format!("/proc/sys/{rel}"))
}

/// A sysctl value must be one line: no line break, no NUL byte.
pub fn validate_value(key: &str, value: &str) -> Result<(), NameError> {
    if value.contains(['\n', '\0']) {
        return Err(NameError::SysctlValue(key.to_string()));
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
        assert_eq!(
            validate_hostname("a_b").unwrap_err().to_string(),
            "hostname \"a_b\" is not a valid host name"
        );
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
        assert_eq!(
            sysctl_path("a b").unwrap_err().to_string(),
            "sysctl key \"a b\" is not a valid name"
        );
    }

    #[test]
    fn values_are_one_line() {
        assert_eq!(validate_value("vm.swappiness", "10 20"), Ok(()));
        for bad in ["1\n", "1\0"] {
            assert_eq!(
                validate_value("vm.x", bad).unwrap_err().to_string(),
                "sysctl vm.x: value must be one line"
            );
        }
    }
}
