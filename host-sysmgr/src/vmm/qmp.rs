//! QEMU's QMP control protocol, as far as the runner needs it: the greeting,
//! `qmp_capabilities`, one command and its reply.
//!
//! Everything QEMU sends is read through [`LineReader`], which bounds each
//! line ([`MAX_LINE`]) and the number of lines before a reply
//! ([`MAX_LINES`]), so a misbehaving peer can neither exhaust memory nor keep
//! the reader busy forever; each line is classified by [`parse_line`].

use std::io::{ErrorKind, Read};

/// Longest QMP line accepted, newline excluded.
pub const MAX_LINE: usize = 64 * 1024;
/// Most lines (events) read while waiting for one reply.
pub const MAX_LINES: usize = 1024;

/// What one QMP line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `{"QMP": {...}}`: the greeting.
    Greeting,
    /// `{"return": ...}`: success.
    Return,
    /// `{"error": {"class": ..., "desc": ...}}`: failure, with its text.
    Error(String),
    /// `{"event": ...}`: an asynchronous event (skipped while waiting).
    Event,
    /// Valid JSON of no known shape, or not JSON at all.
    Unknown,
}

/// Classifies one line sent by QEMU (without its newline).
pub fn parse_line(line: &[u8]) -> Reply {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(line) else {
        return Reply::Unknown;
    };
    if map.contains_key("return") {
        Reply::Return
    } else if let Some(err) = map.get("error") {
        Reply::Error(error_text(err))
    } else if map.contains_key("event") {
        Reply::Event
    } else if map.contains_key("QMP") {
        Reply::Greeting
    } else {
        Reply::Unknown
    }
}

fn error_text(err: &serde_json::Value) -> String {
    let field = |k: &str| err.get(k).and_then(serde_json::Value::as_str);
    match (field("class"), field("desc")) {
        (Some(class), Some(desc)) => format!("{class}: {desc}"),
        (None, Some(desc)) => desc.to_string(),
        _ => err.to_string(),
    }
}

/// Reads `\n`-terminated lines of at most [`MAX_LINE`] bytes.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
}

impl<R: Read> LineReader<R> {
    /// A reader over `inner`.
    pub fn new(inner: R) -> Self {
        LineReader {
            inner,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// The next line without its newline; `Ok(None)` at end of stream (a
    /// final unterminated line is returned first). A line longer than
    /// [`MAX_LINE`] is an `InvalidData` error.
    pub fn next_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            let pending = &self.buf[self.start..];
            let newline = pending.iter().position(|&b| b == b'\n');
            if newline.unwrap_or(pending.len()) > MAX_LINE {
                return Err(std::io::Error::new(
                    ErrorKind::InvalidData,
                    format!("QMP line longer than {MAX_LINE} bytes"),
                ));
            }
            if let Some(i) = newline {
                let line = pending[..i].to_vec();
                self.start += i + 1;
                return Ok(Some(line));
            }
            if self.fill()? == 0 {
                return Ok(self.take_rest());
            }
        }
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        self.buf.drain(..self.start);
        self.start = 0;
        let mut chunk = [0u8; 4096];
        loop {
            match self.inner.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn take_rest(&mut self) -> Option<Vec<u8>> {
        let rest = self.buf.split_off(self.start);
        self.buf.clear();
        self.start = 0;
        (!rest.is_empty()).then_some(rest)
    }
}

/// How waiting for a reply ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A `return`.
    Return,
    /// An `error`, with its text.
    Error(String),
    /// The stream ended first.
    Closed,
}

/// Reads lines until a `return` or an `error`, skipping events and the
/// greeting; more than [`MAX_LINES`] lines is an `InvalidData` error.
pub fn wait_reply<R: Read>(reader: &mut LineReader<R>) -> std::io::Result<Outcome> {
    for _ in 0..MAX_LINES {
        let Some(line) = reader.next_line()? else {
            return Ok(Outcome::Closed);
        };
        match parse_line(&line) {
            Reply::Return => return Ok(Outcome::Return),
            Reply::Error(text) => return Ok(Outcome::Error(text)),
            Reply::Greeting | Reply::Event | Reply::Unknown => {}
        }
    }
    Err(std::io::Error::new(
        ErrorKind::InvalidData,
        format!("no QMP reply within {MAX_LINES} lines"),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn classifies_real_qemu_lines() {
        let greeting = br#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}}"#;
        assert_eq!(parse_line(greeting), Reply::Greeting);
        assert_eq!(parse_line(br#"{"return": {}}"#), Reply::Return);
        let event = br#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "POWERDOWN"}"#;
        assert_eq!(parse_line(event), Reply::Event);
        let err = br#"{"error": {"class": "CommandNotFound", "desc": "The command foo has not been found"}}"#;
        assert_eq!(
            parse_line(err),
            Reply::Error("CommandNotFound: The command foo has not been found".into())
        );
        // A desc mentioning "return" is still an error; text that merely
        // contains the word is not a reply.
        let tricky = br#"{"error": {"desc": "\"return\""}}"#;
        assert_eq!(parse_line(tricky), Reply::Error("\"return\"".into()));
        assert_eq!(parse_line(br#"garbage "return""#), Reply::Unknown);
        assert_eq!(parse_line(b"[]"), Reply::Unknown);
    }

    #[test]
    fn waits_past_events_for_the_reply() {
        let input = b"{\"QMP\": {}}\n{\"event\": \"X\"}\n\n{\"return\": {}}\n{\"return\": 1}\n";
        let mut r = LineReader::new(&input[..]);
        assert_eq!(wait_reply(&mut r).unwrap(), Outcome::Return);
        assert_eq!(wait_reply(&mut r).unwrap(), Outcome::Return);
        assert_eq!(wait_reply(&mut r).unwrap(), Outcome::Closed);
    }

    #[test]
    fn an_endless_line_is_refused_without_reading_it_all() {
        // /dev/zero sends no newline, ever.
        let zero = std::fs::File::open("/dev/zero").unwrap();
        let mut r = LineReader::new(zero);
        let err = r.next_line().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(r.buf.len() <= MAX_LINE + 4096);
        let long = [vec![b'x'; MAX_LINE + 1], b"\n".to_vec()].concat();
        let err = LineReader::new(&long[..]).next_line().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
    }

    #[test]
    fn endless_events_are_refused() {
        let events = b"{\"event\": \"X\"}\n".repeat(MAX_LINES + 1);
        let mut r = LineReader::new(&events[..]);
        assert_eq!(
            wait_reply(&mut r).unwrap_err().kind(),
            ErrorKind::InvalidData
        );
    }

    #[test]
    fn a_last_line_without_newline_is_read() {
        let mut r = LineReader::new(&b"a\nbc"[..]);
        assert_eq!(r.next_line().unwrap(), Some(b"a".to_vec()));
        assert_eq!(r.next_line().unwrap(), Some(b"bc".to_vec()));
        assert_eq!(r.next_line().unwrap(), None);
    }
}
