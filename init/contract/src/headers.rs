//! The kernel-headers tarball (`kernel-headers.tar.gz`, CONTRACT.md §5),
//! read and judged entry by entry. This module only reads: it hands each
//! checked entry to a visitor, which writes it (init's headers worker).
//!
//! The tarball is outside input even when it came in a signed initrd: every
//! entry must be a directory, regular file, symlink or hard link whose path
//! is relative, has no `..`, and does not pass through a symlink or a file
//! an earlier entry made; a path keeps the kind it first had (a directory
//! never becomes a symlink, or the reverse, so nothing written later can
//! follow one); a hard link must name an earlier regular file. Sizes and
//! entry counts are bounded. A tarball whose first entry is a single
//! `linux-headers-<release>/` folder (as `kernel/build.sh` makes it) is read
//! with that folder stripped and its name reported; `.` entries are skipped.

use std::collections::HashMap;
use std::io::{self, Read};

/// Bounds on one tarball.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Decompressed bytes (headers and data).
    pub max_bytes: u64,
    /// Entries.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        // A 6.x headers tree is ~70 MB in ~9,000 entries.
        Limits {
            max_bytes: 1 << 30,
            max_entries: 200_000,
        }
    }
}

/// What one checked entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file; its data is read from the visitor's reader.
    File,
    /// A symbolic link to this target (kept as is: it is resolved in the guest).
    Symlink(String),
    /// A hard link to this earlier regular file (a relative path like the entry's).
    HardLink(String),
}

/// One checked entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative path, `/`-separated, no empty, `.` or `..` component.
    pub path: String,
    /// What it is.
    pub kind: Kind,
    /// Permission bits (setuid, setgid and sticky dropped).
    pub mode: u32,
    /// Modification time (unix seconds).
    pub mtime: u64,
    /// Data bytes (files).
    pub size: u64,
}

/// Why a tarball was refused.
#[derive(Debug, thiserror::Error)]
pub enum HeadersError {
    /// Reading or decompressing failed.
    #[error("read the tarball")]
    Read(#[source] io::Error),
    /// An entry is not acceptable.
    #[error("entry {index} ({path:?}): {reason}")]
    Entry {
        /// Its position.
        index: u64,
        /// Its path as stored.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Over a bound.
    #[error("over {what} (limit {limit})")]
    TooLarge {
        /// Which bound.
        what: &'static str,
        /// Its value.
        limit: u64,
    },
    /// The visitor failed on an entry.
    #[error("write {path}")]
    Visit {
        /// The entry's checked path.
        path: String,
        /// The visitor's error.
        #[source]
        source: io::Error,
    },
    /// Nothing but the top folder.
    #[error("the tarball holds no files")]
    Empty,
}

/// What [`walk`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Entries handed to the visitor.
    pub entries: u64,
    /// File data bytes.
    pub file_bytes: u64,
    /// The top folder stripped (`linux-headers-<release>`), if any.
    pub top: Option<String>,
}

/// What a path is, once an entry (or a path below it) made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Dir,
    File,
    Symlink,
}

/// A reader that fails once more than `left` bytes were read.
struct Bounded<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            io::Error::new(io::ErrorKind::FileTooLarge, "decompressed size limit")
        })?;
        Ok(n)
    }
}

/// An entry's data: exactly its size, or an error (a tar stream that ends
/// inside a file would otherwise read as a short file).
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the archive ends {} bytes into the file's data", self.left),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The state of a walk: the top folder and what earlier entries made
/// (every path, and every folder above one, with its kind).
#[derive(Default)]
struct Walk {
    top: Option<String>,
    first: bool,
    seen: HashMap<String, Tag>,
}

/// Reads a gzip-compressed tarball and hands every checked entry, with a
/// reader of its data, to `visit`, in archive order. Stops at the first
/// refused entry or visitor error.
pub fn walk<R, F>(tarball: R, limits: &Limits, visit: F) -> Result<Summary, HeadersError>
where
    R: Read,
    F: FnMut(&Entry, &mut dyn Read) -> io::Result<()>,
{
    walk_tar(flate2::read::GzDecoder::new(tarball), limits, visit)
}

