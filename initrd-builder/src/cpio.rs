//! The newc ("070701") cpio format: a deterministic writer and a strict reader.
//!
//! The writer emits every parent directory (the kernel's unpacker creates none),
//! sorts entries by path component, numbers inodes in output order from 1, and
//! writes uid/gid 0, one fixed mtime, and only the permission bits it was given.

use std::collections::BTreeMap;

/// Errors of building or parsing a newc archive.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// A path that is empty, relative to nothing, has `.`/`..`/empty components,
    /// or is or lies under `/TRAILER!!!` (which would end the archive).
    #[error("invalid archive path {0:?}")]
    InvalidPath(String),
    /// Two entries with the same path.
    #[error("duplicate entry {0}")]
    Duplicate(String),
    /// A non-directory entry is also used as a parent directory.
    #[error("{0} is not a directory but has entries below it")]
    NotADirectory(String),
    /// A field that does not fit the format's 32-bit fields.
    #[error("entry {0} is too large for the newc format")]
    TooLarge(String),
    /// An entry name that is not UTF-8 (shown escaped).
    #[error("entry name \"{name}\" at offset {offset} is not UTF-8")]
    NonUtf8Name {
        /// Byte offset of the record.
        offset: usize,
        /// The name, invalid bytes as `\xNN`.
        name: String,
    },
    /// The input is not a well-formed newc archive.
    #[error("malformed cpio archive at offset {offset}: {reason}")]
    Malformed {
        /// Byte offset of the bad header.
        offset: usize,
        /// What was wrong.
        reason: String,
    },
}

/// What an archive entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file with its contents.
    File(Vec<u8>),
    /// A symbolic link with its target.
    Symlink(String),
    /// A character device node.
    CharDev {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A block device node.
    BlockDev {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
}

impl EntryKind {
    /// The file-type bits of `st_mode` for this kind.
    pub fn type_bits(&self) -> u32 {
        match self {
            EntryKind::Dir => 0o040000,
            EntryKind::File(_) => 0o100000,
            EntryKind::Symlink(_) => 0o120000,
            EntryKind::CharDev { .. } => 0o020000,
            EntryKind::BlockDev { .. } => 0o060000,
        }
    }

    /// A short name: `dir`, `file`, `symlink`, `chardev` or `blockdev`.
    pub fn name(&self) -> &'static str {
        match self {
            EntryKind::Dir => "dir",
            EntryKind::File(_) => "file",
            EntryKind::Symlink(_) => "symlink",
            EntryKind::CharDev { .. } => "chardev",
            EntryKind::BlockDev { .. } => "blockdev",
        }
    }

    /// The bytes stored as the entry's data (file contents or link target).
    pub fn data(&self) -> &[u8] {
        match self {
            EntryKind::File(d) => d,
            EntryKind::Symlink(t) => t.as_bytes(),
            _ => &[],
        }
    }
}

/// One entry of an archive. `path` is absolute (`/usr/bin/x`); `mode` holds only
/// permission bits (`0o7777`), the type comes from `kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Absolute, normalised path inside the archive.
    pub path: String,
    /// Permission bits (masked with `0o7777`).
    pub mode: u32,
    /// Type and payload.
    pub kind: EntryKind,
}

impl Entry {
    /// A directory with the given permission bits.
    pub fn dir(path: &str, mode: u32) -> Self {
        Self::new(path, mode, EntryKind::Dir)
    }

    /// A regular file.
    pub fn file(path: &str, mode: u32, data: Vec<u8>) -> Self {
        Self::new(path, mode, EntryKind::File(data))
    }

    /// A symlink (mode 0777, as the kernel and GNU cpio expect).
    pub fn symlink(path: &str, target: &str) -> Self {
        Self::new(path, 0o777, EntryKind::Symlink(target.to_string()))
    }

    /// A character device node.
    pub fn char_dev(path: &str, mode: u32, major: u32, minor: u32) -> Self {
        Self::new(path, mode, EntryKind::CharDev { major, minor })
    }

    fn new(path: &str, mode: u32, kind: EntryKind) -> Self {
        Entry {
            path: path.to_string(),
            mode: mode & 0o7777,
            kind,
        }
    }

