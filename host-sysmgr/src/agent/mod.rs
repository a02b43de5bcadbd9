//! The host side of the guest agent: dial it, call it.
//!
//! [`Dialer`] says how the guest's vsock port is reached: a hybrid-vsock Unix
//! socket (Cloud Hypervisor, Firecracker, vhost-device-vsock: `CONNECT
//! 2222\n` / `OK …`), AF_VSOCK (QEMU with vhost-vsock), or a plain Unix socket
//! (the agent served in-process by tests). [`AgentClient::connect`] retries
//! until the agent listens or the connect timeout passes; unary calls carry a
//! deadline and are tried once more when the channel was unavailable.

pub mod copy;
pub mod exec;

use guest_proto::guest_service_client::GuestServiceClient;
use guest_proto::*;
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};

/// Errors of dialing and calling the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No connection could be made.
    #[error("cannot reach the guest agent at {target}")]
    Connect {
        /// Where it was dialed.
        target: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The call failed.
    #[error("{method} failed")]
    Call {
        /// The RPC.
        method: &'static str,
        /// The gRPC status.
        #[source]
        source: Status,
    },
    /// The agent answered something the protocol does not allow.
    #[error("{method}: {reason}")]
    Protocol {
        /// The RPC.
        method: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// How the agent's port is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialer {
    /// Hybrid vsock: a Unix socket plus the `CONNECT <port>` handshake.
    HybridVsock {
        /// The VMM's (or vhost-device-vsock's) Unix socket.
        uds: PathBuf,
        /// The guest port (2222).
        port: u32,
    },
    /// AF_VSOCK to a guest CID.
    Vsock {
        /// The guest's CID (≥ 3).
        cid: u32,
        /// The guest port (2222).
        port: u32,
    },
    /// A plain Unix socket the agent listens on (tests).
    Unix(PathBuf),
}

impl std::fmt::Display for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dialer::HybridVsock { uds, port } => write!(f, "{} port {port}", uds.display()),
            Dialer::Vsock { cid, port } => write!(f, "vsock cid {cid} port {port}"),
            Dialer::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

type Io = TokioIo<Box<dyn Stream>>;

/// A byte stream a gRPC channel runs over.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

impl Dialer {
    /// One connection, retried until `timeout` while the guest does not listen.
    pub async fn dial(&self, timeout: Duration) -> std::io::Result<Box<dyn Stream>> {
        match self {
            Dialer::HybridVsock { uds, port } => {
                let (uds, port) = (uds.clone(), *port);
                let std_stream = tokio::task::spawn_blocking(move || {
                    crate::vsock::dial(&uds, port, timeout).map_err(std::io::Error::other)
                })
                .await
                .map_err(std::io::Error::other)??;
                std_stream.set_nonblocking(true)?;
                Ok(Box::new(tokio::net::UnixStream::from_std(std_stream)?))
            }
            Dialer::Vsock { cid, port } => {
                let addr = tokio_vsock::VsockAddr::new(*cid, *port);
                let s = retry(timeout, || tokio_vsock::VsockStream::connect(addr)).await?;
                Ok(Box::new(s))
            }
            Dialer::Unix(path) => {
                let s = retry(timeout, || tokio::net::UnixStream::connect(path)).await?;
                Ok(Box::new(s))
            }
        }
    }
}

/// Calls `connect` every 50 ms until it succeeds or `timeout` passes.
async fn retry<T, F, Fut>(timeout: Duration, mut connect: F) -> std::io::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<T>>,
{
    let deadline = tokio::time::Instant::from_std(crate::deadline::after(timeout));
    loop {
        match connect().await {
            Ok(s) => return Ok(s),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Deadlines of the client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// How long `connect` keeps trying.
    pub connect: Duration,
    /// The deadline of one unary call.
    pub call: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            call: Duration::from_secs(10),
        }
    }
}

/// A connected client of `guest.GuestService`.
#[derive(Clone)]
pub struct AgentClient {
    inner: GuestServiceClient<Channel>,
    timeouts: Timeouts,
}

impl AgentClient {
    /// Dials the agent (retrying until it listens) and opens an HTTP/2 channel.
    pub async fn connect(dialer: Dialer, timeouts: Timeouts) -> Result<AgentClient, AgentError> {
        let target = dialer.to_string();
        // The first connection is made here, so a guest that never listens is
        // reported by connect; later reconnects reuse the dialer.
        let first = dialer
            .dial(timeouts.connect)
            .await
            .map_err(|source| AgentError::Connect {
                target: target.clone(),
                source,
            })?;
        let first = std::sync::Mutex::new(Some(first));
        let connector = tower::service_fn(move |_: Uri| {
            let reuse = first.lock().ok().and_then(|mut f| f.take());
            let dialer = dialer.clone();
            async move {
                let stream = match reuse {
                    Some(s) => s,
                    None => dialer.dial(timeouts.connect).await?,
                };
                Ok::<Io, std::io::Error>(TokioIo::new(stream))
            }
        });
        let channel = Endpoint::from_static("http://guest-agent")
            .connect_with_connector(connector)
            .await
            .map_err(|e| AgentError::Connect {
                target,
                source: std::io::Error::other(e),
            })?;
        let inner = GuestServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(AgentClient { inner, timeouts })
    }

    /// The raw tonic client (streaming calls: Exec, copies).
    pub fn raw(&self) -> GuestServiceClient<Channel> {
        self.inner.clone()
    }

    fn request<T>(&self, msg: T, deadline: Duration) -> Request<T> {
        let mut req = Request::new(msg);
        req.set_timeout(deadline);
        req
    }

    /// `StatPath`.
    pub async fn stat(
        &self,
        path: &str,
        follow_links: bool,
    ) -> Result<StatPathResponse, AgentError> {
        let msg = StatPathRequest {
            path: path.into(),
            follow_links,
        };
        let call = |mut c: GuestServiceClient<Channel>, r| async move { c.stat_path(r).await };
        self.unary("StatPath", msg, self.timeouts.call, call).await
    }

    /// `Shutdown` (signal 0 = SIGTERM) with the hypeman deadline of 1.5 s,
    /// tried twice.
    pub async fn shutdown(&self, signal: i32) -> Result<(), AgentError> {
        let call = |mut c: GuestServiceClient<Channel>, r| async move { c.shutdown(r).await };
        let msg = ShutdownRequest { signal };
        self.unary("Shutdown", msg, Duration::from_millis(1500), call)
            .await?;
        Ok(())
    }

    /// `SyncClock` to the host's realtime clock now.
    pub async fn sync_clock(&self) -> Result<(), AgentError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let msg = SyncClockRequest {
            unix_nanos: i64::try_from(now.as_nanos()).unwrap_or(i64::MAX),
        };
        let call = |mut c: GuestServiceClient<Channel>, r| async move { c.sync_clock(r).await };
        self.unary("SyncClock", msg, self.timeouts.call, call)
            .await?;
        Ok(())
    }

    /// `ReconfigureNetwork`: an empty field leaves that setting as it is
    /// (an empty interface name means eth0).
    pub async fn reconfigure_network(
        &self,
        msg: ReconfigureNetworkRequest,
    ) -> Result<(), AgentError> {
        let call =
            |mut c: GuestServiceClient<Channel>, r| async move { c.reconfigure_network(r).await };
        self.unary("ReconfigureNetwork", msg, self.timeouts.call, call)
            .await?;
        Ok(())
    }

    /// `GetGPUInitStatus`.
    pub async fn gpu_status(&self) -> Result<GetGpuInitStatusResponse, AgentError> {
        let call =
            |mut c: GuestServiceClient<Channel>, r| async move { c.get_gpu_init_status(r).await };
        self.unary(
            "GetGPUInitStatus",
            GetGpuInitStatusRequest {},
            self.timeouts.call,
            call,
        )
        .await
    }

    /// `Info` (this project's agents only; a hypeman agent answers Unimplemented).
    pub async fn info(&self) -> Result<InfoResponse, AgentError> {
        let call = |mut c: GuestServiceClient<Channel>, r| async move { c.info(r).await };
        self.unary("Info", InfoRequest {}, self.timeouts.call, call)
            .await
    }

    /// One unary call with a deadline, tried once more when unavailable.
    async fn unary<M, R, F, Fut>(
        &self,
        method: &'static str,
        msg: M,
        deadline: Duration,
        call: F,
    ) -> Result<R, AgentError>
    where
        M: Clone,
        F: Fn(GuestServiceClient<Channel>, Request<M>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<R>, Status>>,
    {
        let mut last = None;
        for _ in 0..2 {
            match call(self.inner.clone(), self.request(msg.clone(), deadline)).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(s) if retryable(&s) => last = Some(s),
                Err(source) => return Err(AgentError::Call { method, source }),
            }
        }
        let source = last.unwrap_or_else(|| Status::unknown("no attempt"));
        Err(AgentError::Call { method, source })
    }
}

fn retryable(s: &Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
    )
}
