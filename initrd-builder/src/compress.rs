//! Compression of the archive in the formats the kernel's initramfs unpacker
//! accepts: none, gzip, zstd (frame) and lz4 in the *legacy* container.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// Magic of the legacy lz4 container (`lz4 -l`), little-endian `0x184C2102`.
pub const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4C, 0x18];
/// Largest uncompressed size of one legacy lz4 chunk.
pub const LZ4_LEGACY_CHUNK: usize = 8 << 20;
/// Most bytes [`decompress`] and [`crate::unpack::unpack`] produce (1 GiB), a
/// guard against decompression bombs.
pub const MAX_DECOMPRESSED: usize = 1 << 30;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Errors of compressing or decompressing an image.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    /// The codec failed.
    #[error("{codec} {op} failed")]
    Codec {
        /// Codec name.
        codec: &'static str,
        /// `compression` or `decompression`.
        op: &'static str,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The input does not hold a complete, well-formed zstd frame.
    #[error("zstd frame is truncated or corrupt ({reason})")]
    ZstdFrame {
        /// zstd's name of the problem.
        reason: &'static str,
    },
    /// A legacy lz4 chunk is malformed.
    #[error("corrupt lz4 legacy stream at offset {0}")]
    Lz4Corrupt(usize),
    /// The output would exceed its limit ([`MAX_DECOMPRESSED`] unless given).
    #[error("decompressed data exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// A level outside the codec's range.
    #[error("compression level {level} is out of range for {codec}")]
    Level {
        /// Codec name.
        codec: &'static str,
        /// The level asked for.
        level: i32,
    },
}

/// An image compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Uncompressed cpio.
    None,
    /// gzip (deflate), level 1–9, default 9.
    #[default]
    Gzip,
    /// zstd frame, level 1–22, default 19.
    Zstd,
    /// lz4 legacy container (`02 21 4C 18` + size-prefixed blocks); no levels.
    Lz4,
}

impl Compression {
    /// All compressions, in a stable order.
    pub const ALL: [Compression; 4] = [Self::None, Self::Gzip, Self::Zstd, Self::Lz4];

    /// Lowercase name as used in specs, manifests and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
            Self::Lz4 => "lz4",
        }
    }

    /// The level used when none is given.
    pub fn default_level(self) -> i32 {
        match self {
            Self::Gzip => 9,
            Self::Zstd => 19,
            Self::None | Self::Lz4 => 0,
        }
    }

    /// Guesses the compression of `data` from its magic bytes.
    pub fn detect(data: &[u8]) -> Compression {
        if data.starts_with(&GZIP_MAGIC) {
            Self::Gzip
        } else if data.starts_with(&ZSTD_MAGIC) {
            Self::Zstd
        } else if data.starts_with(&LZ4_LEGACY_MAGIC) {
            Self::Lz4
        } else {
            Self::None
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown compression {s:?} (none, gzip, zstd, lz4)"))
    }
}

fn codec_err(c: Compression, op: &'static str) -> impl FnOnce(std::io::Error) -> CompressError {
    move |source| CompressError::Codec {
        codec: c.name(),
        op,
        source,
    }
}

/// Compresses `data`; `level` `None` means the codec's default.
pub fn compress(data: &[u8], c: Compression, level: Option<i32>) -> Result<Vec<u8>, CompressError> {
    let level = level.unwrap_or(c.default_level());
    match c {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => gzip(data, level),
        Compression::Zstd => zstd_compress(data, level),
        Compression::Lz4 => Ok(lz4_legacy(data)),
    }
}

fn gzip(data: &[u8], level: i32) -> Result<Vec<u8>, CompressError> {
    let lvl = u32::try_from(level)
        .ok()
        .filter(|l| (1..=9).contains(l))
        .ok_or(CompressError::Level {
            codec: "gzip",
            level,
        })?;
    // No file name, mtime 0, fixed OS byte: the header is the same on every host.
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(3)
        .write(Vec::new(), flate2::Compression::new(lvl));
    enc.write_all(data)
        .map_err(codec_err(Compression::Gzip, "compression"))?;
    enc.finish()
        .map_err(codec_err(Compression::Gzip, "compression"))
}

fn zstd_compress(data: &[u8], level: i32) -> Result<Vec<u8>, CompressError> {
    if !(1..=22).contains(&level) {
        return Err(CompressError::Level {
            codec: "zstd",
            level,
        });
    }
    zstd_encode(data, level).map_err(codec_err(Compression::Zstd, "compression"))
}

