//! What the kernel's initramfs unpacker (`init/initramfs.c`) reads from an
//! image: a sequence of segments, each
//! - zero padding (skipped byte by byte),
//! - an uncompressed newc archive starting on a 4-byte boundary (several may
//!   follow each other, each ending in `TRAILER!!!`), or
//! - one compressed stream (a gzip member, a zstd frame, a legacy lz4 stream)
//!   whose output is archives and zero padding again (the kernel refuses
//!   anything else inside a stream: "junk within compressed archive").
//!
//! The kernel unpacks every archive of every segment, later entries replacing
//! earlier ones; [`unpack`] returns them all, so that a listing or a deep
//! verification sees what the kernel would. bzip2, lzma, xz and lzo streams
//! are recognised and refused (the builder never writes them).

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::compress::{self, CompressError, Compression, MAX_DECOMPRESSED};
use crate::cpio::{self, CpioError, RawEntry};

/// Largest image file read: [`MAX_DECOMPRESSED`] (1 GiB), since an
/// uncompressed image is its own archive.
pub const MAX_IMAGE_BYTES: u64 = MAX_DECOMPRESSED as u64;

/// Why an image does not unpack.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// A compressed stream that does not decompress.
    #[error("{compression} stream at offset {offset} does not decompress")]
    Stream {
        /// Offset of the stream in the image.
        offset: usize,
        /// Its compression.
        compression: Compression,
        /// The cause.
        #[source]
        source: CompressError,
    },
    /// A malformed archive.
    #[error("archive at offset {offset} {}", where_(.stream))]
    Archive {
        /// Offset of the archive (in the stream's output when compressed).
        offset: usize,
        /// The compressed stream holding it: (offset in the image, compression).
        stream: Option<(usize, Compression)>,
        /// The cause.
        #[source]
        source: CpioError,
    },
    /// A compression the kernel knows but this reader does not.
    #[error("{name} stream at offset {offset}: not supported (only gzip, zstd and lz4 legacy)")]
    Unsupported {
        /// Offset in the image.
        offset: usize,
        /// `bzip2`, `lzma`, `xz`, `lzo`, `gzip (old)`.
        name: &'static str,
    },
    /// Bytes that are neither padding, an archive nor a known stream.
    #[error("unknown data at offset {offset} {}: no cpio magic, no known compression", where_(.stream))]
    Junk {
        /// Offset (in the stream's output when compressed).
        offset: usize,
        /// The compressed stream holding it: (offset in the image, compression).
        stream: Option<(usize, Compression)>,
    },
    /// All streams together decompress to more than the limit.
    #[error("the image decompresses to more than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The image file could not be read.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The image is not a regular file (a device, a pipe, a folder).
    #[error("{path} is not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The image file is larger than [`MAX_IMAGE_BYTES`].
    #[error("{path} is larger than {limit} bytes")]
    FileTooLarge {
        /// The path.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
}

fn where_(stream: &Option<(usize, Compression)>) -> String {
    match *stream {
        Some((at, c)) => format!("in the output of the {c} stream at offset {at}"),
        None => "(uncompressed)".to_string(),
    }
}

/// One archive found in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundArchive {
    /// Offset in the image of the segment holding it (its compressed stream, or
    /// the archive itself when uncompressed).
    pub segment_offset: usize,
    /// Compression of that segment.
    pub compression: Compression,
    /// Offset of the archive in the stream's output (0 when uncompressed).
    pub offset: usize,
    /// Bytes of the archive, trailer included.
    pub len: usize,
    /// SHA-256 (hex) of those bytes.
    pub sha256: String,
    /// Its entries, in archive order.
    pub entries: Vec<RawEntry>,
}

impl FoundArchive {
    /// `zstd stream at offset 0` / `uncompressed at offset 4096`, plus the
    /// archive's place in the stream's output when it is not the first.
    pub fn describe(&self) -> String {
        match self.compression {
            Compression::None => format!("uncompressed at offset {}", self.segment_offset),
            c if self.offset == 0 => format!("{c} stream at offset {}", self.segment_offset),
            c => format!(
                "offset {} in the output of the {c} stream at offset {}",
                self.offset, self.segment_offset
            ),
        }
    }
}

/// Everything the kernel would unpack from an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unpacked {
    /// The archives, in the order the kernel unpacks them.
    pub archives: Vec<FoundArchive>,
    /// Bytes produced by decompression, all streams together.
    pub decompressed: usize,
}

impl Unpacked {
    /// Every entry of every archive, in unpacking order, with its archive's
    /// index.
    pub fn entries(&self) -> impl Iterator<Item = (usize, &RawEntry)> {
        self.archives
            .iter()
            .enumerate()
            .flat_map(|(i, a)| a.entries.iter().map(move |e| (i, e)))
    }
}

