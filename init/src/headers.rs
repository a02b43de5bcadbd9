//! The kernel-headers worker (CONTRACT.md §5): the running kernel's headers
//! tarball extracted to `/usr/src/linux-headers-<release>`,
//! `/lib/modules/<release>/build` pointed at it, and other versions' header
//! and module trees removed, so DKMS builds for this kernel and no other.
//!
//! It runs beside the app, never before it: in exec mode init forks it at
//! low priority once the app has started; in systemd mode the
//! `hypeman-kernel-headers.service` unit runs `hypeman-init
//! --headers-worker-guest`. Progress is in
//! `/run/hypeman/kernel-headers.status` (`pending`, `running`, `ready`,
//! `failed`) and the `HYPEMAN-HEADERS-*` sentinels.
//!
//! The tarball is read and checked by [`guest_contract::headers`]; this
//! module writes what it hands over into a staging folder of a fresh name,
//! renamed into place only when complete: a failed or interrupted run
//! leaves no half tree under the final name.

use crate::boot::report;
use crate::sys::Sys;
use guest_contract::headers::{self as tarball, Entry, Kind, Limits};
use guest_contract::sentinel;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Where the initramfs carries the tarball.
pub const SOURCE: &str = "/kernel-headers.tar.gz";
/// Where systemd mode stages it for the unit.
pub const STAGED: &str = "/opt/hypeman/kernel-headers.tar.gz";
/// Where systemd mode stages init for the unit.
pub const STAGED_INIT: &str = "/opt/hypeman/hypeman-init";
/// The status file (in the guest's root).
pub const STATUS: &str = "/run/hypeman/kernel-headers.status";
/// The argument that runs the worker.
pub const WORKER_ARG: &str = "--headers-worker-guest";

/// Why the install failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The tarball was refused or could not be read or written.
    #[error("kernel-headers tarball")]
    Tarball(#[source] tarball::HeadersError),
    /// The tree has no top-level Makefile.
    #[error("the tarball is not a kernel headers tree (no Makefile at its top)")]
    NotHeaders,
    /// The tarball's folder names another kernel release.
    #[error("the tarball holds {found}, not the running kernel's headers")]
    OtherKernel {
        /// Its top folder.
        found: String,
    },
    /// The kernel release is not a plain name.
    #[error("kernel release {0:?} is not a plain name")]
    BadRelease(String),
    /// A file system step failed.
    #[error("{what} {path}")]
    Io {
        /// What was done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> InstallError {
    let path = path.to_path_buf();
    move |source| InstallError::Io { what, path, source }
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The tree and its link were in place already: nothing was extracted.
    pub already: bool,
    /// Entries written.
    pub entries: u64,
    /// File bytes written.
    pub bytes: u64,
    /// Other versions' trees removed (paths below the root).
    pub removed: Vec<String>,
}

/// Paths of one install below `root`.
struct Paths {
    dest: PathBuf,
    link: PathBuf,
    link_target: String,
}

impl Paths {
    fn new(root: &Path, release: &str) -> Paths {
        let name = format!("linux-headers-{release}");
        Paths {
            dest: root.join("usr/src").join(&name),
            link: root.join("lib/modules").join(release).join("build"),
            link_target: format!("/usr/src/{name}"),
        }
    }

    fn in_place(&self) -> bool {
        let linked = fs::read_link(&self.link).is_ok_and(|t| t == Path::new(&self.link_target));
        linked && self.dest.join("Makefile").is_file()
    }
}

/// Extracts `tarball` for kernel `release` into the tree at `root` (`/` in
/// the guest), links it, and removes other versions' trees.
pub fn install(tarball: impl Read, root: &Path, release: &str) -> Result<Installed, InstallError> {
    // An empty or odd release would name /lib/modules itself (and remove_others would empty it).
    if release.is_empty() || release == "." || release == ".." || release.contains('/') {
        return Err(InstallError::BadRelease(release.into()));
    }
    let paths = Paths::new(root, release);
    let mut done = Installed {
        already: paths.in_place(),
        entries: 0,
        bytes: 0,
        removed: Vec::new(),
    };
    if !done.already {
        let summary = extract(tarball, &paths)?;
        done.entries = summary.entries;
        done.bytes = summary.file_bytes;
        link(&paths)?;
    }
    done.removed = remove_others(root, release)?;
    Ok(done)
}

fn extract(tarball: impl Read, paths: &Paths) -> Result<tarball::Summary, InstallError> {
    let parent = paths.dest.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    let stage = parent.join(format!(".headers-{}.partial", std::process::id()));
    remove_any(&stage).map_err(io_err("remove", &stage))?;
    fs::create_dir(&stage).map_err(io_err("create", &stage))?;
    let want = paths
        .dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let result = tarball::walk(tarball, &Limits::default(), |e, data| {
        write(&stage, e, data)
    })
    .map_err(InstallError::Tarball)
    .and_then(|s| match &s.top {
        Some(top) if Some(top) != want.as_ref() => {
            Err(InstallError::OtherKernel { found: top.clone() })
        }
        _ => Ok(s),
    })
    .and_then(|s| match stage.join("Makefile").is_file() {
        true => Ok(s),
        false => Err(InstallError::NotHeaders),
    })
    .and_then(|s| {
        remove_any(&paths.dest).map_err(io_err("remove", &paths.dest))?;
        fs::rename(&stage, &paths.dest).map_err(io_err("rename into", &paths.dest))?;
        Ok(s)
    });
    if result.is_err() {
        let _ = remove_any(&stage);
    }
    result
}

/// Writes one checked entry below `stage` (its path has no `..` and passes
/// through no link: [`tarball::walk`] checked that).
fn write(stage: &Path, e: &Entry, data: &mut dyn Read) -> io::Result<()> {
    let path = stage.join(&e.path);
    match &e.kind {
        Kind::Dir => {
            // Never through a symlink (the walk refuses one there; this
            // does not rely on it).
            if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                remove_any(&path)?;
                fs::create_dir_all(&path)?;
            }
            fs::set_permissions(&path, fs::Permissions::from_mode(e.mode | 0o700))
        }
        Kind::File => {
            remove_any(&path)?;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(e.mode)
                .open(&path)?;
            io::copy(data, &mut f)?;
            // A time past what SystemTime holds is left as now.
            match SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(e.mtime)) {
                Some(t) => f.set_modified(t),
                None => Ok(()),
            }
        }
        Kind::Symlink(target) => {
            remove_any(&path)?;
            std::os::unix::fs::symlink(target, &path)
        }
        Kind::HardLink(target) => {
            remove_any(&path)?;
            fs::hard_link(stage.join(target), &path)
        }
    }
}

