//! OCI image layouts made in tests from Debian's files (busybox-static), and
//! pushed to a registry with skopeo.

#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// One tar entry, written raw (unsafe names are the point of some tests).
pub enum E<'a> {
    Dir(&'a str),
    File(&'a str, u32, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Char(&'a str),
    Owned(&'a str, u32, u32, &'a [u8]),
    /// A PAX extended header for the next entry: (key, value) records.
    Pax(&'a [(&'a str, &'a str)]),
}

fn header(name: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h
}

/// PAX records: `LEN KEY=VALUE\n`, LEN counting the whole record.
fn pax_body(records: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let rest = format!(" {k}={v}\n");
        let mut len = rest.len() + 1;
        while format!("{len}{rest}").len() != len {
            len += 1;
        }
        out.extend(format!("{len}{rest}").into_bytes());
    }
    out
}

/// A gzipped layer.
pub fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for e in entries {
        let (mut h, data): (tar::Header, &[u8]) = match e {
            E::Dir(n) => (header(n, tar::EntryType::Directory, 0o755, 0), b""),
            E::File(n, m, d) => (header(n, tar::EntryType::Regular, *m, d.len() as u64), d),
            E::Owned(n, uid, gid, d) => {
                let mut h = header(n, tar::EntryType::Regular, 0o644, d.len() as u64);
                h.set_uid((*uid).into());
                h.set_gid((*gid).into());
                (h, d)
            }
            E::Symlink(n, t) | E::Hard(n, t) => {
                let kind = if matches!(e, E::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                let mut h = header(n, kind, 0o777, 0);
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
                (h, b"")
            }
            E::Char(n) => (header(n, tar::EntryType::Char, 0o666, 0), b""),
            E::Pax(records) => {
                let body = pax_body(records);
                let mut h = header(
                    "PaxHeader",
                    tar::EntryType::XHeader,
                    0o644,
                    body.len() as u64,
                );
                h.set_cksum();
                b.append(&h, &body[..]).expect("append");
                continue;
            }
        };
        h.set_cksum();
        b.append(&h, data).expect("append");
    }
    b.into_inner().expect("tar").finish().expect("gzip")
}

/// A busybox root: /bin/busybox, the applets the tests use, /etc/passwd.
pub fn busybox_layer() -> Vec<u8> {
    let bb = std::fs::read("/bin/busybox").expect("busybox-static");
    let mut entries = vec![
        E::Dir("bin/"),
        E::File("bin/busybox", 0o755, &bb),
        E::Dir("etc/"),
        E::Dir("srv/"),
        E::Dir("tmp/"),
    ];
    let applets = [
        "sh", "echo", "cat", "ls", "id", "pwd", "stat", "test", "readlink", "uname",
    ];
    let names: Vec<String> = applets.iter().map(|a| format!("bin/{a}")).collect();
    entries.extend(names.iter().map(|n| E::Symlink(n, "busybox")));
    entries.push(E::File(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/srv:/bin/sh\n",
    ));
    entries.push(E::File("etc/group", 0o644, b"root:x:0:\napp:x:1000:\n"));
    layer(&entries)
}

/// An OCI image layout folder being filled.
pub struct OciLayout {
    pub dir: PathBuf,
    manifests: Vec<serde_json::Value>,
}

impl OciLayout {
    pub fn new(dir: &Path) -> OciLayout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        OciLayout {
            dir: dir.to_path_buf(),
            manifests: Vec::new(),
        }
    }

    /// Stores a blob; returns its descriptor.
    pub fn blob(&self, media_type: &str, data: &[u8]) -> serde_json::Value {
        let hex = hex::encode(Sha256::digest(data));
        std::fs::write(self.dir.join("blobs/sha256").join(&hex), data).expect("blob");
        serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": data.len()})
    }

    /// An image manifest of `layers` and `config` (the `config` object of
    /// the image config) for `arch`; returns its descriptor.
    pub fn image(
        &self,
        layers: &[Vec<u8>],
        config: serde_json::Value,
        arch: &str,
    ) -> serde_json::Value {
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|l| {
                let mut raw = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&l[..]), &mut raw)
                    .ok();
                format!("sha256:{}", hex::encode(Sha256::digest(&raw)))
            })
            .collect();
        let cfg = serde_json::json!({"architecture": arch, "os": "linux", "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids}});
        let cfg = self.blob(
            "application/vnd.oci.image.config.v1+json",
            &serde_json::to_vec(&cfg).expect("json"),
        );
        let layers: Vec<_> = layers
            .iter()
            .map(|l| self.blob("application/vnd.oci.image.layer.v1.tar+gzip", l))
            .collect();
        let m = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": cfg, "layers": layers});
        let mut d = self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&m).expect("json"),
        );
        d["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
        d
    }

    /// Tags a manifest (or an index) in index.json.
    pub fn tag(&mut self, mut desc: serde_json::Value, tag: &str) {
        desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        self.manifests.push(desc);
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": self.manifests});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).expect("json"),
        )
        .expect("index");
    }

    /// A multi-platform index of `images`; returns its descriptor.
    pub fn index(&self, images: &[serde_json::Value]) -> serde_json::Value {
        let idx = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": images});
        self.blob(
            "application/vnd.oci.image.index.v1+json",
            &serde_json::to_vec(&idx).expect("json"),
        )
    }

    /// `skopeo copy` of tag `tag` to `dest` (a docker:// reference).
    pub fn push(&self, tag: &str, dest: &str) {
        self.push_as(tag, dest, None)
    }

    /// `push` with `user:password` credentials.
    pub fn push_as(&self, tag: &str, dest: &str, creds: Option<&str>) {
        let mut cmd = std::process::Command::new("skopeo");
        cmd.args(["--insecure-policy", "copy"]);
        if let Some(c) = creds {
            cmd.args(["--dest-creds", c]);
        }
        let out = cmd
            .args(["--all", "--dest-tls-verify=false", "--quiet"])
            .arg(format!("oci:{}:{tag}", self.dir.display()))
            .arg(format!("docker://{dest}"))
            .output()
            .expect("run skopeo (apt-get install skopeo)");
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
