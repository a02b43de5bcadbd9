//! Compression of the archive in the formats the kernel's initramfs unpacker
//! accepts: none, gzip, zstd (frame) and lz4 in the *legacy* container.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// Magic of the legacy lz4 container (`lz4 -l`), little-endian `0x184C2102`.
pub const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4C, 0x18];
/// Largest uncompressed size of one legacy lz4 chunk.
pub const LZ4_LEGACY_CHUNK: usize = 8 << 20;
/// Most bytes [`decompress`] will produce, a guard against decompression bombs.
pub const MAX_DECOMPRESSED: usize = 1 << 30;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Errors of compressing or decompressing an image.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    /// The codec failed.
    #[error("{codec} {op} failed: {source}")]
    Codec {
        /// Codec name.
        codec: &'static str,
        /// `compression` or `decompression`.
        op: &'static str,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A legacy lz4 chunk is malformed.
    #[error("corrupt lz4 legacy stream at offset {0}")]
    Lz4Corrupt(usize),
    /// The output would exceed [`MAX_DECOMPRESSED`].
    #[error("decompressed image exceeds {} MiB", MAX_DECOMPRESSED >> 20)]
    TooLarge,
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

/// Decompresses an image, detecting its compression from the magic bytes.
pub fn decompress(data: &[u8]) -> Result<(Compression, Vec<u8>), CompressError> {
    let c = Compression::detect(data);
    let out = match c {
        Compression::None => data.to_vec(),
        Compression::Gzip => read_capped(flate2::read::MultiGzDecoder::new(data), c)?,
        Compression::Zstd => {
            let dec = zstd::Decoder::new(data).map_err(codec_err(c, "decompression"))?;
            read_capped(dec, c)?
        }
        Compression::Lz4 => lz4_legacy_decompress(data)?,
    };
    Ok((c, out))
}

fn read_capped(r: impl Read, c: Compression) -> Result<Vec<u8>, CompressError> {
    let mut out = Vec::new();
    r.take(MAX_DECOMPRESSED as u64 + 1)
        .read_to_end(&mut out)
        .map_err(codec_err(c, "decompression"))?;
    if out.len() > MAX_DECOMPRESSED {
        return Err(CompressError::TooLarge);
    }
    Ok(out)
}

/// Reads the legacy lz4 container written by [`lz4_legacy`] (or `lz4 -l`).
pub fn lz4_legacy_decompress(data: &[u8]) -> Result<Vec<u8>, CompressError> {
    let mut pos = LZ4_LEGACY_MAGIC.len();
    if !data.starts_with(&LZ4_LEGACY_MAGIC) {
        return Err(CompressError::Lz4Corrupt(0));
    }
    let mut out = Vec::new();
    while pos < data.len() {
        let size_bytes = data
            .get(pos..pos + 4)
            .ok_or(CompressError::Lz4Corrupt(pos))?;
        let mut size = [0u8; 4];
        size.copy_from_slice(size_bytes);
        if size == LZ4_LEGACY_MAGIC {
            pos += 4; // concatenated streams, as the kernel accepts
            continue;
        }
        let size = u32::from_le_bytes(size) as usize;
        let block = data
            .get(pos + 4..pos + 4 + size)
            .ok_or(CompressError::Lz4Corrupt(pos))?;
        let chunk = lz4_flex::block::decompress(block, LZ4_LEGACY_CHUNK)
            .map_err(|_| CompressError::Lz4Corrupt(pos))?;
        out.extend_from_slice(&chunk);
        if out.len() > MAX_DECOMPRESSED {
            return Err(CompressError::TooLarge);
        }
        pos += 4 + size;
    }
    Ok(out)
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
    fn names_parse() {
        for c in Compression::ALL {
            assert_eq!(c.name().parse::<Compression>().unwrap(), c);
        }
        assert!("xz".parse::<Compression>().is_err());
    }
}
