//! Image layers applied in order to a folder, as a container runtime does:
//! whiteouts (`.wh.NAME`) delete from lower layers, an opaque marker
//! (`.wh..wh..opq`) empties a folder of what lower layers put there; regular
//! files, folders, symlinks, hard links and FIFOs keep their mode (setuid
//! included), owner and mtime. Nothing can land outside the folder: every
//! path is resolved inside it (a symlink on the way is followed as the guest
//! would see it; one that climbs above the root is refused), the last component is never
//! followed, and a hard link must name a file inside. Device nodes are
//! refused (an image brings none), and sizes are bounded. Extended
//! attributes (PAX `SCHILY.xattr.*`) in the `user.` namespace and file
//! capabilities (`security.capability`) are kept where the filesystem keeps
//! them; other namespaces (`trusted.`, overlayfs's, SELinux labels) are not.

use crate::system::error::{Result, SystemError};
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Bounds of one image (all its layers): the bundles' type, with
/// [`Limits::IMAGE`] as the image default.
pub use crate::system::bundle::Limits;

/// Applies the layer blobs (tar, tar.gz or tar.zst, told by their magic) to
/// `root`, bottom first.
pub fn apply_layers(root: &Path, layers: &[PathBuf], limits: Limits) -> Result<()> {
    let mut a = Applier {
        root: root.to_path_buf(),
        limits,
        bytes: 0,
        entries: 0,
        name: String::new(),
        this_layer: HashSet::new(),
    };
    for layer in layers {
        a.name = layer
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        a.this_layer.clear();
        let reader = open_layer(layer)?;
        a.apply(reader)?;
    }
    Ok(())
}

fn open_layer(path: &Path) -> Result<Box<dyn Read>> {
    let mut f = std::fs::File::open(path).map_err(|e| SystemError::io(path, e))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(|e| SystemError::io(path, e))?;
    let f = std::fs::File::open(path).map_err(|e| SystemError::io(path, e))?;
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::GzDecoder::new(f)),
        [0x28, 0xb5, 0x2f, 0xfd] => {
            Box::new(zstd::Decoder::new(f).map_err(|e| SystemError::io(path, e))?)
        }
        _ => Box::new(f),
    })
}

struct Applier {
    root: PathBuf,
    limits: Limits,
    bytes: u64,
    entries: u64,
    name: String,
    /// Paths (relative) this layer created: an opaque marker keeps them.
    this_layer: HashSet<PathBuf>,
}

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

impl Applier {
    fn refuse(&self, entry: &str, reason: &'static str) -> SystemError {
        SystemError::UnsafeEntry {
            bundle: format!("layer {}", self.name),
            entry: entry.to_string(),
            reason,
        }
    }

