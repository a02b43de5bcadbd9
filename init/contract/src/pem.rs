//! PEM certificates from the config (`egress_proxy.ca_cert_pem`), checked
//! before init writes them into an image's trust store: one or more
//! `CERTIFICATE` blocks whose base64 decodes to a DER SEQUENCE of exactly
//! its length. Text around the blocks (openssl's "Bag Attributes",
//! comments) is dropped; a private key anywhere is refused, so a mistaken
//! config never puts a key into a world-readable trust store. The output is
//! the certificates re-encoded with 64-column lines.

/// Largest PEM text accepted.
pub const MAX_PEM_BYTES: usize = 256 * 1024;
/// Most certificates in one PEM text.
pub const MAX_CERTIFICATES: usize = 16;

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// Why a PEM text is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    /// Longer than [`MAX_PEM_BYTES`].
    #[error("the PEM text is {0} bytes, more than {MAX_PEM_BYTES}")]
    TooLarge(usize),
    /// No `BEGIN CERTIFICATE` block.
    #[error("no certificate in the PEM text")]
    NoCertificate,
    /// More than [`MAX_CERTIFICATES`] blocks.
    #[error("more than {MAX_CERTIFICATES} certificates")]
    TooMany,
    /// A private key block.
    #[error("the PEM text holds a private key; refusing to install it")]
    PrivateKey,
    /// A block without its END line.
    #[error("certificate {0} has no END line")]
    Unterminated(usize),
    /// A body that is not base64.
    #[error("certificate {0} is not valid base64")]
    Base64(usize),
    /// A body that is not one DER SEQUENCE of its exact length.
    #[error("certificate {0} is not a DER certificate")]
    Der(usize),
}

/// The certificates of `text`, checked and re-encoded.
pub fn certificates(text: &str) -> Result<String, PemError> {
    if text.len() > MAX_PEM_BYTES {
        return Err(PemError::TooLarge(text.len()));
    }
    if text.contains("PRIVATE KEY-----") {
        return Err(PemError::PrivateKey);
    }
    let mut out = String::new();
    let mut lines = text.lines().map(str::trim);
    let mut count = 0;
    while let Some(line) = lines.next() {
        if line != BEGIN {
            continue;
        }
        count += 1;
        if count > MAX_CERTIFICATES {
            return Err(PemError::TooMany);
        }
        let mut body = String::new();
        let mut ended = false;
        for l in lines.by_ref() {
            if l == END {
                ended = true;
                break;
            }
            body.push_str(l);
        }
        if !ended {
            return Err(PemError::Unterminated(count));
        }
        let der = decode_base64(&body).ok_or(PemError::Base64(count))?;
        if !is_der_sequence(&der) {
            return Err(PemError::Der(count));
        }
        out.push_str(&encode_block(&der));
    }
    if count == 0 {
        return Err(PemError::NoCertificate);
    }
    Ok(out)
}

fn is_der_sequence(der: &[u8]) -> bool {
    let (Some(&0x30), Some(&first)) = (der.first(), der.get(1)) else {
        return false;
    };
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || der.len() < 2 + n {
            return false;
        }
        let len = der[2..2 + n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, 2 + n)
    };
    header + len == der.len() && len > 0
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn value(c: u8) -> Option<u32> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u32)
}

/// Standard base64 with `=` padding; whitespace is not allowed inside.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    if b.is_empty() || !b.len().is_multiple_of(4) {
        return None;
    }
    let pad = b.iter().rev().take_while(|&&c| c == b'=').count();
    if pad > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in &b[..b.len() - pad] {
        acc = ((acc << 6) | value(c)?) & 0xffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Standard base64 with padding.
pub fn encode_base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn encode_block(der: &[u8]) -> String {
    let b64 = encode_base64(der);
    let mut out = format!("{BEGIN}\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(END);
    out.push('\n');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A DER SEQUENCE of `n` content bytes (long form when `n` >= 128).
    fn der(n: usize) -> Vec<u8> {
        let mut d = vec![0x30];
        if n < 0x80 {
            d.push(n as u8);
        } else {
            d.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
        }
        d.extend((0..n).map(|i| i as u8));
        d
    }

    #[test]
    fn base64_round_trips_and_refuses_junk() {
        for n in 0..70 {
            let data: Vec<u8> = (0..n).map(|i| (i * 37) as u8).collect();
            let text = encode_base64(&data);
            if n > 0 {
                assert_eq!(decode_base64(&text).unwrap(), data, "{n}");
            }
        }
        assert_eq!(encode_base64(b"hi"), "aGk=");
        for bad in [
            "", "a", "aGk", "a=Gk", "aG==k===", "aGk*", "====", "aGk=aGk=",
        ] {
            assert_eq!(decode_base64(bad), None, "{bad}");
        }
    }

    #[test]
    fn certificates_are_checked_and_re_encoded() {
        let short = encode_block(&der(40));
        let long = encode_block(&der(300));
        let text = format!(
            "Bag Attributes\n  friendlyName: x\n{short}\n# comment\n  {}",
            long.replace('\n', "\r\n")
        );
        let out = certificates(&text).unwrap();
        assert_eq!(out, format!("{short}{long}"));
        let commented = format!("# {BEGIN} follows\n{short}");
        assert_eq!(
            certificates(&commented).unwrap(),
            short,
            "a marker in a comment line"
        );
        assert!(out.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
    }

    #[test]
    fn bad_pem_is_refused_with_a_reason() {
        let good = encode_block(&der(40));
        let cases = [
            (String::new(), PemError::NoCertificate),
            ("just text".into(), PemError::NoCertificate),
            (
                format!("{good}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
                PemError::PrivateKey,
            ),
            (good.replace(END, ""), PemError::Unterminated(1)),
            (
                format!("{good}{}", good.replace(END, "")),
                PemError::Unterminated(2),
            ),
            (good.replace("MC", "M*"), PemError::Base64(1)),
            (encode_block(&[0x31, 1, 0]), PemError::Der(1)),
            (encode_block(&[0x30, 5, 0]), PemError::Der(1)),
            (good.repeat(MAX_CERTIFICATES + 1), PemError::TooMany),
            (
                "x".repeat(MAX_PEM_BYTES + 1),
                PemError::TooLarge(MAX_PEM_BYTES + 1),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(certificates(&text), Err(want), "{text:.80}");
        }
    }
}
