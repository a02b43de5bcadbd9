//! The egress proxy's CA (`egress_proxy.enabled` with `ca_cert_pem`),
//! installed in the new root before the agent and the app: the PEM checked
//! ([`guest_contract::pem`]), written to
//! `/usr/local/share/ca-certificates/hypeman-egress-proxy.crt`, then the
//! image's own `update-ca-certificates` run when it has one; otherwise the
//! certificate is appended (once) to each trust bundle the image has
//! (Debian/Ubuntu/Alpine, RHEL/Fedora). Any failure ends the boot with 78
//! and hypeman's message `egress proxy CA certificate setup failed: <err>`.

use super::{BootError, Ctx, Failed};
use crate::sys::{Event, SpawnSpec, Sys};
use guest_contract::config::Config;
use std::time::{Duration, Instant};

/// Where the CA goes (the path hypeman uses).
pub const CA_FILE: &str = "/usr/local/share/ca-certificates/hypeman-egress-proxy.crt";
/// Where the image's own tool may be.
const UPDATE_TOOLS: [&str; 4] = [
    "/usr/sbin/update-ca-certificates",
    "/usr/bin/update-ca-certificates",
    "/sbin/update-ca-certificates",
    "/bin/update-ca-certificates",
];
/// Trust bundles appended to when the image has no tool (symlinks skipped:
/// they point at one of the others).
const BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];
/// How long the image's tool may run.
pub const UPDATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest trust bundle read back.
const MAX_BUNDLE_BYTES: usize = 16 << 20;

/// The egress-proxy failure (78) with `detail`.
fn failed(detail: impl Into<String>) -> BootError {
    BootError::EgressProxy(Failed::msg(detail))
}

/// The PEM `config` asks to install: with `egress_proxy.enabled` and a
/// non-blank `ca_cert_pem`.
pub fn wanted(config: &Config) -> Option<&str> {
    let proxy = config.egress_proxy.as_ref()?;
    if proxy.enabled != Some(true) {
        return None;
    }
    proxy
        .ca_cert_pem
        .as_deref()
        .filter(|p| !p.trim().is_empty())
}

/// Installs `certs` (checked while planning).
pub fn apply<S: Sys>(sys: &mut S, ctx: &mut Ctx, certs: &str) -> Result<(), BootError> {
    let _ = sys.mkdir_all("/usr/local/share/ca-certificates");
    sys.write_file(CA_FILE, certs.as_bytes(), 0o644)
        .map_err(|e| failed(format!("write {CA_FILE}: {e}")))?;
    match UPDATE_TOOLS.into_iter().find(|t| sys.is_executable(t)) {
        Some(tool) => run_update_tool(sys, ctx, tool)?,
        None => append_to_bundles(sys, certs)?,
    }
    super::report::info(
        sys,
        "egress-proxy",
        &format!("CA certificate installed at {CA_FILE}"),
    );
    Ok(())
}

fn run_update_tool<S: Sys>(sys: &mut S, ctx: &mut Ctx, tool: &str) -> Result<(), BootError> {
    let spec = SpawnSpec {
        path: tool.into(),
        argv: vec!["update-ca-certificates".into()],
        env: vec![("PATH".into(), guest_contract::config::DEFAULT_PATH.into())],
        workdir: "/".into(),
        creds: None,
        readiness_fd: false,
        console_stdin: false,
    };
    let child = sys
        .spawn(&spec)
        .map_err(|e| failed(format!("{tool}: {}", super::report::error_chain(&e))))?;
    match wait_exit(sys, ctx, child.pid, UPDATE_TIMEOUT) {
        Some(0) => Ok(()),
        Some(code) => Err(failed(format!("update-ca-certificates exited with {code}"))),
        None => {
            // Its own session and group: the whole group goes (the boot's
            // teardown then reaps what is left).
            let _ = sys.kill(-child.pid, libc::SIGKILL);
            let secs = UPDATE_TIMEOUT.as_secs();
            Err(failed(format!(
                "update-ca-certificates did not finish within {secs} s"
            )))
        }
    }
}

/// The exit code of `pid`, or `None` after `timeout`. Signals and
/// power-button presses meanwhile are kept for the supervisor.
fn wait_exit<S: Sys>(sys: &mut S, ctx: &mut Ctx, pid: i32, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match sys.next_event(Some(left)) {
            Event::Exited { pid: p, code } if p == pid => return Some(code),
            Event::Timeout => return None,
            e @ (Event::Signal(_) | Event::PowerButton) => ctx.deferred.push(e),
            Event::Exited { .. } => {}
        }
    }
}

fn append_to_bundles<S: Sys>(sys: &mut S, certs: &str) -> Result<(), BootError> {
    for bundle in BUNDLES {
        if !sys.exists(bundle) || sys.is_symlink(bundle) {
            continue;
        }
        let mut text = sys
            .read_regular(bundle, MAX_BUNDLE_BYTES + 1)
            .map_err(|e| failed(format!("read {bundle}: {e}")))?;
        if text.len() > MAX_BUNDLE_BYTES {
            return Err(failed(format!(
                "{bundle} is larger than {MAX_BUNDLE_BYTES} bytes"
            )));
        }
        if contains(&text, certs.as_bytes()) {
            continue;
        }
        if !text.is_empty() && !text.ends_with(b"\n") {
            text.push(b'\n');
        }
        text.extend_from_slice(certs.as_bytes());
        sys.write_file(bundle, &text, 0o644)
            .map_err(|e| failed(format!("write {bundle}: {e}")))?;
    }
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
