//! The real system calls. All of init's `unsafe` lives here.

use super::{Child, Event, Mount, Mounted, ReadOff, Readiness, SpawnError, SpawnSpec, Sys};
use guest_contract::{input_event, kmsg};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// Signals PID 1 handles (forwarded to the app, or SIGCHLD for reaping).
pub const HANDLED_SIGNALS: [Signal; 5] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGINT,
];

/// The real system.
#[derive(Default)]
pub struct RealSys {
    signal_fd: Option<SignalFd>,
    power_buttons: Vec<fs::File>,
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn mount_flags(m: &Mount) -> MsFlags {
    let mut f = MsFlags::empty();
    f.set(MsFlags::MS_RDONLY, m.flags.read_only);
    f.set(MsFlags::MS_NOSUID | MsFlags::MS_NODEV, m.flags.nosuid_nodev);
    f.set(MsFlags::MS_NOEXEC, m.flags.noexec);
    f.set(MsFlags::MS_BIND, m.flags.bind);
    f.set(MsFlags::MS_REC, m.flags.recursive);
    f
}

fn opt(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

impl Sys for RealSys {
    fn boottime(&self) -> Duration {
        let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME);
        ts.map(Duration::from).unwrap_or_default()
    }

    fn cpu_time(&self) -> Duration {
        match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
            Ok(u) => {
                let tv = |t: nix::sys::time::TimeVal| {
                    Duration::new(t.tv_sec().max(0) as u64, t.tv_usec().max(0) as u32 * 1000)
                };
                tv(u.user_time()) + tv(u.system_time())
            }
            Err(_) => Duration::ZERO,
        }
    }