    /// The full `st_mode` (type bits and permission bits).
    pub fn st_mode(&self) -> u32 {
        self.kind.type_bits() | (self.mode & 0o7777)
    }
}

/// Checks and normalises an archive path: returns its components.
pub fn path_components(path: &str) -> Result<Vec<&str>, CpioError> {
    let invalid = || CpioError::InvalidPath(path.to_string());
    let rest = path.strip_prefix('/').ok_or_else(invalid)?;
    if rest.is_empty() || path.contains('\0') {
        return Err(invalid());
    }
    let parts: Vec<&str> = rest.split('/').collect();
    // An entry named like the trailer would end the archive for every reader,
    // the kernel's included, hiding what follows it; so would the implicit
    // parent directory of `/TRAILER!!!/x`.
    if parts[0] == TRAILER
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(invalid());
    }
    Ok(parts)
}

/// A set of entries that becomes one archive.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<Vec<String>, Entry>,
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry; its missing parent directories are added (mode 0755) when the
    /// archive is written. Fails on an invalid path or a duplicate (except an
    /// identical directory).
    pub fn add(&mut self, entry: Entry) -> Result<(), CpioError> {
        let key: Vec<String> = path_components(&entry.path)?
            .into_iter()
            .map(str::to_string)
            .collect();
        if let Some(old) = self.entries.get(&key) {
            if old == &entry && entry.kind == EntryKind::Dir {
                return Ok(());
            }
            return Err(CpioError::Duplicate(entry.path));
        }
        self.entries.insert(key, entry);
        Ok(())
    }

    /// The entries in output order, with implicit parents filled in.
    pub fn entries(&self) -> Result<Vec<Entry>, CpioError> {
        let mut all = self.entries.clone();
        for key in self.entries.keys() {
            for n in 1..key.len() {
                let parent = &key[..n];
                match all.get(parent) {
                    Some(p) if p.kind != EntryKind::Dir => {
                        return Err(CpioError::NotADirectory(p.path.clone()));
                    }
                    Some(_) => {}
                    None => {
                        let path = format!("/{}", parent.join("/"));
                        all.insert(parent.to_vec(), Entry::dir(&path, 0o755));
                    }
                }
            }
        }
        Ok(all.into_values().collect())
    }

    /// Writes the archive in newc format with every mtime set to `mtime`.
    pub fn write(&self, mtime: u32) -> Result<Vec<u8>, CpioError> {
        let entries = self.entries()?;
        let mut out = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let ino = u32::try_from(i + 1).map_err(|_| CpioError::TooLarge(e.path.clone()))?;
            write_entry(&mut out, e, ino, mtime)?;
        }
        write_trailer(&mut out);
        Ok(out)
    }
}

/// Header fields of one newc record, in on-disk order after the magic.
struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdev: (u32, u32),
    namesize: u32,
}

fn write_header(out: &mut Vec<u8>, h: &Header, name: &[u8]) {
    let fields = [
        h.ino, h.mode, 0, 0, h.nlink, h.mtime, h.filesize, 0, 0, h.rdev.0, h.rdev.1, h.namesize, 0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name);
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn write_entry(out: &mut Vec<u8>, e: &Entry, ino: u32, mtime: u32) -> Result<(), CpioError> {
    let too_large = || CpioError::TooLarge(e.path.clone());
    let name = e.path.trim_start_matches('/').as_bytes();
    let data = e.kind.data();
    let rdev = match e.kind {
        EntryKind::CharDev { major, minor } | EntryKind::BlockDev { major, minor } => {
            (major, minor)
        }
        _ => (0, 0),
    };
    let header = Header {
        ino,
        mode: e.st_mode(),
        nlink: if e.kind == EntryKind::Dir { 2 } else { 1 },
        mtime,
        filesize: u32::try_from(data.len()).map_err(|_| too_large())?,
        rdev,
        namesize: u32::try_from(name.len() + 1).map_err(|_| too_large())?,
    };
    write_header(out, &header, name);
    out.extend_from_slice(data);
    pad4(out);
    Ok(())
}

fn write_trailer(out: &mut Vec<u8>) {
    let name = b"TRAILER!!!";
    let h = Header {
        ino: 0,
        mode: 0,
        nlink: 1,
        mtime: 0,
        filesize: 0,
        rdev: (0, 0),
        namesize: (name.len() + 1) as u32,
    };
    write_header(out, &h, name);
}

/// One record read back from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// Name as stored (no leading `/`).
    pub name: String,
    /// Full `st_mode`.
    pub mode: u32,
    /// Inode number.
    pub ino: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// Modification time.
    pub mtime: u32,
    /// Device numbers of a device node.
    pub rdev: (u32, u32),
    /// File contents or link target.
    pub data: Vec<u8>,
}

