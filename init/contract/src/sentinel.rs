//! `HYPEMAN-*` sentinel lines on the serial console: the writers (guest side)
//! and the parsers (host side): a tail scan as a hypeman host does it, and a
//! streaming parser for a growing log.

use crate::config::InitMode;
use crate::exit::describe_exit;
use crate::quote::{go_quote, go_unquote};
use crate::time::rfc3339_nano;

/// A hypeman host reads only this many bytes at the end of the log.
pub const TAIL_BYTES: usize = 8192;

/// [`SentinelStream`] keeps at most the last this many bytes of one line.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

const PROGRAM_START: &str = "HYPEMAN-PROGRAM-START ";
const AGENT_READY: &str = "HYPEMAN-AGENT-READY ";
const EXIT: &str = "HYPEMAN-EXIT ";
const HEADERS_START: &str = "HYPEMAN-HEADERS-START ";
const HEADERS_READY: &str = "HYPEMAN-HEADERS-READY ";
const HEADERS_FAILED: &str = "HYPEMAN-HEADERS-FAILED ";
const GPU_INIT_OK: &str = "HYPEMAN-GPU-INIT-OK ";
const GPU_INIT_FAILED: &str = "HYPEMAN-GPU-INIT-FAILED ";

/// One sentinel line. Timestamps are RFC3339Nano UTC strings, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Sentinel {
    /// The app started (exec) or systemd is about to become PID 1.
    ProgramStart {
        /// When.
        ts: String,
        /// `exec` or `systemd`.
        mode: String,
    },
    /// The guest agent listens.
    AgentReady {
        /// When.
        ts: String,
    },
    /// The app exited (exec mode), or init failed.
    Exit {
        /// Exit code (128 + N for signal N).
        code: i32,
        /// Description, see [`crate::exit`].
        message: String,
    },
    /// The kernel-headers worker started.
    HeadersStart {
        /// When.
        ts: String,
    },
    /// Kernel headers are installed.
    HeadersReady {
        /// When.
        ts: String,
    },
    /// Kernel headers failed.
    HeadersFailed {
        /// When.
        ts: String,
        /// Why.
        error: String,
    },
    /// The GPU driver loaded.
    GpuInitOk {
        /// When.
        ts: String,
    },
    /// The GPU driver failed.
    GpuInitFailed {
        /// When.
        ts: String,
        /// NVRM kernel messages.
        nvrm: String,
    },
}

impl Sentinel {
    /// The line, without a trailing newline; text fields via Go's `%q`.
    pub fn render(&self) -> String {
        match self {
            Sentinel::ProgramStart { ts, mode } => format!("{PROGRAM_START}ts={ts} mode={mode}"),
            Sentinel::AgentReady { ts } => format!("{AGENT_READY}ts={ts}"),
            Sentinel::Exit { code, message } => {
                format!("{EXIT}code={code} message={}", quote(message))
            }
            Sentinel::HeadersStart { ts } => format!("{HEADERS_START}ts={ts}"),
            Sentinel::HeadersReady { ts } => format!("{HEADERS_READY}ts={ts}"),
            Sentinel::HeadersFailed { ts, error } => {
                format!("{HEADERS_FAILED}ts={ts} error={}", quote(error))
            }
            Sentinel::GpuInitOk { ts } => format!("{GPU_INIT_OK}ts={ts}"),
            Sentinel::GpuInitFailed { ts, nvrm } => {
                format!("{GPU_INIT_FAILED}ts={ts} nvrm={}", quote(nvrm))
            }
        }
    }

    /// Finds a sentinel in one log line. Tolerates a trailing `\r` and any
    /// prefix (timestamps, log decorations) before the sentinel. A quoted
    /// field that does not unquote is kept as raw text; quoted text that is
    /// not UTF-8 is converted lossily.
    pub fn parse_line(line: &str) -> Option<Sentinel> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let mut from = 0;
        while let Some(pos) = line.get(from..)?.find("HYPEMAN-") {
            let at = from + pos;
            if let Some(sentinel) = parse_at(&line[at..]) {
                return Some(sentinel);
            }
            from = at + "HYPEMAN-".len();
        }
        None
    }

    /// Exit sentinel with the message for `code` (see [`describe_exit`]).
    pub fn exit_status(code: i32, oom: bool) -> Sentinel {
        Sentinel::Exit {
            code,
            message: describe_exit(code, oom),
        }
    }
}