    fn realtime(&self) -> (i64, u32) {
        match nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME) {
            Ok(ts) => (ts.tv_sec(), u32::try_from(ts.tv_nsec()).unwrap_or(0)),
            Err(_) => (0, 0),
        }
    }

    fn getpid(&self) -> i32 {
        nix::unistd::getpid().as_raw()
    }

    fn console_write(&mut self, text: &str) {
        let mut out = io::stdout().lock();
        // Nothing sensible can be done when the console itself fails.
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    }

    fn select_console(&mut self, path: &str) -> io::Result<()> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)?;
        nix::unistd::dup2_stdout(&file).map_err(errno_io)?;
        nix::unistd::dup2_stderr(&file).map_err(errno_io)?;
        Ok(())
    }

    fn exists(&self, path: &str) -> bool {
        fs::symlink_metadata(path).is_ok()
    }

    fn is_dir(&self, path: &str) -> bool {
        Path::new(path).is_dir()
    }

    fn is_symlink(&self, path: &str) -> bool {
        Path::new(path).is_symlink()
    }

    fn mkdir_all(&mut self, path: &str) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
    }

    fn read_file(&self, path: &str, limit: usize) -> io::Result<Vec<u8>> {
        let file = fs::File::open(path)?;
        let mut buf = Vec::new();
        let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
        file.take(cap).read_to_end(&mut buf)?;
        if buf.len() > limit {
            return Err(io::Error::other(format!("larger than {limit} bytes")));
        }
        Ok(buf)
    }

    fn read_regular(&self, path: &str, limit: usize) -> io::Result<Vec<u8>> {
        read_regular_file(path, limit)
    }

    fn is_executable(&self, path: &str) -> bool {
        fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }

    fn read_head(&self, path: &str, len: usize) -> io::Result<Vec<u8>> {
        // Only block devices: opening a console would block PID 1, opening
        // /dev/watchdog would arm it. Checked before opening and again on
        // the descriptor.
        let not_block = || io::Error::other("not a block device");
        if !fs::metadata(path)?.file_type().is_block_device() {
            return Err(not_block());
        }
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(path)?;
        if !file.metadata()?.file_type().is_block_device() {
            return Err(not_block());
        }
        let mut buf = Vec::with_capacity(len);
        file.take(u64::try_from(len).unwrap_or(u64::MAX))
            .read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn write_file(&mut self, path: &str, data: &[u8], mode: u32) -> io::Result<()> {
        // No fsync: the file is rewritten on every boot, and a flush on the
        // overlay disk costs tens of ms under emulation.
        replace_file(path, mode, |f| f.write_all(data))
    }

    fn write_existing(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        f.write_all(data)
    }

    fn set_hostname(&mut self, name: &str) -> io::Result<()> {
        nix::unistd::sethostname(name).map_err(errno_io)
    }

    fn replace_symlink_with_dir(&mut self, path: &str) -> io::Result<bool> {
        if !fs::symlink_metadata(path)?.file_type().is_symlink() {
            return Ok(false);
        }
        fs::remove_file(path)?;
        fs::DirBuilder::new().mode(0o755).create(path)?;
        Ok(true)
    }

    fn symlink(&mut self, target: &str, link: &str) -> io::Result<()> {
        match std::os::unix::fs::symlink(target, link) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            r => r,
        }
    }

    fn statfs_magic(&self, path: &str) -> io::Result<i64> {
        let st = nix::sys::statfs::statfs(path).map_err(errno_io)?;
        #[allow(clippy::unnecessary_cast)]
        Ok(st.filesystem_type().0 as i64)
    }

    fn open_dir(&mut self, path: &str) -> io::Result<OwnedFd> {
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)?;
        Ok(file.into())
    }

    fn mount(&mut self, m: &Mount) -> io::Result<()> {
        mount_one(m)
    }

    fn mount_concurrently(&mut self, mounts: &[Mount], read: Option<&ReadOff>) -> Mounted {
        let mut jobs: Vec<MountJob> = mounts
            .iter()
            .enumerate()
            .map(|(i, m)| MountJob {
                mount: m,
                read: read.filter(|r| r.mount == i),
                done: None,
            })
            .collect();
        let Some((last, others)) = jobs.split_last_mut() else {
            return (Vec::new(), None);
        };
        // One malloc arena for every thread: these live for one mount each,
        // and an arena of their own would reserve 64 MiB and touch its pages.
        // SAFETY: mallopt changes a malloc tunable; no thread is running yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
        let mut threads = Vec::new();
        for job in others.iter_mut() {
            match job.start() {
                Some(thread) => threads.push(thread),
                // No thread (out of memory or tasks): mount it here.
                None => job.run(),
            }
        }
        // The last one on this thread, meanwhile.
        last.run();
        let mut joined = true;
        for thread in threads {
            // SAFETY: each thread was created joinable by `MountJob::start`
            // and is joined exactly once, before `jobs` is read or dropped.
            joined &= unsafe { libc::pthread_join(thread, std::ptr::null_mut()) } == 0;
        }
        if !joined {
            // A thread that could not be joined may still write its job:
            // the jobs are leaked, never freed under it.
            std::mem::forget(jobs);
            let lost = || Err(io::Error::other("a mount thread could not be joined"));
            return (mounts.iter().map(|_| lost()).collect(), None);
        }
        let mut file = None;
        let results = jobs
            .into_iter()
            .map(|job| {
                let (done, f) = job
                    .done
                    .unwrap_or_else(|| (Err(io::Error::other("not mounted")), None));
                file = file.take().or(f);
                done
            })
            .collect();
        (results, file)
    }

    fn remount_ro(&mut self, target: &str) -> io::Result<()> {
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(errno_io)
    }

    fn open_initramfs(&mut self) -> io::Result<OwnedFd> {
        let magic = self.statfs_magic("/")?;
        if magic != super::RAMFS_MAGIC && magic != super::TMPFS_MAGIC {
            return Err(io::Error::other(
                "root is not ramfs or tmpfs; nothing deleted",
            ));
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        nix::fcntl::open("/", flags, nix::sys::stat::Mode::empty()).map_err(errno_io)
    }

    fn free_initramfs(&mut self, root: &OwnedFd) -> io::Result<u64> {
        let dev = nix::sys::stat::fstat(root).map_err(errno_io)?.st_dev;
        remove_children_at(root, dev)
    }

    fn start_initramfs_release(&mut self, root: &OwnedFd) -> io::Result<i32> {
        fork_worker(|| {
            release_panic_hook();
            crate::boot::release_initramfs(&mut RealSys::default(), root)
        })
    }

    fn switch_root(&mut self, newroot: &str) -> io::Result<()> {
        nix::unistd::chdir(newroot).map_err(errno_io)?;
        nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
            .map_err(errno_io)?;
        nix::unistd::chroot(".").map_err(errno_io)?;
        nix::unistd::chdir("/").map_err(errno_io)
    }

    fn kernel_release(&self) -> String {
        nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn load_module(&mut self, path: &str, params: &str) -> io::Result<()> {
        let file = fs::File::open(path)?;
        let mut flags = nix::kmod::ModuleInitFlags::empty();
        if path.ends_with(".xz") || path.ends_with(".zst") || path.ends_with(".gz") {
            // MODULE_INIT_COMPRESSED_FILE: the kernel decompresses.
            flags = nix::kmod::ModuleInitFlags::from_bits_retain(4);
        }
        let params = CString::new(params).map_err(|_| io::Error::other("NUL in parameters"))?;
        match nix::kmod::finit_module(&file, &params, flags) {
            Ok(()) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(errno_io(e)),
        }
    }

    fn mknod_char(&mut self, path: &str, major: u32, minor: u32, mode: u32) -> io::Result<()> {
        let dev = nix::sys::stat::makedev(major.into(), minor.into());
        let perm = nix::sys::stat::Mode::from_bits_truncate(mode);
        let make = || nix::sys::stat::mknod(path, nix::sys::stat::SFlag::S_IFCHR, perm, dev);
        match make() {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                // Kept only when it is this very node; anything else there
                // (another device, a file, a symlink) is replaced.
                let same = fs::symlink_metadata(path)
                    .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == dev);
                if !same {
                    fs::remove_file(path)?;
                    make().map_err(errno_io)?;
                }
            }
            Err(e) => return Err(errno_io(e)),
        }
        // The mode as asked, not as the umask left it.
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }

    fn list_dir(&mut self, path: &str) -> io::Result<Vec<String>> {
        fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    }

    fn wait_for_paths(&mut self, paths: &[String], timeout: Duration) -> Result<(), String> {
        wait_for_paths(paths, timeout)
    }

    fn disable_ctrl_alt_del(&mut self) {
        let _ = nix::sys::reboot::set_cad_enabled(false);
    }

    fn setup_signals(&mut self) -> io::Result<()> {
        let mut set = SigSet::empty();
        for s in HANDLED_SIGNALS {
            set.add(s);
        }
        set.thread_block().map_err(errno_io)?;
        let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC).map_err(errno_io)?;
        self.signal_fd = Some(sfd);
        Ok(())
    }

    fn spawn(&mut self, spec: &SpawnSpec) -> Result<Child, SpawnError> {
        spawn::spawn(spec)
    }

    fn wait_ready(&mut self, fd: OwnedFd, timeout: Duration) -> Readiness {
        wait_byte(&fd, timeout)
    }

    fn watch_power_button(&mut self) -> Option<String> {
        let found = find_power_buttons();
        let paths: Vec<String> = found.iter().map(|(p, _)| p.clone()).collect();
        self.power_buttons = found.into_iter().map(|(_, f)| f).collect();
        (!paths.is_empty()).then(|| paths.join(", "))
    }

    fn next_event(&mut self, timeout: Option<Duration>) -> Event {
        let deadline = timeout.map(deadline_after);
        loop {
            if let Some(ev) = reap_one() {
                return ev;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Event::Timeout;
            }
            let bound = deadline.map_or(PollTimeout::NONE, remaining);
            let ready = match &self.signal_fd {
                Some(sfd) => wait_readable(sfd, &self.power_buttons, bound),
                // Signals were never set up (init then stops before it
                // supervises anything): a blocking wait, without a bound.
                None => return blocking_wait(),
            };
            if let ButtonCheck::Pressed = self.check_buttons(&ready.buttons) {
                return Event::PowerButton;
            }
            if let Some(ev) = ready.signal.then(|| self.read_signal()).flatten() {
                return ev;
            }
        }
    }

    fn kill(&mut self, pid: i32, sig: i32) -> io::Result<()> {
        let sig = Signal::try_from(sig).map_err(errno_io)?;
        nix::sys::signal::kill(Pid::from_raw(pid), sig).map_err(errno_io)
    }

    fn kill_all(&mut self, timeout: Duration) {
        if self.getpid() != 1 {
            return;
        }
        // kill(-1) from PID 1 reaches every process but init itself.
        let _ = nix::sys::signal::kill(Pid::from_raw(-1), Signal::SIGKILL);
        let deadline = deadline_after(timeout);
        while Instant::now() < deadline {
            let flags = WaitPidFlag::WNOHANG | WaitPidFlag::__WALL;
            match nix::sys::wait::waitpid(None, Some(flags)) {
                Err(Errno::ECHILD) => return,
                Ok(WaitStatus::StillAlive) | Err(_) => self.wait_sigchld(deadline),
                Ok(_) => {}
            }
        }
    }

    fn kmsg_open(&mut self) -> Option<OwnedFd> {
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/kmsg")
            .ok()?;
        // SEEK_END on /dev/kmsg positions after the newest record.
        nix::unistd::lseek(&file, 0, nix::unistd::Whence::SeekEnd).ok()?;
        Some(file.into())
    }

    fn kmsg_read(&mut self, fd: OwnedFd) -> Vec<String> {
        read_kmsg(&fs::File::from(fd))
    }

    fn sync(&mut self) {
        nix::unistd::sync();
    }

    fn power_off(&mut self) {
        if self.getpid() != 1 {
            // Not a VM's init (a mistaken run on a host): just end the process.
            std::process::exit(1);
        }
        let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    }

    fn net_wait_link(&mut self, name: &str, timeout: Duration) -> io::Result<u32> {
        super::netlink::wait_link(name, timeout)
    }

    fn net_link_up(&mut self, index: u32, mtu: Option<u32>) -> io::Result<()> {
        super::netlink::Rtnl::open()?.link_up(index, mtu)
    }

    fn net_wait_mac(&mut self, mac: [u8; 6], timeout: Duration) -> io::Result<(u32, String)> {
        super::netlink::wait_mac(mac, timeout)
    }

    fn net_add_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        super::netlink::Rtnl::open()?.add_address(index, addr, prefix)
    }

    fn net_default_route(&mut self, index: u32, gw: IpAddr) -> io::Result<()> {
        super::netlink::Rtnl::open()?.default_route(index, gw)
    }

    fn remove_file(&mut self, path: &str) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn exec_pid1(&mut self, argv: &[String], env: &[String]) -> io::Result<()> {
        let c = |s: &String| {
            CString::new(s.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
        };
        let argv: Vec<CString> = argv.iter().map(c).collect::<io::Result<_>>()?;
        let env: Vec<CString> = env.iter().map(c).collect::<io::Result<_>>()?;
        let prog = argv
            .first()
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // Returns only on failure.
        let err = nix::unistd::execve(prog, &argv, &env).unwrap_err();
        Err(io::Error::from(err))
    }

    fn vsock_fetch(&mut self, port: u32, limit: usize, timeout: Duration) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            match vsock_once(port, limit, deadline) {
                Ok(data) => return Ok(data),
                // Nobody listening yet (the host side, or the backend, starts
                // late): try again until the deadline.
                Err(e) if Instant::now() < deadline && e.raw_os_error() != Some(libc::EAGAIN) => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }
    fn open_read(&mut self, path: &str) -> io::Result<OwnedFd> {
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        Ok(file.into())
    }

    fn copy_fd(&mut self, from: &OwnedFd, to: &str, mode: u32) -> io::Result<u64> {
        let mut src = fs::File::from(from.try_clone()?);
        std::io::Seek::seek(&mut src, io::SeekFrom::Start(0))?;
        // copy_file_range/sendfile under the hood: no user-space buffer.
        replace_file(to, mode, |dst| io::copy(&mut src, dst))
    }

    fn start_headers_worker(&mut self, tarball: OwnedFd, release: &str) -> io::Result<i32> {
        fork_worker(|| headers_child(tarball, release))
    }
}

