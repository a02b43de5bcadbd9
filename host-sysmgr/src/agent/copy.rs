//! Copies between the host and the guest: files, directory trees and
//! symlinks, with mode and mtime (and owner when running as root).
//!
//! What the guest sends is untrusted: every header path must be relative and
//! made of plain components, nothing is written through a symlink, sizes
//! must match, and each file is written to a temporary name and renamed, so
//! a failed copy leaves no partial file.

use super::{AgentClient, AgentError};
use guest_proto::copy_from_guest_response::Response;
use guest_proto::{
    copy_to_guest_request, CopyFromGuestHeader, CopyFromGuestRequest, CopyToGuestEnd,
    CopyToGuestRequest, CopyToGuestStart,
};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Size of the data chunks sent to the guest.
pub const CHUNK: usize = 256 * 1024;

fn refused(reason: impl Into<String>) -> AgentError {
    AgentError::Protocol {
        method: "CopyFromGuest",
        reason: reason.into(),
    }
}

fn local_err(path: &Path, e: std::io::Error) -> AgentError {
    refused(format!("{}: {e}", path.display()))
}

impl AgentClient {
    /// Copies `local` (a file, symlink or directory tree) to the absolute
    /// guest path `remote`. Returns the file bytes sent.
    pub async fn copy_to_guest(&self, local: &Path, remote: &str) -> Result<u64, AgentError> {
        let mut total = 0;
        let mut stack = vec![(local.to_path_buf(), remote.to_string())];
        while let Some((path, target)) = stack.pop() {
            let meta = std::fs::symlink_metadata(&path).map_err(|e| to_err(&path, e))?;
            total += self.copy_one_to_guest(&path, &target, &meta).await?;
            if meta.is_dir() {
                for entry in std::fs::read_dir(&path).map_err(|e| to_err(&path, e))? {
                    let entry = entry.map_err(|e| to_err(&path, e))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    stack.push((
                        entry.path(),
                        format!("{}/{name}", target.trim_end_matches('/')),
                    ));
                }
            }
        }
        Ok(total)
    }

    async fn copy_one_to_guest(
        &self,
        path: &Path,
        target: &str,
        meta: &std::fs::Metadata,
    ) -> Result<u64, AgentError> {
        let ft = meta.file_type();
        let mut start = CopyToGuestStart {
            path: target.to_string(),
            mode: meta.mode() & 0o7777,
            is_dir: ft.is_dir(),
            size: if ft.is_file() {
                i64::try_from(meta.len()).unwrap_or(i64::MAX)
            } else {
                0
            },
            mtime: meta.mtime(),
            uid: meta.uid(),
            gid: meta.gid(),
            link_target: String::new(),
        };
        if ft.is_symlink() {
            let link = std::fs::read_link(path).map_err(|e| to_err(path, e))?;
            start.link_target = link.to_string_lossy().into_owned();
        } else if !ft.is_file() && !ft.is_dir() {
            return Ok(0); // sockets, FIFOs, devices are not copied
        }
        let (tx, rx) = mpsc::channel(4);
        let msg = |r| CopyToGuestRequest { request: Some(r) };
        let _ = tx
            .send(msg(copy_to_guest_request::Request::Start(start)))
            .await;
        let producer = if ft.is_file() {
            Some(tokio::spawn(send_file(path.to_path_buf(), tx)))
        } else {
            let _ = tx
                .send(msg(copy_to_guest_request::Request::End(CopyToGuestEnd {})))
                .await;
            None
        };
        let mut client = self.raw();
        let reply = client.copy_to_guest(ReceiverStream::new(rx)).await;
        let reply = reply.map_err(|source| AgentError::Call {
            method: "CopyToGuest",
            source,
        })?;
        if let Some(p) = producer {
            p.await
                .map_err(|e| to_err(path, std::io::Error::other(e)))?
                .map_err(|e| to_err(path, e))?;
        }
        let reply = reply.into_inner();
        if !reply.success {
            return Err(AgentError::Protocol {
                method: "CopyToGuest",
                reason: format!("{target}: {}", reply.error),
            });
        }
        Ok(u64::try_from(reply.bytes_written).unwrap_or(0))
    }
}

fn to_err(path: &Path, e: std::io::Error) -> AgentError {
    AgentError::Protocol {
        method: "CopyToGuest",
        reason: format!("{}: {e}", path.display()),
    }
}

/// Streams a file's bytes as `data` messages, then `end`. A read error
/// sends no `end`, so the guest discards the partial file.
async fn send_file(path: PathBuf, tx: mpsc::Sender<CopyToGuestRequest>) -> std::io::Result<()> {
    let mut f = tokio::fs::File::open(&path).await?;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let n = f.read(&mut buf).await?;
        let request = if n == 0 {
            copy_to_guest_request::Request::End(CopyToGuestEnd {})
        } else {
            buf.truncate(n);
            copy_to_guest_request::Request::Data(buf)
        };
        let sent = tx
            .send(CopyToGuestRequest {
                request: Some(request),
            })
            .await;
        if n == 0 || sent.is_err() {
            return Ok(());
        }
    }
}

