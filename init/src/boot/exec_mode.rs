//! Exec mode: start the agent, run the app as our child, supervise, report.

use super::agent::Agent;
use super::{plan, report, BootError, Ctx, Failed};
use crate::sys::{Event, SpawnError, SpawnSpec, Sys};
use guest_contract::config::{Config, InitMode};
use guest_contract::exit::describe_exit;
use guest_contract::kmsg;
use guest_contract::sentinel::Sentinel;
use guest_contract::userdb;

/// Signals forwarded to the app.
pub const FORWARDED: [i32; 4] = [libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGINT];

/// Run the app and supervise it until it exits; then report and power off.
pub fn run<S: Sys>(sys: &mut S, ctx: &mut Ctx, config: &Config) -> (i32, String) {
    let env = app_env(sys, config);
    let env = match env {
        Ok(e) => e,
        Err(e) => return report::fail(sys, ctx, &e),
    };
    let agent = ctx
        .agent_installed
        .then(|| Agent::start(sys, ctx, &env.vars));
    ctx.mark(sys, "agent");
    // Never the host's button in test mode (a namespace sees its devices).
    let button = if ctx.test_mode {
        None
    } else {
        sys.watch_power_button()
    };
    if let Some(dev) = button {
        report::info(
            sys,
            "supervise",
            &format!("power button {dev}: stops the app"),
        );
    }
    // Opened before the app starts: every record read later is newer than it.
    let kmsg = sys.kmsg_open();
    super::kernel_headers::pending(sys, ctx);
    let app = match start_app(sys, config, &env) {
        Ok(Started::Running(pid)) => pid,
        Ok(Started::ExecFailed(code, reason)) => {
            program_start(sys);
            report::error(sys, "exec", &reason);
            return finish(sys, ctx, code, false);
        }
        Err(e) => return report::fail(sys, ctx, &e),
    };
    let app_start = sys.boottime();
    program_start(sys);
    // init's own CPU time: what it computed, not what it waited for.
    let cpu = sys.cpu_time().saturating_sub(ctx.cpu_start).as_secs_f64() * 1000.0;
    let summary = format!("{} cpu={cpu:.3} ms", ctx.timing.summary(app_start));
    report::info(sys, "timing", &summary);
    report::info(sys, "timing", &ctx.timing.cpu_summary());
    super::release_initramfs_later(sys, ctx);
    let worker = super::kernel_headers::start(sys, ctx);
    let deferred = std::mem::take(&mut ctx.deferred);
    let code = supervise(sys, Children { app, worker }, agent, deferred);
    let oom = code == 137 && kmsg.is_some_and(|fd| oom_killed(sys, fd));
    finish(sys, ctx, code, oom)
}

fn program_start<S: Sys>(sys: &mut S) {
    let (secs, nanos) = sys.realtime();
    report::sentinel(
        sys,
        &guest_contract::sentinel::program_start(secs, nanos, InitMode::Exec),
    );
}

/// Where the agent's `Info` reads init's phases.
pub const BOOT_TIMINGS: &str = "/run/hypeman/boot-timings";

/// The phases measured so far (up to the switch), as `name=micros` words on
/// one line, in the new root; a failure is one ERROR line.
pub fn write_boot_timings<S: Sys>(sys: &mut S, ctx: &Ctx) {
    let _ = sys.mkdir_all("/run/hypeman");
    let line = format!("{}\n", ctx.timing.micros_words());
    if let Err(e) = sys.write_file(BOOT_TIMINGS, line.as_bytes(), 0o644) {
        report::error(sys, "timing", &format!("write {BOOT_TIMINGS}: {e}"));
    }
}

fn finish<S: Sys>(sys: &mut S, ctx: &Ctx, code: i32, oom: bool) -> (i32, String) {
    let message = describe_exit(code, oom);
    report::sentinel(
        sys,
        &Sentinel::Exit {
            code,
            message: message.clone(),
        },
    );
    report::shutdown(sys, ctx);
    (code, message)
}

/// The app's environment and credentials.
pub struct AppEnv {
    /// Exact environment.
    pub vars: Vec<(String, String)>,
    /// Credentials, when `user` is set.
    pub creds: Option<crate::sys::Credentials>,
}

fn app_env<S: Sys>(sys: &mut S, config: &Config) -> Result<AppEnv, BootError> {
    let mut vars = config.app_env();
    let Some(spec) = config.user.as_deref().filter(|u| !u.is_empty()) else {
        return Ok(AppEnv { vars, creds: None });
    };
    let read = |sys: &S, p: &str| {
        String::from_utf8_lossy(&sys.read_regular(p, 4 << 20).unwrap_or_default()).into_owned()
    };
    let u = userdb::resolve(spec, &read(sys, "/etc/passwd"), &read(sys, "/etc/group"));
    let u = u.map_err(|e| BootError::User(Failed::msg(e.to_string())))?;
    let home_given = config.env.as_ref().is_some_and(|e| e.contains_key("HOME"));
    if let (false, Some(home)) = (home_given, &u.home) {
        for (k, v) in vars.iter_mut() {
            if k == "HOME" {
                *v = home.clone();
            }
        }
    }
    Ok(AppEnv {
        vars,
        creds: Some(u.creds),
    })
}

enum Started {
    Running(i32),
    /// The program could not be executed: its exit code and why. Reported
    /// after PROGRAM-START, the order a hypeman host sees (it starts every
    /// app through `/bin/sh -c`, so the start line precedes the shell's
    /// failure).
    ExecFailed(i32, String),
}

