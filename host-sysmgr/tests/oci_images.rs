//! OCI images pulled from a real registry (Debian's docker-registry on
//! 127.0.0.1, images pushed with skopeo): layers applied with whiteouts,
//! opaque folders, hard links, symlinks and modes; a multi-platform index
//! resolved to this host; a cache that serves a second pull with no request;
//! and bad images refused, leaving nothing in the cache or the image store.
//! Root images are checked mounted read-only on a loop device.

#![allow(clippy::unwrap_used)]

mod support;

use host_sysmgr::disks::RootFs;
use host_sysmgr::system::registry::Access;
use host_sysmgr::system::Layout;
use std::path::Path;
use support::oci::{busybox_layer, layer, OciLayout, E};
use support::registry::Registry;

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        _ => "arm64",
    }
}

/// An erofs image mounted read-only through a loop device (the mode bits,
/// setuid included, as the guest will see them); unmounted on drop.
struct Mounted(std::path::PathBuf);

impl Mounted {
    fn new(img: &Path, at: &Path) -> Mounted {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "erofs", "-o", "loop,ro,nodev,nosuid"])
            .arg(img)
            .arg(at)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mounted(at.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// The inode number (NID) of `path` in an erofs image (fsck's extraction
/// does not keep hard links; dump.erofs shows them).
fn erofs_nid(img: &Path, path: &str) -> String {
    let out = std::process::Command::new("dump.erofs")
        .arg(format!("--path={path}"))
        .arg(img)
        .output()
        .expect("dump.erofs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let nid = text
        .split("NID: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next());
    nid.map(str::to_string)
        .unwrap_or_else(|| panic!("{path}: {text}"))
}

/// An extended attribute of `path`, if set.
fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 256];
    // SAFETY: NUL-terminated strings and a buffer that outlive the call, the
    // buffer's real length passed with it.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

fn blobs(layout: &Layout) -> usize {
    std::fs::read_dir(layout.system().join("oci-cache/blobs/sha256"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

fn images(layout: &Layout) -> usize {
    std::fs::read_dir(layout.system().join("images"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn layers_whiteouts_links_and_modes_land_as_a_runtime_would_and_a_second_pull_is_free() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut oci = OciLayout::new(&work.path().join("oci"));
    let bb = busybox_layer();
    let lower = layer(&[
        E::Dir("etc/"),
        E::File("etc/removed", 0o644, b"gone"),
        E::Dir("data/"),
        E::File("data/old", 0o644, b"old"),
        E::File("bin/suid", 0o4755, b"#!/bin/sh\n"),
        E::Owned("srv/owned", 1000, 1000, b"mine"),
        E::Pax(&[
            ("SCHILY.xattr.user.note", "kept"),
            ("SCHILY.xattr.trusted.evil", "dropped"),
        ]),
        E::File("srv/tagged", 0o644, b"x"),
    ]);
    let upper = layer(&[
        E::File("etc/.wh.removed", 0o644, b""),
        E::File("data/.wh..wh..opq", 0o644, b""),
        E::File("data/new", 0o644, b"new"),
        E::Hard("bin/hl", "bin/busybox"),
        E::Symlink("a", "b"),
        E::Symlink("b", "/bin/busybox"),
    ]);
    let cfg = serde_json::json!({"Cmd": ["/bin/sh", "-c", "echo hi"], "Env": ["GREETING=hello"], "WorkingDir": "/srv", "User": "1000"});
    let m = oci.image(&[bb, lower, upper], cfg, arch());
    oci.tag(m, "v1");
    let r = format!("{}/test/layers:v1", reg.addr);
    oci.push("v1", &r);

    let layout = Layout::new(work.path().join("data"));
    let (pulled, img) =
        host_sysmgr::image::prepare(&layout, &r, &Access::default(), RootFs::Erofs).unwrap();
    assert!(
        pulled.downloaded == 4 && img.built,
        "config + 3 layers: {pulled:?}"
    );
    assert_eq!(img.config.user.as_deref(), Some("1000"));
    let root = work.path().join("root");
    let _mounted = Mounted::new(&img.path, &root);
    use std::os::unix::fs::MetadataExt;
    assert!(!root.join("etc/removed").exists(), "whiteout");
    assert!(
        !root.join("data/old").exists() && root.join("data/new").exists(),
        "opaque folder"
    );
    assert_eq!(
        erofs_nid(&img.path, "/bin/hl"),
        erofs_nid(&img.path, "/bin/busybox"),
        "hard link"
    );
    assert_eq!(std::fs::read_link(root.join("a")).unwrap(), Path::new("b"));
    assert_eq!(
        std::fs::read_link(root.join("b")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(
        std::fs::metadata(root.join("bin/suid")).unwrap().mode() & 0o7777,
        0o4755,
        "setuid kept"
    );
    assert_eq!(
        xattr(&root.join("srv/tagged"), "user.note").as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(xattr(&root.join("srv/tagged"), "trusted.evil"), None);
    let owned = std::fs::metadata(root.join("srv/owned")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (1000, 1000));

    // The second pull: no registry at all, nothing built.
    let before = blobs(&layout);
    drop(reg);
    let (pulled, img2) =
        host_sysmgr::image::prepare(&layout, &r, &Access::default(), RootFs::Erofs).unwrap();
    assert_eq!((pulled.downloaded, img2.built), (0, false));
    assert_eq!(img2.path, img.path);
    assert_eq!(blobs(&layout), before);
}

#[test]
fn a_two_platform_index_resolves_to_this_host() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut oci = OciLayout::new(&work.path().join("oci"));
    let other = if arch() == "amd64" { "arm64" } else { "amd64" };
    let mine = oci.image(
        &[layer(&[E::File("marker", 0o644, arch().as_bytes())])],
        serde_json::json!({"Cmd": ["/x"]}),
        arch(),
    );
    let theirs = oci.image(
        &[layer(&[E::File("marker", 0o644, other.as_bytes())])],
        serde_json::json!({"Cmd": ["/x"]}),
        other,
    );
    let idx = oci.index(&[theirs, mine]);
    oci.tag(idx, "multi");
    let r = format!("{}/test/multi:multi", reg.addr);
    oci.push("multi", &r);
    let layout = Layout::new(work.path().join("data"));
    let (_, img) =
        host_sysmgr::image::prepare(&layout, &r, &Access::default(), RootFs::Erofs).unwrap();
    let root = work.path().join("root");
    let _mounted = Mounted::new(&img.path, &root);
    assert_eq!(
        std::fs::read_to_string(root.join("marker")).unwrap(),
        arch()
    );
}

#[test]
fn bad_images_are_refused_and_leave_nothing_behind() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut oci = OciLayout::new(&work.path().join("oci"));
    let cfg = serde_json::json!({"Cmd": ["/bin/sh"]});
    let mut truncated = layer(&[E::File("big", 0o644, &vec![7u8; 200_000])]);
    truncated.truncate(truncated.len() / 2);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("dotdot", layer(&[E::File("../evil", 0o644, b"x")]), "`..`"),
        (
            "absolute",
            layer(&[E::File("/etc/evil", 0o644, b"x")]),
            "absolute path",
        ),
        (
            "escape",
            layer(&[
                E::Symlink("up", "../../../.."),
                E::File("up/evil", 0o644, b"x"),
            ]),
            "leads out of the image",
        ),
        ("device", layer(&[E::Char("dev/mem")]), "device node"),
        ("truncated", truncated, "layer"),
    ];
    for (tag, l, _) in &cases {
        let m = oci.image(std::slice::from_ref(l), cfg.clone(), arch());
        oci.tag(m, tag);
    }
    let tampered = layer(&[E::File("file", 0o644, &vec![1u8; 100_000])]);
    let m = oci.image(std::slice::from_ref(&tampered), cfg.clone(), arch());
    oci.tag(m, "tampered");
    let layout = Layout::new(work.path().join("data"));
    for (tag, _, want) in &cases {
        let r = format!("{}/test/bad:{tag}", reg.addr);
        oci.push(tag, &r);
        let e = host_sysmgr::image::prepare(&layout, &r, &Access::default(), RootFs::Erofs)
            .unwrap_err();
        let text = host_sysmgr::chain(&e);
        assert!(text.contains(want), "{tag}: {text}");
        assert_eq!(
            (blobs(&layout), images(&layout)),
            (0, 0),
            "{tag} left something"
        );
    }
    // A blob changed in the registry's storage after the push.
    let r = format!("{}/test/bad:tampered", reg.addr);
    oci.push("tampered", &r);
    let hex = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&tampered));
    let blob = reg.blob_path(&hex);
    let mut data = std::fs::read(&blob).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&blob, data).unwrap();
    let e =
        host_sysmgr::image::prepare(&layout, &r, &Access::default(), RootFs::Erofs).unwrap_err();
    assert!(
        host_sysmgr::chain(&e).contains("sha256"),
        "{}",
        host_sysmgr::chain(&e)
    );
    assert_eq!((blobs(&layout), images(&layout)), (0, 0));
    let staging = layout.system().join("images/.staging");
    assert!(
        std::fs::read_dir(&staging)
            .map(|rd| rd.count())
            .unwrap_or(0)
            == 0
    );
}

#[test]
fn layout_folders_oci_archives_and_docker_saves_are_images_too() {
    let work = tempfile::tempdir().unwrap();
    let mut oci = OciLayout::new(&work.path().join("oci"));
    let l = layer(&[E::File("marker", 0o644, b"from a file")]);
    let m = oci.image(
        std::slice::from_ref(&l),
        serde_json::json!({"Cmd": ["/x"]}),
        arch(),
    );
    oci.tag(m, "v1");
    let layout = Layout::new(work.path().join("data"));
    let marker = |img: &host_sysmgr::image::rootfs::RootImage, name: &str| {
        let root = work.path().join(name);
        let _m = Mounted::new(&img.path, &root);
        std::fs::read_to_string(root.join("marker")).unwrap()
    };
    let dir = oci.dir.display().to_string();
    let (_, a) = host_sysmgr::image::prepare(
        &layout,
        &format!("oci:{dir}:v1"),
        &Access::default(),
        RootFs::Erofs,
    )
    .unwrap();
    assert!(a.built);
    assert_eq!(marker(&a, "a"), "from a file");
    // The folder alone (one image in it): the same image, nothing built.
    let (_, b) =
        host_sysmgr::image::prepare(&layout, &dir, &Access::default(), RootFs::Erofs).unwrap();
    assert_eq!((b.path.clone(), b.built), (a.path.clone(), false));

    // An OCI archive: a tar of the folder.
    let archive = work.path().join("image.tar");
    let mut t = tar::Builder::new(std::fs::File::create(&archive).unwrap());
    t.append_dir_all(".", &oci.dir).unwrap();
    t.into_inner().unwrap();
    let (_, c) = host_sysmgr::image::prepare(
        &layout,
        &format!("oci-archive:{}:v1", archive.display()),
        &Access::default(),
        RootFs::Erofs,
    )
    .unwrap();
    assert_eq!(c.path, a.path);

    // A docker save, written by skopeo.
    let saved = work.path().join("saved.tar");
    let out = std::process::Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet"])
        .arg(format!("oci:{dir}:v1"))
        .arg(format!("docker-archive:{}:demo/saved:v1", saved.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, d) = host_sysmgr::image::prepare(
        &layout,
        &saved.display().to_string(),
        &Access::default(),
        RootFs::Erofs,
    )
    .unwrap();
    assert_eq!(marker(&d, "d"), "from a file");
    // An archive that is neither is named as such.
    let junk = work.path().join("junk.tar");
    let mut t = tar::Builder::new(std::fs::File::create(&junk).unwrap());
    t.append_path_with_name("/bin/busybox", "busybox").unwrap();
    t.into_inner().unwrap();
    let e = host_sysmgr::image::prepare(
        &layout,
        &junk.display().to_string(),
        &Access::default(),
        RootFs::Erofs,
    )
    .unwrap_err();
    assert!(e.to_string().contains("neither an OCI archive"), "{e}");
}

#[test]
fn images_ls_rm_and_gc_from_the_cli() {
    let work = tempfile::tempdir().unwrap();
    let mut oci = OciLayout::new(&work.path().join("oci"));
    let shared = layer(&[E::File("shared", 0o644, b"both images")]);
    for (tag, own) in [("one", "first"), ("two", "second")] {
        let l = layer(&[E::File("own", 0o644, own.as_bytes())]);
        let m = oci.image(
            &[shared.clone(), l],
            serde_json::json!({"Cmd": ["/x"]}),
            arch(),
        );
        oci.tag(m, tag);
    }
    let data = work.path().join("data");
    let layout = Layout::new(&data);
    let dir = oci.dir.display().to_string();
    for tag in ["one", "two"] {
        host_sysmgr::image::prepare(
            &layout,
            &format!("oci:{dir}:{tag}"),
            &Access::default(),
            RootFs::Erofs,
        )
        .unwrap();
    }
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_host-sysmgr"))
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let rows: serde_json::Value = serde_json::from_str(&cli(&["images", "ls", "--json"])).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    assert_eq!(
        (blobs(&layout), images(&layout)),
        (5, 2),
        "2 configs, 1 shared + 2 own layers"
    );
    // Removing one keeps the layer the other uses.
    cli(&["images", "rm", &format!("oci:{dir}:one")]);
    assert_eq!((blobs(&layout), images(&layout)), (3, 1));
    let digest = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["references"][0] == format!("oci:{dir}:two"))
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    cli(&["images", "rm", &digest[..19]]);
    assert_eq!((blobs(&layout), images(&layout)), (0, 0));
    let gc: serde_json::Value = serde_json::from_str(&cli(&["images", "gc", "--json"])).unwrap();
    assert_eq!(gc["blobs"], 0);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_host-sysmgr"))
        .args(["images", "rm", "nothing-like-this", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no cached image"));
}

/// Credentials come from the Docker config file ($DOCKER_CONFIG); without
/// them the registry says no, and the error says so.
#[test]
fn a_registry_that_asks_for_credentials_gets_those_of_the_docker_config() {
    let reg = Registry::start_with_auth("alice", "s3cret");
    let work = tempfile::tempdir().unwrap();
    let mut oci = OciLayout::new(&work.path().join("oci"));
    let m = oci.image(
        &[layer(&[E::File("marker", 0o644, b"private")])],
        serde_json::json!({"Cmd": ["/x"]}),
        arch(),
    );
    oci.tag(m, "p");
    let r = format!("{}/private/img:p", reg.addr);
    oci.push_as("p", &r, Some("alice:s3cret"));
    let docker = work.path().join("docker");
    std::fs::create_dir(&docker).unwrap();
    let pull = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_host-sysmgr"))
            .args(["images", "pull", &r, "--data-dir"])
            .arg(work.path().join("data"))
            .env("DOCKER_CONFIG", &docker)
            .env_remove("GUESTINIT_REGISTRY_USER")
            .output()
            .unwrap()
    };
    let out = pull();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(125) && err.contains("Not authorized"),
        "{err}"
    );
    let auth = base64_encode(b"alice:s3cret");
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    let out = pull();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sha256:"));
}

fn base64_encode(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    b.chunks(3)
        .flat_map(|c| {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            (0..4).map(move |i| {
                if i <= c.len() {
                    T[(n >> (18 - 6 * i) & 63) as usize] as char
                } else {
                    '='
                }
            })
        })
        .collect()
}
