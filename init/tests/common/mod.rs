//! Namespace harness: the real `init` binary as PID 1 of new PID + mount
//! namespaces, pivoted into a tmpfs of its own (or into a read-only image for
//! direct boot), with loop-device disks.
//!
//! Host safety: init only ever sees the devices named on its test command line
//! (loop devices made here), never /proc/cmdline, and writes to the inherited
//! stdout instead of a console device. Everything is torn down on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Hang detection for one namespace boot.
pub const HANG_TIMEOUT: Duration = Duration::from_secs(60);

const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "echo", "env", "cat", "id", "pwd", "sleep", "kill", "seq", "tr", "ls", "true", "false",
    "grep", "wc", "awk", "touch", "printf", "mount", "sort", "head",
];

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Fail clearly when not root: these tests need mounts, loop devices and namespaces.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "namespace tests need root (loop devices, mounts, namespaces)"
    );
    for tool in ["unshare", "losetup", "mkfs.ext4", "mkfs.erofs", BUSYBOX] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(found, "{tool} is missing: run scripts/setup.sh");
    }
}

/// A loop device over an image file, detached on drop.
pub struct LoopDisk {
    /// /dev/loopN
    pub dev: String,
}

impl LoopDisk {
    /// Attach `img` (read-only when `ro`), retrying races with parallel tests.
    pub fn attach(img: &Path, ro: bool) -> LoopDisk {
        let mut last = String::new();
        for _ in 0..20 {
            let mut cmd = Command::new("losetup");
            cmd.args(["-f", "--show"]);
            if ro {
                cmd.arg("-r");
            }
            let out = cmd.arg(img).output().expect("losetup");
            if out.status.success() {
                let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
                return LoopDisk { dev };
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("losetup {}: {last}", img.display());
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// The host's iproute2 `ip`, which can make the bridge standing in for eth0.
fn ip_tool() -> String {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("iproute2's ip (apt-get install iproute2)")
        .to_string()
}

/// A folder of busybox + a passwd database + a marker file.
pub fn busybox_rootfs(dir: &Path) {
    for d in [
        "bin",
        "etc",
        "srv/work dir",
        "home/app",
        "root",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "oldroot",
    ] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy(BUSYBOX, dir.join("bin/busybox")).unwrap();
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(a)).unwrap();
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\napp:x:1000:\nwheel:x:10:app\n",
    )
    .unwrap();
    std::fs::write(dir.join("etc/marker"), "from-image\n").unwrap();
    std::fs::write(dir.join("etc/not-executable"), "data\n").unwrap();
}

/// ext4 image of a folder (no journal, as hypeman builds config disks).
pub fn mkfs_ext4(dir: Option<&Path>, img: &Path, size_mb: u32, journal: bool) {
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-q", "-F", "-b", "4096"]);
    if !journal {
        cmd.args(["-O", "^has_journal"]);
    }
    if let Some(d) = dir {
        cmd.arg("-d").arg(d);
    }
    cmd.arg(img).arg(format!("{size_mb}M"));
    run(&mut cmd);
}

/// erofs image of a folder.
pub fn mkfs_erofs(dir: &Path, img: &Path) {
    run(Command::new("mkfs.erofs").arg("--quiet").arg(img).arg(dir));
}

/// Root filesystem kinds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Root {
    /// ext4 image.
    Ext4,
    /// erofs image.
    Erofs,
    /// Random bytes.
    Garbage,
}

/// One boot of init in a namespace.
pub struct Scenario {
    /// config.json bytes; `None` → no config disk at all.
    pub config: Option<String>,
    /// Root filesystem.
    pub root: Root,
    /// Direct boot: `/` is the read-only image and init is its /init.
    pub direct: bool,
    /// Extra kernel command line words.
    pub cmdline: String,
    /// An agent script to put at /usr/local/bin/guest-agent.
    pub agent: Option<String>,
    /// Extra files in the image rootfs (path relative, contents, mode).
    pub files: Vec<(String, String, u32)>,
    /// Entries of the image rootfs replaced by symlinks (path relative, target).
    pub symlinks: Vec<(String, String)>,
    /// A network namespace of its own with an `eth0` (a bridge: these hosts
    /// have no dummy or veth driver), and `hypeman.test_net=1`.
    pub net: bool,
    /// With `net`: leave the namespace without eth0.
    pub no_eth0: bool,
    /// With `net`: the link's name and MAC instead of eth0 and a random one.
    pub net_link: Option<(String, String)>,
    /// Run under `strace -ff -o <this>`: one trace file per process.
    pub trace: Option<PathBuf>,
}

impl Scenario {
    /// A scenario with an ext4 root running `config`.
    pub fn new(config: &str) -> Scenario {
        Scenario {
            config: Some(config.to_string()),
            root: Root::Ext4,
            direct: false,
            cmdline: String::new(),
            agent: None,
            files: Vec::new(),
            symlinks: Vec::new(),
            net: false,
            no_eth0: false,
            net_link: None,
            trace: None,
        }
    }
}

/// A running boot.
pub struct Running {
    child: Child,
    lines: Receiver<String>,
    /// Console lines seen so far.
    pub console: Vec<String>,
    disks: Vec<LoopDisk>,
    /// Kept alive (images and staging) until the boot ends.
    pub work: tempfile::TempDir,
    /// The overlay disk image, for inspection after power-off.
    pub overlay_img: PathBuf,
}

/// How a boot ended.
pub struct Outcome {
    /// Everything init, the agent and the app printed.
    pub console: Vec<String>,
    /// Exit status of the namespace.
    pub status: ExitStatus,
    /// Disks and images, alive until the outcome is dropped.
    pub disks: Vec<LoopDisk>,
    /// The work folder with the images.
    pub work: tempfile::TempDir,
}

impl Outcome {
    /// The single HYPEMAN-EXIT line.
    pub fn exit_line(&self) -> &str {
        let exits: Vec<&String> = self
            .console
            .iter()
            .filter(|l| l.starts_with("HYPEMAN-EXIT "))
            .collect();
        assert_eq!(exits.len(), 1, "one EXIT line expected:\n{}", self.text());
        exits[0]
    }

