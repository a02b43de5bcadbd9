//! The guest agent in exec mode: started once with its readiness pipe, then
//! kept running. When it exits (init reaps it like any child) it is started
//! again after a backoff; the timer is the bound of the supervisor's one wait
//! ([`Sys::next_event`]), never a sleep.

use super::{plan, report, Ctx};
use crate::sys::{Readiness, SpawnSpec, Sys};
use guest_contract::exit::describe_exit;
use std::time::Duration;

/// Delay before the first restart.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest delay between restarts.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// An agent that stayed up this long starts the backoff over.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);

const READY_FD: &str = "HYPEMAN_AGENT_READY_FD";
const READY_FILE: &str = "HYPEMAN_AGENT_READY_FILE";

/// Restart delays: [`FIRST_DELAY`], doubling up to [`MAX_DELAY`], back to
/// [`FIRST_DELAY`] after an agent stayed up [`STABLE_AFTER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST_DELAY }
    }
}

impl Backoff {
    /// The delay before the next start, after an agent that ran for `uptime`
    /// (`None`: it could not be started at all).
    pub fn after(&mut self, uptime: Option<Duration>) -> Duration {
        if uptime.is_some_and(|u| u >= STABLE_AFTER) {
            self.next = FIRST_DELAY;
        }
        let delay = self.next;
        self.next = delay.saturating_mul(2).min(MAX_DELAY);
        delay
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Running since `since` (CLOCK_BOOTTIME).
    Running { pid: i32, since: Duration },
    /// To be started at `at` (CLOCK_BOOTTIME).
    Waiting { at: Duration },
}

/// The supervised agent.
#[derive(Debug)]
pub struct Agent {
    /// What a restart runs: the first start's spec without the readiness pipe.
    restart: SpawnSpec,
    state: State,
    backoff: Backoff,
}

/// "1 s", "30 s".
fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs())
}

impl Agent {
    /// Start the agent with the app's `env`, the readiness variables and a
    /// readiness pipe, and wait (bounded) for its byte. A failed start is one
    /// ERROR line and is retried like a restart.
    pub fn start<S: Sys>(sys: &mut S, ctx: &Ctx, env: &[(String, String)]) -> Agent {
        let spec = first_spec(env);
        let mut agent = Agent {
            restart: restart_spec(&spec),
            state: State::Waiting { at: Duration::ZERO },
            backoff: Backoff::default(),
        };
        let child = match sys.spawn(&spec) {
            Ok(c) => c,
            Err(e) => {
                let delay = agent.schedule(sys, None);
                let cause = report::error_chain(&e);
                let msg = format!(
                    "cannot start {}: {cause}; retrying in {}",
                    plan::AGENT_TARGET,
                    secs(delay)
                );
                report::error(sys, "agent", &msg);
                return agent;
            }
        };
        agent.state = State::Running {
            pid: child.pid,
            since: sys.boottime(),
        };
        if let Some(fd) = child.ready_fd {
            let outcome = sys.wait_ready(fd, ctx.opts.agent_timeout);
            report_readiness(sys, outcome, ctx.opts.agent_timeout);
        }
        agent
    }

    /// How long the supervisor may wait before a restart is due; `None` while
    /// the agent runs.
    pub fn wait_bound(&self, now: Duration) -> Option<Duration> {
        match self.state {
            State::Waiting { at } => Some(at.saturating_sub(now)),
            State::Running { .. } => None,
        }
    }

    /// A child was reaped: when it is the agent, schedule its restart (one
    /// INFO line naming the exit status and the delay).
    pub fn reaped<S: Sys>(&mut self, sys: &mut S, pid: i32, code: i32) {
        let State::Running { pid: ours, since } = self.state else {
            return;
        };
        if pid != ours {
            return;
        }
        let uptime = sys.boottime().saturating_sub(since);
        let delay = self.schedule(sys, Some(uptime));
        let status = match code {
            0 => "exit code 0".to_string(),
            c => describe_exit(c, false),
        };
        let msg = format!(
            "guest agent exited: {status}; restarting in {}",
            secs(delay)
        );
        report::info(sys, "agent", &msg);
    }

    /// Start the agent again once its delay has passed. A start that fails is
    /// one INFO line and is tried again later; it is never fatal.
    pub fn restart_if_due<S: Sys>(&mut self, sys: &mut S) {
        let State::Waiting { at } = self.state else {
            return;
        };
        if sys.boottime() < at {
            return;
        }
        match sys.spawn(&self.restart) {
            Ok(child) => {
                self.state = State::Running {
                    pid: child.pid,
                    since: sys.boottime(),
                };
            }
            Err(e) => {
                let delay = self.schedule(sys, None);
                let cause = report::error_chain(&e);
                let msg = format!(
                    "cannot restart {}: {cause}; retrying in {}",
                    plan::AGENT_TARGET,
                    secs(delay)
                );
                report::info(sys, "agent", &msg);
            }
        }
    }

    /// Wait for the next start; returns the delay.
    fn schedule<S: Sys>(&mut self, sys: &S, uptime: Option<Duration>) -> Duration {
        let delay = self.backoff.after(uptime);
        self.state = State::Waiting {
            at: sys.boottime().saturating_add(delay),
        };
        delay
    }
}

/// The first start: the app's env (minus readiness variables it may hold),
/// then ours, and the readiness pipe as fd 3.
fn first_spec(env: &[(String, String)]) -> SpawnSpec {
    let mut vars: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k != READY_FD && k != READY_FILE)
        .cloned()
        .collect();
    vars.push((READY_FD.into(), "3".into()));
    vars.push((READY_FILE.into(), plan::AGENT_READY_FILE.into()));
    SpawnSpec {
        path: plan::AGENT_TARGET.into(),
        argv: vec![plan::AGENT_TARGET.into()],
        env: vars,
        workdir: "/".into(),
        creds: None,
        readiness_fd: true,
        console_stdin: false,
    }
}

/// A restart: the same environment, without a readiness pipe, so without
/// `HYPEMAN_AGENT_READY_FD` too (the agent refuses to start when the fd it
/// names is not its pipe, and fd 3 is then whatever it opened first).
fn restart_spec(first: &SpawnSpec) -> SpawnSpec {
    let mut spec = first.clone();
    spec.env.retain(|(k, _)| k != READY_FD);
    spec.readiness_fd = false;
    spec
}

fn report_readiness<S: Sys>(sys: &mut S, outcome: Readiness, timeout: Duration) {
    match outcome {
        Readiness::Ready => report::info(sys, "agent", "guest agent ready"),
        Readiness::TimedOut => report::error(
            sys,
            "agent",
            &format!(
                "guest agent not ready within {} ms; continuing without waiting",
                timeout.as_millis()
            ),
        ),
        Readiness::Closed => report::error(sys, "agent", "guest agent exited before it was ready"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_after_a_stable_run() {
        let mut b = Backoff::default();
        let short = Some(Duration::from_secs(5));
        let delays: Vec<u64> = (0..8).map(|_| b.after(short).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(b.after(None), MAX_DELAY);
        assert_eq!(b.after(Some(STABLE_AFTER)), FIRST_DELAY);
        assert_eq!(b.after(Some(Duration::from_secs(59))).as_secs(), 2);
    }

    #[test]
    fn a_restart_keeps_the_environment_but_not_the_readiness_fd() {
        let env = [("A".to_string(), "1".to_string())];
        let first = first_spec(&env);
        let again = restart_spec(&first);
        assert!(!again.readiness_fd);
        let keys: Vec<&str> = again.env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["A", READY_FILE]);
        assert_eq!((again.path, again.argv), (first.path, first.argv));
    }
}
