//! The system manager end to end: `ensure` from two processes at once, a
//! corrupted initrd or kernel caught before it boots, and `run --rootfs`
//! on a fresh data folder — the kernel downloaded from a catalog served by
//! a real HTTP server on 127.0.0.1, the initrd built from our init and
//! agent — booting in QEMU and returning the app's exit code.

use anyhow::{bail, ensure, Context, Result};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use tests_vm::rootfs::Flavor;

fn host_sysmgr(data: &Path, args: &[&str], env: &[(&str, &Path)]) -> Result<Command> {
    let bins = tests_vm::artifacts::release_binaries()?;
    let mut cmd = Command::new(&bins.host_sysmgr);
    cmd.args(args)
        .env("GUESTINIT_DATA_DIR", data)
        .env_remove("GUESTINIT_CATALOG")
        .env("GUESTINIT_INIT", &bins.init)
        .env("GUESTINIT_AGENT", &bins.agent);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(cmd)
}

fn output(mut cmd: Command) -> Result<Output> {
    Ok(cmd.stdin(Stdio::null()).output()?)
}

fn ok(cmd: Command) -> Result<String> {
    let out = output(cmd)?;
    ensure!(
        out.status.success(),
        "{:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn kernel_build() -> Result<PathBuf> {
    let dir = tests_vm::artifacts::workspace_root().join(".cache/kernel-build");
    if !dir.join("manifest.json").is_file() {
        bail!(
            "no kernel/ build in {} (scripts/setup.sh builds it)",
            dir.display()
        );
    }
    Ok(dir)
}

#[test]
fn ensure_from_two_processes_at_once_installs_once_and_catches_corruption() -> Result<()> {
    let data = tempfile::tempdir()?;
    let kdir = kernel_build()?;
    ok(host_sysmgr(
        data.path(),
        &["kernel", "import", &kdir.display().to_string()],
        &[],
    )?)?;
    let spawn = || -> Result<Child> {
        let mut cmd = host_sysmgr(data.path(), &["ensure", "--json"], &[])?;
        Ok(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?)
    };
    let (a, b) = (spawn()?, spawn()?);
    let outs = [a.wait_with_output()?, b.wait_with_output()?];
    let mut results = Vec::new();
    for o in &outs {
        ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        results.push(serde_json::from_slice::<serde_json::Value>(&o.stdout)?);
    }
    ensure!(results[0]["initrd"] == results[1]["initrd"], "{results:?}");
    let changed = results.iter().filter(|r| r["changed"] == true).count();
    ensure!(changed == 1, "exactly one process builds: {results:?}");
    let arch = std::env::consts::ARCH;
    let builds: Vec<_> = std::fs::read_dir(data.path().join("system/initrd").join(arch))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .collect();
    ensure!(builds.len() == 1, "one build: {builds:?}");
    let latest = std::fs::read_link(data.path().join("system/initrd").join(arch).join("latest"))?;
    ensure!(latest.is_relative(), "{latest:?}");

    // A flipped byte in the initrd: ensure rebuilds it (same inputs, same id).
    let initrd = PathBuf::from(results[0]["initrd"].as_str().context("initrd")?);
    flip_byte(&initrd, 1000)?;
    let again: serde_json::Value =
        serde_json::from_str(&ok(host_sysmgr(data.path(), &["ensure", "--json"], &[])?)?)?;
    ensure!(
        again["changed"] == true && again["initrd"] == results[0]["initrd"],
        "{again}"
    );
    ok(host_sysmgr(data.path(), &["initrd", "path"], &[])?)?;

    // A flipped byte in an imported kernel (no catalog entry to download it
    // again): refused, never handed to a VMM.
    let kernel = PathBuf::from(results[0]["kernel"].as_str().context("kernel")?);
    flip_byte(&kernel, 4096)?;
    let out = output(host_sysmgr(data.path(), &["kernel", "path"], &[])?)?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(125) && err.contains("does not match its record"),
        "{err}"
    );
    let out = output(host_sysmgr(data.path(), &["ensure"], &[])?)?;
    ensure!(
        !out.status.success(),
        "ensure must not hand out a corrupt kernel"
    );
    Ok(())
}

fn flip_byte(path: &Path, at: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at)?;
    f.write_all_at(&[b[0] ^ 0x01], at)?;
    Ok(())
}

/// `python3 -m http.server`'s handler on 127.0.0.1, an ephemeral port.
struct HttpServer(Child, u16);