/// A child of PID 1 that runs `work` with no signal blocked and ends with
/// its exit code; returns the child's pid.
fn fork_worker(work: impl FnOnce() -> i32) -> io::Result<i32> {
    // SAFETY: init is single-threaded here (its mount threads are joined
    // before the switch), so the child may run any code; it ends in _exit
    // and never returns into PID 1's loop.
    match unsafe { nix::unistd::fork() }.map_err(errno_io)? {
        nix::unistd::ForkResult::Parent { child } => Ok(child.as_raw()),
        nix::unistd::ForkResult::Child => {
            default_signal_mask();
            let code = work();
            // SAFETY: _exit ends the forked child without running PID 1's
            // exit paths (there are none to run in a child).
            unsafe { libc::_exit(code) }
        }
    }
}

/// Writes `path` through `fill` on a fresh temporary name beside it (never
/// through a symlink or into a FIFO the image may have put there), with
/// `mode`, then renames it into place.
fn replace_file<T>(
    path: &str,
    mode: u32,
    fill: impl FnOnce(&mut fs::File) -> io::Result<T>,
) -> io::Result<T> {
    let tmp = format!("{path}.tmp-init");
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let done = {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(mode)
            .open(&tmp)?;
        let done = fill(&mut f)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        done
    };
    fs::rename(&tmp, path)?;
    Ok(done)
}