impl RawEntry {
    /// The file-type name of `mode` (`dir`, `file`, `symlink`, `chardev`, `blockdev`,
    /// or `other`).
    pub fn kind_name(&self) -> &'static str {
        match self.mode & 0o170000 {
            0o040000 => "dir",
            0o100000 => "file",
            0o120000 => "symlink",
            0o020000 => "chardev",
            0o060000 => "blockdev",
            _ => "other",
        }
    }
}

/// Name of the record that ends an archive.
pub const TRAILER: &str = "TRAILER!!!";

/// Parses newc archives laid back to back in `bytes` (each up to its trailer,
/// NUL padding between them, as the kernel reads an uncompressed region) and
/// returns the entries of all of them. Anything else is an error.
pub fn read(bytes: &[u8]) -> Result<Vec<RawEntry>, CpioError> {
    let mut pos = 0;
    let mut entries = Vec::new();
    while pos < bytes.len() {
        if bytes[pos] == 0 {
            pos += 1;
            continue;
        }
        if !pos.is_multiple_of(4) {
            return Err(malformed(
                pos,
                "archive does not start on a 4-byte boundary",
            ));
        }
        let (found, end) = read_archive(bytes, pos)?;
        entries.extend(found);
        pos = end;
    }
    if entries.is_empty() && !bytes.iter().any(|&b| b != 0) {
        return Err(malformed(0, "no archive"));
    }
    Ok(entries)
}

/// Parses the one newc archive at `start` (a multiple of 4) up to and including
/// its trailer; returns its entries and the offset just past the trailer.
pub fn read_archive(bytes: &[u8], start: usize) -> Result<(Vec<RawEntry>, usize), CpioError> {
    let mut pos = start;
    let mut entries = Vec::new();
    loop {
        let (entry, next) = read_record(bytes, pos)?;
        if entry.name == TRAILER {
            return Ok((entries, next));
        }
        entries.push(entry);
        pos = next;
    }
}

fn malformed(offset: usize, reason: &str) -> CpioError {
    CpioError::Malformed {
        offset,
        reason: reason.to_string(),
    }
}

fn parse_fields(bytes: &[u8], pos: usize) -> Result<[u32; 13], CpioError> {
    let head = pos
        .checked_add(110)
        .and_then(|end| bytes.get(pos..end))
        .ok_or_else(|| malformed(pos, "truncated header"))?;
    if &head[..6] != b"070701" && &head[..6] != b"070702" {
        return Err(malformed(pos, "bad magic"));
    }
    let mut fields = [0u32; 13];
    for (i, f) in fields.iter_mut().enumerate() {
        let hex = std::str::from_utf8(&head[6 + i * 8..14 + i * 8])
            .map_err(|_| malformed(pos, "non-ascii header field"))?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed(pos, "bad header field"));
        }
        *f = u32::from_str_radix(hex, 16).map_err(|_| malformed(pos, "bad header field"))?;
    }
    Ok(fields)
}

fn align4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

fn slice(bytes: &[u8], start: usize, len: usize) -> Option<&[u8]> {
    bytes.get(start..start.checked_add(len)?)
}

