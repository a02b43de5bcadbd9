//! Checks of initrd-builder's parsers. `initrd-builder/tests/fuzz_corpus.rs`
//! includes this very file to replay the corpus on stable Rust. A panic is a
//! finding.

use std::collections::BTreeMap;
use std::path::Path;

use initrd_builder::compress::{self, Compression};
use initrd_builder::cpio::{self, Archive, Entry, EntryKind, RawEntry};
use initrd_builder::manifest::{Manifest, ManifestEntry};
use initrd_builder::modules::{self, ModuleIndex};
use initrd_builder::spec::{self, Mode, Spec};
use initrd_builder::{elf, sign, unpack, verify};

/// Decompression cap of the checks (the real one is 1 GiB): a bomb stops
/// here instead of exhausting the fuzzer's memory.
pub const LIMIT: usize = 8 << 20;

/// newc reader: never panics on any bytes; an archive the writer makes from
/// the input reads back (with `read` and with the segment reader) to exactly
/// the entries written.
pub fn check_cpio(data: &[u8]) {
    if let Ok(entries) = cpio::read(data) {
        entries.iter().for_each(touch_entry);
    }
    if let Ok((entries, end)) = cpio::read_archive(data, 0) {
        assert!(end <= data.len() && (end.is_multiple_of(4) || end == data.len()));
        entries.iter().for_each(touch_entry);
    }
    let archive = archive_from(data);
    let (Ok(expected), Ok(bytes)) = (archive.entries(), archive.write(mtime_of(data))) else {
        return;
    };
    let back = cpio::read(&bytes).expect("the writer's archive reads back");
    assert_same_entries(&back, &expected);
    let unpacked = unpack::unpack_with_limit(&bytes, LIMIT).expect("the writer's archive unpacks");
    assert_eq!(unpacked.archives.len(), 1);
    assert_eq!(unpacked.archives[0].len, bytes.len());
    assert_eq!(unpacked.archives[0].entries, back);
}

/// Segment reader and codecs: never panic, never produce more than the cap;
/// compress → decompress gives the input back and finds the stream's end; an
/// image of the input in every compression, concatenated, unpacks to all of
/// its archives.
pub fn check_decompress(data: &[u8]) {
    if let Ok(u) = unpack::unpack_with_limit(data, LIMIT) {
        assert!(u.decompressed <= LIMIT);
        for a in &u.archives {
            assert!(a.segment_offset < data.len().max(1));
            let _ = a.describe();
            a.entries.iter().for_each(touch_entry);
        }
    }
    for c in Compression::ALL {
        if let Ok((out, used)) = compress::decompress_stream(data, c, LIMIT) {
            assert!(out.len() <= LIMIT && used <= data.len(), "{c}");
        }
    }
    for c in Compression::ALL
        .into_iter()
        .filter(|&c| c != Compression::None)
    {
        let packed = compress::compress(data, c, fast_level(c)).expect("compress");
        let padded = [&packed[..], &[0; 4]].concat();
        let (out, used) = compress::decompress_stream(&padded, c, data.len()).expect("round trip");
        assert_eq!(out, data, "{c}");
        assert_eq!(used, packed.len(), "{c} stream end");
    }
    check_concatenated_images(data);
}

/// The input as `/data` in an archive, once per compression, back to back.
fn check_concatenated_images(data: &[u8]) {
    let mut archive = Archive::new();
    archive
        .add(Entry::file("/data", 0o644, data.to_vec()))
        .expect("a plain file");
    let cpio = archive.write(0).expect("one small file");
    let mut image = Vec::new();
    for c in Compression::ALL {
        image.extend(compress::compress(&cpio, c, fast_level(c)).expect("compress"));
        // Zero padding to a 4-byte boundary and one more word: the end of an
        // lz4 legacy stream, and where an uncompressed archive may start.
        image.resize(image.len().next_multiple_of(4) + 4, 0);
    }
    let u = unpack::unpack_with_limit(&image, 4 * cpio.len()).expect("own image unpacks");
    let kinds: Vec<Compression> = u.archives.iter().map(|a| a.compression).collect();
    assert_eq!(kinds, Compression::ALL);
    assert_eq!(u.decompressed, 3 * cpio.len());
    for (_, e) in u.entries() {
        assert_eq!((e.name.as_str(), e.data.as_slice()), ("data", data));
    }
}

