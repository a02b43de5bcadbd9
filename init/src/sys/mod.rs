//! The system-call seam of `init`.
//!
//! Every effect of the boot path goes through [`Sys`]. The real implementation
//! ([`real::RealSys`]) holds all the `unsafe`; the recording fake (`fake`, tests
//! only) lets the whole boot sequence run without a VM.

pub mod netlink;
pub mod real;

#[cfg(test)]
pub mod fake;

pub use guest_contract::userdb::Credentials;
use nix::errno::Errno;
use std::io;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

/// Filesystem magic of ramfs (statfs f_type).
pub const RAMFS_MAGIC: i64 = 0x8584_58f6;
/// Filesystem magic of tmpfs (statfs f_type).
pub const TMPFS_MAGIC: i64 = 0x0102_1994;

/// A file to read off one of the disks [`Sys::mount_concurrently`] mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOff {
    /// Which of the mounts (index).
    pub mount: usize,
    /// The file's path (under that mount's target).
    pub path: String,
    /// At most this many bytes.
    pub limit: usize,
}

/// What [`Sys::mount_concurrently`] did: each mount's result, in order, and
/// the file's (when a [`ReadOff`] was asked for and its disk mounted).
pub type Mounted = (Vec<io::Result<()>>, Option<io::Result<Vec<u8>>>);

/// One mount(2) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Source (device, or a name for virtual filesystems).
    pub source: String,
    /// Mount point.
    pub target: String,
    /// Filesystem type; empty for bind and move mounts.
    pub fstype: String,
    /// Mount flags.
    pub flags: MountFlags,
    /// Filesystem-specific options.
    pub data: String,
}

/// The subset of mount flags `init` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MountFlags {
    /// MS_RDONLY
    pub read_only: bool,
    /// MS_NOSUID | MS_NODEV
    pub nosuid_nodev: bool,
    /// MS_NOEXEC
    pub noexec: bool,
    /// MS_BIND
    pub bind: bool,
    /// MS_REC
    pub recursive: bool,
}

impl Mount {
    /// A mount of a filesystem of type `fstype`.
    pub fn fs(source: &str, target: &str, fstype: &str, flags: MountFlags, data: &str) -> Self {
        Mount {
            source: source.to_string(),
            target: target.to_string(),
            fstype: fstype.to_string(),
            flags,
            data: data.to_string(),
        }
    }

    /// A bind mount (recursive when `recursive`).
    pub fn bind(source: &str, target: &str, recursive: bool) -> Self {
        let flags = MountFlags {
            bind: true,
            recursive,
            ..MountFlags::default()
        };
        Mount::fs(source, target, "", flags, "")
    }
}

/// What to run in a child process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnSpec {
    /// Path of the executable (already resolved).
    pub path: String,
    /// Full argv, argv[0] included.
    pub argv: Vec<String>,
    /// Exact environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub workdir: String,
    /// Credentials to switch to, if any.
    pub creds: Option<Credentials>,
    /// Hand the child the write end of a readiness pipe as fd 3.
    pub readiness_fd: bool,
    /// Keep init's stdin (the console) and make it the controlling terminal
    /// (debug shell) instead of /dev/null.
    pub console_stdin: bool,
}

/// A started child.
#[derive(Debug)]
pub struct Child {
    /// Process id.
    pub pid: i32,
    /// Read end of the readiness pipe, when one was asked for.
    pub ready_fd: Option<OwnedFd>,
}

/// How waiting for a readiness byte ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The byte arrived.
    Ready,
    /// The child closed the pipe (usually: it died) without writing.
    Closed,
    /// The deadline passed.
    TimedOut,
}

/// Something the supervisor loop must react to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A signal delivered to PID 1.
    Signal(i32),
    /// A child changed state: pid and wait status, already decoded into an exit code
    /// (a process killed by signal N reports 128 + N).
    Exited { pid: i32, code: i32 },
    /// The (ACPI) power button was pressed.
    PowerButton,
    /// The bound given to [`Sys::next_event`] passed first.
    Timeout,
}

/// The system-call seam.
pub trait Sys {
    /// CLOCK_BOOTTIME now.
    fn boottime(&self) -> Duration;
    /// CLOCK_REALTIME now, as (seconds, nanoseconds).
    fn realtime(&self) -> (i64, u32);
    /// CPU time this process used so far (user + system).
    fn cpu_time(&self) -> Duration;
    /// Our own pid.
    fn getpid(&self) -> i32;
    /// Write one already formatted line (with its newline) to the console.
    fn console_write(&mut self, text: &str);
    /// Make `path` our stdout and stderr.
    fn select_console(&mut self, path: &str) -> io::Result<()>;