fn zstd_encode(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    let mut enc = zstd::Encoder::new(Vec::new(), level)?;
    enc.include_checksum(true)?;
    enc.include_contentsize(true)?;
    enc.set_pledged_src_size(Some(data.len() as u64))?;
    enc.write_all(data)?;
    enc.finish()
}

/// The legacy lz4 container: magic, then for each ≤ 8 MiB chunk of input a u32 LE
/// compressed size followed by one raw LZ4 block.
pub fn lz4_legacy(data: &[u8]) -> Vec<u8> {
    let mut out = LZ4_LEGACY_MAGIC.to_vec();
    for chunk in data.chunks(LZ4_LEGACY_CHUNK) {
        let block = lz4_flex::block::compress(chunk);
        // A block of at most 8 MiB of input always fits u32.
        out.extend_from_slice(&(block.len() as u32).to_le_bytes());
        out.extend_from_slice(&block);
    }
    out
}

/// Decompresses the stream at the start of `data`, detecting its compression
/// from the magic bytes (uncompressed data is returned as it is), producing at
/// most [`MAX_DECOMPRESSED`] bytes. Only the first stream is read: what the
/// kernel unpacks from a whole image is [`crate::unpack::unpack`]'s business.
pub fn decompress(data: &[u8]) -> Result<(Compression, Vec<u8>), CompressError> {
    let c = Compression::detect(data);
    let (out, _) = decompress_stream(data, c, MAX_DECOMPRESSED)?;
    Ok((c, out))
}

/// Decompresses the one `c` stream at the start of `data` (one gzip member,
/// one zstd frame, or a legacy lz4 stream up to the end of `data` or a zero
/// chunk size) and returns its output and the number of input bytes it
/// spans. Fails when the output would exceed `limit` bytes.
pub fn decompress_stream(
    data: &[u8],
    c: Compression,
    limit: usize,
) -> Result<(Vec<u8>, usize), CompressError> {
    match c {
        Compression::None if data.len() > limit => Err(CompressError::TooLarge { limit }),
        Compression::None => Ok((data.to_vec(), data.len())),
        Compression::Gzip => gzip_stream(data, limit),
        Compression::Zstd => zstd_stream(data, limit),
        Compression::Lz4 => lz4_legacy_stream(data, limit),
    }
}

fn gzip_stream(data: &[u8], limit: usize) -> Result<(Vec<u8>, usize), CompressError> {
    let mut dec = flate2::bufread::GzDecoder::new(data);
    let out = read_limited(&mut dec, Compression::Gzip, limit)?;
    // The bufread decoder consumes exactly the member: header, deflate data and
    // the 8-byte trailer.
    let rest = dec.into_inner().len();
    Ok((out, data.len() - rest))
}

/// Largest zstd window accepted, as the kernel's unzstd (128 MiB).
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

fn zstd_stream(data: &[u8], limit: usize) -> Result<(Vec<u8>, usize), CompressError> {
    let len = zstd::zstd_safe::find_frame_compressed_size(data).map_err(|code| {
        CompressError::ZstdFrame {
            reason: zstd::zstd_safe::get_error_name(code),
        }
    })?;
    let frame = data.get(..len).ok_or(CompressError::ZstdFrame {
        reason: "frame size beyond the input",
    })?;
    let err = || codec_err(Compression::Zstd, "decompression");
    let mut dec = zstd::stream::read::Decoder::with_buffer(frame)
        .map_err(err())?
        .single_frame();
    dec.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(err())?;
    let out = read_limited(&mut dec, Compression::Zstd, limit)?;
    Ok((out, len))
}

fn read_limited(r: &mut impl Read, c: Compression, limit: usize) -> Result<Vec<u8>, CompressError> {
    let mut out = Vec::new();
    r.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(codec_err(c, "decompression"))?;
    if out.len() > limit {
        return Err(CompressError::TooLarge { limit });
    }
    Ok(out)
}

/// Reads the legacy lz4 container written by [`lz4_legacy`] (or `lz4 -l`),
/// producing at most [`MAX_DECOMPRESSED`] bytes.
pub fn lz4_legacy_decompress(data: &[u8]) -> Result<Vec<u8>, CompressError> {
    lz4_legacy_stream(data, MAX_DECOMPRESSED).map(|(out, _)| out)
}

/// Largest compressed chunk the kernel accepts: LZ4_compressBound(8 MiB).
const LZ4_LEGACY_MAX_BLOCK: usize = LZ4_LEGACY_CHUNK + LZ4_LEGACY_CHUNK / 255 + 16;

