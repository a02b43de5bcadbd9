//! The clock follower: a reference clock far ahead of this machine's is
//! followed at once when the kernel log (a FIFO standing in for /dev/kmsg)
//! reports a VM fork, and on the periodic check; a close one never is. The
//! machine records the step instead of setting the host's clock.

#![allow(clippy::unwrap_used)]

use guest_agent::clock::{self, ReferenceClock};
use guest_agent::system::Machine;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Default)]
struct Recorder(Mutex<Vec<Duration>>);

impl Machine for Recorder {
    fn signal_init(&self, _signal: i32) -> std::io::Result<()> {
        Ok(())
    }
    fn set_clock(&self, since_epoch: Duration) -> std::io::Result<()> {
        self.0.lock().unwrap().push(since_epoch);
        Ok(())
    }
}

/// This machine's clock shifted by `offset` seconds.
struct Shifted(i64);

impl ReferenceClock for Shifted {
    fn now(&mut self) -> std::io::Result<Duration> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let shift = Duration::from_secs(self.0.unsigned_abs());
        Ok(if self.0 >= 0 {
            now + shift
        } else {
            now - shift
        })
    }
}

fn fifo(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("kmsg");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    path
}

async fn steps_after(machine: &Recorder, wait: Duration) -> Vec<Duration> {
    tokio::time::sleep(wait).await;
    machine.0.lock().unwrap().clone()
}

#[tokio::test]
async fn a_vm_fork_record_steps_the_clock_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let kmsg = fifo(dir.path());
    let machine = Arc::new(Recorder::default());
    let forks = clock::watch_forks(kmsg.clone());
    let mut writer = std::fs::OpenOptions::new().write(true).open(&kmsg).unwrap();
    let hour = Duration::from_secs(3600);
    tokio::spawn(clock::follow(
        Box::new(Shifted(100)),
        machine.clone(),
        forks,
        hour,
    ));
    writeln!(writer, "6,900,1000,-;random: crng init done").unwrap();
    assert!(steps_after(&machine, Duration::from_millis(300))
        .await
        .is_empty());
    writeln!(
        writer,
        "6,901,2000,-;random: crng reseeded due to virtual machine fork"
    )
    .unwrap();
    let steps = steps_after(&machine, Duration::from_millis(500)).await;
    assert_eq!(steps.len(), 1, "{steps:?}");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let ahead = steps[0].saturating_sub(now);
    assert!(
        ahead > Duration::from_secs(98) && ahead < Duration::from_secs(101),
        "{ahead:?}"
    );
}

#[tokio::test]
async fn the_periodic_check_steps_back_and_leaves_a_close_clock_alone() {
    let dir = tempfile::tempdir().unwrap();
    let every = Duration::from_millis(50);
    let close = Arc::new(Recorder::default());
    let forks = clock::watch_forks(fifo(dir.path()));
    tokio::spawn(clock::follow(
        Box::new(Shifted(0)),
        close.clone(),
        forks,
        every,
    ));
    let behind = Arc::new(Recorder::default());
    let (_tx, forks) = tokio::sync::mpsc::channel(1);
    tokio::spawn(clock::follow(
        Box::new(Shifted(-50)),
        behind.clone(),
        forks,
        every,
    ));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(close.0.lock().unwrap().is_empty());
    let steps = behind.0.lock().unwrap().clone();
    assert!(!steps.is_empty());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let back = now.saturating_sub(steps[0]);
    assert!(
        back > Duration::from_secs(49) && back < Duration::from_secs(52),
        "{back:?}"
    );
}
