//! A recording fake of [`Sys`] for plan/apply tests: an in-memory file table,
//! scripted children and events, and a log of every effect.

use super::{Child, Event, Mount, Mounted, ReadOff, Readiness, SpawnError, SpawnSpec, Sys};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

/// A real descriptor for the fake to hand out (of /dev/null): the seam
/// passes owned descriptors, so the fake's must be real ones too.
fn fd() -> OwnedFd {
    std::fs::File::open("/dev/null")
        .expect("open /dev/null")
        .into()
}

/// The fake system.
#[derive(Default)]
pub struct FakeSys {
    /// Every effect, in order, as a short text.
    pub calls: Vec<String>,
    /// What the host serves on each vsock port.
    pub vsock_served: BTreeMap<u32, Vec<u8>>,
    /// `exec_pid1` fails (ENOENT).
    pub exec_fails: bool,
    /// Console output.
    pub console: String,
    /// Files and devices with their contents.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Directories.
    pub dirs: BTreeSet<String>,
    /// statfs magic of "/".
    pub root_magic: i64,
    /// Mount targets whose mount fails with this errno.
    pub failing_mounts: BTreeMap<String, i32>,
    /// Devices that never appear during the wait.
    pub never_appear: BTreeSet<String>,
    /// Result of each spawn, by path (default: running with the next pid).
    pub spawn_results: BTreeMap<String, SpawnError>,
    /// Result of one spawn, by its index among all spawns (0: the first).
    pub spawn_errors_at: BTreeMap<usize, SpawnError>,
    /// Readiness outcome of the agent.
    pub readiness: Option<Readiness>,
    /// Events returned by next_event, in order (then: the app exits 0). A
    /// scripted [`Event::Timeout`] moves the clock to the end of the bound
    /// next_event was given; one scripted while no bound is given fails the test.
    pub events: VecDeque<Event>,
    /// Milliseconds that pass before the n-th event (0: the first) arrives.
    pub pauses: BTreeMap<usize, u64>,
    /// Events delivered by next_event, with the clock (ms) when each arrived.
    pub delivered: Vec<(u64, Event)>,
    /// Kernel log lines (those logged after `kmsg_open`).
    pub kmsg: Vec<String>,
    /// Paths that are symlinks (in the image).
    pub symlinks: BTreeSet<String>,
    /// Our pid (1 unless a test says otherwise).
    pub pid: i32,
    /// Files that exist but have no execute bit.
    pub non_exec: BTreeSet<String>,
    /// Spawned specs (failed spawns included).
    pub spawned: Vec<SpawnSpec>,
    /// The clock (ms) at each spawn, in the order of `spawned`.
    pub spawn_clock: Vec<u64>,
    /// Network interfaces that exist (name → index); `lo` and `eth0` by default.
    pub net_links: BTreeMap<String, u32>,
    /// Device nodes that are not block devices (a console, a watchdog).
    pub non_block: BTreeSet<String>,
    /// Interface names by MAC address (`02:00:…`).
    pub net_macs: BTreeMap<String, String>,
    /// Netlink request kinds (`up`, `addr`, `route`) that fail with EPERM.
    pub failing_net: BTreeSet<String>,
    /// The pid the headers worker gets (default 4242).
    pub headers_worker_pid: Option<i32>,
    /// `start_initramfs_release` fails (fork refused).
    pub initramfs_release_fails: bool,
    /// Every path read (read_file, read_regular), in order.
    pub reads: std::cell::RefCell<Vec<String>>,
    /// Module files whose load fails (ENODEV).
    pub failing_modules: BTreeSet<String>,
    /// Fake clock (ms), advanced by each boottime() read.
    pub clock_ms: std::cell::Cell<u64>,
    next_pid: i32,
    /// The pid of the newest spawn that is not the agent: the app.
    app_pid: Option<i32>,
}

impl FakeSys {
    /// A fake initramfs boot with all three disks present.
    pub fn initramfs() -> FakeSys {
        let mut f = FakeSys {
            root_magic: super::RAMFS_MAGIC,
            next_pid: 100,
            pid: 1,
            ..FakeSys::default()
        };
        f.net_links.insert("lo".into(), 1);
        f.net_links.insert("eth0".into(), 2);
        for dev in ["/dev/vda", "/dev/vdb", "/dev/vdc"] {
            f.files.insert(dev.into(), Vec::new());
        }
        f.files.insert("/dev/vda".into(), ext4_head());
        f
    }

