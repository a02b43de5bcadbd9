//! Tarball bundles (tar, tar.gz, tar.zst) unpacked with no way out: no
//! absolute paths, no `..`, nothing written through a symlink, symlinks and
//! hard links that resolve inside the bundle (links through links included),
//! no devices, FIFOs or sockets, setuid/setgid bits dropped, bounded size and
//! entry count. The caller unpacks into a staging folder it removes on error.

use super::error::{Result, SystemError};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// How a bundle is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// Plain tar.
    Tar,
    /// tar.gz.
    Gzip,
    /// tar.zst.
    Zstd,
}

/// Limits of one bundle.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of file content in all.
    pub bytes: u64,
    /// Entries in all.
    pub entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            bytes: 4 << 30,
            entries: 200_000,
        }
    }
}

impl Limits {
    /// The bounds of one container image's layers, all together.
    pub const IMAGE: Limits = Limits {
        bytes: 64 << 30,
        entries: 4_000_000,
    };
}

/// Unpacks `bundle` into `dest` (an empty folder).
pub fn extract(bundle: &Path, packing: Packing, dest: &Path, limits: Limits) -> Result<()> {
    let name = bundle.display().to_string();
    let f = File::open(bundle).map_err(|e| SystemError::io(bundle, e))?;
    let reader: Box<dyn Read> = match packing {
        Packing::Tar => Box::new(f),
        Packing::Gzip => Box::new(flate2::read::GzDecoder::new(f)),
        Packing::Zstd => Box::new(zstd::Decoder::new(f).map_err(|source| SystemError::Bundle {
            bundle: name.clone(),
            source,
        })?),
    };
    extract_from(reader, &name, dest, limits)
}

/// Unpacks a tar stream into `dest`; `name` names the bundle in errors.
pub fn extract_from(reader: impl Read, name: &str, dest: &Path, limits: Limits) -> Result<()> {
    let mut u = Unpacker {
        name,
        dest,
        limits,
        bytes: 0,
        links: Vec::new(),
    };
    let mut archive = tar::Archive::new(reader);
    let bad = |source| SystemError::Bundle {
        bundle: name.to_string(),
        source,
    };
    for (n, entry) in archive.entries().map_err(bad)?.enumerate() {
        if n as u64 >= limits.entries {
            return Err(SystemError::TooLarge {
                what: format!("bundle {name}: entries"),
                limit: limits.entries,
            });
        }
        u.entry(entry.map_err(bad)?)?;
    }
    u.check_links()
}

/// A tar entry name as normal components (`./` dropped), or why it cannot
/// be one: a NUL, a `..` component, an absolute path.
pub fn relative_path(raw: &str) -> std::result::Result<PathBuf, &'static str> {
    if raw.contains('\0') {
        return Err("a NUL in the path");
    }
    let mut rel = PathBuf::new();
    for c in Path::new(raw).components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("a `..` component"),
            Component::RootDir | Component::Prefix(_) => return Err("an absolute path"),
        }
    }
    Ok(rel)
}

struct Unpacker<'a> {
    name: &'a str,
    dest: &'a Path,
    limits: Limits,
    bytes: u64,
    /// Symlinks made, checked once every entry is in place.
    links: Vec<(PathBuf, String)>,
}