/// A legacy lz4 stream has no end marker: like the kernel's unlz4 it ends at
/// the end of the input or at a zero chunk size (zero padding, left unread);
/// a repeated magic starts a concatenated stream and is skipped.
fn lz4_legacy_stream(data: &[u8], limit: usize) -> Result<(Vec<u8>, usize), CompressError> {
    if !data.starts_with(&LZ4_LEGACY_MAGIC) {
        return Err(CompressError::Lz4Corrupt(0));
    }
    let mut pos = LZ4_LEGACY_MAGIC.len();
    let mut out = Vec::new();
    while let Some(rest) = data.get(pos..).filter(|r| !r.is_empty()) {
        if rest.iter().take(4).all(|&b| b == 0) {
            break; // zero padding after the stream
        }
        let size = rest
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .ok_or(CompressError::Lz4Corrupt(pos))?;
        if size == LZ4_LEGACY_MAGIC {
            pos += 4;
            continue;
        }
        let size = u32::from_le_bytes(size) as usize;
        let block = rest
            .get(4..4 + size)
            .filter(|_| size <= LZ4_LEGACY_MAX_BLOCK)
            .ok_or(CompressError::Lz4Corrupt(pos))?;
        // One LZ4 byte expands to at most 255: no chunk needs a bigger buffer.
        let cap = LZ4_LEGACY_CHUNK.min(block.len().saturating_mul(255) + 64);
        let chunk =
            lz4_flex::block::decompress(block, cap).map_err(|_| CompressError::Lz4Corrupt(pos))?;
        if out.len() + chunk.len() > limit {
            return Err(CompressError::TooLarge { limit });
        }
        out.extend_from_slice(&chunk);
        pos += 4 + size;
    }
    Ok((out, pos))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..(LZ4_LEGACY_CHUNK + 12345))
            .map(|i| (i % 251) as u8 ^ (i / 4096) as u8)
            .collect()
    }

    #[test]
    fn round_trips_every_compression() {
        let data = sample();
        for c in Compression::ALL {
            let level = if c == Compression::Zstd {
                Some(3)
            } else {
                None
            };
            let z = compress(&data, c, level).unwrap();
            let (got_c, back) = decompress(&z).unwrap();
            assert_eq!(got_c, c);
            assert_eq!(back, data, "{c}");
        }
    }

    #[test]
    fn lz4_legacy_layout() {
        let data = sample();
        let z = lz4_legacy(&data);
        assert_eq!(&z[..4], &[0x02, 0x21, 0x4C, 0x18]);
        let first = u32::from_le_bytes([z[4], z[5], z[6], z[7]]) as usize;
        let block = &z[8..8 + first];
        let chunk = lz4_flex::block::decompress(block, LZ4_LEGACY_CHUNK).unwrap();
        assert_eq!(chunk.len(), LZ4_LEGACY_CHUNK);
    }

    #[test]
    fn deterministic_and_levels_checked() {
        let data = b"abc".repeat(1000);
        for c in Compression::ALL {
            assert_eq!(
                compress(&data, c, None).unwrap(),
                compress(&data, c, None).unwrap()
            );
        }
        assert!(compress(&data, Compression::Gzip, Some(10)).is_err());
        assert!(compress(&data, Compression::Zstd, Some(0)).is_err());
    }

    #[test]
    fn corrupt_lz4_is_an_error() {
        let mut z = lz4_legacy(&sample());
        z.truncate(z.len() - 10);
        assert!(decompress(&z).is_err());
    }

    #[test]
    fn streams_end_where_they_end() {
        let data = b"some archive bytes ".repeat(500);
        let suffix = b"\x00\x00\x00\x00070701 and whatever follows";
        for c in [Compression::Gzip, Compression::Zstd, Compression::Lz4] {
            let z = compress(&data, c, Some(if c == Compression::Zstd { 3 } else { 6 })).unwrap();
            let image = [&z[..], suffix].concat();
            let (out, used) = decompress_stream(&image, c, MAX_DECOMPRESSED).unwrap();
            assert_eq!(out, data, "{c}");
            // lz4 legacy has no end marker: it ends at the zero padding.
            assert_eq!(used, z.len(), "{c}");
            let err = decompress_stream(&z, c, data.len() - 1).unwrap_err();
            assert!(matches!(err, CompressError::TooLarge { .. }), "{c}: {err}");
        }
    }

    #[test]
    fn names_parse() {
        for c in Compression::ALL {
            assert_eq!(c.name().parse::<Compression>().unwrap(), c);
        }
        assert!("xz".parse::<Compression>().is_err());
    }
}