/// Unpacks an image, decompressing at most [`MAX_DECOMPRESSED`] bytes.
pub fn unpack(image: &[u8]) -> Result<Unpacked, UnpackError> {
    unpack_with_limit(image, MAX_DECOMPRESSED)
}

/// Unpacks an image, decompressing at most `limit` bytes in all.
pub fn unpack_with_limit(image: &[u8], limit: usize) -> Result<Unpacked, UnpackError> {
    let mut r = Reader {
        out: Unpacked::default(),
        limit,
    };
    r.top_level(image)?;
    Ok(r.out)
}

struct Reader {
    out: Unpacked,
    limit: usize,
}

impl Reader {
    fn top_level(&mut self, image: &[u8]) -> Result<(), UnpackError> {
        let mut pos = 0;
        while let Some(&b) = image.get(pos) {
            if b == 0 {
                pos += 1;
            } else if b == b'0' && pos.is_multiple_of(4) {
                pos = self.archive(image, pos, None)?;
            } else {
                pos += self.stream(image, pos)?;
            }
        }
        Ok(())
    }

    /// Decompresses the stream at `pos`, reads its output; returns its length.
    fn stream(&mut self, image: &[u8], pos: usize) -> Result<usize, UnpackError> {
        let rest = &image[pos..];
        let compression = match Compression::detect(rest) {
            Compression::None => return Err(unknown_magic(rest, pos)),
            c => c,
        };
        let budget = self.limit - self.out.decompressed;
        let (output, used) = compress::decompress_stream(rest, compression, budget).map_err(
            |source| match source {
                CompressError::TooLarge { .. } => UnpackError::TooLarge { limit: self.limit },
                source => UnpackError::Stream {
                    offset: pos,
                    compression,
                    source,
                },
            },
        )?;
        self.out.decompressed += output.len();
        self.stream_output(&output, (pos, compression))?;
        Ok(used.max(1))
    }

    /// Archives and zero padding, nothing else.
    fn stream_output(
        &mut self,
        output: &[u8],
        stream: (usize, Compression),
    ) -> Result<(), UnpackError> {
        let mut pos = 0;
        while let Some(&b) = output.get(pos) {
            if b == 0 {
                pos += 1;
            } else if b == b'0' && pos.is_multiple_of(4) {
                pos = self.archive(output, pos, Some(stream))?;
            } else {
                let (offset, stream) = (pos, Some(stream));
                return Err(UnpackError::Junk { offset, stream });
            }
        }
        Ok(())
    }

    fn archive(
        &mut self,
        bytes: &[u8],
        pos: usize,
        stream: Option<(usize, Compression)>,
    ) -> Result<usize, UnpackError> {
        let (entries, end) =
            cpio::read_archive(bytes, pos).map_err(|source| UnpackError::Archive {
                offset: pos,
                stream,
                source,
            })?;
        let (segment_offset, compression, offset) = match stream {
            Some((at, c)) => (at, c, pos),
            None => (pos, Compression::None, 0),
        };
        self.out.archives.push(FoundArchive {
            segment_offset,
            compression,
            offset,
            len: end - pos,
            sha256: hex::encode(Sha256::digest(&bytes[pos..end])),
            entries,
        });
        Ok(end)
    }
}

/// The error for data at `pos` that is no archive and no supported stream.
fn unknown_magic(rest: &[u8], pos: usize) -> UnpackError {
    const KNOWN: [(&[u8], &str); 5] = [
        (b"BZh", "bzip2"),
        (b"\x5d\x00\x00", "lzma"),
        (b"\xfd7zXZ\x00", "xz"),
        (b"\x89LZO", "lzo"),
        (b"\x1f\x9e", "gzip (old)"),
    ];
    match KNOWN.iter().find(|(magic, _)| rest.starts_with(magic)) {
        Some((_, name)) => UnpackError::Unsupported { offset: pos, name },
        None => UnpackError::Junk {
            offset: pos,
            stream: None,
        },
    }
}

/// Reads an image file: it must be a regular file of at most
/// [`MAX_IMAGE_BYTES`].
pub fn read_image_file(path: &Path) -> Result<Vec<u8>, UnpackError> {
    read_image(open_image_file(path)?, path)
}