impl Unpacker<'_> {
    fn refuse(&self, entry: &str, reason: &'static str) -> SystemError {
        SystemError::UnsafeEntry {
            bundle: self.name.to_string(),
            entry: entry.to_string(),
            reason,
        }
    }

    fn entry<R: Read>(&mut self, mut e: tar::Entry<'_, R>) -> Result<()> {
        let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let rel = self.relative(&raw)?;
        let kind = e.header().entry_type();
        if rel.as_os_str().is_empty() {
            return if kind.is_dir() {
                Ok(())
            } else {
                Err(self.refuse(&raw, "not a folder but names the bundle's root"))
            };
        }
        self.make_parents(&raw, &rel)?;
        let path = self.dest.join(&rel);
        let mode = e.header().mode().unwrap_or(0o644) & 0o755;
        match kind {
            tar::EntryType::Directory => self.dir(&raw, &path, mode),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.file(&raw, &path, mode, &mut e)
            }
            tar::EntryType::Symlink => self.symlink(&raw, &rel, &e),
            tar::EntryType::Link => self.hard_link(&raw, &path, &e),
            tar::EntryType::Char | tar::EntryType::Block => Err(self.refuse(&raw, "a device node")),
            tar::EntryType::Fifo => Err(self.refuse(&raw, "a FIFO")),
            _ => Err(self.refuse(&raw, "an entry type a bundle may not hold")),
        }
    }

    /// The entry's path as normal components (`./` dropped).
    fn relative(&self, raw: &str) -> Result<PathBuf> {
        relative_path(raw).map_err(|reason| self.refuse(raw, reason))
    }

    /// Creates the entry's parent folders, refusing to pass through anything
    /// that is not a real folder (a symlink above all).
    fn make_parents(&self, raw: &str, rel: &Path) -> Result<()> {
        let mut cur = self.dest.to_path_buf();
        let parents: Vec<_> = rel.components().collect();
        for c in &parents[..parents.len().saturating_sub(1)] {
            cur.push(c);
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(self.refuse(raw, "a path through a symlink or a file")),
                Err(_) => std::fs::create_dir(&cur).map_err(|e| SystemError::io(&cur, e))?,
            }
        }
        Ok(())
    }

    fn dir(&self, raw: &str, path: &Path, mode: u32) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(self.refuse(raw, "a folder over an existing entry")),
            Err(_) => std::fs::create_dir(path).map_err(|e| SystemError::io(path, e))?,
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o700))
            .map_err(|e| SystemError::io(path, e))
    }

    fn file(&mut self, raw: &str, path: &Path, mode: u32, body: &mut impl Read) -> Result<()> {
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(mode)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => self.refuse(raw, "a second entry of one path"),
                _ => SystemError::io(path, e),
            })?;
        let room = self.limits.bytes.saturating_sub(self.bytes);
        let n = std::io::copy(&mut body.take(room + 1), &mut out).map_err(|source| {
            SystemError::Bundle {
                bundle: self.name.to_string(),
                source,
            }
        })?;
        if n > room {
            return Err(SystemError::TooLarge {
                what: format!("bundle {}", self.name),
                limit: self.limits.bytes,
            });
        }
        self.bytes += n;
        Ok(())
    }

    fn link_target<R: Read>(&self, raw: &str, e: &tar::Entry<'_, R>) -> Result<String> {
        match e.link_name_bytes() {
            Some(t) if !t.is_empty() && !t.contains(&0) => {
                Ok(String::from_utf8_lossy(&t).into_owned())
            }
            _ => Err(self.refuse(raw, "a link without a target")),
        }
    }

    fn symlink<R: Read>(&mut self, raw: &str, rel: &Path, e: &tar::Entry<'_, R>) -> Result<()> {
        let target = self.link_target(raw, e)?;
        if target.starts_with('/') {
            return Err(self.refuse(raw, "a symlink to an absolute path"));
        }
        let path = self.dest.join(rel);
        std::os::unix::fs::symlink(&target, &path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => self.refuse(raw, "a second entry of one path"),
            _ => SystemError::io(&path, e),
        })?;
        self.links.push((rel.to_path_buf(), raw.to_string()));
        // Refused now when it leaves the bundle on its own; links through
        // links made later are checked once every entry is in.
        self.confined(raw, rel)
    }

    fn hard_link<R: Read>(&mut self, raw: &str, path: &Path, e: &tar::Entry<'_, R>) -> Result<()> {
        let target = self.link_target(raw, e)?;
        let rel = self
            .relative(&target)
            .map_err(|_| self.refuse(raw, "a hard link to a path outside the bundle"))?;
        // Every folder on the way must be a real one (no symlink to follow).
        if let Some(p) = rel.parent() {
            self.no_symlink_on_the_way(raw, p)?;
        }
        let src = self.dest.join(&rel);
        if !std::fs::symlink_metadata(&src).is_ok_and(|m| m.is_file()) {
            return Err(self.refuse(raw, "a hard link to something not a file of the bundle"));
        }
        std::fs::hard_link(&src, path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => self.refuse(raw, "a second entry of one path"),
            _ => SystemError::io(path, e),
        })
    }

    fn no_symlink_on_the_way(&self, raw: &str, rel: &Path) -> Result<()> {
        let mut cur = self.dest.to_path_buf();
        for c in rel.components() {
            cur.push(c);
            if !std::fs::symlink_metadata(&cur).is_ok_and(|m| m.is_dir()) {
                return Err(self.refuse(raw, "a hard link through a symlink"));
            }
        }
        Ok(())
    }

    fn check_links(&self) -> Result<()> {
        for (rel, raw) in &self.links {
            self.confined(raw, rel)?;
        }
        Ok(())
    }

    /// Resolves `rel` inside the bundle as the kernel would (following
    /// symlinks, at most 40) and refuses it if it ever climbs above the root.
    fn confined(&self, raw: &str, rel: &Path) -> Result<()> {
        let escape = || self.refuse(raw, "a symlink that leads out of the bundle");
        let mut queue: Vec<String> = components(rel).into_iter().rev().collect();
        let mut stack: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(c) = queue.pop() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    stack.pop().ok_or_else(escape)?;
                    continue;
                }
                _ => {}
            }
            let here: PathBuf = stack.iter().chain(std::iter::once(&c)).collect();
            let full = self.dest.join(&here);
            match std::fs::read_link(&full) {
                Ok(t) => {
                    hops += 1;
                    if hops > 40 || t.is_absolute() {
                        return Err(escape());
                    }
                    queue.extend(components(&t).into_iter().rev());
                }
                Err(_) => stack.push(c),
            }
        }
        Ok(())
    }
}

