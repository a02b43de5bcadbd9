//! The graceful stop of a VM, in the order a hypeman host uses:
//!
//! 1. the agent's `Shutdown` RPC (1.5 s deadline, tried twice): PID 1 gets
//!    SIGTERM (exec mode: init forwards it to the app), or SIGRTMIN+4 for a
//!    systemd guest (systemd's power-off request; SIGTERM would not do it);
//! 2. wait for the VMM to exit, up to the stop timeout (default 5 s);
//! 3. the hypervisor's power button (QMP `system_powerdown`, CH
//!    `vmm.power-button`, FC `SendCtrlAltDel`), then a short wait;
//! 4. SIGKILL of the VMM's process group.

use crate::agent::{AgentClient, Dialer, Timeouts};
use crate::instance::Instance;
use crate::vmm::Vm;
use guest_contract::log::error_chain;
use std::time::{Duration, Instant};

/// A VM to stop: one this process started ([`Vm`]), or a detached
/// instance ([`Detached`]).
pub trait Target {
    /// Whether the VMM still runs.
    fn running(&mut self) -> bool;
    /// Waits up to `timeout`; `true` once the VMM is gone.
    fn wait_exit(&mut self, timeout: Duration) -> bool;
    /// Presses the hypervisor's power button; `false` when it could not.
    fn power_button(&mut self) -> bool;
    /// SIGKILL of the VMM (and its process group).
    fn kill(&mut self);
}

impl Target for Vm {
    fn running(&mut self) -> bool {
        Vm::running(self)
    }
    fn wait_exit(&mut self, timeout: Duration) -> bool {
        matches!(self.wait_timeout(timeout), Ok(Some(_)) | Err(_))
    }
    fn power_button(&mut self) -> bool {
        self.power_down().is_ok()
    }
    fn kill(&mut self) {
        Vm::kill(self);
    }
}

/// A VMM started by another process (`run --detach`), known by its pid,
/// start time and QMP socket.
pub struct Detached {
    /// The instance.
    pub instance: Instance,
}

impl Target for Detached {
    fn running(&mut self) -> bool {
        self.instance.running()
    }
    fn wait_exit(&mut self, timeout: Duration) -> bool {
        self.instance.wait_gone(timeout)
    }
    fn power_button(&mut self) -> bool {
        let Some(sock) = &self.instance.info.control_socket else {
            return false;
        };
        crate::vmm::process::qmp(sock, "system_powerdown").is_ok()
    }
    fn kill(&mut self) {
        if self.instance.running() {
            let pid = self.instance.info.vmm_pid;
            // SAFETY: kill has no memory-safety preconditions; the pid was
            // just checked against its recorded start time, and the VMM
            // leads its own process group.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
            }
            self.instance.wait_gone(Duration::from_secs(5));
        }
    }
}

/// How the guest is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GuestKind {
    /// Exec mode: SIGTERM to init, which forwards it to the app.
    #[default]
    Exec,
    /// systemd as PID 1: SIGRTMIN+4.
    Systemd,
}

impl GuestKind {
    /// The signal `Shutdown` sends to PID 1.
    pub fn signal(self) -> i32 {
        match self {
            GuestKind::Exec => libc::SIGTERM,
            GuestKind::Systemd => libc::SIGRTMIN() + 4,
        }
    }
}

/// Knobs of the stop.
#[derive(Debug, Clone)]
pub struct StopOptions {
    /// How the agent is reached (none: skip step 1).
    pub agent: Option<Dialer>,
    /// Exec or systemd guest.
    pub kind: GuestKind,
    /// Wait after the Shutdown RPC.
    pub timeout: Duration,
    /// Wait after the power button, before SIGKILL.
    pub power_down_grace: Duration,
}

impl Default for StopOptions {
    fn default() -> Self {
        StopOptions {
            agent: None,
            kind: GuestKind::Exec,
            timeout: Duration::from_secs(5),
            power_down_grace: Duration::from_secs(2),
        }
    }
}

/// Which step ended the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoppedBy {
    /// It was not running any more.
    AlreadyGone,
    /// The guest powered off after the agent's Shutdown.
    Agent,
    /// The guest powered off after the hypervisor's power button.
    PowerButton,
    /// SIGKILL.
    Killed,
}

/// How the stop went.
#[derive(Debug, Clone)]
pub struct StopReport {
    /// The step that ended the VM.
    pub by: StoppedBy,
    /// From the first request to the VMM's exit.
    pub elapsed: Duration,
    /// Why the Shutdown RPC was not delivered, if it was not.
    pub agent_error: Option<String>,
}

/// Stops `vm` as described in the module docs; the VMM is gone on return.
pub fn stop(vm: &mut dyn Target, opts: &StopOptions) -> StopReport {
    let started = Instant::now();
    let report = |by, agent_error| StopReport {
        by,
        elapsed: started.elapsed(),
        agent_error,
    };
    if !vm.running() {
        return report(StoppedBy::AlreadyGone, None);
    }
    let mut agent_error = None;
    if let Some(dialer) = &opts.agent {
        let outcome = shutdown_rpc(dialer, opts.kind);
        let reached = !matches!(outcome, Rpc::Unreachable(_));
        agent_error = outcome.error();
        // A call that failed may still have been delivered (the guest can
        // power off before the reply leaves it): wait all the same.
        if reached && vm.wait_exit(opts.timeout) {
            return report(StoppedBy::Agent, agent_error);
        }
    }
    if vm.power_button() && vm.wait_exit(opts.power_down_grace) {
        return report(StoppedBy::PowerButton, agent_error);
    }
    vm.kill();
    report(StoppedBy::Killed, agent_error)
}

/// What became of the Shutdown RPC.
enum Rpc {
    /// The agent answered.
    Delivered,
    /// The call was sent but failed (it may still have been delivered).
    CallFailed(String),
    /// No connection to the agent.
    Unreachable(String),
}

impl Rpc {
    fn error(self) -> Option<String> {
        match self {
            Rpc::Delivered => None,
            Rpc::CallFailed(e) | Rpc::Unreachable(e) => Some(e),
        }
    }
}

/// The Shutdown RPC: connect (bounded by the same 1.5 s budget per try) and
/// call it with its deadline, twice at most.
fn shutdown_rpc(dialer: &Dialer, kind: GuestKind) -> Rpc {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Rpc::Unreachable(format!("start a runtime: {e}")),
    };
    rt.block_on(async {
        let timeouts = Timeouts {
            connect: Duration::from_millis(1500),
            call: Duration::from_millis(1500),
        };
        let client = match AgentClient::connect(dialer.clone(), timeouts).await {
            Ok(c) => c,
            Err(e) => return Rpc::Unreachable(error_chain(&e)),
        };
        match client.shutdown(kind.signal()).await {
            Ok(()) => Rpc::Delivered,
            Err(e) => Rpc::CallFailed(error_chain(&e)),
        }
    })
}
