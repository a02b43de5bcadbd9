//! System files: versioned kernels and initrds on the host, in hypeman's
//! layout (`{data}/system/kernel/<version>/<arch>/vmlinux`,
//! `{data}/system/initrd/<arch>/<build>/initrd` + a relative `latest`
//! symlink). Installs are atomic (staged, fsynced, renamed); downloads are
//! checked against their sha256 and size while they stream; every artifact is
//! verified before its first use and re-verified whenever its inode changes.
//! See `host-sysmgr/README.md` for the layout and the commands on top.

pub mod bundle;
pub mod bzimage;
pub mod catalog;
pub mod download;
pub mod ensure;
pub mod error;
pub mod import;
pub mod initrd;
pub mod install;
pub mod layout;
pub mod ops;
pub mod record;
pub mod registry;
pub mod state;
pub mod store;

pub use error::SystemError;
pub use layout::Layout;
pub use store::Store;
