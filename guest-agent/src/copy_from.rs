//! `CopyFromGuest`: a file, a symlink or a whole directory tree, as a stream
//! of `header` (+ `data` chunks for a regular file) per entry, then one
//! `end { final: true }`.
//!
//! Header paths are relative to the copy root and start with the source's
//! own name (`/etc/ssl` gives `ssl`, `ssl/certs`, …), as `docker cp` lays
//! them out. Directories come before their contents; symlinks are sent as
//! links (never followed inside a tree); other file types are skipped. A
//! failure is one `error` message (with the path) and ends the stream.

use guest_proto::{
    copy_from_guest_response::Response, CopyFromGuestEnd, CopyFromGuestError, CopyFromGuestHeader,
    CopyFromGuestResponse,
};
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use tonic::Status;

/// Largest data chunk sent in one message.
pub const CHUNK: usize = 256 * 1024;

type Tx = mpsc::Sender<Result<CopyFromGuestResponse, Status>>;

/// Starts walking `path` in a blocking thread and returns the stream.
pub fn copy_from_guest(
    path: String,
    follow_links: bool,
) -> Result<mpsc::Receiver<Result<CopyFromGuestResponse, Status>>, Status> {
    let root = PathBuf::from(&path);
    if !root.is_absolute() {
        return Err(Status::invalid_argument(format!(
            "path {path:?} is not absolute"
        )));
    }
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let outcome = walk(&root, follow_links, &tx);
        let last = match outcome {
            Ok(()) => Response::End(CopyFromGuestEnd { r#final: true }),
            Err((p, e)) => Response::Error(CopyFromGuestError {
                message: e.to_string(),
                path: p.display().to_string(),
            }),
        };
        let _ = tx.blocking_send(Ok(CopyFromGuestResponse {
            response: Some(last),
        }));
    });
    Ok(rx)
}

type WalkError = (PathBuf, std::io::Error);

/// Depth-first, iterative (no recursion however deep the tree).
fn walk(root: &Path, follow_links: bool, tx: &Tx) -> Result<(), WalkError> {
    let meta = if follow_links {
        std::fs::metadata(root)
    } else {
        std::fs::symlink_metadata(root)
    };
    let meta = meta.map_err(|e| (root.to_path_buf(), e))?;
    let name = PathBuf::from(root.file_name().unwrap_or(std::ffi::OsStr::new("/")));
    let mut stack = vec![(root.to_path_buf(), name, meta)];
    while let Some((path, rel, meta)) = stack.pop() {
        let fail = |e: std::io::Error| (path.clone(), e);
        if !send_entry(&path, &rel, &meta, tx).map_err(fail)? {
            return Ok(());
        }
        if meta.is_dir() {
            let mut children = Vec::new();
            for entry in std::fs::read_dir(&path).map_err(fail)? {
                let entry = entry.map_err(fail)?;
                let child_meta = entry.metadata().map_err(fail)?;
                children.push((entry.path(), rel.join(entry.file_name()), child_meta));
            }
            children.sort_by(|a, b| b.1.cmp(&a.1));
            stack.extend(children);
        }
    }
    Ok(())
}

/// Sends one entry; `false` when the client is gone.
fn send_entry(path: &Path, rel: &Path, meta: &Metadata, tx: &Tx) -> std::io::Result<bool> {
    let ft = meta.file_type();
    if !(ft.is_file() || ft.is_dir() || ft.is_symlink()) {
        return Ok(true);
    }
    let link_target = if ft.is_symlink() {
        std::fs::read_link(path)?.to_string_lossy().into_owned()
    } else {
        String::new()
    };
    let header = CopyFromGuestHeader {
        path: rel.to_string_lossy().into_owned(),
        mode: meta.mode() & 0o7777,
        is_dir: ft.is_dir(),
        is_symlink: ft.is_symlink(),
        link_target,
        size: if ft.is_file() {
            i64::try_from(meta.len()).unwrap_or(i64::MAX)
        } else {
            0
        },
        mtime: meta.mtime(),
        uid: meta.uid(),
        gid: meta.gid(),
    };
    if !send(tx, Response::Header(header)) {
        return Ok(false);
    }
    if ft.is_file() {
        return send_data(path, meta.len(), tx);
    }
    Ok(true)
}

/// Sends the file's bytes; a file that changed size while read is an error.
fn send_data(path: &Path, size: u64, tx: &Tx) -> std::io::Result<bool> {
    let mut file = std::fs::File::open(path)?;
    let mut sent = 0u64;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        sent += n as u64;
        if !send(tx, Response::Data(buf)) {
            return Ok(false);
        }
    }
    if sent != size {
        let msg = format!("changed size while copied ({size} bytes, then {sent})");
        return Err(std::io::Error::other(msg));
    }
    Ok(true)
}

fn send(tx: &Tx, response: Response) -> bool {
    tx.blocking_send(Ok(CopyFromGuestResponse {
        response: Some(response),
    }))
    .is_ok()
}
