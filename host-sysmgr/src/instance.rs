//! Named VM instances that outlive the command that started them
//! (`host-sysmgr run --detach`).
//!
//! Each instance has a folder `<root>/<name>/` holding `instance.json` (the
//! VMM's pid and start time, its sockets, the command), the serial log, the
//! sockets and the disks. A monitor process owns the VMM (the VMM dies with
//! it) and writes `exit.json` when the VM ends. The pid is checked together
//! with its start time, so a recycled pid is never taken for the VMM.

use crate::agent::Dialer;
use guest_contract::sentinel::{scan_tail, TAIL_BYTES};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors of the instance store.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// A name that is not `[a-z0-9][a-z0-9_.-]{0,62}`.
    #[error(
        "invalid instance name {0:?}: use 1-63 of a-z 0-9 _ . - (starting with a letter or digit)"
    )]
    BadName(String),
    /// No instance of that name.
    #[error("no instance named {0:?}")]
    NotFound(String),
    /// The name is taken.
    #[error("an instance named {0:?} exists already")]
    Exists(String),
    /// A file of the store could not be read or written.
    #[error("{}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `instance.json` or `exit.json` does not parse.
    #[error("{} is corrupt", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InstanceError + '_ {
    move |source| InstanceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What is recorded of a running instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// The instance's name.
    pub name: String,
    /// The VMM's pid.
    pub vmm_pid: i32,
    /// The VMM's start time (field 22 of /proc/<pid>/stat).
    pub vmm_start_ticks: u64,
    /// The monitor's pid.
    pub monitor_pid: i32,
    /// QEMU's QMP socket (power button, quit).
    pub control_socket: Option<PathBuf>,
    /// The hybrid-vsock socket of the agent, if the VM has vsock.
    pub vsock_uds: Option<PathBuf>,
    /// The serial console log.
    pub serial_log: PathBuf,
    /// The command run in the guest.
    pub command: Vec<String>,
    /// When it was started (seconds since the epoch).
    pub created: u64,
    /// `exec` or `systemd`.
    pub mode: String,
}

/// How an instance ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The app's code from HYPEMAN-EXIT, if there was one.
    pub code: Option<i32>,
    /// Its message.
    pub message: Option<String>,
    /// When the VMM exited (seconds since the epoch).
    pub ended: u64,
}

/// The folder of all instances.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// `$HOST_SYSMGR_STATE_DIR`, else `$XDG_RUNTIME_DIR/host-sysmgr`, else
/// `/run/host-sysmgr` for root and `/tmp/host-sysmgr-<uid>` otherwise.
pub fn default_root() -> PathBuf {
    if let Some(d) = std::env::var_os("HOST_SYSMGR_STATE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        return Path::new(&d).join("host-sysmgr");
    }
    // SAFETY: getuid has no preconditions.
    match unsafe { libc::getuid() } {
        0 => PathBuf::from("/run/host-sysmgr"),
        uid => PathBuf::from(format!("/tmp/host-sysmgr-{uid}")),
    }
}

/// Checks an instance name.
pub fn check_name(name: &str) -> Result<(), InstanceError> {
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    if ok_first && ok_rest && name.len() <= 63 {
        Ok(())
    } else {
        Err(InstanceError::BadName(name.to_string()))
    }
}

