//! The clock after a snapshot restore: a VM restored from a snapshot wakes
//! with the time it was saved at. When the hypervisor offers the host's
//! clock as a PTP device (`/dev/ptp0`, kvm-ptp), the agent steps
//! CLOCK_REALTIME to it whenever the two differ by more than
//! [`MAX_DRIFT`]: every [`CHECK_EVERY`], and at once when the kernel logs
//! that the VM was forked (restored).

use crate::system::Machine;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// The PTP device kvm-ptp provides.
pub const PTP_DEVICE: &str = "/dev/ptp0";
/// Largest difference left alone.
pub const MAX_DRIFT: Duration = Duration::from_secs(1);
/// How often the clocks are compared without a trigger.
pub const CHECK_EVERY: Duration = Duration::from_secs(30);
/// What the kernel logs when a VM resumes as a fork of a snapshot.
pub const VM_FORK_RECORD: &str = "crng reseeded due to virtual machine fork";

/// A clock to follow.
pub trait ReferenceClock: Send + 'static {
    /// Its time since the epoch.
    fn now(&mut self) -> std::io::Result<Duration>;
}

/// A PTP hardware clock read through its character device.
pub struct PtpClock {
    device: File,
}

impl PtpClock {
    /// Opens `path` (e.g. `/dev/ptp0`).
    pub fn open(path: &Path) -> std::io::Result<PtpClock> {
        Ok(PtpClock {
            device: File::open(path)?,
        })
    }
}

impl ReferenceClock for PtpClock {
    fn now(&mut self) -> std::io::Result<Duration> {
        // A dynamic POSIX clock id names an open device: FD_TO_CLOCKID.
        let clock = (!self.device.as_raw_fd() << 3) | 3;
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; the fd behind the clock
        // id stays open for the call (owned by `self`).
        if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let secs = u64::try_from(ts.tv_sec).map_err(|_| bad_time())?;
        let nanos = u32::try_from(ts.tv_nsec).map_err(|_| bad_time())?;
        Ok(Duration::new(secs, nanos))
    }
}

fn bad_time() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, "PTP time before 1970")
}

/// The signed step from `local` to `reference`, when it is larger than
/// [`MAX_DRIFT`]: `Some((reference, ahead))`, `ahead` = the reference is later.
pub fn needed_step(reference: Duration, local: Duration) -> Option<(Duration, bool)> {
    let (diff, ahead) = match reference.checked_sub(local) {
        Some(d) => (d, true),
        None => (local - reference, false),
    };
    (diff > MAX_DRIFT).then_some((reference, ahead))
}

/// Compares once and steps the clock when needed; returns the step taken
/// (seconds, positive when the clock moved forward).
pub fn check_once(
    reference: &mut dyn ReferenceClock,
    machine: &dyn Machine,
) -> std::io::Result<Option<f64>> {
    let want = reference.now()?;
    let local = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let Some((to, ahead)) = needed_step(want, local) else {
        return Ok(None);
    };
    machine.set_clock(to)?;
    let size = want.abs_diff(local).as_secs_f64();
    Ok(Some(if ahead { size } else { -size }))
}

/// Whether a `/dev/kmsg` record says the VM was forked from a snapshot.
pub fn is_vm_fork(record: &str) -> bool {
    record.contains(VM_FORK_RECORD)
}

/// Follows `kmsg` from its end in a thread of its own and sends one
/// message per VM-fork record. Ends when the file ends or the receiver is gone.
pub fn watch_forks(kmsg: PathBuf) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        let Ok(mut file) = File::open(&kmsg) else {
            return;
        };
        // /dev/kmsg: SEEK_END skips the records logged before now.
        let _ = file.seek(SeekFrom::End(0));
        for line in BufReader::new(file).split(b'\n') {
            let Ok(line) = line else { continue };
            if is_vm_fork(&String::from_utf8_lossy(&line)) && tx.blocking_send(()).is_err() {
                return;
            }
        }
    });
    rx
}

/// Keeps the clock within [`MAX_DRIFT`] of `reference`: checks every
/// `every`, and at once on each message of `forks`. Runs until the task is
/// dropped; a failed check is logged and retried at the next one.
pub async fn follow(
    mut reference: Box<dyn ReferenceClock>,
    machine: Arc<dyn Machine>,
    mut forks: mpsc::Receiver<()>,
    every: Duration,
) {
    let mut forks_open = true;
    loop {
        let why = tokio::select! {
            _ = tokio::time::sleep(every) => "periodic check",
            got = forks.recv(), if forks_open => match got {
                Some(()) => "virtual machine fork",
                None => { forks_open = false; continue; }
            },
        };
        match check_once(reference.as_mut(), machine.as_ref()) {
            Ok(Some(step)) => eprintln!(
                "guest-agent: clock stepped by {step:+.3} s to the host's PTP clock ({why})"
            ),
            Ok(None) => {}
            Err(e) => eprintln!("guest-agent: clock check ({why}): {e}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn small_drift_is_left_alone() {
        let t = Duration::from_secs(1_800_000_000);
        assert_eq!(needed_step(t, t), None);
        assert_eq!(needed_step(t + MAX_DRIFT, t), None);
        assert_eq!(needed_step(t, t + MAX_DRIFT), None);
        let later = t + Duration::from_millis(1001);
        assert_eq!(needed_step(later, t), Some((later, true)));
        assert_eq!(needed_step(t, later), Some((t, false)));
    }

    #[test]
    fn fork_records_are_recognised() {
        assert!(is_vm_fork(
            "6,812,93133224,-;random: crng reseeded due to virtual machine fork"
        ));
        assert!(!is_vm_fork("6,812,93133224,-;random: crng init done"));
    }

    #[test]
    fn a_file_that_is_not_a_ptp_clock_is_an_error() {
        let mut not_ptp = PtpClock::open(Path::new("/dev/null")).unwrap();
        assert!(not_ptp.now().is_err());
    }
}
