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
    make_modules(&headers, &module)?;
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

/// Stand-ins for NVIDIA's driver stack: `nvidia` registers the frontend's
/// character major (195, as the real driver) and one GPU under
/// /proc/driver/nvidia/gpus; `nvidia-uvm` a dynamic major; every module
/// needs `nvidia`'s symbol (so modules.dep orders them) and logs its load.
const STANDIN_NVIDIA_C: &str = r#"#include <linux/module.h>
#include <linux/fs.h>
#include <linux/proc_fs.h>
static const struct file_operations fops = { .owner = THIS_MODULE };
static struct proc_dir_entry *root;
int nvidia_standin_probe(void) { return 0; }
EXPORT_SYMBOL(nvidia_standin_probe);
static int __init m_init(void) {
	int r = register_chrdev(195, "nvidia-frontend", &fops);
	if (r < 0) return r;
	root = proc_mkdir("driver/nvidia", NULL);
	proc_mkdir("0000:00:05.0", proc_mkdir("gpus", root));
	pr_info("gpu stand-in: nvidia loaded\n");
	return 0;
}
static void __exit m_exit(void) { proc_remove(root); unregister_chrdev(195, "nvidia-frontend"); }
module_init(m_init);
module_exit(m_exit);
MODULE_LICENSE("GPL");
"#;

/// A child module of the stand-in stack: `decl` at file scope, `start` and
/// `stop` in its init and exit, then one log line.
fn standin_child(name: &str, decl: &str, start: &str, stop: &str, log_args: &str) -> String {
    format!(
        r#"#include <linux/module.h>
#include <linux/fs.h>
extern int nvidia_standin_probe(void);
static const struct file_operations fops = {{ .owner = THIS_MODULE }};
{decl}
static int __init m_init(void) {{
	nvidia_standin_probe();
	{start}
	pr_info("gpu stand-in: {name} loaded{log_args});
	return 0;
}}
static void __exit m_exit(void) {{ {stop} }}
module_init(m_init);
module_exit(m_exit);
MODULE_LICENSE("GPL");
"#
    )
}

fn standin_sources() -> Vec<(&'static str, String)> {
    let uvm = standin_child(
        "nvidia_uvm",
        "static int major;",
        "major = register_chrdev(0, \"nvidia-uvm\", &fops);",
        "unregister_chrdev(major, \"nvidia-uvm\");",
        "\\n\"",
    );
    let modeset = standin_child("nvidia_modeset", "", "", "", "\\n\"");
    let drm = standin_child(
        "nvidia_drm",
        "static int modeset;\nmodule_param(modeset, int, 0444);",
        "",
        "",
        " modeset=%d\\n\", modeset",
    );
    vec![
        ("nvidia", STANDIN_NVIDIA_C.to_string()),
        ("nvidia-uvm", uvm),
        ("nvidia-modeset", modeset),
        ("nvidia-drm", drm),
    ]
}

/// init's GPU step in a VM, with `hypeman.gpu=1` standing in for the PCI
/// function QEMU cannot emulate: the stand-in stack loads from the image's
/// module tree in order, nvidia-drm with modeset=1, the device nodes get
/// the majors the modules registered, and the status file says ok.
#[test]
fn the_gpu_step_loads_a_stand_in_driver_stack_in_order_and_makes_its_nodes() -> Result<()> {
    let Some(kernel) = tests_vm::kernel::project_build() else {
        eprintln!("skipped: no kernel built from kernel/ in .cache/kernel-build");
        return Ok(());
    };
    let tarball = kernel.vmlinux.with_file_name("kernel-headers.tar.gz");
    let work = tempfile::tempdir()?;
    let headers = headers_by_the_worker(work.path(), &tarball, &kernel.release)?;
    let module = work.path().join("standin");
    std::fs::create_dir_all(&module)?;
    let sources = standin_sources();
    let mut objs = Vec::new();
    for (name, src) in &sources {
        std::fs::write(module.join(format!("{name}.c")), src)?;
        objs.push(format!("{name}.o"));
    }
    std::fs::write(
        module.join("Makefile"),
        format!("obj-m := {}\n", objs.join(" ")),
    )?;
    make_modules(&headers, &module)?;
    let dir = format!("lib/modules/{}", kernel.release);
    let mut files = vec![(
        format!("{dir}/modules.dep"),
        b"extra/nvidia.ko:\nextra/nvidia-uvm.ko: extra/nvidia.ko\nextra/nvidia-modeset.ko: extra/nvidia.ko\nextra/nvidia-drm.ko: extra/nvidia-modeset.ko extra/nvidia.ko\n".to_vec(),
        0o644,
    )];
    for (name, _) in &sources {
        let ko = std::fs::read(module.join(format!("{name}.ko")))?;
        files.push((format!("{dir}/extra/{name}.ko"), ko, 0o644));
    }
    let script = "B=busybox; $B ls -l /dev/nvidiactl /dev/nvidia-modeset /dev/nvidia0 /dev/nvidia-uvm /dev/nvidia-uvm-tools; \
        $B cat /sys/module/nvidia_drm/parameters/modeset /run/hypeman/gpu-init.status; \
        $B grep nvidia /proc/devices; $B dmesg | $B grep -o 'gpu stand-in: .*'";
    let mut g = Guest::new("gpu-standin", &["/bin/sh", "-c", script]);
    g.kernel = Some(kernel);
    g.cmdline = "hypeman.gpu=1".into();
    g.image_files = files;
    let out = g.run()?;
    let log = &out.log;
    let order: Vec<&str> = log
        .lines()
        .filter_map(|l| l.trim().strip_prefix("gpu stand-in: "))
        .collect();
    ensure!(
        order
            == [
                "nvidia loaded",
                "nvidia_uvm loaded",
                "nvidia_modeset loaded",
                "nvidia_drm loaded modeset=1"
            ],
        "{order:?}\n{log}"
    );
    let uvm = log
        .lines()
        .find_map(|l| l.trim().strip_suffix(" nvidia-uvm"))
        .context("no nvidia-uvm major")?
        .trim()
        .to_string();
    for (numbers, node) in [
        ("195, 255", "/dev/nvidiactl"),
        ("195, 254", "/dev/nvidia-modeset"),
        ("195,   0", "/dev/nvidia0"),
        (&format!("{uvm},   0"), "/dev/nvidia-uvm"),
        (&format!("{uvm},   1"), "/dev/nvidia-uvm-tools"),
    ] {
        ensure!(
            log.lines().any(|l| l.starts_with("crw-rw-rw-")
                && l.contains(numbers)
                && l.trim_end().ends_with(node)),
            "{node} ({numbers}, mode 666) missing:\n{log}"
        );
    }
    ensure!(
        log.contains("ok 1 GPU(s); loaded nvidia, nvidia_uvm, nvidia_modeset, nvidia_drm"),
        "{log}"
    );
    ensure!(
        out.exit_line()? == r#"HYPEMAN-EXIT code=0 message="success""#,
        "{log}"
    );
    Ok(())
}

/// `make -C HEADERS M=DIR modules`: the out-of-tree modules of `dir`.
fn make_modules(headers: &std::path::Path, dir: &std::path::Path) -> Result<()> {
    let built = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(headers)
        .arg(format!("M={}", dir.display()))
        .args(["ARCH=x86_64", "modules"])
        .output()
        .context("run make")?;
    ensure!(
        built.status.success(),
        "module build in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    Ok(())
}