/// Reads an image file opened by [`open_image_file`] (`path` names it in
/// errors): at most [`MAX_IMAGE_BYTES`].
pub fn read_image(file: std::fs::File, path: &Path) -> Result<Vec<u8>, UnpackError> {
    let io = |source| UnpackError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = file.metadata().map_err(io)?;
    let too_large = || UnpackError::FileTooLarge {
        path: path.to_path_buf(),
        limit: MAX_IMAGE_BYTES,
    };
    if meta.len() > MAX_IMAGE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(MAX_IMAGE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_IMAGE_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Opens an image file for streaming: it must be a regular file.
pub fn open_image_file(path: &Path) -> Result<std::fs::File, UnpackError> {
    let io = |source| UnpackError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(UnpackError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    Ok(file)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::compress::compress;
    use crate::cpio::{Archive, Entry};

    fn archive(names: &[&str]) -> Vec<u8> {
        let mut a = Archive::new();
        for n in names {
            a.add(Entry::file(n, 0o644, n.as_bytes().to_vec())).unwrap();
        }
        a.write(0).unwrap()
    }

    fn names(u: &Unpacked) -> Vec<String> {
        u.entries().map(|(_, e)| e.name.clone()).collect()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        compress(data, Compression::Zstd, Some(3)).unwrap()
    }

    #[test]
    fn one_archive_in_each_compression() {
        let a = archive(&["/init"]);
        for c in Compression::ALL {
            let u = unpack(&compress(&a, c, None).unwrap()).unwrap();
            assert_eq!(names(&u), ["init"], "{c}");
            assert_eq!(u.archives.len(), 1);
            assert_eq!(u.archives[0].compression, c);
            assert_eq!(u.archives[0].len, a.len());
            assert_eq!(u.archives[0].sha256, hex::encode(Sha256::digest(&a)));
        }
    }

    #[test]
    fn every_segment_is_read() {
        // zstd(a) + padding + gzip(b ++ c) + lz4(d) + padding + e: all of them.
        let mut image = zstd(&archive(&["/a"]));
        image.resize(image.len().next_multiple_of(4) + 8, 0);
        let bc = [archive(&["/b"]), vec![0; 8], archive(&["/c"])].concat();
        image.extend(compress(&bc, Compression::Gzip, None).unwrap());
        image.extend(compress(&archive(&["/d"]), Compression::Lz4, None).unwrap());
        image.resize(image.len().next_multiple_of(4) + 4, 0);
        let at = image.len();
        image.extend(archive(&["/e", "/f"]));
        let u = unpack(&image).unwrap();
        assert_eq!(names(&u), ["a", "b", "c", "d", "e", "f"]);
        let kinds: Vec<&str> = u.archives.iter().map(|a| a.compression.name()).collect();
        assert_eq!(kinds, ["zstd", "gzip", "gzip", "lz4", "none"]);
        assert_eq!(u.archives[4].segment_offset, at);
        assert_eq!(u.archives[2].offset, u.archives[1].len + 8);
        assert!(u.archives[2]
            .describe()
            .contains("in the output of the gzip stream"));
        let gz = compress(&archive(&["/x"]), Compression::Gzip, None).unwrap();
        let gz_members = [gz.clone(), gz].concat();
        assert_eq!(names(&unpack(&gz_members).unwrap()), ["x", "x"]);
    }

    #[test]
    fn refusals() {
        let a = archive(&["/a"]);
        let junk = |image: &[u8]| matches!(unpack(image), Err(UnpackError::Junk { .. }));
        assert!(junk(&[&a[..], b"x"].concat()));
        assert!(junk(&[&a[..], b"\x00070701"].concat())); // misaligned archive
        let nested = [archive(&["/a"]), zstd(&a)].concat();
        let err = unpack(&compress(&nested, Compression::Gzip, None).unwrap()).unwrap_err();
        assert!(
            matches!(
                err,
                UnpackError::Junk {
                    stream: Some(_),
                    ..
                }
            ),
            "{err}"
        );
        let mut truncated = zstd(&a);
        truncated.pop();
        assert!(matches!(
            unpack(&truncated),
            Err(UnpackError::Stream { .. })
        ));
        let half = &a[..a.len() / 2];
        assert!(matches!(unpack(half), Err(UnpackError::Archive { .. })));
        let err = unpack(b"\xfd7zXZ\x00rest").unwrap_err();
        assert!(
            err.to_string().starts_with("xz stream at offset 0"),
            "{err}"
        );
        assert_eq!(unpack(&[0; 16]).unwrap(), Unpacked::default());
    }

    #[test]
    fn decompression_is_capped_across_streams() {
        let big = archive(&["/a"])
            .into_iter()
            .chain(vec![0; 1 << 20])
            .collect::<Vec<u8>>();
        let image = [zstd(&big), zstd(&big)].concat();
        assert_eq!(unpack(&image).unwrap().decompressed, 2 * big.len());
        let err = unpack_with_limit(&image, big.len() + 10).unwrap_err();
        assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn image_files_must_be_regular_and_bounded() {
        let err = read_image_file(Path::new("/dev/zero")).unwrap_err();
        assert!(matches!(err, UnpackError::NotAFile { .. }), "{err}");
        assert!(open_image_file(Path::new("/dev/zero")).is_err());
        let err = read_image_file(Path::new("/nonexistent.img")).unwrap_err();
        assert_eq!(err.to_string(), "/nonexistent.img");
    }
}
