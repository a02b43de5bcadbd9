//! The guest contract: everything the guest writes that a host reads, and the
//! formats the host hands the guest. Pure code: no system calls.
//!
//! - [`config`]: `/config.json` on the config disk.
//! - [`quote`]: Go's `strconv.Quote` and its inverse.
//! - [`time`]: RFC 3339 timestamps as Go prints them.
//! - [`log`]: init's log line format.
//! - [`sentinel`]: `HYPEMAN-*` console lines, their writers and the host-side parser.
//! - [`exit`]: exit-code descriptions and init's own failure codes.

pub mod config;
pub mod exit;
pub mod log;
pub mod quote;
pub mod sentinel;
pub mod time;
