//! `Exec` from the host: start a command, feed stdin, receive output live.

use super::{AgentClient, AgentError};
use guest_proto::{exec_request, exec_response, ExecRequest, ExecStart, WindowSize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// What the command wrote and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Everything on stdout (the terminal's output with a tty).
    pub stdout: Vec<u8>,
    /// Everything on stderr.
    pub stderr: Vec<u8>,
    /// The exit code (128 + n for a signal, 124 for a timeout).
    pub exit_code: i32,
}

/// One piece of a running command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A chunk of stdout.
    Stdout(Vec<u8>),
    /// A chunk of stderr.
    Stderr(Vec<u8>),
    /// The last message.
    Exit(i32),
}

/// Input to a running command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Bytes for its stdin.
    Stdin(Vec<u8>),
    /// A new terminal size (rows, cols).
    Resize(u32, u32),
}

/// A running command: send input, receive output; dropping it (or the input
/// sender) ends the input; dropping the output ends the call, which kills the
/// command's process group in the guest.
pub struct Session {
    input: Option<mpsc::Sender<ExecRequest>>,
    output: tonic::Streaming<guest_proto::ExecResponse>,
}

impl Session {
    /// Sends input; `false` when the call is over.
    pub async fn send(&self, input: Input) -> bool {
        let request = match input {
            Input::Stdin(data) => exec_request::Request::Stdin(data),
            Input::Resize(rows, cols) => exec_request::Request::Resize(WindowSize { rows, cols }),
        };
        match &self.input {
            Some(tx) => tx
                .send(ExecRequest {
                    request: Some(request),
                })
                .await
                .is_ok(),
            None => false,
        }
    }

    /// Ends the input (EOF on the command's stdin).
    pub fn close_input(&mut self) {
        self.input = None;
    }

    /// The next piece of output; `Ok(None)` after the exit.
    pub async fn next(&mut self) -> Result<Option<Output>, AgentError> {
        let msg = self
            .output
            .message()
            .await
            .map_err(|source| AgentError::Call {
                method: "Exec",
                source,
            })?;
        let Some(msg) = msg else { return Ok(None) };
        match msg.response {
            Some(exec_response::Response::Stdout(d)) => Ok(Some(Output::Stdout(d))),
            Some(exec_response::Response::Stderr(d)) => Ok(Some(Output::Stderr(d))),
            Some(exec_response::Response::ExitCode(c)) => Ok(Some(Output::Exit(c))),
            None => Err(AgentError::Protocol {
                method: "Exec",
                reason: "a response with no known field".into(),
            }),
        }
    }
}

impl AgentClient {
    /// Starts `start` and returns the session.
    pub async fn exec_session(&self, start: ExecStart) -> Result<Session, AgentError> {
        let (tx, rx) = mpsc::channel(16);
        let first = ExecRequest {
            request: Some(exec_request::Request::Start(start)),
        };
        let _ = tx.send(first).await;
        let output = self
            .raw()
            .exec(ReceiverStream::new(rx))
            .await
            .map_err(|source| AgentError::Call {
                method: "Exec",
                source,
            })?
            .into_inner();
        Ok(Session {
            input: Some(tx),
            output,
        })
    }

    /// Runs `start` with `stdin` as its whole input and collects its output.
    pub async fn exec(&self, start: ExecStart, stdin: &[u8]) -> Result<ExecOutput, AgentError> {
        let mut session = self.exec_session(start).await?;
        for chunk in stdin.chunks(64 * 1024) {
            session.send(Input::Stdin(chunk.to_vec())).await;
        }
        session.close_input();
        let mut out = ExecOutput::default();
        while let Some(piece) = session.next().await? {
            match piece {
                Output::Stdout(d) => out.stdout.extend_from_slice(&d),
                Output::Stderr(d) => out.stderr.extend_from_slice(&d),
                Output::Exit(code) => {
                    out.exit_code = code;
                    return Ok(out);
                }
            }
        }
        Err(AgentError::Protocol {
            method: "Exec",
            reason: "the stream ended without an exit code".into(),
        })
    }
}

/// An `ExecStart` for `command` with every other field at its default.
pub fn command(command: &[&str]) -> ExecStart {
    ExecStart {
        command: command.iter().map(|s| s.to_string()).collect(),
        ..ExecStart::default()
    }
}
