//! Checks of host-sysmgr's parsers of what a VMM sends. Included by
//! `host-sysmgr/tests/fuzz_corpus.rs` to replay the corpus on stable Rust.

use host_sysmgr::vmm::qmp::{parse_line, wait_reply, LineReader, Outcome, Reply, MAX_LINE};
use host_sysmgr::vsock::{parse_ok, read_handshake, Handshake};

/// QMP: lines come out bounded and without newlines, every line is judged as
/// its JSON says, and waiting for a reply always ends.
pub fn check_qmp(data: &[u8]) {
    let mut reader = LineReader::new(data);
    let mut lines = 0usize;
    loop {
        match reader.next_line() {
            Ok(Some(line)) => {
                assert!(line.len() <= MAX_LINE && !line.contains(&b'\n'));
                check_qmp_line(&line);
                lines += 1;
            }
            Ok(None) => break,
            Err(e) => return assert_eq!(e.kind(), std::io::ErrorKind::InvalidData),
        }
    }
    assert!(lines <= data.len());
    let mut reader = LineReader::new(data);
    while let Ok(outcome) = wait_reply(&mut reader) {
        if outcome == Outcome::Closed {
            break;
        }
    }
}

fn check_qmp_line(line: &[u8]) {
    let object = match serde_json::from_slice::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(map)) => Some(map),
        _ => None,
    };
    let has = |key: &str| object.as_ref().is_some_and(|m| m.contains_key(key));
    let want = if has("return") {
        "return"
    } else if has("error") {
        "error"
    } else if has("event") {
        "event"
    } else if has("QMP") {
        "greeting"
    } else {
        "unknown"
    };
    let got = match parse_line(line) {
        Reply::Return => "return",
        Reply::Error(text) => {
            assert!(!text.is_empty() || object.is_some());
            "error"
        }
        Reply::Event => "event",
        Reply::Greeting => "greeting",
        Reply::Unknown => "unknown",
    };
    assert_eq!(got, want, "{}", String::from_utf8_lossy(line));
}

/// Hybrid-vsock handshake: `OK <port>` is accepted exactly when the first
/// line says so, only that line is consumed, and a refusal is bounded.
pub fn check_vsock_handshake(data: &[u8]) {
    let mut rest = data;
    let verdict = read_handshake(&mut rest);
    let line_end = data.iter().position(|&b| b == b'\n');
    match verdict {
        Handshake::Connected(port) => {
            let end = line_end.expect("a connected reply ends in a newline");
            assert!(end < 64);
            assert_eq!(parse_ok(&data[..end]), Some(port));
            let digits = data[3..end].strip_suffix(b"\r").unwrap_or(&data[3..end]);
            assert!(data.starts_with(b"OK ") && digits.iter().all(u8::is_ascii_digit));
            let parsed = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse().ok());
            assert_eq!(parsed, Some(port));
            assert_eq!(rest.len(), data.len() - end - 1);
        }
        Handshake::Refused(reply) => {
            assert!(reply.len() <= 64 * 4, "lossy text of at most 64 bytes");
            match line_end.filter(|&e| e < 64) {
                Some(end) => assert_eq!(parse_ok(&data[..end]), None),
                None => assert!(data.len() >= 64),
            }
        }
        Handshake::Retry(_) => assert!(line_end.is_none() && data.len() < 64),
    }
}
