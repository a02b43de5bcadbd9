//! A pseudo-terminal for `Exec` with `tty`: the child gets the terminal side
//! as stdin, stdout and stderr and as its controlling terminal (a new
//! session); the agent reads and writes the master side.

use std::os::fd::{AsRawFd, OwnedFd};
use tokio::fs::File;
use tokio::process::Command;

/// A pty pair before the child is started.
pub struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

/// The agent's side once the child holds the terminal side.
pub struct Master {
    fd: OwnedFd,
}

/// Sets the window size of the terminal.
pub struct Resizer {
    fd: OwnedFd,
}

fn winsize(rows: u32, cols: u32) -> nix::pty::Winsize {
    nix::pty::Winsize {
        ws_row: u16::try_from(rows).unwrap_or(u16::MAX),
        ws_col: u16::try_from(cols).unwrap_or(u16::MAX),
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl Pty {
    /// A new pair of the given size.
    pub fn open(rows: u32, cols: u32) -> std::io::Result<Pty> {
        let pair = nix::pty::openpty(Some(&winsize(rows, cols)), None)?;
        for fd in [&pair.master, &pair.slave] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )?;
        }
        Ok(Pty {
            master: pair.master,
            slave: pair.slave,
        })
    }

    /// Makes the terminal side the child's stdio and controlling terminal.
    pub fn attach(self, cmd: &mut Command) -> std::io::Result<Master> {
        cmd.stdin(self.slave.try_clone()?)
            .stdout(self.slave.try_clone()?)
            .stderr(self.slave);
        // SAFETY: setsid and ioctl(TIOCSCTTY) are async-signal-safe and touch
        // no memory of the parent; fd 0 is the terminal side by then.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()?;
                if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(Master { fd: self.master })
    }
}

impl Master {
    /// A reader, a writer and a resizer of the master side.
    pub fn split(self) -> std::io::Result<(File, File, Resizer)> {
        let reader = File::from_std(std::fs::File::from(self.fd.try_clone()?));
        let writer = File::from_std(std::fs::File::from(self.fd.try_clone()?));
        Ok((reader, writer, Resizer { fd: self.fd }))
    }
}

impl Resizer {
    /// TIOCSWINSZ: the child gets SIGWINCH.
    pub fn resize(&self, rows: u32, cols: u32) -> std::io::Result<()> {
        let ws = winsize(rows, cols);
        // SAFETY: the fd is an open pty master and `ws` a valid winsize.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}
