//! `init`: PID 1 for microVMs. See the crate README for the boot path.

mod boot;
mod headers;
mod sys;

use guest_contract::exit::InitFailure;
use guest_contract::log::{format_line, Level};
use guest_contract::sentinel::Sentinel;
use std::time::Duration;
use sys::real::RealSys;
use sys::Sys;

fn main() {
    if std::env::args().nth(1).as_deref() == Some(headers::WORKER_ARG) {
        std::process::exit(headers_worker());
    }
    let real = RealSys::default();
    let start = real.boottime();
    std::panic::set_hook(Box::new(panic_hook));
    let mut sys = real;
    boot::run(&mut sys, &boot::Inputs::from_env(start));
    // power_off returns only when reboot(2) failed: stay alive, never exit.
    idle_forever()
}

/// `--headers-worker-guest [ROOT [RELEASE]]`: the systemd unit's run of the
/// headers worker, on the tarball init staged at `ROOT/opt/hypeman/`
/// (ROOT `/` and RELEASE `uname -r` unless given: the unit gives neither).
fn headers_worker() -> i32 {
    headers::worker_panic_hook();
    let mut sys = RealSys::default();
    let mut args = std::env::args().skip(2);
    let root = std::path::PathBuf::from(args.next().unwrap_or_else(|| "/".into()));
    let release = args.next().unwrap_or_else(|| sys.kernel_release());
    let staged = root.join(headers::STAGED.trim_start_matches('/'));
    match std::fs::File::open(&staged) {
        Ok(tarball) => headers::worker(&mut sys, tarball, &root, &release),
        Err(e) => {
            eprintln!("{}: {e}", staged.display());
            1
        }
    }
}

fn idle_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Write straight to fd 1: the panic may have happened while stdout was locked.
fn write_raw(text: &str) {
    let mut rest = text.as_bytes();
    while !rest.is_empty() {
        match nix::unistd::write(std::io::stdout(), rest) {
            Ok(0) | Err(_) => return,
            Ok(n) => rest = &rest[n..],
        }
    }
}

/// A panic ends like any fatal error: ERROR line, `init: ` sentinel, sync,
/// power-off. It never returns: with panic=abort, returning would kill PID 1.
fn panic_hook(info: &std::panic::PanicHookInfo<'_>) {
    let detail = match info.location() {
        Some(l) => format!("panic at {}:{}: {}", l.file(), l.line(), payload(info)),
        None => format!("panic: {}", payload(info)),
    };
    let failure = InitFailure::Internal;
    let mut sys = RealSys::default();
    let (secs, _) = sys.realtime();
    write_raw(&format_line(secs, Level::Error, failure.phase(), &detail));
    let exit = Sentinel::Exit {
        code: failure.code(),
        message: failure.message(&detail),
    };
    write_raw(&format!("{}\n", exit.render()));
    if sys.getpid() != 1 {
        std::process::exit(failure.code());
    }
    let _ = boot::report::teardown(&mut sys, &boot::report::registered_teardown());
    sys.power_off();
    idle_forever()
}

fn payload(info: &std::panic::PanicHookInfo<'_>) -> String {
    let p = info.payload();
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown payload".into())
}
