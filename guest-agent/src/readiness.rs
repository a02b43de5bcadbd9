//! The readiness protocol between init and the agent (CONTRACT.md §4).

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::FromRawFd;
use std::path::Path;

/// fd number to write one byte to.
pub const READY_FD_ENV: &str = "HYPEMAN_AGENT_READY_FD";
/// File to create once listening.
pub const READY_FILE_ENV: &str = "HYPEMAN_AGENT_READY_FILE";

/// Create the ready file, print AGENT-READY, then write the readiness byte (so
/// the line is on the console before init goes on). A bad readiness fd is
/// refused before anything is announced.
pub fn announce() -> io::Result<()> {
    let pipe = match std::env::var(READY_FD_ENV) {
        Ok(fd) => Some(ready_pipe(&fd)?),
        Err(_) => None,
    };
    if let Ok(path) = std::env::var(READY_FILE_ENV) {
        write_ready_file(Path::new(&path))?;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(now.as_secs()).unwrap_or(0);
    let line = guest_contract::sentinel::agent_ready(secs, now.subsec_nanos()).render();
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    match pipe {
        Some(mut p) => p.write_all(b"R"),
        None => Ok(()),
    }
}

fn ready_pipe(fd: &str) -> io::Result<File> {
    let fd: i32 = fd
        .parse()
        .map_err(|_| io::Error::other(format!("{READY_FD_ENV}={fd:?} is not a file descriptor")))?;
    if fd < 3 {
        return Err(io::Error::other(format!(
            "{READY_FD_ENV}={fd} would clobber stdio"
        )));
    }
    // SAFETY: fcntl(F_GETFD) only queries the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::other(format!("{READY_FD_ENV}={fd} is not open")));
    }
    // SAFETY: the fd is open, and init hands it to us (a pipe's write end) for
    // exactly this purpose; nothing else in the process uses it, and the File
    // closes it after the write.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn write_ready_file(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, b"ready\n")?;
    fs::rename(&tmp, path)
}