fn quote(text: &str) -> String {
    go_quote(text.as_bytes())
}

fn parse_at(text: &str) -> Option<Sentinel> {
    if let Some(body) = text.strip_prefix(EXIT) {
        return parse_exit(body);
    }
    if let Some(body) = text.strip_prefix(PROGRAM_START) {
        let (ts, rest) = ts_field(body)?;
        let mode = token(rest.strip_prefix("mode=")?)?.to_string();
        return Some(Sentinel::ProgramStart { ts, mode });
    }
    if let Some(body) = text.strip_prefix(HEADERS_FAILED) {
        let (ts, error) = ts_and_quoted(body, "error=")?;
        return Some(Sentinel::HeadersFailed { ts, error });
    }
    if let Some(body) = text.strip_prefix(GPU_INIT_FAILED) {
        let (ts, nvrm) = ts_and_quoted(body, "nvrm=")?;
        return Some(Sentinel::GpuInitFailed { ts, nvrm });
    }
    parse_ts_only(text)
}

/// Builds a sentinel that carries only a timestamp.
type TsOnly = fn(String) -> Sentinel;

fn parse_ts_only(text: &str) -> Option<Sentinel> {
    let kinds: [(&str, TsOnly); 4] = [
        (AGENT_READY, |ts| Sentinel::AgentReady { ts }),
        (HEADERS_START, |ts| Sentinel::HeadersStart { ts }),
        (HEADERS_READY, |ts| Sentinel::HeadersReady { ts }),
        (GPU_INIT_OK, |ts| Sentinel::GpuInitOk { ts }),
    ];
    let (body, make) = kinds
        .iter()
        .find_map(|(prefix, make)| Some((text.strip_prefix(prefix)?, make)))?;
    Some(make(ts_field(body)?.0))
}

fn parse_exit(body: &str) -> Option<Sentinel> {
    let body = body.strip_prefix("code=")?;
    let digits = token(body)?;
    let code = digits.parse().ok()?;
    let rest = &body[digits.len()..];
    let message = rest
        .strip_prefix(" message=")
        .map(unquote_field)
        .unwrap_or_default();
    Some(Sentinel::Exit { code, message })
}

/// `ts=<token>` then the rest after one space (empty when none).
fn ts_field(body: &str) -> Option<(String, &str)> {
    let body = body.strip_prefix("ts=")?;
    let ts = token(body)?;
    let rest = body[ts.len()..].strip_prefix(' ').unwrap_or("");
    Some((ts.to_string(), rest))
}

fn ts_and_quoted(body: &str, key: &str) -> Option<(String, String)> {
    let (ts, rest) = ts_field(body)?;
    let value = unquote_field(rest.strip_prefix(key)?);
    Some((ts, value))
}

/// Text up to the first ASCII whitespace; `None` when empty.
fn token(text: &str) -> Option<&str> {
    let end = text
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(text.len());
    (end > 0).then(|| &text[..end])
}

/// Unquotes a Go-quoted value at the start of `text` (ignoring what follows
/// its closing quote); raw `text` when it is not a valid quoted string.
fn unquote_field(text: &str) -> String {
    let quoted = quoted_prefix(text).unwrap_or(text);
    match go_unquote(quoted) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => text.to_string(),
    }
}

/// The `"..."` at the start of `text`, up to its unescaped closing quote.
fn quoted_prefix(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return text.get(..=i),
            _ => i += 1,
        }
    }
    None
}