/// Removes a file, link or tree; nothing there is fine.
fn remove_any(path: &Path) -> io::Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn link(paths: &Paths) -> Result<(), InstallError> {
    let dir = paths.link.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    remove_any(&paths.link).map_err(io_err("remove", &paths.link))?;
    std::os::unix::fs::symlink(&paths.link_target, &paths.link).map_err(io_err("link", &paths.link))
}

/// Removes `usr/src/linux-headers-*` and `lib/modules/*` of other releases
/// (and stale staging folders).
fn remove_others(root: &Path, release: &str) -> Result<Vec<String>, InstallError> {
    let keep_headers = format!("linux-headers-{release}");
    let mut removed = Vec::new();
    let mut sweep = |dir: &str, doomed: &dyn Fn(&str) -> bool| -> Result<(), InstallError> {
        let full = root.join(dir);
        let Ok(list) = fs::read_dir(&full) else {
            return Ok(());
        };
        for entry in list.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if doomed(&name) {
                let path = entry.path();
                remove_any(&path).map_err(io_err("remove", &path))?;
                removed.push(format!("/{dir}/{name}"));
            }
        }
        Ok(())
    };
    sweep("usr/src", &|n| {
        (n.starts_with("linux-headers-") && n != keep_headers) || n.starts_with(".headers-")
    })?;
    sweep("lib/modules", &|n| n != release)?;
    Ok(removed)
}

/// Writes the status file (below `root`); a failure is one ERROR line.
pub fn set_status<S: Sys>(sys: &mut S, root: &Path, status: &str) {
    let path = root.join(STATUS.trim_start_matches('/'));
    let written = path
        .parent()
        .map_or(Ok(()), fs::create_dir_all)
        .and_then(|()| fs::write(&path, format!("{status}\n")));
    if let Err(e) = written {
        report::error(sys, "headers", &format!("write {}: {e}", path.display()));
    }
}

