//! The guest contract: everything the guest writes that a host reads, the
//! formats the host hands the guest, and init's parsers of outside input.
//! Pure code: no system calls (std, serde, thiserror, and tar + flate2 for
//! reading the headers tarball), so the fuzz targets and the tests run the
//! very code init runs.
//!
//! - [`config`]: `/config.json` on the config disk.
//! - [`quote`]: Go's `strconv.Quote` and its inverse.
//! - [`time`]: RFC 3339 timestamps as Go prints them.
//! - [`log`]: init's log line format.
//! - [`sentinel`]: `HYPEMAN-*` console lines, their writers and the host-side parser.
//! - [`exit`]: exit-code descriptions and init's own failure codes.
//! - [`cmdline`]: the kernel command line options init understands.
//! - [`modindex`]: `modules.dep`, `modules.softdep`, `modules.alias` and the
//!   module load order.
//! - [`network`]: the network a config asks for, checked, and its resolv.conf.
//! - [`pem`]: CA certificates from the config, checked and re-encoded.
//! - [`rtnl`]: the rtnetlink requests init sends and the ACK parser.
//! - [`userdb`]: `/etc/passwd`, `/etc/group` and the `user` field's resolution.
//! - [`fsdetect`]: root filesystem detection from superblock magic numbers.
//! - [`sysctl`]: validation of `sysctls` keys and values, and of `hostname`.
//! - [`volumes`]: the volumes a config asks for, checked one by one.
//! - [`input_event`]: evdev records and the power-key press decoder.
//! - [`kmsg`]: `/dev/kmsg` records and the OOM-kill matcher.
//! - [`headers`]: the kernel-headers tarball, read and checked entry by entry.
//! - [`gpu`]: NVIDIA GPU detection and the driver's device numbers.

pub mod cmdline;
pub mod config;
pub mod exit;
pub mod fsdetect;
pub mod gpu;
pub mod headers;
pub mod input_event;
pub mod kmsg;
pub mod log;
pub mod modindex;
pub mod network;
pub mod pem;
pub mod quote;
pub mod rtnl;
pub mod sentinel;
pub mod sysctl;
pub mod time;
pub mod userdb;
pub mod volumes;
