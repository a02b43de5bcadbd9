//! Test helpers: tiny synthetic ELF files, spec writing, the CLI binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `e_machine` values.
pub const X86_64: u16 = 62;
pub const AARCH64: u16 = 183;

/// A minimal static ELF64 executable: header, one PT_LOAD, and `payload`.
pub fn tiny_elf(machine: u16, payload: &[u8]) -> Vec<u8> {
    elf_with(machine, None, payload)
}

/// Like [`tiny_elf`] with a PT_INTERP naming `interp` (a dynamic executable).
pub fn tiny_elf_interp(machine: u16, interp: &str) -> Vec<u8> {
    elf_with(machine, Some(interp), b"")
}

fn elf_with(machine: u16, interp: Option<&str>, payload: &[u8]) -> Vec<u8> {
    let phnum: u16 = if interp.is_some() { 2 } else { 1 };
    let data_off = 64 + 56 * phnum as u64;
    let mut out = Vec::new();
    out.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    out.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    out.extend_from_slice(&machine.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(0x400000 + data_off).to_le_bytes()); // e_entry
    out.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    out.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for v in [64u16, 56, phnum, 64, 0, 0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let interp_bytes = interp
        .map(|i| format!("{i}\0").into_bytes())
        .unwrap_or_default();
    let total = data_off + interp_bytes.len() as u64 + payload.len() as u64;
    phdr(&mut out, 1, 5, 0, 0x400000, total); // PT_LOAD
    if interp.is_some() {
        phdr(
            &mut out,
            3,
            4,
            data_off,
            0x400000 + data_off,
            interp_bytes.len() as u64,
        );
    }
    out.extend_from_slice(&interp_bytes);
    out.extend_from_slice(payload);
    out
}

fn phdr(out: &mut Vec<u8>, kind: u32, flags: u32, off: u64, vaddr: u64, size: u64) {
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    for v in [off, vaddr, vaddr, size, size, 0x1000] {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Writes a file, creating parents.
pub fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Lays out init, agent, a data file and a spec in `dir`; returns the spec path.
/// `reverse` writes the extra entries in the opposite order.
pub fn fixture(dir: &Path, compression: &str, reverse: bool) -> PathBuf {
    write(&dir.join("bin/init"), &tiny_elf(X86_64, b"init payload"));
    write(&dir.join("bin/agent"), &tiny_elf(X86_64, b"agent payload"));
    write(&dir.join("data/motd"), b"hello from the initrd\n");
    write(&dir.join("data/debug-tool"), &tiny_elf(X86_64, b"debug"));
    let mut extras = [
        "[[file]]\nsrc = \"data/motd\"\ndest = \"/etc/motd\"\nmode = 0o640\n",
        "[[symlink]]\npath = \"/bin/agent\"\ntarget = \"../usr/local/bin/guest-agent\"\n",
        "[[dir]]\npath = \"/run/empty\"\nmode = \"0700\"\n",
        "[[node]]\npath = \"/dev/vda\"\ntype = \"block\"\nmajor = 254\nminor = 0\nmode = 0o660\n",
        "[[file]]\nsrc = \"data/debug-tool\"\ndest = \"/bin/debug-tool\"\ndebug = true\n",
    ];
    if reverse {
        extras.reverse();
    }
    let spec = format!(
        "[image]\ncompression = \"{compression}\"\n\n[init]\npath = \"bin/init\"\nversion = \"1.2.3\"\nprotocol = 7\n\n\
         [agent]\npath = \"bin/agent\"\nversion = \"0.9.0\"\nmin_version = \"0.8.0\"\n\n{}",
        extras.join("\n")
    );
    let path = dir.join("spec.toml");
    write(&path, spec.as_bytes());
    path
}

/// Entries (path, `cpio -itv`-style permission string) the fixture's spec asks for.
pub const FIXTURE_ENTRIES: &[(&str, &str)] = &[
    ("bin", "drwxr-xr-x"),
    ("bin/agent", "lrwxrwxrwx"),
    ("dev", "drwxr-xr-x"),
    ("dev/console", "crw-------"),
    ("dev/null", "crw-rw-rw-"),
    ("dev/vda", "brw-rw----"),
    ("etc", "drwxr-xr-x"),
    ("etc/motd", "-rw-r-----"),
    ("init", "-rwxr-xr-x"),
    ("run", "drwxr-xr-x"),
    ("run/empty", "drwx------"),
    ("usr", "drwxr-xr-x"),
    ("usr/local", "drwxr-xr-x"),
    ("usr/local/bin", "drwxr-xr-x"),
    ("usr/local/bin/guest-agent", "-rwxr-xr-x"),
];

/// Runs the CLI.
pub fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_initrd-builder"))
        .args(args)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

/// Runs a shell pipeline and returns stdout; panics with stderr on failure.
pub fn sh(script: &str) -> Vec<u8> {
    let out = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Generates a key pair in `dir`; returns (secret, public) paths.
pub fn keys(dir: &Path) -> (PathBuf, PathBuf) {
    let out = cli(&["keygen", dir.join("k").to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir.join("k.key"), dir.join("k.pub"))
}

/// A newc archive with arbitrary names (the builder refuses such names):
/// `(name, st_mode, data)` records, then the trailer.
pub fn raw_newc(records: &[(&[u8], u32, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let trailer: (&[u8], u32, &[u8]) = (b"TRAILER!!!", 0, b"");
    for (i, (name, mode, data)) in records.iter().chain([&trailer]).enumerate() {
        let fields = [
            i as u32 + 1,
            *mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        out.extend_from_slice(name);
        out.push(0);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    out
}

/// Runs the CLI under `timeout 60`, so that a read that never ends fails the
/// test instead of hanging it.
pub fn cli_bounded(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_initrd-builder"))
        .args(args)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

/// stdout and stderr of a run, as text.
pub fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
