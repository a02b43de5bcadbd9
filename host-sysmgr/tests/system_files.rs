//! The system-files store against a real HTTP server on 127.0.0.1: verified
//! downloads with retries, resume and timeouts, safe bundles, trust on first
//! use, defaults, rollback (asked for and automatic) and gc.

#![allow(clippy::unwrap_used)]

mod support;

use host_sysmgr::system::download::Policy;
use host_sysmgr::system::record::Trust;
use host_sysmgr::system::state::{Kind, Pin};
use host_sysmgr::system::{Store, SystemError};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;
use support::http::{Fault, Server};

/// A fake vmlinux: ELF magic and `n` bytes of a pattern.
fn kernel_bytes(n: usize, seed: u8) -> Vec<u8> {
    let mut v = b"\x7fELF".to_vec();
    v.extend((0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    v
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

struct Fixture {
    data: tempfile::TempDir,
    server: Server,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            data: tempfile::tempdir().expect("tempdir"),
            server: Server::start(),
        }
    }

    /// A catalog file of `entries` (TOML fragments after `[[kernel]]`).
    fn store(&self, entries: &[String]) -> Store {
        let text: String = entries
            .iter()
            .map(|e| format!("[[kernel]]\n{e}\n"))
            .collect();
        let cat = self.data.path().join("test-catalog.toml");
        std::fs::write(&cat, text).expect("catalog");
        let mut store = Store::open(&self.data.path().join("d"), Some(&cat)).expect("store");
        store.policy = Policy {
            connect_timeout: Duration::from_secs(2),
            stall_timeout: Duration::from_millis(700),
            attempts: 4,
            backoff: Duration::from_millis(10),
            progress: false,
        };
        store
    }

    fn entry(&self, version: &str, path: &str, data: Option<&[u8]>, extra: &str) -> String {
        let sums = data.map_or(String::new(), |d| {
            format!("sha256 = \"{}\"\nsize = {}\n", sha(d), d.len())
        });
        format!(
            "name = \"test\"\nversion = \"{version}\"\narch = \"{}\"\nurl = \"{}\"\n{sums}{extra}",
            std::env::consts::ARCH,
            self.server.url(path)
        )
    }

    fn system(&self) -> std::path::PathBuf {
        self.data.path().join("d/system")
    }

    /// Nothing installed, nothing half-written, no staging left.
    fn assert_nothing_left(&self, version: &str) {
        let sys = self.system();
        assert!(!sys
            .join("kernel")
            .join(version)
            .join(std::env::consts::ARCH)
            .exists());
        for dir in [".partial", ".staging"] {
            let left: Vec<_> = std::fs::read_dir(sys.join(dir))
                .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "{dir}: {left:?}");
        }
    }
}

#[test]
fn a_good_download_installs_verified_and_becomes_the_default() {
    let f = Fixture::new();
    let k = kernel_bytes(300_000, 1);
    f.server.put("k1", k.clone());
    let store = f.store(&[f.entry("1.0", "k1", Some(&k), "")]);
    let rec = store.pull_kernel("1.0").expect("pull");
    assert_eq!(rec.trust, Trust::Published);
    let path = store.verify_kernel("1.0").expect("verify");
    assert_eq!(std::fs::read(&path).expect("read"), k);
    assert_eq!(
        store
            .state()
            .unwrap()
            .track(Kind::Kernel, store.arch())
            .default
            .as_deref(),
        Some("1.0")
    );
    // A second pull finds it in place: no request.
    let before = f.server.log().len();
    store.pull_kernel("1.0").expect("pull again");
    assert_eq!(f.server.log().len(), before);
}

#[test]
fn a_wrong_sha256_is_refused_and_leaves_nothing() {
    let f = Fixture::new();
    let k = kernel_bytes(100_000, 2);
    f.server.put("k", k.clone());
    let mut other = k.clone();
    other[500] ^= 1;
    let store = f.store(&[f.entry("1.0", "k", Some(&other), "")]);
    let e = store.pull_kernel("1.0").unwrap_err();
    assert!(matches!(e, SystemError::Digest { .. }), "{e}");
    assert!(e.to_string().contains(&sha(&other)), "{e}");
    f.assert_nothing_left("1.0");
}

