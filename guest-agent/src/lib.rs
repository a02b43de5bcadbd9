//! The guest agent: `guest.GuestService` (hypeman's wire format, see
//! `guest-proto`) served over any listener — vsock port 2222 in a guest, a
//! Unix socket in tests.
//!
//! - [`exec`]: `Exec`, live output, tty, timeout, process-group kill.
//! - [`copy_to`] / [`copy_from`]: files and trees in and out, atomically.
//! - [`clock`]: following the host's PTP clock after a snapshot restore.
//! - [`network`]: `ReconfigureNetwork` over rtnetlink.
//! - [`system`]: `StatPath`, `Shutdown`, `SyncClock`, `GetGPUInitStatus`, `Info`.
//! - [`readiness`]: telling init the agent listens.

pub mod clock;
pub mod copy_from;
pub mod copy_to;
pub mod exec;
pub mod network;
pub mod pty;
pub mod readiness;
pub mod system;

use guest_proto::guest_service_server::{GuestService, GuestServiceServer};
use guest_proto::*;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// What the agent reads and acts on.
#[derive(Clone)]
pub struct AgentConfig {
    /// PID 1's signals and the clock.
    pub machine: Arc<dyn system::Machine>,
    /// The kernel log (`/dev/kmsg`), read for the GPU status.
    pub kmsg: PathBuf,
    /// init's boot timings (`name=micros` words).
    pub boot_timings: PathBuf,
    /// init's GPU step outcome (`ok …` or `failed: <why>`).
    pub gpu_init: PathBuf,
    /// Where `ReconfigureNetwork` writes DNS servers.
    pub resolv_conf: PathBuf,
}

/// Where init leaves its boot timings for the agent.
pub const BOOT_TIMINGS: &str = "/run/hypeman/boot-timings";
/// Where init leaves its GPU step's outcome for the agent.
pub const GPU_INIT_STATUS: &str = "/run/hypeman/gpu-init.status";
/// Most kernel log bytes read for one GPU status.
const KMSG_LIMIT: usize = 4 << 20;

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            machine: Arc::new(system::RealMachine),
            kmsg: PathBuf::from("/dev/kmsg"),
            boot_timings: PathBuf::from(BOOT_TIMINGS),
            gpu_init: PathBuf::from(GPU_INIT_STATUS),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }
}

/// The service.
pub struct Agent {
    config: AgentConfig,
}

/// The tonic service for `config`, with the message size limits of the protocol.
pub fn service(config: AgentConfig) -> GuestServiceServer<Agent> {
    GuestServiceServer::new(Agent { config })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Serves connections from `incoming` until it ends.
pub async fn serve<S, IO, E>(
    config: AgentConfig,
    incoming: S,
) -> Result<(), tonic::transport::Error>
where
    S: tokio_stream::Stream<Item = Result<IO, E>> + Send + 'static,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tonic::transport::Server::builder()
        .add_service(service(config))
        .serve_with_incoming(incoming)
        .await
}

/// An error and its causes, `: `-separated (a gRPC status carries text only).
pub use guest_contract::log::error_chain;

type BoxStream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl GuestService for Agent {
    type ExecStream = BoxStream<ExecResponse>;
    type CopyFromGuestStream = BoxStream<CopyFromGuestResponse>;

    async fn exec(
        &self,
        request: Request<Streaming<ExecRequest>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let rx = exec::exec(request.into_inner()).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn copy_to_guest(
        &self,
        request: Request<Streaming<CopyToGuestRequest>>,
    ) -> Result<Response<CopyToGuestResponse>, Status> {
        Ok(Response::new(
            copy_to::copy_to_guest(request.into_inner()).await,
        ))
    }

    async fn copy_from_guest(
        &self,
        request: Request<CopyFromGuestRequest>,
    ) -> Result<Response<Self::CopyFromGuestStream>, Status> {
        let req = request.into_inner();
        let rx = copy_from::copy_from_guest(req.path, req.follow_links)?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn stat_path(
        &self,
        request: Request<StatPathRequest>,
    ) -> Result<Response<StatPathResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(system::stat_path(
            &req.path,
            req.follow_links,
        )))
    }

    async fn shutdown(
        &self,
        request: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        system::shutdown(self.config.machine.clone(), request.into_inner().signal)?;
        Ok(Response::new(ShutdownResponse {}))
    }

    async fn reconfigure_network(
        &self,
        request: Request<ReconfigureNetworkRequest>,
    ) -> Result<Response<ReconfigureNetworkResponse>, Status> {
        let plan = network::NetPlan::from_request(request.get_ref())?;
        network::apply(&plan, &self.config.resolv_conf).await?;
        Ok(Response::new(ReconfigureNetworkResponse {}))
    }

    async fn sync_clock(
        &self,
        request: Request<SyncClockRequest>,
    ) -> Result<Response<SyncClockResponse>, Status> {
        system::sync_clock(
            self.config.machine.as_ref(),
            request.into_inner().unix_nanos,
        )?;
        Ok(Response::new(SyncClockResponse {}))
    }

    async fn get_gpu_init_status(
        &self,
        _request: Request<GetGpuInitStatusRequest>,
    ) -> Result<Response<GetGpuInitStatusResponse>, Status> {
        let kmsg = self.config.kmsg.clone();
        let init_file = self.config.gpu_init.clone();
        let (text, init) = tokio::task::spawn_blocking(move || {
            let init = std::fs::read(&init_file)
                .ok()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(64 << 10)]).into_owned());
            (system::read_kmsg(&kmsg, KMSG_LIMIT), init)
        })
        .await
        .map_err(|e| Status::internal(format!("read the kernel log: {e}")))?;
        Ok(Response::new(system::gpu_status(init.as_deref(), &text)))
    }

    async fn info(&self, _request: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(system::info(&self.config.boot_timings)))
    }
}