impl Store {
    /// The store at `root` (created on first use, mode 0700).
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    /// The folder of `name`.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Makes the folder of a new instance; fails when the name is taken.
    pub fn create(&self, name: &str) -> Result<PathBuf, InstanceError> {
        check_name(name)?;
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let dir = self.dir(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(InstanceError::Exists(name.to_string()))
            }
            Err(e) => Err(io(&dir)(e)),
        }
    }

    /// Reads an instance.
    pub fn open(&self, name: &str) -> Result<Instance, InstanceError> {
        check_name(name)?;
        let dir = self.dir(name);
        let path = dir.join("instance.json");
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(InstanceError::NotFound(name.to_string()))
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let info = serde_json::from_slice(&text).map_err(|source| InstanceError::Corrupt {
            path: path.clone(),
            source,
        })?;
        Ok(Instance { dir, info })
    }

    /// Every instance, by name (folders without an `instance.json` — an
    /// instance still starting — are skipped).
    pub fn list(&self) -> Result<Vec<Instance>, InstanceError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.root)(e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| check_name(n).is_ok())
            .collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            match self.open(&name) {
                Ok(i) => out.push(i),
                Err(InstanceError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// One instance.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Its folder.
    pub dir: PathBuf,
    /// What was recorded at start.
    pub info: InstanceInfo,
}

/// Writes `value` as JSON to `path` atomically (temp + rename).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), InstanceError> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(value).map_err(|source| InstanceError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

impl Instance {
    /// Whether the VMM still runs (same pid and start time).
    pub fn running(&self) -> bool {
        start_ticks(self.info.vmm_pid) == Some(self.info.vmm_start_ticks)
    }

    /// How it ended: what the monitor recorded, or — in the moment between
    /// the VMM's end and the monitor's record — what the serial log says.
    /// `None` while it runs.
    pub fn exit(&self) -> Option<ExitInfo> {
        if let Some(recorded) = self.recorded_exit() {
            return Some(recorded);
        }
        (!self.running()).then(|| exit_from_serial(&self.info.serial_log))
    }

    /// What the monitor wrote to `exit.json`, if it has.
    pub fn recorded_exit(&self) -> Option<ExitInfo> {
        let text = std::fs::read(self.dir.join("exit.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Waits up to `timeout` for the monitor to record the end (it also
    /// removes the disks); `true` once it has, or when the monitor is gone.
    pub fn wait_recorded(&self, timeout: Duration) -> bool {
        let deadline = crate::deadline::after(timeout);
        loop {
            if self.recorded_exit().is_some() || start_ticks(self.info.monitor_pid).is_none() {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How to reach its agent.
    pub fn agent_dialer(&self) -> Option<Dialer> {
        self.info.vsock_uds.as_ref().map(|uds| Dialer::HybridVsock {
            uds: uds.clone(),
            port: guest_proto::AGENT_PORT,
        })
    }

    /// Removes the folder (the instance must have ended).
    pub fn remove(self) -> Result<(), InstanceError> {
        std::fs::remove_dir_all(&self.dir).map_err(io(&self.dir))
    }

    /// Waits up to `timeout` for the VMM to end; `true` when it has.
    pub fn wait_gone(&self, timeout: Duration) -> bool {
        let deadline = crate::deadline::after(timeout);
        while self.running() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

/// How a VM ended, read from the last [`TAIL_BYTES`] of its serial log as
/// a hypeman host reads it (no `HYPEMAN-EXIT` line: no code).
pub fn exit_from_serial(serial: &Path) -> ExitInfo {
    let exit = read_tail(serial).and_then(|t| scan_tail(&t).exit);
    ExitInfo {
        code: exit.as_ref().map(|e| e.0),
        message: exit.map(|e| e.1),
        ended: now(),
    }
}

fn read_tail(path: &Path) -> Option<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES as u64)))
        .ok()?;
    let mut buf = Vec::new();
    f.take(TAIL_BYTES as u64).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Field 22 (starttime) of `/proc/<pid>/stat`, if the process exists and is
/// not a zombie.
pub fn start_ticks(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // after it are counted from the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["a", "web-1", "x.y_z", &"a".repeat(63)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "A", "a/b", "..", ".a", "a b", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn start_ticks_identify_a_live_process() {
        let me = i32::try_from(std::process::id()).unwrap();
        let t = start_ticks(me).unwrap();
        assert_eq!(start_ticks(me), Some(t));
        assert_eq!(start_ticks(0), None);
        assert_eq!(start_ticks(i32::MAX), None);
    }

    #[test]
    fn store_create_open_list() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::new(d.path().join("state"));
        assert!(store.list().unwrap().is_empty());
        let dir = store.create("one").unwrap();
        assert!(matches!(store.create("one"), Err(InstanceError::Exists(_))));
        assert!(store.list().unwrap().is_empty(), "no instance.json yet");
        let info = InstanceInfo {
            name: "one".into(),
            vmm_pid: i32::try_from(std::process::id()).unwrap(),
            vmm_start_ticks: start_ticks(i32::try_from(std::process::id()).unwrap()).unwrap(),
            monitor_pid: 1,
            control_socket: None,
            vsock_uds: Some(dir.join("vsock.sock")),
            serial_log: dir.join("serial.log"),
            command: vec!["true".into()],
            created: 1,
            mode: "exec".into(),
        };
        write_json(&dir.join("instance.json"), &info).unwrap();
        let got = store.open("one").unwrap();
        assert_eq!(got.info, info);
        assert!(got.running());
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(matches!(store.open("two"), Err(InstanceError::NotFound(_))));
        assert_eq!(got.exit(), None, "running: no exit yet");
        std::fs::write(dir.join("instance.json"), "{").unwrap();
        assert!(matches!(
            store.open("one"),
            Err(InstanceError::Corrupt { .. })
        ));
    }

    #[test]
    fn an_ended_vm_reads_its_exit_from_the_serial_log_until_the_monitor_records_it() {
        let d = tempfile::tempdir().unwrap();
        let serial = d.path().join("serial.log");
        let mut log = b"boot\n".repeat(5000);
        log.extend_from_slice(
            b"HYPEMAN-EXIT code=143 message=\"killed by signal 15 (terminated)\"\n",
        );
        std::fs::write(&serial, &log).unwrap();
        let inst = Instance {
            dir: d.path().to_path_buf(),
            info: InstanceInfo {
                name: "gone".into(),
                vmm_pid: 0,
                vmm_start_ticks: 1,
                monitor_pid: 0,
                control_socket: None,
                vsock_uds: None,
                serial_log: serial.clone(),
                command: vec![],
                created: 1,
                mode: "exec".into(),
            },
        };
        assert!(!inst.running());
        assert_eq!(inst.recorded_exit(), None);
        let exit = inst.exit().unwrap();
        assert_eq!(exit.code, Some(143));
        assert_eq!(
            exit.message.as_deref(),
            Some("killed by signal 15 (terminated)")
        );
        assert!(
            inst.wait_recorded(Duration::ZERO),
            "no monitor left to wait for"
        );
        let recorded = ExitInfo {
            code: Some(3),
            message: None,
            ended: 2,
        };
        write_json(&d.path().join("exit.json"), &recorded).unwrap();
        assert_eq!(inst.exit(), Some(recorded), "the monitor's record wins");
        std::fs::write(&serial, b"no sentinel\n").unwrap();
        assert_eq!(exit_from_serial(&serial).code, None);
        assert_eq!(exit_from_serial(&d.path().join("missing")).code, None);
    }
}