fn read_record(bytes: &[u8], pos: usize) -> Result<(RawEntry, usize), CpioError> {
    let f = parse_fields(bytes, pos)?;
    let name_start = pos + 110;
    let name =
        slice(bytes, name_start, f[11] as usize).ok_or_else(|| malformed(pos, "truncated name"))?;
    let name = match name.split_last() {
        Some((0, n)) => String::from_utf8(n.to_vec()).map_err(|_| CpioError::NonUtf8Name {
            offset: pos,
            name: escape_bytes(n),
        })?,
        _ => return Err(malformed(pos, "name not NUL-terminated")),
    };
    let data_start = align4(name_start + f[11] as usize);
    let data =
        slice(bytes, data_start, f[6] as usize).ok_or_else(|| malformed(pos, "truncated data"))?;
    let entry = RawEntry {
        name,
        ino: f[0],
        mode: f[1],
        uid: f[2],
        gid: f[3],
        nlink: f[4],
        mtime: f[5],
        rdev: (f[9], f[10]),
        data: data.to_vec(),
    };
    // The padding after the last record may be missing at the end of the
    // input: the next record (if any) starts at most at the end.
    Ok((entry, align4(data_start + data.len()).min(bytes.len())))
}

/// Why an entry name read from an archive is unsafe to trust: the kernel
/// unpacks it relative to `/` anyway, but it is not the path it seems to be
/// and no builder writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NameIssue {
    /// The name starts with `/`.
    Absolute,
    /// A `..` component.
    DotDot,
}

impl NameIssue {
    /// A short description.
    pub fn describe(self) -> &'static str {
        match self {
            NameIssue::Absolute => "absolute name",
            NameIssue::DotDot => "'..' component",
        }
    }
}

/// Flags an entry name (as stored, without a leading `/` normally) that is
/// absolute or has a `..` component.
pub fn name_issue(name: &str) -> Option<NameIssue> {
    if name.starts_with('/') {
        Some(NameIssue::Absolute)
    } else if name.split('/').any(|c| c == "..") {
        Some(NameIssue::DotDot)
    } else {
        None
    }
}

/// `s` with every control and non-printable character escaped (`\n`, `\t`,
/// `\r`, `\x1b`, `\u{202e}`) and `\` doubled, so that text read from an
/// archive can be printed on a terminal without forging lines or escape codes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        escape_char(c, &mut out);
    }
    out
}

