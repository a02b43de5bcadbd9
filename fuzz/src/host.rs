//! Checks of host-sysmgr's parsers of what a VMM sends. Included by
//! `host-sysmgr/tests/fuzz_corpus.rs` to replay the corpus on stable Rust.

use host_sysmgr::vmm::qmp::{parse_line, wait_reply, LineReader, Outcome, Reply, MAX_LINE};
use host_sysmgr::vsock::{parse_ok, read_handshake, Handshake};

/// QMP: lines come out bounded and without newlines, every line is judged as
/// its JSON says, and waiting for a reply always ends.
pub fn check_qmp(data: &[u8]) {
    let mut reader = LineReader::new(data);
    let mut lines = 0usize;
    loop {
        match reader.next_line() {
            Ok(Some(line)) => {
                assert!(line.len() <= MAX_LINE && !line.contains(&b'\n'));
                check_qmp_line(&line);
                lines += 1;
            }
            Ok(None) => break,
            Err(e) => return assert_eq!(e.kind(), std::io::ErrorKind::InvalidData),
        }
    }
    assert!(lines <= data.len());
    let mut reader = LineReader::new(data);
    while let Ok(outcome) = wait_reply(&mut reader) {
        if outcome == Outcome::Closed {
            break;
        }
    }
}

fn check_qmp_line(line: &[u8]) {
    let object = match serde_json::from_slice::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(map)) => Some(map),
        _ => None,
    };
    let has = |key: &str| object.as_ref().is_some_and(|m| m.contains_key(key));
    let want = if has("return") {
        "return"
    } else if has("error") {
        "error"
    } else if has("event") {
        "event"
    } else if has("QMP") {
        "greeting"
    } else {
        "unknown"
    };
    let got = match parse_line(line) {
        Reply::Return => "return",
        Reply::Error(text) => {
            assert!(!text.is_empty() || object.is_some());
            "error"
        }
        Reply::Event => "event",
        Reply::Greeting => "greeting",
        Reply::Unknown => "unknown",
    };
    assert_eq!(got, want, "{}", String::from_utf8_lossy(line));
}

/// Hybrid-vsock handshake: `OK <port>` is accepted exactly when the first
/// line says so, only that line is consumed, and a refusal is bounded.
pub fn check_vsock_handshake(data: &[u8]) {
    let mut rest = data;
    let verdict = read_handshake(&mut rest);
    let line_end = data.iter().position(|&b| b == b'\n');
    match verdict {
        Handshake::Connected(port) => {
            let end = line_end.expect("a connected reply ends in a newline");
            assert!(end < 64);
            assert_eq!(parse_ok(&data[..end]), Some(port));
            let digits = data[3..end].strip_suffix(b"\r").unwrap_or(&data[3..end]);
            assert!(data.starts_with(b"OK ") && digits.iter().all(u8::is_ascii_digit));
            let parsed = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse().ok());
            assert_eq!(parsed, Some(port));
            assert_eq!(rest.len(), data.len() - end - 1);
        }
        Handshake::Refused(reply) => {
            assert!(reply.len() <= 64 * 4, "lossy text of at most 64 bytes");
            match line_end.filter(|&e| e < 64) {
                Some(end) => assert_eq!(parse_ok(&data[..end]), None),
                None => assert!(data.len() >= 64),
            }
        }
        Handshake::Retry(_) => assert!(line_end.is_none() && data.len() < 64),
    }
}

/// Agent RPC messages (the first byte picks the type, the rest is its
/// protobuf encoding, as the agent or the host receives it): a message that
/// decodes re-encodes to bytes that decode to the same message; and the
/// host's check of a path the guest sends in a copy header (the rest as
/// text) accepts only plain names, which stay below the copy root.
pub fn check_agent_messages(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 8 {
        0 => round_trip::<guest_proto::ExecRequest>(body),
        1 => round_trip::<guest_proto::ExecResponse>(body),
        2 => round_trip::<guest_proto::CopyToGuestRequest>(body),
        3 => round_trip::<guest_proto::CopyFromGuestResponse>(body),
        4 => round_trip::<guest_proto::StatPathRequest>(body),
        5 => round_trip::<guest_proto::ReconfigureNetworkRequest>(body),
        6 => round_trip::<guest_proto::InfoResponse>(body),
        _ => round_trip::<guest_proto::GetGpuInitStatusResponse>(body),
    }
    check_header_path(&String::from_utf8_lossy(body));
}

/// A decoded message re-encodes to bytes that decode to the same message:
/// equal as values, or — where a NaN `double` never equals itself — equal
/// as re-encoded bytes (maps encode in no fixed order, so bytes alone would
/// not do).
fn round_trip<M: prost::Message + Default + PartialEq + std::fmt::Debug>(body: &[u8]) {
    let Ok(msg) = M::decode(body) else { return };
    let bytes = msg.encode_to_vec();
    let again = M::decode(bytes.as_slice()).expect("own encoding decodes");
    assert!(again == msg || again.encode_to_vec() == bytes, "{msg:?}");
}