/// The forked headers worker: low priority, then the work.
fn headers_child(tarball: OwnedFd, release: &str) -> i32 {
    lower_priority();
    crate::headers::worker_panic_hook();
    let mut sys = RealSys::default();
    crate::headers::worker(&mut sys, fs::File::from(tarball), Path::new("/"), release)
}

/// The initramfs release child's panic: one ERROR line and exit 1 (PID 1's
/// hook would print an EXIT sentinel that stands for the app's end).
fn release_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let mut sys = RealSys::default();
        let msg = format!("initramfs release: panic: {info}");
        crate::boot::report::error(&mut sys, "switch", &msg);
        // SAFETY: _exit ends this child process without unwinding.
        unsafe { libc::_exit(1) }
    }));
}

/// A forked child takes no signal mask from PID 1.
fn default_signal_mask() {
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&SigSet::empty()),
        None,
    );
}

/// nice 10 and best-effort I/O priority 7, as the systemd unit asks.
pub fn lower_priority() {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_BE_7: libc::c_long = (2 << 13) | 7;
    // SAFETY: setpriority and ioprio_set take plain integers and change only
    // this process's scheduling.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
        libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, IOPRIO_BE_7);
    }
}

/// One connection to the host on `port`: everything it sends until it
/// closes, at most `limit` bytes, by `deadline`.
fn vsock_once(port: u32, limit: usize, deadline: Instant) -> io::Result<Vec<u8>> {
    use nix::sys::socket::{
        connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, VsockAddr,
    };
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    connect(fd.as_raw_fd(), &VsockAddr::new(libc::VMADDR_CID_HOST, port))?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    setsockopt(
        &fd,
        sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::from(libc::timeval {
            tv_sec: left.as_secs().try_into().unwrap_or(libc::time_t::MAX),
            tv_usec: left.subsec_micros().into(),
        }),
    )?;
    let mut data = Vec::new();
    fs::File::from(fd)
        .take(u64::try_from(limit).unwrap_or(u64::MAX))
        .read_to_end(&mut data)?;
    Ok(data)
}

enum ButtonCheck {
    Pressed,
    Nothing,
}

impl RealSys {
    /// One signal from the signalfd: `None` for SIGCHLD or nothing (the caller
    /// reaps), the blocking-wait result when the signalfd itself fails.
    fn read_signal(&self) -> Option<Event> {
        let sfd = self.signal_fd.as_ref()?;
        match sfd.read_signal() {
            Ok(Some(info)) if info.ssi_signo != libc::SIGCHLD as u32 => {
                Some(Event::Signal(i32::try_from(info.ssi_signo).unwrap_or(0)))
            }
            Ok(_) | Err(Errno::EINTR) => None,
            Err(_) => Some(blocking_wait()),
        }
    }