#[test]
fn a_truncated_body_is_retried_then_refused_and_leaves_nothing() {
    let f = Fixture::new();
    let k = kernel_bytes(200_000, 3);
    f.server.put("k", k.clone());
    f.server.always("k", Fault::Truncate(1000));
    f.server.ignore_range(true);
    let store = f.store(&[f.entry("1.0", "k", Some(&k), "")]);
    let e = store.pull_kernel("1.0").unwrap_err();
    assert_eq!(f.server.log().len(), 4, "every attempt used");
    assert!(
        matches!(e, SystemError::Http { .. } | SystemError::Size { .. }),
        "{e}"
    );
    f.assert_nothing_left("1.0");
}

#[test]
fn a_404_and_a_500_then_success_on_retry() {
    let f = Fixture::new();
    let k = kernel_bytes(50_000, 4);
    f.server.put("k", k.clone());
    f.server
        .faults("k", vec![Fault::Status(404), Fault::Status(500)]);
    let store = f.store(&[f.entry("1.0", "k", Some(&k), "")]);
    store.pull_kernel("1.0").expect("third attempt succeeds");
    assert_eq!(f.server.log().len(), 3);
    // A status that retrying cannot fix ends at once.
    f.server.put("k2", k.clone());
    f.server.always("k2", Fault::Status(403));
    let store = f.store(&[f.entry("2.0", "k2", Some(&k), "")]);
    let e = store.pull_kernel("2.0").unwrap_err();
    assert!(e.to_string().contains("403"), "{e}");
    assert_eq!(f.server.log().iter().filter(|(p, _)| p == "k2").count(), 1);
}

#[test]
fn a_stalled_body_times_out_and_a_cut_body_resumes_with_a_range() {
    let f = Fixture::new();
    let k = kernel_bytes(400_000, 5);
    f.server.put("k", k.clone());
    f.server
        .always("k", Fault::Stall(10_000, Duration::from_secs(30)));
    let store = f.store(&[f.entry("1.0", "k", Some(&k), "")]);
    let e = store.pull_kernel("1.0").unwrap_err();
    assert!(e.to_string().contains("no data for"), "{e}");
    f.assert_nothing_left("1.0");
    // Cut twice, then whole: the second and third requests ask for the rest.
    f.server.clear("k");
    f.server.faults(
        "k",
        vec![Fault::Truncate(100_000), Fault::Truncate(100_000)],
    );
    if let Err(e) = store.pull_kernel("1.0") {
        panic!("{} ({:?})", host_sysmgr::chain(&e), f.server.log());
    }
    let ranges: Vec<_> = f
        .server
        .log()
        .into_iter()
        .filter(|(p, _)| p == "k")
        .skip(4)
        .map(|(_, r)| r)
        .collect();
    assert_eq!(
        ranges,
        vec![
            None,
            Some("bytes=100000-".into()),
            Some("bytes=200000-".into())
        ]
    );
    assert_eq!(
        std::fs::read(store.verify_kernel("1.0").unwrap()).unwrap(),
        k
    );
}

#[test]
fn sigkill_mid_download_leaves_nothing_installed_and_the_next_call_completes() {
    let f = Fixture::new();
    let k = kernel_bytes(2_000_000, 6);
    f.server.put("k", k.clone());
    f.server
        .always("k", Fault::Stall(500_000, Duration::from_secs(60)));
    let _ = f.store(&[f.entry("1.0", "k", Some(&k), "")]);
    let cat = f.data.path().join("test-catalog.toml");
    let data = f.data.path().join("d");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_host-sysmgr"))
        .args(["kernel", "pull", "1.0", "--data-dir"])
        .arg(&data)
        .arg("--catalog")
        .arg(&cat)
        .spawn()
        .expect("spawn");
    let partial = f.system().join(".partial");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let grown = loop {
        let size: u64 = std::fs::read_dir(&partial)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        if size >= 500_000 || std::time::Instant::now() > deadline {
            break size;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(
        grown >= 500_000,
        "the download never got going ({grown} bytes)"
    );
    let store = f.store(&[f.entry("1.0", "k", Some(&k), "")]);
    assert!(matches!(
        store.verify_kernel("1.0"),
        Err(SystemError::NotFound(_))
    ));
    assert!(store.installed_kernels().unwrap().is_empty());
    f.server.clear("k");
    store.pull_kernel("1.0").expect("the next call completes");
    let last = f.server.log().last().cloned().expect("a request");
    assert_eq!(
        last.1.as_deref(),
        Some("bytes=500000-"),
        "resumed where the killed one stopped"
    );
    assert_eq!(
        std::fs::read(store.verify_kernel("1.0").unwrap()).unwrap(),
        k
    );
    f.assert_nothing_left("2.0");
}

/// A tar.gz bundle whose one entry is written raw (the tar crate refuses to
/// write unsafe names itself).
fn bundle(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, kind, link, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, *data).expect("append");
    }
    b.into_inner().expect("tar").finish().expect("gzip")
}

