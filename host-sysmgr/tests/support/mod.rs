pub mod http;
pub mod registry;