    /// Read the buttons poll flagged; a device that hung up or errors is
    /// dropped (or it would make every poll return at once: a busy loop).
    fn check_buttons(&mut self, flags: &[ButtonReady]) -> ButtonCheck {
        let mut pressed = false;
        let mut keep = Vec::new();
        for (dev, flag) in self.power_buttons.drain(..).zip(flags) {
            match flag {
                ButtonReady::Idle => keep.push(dev),
                ButtonReady::Gone => {}
                ButtonReady::Readable => {
                    if let Some(p) = power_key_pressed(&dev) {
                        pressed |= p;
                        keep.push(dev);
                    }
                }
            }
        }
        self.power_buttons = keep;
        if pressed {
            ButtonCheck::Pressed
        } else {
            ButtonCheck::Nothing
        }
    }

    /// Wait (bounded by `deadline`) until a signal is pending on the signalfd.
    fn wait_sigchld(&self, deadline: Instant) {
        let Some(sfd) = &self.signal_fd else {
            std::thread::sleep(Duration::from_millis(10));
            return;
        };
        let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Ok(n) = nix::poll::poll(&mut fds, remaining(deadline)) {
            if n > 0 {
                let _ = sfd.read_signal();
            }
        }
    }
}

/// What poll said of one power-button device.
#[derive(Clone, Copy)]
enum ButtonReady {
    Idle,
    Readable,
    Gone,
}

struct Ready {
    signal: bool,
    buttons: Vec<ButtonReady>,
}

/// Poll the signalfd and the watched power buttons, for at most `bound`.
fn wait_readable(sfd: &SignalFd, buttons: &[fs::File], bound: PollTimeout) -> Ready {
    let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
    fds.extend(
        buttons
            .iter()
            .map(|b| PollFd::new(b.as_fd(), PollFlags::POLLIN)),
    );
    if nix::poll::poll(&mut fds, bound).is_err() {
        let buttons = vec![ButtonReady::Idle; buttons.len()];
        return Ready {
            signal: true,
            buttons,
        };
    }
    let gone = PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL;
    let state = |fd: &PollFd| match fd.revents() {
        Some(r) if r.intersects(gone) => ButtonReady::Gone,
        Some(r) if r.contains(PollFlags::POLLIN) => ButtonReady::Readable,
        _ => ButtonReady::Idle,
    };
    let signal = fds[0].revents().is_some_and(|r| !r.is_empty());
    Ready {
        signal,
        buttons: fds[1..].iter().map(state).collect(),
    }
}

/// Every input device named "Power Button" (the ACPI driver names both the
/// fixed-feature button and a PNP0C0C device so), opened non-blocking.
fn find_power_buttons() -> Vec<(String, fs::File)> {
    let Ok(entries) = fs::read_dir("/sys/class/input") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let label = fs::read_to_string(entry.path().join("device/name")).unwrap_or_default();
        if !name.starts_with("event") || label.trim() != "Power Button" {
            continue;
        }
        let path = format!("/dev/input/{name}");
        let opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path);
        if let Ok(file) = opened {
            found.push((path, file));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

// The contract library decodes `struct input_event` by a hard-coded 64-bit
// Linux layout: it must be libc's.
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<libc::input_event>() == input_event::EVENT_SIZE);
    assert!(offset_of!(libc::input_event, type_) == input_event::TYPE_AT);
    assert!(offset_of!(libc::input_event, code) == input_event::CODE_AT);
    assert!(offset_of!(libc::input_event, value) == input_event::VALUE_AT);
};