impl HttpServer {
    fn start(dir: &Path) -> Result<HttpServer> {
        let script = "import functools,http.server,sys\n\
            h=functools.partial(http.server.SimpleHTTPRequestHandler,directory=sys.argv[1])\n\
            s=http.server.ThreadingHTTPServer(('127.0.0.1',0),h)\n\
            print(s.server_address[1],flush=True)\n\
            s.serve_forever()";
        let mut child = Command::new("python3")
            .args(["-c", script])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start python3's http.server")?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("stdout")?;
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let port = line.trim().parse().context("http.server's port")?;
        Ok(HttpServer(child, port))
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_on_a_fresh_data_folder_downloads_builds_boots_and_returns_the_code() -> Result<()> {
    let kdir = kernel_build()?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(kdir.join("manifest.json"))?)?;
    let server = HttpServer::start(&kdir)?;
    let work = tempfile::tempdir()?;
    let catalog = work.path().join("catalog.toml");
    std::fs::write(
        &catalog,
        format!(
            "[[kernel]]\nname = \"guestinit\"\nversion = \"test-1\"\narch = \"{}\"\n\
             url = \"http://127.0.0.1:{}/vmlinux\"\nsha256 = \"{}\"\nsize = {}\ndefault = true\n",
            std::env::consts::ARCH,
            server.1,
            manifest["files"]["vmlinux"]["sha256"]
                .as_str()
                .context("sha256")?,
            manifest["files"]["vmlinux"]["size"],
        ),
    )?;
    let rootfs = work.path().join("root");
    std::fs::create_dir(&rootfs)?;
    tests_vm::rootfs::populate(&rootfs, Flavor::Busybox)?;
    let data = work.path().join("data");
    let root = rootfs.display().to_string();
    let args = [
        "run",
        "--rootfs",
        &root,
        "--",
        "/bin/sh",
        "-c",
        "echo from-the-app; exit 7",
    ];
    let out = output(host_sysmgr(
        &data,
        &args,
        &[("GUESTINIT_CATALOG", &catalog)],
    )?)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.code() == Some(7) && stdout.contains("from-the-app"),
        "{:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let versions: serde_json::Value =
        serde_json::from_str(&ok(host_sysmgr(&data, &["versions", "--json"], &[])?)?)?;
    ensure!(versions["defaults"]["kernel"] == "test-1", "{versions}");
    // The boot was counted for the versions it used.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("system/state.json"))?)?;
    let key = format!("kernel/{}/test-1", std::env::consts::ARCH);
    ensure!(state["outcomes"][&key]["ok"] == 1, "{state}");
    Ok(())
}

#[test]
fn a_distribution_kernel_imports_with_its_boot_modules_and_boots() -> Result<()> {
    let debian = tests_vm::kernel::debian()?;
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    let root = debian.modules_root.display().to_string();
    let version = ok(host_sysmgr(&data, &["kernel", "import", &root], &[])?)?;
    ensure!(version.trim() == debian.release, "{version}");
    let show: serde_json::Value = serde_json::from_str(&ok(host_sysmgr(
        &data,
        &["kernel", "show", "--json"],
        &[],
    )?)?)?;
    ensure!(show["modules"]["file"] == "modules.tar", "{show}");
    // The unpacked vmlinux is the one scripts/fetch-kernel.sh extracts with xz.
    let path = ok(host_sysmgr(&data, &["kernel", "path"], &[])?)?;
    ensure!(std::fs::read(path.trim())? == std::fs::read(&debian.vmlinux)?);
    let rootfs = work.path().join("root");
    std::fs::create_dir(&rootfs)?;
    tests_vm::rootfs::populate(&rootfs, Flavor::Busybox)?;
    let r = rootfs.display().to_string();
    let args = [
        "run",
        "--rootfs",
        &r,
        "--",
        "/bin/sh",
        "-c",
        "uname -r; exit 5",
    ];
    let out = output(host_sysmgr(&data, &args, &[])?)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.code() == Some(5) && stdout.contains(&format!("\n{}", debian.release)),
        "{:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        stdout.contains("[hypeman-init:modules] loaded"),
        "the initrd carried the modules"
    );
    Ok(())
}