impl AgentClient {
    /// Copies the guest path `remote` (file, symlink or tree) to `local`:
    /// the copy's root is written at `local` itself. Returns the file bytes
    /// received.
    pub async fn copy_from_guest(
        &self,
        remote: &str,
        local: &Path,
        follow_links: bool,
    ) -> Result<u64, AgentError> {
        let req = CopyFromGuestRequest {
            path: remote.into(),
            follow_links,
        };
        let mut stream = self
            .raw()
            .copy_from_guest(req)
            .await
            .map_err(|source| AgentError::Call {
                method: "CopyFromGuest",
                source,
            })?
            .into_inner();
        let mut writer = TreeWriter::new(local);
        loop {
            let msg = stream.message().await.map_err(|source| AgentError::Call {
                method: "CopyFromGuest",
                source,
            })?;
            let Some(response) = msg.and_then(|m| m.response) else {
                return Err(refused("the stream ended without end"));
            };
            match response {
                Response::Header(h) => writer.header(h)?,
                Response::Data(d) => writer.data(&d)?,
                Response::End(end) if end.r#final => return writer.finish(),
                Response::End(_) => writer.close_file()?,
                Response::Error(e) => return Err(refused(format!("{}: {}", e.path, e.message))),
            }
        }
    }
}

/// The components of a header path sent by the guest, when every one is a
/// plain name (no root, `..`, or prefix; `.` and empty ones are dropped as
/// `Path::components` does); `None` for anything else.
pub fn header_parts(rel: &str) -> Option<Vec<String>> {
    Path::new(rel)
        .components()
        .map(|c| match c {
            Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Writes the entries of a copy under its root, checking every path.
struct TreeWriter {
    root: PathBuf,
    root_name: Option<String>,
    file: Option<OpenFile>,
    total: u64,
}

struct OpenFile {
    tmp: PathBuf,
    target: PathBuf,
    file: std::fs::File,
    header: CopyFromGuestHeader,
    written: u64,
}

impl TreeWriter {
    fn new(root: &Path) -> TreeWriter {
        TreeWriter {
            root: root.to_path_buf(),
            root_name: None,
            file: None,
            total: 0,
        }
    }

    /// Maps a header path (`name/a/b`) onto the local root, refusing
    /// anything but plain components, a different root name, and any
    /// symlink among the parents already written.
    fn local_path(&mut self, rel: &str) -> Result<PathBuf, AgentError> {
        let parts = header_parts(rel)
            .ok_or_else(|| refused(format!("unsafe path {rel:?} from the guest")))?;
        let Some((first, rest)) = parts.split_first() else {
            return Err(refused("an empty path from the guest"));
        };
        match &self.root_name {
            None => self.root_name = Some(first.clone()),
            Some(name) if name == first => {}
            Some(_) => return Err(refused(format!("path {rel:?} outside the copy"))),
        }
        let mut path = self.root.clone();
        for part in rest {
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(refused(format!("path {rel:?} goes through a symlink")));
            }
            path.push(part);
        }
        Ok(path)
    }

    fn header(&mut self, h: CopyFromGuestHeader) -> Result<(), AgentError> {
        self.close_file()?;
        let path = self.local_path(&h.path)?;
        if h.is_dir {
            match std::fs::create_dir(&path) {
                // An existing folder is reused; an existing symlink is not
                // followed (symlink_metadata says it is no folder).
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && is_real_dir(&path) => {}
                other => other.map_err(|e| local_err(&path, e))?,
            }
            let perms = std::fs::Permissions::from_mode(h.mode & 0o7777);
            return std::fs::set_permissions(&path, perms).map_err(|e| local_err(&path, e));
        }
        let tmp = temp_beside(&path);
        if h.is_symlink {
            std::os::unix::fs::symlink(&h.link_target, &tmp).map_err(|e| local_err(&path, e))?;
            return std::fs::rename(&tmp, &path).map_err(|e| local_err(&path, e));
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| local_err(&path, e))?;
        self.file = Some(OpenFile {
            tmp,
            target: path,
            file,
            header: h,
            written: 0,
        });
        Ok(())
    }

    fn data(&mut self, d: &[u8]) -> Result<(), AgentError> {
        let Some(f) = self.file.as_mut() else {
            return Err(refused("data without a file header"));
        };
        f.written += d.len() as u64;
        if f.written > u64::try_from(f.header.size).unwrap_or(0) {
            return Err(refused(format!(
                "{}: more data than its size",
                f.header.path
            )));
        }
        f.file.write_all(d).map_err(|e| local_err(&f.target, e))
    }

    fn close_file(&mut self) -> Result<(), AgentError> {
        let Some(f) = self.file.take() else {
            return Ok(());
        };
        let result = finish_file(&f);
        if result.is_err() {
            let _ = std::fs::remove_file(&f.tmp);
        } else {
            self.total += f.written;
        }
        result
    }

    fn finish(mut self) -> Result<u64, AgentError> {
        self.close_file()?;
        Ok(self.total)
    }
}

impl Drop for TreeWriter {
    fn drop(&mut self) {
        if let Some(f) = self.file.take() {
            let _ = std::fs::remove_file(&f.tmp);
        }
    }
}

fn finish_file(f: &OpenFile) -> Result<(), AgentError> {
    let h = &f.header;
    if f.written != u64::try_from(h.size).unwrap_or(u64::MAX) {
        return Err(refused(format!(
            "{}: {} bytes received, {} announced",
            h.path, f.written, h.size
        )));
    }
    let fail = |e| local_err(&f.target, e);
    f.file.sync_all().map_err(fail)?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::fchown(&f.file, Some(h.uid), Some(h.gid)).map_err(fail)?;
    }
    // After chown, which clears setuid/setgid bits.
    f.file
        .set_permissions(std::fs::Permissions::from_mode(h.mode & 0o7777))
        .map_err(fail)?;
    if h.mtime > 0 {
        let t = UNIX_EPOCH + Duration::from_secs(u64::try_from(h.mtime).unwrap_or(0));
        f.file.set_modified(t).map_err(fail)?;
    }
    std::fs::rename(&f.tmp, &f.target).map_err(fail)
}

fn temp_beside(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let nonce = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    path.with_file_name(format!(
        ".{name}.copy-{:08x}{nonce:08x}",
        std::process::id()
    ))
}
