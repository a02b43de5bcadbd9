//! Host-side dialer for hybrid vsock: the guest's vsock exposed as a Unix socket
//! (Cloud Hypervisor, Firecracker, and QEMU through vhost-device-vsock).
//!
//! The handshake: connect to the Unix socket, write `CONNECT <port>\n`, read one
//! line `OK <host_port>\n`; from then on the stream carries the guest
//! service's protocol. Until the guest listens on the port, the backend closes
//! the connection (or the socket does not exist yet), so [`dial`] retries.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest handshake reply accepted, newline included.
const MAX_REPLY: usize = 64;
/// Pause between attempts.
const RETRY_EVERY: Duration = Duration::from_millis(50);
/// Longest wait for one attempt's reply. A backend may hold a connection
/// without ever answering (vhost-device-vsock does while the guest's vsock
/// driver is not up yet): such an attempt is dropped and a new one made.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors dialing a guest vsock port.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The backend answered the handshake with something other than `OK `.
    #[error("vsock {}: port {port}: unexpected handshake reply {reply:?}", .uds.display())]
    BadReply {
        /// The hybrid-vsock Unix socket.
        uds: PathBuf,
        /// The guest port.
        port: u32,
        /// What came back (lossy UTF-8, without the newline).
        reply: String,
    },
    /// No successful handshake before the deadline.
    #[error("vsock {}: port {port}: no connection within {timeout:?}; last failure: {last}", .uds.display())]
    Timeout {
        /// The hybrid-vsock Unix socket.
        uds: PathBuf,
        /// The guest port.
        port: u32,
        /// The time allowed.
        timeout: Duration,
        /// Why the last attempt failed.
        last: String,
    },
}

/// Why one attempt failed.
enum Failure {
    /// Worth retrying (socket missing, refused, closed: the guest does not listen yet).
    Retry(String),
    /// The reply was wrong: retrying will not help.
    Bad(String),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Retry(e.to_string())
    }
}

/// Connect to guest `port` through the hybrid-vsock socket `uds`, retrying every
/// ~50 ms until `timeout`. The returned stream is positioned right after the
/// `OK` line, in blocking mode with no timeouts.
pub fn dial(uds: &Path, port: u32, timeout: Duration) -> Result<UnixStream, VsockError> {
    let deadline = crate::deadline::after(timeout);
    loop {
        let last = match attempt(uds, port, deadline) {
            Ok(stream) => return Ok(stream),
            Err(Failure::Bad(reply)) => {
                return Err(VsockError::BadReply {
                    uds: uds.to_path_buf(),
                    port,
                    reply,
                })
            }
            Err(Failure::Retry(last)) => last,
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(VsockError::Timeout {
                uds: uds.to_path_buf(),
                port,
                timeout,
                last,
            });
        }
        std::thread::sleep(RETRY_EVERY.min(deadline - now));
    }
}

/// One connect + handshake, bounded by `deadline`.
fn attempt(uds: &Path, port: u32, deadline: Instant) -> Result<UnixStream, Failure> {
    let mut stream = UnixStream::connect(uds)?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_millis(1), ATTEMPT_TIMEOUT);
    stream.set_read_timeout(Some(left))?;
    stream.set_write_timeout(Some(left))?;
    stream.write_all(format!("CONNECT {port}\n").as_bytes())?;
    handshake_reply(&mut stream)?;
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    Ok(stream)
}

/// Reads the backend's reply to `CONNECT` from `stream` (a byte at a time, so
/// nothing after the line is consumed) and returns the host-side port of
/// `OK <port>`. At most [`MAX_REPLY`] bytes are read.
fn handshake_reply(stream: &mut impl Read) -> Result<u32, Failure> {
    let line = read_line(stream)?;
    parse_ok(&line).ok_or_else(|| Failure::Bad(String::from_utf8_lossy(&line).into_owned()))
}

/// The port of an `OK <port>` line (newline removed; a trailing `\r` is
/// tolerated), or `None` for any other reply.
pub fn parse_ok(line: &[u8]) -> Option<u32> {
    let rest = line.strip_prefix(b"OK ")?;
    let rest = rest.strip_suffix(b"\r").unwrap_or(rest);
    if rest.is_empty() || rest.len() > 10 || !rest.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(rest).ok()?.parse().ok()
}

