//! `CopyToGuest`: one file or directory per call, `start` then `data`
//! chunks then `end`.
//!
//! A file is written to a temporary file beside its target (same folder, so
//! the rename is atomic), synced, given its mode, owner and mtime, then
//! renamed over the target: an interrupted or refused copy leaves no partial
//! file. Every refusal is `success=false` with the reason.

use guest_proto::{
    copy_to_guest_request, CopyToGuestRequest, CopyToGuestResponse, CopyToGuestStart,
};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::Streaming;

/// Why a copy was refused (the text of `error`).
type Refusal = String;

/// Serves one `CopyToGuest` stream.
pub async fn copy_to_guest(mut requests: Streaming<CopyToGuestRequest>) -> CopyToGuestResponse {
    let mut written = 0i64;
    match receive(&mut requests, &mut written).await {
        Ok(()) => CopyToGuestResponse {
            success: true,
            error: String::new(),
            bytes_written: written,
        },
        Err(error) => CopyToGuestResponse {
            success: false,
            error,
            bytes_written: written,
        },
    }
}

async fn receive(
    requests: &mut Streaming<CopyToGuestRequest>,
    written: &mut i64,
) -> Result<(), Refusal> {
    let start = match next(requests).await? {
        Some(copy_to_guest_request::Request::Start(start)) => start,
        Some(_) => return Err("the first message must be start".into()),
        None => return Err("the stream ended before start".into()),
    };
    let target = check_target(&start)?;
    if start.is_dir {
        return make_dir(&target, &start).map_err(|e| format!("{}: {e}", target.display()));
    }
    if !start.link_target.is_empty() {
        return make_symlink(&target, &start);
    }
    let mut tmp = TempFile::create(&target)?;
    loop {
        match next(requests).await? {
            Some(copy_to_guest_request::Request::Data(data)) => {
                tmp.write(&data)?;
                *written += i64::try_from(data.len()).unwrap_or(i64::MAX);
                if start.size >= 0 && *written > start.size {
                    return Err(format!("more data than the {} bytes announced", start.size));
                }
            }
            Some(copy_to_guest_request::Request::End(_)) => break,
            Some(copy_to_guest_request::Request::Start(_)) => return Err("a second start".into()),
            None => return Err(format!("the stream ended early, after {written} bytes")),
        }
    }
    if start.size >= 0 && *written != start.size {
        return Err(format!(
            "{written} bytes received, {} announced",
            start.size
        ));
    }
    tmp.finish(&start)
}

/// The next message's payload; a transport error or an empty oneof is a refusal.
async fn next(
    requests: &mut Streaming<CopyToGuestRequest>,
) -> Result<Option<copy_to_guest_request::Request>, Refusal> {
    match requests.message().await {
        Ok(Some(CopyToGuestRequest { request: Some(r) })) => Ok(Some(r)),
        Ok(Some(CopyToGuestRequest { request: None })) => {
            Err("a message with no known field".into())
        }
        Ok(None) => Ok(None),
        Err(status) => Err(format!("the stream failed: {}", status.message())),
    }
}

fn check_target(start: &CopyToGuestStart) -> Result<PathBuf, Refusal> {
    let path = Path::new(&start.path);
    if !path.is_absolute() {
        return Err(format!("path {:?} is not absolute", start.path));
    }
    let (Some(parent), Some(_)) = (path.parent(), path.file_name()) else {
        return Err(format!("path {:?} names no file", start.path));
    };
    match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() => Ok(path.to_path_buf()),
        Ok(_) => Err(format!("parent {} is not a directory", parent.display())),
        Err(e) => Err(format!("parent {}: {e}", parent.display())),
    }
}

fn make_dir(target: &Path, start: &CopyToGuestStart) -> std::io::Result<()> {
    match std::fs::create_dir(target) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && target.is_dir() => {}
        other => other?,
    }
    apply_metadata(target, &File::open(target)?, start)
}

/// A symlink made under a temporary name and renamed over the target.
fn make_symlink(target: &Path, start: &CopyToGuestStart) -> Result<(), Refusal> {
    let fail = |e: std::io::Error| format!("{}: {e}", target.display());
    let tmp = TempFile::name_beside(target);
    std::os::unix::fs::symlink(&start.link_target, &tmp).map_err(fail)?;
    let owned = if start.uid != 0 || start.gid != 0 {
        std::os::unix::fs::lchown(&tmp, Some(start.uid), Some(start.gid))
    } else {
        Ok(())
    };
    let renamed = owned.and_then(|()| std::fs::rename(&tmp, target));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed.map_err(fail)
}

/// Mode (permission bits; 0 keeps the default), owner, mtime.
fn apply_metadata(path: &Path, file: &File, start: &CopyToGuestStart) -> std::io::Result<()> {
    let mode = start.mode & 0o7777;
    if mode != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    if start.uid != 0 || start.gid != 0 {
        std::os::unix::fs::fchown(file, Some(start.uid), Some(start.gid))?;
        if mode & 0o6000 != 0 {
            // chown clears setuid/setgid: set the mode again.
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
    }
    if start.mtime > 0 {
        let secs = u64::try_from(start.mtime).unwrap_or(0);
        file.set_modified(UNIX_EPOCH + Duration::from_secs(secs))
            .or_else(|_| touch_path(path, secs))?;
    }
    Ok(())
}

fn touch_path(path: &Path, secs: u64) -> std::io::Result<()> {
    File::options()
        .write(true)
        .open(path)?
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// A temporary file beside the target, removed unless renamed into place.
struct TempFile {
    path: PathBuf,
    target: PathBuf,
    file: Option<File>,
}

impl TempFile {
    /// A name in the target's folder that is unlikely to exist.
    fn name_beside(target: &Path) -> PathBuf {
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        let dir = target.parent().unwrap_or(Path::new("/"));
        let nonce = std::process::id().rotate_left(16) ^ clock_nanos();
        dir.join(format!(".{name}.copy-{nonce:08x}"))
    }

    fn create(target: &Path) -> Result<TempFile, Refusal> {
        let dir = target.parent().unwrap_or(Path::new("/"));
        for _ in 0..16 {
            let path = Self::name_beside(target);
            let opened = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path);
            match opened {
                Ok(file) => {
                    let target = target.to_path_buf();
                    return Ok(TempFile {
                        path,
                        target,
                        file: Some(file),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("{}: {e}", dir.display())),
            }
        }
        Err(format!("{}: no free temporary name", dir.display()))
    }

    fn write(&mut self, data: &[u8]) -> Result<(), Refusal> {
        let file = self.file.as_mut().ok_or("the file is closed")?;
        file.write_all(data)
            .map_err(|e| format!("write {}: {e}", self.target.display()))
    }

    fn finish(mut self, start: &CopyToGuestStart) -> Result<(), Refusal> {
        let file = self.file.take().ok_or("the file is closed")?;
        let fail = |e: std::io::Error| format!("{}: {e}", self.target.display());
        file.sync_all().map_err(fail)?;
        apply_metadata(&self.path, &file, start).map_err(fail)?;
        std::fs::rename(&self.path, &self.target).map_err(fail)?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn clock_nanos() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}