    /// Whether a path exists (without following a final symlink).
    fn exists(&self, path: &str) -> bool;
    /// Whether `path` is a symlink (not followed).
    fn is_symlink(&self, path: &str) -> bool;
    /// Whether a path is a directory (following symlinks).
    fn is_dir(&self, path: &str) -> bool;
    /// `mkdir -p` with mode 0755.
    fn mkdir_all(&mut self, path: &str) -> io::Result<()>;
    /// Read a whole file, refusing more than `limit` bytes.
    fn read_file(&self, path: &str, limit: usize) -> io::Result<Vec<u8>>;
    /// Read at most `limit` bytes of a file that must be a regular file and not a
    /// symlink, without blocking (untrusted paths: config.json, /etc/passwd).
    fn read_regular(&self, path: &str, limit: usize) -> io::Result<Vec<u8>>;
    /// Whether a path is a regular file with an execute bit (following symlinks).
    fn is_executable(&self, path: &str) -> bool;
    /// Read the first `len` bytes of a file or device (fewer if it is shorter).
    fn read_head(&self, path: &str, len: usize) -> io::Result<Vec<u8>>;
    /// Create or replace a file with `data` and `mode` (write then rename, not
    /// flushed to disk).
    fn write_file(&mut self, path: &str, data: &[u8], mode: u32) -> io::Result<()>;
    /// Write `data` to an existing file (no create, no truncate semantics beyond
    /// the file's own: /proc/sys entries).
    fn write_existing(&mut self, path: &str, data: &[u8]) -> io::Result<()>;
    /// sethostname(2).
    fn set_hostname(&mut self, name: &str) -> io::Result<()>;
    /// If `path` is a symlink, replace it with an empty directory; whether it was.
    fn replace_symlink_with_dir(&mut self, path: &str) -> io::Result<bool>;
    /// Create a symlink; an existing entry is left alone.
    fn symlink(&mut self, target: &str, link: &str) -> io::Result<()>;
    /// statfs(2) f_type of the filesystem holding `path`.
    fn statfs_magic(&self, path: &str) -> io::Result<i64>;
    /// Open a directory as an O_PATH, close-on-exec descriptor kept for the life of
    /// init; returns the raw fd.
    fn open_dir(&mut self, path: &str) -> io::Result<OwnedFd>;

    /// mount(2).
    fn mount(&mut self, m: &Mount) -> io::Result<()>;
    /// Mount each of `mounts` on a thread of its own, so that their disk
    /// reads overlap; the results in order. With `read`, that mount's thread
    /// then reads one regular file off it (as [`Sys::read_regular`]) and
    /// detaches the mount; the file's outcome is `None` when the mount
    /// failed. Every thread has ended when it returns (init is
    /// single-threaded again before it forks anything).
    fn mount_concurrently(&mut self, mounts: &[Mount], read: Option<&ReadOff>) -> Mounted;
    /// Remount a mount point read-only.
    fn remount_ro(&mut self, target: &str) -> io::Result<()>;
    /// The initramfs's root directory, opened before the switch so its
    /// contents can be freed after it (an error when `/` is not ramfs or
    /// tmpfs).
    fn open_initramfs(&mut self) -> io::Result<OwnedFd>;
    /// Delete everything under `root` (from [`Sys::open_initramfs`]) without
    /// crossing mount points; returns the bytes freed.
    fn free_initramfs(&mut self, root: &OwnedFd) -> io::Result<u64>;
    /// Fork a child that frees the initramfs under `root` (see
    /// `boot::release_initramfs`) and exits; returns its pid. It runs at
    /// normal priority: forked after the app, it runs after the app's first
    /// time slice, and the memory comes back even beside a busy app.
    fn start_initramfs_release(&mut self, root: &OwnedFd) -> io::Result<i32>;
    /// chdir(newroot); mount(newroot, "/", MS_MOVE); chroot("."); chdir("/").
    fn switch_root(&mut self, newroot: &str) -> io::Result<()>;

    /// uname -r.
    fn kernel_release(&self) -> String;
    /// finit_module(2) of an uncompressed or kernel-decompressible module file.
    fn load_module(&mut self, path: &str, params: &str) -> io::Result<()>;
    /// mknod(2) of a character device (an existing node is fine).
    fn mknod_char(&mut self, path: &str, major: u32, minor: u32, mode: u32) -> io::Result<()>;
    /// The names in a directory.
    fn list_dir(&mut self, path: &str) -> io::Result<Vec<String>>;
    /// Wait until every path exists, without fixed sleeps; on timeout, the first
    /// missing path.
    fn wait_for_paths(&mut self, paths: &[String], timeout: Duration) -> Result<(), String>;