/// The worker: status and sentinels around [`install`]. Returns its exit code.
pub fn worker<S: Sys>(sys: &mut S, tarball: impl Read, root: &Path, release: &str) -> i32 {
    let (secs, nanos) = sys.realtime();
    report::sentinel(sys, &sentinel::headers_start(secs, nanos));
    set_status(sys, root, "running");
    let started = sys.boottime();
    let result = install(tarball, root, release);
    let took = sys.boottime().saturating_sub(started).as_millis();
    let (secs, nanos) = sys.realtime();
    match result {
        Ok(done) => {
            let msg = match done.already {
                true => format!("linux-headers-{release} already in place"),
                false => format!(
                    "linux-headers-{release}: {} entries, {} bytes in {took} ms",
                    done.entries, done.bytes
                ),
            };
            report::info(sys, "headers", &msg);
            if !done.removed.is_empty() {
                let msg = format!("removed {}", done.removed.join(", "));
                report::info(sys, "headers", &msg);
            }
            set_status(sys, root, "ready");
            report::sentinel(sys, &sentinel::headers_ready(secs, nanos));
            0
        }
        Err(e) => {
            let msg = report::error_chain(&e);
            report::error(sys, "headers", &msg);
            set_status(sys, root, "failed");
            report::sentinel(sys, &sentinel::headers_failed(secs, nanos, &msg));
            1
        }
    }
}