fn components(p: &Path) -> Vec<String> {
    p.to_string_lossy().split('/').map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar header with `name` written as is (the tar crate's own setters
    /// refuse `..` and absolute names).
    fn raw_header(name: &str, kind: tar::EntryType, link: &str, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(0o4755);
        h.set_size(size);
        h.set_cksum();
        h
    }

    fn tarball(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, link, data) in entries {
            let h = raw_header(name, *kind, link, data.len() as u64);
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn unpack(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> (tempfile::TempDir, Result<()>) {
        let d = tempfile::tempdir().unwrap();
        let bytes = tarball(entries);
        let r = extract_from(&bytes[..], "t.tar", d.path(), Limits::default());
        (d, r)
    }

    use tar::EntryType as T;

    #[test]
    fn a_good_bundle_unpacks_without_setuid() {
        use std::os::unix::fs::PermissionsExt;
        let (d, r) = unpack(&[
            ("./dir/", T::Directory, "", b""),
            ("dir/vmlinux", T::Regular, "", b"ELF"),
            ("dir/hard", T::Link, "dir/vmlinux", b""),
            ("dir/sym", T::Symlink, "vmlinux", b""),
            ("up", T::Symlink, "dir/../dir/sym", b""),
        ]);
        r.unwrap();
        let p = d.path().join("dir/vmlinux");
        assert_eq!(std::fs::read(&p).unwrap(), b"ELF");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o755
        );
        assert_eq!(std::fs::read(d.path().join("dir/hard")).unwrap(), b"ELF");
        assert_eq!(std::fs::read(d.path().join("up")).unwrap(), b"ELF");
    }

    #[test]
    fn escapes_and_special_files_are_refused() {
        type Case<'a> = (Vec<(&'a str, T, &'a str, &'a [u8])>, &'a str);
        let cases: Vec<Case> = vec![
            (vec![("../x", T::Regular, "", b"x")], "`..`"),
            (vec![("a/../../x", T::Regular, "", b"x")], "`..`"),
            (vec![("/etc/x", T::Regular, "", b"x")], "absolute path"),
            (
                vec![("l", T::Symlink, "../../etc", b"")],
                "out of the bundle",
            ),
            (vec![("l", T::Symlink, "/etc", b"")], "absolute path"),
            (
                vec![
                    ("d/", T::Directory, "", b""),
                    ("d/l1", T::Symlink, "..", b""),
                    ("l2", T::Symlink, "d/l1/..", b""),
                ],
                "out of the bundle",
            ),
            (
                vec![("l", T::Symlink, ".", b""), ("l/x", T::Regular, "", b"x")],
                "through a symlink",
            ),
            (
                vec![("h", T::Link, "../etc/passwd", b"")],
                "outside the bundle",
            ),
            (
                vec![("h", T::Link, "/etc/passwd", b"")],
                "outside the bundle",
            ),
            (
                vec![("l", T::Symlink, ".", b""), ("h", T::Link, "l/x", b"")],
                "through a symlink",
            ),
            (vec![("dev", T::Char, "", b"")], "device"),
            (vec![("blk", T::Block, "", b"")], "device"),
            (vec![("p", T::Fifo, "", b"")], "FIFO"),
            (
                vec![("f", T::Regular, "", b"a"), ("f", T::Regular, "", b"b")],
                "second entry",
            ),
        ];
        for (entries, want) in cases {
            let (_d, r) = unpack(&entries);
            let e = r.unwrap_err().to_string();
            assert!(e.contains(want), "{entries:?}: {e}");
        }
    }

    #[test]
    fn size_and_count_are_bounded() {
        let d = tempfile::tempdir().unwrap();
        let bytes = tarball(&[("f", T::Regular, "", &[0u8; 100])]);
        let small = Limits {
            bytes: 99,
            entries: 10,
        };
        assert!(matches!(
            extract_from(&bytes[..], "t", d.path(), small),
            Err(SystemError::TooLarge { .. })
        ));
        let d = tempfile::tempdir().unwrap();
        let few = Limits {
            bytes: 1000,
            entries: 0,
        };
        assert!(extract_from(&bytes[..], "t", d.path(), few).is_err());
    }
}
