//! A running VMM process: start, wait, power down, quit, kill.
//!
//! The VMM runs in its own process group with PR_SET_PDEATHSIG = SIGKILL, so it
//! dies with its parent; dropping a [`Vm`] kills and reaps it.

use super::{qmp, Backend, ControlRequest, Launch, VmConfig, VmmError};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A started VM.
pub struct Vm {
    child: Option<Child>,
    control: Option<PathBuf>,
    power_down: ControlRequest,
    quit: ControlRequest,
    /// What was started (for logs and reports).
    pub launch: Launch,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmmError {
    let context = context.into();
    move |source| VmmError::Io { context, source }
}

fn write_files(launch: &Launch) -> Result<(), VmmError> {
    for (path, contents) in &launch.files {
        std::fs::write(path, contents).map_err(io_err(format!("write {}", path.display())))?;
    }
    Ok(())
}

fn command(launch: &Launch, stderr_log: &Path) -> Result<Command, VmmError> {
    let stderr = std::fs::File::create(stderr_log)
        .map_err(io_err(format!("create {}", stderr_log.display())))?;
    let mut cmd = Command::new(&launch.program);
    cmd.args(&launch.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0);
    let parent = i32::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: prctl and getppid are async-signal-safe and touch no parent memory.
    unsafe {
        cmd.pre_exec(move || {
            // Note: PDEATHSIG fires when the *thread* that forked exits; spawn
            // VMs from a long-lived thread.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                // The parent died before prctl took effect.
                return Err(std::io::Error::other("parent exited during start"));
            }
            Ok(())
        });
    }
    Ok(cmd)
}

impl Vm {
    /// Start `cfg` with `backend`. The VMM's stderr goes to `<runtime_dir>/vmm.stderr`.
    pub fn start(cfg: &VmConfig, backend: &dyn Backend) -> Result<Vm, VmmError> {
        let launch = backend.launch(cfg)?;
        std::fs::create_dir_all(&cfg.runtime_dir).map_err(io_err("create runtime dir"))?;
        write_files(&launch)?;
        if let Some(sock) = &launch.control_socket {
            let _ = std::fs::remove_file(sock);
        }
        let child = command(&launch, &cfg.runtime_dir.join("vmm.stderr"))?
            .spawn()
            .map_err(|source| VmmError::Spawn {
                program: launch.program.clone(),
                source,
            })?;
        Ok(Vm {
            child: Some(child),
            control: launch.control_socket.clone(),
            power_down: backend.power_down_request(),
            quit: backend.quit_request(),
            launch,
        })
    }

    /// Process id of the VMM.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Wait for the VMM to exit by itself, up to `timeout`; `Ok(None)` on timeout.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, VmmError> {
        let deadline = crate::deadline::after(timeout);
        let Some(child) = self.child.as_mut() else {
            return Err(VmmError::Wait("already reaped".into()));
        };
        loop {
            if let Some(st) = child
                .try_wait()
                .map_err(|e| VmmError::Wait(e.to_string()))?
            {
                self.child = None;
                return Ok(Some(st));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the VMM still runs (an exited VMM is reaped here, once).
    pub fn running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_))) => {
                // Reaped: its pid (and group id) may be reused from now on.
                self.child = None;
                false
            }
            _ => false,
        }
    }

    /// Ask the guest to power down (ACPI power button).
    pub fn power_down(&self) -> Result<(), VmmError> {
        self.control_request(&self.power_down)
    }

    /// Stop the VMM at once through its control socket.
    pub fn quit(&self) -> Result<(), VmmError> {
        self.control_request(&self.quit)
    }

    /// Press Ctrl-Alt-Del on the guest's keyboard (QEMU only, via QMP
    /// `send-key`): our init turns it into SIGINT for the app.
    pub fn ctrl_alt_del(&self) -> Result<(), VmmError> {
        let Some(path) = &self.control else {
            return Err(VmmError::Control {
                path: String::new(),
                reason: "no control socket".into(),
            });
        };
        let keys =
            ["ctrl", "alt", "delete"].map(|k| serde_json::json!({"type": "qcode", "data": k}));
        let request = serde_json::json!({"execute": "send-key", "arguments": {"keys": keys}});
        qmp_request(path, &request.to_string(), false).map_err(|e| VmmError::Control {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// SIGKILL the VMM's process group and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill has no memory-safety preconditions; the group is ours.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn control_request(&self, req: &ControlRequest) -> Result<(), VmmError> {
        let Some(path) = &self.control else {
            return Err(VmmError::Control {
                path: String::new(),
                reason: "no control socket".into(),
            });
        };
        let fail = |reason: String| VmmError::Control {
            path: path.display().to_string(),
            reason,
        };
        match req {
            ControlRequest::Qmp(cmd) => qmp(path, cmd).map_err(|e| fail(e.to_string())),
            ControlRequest::Http(method, uri, body) => {
                http(path, method, uri, body).map_err(|e| fail(e.to_string()))
            }
            ControlRequest::Unsupported => Err(fail("not supported by this backend".into())),
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Connect to a control socket, waiting (≤ 2 s) for the VMM to create it.
fn connect(path: &Path) -> std::io::Result<UnixStream> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let s = loop {
        match UnixStream::connect(path) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// One QMP command after the capabilities handshake; waits for its `return`.
pub fn qmp(path: &Path, command: &str) -> std::io::Result<()> {
    let request = serde_json::json!({ "execute": command }).to_string();
    qmp_request(path, &request, command == "quit")
}

/// One raw QMP request (a JSON object) after the capabilities handshake.
/// `closes` says the VMM may close the socket instead of answering (quit).
pub fn qmp_request(path: &Path, request: &str, closes: bool) -> std::io::Result<()> {
    let stream = connect(path)?;
    let mut reader = qmp::LineReader::new(stream.try_clone()?);
    let mut w = stream;
    let handshake = serde_json::json!({ "execute": "qmp_capabilities" }).to_string();
    for (req, may_close) in [(handshake.as_str(), false), (request, closes)] {
        writeln!(w, "{req}")?;
        match qmp::wait_reply(&mut reader)? {
            qmp::Outcome::Return => {}
            // quit closes the socket before or after answering.
            qmp::Outcome::Closed if may_close => return Ok(()),
            qmp::Outcome::Closed => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            qmp::Outcome::Error(text) => return Err(std::io::Error::other(text)),
        }
    }
    Ok(())
}

/// A minimal HTTP/1.1 request over a Unix socket (Cloud Hypervisor, Firecracker).
pub fn http(path: &Path, method: &str, uri: &str, body: &str) -> std::io::Result<()> {
    let mut s = connect(path)?;
    write!(
        s,
        "{method} {uri} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    let status = String::from_utf8_lossy(&head[9..12]).to_string();
    if status.starts_with('2') {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("HTTP {status}")))
    }
}