/// Drain the device: whether a KEY_POWER press was among the events; `None`
/// when the device failed (it is then dropped).
fn power_key_pressed(dev: &fs::File) -> Option<bool> {
    let mut buf = [0u8; input_event::EVENT_SIZE * 16];
    let mut pressed = false;
    loop {
        match nix::unistd::read(dev, &mut buf) {
            Ok(0) => return None,
            Ok(n) => pressed |= input_event::has_power_press(&buf[..n]),
            Err(Errno::EAGAIN) => return Some(pressed),
            Err(Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

/// One mount of [`Sys::mount_concurrently`] (and the file read off it), run
/// on a thread of its own: plain pthreads (init is 21 KB smaller than with
/// `std::thread`'s machinery).
struct MountJob<'a> {
    mount: &'a Mount,
    read: Option<&'a ReadOff>,
    done: Option<JobDone>,
}

/// A mount's result and, when asked for, the file read off it.
type JobDone = (io::Result<()>, Option<io::Result<Vec<u8>>>);

impl MountJob<'_> {
    fn run(&mut self) {
        let done = mount_one(self.mount);
        let file = self.read.filter(|_| done.is_ok()).map(|r| {
            let file = read_regular_file(&r.path, r.limit);
            let _ = nix::mount::umount2(self.mount.target.as_str(), MntFlags::MNT_DETACH);
            file
        });
        self.done = Some((done, file));
    }

    /// A joinable thread running this job, with a 64 KiB stack.
    fn start(&mut self) -> Option<libc::pthread_t> {
        extern "C" fn body(job: *mut libc::c_void) -> *mut libc::c_void {
            // SAFETY: `job` is the MountJob `start` was called on, which
            // `mount_concurrently` neither moves, reads nor drops until it
            // has joined this thread.
            unsafe { &mut *job.cast::<MountJob>() }.run();
            std::ptr::null_mut()
        }
        let job: *mut MountJob = self;
        // SAFETY: the attribute object is initialised before use and
        // destroyed after; pthread_create gets a valid thread slot, a
        // function of the right signature and the job's address (see body).
        unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            if libc::pthread_attr_init(&mut attr) != 0 {
                return None;
            }
            libc::pthread_attr_setstacksize(&mut attr, 64 * 1024);
            let mut thread: libc::pthread_t = 0;
            let made = libc::pthread_create(&mut thread, &attr, body, job.cast());
            libc::pthread_attr_destroy(&mut attr);
            (made == 0).then_some(thread)
        }
    }
}

/// A regular file (never a FIFO, device or symlink), at most `limit` bytes.
fn read_regular_file(path: &str, limit: usize) -> io::Result<Vec<u8>> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut buf = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX);
    file.take(cap).read_to_end(&mut buf)?;
    Ok(buf)
}

fn mount_one(m: &Mount) -> io::Result<()> {
    nix::mount::mount(
        opt(&m.source),
        m.target.as_str(),
        opt(&m.fstype),
        mount_flags(m),
        opt(&m.data),
    )
    .map_err(errno_io)
}

/// Deletes everything under `dir` that is on `dev` (never into another
/// mount), through descriptors: the tree may no longer have a path.
fn remove_children_at(dir: &OwnedFd, dev: u64) -> io::Result<u64> {
    use nix::sys::stat::{fstatat, Mode, SFlag};
    use nix::unistd::{unlinkat, UnlinkatFlags};
    let mut names = Vec::new();
    // A failing readdir ends the listing (it could fail forever).
    for entry in nix::dir::Dir::from_fd(dir.try_clone()?)
        .map_err(errno_io)?
        .iter()
        .map_while(Result::ok)
    {
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    let mut freed = 0;
    for name in names {
        let Ok(st) = fstatat(
            dir,
            name.as_c_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) else {
            continue;
        };
        if st.st_dev != dev {
            continue;
        }
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            if let Ok(sub) = nix::fcntl::openat(dir, name.as_c_str(), flags, Mode::empty()) {
                freed += remove_children_at(&sub, dev).unwrap_or(0);
            }
            let _ = unlinkat(dir, name.as_c_str(), UnlinkatFlags::RemoveDir);
        } else if unlinkat(dir, name.as_c_str(), UnlinkatFlags::NoRemoveDir).is_ok() {
            freed += u64::try_from(st.st_size).unwrap_or(0);
        }
    }
    Ok(freed)
}

fn decode(st: WaitStatus) -> Option<Event> {
    match st {
        WaitStatus::Exited(pid, code) => Some(Event::Exited {
            pid: pid.as_raw(),
            code,
        }),
        WaitStatus::Signaled(pid, sig, _) => Some(Event::Exited {
            pid: pid.as_raw(),
            code: 128 + sig as i32,
        }),
        _ => None,
    }
}

fn reap_one() -> Option<Event> {
    loop {
        match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            Ok(st) => {
                if let Some(ev) = decode(st) {
                    return Some(ev);
                }
            }
        }
    }
}

fn blocking_wait() -> Event {
    loop {
        match nix::sys::wait::waitpid(None, Some(WaitPidFlag::__WALL)) {
            Ok(st) => {
                if let Some(ev) = decode(st) {
                    return ev;
                }
            }
            Err(Errno::EINTR) => continue,
            Err(_) => {
                // No children at all: nothing will ever happen; idle politely.
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// The time left until `deadline` as a poll bound, rounded up to whole
/// milliseconds (rounding down would wake just before the deadline and spin).
fn remaining(deadline: Instant) -> PollTimeout {
    let left = deadline.saturating_duration_since(Instant::now());
    let ms = u16::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
    PollTimeout::from(ms)
}

/// now + timeout, saturating far in the future instead of overflowing.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
}

fn wait_byte(fd: &OwnedFd, timeout: Duration) -> Readiness {
    let deadline = deadline_after(timeout);
    loop {
        if Instant::now() >= deadline {
            return Readiness::TimedOut;
        }
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, remaining(deadline)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {
                let mut b = [0u8; 1];
                return match nix::unistd::read(fd, &mut b) {
                    Ok(1) => Readiness::Ready,
                    _ => Readiness::Closed,
                };
            }
            Err(_) => return Readiness::Closed,
        }
    }
}

fn first_missing(paths: &[String]) -> Option<&String> {
    paths.iter().find(|p| fs::metadata(p).is_err())
}

/// Wait for paths with inotify on their parent directories: no fixed sleeps.
pub fn wait_for_paths(paths: &[String], timeout: Duration) -> Result<(), String> {
    let Some(first) = first_missing(paths) else {
        return Ok(());
    };
    let inotify =
        Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).map_err(|_| first.clone())?;
    for p in paths {
        let parent = Path::new(p).parent().unwrap_or(Path::new("/"));
        let mask = AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_ATTRIB;
        let _ = inotify.add_watch(parent, mask);
    }
    let deadline = deadline_after(timeout);
    loop {
        // Checked after the watches exist, so no creation can slip between.
        let Some(missing) = first_missing(paths) else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(missing.clone());
        }
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        let _ = nix::poll::poll(&mut fds, remaining(deadline));
        let _ = inotify.read_events();
    }
}