/// In a worker process: a panic ends in `HEADERS-FAILED` and exit status 1,
/// never in PID 1's hook (whose `HYPEMAN-EXIT` line would stand for the
/// app's exit).
pub fn worker_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let mut sys = crate::sys::real::RealSys::default();
        let (secs, nanos) = sys.realtime();
        let msg = format!("panic: {info}");
        report::sentinel(&mut sys, &sentinel::headers_failed(secs, nanos, &msg));
        // SAFETY: _exit ends this worker process without unwinding.
        unsafe { libc::_exit(1) }
    }));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSys;

    /// A headers .tar.gz with a top folder, a Makefile, a symlink and a hard link.
    fn good() -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        let mut add = |path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            h.set_mtime(1_600_000_000);
            h.set_size(data.len() as u64);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            b.append_data(&mut h, path, data).unwrap();
        };
        add("linux-headers-6.1.0-t/", tarball_dir(), b"", None);
        add(
            "linux-headers-6.1.0-t/Makefile",
            tar::EntryType::Regular,
            b"all:\n",
            None,
        );
        add("linux-headers-6.1.0-t/include/", tarball_dir(), b"", None);
        add(
            "linux-headers-6.1.0-t/include/x.h",
            tar::EntryType::Regular,
            b"#define X 1\n",
            None,
        );
        add(
            "linux-headers-6.1.0-t/asm",
            tar::EntryType::Symlink,
            b"",
            Some("include"),
        );
        add(
            "linux-headers-6.1.0-t/y.h",
            tar::EntryType::Link,
            b"",
            Some("linux-headers-6.1.0-t/include/x.h"),
        );
        b.into_inner().unwrap().finish().unwrap()
    }

    fn tarball_dir() -> tar::EntryType {
        tar::EntryType::Directory
    }

    fn root_with_others() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for d in [
            "usr/src/linux-headers-5.10.0-old",
            "lib/modules/5.10.0-old/kernel",
            "lib/modules/6.1.0-t",
        ] {
            fs::create_dir_all(root.path().join(d)).unwrap();
        }
        root
    }

    #[test]
    fn install_extracts_links_and_removes_other_versions() {
        let root = root_with_others();
        let r = root.path();
        let done = install(good().as_slice(), r, "6.1.0-t").unwrap();
        assert!(!done.already);
        assert_eq!(done.entries, 5);
        let dest = r.join("usr/src/linux-headers-6.1.0-t");
        assert_eq!(fs::read(dest.join("Makefile")).unwrap(), b"all:\n");
        assert_eq!(fs::read(dest.join("asm/x.h")).unwrap(), b"#define X 1\n");
        assert_eq!(fs::read(dest.join("y.h")).unwrap(), b"#define X 1\n");
        let mtime = fs::metadata(dest.join("Makefile"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(
            mtime,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000)
        );
        let link = fs::read_link(r.join("lib/modules/6.1.0-t/build")).unwrap();
        assert_eq!(link, Path::new("/usr/src/linux-headers-6.1.0-t"));
        assert_eq!(
            done.removed,
            [
                "/usr/src/linux-headers-5.10.0-old",
                "/lib/modules/5.10.0-old"
            ]
        );
        assert!(!r.join("lib/modules/5.10.0-old").exists());
        // Once in place, a second run extracts nothing (even from junk).
        let again = install(b"junk".as_slice(), r, "6.1.0-t").unwrap();
        assert!(again.already);
        assert_eq!(again.entries, 0);
    }

    #[test]
    fn a_bad_tarball_leaves_no_tree_and_no_staging() {
        let root = root_with_others();
        let r = root.path();
        let t = good();
        for bad in [&t[..t.len() / 2], b"not gzip".as_slice()] {
            let e = install(bad, r, "6.1.0-t").unwrap_err();
            assert!(matches!(e, InstallError::Tarball(_)), "{e:?}");
        }
        let left: Vec<_> = fs::read_dir(r.join("usr/src"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, ["linux-headers-5.10.0-old"]);
        assert!(!r.join("lib/modules/6.1.0-t/build").exists());
    }

    #[test]
    fn the_worker_reports_status_and_sentinels() {
        let root = root_with_others();
        let r = root.path();
        let mut sys = FakeSys::initramfs();
        assert_eq!(worker(&mut sys, b"junk".as_slice(), r, "6.1.0-t"), 1);
        let status = r.join(STATUS.trim_start_matches('/'));
        assert_eq!(fs::read_to_string(&status).unwrap(), "failed\n");
        assert!(sys.console.contains("HYPEMAN-HEADERS-START ts="));
        assert!(sys.console.contains("HYPEMAN-HEADERS-FAILED ts="));
        assert!(sys
            .console
            .contains("error=\"kernel-headers tarball: read the tarball"));
        let mut sys = FakeSys::initramfs();
        assert_eq!(worker(&mut sys, good().as_slice(), r, "6.1.0-t"), 0);
        assert_eq!(fs::read_to_string(&status).unwrap(), "ready\n");
        assert!(
            sys.console.contains("HYPEMAN-HEADERS-READY ts="),
            "{}",
            sys.console
        );
        assert!(sys
            .console
            .contains("linux-headers-6.1.0-t: 5 entries, 17 bytes"));
    }

    #[test]
    fn another_kernels_headers_or_an_odd_release_are_refused() {
        let root = root_with_others();
        let r = root.path();
        let e = install(good().as_slice(), r, "6.1.0-other").unwrap_err();
        assert!(matches!(e, InstallError::OtherKernel { .. }), "{e:?}");
        assert!(!r.join("usr/src/linux-headers-6.1.0-other").exists());
        for bad in ["", ".", "..", "a/b"] {
            let e = install(good().as_slice(), r, bad).unwrap_err();
            assert!(matches!(e, InstallError::BadRelease(_)), "{e:?}");
        }
        // Nothing of the others was touched by the refusals.
        assert!(r.join("lib/modules/5.10.0-old/kernel").is_dir());
    }

    #[test]
    fn an_mtime_past_what_the_clock_holds_does_not_panic() {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_mtime(u64::MAX);
        b.append_data(&mut h, "Makefile", b"all:\n".as_slice())
            .unwrap();
        let t = b.into_inner().unwrap().finish().unwrap();
        let root = tempfile::tempdir().unwrap();
        let done = install(t.as_slice(), root.path(), "6.1.0-t").unwrap();
        assert_eq!(done.entries, 1);
    }

    #[test]
    fn a_tree_without_a_makefile_is_refused() {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, "README", b"x".as_slice()).unwrap();
        let t = b.into_inner().unwrap().finish().unwrap();
        let root = tempfile::tempdir().unwrap();
        let e = install(t.as_slice(), root.path(), "6.1.0-t").unwrap_err();
        assert!(matches!(e, InstallError::NotHeaders), "{e:?}");
        assert!(!root.path().join("usr/src/linux-headers-6.1.0-t").exists());
    }
}
