//! `Exec`: run a command in the guest, streaming its output live.
//!
//! The first request must be `start`. The process runs in a process group of
//! its own (a session with a controlling pty when `tty` is set), so a timeout
//! or a client that hangs up kills the whole group. stdout and stderr are sent
//! in chunks as they are read, never buffered to the end; the last message is
//! `exit_code` (128 + n for a signal, 124 after a timeout).

use crate::pty::{Master, Pty};
use guest_proto::{exec_request, exec_response, ExecRequest, ExecResponse, ExecStart};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

/// Largest output chunk sent in one message.
pub const CHUNK: usize = 32 * 1024;
/// Exit code reported when `timeout_seconds` ran out.
pub const TIMEOUT_EXIT: i32 = 124;
/// How long output is still drained after the process exited (a background
/// child may hold the pipe open forever).
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// The shell run for an empty command.
const DEFAULT_SHELL: &str = "/bin/sh";

type Tx = mpsc::Sender<Result<ExecResponse, Status>>;

/// Starts the command of the stream's first message and returns the stream
/// of responses. A start failure is the RPC's error.
pub async fn exec(
    mut requests: Streaming<ExecRequest>,
) -> Result<mpsc::Receiver<Result<ExecResponse, Status>>, Status> {
    let start = match requests.message().await? {
        Some(ExecRequest {
            request: Some(exec_request::Request::Start(start)),
        }) => start,
        Some(_) => {
            return Err(Status::invalid_argument(
                "the first Exec message must be start",
            ))
        }
        None => return Err(Status::invalid_argument("Exec stream ended before start")),
    };
    let running = Running::spawn(&start)?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(running.supervise(requests, tx, timeout_of(&start)));
    Ok(rx)
}

fn timeout_of(start: &ExecStart) -> Option<Duration> {
    u64::try_from(start.timeout_seconds)
        .ok()
        .filter(|&s| s > 0)
        .map(Duration::from_secs)
}

/// Where the child's output and input go.
enum Io {
    Pipes {
        stdin: Option<tokio::process::ChildStdin>,
        stdout: tokio::process::ChildStdout,
        stderr: tokio::process::ChildStderr,
    },
    Tty(Master),
}

/// A started command.
struct Running {
    child: Child,
    pgid: i32,
    io: Option<Io>,
}

impl Running {
    fn spawn(start: &ExecStart) -> Result<Running, Status> {
        let (program, args) = match start.command.split_first() {
            Some((p, a)) => (p.as_str(), a),
            None => (DEFAULT_SHELL, &[][..]),
        };
        check_cwd(&start.cwd)?;
        let mut cmd = Command::new(program);
        cmd.args(args).envs(&start.env).kill_on_drop(true);
        if !start.cwd.is_empty() {
            cmd.current_dir(&start.cwd);
        }
        let (child, io) = if start.tty {
            spawn_tty(cmd, start, program)?
        } else {
            spawn_pipes(cmd, program)?
        };
        let pgid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| Status::internal("the process exited before it was watched"))?;
        Ok(Running {
            child,
            pgid,
            io: Some(io),
        })
    }

    async fn supervise(
        mut self,
        requests: Streaming<ExecRequest>,
        tx: Tx,
        limit: Option<Duration>,
    ) {
        let (readers, input) = match self.split_io(&tx) {
            Ok(split) => split,
            Err(e) => {
                kill_group(self.pgid);
                let _ = tx.send(Err(Status::internal(format!("pty: {e}")))).await;
                return;
            }
        };
        let stdin_task = tokio::spawn(forward_input(requests, input));
        let code = self.wait(&tx, limit).await;
        stdin_task.abort();
        for reader in readers {
            let drained = tokio::time::timeout(DRAIN_GRACE, reader).await;
            if drained.is_err() {
                kill_group(self.pgid);
            }
        }
        let last = exec_response::Response::ExitCode(code);
        let _ = tx
            .send(Ok(ExecResponse {
                response: Some(last),
            }))
            .await;
    }

    fn split_io(&mut self, tx: &Tx) -> std::io::Result<(Vec<tokio::task::JoinHandle<()>>, Input)> {
        Ok(match self.io.take() {
            None => (Vec::new(), Input::Pipe(None)),
            Some(Io::Pipes {
                stdin,
                stdout,
                stderr,
            }) => {
                let out = tokio::spawn(pump(stdout, tx.clone(), Stream::Stdout));
                let err = tokio::spawn(pump(stderr, tx.clone(), Stream::Stderr));
                (vec![out, err], Input::Pipe(stdin))
            }
            Some(Io::Tty(master)) => {
                let (reader, writer, resizer) = master.split()?;
                let out = tokio::spawn(pump(reader, tx.clone(), Stream::Stdout));
                (vec![out], Input::Tty(writer, resizer))
            }
        })
    }

    /// Waits for the exit, a timeout, or the client hanging up.
    async fn wait(&mut self, tx: &Tx, limit: Option<Duration>) -> i32 {
        let sleep = async {
            match limit {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = self.child.wait() => status.map_or(1, exit_code),
            () = sleep => {
                kill_group(self.pgid);
                let _ = self.child.wait().await;
                TIMEOUT_EXIT
            }
            () = tx.closed() => {
                kill_group(self.pgid);
                self.child.wait().await.map_or(1, exit_code)
            }
        }
    }
}