    fn apply(&mut self, reader: Box<dyn Read>) -> Result<()> {
        let mut archive = tar::Archive::new(reader);
        let bad = |source| SystemError::Bundle {
            bundle: format!("layer {}", self.name),
            source,
        };
        let entries = archive.entries().map_err(bad)?;
        for entry in entries {
            let entry = entry.map_err(|source| SystemError::Bundle {
                bundle: format!("layer {}", self.name),
                source,
            })?;
            self.entries += 1;
            if self.entries > self.limits.entries {
                return Err(SystemError::TooLarge {
                    what: "image entries".into(),
                    limit: self.limits.entries,
                });
            }
            self.entry(entry)?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, mut e: tar::Entry<'_, R>) -> Result<()> {
        let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let rel = self.relative(&raw)?;
        let Some(file_name) = rel.file_name().map(|n| n.to_os_string()) else {
            return Ok(()); // the root itself
        };
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let parent = self.resolve_dir(&raw, &parent_rel)?;
        let name = file_name.to_string_lossy().into_owned();
        if name == OPAQUE {
            return self.opaque(&parent, &parent_rel);
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(self.refuse(&raw, "a malformed whiteout"));
            }
            return remove_any(&parent.join(hidden));
        }
        let path = parent.join(&file_name);
        self.this_layer.insert(parent_rel.join(&file_name));
        let xattrs = xattrs_of(&mut e);
        let h = e.header().clone();
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        match h.entry_type() {
            tar::EntryType::Directory => self.dir(&path, mode)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.file(&raw, &path, mode, &mut e)?
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| self.refuse(&raw, "a symlink without a target"))?;
                replace(&path)?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &path)
                    .map_err(|err| SystemError::io(&path, err))?;
            }
            tar::EntryType::Link => self.hard_link(&raw, &path, &e)?,
            tar::EntryType::Fifo => {
                replace(&path)?;
                nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(mode))
                    .map_err(|err| SystemError::io(&path, err.into()))?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(self.refuse(&raw, "a device node (an image brings none)"))
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => return Ok(()),
            _ => return Err(self.refuse(&raw, "an entry type an image may not hold")),
        }
        self.owner_and_time(&path, &h, mode)?;
        if h.entry_type() != tar::EntryType::Symlink {
            set_xattrs(&path, &xattrs)?;
        }
        Ok(())
    }

    fn relative(&self, raw: &str) -> Result<PathBuf> {
        crate::system::bundle::relative_path(raw).map_err(|reason| self.refuse(raw, reason))
    }

    /// The host folder `rel` names inside the root, following symlinks as
    /// the guest would (absolute ones from the root, `..` stopping at the
    /// root); missing folders are created.
    fn resolve_dir(&self, raw: &str, rel: &Path) -> Result<PathBuf> {
        let mut queue: Vec<OsString> = rel.iter().map(|c| c.to_os_string()).rev().collect();
        let mut stack: Vec<OsString> = Vec::new();
        let mut hops = 0;
        while let Some(c) = queue.pop() {
            if c == "." || c.is_empty() {
                continue;
            }
            if c == ".." {
                // A path may not climb above the root (a symlink to
                // `../../..` is how a layer would try to write outside).
                stack
                    .pop()
                    .ok_or_else(|| self.refuse(raw, "a path that leads out of the image"))?;
                continue;
            }
            let here: PathBuf = self
                .root
                .iter()
                .chain(stack.iter().map(|s| s.as_os_str()))
                .chain(std::iter::once(c.as_os_str()))
                .collect();
            match std::fs::symlink_metadata(&here) {
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > 40 {
                        return Err(self.refuse(raw, "a symlink loop on the way"));
                    }
                    let t = std::fs::read_link(&here).map_err(|e| SystemError::io(&here, e))?;
                    if t.is_absolute() {
                        stack.clear();
                    }
                    queue.extend(
                        t.iter()
                            .filter(|c| *c != "/")
                            .map(|c| c.to_os_string())
                            .rev(),
                    );
                }
                Ok(m) if m.is_dir() => stack.push(c),
                Ok(_) => return Err(self.refuse(raw, "a path through a file")),
                Err(_) => {
                    std::fs::create_dir(&here).map_err(|e| SystemError::io(&here, e))?;
                    stack.push(c);
                }
            }
        }
        Ok(self
            .root
            .iter()
            .chain(stack.iter().map(|s| s.as_os_str()))
            .collect())
    }

    /// Empties `dir` of what lower layers put there.
    fn opaque(&self, dir: &Path, rel: &Path) -> Result<()> {
        let rd = std::fs::read_dir(dir).map_err(|e| SystemError::io(dir, e))?;
        for e in rd.flatten() {
            if !self.this_layer.contains(&rel.join(e.file_name())) {
                remove_any(&e.path())?;
            }
        }
        Ok(())
    }

    fn dir(&self, path: &Path, mode: u32) -> Result<()> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                remove_any(path)?;
                std::fs::create_dir(path).map_err(|e| SystemError::io(path, e))?;
            }
            Err(_) => std::fs::create_dir(path).map_err(|e| SystemError::io(path, e))?,
        }
        let _ = mode;
        Ok(())
    }

    fn file(&mut self, raw: &str, path: &Path, mode: u32, body: &mut impl Read) -> Result<()> {
        replace(path)?;
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(path)
            .map_err(|e| SystemError::io(path, e))?;
        let room = self.limits.bytes.saturating_sub(self.bytes);
        let n = std::io::copy(&mut body.take(room + 1), &mut out).map_err(|source| {
            SystemError::Bundle {
                bundle: format!("layer {} ({raw})", self.name),
                source,
            }
        })?;
        if n > room {
            return Err(SystemError::TooLarge {
                what: "image content".into(),
                limit: self.limits.bytes,
            });
        }
        self.bytes += n;
        let _ = mode;
        Ok(())
    }

    fn hard_link<R: Read>(&self, raw: &str, path: &Path, e: &tar::Entry<'_, R>) -> Result<()> {
        let target = e
            .link_name_bytes()
            .ok_or_else(|| self.refuse(raw, "a hard link without a target"))?;
        let t = String::from_utf8_lossy(&target).into_owned();
        let rel = self
            .relative(&t)
            .map_err(|_| self.refuse(raw, "a hard link to a path outside the image"))?;
        let Some(name) = rel.file_name() else {
            return Err(self.refuse(raw, "a hard link to the root"));
        };
        let dir = self.resolve_dir(raw, rel.parent().unwrap_or(Path::new("")))?;
        let src = dir.join(name);
        if !std::fs::symlink_metadata(&src).is_ok_and(|m| m.is_file()) {
            return Err(self.refuse(raw, "a hard link to something not a file of the image"));
        }
        replace(path)?;
        std::fs::hard_link(&src, path).map_err(|err| SystemError::io(path, err))
    }

    /// Owner, mode (after chown, which clears setuid) and mtime; never
    /// following a symlink.
    fn owner_and_time(&self, path: &Path, h: &tar::Header, mode: u32) -> Result<()> {
        use nix::sys::stat::{fchmodat, utimensat, FchmodatFlags, Mode, UtimensatFlags};
        use nix::sys::time::TimeSpec;
        let uid = h
            .uid()
            .ok()
            .and_then(|u| u32::try_from(u).ok())
            .unwrap_or(0);
        let gid = h
            .gid()
            .ok()
            .and_then(|g| u32::try_from(g).ok())
            .unwrap_or(0);
        let io = |e: nix::Error| SystemError::io(path, e.into());
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(|e| SystemError::io(path, e))?;
        let is_link = h.entry_type() == tar::EntryType::Symlink;
        if !is_link {
            fchmodat(
                nix::fcntl::AT_FDCWD,
                path,
                Mode::from_bits_truncate(mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(io)?;
        }
        let t = TimeSpec::new(h.mtime().unwrap_or(0).min(i64::MAX as u64) as i64, 0);
        utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(io)
    }
}

/// Extended attributes an image may set.
fn allowed_xattr(name: &[u8]) -> bool {
    name.starts_with(b"user.") || name == b"security.capability"
}

/// The entry's PAX `SCHILY.xattr.*` records that [`allowed_xattr`] admits.
fn xattrs_of<R: Read>(e: &mut tar::Entry<'_, R>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Ok(Some(exts)) = e.pax_extensions() else {
        return Vec::new();
    };
    exts.flatten()
        .filter_map(|x| {
            let name = x.key_bytes().strip_prefix(b"SCHILY.xattr.")?;
            allowed_xattr(name).then(|| (name.to_vec(), x.value_bytes().to_vec()))
        })
        .collect()
}

/// Sets extended attributes on `path` (not following a symlink); a
/// filesystem that keeps none is not an error.
fn set_xattrs(path: &Path, xattrs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
    use std::ffi::CString;
    if xattrs.is_empty() {
        return Ok(());
    }
    let p =
        CString::new(path.as_os_str().as_bytes()).map_err(|e| SystemError::io(path, e.into()))?;
    for (name, value) in xattrs {
        let Ok(n) = CString::new(name.clone()) else {
            continue;
        };
        // SAFETY: `p` and `n` are NUL-terminated strings that outlive the
        // call; `value` is a live slice whose pointer and length are passed
        // together; lsetxattr reads them and does not keep them.
        let rc = unsafe {
            libc::lsetxattr(
                p.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ENOTSUP) {
                return Err(SystemError::io(path, err));
            }
        }
    }
    Ok(())
}

/// Removes whatever is at `path` (a folder with its contents), if anything.
fn remove_any(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).map_err(|e| SystemError::io(path, e)),
        Ok(_) => std::fs::remove_file(path).map_err(|e| SystemError::io(path, e)),
        Err(_) => Ok(()),
    }
}

/// Makes room for a non-folder entry at `path`.
fn replace(path: &Path) -> Result<()> {
    remove_any(path)
}
