//! The small RPCs: `StatPath`, `Shutdown`, `SyncClock`, `GetGPUInitStatus`
//! and `Info`.

use guest_proto::{GetGpuInitStatusResponse, GpuInitState, InfoResponse, StatPathResponse};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// What the agent may change on the machine: PID 1's signals and the clock.
/// The real one acts; tests pass one that records (so a test never signals
/// the host's PID 1 or sets the host's clock).
pub trait Machine: Send + Sync + 'static {
    /// Sends `signal` to the process `Shutdown` stops (PID 1 in a guest).
    fn signal_init(&self, signal: i32) -> std::io::Result<()>;
    /// Sets CLOCK_REALTIME.
    fn set_clock(&self, since_epoch: Duration) -> std::io::Result<()>;
}

/// The real machine: PID 1 and the system clock.
pub struct RealMachine;

impl Machine for RealMachine {
    fn signal_init(&self, signal: i32) -> std::io::Result<()> {
        // SAFETY: kill has no memory-safety preconditions; real-time signals
        // (systemd's SIGRTMIN+4) are why nix's Signal enum is not used.
        if unsafe { libc::kill(1, signal) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn set_clock(&self, since_epoch: Duration) -> std::io::Result<()> {
        let ts = nix::sys::time::TimeSpec::from_duration(since_epoch);
        nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts)?;
        Ok(())
    }
}

/// `StatPath`: a missing path is `exists=false` with no error.
pub fn stat_path(path: &str, follow_links: bool) -> StatPathResponse {
    let p = Path::new(path);
    if !p.is_absolute() {
        return StatPathResponse {
            error: format!("path {path:?} is not absolute"),
            ..Default::default()
        };
    }
    let meta = if follow_links {
        std::fs::metadata(p)
    } else {
        std::fs::symlink_metadata(p)
    };
    let meta = match meta {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return StatPathResponse::default(),
        Err(e) => {
            return StatPathResponse {
                error: format!("{path}: {e}"),
                ..Default::default()
            }
        }
    };
    let ft = meta.file_type();
    let link_target = if ft.is_symlink() {
        std::fs::read_link(p)
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        String::new()
    };
    StatPathResponse {
        exists: true,
        is_dir: ft.is_dir(),
        is_file: ft.is_file(),
        is_symlink: ft.is_symlink(),
        link_target,
        mode: meta.permissions().mode() & 0o7777,
        size: i64::try_from(meta.size()).unwrap_or(i64::MAX),
        error: String::new(),
    }
}

/// Delay between answering `Shutdown` and signalling PID 1, so the answer
/// leaves the guest before init tears everything down.
pub const SHUTDOWN_DELAY: Duration = Duration::from_millis(100);

/// `Shutdown`: signal 0 means SIGTERM. The signal is validated now and sent
/// [`SHUTDOWN_DELAY`] after the reply.
pub fn shutdown(machine: Arc<dyn Machine>, signal: i32) -> Result<(), Status> {
    let signal = if signal == 0 { libc::SIGTERM } else { signal };
    if !(1..=libc::SIGRTMAX()).contains(&signal) {
        return Err(Status::invalid_argument(format!(
            "{signal} is not a signal"
        )));
    }
    tokio::spawn(async move {
        tokio::time::sleep(SHUTDOWN_DELAY).await;
        if let Err(e) = machine.signal_init(signal) {
            eprintln!("guest-agent: Shutdown: signal {signal} to PID 1: {e}");
        }
    });
    Ok(())
}

/// `SyncClock`: the host's CLOCK_REALTIME in nanoseconds since the epoch.
pub fn sync_clock(machine: &dyn Machine, unix_nanos: i64) -> Result<(), Status> {
    let nanos = u64::try_from(unix_nanos)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            Status::invalid_argument(format!("unix_nanos {unix_nanos} is not a time after 1970"))
        })?;
    machine
        .set_clock(Duration::from_nanos(nanos))
        .map_err(|e| Status::internal(format!("set the clock: {e}")))
}

/// `GetGPUInitStatus` from init's GPU step outcome (`ok …` / `failed:
/// <why>`, absent without a GPU) and kernel log records (`/dev/kmsg`
/// text): FAILED when an `NVRM:` record says `RmInitAdapter failed!` or
/// init's step failed, OK when the step succeeded or the driver logged
/// without failing, UNKNOWN otherwise (no GPU).
pub fn gpu_status(init: Option<&str>, kmsg_records: &str) -> GetGpuInitStatusResponse {
    let mut seen = init.is_some_and(|s| s.starts_with("ok"));
    if let Some(why) = init.and_then(|s| s.strip_prefix("failed: ")) {
        return GetGpuInitStatusResponse {
            state: GpuInitState::Failed.into(),
            failure_message: format!("init: {}", why.trim_end()),
        };
    }
    for message in kmsg_records.lines().map(kmsg_message) {
        if let Some(rest) = message.strip_prefix("NVRM:") {
            seen = true;
            if rest.contains("RmInitAdapter failed!") {
                return GetGpuInitStatusResponse {
                    state: GpuInitState::Failed.into(),
                    failure_message: message.to_string(),
                };
            }
        }
    }
    let state = if seen {
        GpuInitState::Ok
    } else {
        GpuInitState::Unknown
    };
    GetGpuInitStatusResponse {
        state: state.into(),
        failure_message: String::new(),
    }
}

/// The message of one `/dev/kmsg` record (`prio,seq,usec,flags;message`); a
/// plain log line (dmesg output) is taken as it is.
fn kmsg_message(line: &str) -> &str {
    match line.split_once(';') {
        Some((head, msg)) if head.split(',').count() >= 3 => msg,
        _ => line,
    }
}

/// Reads what `/dev/kmsg` holds now, without blocking (at most `limit` bytes).
pub fn read_kmsg(path: &Path, limit: usize) -> String {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    else {
        return String::new();
    };
    let mut out = Vec::new();
    let mut record = vec![0u8; 8192];
    while out.len() < limit {
        match f.read(&mut record) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&record[..n]);
                if !record[..n].ends_with(b"\n") {
                    out.push(b'\n');
                }
            }
            // EPIPE: a record was overwritten before we read it; go on.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `Info`: the agent, the protocol, init's boot phases, uptime and kernel.
pub fn info(boot_timings: &Path) -> InfoResponse {
    InfoResponse {
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        protocol_version: guest_proto::PROTOCOL_VERSION,
        boot_phases: boot_phases(&std::fs::read_to_string(boot_timings).unwrap_or_default()),
        uptime_seconds: uptime().as_secs_f64(),
        kernel_release: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

/// `name=micros` words (init's timing file); anything else is skipped.
pub fn boot_phases(text: &str) -> Vec<guest_proto::BootPhase> {
    text.split_whitespace()
        .filter_map(|w| {
            let (name, micros) = w.split_once('=')?;
            Some(guest_proto::BootPhase {
                name: name.to_string(),
                micros: micros.parse().ok()?,
            })
        })
        .collect()
}

fn uptime() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(Duration::from)
        .unwrap_or_default()
}
