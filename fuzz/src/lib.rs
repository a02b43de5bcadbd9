//! Invariants checked on every fuzz input, one module per crate under test.
//! The cargo-fuzz targets (`fuzz_targets/*.rs`) call these; the stable test
//! suite includes the same files (`#[path]`) to replay the checked-in corpus
//! (`corpus/<target>/`). A panic is a finding.

pub mod agent;
pub mod contract;
pub mod host;
pub mod initrd;
pub mod replay;