#[test]
fn a_detached_instance_pins_its_versions_until_it_is_removed() -> Result<()> {
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    let states = work.path().join("instances");
    let kdir = kernel_build()?.display().to_string();
    let version = ok(host_sysmgr(&data, &["kernel", "import", &kdir], &[])?)?;
    let rootfs = work.path().join("root");
    std::fs::create_dir(&rootfs)?;
    tests_vm::rootfs::populate(&rootfs, Flavor::Busybox)?;
    let r = rootfs.display().to_string();
    let env = [("HOST_SYSMGR_STATE_DIR", states.as_path())];
    let run = [
        "run",
        "-d",
        "--name",
        "pinned",
        "--rootfs",
        &r,
        "--",
        "/bin/sh",
        "-c",
        "sleep 600",
    ];
    ok(host_sysmgr(&data, &run, &env)?)?;
    let pins = || -> Result<serde_json::Value> {
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(data.join("system/state.json"))?)?;
        Ok(state["pins"].clone())
    };
    let stop = host_sysmgr(&data, &["stop", "--timeout", "1", "pinned"], &env);
    let pinned = pins()?;
    let vmm = pinned["pinned"]["vmm"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ok(stop?)?;
    ensure!(pinned["pinned"]["kernel"] == version.trim(), "{pinned}");
    ensure!(vmm.contains("QEMU"), "{pinned}");
    ok(host_sysmgr(&data, &["rm", "pinned"], &env)?)?;
    ensure!(
        pins()?.as_object().is_some_and(|m| m.is_empty()),
        "{}",
        pins()?
    );
    Ok(())
}

#[test]
fn config_via_the_initramfs_or_vsock_boots_without_a_config_disk() -> Result<()> {
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    let kdir = kernel_build()?.display().to_string();
    ok(host_sysmgr(&data, &["kernel", "import", &kdir], &[])?)?;
    let rootfs = work.path().join("root");
    std::fs::create_dir(&rootfs)?;
    tests_vm::rootfs::populate(&rootfs, Flavor::Busybox)?;
    // A volume: with no config disk it becomes vdc.
    let vol_dir = work.path().join("vol");
    std::fs::create_dir(&vol_dir)?;
    std::fs::write(vol_dir.join("hello"), "from the volume\n")?;
    let vol = work.path().join("vol.img");
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&vol_dir)
        .arg(&vol)
        .arg("8M")
        .status()?;
    ensure!(mkfs.success(), "mkfs.ext4");
    let r = rootfs.display().to_string();
    let v = format!("{}:/data:ro", vol.display());
    let script = "cat /data/hello; ls /dev/vdd 2>/dev/null || echo no-vdd; exit 6";
    let sources = [
        ("initrd", "config.json from the initramfs"),
        ("vsock", "config.json from the host over vsock 2:2223"),
    ];
    for (via, source) in sources {
        let args = [
            "run",
            "--config-via",
            via,
            "--volume",
            &v,
            "--rootfs",
            &r,
            "--",
            "/bin/sh",
            "-c",
            script,
        ];
        let out = output(host_sysmgr(&data, &args, &[])?)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(6),
            "{via}: {:?}\n{stdout}\n{stderr}",
            out.status
        );
        for want in [source, "from the volume", "no-vdd"] {
            ensure!(stdout.contains(want), "{via}: {want}:\n{stdout}");
        }
    }
    Ok(())
}

/// systemd mode with a stand-in init system (a busybox script as
/// /sbin/init): it runs as PID 1 and finds hypeman's units, their enabling
/// links, the masked serial getty and the env file; the full systemd boot is
/// a test of its own.
#[test]
fn systemd_mode_hands_pid_1_to_the_images_init_with_the_units_in_place() -> Result<()> {
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    let kdir = kernel_build()?.display().to_string();
    ok(host_sysmgr(&data, &["kernel", "import", &kdir], &[])?)?;
    let rootfs = work.path().join("root");
    std::fs::create_dir(&rootfs)?;
    tests_vm::rootfs::populate(&rootfs, Flavor::Busybox)?;
    std::fs::create_dir_all(rootfs.join("sbin"))?;
    let script = "#!/bin/sh\n\
        echo \"pid=$$\"\n\
        B=/bin/busybox\n\
        $B head -2 /etc/systemd/system/hypeman-agent.service\n\
        $B readlink /etc/systemd/system/multi-user.target.wants/hypeman-agent.service\n\
        $B readlink /etc/systemd/system/serial-getty@ttyS0.service\n\
        $B cat /etc/hypeman/env\n\
        $B test -x /opt/hypeman/guest-agent && echo agent-staged\n\
        $B cat /run/hypeman/kernel-headers.status\n\
        /opt/hypeman/hypeman-init --headers-worker-guest >/dev/null && $B cat /run/hypeman/kernel-headers.status\n\
        $B test -f /lib/modules/$($B uname -r)/build/Makefile && echo makefile-ok\n\
        /bin/busybox poweroff -f\n";
    std::fs::write(rootfs.join("sbin/init"), script)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        rootfs.join("sbin/init"),
        std::fs::Permissions::from_mode(0o755),
    )?;
    let r = rootfs.display().to_string();
    let args = [
        "run",
        "--init-mode",
        "systemd",
        "--env",
        "GREETING=hi there",
        "--rootfs",
        &r,
        "--",
        "/sbin/init",
    ];
    let out = output(host_sysmgr(&data, &args, &[])?)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.code() == Some(0),
        "{:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "mode=systemd",
        "pid=1",
        "[Unit]",
        "Description=Hypeman Guest Agent",
        "../hypeman-agent.service",
        "/dev/null",
        "GREETING='hi there'",
        "HOME=/root",
        "agent-staged",
        "makefile-ok",
    ] {
        ensure!(stdout.contains(want), "{want:?} missing:\n{stdout}");
    }
    // The status init left, then the one the worker (as the unit runs it) left.
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    let at = |l: &str| lines.iter().position(|x| *x == l);
    ensure!(
        matches!((at("pending"), at("ready")), (Some(p), Some(r)) if p < r),
        "{stdout}"
    );
    Ok(())
}

