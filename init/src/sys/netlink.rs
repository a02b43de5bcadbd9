//! The netlink socket behind init's network requests: a NETLINK_ROUTE
//! socket (netlink-sys) carrying the messages `guest_contract::rtnl`
//! encodes; every request waits for its ACK. Also the event-driven wait for
//! a link to appear (RTMGRP_LINK notifications).

use guest_contract::rtnl::{self, Reply};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

/// How long one request waits for its ACK.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// The kernel's link notification group.
const RTMGRP_LINK: u32 = 1;

/// A connected NETLINK_ROUTE socket.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    /// Opens a socket to the kernel.
    pub fn open() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl { socket, seq: 0 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends one request and waits for its ACK.
    fn request(&mut self, msg: &[u8], seq: u32) -> io::Result<()> {
        self.socket.send(msg, 0)?;
        let deadline = Instant::now() + ACK_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !readable(self.socket.as_fd(), left)? {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no netlink reply"));
            }
            let (buf, _) = self.socket.recv_from_full()?;
            match rtnl::reply(&buf, seq) {
                Reply::Ack => return Ok(()),
                Reply::Refused(errno) => return Err(io::Error::from_raw_os_error(errno)),
                Reply::Other => {}
                Reply::Malformed => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "malformed netlink reply",
                    ))
                }
            }
        }
    }

    /// Sets link `index` up, with `mtu` when given.
    pub fn link_up(&mut self, index: u32, mtu: Option<u32>) -> io::Result<()> {
        let seq = self.next_seq();
        self.request(&rtnl::link_up(seq, index, mtu), seq)
    }

    /// Adds (or replaces) `addr/prefix` on link `index`.
    pub fn add_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        let seq = self.next_seq();
        self.request(&rtnl::add_address(seq, index, addr, prefix), seq)
    }

    /// Replaces the main table's default route of `gw`'s family.
    pub fn default_route(&mut self, index: u32, gw: IpAddr) -> io::Result<()> {
        let seq = self.next_seq();
        self.request(&rtnl::default_route(seq, index, gw), seq)
    }
}

/// Whether `fd` becomes readable within `timeout`.
fn readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, PollTimeout::from(ms)) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The index of interface `name`, if it exists.
pub fn link_index(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// Waits up to `timeout` for interface `name` to exist; its index. Woken by
/// the kernel's link notifications, not by polling.
pub fn wait_link(name: &str, timeout: Duration) -> io::Result<u32> {
    wait_for(timeout, || link_index(name)).map_err(|_| {
        timed_out(format!(
            "no interface {name} after {} ms",
            timeout.as_millis()
        ))
    })
}

/// Waits up to `timeout` for the interface whose MAC address is `mac`; its
/// index and name.
pub fn wait_mac(mac: [u8; 6], timeout: Duration) -> io::Result<(u32, String)> {
    let text = guest_contract::network::format_mac(mac);
    wait_for(timeout, || {
        let name = link_with_mac(&text)?;
        Some((link_index(&name)?, name))
    })
    .map_err(|_| {
        timed_out(format!(
            "no interface with MAC {text} after {} ms",
            timeout.as_millis()
        ))
    })
}

fn timed_out(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, msg)
}

/// The interface whose `/sys/class/net/<name>/address` is `mac`.
fn link_with_mac(mac: &str) -> Option<String> {
    std::fs::read_dir("/sys/class/net")
        .ok()?
        .flatten()
        .find_map(|e| {
            let address = std::fs::read_to_string(e.path().join("address")).ok()?;
            (address.trim() == mac).then(|| e.file_name().to_string_lossy().into_owned())
        })
}

/// Calls `look` until it finds something or `timeout` passes, woken by the
/// kernel's link notifications (subscribed before the first look, so a link
/// that appears in between still wakes us).
fn wait_for<T>(timeout: Duration, mut look: impl FnMut() -> Option<T>) -> io::Result<T> {
    let mut events = Socket::new(NETLINK_ROUTE)?;
    events.bind(&SocketAddr::new(0, RTMGRP_LINK))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = look() {
            return Ok(found);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out("timed out".into()));
        }
        if readable(events.as_fd(), left)? {
            // Drain one notification; the loop looks again.
            let _ = events.recv_from_full();
        }
    }
}