/// ELF inspection never panics, and what it says is consistent.
pub fn check_elf(data: &[u8]) {
    let info = elf::inspect(data);
    let machine = elf::machine(data);
    assert_eq!(elf::is_elf(data), data.starts_with(b"\x7fELF"));
    if !elf::is_elf(data) {
        assert!(matches!(info, Err(elf::ElfError::NotElf)));
        assert!(matches!(machine, Err(elf::ElfError::NotElf)));
    }
    if let Ok(info) = info {
        assert_eq!(
            info.is_static,
            info.interpreter.is_none() && info.needed.is_empty()
        );
        assert_eq!(machine.ok(), Some(info.machine));
        assert!(!elf::machine_name(info.machine).is_empty());
    }
}

/// Module index: the input split at NUL is modules.dep, softdep, alias and
/// builtin. A parsed index resolves names taken from the input the same way
/// twice; the trimmed index files parse, resolve to the same modules and trim
/// to themselves.
pub fn check_modules(data: &[u8]) {
    let parts: Vec<String> = data
        .splitn(4, |&b| b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .chain(std::iter::repeat(String::new()))
        .take(4)
        .collect();
    let Ok(idx) = ModuleIndex::parse(&parts[0], &parts[1], &parts[2], &parts[3]) else {
        return;
    };
    let wanted = wanted_names(&parts[0], &parts[2]);
    let exclude: Vec<String> = wanted.iter().skip(2).step_by(3).cloned().collect();
    let first = idx.resolve(&wanted, &exclude);
    assert_eq!(
        format!("{first:?}"),
        format!("{:?}", idx.resolve(&wanted, &exclude))
    );
    let Ok(res) = first else { return };
    for (i, m) in res.modules.iter().enumerate() {
        assert!(idx.module(m).is_some(), "{m} is carried but not a module");
        assert!(!res.modules[..i].contains(m), "{m} twice");
    }
    let trimmed = idx.trimmed(&res);
    let again = ModuleIndex::parse(&trimmed.dep, &trimmed.softdep, &trimmed.alias, "")
        .expect("the trimmed index parses");
    let res2 = again
        .resolve(&res.modules, &exclude)
        .expect("the trimmed index resolves the carried modules");
    assert_eq!(res2.modules, res.modules);
    assert!(res2.builtin.is_empty());
    assert_eq!(again.trimmed(&res2), trimmed);
}

/// Up to 8 names: the modules of the dep lines, then the alias patterns.
fn wanted_names(dep: &str, alias: &str) -> Vec<String> {
    let mods = dep
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(p, _)| modules::module_name(p.trim()));
    let aliases = alias
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(str::to_string);
    mods.chain(aliases).take(8).collect()
}

/// Spec parser: never panics and says the same thing twice; in an accepted
/// spec, placeholder expansion is deterministic, text without `{` expands to
/// itself, and modes that pass are permission bits.
pub fn check_spec(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let base = Path::new("/specs");
    let first = Spec::parse(&text, base);
    assert_eq!(
        format!("{first:?}"),
        format!("{:?}", Spec::parse(&text, base))
    );
    for line in text.lines().take(16) {
        let _ = spec::parse_size(line);
    }
    let Ok(spec) = first else { return };
    assert_eq!(spec.base_dir, base);
    let resolver = spec::Resolver::new(&spec, &BTreeMap::new());
    for s in spec_strings(&spec) {
        let once = resolver.text(s);
        assert_eq!(format!("{once:?}"), format!("{:?}", resolver.text(s)));
        if !s.contains('{') {
            assert_eq!(once.ok().as_deref(), Some(s));
        }
    }
    for mode in spec_modes(&spec) {
        if let Ok(bits) = mode.bits() {
            assert!(bits <= 0o7777);
        }
    }
}

fn spec_strings(spec: &Spec) -> Vec<&str> {
    let mut out = vec![spec.init.path.as_str(), spec.init.version.as_str()];
    out.extend(
        spec.agent
            .iter()
            .flat_map(|a| [a.path.as_str(), a.dest.as_str()]),
    );
    out.extend(spec.kernel.iter().map(|k| k.release.as_str()));
    out.extend(spec.kernel.iter().filter_map(|k| k.modules_root.as_deref()));
    out.extend(spec.headers.iter().map(|h| h.path.as_str()));
    out.extend(
        spec.files
            .iter()
            .flat_map(|f| [f.src.as_str(), f.dest.as_str()]),
    );
    out.extend(spec.vars.values().map(String::as_str));
    out
}

fn spec_modes(spec: &Spec) -> impl Iterator<Item = &Mode> {
    let files = spec.files.iter().filter_map(|f| f.mode.as_ref());
    let dirs = spec.dirs.iter().filter_map(|d| d.mode.as_ref());
    let nodes = spec.nodes.iter().filter_map(|n| n.mode.as_ref());
    files.chain(dirs).chain(nodes)
}