/// Read one `\n`-terminated line a byte at a time, so nothing after it is consumed.
fn read_line(stream: &mut impl Read) -> Result<Vec<u8>, Failure> {
    let mut line = Vec::with_capacity(MAX_REPLY);
    let mut byte = [0u8; 1];
    while line.len() < MAX_REPLY {
        match stream.read(&mut byte) {
            Ok(0) if line.is_empty() => {
                return Err(Failure::Retry(
                    "closed before replying (guest not listening yet?)".into(),
                ))
            }
            Ok(0) => {
                let got = String::from_utf8_lossy(&line);
                return Err(Failure::Retry(format!("closed mid-reply after {got:?}")));
            }
            Ok(_) if byte[0] == b'\n' => return Ok(line),
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(Failure::Bad(String::from_utf8_lossy(&line).into_owned()))
}

/// What a backend's reply to `CONNECT` amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// `OK <port>`: connected; the guest's bytes follow.
    Connected(u32),
    /// Closed or cut short: the guest does not listen yet; worth a retry.
    Retry(String),
    /// Any other reply (or one longer than 64 bytes): retrying will not help.
    Refused(String),
}

/// Reads and judges a handshake reply from any byte source, consuming only
/// the reply line (what [`dial`] does on its socket; used by tests and fuzzing).
pub fn read_handshake(source: &mut impl Read) -> Handshake {
    match handshake_reply(source) {
        Ok(port) => Handshake::Connected(port),
        Err(Failure::Retry(why)) => Handshake::Retry(why),
        Err(Failure::Bad(reply)) => Handshake::Refused(reply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixListener;
    use std::thread;

    /// Read the `CONNECT <port>` line the dialer sends.
    fn read_connect(s: &UnixStream) -> String {
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        line
    }

    /// Closes `refusals` connections at once, then answers one with `reply` and
    /// echoes what follows. Returns the CONNECT line it saw.
    fn peer(
        listener: UnixListener,
        refusals: usize,
        reply: &'static [u8],
    ) -> thread::JoinHandle<String> {
        thread::spawn(move || {
            for _ in 0..refusals {
                drop(listener.accept().unwrap());
            }
            let (mut s, _) = listener.accept().unwrap();
            let connect = read_connect(&s);
            s.write_all(reply).unwrap();
            let mut buf = [0u8; 64];
            if let Ok(n) = s.read(&mut buf) {
                let _ = s.write_all(&buf[..n]);
            }
            connect
        })
    }

    #[test]
    fn retries_then_no_byte_lost_after_ok() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let server = peer(UnixListener::bind(&path).unwrap(), 3, b"OK 1234\nhello");
        let mut s = dial(&path, 2222, Duration::from_secs(10)).unwrap();
        let mut hello = [0u8; 5];
        s.read_exact(&mut hello).unwrap();
        assert_eq!(&hello, b"hello");
        s.write_all(b"ping").unwrap();
        let mut echo = [0u8; 4];
        s.read_exact(&mut echo).unwrap();
        assert_eq!(&echo, b"ping");
        assert_eq!(server.join().unwrap(), "CONNECT 2222\n");
    }

    #[test]
    fn an_attempt_the_backend_never_answers_is_dropped_and_retried() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            // Held open, never answered: a guest whose vsock is not up yet.
            let (held, _) = listener.accept().unwrap();
            let (mut s, _) = listener.accept().unwrap();
            let connect = read_connect(&s);
            s.write_all(b"OK 9\n").unwrap();
            drop(held);
            connect
        });
        let start = Instant::now();
        let _s = dial(&path, 2222, Duration::from_secs(20)).unwrap();
        let took = start.elapsed();
        assert!(
            took >= ATTEMPT_TIMEOUT && took < Duration::from_secs(10),
            "{took:?}"
        );
        assert_eq!(server.join().unwrap(), "CONNECT 2222\n");
    }

    #[test]
    fn waits_for_the_socket_to_appear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late.sock");
        let p = path.clone();
        let server = thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            peer(UnixListener::bind(&p).unwrap(), 0, b"OK 1\n")
                .join()
                .unwrap()
        });
        let mut s = dial(&path, 5, Duration::from_secs(10)).unwrap();
        s.write_all(b"x").unwrap();
        assert_eq!(server.join().unwrap(), "CONNECT 5\n");
    }

    #[test]
    fn handshake_replies_are_judged_strictly() {
        let judge = |bytes: &[u8]| read_handshake(&mut &bytes[..]);
        assert_eq!(judge(b"OK 1073741824\nrest"), Handshake::Connected(1 << 30));
        assert_eq!(judge(b"OK 7\r\n"), Handshake::Connected(7));
        for bad in [
            &b"OK\n"[..],
            b"OK \n",
            b"OK x\n",
            b"OK 99999999999\n",
            b"ok 1\n",
        ] {
            assert!(matches!(judge(bad), Handshake::Refused(_)), "{bad:?}");
        }
        assert!(matches!(judge(b""), Handshake::Retry(_)));
        assert!(matches!(judge(b"OK 1"), Handshake::Retry(_)));
        assert!(matches!(judge(&[b'7'; 1000]), Handshake::Refused(r) if r.len() == MAX_REPLY));
        // Only the reply line is consumed.
        let mut rest: &[u8] = b"OK 5\nguest bytes";
        assert_eq!(read_handshake(&mut rest), Handshake::Connected(5));
        assert_eq!(rest, b"guest bytes");
    }

    #[test]
    fn garbage_reply_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let _server = peer(UnixListener::bind(&path).unwrap(), 0, b"NOPE\n");
        let e = dial(&path, 2222, Duration::from_secs(10)).unwrap_err();
        assert!(matches!(e, VsockError::BadReply { port: 2222, .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("v.sock") && msg.contains("\"NOPE\""), "{msg}");
    }

    #[test]
    fn overlong_reply_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let _server = peer(UnixListener::bind(&path).unwrap(), 0, &[b'O'; 100]);
        let e = dial(&path, 1, Duration::from_secs(10)).unwrap_err();
        assert!(matches!(e, VsockError::BadReply { .. }), "{e}");
    }

    #[test]
    fn deadline_names_socket_port_and_last_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let listener = UnixListener::bind(&path).unwrap();
        // Always closes: a guest that never listens.
        thread::spawn(move || {
            for s in listener.incoming() {
                drop(s);
            }
        });
        let start = Instant::now();
        let e = dial(&path, 2222, Duration::from_millis(300)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5));
        let msg = e.to_string();
        assert!(matches!(e, VsockError::Timeout { port: 2222, .. }), "{msg}");
        assert!(msg.contains("port 2222") && msg.contains("v.sock"), "{msg}");
        assert!(msg.contains("last failure:"), "{msg}");

        let missing = dir.path().join("missing.sock");
        let msg = dial(&missing, 9, Duration::from_millis(100))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("missing.sock") && msg.contains("port 9"),
            "{msg}"
        );
    }
}