/// Like [`escape`] for bytes: invalid UTF-8 bytes become `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        chunk.valid().chars().for_each(|c| escape_char(c, &mut out));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn escape_char(c: char, out: &mut String) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        ' ' | '"' | '\'' => out.push(c),
        c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
        // Printable characters are their own debug escape; the others (C1
        // controls, bidi overrides, unassigned, ...) become `\u{...}`.
        c => out.extend(c.escape_debug()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_emitted_and_sorted() {
        let mut a = Archive::new();
        a.add(Entry::file("/usr/local/bin/x", 0o755, b"hi".to_vec()))
            .unwrap();
        a.add(Entry::file("/init", 0o755, vec![])).unwrap();
        a.add(Entry::file("/usr-x", 0o644, vec![])).unwrap();
        let names: Vec<String> = a.entries().unwrap().into_iter().map(|e| e.path).collect();
        assert_eq!(
            names,
            [
                "/init",
                "/usr",
                "/usr/local",
                "/usr/local/bin",
                "/usr/local/bin/x",
                "/usr-x"
            ]
        );
    }

    #[test]
    fn round_trip() {
        let mut a = Archive::new();
        a.add(Entry::file("/a/b", 0o100644, b"hello".to_vec()))
            .unwrap();
        a.add(Entry::symlink("/a/l", "b")).unwrap();
        a.add(Entry::char_dev("/dev/null", 0o666, 1, 3)).unwrap();
        let bytes = a.write(42).unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let r = read(&bytes).unwrap();
        let names: Vec<&str> = r.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "a/b", "a/l", "dev", "dev/null"]);
        assert_eq!(r[1].mode, 0o100644);
        assert_eq!(r[1].data, b"hello");
        assert_eq!(r[2].data, b"b");
        assert_eq!(r[2].mode, 0o120777);
        assert_eq!(r[4].rdev, (1, 3));
        assert!(r.iter().all(|e| e.mtime == 42 && e.uid == 0 && e.gid == 0));
        let inos: Vec<u32> = r.iter().map(|e| e.ino).collect();
        assert_eq!(inos, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn header_layout_is_exact() {
        let mut a = Archive::new();
        a.add(Entry::file("/x", 0o644, b"abc".to_vec())).unwrap();
        let bytes = a.write(0).unwrap();
        let head = std::str::from_utf8(&bytes[..110]).unwrap();
        let fields = [1, 0o100644, 0, 0, 1, 0, 3, 0, 0, 0, 0, 2, 0];
        let expected: String = fields.iter().map(|f| format!("{f:08X}")).collect();
        assert_eq!(head, format!("070701{expected}"));
        assert!(head.starts_with("07070100000001000081A4"));
        assert_eq!(&bytes[110..112], b"x\0");
        assert_eq!(&bytes[112..115], b"abc");
        assert_eq!(bytes[115], 0);
    }

    #[test]
    fn rejects_bad_paths_and_conflicts() {
        let mut a = Archive::new();
        for p in [
            "",
            "x",
            "/",
            "/a//b",
            "/a/../b",
            "/a/./b",
            "/a/",
            "/TRAILER!!!",
            "/TRAILER!!!/c",
        ] {
            assert!(a.add(Entry::dir(p, 0o755)).is_err(), "{p}");
        }
        a.add(Entry::file("/f", 0o644, vec![])).unwrap();
        assert!(matches!(
            a.add(Entry::file("/f", 0o644, vec![])),
            Err(CpioError::Duplicate(_))
        ));
        a.add(Entry::file("/f/g", 0o644, vec![])).unwrap();
        assert!(matches!(a.write(0), Err(CpioError::NotADirectory(_))));
    }

    #[test]
    fn reader_rejects_garbage() {
        assert!(read(b"").is_err());
        assert!(read(b"070701zzzz").is_err());
        let mut a = Archive::new();
        a.add(Entry::file("/x", 0o644, b"abc".to_vec())).unwrap();
        let bytes = a.write(0).unwrap();
        for cut in [1, 50, 111, 113, bytes.len() - 1] {
            assert!(read(&bytes[..cut]).is_err(), "cut {cut}");
        }
    }

    /// A newc record with any name (the writer refuses such names).
    fn record(name: &[u8], mode: u32, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let h = Header {
            ino: 1,
            mode,
            nlink: 1,
            mtime: 0,
            filesize: data.len() as u32,
            rdev: (0, 0),
            namesize: name.len() as u32 + 1,
        };
        write_header(&mut out, &h, name);
        out.extend_from_slice(data);
        pad4(&mut out);
        out
    }

    #[test]
    fn archives_back_to_back_are_all_read() {
        let mut a = Archive::new();
        a.add(Entry::file("/x", 0o644, b"abc".to_vec())).unwrap();
        let one = a.write(0).unwrap();
        let (entries, end) = read_archive(&one, 0).unwrap();
        assert_eq!((entries.len(), end), (1, one.len()));
        let two = [one.clone(), vec![0; 12], one.clone()].concat();
        assert_eq!(read(&two).unwrap().len(), 2);
        assert!(read(&[one.clone(), b"junk".to_vec()].concat()).is_err());
        assert!(read(&[one, vec![0], b"070701".to_vec()].concat()).is_err());
    }

    #[test]
    fn unpadded_end_is_the_end() {
        // A trailer with one byte of data and no padding after it.
        let bytes = record(b"TRAILER!!!", 0, b"x");
        let cut = &bytes[..bytes.len() - 3];
        assert_eq!(read_archive(cut, 0).unwrap(), (vec![], cut.len()));
    }

    #[test]
    fn odd_names_are_escaped_and_flagged() {
        assert_eq!(
            escape("a\nb\x1b[31m\\c\t\u{202e}é"),
            "a\\nb\\x1b[31m\\\\c\\t\\u{202e}é"
        );
        assert_eq!(escape_bytes(b"ok\xff\x7f"), "ok\\xff\\x7f");
        assert_eq!(name_issue("etc/x"), None);
        assert_eq!(name_issue("./etc/x"), None);
        assert_eq!(name_issue("../etc/x"), Some(NameIssue::DotDot));
        assert_eq!(name_issue("a/../../x"), Some(NameIssue::DotDot));
        assert_eq!(name_issue("/etc/x"), Some(NameIssue::Absolute));
        let bytes = [
            record(b"bad\xffname", 0o100644, b""),
            record(b"TRAILER!!!", 0, b""),
        ]
        .concat();
        let err = read(&bytes).unwrap_err();
        assert!(
            matches!(err, CpioError::NonUtf8Name { offset: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("bad\\xffname"), "{err}");
    }
}