/// Manifest, signature and keys: the input split at NUL is manifest bytes,
/// signature text, public key text and secret key text. Nothing panics; a
/// manifest that parses re-serialises to bytes that parse to the same value
/// (and serialise the same again); keys that decode encode back; a secret
/// key signs what its public key verifies.
pub fn check_manifest(data: &[u8]) {
    let mut parts = data.splitn(4, |&b| b == 0);
    let manifest = parts.next().unwrap_or_default();
    let mut text = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (sig_text, public_text, secret_text) = (text(), text(), text());
    if let Ok(m) = Manifest::from_bytes(manifest) {
        let bytes = m.to_bytes().expect("a parsed manifest serialises");
        let again = Manifest::from_bytes(&bytes).expect("own output parses");
        assert_eq!(again, m);
        assert_eq!(again.to_bytes().expect("serialises"), bytes);
        let _ = m.file_stem();
    }
    let sig = sign::decode_signature(&sig_text);
    let public = sign::decode_public_key(&public_text);
    if let Ok(key) = &public {
        let text = sign::encode_public_key(key);
        assert_eq!(sign::decode_public_key(&text).ok(), Some(*key));
        if let Ok(m) = verify::verify_manifest(manifest, &sig_text, key) {
            assert_eq!(Manifest::from_bytes(manifest).ok(), Some(m));
            assert!(sig.as_ref().is_ok_and(|s| sign::verify(key, manifest, s)));
        }
    }
    if let Ok(key) = sign::decode_secret_key(&secret_text) {
        let pem = sign::encode_secret_key(&key).expect("a decoded key encodes");
        let back = sign::decode_secret_key(&pem).expect("own PEM decodes");
        assert_eq!(back.to_bytes(), key.to_bytes());
        let s = sign::sign(&key, manifest);
        assert!(sign::verify(&key.verifying_key(), manifest, &s));
    }
}

/// Everything a listing or a deep check derives from an entry.
fn touch_entry(e: &RawEntry) {
    let escaped = cpio::escape(&e.name);
    assert!(!escaped.chars().any(char::is_control), "{escaped}");
    let _ = (cpio::name_issue(&e.name), cpio::escape_bytes(&e.data));
    let record = verify::record_of(e);
    assert_eq!(record.path, format!("/{}", e.name));
}

/// An archive of entries described by the input's lines: the first byte picks
/// the kind and mode, the rest is `name=payload`.
fn archive_from(data: &[u8]) -> Archive {
    let mut archive = Archive::new();
    for line in data.split(|&b| b == b'\n').take(64) {
        let Some((&tag, rest)) = line.split_first() else {
            continue;
        };
        let rest = String::from_utf8_lossy(rest);
        let (name, payload) = rest.split_once('=').unwrap_or((&rest, ""));
        let path = format!("/{name}");
        let (mode, n) = ((u32::from(tag) * 0o1111) & 0o7777, u32::from(tag));
        let kind = match tag % 5 {
            0 => EntryKind::Dir,
            1 => EntryKind::File(payload.as_bytes().to_vec()),
            2 => EntryKind::Symlink(payload.to_string()),
            3 => EntryKind::CharDev {
                major: n,
                minor: payload.len() as u32,
            },
            _ => EntryKind::BlockDev { major: n, minor: 0 },
        };
        let _ = archive.add(Entry { path, mode, kind });
    }
    archive
}

fn mtime_of(data: &[u8]) -> u32 {
    data.iter()
        .fold(0u32, |h, &b| h.rotate_left(5) ^ u32::from(b))
}

fn fast_level(c: Compression) -> Option<i32> {
    match c {
        Compression::Gzip | Compression::Zstd => Some(1),
        Compression::None | Compression::Lz4 => None,
    }
}

fn assert_same_entries(back: &[RawEntry], expected: &[Entry]) {
    assert_eq!(back.len(), expected.len());
    for (r, e) in back.iter().zip(expected) {
        assert_eq!(format!("/{}", r.name), e.path);
        assert_eq!(r.mode, e.st_mode());
        assert_eq!(r.data, e.kind.data());
        assert!(cpio::name_issue(&r.name).is_none(), "{}", r.name);
        let rdev = match e.kind {
            EntryKind::CharDev { major, minor } | EntryKind::BlockDev { major, minor } => {
                (major, minor)
            }
            _ => (0, 0),
        };
        assert_eq!(r.rdev, rdev);
        assert_eq!(verify::record_of(r), ManifestEntry::of(e));
    }
}
