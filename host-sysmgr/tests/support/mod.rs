pub mod http;
pub mod oci;
pub mod registry;