/// [`walk`] on an uncompressed tar stream.
pub fn walk_tar<R, F>(tar: R, limits: &Limits, mut visit: F) -> Result<Summary, HeadersError>
where
    R: Read,
    F: FnMut(&Entry, &mut dyn Read) -> io::Result<()>,
{
    let bounded = Bounded {
        inner: tar,
        left: limits.max_bytes,
    };
    let mut archive = tar::Archive::new(bounded);
    let mut walk = Walk {
        first: true,
        ..Walk::default()
    };
    let mut summary = Summary::default();
    let read_error = |e| read_error(e, limits);
    let entries = archive.entries().map_err(read_error)?;
    for (index, entry) in entries.enumerate() {
        let index = index as u64;
        if index >= limits.max_entries {
            return Err(HeadersError::TooLarge {
                what: "the entry count",
                limit: limits.max_entries,
            });
        }
        let mut entry = entry.map_err(read_error)?;
        let Some(checked) = walk.check(index, &entry, limits)? else {
            continue;
        };
        let mut data = Exact {
            inner: &mut entry,
            left: checked.size,
        };
        visit(&checked, &mut data).map_err(|source| HeadersError::Visit {
            path: checked.path.clone(),
            source,
        })?;
        summary.entries += 1;
        summary.file_bytes += checked.size;
    }
    if summary.entries == 0 {
        return Err(HeadersError::Empty);
    }
    summary.top = walk.top;
    Ok(summary)
}

fn read_error(e: io::Error, limits: &Limits) -> HeadersError {
    if e.kind() == io::ErrorKind::FileTooLarge {
        // The bound's error keeps its kind through tar's own wrapping.
        return HeadersError::TooLarge {
            what: "the decompressed size",
            limit: limits.max_bytes,
        };
    }
    HeadersError::Read(e)
}

impl Walk {
    /// The entry checked, or `None` for the top folder itself.
    fn check<R: Read>(
        &mut self,
        index: u64,
        entry: &tar::Entry<'_, R>,
        limits: &Limits,
    ) -> Result<Option<Entry>, HeadersError> {
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |reason| HeadersError::Entry {
            index,
            path: raw.clone(),
            reason,
        };
        let header = entry.header();
        let kind = header.entry_type();
        if raw == "." || raw == "./" {
            return Ok(None);
        }
        let parts = components(&raw).ok_or_else(|| refuse("not a plain relative path"))?;
        let first = std::mem::take(&mut self.first);
        if first && parts.len() == 1 && kind.is_dir() && parts[0].starts_with("linux-headers-") {
            self.top = Some(parts[0].to_string());
            return Ok(None);
        }
        let path = self
            .strip(&parts)
            .ok_or_else(|| refuse("outside the top folder"))?;
        self.check_parents(&path).map_err(refuse)?;
        let kind = self.kind(entry, kind).map_err(refuse)?;
        match self.seen.get(&path) {
            Some(t) if *t != tag(&kind) => {
                return Err(refuse("changes the kind of an earlier path"))
            }
            _ => {}
        }
        let mode = header.mode().map_err(|e| read_error(e, limits))? & 0o777;
        let mtime = header.mtime().map_err(|e| read_error(e, limits))?;
        let size = if kind == Kind::File { entry.size() } else { 0 };
        self.record(&path, &kind);
        Ok(Some(Entry {
            path,
            kind,
            mode,
            mtime,
            size,
        }))
    }

    /// The path below the top folder (the whole path when there is none).
    fn strip(&self, parts: &[&str]) -> Option<String> {
        match &self.top {
            Some(top) if parts.len() > 1 && parts[0] == top => Some(parts[1..].join("/")),
            Some(_) => None,
            None => Some(parts.join("/")),
        }
    }

    /// No earlier symlink or non-directory on the way to `path`.
    fn check_parents(&self, path: &str) -> Result<(), &'static str> {
        let mut prefix = String::new();
        let mut parts = path.split('/').peekable();
        while let Some(p) = parts.next() {
            if parts.peek().is_none() {
                break;
            }
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(p);
            if self.seen.get(&prefix).is_some_and(|t| *t != Tag::Dir) {
                return Err("passes through a symlink or a file");
            }
        }
        Ok(())
    }

    fn kind<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        kind: tar::EntryType,
    ) -> Result<Kind, &'static str> {
        let link = || {
            entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .filter(|l| !l.is_empty())
                .ok_or("a link with no target")
        };
        match kind {
            tar::EntryType::Directory => Ok(Kind::Dir),
            tar::EntryType::Regular | tar::EntryType::Continuous => Ok(Kind::File),
            tar::EntryType::Symlink => Ok(Kind::Symlink(link()?)),
            tar::EntryType::Link => {
                let target = link()?;
                let parts = components(&target).ok_or("a hard link out of the tree")?;
                let target = self.strip(&parts).ok_or("a hard link out of the tree")?;
                if self.seen.get(&target) != Some(&Tag::File) {
                    return Err("a hard link to no earlier file");
                }
                Ok(Kind::HardLink(target))
            }
            _ => Err("not a directory, file or link"),
        }
    }

    /// The path's kind, and every folder above it as a folder (the writer
    /// makes them), so none of them can turn into a link later.
    fn record(&mut self, path: &str, kind: &Kind) {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let folder = &path[..at + i];
            self.seen.entry(folder.to_string()).or_insert(Tag::Dir);
            at += i + 1;
        }
        self.seen.insert(path.to_string(), tag(kind));
    }
}