fn check_cwd(cwd: &str) -> Result<(), Status> {
    if cwd.is_empty() {
        return Ok(());
    }
    match std::fs::metadata(cwd) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Status::invalid_argument(format!(
            "cwd {cwd}: not a directory"
        ))),
        Err(e) => Err(Status::invalid_argument(format!("cwd {cwd}: {e}"))),
    }
}

fn spawn_pipes(mut cmd: Command, program: &str) -> Result<(Child, Io), Status> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| start_error(program, &e))?;
    let taken = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (stdin, Some(stdout), Some(stderr)) = taken else {
        return Err(Status::internal("the child's pipes are missing"));
    };
    Ok((
        child,
        Io::Pipes {
            stdin,
            stdout,
            stderr,
        },
    ))
}

fn spawn_tty(mut cmd: Command, start: &ExecStart, program: &str) -> Result<(Child, Io), Status> {
    let rows = if start.rows == 0 { 24 } else { start.rows };
    let cols = if start.cols == 0 { 80 } else { start.cols };
    let pty = Pty::open(rows, cols).map_err(|e| Status::internal(format!("open a pty: {e}")))?;
    if !start.env.contains_key("TERM") {
        cmd.env("TERM", "xterm-256color");
    }
    let master = pty
        .attach(&mut cmd)
        .map_err(|e| Status::internal(format!("set up the pty: {e}")))?;
    let child = cmd.spawn().map_err(|e| start_error(program, &e))?;
    // The child holds the terminal side now; keeping ours would hide its EOF.
    drop(cmd);
    Ok((child, Io::Tty(master)))
}

/// A start failure as a gRPC status with a message naming the program.
fn start_error(program: &str, e: &std::io::Error) -> Status {
    use std::io::ErrorKind;
    let msg = format!("cannot start {program:?}: {e}");
    match e.kind() {
        ErrorKind::NotFound => Status::not_found(msg),
        ErrorKind::PermissionDenied => Status::permission_denied(msg),
        _ => Status::failed_precondition(msg),
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// SIGKILL a whole process group (ignoring one that is already gone).
pub fn kill_group(pgid: i32) {
    if pgid > 1 {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Sends what `reader` yields, chunk by chunk, until EOF (or EIO: a pty
/// whose terminal side closed) or the client is gone.
async fn pump(mut reader: impl AsyncRead + Unpin, tx: Tx, which: Stream) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let data = buf[..n].to_vec();
        let response = match which {
            Stream::Stdout => exec_response::Response::Stdout(data),
            Stream::Stderr => exec_response::Response::Stderr(data),
        };
        let msg = ExecResponse {
            response: Some(response),
        };
        if tx.send(Ok(msg)).await.is_err() {
            return;
        }
    }
}

/// Where stdin and resizes go.
enum Input {
    Pipe(Option<tokio::process::ChildStdin>),
    Tty(tokio::fs::File, crate::pty::Resizer),
}

impl Input {
    fn writer(&mut self) -> Option<&mut (dyn AsyncWrite + Unpin + Send)> {
        match self {
            Input::Pipe(Some(w)) => Some(w),
            Input::Pipe(None) => None,
            Input::Tty(w, _) => Some(w),
        }
    }
}

/// Feeds stdin and window sizes from the client until its stream ends (then
/// the child's stdin is closed: EOF, or ^D on a tty).
async fn forward_input(mut requests: Streaming<ExecRequest>, mut input: Input) {
    while let Ok(Some(req)) = requests.message().await {
        match req.request {
            Some(exec_request::Request::Stdin(data)) => {
                let Some(w) = input.writer() else { continue };
                if w.write_all(&data).await.is_err() || w.flush().await.is_err() {
                    input = Input::Pipe(None);
                }
            }
            Some(exec_request::Request::Resize(size)) => {
                if let Input::Tty(_, resizer) = &input {
                    let _ = resizer.resize(size.rows, size.cols);
                }
            }
            Some(exec_request::Request::Start(_)) | None => {}
        }
    }
    if let Input::Tty(w, _) = &mut input {
        // End of input on a terminal is the EOF character.
        let _ = w.write_all(&[4]).await;
    }
}
