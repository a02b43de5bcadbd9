//! What init prints (log lines, sentinels, timings) and how it ends.

use super::{BootError, Ctx};
use crate::boot::plan::BootKind;
use crate::sys::Sys;
use guest_contract::log::{format_line, Level};
use guest_contract::sentinel::Sentinel;
use std::time::Duration;

/// Log an INFO line.
pub fn info<S: Sys>(sys: &mut S, phase: &str, msg: &str) {
    let (secs, _) = sys.realtime();
    sys.console_write(&format_line(secs, Level::Info, phase, msg));
}

/// Log an ERROR line.
pub fn error<S: Sys>(sys: &mut S, phase: &str, msg: &str) {
    let (secs, _) = sys.realtime();
    sys.console_write(&format_line(secs, Level::Error, phase, msg));
}

/// An error and its causes, outermost first: `a: b: c` (each error's own
/// message never repeats its source).
pub use guest_contract::log::error_chain;

/// Print a sentinel on a line of its own.
pub fn sentinel<S: Sys>(sys: &mut S, s: &Sentinel) {
    sys.console_write(&format!("{}\n", s.render()));
}

/// Time spent per phase, from init's first instruction: guest time and
/// init's own CPU time (what it computed, not what it waited for).
#[derive(Debug, Clone)]
pub struct Timing {
    start: Duration,
    last: Duration,
    last_cpu: Duration,
    phases: Vec<(&'static str, Duration, Duration)>,
}

impl Timing {
    /// Start counting at `start` (CLOCK_BOOTTIME) with `cpu` used so far.
    pub fn new(start: Duration, cpu: Duration) -> Timing {
        Timing {
            start,
            last: start,
            last_cpu: cpu,
            phases: Vec::new(),
        }
    }

    /// Charge the time and CPU since the last mark to `phase` (phases may
    /// repeat).
    pub fn mark(&mut self, phase: &'static str, now: Duration, cpu: Duration) {
        let spent = now.saturating_sub(self.last);
        let used = cpu.saturating_sub(self.last_cpu);
        (self.last, self.last_cpu) = (now, cpu);
        match self.phases.iter_mut().find(|(p, _, _)| *p == phase) {
            Some((_, d, c)) => (*d, *c) = (*d + spent, *c + used),
            None => self.phases.push((phase, spent, used)),
        }
    }

    /// The phases as `name=micros` words on one line (no newline), e.g.
    /// `mounts=12786 modules=368232 devices=4100 disks=54698`.
    pub fn micros_words(&self) -> String {
        let words: Vec<String> = self
            .phases
            .iter()
            .map(|(p, d, _)| format!("{p}={}", d.as_micros()))
            .collect();
        words.join(" ")
    }

    /// The summary line (without log prefix), e.g.
    /// `boot 12.345 ms to execve (kernel start to init 800.000 ms): mounts=1.000 ms ...`.
    pub fn summary(&self, now: Duration) -> String {
        let mut s = format!(
            "init {} to execve (kernel start to init {})",
            ms(now.saturating_sub(self.start)),
            ms(self.start)
        );
        let parts: Vec<String> = self
            .phases
            .iter()
            .map(|(p, d, _)| format!("{p}={}", ms(*d)))
            .collect();
        if !parts.is_empty() {
            s.push_str(": ");
            s.push_str(&parts.join(" "));
        }
        s
    }

    /// init's CPU time per phase (without log prefix), e.g.
    /// `cpu by phase: mounts=0.500 ms disks=2.000 ms`.
    pub fn cpu_summary(&self) -> String {
        let parts: Vec<String> = self
            .phases
            .iter()
            .map(|(p, _, c)| format!("{p}={}", ms(*c)))
            .collect();
        format!("cpu by phase: {}", parts.join(" "))
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// A fatal error: one ERROR line, the `init: ` EXIT sentinel, a clean
/// teardown, power-off.
pub fn fail<S: Sys>(sys: &mut S, ctx: &Ctx, e: &BootError) -> (i32, String) {
    let (failure, detail) = (e.failure(), e.detail());
    let phase = failure.phase();
    error(sys, phase, &detail);
    // Only the initramfs's own shell, never the image's.
    if ctx.opts.debug_shell && ctx.kind == BootKind::Initramfs && !ctx.switched {
        debug_shell(sys);
    }
    let code = failure.code();
    let message = failure.message(&detail);
    sentinel(
        sys,
        &Sentinel::Exit {
            code,
            message: message.clone(),
        },
    );
    // The one ERROR line is above: teardown trouble is only noted.
    for problem in teardown(sys, &ctx.shutdown_ro) {
        info(sys, "shutdown", &problem);
    }
    sys.power_off();
    (code, message)
}

/// Run /bin/sh from the initramfs on the console when there is one.
fn debug_shell<S: Sys>(sys: &mut S) {
    if !sys.exists("/bin/sh") {
        error(sys, "debug", "debug shell requested but /bin/sh is missing");
        return;
    }
    let spec = crate::sys::SpawnSpec {
        path: "/bin/sh".into(),
        argv: vec!["sh".into()],
        env: vec![("PATH".into(), "/bin:/sbin:/usr/bin:/usr/sbin".into())],
        workdir: "/".into(),
        creds: None,
        readiness_fd: false,
        console_stdin: true,
    };
    info(sys, "debug", "starting /bin/sh; exit it to power off");
    if let Ok(child) = sys.spawn(&spec) {
        while !matches!(sys.next_event(None), crate::sys::Event::Exited { pid, .. } if pid == child.pid)
        {
        }
    }
}

/// How long the teardown waits for killed processes to be reaped.
const KILL_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Stop every process, flush, and remount `targets` read-only in order (the
/// overlay root, then the overlay disk) so the disk is clean. Returns what
/// could not be done.
pub fn teardown<S: Sys>(sys: &mut S, targets: &[String]) -> Vec<String> {
    sys.kill_all(KILL_GRACE);
    sys.sync();
    let mut problems = Vec::new();
    for target in targets {
        if let Err(e) = sys.remount_ro(target) {
            problems.push(format!("remount {target} read-only: {e}"));
        }
    }
    sys.sync();
    problems
}

/// Clean power-off after the app exited.
pub fn shutdown<S: Sys>(sys: &mut S, ctx: &Ctx) {
    for problem in teardown(sys, &ctx.shutdown_ro) {
        error(sys, "shutdown", &problem);
    }
    sys.power_off();
}

static TEARDOWN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Remember the teardown targets for the panic hook (which has no `Ctx`).
pub fn register_teardown(targets: &[String]) {
    if let Ok(mut t) = TEARDOWN.lock() {
        *t = targets.to_vec();
    }
}

/// The teardown targets registered so far.
pub fn registered_teardown() -> Vec<String> {
    TEARDOWN.try_lock().map(|t| t.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_summary_sums_repeated_phases() {
        let ms = Duration::from_millis;
        let mut t = Timing::new(ms(800), ms(10));
        t.mark("mounts", ms(801), ms(11));
        t.mark("modules", ms(803), ms(11));
        t.mark("mounts", ms(804), ms(13));
        assert_eq!(
            t.summary(Duration::from_millis(805)),
            "init 5.000 ms to execve (kernel start to init 800.000 ms): mounts=2.000 ms modules=2.000 ms"
        );
        assert_eq!(t.micros_words(), "mounts=2000 modules=2000");
        assert_eq!(
            t.cpu_summary(),
            "cpu by phase: mounts=3.000 ms modules=0.000 ms"
        );
        let none = Timing::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(none.micros_words(), "");
    }
}