fn tag(kind: &Kind) -> Tag {
    match kind {
        Kind::Dir => Tag::Dir,
        Kind::File | Kind::HardLink(_) => Tag::File,
        Kind::Symlink(_) => Tag::Symlink,
    }
}

/// The components of a plain relative path (`./` prefixes and a trailing
/// `/` allowed), or `None` for an absolute path, `..`, a NUL or nothing.
fn components(path: &str) -> Option<Vec<&str>> {
    if path.starts_with('/') || path.contains('\0') {
        return None;
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return None;
    }
    Some(parts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A .tar.gz from (path, type, data or link target) entries.
    pub(crate) fn tarball(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o4755);
            h.set_mtime(1_700_000_000);
            let body: &[u8] = if *kind == tar::EntryType::Regular {
                data.as_bytes()
            } else {
                b""
            };
            h.set_size(body.len() as u64);
            // Written raw: the builder's setters refuse the bad names tested here.
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            if matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
                let l = h.as_old_mut().linkname.as_mut();
                l[..data.len()].copy_from_slice(data.as_bytes());
            }
            h.set_cksum();
            b.append(&h, body).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    fn walked(bytes: &[u8]) -> Result<Vec<Entry>, HeadersError> {
        let mut seen = Vec::new();
        walk(bytes, &Limits::default(), |e, r| {
            let mut data = Vec::new();
            r.read_to_end(&mut data)?;
            assert_eq!(data.len() as u64, e.size);
            seen.push(e.clone());
            Ok(())
        })?;
        Ok(seen)
    }

    use tar::EntryType as T;

    #[test]
    fn the_top_folder_is_stripped_and_modes_lose_setuid() {
        let t = tarball(&[
            ("linux-headers-6.1.0/", T::Directory, ""),
            ("linux-headers-6.1.0/Makefile", T::Regular, "all:\n"),
            ("linux-headers-6.1.0/include/", T::Directory, ""),
            (
                "linux-headers-6.1.0/include/asm",
                T::Symlink,
                "../arch/x86/include/asm",
            ),
            (
                "linux-headers-6.1.0/Makefile.copy",
                T::Link,
                "linux-headers-6.1.0/Makefile",
            ),
        ]);
        let e = walked(&t).unwrap();
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["Makefile", "include", "include/asm", "Makefile.copy"]
        );
        assert_eq!(e[0].mode, 0o755);
        assert_eq!(e[0].size, 5);
        assert_eq!(e[0].mtime, 1_700_000_000);
        assert_eq!(e[2].kind, Kind::Symlink("../arch/x86/include/asm".into()));
        assert_eq!(e[3].kind, Kind::HardLink("Makefile".into()));
    }

    #[test]
    fn a_flat_tarball_is_read_as_is() {
        let t = tarball(&[
            ("Makefile", T::Regular, "x"),
            ("scripts/", T::Directory, ""),
        ]);
        let paths: Vec<String> = walked(&t).unwrap().into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["Makefile", "scripts"]);
    }

    fn refused(entries: &[(&str, tar::EntryType, &str)]) -> String {
        walked(&tarball(entries)).unwrap_err().to_string()
    }

    #[test]
    fn escapes_and_odd_entries_are_refused() {
        let top = ("linux-headers-t/", T::Directory, "");
        for (bad, why) in [
            (
                ("linux-headers-t/../x", T::Regular, ""),
                "not a plain relative path",
            ),
            (("/etc/x", T::Regular, ""), "not a plain relative path"),
            (("other/x", T::Regular, ""), "outside the top folder"),
            (
                ("linux-headers-t/dev", T::Char, ""),
                "not a directory, file or link",
            ),
            (
                ("linux-headers-t/fifo", T::Fifo, ""),
                "not a directory, file or link",
            ),
            (
                ("linux-headers-t/l", T::Link, "/etc/shadow"),
                "a hard link out of the tree",
            ),
            (
                ("linux-headers-t/l", T::Link, "linux-headers-t/../../x"),
                "a hard link out of the tree",
            ),
            (
                ("linux-headers-t/l", T::Link, "linux-headers-t/none"),
                "a hard link to no earlier file",
            ),
            (
                ("linux-headers-t/s", T::Symlink, ""),
                "a link with no target",
            ),
        ] {
            let msg = refused(&[top, bad]);
            assert!(msg.contains(why), "{bad:?}: {msg}");
        }
    }

    #[test]
    fn nothing_is_written_through_an_earlier_symlink_or_file() {
        let msg = refused(&[
            ("linux-headers-t/", T::Directory, ""),
            ("linux-headers-t/up", T::Symlink, "/"),
            ("linux-headers-t/up/etc/passwd", T::Regular, "x"),
        ]);
        assert!(msg.contains("passes through a symlink"), "{msg}");
        let msg = refused(&[
            ("linux-headers-t/", T::Directory, ""),
            ("linux-headers-t/f", T::Regular, "x"),
            ("linux-headers-t/f/g", T::Regular, "x"),
        ]);
        assert!(msg.contains("passes through a symlink or a file"), "{msg}");
    }

    #[test]
    fn a_path_never_changes_kind() {
        // A folder turned into a symlink, then written through.
        let msg = refused(&[
            ("linux-headers-t/", T::Directory, ""),
            ("linux-headers-t/l", T::Symlink, "/etc"),
            ("linux-headers-t/l/", T::Directory, ""),
            ("linux-headers-t/l/passwd", T::Regular, "x"),
        ]);
        assert!(msg.contains("changes the kind"), "{msg}");
        // A folder (made implicitly by a file below it) replaced by a
        // symlink, then a hard link through it.
        let msg = refused(&[
            ("linux-headers-t/", T::Directory, ""),
            ("linux-headers-t/d/shadow", T::Regular, "x"),
            ("linux-headers-t/d", T::Symlink, "/etc"),
            ("linux-headers-t/x", T::Link, "linux-headers-t/d/shadow"),
        ]);
        assert!(msg.contains("changes the kind"), "{msg}");
        // The same kind twice is fine (a later file replaces the earlier).
        let ok = walked(&tarball(&[
            ("linux-headers-t/", T::Directory, ""),
            ("linux-headers-t/f", T::Regular, "1"),
            ("linux-headers-t/f", T::Regular, "2"),
        ]))
        .unwrap();
        assert_eq!(ok.len(), 2);
    }

    #[test]
    fn dot_entries_are_skipped_and_only_a_linux_headers_folder_is_stripped() {
        let t = tarball(&[
            ("./", T::Directory, ""),
            ("./linux-headers-6.1.0/", T::Directory, ""),
            ("./linux-headers-6.1.0/Makefile", T::Regular, "x"),
        ]);
        let mut top = None;
        let s = walk(t.as_slice(), &Limits::default(), |e, _| {
            top.get_or_insert(e.path.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(s.top.as_deref(), Some("linux-headers-6.1.0"));
        assert_eq!(top.as_deref(), Some("Makefile"));
        let flat = walked(&tarball(&[
            ("scripts/", T::Directory, ""),
            ("Makefile", T::Regular, ""),
        ]))
        .unwrap();
        let paths: Vec<&str> = flat.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["scripts", "Makefile"]);
    }

    #[test]
    fn bounds_hold() {
        let t = tarball(&[
            ("linux-headers-t/", T::Directory, ""),
            ("linux-headers-t/a", T::Regular, "abc"),
        ]);
        let few = Limits {
            max_bytes: 1 << 20,
            max_entries: 1,
        };
        let e = walk(t.as_slice(), &few, |_, _| Ok(())).unwrap_err();
        assert!(e.to_string().contains("entry count"), "{e}");
        let small = Limits {
            max_bytes: 600,
            max_entries: 10,
        };
        let e = walk(t.as_slice(), &small, |_, r| {
            io::copy(r, &mut io::sink()).map(drop)
        });
        assert!(matches!(e, Err(HeadersError::TooLarge { .. })), "{e:?}");
    }

    #[test]
    fn a_tar_stream_cut_inside_a_file_is_an_error_not_a_short_file() {
        let gz = tarball(&[
            ("linux-headers-t/", T::Directory, ""),
            ("linux-headers-t/a", T::Regular, "0123456789"),
        ]);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut tar)
            .unwrap();
        // Header blocks are 512 bytes: cut 6 bytes into a's data.
        let cut = &tar[..512 * 2 + 6];
        let e = walk_tar(cut, &Limits::default(), |_, r| {
            io::copy(r, &mut io::sink()).map(drop)
        })
        .unwrap_err();
        assert!(matches!(e, HeadersError::Visit { .. }), "{e:?}");
        let chain = crate::log::error_chain(&e);
        assert!(chain.contains("ends 4 bytes into"), "{chain}");
    }

    #[test]
    fn corrupt_and_empty_tarballs_are_errors() {
        let t = tarball(&[
            ("linux-headers-t/", T::Directory, ""),
            ("linux-headers-t/a", T::Regular, "abc"),
        ]);
        assert!(matches!(
            walked(&t[..t.len() / 2]),
            Err(HeadersError::Read(_))
        ));
        assert!(matches!(walked(b"not gzip"), Err(HeadersError::Read(_))));
        let only_top = tarball(&[("linux-headers-t/", T::Directory, "")]);
        assert!(matches!(walked(&only_top), Err(HeadersError::Empty)));
    }
}