#[test]
fn bundles_install_and_escapes_are_refused_leaving_nothing() {
    use tar::EntryType as T;
    let f = Fixture::new();
    let k = kernel_bytes(10_000, 7);
    let good = bundle(&[
        ("vmlinux", T::Regular, "", &k),
        ("config", T::Regular, "", b"CONFIG_X=y\n"),
    ]);
    f.server.put("good.tar.gz", good.clone());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            bundle(&[
                ("vmlinux", T::Regular, "", &k),
                ("../evil", T::Regular, "", b"x"),
            ]),
            "`..`",
        ),
        (
            "abs",
            bundle(&[
                ("vmlinux", T::Regular, "", &k),
                ("/tmp/evil", T::Regular, "", b"x"),
            ]),
            "absolute",
        ),
        (
            "symlink",
            bundle(&[
                ("vmlinux", T::Regular, "", &k),
                ("l", T::Symlink, "../../..", b""),
            ]),
            "out of the bundle",
        ),
        (
            "hardlink",
            bundle(&[
                ("vmlinux", T::Regular, "", &k),
                ("h", T::Link, "../../../etc/passwd", b""),
            ]),
            "outside the bundle",
        ),
        (
            "device",
            bundle(&[("vmlinux", T::Regular, "", &k), ("null", T::Char, "", b"")]),
            "device",
        ),
    ];
    let fmt = "format = \"tar.gz\"\n";
    let mut entries = vec![f.entry("good", "good.tar.gz", Some(&good), fmt)];
    for (name, data, _) in &cases {
        f.server.put(name, data.clone());
        entries.push(f.entry(name, name, Some(data), fmt));
    }
    let store = f.store(&entries);
    store.pull_kernel("good").expect("a good bundle");
    assert_eq!(
        std::fs::read(store.verify_kernel("good").unwrap()).unwrap(),
        k
    );
    for (name, _, want) in &cases {
        let e = store.pull_kernel(name).unwrap_err().to_string();
        assert!(e.contains(want), "{name}: {e}");
        f.assert_nothing_left(name);
    }
    assert!(!f.data.path().join("evil").exists() && !Path::new("/tmp/evil").exists());
}

#[test]
fn an_entry_without_a_checksum_is_pinned_on_first_use() {
    let f = Fixture::new();
    let k = kernel_bytes(20_000, 8);
    f.server.put("k", k.clone());
    let store = f.store(&[f.entry("1.0", "k", None, "")]);
    let rows = store.kernel_rows(true).unwrap();
    assert_eq!(rows[0].trust, Trust::Tofu);
    assert!(!rows[0].installed);
    let rec = store.pull_kernel("1.0").expect("first download");
    assert_eq!(rec.trust, Trust::Tofu);
    assert_eq!(
        store.state().unwrap().tofu.get(&f.server.url("k")),
        Some(&sha(&k))
    );
    // The server now serves something else: a fresh install refuses it.
    let mut changed = k.clone();
    changed[100] ^= 0xff;
    f.server.put("k", changed);
    std::fs::remove_dir_all(f.system().join("kernel/1.0")).unwrap();
    let e = store.pull_kernel("1.0").unwrap_err();
    assert!(matches!(e, SystemError::Digest { .. }), "{e}");
}

#[test]
fn a_flipped_byte_is_detected_and_the_kernel_downloaded_again() {
    let f = Fixture::new();
    let k = kernel_bytes(100_000, 9);
    f.server.put("k", k.clone());
    let store = f.store(&[f.entry("1.0", "k", Some(&k), "")]);
    let path = store
        .pull_kernel("1.0")
        .map(|_| store.verify_kernel("1.0").unwrap())
        .unwrap();
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0x42], 4242).unwrap();
    }
    let e = store.verify_kernel("1.0").unwrap_err();
    assert!(matches!(e, SystemError::Corrupt { .. }), "{e}");
    store.pull_kernel("1.0").expect("replaced");
    assert_eq!(
        std::fs::read(store.verify_kernel("1.0").unwrap()).unwrap(),
        k
    );
}

