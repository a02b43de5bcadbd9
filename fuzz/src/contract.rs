//! Checks of the guest contract library's parsers (package `init`, library
//! `guest_contract`). `init/tests/fuzz_corpus.rs` includes this very file to
//! replay the checked-in corpus on stable Rust. A panic is a finding.

use guest_contract::config::{parse_config, MAX_CONFIG_BYTES};
use guest_contract::quote::{go_quote, go_unquote};
use guest_contract::sentinel::{scan_tail, Sentinel, SentinelStream, MAX_LINE_BYTES, TAIL_BYTES};

/// config.json: never panics; an accepted config survives
/// `to_hypeman_json` -> `parse_config` unchanged and without unknown keys.
pub fn check_config(data: &[u8]) {
    let parsed = match parse_config(data) {
        Ok(parsed) => parsed,
        Err(e) => return assert!(!e.to_string().is_empty()),
    };
    assert!(parsed.unknown_keys.windows(2).all(|w| w[0] <= w[1]));
    let config = &parsed.config;
    let _ = (
        config.argv(),
        config.app_env(),
        config.workdir(),
        config.init_mode(),
    );
    let json = config.to_hypeman_json();
    if json.len() > MAX_CONFIG_BYTES {
        return;
    }
    let again = parse_config(json.as_bytes()).expect("own output parses");
    assert_eq!(&again.config, config, "round trip of {json}");
    assert!(again.unknown_keys.is_empty());
}

/// Sentinel parsers: never panic; a parsed sentinel renders to a line that
/// parses back to it; streaming in pieces equals streaming in one go and the
/// line-by-line parse; the tail scan agrees with the lines of the tail.
pub fn check_sentinel(data: &[u8]) {
    let expected = by_lines(data);
    for sentinel in &expected {
        assert_eq!(
            Sentinel::parse_line(&sentinel.render()).as_ref(),
            Some(sentinel)
        );
    }
    assert_eq!(stream_in(data, &[]), expected);
    let third = data.len() / 3;
    assert_eq!(stream_in(data, &[third, 2 * third]), expected);
    let seed = data.first().map_or(1, |&b| usize::from(b) + 1);
    let cuts: Vec<usize> = (0..data.len()).step_by(seed).collect();
    assert_eq!(stream_in(data, &cuts), expected);
    check_tail(data);
}

/// Go quoting: `go_unquote(go_quote(b)) == b` and the quoted form has no
/// raw control characters; unquoting arbitrary text never panics.
pub fn check_quote(data: &[u8]) {
    let quoted = go_quote(data);
    assert!(!quoted.chars().any(char::is_control), "{quoted}");
    assert_eq!(go_unquote(&quoted).as_deref(), Ok(data));
    let _ = go_unquote(&String::from_utf8_lossy(data));
}

/// The sentinels of each line (last [`MAX_LINE_BYTES`] of it), in order.
pub fn by_lines(data: &[u8]) -> Vec<Sentinel> {
    data.split(|&b| b == b'\n')
        .filter_map(|line| {
            let window = &line[line.len().saturating_sub(MAX_LINE_BYTES)..];
            Sentinel::parse_line(&String::from_utf8_lossy(window))
        })
        .collect()
}

/// Streams `data` cut at the given (sorted) offsets, then finishes.
pub fn stream_in(data: &[u8], cuts: &[usize]) -> Vec<Sentinel> {
    let mut stream = SentinelStream::new();
    let mut found = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain([&data.len()]) {
        let cut = cut.clamp(start, data.len());
        found.extend(stream.push(&data[start..cut]));
        start = cut;
    }
    found.extend(stream.finish());
    found
}

fn check_tail(data: &[u8]) {
    let tail = &data[data.len().saturating_sub(TAIL_BYTES)..];
    let sentinels = by_lines(tail);
    let scan = scan_tail(data);
    let last_exit = sentinels.iter().rev().find_map(|s| match s {
        Sentinel::Exit { code, message } => Some((*code, message.clone())),
        _ => None,
    });
    assert_eq!(scan.exit, last_exit);
    let last_start = sentinels
        .iter()
        .rev()
        .find(|s| matches!(s, Sentinel::ProgramStart { .. }));
    assert_eq!(scan.program_start.as_ref(), last_start);
}
