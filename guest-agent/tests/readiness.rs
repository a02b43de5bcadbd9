//! The real agent binary performs the readiness protocol once it listens on vsock.

#![allow(clippy::unwrap_used)]

use guest_contract::sentinel::Sentinel;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-element array for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0);
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

#[test]
fn listens_then_writes_byte_line_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let ready_file = dir.path().join("run/hypeman/guest-agent-ready");
    let (r, w) = pipe();
    let wfd = w.as_raw_fd();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_guest-agent"));
    cmd.args(["--port", "42422"])
        .env("HYPEMAN_AGENT_READY_FD", "3")
        .env("HYPEMAN_AGENT_READY_FILE", &ready_file)
        .stdout(Stdio::piped());
    // SAFETY: only dup2 runs between fork and exec; it is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(wfd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(w);
    let mut byte = [0u8; 1];
    let mut reader = std::fs::File::from(r);
    reader.read_exact(&mut byte).expect("readiness byte");
    assert_eq!(&byte, b"R");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("HYPEMAN-AGENT-READY ts="), "{line}");
    assert!(matches!(
        Sentinel::parse_line(line.trim_end()),
        Some(Sentinel::AgentReady { .. })
    ));
    for _ in 0..100 {
        if ready_file.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ready_file.exists());
    // Still serving after readiness.
    assert!(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn bad_arguments_are_refused_clearly() {
    let out = Command::new(env!("CARGO_BIN_EXE_guest-agent"))
        .args(["--port", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "guest-agent: invalid port \"x\"\n"
    );
    let help = Command::new(env!("CARGO_BIN_EXE_guest-agent"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("vsock port"));
}

#[test]
fn bad_ready_fd_is_an_error_not_a_silent_success() {
    let out = Command::new(env!("CARGO_BIN_EXE_guest-agent"))
        .args(["--port", "42423"])
        .env("HYPEMAN_AGENT_READY_FD", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("would clobber stdio"));
}
