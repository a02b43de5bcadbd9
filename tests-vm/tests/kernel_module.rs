//! The kernel/ build's headers tarball, extracted by init's headers worker
//! (`init --headers-worker-guest ROOT RELEASE`, the code the guest runs):
//! an out-of-tree module builds against the tree on the host and loads in a
//! VM booted with that kernel. Skipped (with a message) when no kernel was
//! built (`bash kernel/build.sh`).

use anyhow::{ensure, Context, Result};
use std::process::Command;
use tests_vm::guest::Guest;

const HELLO_C: &str = r#"#include <linux/module.h>
#include <linux/init.h>
static int __init hello_init(void) { pr_info("guestinit-hello: loaded\n"); return 0; }
static void __exit hello_exit(void) { }
module_init(hello_init);
module_exit(hello_exit);
MODULE_LICENSE("GPL");
"#;

#[test]
fn an_out_of_tree_module_builds_against_the_headers_and_loads() -> Result<()> {
    let Some(kernel) = tests_vm::kernel::project_build() else {
        eprintln!(
            "skipped: no kernel built from kernel/ in .cache/kernel-build (bash kernel/build.sh)"
        );
        return Ok(());
    };
    let tarball = kernel.vmlinux.with_file_name("kernel-headers.tar.gz");
    if !tarball.is_file() {
        eprintln!(
            "skipped: {} missing (rebuild with bash kernel/build.sh)",
            tarball.display()
        );
        return Ok(());
    }
    let work = tempfile::tempdir()?;
    let headers = headers_by_the_worker(work.path(), &tarball, &kernel.release)?;
    let module = work.path().join("hello");
    std::fs::create_dir_all(&module)?;
    std::fs::write(module.join("hello.c"), HELLO_C)?;
    std::fs::write(module.join("Makefile"), "obj-m := hello.o\n")?;
    let built = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(&headers)
        .arg(format!("M={}", module.display()))
        .args(["ARCH=x86_64", "modules"])
        .output()
        .context("run make")?;
    ensure!(
        built.status.success(),
        "module build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let ko = std::fs::read(module.join("hello.ko"))?;

    let script =
        "busybox insmod /hello.ko && busybox dmesg | busybox grep -o 'guestinit-hello: loaded'";
    let mut g = Guest::new("kernel-module", &["/bin/sh", "-c", script]);
    g.kernel = Some(kernel);
    g.image_files = vec![("hello.ko".into(), ko, 0o644)];
    let out = g.run()?;
    ensure!(out.has_line("guestinit-hello: loaded"), "{}", out.log);
    ensure!(
        out.exit_line()? == r#"HYPEMAN-EXIT code=0 message="success""#,
        "{}",
        out.log
    );
    Ok(())
}

#[test]
fn the_manifest_names_each_output_with_its_sha256() -> Result<()> {
    use sha2::Digest;
    let Some(kernel) = tests_vm::kernel::project_build() else {
        eprintln!(
            "skipped: no kernel built from kernel/ in .cache/kernel-build (bash kernel/build.sh)"
        );
        return Ok(());
    };
    let dir = kernel
        .vmlinux
        .parent()
        .context("build folder")?
        .to_path_buf();
    let Ok(text) = std::fs::read_to_string(dir.join("manifest.json")) else {
        eprintln!("skipped: no manifest.json (rebuild with bash kernel/build.sh)");
        return Ok(());
    };
    let manifest: serde_json::Value = serde_json::from_str(&text)?;
    ensure!(
        manifest["kind"] == "kernel" && manifest["release"] == kernel.release.as_str(),
        "{text}"
    );
    let files = manifest["files"].as_object().context("files")?;
    for name in ["vmlinux", "bzImage", "config", "kernel-headers.tar.gz"] {
        let bytes = std::fs::read(dir.join(name))?;
        let sum = format!("{:x}", sha2::Sha256::digest(&bytes));
        ensure!(files[name]["sha256"] == sum.as_str(), "{name}: {text}");
        ensure!(files[name]["size"] == bytes.len(), "{name}: {text}");
    }
    Ok(())
}

/// Runs init's headers worker on a root folder holding the staged tarball
/// and another release's trees; checks what it did; returns the tree.
fn headers_by_the_worker(
    work: &std::path::Path,
    tarball: &std::path::Path,
    release: &str,
) -> Result<std::path::PathBuf> {
    let root = work.join("root");
    std::fs::create_dir_all(root.join("opt/hypeman"))?;
    std::fs::create_dir_all(root.join("lib/modules/5.10.0-other/kernel"))?;
    std::fs::create_dir_all(root.join("usr/src/linux-headers-5.10.0-other"))?;
    std::fs::copy(tarball, root.join("opt/hypeman/kernel-headers.tar.gz"))?;
    let init = tests_vm::artifacts::release_binaries()?.init;
    let out = Command::new(&init)
        .arg("--headers-worker-guest")
        .arg(&root)
        .arg(release)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "{:?}\n{stdout}", out.status);
    ensure!(stdout.contains("HYPEMAN-HEADERS-READY ts="), "{stdout}");
    let status = std::fs::read_to_string(root.join("run/hypeman/kernel-headers.status"))?;
    ensure!(status == "ready\n", "{status}");
    let link = std::fs::read_link(root.join(format!("lib/modules/{release}/build")))?;
    ensure!(
        link == std::path::Path::new(&format!("/usr/src/linux-headers-{release}")),
        "{link:?}"
    );
    for gone in [
        "lib/modules/5.10.0-other",
        "usr/src/linux-headers-5.10.0-other",
    ] {
        ensure!(!root.join(gone).exists(), "{gone} left");
    }
    Ok(root.join(format!("usr/src/linux-headers-{release}")))
}