/// A store with kernels 1..=n installed (1 first), default 1.
fn installed(n: u8) -> (Fixture, Store) {
    let f = Fixture::new();
    let mut entries = Vec::new();
    for i in 1..=n {
        let k = kernel_bytes(1000, i);
        f.server.put(&format!("k{i}"), k.clone());
        entries.push(f.entry(&format!("{i}.0"), &format!("k{i}"), Some(&k), ""));
    }
    let store = f.store(&entries);
    for i in 1..=n {
        store.pull_kernel(&format!("{i}.0")).expect("pull");
        // Install times are seconds: keep the order visible to gc.
        let rec = f.system().join(format!(
            "kernel/{i}.0/{}/manifest.json",
            std::env::consts::ARCH
        ));
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
        v["installed_at"] = serde_json::json!(1000 + u64::from(i));
        std::fs::write(&rec, serde_json::to_vec(&v).unwrap()).unwrap();
    }
    (f, store)
}

#[test]
fn set_default_rollback_and_gc_protect_what_is_needed() {
    let (_f, store) = installed(6);
    let kernels = |s: &Store| {
        let mut v: Vec<String> = s
            .installed_kernels()
            .unwrap()
            .into_iter()
            .map(|r| r.version)
            .collect();
        v.sort();
        v
    };
    store.set_default(Kind::Kernel, "2.0").unwrap();
    store.set_default(Kind::Kernel, "3.0").unwrap();
    assert!(store.set_default(Kind::Kernel, "9.9").is_err());
    assert_eq!(store.rollback(Kind::Kernel, "test").unwrap(), "2.0");
    let t = store.state().unwrap().track(Kind::Kernel, store.arch());
    assert_eq!(t.default.as_deref(), Some("2.0"));
    assert!(t.reason.unwrap().contains("rollback from 3.0"));
    store
        .pin(
            "web",
            Pin {
                kernel: "1.0".into(),
                initrd: "b".into(),
                vmm: "qemu 7.2".into(),
            },
        )
        .unwrap();
    // Newest three are 6, 5, 4; 2 is the default, 1 is pinned and the
    // rollback target; 3 goes.
    let gone = store.gc(3).unwrap();
    assert_eq!(gone.kernels, vec!["3.0".to_string()]);
    assert_eq!(kernels(&store), ["1.0", "2.0", "4.0", "5.0", "6.0"]);
    store.unpin("web").unwrap();
    let gone = store.gc(0).unwrap();
    assert_eq!(kernels(&store), ["1.0", "2.0"], "removed {gone:?}");
}

#[test]
fn a_restore_with_other_versions_is_refused() {
    let (_f, store) = installed(1);
    let pin = Pin {
        kernel: "1.0".into(),
        initrd: "b1".into(),
        vmm: "qemu 7.2".into(),
    };
    store.pin("db", pin.clone()).unwrap();
    store.check_restore("db", &pin).unwrap();
    let e = store
        .check_restore(
            "db",
            &Pin {
                kernel: "2.0".into(),
                ..pin.clone()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("kernel 2.0 (saved with 1.0)"), "{e}");
    assert!(store.check_restore("other", &pin).is_err());
}

#[test]
fn a_failing_default_rolls_back_by_itself() {
    let (_f, store) = installed(2);
    store.set_default(Kind::Kernel, "2.0").unwrap();
    // Good boots of 1.0 earlier; 2.0 fails 3 of 5: rolled back on the fifth.
    for ok in [true, false, true, false] {
        assert!(store.record_boot("2.0", "b", ok).unwrap().is_empty());
    }
    let notes = store.record_boot("2.0", "b", false).unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("kernel 2.0 rolled back to 1.0"),
        "{notes:?}"
    );
    let t = store.state().unwrap().track(Kind::Kernel, store.arch());
    assert_eq!(t.default.as_deref(), Some("1.0"));
    assert!(t
        .reason
        .as_deref()
        .unwrap()
        .contains("automatic: 3 of 5 boots failed"));
    assert_eq!(t.rejected, vec!["2.0".to_string()]);
    // gc keeps the rolled-back-to default.
    store.gc(0).unwrap();
    assert!(store.verify_kernel("1.0").is_ok());
}
