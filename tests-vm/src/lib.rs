//! Test harness shared by the project's end-to-end tests: locating and building
//! release artifacts, and (with the VM runner) booting them.

pub mod artifacts;
