//! Exec mode: start the agent, run the app as our child, supervise, report.

use super::{fatal, plan, report, BootError, Ctx};
use crate::sys::{Event, Readiness, SpawnError, SpawnSpec, Sys};
use guest_contract::config::{Config, InitMode};
use guest_contract::exit::{describe_exit, InitFailure};
use guest_contract::kmsg;
use guest_contract::sentinel::Sentinel;
use guest_contract::userdb;

/// Signals forwarded to the app.
pub const FORWARDED: [i32; 4] = [libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGINT];

/// Run the app and supervise it until it exits; then report and power off.
pub fn run<S: Sys>(sys: &mut S, ctx: &mut Ctx, config: &Config) -> (i32, String) {
    let _ = sys.mkdir_all("/run/hypeman");
    if let Err(e) = super::system::apply(sys, ctx, config) {
        return report::fail(sys, ctx, &e);
    }
    let env = app_env(sys, config);
    let env = match env {
        Ok(e) => e,
        Err(e) => return report::fail(sys, ctx, &e),
    };
    let agent = if ctx.agent_installed {
        start_agent(sys, ctx, &env.vars)
    } else {
        None
    };
    ctx.timing.mark("agent", sys.boottime());
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
    let app = match start_app(sys, config, &env) {
        Ok(Started::Running(pid)) => pid,
        Ok(Started::ExecFailed(code)) => return finish(sys, ctx, code, false),
        Err(e) => return report::fail(sys, ctx, &e),
    };
    let app_start = sys.boottime();
    let (secs, nanos) = sys.realtime();
    report::sentinel(
        sys,
        &guest_contract::sentinel::program_start(secs, nanos, InitMode::Exec),
    );
    let summary = ctx.timing.summary(app_start);
    report::info(sys, "timing", &summary);
    let code = supervise(sys, app, agent);
    let oom = code == 137 && kmsg.is_some_and(|fd| oom_killed(sys, fd));
    finish(sys, ctx, code, oom)
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
    let u = u.or_else(|e| fatal(InitFailure::User, e.to_string()))?;
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

fn start_agent<S: Sys>(sys: &mut S, ctx: &Ctx, env: &[(String, String)]) -> Option<i32> {
    let ours = ["HYPEMAN_AGENT_READY_FD", "HYPEMAN_AGENT_READY_FILE"];
    let mut vars: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| !ours.contains(&k.as_str()))
        .cloned()
        .collect();
    vars.push(("HYPEMAN_AGENT_READY_FD".into(), "3".into()));
    vars.push((
        "HYPEMAN_AGENT_READY_FILE".into(),
        plan::AGENT_READY_FILE.into(),
    ));
    let spec = SpawnSpec {
        path: plan::AGENT_TARGET.into(),
        argv: vec![plan::AGENT_TARGET.into()],
        env: vars,
        workdir: "/".into(),
        creds: None,
        readiness_fd: true,
        console_stdin: false,
    };
    let child = match sys.spawn(&spec) {
        Ok(c) => c,
        Err(e) => {
            report::error(
                sys,
                "agent",
                &format!(
                    "cannot start {}: {}",
                    plan::AGENT_TARGET,
                    report::error_chain(&e)
                ),
            );
            return None;
        }
    };
    let timeout = ctx.opts.agent_timeout;
    let outcome = child.ready_fd.map(|fd| sys.wait_ready(fd, timeout));
    match outcome {
        Some(Readiness::Ready) => report::info(sys, "agent", "guest agent ready"),
        Some(Readiness::TimedOut) => report::error(
            sys,
            "agent",
            &format!(
                "guest agent not ready within {} ms; continuing without waiting",
                timeout.as_millis()
            ),
        ),
        _ => report::error(sys, "agent", "guest agent exited before it was ready"),
    }
    Some(child.pid)
}

enum Started {
    Running(i32),
    ExecFailed(i32),
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
        return fatal(
            InitFailure::ConfigInvalid,
            "entrypoint and cmd are both empty",
        );
    };
    let workdir = config.workdir().to_string();
    if !sys.is_dir(&workdir) {
        return fatal(
            InitFailure::Workdir,
            format!("workdir {workdir} does not exist"),
        );
    }
    validate(&argv, &env.vars)?;
    let path_var = env
        .vars
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let Some(path) = plan::resolve_program(arg0, path_var, |p| sys.is_executable(p)) else {
        report::error(
            sys,
            "exec",
            &format!("{arg0}: executable file not found in $PATH"),
        );
        return Ok(Started::ExecFailed(127));
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
            report::error(sys, "exec", &format!("{path}: {text}"));
            Ok(Started::ExecFailed(exec_errno_code(errno as i32)))
        }
        Err(SpawnError::Setup { step, errno }) if step.starts_with("chdir") => fatal(
            InitFailure::Workdir,
            format!("{step} {}: {}", config.workdir(), errno.desc()),
        ),
        Err(SpawnError::Setup { step, errno }) if step == "switch user" => {
            fatal(InitFailure::User, format!("{step}: {}", errno.desc()))
        }
        Err(e) => fatal(InitFailure::Spawn, report::error_chain(&e)),
    }
}

/// argv and env must be representable for execve: no NUL bytes, no `=` or
/// empty keys. Errors name the key or argument index, never a value (env values
/// may be secrets, and the console is logged).
fn validate(argv: &[String], env: &[(String, String)]) -> Result<(), BootError> {
    if let Some(i) = argv.iter().position(|a| a.contains('\0')) {
        return fatal(
            InitFailure::ConfigInvalid,
            format!("argv[{i}] contains a NUL byte"),
        );
    }
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return fatal(
                InitFailure::ConfigInvalid,
                format!("env key {k:?} is not a valid name"),
            );
        }
        if v.contains('\0') {
            return fatal(
                InitFailure::ConfigInvalid,
                format!("env {k}: value contains a NUL byte"),
            );
        }
    }
    Ok(())
}

/// One waitpid loop: forward signals, reap orphans, return the app's exit code.
/// The power button asks the app to stop (SIGTERM).
pub fn supervise<S: Sys>(sys: &mut S, app: i32, agent: Option<i32>) -> i32 {
    loop {
        match sys.next_event() {
            Event::PowerButton => {
                report::info(sys, "supervise", "power button: sending SIGTERM to the app");
                let _ = sys.kill(app, libc::SIGTERM);
            }
            Event::Signal(sig) if FORWARDED.contains(&sig) => {
                let _ = sys.kill(app, sig);
            }
            Event::Signal(_) => {}
            Event::Exited { pid, code } if pid == app => return code,
            Event::Exited { pid, code } if Some(pid) == agent => {
                report::error(
                    sys,
                    "agent",
                    &format!("guest agent exited: {}", describe_exit(code, false)),
                );
            }
            Event::Exited { .. } => {}
        }
    }
}

/// Whether the kernel logged an OOM kill since `kmsg_open` returned `fd`.
fn oom_killed<S: Sys>(sys: &mut S, fd: i32) -> bool {
    kmsg::oom_killed(&sys.kmsg_read(fd))
}
