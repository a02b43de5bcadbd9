//! The guest contract: everything the guest writes that a host reads, and the
//! formats the host hands the guest. Pure code: no system calls.
