//! The guest agent's wire protocol: package `guest`, service `GuestService`
//! (see `proto/guest.proto`), as prost messages plus the tonic server and
//! client. The agent and every host-side client use these types; nothing
//! re-declares a message.

#![allow(missing_docs, clippy::doc_markdown, clippy::large_enum_variant)]

/// Generated from `proto/guest.proto`.
pub mod guest {
    tonic::include_proto!("guest");
}

pub use guest::*;

/// The protocol generation this crate speaks: hypeman's methods plus `Info`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The vsock port the agent listens on.
pub const AGENT_PORT: u32 = 2222;

/// Largest gRPC message either side accepts (a data chunk is far smaller).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