fn check_header_path(rel: &str) {
    let Some(parts) = host_sysmgr::agent::copy::header_parts(rel) else {
        return;
    };
    let root = std::path::Path::new("/copy-root");
    let mut path = root.to_path_buf();
    for part in &parts {
        assert!(
            !part.is_empty() && part != "." && part != ".." && !part.contains('/'),
            "{rel:?}"
        );
        path.push(part);
    }
    assert!(
        path.starts_with(root) && path.components().count() == parts.len() + 2,
        "{rel:?}"
    );
}

/// Kernel catalog files: never panic; every accepted entry has a version and
/// arch usable as one path component, http(s) URLs and well-formed digests.
pub fn check_catalog(data: &[u8]) {
    use host_sysmgr::system::catalog::{is_sha256, parse};
    use host_sysmgr::system::layout::check_component;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(entries) = parse(text, "fuzz") else {
        return;
    };
    for (k, _) in entries {
        assert!(check_component("v", &k.version).is_ok(), "{k:?}");
        assert!(check_component("a", &k.arch).is_ok(), "{k:?}");
        for u in std::iter::once(&k.url).chain(&k.headers_url) {
            assert!(
                u.starts_with("http://") || u.starts_with("https://"),
                "{k:?}"
            );
        }
        assert!(k
            .sha256
            .iter()
            .chain(&k.headers_sha256)
            .all(|d| is_sha256(d)));
    }
}

/// Tar bundles: never panic, and whatever an accepted bundle left on disk
/// stays inside its folder: no device, FIFO or setuid file, and every
/// symlink resolves (as far as it exists) under the folder.
pub fn check_bundle(data: &[u8]) {
    use host_sysmgr::system::bundle::{extract_from, Limits};
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let limits = Limits {
        bytes: 1 << 20,
        entries: 256,
    };
    if extract_from(data, "fuzz", dir.path(), limits).is_ok() {
        let root = dir.path().canonicalize().expect("root");
        walk_inside(&root, &root);
    }
}

fn walk_inside(root: &std::path::Path, dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let m = std::fs::symlink_metadata(e.path()).expect("stat");
        let t = m.file_type();
        assert!(
            t.is_dir() || t.is_file() || t.is_symlink(),
            "{:?}",
            e.path()
        );
        assert_eq!(m.permissions().mode() & 0o6000, 0, "{:?}", e.path());
        if t.is_symlink() {
            if let Ok(real) = e.path().canonicalize() {
                assert!(real.starts_with(root), "{:?} -> {real:?}", e.path());
            }
        } else if t.is_dir() {
            walk_inside(root, &e.path());
        }
    }
}

/// bzImage unpacking: never panics; a payload lies inside the image; an
/// accepted vmlinux is an ELF with the PVH note.
pub fn check_bzimage(data: &[u8]) {
    use host_sysmgr::system::bzimage::{has_pvh_note, payload, unpack_bytes};
    let p = std::path::Path::new("fuzz");
    if let Ok(pl) = payload(data, p) {
        let start = pl.as_ptr() as usize - data.as_ptr() as usize;
        assert!(start + pl.len() <= data.len());
    }
    if let Ok(v) = unpack_bytes(data, p) {
        assert!(v.starts_with(b"\x7fELF") && has_pvh_note(&v));
    }
}

/// Image layers: never panic, and an applied layer changes nothing outside
/// the root (a sibling folder stays empty) and leaves no device node.
pub fn check_layer(data: &[u8]) {
    use host_sysmgr::image::apply::{apply_layers, Limits};
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let (root, outside, layer) = (
        dir.path().join("root"),
        dir.path().join("outside"),
        dir.path().join("layer"),
    );
    for d in [&root, &outside] {
        std::fs::create_dir(d).expect("mkdir");
    }
    std::fs::write(&layer, data).expect("layer");
    let limits = Limits {
        bytes: 1 << 20,
        entries: 256,
    };
    let _ = apply_layers(&root, &[layer], limits);
    assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 0);
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 3);
    no_devices(&root);
}

fn no_devices(dir: &std::path::Path) {
    use std::os::unix::fs::FileTypeExt;
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let t = std::fs::symlink_metadata(e.path())
            .expect("stat")
            .file_type();
        assert!(
            !t.is_block_device() && !t.is_char_device() && !t.is_socket(),
            "{:?}",
            e.path()
        );
        if t.is_dir() {
            no_devices(&e.path());
        }
    }
}

/// Docker config files: never panic; credentials only for an entry that
/// names the registry asked about.
pub fn check_docker_config(data: &[u8]) {
    use host_sysmgr::image::auth::parse;
    let _ = parse(data, "127.0.0.1:5000");
    // No registry name, no credentials (a host-less key such as `https://`
    // must not match it).
    assert!(parse(data, "").is_none());
}