    /// Put a file (a config.json on the config mount, /etc/passwd in the root…).
    pub fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.files.insert(path.into(), data.to_vec());
        self
    }

    fn record(&mut self, call: String) {
        self.calls.push(call);
    }

    /// Calls starting with `prefix`.
    pub fn calls_with(&self, prefix: &str) -> Vec<&str> {
        self.calls
            .iter()
            .filter(|c| c.starts_with(prefix))
            .map(String::as_str)
            .collect()
    }
}

/// 2048 bytes with the ext4 superblock magic.
pub fn ext4_head() -> Vec<u8> {
    let mut b = vec![0u8; 2048];
    b[1024 + 0x38] = 0x53;
    b[1024 + 0x39] = 0xEF;
    b
}

fn enoent() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

impl Sys for FakeSys {
    fn boottime(&self) -> Duration {
        let now = self.clock_ms.get() + 1;
        self.clock_ms.set(now);
        Duration::from_millis(now)
    }
    fn cpu_time(&self) -> Duration {
        Duration::from_micros(4321)
    }
    fn realtime(&self) -> (i64, u32) {
        (1_771_000_000, 5)
    }
    fn getpid(&self) -> i32 {
        self.pid
    }
    fn console_write(&mut self, text: &str) {
        self.console.push_str(text);
    }
    fn select_console(&mut self, path: &str) -> io::Result<()> {
        self.record(format!("console {path}"));
        Ok(())
    }
    fn exists(&self, path: &str) -> bool {
        self.files.contains_key(path) || self.dirs.contains(path)
    }
    fn is_dir(&self, path: &str) -> bool {
        self.dirs.contains(path)
    }
    fn is_symlink(&self, path: &str) -> bool {
        self.symlinks.contains(path)
    }
    fn mkdir_all(&mut self, path: &str) -> io::Result<()> {
        self.dirs.insert(path.into());
        Ok(())
    }
    fn read_file(&self, path: &str, limit: usize) -> io::Result<Vec<u8>> {
        self.reads.borrow_mut().push(path.into());
        let data = self.files.get(path).ok_or_else(enoent)?;
        if data.len() > limit {
            return Err(io::Error::other(format!("larger than {limit} bytes")));
        }
        Ok(data.clone())
    }
    fn read_regular(&self, path: &str, limit: usize) -> io::Result<Vec<u8>> {
        self.reads.borrow_mut().push(path.into());
        let data = self.files.get(path).ok_or_else(enoent)?;
        Ok(data[..limit.min(data.len())].to_vec())
    }
    fn is_executable(&self, path: &str) -> bool {
        self.files.contains_key(path) && !self.non_exec.contains(path)
    }
    fn read_head(&self, path: &str, len: usize) -> io::Result<Vec<u8>> {
        if self.non_block.contains(path) {
            return Err(io::Error::other("not a block device"));
        }
        let data = self.files.get(path).ok_or_else(enoent)?;
        Ok(data[..len.min(data.len())].to_vec())
    }
    fn write_file(&mut self, path: &str, data: &[u8], mode: u32) -> io::Result<()> {
        self.record(format!("write {path} {mode:o}"));
        self.files.insert(path.into(), data.to_vec());
        Ok(())
    }
    fn write_existing(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        self.record(format!(
            "write_existing {path} {:?}",
            String::from_utf8_lossy(data)
        ));
        if self.files.contains_key(path) {
            Ok(())
        } else {
            Err(enoent())
        }
    }
    fn set_hostname(&mut self, name: &str) -> io::Result<()> {
        self.record(format!("hostname {name}"));
        Ok(())
    }
    fn replace_symlink_with_dir(&mut self, path: &str) -> io::Result<bool> {
        if self.symlinks.remove(path) {
            self.record(format!("unsymlink {path}"));
            self.dirs.insert(path.into());
            return Ok(true);
        }
        Ok(false)
    }
    fn symlink(&mut self, target: &str, link: &str) -> io::Result<()> {
        self.record(format!("symlink {link} -> {target}"));
        Ok(())
    }
    fn statfs_magic(&self, _path: &str) -> io::Result<i64> {
        Ok(self.root_magic)
    }
    fn open_dir(&mut self, path: &str) -> io::Result<OwnedFd> {
        self.record(format!("open_dir {path}"));
        Ok(fd())
    }
    fn mount(&mut self, m: &Mount) -> io::Result<()> {
        self.record(format!(
            "mount {} {} {} {}",
            m.source, m.target, m.fstype, m.data
        ));
        match self.failing_mounts.get(&m.target) {
            Some(errno) => Err(io::Error::from_raw_os_error(*errno)),
            None => Ok(()),
        }
    }
    fn mount_concurrently(&mut self, mounts: &[Mount], read: Option<&ReadOff>) -> Mounted {
        let mut file = None;
        let mut results = Vec::new();
        for (i, m) in mounts.iter().enumerate() {
            let done = self.mount(m);
            if let Some(r) = read.filter(|r| r.mount == i && done.is_ok()) {
                file = Some(self.read_regular(&r.path, r.limit));
                self.record(format!("umount {}", m.target));
            }
            results.push(done);
        }
        (results, file)
    }
    fn remount_ro(&mut self, target: &str) -> io::Result<()> {
        self.record(format!("remount_ro {target}"));
        Ok(())
    }
    fn open_initramfs(&mut self) -> io::Result<OwnedFd> {
        self.record("open_initramfs".into());
        Ok(fd())
    }
    fn free_initramfs(&mut self, _root: &OwnedFd) -> io::Result<u64> {
        self.record("free_initramfs".into());
        Ok(4096)
    }
    fn start_initramfs_release(&mut self, _root: &OwnedFd) -> io::Result<i32> {
        self.record("start_initramfs_release".into());
        match self.initramfs_release_fails {
            true => Err(io::Error::from_raw_os_error(libc::EAGAIN)),
            false => Ok(4343),
        }
    }
    fn switch_root(&mut self, newroot: &str) -> io::Result<()> {
        self.record(format!("switch_root {newroot}"));
        Ok(())
    }
    fn kernel_release(&self) -> String {
        "6.1.0-test".into()
    }
    fn load_module(&mut self, path: &str, params: &str) -> io::Result<()> {
        match params {
            "" => self.record(format!("load_module {path}")),
            p => self.record(format!("load_module {path} {p}")),
        }
        match self.failing_modules.contains(path) {
            true => Err(io::Error::from_raw_os_error(libc::ENODEV)),
            false => Ok(()),
        }
    }
    fn mknod_char(&mut self, path: &str, major: u32, minor: u32, mode: u32) -> io::Result<()> {
        self.record(format!("mknod {path} c {major}:{minor} {mode:o}"));
        self.files.insert(path.into(), Vec::new());
        Ok(())
    }
    fn list_dir(&mut self, path: &str) -> io::Result<Vec<String>> {
        self.record(format!("list_dir {path}"));
        let prefix = format!("{}/", path.trim_end_matches('/'));
        let names: BTreeSet<String> = self
            .files
            .keys()
            .chain(self.dirs.iter())
            .filter_map(|p| p.strip_prefix(&prefix))
            .filter_map(|rest| rest.split('/').next())
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        match names.is_empty() && !self.dirs.contains(path) {
            true => Err(enoent()),
            false => Ok(names.into_iter().collect()),
        }
    }
    fn wait_for_paths(&mut self, paths: &[String], timeout: Duration) -> Result<(), String> {
        self.record(format!(
            "wait {} {}ms",
            paths.join(","),
            timeout.as_millis()
        ));
        match paths.iter().find(|p| self.never_appear.contains(*p)) {
            Some(p) => Err(p.clone()),
            None => Ok(()),
        }
    }
    fn disable_ctrl_alt_del(&mut self) {
        self.record("cad_off".into());
    }
    fn setup_signals(&mut self) -> io::Result<()> {
        self.record("setup_signals".into());
        Ok(())
    }
    fn spawn(&mut self, spec: &SpawnSpec) -> Result<Child, SpawnError> {
        self.record(format!("spawn {} {:?}", spec.path, spec.argv));
        let index = self.spawned.len();
        self.spawned.push(spec.clone());
        self.spawn_clock.push(self.clock_ms.get());
        let scripted = self.spawn_errors_at.get(&index);
        if let Some(e) = scripted.or_else(|| self.spawn_results.get(&spec.path)) {
            return Err(*e);
        }
        self.next_pid += 1;
        if spec.path != crate::boot::plan::AGENT_TARGET {
            self.app_pid = Some(self.next_pid);
        }
        let ready_fd = spec.readiness_fd.then(fd);
        Ok(Child {
            pid: self.next_pid,
            ready_fd,
        })
    }
    fn wait_ready(&mut self, _fd: OwnedFd, timeout: Duration) -> Readiness {
        self.record(format!("wait_ready {}ms", timeout.as_millis()));
        self.readiness.unwrap_or(Readiness::Ready)
    }
    fn watch_power_button(&mut self) -> Option<String> {
        self.record("watch_power_button".into());
        None
    }
    fn next_event(&mut self, timeout: Option<Duration>) -> Event {
        if let Some(t) = timeout {
            self.record(format!("wait_event {}ms", t.as_millis()));
        }
        let pause = self.pauses.get(&self.delivered.len()).copied();
        self.clock_ms.set(self.clock_ms.get() + pause.unwrap_or(0));
        let app_exits = Event::Exited {
            pid: self.app_pid.unwrap_or(self.next_pid),
            code: 0,
        };
        let event = self.events.pop_front().unwrap_or(app_exits);
        if event == Event::Timeout {
            let t = timeout.expect("a Timeout scripted while next_event has no bound");
            let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
            self.clock_ms.set(self.clock_ms.get() + ms);
        }
        self.delivered.push((self.clock_ms.get(), event));
        event
    }
    fn kill(&mut self, pid: i32, sig: i32) -> io::Result<()> {
        self.record(format!("kill {pid} {sig}"));
        Ok(())
    }
    fn kill_all(&mut self, timeout: Duration) {
        self.record(format!("kill_all {}ms", timeout.as_millis()));
    }
    fn kmsg_open(&mut self) -> Option<OwnedFd> {
        self.record("kmsg_open".into());
        Some(fd())
    }
    fn kmsg_read(&mut self, _fd: OwnedFd) -> Vec<String> {
        self.record("kmsg_read".into());
        self.kmsg.clone()
    }
    fn sync(&mut self) {
        self.record("sync".into());
    }
    fn power_off(&mut self) {
        self.record("power_off".into());
    }
    fn net_wait_link(&mut self, name: &str, timeout: Duration) -> io::Result<u32> {
        self.record(format!("net wait {name} {}ms", timeout.as_millis()));
        self.net_links
            .get(name)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, format!("no interface {name}")))
    }
    fn net_link_up(&mut self, index: u32, mtu: Option<u32>) -> io::Result<()> {
        let mtu = mtu.map(|m| format!(" mtu {m}")).unwrap_or_default();
        self.net_call("up", format!("net up {index}{mtu}"))
    }
    fn net_wait_mac(&mut self, mac: [u8; 6], timeout: Duration) -> io::Result<(u32, String)> {
        let text = guest_contract::network::format_mac(mac);
        self.record(format!("net wait mac {text} {}ms", timeout.as_millis()));
        let name = self.net_macs.get(&text).cloned();
        let found = name.and_then(|n| Some((*self.net_links.get(&n)?, n)));
        found.ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, format!("no interface {text}")))
    }
    fn net_add_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        self.net_call("addr", format!("net addr {index} {addr}/{prefix}"))
    }
    fn net_default_route(&mut self, index: u32, gw: IpAddr) -> io::Result<()> {
        self.net_call("route", format!("net route {index} via {gw}"))
    }
    fn remove_file(&mut self, path: &str) -> io::Result<()> {
        self.record(format!("remove {path}"));
        self.files.remove(path).map(drop).ok_or_else(enoent)
    }
    fn exec_pid1(&mut self, argv: &[String], env: &[String]) -> io::Result<()> {
        self.record(format!("exec_pid1 {argv:?} env={}", env.len()));
        if self.exec_fails {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        Ok(())
    }
    fn open_read(&mut self, path: &str) -> io::Result<OwnedFd> {
        self.record(format!("open_read {path}"));
        match self.files.contains_key(path) {
            true => Ok(fd()),
            false => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }
    fn copy_fd(&mut self, _from: &OwnedFd, to: &str, mode: u32) -> io::Result<u64> {
        self.record(format!("copy_fd {to} {mode:o}"));
        self.files.insert(to.into(), b"copied".to_vec());
        Ok(6)
    }
    fn start_headers_worker(&mut self, _tarball: OwnedFd, release: &str) -> io::Result<i32> {
        self.record(format!("start_headers_worker {release}"));
        Ok(self.headers_worker_pid.unwrap_or(4242))
    }
    fn vsock_fetch(&mut self, port: u32, limit: usize, timeout: Duration) -> io::Result<Vec<u8>> {
        self.record(format!("vsock_fetch 2:{port} {}ms", timeout.as_millis()));
        let data = self
            .vsock_served
            .get(&port)
            .ok_or_else(|| io::Error::from(io::ErrorKind::ConnectionRefused))?;
        Ok(data[..limit.min(data.len())].to_vec())
    }
}

impl FakeSys {
    /// Records a netlink request, failing it with EPERM when its kind is in
    /// `failing_net`.
    fn net_call(&mut self, kind: &str, call: String) -> io::Result<()> {
        self.record(call);
        if self.failing_net.contains(kind) {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        Ok(())
    }
}
