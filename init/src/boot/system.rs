//! Superset settings applied to the guest before the app starts: `hostname`
//! (and its line in the new root's `/etc/hosts`) and `sysctls`. Validation is the contract library's
//! ([`guest_contract::sysctl`]); application goes through [`Sys`].

use super::{report, BootError, Ctx, Failed};
use crate::sys::Sys;
use guest_contract::config::Config;
use guest_contract::sysctl::{sysctl_path, validate_hostname, validate_value, NameError};

fn invalid<T>(e: NameError) -> Result<T, BootError> {
    Err(BootError::ConfigInvalid(Failed::msg(e.to_string())))
}

/// Apply `hostname` and `sysctls`. In test mode (a namespace on a host, whose
/// hostname and global sysctls are the host's) they are only logged.
pub fn apply<S: Sys>(sys: &mut S, ctx: &Ctx, config: &Config) -> Result<(), BootError> {
    if let Some(h) = &config.hostname {
        validate_hostname(h).or_else(invalid)?;
        if ctx.test_mode {
            report::info(sys, "system", &format!("test mode: hostname {h} not set"));
        } else if let Err(e) = sys.set_hostname(h) {
            return Err(BootError::ConfigInvalid(Failed::new(
                format!("hostname {h}"),
                e,
            )));
        }
        name_in_hosts(sys, h);
    }
    for (key, value) in config.sysctls.iter().flatten() {
        let path = sysctl_path(key).or_else(invalid)?;
        validate_value(key, value).or_else(invalid)?;
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

/// Largest `/etc/hosts` read back.
const MAX_HOSTS_BYTES: usize = 1 << 20;

/// The new root's `/etc/hosts` names the hostname (the image's lines are
/// kept); a failure is one ERROR line.
fn name_in_hosts<S: Sys>(sys: &mut S, hostname: &str) {
    // A regular file only: an image's FIFO there would block PID 1.
    let current = sys
        .read_regular("/etc/hosts", MAX_HOSTS_BYTES + 1)
        .unwrap_or_default();
    if current.len() > MAX_HOSTS_BYTES {
        report::error(sys, "system", "/etc/hosts is over 1 MiB; not changed");
        return;
    }
    let current = String::from_utf8_lossy(&current);
    let Some(text) = guest_contract::network::hosts_file(&current, hostname) else {
        return;
    };
    let _ = sys.mkdir_all("/etc");
    if let Err(e) = sys.write_file("/etc/hosts", text.as_bytes(), 0o644) {
        report::error(sys, "system", &format!("write /etc/hosts: {e}"));
    }
}
