//! The kernel-headers step's two halves after the switch (the tarball was
//! opened before it, by [`super::steps::Step::KernelHeaders`]): exec mode
//! forks the worker once the app runs; systemd mode stages init and the
//! tarball where `hypeman-kernel-headers.service` expects them.

use super::{report, Ctx};
use crate::headers::{STAGED, STAGED_INIT, STATUS};
use crate::sys::Sys;

/// `pending` in the status file, before the app can look for it.
pub fn pending<S: Sys>(sys: &mut S, ctx: &Ctx) {
    if ctx.headers.is_some() {
        write_pending(sys);
    }
}

fn write_pending<S: Sys>(sys: &mut S) {
    let written = sys
        .mkdir_all("/run/hypeman")
        .and_then(|()| sys.write_file(STATUS, b"pending\n", 0o644));
    if let Err(e) = written {
        report::error(sys, "headers", &format!("write {STATUS}: {e}"));
    }
}

/// Exec mode: the worker, forked at low priority beside the running app;
/// its pid.
pub fn start<S: Sys>(sys: &mut S, ctx: &mut Ctx) -> Option<i32> {
    let tarball = ctx.headers.take()?;
    let release = sys.kernel_release();
    match sys.start_headers_worker(tarball, &release) {
        Ok(pid) => {
            let msg = format!("kernel headers for {release}: worker pid {pid}");
            report::info(sys, "headers", &msg);
            Some(pid)
        }
        Err(e) => {
            failed(sys, &format!("start the worker: {e}"));
            None
        }
    }
}

/// The worker was reaped: one that did not report its own end (killed, or
/// an exit status other than its 0 or 1) is reported failed here.
pub fn reaped<S: Sys>(sys: &mut S, code: i32) {
    match code {
        0 | 1 => {}
        c if c > 128 => failed(sys, &format!("the worker was killed by signal {}", c - 128)),
        c => failed(sys, &format!("the worker exited with status {c}")),
    }
}

fn failed<S: Sys>(sys: &mut S, why: &str) {
    report::error(sys, "headers", why);
    let _ = sys.write_file(STATUS, b"failed\n", 0o644);
    let (secs, nanos) = sys.realtime();
    report::sentinel(
        sys,
        &guest_contract::sentinel::headers_failed(secs, nanos, why),
    );
}

/// Systemd mode: init and the tarball staged for the unit, which runs the
/// same worker (`hypeman-init --headers-worker-guest`).
pub fn stage<S: Sys>(sys: &mut S, ctx: &mut Ctx) {
    let Some(tarball) = ctx.headers.take() else {
        return;
    };
    let staged = sys.mkdir_all("/opt/hypeman").and_then(|()| {
        sys.copy_fd(&tarball, STAGED, 0o644)?;
        let me = sys.open_read("/proc/self/exe")?;
        sys.copy_fd(&me, STAGED_INIT, 0o755)
    });
    match staged {
        Ok(_) => write_pending(sys),
        Err(e) => report::error(
            sys,
            "headers",
            &format!("stage {STAGED} and {STAGED_INIT}: {e}; the unit will not run"),
        ),
    }
}
