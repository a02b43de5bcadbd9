//! init's log line: `<RFC3339 UTC> [INFO|ERROR] [hypeman-init:<phase>] <message>`.

use crate::time::rfc3339;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// Rendered `INFO`.
    Info,
    /// Rendered `ERROR`.
    Error,
}

impl Level {
    /// `INFO` or `ERROR`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Error => "ERROR",
        }
    }
}

/// One log line, newline-terminated. Line breaks inside `phase` or `msg` are
/// written as `\n` / `\r` so the line stays one line.
pub fn format_line(unix_secs: i64, level: Level, phase: &str, msg: &str) -> String {
    format!(
        "{} [{}] [hypeman-init:{}] {}\n",
        rfc3339(unix_secs),
        level.as_str(),
        one_line(phase),
        one_line(msg)
    )
}

fn one_line(text: &str) -> String {
    if !text.contains(['\n', '\r']) {
        return text.to_string();
    }
    text.replace('\n', "\\n").replace('\r', "\\r")
}

/// An error and its causes, `: `-separated, each once (libraries keep the
/// cause in `source()`, never in their message).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        assert_eq!(
            format_line(1_770_996_387, Level::Info, "overlay", "mounted /overlay"),
            "2026-02-13T15:26:27Z [INFO] [hypeman-init:overlay] mounted /overlay\n"
        );
        assert_eq!(
            format_line(0, Level::Error, "net", "a\nb\r\nc"),
            "1970-01-01T00:00:00Z [ERROR] [hypeman-init:net] a\\nb\\r\\nc\n"
        );
    }
}
