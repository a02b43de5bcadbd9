//! Host-side system manager.