    /// Make Ctrl-Alt-Del send SIGINT to init (forwarded to the app) instead of
    /// an immediate reboot. Best effort (a PID namespace refuses it).
    fn disable_ctrl_alt_del(&mut self);
    /// Block the signals init handles and route them to [`Sys::next_event`].
    fn setup_signals(&mut self) -> io::Result<()>;
    /// Fork and exec; an exec failure comes back as its errno.
    fn spawn(&mut self, spec: &SpawnSpec) -> Result<Child, SpawnError>;
    /// Wait for one byte on a readiness pipe (and close it).
    fn wait_ready(&mut self, fd: OwnedFd, timeout: Duration) -> Readiness;
    /// Start watching the power button's input device, when there is one;
    /// returns its device path.
    fn watch_power_button(&mut self) -> Option<String>;
    /// Block until a signal arrives, a child exits or the power button is
    /// pressed, or until `timeout` passes ([`Event::Timeout`]; `None`: no bound).
    /// This one wait is init's only timer.
    fn next_event(&mut self, timeout: Option<Duration>) -> Event;
    /// kill(2).
    fn kill(&mut self, pid: i32, sig: i32) -> io::Result<()>;
    /// SIGKILL every process but ourselves and reap them, for at most `timeout`
    /// (a process stuck in D state must not block the power-off). Only as PID 1.
    fn kill_all(&mut self, timeout: Duration);
    /// Open the kernel log positioned at its end (records from now on).
    fn kmsg_open(&mut self) -> Option<OwnedFd>;
    /// The kernel log messages recorded since `kmsg_open` returned `fd`; closes it.
    fn kmsg_read(&mut self, fd: OwnedFd) -> Vec<String>;
    /// sync(2).
    fn sync(&mut self);
    /// reboot(RB_POWER_OFF). Returns only in the fake, or when not PID 1.
    fn power_off(&mut self);
    /// Waits up to `timeout` for network interface `name`; its index.
    fn net_wait_link(&mut self, name: &str, timeout: Duration) -> io::Result<u32>;
    /// Sets link `index` up, with `mtu` when given.
    fn net_link_up(&mut self, index: u32, mtu: Option<u32>) -> io::Result<()>;
    /// Waits up to `timeout` for the interface with MAC address `mac`; its
    /// index and name.
    fn net_wait_mac(&mut self, mac: [u8; 6], timeout: Duration) -> io::Result<(u32, String)>;
    /// Adds `addr/prefix` (IPv4, or IPv6 without DAD) to link `index`.
    fn net_add_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> io::Result<()>;
    /// Replaces the default route of `gw`'s family: via `gw` on link `index`.
    fn net_default_route(&mut self, index: u32, gw: IpAddr) -> io::Result<()>;
    /// Removes a file or symlink (not a folder).
    fn remove_file(&mut self, path: &str) -> io::Result<()>;
    /// execve(2) `argv` with `env` in place of init (systemd mode: PID 1
    /// becomes the image's init system). Returns only on failure — or, in
    /// the fake, with Ok after recording it.
    fn exec_pid1(&mut self, argv: &[String], env: &[String]) -> io::Result<()>;
    /// Connects to the host (vsock CID 2) on `port`, retrying until
    /// `timeout`, and reads what it sends until it closes, at most `limit`
    /// bytes.
    fn vsock_fetch(&mut self, port: u32, limit: usize, timeout: Duration) -> io::Result<Vec<u8>>;
    /// Opens a regular file for reading (close-on-exec).
    fn open_read(&mut self, path: &str) -> io::Result<OwnedFd>;
    /// Copies what `from` holds, from its start, to a new file `to`.
    fn copy_fd(&mut self, from: &OwnedFd, to: &str, mode: u32) -> io::Result<u64>;
    /// Forks the kernel-headers worker ([`crate::headers::worker`]) at low
    /// CPU and I/O priority, reading `tarball`, into `/`; returns its pid.
    fn start_headers_worker(&mut self, tarball: OwnedFd, release: &str) -> io::Result<i32>;
}

/// Why a child could not be started. The cause is the `source`, never part
/// of the message (print the chain with `report::error_chain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SpawnError {
    /// fork or pipe creation failed.
    #[error("cannot start process")]
    Fork(#[source] Errno),
    /// The path, an argument or a variable cannot be passed to execve.
    #[error("cannot start process: an argument or variable holds a NUL byte")]
    NulByte,
    /// The child could not set itself up (chdir, credentials, stdio).
    #[error("{step}")]
    Setup {
        /// What failed.
        step: &'static str,
        /// Why.
        #[source]
        errno: Errno,
    },
    /// execve failed.
    #[error("exec failed")]
    Exec(#[source] Errno),
}
