//! Atomic installs: every file is written to a temporary name in its final
//! folder (or a whole folder is staged), synced, renamed into place, and the
//! folder synced, so a crash leaves either the old state or the new one.

use super::error::{Result, SystemError};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Syncs a folder (makes a rename in it durable).
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| SystemError::io(dir, e))
}

/// Creates `dir` and its parents.
pub fn mkdirs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| SystemError::io(dir, e))
}

/// Writes `data` to `path` atomically (temp file in the same folder, fsync,
/// rename, fsync of the folder).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = parent(path)?;
    mkdirs(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| SystemError::io(dir, e))?;
    tmp.write_all(data)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| SystemError::io(tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| SystemError::io(path, e.error))?;
    fsync_dir(dir)
}

fn parent(path: &Path) -> Result<&Path> {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| SystemError::NotFound(format!("{} has no folder", path.display())))
}

/// Points `link` at `target` (a relative path) atomically: a new symlink under
/// a temporary name renamed over the old one.
pub fn replace_symlink(link: &Path, target: &Path) -> Result<()> {
    let dir = parent(link)?;
    mkdirs(dir)?;
    let tmp = dir.join(format!(".link-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(|e| SystemError::io(&tmp, e))?;
    std::fs::rename(&tmp, link).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        SystemError::io(link, e)
    })?;
    fsync_dir(dir)
}

/// sha256 (hex) and size of a file, read in one pass.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f = File::open(path).map_err(|e| SystemError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| SystemError::io(path, e))?;
        if n == 0 {
            return Ok((hex::encode(h.finalize()), size));
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
}

/// A folder being assembled under `{system}/.staging`: moved into place by
/// [`Staged::commit`], removed when dropped uncommitted.
#[derive(Debug)]
pub struct Staged {
    dir: Option<tempfile::TempDir>,
}

impl Staged {
    /// A fresh staging folder in `staging`.
    pub fn new(staging: &Path) -> Result<Self> {
        mkdirs(staging)?;
        let dir = tempfile::Builder::new()
            .prefix("stage-")
            .tempdir_in(staging)
            .map_err(|e| SystemError::io(staging, e))?;
        Ok(Staged { dir: Some(dir) })
    }

    /// The folder to fill.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), |d| d.path())
    }

    /// Syncs every file in the folder, then renames it to `dest` (which must
    /// not exist; its parent is created) and syncs the parent.
    pub fn commit(mut self, dest: &Path) -> Result<PathBuf> {
        let Some(dir) = self.dir.take() else {
            return Err(SystemError::NotFound("staging folder already used".into()));
        };
        sync_tree(dir.path())?;
        let parent = parent(dest)?;
        mkdirs(parent)?;
        let src = dir.keep();
        std::fs::rename(&src, dest).map_err(|e| {
            let _ = std::fs::remove_dir_all(&src);
            SystemError::io(dest, e)
        })?;
        fsync_dir(parent)?;
        Ok(dest.to_path_buf())
    }
}

fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| SystemError::io(dir, e))? {
        let entry = entry.map_err(|e| SystemError::io(dir, e))?;
        let path = entry.path();
        let ty = entry.file_type().map_err(|e| SystemError::io(&path, e))?;
        if ty.is_dir() {
            sync_tree(&path)?;
        } else if ty.is_file() {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| SystemError::io(&path, e))?;
        }
    }
    fsync_dir(dir)
}

/// Removes `path` (a folder tree or a file), moving it aside first so no
/// reader sees a half-removed folder.
pub fn remove_tree(path: &Path, staging: &Path) -> Result<()> {
    mkdirs(staging)?;
    let aside = staging.join(format!(
        "gone-{}-{}",
        std::process::id(),
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    ));
    std::fs::rename(path, &aside).map_err(|e| SystemError::io(path, e))?;
    std::fs::remove_dir_all(&aside).map_err(|e| SystemError::io(&aside, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_and_symlink() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a/b/file");
        write_atomic(&f, b"one").unwrap();
        write_atomic(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(d.path().join("a/b")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
        let link = d.path().join("a/latest");
        replace_symlink(&link, Path::new("b")).unwrap();
        replace_symlink(&link, Path::new("c")).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("c"));
    }

    #[test]
    fn staged_folder_commits_or_vanishes() {
        let d = tempfile::tempdir().unwrap();
        let staging = d.path().join(".staging");
        let s = Staged::new(&staging).unwrap();
        std::fs::write(s.path().join("f"), b"x").unwrap();
        let dest = d.path().join("v/arch");
        s.commit(&dest).unwrap();
        assert_eq!(std::fs::read(dest.join("f")).unwrap(), b"x");
        let s = Staged::new(&staging).unwrap();
        std::fs::write(s.path().join("f"), b"x").unwrap();
        drop(s);
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
        assert!(Staged::new(&staging).unwrap().commit(&dest).is_err());
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    }

    #[test]
    fn file_digest() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        let (h, n) = sha256_file(&f).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
