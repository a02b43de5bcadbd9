//! The readiness protocol between init and the agent (CONTRACT.md §4).

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::FromRawFd;
use std::path::Path;

/// fd number to write one byte to.
pub const READY_FD_ENV: &str = "HYPEMAN_AGENT_READY_FD";
/// File to create once listening.
pub const READY_FILE_ENV: &str = "HYPEMAN_AGENT_READY_FILE";

/// Print AGENT-READY, write the readiness byte, create the ready file.
pub fn announce() -> io::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(now.as_secs()).unwrap_or(0);
    if let Ok(fd) = std::env::var(READY_FD_ENV) {
        write_ready_byte(&fd)?;
    }
    if let Ok(path) = std::env::var(READY_FILE_ENV) {
        write_ready_file(Path::new(&path))?;
    }
    let line = guest_contract::sentinel::agent_ready(secs, now.subsec_nanos()).render();
    println!("{line}");
    Ok(())
}

fn write_ready_byte(fd: &str) -> io::Result<()> {
    let fd: i32 = fd
        .parse()
        .map_err(|_| io::Error::other(format!("{READY_FD_ENV}={fd:?} is not a file descriptor")))?;
    if fd < 3 {
        return Err(io::Error::other(format!(
            "{READY_FD_ENV}={fd} would clobber stdio"
        )));
    }
    // SAFETY: init hands us this fd (a pipe's write end) for exactly this purpose
    // and nothing else in the process uses it; the File closes it after the write.
    let mut pipe = unsafe { File::from_raw_fd(fd) };
    pipe.write_all(b"R")
}

fn write_ready_file(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, b"ready\n")?;
    fs::rename(&tmp, path)
}