    /// Whole console.
    pub fn text(&self) -> String {
        self.console.join("\n")
    }

    /// reboot(POWER_OFF) in a child PID namespace ends its init with SIGINT.
    pub fn assert_powered_off(&self) {
        let by_sigint =
            self.status.signal() == Some(libc::SIGINT) || self.status.code() == Some(130);
        assert!(
            by_sigint,
            "not powered off ({:?}):\n{}",
            self.status,
            self.text()
        );
        assert!(!self.text().contains("Kernel panic"));
    }
}

fn stage_initramfs(stage: &Path, agent: Option<&str>) {
    std::fs::create_dir_all(stage.join("usr/local/bin")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_init"), stage.join("init")).unwrap();
    if let Some(script) = agent {
        let p = stage.join("usr/local/bin/guest-agent");
        std::fs::write(&p, script).unwrap();
        set_mode(&p, 0o755);
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Namespace entry: mount the new root, pivot into it, drop the host root, exec /init.
const LAUNCHER: &str = r#"
set -e
if [ -n "$IP_TOOL" ]; then
  # Only in a fresh network namespace: nothing but lo.
  [ "$("$IP_TOOL" -o link show | wc -l)" = 1 ]
  if [ -z "$NO_ETH0" ]; then
    "$IP_TOOL" link add "${NET_NAME:-eth0}" type bridge
    [ -z "$NET_MAC" ] || "$IP_TOOL" link set "$NET_NAME" address "$NET_MAC"
  fi
fi
if [ -n "$DIRECT_DEV" ]; then
  mount -t ext4 -o ro "$DIRECT_DEV" "$NEWROOT"
else
  mount -t tmpfs -o mode=0755 initramfs "$NEWROOT"
  cp -a "$STAGE"/. "$NEWROOT"/
  mkdir -p "$NEWROOT/oldroot"
fi
cd "$NEWROOT"
pivot_root . oldroot
exec 2>&1
/oldroot/bin/busybox umount -l /oldroot
exec /init
"#;

fn build_root(s: &Scenario, work: &Path) -> PathBuf {
    let rootdir = work.join("rootfs");
    busybox_rootfs(&rootdir);
    for (rel, contents, mode) in &s.files {
        let p = rootdir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap();
        set_mode(&p, *mode);
    }
    for (rel, target) in &s.symlinks {
        let p = rootdir.join(rel);
        let _ = std::fs::remove_dir(&p);
        std::os::unix::fs::symlink(target, &p).unwrap();
    }
    if s.direct {
        std::fs::copy(env!("CARGO_BIN_EXE_init"), rootdir.join("init")).unwrap();
    }
    let img = work.join("root.img");
    match s.root {
        Root::Ext4 => mkfs_ext4(Some(&rootdir), &img, 24, false),
        Root::Erofs => mkfs_erofs(&rootdir, &img),
        Root::Garbage => {
            let bytes: Vec<u8> = (0..4 << 20)
                .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect();
            std::fs::write(&img, bytes).unwrap();
        }
    }
    img
}

impl Scenario {
    /// Build the disks and start init.
    pub fn start(&self) -> Running {
        require_root();
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        let root_img = build_root(self, w);
        let overlay_img = w.join("overlay.img");
        mkfs_ext4(None, &overlay_img, 32, true);
        let root = LoopDisk::attach(&root_img, true);
        let overlay = LoopDisk::attach(&overlay_img, false);
        let mut cmdline = format!(
            "hypeman.overlay={} hypeman.console=inherit hypeman.modules=0 hypeman.device_timeout_ms=3000 hypeman.agent_timeout_ms=5000 {}",
            overlay.dev, self.cmdline
        );
        if !self.direct {
            cmdline.push_str(&format!(" hypeman.root={}", root.dev));
        }
        let mut disks = vec![root, overlay];
        match &self.config {
            Some(json) => {
                let cdir = w.join("configdir");
                std::fs::create_dir_all(&cdir).unwrap();
                std::fs::write(cdir.join("config.json"), json).unwrap();
                let cimg = w.join("config.img");
                mkfs_ext4(Some(&cdir), &cimg, 4, false);
                let c = LoopDisk::attach(&cimg, true);
                cmdline.push_str(&format!(" hypeman.config={}", c.dev));
                disks.push(c);
            }
            None => cmdline.push_str(" hypeman.config=/dev/hypeman-test-no-such-disk"),
        }
        let stage = w.join("stage");
        stage_initramfs(&stage, self.agent.as_deref());
        let newroot = w.join("newroot");
        std::fs::create_dir_all(&newroot).unwrap();
        let mut cmd = match &self.trace {
            Some(prefix) => {
                let mut c = Command::new("strace");
                c.args(["-ff", "--decode-pids=pidns", "-o"])
                    .arg(prefix)
                    .arg("unshare");
                c
            }
            None => Command::new("unshare"),
        };
        if self.net {
            cmd.arg("--net");
            cmdline.push_str(" hypeman.test_net=1");
        }
        cmd.args([
            "--pid",
            "--mount",
            "--fork",
            "--kill-child",
            "--propagation",
            "private",
            "--",
        ])
        .args([BUSYBOX, "sh", "-c", LAUNCHER])
        .env_clear()
        .env("PATH", "/bin:/usr/bin:/sbin:/usr/sbin")
        .env("IP_TOOL", if self.net { ip_tool() } else { String::new() })
        .env("NO_ETH0", if self.no_eth0 { "1" } else { "" })
        .env(
            "NET_NAME",
            self.net_link.as_ref().map_or("", |l| l.0.as_str()),
        )
        .env(
            "NET_MAC",
            self.net_link.as_ref().map_or("", |l| l.1.as_str()),
        )
        .env("HYPEMAN_INIT_CMDLINE", cmdline.trim())
        .env("NEWROOT", &newroot)
        .env("STAGE", &stage)
        .env(
            "DIRECT_DEV",
            if self.direct {
                disks[0].dev.as_str()
            } else {
                ""
            },
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("unshare");
        let (tx, rx) = channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines: rx,
            console: Vec::new(),
            disks,
            work,
            overlay_img,
        }
    }

    /// Start and wait for the end.
    pub fn boot(&self) -> Outcome {
        self.start().finish()
    }
}

impl Running {
    /// Wait for a console line containing `needle`.
    pub fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + HANG_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.console.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.child.kill();
                    panic!(
                        "no line containing {needle:?}; console:\n{}",
                        self.console.join("\n")
                    );
                }
            }
        }
    }

    /// Host pid of the namespace's PID 1 (init).
    pub fn init_pid(&self) -> i32 {
        let pid = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        children
            .split_whitespace()
            .next()
            .expect("init pid")
            .parse()
            .unwrap()
    }

    /// Send a signal to init from outside the namespace.
    pub fn signal_init(&self, sig: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.init_pid(), sig) };
        assert_eq!(rc, 0, "kill {sig}");
    }

    /// Wait for the namespace to end (bounded), collecting the console.
    pub fn finish(mut self) -> Outcome {
        let deadline = Instant::now() + HANG_TIMEOUT;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("init hung; console:\n{}", self.console.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.console.push(line);
        }
        Outcome {
            console: self.console,
            status,
            disks: self.disks,
            work: self.work,
        }
    }
}

/// A config.json running `cmd` with `env`, hypeman-style.
pub fn config(cmd: &[&str], extra: &str) -> String {
    let cmd = serde_json::to_string(cmd).unwrap();
    format!(
        r#"{{"entrypoint":null,"cmd":{cmd},"workdir":"/","env":{{"GREETING":"hello world"}},"network_enabled":false,"init_mode":"exec","skip_guest_agent":true{extra}}}"#
    )
}
