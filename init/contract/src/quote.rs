//! Go's `strconv.Quote` on byte strings, and its inverse `strconv.Unquote`.
//!
//! Printability follows Go's `unicode.IsPrint` (categories L, M, N, P, S and
//! U+0020) with tables generated from Unicode 15.0.0, the version of Go 1.21
//! and later (`init/tools/gen_isprint.py`).

mod tables;

use std::fmt::Write as _;

/// Why a quoted string could not be unquoted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// The string does not start and end with `"`.
    #[error("missing surrounding double quotes")]
    MissingQuotes,
    /// A bad escape sequence starts at this byte offset.
    #[error("invalid escape at byte {0}")]
    InvalidEscape(usize),
    /// A raw `"` or newline at this byte offset.
    #[error("unescaped {0:?} at byte {1}")]
    Unescaped(char, usize),
}

/// Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols and
/// the ASCII space.
pub fn is_print(c: char) -> bool {
    let cp = u32::from(c);
    tables::PRINT_RANGES
        .binary_search_by(|&(lo, hi)| {
            if hi < cp {
                std::cmp::Ordering::Less
            } else if lo > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Exactly Go's `strconv.Quote` of a byte string (what `%q` prints).
pub fn go_quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        chunk.valid().chars().for_each(|c| push_rune(&mut out, c));
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

fn push_rune(out: &mut String, c: char) {
    if c == '"' || c == '\\' {
        out.push('\\');
        out.push(c);
        return;
    }
    if is_print(c) {
        out.push(c);
        return;
    }
    let escaped = match c {
        '\x07' => "\\a",
        '\x08' => "\\b",
        '\x0c' => "\\f",
        '\n' => "\\n",
        '\r' => "\\r",
        '\t' => "\\t",
        '\x0b' => "\\v",
        _ => return push_hex(out, u32::from(c)),
    };
    out.push_str(escaped);
}

fn push_hex(out: &mut String, cp: u32) {
    let _ = match cp {
        0..=0x1f | 0x7f => write!(out, "\\x{cp:02x}"),
        0x80..=0xffff => write!(out, "\\u{cp:04x}"),
        _ => write!(out, "\\U{cp:08x}"),
    };
}

/// Go's `strconv.Unquote` for a double-quoted string, returning bytes
/// (`\xNN` and octal escapes may produce invalid UTF-8).
pub fn go_unquote(s: &str) -> Result<Vec<u8>, QuoteError> {
    let inner = s
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .ok_or(QuoteError::MissingQuotes)?;
    let bytes = inner.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i = unescape(bytes, i, &mut out)?,
            b'"' => return Err(QuoteError::Unescaped('"', i + 1)),
            b'\n' => return Err(QuoteError::Unescaped('\n', i + 1)),
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Decodes the escape at `bytes[at]` (a backslash); returns the next offset.
fn unescape(bytes: &[u8], at: usize, out: &mut Vec<u8>) -> Result<usize, QuoteError> {
    let bad = QuoteError::InvalidEscape(at + 1);
    let Some(&kind) = bytes.get(at + 1) else {
        return Err(bad);
    };
    let simple = match kind {
        b'a' => Some(0x07),
        b'b' => Some(0x08),
        b'f' => Some(0x0c),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        b'v' => Some(0x0b),
        b'\\' | b'"' => Some(kind),
        _ => None,
    };
    if let Some(b) = simple {
        out.push(b);
        return Ok(at + 2);
    }
    let (digits, radix) = match kind {
        b'x' => (2, 16),
        b'u' => (4, 16),
        b'U' => (8, 16),
        b'0'..=b'7' => (3, 8),
        _ => return Err(bad),
    };
    let start = if radix == 8 { at + 1 } else { at + 2 };
    let value = parse_digits(bytes.get(start..start + digits), radix)
        .ok_or(QuoteError::InvalidEscape(at + 1))?;
    push_escaped_value(kind, value, out).ok_or(bad)?;
    Ok(start + digits)
}

fn parse_digits(digits: Option<&[u8]>, radix: u32) -> Option<u32> {
    let text = std::str::from_utf8(digits?).ok()?;
    if !text.bytes().all(|b| (b as char).is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(text, radix).ok()
}

fn push_escaped_value(kind: u8, value: u32, out: &mut Vec<u8>) -> Option<()> {
    if kind == b'x' || kind.is_ascii_digit() {
        out.push(u8::try_from(value).ok()?);
        return Some(());
    }
    let c = char::from_u32(value)?;
    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_and_escapes() {
        assert_eq!(go_quote(b"success"), r#""success""#);
        assert_eq!(go_quote(b"a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote(b"\x07\x08\x0c\n\r\t\x0b"), r#""\a\b\f\n\r\t\v""#);
        assert_eq!(go_quote(b"\x00\x01\x1f\x7f"), r#""\x00\x01\x1f\x7f""#);
        assert_eq!(go_quote(b""), r#""""#);
        assert_eq!(go_quote(b"'"), r#""'""#);
    }

    #[test]
    fn every_control_byte() {
        let named = [
            (7, "\\a"),
            (8, "\\b"),
            (9, "\\t"),
            (10, "\\n"),
            (11, "\\v"),
            (12, "\\f"),
            (13, "\\r"),
        ];
        for b in 0u8..0x20 {
            let want = named
                .iter()
                .find(|(n, _)| *n == b)
                .map(|(_, s)| s.to_string())
                .unwrap_or_else(|| format!("\\x{b:02x}"));
            assert_eq!(go_quote(&[b]), format!("\"{want}\""), "byte {b:#x}");
        }
    }

    #[test]
    fn invalid_utf8_each_byte() {
        assert_eq!(go_quote(b"\x80"), r#""\x80""#);
        assert_eq!(go_quote(b"\xe6\x97a"), r#""\xe6\x97a""#);
        assert_eq!(go_quote(b"\xc0\xaf"), r#""\xc0\xaf""#);
        assert_eq!(go_quote(b"\xed\xa0\x80"), r#""\xed\xa0\x80""#);
        assert_eq!(go_quote(b"\xf4\x90\x80\x80"), r#""\xf4\x90\x80\x80""#);
        assert_eq!(go_quote(b"\xff\xfe"), r#""\xff\xfe""#);
        assert_eq!(go_quote("\u{fffd}".as_bytes()), "\"\u{fffd}\"");
    }

    #[test]
    fn non_printable_runes() {
        let q = |s: &str| go_quote(s.as_bytes());
        assert_eq!(q("\u{80}\u{9f}"), r#""\u0080\u009f""#);
        assert_eq!(q("\u{a0}"), r#""\u00a0""#);
        assert_eq!(q("\u{ad}"), r#""\u00ad""#);
        assert_eq!(q("\u{200b}"), r#""\u200b""#);
        assert_eq!(q("\u{2028}\u{2029}"), r#""\u2028\u2029""#);
        assert_eq!(q("\u{feff}"), r#""\ufeff""#);
        assert_eq!(q("\u{e000}"), r#""\ue000""#);
        assert_eq!(q("\u{378}"), r#""\u0378""#);
        assert_eq!(q("\u{3000}"), r#""\u3000""#);
        assert_eq!(q("\u{10ffff}"), r#""\U0010ffff""#);
        assert_eq!(q("\u{e0001}"), r#""\U000e0001""#);
        assert_eq!(q("\u{f0000}"), r#""\U000f0000""#);
    }

    #[test]
    fn printable_unicode_kept() {
        for s in [
            "héllo",
            "日本",
            "😀",
            "\u{1f600}\u{1faf8}",
            "\u{a1}\u{ff}",
            "\u{fffd}",
            "\u{31350}",
        ] {
            assert_eq!(go_quote(s.as_bytes()), format!("\"{s}\""));
        }
    }

    #[test]
    fn unquote_inverts_quote() {
        let samples: [&[u8]; 6] = [
            b"",
            b"a\"b\\",
            b"\x00\x7f\xff",
            "é\u{a0}\u{10ffff}".as_bytes(),
            b"\n\r\t",
            b"\xe6\x97",
        ];
        for s in samples {
            assert_eq!(go_unquote(&go_quote(s)).as_deref(), Ok(s));
        }
    }

    #[test]
    fn unquote_escapes_and_errors() {
        assert_eq!(
            go_unquote(r#""\101\x41\u0041\U00000041""#),
            Ok(b"AAAA".to_vec())
        );
        assert_eq!(go_unquote(r#""\377""#), Ok(vec![0xff]));
        assert_eq!(go_unquote("\"\u{1}\""), Ok(vec![1]));
        assert_eq!(go_unquote("abc"), Err(QuoteError::MissingQuotes));
        assert_eq!(go_unquote("\""), Err(QuoteError::MissingQuotes));
        assert!(go_unquote(r#""\400""#).is_err());
        assert!(go_unquote(r#""\'""#).is_err());
        assert!(go_unquote(r#""\ud800""#).is_err());
        assert!(go_unquote(r#""\U00110000""#).is_err());
        assert!(go_unquote(r#""\x4""#).is_err());
        assert!(go_unquote(r#""\""#).is_err());
        assert!(go_unquote(r#""a"b""#).is_err());
        assert!(go_unquote("\"a\nb\"").is_err());
        assert!(go_unquote(r#""\x+1""#).is_err());
    }
}