/// `HYPEMAN-PROGRAM-START` at the given time.
pub fn program_start(unix_secs: i64, nanos: u32, mode: InitMode) -> Sentinel {
    Sentinel::ProgramStart {
        ts: rfc3339_nano(unix_secs, nanos),
        mode: mode.as_str().to_string(),
    }
}

/// `HYPEMAN-AGENT-READY` at the given time.
pub fn agent_ready(unix_secs: i64, nanos: u32) -> Sentinel {
    Sentinel::AgentReady {
        ts: rfc3339_nano(unix_secs, nanos),
    }
}

/// `HYPEMAN-EXIT` with an explicit message.
pub fn exit(code: i32, message: &str) -> Sentinel {
    Sentinel::Exit {
        code,
        message: message.to_string(),
    }
}

/// `HYPEMAN-HEADERS-START` at the given time.
pub fn headers_start(unix_secs: i64, nanos: u32) -> Sentinel {
    Sentinel::HeadersStart {
        ts: rfc3339_nano(unix_secs, nanos),
    }
}

/// `HYPEMAN-HEADERS-READY` at the given time.
pub fn headers_ready(unix_secs: i64, nanos: u32) -> Sentinel {
    Sentinel::HeadersReady {
        ts: rfc3339_nano(unix_secs, nanos),
    }
}

/// `HYPEMAN-HEADERS-FAILED` at the given time.
pub fn headers_failed(unix_secs: i64, nanos: u32, error: &str) -> Sentinel {
    Sentinel::HeadersFailed {
        ts: rfc3339_nano(unix_secs, nanos),
        error: error.to_string(),
    }
}

/// `HYPEMAN-GPU-INIT-OK` at the given time.
pub fn gpu_init_ok(unix_secs: i64, nanos: u32) -> Sentinel {
    Sentinel::GpuInitOk {
        ts: rfc3339_nano(unix_secs, nanos),
    }
}

/// `HYPEMAN-GPU-INIT-FAILED` at the given time.
pub fn gpu_init_failed(unix_secs: i64, nanos: u32, nvrm: &str) -> Sentinel {
    Sentinel::GpuInitFailed {
        ts: rfc3339_nano(unix_secs, nanos),
        nvrm: nvrm.to_string(),
    }
}

/// What a hypeman host learns from the end of a log: for each kind, the last
/// sentinel within the last [`TAIL_BYTES`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TailScan {
    /// Code and message of the last `HYPEMAN-EXIT`.
    pub exit: Option<(i32, String)>,
    /// The last `HYPEMAN-PROGRAM-START`.
    pub program_start: Option<Sentinel>,
    /// The last `HYPEMAN-AGENT-READY`.
    pub agent_ready: Option<Sentinel>,
    /// The last `HYPEMAN-HEADERS-*`.
    pub headers: Option<Sentinel>,
    /// The last `HYPEMAN-GPU-INIT-*`.
    pub gpu: Option<Sentinel>,
}

impl TailScan {
    /// Keeps `sentinel` unless one of its kind is already set (bottom-up: the
    /// first seen is the last in the log).
    fn keep_first(&mut self, sentinel: Sentinel) {
        let slot = match &sentinel {
            Sentinel::Exit { code, message } => {
                self.exit.get_or_insert_with(|| (*code, message.clone()));
                return;
            }
            Sentinel::ProgramStart { .. } => &mut self.program_start,
            Sentinel::AgentReady { .. } => &mut self.agent_ready,
            Sentinel::HeadersStart { .. }
            | Sentinel::HeadersReady { .. }
            | Sentinel::HeadersFailed { .. } => &mut self.headers,
            Sentinel::GpuInitOk { .. } | Sentinel::GpuInitFailed { .. } => &mut self.gpu,
        };
        slot.get_or_insert(sentinel);
    }

    fn is_complete(&self) -> bool {
        self.exit.is_some()
            && self.program_start.is_some()
            && self.agent_ready.is_some()
            && self.headers.is_some()
            && self.gpu.is_some()
    }
}

