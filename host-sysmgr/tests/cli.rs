//! The `host-sysmgr` binary as a user runs it: usage errors, bounds on every
//! numeric option, clear messages, exit statuses as documented, and no work
//! folder left behind.

use std::path::Path;
use std::process::{Command, Output};

struct Run {
    out: Output,
    stderr: String,
}

/// Runs host-sysmgr with `TMPDIR` set to `tmp`, so its work folder is visible.
fn host_sysmgr(tmp: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_host-sysmgr"))
        .args(args)
        .env("TMPDIR", tmp)
        .output()
        .expect("run host-sysmgr");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    Run { out, stderr }
}

/// A fixture: a file that is not a kernel, an initrd file and a rootfs folder.
struct Inputs {
    dir: tempfile::TempDir,
    tmp: tempfile::TempDir,
}

impl Inputs {
    fn new() -> Inputs {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("vmlinux"), b"not a kernel").expect("write");
        std::fs::write(dir.path().join("initrd"), b"070701").expect("write");
        std::fs::create_dir(dir.path().join("rootfs")).expect("mkdir");
        std::fs::write(dir.path().join("rootfs/hello"), b"hi").expect("write");
        Inputs {
            dir,
            tmp: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// `run --kernel K --initrd I --rootfs R EXTRA… -- true`.
    fn run(&self, kernel: &str, extra: &[&str]) -> Run {
        let (k, i, r) = (self.path(kernel), self.path("initrd"), self.path("rootfs"));
        let mut args = vec!["run", "--kernel", &k, "--initrd", &i, "--rootfs", &r];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "true"]);
        host_sysmgr(self.tmp.path(), &args)
    }

    fn assert_no_work_folder_left(&self) {
        let left: Vec<_> = std::fs::read_dir(self.tmp.path())
            .expect("read tmp")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert!(left.is_empty(), "left behind in TMPDIR: {left:?}");
    }
}

fn assert_failure(r: &Run, needle: &str) {
    assert_eq!(r.out.status.code(), Some(125), "stderr: {}", r.stderr);
    assert!(
        r.stderr.contains(needle),
        "want {needle:?} in: {}",
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

#[test]
fn usage_errors_exit_125_as_documented() {
    let tmp = tempfile::tempdir().expect("tempdir");
    assert_failure(&host_sysmgr(tmp.path(), &["run"]), "required");
    assert_failure(&host_sysmgr(tmp.path(), &["--no-such-flag"]), "unexpected");
    assert_failure(&host_sysmgr(tmp.path(), &[]), "Usage");
    let help = host_sysmgr(tmp.path(), &["--help"]);
    assert_eq!(help.out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.out.stdout);
    assert!(text.contains("125") && text.contains("130"), "{text}");
    let version = host_sysmgr(tmp.path(), &["--version"]);
    assert_eq!(version.out.status.code(), Some(0));
}

#[test]
fn huge_or_out_of_range_numbers_are_refused_without_a_panic() {
    let inputs = Inputs::new();
    for (flag, value) in [
        ("--timeout", "18446744073709551615"),
        ("--timeout", "0"),
        ("--memory", "4294967295"),
        ("--memory", "8"),
        ("--cpus", "0"),
        ("--cpus", "100000"),
        ("--timeout", "-1"),
    ] {
        let r = inputs.run("vmlinux", &[&format!("{flag}={value}")]);
        assert_failure(&r, flag);
        inputs.assert_no_work_folder_left();
    }
}

#[test]
fn a_kernel_folder_or_missing_file_is_named_with_its_cause_once() {
    let inputs = Inputs::new();
    let r = inputs.run("rootfs", &[]);
    assert_failure(&r, "is a directory, not a kernel image");
    let r = inputs.run("missing", &[]);
    assert_failure(&r, "--kernel");
    assert_eq!(
        r.stderr.matches("No such file or directory").count(),
        1,
        "{}",
        r.stderr
    );
    inputs.assert_no_work_folder_left();
}

#[test]
fn a_vmm_that_fails_to_start_shows_its_own_stderr() {
    let inputs = Inputs::new();
    // QEMU refuses a kernel file that is not a kernel and exits at once.
    let r = inputs.run("vmlinux", &["--timeout", "60"]);
    assert_failure(&r, "the VMM's stderr:");
    assert!(r.stderr.contains("qemu"), "{}", r.stderr);
    assert!(!r.stderr.contains("serial log"), "{}", r.stderr);
    inputs.assert_no_work_folder_left();
}
