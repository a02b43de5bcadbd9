//! `host-sysmgr run REF -- CMD` with an image from a real registry (Debian's
//! docker-registry on 127.0.0.1, pushed with skopeo; made from Debian's
//! busybox-static): the app's code and output come back, the image's env,
//! workdir and user are honoured, deleted files stay deleted, and a second
//! run with the registry gone pulls and builds nothing.

#[path = "../../host-sysmgr/tests/support/oci.rs"]
mod oci;
#[path = "../../host-sysmgr/tests/support/registry.rs"]
mod registry;

use anyhow::{ensure, Result};
use oci::{busybox_layer, layer, OciLayout, E};
use std::path::Path;
use std::process::{Command, Stdio};

fn run(data: &Path, args: &[&str]) -> Result<(Option<i32>, String, String)> {
    let bins = tests_vm::artifacts::release_binaries()?;
    let out = Command::new(&bins.host_sysmgr)
        .args(args)
        .env("GUESTINIT_DATA_DIR", data)
        .env("GUESTINIT_INIT", &bins.init)
        .env("GUESTINIT_AGENT", &bins.agent)
        .stdin(Stdio::null())
        .output()?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn run_an_image_from_a_registry_with_its_config_then_again_offline() -> Result<()> {
    let kdir = tests_vm::artifacts::workspace_root().join(".cache/kernel-build");
    ensure!(
        kdir.join("manifest.json").is_file(),
        "no kernel/ build (scripts/setup.sh builds it)"
    );
    let reg = registry::Registry::start();
    let work = tempfile::tempdir()?;
    let mut img = OciLayout::new(&work.path().join("oci"));
    let removed = layer(&[E::Dir("etc/"), E::File("etc/secret", 0o644, b"lower layer")]);
    let whiteout = layer(&[E::File("etc/.wh.secret", 0o644, b"")]);
    let cfg = serde_json::json!({
        "Cmd": ["/bin/sh", "-c", "echo \"$GREETING from $(pwd) as $(id -u)\"; test ! -e /etc/secret && echo secret-gone; exit 42"],
        "Env": ["GREETING=hello", "PATH=/bin"],
        "WorkingDir": "/srv",
        "User": "1000",
    });
    let arch = if std::env::consts::ARCH == "x86_64" {
        "amd64"
    } else {
        "arm64"
    };
    let m = img.image(&[busybox_layer(), removed, whiteout], cfg, arch);
    img.tag(m, "v1");
    let r = format!("{}/demo/busybox:v1", reg.addr);
    img.push("v1", &r);

    let data = work.path().join("data");
    let k = kdir.display().to_string();
    let (code, _, err) = run(&data, &["kernel", "import", &k])?;
    ensure!(code == Some(0), "{err}");
    let (code, out, err) = run(&data, &["run", &r])?;
    ensure!(code == Some(42), "{code:?}\n{out}\n{err}");
    ensure!(
        out.contains("hello from /srv as 1000") && out.contains("secret-gone"),
        "{out}"
    );

    // Overrides: a trailing command replaces cmd, --env/--workdir/--user win.
    let args = [
        "run",
        "--env",
        "GREETING=bye",
        "--workdir",
        "/tmp",
        "--user",
        "0",
        &r,
        "--",
    ];
    let mut with_cmd: Vec<&str> = args.to_vec();
    with_cmd.extend(["/bin/sh", "-c", "echo \"$GREETING $(pwd) $(id -u)\""]);
    let (code, out, err) = run(&data, &with_cmd)?;
    ensure!(
        code == Some(0) && out.contains("bye /tmp 0"),
        "{code:?}\n{out}\n{err}"
    );

    // The registry is gone: the cached image runs, nothing is pulled or built.
    let images = data.join("system/images");
    let built: Vec<_> = std::fs::read_dir(&images)?
        .flatten()
        .map(|e| e.path())
        .collect();
    drop(reg);
    let (code, out, err) = run(&data, &["run", &r])?;
    ensure!(
        code == Some(42) && out.contains("hello from /srv"),
        "{code:?}\n{out}\n{err}"
    );
    let again: Vec<_> = std::fs::read_dir(&images)?
        .flatten()
        .map(|e| e.path())
        .collect();
    ensure!(built == again, "{built:?} vs {again:?}");
    Ok(())
}