/// Scans the last [`TAIL_BYTES`] of a log bottom-up, as a hypeman host does:
/// for each kind the last match wins. The first, possibly partial, line of
/// the window is scanned too.
pub fn scan_tail(log: &[u8]) -> TailScan {
    let tail = &log[log.len().saturating_sub(TAIL_BYTES)..];
    let mut scan = TailScan::default();
    for line in tail.rsplit(|&b| b == b'\n') {
        if let Some(sentinel) = Sentinel::parse_line(&String::from_utf8_lossy(line)) {
            scan.keep_first(sentinel);
        }
        if scan.is_complete() {
            break;
        }
    }
    scan
}

/// Streaming parser over a growing log: feed chunks split anywhere, get the
/// sentinels of each completed line. Memory is bounded: of a line longer
/// than [`MAX_LINE_BYTES`] only its last [`MAX_LINE_BYTES`] are parsed.
#[derive(Debug, Clone, Default)]
pub struct SentinelStream {
    line: Vec<u8>,
}

impl SentinelStream {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; returns the sentinels of the lines it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Sentinel> {
        let mut found = Vec::new();
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            self.append(&rest[..pos]);
            found.extend(self.take_line());
            rest = &rest[pos + 1..];
        }
        self.append(rest);
        found
    }

    /// Ends the input: parses a last line that had no newline.
    pub fn finish(&mut self) -> Vec<Sentinel> {
        self.take_line().into_iter().collect()
    }

    fn append(&mut self, bytes: &[u8]) {
        if bytes.len() >= MAX_LINE_BYTES {
            self.line.clear();
            self.line
                .extend_from_slice(&bytes[bytes.len() - MAX_LINE_BYTES..]);
            return;
        }
        self.line.extend_from_slice(bytes);
        if self.line.len() > 2 * MAX_LINE_BYTES {
            self.line.drain(..self.line.len() - MAX_LINE_BYTES);
        }
    }

    fn take_line(&mut self) -> Option<Sentinel> {
        let start = self.line.len().saturating_sub(MAX_LINE_BYTES);
        let sentinel = Sentinel::parse_line(&String::from_utf8_lossy(&self.line[start..]));
        self.line.clear();
        sentinel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit_line(code: i32, msg: &str) -> String {
        exit(code, msg).render()
    }

    #[test]
    fn render_exact() {
        assert_eq!(
            exit_line(0, "success"),
            r#"HYPEMAN-EXIT code=0 message="success""#
        );
        assert_eq!(
            exit_line(1, "a\"b\n"),
            r#"HYPEMAN-EXIT code=1 message="a\"b\n""#
        );
        let ps = program_start(1_770_996_387, 123_456_789, InitMode::Exec);
        assert_eq!(
            ps.render(),
            "HYPEMAN-PROGRAM-START ts=2026-02-13T15:26:27.123456789Z mode=exec"
        );
        let ps = program_start(1_770_996_387, 0, InitMode::Systemd);
        assert_eq!(
            ps.render(),
            "HYPEMAN-PROGRAM-START ts=2026-02-13T15:26:27Z mode=systemd"
        );
        assert_eq!(
            agent_ready(0, 100_000_000).render(),
            "HYPEMAN-AGENT-READY ts=1970-01-01T00:00:00.1Z"
        );
        assert_eq!(
            headers_failed(0, 0, "tar: bad").render(),
            r#"HYPEMAN-HEADERS-FAILED ts=1970-01-01T00:00:00Z error="tar: bad""#
        );
        assert_eq!(
            gpu_init_failed(0, 0, "NVRM: x\ty").render(),
            r#"HYPEMAN-GPU-INIT-FAILED ts=1970-01-01T00:00:00Z nvrm="NVRM: x\ty""#
        );
        assert_eq!(
            headers_start(0, 0).render(),
            "HYPEMAN-HEADERS-START ts=1970-01-01T00:00:00Z"
        );
        assert_eq!(
            headers_ready(0, 0).render(),
            "HYPEMAN-HEADERS-READY ts=1970-01-01T00:00:00Z"
        );
        assert_eq!(
            gpu_init_ok(0, 0).render(),
            "HYPEMAN-GPU-INIT-OK ts=1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn round_trip_every_kind() {
        let all = [
            program_start(5, 7, InitMode::Systemd),
            agent_ready(5, 0),
            exit(137, "killed by signal 9 (killed) - OOM"),
            exit(-3, "weird \u{a0} \"text\" \\ é"),
            headers_start(1, 1),
            headers_ready(1, 1),
            headers_failed(1, 1, "no space\nleft"),
            gpu_init_ok(2, 2),
            gpu_init_failed(2, 2, "NVRM: \x01"),
        ];
        for s in all {
            assert_eq!(Sentinel::parse_line(&s.render()), Some(s.clone()));
            let decorated = format!("[   1.234] ttyS0: {}\r", s.render());
            assert_eq!(Sentinel::parse_line(&decorated), Some(s));
        }
    }

    #[test]
    fn parse_tolerance() {
        let p = Sentinel::parse_line;
        assert_eq!(p("HYPEMAN-EXIT code=2"), Some(exit(2, "")));
        assert_eq!(
            p(r#"HYPEMAN-EXIT code=2 message="trunc"#),
            Some(exit(2, "\"trunc"))
        );
        assert_eq!(
            p(r#"HYPEMAN-EXIT code=3 message="a" extra"#),
            Some(exit(3, "a"))
        );
        assert_eq!(p("HYPEMAN-EXIT code=x message=\"a\""), None);
        assert_eq!(p("HYPEMAN-EXITcode=1"), None);
        assert_eq!(p("HYPEMAN-AGENT-READY ts="), None);
        assert_eq!(
            p("HYPEMAN-EXIT code=x HYPEMAN-EXIT code=4"),
            Some(exit(4, ""))
        );
        assert_eq!(p("no sentinel here"), None);
        assert_eq!(
            p("HYPEMAN-AGENT-READY ts=X\r\r"),
            Some(Sentinel::AgentReady { ts: "X".into() })
        );
        assert_eq!(p("HYPEMAN-EXIT code=1\t"), Some(exit(1, "")));
        assert_eq!(
            p(r#"HYPEMAN-EXIT code=0 message="\xff""#),
            Some(exit(0, "\u{fffd}"))
        );
    }

    #[test]
    fn tail_last_match_wins() {
        let log = format!(
            "{}\n{}\nnoise\r\n{}\r\n{}",
            exit_line(1, "first"),
            agent_ready(1, 0).render(),
            exit_line(2, "second"),
            "partial line without newline"
        );
        let scan = scan_tail(log.as_bytes());
        assert_eq!(scan.exit, Some((2, "second".into())));
        assert_eq!(scan.agent_ready, Some(agent_ready(1, 0)));
        assert_eq!(scan.program_start, None);
    }

    #[test]
    fn tail_sees_only_last_8k() {
        let line = format!("{}\n", exit_line(9, "old"));
        let with_filler = |n: usize| [line.as_bytes(), &vec![b'x'; n]].concat();
        let fits = with_filler(TAIL_BYTES - line.len());
        assert_eq!(scan_tail(&fits).exit, Some((9, "old".into())));
        let cut = with_filler(TAIL_BYTES - line.len() + 1);
        assert_eq!(scan_tail(&cut).exit, None);
        assert_eq!(scan_tail(&with_filler(TAIL_BYTES)).exit, None);
    }

    #[test]
    fn stream_caps_long_lines() {
        let mut stream = SentinelStream::new();
        let junk = vec![b'j'; 3 * MAX_LINE_BYTES];
        assert!(stream.push(&junk).is_empty());
        assert!(stream.line.len() <= 2 * MAX_LINE_BYTES);
        let found = stream.push(format!("{}\n", exit_line(5, "x")).as_bytes());
        assert_eq!(found, vec![exit(5, "x")]);
        assert!(stream.finish().is_empty());
    }
}
