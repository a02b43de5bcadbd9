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

/// Exec mode: the worker, forked at low priority beside the running app.
pub fn start<S: Sys>(sys: &mut S, ctx: &mut Ctx) {
    let Some(tarball) = ctx.headers.take() else {
        return;
    };
    let release = sys.kernel_release();
    match sys.start_headers_worker(tarball, &release) {
        Ok(pid) => {
            let msg = format!("kernel headers for {release}: worker pid {pid}");
            report::info(sys, "headers", &msg);
        }
        Err(e) => {
            let msg = format!("start the worker: {e}");
            report::error(sys, "headers", &msg);
            let _ = sys.write_file(STATUS, b"failed\n", 0o644);
            let (secs, nanos) = sys.realtime();
            let failed = guest_contract::sentinel::headers_failed(secs, nanos, &msg);
            report::sentinel(sys, &failed);
        }
    }
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
