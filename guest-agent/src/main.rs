//! `guest-agent`: serves `guest.GuestService` on vsock (port 2222 by
//! default) and tells init it is ready once it listens.

use guest_agent::{clock, readiness, AgentConfig};
use std::io::Write;
use std::process::ExitCode;
use tokio_vsock::{VsockAddr, VsockListener, VMADDR_CID_ANY};

/// The contract's agent port.
const DEFAULT_PORT: u32 = guest_proto::AGENT_PORT;

const HELP: &str = "\
guest-agent: the guest side of the host <-> guest channel

USAGE: guest-agent [--port N]

Serves the gRPC service guest.GuestService (Exec, CopyToGuest, CopyFromGuest,
StatPath, Shutdown, ReconfigureNetwork, SyncClock, GetGPUInitStatus, Info) on vsock port N
(default 2222, env HYPEMAN_AGENT_PORT). Once it listens it signals readiness:
prints HYPEMAN-AGENT-READY on stdout, writes one byte to the fd named by
HYPEMAN_AGENT_READY_FD and creates the file named by HYPEMAN_AGENT_READY_FILE.
With /dev/ptp0 (kvm-ptp) it keeps the clock within 1 s of the host's: every
30 s, and at once when the kernel logs a VM fork (a snapshot restore).

OPTIONS:
  --port N     vsock port to listen on
  -h, --help   print this help
  -V, --version
";

fn parse_port(args: &[String]) -> Result<Option<u32>, String> {
    let mut port = std::env::var("HYPEMAN_AGENT_PORT").ok();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--port" => port = Some(it.next().ok_or("--port needs a value")?.clone()),
            "-h" | "--help" => return Ok(None),
            "-V" | "--version" => {
                println!("guest-agent {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    match port {
        None => Ok(Some(DEFAULT_PORT)),
        Some(p) => p
            .parse()
            .map(Some)
            .map_err(|_| format!("invalid port {p:?}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = match parse_port(&args) {
        Ok(Some(p)) => p,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("guest-agent: {e}");
            return ExitCode::from(2);
        }
    };
    match serve(port) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guest-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(port: u32) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, port)).map_err(|e| {
            std::io::Error::new(e.kind(), format!("listen on vsock port {port}: {e}"))
        })?;
        readiness::announce()?;
        let _ = std::io::stdout().flush();
        let config = AgentConfig::default();
        follow_ptp_clock(&config);
        guest_agent::serve(config, listener.incoming())
            .await
            .map_err(std::io::Error::other)
    })
}

/// With a kvm-ptp device, keep the clock on the host's (snapshot restores).
fn follow_ptp_clock(config: &AgentConfig) {
    let path = std::path::Path::new(clock::PTP_DEVICE);
    if !path.exists() {
        return;
    }
    match clock::PtpClock::open(path) {
        Ok(ptp) => {
            let forks = clock::watch_forks(config.kmsg.clone());
            let machine = config.machine.clone();
            tokio::spawn(clock::follow(
                Box::new(ptp),
                machine,
                forks,
                clock::CHECK_EVERY,
            ));
        }
        Err(e) => eprintln!(
            "guest-agent: {}: {e}; the clock is not followed",
            path.display()
        ),
    }
}
