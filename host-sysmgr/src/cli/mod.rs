//! The subcommands of the `host-sysmgr` binary.

pub mod detach;
pub mod instances;
pub mod run;
pub mod system;
pub mod volumes;

/// Interrupted by SIGINT or SIGTERM (exit status 130).
#[derive(Debug, thiserror::Error)]
#[error("interrupted; the VM was killed")]
pub struct Interrupted;