/// Exit code for an execve errno: not found → 127, not executable → 126.
pub fn exec_errno_code(errno: i32) -> i32 {
    match errno {
        libc::ENOENT | libc::ENOTDIR => 127,
        _ => 126,
    }
}

fn start_app<S: Sys>(sys: &mut S, config: &Config, env: &AppEnv) -> Result<Started, BootError> {
    let argv = config.argv();
    let Some(arg0) = argv.first() else {
        let why = "entrypoint and cmd are both empty";
        return Err(BootError::ConfigInvalid(Failed::msg(why)));
    };
    let workdir = config.workdir().to_string();
    if !sys.is_dir(&workdir) {
        let why = format!("workdir {workdir} does not exist");
        return Err(BootError::Workdir(Failed::msg(why)));
    }
    validate(&argv, &env.vars)?;
    let path_var = env
        .vars
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let Some(path) = plan::resolve_program(arg0, path_var, |p| sys.is_executable(p)) else {
        let reason = format!("{arg0}: executable file not found in $PATH");
        return Ok(Started::ExecFailed(127, reason));
    };
    let spec = SpawnSpec {
        path: path.clone(),
        argv: argv.clone(),
        env: env.vars.clone(),
        workdir,
        creds: env.creds.clone(),
        readiness_fd: false,
        console_stdin: false,
    };
    match sys.spawn(&spec) {
        Ok(child) => Ok(Started::Running(child.pid)),
        Err(SpawnError::Exec(errno)) => {
            let text = std::io::Error::from_raw_os_error(errno as i32);
            let code = exec_errno_code(errno as i32);
            Ok(Started::ExecFailed(code, format!("{path}: {text}")))
        }
        Err(SpawnError::Setup { step, errno }) if step.starts_with("chdir") => {
            let what = format!("{step} {}", config.workdir());
            Err(BootError::Workdir(Failed::new(what, errno_text(errno))))
        }
        Err(SpawnError::Setup { step, errno }) if step == "switch user" => {
            Err(BootError::User(Failed::new(step, errno_text(errno))))
        }
        Err(e) => Err(BootError::Spawn(Failed::msg(report::error_chain(&e)))),
    }
}

/// An errno as its text only (`Permission denied`), as the message shows it.
fn errno_text(errno: nix::errno::Errno) -> String {
    errno.desc().to_string()
}

/// argv and env must be representable for execve: no NUL bytes, no `=` or
/// empty keys. Errors name the key or argument index, never a value (env values
/// may be secrets, and the console is logged).
fn validate(argv: &[String], env: &[(String, String)]) -> Result<(), BootError> {
    if let Some(i) = argv.iter().position(|a| a.contains('\0')) {
        let why = format!("argv[{i}] contains a NUL byte");
        return Err(BootError::ConfigInvalid(Failed::msg(why)));
    }
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            let why = format!("env key {k:?} is not a valid name");
            return Err(BootError::ConfigInvalid(Failed::msg(why)));
        }
        if v.contains('\0') {
            let why = format!("env {k}: value contains a NUL byte");
            return Err(BootError::ConfigInvalid(Failed::msg(why)));
        }
    }
    Ok(())
}

/// The children supervise tells apart (besides the agent).
#[derive(Debug, Clone, Copy)]
pub struct Children {
    /// The app.
    pub app: i32,
    /// The kernel-headers worker, when one was forked.
    pub worker: Option<i32>,
}

/// One waitpid loop: forward signals, reap orphans, restart the agent when
/// its delay has passed (the wait's bound is that timer), return the app's
/// exit code at once (a pending restart is dropped). The power button asks the
/// app to stop (SIGTERM); a headers worker that ends without reporting is
/// reported failed.
/// `deferred` holds events that arrived while a boot step waited for a child
/// of its own (a signal before the app existed): they are served first.
pub fn supervise<S: Sys>(
    sys: &mut S,
    children: Children,
    mut agent: Option<Agent>,
    deferred: Vec<Event>,
) -> i32 {
    let Children { app, worker } = children;
    let mut deferred = deferred.into_iter();
    loop {
        let bound = agent.as_ref().and_then(|a| a.wait_bound(sys.boottime()));
        let event = deferred.next().unwrap_or_else(|| sys.next_event(bound));
        match event {
            Event::PowerButton => {
                report::info(sys, "supervise", "power button: sending SIGTERM to the app");
                let _ = sys.kill(app, libc::SIGTERM);
            }
            Event::Signal(sig) if FORWARDED.contains(&sig) => {
                let _ = sys.kill(app, sig);
            }
            Event::Signal(_) | Event::Timeout => {}
            Event::Exited { pid, code } if pid == app => return code,
            Event::Exited { pid, code } if Some(pid) == worker => {
                super::kernel_headers::reaped(sys, code);
            }
            Event::Exited { pid, code } => {
                if let Some(a) = agent.as_mut() {
                    a.reaped(sys, pid, code);
                }
            }
        }
        if let Some(a) = agent.as_mut() {
            a.restart_if_due(sys);
        }
    }
}

/// Whether the kernel logged an OOM kill since `kmsg_open` returned `fd`.
fn oom_killed<S: Sys>(sys: &mut S, fd: std::os::fd::OwnedFd) -> bool {
    kmsg::oom_killed(&sys.kmsg_read(fd))
}
