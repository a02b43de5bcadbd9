//! vsock for QEMU without /dev/vhost-vsock: a `vhost-device-vsock` backend
//! process exposes the guest's vsock as a Unix socket with the same
//! `CONNECT <port>` handshake as Cloud Hypervisor and Firecracker.

use super::VmmError;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The backend binary (installed with `cargo install --locked vhost-device-vsock`).
pub const PROGRAM: &str = "vhost-device-vsock";

/// A running vhost-device-vsock; killed on drop.
pub struct VhostVsock {
    child: Child,
    /// vhost-user socket QEMU connects to.
    pub socket: PathBuf,
    /// Host-side socket users dial.
    pub uds_path: PathBuf,
}

fn program() -> PathBuf {
    let home_bin = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin").join(PROGRAM));
    match home_bin {
        Some(p) if p.is_file() => p,
        _ => PathBuf::from(PROGRAM),
    }
}

/// `<socket>.log` beside the vhost-user socket, for the backend's stderr.
fn log_file(socket: &Path) -> Result<std::fs::File, VmmError> {
    let path = socket.with_extension("log");
    std::fs::File::create(&path).map_err(|source| VmmError::Io {
        context: format!("create {}", path.display()),
        source,
    })
}

impl VhostVsock {
    /// Start the backend for `cid` and wait (≤ 5 s) until its socket exists.
    pub fn start(cid: u32, socket: &Path, uds_path: &Path) -> Result<VhostVsock, VmmError> {
        let _ = std::fs::remove_file(socket);
        let _ = std::fs::remove_file(uds_path);
        let mut cmd = Command::new(program());
        cmd.arg("--guest-cid")
            .arg(cid.to_string())
            .arg("--socket")
            .arg(socket)
            .arg("--uds-path")
            .arg(uds_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(socket)?);
        // SAFETY: prctl is async-signal-safe and touches no parent memory.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| VmmError::Spawn {
            program: PROGRAM.into(),
            source,
        })?;
        let mut v = VhostVsock {
            child,
            socket: socket.into(),
            uds_path: uds_path.into(),
        };
        v.wait_socket(Duration::from_secs(5))?;
        Ok(v)
    }

    fn wait_socket(&mut self, timeout: Duration) -> Result<(), VmmError> {
        let deadline = crate::deadline::after(timeout);
        while !self.socket.exists() {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(VmmError::Wait(format!("{PROGRAM} exited early: {st}")));
            }
            if Instant::now() > deadline {
                return Err(VmmError::Wait(format!(
                    "{PROGRAM}: no socket {} after {timeout:?}",
                    self.socket.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

impl Drop for VhostVsock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