fn read_kmsg(file: &fs::File) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match nix::unistd::read(file, &mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend(kmsg::record_message(&buf[..n])),
            // EPIPE: records were overwritten under us; go on with the next.
            Err(Errno::EPIPE) | Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    out
}

mod spawn {
    //! fork + exec with a CLOEXEC error pipe.
    use super::*;

    struct Prepared {
        path: CString,
        argv: Vec<CString>,
        env: Vec<CString>,
        workdir: CString,
        devnull: CString,
    }

    fn cstr(s: &str) -> Result<CString, SpawnError> {
        CString::new(s).map_err(|_| SpawnError::NulByte)
    }

    fn prepare(spec: &SpawnSpec) -> Result<Prepared, SpawnError> {
        let argv = spec
            .argv
            .iter()
            .map(|a| cstr(a))
            .collect::<Result<_, _>>()?;
        let env = spec
            .env
            .iter()
            .map(|(k, v)| cstr(&format!("{k}={v}")))
            .collect::<Result<_, _>>()?;
        Ok(Prepared {
            path: cstr(&spec.path)?,
            argv,
            env,
            workdir: cstr(&spec.workdir)?,
            devnull: cstr("/dev/null")?,
        })
    }

    fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(SpawnError::Fork)
    }

    pub fn spawn(spec: &SpawnSpec) -> Result<Child, SpawnError> {
        let prep = prepare(spec)?;
        let (err_r, err_w) = pipe()?;
        let ready = if spec.readiness_fd {
            Some(pipe()?)
        } else {
            None
        };
        // SAFETY: init is single-threaded, so the child may call anything; it only
        // makes raw system calls before execve or _exit.
        match unsafe { nix::unistd::fork() } {
            Err(e) => Err(SpawnError::Fork(e)),
            Ok(nix::unistd::ForkResult::Child) => {
                drop(err_r);
                let ready_w = ready.map(|(r, w)| {
                    drop(r);
                    w
                });
                child(&prep, spec, err_w.as_raw_fd(), ready_w.as_ref())
            }
            Ok(nix::unistd::ForkResult::Parent { child: pid }) => {
                drop(err_w);
                let ready_fd = ready.map(|(r, w)| {
                    drop(w);
                    r
                });
                parent(pid.as_raw(), err_r, ready_fd)
            }
        }
    }

    /// Codes the child writes before its errno: which step failed.
    const STEP_EXEC: u8 = 0;
    const STEP_CHDIR: u8 = 1;
    const STEP_CREDS: u8 = 2;
    const STEP_STDIO: u8 = 3;

    fn parent(pid: i32, err_r: OwnedFd, ready: Option<OwnedFd>) -> Result<Child, SpawnError> {
        let mut buf = [0u8; 5];
        let mut got = 0;
        while got < buf.len() {
            match nix::unistd::read(&err_r, &mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        if got < buf.len() {
            return Ok(Child {
                pid,
                ready_fd: ready,
            });
        }
        // The child failed and exits by itself; reap it here so the supervisor
        // never sees it.
        let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
        let errno = Errno::from_raw(i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]));
        Err(match buf[0] {
            STEP_EXEC => SpawnError::Exec(errno),
            step => SpawnError::Setup {
                step: match step {
                    STEP_CHDIR => "chdir to workdir",
                    STEP_CREDS => "switch user",
                    _ => "set up stdio",
                },
                errno,
            },
        })
    }

    fn report(err_w: RawFd, step: u8) -> ! {
        let errno = Errno::last_raw().to_le_bytes();
        let msg = [step, errno[0], errno[1], errno[2], errno[3]];
        // SAFETY: err_w is a valid pipe fd owned by this process; msg is a live buffer.
        unsafe {
            libc::write(err_w, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    }

    fn reset_signals() {
        for sig in 1..=64 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            // SAFETY: restoring the default disposition is always valid; errors for
            // reserved signal numbers are ignored on purpose.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let empty = SigSet::empty();
        let _ = nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&empty),
            None,
        );
    }

    fn setup_stdio(prep: &Prepared, spec: &SpawnSpec, err_w: RawFd, ready_w: Option<&OwnedFd>) {
        // SAFETY: plain system calls on fds we own and a NUL-terminated path.
        unsafe {
            if spec.console_stdin {
                // Our stdin is the console: make it the controlling terminal.
                libc::ioctl(0, libc::TIOCSCTTY, 0);
            } else {
                let null = libc::open(prep.devnull.as_ptr(), libc::O_RDONLY);
                if null < 0 || libc::dup2(null, 0) < 0 {
                    report(err_w, STEP_STDIO);
                }
                if null > 2 {
                    libc::close(null);
                }
            }
            if let Some(w) = ready_w {
                // dup2 clears FD_CLOEXEC on the new descriptor.
                if libc::dup2(w.as_raw_fd(), 3) < 0 {
                    report(err_w, STEP_STDIO);
                }
            }
        }
    }

    fn set_creds(spec: &SpawnSpec, err_w: RawFd) {
        let Some(c) = &spec.creds else { return };
        let groups: &[libc::gid_t] = &c.groups;
        // SAFETY: plain credential system calls; `groups` outlives the call.
        unsafe {
            if libc::setgroups(groups.len(), groups.as_ptr()) < 0
                || libc::setgid(c.gid) < 0
                || libc::setuid(c.uid) < 0
            {
                report(err_w, STEP_CREDS);
            }
        }
    }

    fn child(prep: &Prepared, spec: &SpawnSpec, err_w: RawFd, ready_w: Option<&OwnedFd>) -> ! {
        reset_signals();
        // SAFETY: setsid has no memory-safety preconditions.
        unsafe {
            libc::setsid();
        }
        setup_stdio(prep, spec, err_w, ready_w);
        // SAFETY: workdir is a valid C string.
        if unsafe { libc::chdir(prep.workdir.as_ptr()) } < 0 {
            report(err_w, STEP_CHDIR);
        }
        set_creds(spec, err_w);
        let _ = nix::unistd::execve(&prep.path, &prep.argv, &prep.env);
        report(err_w, STEP_EXEC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn only_block_devices_are_read_for_their_superblock() {
        let sys = RealSys::default();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk.img");
        fs::write(&file, [0u8; 4096]).unwrap();
        for path in ["/dev/null", "/dev/zero", file.to_str().unwrap()] {
            let e = sys.read_head(path, 2048).unwrap_err();
            assert_eq!(e.to_string(), "not a block device", "{path}");
        }
    }

    #[test]
    fn write_file_never_follows_or_blocks_on_what_the_image_left_at_its_temp_name() {
        let mut sys = RealSys::default();
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("resolv.conf");
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep\n").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("resolv.conf.tmp-init")).unwrap();
        sys.write_file(target.to_str().unwrap(), b"nameserver 10.0.2.3\n", 0o644)
            .unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep\n");
        assert_eq!(
            fs::read_to_string(&target).unwrap(),
            "nameserver 10.0.2.3\n"
        );
        let hosts = dir.path().join("hosts");
        nix::unistd::mkfifo(
            &dir.path().join("hosts.tmp-init"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        sys.write_file(hosts.to_str().unwrap(), b"127.0.0.1 localhost\n", 0o644)
            .unwrap();
        assert!(fs::metadata(&hosts).unwrap().is_file());
    }

    #[test]
    fn wait_returns_when_the_path_appears_not_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vdz");
        let p = path.clone();
        let maker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            fs::write(p, b"").unwrap();
        });
        let start = Instant::now();
        let paths = [path.to_string_lossy().into_owned()];
        assert_eq!(wait_for_paths(&paths, Duration::from_secs(30)), Ok(()));
        // Event-driven: returns long before the 30 s bound.
        assert!(start.elapsed() < Duration::from_secs(10));
        maker.join().unwrap();
    }

    #[test]
    fn wait_names_the_missing_path() {
        let dir = tempfile::tempdir().unwrap();
        let here = dir.path().join("here");
        fs::write(&here, b"").unwrap();
        let paths = [
            here.to_string_lossy().into_owned(),
            dir.path().join("vdc").to_string_lossy().into_owned(),
        ];
        assert_eq!(
            wait_for_paths(&paths, Duration::from_millis(20)),
            Err(paths[1].clone())
        );
        assert_eq!(wait_for_paths(&paths[..1], Duration::ZERO), Ok(()));
    }

    #[test]
    fn libc_power_key_events_decode() {
        let ev = libc::input_event {
            time: libc::timeval {
                tv_sec: 1,
                tv_usec: 2,
            },
            type_: input_event::EV_KEY,
            code: input_event::KEY_POWER,
            value: 1,
        };
        let release = libc::input_event { value: 0, ..ev };
        // SAFETY: input_event is plain old data; viewing it as bytes is sound.
        let bytes = |e: &libc::input_event| unsafe {
            std::slice::from_raw_parts(
                (e as *const libc::input_event).cast::<u8>(),
                std::mem::size_of::<libc::input_event>(),
            )
            .to_vec()
        };
        assert!(input_event::is_power_press(&bytes(&ev)));
        assert!(!input_event::is_power_press(&bytes(&release)));
    }
}