/// The app's wait for the headers worker, then what it finds.
const HEADERS_SCRIPT: &str = "S=/run/hypeman/kernel-headers.status; echo first=$(cat $S); \
    i=0; while [ $i -lt 900 ]; do case $(cat $S) in pending|running) sleep 1;; *) break;; esac; i=$((i+1)); done; \
    echo status=$(cat $S); test -f /lib/modules/$(uname -r)/build/Makefile && echo makefile-ok; exit 0";

/// A copy of the kernel/ build folder whose headers tarball is cut in half
/// (its manifest rewritten to match, so the import takes it).
fn kernel_with_a_corrupt_headers_tarball(kdir: &Path, to: &Path) -> Result<()> {
    use sha2::Digest;
    std::fs::create_dir_all(to)?;
    for f in ["vmlinux", "bzImage", "config", "release"] {
        if kdir.join(f).exists() {
            std::fs::copy(kdir.join(f), to.join(f))?;
        }
    }
    let good = std::fs::read(kdir.join("kernel-headers.tar.gz"))?;
    let bad = &good[..good.len() / 2];
    std::fs::write(to.join("kernel-headers.tar.gz"), bad)?;
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(kdir.join("manifest.json"))?)?;
    m["files"]["kernel-headers.tar.gz"] = serde_json::json!({
        "sha256": format!("{:x}", sha2::Sha256::digest(bad)),
        "size": bad.len(),
    });
    std::fs::write(to.join("manifest.json"), serde_json::to_vec_pretty(&m)?)?;
    Ok(())
}

/// Exec mode with the kernel's headers in the initrd: the worker runs
/// beside the app (which starts while the status says pending), the tree
/// and its build link are in place when it says ready; a corrupt tarball
/// ends in HEADERS-FAILED and the app still runs and returns its code.
#[test]
fn kernel_headers_are_extracted_beside_the_app_and_a_corrupt_tarball_fails_alone() -> Result<()> {
    let work = tempfile::tempdir()?;
    let kdir = kernel_build()?;
    let bad = work.path().join("kernel-bad");
    kernel_with_a_corrupt_headers_tarball(&kdir, &bad)?;
    let rootfs = work.path().join("root");
    std::fs::create_dir(&rootfs)?;
    tests_vm::rootfs::populate(&rootfs, Flavor::Busybox)?;
    let r = rootfs.display().to_string();
    let cases = [
        (
            &kdir,
            "good",
            ["status=ready", "makefile-ok", "HYPEMAN-HEADERS-READY ts="],
        ),
        (
            &bad,
            "bad",
            [
                "status=failed",
                "HYPEMAN-HEADERS-FAILED ts=",
                "error=\"kernel-headers tarball",
            ],
        ),
    ];
    for (kernel, name, wants) in cases {
        let data = work.path().join(format!("data-{name}"));
        let k = kernel.display().to_string();
        ok(host_sysmgr(&data, &["kernel", "import", &k], &[])?)?;
        let args = ["run", "--rootfs", &r, "--", "/bin/sh", "-c", HEADERS_SCRIPT];
        let out = output(host_sysmgr(&data, &args, &[])?)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.code() == Some(0),
            "{name}: {:?}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // The app starts before the worker is done (its first look sees
        // pending or running, never a final state it waited for).
        let start = stdout
            .find("HYPEMAN-PROGRAM-START")
            .context("no PROGRAM-START")?;
        let end = stdout.find("HYPEMAN-HEADERS-").context("no HEADERS line")?;
        ensure!(
            start < end && (stdout.contains("first=pending") || stdout.contains("first=running")),
            "{name}:\n{stdout}"
        );
        for want in wants {
            ensure!(stdout.contains(want), "{name}: {want:?} missing:\n{stdout}");
        }
        if name == "bad" {
            ensure!(!stdout.contains("makefile-ok"), "{stdout}");
        }
    }
    Ok(())
}
